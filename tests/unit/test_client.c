/*
 * Unit tests of the vfio-user client (lib/client.c) against scripted fake servers: each
 * test starts a thread that accepts one connection on a socket in a temporary directory
 * and plays one exchange, byte by byte as a server (honest or not) would. The server
 * thread records what it saw; the test asserts on it after joining, and checks that the
 * process has as many descriptors open at the end as at the start.
 */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "client.h"
#include "test_runner.h"

#define TEST_TIMEOUT_MS    3000
#define SERVER_PAYLOAD_MAX 8192
#define SERVER_FDS_MAX     64

struct fake_server;
typedef void (*fake_script)(struct fake_server *server, int fd);

struct fake_server {
    char directory[64];
    char path[96];
    int listen_fd;
    pthread_t thread;
    fake_script script;
    char failure[256];
    /* What the scripts observed, for the test to assert on. */
    struct vu_capabilities proposal;
    size_t version_payload_length;
    uint32_t seen[8];
    size_t seen_count;
};

struct fake_message {
    struct vu_header header;
    uint8_t payload[SERVER_PAYLOAD_MAX];
    size_t length;
    int fds[SERVER_FDS_MAX];
    size_t fd_count;
};

static void server_fail(struct fake_server *server, int line, const char *condition)
{
    if (server->failure[0] == '\0')
        snprintf(server->failure, sizeof(server->failure), "server line %d: %s", line, condition);
}

#define SERVER_CHECK(server, condition)                                                            \
    do {                                                                                           \
        if (!(condition)) {                                                                        \
            server_fail(server, __LINE__, #condition);                                             \
            return;                                                                                \
        }                                                                                          \
    } while (0)

static void server_see(struct fake_server *server, uint32_t value)
{
    if (server->seen_count < sizeof(server->seen) / sizeof(server->seen[0]))
        server->seen[server->seen_count++] = value;
}

static int server_read(int fd, void *data, size_t length, struct fake_message *message)
{
    size_t done = 0;

    while (done < length) {
        char control[CMSG_SPACE(sizeof(int) * SERVER_FDS_MAX)];
        struct iovec iov = {.iov_base = (uint8_t *)data + done, .iov_len = length - done};
        struct msghdr header = {
            .msg_iov = &iov,
            .msg_iovlen = 1,
            .msg_control = control,
            .msg_controllen = sizeof(control),
        };
        ssize_t n = recvmsg(fd, &header, MSG_CMSG_CLOEXEC);

        if (n <= 0)
            return -1;
        for (struct cmsghdr *cmsg = CMSG_FIRSTHDR(&header); cmsg != NULL;
             cmsg = CMSG_NXTHDR(&header, cmsg)) {
            size_t count = (cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int);

            for (size_t i = 0; i < count; i++) {
                int received;

                memcpy(&received, CMSG_DATA(cmsg) + i * sizeof(int), sizeof(int));
                if (message->fd_count < SERVER_FDS_MAX)
                    message->fds[message->fd_count++] = received;
                else
                    close(received);
            }
        }
        done += (size_t)n;
    }
    return 0;
}

static int server_receive(int fd, struct fake_message *message)
{
    message->fd_count = 0;
    if (server_read(fd, &message->header, sizeof(message->header), message) < 0)
        return -1;
    if (message->header.message_size < VU_HEADER_SIZE ||
        message->header.message_size - VU_HEADER_SIZE > SERVER_PAYLOAD_MAX)
        return -1;
    message->length = message->header.message_size - VU_HEADER_SIZE;
    return server_read(fd, message->payload, message->length, message);
}

static void server_close_fds(struct fake_message *message)
{
    for (size_t i = 0; i < message->fd_count; i++)
        close(message->fds[i]);
    message->fd_count = 0;
}

/* Sends a header claiming `message_size` and `length` bytes of payload. */
static void server_send_raw(int fd, uint16_t message_id, uint16_t command, uint32_t message_size,
                            uint32_t flags, uint32_t error, const void *payload, size_t length,
                            const int *fds, size_t fd_count)
{
    char control[CMSG_SPACE(sizeof(int) * SERVER_FDS_MAX)];
    uint8_t header[VU_HEADER_SIZE];
    struct iovec iov[2] = {
        {.iov_base = header, .iov_len = sizeof(header)},
        {.iov_base = (void *)payload, .iov_len = length},
    };
    struct msghdr message = {.msg_iov = iov, .msg_iovlen = 2};

    vu_wire_encode_header(header, message_id, command, message_size, flags, error);
    if (fd_count > 0) {
        struct cmsghdr *cmsg;

        memset(control, 0, sizeof(control));
        message.msg_control = control;
        message.msg_controllen = CMSG_SPACE(sizeof(int) * fd_count);
        cmsg = CMSG_FIRSTHDR(&message);
        cmsg->cmsg_level = SOL_SOCKET;
        cmsg->cmsg_type = SCM_RIGHTS;
        cmsg->cmsg_len = CMSG_LEN(sizeof(int) * fd_count);
        memcpy(CMSG_DATA(cmsg), fds, sizeof(int) * fd_count);
    }
    (void)!sendmsg(fd, &message, MSG_NOSIGNAL);
}

static void server_send(int fd, uint16_t message_id, uint16_t command, uint32_t flags,
                        uint32_t error, const void *payload, size_t length, const int *fds,
                        size_t fd_count)
{
    server_send_raw(fd, message_id, command, (uint32_t)(VU_HEADER_SIZE + length), flags, error,
                    payload, length, fds, fd_count);
}

static void server_reply(int fd, const struct fake_message *request, const void *payload,
                         size_t length, const int *fds, size_t fd_count)
{
    server_send(fd, request->header.message_id, request->header.command, VU_FLAGS_TYPE_REPLY, 0,
                payload, length, fds, fd_count);
}

static void server_error(int fd, const struct fake_message *request, uint32_t error)
{
    server_send(fd, request->header.message_id, request->header.command,
                VU_FLAGS_TYPE_REPLY | VU_FLAGS_ERROR, error, NULL, 0, NULL, 0);
}

/* Receives the VERSION proposal, records it, and answers 0.minor with `json`. */
static int server_version(struct fake_server *server, int fd, uint16_t minor, const char *json,
                          const int *fds, size_t fd_count)
{
    struct fake_message request;
    uint8_t reply[1024];
    struct vu_version version = {.major = 0, .minor = minor};
    size_t json_length = json != NULL ? strlen(json) + 1 : 0;

    if (server_receive(fd, &request) < 0 || request.header.command != VU_COMMAND_VERSION ||
        request.length < sizeof(version)) {
        server_fail(server, __LINE__, "VERSION request");
        return -1;
    }
    server_close_fds(&request);
    server->version_payload_length = request.length;
    if (vu_wire_parse_capabilities((const char *)request.payload + 4, request.length - 4,
                                   &server->proposal) < 0) {
        server_fail(server, __LINE__, "proposal JSON");
        return -1;
    }
    memcpy(reply, &version, sizeof(version));
    if (json_length > 0)
        memcpy(reply + sizeof(version), json, json_length);
    server_reply(fd, &request, reply, sizeof(version) + json_length, fds, fd_count);
    return 0;
}

static const char *const qemu_like_reply =
    "{\"capabilities\":{\"max_msg_fds\":16,\"max_data_xfer_size\":1048576,"
    "\"write_multiple\":true}}";

static void *server_thread(void *argument)
{
    struct fake_server *server = argument;
    int fd = accept4(server->listen_fd, NULL, NULL, SOCK_CLOEXEC);

    if (fd < 0) {
        server_fail(server, __LINE__, "accept");
        return NULL;
    }
    server->script(server, fd);
    close(fd);
    return NULL;
}

static void server_start(struct fake_server *server, fake_script script)
{
    struct sockaddr_un address = {.sun_family = AF_UNIX};

    memset(server, 0, sizeof(*server));
    server->script = script;
    snprintf(server->directory, sizeof(server->directory), "/tmp/vu-client-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(server->directory));
    snprintf(server->path, sizeof(server->path), "%s/s.sock", server->directory);
    snprintf(address.sun_path, sizeof(address.sun_path), "%s", server->path);
    server->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(server->listen_fd, 0);
    ck_assert_int_eq(bind(server->listen_fd, (struct sockaddr *)&address, sizeof(address)), 0);
    ck_assert_int_eq(listen(server->listen_fd, 1), 0);
    ck_assert_int_eq(pthread_create(&server->thread, NULL, server_thread, server), 0);
}

/* Waits for the script to end and reports what it found wrong. */
static void server_finish(struct fake_server *server)
{
    pthread_join(server->thread, NULL);
    close(server->listen_fd);
    unlink(server->path);
    rmdir(server->directory);
    ck_assert_msg(server->failure[0] == '\0', "%s", server->failure);
}

static int count_open_fds(void)
{
    DIR *directory = opendir("/proc/self/fd");
    int count = 0;

    ck_assert_ptr_nonnull(directory);
    while (readdir(directory) != NULL)
        count++;
    closedir(directory);
    return count;
}

static struct vu_client *connect_client(struct fake_server *server, bool twin_socket)
{
    struct vu_client_options options;
    struct vu_client *client = NULL;

    vu_client_options_default(&options);
    options.proposal.twin_socket = twin_socket;
    options.timeout_ms = TEST_TIMEOUT_MS;
    ck_assert_int_eq(vu_client_connect(server->path, &options, &client), 0);
    return client;
}

/* VERSION: the proposal is QEMU's, the reply's lower minor and limits are taken. */
static void script_version(struct fake_server *server, int fd)
{
    server_version(server, fd, 0,
                   "{\"capabilities\":{\"max_msg_fds\":8,\"max_data_xfer_size\":65536,"
                   "\"pgsizes\":4096,\"write_multiple\":false,\"unknown\":{\"x\":1}}}",
                   NULL, 0);
}

START_TEST(test_version_negotiation)
{
    struct fake_server server;
    struct vu_client *client;
    const struct vu_capabilities *session;
    uint8_t data[16];
    struct vu_write_multi_entry write = {.count = 4};
    int fds_before = count_open_fds();

    server_start(&server, script_version);
    client = connect_client(&server, false);
    server_finish(&server);

    ck_assert_uint_eq(server.proposal.max_msg_fds, 16);
    ck_assert_uint_eq(server.proposal.max_data_xfer_size, 1u << 20);
    ck_assert_uint_eq(server.proposal.max_dma_maps, 65535);
    ck_assert_uint_eq(server.proposal.pgsizes, 4096);
    ck_assert(server.proposal.write_multiple);
    ck_assert(!server.proposal.twin_socket);
    session = vu_client_session(client);
    ck_assert_uint_eq(session->max_msg_fds, 8);
    ck_assert_uint_eq(session->max_data_xfer_size, 65536);
    ck_assert(!session->write_multiple);
    ck_assert_uint_eq(vu_client_server_major(client), 0);
    ck_assert_uint_eq(vu_client_server_minor(client), 0);
    ck_assert(!vu_client_twin_socket_active(client));
    /* The server's limits now bound what the client sends, without a message going out. */
    ck_assert_int_eq(vu_client_region_read(client, 0, 0, data, 65537), -EINVAL);
    ck_assert_int_eq(vu_client_region_write_multi(client, &write, 1), -ENOTSUP);
    vu_client_close(client);
    ck_assert_int_eq(count_open_fds(), fds_before);
}
END_TEST

static void script_version_no_json(struct fake_server *server, int fd)
{
    server_version(server, fd, 1, NULL, NULL, 0);
}

START_TEST(test_version_without_json)
{
    struct fake_server server;
    struct vu_client_options options;
    struct vu_client *client = NULL;

    vu_client_options_default(&options);
    options.send_json = false;
    options.timeout_ms = TEST_TIMEOUT_MS;
    server_start(&server, script_version_no_json);
    ck_assert_int_eq(vu_client_connect(server.path, &options, &client), 0);
    server_finish(&server);
    ck_assert_uint_eq(server.version_payload_length, sizeof(struct vu_version));
    /* No JSON in the reply either: the spec's defaults. */
    ck_assert_uint_eq(vu_client_session(client)->max_msg_fds, 1);
    ck_assert_uint_eq(vu_client_session(client)->max_data_xfer_size, 1u << 20);
    vu_client_close(client);
}
END_TEST

/* A reply with a newer minor or another major than proposed breaks the rules. */
static void script_version_bad_minor(struct fake_server *server, int fd)
{
    server_version(server, fd, 7, qemu_like_reply, NULL, 0);
}

START_TEST(test_version_rejects_newer_minor)
{
    struct fake_server server;
    struct vu_client_options options;
    struct vu_client *client = NULL;
    int fds_before = count_open_fds();

    vu_client_options_default(&options);
    options.timeout_ms = TEST_TIMEOUT_MS;
    server_start(&server, script_version_bad_minor);
    ck_assert_int_eq(vu_client_connect(server.path, &options, &client), -EPROTO);
    ck_assert_ptr_null(client);
    server_finish(&server);
    ck_assert_int_eq(count_open_fds(), fds_before);
}
END_TEST

/*
 * Twin socket: the reply carries a stray descriptor and the twin at fd_index 1. The
 * server then drives DMA over the twin while the client waits for DEVICE_GET_INFO.
 */
static void script_twin_dma(struct fake_server *server, int fd)
{
    struct fake_message request, reply;
    struct vu_dma_map map;
    struct vu_device_info info = {
        .argsz = 16,
        .flags = VFIO_DEVICE_FLAGS_PCI,
        .num_regions = 9,
        .num_irqs = 5,
    };
    struct vu_dma_access access;
    uint8_t write_payload[sizeof(access) + 8];
    int pair[2], stray[2], fds[2];

    SERVER_CHECK(server, socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) == 0);
    SERVER_CHECK(server, pipe2(stray, O_CLOEXEC) == 0);
    fds[0] = stray[0];
    fds[1] = pair[1];
    server_version(server, fd, 1,
                   "{\"capabilities\":{\"max_msg_fds\":16,"
                   "\"twin_socket\":{\"supported\":true,\"fd_index\":1}}}",
                   fds, 2);
    close(pair[1]);
    close(stray[0]);
    close(stray[1]);

    /* DMA_MAP without a descriptor. */
    SERVER_CHECK(server, server_receive(fd, &request) == 0);
    SERVER_CHECK(server, request.header.command == VU_COMMAND_DMA_MAP);
    SERVER_CHECK(server, request.length == sizeof(map) && request.fd_count == 0);
    memcpy(&map, request.payload, sizeof(map));
    SERVER_CHECK(server, map.argsz == sizeof(map) && map.address == 0x10000 && map.size == 4096 &&
                             map.offset == 0);
    SERVER_CHECK(server, map.flags == (VU_DMA_FLAG_READABLE | VU_DMA_FLAG_WRITABLE));
    server_reply(fd, &request, NULL, 0, NULL, 0);

    SERVER_CHECK(server, server_receive(fd, &request) == 0);
    SERVER_CHECK(server, request.header.command == VU_COMMAND_DEVICE_GET_INFO);

    /* Meanwhile, on the twin: write 8 bytes, read them back, read out of bounds. */
    access = (struct vu_dma_access){.address = 0x10010, .count = 8};
    memcpy(write_payload, &access, sizeof(access));
    memcpy(write_payload + sizeof(access), "ABCDEFGH", 8);
    server_send(pair[0], 0x77, VU_COMMAND_DMA_WRITE, VU_FLAGS_TYPE_COMMAND, 0, write_payload,
                sizeof(write_payload), NULL, 0);
    SERVER_CHECK(server, server_receive(pair[0], &reply) == 0);
    SERVER_CHECK(server,
                 reply.header.message_id == 0x77 && reply.header.flags == VU_FLAGS_TYPE_REPLY);
    SERVER_CHECK(server, reply.length == sizeof(access));
    SERVER_CHECK(server, memcmp(reply.payload, &access, sizeof(access)) == 0);

    server_send(pair[0], 0x78, VU_COMMAND_DMA_READ, VU_FLAGS_TYPE_COMMAND, 0, &access,
                sizeof(access), NULL, 0);
    SERVER_CHECK(server, server_receive(pair[0], &reply) == 0);
    SERVER_CHECK(server, reply.header.message_id == 0x78 && reply.length == sizeof(access) + 8);
    SERVER_CHECK(server, memcmp(reply.payload + sizeof(access), "ABCDEFGH", 8) == 0);

    access = (struct vu_dma_access){.address = 0x10ff8, .count = 16};
    server_send(pair[0], 0x79, VU_COMMAND_DMA_READ, VU_FLAGS_TYPE_COMMAND, 0, &access,
                sizeof(access), NULL, 0);
    SERVER_CHECK(server, server_receive(pair[0], &reply) == 0);
    SERVER_CHECK(server, (reply.header.flags & VU_FLAGS_ERROR) && reply.header.error == EFAULT);
    SERVER_CHECK(server, reply.length == 0);

    server_reply(fd, &request, &info, sizeof(info), NULL, 0);
    close(pair[0]);
}

START_TEST(test_twin_socket_serves_dma)
{
    struct fake_server server;
    struct vu_client *client;
    struct vu_device_info info;
    uint8_t *memory = calloc(1, 4096);
    int fds_before = count_open_fds();

    server_start(&server, script_twin_dma);
    client = connect_client(&server, true);
    ck_assert(vu_client_twin_socket_active(client));
    ck_assert_int_ge(vu_client_twin_socket(client), 0);
    ck_assert_int_eq(vu_client_dma_map_memory(client, 0x10000, 4096,
                                              VU_DMA_FLAG_READABLE | VU_DMA_FLAG_WRITABLE, memory),
                     0);
    ck_assert_int_eq(vu_client_device_info(client, &info), 0);
    server_finish(&server);
    ck_assert(server.proposal.twin_socket);
    ck_assert_uint_eq(info.num_regions, 9);
    ck_assert_uint_eq(info.num_irqs, 5);
    ck_assert_mem_eq(memory + 0x10, "ABCDEFGH", 8);
    vu_client_close(client);
    free(memory);
    ck_assert_int_eq(count_open_fds(), fds_before);
}
END_TEST

/* The reply claims a twin socket but passes no descriptor: the spec says abort. */
static void script_twin_without_fd(struct fake_server *server, int fd)
{
    server_version(server, fd, 1,
                   "{\"capabilities\":{\"twin_socket\":{\"supported\":true,\"fd_index\":0}}}", NULL,
                   0);
}

/* The reply enables a twin socket the client never asked for. */
static void script_twin_unrequested(struct fake_server *server, int fd)
{
    int pair[2];

    SERVER_CHECK(server, socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) == 0);
    server_version(server, fd, 1,
                   "{\"capabilities\":{\"twin_socket\":{\"supported\":true,\"fd_index\":0}}}",
                   &pair[1], 1);
    close(pair[0]);
    close(pair[1]);
}

/* The descriptor at fd_index is not a socket. */
static void script_twin_not_socket(struct fake_server *server, int fd)
{
    int pipe_fds[2];

    SERVER_CHECK(server, pipe2(pipe_fds, O_CLOEXEC) == 0);
    server_version(server, fd, 1,
                   "{\"capabilities\":{\"twin_socket\":{\"supported\":true,\"fd_index\":0}}}",
                   pipe_fds, 1);
    close(pipe_fds[0]);
    close(pipe_fds[1]);
}

START_TEST(test_twin_socket_inconsistent_reply)
{
    static const struct {
        fake_script script;
        bool ask_twin;
    } cases[] = {
        {script_twin_without_fd, true},
        {script_twin_unrequested, false},
        {script_twin_not_socket, true},
    };
    int fds_before = count_open_fds();

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct fake_server server;
        struct vu_client_options options;
        struct vu_client *client = NULL;

        vu_client_options_default(&options);
        options.proposal.twin_socket = cases[i].ask_twin;
        options.timeout_ms = TEST_TIMEOUT_MS;
        server_start(&server, cases[i].script);
        ck_assert_int_eq(vu_client_connect(server.path, &options, &client), -EPROTO);
        ck_assert_ptr_null(client);
        server_finish(&server);
    }
    ck_assert_int_eq(count_open_fds(), fds_before);
}
END_TEST

/* Error replies: errno, no errno, and an error reply that carries a payload. */
static void script_errors(struct fake_server *server, int fd)
{
    struct fake_message request;
    uint8_t junk[8] = {0};

    if (server_version(server, fd, 1, qemu_like_reply, NULL, 0) < 0)
        return;
    SERVER_CHECK(server, server_receive(fd, &request) == 0);
    SERVER_CHECK(server, request.header.command == VU_COMMAND_DEVICE_RESET);
    SERVER_CHECK(server, request.length == 0);
    server_error(fd, &request, ENODEV);

    SERVER_CHECK(server, server_receive(fd, &request) == 0);
    server_error(fd, &request, 0);

    SERVER_CHECK(server, server_receive(fd, &request) == 0);
    server_send(fd, request.header.message_id, request.header.command,
                VU_FLAGS_TYPE_REPLY | VU_FLAGS_ERROR, EINVAL, junk, sizeof(junk), NULL, 0);

    /* A reply to another message id. */
    SERVER_CHECK(server, server_receive(fd, &request) == 0);
    server_send(fd, (uint16_t)(request.header.message_id + 1), request.header.command,
                VU_FLAGS_TYPE_REPLY, 0, NULL, 0, NULL, 0);

    /* Then an honest one: the stream is still in step. */
    SERVER_CHECK(server, server_receive(fd, &request) == 0);
    server_reply(fd, &request, NULL, 0, NULL, 0);
}

START_TEST(test_error_replies)
{
    struct fake_server server;
    struct vu_client *client;

    server_start(&server, script_errors);
    client = connect_client(&server, false);
    ck_assert_int_eq(vu_client_device_reset(client), -ENODEV);
    ck_assert_int_eq(vu_client_device_reset(client), -EIO);
    ck_assert_int_eq(vu_client_device_reset(client), -EPROTO);
    ck_assert_int_eq(vu_client_device_reset(client), -EPROTO);
    ck_assert_int_eq(vu_client_device_reset(client), 0);
    server_finish(&server);
    vu_client_close(client);
}
END_TEST

/* Replies whose size does not match their content. */
static void script_bad_sizes(struct fake_server *server, int fd)
{
    struct fake_message request;
    struct vu_device_info info = {.argsz = 16};
    uint8_t long_payload[20] = {0};
    int pipe_fds[2];

    if (server_version(server, fd, 1, qemu_like_reply, NULL, 0) < 0)
        return;
    /* A DEVICE_GET_INFO reply 4 bytes too long, carrying a descriptor nobody wants. */
    SERVER_CHECK(server, server_receive(fd, &request) == 0);
    SERVER_CHECK(server, pipe2(pipe_fds, O_CLOEXEC) == 0);
    memcpy(long_payload, &info, sizeof(info));
    server_reply(fd, &request, long_payload, sizeof(long_payload), pipe_fds, 1);
    close(pipe_fds[0]);
    close(pipe_fds[1]);
    /* Too short. */
    SERVER_CHECK(server, server_receive(fd, &request) == 0);
    server_reply(fd, &request, &info, 8, NULL, 0);
    /* argsz smaller than the structure. */
    SERVER_CHECK(server, server_receive(fd, &request) == 0);
    info.argsz = 8;
    server_reply(fd, &request, &info, sizeof(info), NULL, 0);
    /* A header whose msg_size is smaller than a header. */
    SERVER_CHECK(server, server_receive(fd, &request) == 0);
    server_send_raw(fd, request.header.message_id, request.header.command, 8, VU_FLAGS_TYPE_REPLY,
                    0, NULL, 0, NULL, 0);
}

static void script_huge_size(struct fake_server *server, int fd)
{
    struct fake_message request;

    if (server_version(server, fd, 1, qemu_like_reply, NULL, 0) < 0)
        return;
    SERVER_CHECK(server, server_receive(fd, &request) == 0);
    server_send_raw(fd, request.header.message_id, request.header.command, 0xfffffff0u,
                    VU_FLAGS_TYPE_REPLY, 0, "abcd", 4, NULL, 0);
}

/* The server dies half way through a reply. */
static void script_short_payload(struct fake_server *server, int fd)
{
    struct fake_message request;

    if (server_version(server, fd, 1, qemu_like_reply, NULL, 0) < 0)
        return;
    SERVER_CHECK(server, server_receive(fd, &request) == 0);
    server_send_raw(fd, request.header.message_id, request.header.command, VU_HEADER_SIZE + 16,
                    VU_FLAGS_TYPE_REPLY, 0, "abcd", 4, NULL, 0);
}

START_TEST(test_bad_reply_sizes)
{
    struct fake_server server;
    struct vu_client *client;
    struct vu_device_info info;
    int fds_before = count_open_fds();

    server_start(&server, script_bad_sizes);
    client = connect_client(&server, false);
    ck_assert_int_eq(vu_client_device_info(client, &info), -EPROTO);
    ck_assert_int_eq(vu_client_device_info(client, &info), -EPROTO);
    ck_assert_int_eq(vu_client_device_info(client, &info), -EPROTO);
    ck_assert_int_eq(vu_client_device_info(client, &info), -EPROTO);
    /* The stream cannot be trusted after a bad header. */
    ck_assert_int_eq(vu_client_device_info(client, &info), -ENOTCONN);
    server_finish(&server);
    vu_client_close(client);

    server_start(&server, script_huge_size);
    client = connect_client(&server, false);
    ck_assert_int_eq(vu_client_device_info(client, &info), -EPROTO);
    ck_assert_int_eq(vu_client_device_reset(client), -ENOTCONN);
    server_finish(&server);
    vu_client_close(client);

    server_start(&server, script_short_payload);
    client = connect_client(&server, false);
    ck_assert_int_eq(vu_client_device_info(client, &info), -ECONNRESET);
    server_finish(&server);
    vu_client_close(client);
    ck_assert_int_eq(count_open_fds(), fds_before);
}
END_TEST

/* No reply at all: the timeout, and the raw receive that may be retried. */
static void script_silent(struct fake_server *server, int fd)
{
    struct fake_message request;

    if (server_version(server, fd, 1, qemu_like_reply, NULL, 0) < 0)
        return;
    SERVER_CHECK(server, server_receive(fd, &request) == 0);
    SERVER_CHECK(server, request.header.flags == (VU_FLAGS_TYPE_COMMAND | VU_FLAGS_NO_REPLY));
    SERVER_CHECK(server, request.header.command == VU_COMMAND_REGION_WRITE);
    SERVER_CHECK(server, request.length == sizeof(struct vu_region_access) + 4);
    SERVER_CHECK(server, memcmp(request.payload + sizeof(struct vu_region_access), "wxyz", 4) == 0);
    SERVER_CHECK(server, server_receive(fd, &request) == 0);
    SERVER_CHECK(server, request.header.command == VU_COMMAND_DEVICE_RESET);
    SERVER_CHECK(server, server_receive(fd, &request) < 0);
}

START_TEST(test_timeouts)
{
    struct fake_server server;
    struct vu_client *client;
    struct vu_header header;

    server_start(&server, script_silent);
    client = connect_client(&server, false);
    ck_assert_int_eq(vu_client_region_write_posted(client, 0, 0x10, "wxyz", 4), 0);
    vu_client_set_timeout(client, 50);
    ck_assert_int_eq(vu_client_receive(client, &header, NULL, 0, NULL, NULL, 0, NULL), -ETIMEDOUT);
    ck_assert_int_eq(vu_client_device_reset(client), -ETIMEDOUT);
    ck_assert_int_eq(vu_client_device_reset(client), -ENOTCONN);
    vu_client_close(client);
    server_finish(&server);
}
END_TEST

static void put_region_info(uint8_t *buffer, uint32_t argsz, uint32_t flags, uint32_t index,
                            uint32_t cap_offset, uint64_t size)
{
    struct vfio_region_info info = {
        .argsz = argsz,
        .flags = flags,
        .index = index,
        .cap_offset = cap_offset,
        .size = size,
        .offset = 0,
    };

    memcpy(buffer, &info, sizeof(info));
}

static void put_sparse(uint8_t *buffer, uint32_t offset, uint32_t next, uint32_t nr_areas,
                       const struct vfio_region_sparse_mmap_area *areas, uint32_t area_count)
{
    struct vfio_region_info_cap_sparse_mmap sparse = {
        .header = {.id = VFIO_REGION_INFO_CAP_SPARSE_MMAP, .version = 1, .next = next},
        .nr_areas = nr_areas,
    };

    memcpy(buffer + offset, &sparse, sizeof(sparse));
    memcpy(buffer + offset + sizeof(sparse), areas, area_count * sizeof(*areas));
}

#define REGION_FLAGS                                                                               \
    (VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE | VFIO_REGION_INFO_FLAG_MMAP |       \
     VFIO_REGION_INFO_FLAG_CAPS)

static const struct vfio_region_sparse_mmap_area test_areas[2] = {
    {.offset = 0, .size = 0x1000},
    {.offset = 0x2000, .size = 0x2000},
};

/*
 * Region 2 needs 80 bytes: the first reply asks for them (the fixed part without CAPS, as
 * vfio-userd answers), the second carries them. Then the same short reply with CAPS and
 * cap_offset 0, as the kernel's VFIO would give it, which QEMU refuses: so does the client.
 */
static void script_region_info(struct fake_server *server, int fd)
{
    struct fake_message request;
    struct vfio_region_info asked;
    uint8_t reply[80];
    int memfd;

    if (server_version(server, fd, 1, qemu_like_reply, NULL, 0) < 0)
        return;
    memfd = memfd_create("bar", MFD_CLOEXEC);
    SERVER_CHECK(server, memfd >= 0);
    for (int attempt = 0; attempt < 2; attempt++) {
        SERVER_CHECK(server, server_receive(fd, &request) == 0);
        SERVER_CHECK(server, request.header.command == VU_COMMAND_DEVICE_GET_REGION_INFO);
        SERVER_CHECK(server, request.length == sizeof(asked));
        memcpy(&asked, request.payload, sizeof(asked));
        SERVER_CHECK(server, asked.index == 2);
        server_see(server, asked.argsz);
        if (asked.argsz < sizeof(reply)) {
            put_region_info(reply, sizeof(reply), REGION_FLAGS & ~VFIO_REGION_INFO_FLAG_CAPS, 2, 0,
                            0x4000);
            server_reply(fd, &request, reply, 32, &memfd, 1);
            continue;
        }
        put_region_info(reply, sizeof(reply), REGION_FLAGS, 2, 32, 0x4000);
        put_sparse(reply, 32, 0, 2, test_areas, 2);
        server_reply(fd, &request, reply, sizeof(reply), &memfd, 1);
    }
    close(memfd);

    /* CAPS with cap_offset 0 (or past argsz) in the short reply: refused, not retried. */
    for (uint32_t cap_offset = 0; cap_offset <= 88; cap_offset += 88) {
        SERVER_CHECK(server, server_receive(fd, &request) == 0);
        memcpy(&asked, request.payload, sizeof(asked));
        SERVER_CHECK(server, asked.argsz == 32);
        put_region_info(reply, sizeof(reply), REGION_FLAGS, 2, cap_offset, 0x4000);
        server_reply(fd, &request, reply, 32, NULL, 0);
    }

    /* A server that asks for more every time. */
    for (uint32_t attempt = 0; attempt < 3; attempt++) {
        SERVER_CHECK(server, server_receive(fd, &request) == 0);
        memcpy(&asked, request.payload, sizeof(asked));
        put_region_info(reply, asked.argsz + 8, REGION_FLAGS, 2, 32, 0x4000);
        server_reply(fd, &request, reply, 32, NULL, 0);
    }
    /* A reply for another region. */
    SERVER_CHECK(server, server_receive(fd, &request) == 0);
    put_region_info(reply, 32, 0, 3, 0, 0x4000);
    server_reply(fd, &request, reply, 32, NULL, 0);
}

START_TEST(test_region_info_retry_and_sparse_areas)
{
    struct fake_server server;
    struct vu_client *client;
    struct vfio_region_info *info = NULL, *refused = NULL;
    struct vfio_region_sparse_mmap_area *areas = NULL;
    uint32_t area_count = 0;
    int fd = -1;
    int fds_before = count_open_fds();

    server_start(&server, script_region_info);
    client = connect_client(&server, false);
    ck_assert_int_eq(vu_client_region_info(client, 2, &info, &fd), 0);
    for (int i = 0; i < 4; i++) {
        ck_assert_int_eq(vu_client_region_info(client, 2, &refused, NULL), -EPROTO);
        ck_assert_ptr_null(refused);
    }
    server_finish(&server);
    vu_client_close(client);

    ck_assert_uint_eq(server.seen_count, 2);
    ck_assert_uint_eq(server.seen[0], sizeof(struct vfio_region_info));
    ck_assert_uint_eq(server.seen[1], 80);
    ck_assert_int_ge(fd, 0);
    close(fd);
    ck_assert_uint_eq(info->argsz, 80);
    ck_assert_uint_eq(info->size, 0x4000);
    ck_assert_int_eq(vu_client_region_sparse_areas(info, &areas, &area_count), 0);
    ck_assert_uint_eq(area_count, 2);
    ck_assert_mem_eq(areas, test_areas, sizeof(test_areas));
    free(areas);
    free(info);
    ck_assert_int_eq(count_open_fds(), fds_before);
}
END_TEST

/* Malformed capability chains, parsed without a server. */
START_TEST(test_sparse_areas_malformed)
{
    union {
        struct vfio_region_info info;
        uint8_t bytes[128];
    } region;
    uint8_t *buffer = region.bytes;
    struct vfio_region_info *info = &region.info;
    struct vfio_region_sparse_mmap_area *areas = NULL;
    struct vfio_info_cap_header other = {.id = 99, .version = 1, .next = 40};
    struct vfio_region_sparse_mmap_area beyond = {.offset = 0x3000, .size = 0x2000};
    uint32_t count = 7;

    /* No capabilities at all. */
    memset(&region, 0, sizeof(region));
    put_region_info(buffer, 32, VFIO_REGION_INFO_FLAG_READ, 0, 0, 0x4000);
    ck_assert_int_eq(vu_client_region_sparse_areas(info, &areas, &count), -ENOENT);
    ck_assert_uint_eq(count, 0);

    /* An unknown capability first, then the sparse one: found through the chain. */
    put_region_info(buffer, 104, REGION_FLAGS, 0, 32, 0x4000);
    memcpy(buffer + 32, &other, sizeof(other));
    put_sparse(buffer, 40, 0, 2, test_areas, 2);
    ck_assert_int_eq(vu_client_region_sparse_areas(info, &areas, &count), 0);
    ck_assert_uint_eq(count, 2);
    free(areas);

    /* The first capability points at itself. */
    other.next = 32;
    memcpy(buffer + 32, &other, sizeof(other));
    ck_assert_int_eq(vu_client_region_sparse_areas(info, &areas, &count), -EPROTO);
    ck_assert_ptr_null(areas);

    /* cap_offset inside the fixed part, or past argsz. */
    put_region_info(buffer, 104, REGION_FLAGS, 0, 16, 0x4000);
    ck_assert_int_eq(vu_client_region_sparse_areas(info, &areas, &count), -EPROTO);
    put_region_info(buffer, 104, REGION_FLAGS, 0, 100, 0x4000);
    ck_assert_int_eq(vu_client_region_sparse_areas(info, &areas, &count), -EPROTO);
    put_region_info(buffer, 104, REGION_FLAGS, 0, 0xfffffff8u, 0x4000);
    ck_assert_int_eq(vu_client_region_sparse_areas(info, &areas, &count), -EPROTO);

    /* More areas announced than argsz holds. */
    put_region_info(buffer, 80, REGION_FLAGS, 0, 32, 0x4000);
    put_sparse(buffer, 32, 0, 3, test_areas, 2);
    ck_assert_int_eq(vu_client_region_sparse_areas(info, &areas, &count), -EPROTO);
    put_sparse(buffer, 32, 0, 0x10000001u, test_areas, 2);
    ck_assert_int_eq(vu_client_region_sparse_areas(info, &areas, &count), -EPROTO);

    /* An area past the end of the region. */
    put_region_info(buffer, 64, REGION_FLAGS, 0, 32, 0x4000);
    put_sparse(buffer, 32, 0, 1, &beyond, 1);
    ck_assert_int_eq(vu_client_region_sparse_areas(info, &areas, &count), -EPROTO);
    ck_assert_ptr_null(areas);
    ck_assert_uint_eq(count, 0);

    /* A sparse capability of an unknown version. */
    put_region_info(buffer, 80, REGION_FLAGS, 0, 32, 0x4000);
    put_sparse(buffer, 32, 0, 2, test_areas, 2);
    buffer[34] = 2;
    ck_assert_int_eq(vu_client_region_sparse_areas(info, &areas, &count), -ENOTSUP);
}
END_TEST

/*
 * SET_IRQS: 20 eventfds go as 16 + 4 (the server's max_msg_fds); then a mix with -1
 * entries. The server signals each received descriptor with its vector number + 1, so the
 * test can check the order the descriptors arrived in.
 */
static void script_set_irqs(struct fake_server *server, int fd)
{
    static const struct {
        uint32_t start, count, fds;
    } expected[] = {{0, 16, 16}, {16, 4, 4}, {3, 1, 1}, {4, 2, 0}, {6, 1, 1}};
    struct fake_message request;
    struct vfio_irq_set set;

    if (server_version(server, fd, 1, qemu_like_reply, NULL, 0) < 0)
        return;
    for (size_t i = 0; i < sizeof(expected) / sizeof(expected[0]); i++) {
        SERVER_CHECK(server, server_receive(fd, &request) == 0);
        SERVER_CHECK(server, request.header.command == VU_COMMAND_DEVICE_SET_IRQS);
        SERVER_CHECK(server, request.length == sizeof(set));
        memcpy(&set, request.payload, sizeof(set));
        SERVER_CHECK(server, set.argsz == sizeof(set) && set.index == VFIO_PCI_MSIX_IRQ_INDEX);
        SERVER_CHECK(server,
                     set.flags == (VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER));
        SERVER_CHECK(server, set.start == expected[i].start && set.count == expected[i].count);
        SERVER_CHECK(server, request.fd_count == expected[i].fds);
        for (size_t j = 0; j < request.fd_count; j++) {
            uint64_t value = set.start + j + 1;

            SERVER_CHECK(server, write(request.fds[j], &value, sizeof(value)) == sizeof(value));
        }
        server_close_fds(&request);
        server_reply(fd, &request, NULL, 0, NULL, 0);
    }

    /* DATA_BOOL carries its bytes in the payload. */
    SERVER_CHECK(server, server_receive(fd, &request) == 0);
    memcpy(&set, request.payload, sizeof(set));
    SERVER_CHECK(server, request.length == sizeof(set) + 3 && set.argsz == sizeof(set) + 3);
    SERVER_CHECK(server, memcmp(request.payload + sizeof(set), "\1\0\1", 3) == 0);
    server_reply(fd, &request, NULL, 0, NULL, 0);
}

START_TEST(test_set_irqs_chunks)
{
    struct fake_server server;
    struct vu_client *client;
    int eventfds[20];
    int mixed[4];
    int fds_before = count_open_fds();
    uint32_t flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;

    for (int i = 0; i < 20; i++) {
        eventfds[i] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        ck_assert_int_ge(eventfds[i], 0);
    }
    mixed[0] = eventfds[0];
    mixed[1] = -1;
    mixed[2] = -1;
    mixed[3] = eventfds[1];
    server_start(&server, script_set_irqs);
    client = connect_client(&server, false);
    ck_assert_int_eq(
        vu_client_set_irqs(client, VFIO_PCI_MSIX_IRQ_INDEX, flags, 0, 20, eventfds, NULL), 0);
    for (int i = 0; i < 20; i++) {
        uint64_t value = 0;

        ck_assert_int_eq(read(eventfds[i], &value, sizeof(value)), sizeof(value));
        ck_assert_uint_eq(value, (uint64_t)i + 1);
    }
    ck_assert_int_eq(vu_client_set_irqs(client, VFIO_PCI_MSIX_IRQ_INDEX, flags, 3, 4, mixed, NULL),
                     0);
    ck_assert_int_eq(vu_client_set_irqs(client, VFIO_PCI_MSIX_IRQ_INDEX,
                                        VFIO_IRQ_SET_DATA_BOOL | VFIO_IRQ_SET_ACTION_MASK, 0, 3,
                                        NULL, (const uint8_t *)"\1\0\1"),
                     0);
    /* Inconsistent arguments never reach the wire. */
    ck_assert_int_eq(vu_client_set_irqs(client, 0, VFIO_IRQ_SET_DATA_BOOL, 0, 1, NULL, NULL),
                     -EINVAL);
    ck_assert_int_eq(vu_client_set_irqs(client, 0, VFIO_IRQ_SET_DATA_NONE, 0, 1, eventfds, NULL),
                     -EINVAL);
    server_finish(&server);
    vu_client_close(client);
    {
        uint64_t value = 0;

        ck_assert_int_eq(read(eventfds[0], &value, sizeof(value)), sizeof(value));
        ck_assert_uint_eq(value, 4);
        ck_assert_int_eq(read(eventfds[1], &value, sizeof(value)), sizeof(value));
        ck_assert_uint_eq(value, 7);
    }
    for (int i = 0; i < 20; i++)
        close(eventfds[i]);
    ck_assert_int_eq(count_open_fds(), fds_before);
}
END_TEST

/*
 * DMA over the main socket while the client waits for REGION_READ, against a read-only
 * map, then vu_client_serve, DMA_UNMAP, and a read of the unmapped range.
 */
static void script_dma_main(struct fake_server *server, int fd)
{
    struct fake_message request, reply;
    struct vu_dma_access access = {.address = 0x2000, .count = 4};
    uint8_t payload[sizeof(access) + 8] = {0};
    struct vu_region_access region;
    struct vu_dma_unmap unmap;
    uint8_t region_reply[sizeof(region) + 4];

    if (server_version(server, fd, 1, qemu_like_reply, NULL, 0) < 0)
        return;
    SERVER_CHECK(server, server_receive(fd, &request) == 0);
    SERVER_CHECK(server, request.header.command == VU_COMMAND_DMA_MAP);
    server_reply(fd, &request, NULL, 0, NULL, 0);

    SERVER_CHECK(server, server_receive(fd, &request) == 0);
    SERVER_CHECK(server, request.header.command == VU_COMMAND_REGION_READ);
    SERVER_CHECK(server, request.length == sizeof(region));
    memcpy(&region, request.payload, sizeof(region));
    SERVER_CHECK(server, region.offset == 0x40 && region.region == 7 && region.count == 4);

    /* DMA_WRITE to a read-only map. */
    memcpy(payload, &access, sizeof(access));
    memcpy(payload + sizeof(access), "nope", 4);
    server_send(fd, 1, VU_COMMAND_DMA_WRITE, VU_FLAGS_TYPE_COMMAND, 0, payload, sizeof(access) + 4,
                NULL, 0);
    SERVER_CHECK(server, server_receive(fd, &reply) == 0);
    SERVER_CHECK(server, (reply.header.flags & VU_FLAGS_ERROR) && reply.header.error == EPERM);
    /* DMA_WRITE whose count disagrees with its size. */
    server_send(fd, 2, VU_COMMAND_DMA_WRITE, VU_FLAGS_TYPE_COMMAND, 0, payload, sizeof(payload),
                NULL, 0);
    SERVER_CHECK(server, server_receive(fd, &reply) == 0);
    SERVER_CHECK(server, reply.header.message_id == 2 && reply.header.error == EINVAL);
    /* A command clients do not implement. */
    server_send(fd, 3, VU_COMMAND_DEVICE_RESET, VU_FLAGS_TYPE_COMMAND, 0, NULL, 0, NULL, 0);
    SERVER_CHECK(server, server_receive(fd, &reply) == 0);
    SERVER_CHECK(server, reply.header.message_id == 3 && reply.header.error == ENOTSUP);
    /* A DMA_READ wrapping around the address space. */
    access = (struct vu_dma_access){.address = 0x2000, .count = UINT64_MAX};
    server_send(fd, 4, VU_COMMAND_DMA_READ, VU_FLAGS_TYPE_COMMAND, 0, &access, sizeof(access), NULL,
                0);
    SERVER_CHECK(server, server_receive(fd, &reply) == 0);
    SERVER_CHECK(server, reply.header.message_id == 4 && (reply.header.flags & VU_FLAGS_ERROR));
    /* A good DMA_READ. */
    access = (struct vu_dma_access){.address = 0x2ffc, .count = 4};
    server_send(fd, 5, VU_COMMAND_DMA_READ, VU_FLAGS_TYPE_COMMAND, 0, &access, sizeof(access), NULL,
                0);
    SERVER_CHECK(server, server_receive(fd, &reply) == 0);
    SERVER_CHECK(server, reply.header.message_id == 5 && reply.length == sizeof(access) + 4);
    SERVER_CHECK(server, memcmp(reply.payload + sizeof(access), "tail", 4) == 0);

    memcpy(region_reply, &region, sizeof(region));
    memcpy(region_reply + sizeof(region), "\x86\x80\x34\x12", 4);
    server_reply(fd, &request, region_reply, sizeof(region_reply), NULL, 0);

    /* Served by vu_client_serve, with no request outstanding. */
    access = (struct vu_dma_access){.address = 0x2000, .count = 4};
    server_send(fd, 6, VU_COMMAND_DMA_READ, VU_FLAGS_TYPE_COMMAND, 0, &access, sizeof(access), NULL,
                0);
    SERVER_CHECK(server, server_receive(fd, &reply) == 0);
    SERVER_CHECK(server, reply.header.message_id == 6 && reply.length == sizeof(access) + 4);
    SERVER_CHECK(server, memcmp(reply.payload + sizeof(access), "head", 4) == 0);

    SERVER_CHECK(server, server_receive(fd, &request) == 0);
    SERVER_CHECK(server, request.header.command == VU_COMMAND_DMA_UNMAP);
    SERVER_CHECK(server, request.length == sizeof(unmap));
    memcpy(&unmap, request.payload, sizeof(unmap));
    SERVER_CHECK(server,
                 unmap.argsz == sizeof(unmap) && unmap.address == 0x2000 && unmap.size == 0x1000);
    server_reply(fd, &request, &unmap, sizeof(unmap), NULL, 0);

    server_send(fd, 7, VU_COMMAND_DMA_READ, VU_FLAGS_TYPE_COMMAND, 0, &access, sizeof(access), NULL,
                0);
    SERVER_CHECK(server, server_receive(fd, &reply) == 0);
    SERVER_CHECK(server, reply.header.message_id == 7 && reply.header.error == EFAULT);
}

START_TEST(test_dma_on_main_socket)
{
    struct fake_server server;
    struct vu_client *client;
    uint8_t *memory = calloc(1, 0x1000);
    uint8_t config[4];
    int fds_before = count_open_fds();

    memcpy(memory, "head", 4);
    memcpy(memory + 0xffc, "tail", 4);
    server_start(&server, script_dma_main);
    client = connect_client(&server, false);
    ck_assert_int_eq(vu_client_dma_map_memory(client, 0x2000, 0x1000, VU_DMA_FLAG_READABLE, memory),
                     0);
    ck_assert_int_eq(vu_client_region_read(client, 7, 0x40, config, 4), 0);
    ck_assert_mem_eq(config, "\x86\x80\x34\x12", 4);
    ck_assert_mem_eq(memory, "head", 4);
    ck_assert_int_eq(vu_client_serve(client, TEST_TIMEOUT_MS), 1);
    ck_assert_int_eq(vu_client_dma_unmap(client, 0x2000, 0x1000, 0), 0);
    ck_assert_int_eq(vu_client_serve(client, TEST_TIMEOUT_MS), 1);
    server_finish(&server);
    vu_client_close(client);
    free(memory);
    ck_assert_int_eq(count_open_fds(), fds_before);
}
END_TEST

/* vu_client_serve leaves a reply for vu_client_receive; pipelined requests. */
static void script_pipeline(struct fake_server *server, int fd)
{
    struct fake_message first, second;
    struct vu_write_multi count = {.write_count = 2};

    if (server_version(server, fd, 1, qemu_like_reply, NULL, 0) < 0)
        return;
    SERVER_CHECK(server, server_receive(fd, &first) == 0);
    SERVER_CHECK(server, server_receive(fd, &second) == 0);
    server_reply(fd, &first, NULL, 0, NULL, 0);
    server_reply(fd, &second, NULL, 0, NULL, 0);

    SERVER_CHECK(server, server_receive(fd, &first) == 0);
    SERVER_CHECK(server, first.header.command == VU_COMMAND_REGION_WRITE_MULTI);
    SERVER_CHECK(server, first.length == 8 + 2 * sizeof(struct vu_write_multi_entry));
    server_reply(fd, &first, &count, sizeof(count), NULL, 0);
}

START_TEST(test_pipelining_and_write_multi)
{
    struct fake_server server;
    struct vu_client *client;
    struct vu_header header;
    struct vu_write_multi_entry writes[2] = {
        {.offset = 0, .region = 0, .count = 4, .data = "abcd"},
        {.offset = 8, .region = 0, .count = 8, .data = "01234567"},
    };
    uint16_t first, second;
    size_t length = 99;

    server_start(&server, script_pipeline);
    client = connect_client(&server, false);
    first = vu_client_next_message_id(client);
    second = vu_client_next_message_id(client);
    ck_assert_int_eq(vu_client_send(client, first, VU_COMMAND_DEVICE_RESET, VU_FLAGS_TYPE_COMMAND,
                                    NULL, 0, NULL, 0),
                     0);
    ck_assert_int_eq(vu_client_send(client, second, VU_COMMAND_DEVICE_RESET, VU_FLAGS_TYPE_COMMAND,
                                    NULL, 0, NULL, 0),
                     0);
    /* Both replies are pending: serve() must not swallow them. */
    ck_assert_int_eq(vu_client_serve(client, 200), 0);
    ck_assert_int_eq(vu_client_receive(client, &header, NULL, 0, &length, NULL, 0, NULL), 0);
    ck_assert_uint_eq(header.message_id, first);
    ck_assert_uint_eq(length, 0);
    ck_assert_int_eq(vu_client_receive(client, &header, NULL, 0, &length, NULL, 0, NULL), 0);
    ck_assert_uint_eq(header.message_id, second);
    ck_assert_int_eq(vu_client_region_write_multi(client, writes, 2), 0);
    writes[0].count = 9;
    ck_assert_int_eq(vu_client_region_write_multi(client, writes, 2), -EINVAL);
    server_finish(&server);
    vu_client_close(client);
}
END_TEST

/* REGION_IO_FDS: retry with the argsz asked for, then entries pointing past the fds. */
static void script_io_fds(struct fake_server *server, int fd)
{
    struct fake_message request;
    struct vu_region_io_fds_request asked;
    struct vu_region_io_fds_request fixed = {.index = 1, .count = 2};
    struct vu_region_io_fd entries[2] = {
        {.offset = 0x100, .size = 4, .fd_index = 0, .type = VU_IO_FD_TYPE_IOEVENTFD},
        {.offset = 0x200, .size = 4, .fd_index = 1, .type = VU_IO_FD_TYPE_IOEVENTFD},
    };
    uint8_t reply[sizeof(fixed) + sizeof(entries)];
    int fds[2];

    if (server_version(server, fd, 1, qemu_like_reply, NULL, 0) < 0)
        return;
    fds[0] = eventfd(0, EFD_CLOEXEC);
    fds[1] = eventfd(0, EFD_CLOEXEC);
    SERVER_CHECK(server, fds[0] >= 0 && fds[1] >= 0);
    fixed.argsz = sizeof(reply);

    /* Claim a need larger than asked, then answer in full. */
    SERVER_CHECK(server, server_receive(fd, &request) == 0);
    memcpy(&asked, request.payload, sizeof(asked));
    server_see(server, asked.argsz);
    fixed.argsz = asked.argsz + 40;
    memcpy(reply, &fixed, sizeof(fixed));
    server_reply(fd, &request, reply, sizeof(fixed), NULL, 0);
    SERVER_CHECK(server, server_receive(fd, &request) == 0);
    memcpy(&asked, request.payload, sizeof(asked));
    server_see(server, asked.argsz);
    fixed.argsz = sizeof(reply);
    memcpy(reply, &fixed, sizeof(fixed));
    memcpy(reply + sizeof(fixed), entries, sizeof(entries));
    server_reply(fd, &request, reply, sizeof(reply), fds, 2);

    /* The second entry names a descriptor that was not sent. */
    SERVER_CHECK(server, server_receive(fd, &request) == 0);
    entries[1].fd_index = 1;
    memcpy(reply + sizeof(fixed), entries, sizeof(entries));
    server_reply(fd, &request, reply, sizeof(reply), fds, 1);
    close(fds[0]);
    close(fds[1]);
}

START_TEST(test_region_io_fds)
{
    struct fake_server server;
    struct vu_client *client;
    struct vu_region_io_fd *entries = NULL;
    uint32_t count = 0;
    int fds[4];
    size_t fd_count = 0;
    int fds_before = count_open_fds();

    server_start(&server, script_io_fds);
    client = connect_client(&server, false);
    ck_assert_int_eq(vu_client_region_io_fds(client, 1, &entries, &count, fds, 4, &fd_count), 0);
    ck_assert_uint_eq(count, 2);
    ck_assert_uint_eq(fd_count, 2);
    ck_assert_uint_eq(entries[1].offset, 0x200);
    ck_assert_uint_eq(entries[1].fd_index, 1);
    free(entries);
    close(fds[0]);
    close(fds[1]);
    ck_assert_int_eq(vu_client_region_io_fds(client, 1, &entries, &count, fds, 4, &fd_count),
                     -EPROTO);
    ck_assert_ptr_null(entries);
    ck_assert_uint_eq(fd_count, 0);
    server_finish(&server);
    ck_assert_uint_eq(server.seen[1], server.seen[0] + 40);
    vu_client_close(client);
    ck_assert_int_eq(count_open_fds(), fds_before);
}
END_TEST

static Suite *client_suite(void)
{
    Suite *suite = suite_create("client");
    TCase *version = tcase_create("version");
    TCase *replies = tcase_create("replies");
    TCase *commands = tcase_create("commands");

    tcase_add_test(version, test_version_negotiation);
    tcase_add_test(version, test_version_without_json);
    tcase_add_test(version, test_version_rejects_newer_minor);
    tcase_add_test(version, test_twin_socket_serves_dma);
    tcase_add_test(version, test_twin_socket_inconsistent_reply);
    tcase_add_test(replies, test_error_replies);
    tcase_add_test(replies, test_bad_reply_sizes);
    tcase_add_test(replies, test_timeouts);
    tcase_add_test(commands, test_region_info_retry_and_sparse_areas);
    tcase_add_test(commands, test_sparse_areas_malformed);
    tcase_add_test(commands, test_set_irqs_chunks);
    tcase_add_test(commands, test_dma_on_main_socket);
    tcase_add_test(commands, test_pipelining_and_write_multi);
    tcase_add_test(commands, test_region_io_fds);
    suite_add_tcase(suite, version);
    suite_add_tcase(suite, replies);
    suite_add_tcase(suite, commands);
    return suite;
}

int main(void)
{
    return test_run_suite(client_suite());
}
