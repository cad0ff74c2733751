/*
 * The control channel between the daemon and a device host (host/control.c). The daemon
 * runs as root and a device host runs a plugin a guest may have subverted, so every packet
 * the daemon reads from a host is hostile input: oversized, truncated, not JSON, not an
 * object, without a type, with descriptors it did not ask for.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "control.h"
#include "test_runner.h"

static int channel[2];

static void setup(void)
{
    ck_assert_int_eq(control_socketpair(channel), 0);
}

static void teardown(void)
{
    close(channel[0]);
    if (channel[1] >= 0)
        close(channel[1]);
}

/* Sends raw bytes as one packet, with `fd_count` copies of stdin's descriptor. */
static void send_raw(const void *bytes, size_t length, int fd_count)
{
    union {
        struct cmsghdr header;
        char space[CMSG_SPACE(4 * sizeof(int))];
    } control = {0};
    struct iovec vector = {.iov_base = (void *)bytes, .iov_len = length};
    struct msghdr header = {.msg_iov = &vector, .msg_iovlen = 1};

    if (fd_count > 0) {
        int fds[4];
        for (int i = 0; i < fd_count; i++)
            fds[i] = open("/dev/null", O_RDONLY | O_CLOEXEC);
        header.msg_control = control.space;
        header.msg_controllen = CMSG_SPACE((size_t)fd_count * sizeof(int));
        control.header.cmsg_level = SOL_SOCKET;
        control.header.cmsg_type = SCM_RIGHTS;
        control.header.cmsg_len = CMSG_LEN((size_t)fd_count * sizeof(int));
        memcpy(CMSG_DATA(&control.header), fds, (size_t)fd_count * sizeof(int));
        ck_assert_int_eq(sendmsg(channel[1], &header, 0), (ssize_t)length);
        for (int i = 0; i < fd_count; i++)
            close(fds[i]);
        return;
    }
    ck_assert_int_eq(sendmsg(channel[1], &header, 0), (ssize_t)length);
}

/* How many descriptors this process has open. */
static int open_descriptors(void)
{
    int count = 0;

    for (int fd = 0; fd < 1024; fd++)
        count += fcntl(fd, F_GETFD) >= 0;
    return count;
}

START_TEST(a_message_arrives_whole_with_its_descriptor)
{
    json_t *sent =
        json_pack("{s:s, s:I, s:s}", "type", "open", "seq", (json_int_t)7, "path", "/dev/null");
    int passed = open("/dev/null", O_RDONLY | O_CLOEXEC), received = -1;
    json_t *message = NULL;
    struct stat expected, got;

    ck_assert_int_eq(control_send_fd(channel[1], sent, passed), 0);
    ck_assert_int_eq(control_receive_fd(channel[0], &message, &received), 1);
    ck_assert_str_eq(control_type(message), "open");
    ck_assert_uint_eq(control_sequence(message), 7);
    ck_assert_int_ge(received, 0);
    ck_assert_int_eq(fstat(passed, &expected), 0);
    ck_assert_int_eq(fstat(received, &got), 0);
    ck_assert(expected.st_ino == got.st_ino && expected.st_dev == got.st_dev);
    ck_assert_int_eq(fcntl(received, F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
    close(received);
    close(passed);
    json_decref(message);
    json_decref(sent);
    /* Nothing more: the channel says so at once. */
    ck_assert_int_eq(control_receive(channel[0], &message), -EAGAIN);
}
END_TEST

START_TEST(hostile_packets_are_refused_and_leave_nothing_open)
{
    static const char *const bad[] = {
        "not json",
        "[1,2,3]",
        "{\"seq\":1}",
        "{\"type\":3}",
        "{\"type\":\"a\",\"type\":\"b\"}",
        "\"type\"",
        "{\"type\":\"ping\"",
    };
    int before = open_descriptors(), received;
    json_t *message;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        send_raw(bad[i], strlen(bad[i]), 1);
        ck_assert_int_eq(control_receive_fd(channel[0], &message, &received), -EBADMSG);
        ck_assert_ptr_null(message);
        ck_assert_int_eq(received, -1);
    }
    /* Descriptors nobody asked for: more than one is refused, and all of them closed. */
    send_raw("{\"type\":\"pong\"}", 15, 3);
    ck_assert_int_eq(control_receive_fd(channel[0], &message, &received), -EBADMSG);
    ck_assert_int_eq(received, -1);
    /* One with a message that reads without descriptors is closed by control_receive(). */
    send_raw("{\"type\":\"pong\"}", 15, 1);
    ck_assert_int_eq(control_receive(channel[0], &message), 1);
    json_decref(message);
    ck_assert_int_eq(open_descriptors(), before);
}
END_TEST

START_TEST(an_oversized_packet_is_refused_whole)
{
    size_t length = CONTROL_MESSAGE_MAX + 100;
    char *bytes = malloc(length);
    json_t *message, *big;
    int sndbuf = (int)length * 2, received;

    ck_assert_ptr_nonnull(bytes);
    ck_assert_int_eq(setsockopt(channel[1], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf)), 0);
    memset(bytes, ' ', length);
    memcpy(bytes, "{\"type\":\"pong\"}", 15);
    send_raw(bytes, length, 0);
    ck_assert_int_eq(control_receive_fd(channel[0], &message, &received), -EBADMSG);
    /* The next packet is read as itself: the large one did not leave a tail behind. */
    send_raw("{\"type\":\"pong\"}", 15, 0);
    ck_assert_int_eq(control_receive(channel[0], &message), 1);
    ck_assert_str_eq(control_type(message), "pong");
    json_decref(message);
    /* Nor does this side send one. */
    memset(bytes, 'a', length - 1);
    bytes[length - 1] = '\0';
    big = json_pack("{s:s, s:s}", "type", "error", "message", bytes);
    ck_assert_int_eq(control_send(channel[0], big), -EMSGSIZE);
    json_decref(big);
    free(bytes);
}
END_TEST

START_TEST(the_end_of_the_stream_is_zero)
{
    json_t *message = (json_t *)1;

    close(channel[1]);
    channel[1] = -1;
    ck_assert_int_eq(control_receive(channel[0], &message), 0);
    ck_assert_ptr_null(message);
}
END_TEST

START_TEST(statistics_round_trip_and_malformed_ones_are_refused)
{
    struct vu_device_statistics statistics = {.errors = 3,
                                              .bytes_received = 1 << 20,
                                              .bytes_sent = 42,
                                              .connections = 2},
                                back;
    json_t *object, *bad;

    statistics.messages[VU_COMMAND_MAX] = 9;
    object = control_statistics_to_json(&statistics);
    ck_assert_ptr_nonnull(object);
    ck_assert_int_eq(control_statistics_from_json(object, &back), 0);
    ck_assert_mem_eq(&statistics, &back, sizeof(statistics));
    bad = json_deep_copy(object);
    json_array_set_new(json_object_get(bad, "messages"), 0, json_integer(-1));
    ck_assert_int_eq(control_statistics_from_json(bad, &back), -EBADMSG);
    ck_assert_uint_eq(back.errors, 0);
    json_array_remove(json_object_get(bad, "messages"), 0);
    ck_assert_int_eq(control_statistics_from_json(bad, &back), -EBADMSG);
    ck_assert_int_eq(control_statistics_from_json(json_object_get(bad, "nothing"), &back),
                     -EBADMSG);
    json_decref(bad);
    json_decref(object);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("control");
    TCase *test_case = tcase_create("channel");

    tcase_add_checked_fixture(test_case, setup, teardown);
    tcase_add_test(test_case, a_message_arrives_whole_with_its_descriptor);
    tcase_add_test(test_case, hostile_packets_are_refused_and_leave_nothing_open);
    tcase_add_test(test_case, an_oversized_packet_is_refused_whole);
    tcase_add_test(test_case, the_end_of_the_stream_is_zero);
    tcase_add_test(test_case, statistics_round_trip_and_malformed_ones_are_refused);
    suite_add_tcase(suite, test_case);
    return test_run_suite(suite);
}
