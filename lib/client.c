/*
 * vfio-user client (see client.h): blocking request/reply over an AF_UNIX stream socket,
 * with the server's DMA_READ/DMA_WRITE served while a reply is awaited.
 */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <jansson.h>

#include "client.h"
#include "log.h"

/* The kernel's limit on descriptors in one SCM_RIGHTS message (SCM_MAX_FD). */
#define VU_CLIENT_MAX_FDS 253u
/* Room for VERSION JSON, region capabilities and I/O fd tables even when the client
 * announces a small max_data_xfer_size. */
#define VU_CLIENT_MIN_PAYLOAD (64u * 1024u)
/* A proposal above this would make the per-client buffer unreasonable. */
#define VU_CLIENT_MAX_XFER_SIZE      (1u << 30)
#define VU_CLIENT_DEFAULT_TIMEOUT_MS 5000
/* Servers that keep asking for a larger argsz are given up on after this many tries. */
#define VU_CLIENT_ARGSZ_ATTEMPTS 3
/* errno values are small; anything else in a reply's error field means nothing usable. */
#define VU_CLIENT_MAX_ERRNO 4095u

/* Memory the client serves the server's DMA_READ/DMA_WRITE from. */
struct vu_client_memory {
    uint64_t address;
    uint64_t size;
    uint32_t flags;
    uint8_t *memory;
};

struct vu_client {
    int socket_fd;
    int twin_fd;
    int timeout_ms;
    /* 0, or the error that left the stream out of step: every later call fails. */
    int broken;
    uint16_t message_id;
    uint16_t server_major;
    uint16_t server_minor;
    struct vu_capabilities own;
    struct vu_capabilities session;
    /* One message payload; sized at connect so the data path allocates nothing. */
    uint8_t *buffer;
    size_t buffer_capacity;
    struct vu_client_memory *memory;
    size_t memory_count;
    size_t memory_capacity;
    /* Descriptors received with the message being read. */
    int message_fds[VU_CLIENT_MAX_FDS];
    size_t message_fd_count;
    bool message_fds_lost;
};

static int64_t now_ms(void)
{
    return (int64_t)(vu_monotonic_usec() / 1000);
}

/* A negative deadline never expires. */
static int64_t deadline_after(int timeout_ms)
{
    return timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
}

static int remaining_ms(int64_t deadline)
{
    int64_t left;

    if (deadline < 0)
        return -1;
    left = deadline - now_ms();
    if (left <= 0)
        return 0;
    return left > INT_MAX ? INT_MAX : (int)left;
}

static int wait_fd(int fd, short events, int64_t deadline)
{
    struct pollfd pfd = {.fd = fd, .events = events};
    int ret;

    for (;;) {
        ret = poll(&pfd, 1, remaining_ms(deadline));
        if (ret > 0)
            return 0;
        if (ret == 0)
            return -ETIMEDOUT;
        if (errno != EINTR)
            return -errno;
    }
}

static void mark_broken(struct vu_client *client, int error)
{
    if (client->broken == 0)
        client->broken = error;
}

static void close_message_fds(struct vu_client *client)
{
    for (size_t i = 0; i < client->message_fd_count; i++)
        close(client->message_fds[i]);
    client->message_fd_count = 0;
    client->message_fds_lost = false;
}

/* Hands the message's descriptors to the caller, up to `capacity`; closes the rest. */
static void take_message_fds(struct vu_client *client, int *fds, size_t capacity, size_t *count)
{
    size_t taken = 0;

    for (size_t i = 0; i < client->message_fd_count; i++) {
        if (fds != NULL && taken < capacity)
            fds[taken++] = client->message_fds[i];
        else
            close(client->message_fds[i]);
    }
    client->message_fd_count = 0;
    client->message_fds_lost = false;
    if (count != NULL)
        *count = taken;
}

static void collect_fds(struct vu_client *client, struct msghdr *message)
{
    for (struct cmsghdr *cmsg = CMSG_FIRSTHDR(message); cmsg != NULL;
         cmsg = CMSG_NXTHDR(message, cmsg)) {
        size_t count;

        if (cmsg->cmsg_level != SOL_SOCKET || cmsg->cmsg_type != SCM_RIGHTS)
            continue;
        count = (cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < count; i++) {
            int fd;

            memcpy(&fd, CMSG_DATA(cmsg) + i * sizeof(int), sizeof(fd));
            if (client->message_fd_count < VU_CLIENT_MAX_FDS) {
                client->message_fds[client->message_fd_count++] = fd;
            } else {
                close(fd);
                client->message_fds_lost = true;
            }
        }
    }
    if (message->msg_flags & MSG_CTRUNC)
        client->message_fds_lost = true;
}

/* Reads exactly `length` bytes, gathering any descriptors that come along. */
static int receive_exact(struct vu_client *client, int fd, void *data, size_t length,
                         int64_t deadline)
{
    size_t done = 0;
    int ret;

    while (done < length) {
        union {
            struct cmsghdr align;
            char buffer[CMSG_SPACE(sizeof(int) * VU_CLIENT_MAX_FDS)];
        } control;
        struct iovec iov = {.iov_base = (uint8_t *)data + done, .iov_len = length - done};
        struct msghdr message = {
            .msg_iov = &iov,
            .msg_iovlen = 1,
            .msg_control = control.buffer,
            .msg_controllen = sizeof(control.buffer),
        };
        ssize_t n = recvmsg(fd, &message, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);

        if (n > 0) {
            collect_fds(client, &message);
            done += (size_t)n;
            continue;
        }
        if (n == 0)
            return -ECONNRESET;
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return -errno;
        ret = wait_fd(fd, POLLIN, deadline);
        if (ret < 0)
            return ret;
    }
    return 0;
}

/*
 * Reads one whole message from `fd` (which the caller saw readable) into the buffer. Any
 * failure leaves the stream out of step, except descriptors lost to truncation, which only
 * spoil this message.
 */
static int read_message(struct vu_client *client, int fd, int64_t deadline,
                        struct vu_header *header, size_t *payload_length)
{
    uint8_t raw[VU_HEADER_SIZE];
    size_t length;
    int ret;

    close_message_fds(client);
    ret = receive_exact(client, fd, raw, sizeof(raw), deadline);
    if (ret < 0)
        goto broken;
    if (vu_wire_decode_header(raw, sizeof(raw), header) < 0) {
        ret = -EPROTO;
        goto broken;
    }
    length = header->message_size - VU_HEADER_SIZE;
    if (length > client->buffer_capacity) {
        ret = -EPROTO;
        goto broken;
    }
    ret = receive_exact(client, fd, client->buffer, length, deadline);
    if (ret < 0)
        goto broken;
    if (client->message_fds_lost) {
        close_message_fds(client);
        return -EPROTO;
    }
    *payload_length = length;
    return 0;

broken:
    close_message_fds(client);
    mark_broken(client, ret);
    return ret;
}

/* Sends the pieces in `iov` as one message; `iov` is consumed. */
static int send_iov(struct vu_client *client, int fd, struct iovec *iov, int iov_count,
                    const int *fds, size_t fd_count, int64_t deadline)
{
    union {
        struct cmsghdr align;
        char buffer[CMSG_SPACE(sizeof(int) * VU_CLIENT_MAX_FDS)];
    } control;
    bool sent_any = false;
    int ret;

    if (fd_count > VU_CLIENT_MAX_FDS)
        return -EINVAL;
    while (iov_count > 0) {
        struct msghdr message = {.msg_iov = iov, .msg_iovlen = (size_t)iov_count};
        ssize_t n;

        /* Descriptors travel with the first bytes only. */
        if (!sent_any && fd_count > 0) {
            struct cmsghdr *cmsg;

            memset(&control, 0, sizeof(control));
            message.msg_control = control.buffer;
            message.msg_controllen = CMSG_SPACE(sizeof(int) * fd_count);
            cmsg = CMSG_FIRSTHDR(&message);
            cmsg->cmsg_level = SOL_SOCKET;
            cmsg->cmsg_type = SCM_RIGHTS;
            cmsg->cmsg_len = CMSG_LEN(sizeof(int) * fd_count);
            memcpy(CMSG_DATA(cmsg), fds, sizeof(int) * fd_count);
        }
        n = sendmsg(fd, &message, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                ret = -errno;
                goto failed;
            }
            ret = wait_fd(fd, POLLOUT, deadline);
            if (ret < 0)
                goto failed;
            continue;
        }
        sent_any = true;
        while (iov_count > 0 && (size_t)n >= iov[0].iov_len) {
            n -= (ssize_t)iov[0].iov_len;
            iov++;
            iov_count--;
        }
        if (iov_count > 0) {
            iov[0].iov_base = (uint8_t *)iov[0].iov_base + n;
            iov[0].iov_len -= (size_t)n;
        }
    }
    return 0;

failed:
    /* Nothing went out: the stream is still whole and the caller may try again. */
    if (sent_any || (ret != -ETIMEDOUT && ret != -ENOBUFS && ret != -ENOMEM))
        mark_broken(client, ret);
    return ret;
}

/* Sends a message of a header and up to three payload pieces. */
static int send_message(struct vu_client *client, int fd, uint16_t message_id, uint16_t command,
                        uint32_t flags, uint32_t error, const struct iovec *payload,
                        int payload_count, const int *fds, size_t fd_count, int64_t deadline)
{
    uint8_t header[VU_HEADER_SIZE];
    struct iovec iov[4];
    size_t length = 0;

    if (payload_count < 0 || payload_count > 3)
        return -EINVAL;
    iov[0] = (struct iovec){.iov_base = header, .iov_len = sizeof(header)};
    for (int i = 0; i < payload_count; i++) {
        if (payload[i].iov_len > UINT32_MAX - VU_HEADER_SIZE - length)
            return -EMSGSIZE;
        length += payload[i].iov_len;
        iov[i + 1] = payload[i];
    }
    vu_wire_encode_header(header, message_id, command, (uint32_t)(VU_HEADER_SIZE + length), flags,
                          error);
    return send_iov(client, fd, iov, payload_count + 1, fds, fd_count, deadline);
}

static int send_error_reply(struct vu_client *client, int fd, const struct vu_header *request,
                            int error, int64_t deadline)
{
    return send_message(client, fd, request->message_id, request->command,
                        VU_FLAGS_TYPE_REPLY | VU_FLAGS_ERROR, (uint32_t)error, NULL, 0, NULL, 0,
                        deadline);
}

/*
 * The registered memory holding all of [address, address + count) with `flag`, or NULL
 * with *error EFAULT (not mapped) or EPERM (mapped without that permission).
 */
static uint8_t *find_memory(struct vu_client *client, uint64_t address, uint64_t count,
                            uint32_t flag, int *error)
{
    *error = EFAULT;
    for (size_t i = 0; i < client->memory_count; i++) {
        const struct vu_client_memory *entry = &client->memory[i];

        if (address < entry->address || address - entry->address > entry->size ||
            count > entry->size - (address - entry->address))
            continue;
        if (entry->flags & flag)
            return entry->memory + (address - entry->address);
        *error = EPERM;
    }
    return NULL;
}

static int serve_dma_read(struct vu_client *client, int fd, const struct vu_header *header,
                          size_t length, int64_t deadline)
{
    struct vu_dma_access access;
    struct iovec payload[2];
    uint8_t *memory;
    int error = EINVAL;

    if (length != sizeof(access))
        goto fail;
    memcpy(&access, client->buffer, sizeof(access));
    if (access.count > client->own.max_data_xfer_size)
        goto fail;
    memory = find_memory(client, access.address, access.count, VU_DMA_FLAG_READABLE, &error);
    if (memory == NULL)
        goto fail;
    if (header->flags & VU_FLAGS_NO_REPLY)
        return 0;
    payload[0] = (struct iovec){.iov_base = &access, .iov_len = sizeof(access)};
    payload[1] = (struct iovec){.iov_base = memory, .iov_len = access.count};
    return send_message(client, fd, header->message_id, header->command, VU_FLAGS_TYPE_REPLY, 0,
                        payload, 2, NULL, 0, deadline);

fail:
    if (header->flags & VU_FLAGS_NO_REPLY)
        return 0;
    return send_error_reply(client, fd, header, error, deadline);
}

/* The reply carries address and count as 8 bytes each, like the request; servers accept
 * this and the spec table's 4-byte count. */
static int serve_dma_write(struct vu_client *client, int fd, const struct vu_header *header,
                           size_t length, int64_t deadline)
{
    struct vu_dma_access access;
    struct iovec payload;
    uint8_t *memory;
    int error = EINVAL;

    if (length < sizeof(access))
        goto fail;
    memcpy(&access, client->buffer, sizeof(access));
    if (access.count != length - sizeof(access) || access.count > client->own.max_data_xfer_size)
        goto fail;
    memory = find_memory(client, access.address, access.count, VU_DMA_FLAG_WRITABLE, &error);
    if (memory == NULL)
        goto fail;
    memcpy(memory, client->buffer + sizeof(access), access.count);
    if (header->flags & VU_FLAGS_NO_REPLY)
        return 0;
    payload = (struct iovec){.iov_base = &access, .iov_len = sizeof(access)};
    return send_message(client, fd, header->message_id, header->command, VU_FLAGS_TYPE_REPLY, 0,
                        &payload, 1, NULL, 0, deadline);

fail:
    if (header->flags & VU_FLAGS_NO_REPLY)
        return 0;
    return send_error_reply(client, fd, header, error, deadline);
}

/* Answers a server-to-client command that read_message left in the buffer. */
static int serve_command(struct vu_client *client, int fd, const struct vu_header *header,
                         size_t length, int64_t deadline)
{
    close_message_fds(client);
    switch (header->command) {
    case VU_COMMAND_DMA_READ:
        return serve_dma_read(client, fd, header, length, deadline);
    case VU_COMMAND_DMA_WRITE:
        return serve_dma_write(client, fd, header, length, deadline);
    default:
        if (header->flags & VU_FLAGS_NO_REPLY)
            return 0;
        return send_error_reply(client, fd, header, ENOTSUP, deadline);
    }
}

/* Reads and serves one message from the twin socket; returns 1 if it was a command. */
static int serve_twin(struct vu_client *client, int64_t deadline)
{
    struct vu_header header;
    size_t length;
    uint8_t byte;
    int ret;

    /*
     * A server that closes its end between messages sends no more commands; the main
     * socket carries on, and its own end says whether the server is gone.
     */
    if (recv(client->twin_fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT) == 0) {
        close(client->twin_fd);
        client->twin_fd = -1;
        return 0;
    }
    ret = read_message(client, client->twin_fd, deadline, &header, &length);
    if (ret < 0)
        return ret;
    /* Only commands belong on the twin socket; a stray reply answers nothing. */
    if ((header.flags & VU_FLAGS_TYPE_MASK) != VU_FLAGS_TYPE_COMMAND) {
        close_message_fds(client);
        return 0;
    }
    ret = serve_command(client, client->twin_fd, &header, length, deadline);
    return ret < 0 ? ret : 1;
}

/*
 * Waits for the next reply on the main socket, serving commands meanwhile. On success the
 * payload is in the buffer and its descriptors in message_fds. A timeout with nothing read
 * leaves the stream whole.
 */
static int wait_reply(struct vu_client *client, int64_t deadline, struct vu_header *header,
                      size_t *length)
{
    int ret;

    for (;;) {
        struct pollfd pfds[2] = {
            {.fd = client->socket_fd, .events = POLLIN},
            {.fd = client->twin_fd, .events = POLLIN},
        };
        nfds_t count = client->twin_fd >= 0 ? 2 : 1;

        ret = poll(pfds, count, remaining_ms(deadline));
        if (ret < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (ret == 0)
            return -ETIMEDOUT;
        /* `timeout_ms` bounds the wait for a request; serving one that has begun to
         * arrive gets the client's full timeout, as any other exchange does. */
        if (count == 2 && pfds[1].revents != 0) {
            ret = serve_twin(client, deadline_after(client->timeout_ms));
            if (ret < 0)
                return ret;
            continue;
        }
        if (pfds[0].revents == 0)
            continue;
        ret = read_message(client, client->socket_fd, deadline, header, length);
        if (ret < 0)
            return ret;
        if ((header->flags & VU_FLAGS_TYPE_MASK) == VU_FLAGS_TYPE_REPLY)
            return 0;
        ret = serve_command(client, client->socket_fd, header, *length, deadline);
        if (ret < 0)
            return ret;
    }
}

static int reply_error(const struct vu_header *header)
{
    if (header->error == 0 || header->error > VU_CLIENT_MAX_ERRNO)
        return -EIO;
    return -(int)header->error;
}

/*
 * One request and its reply. On success *reply points into the client's buffer (valid
 * until the next call) and the reply's descriptors went to `fds` (extras closed). An error
 * reply is -error, a mismatched or malformed one -EPROTO.
 */
static int transact(struct vu_client *client, uint16_t command, const struct iovec *payload,
                    int payload_count, const int *fds, size_t fd_count, const uint8_t **reply,
                    size_t *reply_length, int *reply_fds, size_t reply_fd_capacity,
                    size_t *reply_fd_count)
{
    int64_t deadline = deadline_after(client->timeout_ms);
    struct vu_header header;
    uint16_t message_id;
    size_t length;
    int ret;

    if (reply_fd_count != NULL)
        *reply_fd_count = 0;
    if (client->broken != 0)
        return -ENOTCONN;
    message_id = client->message_id++;
    ret = send_message(client, client->socket_fd, message_id, command, VU_FLAGS_TYPE_COMMAND, 0,
                       payload, payload_count, fds, fd_count, deadline);
    if (ret < 0)
        return ret;
    ret = wait_reply(client, deadline, &header, &length);
    if (ret < 0) {
        /* A late reply would answer the wrong request. */
        mark_broken(client, ret);
        return ret;
    }
    if (header.message_id != message_id || header.command != command) {
        ret = -EPROTO;
        goto out;
    }
    if (header.flags & VU_FLAGS_ERROR) {
        /* The spec allows nothing but the header with an error. */
        ret = length == 0 ? reply_error(&header) : -EPROTO;
        goto out;
    }
    *reply = client->buffer;
    *reply_length = length;
    take_message_fds(client, reply_fds, reply_fd_capacity, reply_fd_count);
    return 0;

out:
    close_message_fds(client);
    return ret;
}

static int ensure_buffer(struct vu_client *client, uint32_t max_data_xfer_size)
{
    size_t capacity =
        max_data_xfer_size > VU_CLIENT_MIN_PAYLOAD ? max_data_xfer_size : VU_CLIENT_MIN_PAYLOAD;
    uint8_t *buffer;

    capacity += VU_MESSAGE_OVERHEAD;
    if (capacity == client->buffer_capacity)
        return 0;
    buffer = malloc(capacity);
    if (buffer == NULL)
        return -ENOMEM;
    free(client->buffer);
    client->buffer = buffer;
    client->buffer_capacity = capacity;
    return 0;
}

void vu_client_options_default(struct vu_client_options *options)
{
    *options = (struct vu_client_options){
        .proposal =
            {
                .max_msg_fds = 16,
                .max_data_xfer_size = VU_DEFAULT_MAX_DATA_XFER_SIZE,
                .max_dma_maps = VU_DEFAULT_MAX_DMA_MAPS,
                .pgsizes = VU_DEFAULT_PGSIZES,
                .write_multiple = true,
                .twin_socket = false,
            },
        .major = VU_VERSION_MAJOR,
        .minor = VU_VERSION_MINOR,
        .send_json = true,
        .timeout_ms = VU_CLIENT_DEFAULT_TIMEOUT_MS,
    };
}

int vu_client_attach(int socket_fd, struct vu_client **client)
{
    struct vu_client_options options;
    struct vu_client *new_client = NULL;
    int type;
    socklen_t type_length = sizeof(type);
    int ret;

    *client = NULL;
    if (getsockopt(socket_fd, SOL_SOCKET, SO_TYPE, &type, &type_length) < 0) {
        ret = -errno;
        goto out;
    }
    if (type != SOCK_STREAM) {
        ret = -EINVAL;
        goto out;
    }
    new_client = calloc(1, sizeof(*new_client));
    if (new_client == NULL) {
        ret = -ENOMEM;
        goto out;
    }
    vu_client_options_default(&options);
    new_client->socket_fd = socket_fd;
    new_client->twin_fd = -1;
    new_client->timeout_ms = options.timeout_ms;
    new_client->own = options.proposal;
    vu_capabilities_defaults(&new_client->session);
    ret = ensure_buffer(new_client, new_client->own.max_data_xfer_size);
    if (ret < 0)
        goto out;
    *client = new_client;
    return 0;

out:
    if (new_client != NULL) {
        free(new_client->buffer);
        free(new_client);
    }
    close(socket_fd);
    return ret;
}

int vu_client_connect_raw(const char *socket_path, struct vu_client **client)
{
    struct sockaddr_un address = {.sun_family = AF_UNIX};
    int fd = -1;
    int ret;

    *client = NULL;
    if (strlen(socket_path) >= sizeof(address.sun_path))
        return -ENAMETOOLONG;
    strcpy(address.sun_path, socket_path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (connect(fd, (struct sockaddr *)&address, sizeof(address)) < 0) {
        int error = 0;
        socklen_t error_length = sizeof(error);

        /* An interrupted connect completes in the background. */
        if (errno != EINTR) {
            ret = -errno;
            goto out;
        }
        ret = wait_fd(fd, POLLOUT, -1);
        if (ret < 0)
            goto out;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &error_length) < 0) {
            ret = -errno;
            goto out;
        }
        if (error != 0) {
            ret = -error;
            goto out;
        }
    }
    return vu_client_attach(fd, client);

out:
    close(fd);
    return ret;
}

/* Finds capabilities.twin_socket.fd_index in the VERSION reply JSON; -1 if absent. */
static int twin_socket_fd_index(const char *json, size_t length, long *fd_index)
{
    json_t *root, *twin, *index;
    int ret = 0;

    *fd_index = -1;
    while (length > 0 && json[length - 1] == '\0')
        length--;
    root = json_loadb(json, length, 0, NULL);
    if (root == NULL)
        return -EPROTO;
    twin = json_object_get(json_object_get(root, "capabilities"), "twin_socket");
    index = json_object_get(twin, "fd_index");
    if (index != NULL) {
        if (!json_is_integer(index) || json_integer_value(index) < 0 ||
            json_integer_value(index) >= (json_int_t)VU_CLIENT_MAX_FDS)
            ret = -EPROTO;
        else
            *fd_index = (long)json_integer_value(index);
    }
    json_decref(root);
    return ret;
}

static bool is_socket(int fd)
{
    struct stat status;

    return fstat(fd, &status) == 0 && S_ISSOCK(status.st_mode);
}

int vu_client_negotiate(struct vu_client *client, const struct vu_client_options *options)
{
    struct vu_client_options defaults;
    struct vu_capabilities session;
    struct vu_version version, reply_version;
    struct iovec payload[2];
    int fds[VU_CLIENT_MAX_FDS];
    size_t fd_count = 0;
    const uint8_t *reply;
    size_t length;
    char *json = NULL;
    long fd_index = -1;
    int ret;

    if (options == NULL) {
        vu_client_options_default(&defaults);
        options = &defaults;
    }
    /* Never announce more than a message can bring: the kernel's limit and the buffer. */
    if (options->proposal.max_msg_fds > VU_CLIENT_MAX_FDS ||
        options->proposal.max_data_xfer_size == 0 ||
        options->proposal.max_data_xfer_size > VU_CLIENT_MAX_XFER_SIZE)
        return -EINVAL;
    ret = ensure_buffer(client, options->proposal.max_data_xfer_size);
    if (ret < 0)
        return ret;
    client->own = options->proposal;
    client->timeout_ms = options->timeout_ms;

    version = (struct vu_version){.major = options->major, .minor = options->minor};
    payload[0] = (struct iovec){.iov_base = &version, .iov_len = sizeof(version)};
    payload[1] = (struct iovec){.iov_base = NULL, .iov_len = 0};
    if (options->send_json) {
        json = vu_wire_format_capabilities(&options->proposal, -1);
        if (json == NULL)
            return -ENOMEM;
        payload[1] = (struct iovec){.iov_base = json, .iov_len = strlen(json) + 1};
    }
    ret = transact(client, VU_COMMAND_VERSION, payload, 2, NULL, 0, &reply, &length, fds,
                   VU_CLIENT_MAX_FDS, &fd_count);
    if (ret < 0)
        goto out;
    if (length < sizeof(reply_version)) {
        ret = -EPROTO;
        goto out;
    }
    memcpy(&reply_version, reply, sizeof(reply_version));
    if (reply_version.major != options->major || reply_version.minor > options->minor) {
        ret = -EPROTO;
        goto out;
    }
    reply += sizeof(reply_version);
    length -= sizeof(reply_version);
    if (vu_wire_parse_capabilities((const char *)reply, length, &session) < 0 ||
        session.max_data_xfer_size == 0 || session.pgsizes == 0) {
        ret = -EPROTO;
        goto out;
    }
    /* The spec: a twin socket is used only if asked for, and a reply that claims one
     * without a usable descriptor must end the connection. */
    if (session.twin_socket) {
        ret = twin_socket_fd_index((const char *)reply, length, &fd_index);
        if (ret < 0)
            goto out;
        if (!options->proposal.twin_socket || fd_index < 0 || (size_t)fd_index >= fd_count ||
            !is_socket(fds[fd_index])) {
            ret = -EPROTO;
            goto out;
        }
        if (client->twin_fd >= 0)
            close(client->twin_fd);
        client->twin_fd = fds[fd_index];
        fds[fd_index] = -1;
    }
    client->session = session;
    client->server_major = reply_version.major;
    client->server_minor = reply_version.minor;
    ret = 0;

out:
    for (size_t i = 0; i < fd_count; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    free(json);
    return ret;
}

int vu_client_connect(const char *socket_path, const struct vu_client_options *options,
                      struct vu_client **client)
{
    struct vu_client *new_client;
    int ret;

    *client = NULL;
    ret = vu_client_connect_raw(socket_path, &new_client);
    if (ret < 0)
        return ret;
    ret = vu_client_negotiate(new_client, options);
    if (ret < 0) {
        vu_client_close(new_client);
        return ret;
    }
    *client = new_client;
    return 0;
}

void vu_client_close(struct vu_client *client)
{
    if (client == NULL)
        return;
    close_message_fds(client);
    if (client->twin_fd >= 0)
        close(client->twin_fd);
    close(client->socket_fd);
    free(client->memory);
    free(client->buffer);
    free(client);
}

int vu_client_socket(const struct vu_client *client)
{
    return client->socket_fd;
}

int vu_client_twin_socket(const struct vu_client *client)
{
    return client->twin_fd;
}

bool vu_client_twin_socket_active(const struct vu_client *client)
{
    return client->twin_fd >= 0;
}

const struct vu_capabilities *vu_client_session(const struct vu_client *client)
{
    return &client->session;
}

uint16_t vu_client_server_major(const struct vu_client *client)
{
    return client->server_major;
}

uint16_t vu_client_server_minor(const struct vu_client *client)
{
    return client->server_minor;
}

void vu_client_set_timeout(struct vu_client *client, int timeout_ms)
{
    client->timeout_ms = timeout_ms;
}

uint16_t vu_client_next_message_id(struct vu_client *client)
{
    return client->message_id++;
}

int vu_client_send(struct vu_client *client, uint16_t message_id, uint16_t command, uint32_t flags,
                   const void *payload, size_t payload_length, const int *fds, size_t fd_count)
{
    struct iovec iov = {.iov_base = (void *)payload, .iov_len = payload_length};

    if (client->broken != 0)
        return -ENOTCONN;
    return send_message(client, client->socket_fd, message_id, command, flags, 0, &iov, 1, fds,
                        fd_count, deadline_after(client->timeout_ms));
}

int vu_client_receive(struct vu_client *client, struct vu_header *header, void *payload,
                      size_t capacity, size_t *payload_length, int *fds, size_t fd_capacity,
                      size_t *fd_count)
{
    size_t length;
    int ret;

    if (fd_count != NULL)
        *fd_count = 0;
    if (payload_length != NULL)
        *payload_length = 0;
    if (client->broken != 0)
        return -ENOTCONN;
    ret = wait_reply(client, deadline_after(client->timeout_ms), header, &length);
    if (ret < 0)
        return ret;
    if (payload_length != NULL)
        *payload_length = length;
    if (length > capacity) {
        close_message_fds(client);
        return -EMSGSIZE;
    }
    if (length > 0)
        memcpy(payload, client->buffer, length);
    take_message_fds(client, fds, fd_capacity, fd_count);
    return 0;
}

int vu_client_request(struct vu_client *client, uint16_t command, const void *payload,
                      size_t payload_length, const int *fds, size_t fd_count, void *reply,
                      size_t reply_capacity, size_t *reply_length, int *reply_fds,
                      size_t reply_fd_capacity, size_t *reply_fd_count)
{
    struct iovec iov = {.iov_base = (void *)payload, .iov_len = payload_length};
    const uint8_t *data;
    size_t length;
    size_t received_fds = 0;
    int ret;

    if (reply_length != NULL)
        *reply_length = 0;
    ret = transact(client, command, &iov, 1, fds, fd_count, &data, &length, reply_fds,
                   reply_fd_capacity, &received_fds);
    if (ret < 0)
        return ret;
    if (length > reply_capacity) {
        for (size_t i = 0; i < received_fds; i++)
            close(reply_fds[i]);
        received_fds = 0;
        ret = -EPROTO;
        goto out;
    }
    if (length > 0)
        memcpy(reply, data, length);
    if (reply_length != NULL)
        *reply_length = length;
out:
    if (reply_fd_count != NULL)
        *reply_fd_count = received_fds;
    return ret;
}

/* A request whose reply must have exactly `expected` bytes, copied to `reply`. */
static int transact_fixed(struct vu_client *client, uint16_t command, const struct iovec *payload,
                          int payload_count, const int *fds, size_t fd_count, void *reply,
                          size_t expected)
{
    const uint8_t *data;
    size_t length;
    int ret;

    ret = transact(client, command, payload, payload_count, fds, fd_count, &data, &length, NULL, 0,
                   NULL);
    if (ret < 0)
        return ret;
    if (length != expected)
        return -EPROTO;
    if (expected > 0)
        memcpy(reply, data, expected);
    return 0;
}

static int add_memory(struct vu_client *client, uint64_t address, uint64_t size, uint32_t flags,
                      void *memory)
{
    if (client->memory_count == client->memory_capacity) {
        size_t capacity = client->memory_capacity > 0 ? client->memory_capacity * 2 : 8;
        struct vu_client_memory *grown =
            reallocarray(client->memory, capacity, sizeof(*client->memory));

        if (grown == NULL)
            return -ENOMEM;
        client->memory = grown;
        client->memory_capacity = capacity;
    }
    client->memory[client->memory_count++] = (struct vu_client_memory){
        .address = address,
        .size = size,
        .flags = flags,
        .memory = memory,
    };
    return 0;
}

static void remove_memory(struct vu_client *client, size_t index)
{
    client->memory[index] = client->memory[--client->memory_count];
}

int vu_client_dma_map_shared(struct vu_client *client, uint64_t address, uint64_t size,
                             uint32_t flags, int fd, uint64_t offset, void *memory)
{
    struct vu_dma_map request = {
        .argsz = sizeof(request),
        .flags = flags,
        .offset = offset,
        .address = address,
        .size = size,
    };
    struct iovec payload = {.iov_base = &request, .iov_len = sizeof(request)};
    int ret;

    if (size == 0 || address > UINT64_MAX - size)
        return -EINVAL;
    /* Registered before sending: the server may read as soon as it has the map. */
    if (memory != NULL) {
        ret = add_memory(client, address, size, flags, memory);
        if (ret < 0)
            return ret;
    }
    ret = transact_fixed(client, VU_COMMAND_DMA_MAP, &payload, 1, fd >= 0 ? &fd : NULL,
                         fd >= 0 ? 1 : 0, NULL, 0);
    if (ret < 0 && memory != NULL)
        remove_memory(client, client->memory_count - 1);
    return ret;
}

int vu_client_dma_map(struct vu_client *client, uint64_t address, uint64_t size, uint32_t flags,
                      int fd, uint64_t offset)
{
    return vu_client_dma_map_shared(client, address, size, flags, fd, offset, NULL);
}

int vu_client_dma_map_memory(struct vu_client *client, uint64_t address, uint64_t size,
                             uint32_t flags, void *memory)
{
    if (memory == NULL)
        return -EINVAL;
    return vu_client_dma_map_shared(client, address, size, flags, -1, 0, memory);
}

int vu_client_dma_unmap(struct vu_client *client, uint64_t address, uint64_t size, uint32_t flags)
{
    struct vu_dma_unmap request = {
        .argsz = sizeof(request),
        .flags = flags,
        .address = address,
        .size = size,
    };
    struct vu_dma_unmap reply;
    struct iovec payload = {.iov_base = &request, .iov_len = sizeof(request)};
    int ret;

    /* The server answers with the entry it was sent. */
    ret = transact_fixed(client, VU_COMMAND_DMA_UNMAP, &payload, 1, NULL, 0, &reply, sizeof(reply));
    if (ret < 0)
        return ret;
    if (reply.address != address || reply.size != size)
        return -EPROTO;
    /* Only now has the server dropped every reference to the range. */
    for (size_t i = client->memory_count; i-- > 0;) {
        if ((flags & VU_DMA_UNMAP_FLAG_ALL) ||
            (client->memory[i].address == address && client->memory[i].size == size))
            remove_memory(client, i);
    }
    return 0;
}

int vu_client_device_info(struct vu_client *client, struct vu_device_info *info)
{
    struct vu_device_info request = {.argsz = sizeof(request)};
    struct iovec payload = {.iov_base = &request, .iov_len = sizeof(request)};
    int ret;

    ret = transact_fixed(client, VU_COMMAND_DEVICE_GET_INFO, &payload, 1, NULL, 0, info,
                         sizeof(*info));
    if (ret < 0)
        return ret;
    return info->argsz >= sizeof(*info) ? 0 : -EPROTO;
}

int vu_client_region_info(struct vu_client *client, uint32_t index, struct vfio_region_info **info,
                          int *fd)
{
    uint32_t argsz = sizeof(struct vfio_region_info);
    struct vfio_region_info fixed;
    int fds[1];
    size_t fd_count = 0;
    int ret = -EPROTO;

    *info = NULL;
    if (fd != NULL)
        *fd = -1;
    for (int attempt = 0; attempt < VU_CLIENT_ARGSZ_ATTEMPTS; attempt++) {
        struct vfio_region_info request = {.argsz = argsz, .index = index};
        struct iovec payload = {.iov_base = &request, .iov_len = sizeof(request)};
        const uint8_t *reply;
        size_t length;

        ret = transact(client, VU_COMMAND_DEVICE_GET_REGION_INFO, &payload, 1, NULL, 0, &reply,
                       &length, fds, 1, &fd_count);
        if (ret < 0)
            goto out;
        ret = -EPROTO;
        if (length < sizeof(fixed) || length > argsz)
            goto out;
        memcpy(&fixed, reply, sizeof(fixed));
        if (fixed.index != index || fixed.argsz < sizeof(fixed))
            goto out;
        /* QEMU's check, made on every reply before it looks at argsz: with CAPS set,
         * cap_offset must point past the fixed part and within argsz. */
        if ((fixed.flags & VFIO_REGION_INFO_FLAG_CAPS) &&
            (fixed.cap_offset < sizeof(fixed) || fixed.cap_offset > fixed.argsz))
            goto out;
        if (fixed.argsz > argsz) {
            /* The capabilities did not fit: ask again with the size the server needs. */
            if (fixed.argsz > client->buffer_capacity)
                goto out;
            argsz = fixed.argsz;
            if (fd_count > 0)
                close(fds[0]);
            fd_count = 0;
            continue;
        }
        if (length != fixed.argsz)
            goto out;
        *info = malloc(length);
        if (*info == NULL) {
            ret = -ENOMEM;
            goto out;
        }
        memcpy(*info, reply, length);
        if (fd != NULL && fd_count > 0) {
            *fd = fds[0];
            fd_count = 0;
        }
        ret = 0;
        goto out;
    }
    ret = -EPROTO;

out:
    if (fd_count > 0)
        close(fds[0]);
    return ret;
}

int vu_client_region_sparse_areas(const struct vfio_region_info *info,
                                  struct vfio_region_sparse_mmap_area **areas, uint32_t *count)
{
    const uint8_t *bytes = (const uint8_t *)info;
    struct vfio_info_cap_header header;
    struct vfio_region_info_cap_sparse_mmap sparse;
    uint32_t total = info->argsz;
    uint32_t offset = info->cap_offset;
    size_t steps = 0, max_steps;

    *areas = NULL;
    *count = 0;
    if (total < sizeof(*info))
        return -EINVAL;
    if (!(info->flags & VFIO_REGION_INFO_FLAG_CAPS))
        return -ENOENT;
    /* More steps than headers fit in the info means the chain loops. */
    max_steps = (total - sizeof(*info)) / sizeof(header) + 1;
    while (offset != 0) {
        if (offset < sizeof(*info) || offset > total || total - offset < sizeof(header) ||
            ++steps > max_steps)
            return -EPROTO;
        memcpy(&header, bytes + offset, sizeof(header));
        if (header.id != VFIO_REGION_INFO_CAP_SPARSE_MMAP) {
            offset = header.next;
            continue;
        }
        if (header.version != 1)
            return -ENOTSUP;
        if (total - offset < sizeof(sparse))
            return -EPROTO;
        memcpy(&sparse, bytes + offset, sizeof(sparse));
        if ((uint64_t)sparse.nr_areas * sizeof(**areas) > total - offset - sizeof(sparse))
            return -EPROTO;
        if (sparse.nr_areas == 0)
            return 0;
        *areas = calloc(sparse.nr_areas, sizeof(**areas));
        if (*areas == NULL)
            return -ENOMEM;
        memcpy(*areas, bytes + offset + sizeof(sparse), sparse.nr_areas * sizeof(**areas));
        for (uint32_t i = 0; i < sparse.nr_areas; i++) {
            const struct vfio_region_sparse_mmap_area *area = &(*areas)[i];

            if (area->offset > info->size || area->size > info->size - area->offset) {
                free(*areas);
                *areas = NULL;
                return -EPROTO;
            }
        }
        *count = sparse.nr_areas;
        return 0;
    }
    return -ENOENT;
}

int vu_client_region_io_fds(struct vu_client *client, uint32_t index,
                            struct vu_region_io_fd **entries, uint32_t *count, int *fds,
                            size_t fd_capacity, size_t *fd_count)
{
    uint32_t argsz = sizeof(struct vu_region_io_fds_request) + 8 * sizeof(struct vu_region_io_fd);
    struct vu_region_io_fds_request fixed;
    int received[VU_CLIENT_MAX_FDS];
    size_t received_count = 0;
    int ret = -EPROTO;

    *entries = NULL;
    *count = 0;
    *fd_count = 0;
    for (int attempt = 0; attempt < VU_CLIENT_ARGSZ_ATTEMPTS; attempt++) {
        struct vu_region_io_fds_request request = {.argsz = argsz, .index = index};
        struct iovec payload = {.iov_base = &request, .iov_len = sizeof(request)};
        const uint8_t *reply;
        size_t length, stride;

        ret = transact(client, VU_COMMAND_DEVICE_GET_REGION_IO_FDS, &payload, 1, NULL, 0, &reply,
                       &length, received, VU_CLIENT_MAX_FDS, &received_count);
        if (ret < 0)
            goto out;
        ret = -EPROTO;
        if (length < sizeof(fixed) || length > argsz)
            goto out;
        memcpy(&fixed, reply, sizeof(fixed));
        if (fixed.index != index || fixed.argsz < sizeof(fixed))
            goto out;
        if (fixed.argsz > argsz) {
            if (fixed.argsz > client->buffer_capacity)
                goto out;
            argsz = fixed.argsz;
            for (size_t i = 0; i < received_count; i++)
                close(received[i]);
            received_count = 0;
            continue;
        }
        if (length != fixed.argsz)
            goto out;
        if (fixed.count == 0) {
            ret = length == sizeof(fixed) ? 0 : -EPROTO;
            goto out;
        }
        /* The spec lets entries grow; each starts with today's layout. */
        stride = (length - sizeof(fixed)) / fixed.count;
        if (stride < sizeof(**entries) || (length - sizeof(fixed)) % fixed.count != 0)
            goto out;
        for (uint32_t i = 0; i < fixed.count; i++) {
            struct vu_region_io_fd entry;

            memcpy(&entry, reply + sizeof(fixed) + i * stride, sizeof(entry));
            if (entry.fd_index >= received_count)
                goto out;
        }
        if (received_count > fd_capacity) {
            ret = -ENOBUFS;
            goto out;
        }
        *entries = calloc(fixed.count, sizeof(**entries));
        if (*entries == NULL) {
            ret = -ENOMEM;
            goto out;
        }
        for (uint32_t i = 0; i < fixed.count; i++)
            memcpy(&(*entries)[i], reply + sizeof(fixed) + i * stride, sizeof(**entries));
        *count = fixed.count;
        if (received_count > 0)
            memcpy(fds, received, received_count * sizeof(int));
        *fd_count = received_count;
        received_count = 0;
        ret = 0;
        goto out;
    }
    ret = -EPROTO;

out:
    for (size_t i = 0; i < received_count; i++)
        close(received[i]);
    return ret;
}

int vu_client_irq_info(struct vu_client *client, uint32_t index, struct vfio_irq_info *info)
{
    struct vfio_irq_info request = {.argsz = sizeof(request), .index = index};
    struct iovec payload = {.iov_base = &request, .iov_len = sizeof(request)};
    int ret;

    ret = transact_fixed(client, VU_COMMAND_DEVICE_GET_IRQ_INFO, &payload, 1, NULL, 0, info,
                         sizeof(*info));
    if (ret < 0)
        return ret;
    return info->argsz >= sizeof(*info) && info->index == index ? 0 : -EPROTO;
}

static int send_set_irqs(struct vu_client *client, uint32_t index, uint32_t flags, uint32_t start,
                         uint32_t count, const int *fds, size_t fd_count, const uint8_t *bools)
{
    size_t data_length = bools != NULL ? count : 0;
    struct vfio_irq_set request = {
        .argsz = (uint32_t)(sizeof(request) + data_length),
        .flags = flags,
        .index = index,
        .start = start,
        .count = count,
    };
    struct iovec payload[2] = {
        {.iov_base = &request, .iov_len = sizeof(request)},
        {.iov_base = (void *)bools, .iov_len = data_length},
    };

    return transact_fixed(client, VU_COMMAND_DEVICE_SET_IRQS, payload, 2, fds, fd_count, NULL, 0);
}

int vu_client_set_irqs(struct vu_client *client, uint32_t index, uint32_t flags, uint32_t start,
                       uint32_t count, const int *eventfds, const uint8_t *bools)
{
    uint32_t data_type = flags & VFIO_IRQ_SET_DATA_TYPE_MASK;
    uint32_t max_fds = client->session.max_msg_fds;
    uint32_t sent = 0;
    int ret;

    if (data_type != VFIO_IRQ_SET_DATA_NONE && data_type != VFIO_IRQ_SET_DATA_BOOL &&
        data_type != VFIO_IRQ_SET_DATA_EVENTFD)
        return -EINVAL;
    if ((eventfds != NULL && data_type != VFIO_IRQ_SET_DATA_EVENTFD) ||
        (bools != NULL && data_type != VFIO_IRQ_SET_DATA_BOOL) ||
        (bools == NULL && data_type == VFIO_IRQ_SET_DATA_BOOL && count > 0))
        return -EINVAL;
    if (count > UINT32_MAX - start || count > UINT32_MAX - VU_MESSAGE_OVERHEAD)
        return -EINVAL;
    if (eventfds == NULL || count == 0)
        return send_set_irqs(client, index, flags, start, count, NULL, 0, bools);

    if (max_fds == 0)
        return -ENOTSUP;
    if (max_fds > VU_CLIENT_MAX_FDS)
        max_fds = VU_CLIENT_MAX_FDS;
    /* Runs of descriptors go in messages of at most max_fds; runs of -1 clear vectors. */
    while (sent < count) {
        bool assign = eventfds[sent] >= 0;
        uint32_t run = 1;

        while (sent + run < count && (eventfds[sent + run] >= 0) == assign &&
               (!assign || run < max_fds))
            run++;
        ret = send_set_irqs(client, index, flags, start + sent, run,
                            assign ? &eventfds[sent] : NULL, assign ? run : 0, NULL);
        if (ret < 0)
            return ret;
        sent += run;
    }
    return 0;
}

/* The largest transfer both sides accept. */
static uint32_t max_transfer(const struct vu_client *client)
{
    return client->own.max_data_xfer_size < client->session.max_data_xfer_size
               ? client->own.max_data_xfer_size
               : client->session.max_data_xfer_size;
}

static bool same_access(const struct vu_region_access *a, const struct vu_region_access *b)
{
    return a->offset == b->offset && a->region == b->region && a->count == b->count;
}

int vu_client_region_read(struct vu_client *client, uint32_t region, uint64_t offset, void *data,
                          uint32_t count)
{
    struct vu_region_access request = {.offset = offset, .region = region, .count = count};
    struct vu_region_access reply_access;
    struct iovec payload = {.iov_base = &request, .iov_len = sizeof(request)};
    const uint8_t *reply;
    size_t length;
    int ret;

    if (count > max_transfer(client))
        return -EINVAL;
    ret = transact(client, VU_COMMAND_REGION_READ, &payload, 1, NULL, 0, &reply, &length, NULL, 0,
                   NULL);
    if (ret < 0)
        return ret;
    if (length != sizeof(reply_access) + (size_t)count)
        return -EPROTO;
    memcpy(&reply_access, reply, sizeof(reply_access));
    if (!same_access(&request, &reply_access))
        return -EPROTO;
    if (count > 0)
        memcpy(data, reply + sizeof(reply_access), count);
    return 0;
}

int vu_client_region_write(struct vu_client *client, uint32_t region, uint64_t offset,
                           const void *data, uint32_t count)
{
    struct vu_region_access request = {.offset = offset, .region = region, .count = count};
    struct vu_region_access reply;
    struct iovec payload[2] = {
        {.iov_base = &request, .iov_len = sizeof(request)},
        {.iov_base = (void *)data, .iov_len = count},
    };
    int ret;

    if (count > max_transfer(client))
        return -EINVAL;
    ret =
        transact_fixed(client, VU_COMMAND_REGION_WRITE, payload, 2, NULL, 0, &reply, sizeof(reply));
    if (ret < 0)
        return ret;
    return same_access(&request, &reply) ? 0 : -EPROTO;
}

int vu_client_region_write_posted(struct vu_client *client, uint32_t region, uint64_t offset,
                                  const void *data, uint32_t count)
{
    struct vu_region_access request = {.offset = offset, .region = region, .count = count};
    struct iovec payload[2] = {
        {.iov_base = &request, .iov_len = sizeof(request)},
        {.iov_base = (void *)data, .iov_len = count},
    };

    if (count > max_transfer(client))
        return -EINVAL;
    if (client->broken != 0)
        return -ENOTCONN;
    return send_message(client, client->socket_fd, client->message_id++, VU_COMMAND_REGION_WRITE,
                        VU_FLAGS_TYPE_COMMAND | VU_FLAGS_NO_REPLY, 0, payload, 2, NULL, 0,
                        deadline_after(client->timeout_ms));
}

int vu_client_region_write_multi(struct vu_client *client,
                                 const struct vu_write_multi_entry *writes, uint64_t count)
{
    struct vu_write_multi request = {.write_count = count};
    struct vu_write_multi reply;
    struct iovec payload[2] = {
        {.iov_base = &request, .iov_len = sizeof(request)},
        {.iov_base = (void *)writes, .iov_len = 0},
    };
    int ret;

    if (!client->session.write_multiple)
        return -ENOTSUP;
    if (count == 0 || count > (UINT32_MAX - VU_MESSAGE_OVERHEAD) / sizeof(*writes))
        return -EINVAL;
    for (uint64_t i = 0; i < count; i++)
        if (writes[i].count > sizeof(writes[i].data))
            return -EINVAL;
    payload[1].iov_len = count * sizeof(*writes);
    ret = transact_fixed(client, VU_COMMAND_REGION_WRITE_MULTI, payload, 2, NULL, 0, &reply,
                         sizeof(reply));
    if (ret < 0)
        return ret;
    return reply.write_count == count ? 0 : -EPROTO;
}

int vu_client_device_reset(struct vu_client *client)
{
    return transact_fixed(client, VU_COMMAND_DEVICE_RESET, NULL, 0, NULL, 0, NULL, 0);
}

int vu_client_serve(struct vu_client *client, int timeout_ms)
{
    int64_t deadline = deadline_after(timeout_ms);
    int served = 0;
    int ret;

    if (client->broken != 0)
        return -ENOTCONN;
    for (;;) {
        struct pollfd pfds[2] = {
            {.fd = client->socket_fd, .events = POLLIN},
            {.fd = client->twin_fd, .events = POLLIN},
        };
        nfds_t count = client->twin_fd >= 0 ? 2 : 1;
        uint8_t raw[VU_HEADER_SIZE];
        struct vu_header header;
        size_t length;
        ssize_t peeked;

        /* Once something was served, only what is already pending is. */
        ret = poll(pfds, count, served > 0 ? 0 : remaining_ms(deadline));
        if (ret < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (ret == 0)
            return served;
        /* `timeout_ms` bounds the wait for a request; serving one that has begun to
         * arrive gets the client's full timeout, as any other exchange does. */
        if (count == 2 && pfds[1].revents != 0) {
            ret = serve_twin(client, deadline_after(client->timeout_ms));
            if (ret < 0)
                return ret;
            served += ret;
            continue;
        }
        if (pfds[0].revents == 0)
            continue;
        /* Peek, so that a reply is left for vu_client_receive. Without a control buffer
         * the kernel installs no descriptors for a peek. */
        peeked = recv(client->socket_fd, raw, sizeof(raw), MSG_PEEK | MSG_DONTWAIT);
        if (peeked < 0) {
            if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)
                continue;
            ret = -errno;
            mark_broken(client, ret);
            return ret;
        }
        if (peeked == 0) {
            /* Report what was served; the next call finds the end of the stream again. */
            if (served > 0)
                return served;
            mark_broken(client, -ECONNRESET);
            return -ECONNRESET;
        }
        if ((size_t)peeked < sizeof(raw)) {
            /* Half a header: give the rest a moment to arrive, within the deadline. */
            if (remaining_ms(deadline) == 0)
                return served;
            nanosleep(&(struct timespec){.tv_nsec = 1000000}, NULL);
            continue;
        }
        memcpy(&header, raw, sizeof(header));
        if ((header.flags & VU_FLAGS_TYPE_MASK) == VU_FLAGS_TYPE_REPLY)
            return served;
        ret = read_message(client, client->socket_fd, deadline_after(client->timeout_ms), &header,
                           &length);
        if (ret < 0)
            return ret;
        if ((header.flags & VU_FLAGS_TYPE_MASK) != VU_FLAGS_TYPE_COMMAND) {
            close_message_fds(client);
            continue;
        }
        ret = serve_command(client, client->socket_fd, &header, length,
                            deadline_after(client->timeout_ms));
        if (ret < 0)
            return ret;
        served++;
    }
}
