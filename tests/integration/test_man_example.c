/*
 * The example device of vfio-userd-plugin(3), copied out of the page by the build, works as
 * the page says: built with today's header, and with the frozen ABI 1.0 header, which is
 * how a plugin written before 1.1 reaches the host. The expectations are the page's:
 * register 0x00 reads the "id" parameter, 0x04 is a scratch register that a reset clears.
 */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "client.h"
#include "plugin_loader.h"
#include "test_runner.h"
#include "test_server.h"

#define REG_ID      0x00
#define REG_SCRATCH 0x04

static struct vu_plugin_module example;

static uint32_t read32(struct vu_client *client, uint64_t offset)
{
    uint32_t value = 0;

    ck_assert_int_eq(vu_client_region_read(client, VFIO_USERD_REGION_BAR0, offset, &value, 4), 0);
    return value;
}

START_TEST(the_example_device_works_as_its_page_says)
{
    struct test_server server;
    struct vu_client *client = NULL;
    struct vu_client_options options;
    struct vfio_region_info *info = NULL;
    uint32_t scratch = 0x5a5aa5a5;

    ck_assert_int_eq(test_server_start(&server, example.plugin, "{\"id\": 66}"), 0);
    vu_client_options_default(&options);
    ck_assert_int_eq(vu_client_connect(server.socket_path, &options, &client), 0);
    ck_assert_int_eq(vu_client_region_info(client, VFIO_USERD_REGION_BAR0, &info, NULL), 0);
    ck_assert_uint_eq(info->size, 4096);
    free(info);
    ck_assert_uint_eq(read32(client, REG_ID), 66);
    ck_assert_int_eq(
        vu_client_region_write(client, VFIO_USERD_REGION_BAR0, REG_SCRATCH, &scratch, 4), 0);
    ck_assert_uint_eq(read32(client, REG_SCRATCH), scratch);
    ck_assert_int_eq(vu_client_device_reset(client), 0);
    ck_assert_uint_eq(read32(client, REG_SCRATCH), 0);
    vu_client_close(client);
    test_server_stop(&server);
}
END_TEST

START_TEST(the_example_refuses_a_bad_parameter)
{
    struct test_server server;

    ck_assert_int_eq(test_server_start(&server, example.plugin, "{\"id\": 66, \"colour\": 1}"),
                     -EINVAL);
    ck_assert_str_eq(server.error.field, "colour");
}
END_TEST

int main(void)
{
    static const char *const builds[] = {"tests/plugins/man-example.so",
                                         "tests/plugins/man-example-abi-1.0.so"};
    const char *build = getenv("VFIO_USERD_BUILD_DIR");
    char path[4096], message[512];
    int status = EXIT_SUCCESS;

    for (unsigned i = 0; i < 2; i++) {
        Suite *suite = suite_create("man_example");
        TCase *test_case = tcase_create("example");

        snprintf(path, sizeof(path), "%s/%s", build != NULL ? build : "build/plain", builds[i]);
        if (vu_plugin_load(path, &example, message, sizeof(message)) < 0) {
            fprintf(stderr, "test_man_example: %s: %s\n", path, message);
            return EXIT_FAILURE;
        }
        fprintf(stderr, "test_man_example: %s (plugin ABI %u.%u)\n", path,
                example.plugin->abi_major, example.plugin->abi_minor);
        tcase_add_test(test_case, the_example_device_works_as_its_page_says);
        tcase_add_test(test_case, the_example_refuses_a_bad_parameter);
        suite_add_tcase(suite, test_case);
        if (test_run_suite(suite) != EXIT_SUCCESS)
            status = EXIT_FAILURE;
        vu_plugin_unload(&example);
    }
    return status;
}
