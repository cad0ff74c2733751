/*
 * Validation of the daemon's configuration file and of device drop-ins (see config.h).
 *
 * Every check reports the first problem it finds as one line that names the field and, when
 * the settings came from a file, the line and column that set it; the person reading it
 * should not need to look anything else up to fix it.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#include "device.h"
#include "endpoint.h"
#include "params.h"
#include "session.h"

/* Long enough for any path the validator builds from known keys; longer ones are cut. */

/*
 * The ranges of the supervisor's settings. A health check or a start-limit interval shorter
 * than a tenth of a second would treat a busy host as a failed one; the memory floor catches a
 * forgotten unit (device_memory_limit: 512 meaning 512M). Messages spell the numbers out.
 */
#define CONFIG_HEALTH_TIMEOUT_MIN_SECONDS       0.1
#define CONFIG_HEALTH_TIMEOUT_MAX_SECONDS       3600
#define CONFIG_START_LIMIT_BURST_MAX            1000
#define CONFIG_START_LIMIT_INTERVAL_MIN_SECONDS 0.1
#define CONFIG_START_LIMIT_INTERVAL_MAX_SECONDS 86400
#define CONFIG_DEVICE_MEMORY_LIMIT_MIN          (16ull << 20)

/* Where errors go and how they point back at their source. */
struct config_report {
    const struct yaml_json_document *document; /* NULL: no positions (JSON-RPC, flags) */
    const char *origin;                        /* the file, or e.g. "device_add" */
    char *error;
    size_t error_size;
    char *field; /* NULL, or CONFIG_FIELD_MAX bytes for the setting the error is about */
};

static const char *const device_keys[] = {"name", "plugin",  "enabled", "isolation", "restart",
                                          "user", "poll_us", "socket",  "params",    NULL};
static const char *const socket_keys[] = {"path", "user", "group", "mode", NULL};
static const char *const daemon_keys[] = {"devices_dirs",
                                          "plugin_dirs",
                                          "runtime_dir",
                                          "admin_socket",
                                          "admin_socket_mode",
                                          "admin_socket_group",
                                          "worker_threads",
                                          "log_level",
                                          "dma_message_chunk_size",
                                          "max_client_fds",
                                          "handshake_timeout",
                                          "default_isolation",
                                          "device_user",
                                          "health_timeout",
                                          "device_memory_limit",
                                          "start_limit_burst",
                                          "start_limit_interval",
                                          NULL};

/* The words of a setting with a fixed set of values, and the value each stands for. */
struct config_choice {
    const char *name;
    int value;
};

static const struct config_choice isolation_choices[] = {
    {"process", CONFIG_ISOLATION_PROCESS},
    {"thread", CONFIG_ISOLATION_THREAD},
    {NULL, 0},
};

static const struct config_choice restart_choices[] = {
    {"on-failure", CONFIG_RESTART_ON_FAILURE},
    {"always", CONFIG_RESTART_ALWAYS},
    {"no", CONFIG_RESTART_NO},
    {NULL, 0},
};

static const char *const log_level_names[] = {
    [LOG_ERR] = "err",   [LOG_WARNING] = "warning", [LOG_NOTICE] = "notice",
    [LOG_INFO] = "info", [LOG_DEBUG] = "debug",
};

/* Finds the node for `path`, or the nearest ancestor's key when the node is not there. */
static struct yaml_json_mark locate(const struct yaml_json_document *document, const char *path,
                                    bool at_key)
{
    struct yaml_json_mark top = {.line = 1, .column = 1};
    struct yaml_json_position position;
    char prefix[CONFIG_FIELD_MAX];

    snprintf(prefix, sizeof(prefix), "%s", path);
    for (;;) {
        char *dot;
        char *bracket;
        char *cut;

        if (yaml_json_position(document, prefix, &position) == 0) {
            return at_key ? position.key : position.value;
        }
        if (prefix[0] == '\0') {
            return top;
        }
        dot = strrchr(prefix, '.');
        bracket = strrchr(prefix, '[');
        cut = dot == NULL || (bracket != NULL && bracket > dot) ? bracket : dot;
        if (cut != NULL) {
            *cut = '\0';
        } else {
            prefix[0] = '\0';
        }
        at_key = true;
    }
}

/* Control characters in a field path (user keys) would garble the log line. */
static void copy_printable(char *buffer, size_t size, const char *text)
{
    size_t i;

    snprintf(buffer, size, "%s", text);
    for (i = 0; buffer[i] != '\0'; i++) {
        if ((unsigned char)buffer[i] < 0x20 || buffer[i] == 0x7f) {
            buffer[i] = '?';
        }
    }
}

/*
 * Writes "ORIGIN[:LINE:COLUMN]: FIELD: message". `location` is the path whose position is
 * reported; `field` the one shown, which differs for unknown keys (the parent is shown).
 */
__attribute__((format(printf, 6, 7))) static int report_at(const struct config_report *report,
                                                           int err, const char *location,
                                                           bool at_key, const char *field,
                                                           const char *format, ...)
{
    char message[CONFIG_ERROR_MAX];
    char place[CONFIG_ERROR_MAX];
    char shown[CONFIG_FIELD_MAX];
    va_list args;

    if (report->error == NULL || report->error_size == 0) {
        return err;
    }
    va_start(args, format);
    vsnprintf(message, sizeof(message), format, args);
    va_end(args);
    if (report->document != NULL) {
        struct yaml_json_mark mark = locate(report->document, location, at_key);
        snprintf(place, sizeof(place), "%s:%u:%u", report->origin, mark.line, mark.column);
    } else {
        snprintf(place, sizeof(place), "%s", report->origin);
    }
    copy_printable(shown, sizeof(shown), field);
    if (report->field != NULL)
        snprintf(report->field, CONFIG_FIELD_MAX, "%s", shown);
    if (shown[0] != '\0') {
        snprintf(report->error, report->error_size, "%s: %s: %s", place, shown, message);
    } else {
        snprintf(report->error, report->error_size, "%s: %s", place, message);
    }
    return err;
}

#define report_value(report, path, ...) report_at(report, -EINVAL, path, false, path, __VA_ARGS__)

/*
 * The first control character (below 0x20, or DEL) in `text`, or NUL. A name or path with
 * one would be written into log lines and error messages as is, where a newline forges a
 * line of its own; no file name or account a person means has one.
 */
static unsigned char find_control(const char *text)
{
    for (; *text != '\0'; text++) {
        unsigned char c = (unsigned char)*text;
        if (c < 0x20 || c == 0x7f) {
            return c;
        }
    }
    return 0;
}

#define report_control(report, path, c)                                                            \
    report_value(report, path, "contains a control character (0x%02x); names and paths may not",   \
                 (unsigned int)(c))

static const char *describe(const json_t *value, char *buffer, size_t size)
{
    char quoted[64];

    switch (json_typeof(value)) {
    case JSON_OBJECT:
        return "a mapping";
    case JSON_ARRAY:
        return "a list";
    case JSON_STRING:
        snprintf(buffer, size, "the string %s",
                 yaml_json_quote(quoted, sizeof(quoted), json_string_value(value)));
        return buffer;
    case JSON_INTEGER:
        snprintf(buffer, size, "the integer %" JSON_INTEGER_FORMAT, json_integer_value(value));
        return buffer;
    case JSON_REAL:
        snprintf(buffer, size, "the number %g", json_real_value(value));
        return buffer;
    case JSON_TRUE:
        return "true";
    case JSON_FALSE:
        return "false";
    case JSON_NULL:
    default:
        return "an empty value";
    }
}

static void join_path(char *buffer, size_t size, const char *parent, const char *key)
{
    if (parent[0] != '\0') {
        snprintf(buffer, size, "%s.%s", parent, key);
    } else {
        snprintf(buffer, size, "%s", key);
    }
}

static bool string_in(const char *text, const char *const *list)
{
    for (; *list != NULL; list++) {
        if (strcmp(text, *list) == 0) {
            return true;
        }
    }
    return false;
}

static int check_keys(const struct config_report *report, const json_t *object, const char *parent,
                      const char *const *allowed, const char *expected)
{
    char location[CONFIG_FIELD_MAX];
    char quoted[96];
    const char *key;
    json_t *member;

    json_object_foreach ((json_t *)object, key, member) {
        if (!string_in(key, allowed)) {
            join_path(location, sizeof(location), parent, key);
            return report_at(report, -EINVAL, location, true, parent, "unknown key %s; expected %s",
                             yaml_json_quote(quoted, sizeof(quoted), key), expected);
        }
    }
    return 0;
}

/* A string without NUL bytes (jansson allows them in strings built by hand). */
static int get_string(const struct config_report *report, const json_t *value, const char *path,
                      const char *expected, const char **text)
{
    char description[96];

    if (!json_is_string(value)) {
        return report_value(report, path, "expected %s, found %s", expected,
                            describe(value, description, sizeof(description)));
    }
    if (strlen(json_string_value(value)) != json_string_length(value)) {
        return report_value(report, path, "contains a NUL character");
    }
    *text = json_string_value(value);
    return 0;
}

bool config_name_valid(const char *name)
{
    size_t length = strlen(name);
    size_t i;

    if (length == 0 || length > CONFIG_NAME_MAX || name[0] == '.') {
        return false;
    }
    for (i = 0; i < length; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == '-')) {
            return false;
        }
    }
    return true;
}

static int parse_name(const struct config_report *report, const json_t *value, const char *path,
                      const char *what, char name[CONFIG_NAME_MAX + 1])
{
    const char *text;
    char quoted[96];
    int ret;

    ret = get_string(report, value, path, "a string", &text);
    if (ret < 0) {
        return ret;
    }
    if (!config_name_valid(text)) {
        return report_value(report, path,
                            "%s is not a valid %s name: use 1 to %d letters, digits, '_', '.' "
                            "or '-', not starting with '.'",
                            yaml_json_quote(quoted, sizeof(quoted), text), what, CONFIG_NAME_MAX);
    }
    memcpy(name, text, strlen(text) + 1);
    return 0;
}

/* An absolute path shorter than `size` bytes (the limit counts the NUL). */
static int parse_path(const struct config_report *report, const json_t *value, const char *path,
                      size_t size, char **result)
{
    const char *text;
    char quoted[96];
    char *copy;
    int ret;

    ret = get_string(report, value, path, "an absolute path", &text);
    if (ret < 0) {
        return ret;
    }
    if (find_control(text) != 0) {
        return report_control(report, path, find_control(text));
    }
    if (text[0] != '/') {
        return report_value(report, path, "%s is not an absolute path",
                            yaml_json_quote(quoted, sizeof(quoted), text));
    }
    if (strlen(text) >= size) {
        return report_value(report, path, "the path is longer than %zu bytes", size - 1);
    }
    copy = strdup(text);
    if (copy == NULL) {
        return -ENOMEM;
    }
    free(*result);
    *result = copy;
    return 0;
}

/*
 * A user or group: a name or a number, resolved when the socket is made. Refuses what no
 * passwd/group entry can hold, so a typo is caught here rather than at socket creation.
 */
static int parse_account(const struct config_report *report, const json_t *value, const char *path,
                         char **result)
{
    const char *text;
    char quoted[96];
    size_t length;
    size_t i;
    char *copy;
    int ret;

    /* A number is the id itself, kept as its decimal text as if it had been quoted. */
    if (json_is_integer(value)) {
        json_int_t id = json_integer_value(value);
        char digits[24];

        if (id < 0 || id > 4294967294)
            return report_value(
                report, path,
                "%" JSON_INTEGER_FORMAT " is not a user or group id (0 to 4294967294)", id);
        snprintf(digits, sizeof(digits), "%" JSON_INTEGER_FORMAT, id);
        copy = strdup(digits);
        if (copy == NULL)
            return -ENOMEM;
        free(*result);
        *result = copy;
        return 0;
    }
    ret = get_string(report, value, path, "a user or group name", &text);
    if (ret < 0) {
        return ret;
    }
    if (find_control(text) != 0) {
        return report_control(report, path, find_control(text));
    }
    length = strlen(text);
    for (i = 0; i < length; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c <= ' ' || c >= 0x7f || c == ':' || c == '/' || c == ',') {
            break;
        }
    }
    if (length == 0 || length > CONFIG_ACCOUNT_MAX || text[0] == '-' || i != length) {
        return report_value(report, path, "%s is not a valid user or group name",
                            yaml_json_quote(quoted, sizeof(quoted), text));
    }
    copy = strdup(text);
    if (copy == NULL) {
        return -ENOMEM;
    }
    free(*result);
    *result = copy;
    return 0;
}

/* The word that stands for `value` among `choices`, or NULL. */
static const char *choice_name(const struct config_choice *choices, int value)
{
    for (; choices->name != NULL; choices++) {
        if (choices->value == value) {
            return choices->name;
        }
    }
    return NULL;
}

/*
 * One of the words in `choices`, such as isolation's process and thread. A refusal lists
 * them all: "isolation: \"foo\" is not one of process, thread".
 */
static int parse_choice(const struct config_report *report, const json_t *value, const char *path,
                        const struct config_choice *choices, int *result)
{
    const struct config_choice *choice;
    char expected[128] = "one of ";
    char quoted[96];
    const char *text;
    size_t length;
    int ret;

    for (choice = choices; choice->name != NULL; choice++) {
        length = strlen(expected);
        snprintf(expected + length, sizeof(expected) - length, "%s%s",
                 choice == choices ? "" : ", ", choice->name);
    }
    ret = get_string(report, value, path, expected, &text);
    if (ret < 0) {
        return ret;
    }
    for (choice = choices; choice->name != NULL; choice++) {
        if (strcmp(text, choice->name) == 0) {
            *result = choice->value;
            return 0;
        }
    }
    return report_value(report, path, "%s is not %s", yaml_json_quote(quoted, sizeof(quoted), text),
                        expected);
}

/*
 * A permission mode in octal: the string "0660" or "660", or an integer read the way chmod(1)
 * reads its argument, so that 660 means 0660 as it does on a command line.
 */
static int parse_mode(const struct config_report *report, const json_t *value, const char *path,
                      mode_t *mode)
{
    char description[96];
    char digits[32];
    unsigned long result = 0;
    size_t i;

    if (json_is_integer(value) && json_integer_value(value) >= 0) {
        snprintf(digits, sizeof(digits), "%" JSON_INTEGER_FORMAT, json_integer_value(value));
    } else if (json_is_string(value) && json_string_length(value) < sizeof(digits) &&
               strlen(json_string_value(value)) == json_string_length(value)) {
        snprintf(digits, sizeof(digits), "%s", json_string_value(value));
    } else {
        return report_value(report, path, "expected an octal mode such as \"0660\", found %s",
                            describe(value, description, sizeof(description)));
    }
    if (digits[0] == '\0') {
        return report_value(report, path, "expected an octal mode such as \"0660\", found %s",
                            describe(value, description, sizeof(description)));
    }
    for (i = 0; digits[i] != '\0'; i++) {
        if (digits[i] < '0' || digits[i] > '7') {
            return report_value(report, path, "%s is not an octal mode such as \"0660\"",
                                describe(value, description, sizeof(description)));
        }
        result = result * 8 + (unsigned long)(digits[i] - '0');
        if (result > 07777) {
            return report_value(report, path, "%s is more than 07777",
                                describe(value, description, sizeof(description)));
        }
    }
    *mode = (mode_t)result;
    return 0;
}

/* What a plugin may receive: JSON that a drop-in can also express, so it can be persisted. */
static int check_param(const struct config_report *report, const json_t *value, const char *path,
                       unsigned int depth)
{
    char child[CONFIG_FIELD_MAX];
    const char *key;
    json_t *member;
    size_t index;
    int ret;

    switch (json_typeof(value)) {
    case JSON_OBJECT:
    case JSON_ARRAY:
        if (depth >= YAML_JSON_MAX_DEPTH) {
            return report_value(report, path, "nested more than %d levels deep",
                                YAML_JSON_MAX_DEPTH);
        }
        if (json_is_object(value)) {
            json_object_foreach ((json_t *)value, key, member) {
                snprintf(child, sizeof(child), "%s.%s", path, key);
                if (find_control(key) != 0) {
                    return report_at(report, -EINVAL, child, true, child,
                                     "the key contains a control character (0x%02x); "
                                     "names and paths may not",
                                     (unsigned int)find_control(key));
                }
                ret = check_param(report, member, child, depth + 1);
                if (ret < 0) {
                    return ret;
                }
            }
        } else {
            json_array_foreach (value, index, member) {
                snprintf(child, sizeof(child), "%s[%zu]", path, index);
                ret = check_param(report, member, child, depth + 1);
                if (ret < 0) {
                    return ret;
                }
            }
        }
        return 0;
    case JSON_STRING:
        if (strlen(json_string_value(value)) != json_string_length(value)) {
            return report_value(report, path, "contains a NUL character");
        }
        return 0;
    case JSON_REAL:
        return report_value(report, path,
                            "real numbers are not supported; write the value as a string");
    default:
        return 0;
    }
}

static int parse_socket(const struct config_report *report, const json_t *socket,
                        struct config_device *device)
{
    char description[96];
    json_t *value;
    int ret;

    if (socket == NULL || json_is_null(socket)) {
        return 0;
    }
    if (!json_is_object(socket)) {
        return report_value(report, "socket",
                            "expected a mapping of path, user, group and mode, found %s",
                            describe(socket, description, sizeof(description)));
    }
    ret = check_keys(report, socket, "socket", socket_keys, "path, user, group or mode");
    if (ret < 0) {
        return ret;
    }
    value = json_object_get(socket, "path");
    if (value != NULL && !json_is_null(value)) {
        ret =
            parse_path(report, value, "socket.path", CONFIG_SOCKET_PATH_MAX, &device->socket_path);
        if (ret < 0) {
            return ret;
        }
    }
    value = json_object_get(socket, "user");
    if (value != NULL && !json_is_null(value)) {
        ret = parse_account(report, value, "socket.user", &device->socket_user);
        if (ret < 0) {
            return ret;
        }
    }
    value = json_object_get(socket, "group");
    if (value != NULL && !json_is_null(value)) {
        ret = parse_account(report, value, "socket.group", &device->socket_group);
        if (ret < 0) {
            return ret;
        }
    }
    value = json_object_get(socket, "mode");
    if (value != NULL && !json_is_null(value)) {
        ret = parse_mode(report, value, "socket.mode", &device->socket_mode);
        if (ret < 0) {
            return ret;
        }
        device->socket_mode_set = true;
    }
    return 0;
}

static int parse_integer(const struct config_report *report, const json_t *value, const char *key,
                         json_int_t min, json_int_t max, json_int_t *result);

static int parse_device(const struct config_report *report, const json_t *settings,
                        const char *default_name, struct config_device *device)
{
    char description[96];
    char quoted[96];
    json_t *value;
    int ret;

    if (!json_is_object(settings)) {
        return report_value(report, "", "expected a mapping of device settings, found %s",
                            describe(settings, description, sizeof(description)));
    }
    ret = check_keys(report, settings, "", device_keys,
                     "name, plugin, enabled, isolation, restart, user, socket or params");
    if (ret < 0) {
        return ret;
    }

    value = json_object_get(settings, "name");
    if (value != NULL && !json_is_null(value)) {
        ret = parse_name(report, value, "name", "device", device->name);
    } else if (default_name == NULL) {
        ret = report_value(report, "name", "missing; a device needs a name");
    } else if (!config_name_valid(default_name)) {
        ret = report_value(report, "name",
                           "missing, and the file name gives %s, which is not a valid device "
                           "name; add a name or rename the file",
                           yaml_json_quote(quoted, sizeof(quoted), default_name));
    } else {
        memcpy(device->name, default_name, strlen(default_name) + 1);
    }
    if (ret < 0) {
        return ret;
    }

    value = json_object_get(settings, "plugin");
    if (value == NULL || json_is_null(value)) {
        return report_value(report, "plugin",
                            "missing; name the plugin that implements the device");
    }
    ret = parse_name(report, value, "plugin", "plugin", device->plugin);
    if (ret < 0) {
        return ret;
    }

    value = json_object_get(settings, "enabled");
    if (value != NULL && !json_is_null(value)) {
        if (!json_is_boolean(value)) {
            return report_value(report, "enabled", "expected true or false, found %s",
                                describe(value, description, sizeof(description)));
        }
        device->enabled = json_is_true(value);
    }

    value = json_object_get(settings, "isolation");
    if (value != NULL && !json_is_null(value)) {
        int isolation;

        ret = parse_choice(report, value, "isolation", isolation_choices, &isolation);
        if (ret < 0) {
            return ret;
        }
        device->isolation = (enum config_isolation)isolation;
    }

    /*
     * A YAML 1.1 reader (PyYAML, Ansible) turns a plain `restart: no` into false before it
     * reaches a JSON client; ours keeps it a string. false means no either way; true could
     * mean on-failure or always, so it is refused.
     */
    value = json_object_get(settings, "restart");
    if (value != NULL && json_is_false(value)) {
        device->restart = CONFIG_RESTART_NO;
    } else if (value != NULL && !json_is_null(value)) {
        int restart;

        ret = parse_choice(report, value, "restart", restart_choices, &restart);
        if (ret < 0) {
            return ret;
        }
        device->restart = (enum config_restart)restart;
    }

    value = json_object_get(settings, "user");
    if (value != NULL && !json_is_null(value)) {
        ret = parse_account(report, value, "user", &device->user);
        if (ret < 0) {
            return ret;
        }
        /* On a worker thread the plugin runs as the daemon: the account would be ignored. */
        if (device->isolation == CONFIG_ISOLATION_THREAD) {
            return report_value(report, "user",
                                "a device with isolation: thread runs as the daemon; an account "
                                "of its own needs isolation: process");
        }
    }

    value = json_object_get(settings, "poll_us");
    if (value != NULL && !json_is_null(value)) {
        json_int_t poll_usec;

        ret = parse_integer(report, value, "poll_us", 0, CONFIG_POLL_USEC_MAX, &poll_usec);
        if (ret < 0) {
            return ret;
        }
        device->poll_usec = (uint32_t)poll_usec;
    }

    ret = parse_socket(report, json_object_get(settings, "socket"), device);
    if (ret < 0) {
        return ret;
    }

    value = json_object_get(settings, "params");
    if (value == NULL || json_is_null(value)) {
        device->params = json_object();
    } else if (!json_is_object(value)) {
        return report_value(report, "params",
                            "expected a mapping of the plugin's parameters, found %s",
                            describe(value, description, sizeof(description)));
    } else {
        ret = check_param(report, value, "params", 1);
        if (ret < 0) {
            return ret;
        }
        device->params = json_deep_copy(value);
    }
    return device->params != NULL ? 0 : -ENOMEM;
}

static struct config_device *device_new(void)
{
    struct config_device *device = calloc(1, sizeof(*device));

    if (device != NULL) {
        device->enabled = true;
        device->socket_mode = CONFIG_DEVICE_SOCKET_MODE;
    }
    return device;
}

void config_device_free(struct config_device *device)
{
    if (device == NULL) {
        return;
    }
    free(device->socket_path);
    free(device->socket_user);
    free(device->socket_group);
    free(device->user);
    json_decref(device->params);
    free(device->origin);
    yaml_json_free(device->document);
    free(device);
}

int config_device_load(const char *path, struct config_device **result, char *error,
                       size_t error_size)
{
    struct config_report report = {.origin = path, .error = error, .error_size = error_size};
    struct yaml_json_document *document = NULL;
    struct config_device *device = NULL;
    const char *base = strrchr(path, '/');
    char stem[NAME_MAX + 1];
    size_t length;
    int ret;

    *result = NULL;
    base = base != NULL ? base + 1 : path;
    length = strlen(base);
    if (length > 5 && strcmp(base + length - 5, ".yaml") == 0) {
        length -= 5;
    }
    /* A stem too long to keep is no valid name either; the message shows it cut. */
    snprintf(stem, sizeof(stem), "%.*s", (int)(length < sizeof(stem) ? length : sizeof(stem) - 1),
             base);

    ret = yaml_json_parse_file(path, &document, error, error_size);
    if (ret < 0) {
        goto out;
    }
    report.document = document;
    device = device_new();
    if (device == NULL) {
        ret = -ENOMEM;
        goto out;
    }
    ret = parse_device(&report, yaml_json_root(document), stem, device);
    if (ret < 0) {
        goto out;
    }
    device->origin = strdup(path);
    if (device->origin == NULL) {
        ret = -ENOMEM;
        goto out;
    }
    device->document = document;
    document = NULL;
    *result = device;
    device = NULL;
out:
    if (ret == -ENOMEM && error != NULL && error_size > 0) {
        snprintf(error, error_size, "%s: out of memory", path);
    }
    config_device_free(device);
    yaml_json_free(document);
    return ret;
}

int config_device_from_json(const json_t *settings, const char *context, const char *default_name,
                            struct config_device **result, char *error, size_t error_size)
{
    return config_device_from_json_field(settings, context, default_name, result, error, error_size,
                                         NULL);
}

int config_device_from_json_field(const json_t *settings, const char *context,
                                  const char *default_name, struct config_device **result,
                                  char *error, size_t error_size, char *field)
{
    struct config_report report = {
        .origin = context, .error = error, .error_size = error_size, .field = field};
    struct config_device *device = NULL;
    int ret;

    *result = NULL;
    device = device_new();
    if (device == NULL) {
        ret = -ENOMEM;
        goto out;
    }
    if (settings == NULL) {
        ret = report_value(&report, "", "expected a mapping of device settings");
        goto out;
    }
    ret = parse_device(&report, settings, default_name, device);
    if (ret < 0) {
        goto out;
    }
    device->origin = strdup(context);
    if (device->origin == NULL) {
        ret = -ENOMEM;
        goto out;
    }
    *result = device;
    device = NULL;
out:
    if (ret == -ENOMEM && error != NULL && error_size > 0) {
        snprintf(error, error_size, "%s: out of memory", context);
    }
    config_device_free(device);
    return ret;
}

static bool same_string(const char *a, const char *b)
{
    return a == NULL || b == NULL ? a == b : strcmp(a, b) == 0;
}

bool config_device_equal(const struct config_device *a, const struct config_device *b)
{
    return strcmp(a->name, b->name) == 0 && strcmp(a->plugin, b->plugin) == 0 &&
           a->enabled == b->enabled && same_string(a->socket_path, b->socket_path) &&
           same_string(a->socket_user, b->socket_user) &&
           same_string(a->socket_group, b->socket_group) &&
           a->socket_mode_set == b->socket_mode_set && a->socket_mode == b->socket_mode &&
           a->isolation == b->isolation && a->restart == b->restart &&
           same_string(a->user, b->user) && a->poll_usec == b->poll_usec &&
           json_equal(a->params, b->params);
}

static void device_location(const struct config_device *device, const char *path, bool at_key,
                            char *buffer, size_t size)
{
    struct yaml_json_mark mark;

    if (device->document == NULL) {
        snprintf(buffer, size, "%s", device->origin != NULL ? device->origin : "");
        return;
    }
    mark = locate(device->document, path, at_key);
    snprintf(buffer, size, "%s:%u:%u", device->origin, mark.line, mark.column);
}

void config_device_location(const struct config_device *device, const char *path, char *buffer,
                            size_t size)
{
    device_location(device, path, false, buffer, size);
}

void config_device_param_location(const struct config_device *device, const char *field,
                                  char *buffer, size_t size)
{
    char path[CONFIG_FIELD_MAX];

    /* Without a field, the params key itself rather than its value. */
    if (field == NULL || field[0] == '\0') {
        device_location(device, "params", true, buffer, size);
        return;
    }
    snprintf(path, sizeof(path), "params.%s", field);
    device_location(device, path, false, buffer, size);
}

void config_device_format_plugin_error(const struct config_device *device,
                                       const struct vfio_userd_error *plugin_error, char *buffer,
                                       size_t size)
{
    /* The plugin fills fixed arrays; do not trust it to terminate them. */
    int field_length = (int)strnlen(plugin_error->field, sizeof(plugin_error->field));
    int message_length = (int)strnlen(plugin_error->message, sizeof(plugin_error->message));
    char field[sizeof(plugin_error->field) + 1];
    char location[CONFIG_ERROR_MAX];

    snprintf(field, sizeof(field), "%.*s", field_length, plugin_error->field);
    config_device_param_location(device, field, location, sizeof(location));
    if (field[0] != '\0') {
        snprintf(buffer, size, "%s: params.%s: %.*s", location, field, message_length,
                 plugin_error->message);
    } else {
        snprintf(buffer, size, "%s: %.*s", location, message_length, plugin_error->message);
    }
}

/* Steals `value` (even on failure, as json_object_set_new does). */
static int set_member(json_t *object, const char *key, json_t *value)
{
    return value != NULL && json_object_set_new(object, key, value) == 0 ? 0 : -ENOMEM;
}

json_t *config_device_to_json(const struct config_device *device)
{
    json_t *object = json_object();
    json_t *socket = NULL;
    char mode[16];
    int ret;

    if (object == NULL) {
        return NULL;
    }
    ret = set_member(object, "name", json_string(device->name));
    if (ret == 0) {
        ret = set_member(object, "plugin", json_string(device->plugin));
    }
    if (ret == 0) {
        ret = set_member(object, "enabled", json_boolean(device->enabled));
    }
    /* Only what the device itself says: a device that leaves isolation to the daemon's
     * default_isolation keeps doing so when it is persisted and the default changes. */
    if (ret == 0 && device->isolation != CONFIG_ISOLATION_DEFAULT) {
        ret = set_member(object, "isolation",
                         json_string(choice_name(isolation_choices, (int)device->isolation)));
    }
    if (ret == 0 && device->restart != CONFIG_RESTART_ON_FAILURE) {
        ret = set_member(object, "restart",
                         json_string(choice_name(restart_choices, (int)device->restart)));
    }
    if (ret == 0 && device->user != NULL) {
        ret = set_member(object, "user", json_string(device->user));
    }
    if (ret == 0 && device->poll_usec != 0) {
        ret = set_member(object, "poll_us", json_integer((json_int_t)device->poll_usec));
    }
    if (ret == 0 && (device->socket_path != NULL || device->socket_user != NULL ||
                     device->socket_group != NULL || device->socket_mode_set)) {
        socket = json_object();
        ret = set_member(object, "socket", socket);
        if (ret == 0 && device->socket_path != NULL) {
            ret = set_member(socket, "path", json_string(device->socket_path));
        }
        if (ret == 0 && device->socket_user != NULL) {
            ret = set_member(socket, "user", json_string(device->socket_user));
        }
        if (ret == 0 && device->socket_group != NULL) {
            ret = set_member(socket, "group", json_string(device->socket_group));
        }
        if (ret == 0 && device->socket_mode_set) {
            snprintf(mode, sizeof(mode), "%04o", (unsigned int)device->socket_mode);
            ret = set_member(socket, "mode", json_string(mode));
        }
    }
    if (ret == 0) {
        ret = set_member(object, "params",
                         device->params != NULL ? json_deep_copy(device->params) : json_object());
    }
    if (ret < 0) {
        json_decref(object);
        return NULL;
    }
    return object;
}

int config_device_to_yaml(const struct config_device *device, char **text)
{
    json_t *object = NULL;
    char *body = NULL;
    int ret;

    *text = NULL;
    object = config_device_to_json(device);
    if (object == NULL) {
        ret = -ENOMEM;
        goto out;
    }
    ret = yaml_json_emit(object, &body);
    if (ret < 0) {
        goto out;
    }
    if (asprintf(text,
                 "# vfio-userd device %s, written by device_add --persist.\n"
                 "# See vfio-userd.yaml(5).\n%s",
                 device->name, body) < 0) {
        *text = NULL;
        ret = -ENOMEM;
        goto out;
    }
    ret = 0;
out:
    free(body);
    json_decref(object);
    return ret;
}

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

static int write_all(int fd, const char *data, size_t length)
{
    while (length > 0) {
        ssize_t count = write(fd, data, length);
        if (count < 0 && errno == EINTR) {
            continue;
        }
        if (count < 0) {
            return -errno;
        }
        data += count;
        length -= (size_t)count;
    }
    return 0;
}

int config_device_persist(const struct config_device *device, const char *directory, char *error,
                          size_t error_size)
{
    char temporary[PATH_MAX];
    char path[PATH_MAX];
    bool created = false;
    char *text = NULL;
    int directory_fd = -1;
    int fd = -1;
    int ret;

    if (!config_name_valid(device->name)) {
        ret = -EINVAL;
        set_error(error, error_size, "%s: invalid device name", directory);
        goto out;
    }
    if ((size_t)snprintf(path, sizeof(path), "%s/%s.yaml", directory, device->name) >=
            sizeof(path) ||
        (size_t)snprintf(temporary, sizeof(temporary), "%s/.%s.yaml.XXXXXX", directory,
                         device->name) >= sizeof(temporary)) {
        ret = -ENAMETOOLONG;
        set_error(error, error_size, "%s: path too long", directory);
        goto out;
    }
    ret = config_device_to_yaml(device, &text);
    if (ret < 0) {
        set_error(error, error_size, "%s: cannot serialise the device: %s", path, strerror(-ret));
        goto out;
    }
    if (mkdir(directory, 0755) < 0 && errno != EEXIST) {
        ret = -errno;
        set_error(error, error_size, "%s: cannot create the directory: %s", directory,
                  strerror(-ret));
        goto out;
    }
    /* A hidden name, so that a directory scan never picks up a half-written file. */
    fd = mkostemp(temporary, O_CLOEXEC);
    if (fd < 0) {
        ret = -errno;
        set_error(error, error_size, "%s: cannot create a file: %s", directory, strerror(-ret));
        goto out;
    }
    created = true;
    ret = write_all(fd, text, strlen(text));
    if (ret == 0 && fchmod(fd, 0644) < 0) {
        ret = -errno;
    }
    if (ret == 0 && fsync(fd) < 0) {
        ret = -errno;
    }
    if (close(fd) < 0 && ret == 0) {
        ret = -errno;
    }
    fd = -1;
    if (ret < 0) {
        set_error(error, error_size, "%s: cannot write: %s", temporary, strerror(-ret));
        goto out;
    }
    if (rename(temporary, path) < 0) {
        ret = -errno;
        set_error(error, error_size, "%s: cannot rename into place: %s", path, strerror(-ret));
        goto out;
    }
    created = false;
    /* The rename is durable only once the directory is. */
    directory_fd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (directory_fd < 0 || fsync(directory_fd) < 0) {
        ret = -errno;
        set_error(error, error_size, "%s: cannot sync the directory: %s", directory,
                  strerror(-ret));
        goto out;
    }
    ret = 0;
out:
    if (fd >= 0) {
        close(fd);
    }
    if (created) {
        unlink(temporary);
    }
    if (directory_fd >= 0) {
        close(directory_fd);
    }
    free(text);
    return ret;
}

/* --- The daemon's own settings --- */

static void strv_free(char **list, size_t count)
{
    size_t i;

    if (list == NULL) {
        return;
    }
    for (i = 0; i < count; i++) {
        free(list[i]);
    }
    free(list);
}

static int strv_copy(char *const *source, size_t count, char ***result)
{
    char **list = calloc(count + 1, sizeof(*list));
    size_t i;

    if (list == NULL) {
        return -ENOMEM;
    }
    for (i = 0; i < count; i++) {
        list[i] = strdup(source[i]);
        if (list[i] == NULL) {
            strv_free(list, i);
            return -ENOMEM;
        }
    }
    *result = list;
    return 0;
}

static int copy_optional(const char *source, char **result)
{
    *result = NULL;
    if (source != NULL) {
        *result = strdup(source);
        if (*result == NULL) {
            return -ENOMEM;
        }
    }
    return 0;
}

static void daemon_clear(struct config_daemon *daemon)
{
    strv_free(daemon->devices_dirs, daemon->devices_dir_count);
    strv_free(daemon->plugin_dirs, daemon->plugin_dir_count);
    free(daemon->runtime_dir);
    free(daemon->admin_socket);
    free(daemon->admin_socket_group);
    free(daemon->device_user);
    free(daemon->source);
    memset(daemon, 0, sizeof(*daemon));
}

static int default_devices_dirs(char ***list, size_t *count)
{
    static char *const dirs[] = {CONFIG_DEVICES_DIR_ETC, CONFIG_DEVICES_DIR_RUN,
                                 CONFIG_DEVICES_DIR_LIB};
    char **copy;
    int ret;

    ret = strv_copy(dirs, 3, &copy);
    if (ret < 0) {
        return ret;
    }
    strv_free(*list, *count);
    *list = copy;
    *count = 3;
    return 0;
}

static int default_plugin_dirs(char ***list, size_t *count)
{
    static char *const dirs[] = {VFIO_USERD_PLUGINDIR};
    char **copy;
    int ret;

    ret = strv_copy(dirs, 1, &copy);
    if (ret < 0) {
        return ret;
    }
    strv_free(*list, *count);
    *list = copy;
    *count = 1;
    return 0;
}

static int replace_string(char **field, const char *value)
{
    char *copy = NULL;

    if (value != NULL) {
        copy = strdup(value);
        if (copy == NULL) {
            return -ENOMEM;
        }
    }
    free(*field);
    *field = copy;
    return 0;
}

static int daemon_copy(struct config_daemon *target, const struct config_daemon *source)
{
    int ret;

    memset(target, 0, sizeof(*target));
    target->admin_socket_mode = source->admin_socket_mode;
    target->worker_threads = source->worker_threads;
    target->log_level = source->log_level;
    target->dma_message_chunk_size = source->dma_message_chunk_size;
    target->max_client_fds = source->max_client_fds;
    target->handshake_timeout_usec = source->handshake_timeout_usec;
    target->default_isolation = source->default_isolation;
    target->health_timeout_usec = source->health_timeout_usec;
    target->device_memory_limit = source->device_memory_limit;
    target->start_limit_burst = source->start_limit_burst;
    target->start_limit_interval_usec = source->start_limit_interval_usec;
    ret = strv_copy(source->devices_dirs, source->devices_dir_count, &target->devices_dirs);
    if (ret == 0) {
        target->devices_dir_count = source->devices_dir_count;
        ret = strv_copy(source->plugin_dirs, source->plugin_dir_count, &target->plugin_dirs);
    }
    if (ret == 0) {
        target->plugin_dir_count = source->plugin_dir_count;
        ret = copy_optional(source->runtime_dir, &target->runtime_dir);
    }
    if (ret == 0) {
        ret = copy_optional(source->admin_socket, &target->admin_socket);
    }
    if (ret == 0) {
        ret = copy_optional(source->admin_socket_group, &target->admin_socket_group);
    }
    if (ret == 0) {
        ret = copy_optional(source->device_user, &target->device_user);
    }
    if (ret == 0) {
        ret = copy_optional(source->source, &target->source);
    }
    if (ret < 0) {
        daemon_clear(target);
    }
    return ret;
}

int config_daemon_new(struct config_daemon **result)
{
    struct config_daemon *daemon = calloc(1, sizeof(*daemon));
    int ret;

    *result = NULL;
    if (daemon == NULL) {
        return -ENOMEM;
    }
    daemon->admin_socket_mode = CONFIG_ADMIN_SOCKET_MODE;
    daemon->worker_threads = 0;
    daemon->log_level = CONFIG_LOG_LEVEL;
    daemon->dma_message_chunk_size = VU_DMA_CHUNK_SIZE_DEFAULT;
    daemon->max_client_fds = VU_MAX_CLIENT_FDS_DEFAULT;
    daemon->handshake_timeout_usec = VU_ENDPOINT_HANDSHAKE_TIMEOUT_USEC;
    daemon->default_isolation = CONFIG_ISOLATION_PROCESS;
    daemon->health_timeout_usec = CONFIG_HEALTH_TIMEOUT_USEC;
    daemon->device_memory_limit = CONFIG_DEVICE_MEMORY_LIMIT;
    daemon->start_limit_burst = CONFIG_START_LIMIT_BURST;
    daemon->start_limit_interval_usec = CONFIG_START_LIMIT_INTERVAL_USEC;
    ret = default_devices_dirs(&daemon->devices_dirs, &daemon->devices_dir_count);
    if (ret == 0) {
        ret = default_plugin_dirs(&daemon->plugin_dirs, &daemon->plugin_dir_count);
    }
    if (ret == 0) {
        ret = replace_string(&daemon->runtime_dir, CONFIG_RUNTIME_DIR);
    }
    if (ret < 0) {
        config_daemon_free(daemon);
        return ret;
    }
    *result = daemon;
    return 0;
}

void config_daemon_free(struct config_daemon *daemon)
{
    if (daemon == NULL) {
        return;
    }
    daemon_clear(daemon);
    free(daemon);
}

static int parse_directory_list(const struct config_report *report, const json_t *value,
                                const char *key, char ***result, size_t *result_count)
{
    char description[96];
    char path[CONFIG_FIELD_MAX];
    char **list = NULL;
    size_t count = 0;
    json_t *item;
    size_t index;
    int ret;

    if (!json_is_array(value)) {
        return report_value(report, key, "expected a list of absolute paths, found %s",
                            describe(value, description, sizeof(description)));
    }
    if (json_array_size(value) > CONFIG_LIST_MAX) {
        return report_value(report, key, "more than %d directories", CONFIG_LIST_MAX);
    }
    list = calloc(json_array_size(value) + 1, sizeof(*list));
    if (list == NULL) {
        return -ENOMEM;
    }
    json_array_foreach (value, index, item) {
        snprintf(path, sizeof(path), "%s[%zu]", key, index);
        ret = parse_path(report, item, path, PATH_MAX, &list[count]);
        if (ret < 0) {
            goto out;
        }
        count++;
    }
    strv_free(*result, *result_count);
    *result = list;
    *result_count = count;
    list = NULL;
    ret = 0;
out:
    strv_free(list, count);
    return ret;
}

/*
 * A size in bytes: an integer, or a string with a unit such as "64K" or "1G", read as plugin
 * parameters are. -EINVAL for anything else; the caller reports it with its own range.
 */
static int read_size(const json_t *value, const char *key, uint64_t *bytes)
{
    struct vfio_userd_error ignored = {0};
    json_t *wrapper = json_object();
    int ret;

    if (wrapper == NULL || json_object_set(wrapper, key, (json_t *)value) < 0) {
        json_decref(wrapper);
        return -ENOMEM;
    }
    ret = vu_params_get_u64(wrapper, key, 0, 0, UINT64_MAX, bytes, &ignored);
    json_decref(wrapper);
    return ret < 0 ? -EINVAL : 0;
}

/* dma_message_chunk_size: a size, a power of two from 4 KiB to 1 MiB. */
static int parse_dma_chunk_size(const struct config_report *report, const json_t *value,
                                const char *key, uint32_t *result)
{
    char description[96];
    uint64_t bytes = 0;
    int ret;

    ret = read_size(value, key, &bytes);
    if (ret == -ENOMEM) {
        return ret;
    }
    if (ret < 0 || !vu_dma_chunk_size_valid(bytes)) {
        return report_value(report, key,
                            "expected a power of two from 4K to 1M, such as 65536 or 64K, "
                            "found %s",
                            describe(value, description, sizeof(description)));
    }
    *result = (uint32_t)bytes;
    return 0;
}

/*
 * device_memory_limit: a size of at least CONFIG_DEVICE_MEMORY_LIMIT_MIN, so that a
 * forgotten unit (512 for 512M) is caught here rather than as device hosts that cannot
 * start; 0 or "infinity" for no limit.
 */
static int parse_memory_limit(const struct config_report *report, const json_t *value,
                              const char *key, uint64_t *result)
{
    char description[96];
    uint64_t bytes = 0;
    int ret;

    if (json_is_string(value) && strcmp(json_string_value(value), "infinity") == 0 &&
        json_string_length(value) == strlen("infinity")) {
        *result = 0;
        return 0;
    }
    ret = read_size(value, key, &bytes);
    if (ret == -ENOMEM) {
        return ret;
    }
    if (ret < 0 || (bytes != 0 && bytes < CONFIG_DEVICE_MEMORY_LIMIT_MIN)) {
        return report_value(report, key,
                            "expected a size from 16M, such as 512M or 1G, or 0 or infinity for "
                            "no limit, found %s",
                            describe(value, description, sizeof(description)));
    }
    *result = bytes;
    return 0;
}

/* An integer from `min` to `max` (max_client_fds, start_limit_burst). */
static int parse_integer(const struct config_report *report, const json_t *value, const char *key,
                         json_int_t min, json_int_t max, json_int_t *result)
{
    char description[96];

    if (!json_is_integer(value) || json_integer_value(value) < min ||
        json_integer_value(value) > max) {
        return report_value(report, key,
                            "expected an integer from %" JSON_INTEGER_FORMAT
                            " to %" JSON_INTEGER_FORMAT ", found %s",
                            min, max, describe(value, description, sizeof(description)));
    }
    *result = json_integer_value(value);
    return 0;
}

/*
 * A duration in seconds (handshake_timeout, health_timeout, start_limit_interval): an integer
 * or a decimal string such as "2.5" (the YAML reader hands numbers with a fraction over as
 * strings), from `min` to `max_seconds`; 0 too when `zero_is_no_limit`.
 */
static int parse_seconds(const struct config_report *report, const json_t *value, const char *key,
                         double min, bool zero_is_no_limit, unsigned int max_seconds,
                         uint64_t *result)
{
    const double max = max_seconds;
    char description[96];
    double seconds = -1;
    char *end = NULL;

    if (json_is_integer(value)) {
        seconds = (double)json_integer_value(value);
    } else if (json_is_real(value)) {
        seconds = json_real_value(value);
    } else if (json_is_string(value) && json_string_value(value)[0] >= '0' &&
               json_string_value(value)[0] <= '9') {
        seconds = strtod(json_string_value(value), &end);
        if (*end != '\0') {
            seconds = -1;
        }
    }
    if (!((seconds >= min || (zero_is_no_limit && seconds == 0)) && seconds <= max)) {
        return report_value(report, key,
                            "expected a number of seconds from %g%s to %u, such as 10 or 2.5, "
                            "found %s",
                            zero_is_no_limit ? 0 : min, zero_is_no_limit ? " (no limit)" : "",
                            max_seconds, describe(value, description, sizeof(description)));
    }
    *result = (uint64_t)(seconds * 1e6 + 0.5);
    return 0;
}

static int apply_daemon_key(const struct config_report *report, struct config_daemon *daemon,
                            const char *key, const json_t *value)
{
    char description[96];
    char quoted[96];
    json_int_t integer;
    const char *text;
    int choice;
    int level;
    int ret;

    if (strcmp(key, "devices_dirs") == 0) {
        return json_is_null(value)
                   ? default_devices_dirs(&daemon->devices_dirs, &daemon->devices_dir_count)
                   : parse_directory_list(report, value, key, &daemon->devices_dirs,
                                          &daemon->devices_dir_count);
    }
    if (strcmp(key, "plugin_dirs") == 0) {
        return json_is_null(value)
                   ? default_plugin_dirs(&daemon->plugin_dirs, &daemon->plugin_dir_count)
                   : parse_directory_list(report, value, key, &daemon->plugin_dirs,
                                          &daemon->plugin_dir_count);
    }
    if (strcmp(key, "runtime_dir") == 0) {
        return json_is_null(value) ? replace_string(&daemon->runtime_dir, CONFIG_RUNTIME_DIR)
                                   : parse_path(report, value, key, PATH_MAX, &daemon->runtime_dir);
    }
    if (strcmp(key, "admin_socket") == 0) {
        return json_is_null(value)
                   ? replace_string(&daemon->admin_socket, NULL)
                   : parse_path(report, value, key, CONFIG_SOCKET_PATH_MAX, &daemon->admin_socket);
    }
    if (strcmp(key, "admin_socket_mode") == 0) {
        daemon->admin_socket_mode = CONFIG_ADMIN_SOCKET_MODE;
        return json_is_null(value) ? 0 : parse_mode(report, value, key, &daemon->admin_socket_mode);
    }
    if (strcmp(key, "admin_socket_group") == 0) {
        return json_is_null(value) ? replace_string(&daemon->admin_socket_group, NULL)
                                   : parse_account(report, value, key, &daemon->admin_socket_group);
    }
    if (strcmp(key, "worker_threads") == 0) {
        if (json_is_null(value)) {
            daemon->worker_threads = 0;
            return 0;
        }
        if (!json_is_integer(value) || json_integer_value(value) < 0 ||
            json_integer_value(value) > CONFIG_WORKERS_MAX) {
            return report_value(
                report, key, "expected an integer from 0 (one per CPU) to %d, found %s",
                CONFIG_WORKERS_MAX, describe(value, description, sizeof(description)));
        }
        daemon->worker_threads = (unsigned int)json_integer_value(value);
        return 0;
    }
    if (strcmp(key, "dma_message_chunk_size") == 0) {
        daemon->dma_message_chunk_size = VU_DMA_CHUNK_SIZE_DEFAULT;
        return json_is_null(value)
                   ? 0
                   : parse_dma_chunk_size(report, value, key, &daemon->dma_message_chunk_size);
    }
    if (strcmp(key, "max_client_fds") == 0) {
        daemon->max_client_fds = VU_MAX_CLIENT_FDS_DEFAULT;
        if (json_is_null(value)) {
            return 0;
        }
        ret = parse_integer(report, value, key, VU_MAX_CLIENT_FDS_MIN, VU_MAX_CLIENT_FDS_MAX,
                            &integer);
        if (ret == 0) {
            daemon->max_client_fds = (uint32_t)integer;
        }
        return ret;
    }
    if (strcmp(key, "handshake_timeout") == 0) {
        daemon->handshake_timeout_usec = VU_ENDPOINT_HANDSHAKE_TIMEOUT_USEC;
        return json_is_null(value) ? 0
                                   : parse_seconds(report, value, key, 0, true,
                                                   CONFIG_HANDSHAKE_TIMEOUT_MAX_SECONDS,
                                                   &daemon->handshake_timeout_usec);
    }
    if (strcmp(key, "default_isolation") == 0) {
        daemon->default_isolation = CONFIG_ISOLATION_PROCESS;
        if (json_is_null(value)) {
            return 0;
        }
        ret = parse_choice(report, value, key, isolation_choices, &choice);
        if (ret == 0) {
            daemon->default_isolation = (enum config_isolation)choice;
        }
        return ret;
    }
    if (strcmp(key, "device_user") == 0) {
        return json_is_null(value) ? replace_string(&daemon->device_user, NULL)
                                   : parse_account(report, value, key, &daemon->device_user);
    }
    if (strcmp(key, "health_timeout") == 0) {
        daemon->health_timeout_usec = CONFIG_HEALTH_TIMEOUT_USEC;
        return json_is_null(value)
                   ? 0
                   : parse_seconds(report, value, key, CONFIG_HEALTH_TIMEOUT_MIN_SECONDS, false,
                                   CONFIG_HEALTH_TIMEOUT_MAX_SECONDS, &daemon->health_timeout_usec);
    }
    if (strcmp(key, "device_memory_limit") == 0) {
        daemon->device_memory_limit = CONFIG_DEVICE_MEMORY_LIMIT;
        return json_is_null(value)
                   ? 0
                   : parse_memory_limit(report, value, key, &daemon->device_memory_limit);
    }
    if (strcmp(key, "start_limit_burst") == 0) {
        daemon->start_limit_burst = CONFIG_START_LIMIT_BURST;
        if (json_is_null(value)) {
            return 0;
        }
        ret = parse_integer(report, value, key, 1, CONFIG_START_LIMIT_BURST_MAX, &integer);
        if (ret == 0) {
            daemon->start_limit_burst = (unsigned int)integer;
        }
        return ret;
    }
    if (strcmp(key, "start_limit_interval") == 0) {
        daemon->start_limit_interval_usec = CONFIG_START_LIMIT_INTERVAL_USEC;
        return json_is_null(value)
                   ? 0
                   : parse_seconds(report, value, key, CONFIG_START_LIMIT_INTERVAL_MIN_SECONDS,
                                   false, CONFIG_START_LIMIT_INTERVAL_MAX_SECONDS,
                                   &daemon->start_limit_interval_usec);
    }
    if (strcmp(key, "log_level") != 0) {
        return -EINVAL;
    }
    if (json_is_null(value)) {
        daemon->log_level = CONFIG_LOG_LEVEL;
        return 0;
    }
    ret = get_string(report, value, key, "a log level", &text);
    if (ret < 0) {
        return ret;
    }
    level = config_log_level_from_name(text);
    if (level < 0) {
        return report_value(report, key,
                            "%s is not a log level; use err, warning, notice, info or debug",
                            yaml_json_quote(quoted, sizeof(quoted), text));
    }
    daemon->log_level = level;
    return 0;
}

static int daemon_apply(const struct config_report *report, struct config_daemon *daemon,
                        const json_t *settings)
{
    struct config_daemon next;
    char description[96];
    const char *const *key;
    int ret;

    /* An empty file (or one with only comments) keeps the defaults. */
    if (settings == NULL || json_is_null(settings)) {
        return 0;
    }
    if (!json_is_object(settings)) {
        return report_value(report, "", "expected a mapping of daemon settings, found %s",
                            describe(settings, description, sizeof(description)));
    }
    ret = check_keys(report, settings, "", daemon_keys,
                     "devices_dirs, plugin_dirs, runtime_dir, admin_socket, admin_socket_mode, "
                     "admin_socket_group, worker_threads, log_level, dma_message_chunk_size, "
                     "max_client_fds, handshake_timeout, default_isolation, device_user, "
                     "health_timeout, device_memory_limit, start_limit_burst or "
                     "start_limit_interval");
    if (ret < 0) {
        return ret;
    }
    ret = daemon_copy(&next, daemon);
    if (ret < 0) {
        return ret;
    }
    for (key = daemon_keys; *key != NULL; key++) {
        json_t *value = json_object_get(settings, *key);
        if (value != NULL) {
            ret = apply_daemon_key(report, &next, *key, value);
            if (ret < 0) {
                daemon_clear(&next);
                return ret;
            }
        }
    }
    daemon_clear(daemon);
    *daemon = next;
    return 0;
}

int config_daemon_apply(struct config_daemon *daemon, const json_t *settings, const char *context,
                        char *error, size_t error_size)
{
    struct config_report report = {.origin = context, .error = error, .error_size = error_size};
    int ret;

    ret = daemon_apply(&report, daemon, settings);
    if (ret == -ENOMEM && error != NULL && error_size > 0) {
        snprintf(error, error_size, "%s: out of memory", context);
    }
    return ret;
}

int config_daemon_load(const char *path, bool must_exist, struct config_daemon **result,
                       char *error, size_t error_size)
{
    struct config_report report = {.origin = path, .error = error, .error_size = error_size};
    struct yaml_json_document *document = NULL;
    struct config_daemon *daemon = NULL;
    int ret;

    *result = NULL;
    ret = config_daemon_new(&daemon);
    if (ret < 0) {
        goto out;
    }
    ret = yaml_json_parse_file(path, &document, error, error_size);
    if (ret == -ENOENT && !must_exist) {
        *result = daemon;
        daemon = NULL;
        ret = 0;
        goto out;
    }
    if (ret < 0) {
        goto out;
    }
    report.document = document;
    ret = daemon_apply(&report, daemon, yaml_json_root(document));
    if (ret < 0) {
        goto out;
    }
    ret = replace_string(&daemon->source, path);
    if (ret < 0) {
        goto out;
    }
    *result = daemon;
    daemon = NULL;
out:
    if (ret == -ENOMEM && error != NULL && error_size > 0) {
        snprintf(error, error_size, "%s: out of memory", path);
    }
    yaml_json_free(document);
    config_daemon_free(daemon);
    return ret;
}

/* A socket path must fit sun_path, whatever room the caller's buffer has. */
__attribute__((format(printf, 3, 4))) static int socket_path(char *buffer, size_t size,
                                                             const char *format, ...)
{
    va_list args;
    int length;

    va_start(args, format);
    length = vsnprintf(buffer, size, format, args);
    va_end(args);
    if (length < 0 || (size_t)length >= size || length >= CONFIG_SOCKET_PATH_MAX) {
        return -ENAMETOOLONG;
    }
    return 0;
}

int config_daemon_admin_socket(const struct config_daemon *daemon, char *buffer, size_t size)
{
    if (daemon->admin_socket != NULL) {
        return socket_path(buffer, size, "%s", daemon->admin_socket);
    }
    return socket_path(buffer, size, "%s/admin.sock", daemon->runtime_dir);
}

int config_daemon_device_socket(const struct config_daemon *daemon,
                                const struct config_device *device, char *buffer, size_t size)
{
    if (device->socket_path != NULL) {
        return socket_path(buffer, size, "%s", device->socket_path);
    }
    return socket_path(buffer, size, "%s/devices/%s.sock", daemon->runtime_dir, device->name);
}

int config_log_level_from_name(const char *name)
{
    int level;

    for (level = LOG_ERR; level <= LOG_DEBUG; level++) {
        if (strcmp(name, log_level_names[level]) == 0) {
            return level;
        }
    }
    return -EINVAL;
}

const char *config_log_level_name(int level)
{
    return level >= LOG_ERR && level <= LOG_DEBUG ? log_level_names[level] : NULL;
}

int config_param_assign(json_t *params, const char *assignment, char *error, size_t error_size)
{
    const char *equals = strchr(assignment, '=');
    json_t *value;
    char *key;
    int ret = 0;

    if (equals == NULL || equals == assignment) {
        set_error(error, error_size, "--param wants KEY=VALUE, not '%s'", assignment);
        return -EINVAL;
    }
    key = strndup(assignment, (size_t)(equals - assignment));
    if (key == NULL) {
        set_error(error, error_size, "out of memory");
        return -ENOMEM;
    }
    value = json_string(equals + 1);
    if (json_object_get(params, key) != NULL) {
        set_error(error, error_size, "--param %s given twice", key);
        ret = -EINVAL;
    } else if (value == NULL || json_object_set(params, key, value) < 0) {
        set_error(error, error_size, "--param %s: not valid UTF-8", key);
        ret = -EINVAL;
    }
    json_decref(value);
    free(key);
    return ret;
}
