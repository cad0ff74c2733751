/*
 * The human form of the probe report: a summary of the session, tables of regions and
 * interrupts, then the configuration space laid out as `lspci -vv` does, so that people who
 * know that output can read this one. Everything shown comes from the JSON report, so the
 * two forms cannot disagree.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "output.h"
#include "pci_decode.h"
#include "probe.h"

#define PROBE_FIELD_WIDTH 14
#define PROBE_INDENT      "  "
#define PROBE_DETAIL      "          "
/* More sparse areas than this are summarised by their count. */
#define PROBE_AREAS_SHOWN 8

static uint64_t number(const json_t *object, const char *key)
{
    return (uint64_t)json_integer_value(json_object_get(object, key));
}

static bool flag(const json_t *object, const char *key)
{
    return json_is_true(json_object_get(object, key));
}

static const char *plus_minus(bool value)
{
    return value ? "+" : "-";
}

/* --- Session and device. --- */

static void print_page_sizes(char *buffer, size_t size, uint64_t page_sizes)
{
    size_t used = 0;

    buffer[0] = '\0';
    for (unsigned bit = 0; bit < 64 && used < size; bit++) {
        char text[32];
        if (!(page_sizes & (UINT64_C(1) << bit)))
            continue;
        output_size(text, sizeof(text), UINT64_C(1) << bit);
        used += (size_t)snprintf(buffer + used, size - used, "%s%s", used > 0 ? "|" : "", text);
    }
    if (buffer[0] == '\0')
        snprintf(buffer, size, "none");
}

static void print_session(FILE *stream, const json_t *report)
{
    const json_t *version = json_object_get(report, "version");
    const json_t *capabilities = json_object_get(report, "capabilities");
    const json_t *device = json_object_get(report, "device");
    const char *socket = json_string_value(json_object_get(report, "socket"));
    char transfer[32], pages[256];

    output_field(stream, PROBE_FIELD_WIDTH, "Socket", "%s", socket != NULL ? socket : "-");
    output_field(stream, PROBE_FIELD_WIDTH, "Protocol", "vfio-user %" PRIu64 ".%" PRIu64,
                 number(version, "major"), number(version, "minor"));
    print_page_sizes(pages, sizeof(pages), number(capabilities, "pgsizes"));
    output_field(
        stream, PROBE_FIELD_WIDTH, "Capabilities",
        "max_msg_fds %" PRIu64 ", max_data_xfer_size %s, max_dma_maps %" PRIu64
        ", pgsizes %s, write_multiple %s, twin_socket %s",
        number(capabilities, "max_msg_fds"),
        output_size(transfer, sizeof(transfer), number(capabilities, "max_data_xfer_size")),
        number(capabilities, "max_dma_maps"), pages,
        flag(capabilities, "write_multiple") ? "yes" : "no",
        flag(capabilities, "twin_socket") ? "yes" : "no");
    output_field(stream, PROBE_FIELD_WIDTH, "Device",
                 "%s%s (flags 0x%" PRIx64 "), %" PRIu64 " regions, %" PRIu64 " interrupt indexes",
                 flag(device, "pci") ? "PCI" : "not PCI", flag(device, "reset") ? ", reset" : "",
                 number(device, "flags"), number(device, "regions"), number(device, "irqs"));
}

/* "0x1000-0x7fff, 0xc000-0xffff", or "whole region" / "-" without a sparse capability. */
static void describe_areas(char *buffer, size_t size, const json_t *region)
{
    const json_t *areas = json_object_get(region, "sparse_areas");
    const json_t *area;
    size_t index, used = 0;

    if (!json_is_array(areas)) {
        snprintf(buffer, size, "%s", flag(region, "mmap") ? "whole region" : "-");
        return;
    }
    if (json_array_size(areas) == 0) {
        snprintf(buffer, size, "none");
        return;
    }
    buffer[0] = '\0';
    json_array_foreach (areas, index, area) {
        uint64_t offset = number(area, "offset"), length = number(area, "size");
        int written;
        if (index == PROBE_AREAS_SHOWN) {
            snprintf(buffer + used, size - used, ", and %zu more", json_array_size(areas) - index);
            break;
        }
        if (length == 0)
            written = snprintf(buffer + used, size - used, "%s0x%" PRIx64 " (empty)",
                               index > 0 ? ", " : "", offset);
        else
            written = snprintf(buffer + used, size - used, "%s0x%" PRIx64 "-0x%" PRIx64,
                               index > 0 ? ", " : "", offset, offset + length - 1);
        if (written < 0 || (size_t)written >= size - used)
            break;
        used += (size_t)written;
    }
}

static int print_regions(FILE *stream, const json_t *regions)
{
    static const struct output_column columns[] = {
        {"INDEX", true}, {"NAME", false}, {"SIZE", true}, {"ACCESS", false}, {"MMAP AREAS", false},
    };
    struct output_table *table = output_table_new(columns, sizeof(columns) / sizeof(columns[0]));
    const json_t *region;
    size_t index;
    int ret = 0;

    if (table == NULL)
        return -ENOMEM;
    json_array_foreach (regions, index, region) {
        char number_text[16], size_text[32], access[32], areas[512];
        const char *name = json_string_value(json_object_get(region, "name"));
        const char *cells[] = {number_text, name != NULL ? name : "-", size_text, access, areas};

        /* An empty region is one the device does not implement. */
        if (number(region, "size") == 0)
            continue;
        snprintf(number_text, sizeof(number_text), "%" PRIu64, number(region, "index"));
        output_size(size_text, sizeof(size_text), number(region, "size"));
        snprintf(access, sizeof(access), "%s%s%s", flag(region, "read") ? "read " : "",
                 flag(region, "write") ? "write " : "", flag(region, "mmap") ? "mmap " : "");
        if (access[0] != '\0')
            access[strlen(access) - 1] = '\0';
        describe_areas(areas, sizeof(areas), region);
        ret = output_table_add_row(table, cells);
        if (ret < 0)
            goto out;
    }
    fprintf(stream, "\nRegions:\n");
    ret = output_table_print(table, stream);
out:
    output_table_free(table);
    return ret;
}

static int print_irqs(FILE *stream, const json_t *irqs)
{
    static const struct output_column columns[] = {
        {"INDEX", true},
        {"NAME", false},
        {"COUNT", true},
        {"FLAGS", false},
    };
    struct output_table *table = output_table_new(columns, sizeof(columns) / sizeof(columns[0]));
    const json_t *irq;
    size_t index;
    int ret = 0;

    if (table == NULL)
        return -ENOMEM;
    json_array_foreach (irqs, index, irq) {
        char index_text[16], count[16], flags[64];
        const char *name = json_string_value(json_object_get(irq, "name"));
        const char *cells[] = {index_text, name != NULL ? name : "-", count, flags};

        snprintf(index_text, sizeof(index_text), "%" PRIu64, number(irq, "index"));
        snprintf(count, sizeof(count), "%" PRIu64, number(irq, "count"));
        snprintf(flags, sizeof(flags), "%s%s%s%s", flag(irq, "eventfd") ? "eventfd " : "",
                 flag(irq, "maskable") ? "maskable " : "",
                 flag(irq, "automasked") ? "automasked " : "",
                 flag(irq, "noresize") ? "noresize " : "");
        if (flags[0] != '\0')
            flags[strlen(flags) - 1] = '\0';
        ret = output_table_add_row(table, cells);
        if (ret < 0)
            goto out;
    }
    fprintf(stream, "\nInterrupts:\n");
    ret = output_table_print(table, stream);
out:
    output_table_free(table);
    return ret;
}

/* --- Configuration space. --- */

static void print_bits(FILE *stream, const char *label, uint64_t value,
                       const struct pci_decode_bit *bits)
{
    fprintf(stream, PROBE_INDENT "%s:", label);
    for (size_t i = 0; bits[i].mask != 0; i++)
        fprintf(stream, " %s%s", bits[i].label, plus_minus(value & bits[i].mask));
    fputc('\n', stream);
}

static void print_bars(FILE *stream, const json_t *pci)
{
    const json_t *bar, *rom = json_object_get(pci, "expansion_rom");
    size_t index;
    char size[32];

    json_array_foreach (json_object_get(pci, "bars"), index, bar) {
        const json_t *bar_size = json_object_get(bar, "size");
        bool io = strcmp(json_string_value(json_object_get(bar, "kind")), "io") == 0;

        if (json_is_integer(bar_size))
            output_size(size, sizeof(size), (uint64_t)json_integer_value(bar_size));
        else
            snprintf(size, sizeof(size), "unknown");
        if (io)
            fprintf(stream,
                    PROBE_INDENT "Region %" PRIu64 ": I/O ports at %04" PRIx64 " [size=%s]\n",
                    number(bar, "index"), number(bar, "address"), size);
        else
            fprintf(stream,
                    PROBE_INDENT "Region %" PRIu64 ": Memory at %0*" PRIx64 " (%" PRIu64
                                 "-bit, %sprefetchable%s) [size=%s]\n",
                    number(bar, "index"), number(bar, "width") == 64 ? 16 : 8,
                    number(bar, "address"), number(bar, "width"),
                    flag(bar, "prefetchable") ? "" : "non-",
                    flag(bar, "below_1m") ? ", below 1M" : "", size);
    }
    if (rom != NULL) {
        const json_t *rom_size = json_object_get(rom, "size");
        if (json_is_integer(rom_size))
            output_size(size, sizeof(size), (uint64_t)json_integer_value(rom_size));
        else
            snprintf(size, sizeof(size), "unknown");
        fprintf(stream, PROBE_INDENT "Expansion ROM at %08" PRIx64 " [%s] [size=%s]\n",
                number(rom, "address"), flag(rom, "enabled") ? "enabled" : "disabled", size);
    }
}

static void print_power_management(FILE *stream, const json_t *capability)
{
    static const char *const states[] = {"D0", "D1", "D2", "D3hot", "D3cold"};
    const json_t *pme = json_object_get(capability, "pme_support");
    const char *state = json_string_value(json_object_get(capability, "power_state"));

    fprintf(stream, " version %" PRIu64 "\n", number(capability, "version"));
    if (state == NULL)
        return;
    fprintf(stream, PROBE_DETAIL "Flags: D1%s D2%s PME(", plus_minus(flag(capability, "d1")),
            plus_minus(flag(capability, "d2")));
    for (size_t i = 0; i < sizeof(states) / sizeof(states[0]); i++) {
        bool supported = false;
        const json_t *entry;
        size_t index;
        json_array_foreach (pme, index, entry)
            supported = supported || strcmp(json_string_value(entry), states[i]) == 0;
        fprintf(stream, "%s%s%s", i > 0 ? "," : "", states[i], plus_minus(supported));
    }
    fprintf(stream, ")\n" PROBE_DETAIL "Status: %s NoSoftRst%s PME-Enable%s PME%s\n", state,
            plus_minus(flag(capability, "no_soft_reset")),
            plus_minus(flag(capability, "pme_enable")), plus_minus(flag(capability, "pme_status")));
}

static void print_msi(FILE *stream, const json_t *capability)
{
    bool wide = flag(capability, "address_64bit");

    fprintf(stream, ": Enable%s Count=%" PRIu64 "/%" PRIu64 " Maskable%s 64bit%s\n",
            plus_minus(flag(capability, "enable")), number(capability, "enabled_vectors"),
            number(capability, "vectors"), plus_minus(flag(capability, "per_vector_mask")),
            plus_minus(wide));
    if (json_object_get(capability, "address") == NULL)
        return;
    fprintf(stream, PROBE_DETAIL "Address: %0*" PRIx64 "  Data: %04" PRIx64 "\n", wide ? 16 : 8,
            number(capability, "address"), number(capability, "data"));
    if (json_object_get(capability, "mask") != NULL)
        fprintf(stream, PROBE_DETAIL "Masking: %08" PRIx64 "  Pending: %08" PRIx64 "\n",
                number(capability, "mask"), number(capability, "pending"));
}

static void print_msix(FILE *stream, const json_t *capability)
{
    const json_t *table = json_object_get(capability, "table");
    const json_t *pba = json_object_get(capability, "pba");

    fprintf(stream, ": Enable%s Count=%" PRIu64 " Masked%s\n",
            plus_minus(flag(capability, "enable")), number(capability, "table_size"),
            plus_minus(flag(capability, "function_mask")));
    if (table == NULL)
        return;
    fprintf(stream, PROBE_DETAIL "Vector table: BAR=%" PRIu64 " offset=%08" PRIx64 "\n",
            number(table, "bar"), number(table, "offset"));
    fprintf(stream, PROBE_DETAIL "PBA: BAR=%" PRIu64 " offset=%08" PRIx64 "\n", number(pba, "bar"),
            number(pba, "offset"));
}

static const char *express_type_label(uint64_t type)
{
    static const char *const labels[] = {
        "Endpoint",
        "Legacy Endpoint",
        NULL,
        NULL,
        "Root Port",
        "Upstream Port",
        "Downstream Port",
        "PCI-Express to PCI/PCI-X Bridge",
        "PCI/PCI-X to PCI-Express Bridge",
        "Root Complex Integrated Endpoint",
        "Root Complex Event Collector",
    };

    if (type < sizeof(labels) / sizeof(labels[0]) && labels[type] != NULL)
        return labels[type];
    return "Unknown type";
}

static const char *speed_text(const json_t *link, const char *key)
{
    const char *speed = json_string_value(json_object_get(link, key));

    return speed != NULL ? speed : "unknown";
}

static void print_express(FILE *stream, const json_t *capability)
{
    const json_t *link = json_object_get(capability, "link");

    if (json_object_get(capability, "device_type_id") == NULL) {
        fputc('\n', stream);
        return;
    }
    fprintf(stream, " (v%" PRIu64 ") %s, MSI %02" PRIu64 "\n", number(capability, "version"),
            express_type_label(number(capability, "device_type_id")),
            number(capability, "interrupt_message"));
    fprintf(stream, PROBE_DETAIL "DevCap: MaxPayload %" PRIu64 " bytes, ExtTag%s FLReset%s\n",
            number(capability, "max_payload_supported"),
            plus_minus(flag(capability, "extended_tag")),
            plus_minus(flag(capability, "function_level_reset")));
    fprintf(stream,
            PROBE_DETAIL "DevCtl: MaxPayload %" PRIu64 " bytes, MaxReadReq %" PRIu64 " bytes\n",
            number(capability, "max_payload"), number(capability, "max_read_request"));
    if (link == NULL)
        return;
    fprintf(stream, PROBE_DETAIL "LnkCap: Port #%" PRIu64 ", Speed %s, Width x%" PRIu64 "\n",
            number(link, "port"), speed_text(link, "max_speed"), number(link, "max_width"));
    fprintf(stream, PROBE_DETAIL "LnkSta: Speed %s, Width x%" PRIu64 "\n",
            speed_text(link, "speed"), number(link, "width"));
}

static void print_capabilities(FILE *stream, const json_t *pci)
{
    const json_t *capability, *extended = json_object_get(pci, "extended_capabilities");
    size_t index;

    json_array_foreach (json_object_get(pci, "capabilities"), index, capability) {
        const char *name = json_string_value(json_object_get(capability, "name"));
        uint64_t id = number(capability, "id");

        fprintf(stream, PROBE_INDENT "Capabilities: [%02" PRIx64 "] ",
                number(capability, "offset"));
        if (name == NULL) {
            fprintf(stream, "Capability ID 0x%02" PRIx64 "\n", id);
            continue;
        }
        fputs(id == 0x09 ? "Vendor Specific Information" : name, stream);
        switch (id) {
        case 0x01:
            print_power_management(stream, capability);
            break;
        case 0x05:
            print_msi(stream, capability);
            break;
        case 0x11:
            print_msix(stream, capability);
            break;
        case 0x10:
            print_express(stream, capability);
            break;
        case 0x09: {
            const char *data = json_string_value(json_object_get(capability, "data"));
            fprintf(stream, ": Len=%02" PRIx64 " <%s>\n", number(capability, "length"),
                    data != NULL ? data : "?");
            break;
        }
        default:
            fputc('\n', stream);
            break;
        }
    }
    json_array_foreach (extended, index, capability) {
        const char *name = json_string_value(json_object_get(capability, "name"));
        const char *serial = json_string_value(json_object_get(capability, "serial"));

        fprintf(stream, PROBE_INDENT "Capabilities: [%03" PRIx64 " v%" PRIu64 "] ",
                number(capability, "offset"), number(capability, "version"));
        if (name != NULL)
            fputs(name, stream);
        else
            fprintf(stream, "Extended Capability ID 0x%04" PRIx64, number(capability, "id"));
        if (serial != NULL)
            fprintf(stream, " %s", serial);
        if (json_object_get(capability, "vsec_id") != NULL)
            fprintf(stream, ": ID=%04" PRIx64 " Rev=%" PRIu64 " Len=%03" PRIx64,
                    number(capability, "vsec_id"), number(capability, "vsec_revision"),
                    number(capability, "vsec_length"));
        fputc('\n', stream);
    }
}

static void print_pci(FILE *stream, const json_t *pci)
{
    const char *class_name = json_string_value(json_object_get(pci, "class"));
    uint64_t pin = number(pci, "interrupt_pin");
    char size[32];

    fprintf(stream, "\nPCI configuration space (%s):\n",
            output_size(size, sizeof(size), number(pci, "config_size")));
    if (json_object_get(pci, "vendor_id") == NULL)
        return;
    fprintf(stream,
            PROBE_INDENT "%04" PRIx64 ":%04" PRIx64 " (rev %02" PRIx64 "), class %06" PRIx64
                         ": %s\n",
            number(pci, "vendor_id"), number(pci, "device_id"), number(pci, "revision"),
            number(pci, "class_code"), class_name != NULL ? class_name : "Reserved class");
    if (json_object_get(pci, "subsystem_id") != NULL)
        fprintf(stream, PROBE_INDENT "Subsystem: %04" PRIx64 ":%04" PRIx64 "\n",
                number(pci, "subsystem_vendor_id"), number(pci, "subsystem_id"));
    fprintf(stream, PROBE_INDENT "Header type: %" PRIu64 "%s\n", number(pci, "header_type"),
            flag(pci, "multifunction") ? ", multi-function" : "");
    print_bits(stream, "Control", number(pci, "command"), pci_decode_command_bits);
    print_bits(stream, "Status", number(pci, "status"), pci_decode_status_bits);
    if (pin == 0)
        fprintf(stream, PROBE_INDENT "Interrupt: none\n");
    else if (pin <= 4)
        fprintf(stream, PROBE_INDENT "Interrupt: pin %c\n", (char)('A' + pin - 1));
    else
        fprintf(stream, PROBE_INDENT "Interrupt: pin %" PRIu64 " (invalid)\n", pin);
    print_bars(stream, pci);
    print_capabilities(stream, pci);
}

int probe_print(FILE *stream, const json_t *report)
{
    const json_t *pci = json_object_get(report, "pci");
    const json_t *problems = json_object_get(report, "problems");
    const json_t *problem;
    size_t index;
    int ret;

    print_session(stream, report);
    ret = print_regions(stream, json_object_get(report, "regions"));
    if (ret == 0)
        ret = print_irqs(stream, json_object_get(report, "irqs"));
    if (ret < 0)
        return ret;
    if (json_is_object(pci))
        print_pci(stream, pci);
    if (json_array_size(problems) > 0) {
        fprintf(stream, "\nProblems:\n");
        json_array_foreach (problems, index, problem)
            fprintf(stream, PROBE_INDENT "%s\n", json_string_value(problem));
    }
    return 0;
}
