/*
 * NVMe benchmark: the in-tree client plays the NVMe driver against `vfio-userd --single nvme`
 * and measures 4 KiB random reads at a given queue depth and number of I/O queues: IOPS,
 * and the latency from doorbell to completion (p50, p99).
 *
 * Usage: bench_nvme BUILD_DIR [SECONDS per case, default 3] [DIRECTORY for the image,
 * default /var/tmp] [doorbells: only the RAM cases and the doorbell comparison |
 * onequeue [ROUNDS, default 3] [CASE...: trapped shadow polled, default all]: only one queue
 * at depths 32 and 1, see below]
 *
 * `onequeue` is the one-core figure: a RAM namespace, one I/O queue, depth 32 then 1, with the
 * device pinned to CPU 0 and the driver to CPU 1 (when there are two), for trapped doorbells,
 * trapped with shadow doorbells, and shadow doorbells with the controller polling them
 * (doorbell_poll_us). Rounds run interleaved, one case after the other, and the last lines
 * are each case's medians. Each case also prints how long the driver itself works per command
 * (from the first completion it finds in a pass to its doorbells, its polling left out), so a
 * driver that is the limit shows.
 *
 * First a RAM namespace (1 and 2 queues, depth 1 and 32), then the ways doorbells reach the
 * device on one queue (see doorbell_mode), with the device's CPU time and how many doorbell
 * writes per command reached BAR0, and its CPU at rest. Then a file-backed namespace (a
 * 256 MiB image) with io_uring, the default, and with `aio: sync`, each against `pread` of
 * the same file at the same depth (depth N: N threads each with one pread outstanding), as
 * a ratio of IOPS: once through the page cache (the image read beforehand, so it holds
 * it), once with O_DIRECT (`direct: true`, and O_DIRECT preads), where reads wait for the
 * disk.
 *
 * Guest memory is a shared memfd, so data moves through mapped memory as with QEMU's
 * memfd backend. Doorbells are posted REGION_WRITEs (No_reply), as QEMU sends MMIO writes;
 * completions are found by polling the completion queues in shared memory. One thread
 * drives every queue. Prints one line per case, and the load average before and after.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
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
#define RAM_BLOCKS ((1u << 30) / 512)
#define FILE_SIZE  (256u << 20)
#define SAMPLES    (4u << 20)

struct queue {
    uint32_t sq, cq, depth, tail, head;
    bool phase;
};

/*
 * How the driver's doorbells reach the device (vfio-userd-nvme(7), DOORBELLS): posted
 * REGION_WRITEs (trapped), the same behind shadow doorbells with EventIdx (Doorbell
 * Buffer Config, as Linux's driver does), an I/O eventfd written as KVM would write it for
 * a guest's store (ioeventfd, behind shadow doorbells, which give the values), or stores
 * into the mmap'd doorbell page of BAR0 that the device polls (mapped, with or without
 * shadow doorbells).
 */
enum doorbell_mode { DB_TRAPPED, DB_SHADOW, DB_IOEVENTFD, DB_MAPPED, DB_MAPPED_SHADOW };
static const char *const doorbell_names[] = {"trapped", "trapped+shadow", "ioeventfd+shadow",
                                             "mapped", "mapped+shadow"};
static enum doorbell_mode doorbell_mode;
#define SHADOW_OFF   0x4000u
#define EVENTIDX_OFF 0x5000u
static uint32_t *doorbell_page;                /* mapped: BAR0 + 1000h */
static int doorbell_fds[2 * (QUEUES_MAX + 1)]; /* ioeventfd: by doorbell index, or -1 */
static uint64_t bar0_doorbells;                /* doorbell writes that reached BAR0 */

static struct vu_client *client;
static uint8_t *guest;
static struct queue queues[QUEUES_MAX + 1];
static uint64_t submitted_at[QUEUES_MAX + 1][DEPTH_MAX];
static uint32_t *latencies;
static uint64_t random_state = 88172645463325252ull;
static uint64_t ns_blocks = RAM_BLOCKS;
/* onequeue: the device on CPU 0 and the driver on CPU 1 (-1: wherever the scheduler puts them). */
static int device_cpu_number = -1;

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

static bool doorbell_shadowed(void)
{
    return doorbell_mode == DB_SHADOW || doorbell_mode == DB_IOEVENTFD ||
           doorbell_mode == DB_MAPPED_SHADOW;
}

/* Doorbell `index` (2q: SQ q's tail, 2q + 1: CQ q's head) of an I/O queue becomes `value`,
 * as Linux's nvme_dbbuf_update_and_check_event() and a posted MMIO write do it. */
static void doorbell(uint32_t index, uint32_t value)
{
    if (doorbell_shadowed()) {
        uint32_t *stored = (uint32_t *)(guest + SHADOW_OFF) + index;
        uint16_t old = (uint16_t)*stored, event;
        __atomic_store_n(stored, value, __ATOMIC_RELEASE);
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        event =
            (uint16_t)__atomic_load_n((uint32_t *)(guest + EVENTIDX_OFF) + index, __ATOMIC_RELAXED);
        if ((uint16_t)((uint16_t)value - event - 1) >= (uint16_t)((uint16_t)value - old))
            return;
    }
    bar0_doorbells++;
    if ((doorbell_mode == DB_MAPPED || doorbell_mode == DB_MAPPED_SHADOW) &&
        doorbell_page != NULL) {
        __atomic_store_n(&doorbell_page[index], value, __ATOMIC_RELEASE);
    } else if (doorbell_mode == DB_IOEVENTFD && doorbell_fds[index] >= 0) {
        uint64_t one = 1;
        if (write(doorbell_fds[index], &one, sizeof(one)) != sizeof(one))
            die("eventfd write", errno);
    } else {
        reg_write(0x1000 + 4 * index, value, true);
    }
}

/* CPU time of a process, user and system, in clock ticks. */
static uint64_t process_ticks(pid_t pid)
{
    char path[64], line[1024], *p;
    unsigned long utime = 0, stime = 0;
    FILE *file;

    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    file = fopen(path, "r");
    if (file == NULL)
        return 0;
    if (fgets(line, sizeof(line), file) != NULL && (p = strrchr(line, ')')) != NULL)
        sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime, &stime);
    fclose(file);
    return utime + stime;
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

static void admin2(uint8_t opcode, uint64_t prp1, uint64_t prp2, uint32_t cdw10, uint32_t cdw11)
{
    const uint32_t cdw[6] = {cdw10, cdw11, 0, 0, 0, 0};
    uint16_t cid, status;

    put_entry(0, 1, opcode, 0, prp1, cdw);
    memcpy(guest + queues[0].sq + ((queues[0].tail + queues[0].depth - 1) % queues[0].depth) * 64 +
               32,
           &prp2, 8);
    reg_write(0x1000, queues[0].tail, false);
    while (poll_entry(0, &cid, &status) < 0)
        ;
    reg_write(0x1004, queues[0].head, false);
    if ((status & 0x7ff) != 0) {
        fprintf(stderr, "bench_nvme: admin opcode %u failed: status 0x%x\n", opcode, status);
        exit(EXIT_FAILURE);
    }
}

static void admin(uint8_t opcode, uint64_t prp1, uint32_t cdw10, uint32_t cdw11)
{
    admin2(opcode, prp1, 0, cdw10, cdw11);
}

static void submit_read(uint32_t qid, uint16_t slot)
{
    uint64_t lba = (next_random() % (ns_blocks / 8)) * 8;
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

/* IOPS of the last case, for ratios. */
static double last_iops;

static pid_t server;

/* The figures of the last case, for ratios and medians. */
static double last_p50_us, last_p99_us, last_device_cpu, last_driver_ns;

/* `device_cpu`: the device's CPU time over the case, as a share of one core (< 0: none). */
static void report(const char *label, uint32_t queue_count, uint32_t depth, uint64_t done,
                   uint64_t elapsed_ns, uint32_t *samples_ns, uint64_t samples, double device_cpu)
{
    qsort(samples_ns, samples, sizeof(*samples_ns), compare_u32);
    last_iops = (double)done / ((double)elapsed_ns / 1e9);
    last_p50_us = samples_ns[samples / 2] / 1000.0;
    last_p99_us = samples_ns[samples * 99 / 100] / 1000.0;
    last_device_cpu = device_cpu;
    printf("%-16s queues %u  depth %2u  %9.0f IOPS  p50 %7.1f us  p99 %7.1f us", label, queue_count,
           depth, last_iops, samples_ns[samples / 2] / 1000.0,
           samples_ns[samples * 99 / 100] / 1000.0);
    if (device_cpu >= 0)
        printf("  device CPU %3.0f%%  BAR0 doorbells/command %.2f  driver busy %.0f ns/command",
               device_cpu * 100, done > 0 ? (double)bar0_doorbells / (double)done : 0.0,
               last_driver_ns);
    printf("\n");
    fflush(stdout);
}

static void run_case(const char *label, uint32_t queue_count, uint32_t depth, double seconds)
{
    uint64_t start, end, done = 0, samples = 0, ticks = process_ticks(server), busy = 0;
    uint64_t passes = 0, last_done = 0, last_progress = now_ns();
    uint32_t outstanding = 0;
    bool stopping = false;

    bar0_doorbells = 0;
    for (uint32_t qid = 1; qid <= queue_count; qid++) {
        for (uint16_t slot = 0; slot < depth; slot++)
            submit_read(qid, slot);
        outstanding += depth;
        doorbell(2 * qid, queues[qid].tail);
    }
    start = now_ns();
    end = start + (uint64_t)(seconds * 1e9);
    while (!stopping || outstanding > 0) {
        for (uint32_t qid = 1; qid <= queue_count; qid++) {
            uint64_t first = 0;
            uint16_t cid, status;
            bool any = false, resubmitted = false;

            while (poll_entry(qid, &cid, &status) == 0) {
                uint64_t finished = now_ns();
                if (first == 0)
                    first = finished;
                if ((status & 0x7ff) != 0 || cid >= depth) {
                    fprintf(stderr, "bench_nvme: read failed: status 0x%x\n", status);
                    exit(EXIT_FAILURE);
                }
                if (samples < SAMPLES)
                    latencies[samples++] = (uint32_t)(finished - submitted_at[qid][cid]);
                done++;
                /* The clock read for the latency also says when to stop. */
                stopping = stopping || finished >= end;
                if (!stopping) {
                    submit_read(qid, cid);
                    resubmitted = true;
                } else {
                    outstanding--;
                }
                any = true;
            }
            if (any) {
                doorbell(2 * qid + 1, queues[qid].head);
                /* Reads put in before the clock said stop still need their doorbell. */
                if (resubmitted)
                    doorbell(2 * qid, queues[qid].tail);
                /* The driver's own work: from the first completion it found to its doorbells;
                 * the polling in between is waiting for the device. */
                busy += now_ns() - first;
            }
        }
        /* A device that stops completing ends the benchmark rather than hanging it. */
        if ((++passes & 0xfffff) == 0) {
            uint64_t t = now_ns();
            if (done == last_done && t >= last_progress + 5000000000ull)
                die("no completion for 5 seconds", ETIMEDOUT);
            if (done != last_done)
                last_progress = t;
            last_done = done;
        }
    }
    end = now_ns();
    last_driver_ns = done > 0 ? (double)busy / (double)done : 0;
    report(label, queue_count, depth, done, end - start, latencies, samples,
           (double)(process_ticks(server) - ticks) / (double)sysconf(_SC_CLK_TCK) /
               ((double)(end - start) / 1e9));
}

/* The device's CPU share over `seconds` with nothing to do: what polling costs at rest. */
static void run_idle(const char *label, double seconds)
{
    uint64_t ticks = process_ticks(server);

    usleep((useconds_t)(seconds * 1e6));
    printf("%-16s idle %.0f s: device CPU %3.1f%%\n", label, seconds,
           (double)(process_ticks(server) - ticks) / (double)sysconf(_SC_CLK_TCK) / seconds * 100);
    fflush(stdout);
}

/* --- pread of the image at depth N: N threads, one read outstanding each. --- */

struct reader {
    pthread_t thread;
    int fd;
    uint64_t end_ns, done, samples, random;
    uint32_t *latencies; /* SAMPLES / DEPTH_MAX entries */
};

static void *reader_main(void *argument)
{
    struct reader *reader = argument;
    uint8_t buffer[4096] __attribute__((aligned(4096)));

    while (now_ns() < reader->end_ns) {
        uint64_t offset, started;

        reader->random ^= reader->random << 13;
        reader->random ^= reader->random >> 7;
        reader->random ^= reader->random << 17;
        offset = (reader->random % (FILE_SIZE / 4096)) * 4096;
        started = now_ns();
        if (pread(reader->fd, buffer, sizeof(buffer), (off_t)offset) != sizeof(buffer))
            die("pread", errno);
        if (reader->samples < SAMPLES / DEPTH_MAX)
            reader->latencies[reader->samples++] = (uint32_t)(now_ns() - started);
        reader->done++;
    }
    return NULL;
}

static void run_pread(const char *path, bool direct, uint32_t depth, double seconds)
{
    static struct reader readers[DEPTH_MAX];
    uint64_t start = now_ns(), done = 0, samples = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC | (direct ? O_DIRECT : 0));

    if (fd < 0)
        die(path, errno);
    for (uint32_t i = 0; i < depth; i++) {
        readers[i] = (struct reader){.fd = fd,
                                     .end_ns = start + (uint64_t)(seconds * 1e9),
                                     .random = next_random() | 1,
                                     .latencies = latencies + i * (SAMPLES / DEPTH_MAX)};
        if (pthread_create(&readers[i].thread, NULL, reader_main, &readers[i]) != 0)
            die("pthread_create", EAGAIN);
    }
    for (uint32_t i = 0; i < depth; i++) {
        pthread_join(readers[i].thread, NULL);
        done += readers[i].done;
        /* Gather the samples at the front of the array. */
        memmove(latencies + samples, readers[i].latencies, readers[i].samples * sizeof(*latencies));
        samples += readers[i].samples;
    }
    close(fd);
    report(direct ? "pread O_DIRECT" : "pread", 1, depth, done, now_ns() - start, latencies,
           samples, -1);
}

static void print_load(const char *when)
{
    char line[128] = "?";
    FILE *file = fopen("/proc/loadavg", "r");

    if (file != NULL) {
        if (fgets(line, sizeof(line), file) == NULL)
            snprintf(line, sizeof(line), "?\n");
        fclose(file);
    }
    printf("load average %s: %s", when, line);
}

static const char *build;
static char socket_path[128];
static int guest_fd = -1;

/* Serves `params` (a NULL-ended list of --param values) with a fresh daemon and brings
 * the controller up with QUEUES_MAX I/O queues. */
static void start_server(const char *const *params)
{
    char binary[4096], plugins[4096];
    const char *argv[32];
    int argc = 0, rc;

    snprintf(socket_path, sizeof(socket_path), "/tmp/bench_nvme.%d.sock", (int)getpid());
    snprintf(binary, sizeof(binary), "%s/vfio-userd", build);
    snprintf(plugins, sizeof(plugins), "%s/plugins", build);
    argv[argc++] = binary;
    argv[argc++] = "--single";
    argv[argc++] = "nvme";
    argv[argc++] = "--socket";
    argv[argc++] = socket_path;
    argv[argc++] = "--plugin-dir";
    argv[argc++] = plugins;
    argv[argc++] = "--log-level";
    argv[argc++] = "warning";
    for (; *params != NULL && argc < 30; params++) {
        argv[argc++] = "--param";
        argv[argc++] = *params;
    }
    argv[argc] = NULL;
    server = fork();
    if (server == 0) {
        if (device_cpu_number >= 0) {
            cpu_set_t set;
            CPU_ZERO(&set);
            CPU_SET(device_cpu_number, &set);
            sched_setaffinity(0, sizeof(set), &set);
        }
        execv(binary, (char *const *)argv);
        _exit(127);
    }
    for (int i = 0; i < 100 && access(socket_path, F_OK) != 0; i++)
        usleep(50000);
    rc = vu_client_connect(socket_path, NULL, &client);
    if (rc < 0)
        die("connect", rc);
    rc = vu_client_dma_map(client, GUEST, GUEST_SIZE, VU_DMA_FLAG_READABLE | VU_DMA_FLAG_WRITABLE,
                           guest_fd, 0);
    if (rc < 0)
        die("DMA_MAP", rc);

    memset(guest, 0, 1u << 20);
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
    /* As Linux does: Doorbell Buffer Config once the queues exist. */
    if (doorbell_shadowed())
        admin2(0x7c, GUEST + SHADOW_OFF, GUEST + EVENTIDX_OFF, 0, 0);
    for (uint32_t i = 0; i < 2 * (QUEUES_MAX + 1); i++)
        doorbell_fds[i] = -1;
    if (doorbell_mode == DB_IOEVENTFD) {
        struct vu_region_io_fd *entries = NULL;
        int fds[2 * (QUEUES_MAX + 1)];
        size_t fd_count = 0;
        uint32_t count = 0;
        rc = vu_client_region_io_fds(client, 0, &entries, &count, fds, 2 * (QUEUES_MAX + 1),
                                     &fd_count);
        if (rc < 0)
            die("DEVICE_GET_REGION_IO_FDS", rc);
        for (uint32_t i = 0; i < count; i++)
            doorbell_fds[(entries[i].offset - 0x1000) / 4] = fds[entries[i].fd_index];
        free(entries);
    }
    if (doorbell_mode == DB_MAPPED || doorbell_mode == DB_MAPPED_SHADOW) {
        struct vfio_region_info *info = NULL;
        int fd = -1;
        void *page;
        rc = vu_client_region_info(client, 0, &info, &fd);
        if (rc < 0 || fd < 0)
            die("BAR0 region info (no mappable doorbells?)", rc < 0 ? rc : -ENODEV);
        page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
                    (off_t)(info->offset + 0x1000));
        if (page == MAP_FAILED)
            die("mmap of the doorbell page", errno);
        doorbell_page = page;
        free(info);
        close(fd);
    }
}

static void stop_server(void)
{
    for (uint32_t i = 0; i < 2 * (QUEUES_MAX + 1); i++) {
        if (doorbell_fds[i] >= 0)
            close(doorbell_fds[i]);
        doorbell_fds[i] = -1;
    }
    if (doorbell_page != NULL)
        munmap(doorbell_page, 4096);
    doorbell_page = NULL;
    vu_client_close(client);
    client = NULL;
    kill(server, SIGTERM);
    waitpid(server, NULL, 0);
    unlink(socket_path);
}

/* A FILE_SIZE image of random bytes, written out and then in the page cache. */
static void make_image(const char *path)
{
    static uint8_t chunk[1u << 20];
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

    if (fd < 0)
        die(path, errno);
    for (uint32_t done = 0; done < FILE_SIZE; done += sizeof(chunk)) {
        for (size_t i = 0; i < sizeof(chunk); i += 8) {
            uint64_t value = next_random();
            memcpy(chunk + i, &value, 8);
        }
        if (write(fd, chunk, sizeof(chunk)) != (ssize_t)sizeof(chunk))
            die("writing the image", errno);
    }
    if (fdatasync(fd) < 0)
        die("fdatasync", errno);
    /* Read twice: the first pass leaves readahead marks on pages, which make a later
     * RWF_NOWAIT or io_uring read of them start readahead in a kernel worker; the second
     * pass takes the marks away. Steady state, as a guest's working set would be. */
    for (int pass = 0; pass < 2; pass++)
        for (uint32_t done = 0; done < FILE_SIZE; done += sizeof(chunk))
            if (pread(fd, chunk, sizeof(chunk), done) != (ssize_t)sizeof(chunk))
                die("reading the image", errno);
    close(fd);
}

static int compare_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *values, uint32_t count)
{
    qsort(values, count, sizeof(*values), compare_double);
    return count % 2 ? values[count / 2] : (values[count / 2 - 1] + values[count / 2]) / 2;
}

/*
 * One I/O queue at depths 32 and 1 against a RAM namespace, the device on CPU 0 and the driver
 * on CPU 1: `rounds` rounds, each case once per round, then each case's medians.
 */
#define ONEQUEUE_ROUNDS_MAX 15u
static void run_onequeue(double seconds, uint32_t rounds, char **names, int name_count)
{
    static const struct {
        const char *name, *label;
        enum doorbell_mode mode;
        const char *poll;
    } cases[] = {
        {"trapped", "trapped", DB_TRAPPED, NULL},
        {"shadow", "trapped+shadow", DB_SHADOW, NULL},
        {"polled", "shadow, polled", DB_SHADOW, "doorbell_poll_us=50"},
    };
    bool chosen[sizeof(cases) / sizeof(cases[0])];
    static const uint32_t depths[] = {32, 1};
    enum { IOPS, P50, P99, DEVICE, DRIVER, FIGURES };
    static double figures[sizeof(cases) / sizeof(cases[0])][2][FIGURES][ONEQUEUE_ROUNDS_MAX];
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);

    if (rounds > ONEQUEUE_ROUNDS_MAX)
        rounds = ONEQUEUE_ROUNDS_MAX;
    if (rounds == 0)
        rounds = 1;
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        chosen[c] = name_count == 0;
        for (int n = 0; n < name_count; n++)
            chosen[c] = chosen[c] || strcmp(names[n], cases[c].name) == 0;
    }
    if (cpus >= 2) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(1, &set);
        if (sched_setaffinity(0, sizeof(set), &set) == 0)
            device_cpu_number = 0;
    }
    printf("nvme, RAM namespace, 1 queue, depths 32 and 1, 4 KiB random reads, %.0f s per case, "
           "%u rounds; device on CPU %d, driver on CPU %d\n",
           seconds, rounds, device_cpu_number, device_cpu_number >= 0 ? 1 : -1);
    for (uint32_t round = 0; round < rounds; round++) {
        for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
            if (!chosen[c])
                continue;
            const char *const params[] = {"backend=ram", "size=1G", "io_queues=2", cases[c].poll,
                                          NULL};
            doorbell_mode = cases[c].mode;
            start_server(params);
            for (size_t d = 0; d < 2; d++) {
                run_case(cases[c].label, 1, depths[d], seconds);
                figures[c][d][IOPS][round] = last_iops;
                figures[c][d][P50][round] = last_p50_us;
                figures[c][d][P99][round] = last_p99_us;
                figures[c][d][DEVICE][round] = last_device_cpu * 100;
                figures[c][d][DRIVER][round] = last_driver_ns;
            }
            stop_server();
        }
    }
    printf("medians of %u rounds:\n", rounds);
    for (size_t d = 0; d < 2; d++)
        for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++)
            if (chosen[c])
                printf("%-16s queues 1  depth %2u  %9.0f IOPS  p50 %7.1f us  p99 %7.1f us  device "
                       "CPU %3.0f%%  driver busy %.0f ns/command\n",
                       cases[c].label, depths[d], median(figures[c][d][IOPS], rounds),
                       median(figures[c][d][P50], rounds), median(figures[c][d][P99], rounds),
                       median(figures[c][d][DEVICE], rounds),
                       median(figures[c][d][DRIVER], rounds));
    doorbell_mode = DB_TRAPPED;
}

int main(int argc, char **argv)
{
    static const char *const ram[] = {"backend=ram", "size=1G", "io_queues=2", NULL};
    const char *directory = argc > 3 ? argv[3] : "/var/tmp";
    double seconds = argc > 2 ? atof(argv[2]) : 3.0;
    bool only_doorbells = argc > 4 && strcmp(argv[4], "doorbells") == 0;
    const uint32_t depths[] = {1, 32};
    char image[4096], path_param[4200];

    build = argc > 1 ? argv[1] : "build/plain";
    latencies = malloc(SAMPLES * sizeof(*latencies));
    guest_fd = memfd_create("guest", MFD_CLOEXEC);
    if (latencies == NULL || guest_fd < 0 || ftruncate(guest_fd, GUEST_SIZE) < 0)
        die("guest memory", errno);
    guest = mmap(NULL, GUEST_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, guest_fd, 0);
    if (guest == MAP_FAILED)
        die("mmap", errno);
    print_load("before");
    if (argc > 4 && strcmp(argv[4], "onequeue") == 0) {
        run_onequeue(seconds, argc > 5 ? (uint32_t)atoi(argv[5]) : 3, argv + 6,
                     argc > 6 ? argc - 6 : 0);
        print_load("after");
        return EXIT_SUCCESS;
    }

    printf("nvme, RAM namespace, 4 KiB random reads, %.0f s per case\n", seconds);
    ns_blocks = RAM_BLOCKS;
    doorbell_mode = DB_TRAPPED;
    start_server(ram);
    run_case("ram", 1, 1, seconds);
    run_case("ram", 1, 32, seconds);
    run_case("ram", 2, 1, seconds);
    run_case("ram", 2, 32, seconds);
    stop_server();

    printf("nvme, RAM namespace, 1 queue, the ways doorbells reach the device\n");
    for (int mode = DB_TRAPPED; mode <= DB_MAPPED_SHADOW; mode++) {
        const char *const params[] = {"backend=ram", "size=1G", "io_queues=2",
                                      mode == DB_IOEVENTFD ? "doorbells=ioeventfd"
                                      : mode >= DB_MAPPED  ? "doorbells=mapped"
                                                           : "doorbells=trapped",
                                      NULL};
        doorbell_mode = (enum doorbell_mode)mode;
        start_server(params);
        run_case(doorbell_names[mode], 1, 1, seconds);
        run_case(doorbell_names[mode], 1, 32, seconds);
        if (mode == DB_TRAPPED || mode == DB_MAPPED)
            run_idle(doorbell_names[mode], seconds);
        stop_server();
    }
    doorbell_mode = DB_TRAPPED;
    if (only_doorbells) {
        print_load("after");
        return EXIT_SUCCESS;
    }

    snprintf(image, sizeof(image), "%s/bench_nvme.%d.img", directory, (int)getpid());
    snprintf(path_param, sizeof(path_param), "path=%s", image);
    make_image(image);
    ns_blocks = FILE_SIZE / 512;
    for (int direct = 0; direct <= 1; direct++) {
        printf("nvme, file namespace (%u MiB%s) against pread of the file, 1 queue\n",
               FILE_SIZE >> 20, direct ? ", O_DIRECT" : ", cached");
        for (size_t d = 0; d < sizeof(depths) / sizeof(depths[0]); d++) {
            const char *const file_uring[] = {path_param, "io_queues=2",
                                              direct ? "direct=true" : NULL, NULL};
            const char *const file_sync[] = {path_param, "io_queues=2", "aio=sync",
                                             direct ? "direct=true" : NULL, NULL};
            double baseline, io_uring;

            run_pread(image, direct, depths[d], seconds);
            baseline = last_iops;
            start_server(file_uring);
            run_case("file io_uring", 1, depths[d], seconds);
            io_uring = last_iops;
            stop_server();
            start_server(file_sync);
            run_case("file aio=sync", 1, depths[d], seconds);
            stop_server();
            printf("depth %2u: file io_uring / pread %.2f, file aio=sync / pread %.2f\n", depths[d],
                   io_uring / baseline, last_iops / baseline);
        }
    }
    unlink(image);
    print_load("after");

    munmap(guest, GUEST_SIZE);
    close(guest_fd);
    free(latencies);
    return EXIT_SUCCESS;
}
