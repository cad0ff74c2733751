/*
 * Runs the real vfio-userd in a private directory for integration tests; see
 * daemon_harness.h.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <signal.h>
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

#include "daemon_harness.h"
#include "test_process.h"
#include "test_runner.h"

extern char **environ;

/* Short, so that socket paths under it stay far below the 108 bytes of sun_path. */
#define BASE_TEMPLATE "/tmp/vfio-userd-daemon-XXXXXX"

/* Variables the daemon would obey if the test itself ran under systemd. */
static const char *const inherited_systemd_variables[] = {
    "NOTIFY_SOCKET=", "LISTEN_FDS=",   "LISTEN_PID=",     "LISTEN_FDNAMES=",
    "WATCHDOG_USEC=", "WATCHDOG_PID=", "JOURNAL_STREAM=", NULL,
};

static char base_directory[sizeof(BASE_TEMPLATE)];

static void sleep_ms(int milliseconds)
{
    struct timespec delay = {milliseconds / 1000, (long)(milliseconds % 1000) * 1000000};

    while (nanosleep(&delay, &delay) < 0 && errno == EINTR)
        ;
}

const char *daemon_harness_build_dir(void)
{
    const char *directory = getenv("VFIO_USERD_BUILD_DIR");

    return directory != NULL && directory[0] != '\0' ? directory : "build/plain";
}

const char *daemon_harness_source_dir(void)
{
    const char *directory = getenv("VFIO_USERD_SOURCE_DIR");
    char probe[PATH_MAX];

    if (directory == NULL || directory[0] == '\0')
        directory = ".";
    snprintf(probe, sizeof(probe), "%s/systemd/vfio-userd.service", directory);
    return access(probe, R_OK) == 0 ? directory : NULL;
}

int daemon_harness_global_init(void)
{
    memcpy(base_directory, BASE_TEMPLATE, sizeof(BASE_TEMPLATE));
    if (mkdtemp(base_directory) == NULL) {
        base_directory[0] = '\0';
        return -errno;
    }
    return 0;
}

void daemon_harness_global_cleanup(void)
{
    if (base_directory[0] != '\0')
        daemon_harness_remove_tree(base_directory);
    base_directory[0] = '\0';
}

static int remove_entry(const char *path, const struct stat *status, int type, struct FTW *walk)
{
    /* Keep going past an entry that will not go: remove what can be removed. */
    remove(path);
    return 0;
}

int daemon_harness_remove_tree(const char *path)
{
    if (nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS) < 0)
        return -errno;
    return access(path, F_OK) == 0 ? -ENOTEMPTY : 0;
}

int daemon_harness_copy_file(const char *source, const char *target, mode_t mode)
{
    char buffer[65536];
    int in = -1, out = -1, ret = 0;
    ssize_t length;

    in = open(source, O_RDONLY | O_CLOEXEC);
    out = open(target, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (in < 0 || out < 0) {
        ret = -errno;
        goto out;
    }
    while ((length = read(in, buffer, sizeof(buffer))) > 0)
        if (write(out, buffer, (size_t)length) != length) {
            ret = -EIO;
            goto out;
        }
    if (length < 0)
        ret = -errno;
out:
    if (in >= 0)
        close(in);
    if (out >= 0)
        close(out);
    return ret;
}

int daemon_harness_write_file(const char *directory, const char *name, const char *text)
{
    char temporary[PATH_MAX], final[PATH_MAX];
    size_t length = strlen(text);
    int fd, ret = 0;

    if (snprintf(temporary, sizeof(temporary), "%s/.%s.tmp", directory, name) >=
            (int)sizeof(temporary) ||
        snprintf(final, sizeof(final), "%s/%s", directory, name) >= (int)sizeof(final))
        return -ENAMETOOLONG;
    fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -errno;
    if (write(fd, text, length) != (ssize_t)length)
        ret = -EIO;
    if (close(fd) < 0 && ret == 0)
        ret = -errno;
    if (ret == 0 && rename(temporary, final) < 0)
        ret = -errno;
    if (ret < 0)
        unlink(temporary);
    return ret;
}

void daemon_harness_device_socket(const struct daemon_harness *harness, const char *name,
                                  char *path, size_t size)
{
    snprintf(path, size, "%s/devices/%s.sock", harness->runtime_dir, name);
}

int daemon_harness_make_directory(const struct daemon_harness *harness, const char *name,
                                  char *path, size_t size)
{
    if (snprintf(path, size, "%s/%s", harness->directory, name) >= (int)size)
        return -ENAMETOOLONG;
    return mkdir(path, 0755) < 0 && errno != EEXIST ? -errno : 0;
}

/* DIRECTORY/NAME into a PATH_MAX buffer. */
static int join_path(char path[PATH_MAX], const char *directory, const char *name)
{
    int length = snprintf(path, PATH_MAX, "%s/%s", directory, name);

    return length < 0 || length >= PATH_MAX ? -ENAMETOOLONG : 0;
}

static int link_testdev(const struct daemon_harness *harness)
{
    char source[PATH_MAX], target[PATH_MAX], absolute[PATH_MAX];

    if (join_path(source, harness->all_plugins, "testdev.so") < 0 ||
        join_path(target, harness->plugin_dir, "testdev.so") < 0)
        return -ENAMETOOLONG;
    if (realpath(source, absolute) == NULL)
        return -errno;
    if (mkdir(harness->plugin_dir, 0755) < 0 || symlink(absolute, target) < 0)
        return -errno;
    return 0;
}

static int bind_notify_socket(struct daemon_harness *harness)
{
    struct sockaddr_un address = {.sun_family = AF_UNIX};
    int fd, ret;

    if (strlen(harness->notify_path) >= sizeof(address.sun_path))
        return -ENAMETOOLONG;
    strcpy(address.sun_path, harness->notify_path);
    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -errno;
    if (bind(fd, (struct sockaddr *)&address, sizeof(address)) < 0) {
        ret = -errno;
        close(fd);
        return ret;
    }
    harness->notify_fd = fd;
    return 0;
}

int daemon_harness_init(struct daemon_harness *harness, const char *config_text)
{
    const char *build = daemon_harness_build_dir();
    int ret;

    memset(harness, 0, sizeof(*harness));
    harness->notify_fd = -1;
    snprintf(harness->directory, sizeof(harness->directory), "%s/t-XXXXXX",
             base_directory[0] != '\0' ? base_directory : "/tmp");
    if (mkdtemp(harness->directory) == NULL) {
        harness->directory[0] = '\0';
        return -errno;
    }
    if (join_path(harness->config_path, harness->directory, "vfio-userd.yaml") < 0 ||
        join_path(harness->devices_dir, harness->directory, "devices.d") < 0 ||
        join_path(harness->all_plugins, build, "plugins") < 0 ||
        join_path(harness->plugin_dir, harness->directory, "plugins") < 0 ||
        join_path(harness->runtime_dir, harness->directory, "run") < 0 ||
        join_path(harness->admin_socket, harness->runtime_dir, "admin.sock") < 0 ||
        join_path(harness->notify_path, harness->directory, "notify") < 0 ||
        join_path(harness->log_path, harness->directory, "daemon.log") < 0)
        return -ENAMETOOLONG;
    if (mkdir(harness->devices_dir, 0755) < 0)
        return -errno;
    /* The daemon's tests see testdev alone, so the plugin counts and lists they expect
     * stay the same as device models are added to the build. */
    ret = link_testdev(harness);
    if (ret < 0)
        return ret;
    ret = daemon_harness_write_file(harness->directory, "vfio-userd.yaml",
                                    config_text != NULL ? config_text : "worker_threads: 2\n");
    if (ret < 0)
        return ret;
    return bind_notify_socket(harness);
}

void daemon_harness_fini(struct daemon_harness *harness)
{
    if (harness->pid > 0) {
        kill(harness->pid, SIGKILL);
        waitpid(harness->pid, &harness->exit_status, 0);
        harness->pid = 0;
    }
    if (harness->notify_fd >= 0)
        close(harness->notify_fd);
    harness->notify_fd = -1;
    for (size_t i = 0; i < harness->notification_count; i++)
        free(harness->notifications[i]);
    free(harness->notifications);
    harness->notifications = NULL;
    harness->notification_count = 0;
    if (harness->directory[0] != '\0')
        daemon_harness_remove_tree(harness->directory);
    harness->directory[0] = '\0';
}

static bool inherited_systemd_variable(const char *entry)
{
    for (size_t i = 0; inherited_systemd_variables[i] != NULL; i++)
        if (strncmp(entry, inherited_systemd_variables[i],
                    strlen(inherited_systemd_variables[i])) == 0)
            return true;
    return false;
}

/* The test's environment without systemd's variables, plus NOTIFY_SOCKET and the extras. */
static char **daemon_environment(const struct daemon_harness *harness, char *notify_entry)
{
    size_t count = 0, used = 0,
           extra = sizeof(harness->extra_environment) / sizeof(harness->extra_environment[0]);
    char **environment;

    while (environ[count] != NULL)
        count++;
    environment = calloc(count + extra + 2, sizeof(*environment));
    if (environment == NULL)
        return NULL;
    for (size_t i = 0; i < count; i++)
        if (!inherited_systemd_variable(environ[i]))
            environment[used++] = environ[i];
    environment[used++] = notify_entry;
    for (size_t i = 0; i < extra && harness->extra_environment[i] != NULL; i++)
        environment[used++] = (char *)harness->extra_environment[i];
    return environment;
}

int daemon_harness_spawn(struct daemon_harness *harness, const char *const *arguments)
{
    char binary[PATH_MAX], notify_entry[PATH_MAX + 16];
    char **argv = NULL, **environment = NULL;
    size_t argument_count = 0;
    int log_fd = -1, null_fd = -1, ret = 0;
    pid_t parent = getpid(), child;

    if (harness->pid > 0)
        return -EBUSY;
    /* Everything the child needs is prepared here: after fork it only execs. */
    snprintf(binary, sizeof(binary), "%s/vfio-userd", daemon_harness_build_dir());
    snprintf(notify_entry, sizeof(notify_entry), "NOTIFY_SOCKET=%s", harness->notify_path);
    while (arguments != NULL && arguments[argument_count] != NULL)
        argument_count++;
    argv = calloc(argument_count + 2, sizeof(*argv));
    environment = daemon_environment(harness, notify_entry);
    if (argv == NULL || environment == NULL) {
        ret = -ENOMEM;
        goto out;
    }
    argv[0] = binary;
    for (size_t i = 0; i < argument_count; i++)
        argv[i + 1] = (char *)arguments[i];
    log_fd = open(harness->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (log_fd < 0 || null_fd < 0) {
        ret = -errno;
        goto out;
    }
    child = fork();
    if (child < 0) {
        ret = -errno;
        goto out;
    }
    if (child == 0) {
        sigset_t none;

        /* A test that fails exits without its teardown: the daemon must not outlive it. */
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
            _exit(127);
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        if (dup2(null_fd, STDIN_FILENO) < 0 || dup2(log_fd, STDOUT_FILENO) < 0 ||
            dup2(log_fd, STDERR_FILENO) < 0)
            _exit(127);
        execve(binary, argv, environment);
        _exit(127);
    }
    harness->pid = child;
out:
    if (log_fd >= 0)
        close(log_fd);
    if (null_fd >= 0)
        close(null_fd);
    free(argv);
    free(environment);
    return ret;
}

int daemon_harness_start(struct daemon_harness *harness, const char *const *extra)
{
    const char *arguments[64] = {
        "-c",
        harness->config_path,
        "--devices-dir",
        harness->devices_dir,
        "--plugin-dir",
        harness->plugin_dir,
        "--runtime-dir",
        harness->runtime_dir,
        "--admin-socket",
        harness->admin_socket,
        "--log-level",
        "debug",
    };
    size_t count = 12;
    int ret;

    for (size_t i = 0; extra != NULL && extra[i] != NULL; i++) {
        if (count + 1 >= sizeof(arguments) / sizeof(arguments[0]))
            return -E2BIG;
        arguments[count++] = extra[i];
    }
    arguments[count] = NULL;
    ret = daemon_harness_spawn(harness, arguments);
    if (ret < 0)
        return ret;
    return daemon_harness_wait_notify(harness, "READY=1", DAEMON_HARNESS_TIMEOUT_MS, NULL, 0);
}

/* Reaps the daemon if it has exited: -ECHILD then (or when none was running), else 0. */
static int check_alive(struct daemon_harness *harness)
{
    int status;
    pid_t reaped;

    if (harness->pid <= 0)
        return -ECHILD;
    reaped = waitpid(harness->pid, &status, WNOHANG);
    if (reaped == 0)
        return 0;
    if (reaped == harness->pid)
        harness->exit_status = status;
    harness->pid = 0;
    return -ECHILD;
}

int daemon_harness_wait_exit(struct daemon_harness *harness, int timeout_ms)
{
    long long deadline = (long long)test_now_ms() + timeout_ms;

    for (;;) {
        if (check_alive(harness) == -ECHILD)
            return 0;
        if ((long long)test_now_ms() >= deadline)
            return -ETIMEDOUT;
        sleep_ms(5);
    }
}

int daemon_harness_stop(struct daemon_harness *harness, int signal_number)
{
    if (harness->pid <= 0)
        return -ECHILD;
    if (kill(harness->pid, signal_number) < 0)
        return -errno;
    return daemon_harness_wait_exit(harness, DAEMON_HARNESS_TIMEOUT_MS);
}

size_t daemon_harness_collect_notify(struct daemon_harness *harness)
{
    char buffer[4097];
    size_t received = 0;
    ssize_t length;

    while ((length = recv(harness->notify_fd, buffer, sizeof(buffer) - 1, MSG_DONTWAIT)) >= 0) {
        char **grown =
            reallocarray(harness->notifications, harness->notification_count + 1, sizeof(*grown));
        char *copy;

        buffer[length] = '\0';
        copy = strdup(buffer);
        if (grown == NULL || copy == NULL) {
            if (grown != NULL)
                harness->notifications = grown;
            free(copy);
            break;
        }
        harness->notifications = grown;
        harness->notifications[harness->notification_count++] = copy;
        received++;
    }
    return received;
}

/* The line of `message` that starts with `prefix`, or NULL. */
static const char *find_line(const char *message, const char *prefix)
{
    size_t prefix_length = strlen(prefix);

    for (const char *line = message; line != NULL && *line != '\0';) {
        const char *end = strchr(line, '\n');
        if (strncmp(line, prefix, prefix_length) == 0)
            return line;
        line = end != NULL ? end + 1 : NULL;
    }
    return NULL;
}

size_t daemon_harness_count_notify(const struct daemon_harness *harness, const char *line_prefix)
{
    size_t count = 0;

    for (size_t i = 0; i < harness->notification_count; i++)
        if (find_line(harness->notifications[i], line_prefix) != NULL)
            count++;
    return count;
}

int daemon_harness_wait_notify(struct daemon_harness *harness, const char *line_prefix,
                               int timeout_ms, char *line, size_t line_size)
{
    long long deadline = (long long)test_now_ms() + timeout_ms;

    for (;;) {
        struct pollfd readable = {.fd = harness->notify_fd, .events = POLLIN};
        bool alive;

        daemon_harness_collect_notify(harness);
        for (size_t i = harness->notifications_consumed; i < harness->notification_count; i++) {
            const char *found = find_line(harness->notifications[i], line_prefix);
            if (found == NULL)
                continue;
            harness->notifications_consumed = i + 1;
            if (line != NULL && line_size > 0)
                snprintf(line, line_size, "%.*s", (int)strcspn(found, "\n"), found);
            return 0;
        }
        /* A message sent just before exiting is still queued: look once more after. */
        alive = check_alive(harness) == 0;
        if (!alive && daemon_harness_collect_notify(harness) > 0)
            continue;
        if (!alive)
            return -ECHILD;
        if ((long long)test_now_ms() >= deadline)
            return -ETIMEDOUT;
        /* Short, so that a daemon that died is noticed too. */
        poll(&readable, 1, 20);
    }
}

static bool is_socket(const char *path)
{
    struct stat status;

    return lstat(path, &status) == 0 && S_ISSOCK(status.st_mode);
}

int daemon_harness_wait_socket(struct daemon_harness *harness, const char *path, bool present,
                               int timeout_ms)
{
    long long deadline = (long long)test_now_ms() + timeout_ms;

    for (;;) {
        if (is_socket(path) == present)
            return 0;
        if (check_alive(harness) < 0)
            return -ECHILD;
        if ((long long)test_now_ms() >= deadline)
            return -ETIMEDOUT;
        sleep_ms(5);
    }
}

char *daemon_harness_read_log(const struct daemon_harness *harness)
{
    char *text = NULL;
    size_t size = 0;
    FILE *stream = open_memstream(&text, &size);
    int fd = open(harness->log_path, O_RDONLY | O_CLOEXEC);
    char buffer[8192];
    ssize_t length;

    if (stream == NULL) {
        if (fd >= 0)
            close(fd);
        return NULL;
    }
    while (fd >= 0 && (length = read(fd, buffer, sizeof(buffer))) > 0)
        fwrite(buffer, 1, (size_t)length, stream);
    if (fd >= 0)
        close(fd);
    fclose(stream);
    return text;
}

size_t daemon_harness_log_count(const struct daemon_harness *harness, const char *text)
{
    char *log = daemon_harness_read_log(harness);
    size_t count = 0;

    for (const char *at = log != NULL ? strstr(log, text) : NULL; at != NULL;
         at = strstr(at + 1, text))
        count++;
    free(log);
    return count;
}

bool daemon_harness_log_contains(const struct daemon_harness *harness, const char *text)
{
    return daemon_harness_log_count(harness, text) > 0;
}

int daemon_harness_wait_log(struct daemon_harness *harness, const char *text, int timeout_ms)
{
    long long deadline = (long long)test_now_ms() + timeout_ms;

    for (;;) {
        if (daemon_harness_log_contains(harness, text))
            return 0;
        if (check_alive(harness) < 0)
            return daemon_harness_log_contains(harness, text) ? 0 : -ECHILD;
        if ((long long)test_now_ms() >= deadline)
            return -ETIMEDOUT;
        sleep_ms(5);
    }
}

int daemon_harness_run_suite(Suite *suite)
{
    int status;

    signal(SIGPIPE, SIG_IGN);
    if (daemon_harness_global_init() < 0) {
        perror("cannot create the tests' temporary directory");
        return EXIT_FAILURE;
    }
    status = test_run_suite(suite);
    /* Also what failed tests left: check's fork mode skips their teardown. */
    daemon_harness_global_cleanup();
    return status;
}

int daemon_harness_open_fds(const struct daemon_harness *harness)
{
    char path[64];
    int count = 0;
    DIR *directory;

    FORMAT(path, "/proc/%d/fd", (int)harness->pid);
    directory = opendir(path);
    ck_assert_ptr_nonnull(directory);
    for (struct dirent *entry; (entry = readdir(directory)) != NULL;)
        count += entry->d_name[0] != '.';
    closedir(directory);
    return count;
}
