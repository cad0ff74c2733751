/*
 * Unit tests for the DMA range table (lib/dma_table.c): validation of what a client maps,
 * overlap detection wherever the new range falls, the map limit, exact-match removal,
 * lookups at and across range boundaries, access rights, and ranges backed by a memfd the
 * table maps itself, including at an offset that is not page-aligned.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>
#include <check.h>

#include "dma_table.h"
#include "wire.h"
#include "test_runner.h"

#define RW        (VU_DMA_FLAG_READABLE | VU_DMA_FLAG_WRITABLE)
#define READ_ONLY VU_DMA_FLAG_READABLE
#define NO_FD     (-1)

static struct vu_dma_table table;

static void setup(void)
{
    vu_dma_table_init(&table, 1024);
}

static void teardown(void)
{
    vu_dma_table_destroy(&table);
}

static int add(uint64_t address, uint64_t size)
{
    return vu_dma_table_add(&table, address, size, RW, NO_FD, 0);
}

/* The table's ranges are sorted, disjoint, and exactly the `count` expected ones. */
static void assert_ranges(const uint64_t (*expected)[2], uint32_t count)
{
    ck_assert_uint_eq(table.count, count);
    for (uint32_t i = 0; i < count; i++) {
        ck_assert_uint_eq(table.ranges[i].address, expected[i][0]);
        ck_assert_uint_eq(table.ranges[i].size, expected[i][1]);
        if (i > 0)
            ck_assert_uint_le(table.ranges[i - 1].address + table.ranges[i - 1].size,
                              table.ranges[i].address);
    }
}

/* A memfd of `length` bytes whose byte i is (i * 7 + 3) & 0xff. */
static int patterned_memfd(size_t length)
{
    int fd = memfd_create("test-dma", MFD_CLOEXEC);
    uint8_t *bytes = malloc(length);

    ck_assert_int_ge(fd, 0);
    ck_assert_ptr_nonnull(bytes);
    for (size_t i = 0; i < length; i++)
        bytes[i] = (uint8_t)(i * 7 + 3);
    ck_assert_int_eq(pwrite(fd, bytes, length, 0), (ssize_t)length);
    free(bytes);
    return fd;
}

static uint8_t pattern_at(uint64_t file_offset)
{
    return (uint8_t)(file_offset * 7 + 3);
}

/* Whether [address, address + length) is mapped in this process. */
static bool is_mapped(const void *address, size_t length)
{
    long page = sysconf(_SC_PAGESIZE);
    uintptr_t start = (uintptr_t)address & ~(uintptr_t)(page - 1);

    size_t pages = (length + ((uintptr_t)address - start) + (size_t)page - 1) / (size_t)page;
    unsigned char residency[64];

    ck_assert_uint_le(pages, sizeof(residency));
    /* mincore() fails with ENOMEM where any page of the span is not mapped. */
    return mincore((void *)start, pages * (size_t)page, residency) == 0;
}

/* ---------------------------------------------------------------------------------------
 * Adding.
 */

START_TEST(test_empty_table)
{
    ck_assert_uint_eq(table.count, 0);
    ck_assert_uint_eq(table.limit, 1024);
    ck_assert_ptr_null(vu_dma_table_lookup(&table, 0, 1));
    ck_assert_ptr_null(vu_dma_table_translate(&table, 0, 1, 0));
    ck_assert_int_eq(vu_dma_table_find_exact(&table, 0, 0), -ENOENT);
}
END_TEST

START_TEST(test_add_rejects_invalid)
{
    ck_assert_int_eq(add(0x1000, 0), -EINVAL);
    /* Wrapping past the top of the address space. */
    ck_assert_int_eq(add(UINT64_MAX - 0xff, 0x1000), -EINVAL);
    ck_assert_int_eq(add(1, UINT64_MAX), -EINVAL);
    ck_assert_int_eq(add(UINT64_MAX, 1), -EINVAL);
    /* A range ending exactly at 2^64 is refused too: its end is not representable, and the
     * last byte of the address space is therefore never mappable. */
    ck_assert_int_eq(add(UINT64_MAX - 0xfff, 0x1000), -EINVAL);
    ck_assert_int_eq(add(UINT64_MAX - 0x1000, 0x1000), 0);
    /* Unknown flag bits. */
    ck_assert_int_eq(vu_dma_table_add(&table, 0x1000, 0x1000, RW | 4, NO_FD, 0), -EINVAL);
    ck_assert_int_eq(vu_dma_table_add(&table, 0x1000, 0x1000, 0x80000000u, NO_FD, 0), -EINVAL);
    ck_assert_uint_eq(table.count, 1);
}
END_TEST

START_TEST(test_add_keeps_order)
{
    static const uint64_t expected[][2] = {
        {0x0, 0x1000}, {0x3000, 0x1000}, {0x5000, 0x800}, {0x10000, 0x10000}, {1ull << 40, 1}};

    ck_assert_int_eq(add(0x10000, 0x10000), 0);
    ck_assert_int_eq(add(0x3000, 0x1000), 0);
    ck_assert_int_eq(add(1ull << 40, 1), 0);
    ck_assert_int_eq(add(0x0, 0x1000), 0);
    ck_assert_int_eq(add(0x5000, 0x800), 0);
    assert_ranges(expected, 5);
    for (uint32_t i = 0; i < 5; i++)
        ck_assert_ptr_null(table.ranges[i].host); /* no fd: recorded, not mapped */
}
END_TEST

START_TEST(test_overlap_every_position)
{
    static const uint64_t expected[][2] = {{0x2000, 0x1000}};

    ck_assert_int_eq(add(0x2000, 0x1000), 0);
    ck_assert_int_eq(add(0x2000, 0x1000), -EEXIST);  /* identical */
    ck_assert_int_eq(add(0x1000, 0x1001), -EEXIST);  /* ends on its first byte */
    ck_assert_int_eq(add(0x2fff, 0x1000), -EEXIST);  /* starts on its last byte */
    ck_assert_int_eq(add(0x2100, 0x100), -EEXIST);   /* inside */
    ck_assert_int_eq(add(0x2000, 0x1), -EEXIST);     /* same start, shorter */
    ck_assert_int_eq(add(0x2000, 0x2000), -EEXIST);  /* same start, longer */
    ck_assert_int_eq(add(0x2800, 0x800), -EEXIST);   /* same end, shorter */
    ck_assert_int_eq(add(0x1000, 0x2000), -EEXIST);  /* same end, longer */
    ck_assert_int_eq(add(0x0, 0x10000), -EEXIST);    /* around it */
    ck_assert_int_eq(add(0x0, UINT64_MAX), -EEXIST); /* around it, as large as it gets */
    assert_ranges(expected, 1);
}
END_TEST

START_TEST(test_adjacent_ranges)
{
    static const uint64_t expected[][2] = {
        {0x1000, 0x1000}, {0x2000, 0x1000}, {0x3000, 0x1000}, {0x4000, 0x1}};

    ck_assert_int_eq(add(0x2000, 0x1000), 0);
    ck_assert_int_eq(add(0x1000, 0x1000), 0); /* ends where it starts */
    ck_assert_int_eq(add(0x3000, 0x1000), 0); /* starts where it ends */
    ck_assert_int_eq(add(0x4000, 0x1), 0);
    assert_ranges(expected, 4);
}
END_TEST

START_TEST(test_overlap_among_several)
{
    static const uint64_t expected[][2] = {
        {0x1000, 0x1000}, {0x2000, 0x3000}, {0x5000, 0x1000}, {0x9000, 0x1000}};

    ck_assert_int_eq(add(0x1000, 0x1000), 0);
    ck_assert_int_eq(add(0x5000, 0x1000), 0);
    ck_assert_int_eq(add(0x9000, 0x1000), 0);
    /* Gap-filling ranges that reach into a neighbour, on either side. */
    ck_assert_int_eq(add(0x1fff, 0x2000), -EEXIST);
    ck_assert_int_eq(add(0x2000, 0x3001), -EEXIST);
    ck_assert_int_eq(add(0x4000, 0x6000), -EEXIST); /* spans two ranges and a gap */
    ck_assert_int_eq(add(0x0, 0xa000), -EEXIST);    /* spans all of them */
    ck_assert_int_eq(add(0x8000, 0x4000), -EEXIST); /* around the last one */
    ck_assert_int_eq(add(0x0, 0x1001), -EEXIST);    /* into the first one */
    /* The gap exactly. */
    ck_assert_int_eq(add(0x2000, 0x3000), 0);
    assert_ranges(expected, 4);
}
END_TEST

START_TEST(test_limit)
{
    vu_dma_table_destroy(&table);
    vu_dma_table_init(&table, 3);
    ck_assert_int_eq(add(0x1000, 0x1000), 0);
    ck_assert_int_eq(add(0x3000, 0x1000), 0);
    ck_assert_int_eq(add(0x5000, 0x1000), 0);
    ck_assert_int_eq(add(0x7000, 0x1000), -ENOSPC);
    ck_assert_uint_eq(table.count, 3);
    /* Room again once one goes. */
    vu_dma_table_remove(&table, 1);
    ck_assert_int_eq(add(0x7000, 0x1000), 0);
    ck_assert_int_eq(add(0x9000, 0x1000), -ENOSPC);

    /* A client that negotiated max_dma_maps 0 maps nothing. */
    vu_dma_table_destroy(&table);
    vu_dma_table_init(&table, 0);
    ck_assert_int_eq(add(0x1000, 0x1000), -ENOSPC);
    ck_assert_uint_eq(table.count, 0);
}
END_TEST

START_TEST(test_many_ranges)
{
    /* Past the first few reallocations, inserted in an order that is neither up nor down. */
    const uint32_t count = 300;

    for (uint32_t i = 0; i < count; i++) {
        uint32_t slot = (i * 7919) % count;
        ck_assert_int_eq(add((uint64_t)slot * 0x2000, 0x1000), 0);
    }
    ck_assert_uint_eq(table.count, count);
    for (uint32_t slot = 0; slot < count; slot++) {
        const struct vu_dma_range *range =
            vu_dma_table_lookup(&table, (uint64_t)slot * 0x2000 + 0xfff, 1);
        ck_assert_ptr_nonnull(range);
        ck_assert_uint_eq(range->address, (uint64_t)slot * 0x2000);
        ck_assert_ptr_eq(range, &table.ranges[slot]);
        ck_assert_ptr_null(vu_dma_table_lookup(&table, (uint64_t)slot * 0x2000 + 0x1000, 1));
    }
}
END_TEST

/* ---------------------------------------------------------------------------------------
 * Removing.
 */

START_TEST(test_find_exact)
{
    ck_assert_int_eq(add(0x1000, 0x1000), 0);
    ck_assert_int_eq(add(0x4000, 0x2000), 0);
    ck_assert_int_eq(vu_dma_table_find_exact(&table, 0x1000, 0x1000), 0);
    ck_assert_int_eq(vu_dma_table_find_exact(&table, 0x4000, 0x2000), 1);
    /* Only the exact range: not a part, not a superset, not a shifted one. */
    ck_assert_int_eq(vu_dma_table_find_exact(&table, 0x4000, 0x1000), -ENOENT);
    ck_assert_int_eq(vu_dma_table_find_exact(&table, 0x4000, 0x3000), -ENOENT);
    ck_assert_int_eq(vu_dma_table_find_exact(&table, 0x5000, 0x1000), -ENOENT);
    ck_assert_int_eq(vu_dma_table_find_exact(&table, 0x1000, 0x5000), -ENOENT);
    ck_assert_int_eq(vu_dma_table_find_exact(&table, 0x0, 0x1000), -ENOENT);
    ck_assert_int_eq(vu_dma_table_find_exact(&table, 0x8000, 0x1000), -ENOENT);
}
END_TEST

START_TEST(test_remove)
{
    static const uint64_t after_middle[][2] = {{0x1000, 0x1000}, {0x7000, 0x1000}};
    static const uint64_t after_first[][2] = {{0x7000, 0x1000}};
    int index;

    ck_assert_int_eq(add(0x1000, 0x1000), 0);
    ck_assert_int_eq(add(0x4000, 0x1000), 0);
    ck_assert_int_eq(add(0x7000, 0x1000), 0);
    index = vu_dma_table_find_exact(&table, 0x4000, 0x1000);
    ck_assert_int_eq(index, 1);
    vu_dma_table_remove(&table, (uint32_t)index);
    assert_ranges(after_middle, 2);
    ck_assert_ptr_null(vu_dma_table_lookup(&table, 0x4000, 1));
    ck_assert_int_eq(vu_dma_table_find_exact(&table, 0x4000, 0x1000), -ENOENT);
    vu_dma_table_remove(&table, 0);
    assert_ranges(after_first, 1);
    ck_assert_ptr_nonnull(vu_dma_table_lookup(&table, 0x7000, 0x1000));
    /* The freed space can be mapped again, differently. */
    ck_assert_int_eq(add(0x0, 0x7000), 0);
    ck_assert_uint_eq(table.count, 2);
}
END_TEST

/* ---------------------------------------------------------------------------------------
 * Lookup.
 */

START_TEST(test_lookup_boundaries)
{
    const struct vu_dma_range *range;

    ck_assert_int_eq(add(0x1000, 0x1000), 0);
    ck_assert_int_eq(add(0x2000, 0x1000), 0); /* adjacent to the first */
    ck_assert_int_eq(add(0x8000, 0x1000), 0);

    range = vu_dma_table_lookup(&table, 0x1000, 0x1000); /* all of it */
    ck_assert_ptr_nonnull(range);
    ck_assert_uint_eq(range->address, 0x1000);
    range = vu_dma_table_lookup(&table, 0x1fff, 1); /* its last byte */
    ck_assert_ptr_nonnull(range);
    ck_assert_uint_eq(range->address, 0x1000);
    range = vu_dma_table_lookup(&table, 0x2000, 1); /* the next one's first byte */
    ck_assert_ptr_nonnull(range);
    ck_assert_uint_eq(range->address, 0x2000);

    /* Across the boundary of two adjacent ranges: not one range, so no answer. */
    ck_assert_ptr_null(vu_dma_table_lookup(&table, 0x1fff, 2));
    ck_assert_ptr_null(vu_dma_table_lookup(&table, 0x1000, 0x2000));
    /* One byte past the end, from the start and from inside. */
    ck_assert_ptr_null(vu_dma_table_lookup(&table, 0x8000, 0x1001));
    ck_assert_ptr_null(vu_dma_table_lookup(&table, 0x8fff, 2));
    /* Before, between, after. */
    ck_assert_ptr_null(vu_dma_table_lookup(&table, 0xfff, 1));
    ck_assert_ptr_null(vu_dma_table_lookup(&table, 0xfff, 2));
    ck_assert_ptr_null(vu_dma_table_lookup(&table, 0x3000, 1));
    ck_assert_ptr_null(vu_dma_table_lookup(&table, 0x7fff, 0x10));
    ck_assert_ptr_null(vu_dma_table_lookup(&table, 0x9000, 1));
    /* Lengths that would wrap an unchecked address + length. */
    ck_assert_ptr_null(vu_dma_table_lookup(&table, 0x8000, UINT64_MAX));
    ck_assert_ptr_null(vu_dma_table_lookup(&table, 0x8800, UINT64_MAX - 0x7ff));
    ck_assert_ptr_null(vu_dma_table_lookup(&table, UINT64_MAX, 1));
    ck_assert_ptr_null(vu_dma_table_lookup(&table, UINT64_MAX, 0));
    /* A zero-length lookup inside a range finds it; at its end it does not. */
    ck_assert_ptr_nonnull(vu_dma_table_lookup(&table, 0x8800, 0));
    ck_assert_ptr_null(vu_dma_table_lookup(&table, 0x9000, 0));
}
END_TEST

START_TEST(test_lookup_top_of_address_space)
{
    const uint64_t start = UINT64_MAX - 0x1000; /* ends at UINT64_MAX, exclusive */
    const struct vu_dma_range *range;

    ck_assert_int_eq(add(start, 0x1000), 0);
    ck_assert_int_eq(add(0, 0x1000), 0);
    range = vu_dma_table_lookup(&table, start, 0x1000);
    ck_assert_ptr_nonnull(range);
    ck_assert_uint_eq(range->address, start);
    range = vu_dma_table_lookup(&table, UINT64_MAX - 1, 1);
    ck_assert_ptr_nonnull(range);
    ck_assert_ptr_null(vu_dma_table_lookup(&table, UINT64_MAX - 1, 2));
    range = vu_dma_table_lookup(&table, 0, 1);
    ck_assert_ptr_nonnull(range);
    ck_assert_uint_eq(range->address, 0);
}
END_TEST

/* ---------------------------------------------------------------------------------------
 * Translation and fd-backed ranges.
 */

START_TEST(test_translate_needs_a_mapping)
{
    /* A range shared without a descriptor is reached by messages, never by pointer. */
    ck_assert_int_eq(add(0x1000, 0x1000), 0);
    ck_assert_ptr_nonnull(vu_dma_table_lookup(&table, 0x1000, 0x10));
    ck_assert_ptr_null(vu_dma_table_translate(&table, 0x1000, 0x10, 0));
    ck_assert_ptr_null(vu_dma_table_translate(&table, 0x1000, 0x10, VU_DMA_FLAG_READABLE));
}
END_TEST

START_TEST(test_fd_mapping_aligned)
{
    const long page = sysconf(_SC_PAGESIZE);
    const size_t file_length = 4 * (size_t)page;
    const uint64_t address = 0x100000, offset = (uint64_t)page;
    int fd = patterned_memfd(file_length);
    uint8_t *host;

    ck_assert_int_eq(vu_dma_table_add(&table, address, 2 * (uint64_t)page, RW, fd, offset), 0);
    /* The descriptor is not kept: the mapping outlives it. */
    close(fd);
    host = vu_dma_table_translate(&table, address, 2 * (uint64_t)page, RW);
    ck_assert_ptr_nonnull(host);
    ck_assert_ptr_eq(host, table.ranges[0].host);
    for (uint64_t i = 0; i < 2 * (uint64_t)page; i += 97)
        ck_assert_uint_eq(host[i], pattern_at(offset + i));
    host = vu_dma_table_translate(&table, address + 100, 8, VU_DMA_FLAG_READABLE);
    ck_assert_ptr_eq(host, table.ranges[0].host + 100);
    ck_assert_uint_eq(host[0], pattern_at(offset + 100));
    /* Past the end of the range, though still inside the file: no pointer. */
    ck_assert_ptr_null(vu_dma_table_translate(&table, address, 2 * (uint64_t)page + 1, 0));
}
END_TEST

/*
 * Scatter-gather across ranges: a span that crosses from one map into the next comes out
 * as one piece per range, each pointing at the right bytes; a gap, a range without a
 * mapping, missing access and too few pieces are each refused.
 */
START_TEST(test_scatter_across_ranges)
{
    const uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
    int first = patterned_memfd(2 * page), second = patterned_memfd(2 * page);
    struct iovec pieces[4];
    int count;

    /* Two maps that meet at 0x10000 + 2 pages, from different files: two pieces. */
    ck_assert_int_eq(vu_dma_table_add(&table, 0x10000, 2 * page, RW, first, 0), 0);
    ck_assert_int_eq(
        vu_dma_table_add(&table, 0x10000 + 2 * page, 2 * page, VU_DMA_FLAG_READABLE, second, 0), 0);
    close(first);
    close(second);
    count = vu_dma_table_scatter(&table, 0x10000 + page + 10, page + 20, VU_DMA_FLAG_READABLE,
                                 pieces, 4);
    /* Should the kernel have placed the second mapping right after the first, the two
     * pieces are one: joined, as promised. */
    if (table.ranges[0].host + 2 * page == table.ranges[1].host) {
        ck_assert_int_eq(count, 1);
        ck_assert_uint_eq(pieces[0].iov_len, page + 20);
    } else {
        ck_assert_int_eq(count, 2);
        ck_assert_uint_eq(pieces[0].iov_len, page - 10);
        ck_assert_uint_eq(pieces[1].iov_len, 30);
        ck_assert_uint_eq(((uint8_t *)pieces[1].iov_base)[0], pattern_at(0));
        ck_assert_uint_eq(((uint8_t *)pieces[1].iov_base)[29], pattern_at(29));
    }
    ck_assert_uint_eq(((uint8_t *)pieces[0].iov_base)[0], pattern_at(page + 10));
    /* Inside one range: one piece, the same pointer dma_translate gives. */
    ck_assert_int_eq(vu_dma_table_scatter(&table, 0x10000 + 5, 100, RW, pieces, 1), 1);
    ck_assert_ptr_eq(pieces[0].iov_base, vu_dma_table_translate(&table, 0x10000 + 5, 100, RW));
    /* Refusals. */
    ck_assert_int_eq(vu_dma_table_scatter(&table, 0x10000 + page, 2 * page, RW, pieces, 4),
                     -EACCES); /* the second map is read-only */
    ck_assert_int_eq(
        vu_dma_table_scatter(&table, 0x10000 + page, 4 * page, VU_DMA_FLAG_READABLE, pieces, 4),
        -EFAULT); /* runs past the second map */
    ck_assert_int_eq(
        vu_dma_table_scatter(&table, 0x10000 + page, 2 * page, VU_DMA_FLAG_READABLE, pieces, 1),
        -ENOBUFS);
    ck_assert_int_eq(vu_dma_table_scatter(&table, UINT64_MAX - 10, 20, 0, pieces, 4), -EINVAL);
    ck_assert_int_eq(vu_dma_table_scatter(&table, 0x10000, 0, RW, pieces, 4), 0);
    /* A map without a file descriptor has no host memory to point at. */
    ck_assert_int_eq(add(0x100000, page), 0);
    ck_assert_int_eq(vu_dma_table_scatter(&table, 0x100000, 8, 0, pieces, 4), -EFAULT);
}
END_TEST

START_TEST(test_fd_mapping_unaligned_offset)
{
    const long page = sysconf(_SC_PAGESIZE);
    const size_t file_length = 4 * (size_t)page;
    const uint64_t address = 0x7000, offset = (uint64_t)page + 0x123, size = 0x1800;
    int fd = patterned_memfd(file_length);
    uint8_t *host, readback;
    void *mapping;

    ck_assert_int_eq(vu_dma_table_add(&table, address, size, RW, fd, offset), 0);
    host = vu_dma_table_translate(&table, address, size, RW);
    ck_assert_ptr_nonnull(host);
    /* The client's address is the file's byte at `offset`, whatever the page rounding. */
    ck_assert_uint_eq(host[0], pattern_at(offset));
    ck_assert_uint_eq(host[size - 1], pattern_at(offset + size - 1));
    ck_assert_uint_eq(*(uint8_t *)vu_dma_table_translate(&table, address + 0x555, 1, RW),
                      pattern_at(offset + 0x555));
    /* Shared: a write through the pointer lands in the file. */
    host[0x10] = 0xee;
    ck_assert_int_eq(pread(fd, &readback, 1, (off_t)(offset + 0x10)), 1);
    ck_assert_uint_eq(readback, 0xee);
    close(fd);

    /* Removing the range unmaps it. */
    mapping = table.ranges[0].mapping;
    ck_assert(is_mapped(mapping, table.ranges[0].mapping_length));
    vu_dma_table_remove(&table, 0);
    ck_assert(!is_mapped(mapping, 1));
}
END_TEST

START_TEST(test_translate_access_rights)
{
    const long page = sysconf(_SC_PAGESIZE);
    int fd = patterned_memfd(2 * (size_t)page);

    ck_assert_int_eq(vu_dma_table_add(&table, 0x1000, (uint64_t)page, READ_ONLY, fd, 0), 0);
    ck_assert_int_eq(
        vu_dma_table_add(&table, 0x100000, (uint64_t)page, VU_DMA_FLAG_WRITABLE, fd, 0), 0);
    close(fd);

    /* Read-only: readable and "no particular access", but not writable. */
    ck_assert_ptr_nonnull(vu_dma_table_translate(&table, 0x1000, 16, VU_DMA_FLAG_READABLE));
    ck_assert_ptr_nonnull(vu_dma_table_translate(&table, 0x1000, 16, 0));
    ck_assert_ptr_null(vu_dma_table_translate(&table, 0x1000, 16, VU_DMA_FLAG_WRITABLE));
    ck_assert_ptr_null(vu_dma_table_translate(&table, 0x1000, 16, RW));
    /* Write-only: the reverse. */
    ck_assert_ptr_nonnull(vu_dma_table_translate(&table, 0x100000, 16, VU_DMA_FLAG_WRITABLE));
    ck_assert_ptr_null(vu_dma_table_translate(&table, 0x100000, 16, VU_DMA_FLAG_READABLE));
    ck_assert_ptr_null(vu_dma_table_translate(&table, 0x100000, 16, RW));
    ck_assert_uint_eq(table.ranges[0].flags, READ_ONLY);
}
END_TEST

START_TEST(test_fd_mapping_failures)
{
    const long page = sysconf(_SC_PAGESIZE);
    int fd = patterned_memfd((size_t)page);
    int unmappable, read_only;
    char path[64];

    /* An offset that does not fit an off_t together with the size. */
    ck_assert_int_eq(vu_dma_table_add(&table, 0x1000, 0x1000, RW, fd, (uint64_t)INT64_MAX),
                     -EINVAL);
    ck_assert_int_eq(vu_dma_table_add(&table, 0x1000, 0x1000, RW, fd, UINT64_MAX - 0xfff), -EINVAL);
    /* Sizes beyond any mapping fail (whatever the errno) and leave nothing behind. */
    ck_assert_int_lt(vu_dma_table_add(&table, 0x0, (1ull << 63) + 0x1000, RW, fd, 0), 0);
    ck_assert_int_lt(vu_dma_table_add(&table, 0x0, 1ull << 62, RW, fd, 0), 0);
    /* Descriptors that cannot be mapped: the mmap() error, nothing added. */
    unmappable = eventfd(0, EFD_CLOEXEC);
    ck_assert_int_ge(unmappable, 0);
    ck_assert_int_eq(vu_dma_table_add(&table, 0x1000, 0x1000, RW, unmappable, 0), -ENODEV);
    close(unmappable);
    ck_assert_int_eq(vu_dma_table_add(&table, 0x1000, 0x1000, RW, unmappable, 0), -EBADF);
    /* A read-only descriptor shares memory for reading only. */
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    read_only = open(path, O_RDONLY | O_CLOEXEC);
    ck_assert_int_ge(read_only, 0);
    ck_assert_int_eq(vu_dma_table_add(&table, 0x1000, 0x1000, RW, read_only, 0), -EACCES);
    ck_assert_uint_eq(table.count, 0);
    ck_assert_int_eq(vu_dma_table_add(&table, 0x1000, 0x1000, READ_ONLY, read_only, 0), 0);
    close(read_only);
    ck_assert_ptr_nonnull(vu_dma_table_translate(&table, 0x1000, 0x1000, VU_DMA_FLAG_READABLE));
    vu_dma_table_remove(&table, 0);
    close(fd);
    ck_assert_uint_eq(table.count, 0);
    /* And the address range is still free. */
    ck_assert_int_eq(add(0x1000, 0x1000), 0);
}
END_TEST

START_TEST(test_destroy_unmaps)
{
    const long page = sysconf(_SC_PAGESIZE);
    int fd = patterned_memfd(2 * (size_t)page);
    void *first, *second;

    ck_assert_int_eq(vu_dma_table_add(&table, 0x1000, (uint64_t)page, RW, fd, 0), 0);
    ck_assert_int_eq(vu_dma_table_add(&table, 0x9000, (uint64_t)page, RW, fd, (uint64_t)page), 0);
    ck_assert_int_eq(add(0x20000, 0x1000), 0);
    close(fd);
    first = table.ranges[0].mapping;
    second = table.ranges[1].mapping;
    vu_dma_table_destroy(&table);
    ck_assert_uint_eq(table.count, 0);
    ck_assert_ptr_null(table.ranges);
    ck_assert(!is_mapped(first, 1));
    ck_assert(!is_mapped(second, 1));
    /* Reusable after destroy, as a session ending and the next one starting. */
    ck_assert_int_eq(add(0x1000, 0x1000), 0);
}
END_TEST

static Suite *dma_table_suite(void)
{
    Suite *suite = suite_create("dma_table");
    TCase *adding = tcase_create("add");
    TCase *removing = tcase_create("remove");
    TCase *lookup = tcase_create("lookup");
    TCase *mapping = tcase_create("mapping");

    tcase_add_checked_fixture(adding, setup, teardown);
    tcase_add_test(adding, test_empty_table);
    tcase_add_test(adding, test_add_rejects_invalid);
    tcase_add_test(adding, test_add_keeps_order);
    tcase_add_test(adding, test_overlap_every_position);
    tcase_add_test(adding, test_adjacent_ranges);
    tcase_add_test(adding, test_overlap_among_several);
    tcase_add_test(adding, test_limit);
    tcase_add_test(adding, test_many_ranges);
    suite_add_tcase(suite, adding);

    tcase_add_checked_fixture(removing, setup, teardown);
    tcase_add_test(removing, test_find_exact);
    tcase_add_test(removing, test_remove);
    suite_add_tcase(suite, removing);

    tcase_add_checked_fixture(lookup, setup, teardown);
    tcase_add_test(lookup, test_lookup_boundaries);
    tcase_add_test(lookup, test_lookup_top_of_address_space);
    suite_add_tcase(suite, lookup);

    tcase_add_checked_fixture(mapping, setup, teardown);
    tcase_add_test(mapping, test_translate_needs_a_mapping);
    tcase_add_test(mapping, test_fd_mapping_aligned);
    tcase_add_test(mapping, test_fd_mapping_unaligned_offset);
    tcase_add_test(mapping, test_translate_access_rights);
    tcase_add_test(mapping, test_fd_mapping_failures);
    tcase_add_test(mapping, test_destroy_unmaps);
    tcase_add_test(mapping, test_scatter_across_ranges);
    suite_add_tcase(suite, mapping);
    return suite;
}

int main(void)
{
    return test_run_suite(dma_table_suite());
}
