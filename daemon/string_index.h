/*
 * An index of items by a string each carries (a device's name, its socket path): a hash
 * table with open addressing, so that finding a device, or checking that a name is free,
 * costs the same with ten thousand devices as with one. The index holds pointers only; the
 * key is read from the item through `key` whenever it is needed, so it must not change while
 * the item is indexed.
 */
#ifndef VFIO_USERD_STRING_INDEX_H
#define VFIO_USERD_STRING_INDEX_H

#include <stddef.h>

typedef const char *(*string_index_key_fn)(const void *item);

struct string_index {
    string_index_key_fn key;
    void **slots;    /* NULL: never used; STRING_INDEX_GONE: an item was removed from it */
    size_t capacity; /* a power of two, or 0 */
    size_t count;    /* items */
    size_t used;     /* items and removed slots */
};

#define STRING_INDEX_INIT(key_function)                                                            \
    {                                                                                              \
        .key = (key_function)                                                                      \
    }

/* Adds `item`, whose key must not be in the index yet. -ENOMEM. */
int string_index_add(struct string_index *index, void *item);

/* The item with `key`, or NULL. */
void *string_index_find(const struct string_index *index, const char *key);

/* Takes `item` out, if it is in. The table shrinks when it is mostly empty. */
void string_index_remove(struct string_index *index, const void *item);

void string_index_fini(struct string_index *index);

#endif /* VFIO_USERD_STRING_INDEX_H */
