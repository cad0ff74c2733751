/*
 * A plugin's open_file(), as the daemon serves it (vu_device_open_named_file): the daemon
 * opens with its own rights for a sandboxed device host, so the path is hostile input. Only
 * files the device's parameters name, no symbolic link on the way, regular files and block
 * devices only, a FIFO never blocks the caller, and a created file gets no special bits.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "device.h"
#include "test_runner.h"

static char directory[64];
static char path[256], link_path[256], fifo_path[256], created[256], linked_dir[256];
static json_t *params;

static void setup(void)
{
    int fd;

    snprintf(directory, sizeof(directory), "/tmp/vfio-userd-open-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(directory));
    snprintf(path, sizeof(path), "%s/image.raw", directory);
    snprintf(link_path, sizeof(link_path), "%s/link.raw", directory);
    snprintf(fifo_path, sizeof(fifo_path), "%s/fifo", directory);
    snprintf(created, sizeof(created), "%s/new.raw", directory);
    snprintf(linked_dir, sizeof(linked_dir), "%s/via/image.raw", directory);
    fd = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, "DATA", 4), 4);
    close(fd);
    ck_assert_int_eq(symlink(path, link_path), 0);
    ck_assert_int_eq(mkfifo(fifo_path, 0600), 0);
    {
        char via[256];
        snprintf(via, sizeof(via), "%s/via", directory);
        ck_assert_int_eq(symlink(directory, via), 0);
    }
    /* Nested: a parameter names a path at any depth. */
    params = json_pack("{s:s, s:[{s:s}, {s:s}], s:{s:s, s:s}}", "path", path, "namespaces", "path",
                       link_path, "path", fifo_path, "more", "created", created, "via", linked_dir);
    ck_assert_ptr_nonnull(params);
}

static void teardown(void)
{
    char command[128];

    json_decref(params);
    snprintf(command, sizeof(command), "rm -rf %s", directory);
    ck_assert_int_eq(system(command), 0);
}

START_TEST(a_named_file_opens_read_write)
{
    char data[4];
    int fd = vu_device_open_named_file(params, path, O_RDWR, 0);

    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(pread(fd, data, 4, 0), 4);
    ck_assert_mem_eq(data, "DATA", 4);
    ck_assert_int_eq(fcntl(fd, F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
    ck_assert_int_eq(fcntl(fd, F_GETFL) & O_NONBLOCK, 0);
    close(fd);
}
END_TEST

START_TEST(what_no_parameter_names_is_refused)
{
    ck_assert_int_eq(vu_device_open_named_file(params, "/etc/passwd", O_RDONLY, 0), -EACCES);
    /* Exactly as written: another spelling of the same file is not named. */
    {
        char other[300];
        snprintf(other, sizeof(other), "%s/./image.raw", directory);
        ck_assert_int_eq(vu_device_open_named_file(params, other, O_RDONLY, 0), -EACCES);
    }
    ck_assert_int_eq(vu_device_open_named_file(params, "image.raw", O_RDONLY, 0), -EINVAL);
    ck_assert_int_eq(vu_device_open_named_file(params, path, O_RDONLY | O_PATH, 0), -EINVAL);
    ck_assert_int_eq(vu_device_open_named_file(params, path, O_RDONLY | O_DIRECTORY, 0), -EINVAL);
}
END_TEST

START_TEST(symbolic_links_are_not_followed)
{
    ck_assert_int_eq(vu_device_open_named_file(params, link_path, O_RDONLY, 0), -ELOOP);
    ck_assert_int_eq(vu_device_open_named_file(params, linked_dir, O_RDONLY, 0), -ELOOP);
}
END_TEST

START_TEST(a_fifo_is_refused_without_blocking)
{
    /* No writer: a blocking open would wait forever. */
    ck_assert_int_eq(vu_device_open_named_file(params, fifo_path, O_RDONLY, 0), -EINVAL);
}
END_TEST

START_TEST(a_created_file_gets_no_special_bits)
{
    struct stat status;
    mode_t previous = umask(0);
    int fd = vu_device_open_named_file(params, created, O_RDWR | O_CREAT | O_EXCL, 06777);

    umask(previous);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(fstat(fd, &status), 0);
    ck_assert_uint_eq(status.st_mode & 07777, 0666);
    close(fd);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("open_file");
    TCase *test_case = tcase_create("named files");

    tcase_add_checked_fixture(test_case, setup, teardown);
    tcase_add_test(test_case, a_named_file_opens_read_write);
    tcase_add_test(test_case, what_no_parameter_names_is_refused);
    tcase_add_test(test_case, symbolic_links_are_not_followed);
    tcase_add_test(test_case, a_fifo_is_refused_without_blocking);
    tcase_add_test(test_case, a_created_file_gets_no_special_bits);
    suite_add_tcase(suite, test_case);
    return test_run_suite(suite);
}
