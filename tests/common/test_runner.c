/*
 * Suite runner shared by the test programs; see test_runner.h.
 */
#include <stdlib.h>

#include "test_runner.h"

int test_run_suite(Suite *suite)
{
    SRunner *runner = srunner_create(suite);
    int failures;

    srunner_run_all(runner, CK_NORMAL);
    failures = srunner_ntests_failed(runner);
    srunner_free(runner);
    return failures == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
