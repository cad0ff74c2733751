/*
 * Process helpers shared by the test programs; see test_process.h.
 */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "test_process.h"

uint64_t test_now_ns(void)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000000000 + (uint64_t)now.tv_nsec;
}

uint64_t test_now_ms(void)
{
    return test_now_ns() / 1000000;
}

int test_run_child(void (*body)(void))
{
    int status;
    pid_t child = fork();

    ck_assert_int_ge(child, 0);
    if (child == 0) {
        body();
        _exit(0);
    }
    ck_assert_int_eq(waitpid(child, &status, 0), child);
    return status;
}

void test_assert_child_passed(void (*body)(void))
{
    int status = test_run_child(body);

    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %#x", status);
}

int test_proc_status(pid_t pid, const char *key, char *value, size_t size)
{
    char path[64], line[512];
    size_t length = strlen(key);
    FILE *status;

    if (pid == 0)
        snprintf(path, sizeof(path), "/proc/self/status");
    else
        snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    status = fopen(path, "re");
    if (status == NULL)
        return -errno;
    value[0] = '\0';
    while (fgets(line, sizeof(line), status) != NULL) {
        /* "KEY:" exactly, so that "Cap" never matches "CapEff:". */
        if (strncmp(line, key, length) == 0 && line[length] == ':') {
            snprintf(value, size, "%s", line + length + 1 + strspn(line + length + 1, " \t"));
            value[strcspn(value, "\n")] = '\0';
            break;
        }
    }
    fclose(status);
    return 0;
}

unsigned long test_resident_kib(pid_t pid)
{
    char value[64];
    int error = test_proc_status(pid, "VmRSS", value, sizeof(value));

    ck_assert_msg(error == 0, "/proc/%d/status: %s", (int)pid, strerror(-error));
    /* "1234 kB"; a kernel thread or a zombie has no VmRSS, and that fails too. */
    ck_assert_msg(strtoul(value, NULL, 10) > 0, "/proc/%d/status: VmRSS \"%s\"", (int)pid, value);
    return strtoul(value, NULL, 10);
}
