/*
 * vu_socket_listen() and the socket file it finds at its path: a stale one (its listener
 * died) is replaced, a live one is left alone. The daemon's unit runs it as root without
 * CAP_DAC_OVERRIDE, so a socket handed to a VM's user refuses the probe with EACCES; the
 * cases that need that run in a child that drops the capability, as the unit does. The file
 * appears at its path only once it listens with its owner and mode, and nothing else is
 * left in its directory, whether vu_socket_listen() succeeds or fails.
 */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <linux/capability.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "endpoint.h"
#include "test_process.h"
#include "test_runner.h"

#define FOREIGN_UID 65534

static char directory[] = "/tmp/test-socket-listen.XXXXXX";
static char path[96];

static void setup(void)
{
    ck_assert_ptr_nonnull(mkdtemp(directory));
    snprintf(path, sizeof(path), "%s/device.sock", directory);
}

static void teardown(void)
{
    unlink(path);
    rmdir(directory);
    strcpy(directory, "/tmp/test-socket-listen.XXXXXX");
}

/* A socket file at `path`, owned by FOREIGN_UID with `mode`; listening when `live`. */
static int make_socket_file(mode_t mode, bool live)
{
    struct sockaddr_un address = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

    ck_assert_int_ge(fd, 0);
    snprintf(address.sun_path, sizeof(address.sun_path), "%s", path);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&address, sizeof(address)), 0);
    ck_assert_int_eq(listen(fd, 4), 0);
    ck_assert_int_eq(chown(path, FOREIGN_UID, FOREIGN_UID), 0);
    ck_assert_int_eq(chmod(path, mode), 0);
    if (live)
        return fd;
    close(fd);
    return -1;
}

/* Drops CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the effective set, as the unit does. */
static void drop_dac_override(void)
{
    struct __user_cap_header_struct header = {.version = _LINUX_CAPABILITY_VERSION_3};
    struct __user_cap_data_struct data[2];

    ck_assert_int_eq(syscall(SYS_capget, &header, data), 0);
    data[0].effective &= ~((1u << CAP_DAC_OVERRIDE) | (1u << CAP_DAC_READ_SEARCH));
    ck_assert_int_eq(syscall(SYS_capset, &header, data), 0);
}

/* Runs vu_socket_listen() in a child without DAC override; returns what it returned. */
static int listen_without_dac_override(void)
{
    int status, fd;
    pid_t child = fork();

    ck_assert_int_ge(child, 0);
    if (child == 0) {
        int ret;

        drop_dac_override();
        ret = vu_socket_listen(path, NULL, &fd);
        _exit(ret == 0 ? 0 : -ret);
    }
    ck_assert_int_eq(waitpid(child, &status, 0), child);
    ck_assert(WIFEXITED(status));
    return -WEXITSTATUS(status);
}

START_TEST(stale_socket_is_replaced)
{
    int fd;

    make_socket_file(0660, false);
    ck_assert_int_eq(vu_socket_listen(path, NULL, &fd), 0);
    close(fd);
}
END_TEST

START_TEST(live_socket_is_left_alone)
{
    int live = make_socket_file(0660, true), fd;

    ck_assert_int_eq(vu_socket_listen(path, NULL, &fd), -EADDRINUSE);
    close(live);
}
END_TEST

/* After a crash, a socket the daemon gave to a VM's user (mode 0660 or 0604, not its own). */
START_TEST(stale_foreign_socket_is_replaced_without_dac_override)
{
    struct stat status;

    if (geteuid() != 0)
        return; /* needs root: chown to another user, capabilities to drop */
    make_socket_file(0604, false);
    ck_assert_int_eq(listen_without_dac_override(), 0);
    ck_assert_int_eq(lstat(path, &status), 0);
    ck_assert(S_ISSOCK(status.st_mode));
    /* Not even its owner may write to it. */
    ck_assert_int_eq(unlink(path), 0);
    make_socket_file(0000, false);
    ck_assert_int_eq(listen_without_dac_override(), 0);
}
END_TEST

/* A live socket of another user stays as it was: same owner, same mode. */
START_TEST(live_foreign_socket_is_left_as_it_was)
{
    struct stat status;
    int live;

    if (geteuid() != 0)
        return;
    live = make_socket_file(0604, true);
    ck_assert_int_eq(listen_without_dac_override(), -EADDRINUSE);
    ck_assert_int_eq(lstat(path, &status), 0);
    ck_assert_uint_eq(status.st_uid, FOREIGN_UID);
    ck_assert_uint_eq(status.st_gid, FOREIGN_UID);
    ck_assert_uint_eq(status.st_mode & 07777, 0604);
    close(live);
}
END_TEST

/* A live listener whose backlog is full: the probe must not wait for room in it. */
START_TEST(full_backlog_is_in_use_at_once)
{
    struct sockaddr_un address = {.sun_family = AF_UNIX};
    int live = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0), waiting[8], fd;

    ck_assert_int_ge(live, 0);
    snprintf(address.sun_path, sizeof(address.sun_path), "%s", path);
    ck_assert_int_eq(bind(live, (struct sockaddr *)&address, sizeof(address)), 0);
    ck_assert_int_eq(listen(live, 0), 0);
    /* Nobody accepts: fill the backlog with non-blocking connections. */
    for (int i = 0; i < 8; i++) {
        waiting[i] = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        connect(waiting[i], (struct sockaddr *)&address, sizeof(address));
    }
    alarm(5); /* a blocking probe would hang here for good */
    ck_assert_int_eq(vu_socket_listen(path, NULL, &fd), -EADDRINUSE);
    alarm(0);
    for (int i = 0; i < 8; i++)
        close(waiting[i]);
    close(live);
}
END_TEST

/* Entries in `directory` besides . and .. */
static int count_files(void)
{
    DIR *listing = opendir(directory);
    struct dirent *entry;
    int count = 0;

    ck_assert_ptr_nonnull(listing);
    while ((entry = readdir(listing)) != NULL)
        count += strcmp(entry->d_name, ".") != 0 && strcmp(entry->d_name, "..") != 0;
    closedir(listing);
    return count;
}

/* A client that connects to `path` again and again until it gets in. */
struct spinner {
    atomic_bool started; /* it has tried at least once */
    unsigned refused;    /* a file was there, but nobody listened */
    unsigned denied;     /* a file was there, with a mode that let nobody in yet */
};

static void *spin_connect(void *argument)
{
    struct spinner *spinner = argument;
    struct sockaddr_un address = {.sun_family = AF_UNIX};
    bool in = false;

    snprintf(address.sun_path, sizeof(address.sun_path), "%s", path);
    while (!in) {
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

        in = connect(fd, (struct sockaddr *)&address, sizeof(address)) == 0;
        spinner->refused += !in && errno == ECONNREFUSED;
        spinner->denied += !in && errno == EACCES;
        close(fd);
        atomic_store(&spinner->started, true);
    }
    return NULL;
}

/* A client that connects as the socket is made gets in at its first try to find it. */
START_TEST(the_socket_file_appears_listening)
{
    struct vu_socket_access access = {(uid_t)-1, (gid_t)-1, 0600};

    for (int i = 0; i < 300; i++) {
        struct spinner spinner = {0};
        pthread_t thread;
        int fd;

        ck_assert_int_eq(pthread_create(&thread, NULL, spin_connect, &spinner), 0);
        while (!atomic_load(&spinner.started))
            ;
        ck_assert_int_eq(vu_socket_listen(path, &access, &fd), 0);
        ck_assert_int_eq(pthread_join(thread, NULL), 0);
        ck_assert_msg(spinner.refused == 0 && spinner.denied == 0,
                      "round %d: refused %u times, denied %u times", i, spinner.refused,
                      spinner.denied);
        close(fd);
        ck_assert_int_eq(unlink(path), 0);
    }
}
END_TEST

/* The socket takes the owner and mode it is given, and leaves no other file behind. */
START_TEST(the_socket_gets_its_mode_and_leaves_nothing_else)
{
    struct vu_socket_access access = {(uid_t)-1, getgid(), 0640};
    struct stat status;
    int fd;

    ck_assert_int_eq(vu_socket_listen(path, &access, &fd), 0);
    ck_assert_int_eq(lstat(path, &status), 0);
    ck_assert(S_ISSOCK(status.st_mode));
    ck_assert_uint_eq(status.st_mode & 07777, 0640);
    ck_assert_uint_eq(status.st_gid, getgid());
    ck_assert_int_eq(count_files(), 1);
    close(fd);
}
END_TEST

static void listen_as_foreign_owner(void)
{
    struct __user_cap_header_struct header = {.version = _LINUX_CAPABILITY_VERSION_3};
    struct __user_cap_data_struct data[2];
    struct vu_socket_access access = {FOREIGN_UID, FOREIGN_UID, 0600};
    int fd;

    /* Without CAP_CHOWN, giving the socket away fails after it was bound and listens. */
    ck_assert_int_eq(syscall(SYS_capget, &header, data), 0);
    data[0].effective &= ~(1u << CAP_CHOWN);
    ck_assert_int_eq(syscall(SYS_capset, &header, data), 0);
    ck_assert_int_eq(vu_socket_listen(path, &access, &fd), -EPERM);
}

/* A failure after the bind leaves nothing at the path nor beside it. */
START_TEST(a_failed_listen_leaves_no_file)
{
    test_assert_child_passed(listen_as_foreign_owner);
    ck_assert_int_eq(count_files(), 0);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("socket_listen");
    TCase *test_case = tcase_create("socket file");

    tcase_add_checked_fixture(test_case, setup, teardown);
    tcase_add_test(test_case, stale_socket_is_replaced);
    tcase_add_test(test_case, live_socket_is_left_alone);
    tcase_add_test(test_case, full_backlog_is_in_use_at_once);
    tcase_add_test(test_case, stale_foreign_socket_is_replaced_without_dac_override);
    tcase_add_test(test_case, live_foreign_socket_is_left_as_it_was);
    tcase_add_test(test_case, the_socket_file_appears_listening);
    tcase_add_test(test_case, the_socket_gets_its_mode_and_leaves_nothing_else);
    tcase_add_test(test_case, a_failed_listen_leaves_no_file);
    suite_add_tcase(suite, test_case);
    return test_run_suite(suite);
}
