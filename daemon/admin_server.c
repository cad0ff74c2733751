/*
 * Admin socket transport: accept, reassemble JSON values from the byte stream (framed and
 * checked by json_stream.c), hand them to admin_methods.c, queue the replies; see
 * admin_server.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
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
#include "devices.h"
#include "endpoint.h"
#include "json_stream.h"
#include "log.h"

#define STRINGIFY_(x) #x
#define STRINGIFY(x)  STRINGIFY_(x)

/* Output beyond this stops reading the client's requests until it drains. */
#define OUTPUT_PAUSE_THRESHOLD (1024 * 1024)
/* Buffers are allocated as they fill, from this size, and given back once empty. */
#define BUFFER_START_SIZE 4096
#define BUFFER_KEEP_SIZE  (64 * 1024)
/* Giving back a buffer this large is followed by malloc_trim(), so RSS comes down too. */
#define BUFFER_TRIM_SIZE (1024 * 1024)
/* Log lines a client can cause: at most this many per window, then one summary. */
#define LOG_BURST          5
#define LOG_WINDOW_SECONDS 10

/* Rate limit for one kind of log line (systemd's log_ratelimit, kernel printk_ratelimit). */
struct log_limit {
    uint64_t window_start; /* usec, CLOCK_MONOTONIC */
    unsigned printed, suppressed;
};

/* A batch being carried out, a few requests per turn of the event loop. */
struct batch_progress {
    json_t *requests; /* NULL when no batch is in progress */
    size_t next;
    size_t reply_bytes; /* of replies queued so far, against ADMIN_MAX_BATCH_REPLY */
    bool opened;        /* "[" is queued */
};

/*
 * A reply that waits for its turn: the requests of one turn are carried out in order, but a
 * device_add is only started (admin_start) and finished at the end of the turn, so that the
 * adds a client pipelines go to the workers together; the replies behind it wait with it.
 */
struct reply_slot {
    json_t *reply;                 /* a reply made already, or NULL */
    struct admin_started *started; /* or a request to finish */
};

struct admin_connection {
    struct admin_server *server;
    struct admin_connection *next;
    int fd;
    sd_event_source *io_source;
    sd_event_source *timer; /* the first-request deadline, then the idle timeout */
    struct admin_peer peer;
    char *input;
    size_t input_length, input_capacity;
    /* Where framing stopped in `input`, so a trickled request is not rescanned per recv(). */
    struct json_stream_scanner scanner;
    struct batch_progress batch;
    /* This turn's replies, in request order, once a request was started. */
    struct reply_slot slots[ADMIN_REQUESTS_PER_TURN];
    size_t slot_count, started_count;
    char *output;
    size_t output_head, output_length, output_capacity;
    bool answered_once; /* a complete request arrived: the idle timeout applies */
    bool peer_done;     /* the client shut down its sending side; no more input */
    bool more_work;     /* requests are waiting for the next turn */
    bool closing;       /* close once the output is flushed */
};

struct admin_server {
    struct daemon *daemon;
    int listen_fd;
    bool created; /* by us, so ours to unlink */
    char *path;
    sd_event_source *listen_source;
    sd_event_source *accept_pause; /* made up front: backing off must not need a descriptor */
    struct admin_connection *connections;
    size_t connection_count;
    struct log_limit refused_log, dropped_log, limit_log;
};

/* Whether a line may be logged now; logs how many were held back when a window reopens. */
static bool log_allowed(struct admin_server *server, struct log_limit *limit, const char *what)
{
    uint64_t now = 0;

    sd_event_now(server->daemon->event, CLOCK_MONOTONIC, &now);
    if (now - limit->window_start >= (uint64_t)LOG_WINDOW_SECONDS * 1000000) {
        if (limit->suppressed > 0)
            vu_log(VFIO_USERD_LOG_WARNING, NULL, "admin socket: %u more %s in the last %d s",
                   limit->suppressed, what, LOG_WINDOW_SECONDS);
        limit->window_start = now;
        limit->printed = limit->suppressed = 0;
    }
    if (limit->printed < LOG_BURST) {
        limit->printed++;
        return true;
    }
    limit->suppressed++;
    return false;
}

static void connection_close(struct admin_connection *connection)
{
    struct admin_server *server = connection->server;
    struct admin_connection **link = &server->connections;
    bool trim = connection->output_capacity >= BUFFER_TRIM_SIZE ||
                connection->input_capacity >= BUFFER_TRIM_SIZE;

    /* None are left between turns; should one be, its device is not left half started. */
    for (size_t i = 0; i < connection->slot_count; i++) {
        struct reply_slot *slot = &connection->slots[i];
        json_decref(slot->started != NULL ? admin_finish(server->daemon, slot->started)
                                          : slot->reply);
    }

    while (*link != connection)
        link = &(*link)->next;
    *link = connection->next;
    server->connection_count--;
    sd_event_source_disable_unref(connection->io_source);
    sd_event_source_disable_unref(connection->timer);
    close(connection->fd);
    json_decref(connection->batch.requests);
    free(connection->input);
    free(connection->output);
    free(connection);
    if (trim)
        malloc_trim(0);
}

/* Closes a connection whose replies cannot all be delivered, and says so in the log. */
static void connection_drop(struct admin_connection *connection, const char *why)
{
    struct admin_server *server = connection->server;

    if (log_allowed(server, &server->dropped_log, "admin connections dropped"))
        vu_log(VFIO_USERD_LOG_WARNING, NULL,
               "admin client pid %d uid %u: %s; %zu bytes of replies undelivered; closing",
               (int)connection->peer.credentials.pid, (unsigned)connection->peer.credentials.uid,
               why, connection->output_length - connection->output_head);
    connection_close(connection);
}

static size_t output_pending(const struct admin_connection *connection)
{
    return connection->output_length - connection->output_head;
}

static int queue_output(struct admin_connection *connection, const char *text, size_t length)
{
    size_t needed;

    if (output_pending(connection) + length > ADMIN_MAX_OUTPUT)
        return -ENOBUFS;
    if (connection->output_head > 0) {
        memmove(connection->output, connection->output + connection->output_head,
                output_pending(connection));
        connection->output_length -= connection->output_head;
        connection->output_head = 0;
    }
    needed = connection->output_length + length;
    if (needed > connection->output_capacity) {
        size_t capacity =
            connection->output_capacity ? connection->output_capacity : BUFFER_START_SIZE;
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

/* Queues `reply` (taking it) as text; adds its size to *bytes when not NULL. */
static int queue_json(struct admin_connection *connection, json_t *reply, size_t *bytes)
{
    char *text;
    size_t length;
    int ret;

    text = json_dumps(reply, JSON_COMPACT);
    json_decref(reply);
    if (text == NULL)
        return -ENOMEM;
    length = strlen(text);
    ret = queue_output(connection, text, length);
    free(text);
    if (bytes != NULL)
        *bytes += length;
    return ret;
}

/* Queues one reply line; NULL (a notification) queues nothing. */
static int queue_reply(struct admin_connection *connection, json_t *reply)
{
    int ret;

    if (reply == NULL)
        return 0;
    ret = queue_json(connection, reply, NULL);
    return ret < 0 ? ret : queue_output(connection, "\n", 1);
}

/*
 * Finishes the requests started this turn and queues every reply held behind them, in
 * order. All are finished even when a reply cannot be queued (the connection is dropped
 * then): a started device must not be left half way.
 */
static int finish_started(struct admin_connection *connection)
{
    struct daemon *daemon = connection->server->daemon;
    int ret = 0;

    for (size_t i = 0; i < connection->slot_count; i++) {
        struct reply_slot *slot = &connection->slots[i];
        json_t *reply = slot->started != NULL ? admin_finish(daemon, slot->started) : slot->reply;

        if (ret == 0)
            ret = queue_reply(connection, reply);
        else
            json_decref(reply);
    }
    connection->slot_count = connection->started_count = 0;
    return ret;
}

/* Room for one more slot (a turn holds no more requests than slots: this only keeps it so). */
static int make_room(struct admin_connection *connection)
{
    return connection->slot_count < ADMIN_REQUESTS_PER_TURN ? 0 : finish_started(connection);
}

/* Queues a reply (taking it) behind those still waiting this turn; NULL queues nothing. */
static int queue_in_order(struct admin_connection *connection, json_t *reply)
{
    int ret = make_room(connection);

    if (ret < 0) {
        json_decref(reply);
        return ret;
    }
    if (connection->slot_count == 0)
        return queue_reply(connection, reply);
    if (reply != NULL)
        connection->slots[connection->slot_count++] = (struct reply_slot){.reply = reply};
    return 0;
}

/*
 * Carries out or starts one request of the stream (not of a batch): a device_add joins the
 * others started this turn unless its outcome could depend on theirs (admin_start), and
 * every other request waits for them first.
 */
static int start_request(struct admin_connection *connection, json_t *request)
{
    struct daemon *daemon = connection->server->daemon;
    struct admin_started *started;
    json_t *reply;
    int ret = make_room(connection);

    if (ret < 0)
        return ret;
    if (admin_start(daemon, &connection->peer, request, connection->started_count > 0, &reply,
                    &started) == -EAGAIN) {
        ret = finish_started(connection);
        if (ret < 0)
            return ret;
        /* With none started, nothing is refused with -EAGAIN. */
        admin_start(daemon, &connection->peer, request, false, &reply, &started);
    }
    if (started == NULL)
        return queue_in_order(connection, reply);
    connection->slots[connection->slot_count++] = (struct reply_slot){.started = started};
    connection->started_count++;
    return 0;
}

/*
 * Carries out one request of a batch; returns its response, or NULL for a
 * notification.
 */
static json_t *answer(struct admin_connection *connection, json_t *request)
{
    /* One request: an array here is an element of a batch, never a batch of its own. */
    if (!json_is_object(request))
        return admin_error_response(NULL, ADMIN_INVALID_REQUEST, "a request must be a JSON object",
                                    NULL);
    return admin_handle(connection->server->daemon, &connection->peer, request);
}

/* An error response whose data names the limit that was reached. */
static json_t *limit_error(json_t *id, int code, const char *message, int limit)
{
    json_t *data = json_pack("{s:i}", "limit", limit);
    json_t *reply = admin_error_response(id, code, message, data); /* takes its own reference */

    json_decref(data);
    return reply;
}

/* The response to a batch request left undone because the batch's reply budget is spent. */
static json_t *not_carried_out(json_t *request)
{
    json_t *id = json_object_get(request, "id");
    char message[160];

    if (json_is_object(request) && id == NULL)
        return NULL; /* a notification, dropped with the rest */
    if (id != NULL && !json_is_string(id) && !json_is_integer(id))
        id = NULL;
    snprintf(message, sizeof(message),
             "not carried out: the replies to this batch reached %d KiB; send the remaining "
             "requests again",
             ADMIN_MAX_BATCH_REPLY / 1024);
    return limit_error(id, ADMIN_LIMIT_EXCEEDED, message, ADMIN_MAX_BATCH_REPLY);
}

/* Starts a batch (taking `requests`), or refuses it whole. */
static int start_batch(struct admin_connection *connection, json_t *requests)
{
    struct admin_server *server = connection->server;
    size_t count = json_array_size(requests);
    char message[160];
    json_t *reply;

    if (count > 0 && count <= ADMIN_MAX_BATCH) {
        connection->batch = (struct batch_progress){.requests = requests};
        return 0;
    }
    if (count == 0) {
        reply = admin_error_response(NULL, ADMIN_INVALID_REQUEST, "an empty batch", NULL);
    } else {
        if (log_allowed(server, &server->limit_log, "admin requests refused"))
            vu_log(VFIO_USERD_LOG_NOTICE, NULL,
                   "admin client pid %d uid %u: batch of %zu requests refused (at most %d)",
                   (int)connection->peer.credentials.pid,
                   (unsigned)connection->peer.credentials.uid, count, ADMIN_MAX_BATCH);
        snprintf(message, sizeof(message), "batch too large: %zu requests, at most %d in one batch",
                 count, ADMIN_MAX_BATCH);
        reply = limit_error(NULL, ADMIN_INVALID_REQUEST, message, ADMIN_MAX_BATCH);
    }
    json_decref(requests);
    return queue_reply(connection, reply);
}

/*
 * Carries the batch in progress on by at most *turn requests, queueing each reply as soon
 * as it exists so that no whole reply array is ever built in memory.
 */
static int continue_batch(struct admin_connection *connection, size_t *turn)
{
    struct batch_progress *batch = &connection->batch;
    struct admin_server *server = connection->server;
    size_t count = json_array_size(batch->requests);
    int ret = 0;

    while (ret == 0 && batch->next<count && * turn> 0) {
        json_t *request = json_array_get(batch->requests, batch->next++);
        bool within_budget = batch->reply_bytes < ADMIN_MAX_BATCH_REPLY;
        json_t *reply;

        if (within_budget) {
            reply = answer(connection, request);
            --*turn;
        } else {
            reply = not_carried_out(request);
        }
        if (reply == NULL)
            continue;
        ret = queue_output(connection, batch->opened ? "," : "[", 1);
        batch->opened = true;
        if (ret < 0) {
            json_decref(reply);
            break;
        }
        ret = queue_json(connection, reply, &batch->reply_bytes);
        if (ret == 0 && within_budget && batch->reply_bytes >= ADMIN_MAX_BATCH_REPLY &&
            batch->next < count && log_allowed(server, &server->limit_log, "admin limit notices"))
            vu_log(VFIO_USERD_LOG_NOTICE, NULL,
                   "admin client pid %d uid %u: replies to a batch reached %d KiB; the last %zu "
                   "requests of it are not carried out",
                   (int)connection->peer.credentials.pid,
                   (unsigned)connection->peer.credentials.uid, ADMIN_MAX_BATCH_REPLY / 1024,
                   count - batch->next);
    }
    if (ret == 0 && batch->next == count) {
        /* A batch of notifications only gets nothing back. */
        if (batch->opened)
            ret = queue_output(connection, "]\n", 2);
        json_decref(batch->requests);
        *batch = (struct batch_progress){0};
    }
    return ret;
}

/* Parses and starts one complete JSON text of the stream; <0: drop the connection. */
static int handle_text(struct admin_connection *connection, size_t start, size_t end, size_t *turn)
{
    json_error_t error;
    json_t *message = json_loadb(connection->input + start, end - start,
                                 JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &error);
    char text[256];
    int ret;

    if (message == NULL) {
        snprintf(text, sizeof(text), "parse error: %s", error.text);
        /* The stream cannot be trusted past malformed JSON: answer, then close. */
        connection->closing = true;
        return queue_in_order(connection,
                              admin_error_response(NULL, ADMIN_PARSE_ERROR, text, NULL));
    }
    connection->answered_once = true;
    sd_event_source_set_time_relative(connection->timer, (uint64_t)ADMIN_IDLE_SECONDS * 1000000);
    --*turn;
    if (json_is_array(message)) {
        /* A batch is carried out one request at a time, after what came before it. */
        ret = finish_started(connection);
        if (ret < 0) {
            json_decref(message);
            return ret;
        }
        return start_batch(connection, message);
    }
    ret = start_request(connection, message);
    json_decref(message);
    return ret;
}

/*
 * Carries out what the buffered input asks, at most ADMIN_REQUESTS_PER_TURN requests, and
 * not while a megabyte of output waits for the client. Sets `more_work` when it stopped
 * with requests left; <0: drop the connection.
 */
static int process_requests(struct admin_connection *connection)
{
    struct json_stream_scanner *scanner = &connection->scanner;
    size_t consumed = 0, turn = ADMIN_REQUESTS_PER_TURN;
    int ret = 0;

    connection->more_work = false;
    while (ret == 0 && !connection->closing) {
        size_t end;

        if (turn == 0 || output_pending(connection) >= OUTPUT_PAUSE_THRESHOLD) {
            /* Requests may be left either way: come back once the output drains. */
            connection->more_work = true;
            break;
        }
        if (connection->batch.requests != NULL) {
            ret = continue_batch(connection, &turn);
            continue;
        }
        end = json_stream_next(scanner, connection->input, connection->input_length);
        if (end == 0 && connection->peer_done)
            end = json_stream_end(scanner, connection->input_length);
        if (scanner->error != NULL && (end == 0 || scanner->error_offset < end)) {
            char text[256];
            snprintf(text, sizeof(text), "parse error: %s at byte %zu of the request; closing",
                     scanner->error, scanner->error_offset - consumed);
            connection->closing = true;
            ret = queue_in_order(connection,
                                 admin_error_response(NULL, ADMIN_PARSE_ERROR, text, NULL));
            break;
        }
        if (end == 0) {
            /* After the client's end of stream, nothing more will come. */
            connection->closing = connection->peer_done;
            break;
        }
        ret = handle_text(connection, consumed, end, &turn);
        consumed = end;
    }
    /* Whatever stopped the turn, what it started is finished within it. */
    if (connection->slot_count > 0) {
        int finished = finish_started(connection);
        if (ret == 0)
            ret = finished;
    }
    /* Only after a whole request: moving a trickled partial one per recv() is quadratic. */
    if (consumed > 0) {
        memmove(connection->input, connection->input + consumed,
                connection->input_length - consumed);
        connection->input_length -= consumed;
        json_stream_consumed(scanner, consumed);
    }
    if (connection->input_length == 0 && connection->input_capacity > BUFFER_KEEP_SIZE) {
        free(connection->input);
        connection->input = NULL;
        connection->input_capacity = 0;
    }
    if (ret == 0 && connection->input_length >= ADMIN_MAX_REQUEST && !connection->closing) {
        connection->closing = true;
        ret = queue_reply(connection,
                          admin_error_response(NULL, ADMIN_INVALID_REQUEST,
                                               "request larger than 1 MiB; closing", NULL));
    }
    return ret;
}

/* Sends what the socket takes. <0: the client is gone. */
static int flush_output(struct admin_connection *connection)
{
    while (connection->output_head < connection->output_length) {
        ssize_t sent = send(connection->fd, connection->output + connection->output_head,
                            output_pending(connection), MSG_NOSIGNAL | MSG_DONTWAIT);
        if (sent < 0) {
            if (errno == EINTR)
                continue;
            return errno == EAGAIN ? 0 : -errno;
        }
        connection->output_head += (size_t)sent;
    }
    connection->output_head = connection->output_length = 0;
    /* A large reply's buffer goes back once it is written, not when the client leaves. */
    if (connection->output_capacity > BUFFER_KEEP_SIZE) {
        bool trim = connection->output_capacity >= BUFFER_TRIM_SIZE;
        free(connection->output);
        connection->output = NULL;
        connection->output_capacity = 0;
        if (trim)
            malloc_trim(0);
    }
    return 0;
}

/* Room for the next recv(): the input buffer grows as a request does, up to its limit. */
static int grow_input(struct admin_connection *connection)
{
    size_t capacity =
        connection->input_capacity ? connection->input_capacity * 2 : BUFFER_START_SIZE;
    char *grown;

    if (connection->input_length < connection->input_capacity)
        return 0;
    if (capacity > ADMIN_MAX_REQUEST)
        capacity = ADMIN_MAX_REQUEST;
    grown = realloc(connection->input, capacity);
    if (grown == NULL)
        return -ENOMEM;
    connection->input = grown;
    connection->input_capacity = capacity;
    return 0;
}

static int on_connection_event(sd_event_source *source, int fd, uint32_t revents, void *userdata)
{
    struct admin_connection *connection = userdata;
    uint32_t events = 0;
    int ret = 0;

    if ((revents & EPOLLIN) && !connection->closing && !connection->peer_done) {
        ssize_t received = -1;
        if (grow_input(connection) < 0) {
            connection_drop(connection, "out of memory");
            return 0;
        }
        received = recv(fd, connection->input + connection->input_length,
                        connection->input_capacity - connection->input_length, MSG_DONTWAIT);
        if (received < 0 && errno != EAGAIN && errno != EINTR) {
            connection_close(connection); /* reset by the client: nothing to tell it */
            return 0;
        }
        /* End of stream: the client may still read; its requests are answered first. */
        if (received == 0)
            connection->peer_done = true;
        if (received > 0)
            connection->input_length += (size_t)received;
    } else if ((revents & EPOLLERR) || ((revents & EPOLLHUP) && output_pending(connection) == 0)) {
        connection_close(connection);
        return 0;
    }
    /* Requests, flush, and again while the output drains at once and work is left. */
    for (int round = 0; round < 2; round++) {
        if (round == 0 || (output_pending(connection) == 0 && !connection->closing))
            ret = process_requests(connection);
        if (ret < 0) {
            connection_drop(connection,
                            ret == -ENOBUFS ? "64 MiB of replies left unread" : "out of memory");
            return 0;
        }
        ret = flush_output(connection);
        if (ret < 0) {
            if (ret != -EPIPE && ret != -ECONNRESET)
                connection_drop(connection, strerror(-ret));
            else
                connection_close(connection);
            return 0;
        }
        if (output_pending(connection) > 0 || !connection->more_work)
            break;
    }
    if (connection->closing && output_pending(connection) == 0) {
        connection_close(connection);
        return 0;
    }
    /* No more input while what came is still being carried out: it would only pile up. */
    if (!connection->closing && !connection->peer_done && !connection->more_work &&
        output_pending(connection) < OUTPUT_PAUSE_THRESHOLD)
        events |= EPOLLIN;
    /* Writable at once when nothing waits: the next turn comes after other clients'. */
    if (output_pending(connection) > 0 || connection->more_work)
        events |= EPOLLOUT;
    sd_event_source_set_io_events(connection->io_source, events);
    return 0;
}

static int on_timer(sd_event_source *source, uint64_t usec, void *userdata)
{
    struct admin_connection *connection = userdata;
    struct admin_server *server = connection->server;

    if (log_allowed(server, &server->dropped_log, "admin connections timed out"))
        vu_log(VFIO_USERD_LOG_INFO, NULL, "admin client pid %d uid %u %s; closing",
               (int)connection->peer.credentials.pid, (unsigned)connection->peer.credentials.uid,
               connection->answered_once ? "idle for " STRINGIFY(ADMIN_IDLE_SECONDS) " s"
                                         : "sent no complete request within " STRINGIFY(
                                               ADMIN_FIRST_REQUEST_SECONDS) " s");
    connection_close(connection);
    return 0;
}

/* Why a new connection from `uid` must be refused, or NULL. */
static const char *refusal(const struct admin_server *server, uid_t uid, bool privileged)
{
    size_t same_user = 0;

    if (server->connection_count >= ADMIN_MAX_CONNECTIONS)
        return "too many admin connections (" STRINGIFY(ADMIN_MAX_CONNECTIONS) ") are open";
    if (privileged)
        return NULL;
    if (server->connection_count >= ADMIN_MAX_CONNECTIONS - ADMIN_RESERVED_CONNECTIONS)
        return "the remaining admin connections are kept for root";
    for (const struct admin_connection *c = server->connections; c != NULL; c = c->next)
        same_user += c->peer.credentials.uid == uid;
    if (same_user >= ADMIN_MAX_CONNECTIONS_PER_UID)
        return "this user has " STRINGIFY(ADMIN_MAX_CONNECTIONS_PER_UID) " admin connections open";
    return NULL;
}

/* Tells a refused client why, if its socket takes the line at once, and closes it. */
static void refuse(struct admin_server *server, int client, const struct ucred *peer,
                   const char *why)
{
    json_t *reply = admin_error_response(NULL, ADMIN_LIMIT_EXCEEDED, why, NULL);
    char *text = reply != NULL ? json_dumps(reply, JSON_COMPACT) : NULL;

    if (text != NULL) {
        size_t length = strlen(text);
        text[length] = '\n'; /* json_dumps' NUL becomes the line's end */
        (void)!send(client, text, length + 1, MSG_NOSIGNAL | MSG_DONTWAIT);
    }
    free(text);
    json_decref(reply);
    close(client);
    if (log_allowed(server, &server->refused_log, "admin connections refused"))
        vu_log(VFIO_USERD_LOG_WARNING, NULL, "admin socket: refused pid %d uid %u: %s",
               (int)peer->pid, (unsigned)peer->uid, why);
}

static int on_accept_pause_end(sd_event_source *source, uint64_t usec, void *userdata)
{
    struct admin_server *server = userdata;

    sd_event_source_set_enabled(server->listen_source, SD_EVENT_ON);
    return 0;
}

static int on_accept(sd_event_source *source, int fd, uint32_t revents, void *userdata)
{
    struct admin_server *server = userdata;
    struct admin_connection *connection;
    struct ucred peer = {.pid = 0, .uid = (uid_t)-1, .gid = (gid_t)-1};
    socklen_t length = sizeof(peer);
    const char *why;
    bool privileged;
    int client = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

    if (client < 0) {
        /* Out of descriptors or memory the listener stays readable: pause rather than spin. */
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
            if (log_allowed(server, &server->refused_log, "admin connections refused"))
                vu_log(VFIO_USERD_LOG_WARNING, NULL,
                       "admin socket: cannot accept a connection: %s; retrying in a second",
                       strerror(errno));
            sd_event_source_set_enabled(server->listen_source, SD_EVENT_OFF);
            sd_event_source_set_time_relative(server->accept_pause, 1000000);
            sd_event_source_set_enabled(server->accept_pause, SD_EVENT_ONESHOT);
        }
        return 0;
    }
    if (getsockopt(client, SOL_SOCKET, SO_PEERCRED, &peer, &length) < 0)
        peer.uid = (uid_t)-1;
    privileged = peer.uid == 0 || peer.uid == geteuid();
    why = refusal(server, peer.uid, privileged);
    /* A device host may share the daemon's account (a daemon that is not root cannot give
     * it another), and it runs a plugin a guest may have subverted: never an admin. */
    if (why == NULL && device_manager_is_host(&server->daemon->devices, peer.pid))
        why = "device hosts may not use the admin socket";
    if (why != NULL) {
        refuse(server, client, &peer, why);
        return 0;
    }
    connection = calloc(1, sizeof(*connection));
    if (connection == NULL) {
        close(client);
        return 0;
    }
    connection->server = server;
    connection->fd = client;
    connection->peer.credentials = peer;
    json_stream_init(&connection->scanner);
    if (sd_event_add_io(server->daemon->event, &connection->io_source, client, EPOLLIN,
                        on_connection_event, connection) < 0 ||
        sd_event_add_time_relative(server->daemon->event, &connection->timer, CLOCK_MONOTONIC,
                                   (uint64_t)ADMIN_FIRST_REQUEST_SECONDS * 1000000, 0, on_timer,
                                   connection) < 0) {
        sd_event_source_disable_unref(connection->io_source);
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
    struct vu_socket_access access = {(uid_t)-1, (gid_t)-1, settings->admin_socket_mode};
    char path[CONFIG_SOCKET_PATH_MAX];
    int ret;

    ret = config_daemon_admin_socket(settings, path, sizeof(path));
    if (ret < 0)
        return ret;
    server->path = strdup(path);
    if (server->path == NULL)
        return -ENOMEM;
    if (settings->admin_socket_group != NULL &&
        device_lookup_group(settings->admin_socket_group, &access.gid) < 0) {
        /* A name or a number, as for device sockets. */
        vu_log(VFIO_USERD_LOG_ERR, NULL, "admin socket: no group '%s'",
               settings->admin_socket_group);
        return -ENOENT;
    }
    ret = vu_socket_listen(path, &access, &server->listen_fd);
    if (ret < 0) {
        vu_log(VFIO_USERD_LOG_ERR, NULL, "admin socket %s: %s", path,
               ret == -EADDRINUSE ? "another daemon is listening on it" : strerror(-ret));
        return ret;
    }
    server->created = true;
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
    ret = sd_event_add_time_relative(daemon->event, &server->accept_pause, CLOCK_MONOTONIC, 1000000,
                                     0, on_accept_pause_end, server);
    if (ret < 0)
        goto fail;
    sd_event_source_set_enabled(server->accept_pause, SD_EVENT_OFF);
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
    sd_event_source_disable_unref(server->accept_pause);
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
