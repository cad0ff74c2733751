/*
 * The per-device engine: one emulated PCI device built from a plugin's declarations.
 *
 * It owns what outlives a client connection (regions and their memory, PCI config space,
 * the MSI-X table, the plugin instance) and what a client attaches while connected (DMA
 * ranges, interrupt eventfds). It implements the plugin host table and the device side of
 * every vfio-user command; the session (session.h) decodes messages and calls in here. It
 * knows nothing of sockets.
 */
#ifndef VU_DEVICE_H
#define VU_DEVICE_H

#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <jansson.h>
#include <linux/vfio.h>
#include <systemd/sd-event.h>

#include <vfio-userd/plugin.h>

#include "dma_table.h"
#include "msix.h"
#include "pci_config.h"
#include "wire.h"

struct vu_session;
struct vu_endpoint;
struct vu_loop;

/* An event source a plugin added (ABI 1.1 add_fd, add_timer); see "Event loop" in device.c. */
struct vfio_userd_source {
    struct vu_device *device;
    struct vfio_userd_source *next, *previous; /* the device's list */
    bool is_timer;
    int fd;
    uint32_t events;
    void (*fd_callback)(void *opaque, int fd, uint32_t revents);
    void (*timer_callback)(void *opaque);
    void *opaque;
    uint64_t deadline;             /* timers: CLOCK_MONOTONIC usec, or VFIO_USERD_TIMER_OFF */
    sd_event_source *event_source; /* while the device is attached to a loop */
};

/* Quiesce (ABI 1.1): none asked; the plugin finishes its I/O; it has (or has no callback). */
enum vu_quiesce_state {
    VU_QUIESCE_NONE,
    VU_QUIESCE_WAITING,
    VU_QUIESCE_DONE,
};

/* A function post()ed to the device's thread. */
struct vu_post {
    void (*function)(void *opaque);
    void *opaque;
    struct vu_post *next;
};

struct vu_region_state {
    bool present;
    struct vfio_userd_region description; /* sparse_areas points at our copy below */
    struct vfio_userd_sparse_area *sparse_areas;
    int memory_fd; /* MEMORY regions: a memfd the client may map; else -1 */
    uint8_t *memory;
};

struct vu_irq_state {
    uint32_t count;
    uint32_t info_flags; /* VFIO_IRQ_INFO_* */
    int *trigger_fds;    /* [count]; -1 when unset */
    int *mask_fds;       /* [count]; signalled when the vector becomes masked */
    int *unmask_fds;     /* [count]; signalled when the vector becomes unmasked */
    bool *masked;        /* [count] */
    bool *pending;       /* [count]: raised while masked */
};

/* A region offset whose writes may arrive through an eventfd (plugin add_ioeventfd). */
struct vu_ioeventfd {
    uint32_t region;
    uint32_t size;
    uint64_t offset;
    uint32_t flags; /* VFIO_USERD_IOEVENTFD_* */
    uint64_t value;
    int fd;
};

/* Counters the control plane reports (device_get) and testdev exposes. */
struct vu_device_statistics {
    uint64_t messages[VU_COMMAND_MAX + 1]; /* by command number, errors included */
    uint64_t errors;                       /* commands answered with an error */
    uint64_t bytes_received;
    uint64_t bytes_sent;
    uint64_t connections; /* clients accepted over the device's life */
};

struct vu_device {
    struct vfio_userd_device public; /* first: plugins see only this */
    char *name;
    const struct vfio_userd_plugin *plugin;
    struct vfio_userd_device_ops ops;
    void *instance;
    bool declaring; /* inside create(): declaration calls allowed */
    bool ops_set;
    json_t *params;

    struct vfio_userd_pci_identity identity;
    struct vu_region_state regions[VFIO_USERD_REGION_COUNT];
    struct vu_pci_config config;
    struct vu_msix msix;
    struct vu_irq_state irqs[VFIO_USERD_IRQ_COUNT];

    struct vu_ioeventfd ioeventfds[VFIO_USERD_MAX_IOEVENTFDS];
    uint32_t ioeventfd_count;

    struct vu_dma_table dma;
    /* Set by the SIGBUS guard (fault_guard.h): the client shrank memory it shared. */
    volatile sig_atomic_t dma_fault;
    struct vu_session *session; /* the connected client's session, or NULL */
    /* The client's eventfds the device holds (SET_IRQS), and the most it may hold. */
    uint32_t client_fds;
    uint32_t max_client_fds;
    bool client_fds_warned; /* this client was told in the log once */
    struct vu_device_statistics statistics;

    /* ABI 1.1: the loop serving the device (vu_device_attach_loop), the plugin's sources on
     * it, and the post() queue: a lock-free stack of functions that any thread may push from
     * create() on. The loop learns of it through its post hub (one eventfd per loop, shared
     * by the devices it serves), which it joins at attach; post_lock guards post_hub and
     * post_ready (the device is on the hub's list of devices with posts waiting). */
    struct vu_loop *loop;
    struct vu_endpoint *endpoint;
    struct vfio_userd_source *sources;
    struct vu_post *_Atomic posted;
    pthread_mutex_t post_lock;
    struct vu_post_hub *post_hub;
    bool post_ready;
    struct vu_device *post_next; /* on the hub's list, under the hub's lock */
    struct vfio_userd_host_limits limits;
    /* The thread serving the device's loop (0 until attached), and vectors other threads
     * raised (irq_trigger) for it to deliver: a bit per vector, one post() while any is set. */
    _Atomic unsigned long loop_thread;
    _Atomic uint64_t *raised_vectors;
    uint32_t raised_vector_words;
    atomic_bool raised_posted;
    /* ABI 1.1 quiesce: where the device is in it, and a departed client's memory waiting for it. */
    enum vu_quiesce_state quiesce_state;
    bool detach_pending;
};

/* Sparse mmap areas per region (add_region). */
#define VU_MAX_SPARSE_AREAS 64u

/*
 * The most descriptors one client may make the device hold: the eventfds of SET_IRQS. DMA
 * maps hold none (the memory is mapped and the descriptor closed). The default takes a
 * trigger eventfd for each of 2048 MSI-X vectors (the most PCI allows), with the same
 * again to spare for INTx, MSI, ERR, REQ and mask eventfds. Beyond it SET_IRQS fails with
 * ENOSPC. The bounds are what vu_endpoint_set_max_client_fds() accepts.
 */
#define VU_MAX_CLIENT_FDS_DEFAULT 4096u
#define VU_MAX_CLIENT_FDS_MIN     16u
#define VU_MAX_CLIENT_FDS_MAX     (1u << 20)

/*
 * Creates a device named `name` from `plugin` with `params` (a JSON object; NULL means
 * none). On failure returns -errno with `error` filled, and nothing is left allocated.
 */
int vu_device_create(const struct vfio_userd_plugin *plugin, const char *name, const json_t *params,
                     struct vu_device **device, struct vfio_userd_error *error);

/*
 * How plugins' open_file() reaches a file, process-wide: NULL (the default) opens it here,
 * with open(2); a device host installs one that asks its supervisor, which has the rights.
 * Called with flags and path already checked, on the device's thread; returns a descriptor
 * or -errno.
 */
typedef int (*vu_file_opener_fn)(const char *device, const char *path, int flags,
                                 unsigned int mode);
void vu_device_set_file_opener(vu_file_opener_fn opener);

/* The open(2) flags a plugin may give open_file(), beyond the access mode. */
#define VU_OPEN_FILE_FLAGS                                                                         \
    (O_CREAT | O_EXCL | O_TRUNC | O_APPEND | O_DIRECT | O_DSYNC | O_SYNC | O_NOATIME | O_NOFOLLOW)

/* Checks a plugin's open_file() request against `params`: 0, -EINVAL or -EACCES. */
int vu_device_check_open_file(const json_t *params, const char *path, int flags);

/*
 * Opens a file for a plugin's open_file(), as whoever calls it (the daemon, for a device
 * host): checked as above, with no symbolic link on the path (-ELOOP), a regular file or a
 * block device only (-EINVAL), created with a mode no wider than 0666.
 */
int vu_device_open_named_file(const json_t *params, const char *path, int flags, unsigned int mode);

/*
 * The device is served from `loop` by `endpoint` (vu_endpoint_new calls this on the
 * loop's thread): the plugin's sources (add_fd, add_timer) and its post() queue start
 * working there, and each of their callbacks is followed by vu_endpoint_flush(endpoint).
 * 0 or -errno (then nothing is attached).
 */
int vu_device_attach_loop(struct vu_device *device, struct vu_loop *loop,
                          struct vu_endpoint *endpoint);
/* No longer served from that loop (the endpoint goes): sources stay, idle, until a next
 * attach or the device's end. */
void vu_device_detach_loop(struct vu_device *device);

/* Calls the plugin's destroy and frees everything. The session must be detached. */
void vu_device_destroy(struct vu_device *device);

/* Checks a plugin descriptor's ABI version and mandatory members: 0 or -errno + message. */
int vu_device_check_plugin(const struct vfio_userd_plugin *plugin, char *message, size_t size);

/* --- Which plugin callback a thread is in, for a watchdog on another thread. --- */

#define VU_CALLBACK_DEVICE_MAX 72 /* device names are at most 64 bytes */

/* What a thread's engine was doing in plugin code, as vu_callback_tracker_read() sees it. */
struct vu_callback_state {
    const char *callback; /* "region_write", "reset", ...; NULL when not in plugin code */
    const char *plugin;   /* the plugin's name (lives as long as the plugin is loaded) */
    uint64_t since_usec;  /* CLOCK_MONOTONIC when the callback was entered */
    char device[VU_CALLBACK_DEVICE_MAX];
};

/* Written only by the thread it was given to; a sequence count (odd while the state
 * changes) lets any other thread take a consistent copy. */
struct vu_callback_tracker {
    atomic_uint sequence;
    struct vu_callback_state state;
    const struct vu_device *named; /* the writer's: whose name state.device holds */
};

/* From now on the engine records in `tracker` (NULL: nowhere) every plugin callback it
 * makes on the calling thread, before making it. */
void vu_device_track_callbacks(struct vu_callback_tracker *tracker);

/* A consistent copy of what `tracker` holds, from any thread. */
void vu_callback_tracker_read(const struct vu_callback_tracker *tracker,
                              struct vu_callback_state *state);

/* --- Called by the session. --- */

void vu_device_attach_session(struct vu_device *device, struct vu_session *session,
                              uint32_t max_dma_maps);
/* Releases DMA ranges and eventfds, keeps device state; calls client_disconnect. With DMA
 * ranges mapped, the device quiesces first: when it needs time, the ranges and the call
 * wait for it (vu_device_detaching) and vu_device_finish_detach() completes the work. */
void vu_device_detach_session(struct vu_device *device);
bool vu_device_detaching(const struct vu_device *device);
void vu_device_finish_detach(struct vu_device *device);

/*
 * Before an operation that takes client memory away or resets the device: asks the plugin
 * to quiesce (ABI 1.1 ops->quiesce). 0 when the device is quiet, or has no such callback;
 * -EBUSY while it finishes: its host->quiesced() then tells the endpoint
 * (vu_endpoint_quiesced), and vu_device_quiesce_done() turns true. After the operation,
 * vu_device_resume() lets the device start again.
 */
int vu_device_quiesce(struct vu_device *device);
bool vu_device_quiesce_done(const struct vu_device *device);
/* Ends a finished quiesce (ops->resume); nothing while none is, or while one still waits. */
void vu_device_resume(struct vu_device *device);
/* Whether DMA_UNMAP would change anything: 0 (nothing to do: no maps for "all"), 1, or
 * -errno for a request it would refuse. */
int vu_device_dma_unmap_check(const struct vu_device *device, const struct vu_dma_unmap *unmap);

void vu_device_get_info(const struct vu_device *device, struct vu_device_info *info);

/*
 * Fills `buffer` (capacity bytes, at least sizeof(struct vfio_region_info)) with the
 * region info and, when they fit within `argsz`, its capabilities (then with
 * VFIO_REGION_INFO_FLAG_CAPS and cap_offset just past the fixed part). When they do not
 * fit, the fixed part alone, its argsz the size needed, without CAPS and cap_offset 0.
 * Sets *length to the bytes to reply, never more than `argsz`, and *fd to the region's
 * memory fd to pass along (-1 if none).
 */
int vu_device_get_region_info(const struct vu_device *device, uint32_t index, uint32_t argsz,
                              void *buffer, size_t capacity, size_t *length, int *fd);

int vu_device_get_irq_info(const struct vu_device *device, uint32_t index,
                           struct vfio_irq_info *info);

/*
 * Applies SET_IRQS. `data` holds the bytes after the fixed header; `fds` are the
 * descriptors that came with the message and are always consumed (kept or closed).
 */
int vu_device_set_irqs(struct vu_device *device, const struct vfio_irq_set *set,
                       const uint8_t *data, size_t data_length, int *fds, size_t fd_count);

/* Region access from the client, after bounds and permission checks. */
int vu_device_region_access(struct vu_device *device, uint32_t region, uint64_t offset, void *data,
                            uint32_t count, bool is_write);

/* Whether the region exists and allows reads (is_write false) or writes. */
bool vu_device_region_allows(const struct vu_device *device, uint32_t region, bool is_write);

/* The region's size in bytes; 0 for an absent region. */
uint64_t vu_device_region_size(const struct vu_device *device, uint32_t region);

/* The I/O eventfd at `index` fired: delivers its write to the device model. */
void vu_device_ioeventfd_fired(struct vu_device *device, uint32_t index);

/* DMA_MAP: `fd` (or -1) is consumed. */
int vu_device_dma_map(struct vu_device *device, const struct vu_dma_map *map, int fd);
int vu_device_dma_unmap(struct vu_device *device, const struct vu_dma_unmap *unmap);

int vu_device_reset(struct vu_device *device);
/* A reset the control plane asks for: quiesced first like a client's, but it cannot wait
 * in a socket, so -EBUSY when the device needs time (the caller may ask again). A device
 * already quiet for a client's command or departure is reset without resuming it. */
int vu_device_reset_quiesced(struct vu_device *device);

/* Raises `vector` through whichever interrupt type is enabled (host->irq_trigger). */
int vu_device_irq_trigger(struct vu_device *device, uint32_t vector);

/* Signals one interrupt of one type (host->irq_signal). */
int vu_device_irq_signal(struct vu_device *device, enum vfio_userd_irq_index index,
                         uint32_t subindex);

/* --- Between device.c and interrupts.c, the two halves of the engine. --- */

static inline bool vu_is_power_of_two(uint64_t value)
{
    return value != 0 && (value & (value - 1)) == 0;
}

/* Sizes the interrupt state from the counts the declarations set (after create()). */
int vu_device_allocate_interrupts(struct vu_device *device);
void vu_device_release_interrupts(struct vu_device *device);
/* The client went: its eventfds are closed, masks and pending state cleared. */
void vu_device_release_client_interrupts(struct vu_device *device);
/* No vector of `index` masked or pending, INTx deasserted. */
void vu_device_clear_interrupts(struct vu_device *device, enum vfio_userd_irq_index index);
/* Fires what became deliverable after a config space or MSI-X table write. */
void vu_device_deliver_pending(struct vu_device *device);

#endif /* VU_DEVICE_H */
