/*
 * nvme admin command set: Identify, Get/Set Features, Create/Delete I/O queues, Get Log
 * Page, Asynchronous Event Request, Abort, Keep Alive and Doorbell Buffer Config.
 *
 * DECODE checks what can be checked before data moves and says how much data goes to the
 * guest; EXECUTE builds that data in the command's bounce buffer (zeroed beforehand) or
 * applies the command. Statuses are the ones the NVMe 1.4 base specification gives for
 * each check; anything not offered is Invalid Command Opcode or Invalid Field in Command.
 */
#include <string.h>

#include "nvme.h"

enum nvme_admin_opcode {
    NVME_ADMIN_DELETE_SQ = 0x00,
    NVME_ADMIN_CREATE_SQ = 0x01,
    NVME_ADMIN_GET_LOG_PAGE = 0x02,
    NVME_ADMIN_DELETE_CQ = 0x04,
    NVME_ADMIN_CREATE_CQ = 0x05,
    NVME_ADMIN_IDENTIFY = 0x06,
    NVME_ADMIN_ABORT = 0x08,
    NVME_ADMIN_SET_FEATURES = 0x09,
    NVME_ADMIN_GET_FEATURES = 0x0a,
    NVME_ADMIN_ASYNC_EVENT = 0x0c,
    NVME_ADMIN_KEEP_ALIVE = 0x18,
    NVME_ADMIN_DOORBELL_BUFFER_CONFIG = 0x7c,
};

enum nvme_feature {
    NVME_FEAT_ARBITRATION = 0x01,
    NVME_FEAT_POWER_MANAGEMENT = 0x02,
    NVME_FEAT_TEMPERATURE = 0x04,
    NVME_FEAT_ERROR_RECOVERY = 0x05,
    NVME_FEAT_WRITE_CACHE = 0x06,
    NVME_FEAT_NUM_QUEUES = 0x07,
    NVME_FEAT_IRQ_COALESCING = 0x08,
    NVME_FEAT_IRQ_CONFIG = 0x09,
    NVME_FEAT_WRITE_ATOMICITY = 0x0a,
    NVME_FEAT_ASYNC_EVENT = 0x0b,
    NVME_FEAT_KEEP_ALIVE = 0x0f,
};

#define NVME_LOG_ERROR    0x01
#define NVME_LOG_SMART    0x02
#define NVME_LOG_FIRMWARE 0x03
#define NVME_LOG_SIZE     512u

/* Composite temperature reported, in kelvins (38 degrees C), and the thresholds in CTRL. */
#define NVME_TEMPERATURE 311u
#define NVME_WCTEMP      0x157u
#define NVME_CCTEMP      0x175u

static void put16(uint8_t *p, uint16_t v)
{
    memcpy(p, &v, sizeof(v));
}

static void put32(uint8_t *p, uint32_t v)
{
    memcpy(p, &v, sizeof(v));
}

static void put64(uint8_t *p, uint64_t v)
{
    memcpy(p, &v, sizeof(v));
}

/* ASCII fields are padded with spaces, not NULs. */
static void put_string(uint8_t *p, const char *s, size_t size)
{
    size_t length = strlen(s);

    memset(p, ' ', size);
    memcpy(p, s, length < size ? length : size);
}

static void nvme_identify_controller(struct nvme_controller *ctrl, uint8_t *d)
{
    const struct nvme_config *config = &ctrl->config;
    char nqn[224];

    put16(d + 0, config->identity.vendor_id);
    put16(d + 2, config->identity.subsystem_vendor_id);
    put_string(d + 4, config->serial, 20);
    put_string(d + 24, config->model, 40);
    put_string(d + 64, "1.0", 8);
    d[72] = 6;         /* RAB */
    d[77] = NVME_MDTS; /* MDTS */
    put16(d + 78, 1);  /* CNTLID */
    put32(d + 80, 0x00010400);
    d[111] = 1;              /* CNTRLTYPE: I/O controller */
    put16(d + 256, 1u << 8); /* OACS: Doorbell Buffer Config */
    d[258] = 3;              /* ACL: 4 Aborts */
    d[259] = NVME_AER_LIMIT - 1;
    d[260] = 0x03; /* FRMW: one read-only slot */
    d[261] = 0x04; /* LPA: extended data (NUMDU, offsets) for Get Log Page */
    d[262] = NVME_ERROR_LOG_SIZE - 1;
    d[263] = 0; /* NPSS: one power state */
    put16(d + 266, NVME_WCTEMP);
    put16(d + 268, NVME_CCTEMP);
    put16(d + 320, 10); /* KAS: Keep Alive in units of 1 s */
    d[512] = 0x66;      /* SQES: 64 bytes */
    d[513] = 0x44;      /* CQES: 16 bytes */
    put32(d + 516, ctrl->namespace_count);
    put16(d + 520, 0x0c); /* ONCS: Dataset Management, Write Zeroes */
    d[525] = 0x07;        /* VWC: present, Flush of all namespaces supported */
    snprintf(nqn, sizeof(nqn), "nqn.2024-01.org.vfio-userd:nvme:%s", config->serial);
    memcpy(d + 768, nqn, strlen(nqn));
    put16(d + 2048, 2500); /* PSD0: 25 W */
}

static void nvme_uuid_of(const struct nvme_namespace *ns, uint8_t uuid[16])
{
    memcpy(uuid, ns->nguid, 16);
    uuid[7] ^= 0x5a;                              /* not the NGUID itself, but as stable */
    uuid[6] = (uint8_t)((uuid[6] & 0x0f) | 0x80); /* version 8: vendor-specific */
    uuid[8] = (uint8_t)((uuid[8] & 0x3f) | 0x80); /* RFC 4122 variant */
}

static void nvme_identify_namespace(const struct nvme_namespace *ns, uint8_t *d)
{
    uint64_t blocks = nvme_namespace_blocks(ns);

    put64(d + 0, blocks);  /* NSZE */
    put64(d + 8, blocks);  /* NCAP */
    put64(d + 16, blocks); /* NUSE */
    d[25] = 0;             /* NLBAF: one format */
    d[26] = 0;             /* FLBAS */
    /* DLFEAT: deallocated blocks read as zeros (holes, RAM cleared, or written zeros). */
    d[33] = ns->block_device ? 0 : 0x01;
    d[99] = ns->read_only ? 0x01 : 0; /* NSATTR: write protected */
    memcpy(d + 104, ns->nguid, 16);
    memcpy(d + 120, ns->eui64, 8);
    put32(d + 128, ns->block_shift << 16); /* LBAF0: LBADS, no metadata */
}

static void nvme_identify_descriptors(const struct nvme_namespace *ns, uint8_t *d)
{
    uint8_t uuid[16];

    d[0] = 1; /* EUI64 */
    d[1] = 8;
    memcpy(d + 4, ns->eui64, 8);
    d[12] = 2; /* NGUID */
    d[13] = 16;
    memcpy(d + 16, ns->nguid, 16);
    d[32] = 3; /* UUID */
    d[33] = 16;
    nvme_uuid_of(ns, uuid);
    memcpy(d + 36, uuid, 16);
}

static void nvme_identify_decode(struct nvme_command *cmd)
{
    struct nvme_controller *ctrl = cmd->ctrl;
    uint32_t cns = cmd->sqe.cdw10 & 0xff;
    uint32_t nsid = cmd->sqe.nsid;

    switch (cns) {
    case 0x00:
        if (nsid == 0 || nsid > ctrl->namespace_count)
            cmd->status = NVME_INVALID_NAMESPACE;
        break;
    case 0x03:
        if (nvme_namespace_find(ctrl, nsid) == NULL)
            cmd->status = NVME_INVALID_NAMESPACE;
        break;
    case 0x01:
        break;
    case 0x02:
        if (nsid >= 0xfffffffeu)
            cmd->status = NVME_INVALID_NAMESPACE;
        break;
    default:
        cmd->status = NVME_INVALID_FIELD;
        break;
    }
    cmd->data_length = NVME_PAGE_SIZE;
    cmd->data_to_guest = true;
}

static void nvme_identify(struct nvme_command *cmd)
{
    struct nvme_controller *ctrl = cmd->ctrl;
    uint32_t cns = cmd->sqe.cdw10 & 0xff;
    uint8_t *d = cmd->bounce;
    uint32_t count = 0;

    switch (cns) {
    case 0x00:
        nvme_identify_namespace(nvme_namespace_find(ctrl, cmd->sqe.nsid), d);
        break;
    case 0x01:
        nvme_identify_controller(ctrl, d);
        break;
    case 0x02:
        for (uint32_t i = 0; i < ctrl->namespace_count && count < 1024; i++) {
            if (ctrl->namespaces[i].nsid > cmd->sqe.nsid)
                put32(d + 4 * count++, ctrl->namespaces[i].nsid);
        }
        break;
    case 0x03:
        nvme_identify_descriptors(nvme_namespace_find(ctrl, cmd->sqe.nsid), d);
        break;
    default:
        break;
    }
}

static void nvme_log_decode(struct nvme_command *cmd)
{
    uint64_t dwords = ((uint64_t)(cmd->sqe.cdw11 & 0xffff) << 16 | cmd->sqe.cdw10 >> 16) + 1;
    uint64_t offset = (uint64_t)cmd->sqe.cdw13 << 32 | cmd->sqe.cdw12;
    uint32_t lid = cmd->sqe.cdw10 & 0xff;

    if (lid != NVME_LOG_ERROR && lid != NVME_LOG_SMART && lid != NVME_LOG_FIRMWARE) {
        cmd->status = NVME_INVALID_LOG_PAGE;
        return;
    }
    if (dwords * 4 > NVME_MAX_TRANSFER || (offset & 3) != 0 || offset >= NVME_LOG_SIZE) {
        cmd->status = NVME_INVALID_FIELD;
        return;
    }
    cmd->data_length = (uint32_t)dwords * 4;
    cmd->data_to_guest = true;
}

static void put128_low(uint8_t *p, uint64_t v)
{
    put64(p, v); /* the upper half of the 128-bit counter stays zero */
}

static void nvme_get_log(struct nvme_command *cmd)
{
    struct nvme_controller *ctrl = cmd->ctrl;
    uint32_t lid = cmd->sqe.cdw10 & 0xff;
    uint32_t offset = cmd->sqe.cdw12; /* below NVME_LOG_SIZE, checked in decode */
    uint32_t length = cmd->data_length;
    uint8_t log[NVME_LOG_SIZE];

    memset(log, 0, sizeof(log));
    switch (lid) {
    case NVME_LOG_SMART:
        if (NVME_TEMPERATURE > ctrl->features.temperature_over ||
            NVME_TEMPERATURE < ctrl->features.temperature_under)
            log[0] |= 0x02; /* temperature outside a threshold */
        put16(log + 1, NVME_TEMPERATURE);
        log[3] = 100; /* available spare */
        log[4] = 10;  /* available spare threshold */
        put128_low(log + 32, (ctrl->smart.data_units_read + 999) / 1000);
        put128_low(log + 48, (ctrl->smart.data_units_written + 999) / 1000);
        put128_low(log + 64, ctrl->smart.host_reads);
        put128_low(log + 80, ctrl->smart.host_writes);
        put128_low(log + 112, 1); /* power cycles */
        break;
    case NVME_LOG_FIRMWARE:
        log[0] = 0x01; /* slot 1 active */
        put_string(log + 8, "1.0", 8);
        break;
    case NVME_LOG_ERROR:
    default:
        break; /* no errors recorded: every entry zero */
    }
    if (length > NVME_LOG_SIZE - offset)
        length = NVME_LOG_SIZE - offset;
    memcpy(cmd->bounce, log + offset, length);
}

/* Temperature Threshold's selectors: only the composite sensor, over or under. */
static bool nvme_temperature_select(uint32_t cdw11, uint16_t **threshold,
                                    struct nvme_features *features)
{
    uint32_t sensor = (cdw11 >> 16) & 0xf;
    uint32_t type = (cdw11 >> 20) & 0x3;

    if (sensor != 0 || type > 1)
        return false;
    *threshold = type == 0 ? &features->temperature_over : &features->temperature_under;
    return true;
}

static void nvme_get_features(struct nvme_command *cmd)
{
    struct nvme_controller *ctrl = cmd->ctrl;
    struct nvme_features *f = &ctrl->features;
    uint32_t fid = cmd->sqe.cdw10 & 0xff;
    uint32_t select = (cmd->sqe.cdw10 >> 8) & 0x7;
    uint32_t cdw11 = cmd->sqe.cdw11;
    uint16_t *threshold;

    switch (fid) {
    case NVME_FEAT_ARBITRATION:
        cmd->result = f->arbitration;
        break;
    case NVME_FEAT_POWER_MANAGEMENT:
        cmd->result = f->power_management;
        break;
    case NVME_FEAT_TEMPERATURE:
        if (!nvme_temperature_select(cdw11, &threshold, f)) {
            cmd->status = NVME_INVALID_FIELD;
            return;
        }
        cmd->result = *threshold;
        break;
    case NVME_FEAT_ERROR_RECOVERY:
        cmd->result = f->error_recovery;
        break;
    case NVME_FEAT_WRITE_CACHE:
        cmd->result = f->write_cache ? 1 : 0;
        break;
    case NVME_FEAT_NUM_QUEUES:
        cmd->result = (ctrl->config.io_queues - 1) << 16 | (ctrl->config.io_queues - 1);
        break;
    case NVME_FEAT_IRQ_COALESCING:
        cmd->result = f->interrupt_coalescing;
        break;
    case NVME_FEAT_IRQ_CONFIG: {
        uint32_t vector = cdw11 & 0xffff;
        if (vector >= ctrl->config.vectors) {
            cmd->status = NVME_INVALID_FIELD;
            return;
        }
        cmd->result = vector;
        if ((f->vector_coalescing_disabled[vector / 8] & (1u << (vector % 8))) != 0)
            cmd->result |= 1u << 16;
        break;
    }
    case NVME_FEAT_WRITE_ATOMICITY:
        cmd->result = f->write_atomicity;
        break;
    case NVME_FEAT_ASYNC_EVENT:
        cmd->result = f->async_event_config;
        break;
    case NVME_FEAT_KEEP_ALIVE:
        cmd->result = f->keep_alive;
        break;
    default:
        cmd->status = NVME_INVALID_FIELD;
        return;
    }
    /* Supported capabilities: every feature here is changeable, none saveable. */
    if (select == 3)
        cmd->result = 0x4;
}

static void nvme_set_features(struct nvme_command *cmd)
{
    struct nvme_controller *ctrl = cmd->ctrl;
    struct nvme_features *f = &ctrl->features;
    uint32_t fid = cmd->sqe.cdw10 & 0xff;
    uint32_t cdw11 = cmd->sqe.cdw11;
    uint16_t *threshold;

    if ((cmd->sqe.cdw10 & (1u << 31)) != 0) {
        cmd->status = NVME_FEATURE_NOT_SAVEABLE;
        return;
    }
    switch (fid) {
    case NVME_FEAT_ARBITRATION:
        f->arbitration = cdw11;
        break;
    case NVME_FEAT_POWER_MANAGEMENT:
        if ((cdw11 & 0x1f) != 0) { /* only power state 0 exists */
            cmd->status = NVME_INVALID_FIELD;
            return;
        }
        f->power_management = cdw11 & 0xff;
        break;
    case NVME_FEAT_TEMPERATURE:
        if (!nvme_temperature_select(cdw11, &threshold, f)) {
            cmd->status = NVME_INVALID_FIELD;
            return;
        }
        *threshold = (uint16_t)cdw11;
        break;
    case NVME_FEAT_ERROR_RECOVERY:
        if ((cdw11 & (1u << 16)) != 0) { /* DULBE: no deallocated-block errors */
            cmd->status = NVME_INVALID_FIELD;
            return;
        }
        f->error_recovery = cdw11 & 0xffff;
        break;
    case NVME_FEAT_WRITE_CACHE:
        f->write_cache = (cdw11 & 1) != 0;
        break;
    case NVME_FEAT_NUM_QUEUES:
        if ((cdw11 & 0xffff) == 0xffff || (cdw11 >> 16) == 0xffff) {
            cmd->status = NVME_INVALID_FIELD;
            return;
        }
        for (uint32_t q = 1; q <= ctrl->config.io_queues; q++) {
            if (ctrl->sqs[q].created || ctrl->cqs[q].created) {
                cmd->status = NVME_COMMAND_SEQUENCE_ERROR;
                return;
            }
        }
        ctrl->queues_requested = true;
        /* The controller's number, whatever was asked: the driver takes the smaller. */
        cmd->result = (ctrl->config.io_queues - 1) << 16 | (ctrl->config.io_queues - 1);
        break;
    case NVME_FEAT_IRQ_COALESCING:
        f->interrupt_coalescing = cdw11 & 0xffff;
        break;
    case NVME_FEAT_IRQ_CONFIG: {
        uint32_t vector = cdw11 & 0xffff;
        if (vector >= ctrl->config.vectors) {
            cmd->status = NVME_INVALID_FIELD;
            return;
        }
        if ((cdw11 & (1u << 16)) != 0)
            f->vector_coalescing_disabled[vector / 8] |= (uint8_t)(1u << (vector % 8));
        else
            f->vector_coalescing_disabled[vector / 8] &= (uint8_t) ~(1u << (vector % 8));
        break;
    }
    case NVME_FEAT_WRITE_ATOMICITY:
        f->write_atomicity = cdw11 & 1;
        break;
    case NVME_FEAT_ASYNC_EVENT:
        f->async_event_config = cdw11 & 0x3ff;
        break;
    case NVME_FEAT_KEEP_ALIVE:
        f->keep_alive = cdw11;
        break;
    default:
        cmd->status = NVME_INVALID_FIELD;
        return;
    }
}

static uint16_t nvme_queue_size_check(const struct nvme_controller *ctrl, uint32_t cdw10,
                                      uint64_t base)
{
    uint32_t entries = (cdw10 >> 16) + 1;

    if (entries < 2 || entries > ctrl->config.queue_entries)
        return NVME_INVALID_QUEUE_SIZE;
    if ((base & (NVME_PAGE_SIZE - 1)) != 0)
        return NVME_PRP_OFFSET_INVALID;
    return NVME_SUCCESS;
}

static void nvme_create_cq(struct nvme_command *cmd)
{
    struct nvme_controller *ctrl = cmd->ctrl;
    uint32_t qid = cmd->sqe.cdw10 & 0xffff;
    uint32_t vector = cmd->sqe.cdw11 >> 16;
    bool enabled = (cmd->sqe.cdw11 & 2) != 0;
    struct nvme_cq *cq;

    if (qid == 0 || qid > ctrl->config.io_queues || ctrl->cqs[qid].created) {
        cmd->status = NVME_INVALID_QUEUE_ID;
        return;
    }
    cmd->status = nvme_queue_size_check(ctrl, cmd->sqe.cdw10, cmd->sqe.prp1);
    if (cmd->status != NVME_SUCCESS)
        return;
    /* Queues must be physically contiguous (CAP.CQR); entries are 16 bytes (CC.IOCQES). */
    if ((cmd->sqe.cdw11 & 1) == 0 || NVME_CC_IOCQES(ctrl->cc) != 4) {
        cmd->status = NVME_INVALID_FIELD;
        return;
    }
    if (enabled && vector >= ctrl->config.vectors) {
        cmd->status = NVME_INVALID_VECTOR;
        return;
    }
    cq = &ctrl->cqs[qid];
    cq->id = (uint16_t)qid;
    cq->base = cmd->sqe.prp1;
    cq->size = (cmd->sqe.cdw10 >> 16) + 1;
    cq->head = cq->tail = cq->reserved = 0;
    cq->phase = true;
    cq->irq_enabled = enabled;
    cq->vector = (uint16_t)vector;
    cq->irq_wanted = false;
    cq->created = true;
    nvme_dbbuf_queue_created(ctrl, qid, true);
}

static void nvme_create_sq(struct nvme_command *cmd)
{
    struct nvme_controller *ctrl = cmd->ctrl;
    uint32_t qid = cmd->sqe.cdw10 & 0xffff;
    uint32_t cqid = cmd->sqe.cdw11 >> 16;
    struct nvme_sq *sq;

    if (qid == 0 || qid > ctrl->config.io_queues || ctrl->sqs[qid].created) {
        cmd->status = NVME_INVALID_QUEUE_ID;
        return;
    }
    if (cqid == 0 || cqid > ctrl->config.io_queues || !ctrl->cqs[cqid].created) {
        cmd->status = NVME_CQ_INVALID;
        return;
    }
    cmd->status = nvme_queue_size_check(ctrl, cmd->sqe.cdw10, cmd->sqe.prp1);
    if (cmd->status != NVME_SUCCESS)
        return;
    if ((cmd->sqe.cdw11 & 1) == 0 || NVME_CC_IOSQES(ctrl->cc) != 6) {
        cmd->status = NVME_INVALID_FIELD;
        return;
    }
    sq = &ctrl->sqs[qid];
    if (nvme_sq_allocate(sq, NVME_IO_SLOTS) < 0) {
        cmd->status = NVME_INTERNAL_ERROR;
        return;
    }
    sq->id = (uint16_t)qid;
    sq->cq_id = (uint16_t)cqid;
    sq->base = cmd->sqe.prp1;
    sq->size = (cmd->sqe.cdw10 >> 16) + 1;
    sq->head = sq->tail = 0;
    sq->created = true;
    nvme_dbbuf_queue_created(ctrl, qid, false);
}

static void nvme_delete_sq(struct nvme_command *cmd)
{
    struct nvme_controller *ctrl = cmd->ctrl;
    uint32_t qid = cmd->sqe.cdw10 & 0xffff;

    if (qid == 0 || qid > ctrl->config.io_queues || !ctrl->sqs[qid].created) {
        cmd->status = NVME_INVALID_QUEUE_ID;
        return;
    }
    nvme_sq_teardown(ctrl, &ctrl->sqs[qid]);
}

static void nvme_delete_cq(struct nvme_command *cmd)
{
    struct nvme_controller *ctrl = cmd->ctrl;
    uint32_t qid = cmd->sqe.cdw10 & 0xffff;

    if (qid == 0 || qid > ctrl->config.io_queues || !ctrl->cqs[qid].created) {
        cmd->status = NVME_INVALID_QUEUE_ID;
        return;
    }
    for (uint32_t q = 1; q <= ctrl->config.io_queues; q++) {
        if (ctrl->sqs[q].created && ctrl->sqs[q].cq_id == qid) {
            cmd->status = NVME_INVALID_QUEUE_DELETION;
            return;
        }
    }
    nvme_cq_teardown(ctrl, &ctrl->cqs[qid]);
}

void nvme_admin_decode(struct nvme_command *cmd)
{
    switch (cmd->sqe.opcode) {
    case NVME_ADMIN_IDENTIFY:
        nvme_identify_decode(cmd);
        break;
    case NVME_ADMIN_GET_LOG_PAGE:
        nvme_log_decode(cmd);
        break;
    case NVME_ADMIN_DELETE_SQ:
    case NVME_ADMIN_CREATE_SQ:
    case NVME_ADMIN_DELETE_CQ:
    case NVME_ADMIN_CREATE_CQ:
    case NVME_ADMIN_ABORT:
    case NVME_ADMIN_SET_FEATURES:
    case NVME_ADMIN_GET_FEATURES:
    case NVME_ADMIN_ASYNC_EVENT:
    case NVME_ADMIN_KEEP_ALIVE:
    case NVME_ADMIN_DOORBELL_BUFFER_CONFIG:
        break; /* no data: every check is in EXECUTE */
    default:
        cmd->status = NVME_INVALID_OPCODE;
        break;
    }
}

void nvme_admin_execute(struct nvme_command *cmd)
{
    struct nvme_controller *ctrl = cmd->ctrl;

    switch (cmd->sqe.opcode) {
    case NVME_ADMIN_IDENTIFY:
        nvme_identify(cmd);
        break;
    case NVME_ADMIN_GET_LOG_PAGE:
        nvme_get_log(cmd);
        break;
    case NVME_ADMIN_DELETE_SQ:
        nvme_delete_sq(cmd);
        break;
    case NVME_ADMIN_CREATE_SQ:
        nvme_create_sq(cmd);
        break;
    case NVME_ADMIN_DELETE_CQ:
        nvme_delete_cq(cmd);
        break;
    case NVME_ADMIN_CREATE_CQ:
        nvme_create_cq(cmd);
        break;
    case NVME_ADMIN_ABORT:
        /* Bit 0 says "not aborted", which is always a valid answer: a command waiting
         * for the backend cannot be taken back from the kernel anyway. */
        cmd->result = 1;
        break;
    case NVME_ADMIN_SET_FEATURES:
        nvme_set_features(cmd);
        break;
    case NVME_ADMIN_GET_FEATURES:
        nvme_get_features(cmd);
        break;
    case NVME_ADMIN_ASYNC_EVENT:
        if (ctrl->aer_count >= NVME_AER_LIMIT) {
            cmd->status = NVME_AER_LIMIT_EXCEEDED;
            break;
        }
        /* Held until an event: this controller raises none yet (see the manual). */
        ctrl->aer_cids[ctrl->aer_count++] = cmd->sqe.cid;
        cmd->status = NVME_HELD;
        break;
    case NVME_ADMIN_DOORBELL_BUFFER_CONFIG:
        /* PRP1 and PRP2 are the two buffers themselves, not a data transfer. */
        cmd->status = nvme_dbbuf_config(ctrl, cmd->sqe.prp1, cmd->sqe.prp2);
        break;
    case NVME_ADMIN_KEEP_ALIVE:
    default:
        break;
    }
}
