/*
 * vfio-user client: the client side of every message, for the integration tests, the
 * benchmarks and `vfio-userctl probe`.
 *
 * A client is blocking and single-threaded: each call sends its request and waits, up to
 * the client's timeout, for the reply. While it waits it serves the server's DMA_READ and
 * DMA_WRITE commands (on the main socket, or on the twin socket when one was negotiated)
 * from the memory given to vu_client_dma_map_memory(). Nothing the server sends is trusted:
 * every size, count and index in a reply is checked, and file descriptors nobody asked for
 * are closed.
 *
 * Errors are negative errno values. A reply with the Error flag becomes -error (or -EIO
 * when the server gave no usable errno); a reply that breaks the protocol is -EPROTO. After
 * an error that leaves the byte stream out of step (a bad header, a timeout or a failure in
 * the middle of a message, a request whose reply did not come in time, a closed socket)
 * every later call fails with -ENOTCONN. A client is not thread-safe.
 */
#ifndef VU_CLIENT_H
#define VU_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "wire.h"

struct vu_client;

struct vu_client_options {
    /* What the client announces it can receive; proposal.twin_socket asks for a twin. */
    struct vu_capabilities proposal;
    uint16_t major;
    uint16_t minor;
    /* False sends a VERSION without JSON, so the server must apply the spec's defaults. */
    bool send_json;
    /* Bound on each call, in milliseconds; negative waits forever. */
    int timeout_ms;
};

/* QEMU's proposal: max_msg_fds 16, max_data_xfer_size 1 MiB, pgsizes 4096, max_dma_maps
 * 65535, write_multiple, no twin socket; version 0.1, JSON sent, 5 s timeout. */
void vu_client_options_default(struct vu_client_options *options);

/* Connects to `socket_path` and negotiates the version. */
int vu_client_connect(const char *socket_path, const struct vu_client_options *options,
                      struct vu_client **client);
/* Connects without sending VERSION (default options apply until vu_client_negotiate). */
int vu_client_connect_raw(const char *socket_path, struct vu_client **client);
/* Wraps an already connected AF_UNIX stream socket, which the client then owns (closed by
 * vu_client_close, also on failure). No VERSION is sent. */
int vu_client_attach(int socket_fd, struct vu_client **client);
/* Sends VERSION with `options` (NULL: defaults) and checks the reply. */
int vu_client_negotiate(struct vu_client *client, const struct vu_client_options *options);
/* Closes the sockets; NULL is allowed. DMA memory given by the caller is not touched. */
void vu_client_close(struct vu_client *client);

int vu_client_socket(const struct vu_client *client);
/* -1 without a twin socket. */
int vu_client_twin_socket(const struct vu_client *client);
bool vu_client_twin_socket_active(const struct vu_client *client);
/* The capabilities of the server's VERSION reply (the spec's defaults before it). */
const struct vu_capabilities *vu_client_session(const struct vu_client *client);
uint16_t vu_client_server_major(const struct vu_client *client);
uint16_t vu_client_server_minor(const struct vu_client *client);
void vu_client_set_timeout(struct vu_client *client, int timeout_ms);
/* Takes the next message id, for callers of vu_client_send. */
uint16_t vu_client_next_message_id(struct vu_client *client);

/*
 * Low level, for pipelining and hostile tests. vu_client_send sends one message as given
 * (no check of the payload), with up to 253 file descriptors (SCM_MAX_FD).
 */
int vu_client_send(struct vu_client *client, uint16_t message_id, uint16_t command, uint32_t flags,
                   const void *payload, size_t payload_length, const int *fds, size_t fd_count);
/*
 * Waits for the next reply on the main socket, serving server-to-client commands that
 * arrive meanwhile on either socket. The header is filled in even for an error reply (the
 * return value is then still 0). A payload longer than `capacity` is consumed and reported
 * as -EMSGSIZE; received descriptors beyond `fd_capacity` are closed. A timeout before
 * the first byte of the reply is -ETIMEDOUT and leaves the client usable.
 */
int vu_client_receive(struct vu_client *client, struct vu_header *header, void *payload,
                      size_t capacity, size_t *payload_length, int *fds, size_t fd_capacity,
                      size_t *fd_count);
/*
 * Sends `command` with a fresh message id and waits for its reply. An error reply is
 * -error; a reply with another id or command, or with a payload longer than
 * `reply_capacity`, is -EPROTO. Any of the reply arguments may be NULL/0.
 */
int vu_client_request(struct vu_client *client, uint16_t command, const void *payload,
                      size_t payload_length, const int *fds, size_t fd_count, void *reply,
                      size_t reply_capacity, size_t *reply_length, int *reply_fds,
                      size_t reply_fd_capacity, size_t *reply_fd_count);

/* DMA_MAP of `fd` at `offset`; the client does not serve DMA_READ/WRITE for it. */
int vu_client_dma_map(struct vu_client *client, uint64_t address, uint64_t size, uint32_t flags,
                      int fd, uint64_t offset);
/* DMA_MAP without a descriptor: the server reaches [address, address + size) only through
 * DMA_READ/DMA_WRITE, which the client serves from `memory` (size bytes). */
int vu_client_dma_map_memory(struct vu_client *client, uint64_t address, uint64_t size,
                             uint32_t flags, void *memory);
/* Both: `fd` is sent and `memory` (the caller's mapping of it) serves the message
 * fallback. `fd` may be -1. */
int vu_client_dma_map_shared(struct vu_client *client, uint64_t address, uint64_t size,
                             uint32_t flags, int fd, uint64_t offset, void *memory);
/* VU_DMA_UNMAP_FLAG_ALL in `flags` unmaps everything (address and size then 0). */
int vu_client_dma_unmap(struct vu_client *client, uint64_t address, uint64_t size, uint32_t flags);

int vu_client_device_info(struct vu_client *client, struct vu_device_info *info);
/*
 * Region info including its capabilities: asks with the fixed size first, then again with
 * the argsz the server asks for. *info is malloc'ed, (*info)->argsz bytes long. `fd` (may
 * be NULL) gets the region's descriptor or -1.
 */
int vu_client_region_info(struct vu_client *client, uint32_t index, struct vfio_region_info **info,
                          int *fd);
/*
 * The sparse mmap areas of a region info from vu_client_region_info, after checking the
 * capability chain against info->argsz and each area against info->size. *areas is
 * malloc'ed (NULL when *count is 0). -ENOENT when the region has no sparse capability.
 */
int vu_client_region_sparse_areas(const struct vfio_region_info *info,
                                  struct vfio_region_sparse_mmap_area **areas, uint32_t *count);
/*
 * The region's I/O fd sub-regions: *entries malloc'ed (NULL when *count is 0), each
 * fd_index checked against the descriptors received, which go to `fds` (-ENOBUFS, all
 * closed, if more than `fd_capacity` came).
 */
int vu_client_region_io_fds(struct vu_client *client, uint32_t index,
                            struct vu_region_io_fd **entries, uint32_t *count, int *fds,
                            size_t fd_capacity, size_t *fd_count);
int vu_client_irq_info(struct vu_client *client, uint32_t index, struct vfio_irq_info *info);
/*
 * SET_IRQS. With VFIO_IRQ_SET_DATA_EVENTFD, `eventfds` holds `count` descriptors, sent in
 * messages of at most the server's max_msg_fds as QEMU does; an entry of -1 clears that
 * vector (sent as a message without descriptors), and NULL clears all `count`. With
 * VFIO_IRQ_SET_DATA_BOOL, `bools` holds `count` bytes.
 */
int vu_client_set_irqs(struct vu_client *client, uint32_t index, uint32_t flags, uint32_t start,
                       uint32_t count, const int *eventfds, const uint8_t *bools);
/* `count` at most the smaller max_data_xfer_size of the two sides. */
int vu_client_region_read(struct vu_client *client, uint32_t region, uint64_t offset, void *data,
                          uint32_t count);
int vu_client_region_write(struct vu_client *client, uint32_t region, uint64_t offset,
                           const void *data, uint32_t count);
/* REGION_WRITE with No_reply: returns once sent. */
int vu_client_region_write_posted(struct vu_client *client, uint32_t region, uint64_t offset,
                                  const void *data, uint32_t count);
/* -ENOTSUP unless the server offered write_multiple; each entry's count is at most 8. */
int vu_client_region_write_multi(struct vu_client *client,
                                 const struct vu_write_multi_entry *writes, uint64_t count);
int vu_client_device_reset(struct vu_client *client);

/*
 * Waits up to `timeout_ms` for server-to-client commands, serves every one pending, and
 * returns how many it served. Returns early, without reading it, when a reply is waiting
 * on the main socket.
 */
int vu_client_serve(struct vu_client *client, int timeout_ms);

#endif /* VU_CLIENT_H */
