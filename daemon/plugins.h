/*
 * The daemon's plugin registry: every *.so of the plugin directories, loaded once at
 * start. A plugin that fails to load, or whose name an earlier plugin already took, is
 * reported and skipped; the others serve on.
 */
#ifndef VFIO_USERD_PLUGINS_H
#define VFIO_USERD_PLUGINS_H

#include <stddef.h>

#include "plugin_loader.h"

struct plugin_registry {
    struct vu_plugin_module *modules;
    size_t count;
};

/* Reports each problem through vu_log and returns how many there were (0: all loaded). */
int plugin_registry_load(struct plugin_registry *registry, char *const *directories,
                         size_t directory_count);

/* Loads one plugin file given by path (vfio-userd --single ./my.so). */
int plugin_registry_load_file(struct plugin_registry *registry, const char *path);

const struct vfio_userd_plugin *plugin_registry_find(const struct plugin_registry *registry,
                                                     const char *name);

/* The file the plugin of that name was loaded from (a device host loads it again), or "". */
const char *plugin_registry_path(const struct plugin_registry *registry, const char *name);

void plugin_registry_free(struct plugin_registry *registry);

#endif /* VFIO_USERD_PLUGINS_H */
