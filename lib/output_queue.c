/*
 * Outgoing message queue for one socket; see output_queue.h.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "output_queue.h"

int vu_output_queue_init(struct vu_output_queue *queue, size_t capacity)
{
    *queue = (struct vu_output_queue){0};
    queue->data = malloc(capacity);
    if (queue->data == NULL)
        return -ENOMEM;
    queue->capacity = capacity;
    return 0;
}

static void close_attachment(struct vu_output_attachment *attachment)
{
    for (uint32_t i = 0; i < attachment->fd_count; i++)
        close(attachment->fds[i]);
    attachment->fd_count = 0;
}

static void pop_attachment(struct vu_output_queue *queue)
{
    close_attachment(&queue->attachments[0]);
    memmove(&queue->attachments[0], &queue->attachments[1],
            (queue->attachment_count - 1) * sizeof(queue->attachments[0]));
    queue->attachment_count--;
}

void vu_output_queue_destroy(struct vu_output_queue *queue)
{
    while (queue->attachment_count > 0)
        pop_attachment(queue);
    free(queue->data);
    *queue = (struct vu_output_queue){0};
}

void *vu_output_queue_reserve(struct vu_output_queue *queue, size_t length)
{
    if (length > vu_output_queue_free(queue))
        return NULL;
    if (queue->tail + length > queue->capacity) {
        /* Compact: rare, since a flush usually empties the queue. */
        memmove(queue->data, queue->data + queue->head, vu_output_queue_pending(queue));
        queue->tail -= queue->head;
        queue->head = 0;
    }
    return queue->data + queue->tail;
}

void vu_output_queue_commit(struct vu_output_queue *queue, size_t length)
{
    queue->tail += length;
}

int vu_output_queue_attach_fds(struct vu_output_queue *queue, const int *fds, uint32_t count)
{
    struct vu_output_attachment *attachment;

    if (count > VU_OUTPUT_MAX_FDS_PER_MESSAGE ||
        queue->attachment_count == VU_OUTPUT_MAX_ATTACHMENTS) {
        for (uint32_t i = 0; i < count; i++)
            close(fds[i]);
        return count > VU_OUTPUT_MAX_FDS_PER_MESSAGE ? -E2BIG : -ENOBUFS;
    }
    attachment = &queue->attachments[queue->attachment_count++];
    attachment->position = queue->head_position + vu_output_queue_pending(queue);
    attachment->fd_count = count;
    memcpy(attachment->fds, fds, count * sizeof(int));
    return 0;
}

int vu_output_queue_flush(struct vu_output_queue *queue, int socket_fd)
{
    while (queue->head < queue->tail) {
        union {
            struct cmsghdr header;
            char space[CMSG_SPACE(sizeof(int) * VU_OUTPUT_MAX_FDS_PER_MESSAGE)];
        } control;
        struct vu_output_attachment *attachment =
            queue->attachment_count > 0 ? &queue->attachments[0] : NULL;
        size_t length = vu_output_queue_pending(queue);
        struct iovec iov;
        struct msghdr message = {.msg_iov = &iov, .msg_iovlen = 1};
        ssize_t sent;

        if (attachment != NULL && attachment->position == queue->head_position) {
            /* The descriptors ride on the first byte of their message; the send stops
             * before the next message that carries descriptors of its own. */
            struct cmsghdr *cmsg;
            if (queue->attachment_count > 1)
                length = (size_t)(queue->attachments[1].position - queue->head_position);
            memset(&control, 0, sizeof(control));
            message.msg_control = control.space;
            message.msg_controllen = CMSG_SPACE(sizeof(int) * attachment->fd_count);
            cmsg = CMSG_FIRSTHDR(&message);
            cmsg->cmsg_level = SOL_SOCKET;
            cmsg->cmsg_type = SCM_RIGHTS;
            cmsg->cmsg_len = CMSG_LEN(sizeof(int) * attachment->fd_count);
            memcpy(CMSG_DATA(cmsg), attachment->fds, sizeof(int) * attachment->fd_count);
        } else if (attachment != NULL) {
            /* Stop before the next message with descriptors. */
            length = (size_t)(attachment->position - queue->head_position);
        }
        iov.iov_base = queue->data + queue->head;
        iov.iov_len = length;
        sent = sendmsg(socket_fd, &message, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (sent < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;
            return -errno;
        }
        if (message.msg_control != NULL)
            pop_attachment(queue);
        queue->head += (size_t)sent;
        queue->head_position += (uint64_t)sent;
    }
    queue->head = queue->tail = 0;
    return 0;
}
