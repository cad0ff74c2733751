/*
 * The admin socket end to end: the real daemon in a temporary directory, JSON-RPC 2.0
 * spoken over its real socket. Every method's result and error codes, the framing cases
 * (a request split across writes, several in one, batches, notifications, malformed and
 * oversized input), silent clients, the connection limit, persistence across a restart,
 * 1,000 devices added and removed with no descriptor left behind, and socket activation.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "admin_client.h"
#include "client.h"
#include "daemon_harness.h"
#include "test_runner.h"

#define TIMEOUT  DAEMON_HARNESS_TIMEOUT_MS
#define SCRATCH0 0x010 /* testdev, vfio-userd-testdev(7) */

static struct daemon_harness harness;
static int admin = -1;

static void setup(void)
{
    ck_assert_int_eq(daemon_harness_init(&harness, NULL), 0);
    ck_assert_int_eq(daemon_harness_start(&harness, NULL), 0);
    admin = admin_client_connect(harness.admin_socket);
}

static void teardown(void)
{
    if (admin >= 0)
        close(admin);
    admin = -1;
    if (harness.pid > 0) {
        ck_assert_int_eq(daemon_harness_stop(&harness, SIGTERM), 0);
        ck_assert(WIFEXITED(harness.exit_status) && WEXITSTATUS(harness.exit_status) == 0);
    }
    daemon_harness_fini(&harness);
}

static void send_text(int fd, const char *text)
{
    size_t length = strlen(text);
    ck_assert_int_eq(send(fd, text, length, MSG_NOSIGNAL), (ssize_t)length);
}

/* One newline-terminated reply, or NULL at end of stream; waits up to TIMEOUT. */
static json_t *receive_reply(int fd)
{
    static char buffer[4 << 20];
    static size_t buffered;
    static int buffered_fd = -1;
    json_error_t error;

    if (buffered_fd != fd)
        buffered = 0;
    buffered_fd = fd;
    for (;;) {
        char *newline = memchr(buffer, '\n', buffered);
        if (newline != NULL) {
            json_t *reply = json_loadb(buffer, (size_t)(newline - buffer), 0, &error);
            ck_assert_msg(reply != NULL, "reply is not JSON: %s", error.text);
            buffered -= (size_t)(newline + 1 - buffer);
            memmove(buffer, newline + 1, buffered);
            return reply;
        }
        struct pollfd pollfd = {.fd = fd, .events = POLLIN};
        ck_assert_int_eq(poll(&pollfd, 1, TIMEOUT), 1);
        ssize_t received = recv(fd, buffer + buffered, sizeof(buffer) - buffered, 0);
        ck_assert_int_ge(received, 0);
        if (received == 0)
            return NULL;
        buffered += (size_t)received;
    }
}

/* Whether the daemon closed the connection (end of stream within TIMEOUT). */
static bool closed_by_daemon(int fd)
{
    char byte;
    struct pollfd pollfd = {.fd = fd, .events = POLLIN};

    if (poll(&pollfd, 1, TIMEOUT) != 1)
        return false;
    /* A reset (unread data was pending on the daemon's side) is a close too. */
    ssize_t received = recv(fd, &byte, 1, MSG_DONTWAIT);
    return received == 0 || (received < 0 && errno == ECONNRESET);
}

/* Calls `method` with `params` (JSON text or NULL); returns the whole response. */
static json_t *call_on(int fd, const char *method, const char *params)
{
    static int next_id = 1;
    char request[8192];
    json_t *response;

    FORMAT(request, "{\"jsonrpc\":\"2.0\",\"id\":%d,\"method\":\"%s\"%s%s}", next_id, method,
           params != NULL ? ",\"params\":" : "", params != NULL ? params : "");
    send_text(fd, request);
    response = receive_reply(fd);
    ck_assert_ptr_nonnull(response);
    ck_assert_int_eq(json_integer_value(json_object_get(response, "id")), next_id);
    ck_assert_str_eq(json_string_value(json_object_get(response, "jsonrpc")), "2.0");
    next_id++;
    return response;
}

/* The result of a call that must succeed (owned by the caller). */
static json_t *call_ok(const char *method, const char *params)
{
    json_t *response = call_on(admin, method, params), *result;

    ck_assert_msg(
        json_object_get(response, "error") == NULL, "%s failed: %s", method,
        json_string_value(json_object_get(json_object_get(response, "error"), "message")));
    result = json_incref(json_object_get(response, "result"));
    json_decref(response);
    ck_assert_ptr_nonnull(result);
    return result;
}

/* The error code of a call that must fail; its data.field into `field` if asked. */
static int call_error(const char *method, const char *params, char *field, size_t size)
{
    json_t *response = call_on(admin, method, params);
    json_t *error = json_object_get(response, "error");
    int code;

    ck_assert_msg(error != NULL, "%s(%s) succeeded", method, params ? params : "");
    ck_assert_ptr_null(json_object_get(response, "result"));
    ck_assert(json_is_string(json_object_get(error, "message")));
    code = (int)json_integer_value(json_object_get(error, "code"));
    if (field != NULL) {
        const char *value =
            json_string_value(json_object_get(json_object_get(error, "data"), "field"));
        snprintf(field, size, "%s", value != NULL ? value : "");
    }
    json_decref(response);
    return code;
}

/* --- Methods ------------------------------------------------------------------------ */

START_TEST(rpc_get_methods_lists_every_method)
{
    const char *expected[] = {"daemon_reload", "daemon_status", "device_add",
                              "device_get",    "device_list",   "device_remove",
                              "device_reset",  "plugin_list",   "rpc_get_methods"};
    json_t *methods = call_ok("rpc_get_methods", NULL);

    ck_assert_uint_eq(json_array_size(methods), sizeof(expected) / sizeof(expected[0]));
    for (size_t i = 0; i < json_array_size(methods); i++)
        ck_assert_str_eq(json_string_value(json_array_get(methods, i)), expected[i]);
    json_decref(methods);
}
END_TEST

START_TEST(daemon_status_and_plugin_list)
{
    json_t *status = call_ok("daemon_status", NULL), *plugins;
    struct stat socket_status;

    /* Not socket-activated: the daemon made the socket, with the default mode. */
    ck_assert_int_eq(stat(harness.admin_socket, &socket_status), 0);
    ck_assert_uint_eq(socket_status.st_mode & 07777, 0660);

    ck_assert_str_eq(json_string_value(json_object_get(status, "version")), VFIO_USERD_VERSION);
    ck_assert_int_eq(json_integer_value(json_object_get(status, "pid")), harness.pid);
    ck_assert(json_is_integer(json_object_get(status, "uptime_seconds")));
    ck_assert_int_eq(json_integer_value(json_object_get(status, "worker_threads")), 2);
    ck_assert_int_eq(json_integer_value(json_object_get(status, "plugins")), 1);
    ck_assert_int_eq(
        json_integer_value(json_object_get(json_object_get(status, "devices"), "total")), 0);
    json_decref(status);

    plugins = call_ok("plugin_list", NULL);
    ck_assert_uint_eq(json_array_size(plugins), 1);
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(plugins, 0), "name")),
                     "testdev");
    ck_assert(json_is_string(json_object_get(json_array_get(plugins, 0), "path")));
    json_decref(plugins);
}
END_TEST

START_TEST(device_add_get_list_reset_remove)
{
    char path[PATH_MAX];
    struct vu_client *client = NULL;
    uint32_t value = 0xabcd;
    json_t *device;

    device = call_ok("device_add", "{\"name\":\"rpc0\",\"plugin\":\"testdev\","
                                   "\"params\":{\"ram_size\":\"64K\"}}");
    daemon_harness_device_socket(&harness, "rpc0", path, sizeof(path));
    ck_assert_str_eq(json_string_value(json_object_get(device, "socket")), path);
    ck_assert_str_eq(json_string_value(json_object_get(device, "state")), "listening");
    ck_assert(json_is_false(json_object_get(device, "persistent")));
    json_decref(device);
    ck_assert_int_eq(daemon_harness_wait_socket(&harness, path, true, TIMEOUT), 0);

    /* Seen connected, with its traffic counted and the descriptors it made the device hold. */
    ck_assert_int_eq(vu_client_connect(path, NULL, &client), 0);
    ck_assert_int_eq(vu_client_region_write(client, 0, SCRATCH0, &value, 4), 0);
    int eventfds[3];
    for (int i = 0; i < 3; i++)
        ck_assert_int_ge(eventfds[i] = eventfd(0, EFD_CLOEXEC), 0);
    ck_assert_int_eq(vu_client_set_irqs(client, VFIO_PCI_MSIX_IRQ_INDEX,
                                        VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER, 0,
                                        3, eventfds, NULL),
                     0);
    for (int i = 0; i < 3; i++)
        close(eventfds[i]);
    json_t *status = call_ok("daemon_status", NULL);
    json_t *descriptors = json_object_get(status, "descriptors");
    ck_assert_int_eq(json_integer_value(json_object_get(descriptors, "held_by_clients")), 3);
    ck_assert_int_eq(json_integer_value(json_object_get(descriptors, "per_client_limit")), 4096);
    ck_assert_int_gt(json_integer_value(json_object_get(descriptors, "open")), 3);
    ck_assert_int_gt(json_integer_value(json_object_get(descriptors, "limit")),
                     json_integer_value(json_object_get(descriptors, "open")));
    json_decref(status);
    device = call_ok("device_get", "{\"name\":\"rpc0\"}");
    ck_assert_int_eq(json_integer_value(json_object_get(device, "client_fds")), 3);
    ck_assert_str_eq(json_string_value(json_object_get(device, "state")), "connected");
    ck_assert_int_eq(json_integer_value(json_object_get(device, "client_pid")), getpid());
    ck_assert_int_eq(json_integer_value(json_object_get(device, "connections")), 1);
    ck_assert_int_ge(json_integer_value(json_object_get(device, "messages")), 2);
    ck_assert_int_gt(json_integer_value(json_object_get(device, "bytes_received")), 0);
    json_decref(device);

    json_t *list = call_ok("device_list", NULL);
    ck_assert_uint_eq(json_array_size(list), 1);
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(list, 0), "name")), "rpc0");
    json_decref(list);

    /* device_reset resets the registers, like the client's DEVICE_RESET. */
    json_decref(call_ok("device_reset", "{\"name\":\"rpc0\"}"));
    value = 1;
    ck_assert_int_eq(vu_client_region_read(client, 0, SCRATCH0, &value, 4), 0);
    ck_assert_uint_eq(value, 0);
    vu_client_close(client);

    json_decref(call_ok("device_remove", "{\"name\":\"rpc0\"}"));
    ck_assert_int_eq(daemon_harness_wait_socket(&harness, path, false, TIMEOUT), 0);
    list = call_ok("device_list", NULL);
    ck_assert_uint_eq(json_array_size(list), 0);
    json_decref(list);
}
END_TEST

START_TEST(daemon_reload_applies_drop_ins_now)
{
    char path[PATH_MAX];
    json_t *result;

    /* Written behind the daemon's back with inotify unable to race: reload is synchronous. */
    ck_assert_int_eq(daemon_harness_write_file(harness.devices_dir, "f0.yaml", "plugin: testdev\n"),
                     0);
    result = call_ok("daemon_reload", NULL);
    ck_assert_int_eq(json_integer_value(json_object_get(result, "devices")), 1);
    ck_assert_int_eq(json_integer_value(json_object_get(result, "drop_in_problems")), 0);
    json_decref(result);
    daemon_harness_device_socket(&harness, "f0", path, sizeof(path));
    ck_assert_int_eq(access(path, F_OK), 0);
}
END_TEST

/* --- Error codes ---------------------------------------------------------------------- */

START_TEST(application_and_parameter_errors)
{
    char field[128];

    json_decref(call_ok("device_add", "{\"name\":\"e0\",\"plugin\":\"testdev\"}"));
    ck_assert_int_eq(call_error("device_get", "{\"name\":\"nope\"}", field, sizeof(field)), -32001);
    ck_assert_str_eq(field, "name");
    ck_assert_int_eq(call_error("device_remove", "{\"name\":\"nope\"}", NULL, 0), -32001);
    ck_assert_int_eq(call_error("device_reset", "{\"name\":\"nope\"}", NULL, 0), -32001);
    ck_assert_int_eq(
        call_error("device_add", "{\"name\":\"e0\",\"plugin\":\"testdev\"}", field, sizeof(field)),
        -32002);
    ck_assert_str_eq(field, "name");
    ck_assert_int_eq(
        call_error("device_add", "{\"name\":\"e1\",\"plugin\":\"nope\"}", field, sizeof(field)),
        -32003);
    ck_assert_str_eq(field, "plugin");
    /* Invalid parameters name the offending field. */
    ck_assert_int_eq(call_error("device_add",
                                "{\"name\":\"e1\",\"plugin\":\"testdev\",\"params\":"
                                "{\"ram_size\":\"3\"}}",
                                field, sizeof(field)),
                     -32602);
    ck_assert_str_eq(field, "params.ram_size");
    ck_assert_int_eq(call_error("device_add",
                                "{\"name\":\"e1\",\"plugin\":\"testdev\",\"params\":"
                                "{\"colour\":1}}",
                                field, sizeof(field)),
                     -32602);
    ck_assert_str_eq(field, "params.colour");
    ck_assert_int_eq(call_error("device_add", "{\"name\":\".hidden\",\"plugin\":\"testdev\"}",
                                field, sizeof(field)),
                     -32602);
    ck_assert_str_eq(field, "name");
    ck_assert_int_eq(call_error("device_add", "{\"plugin\":\"testdev\"}", NULL, 0), -32602);
    ck_assert_int_eq(call_error("device_add",
                                "{\"name\":\"e1\",\"plugin\":\"testdev\",\"socket\":"
                                "{\"user\":\"no-such-user-here\"}}",
                                field, sizeof(field)),
                     -32602);
    ck_assert_str_eq(field, "socket.user");
    ck_assert_int_eq(call_error("device_add",
                                "{\"name\":\"e1\",\"plugin\":\"testdev\",\"isolation\":\"vm\"}",
                                field, sizeof(field)),
                     -32602);
    ck_assert_str_eq(field, "isolation");
    /* A refusal the device manager makes names its field as well: e0's socket is taken. */
    {
        json_t *e0 = call_ok("device_get", "{\"name\":\"e0\"}");
        char params[PATH_MAX + 128];
        FORMAT(params, "{\"name\":\"e1\",\"plugin\":\"testdev\",\"socket\":{\"path\":\"%s\"}}",
               json_string_value(json_object_get(e0, "socket")));
        json_decref(e0);
        ck_assert_int_lt(call_error("device_add", params, field, sizeof(field)), 0);
        ck_assert_str_eq(field, "socket.path");
    }
    ck_assert_int_eq(
        call_error("device_get", "{\"name\":\"e0\",\"extra\":1}", field, sizeof(field)), -32602);
    ck_assert_str_eq(field, "extra");
    ck_assert_int_eq(call_error("device_get", "{\"name\":7}", NULL, 0), -32602);
    ck_assert_int_eq(call_error("device_get", "[\"e0\"]", NULL, 0), -32602);
    ck_assert_int_eq(call_error("device_remove", "{\"name\":\"e0\",\"persist\":\"yes\"}", NULL, 0),
                     -32602);
    ck_assert_int_eq(call_error("no_such_method", NULL, NULL, 0), -32601);
    /* A device from a drop-in cannot be removed for the moment only: its file remains. */
    ck_assert_int_eq(daemon_harness_write_file(harness.devices_dir, "f1.yaml", "plugin: testdev\n"),
                     0);
    json_decref(call_ok("daemon_reload", NULL));
    ck_assert_int_eq(call_error("device_remove", "{\"name\":\"f1\"}", field, sizeof(field)),
                     -32005);
    ck_assert_str_eq(field, "persist");
    /* An operation that fails: the device's socket path is taken by a plain file. */
    char blocker[PATH_MAX], params[PATH_MAX + 128];
    FORMAT(blocker, "%s/blocker", harness.directory);
    ck_assert_int_eq(daemon_harness_write_file(harness.directory, "blocker", "x"), 0);
    FORMAT(params, "{\"name\":\"e2\",\"plugin\":\"testdev\",\"socket\":{\"path\":\"%s\"}}",
           blocker);
    ck_assert_int_eq(call_error("device_add", params, NULL, 0), -32005);
    /* Nothing half-done: e2 does not exist, e0 still serves. */
    ck_assert_int_eq(call_error("device_get", "{\"name\":\"e2\"}", NULL, 0), -32001);
    json_decref(call_ok("device_get", "{\"name\":\"e0\"}"));
}
END_TEST

START_TEST(persist_failure_leaves_nothing)
{
    /* The first devices directory cannot be created: its parent does not exist. */
    char missing[PATH_MAX];
    const char *arguments[] = {"-c",
                               harness.config_path,
                               "--devices-dir",
                               missing,
                               "--devices-dir",
                               harness.devices_dir,
                               "--plugin-dir",
                               harness.plugin_dir,
                               "--runtime-dir",
                               harness.runtime_dir,
                               NULL};

    teardown();
    ck_assert_int_eq(daemon_harness_init(&harness, NULL), 0);
    FORMAT(missing, "%s/no/such/dir", harness.directory);
    ck_assert_int_eq(daemon_harness_spawn(&harness, arguments), 0);
    ck_assert_int_eq(daemon_harness_wait_notify(&harness, "READY=1", TIMEOUT, NULL, 0), 0);
    admin = admin_client_connect(harness.admin_socket);
    ck_assert_int_eq(call_error("device_add",
                                "{\"name\":\"p0\",\"plugin\":\"testdev\",\"persist\":true}", NULL,
                                0),
                     -32004);
    ck_assert_int_eq(call_error("device_get", "{\"name\":\"p0\"}", NULL, 0), -32001);
}
END_TEST

START_TEST(invalid_requests)
{
    json_t *reply;

    /* Well-formed JSON that is not a request gets -32600 and the connection stays. */
    const char *invalid[] = {
        "{\"jsonrpc\":\"1.0\",\"id\":1,\"method\":\"daemon_status\"}",
        "{\"jsonrpc\":\"2.0\",\"id\":1}",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":7}",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"daemon_status\",\"params\":3}",
        "{\"jsonrpc\":\"2.0\",\"id\":{},\"method\":\"daemon_status\"}",
        "42 ",
        "[]",
        /* Without an id too: invalid requests are answered, with a null id. */
        "{}",
        "{\"method\":\"daemon_status\"}",
        "{\"jsonrpc\":\"2.0\",\"method\":1,\"params\":\"bar\"}",
        "{\"jsonrpc\":\"2.0\",\"method\":\"daemon_status\",\"params\":3}",
        "[[]]",
        "[[null]]",
        "[{}]",
        "[1,2]",
    };
    for (size_t i = 0; i < sizeof(invalid) / sizeof(invalid[0]); i++) {
        json_t *element, *elements;
        size_t index;
        send_text(admin, invalid[i]);
        reply = receive_reply(admin);
        ck_assert_ptr_nonnull(reply);
        /* A batch of invalid requests gets an array with one error each. */
        if (json_is_array(reply)) {
            ck_assert_uint_ge(json_array_size(reply), 1);
            ck_assert_uint_eq(json_array_size(reply), invalid[i][1] == '1' ? 2 : 1);
        }
        elements = json_is_array(reply) ? json_incref(reply) : json_pack("[O]", reply);
        json_array_foreach (elements, index, element) {
            ck_assert_msg(json_integer_value(
                              json_object_get(json_object_get(element, "error"), "code")) == -32600,
                          "%s: not -32600", invalid[i]);
            if (strstr(invalid[i], "\"id\"") == NULL)
                ck_assert(json_is_null(json_object_get(element, "id")));
        }
        json_decref(elements);
        json_decref(reply);
    }
    /* A valid notification is still not answered. */
    send_text(admin, "{\"jsonrpc\":\"2.0\",\"method\":\"daemon_status\"}");
    json_decref(call_ok("daemon_status", NULL));
}
END_TEST

START_TEST(malformed_json_closes_connection)
{
    json_t *reply;
    int other = admin_client_connect(harness.admin_socket);

    send_text(admin, "{\"jsonrpc\":\"2.0\",,}");
    reply = receive_reply(admin);
    ck_assert_ptr_nonnull(reply);
    ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(reply, "error"), "code")),
                     -32700);
    ck_assert(json_is_null(json_object_get(reply, "id")));
    json_decref(reply);
    ck_assert(closed_by_daemon(admin));
    /* Other connections carry on. */
    json_decref(call_on(other, "daemon_status", NULL));
    close(other);
}
END_TEST

START_TEST(invalid_json_is_answered_at_once)
{
    const char *invalid[] = {
        "{\"jsonrpc\":\"2.0\",\"method\": garbage",
        "{\"jsonrpc\":\"2.0\",\"id\":1 \"method\"",
        "[{\"jsonrpc\":\"2.0\"},,",
        "{\"a\":\"\x01",
        "{\"a\":tru ",
    };

    for (size_t i = 0; i < sizeof(invalid) / sizeof(invalid[0]); i++) {
        /* Never closed, never balanced: the answer cannot wait for the end of the text. */
        int fd = admin_client_connect(harness.admin_socket);
        json_t *reply;
        send_text(fd, invalid[i]);
        reply = receive_reply(fd);
        ck_assert_msg(reply != NULL, "%s: no reply", invalid[i]);
        ck_assert_int_eq(
            json_integer_value(json_object_get(json_object_get(reply, "error"), "code")), -32700);
        ck_assert(json_is_null(json_object_get(reply, "id")));
        json_decref(reply);
        ck_assert(closed_by_daemon(fd));
        close(fd);
    }
}
END_TEST

/* --- Framing ------------------------------------------------------------------------------ */

START_TEST(request_split_across_writes)
{
    const char *request = "{\"jsonrpc\":\"2.0\",\"id\":\"split\",\"method\":\"daemon_status\"}";
    json_t *reply;

    for (const char *cursor = request; *cursor != '\0'; cursor++) {
        ck_assert_int_eq(send(admin, cursor, 1, MSG_NOSIGNAL), 1);
        usleep(500);
    }
    reply = receive_reply(admin);
    ck_assert_str_eq(json_string_value(json_object_get(reply, "id")), "split");
    ck_assert_ptr_nonnull(json_object_get(reply, "result"));
    json_decref(reply);
}
END_TEST

START_TEST(several_requests_in_one_write_and_notifications)
{
    json_t *reply;

    /* A notification (no id) between two requests: two replies, in order. */
    send_text(admin, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"rpc_get_methods\"}"
                     "{\"jsonrpc\":\"2.0\",\"method\":\"device_add\",\"params\":"
                     "{\"name\":\"n0\",\"plugin\":\"testdev\"}}\n"
                     "  {\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"device_get\","
                     "\"params\":{\"name\":\"n0\"}}");
    reply = receive_reply(admin);
    ck_assert_int_eq(json_integer_value(json_object_get(reply, "id")), 1);
    json_decref(reply);
    reply = receive_reply(admin);
    ck_assert_int_eq(json_integer_value(json_object_get(reply, "id")), 2);
    /* The notification was carried out. */
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(reply, "result"), "name")),
                     "n0");
    json_decref(reply);
    /* A notification that fails gets no reply either. */
    send_text(admin, "{\"jsonrpc\":\"2.0\",\"method\":\"nope\"}");
    json_decref(call_ok("daemon_status", NULL));
}
END_TEST

START_TEST(batch)
{
    json_t *reply;

    send_text(admin, "[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"daemon_status\"},"
                     "{\"jsonrpc\":\"2.0\",\"method\":\"daemon_status\"},"
                     "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"nope\"},"
                     "17]");
    reply = receive_reply(admin);
    ck_assert(json_is_array(reply));
    ck_assert_uint_eq(json_array_size(reply), 3);
    ck_assert_int_eq(json_integer_value(json_object_get(json_array_get(reply, 0), "id")), 1);
    ck_assert_ptr_nonnull(json_object_get(json_array_get(reply, 0), "result"));
    ck_assert_int_eq(json_integer_value(json_object_get(
                         json_object_get(json_array_get(reply, 1), "error"), "code")),
                     -32601);
    ck_assert_int_eq(json_integer_value(json_object_get(
                         json_object_get(json_array_get(reply, 2), "error"), "code")),
                     -32600);
    json_decref(reply);
    /* A batch of notifications only: no reply at all. */
    send_text(admin, "[{\"jsonrpc\":\"2.0\",\"method\":\"daemon_status\"}]");
    json_decref(call_ok("rpc_get_methods", NULL));
}
END_TEST

START_TEST(oversized_request_closes_connection)
{
    size_t size = (1u << 20) + 4096;
    char *request = malloc(size + 1);
    json_t *reply;

    /* An unterminated string that never ends within the limit. */
    memset(request, 'a', size);
    memcpy(request, "{\"jsonrpc\":\"2.0\",\"method\":\"", 27);
    request[size] = '\0';
    ck_assert_int_ge(send(admin, request, size, MSG_NOSIGNAL), 1 << 20);
    free(request);
    reply = receive_reply(admin);
    ck_assert_ptr_nonnull(reply);
    ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(reply, "error"), "code")),
                     -32600);
    json_decref(reply);
    ck_assert(closed_by_daemon(admin));
    close(admin);
    admin = admin_client_connect(harness.admin_socket);
    json_decref(call_ok("daemon_status", NULL));
}
END_TEST

/* The error code of a batch reply's element `index`, 0 for a result. */
static int element_code(json_t *reply, size_t index)
{
    return (int)json_integer_value(
        json_object_get(json_object_get(json_array_get(reply, index), "error"), "code"));
}

/* Adds `count` testdev devices named NAME0, NAME1... */
static void add_devices(const char *name, int count)
{
    char params[256];

    for (int i = 0; i < count; i++) {
        FORMAT(params,
               "{\"name\":\"%s%d\",\"plugin\":\"testdev\",\"params\":{\"ram_size\":\"8K\"}}", name,
               i);
        json_decref(call_ok("device_add", params));
    }
}

/* A batch of `count` copies of `request` with ids 0, 1...: malloc'ed text. */
static char *make_batch(const char *method, size_t count)
{
    size_t size = count * 96 + 3, used = 0;
    char *text = malloc(size);

    ck_assert_ptr_nonnull(text);
    text[used++] = '[';
    for (size_t i = 0; i < count; i++)
        used += (size_t)snprintf(text + used, size - used,
                                 "%s{\"jsonrpc\":\"2.0\",\"id\":%zu,\"method\":\"%s\"}",
                                 i > 0 ? "," : "", i, method);
    ck_assert_uint_lt(used + 2, size);
    text[used++] = ']';
    text[used] = '\0';
    return text;
}

struct bulk_sender {
    int fd;
    const char *text;
    size_t length;
};

static void *send_bulk(void *argument)
{
    struct bulk_sender *sender = argument;

    for (size_t done = 0; done < sender->length;) {
        ssize_t n = send(sender->fd, sender->text + done, sender->length - done, MSG_NOSIGNAL);
        if (n <= 0)
            break;
        done += (size_t)n;
    }
    return NULL;
}

/*
 * A batch is carried out a few requests per turn; what the client sends meanwhile waits in
 * the socket rather than piling up in the daemon's input buffer, where it would count
 * against the 1 MiB request limit although no request is large.
 */
START_TEST(requests_behind_a_batch_wait_in_the_socket)
{
    enum { FOLLOWING = 24000 };
    char *first = make_batch("rpc_get_methods", 256), *text;
    size_t batch_length = strlen(first), used = batch_length, size = batch_length + FOLLOWING * 64;
    struct bulk_sender sender = {.fd = admin};
    pthread_t thread;
    json_t *reply;

    text = malloc(size);
    ck_assert_ptr_nonnull(text);
    memcpy(text, first, batch_length);
    free(first);
    for (int i = 0; i < FOLLOWING; i++)
        used += (size_t)snprintf(text + used, size - used,
                                 "{\"jsonrpc\":\"2.0\",\"id\":%d,\"method\":\"plugin_list\"}",
                                 1000 + i);
    ck_assert_uint_gt(used, 1u << 20);
    sender.text = text;
    sender.length = used;
    ck_assert_int_eq(pthread_create(&thread, NULL, send_bulk, &sender), 0);
    reply = receive_reply(admin);
    ck_assert_ptr_nonnull(reply);
    ck_assert_uint_eq(json_array_size(reply), 256);
    json_decref(reply);
    for (int i = 0; i < FOLLOWING; i++) {
        reply = receive_reply(admin);
        ck_assert_msg(reply != NULL, "connection closed after %d of %d replies", i, FOLLOWING);
        ck_assert_int_eq(json_integer_value(json_object_get(reply, "id")), 1000 + i);
        json_decref(reply);
    }
    pthread_join(thread, NULL);
    free(text);
}
END_TEST

/* CPU time (user + system, in clock ticks) the process has used. */
static unsigned long long cpu_ticks(pid_t pid)
{
    char path[64], text[1024], *end;
    unsigned long long user = 0, system = 0;
    FILE *stat_file;

    FORMAT(path, "/proc/%d/stat", (int)pid);
    stat_file = fopen(path, "r");
    ck_assert_ptr_nonnull(stat_file);
    ck_assert_ptr_nonnull(fgets(text, sizeof(text), stat_file));
    fclose(stat_file);
    /* Fields 14 and 15, counted after the command name's closing parenthesis. */
    end = strrchr(text, ')');
    ck_assert_ptr_nonnull(end);
    ck_assert_int_eq(
        sscanf(end + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &user, &system),
        2);
    return user + system;
}

/* Out of descriptors, the admin socket backs off instead of spinning, and recovers. */
START_TEST(admin_socket_backs_off_without_descriptors)
{
    const struct rlimit tight = {.rlim_cur = 40, .rlim_max = 40};
    int clients[64], count = 0;
    unsigned long long before;

    /* The daemon under a tight descriptor limit, set from outside once it runs. */
    ck_assert_int_eq(prlimit(harness.pid, RLIMIT_NOFILE, &tight, NULL), 0);
    while (count < 64) {
        clients[count] = admin_client_connect(harness.admin_socket);
        count++;
    }
    ck_assert_int_eq(daemon_harness_wait_log(&harness, "cannot accept a connection", TIMEOUT), 0);
    before = cpu_ticks(harness.pid);
    sleep(1);
    ck_assert_uint_lt(cpu_ticks(harness.pid) - before,
                      (unsigned long long)sysconf(_SC_CLK_TCK) / 4);
    ck_assert_uint_le(daemon_harness_log_count(&harness, "cannot accept a connection"), 5);
    for (int i = 0; i < count; i++)
        close(clients[i]);
    /* Once descriptors are free again, the administrator gets in. */
    admin = admin_client_connect(harness.admin_socket);
    json_decref(call_ok("daemon_status", NULL));
}
END_TEST

START_TEST(batch_too_large_is_refused_whole)
{
    char *text = make_batch("device_list", 257);
    json_t *reply;

    send_text(admin, text);
    free(text);
    reply = receive_reply(admin);
    ck_assert_ptr_nonnull(reply);
    ck_assert(json_is_object(reply));
    ck_assert(json_is_null(json_object_get(reply, "id")));
    ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(reply, "error"), "code")),
                     -32600);
    ck_assert_ptr_nonnull(strstr(
        json_string_value(json_object_get(json_object_get(reply, "error"), "message")), "batch"));
    json_decref(reply);
    /* Nothing was carried out, and the connection carries on. */
    ck_assert_int_eq(daemon_harness_wait_log(&harness, "batch of 257 requests refused", TIMEOUT),
                     0);
    json_decref(call_ok("daemon_status", NULL));
    /* 256 is allowed. */
    text = make_batch("rpc_get_methods", 256);
    send_text(admin, text);
    free(text);
    reply = receive_reply(admin);
    ck_assert_uint_eq(json_array_size(reply), 256);
    for (size_t i = 0; i < 256; i++)
        ck_assert_int_eq(element_code(reply, i), 0);
    json_decref(reply);
}
END_TEST

START_TEST(batch_stops_carrying_out_requests_past_its_reply_budget)
{
    char *text = make_batch("device_list", 256);
    size_t results = 0;
    json_t *reply;

    /* 30 devices: a device_list reply of about 12 KiB, 256 of them about 3 MiB. */
    add_devices("big", 30);
    send_text(admin, text);
    free(text);
    reply = receive_reply(admin);
    ck_assert(json_is_array(reply));
    ck_assert_uint_eq(json_array_size(reply), 256);
    for (size_t i = 0; i < 256; i++) {
        json_t *element = json_array_get(reply, i);
        ck_assert_int_eq(json_integer_value(json_object_get(element, "id")), (json_int_t)i);
        if (element_code(reply, i) == 0) {
            /* Results first, then only refusals. */
            ck_assert_uint_eq(results, i);
            results++;
        } else {
            ck_assert_int_eq(element_code(reply, i), -32010);
        }
    }
    ck_assert_uint_gt(results, 10);
    ck_assert_uint_lt(results, 200);
    json_decref(reply);
    ck_assert(daemon_harness_log_contains(&harness, "replies to a batch reached 1024 KiB"));
    json_decref(call_ok("daemon_status", NULL));
}
END_TEST

START_TEST(half_closed_client_gets_every_reply)
{
    size_t count = 200, replies = 0;
    json_t *reply;

    /* Replies of about 12 KiB each: more than the daemon writes before pausing. */
    add_devices("h", 30);
    for (size_t i = 0; i < count; i++)
        send_text(admin, "{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"device_list\"}\n");
    /* A bare value at the end of the stream is complete then; so is a request. */
    send_text(admin, "{\"jsonrpc\":\"2.0\",\"id\":8,\"method\":\"daemon_status\"} 42");
    ck_assert_int_eq(shutdown(admin, SHUT_WR), 0);
    while ((reply = receive_reply(admin)) != NULL) {
        if (replies < count) {
            ck_assert_int_eq(json_integer_value(json_object_get(reply, "id")), 7);
            ck_assert_uint_eq(json_array_size(json_object_get(reply, "result")), 30);
        } else if (replies == count) {
            ck_assert_int_eq(json_integer_value(json_object_get(reply, "id")), 8);
        } else {
            ck_assert_int_eq(
                json_integer_value(json_object_get(json_object_get(reply, "error"), "code")),
                -32600);
        }
        replies++;
        json_decref(reply);
    }
    ck_assert_uint_eq(replies, count + 2);

    /* Half a request before the end of the stream: a parse error, then the close. */
    close(admin);
    admin = admin_client_connect(harness.admin_socket);
    send_text(admin, "{\"jsonrpc\":\"2.0\",\"id\":9,\"method\":\"daemon_st");
    ck_assert_int_eq(shutdown(admin, SHUT_WR), 0);
    reply = receive_reply(admin);
    ck_assert_ptr_nonnull(reply);
    ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(reply, "error"), "code")),
                     -32700);
    json_decref(reply);
    ck_assert(closed_by_daemon(admin));
}
END_TEST

START_TEST(silent_client_does_not_stall_others)
{
    int silent = admin_client_connect(harness.admin_socket);
    char path[PATH_MAX];

    /* Half a request, then silence. */
    send_text(silent, "{\"jsonrpc\":\"2.0\",\"id\":1,\"meth");
    json_decref(call_ok("device_add", "{\"name\":\"s0\",\"plugin\":\"testdev\"}"));
    daemon_harness_device_socket(&harness, "s0", path, sizeof(path));
    ck_assert_int_eq(access(path, F_OK), 0);
    close(silent);
}
END_TEST

/* The line a refused connection gets before the daemon closes it: its error code. */
static int refused_code(int fd)
{
    json_t *reply = receive_reply(fd);
    int code;

    if (reply == NULL)
        return 0;
    code = (int)json_integer_value(json_object_get(json_object_get(reply, "error"), "code"));
    json_decref(reply);
    return code;
}

START_TEST(connection_limit)
{
    int fds[64];

    /* The fixture's connection is one of the 64; root may use them all. */
    for (int i = 0; i < 63; i++)
        fds[i] = admin_client_connect(harness.admin_socket);
    json_decref(call_on(fds[62], "daemon_status", NULL));
    /* One too many is told why, then closed; the refusals are logged a few times only. */
    for (int i = 0; i < 20; i++) {
        fds[63] = admin_client_connect(harness.admin_socket);
        ck_assert_int_eq(refused_code(fds[63]), -32010);
        ck_assert(closed_by_daemon(fds[63]));
        close(fds[63]);
    }
    ck_assert_int_eq(daemon_harness_wait_log(&harness, "admin socket: refused", TIMEOUT), 0);
    ck_assert_uint_le(daemon_harness_log_count(&harness, "admin socket: refused"), 5);
    close(fds[0]);
    /* A slot is free again once a client leaves. */
    for (int i = 0; i < 50; i++) {
        int fd = admin_client_connect(harness.admin_socket);
        struct pollfd pollfd = {.fd = fd, .events = POLLIN};
        if (poll(&pollfd, 1, 20) == 0) {
            json_decref(call_on(fd, "daemon_status", NULL));
            close(fd);
            break;
        }
        close(fd);
        ck_assert_int_lt(i, 49);
    }
    for (int i = 1; i < 63; i++)
        close(fds[i]);
}
END_TEST

START_TEST(silent_connections_closed_before_they_lock_anyone_out)
{
    int fds[70];
    struct timespec start, end;

    /* 63 silent connections and one with half a request: all gone within 5 s and a bit. */
    for (int i = 0; i < 63; i++)
        fds[i] = admin_client_connect(harness.admin_socket);
    send_text(fds[0], "{\"jsonrpc\":\"2.0\",\"id\":1,\"meth");
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (int i = 0; i < 63; i++) {
        ck_assert(closed_by_daemon(fds[i]));
        close(fds[i]);
    }
    clock_gettime(CLOCK_MONOTONIC, &end);
    ck_assert_int_le(end.tv_sec - start.tv_sec, 7);
    ck_assert(daemon_harness_log_contains(&harness, "sent no complete request within 5 s"));
    /* The fixture's connection was silent too. */
    ck_assert(closed_by_daemon(admin));
    close(admin);
    admin = admin_client_connect(harness.admin_socket);
    json_decref(call_ok("daemon_status", NULL));
}
END_TEST

/* In a child as `uid`: opens `count` connections, each asking daemon_status; writes to
 * `report` how many were answered and how many were refused with -32010, then waits for
 * `hold` to close before exiting (keeping the answered ones open). */
static void connect_as(uid_t uid, int count, int report, int hold)
{
    int answered = 0, refused = 0, fds[64];

    if (setgid(uid) != 0 || setuid(uid) != 0)
        _exit(2);
    for (int i = 0; i < count && i < 64; i++) {
        char line[8192];
        size_t length = 0;
        struct sockaddr_un address = {.sun_family = AF_UNIX};
        fds[i] = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        strcpy(address.sun_path, harness.admin_socket);
        if (connect(fds[i], (struct sockaddr *)&address, sizeof(address)) != 0)
            _exit(3);
        (void)!send(fds[i], "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"daemon_status\"}", 49,
                    MSG_NOSIGNAL);
        while (length < sizeof(line) && memchr(line, '\n', length) == NULL) {
            struct pollfd pollfd = {.fd = fds[i], .events = POLLIN};
            ssize_t received;
            if (poll(&pollfd, 1, TIMEOUT) != 1)
                _exit(4);
            received = recv(fds[i], line + length, sizeof(line) - length, 0);
            if (received <= 0)
                break;
            length += (size_t)received;
        }
        answered += memmem(line, length, "\"result\"", 8) != NULL;
        refused += memmem(line, length, "-32010", 6) != NULL;
    }
    int counts[2] = {answered, refused};
    (void)!write(report, counts, sizeof(counts));
    char byte;
    (void)!read(hold, &byte, 1);
    _exit(0);
}

START_TEST(other_users_cannot_lock_out_root)
{
    uid_t uids[] = {65534, 65533, 65532, 65531, 65530};
    int expected[][2] = {{16, 4}, {16, 4}, {16, 4}, {7, 13}, {0, 20}};
    int hold[2];
    pid_t children[5];

    if (getuid() != 0) {
        fprintf(stderr, "other_users_cannot_lock_out_root: skipped, needs root\n");
        return;
    }
    /* Let other users reach the socket. */
    char parent[PATH_MAX];
    FORMAT(parent, "%s", harness.directory);
    *strrchr(parent, '/') = '\0';
    ck_assert_int_eq(chmod(parent, 0711), 0);
    ck_assert_int_eq(chmod(harness.directory, 0711), 0);
    ck_assert_int_eq(chmod(harness.runtime_dir, 0711), 0);
    ck_assert_int_eq(chmod(harness.admin_socket, 0666), 0);
    ck_assert_int_eq(pipe(hold), 0);
    /* 16 per user, as far as the 56 open to all go (the fixture holds one): a fifth gets none. */
    for (int i = 0; i < 5; i++) {
        int report[2], counts[2];
        ck_assert_int_eq(pipe(report), 0);
        children[i] = fork();
        ck_assert_int_ge(children[i], 0);
        if (children[i] == 0) {
            close(hold[1]);
            connect_as(uids[i], 20, report[1], hold[0]);
        }
        close(report[1]);
        ck_assert_int_eq(read(report[0], counts, sizeof(counts)), (ssize_t)sizeof(counts));
        close(report[0]);
        ck_assert_msg(counts[0] == expected[i][0] && counts[1] == expected[i][1],
                      "uid %u: %d answered, %d refused", (unsigned)uids[i], counts[0], counts[1]);
    }
    /* 57 open (the fixture's and 56 others): root still gets in, up to 64. */
    int fds[7];
    for (int i = 0; i < 7; i++) {
        fds[i] = admin_client_connect(harness.admin_socket);
        json_decref(call_on(fds[i], "daemon_status", NULL));
    }
    json_decref(call_ok("daemon_status", NULL));
    for (int i = 0; i < 7; i++)
        close(fds[i]);
    close(hold[1]);
    for (int i = 0; i < 5; i++) {
        int status;
        ck_assert_int_eq(waitpid(children[i], &status, 0), children[i]);
        ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    close(hold[0]);
}
END_TEST

/* --- Persistence, scale, activation ---------------------------------------------------- */

START_TEST(persist_survives_restart)
{
    char file[PATH_MAX];
    json_t *device;

    device = call_ok("device_add", "{\"name\":\"keep0\",\"plugin\":\"testdev\",\"params\":"
                                   "{\"ram_size\":\"32K\"},\"persist\":true}");
    ck_assert(json_is_true(json_object_get(device, "persistent")));
    json_decref(device);
    FORMAT(file, "%s/keep0.yaml", harness.devices_dir);
    ck_assert_int_eq(access(file, F_OK), 0);

    close(admin);
    ck_assert_int_eq(daemon_harness_stop(&harness, SIGTERM), 0);
    ck_assert_int_eq(daemon_harness_start(&harness, NULL), 0);
    admin = admin_client_connect(harness.admin_socket);
    device = call_ok("device_get", "{\"name\":\"keep0\"}");
    ck_assert_str_eq(json_string_value(json_object_get(
                         json_object_get(json_object_get(device, "config"), "params"), "ram_size")),
                     "32K");
    json_decref(device);

    json_decref(call_ok("device_remove", "{\"name\":\"keep0\",\"persist\":true}"));
    ck_assert_int_ne(access(file, F_OK), 0);
    close(admin);
    ck_assert_int_eq(daemon_harness_stop(&harness, SIGTERM), 0);
    ck_assert_int_eq(daemon_harness_start(&harness, NULL), 0);
    admin = admin_client_connect(harness.admin_socket);
    ck_assert_int_eq(call_error("device_get", "{\"name\":\"keep0\"}", NULL, 0), -32001);
}
END_TEST

START_TEST(persist_never_replaces_a_drop_in)
{
    char file[PATH_MAX];
    char *text;
    FILE *stream;

    /* foo.yaml defines device "bar": persisting a device "foo" must not overwrite it. */
    ck_assert_int_eq(
        daemon_harness_write_file(harness.devices_dir, "foo.yaml", "name: bar\nplugin: testdev\n"),
        0);
    json_decref(call_ok("daemon_reload", NULL));
    ck_assert_int_eq(call_error("device_add",
                                "{\"name\":\"foo\",\"plugin\":\"testdev\",\"persist\":true}", NULL,
                                0),
                     -32004);
    ck_assert_int_eq(call_error("device_get", "{\"name\":\"foo\"}", NULL, 0), -32001);
    FORMAT(file, "%s/foo.yaml", harness.devices_dir);
    stream = fopen(file, "r");
    ck_assert_ptr_nonnull(stream);
    text = calloc(1, 256);
    ck_assert_uint_gt(fread(text, 1, 255, stream), 0);
    fclose(stream);
    ck_assert_str_eq(text, "name: bar\nplugin: testdev\n");
    free(text);
    /* A masked name is taken too. */
    FORMAT(file, "%s/masked.yaml", harness.devices_dir);
    ck_assert_int_eq(symlink("/dev/null", file), 0);
    ck_assert_int_eq(call_error("device_add",
                                "{\"name\":\"masked\",\"plugin\":\"testdev\",\"persist\":true}",
                                NULL, 0),
                     -32004);
}
END_TEST

START_TEST(a_thousand_devices_added_and_removed)
{
    char params[256];
    int fds_before;

    /* Warm up once so lazily created resources do not count as a leak. */
    json_decref(call_ok("device_add", "{\"name\":\"warm\",\"plugin\":\"testdev\","
                                      "\"params\":{\"ram_size\":\"8K\"}}"));
    json_decref(call_ok("device_remove", "{\"name\":\"warm\"}"));
    fds_before = daemon_harness_open_fds(&harness);
    for (int i = 0; i < 1000; i++) {
        FORMAT(params, "{\"name\":\"d%d\",\"plugin\":\"testdev\",\"params\":{\"ram_size\":\"8K\"}}",
               i);
        json_decref(call_ok("device_add", params));
    }
    json_t *status = call_ok("daemon_status", NULL);
    ck_assert_int_eq(
        json_integer_value(json_object_get(json_object_get(status, "devices"), "total")), 1000);
    json_decref(status);
    /* Each device holds its listening socket and its RAM's memfd. */
    ck_assert_int_ge(daemon_harness_open_fds(&harness), fds_before + 2000);
    for (int i = 0; i < 1000; i++) {
        FORMAT(params, "{\"name\":\"d%d\"}", i);
        json_decref(call_ok("device_remove", params));
    }
    ck_assert_int_eq(daemon_harness_open_fds(&harness), fds_before);
    char path[PATH_MAX];
    daemon_harness_device_socket(&harness, "d999", path, sizeof(path));
    ck_assert_int_ne(access(path, F_OK), 0);
}
END_TEST

/* A device on a worker holds its listening socket and its RAM's memfd, and no more: post()
 * wakes a worker through one eventfd for all its devices, not one per device. */
START_TEST(thread_devices_hold_two_descriptors_each)
{
    char params[256];
    int fds_before = 0;

    /* A first round warms the workers up: what a worker's loop makes with its first device
     * and keeps (its timer descriptor) is not the devices' to count. */
    for (int round = 0; round < 2; round++) {
        if (round == 1)
            fds_before = daemon_harness_open_fds(&harness);
        for (int i = 0; i < 200; i++) {
            FORMAT(params,
                   "{\"name\":\"t%d\",\"plugin\":\"testdev\",\"isolation\":\"thread\","
                   "\"params\":{\"ram_size\":\"8K\"}}",
                   i);
            json_decref(call_ok("device_add", params));
        }
        if (round == 1) {
            ck_assert_int_ge(daemon_harness_open_fds(&harness), fds_before + 400);
            /* 16: more than its workers */
            ck_assert_int_le(daemon_harness_open_fds(&harness), fds_before + 400 + 16);
        }
        for (int i = 0; i < 200; i++) {
            FORMAT(params, "{\"name\":\"t%d\"}", i);
            json_decref(call_ok("device_remove", params));
        }
    }
    /* The workers' eventfds go with their last device. */
    ck_assert_int_eq(daemon_harness_open_fds(&harness), fds_before);
}
END_TEST

START_TEST(socket_activation)
{
    char activate[] = "/usr/bin/systemd-socket-activate", socket_path[PATH_MAX];
    char daemon_path[PATH_MAX];
    const char *arguments[32];
    size_t count = 0;

    if (access(activate, X_OK) != 0) {
        fprintf(stderr, "socket_activation: skipped, %s is not installed\n", activate);
        return;
    }
    teardown();
    ck_assert_int_eq(daemon_harness_init(&harness, NULL), 0);
    /* The activated socket lives elsewhere than --admin-socket would put it. */
    FORMAT(socket_path, "%s/activated.sock", harness.directory);
    FORMAT(daemon_path, "%s/vfio-userd", daemon_harness_build_dir());
    pid_t child = fork();
    ck_assert_int_ge(child, 0);
    if (child == 0) {
        char listen[PATH_MAX + 8];
        FORMAT(listen, "--listen=%s", socket_path);
        arguments[count++] = activate;
        arguments[count++] = listen;
        arguments[count++] = "--fdname=admin";
        arguments[count++] = daemon_path;
        arguments[count++] = "-c";
        arguments[count++] = harness.config_path;
        arguments[count++] = "--devices-dir";
        arguments[count++] = harness.devices_dir;
        arguments[count++] = "--plugin-dir";
        arguments[count++] = harness.plugin_dir;
        arguments[count++] = "--runtime-dir";
        arguments[count++] = harness.runtime_dir;
        arguments[count++] = NULL;
        int log = open(harness.log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
        dup2(log, STDERR_FILENO);
        dup2(log, STDOUT_FILENO);
        execv(activate, (char *const *)arguments);
        _exit(127);
    }
    /* systemd-socket-activate starts the daemon at the first connection. */
    for (int i = 0; i < 500 && access(socket_path, F_OK) != 0; i++)
        usleep(10000);
    admin = admin_client_connect(socket_path);
    json_t *status = call_ok("daemon_status", NULL);
    ck_assert(json_is_integer(json_object_get(status, "pid")));
    json_decref(status);
    /* The daemon took the passed socket and did not create its own. */
    char own[PATH_MAX];
    FORMAT(own, "%s/admin.sock", harness.runtime_dir);
    ck_assert_int_ne(access(own, F_OK), 0);
    close(admin);
    admin = -1;
    kill(child, SIGTERM);
    int status_code;
    ck_assert_int_eq(waitpid(child, &status_code, 0), child);
    ck_assert(WIFEXITED(status_code) && WEXITSTATUS(status_code) == 0);
    /* The socket belongs to whoever passed it: the daemon leaves it in place. */
    struct stat status_after;
    ck_assert_int_eq(stat(socket_path, &status_after), 0);
    ck_assert(S_ISSOCK(status_after.st_mode));
}
END_TEST

static Suite *admin_suite(void)
{
    Suite *suite = suite_create("admin");
    struct {
        const char *name;
        const TTest *tests[8];
    } cases[] = {
        {"methods",
         {rpc_get_methods_lists_every_method, daemon_status_and_plugin_list,
          device_add_get_list_reset_remove, daemon_reload_applies_drop_ins_now}},
        {"errors",
         {application_and_parameter_errors, persist_failure_leaves_nothing, invalid_requests,
          malformed_json_closes_connection, invalid_json_is_answered_at_once}},
        {"framing",
         {request_split_across_writes, several_requests_in_one_write_and_notifications, batch,
          oversized_request_closes_connection, batch_too_large_is_refused_whole,
          requests_behind_a_batch_wait_in_the_socket,
          batch_stops_carrying_out_requests_past_its_reply_budget,
          half_closed_client_gets_every_reply}},
        {"clients",
         {silent_client_does_not_stall_others, connection_limit,
          silent_connections_closed_before_they_lock_anyone_out, other_users_cannot_lock_out_root,
          admin_socket_backs_off_without_descriptors}},
        {"persistence", {persist_survives_restart, persist_never_replaces_a_drop_in}},
        {"scale", {a_thousand_devices_added_and_removed, thread_devices_hold_two_descriptors_each}},
        {"activation", {socket_activation}},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        TCase *tcase = tcase_create(cases[i].name);
        tcase_add_checked_fixture(tcase, setup, teardown);
        tcase_set_timeout(tcase, 120);
        for (size_t j = 0; j < 8 && cases[i].tests[j] != NULL; j++)
            _tcase_add_test(tcase, cases[i].tests[j], 0, 0, 0, 1);
        suite_add_tcase(suite, tcase);
    }
    return suite;
}

int main(void)
{
    return daemon_harness_run_suite(admin_suite());
}
