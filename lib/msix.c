/*
 * MSI-X table and PBA emulation: client accesses are checked against the access rules of
 * PCI 3.0 6.8.2, and reserved bits are dropped on write so they always read back as zero.
 */
#include "msix.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <linux/pci_regs.h>

#define PENDING_WORD_BITS 64u
/* The two low Message Address bits are reserved: messages are dword aligned. */
#define ENTRY_ADDRESS_WRITABLE 0xfffffffcu

static uint32_t get_le32(const uint8_t *bytes)
{
    return (uint32_t)bytes[0] | (uint32_t)bytes[1] << 8 | (uint32_t)bytes[2] << 16 |
           (uint32_t)bytes[3] << 24;
}

static void put_le32(uint8_t *bytes, uint32_t value)
{
    for (uint32_t i = 0; i < 4; i++)
        bytes[i] = (uint8_t)(value >> (8 * i));
}

static size_t pending_words(uint32_t vectors)
{
    return ((size_t)vectors + PENDING_WORD_BITS - 1) / PENDING_WORD_BITS;
}

int vu_msix_init(struct vu_msix *msix, uint32_t vectors)
{
    int ret = 0;

    memset(msix, 0, sizeof(*msix));
    if (vectors == 0 || vectors > VU_MSIX_MAX_VECTORS) {
        ret = -EINVAL;
        goto out;
    }
    msix->table = calloc(vectors, PCI_MSIX_ENTRY_SIZE);
    msix->pending = calloc(pending_words(vectors), sizeof(*msix->pending));
    if (msix->table == NULL || msix->pending == NULL) {
        ret = -ENOMEM;
        goto out;
    }
    msix->vectors = vectors;
    vu_msix_reset(msix);
out:
    if (ret < 0)
        vu_msix_destroy(msix);
    return ret;
}

void vu_msix_destroy(struct vu_msix *msix)
{
    free(msix->table);
    free(msix->pending);
    memset(msix, 0, sizeof(*msix));
}

void vu_msix_reset(struct vu_msix *msix)
{
    if (msix->vectors == 0)
        return;
    memset(msix->table, 0, vu_msix_table_size(msix));
    memset(msix->pending, 0, pending_words(msix->vectors) * sizeof(*msix->pending));
    for (uint32_t vector = 0; vector < msix->vectors; vector++)
        put_le32(&msix->table[vector * PCI_MSIX_ENTRY_SIZE + PCI_MSIX_ENTRY_VECTOR_CTRL],
                 PCI_MSIX_ENTRY_CTRL_MASKBIT);
}

size_t vu_msix_table_size(const struct vu_msix *msix)
{
    return (size_t)msix->vectors * PCI_MSIX_ENTRY_SIZE;
}

size_t vu_msix_pba_size(const struct vu_msix *msix)
{
    return pending_words(msix->vectors) * sizeof(uint64_t);
}

static bool access_valid(uint64_t offset, const void *data, uint32_t count, size_t size)
{
    if (data == NULL || (count != 4 && count != 8))
        return false;
    if (offset % count != 0)
        return false;
    return offset < size && count <= size - offset;
}

int vu_msix_table_read(const struct vu_msix *msix, uint64_t offset, void *data, uint32_t count)
{
    if (!access_valid(offset, data, count, vu_msix_table_size(msix)))
        return -EINVAL;
    memcpy(data, &msix->table[offset], count);
    return 0;
}

/* Mask of the bits software may write in the dword at `offset` inside an entry. */
static uint32_t entry_writable_bits(uint64_t offset_in_entry)
{
    switch (offset_in_entry) {
    case PCI_MSIX_ENTRY_LOWER_ADDR:
        return ENTRY_ADDRESS_WRITABLE;
    case PCI_MSIX_ENTRY_VECTOR_CTRL:
        return PCI_MSIX_ENTRY_CTRL_MASKBIT;
    default:
        return 0xffffffffu;
    }
}

int vu_msix_table_write(struct vu_msix *msix, uint64_t offset, const void *data, uint32_t count)
{
    const uint8_t *input = data;

    if (!access_valid(offset, data, count, vu_msix_table_size(msix)))
        return -EINVAL;
    /* Aligned accesses of 4 or 8 bytes never cross an entry; split them into dwords. */
    for (uint32_t done = 0; done < count; done += 4) {
        uint64_t at = offset + done;
        uint32_t writable = entry_writable_bits(at % PCI_MSIX_ENTRY_SIZE);

        put_le32(&msix->table[at], get_le32(&input[done]) & writable);
    }
    msix->client_writes_table = true;
    return 0;
}

int vu_msix_pba_read(const struct vu_msix *msix, uint64_t offset, void *data, uint32_t count)
{
    uint8_t *output = data;

    if (!access_valid(offset, data, count, vu_msix_pba_size(msix)))
        return -EINVAL;
    for (uint32_t i = 0; i < count; i++) {
        uint64_t byte = offset + i;
        uint64_t word = msix->pending[byte / sizeof(uint64_t)];

        output[i] = (uint8_t)(word >> (8 * (byte % sizeof(uint64_t))));
    }
    return 0;
}

int vu_msix_pba_write(struct vu_msix *msix, uint64_t offset, const void *data, uint32_t count)
{
    if (!access_valid(offset, data, count, vu_msix_pba_size(msix)))
        return -EINVAL;
    return 0;
}

bool vu_msix_vector_masked(const struct vu_msix *msix, uint32_t vector)
{
    if (vector >= msix->vectors)
        return true;
    return (get_le32(&msix->table[vector * PCI_MSIX_ENTRY_SIZE + PCI_MSIX_ENTRY_VECTOR_CTRL]) &
            PCI_MSIX_ENTRY_CTRL_MASKBIT) != 0;
}

bool vu_msix_client_writes_table(const struct vu_msix *msix)
{
    return msix->client_writes_table;
}

bool vu_msix_vector_held(const struct vu_msix *msix, uint32_t vector)
{
    return msix->client_writes_table && vu_msix_vector_masked(msix, vector);
}

void vu_msix_forget_client(struct vu_msix *msix)
{
    msix->client_writes_table = false;
}

void vu_msix_set_pending(struct vu_msix *msix, uint32_t vector, bool pending)
{
    uint64_t bit;

    if (vector >= msix->vectors)
        return;
    bit = UINT64_C(1) << (vector % PENDING_WORD_BITS);
    if (pending)
        msix->pending[vector / PENDING_WORD_BITS] |= bit;
    else
        msix->pending[vector / PENDING_WORD_BITS] &= ~bit;
}

bool vu_msix_pending(const struct vu_msix *msix, uint32_t vector)
{
    if (vector >= msix->vectors)
        return false;
    return (msix->pending[vector / PENDING_WORD_BITS] >> (vector % PENDING_WORD_BITS)) & 1;
}

int vu_msix_message(const struct vu_msix *msix, uint32_t vector, uint64_t *address, uint32_t *data)
{
    const uint8_t *entry;

    if (vector >= msix->vectors)
        return -EINVAL;
    entry = &msix->table[(size_t)vector * PCI_MSIX_ENTRY_SIZE];
    if (address != NULL)
        *address = (uint64_t)get_le32(&entry[PCI_MSIX_ENTRY_UPPER_ADDR]) << 32 |
                   get_le32(&entry[PCI_MSIX_ENTRY_LOWER_ADDR]);
    if (data != NULL)
        *data = get_le32(&entry[PCI_MSIX_ENTRY_DATA]);
    return 0;
}
