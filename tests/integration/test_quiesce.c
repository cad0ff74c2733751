/*
 * Plugin ABI 1.1 for device models with I/O of their own: quiesce before client memory goes
 * or the device resets (DMA_UNMAP, DEVICE_RESET, the client's departure), irq_trigger()
 * from the plugin's own threads, and the sized structures a plugin hands over. A plugin
 * defined here plays a device with I/O in flight: its quiesce() answers -EBUSY until the
 * test says the I/O is over, and it records the order of the host's calls.
 */
#include <check.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>
#include <linux/pci_regs.h>

#include "client.h"
#include "device.h"
#include "endpoint.h"
#include "log.h"
#include "session.h"
#include "test_runner.h"
#include "test_server.h"

#define MEMORY_SIZE (64 * 1024)
#define EVENT_MAX   32

/* What the plugin saw, in order; written on the device's thread, read under test_server_call. */
struct quiet {
    struct vfio_userd_device *device;
    const struct vfio_userd_host *host;
    bool busy; /* quiesce() answers -EBUSY: I/O is "in flight" */
    /* Between a finished quiesce (0 from quiesce(), or quiesced() reported) and resume():
     * only then may the host unmap, reset or disconnect. A call outside it notes '!'. */
    bool quiet;
    /* quiesce() reports quiesced() itself before it answers -EBUSY. */
    bool report_inside;
    /* quiesce() starts a DMA_READ through messages and reports quiesced() when it is done. */
    bool read_in_quiesce;
    struct vfio_userd_dma_request request;
    uint8_t data[4];
    int dma_status;
    char events[EVENT_MAX];
    unsigned event_count; /* q: quiesce, u: dma_unmap, r: reset, d: disconnect, s: resume */
};

static struct quiet quiet;
static struct test_server server;

static void note(char event)
{
    if (quiet.event_count < EVENT_MAX - 1)
        quiet.events[quiet.event_count++] = event;
}

/* The host acts on a device that has not quiesced, or resumes one still quiescing. */
static void check_quiet(void)
{
    if (!quiet.quiet)
        note('!');
}

static void quiesce_read_done(struct vfio_userd_dma_request *request, int status)
{
    quiet.dma_status = status;
    quiet.quiet = true;
    quiet.host->quiesced(quiet.device);
}

static int quiet_quiesce(void *instance)
{
    note('q');
    if (quiet.read_in_quiesce) {
        quiet.request = (struct vfio_userd_dma_request){
            .address = 0x200000,
            .length = sizeof(quiet.data),
            .buffer = quiet.data,
            .complete = quiesce_read_done,
        };
        quiet.dma_status = quiet.host->dma_submit(quiet.device, &quiet.request);
        if (quiet.dma_status != -EINPROGRESS) {
            /* Not through messages (the client is gone): nothing to wait for. */
            quiet.quiet = true;
            return 0;
        }
        return -EBUSY;
    }
    if (quiet.report_inside) {
        quiet.quiet = true;
        ck_assert_int_eq(quiet.host->quiesced(quiet.device), 0);
        return -EBUSY;
    }
    quiet.quiet = !quiet.busy;
    return quiet.busy ? -EBUSY : 0;
}

static void quiet_resume(void *instance)
{
    check_quiet();
    note('s');
    quiet.quiet = false;
}

static void quiet_dma_unmap(void *instance, uint64_t address, uint64_t size)
{
    check_quiet();
    note('u');
}

static int quiet_reset(void *instance)
{
    check_quiet();
    note('r');
    return 0;
}

static void quiet_disconnect(void *instance)
{
    check_quiet();
    note('d');
}

static const struct vfio_userd_device_ops quiet_ops = {
    .struct_size = sizeof(struct vfio_userd_device_ops),
    .reset = quiet_reset,
    .dma_unmap = quiet_dma_unmap,
    .client_disconnect = quiet_disconnect,
    .quiesce = quiet_quiesce,
    .resume = quiet_resume,
};

/* Sized structures: a later header's larger structure with unknown members zero passes,
 * one that uses them does not, a smaller one does not. */
static void check_sized_structures(struct vfio_userd_device *device)
{
    struct {
        struct vfio_userd_device_ops ops;
        uint64_t later_member;
    } later = {.ops = quiet_ops};

    later.ops.struct_size = sizeof(later);
    ck_assert_int_eq(device->host->set_ops(device, &later.ops, &quiet), 0);
    later.later_member = 1;
    ck_assert_int_eq(device->host->set_ops(device, &later.ops, &quiet), -E2BIG);
    later.ops.struct_size = offsetof(struct vfio_userd_device_ops, quiesce);
    ck_assert_int_eq(device->host->set_ops(device, &later.ops, &quiet), -EINVAL);
    later.ops.struct_size = 1u << 20;
    ck_assert_int_eq(device->host->set_ops(device, &later.ops, &quiet), -E2BIG);
}

static int quiet_create(struct vfio_userd_device *device, const json_t *params,
                        struct vfio_userd_error *error)
{
    static const struct vfio_userd_pci_identity identity = {
        .struct_size = sizeof(identity), .vendor_id = 0x1234, .device_id = 0x11ef};
    static const struct vfio_userd_region bar0 = {
        .size = 4096,
        .flags = VFIO_USERD_REGION_READABLE | VFIO_USERD_REGION_WRITABLE | VFIO_USERD_REGION_MEMORY,
    };
    struct vfio_userd_region bad_region = bar0;
    int ret;

    quiet.device = device;
    quiet.host = device->host;
    check_sized_structures(device);
    ck_assert_int_eq(device->host->set_ops(device, &quiet_ops, &quiet), 0);
    ck_assert_int_eq(device->host->pci_set_identity(device, &identity), 0);
    bad_region.struct_size = 8;
    ck_assert_int_eq(device->host->add_region(device, VFIO_USERD_REGION_BAR0, &bad_region),
                     -EINVAL);
    ret = device->host->add_region(device, VFIO_USERD_REGION_BAR0, &bar0);
    if (ret == 0)
        ret = device->host->pci_add_msix(device, 4, 0, 2048, 0, 3072);
    return ret;
}

VFIO_USERD_PLUGIN_DEFINE(.name = "quiet", .version = "1", .create = quiet_create);

/* --- Reading and steering the plugin from the test thread. --- */

static void read_events(struct test_server *target, void *argument)
{
    memcpy(argument, quiet.events, sizeof(quiet.events));
}

static void events_are(const char *expected)
{
    char events[EVENT_MAX] = {0};

    test_server_call(&server, read_events, events);
    ck_assert_str_eq(events, expected);
}

static void set_busy(struct test_server *target, void *argument)
{
    quiet.busy = *(bool *)argument;
}

/* The device's I/O is over: it reports the quiesce done, as a plugin does on its thread. */
static void report_quiesced(struct test_server *target, void *argument)
{
    quiet.quiet = true;
    *(int *)argument = quiet.host->quiesced(quiet.device);
}

static int quiesced(void)
{
    int ret = 1;

    test_server_call(&server, report_quiesced, &ret);
    return ret;
}

static void busy(bool value)
{
    test_server_call(&server, set_busy, &value);
}

static struct vu_client *client;
static int memory_fd = -1;

/* Warnings about a quiesce that takes long, counted from the server thread's log. */
static atomic_uint slow_quiesce_warnings;

static void count_warnings(enum vfio_userd_log_level level, const char *device, const char *message)
{
    if (level == VFIO_USERD_LOG_WARNING && strstr(message, "has not finished quiescing") != NULL)
        atomic_fetch_add(&slow_quiesce_warnings, 1);
    fprintf(stderr, "<%d>%s: %s\n", (int)level, device != NULL ? device : "", message);
}

static void setup(void)
{
    struct vu_client_options options;

    quiet = (struct quiet){0};
    vu_log_set_sink(count_warnings);
    ck_assert_int_eq(test_server_start(&server, &vfio_userd_plugin, NULL), 0);
    vu_client_options_default(&options);
    options.timeout_ms = 2000;
    ck_assert_int_eq(vu_client_connect(server.socket_path, &options, &client), 0);
    memory_fd = memfd_create("guest", MFD_CLOEXEC);
    ck_assert_int_ge(memory_fd, 0);
    ck_assert_int_eq(ftruncate(memory_fd, MEMORY_SIZE), 0);
    ck_assert_int_eq(vu_client_dma_map(client, 0x100000, MEMORY_SIZE,
                                       VU_DMA_FLAG_READABLE | VU_DMA_FLAG_WRITABLE, memory_fd, 0),
                     0);
}

static void teardown(void)
{
    vu_client_close(client);
    client = NULL;
    test_server_stop(&server);
    close(memory_fd);
}

/* Sends DMA_UNMAP of the test's map without waiting; returns its message id. */
static uint16_t send_unmap(void)
{
    struct vu_dma_unmap unmap = {.argsz = sizeof(unmap), .address = 0x100000, .size = MEMORY_SIZE};
    uint16_t id = vu_client_next_message_id(client);

    ck_assert_int_eq(
        vu_client_send(client, id, VU_COMMAND_DMA_UNMAP, 0, &unmap, sizeof(unmap), NULL, 0), 0);
    return id;
}

static void expect_reply(uint16_t id, uint16_t command)
{
    struct vu_header header;
    uint8_t payload[64];
    size_t length;

    vu_client_set_timeout(client, 2000);
    ck_assert_int_eq(
        vu_client_receive(client, &header, payload, sizeof(payload), &length, NULL, 0, NULL), 0);
    ck_assert_uint_eq(header.message_id, id);
    ck_assert_uint_eq(header.command, command);
    ck_assert_uint_eq(header.flags & VU_FLAGS_ERROR, 0);
}

static void expect_no_reply(void)
{
    struct pollfd ready = {.fd = vu_client_socket(client), .events = POLLIN};

    ck_assert_int_eq(poll(&ready, 1, 200), 0);
}

START_TEST(unmap_waits_for_the_device_to_quiesce)
{
    struct vu_region_access read = {.region = 0, .offset = 0, .count = 4};
    uint16_t unmap_id, read_id;

    busy(true);
    unmap_id = send_unmap();
    /* A command behind it waits as well: replies keep the order of commands. */
    read_id = vu_client_next_message_id(client);
    ck_assert_int_eq(
        vu_client_send(client, read_id, VU_COMMAND_REGION_READ, 0, &read, sizeof(read), NULL, 0),
        0);
    expect_no_reply();
    events_are("q");
    ck_assert_int_eq(quiesced(), 0);
    expect_reply(unmap_id, VU_COMMAND_DMA_UNMAP);
    expect_reply(read_id, VU_COMMAND_REGION_READ);
    events_are("qus");
    /* Reported twice: nothing is pending the second time. */
    ck_assert_int_eq(quiesced(), -EINVAL);
}
END_TEST

START_TEST(a_quiet_device_goes_ahead_at_once)
{
    ck_assert_int_eq(vu_client_device_reset(client), 0);
    ck_assert_int_eq(vu_client_dma_unmap(client, 0x100000, MEMORY_SIZE, 0), 0);
    events_are("qrsqus");
    /* Refused requests never disturb the device. */
    ck_assert_int_eq(vu_client_dma_unmap(client, 0x100000, MEMORY_SIZE, 0), -ENOENT);
    ck_assert_int_eq(vu_client_dma_unmap(client, 0, 0, VU_DMA_UNMAP_FLAG_ALL), 0);
    events_are("qrsqus");
}
END_TEST

START_TEST(reset_waits_for_the_device_to_quiesce)
{
    uint16_t id = vu_client_next_message_id(client);

    busy(true);
    ck_assert_int_eq(vu_client_send(client, id, VU_COMMAND_DEVICE_RESET, 0, NULL, 0, NULL, 0), 0);
    expect_no_reply();
    events_are("q");
    ck_assert_int_eq(quiesced(), 0);
    expect_reply(id, VU_COMMAND_DEVICE_RESET);
    events_are("qrs");
}
END_TEST

START_TEST(a_departed_clients_memory_stays_until_the_device_is_quiet)
{
    struct vu_client_options options;
    struct vu_client *next = NULL;

    busy(true);
    vu_client_close(client);
    client = NULL;
    usleep(100 * 1000);
    events_are("q");
    /* The next client waits in the backlog: connected, but not yet answered. */
    vu_client_options_default(&options);
    ck_assert_int_eq(vu_client_connect_raw(server.socket_path, &next), 0);
    usleep(100 * 1000);
    events_are("q");
    ck_assert_int_eq(quiesced(), 0);
    options.timeout_ms = 2000;
    ck_assert_int_eq(vu_client_negotiate(next, &options), 0);
    events_are("quds");
    client = next;
}
END_TEST

START_TEST(a_client_leaving_while_a_command_waits)
{
    busy(true);
    send_unmap();
    expect_no_reply();
    vu_client_close(client);
    client = NULL;
    usleep(100 * 1000);
    events_are("q");
    ck_assert_int_eq(quiesced(), 0);
    usleep(100 * 1000);
    events_are("quds");
}
END_TEST

static void set_quiesce_warning(struct test_server *target, void *argument)
{
    vu_endpoint_set_quiesce_warning(target->endpoint, *(uint64_t *)argument);
}

START_TEST(a_quiesce_that_takes_long_is_reported)
{
    uint64_t warning = 100 * 1000, began;
    uint16_t id;
    unsigned seen;

    test_server_call(&server, set_quiesce_warning, &warning);
    busy(true);
    began = vu_monotonic_usec();
    id = send_unmap();
    /* After 100 ms, then 200 ms later: the second report comes 300 ms in at the earliest. */
    while (atomic_load(&slow_quiesce_warnings) < 2 && vu_monotonic_usec() - began < 5000000)
        usleep(10 * 1000);
    ck_assert_uint_ge(atomic_load(&slow_quiesce_warnings), 2);
    ck_assert_uint_ge(vu_monotonic_usec() - began, 290 * 1000);
    ck_assert_int_eq(quiesced(), 0);
    expect_reply(id, VU_COMMAND_DMA_UNMAP);
    /* Done: no report after it, though the next was due. */
    seen = atomic_load(&slow_quiesce_warnings);
    usleep(800 * 1000);
    ck_assert_uint_eq(atomic_load(&slow_quiesce_warnings), seen);
}
END_TEST

/* The loop has been asleep a while when the request comes: sd-event's idea of "now" is
 * from its last pass, and a warning counted from there would be due at once. */
START_TEST(a_quiesce_after_a_quiet_spell_is_reported_no_sooner)
{
    uint64_t warning = 300 * 1000, began;
    uint16_t id;

    test_server_call(&server, set_quiesce_warning, &warning);
    busy(true);
    usleep(500 * 1000);
    began = vu_monotonic_usec();
    id = send_unmap();
    while (atomic_load(&slow_quiesce_warnings) < 1 && vu_monotonic_usec() - began < 5000000)
        usleep(10 * 1000);
    ck_assert_uint_ge(atomic_load(&slow_quiesce_warnings), 1);
    ck_assert_uint_ge(vu_monotonic_usec() - began, 290 * 1000);
    ck_assert_int_eq(quiesced(), 0);
    expect_reply(id, VU_COMMAND_DMA_UNMAP);
}
END_TEST

static void control_plane_reset(struct test_server *target, void *argument)
{
    *(int *)argument = vu_device_reset_quiesced(target->device);
}

START_TEST(a_control_plane_reset_is_refused_while_the_device_is_busy)
{
    int ret = 1;

    busy(true);
    test_server_call(&server, control_plane_reset, &ret);
    ck_assert_int_eq(ret, -EBUSY);
    events_are("q");
    /* Nothing waits for that quiesce: once done, the device resumes at once. */
    ck_assert_int_eq(quiesced(), 0);
    usleep(50 * 1000);
    events_are("qs");
    busy(false);
    test_server_call(&server, control_plane_reset, &ret);
    ck_assert_int_eq(ret, 0);
    events_are("qsqrs");
}
END_TEST

/* A control-plane reset -EBUSY leaves a quiesce nobody waits for; a client's DMA_UNMAP of
 * nothing then must not resume the device in the middle of it. */
START_TEST(a_request_with_nothing_to_do_leaves_a_quiesce_alone)
{
    int ret = 1;

    ck_assert_int_eq(vu_client_dma_unmap(client, 0x100000, MEMORY_SIZE, 0), 0);
    events_are("qus");
    busy(true);
    test_server_call(&server, control_plane_reset, &ret);
    ck_assert_int_eq(ret, -EBUSY);
    ck_assert_int_eq(vu_client_dma_unmap(client, 0, 0, VU_DMA_UNMAP_FLAG_ALL), 0);
    events_are("qusq");
    ck_assert_int_eq(quiesced(), 0);
    usleep(50 * 1000);
    events_are("qusqs");
}
END_TEST

/* The device reports its quiesce for a held DMA_UNMAP, and a control-plane reset comes
 * before the unmap has run: the unmap must still find the device quiet. */
static void quiesced_then_control_plane_reset(struct test_server *target, void *argument)
{
    quiet.quiet = true;
    ck_assert_int_eq(quiet.host->quiesced(quiet.device), 0);
    *(int *)argument = vu_device_reset_quiesced(target->device);
}

START_TEST(a_control_plane_reset_between_quiesced_and_the_held_command)
{
    uint16_t id;
    int ret = 1;

    busy(true);
    id = send_unmap();
    expect_no_reply();
    test_server_call(&server, quiesced_then_control_plane_reset, &ret);
    ck_assert_int_eq(ret, 0);
    expect_reply(id, VU_COMMAND_DMA_UNMAP);
    events_are("qrus");
}
END_TEST

START_TEST(a_control_plane_reset_between_quiesced_and_the_departure)
{
    int ret = 1;

    busy(true);
    vu_client_close(client);
    client = NULL;
    usleep(100 * 1000);
    events_are("q");
    test_server_call(&server, quiesced_then_control_plane_reset, &ret);
    ck_assert_int_eq(ret, 0);
    usleep(100 * 1000);
    events_are("qruds");
}
END_TEST

/* A quiesce reported from inside quiesce() leaves its end to the loop; a second quiesce
 * begun before that must not be resumed by it. */
static void two_control_plane_resets(struct test_server *target, void *argument)
{
    int *results = argument;

    quiet.report_inside = true;
    results[0] = vu_device_reset_quiesced(target->device);
    quiet.report_inside = false;
    quiet.busy = true;
    results[1] = vu_device_reset_quiesced(target->device);
}

START_TEST(the_end_of_one_quiesce_does_not_resume_the_next)
{
    int results[2] = {1, 1};

    test_server_call(&server, two_control_plane_resets, results);
    ck_assert_int_eq(results[0], 0);
    ck_assert_int_eq(results[1], -EBUSY);
    usleep(50 * 1000);
    events_are("qrsq");
    ck_assert_int_eq(quiesced(), 0);
    usleep(50 * 1000);
    events_are("qrsqs");
}
END_TEST

/* Memory the client serves through DMA_READ: a device that reads it to finish its I/O must
 * get the client's answer even behind a command the client sent after the DMA_UNMAP (no
 * twin socket, as QEMU: answers come on the main socket). */
static void read_in_quiesce(struct test_server *target, void *argument)
{
    quiet.read_in_quiesce = true;
}

static void read_status(struct test_server *target, void *argument)
{
    *(int *)argument = quiet.dma_status;
}

START_TEST(a_dma_answer_behind_a_waiting_command)
{
    static uint8_t private_memory[4096] = {0x5a, 0x5a, 0x5a, 0x5a};
    struct vu_region_access write = {.region = 0, .offset = 0, .count = 4};
    uint8_t message[sizeof(write) + 4] = {0};
    uint16_t unmap_id, write_id;
    int status = 1;

    ck_assert_int_eq(vu_client_dma_map_memory(client, 0x200000, sizeof(private_memory),
                                              VU_DMA_FLAG_READABLE, private_memory),
                     0);
    test_server_call(&server, read_in_quiesce, NULL);
    unmap_id = send_unmap();
    memcpy(message, &write, sizeof(write));
    write_id = vu_client_next_message_id(client);
    ck_assert_int_eq(vu_client_send(client, write_id, VU_COMMAND_REGION_WRITE, 0, message,
                                    sizeof(message), NULL, 0),
                     0);
    /* Serves the device's DMA_READ while it waits; well within the 5 s DMA timeout. */
    expect_reply(unmap_id, VU_COMMAND_DMA_UNMAP);
    expect_reply(write_id, VU_COMMAND_REGION_WRITE);
    test_server_call(&server, read_status, &status);
    ck_assert_int_eq(status, 0);
    events_are("qus");
}
END_TEST

/* CPU time of this process (the server thread's included), in microseconds. */
static uint64_t cpu_usec(void)
{
    struct rusage usage;

    ck_assert_int_eq(getrusage(RUSAGE_SELF, &usage), 0);
    return (uint64_t)(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) * 1000000 +
           (uint64_t)(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec);
}

/* Writes REGION_WRITEs of 2 KiB (BAR0 below its MSI-X table) behind the held command until
 * the socket takes no more; at least `minimum` bytes. */
static void flood(size_t minimum)
{
    static uint8_t message[VU_HEADER_SIZE + sizeof(struct vu_region_access) + 2048];
    struct vu_region_access access = {.region = 0, .offset = 0, .count = 2048};
    int fd = vu_client_socket(client);
    int flags = fcntl(fd, F_GETFL);
    size_t sent = 0;

    vu_wire_encode_header(message, 0x7000, VU_COMMAND_REGION_WRITE, sizeof(message),
                          VU_FLAGS_TYPE_COMMAND, 0);
    memcpy(message + VU_HEADER_SIZE, &access, sizeof(access));
    ck_assert_int_eq(fcntl(fd, F_SETFL, flags | O_NONBLOCK), 0);
    for (unsigned i = 0; i < 4096; i++) {
        struct pollfd ready = {.fd = fd, .events = POLLOUT};
        ssize_t written = write(fd, message, sizeof(message));

        if (written >= 0) {
            sent += (size_t)written;
            continue;
        }
        ck_assert_int_eq(errno, EAGAIN);
        /* Full: give the daemon time to read, until it reads no more. */
        if (poll(&ready, 1, 200) == 0)
            break;
    }
    ck_assert_uint_gt(sent, minimum);
}

/* Behind a held command the daemon reads what fits and no more: a full buffer, with data
 * left in the level-triggered socket, must not spin the device's thread. */
START_TEST(a_flood_behind_a_held_command_costs_no_cpu)
{
    struct vu_header header;
    uint8_t payload[64];
    size_t length;
    uint64_t before;
    uint16_t id;

    busy(true);
    id = send_unmap();
    /* More than the daemon's input buffer holds: the rest stays in the socket. */
    flood(VU_MAX_MESSAGE_SIZE);
    usleep(100 * 1000);
    before = cpu_usec();
    usleep(300 * 1000);
    ck_assert_uint_lt(cpu_usec() - before, 30 * 1000);
    events_are("q");
    /* Once quiet, the unmap is answered first, then the writes behind it in order. */
    ck_assert_int_eq(quiesced(), 0);
    expect_reply(id, VU_COMMAND_DMA_UNMAP);
    ck_assert_int_eq(
        vu_client_receive(client, &header, payload, sizeof(payload), &length, NULL, 0, NULL), 0);
    ck_assert_uint_eq(header.message_id, 0x7000);
    ck_assert_uint_eq(header.flags & VU_FLAGS_ERROR, 0);
    events_are("qus");
}
END_TEST

/* The same with descriptors: a DMA_MAP with its file behind the held command ends reading. */
START_TEST(a_map_behind_a_held_command_costs_no_cpu)
{
    struct vu_dma_map map = {.argsz = sizeof(map),
                             .flags = VU_DMA_FLAG_READABLE,
                             .address = 0x400000,
                             .size = MEMORY_SIZE};
    uint64_t before;

    busy(true);
    send_unmap();
    ck_assert_int_eq(vu_client_send(client, vu_client_next_message_id(client), VU_COMMAND_DMA_MAP,
                                    0, &map, sizeof(map), &memory_fd, 1),
                     0);
    flood(4096);
    usleep(100 * 1000);
    before = cpu_usec();
    usleep(300 * 1000);
    ck_assert_uint_lt(cpu_usec() - before, 30 * 1000);
    events_are("q");
}
END_TEST

/* A reply with a flag no message may carry, behind a held command: it waits there like a
 * command (it is refused once the command has run), and waiting costs no CPU. */
START_TEST(a_malformed_reply_behind_a_held_command_costs_no_cpu)
{
    uint8_t message[VU_HEADER_SIZE];
    uint64_t before;
    uint16_t id;

    busy(true);
    id = send_unmap();
    vu_wire_encode_header(message, 0x7001, VU_COMMAND_DMA_READ, sizeof(message),
                          VU_FLAGS_TYPE_REPLY | (1u << 8), 0);
    ck_assert_int_eq(write(vu_client_socket(client), message, sizeof(message)), sizeof(message));
    usleep(100 * 1000);
    before = cpu_usec();
    usleep(300 * 1000);
    ck_assert_uint_lt(cpu_usec() - before, 30 * 1000);
    events_are("q");
    ck_assert_int_eq(quiesced(), 0);
    expect_reply(id, VU_COMMAND_DMA_UNMAP);
    events_are("qus");
}
END_TEST

struct raiser {
    int vectors[3];
};

static void *raise_interrupts(void *argument)
{
    const struct raiser *raiser = argument;

    for (unsigned i = 0; i < 3; i++)
        ck_assert_int_eq(quiet.host->irq_trigger(quiet.device, (uint32_t)raiser->vectors[i]), 0);
    ck_assert_int_eq(quiet.host->irq_trigger(quiet.device, 1u << 20), -EINVAL);
    /* Out of range for the device (4 MSI-X vectors, no MSI, no INTx) as from its thread,
     * rather than accepted and dropped where nobody hears of it. */
    ck_assert_int_eq(quiet.host->irq_trigger(quiet.device, 4), -EINVAL);
    return NULL;
}

START_TEST(irq_trigger_from_a_plugin_thread)
{
    struct raiser raiser = {.vectors = {1, 3, 1}};
    int fds[4];
    uint64_t count;
    pthread_t thread;

    test_enable_msix(client);
    for (unsigned i = 0; i < 4; i++) {
        fds[i] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        ck_assert_int_ge(fds[i], 0);
    }
    ck_assert_int_eq(vu_client_set_irqs(client, VFIO_PCI_MSIX_IRQ_INDEX,
                                        VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER, 0,
                                        4, fds, NULL),
                     0);
    ck_assert_int_eq(pthread_create(&thread, NULL, raise_interrupts, &raiser), 0);
    ck_assert_int_eq(pthread_join(thread, NULL), 0);
    for (unsigned i = 0; i < 4; i++) {
        struct pollfd ready = {.fd = fds[i], .events = POLLIN};
        bool raised = i == 1 || i == 3;

        ck_assert_int_eq(poll(&ready, 1, raised ? 2000 : 50), raised ? 1 : 0);
        if (raised)
            ck_assert_int_eq(read(fds[i], &count, sizeof(count)), sizeof(count));
        close(fds[i]);
    }
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("quiesce");
    TCase *test_case = tcase_create("abi 1.1");

    tcase_add_checked_fixture(test_case, setup, teardown);
    tcase_add_test(test_case, unmap_waits_for_the_device_to_quiesce);
    tcase_add_test(test_case, a_quiet_device_goes_ahead_at_once);
    tcase_add_test(test_case, reset_waits_for_the_device_to_quiesce);
    tcase_add_test(test_case, a_departed_clients_memory_stays_until_the_device_is_quiet);
    tcase_add_test(test_case, a_client_leaving_while_a_command_waits);
    tcase_add_test(test_case, a_control_plane_reset_is_refused_while_the_device_is_busy);
    tcase_add_test(test_case, a_quiesce_that_takes_long_is_reported);
    tcase_add_test(test_case, a_quiesce_after_a_quiet_spell_is_reported_no_sooner);
    tcase_add_test(test_case, a_malformed_reply_behind_a_held_command_costs_no_cpu);
    tcase_add_test(test_case, irq_trigger_from_a_plugin_thread);
    tcase_add_test(test_case, a_request_with_nothing_to_do_leaves_a_quiesce_alone);
    tcase_add_test(test_case, a_control_plane_reset_between_quiesced_and_the_held_command);
    tcase_add_test(test_case, a_control_plane_reset_between_quiesced_and_the_departure);
    tcase_add_test(test_case, the_end_of_one_quiesce_does_not_resume_the_next);
    tcase_add_test(test_case, a_dma_answer_behind_a_waiting_command);
    tcase_add_test(test_case, a_flood_behind_a_held_command_costs_no_cpu);
    tcase_add_test(test_case, a_map_behind_a_held_command_costs_no_cpu);
    suite_add_tcase(suite, test_case);
    return test_run_suite(suite);
}
