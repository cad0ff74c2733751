/*
 * Control plane: start-up, drop-in synchronisation, inotify, signals and systemd
 * notifications; see daemon.h.
 */
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <time.h>
#include <unistd.h>

#include "admin_server.h"
#include "config_dirs.h"
#include "daemon.h"
#include "endpoint.h"
#include "log.h"

/* Changes in the drop-in directories are applied this long after the last event, so an
 * editor's write-and-rename or a burst of files becomes one synchronisation. */
#define RELOAD_DELAY_USEC     100000
#define RELOAD_DELAY_MAX_USEC 1000000

struct pending_device {
    const char *source;
    struct config_device *config;
};

static bool source_listed(const char *source, const struct pending_device *pending,
                          size_t pending_count, char *const *kept, size_t kept_count)
{
    for (size_t i = 0; i < pending_count; i++)
        if (strcmp(pending[i].source, source) == 0)
            return true;
    for (size_t i = 0; i < kept_count; i++)
        if (strcmp(kept[i], source) == 0)
            return true;
    return false;
}

__attribute__((format(printf, 3, 4))) static void
report_problem(const struct daemon *daemon, json_t *current, const char *format, ...);

/* Whether `device` lives on a worker that does not answer; `stuck` says what holds it. */
static bool device_stuck(struct daemon *daemon, const struct managed_device *device,
                         struct worker_stuck *stuck)
{
    return workers_stuck(daemon->workers, device->worker, stuck);
}

static void notify_status(struct daemon *daemon)
{
    size_t stuck = 0;

    for (size_t i = 0; i < daemon->devices.count; i++)
        stuck += device_stuck(daemon, daemon->devices.devices[i], NULL);
    sd_notifyf(0, "STATUS=Serving %zu device%s, %zu plugin%s%s%s", daemon->devices.count,
               daemon->devices.count == 1 ? "" : "s", daemon->plugins.count,
               daemon->plugins.count == 1 ? "" : "s",
               daemon->problems > 0 ? "; some drop-ins have errors (see the log)" : "",
               stuck > 0 ? "; some devices are stuck in plugin code (see the log)" : "");
}

/* A device on a stuck worker cannot be stopped or replaced: say so, and try again later. */
static bool defer_if_stuck(struct daemon *daemon, json_t *reported,
                           const struct managed_device *device, const char *change)
{
    struct worker_stuck stuck;

    if (!device_stuck(daemon, device, &stuck))
        return false;
    report_problem(daemon, reported,
                   "%s: device '%s' cannot be %s: its worker %zu is stuck%s%s%s%s; the change "
                   "waits until it answers again",
                   device->config->origin, device->config->name, change, stuck.worker,
                   stuck.state.callback != NULL ? " in the " : "",
                   stuck.state.callback != NULL ? stuck.state.callback : "",
                   stuck.state.callback != NULL ? " callback of plugin " : "",
                   stuck.state.callback != NULL ? stuck.state.plugin : "");
    daemon->deferred++;
    return true;
}

/*
 * Logs a drop-in problem at error level once: a file that stays broken is reported again
 * (at debug level) at later synchronisations only, until its problem changes or someone
 * asks for a reload.
 */
__attribute__((format(printf, 3, 4))) static void
report_problem(const struct daemon *daemon, json_t *current, const char *format, ...)
{
    char message[2048];
    va_list args;

    va_start(args, format);
    vsnprintf(message, sizeof(message), format, args);
    va_end(args);
    vu_log(json_object_get(daemon->reported, message) != NULL ? VFIO_USERD_LOG_DEBUG
                                                              : VFIO_USERD_LOG_ERR,
           NULL, "%s", message);
    json_object_set_new(current, message, json_true());
}

/*
 * Reads one listed drop-in: 0 with `*config` set, 1 for a masked name (nothing to load),
 * or a negative errno with one line in `error` saying what is wrong with it.
 */
static int load_drop_in(const struct config_dirs_entry *entry, struct config_device **config,
                        char *error, size_t error_size)
{
    if (entry->kind == CONFIG_DIRS_MASKED)
        return 1;
    if (entry->kind == CONFIG_DIRS_BROKEN) {
        snprintf(error, error_size, "%s: %s", entry->path,
                 entry->error == -EINVAL ? "not a regular file" : strerror(-entry->error));
        return entry->error < 0 ? entry->error : -EINVAL;
    }
    return config_device_load(entry->path, config, error, error_size);
}

/*
 * New devices start this many at a time: each process-isolation host loads and checks its
 * plugin on its own CPU, and each worker creates its thread-isolation devices one after the
 * other, while the daemon starts the next, rather than the daemon waiting for each in turn;
 * within the hosts' start deadline however many devices a directory holds.
 */
#define SYNC_STARTING_MAX 32

/* Waits for the devices started by device_manager_add_begin(); how many failed. */
static size_t finish_starting(struct daemon *daemon, json_t *reported,
                              struct managed_device **starting, size_t *count)
{
    char error[1024];
    size_t failed = 0;

    for (size_t i = 0; i < *count; i++) {
        int ret =
            device_manager_add_finish(&daemon->devices, starting[i], NULL, error, sizeof(error));
        if (ret < 0) {
            /* As for a device that could not even begin (daemon_synchronize). */
            if (ret == -ETIMEDOUT)
                daemon->deferred++;
            report_problem(daemon, reported, "%s%s", error,
                           ret == -ETIMEDOUT ? "; tried again once the worker answers" : "");
            failed++;
        }
    }
    *count = 0;
    return failed;
}

size_t daemon_synchronize(struct daemon *daemon)
{
    struct managed_device *starting[SYNC_STARTING_MAX];
    size_t starting_count = 0;
    struct config_dirs_list list = {0};
    struct pending_device *pending = NULL;
    char **kept = NULL; /* drop-ins that failed: their running device stays as it was */
    size_t pending_count = 0, kept_count = 0, problems = 0;
    json_t *reported = json_object();
    char error[1024];
    int ret;

    ret = config_dirs_scan(daemon->settings->devices_dirs, daemon->settings->devices_dir_count,
                           &list, error, sizeof(error));
    if (ret < 0) {
        /* Without a full listing, masks are unknown: change nothing. */
        report_problem(daemon, reported, "%s; devices left as they were", error);
        problems = 1;
        goto out;
    }
    daemon->deferred = 0;
    pending = calloc(list.count + 1, sizeof(*pending));
    /* Failed drop-ins, and devices on stuck workers. */
    kept = calloc(list.count + daemon->devices.count + 1, sizeof(*kept));
    if (pending == NULL || kept == NULL || reported == NULL) {
        vu_log(VFIO_USERD_LOG_ERR, NULL, "out of memory; devices left as they were");
        problems = 1;
        goto out;
    }

    for (size_t i = 0; i < list.count; i++) {
        const struct config_dirs_entry *entry = &list.entries[i];
        struct config_device *config = NULL;

        ret = load_drop_in(entry, &config, error, sizeof(error));
        if (ret > 0)
            continue;
        if (ret < 0) {
            report_problem(daemon, reported, "%s", error);
            kept[kept_count++] = entry->name;
            problems++;
            continue;
        }
        if (!config->enabled) {
            config_device_free(config);
            continue;
        }
        pending[pending_count++] = (struct pending_device){entry->name, config};
    }

    /* Removals first, so a name or socket a removed device held is free for the rest. */
    for (size_t i = daemon->devices.count; i-- > 0;) {
        struct managed_device *device = daemon->devices.devices[i];
        if (device->source == NULL ||
            source_listed(device->source, pending, pending_count, kept, kept_count))
            continue;
        if (defer_if_stuck(daemon, reported, device, "removed")) {
            kept[kept_count++] = device->source;
            problems++;
            continue;
        }
        device_manager_remove(&daemon->devices, device);
    }
    for (size_t i = 0; i < pending_count; i++) {
        struct managed_device *existing =
            device_manager_find_source(&daemon->devices, pending[i].source);
        struct config_device *config = pending[i].config;

        pending[i].config = NULL;
        if (existing != NULL && config_device_equal(existing->config, config)) {
            config_device_free(config);
            continue;
        }
        if (existing != NULL && defer_if_stuck(daemon, reported, existing, "changed")) {
            config_device_free(config);
            problems++;
            continue;
        }
        if (existing == NULL) {
            struct managed_device *device;
            ret = device_manager_add_begin(&daemon->devices, config, pending[i].source, &device,
                                           error, sizeof(error));
            if (ret == 0 && device != NULL)
                starting[starting_count++] = device;
            if (starting_count == SYNC_STARTING_MAX)
                problems += finish_starting(daemon, reported, starting, &starting_count);
        } else {
            ret = device_manager_replace(&daemon->devices, existing, config, error, sizeof(error));
        }
        if (ret < 0) {
            /* A worker that did not answer in time: tried again once it answers, without
             * waiting for the file to change. */
            if (ret == -ETIMEDOUT)
                daemon->deferred++;
            report_problem(daemon, reported, "%s%s%s", error,
                           existing != NULL ? "; the running device is unchanged" : "",
                           ret == -ETIMEDOUT ? "; tried again once the worker answers" : "");
            problems++;
        }
    }
    problems += finish_starting(daemon, reported, starting, &starting_count);
out:
    for (size_t i = 0; pending != NULL && i < pending_count; i++)
        config_device_free(pending[i].config);
    free(pending);
    free(kept);
    config_dirs_list_free(&list);
    if (reported != NULL) {
        json_decref(daemon->reported);
        daemon->reported = reported;
    }
    daemon->problems = problems;
    return problems;
}

/*
 * Watches the nearest existing ancestor of a missing directory for the creation of the
 * one child on the way to it, so the directory is watched (at the next synchronisation)
 * once it exists. Returns the watch, or -1.
 */
static int watch_ancestor(struct daemon *daemon, const char *directory,
                          struct ancestor_watch *watch)
{
    char path[4096];

    if (snprintf(path, sizeof(path), "%s", directory) >= (int)sizeof(path))
        return -1;
    for (;;) {
        char *slash = strrchr(path, '/');
        int wd;

        if (slash == NULL)
            return -1;
        /* One level up; the child below it is the one whose creation matters. */
        snprintf(watch->child, sizeof(watch->child), "%s", slash + 1);
        *slash = '\0';
        /* IN_MASK_ADD: the ancestor may be a watched device directory itself. */
        wd = inotify_add_watch(daemon->inotify_fd, path[0] != '\0' ? path : "/",
                               IN_CREATE | IN_MOVED_TO | IN_ONLYDIR | IN_MASK_ADD);
        if (wd >= 0) {
            watch->wd = wd;
            return wd;
        }
        if (errno != ENOENT)
            return -1;
    }
}

static bool is_directory_watch(const struct daemon *daemon, int wd)
{
    for (size_t i = 0; i < daemon->settings->devices_dir_count; i++)
        if (daemon->directory_watches[i] == wd)
            return true;
    return false;
}

static void watch_directories(struct daemon *daemon)
{
    const uint32_t mask = IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE | IN_DELETE |
                          IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR;
    struct ancestor_watch previous[VFIO_USERD_MAX_DEVICE_DIRECTORIES];
    size_t previous_count = daemon->ancestor_count;

    memcpy(previous, daemon->ancestors, previous_count * sizeof(previous[0]));
    daemon->ancestor_count = 0;
    /* Adding a watch twice is harmless; directories created since the last call join. */
    for (size_t i = 0; i < daemon->settings->devices_dir_count; i++) {
        const char *directory = daemon->settings->devices_dirs[i];
        int wd = inotify_add_watch(daemon->inotify_fd, directory, mask);

        daemon->directory_watches[i] = wd;
        if (wd >= 0)
            continue;
        if (errno != ENOENT)
            vu_log(VFIO_USERD_LOG_WARNING, NULL, "cannot watch %s: %m", directory);
        else if (daemon->ancestor_count < VFIO_USERD_MAX_DEVICE_DIRECTORIES &&
                 watch_ancestor(daemon, directory, &daemon->ancestors[daemon->ancestor_count]) >= 0)
            daemon->ancestor_count++;
    }
    /* Ancestors no longer waited on stop being watched, unless still needed otherwise. */
    for (size_t i = 0; i < previous_count; i++) {
        bool needed = is_directory_watch(daemon, previous[i].wd);
        for (size_t j = 0; j < daemon->ancestor_count && !needed; j++)
            needed = daemon->ancestors[j].wd == previous[i].wd;
        if (!needed)
            inotify_rm_watch(daemon->inotify_fd, previous[i].wd);
    }
}

/* Whether an inotify event can change what the drop-in directories hold. */
static bool event_is_relevant(const struct daemon *daemon, const struct inotify_event *event)
{
    if (event->mask & IN_Q_OVERFLOW)
        return true;
    /* A missing directory, or one on the way to it, was created. */
    for (size_t i = 0; i < daemon->ancestor_count; i++)
        if (daemon->ancestors[i].wd == event->wd && event->len > 0 &&
            strcmp(daemon->ancestors[i].child, event->name) == 0)
            return true;
    /* In a device directory: the directory itself (gone, moved), or a name a drop-in could
     * have, not an editor's swap file. */
    return is_directory_watch(daemon, event->wd) &&
           (event->len == 0 || config_dirs_name_wanted(event->name));
}

void daemon_reload(struct daemon *daemon, const char *reason, bool explicit_request)
{
    uint64_t now = 0;

    /* Whoever asked for a reload wants to see every problem, old ones included. */
    if (explicit_request)
        json_object_clear(daemon->reported);

    sd_event_now(daemon->event, CLOCK_MONOTONIC, &now);
    sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu", (unsigned long long)now);
    vu_log(VFIO_USERD_LOG_DEBUG, NULL, "synchronising devices (%s)", reason);
    watch_directories(daemon);
    daemon_synchronize(daemon);
    sd_notify(0, "READY=1");
    notify_status(daemon);
}

static int on_reload_timer(sd_event_source *source, uint64_t usec, void *userdata)
{
    struct daemon *daemon = userdata;

    daemon->reload_pending_since = 0;
    daemon_reload(daemon, "drop-in directories changed", false);
    return 0;
}

static int on_inotify(sd_event_source *source, int fd, uint32_t revents, void *userdata)
{
    struct daemon *daemon = userdata;
    char buffer[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
    bool relevant = false;
    uint64_t now, when;
    ssize_t length;

    while ((length = read(fd, buffer, sizeof(buffer))) > 0) {
        for (char *cursor = buffer; cursor < buffer + length;) {
            const struct inotify_event *event = (const struct inotify_event *)cursor;
            relevant = relevant || event_is_relevant(daemon, event);
            cursor += sizeof(*event) + event->len;
        }
    }
    if (!relevant || sd_event_now(daemon->event, CLOCK_MONOTONIC, &now) < 0)
        return 0;
    /* Each change pushes the synchronisation back, but never more than a second after the
     * first one waiting: a directory that never stops changing still gets synchronised. */
    if (daemon->reload_pending_since == 0)
        daemon->reload_pending_since = now;
    when = now + RELOAD_DELAY_USEC;
    if (when > daemon->reload_pending_since + RELOAD_DELAY_MAX_USEC)
        when = daemon->reload_pending_since + RELOAD_DELAY_MAX_USEC;
    if (daemon->reload_timer == NULL) {
        if (sd_event_add_time(daemon->event, &daemon->reload_timer, CLOCK_MONOTONIC, when, 0,
                              on_reload_timer, daemon) < 0)
            on_reload_timer(NULL, now, daemon);
        return 0;
    }
    sd_event_source_set_time(daemon->reload_timer, when);
    sd_event_source_set_enabled(daemon->reload_timer, SD_EVENT_ONESHOT);
    return 0;
}

/*
 * Looks for stuck workers twice a second. A worker that answers again gets the drop-in
 * changes left for it. This never waits on a worker: the main loop, and with it the
 * systemd watchdog, stays alive whatever a plugin does.
 */
static int on_heartbeat(sd_event_source *source, uint64_t usec, void *userdata)
{
    struct daemon *daemon = userdata;

    if (workers_heartbeat(daemon->workers)) {
        if (daemon->deferred > 0)
            daemon_reload(daemon, "a stuck worker answers again", false);
        else
            notify_status(daemon);
    }
    sd_event_source_set_time(source, usec + DAEMON_HEARTBEAT_USEC);
    return 0;
}

static int on_signal(sd_event_source *source, const struct signalfd_siginfo *info, void *userdata)
{
    struct daemon *daemon = userdata;

    if (info->ssi_signo == SIGHUP) {
        daemon_reload(daemon, "SIGHUP", true);
        return 0;
    }
    vu_log(VFIO_USERD_LOG_INFO, NULL, "%s received, stopping", strsignal((int)info->ssi_signo));
    sd_notify(0, "STOPPING=1");
    sd_event_exit(daemon->event, 0);
    return 0;
}

static int make_directory(const char *path)
{
    /* chmod too: the daemon's umask keeps new files private. */
    if (mkdir(path, 0755) == 0)
        return chmod(path, 0755) < 0 ? -errno : 0;
    return errno == EEXIST ? 0 : -errno;
}

/*
 * Logs the devices left on stuck workers, which cannot be stopped: their sockets are
 * removed all the same, and their clients lose them when the process exits.
 */
static void log_stuck_devices(struct daemon *daemon)
{
    for (size_t i = 0; i < daemon->devices.count; i++) {
        const struct managed_device *device = daemon->devices.devices[i];
        struct worker_stuck stuck;

        if (!device_stuck(daemon, device, &stuck))
            continue;
        if (stuck.state.callback != NULL)
            vu_log(VFIO_USERD_LOG_ERR, device->config->name,
                   "cannot be stopped: worker %zu has been stuck for %llu s in the %s callback "
                   "of plugin %s (device %s); giving it up",
                   stuck.worker, (unsigned long long)stuck.seconds, stuck.state.callback,
                   stuck.state.plugin, stuck.state.device);
        else
            vu_log(VFIO_USERD_LOG_ERR, device->config->name,
                   "cannot be stopped: worker %zu has not answered for %llu s; giving it up",
                   stuck.worker, (unsigned long long)stuck.seconds);
    }
}

/* Returns how many stuck workers had to be left running (then plugins stay loaded). */
static size_t daemon_free(struct daemon *daemon)
{
    size_t left = 0;

    sd_event_source_disable_unref(daemon->heartbeat_timer);
    admin_server_stop(daemon->admin);
    if (daemon->workers != NULL && workers_probe(daemon->workers, WORKERS_CALL_TIMEOUT_USEC) > 0)
        log_stuck_devices(daemon);
    /* Devices on stuck workers are dropped at once, their sockets unlinked. */
    device_manager_fini(&daemon->devices);
    left = workers_stop(daemon->workers);
    if (left > 0)
        vu_log(VFIO_USERD_LOG_ERR, NULL,
               "%zu worker%s stuck in plugin code: exiting without joining %s", left,
               left == 1 ? "" : "s", left == 1 ? "it" : "them");
    else
        plugin_registry_free(&daemon->plugins);
    sd_event_source_disable_unref(daemon->reload_timer);
    sd_event_source_disable_unref(daemon->inotify_source);
    if (daemon->inotify_fd >= 0)
        close(daemon->inotify_fd);
    sd_event_unref(daemon->event);
    json_decref(daemon->reported);
    config_daemon_free(daemon->settings);
    return left;
}

/*
 * After a SIGKILL the sockets of devices that no longer exist stay behind in the daemon's
 * own socket directory, refusing every connection. Once the drop-ins are served, a socket
 * file there that no device claims and nobody listens on is removed; anything else (a live
 * socket, a file that is not a socket, another program's file) is left alone.
 */
static void remove_stale_sockets(struct daemon *daemon)
{
    char directory[CONFIG_SOCKET_PATH_MAX], path[CONFIG_SOCKET_PATH_MAX];
    struct dirent *entry;
    size_t removed = 0;
    DIR *listing;

    if (snprintf(directory, sizeof(directory), "%s/devices", daemon->settings->runtime_dir) >=
        (int)sizeof(directory))
        return;
    listing = opendir(directory);
    if (listing == NULL)
        return;
    while ((entry = readdir(listing)) != NULL) {
        bool claimed = false;

        if (entry->d_type != DT_SOCK && entry->d_type != DT_UNKNOWN)
            continue;
        if (snprintf(path, sizeof(path), "%s/%s", directory, entry->d_name) >= (int)sizeof(path))
            continue;
        for (size_t i = 0; i < daemon->devices.count && !claimed; i++)
            claimed = strcmp(daemon->devices.devices[i]->socket_path, path) == 0;
        if (!claimed && vu_socket_remove_stale(path) == 1) {
            vu_log(VFIO_USERD_LOG_INFO, NULL, "removed %s, left by a daemon that did not stop",
                   path);
            removed++;
        }
    }
    closedir(listing);
    if (removed > 0)
        vu_log(VFIO_USERD_LOG_NOTICE, NULL, "removed %zu stale device socket%s", removed,
               removed == 1 ? "" : "s");
}

/*
 * Ends the process with a worker still inside plugin code: _exit, so that no library
 * destructor (a plugin's own, through _dl_fini) and no atexit handler runs under it.
 */
static _Noreturn void exit_leaving_workers(void)
{
    fflush(NULL);
    _exit(EXIT_FAILURE);
}

int daemon_run(struct config_daemon *settings)
{
    struct daemon daemon = {.settings = settings, .inotify_fd = -1};
    sigset_t signals;
    int ret;

    /* Sockets are private until their configured mode is applied. */
    umask(0077);
    /* Blocked before any thread starts, so only the event loop's signalfd sees them. */
    sigemptyset(&signals);
    sigaddset(&signals, SIGTERM);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &signals, NULL);
    signal(SIGPIPE, SIG_IGN);

    ret = sd_event_default(&daemon.event);
    if (ret < 0)
        goto fail;
    if ((ret = sd_event_add_signal(daemon.event, NULL, SIGTERM, on_signal, &daemon)) < 0 ||
        (ret = sd_event_add_signal(daemon.event, NULL, SIGINT, on_signal, &daemon)) < 0 ||
        (ret = sd_event_add_signal(daemon.event, NULL, SIGHUP, on_signal, &daemon)) < 0)
        goto fail;
    ret = sd_event_set_watchdog(daemon.event, true);
    if (ret < 0)
        goto fail;
    ret = make_directory(settings->runtime_dir);
    if (ret < 0) {
        vu_log(VFIO_USERD_LOG_ERR, NULL, "runtime directory %s: %s", settings->runtime_dir,
               strerror(-ret));
        goto fail;
    }

    plugin_registry_load(&daemon.plugins, settings->plugin_dirs, settings->plugin_dir_count);
    ret = workers_start(settings->worker_threads, &daemon.workers);
    if (ret < 0)
        goto fail;
    ret = device_manager_init(&daemon.devices, settings, &daemon.plugins, daemon.workers);
    if (ret < 0)
        goto fail;

    daemon.inotify_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (daemon.inotify_fd < 0) {
        ret = -errno;
        goto fail;
    }
    ret = sd_event_add_io(daemon.event, &daemon.inotify_source, daemon.inotify_fd, EPOLLIN,
                          on_inotify, &daemon);
    if (ret < 0)
        goto fail;
    sd_event_now(daemon.event, CLOCK_MONOTONIC, &daemon.started_usec);
    ret = admin_server_start(&daemon, &daemon.admin);
    if (ret < 0)
        goto fail;
    watch_directories(&daemon);
    daemon_synchronize(&daemon);
    remove_stale_sockets(&daemon);

    vu_log(VFIO_USERD_LOG_INFO, NULL,
           "vfio-userd " VFIO_USERD_VERSION " ready: %zu plugin%s, %zu device%s, %zu worker%s",
           daemon.plugins.count, daemon.plugins.count == 1 ? "" : "s", daemon.devices.count,
           daemon.devices.count == 1 ? "" : "s", workers_count(daemon.workers),
           workers_count(daemon.workers) == 1 ? "" : "s");
    sd_notify(0, "READY=1");
    notify_status(&daemon);
    ret = sd_event_add_time_relative(daemon.event, &daemon.heartbeat_timer, CLOCK_MONOTONIC,
                                     DAEMON_HEARTBEAT_USEC, 0, on_heartbeat, &daemon);
    if (ret < 0)
        goto fail;
    sd_event_source_set_enabled(daemon.heartbeat_timer, SD_EVENT_ON);
    ret = sd_event_loop(daemon.event);
    if (ret < 0)
        goto fail;
    /* A worker that could not be stopped makes the stop a failure (vfio-userd(8)). */
    if (daemon_free(&daemon) > 0)
        exit_leaving_workers();
    return EXIT_SUCCESS;

fail:
    vu_log(VFIO_USERD_LOG_ERR, NULL, "cannot start: %s", strerror(-ret));
    if (daemon_free(&daemon) > 0)
        exit_leaving_workers();
    return EXIT_FAILURE;
}

int daemon_check_config(const struct config_daemon *settings)
{
    struct plugin_registry plugins = {0};
    struct device_manager manager;
    struct config_dirs_list list = {0};
    json_t *names = json_object(), *sockets = json_object(); /* taken, to spot duplicates */
    size_t problems;
    char error[1024], location[512], path[CONFIG_SOCKET_PATH_MAX];
    int ret;

    problems =
        (size_t)plugin_registry_load(&plugins, settings->plugin_dirs, settings->plugin_dir_count);
    device_manager_init(&manager, settings, &plugins, NULL);
    if (names == NULL || sockets == NULL) {
        fprintf(stderr, "out of memory\n");
        problems++;
        goto out;
    }
    ret = config_dirs_scan(settings->devices_dirs, settings->devices_dir_count, &list, error,
                           sizeof(error));
    if (ret < 0) {
        fprintf(stderr, "%s\n", error);
        problems++;
        goto out;
    }
    for (size_t i = 0; i < list.count; i++) {
        const struct config_dirs_entry *entry = &list.entries[i];
        struct config_device *config = NULL;

        ret = load_drop_in(entry, &config, error, sizeof(error));
        if (ret > 0)
            continue;
        if (ret < 0) {
            fprintf(stderr, "%s\n", error);
            problems++;
            continue;
        }
        /* Disabled devices are not started, so they take no name and no socket. */
        if (!config->enabled) {
            config_device_free(config);
            continue;
        }
        if (json_object_get(names, config->name) != NULL) {
            config_device_location(config, "name", location, sizeof(location));
            fprintf(stderr, "%s: name: device '%s' is already defined by %s\n", location,
                    config->name, json_string_value(json_object_get(names, config->name)));
            problems++;
        } else if (config_daemon_device_socket(settings, config, path, sizeof(path)) < 0) {
            config_device_location(config, "socket.path", location, sizeof(location));
            fprintf(stderr, "%s: socket.path: the socket path is too long\n", location);
            problems++;
        } else if (json_object_get(sockets, path) != NULL) {
            config_device_location(config, "socket.path", location, sizeof(location));
            fprintf(stderr, "%s: socket.path: %s is already used by device '%s'\n", location, path,
                    json_string_value(json_object_get(sockets, path)));
            problems++;
        } else if (device_manager_validate(&manager, config, error, sizeof(error)) < 0) {
            fprintf(stderr, "%s\n", error);
            problems++;
        } else if (json_object_set_new(names, config->name, json_string(entry->path)) < 0 ||
                   json_object_set_new(sockets, path, json_string(config->name)) < 0) {
            fprintf(stderr, "out of memory\n");
            problems++;
        }
        config_device_free(config);
    }
out:
    json_decref(names);
    json_decref(sockets);
    config_dirs_list_free(&list);
    device_manager_fini(&manager);
    plugin_registry_free(&plugins);
    if (problems > 0) {
        fprintf(stderr, "%zu problem%s found\n", problems, problems == 1 ? "" : "s");
        return EXIT_FAILURE;
    }
    return EXIT_SUCCESS;
}
