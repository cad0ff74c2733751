/*
 * Plugin parameter helpers, offered to plugins through the host table; see plugin.h for
 * their contract.
 */
#ifndef VU_PARAMS_H
#define VU_PARAMS_H

#include <stdbool.h>
#include <stdint.h>
#include <jansson.h>

#include <vfio-userd/plugin.h>

int vu_params_check_keys(const json_t *params, const char *const *allowed,
                         struct vfio_userd_error *error);
int vu_params_get_u64(const json_t *params, const char *key, uint64_t fallback, uint64_t min,
                      uint64_t max, uint64_t *value, struct vfio_userd_error *error);

/* Whether `path` is, exactly, one of the string values anywhere in `params` (nested
 * objects and arrays included): the files a device may open are those its parameters name. */
bool vu_params_name(const json_t *params, const char *path);

#endif /* VU_PARAMS_H */
