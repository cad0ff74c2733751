/*
 * Device endpoint: listening socket, accept, message reassembly with SCM_RIGHTS, output
 * flushing. The client's sockets are served by the device loop directly, everything else
 * (listening, timers, deferred work) by its sd-event loop. See endpoint.h.
 */
#include <errno.h>
#include <poll.h>
#include <time.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "device.h"
#include "endpoint.h"
#include "event_loop.h"
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

/*
 * One socket's incoming stream. A single recvmsg reads as much as has arrived, header and
 * body and any messages after them, into one buffer that holds the largest message; every
 * complete message in it is handled before the next read. Descriptors arrive with the read
 * that reaches the first byte of the sendmsg that carried them, and the kernel ends that
 * read after it; they belong to the message holding the last byte the read returned.
 */
struct channel_input {
    uint8_t *buffer;   /* VU_MAX_MESSAGE_SIZE bytes */
    size_t head, tail; /* unhandled bytes are buffer[head, tail) */
    /* An oversized message is read and dropped, then rejected. */
    uint64_t discarding; /* its bytes still to drop */
    struct vu_header discarded;
    int fds[VU_SERVER_MAX_MSG_FDS];
    size_t fd_count;
    bool fds_pending; /* fds (or fds_lost) belong to the message holding buffer[fds_at] */
    size_t fds_at;
    bool fds_lost; /* more descriptors came than one message may carry */
};

struct connection {
    struct vu_endpoint *endpoint;
    int sockets[2]; /* main, twin */
    struct vu_loop_socket watches[2];
    sd_event_source *dma_timer; /* the client's answer to a DMA_READ/DMA_WRITE is due */
    sd_event_source *resume;    /* complete messages wait in an input buffer */
    /* update_events() calls sd-event only when a request changed what it waits for, which
     * nearly none does: then the device loop needs no pass of sd-event either. */
    bool dma_timer_may_run;   /* armed since it was last disabled (it may have fired) */
    bool handshake_timer_off; /* disabled once the session was negotiated */
    struct channel_input inputs[2];
    struct vu_session *session;
    pid_t pid;
};

struct vu_endpoint {
    struct vu_device *device;
    struct vu_loop *loop;
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
    uint64_t poll_usec;      /* busy-poll the client's socket this long after a request */
    unsigned refusals;       /* second clients refused while this one is connected */
    struct connection *connection;
    sd_event_source *quiesced_source; /* the device's quiesce is done: go on (a defer) */
    sd_event_source *quiesce_watch;   /* a quiesce taking long is reported (a timer) */
    uint64_t quiesce_warning_usec;    /* after this long, then twice as long, ... */
    uint64_t quiesce_next_usec;       /* the next report's delay */
    uint64_t quiesce_began_usec;
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
    /* Non-blocking: a live listener whose backlog is full must not hold the caller. */
    int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
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

/* Owner and mode of the file open as `fd` (O_PATH), without following a link. */
static int set_owner_and_mode(int fd, uid_t uid, gid_t gid, mode_t mode)
{
    char path[32];

    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    if (fchownat(fd, "", uid, gid, AT_EMPTY_PATH) < 0 || chmod(path, mode) < 0)
        return -errno;
    return 0;
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
    struct stat opened;
    int ret = probe_socket(address), fd;

    if (ret != -EACCES && ret != -EPERM)
        return ret != 0;
    /* The very socket that was probed, not whatever a link put in its place since. */
    fd = open(path, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return true;
    if (fstat(fd, &opened) < 0 || !S_ISSOCK(opened.st_mode) || opened.st_dev != status->st_dev ||
        opened.st_ino != status->st_ino ||
        set_owner_and_mode(fd, geteuid(), getegid(),
                           (status->st_mode & 07777) | S_IRUSR | S_IWUSR) < 0) {
        close(fd);
        return true;
    }
    ret = probe_socket(address);
    if (ret != 0 &&
        set_owner_and_mode(fd, status->st_uid, status->st_gid, status->st_mode & 07777) < 0)
        /* Not ours to take, and it could not be given back as it was. */
        vu_log(VFIO_USERD_LOG_WARNING, NULL, "%s: cannot restore its owner and mode: %s", path,
               strerror(errno));
    close(fd);
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

/* Names tried for the socket before it takes its final one. */
#define SOCKET_TEMPORARY_ATTEMPTS 16

/*
 * A name, in the directory of `path`, for the socket until it listens: a dot and letters,
 * as long as `path`'s last component but at least 8 characters, so that it fits wherever
 * `path` does (but for a very short last component) and names already taken are few.
 */
static int temporary_address(const char *path, struct sockaddr_un *address)
{
    static const char letters[] = "abcdefghijklmnopqrstuvwxyz012345";
    static unsigned serial;
    const char *slash = strrchr(path, '/');
    size_t directory = slash != NULL ? (size_t)(slash - path) + 1 : 0;
    size_t length = strlen(path + directory);
    uint64_t bits =
        ((uint64_t)getpid() << 32) ^ vu_monotonic_usec() ^
        (uint64_t)__atomic_fetch_add(&serial, 1, __ATOMIC_RELAXED) * 0x9e3779b97f4a7c15ULL;

    if (length < 8)
        length = 8;
    if (directory + length >= sizeof(address->sun_path))
        return -ENAMETOOLONG;
    *address = (struct sockaddr_un){.sun_family = AF_UNIX};
    memcpy(address->sun_path, path, directory);
    address->sun_path[directory] = '.';
    for (size_t i = 1; i < length; i++, bits = bits >> 5 | bits << 59)
        address->sun_path[directory + i] = letters[bits & 31];
    return 0;
}

static int apply_access(const char *path, const struct vu_socket_access *access)
{
    if ((access->uid != (uid_t)-1 || access->gid != (gid_t)-1) &&
        fchownat(AT_FDCWD, path, access->uid, access->gid, AT_SYMLINK_NOFOLLOW) < 0)
        return -errno;
    if (chmod(path, access->mode) < 0)
        return -errno;
    return 0;
}

int vu_socket_listen(const char *path, const struct vu_socket_access *access, int *result)
{
    struct sockaddr_un address, temporary;
    bool bound = false;
    int fd = -1, ret;

    ret = fill_address(path, &address);
    if (ret < 0)
        goto out;
    ret = vu_socket_remove_stale(path);
    if (ret < 0)
        goto out;
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        ret = -errno;
        goto out;
    }
    /* Bound under another name, the socket is made ready to serve there; the rename then
     * shows it at `path` as it will stay. Between a bind and a listen at `path` itself, a
     * client would be refused. */
    for (unsigned attempt = 0; !bound; attempt++) {
        ret =
            attempt < SOCKET_TEMPORARY_ATTEMPTS ? temporary_address(path, &temporary) : -EADDRINUSE;
        if (ret < 0)
            goto out;
        bound = bind(fd, (struct sockaddr *)&temporary, sizeof(temporary)) == 0;
        if (!bound && errno != EADDRINUSE) {
            ret = -errno;
            goto out;
        }
    }
    if (listen(fd, 16) < 0) {
        ret = -errno;
        goto out;
    }
    if (access != NULL && (ret = apply_access(temporary.sun_path, access)) < 0)
        goto out;
    /* No replace: a socket a live process made at `path` since the stale check stays its
     * own, as a bind at `path` would have left it. */
    if (renameat2(AT_FDCWD, temporary.sun_path, AT_FDCWD, path, RENAME_NOREPLACE) < 0) {
        ret = errno == EEXIST ? -EADDRINUSE : -errno;
        goto out;
    }
    bound = false;
    *result = fd;
    fd = -1;
    ret = 0;
out:
    if (bound)
        unlink(temporary.sun_path);
    if (fd >= 0)
        close(fd);
    return ret;
}

/* ---------------------------------------------------------------------------------------
 * Connections.
 */

/* Closes the descriptors waiting for a message, which then has none. */
static void input_drop_fds(struct channel_input *input)
{
    for (size_t i = 0; i < input->fd_count; i++)
        close(input->fds[i]);
    input->fd_count = 0;
    input->fds_lost = false;
    input->fds_pending = false;
}

static void connection_free(struct connection *connection)
{
    struct vu_endpoint *endpoint = connection->endpoint;

    sd_event_source_disable_unref(connection->dma_timer);
    sd_event_source_disable_unref(connection->resume);
    vu_loop_changed(endpoint->loop);
    for (int i = 0; i < 2; i++) {
        vu_loop_socket_remove(&connection->watches[i]);
        input_drop_fds(&connection->inputs[i]);
        free(connection->inputs[i].buffer);
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

static void on_socket_ready(struct vu_loop_socket *socket, uint32_t revents);

static int watch_twin_socket(struct connection *connection)
{
    int twin = vu_session_twin_socket(connection->session);
    int ret;

    if (twin < 0 || connection->watches[1].loop != NULL)
        return 0;
    if (connection->inputs[1].buffer == NULL)
        connection->inputs[1].buffer = malloc(VU_MAX_MESSAGE_SIZE);
    if (connection->inputs[1].buffer == NULL)
        return -ENOMEM;
    connection->sockets[1] = twin;
    ret = vu_loop_socket_add(connection->endpoint->loop, &connection->watches[1], twin, EPOLLIN,
                             on_socket_ready, connection);
    return ret;
}

/* Takes the descriptors a read brought; they belong to the message holding buffer[at]. */
static void collect_fds(struct channel_input *input, struct msghdr *message, size_t at)
{
    bool any = (message->msg_flags & MSG_CTRUNC) != 0;

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
            any = true;
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
    if (any) {
        /* A read never goes past the message that descriptors wait for (input_read_limit),
         * so a second batch belongs to the same message as the first. */
        input->fds_pending = true;
        input->fds_at = at;
    }
}

/* Reads once into buffer[tail, limit), taking descriptors. >0 bytes, 0 would block,
 * -ECONNRESET at end of stream, -errno on error. */
static ssize_t input_read(int fd, struct channel_input *input, size_t limit)
{
    union {
        struct cmsghdr header;
        char space[CMSG_SPACE(sizeof(int) * (VU_SERVER_MAX_MSG_FDS + 1))];
    } control;
    struct iovec iov = {.iov_base = input->buffer + input->tail, .iov_len = limit - input->tail};
    struct msghdr message = {
        .msg_iov = &iov,
        .msg_iovlen = 1,
        .msg_control = control.space,
        .msg_controllen = sizeof(control.space),
    };
    ssize_t received;

    if (limit <= input->tail)
        return 0; /* no room: cannot happen, input_compact() makes it */
    do {
        received = recvmsg(fd, &message, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
    } while (received < 0 && errno == EINTR);
    if (received < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -errno;
    if (received == 0) {
        collect_fds(input, &message, input->tail);
        return -ECONNRESET;
    }
    collect_fds(input, &message, input->tail + (size_t)received - 1);
    input->tail += (size_t)received;
    return received;
}

/* The size of the message at head as its header says, or 0 while the header is partial. */
static uint32_t input_message_size(const struct channel_input *input)
{
    struct vu_header header;

    if (input->tail - input->head < VU_HEADER_SIZE)
        return 0;
    memcpy(&header, input->buffer + input->head, sizeof(header));
    return header.message_size;
}

/*
 * Where the next read must stop. With descriptors waiting for the message at head, at its
 * end (or its header's, while that is partial), so that descriptors a read brings always
 * belong to the message they came with; otherwise at the end of the buffer.
 */
static size_t input_read_limit(const struct channel_input *input)
{
    uint64_t size;

    if (input->discarding > 0 || !input->fds_pending)
        return VU_MAX_MESSAGE_SIZE;
    size = input_message_size(input);
    if (size < VU_HEADER_SIZE || size > VU_MAX_MESSAGE_SIZE)
        size = VU_HEADER_SIZE;
    return input->head + (size_t)size;
}

/* Moves the bytes at head to the front when the message there would not fit after them,
 * or when they are few (cheap, and keeps the buffer's start hot in the cache); with `all`,
 * always, so that all the room is after them. */
static void input_compact(struct channel_input *input, bool all)
{
    size_t pending = input->tail - input->head;
    uint64_t needed = input_message_size(input);

    if (input->head == 0)
        return;
    if (needed < VU_HEADER_SIZE || needed > VU_MAX_MESSAGE_SIZE)
        needed = VU_HEADER_SIZE;
    if (!all && pending > 4096 && input->head + needed <= VU_MAX_MESSAGE_SIZE)
        return;
    memmove(input->buffer, input->buffer + input->head, pending);
    if (input->fds_pending)
        input->fds_at -= input->head;
    input->tail = pending;
    input->head = 0;
}

/* Drops what arrived of an oversized message; once it is whole, rejects it. */
static void input_discard(struct connection *connection, struct channel_input *input)
{
    size_t available = input->tail - input->head;
    size_t dropped = available < input->discarding ? available : (size_t)input->discarding;

    if (input->fds_pending && input->fds_at < input->head + dropped)
        input_drop_fds(input); /* they came with the dropped message */
    input->head += dropped;
    input->discarding -= dropped;
    if (input->head == input->tail)
        input->head = input->tail = 0;
    if (input->discarding == 0)
        vu_session_reject_message(connection->session, &input->discarded, -E2BIG);
}

/*
 * Whether the message at the head of `channel` must wait for a held command (see
 * vu_session_holding): anything but a well-formed reply does. Handling, reading, the
 * resume check and the events asked of the loop all judge by this, so that what waits
 * never looks ready to any of them.
 */
static bool input_head_waits(const struct connection *connection, int channel)
{
    const struct channel_input *input = &connection->inputs[channel];
    struct vu_header header;

    if (!vu_session_holding(connection->session) || input->discarding > 0 ||
        input->tail - input->head < VU_HEADER_SIZE)
        return false;
    return vu_wire_decode_header(input->buffer + input->head, VU_HEADER_SIZE, &header) < 0 ||
           (header.flags & VU_FLAGS_TYPE_MASK) != VU_FLAGS_TYPE_REPLY;
}

/*
 * Handles the message at head if it is complete. 1: handled (or rejected), go on; 0: it is
 * not complete yet; <0: drop the client.
 */
static int input_handle_one(struct connection *connection, int channel)
{
    struct channel_input *input = &connection->inputs[channel];
    size_t available = input->tail - input->head;
    struct vu_header header;
    bool fds_lost = false;
    int fds[VU_SERVER_MAX_MSG_FDS];
    size_t fd_count = 0, end;
    int ret;

    if (available < VU_HEADER_SIZE)
        return 0;
    if (input_head_waits(connection, channel))
        return 0;
    ret = vu_wire_decode_header(input->buffer + input->head, VU_HEADER_SIZE, &header);
    if (ret < 0 && header.message_size < VU_HEADER_SIZE) {
        /* No way to find the next message boundary. */
        vu_log(VFIO_USERD_LOG_WARNING, connection->endpoint->device->name,
               "client sent a message size of %u, below the header size; disconnecting",
               header.message_size);
        return -EPROTO;
    }
    if (header.message_size > VU_MAX_MESSAGE_SIZE) {
        input->discarding = header.message_size;
        input->discarded = header;
        input_discard(connection, input);
        return 1;
    }
    if (available < header.message_size)
        return 0;
    end = input->head + header.message_size;
    if (input->fds_pending && input->fds_at < end) {
        /* The session takes the descriptors. */
        fd_count = input->fd_count;
        fds_lost = input->fds_lost;
        memcpy(fds, input->fds, fd_count * sizeof(int));
        input->fd_count = 0;
        input->fds_lost = false;
        input->fds_pending = false;
    }
    if (ret < 0 || fds_lost) {
        for (size_t i = 0; i < fd_count; i++)
            close(fds[i]);
        vu_session_reject_message(connection->session, &header, ret < 0 ? ret : -EINVAL);
        ret = 0;
    } else {
        ret = vu_session_handle_message(connection->session, channel, &header,
                                        input->buffer + input->head + VU_HEADER_SIZE,
                                        header.message_size - VU_HEADER_SIZE, fds, fd_count);
    }
    input->head = end;
    if (input->head == input->tail)
        input->head = input->tail = 0;
    if (ret < 0)
        return ret;
    ret = watch_twin_socket(connection);
    return ret < 0 ? ret : 1;
}

static int update_events(struct connection *connection);

/*
 * Whether the socket of `channel` must not be read until the held command has run: its
 * head waits and nothing more fits behind it (the buffer is full, or descriptors wait for
 * a message in it, which ends reads there). The socket is level-triggered: reading on
 * would spin.
 */
static bool input_blocked(const struct connection *connection, int channel)
{
    const struct channel_input *input = &connection->inputs[channel];

    return input_head_waits(connection, channel) &&
           (input->fds_pending || input->tail - input->head >= VU_MAX_MESSAGE_SIZE);
}

/*
 * While a command is held, the device may need answers to its own DMA_READ/DMA_WRITE to
 * finish quiescing, and a client without a twin socket (QEMU) sends them on the main
 * socket, possibly behind commands it sent after the held one. Replies are handled where
 * they lie and taken out of the stream; commands keep their place and order. The scan stops
 * at a message that is incomplete or malformed, or with or before descriptors: those wait
 * for the held command like the commands do.
 */
static void input_take_replies(struct connection *connection, int channel)
{
    struct channel_input *input = &connection->inputs[channel];
    size_t at = input->head;

    while (input->tail - at >= VU_HEADER_SIZE) {
        struct vu_header header;
        size_t size;

        if (vu_wire_decode_header(input->buffer + at, VU_HEADER_SIZE, &header) < 0 ||
            header.message_size > input->tail - at)
            return;
        size = header.message_size;
        if (input->fds_pending && input->fds_at < at + size)
            return;
        if ((header.flags & VU_FLAGS_TYPE_MASK) != VU_FLAGS_TYPE_REPLY) {
            at += size;
            continue;
        }
        vu_session_handle_message(connection->session, channel, &header,
                                  input->buffer + at + VU_HEADER_SIZE, size - VU_HEADER_SIZE, NULL,
                                  0);
        memmove(input->buffer + at, input->buffer + at + size, input->tail - at - size);
        input->tail -= size;
        if (input->fds_pending)
            input->fds_at -= size; /* they came with a later message */
    }
}

static int flush_outputs(struct connection *connection)
{
    struct vu_device_statistics *statistics = &connection->endpoint->device->statistics;

    for (int round = 0; round < 2; round++) {
        bool drained = true, sent = false;
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
            sent = true;
            drained = drained && vu_output_queue_pending(queue) == 0;
        }
        /* Still full, or nothing sent (most requests' second round): no room was made for
         * the DMA requests that wait, which took what room there was when last pumped. */
        if (!drained || !sent)
            break;
        /* Room again: queued DMA requests may go out now. */
        vu_session_output_drained(connection->session);
    }
    return 0;
}

/*
 * Handles what waits in a socket's buffer and what arrived on it (when `readable`); <0 means
 * drop the client. A read that returns less than it asked for emptied the socket, so the
 * loop is told to wait rather than asking again for an EAGAIN: the socket is level-triggered.
 */
static int process_input(struct connection *connection, int channel, bool readable)
{
    struct vu_device_statistics *statistics = &connection->endpoint->device->statistics;
    struct channel_input *input = &connection->inputs[channel];
    int handled = 0;

    for (;;) {
        size_t limit;
        ssize_t received;
        int ret;

        for (;;) {
            if (handled == MESSAGES_PER_WAKEUP || !vu_session_ready(connection->session))
                return 0; /* the rest waits: resume_input() */
            if (input->discarding > 0) {
                if (input->head == input->tail)
                    break;
                input_discard(connection, input);
                handled += input->discarding == 0;
                continue;
            }
            ret = input_handle_one(connection, channel);
            if (ret < 0)
                return ret;
            if (ret == 0) {
                if (input_head_waits(connection, channel))
                    input_take_replies(connection, channel);
                break;
            }
            handled++;
        }
        if (!readable || input_blocked(connection, channel))
            return 0;
        /* Behind a waiting command, all the room goes to what may follow it. */
        input_compact(input, input_head_waits(connection, channel));
        limit = input_read_limit(input);
        received = input_read(connection->sockets[channel], input, limit);
        if (received <= 0)
            return (int)received;
        statistics->bytes_received += (uint64_t)received;
        /* Short: the socket is empty for now. */
        readable = input->tail == limit;
    }
}

/* Whether a complete message (or dropped bytes) waits in the buffer of `channel`. */
static bool input_waiting(const struct connection *connection, int channel)
{
    const struct channel_input *input = &connection->inputs[channel];
    struct vu_header header;

    if (input->discarding > 0)
        return input->tail > input->head;
    if (input->tail - input->head < VU_HEADER_SIZE || input_head_waits(connection, channel))
        return false;
    memcpy(&header, input->buffer + input->head, sizeof(header));
    /* A bad size is handled (refused) at once too. */
    return header.message_size < VU_HEADER_SIZE || header.message_size > VU_MAX_MESSAGE_SIZE ||
           input->tail - input->head >= header.message_size;
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

    if (deadline == 0) {
        if (!connection->dma_timer_may_run)
            return 0;
        connection->dma_timer_may_run = false;
        return sd_event_source_set_enabled(connection->dma_timer, SD_EVENT_OFF);
    }
    connection->dma_timer_may_run = true;
    vu_loop_changed(connection->endpoint->loop); /* sd-event arms its timer in a pass */
    if (connection->dma_timer == NULL)
        return sd_event_add_time(vu_loop_event(connection->endpoint->loop), &connection->dma_timer,
                                 CLOCK_MONOTONIC, deadline, 0, on_dma_timeout, connection);
    sd_event_source_set_time(connection->dma_timer, deadline);
    return sd_event_source_set_enabled(connection->dma_timer, SD_EVENT_ONESHOT);
}

static int on_resume(sd_event_source *source, void *userdata);

/* Complete messages wait in a buffer and the session can take them: handle them from the
 * next loop pass, whether or not more arrives. */
static int update_resume(struct connection *connection)
{
    if (!vu_session_ready(connection->session) ||
        !(input_waiting(connection, 0) || input_waiting(connection, 1)))
        return 0;
    vu_loop_changed(connection->endpoint->loop);
    if (connection->resume == NULL)
        return sd_event_add_defer(vu_loop_event(connection->endpoint->loop), &connection->resume,
                                  on_resume, connection);
    return sd_event_source_set_enabled(connection->resume, SD_EVENT_ONESHOT);
}

static int update_events(struct connection *connection)
{
    int ret = update_dma_timer(connection);

    if (ret >= 0)
        ret = update_resume(connection);

    if (ret < 0)
        return ret;
    if (!connection->handshake_timer_off && vu_session_negotiated(connection->session)) {
        ret = sd_event_source_set_enabled(connection->endpoint->handshake_timer, SD_EVENT_OFF);
        if (ret < 0)
            return ret;
        vu_loop_changed(connection->endpoint->loop);
        connection->handshake_timer_off = true;
    }
    for (int channel = 0; channel < 2; channel++) {
        uint32_t events = 0;

        if (connection->watches[channel].loop == NULL)
            continue;
        if (vu_session_ready(connection->session) && !input_blocked(connection, channel))
            events |= EPOLLIN;
        if (vu_output_queue_pending(vu_session_output(connection->session, channel)) > 0)
            events |= EPOLLOUT;
        ret = vu_loop_socket_set_events(&connection->watches[channel], events);
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

/* Handles input of `channel` (reading it when `readable`), or of both channels from their
 * buffers when `channel` is -1, then sends what is ready; drops the client on failure. */
static void connection_work(struct connection *connection, int channel, uint32_t revents)
{
    struct vu_device *device = connection->endpoint->device;
    struct vu_device *previous = vu_fault_guard_enter(device);
    int ret = 0;

    /* A command that waited for the device to quiesce goes first, once it may. */
    vu_session_run_held(connection->session);
    if (channel < 0) {
        for (int i = 0; i < 2 && ret >= 0; i++)
            if (connection->inputs[i].buffer != NULL)
                ret = process_input(connection, i, false);
    } else if (revents & EPOLLIN) {
        ret = process_input(connection, channel, true);
    }
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
}

/* Requests a polling endpoint serves in one wake-up before it lets the loop run (a host's
 * health checks, other devices of a worker): then the loop comes straight back. */
#define POLL_REQUESTS_PER_WAKEUP 256

static void on_socket_ready(struct vu_loop_socket *socket, uint32_t revents)
{
    struct connection *connection = socket->userdata;
    struct vu_endpoint *endpoint = connection->endpoint;
    int channel = socket == &connection->watches[0] ? 0 : 1;
    int fd = socket->fd;
    uint64_t deadline;
    unsigned served = 0;

    connection_work(connection, channel, revents);
    if (endpoint->poll_usec == 0 || !(revents & EPOLLIN))
        return;
    /*
     * Polling (poll_us): rather than sleep in the loop and pay a wake-up for the next request
     * (tens of microseconds when client and device run on different CPUs), look again for
     * up to poll_usec after each one. The client may go meanwhile: the connection is then
     * gone, and so is this loop.
     */
    deadline = vu_monotonic_usec() + endpoint->poll_usec;
    /* Not while replies cannot leave (the client does not read them): the loop waits for
     * room then, rather than this loop reading requests it cannot answer. */
    while (endpoint->connection == connection && served < POLL_REQUESTS_PER_WAKEUP &&
           !vu_session_holding(connection->session) && vu_session_ready(connection->session)) {
        struct pollfd ready = {.fd = fd, .events = POLLIN};

        if (poll(&ready, 1, 0) > 0) {
            connection_work(connection, channel,
                            (ready.revents & POLLIN ? EPOLLIN : 0) |
                                (ready.revents & POLLHUP ? EPOLLHUP : 0) |
                                (ready.revents & POLLERR ? EPOLLERR : 0));
            deadline = vu_monotonic_usec() + endpoint->poll_usec;
            served++;
        } else if (vu_monotonic_usec() >= deadline) {
            break;
        }
    }
}

void vu_endpoint_set_poll(struct vu_endpoint *endpoint, uint64_t poll_usec)
{
    endpoint->poll_usec = poll_usec;
}

static int on_resume(sd_event_source *source, void *userdata)
{
    connection_work(userdata, -1, 0);
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
    connection->inputs[0].buffer = malloc(VU_MAX_MESSAGE_SIZE);
    if (connection->inputs[0].buffer == NULL) {
        ret = -ENOMEM;
        goto fail;
    }
    ret = vu_session_new(endpoint->device, &connection->session);
    if (ret < 0)
        goto fail;
    vu_session_set_dma_chunk_size(connection->session, endpoint->dma_chunk_size);
    ret = vu_loop_socket_add(endpoint->loop, &connection->watches[0], fd, EPOLLIN, on_socket_ready,
                             connection);
    if (ret < 0)
        goto fail;
    if (endpoint->handshake_timeout_usec > 0) {
        if (endpoint->handshake_timer == NULL)
            ret = sd_event_add_time_relative(
                vu_loop_event(endpoint->loop), &endpoint->handshake_timer, CLOCK_MONOTONIC,
                endpoint->handshake_timeout_usec, 0, on_handshake_timeout, endpoint);
        else
            ret = sd_event_source_set_time_relative(endpoint->handshake_timer,
                                                    endpoint->handshake_timeout_usec);
        if (ret >= 0)
            ret = sd_event_source_set_enabled(endpoint->handshake_timer, SD_EVENT_ONESHOT);
        if (ret < 0) {
            vu_loop_socket_remove(&connection->watches[0]);
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
    free(connection->inputs[0].buffer);
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
        ret = sd_event_add_time_relative(vu_loop_event(endpoint->loop), &endpoint->accept_retry,
                                         CLOCK_MONOTONIC, ACCEPT_BACKOFF_USEC, 0, on_accept_retry,
                                         endpoint);
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
    int client, ret;

    if (vu_device_detaching(endpoint->device)) {
        /* The last client's memory is still in use: the next one waits in the backlog
         * until the device has quiesced (on_quiesced listens again). */
        sd_event_source_set_enabled(endpoint->listen_source, SD_EVENT_OFF);
        return 0;
    }
    client = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
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

/* The device's quiesce is done: a departed client's memory goes, a new client may come,
 * a held command runs. */
static int on_quiesced(sd_event_source *source, void *userdata)
{
    struct vu_endpoint *endpoint = userdata;
    struct vu_device *previous = vu_fault_guard_enter(endpoint->device);

    /* Done: no report of a slow quiesce is due any more. */
    if (endpoint->quiesce_watch != NULL)
        sd_event_source_set_enabled(endpoint->quiesce_watch, SD_EVENT_OFF);
    if (vu_device_detaching(endpoint->device) && vu_device_quiesce_done(endpoint->device)) {
        vu_device_finish_detach(endpoint->device);
        sd_event_source_set_enabled(endpoint->listen_source, SD_EVENT_ON);
    }
    if (endpoint->connection != NULL)
        connection_work(endpoint->connection, -1, 0);
    /* A quiesce nothing waits for any more (its client left with no memory mapped, or a
     * control-plane reset was refused as busy) ends here. */
    if (!vu_device_detaching(endpoint->device) &&
        (endpoint->connection == NULL || !vu_session_holding(endpoint->connection->session)))
        vu_device_resume(endpoint->device);
    vu_fault_guard_enter(previous);
    return 0;
}

/* sd-event's default accuracy (250 ms) would blur the first report of a short warning. */
#define QUIESCE_WATCH_ACCURACY_USEC 10000

static int on_quiesce_watch(sd_event_source *source, uint64_t usec, void *userdata)
{
    struct vu_endpoint *endpoint = userdata;
    struct vu_device *device = endpoint->device;
    uint64_t waited = vu_monotonic_usec() - endpoint->quiesce_began_usec;

    if (vu_device_quiesce_done(device))
        return 0;
    vu_log(VFIO_USERD_LOG_WARNING, device->name,
           "the device (plugin %s) has not finished quiescing after %.1f s; %s waits for it",
           device->plugin->name, (double)waited / 1e6,
           vu_device_detaching(device) ? "the next client" : "its client's request");
    endpoint->quiesce_next_usec = endpoint->quiesce_next_usec < VU_ENDPOINT_QUIESCE_WARNING_MAX / 2
                                      ? endpoint->quiesce_next_usec * 2
                                      : VU_ENDPOINT_QUIESCE_WARNING_MAX;
    if (sd_event_source_set_time_relative(source, endpoint->quiesce_next_usec) >= 0)
        sd_event_source_set_enabled(source, SD_EVENT_ONESHOT);
    return 0;
}

void vu_endpoint_quiesce_waiting(struct vu_endpoint *endpoint)
{
    uint64_t due;
    int ret;

    endpoint->quiesce_began_usec = vu_monotonic_usec();
    endpoint->quiesce_next_usec = endpoint->quiesce_warning_usec;
    /* From the clock, not sd_event_now(): a client's request is served outside sd-event,
     * whose time is that of its last pass, which may be long past. */
    due = endpoint->quiesce_began_usec + endpoint->quiesce_next_usec;
    if (endpoint->quiesce_watch == NULL)
        ret = sd_event_add_time(vu_loop_event(endpoint->loop), &endpoint->quiesce_watch,
                                CLOCK_MONOTONIC, due, QUIESCE_WATCH_ACCURACY_USEC, on_quiesce_watch,
                                endpoint);
    else
        ret = sd_event_source_set_time(endpoint->quiesce_watch, due);
    if (ret >= 0)
        ret = sd_event_source_set_enabled(endpoint->quiesce_watch, SD_EVENT_ONESHOT);
    vu_loop_changed(endpoint->loop);
    if (ret < 0)
        vu_log(VFIO_USERD_LOG_DEBUG, endpoint->device->name, "no watch on the quiesce: %s",
               strerror(-ret));
}

void vu_endpoint_set_quiesce_warning(struct vu_endpoint *endpoint, uint64_t usec)
{
    endpoint->quiesce_warning_usec = usec;
}

void vu_endpoint_quiesced(struct vu_endpoint *endpoint)
{
    vu_loop_changed(endpoint->loop);
    if (sd_event_source_set_enabled(endpoint->quiesced_source, SD_EVENT_ONESHOT) < 0)
        vu_log(VFIO_USERD_LOG_ERR, endpoint->device->name,
               "cannot schedule the end of a quiesce; the client's request stays waiting");
}

int vu_endpoint_new(struct vu_device *device, struct vu_loop *loop, int listen_fd,
                    struct vu_endpoint **result)
{
    struct vu_endpoint *endpoint = calloc(1, sizeof(*endpoint));
    sd_event *event = vu_loop_event(loop);
    int ret;

    if (endpoint == NULL) {
        close(listen_fd);
        return -ENOMEM;
    }
    endpoint->device = device;
    endpoint->loop = vu_loop_ref(loop);
    endpoint->listen_fd = listen_fd;
    endpoint->dma_timeout_usec = VU_ENDPOINT_DMA_TIMEOUT_USEC;
    endpoint->dma_chunk_size = VU_DMA_CHUNK_SIZE_DEFAULT;
    endpoint->handshake_timeout_usec = VU_ENDPOINT_HANDSHAKE_TIMEOUT_USEC;
    endpoint->quiesce_warning_usec = VU_ENDPOINT_QUIESCE_WARNING_USEC;
    endpoint->accept_log = (struct vu_log_ratelimit)VU_LOG_RATELIMIT_INIT(
        CONNECTION_LOG_INTERVAL_USEC, ACCEPT_LOG_BURST);
    endpoint->connection_log = (struct vu_log_ratelimit)VU_LOG_RATELIMIT_INIT(
        CONNECTION_LOG_INTERVAL_USEC, CONNECTION_LOG_BURST);
    ret = sd_event_add_io(event, &endpoint->listen_source, listen_fd, EPOLLIN, on_listen_event,
                          endpoint);
    if (ret >= 0)
        ret = sd_event_add_defer(event, &endpoint->quiesced_source, on_quiesced, endpoint);
    if (ret >= 0)
        ret = sd_event_source_set_enabled(endpoint->quiesced_source, SD_EVENT_OFF);
    for (uint32_t i = 0; ret >= 0 && i < device->ioeventfd_count; i++)
        ret = sd_event_add_io(event, &endpoint->ioeventfd_sources[i], device->ioeventfds[i].fd,
                              EPOLLIN, on_ioeventfd, endpoint);
    /* The plugin's own descriptors, timers and post() queue (ABI 1.1) join this loop. */
    if (ret >= 0)
        ret = vu_device_attach_loop(device, loop, endpoint);
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
    if (endpoint->device->endpoint == endpoint)
        vu_device_detach_loop(endpoint->device);
    for (uint32_t i = 0; i < VFIO_USERD_MAX_IOEVENTFDS; i++)
        sd_event_source_disable_unref(endpoint->ioeventfd_sources[i]);
    sd_event_source_disable_unref(endpoint->accept_retry);
    sd_event_source_disable_unref(endpoint->quiesced_source);
    sd_event_source_disable_unref(endpoint->quiesce_watch);
    sd_event_source_disable_unref(endpoint->handshake_timer);
    sd_event_source_disable_unref(endpoint->listen_source);
    if (endpoint->listen_fd >= 0)
        close(endpoint->listen_fd);
    vu_loop_changed(endpoint->loop);
    vu_loop_unref(endpoint->loop);
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
