/*
 * Plugin ABI 1.1 on the device's own event loop: add_fd(), add_timer() and timer_set(),
 * remove_source(), post() from other threads, and limits(). A plugin defined here declares
 * sources in create(), before the device has a loop; an endpoint then serves the device
 * from a loop this test runs by hand, one iteration at a time.
 */
#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "device.h"
#include "endpoint.h"
#include "event_loop.h"
#include "fault_guard.h"
#include "test_runner.h"

#define POSTING_THREADS  4
#define POSTS_PER_THREAD 2000

struct probe {
    struct vfio_userd_device *device;
    const struct vfio_userd_host *host;
    int fd; /* an eventfd the plugin watches from create() on */
    struct vfio_userd_source *fd_source, *timer, *idle_timer, *self_removing;
    unsigned fd_calls, timer_calls, idle_calls, self_calls;
    bool guarded; /* every callback ran with the fault guard entered for the device */
    pthread_t loop_thread;
    bool wrong_thread;
    /* post(): per posting thread, the next sequence number expected. */
    unsigned next[POSTING_THREADS];
    bool out_of_order;
    unsigned posted_calls;
    bool destroyed;
};

static struct probe probe;

/* Whether the fault guard is entered for our device, leaving it as it was. */
static void check_context(void)
{
    struct vu_device *current = vu_fault_guard_enter(NULL);

    vu_fault_guard_enter(current);
    if (current != (struct vu_device *)probe.device)
        probe.guarded = false;
    if (!pthread_equal(pthread_self(), probe.loop_thread))
        probe.wrong_thread = true;
}

static void on_fd(void *opaque, int fd, uint32_t revents)
{
    uint64_t value;

    check_context();
    ck_assert_ptr_eq(opaque, &probe);
    ck_assert_int_eq(fd, probe.fd);
    ck_assert(revents & EPOLLIN);
    ck_assert_int_eq(read(fd, &value, sizeof(value)), sizeof(value));
    probe.fd_calls++;
}

static void on_timer(void *opaque)
{
    check_context();
    probe.timer_calls++;
}

static void on_idle_timer(void *opaque)
{
    probe.idle_calls++;
}

static void on_self_removing(void *opaque)
{
    check_context();
    probe.self_calls++;
    probe.host->remove_source(probe.device, probe.self_removing);
    probe.self_removing = NULL;
}

static void probe_destroy(void *instance)
{
    /* Sources left on purpose (fd_source, timers): the host removes them after this. */
    probe.destroyed = true;
}

static const struct vfio_userd_device_ops probe_ops = {.destroy = probe_destroy};

static int probe_create(struct vfio_userd_device *device, const json_t *params,
                        struct vfio_userd_error *error)
{
    const struct vfio_userd_host *host = device->host;
    static const struct vfio_userd_pci_identity identity = {.vendor_id = 0x1234,
                                                            .device_id = 0x11ee};
    int ret;

    ck_assert(VFIO_USERD_HOST_HAS(host, limits));
    probe.device = device;
    probe.host = host;
    ck_assert_int_eq(host->set_ops(device, &probe_ops, &probe), 0);
    ck_assert_int_eq(host->pci_set_identity(device, &identity), 0);
    ret = host->add_fd(device, probe.fd, EPOLLIN, on_fd, &probe, &probe.fd_source);
    ck_assert_int_eq(ret, 0);
    /* Armed before the device has a loop: it fires once it has one. */
    ck_assert_int_eq(host->add_timer(device, 1000, on_timer, &probe, &probe.timer), 0);
    ck_assert_int_eq(
        host->add_timer(device, VFIO_USERD_TIMER_OFF, on_idle_timer, &probe, &probe.idle_timer), 0);
    ck_assert_int_eq(host->add_fd(device, -1, EPOLLIN, on_fd, &probe, &probe.self_removing),
                     -EINVAL);
    ck_assert_int_eq(host->timer_set(device, probe.fd_source, 10), -EINVAL);
    return 0;
}

VFIO_USERD_PLUGIN_DEFINE(.name = "probe", .version = "1", .create = probe_create);

static char directory[] = "/tmp/test-event-sources.XXXXXX";
static char socket_path[96];
static struct vu_loop *loop;
static struct vu_device *device;
static struct vu_endpoint *endpoint;

static void setup(void)
{
    struct vfio_userd_error error = {0};
    int listen_fd;

    memset(&probe, 0, sizeof(probe));
    probe.guarded = true;
    probe.loop_thread = pthread_self();
    probe.fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    ck_assert_int_ge(probe.fd, 0);
    ck_assert_ptr_nonnull(mkdtemp(directory));
    snprintf(socket_path, sizeof(socket_path), "%s/device.sock", directory);
    ck_assert_int_ge(vu_loop_new(&loop), 0);
    ck_assert_int_eq(vu_device_create(&vfio_userd_plugin, "probe0", NULL, &device, &error), 0);
    ck_assert_int_eq(vu_socket_listen(socket_path, NULL, &listen_fd), 0);
    ck_assert_int_eq(vu_endpoint_new(device, loop, listen_fd, &endpoint), 0);
}

static void teardown(void)
{
    vu_endpoint_free(endpoint);
    vu_device_destroy(device);
    ck_assert(probe.destroyed);
    loop = vu_loop_unref(loop);
    close(probe.fd);
    unlink(socket_path);
    rmdir(directory);
    strcpy(directory, "/tmp/test-event-sources.XXXXXX");
}

/* Runs the loop until `done` holds or a second passes; whether it held. */
static bool run_until(bool (*done)(void))
{
    for (int i = 0; i < 1000 && !done(); i++)
        ck_assert_int_ge(vu_loop_iterate(loop, 1000), 0);
    return done();
}

static bool fd_called(void)
{
    return probe.fd_calls > 0;
}

static bool timer_called(void)
{
    return probe.timer_calls > 0;
}

static bool timer_called_twice(void)
{
    return probe.timer_calls > 1;
}

static bool self_called(void)
{
    return probe.self_calls > 0;
}

START_TEST(fd_source_added_in_create_works_once_served)
{
    uint64_t one = 1;

    ck_assert_int_eq(write(probe.fd, &one, sizeof(one)), sizeof(one));
    ck_assert(run_until(fd_called));
    ck_assert_uint_eq(probe.fd_calls, 1);
    ck_assert(probe.guarded);
    ck_assert(!probe.wrong_thread);
    /* Removed, it is not called again. */
    probe.host->remove_source(probe.device, probe.fd_source);
    probe.fd_source = NULL;
    ck_assert_int_eq(write(probe.fd, &one, sizeof(one)), sizeof(one));
    for (int i = 0; i < 5; i++)
        vu_loop_iterate(loop, 1000);
    ck_assert_uint_eq(probe.fd_calls, 1);
}
END_TEST

START_TEST(timers_fire_once_and_rearm)
{
    struct timespec before, after;
    uint64_t elapsed;

    ck_assert(run_until(timer_called));
    ck_assert_uint_eq(probe.timer_calls, 1);
    ck_assert(probe.guarded);
    /* One-shot: nothing more without timer_set(). */
    for (int i = 0; i < 5; i++)
        vu_loop_iterate(loop, 2000);
    ck_assert_uint_eq(probe.timer_calls, 1);
    /* Re-armed for 20 ms: not much sooner or much later (accuracy is 1 us, not 250 ms). */
    clock_gettime(CLOCK_MONOTONIC, &before);
    ck_assert_int_eq(probe.host->timer_set(probe.device, probe.timer, 20000), 0);
    ck_assert(run_until(timer_called_twice));
    clock_gettime(CLOCK_MONOTONIC, &after);
    elapsed = (uint64_t)(after.tv_sec - before.tv_sec) * 1000000 +
              (uint64_t)((after.tv_nsec - before.tv_nsec) / 1000);
    ck_assert_uint_ge(elapsed, 19000);
    ck_assert_uint_lt(elapsed, 200000);
    /* Disarmed, it stays silent; the timer created off never fired. */
    ck_assert_int_eq(probe.host->timer_set(probe.device, probe.timer, 1000), 0);
    ck_assert_int_eq(probe.host->timer_set(probe.device, probe.timer, VFIO_USERD_TIMER_OFF), 0);
    for (int i = 0; i < 10; i++)
        vu_loop_iterate(loop, 2000);
    ck_assert_uint_eq(probe.timer_calls, 2);
    ck_assert_uint_eq(probe.idle_calls, 0);
}
END_TEST

START_TEST(a_callback_may_remove_its_own_source)
{
    ck_assert_int_eq(
        probe.host->add_timer(probe.device, 0, on_self_removing, &probe, &probe.self_removing), 0);
    ck_assert(run_until(self_called));
    for (int i = 0; i < 5; i++)
        vu_loop_iterate(loop, 1000);
    ck_assert_uint_eq(probe.self_calls, 1);
}
END_TEST

struct posted {
    unsigned thread, sequence;
};

static void on_posted_item(void *opaque)
{
    struct posted *item = opaque;

    check_context();
    if (item->sequence != probe.next[item->thread])
        probe.out_of_order = true;
    probe.next[item->thread] = item->sequence + 1;
    probe.posted_calls++;
    free(item);
}

static void *posting_thread(void *argument)
{
    unsigned thread = (unsigned)(uintptr_t)argument;

    for (unsigned i = 0; i < POSTS_PER_THREAD; i++) {
        struct posted *item = malloc(sizeof(*item));
        ck_assert_ptr_nonnull(item);
        item->thread = thread;
        item->sequence = i;
        ck_assert_int_eq(probe.host->post(probe.device, on_posted_item, item), 0);
    }
    return NULL;
}

static bool all_posted_ran(void)
{
    return probe.posted_calls == POSTING_THREADS * POSTS_PER_THREAD;
}

START_TEST(post_from_many_threads_runs_each_once_in_order_on_the_loop)
{
    pthread_t threads[POSTING_THREADS];

    for (unsigned i = 0; i < POSTING_THREADS; i++)
        ck_assert_int_eq(pthread_create(&threads[i], NULL, posting_thread, (void *)(uintptr_t)i),
                         0);
    /* The loop runs while they post. */
    for (int i = 0; i < 20000 && !all_posted_ran(); i++)
        ck_assert_int_ge(vu_loop_iterate(loop, 1000), 0);
    for (unsigned i = 0; i < POSTING_THREADS; i++)
        pthread_join(threads[i], NULL);
    ck_assert(run_until(all_posted_ran));
    ck_assert_uint_eq(probe.posted_calls, POSTING_THREADS * POSTS_PER_THREAD);
    ck_assert(!probe.out_of_order);
    ck_assert(probe.guarded);
    ck_assert(!probe.wrong_thread);
    ck_assert_int_eq(probe.host->post(probe.device, NULL, NULL), -EINVAL);
}
END_TEST

static void never_called(void *opaque)
{
    ck_abort_msg("a function posted to a device that went was called");
}

START_TEST(posted_functions_wait_for_the_loop_and_go_with_the_device)
{
    /* Without a loop (the endpoint gone) a post waits; the device's end drops it. */
    vu_endpoint_free(endpoint);
    endpoint = NULL;
    ck_assert_int_eq(probe.host->post(probe.device, never_called, NULL), 0);
    for (int i = 0; i < 5; i++)
        vu_loop_iterate(loop, 1000);
}
END_TEST

START_TEST(limits_are_reported)
{
    const struct vfio_userd_host_limits *limits = probe.host->limits(probe.device);

    ck_assert_uint_eq(limits->size, sizeof(*limits));
    ck_assert(VFIO_USERD_LIMITS_HAS(limits, max_client_fds));
    ck_assert_uint_eq(limits->max_ioeventfds, VFIO_USERD_MAX_IOEVENTFDS);
    ck_assert_uint_eq(limits->max_dma_maps, VU_SERVER_MAX_DMA_MAPS);
    ck_assert_uint_eq(limits->max_msix_vectors, 2048);
    ck_assert_uint_eq(limits->max_msi_vectors, 32);
    ck_assert_uint_eq(limits->max_sparse_areas, 64);
    ck_assert_uint_eq(limits->max_client_fds, VU_MAX_CLIENT_FDS_DEFAULT);
    ck_assert_int_eq(vu_endpoint_set_max_client_fds(endpoint, 64), 0);
    ck_assert_uint_eq(probe.host->limits(probe.device)->max_client_fds, 64);
}
END_TEST

/* A plugin built for ABI 1.0: it knows nothing past add_ioeventfd, and its structures have
 * no struct_size (test_testdev runs testdev built with the 1.0 header itself). */
static int old_create(struct vfio_userd_device *old, const json_t *params,
                      struct vfio_userd_error *error)
{
    static const struct {
        uint16_t vendor_id, device_id, subsystem_vendor_id, subsystem_id;
        uint32_t class_code;
        uint8_t revision, interrupt_pin;
    } identity_1_0 = {.vendor_id = 0x1234, .device_id = 0x10ee};

    ck_assert_uint_ge(old->host->size, offsetof(struct vfio_userd_host, add_ioeventfd) +
                                           sizeof(old->host->add_ioeventfd));
    return old->host->pci_set_identity(old, (const void *)&identity_1_0);
}

static const struct vfio_userd_plugin old_plugin = {
    .abi_major = 1, .abi_minor = 0, .name = "old", .create = old_create};

START_TEST(a_1_0_plugin_loads_and_is_served)
{
    struct vfio_userd_plugin newer = old_plugin;
    struct vfio_userd_error error = {0};
    struct vu_device *old_device;
    struct vu_endpoint *old_endpoint;
    char path[128], message[200];
    int listen_fd;

    ck_assert_int_eq(vu_device_check_plugin(&old_plugin, message, sizeof(message)), 0);
    newer.abi_minor = VFIO_USERD_ABI_MINOR + 1;
    ck_assert_int_eq(vu_device_check_plugin(&newer, message, sizeof(message)), -EPROTONOSUPPORT);
    ck_assert_int_eq(vu_device_create(&old_plugin, "old0", NULL, &old_device, &error), 0);
    snprintf(path, sizeof(path), "%s/old.sock", directory);
    ck_assert_int_eq(vu_socket_listen(path, NULL, &listen_fd), 0);
    ck_assert_int_eq(vu_endpoint_new(old_device, loop, listen_fd, &old_endpoint), 0);
    vu_loop_iterate(loop, 1000);
    vu_endpoint_free(old_endpoint);
    vu_device_destroy(old_device);
    unlink(path);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("event_sources");
    TCase *test_case = tcase_create("abi 1.1");

    tcase_add_checked_fixture(test_case, setup, teardown);
    tcase_add_test(test_case, fd_source_added_in_create_works_once_served);
    tcase_add_test(test_case, timers_fire_once_and_rearm);
    tcase_add_test(test_case, a_callback_may_remove_its_own_source);
    tcase_add_test(test_case, post_from_many_threads_runs_each_once_in_order_on_the_loop);
    tcase_add_test(test_case, posted_functions_wait_for_the_loop_and_go_with_the_device);
    tcase_add_test(test_case, limits_are_reported);
    tcase_add_test(test_case, a_1_0_plugin_loads_and_is_served);
    suite_add_tcase(suite, test_case);
    return test_run_suite(suite);
}
