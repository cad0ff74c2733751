/*
 * Worker threads: each runs its own device loop (event_loop.h) and hosts a set of devices, whose
 * plugin callbacks and socket I/O then all happen on that thread. The control plane hands
 * work to a worker through a queue it wakes with an eventfd, and waits for the result, but
 * never without a deadline: a plugin that hangs in a callback holds its worker, and the
 * control plane must go on serving every other device, the admin socket and signals.
 *
 * A worker is "stuck" when it has not come back to its event loop for WORKERS_STUCK_USEC:
 * either a call to it timed out, or a heartbeat (workers_heartbeat, from the main loop's
 * timer) stayed unanswered that long. Calls to a stuck worker fail at once (one that must
 * run waits in its queue); each worker records which device, plugin and callback it is in
 * (vu_callback_tracker), so that the daemon can say what holds it. A worker that comes
 * back is healthy again.
 */
#ifndef VFIO_USERD_WORKERS_H
#define VFIO_USERD_WORKERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "device.h"
#include "event_loop.h"

/* How long the control plane waits for a worker's answer (vfio-userd(8), STUCK DEVICES). */
#define WORKERS_CALL_TIMEOUT_USEC 1000000
/* How long a worker may stay away from its event loop before it counts as stuck. */
#define WORKERS_STUCK_USEC WORKERS_CALL_TIMEOUT_USEC
/* A stuck worker is logged when found, then at most this often while it stays stuck. */
#define WORKERS_STUCK_LOG_INTERVAL_USEC (30 * 1000000ull)

struct workers;

typedef int (*worker_task_fn)(struct vu_loop *loop, void *argument);

/* What holds a stuck worker. */
struct worker_stuck {
    size_t worker;
    uint64_t seconds;               /* since the worker last answered, or entered the callback */
    struct vu_callback_state state; /* state.callback NULL: not in plugin code */
};

/* Starts `count` workers (0: one per online CPU). Signals must already be blocked. */
int workers_start(size_t count, struct workers **workers);

/*
 * Stops and joins every worker; their queues must be empty of devices by then, except on
 * stuck workers. Waits at most WORKERS_CALL_TIMEOUT_USEC in all for the workers to end. A
 * stuck worker cannot be joined: it is left running, with what it uses (the process must
 * then exit without unloading plugins). Returns how many were left.
 */
size_t workers_stop(struct workers *workers);

size_t workers_count(const struct workers *workers);

/* Releases what a task's argument holds once its caller no longer waits for it. */
typedef void (*worker_abandon_fn)(void *argument);

struct worker_call {
    worker_task_fn task;
    /* Releases what the argument (or the result in it) holds when the caller does not get
     * it back; NULL: nothing to release. */
    worker_abandon_fn abandon;
    /* How long to wait; 0 or more than WORKERS_CALL_TIMEOUT_USEC: that. A shorter wait that
     * runs out does not count the worker as stuck by itself. */
    uint64_t timeout_usec;
    /* Never withdrawn: a task the caller gave up on stays queued, even on a stuck worker,
     * and runs when the worker answers again (stopping a device must happen). */
    bool must_run;
};

/*
 * Runs `call->task` on worker `index` with a copy of the `size` bytes at `argument`, and
 * copies them back once it is done; returns its result. Waits at most the call's timeout,
 * and not at all for a worker already stuck: -ETIMEDOUT then, `argument` unchanged.
 *
 * On -ETIMEDOUT the caller no longer owns what `argument` holds: `call->abandon` releases
 * it exactly once, on the worker's thread after a task that ran late (so it sees the
 * task's results), or at once on the calling thread, on `argument` itself, for a task
 * that never ran (the worker was known stuck, or the task was withdrawn). A task that had
 * not started is withdrawn unless `call->must_run`. Only the main thread calls this.
 */
int workers_call_sized(struct workers *workers, size_t index, const struct worker_call *call,
                       void *argument, size_t size);
#define workers_call(workers, index, function, argument)                                           \
    workers_call_sized(workers, index, &(struct worker_call){.task = (function)}, argument,        \
                       sizeof(*(argument)))

/*
 * workers_call_sized() in two halves, so that the control plane can hand a worker several
 * tasks before it waits for the first (device_adds pipelined on the admin socket): the
 * worker runs them back to back and wakes the waiting thread once. _submit queues a copy of
 * the argument and returns at once; it fails as workers_call_sized would before waiting
 * (-ETIMEDOUT on a stuck worker, with the same release of the argument). _wait waits for
 * that task, at most its timeout counted from the wait's start (so a task queued behind
 * others gets as long as it would have had on its own after them), and not at all once
 * the worker is known stuck (an earlier wait ran out); it returns as workers_call_sized
 * does, copies the argument back into `argument`, and frees the task in every case. Every
 * submitted task must be waited for, in any order, by the main thread.
 */
struct worker_task;
int workers_submit_sized(struct workers *workers, size_t index, const struct worker_call *call,
                         void *argument, size_t size, struct worker_task **task);
int workers_wait(struct worker_task *task, void *argument);

/* Whether worker `index` is stuck; if so, and `stuck` is not NULL, what holds it. */
bool workers_stuck(struct workers *workers, size_t index, struct worker_stuck *stuck);

/*
 * Wakes every worker that has no heartbeat pending and looks at those that do: logs a
 * worker found stuck (with its device, plugin and callback; again at most every
 * WORKERS_STUCK_LOG_INTERVAL_USEC) and one that answers again. Returns true when a worker
 * came back since the last call. Never waits.
 */
bool workers_heartbeat(struct workers *workers);

/*
 * Sends every worker a heartbeat and waits until all have answered or `timeout_usec`
 * passed, so that later calls fail at once on the stuck ones instead of waiting for each
 * in turn. Returns how many are stuck.
 */
size_t workers_probe(struct workers *workers, uint64_t timeout_usec);

#endif /* VFIO_USERD_WORKERS_H */
