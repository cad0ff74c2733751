/*
 * Plugin registry; see plugins.h.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "log.h"
#include "plugins.h"

const struct vfio_userd_plugin *plugin_registry_find(const struct plugin_registry *registry,
                                                     const char *name)
{
    for (size_t i = 0; i < registry->count; i++)
        if (strcmp(registry->modules[i].plugin->name, name) == 0)
            return registry->modules[i].plugin;
    return NULL;
}

const char *plugin_registry_path(const struct plugin_registry *registry, const char *name)
{
    for (size_t i = 0; i < registry->count; i++)
        if (strcmp(registry->modules[i].plugin->name, name) == 0)
            return registry->modules[i].path;
    return "";
}

int plugin_registry_load_file(struct plugin_registry *registry, const char *path)
{
    struct vu_plugin_module module, *modules;
    char message[512];
    int ret;

    ret = vu_plugin_load(path, &module, message, sizeof(message));
    if (ret < 0) {
        vu_log(VFIO_USERD_LOG_ERR, NULL, "plugin %s: %s", path, message);
        return ret;
    }
    if (!config_name_valid(module.plugin->name)) {
        vu_log(VFIO_USERD_LOG_ERR, NULL, "plugin %s: invalid plugin name; skipped", path);
        ret = -EINVAL;
        goto fail;
    }
    if (plugin_registry_find(registry, module.plugin->name) != NULL) {
        vu_log(VFIO_USERD_LOG_ERR, NULL, "plugin %s: name '%s' is already taken by %s; skipped",
               path, module.plugin->name, plugin_registry_path(registry, module.plugin->name));
        ret = -EEXIST;
        goto fail;
    }
    modules = reallocarray(registry->modules, registry->count + 1, sizeof(*modules));
    if (modules == NULL) {
        ret = -ENOMEM;
        goto fail;
    }
    registry->modules = modules;
    registry->modules[registry->count++] = module;
    vu_log(VFIO_USERD_LOG_DEBUG, NULL, "plugin %s %s loaded from %s", module.plugin->name,
           module.plugin->version != NULL ? module.plugin->version : "", path);
    return 0;
fail:
    vu_plugin_unload(&module);
    return ret;
}

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The *.so names of one directory, sorted, so load order (and who wins a name) is stable. */
static int list_directory(const char *directory, char ***names, size_t *count)
{
    DIR *handle = opendir(directory);
    struct dirent *entry;
    int ret = 0;

    *names = NULL;
    *count = 0;
    if (handle == NULL)
        return errno == ENOENT ? 0 : -errno;
    while ((entry = readdir(handle)) != NULL) {
        size_t length = strlen(entry->d_name);
        char **grown;

        if (entry->d_name[0] == '.' || length < 4 || strcmp(entry->d_name + length - 3, ".so"))
            continue;
        grown = reallocarray(*names, *count + 1, sizeof(char *));
        if (grown == NULL || (grown[*count] = strdup(entry->d_name)) == NULL) {
            if (grown != NULL)
                *names = grown;
            ret = -ENOMEM;
            break;
        }
        *names = grown;
        (*count)++;
    }
    closedir(handle);
    if (*count > 0)
        qsort(*names, *count, sizeof(char *), compare_names);
    return ret;
}

int plugin_registry_load(struct plugin_registry *registry, char *const *directories,
                         size_t directory_count)
{
    int problems = 0;

    for (size_t d = 0; d < directory_count; d++) {
        char **names;
        size_t count;
        int ret = list_directory(directories[d], &names, &count);

        if (ret < 0) {
            vu_log(VFIO_USERD_LOG_ERR, NULL, "plugin directory %s: %s", directories[d],
                   strerror(-ret));
            problems++;
        }
        for (size_t i = 0; i < count; i++) {
            char path[4096];
            if (snprintf(path, sizeof(path), "%s/%s", directories[d], names[i]) >=
                    (int)sizeof(path) ||
                plugin_registry_load_file(registry, path) < 0)
                problems++;
            free(names[i]);
        }
        free(names);
    }
    return problems;
}

void plugin_registry_free(struct plugin_registry *registry)
{
    for (size_t i = 0; i < registry->count; i++)
        vu_plugin_unload(&registry->modules[i]);
    free(registry->modules);
    registry->modules = NULL;
    registry->count = 0;
}
