/*
 * The supervisor of process isolation: one device-host process (vfio-userd-device-host) per
 * device, started with fork and exec, sandboxed, and watched from the daemon's main loop.
 *
 * The device manager keeps each device's listening socket; the host gets a copy and serves the
 * protocol on it. When a host dies (a crash, a kill, an exit the daemon did not ask for),
 * the socket stays bound, so the VMM's next connection waits in its backlog for the next
 * host; the device is restarted as its `restart` policy says, after a back-off that doubles
 * from SUPERVISOR_BACKOFF_MIN_USEC, and at most start_limit_burst times per
 * start_limit_interval before it stays "failed" until reset. A host whose loop has not come
 * back to its wait for health_timeout (a plugin stuck in a callback) is "stuck": it is
 * killed, then treated as crashed. The daemon reads that from a page each host shares with
 * it (host/liveness.h), so an idle host is never woken to be checked.
 * Every wait for a host has a deadline; none stalls the main loop.
 */
#ifndef VFIO_USERD_SUPERVISOR_H
#define VFIO_USERD_SUPERVISOR_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <systemd/sd-event.h>

#include "config.h"
#include "device.h"

#define SUPERVISOR_BACKOFF_MIN_USEC 100000u
#define SUPERVISOR_BACKOFF_MAX_USEC (5u * 1000 * 1000)
/* How long a new host has to load its plugin and create the device. */
#define SUPERVISOR_START_TIMEOUT_USEC (5u * 1000 * 1000)
/* How long a host has to stop when asked, before it is killed. */
#define SUPERVISOR_STOP_TIMEOUT_USEC 1000000u

struct supervisor_host;

enum supervisor_state {
    SUPERVISOR_RUNNING,    /* serving: listening or connected */
    SUPERVISOR_STUCK,      /* missed its health checks; being killed */
    SUPERVISOR_RESTARTING, /* ended; a new host starts after the back-off */
    SUPERVISOR_FAILED,     /* ended, and stays down (restart: no, or the start limit) */
};

/* What a device host is started with: copies are taken, nothing here is kept. */
struct supervisor_config {
    const char *name;
    const char *plugin_name;
    const char *plugin_path;
    const json_t *params;
    const struct config_daemon *settings; /* must outlive the host */
    enum config_restart restart;
    const char *user;   /* NULL: the daemon's device_user, or its fallbacks */
    uint32_t poll_usec; /* the device's poll_us */
    /* Only create the device, in a host of its own, to see whether the plugin accepts the
     * parameters, and end: what replacing a device checks before it stops the old one. */
    bool validate_only;
};

/*
 * A device's counters at one moment, however it runs: what a device host reports when asked
 * (supervisor_status), and what the daemon reads on a worker for a device in thread
 * isolation. One struct, so both ways fill the same report.
 */
struct device_counters {
    bool connected;
    pid_t client_pid;
    uint32_t client_fds; /* descriptors the client made the device hold */
    uint32_t dma_maps;
    struct vu_device_statistics statistics;
};

/*
 * Starts a host for the device on `listen_fd`, which the caller keeps open until
 * supervisor_stop() (every host started gets a copy), in two halves, so that several hosts
 * start at once: launch spawns the host and returns; await waits until it serves, within
 * SUPERVISOR_START_TIMEOUT_USEC of the launch. On failure, `error` says why in one line, and
 * a refusal by the plugin comes as `plugin_error`, with the field it names, and the
 * plugin's errno; await frees a host that failed. With config->validate_only, `listen_fd`
 * is not used, and await frees the host in any case.
 */
int supervisor_launch(sd_event *event, const struct supervisor_config *config, int listen_fd,
                      struct supervisor_host **host, char *error, size_t error_size);
int supervisor_await(struct supervisor_host *host, struct vfio_userd_error *plugin_error,
                     char *error, size_t error_size);

/* Stops the host (asked, then killed after SUPERVISOR_STOP_TIMEOUT_USEC) and frees it. */
void supervisor_stop(struct supervisor_host *host);

enum supervisor_state supervisor_state(const struct supervisor_host *host);
const char *supervisor_state_name(enum supervisor_state state);

/* The running host's process id, or 0 between hosts. */
pid_t supervisor_pid(const struct supervisor_host *host);

/* Pings sent to hosts whose liveness page said nothing, since the daemon started. */
uint64_t supervisor_health_pings(void);

/* Hosts started after the first. */
unsigned supervisor_restarts(const struct supervisor_host *host);

/* Why the last host ended ("killed by signal SEGV", ...), or NULL while the first runs. */
const char *supervisor_last_failure(const struct supervisor_host *host);

/* Asks the running host for its counters, waiting at most `timeout_usec`: -ETIMEDOUT, or
 * -ESRCH between hosts. */
int supervisor_status(struct supervisor_host *host, uint64_t timeout_usec,
                      struct device_counters *status);

/*
 * DEVICE_RESET in the running host, within `timeout_usec`; the device's own refusal is its
 * errno. A host that is down (failed, or waiting out its back-off) is started again at
 * once instead, with its start limit cleared: reset is how an operator revives a device.
 */
int supervisor_reset(struct supervisor_host *host, uint64_t timeout_usec);

/* The account device hosts run as: `user`, else the daemon's device_user, else
 * CONFIG_DEVICE_USER, else CONFIG_DEVICE_USER_FALLBACK. -ENOENT when it has none. */
int supervisor_resolve_user(const struct config_daemon *settings, const char *user, uid_t *uid,
                            gid_t *gid, char *error, size_t error_size);

/* Where vfio-userd-device-host is: next to the daemon's executable (a build tree), else
 * VFIO_USERD_PKGLIBDIR. */
const char *supervisor_host_binary(void);

#endif /* VFIO_USERD_SUPERVISOR_H */
