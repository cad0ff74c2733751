/*
 * libFuzzer target for the configuration loader: every input is the text of a YAML file,
 * read as a device drop-in (config_device_load(), through a memfd so the real file path
 * runs, positions and all) and as the daemon's own file (config_daemon_apply() over the
 * defaults).
 *
 * Beyond "no crash, no leak", it asserts what the loader promises:
 *   - an error is one line: a message that names a file position never carries a newline or
 *     another control character a hostile file could use to forge a log line;
 *   - a device that loads is written back (config_device_to_yaml(), and as JSON through
 *     config_device_to_json()) and read back equal (config_device_equal()).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <jansson.h>

#include "config.h"
#include "log.h"
#include "yaml_json.h"

#define ERROR_SIZE 512

static void check_one_line(const char *error)
{
    for (const char *c = error; *c != '\0'; c++) {
        if ((unsigned char)*c < 0x20 || *c == 0x7f) {
            fprintf(stderr, "error message with control character 0x%02x: %s\n", (unsigned char)*c,
                    error);
            abort();
        }
    }
}

static void check_device_round_trip(const struct config_device *device)
{
    struct config_device *again = NULL;
    struct yaml_json_document *document = NULL;
    char error[ERROR_SIZE] = "";
    char *text = NULL;
    json_t *object;

    object = config_device_to_json(device);
    if (object != NULL) {
        if (config_device_from_json(object, "fuzz", NULL, &again, error, sizeof(error)) != 0 ||
            !config_device_equal(device, again)) {
            fprintf(stderr, "device does not survive JSON: %s\n", error);
            abort();
        }
        config_device_free(again);
        again = NULL;
        json_decref(object);
    }
    if (config_device_to_yaml(device, &text) != 0)
        return;
    if (yaml_json_parse_buffer("round-trip", text, strlen(text), &document, error, sizeof(error)) !=
            0 ||
        config_device_from_json(yaml_json_root(document), "round-trip", NULL, &again, error,
                                sizeof(error)) != 0 ||
        !config_device_equal(device, again)) {
        fprintf(stderr, "device does not survive YAML: %s\n---\n%s---\n", error, text);
        abort();
    }
    config_device_free(again);
    yaml_json_free(document);
    free(text);
}

static void load_device(const uint8_t *data, size_t size)
{
    struct config_device *device = NULL;
    char path[64], error[ERROR_SIZE] = "";
    int fd = memfd_create("fuzz.yaml", MFD_CLOEXEC);

    if (fd < 0)
        abort();
    if (size > 0 && write(fd, data, size) != (ssize_t)size)
        abort();
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    if (config_device_load(path, &device, error, sizeof(error)) == 0) {
        check_device_round_trip(device);
        config_device_free(device);
    } else {
        check_one_line(error);
    }
    close(fd);
}

static void load_daemon(const uint8_t *data, size_t size)
{
    struct yaml_json_document *document = NULL;
    struct config_daemon *daemon = NULL;
    char error[ERROR_SIZE] = "";

    if (yaml_json_parse_buffer("vfio-userd.yaml", (const char *)data, size, &document, error,
                               sizeof(error)) != 0) {
        check_one_line(error);
        return;
    }
    if (config_daemon_new(&daemon) != 0)
        abort();
    if (config_daemon_apply(daemon, yaml_json_root(document), "vfio-userd.yaml", error,
                            sizeof(error)) != 0)
        check_one_line(error);
    config_daemon_free(daemon);
    yaml_json_free(document);
}

static void quiet_sink(enum vfio_userd_log_level level, const char *device, const char *message)
{
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool initialized;

    if (!initialized) {
        vu_log_set_sink(quiet_sink);
        initialized = true;
    }
    load_device(data, size);
    load_daemon(data, size);
    return 0;
}
