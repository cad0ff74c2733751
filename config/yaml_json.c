/*
 * YAML to JSON with source positions, and JSON back to YAML (see yaml_json.h).
 *
 * The parser is driven by libyaml's event API rather than its document API so that limits
 * (depth, anchors, duplicate keys) are enforced while parsing, before a hostile file can make
 * us build anything large, and so that every node's key and value marks are at hand.
 */
#include "yaml_json.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

#define NO_PARENT SIZE_MAX

/* Where one JSON node came from; nodes are stored in document order, parents first. */
struct yaml_json_node {
    size_t parent;
    char *key; /* NULL for the root and for list items */
    size_t index;
    struct yaml_json_position position;
};

struct yaml_json_document {
    char *name;
    json_t *root;
    struct yaml_json_node *nodes;
    size_t node_count;
    size_t node_capacity;
};

struct parse_frame {
    json_t *container;
    size_t node;
    size_t item_count;
    char *key; /* a mapping's key that waits for its value */
    struct yaml_json_mark key_mark;
};

struct parse_state {
    struct yaml_json_document *document;
    const char *data;
    size_t size;
    unsigned int document_count;
    struct parse_frame frames[YAML_JSON_MAX_DEPTH];
    size_t depth;
    char *error;
    size_t error_size;
};

enum plain_kind {
    PLAIN_STRING,
    PLAIN_NULL,
    PLAIN_TRUE,
    PLAIN_FALSE,
    PLAIN_INTEGER,
    PLAIN_OUT_OF_RANGE,
};

__attribute__((format(printf, 3, 4))) static void set_error(char *error, size_t size,
                                                            const char *format, ...)
{
    va_list args;

    if (error == NULL || size == 0) {
        return;
    }
    va_start(args, format);
    vsnprintf(error, size, format, args);
    va_end(args);
}

static struct yaml_json_mark mark_of(yaml_mark_t mark)
{
    struct yaml_json_mark result = {
        .line = mark.line >= UINT32_MAX ? UINT32_MAX : (unsigned int)mark.line + 1,
        .column = mark.column >= UINT32_MAX ? UINT32_MAX : (unsigned int)mark.column + 1,
    };
    return result;
}

/* libyaml's reader reports only a byte offset; editors want a line and a column. */
static struct yaml_json_mark mark_at_offset(const char *data, size_t size, size_t offset)
{
    struct yaml_json_mark mark = {.line = 1, .column = 1};
    size_t i;

    for (i = 0; i < offset && i < size; i++) {
        unsigned char byte = (unsigned char)data[i];
        if (byte == '\n') {
            mark.line++;
            mark.column = 1;
        } else if ((byte & 0xc0) != 0x80) {
            mark.column++;
        }
    }
    return mark;
}

__attribute__((format(printf, 4, 5))) static int
fail_at(struct parse_state *state, int err, struct yaml_json_mark mark, const char *format, ...)
{
    char message[384];
    va_list args;

    va_start(args, format);
    vsnprintf(message, sizeof(message), format, args);
    va_end(args);
    set_error(state->error, state->error_size, "%s:%u:%u: %s", state->document->name, mark.line,
              mark.column, message);
    return err;
}

static int digit_value(char c, unsigned int base)
{
    int value;

    if (c >= '0' && c <= '9') {
        value = c - '0';
    } else if (c >= 'a' && c <= 'f') {
        value = c - 'a' + 10;
    } else if (c >= 'A' && c <= 'F') {
        value = c - 'A' + 10;
    } else {
        return -1;
    }
    return (unsigned int)value < base ? value : -1;
}

/* Digits only, in `base`; INT64_MAX + 1 is allowed so that INT64_MIN can be negated. */
static enum plain_kind parse_digits(const char *text, size_t length, unsigned int base,
                                    bool negative, json_int_t *integer)
{
    uint64_t limit = (uint64_t)INT64_MAX + (negative ? 1 : 0);
    uint64_t value = 0;
    size_t i;

    if (length == 0) {
        return PLAIN_STRING;
    }
    for (i = 0; i < length; i++) {
        if (digit_value(text[i], base) < 0) {
            return PLAIN_STRING;
        }
    }
    for (i = 0; i < length; i++) {
        unsigned int digit = (unsigned int)digit_value(text[i], base);
        if (value > (limit - digit) / base) {
            return PLAIN_OUT_OF_RANGE;
        }
        value = value * base + digit;
    }
    if (negative) {
        *integer = value == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(json_int_t)value;
    } else {
        *integer = (json_int_t)value;
    }
    return PLAIN_INTEGER;
}

static bool text_is(const char *text, size_t length, const char *word)
{
    return strlen(word) == length && memcmp(text, word, length) == 0;
}

static bool text_is_any(const char *text, size_t length, const char *const *words)
{
    for (; *words != NULL; words++) {
        if (text_is(text, length, *words)) {
            return true;
        }
    }
    return false;
}

static const char *const null_words[] = {"~", "null", "Null", "NULL", NULL};
static const char *const true_words[] = {"true", "True", "TRUE", NULL};
static const char *const false_words[] = {"false", "False", "FALSE", NULL};

static enum plain_kind resolve_plain(const char *text, size_t length, json_int_t *integer)
{
    if (length == 0 || text_is_any(text, length, null_words)) {
        return PLAIN_NULL;
    }
    if (text_is_any(text, length, true_words)) {
        return PLAIN_TRUE;
    }
    if (text_is_any(text, length, false_words)) {
        return PLAIN_FALSE;
    }
    if (length > 2 && text[0] == '0' && text[1] == 'x') {
        return parse_digits(text + 2, length - 2, 16, false, integer);
    }
    if (text[0] == '-' || text[0] == '+') {
        return parse_digits(text + 1, length - 1, 10, text[0] == '-', integer);
    }
    return parse_digits(text, length, 10, false, integer);
}

static int append_node(struct parse_state *state, char *key, struct yaml_json_mark key_mark,
                       struct yaml_json_mark value_mark, size_t *node_index)
{
    struct yaml_json_document *document = state->document;
    struct parse_frame *frame = state->depth > 0 ? &state->frames[state->depth - 1] : NULL;
    struct yaml_json_node *node;

    if (document->node_count == document->node_capacity) {
        size_t capacity = document->node_capacity == 0 ? 32 : document->node_capacity * 2;
        struct yaml_json_node *nodes = realloc(document->nodes, capacity * sizeof(*nodes));
        if (nodes == NULL) {
            return -ENOMEM;
        }
        document->nodes = nodes;
        document->node_capacity = capacity;
    }
    node = &document->nodes[document->node_count];
    node->parent = frame != NULL ? frame->node : NO_PARENT;
    node->key = key;
    node->index = frame != NULL ? frame->item_count : 0;
    node->position.key = key != NULL ? key_mark : value_mark;
    node->position.value = value_mark;
    *node_index = document->node_count++;
    return 0;
}

/* Takes `value`, whatever happens. */
static int add_value(struct parse_state *state, json_t *value, yaml_mark_t start,
                     size_t *node_index)
{
    struct parse_frame *frame = state->depth > 0 ? &state->frames[state->depth - 1] : NULL;
    struct yaml_json_mark key_mark = {0, 0};
    char *key = NULL;
    int ret;

    if (value == NULL) {
        return -ENOMEM;
    }
    if (frame != NULL && json_is_object(frame->container)) {
        key = frame->key;
        key_mark = frame->key_mark;
        frame->key = NULL;
    }
    ret = append_node(state, key, key_mark, mark_of(start), node_index);
    if (ret < 0) {
        free(key);
        json_decref(value);
        return ret;
    }
    if (frame == NULL) {
        state->document->root = value;
        ret = 0;
    } else if (key != NULL) {
        ret = json_object_set_new(frame->container, key, value) < 0 ? -ENOMEM : 0;
    } else {
        ret = json_array_append_new(frame->container, value) < 0 ? -ENOMEM : 0;
    }
    if (frame != NULL) {
        frame->item_count++;
    }
    return ret;
}

static int check_node_properties(struct parse_state *state, const yaml_event_t *event,
                                 const yaml_char_t *anchor, const yaml_char_t *tag,
                                 const char *allowed_tag)
{
    static const char core_prefix[] = "tag:yaml.org,2002:";
    char quoted[96];
    char shown[96];

    if (anchor != NULL) {
        return fail_at(state, -EINVAL, mark_of(event->start_mark),
                       "anchors and aliases are not supported (anchor %s); write the value out",
                       yaml_json_quote(quoted, sizeof(quoted), (const char *)anchor));
    }
    if (tag != NULL && strcmp((const char *)tag, allowed_tag) != 0) {
        /* Show core tags the way they are usually written. */
        if (strncmp((const char *)tag, core_prefix, strlen(core_prefix)) == 0) {
            snprintf(shown, sizeof(shown), "!!%s", (const char *)tag + strlen(core_prefix));
        } else {
            snprintf(shown, sizeof(shown), "%s", (const char *)tag);
        }
        return fail_at(state, -EINVAL, mark_of(event->start_mark),
                       "tags are not supported (tag %s)",
                       yaml_json_quote(quoted, sizeof(quoted), shown));
    }
    return 0;
}

static int find_child(const struct yaml_json_document *document, size_t parent, const char *key,
                      size_t key_length, size_t index, size_t *found)
{
    size_t i;

    for (i = parent + 1; i < document->node_count; i++) {
        const struct yaml_json_node *node = &document->nodes[i];
        if (node->parent != parent) {
            continue;
        }
        if (key == NULL ? (node->key == NULL && node->index == index)
                        : (node->key != NULL && strlen(node->key) == key_length &&
                           memcmp(node->key, key, key_length) == 0)) {
            *found = i;
            return 0;
        }
    }
    return -ENOENT;
}

static int handle_key(struct parse_state *state, const yaml_event_t *event)
{
    struct parse_frame *frame = &state->frames[state->depth - 1];
    const char *text = (const char *)event->data.scalar.value;
    size_t length = event->data.scalar.length;
    char quoted[96];
    size_t first;
    int ret;

    ret = check_node_properties(state, event, event->data.scalar.anchor, event->data.scalar.tag,
                                YAML_STR_TAG);
    if (ret < 0) {
        return ret;
    }
    if (memchr(text, '\0', length) != NULL) {
        return fail_at(state, -EINVAL, mark_of(event->start_mark),
                       "NUL characters are not allowed in keys");
    }
    if (json_object_get(frame->container, text) != NULL) {
        yaml_json_quote(quoted, sizeof(quoted), text);
        if (find_child(state->document, frame->node, text, length, 0, &first) == 0) {
            struct yaml_json_mark mark = state->document->nodes[first].position.key;
            return fail_at(state, -EINVAL, mark_of(event->start_mark),
                           "duplicate key %s (first defined at line %u, column %u)", quoted,
                           mark.line, mark.column);
        }
        return fail_at(state, -EINVAL, mark_of(event->start_mark), "duplicate key %s", quoted);
    }
    frame->key = strndup(text, length);
    if (frame->key == NULL) {
        return -ENOMEM;
    }
    frame->key_mark = mark_of(event->start_mark);
    return 0;
}

static int handle_scalar(struct parse_state *state, const yaml_event_t *event)
{
    const char *text = (const char *)event->data.scalar.value;
    size_t length = event->data.scalar.length;
    json_int_t integer = 0;
    json_t *value;
    size_t node;
    int ret;

    ret = check_node_properties(state, event, event->data.scalar.anchor, event->data.scalar.tag,
                                YAML_STR_TAG);
    if (ret < 0) {
        return ret;
    }
    if (memchr(text, '\0', length) != NULL) {
        return fail_at(state, -EINVAL, mark_of(event->start_mark),
                       "NUL characters are not allowed in values");
    }
    if (event->data.scalar.tag != NULL || event->data.scalar.style != YAML_PLAIN_SCALAR_STYLE) {
        value = json_stringn(text, length);
    } else {
        switch (resolve_plain(text, length, &integer)) {
        case PLAIN_NULL:
            value = json_null();
            break;
        case PLAIN_TRUE:
            value = json_true();
            break;
        case PLAIN_FALSE:
            value = json_false();
            break;
        case PLAIN_INTEGER:
            value = json_integer(integer);
            break;
        case PLAIN_OUT_OF_RANGE:
            return fail_at(state, -ERANGE, mark_of(event->start_mark),
                           "integer %.40s is out of range; quote it to keep it as a string", text);
        case PLAIN_STRING:
        default:
            value = json_stringn(text, length);
            break;
        }
    }
    return add_value(state, value, event->start_mark, &node);
}

static int handle_collection_start(struct parse_state *state, const yaml_event_t *event)
{
    bool is_mapping = event->type == YAML_MAPPING_START_EVENT;
    struct parse_frame *frame;
    json_t *container;
    size_t node;
    int ret;

    if (is_mapping) {
        ret = check_node_properties(state, event, event->data.mapping_start.anchor,
                                    event->data.mapping_start.tag, YAML_MAP_TAG);
    } else {
        ret = check_node_properties(state, event, event->data.sequence_start.anchor,
                                    event->data.sequence_start.tag, YAML_SEQ_TAG);
    }
    if (ret < 0) {
        return ret;
    }
    if (state->depth == YAML_JSON_MAX_DEPTH) {
        return fail_at(state, -EINVAL, mark_of(event->start_mark),
                       "nested more than %d levels deep", YAML_JSON_MAX_DEPTH);
    }
    /* Borrowed: the parent (or the document) owns the container once it is added. */
    container = is_mapping ? json_object() : json_array();
    ret = add_value(state, container, event->start_mark, &node);
    if (ret < 0) {
        return ret;
    }
    frame = &state->frames[state->depth];
    frame->container = container;
    frame->node = node;
    frame->item_count = 0;
    frame->key = NULL;
    state->depth++;
    return 0;
}

static int handle_event(struct parse_state *state, const yaml_event_t *event)
{
    struct parse_frame *frame = state->depth > 0 ? &state->frames[state->depth - 1] : NULL;
    bool wants_key = frame != NULL && json_is_object(frame->container) && frame->key == NULL;
    char quoted[96];

    switch (event->type) {
    case YAML_DOCUMENT_START_EVENT:
        if (state->document_count++ > 0) {
            return fail_at(state, -EINVAL, mark_of(event->start_mark),
                           "a second YAML document; a file holds exactly one");
        }
        return 0;
    case YAML_ALIAS_EVENT:
        return fail_at(
            state, -EINVAL, mark_of(event->start_mark),
            "anchors and aliases are not supported (alias %s); write the value out",
            yaml_json_quote(quoted, sizeof(quoted), (const char *)event->data.alias.anchor));
    case YAML_SCALAR_EVENT:
        return wants_key ? handle_key(state, event) : handle_scalar(state, event);
    case YAML_SEQUENCE_START_EVENT:
    case YAML_MAPPING_START_EVENT:
        if (wants_key) {
            return fail_at(state, -EINVAL, mark_of(event->start_mark),
                           "a key must be a plain string, not a %s",
                           event->type == YAML_MAPPING_START_EVENT ? "mapping" : "list");
        }
        return handle_collection_start(state, event);
    case YAML_SEQUENCE_END_EVENT:
    case YAML_MAPPING_END_EVENT:
        if (state->depth > 0) {
            state->depth--;
        }
        return 0;
    case YAML_STREAM_START_EVENT:
    case YAML_STREAM_END_EVENT:
    case YAML_DOCUMENT_END_EVENT:
    case YAML_NO_EVENT:
    default:
        return 0;
    }
}

static int report_parser_error(struct parse_state *state, const yaml_parser_t *parser)
{
    struct yaml_json_mark mark;
    const char *problem = parser->problem != NULL ? parser->problem : "syntax error";

    switch (parser->error) {
    case YAML_MEMORY_ERROR:
        set_error(state->error, state->error_size, "%s: out of memory", state->document->name);
        return -ENOMEM;
    case YAML_READER_ERROR:
        mark = mark_at_offset(state->data, state->size, parser->problem_offset);
        if (parser->problem_value >= 0) {
            return fail_at(state, -EINVAL, mark, "%s (byte 0x%02x)", problem,
                           (unsigned int)parser->problem_value & 0xff);
        }
        return fail_at(state, -EINVAL, mark, "%s", problem);
    default:
        mark = mark_of(parser->problem_mark);
        if (parser->context != NULL) {
            struct yaml_json_mark context = mark_of(parser->context_mark);
            return fail_at(state, -EINVAL, mark, "%s (%s at line %u, column %u)", problem,
                           parser->context, context.line, context.column);
        }
        return fail_at(state, -EINVAL, mark, "%s", problem);
    }
}

void yaml_json_free(struct yaml_json_document *document)
{
    size_t i;

    if (document == NULL) {
        return;
    }
    for (i = 0; i < document->node_count; i++) {
        free(document->nodes[i].key);
    }
    free(document->nodes);
    json_decref(document->root);
    free(document->name);
    free(document);
}

int yaml_json_parse_buffer(const char *name, const char *data, size_t size,
                           struct yaml_json_document **document, char *error, size_t error_size)
{
    struct parse_state state = {
        .data = data, .size = size, .error = error, .error_size = error_size};
    yaml_parser_t parser;
    bool parser_ready = false;
    yaml_event_type_t type;
    yaml_event_t event;
    size_t i;
    int ret;

    *document = NULL;
    state.document = calloc(1, sizeof(*state.document));
    if (state.document == NULL) {
        ret = -ENOMEM;
        goto out;
    }
    state.document->name = strdup(name);
    if (state.document->name == NULL) {
        ret = -ENOMEM;
        goto out;
    }
    if (size > YAML_JSON_MAX_SIZE) {
        set_error(error, error_size, "%s: larger than %d bytes", name, YAML_JSON_MAX_SIZE);
        ret = -EFBIG;
        goto out;
    }
    if (!yaml_parser_initialize(&parser)) {
        ret = -ENOMEM;
        goto out;
    }
    parser_ready = true;
    /* libyaml asserts on a NULL input, even an empty one. */
    yaml_parser_set_input_string(&parser, (const unsigned char *)(data != NULL ? data : ""),
                                 data != NULL ? size : 0);
    do {
        if (!yaml_parser_parse(&parser, &event)) {
            ret = report_parser_error(&state, &parser);
            goto out;
        }
        ret = handle_event(&state, &event);
        type = event.type;
        yaml_event_delete(&event);
        if (ret < 0) {
            goto out;
        }
    } while (type != YAML_STREAM_END_EVENT);
    if (state.document->root == NULL) {
        state.document->root = json_null();
    }
    *document = state.document;
    state.document = NULL;
    ret = 0;
out:
    if (ret == -ENOMEM && state.document != NULL) {
        set_error(error, error_size, "%s: out of memory", state.document->name);
    }
    for (i = 0; i < state.depth; i++) {
        free(state.frames[i].key);
    }
    if (parser_ready) {
        yaml_parser_delete(&parser);
    }
    yaml_json_free(state.document);
    return ret;
}

static int read_file(const char *path, char **data, size_t *size, char *error, size_t error_size)
{
    char *buffer = NULL;
    size_t length = 0;
    struct stat st;
    int fd;
    int ret;

    /*
     * O_NONBLOCK: whatever the caller saw at `path` may have been swapped for a FIFO since,
     * and opening a FIFO without a writer would block the daemon's main thread for good.
     * The descriptor is then checked for what it is; no O_NOFOLLOW, since a drop-in may be a
     * symlink to a regular file (config_dirs.h).
     */
    fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        ret = -errno;
        set_error(error, error_size, "%s: cannot open: %s", path, strerror(-ret));
        goto out;
    }
    if (fstat(fd, &st) < 0) {
        ret = -errno;
        set_error(error, error_size, "%s: cannot stat: %s", path, strerror(-ret));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        ret = -EINVAL;
        set_error(error, error_size, "%s: not a regular file", path);
        goto out;
    }
    /* A regular file ignores O_NONBLOCK; cleared anyway, so reads mean what they say. */
    if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) < 0) {
        ret = -errno;
        set_error(error, error_size, "%s: cannot read: %s", path, strerror(-ret));
        goto out;
    }
    if (st.st_size > YAML_JSON_MAX_SIZE) {
        ret = -EFBIG;
        set_error(error, error_size, "%s: larger than %d bytes", path, YAML_JSON_MAX_SIZE);
        goto out;
    }
    /* One byte more than allowed, to notice a file that grew since fstat(). */
    buffer = malloc(YAML_JSON_MAX_SIZE + 1);
    if (buffer == NULL) {
        ret = -ENOMEM;
        goto out;
    }
    while (length <= YAML_JSON_MAX_SIZE) {
        ssize_t count = read(fd, buffer + length, YAML_JSON_MAX_SIZE + 1 - length);
        if (count < 0 && errno == EINTR) {
            continue;
        }
        if (count < 0) {
            ret = -errno;
            set_error(error, error_size, "%s: cannot read: %s", path, strerror(-ret));
            goto out;
        }
        if (count == 0) {
            break;
        }
        length += (size_t)count;
    }
    if (length > YAML_JSON_MAX_SIZE) {
        ret = -EFBIG;
        set_error(error, error_size, "%s: larger than %d bytes", path, YAML_JSON_MAX_SIZE);
        goto out;
    }
    *data = buffer;
    *size = length;
    buffer = NULL;
    ret = 0;
out:
    free(buffer);
    if (fd >= 0) {
        close(fd);
    }
    return ret;
}

int yaml_json_parse_file(const char *path, struct yaml_json_document **document, char *error,
                         size_t error_size)
{
    char *data = NULL;
    size_t size = 0;
    int ret;

    *document = NULL;
    ret = read_file(path, &data, &size, error, error_size);
    if (ret < 0) {
        goto out;
    }
    ret = yaml_json_parse_buffer(path, data, size, document, error, error_size);
out:
    free(data);
    return ret;
}

json_t *yaml_json_root(const struct yaml_json_document *document)
{
    return document->root;
}

const char *yaml_json_name(const struct yaml_json_document *document)
{
    return document->name;
}

int yaml_json_position(const struct yaml_json_document *document, const char *path,
                       struct yaml_json_position *position)
{
    const char *cursor = path;
    size_t current = 0;

    if (document->node_count == 0) {
        return -ENOENT;
    }
    while (*cursor != '\0') {
        size_t found;
        if (*cursor == '[') {
            char *end;
            unsigned long long index;
            if (cursor[1] < '0' || cursor[1] > '9') {
                return -ENOENT;
            }
            errno = 0;
            index = strtoull(cursor + 1, &end, 10);
            if (errno != 0 || *end != ']' || index > SIZE_MAX) {
                return -ENOENT;
            }
            if (find_child(document, current, NULL, 0, (size_t)index, &found) < 0) {
                return -ENOENT;
            }
            cursor = end + 1;
        } else {
            size_t length = strcspn(cursor, ".[");
            if (find_child(document, current, cursor, length, 0, &found) < 0) {
                return -ENOENT;
            }
            cursor += length;
        }
        current = found;
        if (*cursor == '.') {
            cursor++;
            if (*cursor == '\0' || *cursor == '.' || *cursor == '[') {
                return -ENOENT;
            }
        }
    }
    *position = document->nodes[current].position;
    return 0;
}

/* --- Emitting --- */

struct emit_buffer {
    char *data;
    size_t length;
    size_t capacity;
};

static int emit_write(void *opaque, unsigned char *bytes, size_t size)
{
    struct emit_buffer *buffer = opaque;

    if (size >= SIZE_MAX / 2 - buffer->length) {
        return 0;
    }
    if (buffer->length + size + 1 > buffer->capacity) {
        size_t capacity = buffer->capacity == 0 ? 256 : buffer->capacity;
        char *data;
        while (capacity < buffer->length + size + 1) {
            capacity *= 2;
        }
        data = realloc(buffer->data, capacity);
        if (data == NULL) {
            return 0;
        }
        buffer->data = data;
        buffer->capacity = capacity;
    }
    memcpy(buffer->data + buffer->length, bytes, size);
    buffer->length += size;
    buffer->data[buffer->length] = '\0';
    return 1;
}

/*
 * Plain is prettier, but a string that this parser (or a YAML 1.1 reader such as PyYAML) would
 * take for something else must be quoted to come back as a string.
 */
static bool string_needs_quotes(const char *text, size_t length)
{
    static const char *const yaml11_words[] = {"y",  "Y",   "yes", "Yes", "YES", "n",
                                               "N",  "no",  "No",  "NO",  "on",  "On",
                                               "ON", "off", "Off", "OFF", NULL};
    json_int_t integer;

    if (resolve_plain(text, length, &integer) != PLAIN_STRING) {
        return true;
    }
    if (text_is_any(text, length, yaml11_words)) {
        return true;
    }
    /* Anything that starts like a number: floats, 1M, 0o17, .5, -1e3. */
    return (text[0] >= '0' && text[0] <= '9') ||
           ((text[0] == '-' || text[0] == '+' || text[0] == '.') && length > 1 &&
            ((text[1] >= '0' && text[1] <= '9') || text[1] == '.'));
}

static int emit_scalar(yaml_emitter_t *emitter, const char *text, size_t length,
                       yaml_scalar_style_t style)
{
    yaml_event_t event;

    /* libyaml falls back to a quoted style where the one asked for cannot hold the text. */
    if (!yaml_scalar_event_initialize(&event, NULL, NULL, (yaml_char_t *)text, (int)length, 1, 1,
                                      style)) {
        return -ENOMEM;
    }
    return yaml_emitter_emit(emitter, &event) ? 0 : -ENOMEM;
}

static int emit_value(yaml_emitter_t *emitter, const json_t *value, unsigned int depth)
{
    char number[64];
    yaml_event_t event;
    const char *key;
    json_t *member;
    size_t index;
    int ret;

    switch (json_typeof(value)) {
    case JSON_OBJECT:
    case JSON_ARRAY:
        if (depth >= YAML_JSON_MAX_DEPTH) {
            return -EINVAL;
        }
        if (json_is_object(value) ? !yaml_mapping_start_event_initialize(&event, NULL, NULL, 1,
                                                                         YAML_BLOCK_MAPPING_STYLE)
                                  : !yaml_sequence_start_event_initialize(
                                        &event, NULL, NULL, 1, YAML_BLOCK_SEQUENCE_STYLE)) {
            return -ENOMEM;
        }
        if (!yaml_emitter_emit(emitter, &event)) {
            return -ENOMEM;
        }
        if (json_is_object(value)) {
            json_object_foreach ((json_t *)value, key, member) {
                ret = emit_scalar(emitter, key, strlen(key), YAML_PLAIN_SCALAR_STYLE);
                if (ret == 0) {
                    ret = emit_value(emitter, member, depth + 1);
                }
                if (ret < 0) {
                    return ret;
                }
            }
            if (!yaml_mapping_end_event_initialize(&event)) {
                return -ENOMEM;
            }
        } else {
            json_array_foreach (value, index, member) {
                ret = emit_value(emitter, member, depth + 1);
                if (ret < 0) {
                    return ret;
                }
            }
            if (!yaml_sequence_end_event_initialize(&event)) {
                return -ENOMEM;
            }
        }
        return yaml_emitter_emit(emitter, &event) ? 0 : -ENOMEM;
    case JSON_STRING: {
        const char *text = json_string_value(value);
        size_t length = json_string_length(value);
        if (memchr(text, '\0', length) != NULL || length > INT32_MAX) {
            return -EINVAL;
        }
        if (string_needs_quotes(text, length)) {
            return emit_scalar(emitter, text, length, YAML_DOUBLE_QUOTED_SCALAR_STYLE);
        }
        /* Multi-line text reads best as a literal block. */
        return emit_scalar(emitter, text, length,
                           memchr(text, '\n', length) != NULL ? YAML_LITERAL_SCALAR_STYLE
                                                              : YAML_PLAIN_SCALAR_STYLE);
    }
    case JSON_INTEGER:
        snprintf(number, sizeof(number), "%" JSON_INTEGER_FORMAT, json_integer_value(value));
        return emit_scalar(emitter, number, strlen(number), YAML_PLAIN_SCALAR_STYLE);
    case JSON_REAL:
        snprintf(number, sizeof(number), "%.17g", json_real_value(value));
        return emit_scalar(emitter, number, strlen(number), YAML_PLAIN_SCALAR_STYLE);
    case JSON_TRUE:
        return emit_scalar(emitter, "true", 4, YAML_PLAIN_SCALAR_STYLE);
    case JSON_FALSE:
        return emit_scalar(emitter, "false", 5, YAML_PLAIN_SCALAR_STYLE);
    case JSON_NULL:
    default:
        return emit_scalar(emitter, "null", 4, YAML_PLAIN_SCALAR_STYLE);
    }
}

int yaml_json_emit(const json_t *value, char **text)
{
    struct emit_buffer buffer = {0};
    yaml_emitter_t emitter;
    bool emitter_ready = false;
    yaml_event_t event;
    int ret;

    *text = NULL;
    if (!yaml_emitter_initialize(&emitter)) {
        ret = -ENOMEM;
        goto out;
    }
    emitter_ready = true;
    yaml_emitter_set_output(&emitter, emit_write, &buffer);
    yaml_emitter_set_unicode(&emitter, 1);
    yaml_emitter_set_width(&emitter, -1);
    yaml_emitter_set_indent(&emitter, 2);
    if (!yaml_stream_start_event_initialize(&event, YAML_UTF8_ENCODING) ||
        !yaml_emitter_emit(&emitter, &event) ||
        !yaml_document_start_event_initialize(&event, NULL, NULL, NULL, 1) ||
        !yaml_emitter_emit(&emitter, &event)) {
        ret = -ENOMEM;
        goto out;
    }
    ret = emit_value(&emitter, value, 0);
    if (ret < 0) {
        goto out;
    }
    if (!yaml_document_end_event_initialize(&event, 1) || !yaml_emitter_emit(&emitter, &event) ||
        !yaml_stream_end_event_initialize(&event) || !yaml_emitter_emit(&emitter, &event) ||
        !yaml_emitter_flush(&emitter)) {
        ret = -ENOMEM;
        goto out;
    }
    if (buffer.data == NULL) {
        ret = emit_write(&buffer, (unsigned char *)"", 0) ? 0 : -ENOMEM;
        if (ret < 0) {
            goto out;
        }
    }
    *text = buffer.data;
    buffer.data = NULL;
    ret = 0;
out:
    if (emitter_ready) {
        yaml_emitter_delete(&emitter);
    }
    free(buffer.data);
    return ret;
}

/* The number of bytes of a well-formed UTF-8 sequence at `text`, or 0. */
static size_t utf8_sequence_length(const unsigned char *text)
{
    size_t length;
    size_t i;

    if (text[0] >= 0xc2 && text[0] <= 0xdf) {
        length = 2;
    } else if (text[0] >= 0xe0 && text[0] <= 0xef) {
        length = 3;
    } else if (text[0] >= 0xf0 && text[0] <= 0xf4) {
        length = 4;
    } else {
        return 0;
    }
    for (i = 1; i < length; i++) {
        if ((text[i] & 0xc0) != 0x80) {
            return 0;
        }
    }
    return length;
}

/* The escaped form of the character at `cursor`; sets how many bytes it stands for. */
static size_t quote_piece(const unsigned char *cursor, char piece[8], size_t *consumed)
{
    *consumed = 1;
    if (*cursor == '"' || *cursor == '\\') {
        piece[0] = '\\';
        piece[1] = (char)*cursor;
        return 2;
    }
    if (*cursor >= 0x20 && *cursor < 0x7f) {
        piece[0] = (char)*cursor;
        return 1;
    }
    if (*cursor >= 0x80 && (*consumed = utf8_sequence_length(cursor)) != 0) {
        memcpy(piece, cursor, *consumed);
        return *consumed;
    }
    *consumed = 1;
    return (size_t)snprintf(piece, 8, "\\x%02x", *cursor);
}

char *yaml_json_quote(char *buffer, size_t size, const char *text)
{
    const unsigned char *cursor = (const unsigned char *)text;
    size_t position = 0;
    size_t total = 2;
    size_t consumed;
    char piece[8];

    /* Room for the quotes, an ellipsis and the NUL. */
    if (size < 6) {
        if (size > 0) {
            buffer[0] = '\0';
        }
        return buffer;
    }
    while (*cursor != '\0') {
        total += quote_piece(cursor, piece, &consumed);
        cursor += consumed;
    }
    cursor = (const unsigned char *)text;
    buffer[position++] = '"';
    while (*cursor != '\0') {
        size_t piece_length = quote_piece(cursor, piece, &consumed);
        /* When it all does not fit, stop where `..."` and the NUL still do. */
        if (total >= size && position + piece_length + 5 > size) {
            memcpy(buffer + position, "...", 3);
            position += 3;
            break;
        }
        memcpy(buffer + position, piece, piece_length);
        position += piece_length;
        cursor += consumed;
    }
    buffer[position++] = '"';
    buffer[position] = '\0';
    return buffer;
}
