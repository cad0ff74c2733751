/*
 * nvme queues: fetching submission queue entries, walking PRPs, moving data, posting
 * completions and raising interrupts.
 *
 * Each command in progress is a small state machine (enum nvme_stage) in one of its
 * submission queue's slots: one for the admin queue, NVME_IO_SLOTS for an I/O queue. With
 * guest memory shared through file descriptors every stage but the backend's finishes at
 * once, and the data moves straight between the backend and guest memory. Without shared
 * memory each access to guest memory is a dma_submit() that completes later; the command
 * then waits in its stage and the DMA completion resumes it. File I/O goes to an io_uring
 * (io.c) and resumes the command from its completion, so a queue has many commands in
 * flight and they complete in whatever order the backend finishes them, which the
 * specification allows.
 *
 * A completion queue slot is reserved before an entry is fetched, so a completion never
 * finds its queue full.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "nvme.h"

/* Commands one submission queue may start before the next queue's turn (arbitration burst). */
#define NVME_BURST 16u

static void nvme_step(struct nvme_command *cmd);

static uint32_t nvme_cq_used(const struct nvme_cq *cq)
{
    return (cq->tail + cq->size - cq->head) % cq->size + cq->reserved;
}

static void nvme_dma_complete(struct vfio_userd_dma_request *request, int status)
{
    struct nvme_command *cmd = request->opaque;
    struct nvme_controller *ctrl = cmd->ctrl;

    if (status < 0 && cmd->dma_error == 0)
        cmd->dma_error = status;
    cmd->outstanding--;
    if (cmd->outstanding > 0)
        return;
    nvme_command_resume(cmd);
    nvme_queues_run(ctrl);
}

void nvme_command_resume(struct nvme_command *cmd)
{
    if (cmd->abandoned) {
        /* Its queue was deleted or the controller reset: nothing to post. */
        cmd->abandoned = false;
        cmd->stage = NVME_STAGE_IDLE;
    } else {
        nvme_step(cmd);
    }
}

int nvme_command_bounce(struct nvme_command *cmd)
{
    /* Page-aligned, so that an O_DIRECT namespace can take it as it is. */
    if (cmd->bounce == NULL)
        cmd->bounce = aligned_alloc(NVME_PAGE_SIZE, NVME_MAX_TRANSFER);
    return cmd->bounce != NULL ? 0 : -ENOMEM;
}

/*
 * Copies `length` bytes between `buffer` and guest memory at `address`: at once through a
 * translated pointer, or through a message exchange that completes later (outstanding
 * counts it). Returns 0 or -errno for a range the host refused.
 */
static int nvme_copy(struct nvme_command *cmd, uint64_t address, void *buffer, uint32_t length,
                     bool to_guest)
{
    struct nvme_controller *ctrl = cmd->ctrl;
    struct vfio_userd_dma_request *request;
    void *guest;
    int rc;

    guest = ctrl->host->dma_translate(ctrl->device, address, length,
                                      to_guest ? VFIO_USERD_DMA_WRITE : VFIO_USERD_DMA_READ);
    if (guest != NULL) {
        if (to_guest)
            memcpy(guest, buffer, length);
        else
            memcpy(buffer, guest, length);
        return 0;
    }
    if (cmd->requests_used >= NVME_MAX_SEGMENTS)
        return -E2BIG;
    request = &cmd->requests[cmd->requests_used++];
    memset(request, 0, sizeof(*request));
    request->address = address;
    request->buffer = buffer;
    request->length = length;
    request->to_client = to_guest;
    request->complete = nvme_dma_complete;
    request->opaque = cmd;
    cmd->outstanding++;
    rc = ctrl->host->dma_submit(ctrl->device, request);
    if (rc != -EINPROGRESS) {
        cmd->outstanding--;
        return rc;
    }
    return 0;
}

static void nvme_add_segment(struct nvme_command *cmd, uint64_t address, uint32_t length)
{
    /* Adjacent pages become one span: fewer translations, fewer iovecs. */
    if (cmd->segment_count > 0) {
        struct nvme_segment *last = &cmd->segments[cmd->segment_count - 1];
        if (last->address + last->length == address) {
            last->length += length;
            return;
        }
    }
    /* Cannot overflow: data_length is at most MDTS, one segment per page at worst. */
    if (cmd->segment_count >= NVME_MAX_SEGMENTS)
        return;
    cmd->segments[cmd->segment_count].address = address;
    cmd->segments[cmd->segment_count].length = length;
    cmd->segment_count++;
}

static void nvme_fail(struct nvme_command *cmd, uint16_t status)
{
    cmd->status = status;
    cmd->stage = NVME_STAGE_POST;
}

/* PRP1 and PRP2 of the entry, for data_length bytes: the spec's rules for offsets. */
static void nvme_prp_start(struct nvme_command *cmd)
{
    uint64_t prp1 = cmd->sqe.prp1, prp2 = cmd->sqe.prp2;
    uint32_t length = cmd->data_length, first;

    cmd->segment_count = 0;
    cmd->prp_hops = 0;
    if ((prp1 & 3) != 0) {
        nvme_fail(cmd, NVME_PRP_OFFSET_INVALID);
        return;
    }
    first = NVME_PAGE_SIZE - (uint32_t)(prp1 & (NVME_PAGE_SIZE - 1));
    if (first > length)
        first = length;
    nvme_add_segment(cmd, prp1, first);
    length -= first;
    cmd->stage = NVME_STAGE_DATA_IN;
    if (length == 0)
        return;
    if (length <= NVME_PAGE_SIZE) {
        if ((prp2 & (NVME_PAGE_SIZE - 1)) != 0) {
            nvme_fail(cmd, NVME_PRP_OFFSET_INVALID);
            return;
        }
        nvme_add_segment(cmd, prp2, length);
        return;
    }
    if ((prp2 & 7) != 0) {
        nvme_fail(cmd, NVME_PRP_OFFSET_INVALID);
        return;
    }
    cmd->prp_list = prp2;
    cmd->prp_remaining = (length + NVME_PAGE_SIZE - 1) / NVME_PAGE_SIZE;
    cmd->stage = NVME_STAGE_PRP;
}

/* Reads the entries of the current list page that the transfer still needs. */
static void nvme_prp_read(struct nvme_command *cmd)
{
    uint32_t in_page = (NVME_PAGE_SIZE - (uint32_t)(cmd->prp_list & (NVME_PAGE_SIZE - 1))) / 8;
    uint32_t count = cmd->prp_remaining <= in_page ? cmd->prp_remaining : in_page;
    int rc;

    if (++cmd->prp_hops > NVME_MAX_SEGMENTS || count > NVME_MAX_SEGMENTS) {
        nvme_fail(cmd, NVME_INVALID_FIELD);
        return;
    }
    cmd->prp_entries_count = count;
    cmd->stage = NVME_STAGE_PRP_PARSE;
    rc = nvme_copy(cmd, cmd->prp_list, cmd->prp_entries, count * 8, false);
    if (rc < 0)
        nvme_fail(cmd, NVME_DATA_TRANSFER_ERROR);
}

static void nvme_prp_parse(struct nvme_command *cmd)
{
    uint32_t count = cmd->prp_entries_count;
    bool chained = cmd->prp_remaining > count;
    uint32_t data_entries = chained ? count - 1 : count;
    uint32_t placed = 0;

    for (uint32_t i = 0; i < cmd->segment_count; i++)
        placed += cmd->segments[i].length;
    for (uint32_t i = 0; i < data_entries; i++) {
        uint64_t entry = cmd->prp_entries[i];
        uint32_t length = cmd->data_length - placed;

        if ((entry & (NVME_PAGE_SIZE - 1)) != 0) {
            nvme_fail(cmd, NVME_PRP_OFFSET_INVALID);
            return;
        }
        if (length > NVME_PAGE_SIZE)
            length = NVME_PAGE_SIZE;
        nvme_add_segment(cmd, entry, length);
        placed += length;
    }
    cmd->prp_remaining -= data_entries;
    if (!chained) {
        cmd->stage = NVME_STAGE_DATA_IN;
        return;
    }
    cmd->prp_list = cmd->prp_entries[count - 1];
    if ((cmd->prp_list & 7) != 0) {
        nvme_fail(cmd, NVME_PRP_OFFSET_INVALID);
        return;
    }
    cmd->stage = NVME_STAGE_PRP;
}

/* Whether every segment translates: then reads and writes go straight to guest memory. */
static bool nvme_translate_all(struct nvme_command *cmd)
{
    struct nvme_controller *ctrl = cmd->ctrl;
    uint32_t access = cmd->data_to_guest ? VFIO_USERD_DMA_WRITE : VFIO_USERD_DMA_READ;

    for (uint32_t i = 0; i < cmd->segment_count; i++) {
        void *pointer = ctrl->host->dma_translate(ctrl->device, cmd->segments[i].address,
                                                  cmd->segments[i].length, access);
        if (pointer == NULL)
            return false;
        cmd->iov[i].iov_base = pointer;
        cmd->iov[i].iov_len = cmd->segments[i].length;
    }
    return true;
}

static bool nvme_is_io_data(const struct nvme_command *cmd)
{
    /* Read and Write: the only commands whose data the backend moves itself. */
    return cmd->sq->id != 0 && (cmd->sqe.opcode == 0x01 || cmd->sqe.opcode == 0x02);
}

static void nvme_data_in(struct nvme_command *cmd)
{
    uint32_t offset = 0;
    int rc;

    cmd->stage = NVME_STAGE_EXECUTE;
    cmd->direct = nvme_is_io_data(cmd) && nvme_translate_all(cmd) && nvme_io_direct_ok(cmd);
    if (cmd->direct)
        return;
    if (nvme_command_bounce(cmd) < 0) {
        nvme_fail(cmd, NVME_INTERNAL_ERROR);
        return;
    }
    if (cmd->data_to_guest) {
        /* What a command leaves unwritten reads as zeros, never as old data. */
        memset(cmd->bounce, 0, cmd->data_length);
        return;
    }
    cmd->requests_used = 0;
    for (uint32_t i = 0; i < cmd->segment_count; i++) {
        rc = nvme_copy(cmd, cmd->segments[i].address, cmd->bounce + offset, cmd->segments[i].length,
                       false);
        if (rc < 0) {
            nvme_fail(cmd, NVME_DATA_TRANSFER_ERROR);
            return;
        }
        offset += cmd->segments[i].length;
    }
}

static void nvme_data_out(struct nvme_command *cmd)
{
    uint32_t offset = 0;
    int rc;

    cmd->stage = NVME_STAGE_POST;
    cmd->requests_used = 0;
    for (uint32_t i = 0; i < cmd->segment_count; i++) {
        rc = nvme_copy(cmd, cmd->segments[i].address, cmd->bounce + offset, cmd->segments[i].length,
                       true);
        if (rc < 0) {
            nvme_fail(cmd, NVME_DATA_TRANSFER_ERROR);
            return;
        }
        offset += cmd->segments[i].length;
    }
}

static void nvme_decode(struct nvme_command *cmd)
{
    cmd->status = NVME_SUCCESS;
    cmd->result = 0;
    cmd->data_length = 0;
    cmd->data_to_guest = false;
    cmd->direct = false;
    cmd->segment_count = 0;
    /* FUSE (fused operations) and PSDT (SGLs) are not supported. */
    if ((cmd->sqe.flags & 0xc3) != 0) {
        nvme_fail(cmd, NVME_INVALID_FIELD);
        return;
    }
    if (cmd->sq->id == 0)
        nvme_admin_decode(cmd);
    else
        nvme_io_decode(cmd);
    if (cmd->status != NVME_SUCCESS) {
        cmd->stage = NVME_STAGE_POST;
        return;
    }
    if (cmd->data_length > 0)
        nvme_prp_start(cmd);
    else
        cmd->stage = NVME_STAGE_EXECUTE;
}

/* What follows EXECUTE, once the backend is done with the command. */
static void nvme_executed(struct nvme_command *cmd)
{
    if (cmd->status == NVME_HELD) {
        /* An Asynchronous Event Request: no completion until an event comes. */
        struct nvme_cq *cq = &cmd->ctrl->cqs[cmd->sq->cq_id];
        if (cmd->holds_slot)
            cq->reserved--;
        cmd->holds_slot = false;
        cmd->stage = NVME_STAGE_IDLE;
        return;
    }
    if (cmd->status == NVME_SUCCESS && cmd->data_length > 0 && cmd->data_to_guest && !cmd->direct)
        cmd->stage = NVME_STAGE_DATA_OUT;
    else
        cmd->stage = NVME_STAGE_POST;
}

static void nvme_execute(struct nvme_command *cmd)
{
    if (cmd->sq->id == 0)
        nvme_admin_execute(cmd);
    else
        nvme_io_execute(cmd);
    if (cmd->outstanding > 0)
        cmd->stage = NVME_STAGE_EXECUTED; /* the backend resumes it */
    else
        nvme_executed(cmd);
}

/* Writes the completion entry; the phase goes last so the guest never sees half of it. */
static void nvme_post(struct nvme_command *cmd)
{
    struct nvme_controller *ctrl = cmd->ctrl;
    struct nvme_cq *cq = &ctrl->cqs[cmd->sq->cq_id];
    uint64_t address = cq->base + (uint64_t)cq->tail * sizeof(struct nvme_cqe);
    uint16_t status = cmd->status;
    struct nvme_cqe *slot;
    int rc;

    /* Do Not Retry: every error here would fail the same way again. */
    if (status != NVME_SUCCESS)
        status |= 0x4000;
    cmd->cqe.result = cmd->result;
    cmd->cqe.reserved = 0;
    cmd->cqe.sq_head = (uint16_t)cmd->sq->head;
    cmd->cqe.sq_id = cmd->sq->id;
    cmd->cqe.cid = cmd->sqe.cid;
    cmd->cqe.status = (uint16_t)(status << 1 | (cq->phase ? 1 : 0));
    cq->tail++;
    if (cq->tail == cq->size) {
        cq->tail = 0;
        cq->phase = !cq->phase;
    }
    if (cmd->holds_slot)
        cq->reserved--;
    cmd->holds_slot = false;
    cmd->stage = NVME_STAGE_DONE;

    slot = ctrl->host->dma_translate(ctrl->device, address, sizeof(*slot), VFIO_USERD_DMA_WRITE);
    if (slot != NULL) {
        uint32_t last;
        memcpy(slot, &cmd->cqe, 12);
        memcpy(&last, (const uint8_t *)&cmd->cqe + 12, sizeof(last));
        __atomic_store_n((uint32_t *)((uint8_t *)slot + 12), last, __ATOMIC_RELEASE);
        return;
    }
    cmd->requests_used = 0;
    rc = nvme_copy(cmd, address, &cmd->cqe, sizeof(cmd->cqe), true);
    if (rc < 0)
        cmd->dma_error = rc;
}

/* A failed access to queue memory: there is nowhere to report it but CSTS.CFS. */
static void nvme_queue_memory_failed(struct nvme_command *cmd, const char *what)
{
    nvme_guest_log(cmd->ctrl, "queue %u: %s failed: %s", cmd->sq->id, what,
                   strerror(-cmd->dma_error));
    cmd->stage = NVME_STAGE_IDLE;
    if (cmd->holds_slot)
        cmd->ctrl->cqs[cmd->sq->cq_id].reserved--;
    cmd->holds_slot = false;
    nvme_fatal(cmd->ctrl, "queue memory is not accessible");
}

static void nvme_step(struct nvme_command *cmd)
{
    while (cmd->outstanding == 0) {
        if (cmd->dma_error != 0) {
            switch (cmd->stage) {
            case NVME_STAGE_DECODE:
                nvme_queue_memory_failed(cmd, "reading a submission queue entry");
                cmd->dma_error = 0;
                return;
            case NVME_STAGE_DONE:
                nvme_queue_memory_failed(cmd, "writing a completion queue entry");
                cmd->dma_error = 0;
                return;
            default:
                nvme_fail(cmd, NVME_DATA_TRANSFER_ERROR);
                break;
            }
            cmd->dma_error = 0;
        }
        switch (cmd->stage) {
        case NVME_STAGE_DECODE:
            nvme_decode(cmd);
            break;
        case NVME_STAGE_PRP:
            cmd->requests_used = 0;
            nvme_prp_read(cmd);
            break;
        case NVME_STAGE_PRP_PARSE:
            nvme_prp_parse(cmd);
            break;
        case NVME_STAGE_DATA_IN:
            nvme_data_in(cmd);
            break;
        case NVME_STAGE_EXECUTE:
            nvme_execute(cmd);
            break;
        case NVME_STAGE_EXECUTED:
            nvme_executed(cmd);
            break;
        case NVME_STAGE_DATA_OUT:
            nvme_data_out(cmd);
            break;
        case NVME_STAGE_POST:
            nvme_post(cmd);
            break;
        case NVME_STAGE_DONE:
            cmd->ctrl->cqs[cmd->sq->cq_id].irq_wanted = true;
            cmd->stage = NVME_STAGE_IDLE;
            return;
        case NVME_STAGE_FETCH:
        case NVME_STAGE_IDLE:
        default:
            return;
        }
    }
}

static bool nvme_slot_free(const struct nvme_command *cmd)
{
    return cmd->stage == NVME_STAGE_IDLE && cmd->outstanding == 0;
}

static struct nvme_command *nvme_sq_free_slot(struct nvme_sq *sq)
{
    for (uint32_t i = 0; i < sq->slots; i++)
        if (nvme_slot_free(&sq->commands[i]))
            return &sq->commands[i];
    return NULL;
}

int nvme_sq_allocate(struct nvme_sq *sq, uint32_t slots)
{
    if (sq->commands != NULL)
        return 0;
    sq->commands = calloc(slots, sizeof(*sq->commands));
    if (sq->commands == NULL)
        return -ENOMEM;
    sq->slots = slots;
    return 0;
}

/* Starts the entry at the queue's head in a free slot: reserve a completion slot, fetch,
 * run. */
static void nvme_sq_start(struct nvme_controller *ctrl, struct nvme_sq *sq)
{
    struct nvme_command *cmd = nvme_sq_free_slot(sq);
    struct nvme_cq *cq = &ctrl->cqs[sq->cq_id];
    uint64_t address = sq->base + (uint64_t)sq->head * sizeof(struct nvme_sqe);
    const void *entry;
    int rc = 0;

    cmd->ctrl = ctrl;
    cmd->sq = sq;
    cmd->dma_error = 0;
    cmd->requests_used = 0;
    cmd->holds_slot = true;
    cq->reserved++;
    ctrl->commands_started++;
    sq->head = (sq->head + 1) % sq->size;
    cmd->stage = NVME_STAGE_DECODE;
    entry = ctrl->host->dma_translate(ctrl->device, address, sizeof(cmd->sqe), VFIO_USERD_DMA_READ);
    if (entry != NULL) {
        memcpy(&cmd->sqe, entry, sizeof(cmd->sqe)); /* copied once, checked after */
    } else {
        /* Through messages, the first dword comes alone: the host tells QEMU's DMA_READ reply
         * layout from the spec's only by a reply that one layout fits, and a 4-byte one whose
         * data is not zero is such a reply; a 64-byte entry ending in a zero CDW15 fits both
         * and would be refused while the layout is unknown. The two requests complete in
         * order. */
        rc = nvme_copy(cmd, address, &cmd->sqe, 4, false);
        if (rc == 0)
            rc = nvme_copy(cmd, address + 4, (uint8_t *)&cmd->sqe + 4, sizeof(cmd->sqe) - 4, false);
    }
    if (rc < 0)
        cmd->dma_error = rc;
    nvme_step(cmd);
}

static bool nvme_can_start(const struct nvme_controller *ctrl, const struct nvme_sq *sq)
{
    const struct nvme_cq *cq = &ctrl->cqs[sq->cq_id];

    return !ctrl->quiescing && sq->created && sq->head != sq->tail &&
           nvme_sq_free_slot((struct nvme_sq *)sq) != NULL && nvme_cq_used(cq) + 1 < cq->size;
}

static bool nvme_running(const struct nvme_controller *ctrl)
{
    return (ctrl->csts & (NVME_CSTS_RDY | NVME_CSTS_CFS)) == NVME_CSTS_RDY &&
           (ctrl->csts & NVME_CSTS_SHST_MASK) == 0;
}

void nvme_queues_run(struct nvme_controller *ctrl)
{
    uint64_t started_commands = ctrl->commands_started;
    bool progress = true;

    /* A DMA completion or a Delete queue command may arrive while the loop runs. */
    if (ctrl->processing)
        return;
    ctrl->processing = true;
    while (progress && nvme_running(ctrl)) {
        progress = false;
        for (uint32_t q = 0; q <= ctrl->config.io_queues && nvme_running(ctrl); q++) {
            struct nvme_sq *sq = &ctrl->sqs[q];

            nvme_dbbuf_refresh(ctrl, sq);
            for (uint32_t n = 0; n < NVME_BURST && nvme_can_start(ctrl, sq); n++) {
                nvme_sq_start(ctrl, sq);
                progress = true;
            }
        }
        /* One submission for everything the round queued; reads the page cache holds
         * complete inside it, and their slots take the next entries at once. */
        if (nvme_ring_kick(ctrl))
            progress = true;
        /* With shadow doorbells: ask for a BAR0 write where nothing else will wake the
         * queue, and go on if the guest moved meanwhile. */
        if (!progress && nvme_running(ctrl) &&
            !nvme_dbbuf_poll_later(ctrl, ctrl->commands_started != started_commands) &&
            nvme_dbbuf_arm(ctrl))
            progress = true;
    }
    ctrl->processing = false;
    nvme_irq_flush(ctrl);
}

static bool nvme_vector_masked(const struct nvme_controller *ctrl, uint16_t vector)
{
    /* INTMS applies to pin and MSI interrupts; the driver leaves it alone with MSI-X. */
    return vector < 32 && (ctrl->intms & (1u << vector)) != 0;
}

void nvme_irq_flush(struct nvme_controller *ctrl)
{
    for (uint32_t q = 0; q <= ctrl->config.io_queues; q++) {
        struct nvme_cq *cq = &ctrl->cqs[q];
        int rc;

        if (!cq->created || !cq->irq_wanted || !cq->irq_enabled)
            continue;
        if (nvme_vector_masked(ctrl, cq->vector))
            continue;
        cq->irq_wanted = false;
        rc = ctrl->host->irq_trigger(ctrl->device, cq->vector);
        if (rc < 0)
            nvme_guest_log(ctrl, "interrupt vector %u: %s", cq->vector, strerror(-rc));
    }
}

/* After the head moved: entries still unread keep the interrupt asserted, as a level does;
 * once the guest has read them all, an interrupt held back by INTMS has no reason left. */
void nvme_cq_update_irq(struct nvme_controller *ctrl, struct nvme_cq *cq)
{
    cq->irq_wanted = cq->head != cq->tail;
}

void nvme_sq_teardown(struct nvme_controller *ctrl, struct nvme_sq *sq)
{
    for (uint32_t i = 0; i < sq->slots; i++) {
        struct nvme_command *cmd = &sq->commands[i];

        if (cmd->stage != NVME_STAGE_IDLE) {
            if (cmd->holds_slot && ctrl->cqs[sq->cq_id].created)
                ctrl->cqs[sq->cq_id].reserved--;
            cmd->holds_slot = false;
            /* The host (DMA messages) or the kernel (io_uring) still holds its requests
             * and buffer: it goes idle when they come back, without a completion. */
            if (cmd->outstanding > 0)
                cmd->abandoned = true;
            else
                cmd->stage = NVME_STAGE_IDLE;
        }
        if (cmd->outstanding == 0) {
            free(cmd->bounce);
            cmd->bounce = NULL;
            free(cmd->zero_ops);
            cmd->zero_ops = NULL;
        }
    }
    sq->created = false;
    sq->head = sq->tail = 0;
}

void nvme_cq_teardown(struct nvme_controller *ctrl, struct nvme_cq *cq)
{
    cq->created = false;
    cq->head = cq->tail = cq->reserved = 0;
    cq->irq_wanted = false;
}
