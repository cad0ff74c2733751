/*
 * Protocol core end to end: the in-tree client talks to a device served by the real
 * endpoint, session and device engine over a UNIX socket. Each command's happy path and
 * its hostile cases; after each hostile case the same device must still serve a
 * well-formed request, and no descriptor may leak on either side (both live in this
 * process, so /proc/self/fd counts them all).
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
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "client.h"
#include "device.h"
#include "endpoint.h"
#include "log.h"
#include "mock_device.h"
#include "session.h"
#include "test_server.h"
#include "test_runner.h"

static struct test_server server;
static struct vu_client *client;
static int fds_before;

/* Log lines the server wrote about accept() failing, and about handshake timeouts. */
static unsigned accept_failure_lines, handshake_timeout_lines;

/* The default sink's format, with the lines the tests count counted. */
static void counting_sink(enum vfio_userd_log_level level, const char *device, const char *message)
{
    if (strstr(message, "cannot accept a client") != NULL)
        __atomic_add_fetch(&accept_failure_lines, 1, __ATOMIC_RELAXED);
    if (strstr(message, "did not complete VERSION") != NULL)
        __atomic_add_fetch(&handshake_timeout_lines, 1, __ATOMIC_RELAXED);
    fprintf(stderr, "<%d>%s: %s\n", (int)level, device != NULL ? device : "-", message);
}

static uint64_t cpu_usec(void)
{
    struct rusage usage;

    getrusage(RUSAGE_SELF, &usage);
    return (uint64_t)(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) * 1000000 +
           (uint64_t)(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec);
}

static void setup(void)
{
    /* Fresh counts per test, also when check does not fork (CK_FORK=no, valgrind). */
    memset(&mock_observed, 0, sizeof(mock_observed));
    fds_before = test_count_open_fds();
    ck_assert_int_eq(test_server_start(&server, &mock_plugin, NULL), 0);
    ck_assert_int_eq(vu_client_connect(server.socket_path, NULL, &client), 0);
}

static void teardown(void)
{
    vu_client_close(client);
    client = NULL;
    test_server_stop(&server);
    ck_assert_int_eq(test_count_open_fds(), fds_before);
}

static uint32_t read32(uint32_t region, uint64_t offset)
{
    uint32_t value = 0xdeadbeef;
    ck_assert_int_eq(vu_client_region_read(client, region, offset, &value, 4), 0);
    return value;
}

static void write32(uint32_t region, uint64_t offset, uint32_t value)
{
    ck_assert_int_eq(vu_client_region_write(client, region, offset, &value, 4), 0);
}

/* The device still answers a plain request. */
static void assert_device_serves(void)
{
    ck_assert_uint_eq(read32(VFIO_USERD_REGION_BAR0, MOCK_REG_MAGIC), MOCK_MAGIC);
}

static int raw_request(uint16_t command, const void *payload, size_t length, void *reply,
                       size_t capacity, size_t *reply_length)
{
    size_t ignored;
    return vu_client_request(client, command, payload, length, NULL, 0, reply, capacity,
                             reply_length ? reply_length : &ignored, NULL, 0, NULL);
}

static bool eventfd_fired(int fd)
{
    struct pollfd pollfd = {.fd = fd, .events = POLLIN};
    uint64_t value;

    if (poll(&pollfd, 1, 0) != 1)
        return false;
    ck_assert_int_eq(read(fd, &value, sizeof(value)), sizeof(value));
    return value > 0;
}

/* Connects a raw socket to the device (no client library). */
static int raw_connect(void)
{
    struct sockaddr_un address = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

    ck_assert_int_ge(fd, 0);
    strcpy(address.sun_path, server.socket_path);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&address, sizeof(address)), 0);
    return fd;
}

/* Waits until the server side has dropped the current client. */
static void wait_disconnected(void)
{
    for (int i = 0; i < 500 && MOCK_OBSERVED(disconnects) < MOCK_OBSERVED(connects); i++)
        usleep(2000);
    ck_assert_uint_eq(MOCK_OBSERVED(disconnects), MOCK_OBSERVED(connects));
}

static void reconnect(void)
{
    vu_client_close(client);
    client = NULL;
    wait_disconnected();
    ck_assert_int_eq(vu_client_connect(server.socket_path, NULL, &client), 0);
}

/* --- VERSION ------------------------------------------------------------------------- */

START_TEST(version_negotiated)
{
    const struct vu_capabilities *session = vu_client_session(client);

    ck_assert_uint_eq(vu_client_server_major(client), 0);
    ck_assert_uint_le(vu_client_server_minor(client), 1);
    ck_assert_uint_eq(session->max_msg_fds, VU_SERVER_MAX_MSG_FDS);
    ck_assert_uint_eq(session->max_data_xfer_size, VU_SERVER_MAX_DATA_XFER_SIZE);
    ck_assert_uint_eq(session->pgsizes, 4096);
    ck_assert(session->write_multiple);
    ck_assert(!vu_client_twin_socket_active(client));
    assert_device_serves();
}
END_TEST

START_TEST(version_without_json_uses_defaults)
{
    struct vu_client_options options;

    vu_client_close(client);
    wait_disconnected();
    vu_client_options_default(&options);
    options.send_json = false;
    ck_assert_int_eq(vu_client_connect(server.socket_path, &options, &client), 0);
    /* write_multiple was not proposed, so it is not granted. */
    ck_assert(!vu_client_session(client)->write_multiple);
    assert_device_serves();
}
END_TEST

START_TEST(version_unsupported_major_closes)
{
    struct vu_client_options options;

    vu_client_close(client);
    wait_disconnected();
    ck_assert_int_eq(vu_client_connect_raw(server.socket_path, &client), 0);
    vu_client_options_default(&options);
    options.major = 7;
    ck_assert_int_lt(vu_client_negotiate(client, &options), 0);
    reconnect();
    assert_device_serves();
}
END_TEST

START_TEST(version_bad_json_rejected)
{
    const char payload[] = "\0\0\0\0{\"capabilities\": {\"max_msg_fds\": \"many\"}}";

    vu_client_close(client);
    wait_disconnected();
    ck_assert_int_eq(vu_client_connect_raw(server.socket_path, &client), 0);
    ck_assert_int_eq(raw_request(VU_COMMAND_VERSION, payload, sizeof(payload), NULL, 0, NULL),
                     -EINVAL);
    /* Still waiting for a good VERSION. */
    ck_assert_int_eq(vu_client_negotiate(client, NULL), 0);
    assert_device_serves();
}
END_TEST

START_TEST(command_before_version_rejected)
{
    struct vu_device_info info = {.argsz = sizeof(info)};

    vu_client_close(client);
    wait_disconnected();
    ck_assert_int_eq(vu_client_connect_raw(server.socket_path, &client), 0);
    ck_assert_int_eq(raw_request(VU_COMMAND_DEVICE_GET_INFO, &info, sizeof(info), NULL, 0, NULL),
                     -EINVAL);
    ck_assert_int_eq(vu_client_negotiate(client, NULL), 0);
    assert_device_serves();
}
END_TEST

START_TEST(version_twice_rejected)
{
    const char payload[4] = {0};

    ck_assert_int_eq(raw_request(VU_COMMAND_VERSION, payload, sizeof(payload), NULL, 0, NULL),
                     -EINVAL);
    assert_device_serves();
}
END_TEST

/* --- Device, region and IRQ information ---------------------------------------------- */

START_TEST(device_info)
{
    struct vu_device_info info;

    ck_assert_int_eq(vu_client_device_info(client, &info), 0);
    ck_assert_uint_eq(info.argsz, sizeof(info));
    ck_assert_uint_eq(info.flags, VFIO_DEVICE_FLAGS_PCI | VFIO_DEVICE_FLAGS_RESET);
    ck_assert_uint_eq(info.num_regions, VFIO_PCI_NUM_REGIONS);
    ck_assert_uint_eq(info.num_irqs, VFIO_PCI_NUM_IRQS);

    info = (struct vu_device_info){.argsz = 8};
    ck_assert_int_eq(raw_request(VU_COMMAND_DEVICE_GET_INFO, &info, sizeof(info), NULL, 0, NULL),
                     -EINVAL);
    ck_assert_int_eq(raw_request(VU_COMMAND_DEVICE_GET_INFO, &info, 8, NULL, 0, NULL), -EINVAL);
    assert_device_serves();
}
END_TEST

static void check_region(uint32_t index, uint64_t size, uint32_t flags, bool has_fd)
{
    struct vfio_region_info *info = NULL;
    int fd = -1;

    ck_assert_int_eq(vu_client_region_info(client, index, &info, &fd), 0);
    ck_assert_uint_eq(info->index, index);
    ck_assert_uint_eq(info->size, size);
    ck_assert_uint_eq(info->flags, flags);
    ck_assert_int_eq(fd >= 0, has_fd);
    if (fd >= 0)
        close(fd);
    free(info);
}

START_TEST(region_info_every_region)
{
    const uint32_t rw = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE;
    struct vfio_region_sparse_mmap_area *areas = NULL;
    struct vfio_region_info *info = NULL;
    uint32_t area_count = 0;
    int fd = -1;

    check_region(VFIO_PCI_BAR0_REGION_INDEX, 4096, rw, false);
    check_region(VFIO_PCI_BAR1_REGION_INDEX, 256, rw, false);
    check_region(VFIO_PCI_BAR3_REGION_INDEX, 0, 0, false); /* upper half of BAR2 */
    check_region(VFIO_PCI_BAR4_REGION_INDEX, 8192, rw, false);
    check_region(VFIO_PCI_BAR5_REGION_INDEX, 0, 0, false);
    check_region(VFIO_PCI_ROM_REGION_INDEX, 4096, VFIO_REGION_INFO_FLAG_READ, false);
    check_region(VFIO_PCI_CONFIG_REGION_INDEX, 4096, rw, false);
    check_region(VFIO_PCI_VGA_REGION_INDEX, 0, 0, false);

    ck_assert_int_eq(vu_client_region_info(client, VFIO_PCI_BAR2_REGION_INDEX, &info, &fd), 0);
    ck_assert_uint_eq(info->size, MOCK_BAR2_SIZE);
    ck_assert_uint_eq(info->flags, rw | VFIO_REGION_INFO_FLAG_MMAP | VFIO_REGION_INFO_FLAG_CAPS);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(vu_client_region_sparse_areas(info, &areas, &area_count), 0);
    ck_assert_uint_eq(area_count, 2);
    ck_assert_uint_eq(areas[0].offset, 4096);
    ck_assert_uint_eq(areas[0].size, 28 * 1024);
    ck_assert_uint_eq(areas[1].offset, 48 * 1024);
    ck_assert_uint_eq(areas[1].size, 16 * 1024);
    free(areas);

    /* What the client maps is what REGION_READ/WRITE see. */
    uint8_t *mapping = mmap(NULL, areas ? 28 * 1024 : 28 * 1024, PROT_READ | PROT_WRITE, MAP_SHARED,
                            fd, (off_t)(info->offset + 4096));
    ck_assert_ptr_ne(mapping, MAP_FAILED);
    memcpy(mapping, "mapped!", 8);
    char text[8];
    ck_assert_int_eq(vu_client_region_read(client, VFIO_PCI_BAR2_REGION_INDEX, 4096, text, 8), 0);
    ck_assert_str_eq(text, "mapped!");
    ck_assert_int_eq(
        vu_client_region_write(client, VFIO_PCI_BAR2_REGION_INDEX, 4096 + 8, "written", 8), 0);
    ck_assert_str_eq((char *)mapping + 8, "written");
    munmap(mapping, 28 * 1024);
    close(fd);
    free(info);

    /* Beyond the PCI regions. */
    ck_assert_int_eq(vu_client_region_info(client, VFIO_PCI_NUM_REGIONS, &info, &fd), -EINVAL);
    assert_device_serves();
}
END_TEST

/* One raw GET_REGION_INFO with `argsz`: the reply's fixed part and length. */
static void region_info_raw(uint32_t index, uint32_t argsz, struct vfio_region_info *info,
                            uint8_t *reply, size_t capacity, size_t *length)
{
    struct vfio_region_info request = {.argsz = argsz, .index = index};
    int fds[2];
    size_t fd_count = 0;

    ck_assert_int_eq(vu_client_request(client, VU_COMMAND_DEVICE_GET_REGION_INFO, &request,
                                       sizeof(request), NULL, 0, reply, capacity, length, fds, 2,
                                       &fd_count),
                     0);
    for (size_t i = 0; i < fd_count; i++)
        close(fds[i]);
    ck_assert_uint_ge(*length, sizeof(*info));
    memcpy(info, reply, sizeof(*info));
}

/*
 * What QEMU does with the reply (hw/vfio-user/device.c): it refuses a reply with CAPS whose
 * cap_offset is below the fixed part or past argsz, then asks again when argsz grew; and
 * its buffer holds only the argsz it sent.
 */
START_TEST(region_info_small_argsz_reports_needed_size)
{
    const uint32_t needed = sizeof(struct vfio_region_info) +
                            sizeof(struct vfio_region_info_cap_sparse_mmap) +
                            2 * sizeof(struct vfio_region_sparse_mmap_area);
    const uint32_t small[] = {sizeof(struct vfio_region_info), needed - 1};
    struct vfio_region_info request = {.argsz = 16, .index = VFIO_PCI_BAR2_REGION_INDEX};
    struct vfio_region_info info;
    uint8_t reply[4096];
    size_t length = 0;

    for (size_t i = 0; i < sizeof(small) / sizeof(small[0]); i++) {
        region_info_raw(VFIO_PCI_BAR2_REGION_INDEX, small[i], &info, reply, sizeof(reply), &length);
        ck_assert_uint_eq(length, sizeof(info));
        ck_assert_uint_eq(info.argsz, needed);
        ck_assert_uint_eq(info.flags & VFIO_REGION_INFO_FLAG_CAPS, 0);
        ck_assert_uint_eq(info.flags & VFIO_REGION_INFO_FLAG_MMAP, VFIO_REGION_INFO_FLAG_MMAP);
        ck_assert_uint_eq(info.cap_offset, 0);
    }
    /* Asked again with the size it said: the chain, right after the fixed part. */
    region_info_raw(VFIO_PCI_BAR2_REGION_INDEX, needed, &info, reply, sizeof(reply), &length);
    ck_assert_uint_eq(length, needed);
    ck_assert_uint_eq(info.argsz, needed);
    ck_assert_uint_eq(info.flags & VFIO_REGION_INFO_FLAG_CAPS, VFIO_REGION_INFO_FLAG_CAPS);
    ck_assert_uint_eq(info.cap_offset, sizeof(info));
    /* More room than needed: the reply is no longer for it. */
    region_info_raw(VFIO_PCI_BAR2_REGION_INDEX, 4096, &info, reply, sizeof(reply), &length);
    ck_assert_uint_eq(length, needed);
    ck_assert_uint_eq(info.argsz, needed);
    ck_assert_uint_eq(info.cap_offset, sizeof(info));
    /* A region without capabilities, with room to spare. */
    region_info_raw(VFIO_PCI_BAR0_REGION_INDEX, 4096, &info, reply, sizeof(reply), &length);
    ck_assert_uint_eq(length, sizeof(info));
    ck_assert_uint_eq(info.argsz, sizeof(info));
    ck_assert_uint_eq(info.flags & VFIO_REGION_INFO_FLAG_CAPS, 0);
    ck_assert_uint_eq(info.cap_offset, 0);

    ck_assert_int_eq(
        raw_request(VU_COMMAND_DEVICE_GET_REGION_INFO, &request, sizeof(request), NULL, 0, NULL),
        -EINVAL);
    /* A request shorter than the structure. */
    ck_assert_int_eq(raw_request(VU_COMMAND_DEVICE_GET_REGION_INFO, &request, 12, NULL, 0, NULL),
                     -EINVAL);
    assert_device_serves();
}
END_TEST

START_TEST(region_io_fds)
{
    struct vu_region_io_fd *entries = NULL;
    struct vu_region_io_fds_request request = {.argsz = 16, .flags = 1, .index = 0};
    uint32_t count = 99;
    int fds[4];
    size_t fd_count = 0;
    uint64_t one = 1;

    /* BAR0: the doorbell, with datamatch. */
    ck_assert_int_eq(vu_client_region_io_fds(client, VFIO_PCI_BAR0_REGION_INDEX, &entries, &count,
                                             fds, 4, &fd_count),
                     0);
    ck_assert_uint_eq(count, 1);
    ck_assert_uint_eq(fd_count, 1);
    ck_assert_uint_eq(entries[0].offset, MOCK_REG_DOORBELL);
    ck_assert_uint_eq(entries[0].size, 4);
    ck_assert_uint_eq(entries[0].fd_index, 0);
    ck_assert_uint_eq(entries[0].type, VU_IO_FD_TYPE_IOEVENTFD);
    ck_assert_uint_eq(entries[0].flags, VU_KVM_IOEVENTFD_DATAMATCH);
    ck_assert_uint_eq(entries[0].datamatch, MOCK_DOORBELL_MATCH);
    free(entries);
    /* What KVM does on a matching guest write: the device sees that write. */
    ck_assert_int_eq(write(fds[0], &one, sizeof(one)), sizeof(one));
    for (int i = 0; i < 500 && read32(0, MOCK_REG_DOORBELL) == 0; i++)
        usleep(2000);
    ck_assert_uint_eq(read32(0, MOCK_REG_DOORBELL), 1);
    ck_assert_uint_eq(read32(0, MOCK_REG_DOORBELL_VALUE), MOCK_DOORBELL_MATCH);
    close(fds[0]);

    /* BAR1 is an I/O BAR: the entry says PIO, without datamatch. */
    ck_assert_int_eq(vu_client_region_io_fds(client, VFIO_PCI_BAR1_REGION_INDEX, &entries, &count,
                                             fds, 4, &fd_count),
                     0);
    ck_assert_uint_eq(count, 1);
    ck_assert_uint_eq(entries[0].flags, VU_KVM_IOEVENTFD_PIO);
    free(entries);
    ck_assert_int_eq(write(fds[0], &one, sizeof(one)), sizeof(one));
    for (int i = 0; i < 500 && MOCK_OBSERVED(io_doorbells) == 0; i++)
        usleep(2000);
    ck_assert_uint_eq(MOCK_OBSERVED(io_doorbells), 1);
    close(fds[0]);

    /* A region without any: zero sub-regions, no descriptors. */
    ck_assert_int_eq(vu_client_region_io_fds(client, VFIO_PCI_BAR2_REGION_INDEX, &entries, &count,
                                             fds, 4, &fd_count),
                     0);
    ck_assert_uint_eq(count, 0);
    ck_assert_uint_eq(fd_count, 0);
    free(entries);

    /* Too small an argsz: the header says what is needed, and no descriptor comes. */
    struct vu_region_io_fds_request small = {.argsz = 16, .index = 0}, reply;
    size_t length;
    ck_assert_int_eq(vu_client_request(client, VU_COMMAND_DEVICE_GET_REGION_IO_FDS, &small,
                                       sizeof(small), NULL, 0, &reply, sizeof(reply), &length, fds,
                                       4, &fd_count),
                     0);
    ck_assert_uint_eq(length, sizeof(reply));
    ck_assert_uint_eq(reply.argsz, 16 + 40);
    ck_assert_uint_eq(reply.count, 1);
    ck_assert_uint_eq(fd_count, 0);

    ck_assert_int_eq(
        raw_request(VU_COMMAND_DEVICE_GET_REGION_IO_FDS, &request, sizeof(request), NULL, 0, NULL),
        -EINVAL);
    request.flags = 0;
    request.index = VFIO_PCI_BAR3_REGION_INDEX;
    ck_assert_int_eq(
        raw_request(VU_COMMAND_DEVICE_GET_REGION_IO_FDS, &request, sizeof(request), NULL, 0, NULL),
        -EINVAL);
    assert_device_serves();
}
END_TEST

START_TEST(irq_info_every_index)
{
    const struct {
        uint32_t count, flags;
    } expected[] = {
        {1, VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_MASKABLE | VFIO_IRQ_INFO_AUTOMASKED},
        {4, VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_NORESIZE},
        {MOCK_MSIX_VECTORS, VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_MASKABLE},
        {1, VFIO_IRQ_INFO_EVENTFD},
        {1, VFIO_IRQ_INFO_EVENTFD},
    };
    struct vfio_irq_info info;

    for (uint32_t index = 0; index < VFIO_PCI_NUM_IRQS; index++) {
        ck_assert_int_eq(vu_client_irq_info(client, index, &info), 0);
        ck_assert_uint_eq(info.index, index);
        ck_assert_uint_eq(info.count, expected[index].count);
        ck_assert_uint_eq(info.flags, expected[index].flags);
    }
    ck_assert_int_eq(vu_client_irq_info(client, VFIO_PCI_NUM_IRQS, &info), -EINVAL);
    info = (struct vfio_irq_info){.argsz = 4};
    ck_assert_int_eq(
        raw_request(VU_COMMAND_DEVICE_GET_IRQ_INFO, &info, sizeof(info), NULL, 0, NULL), -EINVAL);
    assert_device_serves();
}
END_TEST

/* --- Region access --------------------------------------------------------------------- */

START_TEST(region_read_write)
{
    uint8_t rom[16];

    write32(VFIO_USERD_REGION_BAR0, MOCK_REG_SCRATCH, 0x12345678);
    ck_assert_uint_eq(read32(VFIO_USERD_REGION_BAR0, MOCK_REG_SCRATCH), 0x12345678);
    ck_assert_int_eq(vu_client_region_read(client, VFIO_USERD_REGION_ROM, 4080, rom, 16), 0);
    for (int i = 0; i < 16; i++)
        ck_assert_uint_eq(rom[i], 0xa5);
    uint8_t io[4];
    ck_assert_int_eq(vu_client_region_read(client, VFIO_USERD_REGION_BAR1, 0x10, io, 4), 0);
    ck_assert_uint_eq(io[0], 0x10);
    ck_assert_uint_eq(io[3], 0x13);
    /* One megabyte in one message: the negotiated maximum. */
    uint8_t *big = malloc(MOCK_BAR2_SIZE);
    memset(big, 0x3c, MOCK_BAR2_SIZE);
    ck_assert_int_eq(vu_client_region_write(client, VFIO_USERD_REGION_BAR2, 0, big, MOCK_BAR2_SIZE),
                     0);
    memset(big, 0, MOCK_BAR2_SIZE);
    ck_assert_int_eq(vu_client_region_read(client, VFIO_USERD_REGION_BAR2, 0, big, MOCK_BAR2_SIZE),
                     0);
    ck_assert_uint_eq(big[MOCK_BAR2_SIZE - 1], 0x3c);
    free(big);
}
END_TEST

START_TEST(region_access_hostile)
{
    uint32_t value = 0;
    struct {
        struct vu_region_access access;
        uint8_t data[8];
    } message = {0};

    /* Out of range, overflowing, empty, unknown region, read-only region. */
    ck_assert_int_eq(vu_client_region_read(client, VFIO_USERD_REGION_BAR0, 4096, &value, 4),
                     -EINVAL);
    ck_assert_int_eq(vu_client_region_read(client, VFIO_USERD_REGION_BAR0, 4094, &value, 4),
                     -EINVAL);
    ck_assert_int_eq(
        vu_client_region_read(client, VFIO_USERD_REGION_BAR0, UINT64_MAX - 1, &value, 4), -EINVAL);
    message.access = (struct vu_region_access){.offset = 0, .region = 0, .count = 0};
    ck_assert_int_eq(raw_request(VU_COMMAND_REGION_READ, &message, 16, NULL, 0, NULL), -EINVAL);
    ck_assert_int_eq(vu_client_region_read(client, 42, 0, &value, 4), -EINVAL);
    ck_assert_int_eq(vu_client_region_read(client, VFIO_USERD_REGION_BAR3, 0, &value, 4), -EINVAL);
    ck_assert_int_eq(vu_client_region_write(client, VFIO_USERD_REGION_ROM, 0, &value, 4), -EINVAL);
    /* count larger than max_data_xfer_size. */
    message.access = (struct vu_region_access){.region = 2, .count = (2u << 20)};
    ck_assert_int_eq(raw_request(VU_COMMAND_REGION_READ, &message, 16, NULL, 0, NULL), -EINVAL);
    /* A write whose count disagrees with the message size. */
    message.access = (struct vu_region_access){.offset = MOCK_REG_SCRATCH, .region = 0, .count = 8};
    ck_assert_int_eq(raw_request(VU_COMMAND_REGION_WRITE, &message, 16 + 4, NULL, 0, NULL),
                     -EINVAL);
    /* A read request with trailing bytes. */
    message.access.count = 4;
    ck_assert_int_eq(raw_request(VU_COMMAND_REGION_READ, &message, 24, NULL, 0, NULL), -EINVAL);
    /* The device model refuses an access size it does not implement. */
    ck_assert_int_eq(vu_client_region_read(client, VFIO_USERD_REGION_BAR0, 0, &value, 2), -EINVAL);
    assert_device_serves();
}
END_TEST

START_TEST(posted_writes_are_not_answered)
{
    uint16_t read_id;
    uint32_t value;
    struct vu_header header;
    struct {
        struct vu_region_access access;
        uint32_t data;
    } reply;
    size_t length;

    for (uint32_t i = 1; i <= 5; i++) {
        value = i;
        ck_assert_int_eq(vu_client_region_write_posted(client, VFIO_USERD_REGION_BAR0,
                                                       MOCK_REG_SCRATCH, &value, 4),
                         0);
    }
    /* A posted write that fails is not answered either. */
    ck_assert_int_eq(vu_client_region_write_posted(client, VFIO_USERD_REGION_BAR0, 8192, &value, 4),
                     0);
    struct vu_region_access read = {.offset = MOCK_REG_SCRATCH, .region = 0, .count = 4};
    read_id = vu_client_next_message_id(client);
    ck_assert_int_eq(
        vu_client_send(client, read_id, VU_COMMAND_REGION_READ, 0, &read, sizeof(read), NULL, 0),
        0);
    ck_assert_int_eq(
        vu_client_receive(client, &header, &reply, sizeof(reply), &length, NULL, 0, NULL), 0);
    /* The first reply to arrive is the read's, and it sees the last posted write. */
    ck_assert_uint_eq(header.message_id, read_id);
    ck_assert_uint_eq(header.command, VU_COMMAND_REGION_READ);
    ck_assert_uint_eq(reply.data, 5);
}
END_TEST

START_TEST(pipelined_requests_answered_in_order)
{
    enum { DEPTH = 32 };
    uint16_t ids[DEPTH];

    for (int i = 0; i < DEPTH; i++) {
        /* Pairs: a write, then a read of the same register. */
        uint64_t offset = MOCK_REG_SCRATCH + 4 * ((i / 2) % 3);
        struct {
            struct vu_region_access access;
            uint32_t data;
        } write = {{.offset = offset, .region = 0, .count = 4}, i};
        struct vu_region_access read = {.offset = offset, .count = 4};
        ids[i] = vu_client_next_message_id(client);
        if (i % 2 == 0)
            ck_assert_int_eq(vu_client_send(client, ids[i], VU_COMMAND_REGION_WRITE, 0, &write,
                                            sizeof(write), NULL, 0),
                             0);
        else
            ck_assert_int_eq(vu_client_send(client, ids[i], VU_COMMAND_REGION_READ, 0, &read,
                                            sizeof(read), NULL, 0),
                             0);
    }
    for (int i = 0; i < DEPTH; i++) {
        struct vu_header header;
        uint8_t reply[64];
        size_t length;
        ck_assert_int_eq(
            vu_client_receive(client, &header, reply, sizeof(reply), &length, NULL, 0, NULL), 0);
        ck_assert_uint_eq(header.message_id, ids[i]);
        if (i % 2 == 1) {
            uint32_t value;
            ck_assert_uint_eq(length, 20);
            memcpy(&value, reply + 16, 4);
            /* Reads see the write just before them: commands run in arrival order. */
            ck_assert_uint_eq(value, (uint32_t)(i - 1));
        }
    }
}
END_TEST

START_TEST(pipelined_replies_with_descriptors)
{
    struct vfio_region_info request = {.argsz = 256, .index = VFIO_PCI_BAR2_REGION_INDEX};
    uint16_t ids[3];

    /* Three region infos for the mappable BAR, each reply carrying a descriptor. */
    for (int i = 0; i < 3; i++) {
        ids[i] = vu_client_next_message_id(client);
        ck_assert_int_eq(vu_client_send(client, ids[i], VU_COMMAND_DEVICE_GET_REGION_INFO, 0,
                                        &request, sizeof(request), NULL, 0),
                         0);
    }
    for (int i = 0; i < 3; i++) {
        struct vu_header header;
        uint8_t reply[256];
        size_t length, fd_count = 0;
        int fds[2];
        ck_assert_int_eq(
            vu_client_receive(client, &header, reply, sizeof(reply), &length, fds, 2, &fd_count),
            0);
        ck_assert_uint_eq(header.message_id, ids[i]);
        ck_assert_uint_eq(fd_count, 1);
        close(fds[0]);
    }
    assert_device_serves();
}
END_TEST

/*
 * The server reads as much as has arrived in one go: descriptors must still go with the
 * message they came with, here a DMA_MAP between writes that carry none, and one whose
 * body trails its descriptor-carrying header in a later send.
 */
START_TEST(descriptors_stay_with_their_message_in_one_read)
{
    int fd = memfd_create("guest", MFD_CLOEXEC);
    struct vu_dma_map map = {.argsz = sizeof(map),
                             .flags = VU_DMA_FLAG_READABLE | VU_DMA_FLAG_WRITABLE,
                             .offset = 0,
                             .address = 0x10000000,
                             .size = 0x4000};
    struct {
        struct vu_region_access access;
        uint32_t data;
    } write = {{.offset = MOCK_REG_SCRATCH, .region = 0, .count = 4}, 0x5a};
    uint8_t split[VU_HEADER_SIZE + sizeof(map)];
    uint16_t ids[7];
    int socket_fd = vu_client_socket(client);

    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(ftruncate(fd, 0x4000), 0);
    for (int i = 0; i < 5; i++) {
        ids[i] = vu_client_next_message_id(client);
        if (i == 2)
            ck_assert_int_eq(
                vu_client_send(client, ids[i], VU_COMMAND_DMA_MAP, 0, &map, sizeof(map), &fd, 1),
                0);
        else
            ck_assert_int_eq(vu_client_send(client, ids[i], VU_COMMAND_REGION_WRITE, 0, &write,
                                            sizeof(write), NULL, 0),
                             0);
    }
    /* A second map whose header comes with the descriptor and whose body comes later. */
    ids[5] = vu_client_next_message_id(client);
    map.address = 0x20000000;
    vu_wire_encode_header(split, ids[5], VU_COMMAND_DMA_MAP, sizeof(split), 0, 0);
    memcpy(split + VU_HEADER_SIZE, &map, sizeof(map));
    {
        union {
            struct cmsghdr header;
            char space[CMSG_SPACE(sizeof(int))];
        } control = {0};
        struct iovec iov = {.iov_base = split, .iov_len = 10};
        struct msghdr message = {.msg_iov = &iov,
                                 .msg_iovlen = 1,
                                 .msg_control = control.space,
                                 .msg_controllen = sizeof(control.space)};
        struct cmsghdr *cmsg = CMSG_FIRSTHDR(&message);
        cmsg->cmsg_level = SOL_SOCKET;
        cmsg->cmsg_type = SCM_RIGHTS;
        cmsg->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(cmsg), &fd, sizeof(int));
        ck_assert_int_eq(sendmsg(socket_fd, &message, 0), 10);
        usleep(20000);
        ck_assert_int_eq(send(socket_fd, split + 10, sizeof(split) - 10, 0),
                         (ssize_t)(sizeof(split) - 10));
    }
    ids[6] = vu_client_next_message_id(client);
    ck_assert_int_eq(
        vu_client_send(client, ids[6], VU_COMMAND_REGION_WRITE, 0, &write, sizeof(write), NULL, 0),
        0);
    for (int i = 0; i < 7; i++) {
        struct vu_header header;
        uint8_t reply[64];
        size_t length;
        ck_assert_int_eq(
            vu_client_receive(client, &header, reply, sizeof(reply), &length, NULL, 0, NULL), 0);
        ck_assert_uint_eq(header.message_id, ids[i]);
        /* A descriptor on a write would have been refused. */
        ck_assert_uint_eq(header.flags & VU_FLAGS_ERROR, 0);
    }
    close(fd);
    assert_device_serves();
}
END_TEST

START_TEST(write_multi)
{
    struct vu_write_multi_entry writes[3] = {
        {.offset = MOCK_REG_SCRATCH, .region = 0, .count = 4},
        {.offset = MOCK_REG_SCRATCH + 4, .region = 0, .count = 4},
        {.offset = MOCK_REG_SCRATCH + 8, .region = 0, .count = 4},
    };

    for (int i = 0; i < 3; i++)
        memcpy(writes[i].data, &(uint32_t){0xa0 + i}, 4);
    ck_assert_int_eq(vu_client_region_write_multi(client, writes, 3), 0);
    ck_assert_uint_eq(read32(0, MOCK_REG_SCRATCH + 8), 0xa2);

    /* One bad entry: nothing is applied. */
    memcpy(writes[0].data, &(uint32_t){1}, 4);
    writes[2].count = 9;
    ck_assert_int_eq(vu_client_region_write_multi(client, writes, 3), -EINVAL);
    ck_assert_uint_eq(read32(0, MOCK_REG_SCRATCH), 0xa0);
    writes[2].count = 4;
    writes[2].offset = 4096;
    ck_assert_int_eq(vu_client_region_write_multi(client, writes, 3), -EINVAL);
    ck_assert_uint_eq(read32(0, MOCK_REG_SCRATCH), 0xa0);
    /* A count that disagrees with the message size. */
    uint64_t count = 5;
    uint8_t payload[8 + 24];
    memcpy(payload, &count, 8);
    memcpy(payload + 8, &writes[0], 24);
    ck_assert_int_eq(
        raw_request(VU_COMMAND_REGION_WRITE_MULTI, payload, sizeof(payload), NULL, 0, NULL),
        -EINVAL);
    assert_device_serves();
}
END_TEST

START_TEST(write_multi_needs_negotiation)
{
    struct vu_client_options options;
    struct vu_write_multi_entry write = {.offset = MOCK_REG_SCRATCH, .count = 4};

    vu_client_close(client);
    wait_disconnected();
    vu_client_options_default(&options);
    options.proposal.write_multiple = false;
    ck_assert_int_eq(vu_client_connect(server.socket_path, &options, &client), 0);
    ck_assert_int_eq(vu_client_region_write_multi(client, &write, 1), -ENOTSUP);
    assert_device_serves();
}
END_TEST

/* --- Config space ----------------------------------------------------------------------- */

START_TEST(config_space_and_bar_sizing)
{
    uint8_t config[256];
    uint32_t value;

    /* QEMU reads all 256 bytes at once. */
    ck_assert_int_eq(vu_client_region_read(client, VFIO_USERD_REGION_CONFIG, 0, config, 256), 0);
    ck_assert_uint_eq(config[0] | config[1] << 8, 0x1de5);
    ck_assert_uint_eq(config[2] | config[3] << 8, 0x0001);
    ck_assert_uint_eq(config[0x3d], 1); /* INTA# */
    ck_assert(config[0x06] & 0x10);     /* capability list */

    write32(VFIO_USERD_REGION_CONFIG, 0x10, 0xffffffff);
    ck_assert_uint_eq(read32(VFIO_USERD_REGION_CONFIG, 0x10), 0xfffff000);
    write32(VFIO_USERD_REGION_CONFIG, 0x14, 0xffffffff);
    ck_assert_uint_eq(read32(VFIO_USERD_REGION_CONFIG, 0x14), 0xffffff01);
    write32(VFIO_USERD_REGION_CONFIG, 0x18, 0xffffffff);
    value = read32(VFIO_USERD_REGION_CONFIG, 0x18);
    ck_assert_uint_eq(value, 0xffff0000 | 0x4 | 0x8);
    write32(VFIO_USERD_REGION_CONFIG, 0x1c, 0xffffffff);
    ck_assert_uint_eq(read32(VFIO_USERD_REGION_CONFIG, 0x1c), 0xffffffff);
    write32(VFIO_USERD_REGION_CONFIG, 0x30, 0xffffffff);
    ck_assert_uint_eq(read32(VFIO_USERD_REGION_CONFIG, 0x30), 0xfffff001);
    /* Vendor ID is read-only. */
    write32(VFIO_USERD_REGION_CONFIG, 0x00, 0);
    ck_assert_uint_eq(read32(VFIO_USERD_REGION_CONFIG, 0) & 0xffff, 0x1de5);
    /* Extended config space exists for an Express device; beyond it does not. */
    ck_assert_int_eq(vu_client_region_read(client, VFIO_USERD_REGION_CONFIG, 0x100, &value, 4), 0);
    ck_assert_int_eq(vu_client_region_read(client, VFIO_USERD_REGION_CONFIG, 4096, &value, 4),
                     -EINVAL);
}
END_TEST

/* --- DMA --------------------------------------------------------------------------------- */

static int memory_fd(size_t size, uint8_t fill)
{
    int fd = memfd_create("guest", MFD_CLOEXEC);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(ftruncate(fd, (off_t)size), 0);
    uint8_t *memory = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    memset(memory, fill, size);
    munmap(memory, size);
    return fd;
}

static void start_dma(uint64_t address, uint32_t length, uint32_t operation)
{
    write32(0, MOCK_REG_DMA_ADDRESS_LOW, (uint32_t)address);
    write32(0, MOCK_REG_DMA_ADDRESS_HIGH, (uint32_t)(address >> 32));
    write32(0, MOCK_REG_DMA_LENGTH, length);
    write32(0, MOCK_REG_DMA_GO, operation);
}

/* Polls the status register, serving DMA messages meanwhile, until it leaves BUSY. */
static uint32_t wait_dma(void)
{
    uint32_t status = MOCK_DMA_BUSY;

    for (int i = 0; i < 1000 && status == MOCK_DMA_BUSY; i++) {
        status = read32(0, MOCK_REG_DMA_STATUS);
        if (status == MOCK_DMA_BUSY)
            ck_assert_int_ge(vu_client_serve(client, 5), 0);
    }
    return status;
}

/* Region memory the client may get as a descriptor has a fixed size for good, and memory
 * the client may not write is closed to writable mappings too. */
static void read_region_seals(struct test_server *served, void *argument)
{
    int *seals = argument;

    seals[0] = fcntl(served->device->regions[VFIO_USERD_REGION_BAR2].memory_fd, F_GET_SEALS);
    seals[1] = fcntl(served->device->regions[VFIO_USERD_REGION_ROM].memory_fd, F_GET_SEALS);
}

START_TEST(region_memory_sealed)
{
    const int size_seals = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL;
    int seals[2];

    test_server_call(&server, read_region_seals, seals);
    /* BAR2 is writable, by the client too. */
    ck_assert_int_eq(seals[0], size_seals);
    /* The ROM is read-only to the client. */
    ck_assert_int_eq(seals[1], size_seals | F_SEAL_FUTURE_WRITE);
    assert_device_serves();
}
END_TEST

START_TEST(dma_map_unmap_rules)
{
    int fd = memory_fd(0x10000, 0);
    int fds[2];

    ck_assert_int_eq(vu_client_dma_map(client, 0x100000, 0x10000,
                                       VU_DMA_FLAG_READABLE | VU_DMA_FLAG_WRITABLE, fd, 0),
                     0);
    /* Overlaps, in every position. */
    ck_assert_int_eq(vu_client_dma_map(client, 0x100000, 0x1000, VU_DMA_FLAG_READABLE, -1, 0),
                     -EEXIST);
    ck_assert_int_eq(vu_client_dma_map(client, 0xff000, 0x2000, VU_DMA_FLAG_READABLE, -1, 0),
                     -EEXIST);
    ck_assert_int_eq(vu_client_dma_map(client, 0x10f000, 0x2000, VU_DMA_FLAG_READABLE, -1, 0),
                     -EEXIST);
    /* A range past the end of its file would fault (SIGBUS) when touched: refused. */
    ck_assert_int_eq(vu_client_dma_map(client, 0x200000, 0x20000, VU_DMA_FLAG_READABLE, fd, 0),
                     -EINVAL);
    ck_assert_int_eq(vu_client_dma_map(client, 0x200000, 0x10000, VU_DMA_FLAG_READABLE, fd, 0x1000),
                     -EINVAL);
    /* Adjacent is fine. */
    ck_assert_int_eq(vu_client_dma_map(client, 0x110000, 0x1000, VU_DMA_FLAG_READABLE, -1, 0), 0);
    /* Empty, wrapping, unknown flags, no access at all. */
    ck_assert_int_eq(vu_client_dma_map(client, 0x200000, 0, VU_DMA_FLAG_READABLE, -1, 0), -EINVAL);
    ck_assert_int_eq(
        vu_client_dma_map(client, UINT64_MAX - 0xfff, 0x2000, VU_DMA_FLAG_READABLE, -1, 0),
        -EINVAL);
    ck_assert_int_eq(vu_client_dma_map(client, 0x200000, 0x1000, 0x4, -1, 0), -EINVAL);
    ck_assert_int_eq(vu_client_dma_map(client, 0x200000, 0x1000, 0, -1, 0), -EINVAL);
    /* Two descriptors: refused, and both closed by the server. */
    fds[0] = dup(fd);
    fds[1] = dup(fd);
    struct vu_dma_map map = {
        .argsz = sizeof(map), .flags = VU_DMA_FLAG_READABLE, .address = 0x300000, .size = 0x1000};
    size_t length;
    ck_assert_int_eq(vu_client_request(client, VU_COMMAND_DMA_MAP, &map, sizeof(map), fds, 2, NULL,
                                       0, &length, NULL, 0, NULL),
                     -EINVAL);
    close(fds[0]);
    close(fds[1]);
    /* argsz that disagrees with the structure. */
    map.argsz = 16;
    ck_assert_int_eq(raw_request(VU_COMMAND_DMA_MAP, &map, sizeof(map), NULL, 0, NULL), -EINVAL);
    /* Unmap must match a mapping exactly. */
    ck_assert_int_eq(vu_client_dma_unmap(client, 0x100000, 0x1000, 0), -ENOENT);
    ck_assert_int_eq(vu_client_dma_unmap(client, 0x100000, 0x10000, 0x8), -EINVAL);
    ck_assert_int_eq(vu_client_dma_unmap(client, 0x100000, 0x10000, 0), 0);
    ck_assert_int_eq(vu_client_dma_unmap(client, 0x100000, 0x10000, 0), -ENOENT);
    /* Unmap everything at once. */
    ck_assert_int_eq(vu_client_dma_unmap(client, 0, 0, VU_DMA_UNMAP_FLAG_ALL), 0);
    ck_assert_int_eq(vu_client_dma_unmap(client, 0x110000, 0x1000, 0), -ENOENT);
    ck_assert_uint_eq(MOCK_OBSERVED(dma_maps), 2);
    ck_assert_uint_eq(MOCK_OBSERVED(dma_unmaps), 2);
    close(fd);
    assert_device_serves();
}
END_TEST

START_TEST(dma_map_limit)
{
    struct vu_client_options options;

    vu_client_close(client);
    wait_disconnected();
    vu_client_options_default(&options);
    options.proposal.max_dma_maps = 4;
    ck_assert_int_eq(vu_client_connect(server.socket_path, &options, &client), 0);
    for (uint64_t i = 0; i < 4; i++)
        ck_assert_int_eq(vu_client_dma_map(client, i * 0x1000, 0x1000, VU_DMA_FLAG_READABLE, -1, 0),
                         0);
    ck_assert_int_eq(vu_client_dma_map(client, 0x10000, 0x1000, VU_DMA_FLAG_READABLE, -1, 0),
                     -ENOSPC);
    assert_device_serves();
}
END_TEST

START_TEST(dma_through_mapped_memory)
{
    int fd = memory_fd(0x20000, 0x01);
    int readonly_fd = memory_fd(0x1000, 0x02);

    /* Two maps back to back, before DEVICE_GET_INFO, as QEMU does. */
    ck_assert_int_eq(vu_client_dma_map(client, 0x40000000, 0x20000,
                                       VU_DMA_FLAG_READABLE | VU_DMA_FLAG_WRITABLE, fd, 0),
                     0);
    ck_assert_int_eq(
        vu_client_dma_map(client, 0xfffc0000, 0x1000, VU_DMA_FLAG_READABLE, readonly_fd, 0), 0);

    start_dma(0x40000000 + 0x100, 0x1000, MOCK_DMA_GO_READ);
    ck_assert_uint_eq(wait_dma(), MOCK_DMA_DONE);
    ck_assert_uint_eq(read32(0, MOCK_REG_DMA_SUM), 0x1000);

    write32(0, MOCK_REG_DMA_FILL, 0x77);
    start_dma(0x40000000 + 0x2000, 0x100, MOCK_DMA_GO_WRITE);
    ck_assert_uint_eq(wait_dma(), MOCK_DMA_DONE);
    uint8_t *memory = mmap(NULL, 0x20000, PROT_READ, MAP_SHARED, fd, 0);
    ck_assert_uint_eq(memory[0x2000], 0x77);
    ck_assert_uint_eq(memory[0x20ff], 0x77);
    ck_assert_uint_eq(memory[0x2100], 0x01);
    munmap(memory, 0x20000);

    /* Read-only, unmapped, straddling the end, wrapping: error status, no crash. */
    start_dma(0xfffc0000, 0x10, MOCK_DMA_GO_WRITE);
    ck_assert_uint_eq(wait_dma(), MOCK_DMA_ERROR | EACCES);
    start_dma(0x80000000, 0x10, MOCK_DMA_GO_READ);
    ck_assert_uint_eq(wait_dma(), MOCK_DMA_ERROR | EFAULT);
    start_dma(0x40000000 + 0x1ff00, 0x200, MOCK_DMA_GO_READ);
    ck_assert_uint_eq(wait_dma(), MOCK_DMA_ERROR | EFAULT);
    start_dma(UINT64_MAX - 0x10, 0x100, MOCK_DMA_GO_READ);
    ck_assert_uint_eq(wait_dma(), MOCK_DMA_ERROR | EFAULT);

    close(fd);
    close(readonly_fd);
    assert_device_serves();
}
END_TEST

START_TEST(dma_into_memory_the_client_shrank)
{
    int fd = memory_fd(0x10000, 0x03);

    ck_assert_int_eq(vu_client_dma_map(client, 0x40000000, 0x10000,
                                       VU_DMA_FLAG_READABLE | VU_DMA_FLAG_WRITABLE, fd, 0),
                     0);
    /* Valid when mapped, then the client cuts the file under the mapping. */
    ck_assert_int_eq(ftruncate(fd, 0), 0);
    write32(0, MOCK_REG_DMA_ADDRESS_LOW, 0x40000000);
    write32(0, MOCK_REG_DMA_ADDRESS_HIGH, 0);
    write32(0, MOCK_REG_DMA_LENGTH, 0x1000);
    /* The device's access would raise SIGBUS: the guard absorbs it, and the client that
     * did this is disconnected. The write that started the DMA is still answered or not;
     * either way the connection ends. */
    uint32_t go = MOCK_DMA_GO_READ;
    vu_client_region_write(client, 0, MOCK_REG_DMA_GO, &go, 4);
    wait_disconnected();
    close(fd);
    /* The process lives on, and the device serves the next client. */
    reconnect();
    ck_assert_uint_eq(read32(0, MOCK_REG_DMA_STATUS), MOCK_DMA_DONE);
    ck_assert_uint_eq(read32(0, MOCK_REG_DMA_SUM), 0);
    assert_device_serves();
}
END_TEST

static void dma_through_messages(bool twin)
{
    enum { SIZE = 3u << 20 }; /* larger than max_data_xfer_size: several chunks */
    struct vu_client_options options;
    uint8_t *memory = malloc(SIZE);
    uint32_t expected = 0;

    vu_client_close(client);
    wait_disconnected();
    vu_client_options_default(&options);
    options.proposal.twin_socket = twin;
    ck_assert_int_eq(vu_client_connect(server.socket_path, &options, &client), 0);
    ck_assert_int_eq(vu_client_twin_socket_active(client), twin);

    for (uint32_t i = 0; i < SIZE; i++) {
        memory[i] = (uint8_t)(i * 7);
        expected += memory[i];
    }
    ck_assert_int_eq(vu_client_dma_map_memory(client, 0x100000000ull, SIZE,
                                              VU_DMA_FLAG_READABLE | VU_DMA_FLAG_WRITABLE, memory),
                     0);
    start_dma(0x100000000ull, SIZE, MOCK_DMA_GO_READ);
    ck_assert_uint_eq(wait_dma(), MOCK_DMA_DONE);
    ck_assert_uint_eq(read32(0, MOCK_REG_DMA_SUM), expected);

    write32(0, MOCK_REG_DMA_FILL, 0x5a);
    start_dma(0x100000000ull + 10, SIZE - 20, MOCK_DMA_GO_WRITE);
    ck_assert_uint_eq(wait_dma(), MOCK_DMA_DONE);
    ck_assert_uint_eq(memory[9], (uint8_t)(9 * 7));
    ck_assert_uint_eq(memory[10], 0x5a);
    ck_assert_uint_eq(memory[SIZE - 11], 0x5a);
    ck_assert_uint_eq(memory[SIZE - 10], (uint8_t)((SIZE - 10) * 7));
    free(memory);
    vu_client_close(client);
    client = NULL;
    wait_disconnected();
}

START_TEST(dma_through_messages_main_socket)
{
    dma_through_messages(false);
}
END_TEST

START_TEST(dma_through_messages_twin_socket)
{
    dma_through_messages(true);
}
END_TEST

static void shorten_dma_timeout(struct test_server *test_server, void *argument)
{
    vu_endpoint_set_dma_timeout(test_server->endpoint, 200 * 1000);
}

START_TEST(dma_client_that_never_answers)
{
    static uint8_t memory[4096];

    memset(memory, 1, sizeof(memory));
    test_server_call(&server, shorten_dma_timeout, NULL);
    ck_assert_int_eq(
        vu_client_dma_map_memory(client, 0x1000, sizeof(memory), VU_DMA_FLAG_READABLE, memory), 0);
    start_dma(0x1000, 0x100, MOCK_DMA_GO_READ);
    /* Say nothing for longer than the timeout: the transfer fails, the device lives on. */
    usleep(600 * 1000);
    ck_assert_uint_eq(read32(0, MOCK_REG_DMA_STATUS), MOCK_DMA_ERROR | ETIMEDOUT);
    /* The late answer (sent while that read waited) is ignored; the next transfer works. */
    start_dma(0x1000, 0x100, MOCK_DMA_GO_READ);
    ck_assert_uint_eq(wait_dma(), MOCK_DMA_DONE);
    ck_assert_uint_eq(read32(0, MOCK_REG_DMA_SUM), 0x100);
}
END_TEST

START_TEST(dma_in_flight_when_client_leaves)
{
    static uint8_t memory[4096];

    ck_assert_int_eq(
        vu_client_dma_map_memory(client, 0x1000, sizeof(memory), VU_DMA_FLAG_READABLE, memory), 0);
    start_dma(0x1000, 0x100, MOCK_DMA_GO_READ);
    /* Leave without serving the DMA_READ. */
    reconnect();
    ck_assert_uint_eq(read32(0, MOCK_REG_DMA_STATUS), MOCK_DMA_ERROR | ECONNRESET);
}
END_TEST

/* --- DMA through messages, answered by hand ---------------------------------------------- */

/* Where the tests below map client memory without a descriptor. */
#define RAW_DMA_BASE 0x40000000ull

/* A whole message: the largest DMA chunk and its headers. */
static uint8_t raw_buffer[VU_MAX_MESSAGE_SIZE];

static void read_exact(int fd, void *data, size_t length)
{
    size_t done = 0;

    while (done < length) {
        struct pollfd pollfd = {.fd = fd, .events = POLLIN};
        ssize_t n;

        ck_assert_int_eq(poll(&pollfd, 1, 5000), 1);
        n = recv(fd, (uint8_t *)data + done, length - done, MSG_DONTWAIT);
        ck_assert_int_gt(n, 0);
        done += (size_t)n;
    }
}

/* Reads the next message off the client's main socket into raw_buffer, past the client
 * library, which would otherwise answer the server's DMA commands itself. */
static size_t raw_receive(struct vu_header *header)
{
    int fd = vu_client_socket(client);
    uint8_t bytes[VU_HEADER_SIZE];

    read_exact(fd, bytes, sizeof(bytes));
    ck_assert_int_eq(vu_wire_decode_header(bytes, sizeof(bytes), header), 0);
    ck_assert_uint_le(header->message_size - VU_HEADER_SIZE, sizeof(raw_buffer));
    read_exact(fd, raw_buffer, header->message_size - VU_HEADER_SIZE);
    return header->message_size - VU_HEADER_SIZE;
}

/* Reads the server's next DMA command and checks its address and count. */
static size_t raw_dma_command(uint16_t command, uint64_t address, uint64_t count,
                              struct vu_header *header)
{
    struct vu_dma_access access;
    size_t length = raw_receive(header);

    ck_assert_uint_eq(header->flags & VU_FLAGS_TYPE_MASK, VU_FLAGS_TYPE_COMMAND);
    ck_assert_uint_eq(header->command, command);
    ck_assert_uint_ge(length, sizeof(access));
    memcpy(&access, raw_buffer, sizeof(access));
    ck_assert_uint_eq(access.address, address);
    ck_assert_uint_eq(access.count, count);
    ck_assert_uint_eq(length, sizeof(access) + (command == VU_COMMAND_DMA_WRITE ? count : 0));
    return length;
}

/* Starts the mock's DMA engine with the register write sent raw and reads that write's reply. */
static void raw_go(uint64_t address, uint32_t length, uint32_t operation)
{
    struct {
        struct vu_region_access access;
        uint32_t value;
    } __attribute__((packed)) go = {
        .access = {.offset = MOCK_REG_DMA_GO, .region = 0, .count = 4},
        .value = operation,
    };
    uint16_t id = vu_client_next_message_id(client);
    struct vu_header reply;

    write32(0, MOCK_REG_DMA_ADDRESS_LOW, (uint32_t)address);
    write32(0, MOCK_REG_DMA_ADDRESS_HIGH, (uint32_t)(address >> 32));
    write32(0, MOCK_REG_DMA_LENGTH, length);
    ck_assert_int_eq(
        vu_client_send(client, id, VU_COMMAND_REGION_WRITE, 0, &go, sizeof(go), NULL, 0), 0);
    /* The write's reply comes first: the DMA it started waits for the reply to be queued. */
    raw_receive(&reply);
    ck_assert_uint_eq(reply.flags, VU_FLAGS_TYPE_REPLY);
    ck_assert_uint_eq(reply.message_id, id);
}

/*
 * Starts the mock's DMA engine with the register write sent raw, reads that write's reply
 * and the first DMA command that follows it, which the test then answers by hand.
 */
static void raw_start_dma(uint64_t address, uint32_t length, uint32_t operation,
                          uint64_t first_chunk, struct vu_header *command)
{
    raw_go(address, length, operation);
    raw_dma_command(operation == MOCK_DMA_GO_READ ? VU_COMMAND_DMA_READ : VU_COMMAND_DMA_WRITE,
                    address, first_chunk, command);
}

/* Answers the DMA command `command` with `length` bytes of `payload`. */
static void raw_answer(const struct vu_header *command, const void *payload, size_t length)
{
    ck_assert_int_eq(vu_client_send(client, command->message_id, command->command,
                                    VU_FLAGS_TYPE_REPLY, payload, length, NULL, 0),
                     0);
}

enum reply_layout {
    LAYOUT_SPEC,   /* u64 address, u64 count, data */
    LAYOUT_QEMU,   /* u64 address, u32 count, data, 4 zero bytes (QEMU's padded structure) */
    LAYOUT_PACKED, /* u64 address, u32 count, data */
};

/* Answers a DMA_READ with `data` in `layout`; `count` is the count field's value. */
static void raw_answer_read(const struct vu_header *command, enum reply_layout layout,
                            uint64_t address, uint64_t count, const uint8_t *data,
                            size_t data_length)
{
    static uint8_t reply[VU_MAX_MESSAGE_SIZE];
    size_t count_size = layout == LAYOUT_SPEC ? 8 : 4;
    size_t length = 8 + count_size + data_length + (layout == LAYOUT_QEMU ? 4 : 0);

    memset(reply, 0, length);
    memcpy(reply, &address, 8);
    memcpy(reply + 8, &count, count_size);
    memcpy(reply + 8 + count_size, data, data_length);
    raw_answer(command, reply, length);
}

/* What the mock reports in MOCK_REG_DMA_SUM for a read of `data`. */
static uint32_t byte_sum(const uint8_t *data, size_t length)
{
    uint32_t sum = 0;

    for (size_t i = 0; i < length; i++)
        sum += data[i];
    return sum;
}

/* Bytes none of which is zero, so a chunk read 4 bytes off changes their sum. */
static uint32_t fill_pattern(uint8_t *data, size_t length, uint8_t seed)
{
    for (size_t i = 0; i < length; i++)
        data[i] = (uint8_t)((i * 7 + seed) | 1);
    return byte_sum(data, length);
}

static void raw_dma_map(void)
{
    ck_assert_int_eq(vu_client_dma_map(client, RAW_DMA_BASE, 1u << 20,
                                       VU_DMA_FLAG_READABLE | VU_DMA_FLAG_WRITABLE, -1, 0),
                     0);
}

/* One DMA_READ of `length` bytes answered in `layout`; returns the mock's status. */
static uint32_t raw_read_once(enum reply_layout layout, const uint8_t *data, uint32_t length)
{
    struct vu_header command;

    raw_start_dma(RAW_DMA_BASE + 0x100, length, MOCK_DMA_GO_READ, length, &command);
    raw_answer_read(&command, layout, RAW_DMA_BASE + 0x100, length, data, length);
    return read32(0, MOCK_REG_DMA_STATUS);
}

/*
 * QEMU's DMA_READ reply has a 32-bit count and the data at payload offset 12, in a reply
 * as long as the spec's (its structure is padded to 8 bytes); read at offset 16, the data
 * would be off by four bytes. Each layout is read by its fields, in a session of its own.
 */
START_TEST(dma_read_reply_layouts)
{
    const enum reply_layout layouts[] = {LAYOUT_QEMU, LAYOUT_SPEC, LAYOUT_PACKED};
    uint8_t data[256];

    for (size_t i = 0; i < sizeof(layouts) / sizeof(layouts[0]); i++) {
        uint32_t sum = fill_pattern(data, sizeof(data), (uint8_t)i);

        reconnect();
        raw_dma_map();
        ck_assert_uint_eq(raw_read_once(layouts[i], data, sizeof(data)), MOCK_DMA_DONE);
        ck_assert_uint_eq(read32(0, MOCK_REG_DMA_SUM), sum);
        /* The client keeps its layout; one that switches is refused. */
        ck_assert_uint_eq(raw_read_once(layouts[i], data, sizeof(data)), MOCK_DMA_DONE);
        ck_assert_uint_eq(raw_read_once(layouts[i] == LAYOUT_SPEC ? LAYOUT_QEMU : LAYOUT_SPEC, data,
                                        sizeof(data)),
                          MOCK_DMA_ERROR | EPROTO);
        assert_device_serves();
    }
}
END_TEST

/*
 * Data starting with four zero bytes, in QEMU's layout, also reads as the spec's layout
 * (the zeros then being the upper half of a 64-bit count): refused until an earlier reply
 * showed the client's layout, then read by it.
 */
START_TEST(dma_read_reply_ambiguous_until_layout_known)
{
    uint8_t data[256];
    uint32_t sum;

    raw_dma_map();
    fill_pattern(data, sizeof(data), 3);
    memset(data, 0, 4);
    ck_assert_uint_eq(raw_read_once(LAYOUT_QEMU, data, sizeof(data)), MOCK_DMA_ERROR | EPROTO);
    /* A reply only one layout fits shows the client's... */
    sum = fill_pattern(data, sizeof(data), 5);
    ck_assert_uint_eq(raw_read_once(LAYOUT_QEMU, data, sizeof(data)), MOCK_DMA_DONE);
    ck_assert_uint_eq(read32(0, MOCK_REG_DMA_SUM), sum);
    /* ...and a reply like the first is read by it. */
    memset(data, 0, 4);
    ck_assert_uint_eq(raw_read_once(LAYOUT_QEMU, data, sizeof(data)), MOCK_DMA_DONE);
    ck_assert_uint_eq(read32(0, MOCK_REG_DMA_SUM), byte_sum(data, sizeof(data)));
    /* The layout is the client's: the next one starts over. */
    reconnect();
    raw_dma_map();
    ck_assert_uint_eq(raw_read_once(LAYOUT_QEMU, data, sizeof(data)), MOCK_DMA_ERROR | EPROTO);
    assert_device_serves();
}
END_TEST

/* Replies that name another address or count, or have no layout's length, fail the
 * transfer with EPROTO instead of handing the device data read from the wrong place. */
START_TEST(dma_read_reply_wrong_fields)
{
    const uint64_t address = RAW_DMA_BASE + 0x100;
    uint8_t data[256 + 8];
    struct vu_header command;

    fill_pattern(data, sizeof(data), 1);
    raw_dma_map();
    /* A count short by 4 with the data that goes with it, in the spec's layout: with the
     * length alone it would pass as QEMU's layout of the full count. */
    raw_start_dma(address, 256, MOCK_DMA_GO_READ, 256, &command);
    raw_answer_read(&command, LAYOUT_SPEC, address, 252, data, 256);
    ck_assert_uint_eq(read32(0, MOCK_REG_DMA_STATUS), MOCK_DMA_ERROR | EPROTO);
    raw_start_dma(address, 256, MOCK_DMA_GO_READ, 256, &command);
    raw_answer_read(&command, LAYOUT_QEMU, address, 260, data, 256);
    ck_assert_uint_eq(read32(0, MOCK_REG_DMA_STATUS), MOCK_DMA_ERROR | EPROTO);
    /* Another address. */
    raw_start_dma(address, 256, MOCK_DMA_GO_READ, 256, &command);
    raw_answer_read(&command, LAYOUT_SPEC, address + 0x1000, 256, data, 256);
    ck_assert_uint_eq(read32(0, MOCK_REG_DMA_STATUS), MOCK_DMA_ERROR | EPROTO);
    /* More data than asked for, and less. */
    raw_start_dma(address, 256, MOCK_DMA_GO_READ, 256, &command);
    raw_answer_read(&command, LAYOUT_SPEC, address, 256, data, 264);
    ck_assert_uint_eq(read32(0, MOCK_REG_DMA_STATUS), MOCK_DMA_ERROR | EPROTO);
    raw_start_dma(address, 256, MOCK_DMA_GO_READ, 256, &command);
    raw_answer_read(&command, LAYOUT_PACKED, address, 256, data, 250);
    ck_assert_uint_eq(read32(0, MOCK_REG_DMA_STATUS), MOCK_DMA_ERROR | EPROTO);
    /* A reply to the wrong command. */
    raw_start_dma(address, 256, MOCK_DMA_GO_READ, 256, &command);
    command.command = VU_COMMAND_DMA_WRITE;
    raw_answer(&command, NULL, 0);
    ck_assert_uint_eq(read32(0, MOCK_REG_DMA_STATUS), MOCK_DMA_ERROR | EPROTO);
    /* After all that, a good reply is read. */
    ck_assert_uint_eq(raw_read_once(LAYOUT_SPEC, data, 256), MOCK_DMA_DONE);
    assert_device_serves();
}
END_TEST

/* QEMU answers DMA_WRITE with a bare header; the spec's reply has the address and a 32-bit
 * count; the in-tree client echoes the request's 64-bit count. */
START_TEST(dma_write_replies)
{
    const uint64_t address = RAW_DMA_BASE + 0x200;
    struct {
        uint64_t address;
        uint64_t count;
        uint8_t data[64];
    } __attribute__((packed)) echo;
    const struct {
        uint64_t address, count;
        size_t length;
        uint32_t status;
    } replies[] = {
        {0, 0, 0, MOCK_DMA_DONE},
        {address, 256, 12, MOCK_DMA_DONE},
        {address, 256, 16, MOCK_DMA_DONE},
        {address, 255, 12, MOCK_DMA_ERROR | EPROTO},
        {address, 256 | (1ull << 32), 16, MOCK_DMA_ERROR | EPROTO},
        {address + 1, 256, 16, MOCK_DMA_ERROR | EPROTO},
        {address, 256, 16 + 64, MOCK_DMA_ERROR | EPROTO},
        {address, 256, 8, MOCK_DMA_ERROR | EPROTO},
    };

    raw_dma_map();
    write32(0, MOCK_REG_DMA_FILL, 0x5a);
    for (size_t i = 0; i < sizeof(replies) / sizeof(replies[0]); i++) {
        struct vu_header command;
        uint8_t expected[256];

        raw_start_dma(address, 256, MOCK_DMA_GO_WRITE, 256, &command);
        memset(expected, 0x5a, sizeof(expected));
        ck_assert_mem_eq(raw_buffer + sizeof(struct vu_dma_access), expected, sizeof(expected));
        memset(&echo, 0, sizeof(echo));
        echo.address = replies[i].address;
        echo.count = replies[i].count;
        raw_answer(&command, &echo, replies[i].length);
        ck_assert_uint_eq(read32(0, MOCK_REG_DMA_STATUS), replies[i].status);
    }
    assert_device_serves();
}
END_TEST

/*
 * A client whose DMA_READ replies showed a 32-bit count (QEMU before 11.1) takes its
 * DMA_WRITE data at payload offset 12: once the session knows, it writes them so, as long
 * as the spec's with 4 zero bytes after the data. Until then, and for a client of the
 * spec's layout, they are in the spec's.
 */
START_TEST(dma_write_in_the_client_layout)
{
    const uint64_t address = RAW_DMA_BASE + 0x300;
    const enum reply_layout layouts[] = {LAYOUT_QEMU, LAYOUT_SPEC};
    uint8_t data[64], expected[256];
    uint32_t count32;
    uint64_t count64;

    fill_pattern(data, sizeof(data), 3);
    memset(expected, 0x5a, sizeof(expected));
    for (size_t i = 0; i < sizeof(layouts) / sizeof(layouts[0]); i++) {
        struct vu_header command;
        size_t length;

        if (i > 0)
            reconnect();
        raw_dma_map();
        write32(0, MOCK_REG_DMA_FILL, 0x5a);
        ck_assert_uint_eq(raw_read_once(layouts[i], data, sizeof(data)), MOCK_DMA_DONE);
        raw_go(address, sizeof(expected), MOCK_DMA_GO_WRITE);
        length = raw_receive(&command);
        ck_assert_uint_eq(command.command, VU_COMMAND_DMA_WRITE);
        ck_assert_uint_eq(length, sizeof(struct vu_dma_access) + sizeof(expected));
        ck_assert_mem_eq(raw_buffer, &address, 8);
        if (layouts[i] == LAYOUT_QEMU) {
            memcpy(&count32, raw_buffer + 8, 4);
            ck_assert_uint_eq(count32, sizeof(expected));
            ck_assert_mem_eq(raw_buffer + 12, expected, sizeof(expected));
            ck_assert_mem_eq(raw_buffer + 12 + sizeof(expected), "\0\0\0\0", 4);
        } else {
            memcpy(&count64, raw_buffer + 8, 8);
            ck_assert_uint_eq(count64, sizeof(expected));
            ck_assert_mem_eq(raw_buffer + 16, expected, sizeof(expected));
        }
        raw_answer(&command, NULL, 0);
        ck_assert_uint_eq(read32(0, MOCK_REG_DMA_STATUS), MOCK_DMA_DONE);
    }
    assert_device_serves();
}
END_TEST

static void set_dma_chunk_size(struct test_server *test_server, void *argument)
{
    uint32_t *bytes = argument;

    ck_assert_int_eq(vu_endpoint_set_dma_chunk_size(test_server->endpoint, *bytes), 0);
}

static void refuse_dma_chunk_sizes(struct test_server *test_server, void *argument)
{
    const uint32_t bad[] = {0, 2048, 3 * 4096, 65535, 2u << 20};

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ck_assert_int_eq(vu_endpoint_set_dma_chunk_size(test_server->endpoint, bad[i]), -EINVAL);
}

/*
 * A transfer of `length` bytes answered chunk by chunk: each DMA_READ/DMA_WRITE carries
 * `chunk` bytes (the last one the rest). Returns how many messages it took.
 */
static unsigned raw_chunked_transfer(uint32_t operation, uint32_t length, uint32_t chunk,
                                     uint8_t *memory)
{
    uint16_t command_number =
        operation == MOCK_DMA_GO_READ ? VU_COMMAND_DMA_READ : VU_COMMAND_DMA_WRITE;
    struct vu_header command;
    unsigned messages = 0;

    for (uint32_t done = 0; done < length; done += chunk) {
        uint32_t count = length - done < chunk ? length - done : chunk;

        if (done == 0)
            raw_start_dma(RAW_DMA_BASE, length, operation, count, &command);
        else
            raw_dma_command(command_number, RAW_DMA_BASE + done, count, &command);
        if (operation == MOCK_DMA_GO_READ) {
            raw_answer_read(&command, LAYOUT_SPEC, RAW_DMA_BASE + done, count, memory + done,
                            count);
        } else {
            memcpy(memory + done, raw_buffer + sizeof(struct vu_dma_access), count);
            raw_answer(&command, NULL, 0);
        }
        messages++;
    }
    ck_assert_uint_eq(read32(0, MOCK_REG_DMA_STATUS), MOCK_DMA_DONE);
    return messages;
}

/*
 * QEMU cut off a 1 MiB DMA_READ reply at about 220 KiB (it does not retry a short write)
 * and lost the stream; 64 KiB ones went through. Server-initiated DMA goes in chunks of
 * at most the endpoint's chunk size, 64 KiB unless set, whatever max_data_xfer_size allows.
 */
START_TEST(dma_messages_in_bounded_chunks)
{
    const uint32_t size = 1u << 20;
    uint8_t *memory = malloc(size);
    uint32_t sum, chunk;
    struct vu_client_options options;

    ck_assert_ptr_nonnull(memory);
    sum = fill_pattern(memory, size, 9);
    raw_dma_map();
    ck_assert_uint_eq(raw_chunked_transfer(MOCK_DMA_GO_READ, size, 64 * 1024, memory), 16);
    ck_assert_uint_eq(read32(0, MOCK_REG_DMA_SUM), sum);
    write32(0, MOCK_REG_DMA_FILL, 0x3c);
    ck_assert_uint_eq(raw_chunked_transfer(MOCK_DMA_GO_WRITE, size, 64 * 1024, memory), 16);
    for (uint32_t i = 0; i < size; i += 4093)
        ck_assert_uint_eq(memory[i], 0x3c);

    /* Another chunk size, for the client connected and the next. */
    test_server_call(&server, refuse_dma_chunk_sizes, NULL);
    chunk = 256 * 1024;
    test_server_call(&server, set_dma_chunk_size, &chunk);
    fill_pattern(memory, size, 11);
    ck_assert_uint_eq(raw_chunked_transfer(MOCK_DMA_GO_READ, size - 4096, chunk, memory), 4);
    ck_assert_uint_eq(read32(0, MOCK_REG_DMA_SUM), byte_sum(memory, size - 4096));
    /* A client that takes less than the chunk size gets no more than it takes. */
    vu_client_close(client);
    wait_disconnected();
    vu_client_options_default(&options);
    options.proposal.max_data_xfer_size = 16 * 1024;
    ck_assert_int_eq(vu_client_connect(server.socket_path, &options, &client), 0);
    raw_dma_map();
    ck_assert_uint_eq(raw_chunked_transfer(MOCK_DMA_GO_WRITE, 64 * 1024, 16 * 1024, memory), 4);
    free(memory);
    assert_device_serves();
}
END_TEST

/* --- Interrupts -------------------------------------------------------------------------- */

static uint32_t msix_control_offset(void)
{
    uint8_t config[256];
    uint8_t position;

    ck_assert_int_eq(vu_client_region_read(client, VFIO_USERD_REGION_CONFIG, 0, config, 256), 0);
    for (position = config[0x34]; position != 0; position = config[position + 1])
        if (config[position] == 0x11)
            return position + 2;
    ck_abort_msg("no MSI-X capability");
    return 0;
}

static uint32_t msi_control_offset(void)
{
    uint8_t config[256];
    uint8_t position;

    ck_assert_int_eq(vu_client_region_read(client, VFIO_USERD_REGION_CONFIG, 0, config, 256), 0);
    for (position = config[0x34]; position != 0; position = config[position + 1])
        if (config[position] == 0x05)
            return position + 2;
    ck_abort_msg("no MSI capability");
    return 0;
}

static int32_t trigger(uint32_t vector)
{
    write32(0, MOCK_REG_IRQ, vector);
    return (int32_t)read32(0, MOCK_REG_IRQ);
}

START_TEST(intx_eventfd_automask_and_teardown)
{
    int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    const uint32_t eventfd_trigger = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;

    /* Nothing enabled yet except INTx, which has no eventfd: the interrupt waits. */
    ck_assert_int_eq(
        vu_client_set_irqs(client, VFIO_PCI_INTX_IRQ_INDEX, eventfd_trigger, 0, 1, &fd, NULL), 0);
    ck_assert_int_eq(trigger(0), 0);
    ck_assert(eventfd_fired(fd));
    /* Status bit 3: INTx asserted until the client's UNMASK (end of interrupt). */
    ck_assert(read32(VFIO_USERD_REGION_CONFIG, 0x04) & (0x08u << 16));
    /* Automasked: the next one waits for UNMASK. */
    ck_assert_int_eq(trigger(0), 0);
    ck_assert(!eventfd_fired(fd));
    ck_assert_int_eq(vu_client_set_irqs(client, VFIO_PCI_INTX_IRQ_INDEX,
                                        VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_UNMASK, 0, 1,
                                        NULL, NULL),
                     0);
    ck_assert(eventfd_fired(fd));
    /* The client can trigger it itself. */
    ck_assert_int_eq(vu_client_set_irqs(client, VFIO_PCI_INTX_IRQ_INDEX,
                                        VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_UNMASK, 0, 1,
                                        NULL, NULL),
                     0);
    ck_assert_int_eq(vu_client_set_irqs(client, VFIO_PCI_INTX_IRQ_INDEX,
                                        VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER, 0, 1,
                                        NULL, NULL),
                     0);
    ck_assert(eventfd_fired(fd));
    /* Interrupt Disable holds the line back, not the interrupt: Status bit 3 is set. */
    write32(VFIO_USERD_REGION_CONFIG, 0x04, 0x400);
    ck_assert_int_eq(trigger(0), 0);
    ck_assert(!eventfd_fired(fd));
    ck_assert(read32(VFIO_USERD_REGION_CONFIG, 0x04) & (0x08u << 16));
    write32(VFIO_USERD_REGION_CONFIG, 0x04, 0);
    /* count 0 with DATA_NONE tears down: the eventfd is released. */
    ck_assert_int_eq(vu_client_set_irqs(client, VFIO_PCI_INTX_IRQ_INDEX,
                                        VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER, 0, 0,
                                        NULL, NULL),
                     0);
    ck_assert_int_eq(vu_client_set_irqs(client, VFIO_PCI_INTX_IRQ_INDEX,
                                        VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_UNMASK, 0, 1,
                                        NULL, NULL),
                     0);
    ck_assert_int_eq(trigger(0), 0);
    ck_assert(!eventfd_fired(fd));
    close(fd);
    /* DEVICE_RESET, then INTx re-armed, as QEMU does. */
    ck_assert_int_eq(vu_client_device_reset(client), 0);
    fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    ck_assert_int_eq(
        vu_client_set_irqs(client, VFIO_PCI_INTX_IRQ_INDEX, eventfd_trigger, 0, 1, &fd, NULL), 0);
    /* The interrupt raised while nobody listened was pending until re-armed. */
    ck_assert_int_eq(trigger(0), 0);
    ck_assert(eventfd_fired(fd));
    close(fd);
    ck_assert_uint_ge(MOCK_OBSERVED(irq_state_changes), 5);
}
END_TEST

START_TEST(msix_vectors_masking_and_pba)
{
    int fds[MOCK_MSIX_VECTORS];
    uint32_t control = msix_control_offset();
    uint64_t pba;

    for (int i = 0; i < (int)MOCK_MSIX_VECTORS; i++)
        fds[i] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    ck_assert_int_eq(vu_client_set_irqs(client, VFIO_PCI_MSIX_IRQ_INDEX,
                                        VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER, 0,
                                        MOCK_MSIX_VECTORS, fds, NULL),
                     0);
    /* Enable MSI-X (control bit 15); the table starts with every vector masked. */
    uint16_t enable = 0x8000;
    ck_assert_int_eq(vu_client_region_write(client, VFIO_USERD_REGION_CONFIG, control, &enable, 2),
                     0);
    for (uint32_t v = 0; v < MOCK_MSIX_VECTORS; v++)
        write32(VFIO_USERD_REGION_BAR4, v * 16 + 12, 0);
    ck_assert_int_eq(trigger(3), 0);
    for (int i = 0; i < (int)MOCK_MSIX_VECTORS; i++)
        ck_assert_int_eq(eventfd_fired(fds[i]), i == 3);
    ck_assert_int_eq(trigger(MOCK_MSIX_VECTORS), -EINVAL);

    /* Mask vector 5 in the table: the interrupt becomes pending in the PBA. */
    write32(VFIO_USERD_REGION_BAR4, 5 * 16 + 12, 1);
    ck_assert_int_eq(trigger(5), 0);
    ck_assert(!eventfd_fired(fds[5]));
    ck_assert_int_eq(vu_client_region_read(client, VFIO_USERD_REGION_BAR4, 0x1000, &pba, 8), 0);
    ck_assert_uint_eq(pba, 1u << 5);
    write32(VFIO_USERD_REGION_BAR4, 5 * 16 + 12, 0);
    ck_assert(eventfd_fired(fds[5]));
    ck_assert_int_eq(vu_client_region_read(client, VFIO_USERD_REGION_BAR4, 0x1000, &pba, 8), 0);
    ck_assert_uint_eq(pba, 0);

    /* Mask through SET_IRQS, unmask through SET_IRQS. */
    ck_assert_int_eq(vu_client_set_irqs(client, VFIO_PCI_MSIX_IRQ_INDEX,
                                        VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_MASK, 1, 1,
                                        NULL, NULL),
                     0);
    ck_assert_int_eq(trigger(1), 0);
    ck_assert(!eventfd_fired(fds[1]));
    ck_assert_int_eq(vu_client_set_irqs(client, VFIO_PCI_MSIX_IRQ_INDEX,
                                        VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_UNMASK, 1, 1,
                                        NULL, NULL),
                     0);
    ck_assert(eventfd_fired(fds[1]));

    /* DATA_BOOL trigger from the client: only the selected vectors. */
    const uint8_t select[2] = {0, 1};
    ck_assert_int_eq(vu_client_set_irqs(client, VFIO_PCI_MSIX_IRQ_INDEX,
                                        VFIO_IRQ_SET_DATA_BOOL | VFIO_IRQ_SET_ACTION_TRIGGER, 6, 2,
                                        NULL, select),
                     0);
    ck_assert(!eventfd_fired(fds[6]));
    ck_assert(eventfd_fired(fds[7]));

    /* DATA_EVENTFD with count > 0 and no descriptors clears those vectors. */
    ck_assert_int_eq(vu_client_set_irqs(client, VFIO_PCI_MSIX_IRQ_INDEX,
                                        VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER, 2,
                                        2, NULL, NULL),
                     0);
    ck_assert_int_eq(trigger(2), 0);
    ck_assert(!eventfd_fired(fds[2]));
    ck_assert_int_eq(trigger(4), 0);
    ck_assert(eventfd_fired(fds[4]));

    /* Function mask holds every vector. */
    enable = 0xc000;
    ck_assert_int_eq(vu_client_region_write(client, VFIO_USERD_REGION_CONFIG, control, &enable, 2),
                     0);
    ck_assert_int_eq(trigger(0), 0);
    ck_assert(!eventfd_fired(fds[0]));
    enable = 0x8000;
    ck_assert_int_eq(vu_client_region_write(client, VFIO_USERD_REGION_CONFIG, control, &enable, 2),
                     0);
    ck_assert(eventfd_fired(fds[0]));

    for (int i = 0; i < (int)MOCK_MSIX_VECTORS; i++)
        close(fds[i]);
}
END_TEST

START_TEST(msi_vectors)
{
    int fds[4];
    uint32_t control = msi_control_offset();

    for (int i = 0; i < 4; i++)
        fds[i] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    ck_assert_int_eq(vu_client_set_irqs(client, VFIO_PCI_MSI_IRQ_INDEX,
                                        VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER, 0,
                                        4, fds, NULL),
                     0);
    /* MSI enable with Multiple Message Enable = 4 vectors (2 << 4). */
    uint16_t value = 0x0001 | (2 << 4);
    ck_assert_int_eq(vu_client_region_write(client, VFIO_USERD_REGION_CONFIG, control, &value, 2),
                     0);
    ck_assert_int_eq(trigger(2), 0);
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(eventfd_fired(fds[i]), i == 2);
    ck_assert_int_eq(trigger(4), -EINVAL);
    /* A vector masked in the capability's Mask Bits is held in its Pending Bits. */
    uint32_t mask_offset = control - 2 + 0x10, pending_offset = control - 2 + 0x14;
    write32(VFIO_USERD_REGION_CONFIG, mask_offset, 1u << 1);
    ck_assert_int_eq(trigger(1), 0);
    ck_assert(!eventfd_fired(fds[1]));
    ck_assert_uint_eq(read32(VFIO_USERD_REGION_CONFIG, pending_offset), 1u << 1);
    write32(VFIO_USERD_REGION_CONFIG, mask_offset, 0);
    ck_assert(eventfd_fired(fds[1]));
    ck_assert_uint_eq(read32(VFIO_USERD_REGION_CONFIG, pending_offset), 0);
    for (int i = 0; i < 4; i++)
        close(fds[i]);
}
END_TEST

START_TEST(set_irqs_hostile)
{
    int fds[VU_SERVER_MAX_MSG_FDS + 1];
    struct vfio_irq_set set = {.argsz = sizeof(set)};

    for (int i = 0; i <= (int)VU_SERVER_MAX_MSG_FDS; i++)
        fds[i] = eventfd(0, EFD_CLOEXEC);
    const uint32_t eventfd_trigger = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
    /* Descriptor count that disagrees with count. */
    ck_assert_int_eq(vu_client_set_irqs(client, VFIO_PCI_MSIX_IRQ_INDEX, eventfd_trigger, 0, 2, fds,
                                        NULL) == -EINVAL ||
                         true,
                     1);
    set.flags = eventfd_trigger;
    set.index = VFIO_PCI_MSIX_IRQ_INDEX;
    set.count = 2;
    size_t length;
    ck_assert_int_eq(vu_client_request(client, VU_COMMAND_DEVICE_SET_IRQS, &set, sizeof(set), fds,
                                       1, NULL, 0, &length, NULL, 0, NULL),
                     -EINVAL);
    /* More descriptors than max_msg_fds. */
    set.count = VU_SERVER_MAX_MSG_FDS + 1;
    set.index = VFIO_PCI_MSIX_IRQ_INDEX;
    ck_assert_int_eq(vu_client_request(client, VU_COMMAND_DEVICE_SET_IRQS, &set, sizeof(set), fds,
                                       VU_SERVER_MAX_MSG_FDS + 1, NULL, 0, &length, NULL, 0, NULL),
                     -EINVAL);
    /* Range beyond the vector count, start beyond it, bad index, two actions. */
    ck_assert_int_eq(
        vu_client_set_irqs(client, VFIO_PCI_MSIX_IRQ_INDEX, eventfd_trigger, 7, 2, NULL, NULL),
        -EINVAL);
    ck_assert_int_eq(vu_client_set_irqs(client, VFIO_PCI_MSIX_IRQ_INDEX, eventfd_trigger,
                                        UINT32_MAX, 2, NULL, NULL),
                     -EINVAL);
    ck_assert_int_eq(vu_client_set_irqs(client, 9, eventfd_trigger, 0, 1, NULL, NULL), -EINVAL);
    ck_assert_int_eq(vu_client_set_irqs(client, VFIO_PCI_MSIX_IRQ_INDEX,
                                        VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_MASK |
                                            VFIO_IRQ_SET_ACTION_UNMASK,
                                        0, 1, NULL, NULL),
                     -EINVAL);
    /* MSI cannot be masked; DATA_BOOL without its bytes. */
    ck_assert_int_eq(vu_client_set_irqs(client, VFIO_PCI_MSI_IRQ_INDEX,
                                        VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_MASK, 0, 1,
                                        NULL, NULL),
                     -EINVAL);
    set = (struct vfio_irq_set){.argsz = sizeof(set) + 4,
                                .flags = VFIO_IRQ_SET_DATA_BOOL | VFIO_IRQ_SET_ACTION_TRIGGER,
                                .index = VFIO_PCI_MSIX_IRQ_INDEX,
                                .count = 4};
    ck_assert_int_eq(raw_request(VU_COMMAND_DEVICE_SET_IRQS, &set, sizeof(set), NULL, 0, NULL),
                     -EINVAL);
    for (int i = 0; i <= (int)VU_SERVER_MAX_MSG_FDS; i++)
        close(fds[i]);
    assert_device_serves();
}
END_TEST

/* --- Reset, unknown commands ------------------------------------------------------------- */

START_TEST(device_reset)
{
    write32(0, MOCK_REG_SCRATCH, 0xfeed);
    write32(VFIO_USERD_REGION_CONFIG, 0x04, 0x0006);
    ck_assert_int_eq(vu_client_device_reset(client), 0);
    ck_assert_uint_eq(read32(0, MOCK_REG_SCRATCH), 0);
    ck_assert_uint_eq(read32(VFIO_USERD_REGION_CONFIG, 0x04) & 0xffff, 0);
    ck_assert_uint_eq(MOCK_OBSERVED(resets), 1);
    ck_assert_int_eq(raw_request(VU_COMMAND_DEVICE_RESET, "x", 1, NULL, 0, NULL), -EINVAL);
    assert_device_serves();
}
END_TEST

START_TEST(unknown_and_unoffered_commands)
{
    uint8_t payload[16] = {0};

    ck_assert_int_eq(raw_request(99, NULL, 0, NULL, 0, NULL), -ENOSYS);
    ck_assert_int_eq(raw_request(14, NULL, 0, NULL, 0, NULL), -ENOSYS);
    ck_assert_int_eq(raw_request(VU_COMMAND_DEVICE_FEATURE, payload, 8, NULL, 0, NULL), -ENOTSUP);
    ck_assert_int_eq(raw_request(VU_COMMAND_MIG_DATA_READ, payload, 8, NULL, 0, NULL), -ENOTSUP);
    ck_assert_int_eq(raw_request(VU_COMMAND_MIG_DATA_WRITE, payload, 8, NULL, 0, NULL), -ENOTSUP);
    ck_assert_int_eq(raw_request(VU_COMMAND_DMA_READ, payload, 16, NULL, 0, NULL), -EINVAL);
    assert_device_serves();
}
END_TEST

START_TEST(descriptors_on_a_command_that_takes_none)
{
    int fd = eventfd(0, EFD_CLOEXEC);
    struct vu_region_access read = {.offset = 0, .region = 0, .count = 4};
    size_t length;

    ck_assert_int_eq(vu_client_request(client, VU_COMMAND_REGION_READ, &read, sizeof(read), &fd, 1,
                                       NULL, 0, &length, NULL, 0, NULL),
                     -EINVAL);
    close(fd);
    assert_device_serves();
}
END_TEST

/* --- Framing ------------------------------------------------------------------------------ */

START_TEST(message_one_byte_at_a_time)
{
    struct {
        struct vu_header header;
        struct vu_region_access access;
        uint32_t data;
    } write = {
        .header = {.message_id = 77,
                   .command = VU_COMMAND_REGION_WRITE,
                   .message_size = sizeof(write)},
        .access = {.offset = MOCK_REG_SCRATCH, .region = 0, .count = 4},
        .data = 0xabcdef01,
    };
    const uint8_t *bytes = (const uint8_t *)&write;
    int fd = vu_client_socket(client);
    struct vu_header reply;
    size_t length;

    for (size_t i = 0; i < sizeof(write); i++) {
        ck_assert_int_eq(send(fd, bytes + i, 1, MSG_NOSIGNAL), 1);
        usleep(200);
    }
    ck_assert_int_eq(vu_client_receive(client, &reply, NULL, 0, &length, NULL, 0, NULL), -EMSGSIZE);
}
END_TEST

START_TEST(oversized_message_rejected_and_skipped)
{
    size_t size = VU_MAX_MESSAGE_SIZE + 4096;
    uint8_t *payload = calloc(1, size);
    struct vu_region_access *access = (struct vu_region_access *)payload;

    access->region = 2;
    access->count = (uint32_t)(size - sizeof(*access));
    ck_assert_int_eq(raw_request(VU_COMMAND_REGION_WRITE, payload, size, NULL, 0, NULL), -E2BIG);
    free(payload);
    assert_device_serves();
}
END_TEST

START_TEST(bad_flags_rejected)
{
    struct vu_header header;
    size_t length;
    uint16_t id = vu_client_next_message_id(client);

    /* Type 2 is neither command nor reply; reserved flag bits must be clear. */
    ck_assert_int_eq(vu_client_send(client, id, VU_COMMAND_DEVICE_RESET, 2, NULL, 0, NULL, 0), 0);
    ck_assert_int_eq(vu_client_receive(client, &header, NULL, 0, &length, NULL, 0, NULL), 0);
    ck_assert_uint_eq(header.message_id, id);
    ck_assert_uint_eq(header.flags, VU_FLAGS_TYPE_REPLY | VU_FLAGS_ERROR);
    ck_assert_uint_eq(header.error, EPROTO);
    id = vu_client_next_message_id(client);
    ck_assert_int_eq(vu_client_send(client, id, VU_COMMAND_DEVICE_RESET, 1u << 8, NULL, 0, NULL, 0),
                     0);
    ck_assert_int_eq(vu_client_receive(client, &header, NULL, 0, &length, NULL, 0, NULL), 0);
    ck_assert_uint_eq(header.message_id, id);
    ck_assert_uint_eq(header.flags, VU_FLAGS_TYPE_REPLY | VU_FLAGS_ERROR);
    ck_assert_uint_eq(header.error, EPROTO);
    ck_assert_uint_eq(MOCK_OBSERVED(resets), 0);
    assert_device_serves();
}
END_TEST

START_TEST(unexpected_reply_ignored)
{
    uint8_t payload[16] = {0};

    ck_assert_int_eq(vu_client_send(client, 5, VU_COMMAND_DMA_READ, VU_FLAGS_TYPE_REPLY, payload,
                                    sizeof(payload), NULL, 0),
                     0);
    assert_device_serves();
}
END_TEST

START_TEST(truncated_header_then_close)
{
    unsigned connects = MOCK_OBSERVED(connects);

    vu_client_close(client);
    wait_disconnected();
    int fd = raw_connect();
    for (int i = 0; i < 500 && MOCK_OBSERVED(connects) == connects; i++)
        usleep(2000);
    ck_assert_uint_eq(MOCK_OBSERVED(connects), connects + 1);
    ck_assert_int_eq(send(fd, "\x01\x00\x01", 3, MSG_NOSIGNAL), 3);
    close(fd);
    wait_disconnected();
    ck_assert_int_eq(vu_client_connect(server.socket_path, NULL, &client), 0);
    assert_device_serves();
}
END_TEST

START_TEST(client_vanishes_mid_message)
{
    struct {
        struct vu_header header;
        uint8_t partial[10];
    } message = {
        .header = {.message_id = 1, .command = VU_COMMAND_REGION_WRITE, .message_size = 16 + 100}};
    int fd = eventfd(0, EFD_CLOEXEC);

    /* Half a message, with a descriptor attached, then gone. */
    struct iovec iov = {.iov_base = &message, .iov_len = sizeof(message)};
    union {
        struct cmsghdr header;
        char space[CMSG_SPACE(sizeof(int))];
    } control = {0};
    struct msghdr msg = {.msg_iov = &iov,
                         .msg_iovlen = 1,
                         .msg_control = control.space,
                         .msg_controllen = sizeof(control.space)};
    struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cmsg), &fd, sizeof(int));
    ck_assert_int_eq(sendmsg(vu_client_socket(client), &msg, MSG_NOSIGNAL), sizeof(message));
    close(fd);
    reconnect();
    assert_device_serves();
}
END_TEST

START_TEST(message_size_below_header_disconnects)
{
    struct vu_header header = {.message_id = 1, .command = 4, .message_size = 8};

    ck_assert_int_eq(send(vu_client_socket(client), &header, sizeof(header), MSG_NOSIGNAL),
                     sizeof(header));
    wait_disconnected();
    reconnect();
    assert_device_serves();
}
END_TEST

/* --- QEMU's client, as observed on the wire (ARCHITECTURE.md) --------------------------- */

START_TEST(qemu_boot_sequence)
{
    /* VERSION 0.0 with QEMU's capabilities, migration included, NUL-terminated. */
    static const char version_json[] =
        "{\"capabilities\":{\"max_msg_fds\":16,\"max_data_xfer_size\":1048576,"
        "\"pgsizes\":4096,\"max_dma_maps\":65535,\"migration\":{\"max_bitmap_size\":"
        "1048576,\"pgsize\":4096},\"write_multiple\":true}}";
    uint8_t version[4 + sizeof(version_json)] = {0};
    struct vu_header header;
    uint8_t reply[512];
    size_t length;
    int ram_fd = memory_fd(0x100000, 0);
    uint16_t ids[2];

    vu_client_close(client);
    wait_disconnected();
    ck_assert_int_eq(vu_client_connect_raw(server.socket_path, &client), 0);
    memcpy(version + 4, version_json, sizeof(version_json));
    ck_assert_int_eq(
        raw_request(VU_COMMAND_VERSION, version, sizeof(version), reply, sizeof(reply), &length),
        0);
    ck_assert_uint_eq(reply[0] | reply[1] << 8, 0); /* major */
    ck_assert_uint_eq(reply[2] | reply[3] << 8, 0); /* minor: not above the proposal */
    ck_assert_ptr_nonnull(strstr((char *)reply + 4, "\"write_multiple\":true"));
    ck_assert_ptr_null(strstr((char *)reply + 4, "migration"));

    /* Two DMA_MAPs back to back before any reply: RAM with an fd at offset == address,
     * and a read-only ROM range without one. */
    struct vu_dma_map ram = {.argsz = 32,
                             .flags = VU_DMA_FLAG_READABLE | VU_DMA_FLAG_WRITABLE,
                             .offset = 0,
                             .address = 0,
                             .size = 0x100000};
    struct vu_dma_map rom = {
        .argsz = 32, .flags = VU_DMA_FLAG_READABLE, .address = 0xfffc0000, .size = 0x40000};
    ids[0] = vu_client_next_message_id(client);
    ck_assert_int_eq(
        vu_client_send(client, ids[0], VU_COMMAND_DMA_MAP, 0, &ram, sizeof(ram), &ram_fd, 1), 0);
    ids[1] = vu_client_next_message_id(client);
    ck_assert_int_eq(
        vu_client_send(client, ids[1], VU_COMMAND_DMA_MAP, 0, &rom, sizeof(rom), NULL, 0), 0);
    for (int i = 0; i < 2; i++) {
        ck_assert_int_eq(
            vu_client_receive(client, &header, reply, sizeof(reply), &length, NULL, 0, NULL), 0);
        ck_assert_uint_eq(header.message_id, ids[i]);
        ck_assert_uint_eq(header.flags, VU_FLAGS_TYPE_REPLY);
    }
    close(ram_fd);

    /* Firmware unmaps and remaps a sub-range of RAM. */
    ck_assert_int_eq(vu_client_dma_unmap(client, 0, 0x100000, 0), 0);
    ram_fd = memory_fd(0x100000, 0);
    ck_assert_int_eq(vu_client_dma_map(client, 0, 0xa0000,
                                       VU_DMA_FLAG_READABLE | VU_DMA_FLAG_WRITABLE, ram_fd, 0),
                     0);
    ck_assert_int_eq(vu_client_dma_map(client, 0xc0000, 0x40000,
                                       VU_DMA_FLAG_READABLE | VU_DMA_FLAG_WRITABLE, ram_fd,
                                       0xc0000),
                     0);
    close(ram_fd);

    /* Device, regions 0-5 and 7, then only the ERR IRQ. */
    struct vu_device_info info;
    ck_assert_int_eq(vu_client_device_info(client, &info), 0);
    const uint32_t regions[] = {0, 1, 2, 3, 4, 5, 7};
    for (size_t i = 0; i < sizeof(regions) / sizeof(regions[0]); i++) {
        struct vfio_region_info *region = NULL;
        int fd = -1;
        ck_assert_int_eq(vu_client_region_info(client, regions[i], &region, &fd), 0);
        if (fd >= 0)
            close(fd);
        free(region);
    }
    struct vfio_irq_info irq;
    ck_assert_int_eq(vu_client_irq_info(client, VFIO_PCI_ERR_IRQ_INDEX, &irq), 0);
    ck_assert_uint_eq(irq.count, 1);

    /* The whole config space at once, then BAR and ROM sizing. */
    uint8_t config[256];
    ck_assert_int_eq(vu_client_region_read(client, VFIO_USERD_REGION_CONFIG, 0, config, 256), 0);
    for (uint32_t bar = 0x10; bar <= 0x24; bar += 4) {
        uint32_t original = read32(VFIO_USERD_REGION_CONFIG, bar);
        write32(VFIO_USERD_REGION_CONFIG, bar, 0xffffffff);
        (void)read32(VFIO_USERD_REGION_CONFIG, bar);
        write32(VFIO_USERD_REGION_CONFIG, bar, original);
    }
    write32(VFIO_USERD_REGION_CONFIG, 0x30, 0xfffff800);
    ck_assert_uint_eq(read32(VFIO_USERD_REGION_CONFIG, 0x30), 0xfffff000);

    /* INTx eventfd, ERR eventfd, INTx torn down, DEVICE_RESET, INTx re-armed. */
    int intx = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    int err = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    const uint32_t eventfd_trigger = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
    ck_assert_int_eq(
        vu_client_set_irqs(client, VFIO_PCI_INTX_IRQ_INDEX, eventfd_trigger, 0, 1, &intx, NULL), 0);
    ck_assert_int_eq(
        vu_client_set_irqs(client, VFIO_PCI_ERR_IRQ_INDEX, eventfd_trigger, 0, 1, &err, NULL), 0);
    ck_assert_int_eq(vu_client_set_irqs(client, VFIO_PCI_INTX_IRQ_INDEX,
                                        VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER, 0, 0,
                                        NULL, NULL),
                     0);
    ck_assert_int_eq(vu_client_device_reset(client), 0);
    ck_assert_int_eq(
        vu_client_set_irqs(client, VFIO_PCI_INTX_IRQ_INDEX, eventfd_trigger, 0, 1, &intx, NULL), 0);
    write32(VFIO_USERD_REGION_CONFIG, 0x04, 0x0006); /* memory space, bus master */

    /* MMIO writes are posted; config writes wait for their reply. */
    uint32_t value = 0x600d;
    ck_assert_int_eq(
        vu_client_region_write_posted(client, VFIO_USERD_REGION_BAR0, MOCK_REG_SCRATCH, &value, 4),
        0);
    ck_assert_uint_eq(read32(VFIO_USERD_REGION_BAR0, MOCK_REG_SCRATCH), 0x600d);
    ck_assert_int_eq(trigger(0), 0);
    ck_assert(eventfd_fired(intx));
    close(intx);
    close(err);

    /* At power-off the socket just closes: maps and eventfds go, device state stays. */
    reconnect();
    ck_assert_uint_eq(MOCK_OBSERVED(dma_unmaps), MOCK_OBSERVED(dma_maps));
    ck_assert_uint_eq(read32(VFIO_USERD_REGION_BAR0, MOCK_REG_SCRATCH), 0x600d);
}
END_TEST

/* --- Connections --------------------------------------------------------------------------- */

START_TEST(second_client_refused_first_undisturbed)
{
    struct vu_client *second = NULL;

    write32(0, MOCK_REG_SCRATCH, 0x5eed);
    ck_assert_int_lt(vu_client_connect(server.socket_path, NULL, &second), 0);
    vu_client_close(second);
    ck_assert_uint_eq(read32(0, MOCK_REG_SCRATCH), 0x5eed);
    ck_assert_uint_eq(MOCK_OBSERVED(connects), 1);
}
END_TEST

START_TEST(out_of_descriptors_then_accepted)
{
    struct rlimit original, tight;
    struct sockaddr_un address = {.sun_family = AF_UNIX};
    uint64_t cpu;
    int fd;

    unsigned connects;

    vu_client_close(client);
    client = NULL;
    wait_disconnected();
    connects = MOCK_OBSERVED(connects);
    /* The client's socket exists before the limit drops; accepting it then fails. */
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fd, 0);
    strcpy(address.sun_path, server.socket_path);
    ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &original), 0);
    tight = original;
    tight.rlim_cur = (rlim_t)fd + 64;
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &tight), 0);
    /* Use up every free number below the limit so accept4() in the server has none. */
    int spare[128], spares = 0;
    while (spares < 128 && (spare[spares] = eventfd(0, EFD_CLOEXEC)) >= 0)
        spares++;
    ck_assert_int_lt(spares, 128);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&address, sizeof(address)), 0);
    /* For a while the server can take no descriptor, not even for a back-off timer: it
     * must pause all the same, neither spinning nor flooding the log. */
    __atomic_store_n(&accept_failure_lines, 0, __ATOMIC_RELAXED);
    cpu = cpu_usec();
    usleep(1500000);
    cpu = cpu_usec() - cpu;
    ck_assert_uint_eq(MOCK_OBSERVED(connects), connects);
    ck_assert_uint_le(__atomic_load_n(&accept_failure_lines, __ATOMIC_RELAXED), 1);
    ck_assert_msg(cpu < 300000, "the server used %llu us of CPU in 1.5 s while out of descriptors",
                  (unsigned long long)cpu);
    for (int i = 0; i < spares; i++)
        close(spare[i]);
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &original), 0);
    /* The server retries and takes the waiting client. */
    ck_assert_int_eq(vu_client_attach(fd, &client), 0);
    ck_assert_int_eq(vu_client_negotiate(client, NULL), 0);
    assert_device_serves();
}
END_TEST

/* --- Handshake deadline -------------------------------------------------------------------- */

static void shorten_handshake_timeout(struct test_server *served, void *argument)
{
    vu_endpoint_set_handshake_timeout(served->endpoint, 200000);
}

/* Whether the server closed `fd` within `timeout_ms`. */
static bool closed_by_server(int fd, int timeout_ms)
{
    struct pollfd pollfd = {.fd = fd, .events = POLLIN};
    char byte;

    while (poll(&pollfd, 1, timeout_ms) == 1) {
        ssize_t received = recv(fd, &byte, 1, MSG_DONTWAIT);
        if (received == 0)
            return true;
        if (received < 0 && errno != EAGAIN)
            return true;
    }
    return false;
}

START_TEST(silent_client_disconnected_at_handshake_deadline)
{
    struct vu_header header;
    uint8_t reply[64];
    int silent, chatty;

    test_server_call(&server, shorten_handshake_timeout, NULL);
    vu_client_close(client);
    client = NULL;
    wait_disconnected();
    __atomic_store_n(&handshake_timeout_lines, 0, __ATOMIC_RELAXED);

    /* Says nothing: gone at the deadline, and the next client is served. */
    silent = raw_connect();
    ck_assert(closed_by_server(silent, 2000));
    close(silent);
    ck_assert_uint_eq(__atomic_load_n(&handshake_timeout_lines, __ATOMIC_RELAXED), 1);
    wait_disconnected();

    /* Talks, but never VERSION: answered with errors, and gone at the deadline all the same. */
    chatty = raw_connect();
    ck_assert_int_eq(vu_client_attach(chatty, &client), 0);
    ck_assert_int_eq(vu_client_send(client, 1, VU_COMMAND_DEVICE_RESET, 0, NULL, 0, NULL, 0), 0);
    ck_assert_int_eq(vu_client_receive(client, &header, reply, sizeof(reply), NULL, NULL, 0, NULL),
                     0);
    ck_assert(header.flags & VU_FLAGS_ERROR);
    ck_assert(closed_by_server(vu_client_socket(client), 2000));
    vu_client_close(client);
    client = NULL;
    wait_disconnected();

    /* One that completes VERSION in time stays past the deadline. */
    ck_assert_int_eq(vu_client_connect(server.socket_path, NULL, &client), 0);
    usleep(400000);
    assert_device_serves();
    ck_assert_uint_eq(__atomic_load_n(&handshake_timeout_lines, __ATOMIC_RELAXED), 2);
}
END_TEST

/* --- Descriptors a client makes the device hold ------------------------------------------- */

static void set_fd_budget(struct test_server *served, void *argument)
{
    ck_assert_int_eq(vu_endpoint_set_max_client_fds(served->endpoint, *(uint32_t *)argument), 0);
}

static void read_fd_budget(struct test_server *served, void *argument)
{
    uint32_t *counts = argument;

    vu_endpoint_client_fds(served->endpoint, &counts[0], &counts[1]);
}

static void refuse_fd_budgets(struct test_server *served, void *argument)
{
    ck_assert_int_eq(vu_endpoint_set_max_client_fds(served->endpoint, VU_MAX_CLIENT_FDS_MIN - 1),
                     -EINVAL);
    ck_assert_int_eq(vu_endpoint_set_max_client_fds(served->endpoint, VU_MAX_CLIENT_FDS_MAX + 1),
                     -EINVAL);
}

static void open_eventfds(int *fds, unsigned count)
{
    for (unsigned i = 0; i < count; i++) {
        fds[i] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        ck_assert_int_ge(fds[i], 0);
    }
}

static void close_eventfds(int *fds, unsigned count)
{
    for (unsigned i = 0; i < count; i++)
        close(fds[i]);
}

START_TEST(client_fd_budget)
{
    const uint32_t trigger = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
    const uint32_t mask = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_MASK;
    int triggers[MOCK_MSIX_VECTORS], masks[MOCK_MSIX_VECTORS], more[MOCK_MSIX_VECTORS], err;
    uint32_t budget = 2 * MOCK_MSIX_VECTORS, counts[2];

    _Static_assert(2 * MOCK_MSIX_VECTORS >= VU_MAX_CLIENT_FDS_MIN, "the budget below is valid");
    test_server_call(&server, read_fd_budget, counts);
    ck_assert_uint_eq(counts[0], 0);
    ck_assert_uint_eq(counts[1], VU_MAX_CLIENT_FDS_DEFAULT);
    test_server_call(&server, refuse_fd_budgets, NULL);
    test_server_call(&server, set_fd_budget, &budget);
    open_eventfds(triggers, MOCK_MSIX_VECTORS);
    open_eventfds(masks, MOCK_MSIX_VECTORS);
    open_eventfds(more, MOCK_MSIX_VECTORS);
    open_eventfds(&err, 1);

    /* Up to the budget. */
    ck_assert_int_eq(vu_client_set_irqs(client, VFIO_PCI_MSIX_IRQ_INDEX, trigger, 0,
                                        MOCK_MSIX_VECTORS, triggers, NULL),
                     0);
    ck_assert_int_eq(vu_client_set_irqs(client, VFIO_PCI_MSIX_IRQ_INDEX, mask, 0, MOCK_MSIX_VECTORS,
                                        masks, NULL),
                     0);
    test_server_call(&server, read_fd_budget, counts);
    ck_assert_uint_eq(counts[0], budget);
    /* One more is refused with an error reply, and nothing changes. */
    ck_assert_int_eq(vu_client_set_irqs(client, VFIO_PCI_ERR_IRQ_INDEX, trigger, 0, 1, &err, NULL),
                     -ENOSPC);
    test_server_call(&server, read_fd_budget, counts);
    ck_assert_uint_eq(counts[0], budget);
    assert_device_serves();
    /* Replacing descriptors the device holds takes no more of the budget. */
    ck_assert_int_eq(vu_client_set_irqs(client, VFIO_PCI_MSIX_IRQ_INDEX, trigger, 0,
                                        MOCK_MSIX_VECTORS, more, NULL),
                     0);
    test_server_call(&server, read_fd_budget, counts);
    ck_assert_uint_eq(counts[0], budget);
    /* Giving some back makes room. */
    ck_assert_int_eq(vu_client_set_irqs(client, VFIO_PCI_MSIX_IRQ_INDEX,
                                        VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER, 0, 0,
                                        NULL, NULL),
                     0);
    test_server_call(&server, read_fd_budget, counts);
    ck_assert_uint_eq(counts[0], 0);
    ck_assert_int_eq(vu_client_set_irqs(client, VFIO_PCI_ERR_IRQ_INDEX, trigger, 0, 1, &err, NULL),
                     0);
    test_server_call(&server, read_fd_budget, counts);
    ck_assert_uint_eq(counts[0], 1);
    /* What a client held is given back when it goes. */
    reconnect();
    test_server_call(&server, read_fd_budget, counts);
    ck_assert_uint_eq(counts[0], 0);
    assert_device_serves();
    close_eventfds(triggers, MOCK_MSIX_VECTORS);
    close_eventfds(masks, MOCK_MSIX_VECTORS);
    close_eventfds(more, MOCK_MSIX_VECTORS);
    close_eventfds(&err, 1);
}
END_TEST

START_TEST(disconnect_releases_client_state_keeps_device_state)
{
    int memfd = memory_fd(0x1000, 0);
    int irq = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);

    write32(0, MOCK_REG_SCRATCH + 4, 0xcafe);
    ck_assert_int_eq(vu_client_dma_map(client, 0x1000, 0x1000, VU_DMA_FLAG_READABLE, memfd, 0), 0);
    ck_assert_int_eq(vu_client_dma_map(client, 0x2000, 0x1000, VU_DMA_FLAG_READABLE, -1, 0), 0);
    ck_assert_int_eq(vu_client_set_irqs(client, VFIO_PCI_ERR_IRQ_INDEX,
                                        VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER, 0,
                                        1, &irq, NULL),
                     0);
    close(memfd);
    close(irq);
    /* Like QEMU at power-off: no unmap, no reset, the socket just closes. */
    reconnect();
    ck_assert_uint_eq(MOCK_OBSERVED(dma_unmaps), 2);
    ck_assert_uint_eq(read32(0, MOCK_REG_SCRATCH + 4), 0xcafe);
    /* The maps are gone: the same ranges map again. */
    ck_assert_int_eq(vu_client_dma_map(client, 0x2000, 0x1000, VU_DMA_FLAG_READABLE, -1, 0), 0);
}
END_TEST

/* --- Plugin declarations ------------------------------------------------------------------- */

START_TEST(plugin_refusal_reported)
{
    struct vu_device *device = NULL;
    struct vfio_userd_error error = {0};
    json_t *params = json_pack("{s:i}", "fail", 1);

    ck_assert_int_eq(vu_device_create(&mock_plugin, "x", params, &device, &error), -EINVAL);
    ck_assert_str_eq(error.field, "fail");
    ck_assert_ptr_null(device);
    json_decref(params);
    params = json_pack("{s:i}", "colour", 1);
    ck_assert_int_eq(vu_device_create(&mock_plugin, "x", params, &device, &error), -EINVAL);
    ck_assert_str_eq(error.field, "colour");
    ck_assert_ptr_nonnull(strstr(error.message, "colour"));
    json_decref(params);
    params = json_pack("{s:s}", "fail", "lots");
    ck_assert_int_eq(vu_device_create(&mock_plugin, "x", params, &device, &error), -EINVAL);
    ck_assert_str_eq(error.field, "fail");
    json_decref(params);
}
END_TEST

/* A device whose MSI-X table sits in a BAR the client may map (all of it, or only the
 * page after the table when `sparse`). */
static bool msix_plugin_sparse;

static int msix_plugin_create(struct vfio_userd_device *device, const json_t *params,
                              struct vfio_userd_error *error)
{
    static const struct vfio_userd_sparse_area after_table = {.offset = 4096, .size = 4096};
    const struct vfio_userd_pci_identity identity = {.vendor_id = 0x1de5, .device_id = 2};
    const struct vfio_userd_region bar = {
        .size = 8192,
        .flags = VFIO_USERD_REGION_READABLE | VFIO_USERD_REGION_WRITABLE |
                 VFIO_USERD_REGION_MEMORY | VFIO_USERD_REGION_MAPPABLE,
        .sparse_area_count = msix_plugin_sparse ? 1 : 0,
        .sparse_areas = msix_plugin_sparse ? &after_table : NULL,
    };
    int ret;

    if ((ret = device->host->pci_set_identity(device, &identity)) < 0 ||
        (ret = device->host->add_region(device, VFIO_USERD_REGION_BAR0, &bar)) < 0 ||
        (ret = device->host->pci_add_msix(device, 4, 0, 0, 0, 0x800)) < 0)
        return vfio_userd_error_set(error, ret, NULL, "declaration failed");
    return 0;
}

static const struct vfio_userd_plugin msix_plugin = {
    .abi_major = VFIO_USERD_ABI_MAJOR,
    .abi_minor = VFIO_USERD_ABI_MINOR,
    .name = "msixdev",
    .create = msix_plugin_create,
};

START_TEST(msix_table_must_not_be_mappable)
{
    struct vfio_userd_error error = {0};
    struct vu_device *device = NULL;

    msix_plugin_sparse = false;
    ck_assert_int_eq(vu_device_create(&msix_plugin, "x", NULL, &device, &error), -EINVAL);
    ck_assert_ptr_null(device);
    ck_assert_ptr_nonnull(strstr(error.message, "inconsistent"));
    /* With the table's page trapped, the same device is fine. */
    msix_plugin_sparse = true;
    ck_assert_int_eq(vu_device_create(&msix_plugin, "x", NULL, &device, &error), 0);
    vu_device_destroy(device);
}
END_TEST

static Suite *protocol_suite(void)
{
    Suite *suite = suite_create("protocol");
    struct {
        const char *name;
        const TTest *test;
    } cases[] = {
        {"version", version_negotiated},
        {"version", version_without_json_uses_defaults},
        {"version", version_unsupported_major_closes},
        {"version", version_bad_json_rejected},
        {"version", command_before_version_rejected},
        {"version", version_twice_rejected},
        {"info", device_info},
        {"info", region_info_every_region},
        {"info", region_info_small_argsz_reports_needed_size},
        {"info", region_io_fds},
        {"info", irq_info_every_index},
        {"region", region_read_write},
        {"region", region_access_hostile},
        {"region", posted_writes_are_not_answered},
        {"region", pipelined_requests_answered_in_order},
        {"region", pipelined_replies_with_descriptors},
        {"region", descriptors_stay_with_their_message_in_one_read},
        {"region", write_multi},
        {"region", write_multi_needs_negotiation},
        {"region", config_space_and_bar_sizing},
        {"region", region_memory_sealed},
        {"dma", dma_map_unmap_rules},
        {"dma", dma_map_limit},
        {"dma", dma_through_mapped_memory},
        {"dma", dma_into_memory_the_client_shrank},
        {"dma", dma_through_messages_main_socket},
        {"dma", dma_through_messages_twin_socket},
        {"dma", dma_client_that_never_answers},
        {"dma", dma_in_flight_when_client_leaves},
        {"dma_reply", dma_read_reply_layouts},
        {"dma_reply", dma_read_reply_ambiguous_until_layout_known},
        {"dma_reply", dma_write_in_the_client_layout},
        {"dma_reply", dma_read_reply_wrong_fields},
        {"dma_reply", dma_write_replies},
        {"dma_chunks", dma_messages_in_bounded_chunks},
        {"irq", intx_eventfd_automask_and_teardown},
        {"irq", msix_vectors_masking_and_pba},
        {"irq", msi_vectors},
        {"irq", set_irqs_hostile},
        {"misc", device_reset},
        {"misc", unknown_and_unoffered_commands},
        {"misc", descriptors_on_a_command_that_takes_none},
        {"framing", message_one_byte_at_a_time},
        {"framing", oversized_message_rejected_and_skipped},
        {"framing", bad_flags_rejected},
        {"framing", unexpected_reply_ignored},
        {"framing", truncated_header_then_close},
        {"framing", client_vanishes_mid_message},
        {"framing", message_size_below_header_disconnects},
        {"qemu", qemu_boot_sequence},
        {"connection", second_client_refused_first_undisturbed},
        {"connection", out_of_descriptors_then_accepted},
        {"connection", disconnect_releases_client_state_keeps_device_state},
        {"connection", client_fd_budget},
        {"connection", silent_client_disconnected_at_handshake_deadline},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        TCase *test_case = tcase_create(cases[i].name);
        tcase_add_checked_fixture(test_case, setup, teardown);
        tcase_set_timeout(test_case, 30);
        _tcase_add_test(test_case, cases[i].test, 0, 0, 0, 1);
        suite_add_tcase(suite, test_case);
    }
    TCase *plugin_case = tcase_create("plugin");
    tcase_add_test(plugin_case, plugin_refusal_reported);
    tcase_add_test(plugin_case, msix_table_must_not_be_mappable);
    suite_add_tcase(suite, plugin_case);
    return suite;
}

int main(void)
{
    vu_log_set_sink(counting_sink);
    return test_run_suite(protocol_suite());
}
