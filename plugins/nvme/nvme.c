/*
 * nvme plugin entry point: parameters, namespaces (opening and sizing their backends), the
 * device's declaration to the host, and the callbacks.
 *
 * Every file a device uses is opened here, in create(), and kept open as a descriptor: the
 * controller never opens a path afterwards, so it runs the same inside the daemon and in a
 * sandboxed device host. Nothing is shared between devices.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <linux/fs.h>

#include "nvme.h"

#define NVME_VENDOR_ID        0x1234u
#define NVME_DEVICE_ID        0x6e76u   /* "nv" */
#define NVME_CLASS_CODE       0x010802u /* mass storage, NVM, NVM Express */
#define NVME_DEFAULT_QUEUES   4u
#define NVME_DEFAULT_DEPTH    1024u
#define NVME_MAX_DEPTH        4096u
#define NVME_DEFAULT_MODEL    "vfio-userd NVMe"
#define NVME_RAM_MAX          (1ull << 40)
#define NVME_TIMEOUT_HALF_SEC 20u /* CAP.TO: 10 s to become ready, which we do at once */

static const char *const nvme_param_keys[] = {
    "namespaces", "path",  "size",      "block_size",  "read_only", "backend",   "direct",
    "serial",     "model", "io_queues", "queue_depth", "aio",       "doorbells", "doorbell_poll_us",
    NULL,
};
static const char *const nvme_namespace_keys[] = {
    "path", "size", "block_size", "read_only", "backend", "direct", NULL,
};

/* Prefixes the field a host helper named with where the namespace sits in params. */
static int nvme_prefix_field(struct vfio_userd_error *error, const char *prefix, int rc)
{
    char field[sizeof(error->field)];

    if (error != NULL && prefix[0] != '\0') {
        snprintf(field, sizeof(field), "%s%s", prefix, error->field);
        memcpy(error->field, field, sizeof(field));
    }
    return rc;
}

static int nvme_get_bool(const json_t *params, const char *key, const char *prefix, bool *value,
                         struct vfio_userd_error *error)
{
    const json_t *item = json_object_get(params, key);
    char field[64];

    snprintf(field, sizeof(field), "%s%s", prefix, key);
    *value = false;
    if (item == NULL)
        return 0;
    if (json_is_boolean(item)) {
        *value = json_is_true(item);
        return 0;
    }
    if (json_is_string(item)) {
        const char *s = json_string_value(item);
        if (strcmp(s, "true") == 0 || strcmp(s, "yes") == 0 || strcmp(s, "1") == 0) {
            *value = true;
            return 0;
        }
        if (strcmp(s, "false") == 0 || strcmp(s, "no") == 0 || strcmp(s, "0") == 0)
            return 0;
    }
    return vfio_userd_error_set(error, -EINVAL, field, "%s must be true or false", field);
}

/* FNV-1a over the serial and the namespace id: identifiers that stay the same for the same
 * device, and differ between devices with different serials. */
static uint64_t nvme_hash(const char *serial, uint32_t nsid, uint64_t seed)
{
    uint64_t hash = 0xcbf29ce484222325ull ^ seed;

    for (const char *c = serial; *c != '\0'; c++)
        hash = (hash ^ (uint8_t)*c) * 0x100000001b3ull;
    for (int i = 0; i < 4; i++)
        hash = (hash ^ ((nsid >> (8 * i)) & 0xff)) * 0x100000001b3ull;
    return hash;
}

static void nvme_namespace_ids(struct nvme_namespace *ns, const char *serial)
{
    uint64_t a = nvme_hash(serial, ns->nsid, 1), b = nvme_hash(serial, ns->nsid, 2);

    memcpy(ns->eui64, &a, 8);
    memcpy(ns->nguid, &a, 8);
    memcpy(ns->nguid + 8, &b, 8);
    ns->eui64[0] = 0x02; /* never all zeros, which means "none" */
}

/*
 * Opens a namespace's file through the host when it can (ABI 1.1 open_file: in a sandboxed
 * device host, only the daemon may open the administrator's images), else directly.
 */
static int nvme_open_path(const struct nvme_controller *ctrl, const char *path, int flags)
{
    int fd;

    if (VFIO_USERD_HOST_HAS(ctrl->host, open_file))
        return ctrl->host->open_file(ctrl->device, path, flags & ~O_CLOEXEC, 0600);
    fd = open(path, flags, 0600);
    return fd < 0 ? -errno : fd;
}

/*
 * What O_DIRECT asks of a namespace's transfers: the larger of the buffer and the offset
 * alignment the file system reports (statx STATX_DIOALIGN), or a block device's logical
 * block size; 4096 when neither is known. Offsets are whole blocks, so a namespace block
 * smaller than that cannot work: -EINVAL. Buffers of guest memory that are not aligned go
 * through the command's page-aligned bounce buffer.
 */
static int nvme_direct_alignment(struct nvme_namespace *ns, bool block_device)
{
    struct statx stx;
    int sector = 0;

    ns->direct_align = 4096;
    if (block_device) {
        if (ioctl(ns->fd, BLKSSZGET, &sector) == 0 && sector > 0)
            ns->direct_align = (uint32_t)sector;
    } else if (statx(ns->fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx) == 0 &&
               (stx.stx_mask & STATX_DIOALIGN) != 0 && stx.stx_dio_offset_align != 0) {
        ns->direct_align = stx.stx_dio_offset_align > stx.stx_dio_mem_align
                               ? stx.stx_dio_offset_align
                               : stx.stx_dio_mem_align;
    }
    return ns->direct_align <= (1u << ns->block_shift) ? 0 : -EINVAL;
}

/* Opens and sizes a file or block device namespace. `size` 0: the file's own size. */
static int nvme_open_file(const struct nvme_controller *ctrl, struct nvme_namespace *ns,
                          const char *path, uint64_t size, const char *field,
                          const char *size_field, const char *direct_field,
                          struct vfio_userd_error *error)
{
    /* Created only when a size says how big: a mistyped path without one fails. */
    int flags = (ns->read_only ? O_RDONLY : O_RDWR) | (size != 0 && !ns->read_only ? O_CREAT : 0) |
                (ns->direct ? O_DIRECT : 0) | O_CLOEXEC;
    uint64_t current;
    struct stat st;
    int rc;

    snprintf(ns->path, sizeof(ns->path), "%s", path);
    ns->fd = nvme_open_path(ctrl, path, flags);
    if (ns->fd < 0) {
        rc = ns->fd;
        ns->fd = -1;
        return vfio_userd_error_set(error, rc, field, "cannot open %s: %s", path, strerror(-rc));
    }
    /* Two devices writing one image would corrupt it. */
    if (flock(ns->fd, (ns->read_only ? LOCK_SH : LOCK_EX) | LOCK_NB) < 0)
        return vfio_userd_error_set(error, -EBUSY, field, "%s is in use by another device", path);
    if (fstat(ns->fd, &st) < 0)
        return vfio_userd_error_set(error, -errno, field, "cannot stat %s: %s", path,
                                    strerror(errno));
    if (ns->direct) {
        rc = nvme_direct_alignment(ns, S_ISBLK(st.st_mode));
        if (rc < 0)
            return vfio_userd_error_set(error, rc, direct_field,
                                        "%s wants O_DIRECT transfers aligned to %u bytes, more "
                                        "than block_size",
                                        path, ns->direct_align);
    }
    if (S_ISBLK(st.st_mode)) {
        if (ioctl(ns->fd, BLKGETSIZE64, &current) < 0)
            return vfio_userd_error_set(error, -errno, field, "cannot size %s: %s", path,
                                        strerror(errno));
        ns->block_device = true;
        if (size > current)
            return vfio_userd_error_set(error, -EINVAL, size_field,
                                        "%s holds %llu bytes, less than size", path,
                                        (unsigned long long)current);
        ns->size = size != 0 ? size : current;
        return 0;
    }
    if (!S_ISREG(st.st_mode))
        return vfio_userd_error_set(error, -EINVAL, field,
                                    "%s is neither a regular file nor a block device", path);
    current = (uint64_t)st.st_size;
    if (size == 0) {
        if (current == 0)
            return vfio_userd_error_set(error, -EINVAL, field,
                                        "%s is empty: give a size to create it", path);
        ns->size = current;
        return 0;
    }
    /* Never shrink an image: the data past `size` would be lost. */
    if (size < current)
        return vfio_userd_error_set(error, -EINVAL, size_field,
                                    "%s holds %llu bytes, more than size: leave size out or "
                                    "give at least that",
                                    path, (unsigned long long)current);
    if (size > current) {
        if (ns->read_only)
            return vfio_userd_error_set(error, -EINVAL, size_field,
                                        "%s is read-only and smaller than size", path);
        if (ftruncate(ns->fd, (off_t)size) < 0) {
            rc = -errno;
            return vfio_userd_error_set(error, rc, field, "cannot extend %s: %s", path,
                                        strerror(-rc));
        }
    }
    ns->size = size;
    return 0;
}

/* One namespace from `object` (the whole params for the shorthand). */
static int nvme_parse_namespace(struct nvme_controller *ctrl, const json_t *object,
                                const char *prefix, const char *const *keys,
                                struct vfio_userd_error *error)
{
    const struct vfio_userd_host *host = ctrl->host;
    struct nvme_namespace *ns = &ctrl->namespaces[ctrl->namespace_count];
    const json_t *path = json_object_get(object, "path");
    const json_t *backend = json_object_get(object, "backend");
    char field[64], path_field[64], direct_field[64];
    uint64_t size, block_size;
    bool ram;
    int rc;

    ns->fd = -1;
    ns->nsid = ctrl->namespace_count + 1;
    ctrl->namespace_count++; /* from here destroy closes what is opened */
    if (keys != NULL) {
        rc = host->params_check_keys(object, keys, error);
        if (rc < 0)
            return nvme_prefix_field(error, prefix, rc);
    }
    snprintf(field, sizeof(field), "%sbackend", prefix);
    if (backend != NULL &&
        !(json_is_string(backend) && (strcmp(json_string_value(backend), "file") == 0 ||
                                      strcmp(json_string_value(backend), "ram") == 0)))
        return vfio_userd_error_set(error, -EINVAL, field, "%s must be file or ram", field);
    ram = (backend != NULL && strcmp(json_string_value(backend), "ram") == 0) ||
          (path != NULL && json_is_null(path));
    snprintf(field, sizeof(field), "%spath", prefix);
    if (!ram && (path == NULL || !json_is_string(path) || json_string_length(path) == 0))
        return vfio_userd_error_set(error, -EINVAL, field,
                                    "%s: a file or block device, or null for RAM", field);
    if (ram && path != NULL && !json_is_null(path))
        return vfio_userd_error_set(error, -EINVAL, field, "%s: a RAM namespace has no path",
                                    field);
    rc = host->params_get_u64(object, "block_size", 512, 512, 4096, &block_size, error);
    if (rc < 0)
        return nvme_prefix_field(error, prefix, rc);
    snprintf(field, sizeof(field), "%sblock_size", prefix);
    if (block_size != 512 && block_size != 4096)
        return vfio_userd_error_set(error, -EINVAL, field, "%s must be 512 or 4096", field);
    ns->block_shift = block_size == 512 ? 9 : 12;
    rc = host->params_get_u64(object, "size", 0, 0, ram ? NVME_RAM_MAX : INT64_MAX, &size, error);
    if (rc < 0)
        return nvme_prefix_field(error, prefix, rc);
    rc = nvme_get_bool(object, "read_only", prefix, &ns->read_only, error);
    if (rc < 0)
        return rc;
    rc = nvme_get_bool(object, "direct", prefix, &ns->direct, error);
    if (rc < 0)
        return rc;
    snprintf(field, sizeof(field), "%sdirect", prefix);
    if (ns->direct && ram)
        return vfio_userd_error_set(error, -EINVAL, field, "%s: a RAM namespace has no cache",
                                    field);
    snprintf(field, sizeof(field), "%ssize", prefix);
    if (size % block_size != 0)
        return vfio_userd_error_set(error, -EINVAL, field,
                                    "%s must be a multiple of the block size (%llu)", field,
                                    (unsigned long long)block_size);
    if (ram) {
        if (size == 0)
            return vfio_userd_error_set(error, -EINVAL, field, "%s: a RAM namespace needs a size",
                                        field);
        ns->backend = NVME_BACKEND_RAM;
        ns->size = size;
        snprintf(ns->path, sizeof(ns->path), "RAM");
        /* Untouched pages cost nothing: a large namespace only uses what is written. */
        ns->memory = mmap(NULL, size, PROT_READ | PROT_WRITE,
                          MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (ns->memory == MAP_FAILED) {
            ns->memory = NULL;
            return vfio_userd_error_set(error, -ENOMEM, field, "cannot allocate %llu bytes",
                                        (unsigned long long)size);
        }
        /* Random 4 KiB accesses over small pages miss the TLB at nearly every command, and a
         * block never written costs a page fault the first time it is read: huge pages (the
         * huge zero page for what was never written) take most of both away. A hint only:
         * without transparent huge pages it changes nothing. */
        madvise(ns->memory, size, MADV_HUGEPAGE);
    } else {
        ns->backend = NVME_BACKEND_FILE;
        snprintf(field, sizeof(field), "%s%s", prefix, size != 0 ? "size" : "path");
        snprintf(path_field, sizeof(path_field), "%spath", prefix);
        snprintf(direct_field, sizeof(direct_field), "%sdirect", prefix);
        rc = nvme_open_file(ctrl, ns, json_string_value(path), size, path_field, field,
                            direct_field, error);
        if (rc < 0)
            return rc;
        if (ns->size % block_size != 0)
            return vfio_userd_error_set(error, -EINVAL, field,
                                        "%s is %llu bytes, not a multiple of block_size", ns->path,
                                        (unsigned long long)ns->size);
    }
    nvme_namespace_ids(ns, ctrl->config.serial);
    return 0;
}

static bool nvme_printable(const char *s)
{
    for (; *s != '\0'; s++) {
        if (*s < 0x20 || *s > 0x7e)
            return false;
    }
    return true;
}

static int nvme_get_string(const json_t *params, const char *key, size_t max, char *value,
                           struct vfio_userd_error *error)
{
    const json_t *item = json_object_get(params, key);

    if (item == NULL)
        return 0;
    if (!json_is_string(item) || json_string_length(item) == 0 || json_string_length(item) > max ||
        !nvme_printable(json_string_value(item)))
        return vfio_userd_error_set(error, -EINVAL, key,
                                    "%s must be 1 to %zu printable ASCII characters", key, max);
    snprintf(value, max + 1, "%s", json_string_value(item));
    return 0;
}

static void nvme_default_serial(struct nvme_controller *ctrl)
{
    const char *name = ctrl->host->name(ctrl->device);

    if (name == NULL || name[0] == '\0' || !nvme_printable(name))
        name = "vfio-userd";
    if (strlen(name) <= 20)
        snprintf(ctrl->config.serial, sizeof(ctrl->config.serial), "%s", name);
    else
        snprintf(ctrl->config.serial, sizeof(ctrl->config.serial), "%.12s%08x", name,
                 (uint32_t)nvme_hash(name, 0, 0));
}

static int nvme_parse_params(struct nvme_controller *ctrl, const json_t *params,
                             struct vfio_userd_error *error)
{
    const struct vfio_userd_host *host = ctrl->host;
    struct nvme_config *config = &ctrl->config;
    const json_t *namespaces = json_object_get(params, "namespaces");
    static const char *const shorthand[] = {"path",      "size",    "block_size",
                                            "read_only", "backend", "direct"};
    const json_t *aio = json_object_get(params, "aio");
    const json_t *doorbells = json_object_get(params, "doorbells");
    uint64_t io_queues, depth, poll_us;
    char prefix[48];
    int rc;

    rc = host->params_check_keys(params, nvme_param_keys, error);
    if (rc < 0)
        return rc;
    rc = host->params_get_u64(params, "io_queues", NVME_DEFAULT_QUEUES, 1, NVME_MAX_IO_QUEUES,
                              &io_queues, error);
    if (rc < 0)
        return rc;
    rc = host->params_get_u64(params, "queue_depth", NVME_DEFAULT_DEPTH, 2, NVME_MAX_DEPTH, &depth,
                              error);
    if (rc < 0)
        return rc;
    config->io_queues = (uint32_t)io_queues;
    config->queue_entries = (uint32_t)depth;
    config->vectors = config->io_queues + 1;
    nvme_default_serial(ctrl);
    snprintf(config->model, sizeof(config->model), "%s", NVME_DEFAULT_MODEL);
    rc = nvme_get_string(params, "serial", 20, config->serial, error);
    if (rc < 0)
        return rc;
    rc = nvme_get_string(params, "model", 40, config->model, error);
    if (rc < 0)
        return rc;
    rc = host->params_get_u64(params, "doorbell_poll_us", 0, 0, NVME_SHADOW_POLL_MAX_US, &poll_us,
                              error);
    if (rc < 0)
        return rc;
    config->doorbell_poll_us = (uint32_t)poll_us;
    config->doorbells = NVME_DOORBELLS_TRAPPED;
    if (doorbells != NULL) {
        const char *mode = json_is_string(doorbells) ? json_string_value(doorbells) : "";
        if (strcmp(mode, "mapped") == 0)
            config->doorbells = NVME_DOORBELLS_MAPPED;
        else if (strcmp(mode, "ioeventfd") == 0)
            config->doorbells = NVME_DOORBELLS_IOEVENTFD;
        else if (strcmp(mode, "trapped") != 0)
            return vfio_userd_error_set(error, -EINVAL, "doorbells",
                                        "doorbells must be trapped, mapped or ioeventfd");
    }
    ctrl->io_mode = NVME_IO_URING;
    if (aio != NULL) {
        if (!json_is_string(aio) || (strcmp(json_string_value(aio), "io_uring") != 0 &&
                                     strcmp(json_string_value(aio), "sync") != 0))
            return vfio_userd_error_set(error, -EINVAL, "aio", "aio must be io_uring or sync");
        if (strcmp(json_string_value(aio), "sync") == 0)
            ctrl->io_mode = NVME_IO_SYNC;
    }

    if (namespaces == NULL)
        return nvme_parse_namespace(ctrl, params, "", NULL, error);
    for (size_t i = 0; i < sizeof(shorthand) / sizeof(shorthand[0]); i++) {
        if (json_object_get(params, shorthand[i]) != NULL)
            return vfio_userd_error_set(error, -EINVAL, shorthand[i],
                                        "%s belongs inside namespaces when namespaces is given",
                                        shorthand[i]);
    }
    if (!json_is_array(namespaces) || json_array_size(namespaces) == 0 ||
        json_array_size(namespaces) > NVME_MAX_NAMESPACES)
        return vfio_userd_error_set(error, -EINVAL, "namespaces",
                                    "namespaces must be a list of 1 to %u namespaces",
                                    NVME_MAX_NAMESPACES);
    for (size_t i = 0; i < json_array_size(namespaces); i++) {
        const json_t *object = json_array_get(namespaces, i);
        snprintf(prefix, sizeof(prefix), "namespaces[%zu].", i);
        if (!json_is_object(object)) {
            snprintf(prefix, sizeof(prefix), "namespaces[%zu]", i);
            return vfio_userd_error_set(error, -EINVAL, prefix, "%s must be a mapping", prefix);
        }
        rc = nvme_parse_namespace(ctrl, object, prefix, nvme_namespace_keys, error);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static void nvme_free(struct nvme_controller *ctrl)
{
    if (ctrl == NULL)
        return;
    for (uint32_t i = 0; i < ctrl->namespace_count; i++) {
        struct nvme_namespace *ns = &ctrl->namespaces[i];
        if (ns->fd >= 0)
            close(ns->fd);
        if (ns->memory != NULL)
            munmap(ns->memory, ns->size);
    }
    if (ctrl->sqs != NULL) {
        for (uint32_t q = 0; q <= ctrl->config.io_queues; q++) {
            for (uint32_t i = 0; i < ctrl->sqs[q].slots; i++) {
                free(ctrl->sqs[q].commands[i].bounce);
                free(ctrl->sqs[q].commands[i].zero_ops);
            }
            free(ctrl->sqs[q].commands);
        }
    }
    free(ctrl->sqs);
    free(ctrl->cqs);
    free(ctrl->zeros);
    free(ctrl);
}

static int nvme_ops_reset(void *instance)
{
    struct nvme_controller *ctrl = instance;

    /* A function reset: the controller reset plus every register back to its default. */
    nvme_controller_reset(ctrl);
    ctrl->cc = 0;
    ctrl->aqa = 0;
    ctrl->asq = 0;
    ctrl->acq = 0;
    return 0;
}

static void nvme_ops_destroy(void *instance)
{
    struct nvme_controller *ctrl = instance;

    /* Operations in flight finish first: they hold guest memory and the namespaces' files. */
    nvme_ring_teardown(ctrl);
    nvme_doorbells_teardown(ctrl);
    nvme_dbbuf_poll_teardown(ctrl);
    /* Whatever the guest left in the page cache reaches the image before the device goes. */
    for (uint32_t i = 0; i < ctrl->namespace_count; i++)
        nvme_namespace_flush(&ctrl->namespaces[i]);
    nvme_free(ctrl);
}

/*
 * Before guest memory goes or the device resets (ABI 1.1 quiesce): no command starts, and
 * the host waits until the operations in flight are reaped (the kernel cannot take back a
 * read already copying into guest memory). They finish on the loop, as always; the last
 * one tells the host (nvme_ring_reap). Every unmap waits for everything in flight, which
 * is simpler than matching iovecs to ranges, and unmaps are rare (a memory map change in
 * the VMM, or its end).
 */
static int nvme_ops_quiesce(void *instance)
{
    struct nvme_controller *ctrl = instance;

    ctrl->quiescing = true;
    nvme_ring_kick(ctrl);
    if (ctrl->in_flight == 0)
        return 0;
    ctrl->quiesce_pending = true;
    return -EBUSY;
}

/* The guest may have rung doorbells meanwhile: their commands start on the next iteration. */
static void nvme_ops_resume(void *instance)
{
    struct nvme_controller *ctrl = instance;

    ctrl->quiescing = false;
    ctrl->quiesce_pending = false;
    /* Without a ring nothing was ever in flight: the quiesce ended where it began. */
    if (ctrl->kick_source != NULL)
        ctrl->host->timer_set(ctrl->device, ctrl->kick_source, 0);
}

/* Guest memory goes once this returns. After the quiesce nothing is in flight; the drain
 * stays for what a DMA message's completion may have started since. */
static void nvme_ops_dma_unmap(void *instance, uint64_t address, uint64_t size)
{
    nvme_ring_drain_and_resume(instance);
    /* The doorbell buffers' pointers may be into the range: translated again when used. */
    nvme_dbbuf_unmapped(instance);
}

static const struct vfio_userd_device_ops nvme_ops = {
    .struct_size = sizeof(struct vfio_userd_device_ops),
    .reset = nvme_ops_reset,
    .dma_unmap = nvme_ops_dma_unmap,
    .destroy = nvme_ops_destroy,
    .quiesce = nvme_ops_quiesce,
    .resume = nvme_ops_resume,
};

/* BAR4 outside the MSI-X table and PBA the host emulates: reserved, reads as zero. */
static int nvme_msix_bar_access(void *instance, uint32_t region, uint64_t offset, void *data,
                                uint32_t count, bool is_write)
{
    if (!is_write)
        memset(data, 0, count);
    return 0;
}

static int nvme_declare_failed(struct vfio_userd_error *error, int rc, const char *what)
{
    return vfio_userd_error_set(error, rc, NULL, "the host refused %s: %s", what, strerror(-rc));
}

/*
 * I/O eventfds for the I/O queues' doorbells, two per queue, as many queues as the host
 * allows (limits()); the admin queue's and the rest stay trapped. An eventfd carries no
 * value: NVME_DOORBELL_UNKNOWN stands in, and the shadow doorbells give the real one.
 */
static int nvme_declare_ioeventfds(struct nvme_controller *ctrl)
{
    const struct vfio_userd_host *host = ctrl->host;
    uint32_t allowed = VFIO_USERD_MAX_IOEVENTFDS;
    int rc;

    if (VFIO_USERD_HOST_HAS(host, limits)) {
        const struct vfio_userd_host_limits *limits = host->limits(ctrl->device);
        if (VFIO_USERD_LIMITS_HAS(limits, max_ioeventfds))
            allowed = limits->max_ioeventfds;
    }
    for (uint32_t q = 1; q <= ctrl->config.io_queues && 2 * q <= allowed; q++) {
        for (uint32_t completion = 0; completion < 2; completion++) {
            rc = host->add_ioeventfd(ctrl->device, VFIO_USERD_REGION_BAR0,
                                     NVME_DOORBELLS + 8 * q + 4 * completion, 4, 0,
                                     NVME_DOORBELL_UNKNOWN);
            if (rc < 0)
                return rc;
        }
        ctrl->config.ioeventfd_queues = q;
    }
    if (ctrl->config.ioeventfd_queues < ctrl->config.io_queues)
        vfio_userd_log(ctrl->device, VFIO_USERD_LOG_INFO,
                       "I/O eventfds for the doorbells of I/O queues 1 to %u of %u (the host "
                       "allows %u eventfds)",
                       ctrl->config.ioeventfd_queues, ctrl->config.io_queues, allowed);
    return 0;
}

static int nvme_declare(struct nvme_controller *ctrl, struct vfio_userd_error *error)
{
    const struct vfio_userd_host *host = ctrl->host;
    struct vfio_userd_device *device = ctrl->device;
    /* Mapped doorbells: the doorbell page is host memory the client may map; the registers
     * before it stay trapped. */
    static const struct vfio_userd_sparse_area doorbell_page = {NVME_DOORBELLS, NVME_PAGE_SIZE};
    const bool mapped = ctrl->config.doorbells == NVME_DOORBELLS_MAPPED;
    const struct vfio_userd_region bar0 = {
        .size = NVME_BAR0_SIZE,
        .flags = VFIO_USERD_REGION_READABLE | VFIO_USERD_REGION_WRITABLE | VFIO_USERD_BAR_64BIT |
                 (mapped ? VFIO_USERD_REGION_MEMORY | VFIO_USERD_REGION_MAPPABLE : 0),
        .sparse_area_count = mapped ? 1 : 0,
        .sparse_areas = mapped ? &doorbell_page : NULL,
        .access = nvme_bar0_access,
    };
    const struct vfio_userd_region bar4 = {
        .size = NVME_MSIX_BAR_SIZE,
        .flags = VFIO_USERD_REGION_READABLE | VFIO_USERD_REGION_WRITABLE,
        .access = nvme_msix_bar_access,
    };
    int rc;

    _Static_assert(NVME_MSIX_MAX * 16 <= NVME_MSIX_PBA, "the MSI-X table ends before the PBA");
    _Static_assert(NVME_DOORBELLS + 8 * (NVME_MAX_IO_QUEUES + 1) <= NVME_BAR0_SIZE,
                   "every doorbell fits in BAR0");
    rc = host->pci_set_identity(device, &ctrl->config.identity);
    if (rc < 0)
        return nvme_declare_failed(error, rc, "the PCI identity");
    rc = host->add_region(device, VFIO_USERD_REGION_BAR0, &bar0);
    if (rc < 0)
        return nvme_declare_failed(error, rc, "BAR0 (registers)");
    if (ctrl->config.doorbells == NVME_DOORBELLS_IOEVENTFD) {
        rc = nvme_declare_ioeventfds(ctrl);
        if (rc < 0)
            return nvme_declare_failed(error, rc, "the doorbells' I/O eventfds");
    }
    rc = host->add_region(device, NVME_MSIX_BAR, &bar4);
    if (rc < 0)
        return nvme_declare_failed(error, rc, "BAR4 (MSI-X)");
    rc = host->pci_add_power_management(device);
    if (rc < 0)
        return nvme_declare_failed(error, rc, "the power management capability");
    rc = host->pci_add_msix(device, ctrl->config.vectors, NVME_MSIX_BAR, 0, NVME_MSIX_BAR,
                            NVME_MSIX_PBA);
    if (rc < 0)
        return nvme_declare_failed(error, rc, "the MSI-X capability");
    rc = host->pci_add_express(device);
    if (rc < 0)
        return nvme_declare_failed(error, rc, "the PCI Express capability");
    return 0;
}

static bool nvme_has_files(const struct nvme_controller *ctrl)
{
    for (uint32_t i = 0; i < ctrl->namespace_count; i++)
        if (ctrl->namespaces[i].backend == NVME_BACKEND_FILE)
            return true;
    return false;
}

static int nvme_create(struct vfio_userd_device *device, const json_t *params,
                       struct vfio_userd_error *error)
{
    const struct vfio_userd_host *host = device->host;
    struct nvme_controller *ctrl;
    int rc;

    ctrl = calloc(1, sizeof(*ctrl));
    if (ctrl == NULL)
        return vfio_userd_error_set(error, -ENOMEM, NULL, "out of memory");
    ctrl->device = device;
    ctrl->host = host;
    ctrl->config.identity = (struct vfio_userd_pci_identity){
        .vendor_id = NVME_VENDOR_ID,
        .device_id = NVME_DEVICE_ID,
        .subsystem_vendor_id = NVME_VENDOR_ID,
        .subsystem_id = NVME_DEVICE_ID,
        .class_code = NVME_CLASS_CODE,
        .revision = 1,
        .interrupt_pin = 1,
    };
    rc = host->set_ops(device, &nvme_ops, ctrl);
    if (rc < 0) {
        nvme_free(ctrl);
        return nvme_declare_failed(error, rc, "the device callbacks");
    }
    /* From here on the host frees the controller through ops->destroy, even on failure. */
    rc = nvme_parse_params(ctrl, params, error);
    if (rc < 0)
        return rc;
    ctrl->sqs = calloc(ctrl->config.io_queues + 1, sizeof(*ctrl->sqs));
    ctrl->cqs = calloc(ctrl->config.io_queues + 1, sizeof(*ctrl->cqs));
    if (ctrl->sqs == NULL || ctrl->cqs == NULL || nvme_sq_allocate(&ctrl->sqs[0], 1) < 0)
        return vfio_userd_error_set(error, -ENOMEM, NULL, "out of memory for the queues");
    ctrl->ring_eventfd = -1;
    if (ctrl->io_mode == NVME_IO_URING && nvme_has_files(ctrl)) {
        rc = nvme_ring_setup(ctrl);
        if (rc < 0)
            vfio_userd_log(device, VFIO_USERD_LOG_WARNING,
                           "io_uring unavailable (%s): file I/O runs synchronously on the "
                           "device's thread",
                           strerror(-rc));
    }
    ctrl->cap = (uint64_t)(ctrl->config.queue_entries - 1) | 1ull << 16 /* CQR */ |
                (uint64_t)NVME_TIMEOUT_HALF_SEC << 24 | 1ull << 37 /* CSS: NVM */;
    rc = nvme_doorbells_setup(ctrl);
    if (rc < 0)
        return vfio_userd_error_set(error, rc, "doorbells", "cannot poll mapped doorbells: %s",
                                    strerror(-rc));
    rc = nvme_dbbuf_poll_setup(ctrl);
    if (rc < 0)
        return vfio_userd_error_set(error, rc, "doorbell_poll_us",
                                    "cannot poll shadow doorbells: %s", strerror(-rc));
    rc = nvme_declare(ctrl, error);
    if (rc < 0)
        return rc;
    nvme_controller_reset(ctrl);
    return 0;
}

VFIO_USERD_PLUGIN_DEFINE(.name = "nvme", .version = "1.0",
                         .description = "NVMe 1.4 controller backed by files, block devices "
                                        "or RAM (see vfio-userd-nvme(7))",
                         .create = nvme_create);
