/*
 * DMA range table: a sorted array of client ranges; see dma_table.h.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "dma_table.h"
#include "wire.h"

void vu_dma_table_init(struct vu_dma_table *table, uint32_t limit)
{
    *table = (struct vu_dma_table){.limit = limit};
}

void vu_dma_table_destroy(struct vu_dma_table *table)
{
    while (table->count > 0)
        vu_dma_table_remove(table, table->count - 1);
    free(table->ranges);
    table->ranges = NULL;
    table->capacity = 0;
}

/* Index of the first range whose address is >= `address`. */
static uint32_t lower_bound(const struct vu_dma_table *table, uint64_t address)
{
    uint32_t low = 0, high = table->count;

    while (low < high) {
        uint32_t middle = low + (high - low) / 2;
        if (table->ranges[middle].address < address)
            low = middle + 1;
        else
            high = middle;
    }
    return low;
}

static bool overlaps(const struct vu_dma_range *range, uint64_t address, uint64_t size)
{
    /* Both ranges are known not to wrap. */
    return address < range->address + range->size && range->address < address + size;
}

static int map_range(struct vu_dma_range *range, int fd, uint64_t offset)
{
    long page_size = sysconf(_SC_PAGESIZE);
    uint64_t page_offset = offset % (uint64_t)page_size;
    struct stat status;
    struct statfs filesystem;
    int protection = 0;
    void *mapping;

    /* Touching a mapping beyond the end of its file raises SIGBUS, which would take the
     * whole daemon down: a range must lie within the file as it is now. */
    if (fstat(fd, &status) < 0 || fstatfs(fd, &filesystem) < 0)
        return -errno;
    if (S_ISREG(status.st_mode) && (uint64_t)status.st_size < offset + range->size)
        return -EINVAL;
    /* hugetlbfs maps in huge pages; the SIGBUS guard replaces whole pages of that size. */
    range->page_size = (size_t)page_size;
    if (filesystem.f_type == HUGETLBFS_MAGIC && status.st_blksize > page_size)
        range->page_size = (size_t)status.st_blksize;

    if (range->flags & VU_DMA_FLAG_READABLE)
        protection |= PROT_READ;
    if (range->flags & VU_DMA_FLAG_WRITABLE)
        protection |= PROT_WRITE;
    if (range->size > SIZE_MAX - page_offset)
        return -EINVAL;
    mapping = mmap(NULL, range->size + page_offset, protection, MAP_SHARED, fd,
                   (off_t)(offset - page_offset));
    if (mapping == MAP_FAILED)
        return -errno;
    range->mapping = mapping;
    range->mapping_length = range->size + page_offset;
    range->host = (uint8_t *)mapping + page_offset;
    return 0;
}

int vu_dma_table_add(struct vu_dma_table *table, uint64_t address, uint64_t size, uint32_t flags,
                     int fd, uint64_t offset)
{
    struct vu_dma_range range = {.address = address, .size = size, .flags = flags};
    uint32_t index;
    int ret;

    if (size == 0 || address + size < address ||
        (flags & ~(uint32_t)(VU_DMA_FLAG_READABLE | VU_DMA_FLAG_WRITABLE)))
        return -EINVAL;
    if (fd >= 0 && (size > (uint64_t)INT64_MAX || offset > (uint64_t)INT64_MAX - size))
        return -EINVAL;

    index = lower_bound(table, address);
    if ((index < table->count && overlaps(&table->ranges[index], address, size)) ||
        (index > 0 && overlaps(&table->ranges[index - 1], address, size)))
        return -EEXIST;
    if (table->count >= table->limit)
        return -ENOSPC;

    if (table->count == table->capacity) {
        uint32_t capacity = table->capacity ? table->capacity * 2 : 8;
        struct vu_dma_range *ranges = reallocarray(table->ranges, capacity, sizeof(*ranges));
        if (ranges == NULL)
            return -ENOMEM;
        table->ranges = ranges;
        table->capacity = capacity;
    }
    if (fd >= 0) {
        ret = map_range(&range, fd, offset);
        if (ret < 0)
            return ret;
    }
    memmove(&table->ranges[index + 1], &table->ranges[index],
            (table->count - index) * sizeof(table->ranges[0]));
    table->ranges[index] = range;
    table->count++;
    return 0;
}

int vu_dma_table_find_exact(const struct vu_dma_table *table, uint64_t address, uint64_t size)
{
    uint32_t index = lower_bound(table, address);

    if (index < table->count && table->ranges[index].address == address &&
        table->ranges[index].size == size)
        return (int)index;
    return -ENOENT;
}

void vu_dma_table_remove(struct vu_dma_table *table, uint32_t index)
{
    struct vu_dma_range *range = &table->ranges[index];

    if (range->mapping != NULL)
        munmap(range->mapping, range->mapping_length);
    memmove(range, range + 1, (table->count - index - 1) * sizeof(*range));
    table->count--;
}

const struct vu_dma_range *vu_dma_table_lookup(const struct vu_dma_table *table, uint64_t address,
                                               uint64_t length)
{
    uint32_t index = lower_bound(table, address + 1);
    const struct vu_dma_range *range;

    if (address + 1 == 0 || index == 0)
        return NULL;
    range = &table->ranges[index - 1];
    if (address < range->address || address - range->address >= range->size)
        return NULL;
    if (length > range->size - (address - range->address))
        return NULL;
    return range;
}

void *vu_dma_table_translate(const struct vu_dma_table *table, uint64_t address, uint64_t length,
                             uint32_t flags)
{
    const struct vu_dma_range *range = vu_dma_table_lookup(table, address, length);

    if (range == NULL || range->host == NULL || (range->flags & flags) != flags)
        return NULL;
    return range->host + (address - range->address);
}

int vu_dma_table_scatter(const struct vu_dma_table *table, uint64_t address, uint64_t length,
                         uint32_t flags, struct iovec *pieces, uint32_t max)
{
    uint32_t count = 0;

    if (length == 0)
        return 0;
    if (address + length < address || pieces == NULL)
        return -EINVAL;
    while (length > 0) {
        const struct vu_dma_range *range = vu_dma_table_lookup(table, address, 1);
        uint64_t offset, take;
        uint8_t *host;

        if (range == NULL || range->host == NULL)
            return -EFAULT;
        if ((range->flags & flags) != flags)
            return -EACCES;
        offset = address - range->address;
        take = range->size - offset < length ? range->size - offset : length;
        host = range->host + offset;
        if (count > 0 &&
            (uint8_t *)pieces[count - 1].iov_base + pieces[count - 1].iov_len == host) {
            pieces[count - 1].iov_len += take;
        } else {
            if (count == max)
                return -ENOBUFS;
            pieces[count++] = (struct iovec){.iov_base = host, .iov_len = take};
        }
        address += take;
        length -= take;
    }
    return (int)count;
}
