/*
 * The testdev reference plugin end to end: the built testdev.so is loaded through the core's
 * plugin loader, served by the real endpoint, and driven by the in-tree client over a UNIX
 * socket, exactly as a VMM would. Every expectation below comes from the device's datasheet,
 * vfio-userd-testdev(7), not from the plugin's sources: the register offsets and bit fields
 * are spelled out here again on purpose, so that the page and the plugin cannot drift apart
 * without this test noticing.
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
#include <unistd.h>
#include <linux/pci_regs.h>

#include "client.h"
#include "device.h"
#include "endpoint.h"
#include "plugin_loader.h"
#include "test_server.h"
#include "test_runner.h"

/* --- The datasheet ---------------------------------------------------------------------- */

/* BAR0 registers. */
enum td_register {
    TD_MAGIC = 0x000,
    TD_VERSION = 0x004,
    TD_FEATURES = 0x008,
    TD_RESET = 0x00c,
    TD_SCRATCH0 = 0x010,
    TD_SCRATCH1 = 0x014,
    TD_SCRATCH2 = 0x018,
    TD_SCRATCH3 = 0x01c,
    TD_SCRATCH64 = 0x020,
    TD_RAM_SIZE = 0x028,
    TD_RAM_TRAP_READS = 0x030,
    TD_RAM_TRAP_WRITES = 0x034,
    TD_MSIX_VECTORS = 0x038,
    TD_MSI_VECTORS = 0x03c,
    TD_DOORBELL = 0x040,
    TD_INT_STATUS = 0x044,
    TD_INT_ACK = 0x048,
    TD_INT_COUNT = 0x04c,
    TD_INT_LAST_VECTOR = 0x050,
    TD_INT_LAST_ERROR = 0x054,
    TD_INT_FAIL_COUNT = 0x058,
    TD_DMA_SOURCE = 0x080,
    TD_DMA_DESTINATION = 0x088,
    TD_DMA_LENGTH = 0x090,
    TD_DMA_PATTERN = 0x094,
    TD_DMA_OPERATION = 0x098,
    TD_DMA_CONTROL = 0x09c,
    TD_DMA_STATUS = 0x0a0,
    TD_DMA_CHECKSUM = 0x0a4,
    TD_DMA_ERRNO = 0x0a8,
    TD_DMA_MAX_LENGTH = 0x0ac,
    TD_DMA_DONE_COUNT = 0x0b0,
    TD_DMA_ERROR_COUNT = 0x0b4,
    TD_MESSAGE_COUNT = 0x200, /* + 8 * command number, 32 counters */
};

#define TD_MAGIC_VALUE   0x54444556u
#define TD_VERSION_VALUE 0x00010000u
#define TD_DMA_MAX       0x00100000u
#define TD_PAGE          4096u

#define TD_FEATURE_DMA           (1u << 0)
#define TD_FEATURE_RAM           (1u << 1)
#define TD_FEATURE_MSI           (1u << 2)
#define TD_FEATURE_MSIX          (1u << 3)
#define TD_FEATURE_MESSAGE_COUNT (1u << 4)
#define TD_FEATURES_DEFAULT                                                                        \
    (TD_FEATURE_DMA | TD_FEATURE_RAM | TD_FEATURE_MSI | TD_FEATURE_MSIX | TD_FEATURE_MESSAGE_COUNT)

#define TD_INT_DOORBELL (1u << 0)
#define TD_INT_DMA      (1u << 1)

enum td_dma_operation { TD_COPY = 0, TD_FILL = 1, TD_CHECKSUM = 2 };

#define TD_CONTROL_GO         (1u << 0)
#define TD_CONTROL_IRQ_ENABLE (1u << 1)
#define TD_CONTROL_VECTOR(v)  ((uint32_t)(v) << 16)

enum td_dma_state { TD_IDLE = 0, TD_BUSY = 1, TD_DONE = 2, TD_ERROR = 3 };
#define TD_STATUS_REJECTED (1u << 4)
#define TD_STATUS_MESSAGES (1u << 5)

enum td_dma_error {
    TD_ERROR_OPERATION = 1,
    TD_ERROR_LENGTH = 2,
    TD_ERROR_WRAP = 3,
    TD_ERROR_UNMAPPED = 4,
    TD_ERROR_READ_ONLY = 5,
    TD_ERROR_IO = 6,
    TD_ERROR_BUSY = 7,
    TD_ERROR_BUS_MASTER = 8,
};

/* DMA_STATUS of an operation that ended in ERROR with error code `code`. */
#define TD_STATUS_ERROR(code) (TD_ERROR | (uint32_t)(code) << 8)

/* Client addresses of the guest memory the DMA tests map. */
#define GUEST_RAM      0x100000000ull
#define GUEST_SIZE     (2u << 20)
#define MESSAGE_RAM    0x200000000ull
#define SECOND_RAM     0x300000000ull
#define READ_ONLY_RAM  0x20000000ull
#define WRITE_ONLY_RAM 0x30000000ull
#define READ_ONLY_MSG  0x40000000ull
#define UNSERVED_RAM   0x50000000ull
#define NOWHERE        0x90000000ull
#define SMALL_MAP_SIZE 0x10000u

static struct vu_plugin_module testdev;
static struct test_server server;
static bool server_running;
static struct vu_client *client;
static int fds_before;

/* --- Fixture and connection helpers ------------------------------------------------------- */

static void connect_client(const struct vu_client_options *options)
{
    ck_assert_int_eq(vu_client_connect(server.socket_path, options, &client), 0);
}

static void start_device(const char *params)
{
    int ret = test_server_start(&server, testdev.plugin, params);

    ck_assert_msg(ret == 0, "testdev refused %s: %s (%s)", params ? params : "no parameters",
                  server.error.message, server.error.field);
    server_running = true;
    connect_client(NULL);
}

static void stop_device(void)
{
    vu_client_close(client);
    client = NULL;
    if (server_running)
        test_server_stop(&server);
    server_running = false;
}

/* A fresh device with other parameters. */
static void restart_device(const char *params)
{
    stop_device();
    start_device(params);
}

static void setup(void)
{
    fds_before = test_count_open_fds();
    start_device(NULL);
}

static void teardown(void)
{
    stop_device();
    ck_assert_int_eq(test_count_open_fds(), fds_before);
}

static void read_connected(struct test_server *served, void *argument)
{
    *(bool *)argument = vu_endpoint_connected(served->endpoint);
}

/* Waits until the server has dropped the client (and run what follows a disconnect). */
static void wait_disconnected(void)
{
    bool connected = true;

    for (int i = 0; i < 1000 && connected; i++) {
        test_server_call(&server, read_connected, &connected);
        if (connected)
            usleep(2000);
    }
    ck_assert(!connected);
}

/* Leaves like QEMU at power-off (the socket just closes), then connects again. */
static void reconnect(const struct vu_client_options *options)
{
    vu_client_close(client);
    client = NULL;
    wait_disconnected();
    connect_client(options);
}

/* --- Register and configuration space access --------------------------------------------- */

static int bar0_access(uint32_t offset, void *data, uint32_t count, bool is_write)
{
    return is_write ? vu_client_region_write(client, VFIO_USERD_REGION_BAR0, offset, data, count)
                    : vu_client_region_read(client, VFIO_USERD_REGION_BAR0, offset, data, count);
}

static uint32_t read32(uint32_t offset)
{
    uint32_t value = 0xdeadbeef;

    ck_assert_int_eq(bar0_access(offset, &value, 4, false), 0);
    return value;
}

static uint64_t read64(uint32_t offset)
{
    uint64_t value = 0xdeadbeefdeadbeefull;

    ck_assert_int_eq(bar0_access(offset, &value, 8, false), 0);
    return value;
}

static void write32(uint32_t offset, uint32_t value)
{
    ck_assert_int_eq(bar0_access(offset, &value, 4, true), 0);
}

static void write64(uint32_t offset, uint64_t value)
{
    ck_assert_int_eq(bar0_access(offset, &value, 8, true), 0);
}

static void write8(uint32_t offset, uint8_t value)
{
    ck_assert_int_eq(bar0_access(offset, &value, 1, true), 0);
}

static uint64_t message_count(uint32_t command)
{
    return read64(TD_MESSAGE_COUNT + 8 * command);
}

static void config_read(uint32_t offset, void *data, uint32_t count)
{
    ck_assert_int_eq(vu_client_region_read(client, VFIO_USERD_REGION_CONFIG, offset, data, count),
                     0);
}

static void config_write(uint32_t offset, const void *data, uint32_t count)
{
    ck_assert_int_eq(vu_client_region_write(client, VFIO_USERD_REGION_CONFIG, offset, data, count),
                     0);
}

static uint16_t config_read16(uint32_t offset)
{
    uint16_t value;

    config_read(offset, &value, 2);
    return value;
}

static uint32_t config_read32(uint32_t offset)
{
    uint32_t value;

    config_read(offset, &value, 4);
    return value;
}

static void config_write16(uint32_t offset, uint16_t value)
{
    config_write(offset, &value, 2);
}

static void config_write32(uint32_t offset, uint32_t value)
{
    config_write(offset, &value, 4);
}

static void set_command(uint16_t command)
{
    config_write16(PCI_COMMAND, command);
}

static void enable_bus_master(void)
{
    set_command(PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
}

static uint16_t le16(const uint8_t *bytes)
{
    return (uint16_t)(bytes[0] | bytes[1] << 8);
}

static uint32_t le32(const uint8_t *bytes)
{
    return (uint32_t)bytes[0] | (uint32_t)bytes[1] << 8 | (uint32_t)bytes[2] << 16 |
           (uint32_t)bytes[3] << 24;
}

/* Offset of capability `id` found by walking the list, or 0; each may appear once. */
static uint32_t capability_offset(uint8_t id)
{
    uint8_t config[256];
    uint32_t found = 0;
    int hops = 0;

    config_read(0, config, sizeof(config));
    ck_assert(config[0x06] & 0x10); /* Status: capability list */
    for (uint8_t position = config[0x34]; position != 0; position = config[position + 1]) {
        ck_assert_uint_ge(position, 0x40);
        ck_assert_uint_eq(position % 4, 0);
        ck_assert_int_lt(++hops, 48);
        if (config[position] == id) {
            ck_assert_uint_eq(found, 0);
            found = position;
        }
    }
    return found;
}

/* What a BAR register reads after the all-ones write of BAR sizing. */
static uint32_t bar_sizing(uint32_t offset)
{
    config_write32(offset, 0xffffffff);
    return config_read32(offset);
}

static uint64_t region_size(uint32_t index, uint32_t *flags)
{
    struct vfio_region_info *info = NULL;
    uint64_t size;
    int fd = -1;

    ck_assert_int_eq(vu_client_region_info(client, index, &info, &fd), 0);
    if (fd >= 0)
        close(fd);
    size = info->size;
    if (flags != NULL)
        *flags = info->flags;
    free(info);
    return size;
}

static uint32_t irq_count(uint32_t index)
{
    struct vfio_irq_info info;

    ck_assert_int_eq(vu_client_irq_info(client, index, &info), 0);
    return info.count;
}

/* --- Interrupt helpers ------------------------------------------------------------------- */

static void open_eventfds(int *fds, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        fds[i] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        ck_assert_int_ge(fds[i], 0);
    }
}

static void close_eventfds(int *fds, size_t count)
{
    for (size_t i = 0; i < count; i++)
        close(fds[i]);
}

/* How many times the eventfd was signalled since last asked (0: not at all). */
static uint64_t eventfd_take(int fd)
{
    struct pollfd pollfd = {.fd = fd, .events = POLLIN};
    uint64_t value = 0;

    if (poll(&pollfd, 1, 0) != 1)
        return 0;
    ck_assert_int_eq(read(fd, &value, sizeof(value)), sizeof(value));
    return value;
}

/* Which of `count` eventfds fired: a bit per eventfd. */
static uint64_t fired_mask(const int *fds, size_t count)
{
    uint64_t mask = 0;

    for (size_t i = 0; i < count; i++)
        if (eventfd_take(fds[i]) != 0)
            mask |= 1ull << i;
    return mask;
}

static void arm_eventfds(uint32_t irq, uint32_t start, uint32_t count, const int *fds)
{
    ck_assert_int_eq(vu_client_set_irqs(client, irq,
                                        VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER,
                                        start, count, fds, NULL),
                     0);
}

static void unmask_intx(void)
{
    ck_assert_int_eq(vu_client_set_irqs(client, VFIO_PCI_INTX_IRQ_INDEX,
                                        VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_UNMASK, 0, 1,
                                        NULL, NULL),
                     0);
}

/* SET_IRQS MASK or UNMASK of one vector. */
static void mask_vector(uint32_t irq, uint32_t vector, bool masked)
{
    ck_assert_int_eq(
        vu_client_set_irqs(client, irq,
                           VFIO_IRQ_SET_DATA_NONE |
                               (masked ? VFIO_IRQ_SET_ACTION_MASK : VFIO_IRQ_SET_ACTION_UNMASK),
                           vector, 1, NULL, NULL),
        0);
}

/* The first quadword of the PBA, at BAR4 + 0x1000 with the default 16 vectors. */
static uint64_t pba_read(void)
{
    uint64_t pba = ~0ull;

    ck_assert_int_eq(vu_client_region_read(client, VFIO_USERD_REGION_BAR4, 0x1000, &pba, 8), 0);
    return pba;
}

/* Writes one dword of an MSI-X table entry, as a client that forwards table writes does. */
static void msix_entry_write(uint32_t vector, uint32_t field, uint32_t value)
{
    ck_assert_int_eq(
        vu_client_region_write(client, VFIO_USERD_REGION_BAR4, vector * 16 + field, &value, 4), 0);
}

/* Writes DOORBELL and returns INT_LAST_ERROR, after checking INT_LAST_VECTOR. */
static uint32_t ring(uint32_t vector)
{
    write32(TD_DOORBELL, vector);
    ck_assert_uint_eq(read32(TD_INT_LAST_VECTOR), vector);
    return read32(TD_INT_LAST_ERROR);
}

/* Enables MSI-X in its capability and unmasks `count` table entries from `first`, as a
 * client that forwards the guest's table writes. */
static void enable_msix(uint32_t first, uint32_t count)
{
    uint32_t msix = capability_offset(PCI_CAP_ID_MSIX);

    ck_assert_uint_ne(msix, 0);
    config_write16(msix + PCI_MSIX_FLAGS, PCI_MSIX_FLAGS_ENABLE);
    for (uint32_t vector = first; vector < first + count; vector++)
        msix_entry_write(vector, PCI_MSIX_ENTRY_VECTOR_CTRL, 0);
}

/* Enables MSI with 2^log2_vectors vectors (Multiple Message Enable). */
static void enable_msi(uint32_t log2_vectors)
{
    uint32_t msi = capability_offset(PCI_CAP_ID_MSI);
    uint16_t control;

    ck_assert_uint_ne(msi, 0);
    control = config_read16(msi + PCI_MSI_FLAGS);
    control =
        (uint16_t)((control & ~PCI_MSI_FLAGS_QSIZE) | PCI_MSI_FLAGS_ENABLE | log2_vectors << 4);
    config_write16(msi + PCI_MSI_FLAGS, control);
}

/* --- DMA helpers ------------------------------------------------------------------------- */

struct guest_memory {
    int fd;
    uint8_t *bytes;
    size_t size;
};

static void guest_memory_open(struct guest_memory *memory, size_t size)
{
    memory->size = size;
    memory->fd = memfd_create("guest", MFD_CLOEXEC);
    ck_assert_int_ge(memory->fd, 0);
    ck_assert_int_eq(ftruncate(memory->fd, (off_t)size), 0);
    memory->bytes = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, memory->fd, 0);
    ck_assert_ptr_ne(memory->bytes, MAP_FAILED);
}

static void guest_memory_close(struct guest_memory *memory)
{
    munmap(memory->bytes, memory->size);
    close(memory->fd);
}

/* Deterministic bytes that differ at every offset, so a misplaced copy shows. */
static void fill_random(uint8_t *bytes, size_t length, uint32_t seed)
{
    uint32_t state = seed | 1;

    for (size_t i = 0; i < length; i++) {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        bytes[i] = (uint8_t)state;
    }
}

/* zlib's crc32(), written the slow way as the page defines it. */
static uint32_t reference_crc32(const uint8_t *bytes, size_t length)
{
    uint32_t crc = 0xffffffff;

    for (size_t i = 0; i < length; i++) {
        crc ^= bytes[i];
        for (int bit = 0; bit < 8; bit++)
            crc = (crc >> 1) ^ (0xedb88320u & (0u - (crc & 1)));
    }
    return ~crc;
}

struct dma_job {
    uint32_t operation;
    uint64_t source;
    uint64_t destination;
    uint32_t length;
    uint32_t pattern;
    uint32_t control; /* IRQ_ENABLE and VECTOR; GO is added */
};

static void dma_program(const struct dma_job *job)
{
    write64(TD_DMA_SOURCE, job->source);
    write64(TD_DMA_DESTINATION, job->destination);
    write32(TD_DMA_LENGTH, job->length);
    write32(TD_DMA_PATTERN, job->pattern);
    write32(TD_DMA_OPERATION, job->operation);
}

/* Polls DMA_STATUS until it leaves BUSY, serving DMA_READ/DMA_WRITE meanwhile. */
static uint32_t dma_wait(void)
{
    uint32_t status = read32(TD_DMA_STATUS);

    for (int i = 0; i < 2000 && (status & 0xf) == TD_BUSY; i++) {
        ck_assert_int_ge(vu_client_serve(client, 5), 0);
        status = read32(TD_DMA_STATUS);
    }
    return status;
}

static uint32_t dma_run(const struct dma_job *job)
{
    dma_program(job);
    write32(TD_DMA_CONTROL, job->control | TD_CONTROL_GO);
    return dma_wait();
}

/* An operation on fd-mapped memory ends within the write that set GO. */
static uint32_t dma_run_direct(const struct dma_job *job)
{
    dma_program(job);
    write32(TD_DMA_CONTROL, job->control | TD_CONTROL_GO);
    return read32(TD_DMA_STATUS);
}

/* --- Identity and parameters ------------------------------------------------------------- */

struct identity {
    uint16_t vendor_id, device_id, subsystem_vendor_id, subsystem_id;
    uint32_t class_code;
    uint8_t revision;
};

static const struct identity default_identity = {0x1234, 0x7464, 0x1234, 0x0001, 0xff0000, 0x01};

static void assert_identity(const struct identity *expected)
{
    uint8_t config[64];

    config_read(0, config, sizeof(config));
    ck_assert_uint_eq(le16(config + 0x00), expected->vendor_id);
    ck_assert_uint_eq(le16(config + 0x02), expected->device_id);
    ck_assert_uint_eq(config[0x08], expected->revision);
    ck_assert_uint_eq(le32(config + 0x08) >> 8, expected->class_code);
    ck_assert_uint_eq(config[0x0e] & 0x7f, 0); /* type 0 header */
    ck_assert_uint_eq(le16(config + 0x2c), expected->subsystem_vendor_id);
    ck_assert_uint_eq(le16(config + 0x2e), expected->subsystem_id);
    ck_assert_uint_eq(config[0x3d], 1); /* INTA# */
}

START_TEST(identity_defaults)
{
    uint32_t msi, msix, express, vendor, flags;
    uint8_t body[11];

    assert_identity(&default_identity);

    ck_assert_uint_ne(capability_offset(PCI_CAP_ID_PM), 0);
    msi = capability_offset(PCI_CAP_ID_MSI);
    ck_assert_uint_ne(msi, 0);
    /* 4 vectors offered, 64-bit, per-vector masking, disabled. */
    ck_assert_uint_eq(config_read16(msi + PCI_MSI_FLAGS),
                      2u << 1 | PCI_MSI_FLAGS_64BIT | PCI_MSI_FLAGS_MASKBIT);
    msix = capability_offset(PCI_CAP_ID_MSIX);
    ck_assert_uint_ne(msix, 0);
    ck_assert_uint_eq(config_read16(msix + PCI_MSIX_FLAGS), 16 - 1);
    ck_assert_uint_eq(config_read32(msix + PCI_MSIX_TABLE), 0x0000 | 4); /* table at BAR4 + 0 */
    ck_assert_uint_eq(config_read32(msix + PCI_MSIX_PBA), 0x1000 | 4);   /* PBA at BAR4 + 0x1000 */
    express = capability_offset(PCI_CAP_ID_EXP);
    ck_assert_uint_ne(express, 0);
    ck_assert_uint_eq(config_read16(express + PCI_EXP_FLAGS) & PCI_EXP_FLAGS_TYPE,
                      PCI_EXP_TYPE_ENDPOINT);
    vendor = capability_offset(PCI_CAP_ID_VNDR);
    ck_assert_uint_ne(vendor, 0);
    config_read(vendor, body, sizeof(body));
    ck_assert_uint_eq(body[2], 11);
    ck_assert_uint_eq(le32(body + 3), TD_MAGIC_VALUE);
    ck_assert_uint_eq(le32(body + 7), TD_VERSION_VALUE);

    /* BARs as the table describes them, seen through sizing and region info. */
    ck_assert_uint_eq(bar_sizing(0x10), 0xfffff000);             /* 4 KiB, 32-bit */
    ck_assert_uint_eq(bar_sizing(0x14), 0);                      /* BAR1 absent */
    ck_assert_uint_eq(bar_sizing(0x18), 0xfff00000 | 0x8 | 0x4); /* 1 MiB, prefetch, 64 */
    ck_assert_uint_eq(bar_sizing(0x1c), 0xffffffff);             /* its upper half */
    ck_assert_uint_eq(bar_sizing(0x20), 0xffffe000);             /* 8 KiB, 32-bit */
    ck_assert_uint_eq(bar_sizing(0x24), 0);                      /* BAR5 absent */
    ck_assert_uint_eq(bar_sizing(0x30) & 0xfffff801, 0);         /* no ROM */
    ck_assert_uint_eq(region_size(VFIO_PCI_BAR0_REGION_INDEX, &flags), 4096);
    ck_assert_uint_eq(flags, VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE);
    ck_assert_uint_eq(region_size(VFIO_PCI_BAR1_REGION_INDEX, NULL), 0);
    ck_assert_uint_eq(region_size(VFIO_PCI_BAR2_REGION_INDEX, NULL), 1u << 20);
    ck_assert_uint_eq(region_size(VFIO_PCI_BAR3_REGION_INDEX, NULL), 0);
    ck_assert_uint_eq(region_size(VFIO_PCI_BAR4_REGION_INDEX, NULL), 8192);
    ck_assert_uint_eq(region_size(VFIO_PCI_BAR5_REGION_INDEX, NULL), 0);
    ck_assert_uint_eq(region_size(VFIO_PCI_ROM_REGION_INDEX, NULL), 0);
    ck_assert_uint_eq(region_size(VFIO_PCI_CONFIG_REGION_INDEX, NULL), 4096); /* Express */

    ck_assert_uint_eq(irq_count(VFIO_PCI_INTX_IRQ_INDEX), 1);
    ck_assert_uint_eq(irq_count(VFIO_PCI_MSI_IRQ_INDEX), 4);
    ck_assert_uint_eq(irq_count(VFIO_PCI_MSIX_IRQ_INDEX), 16);

    ck_assert_uint_eq(read32(TD_FEATURES), TD_FEATURES_DEFAULT);
    ck_assert_uint_eq(read64(TD_RAM_SIZE), 1u << 20);
    ck_assert_uint_eq(read32(TD_MSIX_VECTORS), 16);
    ck_assert_uint_eq(read32(TD_MSI_VECTORS), 4);
}
END_TEST

START_TEST(identity_parameters)
{
    const struct {
        const char *params;
        struct identity expected;
    } cases[] = {
        {"{\"vendor_id\": \"0x1af4\"}", {0x1af4, 0x7464, 0x1234, 0x0001, 0xff0000, 0x01}},
        {"{\"vendor_id\": 1}", {0x0001, 0x7464, 0x1234, 0x0001, 0xff0000, 0x01}},
        {"{\"vendor_id\": 65534}", {0xfffe, 0x7464, 0x1234, 0x0001, 0xff0000, 0x01}},
        {"{\"device_id\": 4096}", {0x1234, 0x1000, 0x1234, 0x0001, 0xff0000, 0x01}},
        {"{\"device_id\": \"0xffff\"}", {0x1234, 0xffff, 0x1234, 0x0001, 0xff0000, 0x01}},
        {"{\"subsystem_vendor_id\": \"0xabcd\"}", {0x1234, 0x7464, 0xabcd, 0x0001, 0xff0000, 0x01}},
        {"{\"subsystem_id\": 0}", {0x1234, 0x7464, 0x1234, 0x0000, 0xff0000, 0x01}},
        {"{\"subsystem_id\": \"65535\"}", {0x1234, 0x7464, 0x1234, 0xffff, 0xff0000, 0x01}},
        {"{\"class_code\": \"0x010802\"}", {0x1234, 0x7464, 0x1234, 0x0001, 0x010802, 0x01}},
        {"{\"class_code\": 0}", {0x1234, 0x7464, 0x1234, 0x0001, 0x000000, 0x01}},
        {"{\"revision\": 255}", {0x1234, 0x7464, 0x1234, 0x0001, 0xff0000, 0xff}},
        {"{\"revision\": \"0\"}", {0x1234, 0x7464, 0x1234, 0x0001, 0xff0000, 0x00}},
        {"{\"vendor_id\": 6900, \"device_id\": 4097, \"subsystem_vendor_id\": 6900,"
         " \"subsystem_id\": 2, \"class_code\": 131072, \"revision\": 16}",
         {0x1af4, 0x1001, 0x1af4, 0x0002, 0x020000, 0x10}},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        restart_device(cases[i].params);
        assert_identity(&cases[i].expected);
        /* Identity parameters change nothing else. */
        ck_assert_uint_eq(read32(TD_MAGIC), TD_MAGIC_VALUE);
        ck_assert_uint_eq(read32(TD_FEATURES), TD_FEATURES_DEFAULT);
    }
}
END_TEST

START_TEST(ram_size_parameter)
{
    const struct {
        const char *params;
        uint64_t size;
    } cases[] = {
        {"{\"ram_size\": \"8K\"}", 8192},
        {"{\"ram_size\": 65536}", 65536},
        {"{\"ram_size\": \"0x400000\"}", 4u << 20},
        {"{\"ram_size\": \"1G\"}", 1u << 30},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct vfio_region_sparse_mmap_area *areas = NULL;
        struct vfio_region_info *info = NULL;
        uint32_t area_count = 0;
        int fd = -1;

        restart_device(cases[i].params);
        ck_assert_uint_eq(read64(TD_RAM_SIZE), cases[i].size);
        ck_assert_uint_eq(read32(TD_RAM_SIZE + 4), 0);
        ck_assert_uint_eq(bar_sizing(0x18), (uint32_t)(0u - cases[i].size) | 0xc);
        ck_assert_int_eq(vu_client_region_info(client, VFIO_PCI_BAR2_REGION_INDEX, &info, &fd), 0);
        ck_assert_uint_eq(info->size, cases[i].size);
        ck_assert_int_eq(vu_client_region_sparse_areas(info, &areas, &area_count), 0);
        ck_assert_uint_eq(area_count, 1);
        ck_assert_uint_eq(areas[0].offset, TD_PAGE);
        ck_assert_uint_eq(areas[0].size, cases[i].size - TD_PAGE);
        free(areas);
        free(info);
        close(fd);
    }
}
END_TEST

/* MSI-X vectors set BAR4's layout: PBA at msix_vectors * 16 rounded up to a page, BAR4 the
 * next power of two holding the PBA's page. */
START_TEST(msix_vectors_parameter)
{
    const struct {
        const char *params;
        uint32_t vectors, pba_offset, bar4_size;
    } cases[] = {
        {"{\"msix_vectors\": 1}", 1, 0x1000, 0x2000},
        {"{\"msix_vectors\": 256}", 256, 0x1000, 0x2000},
        {"{\"msix_vectors\": 257}", 257, 0x2000, 0x4000},
        {"{\"msix_vectors\": \"2K\"}", 2048, 0x8000, 0x10000},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint32_t last = cases[i].vectors - 1;
        uint32_t msix;
        uint64_t pba;
        int fd;

        restart_device(cases[i].params);
        msix = capability_offset(PCI_CAP_ID_MSIX);
        ck_assert_uint_eq(config_read16(msix + PCI_MSIX_FLAGS) & PCI_MSIX_FLAGS_QSIZE, last);
        ck_assert_uint_eq(config_read32(msix + PCI_MSIX_PBA), cases[i].pba_offset | 4);
        ck_assert_uint_eq(region_size(VFIO_PCI_BAR4_REGION_INDEX, NULL), cases[i].bar4_size);
        ck_assert_uint_eq(irq_count(VFIO_PCI_MSIX_IRQ_INDEX), cases[i].vectors);
        ck_assert_uint_eq(read32(TD_MSIX_VECTORS), cases[i].vectors);

        /* The last vector is the highest DOORBELL accepts. */
        open_eventfds(&fd, 1);
        arm_eventfds(VFIO_PCI_MSIX_IRQ_INDEX, last, 1, &fd);
        enable_msix(last, 1);
        ck_assert_uint_eq(ring(last), 0);
        ck_assert_uint_eq(eventfd_take(fd), 1);
        ck_assert_uint_eq(ring(last + 1), EINVAL);
        ck_assert_uint_eq(eventfd_take(fd), 0);
        /* Masked again, the last vector's PBA bit is the last one. */
        uint32_t masked = 1;
        ck_assert_int_eq(
            vu_client_region_write(client, VFIO_USERD_REGION_BAR4, last * 16 + 12, &masked, 4), 0);
        ck_assert_uint_eq(ring(last), 0);
        ck_assert_int_eq(vu_client_region_read(client, VFIO_USERD_REGION_BAR4,
                                               cases[i].pba_offset + last / 64 * 8, &pba, 8),
                         0);
        ck_assert_uint_eq(pba, 1ull << (last % 64));
        close_eventfds(&fd, 1);
    }
}
END_TEST

START_TEST(msi_vectors_parameter)
{
    const struct {
        const char *params;
        uint32_t vectors;
    } cases[] = {
        {"{\"msi_vectors\": 1}", 1},   {"{\"msi_vectors\": 2}", 2},   {"{\"msi_vectors\": 8}", 8},
        {"{\"msi_vectors\": 16}", 16}, {"{\"msi_vectors\": 32}", 32},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint32_t log2 = (uint32_t)__builtin_ctz(cases[i].vectors);
        uint32_t msi;

        restart_device(cases[i].params);
        msi = capability_offset(PCI_CAP_ID_MSI);
        ck_assert_uint_eq((config_read16(msi + PCI_MSI_FLAGS) >> 1) & 7, log2);
        ck_assert_uint_eq(irq_count(VFIO_PCI_MSI_IRQ_INDEX), cases[i].vectors);
        ck_assert_uint_eq(read32(TD_MSI_VECTORS), cases[i].vectors);
        ck_assert_uint_eq(read32(TD_FEATURES), TD_FEATURES_DEFAULT);
        enable_msi(log2);
        ck_assert_uint_eq(ring(cases[i].vectors - 1), 0);
        ck_assert_uint_eq(ring(cases[i].vectors), EINVAL);
    }

    /* 0: no MSI capability and the FEATURES bit clear; with INTx disabled the raise is still
     * made on INTA#, held until Interrupt Disable is cleared. */
    restart_device("{\"msi_vectors\": 0}");
    ck_assert_uint_eq(capability_offset(PCI_CAP_ID_MSI), 0);
    ck_assert_uint_ne(capability_offset(PCI_CAP_ID_MSIX), 0);
    ck_assert_uint_eq(irq_count(VFIO_PCI_MSI_IRQ_INDEX), 0);
    ck_assert_uint_eq(read32(TD_MSI_VECTORS), 0);
    ck_assert_uint_eq(read32(TD_FEATURES), TD_FEATURES_DEFAULT & ~TD_FEATURE_MSI);
    set_command(PCI_COMMAND_INTX_DISABLE);
    ck_assert_uint_eq(ring(0), 0);
    ck_assert_uint_eq(config_read16(PCI_STATUS) & PCI_STATUS_INTERRUPT, PCI_STATUS_INTERRUPT);
}
END_TEST

START_TEST(bad_parameters_refused)
{
    const struct {
        const char *params;
        const char *field;
        int error;
    } cases[] = {
        {"{\"vendor_id\": 0}", "vendor_id", -ERANGE},
        {"{\"vendor_id\": 65535}", "vendor_id", -ERANGE},
        {"{\"vendor_id\": \"0x10000\"}", "vendor_id", -ERANGE},
        {"{\"vendor_id\": -1}", "vendor_id", -ERANGE},
        {"{\"device_id\": 65536}", "device_id", -ERANGE},
        {"{\"device_id\": \"many\"}", "device_id", -EINVAL},
        {"{\"subsystem_vendor_id\": 70000}", "subsystem_vendor_id", -ERANGE},
        {"{\"subsystem_id\": \"64K\"}", "subsystem_id", -ERANGE},
        {"{\"class_code\": 16777216}", "class_code", -ERANGE},
        {"{\"class_code\": 1.5}", "class_code", -EINVAL},
        {"{\"revision\": 256}", "revision", -ERANGE},
        {"{\"revision\": true}", "revision", -EINVAL},
        {"{\"ram_size\": \"4K\"}", "ram_size", -ERANGE},
        {"{\"ram_size\": \"2G\"}", "ram_size", -ERANGE},
        {"{\"ram_size\": 12288}", "ram_size", -EINVAL},
        {"{\"ram_size\": \"1X\"}", "ram_size", -EINVAL},
        {"{\"ram_size\": \"\"}", "ram_size", -EINVAL},
        {"{\"msix_vectors\": 0}", "msix_vectors", -ERANGE},
        {"{\"msix_vectors\": 2049}", "msix_vectors", -ERANGE},
        {"{\"msi_vectors\": 3}", "msi_vectors", -EINVAL},
        {"{\"msi_vectors\": 64}", "msi_vectors", -ERANGE},
        {"{\"msi_vectors\": 12}", "msi_vectors", -EINVAL},
        {"{\"ram\": \"1M\"}", "ram", -EINVAL},
        {"{\"msix_vectors\": 4, \"colour\": \"blue\"}", "colour", -EINVAL},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct vfio_userd_error error;
        struct vu_device *device = NULL;
        json_t *params = json_loads(cases[i].params, 0, NULL);

        memset(&error, 0, sizeof(error));
        ck_assert_ptr_nonnull(params);
        ck_assert_msg(vu_device_create(testdev.plugin, "bad", params, &device, &error) ==
                          cases[i].error,
                      "%s: expected %d", cases[i].params, cases[i].error);
        ck_assert_ptr_null(device);
        ck_assert_str_eq(error.field, cases[i].field);
        /* The message names the parameter too, for the person reading the log. */
        ck_assert_msg(strstr(error.message, cases[i].field) != NULL, "%s: message '%s'",
                      cases[i].params, error.message);
        json_decref(params);
    }

    /* Through the serving path as well: nothing is left listening. */
    stop_device();
    ck_assert_int_eq(test_server_start(&server, testdev.plugin, "{\"msi_vectors\": 5}"), -EINVAL);
    ck_assert_str_eq(server.error.field, "msi_vectors");
    ck_assert_int_ne(access(server.socket_path, F_OK), 0);
    start_device("{}");
    ck_assert_uint_eq(read32(TD_MAGIC), TD_MAGIC_VALUE);
}
END_TEST

/* The largest values of each range are accepted. */
START_TEST(parameter_limits_accepted)
{
    const char *const accepted[] = {
        "{}",
        "{\"ram_size\": \"1G\", \"msix_vectors\": 2048, \"msi_vectors\": 32}",
        "{\"ram_size\": \"8K\", \"msix_vectors\": \"1\", \"msi_vectors\": 0}",
        "{\"class_code\": \"0xffffff\", \"revision\": \"0xff\", \"subsystem_vendor_id\": 0}",
        "{\"vendor_id\": null}",
    };

    for (size_t i = 0; i < sizeof(accepted) / sizeof(accepted[0]); i++) {
        struct vfio_userd_error error = {.field = ""};
        struct vu_device *device = NULL;
        json_t *params = json_loads(accepted[i], 0, NULL);

        ck_assert_ptr_nonnull(params);
        ck_assert_msg(vu_device_create(testdev.plugin, "good", params, &device, &error) == 0,
                      "%s refused: %s", accepted[i], error.message);
        vu_device_destroy(device);
        json_decref(params);
    }
}
END_TEST

/* --- BAR0 registers ---------------------------------------------------------------------- */

START_TEST(identification_registers)
{
    uint8_t byte;
    uint16_t half;

    ck_assert_uint_eq(read32(TD_MAGIC), TD_MAGIC_VALUE);
    ck_assert_uint_eq(read32(TD_VERSION), TD_VERSION_VALUE);
    ck_assert_uint_eq(read64(TD_MAGIC), (uint64_t)TD_VERSION_VALUE << 32 | TD_MAGIC_VALUE);
    ck_assert_uint_eq(read32(TD_FEATURES), TD_FEATURES_DEFAULT);
    ck_assert_uint_eq(read32(TD_RAM_SIZE), 1u << 20);
    ck_assert_uint_eq(read32(TD_RAM_SIZE + 4), 0);
    ck_assert_uint_eq(read32(TD_DMA_MAX_LENGTH), TD_DMA_MAX);

    /* Narrow reads return the register's bytes. */
    ck_assert_int_eq(bar0_access(TD_MAGIC + 1, &byte, 1, false), 0);
    ck_assert_uint_eq(byte, 0x45);
    ck_assert_int_eq(bar0_access(TD_MAGIC + 2, &half, 2, false), 0);
    ck_assert_uint_eq(half, 0x5444);
    ck_assert_int_eq(bar0_access(TD_VERSION + 2, &half, 2, false), 0);
    ck_assert_uint_eq(half, 0x0001);

    /* Read-only registers ignore writes of every width. */
    const uint32_t read_only[] = {
        TD_MAGIC,          TD_VERSION,        TD_FEATURES,        TD_RAM_SIZE,
        TD_RAM_SIZE + 4,   TD_RAM_TRAP_READS, TD_RAM_TRAP_WRITES, TD_MSIX_VECTORS,
        TD_MSI_VECTORS,    TD_INT_STATUS,     TD_INT_COUNT,       TD_INT_LAST_VECTOR,
        TD_INT_LAST_ERROR, TD_INT_FAIL_COUNT, TD_DMA_STATUS,      TD_DMA_CHECKSUM,
        TD_DMA_ERRNO,      TD_DMA_MAX_LENGTH, TD_DMA_DONE_COUNT,  TD_DMA_ERROR_COUNT,
    };
    for (size_t i = 0; i < sizeof(read_only) / sizeof(read_only[0]); i++) {
        uint32_t before = read32(read_only[i]);
        write32(read_only[i], ~before);
        write8(read_only[i] + 3, 0x5a);
        ck_assert_uint_eq(read32(read_only[i]), before);
    }
    write64(TD_RAM_SIZE, 0);
    ck_assert_uint_eq(read64(TD_RAM_SIZE), 1u << 20);
    write64(TD_MESSAGE_COUNT + 8 * VU_COMMAND_REGION_READ, 0);
    ck_assert_uint_gt(message_count(VU_COMMAND_REGION_READ), 20);
}
END_TEST

START_TEST(scratch_registers_every_width)
{
    uint8_t byte;
    uint16_t half;

    for (uint32_t i = 0; i < 4; i++)
        write32(TD_SCRATCH0 + 4 * i, 0x11111111u * (i + 1));
    for (uint32_t i = 0; i < 4; i++)
        ck_assert_uint_eq(read32(TD_SCRATCH0 + 4 * i), 0x11111111u * (i + 1));

    /* A narrow write replaces only its bytes. */
    write8(TD_SCRATCH1 + 2, 0xab);
    ck_assert_uint_eq(read32(TD_SCRATCH1), 0x22ab2222);
    write8(TD_SCRATCH1 + 0, 0xcd);
    ck_assert_uint_eq(read32(TD_SCRATCH1), 0x22ab22cd);
    half = 0xbeef;
    ck_assert_int_eq(bar0_access(TD_SCRATCH2 + 2, &half, 2, true), 0);
    ck_assert_uint_eq(read32(TD_SCRATCH2), 0xbeef3333);
    ck_assert_int_eq(bar0_access(TD_SCRATCH2 + 2, &half, 2, false), 0);
    ck_assert_uint_eq(half, 0xbeef);
    ck_assert_int_eq(bar0_access(TD_SCRATCH1 + 3, &byte, 1, false), 0);
    ck_assert_uint_eq(byte, 0x22);

    /* An 8-byte access spans two neighbouring 32-bit registers, lower offset low. */
    write64(TD_SCRATCH0, 0x0123456789abcdefull);
    ck_assert_uint_eq(read32(TD_SCRATCH0), 0x89abcdef);
    ck_assert_uint_eq(read32(TD_SCRATCH1), 0x01234567);
    ck_assert_uint_eq(read64(TD_SCRATCH2), 0x44444444beef3333ull);

    /* SCRATCH64 whole, by halves, by bytes. */
    write64(TD_SCRATCH64, 0xfedcba9876543210ull);
    ck_assert_uint_eq(read64(TD_SCRATCH64), 0xfedcba9876543210ull);
    ck_assert_uint_eq(read32(TD_SCRATCH64), 0x76543210);
    ck_assert_uint_eq(read32(TD_SCRATCH64 + 4), 0xfedcba98);
    write32(TD_SCRATCH64 + 4, 0x0badf00d);
    ck_assert_uint_eq(read64(TD_SCRATCH64), 0x0badf00d76543210ull);
    write8(TD_SCRATCH64 + 7, 0xee);
    half = 0x1234;
    ck_assert_int_eq(bar0_access(TD_SCRATCH64 + 0, &half, 2, true), 0);
    ck_assert_uint_eq(read64(TD_SCRATCH64), 0xeeadf00d76541234ull);
    ck_assert_uint_eq(read32(TD_SCRATCH3), 0x44444444);
}
END_TEST

START_TEST(access_rules_enforced)
{
    uint8_t buffer[16] = {0};
    uint32_t value = 0x5a5a5a5a;

    write32(TD_SCRATCH0, 0x01020304);
    write64(TD_SCRATCH64, 0x1122334455667788ull);
    /* Lengths other than 1, 2, 4, 8 and offsets not a multiple of the length. */
    const struct {
        uint32_t offset, count;
    } refused[] = {
        {TD_SCRATCH0, 3},
        {TD_SCRATCH0, 16},
        {TD_SCRATCH0 + 2, 4},
        {TD_SCRATCH0 + 1, 2},
        {TD_SCRATCH0 + 3, 2},
        {TD_SCRATCH1, 8},
        {TD_SCRATCH64 + 4, 8},
        {TD_SCRATCH64 + 1, 4},
        {TD_SCRATCH0, 5},
        {4096, 4},
        {4096, 1},
        {4092, 8},
    };
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        ck_assert_int_eq(bar0_access(refused[i].offset, buffer, refused[i].count, false), -EINVAL);
        ck_assert_int_eq(bar0_access(refused[i].offset, buffer, refused[i].count, true), -EINVAL);
    }
    ck_assert_int_eq(bar0_access(TD_SCRATCH0 + 3, buffer, 1, false), 0);
    ck_assert_uint_eq(buffer[0], 0x01);
    /* A posted write that breaks the rules is dropped, and not answered. */
    ck_assert_int_eq(
        vu_client_region_write_posted(client, VFIO_USERD_REGION_BAR0, TD_SCRATCH0 + 2, &value, 4),
        0);
    ck_assert_int_eq(
        vu_client_region_write_posted(client, VFIO_USERD_REGION_BAR0, TD_SCRATCH64, &value, 3), 0);
    ck_assert_uint_eq(read32(TD_SCRATCH0), 0x01020304);
    ck_assert_uint_eq(read64(TD_SCRATCH64), 0x1122334455667788ull);
    /* A posted write that follows them is applied. */
    ck_assert_int_eq(
        vu_client_region_write_posted(client, VFIO_USERD_REGION_BAR0, TD_SCRATCH0, &value, 4), 0);
    ck_assert_uint_eq(read32(TD_SCRATCH0), value);

    /* Reserved offsets read 0 and ignore writes, at every width; the last 8 bytes too. */
    const uint32_t reserved[] = {0x05c, 0x060, 0x07c, 0x0b8, 0x0fc, 0x100,
                                 0x1f8, 0x1fc, 0x300, 0x800, 0xff8, 0xffc};
    for (size_t i = 0; i < sizeof(reserved) / sizeof(reserved[0]); i++) {
        write32(reserved[i], 0xffffffff);
        write8(reserved[i] + 1, 0xff);
        ck_assert_uint_eq(read32(reserved[i]), 0);
    }
    ck_assert_uint_eq(read64(0xff8), 0);

    /* Write-only registers read 0; DMA_CONTROL reads only IRQ_ENABLE and VECTOR. */
    ck_assert_uint_eq(read32(TD_RESET), 0);
    ck_assert_uint_eq(read32(TD_DOORBELL), 0);
    ck_assert_uint_eq(read32(TD_INT_ACK), 0);
    write32(TD_DMA_CONTROL, 0xfffffffe);
    ck_assert_uint_eq(read32(TD_DMA_CONTROL), 0xffff0002);
    ck_assert_uint_eq(read32(TD_DMA_STATUS), TD_IDLE);
    write32(TD_DMA_CONTROL, 0);
    ck_assert_uint_eq(read32(TD_DMA_CONTROL), 0);

    /* The DMA parameter registers read back what was written. */
    write64(TD_DMA_SOURCE, 0x8877665544332211ull);
    write32(TD_DMA_DESTINATION + 4, 0xcafe0000);
    write32(TD_DMA_DESTINATION, 0x0000f00d);
    write32(TD_DMA_LENGTH, 0xffffffff);
    write32(TD_DMA_PATTERN, 0xa5a5a5a5);
    write32(TD_DMA_OPERATION, 7);
    ck_assert_uint_eq(read64(TD_DMA_SOURCE), 0x8877665544332211ull);
    ck_assert_uint_eq(read64(TD_DMA_DESTINATION), 0xcafe00000000f00dull);
    ck_assert_uint_eq(read32(TD_DMA_LENGTH), 0xffffffff);
    ck_assert_uint_eq(read32(TD_DMA_PATTERN), 0xa5a5a5a5);
    ck_assert_uint_eq(read32(TD_DMA_OPERATION), 7);
    ck_assert_uint_eq(read32(TD_MAGIC), TD_MAGIC_VALUE);
}
END_TEST

/* --- Interrupts -------------------------------------------------------------------------- */

START_TEST(doorbell_through_intx)
{
    int fd;

    open_eventfds(&fd, 1);
    arm_eventfds(VFIO_PCI_INTX_IRQ_INDEX, 0, 1, &fd);
    ck_assert_uint_eq(ring(7), 0);
    ck_assert_uint_eq(eventfd_take(fd), 1);
    ck_assert_uint_eq(read32(TD_INT_STATUS), TD_INT_DOORBELL);
    ck_assert_uint_eq(read32(TD_INT_COUNT), 1);
    ck_assert_uint_eq(read32(TD_INT_FAIL_COUNT), 0);

    /* Level-triggered: masked after the assertion; raises meanwhile arrive as one. */
    ck_assert_uint_eq(ring(8), 0);
    ck_assert_uint_eq(ring(9), 0);
    ck_assert_uint_eq(eventfd_take(fd), 0);
    ck_assert_uint_eq(read32(TD_INT_COUNT), 3);
    unmask_intx();
    ck_assert_uint_eq(eventfd_take(fd), 1);
    unmask_intx();
    ck_assert_uint_eq(eventfd_take(fd), 0);

    /* Interrupt Disable: INTx is raised all the same (Status bit 3), and reaches the
     * client when the bit is cleared. */
    ck_assert_uint_eq(config_read16(PCI_STATUS) & PCI_STATUS_INTERRUPT, 0);
    set_command(PCI_COMMAND_INTX_DISABLE);
    ck_assert_uint_eq(ring(11), 0);
    ck_assert_uint_eq(eventfd_take(fd), 0);
    ck_assert_uint_eq(config_read16(PCI_STATUS) & PCI_STATUS_INTERRUPT, PCI_STATUS_INTERRUPT);
    ck_assert_uint_eq(read32(TD_INT_FAIL_COUNT), 0);
    ck_assert_uint_eq(read32(TD_INT_COUNT), 4);
    ck_assert_uint_eq(read32(TD_INT_STATUS), TD_INT_DOORBELL);
    set_command(0);
    ck_assert_uint_eq(eventfd_take(fd), 1);
    unmask_intx();
    ck_assert_uint_eq(ring(12), 0);
    ck_assert_uint_eq(eventfd_take(fd), 1);
    ck_assert_uint_eq(read32(TD_INT_COUNT), 5);

    /* Without an eventfd the raise is held, and delivered once one is given. */
    ck_assert_int_eq(vu_client_set_irqs(client, VFIO_PCI_INTX_IRQ_INDEX,
                                        VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER, 0, 0,
                                        NULL, NULL),
                     0);
    ck_assert_uint_eq(ring(13), 0);
    ck_assert_uint_eq(read32(TD_INT_COUNT), 6);
    ck_assert_uint_eq(eventfd_take(fd), 0);
    arm_eventfds(VFIO_PCI_INTX_IRQ_INDEX, 0, 1, &fd);
    ck_assert_uint_eq(eventfd_take(fd), 1);
    close_eventfds(&fd, 1);
}
END_TEST

/* Interrupt Status: whether the function asserts INTx, whatever Interrupt Disable says. */
static bool intx_asserted(void)
{
    return (config_read16(PCI_STATUS) & PCI_STATUS_INTERRUPT) != 0;
}

/*
 * Interrupt Disable holds the INTx line back from the client, not the interrupt: the
 * Interrupt Status bit is set, and clearing Interrupt Disable with it set asserts the line.
 * Linux's uio_pci_generic depends on it: its handler checks the status bit and sets
 * Interrupt Disable, and user space clears Interrupt Disable to re-arm.
 */
START_TEST(intx_interrupt_disable)
{
    int fd;

    open_eventfds(&fd, 1);
    arm_eventfds(VFIO_PCI_INTX_IRQ_INDEX, 0, 1, &fd);
    ck_assert_uint_eq(ring(1), 0);
    ck_assert_uint_eq(eventfd_take(fd), 1);
    ck_assert(intx_asserted());
    /* The handler masks the function; end of interrupt deasserts the line. */
    set_command(PCI_COMMAND_INTX_DISABLE);
    unmask_intx();
    ck_assert(!intx_asserted());

    /* Raised while disabled: status set, nothing to the client, several as one. */
    ck_assert_uint_eq(ring(2), 0);
    ck_assert_uint_eq(ring(3), 0);
    ck_assert_uint_eq(eventfd_take(fd), 0);
    ck_assert(intx_asserted());
    ck_assert_uint_eq(read32(TD_INT_COUNT), 3);
    ck_assert_uint_eq(read32(TD_INT_FAIL_COUNT), 0);
    /* Other Command bits change nothing; an end of interrupt meanwhile neither. */
    set_command(PCI_COMMAND_INTX_DISABLE | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
    unmask_intx();
    ck_assert_uint_eq(eventfd_take(fd), 0);
    ck_assert(intx_asserted());
    /* User space re-arms: the line is asserted at once, and stays until end of interrupt. */
    set_command(PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
    ck_assert_uint_eq(eventfd_take(fd), 1);
    ck_assert(intx_asserted());
    set_command(PCI_COMMAND_MEMORY);
    ck_assert_uint_eq(eventfd_take(fd), 0);
    unmask_intx();
    ck_assert(!intx_asserted());
    ck_assert_uint_eq(eventfd_take(fd), 0);

    /* DEVICE_RESET clears Interrupt Disable and forgets what it held. */
    set_command(PCI_COMMAND_INTX_DISABLE);
    ck_assert_uint_eq(ring(4), 0);
    ck_assert(intx_asserted());
    ck_assert_int_eq(vu_client_device_reset(client), 0);
    ck_assert(!intx_asserted());
    ck_assert_uint_eq(config_read16(PCI_COMMAND), 0);
    ck_assert_uint_eq(eventfd_take(fd), 0);
    ck_assert_uint_eq(ring(5), 0);
    ck_assert_uint_eq(eventfd_take(fd), 1);
    close_eventfds(&fd, 1);
}
END_TEST

START_TEST(doorbell_through_msi)
{
    int fds[4], intx;
    uint32_t msi = capability_offset(PCI_CAP_ID_MSI);

    open_eventfds(fds, 4);
    open_eventfds(&intx, 1);
    arm_eventfds(VFIO_PCI_MSI_IRQ_INDEX, 0, 4, fds);
    arm_eventfds(VFIO_PCI_INTX_IRQ_INDEX, 0, 1, &intx);
    enable_msi(2);
    for (uint32_t vector = 0; vector < 4; vector++) {
        ck_assert_uint_eq(ring(vector), 0);
        ck_assert_uint_eq(fired_mask(fds, 4), 1u << vector);
    }
    ck_assert_uint_eq(eventfd_take(intx), 0);
    ck_assert_uint_eq(read32(TD_INT_COUNT), 4);

    /* Out of range: beyond the vectors the guest enabled, not the ones offered. */
    ck_assert_uint_eq(ring(4), EINVAL);
    enable_msi(1);
    ck_assert_uint_eq(ring(2), EINVAL);
    ck_assert_uint_eq(ring(1), 0);
    ck_assert_uint_eq(fired_mask(fds, 4), 1u << 1);
    ck_assert_uint_eq(read32(TD_INT_FAIL_COUNT), 2);
    ck_assert_uint_eq(read32(TD_INT_COUNT), 5);

    /* Per-vector mask: held pending, delivered at unmask. */
    config_write32(msi + PCI_MSI_MASK_64, 1u << 1);
    ck_assert_uint_eq(ring(1), 0);
    ck_assert_uint_eq(fired_mask(fds, 4), 0);
    ck_assert_uint_eq(read32(TD_INT_COUNT), 6);
    config_write32(msi + PCI_MSI_MASK_64, 0);
    ck_assert_uint_eq(fired_mask(fds, 4), 1u << 1);

    /* MSI disabled again: INTx takes over, whatever the vector. */
    config_write16(msi + PCI_MSI_FLAGS, config_read16(msi + PCI_MSI_FLAGS) & ~PCI_MSI_FLAGS_ENABLE);
    ck_assert_uint_eq(ring(3), 0);
    ck_assert_uint_eq(eventfd_take(intx), 1);
    ck_assert_uint_eq(fired_mask(fds, 4), 0);
    close_eventfds(fds, 4);
    close_eventfds(&intx, 1);
}
END_TEST

START_TEST(doorbell_through_msix)
{
    int fds[16], msi_fds[4];
    uint32_t msix = capability_offset(PCI_CAP_ID_MSIX);
    uint64_t pba;
    uint32_t value;

    open_eventfds(fds, 16);
    open_eventfds(msi_fds, 4);
    arm_eventfds(VFIO_PCI_MSIX_IRQ_INDEX, 0, 16, fds);
    arm_eventfds(VFIO_PCI_MSI_IRQ_INDEX, 0, 4, msi_fds);
    enable_msi(2);
    /* Enabled with the table never written (QEMU keeps it): delivered at once. */
    config_write16(msix + PCI_MSIX_FLAGS, PCI_MSIX_FLAGS_ENABLE);
    ck_assert_uint_eq(ring(4), 0);
    ck_assert_uint_eq(fired_mask(fds, 16), 1u << 4);
    ck_assert_uint_eq(pba_read(), 0);
    /* Once written, the table's Mask bits hold vectors: pending in the PBA, then delivered. */
    msix_entry_write(4, PCI_MSIX_ENTRY_VECTOR_CTRL, PCI_MSIX_ENTRY_CTRL_MASKBIT);
    ck_assert_uint_eq(ring(4), 0);
    ck_assert_uint_eq(fired_mask(fds, 16), 0);
    ck_assert_uint_eq(pba_read(), 1u << 4);
    enable_msix(0, 16);
    ck_assert_uint_eq(fired_mask(fds, 16), 1u << 4);
    ck_assert_uint_eq(pba_read(), 0);

    /* Each vector its own eventfd; MSI-X wins over the enabled MSI. */
    for (uint32_t vector = 0; vector < 16; vector++) {
        ck_assert_uint_eq(ring(vector), 0);
        ck_assert_uint_eq(fired_mask(fds, 16), 1u << vector);
    }
    ck_assert_uint_eq(fired_mask(msi_fds, 4), 0);
    ck_assert_uint_eq(read32(TD_INT_COUNT), 18);
    ck_assert_uint_eq(ring(16), EINVAL);
    ck_assert_uint_eq(ring(0xffffffff), EINVAL);
    ck_assert_uint_eq(read32(TD_INT_FAIL_COUNT), 2);

    /* Narrow writes: the other bytes of the write-only register are 0. */
    write8(TD_DOORBELL, 5);
    ck_assert_uint_eq(read32(TD_INT_LAST_VECTOR), 5);
    ck_assert_uint_eq(fired_mask(fds, 16), 1u << 5);
    write8(TD_DOORBELL + 1, 0x01);
    ck_assert_uint_eq(read32(TD_INT_LAST_VECTOR), 0x100);
    ck_assert_uint_eq(read32(TD_INT_LAST_ERROR), EINVAL);
    value = 0x0001;
    ck_assert_int_eq(bar0_access(TD_DOORBELL + 2, &value, 2, true), 0);
    ck_assert_uint_eq(read32(TD_INT_LAST_VECTOR), 0x10000);

    /* Function mask holds every vector. */
    config_write16(msix + PCI_MSIX_FLAGS, PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL);
    ck_assert_uint_eq(ring(9), 0);
    ck_assert_uint_eq(fired_mask(fds, 16), 0);
    config_write16(msix + PCI_MSIX_FLAGS, PCI_MSIX_FLAGS_ENABLE);
    ck_assert_uint_eq(fired_mask(fds, 16), 1u << 9);

    /* BAR4 outside the table and the PBA is reserved. */
    value = 0xffffffff;
    ck_assert_int_eq(vu_client_region_write(client, VFIO_USERD_REGION_BAR4, 0x800, &value, 4), 0);
    ck_assert_int_eq(vu_client_region_read(client, VFIO_USERD_REGION_BAR4, 0x800, &value, 4), 0);
    ck_assert_uint_eq(value, 0);
    ck_assert_int_eq(vu_client_region_read(client, VFIO_USERD_REGION_BAR4, 0x1ff8, &pba, 8), 0);
    ck_assert_uint_eq(pba, 0);
    close_eventfds(fds, 16);
    close_eventfds(msi_fds, 4);
}
END_TEST

/*
 * QEMU keeps the guest's MSI-X table to itself: it enables MSI-X in config space, wires
 * vectors with SET_IRQS and reads only the PBA here. Our table, never written, stays in its
 * reset state (every vector masked), which must hold nothing back.
 */
START_TEST(msix_table_kept_by_client)
{
    int fds[16];
    uint32_t msix = capability_offset(PCI_CAP_ID_MSIX);

    open_eventfds(fds, 16);
    arm_eventfds(VFIO_PCI_MSIX_IRQ_INDEX, 0, 16, fds);
    /* Linux enables MSI-X with the function masked, then unmasks the function. */
    config_write16(msix + PCI_MSIX_FLAGS, PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL);
    config_write16(msix + PCI_MSIX_FLAGS, PCI_MSIX_FLAGS_ENABLE);
    for (uint32_t vector = 0; vector < 16; vector++) {
        ck_assert_uint_eq(ring(vector), 0);
        ck_assert_uint_eq(fired_mask(fds, 16), 1u << vector);
        ck_assert_uint_eq(pba_read(), 0);
    }

    /* Masked through SET_IRQS: pending in the PBA, delivered once at UNMASK. */
    mask_vector(VFIO_PCI_MSIX_IRQ_INDEX, 3, true);
    ck_assert_uint_eq(ring(3), 0);
    ck_assert_uint_eq(ring(3), 0);
    ck_assert_uint_eq(fired_mask(fds, 16), 0);
    ck_assert_uint_eq(pba_read(), 1u << 3);
    mask_vector(VFIO_PCI_MSIX_IRQ_INDEX, 3, false);
    ck_assert_uint_eq(eventfd_take(fds[3]), 1);
    ck_assert_uint_eq(fired_mask(fds, 16), 0);
    ck_assert_uint_eq(pba_read(), 0);

    /* The Function Mask is in config space, which reaches the server from every client. */
    config_write16(msix + PCI_MSIX_FLAGS, PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL);
    ck_assert_uint_eq(ring(5), 0);
    ck_assert_uint_eq(fired_mask(fds, 16), 0);
    ck_assert_uint_eq(pba_read(), 1u << 5);
    config_write16(msix + PCI_MSIX_FLAGS, PCI_MSIX_FLAGS_ENABLE);
    ck_assert_uint_eq(fired_mask(fds, 16), 1u << 5);
    ck_assert_uint_eq(pba_read(), 0);

    /* A vector without an eventfd is pending until it gets one. */
    ck_assert_int_eq(vu_client_set_irqs(client, VFIO_PCI_MSIX_IRQ_INDEX,
                                        VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER, 7,
                                        1, NULL, NULL),
                     0);
    ck_assert_uint_eq(ring(7), 0);
    ck_assert_uint_eq(pba_read(), 1u << 7);
    arm_eventfds(VFIO_PCI_MSIX_IRQ_INDEX, 7, 1, &fds[7]);
    ck_assert_uint_eq(fired_mask(fds, 16), 1u << 7);
    ck_assert_uint_eq(pba_read(), 0);
    ck_assert_uint_eq(read32(TD_INT_COUNT), 20);
    ck_assert_uint_eq(read32(TD_INT_FAIL_COUNT), 0);
    close_eventfds(fds, 16);
}
END_TEST

/*
 * A client that forwards the guest's table writes: from its first write on, the table's
 * Mask bits hold vectors back, pending in the PBA, until unmasked through the table or
 * SET_IRQS. That lasts across DEVICE_RESET; the next client starts over.
 */
START_TEST(msix_table_written_by_client)
{
    int fds[16];
    uint32_t msix = capability_offset(PCI_CAP_ID_MSIX);

    open_eventfds(fds, 16);
    arm_eventfds(VFIO_PCI_MSIX_IRQ_INDEX, 0, 16, fds);
    config_write16(msix + PCI_MSIX_FLAGS, PCI_MSIX_FLAGS_ENABLE);
    /* Any write makes the table count: vector 2 is still masked from reset. */
    msix_entry_write(2, PCI_MSIX_ENTRY_LOWER_ADDR, 0xfee00000);
    msix_entry_write(2, PCI_MSIX_ENTRY_DATA, 0x4022);
    ck_assert_uint_eq(ring(2), 0);
    ck_assert_uint_eq(ring(2), 0);
    ck_assert_uint_eq(fired_mask(fds, 16), 0);
    ck_assert_uint_eq(pba_read(), 1u << 2);
    msix_entry_write(2, PCI_MSIX_ENTRY_VECTOR_CTRL, 0);
    ck_assert_uint_eq(eventfd_take(fds[2]), 1);
    ck_assert_uint_eq(pba_read(), 0);
    ck_assert_uint_eq(ring(2), 0);
    ck_assert_uint_eq(fired_mask(fds, 16), 1u << 2);

    /* Masked both ways, it waits for both unmasks, whichever comes first. */
    msix_entry_write(2, PCI_MSIX_ENTRY_VECTOR_CTRL, PCI_MSIX_ENTRY_CTRL_MASKBIT);
    mask_vector(VFIO_PCI_MSIX_IRQ_INDEX, 2, true);
    ck_assert_uint_eq(ring(2), 0);
    msix_entry_write(2, PCI_MSIX_ENTRY_VECTOR_CTRL, 0);
    ck_assert_uint_eq(fired_mask(fds, 16), 0);
    ck_assert_uint_eq(pba_read(), 1u << 2);
    mask_vector(VFIO_PCI_MSIX_IRQ_INDEX, 2, false);
    ck_assert_uint_eq(fired_mask(fds, 16), 1u << 2);
    ck_assert_uint_eq(pba_read(), 0);

    /* DEVICE_RESET masks every entry again, and this client still writes the table. */
    ck_assert_int_eq(vu_client_device_reset(client), 0);
    config_write16(msix + PCI_MSIX_FLAGS, PCI_MSIX_FLAGS_ENABLE);
    ck_assert_uint_eq(ring(2), 0);
    ck_assert_uint_eq(fired_mask(fds, 16), 0);
    ck_assert_uint_eq(pba_read(), 1u << 2);
    close_eventfds(fds, 16);

    /* A new client has not written the table: the masks left in it hold nothing. */
    reconnect(NULL);
    open_eventfds(fds, 16);
    arm_eventfds(VFIO_PCI_MSIX_IRQ_INDEX, 0, 16, fds);
    ck_assert_uint_eq(pba_read(), 0);
    ck_assert_uint_eq(config_read16(msix + PCI_MSIX_FLAGS) & PCI_MSIX_FLAGS_ENABLE,
                      PCI_MSIX_FLAGS_ENABLE);
    ck_assert_uint_eq(ring(2), 0);
    ck_assert_uint_eq(fired_mask(fds, 16), 1u << 2);
    ck_assert_uint_eq(pba_read(), 0);
    close_eventfds(fds, 16);
}
END_TEST

START_TEST(interrupt_status_and_ack)
{
    struct guest_memory ram;
    const struct dma_job job = {
        .operation = TD_FILL, .destination = GUEST_RAM, .length = 16, .pattern = 1};

    guest_memory_open(&ram, SMALL_MAP_SIZE);
    ck_assert_int_eq(vu_client_dma_map(client, GUEST_RAM, SMALL_MAP_SIZE,
                                       VU_DMA_FLAG_READABLE | VU_DMA_FLAG_WRITABLE, ram.fd, 0),
                     0);
    enable_bus_master();
    ck_assert_uint_eq(read32(TD_INT_STATUS), 0);
    ring(0); /* INTx without an eventfd: held, a success */
    ck_assert_uint_eq(read32(TD_INT_STATUS), TD_INT_DOORBELL);
    /* A DMA operation sets bit 1 even without IRQ_ENABLE. */
    ck_assert_uint_eq(dma_run_direct(&job), TD_DONE);
    ck_assert_uint_eq(read32(TD_INT_STATUS), TD_INT_DOORBELL | TD_INT_DMA);
    ck_assert_uint_eq(read32(TD_INT_COUNT), 1);

    write32(TD_INT_STATUS, 0); /* read-only */
    write32(TD_INT_ACK, 0);
    write32(TD_INT_ACK, 0xfffffffc);
    ck_assert_uint_eq(read32(TD_INT_STATUS), TD_INT_DOORBELL | TD_INT_DMA);
    write32(TD_INT_ACK, TD_INT_DMA);
    ck_assert_uint_eq(read32(TD_INT_STATUS), TD_INT_DOORBELL);
    ck_assert_uint_eq(read32(TD_INT_ACK), 0);
    write8(TD_INT_ACK, TD_INT_DOORBELL);
    ck_assert_uint_eq(read32(TD_INT_STATUS), 0);
    /* The cause comes back with the next event; ACK has no memory. */
    ring(1);
    ck_assert_uint_eq(read32(TD_INT_STATUS), TD_INT_DOORBELL);
    write32(TD_INT_ACK, 0xffffffff);
    ck_assert_uint_eq(read32(TD_INT_STATUS), 0);
    guest_memory_close(&ram);
}
END_TEST

/* --- DMA --------------------------------------------------------------------------------- */

/* COPY, FILL and CHECKSUM on memory mapped with a file descriptor. */
START_TEST(dma_direct_memory)
{
    struct guest_memory ram;
    uint8_t *shadow = malloc(GUEST_SIZE);
    uint32_t done = 0;

    guest_memory_open(&ram, GUEST_SIZE);
    fill_random(ram.bytes, GUEST_SIZE, 1);
    memcpy(shadow, ram.bytes, GUEST_SIZE);
    ck_assert_int_eq(vu_client_dma_map(client, GUEST_RAM, GUEST_SIZE,
                                       VU_DMA_FLAG_READABLE | VU_DMA_FLAG_WRITABLE, ram.fd, 0),
                     0);
    enable_bus_master();

    /* The page's check value, then the largest operation. */
    memcpy(ram.bytes + 0x10, "123456789", 9);
    memcpy(shadow + 0x10, "123456789", 9);
    ck_assert_uint_eq(dma_run_direct(&(struct dma_job){
                          .operation = TD_CHECKSUM, .source = GUEST_RAM + 0x10, .length = 9}),
                      TD_DONE);
    ck_assert_uint_eq(read32(TD_DMA_CHECKSUM), 0xcbf43926);
    ck_assert_uint_eq(read32(TD_DMA_ERRNO), 0);
    done++;
    ck_assert_uint_eq(dma_run_direct(&(struct dma_job){
                          .operation = TD_CHECKSUM, .source = GUEST_RAM + 3, .length = TD_DMA_MAX}),
                      TD_DONE);
    ck_assert_uint_eq(read32(TD_DMA_CHECKSUM), reference_crc32(ram.bytes + 3, TD_DMA_MAX));
    done++;

    /* COPY between odd addresses, and overlapping either way. */
    const struct {
        uint64_t source, destination;
        uint32_t length;
    } copies[] = {
        {0x1001, 0x100003, 4097},
        {0x20000, 0x20080, 0x1000}, /* destination above an overlapping source */
        {0x30080, 0x30000, 0x1000}, /* destination below */
        {0x40000, 0x40000, 100},    /* onto itself */
        {0x0, GUEST_SIZE - TD_DMA_MAX, TD_DMA_MAX},
    };
    for (size_t i = 0; i < sizeof(copies) / sizeof(copies[0]); i++) {
        const struct dma_job job = {.operation = TD_COPY,
                                    .source = GUEST_RAM + copies[i].source,
                                    .destination = GUEST_RAM + copies[i].destination,
                                    .length = copies[i].length};
        ck_assert_uint_eq(dma_run_direct(&job), TD_DONE);
        memmove(shadow + copies[i].destination, shadow + copies[i].source, copies[i].length);
        ck_assert_int_eq(memcmp(ram.bytes, shadow, GUEST_SIZE), 0);
        done++;
    }

    /* FILL lays the pattern down little-endian from the first byte. */
    ck_assert_uint_eq(dma_run_direct(&(struct dma_job){.operation = TD_FILL,
                                                       .destination = GUEST_RAM + 0x5003,
                                                       .length = 4099,
                                                       .pattern = 0x11223344}),
                      TD_DONE);
    for (uint32_t i = 0; i < 4099; i++)
        shadow[0x5003 + i] = (uint8_t)(0x11223344u >> (8 * (i % 4)));
    ck_assert_uint_eq(ram.bytes[0x5003], 0x44);
    ck_assert_uint_eq(ram.bytes[0x5006], 0x11);
    ck_assert_int_eq(memcmp(ram.bytes, shadow, GUEST_SIZE), 0);
    ck_assert_uint_eq(dma_run_direct(&(struct dma_job){.operation = TD_FILL,
                                                       .destination = GUEST_RAM + GUEST_SIZE - 1,
                                                       .length = 1,
                                                       .pattern = 0xabcdef99}),
                      TD_DONE);
    shadow[GUEST_SIZE - 1] = 0x99;
    ck_assert_int_eq(memcmp(ram.bytes, shadow, GUEST_SIZE), 0);
    done += 2;

    ck_assert_uint_eq(read32(TD_DMA_DONE_COUNT), done);
    ck_assert_uint_eq(read32(TD_DMA_ERROR_COUNT), 0);
    ck_assert_uint_eq(read32(TD_INT_STATUS), TD_INT_DMA);
    ck_assert_uint_eq(read32(TD_INT_COUNT), 0); /* IRQ_ENABLE was never set */
    free(shadow);
    guest_memory_close(&ram);
}
END_TEST

static void dma_through_messages(bool twin)
{
    struct vu_client_options options;
    struct guest_memory direct;
    uint8_t *memory = malloc(GUEST_SIZE);
    uint8_t *shadow = malloc(GUEST_SIZE);
    const uint32_t messages = TD_STATUS_MESSAGES;
    const uint64_t other_source = MESSAGE_RAM + 5;
    const uint32_t other_length = 9, other_control = TD_CONTROL_VECTOR(9);
    int intx;

    vu_client_options_default(&options);
    options.proposal.twin_socket = twin;
    reconnect(&options);
    ck_assert_int_eq(vu_client_twin_socket_active(client), twin);

    fill_random(memory, GUEST_SIZE, 2);
    memcpy(shadow, memory, GUEST_SIZE);
    guest_memory_open(&direct, SMALL_MAP_SIZE);
    ck_assert_int_eq(vu_client_dma_map_memory(client, MESSAGE_RAM, GUEST_SIZE,
                                              VU_DMA_FLAG_READABLE | VU_DMA_FLAG_WRITABLE, memory),
                     0);
    ck_assert_int_eq(vu_client_dma_map(client, SECOND_RAM, SMALL_MAP_SIZE,
                                       VU_DMA_FLAG_READABLE | VU_DMA_FLAG_WRITABLE, direct.fd, 0),
                     0);
    enable_bus_master();

    /* CHECKSUM of the largest length: BUSY with MESSAGES until the client answers. */
    dma_program(&(struct dma_job){
        .operation = TD_CHECKSUM, .source = MESSAGE_RAM + 1, .length = TD_DMA_MAX});
    open_eventfds(&intx, 1);
    arm_eventfds(VFIO_PCI_INTX_IRQ_INDEX, 0, 1, &intx);
    write32(TD_DMA_CONTROL, TD_CONTROL_GO | TD_CONTROL_IRQ_ENABLE | TD_CONTROL_VECTOR(6));
    /* The engine latched its registers, IRQ_ENABLE and VECTOR included, at GO. These writes
     * are posted, so they reach the device before the client answers the DMA_READ, which it
     * does only while it waits for the next reply. */
    ck_assert_int_eq(vu_client_region_write_posted(client, VFIO_USERD_REGION_BAR0, TD_DMA_SOURCE,
                                                   &other_source, 8),
                     0);
    ck_assert_int_eq(vu_client_region_write_posted(client, VFIO_USERD_REGION_BAR0, TD_DMA_LENGTH,
                                                   &other_length, 4),
                     0);
    ck_assert_int_eq(vu_client_region_write_posted(client, VFIO_USERD_REGION_BAR0, TD_DMA_CONTROL,
                                                   &other_control, 4),
                     0);
    if (!twin) {
        /* On one socket, the status read is handled before the DMA_READ is answered. */
        ck_assert_uint_eq(read32(TD_DMA_STATUS), TD_BUSY | messages);
    }
    ck_assert_uint_eq(dma_wait(), TD_DONE | messages);
    ck_assert_uint_eq(eventfd_take(intx), 1);
    ck_assert_uint_eq(read32(TD_INT_LAST_VECTOR), 6);
    ck_assert_uint_eq(read32(TD_DMA_CONTROL), TD_CONTROL_VECTOR(9));
    unmask_intx();
    ck_assert_uint_eq(read32(TD_DMA_CHECKSUM), reference_crc32(memory + 1, TD_DMA_MAX));

    /* FILL through DMA_WRITE. */
    ck_assert_uint_eq(dma_run(&(struct dma_job){.operation = TD_FILL,
                                                .destination = MESSAGE_RAM + 7,
                                                .length = TD_DMA_MAX,
                                                .pattern = 0xa1b2c3d4}),
                      TD_DONE | messages);
    for (uint32_t i = 0; i < TD_DMA_MAX; i++)
        shadow[7 + i] = (uint8_t)(0xa1b2c3d4u >> (8 * (i % 4)));
    ck_assert_int_eq(memcmp(memory, shadow, GUEST_SIZE), 0);

    /* COPY in both directions of the one path, overlapping, and between the two paths. */
    fill_random(memory, GUEST_SIZE, 3);
    fill_random(direct.bytes, SMALL_MAP_SIZE, 4);
    memcpy(shadow, memory, GUEST_SIZE);
    ck_assert_uint_eq(dma_run(&(struct dma_job){.operation = TD_COPY,
                                                .source = MESSAGE_RAM + 0x1001,
                                                .destination = MESSAGE_RAM + 0x180005,
                                                .length = 4097}),
                      TD_DONE | messages);
    memmove(shadow + 0x180005, shadow + 0x1001, 4097);
    ck_assert_uint_eq(dma_run(&(struct dma_job){.operation = TD_COPY,
                                                .source = MESSAGE_RAM + 0x20000,
                                                .destination = MESSAGE_RAM + 0x20010,
                                                .length = 0x3000}),
                      TD_DONE | messages);
    memmove(shadow + 0x20010, shadow + 0x20000, 0x3000);
    ck_assert_int_eq(memcmp(memory, shadow, GUEST_SIZE), 0);
    ck_assert_uint_eq(dma_run(&(struct dma_job){.operation = TD_COPY,
                                                .source = SECOND_RAM,
                                                .destination = MESSAGE_RAM + 0x50000,
                                                .length = SMALL_MAP_SIZE}),
                      TD_DONE | messages);
    ck_assert_int_eq(memcmp(memory + 0x50000, direct.bytes, SMALL_MAP_SIZE), 0);
    ck_assert_uint_eq(dma_run(&(struct dma_job){.operation = TD_COPY,
                                                .source = MESSAGE_RAM + 0x70001,
                                                .destination = SECOND_RAM + 2,
                                                .length = SMALL_MAP_SIZE - 2}),
                      TD_DONE | messages);
    ck_assert_int_eq(memcmp(direct.bytes + 2, memory + 0x70001, SMALL_MAP_SIZE - 2), 0);
    /* Without messages, MESSAGES is clear again. */
    ck_assert_uint_eq(dma_run(&(struct dma_job){.operation = TD_CHECKSUM,
                                                .source = SECOND_RAM,
                                                .length = SMALL_MAP_SIZE}),
                      TD_DONE);
    ck_assert_uint_eq(read32(TD_DMA_CHECKSUM), reference_crc32(direct.bytes, SMALL_MAP_SIZE));

    /* The completion interrupt fires once the client has answered. */
    ck_assert_uint_eq(eventfd_take(intx), 0);
    ck_assert_uint_eq(dma_run(&(struct dma_job){.operation = TD_CHECKSUM,
                                                .source = MESSAGE_RAM,
                                                .length = 64,
                                                .control = TD_CONTROL_IRQ_ENABLE}),
                      TD_DONE | messages);
    ck_assert_uint_eq(eventfd_take(intx), 1);
    ck_assert_uint_eq(read32(TD_DMA_CHECKSUM), reference_crc32(memory, 64));
    ck_assert_uint_eq(read32(TD_DMA_DONE_COUNT), 8);
    ck_assert_uint_eq(read32(TD_DMA_ERROR_COUNT), 0);

    vu_client_close(client);
    client = NULL;
    close_eventfds(&intx, 1);
    guest_memory_close(&direct);
    free(memory);
    free(shadow);
}

START_TEST(dma_messages_main_socket)
{
    dma_through_messages(false);
}
END_TEST

START_TEST(dma_messages_twin_socket)
{
    dma_through_messages(true);
}
END_TEST

/* Every error code, with the device working after each. */
START_TEST(dma_errors)
{
    struct guest_memory ram, next, read_only, write_only;
    static uint8_t read_only_messages[TD_PAGE];
    uint8_t *before = malloc(SMALL_MAP_SIZE), *next_before = malloc(SMALL_MAP_SIZE);
    const uint32_t rw = VU_DMA_FLAG_READABLE | VU_DMA_FLAG_WRITABLE;
    const uint64_t top = UINT64_MAX;
    const struct {
        struct dma_job job;
        uint32_t code;
        uint32_t error;
        bool messages;
    } cases[] = {
        {{.operation = 3, .source = GUEST_RAM, .destination = GUEST_RAM, .length = 16},
         TD_ERROR_OPERATION,
         EINVAL,
         false},
        {{.operation = 0xffffffff, .source = GUEST_RAM, .length = 0},
         TD_ERROR_OPERATION,
         EINVAL,
         false},
        {{.operation = TD_CHECKSUM, .source = GUEST_RAM, .length = 0},
         TD_ERROR_LENGTH,
         EINVAL,
         false},
        {{.operation = TD_FILL, .destination = top - 1, .length = 0},
         TD_ERROR_LENGTH,
         EINVAL,
         false},
        {{.operation = TD_CHECKSUM, .source = GUEST_RAM, .length = TD_DMA_MAX + 1},
         TD_ERROR_LENGTH,
         EINVAL,
         false},
        {{.operation = TD_COPY, .source = GUEST_RAM, .destination = GUEST_RAM, .length = ~0u},
         TD_ERROR_LENGTH,
         EINVAL,
         false},
        {{.operation = TD_COPY, .source = top - 7, .destination = GUEST_RAM, .length = 16},
         TD_ERROR_WRAP,
         EOVERFLOW,
         false},
        {{.operation = TD_COPY, .source = GUEST_RAM, .destination = top, .length = 2},
         TD_ERROR_WRAP,
         EOVERFLOW,
         false},
        {{.operation = TD_FILL, .destination = top - 0xffe, .length = TD_PAGE},
         TD_ERROR_WRAP,
         EOVERFLOW,
         false},
        {{.operation = TD_CHECKSUM, .source = top, .length = 2}, TD_ERROR_WRAP, EOVERFLOW, false},
        /* Ending at the last byte is no wrap: it is simply not mapped. */
        {{.operation = TD_CHECKSUM, .source = top - 15, .length = 16},
         TD_ERROR_UNMAPPED,
         EFAULT,
         false},
        {{.operation = TD_CHECKSUM, .source = NOWHERE, .length = 16},
         TD_ERROR_UNMAPPED,
         EFAULT,
         false},
        {{.operation = TD_COPY, .source = NOWHERE, .destination = GUEST_RAM, .length = 16},
         TD_ERROR_UNMAPPED,
         EFAULT,
         false},
        {{.operation = TD_COPY, .source = GUEST_RAM, .destination = NOWHERE, .length = 16},
         TD_ERROR_UNMAPPED,
         EFAULT,
         false},
        /* Across two adjacent mappings, or past the end of the last one. */
        {{.operation = TD_CHECKSUM, .source = GUEST_RAM + SMALL_MAP_SIZE - 8, .length = 16},
         TD_ERROR_UNMAPPED,
         EFAULT,
         false},
        {{.operation = TD_COPY,
          .source = GUEST_RAM,
          .destination = GUEST_RAM + SMALL_MAP_SIZE - 8,
          .length = 16},
         TD_ERROR_UNMAPPED,
         EFAULT,
         false},
        {{.operation = TD_FILL, .destination = GUEST_RAM + 2 * SMALL_MAP_SIZE - 8, .length = 16},
         TD_ERROR_UNMAPPED,
         EFAULT,
         false},
        {{.operation = TD_FILL, .destination = READ_ONLY_RAM, .length = 16},
         TD_ERROR_READ_ONLY,
         EACCES,
         false},
        {{.operation = TD_COPY, .source = GUEST_RAM, .destination = READ_ONLY_RAM, .length = 16},
         TD_ERROR_READ_ONLY,
         EACCES,
         false},
        {{.operation = TD_COPY, .source = GUEST_RAM, .destination = READ_ONLY_MSG, .length = 16},
         TD_ERROR_READ_ONLY,
         EACCES,
         false},
        {{.operation = TD_CHECKSUM, .source = WRITE_ONLY_RAM, .length = 16},
         TD_ERROR_READ_ONLY,
         EACCES,
         false},
        {{.operation = TD_COPY, .source = WRITE_ONLY_RAM, .destination = GUEST_RAM, .length = 16},
         TD_ERROR_READ_ONLY,
         EACCES,
         false},
        /* The client refuses the DMA_READ/DMA_WRITE: its errno comes through. */
        {{.operation = TD_CHECKSUM, .source = UNSERVED_RAM, .length = 16},
         TD_ERROR_IO,
         EFAULT,
         true},
        {{.operation = TD_FILL, .destination = UNSERVED_RAM + 4, .length = 16},
         TD_ERROR_IO,
         EFAULT,
         true},
        {{.operation = TD_COPY, .source = GUEST_RAM, .destination = UNSERVED_RAM, .length = 16},
         TD_ERROR_IO,
         EFAULT,
         true},
    };
    uint32_t errors = 0, done = 0;

    guest_memory_open(&ram, SMALL_MAP_SIZE);
    guest_memory_open(&next, SMALL_MAP_SIZE);
    guest_memory_open(&read_only, TD_PAGE);
    guest_memory_open(&write_only, TD_PAGE);
    fill_random(ram.bytes, SMALL_MAP_SIZE, 5);
    fill_random(next.bytes, SMALL_MAP_SIZE, 6);
    fill_random(read_only.bytes, TD_PAGE, 7);
    fill_random(read_only_messages, TD_PAGE, 8);
    ck_assert_int_eq(vu_client_dma_map(client, GUEST_RAM, SMALL_MAP_SIZE, rw, ram.fd, 0), 0);
    ck_assert_int_eq(
        vu_client_dma_map(client, GUEST_RAM + SMALL_MAP_SIZE, SMALL_MAP_SIZE, rw, next.fd, 0), 0);
    ck_assert_int_eq(
        vu_client_dma_map(client, READ_ONLY_RAM, TD_PAGE, VU_DMA_FLAG_READABLE, read_only.fd, 0),
        0);
    ck_assert_int_eq(
        vu_client_dma_map(client, WRITE_ONLY_RAM, TD_PAGE, VU_DMA_FLAG_WRITABLE, write_only.fd, 0),
        0);
    ck_assert_int_eq(vu_client_dma_map_memory(client, READ_ONLY_MSG, TD_PAGE, VU_DMA_FLAG_READABLE,
                                              read_only_messages),
                     0);
    /* Mapped without a descriptor, and without memory the client would serve it from. */
    ck_assert_int_eq(vu_client_dma_map(client, UNSERVED_RAM, TD_PAGE, rw, -1, 0), 0);
    enable_bus_master();

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint32_t expected =
            TD_STATUS_ERROR(cases[i].code) | (cases[i].messages ? TD_STATUS_MESSAGES : 0);
        uint8_t read_only_before[TD_PAGE];

        memcpy(before, ram.bytes, SMALL_MAP_SIZE);
        memcpy(next_before, next.bytes, SMALL_MAP_SIZE);
        memcpy(read_only_before, read_only.bytes, TD_PAGE);
        ck_assert_msg(dma_run(&cases[i].job) == expected, "case %zu: status %#x, expected %#x", i,
                      read32(TD_DMA_STATUS), expected);
        ck_assert_msg(read32(TD_DMA_ERRNO) == cases[i].error, "case %zu: errno %u", i,
                      read32(TD_DMA_ERRNO));
        ck_assert_uint_eq(read32(TD_DMA_ERROR_COUNT), ++errors);
        ck_assert_uint_eq(read32(TD_INT_STATUS), TD_INT_DMA);
        write32(TD_INT_ACK, TD_INT_DMA);
        /* Nothing was written where the operation failed before writing. */
        ck_assert_int_eq(memcmp(ram.bytes, before, SMALL_MAP_SIZE), 0);
        ck_assert_int_eq(memcmp(next.bytes, next_before, SMALL_MAP_SIZE), 0);
        ck_assert_int_eq(memcmp(read_only.bytes, read_only_before, TD_PAGE), 0);

        /* The next operation works, and clears the error. */
        ck_assert_uint_eq(dma_run(&(struct dma_job){
                              .operation = TD_CHECKSUM, .source = GUEST_RAM + i, .length = 64}),
                          TD_DONE);
        ck_assert_uint_eq(read32(TD_DMA_ERRNO), 0);
        ck_assert_uint_eq(read32(TD_DMA_CHECKSUM), reference_crc32(ram.bytes + i, 64));
        ck_assert_uint_eq(read32(TD_DMA_DONE_COUNT), ++done);
        ck_assert_uint_eq(read32(TD_INT_STATUS), TD_INT_DMA);
        write32(TD_INT_ACK, TD_INT_DMA);
    }

    /* Bus Master Enable clear; the checks before it come first. */
    set_command(PCI_COMMAND_MEMORY);
    ck_assert_uint_eq(
        dma_run(&(struct dma_job){.operation = TD_FILL, .destination = GUEST_RAM, .length = 16}),
        TD_STATUS_ERROR(TD_ERROR_BUS_MASTER));
    ck_assert_uint_eq(read32(TD_DMA_ERRNO), EPERM);
    ck_assert_uint_eq(dma_run(&(struct dma_job){.operation = TD_FILL, .length = 0}),
                      TD_STATUS_ERROR(TD_ERROR_LENGTH));
    ck_assert_uint_eq(
        dma_run(&(struct dma_job){.operation = TD_FILL, .destination = top, .length = 2}),
        TD_STATUS_ERROR(TD_ERROR_WRAP));
    ck_assert_uint_eq(dma_run(&(struct dma_job){.operation = 9, .length = 0}),
                      TD_STATUS_ERROR(TD_ERROR_OPERATION));
    ck_assert_int_eq(memcmp(ram.bytes, before, SMALL_MAP_SIZE), 0);
    ck_assert_uint_eq(read32(TD_DMA_ERROR_COUNT), errors + 4);
    enable_bus_master();

    /* What the failing FILL would have written, had it run. */
    ck_assert_uint_eq(dma_run(&(struct dma_job){.operation = TD_FILL,
                                                .source = top, /* FILL reads no source */
                                                .destination = GUEST_RAM,
                                                .length = 16,
                                                .pattern = 0x01010101}),
                      TD_DONE);
    ck_assert_uint_eq(ram.bytes[15], 0x01);
    ck_assert_uint_eq(dma_run(&(struct dma_job){.operation = TD_CHECKSUM,
                                                .source = GUEST_RAM,
                                                .destination = top, /* nor writes one */
                                                .length = 16}),
                      TD_DONE);
    ck_assert_uint_eq(read32(TD_DMA_DONE_COUNT), done + 2);

    guest_memory_close(&ram);
    guest_memory_close(&next);
    guest_memory_close(&read_only);
    guest_memory_close(&write_only);
    free(before);
    free(next_before);
}
END_TEST

START_TEST(dma_completion_interrupt)
{
    struct guest_memory ram;
    int fds[16];

    guest_memory_open(&ram, SMALL_MAP_SIZE);
    ck_assert_int_eq(vu_client_dma_map(client, GUEST_RAM, SMALL_MAP_SIZE,
                                       VU_DMA_FLAG_READABLE | VU_DMA_FLAG_WRITABLE, ram.fd, 0),
                     0);
    open_eventfds(fds, 16);
    arm_eventfds(VFIO_PCI_MSIX_IRQ_INDEX, 0, 16, fds);
    enable_msix(0, 16);
    enable_bus_master();

    const uint32_t control = TD_CONTROL_IRQ_ENABLE | TD_CONTROL_VECTOR(3);
    ck_assert_uint_eq(
        dma_run_direct(&(struct dma_job){
            .operation = TD_FILL, .destination = GUEST_RAM, .length = 32, .control = control}),
        TD_DONE);
    ck_assert_uint_eq(fired_mask(fds, 16), 1u << 3);
    ck_assert_uint_eq(read32(TD_DMA_CONTROL), control); /* GO reads 0 */
    ck_assert_uint_eq(read32(TD_INT_STATUS), TD_INT_DMA);
    ck_assert_uint_eq(read32(TD_INT_LAST_VECTOR), 3);
    ck_assert_uint_eq(read32(TD_INT_COUNT), 1);

    /* Without IRQ_ENABLE: the status bit, no interrupt. */
    write32(TD_INT_ACK, TD_INT_DMA);
    ck_assert_uint_eq(dma_run_direct(&(struct dma_job){.operation = TD_CHECKSUM,
                                                       .source = GUEST_RAM,
                                                       .length = 32,
                                                       .control = TD_CONTROL_VECTOR(3)}),
                      TD_DONE);
    ck_assert_uint_eq(fired_mask(fds, 16), 0);
    ck_assert_uint_eq(read32(TD_INT_STATUS), TD_INT_DMA);
    ck_assert_uint_eq(read32(TD_INT_COUNT), 1);

    /* An operation that ends in ERROR raises it too. */
    ck_assert_uint_eq(
        dma_run_direct(&(struct dma_job){.operation = TD_CHECKSUM,
                                         .source = NOWHERE,
                                         .length = 32,
                                         .control = TD_CONTROL_IRQ_ENABLE | TD_CONTROL_VECTOR(15)}),
        TD_STATUS_ERROR(TD_ERROR_UNMAPPED));
    ck_assert_uint_eq(fired_mask(fds, 16), 1u << 15);
    ck_assert_uint_eq(read32(TD_INT_COUNT), 2);

    /* A vector out of range fails to raise; the operation itself is DONE. */
    ck_assert_uint_eq(
        dma_run_direct(&(struct dma_job){.operation = TD_CHECKSUM,
                                         .source = GUEST_RAM,
                                         .length = 32,
                                         .control = TD_CONTROL_IRQ_ENABLE | TD_CONTROL_VECTOR(16)}),
        TD_DONE);
    ck_assert_uint_eq(fired_mask(fds, 16), 0);
    ck_assert_uint_eq(read32(TD_INT_LAST_VECTOR), 16);
    ck_assert_uint_eq(read32(TD_INT_LAST_ERROR), EINVAL);
    ck_assert_uint_eq(read32(TD_INT_FAIL_COUNT), 1);

    /* A narrow write of VECTOR keeps IRQ_ENABLE and does not start anything. */
    uint16_t vector = 7;
    ck_assert_int_eq(bar0_access(TD_DMA_CONTROL + 2, &vector, 2, true), 0);
    ck_assert_uint_eq(read32(TD_DMA_CONTROL), TD_CONTROL_IRQ_ENABLE | TD_CONTROL_VECTOR(7));
    ck_assert_uint_eq(read32(TD_DMA_DONE_COUNT), 3);
    write8(TD_DMA_CONTROL, TD_CONTROL_GO | TD_CONTROL_IRQ_ENABLE);
    ck_assert_uint_eq(read32(TD_DMA_DONE_COUNT), 4);
    ck_assert_uint_eq(fired_mask(fds, 16), 1u << 7);

    close_eventfds(fds, 16);
    guest_memory_close(&ram);
}
END_TEST

/* A GO while BUSY is ignored and flagged; the running operation is undisturbed. */
START_TEST(dma_busy_rejected)
{
    static uint8_t memory[2 * TD_PAGE];
    const uint32_t fill = TD_FILL, go = TD_CONTROL_GO;
    struct guest_memory ram;

    fill_random(memory, sizeof(memory), 9);
    guest_memory_open(&ram, SMALL_MAP_SIZE);
    ck_assert_int_eq(
        vu_client_dma_map_memory(client, MESSAGE_RAM, sizeof(memory), VU_DMA_FLAG_READABLE, memory),
        0);
    ck_assert_int_eq(vu_client_dma_map(client, GUEST_RAM, SMALL_MAP_SIZE,
                                       VU_DMA_FLAG_READABLE | VU_DMA_FLAG_WRITABLE, ram.fd, 0),
                     0);
    enable_bus_master();

    dma_program(&(struct dma_job){
        .operation = TD_CHECKSUM, .source = MESSAGE_RAM, .length = sizeof(memory)});
    write32(TD_DMA_CONTROL, TD_CONTROL_GO);
    /* Posted, so the client answers the DMA_READ only while it waits for the status read,
     * after both reached the device. */
    ck_assert_int_eq(
        vu_client_region_write_posted(client, VFIO_USERD_REGION_BAR0, TD_DMA_OPERATION, &fill, 4),
        0);
    ck_assert_int_eq(
        vu_client_region_write_posted(client, VFIO_USERD_REGION_BAR0, TD_DMA_CONTROL, &go, 4), 0);
    ck_assert_uint_eq(read32(TD_DMA_STATUS), TD_BUSY | TD_STATUS_REJECTED | TD_STATUS_MESSAGES);
    ck_assert_uint_eq(dma_wait(), TD_DONE | TD_STATUS_REJECTED | TD_STATUS_MESSAGES);
    ck_assert_uint_eq(read32(TD_DMA_CHECKSUM), reference_crc32(memory, sizeof(memory)));
    ck_assert_uint_eq(read32(TD_DMA_DONE_COUNT), 1);
    ck_assert_uint_eq(read32(TD_DMA_ERROR_COUNT), 0);

    /* The next accepted GO clears REJECTED. */
    ck_assert_uint_eq(
        dma_run_direct(&(struct dma_job){
            .operation = TD_FILL, .destination = GUEST_RAM, .length = 4, .pattern = 0x04030201}),
        TD_DONE);
    ck_assert_uint_eq(ram.bytes[3], 0x04);
    guest_memory_close(&ram);
}
END_TEST

/* A reset abandons the transfer that waits for the client; a GO before the late answer
 * ends BUSY, and the answer is ignored. */
START_TEST(dma_abandoned_by_reset)
{
    static uint8_t memory[TD_PAGE];
    const uint32_t one = 1;
    int fds[16];

    fill_random(memory, sizeof(memory), 10);
    open_eventfds(fds, 16);
    arm_eventfds(VFIO_PCI_MSIX_IRQ_INDEX, 0, 16, fds);
    enable_msix(0, 16);
    ck_assert_int_eq(vu_client_dma_map_memory(client, MESSAGE_RAM, sizeof(memory),
                                              VU_DMA_FLAG_READABLE | VU_DMA_FLAG_WRITABLE, memory),
                     0);
    enable_bus_master();

    dma_program(&(struct dma_job){
        .operation = TD_CHECKSUM, .source = MESSAGE_RAM, .length = sizeof(memory)});
    write32(TD_DMA_CONTROL, TD_CONTROL_GO | TD_CONTROL_IRQ_ENABLE | TD_CONTROL_VECTOR(1));
    /* Posted, as QEMU sends MMIO writes: both arrive before the DMA_READ is answered. */
    ck_assert_int_eq(
        vu_client_region_write_posted(client, VFIO_USERD_REGION_BAR0, TD_RESET, &one, 4), 0);
    ck_assert_int_eq(
        vu_client_region_write_posted(client, VFIO_USERD_REGION_BAR0, TD_DMA_CONTROL, &one, 4), 0);
    ck_assert_uint_eq(read32(TD_DMA_STATUS), TD_STATUS_ERROR(TD_ERROR_BUSY));
    ck_assert_uint_eq(read32(TD_DMA_ERRNO), EBUSY);
    /* The late answer has arrived by now: the result stays ignored, no interrupt. */
    ck_assert_uint_eq(read32(TD_DMA_STATUS), TD_STATUS_ERROR(TD_ERROR_BUSY));
    ck_assert_uint_eq(read32(TD_DMA_CHECKSUM), 0);
    ck_assert_uint_eq(read32(TD_DMA_DONE_COUNT), 0);
    ck_assert_uint_eq(read32(TD_DMA_ERROR_COUNT), 1);
    ck_assert_uint_eq(read32(TD_INT_COUNT), 0);
    ck_assert_uint_eq(fired_mask(fds, 16), 0);

    /* Free again. */
    ck_assert_uint_eq(
        dma_run(&(struct dma_job){.operation = TD_CHECKSUM,
                                  .source = MESSAGE_RAM + 1,
                                  .length = 100,
                                  .control = TD_CONTROL_IRQ_ENABLE | TD_CONTROL_VECTOR(2)}),
        TD_DONE | TD_STATUS_MESSAGES);
    ck_assert_uint_eq(read32(TD_DMA_CHECKSUM), reference_crc32(memory + 1, 100));
    ck_assert_uint_eq(fired_mask(fds, 16), 1u << 2);

    /* A late answer that is an error is ignored as well. */
    ck_assert_int_eq(vu_client_dma_map(client, UNSERVED_RAM, TD_PAGE,
                                       VU_DMA_FLAG_READABLE | VU_DMA_FLAG_WRITABLE, -1, 0),
                     0);
    dma_program(&(struct dma_job){.operation = TD_CHECKSUM, .source = UNSERVED_RAM, .length = 16});
    write32(TD_DMA_CONTROL, TD_CONTROL_GO);
    ck_assert_int_eq(
        vu_client_region_write_posted(client, VFIO_USERD_REGION_BAR0, TD_RESET, &one, 4), 0);
    ck_assert_uint_eq(read32(TD_DMA_STATUS), TD_IDLE);
    ck_assert_uint_eq(read32(TD_DMA_STATUS), TD_IDLE);
    ck_assert_uint_eq(read32(TD_DMA_ERROR_COUNT), 0);
    ck_assert_uint_eq(read32(TD_INT_STATUS), 0);

    /* DEVICE_RESET abandons it the same way. */
    dma_program(&(struct dma_job){
        .operation = TD_CHECKSUM, .source = MESSAGE_RAM, .length = sizeof(memory)});
    write32(TD_DMA_CONTROL, TD_CONTROL_GO);
    ck_assert_int_eq(vu_client_device_reset(client), 0);
    ck_assert_uint_eq(read32(TD_DMA_STATUS), TD_IDLE);
    ck_assert_uint_eq(read32(TD_DMA_STATUS), TD_IDLE);
    ck_assert_uint_eq(read32(TD_DMA_DONE_COUNT), 0);
    close_eventfds(fds, 16);
}
END_TEST

START_TEST(dma_client_leaves_mid_transfer)
{
    static uint8_t memory[TD_PAGE];
    struct guest_memory ram;

    ck_assert_int_eq(
        vu_client_dma_map_memory(client, MESSAGE_RAM, sizeof(memory), VU_DMA_FLAG_READABLE, memory),
        0);
    enable_bus_master();
    dma_program(&(struct dma_job){
        .operation = TD_CHECKSUM, .source = MESSAGE_RAM, .length = sizeof(memory)});
    write32(TD_DMA_CONTROL, TD_CONTROL_GO);
    /* Gone without answering the DMA_READ. */
    reconnect(NULL);
    ck_assert_uint_eq(read32(TD_DMA_STATUS), TD_STATUS_ERROR(TD_ERROR_IO) | TD_STATUS_MESSAGES);
    ck_assert_uint_eq(read32(TD_DMA_ERRNO), ECONNRESET);
    ck_assert_uint_eq(read32(TD_DMA_ERROR_COUNT), 1);

    /* The next client's maps work; the old one's are gone. */
    guest_memory_open(&ram, SMALL_MAP_SIZE);
    ck_assert_int_eq(vu_client_dma_map(client, GUEST_RAM, SMALL_MAP_SIZE,
                                       VU_DMA_FLAG_READABLE | VU_DMA_FLAG_WRITABLE, ram.fd, 0),
                     0);
    ck_assert_uint_eq(
        dma_run(&(struct dma_job){.operation = TD_CHECKSUM, .source = MESSAGE_RAM, .length = 16}),
        TD_STATUS_ERROR(TD_ERROR_UNMAPPED));
    ck_assert_uint_eq(
        dma_run_direct(&(struct dma_job){
            .operation = TD_FILL, .destination = GUEST_RAM, .length = 16, .pattern = 0x77777777}),
        TD_DONE);
    ck_assert_uint_eq(ram.bytes[15], 0x77);
    guest_memory_close(&ram);
}
END_TEST

/* --- BAR2 device RAM --------------------------------------------------------------------- */

START_TEST(ram_mapping_and_traps)
{
    const uint32_t size = 1u << 20;
    struct vfio_region_sparse_mmap_area *areas = NULL;
    struct vfio_region_info *info = NULL;
    uint8_t *data = malloc(size), *mapping;
    uint32_t area_count = 0;
    uint8_t nonzero = 0;
    int fd = -1;

    ck_assert_int_eq(vu_client_region_info(client, VFIO_PCI_BAR2_REGION_INDEX, &info, &fd), 0);
    ck_assert_uint_eq(info->size, size);
    ck_assert_uint_eq(info->flags, VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE |
                                       VFIO_REGION_INFO_FLAG_MMAP | VFIO_REGION_INFO_FLAG_CAPS);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(vu_client_region_sparse_areas(info, &areas, &area_count), 0);
    ck_assert_uint_eq(area_count, 1);
    ck_assert_uint_eq(areas[0].offset, TD_PAGE);
    ck_assert_uint_eq(areas[0].size, size - TD_PAGE);
    mapping = mmap(NULL, size - TD_PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
                   (off_t)(info->offset + TD_PAGE));
    ck_assert_ptr_ne(mapping, MAP_FAILED);

    /* Zero at creation. */
    ck_assert_int_eq(vu_client_region_read(client, VFIO_USERD_REGION_BAR2, 0, data, size), 0);
    for (uint32_t i = 0; i < size; i++)
        nonzero |= data[i];
    ck_assert_uint_eq(nonzero, 0);
    ck_assert_uint_eq(read32(TD_RAM_TRAP_READS), 1);

    /* The mapping and REGION_READ/WRITE are the same memory, at any length and alignment;
     * beyond page 0 nothing is counted. */
    fill_random(mapping, size - TD_PAGE, 11);
    ck_assert_int_eq(
        vu_client_region_read(client, VFIO_USERD_REGION_BAR2, TD_PAGE, data, size - TD_PAGE), 0);
    ck_assert_int_eq(memcmp(data, mapping, size - TD_PAGE), 0);
    ck_assert_int_eq(vu_client_region_read(client, VFIO_USERD_REGION_BAR2, TD_PAGE + 5, data, 3),
                     0);
    ck_assert_int_eq(memcmp(data, mapping + 5, 3), 0);
    ck_assert_int_eq(vu_client_region_write(client, VFIO_USERD_REGION_BAR2, TD_PAGE + 101,
                                            "through a message", 17),
                     0);
    ck_assert_int_eq(memcmp(mapping + 101, "through a message", 17), 0);
    ck_assert_int_eq(vu_client_region_write(client, VFIO_USERD_REGION_BAR2, size - 1, "!", 1), 0);
    ck_assert_uint_eq(mapping[size - TD_PAGE - 1], '!');
    ck_assert_uint_eq(read32(TD_RAM_TRAP_READS), 1);
    ck_assert_uint_eq(read32(TD_RAM_TRAP_WRITES), 0);

    /* Page 0: every access that starts there counts once, whatever its length. */
    fill_random(data, 256, 12);
    ck_assert_int_eq(vu_client_region_write(client, VFIO_USERD_REGION_BAR2, 0, data, 1), 0);
    ck_assert_int_eq(vu_client_region_write(client, VFIO_USERD_REGION_BAR2, 4095, data + 1, 1), 0);
    ck_assert_int_eq(vu_client_region_write(client, VFIO_USERD_REGION_BAR2, 4000, data + 2, 200),
                     0);
    ck_assert_int_eq(memcmp(mapping, data + 2 + 96, 104), 0); /* the part beyond page 0 */
    ck_assert_uint_eq(read32(TD_RAM_TRAP_WRITES), 3);
    uint8_t back[200];
    ck_assert_int_eq(vu_client_region_read(client, VFIO_USERD_REGION_BAR2, 0, back, 1), 0);
    ck_assert_uint_eq(back[0], data[0]);
    ck_assert_int_eq(vu_client_region_read(client, VFIO_USERD_REGION_BAR2, 4000, back, 200), 0);
    ck_assert_int_eq(memcmp(back, data + 2, 200), 0);
    ck_assert_uint_eq(read32(TD_RAM_TRAP_READS), 3);
    /* Each entry of a REGION_WRITE_MULTI is one write. */
    struct vu_write_multi_entry entries[2] = {
        {.offset = 8, .region = VFIO_USERD_REGION_BAR2, .count = 8, .data = "multi-01"},
        {.offset = TD_PAGE + 8, .region = VFIO_USERD_REGION_BAR2, .count = 8, .data = "multi-02"},
    };
    ck_assert_int_eq(vu_client_region_write_multi(client, entries, 2), 0);
    ck_assert_int_eq(memcmp(mapping + 8, "multi-02", 8), 0);
    ck_assert_uint_eq(read32(TD_RAM_TRAP_WRITES), 4);

    /* Writes through the mapping are not seen by the device, so not counted. */
    memcpy(mapping + 0x8000, "mapped", 6);
    ck_assert_int_eq(vu_client_region_read(client, VFIO_USERD_REGION_BAR2, 0x9000, back, 6), 0);
    ck_assert_int_eq(memcmp(back, "mapped", 6), 0);

    /* Outside the BAR: refused, not counted. */
    ck_assert_int_eq(vu_client_region_read(client, VFIO_USERD_REGION_BAR2, size - 2, back, 4),
                     -EINVAL);
    ck_assert_int_eq(vu_client_region_write(client, VFIO_USERD_REGION_BAR2, size, back, 1),
                     -EINVAL);
    ck_assert_uint_eq(read32(TD_RAM_TRAP_READS), 3);
    ck_assert_uint_eq(read32(TD_RAM_TRAP_WRITES), 4);

    munmap(mapping, size - TD_PAGE);
    close(fd);
    free(areas);
    free(info);
    free(data);
}
END_TEST

/* The RAM's memfd reaches the client, which must not be able to resize it: a shrunken file
 * under the server's own mapping made the next REGION_READ raise SIGBUS and ended the whole
 * server (every device with it). The order below is the attack's: truncate, then read. */
START_TEST(ram_fd_cannot_be_resized)
{
    const uint32_t size = 1u << 20;
    struct vfio_region_info *info = NULL;
    uint8_t *data = malloc(size);
    int fd = -1, shrink, shrink_errno, grow, grow_errno, seals;

    ck_assert_int_eq(vu_client_region_info(client, VFIO_PCI_BAR2_REGION_INDEX, &info, &fd), 0);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(vu_client_region_write(client, VFIO_USERD_REGION_BAR2, size - 4, "tail", 4),
                     0);
    shrink = ftruncate(fd, 0);
    shrink_errno = errno;
    ck_assert_int_eq(vu_client_region_read(client, VFIO_USERD_REGION_BAR2, 0, data, size), 0);
    ck_assert_int_eq(memcmp(data + size - 4, "tail", 4), 0);
    ck_assert_int_eq(shrink, -1);
    ck_assert_int_eq(shrink_errno, EPERM);
    grow = ftruncate(fd, (off_t)size * 64);
    grow_errno = errno;
    ck_assert_int_eq(grow, -1);
    ck_assert_int_eq(grow_errno, EPERM);
    /* The seals themselves are sealed; the RAM stays writable, as its flags say. */
    seals = fcntl(fd, F_GET_SEALS);
    ck_assert_int_eq(seals & (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL),
                     F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
    ck_assert_int_eq(seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE), 0);
    ck_assert_int_eq(fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE), -1);
    ck_assert_int_eq(errno, EPERM);
    ck_assert_uint_eq(read32(TD_MAGIC), TD_MAGIC_VALUE);
    close(fd);
    free(info);
    free(data);
}
END_TEST

/* --- Reset -------------------------------------------------------------------------------- */

struct dirty_state {
    struct guest_memory ram;
    uint64_t ram_bar[2]; /* what was written at BAR2 0x100 and 0x10000 */
};

/* Moves every register the page lists away from its reset value. */
static void dirty_every_register(struct dirty_state *state)
{
    guest_memory_open(&state->ram, SMALL_MAP_SIZE);
    fill_random(state->ram.bytes, SMALL_MAP_SIZE, 13);
    ck_assert_int_eq(vu_client_dma_map(client, GUEST_RAM, SMALL_MAP_SIZE,
                                       VU_DMA_FLAG_READABLE | VU_DMA_FLAG_WRITABLE, state->ram.fd,
                                       0),
                     0);
    for (uint32_t i = 0; i < 4; i++)
        write32(TD_SCRATCH0 + 4 * i, 0xa0000000 + i);
    write64(TD_SCRATCH64, 0x6464646464646464ull);
    state->ram_bar[0] = 0x1111222233334444ull;
    state->ram_bar[1] = 0x5555666677778888ull;
    ck_assert_int_eq(
        vu_client_region_write(client, VFIO_USERD_REGION_BAR2, 0x100, &state->ram_bar[0], 8), 0);
    ck_assert_int_eq(
        vu_client_region_write(client, VFIO_USERD_REGION_BAR2, 0x10000, &state->ram_bar[1], 8), 0);
    uint64_t ignored;
    ck_assert_int_eq(vu_client_region_read(client, VFIO_USERD_REGION_BAR2, 0, &ignored, 8), 0);

    enable_bus_master();
    ck_assert_uint_eq(ring(5), 0); /* INTx without an eventfd */
    ck_assert_uint_eq(dma_run_direct(&(struct dma_job){
                          .operation = TD_CHECKSUM, .source = GUEST_RAM, .length = 64}),
                      TD_DONE);
    ck_assert_uint_eq(dma_run_direct(&(struct dma_job){.operation = 5, .length = 1}),
                      TD_STATUS_ERROR(TD_ERROR_OPERATION));
    set_command(PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER | PCI_COMMAND_INTX_DISABLE);
    enable_msi(0);
    ck_assert_uint_eq(ring(9), EINVAL); /* one MSI vector enabled */
    dma_program(&(struct dma_job){.operation = TD_FILL,
                                  .source = GUEST_RAM + 1,
                                  .destination = GUEST_RAM + 2,
                                  .length = 3,
                                  .pattern = 4});
    write32(TD_DMA_CONTROL, TD_CONTROL_IRQ_ENABLE | TD_CONTROL_VECTOR(5));

    const uint32_t registers[] = {
        TD_SCRATCH0,       TD_SCRATCH1,      TD_SCRATCH2,        TD_SCRATCH3,
        TD_SCRATCH64,      TD_SCRATCH64 + 4, TD_RAM_TRAP_READS,  TD_RAM_TRAP_WRITES,
        TD_INT_STATUS,     TD_INT_COUNT,     TD_INT_LAST_VECTOR, TD_INT_LAST_ERROR,
        TD_INT_FAIL_COUNT, TD_DMA_SOURCE,    TD_DMA_DESTINATION, TD_DMA_LENGTH,
        TD_DMA_PATTERN,    TD_DMA_OPERATION, TD_DMA_CONTROL,     TD_DMA_STATUS,
        TD_DMA_CHECKSUM,   TD_DMA_ERRNO,     TD_DMA_DONE_COUNT,  TD_DMA_ERROR_COUNT,
    };
    for (size_t i = 0; i < sizeof(registers) / sizeof(registers[0]); i++)
        ck_assert_msg(read32(registers[i]) != 0, "register %#x still 0", registers[i]);
}

/* Every register at its reset value, parameters and BAR2 as they were. */
static void assert_reset_state(struct dirty_state *state)
{
    uint64_t ram_bar[2];

    for (uint32_t offset = 0; offset < TD_MESSAGE_COUNT; offset += 4) {
        uint32_t expected = 0;
        switch (offset) {
        case TD_MAGIC:
            expected = TD_MAGIC_VALUE;
            break;
        case TD_VERSION:
            expected = TD_VERSION_VALUE;
            break;
        case TD_FEATURES:
            expected = TD_FEATURES_DEFAULT;
            break;
        case TD_RAM_SIZE:
            expected = 1u << 20;
            break;
        case TD_MSIX_VECTORS:
            expected = 16;
            break;
        case TD_MSI_VECTORS:
            expected = 4;
            break;
        case TD_DMA_MAX_LENGTH:
            expected = TD_DMA_MAX;
            break;
        default:
            break;
        }
        ck_assert_msg(read32(offset) == expected, "register %#x: %#x, expected %#x", offset,
                      read32(offset), expected);
    }
    ck_assert_int_eq(vu_client_region_read(client, VFIO_USERD_REGION_BAR2, 0x100, &ram_bar[0], 8),
                     0);
    ck_assert_int_eq(vu_client_region_read(client, VFIO_USERD_REGION_BAR2, 0x10000, &ram_bar[1], 8),
                     0);
    ck_assert_uint_eq(ram_bar[0], state->ram_bar[0]);
    ck_assert_uint_eq(ram_bar[1], state->ram_bar[1]);
    ck_assert_uint_eq(read32(TD_RAM_TRAP_READS), 1); /* the read just above */
    guest_memory_close(&state->ram);
}

START_TEST(reset_register)
{
    struct dirty_state state;
    uint32_t msix = capability_offset(PCI_CAP_ID_MSIX);
    uint64_t writes;

    dirty_every_register(&state);
    config_write16(msix + PCI_MSIX_FLAGS, PCI_MSIX_FLAGS_ENABLE);
    config_write32(0x10, 0xfe000000);
    /* Bit 0 clear: nothing happens. */
    write32(TD_RESET, 0xfffffffe);
    write8(TD_RESET + 1, 0xff);
    ck_assert_uint_eq(read32(TD_SCRATCH0), 0xa0000000);
    ck_assert_uint_eq(read32(TD_INT_COUNT), 1);
    writes = message_count(VU_COMMAND_REGION_WRITE);

    write8(TD_RESET, 1);
    assert_reset_state(&state);
    /* Configuration space is left alone. */
    ck_assert_uint_eq(config_read16(PCI_COMMAND),
                      PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER | PCI_COMMAND_INTX_DISABLE);
    ck_assert_uint_eq(config_read16(msix + PCI_MSIX_FLAGS) & PCI_MSIX_FLAGS_ENABLE,
                      PCI_MSIX_FLAGS_ENABLE);
    ck_assert_uint_eq(config_read32(0x10), 0xfe000000);
    /* Message counters are the host's: not reset. */
    ck_assert_uint_eq(message_count(VU_COMMAND_REGION_WRITE), writes + 1);

    /* The device works from its reset state; any value with bit 0 resets. */
    write32(TD_SCRATCH1, 0x12345678);
    write32(TD_RESET, 0xffffffff);
    ck_assert_uint_eq(read32(TD_SCRATCH1), 0);
}
END_TEST

START_TEST(device_reset_message)
{
    struct dirty_state state;
    uint64_t resets = message_count(VU_COMMAND_DEVICE_RESET);

    ck_assert_uint_eq(resets, 0);
    dirty_every_register(&state);
    ck_assert_int_eq(vu_client_device_reset(client), 0);
    assert_reset_state(&state);
    ck_assert_uint_eq(message_count(VU_COMMAND_DEVICE_RESET), 1);
    ck_assert_uint_gt(message_count(VU_COMMAND_REGION_WRITE), 20);
    /* The host reset configuration space too: DMA needs Bus Master Enable again. */
    ck_assert_uint_eq(config_read16(PCI_COMMAND), 0);
    guest_memory_open(&state.ram, SMALL_MAP_SIZE);
    ck_assert_int_eq(vu_client_dma_map(client, GUEST_RAM + SMALL_MAP_SIZE, SMALL_MAP_SIZE,
                                       VU_DMA_FLAG_READABLE | VU_DMA_FLAG_WRITABLE, state.ram.fd,
                                       0),
                     0);
    const struct dma_job job = {
        .operation = TD_FILL, .destination = GUEST_RAM + SMALL_MAP_SIZE, .length = 8, .pattern = 3};
    ck_assert_uint_eq(dma_run_direct(&job), TD_STATUS_ERROR(TD_ERROR_BUS_MASTER));
    enable_bus_master();
    ck_assert_uint_eq(dma_run_direct(&job), TD_DONE);
    ck_assert_uint_eq(state.ram.bytes[7], 0);
    ck_assert_uint_eq(state.ram.bytes[4], 3);
    ck_assert_int_eq(vu_client_device_reset(client), 0);
    ck_assert_uint_eq(message_count(VU_COMMAND_DEVICE_RESET), 2);
    guest_memory_close(&state.ram);
}
END_TEST

/* --- Message counters -------------------------------------------------------------------- */

enum { COUNTERS = 32 };

static void read_counters(uint64_t counts[COUNTERS])
{
    for (uint32_t n = 0; n < COUNTERS; n++)
        counts[n] = message_count(n);
}

static int raw_request(uint16_t command, const void *payload, size_t length)
{
    size_t reply_length;

    return vu_client_request(client, command, payload, length, NULL, 0, NULL, 0, &reply_length,
                             NULL, 0, NULL);
}

START_TEST(message_counters)
{
    uint64_t before[COUNTERS], after[COUNTERS], expected[COUNTERS] = {0};
    struct vfio_region_info *info;
    struct vu_region_io_fd *entries;
    struct vu_device_info device_info;
    struct vfio_irq_info irq_info;
    uint8_t payload[32] = {0};
    uint32_t count, value = 1;
    size_t fd_count;
    int fd;

    /* Counted on arrival: the first read of a fresh device sees itself, after VERSION. */
    ck_assert_uint_eq(message_count(VU_COMMAND_REGION_READ), 1);
    ck_assert_uint_eq(message_count(VU_COMMAND_VERSION), 1);
    ck_assert_uint_eq(message_count(VU_COMMAND_REGION_READ), 3);

    read_counters(before);
    ck_assert_int_eq(vu_client_dma_map(client, 0x1000, 0x1000, VU_DMA_FLAG_READABLE, -1, 0), 0);
    ck_assert_int_eq(vu_client_dma_map(client, 0x1000, 0x1000, VU_DMA_FLAG_READABLE, -1, 0),
                     -EEXIST); /* failures count too */
    expected[VU_COMMAND_DMA_MAP] = 2;
    ck_assert_int_eq(vu_client_dma_unmap(client, 0x1000, 0x1000, 0), 0);
    expected[VU_COMMAND_DMA_UNMAP] = 1;
    ck_assert_int_eq(vu_client_device_info(client, &device_info), 0);
    expected[VU_COMMAND_DEVICE_GET_INFO] = 1;
    ck_assert_int_eq(vu_client_region_info(client, VFIO_PCI_BAR0_REGION_INDEX, &info, &fd), 0);
    free(info);
    expected[VU_COMMAND_DEVICE_GET_REGION_INFO] = 1;
    ck_assert_int_eq(vu_client_region_io_fds(client, VFIO_PCI_BAR0_REGION_INDEX, &entries, &count,
                                             &fd, 1, &fd_count),
                     0);
    free(entries);
    expected[VU_COMMAND_DEVICE_GET_REGION_IO_FDS] = 1;
    ck_assert_int_eq(vu_client_irq_info(client, VFIO_PCI_MSIX_IRQ_INDEX, &irq_info), 0);
    ck_assert_int_eq(vu_client_irq_info(client, 99, &irq_info), -EINVAL);
    expected[VU_COMMAND_DEVICE_GET_IRQ_INFO] = 2;
    ck_assert_int_eq(vu_client_set_irqs(client, VFIO_PCI_INTX_IRQ_INDEX,
                                        VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER, 0, 0,
                                        NULL, NULL),
                     0);
    expected[VU_COMMAND_DEVICE_SET_IRQS] = 1;
    write32(TD_SCRATCH0, 1);
    ck_assert_int_eq(
        vu_client_region_write_posted(client, VFIO_USERD_REGION_BAR0, TD_SCRATCH1, &value, 4), 0);
    ck_assert_int_eq(bar0_access(TD_SCRATCH0 + 1, &value, 4, true), -EINVAL);
    expected[VU_COMMAND_REGION_WRITE] = 3;
    /* Server-to-client commands sent by a client: refused, counted. */
    ck_assert_int_eq(raw_request(VU_COMMAND_DMA_READ, payload, 16), -EINVAL);
    expected[VU_COMMAND_DMA_READ] = 1;
    ck_assert_int_eq(raw_request(VU_COMMAND_DMA_WRITE, payload, 20), -EINVAL);
    ck_assert_int_eq(raw_request(VU_COMMAND_DMA_WRITE, payload, 16), -EINVAL);
    expected[VU_COMMAND_DMA_WRITE] = 2;
    ck_assert_int_eq(vu_client_device_reset(client), 0);
    expected[VU_COMMAND_DEVICE_RESET] = 1;
    struct vu_write_multi_entry write = {.offset = TD_SCRATCH2, .count = 4};
    ck_assert_int_eq(vu_client_region_write_multi(client, &write, 1), 0);
    expected[VU_COMMAND_REGION_WRITE_MULTI] = 1;
    ck_assert_int_eq(raw_request(VU_COMMAND_DEVICE_FEATURE, payload, 8), -ENOTSUP);
    expected[VU_COMMAND_DEVICE_FEATURE] = 1;
    ck_assert_int_eq(raw_request(VU_COMMAND_MIG_DATA_READ, payload, 8), -ENOTSUP);
    ck_assert_int_eq(raw_request(VU_COMMAND_MIG_DATA_READ, payload, 8), -ENOTSUP);
    expected[VU_COMMAND_MIG_DATA_READ] = 2;
    ck_assert_int_eq(raw_request(VU_COMMAND_MIG_DATA_WRITE, payload, 8), -ENOTSUP);
    expected[VU_COMMAND_MIG_DATA_WRITE] = 1;
    /* Command numbers the page does not list read 0, even when a client sends them. */
    ck_assert_int_eq(raw_request(0, NULL, 0), -ENOSYS);
    ck_assert_int_eq(raw_request(14, NULL, 0), -ENOSYS);
    ck_assert_int_eq(raw_request(19, NULL, 0), -ENOSYS);
    ck_assert_int_eq(raw_request(25, NULL, 0), -ENOSYS);
    read_counters(after);

    /* 32 reads between the two snapshots' reads of counter 9. */
    expected[VU_COMMAND_REGION_READ] = COUNTERS;
    for (uint32_t n = 0; n < COUNTERS; n++)
        ck_assert_msg(after[n] - before[n] == expected[n],
                      "MESSAGE_COUNT[%u] grew by %llu, not %llu", n,
                      (unsigned long long)(after[n] - before[n]), (unsigned long long)expected[n]);
    ck_assert_uint_eq(after[0], 0);
    ck_assert_uint_eq(after[14], 0);
    for (uint32_t n = 19; n < COUNTERS; n++)
        ck_assert_uint_eq(after[n], 0);

    /* Replies to the device's own DMA_READ/DMA_WRITE are not counted anywhere. */
    static uint8_t memory[TD_PAGE];
    ck_assert_int_eq(vu_client_dma_map_memory(client, MESSAGE_RAM, sizeof(memory),
                                              VU_DMA_FLAG_READABLE | VU_DMA_FLAG_WRITABLE, memory),
                     0);
    enable_bus_master();
    read_counters(before);
    ck_assert_uint_eq(dma_run(&(struct dma_job){.operation = TD_COPY,
                                                .source = MESSAGE_RAM,
                                                .destination = MESSAGE_RAM + 2048,
                                                .length = 2048}),
                      TD_DONE | TD_STATUS_MESSAGES);
    read_counters(after);
    ck_assert_uint_eq(after[VU_COMMAND_DMA_READ], before[VU_COMMAND_DMA_READ]);
    ck_assert_uint_eq(after[VU_COMMAND_DMA_WRITE], before[VU_COMMAND_DMA_WRITE]);

    /* Kept over connections; VERSION counts each. */
    reconnect(NULL);
    ck_assert_uint_eq(message_count(VU_COMMAND_VERSION), 2);
    ck_assert_uint_eq(message_count(VU_COMMAND_DEVICE_RESET), 1);
    ck_assert_uint_eq(message_count(VU_COMMAND_DMA_MAP), after[VU_COMMAND_DMA_MAP]);
}
END_TEST

/* --- Connections ------------------------------------------------------------------------- */

START_TEST(reconnect_keeps_scratch_and_ram)
{
    struct vfio_region_info *info = NULL;
    struct guest_memory ram;
    uint8_t *mapping, bytes[16];
    int fd = -1, intx;

    for (uint32_t i = 0; i < 4; i++)
        write32(TD_SCRATCH0 + 4 * i, 0xc0de0000 + i);
    write64(TD_SCRATCH64, 0x0123456789abcdefull);
    ck_assert_int_eq(vu_client_region_write(client, VFIO_USERD_REGION_BAR2, 0x10, "page zero", 10),
                     0);
    ck_assert_int_eq(vu_client_region_info(client, VFIO_PCI_BAR2_REGION_INDEX, &info, &fd), 0);
    mapping = mmap(NULL, TD_PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
                   (off_t)(info->offset + 0x40000));
    ck_assert_ptr_ne(mapping, MAP_FAILED);
    memcpy(mapping + 0x20, "mapped page", 12);
    munmap(mapping, TD_PAGE);
    close(fd);
    free(info);
    guest_memory_open(&ram, SMALL_MAP_SIZE);
    ck_assert_int_eq(vu_client_dma_map(client, GUEST_RAM, SMALL_MAP_SIZE,
                                       VU_DMA_FLAG_READABLE | VU_DMA_FLAG_WRITABLE, ram.fd, 0),
                     0);
    open_eventfds(&intx, 1);
    arm_eventfds(VFIO_PCI_INTX_IRQ_INDEX, 0, 1, &intx);
    enable_bus_master();

    reconnect(NULL);
    for (uint32_t i = 0; i < 4; i++)
        ck_assert_uint_eq(read32(TD_SCRATCH0 + 4 * i), 0xc0de0000 + i);
    ck_assert_uint_eq(read64(TD_SCRATCH64), 0x0123456789abcdefull);
    ck_assert_int_eq(vu_client_region_read(client, VFIO_USERD_REGION_BAR2, 0x10, bytes, 10), 0);
    ck_assert_str_eq((char *)bytes, "page zero");
    ck_assert_int_eq(vu_client_region_read(client, VFIO_USERD_REGION_BAR2, 0x40020, bytes, 12), 0);
    ck_assert_str_eq((char *)bytes, "mapped page");
    /* What belonged to the client went with it: its DMA map and its eventfd. */
    ck_assert_uint_eq(
        dma_run(&(struct dma_job){.operation = TD_FILL, .destination = GUEST_RAM, .length = 4}),
        TD_STATUS_ERROR(TD_ERROR_UNMAPPED));
    ck_assert_uint_eq(ring(0), 0);
    ck_assert_uint_eq(eventfd_take(intx), 0);

    /* Twice more, to be sure nothing accumulates. */
    reconnect(NULL);
    reconnect(NULL);
    ck_assert_uint_eq(read32(TD_SCRATCH3), 0xc0de0003);
    close_eventfds(&intx, 1);
    guest_memory_close(&ram);
}
END_TEST

static Suite *testdev_suite(void)
{
    Suite *suite = suite_create("testdev");
    struct {
        const char *name;
        const TTest *test;
    } cases[] = {
        {"parameters", identity_defaults},
        {"parameters", identity_parameters},
        {"parameters", ram_size_parameter},
        {"parameters", msix_vectors_parameter},
        {"parameters", msi_vectors_parameter},
        {"parameters", bad_parameters_refused},
        {"parameters", parameter_limits_accepted},
        {"registers", identification_registers},
        {"registers", scratch_registers_every_width},
        {"registers", access_rules_enforced},
        {"interrupts", doorbell_through_intx},
        {"interrupts", intx_interrupt_disable},
        {"interrupts", doorbell_through_msi},
        {"interrupts", doorbell_through_msix},
        {"interrupts", msix_table_kept_by_client},
        {"interrupts", msix_table_written_by_client},
        {"interrupts", interrupt_status_and_ack},
        {"dma", dma_direct_memory},
        {"dma", dma_messages_main_socket},
        {"dma", dma_messages_twin_socket},
        {"dma", dma_errors},
        {"dma", dma_completion_interrupt},
        {"dma", dma_busy_rejected},
        {"dma", dma_abandoned_by_reset},
        {"dma", dma_client_leaves_mid_transfer},
        {"ram", ram_mapping_and_traps},
        {"ram", ram_fd_cannot_be_resized},
        {"reset", reset_register},
        {"reset", device_reset_message},
        {"counters", message_counters},
        {"connection", reconnect_keeps_scratch_and_ram},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        TCase *test_case = tcase_create(cases[i].name);
        tcase_add_checked_fixture(test_case, setup, teardown);
        /* Generous: the whole suite also runs under valgrind. */
        tcase_set_timeout(test_case, 120);
        tcase_add_test(test_case, cases[i].test);
        suite_add_tcase(suite, test_case);
    }
    return suite;
}

/*
 * The suite runs twice: against testdev.so as built today, and against the same sources
 * built with the frozen ABI 1.0 header (tests/plugins/abi-1.0), which is what a plugin
 * built before ABI 1.1 hands the host: a 1.0 plugin must keep working unchanged.
 */
int main(void)
{
    static const char *const builds[] = {"plugins/testdev.so", "tests/plugins/testdev-abi-1.0.so"};
    const char *build = getenv("VFIO_USERD_BUILD_DIR");
    char path[4096], message[512];
    int status = EXIT_SUCCESS;

    for (unsigned i = 0; i < 2; i++) {
        snprintf(path, sizeof(path), "%s/%s", build != NULL ? build : "build/plain", builds[i]);
        if (vu_plugin_load(path, &testdev, message, sizeof(message)) < 0) {
            fprintf(stderr, "test_testdev: %s: %s\n", path, message);
            return EXIT_FAILURE;
        }
        fprintf(stderr, "test_testdev: %s (plugin ABI %u.%u)\n", path, testdev.plugin->abi_major,
                testdev.plugin->abi_minor);
        if (test_run_suite(testdev_suite()) != EXIT_SUCCESS)
            status = EXIT_FAILURE;
        vu_plugin_unload(&testdev);
    }
    return status;
}
