// SPDX-License-Identifier: GPL-2.0
/*
 * testdev_guest: the guest side of vfio-userd's QEMU interop suite.
 *
 * A minimal Linux PCI driver for vfio-userd's testdev (vfio-userd-testdev(7)). It proves in a
 * real guest what the in-tree client cannot: that an interrupt the device raises reaches a
 * guest handler through QEMU, and that the DMA engine reaches guest memory. Everything else
 * the suite checks from a shell with devmem and setpci; this driver only adds
 *
 *   irq_mode     which interrupt type it enabled (module parameter irq_mode: msix, msi, intx)
 *   irq_counts   handler invocations per vector, space-separated
 *   dma_address  the bus address of a 2 MiB coherent buffer
 *   dma_buffer   that buffer, readable and writable as a file
 *
 * as attributes of the PCI device in sysfs.
 */
#include <linux/interrupt.h>
#include <linux/module.h>
#include <linux/pci.h>

#define TESTDEV_VENDOR		0x1234
#define TESTDEV_DEVICE		0x7464
#define TESTDEV_INT_STATUS	0x044
#define TESTDEV_INT_ACK		0x048
#define TESTDEV_MAX_VECTORS	8
#define TESTDEV_DMA_BUFFER_SIZE (2u << 20)

static char *irq_mode = "msix";
module_param(irq_mode, charp, 0444);
MODULE_PARM_DESC(irq_mode, "interrupt type to enable: msix, msi or intx");

struct testdev_guest {
	struct pci_dev *pdev;
	void __iomem *registers;
	int vectors;
	atomic_t counts[TESTDEV_MAX_VECTORS];
	void *dma_buffer;
	dma_addr_t dma_address;
};

struct testdev_vector {
	struct testdev_guest *device;
	int index;
};

static struct testdev_vector *vector_cookies(struct testdev_guest *device)
{
	return (struct testdev_vector *)(device + 1);
}

static irqreturn_t testdev_interrupt(int irq, void *cookie)
{
	struct testdev_vector *vector = cookie;
	struct testdev_guest *device = vector->device;
	u32 status = readl(device->registers + TESTDEV_INT_STATUS);

	/* INTx may be shared: a line with no cause of ours set is someone else's. */
	if (status == 0 && device->pdev->msi_enabled == 0 && device->pdev->msix_enabled == 0)
		return IRQ_NONE;
	writel(status, device->registers + TESTDEV_INT_ACK);
	atomic_inc(&device->counts[vector->index]);
	return IRQ_HANDLED;
}

static ssize_t irq_counts_show(struct device *dev, struct device_attribute *attr, char *buf)
{
	struct testdev_guest *device = pci_get_drvdata(to_pci_dev(dev));
	ssize_t length = 0;
	int i;

	for (i = 0; i < device->vectors; i++)
		length += sysfs_emit_at(buf, length, "%s%d", i ? " " : "",
					atomic_read(&device->counts[i]));
	length += sysfs_emit_at(buf, length, "\n");
	return length;
}
static DEVICE_ATTR_RO(irq_counts);

static ssize_t irq_mode_show(struct device *dev, struct device_attribute *attr, char *buf)
{
	struct pci_dev *pdev = to_pci_dev(dev);

	return sysfs_emit(buf, "%s\n",
			  pdev->msix_enabled  ? "msix"
			  : pdev->msi_enabled ? "msi"
					      : "intx");
}
static DEVICE_ATTR_RO(irq_mode);

static ssize_t dma_address_show(struct device *dev, struct device_attribute *attr, char *buf)
{
	struct testdev_guest *device = pci_get_drvdata(to_pci_dev(dev));

	return sysfs_emit(buf, "0x%llx\n", (unsigned long long)device->dma_address);
}
static DEVICE_ATTR_RO(dma_address);

static ssize_t dma_buffer_read(struct file *file, struct kobject *kobj, struct bin_attribute *attr,
			       char *buf, loff_t offset, size_t count)
{
	struct testdev_guest *device = pci_get_drvdata(to_pci_dev(kobj_to_dev(kobj)));

	memcpy(buf, (u8 *)device->dma_buffer + offset, count);
	return count;
}

static ssize_t dma_buffer_write(struct file *file, struct kobject *kobj, struct bin_attribute *attr,
				char *buf, loff_t offset, size_t count)
{
	struct testdev_guest *device = pci_get_drvdata(to_pci_dev(kobj_to_dev(kobj)));

	memcpy((u8 *)device->dma_buffer + offset, buf, count);
	return count;
}
static BIN_ATTR_RW(dma_buffer, TESTDEV_DMA_BUFFER_SIZE);

static struct attribute *testdev_attributes[] = {
	&dev_attr_irq_counts.attr,
	&dev_attr_irq_mode.attr,
	&dev_attr_dma_address.attr,
	NULL,
};

static struct bin_attribute *testdev_bin_attributes[] = {
	&bin_attr_dma_buffer,
	NULL,
};

static const struct attribute_group testdev_group = {
	.attrs = testdev_attributes,
	.bin_attrs = testdev_bin_attributes,
};

static const struct attribute_group *testdev_groups[] = {
	&testdev_group,
	NULL,
};

static unsigned int irq_type_flags(void)
{
	if (!strcmp(irq_mode, "msi"))
		return PCI_IRQ_MSI;
	if (!strcmp(irq_mode, "intx"))
		return PCI_IRQ_LEGACY;
	return PCI_IRQ_MSIX;
}

static int testdev_probe(struct pci_dev *pdev, const struct pci_device_id *id)
{
	struct testdev_guest *device;
	int ret, i;

	device = devm_kzalloc(&pdev->dev,
			      sizeof(*device) + TESTDEV_MAX_VECTORS * sizeof(struct testdev_vector),
			      GFP_KERNEL);
	if (!device)
		return -ENOMEM;
	device->pdev = pdev;
	ret = pcim_enable_device(pdev);
	if (ret)
		return ret;
	pci_set_master(pdev);
	/* No request_mem_region: the suite's shell pokes the same registers with devmem. */
	device->registers =
		devm_ioremap(&pdev->dev, pci_resource_start(pdev, 0), pci_resource_len(pdev, 0));
	if (!device->registers)
		return -ENOMEM;
	ret = dma_set_mask_and_coherent(&pdev->dev, DMA_BIT_MASK(64));
	if (ret)
		return ret;
	device->dma_buffer = dmam_alloc_coherent(&pdev->dev, TESTDEV_DMA_BUFFER_SIZE,
						 &device->dma_address, GFP_KERNEL);
	if (!device->dma_buffer)
		return -ENOMEM;
	device->vectors = pci_alloc_irq_vectors(pdev, 1, TESTDEV_MAX_VECTORS, irq_type_flags());
	if (device->vectors < 0)
		return device->vectors;
	for (i = 0; i < device->vectors; i++) {
		struct testdev_vector *vector = &vector_cookies(device)[i];

		vector->device = device;
		vector->index = i;
		ret = devm_request_irq(&pdev->dev, pci_irq_vector(pdev, i), testdev_interrupt,
				       IRQF_SHARED, "testdev_guest", vector);
		if (ret) {
			pci_free_irq_vectors(pdev);
			return ret;
		}
	}
	pci_set_drvdata(pdev, device);
	dev_info(&pdev->dev, "bound: %s with %d vectors, DMA buffer at %pad\n",
		 pdev->msix_enabled  ? "msix"
		 : pdev->msi_enabled ? "msi"
				     : "intx",
		 device->vectors, &device->dma_address);
	return 0;
}

static void testdev_remove(struct pci_dev *pdev)
{
	struct testdev_guest *device = pci_get_drvdata(pdev);
	int i;

	for (i = 0; i < device->vectors; i++)
		devm_free_irq(&pdev->dev, pci_irq_vector(pdev, i), &vector_cookies(device)[i]);
	pci_free_irq_vectors(pdev);
}

static const struct pci_device_id testdev_ids[] = {{PCI_DEVICE(TESTDEV_VENDOR, TESTDEV_DEVICE)},
						   {}};
MODULE_DEVICE_TABLE(pci, testdev_ids);

static struct pci_driver testdev_driver = {
	.name = "testdev_guest",
	.id_table = testdev_ids,
	.probe = testdev_probe,
	.remove = testdev_remove,
	.dev_groups = testdev_groups,
};
module_pci_driver(testdev_driver);

MODULE_DESCRIPTION("vfio-userd testdev driver for the QEMU interop suite");
MODULE_LICENSE("GPL");
