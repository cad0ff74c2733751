/*
 * Unit tests for config/config.c and daemon/config_dirs.c: device drop-ins and device_add
 * objects, the exact FILE:LINE:COLUMN of each error, plugin error locations, the persist
 * writer's round trip, the daemon's file, and masking across device directories.
 */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#include "config.h"
#include "config_dirs.h"
#include "test_runner.h"

static char temporary[64];

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

static void setup(void)
{
    snprintf(temporary, sizeof(temporary), "/tmp/test-config-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(temporary));
}

static void teardown(void)
{
    nftw(temporary, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Writes `text` to TEMPORARY/RELATIVE and returns the full path in a static buffer. */
static const char *write_file(const char *relative, const char *text)
{
    static char path[256];
    FILE *file;

    snprintf(path, sizeof(path), "%s/%s", temporary, relative);
    file = fopen(path, "w");
    ck_assert_ptr_nonnull(file);
    ck_assert_int_ge(fputs(text, file), 0);
    ck_assert_int_eq(fclose(file), 0);
    return path;
}

static struct config_device *load_ok(const char *relative, const char *text)
{
    struct config_device *device = NULL;
    char error[CONFIG_ERROR_MAX] = "";
    int ret = config_device_load(write_file(relative, text), &device, error, sizeof(error));

    ck_assert_msg(ret == 0, "load failed (%d): %s", ret, error);
    return device;
}

/* Loads `text` as dev.yaml; expects -EINVAL and "PATH:`expected`". */
static void expect_device_error(const char *text, const char *expected)
{
    struct config_device *device = (void *)1;
    char error[CONFIG_ERROR_MAX] = "";
    char full[CONFIG_ERROR_MAX];
    const char *path = write_file("dev.yaml", text);
    int ret = config_device_load(path, &device, error, sizeof(error));

    snprintf(full, sizeof(full), "%s:%s", path, expected);
    ck_assert_msg(ret == -EINVAL, "%s: got %d (%s)", text, ret, error);
    ck_assert_ptr_null(device);
    ck_assert_str_eq(error, full);
}

static void expect_json_error(const char *json_text, const char *default_name, const char *expected)
{
    json_t *settings = json_loads(json_text, JSON_DECODE_ANY, NULL);
    struct config_device *device = (void *)1;
    char error[CONFIG_ERROR_MAX] = "";

    ck_assert_ptr_nonnull(settings);
    ck_assert_int_eq(config_device_from_json(settings, "device_add", default_name, &device, error,
                                             sizeof(error)),
                     -EINVAL);
    ck_assert_ptr_null(device);
    ck_assert_str_eq(error, expected);
    json_decref(settings);
}

START_TEST(test_name_rule)
{
    char longest[CONFIG_NAME_MAX + 2];

    ck_assert(config_name_valid("tdev0"));
    ck_assert(config_name_valid("a"));
    ck_assert(config_name_valid("A-Z_a.z-09"));
    ck_assert(config_name_valid("x."));
    ck_assert(!config_name_valid(""));
    ck_assert(!config_name_valid(".hidden"));
    ck_assert(!config_name_valid(".."));
    ck_assert(!config_name_valid("a/b"));
    ck_assert(!config_name_valid("a b"));
    ck_assert(!config_name_valid("caf\xc3\xa9"));
    ck_assert(!config_name_valid("a\nb"));
    memset(longest, 'n', CONFIG_NAME_MAX);
    longest[CONFIG_NAME_MAX] = '\0';
    ck_assert(config_name_valid(longest));
    longest[CONFIG_NAME_MAX] = 'n';
    longest[CONFIG_NAME_MAX + 1] = '\0';
    ck_assert(!config_name_valid(longest));
}
END_TEST

START_TEST(test_device_full)
{
    struct config_device *device = load_ok("tdev0.yaml", "name: other\n"
                                                         "plugin: testdev\n"
                                                         "enabled: false\n"
                                                         "isolation: process\n"
                                                         "restart: always\n"
                                                         "user: qemu-dev\n"
                                                         "socket:\n"
                                                         "  path: /run/x/tdev0.sock\n"
                                                         "  user: qemu\n"
                                                         "  group: kvm\n"
                                                         "  mode: \"0640\"\n"
                                                         "params:\n"
                                                         "  ram_size: 1M\n"
                                                         "  queues: [1, 2]\n");

    ck_assert_str_eq(device->name, "other");
    ck_assert_str_eq(device->plugin, "testdev");
    ck_assert(!device->enabled);
    ck_assert_int_eq(device->isolation, CONFIG_ISOLATION_PROCESS);
    ck_assert_int_eq(device->restart, CONFIG_RESTART_ALWAYS);
    ck_assert_str_eq(device->user, "qemu-dev");
    ck_assert_str_eq(device->socket_path, "/run/x/tdev0.sock");
    ck_assert_str_eq(device->socket_user, "qemu");
    ck_assert_str_eq(device->socket_group, "kvm");
    ck_assert(device->socket_mode_set);
    ck_assert_uint_eq(device->socket_mode, 0640);
    ck_assert_str_eq(json_string_value(json_object_get(device->params, "ram_size")), "1M");
    ck_assert_uint_eq(json_array_size(json_object_get(device->params, "queues")), 2);
    ck_assert_ptr_nonnull(strstr(device->origin, "/tdev0.yaml"));
    config_device_free(device);
}
END_TEST

START_TEST(test_device_defaults)
{
    struct config_device *device = load_ok("tdev1.yaml", "plugin: testdev\n");

    ck_assert_str_eq(device->name, "tdev1");
    ck_assert(device->enabled);
    ck_assert_int_eq(device->isolation, CONFIG_ISOLATION_DEFAULT);
    ck_assert_int_eq(device->restart, CONFIG_RESTART_ON_FAILURE);
    ck_assert_ptr_null(device->user);
    ck_assert_ptr_null(device->socket_path);
    ck_assert_ptr_null(device->socket_user);
    ck_assert_ptr_null(device->socket_group);
    ck_assert(!device->socket_mode_set);
    ck_assert_uint_eq(device->socket_mode, CONFIG_DEVICE_SOCKET_MODE);
    ck_assert(json_is_object(device->params));
    ck_assert_uint_eq(json_object_size(device->params), 0);
    config_device_free(device);

    /* Empty values mean "the default", as an empty params: line does. */
    device =
        load_ok("tdev2.yaml",
                "plugin: testdev\nenabled:\nisolation:\nrestart:\nuser: ~\nsocket:\nparams:\n");
    ck_assert_str_eq(device->name, "tdev2");
    ck_assert(device->enabled);
    ck_assert_int_eq(device->isolation, CONFIG_ISOLATION_DEFAULT);
    ck_assert_int_eq(device->restart, CONFIG_RESTART_ON_FAILURE);
    ck_assert_ptr_null(device->user);
    ck_assert(json_is_object(device->params));
    config_device_free(device);

    /* The stem is everything before the last ".yaml". */
    device = load_ok("a.b.yaml", "plugin: testdev\n");
    ck_assert_str_eq(device->name, "a.b");
    config_device_free(device);

    /* Modes: an octal string with or without the leading 0, or an integer read as chmod does. */
    device = load_ok("m.yaml", "plugin: p\nsocket:\n  mode: 660\n");
    ck_assert_uint_eq(device->socket_mode, 0660);
    config_device_free(device);
    device = load_ok("m.yaml", "plugin: p\nsocket:\n  mode: 0600\n");
    ck_assert_uint_eq(device->socket_mode, 0600);
    config_device_free(device);
    device = load_ok("m.yaml", "plugin: p\nsocket:\n  mode: \"7777\"\n");
    ck_assert_uint_eq(device->socket_mode, 07777);
    config_device_free(device);
    device = load_ok("m.yaml", "plugin: p\nsocket:\n  mode: \"0\"\n");
    ck_assert_uint_eq(device->socket_mode, 0);
    config_device_free(device);
}
END_TEST

START_TEST(test_device_errors)
{
    char long_name[200];

    /* Bad YAML syntax: libyaml's position and words. */
    expect_device_error("plugin: testdev\nparams: [1, 2\n",
                        "3:1: did not find expected ',' or ']' (while parsing a flow sequence at "
                        "line 2, column 9)");
    /* Unknown keys, at the key, naming it and the parent. */
    expect_device_error("plugin: testdev\nsockt:\n  mode: \"0660\"\n",
                        "2:1: unknown key \"sockt\"; expected name, plugin, enabled, isolation, "
                        "restart, user, socket or params");
    expect_device_error("plugin: testdev\nsocket:\n  path: /x\n  moode: \"0660\"\n",
                        "4:3: socket: unknown key \"moode\"; expected path, user, group or mode");
    expect_device_error("plugin: testdev\n\"bad\\nkey\": 1\n",
                        "2:1: unknown key \"bad\\x0akey\"; expected name, plugin, enabled, "
                        "isolation, restart, user, socket or params");
    /* Wrong types, at the value. */
    expect_device_error("plugin: testdev\nenabled: yes\n",
                        "2:10: enabled: expected true or false, found the string \"yes\"");
    expect_device_error("plugin: testdev\nparams: [1]\n",
                        "2:9: params: expected a mapping of the plugin's parameters, found a list");
    expect_device_error("plugin: testdev\nsocket: 5\n",
                        "2:9: socket: expected a mapping of path, user, group and mode, found the "
                        "integer 5");
    expect_device_error("plugin: 12\n", "1:9: plugin: expected a string, found the integer 12");
    expect_device_error("name: {a: 1}\nplugin: p\n",
                        "1:7: name: expected a string, found a mapping");
    expect_device_error("plugin: p\nsocket:\n  user: [qemu]\n",
                        "3:9: socket.user: expected a user or group name, found a list");
    expect_device_error("- plugin: p\n",
                        "1:1: expected a mapping of device settings, found a list");
    expect_device_error("", "1:1: expected a mapping of device settings, found an empty value");
    /* Bad names. */
    expect_device_error("name: .hidden\nplugin: testdev\n",
                        "1:7: name: \".hidden\" is not a valid device name: use 1 to 64 letters, "
                        "digits, '_', '.' or '-', not starting with '.'");
    expect_device_error("name: \"a b\"\nplugin: testdev\n",
                        "1:7: name: \"a b\" is not a valid device name: use 1 to 64 letters, "
                        "digits, '_', '.' or '-', not starting with '.'");
    expect_device_error("plugin: ../evil\n",
                        "1:9: plugin: \"../evil\" is not a valid plugin name: use 1 to 64 "
                        "letters, digits, '_', '.' or '-', not starting with '.'");
    memset(long_name, 'x', 65);
    long_name[65] = '\0';
    {
        char text[256];
        char expected[512];
        snprintf(text, sizeof(text), "name: %s\nplugin: p\n", long_name);
        snprintf(expected, sizeof(expected),
                 "1:7: name: \"%s\" is not a valid device name: use 1 to 64 letters, digits, "
                 "'_', '.' or '-', not starting with '.'",
                 long_name);
        expect_device_error(text, expected);
    }
    /* Duplicate key, at the second one. */
    expect_device_error("plugin: a\nparams:\n  x: 1\n  x: 2\n",
                        "4:3: duplicate key \"x\" (first defined at line 3, column 3)");
    /* Missing plugin: at the top of the mapping. */
    expect_device_error("# comment\nname: tdev0\n",
                        "2:1: plugin: missing; name the plugin that implements the device");
    /* Bad modes. */
    expect_device_error("plugin: p\nsocket:\n  mode: \"0999\"\n",
                        "3:9: socket.mode: the string \"0999\" is not an octal mode such as "
                        "\"0660\"");
    expect_device_error("plugin: p\nsocket:\n  mode: 689\n",
                        "3:9: socket.mode: the integer 689 is not an octal mode such as \"0660\"");
    expect_device_error("plugin: p\nsocket:\n  mode: \"10000\"\n",
                        "3:9: socket.mode: the string \"10000\" is more than 07777");
    expect_device_error("plugin: p\nsocket:\n  mode: -1\n",
                        "3:9: socket.mode: expected an octal mode such as \"0660\", found the "
                        "integer -1");
    expect_device_error("plugin: p\nsocket:\n  mode: \"\"\n",
                        "3:9: socket.mode: expected an octal mode such as \"0660\", found the "
                        "string \"\"");
    expect_device_error("plugin: p\nsocket:\n  mode: rw\n",
                        "3:9: socket.mode: the string \"rw\" is not an octal mode such as "
                        "\"0660\"");
    expect_device_error("plugin: p\nsocket:\n  mode: true\n",
                        "3:9: socket.mode: expected an octal mode such as \"0660\", found true");
    /* Socket paths and accounts. */
    expect_device_error("plugin: p\nsocket:\n  path: relative.sock\n",
                        "3:9: socket.path: \"relative.sock\" is not an absolute path");
    expect_device_error("plugin: p\nsocket:\n  path: /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n",
                        "3:9: socket.path: the path is longer than 107 bytes");
    expect_device_error("plugin: p\nsocket:\n  group: \"kvm:x\"\n",
                        "3:10: socket.group: \"kvm:x\" is not a valid user or group name");
    expect_device_error("plugin: p\nsocket:\n  user: -root\n",
                        "3:9: socket.user: \"-root\" is not a valid user or group name");
    expect_device_error("plugin: p\nsocket:\n  user: \"\"\n",
                        "3:9: socket.user: \"\" is not a valid user or group name");
    expect_device_error("plugin: p\nsocket:\n  user: -1\n",
                        "3:9: socket.user: -1 is not a user or group id (0 to 4294967294)");
    expect_device_error(
        "plugin: p\nsocket:\n  group: 4294967295\n",
        "3:10: socket.group: 4294967295 is not a user or group id (0 to 4294967294)");
}
END_TEST

/* A user or group written as a number, quoted or not, is that id, kept as its digits. */
START_TEST(test_device_numeric_accounts)
{
    struct config_device *device = load_ok("numeric.yaml", "plugin: testdev\n"
                                                           "socket:\n"
                                                           "  user: 107\n"
                                                           "  group: \"0\"\n");

    ck_assert_str_eq(device->socket_user, "107");
    ck_assert_str_eq(device->socket_group, "0");
    config_device_free(device);
}
END_TEST

/* Where the plugin runs, whether it is started again, and as whom. */
/* poll_us: microseconds, 0 to a second; round trips through JSON and YAML; compared. */
START_TEST(test_device_poll_us)
{
    struct config_device *device = load_ok("tdev0.yaml", "plugin: testdev\npoll_us: 50\n");
    struct config_device *plain = load_ok("tdev0.yaml", "plugin: testdev\n");
    struct config_device *again = NULL;
    char error[CONFIG_ERROR_MAX] = "";
    json_t *object;

    ck_assert_uint_eq(device->poll_usec, 50);
    ck_assert_uint_eq(plain->poll_usec, 0);
    ck_assert(!config_device_equal(device, plain));
    object = config_device_to_json(plain);
    ck_assert_ptr_null(json_object_get(object, "poll_us")); /* 0, the default, is not written */
    json_decref(object);
    object = config_device_to_json(device);
    ck_assert_int_eq(json_integer_value(json_object_get(object, "poll_us")), 50);
    ck_assert_int_eq(
        config_device_from_json(object, "device_add", NULL, &again, error, sizeof(error)), 0);
    ck_assert(config_device_equal(device, again));
    json_decref(object);
    config_device_free(again);
    config_device_free(plain);
    config_device_free(device);
    config_device_free(load_ok("tdev0.yaml", "plugin: testdev\npoll_us: 1000000\n"));
    expect_device_error(
        "plugin: testdev\npoll_us: -1\n",
        "2:10: poll_us: expected an integer from 0 to 1000000, found the integer -1");
    expect_device_error(
        "plugin: testdev\npoll_us: 1000001\n",
        "2:10: poll_us: expected an integer from 0 to 1000000, found the integer 1000001");
    expect_device_error(
        "plugin: testdev\npoll_us: fast\n",
        "2:10: poll_us: expected an integer from 0 to 1000000, found the string \"fast\"");
}
END_TEST

START_TEST(test_device_supervision)
{
    static const struct {
        const char *text;
        enum config_isolation isolation;
        enum config_restart restart;
        const char *user;
    } good[] = {
        {"isolation: process\n", CONFIG_ISOLATION_PROCESS, CONFIG_RESTART_ON_FAILURE, NULL},
        {"isolation: thread\n", CONFIG_ISOLATION_THREAD, CONFIG_RESTART_ON_FAILURE, NULL},
        {"isolation: \"thread\"\nrestart: always\n", CONFIG_ISOLATION_THREAD, CONFIG_RESTART_ALWAYS,
         NULL},
        {"restart: on-failure\n", CONFIG_ISOLATION_DEFAULT, CONFIG_RESTART_ON_FAILURE, NULL},
        /* The word as systemd's Restart= has it, plain or quoted; and what a YAML 1.1 tool
         * makes of it. */
        {"restart: no\n", CONFIG_ISOLATION_DEFAULT, CONFIG_RESTART_NO, NULL},
        {"restart: \"no\"\n", CONFIG_ISOLATION_DEFAULT, CONFIG_RESTART_NO, NULL},
        {"restart: 'no'\n", CONFIG_ISOLATION_DEFAULT, CONFIG_RESTART_NO, NULL},
        {"restart: false\n", CONFIG_ISOLATION_DEFAULT, CONFIG_RESTART_NO, NULL},
        {"user: _vfio-userd\n", CONFIG_ISOLATION_DEFAULT, CONFIG_RESTART_ON_FAILURE, "_vfio-userd"},
        {"isolation: process\nuser: 107\n", CONFIG_ISOLATION_PROCESS, CONFIG_RESTART_ON_FAILURE,
         "107"},
        {"user: \"0\"\nrestart: no\n", CONFIG_ISOLATION_DEFAULT, CONFIG_RESTART_NO, "0"},
    };
    static const struct {
        const char *text;
        const char *expected;
    } bad[] = {
        {"isolation: foo\n", "2:12: isolation: \"foo\" is not one of process, thread"},
        {"isolation: default\n", "2:12: isolation: \"default\" is not one of process, thread"},
        {"isolation: Process\n", "2:12: isolation: \"Process\" is not one of process, thread"},
        {"isolation: 1\n", "2:12: isolation: expected one of process, thread, found the integer 1"},
        {"isolation: [thread]\n", "2:12: isolation: expected one of process, thread, found a list"},
        {"isolation: true\n", "2:12: isolation: expected one of process, thread, found true"},
        {"restart: never\n", "2:10: restart: \"never\" is not one of on-failure, always, no"},
        {"restart: No\n", "2:10: restart: \"No\" is not one of on-failure, always, no"},
        {"restart: on_failure\n",
         "2:10: restart: \"on_failure\" is not one of on-failure, always, no"},
        {"restart: true\n", "2:10: restart: expected one of on-failure, always, no, found true"},
        {"restart: 0\n",
         "2:10: restart: expected one of on-failure, always, no, found the integer 0"},
        {"user: \"a b\"\n", "2:7: user: \"a b\" is not a valid user or group name"},
        {"user: \"\"\n", "2:7: user: \"\" is not a valid user or group name"},
        {"user: -root\n", "2:7: user: \"-root\" is not a valid user or group name"},
        {"user: -1\n", "2:7: user: -1 is not a user or group id (0 to 4294967294)"},
        {"user: [qemu]\n", "2:7: user: expected a user or group name, found a list"},
        {"user: \"qemu\\n\"\n",
         "2:7: user: contains a control character (0x0a); names and paths may not"},
        /* The account is the device host's: on a worker thread there is none to set. */
        {"isolation: thread\nuser: qemu\n",
         "3:7: user: a device with isolation: thread runs as the daemon; an account of its own "
         "needs isolation: process"},
    };
    char text[512], long_user[CONFIG_ACCOUNT_MAX + 2];

    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        struct config_device *device;

        snprintf(text, sizeof(text), "plugin: testdev\n%s", good[i].text);
        device = load_ok("tdev0.yaml", text);
        ck_assert_msg(device->isolation == good[i].isolation, "%s", good[i].text);
        ck_assert_msg(device->restart == good[i].restart, "%s", good[i].text);
        if (good[i].user == NULL) {
            ck_assert_ptr_null(device->user);
        } else {
            ck_assert_str_eq(device->user, good[i].user);
        }
        config_device_free(device);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(text, sizeof(text), "plugin: testdev\n%s", bad[i].text);
        expect_device_error(text, bad[i].expected);
    }

    /* At most CONFIG_ACCOUNT_MAX characters, as socket.user. */
    memset(long_user, 'u', CONFIG_ACCOUNT_MAX);
    long_user[CONFIG_ACCOUNT_MAX] = '\0';
    snprintf(text, sizeof(text), "plugin: testdev\nuser: %s\n", long_user);
    config_device_free(load_ok("tdev0.yaml", text));
    long_user[CONFIG_ACCOUNT_MAX] = 'u';
    long_user[CONFIG_ACCOUNT_MAX + 1] = '\0';
    snprintf(text, sizeof(text), "plugin: testdev\nuser: %s\n", long_user);
    {
        struct config_device *device = (void *)1;
        char error[CONFIG_ERROR_MAX] = "";
        const char *path = write_file("dev.yaml", text);

        ck_assert_int_eq(config_device_load(path, &device, error, sizeof(error)), -EINVAL);
        ck_assert_ptr_nonnull(strstr(error, ":2:7: user: \"uuuu"));
        ck_assert_ptr_nonnull(strstr(error, "\" is not a valid user or group name"));
    }

    /* device_add: the same words; false is no there too (a YAML 1.1 tool's `restart: no`). */
    {
        struct config_device *device = NULL;
        char error[CONFIG_ERROR_MAX] = "";
        json_t *settings = json_pack("{s:s, s:s, s:s, s:b, s:s}", "name", "x", "plugin", "t",
                                     "isolation", "process", "restart", 0, "user", "qemu");

        ck_assert_int_eq(
            config_device_from_json(settings, "device_add", NULL, &device, error, sizeof(error)),
            0);
        ck_assert_int_eq(device->isolation, CONFIG_ISOLATION_PROCESS);
        ck_assert_int_eq(device->restart, CONFIG_RESTART_NO);
        ck_assert_str_eq(device->user, "qemu");
        config_device_free(device);
        json_decref(settings);
    }
    {
        struct config_device *device = NULL;
        char error[CONFIG_ERROR_MAX] = "";
        json_t *settings =
            json_pack("{s:s, s:s, s:s}", "plugin", "t", "isolation", "thread", "restart", "no");

        ck_assert_int_eq(
            config_device_from_json(settings, "device_add", "x", &device, error, sizeof(error)), 0);
        ck_assert_int_eq(device->isolation, CONFIG_ISOLATION_THREAD);
        ck_assert_int_eq(device->restart, CONFIG_RESTART_NO);
        config_device_free(device);
        json_decref(settings);
    }
    expect_json_error("{\"plugin\": \"t\", \"restart\": true}", "x",
                      "device_add: restart: expected one of on-failure, always, no, found true");
    expect_json_error("{\"plugin\": \"t\", \"isolation\": \"vm\"}", "x",
                      "device_add: isolation: \"vm\" is not one of process, thread");
    expect_json_error("{\"plugin\": \"t\", \"isolation\": \"thread\", \"user\": 0}", "x",
                      "device_add: user: a device with isolation: thread runs as the daemon; an "
                      "account of its own needs isolation: process");
    expect_json_error("{\"plugin\": \"t\", \"user\": 4294967295}", "x",
                      "device_add: user: 4294967295 is not a user or group id (0 to 4294967294)");
}
END_TEST

START_TEST(test_device_bad_stem)
{
    struct config_device *device = NULL;
    char error[CONFIG_ERROR_MAX] = "";
    char expected[CONFIG_ERROR_MAX];
    const char *path = write_file("bad name.yaml", "plugin: testdev\n");

    ck_assert_int_eq(config_device_load(path, &device, error, sizeof(error)), -EINVAL);
    snprintf(expected, sizeof(expected),
             "%s:1:1: name: missing, and the file name gives \"bad name\", which is not a valid "
             "device name; add a name or rename the file",
             path);
    ck_assert_str_eq(error, expected);

    /* A name in the file overrides the stem. */
    path = write_file("bad name.yaml", "name: good\nplugin: testdev\n");
    ck_assert_int_eq(config_device_load(path, &device, error, sizeof(error)), 0);
    ck_assert_str_eq(device->name, "good");
    config_device_free(device);

    /* Reading errors pass through. */
    snprintf(expected, sizeof(expected), "%s/none.yaml", temporary);
    ck_assert_int_eq(config_device_load(expected, &device, error, sizeof(error)), -ENOENT);
    ck_assert_ptr_nonnull(strstr(error, "none.yaml: cannot open: No such file or directory"));
}
END_TEST

START_TEST(test_device_from_json)
{
    json_t *settings;
    struct config_device *device = NULL;
    char error[CONFIG_ERROR_MAX] = "";

    settings = json_pack("{s:s, s:s, s:{s:i}, s:{s:s, s:[i]}}", "name", "tdev9", "plugin",
                         "testdev", "socket", "mode", 640, "params", "ram_size", "4K", "list", 3);
    ck_assert_int_eq(
        config_device_from_json(settings, "device_add", NULL, &device, error, sizeof(error)), 0);
    ck_assert_str_eq(device->name, "tdev9");
    ck_assert_uint_eq(device->socket_mode, 0640);
    ck_assert_str_eq(device->origin, "device_add");
    ck_assert_ptr_null(device->document);
    /* The device owns a copy. */
    json_object_set_new(json_object_get(settings, "params"), "ram_size", json_string("8K"));
    ck_assert_str_eq(json_string_value(json_object_get(device->params, "ram_size")), "4K");
    json_decref(settings);
    config_device_free(device);

    /* The name can come from the caller, e.g. `vfio-userctl add NAME`. */
    settings = json_pack("{s:s}", "plugin", "testdev");
    ck_assert_int_eq(
        config_device_from_json(settings, "device_add", "tdev3", &device, error, sizeof(error)), 0);
    ck_assert_str_eq(device->name, "tdev3");
    config_device_free(device);
    json_decref(settings);

    expect_json_error("{\"plugin\": \"testdev\"}", NULL,
                      "device_add: name: missing; a device "
                      "needs a name");
    expect_json_error("{\"plugin\": \"testdev\"}", "bad/name",
                      "device_add: name: missing, and the file name gives \"bad/name\", which is "
                      "not a valid device name; add a name or rename the file");
    expect_json_error("{\"name\": \"x\", \"plugin\": \"t\", \"params\": {\"ram_size\": 1.5}}", NULL,
                      "device_add: params.ram_size: real numbers are not supported; write the "
                      "value as a string");
    expect_json_error("{\"name\": \"x\", \"plugin\": \"t\", \"params\": {\"a\": [0, {\"b\": "
                      "0.5}]}}",
                      NULL,
                      "device_add: params.a[1].b: real numbers are not supported; write the "
                      "value as a string");
    expect_json_error("{\"name\": \"x\", \"plugin\": \"t\", \"extra\": 1}", NULL,
                      "device_add: unknown key \"extra\"; expected name, plugin, enabled, "
                      "isolation, restart, user, socket or params");
    expect_json_error("{\"name\": \"x\", \"plugin\": \"t\", \"socket\": {\"mode\": \"0999\"}}",
                      NULL,
                      "device_add: socket.mode: the string \"0999\" is not an octal mode such as "
                      "\"0660\"");
    expect_json_error("[1]", NULL,
                      "device_add: expected a mapping of device settings, found a "
                      "list");
    expect_json_error("{\"name\": \"x\"}", NULL,
                      "device_add: plugin: missing; name the plugin that implements the device");

    /* Hand-built values that no parser produces. */
    settings = json_pack("{s:s, s:s, s:{s:o}}", "name", "x", "plugin", "t", "params", "blob",
                         json_stringn("a\0b", 3));
    ck_assert_int_eq(
        config_device_from_json(settings, "device_add", NULL, &device, error, sizeof(error)),
        -EINVAL);
    ck_assert_str_eq(error, "device_add: params.blob: contains a NUL character");
    json_decref(settings);

    settings = json_pack("{s:s, s:o}", "name", "x", "plugin", json_stringn("t\0x", 3));
    ck_assert_int_eq(
        config_device_from_json(settings, "device_add", NULL, &device, error, sizeof(error)),
        -EINVAL);
    ck_assert_str_eq(error, "device_add: plugin: contains a NUL character");
    json_decref(settings);

    {
        json_t *params = json_object();
        json_t *inner = json_array();
        int i;
        json_object_set_new(params, "deep", inner);
        for (i = 0; i < 40; i++) {
            json_t *next = json_array();
            json_array_append_new(inner, next);
            inner = next;
        }
        settings = json_pack("{s:s, s:s, s:o}", "name", "x", "plugin", "t", "params", params);
        ck_assert_int_eq(
            config_device_from_json(settings, "device_add", NULL, &device, error, sizeof(error)),
            -EINVAL);
        /* root, params and deep are three levels; 30 more lists make 33. */
        ck_assert_str_eq(error, "device_add: params.deep[0][0][0][0][0][0][0][0][0][0][0][0][0][0]"
                                "[0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0]: nested more "
                                "than 32 levels deep");
        json_decref(settings);
    }

    ck_assert_int_eq(config_device_from_json(NULL, "device_add", NULL, &device, NULL, 0), -EINVAL);
}
END_TEST

START_TEST(test_plugin_error_location)
{
    struct config_device *device = load_ok("tdev0.yaml", "plugin: testdev\n"
                                                         "params:\n"
                                                         "  mode: fast\n"
                                                         "  ram_size: 3M\n"
                                                         "  queues:\n"
                                                         "    - size: 0\n");
    struct vfio_userd_error plugin_error;
    char location[CONFIG_ERROR_MAX];
    char expected[CONFIG_ERROR_MAX];
    char message[CONFIG_ERROR_MAX];
    json_t *settings;

    config_device_param_location(device, "ram_size", location, sizeof(location));
    snprintf(expected, sizeof(expected), "%s:4:13", device->origin);
    ck_assert_str_eq(location, expected);

    config_device_param_location(device, "queues[0].size", location, sizeof(location));
    snprintf(expected, sizeof(expected), "%s:6:13", device->origin);
    ck_assert_str_eq(location, expected);

    /* A parameter the file does not set: the params key. */
    config_device_param_location(device, "missing", location, sizeof(location));
    snprintf(expected, sizeof(expected), "%s:2:1", device->origin);
    ck_assert_str_eq(location, expected);
    config_device_param_location(device, "", location, sizeof(location));
    ck_assert_str_eq(location, expected);

    /* Any setting can be located, e.g. for a duplicate name found by the registry. */
    config_device_location(device, "plugin", location, sizeof(location));
    snprintf(expected, sizeof(expected), "%s:1:9", device->origin);
    ck_assert_str_eq(location, expected);
    config_device_location(device, "name", location, sizeof(location));
    snprintf(expected, sizeof(expected), "%s:1:1", device->origin);
    ck_assert_str_eq(location, expected);

    vfio_userd_error_set(&plugin_error, -ERANGE, "ram_size", "must be a power of two");
    config_device_format_plugin_error(device, &plugin_error, message, sizeof(message));
    snprintf(expected, sizeof(expected), "%s:4:13: params.ram_size: must be a power of two",
             device->origin);
    ck_assert_str_eq(message, expected);

    vfio_userd_error_set(&plugin_error, -ENOMEM, NULL, "out of memory");
    config_device_format_plugin_error(device, &plugin_error, message, sizeof(message));
    snprintf(expected, sizeof(expected), "%s:2:1: out of memory", device->origin);
    ck_assert_str_eq(message, expected);

    /* A plugin that forgets the terminating NUL cannot make us read past its arrays. */
    memset(&plugin_error, 'A', sizeof(plugin_error));
    config_device_format_plugin_error(device, &plugin_error, message, sizeof(message));
    ck_assert_uint_lt(strlen(message), sizeof(message));
    config_device_free(device);

    /* No params at all: the top of the file. */
    device = load_ok("tdev1.yaml", "\nplugin: testdev\n");
    config_device_param_location(device, "ram_size", location, sizeof(location));
    snprintf(expected, sizeof(expected), "%s:2:1", device->origin);
    ck_assert_str_eq(location, expected);
    config_device_free(device);

    /* Without a file, the context stands in. */
    settings =
        json_pack("{s:s, s:s, s:{s:s}}", "name", "x", "plugin", "t", "params", "ram_size", "3M");
    ck_assert_int_eq(
        config_device_from_json(settings, "device_add", NULL, &device, message, sizeof(message)),
        0);
    vfio_userd_error_set(&plugin_error, -ERANGE, "ram_size", "must be a power of two");
    config_device_format_plugin_error(device, &plugin_error, message, sizeof(message));
    ck_assert_str_eq(message, "device_add: params.ram_size: must be a power of two");
    config_device_free(device);
    json_decref(settings);
}
END_TEST

START_TEST(test_param_assign)
{
    json_t *params = json_object();
    char error[256];

    ck_assert_int_eq(config_param_assign(params, "ram_size=64K", error, sizeof(error)), 0);
    ck_assert_int_eq(config_param_assign(params, "empty=", error, sizeof(error)), 0);
    ck_assert_int_eq(config_param_assign(params, "eq=a=b", error, sizeof(error)), 0);
    ck_assert_str_eq(json_string_value(json_object_get(params, "ram_size")), "64K");
    ck_assert_str_eq(json_string_value(json_object_get(params, "empty")), "");
    ck_assert_str_eq(json_string_value(json_object_get(params, "eq")), "a=b");
    ck_assert_int_eq(config_param_assign(params, "novalue", error, sizeof(error)), -EINVAL);
    ck_assert_str_eq(error, "--param wants KEY=VALUE, not 'novalue'");
    ck_assert_int_eq(config_param_assign(params, "=1", error, sizeof(error)), -EINVAL);
    ck_assert_int_eq(config_param_assign(params, "ram_size=1M", error, sizeof(error)), -EINVAL);
    ck_assert_str_eq(error, "--param ram_size given twice");
    ck_assert_str_eq(json_string_value(json_object_get(params, "ram_size")), "64K");
    ck_assert_int_eq(config_param_assign(params, "bad=\xff", error, sizeof(error)), -EINVAL);
    ck_assert_str_eq(error, "--param bad: not valid UTF-8");
    ck_assert_uint_eq(json_object_size(params), 3);
    json_decref(params);
}
END_TEST

START_TEST(test_persist_round_trip)
{
    struct config_device *device = NULL;
    struct config_device *loaded = NULL;
    char error[CONFIG_ERROR_MAX] = "";
    char directory[256];
    char path[300];
    struct dirent *entry;
    struct stat st;
    json_t *settings;
    char *text = NULL;
    DIR *stream;
    int files = 0;

    settings = json_loads("{\"name\": \"tdev0\", \"plugin\": \"testdev\", \"enabled\": false,"
                          " \"isolation\": \"process\", \"restart\": \"always\", \"user\": 107,"
                          " \"socket\": {\"path\": \"/run/a b/x.sock\", \"user\": \"qemu\","
                          " \"group\": \"kvm\", \"mode\": 600},"
                          " \"params\": {\"ram_size\": \"1M\", \"flag\": true, \"n\": -3,"
                          " \"s\": \"0660\", \"t\": \"true\", \"e\": \"\", \"z\": null,"
                          " \"list\": [1, \"yes\", {\"k\": \"v: w\"}], \"m\": {}}}",
                          0, NULL);
    ck_assert_ptr_nonnull(settings);
    ck_assert_int_eq(
        config_device_from_json(settings, "device_add", NULL, &device, error, sizeof(error)), 0);
    json_decref(settings);

    ck_assert_int_eq(config_device_to_yaml(device, &text), 0);
    ck_assert_ptr_nonnull(strstr(text, "mode: \"0600\"\n"));
    ck_assert_ptr_nonnull(strstr(text, "name: tdev0\n"));
    ck_assert_ptr_nonnull(strstr(text, "isolation: process\n"));
    ck_assert_ptr_nonnull(strstr(text, "restart: always\n"));
    /* A numeric account stays a string, quoted so that it is not read back as a number. */
    ck_assert_ptr_nonnull(strstr(text, "user: \"107\"\n"));
    free(text);

    /* The directory is created when missing; the file replaces an older one atomically. */
    snprintf(directory, sizeof(directory), "%s/devices.d", temporary);
    ck_assert_int_eq(config_device_persist(device, directory, error, sizeof(error)), 0);
    ck_assert_int_eq(config_device_persist(device, directory, error, sizeof(error)), 0);
    snprintf(path, sizeof(path), "%s/tdev0.yaml", directory);
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_uint_eq(st.st_mode & 07777, 0644);
    ck_assert_int_eq(config_device_load(path, &loaded, error, sizeof(error)), 0);
    ck_assert(config_device_equal(device, loaded));
    ck_assert_str_eq(loaded->origin, path);
    config_device_free(loaded);

    /* No temporary file is left behind. */
    stream = opendir(directory);
    ck_assert_ptr_nonnull(stream);
    while ((entry = readdir(stream)) != NULL) {
        if (strcmp(entry->d_name, ".") != 0 && strcmp(entry->d_name, "..") != 0) {
            ck_assert_str_eq(entry->d_name, "tdev0.yaml");
            files++;
        }
    }
    closedir(stream);
    ck_assert_int_eq(files, 1);

    /* Equality notices each field. */
    ck_assert_int_eq(config_device_load(path, &loaded, error, sizeof(error)), 0);
    loaded->socket_mode = 0660;
    ck_assert(!config_device_equal(device, loaded));
    loaded->socket_mode = 0600;
    free(loaded->socket_user);
    loaded->socket_user = NULL;
    ck_assert(!config_device_equal(device, loaded));
    config_device_free(loaded);
    ck_assert_int_eq(config_device_load(path, &loaded, error, sizeof(error)), 0);
    ck_assert(config_device_equal(device, loaded));
    loaded->isolation = CONFIG_ISOLATION_DEFAULT;
    ck_assert(!config_device_equal(device, loaded));
    loaded->isolation = CONFIG_ISOLATION_THREAD;
    ck_assert(!config_device_equal(device, loaded));
    loaded->isolation = CONFIG_ISOLATION_PROCESS;
    loaded->restart = CONFIG_RESTART_ON_FAILURE;
    ck_assert(!config_device_equal(device, loaded));
    loaded->restart = CONFIG_RESTART_ALWAYS;
    free(loaded->user);
    loaded->user = strdup("108");
    ck_assert(!config_device_equal(device, loaded));
    free(loaded->user);
    loaded->user = NULL;
    ck_assert(!config_device_equal(device, loaded));
    ck_assert(!config_device_equal(loaded, device));
    config_device_free(loaded);
    ck_assert_int_eq(config_device_load(path, &loaded, error, sizeof(error)), 0);
    json_object_set_new(loaded->params, "n", json_integer(3));
    ck_assert(!config_device_equal(device, loaded));
    config_device_free(loaded);

    /* A minimal device writes no socket section and reads back the same. */
    config_device_free(device);
    device = load_ok("tdev5.yaml", "plugin: testdev\n");
    ck_assert_int_eq(config_device_to_yaml(device, &text), 0);
    ck_assert_ptr_null(strstr(text, "socket"));
    ck_assert_ptr_nonnull(strstr(text, "params: {}\n"));
    /* A device that leaves isolation to the daemon still does once persisted. */
    ck_assert_ptr_null(strstr(text, "isolation"));
    ck_assert_ptr_null(strstr(text, "restart"));
    ck_assert_ptr_null(strstr(text, "\nuser:"));
    free(text);
    ck_assert_int_eq(config_device_persist(device, directory, error, sizeof(error)), 0);
    snprintf(path, sizeof(path), "%s/tdev5.yaml", directory);
    ck_assert_int_eq(config_device_load(path, &loaded, error, sizeof(error)), 0);
    ck_assert(config_device_equal(device, loaded));
    config_device_free(loaded);

    /*
     * restart: no is written quoted, so that a YAML 1.1 reader does not take it for false,
     * and reads back as no from the file and through device_get's JSON alike; an explicit
     * on-failure is the default and is not written.
     */
    config_device_free(device);
    device = load_ok("tdev6.yaml", "plugin: testdev\nisolation: thread\nrestart: no\n");
    ck_assert_int_eq(config_device_to_yaml(device, &text), 0);
    ck_assert_ptr_nonnull(strstr(text, "isolation: thread\n"));
    ck_assert_ptr_nonnull(strstr(text, "restart: \"no\"\n"));
    free(text);
    ck_assert_int_eq(config_device_persist(device, directory, error, sizeof(error)), 0);
    snprintf(path, sizeof(path), "%s/tdev6.yaml", directory);
    ck_assert_int_eq(config_device_load(path, &loaded, error, sizeof(error)), 0);
    ck_assert(config_device_equal(device, loaded));
    ck_assert_int_eq(loaded->restart, CONFIG_RESTART_NO);
    config_device_free(loaded);
    settings = config_device_to_json(device);
    ck_assert_ptr_nonnull(settings);
    ck_assert_str_eq(json_string_value(json_object_get(settings, "isolation")), "thread");
    ck_assert_str_eq(json_string_value(json_object_get(settings, "restart")), "no");
    ck_assert_ptr_null(json_object_get(settings, "user"));
    ck_assert_int_eq(
        config_device_from_json(settings, "device_add", NULL, &loaded, error, sizeof(error)), 0);
    ck_assert(config_device_equal(device, loaded));
    config_device_free(loaded);
    json_decref(settings);
    config_device_free(device);
    device = load_ok("tdev7.yaml", "plugin: testdev\nrestart: on-failure\nuser: qemu\n");
    settings = config_device_to_json(device);
    ck_assert_ptr_null(json_object_get(settings, "isolation"));
    ck_assert_ptr_null(json_object_get(settings, "restart"));
    ck_assert_str_eq(json_string_value(json_object_get(settings, "user")), "qemu");
    ck_assert_int_eq(
        config_device_from_json(settings, "device_add", NULL, &loaded, error, sizeof(error)), 0);
    ck_assert(config_device_equal(device, loaded));
    config_device_free(loaded);
    json_decref(settings);

    /* Failures are reported, not hidden. */
    snprintf(directory, sizeof(directory), "%s/no/such/dir", temporary);
    ck_assert_int_eq(config_device_persist(device, directory, error, sizeof(error)), -ENOENT);
    ck_assert_ptr_nonnull(strstr(error, "cannot create the directory"));
    snprintf(device->name, sizeof(device->name), "../escape");
    ck_assert_int_eq(config_device_persist(device, temporary, error, sizeof(error)), -EINVAL);
    config_device_free(device);
}
END_TEST

START_TEST(test_daemon_defaults)
{
    struct config_daemon *daemon = NULL;
    char error[CONFIG_ERROR_MAX] = "";
    char path[256];
    char socket[CONFIG_SOCKET_PATH_MAX];
    struct config_device device = {.name = "tdev0"};

    snprintf(path, sizeof(path), "%s/missing.yaml", temporary);
    ck_assert_int_eq(config_daemon_load(path, false, &daemon, error, sizeof(error)), 0);
    ck_assert_uint_eq(daemon->devices_dir_count, 3);
    ck_assert_str_eq(daemon->devices_dirs[0], CONFIG_DEVICES_DIR_ETC);
    ck_assert_str_eq(daemon->devices_dirs[1], "/run/vfio-userd/devices.d");
    ck_assert_str_eq(daemon->devices_dirs[2], CONFIG_DEVICES_DIR_LIB);
    ck_assert_uint_eq(daemon->plugin_dir_count, 1);
    ck_assert_str_eq(daemon->plugin_dirs[0], VFIO_USERD_PLUGINDIR);
    ck_assert_str_eq(daemon->runtime_dir, "/run/vfio-userd");
    ck_assert_ptr_null(daemon->admin_socket);
    ck_assert_uint_eq(daemon->admin_socket_mode, 0660);
    ck_assert_ptr_null(daemon->admin_socket_group);
    ck_assert_uint_eq(daemon->worker_threads, 0);
    ck_assert_int_eq(daemon->log_level, LOG_INFO);
    ck_assert_uint_eq(daemon->dma_message_chunk_size, 64 * 1024);
    ck_assert_uint_eq(daemon->max_client_fds, 4096);
    ck_assert_uint_eq(daemon->handshake_timeout_usec, 10 * 1000 * 1000);
    ck_assert_int_eq(daemon->default_isolation, CONFIG_ISOLATION_PROCESS);
    ck_assert_ptr_null(daemon->device_user);
    ck_assert_uint_eq(daemon->health_timeout_usec, 5 * 1000 * 1000);
    ck_assert_uint_eq(daemon->device_memory_limit, 1ull << 30);
    ck_assert_uint_eq(daemon->start_limit_burst, 5);
    ck_assert_uint_eq(daemon->start_limit_interval_usec, 10 * 1000 * 1000);
    ck_assert_ptr_null(daemon->source);
    ck_assert_int_eq(config_daemon_admin_socket(daemon, socket, sizeof(socket)), 0);
    ck_assert_str_eq(socket, "/run/vfio-userd/admin.sock");
    ck_assert_int_eq(config_daemon_device_socket(daemon, &device, socket, sizeof(socket)), 0);
    ck_assert_str_eq(socket, "/run/vfio-userd/devices/tdev0.sock");
    config_daemon_free(daemon);

    /* Asked for explicitly, a missing file is an error. */
    ck_assert_int_eq(config_daemon_load(path, true, &daemon, error, sizeof(error)), -ENOENT);
    ck_assert_ptr_null(daemon);

    /* An empty file, or one with only comments, keeps the defaults. */
    ck_assert_int_eq(config_daemon_load(write_file("empty.yaml", "# nothing\n"), true, &daemon,
                                        error, sizeof(error)),
                     0);
    ck_assert_uint_eq(daemon->devices_dir_count, 3);
    ck_assert_ptr_nonnull(daemon->source);
    config_daemon_free(daemon);
}
END_TEST

START_TEST(test_daemon_full)
{
    struct config_daemon *daemon = NULL;
    char error[CONFIG_ERROR_MAX] = "";
    char socket[CONFIG_SOCKET_PATH_MAX];
    struct config_device device = {.name = "tdev0"};
    const char *path = write_file("vfio-userd.yaml", "devices_dirs:\n"
                                                     "  - /etc/x\n"
                                                     "  - /usr/x\n"
                                                     "plugin_dirs: []\n"
                                                     "runtime_dir: /run/other\n"
                                                     "admin_socket_mode: \"0600\"\n"
                                                     "admin_socket_group: vfio\n"
                                                     "worker_threads: 256\n"
                                                     "log_level: debug\n"
                                                     "dma_message_chunk_size: 16K\n"
                                                     "default_isolation: thread\n"
                                                     "device_user: vfio-dev\n"
                                                     "health_timeout: 2.5\n"
                                                     "device_memory_limit: 512M\n"
                                                     "start_limit_burst: 3\n"
                                                     "start_limit_interval: 60\n");

    ck_assert_int_eq(config_daemon_load(path, true, &daemon, error, sizeof(error)), 0);
    ck_assert_uint_eq(daemon->devices_dir_count, 2);
    ck_assert_str_eq(daemon->devices_dirs[1], "/usr/x");
    ck_assert_uint_eq(daemon->plugin_dir_count, 0);
    ck_assert_str_eq(daemon->runtime_dir, "/run/other");
    ck_assert_uint_eq(daemon->admin_socket_mode, 0600);
    ck_assert_str_eq(daemon->admin_socket_group, "vfio");
    ck_assert_uint_eq(daemon->worker_threads, 256);
    ck_assert_int_eq(daemon->log_level, LOG_DEBUG);
    ck_assert_uint_eq(daemon->dma_message_chunk_size, 16 * 1024);
    ck_assert_int_eq(daemon->default_isolation, CONFIG_ISOLATION_THREAD);
    ck_assert_str_eq(daemon->device_user, "vfio-dev");
    ck_assert_uint_eq(daemon->health_timeout_usec, 2500000);
    ck_assert_uint_eq(daemon->device_memory_limit, 512ull << 20);
    ck_assert_uint_eq(daemon->start_limit_burst, 3);
    ck_assert_uint_eq(daemon->start_limit_interval_usec, 60ull * 1000 * 1000);
    ck_assert_str_eq(daemon->source, path);
    /* The admin socket and device sockets follow runtime_dir unless set. */
    ck_assert_int_eq(config_daemon_admin_socket(daemon, socket, sizeof(socket)), 0);
    ck_assert_str_eq(socket, "/run/other/admin.sock");
    ck_assert_int_eq(config_daemon_device_socket(daemon, &device, socket, sizeof(socket)), 0);
    ck_assert_str_eq(socket, "/run/other/devices/tdev0.sock");
    device.socket_path = "/tmp/own.sock";
    ck_assert_int_eq(config_daemon_device_socket(daemon, &device, socket, sizeof(socket)), 0);
    ck_assert_str_eq(socket, "/tmp/own.sock");
    config_daemon_free(daemon);

    path =
        write_file("v2.yaml", "admin_socket: /tmp/admin.sock\nruntime_dir: /run/"
                              "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                              "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n");
    ck_assert_int_eq(config_daemon_load(path, true, &daemon, error, sizeof(error)), 0);
    ck_assert_int_eq(config_daemon_admin_socket(daemon, socket, sizeof(socket)), 0);
    ck_assert_str_eq(socket, "/tmp/admin.sock");
    /* A runtime_dir too long for a derived socket path is caught when the path is made. */
    device.socket_path = NULL;
    ck_assert_int_eq(config_daemon_device_socket(daemon, &device, socket, sizeof(socket)),
                     -ENAMETOOLONG);
    ck_assert_int_eq(config_daemon_device_socket(daemon, &device, socket, 8), -ENAMETOOLONG);
    config_daemon_free(daemon);
}
END_TEST

static void expect_daemon_error(const char *text, const char *expected)
{
    struct config_daemon *daemon = (void *)1;
    char error[CONFIG_ERROR_MAX] = "";
    char full[CONFIG_ERROR_MAX];
    const char *path = write_file("vfio-userd.yaml", text);

    snprintf(full, sizeof(full), "%s:%s", path, expected);
    ck_assert_int_eq(config_daemon_load(path, false, &daemon, error, sizeof(error)), -EINVAL);
    ck_assert_ptr_null(daemon);
    ck_assert_str_eq(error, full);
}

/* Every way to write a chunk size, as the YAML subset reads it. */
START_TEST(test_daemon_dma_message_chunk_size)
{
    static const struct {
        const char *text;
        uint32_t bytes;
    } good[] = {
        {"4096", 4096},          {"0x8000", 32768}, {"64K", 65536},    {"\"128KiB\"", 131072},
        {"\"0x40000\"", 262144}, {"1M", 1048576},   {"512kB", 524288}, {"", 65536},
    };
    static const struct {
        const char *text;
        const char *found;
    } bad[] = {
        {"100000", "the integer 100000"},
        {"2048", "the integer 2048"},
        {"2M", "the string \"2M\""},
        {"0", "the integer 0"},
        {"-4096", "the integer -4096"},
        {"64 K", "the string \"64 K\""},
        {"true", "true"},
        {"[64K]", "a list"},
        {"4G", "the string \"4G\""},
    };
    char text[128], expected[256];

    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        struct config_daemon *daemon = NULL;
        char error[CONFIG_ERROR_MAX] = "";

        snprintf(text, sizeof(text), "dma_message_chunk_size: %s\n", good[i].text);
        ck_assert_msg(config_daemon_load(write_file("chunk.yaml", text), true, &daemon, error,
                                         sizeof(error)) == 0,
                      "%s: %s", good[i].text, error);
        ck_assert_uint_eq(daemon->dma_message_chunk_size, good[i].bytes);
        config_daemon_free(daemon);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(text, sizeof(text), "log_level: info\ndma_message_chunk_size: %s\n", bad[i].text);
        snprintf(expected, sizeof(expected),
                 "2:25: dma_message_chunk_size: expected a power of two from 4K to 1M, such as "
                 "65536 or 64K, found %s",
                 bad[i].found);
        expect_daemon_error(text, expected);
    }
}
END_TEST

START_TEST(test_daemon_errors)
{
    expect_daemon_error("log_level: info\nworkers: 4\n",
                        "2:1: unknown key \"workers\"; expected devices_dirs, plugin_dirs, "
                        "runtime_dir, admin_socket, admin_socket_mode, admin_socket_group, "
                        "worker_threads, log_level, dma_message_chunk_size, max_client_fds, "
                        "handshake_timeout, default_isolation, device_user, health_timeout, "
                        "device_memory_limit, start_limit_burst or start_limit_interval");
    expect_daemon_error("worker_threads: 257\n",
                        "1:17: worker_threads: expected an integer from 0 (one per CPU) to 256, "
                        "found the integer 257");
    expect_daemon_error("worker_threads: -1\n",
                        "1:17: worker_threads: expected an integer from 0 (one per CPU) to 256, "
                        "found the integer -1");
    expect_daemon_error("worker_threads: \"4\"\n",
                        "1:17: worker_threads: expected an integer from 0 (one per CPU) to 256, "
                        "found the string \"4\"");
    expect_daemon_error(
        "log_level: verbose\n",
        "1:12: log_level: \"verbose\" is not a log level; use err, warning, notice, "
        "info or debug");
    expect_daemon_error("devices_dirs: /etc/x\n",
                        "1:15: devices_dirs: expected a list of absolute paths, found the string "
                        "\"/etc/x\"");
    expect_daemon_error("plugin_dirs:\n  - /ok\n  - relative\n",
                        "3:5: plugin_dirs[1]: \"relative\" is not an absolute path");
    expect_daemon_error("runtime_dir: [a]\n",
                        "1:14: runtime_dir: expected an absolute path, found a list");
    expect_daemon_error(
        "admin_socket: /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n",
        "1:15: admin_socket: the path is longer than 107 bytes");
    expect_daemon_error("admin_socket_mode: \"0999\"\n",
                        "1:20: admin_socket_mode: the string \"0999\" is not an octal mode such as "
                        "\"0660\"");
    expect_daemon_error("admin_socket_group: \"a b\"\n",
                        "1:21: admin_socket_group: \"a b\" is not a valid user or group name");
    expect_daemon_error("[1, 2]\n", "1:1: expected a mapping of daemon settings, found a list");
    expect_daemon_error("log_level: info\nlog_level: debug\n",
                        "2:1: duplicate key \"log_level\" (first defined at line 1, column 1)");
}
END_TEST

/* The limits a client meets on a device socket. */
START_TEST(test_daemon_client_limits)
{
    static const struct {
        const char *text;
        uint32_t fds;
        uint64_t usec;
    } good[] = {
        {"max_client_fds: 16\nhandshake_timeout: 0\n", 16, 0},
        {"max_client_fds: 1048576\nhandshake_timeout: 3600\n", 1048576, 3600000000ull},
        {"max_client_fds: 8192\nhandshake_timeout: 2.5\n", 8192, 2500000},
        {"handshake_timeout: \"0.25\"\n", 4096, 250000},
        {"max_client_fds:\nhandshake_timeout:\n", 4096, 10000000},
    };
    static const struct {
        const char *text;
        const char *expected;
    } bad[] = {
        {"max_client_fds: 15\n",
         "1:17: max_client_fds: expected an integer from 16 to 1048576, found the integer 15"},
        {"max_client_fds: 1048577\n", "1:17: max_client_fds: expected an integer from 16 to "
                                      "1048576, found the integer 1048577"},
        {"max_client_fds: 4K\n",
         "1:17: max_client_fds: expected an integer from 16 to 1048576, found the string \"4K\""},
        {"handshake_timeout: -1\n",
         "1:20: handshake_timeout: expected a number of seconds from 0 (no limit) to 3600, such "
         "as 10 or 2.5, found the integer -1"},
        {"handshake_timeout: 3601\n",
         "1:20: handshake_timeout: expected a number of seconds from 0 (no limit) to 3600, such "
         "as 10 or 2.5, found the integer 3601"},
        {"handshake_timeout: 10s\n",
         "1:20: handshake_timeout: expected a number of seconds from 0 (no limit) to 3600, such "
         "as 10 or 2.5, found the string \"10s\""},
        {"handshake_timeout: .nan\n",
         "1:20: handshake_timeout: expected a number of seconds from 0 (no limit) to 3600, such "
         "as 10 or 2.5, found the string \".nan\""},
        {"handshake_timeout: true\n",
         "1:20: handshake_timeout: expected a number of seconds from 0 (no limit) to 3600, such "
         "as 10 or 2.5, found true"},
    };

    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        struct config_daemon *daemon = NULL;
        char error[CONFIG_ERROR_MAX] = "";

        ck_assert_msg(config_daemon_load(write_file("limits.yaml", good[i].text), true, &daemon,
                                         error, sizeof(error)) == 0,
                      "%s: %s", good[i].text, error);
        ck_assert_uint_eq(daemon->max_client_fds, good[i].fds);
        ck_assert_uint_eq(daemon->handshake_timeout_usec, good[i].usec);
        config_daemon_free(daemon);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        expect_daemon_error(bad[i].text, bad[i].expected);
}
END_TEST

/* The device hosts' supervision: every way to write each key, and each refusal. */
START_TEST(test_daemon_supervision)
{
    static const struct {
        const char *text;
        enum config_isolation isolation;
        const char *user;
        uint64_t health_usec;
        uint64_t memory;
        unsigned int burst;
        uint64_t interval_usec;
    } good[] = {
        {"default_isolation: process\n", CONFIG_ISOLATION_PROCESS, NULL, 5000000, 1ull << 30, 5,
         10000000},
        {"default_isolation: thread\ndevice_user: nobody\n", CONFIG_ISOLATION_THREAD, "nobody",
         5000000, 1ull << 30, 5, 10000000},
        {"device_user: 65534\nhealth_timeout: 0.1\n", CONFIG_ISOLATION_PROCESS, "65534", 100000,
         1ull << 30, 5, 10000000},
        {"health_timeout: 3600\nstart_limit_interval: 86400\n", CONFIG_ISOLATION_PROCESS, NULL,
         3600000000ull, 1ull << 30, 5, 86400000000ull},
        {"health_timeout: \"0.5\"\nstart_limit_interval: 0.1\n", CONFIG_ISOLATION_PROCESS, NULL,
         500000, 1ull << 30, 5, 100000},
        {"device_memory_limit: 0\n", CONFIG_ISOLATION_PROCESS, NULL, 5000000, 0, 5, 10000000},
        {"device_memory_limit: infinity\n", CONFIG_ISOLATION_PROCESS, NULL, 5000000, 0, 5,
         10000000},
        {"device_memory_limit: 16M\n", CONFIG_ISOLATION_PROCESS, NULL, 5000000, 16ull << 20, 5,
         10000000},
        {"device_memory_limit: 2G\n", CONFIG_ISOLATION_PROCESS, NULL, 5000000, 2ull << 30, 5,
         10000000},
        {"device_memory_limit: \"768MiB\"\n", CONFIG_ISOLATION_PROCESS, NULL, 5000000, 768ull << 20,
         5, 10000000},
        {"device_memory_limit: 1073741824\nstart_limit_burst: 1\n", CONFIG_ISOLATION_PROCESS, NULL,
         5000000, 1ull << 30, 1, 10000000},
        {"device_memory_limit: 65536K\nstart_limit_burst: 1000\n", CONFIG_ISOLATION_PROCESS, NULL,
         5000000, 64ull << 20, 1000, 10000000},
        /* Empty values: the defaults. */
        {"default_isolation:\ndevice_user:\nhealth_timeout:\ndevice_memory_limit:\n"
         "start_limit_burst:\nstart_limit_interval:\n",
         CONFIG_ISOLATION_PROCESS, NULL, 5000000, 1ull << 30, 5, 10000000},
    };
    static const struct {
        const char *text;
        const char *expected;
    } bad[] = {
        {"default_isolation: default\n",
         "1:20: default_isolation: \"default\" is not one of process, thread"},
        {"default_isolation: threads\n",
         "1:20: default_isolation: \"threads\" is not one of process, thread"},
        {"default_isolation: false\n",
         "1:20: default_isolation: expected one of process, thread, found false"},
        {"device_user: \"a:b\"\n", "1:14: device_user: \"a:b\" is not a valid user or group name"},
        {"device_user: \"\"\n", "1:14: device_user: \"\" is not a valid user or group name"},
        {"device_user: 4294967295\n",
         "1:14: device_user: 4294967295 is not a user or group id (0 to 4294967294)"},
        {"device_user: \"nobody\\t\"\n",
         "1:14: device_user: contains a control character (0x09); names and paths may not"},
        {"health_timeout: 0\n",
         "1:17: health_timeout: expected a number of seconds from 0.1 to 3600, such as 10 or 2.5, "
         "found the integer 0"},
        {"health_timeout: 0.05\n",
         "1:17: health_timeout: expected a number of seconds from 0.1 to 3600, such as 10 or 2.5, "
         "found the string \"0.05\""},
        {"health_timeout: 3601\n",
         "1:17: health_timeout: expected a number of seconds from 0.1 to 3600, such as 10 or 2.5, "
         "found the integer 3601"},
        {"health_timeout: 5s\n",
         "1:17: health_timeout: expected a number of seconds from 0.1 to 3600, such as 10 or 2.5, "
         "found the string \"5s\""},
        {"health_timeout: -1\n",
         "1:17: health_timeout: expected a number of seconds from 0.1 to 3600, such as 10 or 2.5, "
         "found the integer -1"},
        {"device_memory_limit: 512\n",
         "1:22: device_memory_limit: expected a size from 16M, such as 512M or 1G, or 0 or "
         "infinity for no limit, found the integer 512"},
        {"device_memory_limit: 15M\n",
         "1:22: device_memory_limit: expected a size from 16M, such as 512M or 1G, or 0 or "
         "infinity for no limit, found the string \"15M\""},
        {"device_memory_limit: -1\n",
         "1:22: device_memory_limit: expected a size from 16M, such as 512M or 1G, or 0 or "
         "infinity for no limit, found the integer -1"},
        {"device_memory_limit: 1T\n",
         "1:22: device_memory_limit: expected a size from 16M, such as 512M or 1G, or 0 or "
         "infinity for no limit, found the string \"1T\""},
        {"device_memory_limit: unlimited\n",
         "1:22: device_memory_limit: expected a size from 16M, such as 512M or 1G, or 0 or "
         "infinity for no limit, found the string \"unlimited\""},
        {"device_memory_limit: false\n",
         "1:22: device_memory_limit: expected a size from 16M, such as 512M or 1G, or 0 or "
         "infinity for no limit, found false"},
        {"start_limit_burst: 0\n",
         "1:20: start_limit_burst: expected an integer from 1 to 1000, found the integer 0"},
        {"start_limit_burst: 1001\n",
         "1:20: start_limit_burst: expected an integer from 1 to 1000, found the integer 1001"},
        {"start_limit_burst: \"5\"\n",
         "1:20: start_limit_burst: expected an integer from 1 to 1000, found the string \"5\""},
        {"start_limit_interval: 0\n",
         "1:23: start_limit_interval: expected a number of seconds from 0.1 to 86400, such as 10 "
         "or 2.5, found the integer 0"},
        {"start_limit_interval: 86401\n",
         "1:23: start_limit_interval: expected a number of seconds from 0.1 to 86400, such as 10 "
         "or 2.5, found the integer 86401"},
        {"start_limit_interval: 1m\n",
         "1:23: start_limit_interval: expected a number of seconds from 0.1 to 86400, such as 10 "
         "or 2.5, found the string \"1m\""},
    };

    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        struct config_daemon *daemon = NULL;
        char error[CONFIG_ERROR_MAX] = "";

        ck_assert_msg(config_daemon_load(write_file("supervision.yaml", good[i].text), true,
                                         &daemon, error, sizeof(error)) == 0,
                      "%s: %s", good[i].text, error);
        ck_assert_msg(daemon->default_isolation == good[i].isolation, "%s", good[i].text);
        if (good[i].user == NULL) {
            ck_assert_ptr_null(daemon->device_user);
        } else {
            ck_assert_str_eq(daemon->device_user, good[i].user);
        }
        ck_assert_uint_eq(daemon->health_timeout_usec, good[i].health_usec);
        ck_assert_uint_eq(daemon->device_memory_limit, good[i].memory);
        ck_assert_uint_eq(daemon->start_limit_burst, good[i].burst);
        ck_assert_uint_eq(daemon->start_limit_interval_usec, good[i].interval_usec);
        config_daemon_free(daemon);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        expect_daemon_error(bad[i].text, bad[i].expected);
}
END_TEST

/*
 * A control character in a name or path would reach log lines as is, where a newline forges
 * a line of its own: refused wherever a name or path comes from outside, naming the field.
 */
START_TEST(test_control_characters)
{
    expect_device_error("plugin: testdev\nsocket:\n  path: \"/run/x\\n<3>forged: line.sock\"\n",
                        "3:9: socket.path: contains a control character (0x0a); names and paths "
                        "may not");
    expect_device_error("plugin: testdev\nsocket:\n  path: \"/run/x\\tTAB.sock\"\n",
                        "3:9: socket.path: contains a control character (0x09); names and paths "
                        "may not");
    expect_device_error("plugin: testdev\nsocket:\n  user: \"qemu\\r\"\n",
                        "3:9: socket.user: contains a control character (0x0d); names and paths "
                        "may not");
    expect_device_error("plugin: testdev\nsocket:\n  group: \"kvm\\x7f\"\n",
                        "3:10: socket.group: contains a control character (0x7f); names and paths "
                        "may not");
    expect_device_error("plugin: testdev\nparams:\n  \"ram\\nsize\": 1M\n",
                        "3:3: params.ram?size: the key contains a control character (0x0a); "
                        "names and paths may not");
    expect_device_error(
        "name: \"tdev\\n0\"\nplugin: testdev\n",
        "1:7: name: \"tdev\\x0a0\" is not a valid device name: use 1 to 64 letters, "
        "digits, '_', '.' or '-', not starting with '.'");
    expect_device_error("plugin: \"test\\ndev\"\n",
                        "1:9: plugin: \"test\\x0adev\" is not a valid plugin name: use 1 to 64 "
                        "letters, digits, '_', '.' or '-', not starting with '.'");
    expect_json_error("{\"plugin\": \"testdev\", \"socket\": {\"path\": \"/run/a\\nb\"}}", "tdev0",
                      "device_add: socket.path: contains a control character (0x0a); names and "
                      "paths may not");
    expect_json_error("{\"plugin\": \"testdev\", \"params\": {\"a\\u001bb\": 1}}", "tdev0",
                      "device_add: params.a?b: the key contains a control character (0x1b); "
                      "names and paths may not");

    expect_daemon_error("runtime_dir: \"/run/v\\nx\"\n",
                        "1:14: runtime_dir: contains a control character (0x0a); names and paths "
                        "may not");
    expect_daemon_error("admin_socket: \"/run/a\\u0001.sock\"\n",
                        "1:15: admin_socket: contains a control character (0x01); names and paths "
                        "may not");
    expect_daemon_error("devices_dirs:\n  - /etc/x\n  - \"/etc/\\ty\"\n",
                        "3:5: devices_dirs[1]: contains a control character (0x09); names and "
                        "paths may not");
    expect_daemon_error("plugin_dirs: [\"/usr/lib/\\n\"]\n",
                        "1:15: plugin_dirs[0]: contains a control character (0x0a); names and "
                        "paths may not");
    expect_daemon_error("admin_socket_group: \"kvm\\n\"\n",
                        "1:21: admin_socket_group: contains a control character (0x0a); names and "
                        "paths may not");
}
END_TEST

START_TEST(test_daemon_apply)
{
    struct config_daemon *daemon = NULL;
    char error[CONFIG_ERROR_MAX] = "";
    json_t *settings;

    ck_assert_int_eq(config_daemon_new(&daemon), 0);

    /* Command-line flags go through the same checks. */
    settings = json_pack("{s:[s], s:s}", "devices_dirs", "/srv/devices", "log_level", "err");
    ck_assert_int_eq(config_daemon_apply(daemon, settings, "command line", error, sizeof(error)),
                     0);
    json_decref(settings);
    ck_assert_uint_eq(daemon->devices_dir_count, 1);
    ck_assert_str_eq(daemon->devices_dirs[0], "/srv/devices");
    ck_assert_int_eq(daemon->log_level, LOG_ERR);

    /* All or nothing: a bad key leaves the good one unapplied. */
    settings = json_pack("{s:s, s:i}", "runtime_dir", "/run/new", "worker_threads", 1000);
    ck_assert_int_eq(config_daemon_apply(daemon, settings, "command line", error, sizeof(error)),
                     -EINVAL);
    ck_assert_str_eq(error, "command line: worker_threads: expected an integer from 0 (one per "
                            "CPU) to 256, found the integer 1000");
    ck_assert_str_eq(daemon->runtime_dir, "/run/vfio-userd");
    json_decref(settings);

    /* A chunk size from JSON: a number or a string. */
    settings = json_pack("{s:i}", "dma_message_chunk_size", 8192);
    ck_assert_int_eq(config_daemon_apply(daemon, settings, "command line", error, sizeof(error)),
                     0);
    ck_assert_uint_eq(daemon->dma_message_chunk_size, 8192);
    json_decref(settings);
    settings = json_pack("{s:s}", "dma_message_chunk_size", "3K");
    ck_assert_int_eq(config_daemon_apply(daemon, settings, "command line", error, sizeof(error)),
                     -EINVAL);
    ck_assert_str_eq(error, "command line: dma_message_chunk_size: expected a power of two from "
                            "4K to 1M, such as 65536 or 64K, found the string \"3K\"");
    ck_assert_uint_eq(daemon->dma_message_chunk_size, 8192);
    json_decref(settings);

    /* null restores a default. */
    settings = json_pack("{s:n, s:n, s:s, s:n}", "devices_dirs", "log_level", "admin_socket",
                         "/tmp/a.sock", "dma_message_chunk_size");
    ck_assert_int_eq(config_daemon_apply(daemon, settings, "command line", error, sizeof(error)),
                     0);
    ck_assert_uint_eq(daemon->devices_dir_count, 3);
    ck_assert_int_eq(daemon->log_level, LOG_INFO);
    ck_assert_uint_eq(daemon->dma_message_chunk_size, 64 * 1024);
    ck_assert_str_eq(daemon->admin_socket, "/tmp/a.sock");
    json_decref(settings);

    /* Too many directories. */
    settings = json_pack("{s:[]}", "plugin_dirs");
    {
        int i;
        for (i = 0; i <= CONFIG_LIST_MAX; i++) {
            json_array_append_new(json_object_get(settings, "plugin_dirs"), json_string("/d"));
        }
    }
    ck_assert_int_eq(config_daemon_apply(daemon, settings, "command line", error, sizeof(error)),
                     -EINVAL);
    ck_assert_str_eq(error, "command line: plugin_dirs: more than 64 directories");
    json_decref(settings);

    /* The supervision keys from JSON; a later apply keeps device_user (daemon_copy). */
    settings = json_pack("{s:s, s:s, s:f, s:i, s:i, s:s}", "default_isolation", "thread",
                         "device_user", "qemu", "health_timeout", 0.25, "device_memory_limit",
                         1 << 30, "start_limit_burst", 10, "start_limit_interval", "30");
    ck_assert_int_eq(config_daemon_apply(daemon, settings, "command line", error, sizeof(error)),
                     0);
    json_decref(settings);
    ck_assert_int_eq(daemon->default_isolation, CONFIG_ISOLATION_THREAD);
    ck_assert_str_eq(daemon->device_user, "qemu");
    ck_assert_uint_eq(daemon->health_timeout_usec, 250000);
    ck_assert_uint_eq(daemon->device_memory_limit, 1ull << 30);
    ck_assert_uint_eq(daemon->start_limit_burst, 10);
    ck_assert_uint_eq(daemon->start_limit_interval_usec, 30ull * 1000 * 1000);
    settings = json_pack("{s:s}", "log_level", "debug");
    ck_assert_int_eq(config_daemon_apply(daemon, settings, "command line", error, sizeof(error)),
                     0);
    json_decref(settings);
    ck_assert_str_eq(daemon->device_user, "qemu");
    ck_assert_int_eq(daemon->default_isolation, CONFIG_ISOLATION_THREAD);

    /* All or nothing here too. */
    settings = json_pack("{s:s, s:s}", "device_user", "other", "default_isolation", "both");
    ck_assert_int_eq(config_daemon_apply(daemon, settings, "command line", error, sizeof(error)),
                     -EINVAL);
    ck_assert_str_eq(error,
                     "command line: default_isolation: \"both\" is not one of process, thread");
    ck_assert_str_eq(daemon->device_user, "qemu");
    json_decref(settings);

    /* null restores each default. */
    settings = json_pack("{s:n, s:n, s:n, s:n, s:n, s:n}", "default_isolation", "device_user",
                         "health_timeout", "device_memory_limit", "start_limit_burst",
                         "start_limit_interval");
    ck_assert_int_eq(config_daemon_apply(daemon, settings, "command line", error, sizeof(error)),
                     0);
    json_decref(settings);
    ck_assert_int_eq(daemon->default_isolation, CONFIG_ISOLATION_PROCESS);
    ck_assert_ptr_null(daemon->device_user);
    ck_assert_uint_eq(daemon->health_timeout_usec, CONFIG_HEALTH_TIMEOUT_USEC);
    ck_assert_uint_eq(daemon->device_memory_limit, CONFIG_DEVICE_MEMORY_LIMIT);
    ck_assert_uint_eq(daemon->start_limit_burst, CONFIG_START_LIMIT_BURST);
    ck_assert_uint_eq(daemon->start_limit_interval_usec, CONFIG_START_LIMIT_INTERVAL_USEC);
    config_daemon_free(daemon);
}
END_TEST

START_TEST(test_log_levels)
{
    ck_assert_int_eq(config_log_level_from_name("err"), LOG_ERR);
    ck_assert_int_eq(config_log_level_from_name("warning"), LOG_WARNING);
    ck_assert_int_eq(config_log_level_from_name("notice"), LOG_NOTICE);
    ck_assert_int_eq(config_log_level_from_name("info"), LOG_INFO);
    ck_assert_int_eq(config_log_level_from_name("debug"), LOG_DEBUG);
    ck_assert_int_eq(config_log_level_from_name("INFO"), -EINVAL);
    ck_assert_int_eq(config_log_level_from_name(""), -EINVAL);
    ck_assert_str_eq(config_log_level_name(LOG_NOTICE), "notice");
    ck_assert_ptr_null(config_log_level_name(LOG_CRIT));
    ck_assert_ptr_null(config_log_level_name(8));
    ck_assert_int_eq(VFIO_USERD_LOG_DEBUG, LOG_DEBUG);
}
END_TEST

static void make_dir(const char *relative)
{
    char path[256];

    snprintf(path, sizeof(path), "%s/%s", temporary, relative);
    ck_assert_int_eq(mkdir(path, 0755), 0);
}

static void make_link(const char *target, const char *relative)
{
    char path[256];

    snprintf(path, sizeof(path), "%s/%s", temporary, relative);
    ck_assert_int_eq(symlink(target, path), 0);
}

START_TEST(test_dirs_masking)
{
    struct config_dirs_list list = {0};
    char error[CONFIG_ERROR_MAX] = "";
    char etc[256], run[256], lib[256], missing[256], expected[300];
    char *directories[4];
    size_t i;

    make_dir("etc");
    make_dir("run");
    make_dir("lib");
    snprintf(etc, sizeof(etc), "%s/etc", temporary);
    snprintf(run, sizeof(run), "%s/run/", temporary); /* a trailing slash is fine */
    snprintf(lib, sizeof(lib), "%s/lib", temporary);
    snprintf(missing, sizeof(missing), "%s/missing", temporary);

    write_file("lib/a.yaml", "plugin: p\n");
    write_file("lib/b.yaml", "plugin: p\n");
    write_file("lib/c.yaml", "plugin: p\n");
    write_file("lib/d.yaml", "plugin: p\n");
    write_file("run/b.yaml", "plugin: p\n"); /* masks lib/b */
    write_file("etc/c.yaml", "plugin: p\n"); /* masks lib/c */
    write_file("run/c.yaml", "plugin: p\n"); /* masked by etc/c */
    make_link("/dev/null", "etc/d.yaml");    /* disables lib/d */
    write_file("lib/e.yaml", "plugin: p\n");
    make_link("../lib/e.yaml", "etc/f.yaml"); /* a symlink to a file counts as the file */
    make_link("nowhere.yaml", "run/g.yaml");  /* dangling: broken, and masks lib/g */
    write_file("lib/g.yaml", "plugin: p\n");
    make_dir("etc/h.yaml"); /* a directory: broken */
    /* Not drop-ins at all. */
    write_file("etc/.hidden.yaml", "x");
    write_file("etc/.a.yaml.swp", "x");
    write_file("etc/a.yaml~", "x");
    write_file("etc/#a.yaml#", "x");
    write_file("etc/.#a.yaml", "x");
    write_file("etc/a.yml", "x");
    write_file("etc/.yaml", "x");
    write_file("etc/README", "x");
    write_file("etc/a.yaml.dpkg-old", "x");

    directories[0] = etc;
    directories[1] = missing;
    directories[2] = run;
    directories[3] = lib;
    ck_assert_int_eq(config_dirs_scan(directories, 4, &list, error, sizeof(error)), 0);
    {
        static const char *const names[] = {"a.yaml", "b.yaml", "c.yaml", "d.yaml",
                                            "e.yaml", "f.yaml", "g.yaml", "h.yaml"};
        static const char *const homes[] = {"lib", "run", "etc", "etc", "lib", "etc", "run", "etc"};
        static const enum config_dirs_kind kinds[] = {
            CONFIG_DIRS_FILE, CONFIG_DIRS_FILE, CONFIG_DIRS_FILE,   CONFIG_DIRS_MASKED,
            CONFIG_DIRS_FILE, CONFIG_DIRS_FILE, CONFIG_DIRS_BROKEN, CONFIG_DIRS_BROKEN};
        static const int errors[] = {0, 0, 0, 0, 0, 0, -ENOENT, -EINVAL};

        ck_assert_uint_eq(list.count, 8);
        for (i = 0; i < list.count; i++) {
            ck_assert_str_eq(list.entries[i].name, names[i]);
            snprintf(expected, sizeof(expected), "%s/%s/%s", temporary, homes[i], names[i]);
            ck_assert_str_eq(list.entries[i].path, expected);
            ck_assert_int_eq(list.entries[i].kind, kinds[i]);
            ck_assert_int_eq(list.entries[i].error, errors[i]);
        }
    }
    config_dirs_list_free(&list);
    ck_assert_ptr_null(list.entries);

    /* The order of the directories decides: reversed, lib wins everywhere it has the name. */
    directories[0] = lib;
    directories[1] = run;
    directories[2] = etc;
    ck_assert_int_eq(config_dirs_scan(directories, 3, &list, error, sizeof(error)), 0);
    ck_assert_uint_eq(list.count, 8);
    snprintf(expected, sizeof(expected), "%s/lib/c.yaml", temporary);
    ck_assert_str_eq(list.entries[2].path, expected);
    ck_assert_int_eq(list.entries[3].kind, CONFIG_DIRS_FILE);
    config_dirs_list_free(&list);

    /* Nothing at all is fine too. */
    ck_assert_int_eq(config_dirs_scan(directories, 0, &list, error, sizeof(error)), 0);
    ck_assert_uint_eq(list.count, 0);
    config_dirs_list_free(&list);
    directories[0] = missing;
    ck_assert_int_eq(config_dirs_scan(directories, 1, &list, error, sizeof(error)), 0);
    ck_assert_uint_eq(list.count, 0);
    config_dirs_list_free(&list);

    /* A directory that exists but cannot be read fails the scan: its masks would be lost. */
    directories[0] = (char *)write_file("plain-file", "x");
    ck_assert_int_eq(config_dirs_scan(directories, 1, &list, error, sizeof(error)), -ENOTDIR);
    snprintf(expected, sizeof(expected), "%s/plain-file: cannot open: Not a directory", temporary);
    ck_assert_str_eq(error, expected);
    ck_assert_uint_eq(list.count, 0);
}
END_TEST

START_TEST(test_dirs_name_filter)
{
    ck_assert(config_dirs_name_wanted("tdev0.yaml"));
    ck_assert(config_dirs_name_wanted("a.b.yaml"));
    ck_assert(!config_dirs_name_wanted(".yaml"));
    ck_assert(!config_dirs_name_wanted(".tdev0.yaml"));
    ck_assert(!config_dirs_name_wanted("tdev0.yaml~"));
    ck_assert(!config_dirs_name_wanted("#tdev0.yaml#"));
    ck_assert(!config_dirs_name_wanted("#tdev0.yaml"));
    ck_assert(!config_dirs_name_wanted(".tdev0.yaml.swp"));
    ck_assert(!config_dirs_name_wanted("tdev0.yml"));
    ck_assert(!config_dirs_name_wanted("tdev0.YAML"));
    ck_assert(!config_dirs_name_wanted(""));
}
END_TEST

/* Every file the scan returns loads, and the loaded names follow the file names. */
START_TEST(test_dirs_then_load)
{
    struct config_dirs_list list = {0};
    char error[CONFIG_ERROR_MAX] = "";
    char etc[256], lib[256];
    char *directories[2] = {etc, lib};
    size_t loaded = 0;
    size_t i;

    make_dir("etc");
    make_dir("lib");
    snprintf(etc, sizeof(etc), "%s/etc", temporary);
    snprintf(lib, sizeof(lib), "%s/lib", temporary);
    write_file("lib/tdev0.yaml", "plugin: vendor\n");
    write_file("etc/tdev0.yaml", "plugin: admin\n");
    write_file("lib/tdev1.yaml", "plugin: vendor\n");
    ck_assert_int_eq(config_dirs_scan(directories, 2, &list, error, sizeof(error)), 0);
    for (i = 0; i < list.count; i++) {
        struct config_device *device = NULL;
        ck_assert_int_eq(list.entries[i].kind, CONFIG_DIRS_FILE);
        ck_assert_int_eq(config_device_load(list.entries[i].path, &device, error, sizeof(error)),
                         0);
        ck_assert_str_eq(device->plugin, i == 0 ? "admin" : "vendor");
        ck_assert_str_eq(device->name, i == 0 ? "tdev0" : "tdev1");
        config_device_free(device);
        loaded++;
    }
    ck_assert_uint_eq(loaded, 2);
    config_dirs_list_free(&list);
}
END_TEST

static Suite *config_suite(void)
{
    Suite *suite = suite_create("config");
    TCase *devices = tcase_create("devices");
    TCase *daemon = tcase_create("daemon");
    TCase *dirs = tcase_create("dirs");

    tcase_add_checked_fixture(devices, setup, teardown);
    tcase_add_test(devices, test_device_poll_us);
    tcase_add_test(devices, test_name_rule);
    tcase_add_test(devices, test_device_full);
    tcase_add_test(devices, test_device_defaults);
    tcase_add_test(devices, test_device_errors);
    tcase_add_test(devices, test_device_bad_stem);
    tcase_add_test(devices, test_device_numeric_accounts);
    tcase_add_test(devices, test_device_supervision);
    tcase_add_test(devices, test_device_from_json);
    tcase_add_test(devices, test_plugin_error_location);
    tcase_add_test(devices, test_persist_round_trip);
    tcase_add_test(devices, test_param_assign);
    suite_add_tcase(suite, devices);

    tcase_add_checked_fixture(daemon, setup, teardown);
    tcase_add_test(daemon, test_daemon_defaults);
    tcase_add_test(daemon, test_daemon_full);
    tcase_add_test(daemon, test_daemon_errors);
    tcase_add_test(daemon, test_daemon_dma_message_chunk_size);
    tcase_add_test(daemon, test_daemon_client_limits);
    tcase_add_test(daemon, test_daemon_supervision);
    tcase_add_test(daemon, test_control_characters);
    tcase_add_test(daemon, test_daemon_apply);
    tcase_add_test(daemon, test_log_levels);
    suite_add_tcase(suite, daemon);

    tcase_add_checked_fixture(dirs, setup, teardown);
    tcase_add_test(dirs, test_dirs_masking);
    tcase_add_test(dirs, test_dirs_name_filter);
    tcase_add_test(dirs, test_dirs_then_load);
    suite_add_tcase(suite, dirs);
    return suite;
}

int main(void)
{
    return test_run_suite(config_suite());
}
