/*
 * vfio-userd-device-host: one device of process isolation. The daemon starts it (fork and
 * exec) with the device's listening socket and its end of a control socketpair; it
 * sandboxes itself before anything else, then loads the plugin, creates the device and
 * serves the vfio-user protocol on the socket with the same engine as a worker thread.
 * Its loop marks each wait in the page it shares with the daemon (liveness.h), which is
 * how the daemon tells an idle host from a hung one without waking it; it answers the
 * daemon's requests on the control channel (and health checks, should its marks not
 * work), and ends when told to stop or when the daemon goes away. See vfio-userd(8),
 * ISOLATION.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "control.h"
#include "device.h"
#include "endpoint.h"
#include "event_loop.h"
#include "fault_guard.h"
#include "liveness.h"
#include "log.h"
#include "plugin_loader.h"
#include "session.h"
#include "sandbox.h"

/* How long the daemon has to send "start" once the host runs. */
#define HOST_START_TIMEOUT_MS 10000

/* Exit statuses the supervisor reads (vfio-userd(8)). */
#define HOST_EXIT_REFUSED 3 /* the plugin refused the device: a configuration error */
#define HOST_EXIT_SANDBOX 4 /* the sandbox could not be set up */

struct host {
    const char *name;
    struct vu_loop *loop;
    sd_event *event; /* the loop's */
    sd_event_source *control_source;
    struct vu_plugin_module module;
    struct vu_device *device;
    struct vu_endpoint *endpoint;
    bool listen_fd_taken; /* by the endpoint, which closes it */
    bool stop_requested;  /* "stop" came while a plugin waited for a file */
    uint64_t open_sequence;
    struct liveness_slot *liveness;
};

/* The one device this process hosts, for the file opener the plugin calls into. */
static struct host *current_host;

static void send_or_log(const struct host *host, json_t *message)
{
    int ret;

    if (message == NULL) {
        vu_log(VFIO_USERD_LOG_ERR, host->name, "control channel: out of memory");
        return;
    }
    ret = control_send(CONTROL_CHANNEL_FD, message);
    if (ret < 0 && ret != -EPIPE)
        vu_log(VFIO_USERD_LOG_WARNING, host->name, "control channel: cannot send %s: %s",
               control_type(message), strerror(-ret));
    json_decref(message);
}

static json_t *status_message(const struct host *host, uint64_t sequence)
{
    uint32_t client_fds = 0, limit = 0;
    bool connected = vu_endpoint_connected(host->endpoint);

    vu_endpoint_client_fds(host->endpoint, &client_fds, &limit);
    return json_pack("{s:s, s:I, s:b, s:I, s:I, s:I, s:o}", "type", "status", "seq",
                     (json_int_t)sequence, "connected", connected, "client_pid",
                     (json_int_t)(connected ? vu_endpoint_client_pid(host->endpoint) : 0),
                     "client_fds", (json_int_t)client_fds, "dma_maps",
                     (json_int_t)host->device->dma.count, "statistics",
                     control_statistics_to_json(&host->device->statistics));
}

/* DEVICE_RESET from the control plane: as the admin socket's device_reset in thread mode. */
static int reset_device(struct host *host)
{
    struct vu_device *previous = vu_fault_guard_enter(host->device);
    int ret = vu_device_reset_quiesced(host->device);

    vu_endpoint_flush(host->endpoint);
    vu_fault_guard_enter(previous);
    return ret;
}

static void handle_request(struct host *host, const json_t *request)
{
    const char *type = control_type(request);
    uint64_t sequence = control_sequence(request);

    if (strcmp(type, "ping") == 0) {
        send_or_log(host, json_pack("{s:s, s:I}", "type", "pong", "seq", (json_int_t)sequence));
    } else if (host->endpoint == NULL && strcmp(type, "stop") != 0) {
        /* Validating only: no device is served to ask about. */
        send_or_log(host, json_pack("{s:s, s:I, s:i}", "type", type, "seq", (json_int_t)sequence,
                                    "errno", ENOTCONN));
    } else if (strcmp(type, "status") == 0) {
        send_or_log(host, status_message(host, sequence));
    } else if (strcmp(type, "reset") == 0) {
        int ret = reset_device(host);
        send_or_log(host, json_pack("{s:s, s:I, s:i}", "type", "reset", "seq", (json_int_t)sequence,
                                    "errno", ret < 0 ? -ret : 0));
    } else if (strcmp(type, "stop") == 0) {
        host->stop_requested = true;
        if (host->event != NULL)
            sd_event_exit(host->event, 0);
    } else {
        vu_log(VFIO_USERD_LOG_WARNING, host->name, "control channel: unknown request '%s'", type);
    }
}

static int on_control(sd_event_source *source, int fd, uint32_t revents, void *userdata)
{
    struct host *host = userdata;
    json_t *request;
    int ret;

    /* Whatever is queued, in order; the daemon never has more than a few requests out. */
    while ((ret = control_receive(fd, &request)) > 0) {
        handle_request(host, request);
        json_decref(request);
    }
    if (ret == -EAGAIN)
        return 0;
    /* The daemon is gone (or spoke nonsense): the device goes with it, as a worker's would. */
    if (ret < 0)
        vu_log(VFIO_USERD_LOG_ERR, host->name, "control channel: %s; stopping", strerror(-ret));
    sd_event_exit(host->event, 0);
    return 0;
}

/* Waits for the daemon's "start", which says which device to be. */
static int receive_start(json_t **start)
{
    struct pollfd wait = {.fd = CONTROL_CHANNEL_FD, .events = POLLIN};
    int ret;

    for (;;) {
        ret = poll(&wait, 1, HOST_START_TIMEOUT_MS);
        if (ret < 0 && errno == EINTR)
            continue;
        if (ret <= 0)
            return ret < 0 ? -errno : -ETIMEDOUT;
        ret = control_receive(CONTROL_CHANNEL_FD, start);
        if (ret == -EAGAIN)
            continue;
        if (ret == 0)
            return -EPIPE;
        if (ret < 0)
            return ret;
        if (strcmp(control_type(*start), "start") == 0)
            return 0;
        json_decref(*start);
        *start = NULL;
        return -EBADMSG;
    }
}

static void refuse(const char *name, int error_number, const char *field, const char *message)
{
    json_t *reply = json_pack("{s:s, s:i, s:s, s:s}", "type", "error", "errno", error_number,
                              "field", field, "message", message);

    if (reply != NULL)
        control_send(CONTROL_CHANNEL_FD, reply);
    json_decref(reply);
    vu_log(VFIO_USERD_LOG_ERR, name, "%s%s%s", field, field[0] != '\0' ? ": " : "", message);
}

static uint64_t settings_u64(const json_t *settings, const char *key, uint64_t fallback)
{
    const json_t *value = json_object_get(settings, key);

    return json_is_integer(value) && json_integer_value(value) >= 0
               ? (uint64_t)json_integer_value(value)
               : fallback;
}

/* What the daemon's settings say about the device socket (device_endpoint_configure). */
static void configure_endpoint(struct vu_endpoint *endpoint, const json_t *settings)
{
    vu_endpoint_set_dma_chunk_size(
        endpoint,
        (uint32_t)settings_u64(settings, "dma_message_chunk_size", VU_DMA_CHUNK_SIZE_DEFAULT));
    vu_endpoint_set_max_client_fds(
        endpoint, (uint32_t)settings_u64(settings, "max_client_fds", VU_MAX_CLIENT_FDS_DEFAULT));
    vu_endpoint_set_handshake_timeout(endpoint, settings_u64(settings, "handshake_timeout_usec",
                                                             VU_ENDPOINT_HANDSHAKE_TIMEOUT_USEC));
    vu_endpoint_set_poll(endpoint, settings_u64(settings, "poll_usec", 0));
}

/* Loads the plugin and creates the device "start" describes; on failure the daemon is told. */
static int become_device(struct host *host, const json_t *start)
{
    const char *plugin_path = json_string_value(json_object_get(start, "plugin"));
    const json_t *params = json_object_get(start, "params");
    const json_t *settings = json_object_get(start, "settings");
    struct vfio_userd_error error = {0};
    char message[512], loaded_from[64];
    int ret;

    host->name = json_string_value(json_object_get(start, "name"));
    if (host->name == NULL || plugin_path == NULL || !json_is_object(params) ||
        !json_is_object(settings)) {
        refuse("device host", EBADMSG, "", "malformed start request");
        return -EBADMSG;
    }
    vu_log_set_level(
        (enum vfio_userd_log_level)settings_u64(settings, "log_level", VFIO_USERD_LOG_INFO));
    /* The daemon's open file, not the path, which this account may not even reach. */
    snprintf(loaded_from, sizeof(loaded_from), "/proc/self/fd/%d", CONTROL_PLUGIN_FD);
    ret = vu_plugin_load(loaded_from, &host->module, message, sizeof(message));
    close(CONTROL_PLUGIN_FD);
    if (ret < 0) {
        refuse(host->name, -ret, "plugin", message);
        return ret;
    }
    ret = vu_device_create(host->module.plugin, host->name, params, &host->device, &error);
    if (ret < 0) {
        refuse(host->name, -ret, error.field, error.message);
        return ret;
    }
    if (json_is_true(json_object_get(start, "validate_only")))
        return 0;
    ret = vu_endpoint_new(host->device, host->loop, CONTROL_LISTEN_FD, &host->endpoint);
    host->listen_fd_taken = true; /* whatever the result */
    if (ret < 0) {
        snprintf(message, sizeof(message), "cannot serve the device socket: %s", strerror(-ret));
        refuse(host->name, -ret, "", message);
        return ret;
    }
    configure_endpoint(host->endpoint, settings);
    return 0;
}

/*
 * A plugin's open_file(): the sandbox cannot open what the device needs (it runs as an
 * account with no rights to the administrator's files), so the daemon opens it and passes
 * the descriptor. Waits for that answer, serving the daemon's other requests meanwhile.
 */
static int open_through_daemon(const char *device, const char *path, int flags, unsigned int mode)
{
    struct host *host = current_host;
    uint64_t sequence = ++host->open_sequence;
    struct pollfd wait = {.fd = CONTROL_CHANNEL_FD, .events = POLLIN};
    json_t *request, *reply = NULL;
    int ret, fd = -1;

    request = json_pack("{s:s, s:I, s:s, s:i, s:i}", "type", "open", "seq", (json_int_t)sequence,
                        "path", path, "flags", flags, "mode", (int)mode);
    if (request == NULL)
        return -ENOMEM;
    ret = control_send(CONTROL_CHANNEL_FD, request);
    json_decref(request);
    if (ret < 0)
        return ret == -EPIPE ? -EIO : ret;
    for (;;) {
        ret = control_receive_fd(CONTROL_CHANNEL_FD, &reply, &fd);
        if (ret == -EAGAIN) {
            if (poll(&wait, 1, HOST_START_TIMEOUT_MS) <= 0)
                return -ETIMEDOUT;
            continue;
        }
        if (ret <= 0)
            return ret < 0 ? ret : -EIO; /* the daemon went away */
        if (strcmp(control_type(reply), "open") == 0 && control_sequence(reply) == sequence)
            break;
        if (fd >= 0)
            close(fd);
        fd = -1;
        handle_request(host, reply);
        json_decref(reply);
        reply = NULL;
    }
    ret = -(int)json_integer_value(json_object_get(reply, "errno"));
    json_decref(reply);
    if (ret == 0 && fd < 0)
        ret = -EIO;
    if (ret < 0 && fd >= 0)
        close(fd);
    return ret < 0 ? ret : fd;
}

/* The loop's waits, marked in the liveness page for the daemon (liveness.h). */
static void mark_wait(void *userdata, bool waiting)
{
    struct liveness_slot *slot = userdata;

    if (waiting)
        liveness_mark_waiting(slot);
    else
        liveness_mark_awake(slot, vu_monotonic_usec());
}

static bool env_is_set(const char *name)
{
    const char *value = getenv(name);

    return value != NULL && strcmp(value, "1") == 0;
}

static int parse_u64(const char *text, uint64_t *value)
{
    char *end;

    errno = 0;
    *value = strtoull(text, &end, 10);
    return errno == 0 && end != text && *end == '\0' && text[0] != '-' ? 0 : -EINVAL;
}

static int parse_arguments(int argc, char **argv, struct sandbox_policy *policy)
{
    static const struct option options[] = {
        {"uid", required_argument, NULL, 'u'},
        {"gid", required_argument, NULL, 'g'},
        {"memory-limit", required_argument, NULL, 'm'},
        {"files-limit", required_argument, NULL, 'f'},
        {NULL, 0, NULL, 0},
    };
    uint64_t value;
    int option;

    while ((option = getopt_long(argc, argv, "", options, NULL)) != -1) {
        if (option == '?' || parse_u64(optarg, &value) < 0)
            return -EINVAL;
        switch (option) {
        case 'u':
            policy->change_user = true;
            policy->uid = (uid_t)value;
            break;
        case 'g':
            policy->gid = (gid_t)value;
            break;
        case 'm':
            policy->memory_limit = value;
            break;
        case 'f':
            policy->files_limit = value;
            break;
        }
    }
    return optind == argc ? 0 : -EINVAL;
}

int main(int argc, char **argv)
{
    struct sandbox_policy policy = {0};
    struct host host = {.name = "device host"};
    json_t *start = NULL;
    char error[512];
    int ret, status = EXIT_FAILURE;
    sigset_t signals;

    if (parse_arguments(argc, argv, &policy) < 0) {
        fprintf(stderr, "vfio-userd-device-host: started by vfio-userd only, with "
                        "[--uid ID --gid ID] [--memory-limit BYTES] [--files-limit COUNT]\n");
        return EXIT_FAILURE;
    }
    /* Before anything reads what a client or a plugin controls. */
    if (sandbox_apply(&policy, error, sizeof(error)) < 0 ||
        sandbox_install_seccomp(error, sizeof(error)) < 0) {
        vu_log(VFIO_USERD_LOG_ERR, NULL, "device host: sandbox: %s", error);
        refuse(host.name, EPERM, "", error);
        return HOST_EXIT_SANDBOX;
    }
    /* The daemon stops a host through the control channel; a signal ends it at once. */
    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&signals);
    sigprocmask(SIG_SETMASK, &signals, NULL);

    ret = receive_start(&start);
    if (ret < 0) {
        vu_log(VFIO_USERD_LOG_ERR, NULL, "device host: no start request: %s", strerror(-ret));
        goto out;
    }
    ret = vu_loop_new(&host.loop);
    if (ret >= 0) {
        host.event = vu_loop_event(host.loop);
        ret = sd_event_add_io(host.event, &host.control_source, CONTROL_CHANNEL_FD, EPOLLIN,
                              on_control, &host);
    }
    if (ret < 0) {
        refuse(host.name, -ret, "", "cannot set up the event loop");
        goto out;
    }
    /* Marked from the first wait on; without the page the daemon pings instead, which
     * VFIO_USERD_HOST_UNMARKED=1 asks for (the tests of that way). */
    if (!env_is_set("VFIO_USERD_HOST_UNMARKED") &&
        liveness_slot_map(CONTROL_LIVENESS_FD, &host.liveness) == 0)
        vu_loop_set_wait_hook(host.loop, mark_wait, host.liveness);
    close(CONTROL_LIVENESS_FD);
    current_host = &host;
    vu_device_set_file_opener(open_through_daemon);
    ret = become_device(&host, start);
    if (ret < 0) {
        status = HOST_EXIT_REFUSED;
        goto out;
    }
    if (host.stop_requested) {
        status = EXIT_SUCCESS;
        goto out;
    }
    send_or_log(&host, json_pack("{s:s, s:I}", "type", "ready", "pid", (json_int_t)getpid()));
    /* Validating only, it waits for "stop" like any host, without serving. */
    ret = vu_loop_run(host.loop);
    status = ret < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
out:
    if (host.endpoint != NULL)
        vu_endpoint_free(host.endpoint);
    else if (!host.listen_fd_taken)
        close(CONTROL_LISTEN_FD);
    vu_device_destroy(host.device);
    sd_event_source_disable_unref(host.control_source);
    vu_loop_unref(host.loop);
    if (host.module.handle != NULL)
        vu_plugin_unload(&host.module);
    json_decref(start);
#if defined(__SANITIZE_ADDRESS__)
    /* LeakSanitizer's exit check stops the process with ptrace, which the sandbox refuses:
     * it would report a failure of its own, not a leak. */
    fflush(NULL);
    _exit(status);
#endif
    return status;
}
