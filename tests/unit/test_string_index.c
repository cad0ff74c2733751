/*
 * The string index the device manager finds devices by (daemon/string_index.c): items are
 * found by their key after adds, removals and the resizes they cause, and a removed item's
 * slot neither hides the items after it nor is found itself.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "string_index.h"
#include "test_runner.h"

#define ITEMS 10000

struct item {
    char key[16];
};

static struct item items[ITEMS];

static const char *key_of(const void *item)
{
    return ((const struct item *)item)->key;
}

static void fill(struct string_index *index, int count)
{
    for (int i = 0; i < count; i++) {
        snprintf(items[i].key, sizeof(items[i].key), "scale%d", i);
        ck_assert_int_eq(string_index_add(index, &items[i]), 0);
    }
}

START_TEST(every_item_is_found_by_its_key)
{
    struct string_index index = STRING_INDEX_INIT(key_of);

    ck_assert_ptr_null(string_index_find(&index, "scale0"));
    fill(&index, ITEMS);
    ck_assert_uint_eq(index.count, ITEMS);
    for (int i = 0; i < ITEMS; i++)
        ck_assert_ptr_eq(string_index_find(&index, items[i].key), &items[i]);
    ck_assert_ptr_null(string_index_find(&index, "scale10000"));
    ck_assert_ptr_null(string_index_find(&index, ""));
    string_index_fini(&index);
}
END_TEST

/* Every other item goes, then the rest: what stays is found, what went is not, and the
 * table shrinks back to nothing. */
START_TEST(removed_items_are_gone_and_the_rest_stays)
{
    struct string_index index = STRING_INDEX_INIT(key_of);
    size_t full;

    fill(&index, ITEMS);
    full = index.capacity;
    for (int i = 0; i < ITEMS; i += 2)
        string_index_remove(&index, &items[i]);
    for (int i = 0; i < ITEMS; i++)
        ck_assert_ptr_eq(string_index_find(&index, items[i].key), i % 2 ? &items[i] : NULL);
    for (int i = 1; i < ITEMS - 100; i += 2)
        string_index_remove(&index, &items[i]);
    ck_assert_uint_eq(index.count, 50);
    ck_assert_uint_lt(index.capacity, full / 8);
    for (int i = ITEMS - 100; i < ITEMS; i++)
        ck_assert_ptr_eq(string_index_find(&index, items[i].key), i % 2 ? &items[i] : NULL);
    for (int i = ITEMS - 99; i < ITEMS; i += 2)
        string_index_remove(&index, &items[i]);
    ck_assert_uint_eq(index.count, 0);
    ck_assert_ptr_null(index.slots);
}
END_TEST

/* Adding and removing over and over reuses removed slots: the table does not keep growing. */
START_TEST(churn_keeps_the_table_small)
{
    struct string_index index = STRING_INDEX_INIT(key_of);
    struct item other = {"other"};
    size_t capacity;

    fill(&index, 100);
    capacity = index.capacity;
    for (int round = 0; round < 10000; round++) {
        snprintf(other.key, sizeof(other.key), "other%d", round);
        ck_assert_int_eq(string_index_add(&index, &other), 0);
        ck_assert_ptr_eq(string_index_find(&index, other.key), &other);
        string_index_remove(&index, &other);
        ck_assert_ptr_null(string_index_find(&index, other.key));
    }
    ck_assert_uint_le(index.capacity, 2 * capacity);
    for (int i = 0; i < 100; i++)
        ck_assert_ptr_eq(string_index_find(&index, items[i].key), &items[i]);
    string_index_fini(&index);
}
END_TEST

/* Removing an item that is not in, or another one with the same key, changes nothing. */
START_TEST(removing_what_is_not_there_is_harmless)
{
    struct string_index index = STRING_INDEX_INIT(key_of);
    struct item twin;

    string_index_remove(&index, &items[0]);
    fill(&index, 10);
    memcpy(&twin, &items[3], sizeof(twin));
    string_index_remove(&index, &twin);
    ck_assert_ptr_eq(string_index_find(&index, "scale3"), &items[3]);
    ck_assert_uint_eq(index.count, 10);
    string_index_fini(&index);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("string_index");
    TCase *test_case = tcase_create("index");

    tcase_add_test(test_case, every_item_is_found_by_its_key);
    tcase_add_test(test_case, removed_items_are_gone_and_the_rest_stays);
    tcase_add_test(test_case, churn_keeps_the_table_small);
    tcase_add_test(test_case, removing_what_is_not_there_is_harmless);
    suite_add_tcase(suite, test_case);
    return test_run_suite(suite);
}
