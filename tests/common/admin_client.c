/*
 * A JSON-RPC client of the daemon's admin socket for integration tests; see admin_client.h.
 */
#include <check.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "admin_client.h"
#include "daemon_harness.h"
#include "test_process.h"

int admin_client_connect(const char *path)
{
    struct sockaddr_un address = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

    ck_assert_int_ge(fd, 0);
    ck_assert_uint_lt(strlen(path), sizeof(address.sun_path));
    strcpy(address.sun_path, path);
    ck_assert_msg(connect(fd, (struct sockaddr *)&address, sizeof(address)) == 0, "connect %s: %s",
                  path, strerror(errno));
    return fd;
}

void admin_client_open(struct admin_client *client, const char *path, uint64_t bound_ms)
{
    admin_client_close(client);
    client->fd = admin_client_connect(path);
    client->next_id = 1;
    client->bound_ms = bound_ms;
    client->slowest_ms = 0;
    client->buffered = 0;
}

void admin_client_close(struct admin_client *client)
{
    if (client->fd >= 0)
        close(client->fd);
    client->fd = -1;
}

json_t *admin_client_call(struct admin_client *client, const char *method, const char *params)
{
    char request[4096];
    json_error_t error;
    uint64_t start = test_now_ms();

    FORMAT(request, "{\"jsonrpc\":\"2.0\",\"id\":%d,\"method\":\"%s\"%s%s}\n", client->next_id++,
           method, params != NULL ? ",\"params\":" : "", params != NULL ? params : "");
    ck_assert_int_eq(send(client->fd, request, strlen(request), MSG_NOSIGNAL),
                     (ssize_t)strlen(request));
    for (;;) {
        char *newline = memchr(client->buffer, '\n', client->buffered);
        if (newline != NULL) {
            size_t length = (size_t)(newline - client->buffer);
            json_t *reply = json_loadb(client->buffer, length, 0, &error);
            uint64_t elapsed = test_now_ms() - start;

            ck_assert_msg(reply != NULL, "reply is not JSON: %s", error.text);
            /* Whatever came after this reply belongs to the next call. */
            client->buffered -= length + 1;
            memmove(client->buffer, newline + 1, client->buffered);
            if (elapsed > client->slowest_ms)
                client->slowest_ms = elapsed;
            ck_assert_msg(client->bound_ms == 0 || elapsed < client->bound_ms, "%s took %llu ms",
                          method, (unsigned long long)elapsed);
            return reply;
        }
        struct pollfd pollfd = {.fd = client->fd, .events = POLLIN};
        ck_assert_msg(poll(&pollfd, 1, DAEMON_HARNESS_TIMEOUT_MS) == 1, "%s: no reply", method);
        ssize_t received = recv(client->fd, client->buffer + client->buffered,
                                sizeof(client->buffer) - client->buffered, 0);
        ck_assert_int_gt(received, 0);
        client->buffered += (size_t)received;
    }
}

json_t *admin_client_call_ok(struct admin_client *client, const char *method, const char *params)
{
    json_t *response = admin_client_call(client, method, params);
    json_t *result = json_incref(json_object_get(response, "result"));

    ck_assert_msg(
        result != NULL, "%s failed: %s", method,
        json_string_value(json_object_get(json_object_get(response, "error"), "message")));
    json_decref(response);
    return result;
}
