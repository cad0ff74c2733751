/*
 * Worker threads: each runs its own sd-event loop and hosts a set of devices, whose
 * plugin callbacks and socket I/O then all happen on that thread. The control plane hands
 * work to a worker through a queue it wakes with an eventfd, and may wait for the result.
 */
#ifndef VFIO_USERD_WORKERS_H
#define VFIO_USERD_WORKERS_H

#include <stddef.h>
#include <systemd/sd-event.h>

struct workers;

typedef int (*worker_task_fn)(sd_event *event, void *argument);

/* Starts `count` workers (0: one per online CPU). Signals must already be blocked. */
int workers_start(size_t count, struct workers **workers);

/* Stops and joins every worker; their queues must be empty of devices by then. */
void workers_stop(struct workers *workers);

size_t workers_count(const struct workers *workers);

/* Runs `task` on worker `index` and returns its result, waiting for it. */
int workers_call(struct workers *workers, size_t index, worker_task_fn task, void *argument);

#endif /* VFIO_USERD_WORKERS_H */
