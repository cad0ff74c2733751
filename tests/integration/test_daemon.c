/*
 * vfio-userd end to end: the real daemon binary runs in a private directory, and the tests
 * do to it what an administrator and systemd do: drop, change, rename and delete drop-ins,
 * break some, burst a hundred, send SIGHUP, SIGTERM and SIGINT, give it bad plugins and
 * sockets already in use, run --check-config and --single. They judge it only by what is
 * visible from outside: sockets appearing and vanishing, the in-tree client's view of the
 * device behind a socket, the sd_notify messages on a datagram socket standing in for
 * systemd, the log, and the exit status.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "client.h"
#include "config.h"
#include "daemon_harness.h"
#include "test_runner.h"

/* testdev's BAR0 registers, from its datasheet vfio-userd-testdev(7). */
#define TESTDEV_MAGIC        0x54444556u
#define TESTDEV_REG_MAGIC    0x000
#define TESTDEV_REG_SCRATCH0 0x010
#define TESTDEV_REG_RAM_SIZE 0x028
#define TESTDEV_REG_DMA_DEST 0x088
#define TESTDEV_REG_DMA_LEN  0x090
#define TESTDEV_REG_DMA_OP   0x098
#define TESTDEV_REG_DMA_CTRL 0x09c
#define TESTDEV_REG_DMA_STAT 0x0a0
#define TESTDEV_DMA_FILL     1u
#define TESTDEV_DMA_DONE     2u

#define TIMEOUT DAEMON_HARNESS_TIMEOUT_MS

/* snprintf into an array, failing the test rather than truncating a path. */
/* How long to watch for something that must NOT happen: several times the daemon's 100 ms
 * coalescing delay for drop-in changes. */
#define QUIET_MS 400

/* A small testdev, so that a hundred of them stay cheap. */
#define SMALL_TESTDEV "plugin: testdev\nparams:\n  ram_size: 8K\n  msix_vectors: 1\n"

static struct daemon_harness harness;

static void setup(void)
{
    ck_assert_int_eq(daemon_harness_init(&harness, NULL), 0);
}

static void fail_with_log(const char *what);

/* A daemon still running at the end of a test must stop cleanly from whatever state the
 * test left it in: every test is a shutdown test too (with leak checks, under sanitizers). */
static void teardown(void)
{
    char what[128] = "";

    if (harness.pid > 0) {
        int ret = daemon_harness_stop(&harness, SIGTERM);
        if (ret < 0)
            snprintf(what, sizeof(what), "stopping the daemon at teardown: %s", strerror(-ret));
        else if (!WIFEXITED(harness.exit_status) || WEXITSTATUS(harness.exit_status) != 0)
            snprintf(what, sizeof(what), "the daemon's exit status at teardown is 0x%x",
                     (unsigned)harness.exit_status);
    }
    if (what[0] != '\0')
        fail_with_log(what);
    daemon_harness_fini(&harness);
}

/* Fails the test saying what went wrong, with the end of the daemon's log. */
static void fail_with_log(const char *what)
{
    char *log = daemon_harness_read_log(&harness);
    size_t length = log != NULL ? strlen(log) : 0;
    char message[6144];

    snprintf(message, sizeof(message), "%s\n--- end of the daemon's log ---\n%s", what,
             log != NULL ? log + (length > 5000 ? length - 5000 : 0) : "");
    free(log);
    ck_abort_msg("%s", message);
}

#define ASSERT_OK(expression)                                                                      \
    do {                                                                                           \
        int assert_ret_ = (expression);                                                            \
        if (assert_ret_ != 0) {                                                                    \
            char assert_what_[512];                                                                \
            snprintf(assert_what_, sizeof(assert_what_), "%s: %s", #expression,                    \
                     strerror(-assert_ret_));                                                      \
            fail_with_log(assert_what_);                                                           \
        }                                                                                          \
    } while (0)

static void write_device(const char *name, const char *text)
{
    char file[128];

    FORMAT(file, "%s.yaml", name);
    ck_assert_int_eq(daemon_harness_write_file(harness.devices_dir, file, text), 0);
}

static void remove_device(const char *name)
{
    char path[PATH_MAX];

    FORMAT(path, "%s/%s.yaml", harness.devices_dir, name);
    ck_assert_int_eq(unlink(path), 0);
}

/* The default socket path of device `name`; a few can be in use at once (rotating buffers). */
static const char *socket_of(const char *name)
{
    static char paths[4][PATH_MAX];
    static unsigned next;
    char *path = paths[next++ % 4];

    daemon_harness_device_socket(&harness, name, path, PATH_MAX);
    return path;
}

static bool socket_exists(const char *path)
{
    struct stat status;

    return lstat(path, &status) == 0 && S_ISSOCK(status.st_mode);
}

static void wait_socket(const char *path, bool present)
{
    int ret = daemon_harness_wait_socket(&harness, path, present, TIMEOUT);

    if (ret < 0) {
        char what[PATH_MAX + 64];
        snprintf(what, sizeof(what), "waiting until %s %s: %s", path,
                 present ? "appears" : "vanishes", strerror(-ret));
        fail_with_log(what);
    }
}

/* Waits for the next STATUS= line and checks it. */
static void expect_status(const char *status)
{
    char line[512];

    ASSERT_OK(daemon_harness_wait_notify(&harness, "STATUS=", TIMEOUT, line, sizeof(line)));
    ck_assert_str_eq(line, status);
}

/* Forgets the notifications received so far: the next wait sees only newer ones. */
static void skip_notifications(void)
{
    daemon_harness_collect_notify(&harness);
    harness.notifications_consumed = harness.notification_count;
}

/* Waits for the next RELOADING=1 ... READY=1 pair: one synchronisation done. */
static void wait_reload(void)
{
    ASSERT_OK(daemon_harness_wait_notify(&harness, "RELOADING=1", TIMEOUT, NULL, 0));
    ASSERT_OK(daemon_harness_wait_notify(&harness, "READY=1", TIMEOUT, NULL, 0));
}

/* Waits for the STATUS= line that follows the next READY=1 and checks it. */
static void expect_status_after_ready(const char *status)
{
    char line[512];

    ASSERT_OK(daemon_harness_wait_notify(&harness, "READY=1", TIMEOUT, NULL, 0));
    ASSERT_OK(daemon_harness_wait_notify(&harness, "STATUS=", TIMEOUT, line, sizeof(line)));
    ck_assert_str_eq(line, status);
}

/* Waits until some STATUS= line is exactly `status`. */
static void wait_status(const char *status)
{
    for (;;) {
        char line[512];
        ASSERT_OK(daemon_harness_wait_notify(&harness, "STATUS=", TIMEOUT, line, sizeof(line)));
        if (strcmp(line, status) == 0)
            return;
    }
}

static struct vu_client *connect_device(const char *name)
{
    struct vu_client *client = NULL;

    ASSERT_OK(vu_client_connect(socket_of(name), NULL, &client));
    return client;
}

static uint32_t read32(struct vu_client *client, uint64_t offset)
{
    uint32_t value = 0xdeadbeef;

    ck_assert_int_eq(vu_client_region_read(client, VFIO_USERD_REGION_BAR0, offset, &value, 4), 0);
    return value;
}

static uint64_t read64(struct vu_client *client, uint64_t offset)
{
    uint64_t value = 0xdeadbeefdeadbeefull;

    ck_assert_int_eq(vu_client_region_read(client, VFIO_USERD_REGION_BAR0, offset, &value, 8), 0);
    return value;
}

static void write32(struct vu_client *client, uint64_t offset, uint32_t value)
{
    ck_assert_int_eq(vu_client_region_write(client, VFIO_USERD_REGION_BAR0, offset, &value, 4), 0);
}

/* Whether the server closed the client's connection within `timeout_ms`. */
static bool client_disconnected(struct vu_client *client, int timeout_ms)
{
    struct pollfd readable = {.fd = vu_client_socket(client), .events = POLLIN};
    char byte;

    if (poll(&readable, 1, timeout_ms) != 1)
        return false;
    return recv(readable.fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT) <= 0;
}

static bool exited_with(int status)
{
    return WIFEXITED(harness.exit_status) && WEXITSTATUS(harness.exit_status) == status;
}

static void assert_exit_code(int status)
{
    if (!exited_with(status)) {
        char what[128];
        snprintf(what, sizeof(what), "the daemon's exit status is 0x%x, expected exit(%d)",
                 (unsigned)harness.exit_status, status);
        fail_with_log(what);
    }
}

static void assert_log_contains(const char *text)
{
    if (!daemon_harness_log_contains(&harness, text)) {
        char what[1024];
        snprintf(what, sizeof(what), "the log does not say \"%s\"", text);
        fail_with_log(what);
    }
}

/* Binds a UNIX socket at `path`; listening or not, as a live or a crashed daemon leaves it. */
static int bind_socket(const char *path, bool listening)
{
    struct sockaddr_un address = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

    ck_assert_int_ge(fd, 0);
    ck_assert_uint_lt(strlen(path), sizeof(address.sun_path));
    strcpy(address.sun_path, path);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&address, sizeof(address)), 0);
    if (listening)
        ck_assert_int_eq(listen(fd, 4), 0);
    return fd;
}

static int connect_raw(const char *path)
{
    struct sockaddr_un address = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

    ck_assert_int_ge(fd, 0);
    strcpy(address.sun_path, path);
    if (connect(fd, (struct sockaddr *)&address, sizeof(address)) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Whether the admin socket answers a daemon_status call within TIMEOUT. */
static bool admin_answers(void)
{
    static const char request[] = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"daemon_status\"}\n";
    char reply[4096];
    size_t length = 0;
    int fd = connect_raw(harness.admin_socket);
    bool answered = false;

    if (fd < 0)
        return false;
    if (send(fd, request, strlen(request), MSG_NOSIGNAL) == (ssize_t)strlen(request)) {
        while (length < sizeof(reply) - 1 && memchr(reply, '\n', length) == NULL) {
            struct pollfd readable = {.fd = fd, .events = POLLIN};
            ssize_t received;

            if (poll(&readable, 1, TIMEOUT) != 1)
                break;
            received = recv(fd, reply + length, sizeof(reply) - 1 - length, 0);
            if (received <= 0)
                break;
            length += (size_t)received;
        }
        reply[length] = '\0';
        answered = strstr(reply, "\"result\"") != NULL;
    }
    close(fd);
    return answered;
}

/* ---------------------------------------------------------------------------------------
 * Start-up and systemd notifications.
 */

START_TEST(ready_only_once_initial_devices_listen)
{
    char name[32], line[256];

    for (int i = 0; i < 20; i++) {
        FORMAT(name, "dev%02d", i);
        write_device(name, SMALL_TESTDEV);
    }
    ASSERT_OK(daemon_harness_start(&harness, NULL));
    /* READY=1 has been received: every socket must exist already, without waiting. */
    for (int i = 0; i < 20; i++) {
        FORMAT(name, "dev%02d", i);
        ck_assert_msg(socket_exists(socket_of(name)), "%s missing at READY=1", name);
    }
    ASSERT_OK(daemon_harness_wait_notify(&harness, "STATUS=", TIMEOUT, line, sizeof(line)));
    ck_assert_str_eq(line, "STATUS=Serving 20 devices, 1 plugin");

    struct vu_client *client = connect_device("dev07");
    ck_assert_uint_eq(read32(client, TESTDEV_REG_MAGIC), TESTDEV_MAGIC);
    ck_assert_uint_eq(read64(client, TESTDEV_REG_RAM_SIZE), 8192);
    vu_client_close(client);
    ck_assert_uint_eq(daemon_harness_count_notify(&harness, "RELOADING=1"), 0);
    ck_assert(socket_exists(harness.admin_socket));
}
END_TEST

START_TEST(empty_directory_is_ready_with_no_devices)
{
    /* No drop-in directory at all is not an error either. */
    ck_assert_int_eq(rmdir(harness.devices_dir), 0);
    ASSERT_OK(daemon_harness_start(&harness, NULL));
    expect_status("STATUS=Serving 0 devices, 1 plugin");
    ck_assert_uint_eq(daemon_harness_count_notify(&harness, "READY=1"), 1);
}
END_TEST

START_TEST(watchdog_pings_when_systemd_asks)
{
    harness.extra_environment[0] = "WATCHDOG_USEC=200000";
    ASSERT_OK(daemon_harness_start(&harness, NULL));
    /* sd-event pings at half the interval or more often. */
    ASSERT_OK(daemon_harness_wait_notify(&harness, "WATCHDOG=1", 2000, NULL, 0));
    ASSERT_OK(daemon_harness_wait_notify(&harness, "WATCHDOG=1", 2000, NULL, 0));
    ASSERT_OK(daemon_harness_wait_notify(&harness, "WATCHDOG=1", 2000, NULL, 0));
}
END_TEST

START_TEST(no_watchdog_unless_asked)
{
    ASSERT_OK(daemon_harness_start(&harness, NULL));
    usleep(QUIET_MS * 1000);
    daemon_harness_collect_notify(&harness);
    ck_assert_uint_eq(daemon_harness_count_notify(&harness, "WATCHDOG=1"), 0);
}
END_TEST

START_TEST(missing_config_file_given_with_c_fails)
{
    char missing[PATH_MAX];
    const char *arguments[] = {"-c", missing, "--runtime-dir", harness.runtime_dir, NULL};

    FORMAT(missing, "%s/nonexistent.yaml", harness.directory);
    ASSERT_OK(daemon_harness_spawn(&harness, arguments));
    ASSERT_OK(daemon_harness_wait_exit(&harness, TIMEOUT));
    assert_exit_code(1);
    assert_log_contains("nonexistent.yaml");
    daemon_harness_collect_notify(&harness);
    ck_assert_uint_eq(daemon_harness_count_notify(&harness, "READY=1"), 0);
}
END_TEST

START_TEST(invalid_config_file_fails_with_position)
{
    ck_assert_int_eq(daemon_harness_write_file(harness.directory, "vfio-userd.yaml",
                                               "worker_threads: 2\nworkers: 4\n"),
                     0);
    ck_assert_int_eq(
        daemon_harness_spawn(&harness, (const char *[]){"-c", harness.config_path, "--runtime-dir",
                                                        harness.runtime_dir, NULL}),
        0);
    ASSERT_OK(daemon_harness_wait_exit(&harness, TIMEOUT));
    assert_exit_code(1);
    assert_log_contains("vfio-userd.yaml:2:");
    ck_assert_int_ne(access(harness.runtime_dir, F_OK), 0);
}
END_TEST

/* ---------------------------------------------------------------------------------------
 * Drop-ins: added, changed, renamed, removed.
 */

START_TEST(dropped_file_appears_and_deleted_file_vanishes)
{
    ASSERT_OK(daemon_harness_start(&harness, NULL));
    expect_status("STATUS=Serving 0 devices, 1 plugin");
    ck_assert(!socket_exists(socket_of("tdev0")));

    write_device("tdev0", "plugin: testdev\nparams:\n  ram_size: 64K\n");
    wait_socket(socket_of("tdev0"), true);
    expect_status_after_ready("STATUS=Serving 1 device, 1 plugin");
    struct vu_client *client = connect_device("tdev0");
    ck_assert_uint_eq(read64(client, TESTDEV_REG_RAM_SIZE), 64 * 1024);
    vu_client_close(client);

    remove_device("tdev0");
    wait_socket(socket_of("tdev0"), false);
    wait_status("STATUS=Serving 0 devices, 1 plugin");
    assert_log_contains("tdev0: removed");
}
END_TEST

START_TEST(changed_file_replaces_device)
{
    struct vu_client *client;

    write_device("tdev0", "plugin: testdev\nparams:\n  ram_size: 64K\n");
    ASSERT_OK(daemon_harness_start(&harness, NULL));
    client = connect_device("tdev0");
    write32(client, TESTDEV_REG_SCRATCH0, 0x5eed);
    ck_assert_uint_eq(read32(client, TESTDEV_REG_SCRATCH0), 0x5eed);

    write_device("tdev0", "plugin: testdev\nparams:\n  ram_size: 128K\n");
    /* The old device goes with its client; the socket stays and the new device answers. */
    ck_assert_msg(client_disconnected(client, TIMEOUT), "client not disconnected on change");
    vu_client_close(client);
    ck_assert(socket_exists(socket_of("tdev0")));
    client = connect_device("tdev0");
    ck_assert_uint_eq(read64(client, TESTDEV_REG_RAM_SIZE), 128 * 1024);
    ck_assert_uint_eq(read32(client, TESTDEV_REG_SCRATCH0), 0);
    vu_client_close(client);
    ASSERT_OK(daemon_harness_wait_log(&harness, "tdev0: replaced", TIMEOUT));
}
END_TEST

START_TEST(unchanged_file_keeps_device_and_client)
{
    const char *text = "plugin: testdev\nparams:\n  ram_size: 64K\n";
    struct vu_client *client;

    write_device("tdev0", text);
    ASSERT_OK(daemon_harness_start(&harness, NULL));
    client = connect_device("tdev0");
    write32(client, TESTDEV_REG_SCRATCH0, 77);

    /* Rewritten with the same settings (a comment differs): nothing to do. */
    skip_notifications();
    write_device("tdev0", "# touched\nplugin: testdev\nparams:\n  ram_size: 64K\n");
    wait_reload();
    ck_assert(!client_disconnected(client, 0));
    ck_assert_uint_eq(read32(client, TESTDEV_REG_SCRATCH0), 77);
    vu_client_close(client);
    ck_assert(!daemon_harness_log_contains(&harness, "tdev0: replaced"));
}
END_TEST

static mode_t socket_mode(const char *path)
{
    struct stat status;

    ck_assert_int_eq(lstat(path, &status), 0);
    return status.st_mode & 07777;
}

START_TEST(mode_change_is_applied_to_same_socket)
{
    struct stat before, after;

    write_device("tdev0", "plugin: testdev\nsocket:\n  mode: \"0600\"\n");
    ASSERT_OK(daemon_harness_start(&harness, NULL));
    ck_assert_uint_eq(socket_mode(socket_of("tdev0")), 0600);
    ck_assert_int_eq(lstat(socket_of("tdev0"), &before), 0);

    skip_notifications();
    write_device("tdev0", "plugin: testdev\nsocket:\n  mode: 666\n");
    wait_reload();
    ck_assert_uint_eq(socket_mode(socket_of("tdev0")), 0666);
    /* The socket was kept, not recreated: a VMM connecting meanwhile is not refused. */
    ck_assert_int_eq(lstat(socket_of("tdev0"), &after), 0);
    ck_assert_uint_eq(after.st_ino, before.st_ino);

    /* Without a mode, the documented default. */
    skip_notifications();
    write_device("tdev0", "plugin: testdev\n");
    wait_reload();
    ck_assert_uint_eq(socket_mode(socket_of("tdev0")), 0660);
}
END_TEST

static int check_config(const char *const *extra);

/* vfio-userd.yaml(5): socket.user and socket.group are each a name or a number. */
START_TEST(numeric_socket_owner_and_group)
{
    /* Ids no account has are used as they are, as chown(1) does; that takes root. */
    unsigned long uid = getuid() == 0 ? 4000123 : getuid(),
                  gid = getuid() == 0 ? 4000456 : getgid();
    char text[256];
    struct stat status;

    FORMAT(text, "plugin: testdev\nsocket:\n  user: \"%lu\"\n  group: \"%lu\"\n", uid, gid);
    write_device("tdev0", text);
    ck_assert_int_eq(check_config(NULL), 0);
    ASSERT_OK(daemon_harness_start(&harness, NULL));
    expect_status("STATUS=Serving 1 device, 1 plugin");
    ck_assert_int_eq(lstat(socket_of("tdev0"), &status), 0);
    ck_assert_uint_eq(status.st_uid, uid);
    ck_assert_uint_eq(status.st_gid, gid);

    /* Names still work, and an unknown name is still an error. */
    skip_notifications();
    ck_assert_ptr_nonnull(getpwuid(getuid()));
    ck_assert_ptr_nonnull(getgrgid(getgid()));
    FORMAT(text, "plugin: testdev\nsocket:\n  user: %s\n  group: %s\n", getpwuid(getuid())->pw_name,
           getgrgid(getgid())->gr_name);
    write_device("tdev0", text);
    wait_reload();
    ck_assert_int_eq(lstat(socket_of("tdev0"), &status), 0);
    ck_assert_uint_eq(status.st_uid, getuid());
    ck_assert_uint_eq(status.st_gid, getgid());
    write_device("tdev1", "plugin: testdev\nsocket:\n  user: no-such-user-here\n");
    wait_reload();
    assert_log_contains("socket.user: no user 'no-such-user-here'");
    ck_assert(!socket_exists(socket_of("tdev1")));
}
END_TEST

START_TEST(renamed_file_moves_device)
{
    char from[PATH_MAX], to[PATH_MAX];

    write_device("tdev0", "plugin: testdev\n");
    ASSERT_OK(daemon_harness_start(&harness, NULL));
    FORMAT(from, "%s/tdev0.yaml", harness.devices_dir);
    FORMAT(to, "%s/tdev1.yaml", harness.devices_dir);
    ck_assert_int_eq(rename(from, to), 0);
    wait_socket(socket_of("tdev1"), true);
    wait_socket(socket_of("tdev0"), false);

    /* Renamed to a name that is not a drop-in (an editor's backup): the device goes. */
    FORMAT(from, "%s/tdev1.yaml~", harness.devices_dir);
    ck_assert_int_eq(rename(to, from), 0);
    wait_socket(socket_of("tdev1"), false);
}
END_TEST

START_TEST(socket_path_change_moves_socket)
{
    char first[PATH_MAX], second[PATH_MAX], text[3 * PATH_MAX];

    /* Parents of a configured path are created. */
    FORMAT(first, "%s/vm1/sockets/dev.sock", harness.directory);
    FORMAT(second, "%s/vm2/dev.sock", harness.directory);
    FORMAT(text, "plugin: testdev\nsocket:\n  path: %s\n", first);
    write_device("tdev0", text);
    ASSERT_OK(daemon_harness_start(&harness, NULL));
    ck_assert(socket_exists(first));
    ck_assert(!socket_exists(socket_of("tdev0")));

    FORMAT(text, "plugin: testdev\nsocket:\n  path: %s\n", second);
    write_device("tdev0", text);
    wait_socket(second, true);
    wait_socket(first, false);
    struct vu_client *client = NULL;
    ASSERT_OK(vu_client_connect(second, NULL, &client));
    ck_assert_uint_eq(read32(client, TESTDEV_REG_MAGIC), TESTDEV_MAGIC);
    vu_client_close(client);
}
END_TEST

START_TEST(disabled_and_masked_devices_are_not_served)
{
    char vendor[PATH_MAX], mask[PATH_MAX];
    const char *extra[] = {"--devices-dir", vendor, NULL};

    ck_assert_int_eq(daemon_harness_make_directory(&harness, "vendor", vendor, sizeof(vendor)), 0);
    ck_assert_int_eq(daemon_harness_write_file(vendor, "masked.yaml", "plugin: testdev\n"), 0);
    ck_assert_int_eq(daemon_harness_write_file(vendor, "vendor.yaml", "plugin: testdev\n"), 0);
    FORMAT(mask, "%s/masked.yaml", harness.devices_dir);
    ck_assert_int_eq(symlink("/dev/null", mask), 0);
    write_device("off", "plugin: testdev\nenabled: false\n");
    ASSERT_OK(daemon_harness_start(&harness, extra));
    expect_status("STATUS=Serving 1 device, 1 plugin");
    ck_assert(socket_exists(socket_of("vendor")));
    ck_assert(!socket_exists(socket_of("masked")));
    ck_assert(!socket_exists(socket_of("off")));

    ck_assert_int_eq(unlink(mask), 0);
    wait_socket(socket_of("masked"), true);
    write_device("off", "plugin: testdev\nenabled: true\n");
    wait_socket(socket_of("off"), true);
    write_device("off", "plugin: testdev\nenabled: false\n");
    wait_socket(socket_of("off"), false);
}
END_TEST

/* ---------------------------------------------------------------------------------------
 * Broken files.
 */

/* Swaps a regular file and a FIFO at DIRECTORY/zz-race.yaml until told to stop. */
struct fifo_swapper {
    const char *directory;
    volatile bool stop;
    unsigned long swaps;
};

static void *swap_fifo_and_file(void *argument)
{
    struct fifo_swapper *swapper = argument;
    char file[PATH_MAX], fifo[PATH_MAX], staged[PATH_MAX], target[PATH_MAX];

    snprintf(file, sizeof(file), "%s/.race-file", swapper->directory);
    snprintf(fifo, sizeof(fifo), "%s/.race-fifo", swapper->directory);
    snprintf(staged, sizeof(staged), "%s/.race-staged", swapper->directory);
    snprintf(target, sizeof(target), "%s/zz-race.yaml", swapper->directory);
    while (!swapper->stop) {
        /* Hard links keep both inodes; rename() replaces the drop-in atomically. */
        const char *next = swapper->swaps % 2 == 0 ? file : fifo;
        if (link(next, staged) < 0 || rename(staged, target) < 0)
            break;
        swapper->swaps++;
    }
    return NULL;
}

/*
 * A FIFO among the drop-ins is reported, never opened in a way that blocks: not when it is
 * there at the scan, and not when a regular file is swapped for one between the scan and
 * the open. Either way the admin socket keeps answering and SIGTERM keeps working.
 */
START_TEST(fifo_drop_in_never_blocks_the_daemon)
{
    struct fifo_swapper swapper = {.directory = harness.devices_dir};
    char path[PATH_MAX], name[32];
    pthread_t thread;

    FORMAT(path, "%s/fifo.yaml", harness.devices_dir);
    ck_assert_int_eq(mkfifo(path, 0600), 0);
    write_device("tdev0", SMALL_TESTDEV);
    ASSERT_OK(daemon_harness_start(&harness, NULL));
    expect_status("STATUS=Serving 1 device, 1 plugin; some drop-ins have errors (see the log)");
    FORMAT(path, "%s/fifo.yaml: not a regular file", harness.devices_dir);
    assert_log_contains(path);
    ck_assert(admin_answers());

    /* Files parsed between the scan and the open of zz-race.yaml widen the window. */
    for (int i = 0; i < 50; i++) {
        FORMAT(name, "off%02d", i);
        write_device(name, "plugin: testdev\nenabled: false\n");
    }
    ck_assert_int_eq(daemon_harness_write_file(harness.devices_dir, ".race-file", SMALL_TESTDEV),
                     0);
    FORMAT(path, "%s/.race-fifo", harness.devices_dir);
    ck_assert_int_eq(mkfifo(path, 0600), 0);
    ck_assert_int_eq(pthread_create(&thread, NULL, swap_fifo_and_file, &swapper), 0);
    /* Each SIGHUP is one more synchronisation racing with the swaps. The notifications
     * are read meanwhile, as systemd would: the daemon waits when their queue is full. */
    for (int i = 0; i < 300; i++) {
        ck_assert_int_eq(kill(harness.pid, SIGHUP), 0);
        usleep(5000);
        daemon_harness_collect_notify(&harness);
    }
    swapper.stop = true;
    ck_assert_int_eq(pthread_join(thread, NULL), 0);
    ck_assert_uint_gt(swapper.swaps, 100);

    if (!admin_answers())
        fail_with_log("the admin socket no longer answers");
    ck_assert(socket_exists(socket_of("tdev0")));
    ASSERT_OK(daemon_harness_stop(&harness, SIGTERM));
    assert_exit_code(0);
}
END_TEST

static void write_problem_files(void)
{
    write_device("a-good", SMALL_TESTDEV);
    write_device("b-syntax", "plugin: [testdev\n");
    write_device("c-no-plugin", "plugin: nope\n");
    write_device("d-bad-param", "plugin: testdev\nparams:\n  ram_size: 3K\n");
    write_device("e-bad-key", "plugin: testdev\ncolour: red\n");
    write_device("f-good", SMALL_TESTDEV);
}

START_TEST(broken_file_next_to_good_ones)
{
    write_problem_files();
    ASSERT_OK(daemon_harness_start(&harness, NULL));
    expect_status("STATUS=Serving 2 devices, 1 plugin; some drop-ins have errors (see the log)");
    ck_assert(socket_exists(socket_of("a-good")));
    ck_assert(socket_exists(socket_of("f-good")));
    ck_assert(!socket_exists(socket_of("b-syntax")));
    ck_assert(!socket_exists(socket_of("c-no-plugin")));
    ck_assert(!socket_exists(socket_of("d-bad-param")));
    ck_assert(!socket_exists(socket_of("e-bad-key")));
    /* Each problem names the file and the position, as documented in vfio-userd.yaml(5). */
    assert_log_contains("b-syntax.yaml:2:1: did not find expected ',' or ']'");
    assert_log_contains("c-no-plugin.yaml:1:9: plugin: no plugin named 'nope' is loaded");
    assert_log_contains("d-bad-param.yaml:3:13: params.ram_size:");
    assert_log_contains("e-bad-key.yaml:2:1: unknown key \"colour\"");

    /* Fixed, it is picked up; the others stay as they were. */
    write_device("b-syntax", SMALL_TESTDEV);
    wait_socket(socket_of("b-syntax"), true);
    wait_status("STATUS=Serving 3 devices, 1 plugin; some drop-ins have errors (see the log)");
    write_device("c-no-plugin", SMALL_TESTDEV);
    remove_device("d-bad-param");
    remove_device("e-bad-key");
    wait_status("STATUS=Serving 4 devices, 1 plugin");
}
END_TEST

START_TEST(broken_file_is_reported_once)
{
    char line[PATH_MAX + 64];

    ASSERT_OK(daemon_harness_start(&harness, NULL));
    write_device("bad", "plugin: testdev\nparams:\n  ram_size: 3\n");
    FORMAT(line, "<3>%s/bad.yaml:3:13: params.ram_size:", harness.devices_dir);
    ASSERT_OK(daemon_harness_wait_log(&harness, line, TIMEOUT));
    /* Other changes synchronise again; the unchanged problem is not logged as an error. */
    write_device("good", SMALL_TESTDEV);
    wait_socket(socket_of("good"), true);
    ck_assert_uint_eq(daemon_harness_log_count(&harness, line), 1);
    /* An explicit reload reports every problem again. */
    ck_assert_int_eq(kill(harness.pid, SIGHUP), 0);
    for (int waited = 0; waited < TIMEOUT && daemon_harness_log_count(&harness, line) < 2;
         waited += 10)
        usleep(10000);
    ck_assert_uint_eq(daemon_harness_log_count(&harness, line), 2);
}
END_TEST

START_TEST(broken_change_keeps_running_device)
{
    struct vu_client *client;

    write_device("tdev0", "plugin: testdev\nparams:\n  ram_size: 64K\n");
    ASSERT_OK(daemon_harness_start(&harness, NULL));
    client = connect_device("tdev0");
    write32(client, TESTDEV_REG_SCRATCH0, 0xcafe);

    /* A half-edited file, then one the plugin refuses: the device and its client go on. */
    write_device("tdev0", "plugin: testdev\nparams: [\n");
    ASSERT_OK(daemon_harness_wait_notify(
        &harness, "STATUS=Serving 1 device, 1 plugin; some drop-ins have errors", TIMEOUT, NULL,
        0));
    write_device("tdev0", "plugin: testdev\nparams:\n  ram_size: 3K\n");
    ASSERT_OK(daemon_harness_wait_log(&harness, "the running device is unchanged", TIMEOUT));
    ck_assert(!client_disconnected(client, 0));
    ck_assert_uint_eq(read32(client, TESTDEV_REG_SCRATCH0), 0xcafe);
    ck_assert_uint_eq(read64(client, TESTDEV_REG_RAM_SIZE), 64 * 1024);
    vu_client_close(client);
    ck_assert(!daemon_harness_log_contains(&harness, "tdev0: removed"));
}
END_TEST

START_TEST(duplicate_name_is_refused_for_second_file)
{
    write_device("first", "name: shared\nplugin: testdev\n");
    write_device("second", "name: shared\nplugin: testdev\n");
    ASSERT_OK(daemon_harness_start(&harness, NULL));
    expect_status("STATUS=Serving 1 device, 1 plugin; some drop-ins have errors (see the log)");
    ck_assert(socket_exists(socket_of("shared")));
    assert_log_contains("second.yaml:1:7: name: device 'shared' already exists");
}
END_TEST

START_TEST(burst_of_a_hundred_files)
{
    char name[32];
    size_t reloads;

    ASSERT_OK(daemon_harness_start(&harness, NULL));
    for (int i = 0; i < 100; i++) {
        FORMAT(name, "burst%03d", i);
        write_device(name, SMALL_TESTDEV);
    }
    for (int i = 0; i < 100; i++) {
        FORMAT(name, "burst%03d", i);
        wait_socket(socket_of(name), true);
    }
    wait_status("STATUS=Serving 100 devices, 1 plugin");
    /* The burst was taken in a few synchronisations, not one per file. */
    reloads = daemon_harness_count_notify(&harness, "RELOADING=1");
    ck_assert_msg(reloads >= 1 && reloads <= 10, "%zu synchronisations for 100 files", reloads);

    FORMAT(name, "burst%03d", 42);
    struct vu_client *client = connect_device(name);
    ck_assert_uint_eq(read32(client, TESTDEV_REG_MAGIC), TESTDEV_MAGIC);
    vu_client_close(client);

    for (int i = 0; i < 100; i++) {
        FORMAT(name, "burst%03d", i);
        remove_device(name);
    }
    for (int i = 0; i < 100; i++) {
        FORMAT(name, "burst%03d", i);
        wait_socket(socket_of(name), false);
    }
    wait_status("STATUS=Serving 0 devices, 1 plugin");
    ck_assert_uint_eq(daemon_harness_log_count(&harness, ": removed"), 100);
}
END_TEST

/* ---------------------------------------------------------------------------------------
 * Plugins.
 */

/* A second plugin directory with a file that is not a plugin and a second testdev. */
static void make_bad_plugin_dir(char *directory, size_t size)
{
    char source[PATH_MAX], target[PATH_MAX + 32];

    ck_assert_int_eq(daemon_harness_make_directory(&harness, "plugins2", directory, size), 0);
    ck_assert_int_eq(daemon_harness_write_file(directory, "bad.so", "not an ELF file\n"), 0);
    FORMAT(source, "%s/testdev.so", harness.plugin_dir);
    FORMAT(target, "%s/testdev-copy.so", directory);
    ck_assert_int_eq(daemon_harness_copy_file(source, target, 0755), 0);
}

START_TEST(plugin_that_fails_to_load)
{
    char second[PATH_MAX];
    const char *extra[] = {"--plugin-dir", second, NULL};

    make_bad_plugin_dir(second, sizeof(second));
    write_device("tdev0", "plugin: testdev\n");
    ASSERT_OK(daemon_harness_start(&harness, extra));
    expect_status("STATUS=Serving 1 device, 1 plugin");
    assert_log_contains("bad.so");
    assert_log_contains("testdev-copy.so: name 'testdev' is already taken");
    struct vu_client *client = connect_device("tdev0");
    ck_assert_uint_eq(read32(client, TESTDEV_REG_MAGIC), TESTDEV_MAGIC);
    vu_client_close(client);
}
END_TEST

START_TEST(no_plugins_at_all)
{
    char empty[PATH_MAX];
    const char *arguments[] = {"-c",
                               harness.config_path,
                               "--devices-dir",
                               harness.devices_dir,
                               "--plugin-dir",
                               empty,
                               "--runtime-dir",
                               harness.runtime_dir,
                               NULL};

    ck_assert_int_eq(daemon_harness_make_directory(&harness, "no-plugins", empty, sizeof(empty)),
                     0);
    write_device("tdev0", "plugin: testdev\n");
    ASSERT_OK(daemon_harness_spawn(&harness, arguments));
    expect_status_after_ready(
        "STATUS=Serving 0 devices, 0 plugins; some drop-ins have errors (see the log)");
    assert_log_contains("tdev0.yaml:1:9: plugin: no plugin named 'testdev' is loaded");
}
END_TEST

/* ---------------------------------------------------------------------------------------
 * Device sockets left over or in use.
 */

START_TEST(stale_socket_is_replaced)
{
    char devices[PATH_MAX];

    ck_assert_int_eq(daemon_harness_make_directory(&harness, "run", devices, sizeof(devices)), 0);
    ck_assert_int_eq(
        daemon_harness_make_directory(&harness, "run/devices", devices, sizeof(devices)), 0);
    /* A crashed daemon leaves the file behind with nobody listening. */
    close(bind_socket(socket_of("tdev0"), true));
    ck_assert_int_lt(connect_raw(socket_of("tdev0")), 0);

    write_device("tdev0", "plugin: testdev\n");
    ASSERT_OK(daemon_harness_start(&harness, NULL));
    expect_status("STATUS=Serving 1 device, 1 plugin");
    struct vu_client *client = connect_device("tdev0");
    ck_assert_uint_eq(read32(client, TESTDEV_REG_MAGIC), TESTDEV_MAGIC);
    vu_client_close(client);
}
END_TEST

/* After a SIGKILL: the sockets of devices that are gone are removed at the next start. */
START_TEST(stale_sockets_of_gone_devices_are_removed)
{
    char devices[PATH_MAX], notes[PATH_MAX];
    int live;

    ck_assert_int_eq(daemon_harness_make_directory(&harness, "run", devices, sizeof(devices)), 0);
    ck_assert_int_eq(
        daemon_harness_make_directory(&harness, "run/devices", devices, sizeof(devices)), 0);
    close(bind_socket(socket_of("ghost1"), true));
    close(bind_socket(socket_of("ghost2"), false));
    live = bind_socket(socket_of("other"), true);
    FORMAT(notes, "%s/notes.txt", devices);
    ck_assert_int_eq(daemon_harness_write_file(devices, "notes.txt", "keep me\n"), 0);
    write_device("tdev0", "plugin: testdev\n");
    ASSERT_OK(daemon_harness_start(&harness, NULL));
    ck_assert(socket_exists(socket_of("tdev0")));
    ck_assert(!socket_exists(socket_of("ghost1")));
    ck_assert(!socket_exists(socket_of("ghost2")));
    ck_assert(socket_exists(socket_of("other")));
    ck_assert_int_eq(access(notes, F_OK), 0);
    assert_log_contains("removed 2 stale device sockets");
    close(live);
}
END_TEST

START_TEST(socket_in_use_is_an_error_for_that_device_only)
{
    char devices[PATH_MAX], occupied[PATH_MAX], text[PATH_MAX + 64];
    int listener, connection, accepted;
    char content[64] = {0};

    ck_assert_int_eq(daemon_harness_make_directory(&harness, "run", devices, sizeof(devices)), 0);
    ck_assert_int_eq(
        daemon_harness_make_directory(&harness, "run/devices", devices, sizeof(devices)), 0);
    /* Another process serves the path of "busy"; a plain file sits where "file" goes. */
    listener = bind_socket(socket_of("busy"), true);
    FORMAT(occupied, "%s/occupied", harness.directory);
    ck_assert_int_eq(daemon_harness_write_file(harness.directory, "occupied", "keep me\n"), 0);
    FORMAT(text, "plugin: testdev\nsocket:\n  path: %s\n", occupied);
    write_device("busy", "plugin: testdev\n");
    write_device("file", text);
    write_device("free", "plugin: testdev\n");
    ASSERT_OK(daemon_harness_start(&harness, NULL));
    expect_status("STATUS=Serving 1 device, 1 plugin; some drop-ins have errors (see the log)");
    ck_assert(socket_exists(socket_of("free")));
    assert_log_contains("busy.sock: a live process is listening on it");
    assert_log_contains("occupied: the path exists and is not a socket");

    /* The daemon stops; what belonged to others is as it was. */
    ASSERT_OK(daemon_harness_stop(&harness, SIGTERM));
    assert_exit_code(0);
    connection = connect_raw(socket_of("busy"));
    ck_assert_int_ge(connection, 0);
    accepted = accept(listener, NULL, NULL);
    ck_assert_int_ge(accepted, 0);
    close(accepted);
    close(connection);
    close(listener);
    int fd = open(occupied, O_RDONLY | O_CLOEXEC);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(read(fd, content, sizeof(content) - 1), 8);
    close(fd);
    ck_assert_str_eq(content, "keep me\n");
}
END_TEST

START_TEST(stale_admin_socket_is_replaced)
{
    char directory[PATH_MAX];

    ck_assert_int_eq(daemon_harness_make_directory(&harness, "run", directory, sizeof(directory)),
                     0);
    close(bind_socket(harness.admin_socket, true));
    ASSERT_OK(daemon_harness_start(&harness, NULL));
    int fd = connect_raw(harness.admin_socket);
    ck_assert_int_ge(fd, 0);
    close(fd);
}
END_TEST

START_TEST(second_daemon_on_same_admin_socket_fails)
{
    char directory[PATH_MAX];
    const char *arguments[] = {"-c",
                               harness.config_path,
                               "--devices-dir",
                               harness.devices_dir,
                               "--plugin-dir",
                               harness.plugin_dir,
                               "--runtime-dir",
                               harness.runtime_dir,
                               "--admin-socket",
                               harness.admin_socket,
                               NULL};
    int listener;

    /* The test plays the daemon already running; the second one must leave it alone. */
    ck_assert_int_eq(daemon_harness_make_directory(&harness, "run", directory, sizeof(directory)),
                     0);
    listener = bind_socket(harness.admin_socket, true);
    write_device("tdev0", "plugin: testdev\n");
    ASSERT_OK(daemon_harness_spawn(&harness, arguments));
    ASSERT_OK(daemon_harness_wait_exit(&harness, TIMEOUT));
    assert_exit_code(1);
    assert_log_contains("another daemon is listening on it");
    ck_assert(!socket_exists(socket_of("tdev0")));
    int fd = connect_raw(harness.admin_socket);
    ck_assert_int_ge(fd, 0);
    close(fd);
    close(listener);
    daemon_harness_collect_notify(&harness);
    ck_assert_uint_eq(daemon_harness_count_notify(&harness, "READY=1"), 0);
}
END_TEST

/* ---------------------------------------------------------------------------------------
 * Signals.
 */

START_TEST(missing_directories_are_watched_once_created)
{
    char later[PATH_MAX], nested[PATH_MAX];
    const char *extra[] = {"--devices-dir", later, "--devices-dir", nested, NULL};

    FORMAT(later, "%s/later", harness.directory);
    FORMAT(nested, "%s/deeper/still/devices.d", harness.directory);
    ASSERT_OK(daemon_harness_start(&harness, extra));
    /* Other directories and files appearing beside the missing one change nothing. */
    skip_notifications();
    ck_assert_int_eq(daemon_harness_make_directory(&harness, "unrelated", nested, sizeof(nested)),
                     0);
    ck_assert_int_eq(daemon_harness_write_file(harness.directory, "stray.yaml", "x: 1\n"), 0);
    ck_assert_int_eq(daemon_harness_wait_notify(&harness, "RELOADING=1", QUIET_MS, NULL, 0),
                     -ETIMEDOUT);
    FORMAT(nested, "%s/deeper/still/devices.d", harness.directory);
    /* Created after start, the directory is watched, and what lands in it is served. */
    ck_assert_int_eq(daemon_harness_make_directory(&harness, "later", later, sizeof(later)), 0);
    ck_assert_int_eq(daemon_harness_write_file(later, "late.yaml", "plugin: testdev\n"), 0);
    wait_socket(socket_of("late"), true);
    /* Read the notifications as systemd would: the datagram queue is short. */
    skip_notifications();
    /* Several levels missing: each level created in turn. */
    ck_assert_int_eq(daemon_harness_make_directory(&harness, "deeper", nested, sizeof(nested)), 0);
    ck_assert_int_eq(
        daemon_harness_make_directory(&harness, "deeper/still", nested, sizeof(nested)), 0);
    ck_assert_int_eq(
        daemon_harness_make_directory(&harness, "deeper/still/devices.d", nested, sizeof(nested)),
        0);
    ck_assert_int_eq(daemon_harness_write_file(nested, "deep.yaml", "plugin: testdev\n"), 0);
    wait_socket(socket_of("deep"), true);
    skip_notifications();
    /* Deleted and created again: still watched. */
    ck_assert_int_eq(daemon_harness_remove_tree(later), 0);
    wait_socket(socket_of("late"), false);
    skip_notifications();
    ck_assert_int_eq(daemon_harness_make_directory(&harness, "later", later, sizeof(later)), 0);
    ck_assert_int_eq(daemon_harness_write_file(later, "again.yaml", "plugin: testdev\n"), 0);
    wait_socket(socket_of("again"), true);
}
END_TEST

START_TEST(sighup_resynchronises)
{
    char outside[PATH_MAX], target[PATH_MAX], link_path[PATH_MAX], line[256];

    /* A drop-in that is a symlink to a file elsewhere: editing that file makes no event
     * in the device directory, so only SIGHUP notices the change. */
    ck_assert_int_eq(daemon_harness_make_directory(&harness, "outside", outside, sizeof(outside)),
                     0);
    ck_assert_int_eq(daemon_harness_write_file(outside, "linked.yaml", SMALL_TESTDEV), 0);
    FORMAT(target, "%s/linked.yaml", outside);
    FORMAT(link_path, "%s/linked.yaml", harness.devices_dir);
    ck_assert_int_eq(symlink(target, link_path), 0);
    ASSERT_OK(daemon_harness_start(&harness, NULL));
    ck_assert(socket_exists(socket_of("linked")));
    ck_assert_int_eq(daemon_harness_write_file(outside, "linked.yaml",
                                               "plugin: testdev\nparams:\n  ram_size: 16K\n"),
                     0);
    usleep(QUIET_MS * 1000);
    ck_assert(!daemon_harness_log_contains(&harness, "linked: replaced"));
    skip_notifications();

    ck_assert_int_eq(kill(harness.pid, SIGHUP), 0);
    ASSERT_OK(daemon_harness_wait_notify(&harness, "RELOADING=1", TIMEOUT, NULL, 0));
    /* systemd needs the time of the reload with RELOADING=1, in the same message. */
    ck_assert_ptr_nonnull(
        strstr(harness.notifications[harness.notifications_consumed - 1], "\nMONOTONIC_USEC="));
    ASSERT_OK(daemon_harness_wait_notify(&harness, "READY=1", TIMEOUT, NULL, 0));
    ck_assert(daemon_harness_log_contains(&harness, "linked: replaced"));
    ASSERT_OK(daemon_harness_wait_notify(&harness, "STATUS=", TIMEOUT, line, sizeof(line)));
    ck_assert_str_eq(line, "STATUS=Serving 1 device, 1 plugin");
}
END_TEST

START_TEST(sigterm_with_client_connected)
{
    struct vu_client *client;

    write_device("tdev0", "plugin: testdev\n");
    write_device("tdev1", "plugin: testdev\n");
    ASSERT_OK(daemon_harness_start(&harness, NULL));
    client = connect_device("tdev0");
    write32(client, TESTDEV_REG_SCRATCH0, 1);

    ASSERT_OK(daemon_harness_stop(&harness, SIGTERM));
    assert_exit_code(0);
    ASSERT_OK(daemon_harness_wait_notify(&harness, "STOPPING=1", TIMEOUT, NULL, 0));
    ck_assert_msg(client_disconnected(client, TIMEOUT), "client still connected after exit");
    vu_client_close(client);
    ck_assert_int_ne(access(socket_of("tdev0"), F_OK), 0);
    ck_assert_int_ne(access(socket_of("tdev1"), F_OK), 0);
    ck_assert_int_ne(access(harness.admin_socket, F_OK), 0);
    /* Each device was taken down through the device manager, which calls the plugin's
     * destroy (the sanitizer build would report the leak otherwise). */
    assert_log_contains("tdev0: removed");
    assert_log_contains("tdev1: removed");
    assert_log_contains("client (pid");
}
END_TEST

START_TEST(sigint_stops_cleanly)
{
    write_device("tdev0", "plugin: testdev\n");
    ASSERT_OK(daemon_harness_start(&harness, NULL));
    ASSERT_OK(daemon_harness_stop(&harness, SIGINT));
    assert_exit_code(0);
    ASSERT_OK(daemon_harness_wait_notify(&harness, "STOPPING=1", TIMEOUT, NULL, 0));
    ck_assert_int_ne(access(socket_of("tdev0"), F_OK), 0);
    assert_log_contains("tdev0: removed");
}
END_TEST

/* ---------------------------------------------------------------------------------------
 * --check-config.
 */

static int check_config(const char *const *extra)
{
    const char *arguments[32] = {"-c",
                                 harness.config_path,
                                 "--devices-dir",
                                 harness.devices_dir,
                                 "--plugin-dir",
                                 harness.plugin_dir,
                                 "--runtime-dir",
                                 harness.runtime_dir,
                                 "--check-config"};
    size_t count = 9;

    for (size_t i = 0; extra != NULL && extra[i] != NULL && count < 31; i++)
        arguments[count++] = extra[i];
    arguments[count] = NULL;
    ASSERT_OK(daemon_harness_spawn(&harness, arguments));
    ASSERT_OK(daemon_harness_wait_exit(&harness, TIMEOUT));
    ck_assert(WIFEXITED(harness.exit_status));
    return WEXITSTATUS(harness.exit_status);
}

START_TEST(check_config_lists_every_problem)
{
    char *log, line[PATH_MAX + 128];

    write_problem_files();
    write_device("g-duplicate", "name: a-good\nplugin: testdev\n");
    ck_assert_int_eq(check_config(NULL), 1);
    log = daemon_harness_read_log(&harness);
    ck_assert_ptr_nonnull(log);
    /* One line per problem, FILE:LINE:COLUMN first, as compilers write them. */
    FORMAT(line, "%s/b-syntax.yaml:2:1: did not find expected ',' or ']'", harness.devices_dir);
    ck_assert_ptr_nonnull(strstr(log, line));
    FORMAT(line, "%s/c-no-plugin.yaml:1:9: plugin: no plugin named 'nope' is loaded\n",
           harness.devices_dir);
    ck_assert_ptr_nonnull(strstr(log, line));
    FORMAT(line, "%s/d-bad-param.yaml:3:13: params.ram_size: ", harness.devices_dir);
    ck_assert_ptr_nonnull(strstr(log, line));
    FORMAT(line, "%s/e-bad-key.yaml:2:1: unknown key \"colour\"", harness.devices_dir);
    ck_assert_ptr_nonnull(strstr(log, line));
    FORMAT(line, "%s/g-duplicate.yaml:1:7: name: device 'a-good' is already defined by ",
           harness.devices_dir);
    ck_assert_ptr_nonnull(strstr(log, line));
    ck_assert_ptr_nonnull(strstr(log, "\n5 problems found\n"));
    ck_assert_ptr_null(strstr(log, "a-good.yaml:"));
    ck_assert_ptr_null(strstr(log, "f-good.yaml"));
    free(log);
    /* Only checked: no runtime directory, no socket, no notification. */
    ck_assert_int_ne(access(harness.runtime_dir, F_OK), 0);
    daemon_harness_collect_notify(&harness);
    ck_assert_uint_eq(harness.notification_count, 0);
}
END_TEST

START_TEST(check_config_accepts_valid_configuration)
{
    char *log;

    write_device("a-good", SMALL_TESTDEV);
    write_device("disabled", "plugin: testdev\nenabled: false\n");
    ck_assert_int_eq(check_config(NULL), 0);
    log = daemon_harness_read_log(&harness);
    ck_assert_str_eq(log != NULL ? log : "(unreadable)", "");
    free(log);
    ck_assert_int_ne(access(harness.runtime_dir, F_OK), 0);
}
END_TEST

START_TEST(check_config_checks_what_start_up_would)
{
    char line[PATH_MAX + 128];

    write_device("a-good", SMALL_TESTDEV);
    /* A disabled file may share a name: it is not started. */
    write_device("b-disabled", "name: a-good\nplugin: testdev\nenabled: false\n");
    /* Two devices on one socket path, and an owner that does not exist. */
    FORMAT(line, "plugin: testdev\nsocket:\n  path: %s/devices/a-good.sock\n", harness.runtime_dir);
    write_device("c-same-socket", line);
    write_device("d-no-user", "plugin: testdev\nsocket:\n  user: no-such-user-here\n");
    ck_assert_int_eq(check_config(NULL), 1);
    FORMAT(line, "%s/c-same-socket.yaml:3:9: socket.path: ", harness.devices_dir);
    assert_log_contains(line);
    assert_log_contains("is already used by device 'a-good'");
    FORMAT(line, "%s/d-no-user.yaml:3:9: socket.user: no user 'no-such-user-here'",
           harness.devices_dir);
    assert_log_contains(line);
    assert_log_contains("\n2 problems found\n");
}
END_TEST

START_TEST(check_config_reports_bad_plugins)
{
    char second[PATH_MAX];
    const char *extra[] = {"--plugin-dir", second, NULL};

    make_bad_plugin_dir(second, sizeof(second));
    write_device("a-good", SMALL_TESTDEV);
    ck_assert_int_eq(check_config(extra), 1);
    assert_log_contains("bad.so");
    assert_log_contains("is already taken");
    assert_log_contains("2 problems found");
}
END_TEST

START_TEST(shipped_examples_are_valid)
{
    const char *source = daemon_harness_source_dir();
    char config[PATH_MAX], devices[PATH_MAX];
    const char *arguments[] = {"-c",
                               config,
                               "--devices-dir",
                               devices,
                               "--plugin-dir",
                               harness.all_plugins,
                               "--check-config",
                               NULL};

    ck_assert_msg(source != NULL, "run from the source tree or set VFIO_USERD_SOURCE_DIR");
    FORMAT(config, "%s/conf/vfio-userd.yaml", source);
    FORMAT(devices, "%s/conf/devices.d", source);
    ASSERT_OK(daemon_harness_spawn(&harness, arguments));
    ASSERT_OK(daemon_harness_wait_exit(&harness, TIMEOUT));
    assert_exit_code(0);
    char *log = daemon_harness_read_log(&harness);
    ck_assert_str_eq(log != NULL ? log : "(unreadable)", "");
    free(log);
}
END_TEST

/* ---------------------------------------------------------------------------------------
 * --single: one device in the foreground, as the vfio-user spec's backend program.
 */

START_TEST(single_serves_in_tree_client)
{
    char socket_path[PATH_MAX];
    const char *arguments[] = {"--single",         "testdev",       "--plugin-dir",
                               harness.plugin_dir, "--socket",      socket_path,
                               "--param",          "ram_size=256K", NULL};
    struct vu_client *client = NULL;

    FORMAT(socket_path, "%s/single.sock", harness.directory);
    ASSERT_OK(daemon_harness_spawn(&harness, arguments));
    ASSERT_OK(daemon_harness_wait_notify(&harness, "READY=1", TIMEOUT, NULL, 0));
    ck_assert(socket_exists(socket_path));
    ASSERT_OK(vu_client_connect(socket_path, NULL, &client));
    ck_assert_uint_eq(read32(client, TESTDEV_REG_MAGIC), TESTDEV_MAGIC);
    ck_assert_uint_eq(read64(client, TESTDEV_REG_RAM_SIZE), 256 * 1024);
    write32(client, TESTDEV_REG_SCRATCH0, 9);

    /* The next client finds the device state kept. */
    vu_client_close(client);
    ASSERT_OK(daemon_harness_wait_log(&harness, "disconnected", TIMEOUT));
    ASSERT_OK(vu_client_connect(socket_path, NULL, &client));
    ck_assert_uint_eq(read32(client, TESTDEV_REG_SCRATCH0), 9);

    ASSERT_OK(daemon_harness_stop(&harness, SIGTERM));
    assert_exit_code(0);
    ASSERT_OK(daemon_harness_wait_notify(&harness, "STOPPING=1", TIMEOUT, NULL, 0));
    ck_assert(client_disconnected(client, TIMEOUT));
    vu_client_close(client);
    ck_assert_int_ne(access(socket_path, F_OK), 0);
}
END_TEST

START_TEST(single_takes_plugin_path)
{
    char socket_path[PATH_MAX], plugin[PATH_MAX + 16];
    const char *arguments[] = {"--single", plugin, "--socket", socket_path, NULL};
    struct vu_client *client = NULL;

    FORMAT(socket_path, "%s/single.sock", harness.directory);
    FORMAT(plugin, "%s/testdev.so", harness.plugin_dir);
    ASSERT_OK(daemon_harness_spawn(&harness, arguments));
    ASSERT_OK(daemon_harness_wait_notify(&harness, "READY=1", TIMEOUT, NULL, 0));
    ASSERT_OK(vu_client_connect(socket_path, NULL, &client));
    ck_assert_uint_eq(read32(client, TESTDEV_REG_MAGIC), TESTDEV_MAGIC);
    vu_client_close(client);
    ASSERT_OK(daemon_harness_stop(&harness, SIGINT));
    assert_exit_code(0);
}
END_TEST

START_TEST(single_refuses_bad_input)
{
    char socket_path[PATH_MAX];

    FORMAT(socket_path, "%s/single.sock", harness.directory);
    ASSERT_OK(daemon_harness_spawn(&harness, (const char *[]){"--single", "nope", "--plugin-dir",
                                                              harness.plugin_dir, "--socket",
                                                              socket_path, NULL}));
    ASSERT_OK(daemon_harness_wait_exit(&harness, TIMEOUT));
    assert_exit_code(1);
    assert_log_contains("no plugin named 'nope'");

    ASSERT_OK(daemon_harness_spawn(
        &harness, (const char *[]){"--single", "testdev", "--plugin-dir", harness.plugin_dir,
                                   "--socket", socket_path, "--param", "ram_size=3K", NULL}));
    ASSERT_OK(daemon_harness_wait_exit(&harness, TIMEOUT));
    assert_exit_code(1);
    assert_log_contains("ram_size");

    /* --socket without --single is a usage error (exit 2). */
    ASSERT_OK(daemon_harness_spawn(&harness, (const char *[]){"--socket", socket_path, NULL}));
    ASSERT_OK(daemon_harness_wait_exit(&harness, TIMEOUT));
    assert_exit_code(2);
    ck_assert_int_ne(access(socket_path, F_OK), 0);
    daemon_harness_collect_notify(&harness);
    ck_assert_uint_eq(daemon_harness_count_notify(&harness, "READY=1"), 0);
}
END_TEST

/* Runs --single with `extra` options under umask 000 and returns its socket's status. */
static struct stat single_socket_status(const char *socket_path, const char *const *extra)
{
    const char *arguments[16] = {"--single",         "testdev",  "--plugin-dir",
                                 harness.plugin_dir, "--socket", socket_path};
    size_t count = 6;
    struct stat status;
    mode_t saved;

    for (size_t i = 0; extra[i] != NULL && count < 15; i++)
        arguments[count++] = extra[i];
    arguments[count] = NULL;
    skip_notifications();
    saved = umask(0);
    ASSERT_OK(daemon_harness_spawn(&harness, arguments));
    umask(saved);
    ASSERT_OK(daemon_harness_wait_notify(&harness, "READY=1", TIMEOUT, NULL, 0));
    ck_assert_int_eq(lstat(socket_path, &status), 0);
    ASSERT_OK(daemon_harness_stop(&harness, SIGTERM));
    assert_exit_code(0);
    return status;
}

START_TEST(single_socket_mode_and_owner)
{
    char socket_path[PATH_MAX], owner[64], names[600];
    /* Ids no account has are used as they are; giving them takes root. */
    unsigned long uid = getuid() == 0 ? 4000123 : getuid(),
                  gid = getuid() == 0 ? 4000456 : getgid();
    struct stat status;

    FORMAT(socket_path, "%s/single.sock", harness.directory);
    /* The caller's umask (000 here) does not open the socket to everyone. */
    status = single_socket_status(socket_path, (const char *[]){NULL});
    ck_assert_uint_eq(status.st_mode & 07777, 0600);
    ck_assert_uint_eq(status.st_uid, getuid());

    FORMAT(owner, "%lu:%lu", uid, gid);
    status = single_socket_status(
        socket_path, (const char *[]){"--socket-mode", "660", "--socket-owner", owner, NULL});
    ck_assert_uint_eq(status.st_mode & 07777, 0660);
    ck_assert_uint_eq(status.st_uid, uid);
    ck_assert_uint_eq(status.st_gid, gid);

    ck_assert_ptr_nonnull(getpwuid(getuid()));
    ck_assert_ptr_nonnull(getgrgid(getgid()));
    FORMAT(names, "%s:%s", getpwuid(getuid())->pw_name, getgrgid(getgid())->gr_name);
    status = single_socket_status(
        socket_path, (const char *[]){"--socket-mode", "0640", "--socket-owner", names, NULL});
    ck_assert_uint_eq(status.st_mode & 07777, 0640);
    ck_assert_uint_eq(status.st_uid, getuid());
    ck_assert_uint_eq(status.st_gid, getgid());
    FORMAT(names, ":%s", getgrgid(getgid())->gr_name);
    status = single_socket_status(socket_path, (const char *[]){"--socket-owner", names, NULL});
    ck_assert_uint_eq(status.st_mode & 07777, 0600);
    ck_assert_uint_eq(status.st_gid, getgid());

    /* A bad mode is a usage error; an unknown owner fails before any socket is made. */
    ASSERT_OK(daemon_harness_spawn(
        &harness, (const char *[]){"--single", "testdev", "--plugin-dir", harness.plugin_dir,
                                   "--socket", socket_path, "--socket-mode", "0999", NULL}));
    ASSERT_OK(daemon_harness_wait_exit(&harness, TIMEOUT));
    assert_exit_code(2);
    ASSERT_OK(daemon_harness_spawn(&harness,
                                   (const char *[]){"--single", "testdev", "--plugin-dir",
                                                    harness.plugin_dir, "--socket", socket_path,
                                                    "--socket-owner", "no-such-user-here", NULL}));
    ASSERT_OK(daemon_harness_wait_exit(&harness, TIMEOUT));
    assert_exit_code(1);
    assert_log_contains("--socket-owner: no user 'no-such-user-here'");
    ck_assert_int_ne(access(socket_path, F_OK), 0);
    /* Without --single they are usage errors. */
    ASSERT_OK(daemon_harness_spawn(&harness, (const char *[]){"--socket-mode", "0600", NULL}));
    ASSERT_OK(daemon_harness_wait_exit(&harness, TIMEOUT));
    assert_exit_code(2);
}
END_TEST

START_TEST(single_refuses_socket_in_use)
{
    char socket_path[PATH_MAX];
    const char *arguments[] = {
        "--single", "testdev", "--plugin-dir", harness.plugin_dir, "--socket", socket_path, NULL};
    int listener;

    FORMAT(socket_path, "%s/single.sock", harness.directory);
    listener = bind_socket(socket_path, true);
    ASSERT_OK(daemon_harness_spawn(&harness, arguments));
    ASSERT_OK(daemon_harness_wait_exit(&harness, TIMEOUT));
    assert_exit_code(1);
    assert_log_contains("a live process is listening on it");
    ck_assert(socket_exists(socket_path));
    close(listener);
}
END_TEST

/* ---------------------------------------------------------------------------------------
 * dma_message_chunk_size: from the configuration file to the device's DMA messages.
 */

static void read_all(int fd, void *data, size_t length)
{
    for (size_t done = 0; done < length;) {
        struct pollfd pollfd = {.fd = fd, .events = POLLIN};
        ssize_t n;

        ck_assert_int_eq(poll(&pollfd, 1, TIMEOUT), 1);
        n = recv(fd, (uint8_t *)data + done, length - done, MSG_DONTWAIT);
        ck_assert_int_gt(n, 0);
        done += (size_t)n;
    }
}

/*
 * Has the testdev behind `socket_path` FILL `length` bytes of client memory shared without
 * a descriptor, answers its DMA_WRITE messages by hand as QEMU does (a bare header), and
 * returns the largest count one of them carried.
 */
static uint64_t largest_dma_message(const char *socket_path, uint32_t length)
{
    const uint64_t address = 0x100000000ull;
    struct vu_client *client = NULL;
    struct {
        struct vu_region_access access;
        uint32_t value;
    } __attribute__((packed)) go = {
        .access = {.offset = TESTDEV_REG_DMA_CTRL, .region = VFIO_USERD_REGION_BAR0, .count = 4},
        .value = 1,
    };
    uint8_t *payload = malloc(VU_SERVER_MAX_DATA_XFER_SIZE + 64);
    uint64_t largest = 0, written = 0, destination = address;
    uint16_t command = 0x0006, id;
    bool replied = false;

    ck_assert_ptr_nonnull(payload);
    ASSERT_OK(vu_client_connect(socket_path, NULL, &client));
    ASSERT_OK(vu_client_region_write(client, VFIO_USERD_REGION_CONFIG, 0x04, &command, 2));
    ASSERT_OK(vu_client_dma_map(client, address, length,
                                VU_DMA_FLAG_READABLE | VU_DMA_FLAG_WRITABLE, -1, 0));
    ASSERT_OK(vu_client_region_write(client, VFIO_USERD_REGION_BAR0, TESTDEV_REG_DMA_DEST,
                                     &destination, 8));
    write32(client, TESTDEV_REG_DMA_LEN, length);
    write32(client, TESTDEV_REG_DMA_OP, TESTDEV_DMA_FILL);
    /* GO goes out raw: the client library would answer the DMA_WRITEs itself. */
    id = vu_client_next_message_id(client);
    ASSERT_OK(vu_client_send(client, id, VU_COMMAND_REGION_WRITE, 0, &go, sizeof(go), NULL, 0));
    while (!replied || written < length) {
        struct vu_header header;
        struct vu_dma_access access;
        uint8_t bytes[VU_HEADER_SIZE];
        size_t size;

        read_all(vu_client_socket(client), bytes, sizeof(bytes));
        ASSERT_OK(vu_wire_decode_header(bytes, sizeof(bytes), &header));
        size = header.message_size - VU_HEADER_SIZE;
        ck_assert_uint_le(size, VU_SERVER_MAX_DATA_XFER_SIZE + 64);
        read_all(vu_client_socket(client), payload, size);
        if ((header.flags & VU_FLAGS_TYPE_MASK) == VU_FLAGS_TYPE_REPLY) {
            ck_assert_uint_eq(header.message_id, id);
            replied = true;
            continue;
        }
        ck_assert_uint_eq(header.command, VU_COMMAND_DMA_WRITE);
        ck_assert_uint_ge(size, sizeof(access));
        memcpy(&access, payload, sizeof(access));
        ck_assert_uint_eq(access.address, address + written);
        ck_assert_uint_eq(size, sizeof(access) + access.count);
        written += access.count;
        if (access.count > largest)
            largest = access.count;
        ASSERT_OK(vu_client_send(client, header.message_id, header.command, VU_FLAGS_TYPE_REPLY,
                                 NULL, 0, NULL, 0));
    }
    ck_assert_uint_eq(written, length);
    ck_assert_uint_eq(read32(client, TESTDEV_REG_DMA_STAT) & 0xf, TESTDEV_DMA_DONE);
    vu_client_close(client);
    free(payload);
    return largest;
}

START_TEST(dma_message_chunk_size_reaches_devices)
{
    ck_assert_int_eq(daemon_harness_write_file(harness.directory, "vfio-userd.yaml",
                                               "worker_threads: 2\n"
                                               "dma_message_chunk_size: 16K\n"),
                     0);
    write_device("tdev0", SMALL_TESTDEV);
    ASSERT_OK(daemon_harness_start(&harness, NULL));
    ck_assert_uint_eq(largest_dma_message(socket_of("tdev0"), 256 * 1024), 16 * 1024);
}
END_TEST

START_TEST(dma_message_chunk_size_defaults_to_64k)
{
    write_device("tdev0", SMALL_TESTDEV);
    ASSERT_OK(daemon_harness_start(&harness, NULL));
    ck_assert_uint_eq(largest_dma_message(socket_of("tdev0"), 1024 * 1024), 64 * 1024);
}
END_TEST

START_TEST(dma_message_chunk_size_for_single)
{
    char socket_path[PATH_MAX];
    const char *arguments[] = {"-c",           harness.config_path, "--single",
                               "testdev",      "--socket",          socket_path,
                               "--plugin-dir", harness.plugin_dir,  NULL};

    ck_assert_int_eq(daemon_harness_write_file(harness.directory, "vfio-userd.yaml",
                                               "dma_message_chunk_size: 0x2000\n"),
                     0);
    FORMAT(socket_path, "%s/single.sock", harness.directory);
    ASSERT_OK(daemon_harness_spawn(&harness, arguments));
    ASSERT_OK(daemon_harness_wait_notify(&harness, "READY=1", TIMEOUT, NULL, 0));
    ck_assert_uint_eq(largest_dma_message(socket_path, 64 * 1024), 8 * 1024);
}
END_TEST

/*
 * handshake_timeout and max_client_fds: from the configuration file to every device socket,
 * the broker's and --single's alike.
 */

/* A client that connects and says nothing is let go within `seconds` (plus slack). */
static void assert_silent_client_dropped(const char *socket_path, int seconds)
{
    struct pollfd pollfd = {.events = POLLIN};
    char byte;

    pollfd.fd = connect_raw(socket_path);
    ck_assert_int_eq(poll(&pollfd, 1, seconds * 1000 + 3000), 1);
    ck_assert_int_eq(recv(pollfd.fd, &byte, 1, 0), 0);
    close(pollfd.fd);
}

/* SET_IRQS with `count` MSI-X eventfds: its result. */
static int set_msix_eventfds(struct vu_client *client, uint32_t count)
{
    int fds[64], ret;

    ck_assert_uint_le(count, 64);
    for (uint32_t i = 0; i < count; i++)
        ck_assert_int_ge(fds[i] = eventfd(0, EFD_CLOEXEC), 0);
    ret = vu_client_set_irqs(client, VFIO_PCI_MSIX_IRQ_INDEX,
                             VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER, 0, count, fds,
                             NULL);
    for (uint32_t i = 0; i < count; i++)
        close(fds[i]);
    return ret;
}

static void assert_client_fd_budget(const char *socket_path, uint32_t budget)
{
    struct vu_client *client = NULL;

    ASSERT_OK(vu_client_connect(socket_path, NULL, &client));
    ck_assert_int_eq(set_msix_eventfds(client, budget + 1), -ENOSPC);
    ASSERT_OK(set_msix_eventfds(client, budget));
    vu_client_close(client);
}

START_TEST(client_limits_reach_devices)
{
    ck_assert_int_eq(daemon_harness_write_file(harness.directory, "vfio-userd.yaml",
                                               "handshake_timeout: 1\n"
                                               "max_client_fds: 16\n"),
                     0);
    write_device("tdev0", "plugin: testdev\nparams:\n  ram_size: 8K\n  msix_vectors: 32\n");
    ASSERT_OK(daemon_harness_start(&harness, NULL));
    assert_silent_client_dropped(socket_of("tdev0"), 1);
    assert_client_fd_budget(socket_of("tdev0"), 16);
}
END_TEST

START_TEST(client_limits_for_single)
{
    char socket_path[PATH_MAX];
    const char *arguments[] = {
        "-c",           harness.config_path, "--single", "testdev",         "--socket", socket_path,
        "--plugin-dir", harness.plugin_dir,  "--param",  "msix_vectors=32", NULL};

    ck_assert_int_eq(daemon_harness_write_file(harness.directory, "vfio-userd.yaml",
                                               "handshake_timeout: 1\n"
                                               "max_client_fds: 20\n"),
                     0);
    FORMAT(socket_path, "%s/single.sock", harness.directory);
    ASSERT_OK(daemon_harness_spawn(&harness, arguments));
    ASSERT_OK(daemon_harness_wait_notify(&harness, "READY=1", TIMEOUT, NULL, 0));
    assert_silent_client_dropped(socket_path, 1);
    assert_client_fd_budget(socket_path, 20);
}
END_TEST

/* The daemon takes the hard descriptor limit: systemd's soft 1024 is below one client's budget. */
START_TEST(descriptor_limit_raised_to_hard)
{
    struct rlimit saved, lowered;
    char path[64], line[256];
    unsigned long long soft = 0, hard = 0;
    FILE *limits;

    ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &saved), 0);
    lowered = saved;
    if (saved.rlim_max > 4096)
        lowered.rlim_max = 4096;
    lowered.rlim_cur = 256;
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &lowered), 0);
    ASSERT_OK(daemon_harness_start(&harness, NULL));
    setrlimit(RLIMIT_NOFILE, &saved);
    FORMAT(path, "/proc/%d/limits", (int)harness.pid);
    limits = fopen(path, "r");
    ck_assert_ptr_nonnull(limits);
    while (fgets(line, sizeof(line), limits) != NULL)
        if (sscanf(line, "Max open files %llu %llu", &soft, &hard) == 2)
            break;
    fclose(limits);
    ck_assert_uint_eq(hard, lowered.rlim_max);
    ck_assert_uint_eq(soft, lowered.rlim_max);
}
END_TEST

/* admin_socket_group and admin_socket_mode, the group given by number. */
START_TEST(admin_socket_group_by_number)
{
    struct stat status;

    ck_assert_int_eq(daemon_harness_write_file(harness.directory, "vfio-userd.yaml",
                                               "admin_socket_group: 4000456\n"
                                               "admin_socket_mode: \"0640\"\n"),
                     0);
    ASSERT_OK(daemon_harness_start(&harness, NULL));
    ck_assert_int_eq(stat(harness.admin_socket, &status), 0);
    ck_assert_uint_eq(status.st_gid, 4000456);
    ck_assert_uint_eq(status.st_mode & 07777, 0640);
}
END_TEST

START_TEST(dma_message_chunk_size_invalid_fails_with_position)
{
    ck_assert_int_eq(daemon_harness_write_file(harness.directory, "vfio-userd.yaml",
                                               "worker_threads: 2\n"
                                               "dma_message_chunk_size: 100K\n"),
                     0);
    ASSERT_OK(daemon_harness_spawn(
        &harness, (const char *[]){"-c", harness.config_path, "--check-config", NULL}));
    ASSERT_OK(daemon_harness_wait_exit(&harness, TIMEOUT));
    assert_exit_code(1);
    assert_log_contains("vfio-userd.yaml:2:25: dma_message_chunk_size: expected a power of two "
                        "from 4K to 1M, such as 65536 or 64K, found the string \"100K\"");
}
END_TEST

/* ---------------------------------------------------------------------------------------
 * The systemd units.
 */

static char *read_text(const char *path)
{
    char *text = NULL;
    size_t size = 0;
    FILE *in = fopen(path, "re");
    FILE *out = open_memstream(&text, &size);
    int c;

    ck_assert_ptr_nonnull(in);
    ck_assert_ptr_nonnull(out);
    while ((c = fgetc(in)) != EOF)
        fputc(c, out);
    fclose(in);
    fclose(out);
    return text;
}

/* `text` with every `from` replaced by `to`, malloc'ed. */
static char *replace_all(const char *text, const char *from, const char *to)
{
    char *result = NULL;
    size_t size = 0;
    FILE *out = open_memstream(&result, &size);
    const char *at;

    ck_assert_ptr_nonnull(out);
    while ((at = strstr(text, from)) != NULL) {
        fwrite(text, 1, (size_t)(at - text), out);
        fputs(to, out);
        text = at + strlen(from);
    }
    fputs(text, out);
    fclose(out);
    return result;
}

static bool has_line(const char *text, const char *line)
{
    size_t length = strlen(line);

    for (const char *at = strstr(text, line); at != NULL; at = strstr(at + 1, line))
        if ((at == text || at[-1] == '\n') && (at[length] == '\n' || at[length] == '\0'))
            return true;
    return false;
}

static const char *find_program(const char *name, char *path, size_t size)
{
    const char *search = getenv("PATH");
    char directories[4096];

    FORMAT(directories, "%s", search != NULL ? search : "/usr/local/bin:/usr/bin:/bin");
    for (char *state = NULL, *directory = strtok_r(directories, ":", &state); directory != NULL;
         directory = strtok_r(NULL, ":", &state)) {
        snprintf(path, size, "%s/%s", directory, name);
        if (access(path, X_OK) == 0)
            return path;
    }
    return NULL;
}

/* Runs a program with its output in `output_path`; returns its exit code. */
static int run_program(const char *const *argv, const char *output_path)
{
    int status = -1, fd = open(output_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    pid_t child;

    ck_assert_int_ge(fd, 0);
    child = fork();
    ck_assert_int_ge(child, 0);
    if (child == 0) {
        if (dup2(fd, STDOUT_FILENO) < 0 || dup2(fd, STDERR_FILENO) < 0)
            _exit(127);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(fd);
    ck_assert_int_eq(waitpid(child, &status, 0), child);
    ck_assert(WIFEXITED(status));
    return WEXITSTATUS(status);
}

START_TEST(units_pass_systemd_analyze_verify)
{
    const char *source = daemon_harness_source_dir();
    char analyze[PATH_MAX], path[PATH_MAX], binary[PATH_MAX], output[PATH_MAX];
    char service_copy[PATH_MAX], socket_copy[PATH_MAX];
    char *service, *socket_unit, *patched, *log;

    ck_assert_msg(source != NULL, "run from the source tree or set VFIO_USERD_SOURCE_DIR");
    if (find_program("systemd-analyze", analyze, sizeof(analyze)) == NULL) {
        fprintf(stderr, "units_pass_systemd_analyze_verify: SKIPPED: systemd-analyze is not "
                        "installed (Debian package systemd)\n");
        return;
    }
    FORMAT(path, "%s/systemd/vfio-userd.service", source);
    service = read_text(path);
    FORMAT(path, "%s/systemd/vfio-userd.socket", source);
    socket_unit = read_text(path);

    /* verify insists that the programs exist: point them at the ones just built. */
    ck_assert_ptr_nonnull(realpath(daemon_harness_build_dir(), path));
    FORMAT(binary, "%s/vfio-userctl", path);
    ck_assert_msg(access(binary, X_OK) == 0, "%s is not built", binary);
    ck_assert(has_line(service, "ExecStart=/usr/sbin/vfio-userd"));
    ck_assert(has_line(service, "ExecReload=/usr/bin/vfio-userctl reload"));
    FORMAT(binary, "ExecStart=%s/vfio-userd", path);
    patched = replace_all(service, "ExecStart=/usr/sbin/vfio-userd", binary);
    free(service);
    FORMAT(binary, "ExecReload=%s/vfio-userctl", path);
    service = replace_all(patched, "ExecReload=/usr/bin/vfio-userctl", binary);
    free(patched);
    patched = service;
    service = NULL;
    FORMAT(service_copy, "%s/vfio-userd.service", harness.directory);
    FORMAT(socket_copy, "%s/vfio-userd.socket", harness.directory);
    ck_assert_int_eq(daemon_harness_write_file(harness.directory, "vfio-userd.service", patched),
                     0);
    ck_assert_int_eq(daemon_harness_write_file(harness.directory, "vfio-userd.socket", socket_unit),
                     0);

    FORMAT(output, "%s/verify.out", harness.directory);
    /* The man pages are checked against the tree below, not against the installed ones. */
    int code = run_program(
        (const char *[]){analyze, "verify", "--man=no", socket_copy, service_copy, NULL}, output);
    log = read_text(output);
    /* Warnings (an unknown key, a bad value) do not change the exit code: none is allowed. */
    ck_assert_msg(code == 0 && log[0] == '\0', "systemd-analyze verify (exit %d):\n%s", code, log);
    free(log);
    free(patched);
    free(service);
    free(socket_unit);
}
END_TEST

START_TEST(units_agree_with_daemon_defaults)
{
    const char *source = daemon_harness_source_dir();
    char path[PATH_MAX], line[256];
    char *service, *socket_unit;

    ck_assert_msg(source != NULL, "run from the source tree or set VFIO_USERD_SOURCE_DIR");
    FORMAT(path, "%s/systemd/vfio-userd.service", source);
    service = read_text(path);
    FORMAT(path, "%s/systemd/vfio-userd.socket", source);
    socket_unit = read_text(path);

    /* The admin socket where the daemon expects it, under the name it looks for. */
    FORMAT(line, "ListenStream=%s/admin.sock", CONFIG_RUNTIME_DIR);
    ck_assert(has_line(socket_unit, line));
    ck_assert(has_line(socket_unit, "FileDescriptorName=admin"));
    ck_assert(has_line(socket_unit, "Service=vfio-userd.service"));
    /* The runtime and configuration directories systemd creates are the daemon's. */
    ck_assert_str_eq(CONFIG_RUNTIME_DIR, "/run/vfio-userd");
    ck_assert(has_line(service, "RuntimeDirectory=vfio-userd"));
    ck_assert(has_line(service, "RuntimeDirectoryPreserve=yes"));
    ck_assert_str_eq(CONFIG_DEVICES_DIR_ETC, "/etc/vfio-userd/devices.d");
    ck_assert(has_line(service, "ConfigurationDirectory=vfio-userd vfio-userd/devices.d"));
    ck_assert(has_line(service, "ReadWritePaths=/etc/vfio-userd/devices.d"));
    ck_assert(has_line(service, "Type=notify"));
    ck_assert(has_line(service, "RestrictAddressFamilies=AF_UNIX"));

    /* Every man page the units point to is in the tree. */
    const char *units[] = {service, socket_unit};
    for (size_t u = 0; u < 2; u++) {
        const char *at = strstr(units[u], "\nDocumentation=");
        ck_assert_ptr_nonnull(at);
        at += strlen("\nDocumentation=");
        while (*at != '\n' && *at != '\0') {
            char name[64], section[8];
            int consumed = 0;
            ck_assert_int_eq(sscanf(at, "man:%63[^(](%7[^)])%n", name, section, &consumed), 2);
            FORMAT(path, "%s/man/%s.%s", source, name, section);
            ck_assert_msg(access(path, R_OK) == 0, "%s is missing", path);
            at += consumed;
            at += strspn(at, " ");
        }
    }
    free(service);
    free(socket_unit);
}
END_TEST

/* Socket activation of the admin socket is tested with the admin socket, in test_admin.c. */

static Suite *daemon_suite(void)
{
    Suite *suite = suite_create("daemon");
    struct {
        const char *name;
        const TTest *tests[16];
    } cases[] = {
        {"start-up",
         {ready_only_once_initial_devices_listen, empty_directory_is_ready_with_no_devices,
          watchdog_pings_when_systemd_asks, no_watchdog_unless_asked,
          missing_config_file_given_with_c_fails, invalid_config_file_fails_with_position}},
        {"drop-ins",
         {dropped_file_appears_and_deleted_file_vanishes, changed_file_replaces_device,
          unchanged_file_keeps_device_and_client, mode_change_is_applied_to_same_socket,
          numeric_socket_owner_and_group, renamed_file_moves_device,
          socket_path_change_moves_socket, disabled_and_masked_devices_are_not_served}},
        {"broken files",
         {broken_file_next_to_good_ones, broken_file_is_reported_once,
          broken_change_keeps_running_device, duplicate_name_is_refused_for_second_file,
          burst_of_a_hundred_files, fifo_drop_in_never_blocks_the_daemon}},
        {"plugins", {plugin_that_fails_to_load, no_plugins_at_all}},
        {"sockets",
         {stale_socket_is_replaced, stale_sockets_of_gone_devices_are_removed,
          socket_in_use_is_an_error_for_that_device_only, stale_admin_socket_is_replaced,
          second_daemon_on_same_admin_socket_fails}},
        {"signals",
         {missing_directories_are_watched_once_created, sighup_resynchronises,
          sigterm_with_client_connected, sigint_stops_cleanly}},
        {"check-config",
         {check_config_lists_every_problem, check_config_accepts_valid_configuration,
          check_config_checks_what_start_up_would, check_config_reports_bad_plugins,
          shipped_examples_are_valid}},
        {"single",
         {single_serves_in_tree_client, single_takes_plugin_path, single_refuses_bad_input,
          single_refuses_socket_in_use, single_socket_mode_and_owner}},
        {"dma chunks",
         {dma_message_chunk_size_reaches_devices, dma_message_chunk_size_defaults_to_64k,
          dma_message_chunk_size_for_single, dma_message_chunk_size_invalid_fails_with_position}},
        {"socket settings",
         {client_limits_reach_devices, client_limits_for_single, descriptor_limit_raised_to_hard,
          admin_socket_group_by_number}},
        {"units", {units_pass_systemd_analyze_verify, units_agree_with_daemon_defaults}},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        TCase *tcase = tcase_create(cases[i].name);
        tcase_add_checked_fixture(tcase, setup, teardown);
        /* Waits are bounded by DAEMON_HARNESS_TIMEOUT_MS each; the 100-file burst is the
         * longest test, and a sanitizer build is several times slower. */
        tcase_set_timeout(tcase, 120);
        for (size_t j = 0; cases[i].tests[j] != NULL; j++)
            tcase_add_test(tcase, cases[i].tests[j]);
        suite_add_tcase(suite, tcase);
    }
    return suite;
}

int main(void)
{
    return daemon_harness_run_suite(daemon_suite());
}
