/*
 * Device endpoint: listening socket, accept, message reassembly with SCM_RIGHTS, output
 * flushing, all on sd-event. See endpoint.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "device.h"
#include "endpoint.h"
#include "fault_guard.h"
#include "log.h"
#include "session.h"

/* Messages handled per wake-up before yielding, so one busy client cannot starve the
 * other devices of its worker thread. */
#define MESSAGES_PER_WAKEUP 64

/* How long accepting pauses when the process is out of descriptors or memory. */
#define ACCEPT_BACKOFF_USEC (1000u * 1000)

/* Lines a client can make us write by what it does to the socket (connecting in a loop,
 * running us out of descriptors, never saying VERSION): this many per interval each. */
#define CONNECTION_LOG_INTERVAL_USEC (10u * 1000 * 1000)
#define CONNECTION_LOG_BURST         20
#define ACCEPT_LOG_BURST             1

/* Reassembly state of one socket's incoming stream. */
struct channel_input {
    uint8_t header_bytes[VU_HEADER_SIZE];
    size_t header_received;
    struct vu_header header;
    int header_error; /* decoded header is bad: reject once the body is skipped */
    uint8_t *body;    /* VU_MAX_MESSAGE_SIZE bytes */
    size_t body_received;
    size_t body_length;
    bool discarding; /* body too large: read and drop it, then reject */
    int fds[VU_SERVER_MAX_MSG_FDS];
    size_t fd_count;
    bool fds_lost; /* more descriptors came than one message may carry */
};

struct connection {
    struct vu_endpoint *endpoint;
    int sockets[2]; /* main, twin */
    sd_event_source *sources[2];
    sd_event_source *dma_timer; /* the client's answer to a DMA_READ/DMA_WRITE is due */
    struct channel_input inputs[2];
    struct vu_session *session;
    pid_t pid;
};

struct vu_endpoint {
    struct vu_device *device;
    sd_event *event;
    int listen_fd;
    sd_event_source *listen_source;
    /* Both timers are made once and re-armed. They share the loop's CLOCK_MONOTONIC timerfd,
     * made with the first timer; after that, making or arming one takes no descriptor. */
    sd_event_source *accept_retry;    /* listening paused after running out of descriptors */
    sd_event_source *handshake_timer; /* the client's VERSION is due */
    bool accept_edge_triggered;       /* out of descriptors, and no timer could be made */
    unsigned accept_failures;         /* in a row, since the last client accepted */
    struct vu_log_ratelimit accept_log, connection_log;
    uint64_t handshake_timeout_usec; /* 0: none */
    uint64_t dma_timeout_usec;
    uint32_t dma_chunk_size; /* given to each client's session */
    unsigned refusals;       /* second clients refused while this one is connected */
    struct connection *connection;
    /* The device's I/O eventfds are served here, client or not: KVM may keep them. */
    sd_event_source *ioeventfd_sources[VFIO_USERD_MAX_IOEVENTFDS];
};

/* ---------------------------------------------------------------------------------------
 * Listening sockets.
 */

static int fill_address(const char *path, struct sockaddr_un *address)
{
    size_t length = strlen(path);

    if (length == 0 || length >= sizeof(address->sun_path))
        return -ENAMETOOLONG;
    *address = (struct sockaddr_un){.sun_family = AF_UNIX};
    memcpy(address->sun_path, path, length + 1);
    return 0;
}

/* 1 when a live process accepts connections at `address`, 0 when none does, or -errno. */
static int probe_socket(const struct sockaddr_un *address)
{
    int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int ret;

    if (probe < 0)
        return -errno;
    if (connect(probe, (const struct sockaddr *)address, sizeof(*address)) == 0)
        ret = 1;
    else
        ret = errno == ECONNREFUSED || errno == ENOENT ? 0 : -errno;
    close(probe);
    return ret;
}

/*
 * Whether a live process accepts connections on the socket file `path`, of `status`. A
 * socket given to another user (a VM's) refuses our probe with EACCES when the daemon runs
 * without CAP_DAC_OVERRIDE, as its unit has it: then the file is made ours for the probe
 * (CAP_CHOWN and CAP_FOWNER, which the unit keeps) and handed back if someone listens.
 * Whatever cannot be told counts as in use, so a live socket is never taken over.
 */
static bool socket_in_use(const char *path, const struct sockaddr_un *address,
                          const struct stat *status)
{
    int ret = probe_socket(address);

    if (ret != -EACCES && ret != -EPERM)
        return ret != 0;
    if (lchown(path, geteuid(), getegid()) < 0)
        return true;
    if (chmod(path, (status->st_mode & 07777) | S_IRUSR | S_IWUSR) < 0)
        ret = -errno;
    else
        ret = probe_socket(address);
    if (ret != 0 && (lchown(path, status->st_uid, status->st_gid) < 0 ||
                     chmod(path, status->st_mode & 07777) < 0))
        /* Not ours to take, and it could not be given back as it was. */
        vu_log(VFIO_USERD_LOG_WARNING, NULL, "%s: cannot restore its owner and mode: %s", path,
               strerror(errno));
    return ret != 0;
}

int vu_socket_remove_stale(const char *path)
{
    struct sockaddr_un address;
    struct stat status;
    int ret;

    ret = fill_address(path, &address);
    if (ret < 0)
        return ret;
    if (lstat(path, &status) < 0)
        return errno == ENOENT ? 0 : -errno;
    if (!S_ISSOCK(status.st_mode))
        return -EEXIST;
    if (socket_in_use(path, &address, &status))
        return -EADDRINUSE;
    if (unlink(path) < 0 && errno != ENOENT)
        return -errno;
    return 1;
}

int vu_socket_listen(const char *path, int *result)
{
    struct sockaddr_un address;
    int fd, ret;

    ret = fill_address(path, &address);
    if (ret < 0)
        return ret;
    ret = vu_socket_remove_stale(path);
    if (ret < 0)
        return ret;
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (bind(fd, (struct sockaddr *)&address, sizeof(address)) < 0 || listen(fd, 16) < 0) {
        ret = -errno;
        close(fd);
        return ret;
    }
    *result = fd;
    return 0;
}

/* ---------------------------------------------------------------------------------------
 * Connections.
 */

static void input_reset(struct channel_input *input)
{
    for (size_t i = 0; i < input->fd_count; i++)
        close(input->fds[i]);
    input->fd_count = 0;
    input->fds_lost = false;
    input->header_received = 0;
    input->body_received = 0;
    input->body_length = 0;
    input->discarding = false;
    input->header_error = 0;
}

static void connection_free(struct connection *connection)
{
    struct vu_endpoint *endpoint = connection->endpoint;

    sd_event_source_disable_unref(connection->dma_timer);
    for (int i = 0; i < 2; i++) {
        sd_event_source_disable_unref(connection->sources[i]);
        input_reset(&connection->inputs[i]);
        free(connection->inputs[i].body);
    }
    /* The socket goes first: by the time the device hears of the disconnect (from the
     * session, which owns the twin socket), the client is gone for good. */
    if (connection->sockets[0] >= 0)
        close(connection->sockets[0]);
    vu_session_free(connection->session);
    vu_log_ratelimited(&endpoint->connection_log, VFIO_USERD_LOG_INFO, endpoint->device->name,
                       "client (pid %d) disconnected", (int)connection->pid);
    sd_event_source_set_enabled(endpoint->handshake_timer, SD_EVENT_OFF);
    endpoint->connection = NULL;
    free(connection);
}

static void collect_fds(struct channel_input *input, struct msghdr *message)
{
    for (struct cmsghdr *cmsg = CMSG_FIRSTHDR(message); cmsg != NULL;
         cmsg = CMSG_NXTHDR(message, cmsg)) {
        size_t count;
        int fds[VU_SERVER_MAX_MSG_FDS + 1];

        if (cmsg->cmsg_level != SOL_SOCKET || cmsg->cmsg_type != SCM_RIGHTS)
            continue;
        count = (cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        if (count > sizeof(fds) / sizeof(fds[0]))
            count = sizeof(fds) / sizeof(fds[0]);
        memcpy(fds, CMSG_DATA(cmsg), count * sizeof(int));
        for (size_t i = 0; i < count; i++) {
            if (input->fd_count < VU_SERVER_MAX_MSG_FDS) {
                input->fds[input->fd_count++] = fds[i];
            } else {
                close(fds[i]);
                input->fds_lost = true;
            }
        }
    }
    if (message->msg_flags & MSG_CTRUNC)
        input->fds_lost = true;
}

/* Reads up to `length` bytes into `buffer`, taking descriptors. >0 bytes, 0 would block,
 * -ECONNRESET at end of stream, -errno on error. */
static ssize_t receive(int fd, struct channel_input *input, void *buffer, size_t length)
{
    union {
        struct cmsghdr header;
        char space[CMSG_SPACE(sizeof(int) * (VU_SERVER_MAX_MSG_FDS + 1))];
    } control;
    struct iovec iov = {.iov_base = buffer, .iov_len = length};
    struct msghdr message = {
        .msg_iov = &iov,
        .msg_iovlen = 1,
        .msg_control = control.space,
        .msg_controllen = sizeof(control.space),
    };
    ssize_t received;

    do {
        received = recvmsg(fd, &message, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
    } while (received < 0 && errno == EINTR);
    if (received < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -errno;
    collect_fds(input, &message);
    if (received == 0)
        return -ECONNRESET;
    return received;
}

/* Advances reassembly. 1: a whole message is ready; 0: wait for more; <0: drop client. */
static int read_message(struct connection *connection, int channel, uint64_t *bytes)
{
    struct channel_input *input = &connection->inputs[channel];
    int fd = connection->sockets[channel];
    uint8_t scratch[4096];
    ssize_t received;
    int ret;

    while (input->header_received < VU_HEADER_SIZE) {
        received = receive(fd, input, input->header_bytes + input->header_received,
                           VU_HEADER_SIZE - input->header_received);
        if (received <= 0)
            return (int)received;
        *bytes += (uint64_t)received;
        input->header_received += (size_t)received;
        if (input->header_received < VU_HEADER_SIZE)
            continue;
        ret = vu_wire_decode_header(input->header_bytes, VU_HEADER_SIZE, &input->header);
        if (ret < 0 && input->header.message_size < VU_HEADER_SIZE) {
            /* No way to find the next message boundary. */
            vu_log(VFIO_USERD_LOG_WARNING, connection->endpoint->device->name,
                   "client sent a message size of %u, below the header size; disconnecting",
                   input->header.message_size);
            return -EPROTO;
        }
        input->header_error = ret;
        input->body_length = input->header.message_size - VU_HEADER_SIZE;
        if (input->body_length > VU_MAX_MESSAGE_SIZE - VU_HEADER_SIZE) {
            input->discarding = true;
            input->header_error = -E2BIG;
        }
    }
    while (input->body_received < input->body_length) {
        size_t wanted = input->body_length - input->body_received;
        void *target;

        if (input->discarding) {
            target = scratch;
            if (wanted > sizeof(scratch))
                wanted = sizeof(scratch);
        } else {
            target = input->body + input->body_received;
        }
        received = receive(fd, input, target, wanted);
        if (received <= 0)
            return (int)received;
        *bytes += (uint64_t)received;
        input->body_received += (size_t)received;
    }
    return 1;
}

static int update_events(struct connection *connection);

static int flush_outputs(struct connection *connection)
{
    struct vu_device_statistics *statistics = &connection->endpoint->device->statistics;

    for (int round = 0; round < 2; round++) {
        bool drained = true;
        for (int channel = 0; channel < 2; channel++) {
            struct vu_output_queue *queue = vu_session_output(connection->session, channel);
            size_t before = vu_output_queue_pending(queue);
            int ret;

            if (before == 0)
                continue;
            ret = vu_output_queue_flush(queue, connection->sockets[channel]);
            if (ret < 0)
                return ret;
            statistics->bytes_sent += before - vu_output_queue_pending(queue);
            drained = drained && vu_output_queue_pending(queue) == 0;
        }
        if (!drained)
            break;
        /* Room again: queued DMA requests may go out now. */
        vu_session_output_drained(connection->session);
    }
    return 0;
}

static int on_socket_event(sd_event_source *source, int fd, uint32_t revents, void *userdata);

static int watch_twin_socket(struct connection *connection)
{
    int twin = vu_session_twin_socket(connection->session);
    int ret;

    if (twin < 0 || connection->sources[1] != NULL)
        return 0;
    connection->inputs[1].body = malloc(VU_MAX_MESSAGE_SIZE);
    if (connection->inputs[1].body == NULL)
        return -ENOMEM;
    connection->sockets[1] = twin;
    ret = sd_event_add_io(connection->endpoint->event, &connection->sources[1], twin, EPOLLIN,
                          on_socket_event, connection);
    return ret;
}

/* Reads and handles what arrived on one socket; <0 means drop the client. */
static int process_input(struct connection *connection, int channel)
{
    struct vu_device_statistics *statistics = &connection->endpoint->device->statistics;
    struct channel_input *input = &connection->inputs[channel];

    for (int handled = 0; handled < MESSAGES_PER_WAKEUP; handled++) {
        int ret;

        if (!vu_session_ready(connection->session))
            return 0;
        ret = read_message(connection, channel, &statistics->bytes_received);
        if (ret <= 0)
            return ret;
        if (input->header_error < 0 || input->fds_lost) {
            vu_session_reject_message(connection->session, &input->header,
                                      input->header_error < 0 ? input->header_error : -EINVAL);
            input_reset(input);
        } else {
            int fds[VU_SERVER_MAX_MSG_FDS];
            size_t fd_count = input->fd_count;

            /* The session takes the descriptors. */
            memcpy(fds, input->fds, fd_count * sizeof(int));
            input->fd_count = 0;
            ret = vu_session_handle_message(connection->session, channel, &input->header,
                                            input->body, input->body_length, fds, fd_count);
            input_reset(input);
            if (ret < 0)
                return ret;
            ret = watch_twin_socket(connection);
            if (ret < 0)
                return ret;
        }
    }
    return 0;
}

static int on_dma_timeout(sd_event_source *source, uint64_t usec, void *userdata)
{
    struct connection *connection = userdata;
    struct vu_endpoint *endpoint = connection->endpoint;
    struct vu_device *previous = vu_fault_guard_enter(endpoint->device);

    /* The plugin's completion runs here: guarded, and followed like any other work. */
    vu_session_dma_expire(connection->session);
    vu_endpoint_flush(endpoint);
    vu_fault_guard_enter(previous);
    return 0;
}

/* Arms the timer for the DMA answer the session awaits, or disarms it. */
static int update_dma_timer(struct connection *connection)
{
    uint64_t deadline =
        vu_session_dma_deadline(connection->session, connection->endpoint->dma_timeout_usec);

    if (deadline == 0)
        return connection->dma_timer != NULL
                   ? sd_event_source_set_enabled(connection->dma_timer, SD_EVENT_OFF)
                   : 0;
    if (connection->dma_timer == NULL)
        return sd_event_add_time(connection->endpoint->event, &connection->dma_timer,
                                 CLOCK_MONOTONIC, deadline, 0, on_dma_timeout, connection);
    sd_event_source_set_time(connection->dma_timer, deadline);
    return sd_event_source_set_enabled(connection->dma_timer, SD_EVENT_ONESHOT);
}

static int update_events(struct connection *connection)
{
    int ret = update_dma_timer(connection);

    if (ret < 0)
        return ret;
    if (vu_session_negotiated(connection->session)) {
        ret = sd_event_source_set_enabled(connection->endpoint->handshake_timer, SD_EVENT_OFF);
        if (ret < 0)
            return ret;
    }
    for (int channel = 0; channel < 2; channel++) {
        uint32_t events = 0;

        if (connection->sources[channel] == NULL)
            continue;
        if (vu_session_ready(connection->session))
            events |= EPOLLIN;
        if (vu_output_queue_pending(vu_session_output(connection->session, channel)) > 0)
            events |= EPOLLOUT;
        ret = sd_event_source_set_io_events(connection->sources[channel], events);
        if (ret < 0)
            return ret;
    }
    return 0;
}

/* After work for the device: a client that shrank its shared memory under a mapping (the
 * SIGBUS guard caught the access) is cut off, since its memory can no longer be trusted. */
static int check_dma_fault(struct vu_device *device)
{
    if (!device->dma_fault)
        return 0;
    vu_log(VFIO_USERD_LOG_ERR, device->name,
           "the client shrank memory it shared for DMA while mapped; disconnecting it");
    return -EFAULT;
}

void vu_endpoint_flush(struct vu_endpoint *endpoint)
{
    struct connection *connection = endpoint->connection;

    /* What the device queued goes out, its DMA deadline is armed; a client that shrank its
     * memory meanwhile, or whose socket failed, is dropped. */
    if (connection != NULL && (check_dma_fault(endpoint->device) < 0 ||
                               flush_outputs(connection) < 0 || update_events(connection) < 0))
        connection_free(connection);
}

static int on_socket_event(sd_event_source *source, int fd, uint32_t revents, void *userdata)
{
    struct connection *connection = userdata;
    struct vu_device *device = connection->endpoint->device;
    struct vu_device *previous = vu_fault_guard_enter(device);
    int channel = fd == connection->sockets[0] ? 0 : 1;
    int ret = 0;

    if (revents & EPOLLIN)
        ret = process_input(connection, channel);
    if (ret >= 0)
        ret = check_dma_fault(device);
    if (ret == 0 && (revents & (EPOLLHUP | EPOLLERR)) && !(revents & EPOLLIN))
        ret = -ECONNRESET;
    if (ret >= 0 || vu_session_closing(connection->session)) {
        int flushed = flush_outputs(connection);
        if (ret >= 0)
            ret = flushed;
    }
    if (ret >= 0)
        ret = update_events(connection);
    if (ret < 0) {
        if (ret != -ECONNRESET && ret != -EPIPE)
            vu_log_ratelimited(&connection->endpoint->connection_log, VFIO_USERD_LOG_INFO,
                               device->name, "dropping client: %s", strerror(-ret));
        connection_free(connection);
    }
    vu_fault_guard_enter(previous);
    return 0;
}

static int on_handshake_timeout(sd_event_source *source, uint64_t usec, void *userdata);

static int connection_new(struct vu_endpoint *endpoint, int fd)
{
    struct connection *connection = calloc(1, sizeof(*connection));
    struct ucred credentials;
    socklen_t length = sizeof(credentials);
    int ret;

    if (connection == NULL) {
        close(fd);
        return -ENOMEM;
    }
    connection->endpoint = endpoint;
    connection->sockets[0] = fd;
    connection->sockets[1] = -1;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &credentials, &length) == 0)
        connection->pid = credentials.pid;
    connection->inputs[0].body = malloc(VU_MAX_MESSAGE_SIZE);
    if (connection->inputs[0].body == NULL) {
        ret = -ENOMEM;
        goto fail;
    }
    ret = vu_session_new(endpoint->device, &connection->session);
    if (ret < 0)
        goto fail;
    vu_session_set_dma_chunk_size(connection->session, endpoint->dma_chunk_size);
    ret = sd_event_add_io(endpoint->event, &connection->sources[0], fd, EPOLLIN, on_socket_event,
                          connection);
    if (ret < 0)
        goto fail;
    if (endpoint->handshake_timeout_usec > 0) {
        if (endpoint->handshake_timer == NULL)
            ret = sd_event_add_time_relative(endpoint->event, &endpoint->handshake_timer,
                                             CLOCK_MONOTONIC, endpoint->handshake_timeout_usec, 0,
                                             on_handshake_timeout, endpoint);
        else
            ret = sd_event_source_set_time_relative(endpoint->handshake_timer,
                                                    endpoint->handshake_timeout_usec);
        if (ret >= 0)
            ret = sd_event_source_set_enabled(endpoint->handshake_timer, SD_EVENT_ONESHOT);
        if (ret < 0) {
            sd_event_source_disable_unref(connection->sources[0]);
            goto fail;
        }
    }
    endpoint->connection = connection;
    vu_log_ratelimited(&endpoint->connection_log, VFIO_USERD_LOG_INFO, endpoint->device->name,
                       "client connected (pid %d, uid %u)", (int)connection->pid,
                       (unsigned)credentials.uid);
    return 0;
fail:
    vu_session_free(connection->session);
    free(connection->inputs[0].body);
    close(fd);
    free(connection);
    return ret;
}

static int on_accept_retry(sd_event_source *source, uint64_t usec, void *userdata)
{
    struct vu_endpoint *endpoint = userdata;

    sd_event_source_set_enabled(endpoint->listen_source, SD_EVENT_ON);
    return 0;
}

/*
 * Stops accepting for ACCEPT_BACKOFF_USEC. Once the loop has a CLOCK_MONOTONIC timer (from
 * any client's handshake deadline, or an earlier back-off), this needs no descriptor. In a
 * loop that never had one, where sd-event's timerfd cannot be made now, the listening
 * socket turns edge-triggered instead: the next attempt waits for the next connection,
 * rather than following at once (re-enabling it at once spun a core at 100%).
 */
static void pause_accepting(struct vu_endpoint *endpoint)
{
    int ret;

    if (endpoint->accept_retry == NULL)
        ret = sd_event_add_time_relative(endpoint->event, &endpoint->accept_retry, CLOCK_MONOTONIC,
                                         ACCEPT_BACKOFF_USEC, 0, on_accept_retry, endpoint);
    else
        ret = sd_event_source_set_time_relative(endpoint->accept_retry, ACCEPT_BACKOFF_USEC);
    if (ret >= 0)
        ret = sd_event_source_set_enabled(endpoint->accept_retry, SD_EVENT_ONESHOT);
    if (ret >= 0) {
        sd_event_source_set_enabled(endpoint->listen_source, SD_EVENT_OFF);
        return;
    }
    if (sd_event_source_set_io_events(endpoint->listen_source, EPOLLIN | EPOLLET) >= 0)
        endpoint->accept_edge_triggered = true;
}

/* The client never completed VERSION in time: it goes, and the socket is free again. */
static int on_handshake_timeout(sd_event_source *source, uint64_t usec, void *userdata)
{
    struct vu_endpoint *endpoint = userdata;
    struct connection *connection = endpoint->connection;
    struct vu_device *previous;

    if (connection == NULL || vu_session_negotiated(connection->session))
        return 0;
    vu_log_ratelimited(&endpoint->connection_log, VFIO_USERD_LOG_WARNING, endpoint->device->name,
                       "client (pid %d) did not complete VERSION within %.3g s "
                       "(handshake_timeout); disconnecting it",
                       (int)connection->pid, (double)endpoint->handshake_timeout_usec / 1e6);
    previous = vu_fault_guard_enter(endpoint->device);
    connection_free(connection);
    vu_fault_guard_enter(previous);
    return 0;
}

static int on_listen_event(sd_event_source *source, int fd, uint32_t revents, void *userdata)
{
    struct vu_endpoint *endpoint = userdata;
    int client = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    int ret;

    if (client < 0) {
        int error = errno;

        if (error == EMFILE || error == ENFILE || error == ENOBUFS || error == ENOMEM) {
            /* The connection stays queued and the socket readable: pause, or spin. */
            endpoint->accept_failures++;
            vu_log_ratelimited(
                &endpoint->accept_log, VFIO_USERD_LOG_WARNING, endpoint->device->name,
                "cannot accept a client: %s; retrying every second", strerror(error));
            pause_accepting(endpoint);
        } else if (error != EAGAIN && error != EINTR && error != ECONNABORTED) {
            vu_log_ratelimited(&endpoint->accept_log, VFIO_USERD_LOG_WARNING,
                               endpoint->device->name, "accept failed: %s", strerror(error));
        }
        return 0;
    }
    if (endpoint->accept_edge_triggered &&
        sd_event_source_set_io_events(endpoint->listen_source, EPOLLIN) >= 0)
        endpoint->accept_edge_triggered = false;
    if (endpoint->accept_failures > 0) {
        vu_log(VFIO_USERD_LOG_NOTICE, endpoint->device->name,
               "accepting clients again, after %u failed attempts", endpoint->accept_failures);
        endpoint->accept_failures = 0;
    }
    if (endpoint->connection != NULL) {
        /* One client per device: refuse the newcomer, leave the first alone. */
        vu_log(endpoint->refusals++ == 0 ? VFIO_USERD_LOG_WARNING : VFIO_USERD_LOG_DEBUG,
               endpoint->device->name, "refused a second client: pid %d is connected",
               (int)endpoint->connection->pid);
        close(client);
        return 0;
    }
    endpoint->refusals = 0;
    ret = connection_new(endpoint, client);
    if (ret < 0)
        vu_log_ratelimited(&endpoint->connection_log, VFIO_USERD_LOG_ERR, endpoint->device->name,
                           "cannot accept client: %s", strerror(-ret));
    return 0;
}

static int on_ioeventfd(sd_event_source *source, int fd, uint32_t revents, void *userdata)
{
    struct vu_endpoint *endpoint = userdata;
    uint64_t count;

    struct vu_device *previous;

    if (read(fd, &count, sizeof(count)) != sizeof(count))
        return 0;
    previous = vu_fault_guard_enter(endpoint->device);
    for (uint32_t i = 0; i < endpoint->device->ioeventfd_count; i++)
        if (endpoint->device->ioeventfds[i].fd == fd)
            vu_device_ioeventfd_fired(endpoint->device, i);
    /* The doorbell may have started DMA: its messages go out, its deadline is armed. */
    vu_endpoint_flush(endpoint);
    vu_fault_guard_enter(previous);
    return 0;
}

int vu_endpoint_new(struct vu_device *device, sd_event *event, int listen_fd,
                    struct vu_endpoint **result)
{
    struct vu_endpoint *endpoint = calloc(1, sizeof(*endpoint));
    int ret;

    if (endpoint == NULL) {
        close(listen_fd);
        return -ENOMEM;
    }
    endpoint->device = device;
    endpoint->event = sd_event_ref(event);
    endpoint->listen_fd = listen_fd;
    endpoint->dma_timeout_usec = VU_ENDPOINT_DMA_TIMEOUT_USEC;
    endpoint->dma_chunk_size = VU_DMA_CHUNK_SIZE_DEFAULT;
    endpoint->handshake_timeout_usec = VU_ENDPOINT_HANDSHAKE_TIMEOUT_USEC;
    endpoint->accept_log = (struct vu_log_ratelimit)VU_LOG_RATELIMIT_INIT(
        CONNECTION_LOG_INTERVAL_USEC, ACCEPT_LOG_BURST);
    endpoint->connection_log = (struct vu_log_ratelimit)VU_LOG_RATELIMIT_INIT(
        CONNECTION_LOG_INTERVAL_USEC, CONNECTION_LOG_BURST);
    ret = sd_event_add_io(event, &endpoint->listen_source, listen_fd, EPOLLIN, on_listen_event,
                          endpoint);
    for (uint32_t i = 0; ret >= 0 && i < device->ioeventfd_count; i++)
        ret = sd_event_add_io(event, &endpoint->ioeventfd_sources[i], device->ioeventfds[i].fd,
                              EPOLLIN, on_ioeventfd, endpoint);
    if (ret < 0) {
        vu_endpoint_free(endpoint);
        return ret;
    }
    *result = endpoint;
    return 0;
}

void vu_endpoint_disconnect(struct vu_endpoint *endpoint)
{
    if (endpoint->connection != NULL)
        connection_free(endpoint->connection);
}

void vu_endpoint_free(struct vu_endpoint *endpoint)
{
    if (endpoint == NULL)
        return;
    vu_endpoint_disconnect(endpoint);
    for (uint32_t i = 0; i < VFIO_USERD_MAX_IOEVENTFDS; i++)
        sd_event_source_disable_unref(endpoint->ioeventfd_sources[i]);
    sd_event_source_disable_unref(endpoint->accept_retry);
    sd_event_source_disable_unref(endpoint->handshake_timer);
    sd_event_source_disable_unref(endpoint->listen_source);
    if (endpoint->listen_fd >= 0)
        close(endpoint->listen_fd);
    sd_event_unref(endpoint->event);
    free(endpoint);
}

int vu_endpoint_release(struct vu_endpoint *endpoint)
{
    int fd = endpoint->listen_fd;

    endpoint->listen_fd = -1;
    vu_endpoint_free(endpoint);
    return fd;
}

void vu_endpoint_set_dma_timeout(struct vu_endpoint *endpoint, uint64_t timeout_usec)
{
    endpoint->dma_timeout_usec = timeout_usec;
}

int vu_endpoint_set_dma_chunk_size(struct vu_endpoint *endpoint, uint32_t bytes)
{
    if (!vu_dma_chunk_size_valid(bytes))
        return -EINVAL;
    endpoint->dma_chunk_size = bytes;
    if (endpoint->connection != NULL)
        vu_session_set_dma_chunk_size(endpoint->connection->session, bytes);
    return 0;
}

void vu_endpoint_set_handshake_timeout(struct vu_endpoint *endpoint, uint64_t timeout_usec)
{
    endpoint->handshake_timeout_usec = timeout_usec;
}

int vu_endpoint_set_max_client_fds(struct vu_endpoint *endpoint, uint32_t count)
{
    if (count < VU_MAX_CLIENT_FDS_MIN || count > VU_MAX_CLIENT_FDS_MAX)
        return -EINVAL;
    endpoint->device->max_client_fds = count;
    return 0;
}

void vu_endpoint_client_fds(const struct vu_endpoint *endpoint, uint32_t *held, uint32_t *limit)
{
    *held = endpoint->device->client_fds;
    *limit = endpoint->device->max_client_fds;
}

bool vu_endpoint_connected(const struct vu_endpoint *endpoint)
{
    return endpoint->connection != NULL;
}

pid_t vu_endpoint_client_pid(const struct vu_endpoint *endpoint)
{
    return endpoint->connection != NULL ? endpoint->connection->pid : 0;
}
