/*
 * A byte queue of outgoing vfio-user messages for one socket, with the file descriptors
 * some messages carry (SCM_RIGHTS) pinned to the stream position where their message
 * starts. Replies are built in place (reserve, fill, commit), so the hot path copies data
 * once and allocates nothing.
 */
#ifndef VU_OUTPUT_QUEUE_H
#define VU_OUTPUT_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VU_OUTPUT_MAX_ATTACHMENTS     8
#define VU_OUTPUT_MAX_FDS_PER_MESSAGE 16

struct vu_output_attachment {
    uint64_t position; /* stream position of the first byte of the message */
    int fds[VU_OUTPUT_MAX_FDS_PER_MESSAGE];
    uint32_t fd_count;
};

struct vu_output_queue {
    uint8_t *data;
    size_t capacity;
    size_t head, tail; /* unsent bytes are data[head, tail) */
    uint64_t head_position;
    struct vu_output_attachment attachments[VU_OUTPUT_MAX_ATTACHMENTS];
    uint32_t attachment_count;
};

int vu_output_queue_init(struct vu_output_queue *queue, size_t capacity);
/* Frees the buffer and closes the descriptors of unsent messages. */
void vu_output_queue_destroy(struct vu_output_queue *queue);

static inline size_t vu_output_queue_pending(const struct vu_output_queue *queue)
{
    return queue->tail - queue->head;
}

static inline size_t vu_output_queue_free(const struct vu_output_queue *queue)
{
    return queue->capacity - vu_output_queue_pending(queue);
}

/* Room for `length` contiguous bytes at the tail, or NULL when the queue is too full. */
void *vu_output_queue_reserve(struct vu_output_queue *queue, size_t length);

/* Appends `length` bytes written into the last reservation. */
void vu_output_queue_commit(struct vu_output_queue *queue, size_t length);

/*
 * Pins `fds` to the message that starts at the current tail (call before committing it).
 * The queue owns them from now on, even on failure. Returns 0, -E2BIG, -ENOBUFS.
 */
int vu_output_queue_attach_fds(struct vu_output_queue *queue, const int *fds, uint32_t count);

/*
 * Sends as much as the socket takes without blocking. Returns 0 (maybe with data left),
 * or -errno for a socket error (the connection is then dead).
 */
int vu_output_queue_flush(struct vu_output_queue *queue, int socket_fd);

#endif /* VU_OUTPUT_QUEUE_H */
