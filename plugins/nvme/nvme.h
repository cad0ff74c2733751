/*
 * nvme, an NVMe 1.4 PCIe controller: private declarations shared by the plugin's files.
 *
 * The register layout, status codes and data structures are the NVMe 1.4 specification's;
 * vfio-userd-nvme(7) lists the values this controller chooses (limits, optional features).
 * Every value the guest controls (register writes, doorbells, submission queue entries,
 * PRP entries) is copied into the controller's own memory once and checked before use:
 * a bad value ends in an error completion or in Controller Fatal Status, never in an
 * access outside client memory.
 */
#ifndef NVME_H
#define NVME_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>
#include <liburing.h>

#include <vfio-userd/plugin.h>

#define NVME_PAGE_SIZE  4096u
#define NVME_PAGE_SHIFT 12
#define NVME_BAR0_SIZE  (16u << 10)
#define NVME_DOORBELLS  0x1000u

/* MDTS 5: 2^5 pages of 4 KiB, 128 KiB per command. */
#define NVME_MDTS           5u
#define NVME_MAX_TRANSFER   (NVME_PAGE_SIZE << NVME_MDTS)
#define NVME_MAX_SEGMENTS   ((NVME_MAX_TRANSFER / NVME_PAGE_SIZE) + 1)
#define NVME_MAX_NAMESPACES 16u
#define NVME_MAX_IO_QUEUES  128u
#define NVME_AER_LIMIT      4u /* AERL 3 */
#define NVME_ERROR_LOG_SIZE 4u /* ELPE 3: entries, all zero */
/* Commands one I/O submission queue may have in progress at once (the admin queue runs
 * one at a time): each holds its PRP walk, iovecs and DMA requests, about 5 KiB. */
#define NVME_IO_SLOTS 32u
/* Entries of the io_uring submission ring; its completion ring is twice that, and the
 * kernel keeps completions beyond it (IORING_FEAT_NODROP) rather than losing them. */
#define NVME_RING_ENTRIES 256u

/* The MSI-X table and PBA live in BAR4, so BAR0 stays registers and doorbells only and its
 * doorbell page can be a mappable sparse area (doorbells: mapped). */
#define NVME_MSIX_BAR      VFIO_USERD_REGION_BAR4
#define NVME_MSIX_PBA      0x1000u /* table: vectors * 16 bytes from 0, at most 2 KiB */
#define NVME_MSIX_BAR_SIZE 0x2000u
#define NVME_MSIX_MAX      (NVME_MAX_IO_QUEUES + 1)

/* Controller registers (BAR0). */
enum nvme_register {
    NVME_REG_CAP = 0x00,
    NVME_REG_VS = 0x08,
    NVME_REG_INTMS = 0x0c,
    NVME_REG_INTMC = 0x10,
    NVME_REG_CC = 0x14,
    NVME_REG_CSTS = 0x1c,
    NVME_REG_NSSR = 0x20,
    NVME_REG_AQA = 0x24,
    NVME_REG_ASQ = 0x28,
    NVME_REG_ACQ = 0x30,
};

#define NVME_CC_EN          (1u << 0)
#define NVME_CC_CSS(cc)     (((cc) >> 4) & 0x7)
#define NVME_CC_MPS(cc)     (((cc) >> 7) & 0xf)
#define NVME_CC_AMS(cc)     (((cc) >> 11) & 0x7)
#define NVME_CC_SHN(cc)     (((cc) >> 14) & 0x3)
#define NVME_CC_IOSQES(cc)  (((cc) >> 16) & 0xf)
#define NVME_CC_IOCQES(cc)  (((cc) >> 20) & 0xf)
#define NVME_CSTS_RDY       (1u << 0)
#define NVME_CSTS_CFS       (1u << 1)
#define NVME_CSTS_SHST_MASK (3u << 2)
#define NVME_CSTS_SHST_DONE (2u << 2)

/* Status: Status Code Type << 8 | Status Code; DNR is added by the completion path. */
#define NVME_SCT_GENERIC  0x000u
#define NVME_SCT_SPECIFIC 0x100u
enum nvme_status {
    NVME_SUCCESS = 0x00,
    NVME_INVALID_OPCODE = 0x01,
    NVME_INVALID_FIELD = 0x02,
    NVME_DATA_TRANSFER_ERROR = 0x04,
    NVME_INTERNAL_ERROR = 0x06,
    NVME_ABORTED_SQ_DELETION = 0x08,
    NVME_INVALID_NAMESPACE = 0x0b,
    NVME_COMMAND_SEQUENCE_ERROR = 0x0c,
    NVME_PRP_OFFSET_INVALID = 0x13,
    NVME_NS_WRITE_PROTECTED = 0x20,
    NVME_LBA_OUT_OF_RANGE = 0x80,
    NVME_CAPACITY_EXCEEDED = 0x81,
    NVME_WRITE_FAULT = 0x280, /* media and data integrity errors */
    NVME_UNRECOVERED_READ_ERROR = 0x281,
    NVME_CQ_INVALID = NVME_SCT_SPECIFIC | 0x00,
    NVME_INVALID_QUEUE_ID = NVME_SCT_SPECIFIC | 0x01,
    NVME_INVALID_QUEUE_SIZE = NVME_SCT_SPECIFIC | 0x02,
    NVME_AER_LIMIT_EXCEEDED = NVME_SCT_SPECIFIC | 0x05,
    NVME_INVALID_VECTOR = NVME_SCT_SPECIFIC | 0x08,
    NVME_INVALID_LOG_PAGE = NVME_SCT_SPECIFIC | 0x09,
    NVME_INVALID_QUEUE_DELETION = NVME_SCT_SPECIFIC | 0x0c,
    NVME_FEATURE_NOT_SAVEABLE = NVME_SCT_SPECIFIC | 0x0d,
    NVME_WRITE_TO_READ_ONLY = NVME_SCT_SPECIFIC | 0x82,
    /* Not a status: the command is held (Asynchronous Event Request), no completion now. */
    NVME_HELD = 0xffff,
};

/* A submission queue entry as the controller keeps it (little-endian host assumed). */
struct nvme_sqe {
    uint8_t opcode;
    uint8_t flags; /* FUSE 1:0, PSDT 7:6 */
    uint16_t cid;
    uint32_t nsid;
    uint64_t reserved;
    uint64_t mptr;
    uint64_t prp1;
    uint64_t prp2;
    uint32_t cdw10;
    uint32_t cdw11;
    uint32_t cdw12;
    uint32_t cdw13;
    uint32_t cdw14;
    uint32_t cdw15;
};
_Static_assert(sizeof(struct nvme_sqe) == 64, "an NVMe submission queue entry is 64 bytes");

struct nvme_cqe {
    uint32_t result;
    uint32_t reserved;
    uint16_t sq_head;
    uint16_t sq_id;
    uint16_t cid;
    uint16_t status; /* phase in bit 0 */
};
_Static_assert(sizeof(struct nvme_cqe) == 16, "an NVMe completion queue entry is 16 bytes");

enum nvme_backend { NVME_BACKEND_FILE, NVME_BACKEND_RAM };

/* How doorbell writes reach the controller (vfio-userd-nvme(7), DOORBELLS): as REGION_WRITE
 * messages (trapped), as stores to a mappable page of BAR0 that the controller polls
 * (mapped), or through I/O eventfds without their value (ioeventfd: shadow doorbells
 * supply it). */
enum nvme_doorbell_mode { NVME_DOORBELLS_TRAPPED, NVME_DOORBELLS_MAPPED, NVME_DOORBELLS_IOEVENTFD };
/* The value the host hands the access callback for an I/O eventfd write. */
#define NVME_DOORBELL_UNKNOWN 0xffffffffu
/* Mapped doorbells: poll every NVME_POLL_BUSY_US while queues are busy and for
 * NVME_POLL_LINGER_US after, then every NVME_POLL_IDLE_US. */
#define NVME_POLL_BUSY_US   20u
#define NVME_POLL_LINGER_US 2000u
#define NVME_POLL_IDLE_US   1000u
/* Shadow doorbells polled (doorbell_poll_us): at most this long in one run of the polling
 * timer before the event loop gets its turn, and the largest doorbell_poll_us. */
#define NVME_SHADOW_POLL_SLICE_US 500u
#define NVME_SHADOW_POLL_MAX_US   1000u

/* How file I/O runs: io_uring (the default), or synchronously on the device's thread. */
enum nvme_io_mode { NVME_IO_URING, NVME_IO_SYNC };

struct nvme_namespace {
    uint32_t nsid;
    enum nvme_backend backend;
    int fd;          /* file or block device, -1 for RAM */
    uint8_t *memory; /* RAM backend */
    uint64_t size;   /* bytes */
    uint32_t block_shift;
    bool read_only;
    bool block_device;
    bool direct;           /* opened with O_DIRECT */
    uint32_t direct_align; /* what O_DIRECT asks of buffers and lengths, in bytes */
    bool no_nowait;        /* preadv2(RWF_NOWAIT) is refused here: reads go to the ring */
    uint8_t eui64[8];
    uint8_t nguid[16];
    char path[256]; /* for log lines only */
};

/* Where a command's data moves: guest memory described by PRPs, as contiguous spans. */
struct nvme_segment {
    uint64_t address;
    uint32_t length;
};

/* The stages of one command; each may wait for DMA through messages (dma_submit). */
enum nvme_stage {
    NVME_STAGE_IDLE,
    NVME_STAGE_FETCH,     /* the entry is being read from the submission queue */
    NVME_STAGE_DECODE,    /* check the command, find its data length */
    NVME_STAGE_PRP,       /* read the next PRP list page */
    NVME_STAGE_PRP_PARSE, /* take the entries read */
    NVME_STAGE_DATA_IN,   /* guest memory -> bounce buffer */
    NVME_STAGE_EXECUTE,   /* do it */
    NVME_STAGE_EXECUTED,  /* the backend finished what EXECUTE started (io_uring) */
    NVME_STAGE_DATA_OUT,  /* bounce buffer -> guest memory */
    NVME_STAGE_POST,      /* write the completion entry */
    NVME_STAGE_DONE,
};

struct nvme_controller;
struct nvme_sq;
struct nvme_command;

/* Ranges of one Dataset Management command (NR, 8 bits, plus one). */
#define NVME_DSM_RANGES 256u

/* One range of a Write Zeroes or Dataset Management on the io_uring: a fallocate, or where
 * that fails, zeros written from the controller's zero buffer one chunk after the other. */
struct nvme_zero_op {
    struct nvme_command *cmd;
    uint64_t offset;
    uint64_t length; /* still to zero */
    bool deallocate; /* a hole (FALLOC_FL_PUNCH_HOLE), else FALLOC_FL_ZERO_RANGE */
    bool writing;    /* fallocate refused: writing zeros */
};

/* A command in progress, in one of its submission queue's slots. */
struct nvme_command {
    struct nvme_controller *ctrl;
    struct nvme_sq *sq;
    enum nvme_stage stage;
    struct nvme_sqe sqe;
    uint16_t status;
    uint32_t result;

    /* Data: length and direction decided in DECODE; the PRP walk fills the segments. */
    uint32_t data_length;
    bool data_to_guest;
    bool direct; /* every segment translates: the backend moves data itself */
    struct nvme_segment segments[NVME_MAX_SEGMENTS];
    uint32_t segment_count;
    /* The PRP list walk: next list address, entries still to read. */
    uint64_t prp_list;
    uint32_t prp_remaining;
    uint32_t prp_page_offset; /* offset of the first PRP entry's data in its page */
    uint64_t prp_entries[NVME_MAX_SEGMENTS];
    uint32_t prp_entries_count;
    uint32_t prp_hops; /* list pages read: bounds a list that points at itself */
    /* The direct path: the segments translated to pointers into client memory. */
    struct iovec iov[NVME_MAX_SEGMENTS];

    /* Message DMA in flight: one request per segment plus the entry fetch / completion. */
    struct vfio_userd_dma_request requests[NVME_MAX_SEGMENTS];
    uint32_t requests_used; /* in the current stage */
    uint32_t outstanding;
    bool holds_slot; /* a completion queue slot is reserved for it */
    int dma_error;   /* first failure among the outstanding requests */
    bool abandoned;  /* its queue went away (deletion, reset): drop the results */
    /* Backend I/O in flight through io_uring (counted in `outstanding` too). */
    bool io_write;
    bool io_flush_after; /* FUA, or the write cache is off: fdatasync once written */
    uint32_t io_iov_first, io_iov_count;
    uint64_t io_offset;
    int io_error; /* first failure among the command's backend operations */
    struct nvme_namespace *io_ns;
    /* Write Zeroes and Dataset Management in flight: NVME_DSM_RANGES operations, allocated
     * when first needed and kept with the slot. */
    struct nvme_zero_op *zero_ops;
    struct nvme_cqe cqe;
    uint8_t *bounce; /* NVME_MAX_TRANSFER bytes, allocated when first needed */
};

struct nvme_cq {
    bool created;
    uint16_t id;
    uint64_t base;
    uint32_t size; /* entries */
    uint32_t head;
    uint32_t tail;
    uint32_t reserved; /* slots promised to commands in progress */
    bool phase;
    bool irq_enabled;
    uint16_t vector;
    bool irq_wanted; /* entries posted since the last interrupt */
};

struct nvme_sq {
    bool created;
    uint16_t id;
    uint16_t cq_id;
    uint64_t base;
    uint32_t size;
    uint32_t head;
    uint32_t tail;
    /* Allocated when the queue is first created, kept until the device goes: a command
     * whose queue was deleted may still wait for the backend or a DMA message. */
    struct nvme_command *commands;
    uint32_t slots;
};

struct nvme_features {
    uint32_t arbitration;
    uint32_t power_management;
    uint16_t temperature_over;
    uint16_t temperature_under;
    uint32_t error_recovery;
    bool write_cache;
    uint32_t interrupt_coalescing;
    uint32_t write_atomicity;
    uint32_t async_event_config;
    uint32_t keep_alive;
    uint8_t vector_coalescing_disabled[(NVME_MSIX_MAX + 7) / 8];
};

struct nvme_smart {
    uint64_t data_units_read; /* in 512-byte units; reported in thousands */
    uint64_t data_units_written;
    uint64_t host_reads;
    uint64_t host_writes;
};

struct nvme_config {
    struct vfio_userd_pci_identity identity;
    char serial[21];
    char model[41];
    uint32_t io_queues;
    uint32_t queue_entries; /* MQES + 1 */
    enum nvme_doorbell_mode doorbells;
    uint32_t ioeventfd_queues; /* I/O queues whose doorbells have I/O eventfds */
    /* With shadow doorbells: how long the queue loop keeps reading them for new commands
     * before it sets EventIdx and sleeps (0: it does not). */
    uint32_t doorbell_poll_us;
    uint32_t vectors;
};

struct nvme_controller {
    struct vfio_userd_device *device;
    const struct vfio_userd_host *host;
    struct nvme_config config;
    struct nvme_namespace namespaces[NVME_MAX_NAMESPACES];
    uint32_t namespace_count;

    /* Registers. */
    uint64_t cap;
    uint32_t intms;
    uint32_t cc;
    uint32_t csts;
    uint32_t aqa;
    uint64_t asq;
    uint64_t acq;

    /* Queue 0 is the admin queue pair; io_queues + 1 entries each. */
    struct nvme_sq *sqs;
    struct nvme_cq *cqs;
    bool processing; /* guards against re-entering the queue loop */

    struct nvme_features features;
    bool queues_requested; /* Number of Queues was set */
    uint16_t aer_cids[NVME_AER_LIMIT];
    uint32_t aer_count;
    struct nvme_smart smart;
    uint64_t log_second; /* rate limit for guest-triggered log lines */
    uint32_t log_budget;

    /* File I/O: one io_uring per controller, its completions announced on an eventfd the
     * device's event loop watches (ABI 1.1 add_fd). */
    enum nvme_io_mode io_mode;
    struct io_uring ring;
    bool ring_ready;
    int ring_eventfd;
    struct vfio_userd_source *ring_source;
    /* A zero-delay timer that resumes queue processing on the next loop iteration, after a
     * DMA unmap that had to hold it back (ABI 1.1 add_timer). */
    struct vfio_userd_source *kick_source;
    uint32_t in_flight; /* operations submitted or queued, not yet reaped */
    /* The host asked to quiesce (ABI 1.1): no command starts; `quiesce_pending` until the
     * last operation in flight is reaped and the host is told (host->quiesced). */
    bool quiescing, quiesce_pending;
    /* NVME_MAX_TRANSFER bytes of zeros, page aligned, for zeroing where fallocate cannot;
     * only ever read, so every command shares it. Allocated when first needed. */
    uint8_t *zeros;
    uint32_t unsubmitted; /* prepared in the ring, not yet submitted */

    /* Doorbell Buffer Config (doorbell.c): the Shadow Doorbell and EventIdx pages, client
     * addresses and their translations (NULL after a DMA unmap, translated again). */
    bool dbbuf_enabled;
    uint64_t dbbuf_shadow, dbbuf_eventidx;
    uint32_t *dbbuf_shadow_page, *dbbuf_eventidx_page;
    /* doorbell_poll_us: the timer that polls them, and until when (CLOCK_MONOTONIC). */
    struct vfio_userd_source *dbbuf_poll_source;
    uint64_t dbbuf_poll_until_ns;

    /* Mapped doorbells (doorbell.c): BAR0's doorbell page as the client stores into it,
     * the value last taken from each doorbell, and the polling timer. */
    uint32_t *doorbell_page;
    uint32_t *doorbell_seen; /* 2 * (io_queues + 1) */
    struct vfio_userd_source *poll_source;
    uint64_t poll_quiet_us; /* since the queues were last busy */
    uint64_t commands_started;
};

/* controller.c */
void nvme_controller_reset(struct nvme_controller *ctrl);
int nvme_bar0_access(void *instance, uint32_t region, uint64_t offset, void *data, uint32_t count,
                     bool is_write);
void nvme_fatal(struct nvme_controller *ctrl, const char *why);
__attribute__((format(printf, 2, 3))) void nvme_guest_log(struct nvme_controller *ctrl,
                                                          const char *format, ...);
/* The same budget, at INFO: what the guest did, for the record. */
__attribute__((format(printf, 2, 3))) void nvme_guest_info(struct nvme_controller *ctrl,
                                                           const char *format, ...);

/* doorbell.c: doorbell values from BAR0 or the shadow buffer, checked (false: fatal). */
bool nvme_sq_set_tail(struct nvme_controller *ctrl, struct nvme_sq *sq, uint32_t value);
bool nvme_cq_set_head(struct nvme_controller *ctrl, struct nvme_cq *cq, uint32_t value);
/* Whether queue pair `q` takes its doorbells from the shadow buffer. */
bool nvme_dbbuf_active(const struct nvme_controller *ctrl, uint32_t q);
/* Reads the queue's shadow tail and its completion queue's shadow head. */
void nvme_dbbuf_refresh(struct nvme_controller *ctrl, struct nvme_sq *sq);
/* At the end of a queue pass: EventIdx for the queues that wait on the guest; true when a
 * shadow value moved meanwhile and the pass must go on. */
bool nvme_dbbuf_arm(struct nvme_controller *ctrl);
/* doorbell_poll_us, at the end of a queue pass that found nothing more to do (`started`: it
 * started commands): true when the controller will poll the shadow doorbells from its timer
 * rather than set EventIdx now. */
bool nvme_dbbuf_poll_later(struct nvme_controller *ctrl, bool started);
int nvme_dbbuf_poll_setup(struct nvme_controller *ctrl);
void nvme_dbbuf_poll_teardown(struct nvme_controller *ctrl);
/* Doorbell Buffer Config; a status. */
uint16_t nvme_dbbuf_config(struct nvme_controller *ctrl, uint64_t shadow, uint64_t eventidx);
void nvme_dbbuf_queue_created(struct nvme_controller *ctrl, uint32_t q, bool completion);
void nvme_dbbuf_reset(struct nvme_controller *ctrl);
void nvme_dbbuf_unmapped(struct nvme_controller *ctrl);
/* A doorbell value for queue pair `q` from BAR0 (trapped, mapped or an I/O eventfd), checked
 * and taken; the caller runs the queues. */
void nvme_doorbell_take(struct nvme_controller *ctrl, uint32_t q, bool completion, uint32_t value);
/* Mapped doorbells: set up (in create()), start and stop polling with the controller, zero
 * a new queue's doorbells (or all of them, q == UINT32_MAX), and record a trapped write. */
int nvme_doorbells_setup(struct nvme_controller *ctrl);
void nvme_doorbells_poll_start(struct nvme_controller *ctrl);
void nvme_doorbells_poll_stop(struct nvme_controller *ctrl);
void nvme_doorbells_clear(struct nvme_controller *ctrl, uint32_t q, bool completion);
void nvme_doorbells_trapped(struct nvme_controller *ctrl, uint32_t index, uint32_t value);
void nvme_doorbells_teardown(struct nvme_controller *ctrl);

/* queue.c */
void nvme_queues_run(struct nvme_controller *ctrl);
void nvme_sq_teardown(struct nvme_controller *ctrl, struct nvme_sq *sq);
/* Gives the queue `slots` command slots, once; 0 or -ENOMEM. */
int nvme_sq_allocate(struct nvme_sq *sq, uint32_t slots);
void nvme_cq_teardown(struct nvme_controller *ctrl, struct nvme_cq *cq);
void nvme_irq_flush(struct nvme_controller *ctrl);
void nvme_cq_update_irq(struct nvme_controller *ctrl, struct nvme_cq *cq);
int nvme_command_bounce(struct nvme_command *cmd);

/* admin.c: DECODE and EXECUTE of admin commands. */
void nvme_admin_decode(struct nvme_command *cmd);
void nvme_admin_execute(struct nvme_command *cmd);

/* io.c: DECODE and EXECUTE of I/O commands; the backends. */
void nvme_io_decode(struct nvme_command *cmd);
void nvme_io_execute(struct nvme_command *cmd);
/* Whether EXECUTE may hand this command's data to the backend straight from the translated
 * iovecs (O_DIRECT namespaces need them aligned). */
bool nvme_io_direct_ok(const struct nvme_command *cmd);
/* io_uring: set up (0, or -errno when the kernel refuses it), submit what commands queued
 * and take what finished (true when something finished), wait for every operation in
 * flight (before guest memory goes away), and tear down. */
int nvme_ring_setup(struct nvme_controller *ctrl);
bool nvme_ring_kick(struct nvme_controller *ctrl);
void nvme_ring_drain(struct nvme_controller *ctrl);
void nvme_ring_teardown(struct nvme_controller *ctrl);
/* Waits for everything in flight, then has the queues resume once the caller returned. */
void nvme_ring_drain_and_resume(struct nvme_controller *ctrl);
/* queue.c: a command's backend operations all finished; resume it. */
void nvme_command_resume(struct nvme_command *cmd);
struct nvme_namespace *nvme_namespace_find(struct nvme_controller *ctrl, uint32_t nsid);
int nvme_namespace_flush(struct nvme_namespace *ns);

static inline uint64_t nvme_namespace_blocks(const struct nvme_namespace *ns)
{
    return ns->size >> ns->block_shift;
}

#endif /* NVME_H */
