/*
 * The nvme plugin end to end: the built nvme.so is served by the real endpoint and driven by
 * the in-tree client, which plays the NVMe driver: guest memory is a memfd mapped with
 * DMA_MAP (or plain memory served through DMA messages), the admin queue is set up through
 * the BAR0 registers, and commands go through submission queues and doorbells as a guest's
 * would. Expected values come from the NVMe 1.4 specification and vfio-userd-nvme(7), spelled
 * out here rather than taken from the plugin's headers, so the two cannot drift together.
 *
 * Both ends live in this process, so counting /proc/self/fd around each test catches a
 * descriptor leaked by either.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <linux/pci_regs.h>

#include "client.h"
#include "plugin_loader.h"
#include "test_server.h"
#include "test_runner.h"

/* Registers (NVMe 1.4, section 3.1). */
#define REG_CAP   0x00
#define REG_VS    0x08
#define REG_INTMS 0x0c
#define REG_INTMC 0x10
#define REG_CC    0x14
#define REG_CSTS  0x1c
#define REG_AQA   0x24
#define REG_ASQ   0x28
#define REG_ACQ   0x30
#define DOORBELL  0x1000

#define CC_ENABLE  (1u | 6u << 16 | 4u << 20) /* EN, IOSQES 64 bytes, IOCQES 16 bytes */
#define CSTS_RDY   1u
#define CSTS_CFS   2u
#define CSTS_SHST  (3u << 2)
#define SHST_DONE  (2u << 2)
#define CC_SHN_NRM (1u << 14)

/* Status codes as the driver sees them: SCT << 8 | SC (DNR and More masked off). */
#define SC_SUCCESS          0x000
#define SC_INVALID_OPCODE   0x001
#define SC_INVALID_FIELD    0x002
#define SC_TRANSFER_ERROR   0x004
#define SC_INVALID_NS       0x00b
#define SC_SEQUENCE_ERROR   0x00c
#define SC_PRP_OFFSET       0x013
#define SC_WRITE_PROTECTED  0x020
#define SC_LBA_RANGE        0x080
#define SC_CQ_INVALID       0x100
#define SC_INVALID_QID      0x101
#define SC_INVALID_QSIZE    0x102
#define SC_AER_LIMIT        0x105
#define SC_INVALID_VECTOR   0x108
#define SC_INVALID_LOG      0x109
#define SC_INVALID_DELETION 0x10c
#define SC_NOT_SAVEABLE     0x10d

/* Guest memory layout (client DMA addresses). */
#define GUEST       0x100000000ull
#define GUEST_SIZE  (4u << 20)
#define ASQ_OFF     0x0000u
#define ACQ_OFF     0x1000u
#define IOSQ_OFF    0x2000u /* + 0x2000 per queue: SQ page, CQ page */
#define DATA_OFF    0x100000u
#define DATA2_OFF   0x200000u
#define LIST_OFF    0x300000u
#define NOWHERE     0x900000000ull
#define ADMIN_DEPTH 32u
#define IO_DEPTH    64u

struct queue {
    uint32_t sq_off, cq_off, depth;
    uint32_t tail, head;
    bool phase;
};

struct completion {
    uint32_t result;
    uint16_t sq_head;
    uint16_t sq_id;
    uint16_t cid;
    uint16_t status; /* SCT << 8 | SC */
    bool dnr;
};

static struct vu_plugin_module nvme;
static struct test_server server;
static bool server_running;
static struct vu_client *client;
static int fds_before;
static char scratch[64];
static uint8_t *guest;    /* GUEST_SIZE bytes the device reaches at GUEST */
static int guest_fd = -1; /* -1: memory served through DMA messages */
static struct queue queues[5];
static uint16_t next_cid;

/* Shadow doorbells (Doorbell Buffer Config): with `shadow` set, the doorbells of I/O queues
 * go as Linux's nvme_dbbuf_update_and_check_event() sends them: the value is stored in the
 * Shadow Doorbell buffer, and BAR0 is written only when the value passed the controller's
 * EventIdx. The BAR0 writes that took are counted. */
#define SHADOW_OFF   0x3f0000u
#define EVENTIDX_OFF 0x3f1000u
static bool shadow;
static uint32_t sq_rings, cq_rings;

/* --- Device and client -------------------------------------------------------------------- */

static void start_device(const char *params)
{
    int ret = test_server_start(&server, nvme.plugin, params);

    ck_assert_msg(ret == 0, "nvme refused %s: %s (%s)", params ? params : "no parameters",
                  server.error.message, server.error.field);
    server_running = true;
    ck_assert_int_eq(vu_client_connect(server.socket_path, NULL, &client), 0);
}

static void stop_device(void)
{
    vu_client_close(client);
    client = NULL;
    if (server_running)
        test_server_stop(&server);
    server_running = false;
}

/* Refusal: the field the error names. */
static void expect_refused(const char *params, const char *field)
{
    struct test_server refused;
    int ret = test_server_start(&refused, nvme.plugin, params);

    if (ret == 0)
        test_server_stop(&refused);
    ck_assert_msg(ret < 0, "nvme accepted %s", params);
    ck_assert_msg(strcmp(refused.error.field, field) == 0, "%s: field '%s', wanted '%s' (%s)",
                  params, refused.error.field, field, refused.error.message);
}

static void map_guest(bool shared)
{
    guest_fd = memfd_create("guest", MFD_CLOEXEC);
    ck_assert_int_ge(guest_fd, 0);
    ck_assert_int_eq(ftruncate(guest_fd, GUEST_SIZE), 0);
    guest = mmap(NULL, GUEST_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, guest_fd, 0);
    ck_assert_ptr_ne(guest, MAP_FAILED);
    if (shared)
        ck_assert_int_eq(vu_client_dma_map_shared(client, GUEST, GUEST_SIZE,
                                                  VU_DMA_FLAG_READABLE | VU_DMA_FLAG_WRITABLE,
                                                  guest_fd, 0, guest),
                         0);
    else
        ck_assert_int_eq(vu_client_dma_map_memory(client, GUEST, GUEST_SIZE,
                                                  VU_DMA_FLAG_READABLE | VU_DMA_FLAG_WRITABLE,
                                                  guest),
                         0);
}

static void unmap_guest(void)
{
    if (guest != NULL)
        munmap(guest, GUEST_SIZE);
    if (guest_fd >= 0)
        close(guest_fd);
    guest = NULL;
    guest_fd = -1;
}

static uint32_t read32(uint32_t offset)
{
    uint32_t value = 0xdeadbeef;

    ck_assert_int_eq(vu_client_region_read(client, VFIO_USERD_REGION_BAR0, offset, &value, 4), 0);
    return value;
}

static uint64_t read64(uint32_t offset)
{
    uint64_t value = 0;

    ck_assert_int_eq(vu_client_region_read(client, VFIO_USERD_REGION_BAR0, offset, &value, 8), 0);
    return value;
}

static void write32(uint32_t offset, uint32_t value)
{
    ck_assert_int_eq(vu_client_region_write(client, VFIO_USERD_REGION_BAR0, offset, &value, 4), 0);
}

static void write64(uint32_t offset, uint64_t value)
{
    ck_assert_int_eq(vu_client_region_write(client, VFIO_USERD_REGION_BAR0, offset, &value, 8), 0);
}

/* --- The driver --------------------------------------------------------------------------- */

static void enable_controller(void)
{
    memset(queues, 0, sizeof(queues));
    queues[0] = (struct queue){ASQ_OFF, ACQ_OFF, ADMIN_DEPTH, 0, 0, true};
    memset(guest + ACQ_OFF, 0, 0x1000);
    write32(REG_AQA, (ADMIN_DEPTH - 1) << 16 | (ADMIN_DEPTH - 1));
    write64(REG_ASQ, GUEST + ASQ_OFF);
    write64(REG_ACQ, GUEST + ACQ_OFF);
    write32(REG_CC, CC_ENABLE);
    ck_assert_uint_eq(read32(REG_CSTS), CSTS_RDY);
}

static void disable_controller(void)
{
    write32(REG_CC, 0);
    ck_assert_uint_eq(read32(REG_CSTS) & CSTS_RDY, 0);
}

struct sqe {
    uint8_t opcode;
    uint8_t flags;
    uint16_t cid;
    uint32_t nsid;
    uint64_t reserved;
    uint64_t mptr;
    uint64_t prp1;
    uint64_t prp2;
    uint32_t cdw[6]; /* cdw10..cdw15 */
};

static void push(uint32_t qid, struct sqe *sqe)
{
    struct queue *q = &queues[qid];

    sqe->cid = next_cid++;
    memcpy(guest + q->sq_off + q->tail * 64, sqe, 64);
    q->tail = (q->tail + 1) % q->depth;
}

static uint32_t *dbbuf_slot(uint32_t page, uint32_t index)
{
    return (uint32_t *)(guest + page) + index;
}

static bool need_event(uint16_t event_idx, uint16_t new_idx, uint16_t old)
{
    return (uint16_t)(new_idx - event_idx - 1) < (uint16_t)(new_idx - old);
}

/* Doorbell `index` (2q: SQ q, 2q + 1: CQ q) becomes `value`: through the shadow when it is
 * on, and then through BAR0 only if the EventIdx asks for it. */
static void doorbell(uint32_t index, uint32_t value)
{
    uint32_t *stored = dbbuf_slot(SHADOW_OFF, index), old;

    if (!shadow || index < 2) {
        write32(DOORBELL + 4 * index, value);
        return;
    }
    old = *stored;
    __atomic_store_n(stored, value, __ATOMIC_RELEASE);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (!need_event((uint16_t)__atomic_load_n(dbbuf_slot(EVENTIDX_OFF, index), __ATOMIC_RELAXED),
                    (uint16_t)value, (uint16_t)old))
        return;
    write32(DOORBELL + 4 * index, value);
    if ((index & 1) != 0)
        cq_rings++;
    else
        sq_rings++;
}

static void ring(uint32_t qid)
{
    doorbell(2 * qid, queues[qid].tail);
}

/* Waits for the next completion of queue `qid`, serving DMA messages meanwhile. */
static struct completion reap(uint32_t qid)
{
    struct queue *q = &queues[qid];
    struct completion c;
    uint8_t *entry = guest + q->cq_off + q->head * 16;
    uint16_t status;

    for (int i = 0; i < 500; i++) {
        memcpy(&status, entry + 14, 2);
        if ((status & 1) == (q->phase ? 1 : 0))
            break;
        vu_client_serve(client, 10);
    }
    memcpy(&status, entry + 14, 2);
    ck_assert_msg((status & 1) == (q->phase ? 1 : 0), "no completion on queue %u", qid);
    memcpy(&c.result, entry, 4);
    memcpy(&c.sq_head, entry + 8, 2);
    memcpy(&c.sq_id, entry + 10, 2);
    memcpy(&c.cid, entry + 12, 2);
    c.status = (status >> 1) & 0x7ff;
    c.dnr = (status & 0x8000) != 0;
    q->head = (q->head + 1) % q->depth;
    if (q->head == 0)
        q->phase = !q->phase;
    doorbell(2 * qid + 1, q->head);
    return c;
}

static struct completion run(uint32_t qid, struct sqe *sqe)
{
    struct completion c;
    uint16_t cid;

    push(qid, sqe);
    cid = sqe->cid;
    ring(qid);
    c = reap(qid);
    ck_assert_uint_eq(c.cid, cid);
    ck_assert_uint_eq(c.sq_id, qid);
    return c;
}

static uint16_t admin(uint8_t opcode, uint32_t nsid, uint64_t prp1, uint32_t cdw10, uint32_t cdw11,
                      uint32_t *result)
{
    struct sqe sqe = {.opcode = opcode, .nsid = nsid, .prp1 = prp1};
    struct completion c;

    sqe.cdw[0] = cdw10;
    sqe.cdw[1] = cdw11;
    c = run(0, &sqe);
    if (result != NULL)
        *result = c.result;
    return c.status;
}

static uint16_t identify(uint32_t cns, uint32_t nsid)
{
    memset(guest + DATA_OFF, 0xee, 4096);
    return admin(0x06, nsid, GUEST + DATA_OFF, cns, 0, NULL);
}

static uint16_t create_cq(uint32_t qid, uint32_t depth, uint32_t vector)
{
    uint32_t off = IOSQ_OFF + 0x2000 * (qid - 1) + 0x1000;

    memset(guest + off, 0, 0x1000);
    return admin(0x05, 0, GUEST + off, (depth - 1) << 16 | qid, vector << 16 | 3, NULL);
}

static uint16_t create_sq(uint32_t qid, uint32_t depth, uint32_t cqid)
{
    uint32_t off = IOSQ_OFF + 0x2000 * (qid - 1);

    return admin(0x01, 0, GUEST + off, (depth - 1) << 16 | qid, cqid << 16 | 1, NULL);
}

/* I/O queue pairs 1..count, each SQ on its own CQ, vector = qid. */
static void create_io_queues(uint32_t count)
{
    for (uint32_t qid = 1; qid <= count; qid++) {
        ck_assert_uint_eq(create_cq(qid, IO_DEPTH, qid), SC_SUCCESS);
        ck_assert_uint_eq(create_sq(qid, IO_DEPTH, qid), SC_SUCCESS);
        queues[qid] = (struct queue){IOSQ_OFF + 0x2000 * (qid - 1),
                                     IOSQ_OFF + 0x2000 * (qid - 1) + 0x1000,
                                     IO_DEPTH,
                                     0,
                                     0,
                                     true};
    }
}

/* Read or Write of `blocks` blocks at `lba` through a PRP description of `length` bytes at
 * guest offset `data`: PRP1 (any dword offset), PRP2 or a PRP list at LIST_OFF. */
static uint16_t rw(uint32_t qid, uint8_t opcode, uint32_t nsid, uint64_t lba, uint32_t blocks,
                   uint32_t data, uint32_t length)
{
    struct sqe sqe = {.opcode = opcode, .nsid = nsid, .prp1 = GUEST + data};
    uint32_t first = 4096 - (data & 4095);

    if (length > first) {
        uint32_t rest = length - first;
        uint64_t page = GUEST + ((data + first) & ~4095u);
        if (rest <= 4096) {
            sqe.prp2 = page;
        } else {
            uint64_t *list = (uint64_t *)(guest + LIST_OFF);
            for (uint32_t i = 0; i * 4096 < rest; i++)
                list[i] = page + 4096ull * i;
            sqe.prp2 = GUEST + LIST_OFF;
        }
    }
    sqe.cdw[0] = (uint32_t)lba;
    sqe.cdw[1] = (uint32_t)(lba >> 32);
    sqe.cdw[2] = blocks - 1;
    return run(qid, &sqe).status;
}

static void fill_pattern(uint8_t *bytes, size_t length, uint32_t seed)
{
    uint32_t state = seed | 1;

    for (size_t i = 0; i < length; i++) {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        bytes[i] = (uint8_t)state;
    }
}

static uint16_t le16(const uint8_t *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t le64(const uint8_t *p)
{
    return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

/* --- Fixture ------------------------------------------------------------------------------ */

static char image0[128], image1[128];

static void params_two_files(char *out, size_t size, const char *extra)
{
    snprintf(out, size,
             "{\"serial\": \"SN0001\", \"io_queues\": 4, \"namespaces\": ["
             "{\"path\": \"%s\", \"size\": \"8M\"},"
             "{\"path\": \"%s\", \"size\": \"4M\", \"block_size\": 4096}]%s}",
             image0, image1, extra);
}

static void setup(void)
{
    char params[512];

    fds_before = test_count_open_fds();
    snprintf(scratch, sizeof(scratch), "/tmp/test_nvme.XXXXXX");
    ck_assert_ptr_ne(mkdtemp(scratch), NULL);
    snprintf(image0, sizeof(image0), "%s/disk0.img", scratch);
    snprintf(image1, sizeof(image1), "%s/disk1.img", scratch);
    params_two_files(params, sizeof(params), "");
    start_device(params);
    map_guest(true);
    next_cid = 1;
    shadow = false;
    sq_rings = cq_rings = 0;
}

static void teardown(void)
{
    stop_device();
    unmap_guest();
    unlink(image0);
    unlink(image1);
    rmdir(scratch);
    ck_assert_int_eq(test_count_open_fds(), fds_before);
}

/* --- Tests -------------------------------------------------------------------------------- */

START_TEST(pci_identity_and_registers)
{
    uint8_t config[64];
    uint64_t cap;

    ck_assert_int_eq(vu_client_region_read(client, VFIO_USERD_REGION_CONFIG, 0, config, 64), 0);
    ck_assert_uint_eq(le32(config + 8) >> 8, 0x010802); /* class code */
    ck_assert_uint_eq(config[0x3d], 1);                 /* INTA# */
    cap = read64(REG_CAP);
    ck_assert_uint_eq(cap & 0xffff, 1023);   /* MQES */
    ck_assert_uint_eq((cap >> 16) & 1, 1);   /* CQR */
    ck_assert_uint_eq((cap >> 32) & 0xf, 0); /* DSTRD */
    ck_assert_uint_eq((cap >> 37) & 1, 1);   /* CSS: NVM */
    ck_assert_uint_eq(read32(REG_VS), 0x00010400);
    ck_assert_uint_eq(read32(REG_CSTS), 0);
    /* INTMS/INTMC set and clear one mask. */
    write32(REG_INTMS, 0x5);
    ck_assert_uint_eq(read32(REG_INTMC), 0x5);
    write32(REG_INTMC, 0x1);
    ck_assert_uint_eq(read32(REG_INTMS), 0x4);
    enable_controller();
    disable_controller();
    ck_assert_uint_eq(read32(REG_INTMS), 0); /* a controller reset clears the mask */
    /* An enable without admin queue attributes is fatal, not a crash. */
    write32(REG_AQA, 0);
    write32(REG_CC, CC_ENABLE);
    ck_assert_uint_eq(read32(REG_CSTS) & (CSTS_RDY | CSTS_CFS), CSTS_CFS);
    write32(REG_CC, 0);
    ck_assert_uint_eq(read32(REG_CSTS), 0);
}
END_TEST

START_TEST(identify_commands)
{
    uint8_t *d = guest + DATA_OFF;

    enable_controller();
    ck_assert_uint_eq(identify(1, 0), SC_SUCCESS);
    ck_assert_uint_eq(le16(d + 0), 0x1234);
    ck_assert_int_eq(memcmp(d + 4, "SN0001              ", 20), 0);
    ck_assert_int_eq(memcmp(d + 24, "vfio-userd NVMe ", 16), 0);
    ck_assert_uint_eq(d[77], 5);                 /* MDTS */
    ck_assert_uint_eq(le32(d + 80), 0x00010400); /* VER */
    ck_assert_uint_eq(d[512], 0x66);
    ck_assert_uint_eq(d[513], 0x44);
    ck_assert_uint_eq(le32(d + 516), 2);           /* NN */
    ck_assert_uint_eq(le16(d + 520) & 0x0c, 0x0c); /* ONCS: DSM, Write Zeroes */
    ck_assert_uint_eq(d[525] & 1, 1);              /* VWC */

    ck_assert_uint_eq(identify(0, 1), SC_SUCCESS);
    ck_assert_uint_eq(le64(d + 0), (8u << 20) / 512);
    ck_assert_uint_eq((le32(d + 128) >> 16) & 0xff, 9);
    ck_assert_uint_eq(identify(0, 2), SC_SUCCESS);
    ck_assert_uint_eq(le64(d + 0), (4u << 20) / 4096);
    ck_assert_uint_eq((le32(d + 128) >> 16) & 0xff, 12);
    ck_assert_uint_eq(identify(0, 3), SC_INVALID_NS);
    ck_assert_uint_eq(identify(0, 0), SC_INVALID_NS);

    ck_assert_uint_eq(identify(2, 0), SC_SUCCESS);
    ck_assert_uint_eq(le32(d + 0), 1);
    ck_assert_uint_eq(le32(d + 4), 2);
    ck_assert_uint_eq(le32(d + 8), 0);
    ck_assert_uint_eq(identify(2, 1), SC_SUCCESS);
    ck_assert_uint_eq(le32(d + 0), 2);
    ck_assert_uint_eq(le32(d + 4), 0);

    ck_assert_uint_eq(identify(3, 2), SC_SUCCESS);
    ck_assert_uint_eq(d[0], 1); /* EUI64 */
    ck_assert_uint_eq(d[1], 8);
    ck_assert_uint_eq(d[12], 2); /* NGUID */
    ck_assert_uint_eq(d[13], 16);
    ck_assert_uint_eq(identify(3, 9), SC_INVALID_NS);
    ck_assert_uint_eq(identify(0x10, 0), SC_INVALID_FIELD);
    ck_assert_uint_eq(admin(0x7f, 0, 0, 0, 0, NULL), SC_INVALID_OPCODE);
    ck_assert_uint_eq(identify(1, 0), SC_SUCCESS);
    ck_assert_uint_eq(le16(d + 256), 0x100); /* OACS: Doorbell Buffer Config only */
    ck_assert_uint_eq(admin(0x7c, 0, 0, 0, 0, NULL), SC_INVALID_FIELD); /* both buffers at 0 */
}
END_TEST

START_TEST(identifiers_stable)
{
    uint8_t first[16], second[16];
    char params[512];

    enable_controller();
    ck_assert_uint_eq(identify(0, 1), SC_SUCCESS);
    memcpy(first, guest + DATA_OFF + 104, 16);
    ck_assert_uint_eq(identify(0, 2), SC_SUCCESS);
    ck_assert_int_ne(memcmp(first, guest + DATA_OFF + 104, 16), 0);
    stop_device();
    unmap_guest();
    params_two_files(params, sizeof(params), "");
    start_device(params);
    map_guest(true);
    enable_controller();
    ck_assert_uint_eq(identify(0, 1), SC_SUCCESS);
    memcpy(second, guest + DATA_OFF + 104, 16);
    ck_assert_int_eq(memcmp(first, second, 16), 0);
}
END_TEST

START_TEST(features)
{
    uint32_t result;

    enable_controller();
    ck_assert_uint_eq(admin(0x09, 0, 0, 0x07, 0x00070007, &result), SC_SUCCESS);
    ck_assert_uint_eq(result, 0x00030003); /* 4 queues allocated, 0-based */
    ck_assert_uint_eq(admin(0x09, 0, 0, 0x07, 0xffff, NULL), SC_INVALID_FIELD);
    ck_assert_uint_eq(admin(0x0a, 0, 0, 0x06, 0, &result), SC_SUCCESS);
    ck_assert_uint_eq(result, 1); /* write cache on */
    ck_assert_uint_eq(admin(0x09, 0, 0, 0x06, 0, NULL), SC_SUCCESS);
    ck_assert_uint_eq(admin(0x0a, 0, 0, 0x06, 0, &result), SC_SUCCESS);
    ck_assert_uint_eq(result, 0);
    ck_assert_uint_eq(admin(0x09, 0, 0, 0x08, 0x0a05, NULL), SC_SUCCESS);
    ck_assert_uint_eq(admin(0x0a, 0, 0, 0x08, 0, &result), SC_SUCCESS);
    ck_assert_uint_eq(result, 0x0a05);
    ck_assert_uint_eq(admin(0x09, 0, 0, 0x0b, 0x1ff, NULL), SC_SUCCESS);
    ck_assert_uint_eq(admin(0x0a, 0, 0, 0x0b, 0, &result), SC_SUCCESS);
    ck_assert_uint_eq(result, 0x1ff);
    ck_assert_uint_eq(admin(0x09, 0, 0, 0x04, 0x150, NULL), SC_SUCCESS); /* over threshold */
    ck_assert_uint_eq(admin(0x0a, 0, 0, 0x04, 0, &result), SC_SUCCESS);
    ck_assert_uint_eq(result, 0x150);
    ck_assert_uint_eq(admin(0x0a, 0, 0, 0x04, 0x3u << 20, NULL), SC_INVALID_FIELD);
    ck_assert_uint_eq(admin(0x09, 0, 0, 0x02, 1, NULL), SC_INVALID_FIELD); /* no PS 1 */
    ck_assert_uint_eq(admin(0x09, 0, 0, 0x01, 0x3, NULL), SC_SUCCESS);
    ck_assert_uint_eq(admin(0x09, 0, 0, 0x05, 0x10, NULL), SC_SUCCESS);
    ck_assert_uint_eq(admin(0x09, 0, 0, 0x09, 4 | 1u << 16, NULL), SC_SUCCESS);
    ck_assert_uint_eq(admin(0x0a, 0, 0, 0x09, 4, &result), SC_SUCCESS);
    ck_assert_uint_eq(result, 4 | 1u << 16);
    ck_assert_uint_eq(admin(0x09, 0, 0, 0x09, 5, NULL), SC_INVALID_FIELD); /* 5 vectors: 0-4 */
    ck_assert_uint_eq(admin(0x09, 0, 0, 0x80, 0, NULL), SC_INVALID_FIELD);
    ck_assert_uint_eq(admin(0x0a, 0, 0, 0x0e, 0, NULL), SC_INVALID_FIELD); /* no Timestamp */
    ck_assert_uint_eq(admin(0x09, 0, 0, 0x06 | 1u << 31, 1, NULL), SC_NOT_SAVEABLE);
    ck_assert_uint_eq(admin(0x18, 0, 0, 0, 0, NULL), SC_SUCCESS);    /* Keep Alive */
    ck_assert_uint_eq(admin(0x08, 0, 0, 0, 0, &result), SC_SUCCESS); /* Abort */
    ck_assert_uint_eq(result & 1, 1);                                /* not aborted */
    /* Number of Queues after I/O queues exist is a sequence error. */
    create_io_queues(1);
    ck_assert_uint_eq(admin(0x09, 0, 0, 0x07, 0, NULL), SC_SEQUENCE_ERROR);
    /* A controller reset brings the defaults back. */
    disable_controller();
    enable_controller();
    ck_assert_uint_eq(admin(0x0a, 0, 0, 0x06, 0, &result), SC_SUCCESS);
    ck_assert_uint_eq(result, 1);
}
END_TEST

START_TEST(log_pages)
{
    uint8_t *d = guest + DATA_OFF;

    enable_controller();
    create_io_queues(1);
    memset(guest + DATA2_OFF, 0x5a, 4096);
    ck_assert_uint_eq(rw(1, 0x01, 1, 0, 8, DATA2_OFF, 4096), SC_SUCCESS);
    memset(d, 0xee, 512);
    ck_assert_uint_eq(admin(0x02, 0xffffffff, GUEST + DATA_OFF, 0x02 | 127u << 16, 0, NULL),
                      SC_SUCCESS);
    ck_assert_uint_eq(le16(d + 1), 311); /* temperature, kelvins */
    ck_assert_uint_eq(d[3], 100);        /* spare */
    ck_assert_uint_eq(le64(d + 48), 1);  /* data units written (thousands, rounded up) */
    ck_assert_uint_eq(le64(d + 80), 1);  /* host write commands */
    ck_assert_uint_eq(admin(0x02, 0, GUEST + DATA_OFF, 0x03 | 127u << 16, 0, NULL), SC_SUCCESS);
    ck_assert_uint_eq(d[0], 1);
    ck_assert_int_eq(memcmp(d + 8, "1.0     ", 8), 0);
    memset(d, 0xee, 256);
    ck_assert_uint_eq(admin(0x02, 0, GUEST + DATA_OFF, 0x01 | 63u << 16, 0, NULL), SC_SUCCESS);
    for (int i = 0; i < 256; i++)
        ck_assert_uint_eq(d[i], 0);
    ck_assert_uint_eq(admin(0x02, 0, GUEST + DATA_OFF, 0x7f | 63u << 16, 0, NULL), SC_INVALID_LOG);
    /* Over the temperature threshold: critical warning bit 1. */
    ck_assert_uint_eq(admin(0x09, 0, 0, 0x04, 300, NULL), SC_SUCCESS);
    ck_assert_uint_eq(admin(0x02, 0, GUEST + DATA_OFF, 0x02 | 127u << 16, 0, NULL), SC_SUCCESS);
    ck_assert_uint_eq(d[0] & 2, 2);
}
END_TEST

START_TEST(queue_creation_checks)
{
    enable_controller();
    ck_assert_uint_eq(create_cq(0, 16, 0), SC_INVALID_QID);
    ck_assert_uint_eq(create_cq(5, 16, 0), SC_INVALID_QID); /* io_queues 4 */
    ck_assert_uint_eq(create_cq(1, 1, 0), SC_INVALID_QSIZE);
    ck_assert_uint_eq(create_cq(1, 1025, 0), SC_INVALID_QSIZE); /* MQES 1023 */
    ck_assert_uint_eq(create_cq(1, 16, 5), SC_INVALID_VECTOR);
    ck_assert_uint_eq(admin(0x05, 0, GUEST + 0x2100, 15u << 16 | 1, 3, NULL), SC_PRP_OFFSET);
    ck_assert_uint_eq(admin(0x05, 0, GUEST + 0x3000, 15u << 16 | 1, 2, NULL),
                      SC_INVALID_FIELD); /* not physically contiguous */
    ck_assert_uint_eq(create_sq(1, 16, 1), SC_CQ_INVALID);
    ck_assert_uint_eq(create_cq(1, 16, 1), SC_SUCCESS);
    ck_assert_uint_eq(create_cq(1, 16, 1), SC_INVALID_QID); /* exists */
    ck_assert_uint_eq(create_sq(1, 16, 0), SC_CQ_INVALID);  /* the admin CQ */
    ck_assert_uint_eq(create_sq(1, 16, 2), SC_CQ_INVALID);
    ck_assert_uint_eq(create_sq(0, 16, 1), SC_INVALID_QID);
    ck_assert_uint_eq(create_sq(1, 1, 1), SC_INVALID_QSIZE);
    ck_assert_uint_eq(create_sq(1, 16, 1), SC_SUCCESS);
    ck_assert_uint_eq(create_sq(1, 16, 1), SC_INVALID_QID);
    ck_assert_uint_eq(create_sq(2, 16, 1), SC_SUCCESS); /* two SQs share CQ 1 */
    ck_assert_uint_eq(admin(0x04, 0, 0, 1, 0, NULL), SC_INVALID_DELETION);
    ck_assert_uint_eq(admin(0x00, 0, 0, 0, 0, NULL), SC_INVALID_QID); /* the admin SQ */
    ck_assert_uint_eq(admin(0x00, 0, 0, 3, 0, NULL), SC_INVALID_QID);
    ck_assert_uint_eq(admin(0x00, 0, 0, 1, 0, NULL), SC_SUCCESS);
    ck_assert_uint_eq(admin(0x00, 0, 0, 1, 0, NULL), SC_INVALID_QID);
    ck_assert_uint_eq(admin(0x04, 0, 0, 1, 0, NULL), SC_INVALID_DELETION);
    ck_assert_uint_eq(admin(0x00, 0, 0, 2, 0, NULL), SC_SUCCESS);
    ck_assert_uint_eq(admin(0x04, 0, 0, 1, 0, NULL), SC_SUCCESS);
    ck_assert_uint_eq(admin(0x04, 0, 0, 1, 0, NULL), SC_INVALID_QID);
    ck_assert_uint_eq(admin(0x04, 0, 0, 0, 0, NULL), SC_INVALID_QID);
}
END_TEST

START_TEST(write_read_verify)
{
    uint8_t expected[64 << 10];
    int fd;

    enable_controller();
    create_io_queues(4);
    /* 64 KiB from a dword offset inside a page: PRP1 with offset, then a PRP list. */
    fill_pattern(expected, sizeof(expected), 7);
    memcpy(guest + DATA_OFF + 0x200, expected, sizeof(expected));
    ck_assert_uint_eq(rw(1, 0x01, 1, 100, 128, DATA_OFF + 0x200, sizeof(expected)), SC_SUCCESS);
    memset(guest + DATA2_OFF, 0, sizeof(expected) + 4096);
    ck_assert_uint_eq(rw(2, 0x02, 1, 100, 128, DATA2_OFF + 0x400, sizeof(expected)), SC_SUCCESS);
    ck_assert_int_eq(memcmp(guest + DATA2_OFF + 0x400, expected, sizeof(expected)), 0);
    /* The file holds the data at the LBA's byte offset. */
    fd = open(image0, O_RDONLY | O_CLOEXEC);
    ck_assert_int_ge(fd, 0);
    {
        uint8_t file[64 << 10];
        ck_assert_int_eq(pread(fd, file, sizeof(file), 100 * 512), (ssize_t)sizeof(file));
        ck_assert_int_eq(memcmp(file, expected, sizeof(file)), 0);
    }
    close(fd);
    /* Two pages: PRP2 is the second page itself. 4 KiB blocks on namespace 2. */
    fill_pattern(guest + DATA_OFF, 8192, 9);
    ck_assert_uint_eq(rw(3, 0x01, 2, 1023, 2, DATA_OFF, 8192), SC_LBA_RANGE);
    ck_assert_uint_eq(rw(3, 0x01, 2, 1022, 2, DATA_OFF, 8192), SC_SUCCESS);
    ck_assert_uint_eq(rw(4, 0x02, 2, 1022, 2, DATA2_OFF, 8192), SC_SUCCESS);
    ck_assert_int_eq(memcmp(guest + DATA_OFF, guest + DATA2_OFF, 8192), 0);
    /* The biggest transfer, MDTS: 128 KiB, 32 pages, a list of 31 entries. */
    fill_pattern(guest + DATA_OFF, 128 << 10, 11);
    ck_assert_uint_eq(rw(1, 0x01, 1, 0, 256, DATA_OFF, 128 << 10), SC_SUCCESS);
    ck_assert_uint_eq(rw(1, 0x02, 1, 0, 256, DATA2_OFF, 128 << 10), SC_SUCCESS);
    ck_assert_int_eq(memcmp(guest + DATA_OFF, guest + DATA2_OFF, 128 << 10), 0);
    ck_assert_uint_eq(rw(1, 0x02, 1, 0, 257, DATA2_OFF, 257 * 512), SC_INVALID_FIELD);
}
END_TEST

START_TEST(chained_prp_list)
{
    /* A list that starts near the end of its page goes on in a second page through its last
     * entry, as the spec allows. */
    uint64_t *list = (uint64_t *)(guest + LIST_OFF + 4096 - 16); /* room for 2 entries */
    uint64_t *next = (uint64_t *)(guest + LIST_OFF + 8192);
    struct sqe sqe = {.opcode = 0x01, .nsid = 1, .prp1 = GUEST + DATA_OFF};

    enable_controller();
    create_io_queues(1);
    fill_pattern(guest + DATA_OFF, 16384, 3);
    list[0] = GUEST + DATA_OFF + 4096;
    list[1] = GUEST + LIST_OFF + 8192; /* the next list page */
    next[0] = GUEST + DATA_OFF + 8192;
    next[1] = GUEST + DATA_OFF + 12288;
    sqe.prp2 = GUEST + LIST_OFF + 4096 - 16;
    sqe.cdw[2] = 31;
    ck_assert_uint_eq(run(1, &sqe).status, SC_SUCCESS);
    ck_assert_uint_eq(rw(1, 0x02, 1, 0, 32, DATA2_OFF, 16384), SC_SUCCESS);
    ck_assert_int_eq(memcmp(guest + DATA_OFF, guest + DATA2_OFF, 16384), 0);
    /* A list that points at itself ends in an error, not a loop. */
    list = (uint64_t *)(guest + LIST_OFF + 4096 - 8);
    list[0] = GUEST + LIST_OFF + 4096 - 8;
    sqe.prp2 = GUEST + LIST_OFF + 4096 - 8;
    ck_assert_uint_ne(run(1, &sqe).status, SC_SUCCESS);
}
END_TEST

START_TEST(io_errors)
{
    struct sqe sqe;

    enable_controller();
    create_io_queues(1);
    ck_assert_uint_eq(rw(1, 0x02, 1, 16383, 2, DATA_OFF, 1024), SC_LBA_RANGE);
    ck_assert_uint_eq(rw(1, 0x02, 1, ~0ull, 1, DATA_OFF, 512), SC_LBA_RANGE);
    ck_assert_uint_eq(rw(1, 0x02, 3, 0, 1, DATA_OFF, 512), SC_INVALID_NS);
    ck_assert_uint_eq(rw(1, 0x02, 0, 0, 1, DATA_OFF, 512), SC_INVALID_NS);
    ck_assert_uint_eq(rw(1, 0x7e, 1, 0, 1, DATA_OFF, 512), SC_INVALID_OPCODE);
    /* PRP1 not dword aligned; PRP2 with an offset where a page is due. */
    ck_assert_uint_eq(rw(1, 0x02, 1, 0, 1, DATA_OFF + 2, 512), SC_PRP_OFFSET);
    sqe = (struct sqe){
        .opcode = 0x02, .nsid = 1, .prp1 = GUEST + DATA_OFF, .prp2 = GUEST + DATA2_OFF + 8};
    sqe.cdw[2] = 15;
    ck_assert_uint_eq(run(1, &sqe).status, SC_PRP_OFFSET);
    /* A list entry with an offset. */
    ((uint64_t *)(guest + LIST_OFF))[0] = GUEST + DATA2_OFF + 0x10;
    sqe.prp2 = GUEST + LIST_OFF;
    sqe.cdw[2] = 23; /* 12 KiB */
    ck_assert_uint_eq(run(1, &sqe).status, SC_PRP_OFFSET);
    /* Memory the client never mapped: a data transfer error, and DNR. */
    sqe = (struct sqe){.opcode = 0x02, .nsid = 1, .prp1 = NOWHERE};
    {
        struct completion c = run(1, &sqe);
        ck_assert_uint_eq(c.status, SC_TRANSFER_ERROR);
        ck_assert(c.dnr);
    }
    sqe = (struct sqe){.opcode = 0x01, .nsid = 1, .prp1 = GUEST + DATA_OFF, .prp2 = NOWHERE};
    sqe.cdw[2] = 15;
    ck_assert_uint_eq(run(1, &sqe).status, SC_TRANSFER_ERROR);
    /* A PRP list in unmapped memory. */
    sqe.prp2 = NOWHERE;
    sqe.cdw[2] = 31;
    ck_assert_uint_eq(run(1, &sqe).status, SC_TRANSFER_ERROR);
    /* Fused and SGL commands are not supported. */
    sqe = (struct sqe){.opcode = 0x02, .flags = 0x40, .nsid = 1, .prp1 = GUEST + DATA_OFF};
    ck_assert_uint_eq(run(1, &sqe).status, SC_INVALID_FIELD);
    /* The queue still works. */
    ck_assert_uint_eq(rw(1, 0x02, 1, 0, 1, DATA_OFF, 512), SC_SUCCESS);
}
END_TEST

START_TEST(flush_zeroes_deallocate)
{
    struct sqe sqe;
    uint8_t range[16];
    int fd;
    off_t hole;

    enable_controller();
    create_io_queues(1);
    fill_pattern(guest + DATA_OFF, 128 << 10, 5);
    for (uint64_t lba = 0; lba < 2048; lba += 256)
        ck_assert_uint_eq(rw(1, 0x01, 1, lba, 256, DATA_OFF, 128 << 10), SC_SUCCESS);
    sqe = (struct sqe){.opcode = 0x00, .nsid = 1};
    ck_assert_uint_eq(run(1, &sqe).status, SC_SUCCESS);
    sqe = (struct sqe){.opcode = 0x00, .nsid = 0xffffffff};
    ck_assert_uint_eq(run(1, &sqe).status, SC_SUCCESS);
    /* Write Zeroes of 8 blocks at LBA 8. */
    sqe = (struct sqe){.opcode = 0x08, .nsid = 1};
    sqe.cdw[0] = 8;
    sqe.cdw[2] = 7;
    ck_assert_uint_eq(run(1, &sqe).status, SC_SUCCESS);
    memset(guest + DATA2_OFF, 0xff, 8192);
    ck_assert_uint_eq(rw(1, 0x02, 1, 8, 8, DATA2_OFF, 4096), SC_SUCCESS);
    for (int i = 0; i < 4096; i++)
        ck_assert_uint_eq(guest[DATA2_OFF + i], 0);
    sqe.cdw[0] = 16383;
    ck_assert_uint_eq(run(1, &sqe).status, SC_LBA_RANGE);
    /* Deallocate 1 MiB from LBA 1024: a hole in the file, reading as zeros. */
    memset(range, 0, sizeof(range));
    range[4] = 0x00;
    range[5] = 0x08; /* 2048 blocks */
    range[9] = 0x04; /* SLBA 1024 */
    memcpy(guest + DATA_OFF, range, 16);
    sqe = (struct sqe){.opcode = 0x09, .nsid = 1, .prp1 = GUEST + DATA_OFF};
    sqe.cdw[1] = 0x4;
    ck_assert_uint_eq(run(1, &sqe).status, SC_SUCCESS);
    fd = open(image0, O_RDONLY | O_CLOEXEC);
    ck_assert_int_ge(fd, 0);
    hole = lseek(fd, 0, SEEK_HOLE);
    ck_assert_int_le(hole, 1024 * 512);
    ck_assert_int_eq(lseek(fd, 1024 * 512, SEEK_HOLE), 1024 * 512);
    close(fd);
    ck_assert_uint_eq(rw(1, 0x02, 1, 1024, 8, DATA2_OFF, 4096), SC_SUCCESS);
    for (int i = 0; i < 4096; i++)
        ck_assert_uint_eq(guest[DATA2_OFF + i], 0);
    /* A range beyond the namespace changes nothing and fails. */
    range[9] = 0xff;
    range[10] = 0xff;
    memcpy(guest + DATA_OFF + 16, range, 16);
    sqe.cdw[0] = 1; /* two ranges: the good one and the bad one */
    ck_assert_uint_eq(run(1, &sqe).status, SC_LBA_RANGE);
}
END_TEST

/* Where `path` (a 512-byte-block namespace) has a hole: [offset, offset + length) is one. */
static void expect_hole(int fd, off_t offset, off_t length)
{
    off_t data = lseek(fd, offset, SEEK_DATA);

    ck_assert_int_eq(lseek(fd, offset, SEEK_HOLE), offset);
    ck_assert_msg(data < 0 || data >= offset + length, "data at %lld in the hole at %lld",
                  (long long)data, (long long)offset);
}

static void expect_file_zeros(int fd, off_t offset, size_t length)
{
    uint8_t bytes[16384];

    ck_assert_uint_le(length, sizeof(bytes));
    ck_assert_int_eq(pread(fd, bytes, length, offset), (ssize_t)length);
    for (size_t i = 0; i < length; i++)
        ck_assert_msg(bytes[i] == 0, "byte %lld is %u, not zero", (long long)offset + (long long)i,
                      bytes[i]);
}

/* The file holds the pattern written by check_zeroes_and_deallocate() at `offset`. */
static void expect_file_pattern(int fd, off_t offset, size_t length)
{
    static uint8_t pattern[128 << 10];
    uint8_t bytes[16384];

    ck_assert_uint_le(length, sizeof(bytes));
    fill_pattern(pattern, sizeof(pattern), 5);
    ck_assert_int_eq(pread(fd, bytes, length, offset), (ssize_t)length);
    ck_assert_int_eq(memcmp(bytes, pattern + offset % sizeof(pattern), length), 0);
}

/*
 * Write Zeroes and Dataset Management on the image at `path` (one namespace of 8 MiB, 512-byte
 * blocks) with `aio`, checked in the file itself: zeros where zeroed, holes where deallocated,
 * data everywhere else, and nothing changed by a command that fails.
 */
static void check_zeroes_and_deallocate(const char *path, const char *aio)
{
    /* LBAs and lengths in blocks, 4 KiB aligned so that any file system can punch them. */
    static const uint32_t dsm[3][2] = {{4096, 256}, {5120, 512}, {7168, 1024}};
    char params[512];
    uint8_t list[3 * 16];
    struct stat before, after;
    struct sqe sqe;
    int fd;

    stop_device();
    unmap_guest();
    snprintf(params, sizeof(params), "{\"path\": \"%s\", \"size\": \"8M\", \"aio\": \"%s\"}", path,
             aio);
    start_device(params);
    map_guest(true);
    enable_controller();
    create_io_queues(1);
    fill_pattern(guest + DATA_OFF, 128 << 10, 5);
    for (uint64_t lba = 0; lba < 8192; lba += 256)
        ck_assert_uint_eq(rw(1, 0x01, 1, lba, 256, DATA_OFF, 128 << 10), SC_SUCCESS);
    sqe = (struct sqe){.opcode = 0x00, .nsid = 1};
    ck_assert_uint_eq(run(1, &sqe).status, SC_SUCCESS);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    ck_assert_int_ge(fd, 0);

    /* Write Zeroes of 24 blocks at LBA 8: zeros in the file, the blocks around it kept. */
    sqe = (struct sqe){.opcode = 0x08, .nsid = 1};
    sqe.cdw[0] = 8;
    sqe.cdw[2] = 23;
    ck_assert_uint_eq(run(1, &sqe).status, SC_SUCCESS);
    expect_file_pattern(fd, 0, 4096);
    expect_file_zeros(fd, 4096, 12288);
    expect_file_pattern(fd, 16384, 4096);
    /* With DEAC, 1 MiB from LBA 2048: a hole, which reads as zeros. */
    sqe.cdw[0] = 2048;
    sqe.cdw[2] = 2047 | 1u << 25;
    ck_assert_uint_eq(run(1, &sqe).status, SC_SUCCESS);
    expect_hole(fd, 1 << 20, 1 << 20);
    expect_file_zeros(fd, (1 << 20) + 4096, 4096);
    expect_file_pattern(fd, 2 << 20, 4096);
    /* Beyond the end: LBA Out of Range. */
    sqe.cdw[0] = 16383;
    sqe.cdw[2] = 1;
    ck_assert_uint_eq(run(1, &sqe).status, SC_LBA_RANGE);

    /* Dataset Management, deallocate, three ranges in one command: three holes, the data
     * between them kept, and the file holds fewer blocks. */
    ck_assert_int_eq(fstat(fd, &before), 0);
    memset(list, 0, sizeof(list));
    for (int i = 0; i < 3; i++) {
        uint64_t slba = dsm[i][0];
        memcpy(list + 16 * i + 4, &dsm[i][1], 4);
        memcpy(list + 16 * i + 8, &slba, 8);
    }
    memcpy(guest + DATA2_OFF, list, sizeof(list));
    sqe = (struct sqe){.opcode = 0x09, .nsid = 1, .prp1 = GUEST + DATA2_OFF};
    sqe.cdw[0] = 2; /* three ranges */
    sqe.cdw[1] = 0x4;
    ck_assert_uint_eq(run(1, &sqe).status, SC_SUCCESS);
    for (int i = 0; i < 3; i++)
        expect_hole(fd, (off_t)dsm[i][0] * 512, (off_t)dsm[i][1] * 512);
    expect_file_pattern(fd, (4096 + 256) * 512, 4096);
    expect_file_pattern(fd, (7168 - 8) * 512, 4096);
    ck_assert_int_eq(fstat(fd, &after), 0);
    /* Less 32 KiB (64 sectors) for what the file system may add to describe the holes. */
    ck_assert_int_le(after.st_blocks, before.st_blocks - (256 + 512 + 1024) + 64);
    memset(guest + DATA_OFF, 0xff, 4096);
    ck_assert_uint_eq(rw(1, 0x02, 1, 5120, 8, DATA_OFF, 4096), SC_SUCCESS);
    for (int i = 0; i < 4096; i++)
        ck_assert_uint_eq(guest[DATA_OFF + i], 0);

    /* A range beyond the namespace among good ones: LBA Out of Range, nothing deallocated. */
    fill_pattern(guest + DATA_OFF, 128 << 10, 5);
    ck_assert_uint_eq(rw(1, 0x01, 1, 4096, 256, DATA_OFF, 128 << 10), SC_SUCCESS);
    {
        uint64_t slba = 16383;
        uint32_t blocks = 2;
        memcpy(list + 16 + 4, &blocks, 4);
        memcpy(list + 16 + 8, &slba, 8);
        memcpy(guest + DATA2_OFF, list, sizeof(list));
    }
    ck_assert_uint_eq(run(1, &sqe).status, SC_LBA_RANGE);
    expect_file_pattern(fd, 4096 * 512, 4096);
    close(fd);
    ck_assert_uint_eq(read32(REG_CSTS), CSTS_RDY);
}

START_TEST(zeroes_and_deallocate_both_engines)
{
    check_zeroes_and_deallocate(image0, "io_uring");
    check_zeroes_and_deallocate(image0, "sync");
}
END_TEST

START_TEST(zeroes_written_where_fallocate_cannot)
{
    /* tmpfs punches holes but has no FALLOC_FL_ZERO_RANGE: Write Zeroes writes the zeros. */
    char path[128];
    struct stat st;

    if (stat("/dev/shm", &st) < 0 || !S_ISDIR(st.st_mode))
        return;
    snprintf(path, sizeof(path), "/dev/shm/test_nvme.%d.img", (int)getpid());
    check_zeroes_and_deallocate(path, "io_uring");
    check_zeroes_and_deallocate(path, "sync");
    stop_device();
    unlink(path);
}
END_TEST

START_TEST(read_only_namespace)
{
    char params[512];

    /* Make the file first, then serve it read-only. */
    enable_controller();
    stop_device();
    unmap_guest();
    snprintf(params, sizeof(params), "{\"path\": \"%s\", \"read_only\": \"true\"}", image0);
    start_device(params);
    map_guest(true);
    enable_controller();
    create_io_queues(1);
    ck_assert_uint_eq(identify(0, 1), SC_SUCCESS);
    ck_assert_uint_eq(guest[DATA_OFF + 99] & 1, 1); /* NSATTR: write protected */
    ck_assert_uint_eq(rw(1, 0x01, 1, 0, 1, DATA_OFF, 512), SC_WRITE_PROTECTED);
    ck_assert_uint_eq(rw(1, 0x02, 1, 0, 1, DATA_OFF, 512), SC_SUCCESS);
}
END_TEST

START_TEST(hostile_doorbells)
{
    enable_controller();
    create_io_queues(2);
    /* A doorbell for a queue that does not exist is ignored. */
    write32(DOORBELL + 8 * 3, 1);
    write32(DOORBELL + 8 * 100, 1);
    ck_assert_uint_eq(read32(REG_CSTS), CSTS_RDY);
    /* A completion head beyond what was posted is fatal. */
    write32(DOORBELL + 8 * 1 + 4, 5);
    ck_assert_uint_eq(read32(REG_CSTS) & CSTS_CFS, CSTS_CFS);
    disable_controller();
    ck_assert_uint_eq(read32(REG_CSTS), 0);
    enable_controller();
    create_io_queues(1);
    /* A tail beyond the queue size. */
    write32(DOORBELL + 8 * 1, IO_DEPTH);
    ck_assert_uint_eq(read32(REG_CSTS) & CSTS_CFS, CSTS_CFS);
    /* Nothing runs while fatal, and a reset recovers. */
    disable_controller();
    enable_controller();
    create_io_queues(1);
    ck_assert_uint_eq(rw(1, 0x02, 1, 0, 1, DATA_OFF, 512), SC_SUCCESS);
    /* A submission queue in unmapped memory: the fetch fails, the controller is fatal. */
    ck_assert_uint_eq(admin(0x05, 0, GUEST + 0x8000, 15u << 16 | 2, 2u << 16 | 3, NULL),
                      SC_SUCCESS);
    ck_assert_uint_eq(admin(0x01, 0, NOWHERE, 15u << 16 | 2, 2u << 16 | 1, NULL), SC_SUCCESS);
    write32(DOORBELL + 8 * 2, 1);
    ck_assert_uint_eq(read32(REG_CSTS) & CSTS_CFS, CSTS_CFS);
    disable_controller();
    /* Doorbells while disabled are ignored. */
    write32(DOORBELL, 3);
    ck_assert_uint_eq(read32(REG_CSTS), 0);
}
END_TEST

START_TEST(queue_full_and_wrap)
{
    uint16_t first_cid;

    /* More commands than the completion queue holds, in one doorbell: the controller waits
     * for head updates, and the phase flips on wrap. */
    enable_controller();
    ck_assert_uint_eq(create_cq(1, 4, 1), SC_SUCCESS);
    ck_assert_uint_eq(create_sq(1, 16, 1), SC_SUCCESS);
    queues[1] = (struct queue){IOSQ_OFF, IOSQ_OFF + 0x1000, 16, 0, 0, true};
    first_cid = next_cid;
    for (int i = 0; i < 10; i++) {
        struct sqe sqe = {.opcode = 0x02, .nsid = 1, .prp1 = GUEST + DATA_OFF};
        push(1, &sqe);
    }
    ring(1);
    for (int i = 0; i < 10; i++) {
        /* The CQ has 4 slots; reaping one (and ringing its head) lets the next through. */
        struct queue *cq = &queues[1];
        uint32_t saved_depth = cq->depth;
        struct completion c;
        cq->depth = 4;
        c = reap(1);
        cq->depth = saved_depth;
        ck_assert_uint_eq(c.status, SC_SUCCESS);
        ck_assert_uint_eq(c.cid, (uint16_t)(first_cid + i));
    }
}
END_TEST

START_TEST(async_events_held)
{
    enable_controller();
    for (int i = 0; i < 4; i++) {
        struct sqe sqe = {.opcode = 0x0c};
        push(0, &sqe);
    }
    ring(0);
    /* The fifth goes over AERL. */
    ck_assert_uint_eq(admin(0x0c, 0, 0, 0, 0, NULL), SC_AER_LIMIT);
    ck_assert_uint_eq(identify(1, 0), SC_SUCCESS);
}
END_TEST

START_TEST(msix_interrupts)
{
    uint8_t config[256];
    uint32_t msix = 0;
    int fds[3];
    uint64_t value;

    msix = test_enable_msix(client);
    ck_assert_int_eq(vu_client_region_read(client, VFIO_USERD_REGION_CONFIG, 0, config, 256), 0);
    ck_assert_uint_eq((le16(config + msix + 2) & PCI_MSIX_FLAGS_QSIZE) + 1, 5);
    for (int i = 0; i < 3; i++) {
        fds[i] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        ck_assert_int_ge(fds[i], 0);
    }
    ck_assert_int_eq(vu_client_set_irqs(client, VFIO_PCI_MSIX_IRQ_INDEX,
                                        VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER, 0,
                                        3, fds, NULL),
                     0);
    enable_controller();
    create_io_queues(2);
    ck_assert_int_eq(read(fds[0], &value, 8), 8); /* admin completions: vector 0 */
    ck_assert_uint_eq(rw(2, 0x02, 1, 0, 1, DATA_OFF, 512), SC_SUCCESS);
    ck_assert_int_eq(read(fds[2], &value, 8), 8);
    ck_assert_int_eq(read(fds[1], &value, 8), -1);
    ck_assert_int_eq(read(fds[0], &value, 8), -1);
    ck_assert_uint_eq(rw(1, 0x02, 1, 0, 1, DATA_OFF, 512), SC_SUCCESS);
    ck_assert_int_eq(read(fds[1], &value, 8), 8);
    for (int i = 0; i < 3; i++)
        close(fds[i]);
}
END_TEST

START_TEST(intx_interrupts)
{
    int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    uint64_t value;

    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(vu_client_set_irqs(client, VFIO_PCI_INTX_IRQ_INDEX,
                                        VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER, 0,
                                        1, &fd, NULL),
                     0);
    enable_controller();
    ck_assert_uint_eq(identify(1, 0), SC_SUCCESS);
    ck_assert_int_eq(read(fd, &value, 8), 8);
    /* INTMS holds pin interrupts back; INTMC lets the held one go. */
    ck_assert_int_eq(vu_client_set_irqs(client, VFIO_PCI_INTX_IRQ_INDEX,
                                        VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_UNMASK, 0, 1,
                                        NULL, NULL),
                     0);
    write32(REG_INTMS, 1);
    ck_assert_uint_eq(identify(1, 0), SC_SUCCESS);
    ck_assert_int_eq(read(fd, &value, 8), -1);
    write32(REG_INTMC, 1);
    ck_assert_int_eq(read(fd, &value, 8), -1); /* the guest consumed the entry already */
    close(fd);
}
END_TEST

START_TEST(reset_and_shutdown)
{
    enable_controller();
    create_io_queues(2);
    /* Orderly shutdown: SHST complete; then a reset. */
    write32(REG_CC, CC_ENABLE | CC_SHN_NRM);
    ck_assert_uint_eq(read32(REG_CSTS) & CSTS_SHST, SHST_DONE);
    disable_controller();
    ck_assert_uint_eq(read32(REG_CSTS), 0);
    /* After a reset the I/O queues are gone. */
    enable_controller();
    ck_assert_uint_eq(admin(0x00, 0, 0, 1, 0, NULL), SC_INVALID_QID);
    create_io_queues(2);
    ck_assert_uint_eq(rw(2, 0x02, 1, 0, 1, DATA_OFF, 512), SC_SUCCESS);
    /* DEVICE_RESET: every register back to its default. */
    ck_assert_int_eq(vu_client_device_reset(client), 0);
    ck_assert_uint_eq(read32(REG_CSTS), 0);
    ck_assert_uint_eq(read32(REG_CC), 0);
    ck_assert_uint_eq(read32(REG_AQA), 0);
    enable_controller();
    ck_assert_uint_eq(identify(1, 0), SC_SUCCESS);
}
END_TEST

START_TEST(persistence_across_restart)
{
    char params[512];

    enable_controller();
    create_io_queues(1);
    fill_pattern(guest + DATA_OFF, 65536, 21);
    ck_assert_uint_eq(rw(1, 0x01, 1, 4000, 128, DATA_OFF, 65536), SC_SUCCESS);
    ck_assert_uint_eq(rw(1, 0x01, 2, 7, 16, DATA_OFF, 65536), SC_SUCCESS);
    stop_device();
    unmap_guest();
    /* The same files again, with the sizes left out: the files' own. */
    snprintf(params, sizeof(params),
             "{\"serial\": \"SN0001\", \"namespaces\": [{\"path\": \"%s\"}, "
             "{\"path\": \"%s\", \"block_size\": 4096}]}",
             image0, image1);
    start_device(params);
    map_guest(true);
    enable_controller();
    create_io_queues(1);
    ck_assert_uint_eq(identify(0, 2), SC_SUCCESS);
    ck_assert_uint_eq(le64(guest + DATA_OFF), 1024);
    ck_assert_uint_eq(rw(1, 0x02, 1, 4000, 128, DATA2_OFF, 65536), SC_SUCCESS);
    fill_pattern(guest + DATA_OFF, 65536, 21);
    ck_assert_int_eq(memcmp(guest + DATA_OFF, guest + DATA2_OFF, 65536), 0);
    ck_assert_uint_eq(rw(1, 0x02, 2, 7, 16, DATA2_OFF, 65536), SC_SUCCESS);
    ck_assert_int_eq(memcmp(guest + DATA_OFF, guest + DATA2_OFF, 65536), 0);
}
END_TEST

START_TEST(message_dma)
{
    /* Guest memory not shared: every queue entry, PRP list and data byte goes through
     * DMA_READ/DMA_WRITE messages, and commands complete when the client has answered. */
    uint8_t expected[32 << 10];

    ck_assert_int_eq(vu_client_dma_unmap(client, GUEST, GUEST_SIZE, 0), 0);
    unmap_guest();
    map_guest(false);
    enable_controller();
    ck_assert_uint_eq(identify(1, 0), SC_SUCCESS);
    ck_assert_int_eq(memcmp(guest + DATA_OFF + 4, "SN0001", 6), 0);
    create_io_queues(2);
    fill_pattern(expected, sizeof(expected), 33);
    memcpy(guest + DATA_OFF + 0x800, expected, sizeof(expected));
    ck_assert_uint_eq(rw(1, 0x01, 1, 64, 64, DATA_OFF + 0x800, sizeof(expected)), SC_SUCCESS);
    memset(guest + DATA2_OFF, 0, sizeof(expected) + 4096);
    ck_assert_uint_eq(rw(2, 0x02, 1, 64, 64, DATA2_OFF + 0x800, sizeof(expected)), SC_SUCCESS);
    ck_assert_int_eq(memcmp(guest + DATA2_OFF + 0x800, expected, sizeof(expected)), 0);
    ck_assert_uint_eq(rw(1, 0x02, 1, 0, 1, DATA_OFF + 2, 512), SC_PRP_OFFSET);
    {
        struct sqe sqe = {.opcode = 0x02, .nsid = 1, .prp1 = NOWHERE};
        ck_assert_uint_eq(run(1, &sqe).status, SC_TRANSFER_ERROR);
    }
    ck_assert_uint_eq(rw(1, 0x02, 1, 64, 1, DATA2_OFF, 512), SC_SUCCESS);
    disable_controller();
}
END_TEST

START_TEST(ram_namespace)
{
    stop_device();
    unmap_guest();
    start_device("{\"backend\": \"ram\", \"size\": \"16M\", \"io_queues\": \"2\", "
                 "\"queue_depth\": 64}");
    map_guest(true);
    ck_assert_uint_eq(read64(REG_CAP) & 0xffff, 63);
    enable_controller();
    create_io_queues(2);
    fill_pattern(guest + DATA_OFF, 8192, 1);
    ck_assert_uint_eq(rw(1, 0x01, 1, 5, 16, DATA_OFF, 8192), SC_SUCCESS);
    ck_assert_uint_eq(rw(2, 0x02, 1, 5, 16, DATA2_OFF, 8192), SC_SUCCESS);
    ck_assert_int_eq(memcmp(guest + DATA_OFF, guest + DATA2_OFF, 8192), 0);
    ck_assert_uint_eq(create_cq(3, 16, 0), SC_INVALID_QID);
    ck_assert_uint_eq(create_cq(1, 65, 0), SC_INVALID_QID); /* exists */
    stop_device();
    start_device("{\"path\": null, \"size\": \"1M\", \"block_size\": 4096}");
}
END_TEST

/* --- Shadow doorbells ---------------------------------------------------------------------- */

static uint16_t dbbuf_config(uint64_t shadow_buffer, uint64_t eventidx_buffer)
{
    struct sqe sqe = {.opcode = 0x7c, .prp1 = shadow_buffer, .prp2 = eventidx_buffer};

    return run(0, &sqe).status;
}

/* Waits (serving DMA messages) until EventIdx `index` holds `value`; the controller stores
 * it after posting the completion the caller reaped. */
static void expect_eventidx(uint32_t index, uint32_t value)
{
    for (int i = 0;
         i < 500 && __atomic_load_n(dbbuf_slot(EVENTIDX_OFF, index), __ATOMIC_ACQUIRE) != value;
         i++)
        vu_client_serve(client, 1);
    ck_assert_uint_eq(*dbbuf_slot(EVENTIDX_OFF, index), value);
}

START_TEST(doorbell_buffer_config)
{
    const uint64_t db = GUEST + SHADOW_OFF, ei = GUEST + EVENTIDX_OFF;

    /* As Linux does: queues first, then the buffers. */
    enable_controller();
    create_io_queues(2);
    ck_assert_uint_eq(rw(1, 0x02, 1, 0, 1, DATA_OFF, 512), SC_SUCCESS);
    /* Buffers not page aligned, one page for both, or outside client memory: refused, and
     * doorbells stay in BAR0. */
    ck_assert_uint_eq(dbbuf_config(db + 8, ei), SC_INVALID_FIELD);
    ck_assert_uint_eq(dbbuf_config(db, ei + 0x800), SC_INVALID_FIELD);
    ck_assert_uint_eq(dbbuf_config(db, db), SC_INVALID_FIELD);
    ck_assert_uint_eq(dbbuf_config(NOWHERE, ei), SC_INVALID_FIELD);
    ck_assert_uint_eq(dbbuf_config(db, NOWHERE), SC_INVALID_FIELD);
    ck_assert_uint_eq(rw(1, 0x02, 1, 0, 1, DATA_OFF, 512), SC_SUCCESS);
    /* Whatever the buffers held, the controller writes its queues' values in: queue 1 has
     * taken two commands, queue 2 none; queue 3 does not exist. */
    memset(guest + SHADOW_OFF, 0xee, 8192);
    ck_assert_uint_eq(dbbuf_config(db, ei), SC_SUCCESS);
    ck_assert_uint_eq(*dbbuf_slot(SHADOW_OFF, 2), 2);
    ck_assert_uint_eq(*dbbuf_slot(SHADOW_OFF, 3), 2);
    ck_assert_uint_eq(*dbbuf_slot(EVENTIDX_OFF, 2), 2);
    ck_assert_uint_eq(*dbbuf_slot(EVENTIDX_OFF, 3), 2);
    ck_assert_uint_eq(*dbbuf_slot(SHADOW_OFF, 4), 0);
    ck_assert_uint_eq(*dbbuf_slot(EVENTIDX_OFF, 5), 0);
    ck_assert_uint_eq(*dbbuf_slot(SHADOW_OFF, 6), 0xeeeeeeee);
    ck_assert_uint_eq(*dbbuf_slot(SHADOW_OFF, 0), 0xeeeeeeee); /* the admin queue: BAR0 */

    shadow = true;
    fill_pattern(guest + DATA_OFF, 8192, 12);
    ck_assert_uint_eq(rw(1, 0x01, 1, 8, 16, DATA_OFF, 8192), SC_SUCCESS);
    ck_assert_uint_eq(rw(2, 0x02, 1, 8, 16, DATA2_OFF, 8192), SC_SUCCESS);
    ck_assert_int_eq(memcmp(guest + DATA_OFF, guest + DATA2_OFF, 8192), 0);
    ck_assert_uint_eq(sq_rings, 2); /* each queue was idle: its EventIdx asked */
    /* Idle again, each submission queue's EventIdx is the tail the controller saw. */
    expect_eventidx(2, 3);
    expect_eventidx(4, 1);
    /* The shadow is the truth: a BAR0 write only wakes the controller, whatever its value
     * (it may be older than the shadow), even one that would be fatal in BAR0. */
    {
        struct sqe sqe = {.opcode = 0x02, .nsid = 1, .prp1 = GUEST + DATA2_OFF};
        struct completion c;
        push(1, &sqe);
        *dbbuf_slot(SHADOW_OFF, 2) = queues[1].tail;
        write32(DOORBELL + 8, IO_DEPTH + 7);
        c = reap(1);
        ck_assert_uint_eq(c.status, SC_SUCCESS);
        ck_assert_uint_eq(c.cid, sqe.cid);
    }
    ck_assert_uint_eq(read32(REG_CSTS), CSTS_RDY);
    /* The admin queue still rings BAR0. */
    ck_assert_uint_eq(identify(1, 0), SC_SUCCESS);
    /* A shadow tail beyond the queue is as fatal as in BAR0. */
    *dbbuf_slot(SHADOW_OFF, 4) = IO_DEPTH;
    write32(DOORBELL + 16, 0);
    ck_assert_uint_eq(read32(REG_CSTS) & CSTS_CFS, CSTS_CFS);
    /* A controller reset forgets the buffers: BAR0 values count again, the shadow not. */
    disable_controller();
    enable_controller();
    create_io_queues(2);
    shadow = false;
    memset(guest + SHADOW_OFF, 0xee, 8192);
    ck_assert_uint_eq(rw(2, 0x02, 1, 8, 16, DATA2_OFF, 8192), SC_SUCCESS);
    ck_assert_uint_eq(*dbbuf_slot(EVENTIDX_OFF, 4), 0xeeeeeeee);
}
END_TEST

START_TEST(shadow_doorbells_spare_bar0_writes)
{
    /* Buffers before the queues: each queue created afterwards starts at 0 in both. A
     * completion queue of 4 entries under 11 commands holds the submission queue back;
     * while entries wait, the controller comes back to the queue by itself (on completion
     * queue room), so of the 11 tails the driver stores only the first asks for a BAR0
     * write. The heads do ask, since the held-back queue waits for them. */
    uint16_t first_cid;

    enable_controller();
    memset(guest + SHADOW_OFF, 0xee, 8192);
    ck_assert_uint_eq(dbbuf_config(GUEST + SHADOW_OFF, GUEST + EVENTIDX_OFF), SC_SUCCESS);
    ck_assert_uint_eq(create_cq(1, 4, 1), SC_SUCCESS);
    ck_assert_uint_eq(create_sq(1, 16, 1), SC_SUCCESS);
    for (uint32_t index = 2; index < 4; index++) {
        ck_assert_uint_eq(*dbbuf_slot(SHADOW_OFF, index), 0);
        ck_assert_uint_eq(*dbbuf_slot(EVENTIDX_OFF, index), 0);
    }
    queues[1] = (struct queue){IOSQ_OFF, IOSQ_OFF + 0x1000, 16, 0, 0, true};
    shadow = true;
    first_cid = next_cid;
    for (int i = 0; i < 10; i++) {
        struct sqe sqe = {.opcode = 0x02, .nsid = 1, .prp1 = GUEST + DATA_OFF};
        push(1, &sqe);
    }
    ring(1);
    ck_assert_uint_eq(sq_rings, 1);
    {
        struct sqe sqe = {.opcode = 0x02, .nsid = 1, .prp1 = GUEST + DATA_OFF};
        push(1, &sqe);
        ring(1);
    }
    ck_assert_uint_eq(sq_rings, 1);
    for (int i = 0; i < 11; i++) {
        struct completion c;
        queues[1].depth = 4; /* the completion queue's */
        c = reap(1);
        queues[1].depth = 16;
        ck_assert_uint_eq(c.status, SC_SUCCESS);
        ck_assert_uint_eq(c.cid, (uint16_t)(first_cid + i));
    }
    ck_assert_uint_eq(sq_rings, 1);
    ck_assert_uint_ge(cq_rings, 1);
    /* All done: the next command is announced. */
    expect_eventidx(2, 11);
    {
        struct sqe sqe = {.opcode = 0x02, .nsid = 1, .prp1 = GUEST + DATA_OFF};
        struct completion c;
        push(1, &sqe);
        ring(1);
        ck_assert_uint_eq(sq_rings, 2);
        queues[1].depth = 4;
        c = reap(1);
        ck_assert_uint_eq(c.status, SC_SUCCESS);
        ck_assert_uint_eq(c.cid, sqe.cid);
    }
    ck_assert_uint_eq(read32(REG_CSTS), CSTS_RDY);
}
END_TEST

/* The next completion of `qid` as a driver polling its completion queue finds it, at once,
 * and its head stored as a doorbell. */
static struct completion reap_polling(uint32_t qid)
{
    struct queue *q = &queues[qid];
    uint8_t *entry = guest + q->cq_off + q->head * 16;
    struct timespec start, now;
    struct completion c;
    uint16_t status;

    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        status = __atomic_load_n((uint16_t *)(entry + 14), __ATOMIC_ACQUIRE);
        if ((status & 1) == (q->phase ? 1 : 0))
            break;
        clock_gettime(CLOCK_MONOTONIC, &now);
        ck_assert_msg(now.tv_sec - start.tv_sec < 5, "no completion on queue %u", qid);
    }
    memcpy(&c.cid, entry + 12, 2);
    c.status = (status >> 1) & 0x7ff;
    q->head = (q->head + 1) % q->depth;
    if (q->head == 0)
        q->phase = !q->phase;
    doorbell(2 * qid + 1, q->head);
    return c;
}

START_TEST(shadow_doorbells_polled)
{
    /* doorbell_poll_us: once its queues ran dry the controller keeps reading the shadow
     * doorbells that long before it sets EventIdx, so a command stored meanwhile needs no
     * BAR0 write; after the window EventIdx asks for the next tail again. How soon the
     * driver stores is up to the scheduler, so one command in 50 tries must be spared its
     * write (with two CPUs or more: on one, the controller's polling takes the driver's). */
    uint32_t spared = 0;

    stop_device();
    unmap_guest();
    start_device("{\"backend\": \"ram\", \"size\": \"16M\", \"doorbell_poll_us\": 1000}");
    map_guest(true);
    enable_controller();
    ck_assert_uint_eq(dbbuf_config(GUEST + SHADOW_OFF, GUEST + EVENTIDX_OFF), SC_SUCCESS);
    ck_assert_uint_eq(create_cq(1, 64, 1), SC_SUCCESS);
    ck_assert_uint_eq(create_sq(1, 64, 1), SC_SUCCESS);
    queues[1] = (struct queue){IOSQ_OFF, IOSQ_OFF + 0x1000, 64, 0, 0, true};
    shadow = true;
    for (int attempt = 0; attempt < 50 && spared == 0; attempt++) {
        struct sqe sqe = {.opcode = 0x02, .nsid = 1, .prp1 = GUEST + DATA_OFF};
        uint32_t rings;

        /* At rest, the window long past: the next tail is announced. */
        expect_eventidx(2, queues[1].tail);
        push(1, &sqe);
        ring(1);
        ck_assert_uint_eq(reap_polling(1).status, SC_SUCCESS);
        rings = sq_rings;
        sqe = (struct sqe){.opcode = 0x02, .nsid = 1, .prp1 = GUEST + DATA_OFF};
        push(1, &sqe);
        ring(1);
        /* Found by polling, or through the BAR0 write if the window had passed. */
        ck_assert_uint_eq(reap_polling(1).status, SC_SUCCESS);
        if (sq_rings == rings)
            spared++;
    }
    if (sysconf(_SC_NPROCESSORS_ONLN) >= 2)
        ck_assert_uint_gt(spared, 0);
    ck_assert_uint_eq(read32(REG_CSTS), CSTS_RDY);
    expect_refused("{\"backend\": \"ram\", \"size\": 4096, \"doorbell_poll_us\": 1001}",
                   "doorbell_poll_us");
}
END_TEST

START_TEST(mapped_doorbells)
{
    /* doorbells: mapped: BAR0's doorbell page is a sparse mmap area; a driver that stores
     * into it (as a guest does once the VMM maps it) is heard by polling, at once while
     * busy and within the idle interval (1 ms) after a rest. Trapped writes still work,
     * for a client that does not map it. */
    struct vfio_region_info *info = NULL;
    struct vfio_region_sparse_mmap_area *areas = NULL;
    uint32_t area_count = 0, *page;
    int fd = -1;

    stop_device();
    unmap_guest();
    start_device("{\"backend\": \"ram\", \"size\": \"16M\", \"doorbells\": \"mapped\"}");
    map_guest(true);
    ck_assert_int_eq(vu_client_region_info(client, VFIO_USERD_REGION_BAR0, &info, &fd), 0);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(vu_client_region_sparse_areas(info, &areas, &area_count), 0);
    ck_assert_uint_eq(area_count, 1);
    ck_assert_uint_eq(areas[0].offset, DOORBELL);
    ck_assert_uint_eq(areas[0].size, 4096);
    page =
        mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, (off_t)(info->offset + DOORBELL));
    ck_assert_ptr_ne(page, MAP_FAILED);
    free(areas);
    free(info);
    close(fd);

    enable_controller(); /* trapped admin doorbells, recorded in the page */
    create_io_queues(2);
    ck_assert_uint_eq(page[0], queues[0].tail);
    ck_assert_uint_eq(page[1], queues[0].head);
    fill_pattern(guest + DATA_OFF, 4096, 3);
    ck_assert_uint_eq(rw(1, 0x01, 1, 0, 8, DATA_OFF, 4096), SC_SUCCESS);
    /* Stores only. */
    for (int round = 0; round < 2; round++) {
        struct sqe sqe = {.opcode = 0x02, .nsid = 1, .prp1 = GUEST + DATA2_OFF};
        struct completion c;
        memset(guest + DATA2_OFF, 0, 4096);
        sqe.cdw[2] = 7;
        push(2, &sqe);
        __atomic_store_n(&page[4], queues[2].tail, __ATOMIC_RELEASE);
        for (int i = 0;
             i < 500 && guest[IOSQ_OFF + 0x2000 + 0x1000 + queues[2].head * 16 + 14] % 2 !=
                            (queues[2].phase ? 1 : 0);
             i++)
            usleep(1000);
        c = reap(2); /* also rings the head, trapped */
        ck_assert_uint_eq(c.status, SC_SUCCESS);
        ck_assert_uint_eq(c.cid, sqe.cid);
        ck_assert_int_eq(memcmp(guest + DATA_OFF, guest + DATA2_OFF, 4096), 0);
        usleep(5000); /* idle: the poller slows down, and must still hear the next one */
    }
    /* A tail beyond the queue stored in the page is fatal as a trapped one is. */
    __atomic_store_n(&page[2], IO_DEPTH + 1, __ATOMIC_RELEASE);
    for (int i = 0; i < 500 && (read32(REG_CSTS) & CSTS_CFS) == 0; i++)
        usleep(1000);
    ck_assert_uint_eq(read32(REG_CSTS) & CSTS_CFS, CSTS_CFS);
    /* A reset clears the doorbells, and new queues start at 0. */
    disable_controller();
    for (int i = 0; i < 10; i++)
        ck_assert_uint_eq(page[i], 0);
    enable_controller();
    create_io_queues(1);
    ck_assert_uint_eq(rw(1, 0x02, 1, 0, 8, DATA2_OFF, 4096), SC_SUCCESS);
    munmap(page, 4096);
}
END_TEST

START_TEST(ioeventfd_doorbells)
{
    /* doorbells: ioeventfd: an eventfd per I/O queue doorbell, as many as the host allows;
     * an eventfd carries no value, so the driver must use shadow doorbells. */
    struct vu_region_io_fd *entries = NULL;
    int fds[16];
    size_t fd_count = 0;
    uint32_t count = 0;
    uint64_t one = 1;

    stop_device();
    unmap_guest();
    start_device("{\"backend\": \"ram\", \"size\": \"16M\", \"io_queues\": 12, "
                 "\"doorbells\": \"ioeventfd\"}");
    map_guest(true);
    ck_assert_int_eq(vu_client_region_io_fds(client, VFIO_USERD_REGION_BAR0, &entries, &count, fds,
                                             16, &fd_count),
                     0);
    ck_assert_uint_eq(count, 16); /* 8 of the 12 queues: the host's limit is 16 */
    ck_assert_uint_eq(fd_count, 16);
    for (uint32_t i = 0; i < count; i++) {
        ck_assert_uint_eq(entries[i].offset, DOORBELL + 8 + 4 * i);
        ck_assert_uint_eq(entries[i].size, 4);
    }
    free(entries);
    enable_controller();
    create_io_queues(1);
    /* Without shadow doorbells the value is lost: fatal, not a guess. */
    {
        struct sqe sqe = {.opcode = 0x02, .nsid = 1, .prp1 = GUEST + DATA_OFF};
        push(1, &sqe);
        ck_assert_int_eq(write(fds[0], &one, 8), 8);
        for (int i = 0; i < 500 && (read32(REG_CSTS) & CSTS_CFS) == 0; i++)
            usleep(1000);
        ck_assert_uint_eq(read32(REG_CSTS) & CSTS_CFS, CSTS_CFS);
    }
    disable_controller();
    enable_controller();
    create_io_queues(1);
    ck_assert_uint_eq(dbbuf_config(GUEST + SHADOW_OFF, GUEST + EVENTIDX_OFF), SC_SUCCESS);
    for (int round = 0; round < 3; round++) {
        struct sqe sqe = {.opcode = 0x02, .nsid = 1, .prp1 = GUEST + DATA_OFF};
        struct completion c;
        push(1, &sqe);
        __atomic_store_n(dbbuf_slot(SHADOW_OFF, 2), queues[1].tail, __ATOMIC_RELEASE);
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        ck_assert_int_eq(write(fds[0], &one, 8), 8);
        shadow = true; /* the head goes through the shadow */
        c = reap(1);
        shadow = false;
        ck_assert_uint_eq(c.status, SC_SUCCESS);
        ck_assert_uint_eq(c.cid, sqe.cid);
    }
    ck_assert_uint_eq(read32(REG_CSTS), CSTS_RDY);
    for (size_t i = 0; i < fd_count; i++)
        close(fds[i]);
}
END_TEST

/* --- Asynchronous backend I/O ------------------------------------------------------------- */

/* A Read of 4 KiB at `lba` into guest offset `data`, pushed but not rung; its cid. */
static uint16_t push_read4k(uint32_t qid, uint32_t nsid, uint64_t lba, uint32_t data)
{
    struct sqe sqe = {.opcode = 0x02, .nsid = nsid, .prp1 = GUEST + data};

    sqe.cdw[0] = (uint32_t)lba;
    sqe.cdw[2] = 4096 / 512 - 1;
    push(qid, &sqe);
    return sqe.cid;
}

START_TEST(many_commands_in_flight_complete_out_of_order)
{
    /* A Flush of freshly written data (fdatasync, which io_uring always hands to a kernel
     * worker) and 40 reads of cached blocks behind it, rung at once: with the backend
     * asynchronous the reads, which complete inside the submission, overtake the Flush.
     * A synchronous backend would complete them strictly in order. */
    bool seen[48] = {false};
    uint16_t first_cid = 0, flush_cid;
    uint32_t count = 40;

    enable_controller();
    create_io_queues(1);
    fill_pattern(guest + DATA_OFF, 128 << 10, 21);
    for (uint32_t i = 0; i < 8; i++)
        ck_assert_uint_eq(rw(1, 0x01, 1, i * 256, 256, DATA_OFF, 128 << 10), SC_SUCCESS);
    memset(guest + DATA2_OFF, 0, count * 4096);
    next_cid = 0;
    {
        struct sqe flush = {.opcode = 0x00, .nsid = 1};
        push(1, &flush);
        flush_cid = flush.cid;
    }
    for (uint32_t i = 0; i < count; i++)
        push_read4k(1, 1, i * 8, DATA2_OFF + i * 4096);
    ring(1);
    for (uint32_t i = 0; i <= count; i++) {
        struct completion c = reap(1);
        ck_assert_uint_eq(c.status, SC_SUCCESS);
        ck_assert_uint_lt(c.cid, count + 1);
        ck_assert_msg(!seen[c.cid], "cid %u completed twice", c.cid);
        seen[c.cid] = true;
        if (i == 0)
            first_cid = c.cid;
    }
    ck_assert_msg(first_cid != flush_cid, "the Flush completed first: commands ran one by one");
    for (uint32_t i = 0; i < count; i++)
        ck_assert_int_eq(
            memcmp(guest + DATA2_OFF + i * 4096, guest + DATA_OFF + (i * 4096) % (128 << 10), 4096),
            0);
    disable_controller();
}
END_TEST

/* Starts a device whose first namespace is opened with O_DIRECT, so that reads really wait
 * for the disk and are still in flight when the test acts. */
static void start_direct_device(const char *aio)
{
    char params[512];

    stop_device();
    unmap_guest();
    snprintf(params, sizeof(params),
             "{\"serial\": \"SN0001\", \"io_queues\": 2, \"aio\": \"%s\", \"namespaces\": ["
             "{\"path\": \"%s\", \"size\": \"8M\", \"direct\": true},"
             "{\"path\": \"%s\", \"size\": \"4M\", \"block_size\": 4096}]}",
             aio, image0, image1);
    start_device(params);
    map_guest(true);
    enable_controller();
    create_io_queues(2);
}

/* Fills the data area and the I/O completion queues with a sentinel, lets the device run a
 * while, and checks that it wrote none of it. */
static void expect_guest_memory_left_alone(void)
{
    uint32_t cq_off = IOSQ_OFF + 0x1000;

    memset(guest + DATA2_OFF, 0xa5, 1 << 20);
    memset(guest + cq_off, 0xa5, 0x1000);
    for (int i = 0; i < 20; i++)
        vu_client_serve(client, 10);
    for (uint32_t i = 0; i < (1u << 20); i++)
        ck_assert_msg(guest[DATA2_OFF + i] == 0xa5, "guest memory written at +%#x after it went",
                      DATA2_OFF + i);
    for (uint32_t i = 0; i < 0x1000; i++)
        ck_assert_msg(guest[cq_off + i] == 0xa5, "a completion posted after the reset");
}

/* 16 reads of 64 KiB each, rung at once. */
static void start_reads_in_flight(void)
{
    fill_pattern(guest + DATA_OFF, 64 << 10, 5);
    for (uint32_t i = 0; i < 16; i++)
        ck_assert_uint_eq(rw(1, 0x01, 1, i * 128, 128, DATA_OFF, 64 << 10), SC_SUCCESS);
    for (uint32_t i = 0; i < 16; i++) {
        uint64_t *list = (uint64_t *)(guest + LIST_OFF + i * 128);
        struct sqe sqe = {.opcode = 0x02, .nsid = 1, .prp1 = GUEST + DATA2_OFF + i * 0x10000};
        for (uint32_t page = 1; page < 16; page++)
            list[page - 1] = GUEST + DATA2_OFF + i * 0x10000 + page * 4096;
        sqe.prp2 = GUEST + LIST_OFF + i * 128;
        sqe.cdw[0] = i * 128;
        sqe.cdw[2] = 127;
        push(1, &sqe);
    }
    ring(1);
}

START_TEST(reset_waits_for_io_in_flight)
{
    /* The reset (CC.EN to 0) abandons the reads and waits for them: once its register write
     * is answered, no read lands in guest memory and no completion is posted. */
    start_direct_device("io_uring");
    start_reads_in_flight();
    write32(REG_CC, 0);
    ck_assert_uint_eq(read32(REG_CSTS) & CSTS_RDY, 0);
    expect_guest_memory_left_alone();
    /* The controller comes back whole. */
    enable_controller();
    create_io_queues(1);
    ck_assert_uint_eq(rw(1, 0x02, 1, 128, 128, DATA2_OFF, 64 << 10), SC_SUCCESS);
    ck_assert_int_eq(memcmp(guest + DATA2_OFF, guest + DATA_OFF, 64 << 10), 0);
    /* A function reset (DEVICE_RESET) likewise. */
    start_reads_in_flight();
    ck_assert_int_eq(vu_client_device_reset(client), 0);
    expect_guest_memory_left_alone();
}
END_TEST

START_TEST(unmap_waits_for_io_in_flight)
{
    /* Reads in flight when the client takes its memory back finish before DMA_UNMAP is
     * answered: the device writes nothing there afterwards. */
    start_direct_device("io_uring");
    start_reads_in_flight();
    ck_assert_int_eq(vu_client_dma_unmap(client, GUEST, GUEST_SIZE, 0), 0);
    expect_guest_memory_left_alone();
}
END_TEST

START_TEST(unmap_elsewhere_resumes_the_queues)
{
    /* The VMM unmaps some other range while 40 reads are in flight, more than a queue has
     * slots: the device waits for the reads, and afterwards starts the entries that waited
     * for a slot by itself, without another doorbell. */
    const uint64_t extra_address = 0x200000000ull;
    int extra = memfd_create("extra", MFD_CLOEXEC);
    uint32_t count = 40;
    bool seen[40] = {false};

    ck_assert_int_ge(extra, 0);
    ck_assert_int_eq(ftruncate(extra, 1 << 20), 0);
    start_direct_device("io_uring");
    ck_assert_int_eq(vu_client_dma_map(client, extra_address, 1 << 20,
                                       VU_DMA_FLAG_READABLE | VU_DMA_FLAG_WRITABLE, extra, 0),
                     0);
    next_cid = 0;
    for (uint32_t i = 0; i < count; i++)
        push_read4k(1, 1, i * 64, DATA2_OFF + i * 4096);
    ring(1);
    ck_assert_int_eq(vu_client_dma_unmap(client, extra_address, 1 << 20, 0), 0);
    for (uint32_t i = 0; i < count; i++) {
        struct completion c = reap(1);
        ck_assert_uint_eq(c.status, SC_SUCCESS);
        ck_assert_uint_lt(c.cid, count);
        ck_assert(!seen[c.cid]);
        seen[c.cid] = true;
    }
    close(extra);
}
END_TEST

static void direct_round_trip(void)
{
    /* Aligned PRPs go straight to the file with O_DIRECT; a PRP1 at a dword offset is not
     * aligned enough for it and goes through the bounce buffer. */
    static const uint32_t offsets[] = {0, 0x200, 0x204};

    for (size_t i = 0; i < sizeof(offsets) / sizeof(offsets[0]); i++) {
        uint32_t length = 32 << 10;
        fill_pattern(guest + DATA_OFF + offsets[i], length, 40 + (uint32_t)i);
        ck_assert_uint_eq(rw(1, 0x01, 1, 8 * i, length / 512, DATA_OFF + offsets[i], length),
                          SC_SUCCESS);
        memset(guest + DATA2_OFF, 0, length + 4096);
        ck_assert_uint_eq(rw(2, 0x02, 1, 8 * i, length / 512, DATA2_OFF + offsets[i], length),
                          SC_SUCCESS);
        ck_assert_int_eq(
            memcmp(guest + DATA2_OFF + offsets[i], guest + DATA_OFF + offsets[i], length), 0);
    }
    {
        struct sqe flush = {.opcode = 0x00, .nsid = 0xffffffffu};
        ck_assert_uint_eq(run(1, &flush).status, SC_SUCCESS);
    }
}

START_TEST(direct_namespace_both_engines)
{
    uint8_t file[512];
    int fd;

    start_direct_device("io_uring");
    direct_round_trip();
    start_direct_device("sync");
    direct_round_trip();
    /* The data reached the file itself. */
    fd = open(image0, O_RDONLY | O_CLOEXEC);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(pread(fd, file, sizeof(file), 16 * 512), (ssize_t)sizeof(file));
    close(fd);
    ck_assert_int_eq(memcmp(file, guest + DATA_OFF + 0x204, sizeof(file)), 0);
    expect_refused("{\"aio\": \"threads\", \"backend\": \"ram\", \"size\": \"1M\"}", "aio");
    expect_refused("{\"direct\": true, \"backend\": \"ram\", \"size\": \"1M\"}", "direct");
}
END_TEST

START_TEST(parameters_refused)
{
    char params[512];

    expect_refused(NULL, "path");
    expect_refused("{\"colour\": 1}", "colour");
    expect_refused("{\"backend\": \"ram\"}", "size");
    expect_refused("{\"backend\": \"tape\", \"size\": 4096}", "backend");
    expect_refused("{\"backend\": \"ram\", \"size\": 1000}", "size");
    expect_refused("{\"backend\": \"ram\", \"size\": 4096, \"block_size\": 1024}", "block_size");
    expect_refused("{\"backend\": \"ram\", \"size\": 4096, \"read_only\": \"maybe\"}", "read_only");
    expect_refused("{\"backend\": \"ram\", \"size\": 4096, \"io_queues\": 0}", "io_queues");
    expect_refused("{\"backend\": \"ram\", \"size\": 4096, \"io_queues\": 129}", "io_queues");
    expect_refused("{\"backend\": \"ram\", \"size\": 4096, \"queue_depth\": 1}", "queue_depth");
    expect_refused("{\"backend\": \"ram\", \"size\": 4096, \"serial\": \"012345678901234567890\"}",
                   "serial");
    expect_refused("{\"backend\": \"ram\", \"size\": 4096, \"model\": \"\"}", "model");
    expect_refused("{\"backend\": \"ram\", \"size\": 4096, \"doorbells\": \"polled\"}",
                   "doorbells");
    expect_refused("{\"namespaces\": []}", "namespaces");
    expect_refused("{\"namespaces\": [{\"backend\": \"ram\", \"size\": 4096}], \"size\": 1}",
                   "size");
    expect_refused("{\"namespaces\": [{\"backend\": \"ram\", \"size\": 4096}, 7]}",
                   "namespaces[1]");
    expect_refused("{\"namespaces\": [{\"backend\": \"ram\", \"size\": 4096}, "
                   "{\"backend\": \"ram\", \"size\": \"1x\"}]}",
                   "namespaces[1].size");
    expect_refused("{\"namespaces\": [{\"backend\": \"ram\", \"size\": 4096}, "
                   "{\"backend\": \"ram\", \"size\": 4096, \"colour\": 2}]}",
                   "namespaces[1].colour");
    expect_refused("{\"path\": \"/nonexistent/dir/x.img\", \"size\": 4096}", "path");
    /* A size smaller than the file would lose data: refused. (image0 is 8 MiB.) */
    snprintf(params, sizeof(params), "{\"path\": \"%s\", \"size\": \"4M\"}", image0);
    stop_device(); /* releases the image's lock */
    expect_refused(params, "size");
    /* A file in use by another device. */
    snprintf(params, sizeof(params), "{\"path\": \"%s\"}", image0);
    start_device(params);
    expect_refused(params, "path");
    /* An empty file with no size. */
    snprintf(params, sizeof(params), "{\"path\": \"%s/empty.img\"}", scratch);
    expect_refused(params, "path");
    snprintf(params, sizeof(params), "%s/empty.img", scratch);
    unlink(params);
}
END_TEST

static Suite *nvme_suite(void)
{
    Suite *suite = suite_create("nvme");
    struct {
        const char *name;
        const TTest *test;
    } cases[] = {
        {"registers", pci_identity_and_registers},
        {"admin", identify_commands},
        {"admin", identifiers_stable},
        {"admin", features},
        {"admin", log_pages},
        {"admin", queue_creation_checks},
        {"admin", async_events_held},
        {"io", write_read_verify},
        {"io", chained_prp_list},
        {"io", io_errors},
        {"io", flush_zeroes_deallocate},
        {"io", zeroes_and_deallocate_both_engines},
        {"io", zeroes_written_where_fallocate_cannot},
        {"io", read_only_namespace},
        {"io", ram_namespace},
        {"io", message_dma},
        {"hostile", hostile_doorbells},
        {"doorbells", doorbell_buffer_config},
        {"doorbells", shadow_doorbells_spare_bar0_writes},
        {"doorbells", shadow_doorbells_polled},
        {"doorbells", mapped_doorbells},
        {"doorbells", ioeventfd_doorbells},
        {"queues", queue_full_and_wrap},
        {"interrupts", msix_interrupts},
        {"interrupts", intx_interrupts},
        {"reset", reset_and_shutdown},
        {"persistence", persistence_across_restart},
        {"parameters", parameters_refused},
        {"async", many_commands_in_flight_complete_out_of_order},
        {"async", reset_waits_for_io_in_flight},
        {"async", unmap_waits_for_io_in_flight},
        {"async", unmap_elsewhere_resumes_the_queues},
        {"async", direct_namespace_both_engines},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        TCase *test_case = tcase_create(cases[i].name);
        tcase_add_checked_fixture(test_case, setup, teardown);
        tcase_set_timeout(test_case, 120);
        tcase_add_test(test_case, cases[i].test);
        suite_add_tcase(suite, test_case);
    }
    return suite;
}

int main(void)
{
    const char *build = getenv("VFIO_USERD_BUILD_DIR");
    char path[4096], message[512];
    int status;

    snprintf(path, sizeof(path), "%s/plugins/nvme.so", build != NULL ? build : "build/plain");
    if (vu_plugin_load(path, &nvme, message, sizeof(message)) < 0) {
        fprintf(stderr, "test_nvme: %s: %s\n", path, message);
        return EXIT_FAILURE;
    }
    status = test_run_suite(nvme_suite());
    vu_plugin_unload(&nvme);
    return status;
}
