/*
 * The one way every test program runs its check suite and turns the result into an exit
 * status, so tests/run-tests.sh can read each program's summary line the same way.
 */
#ifndef TEST_RUNNER_H
#define TEST_RUNNER_H

#include <check.h>

/* Runs `suite` (taken) with check's normal output; EXIT_SUCCESS when nothing failed. */
int test_run_suite(Suite *suite);

#endif /* TEST_RUNNER_H */
