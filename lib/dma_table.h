/*
 * The table of DMA ranges a client has shared with a device (DMA_MAP / DMA_UNMAP).
 *
 * Ranges are kept sorted by address in one array so that translating a client address to
 * a host pointer, which device models do on their hot path, is a binary search with no
 * allocation. A range shared with a file descriptor is mmap()ed at once; a range without
 * one is only recorded, and reached through DMA_READ/DMA_WRITE messages.
 */
#ifndef VU_DMA_TABLE_H
#define VU_DMA_TABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

struct vu_dma_range {
    uint64_t address;
    uint64_t size;
    uint32_t flags; /* VU_DMA_FLAG_READABLE | VU_DMA_FLAG_WRITABLE */
    uint8_t *host;  /* address's byte in our mapping; NULL without a file descriptor */
    void *mapping;  /* what munmap() takes */
    size_t mapping_length;
    size_t page_size; /* of the mapping: larger for hugetlbfs files */
};

struct vu_dma_table {
    struct vu_dma_range *ranges;
    uint32_t count;
    uint32_t capacity; /* allocated entries */
    uint32_t limit;    /* the negotiated max_dma_maps */
};

void vu_dma_table_init(struct vu_dma_table *table, uint32_t limit);

/* Frees the table; every range must have been removed. */
void vu_dma_table_destroy(struct vu_dma_table *table);

/*
 * Adds a range. With fd >= 0 the range is mapped from `fd` at `offset` (the fd itself is
 * not kept: the caller closes it). Returns 0, -EINVAL (empty, wrapping, unknown flags),
 * -EEXIST (overlaps a range), -ENOSPC (limit reached), or the mmap() error.
 */
int vu_dma_table_add(struct vu_dma_table *table, uint64_t address, uint64_t size, uint32_t flags,
                     int fd, uint64_t offset);

/* Index of the range that is exactly [address, address + size), or -ENOENT. */
int vu_dma_table_find_exact(const struct vu_dma_table *table, uint64_t address, uint64_t size);

/* Unmaps and forgets the range at `index`. */
void vu_dma_table_remove(struct vu_dma_table *table, uint32_t index);

/* The range containing all of [address, address + length), or NULL. */
const struct vu_dma_range *vu_dma_table_lookup(const struct vu_dma_table *table, uint64_t address,
                                               uint64_t length);

/*
 * Host pointer for [address, address + length) when it lies in one fd-backed range that
 * allows `flags` (VU_DMA_FLAG_*), else NULL.
 */
void *vu_dma_table_translate(const struct vu_dma_table *table, uint64_t address, uint64_t length,
                             uint32_t flags);

/*
 * [address, address + length) as pieces of host memory, one per range it crosses (joined
 * where they continue each other), each with `flags`: how many pieces, -EFAULT (a part not
 * mapped, or mapped without a file descriptor), -EACCES (without those flags), -ENOBUFS
 * (more than `max`), -EINVAL (a span that wraps around).
 */
int vu_dma_table_scatter(const struct vu_dma_table *table, uint64_t address, uint64_t length,
                         uint32_t flags, struct iovec *pieces, uint32_t max);

#endif /* VU_DMA_TABLE_H */
