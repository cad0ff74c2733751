/*
 * JSON-RPC 2.0 over the admin socket, with a deadline on every step; see rpc_client.h.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "rpc_client.h"
#include "log.h"

#define RPC_CLIENT_INITIAL_BUFFER (64u * 1024)
/* How often a connect() refused for a full backlog is tried again. */
#define RPC_CLIENT_RETRY_MS 10

struct rpc_client {
    int fd;
    int timeout_ms;
    char *path;
    json_int_t next_id;
    char *buffer; /* bytes received and not yet consumed */
    size_t length;
    size_t capacity;
};

static int64_t now_ms(void)
{
    return (int64_t)(vu_monotonic_usec() / 1000);
}

/* Milliseconds left before `deadline`, at least 0. */
static int remaining_ms(int64_t deadline)
{
    int64_t left = deadline - now_ms();

    return left > 0 ? (int)left : 0;
}

/* Waits for `events` on `fd` until `deadline`: 0, -ETIMEDOUT or -errno. */
static int wait_for(int fd, short events, int64_t deadline)
{
    struct pollfd entry = {.fd = fd, .events = events};
    int ready;

    for (;;) {
        ready = poll(&entry, 1, remaining_ms(deadline));
        if (ready > 0)
            return 0;
        if (ready == 0)
            return -ETIMEDOUT;
        if (errno != EINTR)
            return -errno;
    }
}

static void describe_connect_error(const char *path, int error, char *problem, size_t size)
{
    const char *hint = "";

    switch (error) {
    case ENOENT:
        hint = " (is vfio-userd running? -s names another admin socket)";
        break;
    case ECONNREFUSED:
        hint = " (nothing is listening: vfio-userd is not running)";
        break;
    case EACCES:
    case EPERM:
        hint = " (run as root, or as a member of the admin socket's group)";
        break;
    case ETIMEDOUT:
        hint = " (the daemon is not accepting connections)";
        break;
    default:
        break;
    }
    snprintf(problem, size, "cannot connect to %s: %s%s", path, strerror(error), hint);
}

static int connect_before(int fd, const struct sockaddr_un *address, int64_t deadline)
{
    int error = 0;
    socklen_t length = sizeof(error);
    int ret;

    for (;;) {
        if (connect(fd, (const struct sockaddr *)address, sizeof(*address)) == 0)
            return 0;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN) {
            /* The daemon's listen backlog is full; it may drain. */
            if (remaining_ms(deadline) == 0)
                return -ETIMEDOUT;
            nanosleep(&(struct timespec){.tv_nsec = RPC_CLIENT_RETRY_MS * 1000000L}, NULL);
            continue;
        }
        if (errno != EINPROGRESS)
            return -errno;
        ret = wait_for(fd, POLLOUT, deadline);
        if (ret < 0)
            return ret;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length) < 0)
            return -errno;
        return -error;
    }
}

int rpc_client_connect(const char *path, int timeout_ms, struct rpc_client **result, char *problem,
                       size_t problem_size)
{
    struct sockaddr_un address = {.sun_family = AF_UNIX};
    struct rpc_client *client = NULL;
    int64_t deadline = now_ms() + timeout_ms;
    int ret;

    *result = NULL;
    if (strlen(path) >= sizeof(address.sun_path)) {
        snprintf(problem, problem_size, "admin socket path too long (%zu bytes, at most %zu): %s",
                 strlen(path), sizeof(address.sun_path) - 1, path);
        ret = -ENAMETOOLONG;
        goto out;
    }
    memcpy(address.sun_path, path, strlen(path) + 1);
    client = calloc(1, sizeof(*client));
    if (client == NULL || (client->path = strdup(path)) == NULL) {
        snprintf(problem, problem_size, "out of memory");
        ret = -ENOMEM;
        goto out;
    }
    client->timeout_ms = timeout_ms;
    client->next_id = 1;
    client->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (client->fd < 0) {
        ret = -errno;
        snprintf(problem, problem_size, "cannot create a socket: %s", strerror(-ret));
        goto out;
    }
    ret = connect_before(client->fd, &address, deadline);
    if (ret < 0) {
        describe_connect_error(path, -ret, problem, problem_size);
        goto out;
    }
    *result = client;
    client = NULL;
out:
    rpc_client_close(client);
    return ret;
}

void rpc_client_close(struct rpc_client *client)
{
    if (client == NULL)
        return;
    if (client->fd >= 0)
        close(client->fd);
    free(client->path);
    free(client->buffer);
    free(client);
}

static int send_all(struct rpc_client *client, const char *data, size_t length, int64_t deadline)
{
    while (length > 0) {
        ssize_t sent = send(client->fd, data, length, MSG_NOSIGNAL);
        int ret;

        if (sent < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN)
                return -errno;
            ret = wait_for(client->fd, POLLOUT, deadline);
            if (ret < 0)
                return ret;
            continue;
        }
        data += sent;
        length -= (size_t)sent;
    }
    return 0;
}

/* Makes room for at least one more byte, up to RPC_CLIENT_MAX_REPLY + 1. */
static int grow_buffer(struct rpc_client *client)
{
    size_t capacity = client->capacity ? client->capacity * 2 : RPC_CLIENT_INITIAL_BUFFER;
    char *grown;

    if (client->length < client->capacity)
        return 0;
    if (client->capacity > RPC_CLIENT_MAX_REPLY)
        return -EMSGSIZE;
    if (capacity > RPC_CLIENT_MAX_REPLY + 1)
        capacity = RPC_CLIENT_MAX_REPLY + 1;
    grown = realloc(client->buffer, capacity);
    if (grown == NULL)
        return -ENOMEM;
    client->buffer = grown;
    client->capacity = capacity;
    return 0;
}

/* Receives until a newline; *line_length counts the bytes before it. */
static int receive_line(struct rpc_client *client, int64_t deadline, size_t *line_length)
{
    size_t scanned = 0;

    for (;;) {
        char *newline = NULL;
        ssize_t received;
        int ret;

        if (client->length > scanned)
            newline = memchr(client->buffer + scanned, '\n', client->length - scanned);
        if (newline != NULL) {
            *line_length = (size_t)(newline - client->buffer);
            return 0;
        }
        scanned = client->length;
        if (client->length > RPC_CLIENT_MAX_REPLY)
            return -EMSGSIZE;
        ret = grow_buffer(client);
        if (ret < 0)
            return ret;
        received =
            recv(client->fd, client->buffer + client->length, client->capacity - client->length, 0);
        if (received == 0)
            return -ECONNRESET;
        if (received < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN)
                return -errno;
            ret = wait_for(client->fd, POLLIN, deadline);
            if (ret < 0)
                return ret;
            continue;
        }
        client->length += (size_t)received;
    }
}

static void consume(struct rpc_client *client, size_t length)
{
    memmove(client->buffer, client->buffer + length, client->length - length);
    client->length -= length;
}

/* Checks that `reply` answers request `id`; takes its result or error. */
static int take_response(json_t *reply, json_int_t id, json_t **result, json_t **error,
                         char *problem, size_t problem_size)
{
    json_t *version = json_object_get(reply, "jsonrpc");
    json_t *reply_id = json_object_get(reply, "id");
    json_t *result_value = json_object_get(reply, "result");
    json_t *error_value = json_object_get(reply, "error");

    if (!json_is_object(reply) || !json_is_string(version) ||
        strcmp(json_string_value(version), "2.0") != 0 ||
        (result_value == NULL) == (error_value == NULL)) {
        snprintf(problem, problem_size, "the daemon's reply is not a JSON-RPC 2.0 response");
        return -EPROTO;
    }
    /* Requests go one at a time, so an error the daemon could not tie to an id is ours. */
    if (!(json_is_integer(reply_id) && json_integer_value(reply_id) == id) &&
        !(json_is_null(reply_id) && error_value != NULL)) {
        snprintf(problem, problem_size, "the daemon answered another request than the one sent");
        return -EPROTO;
    }
    if (error_value != NULL) {
        if (!json_is_object(error_value) ||
            !json_is_integer(json_object_get(error_value, "code")) ||
            !json_is_string(json_object_get(error_value, "message"))) {
            snprintf(problem, problem_size, "the daemon's error reply has no code and message");
            return -EPROTO;
        }
        *error = json_incref(error_value);
        return 0;
    }
    *result = json_incref(result_value);
    return 0;
}

int rpc_client_call(struct rpc_client *client, const char *method, json_t *params, json_t **result,
                    json_t **error, char *problem, size_t problem_size)
{
    int64_t deadline = now_ms() + client->timeout_ms;
    json_int_t id = client->next_id++;
    json_t *request = NULL, *reply = NULL;
    json_error_t parse_error;
    char *text = NULL, *line = NULL;
    size_t request_length, line_length = 0;
    int ret;

    *result = NULL;
    *error = NULL;
    request = json_pack("{s:s, s:I, s:s}", "jsonrpc", "2.0", "id", id, "method", method);
    if (request == NULL || (params != NULL && json_object_set(request, "params", params) < 0) ||
        (text = json_dumps(request, JSON_COMPACT)) == NULL ||
        (line = malloc(strlen(text) + 2)) == NULL) {
        snprintf(problem, problem_size, "out of memory");
        ret = -ENOMEM;
        goto out;
    }
    /* One write: the newline is for people watching the socket, not for the daemon. */
    request_length = (size_t)sprintf(line, "%s\n", text);
    ret = send_all(client, line, request_length, deadline);
    if (ret == 0)
        ret = receive_line(client, deadline, &line_length);
    if (ret < 0) {
        if (ret == -ETIMEDOUT)
            snprintf(problem, problem_size, "no answer from %s within %d ms (see --timeout)",
                     client->path, client->timeout_ms);
        else if (ret == -ECONNRESET || ret == -EPIPE)
            snprintf(problem, problem_size, "%s closed the connection without answering",
                     client->path);
        else if (ret == -EMSGSIZE)
            snprintf(problem, problem_size, "the daemon's reply is larger than %u bytes",
                     RPC_CLIENT_MAX_REPLY);
        else
            snprintf(problem, problem_size, "talking to %s: %s", client->path, strerror(-ret));
        goto out;
    }
    reply = json_loadb(client->buffer, line_length, JSON_REJECT_DUPLICATES, &parse_error);
    consume(client, line_length + 1);
    if (reply == NULL) {
        snprintf(problem, problem_size, "the daemon's reply is not JSON: %s", parse_error.text);
        ret = -EPROTO;
        goto out;
    }
    ret = take_response(reply, id, result, error, problem, problem_size);
out:
    json_decref(reply);
    json_decref(request);
    free(line);
    free(text);
    return ret;
}
