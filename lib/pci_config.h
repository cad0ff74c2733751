/*
 * PCI configuration space emulation for one device: a type-0 header, BARs and the expansion
 * ROM BAR with sizing masks, and the capabilities a plugin may declare (power management,
 * MSI, MSI-X, PCI Express endpoint, vendor-specific). Pure logic over an inline byte array,
 * so the device engine can serve REGION_READ/WRITE of the config region with no allocation
 * and so every rule can be unit-tested without sockets.
 *
 * Life cycle: vu_pci_config_init(), then the declaration calls in the order the plugin makes
 * them (capabilities are chained in that order), then vu_pci_config_finalize(), which
 * validates the whole and takes the snapshot vu_pci_config_reset() restores. Declarations
 * after finalize fail with -EBUSY.
 *
 * Registers are little-endian, as on the bus; all offsets are from the start of config space.
 */
#ifndef VU_PCI_CONFIG_H
#define VU_PCI_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <linux/pci_regs.h>
#include <vfio-userd/plugin.h>

#define VU_PCI_CONFIG_SIZE         256u
#define VU_PCI_EXPRESS_CONFIG_SIZE 4096u
#define VU_PCI_BAR_COUNT           6u
/* Where the capability list starts: right after the 64-byte type-0 header. */
#define VU_PCI_CAPABILITY_START 0x40u
/* Capability sizes as laid out here (MSI is always 64-bit capable). */
#define VU_PCI_MSI_SIZE        0x10u
#define VU_PCI_MSI_MASKED_SIZE 0x18u
/* The whole version 2 structure, including the Slot 2 registers an endpoint leaves zero. */
#define VU_PCI_EXPRESS_CAPABILITY_SIZE     0x3cu
#define VU_PCI_VENDOR_SPECIFIC_HEADER_SIZE 3u
#define VU_PCI_MSI_MAX_VECTORS             32u
#define VU_PCI_MSIX_MAX_VECTORS            2048u
/* PCI 3.0 6.2.5: an I/O BAR claims at most 256 bytes, an expansion ROM at most 16 MiB. */
#define VU_PCI_IO_BAR_MAX_SIZE 256u
#define VU_PCI_ROM_MIN_SIZE    2048u
#define VU_PCI_ROM_MAX_SIZE    (16u << 20)
/* The BAR kind bits of struct vfio_userd_region.flags; other bits are ignored here. */
#define VU_PCI_BAR_KIND_FLAGS                                                                      \
    (VFIO_USERD_BAR_IO | VFIO_USERD_BAR_64BIT | VFIO_USERD_BAR_PREFETCHABLE)

struct vu_pci_config {
    uint8_t bytes[VU_PCI_EXPRESS_CONFIG_SIZE];              /* current contents */
    uint8_t writable[VU_PCI_EXPRESS_CONFIG_SIZE];           /* per bit: the client may write */
    uint8_t write_one_to_clear[VU_PCI_EXPRESS_CONFIG_SIZE]; /* per bit: RW1C */
    uint8_t reset_bytes[VU_PCI_EXPRESS_CONFIG_SIZE];        /* snapshot taken by finalize */
    uint32_t size; /* VU_PCI_CONFIG_SIZE, or VU_PCI_EXPRESS_CONFIG_SIZE with Express */

    uint64_t bar_size[VU_PCI_BAR_COUNT];   /* 0: not implemented (or upper half of a 64-bit) */
    uint32_t bar_flags[VU_PCI_BAR_COUNT];  /* VFIO_USERD_BAR_* kind bits */
    bool bar_upper_half[VU_PCI_BAR_COUNT]; /* taken by the 64-bit BAR below it */
    uint64_t rom_size;                     /* 0: no expansion ROM */

    /* Offsets of the capabilities in config space; 0 = absent. */
    uint8_t power_management_offset;
    uint8_t msi_offset;
    uint8_t msix_offset;
    uint8_t express_offset;
    uint32_t msi_vectors;
    bool msi_per_vector_mask;
    uint32_t msix_vectors;
    uint32_t msix_table_bar;
    uint32_t msix_table_offset;
    uint32_t msix_pba_bar;
    uint32_t msix_pba_offset;

    uint32_t capability_end; /* first free byte for the next capability */
    uint8_t last_capability; /* offset of the capability whose next pointer to patch */
    bool identity_set;       /* a valid identity was written */
    bool finalized;
};

/*
 * Empty type-0 header. A non-NULL identity is applied as by vu_pci_config_set_identity();
 * since this cannot fail, an invalid identity is not applied (finalize then refuses the
 * config), so callers who need the reason call vu_pci_config_set_identity() themselves.
 */
void vu_pci_config_init(struct vu_pci_config *config,
                        const struct vfio_userd_pci_identity *identity);
/* -EINVAL for vendor ID 0000h/FFFFh, a class code wider than 24 bits or a pin above 4. */
int vu_pci_config_set_identity(struct vu_pci_config *config,
                               const struct vfio_userd_pci_identity *identity);
/*
 * Declares BAR `bar` of `size` bytes. `flags` may be struct vfio_userd_region.flags as is:
 * only VU_PCI_BAR_KIND_FLAGS are looked at. Memory BARs: a power of two >= 16 bytes,
 * <= 2 GiB when 32-bit (a 4 GiB 32-bit BAR would size as unimplemented); a 64-bit BAR takes
 * bar + 1 too. I/O BARs: a power of two of 4..256 bytes. -EEXIST when the BAR (or the upper
 * half a 64-bit BAR needs) is already declared.
 */
int vu_pci_config_set_bar(struct vu_pci_config *config, uint32_t bar, uint64_t size,
                          uint32_t flags);
/* An expansion ROM of a power-of-two size, 2 KiB..16 MiB. */
int vu_pci_config_set_rom(struct vu_pci_config *config, uint64_t size);
/*
 * Capabilities, chained from 0x34 in call order at dword-aligned offsets from 0x40.
 * -ENOSPC when the 256-byte space runs out, -EEXIST when added twice (vendor-specific
 * capabilities excepted).
 */
int vu_pci_config_add_power_management(struct vu_pci_config *config);
/* vectors: 1, 2, 4, 8, 16 or 32. */
int vu_pci_config_add_msi(struct vu_pci_config *config, uint32_t vectors, bool per_vector_mask);
/* vectors: 1..2048; offsets 8-byte aligned (the low 3 bits hold the BIR). The BARs are
 * checked by finalize, so the BARs may be declared after this call. */
int vu_pci_config_add_msix(struct vu_pci_config *config, uint32_t vectors, uint32_t table_bar,
                           uint32_t table_offset, uint32_t pba_bar, uint32_t pba_offset);
/* A version 2 Express endpoint capability; config space grows to 4 KiB with an empty
 * extended capability list (a zero header at 0x100). */
int vu_pci_config_add_express(struct vu_pci_config *config);
/* `data` (`length` bytes, may be NULL when length is 0) is the read-only body after the
 * 3-byte header; the length byte in config space counts the header too. */
int vu_pci_config_add_vendor_specific(struct vu_pci_config *config, const void *data,
                                      uint8_t length);
/*
 * Checks what single declarations could not: an identity is set; the MSI-X table and PBA lie
 * in declared memory BARs (the lower index of a 64-bit pair), inside them and apart. Then
 * snapshots the reset state. -EINVAL on a broken declaration, -EBUSY when called twice.
 */
int vu_pci_config_finalize(struct vu_pci_config *config);

/* Any access of 1..4096 bytes inside config->size; else -EINVAL. Writes go through the
 * writable and RW1C masks byte by byte. */
int vu_pci_config_read(const struct vu_pci_config *config, uint64_t offset, void *data,
                       uint32_t count);
int vu_pci_config_write(struct vu_pci_config *config, uint64_t offset, const void *data,
                        uint32_t count);
/* Restores the finalize snapshot; does nothing before finalize. */
void vu_pci_config_reset(struct vu_pci_config *config);

bool vu_pci_config_intx_disabled(const struct vu_pci_config *config);
bool vu_pci_config_bus_master_enabled(const struct vu_pci_config *config);
bool vu_pci_config_memory_enabled(const struct vu_pci_config *config);
bool vu_pci_config_io_enabled(const struct vu_pci_config *config);
/* Status bit 3, which the engine sets while it asserts INTx. */
void vu_pci_config_set_intx_status(struct vu_pci_config *config, bool asserted);
/* PMCSR power state (0 = D0 .. 3 = D3hot); 0 without the PM capability. */
uint32_t vu_pci_config_power_state(const struct vu_pci_config *config);
/* MSI enable; `enabled_vectors` (may be NULL) receives the count software allocated,
 * 1 << Multiple Message Enable, or 0 when disabled. */
bool vu_pci_config_msi_enabled(const struct vu_pci_config *config, uint32_t *enabled_vectors);
/* The per-vector mask bit; vectors the capability does not implement count as masked. */
bool vu_pci_config_msi_vector_masked(const struct vu_pci_config *config, uint32_t vector);
/* Sets or clears the read-only Pending bit of a maskable MSI vector; -EINVAL otherwise. */
int vu_pci_config_msi_set_pending(struct vu_pci_config *config, uint32_t vector, bool pending);
bool vu_pci_config_msix_enabled(const struct vu_pci_config *config);
bool vu_pci_config_msix_function_masked(const struct vu_pci_config *config);

#endif /* VU_PCI_CONFIG_H */
