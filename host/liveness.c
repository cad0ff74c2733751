/*
 * The liveness page a device host shares with the daemon: creating, mapping, marking and
 * reading it; see liveness.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "liveness.h"

/* A page: what a mapping costs anyway. */
#define LIVENESS_SLOT_SIZE 4096
_Static_assert(sizeof(struct liveness_slot) <= LIVENESS_SLOT_SIZE, "a slot fits its page");

int liveness_slot_create(struct liveness_slot **slot, int *fd)
{
    void *mapped;
    int memfd, ret;

    *slot = NULL;
    *fd = -1;
    memfd = memfd_create("vfio-userd-liveness", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (memfd < 0)
        return -errno;
    /* Sealed before anyone else holds it: a host that shrank the file would make the
     * daemon's next read of the page a SIGBUS. */
    if (ftruncate(memfd, LIVENESS_SLOT_SIZE) < 0 ||
        fcntl(memfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0) {
        ret = -errno;
        goto fail;
    }
    mapped = mmap(NULL, LIVENESS_SLOT_SIZE, PROT_READ, MAP_SHARED, memfd, 0);
    if (mapped == MAP_FAILED) {
        ret = -errno;
        goto fail;
    }
    *slot = mapped;
    *fd = memfd;
    return 0;
fail:
    close(memfd);
    return ret;
}

int liveness_slot_map(int fd, struct liveness_slot **slot)
{
    void *mapped = mmap(NULL, LIVENESS_SLOT_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);

    *slot = NULL;
    if (mapped == MAP_FAILED)
        return -errno;
    *slot = mapped;
    return 0;
}

void liveness_slot_unmap(struct liveness_slot *slot)
{
    if (slot != NULL)
        munmap(slot, LIVENESS_SLOT_SIZE);
}

/* Only the host's loop thread writes its slot, so plain loads of its own values suffice;
 * the release stores order the wake time before the sequence number the daemon reads. */
void liveness_mark_waiting(struct liveness_slot *slot)
{
    uint64_t sequence = atomic_load_explicit(&slot->sequence, memory_order_relaxed);

    atomic_store_explicit(&slot->sequence, (sequence | 1) + 1, memory_order_release);
}

void liveness_mark_awake(struct liveness_slot *slot, uint64_t now_usec)
{
    uint64_t sequence = atomic_load_explicit(&slot->sequence, memory_order_relaxed);

    atomic_store_explicit(&slot->woke_usec, now_usec, memory_order_relaxed);
    atomic_store_explicit(&slot->sequence, sequence | 1, memory_order_release);
}

enum liveness_state liveness_read(const struct liveness_slot *slot, uint64_t now_usec,
                                  uint64_t *awake_since)
{
    uint64_t sequence = atomic_load_explicit(&slot->sequence, memory_order_acquire);
    uint64_t woke;

    if (sequence == 0)
        return LIVENESS_UNKNOWN;
    if ((sequence & 1) == 0)
        return LIVENESS_WAITING;
    /* Read after the sequence: this wake's time, or a later wake's (never an earlier one),
     * which at worst gives a host that woke again a little longer. */
    woke = atomic_load_explicit(&slot->woke_usec, memory_order_relaxed);
    *awake_since = woke < now_usec ? woke : now_usec;
    return LIVENESS_AWAKE;
}
