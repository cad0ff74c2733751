/*
 * Test harness for the real vfio-userd binary: each test gets a private directory (daemon
 * config, drop-ins, runtime directory, a NOTIFY_SOCKET datagram socket, the daemon's log),
 * starts the daemon there with fork/exec, and waits for what it does with bounded polls
 * rather than fixed sleeps.
 *
 * Leftovers are impossible by construction: the daemon dies with the test process
 * (PR_SET_PDEATHSIG), and every test directory lives under one base directory that the
 * test program's main() removes at exit, so even a test that failed half-way (check's fork
 * mode skips the teardown then) leaves nothing behind.
 *
 * Errors are negative errno values: -ETIMEDOUT when a wait ran out, -ECHILD when the daemon
 * exited while waited on (its status is then in `exit_status`).
 */
#ifndef DAEMON_HARNESS_H
#define DAEMON_HARNESS_H

#include <limits.h>
#include <check.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* snprintf() into an array, failing the test (check's ck_assert) when it does not fit. */
#define FORMAT(buffer, ...)                                                                        \
    ck_assert_int_lt(snprintf(buffer, sizeof(buffer), __VA_ARGS__), (int)sizeof(buffer))

/* Upper bound of every wait: generous, since a wait ends as soon as its condition holds. */
#define DAEMON_HARNESS_TIMEOUT_MS 10000

struct daemon_harness {
    char directory[PATH_MAX];    /* this test's own directory */
    char config_path[PATH_MAX];  /* DIRECTORY/vfio-userd.yaml, written by init */
    char devices_dir[PATH_MAX];  /* DIRECTORY/devices.d, created by init */
    char plugin_dir[PATH_MAX];   /* DIRECTORY/plugins: the build's testdev.so only */
    char all_plugins[PATH_MAX];  /* the build's plugins, every one */
    char runtime_dir[PATH_MAX];  /* DIRECTORY/run, created by the daemon */
    char admin_socket[PATH_MAX]; /* DIRECTORY/run/admin.sock */
    char notify_path[PATH_MAX];  /* DIRECTORY/notify: the NOTIFY_SOCKET */
    char log_path[PATH_MAX];     /* DIRECTORY/daemon.log: the daemon's stdout and stderr */
    int notify_fd;
    pid_t pid;       /* 0 when no daemon runs */
    int exit_status; /* waitpid() status of the last daemon that ended */
    char **notifications;
    size_t notification_count;
    size_t notifications_consumed;    /* waits look only at messages after the last match */
    const char *extra_environment[8]; /* "KEY=VALUE" entries added to the daemon's */
};

/* The build directory: $VFIO_USERD_BUILD_DIR, or build/plain. */
const char *daemon_harness_build_dir(void);

/* The source tree (for conf/, systemd/, man/): $VFIO_USERD_SOURCE_DIR, or the working
 * directory when it holds the tree; NULL when neither does. */
const char *daemon_harness_source_dir(void);

/* Creates and removes the base directory under which every test directory lives; main()
 * calls the first before running the suite and the second after. */
int daemon_harness_global_init(void);
void daemon_harness_global_cleanup(void);

/*
 * The main() of a test program that starts daemons: SIGPIPE ignored (a daemon that goes
 * must fail a write, not end the test), the shared directory made and removed around
 * `suite` (taken), run as test_run_suite() runs it.
 */
int daemon_harness_run_suite(Suite *suite);

/*
 * Makes the test directory, the devices directory, the NOTIFY_SOCKET and a daemon config
 * holding `config_text` (NULL: two worker threads).
 */
int daemon_harness_init(struct daemon_harness *harness, const char *config_text);

/* Kills a daemon still running, closes the socket, removes the directory. */
void daemon_harness_fini(struct daemon_harness *harness);

/*
 * Runs the daemon binary with exactly `arguments` (NULL-terminated, without argv[0]),
 * stdout and stderr to the log, and NOTIFY_SOCKET set.
 */
int daemon_harness_spawn(struct daemon_harness *harness, const char *const *arguments);

/*
 * Runs the daemon on the test directory (-c, --devices-dir, --plugin-dir, --runtime-dir,
 * --admin-socket, --log-level debug) plus `extra` (may be NULL), and waits for READY=1.
 */
int daemon_harness_start(struct daemon_harness *harness, const char *const *extra);

/* Sends `signal_number` and waits for the daemon to exit; its status is in exit_status. */
int daemon_harness_stop(struct daemon_harness *harness, int signal_number);

/* Waits for the daemon to exit by itself (e.g. --check-config). */
int daemon_harness_wait_exit(struct daemon_harness *harness, int timeout_ms);

/*
 * Waits for a notification message with a line starting with `line_prefix`, after the
 * last one matched; copies that line to `line` (may be NULL).
 */
int daemon_harness_wait_notify(struct daemon_harness *harness, const char *line_prefix,
                               int timeout_ms, char *line, size_t line_size);

/* Reads the notifications already sent without waiting; returns how many arrived. */
size_t daemon_harness_collect_notify(struct daemon_harness *harness);

/* How many messages received so far hold a line starting with `line_prefix`. */
size_t daemon_harness_count_notify(const struct daemon_harness *harness, const char *line_prefix);

/* Waits until `path` is a socket (present) or is gone (!present). */
int daemon_harness_wait_socket(struct daemon_harness *harness, const char *path, bool present,
                               int timeout_ms);

/* How many descriptors the running daemon holds (fails the test when it cannot tell). */
int daemon_harness_open_fds(const struct daemon_harness *harness);

/* Whether the daemon's log holds `text`; how many times. */
bool daemon_harness_log_contains(const struct daemon_harness *harness, const char *text);
size_t daemon_harness_log_count(const struct daemon_harness *harness, const char *text);

/* Waits until the log holds `text`. */
int daemon_harness_wait_log(struct daemon_harness *harness, const char *text, int timeout_ms);

/* The whole log, malloc'ed and NUL-terminated (NULL when unreadable); for messages. */
char *daemon_harness_read_log(const struct daemon_harness *harness);

/*
 * Writes `text` to DIRECTORY/NAME as editors do: a hidden temporary file in the same
 * directory, then rename(2), so the daemon never sees half a file.
 */
int daemon_harness_write_file(const char *directory, const char *name, const char *text);

/* The default socket of device `name`: RUNTIME_DIR/devices/NAME.sock. */
void daemon_harness_device_socket(const struct daemon_harness *harness, const char *name,
                                  char *path, size_t size);

/* Makes DIRECTORY/NAME inside the test directory and returns its path in `path`. */
int daemon_harness_make_directory(const struct daemon_harness *harness, const char *name,
                                  char *path, size_t size);

/* Removes a directory tree (used for the test directories). */
int daemon_harness_remove_tree(const char *path);

/* Copies a file byte for byte, creating `target` with `mode`. */
int daemon_harness_copy_file(const char *source, const char *target, mode_t mode);

#endif /* DAEMON_HARNESS_H */
