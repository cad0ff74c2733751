/*
 * Device manager: creation on workers, sockets, replacement and removal; see devices.h.
 */
#include <errno.h>
#include <grp.h>
#include <malloc.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "devices.h"
#include "endpoint.h"
#include "fault_guard.h"
#include "log.h"

/* --- Work done on a device's worker thread. --- */

/*
 * The name and parameters are the task's own copies: a create the caller gave up on may
 * still run after the configuration they came from is gone.
 */
struct create_task {
    const struct vfio_userd_plugin *plugin;
    char *name;
    json_t *params;
    struct vu_device *device;
    struct vfio_userd_error error;
};

static void create_task_free_copies(struct create_task *task)
{
    free(task->name);
    json_decref(task->params);
    task->name = NULL;
    task->params = NULL;
}

static int run_create(struct vu_loop *loop, void *argument)
{
    struct create_task *task = argument;

    int ret = vu_device_create(task->plugin, task->name, task->params, &task->device, &task->error);

    /* -ETIMEDOUT says the worker did not answer in time; a plugin's own becomes -EIO. */
    return ret == -ETIMEDOUT ? -EIO : ret;
}

/* A create that finished after its caller gave up: the device it made goes. */
static void abandon_create(void *argument)
{
    struct create_task *task = argument;

    vu_device_destroy(task->device);
    task->device = NULL;
    create_task_free_copies(task);
}

void device_endpoint_configure(struct vu_endpoint *endpoint, const struct config_daemon *settings)
{
    /* Valid: the configuration was checked when it was read. */
    vu_endpoint_set_dma_chunk_size(endpoint, settings->dma_message_chunk_size);
    vu_endpoint_set_max_client_fds(endpoint, settings->max_client_fds);
    vu_endpoint_set_handshake_timeout(endpoint, settings->handshake_timeout_usec);
}

struct serve_task {
    struct vu_device *device;
    int listen_fd;
    const struct config_daemon *settings; /* read only, and it outlives every device */
    uint32_t poll_usec;                   /* the device's poll_us */
    struct vu_endpoint *endpoint;
};

static int run_serve(struct vu_loop *loop, void *argument)
{
    struct serve_task *task = argument;
    int ret = vu_endpoint_new(task->device, loop, task->listen_fd, &task->endpoint);

    task->listen_fd = -1; /* taken over by vu_endpoint_new, whatever its result */
    if (ret >= 0) {
        device_endpoint_configure(task->endpoint, task->settings);
        vu_endpoint_set_poll(task->endpoint, task->poll_usec);
    }
    return ret;
}

/* A serve the caller gave up on: the endpoint it made goes, or the socket it never took. */
static void abandon_serve(void *argument)
{
    struct serve_task *task = argument;

    if (task->endpoint != NULL)
        vu_endpoint_free(task->endpoint);
    else if (task->listen_fd >= 0)
        close(task->listen_fd);
    task->endpoint = NULL;
    task->listen_fd = -1;
}

/* A device's counters, on its worker. */
static void read_counters(const struct vu_device *device, struct vu_endpoint *endpoint,
                          struct device_counters *counters)
{
    counters->statistics = device->statistics;
    counters->dma_maps = device->dma.count;
    if (endpoint != NULL) {
        counters->connected = vu_endpoint_connected(endpoint);
        counters->client_pid = vu_endpoint_client_pid(endpoint);
        vu_endpoint_client_fds(endpoint, &counters->client_fds, &(uint32_t){0});
    }
}

/*
 * A new device's create and serve in one call to its worker, and the counters its admin
 * reply shows, so that adding a device costs the control plane one wait for the worker,
 * not three.
 */
struct start_task {
    struct create_task create;
    struct serve_task serve;
    bool created; /* the plugin accepted the device; what failed after is serving it */
    struct device_counters counters; /* once it serves */
};

static int run_start(struct vu_loop *loop, void *argument)
{
    struct start_task *task = argument;
    int ret = run_create(loop, &task->create);

    if (ret < 0) {
        close(task->serve.listen_fd);
        task->serve.listen_fd = -1;
        return ret;
    }
    task->created = true;
    task->serve.device = task->create.device;
    ret = run_serve(loop, &task->serve);
    if (ret < 0) {
        vu_device_destroy(task->create.device);
        task->create.device = NULL;
        return ret;
    }
    read_counters(task->create.device, task->serve.endpoint, &task->counters);
    return 0;
}

/* A start the caller gave up on: the endpoint goes before the device it serves. */
static void abandon_start(void *argument)
{
    struct start_task *task = argument;

    abandon_serve(&task->serve);
    abandon_create(&task->create);
}

struct stop_task {
    struct vu_device *device;
    struct vu_endpoint *endpoint;
    bool keep_socket;
    int listen_fd; /* out, with keep_socket */
};

static int run_stop(struct vu_loop *loop, void *argument)
{
    struct stop_task *task = argument;

    task->listen_fd = -1;
    if (task->endpoint != NULL) {
        if (task->keep_socket)
            task->listen_fd = vu_endpoint_release(task->endpoint);
        else
            vu_endpoint_free(task->endpoint);
    }
    vu_device_destroy(task->device);
    return 0;
}

/* A stop that finished after its caller gave up: the socket it kept for it closes. */
static void abandon_stop(void *argument)
{
    struct stop_task *task = argument;

    if (task->listen_fd >= 0)
        close(task->listen_fd);
    task->listen_fd = -1;
}

/* --- Helpers. --- */

/* The setting a refusal is about, for the admin socket's error data ("" for none). */
static void note_field(struct device_manager *manager, const char *field)
{
    snprintf(manager->error_field, sizeof(manager->error_field), "%s", field);
}

/* A plugin's refusal names a parameter: params.FIELD. */
static void note_plugin_field(struct device_manager *manager, const struct vfio_userd_error *error)
{
    if (error->field[0] != '\0')
        snprintf(manager->error_field, sizeof(manager->error_field), "params.%s", error->field);
    else
        manager->error_field[0] = '\0';
}

static const struct vfio_userd_plugin *find_plugin(struct device_manager *manager,
                                                   const struct config_device *config, char *error,
                                                   size_t error_size)
{
    const struct vfio_userd_plugin *plugin = plugin_registry_find(manager->plugins, config->plugin);
    char location[512];

    if (plugin == NULL) {
        note_field(manager, "plugin");
        config_device_location(config, "plugin", location, sizeof(location));
        snprintf(error, error_size, "%s: plugin: no plugin named '%s' is loaded", location,
                 config->plugin);
    }
    return plugin;
}

/*
 * The worker with the fewest devices among those that answer: a stuck worker would win
 * every tie (a device that failed to come up on it does not count), and every call to it
 * fails at once. Only when all are stuck does the choice fall on a stuck one.
 */
static size_t least_loaded_worker(const struct device_manager *manager)
{
    size_t count = workers_count(manager->workers), best = count, any = 0;

    for (size_t i = 0; i < count; i++) {
        if (manager->worker_load[i] < manager->worker_load[any])
            any = i;
        if (workers_stuck(manager->workers, i, NULL))
            continue;
        if (best == count || manager->worker_load[i] < manager->worker_load[best])
            best = i;
    }
    return best < count ? best : any;
}

static int create_device(struct device_manager *manager, size_t worker,
                         const struct vfio_userd_plugin *plugin, const struct config_device *config,
                         struct vu_device **device, char *error, size_t error_size)
{
    struct create_task task = {
        .plugin = plugin, .name = strdup(config->name), .params = json_deep_copy(config->params)};
    const struct worker_call call = {.task = run_create, .abandon = abandon_create};
    int ret;

    if (task.name == NULL || task.params == NULL) {
        create_task_free_copies(&task);
        snprintf(error, error_size, "out of memory");
        return -ENOMEM;
    }
    ret = workers_call_sized(manager->workers, worker, &call, &task, sizeof(task));
    if (ret == -ETIMEDOUT) {
        /* The copies went with the task (abandon_create). */
        note_plugin_field(manager, &task.error);
        config_device_format_plugin_error(config, &task.error, error, error_size);
        return ret;
    }
    create_task_free_copies(&task);
    if (ret < 0) {
        note_plugin_field(manager, &task.error);
        config_device_format_plugin_error(config, &task.error, error, error_size);
        return ret;
    }
    *device = task.device;
    return 0;
}

/*
 * Stops a device (and its endpoint) on its worker. The stop is never withdrawn: when the
 * worker does not answer in time (-ETIMEDOUT), it stays queued and the device stops as
 * soon as the worker comes back, before it serves anything else. With `keep_socket`, the
 * endpoint's listening socket goes to `listen_fd` (-1 when the stop is late: it is closed
 * then).
 */
static int stop_device(struct device_manager *manager, size_t worker, struct vu_device *device,
                       struct vu_endpoint *endpoint, bool keep_socket, int *listen_fd)
{
    struct stop_task task = {
        .device = device, .endpoint = endpoint, .keep_socket = keep_socket, .listen_fd = -1};
    const struct worker_call call = {.task = run_stop, .abandon = abandon_stop, .must_run = true};
    int ret = workers_call_sized(manager->workers, worker, &call, &task, sizeof(task));

    if (listen_fd != NULL)
        *listen_fd = ret < 0 ? -1 : task.listen_fd;
    return ret;
}

/*
 * Hands `managed`'s device to its worker, to be created and served on `listen_fd` (taken in
 * every case) in one task, without waiting: finish_start() waits for it. The worker counts
 * it from here, so that the devices started together spread over the workers.
 */
static int submit_start(struct device_manager *manager, struct managed_device *managed,
                        int listen_fd, char *error, size_t error_size)
{
    const struct config_device *config = managed->config;
    struct start_task task = {.create = {.plugin = managed->plugin,
                                         .name = strdup(config->name),
                                         .params = json_deep_copy(config->params)},
                              .serve = {.listen_fd = listen_fd,
                                        .settings = manager->settings,
                                        .poll_usec = config->poll_usec}};
    const struct worker_call call = {.task = run_start, .abandon = abandon_start};
    int ret;

    if (task.create.name == NULL || task.create.params == NULL) {
        create_task_free_copies(&task.create);
        close(listen_fd);
        snprintf(error, error_size, "out of memory");
        return -ENOMEM;
    }
    ret = workers_submit_sized(manager->workers, managed->worker, &call, &task, sizeof(task),
                               &managed->start);
    if (ret == -ETIMEDOUT) {
        /* The worker is stuck: the copies and the socket went (abandon_start), and the
         * refusal is the plugin's empty one, as for a wait that ran out. */
        note_plugin_field(manager, &task.create.error);
        config_device_format_plugin_error(config, &task.create.error, error, error_size);
        return ret;
    }
    if (ret < 0) {
        create_task_free_copies(&task.create);
        close(listen_fd);
        snprintf(error, error_size, "out of memory");
        return ret;
    }
    manager->worker_load[managed->worker]++;
    return 0;
}

/* Waits for the start submit_start() handed to the worker; its counters go to `counters`. */
static int finish_start(struct device_manager *manager, struct managed_device *managed,
                        struct device_counters *counters, char *error, size_t error_size)
{
    const struct config_device *config = managed->config;
    /* Left as it is on -ETIMEDOUT, when the copies and the socket went with the task
     * (abandon_start). */
    struct start_task task = {0};
    int ret = workers_wait(managed->start, &task);

    managed->start = NULL;
    if (ret < 0)
        manager->worker_load[managed->worker]--;
    create_task_free_copies(&task.create);
    if (ret < 0 && task.created) {
        snprintf(error, error_size, "%s: cannot serve socket %s: %s", config->origin,
                 managed->socket_path, strerror(-ret));
        return ret;
    }
    if (ret < 0) {
        note_plugin_field(manager, &task.create.error);
        config_device_format_plugin_error(config, &task.create.error, error, error_size);
        return ret;
    }
    managed->device = task.create.device;
    managed->endpoint = task.serve.endpoint;
    *counters = task.counters;
    return 0;
}

static int serve_device(struct device_manager *manager, size_t worker, struct serve_task *serve)
{
    const struct worker_call call = {.task = run_serve, .abandon = abandon_serve};

    return workers_call_sized(manager->workers, worker, &call, serve, sizeof(*serve));
}

/* A string of decimal digits as an id that fits uid_t/gid_t, but is not (id_t)-1. */
static bool parse_id(const char *text, unsigned long *id)
{
    char *end;

    if (text[0] < '0' || text[0] > '9')
        return false;
    errno = 0;
    *id = strtoul(text, &end, 10);
    return errno == 0 && *end == '\0' && *id < (unsigned long)(uid_t)-1;
}

int device_lookup_user(const char *text, uid_t *uid)
{
    char buffer[4096];
    struct passwd entry, *found = NULL;
    unsigned long id;
    int ret;

    if (parse_id(text, &id)) {
        *uid = (uid_t)id;
        return 0;
    }
    ret = getpwnam_r(text, &entry, buffer, sizeof(buffer), &found);
    if (ret != 0)
        return -ret;
    if (found == NULL)
        return -ENOENT;
    *uid = found->pw_uid;
    return 0;
}

int device_lookup_group(const char *text, gid_t *gid)
{
    char buffer[4096];
    struct group entry, *found = NULL;
    unsigned long id;
    int ret;

    if (parse_id(text, &id)) {
        *gid = (gid_t)id;
        return 0;
    }
    ret = getgrnam_r(text, &entry, buffer, sizeof(buffer), &found);
    if (ret != 0)
        return -ret;
    if (found == NULL)
        return -ENOENT;
    *gid = found->gr_gid;
    return 0;
}

/* The socket owner and group the configuration names; (uid_t)-1 / (gid_t)-1 for none. */
static int resolve_socket_owner(struct device_manager *manager, const struct config_device *config,
                                uid_t *uid, gid_t *gid, char *error, size_t error_size)
{
    char location[512];
    int ret;

    *uid = (uid_t)-1;
    *gid = (gid_t)-1;
    if (config->socket_user != NULL && (ret = device_lookup_user(config->socket_user, uid)) < 0) {
        note_field(manager, "socket.user");
        config_device_location(config, "socket.user", location, sizeof(location));
        snprintf(error, error_size, "%s: socket.user: no user '%s'", location, config->socket_user);
        /* An unknown name is a bad setting; a failing lookup keeps its errno. */
        return ret == -ENOENT ? -EINVAL : ret;
    }
    if (config->socket_group != NULL &&
        (ret = device_lookup_group(config->socket_group, gid)) < 0) {
        note_field(manager, "socket.group");
        config_device_location(config, "socket.group", location, sizeof(location));
        snprintf(error, error_size, "%s: socket.group: no group '%s'", location,
                 config->socket_group);
        return ret == -ENOENT ? -EINVAL : ret;
    }
    return 0;
}

/* Gives a listening socket file the owner, group and mode the configuration now asks for
 * (a replaced device that keeps its socket). */
static int apply_socket_access(struct device_manager *manager, const struct config_device *config,
                               const char *path, char *error, size_t error_size)
{
    uid_t uid;
    gid_t gid;
    int ret;

    ret = resolve_socket_owner(manager, config, &uid, &gid, error, error_size);
    if (ret < 0)
        return ret;
    if ((uid != (uid_t)-1 || gid != (gid_t)-1) && chown(path, uid, gid) < 0) {
        ret = -errno;
        snprintf(error, error_size, "%s: cannot give socket %s its owner: %s", config->origin, path,
                 strerror(-ret));
        return ret;
    }
    if (chmod(path, config->socket_mode) < 0) {
        ret = -errno;
        snprintf(error, error_size, "%s: cannot set the mode of socket %s: %s", config->origin,
                 path, strerror(-ret));
        return ret;
    }
    return 0;
}

/* Creates the directories above a socket path (0755), like mkdir -p. */
static int make_parents(const char *path)
{
    char buffer[4096];
    size_t length = strlen(path);

    if (length >= sizeof(buffer))
        return -ENAMETOOLONG;
    memcpy(buffer, path, length + 1);
    for (char *slash = strchr(buffer + 1, '/'); slash != NULL; slash = strchr(slash + 1, '/')) {
        *slash = '\0';
        /* chmod too: the daemon's umask keeps new files private. */
        if (mkdir(buffer, 0755) == 0)
            chmod(buffer, 0755);
        else if (errno != EEXIST)
            return -errno;
        *slash = '/';
    }
    return 0;
}

/* Listens on the device's socket, which appears with the owner, group and mode the
 * configuration asks for. */
static int open_socket(struct device_manager *manager, const struct config_device *config,
                       const char *path, int *fd, char *error, size_t error_size)
{
    struct vu_socket_access access = {.mode = config->socket_mode};
    char location[512];
    int ret;

    ret = resolve_socket_owner(manager, config, &access.uid, &access.gid, error, error_size);
    if (ret < 0)
        return ret;
    ret = make_parents(path);
    if (ret == 0)
        ret = vu_socket_listen(path, &access, fd);
    if (ret < 0) {
        note_field(manager, "socket.path");
        config_device_location(config, "socket.path", location, sizeof(location));
        snprintf(error, error_size, "%s: socket %s: %s", location, path,
                 ret == -EADDRINUSE ? "a live process is listening on it"
                 : ret == -EEXIST   ? "the path exists and is not a socket"
                                    : strerror(-ret));
    }
    return ret;
}

/* Name and socket path must not be taken by another device than `self`. */
static int check_unique(struct device_manager *manager, const struct managed_device *self,
                        const struct config_device *config, const char *path, char *error,
                        size_t error_size)
{
    const struct managed_device *other;
    char location[512];

    other = string_index_find(&manager->by_name, config->name);
    if (other != NULL && other != self) {
        note_field(manager, "name");
        config_device_location(config, "name", location, sizeof(location));
        snprintf(error, error_size, "%s: name: device '%s' already exists (from %s)", location,
                 config->name, other->config->origin);
        return -EEXIST;
    }
    other = string_index_find(&manager->by_path, path);
    if (other != NULL && other != self) {
        note_field(manager, "socket.path");
        config_device_location(config, "socket.path", location, sizeof(location));
        snprintf(error, error_size, "%s: socket.path: %s is already used by device '%s'", location,
                 path, other->config->name);
        return -EEXIST;
    }
    return 0;
}

static const char *name_of(const void *item)
{
    const struct managed_device *managed = item;

    return managed->config->name;
}

static const char *path_of(const void *item)
{
    const struct managed_device *managed = item;

    return managed->socket_path;
}

/*
 * The array of devices doubles when full and halves when a quarter full. Grown one slot
 * per device, it was reallocated at every add, and each move left the old block in the
 * calling thread's allocator cache (glibc's tcache, which malloc_trim() cannot empty):
 * one block of every size up to 1 KiB per cycle of adds, each pinning a page of the heap,
 * which showed as RSS creeping up cycle after cycle. The smallest array (2 KiB) is already
 * larger than any block that cache keeps (1032 bytes by default), so resizing never feeds it.
 */
#define DEVICES_MIN_CAPACITY 256

static int resize_devices(struct device_manager *manager, size_t capacity)
{
    struct managed_device **resized;

    if (capacity == 0) {
        free(manager->devices);
        manager->devices = NULL;
        manager->capacity = 0;
        return 0;
    }
    resized = reallocarray(manager->devices, capacity, sizeof(*resized));
    if (resized == NULL)
        return -ENOMEM;
    manager->devices = resized;
    manager->capacity = capacity;
    return 0;
}

/* Room for one more device. */
static int reserve_device(struct device_manager *manager)
{
    if (manager->count < manager->capacity)
        return 0;
    return resize_devices(manager,
                          manager->capacity > 0 ? 2 * manager->capacity : DEVICES_MIN_CAPACITY);
}

/* Puts `managed` in the indexes by name and by socket path; -ENOMEM. */
static int index_device(struct device_manager *manager, struct managed_device *managed)
{
    int ret = string_index_add(&manager->by_name, managed);

    if (ret < 0)
        return ret;
    ret = string_index_add(&manager->by_path, managed);
    if (ret < 0)
        string_index_remove(&manager->by_name, managed);
    return ret;
}

/* Takes `managed` out of the indexes, if it is in; before its name or path change. */
static void unindex_device(struct device_manager *manager, const struct managed_device *managed)
{
    string_index_remove(&manager->by_name, managed);
    string_index_remove(&manager->by_path, managed);
}

/* After a removal: the array goes with the last device, and shrinks when mostly empty. */
static void release_devices(struct device_manager *manager)
{
    if (manager->count == 0)
        resize_devices(manager, 0);
    else if (manager->capacity > DEVICES_MIN_CAPACITY && manager->count <= manager->capacity / 4)
        resize_devices(manager, manager->capacity / 2); /* a failure keeps the larger one */
}

/*
 * The allocator gives back only the top of its heap by itself: the free space that devices
 * leave between blocks still in use stayed resident, and RSS grew with every cycle of
 * adding and removing devices. So the heap is trimmed (main.c keeps every thread on the one
 * arena that malloc_trim() can shrink whole) this long after the first removal of a burst:
 * once per burst, or at most this often while devices keep going.
 */
#define TRIM_DELAY_USEC    250000
#define TRIM_ACCURACY_USEC 10000

static int on_trim_timer(sd_event_source *source, uint64_t usec, void *userdata)
{
    malloc_trim(0);
    return 0;
}

static void schedule_trim(struct device_manager *manager)
{
    uint64_t now;
    int enabled = SD_EVENT_OFF;

    if (manager->event == NULL)
        return;
    if (manager->trim_timer != NULL &&
        sd_event_source_get_enabled(manager->trim_timer, &enabled) >= 0 && enabled != SD_EVENT_OFF)
        return;
    if (sd_event_now(manager->event, CLOCK_MONOTONIC, &now) < 0)
        return;
    if (manager->trim_timer == NULL) {
        if (sd_event_add_time(manager->event, &manager->trim_timer, CLOCK_MONOTONIC,
                              now + TRIM_DELAY_USEC, TRIM_ACCURACY_USEC, on_trim_timer,
                              manager) < 0)
            malloc_trim(0); /* no timer: at once, rather than never */
        return;
    }
    sd_event_source_set_time(manager->trim_timer, now + TRIM_DELAY_USEC);
    sd_event_source_set_enabled(manager->trim_timer, SD_EVENT_ONESHOT);
}

/* --- Public. --- */

int device_manager_init(struct device_manager *manager, const struct config_daemon *settings,
                        const struct plugin_registry *plugins, struct workers *workers)
{
    *manager = (struct device_manager){.settings = settings,
                                       .plugins = plugins,
                                       .workers = workers,
                                       .by_name = STRING_INDEX_INIT(name_of),
                                       .by_path = STRING_INDEX_INIT(path_of)};
    if (workers != NULL) {
        manager->worker_load = calloc(workers_count(workers), sizeof(size_t));
        if (manager->worker_load == NULL)
            return -ENOMEM;
        /* Without a loop, memory is merely not given back early. */
        if (sd_event_default(&manager->event) < 0)
            manager->event = NULL;
    }
    return 0;
}

void device_manager_fini(struct device_manager *manager)
{
    while (manager->count > 0)
        device_manager_remove(manager, manager->devices[manager->count - 1]);
    resize_devices(manager, 0);
    string_index_fini(&manager->by_name);
    string_index_fini(&manager->by_path);
    free(manager->worker_load);
    manager->worker_load = NULL;
    manager->trim_timer = sd_event_source_disable_unref(manager->trim_timer);
    manager->event = sd_event_unref(manager->event);
}

struct managed_device *device_manager_find(const struct device_manager *manager, const char *name)
{
    return string_index_find(&manager->by_name, name);
}

struct managed_device *device_manager_find_source(const struct device_manager *manager,
                                                  const char *source)
{
    for (size_t i = 0; i < manager->count; i++)
        if (manager->devices[i]->source != NULL && strcmp(manager->devices[i]->source, source) == 0)
            return manager->devices[i];
    return NULL;
}

int device_manager_validate(struct device_manager *manager, const struct config_device *config,
                            char *error, size_t error_size)
{
    const struct vfio_userd_plugin *plugin = find_plugin(manager, config, error, error_size);
    struct vfio_userd_error plugin_error = {0};
    struct vu_device *device = NULL;
    uid_t uid;
    gid_t gid;
    int ret;

    if (plugin == NULL)
        return -ENOENT;
    ret = resolve_socket_owner(manager, config, &uid, &gid, error, error_size);
    if (ret < 0)
        return ret;
    ret = vu_device_create(plugin, config->name, config->params, &device, &plugin_error);
    if (ret < 0) {
        note_plugin_field(manager, &plugin_error);
        config_device_format_plugin_error(config, &plugin_error, error, error_size);
        return ret;
    }
    vu_device_destroy(device);
    return 0;
}

static void free_managed(struct managed_device *managed)
{
    config_device_free(managed->config);
    free(managed->source);
    free(managed->socket_path);
    free(managed);
}

bool device_manager_is_host(const struct device_manager *manager, pid_t pid)
{
    for (size_t i = 0; i < manager->count && pid > 0; i++)
        if (manager->devices[i]->host != NULL && supervisor_pid(manager->devices[i]->host) == pid)
            return true;
    return false;
}

enum config_isolation device_isolation(const struct config_daemon *settings,
                                       const struct config_device *config)
{
    return config->isolation != CONFIG_ISOLATION_DEFAULT ? config->isolation
                                                         : settings->default_isolation;
}

const char *device_isolation_name(enum config_isolation isolation)
{
    return isolation == CONFIG_ISOLATION_THREAD ? "thread" : "process";
}

static void supervisor_config_of(const struct device_manager *manager,
                                 const struct config_device *config,
                                 const struct vfio_userd_plugin *plugin,
                                 struct supervisor_config *supervised)
{
    *supervised = (struct supervisor_config){
        .name = config->name,
        .plugin_name = plugin->name,
        .plugin_path = plugin_registry_path(manager->plugins, plugin->name),
        .params = config->params,
        .settings = manager->settings,
        .restart = config->restart,
        .user = config->user,
        .poll_usec = config->poll_usec,
    };
}

/* The first half of start_host(): the host is spawned, and awaited by await_host(). */
static int launch_host(struct device_manager *manager, const struct config_device *config,
                       const struct vfio_userd_plugin *plugin, int listen_fd, bool validate_only,
                       struct supervisor_host **host, char *error, size_t error_size)
{
    struct supervisor_config supervised;
    char reason[CONFIG_ERROR_MAX];
    int ret;

    supervisor_config_of(manager, config, plugin, &supervised);
    supervised.validate_only = validate_only;
    ret = supervisor_launch(manager->event, &supervised, listen_fd, host, reason, sizeof(reason));
    if (ret < 0)
        snprintf(error, error_size, "%s: %s", config->origin, reason);
    return ret;
}

/* The second half: waits for the launched host; on failure it is gone. */
static int await_host(struct device_manager *manager, const struct config_device *config,
                      struct supervisor_host *host, char *error, size_t error_size)
{
    struct vfio_userd_error plugin_error = {0};
    char reason[CONFIG_ERROR_MAX];
    int ret = supervisor_await(host, &plugin_error, reason, sizeof(reason));

    if (ret < 0)
        note_plugin_field(manager, &plugin_error);
    if (ret < 0 && plugin_error.message[0] != '\0')
        config_device_format_plugin_error(config, &plugin_error, error, error_size);
    else if (ret < 0)
        snprintf(error, error_size, "%s: %s", config->origin, reason);
    return ret;
}

/*
 * Starts a device host for `config` on `listen_fd` (not taken) and waits for it, or with
 * `validate_only` only asks one whether the plugin accepts the parameters (no host is left
 * then). A refusal names the file, line and column of the parameter, as in thread isolation.
 */
static int start_host(struct device_manager *manager, const struct config_device *config,
                      const struct vfio_userd_plugin *plugin, int listen_fd, bool validate_only,
                      struct supervisor_host **host, char *error, size_t error_size)
{
    struct supervisor_host *started;
    int ret =
        launch_host(manager, config, plugin, listen_fd, validate_only, &started, error, error_size);

    if (ret == 0)
        ret = await_host(manager, config, started, error, error_size);
    if (ret == 0 && !validate_only)
        *host = started;
    return ret;
}

/*
 * Stops whatever runs `managed` now (its host, or its device on its worker). With
 * `keep_socket`, its listening socket goes to `*listen_fd` (-1 when it could not be had
 * back: a worker that answered late has closed it); without, the socket is closed.
 * Returns -ETIMEDOUT when a worker did not answer in time (the stop still happens later).
 */
static int stop_managed(struct device_manager *manager, struct managed_device *managed,
                        bool keep_socket, int *listen_fd)
{
    int ret = 0;

    if (listen_fd != NULL)
        *listen_fd = -1;
    if (managed->isolation == CONFIG_ISOLATION_PROCESS) {
        supervisor_stop(managed->host);
        managed->host = NULL;
        if (keep_socket && listen_fd != NULL)
            *listen_fd = managed->listen_fd;
        else if (managed->listen_fd >= 0)
            close(managed->listen_fd);
        managed->listen_fd = -1;
        return 0;
    }
    if (managed->device != NULL || managed->endpoint != NULL) {
        ret = stop_device(manager, managed->worker, managed->device, managed->endpoint, keep_socket,
                          listen_fd);
        manager->worker_load[managed->worker]--;
    }
    managed->device = NULL;
    managed->endpoint = NULL;
    return ret;
}

/*
 * Brings up `managed` (config, plugin and isolation set) on `listen_fd` (taken in every
 * case). Thread isolation needs `device`, already created on worker managed->worker.
 */
static int serve_managed(struct device_manager *manager, struct managed_device *managed,
                         struct vu_device *device, int listen_fd, char *error, size_t error_size)
{
    struct serve_task serve = {.listen_fd = listen_fd,
                               .settings = manager->settings,
                               .poll_usec = managed->config->poll_usec};
    int ret;

    if (managed->isolation == CONFIG_ISOLATION_PROCESS) {
        ret = start_host(manager, managed->config, managed->plugin, listen_fd, false,
                         &managed->host, error, error_size);
        if (ret < 0) {
            close(listen_fd);
            return ret;
        }
        managed->listen_fd = listen_fd;
        return 0;
    }
    serve.device = device;
    ret = serve_device(manager, managed->worker, &serve);
    if (ret < 0) {
        /* vu_endpoint_new closed the socket, or abandon_serve does. */
        snprintf(error, error_size, "%s: cannot serve socket %s: %s", managed->config->origin,
                 managed->socket_path, strerror(-ret));
        stop_device(manager, managed->worker, device, NULL, false, NULL);
        return ret;
    }
    managed->device = device;
    managed->endpoint = serve.endpoint;
    manager->worker_load[managed->worker]++;
    return 0;
}

/* Takes `managed` out of the manager's array (not freed). */
static void unregister(struct device_manager *manager, struct managed_device *managed)
{
    size_t index;

    for (index = 0; index < manager->count && manager->devices[index] != managed; index++)
        ;
    if (index == manager->count)
        return;
    unindex_device(manager, managed);
    memmove(&manager->devices[index], &manager->devices[index + 1],
            (manager->count - index - 1) * sizeof(manager->devices[0]));
    manager->count--;
    release_devices(manager);
}

static void log_serving(const struct managed_device *managed)
{
    vu_log(VFIO_USERD_LOG_INFO, managed->config->name,
           "serving %s device on %s (from %s, %s isolation%s)", managed->plugin->name,
           managed->socket_path, managed->config->origin, device_isolation_name(managed->isolation),
           managed->host != NULL ? ", in its own process" : "");
}

int device_manager_add_begin(struct device_manager *manager, struct config_device *config,
                             const char *source, struct managed_device **starting, char *error,
                             size_t error_size)
{
    struct managed_device *managed = calloc(1, sizeof(*managed));
    char path[CONFIG_SOCKET_PATH_MAX];
    int listen_fd = -1, ret;

    *starting = NULL;
    manager->error_field[0] = '\0';
    if (managed == NULL) {
        config_device_free(config);
        snprintf(error, error_size, "out of memory");
        return -ENOMEM;
    }
    managed->config = config;
    managed->listen_fd = -1;
    managed->isolation = device_isolation(manager->settings, config);
    ret = config_daemon_device_socket(manager->settings, config, path, sizeof(path));
    if (ret < 0) {
        note_field(manager, "socket.path");
        snprintf(error, error_size, "%s: socket path too long", config->origin);
        goto fail;
    }
    managed->socket_path = strdup(path);
    managed->source = source != NULL ? strdup(source) : NULL;
    if (managed->socket_path == NULL || (source != NULL && managed->source == NULL) ||
        reserve_device(manager) < 0) {
        snprintf(error, error_size, "out of memory");
        ret = -ENOMEM;
        goto fail;
    }
    /* Devices still starting are in the array already: their names and sockets count. */
    ret = check_unique(manager, NULL, config, path, error, error_size);
    if (ret < 0)
        goto fail;
    ret = index_device(manager, managed);
    if (ret < 0) {
        snprintf(error, error_size, "out of memory");
        goto fail;
    }
    managed->plugin = find_plugin(manager, config, error, error_size);
    if (managed->plugin == NULL) {
        ret = -ENOENT;
        goto fail;
    }
    ret = open_socket(manager, config, path, &listen_fd, error, error_size);
    if (ret < 0)
        goto fail;
    if (managed->isolation == CONFIG_ISOLATION_PROCESS) {
        ret = launch_host(manager, config, managed->plugin, listen_fd, false, &managed->host, error,
                          error_size);
        if (ret < 0) {
            close(listen_fd);
            unlink(path);
            goto fail;
        }
        managed->listen_fd = listen_fd;
        managed->starting = true;
        manager->devices[manager->count++] = managed;
        *starting = managed;
        return 0;
    }
    managed->worker = least_loaded_worker(manager);
    manager->last_worker = managed->worker;
    /* A device the plugin refuses takes its socket away again: the file was there for that
     * moment only, and no client was served on it. */
    ret = submit_start(manager, managed, listen_fd, error, error_size);
    if (ret < 0) {
        unlink(path);
        goto fail;
    }
    managed->starting = true;
    manager->devices[manager->count++] = managed;
    *starting = managed;
    return 0;

fail:
    unindex_device(manager, managed);
    free_managed(managed);
    return ret;
}

bool device_manager_starting(const struct device_manager *manager,
                             const struct config_device *config)
{
    const struct managed_device *holder = string_index_find(&manager->by_name, config->name);
    char path[CONFIG_SOCKET_PATH_MAX];

    if (holder != NULL && holder->starting)
        return true;
    if (config_daemon_device_socket(manager->settings, config, path, sizeof(path)) < 0)
        return false; /* refused on its own */
    holder = string_index_find(&manager->by_path, path);
    return holder != NULL && holder->starting;
}

static void fill_report(struct device_manager *manager, const struct managed_device *device,
                        struct device_query *query, const struct device_counters *read,
                        struct device_report *report);

int device_manager_add_finish(struct device_manager *manager, struct managed_device *starting,
                              struct device_report *report, char *error, size_t error_size)
{
    struct device_counters counters = {0};
    int ret;

    starting->starting = false;
    if (starting->isolation == CONFIG_ISOLATION_THREAD) {
        ret = finish_start(manager, starting, &counters, error, error_size);
    } else {
        ret = await_host(manager, starting->config, starting->host, error, error_size);
        /* The host is gone already (supervisor_await). */
        if (ret < 0)
            starting->host = NULL;
    }
    if (ret < 0) {
        /* Its socket and entry go too. */
        if (starting->listen_fd >= 0)
            close(starting->listen_fd);
        unlink(starting->socket_path);
        unregister(manager, starting);
        free_managed(starting);
        return ret;
    }
    log_serving(starting);
    /* A thread device's counters came with its start: no second call to its worker. */
    if (report != NULL)
        fill_report(manager, starting, NULL,
                    starting->isolation == CONFIG_ISOLATION_THREAD ? &counters : NULL, report);
    return 0;
}

int device_manager_replace(struct device_manager *manager, struct managed_device *existing,
                           struct config_device *config, char *error, size_t error_size)
{
    enum config_isolation isolation = device_isolation(manager->settings, config);
    const struct vfio_userd_plugin *plugin;
    struct vu_device *device = NULL;
    char path[CONFIG_SOCKET_PATH_MAX];
    char *path_copy = NULL;
    size_t worker = existing->worker;
    bool same_path;
    int listen_fd = -1, ret;

    manager->error_field[0] = '\0';
    ret = config_daemon_device_socket(manager->settings, config, path, sizeof(path));
    if (ret < 0) {
        note_field(manager, "socket.path");
        snprintf(error, error_size, "%s: socket path too long", config->origin);
        goto fail;
    }
    ret = check_unique(manager, existing, config, path, error, error_size);
    if (ret < 0)
        goto fail;
    plugin = find_plugin(manager, config, error, error_size);
    if (plugin == NULL) {
        ret = -ENOENT;
        goto fail;
    }
    path_copy = strdup(path);
    if (path_copy == NULL) {
        ret = -ENOMEM;
        goto fail;
    }
    /* The new device must be accepted before the old one stops: on a worker, the device
     * is created; in a process, a host of its own checks the parameters first. */
    if (isolation == CONFIG_ISOLATION_THREAD) {
        if (existing->isolation != CONFIG_ISOLATION_THREAD)
            worker = least_loaded_worker(manager);
        ret = create_device(manager, worker, plugin, config, &device, error, error_size);
    } else {
        ret = start_host(manager, config, plugin, -1, true, NULL, error, error_size);
    }
    if (ret < 0)
        goto fail;

    /* The listening socket carries over when the path stays; a device left down by an
     * earlier failure has none, and gets a new one like a moved device. */
    same_path = strcmp(path, existing->socket_path) == 0 &&
                (existing->endpoint != NULL || existing->listen_fd >= 0);
    if (same_path) {
        ret = apply_socket_access(manager, config, path, error, error_size);
        if (ret < 0)
            goto fail_device;
        stop_managed(manager, existing, true, &listen_fd);
    } else {
        ret = open_socket(manager, config, path, &listen_fd, error, error_size);
        if (ret < 0)
            goto fail_device;
        stop_managed(manager, existing, false, NULL);
        if (strcmp(path, existing->socket_path) != 0)
            unlink(existing->socket_path);
    }
    /* Indexed again under its new name and path; a failure to (out of memory) costs only
     * the check that they stay unique. */
    unindex_device(manager, existing);
    config_device_free(existing->config);
    existing->config = config;
    existing->plugin = plugin;
    existing->isolation = isolation;
    existing->worker = worker;
    free(existing->socket_path);
    existing->socket_path = path_copy;
    if (index_device(manager, existing) < 0)
        vu_log(VFIO_USERD_LOG_WARNING, existing->config->name,
               "out of memory: its name and socket path are not checked for uniqueness");
    if (listen_fd < 0)
        ret = -EIO; /* a late worker closed it */
    else
        ret = serve_managed(manager, existing, device, listen_fd, error, error_size);
    if (ret < 0) {
        /* Past the point of no return: the device stays registered, in error, until its
         * file changes again; its dead socket file goes. */
        if (listen_fd < 0 && device != NULL)
            stop_device(manager, worker, device, NULL, false, NULL);
        unlink(path);
        vu_log(VFIO_USERD_LOG_ERR, config->name,
               "replaced, but cannot serve socket %s: %s; the device is down", path,
               listen_fd < 0 ? strerror(-ret) : error);
    }
    schedule_trim(manager);
    vu_log(VFIO_USERD_LOG_INFO, config->name, "replaced: %s device on %s (from %s, %s isolation)",
           plugin->name, path, config->origin, device_isolation_name(isolation));
    return 0;

fail_device:
    if (device != NULL)
        stop_device(manager, worker, device, NULL, false, NULL);
fail:
    free(path_copy);
    config_device_free(config);
    return ret;
}

void device_manager_remove(struct device_manager *manager, struct managed_device *device)
{
    size_t index;
    int ret;

    for (index = 0; index < manager->count && manager->devices[index] != device; index++)
        ;
    if (index == manager->count)
        return;
    /* A late stop still happens (stop_device), so the device goes from here all the same:
     * no new client can reach it, and it stops before its worker serves anything else. */
    ret = stop_managed(manager, device, false, NULL);
    unlink(device->socket_path);
    unregister(manager, device);
    if (ret == -ETIMEDOUT)
        vu_log(VFIO_USERD_LOG_WARNING, device->config->name,
               "removed, but its worker %zu does not answer: the device stops when it does",
               device->worker);
    else
        vu_log(VFIO_USERD_LOG_INFO, device->config->name, "removed");
    free_managed(device);
    schedule_trim(manager);
}

int device_manager_persist(struct device_manager *manager, struct managed_device *device,
                           char *error, size_t error_size)
{
    const struct config_daemon *settings = manager->settings;
    char path[4096], *origin;
    int ret;

    if (settings->devices_dir_count == 0 || device->source == NULL)
        return 0;
    ret = config_device_persist(device->config, settings->devices_dirs[0], error, error_size);
    if (ret < 0)
        return ret;
    snprintf(path, sizeof(path), "%s/%s", settings->devices_dirs[0], device->source);
    origin = strdup(path);
    if (origin != NULL) {
        free(device->config->origin);
        device->config->origin = origin;
    }
    return 0;
}

/* --- What a device is doing. --- */

/* Time left, at most one call's worth; 0 when none is left. */
static uint64_t query_left(const struct device_query *query)
{
    uint64_t now = vu_monotonic_usec();
    uint64_t left = query->end > now ? query->end - now : 0;

    return left < WORKERS_CALL_TIMEOUT_USEC ? left : WORKERS_CALL_TIMEOUT_USEC;
}

struct snapshot_task {
    struct vu_device *device;
    struct vu_endpoint *endpoint;
    struct device_counters counters;
};

static void snapshot(struct snapshot_task *task)
{
    read_counters(task->device, task->endpoint, &task->counters);
}

static int run_snapshot(struct vu_loop *loop, void *argument)
{
    snapshot(argument);
    return 0;
}

/* The counters of every device on one worker, in one call. The array is the task's: a
 * caller that gave up leaves it to abandon_snapshots. */
struct snapshots_task {
    struct snapshot_task *entries;
    size_t count;
};

static int run_snapshots(struct vu_loop *loop, void *argument)
{
    struct snapshots_task *task = argument;

    for (size_t i = 0; i < task->count; i++)
        snapshot(&task->entries[i]);
    return 0;
}

static void abandon_snapshots(void *argument)
{
    struct snapshots_task *task = argument;

    free(task->entries);
    task->entries = NULL;
}

/* Reads the counters of worker `worker`'s devices into the query; false if it did not
 * answer in time. `entries` (room for every device) is taken in every case. */
static bool prefetch_worker(struct device_manager *manager, struct device_query *query,
                            size_t worker, struct snapshot_task *entries, size_t *indexes)
{
    struct snapshots_task task = {.entries = entries};
    struct worker_call call = {.task = run_snapshots, .abandon = abandon_snapshots};
    int ret;

    for (size_t i = 0; i < manager->count; i++) {
        const struct managed_device *device = manager->devices[i];
        if (device->isolation != CONFIG_ISOLATION_THREAD || device->endpoint == NULL ||
            device->worker != worker)
            continue;
        entries[task.count] = (struct snapshot_task){device->device, device->endpoint, {0}};
        indexes[task.count++] = i;
    }
    if (task.count == 0) {
        free(entries);
        return true;
    }
    call.timeout_usec = query_left(query);
    ret = call.timeout_usec > 0
              ? workers_call_sized(manager->workers, worker, &call, &task, sizeof(task))
              : -ENOMEM;
    if (ret < 0) {
        /* On -ETIMEDOUT the entries went with the task (abandon_snapshots). */
        if (ret != -ETIMEDOUT)
            free(entries);
        return false;
    }
    for (size_t i = 0; i < task.count; i++) {
        query->counters[indexes[i]] = entries[i].counters;
        query->known[indexes[i]] = true;
    }
    free(entries);
    return true;
}

void device_query_start(struct device_manager *manager, struct device_query *query)
{
    size_t workers = workers_count(manager->workers), *indexes = NULL;

    *query = (struct device_query){.end = vu_monotonic_usec() + DEVICE_QUERY_DEADLINE_USEC};
    query->given_up = calloc(workers, sizeof(bool));
    workers_probe(manager->workers, query_left(query));
    if (query->given_up == NULL || manager->count == 0)
        return;
    query->counters = calloc(manager->count, sizeof(*query->counters));
    query->known = calloc(manager->count, sizeof(*query->known));
    indexes = calloc(manager->count, sizeof(*indexes));
    if (query->counters == NULL || query->known == NULL || indexes == NULL) {
        device_query_finish(query);
        query->given_up = calloc(workers, sizeof(bool));
        goto out;
    }
    query->count = manager->count;
    for (size_t i = 0; i < manager->count; i++)
        manager->devices[i]->index = i;
    for (size_t worker = 0; worker < workers; worker++) {
        struct snapshot_task *entries;

        if (workers_stuck(manager->workers, worker, NULL)) {
            query->given_up[worker] = true;
            continue;
        }
        entries = calloc(manager->count, sizeof(*entries));
        if (entries == NULL || !prefetch_worker(manager, query, worker, entries, indexes))
            query->given_up[worker] = true;
    }
out:
    free(indexes);
}

void device_query_finish(struct device_query *query)
{
    free(query->given_up);
    free(query->counters);
    free(query->known);
    query->given_up = NULL;
    query->counters = NULL;
    query->known = NULL;
    query->count = 0;
}

/* Reads the counters of a device on a worker, within `query` when not NULL. */
static bool read_worker_counters(struct device_manager *manager,
                                 const struct managed_device *device, struct device_query *query,
                                 struct device_counters *counters)
{
    struct snapshot_task task = {.device = device->device, .endpoint = device->endpoint};
    struct worker_call call = {.task = run_snapshot};
    bool *given_up = NULL;

    if (device->endpoint == NULL)
        return false;
    if (query != NULL && query->counters != NULL) {
        /* Read at the start of the query, or its worker did not answer then. */
        if (device->index >= query->count || !query->known[device->index])
            return false;
        *counters = query->counters[device->index];
        return true;
    }
    if (query != NULL) {
        given_up = query->given_up != NULL ? &query->given_up[device->worker] : NULL;
        call.timeout_usec = query_left(query);
        if (call.timeout_usec == 0 || (given_up != NULL && *given_up))
            return false;
    }
    if (workers_call_sized(manager->workers, device->worker, &call, &task, sizeof(task)) < 0) {
        if (given_up != NULL)
            *given_up = true;
        return false;
    }
    *counters = task.counters;
    return true;
}

/* Asks a device host for its counters, within `query` when not NULL. */
static bool read_host_counters(const struct managed_device *device, struct device_query *query,
                               struct device_counters *counters)
{
    uint64_t timeout = query != NULL ? query_left(query) : WORKERS_CALL_TIMEOUT_USEC;

    return device->host != NULL && timeout != 0 &&
           supervisor_status(device->host, timeout, counters) == 0;
}

bool device_manager_stuck(struct device_manager *manager, const struct managed_device *device,
                          struct worker_stuck *stuck)
{
    if (device->isolation == CONFIG_ISOLATION_PROCESS)
        return false;
    return workers_stuck(manager->workers, device->worker, stuck);
}

/* device_manager_report(), with a thread device's counters already read (`read`) or not
 * (NULL). */
static void fill_report(struct device_manager *manager, const struct managed_device *device,
                        struct device_query *query, const struct device_counters *read,
                        struct device_report *report)
{
    bool process = device->isolation == CONFIG_ISOLATION_PROCESS;
    enum supervisor_state host_state = SUPERVISOR_RUNNING;

    memset(report, 0, sizeof(*report));
    if (process && device->host != NULL) {
        host_state = supervisor_state(device->host);
        report->pid = supervisor_pid(device->host);
        report->restarts = supervisor_restarts(device->host);
        report->last_failure = supervisor_last_failure(device->host);
        report->known = read_host_counters(device, query, &report->counters);
    } else if (!process && read != NULL) {
        report->pid = getpid();
        report->known = true;
        report->counters = *read;
    } else if (!process) {
        report->pid = getpid();
        report->known = read_worker_counters(manager, device, query, &report->counters);
    }
    if (!report->known && device_manager_stuck(manager, device, &report->stuck)) {
        report->state = "stuck";
        report->worker_stuck = true;
    } else if (process ? device->host == NULL : device->endpoint == NULL) {
        report->state = "error";
        report->error = "not serving its socket";
    } else if (host_state != SUPERVISOR_RUNNING) {
        /* The device host ended (or hangs and is being killed): why, in `error`. */
        report->state = supervisor_state_name(host_state);
        report->error = host_state == SUPERVISOR_STUCK ? "stopped answering health checks"
                                                       : report->last_failure;
    } else {
        report->state = !report->known               ? "unknown"
                        : report->counters.connected ? "connected"
                                                     : "listening";
    }
}

void device_manager_report(struct device_manager *manager, const struct managed_device *device,
                           struct device_query *query, struct device_report *report)
{
    fill_report(manager, device, query, NULL, report);
}

struct reset_task {
    struct vu_device *device;
    struct vu_endpoint *endpoint;
};

static int run_reset(struct vu_loop *loop, void *argument)
{
    struct reset_task *task = argument;
    struct vu_device *previous = vu_fault_guard_enter(task->device);
    int ret = vu_device_reset_quiesced(task->device);

    if (task->endpoint != NULL)
        vu_endpoint_flush(task->endpoint);
    vu_fault_guard_enter(previous);
    return ret;
}

int device_manager_reset(struct device_manager *manager, struct managed_device *device)
{
    struct reset_task task = {.device = device->device, .endpoint = device->endpoint};

    if (device->isolation == CONFIG_ISOLATION_PROCESS)
        return device->host != NULL ? supervisor_reset(device->host, DEVICE_QUERY_DEADLINE_USEC)
                                    : -ENODEV;
    if (device->device == NULL)
        return -ENODEV;
    return workers_call(manager->workers, device->worker, run_reset, &task);
}
