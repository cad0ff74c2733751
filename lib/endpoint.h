/*
 * A device endpoint: the listening UNIX socket of one device and the one client connected
 * to it, driven by a device loop (event_loop.h).
 *
 * All socket I/O is non-blocking. Messages are reassembled from as many reads as they
 * take, with the descriptors that came with them; replies leave through per-socket output
 * queues. A second client is refused without disturbing the first; when the client goes,
 * the device keeps its state and the next client is accepted.
 */
#ifndef VU_ENDPOINT_H
#define VU_ENDPOINT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

struct vu_device;
struct vu_endpoint;
struct vu_loop;

/* Who may connect to a socket: its owner and group ((uid_t)-1, (gid_t)-1: the caller's),
 * and its mode. */
struct vu_socket_access {
    uid_t uid;
    gid_t gid;
    mode_t mode;
};

/*
 * Creates a listening socket at `path`, with `access` (NULL: as the umask makes it): a
 * stale socket file left by a dead process is replaced; one a live process still listens
 * on is -EADDRINUSE; any other kind of file is -EEXIST. The file appears at `path` only
 * once it listens with its owner and mode, so a client that finds it is never refused nor
 * let in by a mode that is not yet the final one; nothing is left behind on failure. The
 * socket is non-blocking and close-on-exec.
 */
int vu_socket_listen(const char *path, const struct vu_socket_access *access, int *fd);

/*
 * Removes the socket file at `path` if nobody listens on it (its daemon died). Returns 1
 * when it did, 0 when there is nothing at `path`, -EADDRINUSE when a live process listens,
 * -EEXIST when it is not a socket, or another negative errno.
 */
int vu_socket_remove_stale(const char *path);

/* Serves `device` on `listen_fd` (taken over) from `loop`. */
int vu_endpoint_new(struct vu_device *device, struct vu_loop *loop, int listen_fd,
                    struct vu_endpoint **endpoint);

/* Disconnects the client, if any, and closes the listening socket (the path is left). */
void vu_endpoint_free(struct vu_endpoint *endpoint);

/*
 * Disconnects the client, frees the endpoint and hands back its listening socket, so a
 * replacement device can serve the same path without a moment of absence.
 */
int vu_endpoint_release(struct vu_endpoint *endpoint);

/*
 * After work done for the device outside the endpoint's own events (a reset requested by
 * the control plane): sends what the device queued and arms its DMA deadline. Call on the
 * endpoint's thread, with the fault guard entered for the device.
 */
void vu_endpoint_flush(struct vu_endpoint *endpoint);

/* Disconnects the current client (for device removal or tests). */
void vu_endpoint_disconnect(struct vu_endpoint *endpoint);

/*
 * The device started a quiesce it needs time for: if it has not finished after
 * `quiesce_warning` (VU_ENDPOINT_QUIESCE_WARNING_USEC unless set), a warning says who waits,
 * again at doubling intervals; a plugin that never reports it holds its client for good.
 */
void vu_endpoint_quiesce_waiting(struct vu_endpoint *endpoint);
void vu_endpoint_set_quiesce_warning(struct vu_endpoint *endpoint, uint64_t usec);
#define VU_ENDPOINT_QUIESCE_WARNING_USEC (5u * 1000 * 1000)
#define VU_ENDPOINT_QUIESCE_WARNING_MAX  (60u * 1000 * 1000)

/* The device finished a quiesce it needed time for (its plugin called host->quiesced): the
 * command or the client's departure that waited for it goes on from the next loop pass. */
void vu_endpoint_quiesced(struct vu_endpoint *endpoint);

/* How long a client may take to answer one DMA_READ/DMA_WRITE before the transfer fails
 * with -ETIMEDOUT: QEMU's own reply timeout. */
#define VU_ENDPOINT_DMA_TIMEOUT_USEC (5u * 1000 * 1000)

void vu_endpoint_set_dma_timeout(struct vu_endpoint *endpoint, uint64_t timeout_usec);

/*
 * The most data each server-to-client DMA_READ/DMA_WRITE message carries, for this client
 * and the next (see VU_DMA_CHUNK_SIZE_DEFAULT in session.h): -EINVAL unless a power of two
 * from VU_DMA_CHUNK_SIZE_MIN to VU_DMA_CHUNK_SIZE_MAX.
 */
int vu_endpoint_set_dma_chunk_size(struct vu_endpoint *endpoint, uint32_t bytes);

/*
 * How long a client has, from connecting, to complete VERSION before it is disconnected and
 * the socket is free for the next one; 0: forever. A silent first client would otherwise
 * hold the device. Takes effect from the next client.
 */
#define VU_ENDPOINT_HANDSHAKE_TIMEOUT_USEC (10u * 1000 * 1000)

void vu_endpoint_set_handshake_timeout(struct vu_endpoint *endpoint, uint64_t timeout_usec);

/*
 * The most descriptors a client may make the device hold (VU_MAX_CLIENT_FDS_* in device.h):
 * -EINVAL outside VU_MAX_CLIENT_FDS_MIN..VU_MAX_CLIENT_FDS_MAX. A lower bound than the
 * connected client holds refuses only its next SET_IRQS that adds descriptors.
 */
int vu_endpoint_set_max_client_fds(struct vu_endpoint *endpoint, uint32_t count);

/* The descriptors the client makes the device hold now, and the bound (for status). */
void vu_endpoint_client_fds(const struct vu_endpoint *endpoint, uint32_t *held, uint32_t *limit);

/*
 * Polling: after each request, look for the next one for up to `poll_usec` before going
 * back to the loop to sleep (0, the default: sleep at once). It spends a CPU to save the
 * wake-up a sleeping server pays per request when the client runs on another CPU; the loop
 * still runs between batches of requests, so nothing else on it starves.
 */
void vu_endpoint_set_poll(struct vu_endpoint *endpoint, uint64_t poll_usec);

bool vu_endpoint_connected(const struct vu_endpoint *endpoint);

/* The connected client's process id, or 0. */
pid_t vu_endpoint_client_pid(const struct vu_endpoint *endpoint);

#endif /* VU_ENDPOINT_H */
