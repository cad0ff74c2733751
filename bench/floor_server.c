/*
 * The floor for region I/O: the least a vfio-user server can do per request over a UNIX
 * socket. One blocking client at a time; per request one recv for the header, one for the
 * body (none when there is no body) and one send for the reply, nothing else: no event loop,
 * no validation beyond what keeps it in sync, no device behind the regions (reads return
 * bytes of one flat buffer, writes land in it). bench/run_bench.py measures every server
 * against it in the same run.
 *
 * Usage: floor_server SOCKET_PATH
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "wire.h"

#define FLOOR_MEMORY_SIZE (1u << 20)

static uint8_t memory[FLOOR_MEMORY_SIZE];
static uint8_t body[VU_HEADER_SIZE + VU_MESSAGE_OVERHEAD + (1u << 20)];
static uint8_t reply[VU_HEADER_SIZE + VU_MESSAGE_OVERHEAD + (1u << 20)];

static const char version_json[] = "{\"capabilities\":{\"max_msg_fds\":16,"
                                   "\"max_data_xfer_size\":1048576,\"write_multiple\":true}}";

/* Whole `length` bytes, or <= 0 at end of stream or error. */
static ssize_t receive_all(int fd, void *buffer, size_t length)
{
    ssize_t received;

    do {
        received = recv(fd, buffer, length, MSG_WAITALL);
    } while (received < 0 && errno == EINTR);
    return received == (ssize_t)length ? received : -1;
}

/* The reply payload for one request, written after the header in `reply`; its length. */
static size_t serve_request(const struct vu_header *header, size_t length)
{
    uint8_t *out = reply + VU_HEADER_SIZE;
    struct vu_region_access access;

    switch (header->command) {
    case VU_COMMAND_VERSION: {
        struct vu_version version = {.major = VU_VERSION_MAJOR, .minor = VU_VERSION_MINOR};
        memcpy(out, &version, sizeof(version));
        memcpy(out + sizeof(version), version_json, sizeof(version_json));
        return sizeof(version) + sizeof(version_json);
    }
    case VU_COMMAND_REGION_READ:
        if (length < sizeof(access))
            return 0;
        memcpy(&access, body, sizeof(access));
        if (access.offset >= FLOOR_MEMORY_SIZE || access.count > FLOOR_MEMORY_SIZE - access.offset)
            return 0;
        memcpy(out, &access, sizeof(access));
        memcpy(out + sizeof(access), memory + access.offset, access.count);
        return sizeof(access) + access.count;
    case VU_COMMAND_REGION_WRITE:
        if (length < sizeof(access))
            return 0;
        memcpy(&access, body, sizeof(access));
        if (access.offset < FLOOR_MEMORY_SIZE &&
            access.count <= FLOOR_MEMORY_SIZE - access.offset &&
            access.count <= length - sizeof(access))
            memcpy(memory + access.offset, body + sizeof(access), access.count);
        memcpy(out, &access, sizeof(access));
        return sizeof(access);
    case VU_COMMAND_REGION_WRITE_MULTI: {
        uint64_t count = 0;
        if (length >= sizeof(count))
            memcpy(&count, body, sizeof(count));
        for (uint64_t i = 0; i < count && sizeof(count) + (i + 1) * 24 <= length; i++) {
            struct vu_write_multi_entry entry;
            memcpy(&entry, body + sizeof(count) + i * sizeof(entry), sizeof(entry));
            if (entry.offset < FLOOR_MEMORY_SIZE - 8 && entry.count <= 8)
                memcpy(memory + entry.offset, entry.data, entry.count);
        }
        memcpy(out, &count, sizeof(count));
        return sizeof(count);
    }
    default:
        return 0;
    }
}

static void serve_client(int fd)
{
    for (;;) {
        struct vu_header header;
        size_t length, reply_length;

        if (receive_all(fd, &header, sizeof(header)) <= 0)
            return;
        if (header.message_size < VU_HEADER_SIZE || header.message_size > sizeof(body))
            return;
        length = header.message_size - VU_HEADER_SIZE;
        if (length > 0 && receive_all(fd, body, length) <= 0)
            return;
        reply_length = serve_request(&header, length);
        if (header.flags & VU_FLAGS_NO_REPLY)
            continue;
        vu_wire_encode_header(reply, header.message_id, header.command,
                              (uint32_t)(VU_HEADER_SIZE + reply_length), VU_FLAGS_TYPE_REPLY, 0);
        if (send(fd, reply, VU_HEADER_SIZE + reply_length, MSG_NOSIGNAL) < 0)
            return;
    }
}

int main(int argc, char **argv)
{
    struct sockaddr_un address = {.sun_family = AF_UNIX};
    int listener;

    if (argc != 2 || strlen(argv[1]) >= sizeof(address.sun_path)) {
        fprintf(stderr, "usage: floor_server SOCKET_PATH\n");
        return 2;
    }
    strcpy(address.sun_path, argv[1]);
    unlink(argv[1]);
    listener = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (listener < 0 || bind(listener, (struct sockaddr *)&address, sizeof(address)) < 0 ||
        listen(listener, 4) < 0) {
        perror("floor_server");
        return 1;
    }
    for (;;) {
        int client = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
        if (client < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            perror("accept");
            return 1;
        }
        serve_client(client);
        close(client);
    }
}
