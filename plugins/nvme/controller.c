/*
 * nvme controller registers (BAR0): CAP, VS, INTMS/INTMC, CC, CSTS, AQA, ASQ, ACQ and the
 * doorbells, and what writing them does: enable, reset, shutdown, queue processing.
 *
 * Every access is reduced to 32-bit register reads and writes (a 64-bit access is its two
 * halves, low first, as the specification allows a host to do). Doorbell values are checked
 * against their queue: a value outside it is a host error the controller cannot report in a
 * completion, so it sets Controller Fatal Status, as the specification suggests for errors
 * that leave queue state unknown.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "nvme.h"

/* The CC bits this controller stores: EN, CSS, MPS, AMS, SHN, IOSQES, IOCQES. */
#define NVME_CC_WRITABLE 0x00fffff1u
#define NVME_AQA_MASK    0x0fff0fffu

/* At most this many guest-triggered log lines per second, so a hostile guest cannot fill
 * the journal. */
#define NVME_LOG_PER_SECOND 10u

static void nvme_guest_vlog(struct nvme_controller *ctrl, enum vfio_userd_log_level level,
                            const char *format, va_list args)
{
    struct timespec now;
    char line[256];

    clock_gettime(CLOCK_MONOTONIC, &now);
    if ((uint64_t)now.tv_sec != ctrl->log_second) {
        ctrl->log_second = (uint64_t)now.tv_sec;
        ctrl->log_budget = NVME_LOG_PER_SECOND;
    }
    if (ctrl->log_budget == 0)
        return;
    ctrl->log_budget--;
    vsnprintf(line, sizeof(line), format, args);
    vfio_userd_log(ctrl->device, level, "%s", line);
}

void nvme_guest_log(struct nvme_controller *ctrl, const char *format, ...)
{
    va_list args;

    va_start(args, format);
    nvme_guest_vlog(ctrl, VFIO_USERD_LOG_WARNING, format, args);
    va_end(args);
}

void nvme_guest_info(struct nvme_controller *ctrl, const char *format, ...)
{
    va_list args;

    va_start(args, format);
    nvme_guest_vlog(ctrl, VFIO_USERD_LOG_INFO, format, args);
    va_end(args);
}

void nvme_fatal(struct nvme_controller *ctrl, const char *why)
{
    if ((ctrl->csts & NVME_CSTS_CFS) == 0)
        nvme_guest_log(ctrl, "controller fatal status: %s", why);
    ctrl->csts |= NVME_CSTS_CFS;
}

static void nvme_features_default(struct nvme_controller *ctrl)
{
    memset(&ctrl->features, 0, sizeof(ctrl->features));
    ctrl->features.temperature_over = 0x157; /* 70 degrees C, as WCTEMP */
    ctrl->features.write_cache = true;
}

/* Controller reset (CC.EN 1 -> 0): queues, held commands and features go; AQA, ASQ and ACQ
 * stay, as the specification says. */
void nvme_controller_reset(struct nvme_controller *ctrl)
{
    for (uint32_t q = 0; q <= ctrl->config.io_queues; q++) {
        nvme_sq_teardown(ctrl, &ctrl->sqs[q]);
        nvme_cq_teardown(ctrl, &ctrl->cqs[q]);
    }
    /* Commands the backend still works on are abandoned now (no completion); wait for
     * them, so that none writes guest memory after the reset. */
    nvme_ring_drain(ctrl);
    nvme_dbbuf_reset(ctrl);
    nvme_doorbells_poll_stop(ctrl);
    nvme_doorbells_clear(ctrl, UINT32_MAX, false);
    nvme_features_default(ctrl);
    ctrl->queues_requested = false;
    ctrl->aer_count = 0;
    ctrl->intms = 0;
    ctrl->csts = 0;
}

static void nvme_enable(struct nvme_controller *ctrl)
{
    uint32_t sq_entries = (ctrl->aqa & 0xfff) + 1;
    uint32_t cq_entries = ((ctrl->aqa >> 16) & 0xfff) + 1;
    struct nvme_sq *sq = &ctrl->sqs[0];
    struct nvme_cq *cq = &ctrl->cqs[0];

    /* Only the NVM command set, 4 KiB memory pages and round robin are offered (CAP). */
    if (NVME_CC_CSS(ctrl->cc) != 0 || NVME_CC_MPS(ctrl->cc) != 0 || NVME_CC_AMS(ctrl->cc) != 0) {
        nvme_fatal(ctrl, "CC asks for a command set, page size or arbitration not in CAP");
        return;
    }
    if (sq_entries < 2 || cq_entries < 2 || ctrl->asq == 0 || ctrl->acq == 0) {
        nvme_fatal(ctrl, "the admin queue attributes are invalid");
        return;
    }
    cq->created = true;
    cq->id = 0;
    cq->base = ctrl->acq;
    cq->size = cq_entries;
    cq->head = cq->tail = cq->reserved = 0;
    cq->phase = true;
    cq->irq_enabled = true;
    cq->vector = 0;
    cq->irq_wanted = false;
    sq->created = true;
    sq->id = 0;
    sq->cq_id = 0;
    sq->base = ctrl->asq;
    sq->size = sq_entries;
    sq->head = sq->tail = 0;
    ctrl->csts = NVME_CSTS_RDY;
    nvme_doorbells_poll_start(ctrl);
}

static void nvme_shutdown(struct nvme_controller *ctrl)
{
    /* Writes in flight land first; then the backends' caches go to storage. */
    nvme_ring_drain(ctrl);
    for (uint32_t i = 0; i < ctrl->namespace_count; i++)
        nvme_namespace_flush(&ctrl->namespaces[i]);
    ctrl->csts = (ctrl->csts & ~NVME_CSTS_SHST_MASK) | NVME_CSTS_SHST_DONE;
}

static void nvme_cc_write(struct nvme_controller *ctrl, uint32_t value)
{
    uint32_t old = ctrl->cc;

    ctrl->cc = value & NVME_CC_WRITABLE;
    if ((old & NVME_CC_EN) != 0 && (value & NVME_CC_EN) == 0) {
        nvme_controller_reset(ctrl);
        return;
    }
    if ((old & NVME_CC_EN) == 0 && (value & NVME_CC_EN) != 0)
        nvme_enable(ctrl);
    if (NVME_CC_SHN(ctrl->cc) != 0 && NVME_CC_SHN(old) == 0 && (ctrl->cc & NVME_CC_EN) != 0)
        nvme_shutdown(ctrl);
}

static uint32_t nvme_half(uint64_t value, uint32_t offset)
{
    return (offset & 4) != 0 ? (uint32_t)(value >> 32) : (uint32_t)value;
}

static void nvme_set_half(uint64_t *value, uint32_t offset, uint32_t half)
{
    if ((offset & 4) != 0)
        *value = (*value & 0xffffffffull) | (uint64_t)half << 32;
    else
        *value = (*value & ~0xffffffffull) | half;
}

static uint32_t nvme_register_read(const struct nvme_controller *ctrl, uint32_t offset)
{
    switch (offset) {
    case NVME_REG_CAP:
    case NVME_REG_CAP + 4:
        return nvme_half(ctrl->cap, offset);
    case NVME_REG_VS:
        return 0x00010400; /* 1.4.0 */
    case NVME_REG_INTMS:
    case NVME_REG_INTMC:
        return ctrl->intms;
    case NVME_REG_CC:
        return ctrl->cc;
    case NVME_REG_CSTS:
        return ctrl->csts;
    case NVME_REG_AQA:
        return ctrl->aqa;
    case NVME_REG_ASQ:
    case NVME_REG_ASQ + 4:
        return nvme_half(ctrl->asq, offset);
    case NVME_REG_ACQ:
    case NVME_REG_ACQ + 4:
        return nvme_half(ctrl->acq, offset);
    default:
        return 0; /* reserved registers and doorbells read as zero */
    }
}

void nvme_doorbell_take(struct nvme_controller *ctrl, uint32_t q, bool completion, uint32_t value)
{
    if (!completion) {
        struct nvme_sq *sq = &ctrl->sqs[q];

        if (!sq->created) {
            nvme_guest_log(ctrl, "doorbell of submission queue %u, which does not exist", q);
            return;
        }
        /* With shadow doorbells the write only wakes the controller: the value may be
         * older than the shadow's, which the queue loop reads. */
        if (nvme_dbbuf_active(ctrl, q))
            return;
        if (value == NVME_DOORBELL_UNKNOWN && ctrl->config.doorbells == NVME_DOORBELLS_IOEVENTFD) {
            nvme_fatal(ctrl, "a doorbell came through an I/O eventfd, which loses its value, "
                             "and the driver uses no shadow doorbells");
            return;
        }
        nvme_sq_set_tail(ctrl, sq, value);
    } else {
        struct nvme_cq *cq = &ctrl->cqs[q];

        if (!cq->created) {
            nvme_guest_log(ctrl, "doorbell of completion queue %u, which does not exist", q);
            return;
        }
        if (nvme_dbbuf_active(ctrl, q))
            return;
        if (value == NVME_DOORBELL_UNKNOWN && ctrl->config.doorbells == NVME_DOORBELLS_IOEVENTFD) {
            nvme_fatal(ctrl, "a doorbell came through an I/O eventfd, which loses its value, "
                             "and the driver uses no shadow doorbells");
            return;
        }
        if (nvme_cq_set_head(ctrl, cq, value))
            nvme_cq_update_irq(ctrl, cq);
    }
}

static void nvme_doorbell_write(struct nvme_controller *ctrl, uint32_t offset, uint32_t value)
{
    uint32_t index = (offset - NVME_DOORBELLS) / 4;
    uint32_t q = index / 2;

    if (q > ctrl->config.io_queues || (ctrl->csts & NVME_CSTS_RDY) == 0) {
        nvme_guest_log(ctrl, "doorbell write at 0x%x ignored: no such queue or not ready", offset);
        return;
    }
    /* A client that did not map the page: the poller must not see the value as new. */
    if (ctrl->config.doorbells == NVME_DOORBELLS_MAPPED)
        nvme_doorbells_trapped(ctrl, index, value);
    nvme_doorbell_take(ctrl, q, (index & 1) != 0, value);
    nvme_queues_run(ctrl);
}

static void nvme_register_write(struct nvme_controller *ctrl, uint32_t offset, uint32_t value)
{
    if (offset >= NVME_DOORBELLS) {
        nvme_doorbell_write(ctrl, offset, value);
        return;
    }
    switch (offset) {
    case NVME_REG_INTMS:
        ctrl->intms |= value;
        break;
    case NVME_REG_INTMC:
        ctrl->intms &= ~value;
        nvme_irq_flush(ctrl); /* interrupts held back by the mask go now */
        break;
    case NVME_REG_CC:
        nvme_cc_write(ctrl, value);
        nvme_queues_run(ctrl);
        break;
    case NVME_REG_AQA:
        ctrl->aqa = value & NVME_AQA_MASK;
        break;
    case NVME_REG_ASQ:
    case NVME_REG_ASQ + 4:
        nvme_set_half(&ctrl->asq, offset, value);
        ctrl->asq &= ~(uint64_t)(NVME_PAGE_SIZE - 1);
        break;
    case NVME_REG_ACQ:
    case NVME_REG_ACQ + 4:
        nvme_set_half(&ctrl->acq, offset, value);
        ctrl->acq &= ~(uint64_t)(NVME_PAGE_SIZE - 1);
        break;
    default:
        break; /* CAP, VS, CSTS and reserved registers: read-only or ignored (no NSSR) */
    }
}

int nvme_bar0_access(void *instance, uint32_t region, uint64_t offset, void *data, uint32_t count,
                     bool is_write)
{
    struct nvme_controller *ctrl = instance;
    uint32_t base = (uint32_t)(offset & ~3ull);
    uint32_t value;

    if (offset >= NVME_BAR0_SIZE)
        return -EINVAL;
    if (!is_write && count <= 4 && (offset & 3) + count <= 4) {
        value = nvme_register_read(ctrl, base);
        memcpy(data, (const uint8_t *)&value + (offset & 3), count);
        return 0;
    }
    if ((count != 4 && count != 8) || (offset & (count - 1)) != 0)
        return -EINVAL;
    for (uint32_t done = 0; done < count; done += 4) {
        if (is_write) {
            memcpy(&value, (const uint8_t *)data + done, 4);
            nvme_register_write(ctrl, (uint32_t)offset + done, value);
        } else {
            value = nvme_register_read(ctrl, (uint32_t)offset + done);
            memcpy((uint8_t *)data + done, &value, 4);
        }
    }
    return 0;
}
