/*
 * The device manager: every device the daemon serves, from a drop-in file or an RPC, with
 * the worker it lives on, its socket and its configuration.
 *
 * Adding a device validates it completely (plugin known, parameters accepted by the
 * plugin, name and socket path free, socket created with its owner and mode) before it
 * becomes visible; a failure leaves nothing behind. Replacing a device builds the new one
 * first and swaps only when it is valid, so a broken change leaves the running device as
 * it was.
 */
#ifndef VFIO_USERD_DEVICES_H
#define VFIO_USERD_DEVICES_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "config.h"
#include "device.h"
#include "plugins.h"
#include "string_index.h"
#include "supervisor.h"
#include "workers.h"

/*
 * A device runs in one of two ways (config_isolation): in a device-host process the
 * supervisor watches (`host`, with the daemon keeping `listen_fd`), or on a worker thread
 * (`device` and `endpoint`, which owns the listening socket).
 */
struct managed_device {
    struct config_device *config; /* config->name is the device's name */
    char *source;                 /* drop-in file name ("tdev0.yaml"), or NULL for RPC */
    char *socket_path;
    const struct vfio_userd_plugin *plugin;
    enum config_isolation isolation; /* PROCESS or THREAD, never DEFAULT */
    /* Thread isolation. */
    size_t worker;
    struct vu_device *device;
    struct vu_endpoint *endpoint;
    bool starting;             /* begun, not finished (device_manager_add_begin) */
    struct worker_task *start; /* thread isolation, while starting: its start on its worker */
    /* Process isolation. */
    struct supervisor_host *host;
    int listen_fd;
    size_t index; /* in the manager's array when the last device_query started */
};

/* Where a device runs: its own setting, else the daemon's default_isolation. */
enum config_isolation device_isolation(const struct config_daemon *settings,
                                       const struct config_device *config);
const char *device_isolation_name(enum config_isolation isolation);

struct device_manager {
    const struct config_daemon *settings;
    const struct plugin_registry *plugins;
    struct workers *workers; /* NULL: validation only (--check-config) */
    size_t *worker_load;
    size_t last_worker; /* the worker the last device_manager_add chose */
    struct managed_device **devices;
    size_t count;
    size_t capacity;             /* slots in `devices` */
    struct string_index by_name; /* the devices in `devices`, by config->name */
    struct string_index by_path; /* and by socket_path */
    sd_event *event;             /* the calling thread's default loop; NULL without workers */
    sd_event_source *trim_timer; /* gives freed heap memory back after devices went */
    /* The setting the last failed add or replace is about ("socket.mode", "params.ram_size"),
     * for the admin socket's error data; "" when it was about none. */
    char error_field[CONFIG_FIELD_MAX];
};

/*
 * With `workers` (a serving daemon), the manager uses the calling thread's default sd-event
 * loop (sd_event_default()), which must be the control plane's: once devices have gone,
 * it hands the memory they used back to the system (malloc_trim) a moment later, once per
 * burst of removals rather than once per device.
 */
int device_manager_init(struct device_manager *manager, const struct config_daemon *settings,
                        const struct plugin_registry *plugins, struct workers *workers);

/* Whether `pid` is one of the device hosts (which are refused on the admin socket). */
bool device_manager_is_host(const struct device_manager *manager, pid_t pid);

/* Removes every device (clients disconnected, sockets unlinked, plugins' destroy called). */
void device_manager_fini(struct device_manager *manager);

struct managed_device *device_manager_find(const struct device_manager *manager, const char *name);
struct managed_device *device_manager_find_source(const struct device_manager *manager,
                                                  const char *source);

struct device_report;

/*
 * Adding a device, in two halves so that several new devices start at once: their device
 * hosts (process isolation) or their workers (thread isolation) bring them up while the
 * control plane goes on with the next.
 *
 * _begin creates and starts serving the device `config` describes (taken over in every
 * case) on the least loaded worker that answers (`last_worker` says which), or in a device
 * host, but does not wait for the worker or the host: it returns the device in `starting`,
 * already registered, so that names and socket paths stay unique (see
 * device_manager_starting). `source` names the drop-in file it came from, or is NULL.
 * _finish waits for it, or takes it away again and says why; with `report`, it also
 * gives the device's state and counters as device_manager_report() would (for a thread
 * device, as its start read them, without asking its worker again).
 *
 * On failure, `error` holds one line naming the file, line and column where one is known;
 * -ETIMEDOUT when the worker does not answer. Every started device must be finished before
 * anything else touches the manager.
 */
int device_manager_add_begin(struct device_manager *manager, struct config_device *config,
                             const char *source, struct managed_device **starting, char *error,
                             size_t error_size);
int device_manager_add_finish(struct device_manager *manager, struct managed_device *starting,
                              struct device_report *report, char *error, size_t error_size);

/*
 * Whether a device still starting (begun, not finished) holds the name or the socket path
 * `config` asks for: an add of `config` must then wait for it, whose success or failure
 * decides whether the name or path is free.
 */
bool device_manager_starting(const struct device_manager *manager,
                             const struct config_device *config);

/* Replaces `existing` by a device built from `config` (taken over), or leaves it as it
 * was and explains why. */
int device_manager_replace(struct device_manager *manager, struct managed_device *existing,
                           struct config_device *config, char *error, size_t error_size);

/*
 * Removes `device` from the manager and unlinks its socket. When its worker does not answer
 * in time, the device stops as soon as the worker comes back, before serving anything else.
 */
void device_manager_remove(struct device_manager *manager, struct managed_device *device);

/*
 * What the daemon's settings say about every device socket (DMA message chunks, the
 * descriptors one client may make the device hold, the VERSION deadline); on the endpoint's
 * own thread, before its first client.
 */
void device_endpoint_configure(struct vu_endpoint *endpoint, const struct config_daemon *settings);

/*
 * A socket's owner or group as the configuration gives it: a string of digits is the id
 * itself, used as it is whether or not an account has it (as chown(1) does), anything else
 * a name to look up. -ENOENT for an unknown name, or the lookup's negative errno.
 */
int device_lookup_user(const char *text, uid_t *uid);
int device_lookup_group(const char *text, gid_t *gid);

/*
 * Writes `device` to the first device directory as its drop-in (device->source names it),
 * from which it then comes, as after a restart. Without device directories, nothing to do.
 */
int device_manager_persist(struct device_manager *manager, struct managed_device *device,
                           char *error, size_t error_size);

/* --- What a device is doing, for the admin socket. --- */

/*
 * One admin request waits at most DEVICE_QUERY_DEADLINE_USEC in all for the devices it asks
 * about, however many: a worker or a device host that is slow but answers must not hold the
 * main thread for a wait per device. A worker that missed its turn once is not asked again
 * within the same query.
 */
#define DEVICE_QUERY_DEADLINE_USEC (2 * WORKERS_CALL_TIMEOUT_USEC)

struct device_query {
    uint64_t end;   /* CLOCK_MONOTONIC, microseconds */
    bool *given_up; /* per worker */
    /* The counters of the devices on workers, read at the start, by index in the manager's
     * array; NULL when they could not be (out of memory): then each is asked on its own. */
    struct device_counters *counters;
    bool *known;
    size_t count;
};

/*
 * Starts a query: one bounded wait for every worker, so stuck ones are known up front, and
 * one call to each worker that answers for the counters of all its devices, so that listing
 * ten thousand devices waits for each worker once, not for each device.
 */
void device_query_start(struct device_manager *manager, struct device_query *query);
void device_query_finish(struct device_query *query);

/* A device's state and counters, as device_get reports them. */
struct device_report {
    /* listening, connected, stuck, unknown (not asked in time), restarting, failed, error */
    const char *state;
    const char *error; /* why it is not serving, or NULL; valid until the manager changes */
    bool worker_stuck; /* thread isolation: its worker is stuck, and `stuck` says on what */
    struct worker_stuck stuck;
    bool known; /* `counters` were read */
    struct device_counters counters;
    pid_t pid;                /* the process it runs in; 0 while its device host is down */
    unsigned restarts;        /* device hosts started after the first */
    const char *last_failure; /* why the last device host ended, or NULL */
};

/* Reads `device`'s state and counters, within `query` (NULL: one device, one call's wait). */
void device_manager_report(struct device_manager *manager, const struct managed_device *device,
                           struct device_query *query, struct device_report *report);

/* Whether `device` is on a stuck worker; `stuck` says what holds it. Never for a device
 * host: the supervisor kills one that hangs. */
bool device_manager_stuck(struct device_manager *manager, const struct managed_device *device,
                          struct worker_stuck *stuck);

/*
 * DEVICE_RESET of `device`, as its client's would; a device whose host is down is started
 * again instead (see supervisor_reset). -ETIMEDOUT when it does not answer in time.
 */
int device_manager_reset(struct device_manager *manager, struct managed_device *device);

/*
 * Only validates `config` (not taken): plugin known and accepting the parameters. For
 * vfio-userd --check-config, which must not touch sockets.
 */
int device_manager_validate(struct device_manager *manager, const struct config_device *config,
                            char *error, size_t error_size);

#endif /* VFIO_USERD_DEVICES_H */
