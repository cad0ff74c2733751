/*
 * PCI configuration space emulation: builds the type-0 header and capabilities from a
 * plugin's declarations, then serves client accesses through per-bit writable and RW1C
 * masks. See pci_config.h for the life cycle.
 */
#include "pci_config.h"

#include <errno.h>
#include <string.h>

/* Command register bits every device implements; I/O and memory enables depend on BARs. */
#define COMMAND_ALWAYS_WRITABLE                                                                    \
    (PCI_COMMAND_MASTER | PCI_COMMAND_PARITY | PCI_COMMAND_SERR | PCI_COMMAND_INTX_DISABLE)
#define STATUS_ERROR_BITS                                                                          \
    (PCI_STATUS_PARITY | PCI_STATUS_SIG_TARGET_ABORT | PCI_STATUS_REC_TARGET_ABORT |               \
     PCI_STATUS_REC_MASTER_ABORT | PCI_STATUS_SIG_SYSTEM_ERROR | PCI_STATUS_DETECTED_PARITY)

#define PM_VERSION           3u
#define PM_STATE_D1          1u
#define PM_STATE_D2          2u
#define MSI_MME_SHIFT        4u
#define MSI_MMC_SHIFT        1u
#define MSI_MAX_VECTORS_LOG2 5u

/*
 * The Express endpoint we present: 128-byte payloads, role-based error reporting (required
 * since PCIe 1.1), no FLR (a whole-device reset arrives as DEVICE_RESET instead), one lane at
 * 2.5 GT/s and no ASPM, because link properties mean nothing to an emulated function.
 */
#define EXPRESS_VERSION 2u
#define EXPRESS_DEVCAP  (PCI_EXP_DEVCAP_RBER | PCI_EXP_DEVCAP_L0S | PCI_EXP_DEVCAP_L1)
/* Spec defaults: relaxed ordering and no snoop enabled, 512-byte read requests. */
#define EXPRESS_DEVCTL_DEFAULT                                                                     \
    (PCI_EXP_DEVCTL_RELAX_EN | PCI_EXP_DEVCTL_NOSNOOP_EN | PCI_EXP_DEVCTL_READRQ_512B)
#define EXPRESS_DEVCTL_WRITABLE                                                                    \
    (PCI_EXP_DEVCTL_CERE | PCI_EXP_DEVCTL_NFERE | PCI_EXP_DEVCTL_FERE | PCI_EXP_DEVCTL_URRE |      \
     PCI_EXP_DEVCTL_RELAX_EN | PCI_EXP_DEVCTL_PAYLOAD | PCI_EXP_DEVCTL_NOSNOOP_EN |                \
     PCI_EXP_DEVCTL_READRQ)
#define EXPRESS_DEVSTA_RW1C                                                                        \
    (PCI_EXP_DEVSTA_CED | PCI_EXP_DEVSTA_NFED | PCI_EXP_DEVSTA_FED | PCI_EXP_DEVSTA_URD)
#define EXPRESS_LINK_WIDTH_X1 (1u << 4)
#define EXPRESS_LNKCAP        (PCI_EXP_LNKCAP_SLS_2_5GB | EXPRESS_LINK_WIDTH_X1)
/* Link Disable and Retrain Link are reserved for endpoints; the rest need unsupported
 * features (clock PM, autonomous width, bandwidth notification). */
#define EXPRESS_LNKCTL_WRITABLE                                                                    \
    (PCI_EXP_LNKCTL_ASPMC | PCI_EXP_LNKCTL_RCB | PCI_EXP_LNKCTL_CCC | PCI_EXP_LNKCTL_ES)
#define EXPRESS_LNKSTA          (PCI_EXP_LNKSTA_CLS_2_5GB | PCI_EXP_LNKSTA_NLW_X1)
#define EXPRESS_LNKCAP2         PCI_EXP_LNKCAP2_SLS_2_5GB
#define EXPRESS_LNKCTL2_DEFAULT PCI_EXP_LNKCTL2_TLS_2_5GT

static uint32_t get_le(const uint8_t *bytes, uint32_t width)
{
    uint32_t value = 0;

    for (uint32_t i = 0; i < width; i++)
        value |= (uint32_t)bytes[i] << (8 * i);
    return value;
}

static void put_le(uint8_t *bytes, uint32_t width, uint32_t value)
{
    for (uint32_t i = 0; i < width; i++)
        bytes[i] = (uint8_t)(value >> (8 * i));
}

static uint32_t get_register(const struct vu_pci_config *config, uint32_t offset, uint32_t width)
{
    return get_le(&config->bytes[offset], width);
}

/* Sets a register's contents and both of its masks at once. */
static void define_register(struct vu_pci_config *config, uint32_t offset, uint32_t width,
                            uint32_t value, uint32_t writable, uint32_t write_one_to_clear)
{
    put_le(&config->bytes[offset], width, value);
    put_le(&config->writable[offset], width, writable);
    put_le(&config->write_one_to_clear[offset], width, write_one_to_clear);
}

static void set_register_bits(struct vu_pci_config *config, uint32_t offset, uint32_t width,
                              uint32_t bits, bool on)
{
    uint32_t value = get_register(config, offset, width);

    put_le(&config->bytes[offset], width, on ? value | bits : value & ~bits);
}

static void allow_writes(struct vu_pci_config *config, uint32_t offset, uint32_t width,
                         uint32_t bits)
{
    uint32_t writable = get_le(&config->writable[offset], width);

    put_le(&config->writable[offset], width, writable | bits);
}

static bool is_power_of_two(uint64_t value)
{
    return value != 0 && (value & (value - 1)) == 0;
}

static uint32_t log2_of_power_of_two(uint64_t value)
{
    return (uint32_t)__builtin_ctzll(value);
}

static bool identity_valid(const struct vfio_userd_pci_identity *identity)
{
    /* Linux takes vendor 0000h or FFFFh for an empty slot and would never see the device. */
    return identity != NULL && identity->vendor_id != 0 && identity->vendor_id != 0xffff &&
           identity->class_code <= 0xffffff && identity->interrupt_pin <= 4;
}

void vu_pci_config_init(struct vu_pci_config *config,
                        const struct vfio_userd_pci_identity *identity)
{
    memset(config, 0, sizeof(*config));
    config->size = VU_PCI_CONFIG_SIZE;
    config->capability_end = VU_PCI_CAPABILITY_START;

    define_register(config, PCI_COMMAND, 2, 0, COMMAND_ALWAYS_WRITABLE, 0);
    define_register(config, PCI_STATUS, 2, 0, 0, STATUS_ERROR_BITS);
    define_register(config, PCI_CACHE_LINE_SIZE, 1, 0, 0xff, 0);
    define_register(config, PCI_LATENCY_TIMER, 1, 0, 0xff, 0);
    define_register(config, PCI_HEADER_TYPE, 1, PCI_HEADER_TYPE_NORMAL, 0, 0);
    define_register(config, PCI_INTERRUPT_LINE, 1, 0, 0xff, 0);

    if (identity != NULL)
        (void)vu_pci_config_set_identity(config, identity);
}

int vu_pci_config_set_identity(struct vu_pci_config *config,
                               const struct vfio_userd_pci_identity *identity)
{
    if (config->finalized)
        return -EBUSY;
    if (!identity_valid(identity))
        return -EINVAL;

    define_register(config, PCI_VENDOR_ID, 2, identity->vendor_id, 0, 0);
    define_register(config, PCI_DEVICE_ID, 2, identity->device_id, 0, 0);
    define_register(config, PCI_CLASS_REVISION, 4, identity->class_code << 8 | identity->revision,
                    0, 0);
    define_register(config, PCI_SUBSYSTEM_VENDOR_ID, 2, identity->subsystem_vendor_id, 0, 0);
    define_register(config, PCI_SUBSYSTEM_ID, 2, identity->subsystem_id, 0, 0);
    define_register(config, PCI_INTERRUPT_PIN, 1, identity->interrupt_pin, 0, 0);
    config->identity_set = true;
    return 0;
}

static int check_bar_size(uint64_t size, uint32_t flags)
{
    if (!is_power_of_two(size))
        return -EINVAL;
    if (flags & VFIO_USERD_BAR_IO) {
        if (flags & (VFIO_USERD_BAR_64BIT | VFIO_USERD_BAR_PREFETCHABLE))
            return -EINVAL;
        if (size < 4 || size > VU_PCI_IO_BAR_MAX_SIZE)
            return -EINVAL;
        return 0;
    }
    if (size < 16)
        return -EINVAL;
    /* A 32-bit BAR needs at least one writable address bit, or it sizes as unimplemented. */
    if (!(flags & VFIO_USERD_BAR_64BIT) && size > (UINT64_C(1) << 31))
        return -EINVAL;
    if (size > (UINT64_C(1) << 63))
        return -EINVAL;
    return 0;
}

static bool bar_declared(const struct vu_pci_config *config, uint32_t bar)
{
    return config->bar_size[bar] != 0 || config->bar_upper_half[bar];
}

int vu_pci_config_set_bar(struct vu_pci_config *config, uint32_t bar, uint64_t size, uint32_t flags)
{
    uint32_t offset = PCI_BASE_ADDRESS_0 + 4 * bar;
    uint64_t address_mask;
    uint32_t type_bits;
    bool is_64bit;
    int ret;

    if (config->finalized)
        return -EBUSY;
    if (bar >= VU_PCI_BAR_COUNT)
        return -EINVAL;
    flags &= VU_PCI_BAR_KIND_FLAGS;
    ret = check_bar_size(size, flags);
    if (ret < 0)
        return ret;
    is_64bit = (flags & VFIO_USERD_BAR_64BIT) != 0;
    if (is_64bit && bar == VU_PCI_BAR_COUNT - 1)
        return -EINVAL;
    if (bar_declared(config, bar) || (is_64bit && bar_declared(config, bar + 1)))
        return -EEXIST;

    address_mask = ~(size - 1);
    if (flags & VFIO_USERD_BAR_IO) {
        type_bits = PCI_BASE_ADDRESS_SPACE_IO;
        define_register(config, offset, 4, type_bits,
                        (uint32_t)address_mask & (uint32_t)PCI_BASE_ADDRESS_IO_MASK, 0);
        allow_writes(config, PCI_COMMAND, 2, PCI_COMMAND_IO);
    } else {
        type_bits = is_64bit ? PCI_BASE_ADDRESS_MEM_TYPE_64 : PCI_BASE_ADDRESS_MEM_TYPE_32;
        if (flags & VFIO_USERD_BAR_PREFETCHABLE)
            type_bits |= PCI_BASE_ADDRESS_MEM_PREFETCH;
        define_register(config, offset, 4, type_bits,
                        (uint32_t)address_mask & (uint32_t)PCI_BASE_ADDRESS_MEM_MASK, 0);
        if (is_64bit) {
            define_register(config, offset + 4, 4, 0, (uint32_t)(address_mask >> 32), 0);
            config->bar_upper_half[bar + 1] = true;
        }
        allow_writes(config, PCI_COMMAND, 2, PCI_COMMAND_MEMORY);
    }
    config->bar_size[bar] = size;
    config->bar_flags[bar] = flags;
    return 0;
}

int vu_pci_config_set_rom(struct vu_pci_config *config, uint64_t size)
{
    if (config->finalized)
        return -EBUSY;
    if (!is_power_of_two(size) || size < VU_PCI_ROM_MIN_SIZE || size > VU_PCI_ROM_MAX_SIZE)
        return -EINVAL;
    if (config->rom_size != 0)
        return -EEXIST;

    define_register(config, PCI_ROM_ADDRESS, 4, 0,
                    ((uint32_t) ~(size - 1) & PCI_ROM_ADDRESS_MASK) | PCI_ROM_ADDRESS_ENABLE, 0);
    allow_writes(config, PCI_COMMAND, 2, PCI_COMMAND_MEMORY);
    config->rom_size = size;
    return 0;
}

/*
 * Reserves `length` bytes for a capability with the given ID, links it at the end of the
 * list and returns its offset, or -ENOSPC.
 */
static int append_capability(struct vu_pci_config *config, uint8_t id, uint32_t length)
{
    uint32_t offset = config->capability_end;

    if (length > VU_PCI_CONFIG_SIZE - offset)
        return -ENOSPC;

    if (config->last_capability == 0) {
        define_register(config, PCI_CAPABILITY_LIST, 1, offset, 0, 0);
        set_register_bits(config, PCI_STATUS, 2, PCI_STATUS_CAP_LIST, true);
    } else {
        define_register(config, config->last_capability + PCI_CAP_LIST_NEXT, 1, offset, 0, 0);
    }
    define_register(config, offset + PCI_CAP_LIST_ID, 1, id, 0, 0);
    define_register(config, offset + PCI_CAP_LIST_NEXT, 1, 0, 0, 0);
    config->last_capability = (uint8_t)offset;
    config->capability_end = (offset + length + 3) & ~3u;
    return (int)offset;
}

int vu_pci_config_add_power_management(struct vu_pci_config *config)
{
    int offset;

    if (config->finalized)
        return -EBUSY;
    if (config->power_management_offset != 0)
        return -EEXIST;
    offset = append_capability(config, PCI_CAP_ID_PM, PCI_PM_SIZEOF);
    if (offset < 0)
        return offset;

    /* Only D0 and D3hot, no PME; leaving D3hot keeps the device's state (No_Soft_Reset),
     * because the host never sees the transition as a reset. */
    define_register(config, offset + PCI_PM_PMC, 2, PM_VERSION, 0, 0);
    define_register(config, offset + PCI_PM_CTRL, 2, PCI_PM_CTRL_NO_SOFT_RESET,
                    PCI_PM_CTRL_STATE_MASK, 0);
    config->power_management_offset = (uint8_t)offset;
    return 0;
}

int vu_pci_config_add_msi(struct vu_pci_config *config, uint32_t vectors, bool per_vector_mask)
{
    uint32_t control;
    int offset;

    if (config->finalized)
        return -EBUSY;
    if (!is_power_of_two(vectors) || vectors > VU_PCI_MSI_MAX_VECTORS)
        return -EINVAL;
    if (config->msi_offset != 0)
        return -EEXIST;
    offset = append_capability(config, PCI_CAP_ID_MSI,
                               per_vector_mask ? VU_PCI_MSI_MASKED_SIZE : VU_PCI_MSI_SIZE);
    if (offset < 0)
        return offset;

    control = log2_of_power_of_two(vectors) << MSI_MMC_SHIFT | PCI_MSI_FLAGS_64BIT;
    if (per_vector_mask)
        control |= PCI_MSI_FLAGS_MASKBIT;
    define_register(config, offset + PCI_MSI_FLAGS, 2, control,
                    PCI_MSI_FLAGS_ENABLE | PCI_MSI_FLAGS_QSIZE, 0);
    /* The address is dword aligned: its two low bits are hardwired to zero. */
    define_register(config, offset + PCI_MSI_ADDRESS_LO, 4, 0, ~3u, 0);
    define_register(config, offset + PCI_MSI_ADDRESS_HI, 4, 0, ~0u, 0);
    /* No extended message data: the upper half of the data dword stays reserved. */
    define_register(config, offset + PCI_MSI_DATA_64, 2, 0, 0xffff, 0);
    if (per_vector_mask) {
        uint32_t implemented = vectors == 32 ? ~0u : (1u << vectors) - 1;

        define_register(config, offset + PCI_MSI_MASK_64, 4, 0, implemented, 0);
        define_register(config, offset + PCI_MSI_PENDING_64, 4, 0, 0, 0);
    }
    config->msi_offset = (uint8_t)offset;
    config->msi_vectors = vectors;
    config->msi_per_vector_mask = per_vector_mask;
    return 0;
}

int vu_pci_config_add_msix(struct vu_pci_config *config, uint32_t vectors, uint32_t table_bar,
                           uint32_t table_offset, uint32_t pba_bar, uint32_t pba_offset)
{
    int offset;

    if (config->finalized)
        return -EBUSY;
    if (vectors == 0 || vectors > VU_PCI_MSIX_MAX_VECTORS)
        return -EINVAL;
    if (table_bar >= VU_PCI_BAR_COUNT || pba_bar >= VU_PCI_BAR_COUNT)
        return -EINVAL;
    if ((table_offset & PCI_MSIX_TABLE_BIR) != 0 || (pba_offset & PCI_MSIX_PBA_BIR) != 0)
        return -EINVAL;
    if (config->msix_offset != 0)
        return -EEXIST;
    offset = append_capability(config, PCI_CAP_ID_MSIX, PCI_CAP_MSIX_SIZEOF);
    if (offset < 0)
        return offset;

    define_register(config, offset + PCI_MSIX_FLAGS, 2, vectors - 1,
                    PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL, 0);
    define_register(config, offset + PCI_MSIX_TABLE, 4, table_offset | table_bar, 0, 0);
    define_register(config, offset + PCI_MSIX_PBA, 4, pba_offset | pba_bar, 0, 0);
    config->msix_offset = (uint8_t)offset;
    config->msix_vectors = vectors;
    config->msix_table_bar = table_bar;
    config->msix_table_offset = table_offset;
    config->msix_pba_bar = pba_bar;
    config->msix_pba_offset = pba_offset;
    return 0;
}

int vu_pci_config_add_express(struct vu_pci_config *config)
{
    int offset;

    if (config->finalized)
        return -EBUSY;
    if (config->express_offset != 0)
        return -EEXIST;
    offset = append_capability(config, PCI_CAP_ID_EXP, VU_PCI_EXPRESS_CAPABILITY_SIZE);
    if (offset < 0)
        return offset;

    define_register(config, offset + PCI_EXP_FLAGS, 2, EXPRESS_VERSION | PCI_EXP_TYPE_ENDPOINT << 4,
                    0, 0);
    define_register(config, offset + PCI_EXP_DEVCAP, 4, EXPRESS_DEVCAP, 0, 0);
    define_register(config, offset + PCI_EXP_DEVCTL, 2, EXPRESS_DEVCTL_DEFAULT,
                    EXPRESS_DEVCTL_WRITABLE, 0);
    define_register(config, offset + PCI_EXP_DEVSTA, 2, 0, 0, EXPRESS_DEVSTA_RW1C);
    define_register(config, offset + PCI_EXP_LNKCAP, 4, EXPRESS_LNKCAP, 0, 0);
    define_register(config, offset + PCI_EXP_LNKCTL, 2, 0, EXPRESS_LNKCTL_WRITABLE, 0);
    define_register(config, offset + PCI_EXP_LNKSTA, 2, EXPRESS_LNKSTA, 0, 0);
    define_register(config, offset + PCI_EXP_LNKCAP2, 4, EXPRESS_LNKCAP2, 0, 0);
    define_register(config, offset + PCI_EXP_LNKCTL2, 2, EXPRESS_LNKCTL2_DEFAULT,
                    PCI_EXP_LNKCTL2_TLS, 0);
    /* The PCIe base spec hardwires the latency timer of a PCI Express function to zero. */
    define_register(config, PCI_LATENCY_TIMER, 1, 0, 0, 0);
    config->express_offset = (uint8_t)offset;
    config->size = VU_PCI_EXPRESS_CONFIG_SIZE;
    return 0;
}

int vu_pci_config_add_vendor_specific(struct vu_pci_config *config, const void *data,
                                      uint8_t length)
{
    uint32_t total = VU_PCI_VENDOR_SPECIFIC_HEADER_SIZE + (uint32_t)length;
    int offset;

    if (config->finalized)
        return -EBUSY;
    if (length != 0 && data == NULL)
        return -EINVAL;
    /* The length byte counts the header too, so it must fit in eight bits. */
    if (total > UINT8_MAX)
        return -EINVAL;
    offset = append_capability(config, PCI_CAP_ID_VNDR, total);
    if (offset < 0)
        return offset;

    define_register(config, offset + PCI_CAP_FLAGS, 1, total, 0, 0);
    if (length != 0)
        memcpy(&config->bytes[offset + VU_PCI_VENDOR_SPECIFIC_HEADER_SIZE], data, length);
    return 0;
}

/* The memory BAR a BIR names, as the size of the BAR, or 0 when it is not one. */
static uint64_t msix_bar_size(const struct vu_pci_config *config, uint32_t bar)
{
    if (config->bar_flags[bar] & VFIO_USERD_BAR_IO)
        return 0;
    return config->bar_size[bar];
}

static int check_msix(const struct vu_pci_config *config)
{
    uint64_t table_size = (uint64_t)config->msix_vectors * PCI_MSIX_ENTRY_SIZE;
    uint64_t pba_size = ((uint64_t)config->msix_vectors + 63) / 64 * 8;
    uint64_t table_bar_size = msix_bar_size(config, config->msix_table_bar);
    uint64_t pba_bar_size = msix_bar_size(config, config->msix_pba_bar);
    uint64_t table_end = config->msix_table_offset + table_size;
    uint64_t pba_end = config->msix_pba_offset + pba_size;

    if (config->msix_offset == 0)
        return 0;
    if (table_end > table_bar_size || pba_end > pba_bar_size)
        return -EINVAL;
    if (config->msix_table_bar == config->msix_pba_bar && config->msix_table_offset < pba_end &&
        config->msix_pba_offset < table_end)
        return -EINVAL;
    return 0;
}

int vu_pci_config_finalize(struct vu_pci_config *config)
{
    int ret;

    if (config->finalized)
        return -EBUSY;
    if (!config->identity_set)
        return -EINVAL;
    ret = check_msix(config);
    if (ret < 0)
        return ret;

    memcpy(config->reset_bytes, config->bytes, sizeof(config->reset_bytes));
    config->finalized = true;
    return 0;
}

static bool access_in_range(const struct vu_pci_config *config, uint64_t offset, const void *data,
                            uint32_t count)
{
    return data != NULL && count != 0 && offset < config->size && count <= config->size - offset;
}

int vu_pci_config_read(const struct vu_pci_config *config, uint64_t offset, void *data,
                       uint32_t count)
{
    if (!access_in_range(config, offset, data, count))
        return -EINVAL;
    memcpy(data, &config->bytes[offset], count);
    return 0;
}

static bool write_touches(uint64_t offset, uint32_t count, uint32_t byte)
{
    return byte >= offset && byte - offset < count;
}

/*
 * Rules a plain bit mask cannot express, applied after the masked write: a power state the
 * function does not support is discarded (PCI PM 1.2 5.4.1), and Multiple Message Enable
 * never exceeds what the capability offers.
 */
static void apply_write_rules(struct vu_pci_config *config, uint64_t offset, uint32_t count,
                              uint32_t old_power_state)
{
    uint32_t pm_control = config->power_management_offset + PCI_PM_CTRL;
    uint32_t msi_control = config->msi_offset + PCI_MSI_FLAGS;

    if (config->power_management_offset != 0 && write_touches(offset, count, pm_control)) {
        uint32_t state = config->bytes[pm_control] & PCI_PM_CTRL_STATE_MASK;

        if (state == PM_STATE_D1 || state == PM_STATE_D2)
            config->bytes[pm_control] =
                (uint8_t)((config->bytes[pm_control] & ~PCI_PM_CTRL_STATE_MASK) | old_power_state);
    }
    if (config->msi_offset != 0 && write_touches(offset, count, msi_control)) {
        uint32_t control = get_register(config, msi_control, 2);
        uint32_t capable = (control & PCI_MSI_FLAGS_QMASK) >> MSI_MMC_SHIFT;
        uint32_t enabled = (control & PCI_MSI_FLAGS_QSIZE) >> MSI_MME_SHIFT;

        if (enabled > capable) {
            control = (control & ~PCI_MSI_FLAGS_QSIZE) | capable << MSI_MME_SHIFT;
            put_le(&config->bytes[msi_control], 2, control);
        }
    }
}

int vu_pci_config_write(struct vu_pci_config *config, uint64_t offset, const void *data,
                        uint32_t count)
{
    const uint8_t *input = data;
    uint32_t old_power_state;

    if (!access_in_range(config, offset, data, count))
        return -EINVAL;
    old_power_state = vu_pci_config_power_state(config);

    for (uint32_t i = 0; i < count; i++) {
        uint64_t at = offset + i;
        uint8_t writable = config->writable[at];
        uint8_t clear = config->write_one_to_clear[at] & input[i];

        config->bytes[at] =
            (uint8_t)(((config->bytes[at] & ~writable) | (input[i] & writable)) & ~clear);
    }
    apply_write_rules(config, offset, count, old_power_state);
    return 0;
}

void vu_pci_config_reset(struct vu_pci_config *config)
{
    if (!config->finalized)
        return;
    memcpy(config->bytes, config->reset_bytes, sizeof(config->bytes));
}

static uint32_t command(const struct vu_pci_config *config)
{
    return get_register(config, PCI_COMMAND, 2);
}

bool vu_pci_config_intx_disabled(const struct vu_pci_config *config)
{
    return (command(config) & PCI_COMMAND_INTX_DISABLE) != 0;
}

bool vu_pci_config_bus_master_enabled(const struct vu_pci_config *config)
{
    return (command(config) & PCI_COMMAND_MASTER) != 0;
}

bool vu_pci_config_memory_enabled(const struct vu_pci_config *config)
{
    return (command(config) & PCI_COMMAND_MEMORY) != 0;
}

bool vu_pci_config_io_enabled(const struct vu_pci_config *config)
{
    return (command(config) & PCI_COMMAND_IO) != 0;
}

void vu_pci_config_set_intx_status(struct vu_pci_config *config, bool asserted)
{
    set_register_bits(config, PCI_STATUS, 2, PCI_STATUS_INTERRUPT, asserted);
}

uint32_t vu_pci_config_power_state(const struct vu_pci_config *config)
{
    if (config->power_management_offset == 0)
        return 0;
    return get_register(config, config->power_management_offset + PCI_PM_CTRL, 2) &
           PCI_PM_CTRL_STATE_MASK;
}

bool vu_pci_config_msi_enabled(const struct vu_pci_config *config, uint32_t *enabled_vectors)
{
    uint32_t control;
    bool enabled;

    if (config->msi_offset == 0) {
        if (enabled_vectors != NULL)
            *enabled_vectors = 0;
        return false;
    }
    control = get_register(config, config->msi_offset + PCI_MSI_FLAGS, 2);
    enabled = (control & PCI_MSI_FLAGS_ENABLE) != 0;
    if (enabled_vectors != NULL)
        *enabled_vectors = enabled ? 1u << ((control & PCI_MSI_FLAGS_QSIZE) >> MSI_MME_SHIFT) : 0;
    return enabled;
}

bool vu_pci_config_msi_vector_masked(const struct vu_pci_config *config, uint32_t vector)
{
    if (config->msi_offset == 0 || vector >= config->msi_vectors)
        return true;
    if (!config->msi_per_vector_mask)
        return false;
    return (get_register(config, config->msi_offset + PCI_MSI_MASK_64, 4) >> vector) & 1;
}

int vu_pci_config_msi_set_pending(struct vu_pci_config *config, uint32_t vector, bool pending)
{
    if (config->msi_offset == 0 || !config->msi_per_vector_mask || vector >= config->msi_vectors)
        return -EINVAL;
    set_register_bits(config, config->msi_offset + PCI_MSI_PENDING_64, 4, 1u << vector, pending);
    return 0;
}

static uint32_t msix_control(const struct vu_pci_config *config)
{
    if (config->msix_offset == 0)
        return 0;
    return get_register(config, config->msix_offset + PCI_MSIX_FLAGS, 2);
}

bool vu_pci_config_msix_enabled(const struct vu_pci_config *config)
{
    return (msix_control(config) & PCI_MSIX_FLAGS_ENABLE) != 0;
}

bool vu_pci_config_msix_function_masked(const struct vu_pci_config *config)
{
    return (msix_control(config) & PCI_MSIX_FLAGS_MASKALL) != 0;
}
