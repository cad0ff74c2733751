/*
 * The liveness page a device host shares with the daemon (host/liveness.c): what the
 * daemon reads from each of the host's marks, and that a host cannot shrink the page under
 * the daemon's mapping (which would make the daemon's next read a SIGBUS).
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <unistd.h>

#include "liveness.h"
#include "test_runner.h"

START_TEST(the_daemon_reads_each_mark_of_the_host)
{
    struct liveness_slot *daemon_view, *host_view;
    uint64_t since = 0;
    int fd;

    ck_assert_int_eq(liveness_slot_create(&daemon_view, &fd), 0);
    ck_assert_int_eq(liveness_slot_map(fd, &host_view), 0);
    close(fd);
    /* Nothing marked yet: the daemon must ask instead. */
    ck_assert_int_eq(liveness_read(daemon_view, 1000, &since), LIVENESS_UNKNOWN);
    liveness_mark_waiting(host_view);
    ck_assert_int_eq(liveness_read(daemon_view, 1000, &since), LIVENESS_WAITING);
    liveness_mark_awake(host_view, 900);
    ck_assert_int_eq(liveness_read(daemon_view, 1000, &since), LIVENESS_AWAKE);
    ck_assert_uint_eq(since, 900);
    /* Waiting again and woken later: the later wake counts. */
    liveness_mark_waiting(host_view);
    ck_assert_int_eq(liveness_read(daemon_view, 2000, &since), LIVENESS_WAITING);
    liveness_mark_awake(host_view, 1500);
    ck_assert_int_eq(liveness_read(daemon_view, 2000, &since), LIVENESS_AWAKE);
    ck_assert_uint_eq(since, 1500);
    /* A wake "in the future" (a plugin writing the page) buys no time past now. */
    liveness_mark_awake(host_view, 99999);
    ck_assert_int_eq(liveness_read(daemon_view, 2000, &since), LIVENESS_AWAKE);
    ck_assert_uint_eq(since, 2000);
    liveness_slot_unmap(host_view);
    liveness_slot_unmap(daemon_view);
}
END_TEST

START_TEST(a_host_cannot_shrink_or_unseal_the_page)
{
    struct liveness_slot *daemon_view;
    int fd;

    ck_assert_int_eq(liveness_slot_create(&daemon_view, &fd), 0);
    ck_assert_int_eq(ftruncate(fd, 0), -1);
    ck_assert_int_eq(errno, EPERM);
    ck_assert_int_eq(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 4096), 0);
    ck_assert_int_eq(fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE), -1);
    ck_assert_int_eq(errno, EPERM);
    /* A punched hole reads as zeros, not a fault: "never marked". */
    ck_assert_int_eq(liveness_read(daemon_view, 1, &(uint64_t){0}), LIVENESS_UNKNOWN);
    close(fd);
    liveness_slot_unmap(daemon_view);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("liveness");
    TCase *test_case = tcase_create("page");

    tcase_add_test(test_case, the_daemon_reads_each_mark_of_the_host);
    tcase_add_test(test_case, a_host_cannot_shrink_or_unseal_the_page);
    suite_add_tcase(suite, test_case);
    return test_run_suite(suite);
}
