/*
 * A plugin stuck in a callback, with the real daemon: the test plugin stuckdev
 * (tests/plugins/stuckdev.c) hangs in a BAR0 write until a file appears, next to a healthy
 * testdev device on the other worker. The admin socket must keep answering within a
 * bounded time and report the first device as stuck (naming its plugin and callback), the
 * healthy device must keep serving its client, drop-in changes to the stuck device wait
 * for its worker, and SIGTERM must end the daemon within a bounded time all the same.
 */
#include <check.h>
#include <errno.h>
#include <jansson.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <vfio-userd/plugin.h>

#include "admin_client.h"
#include "client.h"
#include "daemon_harness.h"
#include "test_process.h"
#include "test_runner.h"

#define TIMEOUT  DAEMON_HARNESS_TIMEOUT_MS
#define SCRATCH0 0x010 /* testdev, vfio-userd-testdev(7) */
/* Bounds the tests hold the daemon to: a call waits at most 1 s for a worker. */
#define ADMIN_BOUND_MS 3000
#define EXIT_BOUND_MS  5000

static struct daemon_harness harness;
static struct admin_client admin = ADMIN_CLIENT_INIT;
static char release_path[PATH_MAX];

static void write_drop_ins(void)
{
    char text[PATH_MAX + 128];

    FORMAT(release_path, "%s/release", harness.directory);
    FORMAT(text, "plugin: stuckdev\nparams:\n  release_file: %s\n", release_path);
    ck_assert_int_eq(daemon_harness_write_file(harness.devices_dir, "stuck0.yaml", text), 0);
    ck_assert_int_eq(
        daemon_harness_write_file(harness.devices_dir, "healthy0.yaml", "plugin: testdev\n"), 0);
}

static void setup(void)
{
    char plugins[PATH_MAX];
    /* --plugin-dir replaces the list: the build's plugins, then the test plugins. */
    const char *arguments[] = {"--plugin-dir", harness.plugin_dir, "--plugin-dir", plugins, NULL};

    FORMAT(plugins, "%s/tests/plugins", daemon_harness_build_dir());
    /* These are the worker threads' defences: a device host's hang is test_isolation's. */
    ck_assert_int_eq(
        daemon_harness_init(&harness, "worker_threads: 2\ndefault_isolation: thread\n"), 0);
    write_drop_ins();
    ck_assert_int_eq(daemon_harness_start(&harness, arguments), 0);
    admin_client_open(&admin, harness.admin_socket, 0);
}

static void release(void)
{
    FILE *file = fopen(release_path, "w");

    ck_assert_ptr_nonnull(file);
    fclose(file);
}

static void teardown(void)
{
    if (release_path[0] != '\0')
        release();
    admin_client_close(&admin);
    if (harness.pid > 0)
        daemon_harness_stop(&harness, SIGKILL);
    daemon_harness_fini(&harness);
    release_path[0] = '\0';
}

static struct vu_client *connect_device(const char *name)
{
    struct vu_client *client = NULL;
    char path[PATH_MAX];

    daemon_harness_device_socket(&harness, name, path, sizeof(path));
    ck_assert_int_eq(vu_client_connect(path, NULL, &client), 0);
    return client;
}

/* Sends the BAR0 write that makes stuckdev hang (posted: the client does not wait). */
static struct vu_client *make_stuck(void)
{
    struct vu_client *client = connect_device("stuck0");
    uint32_t value = 1;

    ck_assert_int_eq(
        vu_client_region_write_posted(client, VFIO_USERD_REGION_BAR0, 0, &value, sizeof(value)), 0);
    usleep(100 * 1000); /* long enough for the worker to enter the callback */
    return client;
}

/* The healthy device answers its client: a scratch register keeps what is written. */
static void expect_healthy(struct vu_client *client, uint32_t value)
{
    uint32_t read = 0;

    ck_assert_int_eq(
        vu_client_region_write(client, VFIO_USERD_REGION_BAR0, SCRATCH0, &value, sizeof(value)), 0);
    ck_assert_int_eq(
        vu_client_region_read(client, VFIO_USERD_REGION_BAR0, SCRATCH0, &read, sizeof(read)), 0);
    ck_assert_uint_eq(read, value);
}

static json_t *find_device(json_t *list, const char *name)
{
    size_t index;
    json_t *device;

    json_array_foreach (list, index, device)
        if (strcmp(json_string_value(json_object_get(device, "name")), name) == 0)
            return device;
    ck_abort_msg("device %s not listed", name);
    return NULL;
}

static void expect_stuck_description(const json_t *device)
{
    const json_t *stuck = json_object_get(device, "stuck");

    ck_assert_str_eq(json_string_value(json_object_get(device, "state")), "stuck");
    ck_assert(json_is_object(stuck));
    ck_assert_str_eq(json_string_value(json_object_get(stuck, "device")), "stuck0");
    ck_assert_str_eq(json_string_value(json_object_get(stuck, "plugin")), "stuckdev");
    ck_assert_str_eq(json_string_value(json_object_get(stuck, "callback")), "region_write");
    ck_assert_ptr_nonnull(strstr(json_string_value(json_object_get(device, "error")), "stuckdev"));
}

/* Asserts that `method` fails with the stuck-device error, naming stuck0. */
static void expect_stuck_error(const char *method, const char *params)
{
    uint64_t start = test_now_ms();
    json_t *response = admin_client_call(&admin, method, params);
    json_t *error = json_object_get(response, "error");

    ck_assert_uint_lt(test_now_ms() - start, ADMIN_BOUND_MS);
    ck_assert_msg(error != NULL, "%s succeeded on a stuck device", method);
    ck_assert_int_eq(json_integer_value(json_object_get(error, "code")), -32006);
    ck_assert_ptr_nonnull(strstr(json_string_value(json_object_get(error, "message")), "stuck0"));
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(error, "data"), "callback")),
                     "region_write");
    json_decref(response);
}

/*
 * On a busy machine the heartbeat may find a worker stuck just before its plugin is released;
 * a daemon stopped while it still counts one as stuck leaves with status 1, by design. Tests
 * that expect a clean exit wait until the daemon knows every worker is back.
 */
static void wait_until_no_worker_is_stuck(void)
{
    for (uint64_t deadline = test_now_ms() + TIMEOUT;;) {
        json_t *status = admin_client_call_ok(&admin, "daemon_status", NULL);
        size_t stuck_workers = json_array_size(json_object_get(status, "stuck_workers"));
        json_decref(status);
        if (stuck_workers == 0)
            return;
        ck_assert_msg(test_now_ms() < deadline, "a released worker still counts as stuck");
        usleep(50 * 1000);
    }
}

START_TEST(admin_reports_stuck_device_and_others_keep_serving)
{
    struct vu_client *healthy = connect_device("healthy0");
    struct vu_client *stuck;
    json_t *list, *device, *status;
    uint64_t start;

    expect_healthy(healthy, 0x11111111);
    stuck = make_stuck();

    /* The first call finds out: bounded by one wait for all workers. */
    start = test_now_ms();
    list = admin_client_call_ok(&admin, "device_list", NULL);
    fprintf(stderr, "device_list with a stuck worker, first call: %llu ms\n",
            (unsigned long long)(test_now_ms() - start));
    ck_assert_uint_lt(test_now_ms() - start, ADMIN_BOUND_MS);
    expect_stuck_description(find_device(list, "stuck0"));
    ck_assert_str_eq(json_string_value(json_object_get(find_device(list, "healthy0"), "state")),
                     "connected");
    json_decref(list);

    /* Known stuck: later calls do not wait for it. */
    start = test_now_ms();
    device = admin_client_call_ok(&admin, "device_get", "{\"name\":\"stuck0\"}");
    fprintf(stderr, "device_get of the stuck device: %llu ms\n",
            (unsigned long long)(test_now_ms() - start));
    ck_assert_uint_lt(test_now_ms() - start, ADMIN_BOUND_MS);
    expect_stuck_description(device);
    ck_assert(json_is_null(json_object_get(device, "messages")));
    json_decref(device);

    start = test_now_ms();
    status = admin_client_call_ok(&admin, "daemon_status", NULL);
    ck_assert_uint_lt(test_now_ms() - start, ADMIN_BOUND_MS);
    ck_assert_int_eq(
        json_integer_value(json_object_get(json_object_get(status, "devices"), "stuck")), 1);
    ck_assert_int_eq(
        json_integer_value(json_object_get(json_object_get(status, "devices"), "connected")), 1);
    ck_assert_uint_eq(json_array_size(json_object_get(status, "stuck_workers")), 1);
    ck_assert_str_eq(json_string_value(json_object_get(
                         json_array_get(json_object_get(status, "stuck_workers"), 0), "device")),
                     "stuck0");
    json_decref(status);

    expect_stuck_error("device_reset", "{\"name\":\"stuck0\"}");
    expect_stuck_error("device_remove", "{\"name\":\"stuck0\",\"persist\":true}");

    /* The other worker's device, and the admin socket, carry on. */
    expect_healthy(healthy, 0x22222222);
    device = admin_client_call_ok(&admin, "device_get", "{\"name\":\"healthy0\"}");
    ck_assert_str_eq(json_string_value(json_object_get(device, "state")), "connected");
    json_decref(device);

    /* The journal names the device, the plugin and the callback, once. */
    ck_assert_int_eq(daemon_harness_wait_log(&harness,
                                             "in the region_write callback of plugin "
                                             "stuckdev",
                                             TIMEOUT),
                     0);
    ck_assert_uint_eq(daemon_harness_log_count(&harness, "stuck for"), 1);

    /* Released, the worker answers again and the device is itself again. */
    release();
    ck_assert_int_eq(daemon_harness_wait_log(&harness, "answers again", TIMEOUT), 0);
    device = admin_client_call_ok(&admin, "device_get", "{\"name\":\"stuck0\"}");
    ck_assert_str_eq(json_string_value(json_object_get(device, "state")), "connected");
    ck_assert(json_is_null(json_object_get(device, "stuck")));
    json_decref(device);
    expect_healthy(healthy, 0x33333333);

    vu_client_close(stuck);
    vu_client_close(healthy);
    ck_assert_int_eq(daemon_harness_stop(&harness, SIGTERM), 0);
    ck_assert(WIFEXITED(harness.exit_status) && WEXITSTATUS(harness.exit_status) == 0);
}
END_TEST

START_TEST(drop_in_changes_wait_for_a_stuck_worker)
{
    struct vu_client *stuck = make_stuck();
    char path[PATH_MAX];

    ck_assert_int_eq(daemon_harness_wait_log(&harness, "stuck for", TIMEOUT), 0);
    FORMAT(path, "%s/stuck0.yaml", harness.devices_dir);
    ck_assert_int_eq(unlink(path), 0);
    ck_assert_int_eq(daemon_harness_wait_log(&harness, "cannot be removed", TIMEOUT), 0);
    daemon_harness_device_socket(&harness, "stuck0", path, sizeof(path));
    ck_assert_int_eq(access(path, F_OK), 0);

    /* Once it answers, the removal happens without another change. */
    release();
    ck_assert_int_eq(daemon_harness_wait_socket(&harness, path, false, TIMEOUT), 0);
    vu_client_close(stuck);
}
END_TEST

/* SIGTERM with a worker stuck for good: the daemon exits (status 1), sockets removed. */
static void sigterm_exits(bool wait_until_known)
{
    struct vu_client *stuck = make_stuck();
    char stuck_path[PATH_MAX], healthy_path[PATH_MAX];
    uint64_t start;

    if (wait_until_known)
        ck_assert_int_eq(daemon_harness_wait_log(&harness, "stuck for", TIMEOUT), 0);
    daemon_harness_device_socket(&harness, "stuck0", stuck_path, sizeof(stuck_path));
    daemon_harness_device_socket(&harness, "healthy0", healthy_path, sizeof(healthy_path));
    start = test_now_ms();
    ck_assert_int_eq(daemon_harness_stop(&harness, SIGTERM), 0);
    fprintf(stderr, "SIGTERM with a stuck plugin (%s): exit after %llu ms\n",
            wait_until_known ? "known stuck" : "just stuck",
            (unsigned long long)(test_now_ms() - start));
    ck_assert_uint_lt(test_now_ms() - start, EXIT_BOUND_MS);
    ck_assert(WIFEXITED(harness.exit_status) && WEXITSTATUS(harness.exit_status) == 1);
    ck_assert_int_ne(access(stuck_path, F_OK), 0);
    ck_assert_int_ne(access(healthy_path, F_OK), 0);
    ck_assert(daemon_harness_log_contains(&harness, "giving it up"));
    ck_assert(daemon_harness_log_contains(&harness, "exiting without joining"));
    /* The process ends without running library destructors under the stuck thread. */
    ck_assert(!daemon_harness_log_contains(&harness, "stuckdev: unloaded inside a callback"));
    vu_client_close(stuck);
}

START_TEST(sigterm_with_a_known_stuck_plugin_exits_in_bounded_time)
{
    sigterm_exits(true);
}
END_TEST

START_TEST(sigterm_right_after_a_plugin_got_stuck_exits_in_bounded_time)
{
    sigterm_exits(false);
}
END_TEST

/* Adds a device over the admin socket; returns the whole response. */
static json_t *add_device(const char *name, const char *plugin, const char *params)
{
    char text[PATH_MAX + 256];

    FORMAT(text, "{\"name\":\"%s\",\"plugin\":\"%s\"%s%s}", name, plugin,
           params != NULL ? ",\"params\":" : "", params != NULL ? params : "");
    return admin_client_call(&admin, "device_add", text);
}

/*
 * A worker stuck in a plugin's create must not be given every later device: they go to
 * the workers that answer, and the drop-in whose create timed out comes up once its worker
 * answers again, without the file changing.
 */
START_TEST(a_worker_stuck_in_create_gets_no_new_devices)
{
    char text[PATH_MAX * 2], create_release[PATH_MAX], hang_path[PATH_MAX], params[PATH_MAX + 64];
    json_t *response, *data;
    FILE *file;

    FORMAT(create_release, "%s/release-create", harness.directory);
    FORMAT(text, "plugin: stuckdev\nparams:\n  release_file: %s\n  hang_create: true\n",
           create_release);
    ck_assert_int_eq(daemon_harness_write_file(harness.devices_dir, "hang0.yaml", text), 0);
    /* Its worker is stuck in create, and known to be. */
    ck_assert_int_eq(daemon_harness_wait_log(&harness, "in the create callback", TIMEOUT), 0);

    for (int i = 0; i < 4; i++) {
        char name[32];
        uint64_t start = test_now_ms();
        json_t *result;

        FORMAT(name, "good%d", i);
        response = add_device(name, "testdev", NULL);
        result = json_object_get(response, "result");
        ck_assert_msg(
            result != NULL, "device_add %s failed: %s", name,
            json_string_value(json_object_get(json_object_get(response, "error"), "message")));
        ck_assert_uint_lt(test_now_ms() - start, ADMIN_BOUND_MS);
        json_decref(response);
    }

    /* A create that hangs on the worker chosen for it names that worker, device and callback. */
    FORMAT(params, "{\"release_file\":\"%s\",\"hang_create\":true}", create_release);
    response = add_device("hang1", "stuckdev", params);
    data = json_object_get(json_object_get(response, "error"), "data");
    ck_assert_msg(data != NULL, "device_add of a hanging create did not fail");
    ck_assert_str_eq(json_string_value(json_object_get(data, "callback")), "create");
    ck_assert_str_eq(json_string_value(json_object_get(data, "device")), "hang1");
    json_decref(response);

    /* Released, the drop-in is tried again and comes up. */
    file = fopen(create_release, "w");
    ck_assert_ptr_nonnull(file);
    fclose(file);
    daemon_harness_device_socket(&harness, "hang0", hang_path, sizeof(hang_path));
    ck_assert_int_eq(daemon_harness_wait_socket(&harness, hang_path, true, TIMEOUT), 0);
    json_decref(admin_client_call_ok(&admin, "device_get", "{\"name\":\"hang0\"}"));

    /* Late creates leave nothing behind (the sanitizer build checks for leaks at exit). */
    wait_until_no_worker_is_stuck();
    ck_assert_int_eq(daemon_harness_stop(&harness, SIGTERM), 0);
    ck_assert(WIFEXITED(harness.exit_status) && WEXITSTATUS(harness.exit_status) == 0);
}
END_TEST

/*
 * A remove that runs out of time on a worker hung for less than the stuck threshold still
 * stops the device: once the worker answers, its client is disconnected.
 */
START_TEST(a_late_remove_still_stops_the_device)
{
    struct vu_client *stuck = make_stuck();
    struct pollfd pollfd = {.fd = vu_client_socket(stuck), .events = POLLIN};
    char path[PATH_MAX], byte;
    uint64_t start = test_now_ms();
    json_t *result;

    /* At once, before the heartbeat finds the worker stuck. */
    result =
        admin_client_call_ok(&admin, "device_remove", "{\"name\":\"stuck0\",\"persist\":true}");
    ck_assert_uint_lt(test_now_ms() - start, ADMIN_BOUND_MS);
    json_decref(result);
    daemon_harness_device_socket(&harness, "stuck0", path, sizeof(path));
    ck_assert_int_ne(access(path, F_OK), 0);

    release();
    ck_assert_msg(poll(&pollfd, 1, TIMEOUT) == 1, "the removed device still serves its client");
    ck_assert_int_le(recv(pollfd.fd, &byte, 1, MSG_DONTWAIT), 0);
    ck_assert(daemon_harness_log_contains(&harness, "the device stops when it does"));
    vu_client_close(stuck);
    wait_until_no_worker_is_stuck();
    ck_assert_int_eq(daemon_harness_stop(&harness, SIGTERM), 0);
    ck_assert(WIFEXITED(harness.exit_status) && WEXITSTATUS(harness.exit_status) == 0);
}
END_TEST

struct slow_writer {
    struct vu_client *client;
    atomic_bool stop;
};

/* Keeps the device's worker busy 900 ms at a time, answering in between. */
static void *slow_writes(void *argument)
{
    struct slow_writer *writer = argument;
    uint32_t ms = 900;

    while (!atomic_load(&writer->stop))
        if (vu_client_region_write(writer->client, VFIO_USERD_REGION_BAR0, 4, &ms, sizeof(ms)) < 0)
            break;
    return NULL;
}

/* A slow worker that still answers holds one admin request for a bounded time in all. */
START_TEST(a_slow_worker_holds_device_list_for_a_bounded_time)
{
    struct slow_writer writer = {0};
    char params[PATH_MAX + 64];
    pthread_t thread;
    uint64_t start, elapsed;
    json_t *list, *status;

    FORMAT(params, "{\"release_file\":\"%s\"}", release_path);
    for (int i = 0; i < 10; i++) {
        char name[32];
        FORMAT(name, "slow%d", i);
        json_t *response = add_device(name, "stuckdev", params);
        ck_assert_ptr_nonnull(json_object_get(response, "result"));
        json_decref(response);
    }
    writer.client = connect_device("stuck0");
    ck_assert_int_eq(pthread_create(&thread, NULL, slow_writes, &writer), 0);
    usleep(200 * 1000);

    start = test_now_ms();
    list = admin_client_call_ok(&admin, "device_list", NULL);
    elapsed = test_now_ms() - start;
    fprintf(stderr, "device_list with a slow worker: %llu ms\n", (unsigned long long)elapsed);
    ck_assert_uint_lt(elapsed, 2500);
    ck_assert_uint_eq(json_array_size(list), 12);
    json_decref(list);

    start = test_now_ms();
    status = admin_client_call_ok(&admin, "daemon_status", NULL);
    elapsed = test_now_ms() - start;
    fprintf(stderr, "daemon_status with a slow worker: %llu ms\n", (unsigned long long)elapsed);
    ck_assert_uint_lt(elapsed, 2500);
    json_decref(status);

    atomic_store(&writer.stop, true);
    pthread_join(thread, NULL);
    vu_client_close(writer.client);
}
END_TEST

static Suite *stuck_suite(void)
{
    Suite *suite = suite_create("stuck");
    TCase *tcase = tcase_create("stuck");

    tcase_add_checked_fixture(tcase, setup, teardown);
    tcase_set_timeout(tcase, 60);
    tcase_add_test(tcase, admin_reports_stuck_device_and_others_keep_serving);
    tcase_add_test(tcase, drop_in_changes_wait_for_a_stuck_worker);
    tcase_add_test(tcase, sigterm_with_a_known_stuck_plugin_exits_in_bounded_time);
    tcase_add_test(tcase, sigterm_right_after_a_plugin_got_stuck_exits_in_bounded_time);
    tcase_add_test(tcase, a_worker_stuck_in_create_gets_no_new_devices);
    tcase_add_test(tcase, a_late_remove_still_stops_the_device);
    tcase_add_test(tcase, a_slow_worker_holds_device_list_for_a_bounded_time);
    suite_add_tcase(suite, tcase);
    return suite;
}

int main(void)
{
    return daemon_harness_run_suite(stuck_suite());
}
