/*
 * The MSI-X table and Pending Bit Array a device exposes inside its BARs, emulated by the
 * host so plugins only say how many vectors they have. The function-wide enable and mask
 * bits live in config space (pci_config.h).
 *
 * Whether this copy of the table holds the guest's vector masks depends on the client.
 * QEMU keeps the guest's table to itself (table writes never reach the server) and reads
 * only the PBA here; a client may instead forward the guest's table writes. So the table's
 * Mask bits hold a vector back only once the connected client has written the table (see
 * vu_msix_vector_held()); until then this copy keeps its reset state, every vector masked,
 * which says nothing about the guest. Pending bits are the server's in both cases.
 *
 * Offsets are relative to the start of the table or the PBA, not of the BAR.
 */
#ifndef VU_MSIX_H
#define VU_MSIX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VU_MSIX_MAX_VECTORS 2048u

struct vu_msix {
    uint32_t vectors;
    uint8_t *table;           /* vectors * PCI_MSIX_ENTRY_SIZE bytes, little-endian */
    uint64_t *pending;        /* one bit per vector, ceil(vectors / 64) words */
    bool client_writes_table; /* the client wrote the table since it connected */
};

/* vectors: 1..2048. Starts in the reset state. -EINVAL, -ENOMEM; on failure *msix is empty. */
int vu_msix_init(struct vu_msix *msix, uint32_t vectors);
/* Frees and empties; safe on an empty or already destroyed table. */
void vu_msix_destroy(struct vu_msix *msix);
/* Every entry zero with its Mask bit set, nothing pending (PCI 3.0 6.8.2.9). Whether the
 * client writes the table is kept: a reset does not change what kind of client it is. */
void vu_msix_reset(struct vu_msix *msix);
size_t vu_msix_table_size(const struct vu_msix *msix);
/* Whole quadwords: software may read the PBA 8 bytes at a time. */
size_t vu_msix_pba_size(const struct vu_msix *msix);
/*
 * Table and PBA accesses are 4 or 8 bytes, naturally aligned and inside the structure, as
 * the spec requires of software; anything else is -EINVAL. Reserved Vector Control bits and
 * the two low Message Address bits read as zero whatever was written.
 */
int vu_msix_table_read(const struct vu_msix *msix, uint64_t offset, void *data, uint32_t count);
int vu_msix_table_write(struct vu_msix *msix, uint64_t offset, const void *data, uint32_t count);
int vu_msix_pba_read(const struct vu_msix *msix, uint64_t offset, void *data, uint32_t count);
/* The spec leaves PBA writes undefined; a well-formed one is discarded and returns 0, so a
 * stray write neither corrupts pending state nor fails the client's request. */
int vu_msix_pba_write(struct vu_msix *msix, uint64_t offset, const void *data, uint32_t count);
/* The per-vector Mask bit; a vector outside the table counts as masked. */
bool vu_msix_vector_masked(const struct vu_msix *msix, uint32_t vector);
/* Whether the client wrote the table (a successful vu_msix_table_write()) since the last
 * vu_msix_forget_client(): then it forwards the guest's table writes. */
bool vu_msix_client_writes_table(const struct vu_msix *msix);
/* Whether the table holds `vector` back: its Mask bit, for a client that writes the
 * table; never for one that keeps the table itself. */
bool vu_msix_vector_held(const struct vu_msix *msix, uint32_t vector);
/* A client left: the next one has not written the table yet. Entries stay as they are. */
void vu_msix_forget_client(struct vu_msix *msix);
/* Out-of-range vectors are ignored (set) or never pending (query). */
void vu_msix_set_pending(struct vu_msix *msix, uint32_t vector, bool pending);
bool vu_msix_pending(const struct vu_msix *msix, uint32_t vector);
/* Message address and data of an entry, for a host that delivers MSI-X itself. */
int vu_msix_message(const struct vu_msix *msix, uint32_t vector, uint64_t *address, uint32_t *data);

#endif /* VU_MSIX_H */
