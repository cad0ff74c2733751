/*
 * The supervisor <-> device host control channel: JSON objects in SOCK_SEQPACKET packets;
 * see control.h.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "control.h"

int control_socketpair(int fds[2])
{
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, fds) < 0)
        return -errno;
    return 0;
}

int control_send(int fd, const json_t *message)
{
    char *text = json_dumps(message, JSON_COMPACT);
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
    sent = send(fd, text, length, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (sent < 0)
        ret = errno == EWOULDBLOCK ? -EAGAIN : -errno;
    else if ((size_t)sent != length)
        ret = -EMSGSIZE; /* a packet goes whole or not at all; this cannot happen */
out:
    free(text);
    return ret;
}

int control_receive(int fd, json_t **message)
{
    /* One byte more than the largest packet, so that a larger one shows as cut short. */
    static __thread char buffer[CONTROL_MESSAGE_MAX + 1];
    struct iovec vector = {.iov_base = buffer, .iov_len = sizeof(buffer)};
    struct msghdr header = {.msg_iov = &vector, .msg_iovlen = 1};
    json_t *parsed;
    ssize_t length;

    *message = NULL;
    length = recvmsg(fd, &header, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (length < 0)
        return errno == EWOULDBLOCK ? -EAGAIN : -errno;
    if (length == 0)
        return 0;
    if ((size_t)length > CONTROL_MESSAGE_MAX || (header.msg_flags & (MSG_TRUNC | MSG_CTRUNC)))
        return -EBADMSG;
    parsed = json_loadb(buffer, (size_t)length, JSON_REJECT_DUPLICATES, NULL);
    if (parsed == NULL)
        return -EBADMSG;
    if (!json_is_object(parsed) || !json_is_string(json_object_get(parsed, "type"))) {
        json_decref(parsed);
        return -EBADMSG;
    }
    *message = parsed;
    return 1;
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
