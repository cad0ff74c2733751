/*
 * A vfio-user session: the protocol state of one client connection to one device.
 *
 * The session validates each complete message (header, payload, descriptors), runs the
 * command against the device and builds the reply in the output queue, in arrival order.
 * It also drives the server-to-client DMA_READ/DMA_WRITE exchanges a device model asks
 * for when client memory was shared without a file descriptor. It does no socket I/O: the
 * transport (endpoint.h) feeds it messages and flushes its queues, which is also what
 * lets the fuzzer drive it with plain buffers.
 */
#ifndef VU_SESSION_H
#define VU_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <vfio-userd/plugin.h>

#include "output_queue.h"
#include "wire.h"

struct vu_device;

enum vu_channel {
    VU_CHANNEL_MAIN, /* the socket the client connected */
    VU_CHANNEL_TWIN, /* server-to-client commands, when twin_socket was negotiated */
};

/* The largest message either side may send: a header, a command header, the data. */
#define VU_MAX_MESSAGE_SIZE (VU_HEADER_SIZE + VU_MESSAGE_OVERHEAD + VU_SERVER_MAX_DATA_XFER_SIZE)

/*
 * The most data one server-to-client DMA_READ or DMA_WRITE carries; a transfer takes as
 * many messages as it needs. QEMU (10.2, 11.1) does not handle a short write of its reply:
 * a DMA_READ reply larger than the room in its socket's send buffer (212992 bytes by
 * default on Linux) was cut off and the stream lost. 64 KiB replies went through, and
 * leave room for other messages queued at the same time. A power of two from MIN to MAX;
 * the client's max_data_xfer_size bounds it further.
 */
#define VU_DMA_CHUNK_SIZE_DEFAULT (64u * 1024)
#define VU_DMA_CHUNK_SIZE_MIN     4096u
#define VU_DMA_CHUNK_SIZE_MAX     VU_SERVER_MAX_DATA_XFER_SIZE

static inline bool vu_dma_chunk_size_valid(uint64_t bytes)
{
    return bytes >= VU_DMA_CHUNK_SIZE_MIN && bytes <= VU_DMA_CHUNK_SIZE_MAX &&
           (bytes & (bytes - 1)) == 0;
}

struct vu_session;

/* Starts a session for a newly connected client of `device` (attaches it). */
int vu_session_new(struct vu_device *device, struct vu_session **session);

/* Ends the session: pending DMA requests fail with -ECONNRESET, the device is detached
 * (DMA ranges and eventfds released), queues and the twin socket closed. */
void vu_session_free(struct vu_session *session);

/*
 * Whether the output queue has room for the largest reply, so the next message can be
 * handled now. When false, the transport waits for the socket to drain first.
 */
bool vu_session_ready(const struct vu_session *session);

/*
 * Handles one complete message that arrived on `channel`. `fds` are the descriptors that
 * came with it; the session always takes them (keeps or closes). Returns 0, or -errno
 * when the connection must be closed once the queued output is flushed.
 */
int vu_session_handle_message(struct vu_session *session, enum vu_channel channel,
                              const struct vu_header *header, const uint8_t *payload,
                              size_t payload_length, int *fds, size_t fd_count);

/*
 * Answers a message the transport could not take (too large, bad descriptors, bad
 * flags) with an error reply carrying `error` (negative errno), unless it asked for none.
 */
void vu_session_reject_message(struct vu_session *session, const struct vu_header *header,
                               int error);

/*
 * A DMA_UNMAP or DEVICE_RESET waits while the device quiesces (vu_device_quiesce): the
 * session holds it, and until it has run the transport hands over only replies, leaving
 * the client's next commands where they are. vu_session_run_held() carries it out and
 * queues its reply once the device is quiet and the output has room: 1 when it ran, 0 when
 * it still waits (or nothing is held).
 */
bool vu_session_holding(const struct vu_session *session);
int vu_session_run_held(struct vu_session *session);

/* Whether VERSION was negotiated: the handshake is over. */
bool vu_session_negotiated(const struct vu_session *session);

/* Whether a fatal error asked for the connection to close. */
bool vu_session_closing(const struct vu_session *session);

struct vu_output_queue *vu_session_output(struct vu_session *session, enum vu_channel channel);

/* The server end of the twin socket once negotiated, else -1. */
int vu_session_twin_socket(const struct vu_session *session);

/* Call after output was flushed: queued DMA requests may proceed. */
void vu_session_output_drained(struct vu_session *session);

/* When the DMA_READ/DMA_WRITE in flight times out (CLOCK_MONOTONIC microseconds), given
 * how long a client may take; 0 when none is in flight. */
uint64_t vu_session_dma_deadline(const struct vu_session *session, uint64_t timeout_usec);

/* The client did not answer in time: the transfer fails with -ETIMEDOUT, the next one goes. */
void vu_session_dma_expire(struct vu_session *session);

/* Sets the bound on the data of each DMA_READ/DMA_WRITE message (VU_DMA_CHUNK_SIZE_*):
 * -EINVAL unless a power of two in range. Takes effect from the next message. */
int vu_session_set_dma_chunk_size(struct vu_session *session, uint32_t bytes);

/* Queues a message-based DMA transfer (device.c, for ranges mapped without a fd). */
int vu_session_dma_submit(struct vu_session *session, struct vfio_userd_dma_request *request);

#endif /* VU_SESSION_H */
