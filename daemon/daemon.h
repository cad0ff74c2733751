/*
 * The broker's control plane: it loads the plugins, starts the workers, turns the device
 * drop-ins into devices and keeps them in step with the directories (inotify, SIGHUP),
 * and talks to systemd (readiness, status, reload, stop, watchdog). It runs on the main
 * thread's sd-event loop; device I/O happens on the workers.
 */
#ifndef VFIO_USERD_DAEMON_H
#define VFIO_USERD_DAEMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include <systemd/sd-event.h>

#include "config.h"
#include "devices.h"
#include "plugins.h"
#include "workers.h"

struct admin_server;

/* The configuration allows at most this many device directories. */
#define VFIO_USERD_MAX_DEVICE_DIRECTORIES CONFIG_LIST_MAX

/* A missing device directory's nearest existing ancestor, watched for `child`. */
struct ancestor_watch {
    int wd;
    char child[256];
};

struct daemon {
    sd_event *event;
    struct config_daemon *settings;
    struct plugin_registry plugins;
    struct workers *workers;
    struct device_manager devices;
    int inotify_fd;
    sd_event_source *inotify_source;
    sd_event_source *reload_timer;
    uint64_t reload_pending_since; /* first change the pending synchronisation waits on */
    int directory_watches[VFIO_USERD_MAX_DEVICE_DIRECTORIES]; /* per devices_dirs; -1 */
    struct ancestor_watch ancestors[VFIO_USERD_MAX_DEVICE_DIRECTORIES];
    size_t ancestor_count;
    size_t problems;       /* drop-ins that failed on the last synchronisation */
    json_t *reported;      /* their messages, each logged once at error level */
    uint64_t started_usec; /* CLOCK_MONOTONIC */
    struct admin_server *admin;
    sd_event_source *heartbeat_timer; /* looks for stuck workers (workers_heartbeat) */
    size_t deferred; /* drop-in changes left for a stuck worker, done once it answers */
};

/* How often the main loop looks for stuck workers. */
#define DAEMON_HEARTBEAT_USEC 500000

/*
 * Serves until SIGTERM or SIGINT; returns the process exit code. `settings` is taken.
 * A worker stuck in a plugin callback is given up after WORKERS_CALL_TIMEOUT_USEC: the
 * daemon then removes every socket it can and ends the process itself with _exit
 * (EXIT_FAILURE) without joining that thread, so that neither plugins nor any library's
 * destructors are unloaded or run under it.
 */
int daemon_run(struct config_daemon *settings);

/*
 * vfio-userd --check-config: validates every drop-in against the loaded plugins without
 * creating sockets, printing one "FILE:LINE:COLUMN: message" line per problem to stderr.
 * Returns the exit code (0 or 1).
 */
int daemon_check_config(const struct config_daemon *settings);

/* Re-reads the drop-in directories, telling systemd (RELOADING=1 ... READY=1). A problem
 * already logged is logged at error level again only for an explicit request (SIGHUP,
 * daemon_reload). */
void daemon_reload(struct daemon *daemon, const char *reason, bool explicit_request);

/* Brings the devices in line with the drop-in directories; returns the problem count.
 * A device whose worker is stuck is left as it is until the worker answers again. */
size_t daemon_synchronize(struct daemon *daemon);

#endif /* VFIO_USERD_DAEMON_H */
