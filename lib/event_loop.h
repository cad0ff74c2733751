/*
 * The loop that serves devices: sd-event for every source, with the clients' sockets waited
 * on beside it rather than inside it.
 *
 * A pass of sd-event costs about 1,500 instructions whatever it dispatches (three clock
 * reads, a look at every timer clock, prepare and dispatch bookkeeping): more than the rest
 * of a region access, and the most of what separates a request from the socket floor. A
 * request on a client socket needs none of it. So the loop blocks in an epoll of its own
 * holding sd-event's descriptor (sd_event_get_fd) and the client sockets: a ready client
 * socket is served directly, and sd-event runs when its descriptor is ready or when its
 * sources were changed outside its own dispatch (a timer armed, a defer enabled, which its
 * descriptor cannot show). Code that changes sd-event sources from a socket's callback says
 * so with vu_loop_changed().
 *
 * A loop belongs to one thread; none of this is thread-safe.
 */
#ifndef VU_EVENT_LOOP_H
#define VU_EVENT_LOOP_H

#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-event.h>

struct vu_loop;

/* A descriptor served by the loop directly. The owner embeds it and keeps it alive while
 * it is added. */
struct vu_loop_socket {
    struct vu_loop *loop; /* NULL while not added */
    int fd;
    uint32_t events; /* EPOLLIN, EPOLLOUT: what the loop waits for */
    /* Called on the loop's thread with what epoll reported; it may remove any socket,
     * itself included. */
    void (*callback)(struct vu_loop_socket *socket, uint32_t revents);
    void *userdata;
};

/* A loop with a new sd-event loop inside it. */
int vu_loop_new(struct vu_loop **result);
struct vu_loop *vu_loop_ref(struct vu_loop *loop);
struct vu_loop *vu_loop_unref(struct vu_loop *loop); /* NULL */

/* For sd-event sources; valid while the loop is. */
sd_event *vu_loop_event(struct vu_loop *loop);

/* Runs until sd_event_exit(); returns its code, or a negative errno. */
int vu_loop_run(struct vu_loop *loop);

/*
 * One turn: sd-event's pending work, then one wait of up to `timeout_usec` (UINT64_MAX:
 * forever) and what it found. Returns 1 once sd_event_exit() was handled, 0 otherwise, or
 * a negative errno. For callers that interleave the loop with their own work (tests).
 */
int vu_loop_iterate(struct vu_loop *loop, uint64_t timeout_usec);

/*
 * `hook` is called on the loop's thread right before each wait for events (`waiting`
 * true) and right after it (false): a loop between the two cannot be stuck in a callback,
 * which a watchdog on another thread or process can tell from them. NULL removes it.
 */
void vu_loop_set_wait_hook(struct vu_loop *loop, void (*hook)(void *userdata, bool waiting),
                           void *userdata);

/* Sources of vu_loop_event() changed outside an sd-event callback: sd-event runs a pass
 * before the loop sleeps again. NULL is ignored. (sd_event_exit() needs no call.) */
void vu_loop_changed(struct vu_loop *loop);

int vu_loop_socket_add(struct vu_loop *loop, struct vu_loop_socket *socket, int fd, uint32_t events,
                       void (*callback)(struct vu_loop_socket *, uint32_t), void *userdata);
/* Changes what the loop waits for; no system call when `events` is what it waits for. */
int vu_loop_socket_set_events(struct vu_loop_socket *socket, uint32_t events);
/* Before its descriptor is closed; a socket not added is ignored. */
void vu_loop_socket_remove(struct vu_loop_socket *socket);

#endif
