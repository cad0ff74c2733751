/*
 * JSON-RPC 2.0 envelope handling and the admin methods; see admin_methods.h.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "admin_methods.h"
#include "config_dirs.h"
#include "daemon.h"
#include "log.h"
#include "supervisor.h"

/* What a method reports when it fails. */
struct method_error {
    int code;
    char message[1024];
    json_t *data; /* owned */
};

typedef json_t *(*method_fn)(struct daemon *daemon, const struct admin_peer *peer, json_t *params,
                             struct method_error *error);

static json_t *fail(struct method_error *error, int code, json_t *data, const char *format, ...)
    __attribute__((format(printf, 4, 5)));

static json_t *fail(struct method_error *error, int code, json_t *data, const char *format, ...)
{
    va_list args;

    error->code = code;
    json_decref(error->data);
    error->data = data;
    va_start(args, format);
    vsnprintf(error->message, sizeof(error->message), format, args);
    va_end(args);
    return NULL;
}

/* {"field": FIELD} for errors that name an offending parameter. */
static json_t *field_data(const char *field)
{
    return json_pack("{s:s}", "field", field);
}

/*
 * Checks `params` against the keys a method takes. Every method takes named parameters;
 * an absent params is an empty object.
 */
static bool check_params(json_t *params, const char *const *allowed, struct method_error *error)
{
    const char *key;
    json_t *value;

    if (!json_is_object(params)) {
        fail(error, ADMIN_INVALID_PARAMS, NULL, "params must be an object of named parameters");
        return false;
    }
    json_object_foreach (params, key, value) {
        bool known = false;
        for (size_t i = 0; allowed[i] != NULL && !known; i++)
            known = strcmp(allowed[i], key) == 0;
        if (!known) {
            fail(error, ADMIN_INVALID_PARAMS, field_data(key), "unknown parameter '%s'", key);
            return false;
        }
    }
    return true;
}

static const char *required_name(json_t *params, struct method_error *error)
{
    json_t *name = json_object_get(params, "name");

    if (!json_is_string(name)) {
        fail(error, ADMIN_INVALID_PARAMS, field_data("name"),
             name == NULL ? "missing parameter 'name'" : "'name' must be a string");
        return NULL;
    }
    return json_string_value(name);
}

static bool optional_bool(json_t *params, const char *key, bool *value, struct method_error *error)
{
    json_t *member = json_object_get(params, key);

    *value = false;
    if (member == NULL)
        return true;
    if (!json_is_boolean(member)) {
        fail(error, ADMIN_INVALID_PARAMS, field_data(key), "'%s' must be true or false", key);
        return false;
    }
    *value = json_is_true(member);
    return true;
}

static struct managed_device *existing_device(struct daemon *daemon, const char *name,
                                              struct method_error *error)
{
    struct managed_device *device = device_manager_find(&daemon->devices, name);

    if (device == NULL)
        fail(error, ADMIN_DEVICE_NOT_FOUND, field_data("name"), "no device named '%s'", name);
    return device;
}

static void log_change(const struct admin_peer *peer, const char *what, const char *name)
{
    vu_log(VFIO_USERD_LOG_NOTICE, name, "%s by admin client pid %d uid %u gid %u", what,
           (int)peer->credentials.pid, (unsigned)peer->credentials.uid,
           (unsigned)peer->credentials.gid);
}

/* --- Stuck workers. --- */

/* {"worker", "device", "plugin", "callback", "seconds"}: what holds a stuck worker. */
static json_t *stuck_json(const struct worker_stuck *stuck)
{
    const struct vu_callback_state *state = &stuck->state;

    return json_pack("{s:I, s:o, s:o, s:o, s:I}", "worker", (json_int_t)stuck->worker, "device",
                     state->callback != NULL ? json_string(state->device) : json_null(), "plugin",
                     state->callback != NULL ? json_string(state->plugin) : json_null(), "callback",
                     state->callback != NULL ? json_string(state->callback) : json_null(),
                     "seconds", (json_int_t)stuck->seconds);
}

/* One line a person can act on: which worker, device, plugin and callback. */
static void stuck_text(const struct worker_stuck *stuck, char *text, size_t size)
{
    const struct vu_callback_state *state = &stuck->state;

    if (state->callback != NULL)
        snprintf(text, size,
                 "worker %zu has been stuck for %llu s in the %s callback of plugin %s "
                 "(device '%s')",
                 stuck->worker, (unsigned long long)stuck->seconds, state->callback, state->plugin,
                 state->device);
    else
        snprintf(text, size, "worker %zu has not answered for %llu s", stuck->worker,
                 (unsigned long long)stuck->seconds);
}

/* The error of a method that needs the stuck worker of device `name`. */
static json_t *fail_stuck(struct method_error *error, const char *name,
                          const struct worker_stuck *stuck)
{
    char text[512];
    json_t *data = stuck_json(stuck);

    stuck_text(stuck, text, sizeof(text));
    if (data != NULL)
        json_object_set_new(data, "name", json_string(name));
    return fail(error, ADMIN_DEVICE_STUCK, data,
                "device '%s' is stuck: %s; try again once it answers, or restart the daemon", name,
                text);
}

/* Refuses a method on a stuck device; true when it may go ahead. */
static bool check_not_stuck(struct daemon *daemon, const struct managed_device *device,
                            struct method_error *error)
{
    struct worker_stuck stuck;

    if (!device_manager_stuck(&daemon->devices, device, &stuck))
        return true;
    fail_stuck(error, device->config->name, &stuck);
    return false;
}

/* --- Device description. --- */

/* A counter of the snapshot, or null when the worker could not be asked. */
static json_t *counter(bool known, uint64_t value)
{
    return known ? json_integer((json_int_t)value) : json_null();
}

/*
 * The device as device_get shows it: its configuration, its state and its counters, which
 * are null when the device could not be asked in time; `report` as device_manager_report()
 * gives it.
 */
static json_t *describe_report(struct daemon *daemon, struct managed_device *device,
                               const struct device_report *given)
{
    struct device_report report = *given;
    uint64_t messages = 0;
    bool known;
    char text[512];
    json_t *error = json_null(), *stuck_data = json_null();

    known = report.known;
    for (size_t i = 0; i <= VU_COMMAND_MAX; i++)
        messages += report.counters.statistics.messages[i];
    if (report.worker_stuck) {
        stuck_text(&report.stuck, text, sizeof(text));
        error = json_string(text);
        stuck_data = stuck_json(&report.stuck);
    } else if (report.error != NULL) {
        error = json_string(report.error);
    }
    return json_pack(
        "{s:s, s:s, s:s, s:s, s:b, s:s, s:o, s:o, s:s, s:o, s:i, s:o, s:o, s:o, s:o, "
        "s:o, s:o, s:o, s:o, s:o, s:o}",
        "name", device->config->name, "plugin", device->plugin->name, "socket", device->socket_path,
        "source", device->config->origin, "persistent", device->source != NULL, "state",
        report.state, "error", error, "stuck", stuck_data, "isolation",
        device_isolation_name(device->isolation), "pid",
        report.pid > 0 ? json_integer(report.pid) : json_null(), "restarts", (int)report.restarts,
        "last_failure",
        report.last_failure != NULL ? json_string(report.last_failure) : json_null(), "client_pid",
        report.counters.connected ? json_integer(report.counters.client_pid) : json_null(),
        "connections", counter(known, report.counters.statistics.connections), "messages",
        counter(known, messages), "errors", counter(known, report.counters.statistics.errors),
        "bytes_received", counter(known, report.counters.statistics.bytes_received), "bytes_sent",
        counter(known, report.counters.statistics.bytes_sent), "dma_maps",
        counter(known, report.counters.dma_maps), "client_fds",
        counter(known, report.counters.client_fds), "config",
        config_device_to_json(device->config));
}

/* describe_report() of what `query` (NULL for one device) reads of the device. */
static json_t *describe_device(struct daemon *daemon, struct managed_device *device,
                               struct device_query *query)
{
    struct device_report report;

    device_manager_report(&daemon->devices, device, query, &report);
    return describe_report(daemon, device, &report);
}

/* --- Methods. --- */

static json_t *method_device_list(struct daemon *daemon, const struct admin_peer *peer,
                                  json_t *params, struct method_error *error)
{
    static const char *const allowed[] = {NULL};
    struct device_query query;
    json_t *list;

    if (!check_params(params, allowed, error))
        return NULL;
    device_query_start(&daemon->devices, &query);
    list = json_array();
    for (size_t i = 0; list != NULL && i < daemon->devices.count; i++)
        if (json_array_append_new(
                list, describe_device(daemon, daemon->devices.devices[i], &query)) < 0) {
            json_decref(list);
            list = NULL;
        }
    device_query_finish(&query);
    if (list == NULL)
        return fail(error, ADMIN_INTERNAL_ERROR, NULL, "out of memory");
    return list;
}

static json_t *method_device_get(struct daemon *daemon, const struct admin_peer *peer,
                                 json_t *params, struct method_error *error)
{
    static const char *const allowed[] = {"name", NULL};
    struct managed_device *device;
    const char *name;

    if (!check_params(params, allowed, error) || (name = required_name(params, error)) == NULL ||
        (device = existing_device(daemon, name, error)) == NULL)
        return NULL;
    return describe_device(daemon, device, NULL);
}

/* The error's data for a refusal about setting `field`, or none when it names none. */
static json_t *field_or_none(const char *field)
{
    return field[0] != '\0' ? field_data(field) : NULL;
}

/* Whether a drop-in named `file` exists in any device directory (masks and broken
 * files included), or a device already comes from one: persisting must not replace it.
 * What was found goes to `path`. */
static bool drop_in_exists(const struct daemon *daemon, const char *file, char *path, size_t size)
{
    if (config_dirs_find(daemon->settings->devices_dirs, daemon->settings->devices_dir_count, file,
                         path, size))
        return true;
    snprintf(path, size, "a device from %s", file);
    return device_manager_find_source(&daemon->devices, file) != NULL;
}

/* A device_add whose device is starting: device_manager_add_begin() took it. */
struct pending_add {
    struct managed_device *starting;
    size_t worker; /* the one chosen for it, for the error when it does not answer */
    bool persist;
    char name[CONFIG_NAME_MAX + 1];
};

/* The error of a device_add the device manager refused (`ret`, explained in `message`). */
static json_t *fail_add(struct daemon *daemon, int ret, size_t worker, const char *name,
                        const char *message, struct method_error *error)
{
    if (ret == -ETIMEDOUT) {
        /* The worker chosen for it does not answer: that one, not any other stuck one. */
        struct worker_stuck stuck = {.worker = worker};
        workers_stuck(daemon->workers, worker, &stuck);
        return fail_stuck(error, name, &stuck);
    }
    return fail(error,
                ret == -EINVAL || ret == -ERANGE ? ADMIN_INVALID_PARAMS : ADMIN_OPERATION_FAILED,
                field_or_none(daemon->devices.error_field), "%s", message);
}

/*
 * The first half of device_add: checks the request and begins the device. 1 when it is
 * starting (`add` says which), 0 when refused (`error` says why), -EAGAIN when
 * `others_starting` and it must wait for them: it persists, or its name or socket path is
 * one that a device still starting holds, and whether that one comes up decides whether
 * this one may. Nothing is changed then.
 */
static int begin_add(struct daemon *daemon, json_t *params, bool others_starting,
                     struct pending_add *add, struct method_error *error)
{
    static const char *const allowed[] = {"name",    "plugin",    "enabled", "socket",
                                          "params",  "isolation", "restart", "user",
                                          "poll_us", "persist",   NULL};
    struct config_device *config = NULL;
    json_t *settings = NULL;
    char message[1024], source[CONFIG_NAME_MAX + 8];
    char field[CONFIG_FIELD_MAX] = "";
    int ret;

    if (!check_params(params, allowed, error) ||
        !optional_bool(params, "persist", &add->persist, error))
        return 0;
    settings = json_deep_copy(params);
    if (settings == NULL) {
        fail(error, ADMIN_INTERNAL_ERROR, NULL, "out of memory");
        return 0;
    }
    json_object_del(settings, "persist");
    ret = config_device_from_json_field(settings, "device_add", NULL, &config, message,
                                        sizeof(message), field);
    json_decref(settings);
    if (ret < 0) {
        fail(error, ADMIN_INVALID_PARAMS, field_or_none(field), "%s", message);
        return 0;
    }
    if (others_starting && (add->persist || device_manager_starting(&daemon->devices, config))) {
        config_device_free(config);
        return -EAGAIN;
    }
    ret = 0;
    if (!config->enabled)
        fail(error, ADMIN_INVALID_PARAMS, field_data("enabled"),
             "device_add: enabled: a disabled device cannot be added");
    else if (device_manager_find(&daemon->devices, config->name) != NULL)
        fail(error, ADMIN_DEVICE_EXISTS, field_data("name"), "device '%s' already exists",
             config->name);
    else if (plugin_registry_find(&daemon->plugins, config->plugin) == NULL)
        fail(error, ADMIN_PLUGIN_NOT_FOUND, field_data("plugin"), "no plugin named '%s'",
             config->plugin);
    else
        ret = 1;
    if (ret == 0) {
        config_device_free(config);
        return 0;
    }
    snprintf(source, sizeof(source), "%s.yaml", config->name);
    snprintf(add->name, sizeof(add->name), "%s", config->name);
    if (add->persist && drop_in_exists(daemon, source, message, sizeof(message))) {
        config_device_free(config);
        fail(error, ADMIN_PERSIST_FAILED, field_data("name"),
             "%s already exists; persisting device '%s' would replace it", message, add->name);
        return 0;
    }
    ret = device_manager_add_begin(&daemon->devices, config, add->persist ? source : NULL,
                                   &add->starting, message, sizeof(message));
    add->worker = daemon->devices.last_worker;
    if (ret < 0) {
        fail_add(daemon, ret, add->worker, add->name, message, error);
        return 0;
    }
    return 1;
}

/* The second half: waits for the device, persists it if asked, and describes it. */
static json_t *finish_add(struct daemon *daemon, const struct admin_peer *peer,
                          struct pending_add *add, struct method_error *error)
{
    struct managed_device *device = add->starting;
    struct device_report report;
    char message[1024];
    int ret =
        device_manager_add_finish(&daemon->devices, device, &report, message, sizeof(message));

    if (ret < 0)
        return fail_add(daemon, ret, add->worker, add->name, message, error);
    if (add->persist &&
        device_manager_persist(&daemon->devices, device, message, sizeof(message)) < 0) {
        device_manager_remove(&daemon->devices, device);
        return fail(error, ADMIN_PERSIST_FAILED, NULL, "%s", message);
    }
    log_change(peer, add->persist ? "added (persistent)" : "added", device->config->name);
    return describe_report(daemon, device, &report);
}

static json_t *method_device_add(struct daemon *daemon, const struct admin_peer *peer,
                                 json_t *params, struct method_error *error)
{
    struct pending_add add = {0};

    if (begin_add(daemon, params, false, &add, error) <= 0)
        return NULL;
    return finish_add(daemon, peer, &add, error);
}

static json_t *method_device_remove(struct daemon *daemon, const struct admin_peer *peer,
                                    json_t *params, struct method_error *error)
{
    static const char *const allowed[] = {"name", "persist", NULL};
    struct managed_device *device;
    char message[1024], name[CONFIG_NAME_MAX + 1];
    const char *requested;
    bool persist;

    if (!check_params(params, allowed, error) ||
        (requested = required_name(params, error)) == NULL ||
        !optional_bool(params, "persist", &persist, error) ||
        (device = existing_device(daemon, requested, error)) == NULL ||
        !check_not_stuck(daemon, device, error))
        return NULL;
    if (device->source != NULL && !persist)
        return fail(error, ADMIN_OPERATION_FAILED, field_data("persist"),
                    "device '%s' comes from %s, which would bring it back: remove it with "
                    "persist: true to delete (or mask) that file",
                    requested, device->config->origin);
    if (persist && device->source != NULL &&
        config_dirs_remove(daemon->settings->devices_dirs, daemon->settings->devices_dir_count,
                           device->source, device->config->origin, message, sizeof(message)) < 0)
        return fail(error, ADMIN_PERSIST_FAILED, NULL, "%s", message);
    snprintf(name, sizeof(name), "%s", device->config->name);
    device_manager_remove(&daemon->devices, device);
    log_change(peer, persist ? "removed (persistent)" : "removed", name);
    return json_pack("{s:s, s:b}", "name", name, "persistent", persist);
}

static json_t *method_device_reset(struct daemon *daemon, const struct admin_peer *peer,
                                   json_t *params, struct method_error *error)
{
    static const char *const allowed[] = {"name", NULL};
    struct managed_device *device;
    struct worker_stuck stuck;
    const char *name;
    int ret;

    if (!check_params(params, allowed, error) || (name = required_name(params, error)) == NULL ||
        (device = existing_device(daemon, name, error)) == NULL ||
        !check_not_stuck(daemon, device, error))
        return NULL;
    ret = device_manager_reset(&daemon->devices, device);
    if (ret == -ETIMEDOUT && device_manager_stuck(&daemon->devices, device, &stuck))
        return fail_stuck(error, name, &stuck);
    if (ret == -ETIMEDOUT)
        return fail(error, ADMIN_DEVICE_STUCK, NULL, "device '%s' did not answer the reset in time",
                    name);
    if (ret < 0)
        return fail(error, ADMIN_OPERATION_FAILED, NULL, "the device refused the reset: %s",
                    strerror(-ret));
    log_change(peer, "reset", name);
    return describe_device(daemon, device, NULL);
}

static json_t *method_plugin_list(struct daemon *daemon, const struct admin_peer *peer,
                                  json_t *params, struct method_error *error)
{
    static const char *const allowed[] = {NULL};
    json_t *list;

    if (!check_params(params, allowed, error))
        return NULL;
    list = json_array();
    for (size_t i = 0; list != NULL && i < daemon->plugins.count; i++) {
        const struct vu_plugin_module *module = &daemon->plugins.modules[i];
        size_t devices = 0;
        for (size_t d = 0; d < daemon->devices.count; d++)
            devices += daemon->devices.devices[d]->plugin == module->plugin;
        json_array_append_new(
            list,
            json_pack("{s:s, s:s, s:s, s:s, s:s, s:I}", "name", module->plugin->name, "version",
                      module->plugin->version ? module->plugin->version : "", "description",
                      module->plugin->description ? module->plugin->description : "", "path",
                      module->path, "abi", module->plugin->abi_major == 1 ? "1" : "?", "devices",
                      (json_int_t)devices));
    }
    return list;
}

/*
 * The daemon's descriptors: how many are open against its limit, how many of them clients
 * made their devices hold, and the most one client may (max_client_fds).
 */
static json_t *descriptors_json(const struct daemon *daemon, size_t client_fds)
{
    struct rlimit limit = {0};
    json_int_t open_count = -1;
    DIR *listing = opendir("/proc/self/fd");

    if (listing != NULL) {
        struct dirent *entry;

        open_count = 0;
        while ((entry = readdir(listing)) != NULL)
            open_count += entry->d_name[0] != '.';
        open_count--; /* the listing's own */
        closedir(listing);
    }
    getrlimit(RLIMIT_NOFILE, &limit);
    return json_pack("{s:o, s:I, s:I, s:I}", "open",
                     open_count >= 0 ? json_integer(open_count) : json_null(), "limit",
                     (json_int_t)limit.rlim_cur, "held_by_clients", (json_int_t)client_fds,
                     "per_client_limit", (json_int_t)daemon->settings->max_client_fds);
}

#define STRINGIFY_VALUE(x) #x
#define STRINGIFY(x)       STRINGIFY_VALUE(x)
/* The plugin ABI this daemon speaks, as "MAJOR.MINOR". */
#define PLUGIN_ABI_TEXT STRINGIFY(VFIO_USERD_ABI_MAJOR) "." STRINGIFY(VFIO_USERD_ABI_MINOR)

static json_t *method_daemon_status(struct daemon *daemon, const struct admin_peer *peer,
                                    json_t *params, struct method_error *error)
{
    static const char *const allowed[] = {NULL};
    uint64_t now = 0;
    size_t connected = 0, serving = 0, stuck_devices = 0, client_fds = 0;
    struct device_query query;
    json_t *stuck_workers;

    if (!check_params(params, allowed, error))
        return NULL;
    stuck_workers = json_array();
    sd_event_now(daemon->event, CLOCK_MONOTONIC, &now);
    device_query_start(&daemon->devices, &query);
    for (size_t i = 0; i < workers_count(daemon->workers); i++) {
        struct worker_stuck stuck;
        if (workers_stuck(daemon->workers, i, &stuck))
            json_array_append_new(stuck_workers, stuck_json(&stuck));
    }
    for (size_t i = 0; i < daemon->devices.count; i++) {
        struct device_report report;
        device_manager_report(&daemon->devices, daemon->devices.devices[i], &query, &report);
        if (!report.known) {
            /* Down (error, failed, restarting) counts as error; stuck and unknown as stuck. */
            stuck_devices +=
                strcmp(report.state, "stuck") == 0 || strcmp(report.state, "unknown") == 0;
            continue;
        }
        connected += report.counters.connected;
        client_fds += report.counters.client_fds;
        serving++;
    }
    device_query_finish(&query);
    return json_pack("{s:s, s:i, s:I, s:{s:I, s:I, s:I, s:I, s:I}, s:o, s:I, s:I, s:I, s:s, s:s, "
                     "s:o, s:I}",
                     "version", VFIO_USERD_VERSION, "pid", (int)getpid(), "uptime_seconds",
                     (json_int_t)((now - daemon->started_usec) / 1000000), "devices", "total",
                     (json_int_t)daemon->devices.count, "listening",
                     (json_int_t)(serving - connected), "connected", (json_int_t)connected, "stuck",
                     (json_int_t)stuck_devices, "error",
                     (json_int_t)(daemon->devices.count - serving - stuck_devices), "stuck_workers",
                     stuck_workers, "plugins", (json_int_t)daemon->plugins.count, "worker_threads",
                     (json_int_t)workers_count(daemon->workers), "drop_in_problems",
                     (json_int_t)daemon->problems, "plugin_abi", PLUGIN_ABI_TEXT, "protocol", "0.1",
                     "descriptors", descriptors_json(daemon, client_fds), "health_pings",
                     (json_int_t)supervisor_health_pings());
}

static json_t *method_daemon_reload(struct daemon *daemon, const struct admin_peer *peer,
                                    json_t *params, struct method_error *error)
{
    static const char *const allowed[] = {NULL};

    if (!check_params(params, allowed, error))
        return NULL;
    log_change(peer, "reload requested", NULL);
    daemon_reload(daemon, "daemon_reload", true);
    return json_pack("{s:I, s:I}", "devices", (json_int_t)daemon->devices.count, "drop_in_problems",
                     (json_int_t)daemon->problems);
}

static json_t *method_rpc_get_methods(struct daemon *daemon, const struct admin_peer *peer,
                                      json_t *params, struct method_error *error);

static const struct {
    const char *name;
    method_fn function;
} methods[] = {
    {"daemon_reload", method_daemon_reload},     {"daemon_status", method_daemon_status},
    {"device_add", method_device_add},           {"device_get", method_device_get},
    {"device_list", method_device_list},         {"device_remove", method_device_remove},
    {"device_reset", method_device_reset},       {"plugin_list", method_plugin_list},
    {"rpc_get_methods", method_rpc_get_methods},
};

static json_t *method_rpc_get_methods(struct daemon *daemon, const struct admin_peer *peer,
                                      json_t *params, struct method_error *error)
{
    static const char *const allowed[] = {NULL};
    json_t *list;

    if (!check_params(params, allowed, error))
        return NULL;
    list = json_array();
    for (size_t i = 0; list != NULL && i < sizeof(methods) / sizeof(methods[0]); i++)
        json_array_append_new(list, json_string(methods[i].name));
    return list;
}

/* --- Envelope. --- */

json_t *admin_error_response(json_t *id, int code, const char *message, json_t *data)
{
    json_t *error = json_pack("{s:i, s:s}", "code", code, "message", message);

    if (error != NULL && data != NULL)
        json_object_set(error, "data", data);
    return json_pack("{s:s, s:o, s:O}", "jsonrpc", "2.0", "error", error, "id",
                     id != NULL ? id : json_null());
}

/*
 * Checks a request's envelope. NULL when it is a request for a known method (`function`,
 * `id`, `notification` and `params` set), else the response refusing it, which
 * `*notification` says whether to drop.
 */
static json_t *open_envelope(json_t *request, json_t **id, bool *notification, method_fn *function,
                             json_t **params)
{
    json_t *method, *version;
    char message[256];

    *notification = false;
    *function = NULL;
    if (!json_is_object(request))
        return admin_error_response(NULL, ADMIN_INVALID_REQUEST, "a request must be a JSON object",
                                    NULL);
    *id = json_object_get(request, "id");
    if (*id != NULL && !json_is_string(*id) && !json_is_integer(*id) && !json_is_null(*id))
        return admin_error_response(NULL, ADMIN_INVALID_REQUEST,
                                    "id must be a string, an integer or null", NULL);
    version = json_object_get(request, "jsonrpc");
    method = json_object_get(request, "method");
    *params = json_object_get(request, "params");
    if (!json_is_string(version) || strcmp(json_string_value(version), "2.0") != 0 ||
        !json_is_string(method) ||
        (*params != NULL && !json_is_object(*params) && !json_is_array(*params))) {
        /* Not a request at all, so not a notification either: JSON-RPC 2.0 answers it,
         * with a null id when it has none. */
        return admin_error_response(*id, ADMIN_INVALID_REQUEST,
                                    "not a JSON-RPC 2.0 request (jsonrpc \"2.0\", a method "
                                    "string, params an object if present)",
                                    NULL);
    }
    *notification = *id == NULL;
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
        if (strcmp(methods[i].name, json_string_value(method)) == 0)
            *function = methods[i].function;
    if (*function != NULL)
        return NULL;
    snprintf(message, sizeof(message), "no method '%.128s' (see rpc_get_methods)",
             json_string_value(method));
    return admin_error_response(*id, ADMIN_METHOD_NOT_FOUND, message, NULL);
}

/* The response to a request with `id` from a method's `result` or `error` (taken); NULL
 * for a notification. */
static json_t *respond(json_t *id, bool notification, json_t *result, struct method_error *error)
{
    json_t *response;

    if (result == NULL && error->code == 0)
        fail(error, ADMIN_INTERNAL_ERROR, NULL, "out of memory");
    response = result != NULL ? json_pack("{s:s, s:o, s:O}", "jsonrpc", "2.0", "result", result,
                                          "id", id != NULL ? id : json_null())
                              : admin_error_response(id, error->code, error->message, error->data);
    json_decref(error->data);
    error->data = NULL;
    if (notification) {
        json_decref(response);
        return NULL;
    }
    return response;
}

static json_t *handle_one(struct daemon *daemon, const struct admin_peer *peer, json_t *request)
{
    struct method_error error = {0};
    json_t *id = NULL, *params = NULL, *empty = NULL, *result, *refusal;
    bool notification;
    method_fn function;

    refusal = open_envelope(request, &id, &notification, &function, &params);
    if (refusal != NULL) {
        if (!notification)
            return refusal;
        json_decref(refusal);
        return NULL;
    }
    if (params == NULL)
        params = empty = json_object();
    result = function(daemon, peer, params, &error);
    json_decref(empty);
    return respond(id, notification, result, &error);
}

/* A device_add begun by admin_start(), with what its response needs. */
struct admin_started {
    json_t *id; /* a reference, or NULL */
    bool notification;
    struct admin_peer peer;
    struct pending_add add;
};

int admin_start(struct daemon *daemon, const struct admin_peer *peer, json_t *request,
                bool others_started, json_t **reply, struct admin_started **started)
{
    struct method_error error = {0};
    struct pending_add add = {0};
    json_t *id = NULL, *params = NULL, *empty = NULL, *refusal;
    bool notification;
    method_fn function;
    int ret;

    *reply = NULL;
    *started = NULL;
    refusal = open_envelope(request, &id, &notification, &function, &params);
    if (refusal != NULL) {
        /* Changes nothing, so it may be answered after the started ones. */
        if (!notification)
            *reply = refusal;
        else
            json_decref(refusal);
        return 0;
    }
    if (function != method_device_add) {
        if (others_started)
            return -EAGAIN;
        *reply = handle_one(daemon, peer, request);
        return 0;
    }
    if (params == NULL)
        params = empty = json_object();
    ret = begin_add(daemon, params, others_started, &add, &error);
    json_decref(empty);
    if (ret < 0)
        return ret;
    if (ret == 0) {
        *reply = respond(id, notification, NULL, &error);
        return 0;
    }
    *started = calloc(1, sizeof(**started));
    if (*started == NULL || add.persist) {
        /* Persisting writes a drop-in: carried out whole, as on its own. */
        *reply = respond(id, notification, finish_add(daemon, peer, &add, &error), &error);
        free(*started);
        *started = NULL;
        return 0;
    }
    **started = (struct admin_started){
        .id = json_incref(id), .notification = notification, .peer = *peer, .add = add};
    return 0;
}

json_t *admin_finish(struct daemon *daemon, struct admin_started *started)
{
    struct method_error error = {0};
    json_t *result = finish_add(daemon, &started->peer, &started->add, &error);
    json_t *reply = respond(started->id, started->notification, result, &error);

    json_decref(started->id);
    free(started);
    return reply;
}

json_t *admin_handle(struct daemon *daemon, const struct admin_peer *peer, json_t *message)
{
    json_t *replies, *request;
    size_t index;

    if (!json_is_array(message))
        return handle_one(daemon, peer, message);
    if (json_array_size(message) == 0)
        return admin_error_response(NULL, ADMIN_INVALID_REQUEST, "an empty batch", NULL);
    replies = json_array();
    json_array_foreach (message, index, request) {
        json_t *reply = handle_one(daemon, peer, request);
        if (reply != NULL)
            json_array_append_new(replies, reply);
    }
    /* A batch of notifications only gets nothing back. */
    if (json_array_size(replies) == 0) {
        json_decref(replies);
        return NULL;
    }
    return replies;
}
