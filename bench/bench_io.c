/*
 * Region I/O benchmark client: the same raw-socket client for every server (the floor,
 * vfio-userd --single, the daemon), so their figures compare. Blocking socket, one send per
 * request and one receive per reply, as a VMM's vCPU thread does; no library in between.
 *
 * Usage: bench_io SOCKET_PATH REQUESTS [CASE]
 *
 * Prints one line per case: NAME OPS_PER_SECOND P50_MICROSECONDS. Cases (testdev's layout,
 * vfio-userd-testdev(7): BAR0 registers, BAR2 RAM):
 *   read8      REGION_READ of 8 bytes of BAR2
 *   write4     REGION_WRITE of 4 bytes to BAR0's SCRATCH0 register
 *   write4k    REGION_WRITE of 4 KiB to BAR2
 *   rt65       65 REGION_WRITEs of 4 bytes, each waiting for its reply (one op = 65)
 *   posted65   64 posted REGION_WRITEs (No_reply) then one REGION_READ (one op = 65)
 *   multi64    one REGION_WRITE_MULTI of 64 writes of 4 bytes (one op = 64 writes)
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "wire.h"

#define REG_SCRATCH0 0x010
#define REGION_BAR0  0
#define REGION_BAR2  2

static uint16_t next_id;

static uint64_t now_ns(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
}

static void die(const char *what)
{
    fprintf(stderr, "bench_io: %s: %s\n", what, errno != 0 ? strerror(errno) : "protocol error");
    exit(1);
}

static void send_all(int fd, const void *buffer, size_t length)
{
    if (send(fd, buffer, length, MSG_NOSIGNAL) != (ssize_t)length)
        die("send");
}

/* Receives one reply into `buffer` (header included); dies on an error reply. */
static void receive_reply(int fd, uint8_t *buffer, size_t capacity)
{
    struct vu_header header;
    size_t length;

    if (recv(fd, buffer, VU_HEADER_SIZE, MSG_WAITALL) != VU_HEADER_SIZE)
        die("receive header");
    memcpy(&header, buffer, sizeof(header));
    if (header.message_size < VU_HEADER_SIZE || header.message_size > capacity)
        die("reply size");
    length = header.message_size - VU_HEADER_SIZE;
    if (length > 0 && recv(fd, buffer + VU_HEADER_SIZE, length, MSG_WAITALL) != (ssize_t)length)
        die("receive body");
    if (header.flags & VU_FLAGS_ERROR) {
        errno = (int)header.error;
        die("error reply");
    }
}

static size_t build_access(uint8_t *message, uint16_t command, uint32_t flags, uint32_t region,
                           uint64_t offset, uint32_t count, bool with_data)
{
    struct vu_region_access access = {.offset = offset, .region = region, .count = count};
    size_t size = VU_HEADER_SIZE + sizeof(access) + (with_data ? count : 0);

    vu_wire_encode_header(message, next_id++, command, (uint32_t)size, flags, 0);
    memcpy(message + VU_HEADER_SIZE, &access, sizeof(access));
    return size;
}

static uint8_t request[VU_HEADER_SIZE + 64 + 65536];
static uint8_t answer[VU_HEADER_SIZE + 64 + 65536];

static void negotiate(int fd)
{
    static const char json[] = "{\"capabilities\":{\"max_msg_fds\":16,"
                               "\"max_data_xfer_size\":1048576,\"write_multiple\":true}}";
    struct vu_version version = {.major = VU_VERSION_MAJOR, .minor = VU_VERSION_MINOR};
    size_t size = VU_HEADER_SIZE + sizeof(version) + sizeof(json);

    vu_wire_encode_header(request, next_id++, VU_COMMAND_VERSION, (uint32_t)size,
                          VU_FLAGS_TYPE_COMMAND, 0);
    memcpy(request + VU_HEADER_SIZE, &version, sizeof(version));
    memcpy(request + VU_HEADER_SIZE + sizeof(version), json, sizeof(json));
    send_all(fd, request, size);
    receive_reply(fd, answer, sizeof(answer));
}

enum bench_case { READ8, WRITE4, WRITE4K, RT65, POSTED65, MULTI64 };

static void one_operation(int fd, enum bench_case which)
{
    size_t size;

    switch (which) {
    case READ8:
        size = build_access(request, VU_COMMAND_REGION_READ, 0, REGION_BAR2, 0, 8, false);
        send_all(fd, request, size);
        receive_reply(fd, answer, sizeof(answer));
        break;
    case WRITE4:
        size =
            build_access(request, VU_COMMAND_REGION_WRITE, 0, REGION_BAR0, REG_SCRATCH0, 4, true);
        send_all(fd, request, size);
        receive_reply(fd, answer, sizeof(answer));
        break;
    case WRITE4K:
        size = build_access(request, VU_COMMAND_REGION_WRITE, 0, REGION_BAR2, 0, 4096, true);
        send_all(fd, request, size);
        receive_reply(fd, answer, sizeof(answer));
        break;
    case RT65:
        for (int i = 0; i < 65; i++)
            one_operation(fd, WRITE4);
        break;
    case POSTED65:
        for (int i = 0; i < 64; i++) {
            size = build_access(request, VU_COMMAND_REGION_WRITE, VU_FLAGS_NO_REPLY, REGION_BAR0,
                                REG_SCRATCH0, 4, true);
            send_all(fd, request, size);
        }
        size =
            build_access(request, VU_COMMAND_REGION_READ, 0, REGION_BAR0, REG_SCRATCH0, 4, false);
        send_all(fd, request, size);
        receive_reply(fd, answer, sizeof(answer));
        break;
    case MULTI64: {
        uint64_t count = 64;
        size = VU_HEADER_SIZE + sizeof(count) + count * sizeof(struct vu_write_multi_entry);
        vu_wire_encode_header(request, next_id++, VU_COMMAND_REGION_WRITE_MULTI, (uint32_t)size, 0,
                              0);
        memcpy(request + VU_HEADER_SIZE, &count, sizeof(count));
        for (uint64_t i = 0; i < count; i++) {
            struct vu_write_multi_entry entry = {
                .offset = REG_SCRATCH0, .region = REGION_BAR0, .count = 4, .data = {1, 2, 3, 4}};
            memcpy(request + VU_HEADER_SIZE + sizeof(count) + i * sizeof(entry), &entry,
                   sizeof(entry));
        }
        send_all(fd, request, size);
        receive_reply(fd, answer, sizeof(answer));
        break;
    }
    }
}

static int compare_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void run_case(int fd, const char *name, enum bench_case which, unsigned operations)
{
    uint64_t *latencies = malloc(operations * sizeof(*latencies));
    uint64_t start, end;

    if (latencies == NULL)
        die("malloc");
    for (unsigned i = 0; i < operations / 10 + 1; i++) /* warm up */
        one_operation(fd, which);
    start = now_ns();
    for (unsigned i = 0; i < operations; i++) {
        uint64_t before = now_ns();
        one_operation(fd, which);
        latencies[i] = now_ns() - before;
    }
    end = now_ns();
    qsort(latencies, operations, sizeof(*latencies), compare_u64);
    printf("%s %.0f %.2f\n", name, operations / ((double)(end - start) / 1e9),
           (double)latencies[operations / 2] / 1e3);
    fflush(stdout);
    free(latencies);
}

static const struct {
    const char *name;
    enum bench_case which;
    unsigned divisor; /* requests per operation, near enough */
} cases[] = {
    {"read8", READ8, 1}, {"write4", WRITE4, 1},      {"write4k", WRITE4K, 1},
    {"rt65", RT65, 65},  {"posted65", POSTED65, 65}, {"multi64", MULTI64, 16},
};

int main(int argc, char **argv)
{
    struct sockaddr_un address = {.sun_family = AF_UNIX};
    unsigned requests;
    int fd;

    if (argc < 3 || argc > 4 || strlen(argv[1]) >= sizeof(address.sun_path)) {
        fprintf(stderr, "usage: bench_io SOCKET_PATH REQUESTS [CASE]\n");
        return 2;
    }
    requests = (unsigned)strtoul(argv[2], NULL, 0);
    if (requests < 100)
        requests = 100;
    strcpy(address.sun_path, argv[1]);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&address, sizeof(address)) < 0)
        die("connect");
    negotiate(fd);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        if (argc < 4 || strcmp(argv[3], cases[i].name) == 0)
            run_case(fd, cases[i].name, cases[i].which, requests / cases[i].divisor);
    close(fd);
    return 0;
}
