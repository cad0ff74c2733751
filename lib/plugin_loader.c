/*
 * Plugin loading; see plugin_loader.h.
 */
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "device.h"
#include "plugin_loader.h"

int vu_plugin_load(const char *path, struct vu_plugin_module *module, char *message,
                   size_t message_size)
{
    const struct vfio_userd_plugin *plugin;
    void *handle;
    int ret;

    *module = (struct vu_plugin_module){0};
    /* RTLD_LOCAL: plugins cannot see, or collide with, each other's symbols. */
    handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (handle == NULL) {
        snprintf(message, message_size, "cannot load: %s", dlerror());
        return -ENOEXEC;
    }
    plugin = dlsym(handle, VFIO_USERD_PLUGIN_SYMBOL);
    if (plugin == NULL) {
        snprintf(message, message_size, "no '%s' symbol: not a vfio-userd plugin",
                 VFIO_USERD_PLUGIN_SYMBOL);
        ret = -ENOEXEC;
        goto fail;
    }
    ret = vu_device_check_plugin(plugin, message, message_size);
    if (ret < 0)
        goto fail;
    module->path = strdup(path);
    if (module->path == NULL) {
        snprintf(message, message_size, "out of memory");
        ret = -ENOMEM;
        goto fail;
    }
    module->handle = handle;
    module->plugin = plugin;
    return 0;
fail:
    dlclose(handle);
    return ret;
}

void vu_plugin_unload(struct vu_plugin_module *module)
{
    if (module->handle != NULL)
        dlclose(module->handle);
    free(module->path);
    *module = (struct vu_plugin_module){0};
}
