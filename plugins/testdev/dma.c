/*
 * testdev DMA engine: COPY, FILL and CHECKSUM over client memory.
 *
 * An operation runs as a short sequence of stages (read the source, checksum, write the
 * destination). A stage whose range is directly mapped works on the mapping at once; any
 * other range goes to the host's dma_submit(), which either finishes at once or calls back
 * later after DMA_READ/DMA_WRITE messages, and the sequence resumes from the callback. So
 * the engine never blocks its worker, and it never allocates: data that crosses messages
 * stays in the bounce buffer allocated at create.
 */
#include <errno.h>
#include <string.h>
#include <zlib.h>

#include "testdev.h"

/* CRC-32 (IEEE 802.3, as zlib computes it): zlib's crc32() is table-driven and works on
 * several bytes per step, ten times the speed of a byte-by-byte loop. */
uint32_t testdev_crc32(uint32_t crc, const uint8_t *bytes, size_t length)
{
    return (uint32_t)crc32_z(crc, bytes, length);
}

static void testdev_fill(uint8_t *bytes, uint32_t length, uint32_t pattern)
{
    /* The pattern is laid down as little-endian words from the first byte on: the first
     * word byte by byte, then the filled part doubles by copies of itself, which run at
     * memcpy speed. */
    uint32_t done = length < 4 ? length : 4;

    for (uint32_t i = 0; i < done; i++)
        bytes[i] = (uint8_t)(pattern >> (8 * i));
    while (done < length) {
        uint32_t chunk = done < length - done ? done : length - done;
        memcpy(bytes + done, bytes, chunk);
        done += chunk;
    }
}

static uint32_t testdev_dma_error_of(int rc)
{
    switch (rc) {
    case -EFAULT:
        return TESTDEV_DMA_ERROR_UNMAPPED;
    case -EACCES:
        return TESTDEV_DMA_ERROR_READ_ONLY;
    default:
        return TESTDEV_DMA_ERROR_IO;
    }
}

/* Ends the current operation: DONE when error_code is NONE, else ERROR with the code. */
static void testdev_dma_finish(struct testdev *td, uint32_t error_code, int errno_value)
{
    struct testdev_registers *regs = &td->registers;
    uint32_t status;

    status = regs->dma_status & (TESTDEV_DMA_STATUS_REJECTED | TESTDEV_DMA_STATUS_MESSAGES);
    if (error_code == TESTDEV_DMA_ERROR_NONE) {
        status |= TESTDEV_DMA_STATE_DONE;
        regs->dma_done_count++;
    } else {
        status |= TESTDEV_DMA_STATE_ERROR | error_code << TESTDEV_DMA_STATUS_CODE_SHIFT;
        regs->dma_errno = (uint32_t)errno_value;
        regs->dma_error_count++;
        vfio_userd_log(td->device, VFIO_USERD_LOG_DEBUG,
                       "dma operation %u failed: error code %u, errno %d", td->dma.operation,
                       error_code, errno_value);
    }
    regs->dma_status = status;
    td->dma.stage = TESTDEV_DMA_STAGE_IDLE;
    if (td->dma.irq_enable)
        testdev_raise_interrupt(td, TESTDEV_INT_DMA, td->dma.vector);
    else
        regs->int_status |= TESTDEV_INT_DMA;
}

static void testdev_dma_step(struct testdev *td);

static void testdev_dma_complete(struct vfio_userd_dma_request *request, int status)
{
    struct testdev *td = request->opaque;

    td->dma.outstanding = false;
    if (td->dma.abandoned) {
        td->dma.abandoned = false;
        return;
    }
    /* The range passed the host's checks when submitted, so whatever failed afterwards (the
     * client's error answer, even EFAULT, or its disconnection) is an IO error. */
    if (status < 0) {
        testdev_dma_finish(td, TESTDEV_DMA_ERROR_IO, -status);
        return;
    }
    testdev_dma_step(td);
}

/*
 * Moves the bounce buffer to or from client memory through the host. The stage to resume
 * with must be set before: complete() may carry on from it later.
 */
static int testdev_dma_submit(struct testdev *td, uint64_t address, bool to_client)
{
    struct vfio_userd_dma_request *request = &td->dma.request;
    int rc;

    memset(request, 0, sizeof(*request));
    request->address = address;
    request->buffer = td->dma.bounce;
    request->length = td->dma.length;
    request->to_client = to_client;
    request->complete = testdev_dma_complete;
    request->opaque = td;

    td->dma.outstanding = true;
    rc = td->host->dma_submit(td->device, request);
    if (rc == -EINPROGRESS)
        td->registers.dma_status |= TESTDEV_DMA_STATUS_MESSAGES;
    else
        td->dma.outstanding = false;
    return rc;
}

static int testdev_dma_read_source(struct testdev *td)
{
    struct testdev_dma *dma = &td->dma;
    const uint8_t *source;
    uint8_t *destination;

    source = td->host->dma_translate(td->device, dma->source, dma->length, VFIO_USERD_DMA_READ);
    if (source == NULL) {
        dma->stage = dma->operation == TESTDEV_DMA_OP_CHECKSUM ? TESTDEV_DMA_STAGE_CHECKSUM
                                                               : TESTDEV_DMA_STAGE_WRITE;
        return testdev_dma_submit(td, dma->source, false);
    }
    if (dma->operation == TESTDEV_DMA_OP_CHECKSUM) {
        td->registers.dma_checksum = testdev_crc32(0, source, dma->length);
        dma->stage = TESTDEV_DMA_STAGE_FINISH;
        return 0;
    }
    destination =
        td->host->dma_translate(td->device, dma->destination, dma->length, VFIO_USERD_DMA_WRITE);
    if (destination != NULL) {
        /* Overlap behaves as if the source were read whole before the write. */
        memmove(destination, source, dma->length);
        dma->stage = TESTDEV_DMA_STAGE_FINISH;
        return 0;
    }
    memcpy(dma->bounce, source, dma->length);
    dma->stage = TESTDEV_DMA_STAGE_WRITE;
    return 0;
}

static int testdev_dma_write_destination(struct testdev *td)
{
    struct testdev_dma *dma = &td->dma;
    uint8_t *destination;

    destination =
        td->host->dma_translate(td->device, dma->destination, dma->length, VFIO_USERD_DMA_WRITE);
    if (destination != NULL) {
        if (dma->operation == TESTDEV_DMA_OP_FILL)
            testdev_fill(destination, dma->length, dma->pattern);
        else
            memcpy(destination, dma->bounce, dma->length);
        dma->stage = TESTDEV_DMA_STAGE_FINISH;
        return 0;
    }
    if (dma->operation == TESTDEV_DMA_OP_FILL)
        testdev_fill(dma->bounce, dma->length, dma->pattern);
    dma->stage = TESTDEV_DMA_STAGE_FINISH;
    return testdev_dma_submit(td, dma->destination, true);
}

/* Runs stages until the operation ends or waits for the client. */
static void testdev_dma_step(struct testdev *td)
{
    int rc = 0;

    for (;;) {
        switch (td->dma.stage) {
        case TESTDEV_DMA_STAGE_READ:
            rc = testdev_dma_read_source(td);
            break;
        case TESTDEV_DMA_STAGE_CHECKSUM:
            td->registers.dma_checksum = testdev_crc32(0, td->dma.bounce, td->dma.length);
            td->dma.stage = TESTDEV_DMA_STAGE_FINISH;
            rc = 0;
            break;
        case TESTDEV_DMA_STAGE_WRITE:
            rc = testdev_dma_write_destination(td);
            break;
        case TESTDEV_DMA_STAGE_FINISH:
            testdev_dma_finish(td, TESTDEV_DMA_ERROR_NONE, 0);
            return;
        case TESTDEV_DMA_STAGE_IDLE:
        default:
            return;
        }
        if (rc == -EINPROGRESS)
            return;
        if (rc < 0) {
            testdev_dma_finish(td, testdev_dma_error_of(rc), -rc);
            return;
        }
    }
}

/* Whether [address, address + length) fits below 2^64; length is not zero. */
static bool testdev_dma_range_wraps(uint64_t address, uint32_t length)
{
    return length - 1 > UINT64_MAX - address;
}

static int testdev_bus_master_enabled(struct testdev *td, bool *enabled)
{
    uint8_t command[2] = {0, 0}; /* the PCI Command register, little-endian */
    int rc;

    rc = td->host->pci_config_read(td->device, 0x04, command, sizeof(command));
    if (rc < 0)
        return rc;
    *enabled = (command[0] & 0x04) != 0; /* Bus Master Enable */
    return 0;
}

void testdev_dma_go(struct testdev *td)
{
    struct testdev_registers *regs = &td->registers;
    struct testdev_dma *dma = &td->dma;
    bool reads_source, writes_destination, bus_master = false;
    int rc;

    if ((regs->dma_status & TESTDEV_DMA_STATE_MASK) == TESTDEV_DMA_STATE_BUSY) {
        regs->dma_status |= TESTDEV_DMA_STATUS_REJECTED;
        return;
    }

    /* Latch the operation: register writes from now on only affect the next one. */
    dma->operation = regs->dma_operation;
    dma->source = regs->dma_source;
    dma->destination = regs->dma_destination;
    dma->length = regs->dma_length;
    dma->pattern = regs->dma_pattern;
    dma->irq_enable = (regs->dma_control & TESTDEV_DMA_CONTROL_IRQ_ENABLE) != 0;
    dma->vector =
        (regs->dma_control & TESTDEV_DMA_CONTROL_VECTOR_MASK) >> TESTDEV_DMA_CONTROL_VECTOR_SHIFT;
    regs->dma_status = TESTDEV_DMA_STATE_BUSY;
    regs->dma_errno = 0;

    /* A transfer abandoned by a reset still owns the request and the bounce buffer. */
    if (dma->outstanding) {
        testdev_dma_finish(td, TESTDEV_DMA_ERROR_BUSY, EBUSY);
        return;
    }
    if (dma->operation > TESTDEV_DMA_OP_CHECKSUM) {
        testdev_dma_finish(td, TESTDEV_DMA_ERROR_OPERATION, EINVAL);
        return;
    }
    if (dma->length == 0 || dma->length > TESTDEV_DMA_MAX_LENGTH) {
        testdev_dma_finish(td, TESTDEV_DMA_ERROR_LENGTH, EINVAL);
        return;
    }
    reads_source = dma->operation != TESTDEV_DMA_OP_FILL;
    writes_destination = dma->operation != TESTDEV_DMA_OP_CHECKSUM;
    if ((reads_source && testdev_dma_range_wraps(dma->source, dma->length)) ||
        (writes_destination && testdev_dma_range_wraps(dma->destination, dma->length))) {
        testdev_dma_finish(td, TESTDEV_DMA_ERROR_WRAP, EOVERFLOW);
        return;
    }
    rc = testdev_bus_master_enabled(td, &bus_master);
    if (rc < 0) {
        testdev_dma_finish(td, TESTDEV_DMA_ERROR_IO, -rc);
        return;
    }
    if (!bus_master) {
        testdev_dma_finish(td, TESTDEV_DMA_ERROR_BUS_MASTER, EPERM);
        return;
    }

    dma->stage = reads_source ? TESTDEV_DMA_STAGE_READ : TESTDEV_DMA_STAGE_WRITE;
    testdev_dma_step(td);
}

void testdev_dma_reset(struct testdev *td)
{
    if (td->dma.outstanding)
        td->dma.abandoned = true;
    td->dma.stage = TESTDEV_DMA_STAGE_IDLE;
}
