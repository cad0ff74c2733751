/*
 * vfio-userd's configuration: the daemon's own file and the device drop-ins.
 *
 * A device reaches the daemon either as a YAML drop-in or as a JSON-RPC device_add; both are
 * jansson objects by the time they get here and go through the same validator, so a rule
 * holds in both places and an error reads the same, except for where it points:
 *
 *   /etc/vfio-userd/devices.d/tdev0.yaml:6:9: socket.mode: "0999" is not an octal mode ...
 *   device_add: params: expected a mapping, found a list
 *
 * The device keeps its parsed document, so that a refusal from the plugin (which names a
 * parameter) can still point at the line that set it. Nothing here touches the system beyond
 * reading the named files and, for config_device_persist(), writing one.
 *
 * Errors are negative errno values; each function that can fail for a reason a person must
 * fix writes one line to `error` (CONFIG_ERROR_MAX bytes are always enough).
 */
#ifndef VFIO_USERD_CONFIG_H
#define VFIO_USERD_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <jansson.h>
#include <vfio-userd/plugin.h>

#include "yaml_json.h"

#ifndef VFIO_USERD_SYSCONFDIR
#define VFIO_USERD_SYSCONFDIR "/etc"
#endif
#ifndef VFIO_USERD_PLUGINDIR
#define VFIO_USERD_PLUGINDIR "/usr/lib/vfio-userd/plugins"
#endif
/* Holds the vendor's device drop-ins (devices.d) next to the plugins. */
#ifndef VFIO_USERD_PKGLIBDIR
#define VFIO_USERD_PKGLIBDIR "/usr/lib/vfio-userd"
#endif
#ifndef VFIO_USERD_RUNTIMEDIR
#define VFIO_USERD_RUNTIMEDIR "/run/vfio-userd"
#endif

#define CONFIG_DAEMON_PATH        VFIO_USERD_SYSCONFDIR "/vfio-userd/vfio-userd.yaml"
#define CONFIG_DEVICES_DIR_ETC    VFIO_USERD_SYSCONFDIR "/vfio-userd/devices.d"
#define CONFIG_DEVICES_DIR_RUN    VFIO_USERD_RUNTIMEDIR "/devices.d"
#define CONFIG_DEVICES_DIR_LIB    VFIO_USERD_PKGLIBDIR "/devices.d"
#define CONFIG_RUNTIME_DIR        VFIO_USERD_RUNTIMEDIR
#define CONFIG_ADMIN_SOCKET_MODE  0660
#define CONFIG_DEVICE_SOCKET_MODE 0660
#define CONFIG_LOG_LEVEL          VFIO_USERD_LOG_INFO

#define CONFIG_NAME_MAX        64  /* device and plugin names */
#define CONFIG_ACCOUNT_MAX     256 /* user and group names, as LOGIN_NAME_MAX */
#define CONFIG_SOCKET_PATH_MAX 108 /* sizeof(sun_path), including the NUL */
#define CONFIG_LIST_MAX        64  /* entries of devices_dirs and plugin_dirs */
#define CONFIG_WORKERS_MAX     256
#define CONFIG_ERROR_MAX       512
#define CONFIG_FIELD_MAX       256 /* a setting's path, "socket.mode", "params.queues[0].size" */

/* poll_us: at most a second. */
#define CONFIG_POLL_USEC_MAX 1000000

/* handshake_timeout, in seconds: at most an hour. */
#define CONFIG_HANDSHAKE_TIMEOUT_MAX_SECONDS 3600

/*
 * Where a device's plugin runs (vfio-userd.yaml(5), ISOLATION): in a sandboxed device-host
 * process of its own that the daemon supervises, or on one of the daemon's worker threads.
 */
enum config_isolation {
    CONFIG_ISOLATION_DEFAULT = 0, /* a device that does not say: the daemon's default_isolation */
    CONFIG_ISOLATION_PROCESS,
    CONFIG_ISOLATION_THREAD,
};

/* Whether a device host that ended is started again (process isolation only). */
enum config_restart {
    CONFIG_RESTART_ON_FAILURE = 0, /* after a crash, a kill or a non-zero exit */
    CONFIG_RESTART_ALWAYS,         /* after any end the daemon did not ask for */
    CONFIG_RESTART_NO,
};

/* The account device hosts run as when neither the device nor the daemon names one; where
 * it does not exist, "nobody". */
#define CONFIG_DEVICE_USER          "_vfio-userd"
#define CONFIG_DEVICE_USER_FALLBACK "nobody"
/* A device host missing its health checks this long is stuck: it is killed and restarted. */
#define CONFIG_HEALTH_TIMEOUT_USEC (5u * 1000 * 1000)
/* The data (heap and private memory) one device host may use: RLIMIT_DATA. */
#define CONFIG_DEVICE_MEMORY_LIMIT (1ull << 30)
/* At most this many starts of one device host within the interval; then it stays failed
 * until reset. */
#define CONFIG_START_LIMIT_BURST         5
#define CONFIG_START_LIMIT_INTERVAL_USEC (10u * 1000 * 1000)

/* One device, from a drop-in file or from device_add. */
struct config_device {
    char name[CONFIG_NAME_MAX + 1];
    char plugin[CONFIG_NAME_MAX + 1];
    bool enabled;
    char *socket_path;  /* NULL: RUNTIME_DIR/devices/NAME.sock */
    char *socket_user;  /* NULL: the daemon's user owns the socket */
    char *socket_group; /* NULL: the daemon's group */
    bool socket_mode_set;
    mode_t socket_mode;              /* CONFIG_DEVICE_SOCKET_MODE unless set */
    json_t *params;                  /* always an object; owned */
    enum config_isolation isolation; /* DEFAULT unless the device says */
    enum config_restart restart;     /* "no" or false (YAML 1.1's reading of no) mean NO */
    char *user; /* the device host's account; NULL: the daemon's device_user. Refused with
                 * isolation: thread, where the plugin runs as the daemon. */
    /* Busy-poll the device's socket this long after each request before sleeping (poll_us);
     * 0: sleep at once. For operators who dedicate a CPU to a device. */
    uint32_t poll_usec;
    char *origin; /* the file's path, or the context given to config_device_from_json() */
    struct yaml_json_document *document; /* positions in the file; NULL for device_add */
};

/* The daemon's settings; every field holds its default unless the file or a flag set it. */
struct config_daemon {
    char **devices_dirs; /* earlier directories mask files of the same name in later ones */
    size_t devices_dir_count;
    char **plugin_dirs;
    size_t plugin_dir_count;
    char *runtime_dir;
    char *admin_socket; /* NULL: RUNTIME_DIR/admin.sock, see config_daemon_admin_socket() */
    mode_t admin_socket_mode;
    char *admin_socket_group;    /* NULL: the daemon's group */
    unsigned int worker_threads; /* 0: one per online CPU */
    int log_level;               /* a syslog priority, LOG_ERR to LOG_DEBUG */
    /* The most data one server-to-client DMA_READ/DMA_WRITE message carries. */
    uint32_t dma_message_chunk_size;
    /* The most descriptors one client may make its device hold (vu_endpoint_set_max_client_fds). */
    uint32_t max_client_fds;
    /* How long a client has to complete VERSION (vu_endpoint_set_handshake_timeout); 0: no
     * limit. */
    uint64_t handshake_timeout_usec;
    /* Where devices that do not say run: PROCESS unless set (never DEFAULT). */
    enum config_isolation default_isolation;
    char *device_user; /* NULL: CONFIG_DEVICE_USER, or CONFIG_DEVICE_USER_FALLBACK */
    uint64_t health_timeout_usec;
    uint64_t device_memory_limit; /* bytes; 0: no limit */
    unsigned int start_limit_burst;
    uint64_t start_limit_interval_usec;
    char *source; /* the file that was read, or NULL */
};

/* [A-Za-z0-9_.-]{1,64}, not starting with a dot: safe as a file name and in a socket path. */
bool config_name_valid(const char *name);

/*
 * Reads and validates a device drop-in. `name` defaults to the file name without ".yaml".
 * Returns 0, or -EINVAL (an invalid file, described as FILE:LINE:COLUMN: FIELD: problem), or
 * the errno of reading it.
 */
int config_device_load(const char *path, struct config_device **device, char *error,
                       size_t error_size);

/*
 * Validates a device given as a JSON object (device_add). `context` starts each error
 * message, e.g. "device_add". `name` is required unless `default_name` gives one. The object
 * is copied, not kept.
 */
int config_device_from_json(const json_t *settings, const char *context, const char *default_name,
                            struct config_device **device, char *error, size_t error_size);

/* The same, and `field` (CONFIG_FIELD_MAX bytes, or NULL) names the setting a refusal is
 * about, such as "socket.mode", or is "" when it is about none: for a caller that reports
 * errors to a program (the admin socket's error data). */
int config_device_from_json_field(const json_t *settings, const char *context,
                                  const char *default_name, struct config_device **device,
                                  char *error, size_t error_size, char *field);

void config_device_free(struct config_device *device);

/* Same settings (the origin does not count): what daemon_reload uses to see a change. */
bool config_device_equal(const struct config_device *a, const struct config_device *b);

/*
 * Where the setting at `path` (yaml_json_position() syntax, e.g. "name", "socket.mode") was
 * written, as "FILE:LINE:COLUMN" of its value, or of the nearest enclosing key when the file
 * does not set it. Without a file, writes the origin alone ("device_add").
 */
void config_device_location(const struct config_device *device, const char *path, char *buffer,
                            size_t size);

/*
 * Where params.FIELD was set, as "FILE:LINE:COLUMN" of its value. When the plugin names a
 * parameter the file does not set, points at the params key, else at the top of the file.
 * Without a file, writes the origin alone ("device_add"). `field` may use the path syntax of
 * yaml_json_position(), relative to params ("queues[0].size").
 */
void config_device_param_location(const struct config_device *device, const char *field,
                                  char *buffer, size_t size);

/* A plugin's refusal as one line: "FILE:LINE:COLUMN: params.FIELD: message". */
void config_device_format_plugin_error(const struct config_device *device,
                                       const struct vfio_userd_error *plugin_error, char *buffer,
                                       size_t size);

/*
 * The device as the JSON object config_device_from_json() accepts (also what device_get
 * returns): name, plugin, enabled, then isolation, restart and user only when the device sets
 * them (isolation unless DEFAULT, restart unless on-failure, so that a device that leaves
 * isolation to the daemon keeps doing so once persisted), socket (only the keys that are set;
 * mode as "0660"), params. NULL when out of memory.
 */
json_t *config_device_to_json(const struct config_device *device);

/* The device as drop-in YAML text (malloc'd); config_device_load() reads it back equal. */
int config_device_to_yaml(const struct config_device *device, char **text);

/*
 * Writes the device to DIRECTORY/NAME.yaml atomically (a temporary file in the same
 * directory, fsync, rename, fsync of the directory), replacing a file of that name. Creates
 * DIRECTORY itself (not its parents) if missing.
 */
int config_device_persist(const struct config_device *device, const char *directory, char *error,
                          size_t error_size);

/* All defaults: the three device directories, the plugin directory, /run/vfio-userd, etc. */
int config_daemon_new(struct config_daemon **daemon);

/*
 * Reads the daemon's file over the defaults. A missing file leaves the defaults unless
 * `must_exist` (e.g. given with -c); an unreadable or invalid one is an error.
 */
int config_daemon_load(const char *path, bool must_exist, struct config_daemon **daemon,
                       char *error, size_t error_size);

/*
 * Merges `settings` (an object with the file's keys; null values restore the default) into
 * `daemon`, validated as the file is. All or nothing: on error `daemon` is unchanged. For
 * command-line flags, with `context` such as "command line".
 */
int config_daemon_apply(struct config_daemon *daemon, const json_t *settings, const char *context,
                        char *error, size_t error_size);

void config_daemon_free(struct config_daemon *daemon);

/* The admin socket's path; -ENAMETOOLONG when it does not fit a UNIX socket address. */
int config_daemon_admin_socket(const struct config_daemon *daemon, char *buffer, size_t size);

/* The device's socket path: its own, or RUNTIME_DIR/devices/NAME.sock; -ENAMETOOLONG. */
int config_daemon_device_socket(const struct config_daemon *daemon,
                                const struct config_device *device, char *buffer, size_t size);

/*
 * Adds one `--param KEY=VALUE` to `params` (a JSON object), the value as a string:
 * plugins parse numbers and sizes from strings. -EINVAL with a message in `error` for a
 * missing '=' or key, a key given twice or a value that is not UTF-8; -ENOMEM.
 */
int config_param_assign(json_t *params, const char *assignment, char *error, size_t error_size);

/* "err", "warning", "notice", "info", "debug" <-> LOG_ERR..LOG_DEBUG; -EINVAL / NULL. */
int config_log_level_from_name(const char *name);
const char *config_log_level_name(int level);

#endif /* VFIO_USERD_CONFIG_H */
