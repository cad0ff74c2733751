/*
 * Requests pipelined on one admin connection: the daemon starts the device_adds of a burst
 * on their workers together, yet every reply must be the one the requests would have had
 * carried out one by one, in request order. Each burst here is first sent one request at a
 * time (names prefixed "seq-"), then again in one write ("pip-"), and the two sets of
 * replies must agree field for field: duplicates and socket paths taken inside the burst,
 * an add that fails on its worker followed by one of the same name, bad adds among good
 * ones, removals between adds, batches and notifications in the stream. A client that
 * closes its connection in the middle of a burst leaves a prefix of the burst done, with
 * nothing half started.
 */
#include <check.h>
#include <errno.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "admin_client.h"
#include "daemon_harness.h"
#include "test_runner.h"

#define TIMEOUT DAEMON_HARNESS_TIMEOUT_MS

static struct daemon_harness harness;

static void setup(void)
{
    ck_assert_int_eq(daemon_harness_init(&harness, NULL), 0);
    ck_assert_int_eq(daemon_harness_start(&harness, NULL), 0);
}

static void teardown(void)
{
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

/* Reads newline-terminated replies from one connection. */
struct reader {
    int fd;
    size_t buffered;
    char buffer[1 << 20];
};

/* One reply, or NULL at end of stream; waits up to TIMEOUT. */
static json_t *receive_reply(struct reader *reader)
{
    json_error_t error;

    for (;;) {
        char *newline = memchr(reader->buffer, '\n', reader->buffered);
        if (newline != NULL) {
            json_t *reply =
                json_loadb(reader->buffer, (size_t)(newline - reader->buffer), 0, &error);
            ck_assert_msg(reply != NULL, "reply is not JSON: %s", error.text);
            reader->buffered -= (size_t)(newline + 1 - reader->buffer);
            memmove(reader->buffer, newline + 1, reader->buffered);
            return reply;
        }
        struct pollfd pollfd = {.fd = reader->fd, .events = POLLIN};
        ck_assert_int_eq(poll(&pollfd, 1, TIMEOUT), 1);
        ssize_t received = recv(reader->fd, reader->buffer + reader->buffered,
                                sizeof(reader->buffer) - reader->buffered, 0);
        ck_assert_int_ge(received, 0);
        if (received == 0)
            return NULL;
        reader->buffered += (size_t)received;
    }
}

/* `template` with every "{P}" replaced by `prefix` and every "{ID}" by `id`. */
static void expand(const char *template, const char *prefix, int id, char *text, size_t size)
{
    size_t used = 0;

    for (const char *p = template; *p != '\0';) {
        char piece[64];
        const char *insert = NULL;
        if (strncmp(p, "{P}", 3) == 0) {
            insert = prefix;
            p += 3;
        } else if (strncmp(p, "{ID}", 4) == 0) {
            FORMAT(piece, "%d", id);
            insert = piece;
            p += 4;
        } else {
            ck_assert_uint_lt(used + 1, size);
            text[used++] = *p++;
            continue;
        }
        ck_assert_uint_lt(used + strlen(insert), size);
        memcpy(text + used, insert, strlen(insert));
        used += strlen(insert);
    }
    text[used] = '\0';
}

/* A request of a burst: its text, and whether a reply comes back for it. */
struct step {
    const char *template;
    bool answered;
};

/*
 * The parts of a reply that must not depend on how the request arrived: the id, and the
 * error whole or the result's name and state. Device hosts' pids differ, and a device's
 * counters are its own; everything else of a result is the device's configuration.
 */
static char *essentials(json_t *reply)
{
    json_t *copy = json_deep_copy(reply), *result = json_object_get(copy, "result");
    char *text;

    if (json_is_object(result) && json_object_get(result, "pid") != NULL)
        json_object_set_new(copy, "result",
                            json_pack("{s:O, s:O, s:O}", "name", json_object_get(result, "name"),
                                      "state", json_object_get(result, "state"), "socket",
                                      json_object_get(result, "socket")));
    text = json_dumps(copy, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(copy);
    ck_assert_ptr_nonnull(text);
    return text;
}

/* `text` with every "seq-" turned into "pip-", in place. */
static void as_pipelined(char *text)
{
    for (char *found = strstr(text, "seq-"); found != NULL; found = strstr(found, "seq-"))
        memcpy(found, "pip-", 4);
}

/*
 * Sends `steps` one at a time ("seq-" names), then all in one write ("pip-" names) on a
 * connection of their own, and checks that the replies agree, in order. Returns the
 * pipelined replies (owned), one per answered step.
 */
static json_t *one_by_one_then_pipelined(const struct step *steps, size_t count)
{
    static struct reader reader;
    size_t size = 64 * 1024, used = 0, answered = 0;
    char *burst = malloc(size), text[4096];
    json_t *sequential = json_array(), *pipelined = json_array();
    int fd = admin_client_connect(harness.admin_socket);

    ck_assert_ptr_nonnull(burst);
    reader.fd = fd;
    reader.buffered = 0;
    for (size_t i = 0; i < count; i++) {
        /* A newline after each: a bare number ends only where something follows it. */
        expand(steps[i].template, "seq-", (int)i + 1, text, sizeof(text) - 1);
        strcat(text, "\n");
        send_text(fd, text);
        if (steps[i].answered)
            json_array_append_new(sequential, receive_reply(&reader));
        expand(steps[i].template, "pip-", (int)i + 1, text, sizeof(text));
        ck_assert_uint_lt(used + strlen(text) + 1, size);
        used += (size_t)snprintf(burst + used, size - used, "%s\n", text);
        answered += steps[i].answered;
    }
    send_text(fd, burst);
    free(burst);
    for (size_t i = 0; i < answered; i++) {
        json_t *reply = receive_reply(&reader);
        char *expected = essentials(json_array_get(sequential, i));
        char *got;

        ck_assert_ptr_nonnull(reply);
        got = essentials(reply);
        as_pipelined(expected);
        ck_assert_msg(strcmp(expected, got) == 0, "reply %zu: one by one %s, pipelined %s", i,
                      expected, got);
        free(expected);
        free(got);
        json_array_append_new(pipelined, reply);
    }
    /* Nothing more: a notification got no reply. */
    send_text(fd, "{\"jsonrpc\":\"2.0\",\"id\":\"end\",\"method\":\"rpc_get_methods\"}");
    json_t *end = receive_reply(&reader);
    ck_assert_str_eq(json_string_value(json_object_get(end, "id")), "end");
    json_decref(end);
    json_decref(sequential);
    close(fd);
    return pipelined;
}

static int error_code(json_t *reply)
{
    return (int)json_integer_value(json_object_get(json_object_get(reply, "error"), "code"));
}

static const char *error_field(json_t *reply)
{
    return json_string_value(
        json_object_get(json_object_get(json_object_get(reply, "error"), "data"), "field"));
}

static bool socket_exists(const char *name)
{
    char path[PATH_MAX];

    daemon_harness_device_socket(&harness, name, path, sizeof(path));
    return access(path, F_OK) == 0;
}

#define ADD(ID_NAME, REST)                                                                         \
    "{\"jsonrpc\":\"2.0\",\"id\":{ID},\"method\":\"device_add\",\"params\":{\"name\":\"{"          \
    "P}" ID_NAME "\",\"plugin\":\"testdev\"" REST "}}"
#define THREAD ",\"isolation\":\"thread\""
/* An add of a device with another plugin than testdev. */
#define ADD_OF(PLUGIN, ID_NAME)                                                                    \
    "{\"jsonrpc\":\"2.0\",\"id\":{ID},\"method\":\"device_add\",\"params\":{\"name\":\"{"          \
    "P}" ID_NAME "\",\"plugin\":\"" PLUGIN "\"" THREAD "}}"

START_TEST(duplicates_in_a_burst_fail_as_one_by_one)
{
    char path_step[512], sockets[PATH_MAX];
    struct step steps[48];
    size_t count = 0, added = 0;
    json_t *replies, *list;
    static struct admin_client client = ADMIN_CLIENT_INIT;

    FORMAT(sockets, "%s/devices", harness.runtime_dir);
    steps[count++] = (struct step){ADD("d0", THREAD), true};
    steps[count++] = (struct step){ADD("d1", THREAD), true};
    /* The same name again, right behind: refused as one by one, name and all. */
    steps[count++] = (struct step){ADD("d1", THREAD), true};
    steps[count++] = (struct step){ADD("d2", ""), true}; /* a device host */
    steps[count++] = (struct step){ADD("d2", THREAD), true};
    /* Another name on d0's socket, still starting. */
    FORMAT(path_step, ADD("d3", THREAD ",\"socket\":{\"path\":\"%s/{P}d0.sock\"}"), sockets);
    steps[count++] = (struct step){path_step, true};
    /* Refused by the plugin on its worker, then the same name with good parameters: the
     * second may have the name, since the first did not come up. */
    steps[count++] = (struct step){ADD("q0", THREAD ",\"params\":{\"ram_size\":\"3\"}"), true};
    steps[count++] = (struct step){ADD("q0", THREAD), true};
    steps[count++] = (struct step){ADD("d0", THREAD), true};
    /* Enough behind them to take the daemon several turns. */
    while (count < sizeof(steps) / sizeof(steps[0]))
        steps[count++] = (struct step){
            count % 7 == 0 ? ADD("m{ID}", THREAD ",\"x\":1") : ADD("m{ID}", THREAD), true};

    replies = one_by_one_then_pipelined(steps, count);
    ck_assert_ptr_nonnull(json_object_get(json_array_get(replies, 0), "result"));
    ck_assert_ptr_nonnull(json_object_get(json_array_get(replies, 1), "result"));
    ck_assert_int_eq(error_code(json_array_get(replies, 2)), -32002);
    ck_assert_str_eq(error_field(json_array_get(replies, 2)), "name");
    ck_assert_ptr_nonnull(json_object_get(json_array_get(replies, 3), "result"));
    ck_assert_int_eq(error_code(json_array_get(replies, 4)), -32002);
    ck_assert_int_eq(error_code(json_array_get(replies, 5)), -32005);
    ck_assert_str_eq(error_field(json_array_get(replies, 5)), "socket.path");
    ck_assert_int_eq(error_code(json_array_get(replies, 6)), -32602);
    ck_assert_str_eq(error_field(json_array_get(replies, 6)), "params.ram_size");
    ck_assert_ptr_nonnull(json_object_get(json_array_get(replies, 7), "result"));
    ck_assert_int_eq(error_code(json_array_get(replies, 8)), -32002);
    /* Both runs' devices, as their replies said: none half started or left out. */
    for (size_t i = 0; i < count; i++)
        added += json_object_get(json_array_get(replies, i), "result") != NULL;
    admin_client_open(&client, harness.admin_socket, 0);
    list = admin_client_call_ok(&client, "device_list", NULL);
    ck_assert_uint_eq(json_array_size(list), 2 * added);
    json_decref(list);
    admin_client_close(&client);
    ck_assert(socket_exists("pip-q0"));
    ck_assert(!socket_exists("pip-d3"));
    json_decref(replies);
}
END_TEST

#define CALL(METHOD, PARAMS)                                                                       \
    "{\"jsonrpc\":\"2.0\",\"id\":{ID},\"method\":\"" METHOD "\",\"params\":" PARAMS "}"

START_TEST(add_and_remove_of_one_name_in_a_burst)
{
    const struct step steps[] = {
        {ADD("r0", THREAD), true},
        {ADD("r1", THREAD), true},
        {CALL("device_remove", "{\"name\":\"{P}r0\"}"), true},
        {CALL("device_get", "{\"name\":\"{P}r0\"}"), true},
        {ADD("r0", THREAD ",\"params\":{\"ram_size\":\"16K\"}"), true},
        {ADD("r2", THREAD), true},
        {CALL("device_get", "{\"name\":\"{P}r0\"}"), true},
        {CALL("device_remove", "{\"name\":\"{P}r0\"}"), true},
        {CALL("device_remove", "{\"name\":\"{P}r0\"}"), true},
        {ADD("r0", ""), true},
    };
    size_t count = sizeof(steps) / sizeof(steps[0]);
    json_t *replies = one_by_one_then_pipelined(steps, count), *got;

    ck_assert_ptr_nonnull(json_object_get(json_array_get(replies, 2), "result"));
    ck_assert_int_eq(error_code(json_array_get(replies, 3)), -32001);
    got = json_object_get(json_array_get(replies, 6), "result");
    ck_assert_str_eq(json_string_value(json_object_get(
                         json_object_get(json_object_get(got, "config"), "params"), "ram_size")),
                     "16K");
    ck_assert_ptr_nonnull(json_object_get(json_array_get(replies, 7), "result"));
    ck_assert_int_eq(error_code(json_array_get(replies, 8)), -32001);
    ck_assert_ptr_nonnull(json_object_get(json_array_get(replies, 9), "result"));
    ck_assert(socket_exists("pip-r0") && socket_exists("pip-r1") && socket_exists("pip-r2"));
    json_decref(replies);
}
END_TEST

START_TEST(bad_adds_among_good_ones)
{
    const struct step steps[] = {
        {ADD("g0", THREAD), true},
        {ADD("g1", THREAD), true},
        /* Refused before any worker sees them. */
        {ADD_OF("nope", "b0"), true},
        {ADD("b1", THREAD ",\"enabled\":false"), true},
        {ADD("b2", THREAD ",\"colour\":\"red\""), true},
        {ADD("b3/x", THREAD), true},
        /* Refused by the plugin, on the worker. */
        {ADD("b4", THREAD ",\"params\":{\"colour\":1}"), true},
        {ADD("g2", THREAD), true},
        /* Not requests at all, or not for a method there is. */
        {"{\"jsonrpc\":\"1.0\",\"id\":{ID},\"method\":\"device_add\"}", true},
        {"17", true},
        {"{\"jsonrpc\":\"2.0\",\"id\":{ID},\"method\":\"device_ad\"}", true},
        /* Notifications: carried out, never answered. */
        {"{\"jsonrpc\":\"2.0\",\"method\":\"device_add\",\"params\":{\"name\":\"{P}n0\","
         "\"plugin\":\"testdev\",\"isolation\":\"thread\"}}",
         false},
        {"{\"jsonrpc\":\"2.0\",\"method\":\"device_add\",\"params\":{\"name\":\"{P}n0\","
         "\"plugin\":\"testdev\",\"isolation\":\"thread\"}}",
         false},
        {ADD("n0", THREAD), true},
        /* A batch behind started adds, and adds behind it. */
        {"[" CALL("device_get", "{\"name\":\"{P}g2\"}") "," ADD("g3", THREAD) "]", true},
        {ADD("g3", THREAD), true},
        {ADD("g4", THREAD ",\"params\":{\"ram_size\":\"64K\"}"), true},
        {ADD("g5", ""), true},
        {CALL("device_get", "{\"name\":\"{P}g4\"}"), true},
    };
    size_t count = sizeof(steps) / sizeof(steps[0]);
    json_t *replies = one_by_one_then_pipelined(steps, count);

    ck_assert_int_eq(error_code(json_array_get(replies, 2)), -32003);
    ck_assert_int_eq(error_code(json_array_get(replies, 3)), -32602);
    ck_assert_int_eq(error_code(json_array_get(replies, 6)), -32602);
    ck_assert_str_eq(error_field(json_array_get(replies, 6)), "params.colour");
    ck_assert_ptr_nonnull(json_object_get(json_array_get(replies, 7), "result"));
    ck_assert_int_eq(error_code(json_array_get(replies, 8)), -32600);
    ck_assert_int_eq(error_code(json_array_get(replies, 9)), -32600);
    ck_assert_int_eq(error_code(json_array_get(replies, 10)), -32601);
    /* The first notification added n0, the second was refused: n0 exists. */
    ck_assert_int_eq(error_code(json_array_get(replies, 11)), -32002);
    ck_assert(json_is_array(json_array_get(replies, 12)));
    ck_assert_int_eq(error_code(json_array_get(replies, 13)), -32002);
    ck_assert(socket_exists("pip-g0") && socket_exists("pip-g2") && socket_exists("pip-g5"));
    ck_assert(!socket_exists("pip-b4"));
    json_decref(replies);
}
END_TEST

/* The names "c0".."c<count-1>" that exist, as a bit per name; how many. */
static size_t existing_devices(struct admin_client *client, bool *exists, size_t count)
{
    json_t *list = admin_client_call_ok(client, "device_list", NULL), *device;
    size_t index, found = 0;

    memset(exists, 0, count * sizeof(*exists));
    json_array_foreach (list, index, device) {
        unsigned number;
        if (sscanf(json_string_value(json_object_get(device, "name")), "c%u", &number) == 1 &&
            number < count) {
            ck_assert_str_eq(json_string_value(json_object_get(device, "state")), "listening");
            exists[number] = true;
            found++;
        }
    }
    json_decref(list);
    return found;
}

START_TEST(connection_closed_mid_burst)
{
    enum { COUNT = 100 };
    static struct admin_client client = ADMIN_CLIENT_INIT;
    bool exists[COUNT];
    size_t found = 0, previous = COUNT + 1, size = COUNT * 160 + 64, used = 0;
    char *burst = malloc(size), params[64];
    int fd, baseline;

    admin_client_open(&client, harness.admin_socket, 0);
    /* A first device makes the daemon's lasting allocations (a worker's loop, the array). */
    json_decref(admin_client_call_ok(&client, "device_add",
                                     "{\"name\":\"first\",\"plugin\":\"testdev\","
                                     "\"isolation\":\"thread\"}"));
    baseline = daemon_harness_open_fds(&harness);
    ck_assert_ptr_nonnull(burst);
    for (int i = 0; i < COUNT; i++)
        used += (size_t)snprintf(burst + used, size - used,
                                 "{\"jsonrpc\":\"2.0\",\"id\":%d,\"method\":\"device_add\","
                                 "\"params\":{\"name\":\"c%d\",\"plugin\":\"testdev\","
                                 "\"isolation\":\"thread\",\"params\":{\"ram_size\":\"8K\"}}}\n",
                                 i, i);
    /* And half a request: the client goes in the middle of it. */
    used += (size_t)snprintf(burst + used, size - used, "{\"jsonrpc\":\"2.0\",\"id\":1");
    ck_assert_uint_lt(used, size);
    fd = admin_client_connect(harness.admin_socket);
    send_text(fd, burst);
    free(burst);
    close(fd);

    /* The daemon carries out what it read before it found the client gone: wait until the
     * count of devices stops changing. */
    for (int i = 0; i < 100; i++) {
        usleep(50000);
        found = existing_devices(&client, exists, COUNT);
        if (found == previous)
            break;
        previous = found;
    }
    /* A prefix of the burst, each device whole: listening, its socket there; no socket
     * left of a device that is not. */
    for (size_t i = 0; i < COUNT; i++) {
        char name[16];
        FORMAT(name, "c%zu", i);
        ck_assert_msg(exists[i] == (i < found), "c%zu %s, but %zu devices exist", i,
                      exists[i] ? "exists" : "does not exist", found);
        ck_assert_msg(socket_exists(name) == exists[i], "socket of c%zu", i);
    }
    for (size_t i = 0; i < found; i++) {
        FORMAT(params, "{\"name\":\"c%zu\"}", i);
        json_decref(admin_client_call_ok(&client, "device_remove", params));
    }
    /* Nothing held for a device that was started and left: as many descriptors as before
     * (the closed connection's included). */
    ck_assert_int_eq(daemon_harness_open_fds(&harness), baseline);
    json_decref(admin_client_call_ok(&client, "daemon_status", NULL));
    admin_client_close(&client);
}
END_TEST

static Suite *pipeline_suite(void)
{
    Suite *suite = suite_create("pipeline");
    TCase *tcase = tcase_create("pipeline");

    tcase_add_checked_fixture(tcase, setup, teardown);
    tcase_set_timeout(tcase, 120);
    tcase_add_test(tcase, duplicates_in_a_burst_fail_as_one_by_one);
    tcase_add_test(tcase, add_and_remove_of_one_name_in_a_burst);
    tcase_add_test(tcase, bad_adds_among_good_ones);
    tcase_add_test(tcase, connection_closed_mid_burst);
    suite_add_tcase(suite, tcase);
    return suite;
}

int main(void)
{
    return daemon_harness_run_suite(pipeline_suite());
}
