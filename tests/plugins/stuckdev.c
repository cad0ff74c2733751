/*
 * stuckdev: a test-only plugin whose region write hangs on demand, for the tests of a
 * worker stuck in plugin code (tests/integration/test_stuck.c). Built into
 * BUILD/tests/plugins/stuckdev.so and never installed.
 *
 * BAR0, 4 KiB, trapped: reads return STUCKDEV_MAGIC; a write to offset 0 does not return
 * until the file named by the `release_file` parameter exists (checked every 10 ms, for
 * at most two minutes, so a forgotten test cannot hang forever). A write to offset 4
 * takes as many milliseconds as the value written (at most a second): a slow device
 * that still answers. With `hang_create: true`, create waits for the release file too.
 *
 * A library destructor writes "stuckdev: unloaded inside a callback" to stderr when the
 * plugin goes away while one of its callbacks still runs, which the daemon must never let
 * happen.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <vfio-userd/plugin.h>

#define STUCKDEV_MAGIC       0x57ac4de7u
#define STUCKDEV_MAX_WAIT_MS 120000

struct stuckdev {
    char *release_file;
};

static atomic_int callbacks_running;

static void wait_for_release(const char *release_file)
{
    const struct timespec pause = {.tv_nsec = 10 * 1000 * 1000};

    atomic_fetch_add(&callbacks_running, 1);
    for (int waited = 0; waited < STUCKDEV_MAX_WAIT_MS && access(release_file, F_OK) != 0;
         waited += 10)
        nanosleep(&pause, NULL);
    atomic_fetch_sub(&callbacks_running, 1);
}

__attribute__((destructor)) static void stuckdev_unload(void)
{
    if (atomic_load(&callbacks_running) > 0)
        fputs("stuckdev: unloaded inside a callback\n", stderr);
}

static int stuckdev_access(void *instance, uint32_t region, uint64_t offset, void *data,
                           uint32_t count, bool is_write)
{
    struct stuckdev *device = instance;

    if (!is_write) {
        uint32_t magic = STUCKDEV_MAGIC;
        memset(data, 0, count);
        memcpy(data, &magic, count < sizeof(magic) ? count : sizeof(magic));
        return 0;
    }
    if (offset == 4 && count >= sizeof(uint32_t)) {
        uint32_t ms;
        memcpy(&ms, data, sizeof(ms));
        ms = ms < 1000 ? ms : 1000;
        nanosleep(&(struct timespec){.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000},
                  NULL);
        return 0;
    }
    if (offset != 0)
        return 0;
    wait_for_release(device->release_file);
    return 0;
}

static void stuckdev_destroy(void *instance)
{
    struct stuckdev *device = instance;

    free(device->release_file);
    free(device);
}

static const struct vfio_userd_device_ops stuckdev_ops = {.destroy = stuckdev_destroy};

static int stuckdev_create(struct vfio_userd_device *public, const json_t *params,
                           struct vfio_userd_error *error)
{
    const struct vfio_userd_host *host = vfio_userd_host_of(public);
    static const char *const allowed[] = {"release_file", "hang_create", NULL};
    const struct vfio_userd_pci_identity identity = {
        .vendor_id = 0x1af4, .device_id = 0x10fe, .class_code = 0xff0000};
    const struct vfio_userd_region bar0 = {.size = 4096,
                                           .flags = VFIO_USERD_REGION_READABLE |
                                                    VFIO_USERD_REGION_WRITABLE,
                                           .access = stuckdev_access};
    json_t *release = json_object_get(params, "release_file");
    json_t *hang_create = json_object_get(params, "hang_create");
    struct stuckdev *device;
    int ret;

    ret = host->params_check_keys(params, allowed, error);
    if (ret < 0)
        return ret;
    if (!json_is_string(release))
        return vfio_userd_error_set(error, -EINVAL, "release_file",
                                    "release_file: a path is required");
    if (json_is_true(hang_create))
        wait_for_release(json_string_value(release));
    device = calloc(1, sizeof(*device));
    if (device == NULL || (device->release_file = strdup(json_string_value(release))) == NULL) {
        free(device);
        return vfio_userd_error_set(error, -ENOMEM, NULL, "out of memory");
    }
    ret = host->set_ops(public, &stuckdev_ops, device);
    if (ret < 0) {
        stuckdev_destroy(device);
        return ret;
    }
    ret = host->pci_set_identity(public, &identity);
    if (ret == 0)
        ret = host->add_region(public, VFIO_USERD_REGION_BAR0, &bar0);
    return ret;
}

VFIO_USERD_PLUGIN_DEFINE(.name = "stuckdev", .version = "1.0",
                         .description = "test plugin: a region write that hangs on demand",
                         .create = stuckdev_create);
