/*
 * PCI configuration space decoding; see pci_decode.h. Field layouts are those of the PCI
 * Local Bus 3.0, PCI Power Management 1.2 and PCI Express Base specifications, with the
 * register offsets of <linux/pci_regs.h>.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <linux/pci_regs.h>

#include "pci_decode.h"

#define PCI_CONFIG_SIZE         256u
#define PCI_EXPRESS_CONFIG_SIZE 4096u
#define PCI_EXTENDED_START      0x100u
/* A list longer than its space can hold loops even if no offset repeats exactly. */
#define PCI_MAX_CAPABILITIES     48u
#define PCI_MAX_EXTENDED         ((PCI_EXPRESS_CONFIG_SIZE - PCI_EXTENDED_START) / 4)
#define PCI_MSIX_TABLE_ENTRY     16u
#define PCI_CAP_VNDR_HEADER_SIZE 3u

const struct pci_decode_bit pci_decode_command_bits[] = {
    {PCI_COMMAND_IO, "io", "I/O"},
    {PCI_COMMAND_MEMORY, "memory", "Mem"},
    {PCI_COMMAND_MASTER, "bus_master", "BusMaster"},
    {PCI_COMMAND_SPECIAL, "special_cycles", "SpecCycle"},
    {PCI_COMMAND_INVALIDATE, "memory_write_invalidate", "MemWINV"},
    {PCI_COMMAND_VGA_PALETTE, "vga_palette_snoop", "VGASnoop"},
    {PCI_COMMAND_PARITY, "parity_error_response", "ParErr"},
    {PCI_COMMAND_WAIT, "stepping", "Stepping"},
    {PCI_COMMAND_SERR, "serr", "SERR"},
    {PCI_COMMAND_FAST_BACK, "fast_back_to_back", "FastB2B"},
    {PCI_COMMAND_INTX_DISABLE, "interrupt_disable", "DisINTx"},
    {0, NULL, NULL},
};

const struct pci_decode_bit pci_decode_status_bits[] = {
    {PCI_STATUS_INTERRUPT, "interrupt", "INTx"},
    {PCI_STATUS_CAP_LIST, "capabilities_list", "Cap"},
    {PCI_STATUS_66MHZ, "66mhz", "66MHz"},
    {PCI_STATUS_UDF, "udf", "UDF"},
    {PCI_STATUS_FAST_BACK, "fast_back_to_back", "FastB2B"},
    {PCI_STATUS_PARITY, "master_data_parity_error", "ParErr"},
    {PCI_STATUS_SIG_TARGET_ABORT, "signaled_target_abort", ">TAbort"},
    {PCI_STATUS_REC_TARGET_ABORT, "received_target_abort", "<TAbort"},
    {PCI_STATUS_REC_MASTER_ABORT, "received_master_abort", "<MAbort"},
    {PCI_STATUS_SIG_SYSTEM_ERROR, "signaled_system_error", ">SERR"},
    {PCI_STATUS_DETECTED_PARITY, "detected_parity_error", "<PERR"},
    {0, NULL, NULL},
};

struct decoder {
    const uint8_t *config;
    size_t length;
    const struct pci_decode_region *regions;
    json_t *problems;
    bool failed; /* out of memory somewhere */
};

static void put(struct decoder *decoder, json_t *object, const char *key, json_t *value)
{
    /* json_object_set_new() releases `value` on failure and refuses a NULL one. */
    if (json_object_set_new(object, key, value) < 0)
        decoder->failed = true;
}

static void put_integer(struct decoder *decoder, json_t *object, const char *key, uint64_t value)
{
    put(decoder, object, key, json_integer((json_int_t)value));
}

static void put_bool(struct decoder *decoder, json_t *object, const char *key, bool value)
{
    put(decoder, object, key, json_boolean(value));
}

static void put_string(struct decoder *decoder, json_t *object, const char *key, const char *value)
{
    put(decoder, object, key, json_string(value));
}

static void append(struct decoder *decoder, json_t *array, json_t *value)
{
    if (json_array_append_new(array, value) < 0)
        decoder->failed = true;
}

static void report(struct decoder *decoder, const char *format, ...)
    __attribute__((format(printf, 2, 3)));

static void report(struct decoder *decoder, const char *format, ...)
{
    char text[256];
    va_list arguments;

    va_start(arguments, format);
    vsnprintf(text, sizeof(text), format, arguments);
    va_end(arguments);
    append(decoder, decoder->problems, json_string(text));
}

/* Whether `size` bytes at `offset` lie within the first `limit` bytes read. */
static bool fits(const struct decoder *decoder, size_t limit, size_t offset, size_t size)
{
    if (limit > decoder->length)
        limit = decoder->length;
    return offset <= limit && size <= limit - offset;
}

static uint8_t read8(const struct decoder *decoder, size_t offset)
{
    return decoder->config[offset];
}

static uint16_t read16(const struct decoder *decoder, size_t offset)
{
    return (uint16_t)(decoder->config[offset] | decoder->config[offset + 1] << 8);
}

static uint32_t read32(const struct decoder *decoder, size_t offset)
{
    return (uint32_t)read16(decoder, offset) | (uint32_t)read16(decoder, offset + 2) << 16;
}

static json_t *flag_list(struct decoder *decoder, uint16_t value, const struct pci_decode_bit *bits)
{
    json_t *list = json_array();

    for (size_t i = 0; list != NULL && bits[i].mask != 0; i++)
        if (value & bits[i].mask)
            append(decoder, list, json_string(bits[i].key));
    return list;
}

const char *pci_decode_class_name(uint8_t base_class)
{
    static const char *const names[] = {
        "Unclassified device",
        "Mass storage controller",
        "Network controller",
        "Display controller",
        "Multimedia controller",
        "Memory controller",
        "Bridge",
        "Communication controller",
        "Generic system peripheral",
        "Input device controller",
        "Docking station",
        "Processor",
        "Serial bus controller",
        "Wireless controller",
        "Intelligent controller",
        "Satellite communications controller",
        "Encryption controller",
        "Signal processing controller",
        "Processing accelerators",
        "Non-Essential Instrumentation",
    };

    if (base_class < sizeof(names) / sizeof(names[0]))
        return names[base_class];
    if (base_class == 0x40)
        return "Coprocessor";
    if (base_class == 0xff)
        return "Unassigned class";
    return NULL;
}

/* --- BARs. --- */

static bool power_of_two(uint64_t value)
{
    return value != 0 && (value & (value - 1)) == 0;
}

static void decode_bars(struct decoder *decoder, json_t *pci, unsigned bar_count)
{
    json_t *bars = json_array();

    put(decoder, pci, "bars", bars);
    for (unsigned index = 0; bars != NULL && index < bar_count; index++) {
        uint32_t value = read32(decoder, PCI_BASE_ADDRESS_0 + 4 * index);
        const struct pci_decode_region *region = &decoder->regions[index];
        bool io = value & PCI_BASE_ADDRESS_SPACE_IO;
        uint32_t type = value & PCI_BASE_ADDRESS_MEM_TYPE_MASK;
        bool wide = !io && type == PCI_BASE_ADDRESS_MEM_TYPE_64;
        uint64_t address;
        json_t *bar;

        if (value == 0 && (!region->known || region->size == 0))
            continue;
        bar = json_object();
        append(decoder, bars, bar);
        put_integer(decoder, bar, "index", index);
        put_string(decoder, bar, "kind", io ? "io" : "memory");
        if (io) {
            address = value & PCI_BASE_ADDRESS_IO_MASK;
        } else {
            address = value & PCI_BASE_ADDRESS_MEM_MASK;
            put_integer(decoder, bar, "width", wide ? 64 : 32);
            put_bool(decoder, bar, "prefetchable", value & PCI_BASE_ADDRESS_MEM_PREFETCH);
            if (type == PCI_BASE_ADDRESS_MEM_TYPE_1M)
                put_bool(decoder, bar, "below_1m", true);
            else if (type != PCI_BASE_ADDRESS_MEM_TYPE_32 && !wide)
                report(decoder, "BAR%u: reserved memory type %u", index, type >> 1);
        }
        if (wide) {
            if (index + 1 < bar_count)
                address |= (uint64_t)read32(decoder, PCI_BASE_ADDRESS_0 + 4 * (index + 1)) << 32;
            else
                report(decoder, "BAR%u: 64-bit, but there is no BAR%u for its upper half", index,
                       index + 1);
        }
        put_integer(decoder, bar, "address", address);
        if (region->known) {
            put_integer(decoder, bar, "size", region->size);
            if (region->size == 0)
                report(decoder, "BAR%u: set in configuration space, but its region is empty",
                       index);
            else if (!power_of_two(region->size))
                report(decoder, "BAR%u: region size %" PRIu64 " is not a power of two", index,
                       region->size);
        } else {
            put(decoder, bar, "size", json_null());
        }
        /* The upper half of a 64-bit BAR is not a BAR of its own. */
        if (wide && index + 1 < bar_count) {
            if (decoder->regions[index + 1].known && decoder->regions[index + 1].size != 0)
                report(decoder, "BAR%u: upper half of 64-bit BAR%u, but its region has a size",
                       index + 1, index);
            index++;
        }
    }
}

static void decode_rom(struct decoder *decoder, json_t *pci, size_t register_offset)
{
    const struct pci_decode_region *region = &decoder->regions[PCI_DECODE_BAR_REGIONS - 1];
    uint32_t value = read32(decoder, register_offset);
    json_t *rom;

    if (value == 0 && (!region->known || region->size == 0))
        return;
    rom = json_object();
    put(decoder, pci, "expansion_rom", rom);
    put_integer(decoder, rom, "address", value & PCI_ROM_ADDRESS_MASK);
    put_bool(decoder, rom, "enabled", value & PCI_ROM_ADDRESS_ENABLE);
    if (region->known)
        put_integer(decoder, rom, "size", region->size);
    else
        put(decoder, rom, "size", json_null());
}

/* --- Capabilities. --- */

static const char *capability_name(uint8_t id)
{
    switch (id) {
    case PCI_CAP_ID_PM:
        return "Power Management";
    case PCI_CAP_ID_AGP:
        return "AGP";
    case PCI_CAP_ID_VPD:
        return "Vital Product Data";
    case PCI_CAP_ID_SLOTID:
        return "Slot Identification";
    case PCI_CAP_ID_MSI:
        return "MSI";
    case PCI_CAP_ID_CHSWP:
        return "CompactPCI hot swap";
    case PCI_CAP_ID_PCIX:
        return "PCI-X";
    case PCI_CAP_ID_HT:
        return "HyperTransport";
    case PCI_CAP_ID_VNDR:
        return "Vendor Specific";
    case PCI_CAP_ID_DBG:
        return "Debug port";
    case PCI_CAP_ID_CCRC:
        return "CompactPCI central resource control";
    case PCI_CAP_ID_SHPC:
        return "PCI Standard Hot-Plug Controller";
    case PCI_CAP_ID_SSVID:
        return "Bridge subsystem vendor/device ID";
    case PCI_CAP_ID_AGP3:
        return "AGP 8x";
    case PCI_CAP_ID_SECDEV:
        return "Secure device";
    case PCI_CAP_ID_EXP:
        return "Express";
    case PCI_CAP_ID_MSIX:
        return "MSI-X";
    case PCI_CAP_ID_SATA:
        return "SATA HBA";
    case PCI_CAP_ID_AF:
        return "PCI Advanced Features";
    case PCI_CAP_ID_EA:
        return "Enhanced Allocation";
    case 0x15:
        return "Flattening Portal Bridge";
    default:
        return NULL;
    }
}

static bool capability_fits(struct decoder *decoder, uint8_t offset, size_t size, const char *name)
{
    if (fits(decoder, PCI_CONFIG_SIZE, offset, size))
        return true;
    report(decoder, "%s capability at 0x%02x: its %zu bytes run past configuration space", name,
           offset, size);
    return false;
}

static void decode_power_management(struct decoder *decoder, json_t *capability, uint8_t offset)
{
    static const char *const pme_states[] = {"D0", "D1", "D2", "D3hot", "D3cold"};
    static const char *const power_states[] = {"D0", "D1", "D2", "D3hot"};
    uint16_t capabilities, control;
    json_t *pme;

    if (!capability_fits(decoder, offset, PCI_PM_SIZEOF, "Power Management"))
        return;
    capabilities = read16(decoder, offset + PCI_PM_PMC);
    control = read16(decoder, offset + PCI_PM_CTRL);
    put_integer(decoder, capability, "version", capabilities & PCI_PM_CAP_VER_MASK);
    put_bool(decoder, capability, "d1", capabilities & PCI_PM_CAP_D1);
    put_bool(decoder, capability, "d2", capabilities & PCI_PM_CAP_D2);
    pme = json_array();
    put(decoder, capability, "pme_support", pme);
    for (unsigned i = 0; pme != NULL && i < 5; i++)
        if (capabilities & (PCI_PM_CAP_PME_D0 << i))
            append(decoder, pme, json_string(pme_states[i]));
    put_string(decoder, capability, "power_state", power_states[control & PCI_PM_CTRL_STATE_MASK]);
    put_bool(decoder, capability, "no_soft_reset", control & PCI_PM_CTRL_NO_SOFT_RESET);
    put_bool(decoder, capability, "pme_enable", control & PCI_PM_CTRL_PME_ENABLE);
    put_bool(decoder, capability, "pme_status", control & PCI_PM_CTRL_PME_STATUS);
}

static void decode_msi(struct decoder *decoder, json_t *capability, uint8_t offset)
{
    uint16_t control;
    unsigned capable, enabled;
    bool wide, masking;
    size_t data_offset, size;
    uint64_t address;

    if (!capability_fits(decoder, offset, PCI_MSI_FLAGS + 2, "MSI"))
        return;
    control = read16(decoder, offset + PCI_MSI_FLAGS);
    wide = control & PCI_MSI_FLAGS_64BIT;
    masking = control & PCI_MSI_FLAGS_MASKBIT;
    capable = (control & PCI_MSI_FLAGS_QMASK) >> 1;
    enabled = (control & PCI_MSI_FLAGS_QSIZE) >> 4;
    put_bool(decoder, capability, "enable", control & PCI_MSI_FLAGS_ENABLE);
    put_integer(decoder, capability, "vectors", 1u << capable);
    put_integer(decoder, capability, "enabled_vectors", 1u << enabled);
    put_bool(decoder, capability, "address_64bit", wide);
    put_bool(decoder, capability, "per_vector_mask", masking);
    if (capable > 5)
        report(decoder, "MSI capability at 0x%02x: reserved Multiple Message Capable value %u",
               offset, capable);
    if (enabled > capable)
        report(decoder, "MSI capability at 0x%02x: %u vectors enabled, only %u capable", offset,
               1u << enabled, 1u << capable);
    data_offset = wide ? PCI_MSI_DATA_64 : PCI_MSI_DATA_32;
    size = masking ? (wide ? PCI_MSI_PENDING_64 : PCI_MSI_PENDING_32) + 4 : data_offset + 2;
    if (!capability_fits(decoder, offset, size, "MSI"))
        return;
    address = read32(decoder, offset + PCI_MSI_ADDRESS_LO);
    if (wide)
        address |= (uint64_t)read32(decoder, offset + PCI_MSI_ADDRESS_HI) << 32;
    put_integer(decoder, capability, "address", address);
    put_integer(decoder, capability, "data", read16(decoder, offset + data_offset));
    if (masking) {
        put_integer(decoder, capability, "mask",
                    read32(decoder, offset + (wide ? PCI_MSI_MASK_64 : PCI_MSI_MASK_32)));
        put_integer(decoder, capability, "pending",
                    read32(decoder, offset + (wide ? PCI_MSI_PENDING_64 : PCI_MSI_PENDING_32)));
    }
}

/* Checks that `size` bytes at a BAR offset lie inside that BAR's region. */
static void check_in_bar(struct decoder *decoder, const char *what, unsigned bar, uint32_t offset,
                         uint64_t size)
{
    const struct pci_decode_region *region;

    if (bar >= PCI_DECODE_BAR_REGIONS - 1) {
        report(decoder, "MSI-X %s: BIR %u names no BAR", what, bar);
        return;
    }
    region = &decoder->regions[bar];
    if (region->known && (offset > region->size || size > region->size - offset))
        report(decoder,
               "MSI-X %s: %" PRIu64 " bytes at offset 0x%x do not fit BAR%u (%" PRIu64 " bytes)",
               what, size, offset, bar, region->size);
}

static void decode_msix(struct decoder *decoder, json_t *capability, uint8_t offset)
{
    uint32_t table, pba, vectors;
    uint16_t control;
    json_t *location;

    if (!capability_fits(decoder, offset, PCI_CAP_MSIX_SIZEOF, "MSI-X"))
        return;
    control = read16(decoder, offset + PCI_MSIX_FLAGS);
    table = read32(decoder, offset + PCI_MSIX_TABLE);
    pba = read32(decoder, offset + PCI_MSIX_PBA);
    vectors = (control & PCI_MSIX_FLAGS_QSIZE) + 1u;
    put_bool(decoder, capability, "enable", control & PCI_MSIX_FLAGS_ENABLE);
    put_bool(decoder, capability, "function_mask", control & PCI_MSIX_FLAGS_MASKALL);
    put_integer(decoder, capability, "table_size", vectors);
    location = json_object();
    put(decoder, capability, "table", location);
    put_integer(decoder, location, "bar", table & PCI_MSIX_TABLE_BIR);
    put_integer(decoder, location, "offset", table & PCI_MSIX_TABLE_OFFSET);
    location = json_object();
    put(decoder, capability, "pba", location);
    put_integer(decoder, location, "bar", pba & PCI_MSIX_PBA_BIR);
    put_integer(decoder, location, "offset", pba & PCI_MSIX_PBA_OFFSET);
    check_in_bar(decoder, "table", table & PCI_MSIX_TABLE_BIR, table & PCI_MSIX_TABLE_OFFSET,
                 (uint64_t)vectors * PCI_MSIX_TABLE_ENTRY);
    check_in_bar(decoder, "PBA", pba & PCI_MSIX_PBA_BIR, pba & PCI_MSIX_PBA_OFFSET,
                 (vectors + 63u) / 64u * 8u);
}

static const char *express_type_name(unsigned type)
{
    switch (type) {
    case PCI_EXP_TYPE_ENDPOINT:
        return "endpoint";
    case PCI_EXP_TYPE_LEG_END:
        return "legacy_endpoint";
    case PCI_EXP_TYPE_ROOT_PORT:
        return "root_port";
    case PCI_EXP_TYPE_UPSTREAM:
        return "upstream_port";
    case PCI_EXP_TYPE_DOWNSTREAM:
        return "downstream_port";
    case PCI_EXP_TYPE_PCI_BRIDGE:
        return "pcie_to_pci_bridge";
    case PCI_EXP_TYPE_PCIE_BRIDGE:
        return "pci_to_pcie_bridge";
    case PCI_EXP_TYPE_RC_END:
        return "root_complex_integrated_endpoint";
    case PCI_EXP_TYPE_RC_EC:
        return "root_complex_event_collector";
    default:
        return "reserved";
    }
}

static json_t *link_speed(unsigned code)
{
    static const char *const speeds[] = {NULL,     "2.5GT/s", "5GT/s", "8GT/s",
                                         "16GT/s", "32GT/s",  "64GT/s"};

    if (code < sizeof(speeds) / sizeof(speeds[0]) && speeds[code] != NULL)
        return json_string(speeds[code]);
    return json_null();
}

static void decode_express(struct decoder *decoder, json_t *capability, uint8_t offset)
{
    uint16_t flags, control;
    uint32_t device_capabilities, link_capabilities;
    unsigned type;
    json_t *link;

    /* Through the Link Status register: what every version has. */
    if (!capability_fits(decoder, offset, PCI_EXP_LNKSTA + 2, "Express"))
        return;
    flags = read16(decoder, offset + PCI_EXP_FLAGS);
    type = (flags & PCI_EXP_FLAGS_TYPE) >> 4;
    device_capabilities = read32(decoder, offset + PCI_EXP_DEVCAP);
    control = read16(decoder, offset + PCI_EXP_DEVCTL);
    put_integer(decoder, capability, "version", flags & PCI_EXP_FLAGS_VERS);
    put_string(decoder, capability, "device_type", express_type_name(type));
    put_integer(decoder, capability, "device_type_id", type);
    put_integer(decoder, capability, "interrupt_message", (flags & PCI_EXP_FLAGS_IRQ) >> 9);
    put_integer(decoder, capability, "max_payload_supported",
                128u << (device_capabilities & PCI_EXP_DEVCAP_PAYLOAD));
    put_bool(decoder, capability, "extended_tag", device_capabilities & PCI_EXP_DEVCAP_EXT_TAG);
    put_bool(decoder, capability, "function_level_reset", device_capabilities & PCI_EXP_DEVCAP_FLR);
    put_integer(decoder, capability, "max_payload",
                128u << ((control & PCI_EXP_DEVCTL_PAYLOAD) >> 5));
    put_integer(decoder, capability, "max_read_request",
                128u << ((control & PCI_EXP_DEVCTL_READRQ) >> 12));
    /* A root complex integrated endpoint has no link: its link registers are reserved. */
    if (type == PCI_EXP_TYPE_RC_END || type == PCI_EXP_TYPE_RC_EC)
        return;
    link_capabilities = read32(decoder, offset + PCI_EXP_LNKCAP);
    control = read16(decoder, offset + PCI_EXP_LNKSTA);
    link = json_object();
    put(decoder, capability, "link", link);
    put(decoder, link, "max_speed", link_speed(link_capabilities & PCI_EXP_LNKCAP_SLS));
    put_integer(decoder, link, "max_width", (link_capabilities & PCI_EXP_LNKCAP_MLW) >> 4);
    put(decoder, link, "speed", link_speed(control & PCI_EXP_LNKSTA_CLS));
    put_integer(decoder, link, "width", (control & PCI_EXP_LNKSTA_NLW) >> 4);
    put_integer(decoder, link, "port", link_capabilities >> 24);
}

/* `length` bytes at `offset` as lowercase hex. */
static json_t *hex_bytes(const struct decoder *decoder, size_t offset, size_t length)
{
    char text[2 * PCI_CONFIG_SIZE + 1];

    for (size_t i = 0; i < length && 2 * i + 2 < sizeof(text); i++)
        snprintf(text + 2 * i, 3, "%02x", read8(decoder, offset + i));
    text[2 * length < sizeof(text) ? 2 * length : sizeof(text) - 1] = '\0';
    return json_string(text);
}

static void decode_vendor(struct decoder *decoder, json_t *capability, uint8_t offset)
{
    uint8_t length;

    if (!capability_fits(decoder, offset, PCI_CAP_VNDR_HEADER_SIZE, "Vendor Specific"))
        return;
    length = read8(decoder, offset + PCI_CAP_FLAGS);
    put_integer(decoder, capability, "length", length);
    if (length < PCI_CAP_VNDR_HEADER_SIZE) {
        report(decoder, "Vendor Specific capability at 0x%02x: length %u is below its header",
               offset, length);
        return;
    }
    if (!capability_fits(decoder, offset, length, "Vendor Specific"))
        return;
    put(decoder, capability, "data",
        hex_bytes(decoder, offset + PCI_CAP_VNDR_HEADER_SIZE, length - PCI_CAP_VNDR_HEADER_SIZE));
}

static void decode_capabilities(struct decoder *decoder, json_t *pci, uint8_t pointer_register)
{
    bool visited[PCI_CONFIG_SIZE / 4] = {false};
    json_t *list = json_array();
    uint8_t offset = read8(decoder, pointer_register) & ~3u;
    unsigned count = 0;

    put(decoder, pci, "capabilities", list);
    while (list != NULL && offset != 0) {
        json_t *capability;
        const char *name;
        uint8_t id;

        if (offset < PCI_STD_HEADER_SIZEOF || !fits(decoder, PCI_CONFIG_SIZE, offset, 2)) {
            report(decoder, "capability pointer 0x%02x points %s", offset,
                   offset < PCI_STD_HEADER_SIZEOF ? "into the header" : "past the space read");
            break;
        }
        if (visited[offset / 4] || count == PCI_MAX_CAPABILITIES) {
            report(decoder, "capability list loops (back to 0x%02x)", offset);
            break;
        }
        visited[offset / 4] = true;
        count++;
        id = read8(decoder, offset + PCI_CAP_LIST_ID);
        name = capability_name(id);
        capability = json_object();
        append(decoder, list, capability);
        put_integer(decoder, capability, "offset", offset);
        put_integer(decoder, capability, "id", id);
        put(decoder, capability, "name", name != NULL ? json_string(name) : json_null());
        switch (id) {
        case PCI_CAP_ID_PM:
            decode_power_management(decoder, capability, offset);
            break;
        case PCI_CAP_ID_MSI:
            decode_msi(decoder, capability, offset);
            break;
        case PCI_CAP_ID_MSIX:
            decode_msix(decoder, capability, offset);
            break;
        case PCI_CAP_ID_EXP:
            decode_express(decoder, capability, offset);
            break;
        case PCI_CAP_ID_VNDR:
            decode_vendor(decoder, capability, offset);
            break;
        default:
            break;
        }
        offset = read8(decoder, offset + PCI_CAP_LIST_NEXT) & ~3u;
    }
}

/* --- Extended capabilities. --- */

static const char *extended_capability_name(uint16_t id)
{
    static const char *const names[] = {
        [PCI_EXT_CAP_ID_ERR] = "Advanced Error Reporting",
        [PCI_EXT_CAP_ID_VC] = "Virtual Channel",
        [PCI_EXT_CAP_ID_DSN] = "Device Serial Number",
        [PCI_EXT_CAP_ID_PWR] = "Power Budgeting",
        [PCI_EXT_CAP_ID_RCLD] = "Root Complex Link Declaration",
        [PCI_EXT_CAP_ID_RCILC] = "Root Complex Internal Link Control",
        [PCI_EXT_CAP_ID_RCEC] = "Root Complex Event Collector Endpoint Association",
        [PCI_EXT_CAP_ID_MFVC] = "Multi-Function Virtual Channel",
        [PCI_EXT_CAP_ID_VC9] = "Virtual Channel",
        [PCI_EXT_CAP_ID_RCRB] = "Root Complex Register Block",
        [PCI_EXT_CAP_ID_VNDR] = "Vendor Specific",
        [PCI_EXT_CAP_ID_CAC] = "Configuration Access Correlation",
        [PCI_EXT_CAP_ID_ACS] = "Access Control Services",
        [PCI_EXT_CAP_ID_ARI] = "Alternative Routing-ID Interpretation",
        [PCI_EXT_CAP_ID_ATS] = "Address Translation Service",
        [PCI_EXT_CAP_ID_SRIOV] = "Single Root I/O Virtualization",
        [PCI_EXT_CAP_ID_MRIOV] = "Multi-Root I/O Virtualization",
        [PCI_EXT_CAP_ID_MCAST] = "Multicast",
        [PCI_EXT_CAP_ID_PRI] = "Page Request Interface",
        [PCI_EXT_CAP_ID_REBAR] = "Resizable BAR",
        [PCI_EXT_CAP_ID_DPA] = "Dynamic Power Allocation",
        [PCI_EXT_CAP_ID_TPH] = "TPH Requester",
        [PCI_EXT_CAP_ID_LTR] = "Latency Tolerance Reporting",
        [PCI_EXT_CAP_ID_SECPCI] = "Secondary PCI Express",
        [PCI_EXT_CAP_ID_PMUX] = "Protocol Multiplexing",
        [PCI_EXT_CAP_ID_PASID] = "Process Address Space ID",
        [0x1c] = "LN Requester",
        [PCI_EXT_CAP_ID_DPC] = "Downstream Port Containment",
        [PCI_EXT_CAP_ID_L1SS] = "L1 PM Substates",
        [PCI_EXT_CAP_ID_PTM] = "Precision Time Measurement",
        [PCI_EXT_CAP_ID_DVSEC] = "Designated Vendor-Specific",
        [PCI_EXT_CAP_ID_DLF] = "Data Link Feature",
        [PCI_EXT_CAP_ID_PL_16GT] = "Physical Layer 16.0 GT/s",
        [0x27] = "Lane Margining at the Receiver",
        [0x2a] = "Physical Layer 32.0 GT/s",
        [PCI_EXT_CAP_ID_DOE] = "Data Object Exchange",
    };

    return id < sizeof(names) / sizeof(names[0]) ? names[id] : NULL;
}

static void decode_extended_details(struct decoder *decoder, json_t *capability, uint16_t id,
                                    size_t offset)
{
    char serial[24];

    if (id == PCI_EXT_CAP_ID_DSN && fits(decoder, PCI_EXPRESS_CONFIG_SIZE, offset, 12)) {
        /* Printed most significant byte first, as lspci does. */
        uint32_t low = read32(decoder, offset + 4), high = read32(decoder, offset + 8);
        snprintf(serial, sizeof(serial), "%02x-%02x-%02x-%02x-%02x-%02x-%02x-%02x", high >> 24,
                 high >> 16 & 0xff, high >> 8 & 0xff, high & 0xff, low >> 24, low >> 16 & 0xff,
                 low >> 8 & 0xff, low & 0xff);
        put_string(decoder, capability, "serial", serial);
    } else if (id == PCI_EXT_CAP_ID_VNDR && fits(decoder, PCI_EXPRESS_CONFIG_SIZE, offset, 8)) {
        uint32_t header = read32(decoder, offset + 4);
        put_integer(decoder, capability, "vsec_id", header & 0xffff);
        put_integer(decoder, capability, "vsec_revision", header >> 16 & 0xf);
        put_integer(decoder, capability, "vsec_length", header >> 20);
    }
}

static void decode_extended_capabilities(struct decoder *decoder, json_t *pci)
{
    bool visited[PCI_MAX_EXTENDED] = {false};
    json_t *list = json_array();
    size_t offset = PCI_EXTENDED_START;
    unsigned count = 0;

    put(decoder, pci, "extended_capabilities", list);
    while (list != NULL && offset != 0) {
        uint32_t header;
        json_t *capability;
        const char *name;

        if (offset < PCI_EXTENDED_START || !fits(decoder, PCI_EXPRESS_CONFIG_SIZE, offset, 4)) {
            report(decoder, "extended capability pointer 0x%03zx is out of range", offset);
            break;
        }
        if (visited[(offset - PCI_EXTENDED_START) / 4] || count == PCI_MAX_EXTENDED) {
            report(decoder, "extended capability list loops (back to 0x%03zx)", offset);
            break;
        }
        visited[(offset - PCI_EXTENDED_START) / 4] = true;
        count++;
        header = read32(decoder, offset);
        /* An empty header at 0x100 means "no extended capabilities". */
        if (header == 0 || header == UINT32_MAX)
            break;
        name = extended_capability_name(PCI_EXT_CAP_ID(header));
        capability = json_object();
        append(decoder, list, capability);
        put_integer(decoder, capability, "offset", offset);
        put_integer(decoder, capability, "id", PCI_EXT_CAP_ID(header));
        put_integer(decoder, capability, "version", PCI_EXT_CAP_VER(header));
        put(decoder, capability, "name", name != NULL ? json_string(name) : json_null());
        decode_extended_details(decoder, capability, PCI_EXT_CAP_ID(header), offset);
        offset = PCI_EXT_CAP_NEXT(header);
    }
}

/* --- The header. --- */

static void decode_header(struct decoder *decoder, json_t *pci)
{
    uint8_t header_type = read8(decoder, PCI_HEADER_TYPE) & 0x7f;
    uint16_t command = read16(decoder, PCI_COMMAND), status = read16(decoder, PCI_STATUS);
    uint32_t class_code = read32(decoder, PCI_CLASS_REVISION) >> 8;
    const char *class_name = pci_decode_class_name(class_code >> 16);
    uint8_t pin = read8(decoder, PCI_INTERRUPT_PIN);

    put_integer(decoder, pci, "vendor_id", read16(decoder, PCI_VENDOR_ID));
    put_integer(decoder, pci, "device_id", read16(decoder, PCI_DEVICE_ID));
    put_integer(decoder, pci, "revision", read8(decoder, PCI_REVISION_ID));
    put_integer(decoder, pci, "class_code", class_code);
    put(decoder, pci, "class", class_name != NULL ? json_string(class_name) : json_null());
    put_integer(decoder, pci, "header_type", header_type);
    put_bool(decoder, pci, "multifunction", read8(decoder, PCI_HEADER_TYPE) & 0x80);
    if (header_type == PCI_HEADER_TYPE_NORMAL) {
        put_integer(decoder, pci, "subsystem_vendor_id", read16(decoder, PCI_SUBSYSTEM_VENDOR_ID));
        put_integer(decoder, pci, "subsystem_id", read16(decoder, PCI_SUBSYSTEM_ID));
    }
    put_integer(decoder, pci, "command", command);
    put(decoder, pci, "command_flags", flag_list(decoder, command, pci_decode_command_bits));
    put_integer(decoder, pci, "status", status);
    put(decoder, pci, "status_flags", flag_list(decoder, status, pci_decode_status_bits));
    put_integer(decoder, pci, "interrupt_pin", pin);
    put_integer(decoder, pci, "interrupt_line", read8(decoder, PCI_INTERRUPT_LINE));
    if (pin > 4)
        report(decoder, "interrupt pin %u is not one of INTA-INTD", pin);
    switch (header_type) {
    case PCI_HEADER_TYPE_NORMAL:
        decode_bars(decoder, pci, 6);
        decode_rom(decoder, pci, PCI_ROM_ADDRESS);
        break;
    case PCI_HEADER_TYPE_BRIDGE:
        decode_bars(decoder, pci, 2);
        decode_rom(decoder, pci, PCI_ROM_ADDRESS1);
        break;
    default:
        report(decoder, "header type %u is not decoded", header_type);
        break;
    }
}

json_t *pci_decode(const uint8_t *config, size_t length,
                   const struct pci_decode_region regions[PCI_DECODE_BAR_REGIONS], json_t *problems)
{
    struct decoder decoder = {
        .config = config, .length = length, .regions = regions, .problems = problems};
    json_t *pci = json_object();
    uint8_t header_type;

    if (pci == NULL)
        return NULL;
    put_integer(&decoder, pci, "config_size", length);
    if (length < PCI_STD_HEADER_SIZEOF) {
        report(&decoder, "configuration space of %zu bytes holds no header", length);
        goto out;
    }
    decode_header(&decoder, pci);
    header_type = read8(&decoder, PCI_HEADER_TYPE) & 0x7f;
    if (read16(&decoder, PCI_STATUS) & PCI_STATUS_CAP_LIST) {
        decode_capabilities(&decoder, pci,
                            header_type == PCI_HEADER_TYPE_CARDBUS ? PCI_CB_CAPABILITY_LIST
                                                                   : PCI_CAPABILITY_LIST);
    } else {
        put(&decoder, pci, "capabilities", json_array());
    }
    if (length >= PCI_EXPRESS_CONFIG_SIZE)
        decode_extended_capabilities(&decoder, pci);
    else
        put(&decoder, pci, "extended_capabilities", json_null());
out:
    if (decoder.failed) {
        json_decref(pci);
        return NULL;
    }
    return pci;
}
