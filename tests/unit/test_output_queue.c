/*
 * Output queue: replies leave in order and each message's descriptors arrive with that
 * message, however many messages with descriptors are queued at once.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "output_queue.h"
#include "test_runner.h"

static int sockets[2];
static struct vu_output_queue queue;

static void setup(void)
{
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sockets), 0);
    ck_assert_int_eq(vu_output_queue_init(&queue, 4096), 0);
}

static void teardown(void)
{
    vu_output_queue_destroy(&queue);
    close(sockets[0]);
    close(sockets[1]);
}

/* Queues an 8-byte message "MSG n..." with `fd_count` fresh eventfds. */
static void queue_message(int number, int fd_count)
{
    char text[8] = {'M', 'S', 'G', (char)('0' + number), '.', '.', '.', '.'};
    int fds[VU_OUTPUT_MAX_FDS_PER_MESSAGE];
    void *out = vu_output_queue_reserve(&queue, sizeof(text));

    ck_assert_ptr_nonnull(out);
    for (int i = 0; i < fd_count; i++)
        fds[i] = eventfd((unsigned)number, EFD_CLOEXEC);
    if (fd_count > 0)
        ck_assert_int_eq(vu_output_queue_attach_fds(&queue, fds, (uint32_t)fd_count), 0);
    memcpy(out, text, sizeof(text));
    vu_output_queue_commit(&queue, sizeof(text));
}

/* Receives exactly one 8-byte message; returns how many descriptors came with it and
 * checks each is an eventfd holding the message's number. */
static int receive_message(int number)
{
    union {
        struct cmsghdr header;
        char space[CMSG_SPACE(sizeof(int) * VU_OUTPUT_MAX_FDS_PER_MESSAGE)];
    } control;
    char text[8];
    struct iovec iov = {.iov_base = text, .iov_len = sizeof(text)};
    struct msghdr message = {.msg_iov = &iov,
                             .msg_iovlen = 1,
                             .msg_control = control.space,
                             .msg_controllen = sizeof(control.space)};
    int count = 0;

    ck_assert_int_eq(recvmsg(sockets[1], &message, MSG_CMSG_CLOEXEC), sizeof(text));
    ck_assert_int_eq(text[3], '0' + number);
    for (struct cmsghdr *cmsg = CMSG_FIRSTHDR(&message); cmsg != NULL;
         cmsg = CMSG_NXTHDR(&message, cmsg)) {
        int fds[VU_OUTPUT_MAX_FDS_PER_MESSAGE];
        int n = (int)((cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        memcpy(fds, CMSG_DATA(cmsg), (size_t)n * sizeof(int));
        for (int i = 0; i < n; i++) {
            uint64_t value = 0;
            ck_assert_int_eq(read(fds[i], &value, sizeof(value)), sizeof(value));
            ck_assert_uint_eq(value, (uint64_t)number);
            close(fds[i]);
        }
        count += n;
    }
    return count;
}

START_TEST(descriptors_stay_with_their_messages)
{
    /* Plain, with 1, with 2, plain, with 1, with 1: all queued before one flush. */
    const int fd_counts[] = {0, 1, 2, 0, 1, 1};

    for (int i = 0; i < 6; i++)
        queue_message(i + 1, fd_counts[i]);
    ck_assert_int_eq(vu_output_queue_flush(&queue, sockets[0]), 0);
    ck_assert_uint_eq(vu_output_queue_pending(&queue), 0);
    ck_assert_uint_eq(queue.attachment_count, 0);
    /* A message with descriptors is read on its own: the kernel does not merge across
     * them, so each recvmsg sees one message or a run of plain ones. */
    for (int i = 0; i < 6; i++)
        ck_assert_int_eq(receive_message(i + 1), fd_counts[i]);
}
END_TEST

START_TEST(full_queue_refuses_more_attachments)
{
    int fd;

    for (int i = 0; i < VU_OUTPUT_MAX_ATTACHMENTS; i++)
        queue_message(1, 1);
    fd = eventfd(0, EFD_CLOEXEC);
    /* Refused, and the descriptor is closed, not leaked. */
    ck_assert_int_eq(vu_output_queue_attach_fds(&queue, &fd, 1), -ENOBUFS);
    ck_assert_int_eq(fcntl(fd, F_GETFD), -1);
    ck_assert_int_eq(vu_output_queue_flush(&queue, sockets[0]), 0);
    for (int i = 0; i < VU_OUTPUT_MAX_ATTACHMENTS; i++)
        ck_assert_int_eq(receive_message(1), 1);
}
END_TEST

START_TEST(reservation_beyond_capacity_fails)
{
    ck_assert_ptr_null(vu_output_queue_reserve(&queue, 4097));
    ck_assert_ptr_nonnull(vu_output_queue_reserve(&queue, 4096));
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("output_queue");
    TCase *test_case = tcase_create("queue");

    tcase_add_checked_fixture(test_case, setup, teardown);
    tcase_add_test(test_case, descriptors_stay_with_their_messages);
    tcase_add_test(test_case, full_queue_refuses_more_attachments);
    tcase_add_test(test_case, reservation_beyond_capacity_fails);
    suite_add_tcase(suite, test_case);
    return test_run_suite(suite);
}
