/*
 * testdev register file: BAR0 decoding, interrupts, reset, and the trapped parts of BAR2
 * and BAR4.
 *
 * Every BAR0 access is reduced to 32-bit register reads and writes so the access rules of
 * vfio-userd-testdev(7) hold for every register at once. Reads never have side effects:
 * a narrow write is a read-modify-write, and a read may be repeated or split freely.
 */
#include <errno.h>
#include <stddef.h>
#include <string.h>

#include "testdev.h"

/* message_counters came after the first hosts: an older host's table ends before it. */
bool testdev_host_has_message_counters(const struct vfio_userd_host *host)
{
    return host->size >= offsetof(struct vfio_userd_host, message_counters) + sizeof(void *) &&
           host->message_counters != NULL;
}

/* The command numbers vfio-userd-testdev(7) lists: 1-13 and 15-18. The host also counts
 * requests with the numbers between that no command has (0, 14), but the page promises 0
 * there, so a register's meaning never depends on what a client happened to send. */
static bool testdev_command_listed(uint32_t command)
{
    return command >= 1 && command < VFIO_USERD_MESSAGE_COUNTERS && command != 14;
}

static uint64_t testdev_message_count(const struct testdev *td, uint32_t command)
{
    const uint64_t *counters;

    if (!testdev_command_listed(command) || !testdev_host_has_message_counters(td->host))
        return 0;
    counters = td->host->message_counters(td->device);
    return counters != NULL ? counters[command] : 0;
}

static uint32_t testdev_half_of(uint64_t value, uint32_t offset)
{
    return (offset & 4) != 0 ? (uint32_t)(value >> 32) : (uint32_t)value;
}

static void testdev_set_half(uint64_t *value, uint32_t offset, uint32_t half)
{
    if ((offset & 4) != 0)
        *value = (*value & 0xffffffffull) | (uint64_t)half << 32;
    else
        *value = (*value & ~0xffffffffull) | half;
}

uint32_t testdev_register_read(const struct testdev *td, uint32_t offset)
{
    const struct testdev_registers *regs = &td->registers;

    switch (offset) {
    case TESTDEV_REG_MAGIC:
        return TESTDEV_MAGIC;
    case TESTDEV_REG_VERSION:
        return TESTDEV_VERSION;
    case TESTDEV_REG_FEATURES:
        return td->features;
    case TESTDEV_REG_SCRATCH0:
    case TESTDEV_REG_SCRATCH1:
    case TESTDEV_REG_SCRATCH2:
    case TESTDEV_REG_SCRATCH3:
        return regs->scratch[(offset - TESTDEV_REG_SCRATCH0) / 4];
    case TESTDEV_REG_SCRATCH64:
    case TESTDEV_REG_SCRATCH64 + 4:
        return testdev_half_of(regs->scratch64, offset);
    case TESTDEV_REG_RAM_SIZE:
    case TESTDEV_REG_RAM_SIZE + 4:
        return testdev_half_of(td->config.ram_size, offset);
    case TESTDEV_REG_RAM_TRAP_READS:
        return regs->ram_trap_reads;
    case TESTDEV_REG_RAM_TRAP_WRITES:
        return regs->ram_trap_writes;
    case TESTDEV_REG_MSIX_VECTORS:
        return td->config.msix_vectors;
    case TESTDEV_REG_MSI_VECTORS:
        return td->config.msi_vectors;
    case TESTDEV_REG_INT_STATUS:
        return regs->int_status;
    case TESTDEV_REG_INT_COUNT:
        return regs->int_count;
    case TESTDEV_REG_INT_LAST_VECTOR:
        return regs->int_last_vector;
    case TESTDEV_REG_INT_LAST_ERROR:
        return regs->int_last_error;
    case TESTDEV_REG_INT_FAIL_COUNT:
        return regs->int_fail_count;
    case TESTDEV_REG_DMA_SOURCE:
    case TESTDEV_REG_DMA_SOURCE + 4:
        return testdev_half_of(regs->dma_source, offset);
    case TESTDEV_REG_DMA_DESTINATION:
    case TESTDEV_REG_DMA_DESTINATION + 4:
        return testdev_half_of(regs->dma_destination, offset);
    case TESTDEV_REG_DMA_LENGTH:
        return regs->dma_length;
    case TESTDEV_REG_DMA_PATTERN:
        return regs->dma_pattern;
    case TESTDEV_REG_DMA_OPERATION:
        return regs->dma_operation;
    case TESTDEV_REG_DMA_CONTROL:
        return regs->dma_control;
    case TESTDEV_REG_DMA_STATUS:
        return regs->dma_status;
    case TESTDEV_REG_DMA_CHECKSUM:
        return regs->dma_checksum;
    case TESTDEV_REG_DMA_ERRNO:
        return regs->dma_errno;
    case TESTDEV_REG_DMA_MAX_LENGTH:
        return TESTDEV_DMA_MAX_LENGTH;
    case TESTDEV_REG_DMA_DONE_COUNT:
        return regs->dma_done_count;
    case TESTDEV_REG_DMA_ERROR_COUNT:
        return regs->dma_error_count;
    default:
        break;
    }
    if (offset >= TESTDEV_REG_MESSAGE_COUNTS && offset < TESTDEV_REG_MESSAGE_COUNTS_END)
        return testdev_half_of(testdev_message_count(td, (offset - TESTDEV_REG_MESSAGE_COUNTS) / 8),
                               offset);
    /* Write-only and reserved registers read as zero. */
    return 0;
}

void testdev_raise_interrupt(struct testdev *td, uint32_t cause, uint32_t vector)
{
    struct testdev_registers *regs = &td->registers;
    int rc;

    /* Status first, so a handler that runs on the interrupt finds its cause. */
    regs->int_status |= cause;
    regs->int_last_vector = vector;
    rc = td->host->irq_trigger(td->device, vector);
    if (rc < 0) {
        regs->int_last_error = (uint32_t)-rc;
        regs->int_fail_count++;
    } else {
        regs->int_last_error = 0;
        regs->int_count++;
    }
}

void testdev_register_write(struct testdev *td, uint32_t offset, uint32_t value)
{
    struct testdev_registers *regs = &td->registers;

    switch (offset) {
    case TESTDEV_REG_RESET:
        if ((value & TESTDEV_RESET_DEVICE) != 0)
            testdev_reset(td);
        break;
    case TESTDEV_REG_SCRATCH0:
    case TESTDEV_REG_SCRATCH1:
    case TESTDEV_REG_SCRATCH2:
    case TESTDEV_REG_SCRATCH3:
        regs->scratch[(offset - TESTDEV_REG_SCRATCH0) / 4] = value;
        break;
    case TESTDEV_REG_SCRATCH64:
    case TESTDEV_REG_SCRATCH64 + 4:
        testdev_set_half(&regs->scratch64, offset, value);
        break;
    case TESTDEV_REG_DOORBELL:
        testdev_raise_interrupt(td, TESTDEV_INT_DOORBELL, value);
        break;
    case TESTDEV_REG_INT_ACK:
        regs->int_status &= ~value;
        break;
    case TESTDEV_REG_DMA_SOURCE:
    case TESTDEV_REG_DMA_SOURCE + 4:
        testdev_set_half(&regs->dma_source, offset, value);
        break;
    case TESTDEV_REG_DMA_DESTINATION:
    case TESTDEV_REG_DMA_DESTINATION + 4:
        testdev_set_half(&regs->dma_destination, offset, value);
        break;
    case TESTDEV_REG_DMA_LENGTH:
        regs->dma_length = value;
        break;
    case TESTDEV_REG_DMA_PATTERN:
        regs->dma_pattern = value;
        break;
    case TESTDEV_REG_DMA_OPERATION:
        regs->dma_operation = value;
        break;
    case TESTDEV_REG_DMA_CONTROL:
        regs->dma_control = value & TESTDEV_DMA_CONTROL_STORED;
        if ((value & TESTDEV_DMA_CONTROL_GO) != 0)
            testdev_dma_go(td);
        break;
    default:
        /* Read-only and reserved registers ignore writes. */
        break;
    }
}

void testdev_reset(struct testdev *td)
{
    testdev_dma_reset(td);
    memset(&td->registers, 0, sizeof(td->registers));
}

static uint32_t testdev_load_le(const uint8_t *bytes, uint32_t count)
{
    uint32_t value = 0;

    for (uint32_t i = 0; i < count; i++)
        value |= (uint32_t)bytes[i] << (8 * i);
    return value;
}

static void testdev_store_le(uint8_t *bytes, uint32_t value, uint32_t count)
{
    for (uint32_t i = 0; i < count; i++)
        bytes[i] = (uint8_t)(value >> (8 * i));
}

int testdev_bar0_access(void *instance, uint32_t region, uint64_t offset, void *data,
                        uint32_t count, bool is_write)
{
    struct testdev *td = instance;
    uint8_t *bytes = data;
    uint32_t reg, shift, mask, merged;

    if (count != 1 && count != 2 && count != 4 && count != 8)
        return -EINVAL;
    /* Natural alignment inside a BAR whose size is a multiple of 8 keeps the access in it. */
    if (offset >= TESTDEV_BAR0_SIZE || offset % count != 0)
        return -EINVAL;
    reg = (uint32_t)offset & ~3u;

    if (count == 8) {
        /* Two 32-bit accesses, the lower address first, as a 64-bit register expects. */
        if (is_write) {
            testdev_register_write(td, reg, testdev_load_le(bytes, 4));
            testdev_register_write(td, reg + 4, testdev_load_le(bytes + 4, 4));
        } else {
            testdev_store_le(bytes, testdev_register_read(td, reg), 4);
            testdev_store_le(bytes + 4, testdev_register_read(td, reg + 4), 4);
        }
        return 0;
    }

    shift = ((uint32_t)offset & 3u) * 8;
    if (!is_write) {
        testdev_store_le(bytes, testdev_register_read(td, reg) >> shift, count);
        return 0;
    }
    if (count == 4) {
        testdev_register_write(td, reg, testdev_load_le(bytes, 4));
        return 0;
    }
    mask = ((1u << (8 * count)) - 1) << shift;
    merged = (testdev_register_read(td, reg) & ~mask) | (testdev_load_le(bytes, count) << shift);
    testdev_register_write(td, reg, merged);
    return 0;
}

int testdev_ram_access(void *instance, uint32_t region, uint64_t offset, void *data, uint32_t count,
                       bool is_write)
{
    struct testdev *td = instance;
    uint8_t *memory = td->host->region_memory(td->device, VFIO_USERD_REGION_BAR2);

    if (memory == NULL)
        return -EIO;
    if (offset > td->config.ram_size || count > td->config.ram_size - offset)
        return -EINVAL;
    /* Only the first page is trapped for a client that maps BAR2; count what touches it. */
    if (offset < TESTDEV_PAGE_SIZE) {
        if (is_write)
            td->registers.ram_trap_writes++;
        else
            td->registers.ram_trap_reads++;
    }
    if (is_write)
        memcpy(memory + offset, data, count);
    else
        memcpy(data, memory + offset, count);
    return 0;
}

int testdev_msix_bar_access(void *instance, uint32_t region, uint64_t offset, void *data,
                            uint32_t count, bool is_write)
{
    /* The host serves the table and PBA; the rest of BAR4 is reserved. */
    if (!is_write)
        memset(data, 0, count);
    return 0;
}
