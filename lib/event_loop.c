/*
 * The device loop: an epoll of sd-event's descriptor and the client sockets. See
 * event_loop.h for why sd-event does not wait on the sockets itself.
 */
#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "event_loop.h"

/* Descriptors handled per wait. */
#define READY_MAX 64

/* sd-event passes in a row before the sockets get their turn: each pass dispatches one
 * source, and one that is always ready must not keep the clients waiting. */
#define EVENT_PASSES_PER_TURN 64

struct vu_loop {
    unsigned references;
    sd_event *event;
    int epoll_fd;
    /* sd-event may have work its descriptor does not show (a defer, a timer to arm, a
     * source left over from the last turn): it runs before the loop sleeps. */
    bool event_due;
    /* What the current wait returned, while its callbacks run: a socket removed meanwhile
     * is struck off, so that no callback reaches freed memory. */
    struct epoll_event *ready;
    int ready_count;
    void (*wait_hook)(void *userdata, bool waiting);
    void *wait_hook_userdata;
};

int vu_loop_new(struct vu_loop **result)
{
    struct vu_loop *loop = calloc(1, sizeof(*loop));
    struct epoll_event event_descriptor = {.events = EPOLLIN};
    int ret;

    if (loop == NULL)
        return -ENOMEM;
    loop->references = 1;
    loop->event_due = true;
    loop->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    if (loop->epoll_fd < 0) {
        ret = -errno;
        goto fail;
    }
    ret = sd_event_new(&loop->event);
    if (ret < 0)
        goto fail;
    /* sd-event's own descriptor is marked by the loop's address, which no socket has. */
    event_descriptor.data.ptr = loop;
    if (epoll_ctl(loop->epoll_fd, EPOLL_CTL_ADD, sd_event_get_fd(loop->event), &event_descriptor) <
        0) {
        ret = -errno;
        goto fail;
    }
    *result = loop;
    return 0;
fail:
    vu_loop_unref(loop);
    return ret;
}

struct vu_loop *vu_loop_ref(struct vu_loop *loop)
{
    loop->references++;
    return loop;
}

struct vu_loop *vu_loop_unref(struct vu_loop *loop)
{
    if (loop == NULL || --loop->references > 0)
        return NULL;
    sd_event_unref(loop->event);
    if (loop->epoll_fd >= 0)
        close(loop->epoll_fd);
    free(loop);
    return NULL;
}

sd_event *vu_loop_event(struct vu_loop *loop)
{
    return loop->event;
}

void vu_loop_set_wait_hook(struct vu_loop *loop, void (*hook)(void *userdata, bool waiting),
                           void *userdata)
{
    loop->wait_hook = hook;
    loop->wait_hook_userdata = userdata;
}

void vu_loop_changed(struct vu_loop *loop)
{
    if (loop != NULL)
        loop->event_due = true;
}

/*
 * Lets sd-event dispatch what it has, one source at a time, and leaves it prepared (ARMED):
 * its timers armed, no defer pending, so that the loop may sleep on its descriptor alone.
 * Between turns sd-event stays ARMED rather than going back through an empty pass, which
 * would cost a wait of its own (an epoll_wait) on every wake-up. 1 once sd_event_exit() was
 * handled.
 */
static int run_event(struct vu_loop *loop)
{
    sd_event *event = loop->event;

    for (int pass = 0; pass < EVENT_PASSES_PER_TURN; pass++) {
        int ret = 0;

        /* Prepared last turn: what became ready since (or nothing) is collected first. */
        if (sd_event_get_state(event) == SD_EVENT_ARMED)
            ret = sd_event_wait(event, 0);
        if (ret == 0) {
            ret = sd_event_prepare(event);
            if (ret == 0) {
                loop->event_due = false;
                return 0;
            }
        }
        if (ret > 0)
            ret = sd_event_dispatch(event);
        if (ret < 0)
            return ret;
        if (sd_event_get_state(event) == SD_EVENT_FINISHED)
            return 1;
    }
    loop->event_due = true;
    return 0;
}

int vu_loop_iterate(struct vu_loop *loop, uint64_t timeout_usec)
{
    struct epoll_event ready[READY_MAX];
    int count, timeout_msec, ret, exit_code;
    bool event_ready = false;

    if (loop->event_due) {
        ret = run_event(loop);
        if (ret != 0)
            return ret;
    }
    if (loop->event_due || timeout_usec == 0)
        timeout_msec = 0;
    else if (timeout_usec == UINT64_MAX || timeout_usec / 1000 >= INT32_MAX)
        timeout_msec = -1;
    else
        timeout_msec = (int)((timeout_usec + 999) / 1000);
    if (loop->wait_hook != NULL)
        loop->wait_hook(loop->wait_hook_userdata, true);
    count = epoll_wait(loop->epoll_fd, ready, READY_MAX, timeout_msec);
    if (loop->wait_hook != NULL)
        loop->wait_hook(loop->wait_hook_userdata, false);
    if (count < 0)
        return errno == EINTR ? 0 : -errno;
    for (int i = 0; i < count; i++)
        event_ready = event_ready || ready[i].data.ptr == loop;
    /* From here on a removed socket is struck off the list: sd-event's callbacks may remove
     * some too (a worker stopping a device). */
    loop->ready = ready;
    loop->ready_count = count;
    ret = 0;
    /* sd-event first: a worker's queued work (a device being stopped) goes before any of
     * its clients is served again. */
    if (event_ready)
        ret = run_event(loop);
    for (int i = 0; ret == 0 && i < count; i++) {
        struct vu_loop_socket *socket = ready[i].data.ptr;

        /* NULL: removed by an earlier callback of this turn. */
        if (socket != NULL && ready[i].data.ptr != loop)
            socket->callback(socket, ready[i].events);
    }
    /* An sd_event_exit() from a socket's callback (a device host told to stop while its
     * plugin waits for a file) shows on no descriptor either: sd-event runs before the
     * loop sleeps, and ends it. */
    if (ret == 0 && count > 0 && !loop->event_due &&
        sd_event_get_exit_code(loop->event, &exit_code) >= 0)
        loop->event_due = true;
    loop->ready = NULL;
    loop->ready_count = 0;
    return ret;
}

int vu_loop_run(struct vu_loop *loop)
{
    int ret, code = 0;

    do
        ret = vu_loop_iterate(loop, UINT64_MAX);
    while (ret == 0);
    if (ret < 0)
        return ret;
    sd_event_get_exit_code(loop->event, &code);
    return code;
}

int vu_loop_socket_add(struct vu_loop *loop, struct vu_loop_socket *socket, int fd, uint32_t events,
                       void (*callback)(struct vu_loop_socket *, uint32_t), void *userdata)
{
    struct epoll_event watch = {.events = events, .data.ptr = socket};

    if (epoll_ctl(loop->epoll_fd, EPOLL_CTL_ADD, fd, &watch) < 0)
        return -errno;
    *socket = (struct vu_loop_socket){
        .loop = loop, .fd = fd, .events = events, .callback = callback, .userdata = userdata};
    return 0;
}

int vu_loop_socket_set_events(struct vu_loop_socket *socket, uint32_t events)
{
    struct epoll_event watch = {.events = events, .data.ptr = socket};

    if (socket->loop == NULL)
        return -EINVAL;
    if (events == socket->events)
        return 0;
    if (epoll_ctl(socket->loop->epoll_fd, EPOLL_CTL_MOD, socket->fd, &watch) < 0)
        return -errno;
    socket->events = events;
    return 0;
}

void vu_loop_socket_remove(struct vu_loop_socket *socket)
{
    struct vu_loop *loop = socket->loop;

    if (loop == NULL)
        return;
    epoll_ctl(loop->epoll_fd, EPOLL_CTL_DEL, socket->fd, NULL);
    for (int i = 0; i < loop->ready_count; i++)
        if (loop->ready[i].data.ptr == socket)
            loop->ready[i].data.ptr = NULL;
    socket->loop = NULL;
}
