/*
 * Liveness of a device host without waking it: one page of memory that the host and the
 * daemon share (a sealed memfd per host process), where the host's event loop marks, with two
 * stores and no system call, when it goes to wait for events and when it wakes.
 *
 * A host can hang only while its loop is out of its wait, running a callback (a plugin
 * stuck in one, say). So the daemon reads the page instead of pinging: a host that waits is
 * healthy however long it has been idle, and one that has been awake for health_timeout is
 * stuck. An idle host costs neither side anything; the daemon reads every page on one
 * timer. The host writes the page (host/main.c, around its loop's waits); the daemon only reads it,
 * and takes what it reads as a claim, not a fact: a plugin can write there too.
 */
#ifndef VFIO_USERD_LIVENESS_H
#define VFIO_USERD_LIVENESS_H

#include <stdatomic.h>
#include <stdint.h>

struct liveness_slot {
    /* Even while the loop waits, odd while it is awake; 0 until its first wait, which says
     * nothing about it (the loop has not run, or its waits are not marked). */
    _Atomic uint64_t sequence;
    /* CLOCK_MONOTONIC, in microseconds, when the loop last woke: stored before the odd
     * sequence number that goes with it. */
    _Atomic uint64_t woke_usec;
};

/* What the daemon reads from a slot. */
enum liveness_state {
    LIVENESS_UNKNOWN, /* never marked: ask the host instead (a ping) */
    LIVENESS_WAITING, /* in its wait: it cannot be stuck */
    LIVENESS_AWAKE,   /* out of its wait since `awake_since` */
};

/*
 * A new slot in a memfd of its own, mapped at `*slot`, its descriptor at `*fd` (close-on-exec;
 * the caller passes it to the host, then closes it). The memfd is sealed against shrinking, so
 * that a host cannot make the daemon's mapping fault. 0 or a negative errno.
 */
int liveness_slot_create(struct liveness_slot **slot, int *fd);

/* The host's side: maps the slot behind `fd` (which it may close afterwards). */
int liveness_slot_map(int fd, struct liveness_slot **slot);

/* Unmaps a slot from either side; NULL is ignored. */
void liveness_slot_unmap(struct liveness_slot *slot);

/* The loop is about to wait, and has woken (at `now_usec`): the host's two marks. */
void liveness_mark_waiting(struct liveness_slot *slot);
void liveness_mark_awake(struct liveness_slot *slot, uint64_t now_usec);

/* Reads the slot at `now_usec`. For LIVENESS_AWAKE, `*awake_since` is when the loop woke,
 * never later than now (a time from the future is taken as now). */
enum liveness_state liveness_read(const struct liveness_slot *slot, uint64_t now_usec,
                                  uint64_t *awake_since);

#endif /* VFIO_USERD_LIVENESS_H */
