/*
 * Loading device plugins: dlopen() a shared object, find its struct vfio_userd_plugin and
 * check that it was built for an ABI this host speaks.
 */
#ifndef VU_PLUGIN_LOADER_H
#define VU_PLUGIN_LOADER_H

#include <stddef.h>

#include <vfio-userd/plugin.h>

struct vu_plugin_module {
    void *handle; /* from dlopen() */
    const struct vfio_userd_plugin *plugin;
    char *path;
};

/*
 * Loads the plugin at `path`. On failure returns -errno and writes a message naming the
 * reason (dlopen's text, a missing symbol, an ABI mismatch) into `message`.
 */
int vu_plugin_load(const char *path, struct vu_plugin_module *module, char *message,
                   size_t message_size);

/* Unloads it; no device of the plugin may remain. */
void vu_plugin_unload(struct vu_plugin_module *module);

#endif /* VU_PLUGIN_LOADER_H */
