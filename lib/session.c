/*
 * vfio-user session: message validation, command dispatch, replies, and the server-to-
 * client DMA exchange. See session.h.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sys/socket.h>
#include <unistd.h>

#include "device.h"
#include "log.h"
#include "session.h"

_Static_assert((VU_DMA_CHUNK_SIZE_DEFAULT & (VU_DMA_CHUNK_SIZE_DEFAULT - 1)) == 0 &&
                   VU_DMA_CHUNK_SIZE_DEFAULT >= VU_DMA_CHUNK_SIZE_MIN &&
                   VU_DMA_CHUNK_SIZE_DEFAULT <= VU_DMA_CHUNK_SIZE_MAX,
               "the default DMA chunk is a power of two in range");
_Static_assert(VU_DMA_CHUNK_SIZE_MAX + VU_HEADER_SIZE + sizeof(struct vu_dma_access) <=
                   VU_MAX_MESSAGE_SIZE,
               "a DMA_WRITE of the largest chunk fits a message");

/* Output room: the largest reply plus a server-to-client DMA message on the same socket. */
#define OUTPUT_CAPACITY (2 * VU_MAX_MESSAGE_SIZE)

/* Where a DMA request keeps its queue state (struct vfio_userd_dma_request.host_private). */
enum {
    DMA_PRIVATE_NEXT,    /* next request in the queue */
    DMA_PRIVATE_DONE,    /* bytes transferred so far */
    DMA_PRIVATE_CHUNK,   /* bytes of the chunk in flight */
    DMA_PRIVATE_MESSAGE, /* message id of the chunk in flight */
};

struct vu_session {
    struct vu_device *device;
    bool negotiated; /* VERSION done */
    bool closing;
    struct vu_capabilities client; /* what the client can receive */
    bool write_multiple;
    struct vu_output_queue output[2];
    int twin_socket;

    struct vfio_userd_dma_request *dma_head, *dma_tail;
    bool dma_in_flight;
    uint64_t dma_sent_usec; /* CLOCK_MONOTONIC time the chunk in flight was queued */
    bool dma_pumping;
    bool warned; /* a misbehaving client is logged at warning level once, then at debug */
    enum vu_dma_layout dma_layout; /* of the client's DMA_READ replies, once one showed it */
    uint32_t dma_chunk_size;       /* the most data one DMA_READ/DMA_WRITE carries */
    uint16_t next_message_id;

    /* A DMA_UNMAP or DEVICE_RESET, checked, waiting for the device to quiesce. */
    struct held_command {
        bool present;
        struct vu_header header;
        struct vu_dma_unmap unmap;
    } held;
};

/* dispatch(): the command waits in session->held; its reply comes later. */
#define COMMAND_HELD 1

/* A reply being built in the output queue, after the space for its header. */
struct reply {
    uint8_t *payload;
    size_t capacity;
    size_t length;
    int fds[VU_OUTPUT_MAX_FDS_PER_MESSAGE];
    uint32_t fd_count;
};

int vu_session_new(struct vu_device *device, struct vu_session **result)
{
    struct vu_session *session = calloc(1, sizeof(*session));
    int ret;

    if (session == NULL)
        return -ENOMEM;
    session->device = device;
    session->twin_socket = -1;
    session->dma_chunk_size = VU_DMA_CHUNK_SIZE_DEFAULT;
    vu_capabilities_defaults(&session->client);
    ret = vu_output_queue_init(&session->output[VU_CHANNEL_MAIN], OUTPUT_CAPACITY);
    if (ret < 0)
        goto fail;
    ret = vu_output_queue_init(&session->output[VU_CHANNEL_TWIN], OUTPUT_CAPACITY);
    if (ret < 0)
        goto fail;
    vu_device_attach_session(device, session, VU_DEFAULT_MAX_DMA_MAPS);
    *result = session;
    return 0;
fail:
    vu_output_queue_destroy(&session->output[VU_CHANNEL_MAIN]);
    free(session);
    return ret;
}

static struct vfio_userd_dma_request *dma_next(struct vfio_userd_dma_request *request)
{
    return (struct vfio_userd_dma_request *)(uintptr_t)request->host_private[DMA_PRIVATE_NEXT];
}

/* Takes the head request off the queue and reports its outcome. */
static void dma_complete_head(struct vu_session *session, int status)
{
    struct vfio_userd_dma_request *request = session->dma_head;

    session->dma_head = dma_next(request);
    if (session->dma_head == NULL)
        session->dma_tail = NULL;
    session->dma_in_flight = false;
    if (request->complete != NULL)
        request->complete(request, status);
}

void vu_session_free(struct vu_session *session)
{
    if (session == NULL)
        return;
    /* A completion that resubmits must fail now, not requeue. */
    session->closing = true;
    while (session->dma_head != NULL)
        dma_complete_head(session, -ECONNRESET);
    vu_device_detach_session(session->device);
    vu_output_queue_destroy(&session->output[VU_CHANNEL_MAIN]);
    vu_output_queue_destroy(&session->output[VU_CHANNEL_TWIN]);
    if (session->twin_socket >= 0)
        close(session->twin_socket);
    free(session);
}

bool vu_session_ready(const struct vu_session *session)
{
    const struct vu_output_queue *queue = &session->output[VU_CHANNEL_MAIN];

    /* Room for the largest reply, and for the descriptors one may carry. */
    return vu_output_queue_free(queue) >= VU_MAX_MESSAGE_SIZE &&
           queue->attachment_count < VU_OUTPUT_MAX_ATTACHMENTS;
}

bool vu_session_negotiated(const struct vu_session *session)
{
    return session->negotiated;
}

bool vu_session_closing(const struct vu_session *session)
{
    return session->closing;
}

struct vu_output_queue *vu_session_output(struct vu_session *session, enum vu_channel channel)
{
    return &session->output[channel];
}

int vu_session_twin_socket(const struct vu_session *session)
{
    return session->twin_socket;
}

/* A client that keeps misbehaving must not flood the journal (which would rate-limit the
 * whole daemon's messages): the first occurrence is a warning, the rest debug lines. */
__attribute__((format(printf, 2, 3))) static void log_misbehaviour(struct vu_session *session,
                                                                   const char *format, ...)
{
    va_list args;

    va_start(args, format);
    vu_log_va(session->warned ? VFIO_USERD_LOG_DEBUG : VFIO_USERD_LOG_WARNING,
              session->device->name, format, args);
    va_end(args);
    if (!session->warned)
        vu_log(VFIO_USERD_LOG_WARNING, session->device->name,
               "further protocol misbehaviour of this client is logged at debug level");
    session->warned = true;
}

/* ---------------------------------------------------------------------------------------
 * Server-to-client DMA: one chunk in flight at a time, in submission order.
 */

static enum vu_channel dma_channel(const struct vu_session *session)
{
    return session->twin_socket >= 0 ? VU_CHANNEL_TWIN : VU_CHANNEL_MAIN;
}

static void dma_pump(struct vu_session *session)
{
    if (session->dma_pumping || session->dma_head == NULL)
        return;
    session->dma_pumping = true;
    while (session->dma_head != NULL && !session->dma_in_flight && !session->closing) {
        struct vfio_userd_dma_request *request = session->dma_head;
        enum vu_channel channel = dma_channel(session);
        struct vu_output_queue *queue = &session->output[channel];
        uint64_t done = request->host_private[DMA_PRIVATE_DONE];
        uint64_t chunk = request->length - done;
        size_t message_size, reserve;
        uint8_t *out;

        if (chunk > session->dma_chunk_size)
            chunk = session->dma_chunk_size;
        if (chunk > session->client.max_data_xfer_size)
            chunk = session->client.max_data_xfer_size;
        message_size =
            VU_HEADER_SIZE + sizeof(struct vu_dma_access) + (request->to_client ? chunk : 0);
        /* On the main socket, keep room for the reply to the next command. */
        reserve = channel == VU_CHANNEL_MAIN ? VU_MAX_MESSAGE_SIZE : 0;
        if (vu_output_queue_free(queue) < message_size + reserve)
            break;
        out = vu_output_queue_reserve(queue, message_size);
        if (out == NULL)
            break;
        session->next_message_id++;
        vu_wire_encode_header(out, session->next_message_id,
                              request->to_client ? VU_COMMAND_DMA_WRITE : VU_COMMAND_DMA_READ,
                              (uint32_t)message_size, VU_FLAGS_TYPE_COMMAND, 0);
        vu_wire_encode_dma_access(out + VU_HEADER_SIZE, request->address + done, chunk,
                                  request->to_client ? (uint8_t *)request->buffer + done : NULL,
                                  session->dma_layout);
        vu_output_queue_commit(queue, message_size);
        request->host_private[DMA_PRIVATE_CHUNK] = chunk;
        request->host_private[DMA_PRIVATE_MESSAGE] = session->next_message_id;
        session->dma_in_flight = true;
        session->dma_sent_usec = vu_monotonic_usec();
    }
    session->dma_pumping = false;
}

int vu_session_set_dma_chunk_size(struct vu_session *session, uint32_t bytes)
{
    if (!vu_dma_chunk_size_valid(bytes))
        return -EINVAL;
    session->dma_chunk_size = bytes;
    return 0;
}

int vu_session_dma_submit(struct vu_session *session, struct vfio_userd_dma_request *request)
{
    if (session->closing)
        return -ECONNRESET;
    if (!session->negotiated)
        return -ENOTCONN;
    request->host_private[DMA_PRIVATE_NEXT] = 0;
    request->host_private[DMA_PRIVATE_DONE] = 0;
    if (session->dma_tail != NULL)
        session->dma_tail->host_private[DMA_PRIVATE_NEXT] = (uint64_t)(uintptr_t)request;
    else
        session->dma_head = request;
    session->dma_tail = request;
    dma_pump(session);
    return -EINPROGRESS;
}

uint64_t vu_session_dma_deadline(const struct vu_session *session, uint64_t timeout_usec)
{
    return session->dma_in_flight ? session->dma_sent_usec + timeout_usec : 0;
}

void vu_session_dma_expire(struct vu_session *session)
{
    if (session->dma_head == NULL || !session->dma_in_flight)
        return;
    log_misbehaviour(session, "client did not answer %s (id %u) in time; the transfer failed",
                     session->dma_head->to_client ? "DMA_WRITE" : "DMA_READ",
                     (unsigned)(uint16_t)session->dma_head->host_private[DMA_PRIVATE_MESSAGE]);
    /* A late answer carries an id no longer awaited, and is ignored. */
    dma_complete_head(session, -ETIMEDOUT);
    dma_pump(session);
}

void vu_session_output_drained(struct vu_session *session)
{
    dma_pump(session);
}

/* A reply from the client to our DMA_READ/DMA_WRITE. */
static void handle_dma_reply(struct vu_session *session, const struct vu_header *header,
                             const uint8_t *payload, size_t length)
{
    struct vfio_userd_dma_request *request = session->dma_head;
    struct vu_dma_reply reply;
    uint64_t chunk, done;
    uint16_t expected;

    if (request == NULL || !session->dma_in_flight ||
        header->message_id != (uint16_t)request->host_private[DMA_PRIVATE_MESSAGE]) {
        log_misbehaviour(session, "client sent an unexpected reply (id %u, command %s); ignored",
                         header->message_id, vu_wire_command_name(header->command));
        return;
    }
    expected = request->to_client ? VU_COMMAND_DMA_WRITE : VU_COMMAND_DMA_READ;
    chunk = request->host_private[DMA_PRIVATE_CHUNK];
    done = request->host_private[DMA_PRIVATE_DONE];
    if (header->flags & VU_FLAGS_ERROR) {
        dma_complete_head(session,
                          header->error > 0 && header->error < 4096 ? -(int)header->error : -EIO);
        goto out;
    }
    if (header->command != expected) {
        log_misbehaviour(session, "client answered %s (id %u) as %s; the transfer failed",
                         vu_wire_command_name(expected), header->message_id,
                         vu_wire_command_name(header->command));
        dma_complete_head(session, -EPROTO);
        goto out;
    }
    /* Read by the fields sent, never by the length alone: a chunk read 4 bytes off would
     * reach the device as good data. */
    if (vu_wire_decode_dma_reply(request->to_client, payload, length, request->address + done,
                                 chunk, session->dma_layout, &reply) < 0) {
        log_misbehaviour(session,
                         "client's %s reply (id %u, %zu bytes, for %" PRIu64 " bytes at 0x%" PRIx64
                         ") %s; the transfer failed",
                         vu_wire_command_name(expected), header->message_id, length, chunk,
                         request->address + done, reply.problem);
        dma_complete_head(session, -EPROTO);
        goto out;
    }
    if (!request->to_client) {
        if (session->dma_layout == VU_DMA_LAYOUT_UNKNOWN && reply.layout != VU_DMA_LAYOUT_UNKNOWN) {
            session->dma_layout = reply.layout;
            vu_log(VFIO_USERD_LOG_DEBUG, session->device->name,
                   "client answers DMA_READ with a %s-bit count",
                   reply.layout == VU_DMA_LAYOUT_COUNT32 ? "32" : "64");
        }
        memcpy((uint8_t *)request->buffer + done, payload + reply.data_offset, chunk);
    }
    request->host_private[DMA_PRIVATE_DONE] = done + chunk;
    session->dma_in_flight = false;
    if (done + chunk == request->length)
        dma_complete_head(session, 0);
out:
    dma_pump(session);
}

/* ---------------------------------------------------------------------------------------
 * Commands.
 */

static int handle_version(struct vu_session *session, const uint8_t *payload, size_t length,
                          struct reply *reply)
{
    const struct vu_capabilities server_limits = {
        .max_msg_fds = VU_SERVER_MAX_MSG_FDS,
        .max_data_xfer_size = VU_SERVER_MAX_DATA_XFER_SIZE,
        .max_dma_maps = VU_SERVER_MAX_DMA_MAPS,
        .pgsizes = VU_DEFAULT_PGSIZES,
        .write_multiple = true,
        .twin_socket = true,
    };
    struct vu_capabilities negotiated;
    struct vu_version version;
    char *json = NULL;
    size_t json_length;
    uint16_t minor;
    int pair[2] = {-1, -1};
    int ret;

    if (session->negotiated || length < sizeof(version))
        return -EINVAL;
    memcpy(&version, payload, sizeof(version));
    ret = vu_wire_negotiate_version(
        version.major, version.minor, (const char *)payload + sizeof(version),
        length - sizeof(version), &server_limits, true, &negotiated, &minor, &json);
    if (ret == -ENOTSUP) {
        vu_log(VFIO_USERD_LOG_WARNING, session->device->name,
               "client proposed protocol %u.%u; closing (this server speaks %u.x)", version.major,
               version.minor, VU_VERSION_MAJOR);
        session->closing = true;
    }
    if (ret < 0)
        return ret;
    json_length = strlen(json) + 1;
    if (sizeof(version) + json_length > reply->capacity) {
        ret = -E2BIG;
        goto out;
    }
    if (negotiated.twin_socket) {
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, pair) < 0) {
            ret = -errno;
            goto out;
        }
        session->twin_socket = pair[0];
        reply->fds[reply->fd_count++] = pair[1];
    }
    version = (struct vu_version){.major = VU_VERSION_MAJOR, .minor = minor};
    memcpy(reply->payload, &version, sizeof(version));
    memcpy(reply->payload + sizeof(version), json, json_length);
    reply->length = sizeof(version) + json_length;
    session->client = negotiated;
    session->write_multiple = negotiated.write_multiple;
    session->negotiated = true;
    session->device->dma.limit = negotiated.max_dma_maps;
out:
    free(json);
    return ret;
}

static int handle_dma_map(struct vu_session *session, const uint8_t *payload, size_t length,
                          int *fds, size_t fd_count)
{
    struct vu_dma_map map;
    int fd;

    if (length != sizeof(map) || fd_count > 1)
        return -EINVAL;
    memcpy(&map, payload, sizeof(map));
    if (map.argsz != sizeof(map))
        return -EINVAL;
    fd = fd_count == 1 ? fds[0] : -1;
    if (fd_count == 1)
        fds[0] = -1;
    return vu_device_dma_map(session->device, &map, fd);
}

/* The DMA_UNMAP or DEVICE_RESET itself, and its reply. */
static int carry_out(struct vu_session *session, struct held_command *command, struct reply *reply)
{
    struct vu_dma_unmap *unmap = &command->unmap;
    int ret;

    if (command->header.command == VU_COMMAND_DEVICE_RESET) {
        ret = vu_device_reset(session->device);
    } else {
        ret = vu_device_dma_unmap(session->device, unmap);
        if (ret == 0) {
            unmap->argsz = sizeof(*unmap);
            memcpy(reply->payload, unmap, sizeof(*unmap));
            reply->length = sizeof(*unmap);
        }
    }
    return ret;
}

/* Carries out a checked DMA_UNMAP or DEVICE_RESET; the device was quiesced for it. */
static int run_quiescing_command(struct vu_session *session, struct held_command *command,
                                 struct reply *reply)
{
    int ret = carry_out(session, command, reply);

    vu_device_resume(session->device);
    return ret;
}

/*
 * DMA_UNMAP and DEVICE_RESET take memory or state from under the device, so it quiesces
 * first (ABI 1.1). The request is checked before: a refused one never disturbs the
 * device. When the device needs time, the command is held (COMMAND_HELD).
 */
static int handle_quiescing_command(struct vu_session *session, const struct vu_header *header,
                                    const uint8_t *payload, size_t length, struct reply *reply)
{
    struct held_command command = {.header = *header};
    int ret = 1;

    if (header->command == VU_COMMAND_DMA_UNMAP) {
        if (length != sizeof(command.unmap))
            return -EINVAL;
        memcpy(&command.unmap, payload, sizeof(command.unmap));
        if (command.unmap.argsz < sizeof(command.unmap))
            return -EINVAL;
        ret = vu_device_dma_unmap_check(session->device, &command.unmap);
        if (ret < 0)
            return ret;
    } else if (length != 0) {
        return -EINVAL;
    }
    /* Nothing to take away: no quiesce of its own, so none (a control-plane reset's, say)
     * to end either. */
    if (ret == 0)
        return carry_out(session, &command, reply);
    if (vu_device_quiesce(session->device) == -EBUSY) {
        command.present = true;
        session->held = command;
        return COMMAND_HELD;
    }
    return run_quiescing_command(session, &command, reply);
}

static int handle_device_get_info(struct vu_session *session, const uint8_t *payload, size_t length,
                                  struct reply *reply)
{
    struct vu_device_info info;

    if (length != sizeof(info))
        return -EINVAL;
    memcpy(&info, payload, sizeof(info));
    if (info.argsz < sizeof(info))
        return -EINVAL;
    vu_device_get_info(session->device, &info);
    memcpy(reply->payload, &info, sizeof(info));
    reply->length = sizeof(info);
    return 0;
}

static int handle_get_region_info(struct vu_session *session, const uint8_t *payload, size_t length,
                                  struct reply *reply)
{
    struct vfio_region_info request;
    int fd, ret;

    if (length != sizeof(request))
        return -EINVAL;
    memcpy(&request, payload, sizeof(request));
    ret = vu_device_get_region_info(session->device, request.index, request.argsz, reply->payload,
                                    reply->capacity, &reply->length, &fd);
    if (ret < 0)
        return ret;
    if (fd >= 0) {
        if (session->client.max_msg_fds == 0) {
            /* The client takes no descriptors: the region stays trapped. */
            struct vfio_region_info info;
            memcpy(&info, reply->payload, sizeof(info));
            info.flags &= ~(uint32_t)(VFIO_REGION_INFO_FLAG_MMAP);
            memcpy(reply->payload, &info, sizeof(info));
            return 0;
        }
        fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
        if (fd < 0)
            return -errno;
        reply->fds[reply->fd_count++] = fd;
    }
    return 0;
}

static int handle_get_region_io_fds(struct vu_session *session, const uint8_t *payload,
                                    size_t length, struct reply *reply)
{
    const struct vu_device *device = session->device;
    struct vu_region_io_fds_request request;
    uint32_t count = 0, asked;
    size_t needed;
    int ret = 0;

    if (length != sizeof(request))
        return -EINVAL;
    memcpy(&request, payload, sizeof(request));
    if (request.argsz < sizeof(request) || request.flags != 0 ||
        request.index >= VFIO_PCI_NUM_REGIONS || vu_device_region_size(device, request.index) == 0)
        return -EINVAL;
    for (uint32_t i = 0; i < device->ioeventfd_count; i++)
        count += device->ioeventfds[i].region == request.index;
    needed = sizeof(request) + (size_t)count * sizeof(struct vu_region_io_fd);
    asked = request.argsz;
    request = (struct vu_region_io_fds_request){
        .argsz = (uint32_t)needed, .flags = 0, .index = request.index, .count = count};
    reply->length = sizeof(request);
    if (asked < needed) {
        /* Too small an argsz: the header alone says how much is needed. */
        memcpy(reply->payload, &request, sizeof(request));
        return 0;
    }
    if (count > session->client.max_msg_fds)
        return -E2BIG; /* the client could not take the descriptors */
    memcpy(reply->payload, &request, sizeof(request));
    for (uint32_t i = 0, n = 0; i < device->ioeventfd_count; i++) {
        const struct vu_ioeventfd *entry = &device->ioeventfds[i];
        struct vu_region_io_fd out;
        int fd;

        if (entry->region != request.index)
            continue;
        fd = fcntl(entry->fd, F_DUPFD_CLOEXEC, 0);
        if (fd < 0) {
            ret = -errno;
            break;
        }
        reply->fds[reply->fd_count++] = fd;
        out = (struct vu_region_io_fd){
            .offset = entry->offset,
            .size = entry->size,
            .fd_index = n,
            .type = VU_IO_FD_TYPE_IOEVENTFD,
            .flags =
                ((entry->flags & VFIO_USERD_IOEVENTFD_DATAMATCH) ? VU_KVM_IOEVENTFD_DATAMATCH : 0) |
                ((device->regions[entry->region].description.flags & VFIO_USERD_BAR_IO)
                     ? VU_KVM_IOEVENTFD_PIO
                     : 0),
            .datamatch = entry->value,
        };
        memcpy(reply->payload + sizeof(request) + n * sizeof(out), &out, sizeof(out));
        n++;
    }
    if (ret == 0)
        reply->length = needed;
    return ret;
}

static int handle_get_irq_info(struct vu_session *session, const uint8_t *payload, size_t length,
                               struct reply *reply)
{
    struct vfio_irq_info info;
    int ret;

    if (length != sizeof(info))
        return -EINVAL;
    memcpy(&info, payload, sizeof(info));
    if (info.argsz < sizeof(info))
        return -EINVAL;
    ret = vu_device_get_irq_info(session->device, info.index, &info);
    if (ret < 0)
        return ret;
    memcpy(reply->payload, &info, sizeof(info));
    reply->length = sizeof(info);
    return 0;
}

static int handle_set_irqs(struct vu_session *session, const uint8_t *payload, size_t length,
                           int *fds, size_t fd_count)
{
    struct vfio_irq_set set;

    if (length < sizeof(set))
        return -EINVAL;
    memcpy(&set, payload, sizeof(set));
    if (set.argsz < sizeof(set) || set.argsz > length)
        return -EINVAL;
    return vu_device_set_irqs(session->device, &set, payload + sizeof(set), set.argsz - sizeof(set),
                              fds, fd_count);
}

/* Bounds and permission checks shared by every region access path. */
static int check_region_access(struct vu_session *session, uint32_t region, uint64_t offset,
                               uint32_t count, bool is_write)
{
    uint64_t size = vu_device_region_size(session->device, region);

    if (count == 0 || count > VU_SERVER_MAX_DATA_XFER_SIZE)
        return -EINVAL;
    if (!vu_device_region_allows(session->device, region, is_write))
        return -EINVAL;
    if (offset >= size || count > size - offset)
        return -EINVAL;
    return 0;
}

static int handle_region_read(struct vu_session *session, const uint8_t *payload, size_t length,
                              struct reply *reply)
{
    struct vu_region_access access;
    int ret;

    if (length != sizeof(access))
        return -EINVAL;
    memcpy(&access, payload, sizeof(access));
    ret = check_region_access(session, access.region, access.offset, access.count, false);
    if (ret < 0)
        return ret;
    if (sizeof(access) + access.count > reply->capacity)
        return -E2BIG;
    ret = vu_device_region_access(session->device, access.region, access.offset,
                                  reply->payload + sizeof(access), access.count, false);
    if (ret < 0)
        return ret;
    memcpy(reply->payload, &access, sizeof(access));
    reply->length = sizeof(access) + access.count;
    return 0;
}

static int handle_region_write(struct vu_session *session, const uint8_t *payload, size_t length,
                               struct reply *reply)
{
    struct vu_region_access access;
    int ret;

    if (length < sizeof(access))
        return -EINVAL;
    memcpy(&access, payload, sizeof(access));
    if (length - sizeof(access) != access.count)
        return -EINVAL;
    ret = check_region_access(session, access.region, access.offset, access.count, true);
    if (ret < 0)
        return ret;
    if (access.count <= sizeof(uint64_t)) {
        /* A register write: the data lies wherever the message fell in the transport's
         * buffer, so give the device an aligned copy, as for a read. */
        uint64_t value = 0;
        memcpy(&value, payload + sizeof(access), access.count);
        ret = vu_device_region_access(session->device, access.region, access.offset, &value,
                                      access.count, true);
    } else {
        /* The payload buffer is the transport's and is not reused until we return. */
        ret = vu_device_region_access(session->device, access.region, access.offset,
                                      (void *)(payload + sizeof(access)), access.count, true);
    }
    if (ret < 0)
        return ret;
    memcpy(reply->payload, &access, sizeof(access));
    reply->length = sizeof(access);
    return 0;
}

static int handle_region_write_multi(struct vu_session *session, const uint8_t *payload,
                                     size_t length, struct reply *reply)
{
    const size_t entry_size = sizeof(struct vu_write_multi_entry);
    uint64_t count;
    int ret;

    if (!session->write_multiple)
        return -ENOTSUP;
    if (length < sizeof(count))
        return -EINVAL;
    memcpy(&count, payload, sizeof(count));
    if (count == 0 || count > (length - sizeof(count)) / entry_size ||
        length != sizeof(count) + count * entry_size)
        return -EINVAL;
    /* Validate all before applying any, so a bad entry leaves the device untouched. */
    for (uint64_t i = 0; i < count; i++) {
        struct vu_write_multi_entry entry;
        memcpy(&entry, payload + sizeof(count) + i * entry_size, entry_size);
        if (entry.count > sizeof(entry.data))
            return -EINVAL;
        ret = check_region_access(session, entry.region, entry.offset, entry.count, true);
        if (ret < 0)
            return ret;
    }
    for (uint64_t i = 0; i < count; i++) {
        struct vu_write_multi_entry entry;
        memcpy(&entry, payload + sizeof(count) + i * entry_size, entry_size);
        ret = vu_device_region_access(session->device, entry.region, entry.offset, entry.data,
                                      entry.count, true);
        if (ret < 0)
            return ret;
    }
    memcpy(reply->payload, &count, sizeof(count));
    reply->length = sizeof(count);
    return 0;
}

static int dispatch(struct vu_session *session, const struct vu_header *header,
                    const uint8_t *payload, size_t length, int *fds, size_t fd_count,
                    struct reply *reply)
{
    bool takes_fds =
        header->command == VU_COMMAND_DMA_MAP || header->command == VU_COMMAND_DEVICE_SET_IRQS;

    if (fd_count > 0 && !takes_fds)
        return -EINVAL;
    if (!session->negotiated && header->command != VU_COMMAND_VERSION)
        return -EINVAL;

    switch (header->command) {
    case VU_COMMAND_VERSION:
        return handle_version(session, payload, length, reply);
    case VU_COMMAND_DMA_MAP:
        return handle_dma_map(session, payload, length, fds, fd_count);
    case VU_COMMAND_DMA_UNMAP:
    case VU_COMMAND_DEVICE_RESET:
        return handle_quiescing_command(session, header, payload, length, reply);
    case VU_COMMAND_DEVICE_GET_INFO:
        return handle_device_get_info(session, payload, length, reply);
    case VU_COMMAND_DEVICE_GET_REGION_INFO:
        return handle_get_region_info(session, payload, length, reply);
    case VU_COMMAND_DEVICE_GET_REGION_IO_FDS:
        return handle_get_region_io_fds(session, payload, length, reply);
    case VU_COMMAND_DEVICE_GET_IRQ_INFO:
        return handle_get_irq_info(session, payload, length, reply);
    case VU_COMMAND_DEVICE_SET_IRQS:
        return handle_set_irqs(session, payload, length, fds, fd_count);
    case VU_COMMAND_REGION_READ:
        return handle_region_read(session, payload, length, reply);
    case VU_COMMAND_REGION_WRITE:
        return handle_region_write(session, payload, length, reply);
    case VU_COMMAND_REGION_WRITE_MULTI:
        return handle_region_write_multi(session, payload, length, reply);
    case VU_COMMAND_DMA_READ:
    case VU_COMMAND_DMA_WRITE:
        return -EINVAL; /* server-to-client commands */
    case VU_COMMAND_DEVICE_FEATURE:
    case VU_COMMAND_MIG_DATA_READ:
    case VU_COMMAND_MIG_DATA_WRITE:
        return -ENOTSUP; /* migration is not offered yet */
    default:
        return -ENOSYS;
    }
}

static void close_fds(int *fds, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        if (fds[i] >= 0)
            close(fds[i]);
        fds[i] = -1;
    }
}

/* Queues the header-only error reply to `header`; `out` was reserved at the queue's tail. */
static void commit_error_reply(struct vu_output_queue *queue, uint8_t *out,
                               const struct vu_header *header, int error)
{
    vu_wire_encode_header(out, header->message_id, header->command, VU_HEADER_SIZE,
                          VU_FLAGS_TYPE_REPLY | VU_FLAGS_ERROR, (uint32_t)-error);
    vu_output_queue_commit(queue, VU_HEADER_SIZE);
}

void vu_session_reject_message(struct vu_session *session, const struct vu_header *header,
                               int error)
{
    struct vu_output_queue *queue = &session->output[VU_CHANNEL_MAIN];
    uint8_t *out;

    if (header->command <= VU_COMMAND_MAX)
        session->device->statistics.messages[header->command]++;
    session->device->statistics.errors++;
    vu_log(VFIO_USERD_LOG_DEBUG, session->device->name, "rejected %s (id %u): %s",
           vu_wire_command_name(header->command), header->message_id, strerror(-error));
    /* Anything but a reply gets an answer: a message of an unknown type is most likely a
     * command from a client newer than this server, which waits for one. */
    if ((header->flags & VU_FLAGS_TYPE_MASK) == VU_FLAGS_TYPE_REPLY ||
        (header->flags & VU_FLAGS_NO_REPLY))
        return;
    out = vu_output_queue_reserve(queue, VU_HEADER_SIZE);
    if (out != NULL)
        commit_error_reply(queue, out, header, error);
}

/* Queues the reply to `header` that `reply` holds at `out` (or an error reply for `ret` < 0);
 * nothing when the client asked for none. */
static void commit_reply(struct vu_session *session, const struct vu_header *header, uint8_t *out,
                         struct reply *reply, int ret)
{
    struct vu_output_queue *queue = &session->output[VU_CHANNEL_MAIN];
    bool no_reply = (header->flags & VU_FLAGS_NO_REPLY) != 0;

    if (ret < 0) {
        session->device->statistics.errors++;
        close_fds(reply->fds, reply->fd_count);
        vu_log(VFIO_USERD_LOG_DEBUG, session->device->name, "%s (id %u) failed: %s",
               vu_wire_command_name(header->command), header->message_id, strerror(-ret));
        if (!no_reply)
            commit_error_reply(queue, out, header, ret);
        return;
    }
    if (no_reply) {
        close_fds(reply->fds, reply->fd_count);
        return;
    }
    if (reply->fd_count > 0) {
        ret = vu_output_queue_attach_fds(queue, reply->fds, reply->fd_count);
        if (ret < 0) {
            commit_error_reply(queue, out, header, ret);
            return;
        }
    }
    vu_wire_encode_header(out, header->message_id, header->command,
                          (uint32_t)(VU_HEADER_SIZE + reply->length), VU_FLAGS_TYPE_REPLY, 0);
    vu_output_queue_commit(queue, VU_HEADER_SIZE + reply->length);
}

bool vu_session_holding(const struct vu_session *session)
{
    return session->held.present;
}

int vu_session_run_held(struct vu_session *session)
{
    struct vu_output_queue *queue = &session->output[VU_CHANNEL_MAIN];
    struct held_command command;
    struct reply reply = {0};
    uint8_t *out;
    int ret;

    /* Called before every request: nothing is copied while nothing is held. */
    if (!session->held.present || !vu_device_quiesce_done(session->device) ||
        !vu_session_ready(session))
        return 0;
    command = session->held;
    out = vu_output_queue_reserve(queue, VU_MAX_MESSAGE_SIZE);
    if (out == NULL)
        return 0;
    session->held.present = false;
    reply.payload = out + VU_HEADER_SIZE;
    reply.capacity = VU_MAX_MESSAGE_SIZE - VU_HEADER_SIZE;
    session->dma_pumping = true;
    ret = run_quiescing_command(session, &command, &reply);
    session->dma_pumping = false;
    commit_reply(session, &command.header, out, &reply, ret);
    dma_pump(session);
    return 1;
}

int vu_session_handle_message(struct vu_session *session, enum vu_channel channel,
                              const struct vu_header *header, const uint8_t *payload,
                              size_t payload_length, int *fds, size_t fd_count)
{
    struct vu_output_queue *queue = &session->output[VU_CHANNEL_MAIN];
    struct vu_device_statistics *statistics = &session->device->statistics;
    struct reply reply = {0};
    uint8_t *out;
    int ret;

    if ((header->flags & VU_FLAGS_TYPE_MASK) == VU_FLAGS_TYPE_REPLY) {
        close_fds(fds, fd_count);
        handle_dma_reply(session, header, payload, payload_length);
        return 0;
    }
    if (channel == VU_CHANNEL_TWIN) {
        /* The twin socket carries only our commands and the client's replies. */
        close_fds(fds, fd_count);
        log_misbehaviour(session, "client sent command %s on the twin socket; ignored",
                         vu_wire_command_name(header->command));
        return 0;
    }
    if (header->command <= VU_COMMAND_MAX)
        statistics->messages[header->command]++;

    out = vu_output_queue_reserve(queue, VU_MAX_MESSAGE_SIZE);
    if (out == NULL) {
        close_fds(fds, fd_count);
        return -ENOBUFS; /* the transport checks vu_session_ready() first */
    }
    reply.payload = out + VU_HEADER_SIZE;
    reply.capacity = VU_MAX_MESSAGE_SIZE - VU_HEADER_SIZE;

    /* DMA messages a device queues meanwhile must not land inside the reply being built. */
    session->dma_pumping = true;
    ret = dispatch(session, header, payload, payload_length, fds, fd_count, &reply);
    session->dma_pumping = false;
    close_fds(fds, fd_count);
    if (ret != COMMAND_HELD)
        commit_reply(session, header, out, &reply, ret);
    dma_pump(session);
    return session->closing ? -EPROTO : 0;
}
