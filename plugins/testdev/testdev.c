/*
 * testdev plugin entry point: parameters, the device's declaration to the host, and the
 * callbacks that tie the register file (registers.c) and DMA engine (dma.c) to it.
 *
 * The device is the one operators and VMM developers point a guest at to check a setup,
 * so every feature the host offers is declared here and reachable through plain register
 * accesses; vfio-userd-testdev(7) is its datasheet.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "testdev.h"

#define TESTDEV_DEFAULT_VENDOR_ID           0x1234u
#define TESTDEV_DEFAULT_DEVICE_ID           0x7464u
#define TESTDEV_DEFAULT_SUBSYSTEM_VENDOR_ID 0x1234u
#define TESTDEV_DEFAULT_SUBSYSTEM_ID        0x0001u
#define TESTDEV_DEFAULT_CLASS_CODE          0xff0000u /* "unassigned class": no driver binds */
#define TESTDEV_DEFAULT_REVISION            0x01u
#define TESTDEV_DEFAULT_RAM_SIZE            (1u << 20)
#define TESTDEV_DEFAULT_MSIX_VECTORS        16u
#define TESTDEV_DEFAULT_MSI_VECTORS         4u

/* Page 0 trapped plus at least one mapped page; the upper bound keeps one device modest. */
#define TESTDEV_RAM_SIZE_MIN     (8ull << 10)
#define TESTDEV_RAM_SIZE_MAX     (1ull << 30)
#define TESTDEV_MSIX_VECTORS_MAX 2048u
#define TESTDEV_MSI_VECTORS_MAX  32u

/* The MSI-X table starts BAR4; the PBA follows on its own page. */
#define TESTDEV_MSIX_BAR          VFIO_USERD_REGION_BAR4
#define TESTDEV_MSIX_TABLE_OFFSET 0u
#define TESTDEV_MSIX_ENTRY_SIZE   16u

static const char *const testdev_param_keys[] = {
    "vendor_id", "device_id", "subsystem_vendor_id", "subsystem_id", "class_code",
    "revision",  "ram_size",  "msix_vectors",        "msi_vectors",  NULL,
};

static bool testdev_is_power_of_two(uint64_t value)
{
    return value != 0 && (value & (value - 1)) == 0;
}

static uint64_t testdev_round_up(uint64_t value, uint64_t alignment)
{
    return (value + alignment - 1) / alignment * alignment;
}

static uint64_t testdev_next_power_of_two(uint64_t value)
{
    uint64_t power = 1;

    while (power < value)
        power <<= 1;
    return power;
}

static uint32_t testdev_msix_pba_offset(uint32_t vectors)
{
    return (uint32_t)testdev_round_up((uint64_t)vectors * TESTDEV_MSIX_ENTRY_SIZE,
                                      TESTDEV_PAGE_SIZE);
}

static uint64_t testdev_msix_bar_size(uint32_t vectors)
{
    /* The PBA (at most 256 bytes for 2048 vectors) gets a page of its own. */
    return testdev_next_power_of_two((uint64_t)testdev_msix_pba_offset(vectors) +
                                     TESTDEV_PAGE_SIZE);
}

static int testdev_parse_params(const struct vfio_userd_host *host, const json_t *params,
                                struct testdev_config *config, struct vfio_userd_error *error)
{
    struct {
        const char *key;
        uint64_t fallback;
        uint64_t min;
        uint64_t max;
        uint64_t value;
    } fields[] = {
        /* 0x0000 and 0xffff would make the function look absent to a PCI enumerator. */
        {"vendor_id", TESTDEV_DEFAULT_VENDOR_ID, 0x0001, 0xfffe, 0},
        {"device_id", TESTDEV_DEFAULT_DEVICE_ID, 0, 0xffff, 0},
        {"subsystem_vendor_id", TESTDEV_DEFAULT_SUBSYSTEM_VENDOR_ID, 0, 0xffff, 0},
        {"subsystem_id", TESTDEV_DEFAULT_SUBSYSTEM_ID, 0, 0xffff, 0},
        {"class_code", TESTDEV_DEFAULT_CLASS_CODE, 0, 0xffffff, 0},
        {"revision", TESTDEV_DEFAULT_REVISION, 0, 0xff, 0},
        {"ram_size", TESTDEV_DEFAULT_RAM_SIZE, TESTDEV_RAM_SIZE_MIN, TESTDEV_RAM_SIZE_MAX, 0},
        {"msix_vectors", TESTDEV_DEFAULT_MSIX_VECTORS, 1, TESTDEV_MSIX_VECTORS_MAX, 0},
        {"msi_vectors", TESTDEV_DEFAULT_MSI_VECTORS, 0, TESTDEV_MSI_VECTORS_MAX, 0},
    };
    int rc;

    rc = host->params_check_keys(params, testdev_param_keys, error);
    if (rc < 0)
        goto out;
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        rc = host->params_get_u64(params, fields[i].key, fields[i].fallback, fields[i].min,
                                  fields[i].max, &fields[i].value, error);
        if (rc < 0)
            goto out;
    }

    memset(config, 0, sizeof(*config));
    config->identity.vendor_id = (uint16_t)fields[0].value;
    config->identity.device_id = (uint16_t)fields[1].value;
    config->identity.subsystem_vendor_id = (uint16_t)fields[2].value;
    config->identity.subsystem_id = (uint16_t)fields[3].value;
    config->identity.class_code = (uint32_t)fields[4].value;
    config->identity.revision = (uint8_t)fields[5].value;
    config->identity.interrupt_pin = 1; /* INTA# */
    config->ram_size = fields[6].value;
    config->msix_vectors = (uint32_t)fields[7].value;
    config->msi_vectors = (uint32_t)fields[8].value;

    if (!testdev_is_power_of_two(config->ram_size)) {
        rc = vfio_userd_error_set(error, -EINVAL, "ram_size",
                                  "ram_size must be a power of two, not %llu bytes",
                                  (unsigned long long)config->ram_size);
        goto out;
    }
    if (config->msi_vectors != 0 && !testdev_is_power_of_two(config->msi_vectors)) {
        rc = vfio_userd_error_set(error, -EINVAL, "msi_vectors",
                                  "msi_vectors must be 0 (no MSI), 1, 2, 4, 8, 16 or 32, not %u",
                                  config->msi_vectors);
        goto out;
    }
    rc = 0;
out:
    return rc;
}

static void testdev_free(struct testdev *td)
{
    if (td == NULL)
        return;
    free(td->dma.bounce);
    free(td);
}

static int testdev_ops_reset(void *instance)
{
    testdev_reset(instance);
    return 0;
}

static void testdev_ops_destroy(void *instance)
{
    testdev_free(instance);
}

static const struct vfio_userd_device_ops testdev_ops = {
    .reset = testdev_ops_reset,
    .destroy = testdev_ops_destroy,
};

/* Fills `error` for a declaration the host refused; `what` names the declaration. */
static int testdev_declare_failed(struct vfio_userd_error *error, int rc, const char *what)
{
    return vfio_userd_error_set(error, rc, NULL, "the host refused %s: %s", what, strerror(-rc));
}

static int testdev_declare(struct testdev *td, struct vfio_userd_error *error)
{
    const struct vfio_userd_host *host = td->host;
    struct vfio_userd_device *device = td->device;
    const struct testdev_config *config = &td->config;
    const struct vfio_userd_sparse_area ram_mapped = {
        .offset = TESTDEV_PAGE_SIZE,
        .size = config->ram_size - TESTDEV_PAGE_SIZE,
    };
    const struct vfio_userd_region bar0 = {
        .size = TESTDEV_BAR0_SIZE,
        .flags = VFIO_USERD_REGION_READABLE | VFIO_USERD_REGION_WRITABLE,
        .access = testdev_bar0_access,
    };
    const struct vfio_userd_region bar2 = {
        .size = config->ram_size,
        .flags = VFIO_USERD_REGION_MEMORY | VFIO_USERD_REGION_MAPPABLE |
                 VFIO_USERD_REGION_READABLE | VFIO_USERD_REGION_WRITABLE | VFIO_USERD_BAR_64BIT |
                 VFIO_USERD_BAR_PREFETCHABLE,
        .sparse_area_count = 1,
        .sparse_areas = &ram_mapped,
        .access = testdev_ram_access,
    };
    const struct vfio_userd_region bar4 = {
        .size = testdev_msix_bar_size(config->msix_vectors),
        .flags = VFIO_USERD_REGION_READABLE | VFIO_USERD_REGION_WRITABLE,
        .access = testdev_msix_bar_access,
    };
    /* Lets a guest identify the device from config space alone. */
    const uint8_t vendor_capability[8] = {
        TESTDEV_MAGIC & 0xff,           (TESTDEV_MAGIC >> 8) & 0xff,
        (TESTDEV_MAGIC >> 16) & 0xff,   TESTDEV_MAGIC >> 24,
        TESTDEV_VERSION & 0xff,         (TESTDEV_VERSION >> 8) & 0xff,
        (TESTDEV_VERSION >> 16) & 0xff, TESTDEV_VERSION >> 24,
    };
    int rc;

    rc = host->pci_set_identity(device, &config->identity);
    if (rc < 0) {
        rc = testdev_declare_failed(error, rc, "the PCI identity");
        goto out;
    }
    rc = host->add_region(device, VFIO_USERD_REGION_BAR0, &bar0);
    if (rc < 0) {
        rc = testdev_declare_failed(error, rc, "BAR0 (registers)");
        goto out;
    }
    rc = host->add_region(device, VFIO_USERD_REGION_BAR2, &bar2);
    if (rc < 0) {
        rc = testdev_declare_failed(error, rc, "BAR2 (device RAM)");
        goto out;
    }
    rc = host->add_region(device, TESTDEV_MSIX_BAR, &bar4);
    if (rc < 0) {
        rc = testdev_declare_failed(error, rc, "BAR4 (MSI-X)");
        goto out;
    }
    rc = host->pci_add_power_management(device);
    if (rc < 0) {
        rc = testdev_declare_failed(error, rc, "the power management capability");
        goto out;
    }
    if (config->msi_vectors != 0) {
        rc = host->pci_add_msi(device, config->msi_vectors, true);
        if (rc < 0) {
            rc = testdev_declare_failed(error, rc, "the MSI capability");
            goto out;
        }
    }
    rc = host->pci_add_msix(device, config->msix_vectors, TESTDEV_MSIX_BAR,
                            TESTDEV_MSIX_TABLE_OFFSET, TESTDEV_MSIX_BAR,
                            testdev_msix_pba_offset(config->msix_vectors));
    if (rc < 0) {
        rc = testdev_declare_failed(error, rc, "the MSI-X capability");
        goto out;
    }
    rc = host->pci_add_express(device);
    if (rc < 0) {
        rc = testdev_declare_failed(error, rc, "the PCI Express capability");
        goto out;
    }
    rc = host->pci_add_vendor_specific(device, vendor_capability, sizeof(vendor_capability));
    if (rc < 0) {
        rc = testdev_declare_failed(error, rc, "the vendor-specific capability");
        goto out;
    }
    rc = 0;
out:
    return rc;
}

static int testdev_create(struct vfio_userd_device *device, const json_t *params,
                          struct vfio_userd_error *error)
{
    const struct vfio_userd_host *host = device->host;
    struct testdev *td = NULL;
    bool host_owns_instance = false;
    int rc;

    td = calloc(1, sizeof(*td));
    if (td == NULL) {
        rc = vfio_userd_error_set(error, -ENOMEM, NULL, "out of memory");
        goto out;
    }
    td->device = device;
    td->host = host;
    rc = testdev_parse_params(host, params, &td->config, error);
    if (rc < 0)
        goto out;
    /* Allocated once: the engine must not allocate (or fail to) per operation. */
    td->dma.bounce = malloc(TESTDEV_DMA_MAX_LENGTH);
    if (td->dma.bounce == NULL) {
        rc = vfio_userd_error_set(error, -ENOMEM, NULL, "out of memory for the DMA buffer");
        goto out;
    }
    td->features = TESTDEV_FEATURE_DMA | TESTDEV_FEATURE_RAM | TESTDEV_FEATURE_MSIX;
    if (td->config.msi_vectors != 0)
        td->features |= TESTDEV_FEATURE_MSI;
    if (testdev_host_has_message_counters(host))
        td->features |= TESTDEV_FEATURE_MESSAGE_COUNTS;

    rc = host->set_ops(device, &testdev_ops, td);
    if (rc < 0) {
        rc = testdev_declare_failed(error, rc, "the device callbacks");
        goto out;
    }
    /* From here on the host frees the instance through ops->destroy, even on failure. */
    host_owns_instance = true;
    rc = testdev_declare(td, error);
out:
    if (rc < 0 && !host_owns_instance)
        testdev_free(td);
    return rc;
}

VFIO_USERD_PLUGIN_DEFINE(.name = "testdev", .version = "1.0",
                         .description = "reference device: registers, interrupts, DMA, "
                                        "mappable RAM (see vfio-userd-testdev(7))",
                         .create = testdev_create);
