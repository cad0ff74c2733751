/*
 * vfio-userd gives memory back: devices added and removed through the admin socket, cycle
 * after cycle, leave the daemon's resident set near where it started, rather than at the
 * high-water mark of the busiest moment (the heap used to keep it all, and grew with every
 * cycle).
 *
 * The sizes are small so that the test stays fast; the same program measures the figures
 * of the hardening issue when given larger ones, and prints what it saw:
 *
 *   VFIO_USERD_MEMORY_CYCLES=8 VFIO_USERD_MEMORY_DEVICES=2000 \
 *       VFIO_USERD_BUILD_DIR=build/plain build/plain/tests/integration/test_memory
 *
 * Under AddressSanitizer freed memory is held in quarantine on purpose, so there the test
 * only runs one short cycle (the daemon must still exit without leaks) and checks no size.
 */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "admin_client.h"
#include "daemon_harness.h"
#include "test_process.h"
#include "test_runner.h"

static struct daemon_harness harness;
static struct admin_client admin = ADMIN_CLIENT_INIT;

static void setup(void)
{
    ck_assert_int_eq(daemon_harness_init(&harness, NULL), 0);
}

static void teardown(void)
{
    admin_client_close(&admin);
    if (harness.pid > 0) {
        ck_assert_int_eq(daemon_harness_stop(&harness, SIGTERM), 0);
        ck_assert(WIFEXITED(harness.exit_status) && WEXITSTATUS(harness.exit_status) == 0);
    }
    daemon_harness_fini(&harness);
}

static unsigned long setting(const char *name, unsigned long fallback)
{
    const char *text = getenv(name);

    return text != NULL && text[0] != '\0' ? strtoul(text, NULL, 10) : fallback;
}

/* The resident set once it stops shrinking: the heap is trimmed shortly after removals. */
static unsigned long settled_kib(void)
{
    unsigned long smallest = test_resident_kib(harness.pid);
    int unchanged = 0;

    for (int waited = 0; waited < 5000 && unchanged < 10; waited += 100) {
        unsigned long now;

        usleep(100 * 1000);
        now = test_resident_kib(harness.pid);
        unchanged = now < smallest ? 0 : unchanged + 1;
        if (now < smallest)
            smallest = now;
    }
    return smallest;
}

START_TEST(memory_comes_back_after_devices_go)
{
    unsigned long cycles = setting("VFIO_USERD_MEMORY_CYCLES", TEST_UNDER_ASAN ? 1 : 3);
    unsigned long devices = setting("VFIO_USERD_MEMORY_DEVICES", TEST_UNDER_ASAN ? 50 : 500);
    unsigned long baseline, first = 0, last = 0, peak;
    struct rlimit limit;
    char params[128];

    /* Two descriptors a device, and the daemon inherits the limit. */
    ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &limit), 0);
    limit.rlim_cur = limit.rlim_max;
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &limit), 0);
    ck_assert_msg(limit.rlim_cur > 2 * devices + 100, "too few descriptors for %lu devices",
                  devices);

    ck_assert_int_eq(daemon_harness_start(&harness, NULL), 0);
    admin_client_open(&admin, harness.admin_socket, 0);
    baseline = settled_kib();
    fprintf(stderr, "memory: %lu KiB at the start\n", baseline);
    for (unsigned long cycle = 1; cycle <= cycles; cycle++) {
        for (unsigned long i = 0; i < devices; i++) {
            FORMAT(params, "{\"name\":\"m%lu\",\"plugin\":\"testdev\"}", i);
            json_decref(admin_client_call_ok(&admin, "device_add", params));
        }
        peak = test_resident_kib(harness.pid);
        for (unsigned long i = 0; i < devices; i++) {
            FORMAT(params, "{\"name\":\"m%lu\"}", i);
            json_decref(admin_client_call_ok(&admin, "device_remove", params));
        }
        last = settled_kib();
        if (cycle == 1)
            first = last;
        fprintf(stderr, "memory: cycle %lu of %lu devices: %lu KiB with them, %lu KiB after\n",
                cycle, devices, peak, last);
    }
    if (TEST_UNDER_ASAN)
        return;
    /* Most of what the devices took is given back, and nothing builds up over cycles. */
    ck_assert_msg(last <= baseline * 3 / 2, "%lu KiB after %lu cycles, %lu KiB at the start", last,
                  cycles, baseline);
    ck_assert_msg(last <= first * 5 / 4, "%lu KiB after %lu cycles, %lu KiB after the first", last,
                  cycles, first);
}
END_TEST

static Suite *memory_suite(void)
{
    Suite *suite = suite_create("memory");
    TCase *tcase = tcase_create("cycles");

    tcase_add_checked_fixture(tcase, setup, teardown);
    tcase_set_timeout(tcase, 600);
    tcase_add_test(tcase, memory_comes_back_after_devices_go);
    suite_add_tcase(suite, tcase);
    return suite;
}

int main(void)
{
    return daemon_harness_run_suite(memory_suite());
}
