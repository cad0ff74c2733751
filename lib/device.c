/*
 * The per-device engine: plugin host table, regions, interrupts, DMA ranges and the device
 * side of each vfio-user command. See device.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <linux/openat2.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/mman.h>
#include <pthread.h>
#include <time.h>
#include <unistd.h>

#include "device.h"
#include "endpoint.h"
#include "event_loop.h"
#include "fault_guard.h"
#include "log.h"
#include "params.h"
#include "session.h"

static struct vu_device *device_of(struct vfio_userd_device *public)
{
    return (struct vu_device *)public;
}

/* ---------------------------------------------------------------------------------------
 * Callback tracking: what a watchdog on another thread reports when a plugin hangs.
 */

static _Thread_local struct vu_callback_tracker *tracker;

void vu_device_track_callbacks(struct vu_callback_tracker *new_tracker)
{
    tracker = new_tracker;
}

/* Records that `device` enters its plugin's `callback`, or (NULL) left plugin code. */
static void track(const struct vu_device *device, const char *callback)
{
    struct vu_callback_tracker *own = tracker;
    uint64_t now = 0;
    unsigned sequence;

    if (own == NULL)
        return;
    if (callback != NULL)
        now = vu_monotonic_usec();
    sequence = atomic_load_explicit(&own->sequence, memory_order_relaxed);
    atomic_store_explicit(&own->sequence, sequence + 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    own->state.callback = callback;
    if (callback != NULL) {
        own->state.since_usec = now;
        own->state.plugin = device->plugin->name;
        if (own->named != device) {
            snprintf(own->state.device, sizeof(own->state.device), "%s",
                     device->name != NULL ? device->name : "");
            own->named = device;
        }
    }
    atomic_store_explicit(&own->sequence, sequence + 2, memory_order_release);
}

void vu_callback_tracker_read(const struct vu_callback_tracker *source,
                              struct vu_callback_state *state)
{
    for (unsigned attempt = 0; attempt < 1000; attempt++) {
        unsigned before = atomic_load_explicit(&source->sequence, memory_order_acquire);
        if (before & 1)
            continue;
        *state = source->state;
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&source->sequence, memory_order_relaxed) == before)
            return;
    }
    /* The writer never paused: it is busy, not stuck. */
    *state = (struct vu_callback_state){0};
}

/* ---------------------------------------------------------------------------------------
 * Structures a plugin hands over.
 *
 * Since ABI 1.1 they start with their size, so that a later version can append members:
 * each is copied into the host's own version of it, never read past what the plugin
 * filled in. A 1.0 plugin's structures have no size; they are read in their 1.0 layout.
 */

struct device_ops_1_0 {
    int (*reset)(void *instance);
    void (*dma_map)(void *instance, uint64_t address, uint64_t size, uint32_t access);
    void (*dma_unmap)(void *instance, uint64_t address, uint64_t size);
    void (*irq_state)(void *instance, enum vfio_userd_irq_index irq);
    void (*client_connect)(void *instance);
    void (*client_disconnect)(void *instance);
    void (*destroy)(void *instance);
};

struct region_1_0 {
    uint64_t size;
    uint32_t flags;
    uint32_t sparse_area_count;
    const struct vfio_userd_sparse_area *sparse_areas;
    vfio_userd_region_access_fn access;
};

struct pci_identity_1_0 {
    uint16_t vendor_id;
    uint16_t device_id;
    uint16_t subsystem_vendor_id;
    uint16_t subsystem_id;
    uint32_t class_code;
    uint8_t revision;
    uint8_t interrupt_pin;
};

/* The most a structure of a later version may claim to be: more is not a size. */
#define PLUGIN_STRUCT_MAX 4096u

/*
 * The sizes the structures had in ABI 1.1, the first with struct_size: the least a plugin
 * may hand over. A later minor version appends members and keeps these, so that a 1.1
 * plugin's structures stay acceptable; the assertions catch a member inserted before.
 */
#define DEVICE_OPS_SIZE_1_1                                                                        \
    (offsetof(struct vfio_userd_device_ops, resume) + sizeof(void (*)(void *)))
#define REGION_SIZE_1_1   (offsetof(struct vfio_userd_region, access) + sizeof(void *))
#define IDENTITY_SIZE_1_1 (offsetof(struct vfio_userd_pci_identity, interrupt_pin) + 1)
_Static_assert(offsetof(struct vfio_userd_device_ops, quiesce) == 8 * sizeof(void *),
               "ABI 1.1 device ops keep their layout");
#if defined(__x86_64__) || defined(__aarch64__)
_Static_assert(offsetof(struct vfio_userd_region, access) == 32,
               "ABI 1.1 regions keep their layout");
_Static_assert(offsetof(struct vfio_userd_pci_identity, interrupt_pin) == 17,
               "ABI 1.1 PCI identities keep their layout");
#endif

/*
 * Copies a sized structure (`struct_size` first) into `copy`, the host's version of
 * `host_size` bytes, of which `minimum_size` (its size in 1.1) is the least a plugin may
 * give. Size 0 stands for the layout of the plugin's own header: for a 1.1 plugin, the 1.1
 * size. What a plugin built for an older version lacks reads as zero (a callback it does
 * not have, a field left unset). Larger than the host's, from a later header: accepted
 * when the members this host does not know are zero, as unused members are; -E2BIG
 * otherwise, since the plugin asks for something this host cannot do.
 */
static int copy_sized(void *copy, size_t host_size, size_t minimum_size, const void *source)
{
    const uint8_t *bytes = source;
    uint32_t size;

    memcpy(&size, source, sizeof(size));
    if (size == 0)
        size = (uint32_t)minimum_size;
    if (size < minimum_size)
        return -EINVAL;
    if (size > PLUGIN_STRUCT_MAX)
        return -E2BIG;
    for (size_t i = host_size; i < size; i++)
        if (bytes[i] != 0)
            return -E2BIG;
    memset(copy, 0, host_size);
    memcpy(copy, source, size < host_size ? size : host_size);
    memcpy(copy, &(uint32_t){(uint32_t)host_size}, sizeof(uint32_t));
    return 0;
}

static bool plugin_is_1_0(const struct vu_device *device)
{
    return device->plugin->abi_minor == 0;
}

static int import_ops(const struct vu_device *device, const void *source,
                      struct vfio_userd_device_ops *ops)
{
    const struct device_ops_1_0 *old = source;

    if (!plugin_is_1_0(device))
        return copy_sized(ops, sizeof(*ops), DEVICE_OPS_SIZE_1_1, source);
    *ops = (struct vfio_userd_device_ops){
        .struct_size = sizeof(*ops),
        .reset = old->reset,
        .dma_map = old->dma_map,
        .dma_unmap = old->dma_unmap,
        .irq_state = old->irq_state,
        .client_connect = old->client_connect,
        .client_disconnect = old->client_disconnect,
        .destroy = old->destroy,
    };
    return 0;
}

static int import_region(const struct vu_device *device, const void *source,
                         struct vfio_userd_region *region)
{
    const struct region_1_0 *old = source;

    if (!plugin_is_1_0(device))
        return copy_sized(region, sizeof(*region), REGION_SIZE_1_1, source);
    *region = (struct vfio_userd_region){
        .struct_size = sizeof(*region),
        .size = old->size,
        .flags = old->flags,
        .sparse_area_count = old->sparse_area_count,
        .sparse_areas = old->sparse_areas,
        .access = old->access,
    };
    return 0;
}

static int import_identity(const struct vu_device *device, const void *source,
                           struct vfio_userd_pci_identity *identity)
{
    const struct pci_identity_1_0 *old = source;

    if (!plugin_is_1_0(device))
        return copy_sized(identity, sizeof(*identity), IDENTITY_SIZE_1_1, source);
    *identity = (struct vfio_userd_pci_identity){
        .struct_size = sizeof(*identity),
        .vendor_id = old->vendor_id,
        .device_id = old->device_id,
        .subsystem_vendor_id = old->subsystem_vendor_id,
        .subsystem_id = old->subsystem_id,
        .class_code = old->class_code,
        .revision = old->revision,
        .interrupt_pin = old->interrupt_pin,
    };
    return 0;
}

/* ---------------------------------------------------------------------------------------
 * Declaration (plugin create()).
 */

static int host_set_ops(struct vfio_userd_device *public, const struct vfio_userd_device_ops *ops,
                        void *instance)
{
    struct vu_device *device = device_of(public);
    struct vfio_userd_device_ops copy;
    int ret;

    if (!device->declaring || ops == NULL)
        return -EINVAL;
    ret = import_ops(device, ops, &copy);
    if (ret < 0)
        return ret;
    device->ops = copy;
    device->instance = instance;
    device->ops_set = true;
    return 0;
}

static int host_pci_set_identity(struct vfio_userd_device *public,
                                 const struct vfio_userd_pci_identity *given)
{
    struct vu_device *device = device_of(public);
    struct vfio_userd_pci_identity copy, *identity = &copy;
    int ret;

    if (!device->declaring || given == NULL)
        return -EINVAL;
    ret = import_identity(device, given, &copy);
    if (ret < 0)
        return ret;
    ret = vu_pci_config_set_identity(&device->config, identity);
    if (ret < 0)
        return ret;
    device->identity = *identity;
    device->irqs[VFIO_USERD_IRQ_INTX].count = identity->interrupt_pin != 0 ? 1 : 0;
    return 0;
}

static int check_sparse_areas(const struct vfio_userd_region *region)
{
    long page_size = sysconf(_SC_PAGESIZE);
    uint64_t previous_end = 0;

    if (region->sparse_area_count == 0)
        return 0;
    if (!(region->flags & VFIO_USERD_REGION_MAPPABLE) || region->sparse_areas == NULL ||
        region->sparse_area_count > VU_MAX_SPARSE_AREAS)
        return -EINVAL;
    for (uint32_t i = 0; i < region->sparse_area_count; i++) {
        const struct vfio_userd_sparse_area *area = &region->sparse_areas[i];
        if (area->size == 0 || area->offset % (uint64_t)page_size ||
            area->size % (uint64_t)page_size || area->offset < previous_end ||
            area->offset > region->size || area->size > region->size - area->offset)
            return -EINVAL;
        previous_end = area->offset + area->size;
    }
    return 0;
}

static int check_region(const struct vu_device *device, enum vfio_userd_region_index index,
                        const struct vfio_userd_region *region)
{
    const uint32_t known = VFIO_USERD_REGION_READABLE | VFIO_USERD_REGION_WRITABLE |
                           VFIO_USERD_REGION_MEMORY | VFIO_USERD_REGION_MAPPABLE |
                           VFIO_USERD_BAR_IO | VFIO_USERD_BAR_64BIT | VFIO_USERD_BAR_PREFETCHABLE;
    const uint32_t bar_kind =
        VFIO_USERD_BAR_IO | VFIO_USERD_BAR_64BIT | VFIO_USERD_BAR_PREFETCHABLE;

    if ((unsigned)index > VFIO_USERD_REGION_ROM || region == NULL || (region->flags & ~known))
        return -EINVAL;
    if (device->regions[index].present)
        return -EEXIST;
    if (!vu_is_power_of_two(region->size))
        return -EINVAL;
    if ((region->flags & VFIO_USERD_REGION_MAPPABLE) && !(region->flags & VFIO_USERD_REGION_MEMORY))
        return -EINVAL;
    if (!(region->flags & VFIO_USERD_REGION_MEMORY) && region->access == NULL)
        return -EINVAL;
    if (index == VFIO_USERD_REGION_ROM &&
        ((region->flags & (bar_kind | VFIO_USERD_REGION_WRITABLE)) || region->size < 2048))
        return -EINVAL;
    if ((region->flags & VFIO_USERD_BAR_IO) &&
        (region->flags &
         (VFIO_USERD_BAR_64BIT | VFIO_USERD_BAR_PREFETCHABLE | VFIO_USERD_REGION_MAPPABLE)))
        return -EINVAL;
    if (region->flags & VFIO_USERD_BAR_64BIT) {
        if (index >= VFIO_USERD_REGION_BAR5 || device->regions[index + 1].present)
            return -EINVAL;
    }
    if (index > VFIO_USERD_REGION_BAR0 && index <= VFIO_USERD_REGION_BAR5 &&
        device->regions[index - 1].present &&
        (device->regions[index - 1].description.flags & VFIO_USERD_BAR_64BIT))
        return -EBUSY; /* upper half of a 64-bit BAR */
    return check_sparse_areas(region);
}

/*
 * The seals of region memory. The client gets the memfd itself (GET_REGION_INFO), and a
 * client that could shrink it would make our next access through the mapping raise SIGBUS,
 * taking every device of the process down; one that could grow it would charge us for the
 * memory. Its size is therefore fixed for good, and a region the client may not write is
 * also closed to writable mappings and write() from now on (F_SEAL_FUTURE_WRITE: our own
 * mapping, made before, stays writable for the plugin, which F_SEAL_WRITE would forbid).
 */
#define REGION_SEALS (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)

static int seal_region_memory(int fd, uint32_t flags)
{
    int seals = REGION_SEALS;

    if (!(flags & VFIO_USERD_REGION_WRITABLE)) {
        if (fcntl(fd, F_ADD_SEALS, seals | F_SEAL_FUTURE_WRITE) == 0)
            return 0;
        if (errno != EINVAL)
            return -errno;
        /* Before Linux 5.1: no write seal, but the size is what matters for safety. */
    }
    return fcntl(fd, F_ADD_SEALS, seals) == 0 ? 0 : -errno;
}

static int allocate_region_memory(struct vu_device *device, struct vu_region_state *state)
{
    uint64_t size = state->description.size;
    void *memory;
    int fd, ret;

    if (size > (uint64_t)SIZE_MAX || size > (uint64_t)INT64_MAX)
        return -EFBIG;
    fd = memfd_create(device->name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0)
        return -errno;
    if (ftruncate(fd, (off_t)size) < 0) {
        ret = -errno;
        goto fail;
    }
    memory = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (memory == MAP_FAILED) {
        ret = -errno;
        goto fail;
    }
    ret = seal_region_memory(fd, state->description.flags);
    if (ret < 0) {
        munmap(memory, size);
        goto fail;
    }
    state->memory_fd = fd;
    state->memory = memory;
    return 0;
fail:
    close(fd);
    return ret;
}

static void release_region(struct vu_region_state *state)
{
    if (state->memory != NULL)
        munmap(state->memory, state->description.size);
    if (state->memory_fd >= 0)
        close(state->memory_fd);
    free(state->sparse_areas);
    *state = (struct vu_region_state){.memory_fd = -1};
}

static int host_add_region(struct vfio_userd_device *public, enum vfio_userd_region_index index,
                           const struct vfio_userd_region *given)
{
    struct vu_device *device = device_of(public);
    struct vu_region_state state = {.memory_fd = -1};
    struct vfio_userd_region copy, *region = &copy;
    int ret;

    if (!device->declaring || given == NULL)
        return -EINVAL;
    ret = import_region(device, given, &copy);
    if (ret < 0)
        return ret;
    ret = check_region(device, index, region);
    if (ret < 0)
        return ret;
    state.description = *region;
    if (region->sparse_area_count > 0) {
        state.sparse_areas = calloc(region->sparse_area_count, sizeof(*state.sparse_areas));
        if (state.sparse_areas == NULL)
            return -ENOMEM;
        memcpy(state.sparse_areas, region->sparse_areas,
               region->sparse_area_count * sizeof(*state.sparse_areas));
    }
    state.description.sparse_areas = state.sparse_areas;
    if (region->flags & VFIO_USERD_REGION_MEMORY) {
        ret = allocate_region_memory(device, &state);
        if (ret < 0)
            goto out;
    }
    if (index == VFIO_USERD_REGION_ROM)
        ret = vu_pci_config_set_rom(&device->config, region->size);
    else
        ret = vu_pci_config_set_bar(&device->config, index, region->size,
                                    region->flags & (VFIO_USERD_BAR_IO | VFIO_USERD_BAR_64BIT |
                                                     VFIO_USERD_BAR_PREFETCHABLE));
    if (ret < 0)
        goto out;
    state.present = true;
    device->regions[index] = state;
    return 0;
out:
    release_region(&state);
    return ret;
}

static int host_pci_add_power_management(struct vfio_userd_device *public)
{
    struct vu_device *device = device_of(public);

    if (!device->declaring)
        return -EINVAL;
    return vu_pci_config_add_power_management(&device->config);
}

static int host_pci_add_msi(struct vfio_userd_device *public, uint32_t vectors,
                            bool per_vector_mask)
{
    struct vu_device *device = device_of(public);
    int ret;

    if (!device->declaring)
        return -EINVAL;
    ret = vu_pci_config_add_msi(&device->config, vectors, per_vector_mask);
    if (ret == 0)
        device->irqs[VFIO_USERD_IRQ_MSI].count = vectors;
    return ret;
}

static int host_pci_add_msix(struct vfio_userd_device *public, uint32_t vectors, uint32_t table_bar,
                             uint32_t table_offset, uint32_t pba_bar, uint32_t pba_offset)
{
    struct vu_device *device = device_of(public);
    int ret;

    if (!device->declaring || device->msix.vectors != 0)
        return -EINVAL;
    ret = vu_pci_config_add_msix(&device->config, vectors, table_bar, table_offset, pba_bar,
                                 pba_offset);
    if (ret < 0)
        return ret;
    ret = vu_msix_init(&device->msix, vectors);
    if (ret < 0)
        return ret;
    device->irqs[VFIO_USERD_IRQ_MSIX].count = vectors;
    return 0;
}

static int host_pci_add_express(struct vfio_userd_device *public)
{
    struct vu_device *device = device_of(public);

    if (!device->declaring)
        return -EINVAL;
    return vu_pci_config_add_express(&device->config);
}

static int host_add_ioeventfd(struct vfio_userd_device *public, enum vfio_userd_region_index index,
                              uint64_t offset, uint32_t size, uint32_t flags, uint64_t value)
{
    struct vu_device *device = device_of(public);
    const struct vu_region_state *state;
    struct vu_ioeventfd *entry;
    int fd;

    if (!device->declaring || (unsigned)index >= VFIO_USERD_REGION_CONFIG ||
        (flags & ~VFIO_USERD_IOEVENTFD_DATAMATCH) ||
        (size != 1 && size != 2 && size != 4 && size != 8))
        return -EINVAL;
    state = &device->regions[index];
    if (!state->present || state->description.access == NULL ||
        !(state->description.flags & VFIO_USERD_REGION_WRITABLE) ||
        offset > state->description.size || size > state->description.size - offset)
        return -EINVAL;
    if (device->ioeventfd_count == VFIO_USERD_MAX_IOEVENTFDS)
        return -ENOSPC;
    fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (fd < 0)
        return -errno;
    entry = &device->ioeventfds[device->ioeventfd_count++];
    *entry = (struct vu_ioeventfd){
        .region = index, .size = size, .offset = offset, .flags = flags, .value = value, .fd = fd};
    return 0;
}

void vu_device_ioeventfd_fired(struct vu_device *device, uint32_t index)
{
    const struct vu_ioeventfd *entry = &device->ioeventfds[index];
    uint64_t data = entry->value;
    int ret;

    /* Writes coalesced in the counter arrive as one: a doorbell rings once per wake-up. */
    ret = vu_device_region_access(device, entry->region, entry->offset, &data, entry->size, true);
    if (ret < 0)
        vu_log(VFIO_USERD_LOG_DEBUG, device->name, "I/O eventfd write to region %u+%#llx: %s",
               entry->region, (unsigned long long)entry->offset, strerror(-ret));
}

static int host_pci_add_vendor_specific(struct vfio_userd_device *public, const void *data,
                                        uint8_t length)
{
    struct vu_device *device = device_of(public);

    if (!device->declaring)
        return -EINVAL;
    return vu_pci_config_add_vendor_specific(&device->config, data, length);
}

/* ---------------------------------------------------------------------------------------
 * Run time services.
 */

static void *host_region_memory(struct vfio_userd_device *public,
                                enum vfio_userd_region_index index)
{
    struct vu_device *device = device_of(public);

    if ((unsigned)index >= VFIO_USERD_REGION_COUNT)
        return NULL;
    return device->regions[index].memory;
}

static uint32_t dma_flags_of(uint32_t access)
{
    uint32_t flags = 0;

    if (access & VFIO_USERD_DMA_READ)
        flags |= VU_DMA_FLAG_READABLE;
    if (access & VFIO_USERD_DMA_WRITE)
        flags |= VU_DMA_FLAG_WRITABLE;
    return flags;
}

static void *host_dma_translate(struct vfio_userd_device *public, uint64_t address, uint64_t length,
                                uint32_t access)
{
    struct vu_device *device = device_of(public);

    return vu_dma_table_translate(&device->dma, address, length, dma_flags_of(access));
}

static int host_dma_scatter(struct vfio_userd_device *public, uint64_t address, uint64_t length,
                            uint32_t access, struct iovec *pieces, uint32_t max)
{
    struct vu_device *device = device_of(public);

    return vu_dma_table_scatter(&device->dma, address, length, dma_flags_of(access), pieces, max);
}

static int host_dma_submit(struct vfio_userd_device *public, struct vfio_userd_dma_request *request)
{
    struct vu_device *device = device_of(public);
    const struct vu_dma_range *range;
    uint32_t needed;
    uint8_t *host;

    if (request == NULL || (request->length > 0 && request->buffer == NULL))
        return -EINVAL;
    if (device->session == NULL)
        return -ENOTCONN;
    if (request->length == 0)
        return 0;
    if (request->address + request->length < request->address)
        return -EFAULT;
    range = vu_dma_table_lookup(&device->dma, request->address, request->length);
    if (range == NULL)
        return -EFAULT;
    needed = request->to_client ? VU_DMA_FLAG_WRITABLE : VU_DMA_FLAG_READABLE;
    if (!(range->flags & needed))
        return -EACCES;
    if (range->host == NULL)
        return vu_session_dma_submit(device->session, request);
    host = range->host + (request->address - range->address);
    if (request->to_client)
        memcpy(host, request->buffer, request->length);
    else
        memcpy(request->buffer, host, request->length);
    return 0;
}

static bool on_device_thread(const struct vu_device *device)
{
    unsigned long thread = atomic_load_explicit(&device->loop_thread, memory_order_relaxed);

    /* Before the device has a loop, only create()'s thread has it. */
    return thread == 0 || thread == (unsigned long)pthread_self();
}

static int host_post(struct vfio_userd_device *public, void (*function)(void *opaque),
                     void *opaque);

/* On the device's thread: raises what other threads marked. The flag drops before the
 * marks are read, so a mark made meanwhile posts again rather than waiting here. */
static void deliver_raised_vectors(void *opaque)
{
    struct vu_device *device = opaque;

    atomic_store_explicit(&device->raised_posted, false, memory_order_seq_cst);
    for (uint32_t word = 0; word < device->raised_vector_words; word++) {
        uint64_t bits =
            atomic_exchange_explicit(&device->raised_vectors[word], 0, memory_order_seq_cst);
        while (bits != 0) {
            uint32_t bit = (uint32_t)__builtin_ctzll(bits);
            bits &= bits - 1;
            vu_device_irq_trigger(device, word * 64 + bit);
        }
    }
}

/* Whether `vector` is out of range for every interrupt type the device declared (INTx
 * takes any): the counts are fixed once create() returns, so any thread may read them. */
static bool vector_out_of_range(const struct vu_device *device, uint32_t vector)
{
    uint32_t msix = device->irqs[VFIO_USERD_IRQ_MSIX].count;
    uint32_t msi = device->irqs[VFIO_USERD_IRQ_MSI].count;

    if (device->irqs[VFIO_USERD_IRQ_INTX].count > 0)
        return false;
    return vector >= (msix > msi ? msix : msi);
}

/* irq_trigger() from a plugin's own thread: marks the vector, and wakes the device's
 * thread once for all the marks it finds then. */
static int raise_from_other_thread(struct vu_device *device, uint32_t vector)
{
    int ret;

    if (vector / 64 >= device->raised_vector_words || vector_out_of_range(device, vector))
        return -EINVAL;
    /* seq_cst, as the flag's: the mark and the flag are two objects, and only a single
     * total order over all four accesses guarantees that a raiser who finds the flag set
     * has its mark seen by the delivery that clears it next (release/acquire would allow
     * the mark to be missed until the next raise, on weakly ordered CPUs). */
    atomic_fetch_or_explicit(&device->raised_vectors[vector / 64], UINT64_C(1) << (vector % 64),
                             memory_order_seq_cst);
    if (atomic_exchange_explicit(&device->raised_posted, true, memory_order_seq_cst))
        return 0;
    ret = host_post(&device->public, deliver_raised_vectors, device);
    if (ret < 0)
        atomic_store_explicit(&device->raised_posted, false, memory_order_seq_cst);
    return ret;
}

static int host_irq_trigger(struct vfio_userd_device *public, uint32_t vector)
{
    struct vu_device *device = device_of(public);

    if (!on_device_thread(device))
        return raise_from_other_thread(device, vector);
    return vu_device_irq_trigger(device, vector);
}

static int host_irq_signal(struct vfio_userd_device *public, enum vfio_userd_irq_index index,
                           uint32_t subindex)
{
    return vu_device_irq_signal(device_of(public), index, subindex);
}

static int host_pci_config_read(struct vfio_userd_device *public, uint32_t offset, void *data,
                                uint32_t count)
{
    return vu_pci_config_read(&device_of(public)->config, offset, data, count);
}

static void host_log(struct vfio_userd_device *public, enum vfio_userd_log_level level,
                     const char *format, va_list args)
{
    vu_log_va(level, device_of(public)->name, format, args);
}

static const char *host_name(struct vfio_userd_device *public)
{
    return device_of(public)->name;
}

static const uint64_t *host_message_counters(struct vfio_userd_device *public)
{
    return device_of(public)->statistics.messages;
}

static vu_file_opener_fn file_opener;

void vu_device_set_file_opener(vu_file_opener_fn opener)
{
    file_opener = opener;
}

int vu_device_check_open_file(const json_t *params, const char *path, int flags)
{
    int access = flags & O_ACCMODE;

    if (path == NULL || path[0] != '/' ||
        (access != O_RDONLY && access != O_WRONLY && access != O_RDWR) ||
        (flags & ~(O_ACCMODE | VU_OPEN_FILE_FLAGS)) != 0)
        return -EINVAL;
    return vu_params_name(params, path) ? 0 : -EACCES;
}

int vu_device_open_named_file(const json_t *params, const char *path, int flags, unsigned int mode)
{
    /* No symbolic link anywhere on the path: whoever may write a directory on it (the
     * device's own account, say) could otherwise point the daemon at any file it may open.
     * Non-blocking, so that a FIFO planted there cannot hold the caller; it is refused. */
    struct open_how how = {
        .flags = (uint64_t)(flags | O_CLOEXEC | O_NOCTTY | O_NONBLOCK),
        .mode = (flags & O_CREAT) ? (mode & 0666) : 0,
        .resolve = RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
    };
    struct stat status;
    int ret = vu_device_check_open_file(params, path, flags);
    int fd;

    if (ret < 0)
        return ret;
    fd = (int)syscall(SYS_openat2, AT_FDCWD, path, &how, sizeof(how));
    if (fd < 0)
        return -errno;
    if (fstat(fd, &status) < 0) {
        ret = -errno;
        goto fail;
    }
    if (!S_ISREG(status.st_mode) && !S_ISBLK(status.st_mode)) {
        ret = -EINVAL;
        goto fail;
    }
    /* Blocking again, as the plugin asked (O_NONBLOCK is not among the flags it may give). */
    if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) < 0) {
        ret = -errno;
        goto fail;
    }
    return fd;
fail:
    close(fd);
    return ret;
}

static int host_open_file(struct vfio_userd_device *public, const char *path, int flags,
                          unsigned int mode)
{
    struct vu_device *device = device_of(public);
    int ret;

    if (file_opener == NULL)
        return vu_device_open_named_file(device->params, path, flags, mode);
    /* Checked here as well as by the daemon: a refused path costs no round trip. */
    ret = vu_device_check_open_file(device->params, path, flags);
    if (ret < 0)
        return ret;
    return file_opener(device->name, path, flags, mode & 0666);
}

/* ---------------------------------------------------------------------------------------
 * Event loop (ABI 1.1): descriptors, timers and post() on the device's own loop.
 *
 * The device learns its loop when an endpoint starts serving it (vu_device_attach_loop);
 * sources a plugin adds before that, in create(), wait in the device's list and join the
 * loop then. Every callback runs as the endpoint's own do: the SIGBUS guard entered for
 * the device, the watchdog told which callback runs, and the endpoint's output flushed
 * afterwards so that DMA messages the callback queued leave and their deadline is armed.
 */

/* Enters plugin code for `device` from the loop; returns what to hand to callback_end. */
static struct vu_device *callback_begin(struct vu_device *device, const char *callback)
{
    struct vu_device *previous = vu_fault_guard_enter(device);

    track(device, callback);
    return previous;
}

static void callback_end(struct vu_device *device, struct vu_device *previous)
{
    track(device, NULL);
    if (device->endpoint != NULL)
        vu_endpoint_flush(device->endpoint);
    vu_fault_guard_enter(previous);
}

static int on_source_io(sd_event_source *event_source, int fd, uint32_t revents, void *userdata)
{
    struct vfio_userd_source *source = userdata;
    struct vu_device *device = source->device;
    struct vu_device *previous = callback_begin(device, "fd");

    /* The callback may remove its own source: nothing of it is touched afterwards. */
    source->fd_callback(source->opaque, fd, revents);
    callback_end(device, previous);
    return 0;
}

static int on_source_time(sd_event_source *event_source, uint64_t usec, void *userdata)
{
    struct vfio_userd_source *source = userdata;
    struct vu_device *device = source->device;
    struct vu_device *previous = callback_begin(device, "timer");

    source->deadline = VFIO_USERD_TIMER_OFF; /* one-shot; timer_set() re-arms it */
    source->timer_callback(source->opaque);
    callback_end(device, previous);
    return 0;
}

/* Puts `source` on the device's loop, as its deadline or events say. */
static int source_attach(struct vfio_userd_source *source)
{
    struct vu_loop *loop = source->device->loop;
    sd_event *event;
    int ret;

    if (loop == NULL || source->event_source != NULL)
        return 0;
    event = vu_loop_event(loop);
    if (!source->is_timer)
        return sd_event_add_io(event, &source->event_source, source->fd, source->events,
                               on_source_io, source);
    /* Accuracy 1 us: sd-event's default (0) lets a timer slip by up to 250 ms. */
    ret = sd_event_add_time(event, &source->event_source, CLOCK_MONOTONIC,
                            source->deadline == VFIO_USERD_TIMER_OFF ? 0 : source->deadline, 1,
                            on_source_time, source);
    if (ret >= 0 && source->deadline == VFIO_USERD_TIMER_OFF)
        ret = sd_event_source_set_enabled(source->event_source, SD_EVENT_OFF);
    return ret;
}

static void source_detach(struct vfio_userd_source *source)
{
    source->event_source = sd_event_source_disable_unref(source->event_source);
}

/* A plugin may change its sources from any callback, a client socket's too, which sd-event
 * does not dispatch: the device loop lets sd-event run a pass before it sleeps. */
static void sources_changed(struct vu_device *device)
{
    vu_loop_changed(device->loop);
}

static void source_free(struct vfio_userd_source *source)
{
    struct vu_device *device = source->device;

    source_detach(source);
    if (source->previous != NULL)
        source->previous->next = source->next;
    else
        device->sources = source->next;
    if (source->next != NULL)
        source->next->previous = source->previous;
    free(source);
}

static int source_add(struct vu_device *device, struct vfio_userd_source *source,
                      struct vfio_userd_source **result)
{
    int ret;

    source->device = device;
    source->next = device->sources;
    if (device->sources != NULL)
        device->sources->previous = source;
    device->sources = source;
    sources_changed(device);
    ret = source_attach(source);
    if (ret < 0) {
        source_free(source);
        return ret;
    }
    *result = source;
    return 0;
}

static int host_add_fd(struct vfio_userd_device *public, int fd, uint32_t events,
                       void (*callback)(void *opaque, int fd, uint32_t revents), void *opaque,
                       struct vfio_userd_source **result)
{
    struct vfio_userd_source *source;

    if (result == NULL || fd < 0 || callback == NULL)
        return -EINVAL;
    source = calloc(1, sizeof(*source));
    if (source == NULL)
        return -ENOMEM;
    source->fd = fd;
    source->events = events;
    source->fd_callback = callback;
    source->opaque = opaque;
    return source_add(device_of(public), source, result);
}

static uint64_t deadline_of(uint64_t usec)
{
    uint64_t now = vu_monotonic_usec();

    if (usec == VFIO_USERD_TIMER_OFF)
        return VFIO_USERD_TIMER_OFF;
    /* sd-event treats 0 as "now" too, but keep the sum clear of the OFF value. */
    return usec >= VFIO_USERD_TIMER_OFF - 1 - now ? VFIO_USERD_TIMER_OFF - 1 : now + usec;
}

static int host_add_timer(struct vfio_userd_device *public, uint64_t usec,
                          void (*callback)(void *opaque), void *opaque,
                          struct vfio_userd_source **result)
{
    struct vfio_userd_source *source;

    if (result == NULL || callback == NULL)
        return -EINVAL;
    source = calloc(1, sizeof(*source));
    if (source == NULL)
        return -ENOMEM;
    source->is_timer = true;
    source->fd = -1;
    source->timer_callback = callback;
    source->opaque = opaque;
    source->deadline = deadline_of(usec);
    return source_add(device_of(public), source, result);
}

static int host_timer_set(struct vfio_userd_device *public, struct vfio_userd_source *source,
                          uint64_t usec)
{
    int ret;

    if (source == NULL || !source->is_timer || source->device != device_of(public))
        return -EINVAL;
    source->deadline = deadline_of(usec);
    if (source->event_source == NULL)
        return 0; /* armed when the device joins its loop */
    sources_changed(source->device);
    if (source->deadline == VFIO_USERD_TIMER_OFF)
        return sd_event_source_set_enabled(source->event_source, SD_EVENT_OFF);
    ret = sd_event_source_set_time(source->event_source, source->deadline);
    if (ret >= 0)
        ret = sd_event_source_set_enabled(source->event_source, SD_EVENT_ONESHOT);
    return ret;
}

static void host_remove_source(struct vfio_userd_device *public, struct vfio_userd_source *source)
{
    if (source != NULL && source->device == device_of(public)) {
        sources_changed(source->device);
        source_free(source);
    }
}

/*
 * A loop's post hub: the eventfd that wakes it for post(), shared by every device the loop
 * serves. One eventfd per device cost a descriptor each, and a daemon serving ten thousand
 * devices on its workers would hold ten thousand more than it needs. A post that makes a
 * device's queue non-empty puts the device on the hub's list of ready devices and, when
 * that list was empty, writes the eventfd; the loop then runs the queues of the devices on
 * the list. Hubs are made and freed on their loop's thread (attach, detach), found by loop.
 */
struct vu_post_hub {
    sd_event *event;
    int fd;
    sd_event_source *source;
    unsigned users; /* devices attached; under hubs_lock */
    pthread_mutex_t lock;
    struct vu_device *ready; /* under `lock`: devices with posts waiting, by post_next */
    struct vu_post_hub *next;
};

static pthread_mutex_t hubs_lock = PTHREAD_MUTEX_INITIALIZER;
static struct vu_post_hub *hubs;

/* Takes the posted functions, oldest first. */
static struct vu_post *take_posted(struct vu_device *device)
{
    struct vu_post *taken = atomic_exchange_explicit(&device->posted, NULL, memory_order_acquire);
    struct vu_post *ordered = NULL;

    while (taken != NULL) {
        struct vu_post *next = taken->next;
        taken->next = ordered;
        ordered = taken;
        taken = next;
    }
    return ordered;
}

/* Under device->post_lock: puts an attached device on its hub's list, once. */
static int mark_ready(struct vu_device *device)
{
    struct vu_post_hub *hub = device->post_hub;
    uint64_t one = 1;
    bool wake;

    if (hub == NULL || device->post_ready)
        return 0;
    device->post_ready = true;
    pthread_mutex_lock(&hub->lock);
    wake = hub->ready == NULL;
    device->post_next = hub->ready;
    hub->ready = device;
    pthread_mutex_unlock(&hub->lock);
    /* Still under post_lock: the hub, and its eventfd, outlive the device's attachment. */
    if (wake && write(hub->fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
        return -errno;
    return 0;
}

static int host_post(struct vfio_userd_device *public, void (*function)(void *opaque), void *opaque)
{
    struct vu_device *device = device_of(public);
    struct vu_post *post, *head;
    int ret = 0;

    if (function == NULL)
        return -EINVAL;
    post = malloc(sizeof(*post));
    if (post == NULL)
        return -ENOMEM;
    post->function = function;
    post->opaque = opaque;
    head = atomic_load_explicit(&device->posted, memory_order_relaxed);
    do
        post->next = head;
    while (!atomic_compare_exchange_weak_explicit(&device->posted, &head, post,
                                                  memory_order_release, memory_order_relaxed));
    /* Only the post that made the queue non-empty tells the loop: the loop takes the whole
     * queue after it took the device off the hub's list, so a later post finds it taken or
     * to be taken. Before attach, the queue waits, and attach looks at it. */
    if (head == NULL) {
        pthread_mutex_lock(&device->post_lock);
        ret = mark_ready(device);
        pthread_mutex_unlock(&device->post_lock);
    }
    return ret;
}

/* Runs what was posted to `device`, on its loop. */
static void run_posted(struct vu_device *device)
{
    struct vu_device *previous;
    struct vu_post *post;

    pthread_mutex_lock(&device->post_lock);
    device->post_ready = false;
    pthread_mutex_unlock(&device->post_lock);
    post = take_posted(device);
    if (post == NULL)
        return;
    previous = callback_begin(device, "post");
    while (post != NULL) {
        struct vu_post *next = post->next;
        post->function(post->opaque);
        free(post);
        post = next;
    }
    callback_end(device, previous);
}

static int on_posted(sd_event_source *event_source, int fd, uint32_t revents, void *userdata)
{
    struct vu_post_hub *hub = userdata;
    struct vu_device *ready;
    uint64_t count;

    if (read(fd, &count, sizeof(count)) < 0 && errno != EAGAIN)
        return 0;
    /* The devices ready now; one that posts again meanwhile is back on the list, for the
     * next turn of the loop, so a busy poster cannot keep the loop here. Only this thread
     * detaches devices, and no posted function does, so those taken stay attached. */
    pthread_mutex_lock(&hub->lock);
    ready = hub->ready;
    hub->ready = NULL;
    pthread_mutex_unlock(&hub->lock);
    while (ready != NULL) {
        struct vu_device *next = ready->post_next;
        run_posted(ready);
        ready = next;
    }
    return 0;
}

/* The post hub of `event`'s loop, made on first use; on the loop's thread. */
static int hub_get(sd_event *event, struct vu_post_hub **result)
{
    struct vu_post_hub *hub;
    int ret = 0;

    pthread_mutex_lock(&hubs_lock);
    for (hub = hubs; hub != NULL && hub->event != event; hub = hub->next)
        ;
    if (hub == NULL) {
        hub = calloc(1, sizeof(*hub));
        if (hub == NULL) {
            ret = -ENOMEM;
            goto out;
        }
        hub->event = event;
        hub->fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (hub->fd < 0) {
            ret = -errno;
            free(hub);
            goto out;
        }
        ret = sd_event_add_io(event, &hub->source, hub->fd, EPOLLIN, on_posted, hub);
        if (ret < 0) {
            close(hub->fd);
            free(hub);
            goto out;
        }
        pthread_mutex_init(&hub->lock, NULL);
        hub->next = hubs;
        hubs = hub;
    }
    hub->users++;
    *result = hub;
out:
    pthread_mutex_unlock(&hubs_lock);
    return ret;
}

static void hub_put(struct vu_post_hub *hub)
{
    struct vu_post_hub **link;

    pthread_mutex_lock(&hubs_lock);
    if (--hub->users == 0) {
        for (link = &hubs; *link != hub; link = &(*link)->next)
            ;
        *link = hub->next;
        sd_event_source_disable_unref(hub->source);
        close(hub->fd);
        pthread_mutex_destroy(&hub->lock);
        free(hub);
    }
    pthread_mutex_unlock(&hubs_lock);
}

/* Joins `hub`; posts queued before (in create(), or while detached) are run soon. */
static int join_hub(struct vu_device *device, struct vu_post_hub *hub)
{
    int ret = 0;

    pthread_mutex_lock(&device->post_lock);
    device->post_hub = hub;
    if (atomic_load(&device->posted) != NULL)
        ret = mark_ready(device);
    pthread_mutex_unlock(&device->post_lock);
    return ret;
}

/* Leaves its hub, off the hub's list if it was on it; what it queued stays queued. */
static void leave_hub(struct vu_device *device)
{
    struct vu_post_hub *hub;

    pthread_mutex_lock(&device->post_lock);
    hub = device->post_hub;
    if (hub != NULL && device->post_ready) {
        pthread_mutex_lock(&hub->lock);
        for (struct vu_device **link = &hub->ready; *link != NULL; link = &(*link)->post_next)
            if (*link == device) {
                *link = device->post_next;
                break;
            }
        pthread_mutex_unlock(&hub->lock);
    }
    device->post_ready = false;
    device->post_hub = NULL;
    pthread_mutex_unlock(&device->post_lock);
    if (hub != NULL)
        hub_put(hub);
}

int vu_device_attach_loop(struct vu_device *device, struct vu_loop *loop,
                          struct vu_endpoint *endpoint)
{
    sd_event *event = vu_loop_event(loop);
    struct vu_post_hub *hub = NULL;
    int ret;

    vu_device_detach_loop(device);
    device->loop = vu_loop_ref(loop);
    sources_changed(device);
    device->endpoint = endpoint;
    atomic_store_explicit(&device->loop_thread, (unsigned long)pthread_self(),
                          memory_order_relaxed);
    ret = hub_get(event, &hub);
    if (ret >= 0)
        ret = join_hub(device, hub);
    for (struct vfio_userd_source *source = device->sources; ret >= 0 && source != NULL;
         source = source->next)
        ret = source_attach(source);
    if (ret < 0)
        vu_device_detach_loop(device);
    return ret;
}

void vu_device_detach_loop(struct vu_device *device)
{
    for (struct vfio_userd_source *source = device->sources; source != NULL; source = source->next)
        source_detach(source);
    leave_hub(device);
    sources_changed(device);
    device->loop = vu_loop_unref(device->loop);
    device->endpoint = NULL;
}

/* ---------------------------------------------------------------------------------------
 * Quiesce (ABI 1.1): the device finishes its I/O before client memory goes or it resets.
 */

int vu_device_quiesce(struct vu_device *device)
{
    int ret;

    if (device->ops.quiesce == NULL || device->quiesce_state == VU_QUIESCE_DONE)
        return 0;
    if (device->quiesce_state == VU_QUIESCE_WAITING)
        return -EBUSY;
    /* Waiting first: the plugin may report done before it returns. */
    device->quiesce_state = VU_QUIESCE_WAITING;
    track(device, "quiesce");
    ret = device->ops.quiesce(device->instance);
    track(device, NULL);
    if (ret == -EBUSY && device->quiesce_state == VU_QUIESCE_WAITING) {
        if (device->endpoint != NULL)
            vu_endpoint_quiesce_waiting(device->endpoint);
        return -EBUSY;
    }
    if (ret < 0 && ret != -EBUSY)
        vu_log(VFIO_USERD_LOG_WARNING, device->name,
               "quiesce failed (%s); going ahead, the client's request cannot wait",
               strerror(-ret));
    device->quiesce_state = VU_QUIESCE_DONE;
    return 0;
}

bool vu_device_quiesce_done(const struct vu_device *device)
{
    return device->quiesce_state != VU_QUIESCE_WAITING;
}

void vu_device_resume(struct vu_device *device)
{
    /* Only a finished quiesce ends here: one still WAITING belongs to whoever asked for it,
     * and the plugin has yet to report it done (its quiesced() would then be refused). */
    if (device->quiesce_state != VU_QUIESCE_DONE)
        return;
    device->quiesce_state = VU_QUIESCE_NONE;
    if (device->ops.resume != NULL) {
        track(device, "resume");
        device->ops.resume(device->instance);
        track(device, NULL);
    }
}

static int host_quiesced(struct vfio_userd_device *public)
{
    struct vu_device *device = device_of(public);

    if (device->quiesce_state != VU_QUIESCE_WAITING)
        return -EINVAL;
    device->quiesce_state = VU_QUIESCE_DONE;
    /* What waited goes on from the loop, not from inside the plugin's callback. */
    if (device->endpoint != NULL)
        vu_endpoint_quiesced(device->endpoint);
    return 0;
}

static const struct vfio_userd_host_limits *host_limits(struct vfio_userd_device *public)
{
    struct vu_device *device = device_of(public);

    device->limits = (struct vfio_userd_host_limits){
        .size = sizeof(device->limits),
        .max_ioeventfds = VFIO_USERD_MAX_IOEVENTFDS,
        .max_dma_maps = device->dma.limit,
        .max_msix_vectors = VU_PCI_MSIX_MAX_VECTORS,
        .max_msi_vectors = VU_PCI_MSI_MAX_VECTORS,
        .max_sparse_areas = VU_MAX_SPARSE_AREAS,
        .max_client_fds = device->max_client_fds,
    };
    return &device->limits;
}

_Static_assert(VFIO_USERD_MESSAGE_COUNTERS == VU_COMMAND_MAX + 1, "counter array size");

static const struct vfio_userd_host host_table = {
    .size = sizeof(struct vfio_userd_host),
    .set_ops = host_set_ops,
    .pci_set_identity = host_pci_set_identity,
    .add_region = host_add_region,
    .pci_add_power_management = host_pci_add_power_management,
    .pci_add_msi = host_pci_add_msi,
    .pci_add_msix = host_pci_add_msix,
    .pci_add_express = host_pci_add_express,
    .pci_add_vendor_specific = host_pci_add_vendor_specific,
    .region_memory = host_region_memory,
    .dma_translate = host_dma_translate,
    .dma_submit = host_dma_submit,
    .irq_trigger = host_irq_trigger,
    .irq_signal = host_irq_signal,
    .pci_config_read = host_pci_config_read,
    .log = host_log,
    .name = host_name,
    .params_check_keys = vu_params_check_keys,
    .params_get_u64 = vu_params_get_u64,
    .message_counters = host_message_counters,
    .add_ioeventfd = host_add_ioeventfd,
    .open_file = host_open_file,
    .add_fd = host_add_fd,
    .add_timer = host_add_timer,
    .timer_set = host_timer_set,
    .remove_source = host_remove_source,
    .post = host_post,
    .limits = host_limits,
    .dma_scatter = host_dma_scatter,
    .quiesced = host_quiesced,
};

/* ---------------------------------------------------------------------------------------
 * Life cycle.
 */

int vu_device_check_plugin(const struct vfio_userd_plugin *plugin, char *message, size_t size)
{
    if (plugin->abi_major != VFIO_USERD_ABI_MAJOR || plugin->abi_minor > VFIO_USERD_ABI_MINOR) {
        snprintf(message, size, "built for plugin ABI %u.%u, this host speaks %u.%u",
                 plugin->abi_major, plugin->abi_minor, VFIO_USERD_ABI_MAJOR, VFIO_USERD_ABI_MINOR);
        return -EPROTONOSUPPORT;
    }
    if (plugin->name == NULL || plugin->create == NULL) {
        snprintf(message, size, "plugin descriptor lacks a name or a create function");
        return -EINVAL;
    }
    return 0;
}

/* Whether [offset, offset + size) of a BAR could be mmap()ed by the client. */
static bool range_mappable(const struct vu_device *device, uint32_t bar, uint64_t offset,
                           uint64_t size)
{
    const struct vu_region_state *state = &device->regions[bar];

    if (!state->present || !(state->description.flags & VFIO_USERD_REGION_MAPPABLE))
        return false;
    if (state->description.sparse_area_count == 0)
        return true;
    for (uint32_t i = 0; i < state->description.sparse_area_count; i++) {
        const struct vfio_userd_sparse_area *area = &state->sparse_areas[i];
        if (offset < area->offset + area->size && area->offset < offset + size)
            return true;
    }
    return false;
}

/* The MSI-X table and PBA are emulated here: a client mapping them would bypass that. */
static bool msix_is_mappable(const struct vu_device *device)
{
    const struct vu_pci_config *config = &device->config;

    if (device->msix.vectors == 0)
        return false;
    return range_mappable(device, config->msix_table_bar, config->msix_table_offset,
                          vu_msix_table_size(&device->msix)) ||
           range_mappable(device, config->msix_pba_bar, config->msix_pba_offset,
                          vu_msix_pba_size(&device->msix));
}

static void free_device(struct vu_device *device)
{
    /* What the plugin left: its sources, and functions posted that never ran. */
    vu_device_detach_loop(device);
    while (device->sources != NULL)
        source_free(device->sources);
    for (struct vu_post *post = take_posted(device); post != NULL;) {
        struct vu_post *next = post->next;
        free(post);
        post = next;
    }
    pthread_mutex_destroy(&device->post_lock);
    for (uint32_t i = 0; i < device->ioeventfd_count; i++)
        close(device->ioeventfds[i].fd);
    for (unsigned i = 0; i < VFIO_USERD_REGION_COUNT; i++)
        release_region(&device->regions[i]);
    vu_device_release_interrupts(device);
    free(device->raised_vectors);
    vu_msix_destroy(&device->msix);
    vu_dma_table_destroy(&device->dma);
    json_decref(device->params);
    free(device->name);
    if (tracker != NULL && tracker->named == device)
        tracker->named = NULL; /* a later device may get the same address */
    free(device);
}

int vu_device_create(const struct vfio_userd_plugin *plugin, const char *name, const json_t *params,
                     struct vu_device **result, struct vfio_userd_error *error)
{
    static const struct vfio_userd_pci_identity no_identity = {0};
    struct vu_device *device;
    char message[200];
    int ret;

    *result = NULL;
    vu_fault_guard_install();
    ret = vu_device_check_plugin(plugin, message, sizeof(message));
    if (ret < 0)
        return vfio_userd_error_set(error, ret, NULL, "%s", message);
    if (params != NULL && !json_is_object(params))
        return vfio_userd_error_set(error, -EINVAL, NULL, "parameters must be a mapping");

    device = calloc(1, sizeof(*device));
    if (device == NULL)
        return vfio_userd_error_set(error, -ENOMEM, NULL, "out of memory");
    device->public.host = &host_table;
    for (unsigned i = 0; i < VFIO_USERD_REGION_COUNT; i++)
        device->regions[i].memory_fd = -1;
    /* Before create(): a thread the plugin starts there may post() at once. */
    pthread_mutex_init(&device->post_lock, NULL);
    /* As many marks as PCI allows vectors, so that other threads never see them change. */
    device->raised_vector_words = (VU_PCI_MSIX_MAX_VECTORS + 63) / 64;
    device->raised_vectors = calloc(device->raised_vector_words, sizeof(uint64_t));
    device->plugin = plugin;
    device->name = strdup(name);
    device->params = params != NULL ? json_deep_copy(params) : json_object();
    vu_dma_table_init(&device->dma, VU_SERVER_MAX_DMA_MAPS);
    vu_pci_config_init(&device->config, &no_identity);
    if (device->name == NULL || device->params == NULL || device->raised_vectors == NULL) {
        ret = vfio_userd_error_set(error, -ENOMEM, NULL, "out of memory");
        goto fail;
    }

    device->declaring = true;
    track(device, "create");
    ret = plugin->create(&device->public, device->params, error);
    track(device, NULL);
    device->declaring = false;
    if (ret < 0) {
        if (error != NULL && error->message[0] == '\0')
            vfio_userd_error_set(error, ret, NULL, "plugin '%s' refused the device: %s",
                                 plugin->name, strerror(-ret));
        goto fail;
    }
    ret = vu_pci_config_finalize(&device->config);
    if (ret == 0 && msix_is_mappable(device))
        ret = -EINVAL;
    if (ret < 0) {
        vfio_userd_error_set(error, ret, NULL,
                             "plugin '%s' declared an inconsistent PCI device: %s", plugin->name,
                             strerror(-ret));
        goto fail;
    }
    ret = vu_device_allocate_interrupts(device);
    if (ret < 0) {
        vfio_userd_error_set(error, ret, NULL, "out of memory");
        goto fail;
    }
    *result = device;
    return 0;

fail:
    if (device->ops_set && device->ops.destroy != NULL) {
        track(device, "destroy");
        device->ops.destroy(device->instance);
        track(device, NULL);
    }
    free_device(device);
    return ret < 0 ? ret : -EINVAL;
}

void vu_device_destroy(struct vu_device *device)
{
    if (device == NULL)
        return;
    if (device->ops.destroy != NULL) {
        track(device, "destroy");
        device->ops.destroy(device->instance);
        track(device, NULL);
    }
    free_device(device);
}

void vu_device_attach_session(struct vu_device *device, struct vu_session *session,
                              uint32_t max_dma_maps)
{
    device->session = session;
    device->dma.limit =
        max_dma_maps < VU_SERVER_MAX_DMA_MAPS ? max_dma_maps : VU_SERVER_MAX_DMA_MAPS;
    device->statistics.connections++;
    if (device->ops.client_connect != NULL) {
        track(device, "client_connect");
        device->ops.client_connect(device->instance);
        track(device, NULL);
    }
}

static void remove_dma_range(struct vu_device *device, uint32_t index)
{
    const struct vu_dma_range *range = &device->dma.ranges[index];

    if (device->ops.dma_unmap != NULL) {
        track(device, "dma_unmap");
        device->ops.dma_unmap(device->instance, range->address, range->size);
        track(device, NULL);
    }
    vu_dma_table_remove(&device->dma, index);
}

static void remove_all_dma_ranges(struct vu_device *device)
{
    while (device->dma.count > 0)
        remove_dma_range(device, device->dma.count - 1);
}

void vu_device_detach_session(struct vu_device *device)
{
    vu_device_release_client_interrupts(device);
    device->session = NULL;
    device->dma_fault = 0;
    /* The client's memory stays mapped until nothing of the device's uses it. */
    if ((device->dma.count > 0 || device->quiesce_state == VU_QUIESCE_WAITING) &&
        vu_device_quiesce(device) == -EBUSY) {
        device->detach_pending = true;
        return;
    }
    vu_device_finish_detach(device);
}

bool vu_device_detaching(const struct vu_device *device)
{
    return device->detach_pending;
}

void vu_device_finish_detach(struct vu_device *device)
{
    device->detach_pending = false;
    remove_all_dma_ranges(device);
    device->dma.limit = VU_SERVER_MAX_DMA_MAPS;
    if (device->ops.client_disconnect != NULL) {
        track(device, "client_disconnect");
        device->ops.client_disconnect(device->instance);
        track(device, NULL);
    }
    vu_device_resume(device);
}

/* ---------------------------------------------------------------------------------------
 * Commands.
 */

void vu_device_get_info(const struct vu_device *device, struct vu_device_info *info)
{
    *info = (struct vu_device_info){
        .argsz = sizeof(*info),
        .flags = VFIO_DEVICE_FLAGS_PCI | VFIO_DEVICE_FLAGS_RESET,
        .num_regions = VFIO_PCI_NUM_REGIONS,
        .num_irqs = VFIO_PCI_NUM_IRQS,
    };
}

static uint64_t region_size(const struct vu_device *device, uint32_t index)
{
    if (index == VFIO_USERD_REGION_CONFIG)
        return device->config.size;
    return device->regions[index].present ? device->regions[index].description.size : 0;
}

int vu_device_get_region_info(const struct vu_device *device, uint32_t index, uint32_t argsz,
                              void *buffer, size_t capacity, size_t *length, int *fd)
{
    struct vfio_region_info info = {.index = index};
    const struct vu_region_state *state;
    size_t caps_size = 0, needed;

    *fd = -1;
    if (index >= VFIO_PCI_NUM_REGIONS || argsz < sizeof(info))
        return -EINVAL;
    info.size = region_size(device, index);
    if (index == VFIO_USERD_REGION_CONFIG) {
        info.flags = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE;
    } else if (index < VFIO_USERD_REGION_COUNT && device->regions[index].present) {
        state = &device->regions[index];
        if (state->description.flags & VFIO_USERD_REGION_READABLE)
            info.flags |= VFIO_REGION_INFO_FLAG_READ;
        if (state->description.flags & VFIO_USERD_REGION_WRITABLE)
            info.flags |= VFIO_REGION_INFO_FLAG_WRITE;
        if (state->description.flags & VFIO_USERD_REGION_MAPPABLE) {
            info.flags |= VFIO_REGION_INFO_FLAG_MMAP;
            *fd = state->memory_fd;
            if (state->description.sparse_area_count > 0)
                caps_size = sizeof(struct vfio_region_info_cap_sparse_mmap) +
                            state->description.sparse_area_count *
                                sizeof(struct vfio_region_sparse_mmap_area);
        }
    }
    needed = sizeof(info) + caps_size;
    info.argsz = (uint32_t)needed;
    if (caps_size > 0 && argsz >= needed) {
        struct vfio_region_info_cap_sparse_mmap sparse = {
            .header = {.id = VFIO_REGION_INFO_CAP_SPARSE_MMAP, .version = 1, .next = 0},
            .nr_areas = device->regions[index].description.sparse_area_count,
        };
        if (capacity < needed)
            return -ENOSPC;
        info.flags |= VFIO_REGION_INFO_FLAG_CAPS;
        info.cap_offset = sizeof(info);
        memcpy((uint8_t *)buffer + sizeof(info), &sparse, sizeof(sparse));
        for (uint32_t i = 0; i < sparse.nr_areas; i++) {
            struct vfio_region_sparse_mmap_area area = {
                .offset = device->regions[index].sparse_areas[i].offset,
                .size = device->regions[index].sparse_areas[i].size,
            };
            memcpy((uint8_t *)buffer + sizeof(info) + sizeof(sparse) + i * sizeof(area), &area,
                   sizeof(area));
        }
        *length = needed;
    } else {
        /*
         * Too small an argsz: the fixed part alone, argsz saying what is needed, and
         * neither the CAPS flag nor a cap_offset. (The kernel's VFIO sets CAPS with
         * cap_offset 0 here, but QEMU's vfio-user client checks cap_offset whenever CAPS
         * is set, before it looks at argsz, and refuses the device over cap_offset 0.)
         * Once it sees our larger argsz it asks again, and the chain fits.
         */
        *length = sizeof(info);
    }
    memcpy(buffer, &info, sizeof(info));
    return 0;
}

/* Which emulated MSI-X structure [offset, offset + count) of `region` touches, if any. */
enum msix_part { MSIX_NONE, MSIX_TABLE, MSIX_PBA, MSIX_STRADDLE };

static enum msix_part msix_part_of(const struct vu_device *device, uint32_t region, uint64_t offset,
                                   uint32_t count, uint64_t *part_offset)
{
    const struct vu_pci_config *config = &device->config;
    struct {
        enum msix_part part;
        uint32_t bar;
        uint64_t start, size;
    } parts[2] = {
        {MSIX_TABLE, config->msix_table_bar, config->msix_table_offset,
         vu_msix_table_size(&device->msix)},
        {MSIX_PBA, config->msix_pba_bar, config->msix_pba_offset, vu_msix_pba_size(&device->msix)},
    };

    if (device->msix.vectors == 0)
        return MSIX_NONE;
    for (unsigned i = 0; i < 2; i++) {
        uint64_t start = parts[i].start, end = parts[i].start + parts[i].size;
        if (parts[i].bar != region || offset >= end || offset + count <= start)
            continue;
        if (offset < start || offset + count > end)
            return MSIX_STRADDLE;
        *part_offset = offset - start;
        return parts[i].part;
    }
    return MSIX_NONE;
}

int vu_device_region_access(struct vu_device *device, uint32_t region, uint64_t offset, void *data,
                            uint32_t count, bool is_write)
{
    const struct vu_region_state *state;
    uint64_t part_offset = 0;
    int ret;

    if (region == VFIO_USERD_REGION_CONFIG) {
        if (!is_write)
            return vu_pci_config_read(&device->config, offset, data, count);
        ret = vu_pci_config_write(&device->config, offset, data, count);
        if (ret == 0)
            vu_device_deliver_pending(device);
        return ret;
    }
    if (region >= VFIO_USERD_REGION_COUNT || !device->regions[region].present)
        return -EINVAL;
    state = &device->regions[region];
    if (offset > state->description.size || count > state->description.size - offset)
        return -EINVAL;

    switch (msix_part_of(device, region, offset, count, &part_offset)) {
    case MSIX_TABLE:
        if (!is_write)
            return vu_msix_table_read(&device->msix, part_offset, data, count);
        ret = vu_msix_table_write(&device->msix, part_offset, data, count);
        if (ret == 0)
            vu_device_deliver_pending(device);
        return ret;
    case MSIX_PBA:
        return is_write ? vu_msix_pba_write(&device->msix, part_offset, data, count)
                        : vu_msix_pba_read(&device->msix, part_offset, data, count);
    case MSIX_STRADDLE:
        return -EINVAL;
    case MSIX_NONE:
        break;
    }

    if (state->description.access != NULL) {
        track(device, is_write ? "region_write" : "region_read");
        ret = state->description.access(device->instance, region, offset, data, count, is_write);
        track(device, NULL);
        return ret;
    }
    if (is_write)
        memcpy(state->memory + offset, data, count);
    else
        memcpy(data, state->memory + offset, count);
    return 0;
}

bool vu_device_region_allows(const struct vu_device *device, uint32_t region, bool is_write)
{
    uint32_t flag = is_write ? VFIO_USERD_REGION_WRITABLE : VFIO_USERD_REGION_READABLE;

    if (region == VFIO_USERD_REGION_CONFIG)
        return true;
    if (region >= VFIO_USERD_REGION_COUNT || !device->regions[region].present)
        return false;
    return (device->regions[region].description.flags & flag) != 0;
}

uint64_t vu_device_region_size(const struct vu_device *device, uint32_t region)
{
    if (region >= VFIO_USERD_REGION_COUNT)
        return 0;
    return region_size(device, region);
}

int vu_device_dma_map(struct vu_device *device, const struct vu_dma_map *map, int fd)
{
    int ret;

    if (map->flags == 0 || (map->flags & ~(uint32_t)(VU_DMA_FLAG_READABLE | VU_DMA_FLAG_WRITABLE)))
        ret = -EINVAL;
    else
        ret = vu_dma_table_add(&device->dma, map->address, map->size, map->flags, fd, map->offset);
    if (fd >= 0)
        close(fd);
    if (ret == 0 && device->ops.dma_map != NULL) {
        uint32_t access = 0;
        if (map->flags & VU_DMA_FLAG_READABLE)
            access |= VFIO_USERD_DMA_READ;
        if (map->flags & VU_DMA_FLAG_WRITABLE)
            access |= VFIO_USERD_DMA_WRITE;
        track(device, "dma_map");
        device->ops.dma_map(device->instance, map->address, map->size, access);
        track(device, NULL);
    }
    return ret;
}

int vu_device_dma_unmap_check(const struct vu_device *device, const struct vu_dma_unmap *unmap)
{
    int index;

    if (unmap->flags == VU_DMA_UNMAP_FLAG_ALL) {
        if (unmap->address != 0 || unmap->size != 0)
            return -EINVAL;
        return device->dma.count > 0;
    }
    if (unmap->flags != 0)
        return unmap->flags & VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP ? -ENOTSUP : -EINVAL;
    index = vu_dma_table_find_exact(&device->dma, unmap->address, unmap->size);
    return index < 0 ? index : 1;
}

int vu_device_dma_unmap(struct vu_device *device, const struct vu_dma_unmap *unmap)
{
    int ret = vu_device_dma_unmap_check(device, unmap);

    if (ret <= 0)
        return ret;
    if (unmap->flags == VU_DMA_UNMAP_FLAG_ALL)
        remove_all_dma_ranges(device);
    else
        remove_dma_range(
            device, (uint32_t)vu_dma_table_find_exact(&device->dma, unmap->address, unmap->size));
    return 0;
}

int vu_device_reset_quiesced(struct vu_device *device)
{
    int ret;

    /* Quiet already, for a held command or a departure that has not run yet: reset, but
     * leave the resume to that operation, which must still find the device quiet. */
    if (device->quiesce_state == VU_QUIESCE_DONE)
        return vu_device_reset(device);
    ret = vu_device_quiesce(device);
    if (ret < 0)
        return ret;
    ret = vu_device_reset(device);
    vu_device_resume(device);
    return ret;
}

int vu_device_reset(struct vu_device *device)
{
    int ret = 0;

    if (device->ops.reset != NULL) {
        track(device, "reset");
        ret = device->ops.reset(device->instance);
        track(device, NULL);
    }
    vu_pci_config_reset(&device->config);
    vu_msix_reset(&device->msix);
    for (unsigned index = 0; index < VFIO_USERD_IRQ_COUNT; index++)
        vu_device_clear_interrupts(device, index);
    return ret;
}
