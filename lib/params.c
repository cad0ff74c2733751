/*
 * Plugin parameter helpers (host table params_check_keys, params_get_u64): unknown keys,
 * and integers given as JSON numbers or as strings such as "0x1000" or "4K", each refusal
 * naming the parameter so the daemon can point at the line that set it.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "params.h"

int vu_params_check_keys(const json_t *params, const char *const *allowed,
                         struct vfio_userd_error *error)
{
    const char *key;
    json_t *value;

    if (params == NULL)
        return 0;
    if (!json_is_object(params))
        return vfio_userd_error_set(error, -EINVAL, "", "parameters must be a mapping");
    json_object_foreach ((json_t *)params, key, value) {
        bool known = false;
        for (size_t i = 0; allowed != NULL && allowed[i] != NULL && !known; i++)
            known = strcmp(key, allowed[i]) == 0;
        if (!known)
            return vfio_userd_error_set(error, -EINVAL, key, "unknown parameter '%s'", key);
    }
    return 0;
}

static int parse_size_string(const char *text, uint64_t *value)
{
    uint64_t number, multiplier = 1;
    char *end;

    if (*text == '\0' || *text == '-' || *text == '+' || *text == ' ')
        return -EINVAL;
    errno = 0;
    number = strtoull(text, &end, 0);
    if (errno != 0 || end == text)
        return -EINVAL;
    switch (*end) {
    case 'k':
    case 'K':
        multiplier = 1ull << 10;
        end++;
        break;
    case 'm':
    case 'M':
        multiplier = 1ull << 20;
        end++;
        break;
    case 'g':
    case 'G':
        multiplier = 1ull << 30;
        end++;
        break;
    default:
        break;
    }
    if (multiplier > 1 && (strcmp(end, "iB") == 0 || strcmp(end, "B") == 0))
        end += strlen(end);
    if (*end != '\0')
        return -EINVAL;
    if (number > UINT64_MAX / multiplier)
        return -ERANGE;
    *value = number * multiplier;
    return 0;
}

int vu_params_get_u64(const json_t *params, const char *key, uint64_t fallback, uint64_t min,
                      uint64_t max, uint64_t *value, struct vfio_userd_error *error)
{
    json_t *member = params != NULL ? json_object_get(params, key) : NULL;
    uint64_t number;

    if (member == NULL || json_is_null(member)) {
        *value = fallback;
        return 0;
    }
    if (json_is_integer(member)) {
        if (json_integer_value(member) < 0)
            return vfio_userd_error_set(error, -ERANGE, key, "'%s' must not be negative", key);
        number = (uint64_t)json_integer_value(member);
    } else if (json_is_string(member)) {
        int ret = parse_size_string(json_string_value(member), &number);
        if (ret < 0)
            return vfio_userd_error_set(error, ret, key,
                                        "'%s': '%s' is not a number (examples: 4096, 0x1000, 4K)",
                                        key, json_string_value(member));
    } else {
        return vfio_userd_error_set(error, -EINVAL, key, "'%s' must be a number", key);
    }
    if (number < min || number > max)
        return vfio_userd_error_set(error, -ERANGE, key,
                                    "'%s' is %" PRIu64 ", outside %" PRIu64 "..%" PRIu64, key,
                                    number, min, max);
    *value = number;
    return 0;
}

bool vu_params_name(const json_t *params, const char *path)
{
    const char *key;
    const json_t *value;
    size_t index;

    if (json_is_string(params))
        return strcmp(json_string_value(params), path) == 0;
    if (json_is_object(params)) {
        json_object_foreach ((json_t *)params, key, value)
            if (vu_params_name(value, path))
                return true;
    } else if (json_is_array(params)) {
        json_array_foreach (params, index, value)
            if (vu_params_name(value, path))
                return true;
    }
    return false;
}
