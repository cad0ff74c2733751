/*
 * vfio-userctl end to end: the real CLI binary is run, as a person or a script would run it,
 * against the real daemon (started by the daemon harness in a private directory), against
 * fake admin servers that answer wrongly or not at all, and against a fake vfio-user device
 * whose configuration space is hostile. Each test judges the CLI only from outside: its
 * exit code, what it printed on stdout and stderr, and what the daemon did.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <linux/pci_regs.h>

#include "client.h"
#include "daemon_harness.h"
#include "test_process.h"
#include "wire.h"
#include "test_runner.h"

#define TIMEOUT DAEMON_HARNESS_TIMEOUT_MS
/* No CLI run may take longer than this; it is killed and the test fails. */
#define CTL_RUN_LIMIT_MS  30000
#define CTL_MAX_ARGUMENTS 32

/* The CLI's exit codes, from vfio-userctl(8). */
#define EXIT_DONE        0
#define EXIT_REFUSED     1
#define EXIT_USAGE       2
#define EXIT_UNREACHABLE 3

/* testdev's identity and BAR0 counters, from vfio-userd-testdev(7). */
#define TESTDEV_VENDOR            0x1234
#define TESTDEV_DEVICE            0x7464
#define TESTDEV_REG_MESSAGE_COUNT 0x200

static struct daemon_harness harness;

/* --- Running the CLI. --------------------------------------------------------------------- */

struct ctl_result {
    int exit_code; /* -1: killed by a signal */
    char *out;
    char *err;
};

/* The last run's result; freed by the next run and by the teardown. */
static struct ctl_result last;

static void result_clear(void)
{
    free(last.out);
    free(last.err);
    memset(&last, 0, sizeof(last));
}

struct capture {
    int fd;
    char *data;
    size_t length;
};

/* Reads what is available; false at end of file. */
static bool capture_read(struct capture *capture)
{
    char buffer[65536];
    ssize_t got = read(capture->fd, buffer, sizeof(buffer));
    char *grown;

    if (got < 0 && errno == EINTR)
        return true;
    if (got <= 0)
        return false;
    grown = realloc(capture->data, capture->length + (size_t)got + 1);
    ck_assert_ptr_nonnull(grown);
    capture->data = grown;
    memcpy(capture->data + capture->length, buffer, (size_t)got);
    capture->length += (size_t)got;
    capture->data[capture->length] = '\0';
    return true;
}

/* Runs vfio-userctl with `arguments` (NULL-terminated, without argv[0]). */
static struct ctl_result *run_argv(const char *const *arguments)
{
    char binary[PATH_MAX];
    const char *argv[CTL_MAX_ARGUMENTS + 2] = {binary};
    struct capture captures[2] = {{.fd = -1}, {.fd = -1}};
    int out_pipe[2], err_pipe[2], status;
    long long deadline = (long long)test_now_ms() + CTL_RUN_LIMIT_MS;
    size_t count = 0;
    pid_t parent = getpid(), child;

    result_clear();
    FORMAT(binary, "%s/vfio-userctl", daemon_harness_build_dir());
    while (arguments[count] != NULL) {
        ck_assert_uint_lt(count, CTL_MAX_ARGUMENTS);
        argv[count + 1] = arguments[count];
        count++;
    }
    ck_assert_int_eq(pipe2(out_pipe, O_CLOEXEC), 0);
    ck_assert_int_eq(pipe2(err_pipe, O_CLOEXEC), 0);
    child = fork();
    ck_assert_int_ge(child, 0);
    if (child == 0) {
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
            _exit(127);
        if (dup2(out_pipe[1], STDOUT_FILENO) < 0 || dup2(err_pipe[1], STDERR_FILENO) < 0)
            _exit(127);
        execv(binary, (char *const *)argv);
        _exit(127);
    }
    close(out_pipe[1]);
    close(err_pipe[1]);
    captures[0].fd = out_pipe[0];
    captures[1].fd = err_pipe[0];
    while (captures[0].fd >= 0 || captures[1].fd >= 0) {
        struct pollfd entries[2] = {{.fd = captures[0].fd, .events = POLLIN},
                                    {.fd = captures[1].fd, .events = POLLIN}};
        int left = (int)(deadline - (long long)test_now_ms());
        if (left <= 0) {
            kill(child, SIGKILL);
            waitpid(child, NULL, 0);
            ck_abort_msg("vfio-userctl %s did not finish within %d ms", arguments[0],
                         CTL_RUN_LIMIT_MS);
        }
        if (poll(entries, 2, left) < 0) {
            ck_assert_int_eq(errno, EINTR);
            continue;
        }
        for (int i = 0; i < 2; i++) {
            if (captures[i].fd >= 0 && entries[i].revents != 0 && !capture_read(&captures[i])) {
                close(captures[i].fd);
                captures[i].fd = -1;
            }
        }
    }
    ck_assert_int_eq(waitpid(child, &status, 0), child);
    last.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    last.out = captures[0].data != NULL ? captures[0].data : strdup("");
    last.err = captures[1].data != NULL ? captures[1].data : strdup("");
    ck_assert_ptr_nonnull(last.out);
    ck_assert_ptr_nonnull(last.err);
    return &last;
}

/* Runs vfio-userctl -s ADMIN_SOCKET ARGUMENTS... (NULL-terminated). */
static struct ctl_result *ctl(const char *first, ...)
{
    const char *arguments[CTL_MAX_ARGUMENTS + 1] = {"-s", harness.admin_socket};
    size_t count = 2;
    va_list list;

    va_start(list, first);
    for (const char *argument = first; argument != NULL; argument = va_arg(list, const char *)) {
        ck_assert_uint_lt(count, CTL_MAX_ARGUMENTS);
        arguments[count++] = argument;
    }
    va_end(list);
    arguments[count] = NULL;
    return run_argv(arguments);
}

/* The same without -s, for runs that name their own socket or none. */
static struct ctl_result *ctl_bare(const char *first, ...)
{
    const char *arguments[CTL_MAX_ARGUMENTS + 1];
    size_t count = 0;
    va_list list;

    va_start(list, first);
    for (const char *argument = first; argument != NULL; argument = va_arg(list, const char *)) {
        ck_assert_uint_lt(count, CTL_MAX_ARGUMENTS);
        arguments[count++] = argument;
    }
    va_end(list);
    arguments[count] = NULL;
    return run_argv(arguments);
}

/* Fails with everything the run printed when its exit code is not `expected`. */
static void expect_exit(const struct ctl_result *result, int expected)
{
    ck_assert_msg(result->exit_code == expected,
                  "exit code %d, expected %d\n--- stdout:\n%s--- stderr:\n%s", result->exit_code,
                  expected, result->out, result->err);
}

static void expect_contains(const char *text, const char *wanted)
{
    ck_assert_msg(strstr(text, wanted) != NULL, "'%s' not found in:\n%s", wanted, text);
}

/* stdout as JSON; the test fails when it is not. */
static json_t *output_json(const struct ctl_result *result)
{
    json_error_t error;
    json_t *value = json_loads(result->out, JSON_DECODE_ANY, &error);

    ck_assert_msg(value != NULL, "stdout is not JSON (%s):\n%s", error.text, result->out);
    return value;
}

static json_int_t integer_at(const json_t *object, const char *key)
{
    json_t *value = json_object_get(object, key);

    ck_assert_msg(json_is_integer(value), "'%s' is not an integer", key);
    return json_integer_value(value);
}

static const char *string_at(const json_t *object, const char *key)
{
    json_t *value = json_object_get(object, key);

    ck_assert_msg(json_is_string(value), "'%s' is not a string", key);
    return json_string_value(value);
}

/* The device named `name` in a device_list array, or NULL. */
static json_t *find_named(json_t *list, const char *name)
{
    json_t *entry;
    size_t index;

    json_array_foreach (list, index, entry)
        if (strcmp(string_at(entry, "name"), name) == 0)
            return entry;
    return NULL;
}

static bool is_socket(const char *path)
{
    struct stat status;

    return stat(path, &status) == 0 && S_ISSOCK(status.st_mode);
}

static bool file_exists(const char *path)
{
    return access(path, F_OK) == 0;
}

static void setup(void)
{
    ck_assert_int_eq(daemon_harness_init(&harness, NULL), 0);
    ck_assert_int_eq(daemon_harness_start(&harness, NULL), 0);
}

static void teardown(void)
{
    result_clear();
    daemon_harness_fini(&harness);
}

/* --- Reading the daemon. ------------------------------------------------------------------ */

START_TEST(test_empty_daemon)
{
    json_t *value;
    char pid[32];

    expect_exit(ctl("list", NULL), EXIT_DONE);
    ck_assert_str_eq(last.out, "No devices.\n");
    ck_assert_str_eq(last.err, "");
    expect_exit(ctl("--json", "list", NULL), EXIT_DONE);
    value = output_json(&last);
    ck_assert(json_is_array(value));
    ck_assert_uint_eq(json_array_size(value), 0);
    json_decref(value);

    /* The global options work after the command too. */
    expect_exit(ctl("status", "--json", NULL), EXIT_DONE);
    value = output_json(&last);
    ck_assert_int_eq(integer_at(value, "pid"), harness.pid);
    ck_assert_int_eq(integer_at(json_object_get(value, "devices"), "total"), 0);
    ck_assert_int_ge(integer_at(value, "plugins"), 1);
    ck_assert_str_eq(string_at(value, "protocol"), "0.1");
    json_decref(value);

    expect_exit(ctl("status", NULL), EXIT_DONE);
    FORMAT(pid, "PID:               %d\n", (int)harness.pid);
    expect_contains(last.out, pid);
    expect_contains(last.out, "Devices:           0 (0 listening, 0 connected, 0 in error)\n");
    expect_contains(last.out, harness.admin_socket);
}
END_TEST

START_TEST(test_plugins)
{
    json_t *value, *testdev;
    char path[PATH_MAX];

    expect_exit(ctl("plugins", NULL), EXIT_DONE);
    ck_assert_msg(strncmp(last.out, "NAME ", 5) == 0, "header: %s", last.out);
    expect_contains(last.out, "  DEVICES  DESCRIPTION\n");
    expect_contains(last.out, "\ntestdev ");

    expect_exit(ctl("add", "p0", "--plugin", "testdev", NULL), EXIT_DONE);
    expect_exit(ctl("--json", "plugins", NULL), EXIT_DONE);
    value = output_json(&last);
    testdev = find_named(value, "testdev");
    ck_assert_ptr_nonnull(testdev);
    ck_assert_int_eq(integer_at(testdev, "devices"), 1);
    ck_assert_str_eq(string_at(testdev, "abi"), "1");
    FORMAT(path, "%s/testdev.so", harness.plugin_dir);
    ck_assert_str_eq(string_at(testdev, "path"), path);
    json_decref(value);
}
END_TEST

/* --- Changing the daemon. ----------------------------------------------------------------- */

START_TEST(test_add_info_reset_remove)
{
    char socket_path[PATH_MAX];
    json_t *value, *device;

    daemon_harness_device_socket(&harness, "t0", socket_path, sizeof(socket_path));
    expect_exit(ctl("add", "t0", "--plugin", "testdev", "--param", "ram_size=64K", "--param",
                    "msix_vectors=4", NULL),
                EXIT_DONE);
    expect_contains(last.out, "Added t0 (testdev) on ");
    expect_contains(last.out, socket_path);
    ck_assert(is_socket(socket_path));

    /* Parameters travel as strings; the plugin parses them. */
    expect_exit(ctl("--json", "info", "t0", NULL), EXIT_DONE);
    value = output_json(&last);
    ck_assert_str_eq(string_at(value, "state"), "listening");
    ck_assert_str_eq(string_at(value, "socket"), socket_path);
    ck_assert(json_is_false(json_object_get(value, "persistent")));
    device = json_object_get(json_object_get(value, "config"), "params");
    ck_assert_str_eq(string_at(device, "ram_size"), "64K");
    ck_assert_str_eq(string_at(device, "msix_vectors"), "4");
    json_decref(value);

    expect_exit(ctl("info", "t0", NULL), EXIT_DONE);
    expect_contains(last.out, "Name:              t0\n");
    expect_contains(last.out, "State:             listening\n");
    expect_contains(last.out, "Isolation:         process\n");
    expect_contains(last.out, "Restarts:          0\n");
    expect_contains(last.out, "Client:            none\n");
    expect_contains(last.out, "Configuration:\n  name: t0\n");
    expect_contains(last.out, "    ram_size: ");

    expect_exit(ctl("list", NULL), EXIT_DONE);
    /* The PID column is as wide as the widest process id. */
    ck_assert_msg(strncmp(last.out, "NAME  PLUGIN   STATE      ISOLATION  ", 37) == 0, "%s",
                  last.out);
    expect_contains(last.out, "  PID  RESTARTS  CLIENT  PERSISTENT  SOCKET\n");
    expect_contains(last.out, "\nt0    testdev  listening  process    ");
    expect_contains(last.out, "         0       -  no          ");

    expect_exit(ctl("reset", "t0", NULL), EXIT_DONE);
    ck_assert_str_eq(last.out, "Reset t0\n");
    expect_exit(ctl("--json", "reset", "t0", NULL), EXIT_DONE);
    value = output_json(&last);
    ck_assert_str_eq(string_at(value, "name"), "t0");
    json_decref(value);

    expect_exit(ctl("remove", "t0", NULL), EXIT_DONE);
    ck_assert_str_eq(last.out, "Removed t0\n");
    ck_assert_int_eq(daemon_harness_wait_socket(&harness, socket_path, false, TIMEOUT), 0);
    expect_exit(ctl("--json", "list", NULL), EXIT_DONE);
    ck_assert_str_eq(last.out, "[]\n");
}
END_TEST

/* Columns widen with their longest cell, and nothing trails a line. */
START_TEST(test_list_alignment)
{
    /* The longest name allowed: 64 characters. */
    static const char long_name[] =
        "a-device-name-that-is-as-long-as-names-go.0123456789_ABCDEFGHIJK";
    char socket_path[PATH_MAX];
    const char *line, *end;

    ck_assert_uint_eq(strlen(long_name), 64);
    /* Its default socket path would not fit a socket address under the test directory. */
    FORMAT(socket_path, "%s/long.sock", harness.directory);
    expect_exit(ctl("add", "x", "--plugin", "testdev", NULL), EXIT_DONE);
    expect_exit(ctl("add", long_name, "--plugin", "testdev", "--socket-path", socket_path, NULL),
                EXIT_DONE);
    ck_assert(is_socket(socket_path));
    expect_exit(ctl("list", NULL), EXIT_DONE);
    ck_assert_ptr_nonnull(strstr(last.out, long_name));
    /* Each line has PLUGIN at the same column: after the longest name and two blanks. */
    for (line = last.out; *line != '\0'; line = end + 1) {
        end = strchr(line, '\n');
        ck_assert_ptr_nonnull(end);
        ck_assert_msg(end[-1] != ' ', "trailing blank in: %.*s", (int)(end - line), line);
        ck_assert_msg(strncmp(line + 64, "  ", 2) == 0 && line[66] != ' ', "misaligned: %.*s",
                      (int)(end - line), line);
    }
}
END_TEST

START_TEST(test_refusals)
{
    json_t *value, *error;

    expect_exit(ctl("add", "t0", "--plugin", "testdev", NULL), EXIT_DONE);

    expect_exit(ctl("add", "t0", "--plugin", "testdev", NULL), EXIT_REFUSED);
    ck_assert_str_eq(last.out, "");
    ck_assert_str_eq(last.err, "vfio-userctl: device 't0' already exists\n");

    expect_exit(ctl("add", "t1", "--plugin", "no-such-plugin", NULL), EXIT_REFUSED);
    ck_assert_str_eq(last.err, "vfio-userctl: no plugin named 'no-such-plugin'\n");

    /* The plugin's own message, printed as the daemon wrote it. */
    expect_exit(ctl("add", "t1", "--plugin", "testdev", "--param", "ram_size=3", NULL),
                EXIT_REFUSED);
    expect_contains(last.err, "vfio-userctl: device_add: params.ram_size: ");

    expect_exit(ctl("info", "nothing", NULL), EXIT_REFUSED);
    ck_assert_str_eq(last.err, "vfio-userctl: no device named 'nothing'\n");
    expect_exit(ctl("reset", "nothing", NULL), EXIT_REFUSED);
    expect_exit(ctl("remove", "nothing", NULL), EXIT_REFUSED);

    /* For scripts: the error object on stdout, exit 1. */
    expect_exit(ctl("--json", "info", "nothing", NULL), EXIT_REFUSED);
    value = output_json(&last);
    error = json_object_get(value, "error");
    ck_assert_int_eq(integer_at(error, "code"), -32001);
    ck_assert_str_eq(string_at(error, "message"), "no device named 'nothing'");
    ck_assert_str_eq(string_at(json_object_get(error, "data"), "field"), "name");
    json_decref(value);

    expect_exit(ctl("--json", "add", "t1", "--plugin", "no-such-plugin", NULL), EXIT_REFUSED);
    value = output_json(&last);
    ck_assert_int_eq(integer_at(json_object_get(value, "error"), "code"), -32003);
    json_decref(value);

    /* A name the daemon's rules forbid reaches it and is refused there. */
    expect_exit(ctl("add", ".hidden", "--plugin", "testdev", NULL), EXIT_REFUSED);
    expect_exit(ctl("--json", "list", NULL), EXIT_DONE);
    value = output_json(&last);
    ck_assert_uint_eq(json_array_size(value), 1);
    json_decref(value);
}
END_TEST

/* --- Persistence. ------------------------------------------------------------------------- */

START_TEST(test_persist_survives_restart)
{
    char file[PATH_MAX];
    json_t *value, *device;

    FORMAT(file, "%s/p0.yaml", harness.devices_dir);
    expect_exit(
        ctl("add", "p0", "--plugin", "testdev", "--param", "ram_size=16K", "--persist", NULL),
        EXIT_DONE);
    expect_contains(last.out, "Added p0 (testdev, persistent) on ");
    ck_assert(file_exists(file));
    expect_exit(ctl("add", "gone", "--plugin", "testdev", NULL), EXIT_DONE);

    ck_assert_int_eq(daemon_harness_stop(&harness, SIGTERM), 0);
    expect_exit(ctl("list", NULL), EXIT_UNREACHABLE);
    ck_assert_int_eq(daemon_harness_start(&harness, NULL), 0);

    expect_exit(ctl("--json", "list", NULL), EXIT_DONE);
    value = output_json(&last);
    ck_assert_uint_eq(json_array_size(value), 1);
    device = find_named(value, "p0");
    ck_assert_ptr_nonnull(device);
    ck_assert(json_is_true(json_object_get(device, "persistent")));
    ck_assert_str_eq(
        string_at(json_object_get(json_object_get(device, "config"), "params"), "ram_size"), "16K");
    json_decref(value);

    /* A device its file would bring back is removed only with --persist. */
    expect_exit(ctl("remove", "p0", NULL), EXIT_REFUSED);
    expect_contains(last.err, "vfio-userctl remove p0 --persist\n");
    ck_assert(file_exists(file));
    expect_exit(ctl("remove", "p0", "--persist", NULL), EXIT_DONE);
    ck_assert_str_eq(last.out, "Removed p0 (persistent)\n");
    ck_assert(!file_exists(file));

    ck_assert_int_eq(daemon_harness_stop(&harness, SIGTERM), 0);
    ck_assert_int_eq(daemon_harness_start(&harness, NULL), 0);
    expect_exit(ctl("list", NULL), EXIT_DONE);
    ck_assert_str_eq(last.out, "No devices.\n");
}
END_TEST

START_TEST(test_add_from_file)
{
    char directory[PATH_MAX], path[PATH_MAX], persisted[PATH_MAX], expected[PATH_MAX + 64];
    json_t *value;

    ck_assert_int_eq(daemon_harness_make_directory(&harness, "mine", directory, sizeof(directory)),
                     0);
    ck_assert_int_eq(daemon_harness_write_file(directory, "fromfile.yaml",
                                               "plugin: testdev\nparams:\n  ram_size: 32K\n"
                                               "  msix_vectors: 2\n"),
                     0);
    FORMAT(path, "%s/fromfile.yaml", directory);
    FORMAT(persisted, "%s/fromfile.yaml", harness.devices_dir);

    /* The name defaults to the file's stem; the file's types are kept. */
    expect_exit(ctl("--json", "add", "-f", path, "--persist", NULL), EXIT_DONE);
    value = output_json(&last);
    ck_assert_str_eq(string_at(value, "name"), "fromfile");
    ck_assert_int_eq(
        integer_at(json_object_get(json_object_get(value, "config"), "params"), "msix_vectors"), 2);
    json_decref(value);
    ck_assert(file_exists(persisted));

    /* A refusal points at the line of the file that set the refused value. */
    ck_assert_int_eq(daemon_harness_write_file(directory, "small.yaml",
                                               "plugin: testdev\nparams:\n  ram_size: 3\n"),
                     0);
    FORMAT(path, "%s/small.yaml", directory);
    expect_exit(ctl("add", "--file", path, NULL), EXIT_REFUSED);
    FORMAT(expected, "vfio-userctl: %s:3:13: device_add: params.ram_size: ", path);
    expect_contains(last.err, expected);

    /* A file the validator rejects is not sent: usage error, daemon untouched. */
    ck_assert_int_eq(daemon_harness_write_file(directory, "bad.yaml",
                                               "plugin: testdev\nsocket:\n  mode: \"0999\"\n"),
                     0);
    FORMAT(path, "%s/bad.yaml", directory);
    expect_exit(ctl("add", "-f", path, NULL), EXIT_USAGE);
    FORMAT(expected, "vfio-userctl: %s:3:9: socket.mode: ", path);
    expect_contains(last.err, expected);
    ck_assert_int_eq(daemon_harness_write_file(directory, "broken.yaml", "plugin: [unclosed\n"), 0);
    FORMAT(path, "%s/broken.yaml", directory);
    expect_exit(ctl("add", "-f", path, NULL), EXIT_USAGE);
    expect_contains(last.err, path);
    FORMAT(path, "%s/missing.yaml", directory);
    expect_exit(ctl("add", "-f", path, NULL), EXIT_USAGE);
    expect_exit(ctl("add", "-f", directory, NULL), EXIT_USAGE);

    expect_exit(ctl("--json", "list", NULL), EXIT_DONE);
    value = output_json(&last);
    ck_assert_uint_eq(json_array_size(value), 1);
    json_decref(value);
}
END_TEST

/* --- Usage errors and help. --------------------------------------------------------------- */

START_TEST(test_usage_errors)
{
    static const char *const cases[][8] = {
        {NULL},
        {"nosuchcommand", NULL},
        {"list", "extra", NULL},
        {"list", "--bogus", NULL},
        {"info", NULL},
        {"info", "a", "b", NULL},
        {"add", "x", NULL},
        {"add", "--plugin", "testdev", NULL},
        {"add", "x", "--plugin", "testdev", "--param", "novalue", NULL},
        {"add", "x", "--plugin", "testdev", "--param", "=v", NULL},
        {"add", "x", "--plugin", "testdev", "--param", "k=1", "--param", "k=2"},
        {"add", "-f", "x.yaml", "name", NULL},
        {"add", "-f", "x.yaml", "--plugin", "testdev", NULL},
        {"add", "x", "--plugin", NULL},
        {"remove", NULL},
        {"reset", "a", "b", NULL},
        {"probe", NULL},
        {"--timeout", "0", "list", NULL},
        {"--timeout", "-1", "list", NULL},
        {"--timeout", "soon", "list", NULL},
        {"--timeout", "nan", "list", NULL},
        {"list", "--timeout", "1e9", NULL},
        {"-s", "", "list", NULL},
        {"help", "nosuchcommand", NULL},
    };
    const char *arguments[12];
    json_t *value;

    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        size_t count = 0;
        arguments[count++] = "-s";
        arguments[count++] = harness.admin_socket;
        for (size_t i = 0; i < 8 && cases[c][i] != NULL; i++)
            arguments[count++] = cases[c][i];
        arguments[count] = NULL;
        run_argv(arguments);
        ck_assert_msg(last.exit_code == EXIT_USAGE, "case %zu (%s): exit %d, stderr: %s", c,
                      cases[c][0] != NULL ? cases[c][0] : "no command", last.exit_code, last.err);
        ck_assert_msg(strncmp(last.err, "vfio-userctl: ", 14) == 0, "case %zu: %s", c, last.err);
        ck_assert_str_eq(last.out, "");
    }
    /* Nothing reached the daemon. */
    expect_exit(ctl("--json", "list", NULL), EXIT_DONE);
    value = output_json(&last);
    ck_assert_uint_eq(json_array_size(value), 0);
    json_decref(value);

    expect_exit(ctl_bare("--help", NULL), EXIT_DONE);
    expect_contains(last.out, "Usage: vfio-userctl [OPTIONS] COMMAND");
    expect_contains(last.out, "  probe DEVICE_SOCKET    ");
    expect_exit(ctl_bare("add", "--help", NULL), EXIT_DONE);
    expect_contains(last.out, "add -f FILE.yaml [--persist]");
    expect_contains(last.out, "--socket-mode");
    expect_exit(ctl_bare("help", "remove", NULL), EXIT_DONE);
    expect_contains(last.out, "remove NAME [--persist]");
    expect_exit(ctl_bare("--version", NULL), EXIT_DONE);
    expect_contains(last.out, "vfio-userctl ");
}
END_TEST

/* --- Fake admin servers. ------------------------------------------------------------------ */

struct fake_admin {
    int listen_fd;
    pthread_t thread;
    char path[PATH_MAX];
    const char *reply; /* sent after the request; NULL: none */
    bool close_at_once;
};

static int listen_at(const char *path)
{
    struct sockaddr_un address = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

    ck_assert_int_ge(fd, 0);
    ck_assert_uint_lt(strlen(path), sizeof(address.sun_path));
    strcpy(address.sun_path, path);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&address, sizeof(address)), 0);
    ck_assert_int_eq(listen(fd, 4), 0);
    return fd;
}

/* Waits up to the run limit for `fd` to be readable; false on timeout. */
static bool readable(int fd)
{
    struct pollfd entry = {.fd = fd, .events = POLLIN};

    return poll(&entry, 1, CTL_RUN_LIMIT_MS) == 1;
}

/* Serves one connection: one reply (or silence until the client goes), then closes it. */
static void *fake_admin_serve(void *argument)
{
    struct fake_admin *fake = argument;
    char buffer[4096];
    int fd;

    if (!readable(fake->listen_fd))
        return NULL;
    fd = accept4(fake->listen_fd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0)
        return NULL;
    if (!fake->close_at_once && readable(fd) && read(fd, buffer, sizeof(buffer)) > 0) {
        if (fake->reply != NULL) {
            ssize_t ignored = write(fd, fake->reply, strlen(fake->reply));
            (void)ignored;
        } else {
            /* Silent: hold the connection until the client gives up. */
            while (readable(fd) && read(fd, buffer, sizeof(buffer)) > 0)
                continue;
        }
    }
    close(fd);
    return NULL;
}

static void fake_admin_start(struct fake_admin *fake, const char *reply, bool close_at_once)
{
    memset(fake, 0, sizeof(*fake));
    FORMAT(fake->path, "%s/fake-admin.sock", harness.directory);
    unlink(fake->path);
    fake->reply = reply;
    fake->close_at_once = close_at_once;
    fake->listen_fd = listen_at(fake->path);
    ck_assert_int_eq(pthread_create(&fake->thread, NULL, fake_admin_serve, fake), 0);
}

static void fake_admin_stop(struct fake_admin *fake)
{
    pthread_join(fake->thread, NULL);
    close(fake->listen_fd);
    unlink(fake->path);
}

/* Runs `list` (with --json when asked) against a fake admin server. */
static struct ctl_result *list_from_fake(const char *reply, bool close_at_once, bool json,
                                         const char *timeout)
{
    struct fake_admin fake;

    fake_admin_start(&fake, reply, close_at_once);
    ctl_bare("-s", fake.path, "--timeout", timeout, json ? "--json" : "list", json ? "list" : NULL,
             NULL);
    fake_admin_stop(&fake);
    return &last;
}

START_TEST(test_unreachable)
{
    char path[PATH_MAX];
    long long started;

    FORMAT(path, "%s/no-such.sock", harness.directory);
    expect_exit(ctl_bare("-s", path, "list", NULL), EXIT_UNREACHABLE);
    expect_contains(last.err, "cannot connect to ");
    expect_contains(last.err, path);
    expect_exit(ctl_bare("-s", path, "--json", "status", NULL), EXIT_UNREACHABLE);
    ck_assert_str_eq(last.out, "");

    /* A file that is no socket, a socket nobody listens on. */
    expect_exit(ctl_bare("-s", harness.log_path, "list", NULL), EXIT_UNREACHABLE);
    FORMAT(path, "%s/dead.sock", harness.directory);
    close(listen_at(path));
    expect_exit(ctl_bare("-s", path, "list", NULL), EXIT_UNREACHABLE);

    /* A path too long for a socket address is reported, not truncated. */
    memset(path, 'a', 200);
    path[0] = '/';
    path[200] = '\0';
    expect_exit(ctl_bare("-s", path, "list", NULL), EXIT_UNREACHABLE);
    expect_contains(last.err, "too long");

    /* A server that never answers: --timeout bounds the wait. */
    started = (long long)test_now_ms();
    expect_exit(list_from_fake(NULL, false, false, "0.3"), EXIT_UNREACHABLE);
    ck_assert_int_lt((long long)test_now_ms() - started, 5000);
    expect_contains(last.err, "no answer from ");
}
END_TEST

START_TEST(test_hostile_admin_replies)
{
    static const struct {
        const char *reply;
        const char *message;
    } cases[] = {
        {"this is not JSON\n", "not JSON"},
        {"{\"jsonrpc\":\"2.0\",\"id\":999,\"result\":[]}\n", "another request"},
        {"{\"jsonrpc\":\"1.0\",\"id\":1,\"result\":[]}\n", "not a JSON-RPC 2.0 response"},
        {"{\"jsonrpc\":\"2.0\",\"id\":1}\n", "not a JSON-RPC 2.0 response"},
        {"{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":[],\"error\":{}}\n", "not a JSON-RPC"},
        {"{\"jsonrpc\":\"2.0\",\"id\":1,\"error\":{\"code\":\"x\"}}\n", "no code and message"},
        {"{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"not\":\"a list\"}}\n", "unexpected shape"},
        {"{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":[]", "closed the connection"},
        {"[]\n", "not a JSON-RPC 2.0 response"},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        list_from_fake(cases[i].reply, false, false, "5");
        ck_assert_msg(last.exit_code == EXIT_UNREACHABLE, "case %zu: exit %d, stderr %s", i,
                      last.exit_code, last.err);
        expect_contains(last.err, cases[i].message);
        ck_assert_str_eq(last.out, "");
    }
    expect_exit(list_from_fake(NULL, true, false, "5"), EXIT_UNREACHABLE);
    expect_contains(last.err, "closed the connection without answering");

    /* Text from the daemon cannot drive the terminal. */
    list_from_fake("{\"jsonrpc\":\"2.0\",\"id\":1,\"error\":{\"code\":-32001,"
                   "\"message\":\"bad \\u001b[2J\\u0007 news\"}}\n",
                   false, false, "5");
    expect_exit(&last, EXIT_REFUSED);
    ck_assert_str_eq(last.err, "vfio-userctl: bad \\x1b[2J\\x07 news\n");
    list_from_fake("{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":[{\"name\":\"n\\u001b]0;x\","
                   "\"plugin\":7,\"socket\":\"/s\\n\"}]}\n",
                   false, false, "5");
    expect_exit(&last, EXIT_DONE);
    ck_assert_ptr_null(strchr(last.out, '\x1b'));
    expect_contains(last.out, "n\\x1b]0;x");
    expect_contains(last.out, "/s\\x0a\n");

    /* A daemon error with a null id (it could not parse the request) is still an answer. */
    list_from_fake("{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32700,"
                   "\"message\":\"parse error\"}}\n",
                   false, true, "5");
    expect_exit(&last, EXIT_REFUSED);
    expect_contains(last.out, "\"code\": -32700");
}
END_TEST

/* --- probe. ------------------------------------------------------------------------------- */

/* MESSAGE_COUNT[command] of a testdev, read through a fresh connection. */
static uint64_t message_count(struct vu_client *client, unsigned command)
{
    uint64_t count = 0;

    ck_assert_int_eq(
        vu_client_region_read(client, 0, TESTDEV_REG_MESSAGE_COUNT + 8 * command, &count, 8), 0);
    return count;
}

static json_t *capability_with_id(json_t *pci, json_int_t id)
{
    json_t *capability;
    size_t index;

    json_array_foreach (json_object_get(pci, "capabilities"), index, capability)
        if (integer_at(capability, "id") == id)
            return capability;
    return NULL;
}

START_TEST(test_probe_testdev)
{
    static const unsigned changing[] = {
        VU_COMMAND_DMA_MAP,      VU_COMMAND_DMA_UNMAP,    VU_COMMAND_DEVICE_SET_IRQS,
        VU_COMMAND_REGION_WRITE, VU_COMMAND_DEVICE_RESET, VU_COMMAND_REGION_WRITE_MULTI,
    };
    char socket_path[PATH_MAX];
    json_t *report, *regions, *region, *areas, *pci, *capability, *bar;
    struct vu_client *client;
    struct vu_client_options options;

    daemon_harness_device_socket(&harness, "pd", socket_path, sizeof(socket_path));
    expect_exit(ctl("add", "pd", "--plugin", "testdev", "--param", "ram_size=64K", "--param",
                    "msix_vectors=16", NULL),
                EXIT_DONE);

    expect_exit(ctl_bare("probe", socket_path, NULL), EXIT_DONE);
    expect_contains(last.out, "Protocol:      vfio-user 0.1\n");
    expect_contains(last.out, "    0  BAR0     4 KiB  read write  ");
    expect_contains(last.out, "    2  BAR2    64 KiB  read write mmap  0x1000-0xffff\n");
    expect_contains(last.out, "    2  MSI-X     16  eventfd");
    expect_contains(last.out, "  1234:7464 (rev 01), class ff0000: Unassigned class\n");
    expect_contains(last.out,
                    "  Region 0: Memory at 00000000 (32-bit, non-prefetchable) [size=4 KiB]\n");
    expect_contains(last.out, "(64-bit, prefetchable) [size=64 KiB]\n");
    expect_contains(last.out, "MSI-X: Enable- Count=16 Masked-\n");
    expect_contains(last.out, "Vector table: BAR=4 offset=");
    expect_contains(last.out, "Express (v2) Endpoint");
    expect_contains(last.out, "Vendor Specific Information: Len=0b <5645445400000100>\n");
    ck_assert_ptr_null(strstr(last.out, "Problems:"));
    ck_assert_str_eq(last.err, "");

    expect_exit(ctl_bare("--json", "probe", socket_path, NULL), EXIT_DONE);
    report = output_json(&last);
    ck_assert_str_eq(string_at(report, "socket"), socket_path);
    ck_assert_int_eq(integer_at(json_object_get(report, "version"), "major"), 0);
    ck_assert(json_is_true(json_object_get(json_object_get(report, "device"), "pci")));
    regions = json_object_get(report, "regions");
    region = json_array_get(regions, 0);
    ck_assert_str_eq(string_at(region, "name"), "BAR0");
    ck_assert_int_eq(integer_at(region, "size"), 4096);
    ck_assert(json_is_null(json_object_get(region, "sparse_areas")));
    region = json_array_get(regions, 2);
    ck_assert_int_eq(integer_at(region, "size"), 65536);
    ck_assert(json_is_true(json_object_get(region, "mmap")));
    areas = json_object_get(region, "sparse_areas");
    ck_assert_uint_eq(json_array_size(areas), 1);
    ck_assert_int_eq(integer_at(json_array_get(areas, 0), "offset"), 4096);
    ck_assert_int_eq(integer_at(json_array_get(areas, 0), "size"), 61440);
    ck_assert_int_eq(integer_at(json_array_get(regions, 7), "size"), 4096);

    pci = json_object_get(report, "pci");
    ck_assert_int_eq(integer_at(pci, "vendor_id"), TESTDEV_VENDOR);
    ck_assert_int_eq(integer_at(pci, "device_id"), TESTDEV_DEVICE);
    ck_assert_int_eq(integer_at(pci, "config_size"), 4096);
    ck_assert_int_eq(integer_at(pci, "interrupt_pin"), 1);
    bar = json_array_get(json_object_get(pci, "bars"), 0);
    ck_assert_int_eq(integer_at(bar, "index"), 0);
    ck_assert_int_eq(integer_at(bar, "size"), 4096);
    ck_assert_int_eq(integer_at(bar, "width"), 32);
    bar = json_array_get(json_object_get(pci, "bars"), 1);
    ck_assert_int_eq(integer_at(bar, "index"), 2);
    ck_assert_int_eq(integer_at(bar, "width"), 64);
    ck_assert(json_is_true(json_object_get(bar, "prefetchable")));
    capability = capability_with_id(pci, PCI_CAP_ID_MSIX);
    ck_assert_ptr_nonnull(capability);
    ck_assert_int_eq(integer_at(capability, "table_size"), 16);
    ck_assert_int_eq(integer_at(json_object_get(capability, "table"), "bar"), 4);
    ck_assert_int_eq(integer_at(json_object_get(capability, "pba"), "bar"), 4);
    ck_assert(json_is_false(json_object_get(capability, "enable")));
    capability = capability_with_id(pci, PCI_CAP_ID_MSI);
    ck_assert_ptr_nonnull(capability);
    ck_assert(json_is_true(json_object_get(capability, "address_64bit")));
    ck_assert(json_is_true(json_object_get(capability, "per_vector_mask")));
    capability = capability_with_id(pci, PCI_CAP_ID_EXP);
    ck_assert_ptr_nonnull(capability);
    ck_assert_str_eq(string_at(capability, "device_type"), "endpoint");
    ck_assert_ptr_nonnull(capability_with_id(pci, PCI_CAP_ID_PM));
    ck_assert_ptr_nonnull(capability_with_id(pci, PCI_CAP_ID_VNDR));
    ck_assert(json_is_array(json_object_get(pci, "extended_capabilities")));
    ck_assert_uint_eq(json_array_size(json_object_get(report, "problems")), 0);
    json_decref(report);

    /* Probing only read: the device counted no command that changes anything. */
    vu_client_options_default(&options);
    ck_assert_int_eq(vu_client_connect(socket_path, &options, &client), 0);
    for (size_t i = 0; i < sizeof(changing) / sizeof(changing[0]); i++)
        ck_assert_msg(message_count(client, changing[i]) == 0, "command %u was sent", changing[i]);
    ck_assert_uint_eq(message_count(client, VU_COMMAND_VERSION), 3);
    ck_assert_uint_ge(message_count(client, VU_COMMAND_DEVICE_GET_REGION_INFO), 18);

    /* While a client holds the device, probe says so and leaves it alone. */
    expect_exit(ctl_bare("probe", socket_path, NULL), EXIT_UNREACHABLE);
    expect_contains(last.err, "one client at a time");
    ck_assert_uint_eq(message_count(client, VU_COMMAND_VERSION), 3);
    vu_client_close(client);

    FORMAT(socket_path, "%s/nothing.sock", harness.directory);
    expect_exit(ctl_bare("probe", socket_path, NULL), EXIT_UNREACHABLE);
    expect_contains(last.err, "cannot connect to ");
}
END_TEST

/* A vfio-user device that follows the protocol but describes itself in hostile ways. */
enum fake_device_mode {
    FAKE_DEVICE_HOSTILE_CONFIG, /* loops, bad pointers, absurd counts */
    FAKE_DEVICE_WRONG_ID,       /* answers DEVICE_GET_INFO with another message id */
};

struct fake_device {
    int listen_fd;
    pthread_t thread;
    char path[PATH_MAX];
    enum fake_device_mode mode;
    uint8_t config[4096];
};

static bool read_exactly(int fd, void *buffer, size_t length)
{
    size_t done = 0;

    while (done < length) {
        ssize_t got;
        if (!readable(fd))
            return false;
        got = read(fd, (char *)buffer + done, length - done);
        if (got <= 0)
            return false;
        done += (size_t)got;
    }
    return true;
}

static bool send_reply(int fd, const struct vu_header *request, uint16_t message_id,
                       const void *payload, size_t length, uint32_t error)
{
    uint8_t message[VU_HEADER_SIZE + 4096 + 64];

    if (length > sizeof(message) - VU_HEADER_SIZE)
        return false;
    vu_wire_encode_header(message, message_id, request->command,
                          (uint32_t)(VU_HEADER_SIZE + length),
                          VU_FLAGS_TYPE_REPLY | (error != 0 ? VU_FLAGS_ERROR : 0), error);
    if (length > 0)
        memcpy(message + VU_HEADER_SIZE, payload, length);
    return write(fd, message, VU_HEADER_SIZE + length) == (ssize_t)(VU_HEADER_SIZE + length);
}

static bool fake_device_answer(struct fake_device *fake, int fd, const struct vu_header *header,
                               const uint8_t *payload, size_t length)
{
    static const char version_json[] = "{\"capabilities\":{\"max_msg_fds\":1}}";
    uint8_t reply[4096 + 64];

    switch (header->command) {
    case VU_COMMAND_VERSION: {
        struct vu_version version = {.major = 0, .minor = 1};
        memcpy(reply, &version, sizeof(version));
        memcpy(reply + sizeof(version), version_json, sizeof(version_json));
        return send_reply(fd, header, header->message_id, reply,
                          sizeof(version) + sizeof(version_json), 0);
    }
    case VU_COMMAND_DEVICE_GET_INFO: {
        struct vu_device_info info = {.argsz = sizeof(info),
                                      .flags = VFIO_DEVICE_FLAGS_PCI,
                                      .num_regions = 1000,
                                      .num_irqs = 1};
        uint16_t id = header->message_id;
        if (fake->mode == FAKE_DEVICE_WRONG_ID)
            id = (uint16_t)(id + 7);
        return send_reply(fd, header, id, &info, sizeof(info), 0);
    }
    case VU_COMMAND_DEVICE_GET_REGION_INFO: {
        struct vfio_region_info info;
        if (length < sizeof(info))
            return send_reply(fd, header, header->message_id, NULL, 0, EINVAL);
        memcpy(&info, payload, sizeof(info));
        info = (struct vfio_region_info){.argsz = sizeof(info), .index = info.index};
        if (info.index == 0)
            info.size = 3000; /* not a power of two */
        else if (info.index == VFIO_PCI_CONFIG_REGION_INDEX)
            info.size = sizeof(fake->config);
        if (info.size != 0)
            info.flags = VFIO_REGION_INFO_FLAG_READ;
        return send_reply(fd, header, header->message_id, &info, sizeof(info), 0);
    }
    case VU_COMMAND_DEVICE_GET_IRQ_INFO: {
        struct vfio_irq_info info;
        if (length < sizeof(info))
            return send_reply(fd, header, header->message_id, NULL, 0, EINVAL);
        memcpy(&info, payload, sizeof(info));
        info.flags = VFIO_IRQ_INFO_EVENTFD;
        info.count = 1;
        return send_reply(fd, header, header->message_id, &info, sizeof(info), 0);
    }
    case VU_COMMAND_REGION_READ: {
        struct vu_region_access access;
        if (length < sizeof(access))
            return send_reply(fd, header, header->message_id, NULL, 0, EINVAL);
        memcpy(&access, payload, sizeof(access));
        if (access.region != VFIO_PCI_CONFIG_REGION_INDEX || access.count > 4096 ||
            access.offset > sizeof(fake->config) - access.count)
            return send_reply(fd, header, header->message_id, NULL, 0, EINVAL);
        memcpy(reply, &access, sizeof(access));
        memcpy(reply + sizeof(access), fake->config + access.offset, access.count);
        return send_reply(fd, header, header->message_id, reply, sizeof(access) + access.count, 0);
    }
    default:
        /* Anything else would change the device: the test fails on it. */
        return false;
    }
}

/* Serves one client; a command probe must not send ends the connection. */
static void *fake_device_serve(void *argument)
{
    struct fake_device *fake = argument;
    uint8_t buffer[VU_HEADER_SIZE + 8192];
    int fd;

    if (!readable(fake->listen_fd))
        return NULL;
    fd = accept4(fake->listen_fd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0)
        return NULL;
    for (;;) {
        struct vu_header header;
        size_t length;

        if (!read_exactly(fd, buffer, VU_HEADER_SIZE) ||
            vu_wire_decode_header(buffer, VU_HEADER_SIZE, &header) < 0 ||
            header.message_size > sizeof(buffer))
            break;
        length = header.message_size - VU_HEADER_SIZE;
        if (!read_exactly(fd, buffer + VU_HEADER_SIZE, length) ||
            !fake_device_answer(fake, fd, &header, buffer + VU_HEADER_SIZE, length))
            break;
    }
    close(fd);
    return NULL;
}

static void put16(uint8_t *config, size_t offset, uint16_t value)
{
    config[offset] = (uint8_t)value;
    config[offset + 1] = (uint8_t)(value >> 8);
}

static void put32(uint8_t *config, size_t offset, uint32_t value)
{
    put16(config, offset, (uint16_t)value);
    put16(config, offset + 2, (uint16_t)(value >> 16));
}

static void fake_device_start(struct fake_device *fake, enum fake_device_mode mode)
{
    uint8_t *config = fake->config;

    memset(fake, 0, sizeof(*fake));
    fake->mode = mode;
    put16(config, PCI_VENDOR_ID, 0xabcd);
    put16(config, PCI_DEVICE_ID, 0x0042);
    put16(config, PCI_STATUS, PCI_STATUS_CAP_LIST);
    config[PCI_INTERRUPT_PIN] = 9;
    config[PCI_CAPABILITY_LIST] = 0x40;
    /* MSI-X whose table sits in a BAR that cannot exist, then PM pointing back at it. */
    config[0x40] = PCI_CAP_ID_MSIX;
    config[0x41] = 0x50;
    put16(config, 0x42, 7);
    put32(config, 0x44, 7);
    put32(config, 0x48, 0x1000);
    config[0x50] = PCI_CAP_ID_PM;
    config[0x51] = 0xf8;
    /* A vendor capability claiming to run past the end, then back to the first. */
    config[0xf8] = PCI_CAP_ID_VNDR;
    config[0xf9] = 0x40;
    config[0xfa] = 0x20;
    /* An extended capability that names itself as the next one. */
    put32(config, 0x100, PCI_EXT_CAP_ID_ERR | 1u << 16 | 0x100u << 20);
    FORMAT(fake->path, "%s/fake-device.sock", harness.directory);
    unlink(fake->path);
    fake->listen_fd = listen_at(fake->path);
    ck_assert_int_eq(pthread_create(&fake->thread, NULL, fake_device_serve, fake), 0);
}

static void fake_device_stop(struct fake_device *fake)
{
    pthread_join(fake->thread, NULL);
    close(fake->listen_fd);
    unlink(fake->path);
}

static bool has_problem(json_t *problems, const char *text)
{
    json_t *problem;
    size_t index;

    json_array_foreach (problems, index, problem)
        if (strstr(json_string_value(problem), text) != NULL)
            return true;
    return false;
}

START_TEST(test_probe_hostile_device)
{
    static const char *const findings[] = {
        "claims 1000 regions",
        "capability list loops (back to 0x40)",
        "MSI-X table: BIR 7 names no BAR",
        "extended capability list loops (back to 0x100)",
        "BAR0: region size 3000 is not a power of two",
        "interrupt pin 9",
        "Vendor Specific capability at 0xf8: its 32 bytes run past",
    };
    struct fake_device fake;
    json_t *report, *problems, *pci;

    fake_device_start(&fake, FAKE_DEVICE_HOSTILE_CONFIG);
    expect_exit(ctl_bare("--json", "probe", fake.path, NULL), EXIT_DONE);
    fake_device_stop(&fake);
    report = output_json(&last);
    problems = json_object_get(report, "problems");
    for (size_t i = 0; i < sizeof(findings) / sizeof(findings[0]); i++)
        ck_assert_msg(has_problem(problems, findings[i]), "'%s' not reported:\n%s", findings[i],
                      last.out);
    /* At most 64 regions were asked for, whatever the device claimed. */
    ck_assert_uint_eq(json_array_size(json_object_get(report, "regions")), 64);
    pci = json_object_get(report, "pci");
    ck_assert_int_eq(integer_at(pci, "vendor_id"), 0xabcd);
    ck_assert_uint_eq(json_array_size(json_object_get(pci, "capabilities")), 3);
    ck_assert_uint_eq(json_array_size(json_object_get(pci, "extended_capabilities")), 1);
    json_decref(report);

    fake_device_start(&fake, FAKE_DEVICE_HOSTILE_CONFIG);
    expect_exit(ctl_bare("probe", fake.path, NULL), EXIT_DONE);
    fake_device_stop(&fake);
    expect_contains(last.out, "  abcd:0042 (rev 00), class 000000: Unclassified device\n");
    expect_contains(last.out, "  Capabilities: [40] MSI-X: Enable- Count=8 Masked-\n");
    expect_contains(last.out, "  Interrupt: pin 9 (invalid)\n");
    expect_contains(last.out, "\nProblems:\n  ");

    /* A reply to another message ends the probe with exit 1. */
    fake_device_start(&fake, FAKE_DEVICE_WRONG_ID);
    expect_exit(ctl_bare("probe", fake.path, NULL), EXIT_REFUSED);
    fake_device_stop(&fake);
    expect_contains(last.err, "DEVICE_GET_INFO: the device's reply breaks the protocol");
    ck_assert_str_eq(last.out, "");
}
END_TEST

/* --- Bash completion. --------------------------------------------------------------------- */

/* What the completion offers for the words after "vfio-userctl -s SOCKET". */
static struct ctl_result *complete_words(const char *words)
{
    char script[8192], completion[PATH_MAX], binary[PATH_MAX];
    const char *source = daemon_harness_source_dir();
    pid_t child;
    int status, out_pipe[2];
    struct capture capture = {.fd = -1};

    ck_assert_ptr_nonnull(source);
    FORMAT(completion, "%s/ctl/vfio-userctl.bash-completion", source);
    FORMAT(binary, "%s/vfio-userctl", daemon_harness_build_dir());
    FORMAT(script,
           "source '%s' || exit 9\n"
           "COMP_WORDS=('%s' -s '%s' %s)\n"
           "COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))\n"
           "COMP_LINE=\"${COMP_WORDS[*]}\"; COMP_POINT=${#COMP_LINE}\n"
           "_vfio_userctl vfio-userctl \"${COMP_WORDS[COMP_CWORD]}\" "
           "\"${COMP_WORDS[COMP_CWORD-1]}\"\n"
           "printf '%%s\\n' \"${COMPREPLY[@]}\" | sort\n",
           completion, binary, harness.admin_socket, words);
    result_clear();
    ck_assert_int_eq(pipe2(out_pipe, O_CLOEXEC), 0);
    child = fork();
    ck_assert_int_ge(child, 0);
    if (child == 0) {
        if (dup2(out_pipe[1], STDOUT_FILENO) < 0)
            _exit(127);
        execl("/bin/bash", "bash", "-c", script, (char *)NULL);
        _exit(127);
    }
    close(out_pipe[1]);
    capture.fd = out_pipe[0];
    while (readable(capture.fd) && capture_read(&capture))
        continue;
    close(capture.fd);
    ck_assert_int_eq(waitpid(child, &status, 0), child);
    last.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    last.out = capture.data != NULL ? capture.data : strdup("");
    last.err = strdup("");
    return &last;
}

START_TEST(test_bash_completion)
{
    if (daemon_harness_source_dir() == NULL || access("/bin/bash", X_OK) != 0)
        return; /* installed-tests runs without the tree or bash */
    expect_exit(ctl("add", "alpha", "--plugin", "testdev", NULL), EXIT_DONE);
    expect_exit(ctl("add", "beta", "--plugin", "testdev", NULL), EXIT_DONE);

    expect_exit(complete_words("''"), EXIT_DONE);
    expect_contains(last.out, "add\n");
    expect_contains(last.out, "probe\n");
    expect_contains(last.out, "status\n");
    expect_exit(complete_words("re"), EXIT_DONE);
    ck_assert_str_eq(last.out, "reload\nremove\nreset\n");
    expect_exit(complete_words("info ''"), EXIT_DONE);
    ck_assert_str_eq(last.out, "alpha\nbeta\n");
    expect_exit(complete_words("--json remove b"), EXIT_DONE);
    ck_assert_str_eq(last.out, "beta\n");
    expect_exit(complete_words("add x --plugin ''"), EXIT_DONE);
    ck_assert_str_eq(last.out, "testdev\n");
    expect_exit(complete_words("remove alpha --p"), EXIT_DONE);
    ck_assert_str_eq(last.out, "--persist\n");
}
END_TEST

static Suite *ctl_suite(void)
{
    Suite *suite = suite_create("vfio-userctl");
    TCase *daemon = tcase_create("daemon");
    TCase *hostile = tcase_create("hostile");
    TCase *probe = tcase_create("probe");

    tcase_add_checked_fixture(daemon, setup, teardown);
    tcase_set_timeout(daemon, 120);
    tcase_add_test(daemon, test_empty_daemon);
    tcase_add_test(daemon, test_plugins);
    tcase_add_test(daemon, test_add_info_reset_remove);
    tcase_add_test(daemon, test_list_alignment);
    tcase_add_test(daemon, test_refusals);
    tcase_add_test(daemon, test_persist_survives_restart);
    tcase_add_test(daemon, test_add_from_file);
    tcase_add_test(daemon, test_usage_errors);
    tcase_add_test(daemon, test_bash_completion);
    suite_add_tcase(suite, daemon);

    tcase_add_checked_fixture(hostile, setup, teardown);
    tcase_set_timeout(hostile, 120);
    tcase_add_test(hostile, test_unreachable);
    tcase_add_test(hostile, test_hostile_admin_replies);
    suite_add_tcase(suite, hostile);

    tcase_add_checked_fixture(probe, setup, teardown);
    tcase_set_timeout(probe, 120);
    tcase_add_test(probe, test_probe_testdev);
    tcase_add_test(probe, test_probe_hostile_device);
    suite_add_tcase(suite, probe);
    return suite;
}

int main(void)
{
    return daemon_harness_run_suite(ctl_suite());
}
