/*
 * Admin socket transport: accept, reassemble JSON values from the byte stream (framed by
 * json_stream.c), hand them to admin_methods.c, queue the replies; see admin_server.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "admin_methods.h"
#include "admin_server.h"
#include "daemon.h"
#include "endpoint.h"
#include "json_stream.h"
#include "log.h"

/* Output beyond this stops reading the client's requests until it drains. */
#define OUTPUT_PAUSE_THRESHOLD (1024 * 1024)

struct admin_connection {
    struct admin_server *server;
    struct admin_connection *next;
    int fd;
    sd_event_source *io_source;
    sd_event_source *idle_timer;
    struct admin_peer peer;
    char *input;
    size_t input_length;
    /* Where framing stopped in `input`, so a trickled request is not rescanned per recv(). */
    struct json_stream_scanner scanner;
    char *output;
    size_t output_head, output_length, output_capacity;
    bool closing; /* close once the output is flushed */
};

struct admin_server {
    struct daemon *daemon;
    int listen_fd;
    bool created; /* by us, so ours to unlink */
    char *path;
    sd_event_source *listen_source;
    struct admin_connection *connections;
    size_t connection_count;
};

static void connection_close(struct admin_connection *connection)
{
    struct admin_server *server = connection->server;
    struct admin_connection **link = &server->connections;

    while (*link != connection)
        link = &(*link)->next;
    *link = connection->next;
    server->connection_count--;
    sd_event_source_disable_unref(connection->io_source);
    sd_event_source_disable_unref(connection->idle_timer);
    close(connection->fd);
    free(connection->input);
    free(connection->output);
    free(connection);
}

static int queue_output(struct admin_connection *connection, const char *text, size_t length)
{
    size_t needed = connection->output_length + length;

    if (needed > ADMIN_MAX_OUTPUT)
        return -ENOBUFS;
    if (connection->output_head > 0 && connection->output_head == connection->output_length)
        connection->output_head = connection->output_length = 0;
    needed = connection->output_length + length;
    if (needed > connection->output_capacity) {
        size_t capacity = connection->output_capacity ? connection->output_capacity : 4096;
        char *grown;
        while (capacity < needed)
            capacity *= 2;
        grown = realloc(connection->output, capacity);
        if (grown == NULL)
            return -ENOMEM;
        connection->output = grown;
        connection->output_capacity = capacity;
    }
    memcpy(connection->output + connection->output_length, text, length);
    connection->output_length += length;
    return 0;
}

static int queue_reply(struct admin_connection *connection, json_t *reply)
{
    char *text;
    int ret;

    if (reply == NULL)
        return 0;
    text = json_dumps(reply, JSON_COMPACT);
    json_decref(reply);
    if (text == NULL)
        return -ENOMEM;
    ret = queue_output(connection, text, strlen(text));
    if (ret == 0)
        ret = queue_output(connection, "\n", 1);
    free(text);
    return ret;
}

static void process_requests(struct admin_connection *connection)
{
    size_t consumed = 0;

    while (!connection->closing &&
           connection->output_length - connection->output_head < OUTPUT_PAUSE_THRESHOLD) {
        size_t end =
            json_stream_next(&connection->scanner, connection->input, connection->input_length);
        json_error_t error;
        json_t *message;

        if (end == 0)
            break;
        message = json_loadb(connection->input + consumed, end - consumed,
                             JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &error);
        consumed = end;
        if (message == NULL) {
            char text[256];
            snprintf(text, sizeof(text), "parse error: %s", error.text);
            /* The stream cannot be trusted past malformed JSON: answer, then close. */
            queue_reply(connection, admin_error_response(NULL, ADMIN_PARSE_ERROR, text, NULL));
            connection->closing = true;
            break;
        }
        if (queue_reply(connection,
                        admin_handle(connection->server->daemon, &connection->peer, message)) < 0)
            connection->closing = true;
        json_decref(message);
        sd_event_source_set_time_relative(connection->idle_timer,
                                          (uint64_t)ADMIN_IDLE_SECONDS * 1000000);
    }
    /* Only after a whole request: moving a trickled partial one per recv() is quadratic. */
    if (consumed > 0) {
        memmove(connection->input, connection->input + consumed,
                connection->input_length - consumed);
        connection->input_length -= consumed;
        json_stream_consumed(&connection->scanner, consumed);
    }
    if (connection->input_length >= ADMIN_MAX_REQUEST && !connection->closing) {
        queue_reply(connection, admin_error_response(NULL, ADMIN_INVALID_REQUEST,
                                                     "request larger than 1 MiB; closing", NULL));
        connection->closing = true;
    }
}

/* Sends what the socket takes. <0: drop the connection. */
static int flush_output(struct admin_connection *connection)
{
    while (connection->output_head < connection->output_length) {
        ssize_t sent =
            send(connection->fd, connection->output + connection->output_head,
                 connection->output_length - connection->output_head, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (sent < 0) {
            if (errno == EINTR)
                continue;
            return errno == EAGAIN ? 0 : -errno;
        }
        connection->output_head += (size_t)sent;
    }
    connection->output_head = connection->output_length = 0;
    return 0;
}

static int on_connection_event(sd_event_source *source, int fd, uint32_t revents, void *userdata)
{
    struct admin_connection *connection = userdata;
    uint32_t events = 0;
    bool pending;

    if ((revents & EPOLLIN) && !connection->closing) {
        ssize_t received = recv(fd, connection->input + connection->input_length,
                                ADMIN_MAX_REQUEST - connection->input_length, MSG_DONTWAIT);
        if (received == 0 || (received < 0 && errno != EAGAIN && errno != EINTR)) {
            connection_close(connection);
            return 0;
        }
        if (received > 0) {
            connection->input_length += (size_t)received;
            process_requests(connection);
        }
    } else if (revents & (EPOLLHUP | EPOLLERR)) {
        connection_close(connection);
        return 0;
    }
    if (flush_output(connection) < 0) {
        connection_close(connection);
        return 0;
    }
    pending = connection->output_length > connection->output_head;
    if (connection->closing && !pending) {
        connection_close(connection);
        return 0;
    }
    /* Input already buffered may hold more requests now that output drained. */
    if (!pending && connection->input_length > 0 && !connection->closing) {
        process_requests(connection);
        if (flush_output(connection) < 0) {
            connection_close(connection);
            return 0;
        }
        pending = connection->output_length > connection->output_head;
    }
    if (!connection->closing &&
        connection->output_length - connection->output_head < OUTPUT_PAUSE_THRESHOLD)
        events |= EPOLLIN;
    if (pending)
        events |= EPOLLOUT;
    sd_event_source_set_io_events(connection->io_source, events);
    return 0;
}

static int on_idle(sd_event_source *source, uint64_t usec, void *userdata)
{
    struct admin_connection *connection = userdata;

    vu_log(VFIO_USERD_LOG_INFO, NULL, "admin client pid %d idle for %d s; closing",
           (int)connection->peer.credentials.pid, ADMIN_IDLE_SECONDS);
    connection_close(connection);
    return 0;
}

static int on_accept(sd_event_source *source, int fd, uint32_t revents, void *userdata)
{
    struct admin_server *server = userdata;
    struct admin_connection *connection;
    socklen_t length = sizeof(struct ucred);
    int client = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

    if (client < 0)
        return 0;
    if (server->connection_count >= ADMIN_MAX_CONNECTIONS) {
        vu_log(VFIO_USERD_LOG_WARNING, NULL, "admin socket: %d connections open; refusing one",
               ADMIN_MAX_CONNECTIONS);
        close(client);
        return 0;
    }
    connection = calloc(1, sizeof(*connection));
    if (connection == NULL || (connection->input = malloc(ADMIN_MAX_REQUEST)) == NULL) {
        free(connection);
        close(client);
        return 0;
    }
    connection->server = server;
    connection->fd = client;
    json_stream_init(&connection->scanner);
    getsockopt(client, SOL_SOCKET, SO_PEERCRED, &connection->peer.credentials, &length);
    if (sd_event_add_io(server->daemon->event, &connection->io_source, client, EPOLLIN,
                        on_connection_event, connection) < 0 ||
        sd_event_add_time_relative(server->daemon->event, &connection->idle_timer, CLOCK_MONOTONIC,
                                   (uint64_t)ADMIN_IDLE_SECONDS * 1000000, 0, on_idle,
                                   connection) < 0) {
        sd_event_source_disable_unref(connection->io_source);
        free(connection->input);
        free(connection);
        close(client);
        return 0;
    }
    connection->next = server->connections;
    server->connections = connection;
    server->connection_count++;
    return 0;
}

/* The socket systemd passed for us, or -1. Descriptors that are not ours are closed. */
static int activated_socket(void)
{
    char **names = NULL;
    int count = sd_listen_fds_with_names(true, &names);
    int found = -1;

    for (int i = 0; i < count; i++) {
        int fd = SD_LISTEN_FDS_START + i;
        bool wanted =
            strcmp(names[i], "admin") == 0 || (count == 1 && strcmp(names[i], "unknown") == 0);
        if (found < 0 && wanted && sd_is_socket_unix(fd, SOCK_STREAM, 1, NULL, 0) > 0)
            found = fd;
        else
            close(fd);
        free(names[i]);
    }
    free(names);
    return found;
}

static int create_socket(struct admin_server *server, const struct config_daemon *settings)
{
    char path[CONFIG_SOCKET_PATH_MAX];
    int ret;

    ret = config_daemon_admin_socket(settings, path, sizeof(path));
    if (ret < 0)
        return ret;
    server->path = strdup(path);
    if (server->path == NULL)
        return -ENOMEM;
    ret = vu_socket_listen(path, &server->listen_fd);
    if (ret < 0) {
        vu_log(VFIO_USERD_LOG_ERR, NULL, "admin socket %s: %s", path,
               ret == -EADDRINUSE ? "another daemon is listening on it" : strerror(-ret));
        return ret;
    }
    server->created = true;
    if (settings->admin_socket_group != NULL) {
        struct group entry, *found = NULL;
        char buffer[4096];
        if (getgrnam_r(settings->admin_socket_group, &entry, buffer, sizeof(buffer), &found) != 0 ||
            found == NULL) {
            vu_log(VFIO_USERD_LOG_ERR, NULL, "admin socket: no group '%s'",
                   settings->admin_socket_group);
            return -ENOENT;
        }
        if (chown(path, (uid_t)-1, found->gr_gid) < 0)
            return -errno;
    }
    if (chmod(path, settings->admin_socket_mode) < 0)
        return -errno;
    return 0;
}

int admin_server_start(struct daemon *daemon, struct admin_server **result)
{
    struct admin_server *server = calloc(1, sizeof(*server));
    int ret;

    if (server == NULL)
        return -ENOMEM;
    server->daemon = daemon;
    server->listen_fd = activated_socket();
    if (server->listen_fd >= 0) {
        int flags = fcntl(server->listen_fd, F_GETFL);
        if (flags >= 0)
            fcntl(server->listen_fd, F_SETFL, flags | O_NONBLOCK);
        vu_log(VFIO_USERD_LOG_DEBUG, NULL, "admin socket passed by systemd");
    } else {
        ret = create_socket(server, daemon->settings);
        if (ret < 0)
            goto fail;
    }
    ret = sd_event_add_io(daemon->event, &server->listen_source, server->listen_fd, EPOLLIN,
                          on_accept, server);
    if (ret < 0)
        goto fail;
    *result = server;
    return 0;
fail:
    admin_server_stop(server);
    return ret;
}

void admin_server_stop(struct admin_server *server)
{
    if (server == NULL)
        return;
    while (server->connections != NULL)
        connection_close(server->connections);
    sd_event_source_disable_unref(server->listen_source);
    if (server->listen_fd >= 0)
        close(server->listen_fd);
    if (server->created)
        unlink(server->path);
    free(server->path);
    free(server);
}

size_t admin_server_connection_count(const struct admin_server *server)
{
    return server != NULL ? server->connection_count : 0;
}
