/*
 * Protocol benchmark: one testdev device served from a worker-style thread, driven by the
 * in-tree client over a real UNIX socket. Reports round trips per second and latency for
 * the hot paths (BAR0 register reads and writes, posted writes, config space reads) and
 * the throughput of DMA through mapped memory and through DMA_READ messages.
 *
 * Usage: bench_protocol [PLUGIN.so] [SECONDS per case, default 2] [DMA CHUNK SIZE]
 *
 * The DMA chunk size bounds the data of each DMA_READ/DMA_WRITE message (default 64 KiB,
 * VU_DMA_CHUNK_SIZE_DEFAULT); giving 1048576 measures what the bound costs.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "client.h"
#include "device.h"
#include "endpoint.h"
#include "event_loop.h"
#include "plugin_loader.h"
#include "session.h"

/* testdev registers (vfio-userd-testdev(7)). */
#define REG_SCRATCH0           0x010
#define REG_DMA_SOURCE         0x080
#define REG_DMA_DESTINATION    0x088
#define REG_DMA_LENGTH         0x090
#define REG_DMA_OPERATION      0x098
#define REG_DMA_CONTROL        0x09c
#define REG_DMA_STATUS         0x0a0
#define DMA_OPERATION_FILL     1u
#define DMA_OPERATION_CHECKSUM 2u
#define DMA_STATUS_MASK        0xfu
#define DMA_STATUS_BUSY        1u
#define DMA_STATUS_DONE        2u

struct server {
    pthread_t thread;
    struct vu_loop *loop;
    int stop_fd;
    const struct vfio_userd_plugin *plugin;
    uint32_t dma_chunk_size;
    char path[128];
    int ready; /* 1 serving, <0 failed */
    pthread_mutex_t lock;
    pthread_cond_t changed;
};

static int on_stop(sd_event_source *source, int fd, uint32_t revents, void *userdata)
{
    return sd_event_exit(userdata, 0);
}

static void *serve(void *argument)
{
    struct server *server = argument;
    struct vfio_userd_error error = {0};
    struct vu_device *device = NULL;
    struct vu_endpoint *endpoint = NULL;
    json_t *params = json_pack("{s:s}", "ram_size", "16M");
    int fd = -1, ret;

    ret = vu_loop_new(&server->loop);
    if (ret >= 0)
        ret = sd_event_add_io(vu_loop_event(server->loop), NULL, server->stop_fd, EPOLLIN, on_stop,
                              vu_loop_event(server->loop));
    if (ret >= 0)
        ret = vu_device_create(server->plugin, "bench", params, &device, &error);
    if (ret >= 0)
        ret = vu_socket_listen(server->path, NULL, &fd);
    if (ret >= 0)
        ret = vu_endpoint_new(device, server->loop, fd, &endpoint);
    if (ret >= 0)
        ret = vu_endpoint_set_dma_chunk_size(endpoint, server->dma_chunk_size);
    json_decref(params);
    pthread_mutex_lock(&server->lock);
    server->ready = ret < 0 ? ret : 1;
    pthread_cond_broadcast(&server->changed);
    pthread_mutex_unlock(&server->lock);
    if (ret >= 0)
        vu_loop_run(server->loop);
    vu_endpoint_free(endpoint);
    vu_device_destroy(device);
    vu_loop_unref(server->loop);
    return NULL;
}

static double now_seconds(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)now.tv_sec + (double)now.tv_nsec / 1e9;
}

typedef int (*operation_fn)(struct vu_client *client, void *context);

static int read_register(struct vu_client *client, void *context)
{
    uint32_t value;
    return vu_client_region_read(client, 0, REG_SCRATCH0, &value, 4);
}

static int write_register(struct vu_client *client, void *context)
{
    uint32_t value = 0x1234;
    return vu_client_region_write(client, 0, REG_SCRATCH0, &value, 4);
}

static int read_config(struct vu_client *client, void *context)
{
    uint8_t config[256];
    return vu_client_region_read(client, VFIO_USERD_REGION_CONFIG, 0, config, 256);
}

/* 64 posted writes then one read: what a guest's burst of MMIO stores costs. */
static int posted_burst(struct vu_client *client, void *context)
{
    uint32_t value = 7;
    for (int i = 0; i < 64; i++) {
        int ret = vu_client_region_write_posted(client, 0, REG_SCRATCH0, &value, 4);
        if (ret < 0)
            return ret;
    }
    return vu_client_region_read(client, 0, REG_SCRATCH0, &value, 4);
}

/* What the DMA is measured against: memcpy of 1 MiB between two buffers of this process. */
static int copy_memory(struct vu_client *client, void *context)
{
    static uint8_t source[1u << 20], destination[1u << 20];

    memcpy(destination, source, sizeof(destination));
    __asm__ volatile("" : : "r"(destination) : "memory");
    return 0;
}

struct dma_context {
    uint64_t address;
    uint32_t length;
    uint32_t operation;
};

static int write64(struct vu_client *client, uint64_t offset, uint64_t value)
{
    return vu_client_region_write(client, 0, offset, &value, 8);
}

/* One DMA operation of `length` bytes by the device's engine, to completion. */
static int dma_operation(struct vu_client *client, void *context)
{
    struct dma_context *dma = context;
    uint32_t value;
    int ret;

    if ((ret = write64(client, REG_DMA_SOURCE, dma->address)) < 0 ||
        (ret = write64(client, REG_DMA_DESTINATION, dma->address)) < 0)
        return ret;
    value = dma->length;
    if ((ret = vu_client_region_write(client, 0, REG_DMA_LENGTH, &value, 4)) < 0)
        return ret;
    value = dma->operation;
    if ((ret = vu_client_region_write(client, 0, REG_DMA_OPERATION, &value, 4)) < 0)
        return ret;
    value = 1; /* GO */
    if ((ret = vu_client_region_write(client, 0, REG_DMA_CONTROL, &value, 4)) < 0)
        return ret;
    for (;;) {
        if ((ret = vu_client_region_read(client, 0, REG_DMA_STATUS, &value, 4)) < 0)
            return ret;
        if ((value & DMA_STATUS_MASK) == DMA_STATUS_DONE)
            return 0;
        if ((value & DMA_STATUS_MASK) != DMA_STATUS_BUSY)
            return -EIO;
        if ((ret = vu_client_serve(client, 1)) < 0)
            return ret;
    }
}

/* The MiB/s of the last case that moved bytes, and of memcpy, to compare the DMA with. */
static double last_mib_per_second, last_operations_per_second, memcpy_mib_per_second;

static void run_case(const char *name, struct vu_client *client, operation_fn operation,
                     void *context, double seconds, double bytes_per_operation)
{
    double start = now_seconds(), elapsed;
    unsigned long operations = 0;

    do {
        for (int i = 0; i < 64; i++) {
            if (operation(client, context) < 0) {
                printf("%-34s failed\n", name);
                return;
            }
            operations++;
        }
        elapsed = now_seconds() - start;
    } while (elapsed < seconds);
    last_mib_per_second = operations * bytes_per_operation / elapsed / (1024 * 1024);
    last_operations_per_second = operations / elapsed;
    if (bytes_per_operation > 0 && memcpy_mib_per_second > 0)
        printf("%-34s %10.0f op/s %8.2f us/op %9.1f MiB/s %5.2f x memcpy\n", name,
               operations / elapsed, elapsed / operations * 1e6, last_mib_per_second,
               last_mib_per_second / memcpy_mib_per_second);
    else if (bytes_per_operation > 0)
        printf("%-34s %10.0f op/s %8.2f us/op %9.1f MiB/s\n", name, operations / elapsed,
               elapsed / operations * 1e6, last_mib_per_second);
    else
        printf("%-34s %10.0f op/s %8.2f us/op\n", name, operations / elapsed,
               elapsed / operations * 1e6);
}

int main(int argc, char **argv)
{
    const char *plugin_path = argc > 1 ? argv[1] : "build/plain/plugins/testdev.so";
    double seconds = argc > 2 ? atof(argv[2]) : 2.0;
    struct server server = {.lock = PTHREAD_MUTEX_INITIALIZER,
                            .changed = PTHREAD_COND_INITIALIZER,
                            .dma_chunk_size = VU_DMA_CHUNK_SIZE_DEFAULT};
    struct vu_plugin_module module;
    struct vu_client *client = NULL;
    char message[256], directory[] = "/tmp/vfio-userd-bench.XXXXXX";
    const size_t memory_size = 1u << 20;
    uint8_t *message_memory;
    struct rusage usage;
    uint16_t command;
    int memory_fd;

    if (vu_plugin_load(plugin_path, &module, message, sizeof(message)) < 0) {
        fprintf(stderr, "%s: %s\n", plugin_path, message);
        return 1;
    }
    if (argc > 3)
        server.dma_chunk_size = (uint32_t)strtoul(argv[3], NULL, 0);
    if (mkdtemp(directory) == NULL)
        return 1;
    snprintf(server.path, sizeof(server.path), "%s/bench.sock", directory);
    server.plugin = module.plugin;
    server.stop_fd = eventfd(0, EFD_CLOEXEC);
    pthread_create(&server.thread, NULL, serve, &server);
    pthread_mutex_lock(&server.lock);
    while (server.ready == 0)
        pthread_cond_wait(&server.changed, &server.lock);
    pthread_mutex_unlock(&server.lock);
    if (server.ready < 0 || vu_client_connect(server.path, NULL, &client) < 0) {
        fprintf(stderr, "cannot start the device\n");
        return 1;
    }

    /* Bus master on, so the DMA engine runs. */
    command = 0x0006;
    vu_client_region_write(client, VFIO_USERD_REGION_CONFIG, 0x04, &command, 2);
    memory_fd = memfd_create("bench-guest", MFD_CLOEXEC);
    if (memory_fd < 0 || ftruncate(memory_fd, (off_t)memory_size) < 0 ||
        vu_client_dma_map(client, 0x100000000ull, memory_size,
                          VU_DMA_FLAG_READABLE | VU_DMA_FLAG_WRITABLE, memory_fd, 0) < 0)
        return 1;
    message_memory = calloc(1, memory_size);
    if (message_memory == NULL ||
        vu_client_dma_map_memory(client, 0x200000000ull, memory_size,
                                 VU_DMA_FLAG_READABLE | VU_DMA_FLAG_WRITABLE, message_memory) < 0)
        return 1;

    printf("vfio-userd protocol benchmark (%s, %.1f s per case, DMA messages of %u KiB)\n",
           plugin_path, seconds, server.dma_chunk_size / 1024);
    run_case("REGION_READ 4 B (BAR0 register)", client, read_register, NULL, seconds, 0);
    run_case("REGION_WRITE 4 B (BAR0 register)", client, write_register, NULL, seconds, 0);
    run_case("REGION_READ 256 B (config space)", client, read_config, NULL, seconds, 0);
    run_case("64 posted writes + 1 read", client, posted_burst, NULL, seconds, 0);
    run_case("memcpy 1 MiB (the reference)", client, copy_memory, NULL, seconds, 1u << 20);
    memcpy_mib_per_second = last_mib_per_second;
    const struct {
        const char *name;
        struct dma_context dma;
    } dma_cases[] = {
        {"DMA fill 1 MiB, mapped fd", {0x100000000ull, 1u << 20, DMA_OPERATION_FILL}},
        {"DMA fill 1 MiB, DMA_WRITE msgs", {0x200000000ull, 1u << 20, DMA_OPERATION_FILL}},
        {"DMA CRC-32 1 MiB, mapped fd", {0x100000000ull, 1u << 20, DMA_OPERATION_CHECKSUM}},
        {"DMA CRC-32 1 MiB, DMA_READ msgs", {0x200000000ull, 1u << 20, DMA_OPERATION_CHECKSUM}},
    };
    for (size_t i = 0; i < sizeof(dma_cases) / sizeof(dma_cases[0]); i++) {
        struct dma_context dma = dma_cases[i].dma, small = dma;
        double whole, overhead;

        /* An operation is five register writes and a status read besides the transfer: over
         * mapped memory, the same operation on 4 bytes measures them, and the engine's own
         * rate is what is left. (Over messages the client's polling blurs it.) */
        small.length = 4;
        overhead = 0;
        if (dma.address == 0x100000000ull) {
            run_case("  the same on 4 bytes", client, dma_operation, &small, seconds, 0);
            overhead = 1.0 / (last_operations_per_second);
        }
        run_case(dma_cases[i].name, client, dma_operation, &dma, seconds, dma.length);
        whole = (double)dma.length / (last_mib_per_second * 1024 * 1024);
        if (overhead > 0 && whole > overhead)
            printf("%-34s %35.1f MiB/s %5.2f x memcpy\n", "  the transfer alone",
                   dma.length / (whole - overhead) / (1024 * 1024),
                   dma.length / (whole - overhead) / (1024 * 1024) / memcpy_mib_per_second);
    }
    getrusage(RUSAGE_SELF, &usage);
    printf("peak RSS of the whole process (client and server): %ld KiB\n", usage.ru_maxrss);

    vu_client_close(client);
    close(memory_fd);
    free(message_memory);
    if (write(server.stop_fd, &(uint64_t){1}, 8) != 8)
        return 1;
    pthread_join(server.thread, NULL);
    close(server.stop_fd);
    unlink(server.path);
    rmdir(directory);
    vu_plugin_unload(&module);
    return 0;
}
