/*
 * The supervisor <-> device host control channel: JSON objects in SOCK_SEQPACKET packets;
 * see control.h.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "control.h"

int control_socketpair(int fds[2])
{
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, fds) < 0)
        return -errno;
    return 0;
}

int control_send_fd(int fd, const json_t *message, int passed_fd)
{
    char *text = json_dumps(message, JSON_COMPACT);
    union {
        struct cmsghdr header;
        char space[CMSG_SPACE(sizeof(int))];
    } control = {0};
    struct iovec vector;
    struct msghdr header = {.msg_iov = &vector, .msg_iovlen = 1};
    size_t length;
    ssize_t sent;
    int ret = 0;

    if (text == NULL)
        return -ENOMEM;
    length = strlen(text);
    if (length > CONTROL_MESSAGE_MAX) {
        ret = -EMSGSIZE;
        goto out;
    }
    vector = (struct iovec){.iov_base = text, .iov_len = length};
    if (passed_fd >= 0) {
        header.msg_control = control.space;
        header.msg_controllen = sizeof(control.space);
        control.header.cmsg_level = SOL_SOCKET;
        control.header.cmsg_type = SCM_RIGHTS;
        control.header.cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(&control.header), &passed_fd, sizeof(int));
    }
    sent = sendmsg(fd, &header, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (sent < 0)
        ret = errno == EWOULDBLOCK ? -EAGAIN : -errno;
    else if ((size_t)sent != length)
        ret = -EMSGSIZE; /* a packet goes whole or not at all; this cannot happen */
out:
    free(text);
    return ret;
}

int control_send(int fd, const json_t *message)
{
    return control_send_fd(fd, message, -1);
}

/* The descriptors that came with a packet: the first to `received_fd`, -EBADMSG for more. */
static int take_descriptors(struct msghdr *header, int *received_fd)
{
    int ret = 0;

    for (struct cmsghdr *item = CMSG_FIRSTHDR(header); item != NULL;
         item = CMSG_NXTHDR(header, item)) {
        size_t count;
        if (item->cmsg_level != SOL_SOCKET || item->cmsg_type != SCM_RIGHTS)
            continue;
        count = (item->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < count; i++) {
            int fd;
            memcpy(&fd, CMSG_DATA(item) + i * sizeof(int), sizeof(int));
            if (*received_fd < 0 && ret == 0) {
                *received_fd = fd;
            } else {
                close(fd);
                ret = -EBADMSG;
            }
        }
    }
    if (ret < 0 && *received_fd >= 0) {
        close(*received_fd);
        *received_fd = -1;
    }
    return ret;
}

int control_receive_fd(int fd, json_t **message, int *received_fd)
{
    union {
        struct cmsghdr header;
        char space[CMSG_SPACE(4 * sizeof(int))];
    } control;
    struct iovec vector;
    struct msghdr header = {.msg_iov = &vector,
                            .msg_iovlen = 1,
                            .msg_control = control.space,
                            .msg_controllen = sizeof(control.space)};
    json_t *parsed = NULL;
    char *buffer = NULL;
    ssize_t length;
    int ret;

    *message = NULL;
    *received_fd = -1;
    /* The packet's size first, so that the buffer is as large as this packet, not as the
     * largest one: a static buffer of CONTROL_MESSAGE_MAX cost every process that much. */
    length = recv(fd, NULL, 0, MSG_DONTWAIT | MSG_PEEK | MSG_TRUNC);
    if (length < 0)
        return errno == EWOULDBLOCK ? -EAGAIN : -errno;
    /* One byte more than the largest packet, so that a larger one shows as cut short. */
    buffer = malloc((size_t)(length < CONTROL_MESSAGE_MAX ? length : CONTROL_MESSAGE_MAX) + 1);
    if (buffer == NULL)
        return -ENOMEM;
    vector = (struct iovec){
        .iov_base = buffer,
        .iov_len = (size_t)(length < CONTROL_MESSAGE_MAX ? length : CONTROL_MESSAGE_MAX) + 1};
    length = recvmsg(fd, &header, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (length < 0) {
        ret = errno == EWOULDBLOCK ? -EAGAIN : -errno;
        goto fail;
    }
    ret = take_descriptors(&header, received_fd);
    if (ret < 0)
        goto fail;
    if (length == 0)
        goto fail; /* the end of the stream: ret is 0 */
    ret = -EBADMSG;
    if ((size_t)length > CONTROL_MESSAGE_MAX || (header.msg_flags & (MSG_TRUNC | MSG_CTRUNC)))
        goto fail;
    parsed = json_loadb(buffer, (size_t)length, JSON_REJECT_DUPLICATES, NULL);
    if (parsed == NULL || !json_is_object(parsed) ||
        !json_is_string(json_object_get(parsed, "type")))
        goto fail;
    free(buffer);
    *message = parsed;
    return 1;
fail:
    free(buffer);
    json_decref(parsed);
    if (*received_fd >= 0)
        close(*received_fd);
    *received_fd = -1;
    return ret;
}

int control_receive(int fd, json_t **message)
{
    int received_fd, ret = control_receive_fd(fd, message, &received_fd);

    /* Only "open" answers carry one, and they are read with control_receive_fd(). */
    if (received_fd >= 0)
        close(received_fd);
    return ret;
}

const char *control_type(const json_t *message)
{
    const char *type = json_string_value(json_object_get(message, "type"));

    return type != NULL ? type : "";
}

uint64_t control_sequence(const json_t *message)
{
    json_int_t value = json_integer_value(json_object_get(message, "seq"));

    return value > 0 ? (uint64_t)value : 0;
}

json_t *control_statistics_to_json(const struct vu_device_statistics *statistics)
{
    json_t *messages = json_array();

    if (messages == NULL)
        return NULL;
    for (size_t i = 0; i <= VU_COMMAND_MAX; i++) {
        if (json_array_append_new(messages, json_integer((json_int_t)statistics->messages[i])) <
            0) {
            json_decref(messages);
            return NULL;
        }
    }
    return json_pack(
        "{s:o, s:I, s:I, s:I, s:I}", "messages", messages, "errors", (json_int_t)statistics->errors,
        "bytes_received", (json_int_t)statistics->bytes_received, "bytes_sent",
        (json_int_t)statistics->bytes_sent, "connections", (json_int_t)statistics->connections);
}

static int counter_from_json(const json_t *value, uint64_t *counter)
{
    if (!json_is_integer(value) || json_integer_value(value) < 0)
        return -EBADMSG;
    *counter = (uint64_t)json_integer_value(value);
    return 0;
}

int control_statistics_from_json(const json_t *object, struct vu_device_statistics *statistics)
{
    const json_t *messages = json_object_get(object, "messages");
    int ret = 0;

    memset(statistics, 0, sizeof(*statistics));
    if (!json_is_array(messages) || json_array_size(messages) != VU_COMMAND_MAX + 1) {
        ret = -EBADMSG;
        goto out;
    }
    for (size_t i = 0; i <= VU_COMMAND_MAX && ret == 0; i++)
        ret = counter_from_json(json_array_get(messages, i), &statistics->messages[i]);
    if (ret == 0)
        ret = counter_from_json(json_object_get(object, "errors"), &statistics->errors);
    if (ret == 0)
        ret = counter_from_json(json_object_get(object, "bytes_received"),
                                &statistics->bytes_received);
    if (ret == 0)
        ret = counter_from_json(json_object_get(object, "bytes_sent"), &statistics->bytes_sent);
    if (ret == 0)
        ret = counter_from_json(json_object_get(object, "connections"), &statistics->connections);
out:
    if (ret < 0)
        memset(statistics, 0, sizeof(*statistics));
    return ret;
}
