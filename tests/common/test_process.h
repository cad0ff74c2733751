/*
 * What unit and integration tests both need about processes: whether this one runs under
 * AddressSanitizer, a monotonic clock for deadlines and latencies, running a function in a
 * child (for what cannot be undone, or may kill the process), and reading
 * /proc/PID/status.
 *
 * Functions that can run in such a child report errors as negative errno values rather
 * than through check, whose assertions belong to the parent.
 */
#ifndef TEST_PROCESS_H
#define TEST_PROCESS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* 1 under AddressSanitizer (gcc or clang), which changes what memory limits mean. */
#if defined(__SANITIZE_ADDRESS__)
#define TEST_UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TEST_UNDER_ASAN 1
#endif
#endif
#ifndef TEST_UNDER_ASAN
#define TEST_UNDER_ASAN 0
#endif

/* CLOCK_MONOTONIC, which no clock adjustment moves. */
uint64_t test_now_ns(void);
uint64_t test_now_ms(void);

/*
 * Runs `body` in a child that then leaves with status 0; returns its wait status. The
 * child leaves with _exit, not exit: it must not run the parent's atexit handlers (nor,
 * under ASan, a leak check that needs ptrace).
 */
int test_run_child(void (*body)(void));

/* Runs `body` in a child and fails the test unless it exited with status 0. */
void test_assert_child_passed(void (*body)(void));

/*
 * The value of `key` ("VmRSS", no colon) in /proc/PID/status (PID 0: this process),
 * without leading blanks or the newline; "" when there is no such line. Does not assert:
 * a child may call it. -errno when the file cannot be opened.
 */
int test_proc_status(pid_t pid, const char *key, char *value, size_t size);

/* The resident set of `pid` in KiB; fails the test if it cannot be read. */
unsigned long test_resident_kib(pid_t pid);

#endif /* TEST_PROCESS_H */
