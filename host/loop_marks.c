/*
 * The device host's marks in its liveness page (liveness.h): when its event loop waits and
 * when it wakes, without a system call and without changing the loop.
 *
 * The loop waits in epoll_wait(), whichever loop it is (sd-event's own, or one that holds
 * sd-event's descriptor beside others); this program defines epoll_wait() itself, so every
 * call binds here (the executable comes first in the dynamic linker's lookup order, for
 * libsystemd's calls too), and the calls of the loop's thread are marked around the C
 * library's. A wait of that thread, on any descriptor, means it is not stuck in a callback.
 * Waits on other threads (a plugin's own) pass straight through.
 *
 * Linked into vfio-userd-device-host only, never into the daemon. Should the loop come to
 * wait another way, nothing is marked, the daemon reads "unknown" and pings the host as it
 * used to, and test_isolation's idle test fails.
 */
#include <dlfcn.h>
#include <sys/epoll.h>
#include <time.h>

#include "liveness.h"
#include "loop_marks.h"

typedef int epoll_wait_function(int, struct epoll_event *, int, int);

static epoll_wait_function *next_epoll_wait;
/* Set on the loop's thread only: a thread-local costs no comparison with another thread's
 * identity on each wait. */
static __thread struct liveness_slot *marked_slot;

/* Resolved before main(): a plugin's thread may wait before the loop's marks start. */
__attribute__((constructor)) static void find_epoll_wait(void)
{
    next_epoll_wait = (epoll_wait_function *)dlsym(RTLD_NEXT, "epoll_wait");
}

void loop_marks_start(struct liveness_slot *slot)
{
    marked_slot = slot;
}

static uint64_t now_usec(void)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000000 + (uint64_t)now.tv_nsec / 1000;
}

__attribute__((visibility("default"))) int epoll_wait(int epoll_fd, struct epoll_event *events,
                                                      int count, int timeout_ms)
{
    int ret;

    if (marked_slot == NULL)
        return next_epoll_wait(epoll_fd, events, count, timeout_ms);
    liveness_mark_waiting(marked_slot);
    ret = next_epoll_wait(epoll_fd, events, count, timeout_ms);
    liveness_mark_awake(marked_slot, now_usec());
    return ret;
}
