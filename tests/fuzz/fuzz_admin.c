/*
 * libFuzzer target for the admin socket: every input is the byte stream one client writes
 * to a real admin server (daemon/admin_server.c, listening on a socket in a scratch
 * directory, on this process's own sd-event loop) before it half-closes its end. The
 * server's framing, the JSON-RPC 2.0 layer and every method (admin_methods.c) run as in the
 * daemon, with one worker and no plugins, so device_add fails late but nothing is created.
 *
 * Beyond "no crash, no leak", it asserts what the admin socket promises a client: the
 * server ends the connection after answering, and every reply is a JSON-RPC 2.0 response
 * (an object with "jsonrpc": "2.0", an "id", and exactly one of "result" and "error"), or a
 * non-empty array of them.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <jansson.h>
#include <systemd/sd-event.h>

#include "admin_server.h"
#include "config.h"
#include "daemon.h"
#include "log.h"
#include "workers.h"

#define REPLY_MAX (8u << 20)

static struct daemon fuzz_daemon = {.inotify_fd = -1};
static char scratch[] = "/tmp/vfio-userd-fuzz-admin.XXXXXX";
static char *replies;

static void quiet_sink(enum vfio_userd_log_level level, const char *device, const char *message)
{
}

static void setup(void)
{
    char path[256], error[512];
    json_t *settings;

    vu_log_set_sink(quiet_sink);
    replies = malloc(REPLY_MAX);
    if (replies == NULL || mkdtemp(scratch) == NULL || config_daemon_new(&fuzz_daemon.settings) < 0)
        abort();
    snprintf(path, sizeof(path), "%s/plugins", scratch);
    mkdir(path, 0700);
    settings = json_pack("{s:s, s:[s+], s:[s], s:s+, s:i}", "runtime_dir", scratch, "devices_dirs",
                         scratch, "/devices.d", "plugin_dirs", path, "admin_socket", scratch,
                         "/admin.sock", "worker_threads", 1);
    if (settings == NULL ||
        config_daemon_apply(fuzz_daemon.settings, settings, "fuzz", error, sizeof(error)) < 0) {
        fprintf(stderr, "fuzz_admin: %s\n", error);
        abort();
    }
    json_decref(settings);
    if (sd_event_new(&fuzz_daemon.event) < 0)
        abort();
    plugin_registry_load(&fuzz_daemon.plugins, fuzz_daemon.settings->plugin_dirs,
                         fuzz_daemon.settings->plugin_dir_count);
    if (workers_start(1, &fuzz_daemon.workers) < 0 ||
        device_manager_init(&fuzz_daemon.devices, fuzz_daemon.settings, &fuzz_daemon.plugins,
                            fuzz_daemon.workers) < 0 ||
        admin_server_start(&fuzz_daemon, &fuzz_daemon.admin) < 0)
        abort();
}

static int connect_admin(void)
{
    struct sockaddr_un address = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

    if (fd < 0)
        abort();
    snprintf(address.sun_path, sizeof(address.sun_path), "%s/admin.sock", scratch);
    if (connect(fd, (struct sockaddr *)&address, sizeof(address)) < 0)
        abort();
    return fd;
}

static void check_response(const json_t *response)
{
    const json_t *version = json_object_get(response, "jsonrpc");

    if (!json_is_object(response) || !json_is_string(version) ||
        strcmp(json_string_value(version), "2.0") != 0 || json_object_get(response, "id") == NULL ||
        (json_object_get(response, "result") == NULL) ==
            (json_object_get(response, "error") == NULL)) {
        char *text = json_dumps(response, JSON_COMPACT);

        fprintf(stderr, "not a JSON-RPC 2.0 response: %s\n", text ? text : "?");
        abort();
    }
}

static void check_replies(const char *text, size_t length)
{
    size_t offset = 0;

    while (offset < length) {
        json_error_t error;
        json_t *reply;
        size_t index;
        json_t *element;

        while (offset < length && (text[offset] == '\n' || text[offset] == ' '))
            offset++;
        if (offset == length)
            break;
        reply = json_loadb(text + offset, length - offset, JSON_DISABLE_EOF_CHECK, &error);
        if (reply == NULL) {
            fprintf(stderr, "reply is not JSON: %s: %.*s\n", error.text, (int)(length - offset),
                    text + offset);
            abort();
        }
        offset += error.position;
        if (json_is_array(reply)) {
            if (json_array_size(reply) == 0)
                abort();
            json_array_foreach (reply, index, element)
                check_response(element);
        } else {
            check_response(reply);
        }
        json_decref(reply);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t written = 0, received = 0;
    bool closed = false;
    int fd;

    if (fuzz_daemon.event == NULL)
        setup();
    fd = connect_admin();
    /* Until the server has it all, the half-close after, and every reply back. */
    for (int round = 0; round < 20000 && !closed; round++) {
        ssize_t n;

        if (written < size) {
            n = write(fd, data + written, size - written);
            if (n > 0)
                written += (size_t)n;
            else if (n < 0 && errno != EAGAIN)
                break;
            if (written == size)
                shutdown(fd, SHUT_WR);
        } else if (size == 0 && round == 0) {
            shutdown(fd, SHUT_WR);
        }
        sd_event_run(fuzz_daemon.event, 0);
        n = read(fd, replies + received, REPLY_MAX - received);
        if (n > 0)
            received += (size_t)n;
        else if (n == 0)
            closed = true;
        else if (errno != EAGAIN)
            closed = true;
    }
    if (!closed) {
        fprintf(stderr, "the server did not end the connection after a half-close\n");
        abort();
    }
    check_replies(replies, received);
    close(fd);
    /* Let the server see the close and free the connection before the next input. */
    for (int round = 0; round < 4; round++)
        sd_event_run(fuzz_daemon.event, 0);
    return 0;
}
