/*
 * vfio-userd plugin ABI: the one header a device model includes.
 *
 * A plugin is a shared object that exports one constant, VFIO_USERD_PLUGIN_SYMBOL, of type
 * struct vfio_userd_plugin (use VFIO_USERD_PLUGIN_DEFINE). For each device instance the host
 * calls the plugin's create() with an opaque struct vfio_userd_device and the device's
 * parameters; create() validates the parameters and declares the device through the host
 * table: PCI identity, regions, capabilities, callbacks. From then on the host serves the
 * vfio-user protocol and calls the plugin back for what only the device model knows.
 *
 * Threading: all callbacks of one device run on one thread, the device's worker, and the
 * host functions may be called only from that thread (or from create()). A plugin needs no
 * locks for its per-device state. The exceptions (ABI 1.1) are post(), which any thread
 * may call to have a function run on the device's thread, and irq_trigger(); a plugin's own
 * threads may also use client memory that the device's thread translated, until the device
 * next quiesces (see quiesce in struct vfio_userd_device_ops). They reach everything else
 * through post().
 *
 * Versioning: the host refuses a plugin whose abi_major differs from its own or whose
 * abi_minor is newer. Minor versions only append members to the end of the tables below,
 * so a plugin checks host->size before calling a member added after 1.0. The structures a
 * plugin fills in and hands over (device ops, regions, PCI identity) start, since 1.1, with
 * `struct_size`: set it to sizeof the structure, or leave it 0 for the layout of the
 * header the plugin was built with, so that later versions can append members to them.
 *
 * Errors are negative errno values throughout. See vfio-userd-plugin(3).
 */
#ifndef VFIO_USERD_PLUGIN_H
#define VFIO_USERD_PLUGIN_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/uio.h>
#include <jansson.h>

#ifdef __cplusplus
extern "C" {
#endif

#define VFIO_USERD_ABI_MAJOR 1
#define VFIO_USERD_ABI_MINOR 1

/* Name of the exported struct vfio_userd_plugin the loader looks up with dlsym(). */
#define VFIO_USERD_PLUGIN_SYMBOL "vfio_userd_plugin"

/* Region indexes; they are the VFIO PCI region indexes of <linux/vfio.h>. */
enum vfio_userd_region_index {
    VFIO_USERD_REGION_BAR0 = 0,
    VFIO_USERD_REGION_BAR1 = 1,
    VFIO_USERD_REGION_BAR2 = 2,
    VFIO_USERD_REGION_BAR3 = 3,
    VFIO_USERD_REGION_BAR4 = 4,
    VFIO_USERD_REGION_BAR5 = 5,
    VFIO_USERD_REGION_ROM = 6,
    VFIO_USERD_REGION_CONFIG = 7, /* emulated by the host; plugins do not add it */
    VFIO_USERD_REGION_COUNT = 9,  /* 8 is VGA, which the host never offers */
};

/* Interrupt types; they are the VFIO PCI IRQ indexes of <linux/vfio.h>. */
enum vfio_userd_irq_index {
    VFIO_USERD_IRQ_INTX = 0,
    VFIO_USERD_IRQ_MSI = 1,
    VFIO_USERD_IRQ_MSIX = 2,
    VFIO_USERD_IRQ_ERR = 3,
    VFIO_USERD_IRQ_REQ = 4,
    VFIO_USERD_IRQ_COUNT = 5,
};

/* syslog(3) priorities, so log lines reach the journal at the right level. */
enum vfio_userd_log_level {
    VFIO_USERD_LOG_ERR = 3,
    VFIO_USERD_LOG_WARNING = 4,
    VFIO_USERD_LOG_NOTICE = 5,
    VFIO_USERD_LOG_INFO = 6,
    VFIO_USERD_LOG_DEBUG = 7,
};

/*
 * The part of a device the plugin sees. The host's device object starts with it; the rest
 * is private to the host.
 */
struct vfio_userd_device {
    const struct vfio_userd_host *host;
};

/* Where create() explains a refusal; `field` names the offending parameter, if any. */
struct vfio_userd_error {
    char field[64];
    char message[256];
};

/* Region flags (struct vfio_userd_region.flags). */
#define VFIO_USERD_REGION_READABLE (1u << 0)
#define VFIO_USERD_REGION_WRITABLE (1u << 1)
/* The host allocates shared memory of `size` bytes for the region (see region_memory). */
#define VFIO_USERD_REGION_MEMORY (1u << 2)
/* The client may mmap() the memory (requires MEMORY): whole, or only the sparse areas. */
#define VFIO_USERD_REGION_MAPPABLE (1u << 3)
/* BAR kind, for BAR0-5 only: an I/O BAR, a 64-bit memory BAR (takes the next BAR index
 * too), a prefetchable memory BAR. */
#define VFIO_USERD_BAR_IO           (1u << 8)
#define VFIO_USERD_BAR_64BIT        (1u << 9)
#define VFIO_USERD_BAR_PREFETCHABLE (1u << 10)

struct vfio_userd_sparse_area {
    uint64_t offset;
    uint64_t size;
};

/*
 * Trapped region access. `data` holds `count` bytes to write, or receives `count` bytes
 * read. Returns 0 or a negative errno, which the client receives in its error reply.
 */
typedef int (*vfio_userd_region_access_fn)(void *instance, uint32_t region, uint64_t offset,
                                           void *data, uint32_t count, bool is_write);

struct vfio_userd_region {
    uint32_t struct_size; /* sizeof(struct vfio_userd_region), or 0 (ABI 1.1) */
    /* BARs: a power of two, at least 16 bytes (4 for I/O); ROM: a power of two >= 2 KiB. */
    uint64_t size;
    uint32_t flags;
    /* With MAPPABLE: the page-aligned parts the client may map; none means all of it. */
    uint32_t sparse_area_count;
    const struct vfio_userd_sparse_area *sparse_areas;
    /* Called for every REGION_READ/WRITE that reaches the region, outside the MSI-X table
     * and PBA the host emulates. May be NULL for a MEMORY region: the host then reads and
     * writes the memory itself. */
    vfio_userd_region_access_fn access;
};

/* PCI identity and interrupt pin; written into the type-0 header. */
struct vfio_userd_pci_identity {
    uint32_t struct_size; /* sizeof(struct vfio_userd_pci_identity), or 0 (ABI 1.1) */
    uint16_t vendor_id;
    uint16_t device_id;
    uint16_t subsystem_vendor_id;
    uint16_t subsystem_id;
    uint32_t class_code; /* base class << 16 | subclass << 8 | programming interface */
    uint8_t revision;
    uint8_t interrupt_pin; /* 0: no INTx; 1-4: INTA#-INTD# */
};

/* DMA access rights, for dma_translate() and dma_map notices. */
#define VFIO_USERD_DMA_READ  (1u << 0)
#define VFIO_USERD_DMA_WRITE (1u << 1)

/*
 * An asynchronous DMA transfer between `buffer` and client memory at `address`. When the
 * client shared the memory with a file descriptor the copy is done at once; otherwise the
 * host exchanges DMA_READ/DMA_WRITE messages with the client and calls complete() later.
 * The request and buffer must stay valid until then. The host links queued requests
 * through host_private, in place, so this layout is frozen: a later version that needs
 * more adds a new request type rather than growing this one.
 */
struct vfio_userd_dma_request {
    uint64_t address;
    void *buffer;
    uint64_t length;
    bool to_client; /* true: buffer -> client memory (DMA write) */
    void (*complete)(struct vfio_userd_dma_request *request, int status);
    void *opaque;
    uint64_t host_private[6];
};

/* Callbacks the plugin gives the host; every member may be NULL. */
struct vfio_userd_device_ops {
    uint32_t struct_size; /* sizeof(struct vfio_userd_device_ops), or 0 (ABI 1.1) */
    /* DEVICE_RESET from the client. Registers go back to their defaults. */
    int (*reset)(void *instance);
    /* The client added or removed a DMA range. After dma_unmap returns, no pointer
     * obtained from dma_translate() into the range may be used. */
    void (*dma_map)(void *instance, uint64_t address, uint64_t size, uint32_t access);
    void (*dma_unmap)(void *instance, uint64_t address, uint64_t size);
    /* SET_IRQS changed the eventfds or masks of an interrupt type. */
    void (*irq_state)(void *instance, enum vfio_userd_irq_index irq);
    void (*client_connect)(void *instance);
    /* The client went away; its DMA maps and eventfds are already released. */
    void (*client_disconnect)(void *instance);
    /* The device is being removed; free the instance. Called even while a quiesce is
     * pending: destroy() stops the device's I/O before it returns. */
    void (*destroy)(void *instance);

    /* --- Added in 1.1. --- */

    /*
     * The host is about to take client memory away or reset the device: a DMA_UNMAP, a
     * DEVICE_RESET, or the client's departure while it had memory mapped. The device stops
     * starting DMA (from every thread of its own) and finishes or cancels what is in
     * flight. Return 0 when that is done, or -EBUSY to finish later: then call
     * host->quiesced() (on the device's thread; post() it from another) once nothing
     * touches client memory any more. Until then the host carries out nothing the client
     * asks: its next commands wait in the socket (replies to the device's own DMA
     * messages are still handled), and a new client waits to be accepted. Then the host
     * does what it quiesced for (dma_unmap, reset, client_disconnect) and calls resume().
     * Any other return is logged and treated as 0: the client's request cannot be refused.
     * Without this callback the host goes ahead at once, and dma_unmap must not return
     * while the range is in use.
     */
    int (*quiesce)(void *instance);
    /* After the operation a quiesce was for: the device may start DMA again. */
    void (*resume)(void *instance);
};

/* An event source of add_fd() or add_timer() (ABI 1.1); opaque to the plugin. */
struct vfio_userd_source;
struct vfio_userd_host_limits;

/* What the host offers a device. Only append new members (see the ABI rules above). */
struct vfio_userd_host {
    uint32_t size; /* sizeof the host's table, for members added in later minor versions */

    /* --- Declaration: only valid inside create(). --- */
    int (*set_ops)(struct vfio_userd_device *device, const struct vfio_userd_device_ops *ops,
                   void *instance);
    int (*pci_set_identity)(struct vfio_userd_device *device,
                            const struct vfio_userd_pci_identity *identity);
    int (*add_region)(struct vfio_userd_device *device, enum vfio_userd_region_index index,
                      const struct vfio_userd_region *region);
    int (*pci_add_power_management)(struct vfio_userd_device *device);
    /* vectors: 1, 2, 4, 8, 16 or 32; always 64-bit capable. */
    int (*pci_add_msi)(struct vfio_userd_device *device, uint32_t vectors, bool per_vector_mask);
    /* The host emulates the table and PBA inside the given BARs (each 8-byte aligned:
     * the low 3 bits of their offsets hold the BAR index). */
    int (*pci_add_msix)(struct vfio_userd_device *device, uint32_t vectors, uint32_t table_bar,
                        uint32_t table_offset, uint32_t pba_bar, uint32_t pba_offset);
    /* A PCI Express endpoint capability; config space grows to 4 KiB. */
    int (*pci_add_express)(struct vfio_userd_device *device);
    /* A vendor-specific capability; `data` is its body after the 3-byte header. */
    int (*pci_add_vendor_specific)(struct vfio_userd_device *device, const void *data,
                                   uint8_t length);

    /* --- Run time: only on the device's thread. --- */
    /* The host memory behind a MEMORY region, or NULL. */
    void *(*region_memory)(struct vfio_userd_device *device, enum vfio_userd_region_index index);
    /* A pointer to `length` bytes of client memory at `address` with the given access,
     * or NULL when that range is not one directly mapped DMA range. It stays valid until
     * dma_unmap of the range; for a device with a quiesce callback the host never unmaps
     * before the device has quiesced, so the plugin's own threads may use the pointer
     * (the kernel's I/O to it included) until they report the quiesce done. */
    void *(*dma_translate)(struct vfio_userd_device *device, uint64_t address, uint64_t length,
                           uint32_t access);
    /* 0 when done at once, -EINPROGRESS when complete() will be called, else -errno
     * (-EFAULT: not mapped, -EACCES: mapped without that access). */
    int (*dma_submit)(struct vfio_userd_device *device, struct vfio_userd_dma_request *request);
    /* Raise `vector` through the interrupt the client enabled: MSI-X, else MSI, else INTx.
     * Returns -ENOTCONN when none is enabled, -EINVAL for a vector out of range. A masked
     * vector becomes pending and fires when unmasked. Since 1.1 any thread may call it:
     * from another thread than the device's, the vector is marked and raised from the
     * device's thread (which owns the MSI-X mask and pending state) as soon as it runs,
     * and the call returns 0 or -EINVAL; raises of one vector that meet there become one
     * interrupt, as they may on real hardware. */
    int (*irq_trigger)(struct vfio_userd_device *device, uint32_t vector);
    /* Signal one specific interrupt (e.g. VFIO_USERD_IRQ_ERR, 0). */
    int (*irq_signal)(struct vfio_userd_device *device, enum vfio_userd_irq_index irq,
                      uint32_t subindex);
    /* Reads emulated config space (e.g. to see the command register). */
    int (*pci_config_read)(struct vfio_userd_device *device, uint32_t offset, void *data,
                           uint32_t count);
    void (*log)(struct vfio_userd_device *device, enum vfio_userd_log_level level,
                const char *format, va_list args);
    const char *(*name)(struct vfio_userd_device *device);

    /* --- Parameter helpers, usable anywhere. --- */
    /* Fails with a message naming the first key of `params` not in the NULL-ended list. */
    int (*params_check_keys)(const json_t *params, const char *const *allowed,
                             struct vfio_userd_error *error);
    /* An integer parameter: a JSON integer or a string such as "4096", "0x1af4", "1M"
     * (K, M, G: powers of 1024). Missing: `fallback`. Outside [min, max]: -ERANGE. */
    int (*params_get_u64)(const json_t *params, const char *key, uint64_t fallback, uint64_t min,
                          uint64_t max, uint64_t *value, struct vfio_userd_error *error);

    /* Commands received from clients, by vfio-user command number, errors included,
     * over the device's life: an array of VFIO_USERD_MESSAGE_COUNTERS entries. */
    const uint64_t *(*message_counters)(struct vfio_userd_device *device);

    /*
     * Declaration, only inside create(): lets the client deliver `size`-byte writes (1, 2,
     * 4 or 8) at `offset` of region `index` through an eventfd the host creates, which the
     * client may hand to KVM as an ioeventfd (DEVICE_GET_REGION_IO_FDS), so that a guest's
     * doorbell write reaches the device without a trip through the VMM. When the eventfd
     * fires, the host calls the region's access callback as a write of `value`: with
     * VFIO_USERD_IOEVENTFD_DATAMATCH only writes of that value fire it; without, the value
     * written is not known and `value` stands in for it. The region needs an access
     * callback. At most VFIO_USERD_MAX_IOEVENTFDS per device.
     */
    int (*add_ioeventfd)(struct vfio_userd_device *device, enum vfio_userd_region_index index,
                         uint64_t offset, uint32_t size, uint32_t flags, uint64_t value);

    /* --- Added in 1.1: check host->size before calling (VFIO_USERD_HOST_HAS). --- */

    /*
     * Opens a file the device needs, such as a disk image, and returns its descriptor
     * (close-on-exec; the plugin owns it) or -errno. Usable in create() and at run time,
     * on the device's thread. `path` must be absolute and must appear, exactly as written,
     * as a string value among the device's parameters (-EACCES otherwise): a plugin opens
     * what the administrator named, nothing else. `flags` are open(2)'s: an access mode,
     * with O_CREAT, O_EXCL, O_TRUNC, O_APPEND, O_DIRECT, O_DSYNC, O_SYNC, O_NOATIME and
     * O_NOFOLLOW allowed (-EINVAL for others); `mode` applies with O_CREAT. In process
     * isolation the daemon opens the file with its own rights and passes the descriptor
     * to the sandboxed device host, which could not open it itself.
     */
    int (*open_file)(struct vfio_userd_device *device, const char *path, int flags,
                     unsigned int mode);

    /*
     * Event sources on the device's own event loop, the one its region accesses and DMA
     * completions are served from: a worker thread of the daemon or the device host
     * process, alike. Usable in create() (the source starts working once the device is
     * served) and at run time on the device's thread. Each callback runs on that thread,
     * like any other callback of the device: with its SIGBUS guard, and followed by the
     * sending of what it queued (DMA messages, their deadline). A source is removed by
     * remove_source(), or with the device: the host removes what is left after destroy().
     * Returns 0 with *source set, or -errno (-EINVAL, -ENOMEM).
     *
     * add_fd() watches `fd` (which the plugin keeps and closes after removing the source)
     * for `events` (EPOLLIN, EPOLLOUT, ... of <sys/epoll.h>), level-triggered; `revents`
     * says what happened.
     */
    int (*add_fd)(struct vfio_userd_device *device, int fd, uint32_t events,
                  void (*callback)(void *opaque, int fd, uint32_t revents), void *opaque,
                  struct vfio_userd_source **source);
    /* A one-shot CLOCK_MONOTONIC timer that fires `usec` microseconds from now (0: at the
     * next loop iteration), to microsecond accuracy; VFIO_USERD_TIMER_OFF: created off. */
    int (*add_timer)(struct vfio_userd_device *device, uint64_t usec,
                     void (*callback)(void *opaque), void *opaque,
                     struct vfio_userd_source **source);
    /* Re-arms a timer of add_timer() to fire `usec` from now, replacing any earlier
     * deadline, or disarms it with VFIO_USERD_TIMER_OFF. -EINVAL for an fd source. */
    int (*timer_set)(struct vfio_userd_device *device, struct vfio_userd_source *source,
                     uint64_t usec);
    /* Removes a source of add_fd() or add_timer(); its callback is not called again, and
     * a callback may remove its own source. NULL is ignored. */
    void (*remove_source)(struct vfio_userd_device *device, struct vfio_userd_source *source);

    /*
     * Runs `function(opaque)` on the device's thread soon, in the order posted; callable
     * from ANY thread, including the plugin's own (the only host function that is). The
     * function runs as any other callback (SIGBUS guard, output sent afterwards) and may
     * call every host function, irq_trigger() and dma_translate() included. The queue is
     * lock-free (one atomic exchange per post); the post that makes it non-empty takes a
     * short lock, and writes an eventfd only when no other device of the loop has posts
     * waiting (the devices of one loop share one eventfd). 0 or -ENOMEM. A plugin stops posting
     * before its destroy() returns: functions still queued when the device goes are dropped, never
     * called.
     */
    int (*post)(struct vfio_userd_device *device, void (*function)(void *opaque), void *opaque);

    /* What this host allows the device, at run time (see struct vfio_userd_host_limits);
     * valid until the next call. Usable anywhere on the device's thread and in create(). */
    const struct vfio_userd_host_limits *(*limits)(struct vfio_userd_device *device);

    /*
     * Scatter-gather: the `length` bytes of client memory at `address`, with `access`, as
     * pieces of host memory in `pieces` (at most `max`), one for each DMA range the span
     * crosses (neighbours that continue each other in host memory are joined). Returns how
     * many pieces, or -EFAULT (part of the span is not directly mapped: use dma_submit()),
     * -EACCES (mapped without that access), -ENOBUFS (more than `max` pieces), -EINVAL. The
     * pointers are valid as dma_translate()'s are: until dma_unmap of their range. A device
     * whose descriptors (PRP lists, virtqueue buffers) cross the boundary between two maps
     * of guest RAM, which QEMU makes around device holes, needs this. On the device's thread.
     */
    int (*dma_scatter)(struct vfio_userd_device *device, uint64_t address, uint64_t length,
                       uint32_t access, struct iovec *pieces, uint32_t max);

    /* The quiesce the host asked for (ops->quiesce returned -EBUSY) is done; on the
     * device's thread. -EINVAL when none is pending. */
    int (*quiesced)(struct vfio_userd_device *device);
};

/* add_timer()/timer_set(): no deadline. */
#define VFIO_USERD_TIMER_OFF UINT64_MAX

/*
 * The host's limits, as limits() reports them. `size` is the structure's size in this
 * host; a member beyond it (a plugin built for a later version) is not there: check with
 * VFIO_USERD_LIMITS_HAS before reading it.
 */
struct vfio_userd_host_limits {
    uint32_t size;
    uint32_t max_ioeventfds;   /* add_ioeventfd() per device */
    uint32_t max_dma_maps;     /* DMA ranges the connected client may map (else the most) */
    uint32_t max_msix_vectors; /* pci_add_msix() */
    uint32_t max_msi_vectors;  /* pci_add_msi() */
    uint32_t max_sparse_areas; /* per region */
    uint32_t max_client_fds;   /* interrupt eventfds one client may make the device hold */
};

#define VFIO_USERD_LIMITS_HAS(limits, member)                                                      \
    ((limits)->size >= offsetof(struct vfio_userd_host_limits, member) + sizeof((limits)->member))

/* Whether the host table has `member` (added in a later minor version than 1.0). */
#define VFIO_USERD_HOST_HAS(host, member)                                                          \
    ((host)->size >= offsetof(struct vfio_userd_host, member) + sizeof((host)->member))

#define VFIO_USERD_MESSAGE_COUNTERS 19

/* add_ioeventfd() flags. */
#define VFIO_USERD_IOEVENTFD_DATAMATCH (1u << 0)
/* At most this many I/O eventfds per device (limits() says the same at run time). */
#define VFIO_USERD_MAX_IOEVENTFDS 16

struct vfio_userd_plugin {
    uint32_t abi_major;
    uint32_t abi_minor;
    const char *name; /* what device files put in `plugin:` */
    const char *version;
    const char *description;
    /* Validate `params` (never NULL: an empty object when none were given) and declare
     * the device. On failure return -errno and fill `error`; the host then frees whatever
     * was declared, and calls ops->destroy if set_ops was called. */
    int (*create)(struct vfio_userd_device *device, const json_t *params,
                  struct vfio_userd_error *error);
};

#define VFIO_USERD_PLUGIN_DEFINE(...)                                                              \
    __attribute__((visibility("default"))) const struct vfio_userd_plugin vfio_userd_plugin = {    \
        .abi_major = VFIO_USERD_ABI_MAJOR, .abi_minor = VFIO_USERD_ABI_MINOR, __VA_ARGS__}

/* Convenience wrappers so plugin code reads as plain calls. */
static inline const struct vfio_userd_host *vfio_userd_host_of(struct vfio_userd_device *device)
{
    return device->host;
}

__attribute__((format(printf, 3, 4))) static inline void
vfio_userd_log(struct vfio_userd_device *device, enum vfio_userd_log_level level,
               const char *format, ...)
{
    va_list args;
    va_start(args, format);
    device->host->log(device, level, format, args);
    va_end(args);
}

/* Fills `error` and returns `errno_value` (negative), for one-line error returns. */
__attribute__((format(printf, 4, 5))) static inline int
vfio_userd_error_set(struct vfio_userd_error *error, int errno_value, const char *field,
                     const char *format, ...)
{
    va_list args;
    if (error != NULL) {
        snprintf(error->field, sizeof(error->field), "%s", field != NULL ? field : "");
        va_start(args, format);
        vsnprintf(error->message, sizeof(error->message), format, args);
        va_end(args);
    }
    return errno_value;
}

#ifdef __cplusplus
}
#endif

#endif /* VFIO_USERD_PLUGIN_H */
