/*
 * The device loop (lib/event_loop.c): client sockets served beside sd-event. What sockets'
 * callbacks change in sd-event (a timer armed, a defer enabled) takes effect before the
 * loop sleeps; sd-event's work goes first in a turn; a socket removed during a turn is not
 * called; a busy sd-event source does not starve the sockets, nor they it.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "event_loop.h"
#include "log.h"
#include "test_runner.h"

struct fixture {
    struct vu_loop *loop;
    int pairs[2][2]; /* two socket pairs: [i][0] watched, [i][1] the peer */
    struct vu_loop_socket sockets[2];
    sd_event_source *source;
    char order[16]; /* who ran, in turn: 's' socket, 'e' sd-event */
    size_t ran;
    int calls[2];
};

static struct fixture fixture;

static void record(char who)
{
    if (fixture.ran < sizeof(fixture.order) - 1)
        fixture.order[fixture.ran++] = who;
}

static void drain(int fd)
{
    char buffer[64];

    while (recv(fd, buffer, sizeof(buffer), MSG_DONTWAIT) > 0)
        ;
}

static void setup(void)
{
    memset(&fixture, 0, sizeof(fixture));
    ck_assert_int_eq(vu_loop_new(&fixture.loop), 0);
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fixture.pairs[i]), 0);
}

static void teardown(void)
{
    for (int i = 0; i < 2; i++) {
        vu_loop_socket_remove(&fixture.sockets[i]);
        close(fixture.pairs[i][0]);
        close(fixture.pairs[i][1]);
    }
    sd_event_source_disable_unref(fixture.source);
    vu_loop_unref(fixture.loop);
}

static void send_byte(int pair)
{
    ck_assert_int_eq(write(fixture.pairs[pair][1], "x", 1), 1);
}

static int on_time_exit(sd_event_source *source, uint64_t usec, void *userdata)
{
    return sd_event_exit(sd_event_source_get_event(source), 7);
}

/* Arms a timer from a socket callback, as an endpoint arms its DMA deadline. */
static void arm_timer_on_request(struct vu_loop_socket *socket, uint32_t revents)
{
    sd_event *event = vu_loop_event(socket->loop);

    drain(socket->fd);
    ck_assert_int_ge(sd_event_add_time_relative(event, &fixture.source, CLOCK_MONOTONIC, 20000, 1,
                                                on_time_exit, NULL),
                     0);
    vu_loop_changed(socket->loop);
}

START_TEST(a_timer_armed_by_a_socket_fires)
{
    uint64_t began = vu_monotonic_usec(), took;

    ck_assert_int_eq(vu_loop_socket_add(fixture.loop, &fixture.sockets[0], fixture.pairs[0][0],
                                        EPOLLIN, arm_timer_on_request, NULL),
                     0);
    send_byte(0);
    /* Nothing else wakes the loop: only the pass before it sleeps arms the timerfd. */
    ck_assert_int_eq(vu_loop_run(fixture.loop), 7);
    took = vu_monotonic_usec() - began;
    ck_assert_uint_ge(took, 20000);
    ck_assert_uint_lt(took, 1000000);
}
END_TEST

static int on_defer(sd_event_source *source, void *userdata)
{
    record('e');
    return sd_event_exit(sd_event_source_get_event(source), 3);
}

static void enable_defer_on_request(struct vu_loop_socket *socket, uint32_t revents)
{
    drain(socket->fd);
    record('s');
    ck_assert_int_ge(sd_event_source_set_enabled(fixture.source, SD_EVENT_ONESHOT), 0);
    vu_loop_changed(socket->loop);
}

START_TEST(a_defer_enabled_by_a_socket_runs)
{
    ck_assert_int_ge(
        sd_event_add_defer(vu_loop_event(fixture.loop), &fixture.source, on_defer, NULL), 0);
    ck_assert_int_ge(sd_event_source_set_enabled(fixture.source, SD_EVENT_OFF), 0);
    ck_assert_int_eq(vu_loop_socket_add(fixture.loop, &fixture.sockets[0], fixture.pairs[0][0],
                                        EPOLLIN, enable_defer_on_request, NULL),
                     0);
    /* The loop settles and would sleep for good: the socket wakes it, the defer ends it. */
    ck_assert_int_eq(vu_loop_iterate(fixture.loop, 0), 0);
    send_byte(0);
    ck_assert_int_eq(vu_loop_run(fixture.loop), 3);
    ck_assert_str_eq(fixture.order, "se");
}
END_TEST

static int on_io(sd_event_source *source, int fd, uint32_t revents, void *userdata)
{
    drain(fd);
    record('e');
    return 0;
}

/* Ends the loop from a socket's callback, as a device host does when "stop" comes while a
 * plugin waits for a file it opens at run time. */
static void exit_on_request(struct vu_loop_socket *socket, uint32_t revents)
{
    drain(socket->fd);
    ck_assert_int_ge(sd_event_exit(vu_loop_event(socket->loop), 5), 0);
}

START_TEST(sd_event_exit_from_a_socket_ends_the_loop)
{
    uint64_t began;

    ck_assert_int_eq(vu_loop_socket_add(fixture.loop, &fixture.sockets[0], fixture.pairs[0][0],
                                        EPOLLIN, exit_on_request, NULL),
                     0);
    ck_assert_int_eq(vu_loop_iterate(fixture.loop, 0), 0);
    send_byte(0);
    ck_assert_int_eq(vu_loop_iterate(fixture.loop, 1000000), 0);
    /* Nothing else wakes the loop: it must not sleep before it ends. */
    began = vu_monotonic_usec();
    ck_assert_int_eq(vu_loop_iterate(fixture.loop, 500000), 1);
    ck_assert_uint_lt(vu_monotonic_usec() - began, 250000);
}
END_TEST

static void count_request(struct vu_loop_socket *socket, uint32_t revents)
{
    drain(socket->fd);
    record('s');
    fixture.calls[socket == &fixture.sockets[0] ? 0 : 1]++;
}

START_TEST(sd_event_goes_first_in_a_turn)
{
    ck_assert_int_ge(sd_event_add_io(vu_loop_event(fixture.loop), &fixture.source,
                                     fixture.pairs[1][0], EPOLLIN, on_io, NULL),
                     0);
    ck_assert_int_eq(vu_loop_socket_add(fixture.loop, &fixture.sockets[0], fixture.pairs[0][0],
                                        EPOLLIN, count_request, NULL),
                     0);
    ck_assert_int_eq(vu_loop_iterate(fixture.loop, 0), 0);
    send_byte(0);
    send_byte(1);
    ck_assert_int_eq(vu_loop_iterate(fixture.loop, 1000000), 0);
    ck_assert_str_eq(fixture.order, "es");
}
END_TEST

/* The first socket's callback removes the second, both being ready in the same turn. */
static void remove_the_other(struct vu_loop_socket *socket, uint32_t revents)
{
    struct vu_loop_socket *other =
        socket == &fixture.sockets[0] ? &fixture.sockets[1] : &fixture.sockets[0];

    drain(socket->fd);
    fixture.calls[socket == &fixture.sockets[0] ? 0 : 1]++;
    vu_loop_socket_remove(other);
    memset(other, 0xa5, sizeof(*other)); /* as freed memory may look */
    other->loop = NULL;
}

START_TEST(a_socket_removed_during_a_turn_is_not_called)
{
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(vu_loop_socket_add(fixture.loop, &fixture.sockets[i], fixture.pairs[i][0],
                                            EPOLLIN, remove_the_other, NULL),
                         0);
    ck_assert_int_eq(vu_loop_iterate(fixture.loop, 0), 0);
    send_byte(0);
    send_byte(1);
    ck_assert_int_eq(vu_loop_iterate(fixture.loop, 1000000), 0);
    ck_assert_int_eq(fixture.calls[0] + fixture.calls[1], 1);
    ck_assert_int_eq(vu_loop_iterate(fixture.loop, 0), 0);
    ck_assert_int_eq(fixture.calls[0] + fixture.calls[1], 1);
}
END_TEST

/* An sd-event source's callback removes a socket that is ready in the same turn, as a
 * worker stopping a device frees its client's connection. */
static int remove_socket_on_io(sd_event_source *source, int fd, uint32_t revents, void *userdata)
{
    drain(fd);
    record('e');
    vu_loop_socket_remove(&fixture.sockets[0]);
    memset(&fixture.sockets[0], 0xa5, sizeof(fixture.sockets[0]));
    fixture.sockets[0].loop = NULL;
    return 0;
}

START_TEST(a_socket_removed_by_sd_event_is_not_called)
{
    ck_assert_int_ge(sd_event_add_io(vu_loop_event(fixture.loop), &fixture.source,
                                     fixture.pairs[1][0], EPOLLIN, remove_socket_on_io, NULL),
                     0);
    ck_assert_int_eq(vu_loop_socket_add(fixture.loop, &fixture.sockets[0], fixture.pairs[0][0],
                                        EPOLLIN, count_request, NULL),
                     0);
    ck_assert_int_eq(vu_loop_iterate(fixture.loop, 0), 0);
    send_byte(0);
    send_byte(1);
    ck_assert_int_eq(vu_loop_iterate(fixture.loop, 1000000), 0);
    ck_assert_str_eq(fixture.order, "e");
    ck_assert_int_eq(fixture.calls[0], 0);
}
END_TEST

START_TEST(events_say_what_the_loop_waits_for)
{
    ck_assert_int_eq(vu_loop_socket_add(fixture.loop, &fixture.sockets[0], fixture.pairs[0][0],
                                        EPOLLIN, count_request, NULL),
                     0);
    ck_assert_int_eq(vu_loop_socket_set_events(&fixture.sockets[0], 0), 0);
    send_byte(0);
    ck_assert_int_eq(vu_loop_iterate(fixture.loop, 50000), 0);
    ck_assert_int_eq(fixture.calls[0], 0);
    ck_assert_int_eq(vu_loop_socket_set_events(&fixture.sockets[0], EPOLLIN), 0);
    ck_assert_int_eq(vu_loop_iterate(fixture.loop, 1000000), 0);
    ck_assert_int_eq(fixture.calls[0], 1);
}
END_TEST

static int on_busy_defer(sd_event_source *source, void *userdata)
{
    fixture.calls[1]++;
    return 0;
}

START_TEST(a_busy_sd_event_source_does_not_starve_sockets)
{
    /* Always ready: sd-event would dispatch it on every pass for ever. */
    ck_assert_int_ge(
        sd_event_add_defer(vu_loop_event(fixture.loop), &fixture.source, on_busy_defer, NULL), 0);
    ck_assert_int_ge(sd_event_source_set_enabled(fixture.source, SD_EVENT_ON), 0);
    ck_assert_int_eq(vu_loop_socket_add(fixture.loop, &fixture.sockets[0], fixture.pairs[0][0],
                                        EPOLLIN, count_request, NULL),
                     0);
    send_byte(0);
    ck_assert_int_eq(vu_loop_iterate(fixture.loop, 1000000), 0);
    ck_assert_int_eq(fixture.calls[0], 1);
    ck_assert_int_gt(fixture.calls[1], 0);
    /* And the busy source keeps running while the socket is quiet: no sleep. */
    ck_assert_int_eq(vu_loop_iterate(fixture.loop, 1000000), 0);
    ck_assert_int_gt(fixture.calls[1], 64);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("event_loop");
    TCase *test_case = tcase_create("loop");

    tcase_add_checked_fixture(test_case, setup, teardown);
    tcase_add_test(test_case, a_timer_armed_by_a_socket_fires);
    tcase_add_test(test_case, a_defer_enabled_by_a_socket_runs);
    tcase_add_test(test_case, sd_event_goes_first_in_a_turn);
    tcase_add_test(test_case, a_socket_removed_during_a_turn_is_not_called);
    tcase_add_test(test_case, a_socket_removed_by_sd_event_is_not_called);
    tcase_add_test(test_case, events_say_what_the_loop_waits_for);
    tcase_add_test(test_case, a_busy_sd_event_source_does_not_starve_sockets);
    tcase_add_test(test_case, sd_event_exit_from_a_socket_ends_the_loop);
    suite_add_tcase(suite, test_case);
    return test_run_suite(suite);
}
