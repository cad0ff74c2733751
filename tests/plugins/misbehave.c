/*
 * misbehave: a test-only plugin that goes wrong on demand, for the process-isolation tests
 * (tests/integration/test_isolation.c). Built into BUILD/tests/plugins/misbehave.so and
 * never installed.
 *
 * BAR0, 4 KiB, trapped; 32-bit little-endian registers:
 *   0x00 TRIGGER   write: do what `behavior` says (any value, any width)
 *   0x04 MAGIC     read: MISBEHAVE_MAGIC, to show the device answers
 *   0x08 ESCAPED   read: one bit per escape attempt that SUCCEEDED (MISBEHAVE_ESCAPE_*)
 *   0x0c ATTEMPTED read: one bit per escape attempt made
 *   0x10 UID       read: getuid() of the process the plugin runs in
 *   0x14 PID       read: getpid() of that process
 *   0x40 + 4 * N   read: the errno attempt N failed with (0: it succeeded or was not made)
 *
 * Parameters:
 *   behavior: crash | hang | leak | escape | garble | none (default none)
 *     crash   a write through a NULL pointer;
 *     hang    blocks in the callback for good (the supervisor's SIGKILL ends it);
 *     leak    allocates and touches 1 MiB blocks until malloc fails, then abort()s;
 *     escape  tries what a sandboxed device host must not be able to do;
 *     garble  on a device reset (not a write), sends its device host's daemon a message that
 *             is not JSON through the host's control channel, before the host's own answer;
 *     none    nothing.
 *   attempts: safe | all (default safe). Only with `all` does escape try ptrace, unshare,
 *     mount and setuid, which would change the daemon itself in thread isolation; `safe`
 *     ones only open, create (and remove), signal with 0 or close again.
 *
 * The test keeps its own copy of the register layout, so the two cannot drift silently.
 */
#include <errno.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <unistd.h>
#include <linux/if_ether.h>

#include <vfio-userd/plugin.h>

#define MISBEHAVE_MAGIC 0x4d495342u /* "MISB" */

enum misbehave_register {
    MISBEHAVE_TRIGGER = 0x00,
    MISBEHAVE_MAGIC_REG = 0x04,
    MISBEHAVE_ESCAPED = 0x08,
    MISBEHAVE_ATTEMPTED = 0x0c,
    MISBEHAVE_UID = 0x10,
    MISBEHAVE_PID = 0x14,
    /* With a `file` parameter, what open_file() gave in create(): */
    MISBEHAVE_FILE_ERRNO = 0x18,    /* 0, or the errno of opening `file` read-write */
    MISBEHAVE_FILE_WORD = 0x1c,     /* the file's first four bytes */
    MISBEHAVE_UNNAMED_ERRNO = 0x20, /* the errno of opening /etc/passwd, which no parameter names */
    MISBEHAVE_ERRNO_BASE = 0x40,
    MISBEHAVE_REGISTERS_END = 0x80, /* reads past this return zeros */
};

/* Escape attempts, by bit number in ESCAPED and ATTEMPTED. */
enum misbehave_escape {
    MISBEHAVE_ESCAPE_SHADOW,      /* open("/etc/shadow", O_RDONLY) (safe) */
    MISBEHAVE_ESCAPE_ETC_WRITE,   /* create /etc/vfio-userd-escape-test (safe) */
    MISBEHAVE_ESCAPE_KILL_INIT,   /* kill(1, 0) (safe) */
    MISBEHAVE_ESCAPE_KILL_PARENT, /* kill(getppid(), 0): the daemon, in a device host (safe) */
    MISBEHAVE_ESCAPE_PACKET,      /* socket(AF_PACKET, SOCK_RAW) (safe) */
    MISBEHAVE_ESCAPE_PTRACE,      /* ptrace(PTRACE_TRACEME) */
    MISBEHAVE_ESCAPE_UNSHARE,     /* unshare(CLONE_NEWUSER) */
    MISBEHAVE_ESCAPE_MOUNT,       /* mount("none", "/mnt", "tmpfs") */
    MISBEHAVE_ESCAPE_SETUID,      /* setuid(0) from another account */
    MISBEHAVE_ESCAPE_COUNT,
};
_Static_assert(MISBEHAVE_ERRNO_BASE + 4 * MISBEHAVE_ESCAPE_COUNT <= MISBEHAVE_REGISTERS_END,
               "the errno registers fit");

#define MISBEHAVE_ESCAPE_FILE "/etc/vfio-userd-escape-test"
#define MISBEHAVE_LEAK_BLOCK  (1u << 20)
/* Without a memory limit the leak stops here, so a run without one cannot take the machine. */
#define MISBEHAVE_LEAK_CAP_MIB 2048u

enum misbehave_behavior {
    BEHAVE_NONE,
    BEHAVE_CRASH,
    BEHAVE_HANG,
    BEHAVE_LEAK,
    BEHAVE_ESCAPE,
    BEHAVE_GARBLE
};

/* Where a device host keeps its control channel (CONTROL_CHANNEL_FD in host/control.h). */
#define MISBEHAVE_CONTROL_CHANNEL_FD 4

struct misbehave {
    struct vfio_userd_device *device;
    enum misbehave_behavior behavior;
    bool all_attempts;
    uint32_t escaped;
    uint32_t attempted;
    int errors[MISBEHAVE_ESCAPE_COUNT];
    void *leaked; /* the leak's blocks, a list through their first word: per device */
    int file_errno;
    uint32_t file_word;
    int unnamed_errno;
};

/* No sanitizer check: the point is a real SIGSEGV, not a sanitizer's report. The pointer is
 * volatile so that the compiler can neither drop the store nor turn it into a trap. */
__attribute__((no_sanitize("address", "undefined"))) static void crash(void)
{
    volatile uint32_t *volatile null_pointer = NULL;

    *null_pointer = 0xdeadbeef;
}

static void __attribute__((noreturn)) hang(void)
{
    for (;;)
        pause();
}

static void __attribute__((noreturn)) leak(struct misbehave *device)
{
    unsigned mib = 0;

    for (;;) {
        void **block = malloc(MISBEHAVE_LEAK_BLOCK);
        if (block == NULL)
            break;
        memset(block, 0xa5, MISBEHAVE_LEAK_BLOCK); /* touched: resident, not just reserved */
        *block = device->leaked;
        device->leaked = block;
        if (++mib >= MISBEHAVE_LEAK_CAP_MIB) {
            vfio_userd_log(device->device, VFIO_USERD_LOG_ERR,
                           "misbehave: leaked %u MiB without an allocation failing", mib);
            abort();
        }
    }
    vfio_userd_log(device->device, VFIO_USERD_LOG_ERR, "misbehave: malloc failed after %u MiB",
                   mib);
    abort();
}

/* Records attempt `which`: `succeeded`, else failed with errno. */
static void record(struct misbehave *device, enum misbehave_escape which, bool succeeded)
{
    device->attempted |= 1u << which;
    device->errors[which] = succeeded ? 0 : errno;
    if (succeeded)
        device->escaped |= 1u << which;
}

static void escape(struct misbehave *device)
{
    uid_t uid = getuid();
    int fd;

    fd = open("/etc/shadow", O_RDONLY | O_CLOEXEC);
    record(device, MISBEHAVE_ESCAPE_SHADOW, fd >= 0);
    if (fd >= 0)
        close(fd);
    fd = open(MISBEHAVE_ESCAPE_FILE, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
    record(device, MISBEHAVE_ESCAPE_ETC_WRITE, fd >= 0);
    if (fd >= 0) {
        close(fd);
        unlink(MISBEHAVE_ESCAPE_FILE);
    }
    record(device, MISBEHAVE_ESCAPE_KILL_INIT, kill(1, 0) == 0);
    record(device, MISBEHAVE_ESCAPE_KILL_PARENT, kill(getppid(), 0) == 0);
    fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_P_ALL));
    record(device, MISBEHAVE_ESCAPE_PACKET, fd >= 0);
    if (fd >= 0)
        close(fd);
    if (!device->all_attempts)
        return;

    /* These change the process they run in: a device host only (attempts: all). */
    record(device, MISBEHAVE_ESCAPE_PTRACE, ptrace(PTRACE_TRACEME, 0, NULL, NULL) == 0);
    record(device, MISBEHAVE_ESCAPE_UNSHARE, unshare(CLONE_NEWUSER) == 0);
    if (mount("none", "/mnt", "tmpfs", 0, NULL) == 0) {
        record(device, MISBEHAVE_ESCAPE_MOUNT, true);
        umount2("/mnt", MNT_DETACH);
    } else {
        record(device, MISBEHAVE_ESCAPE_MOUNT, false);
    }
    /* Getting uid 0 back counts, not a setuid(0) that changes nothing. */
    if (setuid(0) == 0 && uid != 0 && getuid() == 0) {
        record(device, MISBEHAVE_ESCAPE_SETUID, true);
    } else {
        if (uid == 0)
            errno = 0; /* already root: nothing to gain, nothing refused */
        record(device, MISBEHAVE_ESCAPE_SETUID, false);
    }
}

static uint32_t read_register(const struct misbehave *device, uint64_t offset)
{
    if (offset >= MISBEHAVE_ERRNO_BASE &&
        offset < MISBEHAVE_ERRNO_BASE + 4 * MISBEHAVE_ESCAPE_COUNT)
        return (uint32_t)device->errors[(offset - MISBEHAVE_ERRNO_BASE) / 4];
    switch (offset) {
    case MISBEHAVE_MAGIC_REG:
        return MISBEHAVE_MAGIC;
    case MISBEHAVE_ESCAPED:
        return device->escaped;
    case MISBEHAVE_ATTEMPTED:
        return device->attempted;
    case MISBEHAVE_UID:
        return (uint32_t)getuid();
    case MISBEHAVE_PID:
        return (uint32_t)getpid();
    case MISBEHAVE_FILE_ERRNO:
        return (uint32_t)device->file_errno;
    case MISBEHAVE_FILE_WORD:
        return device->file_word;
    case MISBEHAVE_UNNAMED_ERRNO:
        return (uint32_t)device->unnamed_errno;
    }
    return 0;
}

static int misbehave_access(void *instance, uint32_t region, uint64_t offset, void *data,
                            uint32_t count, bool is_write)
{
    struct misbehave *device = instance;
    uint8_t *bytes = data;

    if (!is_write) {
        /* Byte by byte, so that any width at any offset reads the little-endian layout. */
        for (uint32_t i = 0; i < count; i++) {
            uint64_t at = offset + i;
            uint32_t value = at < MISBEHAVE_REGISTERS_END ? read_register(device, at & ~3ull) : 0;
            bytes[i] = (uint8_t)(value >> (8 * (at & 3)));
        }
        return 0;
    }
    if (offset != MISBEHAVE_TRIGGER)
        return 0;
    switch (device->behavior) {
    case BEHAVE_CRASH:
        crash();
        break;
    case BEHAVE_HANG:
        hang();
    case BEHAVE_LEAK:
        leak(device);
    case BEHAVE_ESCAPE:
        escape(device);
        break;
    case BEHAVE_GARBLE:
    case BEHAVE_NONE:
        break;
    }
    return 0;
}

/* garble: a message the daemon cannot parse, while it waits for the reset's answer. Only
 * into a device host's channel, a SEQPACKET socket: in a daemon's worker, the descriptor of
 * that number is something else, and is left alone. */
static int misbehave_reset(void *instance)
{
    struct misbehave *device = instance;
    int type = 0;
    socklen_t length = sizeof(type);

    if (device->behavior == BEHAVE_GARBLE &&
        getsockopt(MISBEHAVE_CONTROL_CHANNEL_FD, SOL_SOCKET, SO_TYPE, &type, &length) == 0 &&
        type == SOCK_SEQPACKET && write(MISBEHAVE_CONTROL_CHANNEL_FD, "not json", 8) < 0)
        return -errno;
    return 0;
}

/*
 * open_file() (ABI 1.1): the named file opens in both isolation modes, read-write even from a
 * sandbox that could not open it itself; a file no parameter names is refused.
 */
static void open_files(struct misbehave *device, const struct vfio_userd_host *host,
                       const char *path)
{
    int fd;

    if (!VFIO_USERD_HOST_HAS(host, open_file)) {
        device->file_errno = ENOSYS;
        return;
    }
    fd = host->open_file(device->device, path, O_RDWR, 0);
    if (fd < 0) {
        device->file_errno = -fd;
    } else {
        if (pread(fd, &device->file_word, sizeof(device->file_word), 0) < 0)
            device->file_errno = errno;
        close(fd);
    }
    fd = host->open_file(device->device, "/etc/passwd", O_RDONLY, 0);
    device->unnamed_errno = fd < 0 ? -fd : 0;
    if (fd >= 0)
        close(fd);
}

static void misbehave_destroy(void *instance)
{
    free(instance); /* a leak's blocks stay leaked: it ends with abort() anyway */
}

static const struct vfio_userd_device_ops misbehave_ops = {.destroy = misbehave_destroy,
                                                           .reset = misbehave_reset};

/* `key`, a string among `names` (NULL-ended), as its index; missing: 0. */
static int parse_choice(const json_t *params, const char *key, const char *const *names,
                        const char *expected, int *choice, struct vfio_userd_error *error)
{
    const json_t *value = json_object_get(params, key);

    *choice = 0;
    if (value == NULL)
        return 0;
    for (int i = 0; json_is_string(value) && names[i] != NULL; i++) {
        if (strcmp(json_string_value(value), names[i]) == 0) {
            *choice = i;
            return 0;
        }
    }
    return vfio_userd_error_set(error, -EINVAL, key, "expected %s, found %s%s%s", expected,
                                json_is_string(value) ? "\"" : "a non-string",
                                json_is_string(value) ? json_string_value(value) : "",
                                json_is_string(value) ? "\"" : "");
}

static int misbehave_create(struct vfio_userd_device *public, const json_t *params,
                            struct vfio_userd_error *error)
{
    const struct vfio_userd_host *host = vfio_userd_host_of(public);
    static const char *const allowed[] = {"behavior", "attempts", "file", NULL};
    /* In enum misbehave_behavior's order. */
    static const char *const behaviors[] = {"none",   "crash",  "hang", "leak",
                                            "escape", "garble", NULL};
    static const char *const attempts[] = {"safe", "all", NULL};
    const struct vfio_userd_pci_identity identity = {
        .vendor_id = 0x1af4, .device_id = 0x10fd, .class_code = 0xff0000};
    const struct vfio_userd_region bar0 = {.size = 4096,
                                           .flags = VFIO_USERD_REGION_READABLE |
                                                    VFIO_USERD_REGION_WRITABLE,
                                           .access = misbehave_access};
    struct misbehave *device;
    int behavior, all, ret;

    ret = host->params_check_keys(params, allowed, error);
    if (ret == 0)
        ret = parse_choice(params, "behavior", behaviors,
                           "crash, hang, leak, escape, garble or none", &behavior, error);
    if (ret == 0)
        ret = parse_choice(params, "attempts", attempts, "safe or all", &all, error);
    if (ret < 0)
        return ret;
    device = calloc(1, sizeof(*device));
    if (device == NULL)
        return vfio_userd_error_set(error, -ENOMEM, NULL, "out of memory");
    device->device = public;
    device->behavior = (enum misbehave_behavior)behavior;
    device->all_attempts = all == 1;
    if (json_is_string(json_object_get(params, "file")))
        open_files(device, host, json_string_value(json_object_get(params, "file")));
    ret = host->set_ops(public, &misbehave_ops, device);
    if (ret < 0) {
        free(device);
        return ret;
    }
    ret = host->pci_set_identity(public, &identity);
    if (ret == 0)
        ret = host->add_region(public, VFIO_USERD_REGION_BAR0, &bar0);
    return ret;
}

VFIO_USERD_PLUGIN_DEFINE(.name = "misbehave", .version = "1.0",
                         .description = "test plugin: crashes, hangs, leaks or escapes on demand",
                         .create = misbehave_create);
