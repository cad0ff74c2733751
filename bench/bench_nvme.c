/*
 * NVMe benchmark: the in-tree client plays the NVMe driver against `vfio-userd --single nvme`
 * with a RAM namespace, and measures 4 KiB random reads at a given queue depth and number
 * of I/O queues: IOPS, and the latency from doorbell to completion (p50, p99).
 *
 * Usage: bench_nvme BUILD_DIR [SECONDS per case, default 3]
 *
 * Guest memory is a shared memfd, so data moves through mapped memory as with QEMU's
 * memfd backend. Doorbells are posted REGION_WRITEs (No_reply), as QEMU sends MMIO writes;
 * completions are found by polling the completion queues in shared memory. One thread
 * drives every queue. Prints one line per case: queues, depth, IOPS, p50 and p99 in us.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "client.h"

#define GUEST      0x100000000ull
#define GUEST_SIZE (64u << 20)
#define DEPTH_MAX  64u
#define QUEUES_MAX 2u
#define NS_BLOCKS  ((1u << 30) / 512)
#define SAMPLES    (4u << 20)

struct queue {
    uint32_t sq, cq, depth, tail, head;
    bool phase;
};

static struct vu_client *client;
static uint8_t *guest;
static struct queue queues[QUEUES_MAX + 1];
static uint64_t submitted_at[QUEUES_MAX + 1][DEPTH_MAX];
static uint32_t *latencies;
static uint64_t random_state = 88172645463325252ull;

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t next_random(void)
{
    random_state ^= random_state << 13;
    random_state ^= random_state >> 7;
    random_state ^= random_state << 17;
    return random_state;
}

static void die(const char *what, int rc)
{
    fprintf(stderr, "bench_nvme: %s: %s\n", what, strerror(rc < 0 ? -rc : rc));
    exit(EXIT_FAILURE);
}

static void reg_write(uint32_t offset, uint32_t value, bool posted)
{
    int rc = posted ? vu_client_region_write_posted(client, 0, offset, &value, 4)
                    : vu_client_region_write(client, 0, offset, &value, 4);
    if (rc < 0)
        die("register write", rc);
}

static void put_entry(uint32_t qid, uint16_t cid, uint8_t opcode, uint32_t nsid, uint64_t prp1,
                      const uint32_t cdw[6])
{
    struct queue *q = &queues[qid];
    uint8_t *entry = guest + q->sq + q->tail * 64;

    memset(entry, 0, 64);
    entry[0] = opcode;
    memcpy(entry + 2, &cid, 2);
    memcpy(entry + 4, &nsid, 4);
    memcpy(entry + 24, &prp1, 8);
    memcpy(entry + 40, cdw, 24);
    q->tail = (q->tail + 1) % q->depth;
}

/* The next completion of `qid`, or -1 when none has come; cid and status in *cid, *status. */
static int poll_entry(uint32_t qid, uint16_t *cid, uint16_t *status)
{
    struct queue *q = &queues[qid];
    uint8_t *entry = guest + q->cq + q->head * 16;
    uint16_t raw = __atomic_load_n((uint16_t *)(entry + 14), __ATOMIC_ACQUIRE);

    if ((raw & 1) != (q->phase ? 1 : 0))
        return -1;
    memcpy(cid, entry + 12, 2);
    *status = raw >> 1;
    q->head = (q->head + 1) % q->depth;
    if (q->head == 0)
        q->phase = !q->phase;
    return 0;
}

static void admin(uint8_t opcode, uint64_t prp1, uint32_t cdw10, uint32_t cdw11)
{
    const uint32_t cdw[6] = {cdw10, cdw11, 0, 0, 0, 0};
    uint16_t cid, status;

    put_entry(0, 1, opcode, 0, prp1, cdw);
    reg_write(0x1000, queues[0].tail, false);
    while (poll_entry(0, &cid, &status) < 0)
        ;
    reg_write(0x1004, queues[0].head, false);
    if ((status & 0x7ff) != 0) {
        fprintf(stderr, "bench_nvme: admin opcode %u failed: status 0x%x\n", opcode, status);
        exit(EXIT_FAILURE);
    }
}

static void submit_read(uint32_t qid, uint16_t slot)
{
    uint64_t lba = (next_random() % (NS_BLOCKS / 8)) * 8;
    uint64_t buffer = GUEST + (8u << 20) + ((qid - 1) * DEPTH_MAX + slot) * 4096ull;
    const uint32_t cdw[6] = {(uint32_t)lba, (uint32_t)(lba >> 32), 7, 0, 0, 0};

    put_entry(qid, slot, 0x02, 1, buffer, cdw);
    submitted_at[qid][slot] = now_ns();
}

static int compare_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static void run_case(uint32_t queue_count, uint32_t depth, double seconds)
{
    uint64_t start, end, done = 0, samples = 0;

    for (uint32_t qid = 1; qid <= queue_count; qid++) {
        for (uint16_t slot = 0; slot < depth; slot++)
            submit_read(qid, slot);
        reg_write(0x1000 + 8 * qid, queues[qid].tail, true);
    }
    start = now_ns();
    end = start + (uint64_t)(seconds * 1e9);
    for (;;) {
        uint64_t t = now_ns();
        bool stopping = t >= end;
        uint32_t outstanding = 0;

        for (uint32_t qid = 1; qid <= queue_count; qid++) {
            uint16_t cid, status;
            bool any = false;

            while (poll_entry(qid, &cid, &status) == 0) {
                uint64_t finished = now_ns();
                if ((status & 0x7ff) != 0 || cid >= depth) {
                    fprintf(stderr, "bench_nvme: read failed: status 0x%x\n", status);
                    exit(EXIT_FAILURE);
                }
                if (samples < SAMPLES)
                    latencies[samples++] = (uint32_t)(finished - submitted_at[qid][cid]);
                done++;
                submitted_at[qid][cid] = 0;
                if (!stopping)
                    submit_read(qid, cid);
                any = true;
            }
            if (any) {
                reg_write(0x1000 + 8 * qid + 4, queues[qid].head, true);
                if (!stopping)
                    reg_write(0x1000 + 8 * qid, queues[qid].tail, true);
            }
            for (uint32_t slot = 0; slot < depth; slot++)
                outstanding += submitted_at[qid][slot] != 0;
        }
        if (stopping && outstanding == 0)
            break;
    }
    end = now_ns();
    qsort(latencies, samples, sizeof(*latencies), compare_u32);
    printf("queues %u  depth %2u  %9.0f IOPS  p50 %7.1f us  p99 %7.1f us\n", queue_count, depth,
           (double)done / ((double)(end - start) / 1e9), latencies[samples / 2] / 1000.0,
           latencies[samples * 99 / 100] / 1000.0);
    fflush(stdout);
}

int main(int argc, char **argv)
{
    const char *build = argc > 1 ? argv[1] : "build/plain";
    double seconds = argc > 2 ? atof(argv[2]) : 3.0;
    char socket_path[128], binary[4096], plugins[4096];
    pid_t server;
    int fd, rc;

    snprintf(socket_path, sizeof(socket_path), "/tmp/bench_nvme.%d.sock", (int)getpid());
    snprintf(binary, sizeof(binary), "%s/vfio-userd", build);
    snprintf(plugins, sizeof(plugins), "%s/plugins", build);
    server = fork();
    if (server == 0) {
        execl(binary, binary, "--single", "nvme", "--socket", socket_path, "--plugin-dir", plugins,
              "--param", "backend=ram", "--param", "size=1G", "--param", "io_queues=2",
              "--log-level", "warning", (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 100 && access(socket_path, F_OK) != 0; i++)
        usleep(50000);
    rc = vu_client_connect(socket_path, NULL, &client);
    if (rc < 0)
        die("connect", rc);
    latencies = malloc(SAMPLES * sizeof(*latencies));
    fd = memfd_create("guest", MFD_CLOEXEC);
    if (latencies == NULL || fd < 0 || ftruncate(fd, GUEST_SIZE) < 0)
        die("guest memory", errno);
    guest = mmap(NULL, GUEST_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (guest == MAP_FAILED)
        die("mmap", errno);
    rc = vu_client_dma_map(client, GUEST, GUEST_SIZE, VU_DMA_FLAG_READABLE | VU_DMA_FLAG_WRITABLE,
                           fd, 0);
    if (rc < 0)
        die("DMA_MAP", rc);

    queues[0] = (struct queue){0x0000, 0x1000, 32, 0, 0, true};
    reg_write(0x24, 31u << 16 | 31u, false);
    reg_write(0x28, (uint32_t)GUEST, false);
    reg_write(0x2c, (uint32_t)(GUEST >> 32), false);
    reg_write(0x30, (uint32_t)(GUEST + 0x1000), false);
    reg_write(0x34, (uint32_t)(GUEST >> 32), false);
    reg_write(0x14, 1u | 6u << 16 | 4u << 20, false);
    for (uint32_t qid = 1; qid <= QUEUES_MAX; qid++) {
        uint32_t sq = 0x10000 * qid, cq = 0x10000 * qid + 0x8000;
        queues[qid] = (struct queue){sq, cq, DEPTH_MAX + 1, 0, 0, true};
        admin(0x05, GUEST + cq, DEPTH_MAX << 16 | qid, qid << 16 | 1); /* no interrupts */
        admin(0x01, GUEST + sq, DEPTH_MAX << 16 | qid, qid << 16 | 1);
    }
    printf("nvme, RAM namespace, 4 KiB random reads, %.0f s per case\n", seconds);
    run_case(1, 1, seconds);
    run_case(1, 32, seconds);
    run_case(2, 1, seconds);
    run_case(2, 32, seconds);

    vu_client_close(client);
    kill(server, SIGTERM);
    waitpid(server, NULL, 0);
    unlink(socket_path);
    munmap(guest, GUEST_SIZE);
    close(fd);
    free(latencies);
    return EXIT_SUCCESS;
}
