/*
 * YAML to JSON for vfio-userd's configuration files.
 *
 * The daemon keeps device settings as jansson values so that a YAML drop-in and a JSON-RPC
 * device_add go through one validator. This module turns one YAML document into such a value
 * and remembers where each node came from, so that an error found much later (by the config
 * validator or by a plugin) can still be reported as FILE:LINE:COLUMN.
 *
 * The accepted YAML is deliberately small: one document, no anchors, aliases or tags (except
 * !!str), unique scalar keys, at most YAML_JSON_MAX_DEPTH levels, at most YAML_JSON_MAX_SIZE
 * bytes. Plain scalars resolve as in the YAML 1.2 core schema, minus floats:
 *   null, Null, NULL, ~ and the empty scalar   -> null
 *   true, True, TRUE, false, False, FALSE     -> boolean (yes/no/on/off stay strings)
 *   [-+]?[0-9]+ and 0x[0-9A-Fa-f]+             -> integer (out of int64 range: an error)
 *   anything else                              -> string
 * Quoted scalars and !!str are always strings. Keys are always strings.
 */
#ifndef VFIO_USERD_YAML_JSON_H
#define VFIO_USERD_YAML_JSON_H

#include <stddef.h>
#include <jansson.h>

#define YAML_JSON_MAX_SIZE  (1024 * 1024)
#define YAML_JSON_MAX_DEPTH 32

/* 1-based, as editors count; the column counts characters, not bytes. */
struct yaml_json_mark {
    unsigned int line;
    unsigned int column;
};

/* For the root and list items, which have no key, `key` equals `value`. */
struct yaml_json_position {
    struct yaml_json_mark key;
    struct yaml_json_mark value;
};

struct yaml_json_document;

/*
 * Parses the YAML file at `path`, which must be a regular file. On failure returns a negative
 * errno and writes "PATH:LINE:COLUMN: problem" (or "PATH: problem" when the file could not be
 * read) to `error`: -EINVAL for bad YAML, -EFBIG for a file too large, -ENOMEM, or the errno
 * of open/read.
 */
int yaml_json_parse_file(const char *path, struct yaml_json_document **document, char *error,
                         size_t error_size);

/* The same for `size` bytes at `data`; `name` stands for the file in messages. */
int yaml_json_parse_buffer(const char *name, const char *data, size_t size,
                           struct yaml_json_document **document, char *error, size_t error_size);

void yaml_json_free(struct yaml_json_document *document);

/* The parsed value, owned by the document: JSON null for an empty document. */
json_t *yaml_json_root(const struct yaml_json_document *document);

/* The name given to the parser (the file's path). */
const char *yaml_json_name(const struct yaml_json_document *document);

/*
 * Where the node at `path` was written. A path names mapping keys separated by dots and list
 * items by [N], e.g. "params.ram_size", "devices_dirs[1]"; "" is the root. Keys that contain
 * '.' or '[' cannot be named. Returns 0, or -ENOENT when no such node exists.
 */
int yaml_json_position(const struct yaml_json_document *document, const char *path,
                       struct yaml_json_position *position);

/*
 * Writes a JSON value as a block-style YAML document that yaml_json_parse_buffer() reads back
 * as the same value: strings that would resolve to another type are quoted. Reals are written
 * as plain numbers, which this parser reads back as strings. Returns 0 and a malloc'd,
 * NUL-terminated text in `text`, or -EINVAL (value nested too deeply, a string with a NUL) or
 * -ENOMEM.
 */
int yaml_json_emit(const json_t *value, char **text);

/*
 * Writes `text` in double quotes into `buffer`, escaping quotes, backslashes and control
 * characters and shortening it with "..." to fit, so that a user's string can be echoed
 * safely in a log line. Returns `buffer`.
 */
char *yaml_json_quote(char *buffer, size_t size, const char *text);

#endif /* VFIO_USERD_YAML_JSON_H */
