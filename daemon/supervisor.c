/*
 * Supervisor of device-host processes: spawning, health checks, crash handling and the
 * restart policy; see supervisor.h.
 *
 * Health checks cost an idle host nothing: each host's loop marks its waits in a page it
 * shares with the daemon (host/liveness.h), and one timer for all hosts reads the pages.
 * A host that waits is healthy; one whose loop has been out of its wait for health_timeout
 * is stuck. Only a host whose page says nothing (its waits unmarked) is pinged, as every
 * host was before, which costs a wake-up of the host and of the daemon per check.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pwd.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <linux/close_range.h>

#include "control.h"
#include "devices.h"
#include "liveness.h"
#include "log.h"
#include "supervisor.h"

#define DEVICE_HOST_BINARY "vfio-userd-device-host"

/* Descriptors one host may hold beyond what its client makes it hold (sockets, memfds of
 * its regions, eventfds, the plugin's own files). */
#define HOST_SPARE_FILES 256

/* The hosts' pages are read (and a ping goes to a host without marks) this many times per
 * health_timeout: a host that hangs is seen awake before its deadline, and then judged at
 * the deadline itself. */
#define HEALTH_CHECKS_PER_TIMEOUT 4
#define HEALTH_CHECK_MIN_USEC     20000u
/* How late the health timer may fire, so that it can share a wake-up with other timers. */
#define HEALTH_CHECK_ACCURACY_USEC 10000u

/* Messages read from one host per wake-up of the main loop. */
#define SUPERVISOR_MESSAGES_PER_WAKEUP 64

/* The host exits with this when the plugin refused the device (host/main.c). */
#define HOST_EXIT_REFUSED 3

struct supervisor_host {
    sd_event *event;
    char *name;
    char *plugin_name;
    char *plugin_path;
    json_t *params;
    const struct config_daemon *settings;
    enum config_restart restart;
    uint32_t poll_usec;
    bool change_user;
    uid_t uid;
    gid_t gid;
    int listen_fd; /* the device manager's, borrowed; each host gets a copy of its own */
    bool owns_listen_fd;
    bool validate_only;

    /* The current host process, while there is one. */
    pid_t pid;
    int pidfd;
    int channel_fd;
    sd_event_source *exit_source;
    sd_event_source *channel_source;
    bool ready;    /* it said "ready": it serves the socket */
    bool stopping; /* the daemon asked it to end */
    uint64_t started_usec;
    /* When the oldest ping still unanswered went out; 0: none is. Judged from the ping
     * rather than from the last answer, so that a main loop that was busy (and sent no
     * ping) never makes a host look silent. Only for a host whose page says nothing. */
    uint64_t check_sent_usec;
    /* The host's liveness page (its loop's waits), and when its last message was read: a
     * host awake because it waits on the daemon (an open) is not stuck. */
    struct liveness_slot *liveness;
    uint64_t heard_usec;

    /* In the list of hosts the health timer checks. */
    struct supervisor_host *watch_previous, *watch_next;

    enum supervisor_state state;
    sd_event_source *restart_timer;
    uint64_t next_sequence;
    unsigned restarts;
    unsigned failures_in_row;
    uint64_t *start_times; /* the last start_limit_burst starts, a ring */
    unsigned start_count;  /* starts recorded, at most start_limit_burst */
    unsigned start_next;
    char last_failure[160];
    struct vu_log_ratelimit open_log; /* lines the host's open requests cause */
};

/* --- Where and as whom hosts run. --- */

const char *supervisor_host_binary(void)
{
    static char path[PATH_MAX];
    const char *override = getenv("VFIO_USERD_DEVICE_HOST");
    char self[PATH_MAX];
    ssize_t length;
    char *slash;

    if (override != NULL && override[0] != '\0')
        return override;
    if (path[0] != '\0')
        return path;
    length = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (length > 0) {
        self[length] = '\0';
        slash = strrchr(self, '/');
        if (slash != NULL) {
            *slash = '\0';
            if ((size_t)snprintf(path, sizeof(path), "%s/%s", self, DEVICE_HOST_BINARY) <
                    sizeof(path) &&
                access(path, X_OK) == 0)
                return path;
        }
    }
    snprintf(path, sizeof(path), "%s/%s", VFIO_USERD_PKGLIBDIR, DEVICE_HOST_BINARY);
    return path;
}

/* The account's group: its passwd entry's, or for a bare id without one, the same number. */
static int primary_group(uid_t uid, gid_t *gid)
{
    char buffer[4096];
    struct passwd entry, *found = NULL;
    int ret = getpwuid_r(uid, &entry, buffer, sizeof(buffer), &found);

    if (ret != 0)
        return -ret;
    *gid = found != NULL ? found->pw_gid : (gid_t)uid;
    return 0;
}

int supervisor_resolve_user(const struct config_daemon *settings, const char *user, uid_t *uid,
                            gid_t *gid, char *error, size_t error_size)
{
    const char *name = user != NULL ? user : settings->device_user;
    int ret;

    if (name == NULL) {
        name = CONFIG_DEVICE_USER;
        if (device_lookup_user(name, uid) == -ENOENT)
            name = CONFIG_DEVICE_USER_FALLBACK;
    }
    ret = device_lookup_user(name, uid);
    if (ret == 0)
        ret = primary_group(*uid, gid);
    if (ret < 0) {
        snprintf(error, error_size, "no user '%s' to run the device host as%s%s", name,
                 ret == -ENOENT ? "" : ": ", ret == -ENOENT ? "" : strerror(-ret));
        return ret;
    }
    /* A host as root, even without capabilities, owns every root file and may signal every
     * root process: the sandbox would be a pretence. */
    if (*uid == 0) {
        snprintf(error, error_size,
                 "user '%s' is root; a device host runs as an unprivileged account", name);
        return -EPERM;
    }
    return 0;
}

/* --- Starting a host. --- */

static int pidfd_open_process(pid_t pid)
{
    return (int)syscall(SYS_pidfd_open, pid, 0);
}

static int pidfd_kill(int pidfd)
{
    return (int)syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0);
}

/*
 * The daemon's environment without what systemd meant for the daemon alone: a host must
 * not notify for it, feed its watchdog or take its passed sockets. Built once.
 */
static char **host_environment(void)
{
    static const char *const withheld[] = {
        "NOTIFY_SOCKET=", "WATCHDOG_USEC=",  "WATCHDOG_PID=",   "LISTEN_FDS=",
        "LISTEN_PID=",    "LISTEN_FDNAMES=", "JOURNAL_STREAM=", NULL};
    static char **kept;
    size_t count = 0, used = 0;

    if (kept != NULL)
        return kept;
    while (environ[count] != NULL)
        count++;
    kept = calloc(count + 1, sizeof(char *));
    if (kept == NULL)
        return environ;
    for (size_t i = 0; i < count; i++) {
        bool keep = true;
        for (size_t w = 0; withheld[w] != NULL && keep; w++)
            keep = strncmp(environ[i], withheld[w], strlen(withheld[w])) != 0;
        if (keep)
            kept[used++] = environ[i];
    }
    return kept;
}

#define SPAWN_FDS 4
_Static_assert(CONTROL_LIVENESS_FD == CONTROL_LISTEN_FD + SPAWN_FDS - 1,
               "the host's descriptors are consecutive, the last one the highest");

/*
 * Four descriptor numbers, low in the daemon's table, where a host's descriptors wait while
 * it starts, and /dev/null, which holds them the rest of the time. Reserved when the first
 * host starts, while the daemon holds few descriptors (each device adds three).
 */
static int spawn_slots[SPAWN_FDS] = {-1, -1, -1, -1};
static int spawn_placeholder = -1;

static int reserve_spawn_slots(void)
{
    if (spawn_placeholder >= 0)
        return 0;
    spawn_placeholder = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (spawn_placeholder < 0)
        return -errno;
    /* Above the host's own numbers, so that the child's dup2s never overlap. */
    for (int i = 0; i < SPAWN_FDS; i++) {
        spawn_slots[i] = fcntl(spawn_placeholder, F_DUPFD_CLOEXEC, CONTROL_LIVENESS_FD + 1);
        if (spawn_slots[i] < 0) {
            int ret = -errno;
            for (int j = 0; j < i; j++)
                close(spawn_slots[j]);
            close(spawn_placeholder);
            spawn_placeholder = -1;
            return ret;
        }
    }
    return 0;
}

/* What the child of spawn_process() needs, and where it leaves why it could not exec. */
struct spawn_child {
    const char *binary;
    char *const *argv;
    char *const *envp;
    int highest_slot;
    int error;
};

/*
 * The child, on the daemon's memory until its exec (CLONE_VM | CLONE_VFORK), so it makes
 * system calls only. It shares the daemon's descriptor table too (CLONE_FILES): instead of
 * the kernel copying all of it at the clone and the child closing thousands of descriptors
 * before the exec, which grew every start by 0.45 µs per descriptor the daemon held (4 ms
 * at 3,000 devices), the child takes a copy of the slots and what lies below them only
 * (CLOSE_RANGE_UNSHARE), then keeps its own four and drops the rest of that small copy.
 * Not instrumented: a sanitizer's bookkeeping on this stack would be the daemon's.
 */
__attribute__((no_sanitize("address", "undefined"))) static int spawn_child(void *data)
{
    struct spawn_child *child = data;
    struct sigaction action = {.sa_handler = SIG_DFL};
    sigset_t none;

    if (close_range((unsigned)child->highest_slot + 1, ~0u, CLOSE_RANGE_UNSHARE) < 0)
        goto fail;
    for (int i = 0; i < SPAWN_FDS; i++)
        if (dup3(spawn_slots[i], CONTROL_LISTEN_FD + i, 0) < 0)
            goto fail;
    if (close_range(CONTROL_LIVENESS_FD + 1, ~0u, 0) < 0)
        goto fail;
    /* A handler of the daemon's must not run here, on its memory, once signals come
     * through: those the daemon handles go back to their defaults (it ignores only SIGPIPE,
     * which the host ignores too). */
    for (int signal_number = 1; signal_number < NSIG; signal_number++) {
        struct sigaction current;
        if (sigaction(signal_number, NULL, &current) == 0 && current.sa_handler != SIG_DFL &&
            current.sa_handler != SIG_IGN)
            sigaction(signal_number, &action, NULL);
    }
    /* A session of its own: a kill(0, ...) in the host reaches no one else. */
    if (setsid() < 0)
        goto fail;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    execve(child->binary, child->argv, child->envp);
fail:
    child->error = errno;
    _exit(127);
}

/*
 * Starts the host program with the device's listening socket, its end of the control
 * channel, its plugin and its liveness page at CONTROL_LISTEN_FD, CONTROL_CHANNEL_FD,
 * CONTROL_PLUGIN_FD and CONTROL_LIVENESS_FD, and no other descriptor of the daemon's (no
 * other device's socket, no admin connection). Like posix_spawn, the child shares the
 * daemon's memory until the exec instead of copying its page tables, which a fork of a
 * daemon serving thousands of devices paid on every start; unlike it, it does not copy the
 * daemon's descriptor table either (spawn_child). Only the main thread starts hosts.
 */
static int spawn_process(const char *binary, char *const *argv, const int sources[SPAWN_FDS],
                         pid_t *pid)
{
    static char stack[64 * 1024] __attribute__((aligned(16)));
    struct spawn_child child = {.binary = binary, .argv = argv, .envp = host_environment()};
    sigset_t all, saved;
    int ret, placed = 0;

    *pid = 0;
    ret = reserve_spawn_slots();
    if (ret < 0)
        return ret;
    child.highest_slot = spawn_slots[0];
    for (int i = 0; i < SPAWN_FDS; i++) {
        if (spawn_slots[i] > child.highest_slot)
            child.highest_slot = spawn_slots[i];
        if (dup3(sources[i], spawn_slots[i], O_CLOEXEC) < 0) {
            ret = -errno;
            goto out;
        }
        placed++;
    }
    /* No signal until the child has reset the handlers it shares with the daemon. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &saved);
    *pid = clone(spawn_child, stack + sizeof(stack), CLONE_VM | CLONE_VFORK | CLONE_FILES | SIGCHLD,
                 &child);
    ret = *pid < 0 ? -errno : 0;
    pthread_sigmask(SIG_SETMASK, &saved, NULL);
    /* The child wrote its errno before it ended, which CLONE_VFORK waited for. */
    if (ret == 0 && child.error != 0) {
        waitpid(*pid, NULL, 0);
        ret = -child.error;
    }
out:
    for (int i = 0; i < placed; i++)
        dup3(spawn_placeholder, spawn_slots[i], O_CLOEXEC);
    return ret;
}

static void close_process(struct supervisor_host *host)
{
    host->exit_source = sd_event_source_disable_unref(host->exit_source);
    host->channel_source = sd_event_source_disable_unref(host->channel_source);
    if (host->pidfd >= 0)
        close(host->pidfd);
    if (host->channel_fd >= 0)
        close(host->channel_fd);
    liveness_slot_unmap(host->liveness);
    host->liveness = NULL;
    host->pidfd = -1;
    host->channel_fd = -1;
    host->pid = 0;
    host->ready = false;
}

static int on_exit_event(sd_event_source *source, int fd, uint32_t revents, void *userdata);
static void watch_soon(const struct supervisor_host *host);
static int on_channel_event(sd_event_source *source, int fd, uint32_t revents, void *userdata);

static void record_start(struct supervisor_host *host, uint64_t now)
{
    unsigned burst = host->settings->start_limit_burst;

    host->start_times[host->start_next] = now;
    host->start_next = (host->start_next + 1) % burst;
    if (host->start_count < burst)
        host->start_count++;
}

/* Whether start_limit_burst starts already happened within start_limit_interval. */
static bool start_limit_hit(const struct supervisor_host *host, uint64_t now)
{
    unsigned burst = host->settings->start_limit_burst;
    uint64_t oldest;

    if (host->start_count < burst)
        return false;
    oldest = host->start_times[host->start_next]; /* the ring is full: next is the oldest */
    return now - oldest < host->settings->start_limit_interval_usec;
}

static json_t *start_message(const struct supervisor_host *host)
{
    const struct config_daemon *settings = host->settings;

    return json_pack("{s:s, s:s, s:s, s:O, s:b, s:{s:I, s:I, s:I, s:i, s:I}}", "type", "start",
                     "name", host->name, "plugin", host->plugin_path, "params", host->params,
                     "validate_only", host->validate_only, "settings", "dma_message_chunk_size",
                     (json_int_t)settings->dma_message_chunk_size, "max_client_fds",
                     (json_int_t)settings->max_client_fds, "handshake_timeout_usec",
                     (json_int_t)settings->handshake_timeout_usec, "log_level", settings->log_level,
                     "poll_usec", (json_int_t)host->poll_usec);
}

/* Forks and execs a host, and sends it "start"; it reports "ready" or "error" later. */
static int spawn(struct supervisor_host *host, char *error, size_t error_size)
{
    const char *binary = supervisor_host_binary();
    char uid[24], gid[24], memory[24], files[24];
    char *argv[12];
    size_t count = 0;
    int fds[2] = {-1, -1}, plugin_fd = -1, liveness_fd = -1;
    struct liveness_slot *liveness = NULL;
    json_t *start = NULL;
    pid_t pid;
    int ret;

    if (host->pid != 0) {
        snprintf(error, error_size, "a device host (pid %d) is still running", (int)host->pid);
        return -EBUSY;
    }
    /* Every attempt counts against the start limit and starts the clock of the back-off,
     * including one that fails before a process exists (a plugin file gone, no descriptors):
     * such a failure must not retry unbounded. */
    host->started_usec = vu_monotonic_usec();
    record_start(host, host->started_usec);
    argv[count++] = (char *)DEVICE_HOST_BINARY;
    if (host->change_user) {
        snprintf(uid, sizeof(uid), "%u", (unsigned)host->uid);
        snprintf(gid, sizeof(gid), "%u", (unsigned)host->gid);
        argv[count++] = (char *)"--uid";
        argv[count++] = uid;
        argv[count++] = (char *)"--gid";
        argv[count++] = gid;
    }
    if (host->settings->device_memory_limit > 0) {
        snprintf(memory, sizeof(memory), "%llu",
                 (unsigned long long)host->settings->device_memory_limit);
        argv[count++] = (char *)"--memory-limit";
        argv[count++] = memory;
    }
    snprintf(files, sizeof(files), "%u", host->settings->max_client_fds + HOST_SPARE_FILES);
    argv[count++] = (char *)"--files-limit";
    argv[count++] = files;
    argv[count] = NULL;

    start = start_message(host);
    if (start == NULL) {
        ret = -ENOMEM;
        snprintf(error, error_size, "out of memory");
        goto out;
    }
    ret = control_socketpair(fds);
    if (ret < 0) {
        snprintf(error, error_size, "cannot create the control channel: %s", strerror(-ret));
        goto out;
    }
    plugin_fd = open(host->plugin_path, O_RDONLY | O_CLOEXEC);
    if (plugin_fd < 0) {
        ret = -errno;
        snprintf(error, error_size, "cannot open plugin %s: %s", host->plugin_path, strerror(-ret));
        goto out;
    }
    /* A new page per process: one a killed host may have written last says nothing about the
     * next. */
    ret = liveness_slot_create(&liveness, &liveness_fd);
    if (ret < 0) {
        snprintf(error, error_size, "cannot create the liveness page: %s", strerror(-ret));
        goto out;
    }
    ret = spawn_process(binary, argv,
                        (const int[SPAWN_FDS]){host->listen_fd, fds[1], plugin_fd, liveness_fd},
                        &pid);
    if (ret < 0) {
        snprintf(error, error_size, "cannot start the device host %s: %s", binary, strerror(-ret));
        goto out;
    }
    host->pid = pid;
    host->pidfd = pidfd_open_process(pid);
    host->channel_fd = fds[0];
    fds[0] = -1;
    host->liveness = liveness;
    liveness = NULL;
    host->check_sent_usec = 0;
    host->heard_usec = 0;
    host->ready = false;
    host->stopping = false;
    if (host->pidfd < 0) {
        ret = -errno;
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        snprintf(error, error_size, "cannot watch the device host: %s", strerror(-ret));
        goto fail;
    }
    ret =
        sd_event_add_io(host->event, &host->exit_source, host->pidfd, EPOLLIN, on_exit_event, host);
    if (ret >= 0)
        ret = sd_event_add_io(host->event, &host->channel_source, host->channel_fd, EPOLLIN,
                              on_channel_event, host);
    if (ret >= 0)
        ret = control_send(host->channel_fd, start);
    if (ret < 0) {
        snprintf(error, error_size, "cannot start the device host: %s", strerror(-ret));
        pidfd_kill(host->pidfd);
        waitid(P_PIDFD, (id_t)host->pidfd, &(siginfo_t){0}, WEXITED);
        goto fail;
    }
    vu_log(VFIO_USERD_LOG_DEBUG, host->name, "device host pid %d started (%s)", (int)pid, binary);
    watch_soon(host);
    ret = 0;
    goto out;
fail:
    close_process(host);
out:
    if (fds[0] >= 0)
        close(fds[0]);
    if (fds[1] >= 0)
        close(fds[1]);
    if (plugin_fd >= 0)
        close(plugin_fd);
    if (liveness_fd >= 0)
        close(liveness_fd);
    liveness_slot_unmap(liveness);
    json_decref(start);
    return ret;
}

/* --- Messages from the host. --- */

/*
 * A plugin's open_file() in the host: the daemon opens the file with its own rights, if the
 * device's parameters name it, and passes the descriptor along with the answer.
 */
static void answer_open(struct supervisor_host *host, const json_t *request)
{
    const char *path = json_string_value(json_object_get(request, "path"));
    json_int_t flags = json_integer_value(json_object_get(request, "flags"));
    json_int_t mode = json_integer_value(json_object_get(request, "mode"));
    json_t *answer;
    int fd = -1, ret;

    if (flags < 0 || flags > INT_MAX || mode < 0 || mode > 07777) {
        ret = -EINVAL;
    } else {
        fd = vu_device_open_named_file(host->params, path, (int)flags, (unsigned int)mode);
        ret = fd < 0 ? fd : 0;
    }
    /* The host asks as often as it likes: what it makes the daemon log is rate-limited. */
    vu_log_ratelimited(&host->open_log, ret < 0 ? VFIO_USERD_LOG_WARNING : VFIO_USERD_LOG_DEBUG,
                       host->name, "device host %s %.256s%s%s", ret < 0 ? "cannot open" : "opened",
                       path != NULL ? path : "(no path)", ret < 0 ? ": " : "",
                       ret < 0 ? strerror(-ret) : "");
    answer = json_pack("{s:s, s:I, s:i}", "type", "open", "seq",
                       (json_int_t)control_sequence(request), "errno", -ret);
    if (answer != NULL && control_send_fd(host->channel_fd, answer, fd) < 0)
        vu_log(VFIO_USERD_LOG_WARNING, host->name, "cannot answer the device host's open");
    json_decref(answer);
    if (fd >= 0)
        close(fd);
}

/* What every message says, whoever waits for it. */
static void note_message(struct supervisor_host *host, const json_t *message)
{
    const char *type = control_type(message);

    /* Any message shows the host's loop runs (or waits on the daemon). */
    host->check_sent_usec = 0;
    host->heard_usec = vu_monotonic_usec();
    if (strcmp(type, "open") == 0) {
        answer_open(host, message);
    } else if (strcmp(type, "ready") == 0 && !host->ready) {
        host->ready = true;
        if (host->state != SUPERVISOR_RUNNING) {
            host->state = SUPERVISOR_RUNNING;
            vu_log(VFIO_USERD_LOG_NOTICE, host->name,
                   "device host restarted (pid %d, restart %u; the last one %s)", (int)host->pid,
                   host->restarts, host->last_failure);
        }
    } else if (strcmp(type, "error") == 0) {
        const char *field = json_string_value(json_object_get(message, "field"));
        const char *text = json_string_value(json_object_get(message, "message"));
        vu_log(VFIO_USERD_LOG_ERR, host->name, "device host refused the device: %s%s%s",
               field != NULL ? field : "", field != NULL && field[0] != '\0' ? ": " : "",
               text != NULL ? text : "no reason given");
    }
}

static void kill_host(struct supervisor_host *host)
{
    if (host->pidfd >= 0)
        pidfd_kill(host->pidfd);
}

/*
 * Reads and notes the host's next message: 1 with it in *message (the caller's to free),
 * -EAGAIN when none is waiting, else 0 or a negative errno once the channel is closed (the
 * host is ending: its exit follows) or broken. A host that breaks the protocol is killed.
 * The one place messages are read, whether the loop drains the channel or a caller waits
 * for an answer.
 */
static int next_message(struct supervisor_host *host, json_t **message)
{
    int ret;

    *message = NULL;
    if (host->channel_fd < 0)
        return 0;
    ret = control_receive(host->channel_fd, message);
    if (ret > 0) {
        note_message(host, *message);
        return 1;
    }
    if (ret == -EAGAIN)
        return ret;
    /* A host that closes its channel but lives on could no longer be checked or stopped:
     * it goes (a host that is ending anyway is merely hurried). */
    if (ret == 0 && host->pid != 0 && !host->stopping)
        kill_host(host);
    /* A reset connection is a host that died with messages unread: its exit says why. */
    if (ret < 0 && ret != -ECONNRESET) {
        vu_log(VFIO_USERD_LOG_ERR, host->name, "device host sent a bad control message: %s",
               strerror(-ret));
        kill_host(host);
    }
    return ret;
}

/* Reads what the host sent: false once the channel is closed or broken. */
static bool drain_channel(struct supervisor_host *host)
{
    json_t *message;
    int ret;

    /* A bounded number per wake-up: a host that floods its channel must not keep the main
     * loop from everything else. The rest waits for the next turn of the loop. */
    for (unsigned count = 0; count < SUPERVISOR_MESSAGES_PER_WAKEUP; count++) {
        ret = next_message(host, &message);
        if (ret <= 0)
            return ret == -EAGAIN;
        json_decref(message);
    }
    return true;
}

static int on_channel_event(sd_event_source *source, int fd, uint32_t revents, void *userdata)
{
    struct supervisor_host *host = userdata;

    if (!drain_channel(host))
        host->channel_source = sd_event_source_disable_unref(host->channel_source);
    return 0;
}

/*
 * Waits for the host's message of `type` (and sequence number `sequence` when not 0) for at
 * most `timeout_usec`, handling what else arrives meanwhile. -ESRCH when the host ended or
 * closed the channel, -ETIMEDOUT.
 */
static int wait_message(struct supervisor_host *host, const char *type, uint64_t sequence,
                        uint64_t timeout_usec, json_t **reply)
{
    uint64_t deadline = vu_monotonic_usec() + timeout_usec, now;
    json_t *message;
    int ret = -EAGAIN;

    *reply = NULL;
    for (;;) {
        struct pollfd fds[2] = {{.fd = host->channel_fd, .events = POLLIN},
                                {.fd = host->pidfd, .events = POLLIN}};

        /* The clock is read before each message, so the deadline holds however fast the
         * host sends other messages. */
        while ((now = vu_monotonic_usec()) < deadline && (ret = next_message(host, &message)) > 0) {
            if (strcmp(control_type(message), type) == 0 &&
                (sequence == 0 || control_sequence(message) == sequence)) {
                *reply = message;
                return 0;
            }
            if (strcmp(control_type(message), "error") == 0) {
                *reply = message; /* the host refused instead */
                return -EINVAL;
            }
            json_decref(message);
        }
        if (now >= deadline)
            return -ETIMEDOUT;
        if (ret != -EAGAIN)
            return -ESRCH;
        ret = poll(fds, 2, (int)((deadline - now + 999) / 1000));
        if (ret < 0 && errno != EINTR)
            return -errno;
        /* An ended host may still have left its last words in the channel. */
        if (ret > 0 && (fds[1].revents & POLLIN) && !(fds[0].revents & POLLIN))
            return -ESRCH;
    }
}

/* --- Ends and restarts. --- */

static void describe_exit(const siginfo_t *info, char *text, size_t size)
{
    if (info->si_code == CLD_EXITED)
        snprintf(text, size, "exited with status %d", info->si_status);
    else
        snprintf(text, size, "was killed by signal %s (%s)%s",
                 sigabbrev_np(info->si_status) != NULL ? sigabbrev_np(info->si_status) : "?",
                 strsignal(info->si_status), info->si_code == CLD_DUMPED ? ", core dumped" : "");
}

static int on_restart_timer(sd_event_source *source, uint64_t usec, void *userdata);

/* Reaps the ended host: its status in `info`. */
static void reap(struct supervisor_host *host, siginfo_t *info)
{
    memset(info, 0, sizeof(*info));
    if (waitid(P_PIDFD, (id_t)host->pidfd, info, WEXITED) < 0)
        info->si_code = CLD_KILLED; /* cannot happen for our own child; say it died */
}

/* After a host ended without being asked to: the restart policy decides what follows. */
static void handle_end(struct supervisor_host *host, const siginfo_t *info)
{
    bool clean = info->si_code == CLD_EXITED && info->si_status == 0;
    bool stuck = host->state == SUPERVISOR_STUCK;
    uint64_t now = vu_monotonic_usec(), delay;
    char cause[128];

    describe_exit(info, cause, sizeof(cause));
    /* No process: a start that failed before there was one (logged by its caller). */
    snprintf(host->last_failure, sizeof(host->last_failure), "%s",
             stuck            ? "stopped answering and was killed"
             : host->pid == 0 ? "could not be started"
                              : cause);
    if (host->pid != 0)
        vu_log(VFIO_USERD_LOG_ERR, host->name, "device host pid %d (plugin %s) %s", (int)host->pid,
               host->plugin_name, stuck ? "was stuck and is killed" : cause);
    /* A host that ran for a while had no part in a crash loop. */
    if (now - host->started_usec >= host->settings->start_limit_interval_usec)
        host->failures_in_row = 0;
    close_process(host);

    if (host->restart == CONFIG_RESTART_NO ||
        (clean && host->restart == CONFIG_RESTART_ON_FAILURE)) {
        host->state = SUPERVISOR_FAILED;
        vu_log(VFIO_USERD_LOG_WARNING, host->name,
               "not restarted (restart: %s); `vfio-userctl reset %s` starts it again",
               host->restart == CONFIG_RESTART_NO ? "no" : "on-failure", host->name);
        return;
    }
    if (start_limit_hit(host, now)) {
        host->state = SUPERVISOR_FAILED;
        vu_log(VFIO_USERD_LOG_ERR, host->name,
               "started %u times within %llu s: left failed; `vfio-userctl reset %s` starts it "
               "again",
               host->settings->start_limit_burst,
               (unsigned long long)(host->settings->start_limit_interval_usec / 1000000),
               host->name);
        return;
    }
    host->failures_in_row++;
    delay = SUPERVISOR_BACKOFF_MIN_USEC;
    for (unsigned i = 1; i < host->failures_in_row && delay < SUPERVISOR_BACKOFF_MAX_USEC; i++)
        delay *= 2;
    if (delay > SUPERVISOR_BACKOFF_MAX_USEC)
        delay = SUPERVISOR_BACKOFF_MAX_USEC;
    host->state = SUPERVISOR_RESTARTING;
    if (sd_event_source_set_time(host->restart_timer, now + delay) < 0 ||
        sd_event_source_set_enabled(host->restart_timer, SD_EVENT_ONESHOT) < 0) {
        host->state = SUPERVISOR_FAILED;
        vu_log(VFIO_USERD_LOG_ERR, host->name, "cannot schedule the restart; left failed");
    }
}

static int on_exit_event(sd_event_source *source, int fd, uint32_t revents, void *userdata)
{
    struct supervisor_host *host = userdata;
    siginfo_t info;

    /* Its last messages first: a refusal says why it ends. */
    if (host->channel_source != NULL)
        drain_channel(host);
    reap(host, &info);
    handle_end(host, &info);
    return 0;
}

static int on_restart_timer(sd_event_source *source, uint64_t usec, void *userdata)
{
    struct supervisor_host *host = userdata;
    char error[256];
    siginfo_t info = {.si_code = CLD_EXITED, .si_status = 126};

    host->restarts++;
    if (spawn(host, error, sizeof(error)) < 0) {
        vu_log(VFIO_USERD_LOG_ERR, host->name, "restart: %s", error);
        handle_end(host, &info); /* counts against the start limit like a crash */
    }
    return 0;
}

/* --- Health checks: one timer for every host. --- */

/* The hosts on the daemon's loop, and the one timer that checks them all: a timer per host
 * made sd-event sort thousands of them, and woke the daemon once for each. */
static struct {
    sd_event *event;
    sd_event_source *timer;
    struct supervisor_host *first;
    unsigned count;
    uint64_t pings;
} watch;

static uint64_t check_period(const struct supervisor_host *host)
{
    uint64_t period = host->settings->health_timeout_usec / HEALTH_CHECKS_PER_TIMEOUT;

    return period > HEALTH_CHECK_MIN_USEC ? period : HEALTH_CHECK_MIN_USEC;
}

static void earliest(uint64_t *next, uint64_t usec)
{
    if (usec < *next)
        *next = usec;
}

static void declare_stuck(struct supervisor_host *host, uint64_t silent_usec)
{
    host->state = SUPERVISOR_STUCK;
    vu_log(VFIO_USERD_LOG_ERR, host->name,
           "device host pid %d (plugin %s) has not answered for %.1f s (health_timeout): "
           "killing it",
           (int)host->pid, host->plugin_name, (double)silent_usec / 1e6);
    kill_host(host);
}

/*
 * Where the host's loop is, from its page, or LIVENESS_UNKNOWN. A host awake because it
 * waits for the daemon's answer (an open) counts from when the daemon last heard it.
 */
static enum liveness_state host_liveness(const struct supervisor_host *host, uint64_t now,
                                         uint64_t *since)
{
    enum liveness_state state =
        host->liveness != NULL ? liveness_read(host->liveness, now, since) : LIVENESS_UNKNOWN;

    if (state == LIVENESS_AWAKE && host->heard_usec > *since && host->heard_usec <= now)
        *since = host->heard_usec;
    return state;
}

/* The old way, for a host whose page says nothing: a ping, answered within the timeout. */
static void ping_host(struct supervisor_host *host, uint64_t now, uint64_t *next)
{
    uint64_t timeout = host->settings->health_timeout_usec;
    json_t *ping;

    if (host->check_sent_usec != 0 && now - host->check_sent_usec > timeout) {
        declare_stuck(host, now - host->check_sent_usec);
        return;
    }
    /* A full queue means it is not reading: the check already out catches that. */
    /* A check that could not even be sent counts as unanswered all the same. */
    ping = json_pack("{s:s, s:I}", "type", "ping", "seq", (json_int_t)++host->next_sequence);
    if (ping != NULL && host->channel_fd >= 0 && control_send(host->channel_fd, ping) == 0)
        watch.pings++;
    if (host->check_sent_usec == 0)
        host->check_sent_usec = now;
    json_decref(ping);
    earliest(next, now + check_period(host));
}

/* Checks one host at `now`; `next` comes no later than when it must be checked again. */
static void check_host(struct supervisor_host *host, uint64_t now, uint64_t *next)
{
    uint64_t timeout = host->settings->health_timeout_usec, since = 0;
    enum liveness_state state;

    if (host->pid == 0 || host->state == SUPERVISOR_STUCK || host->stopping)
        return;
    state = host_liveness(host, now, &since);
    if (state == LIVENESS_WAITING)
        host->check_sent_usec = 0;
    if (state == LIVENESS_WAITING || (state == LIVENESS_AWAKE && now - since <= timeout)) {
        earliest(next, state == LIVENESS_AWAKE ? since + timeout + 1 : now + check_period(host));
        if (host->ready)
            return;
    }
    /* Answers may wait unread, for instance while the main loop waited on another host:
     * they count before the host is judged. */
    if (host->channel_source != NULL && !drain_channel(host))
        host->channel_source = sd_event_source_disable_unref(host->channel_source);
    now = vu_monotonic_usec();
    if (!host->ready) {
        if (now - host->started_usec > SUPERVISOR_START_TIMEOUT_USEC) {
            host->state = SUPERVISOR_STUCK;
            vu_log(VFIO_USERD_LOG_ERR, host->name,
                   "device host pid %d did not come up within %u s: killing it", (int)host->pid,
                   SUPERVISOR_START_TIMEOUT_USEC / 1000000);
            kill_host(host);
            return;
        }
        earliest(next, host->started_usec + SUPERVISOR_START_TIMEOUT_USEC + 1);
        return;
    }
    state = host_liveness(host, now, &since);
    if (state == LIVENESS_UNKNOWN)
        ping_host(host, now, next);
    else if (state == LIVENESS_AWAKE && now - since > timeout)
        declare_stuck(host, now - since);
    else
        earliest(next, state == LIVENESS_AWAKE ? since + timeout + 1 : now + check_period(host));
}

static int on_health_timer(sd_event_source *source, uint64_t usec, void *userdata)
{
    uint64_t now = vu_monotonic_usec(), next = UINT64_MAX;

    /* Checking a host never frees one (a killed host ends through its exit event later). */
    for (struct supervisor_host *host = watch.first; host != NULL; host = host->watch_next)
        check_host(host, now, &next);
    if (next == UINT64_MAX || next < now + HEALTH_CHECK_MIN_USEC)
        next = now + (next == UINT64_MAX ? SUPERVISOR_START_TIMEOUT_USEC : HEALTH_CHECK_MIN_USEC);
    sd_event_source_set_time(source, next);
    return 0;
}

/* Adds the host to the health timer's list (the first host makes the timer). */
static int watch_host(sd_event *event, struct supervisor_host *host)
{
    int ret;

    if (watch.timer == NULL) {
        ret =
            sd_event_add_time_relative(event, &watch.timer, CLOCK_MONOTONIC, HEALTH_CHECK_MIN_USEC,
                                       HEALTH_CHECK_ACCURACY_USEC, on_health_timer, NULL);
        if (ret >= 0)
            ret = sd_event_source_set_enabled(watch.timer, SD_EVENT_ON);
        if (ret < 0) {
            watch.timer = sd_event_source_disable_unref(watch.timer);
            return ret;
        }
        watch.event = event;
    } else if (watch.event != event) {
        return -EXDEV; /* the daemon has one loop for its hosts */
    }
    host->watch_next = watch.first;
    if (watch.first != NULL)
        watch.first->watch_previous = host;
    watch.first = host;
    watch.count++;
    return 0;
}

static void unwatch_host(struct supervisor_host *host)
{
    if (host->watch_previous == NULL && watch.first != host)
        return; /* never watched */
    if (host->watch_previous != NULL)
        host->watch_previous->watch_next = host->watch_next;
    else
        watch.first = host->watch_next;
    if (host->watch_next != NULL)
        host->watch_next->watch_previous = host->watch_previous;
    host->watch_previous = host->watch_next = NULL;
    if (--watch.count == 0) {
        watch.timer = sd_event_source_disable_unref(watch.timer);
        watch.event = NULL;
    }
}

/* A host that just started is checked (its start deadline, then its page) within one period,
 * however far off the timer was set. */
static void watch_soon(const struct supervisor_host *host)
{
    uint64_t when = 0, soon = vu_monotonic_usec() + check_period(host);

    if (watch.timer != NULL && sd_event_source_get_time(watch.timer, &when) >= 0 && when > soon)
        sd_event_source_set_time(watch.timer, soon);
}

uint64_t supervisor_health_pings(void)
{
    return watch.pings;
}

/* --- Public. --- */

static void host_free(struct supervisor_host *host)
{
    close_process(host);
    unwatch_host(host);
    sd_event_source_disable_unref(host->restart_timer);
    if (host->owns_listen_fd && host->listen_fd >= 0)
        close(host->listen_fd);
    sd_event_unref(host->event);
    json_decref(host->params);
    free(host->start_times);
    free(host->name);
    free(host->plugin_name);
    free(host->plugin_path);
    free(host);
}

/* Stops the current process, if any: asked, then killed; reaped either way. */
static void stop_process(struct supervisor_host *host)
{
    struct pollfd wait = {.fd = host->pidfd, .events = POLLIN};
    siginfo_t info;
    json_t *stop;

    if (host->pid == 0)
        return;
    host->stopping = true;
    stop = json_pack("{s:s}", "type", "stop");
    if (stop == NULL || control_send(host->channel_fd, stop) < 0 ||
        poll(&wait, 1, SUPERVISOR_STOP_TIMEOUT_USEC / 1000) <= 0) {
        vu_log(VFIO_USERD_LOG_WARNING, host->name, "device host pid %d did not stop: killing it",
               (int)host->pid);
        kill_host(host);
    }
    json_decref(stop);
    reap(host, &info);
    close_process(host);
}

int supervisor_launch(sd_event *event, const struct supervisor_config *config, int listen_fd,
                      struct supervisor_host **result, char *error, size_t error_size)
{
    struct supervisor_host *host = calloc(1, sizeof(*host));
    int ret;

    *result = NULL;
    if (host == NULL)
        return -ENOMEM;
    host->event = sd_event_ref(event);
    host->pidfd = host->channel_fd = -1;
    host->open_log = (struct vu_log_ratelimit)VU_LOG_RATELIMIT_INIT(10 * 1000000, 10);
    host->settings = config->settings;
    host->restart = config->restart;
    host->poll_usec = config->poll_usec;
    host->validate_only = config->validate_only;
    /* A host that only validates gets no socket: /dev/null holds its place. */
    host->owns_listen_fd = config->validate_only;
    host->listen_fd = config->validate_only ? open("/dev/null", O_RDONLY | O_CLOEXEC) : listen_fd;
    host->name = strdup(config->name);
    host->plugin_name = strdup(config->plugin_name);
    host->plugin_path = strdup(config->plugin_path);
    host->params = json_deep_copy(config->params);
    host->start_times = calloc(config->settings->start_limit_burst, sizeof(uint64_t));
    if (host->listen_fd < 0 || host->name == NULL || host->plugin_name == NULL ||
        host->plugin_path == NULL || host->params == NULL || host->start_times == NULL) {
        ret = host->listen_fd < 0 ? -errno : -ENOMEM;
        snprintf(error, error_size, "cannot set up the device host: %s", strerror(-ret));
        goto fail;
    }
    host->change_user = geteuid() == 0;
    if (host->change_user) {
        ret = supervisor_resolve_user(config->settings, config->user, &host->uid, &host->gid, error,
                                      error_size);
        if (ret < 0)
            goto fail;
    }
    ret = watch_host(event, host);
    if (ret >= 0)
        ret = sd_event_add_time(event, &host->restart_timer, CLOCK_MONOTONIC, 0, 0,
                                on_restart_timer, host);
    if (ret >= 0)
        ret = sd_event_source_set_enabled(host->restart_timer, SD_EVENT_OFF);
    if (ret < 0) {
        snprintf(error, error_size, "cannot set up the device host's timers: %s", strerror(-ret));
        goto fail;
    }
    ret = spawn(host, error, error_size);
    if (ret < 0)
        goto fail;
    *result = host;
    return 0;
fail:
    host_free(host);
    return ret;
}

int supervisor_await(struct supervisor_host *host, struct vfio_userd_error *plugin_error,
                     char *error, size_t error_size)
{
    uint64_t waited = vu_monotonic_usec() - host->started_usec;
    json_t *reply = NULL;
    int ret;

    /* The deadline runs from the start: a host launched with others had its time already. */
    ret = wait_message(
        host, "ready", 0,
        waited < SUPERVISOR_START_TIMEOUT_USEC ? SUPERVISOR_START_TIMEOUT_USEC - waited : 0,
        &reply);
    if (ret == -EINVAL) {
        /* The plugin refused the device: the configuration's fault, as in thread mode. */
        snprintf(plugin_error->field, sizeof(plugin_error->field), "%s",
                 json_string_value(json_object_get(reply, "field")) ?: "");
        snprintf(plugin_error->message, sizeof(plugin_error->message), "%s",
                 json_string_value(json_object_get(reply, "message")) ?: "refused");
        json_int_t number = json_integer_value(json_object_get(reply, "errno"));
        ret = number > 0 && number < 4096 ? -(int)number : -EINVAL;
        snprintf(error, error_size, "%s", plugin_error->message);
        goto fail;
    }
    if (ret < 0) {
        snprintf(error, error_size, "the device host %s",
                 ret == -ETIMEDOUT ? "did not come up in time" : "ended while starting");
        goto fail;
    }
    host->state = SUPERVISOR_RUNNING;
    json_decref(reply);
    if (host->validate_only)
        supervisor_stop(host);
    return 0;
fail:
    json_decref(reply);
    host->stopping = true;
    kill_host(host);
    if (host->pidfd >= 0)
        reap(host, &(siginfo_t){0});
    host_free(host);
    return ret;
}

void supervisor_stop(struct supervisor_host *host)
{
    if (host == NULL)
        return;
    stop_process(host);
    host_free(host);
}

enum supervisor_state supervisor_state(const struct supervisor_host *host)
{
    return host->state;
}

const char *supervisor_state_name(enum supervisor_state state)
{
    switch (state) {
    case SUPERVISOR_RUNNING:
        return "running";
    case SUPERVISOR_STUCK:
        return "stuck";
    case SUPERVISOR_RESTARTING:
        return "restarting";
    case SUPERVISOR_FAILED:
        return "failed";
    }
    return "unknown";
}

pid_t supervisor_pid(const struct supervisor_host *host)
{
    return host->pid;
}

unsigned supervisor_restarts(const struct supervisor_host *host)
{
    return host->restarts;
}

const char *supervisor_last_failure(const struct supervisor_host *host)
{
    return host->last_failure[0] != '\0' ? host->last_failure : NULL;
}

/* Sends request `type` and waits for its answer. */
static int request(struct supervisor_host *host, const char *type, uint64_t timeout_usec,
                   json_t **reply)
{
    uint64_t sequence = ++host->next_sequence;
    json_t *message;
    int ret;

    *reply = NULL;
    if (host->pid == 0 || !host->ready)
        return -ESRCH;
    if (host->state == SUPERVISOR_STUCK)
        return -ETIMEDOUT;
    message = json_pack("{s:s, s:I}", "type", type, "seq", (json_int_t)sequence);
    if (message == NULL)
        return -ENOMEM;
    ret = control_send(host->channel_fd, message);
    json_decref(message);
    if (ret == -EAGAIN)
        return -ETIMEDOUT; /* it is not reading */
    if (ret < 0)
        return -ESRCH;
    return wait_message(host, type, sequence, timeout_usec, reply);
}

int supervisor_status(struct supervisor_host *host, uint64_t timeout_usec,
                      struct device_counters *status)
{
    json_t *reply;
    int ret = request(host, "status", timeout_usec, &reply);

    memset(status, 0, sizeof(*status));
    if (ret < 0)
        goto out;
    status->connected = json_is_true(json_object_get(reply, "connected"));
    status->client_pid = (pid_t)json_integer_value(json_object_get(reply, "client_pid"));
    status->client_fds = (uint32_t)json_integer_value(json_object_get(reply, "client_fds"));
    status->dma_maps = (uint32_t)json_integer_value(json_object_get(reply, "dma_maps"));
    ret = control_statistics_from_json(json_object_get(reply, "statistics"), &status->statistics);
out:
    json_decref(reply);
    return ret;
}

int supervisor_reset(struct supervisor_host *host, uint64_t timeout_usec)
{
    char error[256];
    json_t *reply = NULL;
    int ret;

    /* A host that is starting (a restart, or a reset whose wait ran out) is waited for, not
     * doubled: two hosts would serve one socket, and the first would be lost track of. */
    if (host->pid != 0 && !host->ready) {
        ret = wait_message(host, "ready", 0, timeout_usec, &reply);
        json_decref(reply);
        return ret == -EINVAL ? -EIO : ret;
    }
    if (host->state == SUPERVISOR_FAILED || host->state == SUPERVISOR_RESTARTING) {
        sd_event_source_set_enabled(host->restart_timer, SD_EVENT_OFF);
        host->start_count = host->start_next = 0;
        host->failures_in_row = 0;
        host->restarts++;
        host->state = SUPERVISOR_RESTARTING;
        ret = spawn(host, error, sizeof(error));
        if (ret < 0) {
            host->state = SUPERVISOR_FAILED;
            vu_log(VFIO_USERD_LOG_ERR, host->name, "reset: %s", error);
            return ret;
        }
        ret = wait_message(host, "ready", 0, timeout_usec, &reply);
        json_decref(reply);
        /* A host that fails again is handled by its exit, as any other. */
        return ret == -EINVAL ? -EIO : ret;
    }
    ret = request(host, "reset", timeout_usec, &reply);
    if (ret == 0) {
        json_int_t number = json_integer_value(json_object_get(reply, "errno"));
        ret = number > 0 && number < 4096 ? -(int)number : 0;
    }
    json_decref(reply);
    return ret;
}
