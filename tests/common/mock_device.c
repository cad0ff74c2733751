/*
 * mockdev, the device model the protocol tests run against; see mock_device.h.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "mock_device.h"

struct mock_observations mock_observed;

struct mock {
    struct vfio_userd_device *device;
    uint32_t scratch[3];
    int32_t irq_result;
    uint64_t dma_address;
    uint32_t dma_length;
    uint32_t dma_fill;
    uint32_t dma_status;
    uint32_t dma_sum;
    uint8_t *dma_buffer;
    struct vfio_userd_dma_request request;
    uint32_t doorbells;
    uint32_t doorbell_value;
};

#define OBSERVE(field) __atomic_add_fetch(&mock_observed.field, 1, __ATOMIC_SEQ_CST)

static void dma_finished(struct mock *mock, int status, bool was_read)
{
    if (status < 0) {
        mock->dma_status = MOCK_DMA_ERROR | (uint32_t)-status;
        return;
    }
    if (was_read) {
        mock->dma_sum = 0;
        for (uint32_t i = 0; i < mock->dma_length; i++)
            mock->dma_sum += mock->dma_buffer[i];
    }
    mock->dma_status = MOCK_DMA_DONE;
}

static void dma_complete(struct vfio_userd_dma_request *request, int status)
{
    dma_finished(request->opaque, status, !request->to_client);
}

static void start_dma(struct mock *mock, uint32_t operation)
{
    int ret;

    if (mock->dma_status == MOCK_DMA_BUSY)
        return;
    if (mock->dma_length > MOCK_DMA_MAX ||
        (operation != MOCK_DMA_GO_READ && operation != MOCK_DMA_GO_WRITE)) {
        mock->dma_status = MOCK_DMA_ERROR | EINVAL;
        return;
    }
    if (operation == MOCK_DMA_GO_WRITE)
        memset(mock->dma_buffer, (int)(mock->dma_fill & 0xff), mock->dma_length);
    mock->request = (struct vfio_userd_dma_request){
        .address = mock->dma_address,
        .buffer = mock->dma_buffer,
        .length = mock->dma_length,
        .to_client = operation == MOCK_DMA_GO_WRITE,
        .complete = dma_complete,
        .opaque = mock,
    };
    mock->dma_status = MOCK_DMA_BUSY;
    ret = mock->device->host->dma_submit(mock->device, &mock->request);
    if (ret != -EINPROGRESS)
        dma_finished(mock, ret, operation == MOCK_DMA_GO_READ);
}

static int bar0_access(void *instance, uint32_t region, uint64_t offset, void *data, uint32_t count,
                       bool is_write)
{
    struct mock *mock = instance;
    uint32_t value = 0;

    if (count != 4 || offset % 4)
        return -EINVAL;
    if (is_write)
        memcpy(&value, data, 4);
    switch (offset) {
    case MOCK_REG_MAGIC:
        value = MOCK_MAGIC;
        break;
    case MOCK_REG_SCRATCH:
    case MOCK_REG_SCRATCH + 4:
    case MOCK_REG_SCRATCH + 8:
        if (is_write)
            mock->scratch[(offset - MOCK_REG_SCRATCH) / 4] = value;
        value = mock->scratch[(offset - MOCK_REG_SCRATCH) / 4];
        break;
    case MOCK_REG_IRQ:
        if (is_write)
            mock->irq_result = mock->device->host->irq_trigger(mock->device, value);
        value = (uint32_t)mock->irq_result;
        break;
    case MOCK_REG_DMA_ADDRESS_LOW:
        if (is_write)
            mock->dma_address = (mock->dma_address & ~0xffffffffull) | value;
        value = (uint32_t)mock->dma_address;
        break;
    case MOCK_REG_DMA_ADDRESS_HIGH:
        if (is_write)
            mock->dma_address = (mock->dma_address & 0xffffffffull) | ((uint64_t)value << 32);
        value = (uint32_t)(mock->dma_address >> 32);
        break;
    case MOCK_REG_DMA_LENGTH:
        if (is_write)
            mock->dma_length = value;
        value = mock->dma_length;
        break;
    case MOCK_REG_DMA_GO:
        if (is_write)
            start_dma(mock, value);
        value = 0;
        break;
    case MOCK_REG_DMA_FILL:
        if (is_write)
            mock->dma_fill = value;
        value = mock->dma_fill;
        break;
    case MOCK_REG_DMA_STATUS:
        value = mock->dma_status;
        break;
    case MOCK_REG_DMA_SUM:
        value = mock->dma_sum;
        break;
    case MOCK_REG_DOORBELL:
        if (is_write) {
            mock->doorbells++;
            mock->doorbell_value = value;
        }
        value = mock->doorbells;
        break;
    case MOCK_REG_DOORBELL_VALUE:
        value = mock->doorbell_value;
        break;
    default:
        value = 0;
        break;
    }
    if (!is_write)
        memcpy(data, &value, 4);
    return 0;
}

static int io_access(void *instance, uint32_t region, uint64_t offset, void *data, uint32_t count,
                     bool is_write)
{
    uint16_t value = 0;

    if (is_write && offset == 0x10 && count == 2) {
        memcpy(&value, data, 2);
        if (value == 0xbeef)
            OBSERVE(io_doorbells);
    }
    if (is_write)
        OBSERVE(io_writes);
    else
        for (uint32_t i = 0; i < count; i++)
            ((uint8_t *)data)[i] = (uint8_t)(offset + i);
    return 0;
}

/* The trapped first page of BAR2 is served from the shared memory, like the rest. */
static int bar2_access(void *instance, uint32_t region, uint64_t offset, void *data, uint32_t count,
                       bool is_write)
{
    struct mock *mock = instance;
    uint8_t *memory = mock->device->host->region_memory(mock->device, VFIO_USERD_REGION_BAR2);

    if (is_write)
        memcpy(memory + offset, data, count);
    else
        memcpy(data, memory + offset, count);
    return 0;
}

static int bar4_access(void *instance, uint32_t region, uint64_t offset, void *data, uint32_t count,
                       bool is_write)
{
    if (!is_write)
        memset(data, 0, count);
    return 0;
}

static int mock_reset(void *instance)
{
    struct mock *mock = instance;

    memset(mock->scratch, 0, sizeof(mock->scratch));
    mock->dma_status = MOCK_DMA_IDLE;
    OBSERVE(resets);
    return 0;
}

static void mock_dma_map(void *instance, uint64_t address, uint64_t size, uint32_t access)
{
    OBSERVE(dma_maps);
}

static void mock_dma_unmap(void *instance, uint64_t address, uint64_t size)
{
    OBSERVE(dma_unmaps);
}

static void mock_irq_state(void *instance, enum vfio_userd_irq_index irq)
{
    OBSERVE(irq_state_changes);
}

static void mock_connect(void *instance)
{
    OBSERVE(connects);
}

static void mock_disconnect(void *instance)
{
    struct mock *mock = instance;

    if (mock->dma_status == MOCK_DMA_BUSY)
        mock->dma_status = MOCK_DMA_ERROR | ECONNRESET;
    OBSERVE(disconnects);
}

static void mock_destroy(void *instance)
{
    struct mock *mock = instance;

    free(mock->dma_buffer);
    free(mock);
    OBSERVE(destroys);
}

static const struct vfio_userd_device_ops mock_ops = {
    .reset = mock_reset,
    .dma_map = mock_dma_map,
    .dma_unmap = mock_dma_unmap,
    .irq_state = mock_irq_state,
    .client_connect = mock_connect,
    .client_disconnect = mock_disconnect,
    .destroy = mock_destroy,
};

static int mock_create(struct vfio_userd_device *device, const json_t *params,
                       struct vfio_userd_error *error)
{
    static const char *const allowed[] = {"fail", NULL};
    static const struct vfio_userd_sparse_area bar2_areas[] = {
        {.offset = 4096, .size = 28 * 1024},
        {.offset = 48 * 1024, .size = 16 * 1024},
    };
    const struct vfio_userd_host *host = device->host;
    const struct vfio_userd_pci_identity identity = {
        .vendor_id = 0x1de5,
        .device_id = 0x0001,
        .subsystem_vendor_id = 0x1de5,
        .subsystem_id = 0x0002,
        .class_code = 0xff0000,
        .revision = 3,
        .interrupt_pin = 1,
    };
    struct mock *mock;
    uint64_t fail;
    uint8_t *rom;
    int ret;

    ret = host->params_check_keys(params, allowed, error);
    if (ret < 0)
        return ret;
    ret = host->params_get_u64(params, "fail", 0, 0, 1, &fail, error);
    if (ret < 0)
        return ret;
    if (fail)
        return vfio_userd_error_set(error, -EINVAL, "fail", "asked to fail");

    mock = calloc(1, sizeof(*mock));
    if (mock == NULL)
        return -ENOMEM;
    mock->device = device;
    mock->dma_buffer = calloc(1, MOCK_DMA_MAX);
    if (mock->dma_buffer == NULL) {
        free(mock);
        return -ENOMEM;
    }
    ret = host->set_ops(device, &mock_ops, mock);
    if (ret < 0) {
        free(mock->dma_buffer);
        free(mock);
        return ret;
    }
    /* From here on the host calls mock_destroy if anything fails. */
    if ((ret = host->pci_set_identity(device, &identity)) < 0 ||
        (ret =
             host->add_region(device, VFIO_USERD_REGION_BAR0,
                              &(struct vfio_userd_region){
                                  .size = 4096,
                                  .flags = VFIO_USERD_REGION_READABLE | VFIO_USERD_REGION_WRITABLE,
                                  .access = bar0_access,
                              })) < 0 ||
        (ret = host->add_region(device, VFIO_USERD_REGION_BAR1,
                                &(struct vfio_userd_region){
                                    .size = 256,
                                    .flags = VFIO_USERD_REGION_READABLE |
                                             VFIO_USERD_REGION_WRITABLE | VFIO_USERD_BAR_IO,
                                    .access = io_access,
                                })) < 0 ||
        (ret =
             host->add_region(device, VFIO_USERD_REGION_BAR2,
                              &(struct vfio_userd_region){
                                  .size = MOCK_BAR2_SIZE,
                                  .flags = VFIO_USERD_REGION_READABLE | VFIO_USERD_REGION_WRITABLE |
                                           VFIO_USERD_REGION_MEMORY | VFIO_USERD_REGION_MAPPABLE |
                                           VFIO_USERD_BAR_64BIT | VFIO_USERD_BAR_PREFETCHABLE,
                                  .sparse_area_count = 2,
                                  .sparse_areas = bar2_areas,
                                  .access = bar2_access,
                              })) < 0 ||
        (ret =
             host->add_region(device, VFIO_USERD_REGION_BAR4,
                              &(struct vfio_userd_region){
                                  .size = 8192,
                                  .flags = VFIO_USERD_REGION_READABLE | VFIO_USERD_REGION_WRITABLE,
                                  .access = bar4_access,
                              })) < 0 ||
        (ret = host->add_region(device, VFIO_USERD_REGION_ROM,
                                &(struct vfio_userd_region){
                                    .size = 4096,
                                    .flags = VFIO_USERD_REGION_READABLE | VFIO_USERD_REGION_MEMORY,
                                })) < 0 ||
        (ret = host->pci_add_power_management(device)) < 0 ||
        (ret = host->pci_add_msi(device, 4, true)) < 0 ||
        (ret = host->pci_add_msix(device, MOCK_MSIX_VECTORS, 4, 0, 4, 0x1000)) < 0 ||
        (ret = host->pci_add_express(device)) < 0 ||
        (ret = host->add_ioeventfd(device, VFIO_USERD_REGION_BAR0, MOCK_REG_DOORBELL, 4,
                                   VFIO_USERD_IOEVENTFD_DATAMATCH, MOCK_DOORBELL_MATCH)) < 0 ||
        (ret = host->add_ioeventfd(device, VFIO_USERD_REGION_BAR1, 0x10, 2, 0, 0xbeef)) < 0)
        return vfio_userd_error_set(error, ret, NULL, "declaring the device failed");

    rom = host->region_memory(device, VFIO_USERD_REGION_ROM);
    memset(rom, 0xa5, 4096);
    return 0;
}

const struct vfio_userd_plugin mock_plugin = {
    .abi_major = VFIO_USERD_ABI_MAJOR,
    .abi_minor = VFIO_USERD_ABI_MINOR,
    .name = "mockdev",
    .version = "1",
    .description = "device model of the protocol tests",
    .create = mock_create,
};
