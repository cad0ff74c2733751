/*
 * vfio-user wire helpers: header encoding and decoding, and the VERSION capability JSON
 * (parsing, negotiation, formatting). Pure functions over buffers; see wire.h.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>

#include "wire.h"

void vu_capabilities_defaults(struct vu_capabilities *capabilities)
{
    *capabilities = (struct vu_capabilities){
        .max_msg_fds = VU_DEFAULT_MAX_MSG_FDS,
        .max_data_xfer_size = VU_DEFAULT_MAX_DATA_XFER_SIZE,
        .max_dma_maps = VU_DEFAULT_MAX_DMA_MAPS,
        .pgsizes = VU_DEFAULT_PGSIZES,
        .write_multiple = false,
        .twin_socket = false,
    };
}

int vu_wire_decode_header(const void *buffer, size_t length, struct vu_header *header)
{
    uint32_t type;

    if (length < VU_HEADER_SIZE)
        return -EINVAL;
    memcpy(header, buffer, sizeof(*header));
    if (header->message_size < VU_HEADER_SIZE)
        return -EINVAL;
    type = header->flags & VU_FLAGS_TYPE_MASK;
    if (type != VU_FLAGS_TYPE_COMMAND && type != VU_FLAGS_TYPE_REPLY)
        return -EPROTO;
    if (header->flags & ~(VU_FLAGS_TYPE_MASK | VU_FLAGS_NO_REPLY | VU_FLAGS_ERROR))
        return -EPROTO;
    return 0;
}

void vu_wire_encode_header(void *buffer, uint16_t message_id, uint16_t command,
                           uint32_t message_size, uint32_t flags, uint32_t error)
{
    struct vu_header header = {
        .message_id = message_id,
        .command = command,
        .message_size = message_size,
        .flags = flags,
        .error = error,
    };
    memcpy(buffer, &header, sizeof(header));
}

/* A JSON number that must be a non-negative integer no larger than `max`. */
static int capability_integer(json_t *object, const char *key, uint64_t max, uint64_t *value)
{
    json_t *member = json_object_get(object, key);
    json_int_t number;

    if (member == NULL)
        return 0;
    if (!json_is_integer(member))
        return -EINVAL;
    number = json_integer_value(member);
    if (number < 0 || (uint64_t)number > max)
        return -EINVAL;
    *value = (uint64_t)number;
    return 0;
}

int vu_wire_parse_capabilities(const char *json, size_t length,
                               struct vu_capabilities *capabilities)
{
    json_t *root = NULL, *caps, *member;
    json_error_t json_error;
    uint64_t value;
    int ret = 0;

    vu_capabilities_defaults(capabilities);
    /* The JSON is NUL-terminated on the wire; tolerate its absence and trailing NULs. */
    while (length > 0 && json[length - 1] == '\0')
        length--;
    if (length == 0)
        return 0;
    if (length > VU_VERSION_JSON_MAX || memchr(json, '\0', length) != NULL)
        return -EINVAL;

    root = json_loadb(json, length, JSON_REJECT_DUPLICATES, &json_error);
    if (root == NULL || !json_is_object(root)) {
        ret = -EINVAL;
        goto out;
    }
    caps = json_object_get(root, "capabilities");
    if (caps == NULL)
        goto out;
    if (!json_is_object(caps)) {
        ret = -EINVAL;
        goto out;
    }

    value = capabilities->max_msg_fds;
    if ((ret = capability_integer(caps, "max_msg_fds", UINT32_MAX, &value)) < 0)
        goto out;
    capabilities->max_msg_fds = (uint32_t)value;

    value = capabilities->max_data_xfer_size;
    if ((ret = capability_integer(caps, "max_data_xfer_size", UINT32_MAX, &value)) < 0)
        goto out;
    capabilities->max_data_xfer_size = (uint32_t)value;

    value = capabilities->max_dma_maps;
    if ((ret = capability_integer(caps, "max_dma_maps", UINT32_MAX, &value)) < 0)
        goto out;
    capabilities->max_dma_maps = (uint32_t)value;

    value = capabilities->pgsizes;
    if ((ret = capability_integer(caps, "pgsizes", UINT64_MAX, &value)) < 0)
        goto out;
    capabilities->pgsizes = value;

    member = json_object_get(caps, "write_multiple");
    if (member != NULL) {
        if (!json_is_boolean(member)) {
            ret = -EINVAL;
            goto out;
        }
        capabilities->write_multiple = json_is_true(member);
    }

    member = json_object_get(caps, "twin_socket");
    if (member != NULL) {
        json_t *supported = json_object_get(member, "supported");
        if (!json_is_object(member) || (supported != NULL && !json_is_boolean(supported))) {
            ret = -EINVAL;
            goto out;
        }
        capabilities->twin_socket = json_is_true(supported);
    }

out:
    json_decref(root);
    return ret;
}

static char *format_json(const struct vu_capabilities *capabilities, int twin_socket_fd_index)
{
    json_t *root = NULL, *caps, *twin;
    char *text = NULL;

    root = json_object();
    caps = json_object();
    if (root == NULL || caps == NULL || json_object_set_new(root, "capabilities", caps) < 0) {
        json_decref(caps);
        goto out;
    }
    if (json_object_set_new(caps, "max_msg_fds", json_integer(capabilities->max_msg_fds)) < 0 ||
        json_object_set_new(caps, "max_data_xfer_size",
                            json_integer(capabilities->max_data_xfer_size)) < 0 ||
        json_object_set_new(caps, "max_dma_maps", json_integer(capabilities->max_dma_maps)) < 0 ||
        json_object_set_new(caps, "pgsizes", json_integer((json_int_t)capabilities->pgsizes)) < 0 ||
        json_object_set_new(caps, "write_multiple", json_boolean(capabilities->write_multiple)) < 0)
        goto out;
    if (capabilities->twin_socket) {
        twin = json_object();
        if (twin == NULL || json_object_set_new(caps, "twin_socket", twin) < 0 ||
            json_object_set_new(twin, "supported", json_true()) < 0)
            goto out;
        if (twin_socket_fd_index >= 0 &&
            json_object_set_new(twin, "fd_index", json_integer(twin_socket_fd_index)) < 0)
            goto out;
    }
    text = json_dumps(root, JSON_COMPACT);
out:
    json_decref(root);
    return text;
}

char *vu_wire_format_capabilities(const struct vu_capabilities *capabilities,
                                  int twin_socket_fd_index)
{
    return format_json(capabilities, twin_socket_fd_index);
}

static uint32_t min_u32(uint32_t a, uint32_t b)
{
    return a < b ? a : b;
}

int vu_wire_negotiate_version(uint16_t client_major, uint16_t client_minor, const char *json,
                              size_t json_length, const struct vu_capabilities *server_limits,
                              bool twin_socket_offered, struct vu_capabilities *session,
                              uint16_t *reply_minor, char **reply_json)
{
    struct vu_capabilities client;
    int ret;

    if (client_major != VU_VERSION_MAJOR)
        return -ENOTSUP;
    ret = vu_wire_parse_capabilities(json, json_length, &client);
    if (ret < 0)
        return ret;

    /*
     * max_msg_fds and max_data_xfer_size describe what the *sender* can receive, so the
     * reply states the server's own limits; the client's values bound what the server may
     * send (kept in `session` for the server's use by the caller). The reply is a subset
     * of what the client proposed, as the spec requires.
     */
    *session = (struct vu_capabilities){
        .max_msg_fds = client.max_msg_fds,
        .max_data_xfer_size = client.max_data_xfer_size,
        .max_dma_maps = min_u32(client.max_dma_maps, server_limits->max_dma_maps),
        .pgsizes = client.pgsizes & server_limits->pgsizes,
        .write_multiple = client.write_multiple && server_limits->write_multiple,
        .twin_socket = client.twin_socket && twin_socket_offered,
    };
    if (session->pgsizes == 0)
        return -EINVAL;
    if (session->max_data_xfer_size == 0)
        return -EINVAL;

    struct vu_capabilities reply = {
        .max_msg_fds = server_limits->max_msg_fds,
        .max_data_xfer_size = server_limits->max_data_xfer_size,
        .max_dma_maps = session->max_dma_maps,
        .pgsizes = session->pgsizes,
        .write_multiple = session->write_multiple,
        .twin_socket = session->twin_socket,
    };
    *reply_minor = client_minor < VU_VERSION_MINOR ? client_minor : VU_VERSION_MINOR;
    *reply_json = format_json(&reply, session->twin_socket ? 0 : -1);
    return *reply_json != NULL ? 0 : -ENOMEM;
}

static uint64_t get_u64(const uint8_t *bytes)
{
    uint64_t value;

    memcpy(&value, bytes, sizeof(value));
    return value;
}

static uint32_t get_u32(const uint8_t *bytes)
{
    uint32_t value;

    memcpy(&value, bytes, sizeof(value));
    return value;
}

void vu_wire_encode_dma_access(void *payload, uint64_t address, uint64_t count, const void *data,
                               enum vu_dma_layout layout)
{
    uint8_t *bytes = payload;
    uint32_t count32 = (uint32_t)count;

    memcpy(bytes, &address, sizeof(address));
    if (data != NULL && layout == VU_DMA_LAYOUT_COUNT32) {
        /* u32 count, the data at offset 12, then the 4 bytes of padding. */
        memcpy(bytes + 8, &count32, sizeof(count32));
        memcpy(bytes + 12, data, count);
        memset(bytes + 12 + count, 0, 4);
        return;
    }
    memcpy(bytes + 8, &count, sizeof(count));
    if (data != NULL)
        memcpy(bytes + sizeof(struct vu_dma_access), data, count);
}

static int dma_reply_problem(struct vu_dma_reply *reply, const char *problem)
{
    reply->problem = problem;
    return -EPROTO;
}

int vu_wire_decode_dma_reply(bool is_write, const void *payload, size_t length, uint64_t address,
                             uint64_t count, enum vu_dma_layout known, struct vu_dma_reply *reply)
{
    const uint8_t *bytes = payload;
    bool fits64, fits32, long_form, short_form;

    *reply = (struct vu_dma_reply){.layout = VU_DMA_LAYOUT_UNKNOWN};
    if (is_write) {
        if (length == 0)
            return 0;
        if (length != 12 && length != 16)
            return dma_reply_problem(reply, "has a length no layout gives");
        if (get_u64(bytes) != address)
            return dma_reply_problem(reply, "names another address");
        if ((length == 12 ? get_u32(bytes + 8) : get_u64(bytes + 8)) != count)
            return dma_reply_problem(reply, "names another count");
        return 0;
    }

    /* The data follows a 64-bit count (16 + count bytes) or a 32-bit one (12 + count, or
     * 16 + count with zero padding after the data). */
    long_form = length >= 16 && length - 16 == count;
    short_form = length >= 12 && length - 12 == count;
    if (!long_form && !short_form)
        return dma_reply_problem(reply, "has a length no layout gives");
    if (get_u64(bytes) != address)
        return dma_reply_problem(reply, "names another address");
    fits64 = long_form && get_u64(bytes + 8) == count;
    fits32 = get_u32(bytes + 8) == count && (short_form || get_u32(bytes + 12 + count) == 0);
    if (!fits64 && !fits32)
        return dma_reply_problem(reply, get_u32(bytes + 8) != count
                                            ? "names another count"
                                            : "has a 32-bit count but no zero padding after "
                                              "the data, and no 64-bit count");
    if (fits64 && fits32) {
        /* Bytes 12-15 are zero, and so are the last four: only the client tells. */
        if (known == VU_DMA_LAYOUT_UNKNOWN && memcmp(bytes + 12, bytes + 16, count) != 0)
            return dma_reply_problem(reply, "reads differently with a 32-bit and a 64-bit "
                                            "count, and no earlier reply showed which");
        reply->layout = known;
        reply->data_offset = known == VU_DMA_LAYOUT_COUNT32 ? 12 : 16;
        return 0;
    }
    reply->layout = fits64 ? VU_DMA_LAYOUT_COUNT64 : VU_DMA_LAYOUT_COUNT32;
    if (known != VU_DMA_LAYOUT_UNKNOWN && known != reply->layout)
        return dma_reply_problem(reply, "has another layout than the client's earlier replies");
    reply->data_offset = fits64 ? 16 : 12;
    return 0;
}

const char *vu_wire_command_name(uint16_t command)
{
    static const char *const names[] = {
        [VU_COMMAND_VERSION] = "VERSION",
        [VU_COMMAND_DMA_MAP] = "DMA_MAP",
        [VU_COMMAND_DMA_UNMAP] = "DMA_UNMAP",
        [VU_COMMAND_DEVICE_GET_INFO] = "DEVICE_GET_INFO",
        [VU_COMMAND_DEVICE_GET_REGION_INFO] = "DEVICE_GET_REGION_INFO",
        [VU_COMMAND_DEVICE_GET_REGION_IO_FDS] = "DEVICE_GET_REGION_IO_FDS",
        [VU_COMMAND_DEVICE_GET_IRQ_INFO] = "DEVICE_GET_IRQ_INFO",
        [VU_COMMAND_DEVICE_SET_IRQS] = "DEVICE_SET_IRQS",
        [VU_COMMAND_REGION_READ] = "REGION_READ",
        [VU_COMMAND_REGION_WRITE] = "REGION_WRITE",
        [VU_COMMAND_DMA_READ] = "DMA_READ",
        [VU_COMMAND_DMA_WRITE] = "DMA_WRITE",
        [VU_COMMAND_DEVICE_RESET] = "DEVICE_RESET",
        [VU_COMMAND_REGION_WRITE_MULTI] = "REGION_WRITE_MULTI",
        [VU_COMMAND_DEVICE_FEATURE] = "DEVICE_FEATURE",
        [VU_COMMAND_MIG_DATA_READ] = "MIG_DATA_READ",
        [VU_COMMAND_MIG_DATA_WRITE] = "MIG_DATA_WRITE",
    };

    if (command < sizeof(names) / sizeof(names[0]) && names[command] != NULL)
        return names[command];
    return "unknown";
}
