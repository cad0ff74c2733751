/*
 * vfio-user wire format: message header, command numbers and the fixed payload layouts of
 * QEMU's docs/interop/vfio-user.rst, plus pure decoding and validation helpers that work on
 * byte buffers only (no sockets), so they can be unit-tested and fuzzed.
 *
 * Where the spec reuses a <linux/vfio.h> structure (region info, IRQ info, IRQ set, sparse
 * mmap capability) that structure is used as is. All fields are in host byte order.
 */
#ifndef VU_WIRE_H
#define VU_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <linux/vfio.h>

enum vu_command {
    VU_COMMAND_VERSION = 1,
    VU_COMMAND_DMA_MAP = 2,
    VU_COMMAND_DMA_UNMAP = 3,
    VU_COMMAND_DEVICE_GET_INFO = 4,
    VU_COMMAND_DEVICE_GET_REGION_INFO = 5,
    VU_COMMAND_DEVICE_GET_REGION_IO_FDS = 6,
    VU_COMMAND_DEVICE_GET_IRQ_INFO = 7,
    VU_COMMAND_DEVICE_SET_IRQS = 8,
    VU_COMMAND_REGION_READ = 9,
    VU_COMMAND_REGION_WRITE = 10,
    VU_COMMAND_DMA_READ = 11,
    VU_COMMAND_DMA_WRITE = 12,
    VU_COMMAND_DEVICE_RESET = 13,
    VU_COMMAND_REGION_WRITE_MULTI = 15,
    VU_COMMAND_DEVICE_FEATURE = 16,
    VU_COMMAND_MIG_DATA_READ = 17,
    VU_COMMAND_MIG_DATA_WRITE = 18,
    VU_COMMAND_MAX = 18,
};

#define VU_HEADER_SIZE        16u
#define VU_FLAGS_TYPE_MASK    0xfu
#define VU_FLAGS_TYPE_COMMAND 0x0u
#define VU_FLAGS_TYPE_REPLY   0x1u
#define VU_FLAGS_NO_REPLY     (1u << 4)
#define VU_FLAGS_ERROR        (1u << 5)

/* Protocol version this implementation speaks, and the spec's defaults and limits. */
#define VU_VERSION_MAJOR              0
#define VU_VERSION_MINOR              1
#define VU_DEFAULT_MAX_MSG_FDS        1u
#define VU_DEFAULT_MAX_DATA_XFER_SIZE (1u << 20)
#define VU_DEFAULT_MAX_DMA_MAPS       65535u
#define VU_DEFAULT_PGSIZES            4096u
/* The largest VERSION JSON we accept; real ones are a few hundred bytes. */
#define VU_VERSION_JSON_MAX 4096u
/* What this server offers. */
#define VU_SERVER_MAX_MSG_FDS        16u
#define VU_SERVER_MAX_DATA_XFER_SIZE (1u << 20)
#define VU_SERVER_MAX_DMA_MAPS       1024u
/* Bytes a message may carry besides the data of a transfer (headers of the largest
 * command around a max_data_xfer_size payload). */
#define VU_MESSAGE_OVERHEAD 64u

struct vu_header {
    uint16_t message_id;
    uint16_t command;
    uint32_t message_size; /* header included */
    uint32_t flags;
    uint32_t error;
} __attribute__((packed));

struct vu_version {
    uint16_t major;
    uint16_t minor;
    char data[]; /* optional NUL-terminated JSON */
} __attribute__((packed));

#define VU_DMA_FLAG_READABLE (1u << 0)
#define VU_DMA_FLAG_WRITABLE (1u << 1)

struct vu_dma_map {
    uint32_t argsz;
    uint32_t flags;
    uint64_t offset;
    uint64_t address;
    uint64_t size;
} __attribute__((packed));

/* Unmap every range (the spec leaves this to VFIO's semantics; QEMU does not send it). */
#define VU_DMA_UNMAP_FLAG_ALL (1u << 1)

struct vu_dma_unmap {
    uint32_t argsz;
    uint32_t flags;
    uint64_t address;
    uint64_t size;
} __attribute__((packed));

struct vu_device_info {
    uint32_t argsz;
    uint32_t flags;
    uint32_t num_regions;
    uint32_t num_irqs;
} __attribute__((packed));

struct vu_region_io_fds_request {
    uint32_t argsz;
    uint32_t flags;
    uint32_t index;
    uint32_t count;
} __attribute__((packed));

#define VU_IO_FD_TYPE_IOEVENTFD  0u
#define VU_IO_FD_TYPE_IOREGIONFD 1u

/* Sub-region flags: KVM's ioeventfd flags (<linux/kvm.h>), which the client passes on. */
#define VU_KVM_IOEVENTFD_DATAMATCH (1u << 0)
#define VU_KVM_IOEVENTFD_PIO       (1u << 1)

struct vu_region_io_fd {
    uint64_t offset;
    uint64_t size;
    uint32_t fd_index;
    uint32_t type;
    uint32_t flags;
    uint32_t padding;
    uint64_t datamatch;
} __attribute__((packed));

/* REGION_READ / REGION_WRITE request and reply. */
struct vu_region_access {
    uint64_t offset;
    uint32_t region;
    uint32_t count;
    uint8_t data[];
} __attribute__((packed));

/* DMA_READ / DMA_WRITE, server to client, and the spec's DMA_READ reply. */
struct vu_dma_access {
    uint64_t address;
    uint64_t count;
    uint8_t data[];
} __attribute__((packed));

/*
 * How a client lays out DMA_READ and DMA_WRITE. The spec's has a 64-bit count, the data at
 * payload offset 16; QEMU 11.1 follows it. Earlier QEMU clients (10.2) use a 32-bit count,
 * the data at offset 12, in a structure padded to 8 bytes: a message is as long as the
 * spec's, with 4 zero bytes after the data. The two can only be told apart by the bytes in
 * a reply, so the session remembers what a client's earlier replies showed, and writes its
 * DMA_WRITE requests in that layout once it knows.
 */
enum vu_dma_layout {
    VU_DMA_LAYOUT_UNKNOWN = 0,
    VU_DMA_LAYOUT_COUNT64, /* u64 address, u64 count, data */
    VU_DMA_LAYOUT_COUNT32, /* u64 address, u32 count, data, then none or 4 zero bytes */
};

struct vu_dma_reply {
    /* The layout the reply showed, or UNKNOWN when both read alike (and for DMA_WRITE). */
    enum vu_dma_layout layout;
    size_t data_offset;  /* DMA_READ: where the `count` bytes start in the payload */
    const char *problem; /* after -EPROTO: what is wrong, for a log line */
};

struct vu_write_multi_entry {
    uint64_t offset;
    uint32_t region;
    uint32_t count; /* at most 8 */
    uint8_t data[8];
} __attribute__((packed));

struct vu_write_multi {
    uint64_t write_count;
    struct vu_write_multi_entry writes[];
} __attribute__((packed));

_Static_assert(sizeof(struct vu_header) == 16, "header layout");
_Static_assert(sizeof(struct vu_dma_map) == 32, "DMA_MAP layout");
_Static_assert(sizeof(struct vu_dma_unmap) == 24, "DMA_UNMAP layout");
_Static_assert(sizeof(struct vu_device_info) == 16, "DEVICE_GET_INFO layout");
_Static_assert(sizeof(struct vfio_region_info) == 32, "region info layout");
_Static_assert(sizeof(struct vfio_irq_info) == 16, "IRQ info layout");
_Static_assert(sizeof(struct vfio_irq_set) == 20, "IRQ set layout");
_Static_assert(sizeof(struct vu_region_io_fd) == 40, "IO FD entry layout");
_Static_assert(sizeof(struct vu_write_multi_entry) == 24, "write multi entry layout");

/* Capabilities one side of a VERSION exchange announces (defaults of the spec applied). */
struct vu_capabilities {
    uint32_t max_msg_fds;
    uint32_t max_data_xfer_size;
    uint32_t max_dma_maps;
    uint64_t pgsizes;
    bool write_multiple;
    bool twin_socket;
};

/* The spec's defaults, for a side that sent no JSON or left a capability out. */
void vu_capabilities_defaults(struct vu_capabilities *capabilities);

/*
 * Decodes the 16-byte header in `buffer` and checks what can be checked without context:
 * size at least the header, type command or reply, reserved flag bits clear.
 * Returns 0 or -EINVAL / -EPROTO.
 */
int vu_wire_decode_header(const void *buffer, size_t length, struct vu_header *header);

/* Writes a header. */
void vu_wire_encode_header(void *buffer, uint16_t message_id, uint16_t command,
                           uint32_t message_size, uint32_t flags, uint32_t error);

/*
 * Parses the JSON of a VERSION payload (`json` of `length` bytes, NUL-terminated or not)
 * into `capabilities`, starting from the spec's defaults. A missing or empty JSON means
 * all defaults. Unknown capabilities are ignored, as the spec asks; known ones of the wrong
 * type or out of range are -EINVAL.
 */
int vu_wire_parse_capabilities(const char *json, size_t length,
                               struct vu_capabilities *capabilities);

/*
 * The server's VERSION negotiation: from the client's proposal and the server's own
 * limits, the capabilities in force for the session and the reply JSON (NUL-terminated,
 * malloc'ed, into *reply_json). `twin_socket_offered` says whether the server will pass a
 * socket (then fd_index 0 is announced). Returns 0, or -ENOTSUP for an unsupported major
 * version, -EINVAL for bad JSON, -ENOMEM.
 */
int vu_wire_negotiate_version(uint16_t client_major, uint16_t client_minor, const char *json,
                              size_t json_length, const struct vu_capabilities *server_limits,
                              bool twin_socket_offered, struct vu_capabilities *session,
                              uint16_t *reply_minor, char **reply_json);

/* Builds the client's VERSION JSON from `capabilities` (malloc'ed, NUL-terminated). */
char *vu_wire_format_capabilities(const struct vu_capabilities *capabilities,
                                  int twin_socket_fd_index);

/*
 * Decodes a client's reply to the server's DMA_READ (`is_write` false) or DMA_WRITE of
 * `count` bytes at `address`, whose payload is `length` bytes. A DMA_READ reply must name
 * the same address and count, in either layout; `known` is the layout the client's
 * earlier replies showed (UNKNOWN if none did), and decides a reply both layouts fit with
 * different data. A DMA_WRITE reply may be empty (QEMU's), or the address and a 32-bit
 * (the spec's) or 64-bit count. Returns 0, or -EPROTO with reply->problem set for a reply
 * that cannot be read without guessing: another address or count, a length no layout
 * gives, a layout other than the client's earlier one, or a reply both layouts fit that
 * reads differently in each before the client's layout is known.
 */
int vu_wire_decode_dma_reply(bool is_write, const void *payload, size_t length, uint64_t address,
                             uint64_t count, enum vu_dma_layout known, struct vu_dma_reply *reply);

/*
 * The payload of a server-to-client DMA_READ (data NULL) or DMA_WRITE: address, count and,
 * for DMA_WRITE, the `count` data bytes, in `layout` (UNKNOWN is the spec's). Either way it
 * is sizeof(struct vu_dma_access) + (data ? count : 0) bytes, so a client of either layout
 * finds the length it expects; the two read a DMA_READ request alike.
 */
void vu_wire_encode_dma_access(void *payload, uint64_t address, uint64_t count, const void *data,
                               enum vu_dma_layout layout);

/* A printable name for a command number, for logs ("REGION_READ", "unknown"). */
const char *vu_wire_command_name(uint16_t command);

#endif /* VU_WIRE_H */
