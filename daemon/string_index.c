/*
 * The string index: linear probing over a power-of-two table; see string_index.h.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "string_index.h"

/* A removed item's slot: a search goes on past it, an add may take it. */
static char gone;
#define STRING_INDEX_GONE ((void *)&gone)

/* The smallest table: 2 KiB of pointers, more than the allocator's per-thread cache keeps
 * (see DEVICES_MIN_CAPACITY in devices.c), so resizing never feeds that cache. */
#define STRING_INDEX_MIN_CAPACITY 256

/* FNV-1a: short keys that differ in their last characters (scale1, scale2) spread well. */
static uint64_t hash(const char *key)
{
    uint64_t value = 0xcbf29ce484222325ULL;

    for (; *key != '\0'; key++)
        value = (value ^ (unsigned char)*key) * 0x100000001b3ULL;
    return value;
}

/* The slot holding `key`, else the first free one on its probe sequence (a removed slot if
 * it met one); the table has a never-used slot, so the search ends. */
static size_t probe(const struct string_index *index, const char *key, bool *found)
{
    size_t mask = index->capacity - 1, slot = hash(key) & mask, free_slot = SIZE_MAX;

    for (;; slot = (slot + 1) & mask) {
        void *item = index->slots[slot];

        if (item == NULL) {
            *found = false;
            return free_slot != SIZE_MAX ? free_slot : slot;
        }
        if (item == STRING_INDEX_GONE) {
            if (free_slot == SIZE_MAX)
                free_slot = slot;
        } else if (strcmp(index->key(item), key) == 0) {
            *found = true;
            return slot;
        }
    }
}

static int resize(struct string_index *index, size_t capacity)
{
    void **old = index->slots;
    size_t old_capacity = index->capacity;
    bool found;

    index->slots = calloc(capacity, sizeof(*index->slots));
    if (index->slots == NULL) {
        index->slots = old;
        return -ENOMEM;
    }
    index->capacity = capacity;
    index->used = index->count;
    for (size_t i = 0; i < old_capacity; i++)
        if (old[i] != NULL && old[i] != STRING_INDEX_GONE)
            index->slots[probe(index, index->key(old[i]), &found)] = old[i];
    free(old);
    return 0;
}

int string_index_add(struct string_index *index, void *item)
{
    size_t capacity = index->capacity > 0 ? index->capacity : STRING_INDEX_MIN_CAPACITY;
    bool found;
    size_t slot;
    int ret;

    /* At most three quarters used (removed slots count: they lengthen searches too). */
    if (4 * (index->used + 1) > 3 * capacity || index->slots == NULL) {
        while (4 * (index->count + 1) > 3 * capacity / 2)
            capacity *= 2;
        ret = resize(index, capacity);
        if (ret < 0)
            return ret;
    }
    slot = probe(index, index->key(item), &found);
    if (index->slots[slot] == NULL)
        index->used++;
    index->slots[slot] = item;
    index->count++;
    return 0;
}

void *string_index_find(const struct string_index *index, const char *key)
{
    bool found;
    size_t slot;

    if (index->count == 0)
        return NULL;
    slot = probe(index, key, &found);
    return found ? index->slots[slot] : NULL;
}

void string_index_remove(struct string_index *index, const void *item)
{
    bool found;
    size_t slot;

    if (index->count == 0)
        return;
    slot = probe(index, index->key(item), &found);
    if (!found || index->slots[slot] != item)
        return;
    index->slots[slot] = STRING_INDEX_GONE;
    index->count--;
    if (index->count == 0) {
        string_index_fini(index);
        return;
    }
    /* Mostly empty: a smaller table, which a failure merely leaves larger. */
    if (index->capacity > STRING_INDEX_MIN_CAPACITY && 8 * index->count < index->capacity)
        resize(index, index->capacity / 2);
}

void string_index_fini(struct string_index *index)
{
    free(index->slots);
    index->slots = NULL;
    index->capacity = 0;
    index->count = 0;
    index->used = 0;
}
