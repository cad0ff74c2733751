/*
 * The device engine's interrupts: the eventfds a client wires with SET_IRQS, masks and
 * pending state, and delivery through whichever type the client enabled in config space
 * (MSI-X, then MSI, then INTx). Part of the per-device engine (device.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "device.h"
#include "log.h"

static void close_fd(int *fd)
{
    if (*fd >= 0) {
        close(*fd);
        *fd = -1;
    }
}

/* Closes a client's eventfd the device held, if any, and counts it out of the budget. */
static void release_slot(struct vu_device *device, int *slot)
{
    if (*slot >= 0)
        device->client_fds--;
    close_fd(slot);
}

/* Signals an eventfd; the descriptors are non-blocking, so this never stalls. */
static void signal_eventfd(int fd)
{
    uint64_t one = 1;

    if (fd >= 0 && write(fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
        vu_log(VFIO_USERD_LOG_DEBUG, NULL, "eventfd write failed: %m");
}

/* Records an interrupt as pending (or no longer), where the device model shows it too:
 * the MSI-X PBA and the MSI Pending Bits. */
static void set_pending(struct vu_device *device, enum vfio_userd_irq_index index, uint32_t vector,
                        bool pending)
{
    device->irqs[index].pending[vector] = pending;
    if (index == VFIO_USERD_IRQ_MSIX)
        vu_msix_set_pending(&device->msix, vector, pending);
    else if (index == VFIO_USERD_IRQ_MSI && device->config.msi_per_vector_mask)
        vu_pci_config_msi_set_pending(&device->config, vector, pending);
}

/* Nothing masked by SET_IRQS, nothing pending, INTx deasserted. */
void vu_device_clear_interrupts(struct vu_device *device, enum vfio_userd_irq_index index)
{
    struct vu_irq_state *irq = &device->irqs[index];

    for (uint32_t vector = 0; vector < irq->count; vector++) {
        irq->masked[vector] = false;
        set_pending(device, index, vector, false);
    }
    if (index == VFIO_USERD_IRQ_INTX)
        vu_pci_config_set_intx_status(&device->config, false);
}

/*
 * Whether one vector is held back from delivery, and by what:
 * - every type: the client's SET_IRQS MASK (INTx also masks itself when delivered);
 * - MSI-X: the Function Mask in config space, which every client forwards, and the
 *   vector's Mask bit in our table only when the client writes the table (msix.h). QEMU
 *   keeps the guest's table to itself, so our copy stays in its reset state, every vector
 *   masked; it masks vectors on its side, and holds back what we signal meanwhile;
 * - MSI: the per-vector Mask Bits in config space, which the guest writes through the
 *   client (0 from reset);
 * - INTx: Interrupt Disable in the Command register; the Interrupt Status bit is set all
 *   the same, as on a real function (PCI 3.0 6.2.2, 6.2.3).
 * A vector without an eventfd waits too. Clearing any of these (SET_IRQS UNMASK, a config
 * space or table write) ends in vu_device_deliver_pending().
 */
static bool vector_held(const struct vu_device *device, enum vfio_userd_irq_index index,
                        uint32_t vector)
{
    const struct vu_irq_state *irq = &device->irqs[index];

    if (irq->masked[vector] || irq->trigger_fds[vector] < 0)
        return true;
    switch (index) {
    case VFIO_USERD_IRQ_MSIX:
        return vu_pci_config_msix_function_masked(&device->config) ||
               vu_msix_vector_held(&device->msix, vector);
    case VFIO_USERD_IRQ_MSI:
        return vu_pci_config_msi_vector_masked(&device->config, vector);
    case VFIO_USERD_IRQ_INTX:
        return vu_pci_config_intx_disabled(&device->config);
    default:
        return false;
    }
}

/* Delivers, or records as pending, one interrupt of a given type and sub-index. */
static void fire_vector(struct vu_device *device, enum vfio_userd_irq_index index, uint32_t vector)
{
    struct vu_irq_state *irq = &device->irqs[index];

    /* The function asserts INTx whether or not the line may reach the client. */
    if (index == VFIO_USERD_IRQ_INTX)
        vu_pci_config_set_intx_status(&device->config, true);
    set_pending(device, index, vector, vector_held(device, index, vector));
    if (irq->pending[vector])
        return;
    signal_eventfd(irq->trigger_fds[vector]);
    /* INTx is level-triggered: it stays asserted, and masked, until the client unmasks it. */
    if (index == VFIO_USERD_IRQ_INTX) {
        irq->masked[vector] = true;
        signal_eventfd(irq->mask_fds[vector]);
    }
}

/* Re-delivers pending interrupts after something unmasked them. */
void vu_device_deliver_pending(struct vu_device *device)
{
    for (unsigned index = 0; index < VFIO_USERD_IRQ_COUNT; index++) {
        struct vu_irq_state *irq = &device->irqs[index];
        for (uint32_t vector = 0; vector < irq->count; vector++)
            if (irq->pending[vector])
                fire_vector(device, index, vector);
    }
}

int vu_device_irq_trigger(struct vu_device *device, uint32_t vector)
{
    uint32_t msi_vectors;

    /* Inside create() the interrupt state does not exist yet: no client to tell. */
    if (device->declaring)
        return -ENOTCONN;

    if (device->irqs[VFIO_USERD_IRQ_MSIX].count > 0 &&
        vu_pci_config_msix_enabled(&device->config)) {
        if (vector >= device->irqs[VFIO_USERD_IRQ_MSIX].count)
            return -EINVAL;
        fire_vector(device, VFIO_USERD_IRQ_MSIX, vector);
        return 0;
    }
    if (device->irqs[VFIO_USERD_IRQ_MSI].count > 0 &&
        vu_pci_config_msi_enabled(&device->config, &msi_vectors)) {
        if (vector >= msi_vectors)
            return -EINVAL;
        fire_vector(device, VFIO_USERD_IRQ_MSI, vector);
        return 0;
    }
    if (device->irqs[VFIO_USERD_IRQ_INTX].count > 0) {
        /* Every vector shares the one INTx line; Interrupt Disable only holds it back. */
        fire_vector(device, VFIO_USERD_IRQ_INTX, 0);
        return 0;
    }
    return -ENOTCONN;
}

int vu_device_allocate_interrupts(struct vu_device *device)
{
    device->irqs[VFIO_USERD_IRQ_ERR].count = 1;
    device->irqs[VFIO_USERD_IRQ_REQ].count = 1;
    device->client_fds = 0;
    device->max_client_fds = VU_MAX_CLIENT_FDS_DEFAULT;
    device->irqs[VFIO_USERD_IRQ_INTX].info_flags =
        VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_MASKABLE | VFIO_IRQ_INFO_AUTOMASKED;
    device->irqs[VFIO_USERD_IRQ_MSI].info_flags = VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_NORESIZE;
    device->irqs[VFIO_USERD_IRQ_MSIX].info_flags = VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_MASKABLE;
    device->irqs[VFIO_USERD_IRQ_ERR].info_flags = VFIO_IRQ_INFO_EVENTFD;
    device->irqs[VFIO_USERD_IRQ_REQ].info_flags = VFIO_IRQ_INFO_EVENTFD;

    for (unsigned index = 0; index < VFIO_USERD_IRQ_COUNT; index++) {
        struct vu_irq_state *irq = &device->irqs[index];
        uint32_t count = irq->count > 0 ? irq->count : 1;

        irq->trigger_fds = malloc(count * sizeof(int));
        irq->mask_fds = malloc(count * sizeof(int));
        irq->unmask_fds = malloc(count * sizeof(int));
        irq->masked = calloc(count, sizeof(bool));
        irq->pending = calloc(count, sizeof(bool));
        if (!irq->trigger_fds || !irq->mask_fds || !irq->unmask_fds || !irq->masked ||
            !irq->pending)
            return -ENOMEM;
        for (uint32_t i = 0; i < count; i++)
            irq->trigger_fds[i] = irq->mask_fds[i] = irq->unmask_fds[i] = -1;
    }
    return 0;
}

static void close_irq_fds(struct vu_device *device, struct vu_irq_state *irq, uint32_t start,
                          uint32_t count)
{
    for (uint32_t i = start; i < start + count; i++) {
        release_slot(device, &irq->trigger_fds[i]);
        release_slot(device, &irq->mask_fds[i]);
        release_slot(device, &irq->unmask_fds[i]);
    }
}

void vu_device_release_interrupts(struct vu_device *device)
{
    for (unsigned index = 0; index < VFIO_USERD_IRQ_COUNT; index++) {
        struct vu_irq_state *irq = &device->irqs[index];
        if (irq->trigger_fds != NULL && irq->mask_fds != NULL && irq->unmask_fds != NULL)
            close_irq_fds(device, irq, 0, irq->count);
        free(irq->trigger_fds);
        free(irq->mask_fds);
        free(irq->unmask_fds);
        free(irq->masked);
        free(irq->pending);
        *irq = (struct vu_irq_state){0};
    }
}

int vu_device_get_irq_info(const struct vu_device *device, uint32_t index,
                           struct vfio_irq_info *info)
{
    if (index >= VFIO_USERD_IRQ_COUNT)
        return -EINVAL;
    *info = (struct vfio_irq_info){
        .argsz = sizeof(*info),
        .flags = device->irqs[index].info_flags,
        .index = index,
        .count = device->irqs[index].count,
    };
    return 0;
}

static void close_fds(int *fds, size_t count)
{
    for (size_t i = 0; i < count; i++)
        close_fd(&fds[i]);
}

/* The eventfd slots SET_IRQS with `action` writes, for one vector. */
static int *action_slot(struct vu_irq_state *irq, uint32_t action, uint32_t vector)
{
    return action == VFIO_IRQ_SET_ACTION_TRIGGER ? &irq->trigger_fds[vector]
           : action == VFIO_IRQ_SET_ACTION_MASK  ? &irq->mask_fds[vector]
                                                 : &irq->unmask_fds[vector];
}

/*
 * Whether the client may hand over `fd_count` eventfds for vectors [start, start + count)
 * of `irq`, replacing those it gave before for the same slots, within its budget.
 */
static int check_fd_budget(struct vu_device *device, struct vu_irq_state *irq, uint32_t action,
                           uint32_t start, uint32_t count, size_t fd_count)
{
    uint64_t held = device->client_fds;

    for (uint32_t i = 0; i < count; i++)
        held -= *action_slot(irq, action, start + i) >= 0;
    if (held + fd_count <= device->max_client_fds)
        return 0;
    vu_log(device->client_fds_warned ? VFIO_USERD_LOG_DEBUG : VFIO_USERD_LOG_WARNING, device->name,
           "SET_IRQS refused: the client would make the device hold %" PRIu64
           " eventfds, more than max_client_fds (%u)",
           held + fd_count, device->max_client_fds);
    device->client_fds_warned = true;
    return -ENOSPC;
}

static void set_masked(struct vu_device *device, enum vfio_userd_irq_index index, uint32_t vector,
                       bool masked)
{
    struct vu_irq_state *irq = &device->irqs[index];

    if (irq->masked[vector] == masked)
        return;
    irq->masked[vector] = masked;
    signal_eventfd(masked ? irq->mask_fds[vector] : irq->unmask_fds[vector]);
    /* Unmasking INTx is the client's end-of-interrupt: the line deasserts. */
    if (index == VFIO_USERD_IRQ_INTX && !masked)
        vu_pci_config_set_intx_status(&device->config, false);
}

int vu_device_set_irqs(struct vu_device *device, const struct vfio_irq_set *set,
                       const uint8_t *data, size_t data_length, int *fds, size_t fd_count)
{
    const uint32_t data_flags =
        VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_DATA_BOOL | VFIO_IRQ_SET_DATA_EVENTFD;
    const uint32_t action_flags =
        VFIO_IRQ_SET_ACTION_MASK | VFIO_IRQ_SET_ACTION_UNMASK | VFIO_IRQ_SET_ACTION_TRIGGER;
    uint32_t data_type = set->flags & data_flags, action = set->flags & action_flags;
    struct vu_irq_state *irq;
    int ret = -EINVAL;

    if ((set->flags & ~(data_flags | action_flags)) || !vu_is_power_of_two(data_type) ||
        !vu_is_power_of_two(action) || set->index >= VFIO_USERD_IRQ_COUNT)
        goto out;
    irq = &device->irqs[set->index];
    if (fd_count > 0 && (data_type != VFIO_IRQ_SET_DATA_EVENTFD || fd_count != set->count))
        goto out;

    if (set->count == 0) {
        /* count 0 with DATA_NONE|TRIGGER tears down every vector of the type. */
        if (data_type != VFIO_IRQ_SET_DATA_NONE || action != VFIO_IRQ_SET_ACTION_TRIGGER ||
            set->start != 0)
            goto out;
        close_irq_fds(device, irq, 0, irq->count);
        vu_device_clear_interrupts(device, set->index);
        ret = 0;
        goto notify;
    }
    if (set->start >= irq->count || set->count > irq->count - set->start)
        goto out;
    if (data_type == VFIO_IRQ_SET_DATA_BOOL && data_length < set->count)
        goto out;
    if (action != VFIO_IRQ_SET_ACTION_TRIGGER && !(irq->info_flags & VFIO_IRQ_INFO_MASKABLE))
        goto out;
    if (fd_count > 0) {
        ret = check_fd_budget(device, irq, action, set->start, set->count, fd_count);
        if (ret < 0)
            goto out;
        ret = -EINVAL;
    }
    for (size_t i = 0; i < fd_count; i++) {
        int flags = fcntl(fds[i], F_GETFL);
        if (flags < 0 || fcntl(fds[i], F_SETFL, flags | O_NONBLOCK) < 0)
            goto out;
    }

    for (uint32_t i = 0; i < set->count; i++) {
        uint32_t vector = set->start + i;
        bool selected = data_type != VFIO_IRQ_SET_DATA_BOOL || data[i] != 0;

        if (data_type == VFIO_IRQ_SET_DATA_EVENTFD) {
            int *slot = action_slot(irq, action, vector);

            release_slot(device, slot);
            /* No descriptors at all means "de-assign these vectors". */
            if (fd_count > 0) {
                *slot = fds[i];
                fds[i] = -1;
                device->client_fds++;
            }
            continue;
        }
        if (!selected)
            continue;
        if (action == VFIO_IRQ_SET_ACTION_TRIGGER)
            fire_vector(device, set->index, vector);
        else
            set_masked(device, set->index, vector, action == VFIO_IRQ_SET_ACTION_MASK);
    }
    vu_device_deliver_pending(device);
    ret = 0;
notify:
    if (device->ops.irq_state != NULL)
        device->ops.irq_state(device->instance, set->index);
out:
    close_fds(fds, fd_count);
    return ret;
}

int vu_device_irq_signal(struct vu_device *device, enum vfio_userd_irq_index index,
                         uint32_t subindex)
{
    if (device->declaring)
        return -ENOTCONN;
    if ((unsigned)index >= VFIO_USERD_IRQ_COUNT || subindex >= device->irqs[index].count)
        return -EINVAL;
    fire_vector(device, index, subindex);
    return 0;
}

void vu_device_release_client_interrupts(struct vu_device *device)
{
    for (unsigned index = 0; index < VFIO_USERD_IRQ_COUNT; index++) {
        close_irq_fds(device, &device->irqs[index], 0, device->irqs[index].count);
        vu_device_clear_interrupts(device, index);
    }
    device->client_fds_warned = false;
    /* The next client may keep the MSI-X table itself: ours gates nothing until it writes. */
    vu_msix_forget_client(&device->msix);
}
