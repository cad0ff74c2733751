/*
 * The vfio-userctl commands that talk to the daemon: each builds one JSON-RPC request,
 * sends it, and prints the answer as a table or fields for people, or as the daemon's own
 * JSON with --json. probe, which talks to a device instead, is in probe.c.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "ctl.h"
#include "output.h"
#include "rpc_client.h"

#define FIELD_WIDTH 18

/* --- Talking to the daemon. --- */

static void print_problem(const char *problem)
{
    char escaped[2048];

    fprintf(stderr, CTL_PROGRAM ": %s\n", output_escape(escaped, sizeof(escaped), problem));
}

/*
 * The daemon's refusal: its error object on stdout with --json, else its message, as it
 * wrote it, on stderr; `location` (may be NULL) says where in the user's file the refused
 * setting was written.
 */
static int print_refusal(const struct ctl_options *options, json_t *error, const char *location)
{
    const char *message = json_string_value(json_object_get(error, "message"));
    char escaped[2048];

    if (options->json) {
        json_t *wrapped = json_pack("{s:O}", "error", error);
        if (wrapped == NULL || output_json(stdout, wrapped) < 0)
            fprintf(stderr, CTL_PROGRAM ": cannot print the daemon's error\n");
        json_decref(wrapped);
        return CTL_EXIT_REFUSED;
    }
    output_escape(escaped, sizeof(escaped), message != NULL ? message : "(no message)");
    if (location != NULL)
        fprintf(stderr, CTL_PROGRAM ": %s: %s\n", location, escaped);
    else
        fprintf(stderr, CTL_PROGRAM ": %s\n", escaped);
    return CTL_EXIT_REFUSED;
}

/*
 * Calls `method` once. Returns CTL_EXIT_OK with *result set; CTL_EXIT_REFUSED with the
 * daemon's error object in *refusal when `refusal` is given, else printed; or
 * CTL_EXIT_UNREACHABLE after saying why.
 */
static int call_daemon(const struct ctl_options *options, const char *method, json_t *params,
                       json_t **result, json_t **refusal)
{
    struct rpc_client *client = NULL;
    json_t *error = NULL;
    char problem[1024];
    int ret;

    *result = NULL;
    if (refusal != NULL)
        *refusal = NULL;
    if (rpc_client_connect(ctl_admin_socket(options), options->timeout_ms, &client, problem,
                           sizeof(problem)) < 0 ||
        rpc_client_call(client, method, params, result, &error, problem, sizeof(problem)) < 0) {
        print_problem(problem);
        ret = CTL_EXIT_UNREACHABLE;
        goto out;
    }
    if (error == NULL) {
        ret = CTL_EXIT_OK;
        goto out;
    }
    if (refusal != NULL) {
        *refusal = error;
        error = NULL;
        ret = CTL_EXIT_REFUSED;
        goto out;
    }
    ret = print_refusal(options, error, NULL);
out:
    json_decref(error);
    rpc_client_close(client);
    return ret;
}

int ctl_call_daemon(struct ctl_options *options, const char *method, json_t *params,
                    json_t **result)
{
    return call_daemon(options, method, params, result, NULL);
}

/* For a reply that is valid JSON-RPC but not what the method returns. */
static int unexpected_reply(const char *method)
{
    fprintf(stderr, CTL_PROGRAM ": the daemon's answer to %s has an unexpected shape\n", method);
    return CTL_EXIT_UNREACHABLE;
}

static int print_json(json_t *value)
{
    return output_json(stdout, value) < 0 ? CTL_EXIT_REFUSED : CTL_EXIT_OK;
}

static const char *string_member(const json_t *object, const char *key)
{
    return json_string_value(json_object_get(object, key));
}

/* The member's text, or "-" when the daemon left it out. */
static const char *text_member(const json_t *object, const char *key)
{
    const char *value = string_member(object, key);

    return value != NULL ? value : "-";
}

/* The member as decimal text, or "-" when it is absent or not an integer. */
static const char *integer_text(char *buffer, size_t size, const json_t *object, const char *key)
{
    json_t *value = json_object_get(object, key);

    if (!json_is_integer(value))
        return "-";
    snprintf(buffer, size, "%" JSON_INTEGER_FORMAT, json_integer_value(value));
    return buffer;
}

static const char *yes_no(const json_t *object, const char *key)
{
    json_t *value = json_object_get(object, key);

    return json_is_boolean(value) ? (json_is_true(value) ? "yes" : "no") : "-";
}

/* Parses a command that takes exactly `operand_count` operands and no options of its own. */
static int parse_operands(struct ctl_options *options, int argc, char **argv, int operand_count,
                          const char *operand_name, int *first)
{
    int ret = ctl_parse_command(options, argc, argv, NULL, NULL, NULL, NULL, first);

    if (ret != 0)
        return ret;
    if (argc - *first < operand_count) {
        ctl_usage_error(argv[0], "missing %s", operand_name);
        return -EINVAL;
    }
    if (argc - *first > operand_count) {
        ctl_usage_error(argv[0], "unexpected argument '%s'", argv[*first + operand_count]);
        return -EINVAL;
    }
    return 0;
}

/* parse_operands()'s non-zero result as an exit code. */
static int parse_exit(int ret)
{
    return ret > 0 ? CTL_EXIT_OK : CTL_EXIT_USAGE;
}

/* --- list, info. --- */

static int print_device_table(const json_t *devices)
{
    static const struct output_column columns[] = {
        {"NAME", false},      {"PLUGIN", false},     {"STATE", false},
        {"ISOLATION", false}, {"PID", true},         {"RESTARTS", true},
        {"CLIENT", true},     {"PERSISTENT", false}, {"SOCKET", false},
    };
    struct output_table *table = output_table_new(columns, sizeof(columns) / sizeof(columns[0]));
    const json_t *device;
    size_t index;
    int ret = 0;

    if (table == NULL)
        return -ENOMEM;
    json_array_foreach (devices, index, device) {
        char pid[32], host_pid[32], restarts[32];
        const char *cells[] = {
            string_member(device, "name"),
            string_member(device, "plugin"),
            string_member(device, "state"),
            string_member(device, "isolation"),
            integer_text(host_pid, sizeof(host_pid), device, "pid"),
            integer_text(restarts, sizeof(restarts), device, "restarts"),
            integer_text(pid, sizeof(pid), device, "client_pid"),
            yes_no(device, "persistent"),
            string_member(device, "socket"),
        };
        ret = output_table_add_row(table, cells);
        if (ret < 0)
            goto out;
    }
    ret = output_table_print(table, stdout);
out:
    output_table_free(table);
    return ret;
}

/*
 * A command without operands that prints one daemon list: as JSON, or as a table, or
 * `empty` when the list is empty.
 */
static int list_command(struct ctl_options *options, int argc, char **argv, const char *method,
                        const char *empty, int (*print_table)(const json_t *list))
{
    json_t *list = NULL;
    int first, ret;

    ret = parse_operands(options, argc, argv, 0, NULL, &first);
    if (ret != 0)
        return parse_exit(ret);
    ret = call_daemon(options, method, NULL, &list, NULL);
    if (ret != CTL_EXIT_OK)
        goto out;
    if (options->json)
        ret = print_json(list);
    else if (!json_is_array(list))
        ret = unexpected_reply(method);
    else if (json_array_size(list) == 0)
        printf("%s\n", empty);
    else if (print_table(list) < 0)
        ret = CTL_EXIT_REFUSED;
out:
    json_decref(list);
    return ret;
}

int command_list(struct ctl_options *options, int argc, char **argv)
{
    return list_command(options, argc, argv, "device_list", "No devices.", print_device_table);
}

/* The device's configuration as the YAML of a drop-in, indented under a heading. */
static void print_configuration(const json_t *configuration)
{
    char *text = NULL, escaped[2048];

    if (configuration == NULL || yaml_json_emit(configuration, &text) < 0) {
        free(text);
        return;
    }
    printf("Configuration:\n");
    for (char *line = strtok(text, "\n"); line != NULL; line = strtok(NULL, "\n"))
        if (strcmp(line, "---") != 0)
            printf("  %s\n", output_escape(escaped, sizeof(escaped), line));
    free(text);
}

static void print_device(const json_t *device)
{
    const json_t *error = json_object_get(device, "error");
    char number[32];

    output_field(stdout, FIELD_WIDTH, "Name", "%s", text_member(device, "name"));
    output_field(stdout, FIELD_WIDTH, "Plugin", "%s", text_member(device, "plugin"));
    output_field(stdout, FIELD_WIDTH, "State", "%s", text_member(device, "state"));
    if (json_is_string(error))
        output_field(stdout, FIELD_WIDTH, "Problem", "%s", json_string_value(error));
    output_field(stdout, FIELD_WIDTH, "Isolation", "%s", text_member(device, "isolation"));
    output_field(stdout, FIELD_WIDTH, "Process", "%s",
                 integer_text(number, sizeof(number), device, "pid"));
    output_field(stdout, FIELD_WIDTH, "Restarts", "%s",
                 integer_text(number, sizeof(number), device, "restarts"));
    if (json_is_string(json_object_get(device, "last_failure")))
        output_field(stdout, FIELD_WIDTH, "Last failure", "%s",
                     text_member(device, "last_failure"));
    output_field(stdout, FIELD_WIDTH, "Socket", "%s", text_member(device, "socket"));
    output_field(stdout, FIELD_WIDTH, "Source", "%s", text_member(device, "source"));
    output_field(stdout, FIELD_WIDTH, "Persistent", "%s", yes_no(device, "persistent"));
    if (json_is_integer(json_object_get(device, "client_pid")))
        output_field(stdout, FIELD_WIDTH, "Client", "pid %s",
                     integer_text(number, sizeof(number), device, "client_pid"));
    else
        output_field(stdout, FIELD_WIDTH, "Client", "none");
    output_field(stdout, FIELD_WIDTH, "Connections", "%s",
                 integer_text(number, sizeof(number), device, "connections"));
    output_field(stdout, FIELD_WIDTH, "Messages", "%s",
                 integer_text(number, sizeof(number), device, "messages"));
    output_field(stdout, FIELD_WIDTH, "Errors", "%s",
                 integer_text(number, sizeof(number), device, "errors"));
    output_field(stdout, FIELD_WIDTH, "Bytes received", "%s",
                 integer_text(number, sizeof(number), device, "bytes_received"));
    output_field(stdout, FIELD_WIDTH, "Bytes sent", "%s",
                 integer_text(number, sizeof(number), device, "bytes_sent"));
    output_field(stdout, FIELD_WIDTH, "DMA maps", "%s",
                 integer_text(number, sizeof(number), device, "dma_maps"));
    print_configuration(json_object_get(device, "config"));
}

int command_info(struct ctl_options *options, int argc, char **argv)
{
    json_t *params = NULL, *device = NULL;
    int first, ret;

    ret = parse_operands(options, argc, argv, 1, "the device's NAME", &first);
    if (ret != 0)
        return parse_exit(ret);
    params = json_pack("{s:s}", "name", argv[first]);
    if (params == NULL) {
        print_problem("out of memory");
        return CTL_EXIT_REFUSED;
    }
    ret = call_daemon(options, "device_get", params, &device, NULL);
    if (ret != CTL_EXIT_OK)
        goto out;
    if (options->json)
        ret = print_json(device);
    else if (!json_is_object(device))
        ret = unexpected_reply("device_get");
    else
        print_device(device);
out:
    json_decref(device);
    json_decref(params);
    return ret;
}

/* --- add, remove, reset. --- */

enum {
    ADD_OPTION_PLUGIN = 0x200,
    ADD_OPTION_PARAM,
    ADD_OPTION_PERSIST,
    ADD_OPTION_SOCKET_PATH,
    ADD_OPTION_ISOLATION,
    ADD_OPTION_RESTART,
    ADD_OPTION_USER,
    ADD_OPTION_SOCKET_USER,
    ADD_OPTION_SOCKET_GROUP,
    ADD_OPTION_SOCKET_MODE,
};

struct add_request {
    const char *file;
    const char *plugin;
    json_t *params; /* --param KEY=VALUE, as strings */
    json_t *socket; /* --socket-*; empty unless given */
    json_t *device; /* --isolation, --restart, --user; empty unless given */
    bool persist;
};

/* One setting of `object` from an option given once. */
static int set_setting(json_t *object, const char *option, const char *key, const char *value)
{
    if (json_object_get(object, key) != NULL) {
        ctl_usage_error("add", "%s given twice", option);
        return -EINVAL;
    }
    if (json_object_set_new(object, key, json_string(value)) < 0) {
        ctl_usage_error("add", "%s: not valid UTF-8, or out of memory", option);
        return -EINVAL;
    }
    return 0;
}

static int add_option(void *context, int option, const char *argument)
{
    struct add_request *request = context;
    char message[512];
    int ret;

    switch (option) {
    case 'f':
        request->file = argument;
        return 0;
    case ADD_OPTION_PLUGIN:
        request->plugin = argument;
        return 0;
    case ADD_OPTION_PERSIST:
        request->persist = true;
        return 0;
    case ADD_OPTION_SOCKET_PATH:
        return set_setting(request->socket, "--socket-path", "path", argument);
    case ADD_OPTION_SOCKET_USER:
        return set_setting(request->socket, "--socket-user", "user", argument);
    case ADD_OPTION_SOCKET_GROUP:
        return set_setting(request->socket, "--socket-group", "group", argument);
    case ADD_OPTION_SOCKET_MODE:
        return set_setting(request->socket, "--socket-mode", "mode", argument);
    case ADD_OPTION_ISOLATION:
        return set_setting(request->device, "--isolation", "isolation", argument);
    case ADD_OPTION_RESTART:
        return set_setting(request->device, "--restart", "restart", argument);
    case ADD_OPTION_USER:
        return set_setting(request->device, "--user", "user", argument);
    default:
        break;
    }
    ret = config_param_assign(request->params, argument, message, sizeof(message));
    if (ret == -EINVAL)
        ctl_usage_error("add", "%s", message);
    else if (ret < 0)
        print_problem(message);
    return ret;
}

/* The device_add params for `add -f FILE`: the file, checked as the daemon would. */
static int load_device_file(const char *path, struct config_device **device, json_t **settings)
{
    char error[CONFIG_ERROR_MAX];
    int ret;

    *settings = NULL;
    ret = config_device_load(path, device, error, sizeof(error));
    if (ret < 0) {
        print_problem(error);
        return ret;
    }
    *settings = config_device_to_json(*device);
    if (*settings == NULL) {
        print_problem("out of memory");
        return -ENOMEM;
    }
    return 0;
}

static void print_added(const json_t *device)
{
    char escaped[3][1024];

    printf("Added %s (%s%s) on %s\n",
           output_escape(escaped[0], sizeof(escaped[0]), text_member(device, "name")),
           output_escape(escaped[1], sizeof(escaped[1]), text_member(device, "plugin")),
           json_is_true(json_object_get(device, "persistent")) ? ", persistent" : "",
           output_escape(escaped[2], sizeof(escaped[2]), text_member(device, "socket")));
}

/* Where the refused field was written in the file, when the daemon named one. */
static void locate_refusal(const struct config_device *device, const json_t *error, char *buffer,
                           size_t size)
{
    const char *field = string_member(json_object_get(error, "data"), "field");

    buffer[0] = '\0';
    if (device == NULL || field == NULL)
        return;
    config_device_location(device, field, buffer, size);
}

int command_add(struct ctl_options *options, int argc, char **argv)
{
    static const struct option add_options[] = {
        {"file", required_argument, NULL, 'f'},
        {"plugin", required_argument, NULL, ADD_OPTION_PLUGIN},
        {"param", required_argument, NULL, ADD_OPTION_PARAM},
        {"persist", no_argument, NULL, ADD_OPTION_PERSIST},
        {"socket-path", required_argument, NULL, ADD_OPTION_SOCKET_PATH},
        {"socket-user", required_argument, NULL, ADD_OPTION_SOCKET_USER},
        {"socket-group", required_argument, NULL, ADD_OPTION_SOCKET_GROUP},
        {"socket-mode", required_argument, NULL, ADD_OPTION_SOCKET_MODE},
        {"isolation", required_argument, NULL, ADD_OPTION_ISOLATION},
        {"restart", required_argument, NULL, ADD_OPTION_RESTART},
        {"user", required_argument, NULL, ADD_OPTION_USER},
        {NULL, 0, NULL, 0},
    };
    struct add_request request = {
        .params = json_object(), .socket = json_object(), .device = json_object()};
    struct config_device *device = NULL;
    json_t *settings = NULL, *result = NULL, *refusal = NULL;
    char location[CONFIG_ERROR_MAX];
    int first, ret;

    if (request.params == NULL || request.socket == NULL || request.device == NULL) {
        print_problem("out of memory");
        ret = CTL_EXIT_REFUSED;
        goto out;
    }
    ret = ctl_parse_command(options, argc, argv, "f:", add_options, add_option, &request, &first);
    if (ret != 0) {
        ret = parse_exit(ret);
        goto out;
    }
    ret = CTL_EXIT_USAGE;
    if (request.file != NULL) {
        if (first < argc) {
            ctl_usage_error("add", "-f takes the name from the file; unexpected '%s'", argv[first]);
            goto out;
        }
        if (request.plugin != NULL || json_object_size(request.params) > 0 ||
            json_object_size(request.socket) > 0 || json_object_size(request.device) > 0) {
            ctl_usage_error("add", "-f takes the plugin, parameters, socket, isolation, restart "
                                   "and user from the file");
            goto out;
        }
        if (load_device_file(request.file, &device, &settings) < 0)
            goto out;
    } else {
        if (first >= argc) {
            ctl_usage_error("add", "missing the device's NAME (or -f FILE.yaml)");
            goto out;
        }
        if (first + 1 < argc) {
            ctl_usage_error("add", "unexpected argument '%s'", argv[first + 1]);
            goto out;
        }
        if (request.plugin == NULL) {
            ctl_usage_error("add", "missing --plugin");
            goto out;
        }
        settings = json_pack("{s:s, s:s, s:O}", "name", argv[first], "plugin", request.plugin,
                             "params", request.params);
        if (settings == NULL) {
            ctl_usage_error("add", "the name and plugin must be valid UTF-8");
            goto out;
        }
        if ((json_object_size(request.socket) > 0 &&
             json_object_set(settings, "socket", request.socket) < 0) ||
            json_object_update(settings, request.device) < 0) {
            print_problem("out of memory");
            ret = CTL_EXIT_REFUSED;
            goto out;
        }
    }
    if (request.persist && json_object_set_new(settings, "persist", json_true()) < 0) {
        print_problem("out of memory");
        ret = CTL_EXIT_REFUSED;
        goto out;
    }
    ret = call_daemon(options, "device_add", settings, &result, &refusal);
    if (ret == CTL_EXIT_REFUSED) {
        locate_refusal(device, refusal, location, sizeof(location));
        ret = print_refusal(options, refusal, location[0] != '\0' ? location : NULL);
        goto out;
    }
    if (ret != CTL_EXIT_OK)
        goto out;
    if (options->json)
        ret = print_json(result);
    else if (!json_is_object(result))
        ret = unexpected_reply("device_add");
    else
        print_added(result);
out:
    json_decref(refusal);
    json_decref(result);
    json_decref(settings);
    config_device_free(device);
    json_decref(request.params);
    json_decref(request.socket);
    json_decref(request.device);
    return ret;
}

static int remove_option(void *context, int option, const char *argument)
{
    *(bool *)context = true; /* --persist, the only option */
    return 0;
}

int command_remove(struct ctl_options *options, int argc, char **argv)
{
    static const struct option remove_options[] = {
        {"persist", no_argument, NULL, ADD_OPTION_PERSIST},
        {NULL, 0, NULL, 0},
    };
    json_t *params = NULL, *result = NULL, *refusal = NULL;
    const char *field;
    bool persist = false;
    int first, ret;

    ret = ctl_parse_command(options, argc, argv, NULL, remove_options, remove_option, &persist,
                            &first);
    if (ret != 0)
        return parse_exit(ret);
    if (first >= argc)
        return ctl_usage_error("remove", "missing the device's NAME");
    if (first + 1 < argc)
        return ctl_usage_error("remove", "unexpected argument '%s'", argv[first + 1]);
    params = json_pack("{s:s, s:b}", "name", argv[first], "persist", persist);
    if (params == NULL)
        return ctl_usage_error("remove", "the name must be valid UTF-8");
    ret = call_daemon(options, "device_remove", params, &result, &refusal);
    if (ret == CTL_EXIT_REFUSED) {
        ret = print_refusal(options, refusal, NULL);
        /* The daemon speaks JSON-RPC; say it in this program's terms. */
        field = string_member(json_object_get(refusal, "data"), "field");
        if (!options->json && field != NULL && strcmp(field, "persist") == 0)
            fprintf(stderr, CTL_PROGRAM ": that is: " CTL_PROGRAM " remove %s --persist\n",
                    argv[first]);
        goto out;
    }
    if (ret != CTL_EXIT_OK)
        goto out;
    if (options->json) {
        ret = print_json(result);
    } else {
        char escaped[1024];
        const char *name = string_member(result, "name");
        printf("Removed %s%s\n",
               output_escape(escaped, sizeof(escaped), name != NULL ? name : argv[first]),
               json_is_true(json_object_get(result, "persistent")) ? " (persistent)" : "");
    }
out:
    json_decref(refusal);
    json_decref(result);
    json_decref(params);
    return ret;
}

int command_reset(struct ctl_options *options, int argc, char **argv)
{
    json_t *params = NULL, *result = NULL;
    int first, ret;

    ret = parse_operands(options, argc, argv, 1, "the device's NAME", &first);
    if (ret != 0)
        return parse_exit(ret);
    params = json_pack("{s:s}", "name", argv[first]);
    if (params == NULL)
        return ctl_usage_error("reset", "the name must be valid UTF-8");
    ret = call_daemon(options, "device_reset", params, &result, NULL);
    if (ret != CTL_EXIT_OK)
        goto out;
    if (options->json) {
        ret = print_json(result);
    } else {
        char escaped[1024];
        printf("Reset %s\n", output_escape(escaped, sizeof(escaped), argv[first]));
    }
out:
    json_decref(result);
    json_decref(params);
    return ret;
}

/* --- plugins, status, reload. --- */

static int print_plugin_table(const json_t *plugins)
{
    static const struct output_column columns[] = {
        {"NAME", false},   {"VERSION", false},     {"ABI", false},
        {"DEVICES", true}, {"DESCRIPTION", false},
    };
    struct output_table *table = output_table_new(columns, sizeof(columns) / sizeof(columns[0]));
    const json_t *plugin;
    size_t index;
    int ret = 0;

    if (table == NULL)
        return -ENOMEM;
    json_array_foreach (plugins, index, plugin) {
        char devices[32];
        const char *cells[] = {
            string_member(plugin, "name"),
            string_member(plugin, "version"),
            string_member(plugin, "abi"),
            integer_text(devices, sizeof(devices), plugin, "devices"),
            string_member(plugin, "description"),
        };
        ret = output_table_add_row(table, cells);
        if (ret < 0)
            goto out;
    }
    ret = output_table_print(table, stdout);
out:
    output_table_free(table);
    return ret;
}

int command_plugins(struct ctl_options *options, int argc, char **argv)
{
    return list_command(options, argc, argv, "plugin_list", "No plugins loaded.",
                        print_plugin_table);
}

static void print_status(const struct ctl_options *options, const json_t *status)
{
    const json_t *devices = json_object_get(status, "devices");
    const json_t *descriptors = json_object_get(status, "descriptors");
    const json_t *stuck_workers = json_object_get(status, "stuck_workers"), *stuck;
    json_t *uptime = json_object_get(status, "uptime_seconds");
    char numbers[5][32], text[64];
    size_t index;

    output_field(stdout, FIELD_WIDTH, "Version", "%s", text_member(status, "version"));
    output_field(stdout, FIELD_WIDTH, "PID", "%s",
                 integer_text(numbers[0], sizeof(numbers[0]), status, "pid"));
    output_field(stdout, FIELD_WIDTH, "Uptime", "%s",
                 json_is_integer(uptime) && json_integer_value(uptime) >= 0
                     ? output_duration(text, sizeof(text), (uint64_t)json_integer_value(uptime))
                     : "-");
    output_field(stdout, FIELD_WIDTH, "Devices", "%s (%s listening, %s connected, %s in error)",
                 integer_text(numbers[0], sizeof(numbers[0]), devices, "total"),
                 integer_text(numbers[1], sizeof(numbers[1]), devices, "listening"),
                 integer_text(numbers[2], sizeof(numbers[2]), devices, "connected"),
                 integer_text(numbers[3], sizeof(numbers[3]), devices, "error"));
    if (json_integer_value(json_object_get(devices, "stuck")) > 0)
        output_field(stdout, FIELD_WIDTH, "Stuck devices", "%s",
                     integer_text(numbers[4], sizeof(numbers[4]), devices, "stuck"));
    /* A worker stuck in plugin code: which device, plugin and callback hold it. */
    json_array_foreach (stuck_workers, index, stuck) {
        if (json_is_string(json_object_get(stuck, "callback")))
            output_field(stdout, FIELD_WIDTH, "Stuck",
                         "worker %s, %s s in the %s callback of plugin %s (device %s)",
                         integer_text(numbers[0], sizeof(numbers[0]), stuck, "worker"),
                         integer_text(numbers[1], sizeof(numbers[1]), stuck, "seconds"),
                         text_member(stuck, "callback"), text_member(stuck, "plugin"),
                         text_member(stuck, "device"));
        else
            output_field(stdout, FIELD_WIDTH, "Stuck", "worker %s, no answer for %s s",
                         integer_text(numbers[0], sizeof(numbers[0]), stuck, "worker"),
                         integer_text(numbers[1], sizeof(numbers[1]), stuck, "seconds"));
    }
    output_field(stdout, FIELD_WIDTH, "Descriptors",
                 "%s open of %s; clients hold %s (each at most %s)",
                 integer_text(numbers[0], sizeof(numbers[0]), descriptors, "open"),
                 integer_text(numbers[1], sizeof(numbers[1]), descriptors, "limit"),
                 integer_text(numbers[2], sizeof(numbers[2]), descriptors, "held_by_clients"),
                 integer_text(numbers[3], sizeof(numbers[3]), descriptors, "per_client_limit"));
    output_field(stdout, FIELD_WIDTH, "Plugins", "%s",
                 integer_text(numbers[4], sizeof(numbers[4]), status, "plugins"));
    output_field(stdout, FIELD_WIDTH, "Worker threads", "%s",
                 integer_text(numbers[0], sizeof(numbers[0]), status, "worker_threads"));
    output_field(stdout, FIELD_WIDTH, "Drop-in problems", "%s",
                 integer_text(numbers[0], sizeof(numbers[0]), status, "drop_in_problems"));
    output_field(stdout, FIELD_WIDTH, "Plugin ABI", "%s", text_member(status, "plugin_abi"));
    output_field(stdout, FIELD_WIDTH, "Protocol", "vfio-user %s", text_member(status, "protocol"));
    output_field(stdout, FIELD_WIDTH, "Admin socket", "%s", ctl_admin_socket(options));
}

int command_status(struct ctl_options *options, int argc, char **argv)
{
    json_t *status = NULL;
    int first, ret;

    ret = parse_operands(options, argc, argv, 0, NULL, &first);
    if (ret != 0)
        return parse_exit(ret);
    ret = call_daemon(options, "daemon_status", NULL, &status, NULL);
    if (ret != CTL_EXIT_OK)
        goto out;
    if (options->json)
        ret = print_json(status);
    else if (!json_is_object(status))
        ret = unexpected_reply("daemon_status");
    else
        print_status(options, status);
out:
    json_decref(status);
    return ret;
}

int command_reload(struct ctl_options *options, int argc, char **argv)
{
    json_t *result = NULL, *problems;
    char numbers[2][32];
    int first, ret;

    ret = parse_operands(options, argc, argv, 0, NULL, &first);
    if (ret != 0)
        return parse_exit(ret);
    ret = call_daemon(options, "daemon_reload", NULL, &result, NULL);
    if (ret != CTL_EXIT_OK)
        goto out;
    if (options->json) {
        ret = print_json(result);
        goto out;
    }
    problems = json_object_get(result, "drop_in_problems");
    printf("Reloaded: %s devices, %s drop-in problems%s\n",
           integer_text(numbers[0], sizeof(numbers[0]), result, "devices"),
           integer_text(numbers[1], sizeof(numbers[1]), result, "drop_in_problems"),
           json_is_integer(problems) && json_integer_value(problems) > 0
               ? " (the daemon's log names them)"
               : "");
out:
    json_decref(result);
    return ret;
}
