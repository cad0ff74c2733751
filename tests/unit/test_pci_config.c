/*
 * Unit tests for the PCI configuration space emulation (lib/pci_config.c): header fields and
 * their masks, BAR and ROM sizing, the capability list, each capability's registers, access
 * bounds and reset, read through the same vu_pci_config_read/write a client reaches.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <check.h>

#include "pci_config.h"
#include "test_runner.h"

#define TEST_VENDOR           0x1af4
#define TEST_DEVICE           0x10f0
#define TEST_SUBSYSTEM_VENDOR 0x1b36
#define TEST_SUBSYSTEM        0x0042
#define TEST_CLASS            0xff0001u
#define TEST_REVISION         0x07
#define TEST_PIN              1

static struct vu_pci_config *config;

static const struct vfio_userd_pci_identity test_identity = {
    .vendor_id = TEST_VENDOR,
    .device_id = TEST_DEVICE,
    .subsystem_vendor_id = TEST_SUBSYSTEM_VENDOR,
    .subsystem_id = TEST_SUBSYSTEM,
    .class_code = TEST_CLASS,
    .revision = TEST_REVISION,
    .interrupt_pin = TEST_PIN,
};

static void setup(void)
{
    /* Heap-allocated so AddressSanitizer sees any access past its 16 KiB. */
    config = malloc(sizeof(*config));
    ck_assert_ptr_nonnull(config);
    vu_pci_config_init(config, &test_identity);
}

static void teardown(void)
{
    free(config);
    config = NULL;
}

static uint32_t read_register(uint64_t offset, uint32_t width)
{
    uint8_t bytes[4] = {0};
    uint32_t value = 0;

    ck_assert_int_eq(vu_pci_config_read(config, offset, bytes, width), 0);
    for (uint32_t i = 0; i < width; i++)
        value |= (uint32_t)bytes[i] << (8 * i);
    return value;
}

static void write_register(uint64_t offset, uint32_t width, uint32_t value)
{
    uint8_t bytes[4];

    for (uint32_t i = 0; i < width; i++)
        bytes[i] = (uint8_t)(value >> (8 * i));
    ck_assert_int_eq(vu_pci_config_write(config, offset, bytes, width), 0);
}

static uint32_t read8(uint64_t offset)
{
    return read_register(offset, 1);
}

static uint32_t read16(uint64_t offset)
{
    return read_register(offset, 2);
}

static uint32_t read32(uint64_t offset)
{
    return read_register(offset, 4);
}

static void write8(uint64_t offset, uint32_t value)
{
    write_register(offset, 1, value);
}

static void write16(uint64_t offset, uint32_t value)
{
    write_register(offset, 2, value);
}

static void write32(uint64_t offset, uint32_t value)
{
    write_register(offset, 4, value);
}

/* Writes all ones and returns what reads back: the way an OS sizes a BAR. */
static uint32_t size_register(uint64_t offset)
{
    write32(offset, 0xffffffff);
    return read32(offset);
}

/* Collects the capability IDs and offsets by walking the list as a guest would. */
static unsigned walk_capabilities(uint8_t *ids, uint8_t *offsets, unsigned max)
{
    unsigned count = 0;
    uint32_t offset = read8(PCI_CAPABILITY_LIST);

    while (offset != 0) {
        ck_assert_uint_lt(count, max);
        ck_assert_uint_ge(offset, VU_PCI_CAPABILITY_START);
        ck_assert_uint_eq(offset % 4, 0);
        ids[count] = (uint8_t)read8(offset + PCI_CAP_LIST_ID);
        offsets[count] = (uint8_t)offset;
        count++;
        offset = read8(offset + PCI_CAP_LIST_NEXT);
    }
    return count;
}

/* ---- header ---- */

START_TEST(test_header_identity)
{
    ck_assert_uint_eq(config->size, VU_PCI_CONFIG_SIZE);
    ck_assert_uint_eq(read16(PCI_VENDOR_ID), TEST_VENDOR);
    ck_assert_uint_eq(read16(PCI_DEVICE_ID), TEST_DEVICE);
    ck_assert_uint_eq(read32(PCI_CLASS_REVISION), TEST_CLASS << 8 | TEST_REVISION);
    ck_assert_uint_eq(read16(PCI_SUBSYSTEM_VENDOR_ID), TEST_SUBSYSTEM_VENDOR);
    ck_assert_uint_eq(read16(PCI_SUBSYSTEM_ID), TEST_SUBSYSTEM);
    ck_assert_uint_eq(read8(PCI_INTERRUPT_PIN), TEST_PIN);
    ck_assert_uint_eq(read8(PCI_HEADER_TYPE), PCI_HEADER_TYPE_NORMAL);
    ck_assert_uint_eq(read8(PCI_CAPABILITY_LIST), 0);
    ck_assert_uint_eq(read16(PCI_STATUS) & PCI_STATUS_CAP_LIST, 0);

    /* None of it moves when written. */
    write32(PCI_VENDOR_ID, 0);
    write32(PCI_CLASS_REVISION, 0);
    write8(PCI_HEADER_TYPE, 0xff);
    write32(PCI_SUBSYSTEM_VENDOR_ID, 0);
    write8(PCI_INTERRUPT_PIN, 3);
    write8(PCI_CAPABILITY_LIST, 0x80);
    write32(PCI_CARDBUS_CIS, 0xffffffff);
    ck_assert_uint_eq(read16(PCI_VENDOR_ID), TEST_VENDOR);
    ck_assert_uint_eq(read16(PCI_DEVICE_ID), TEST_DEVICE);
    ck_assert_uint_eq(read32(PCI_CLASS_REVISION), TEST_CLASS << 8 | TEST_REVISION);
    ck_assert_uint_eq(read8(PCI_HEADER_TYPE), PCI_HEADER_TYPE_NORMAL);
    ck_assert_uint_eq(read16(PCI_SUBSYSTEM_VENDOR_ID), TEST_SUBSYSTEM_VENDOR);
    ck_assert_uint_eq(read8(PCI_INTERRUPT_PIN), TEST_PIN);
    ck_assert_uint_eq(read8(PCI_CAPABILITY_LIST), 0);
    ck_assert_uint_eq(read32(PCI_CARDBUS_CIS), 0);
}
END_TEST

START_TEST(test_identity_validation)
{
    struct vfio_userd_pci_identity identity = test_identity;

    identity.vendor_id = 0xffff;
    ck_assert_int_eq(vu_pci_config_set_identity(config, &identity), -EINVAL);
    identity.vendor_id = 0;
    ck_assert_int_eq(vu_pci_config_set_identity(config, &identity), -EINVAL);
    identity = test_identity;
    identity.class_code = 0x1000000;
    ck_assert_int_eq(vu_pci_config_set_identity(config, &identity), -EINVAL);
    identity = test_identity;
    identity.interrupt_pin = 5;
    ck_assert_int_eq(vu_pci_config_set_identity(config, &identity), -EINVAL);
    ck_assert_int_eq(vu_pci_config_set_identity(config, NULL), -EINVAL);
    /* A refused identity leaves the previous one in place. */
    ck_assert_uint_eq(read16(PCI_VENDOR_ID), TEST_VENDOR);
    ck_assert_uint_eq(read8(PCI_INTERRUPT_PIN), TEST_PIN);

    identity = test_identity;
    identity.interrupt_pin = 4;
    identity.device_id = 0x1234;
    ck_assert_int_eq(vu_pci_config_set_identity(config, &identity), 0);
    ck_assert_uint_eq(read16(PCI_DEVICE_ID), 0x1234);
    ck_assert_uint_eq(read8(PCI_INTERRUPT_PIN), 4);
}
END_TEST

START_TEST(test_finalize_needs_identity)
{
    struct vfio_userd_pci_identity identity = test_identity;

    vu_pci_config_init(config, NULL);
    ck_assert_uint_eq(read16(PCI_VENDOR_ID), 0);
    ck_assert_int_eq(vu_pci_config_finalize(config), -EINVAL);

    identity.interrupt_pin = 9;
    vu_pci_config_init(config, &identity);
    ck_assert_uint_eq(read16(PCI_VENDOR_ID), 0);
    ck_assert_uint_eq(read8(PCI_INTERRUPT_PIN), 0);
    ck_assert_int_eq(vu_pci_config_finalize(config), -EINVAL);

    ck_assert_int_eq(vu_pci_config_set_identity(config, &test_identity), 0);
    ck_assert_int_eq(vu_pci_config_finalize(config), 0);
}
END_TEST

START_TEST(test_command_register)
{
    const uint32_t always =
        PCI_COMMAND_MASTER | PCI_COMMAND_PARITY | PCI_COMMAND_SERR | PCI_COMMAND_INTX_DISABLE;

    ck_assert_uint_eq(read16(PCI_COMMAND), 0);
    write16(PCI_COMMAND, 0xffff);
    /* Without BARs neither decode enable sticks. */
    ck_assert_uint_eq(read16(PCI_COMMAND), always);
    ck_assert(vu_pci_config_bus_master_enabled(config));
    ck_assert(vu_pci_config_intx_disabled(config));
    ck_assert(!vu_pci_config_memory_enabled(config));
    ck_assert(!vu_pci_config_io_enabled(config));

    write16(PCI_COMMAND, PCI_COMMAND_MASTER);
    ck_assert(vu_pci_config_bus_master_enabled(config));
    ck_assert(!vu_pci_config_intx_disabled(config));
    write16(PCI_COMMAND, 0);
    ck_assert(!vu_pci_config_bus_master_enabled(config));

    ck_assert_int_eq(vu_pci_config_set_bar(config, 0, 4096, 0), 0);
    write16(PCI_COMMAND, 0xffff);
    ck_assert_uint_eq(read16(PCI_COMMAND), always | PCI_COMMAND_MEMORY);
    ck_assert(vu_pci_config_memory_enabled(config));
    ck_assert(!vu_pci_config_io_enabled(config));

    ck_assert_int_eq(vu_pci_config_set_bar(config, 1, 16, VFIO_USERD_BAR_IO), 0);
    write16(PCI_COMMAND, 0xffff);
    ck_assert_uint_eq(read16(PCI_COMMAND), always | PCI_COMMAND_MEMORY | PCI_COMMAND_IO);
    ck_assert(vu_pci_config_io_enabled(config));
}
END_TEST

START_TEST(test_command_io_only_and_rom_only)
{
    ck_assert_int_eq(vu_pci_config_set_bar(config, 2, 8, VFIO_USERD_BAR_IO), 0);
    write16(PCI_COMMAND, PCI_COMMAND_IO | PCI_COMMAND_MEMORY);
    ck_assert_uint_eq(read16(PCI_COMMAND), PCI_COMMAND_IO);

    vu_pci_config_init(config, &test_identity);
    ck_assert_int_eq(vu_pci_config_set_rom(config, 4096), 0);
    write16(PCI_COMMAND, PCI_COMMAND_IO | PCI_COMMAND_MEMORY);
    ck_assert_uint_eq(read16(PCI_COMMAND), PCI_COMMAND_MEMORY);
}
END_TEST

START_TEST(test_status_write_one_to_clear)
{
    const uint32_t errors = PCI_STATUS_PARITY | PCI_STATUS_SIG_TARGET_ABORT |
                            PCI_STATUS_REC_TARGET_ABORT | PCI_STATUS_REC_MASTER_ABORT |
                            PCI_STATUS_SIG_SYSTEM_ERROR | PCI_STATUS_DETECTED_PARITY;

    ck_assert_int_eq(vu_pci_config_add_power_management(config), 0);
    ck_assert_uint_eq(read16(PCI_STATUS), PCI_STATUS_CAP_LIST);

    /* Writing ones where nothing is set sets nothing. */
    write16(PCI_STATUS, 0xffff);
    ck_assert_uint_eq(read16(PCI_STATUS), PCI_STATUS_CAP_LIST);

    /* The device side raises the error bits; the client clears them by writing ones. */
    config->bytes[PCI_STATUS] |= (uint8_t)errors;
    config->bytes[PCI_STATUS + 1] |= (uint8_t)(errors >> 8);
    ck_assert_uint_eq(read16(PCI_STATUS), PCI_STATUS_CAP_LIST | errors);
    write16(PCI_STATUS, 0);
    ck_assert_uint_eq(read16(PCI_STATUS), PCI_STATUS_CAP_LIST | errors);
    write16(PCI_STATUS, PCI_STATUS_REC_MASTER_ABORT | PCI_STATUS_PARITY);
    ck_assert_uint_eq(read16(PCI_STATUS),
                      PCI_STATUS_CAP_LIST |
                          (errors & ~(uint32_t)(PCI_STATUS_REC_MASTER_ABORT | PCI_STATUS_PARITY)));
    /* A one-byte write of the upper half clears only there. */
    write8(PCI_STATUS + 1, PCI_STATUS_DETECTED_PARITY >> 8);
    ck_assert_uint_eq(read16(PCI_STATUS) & PCI_STATUS_DETECTED_PARITY, 0);
    ck_assert_uint_ne(read16(PCI_STATUS) & PCI_STATUS_SIG_SYSTEM_ERROR, 0);
    write16(PCI_STATUS, 0xffff);
    ck_assert_uint_eq(read16(PCI_STATUS), PCI_STATUS_CAP_LIST);
}
END_TEST

START_TEST(test_status_interrupt_bit)
{
    vu_pci_config_set_intx_status(config, true);
    ck_assert_uint_eq(read16(PCI_STATUS), PCI_STATUS_INTERRUPT);
    /* Read-only to the client, in both directions. */
    write16(PCI_STATUS, 0xffff);
    ck_assert_uint_eq(read16(PCI_STATUS), PCI_STATUS_INTERRUPT);
    vu_pci_config_set_intx_status(config, false);
    ck_assert_uint_eq(read16(PCI_STATUS), 0);
    write16(PCI_STATUS, PCI_STATUS_INTERRUPT);
    ck_assert_uint_eq(read16(PCI_STATUS), 0);

    /* Interrupt Disable keeps the line from the client, not the status (PCI 3.0 6.2.3). */
    write16(PCI_COMMAND, PCI_COMMAND_INTX_DISABLE);
    vu_pci_config_set_intx_status(config, true);
    ck_assert_uint_eq(read16(PCI_STATUS), PCI_STATUS_INTERRUPT);
    write16(PCI_COMMAND, 0);
    ck_assert_uint_eq(read16(PCI_STATUS), PCI_STATUS_INTERRUPT);
    write16(PCI_COMMAND, PCI_COMMAND_INTX_DISABLE);
    ck_assert_uint_eq(read16(PCI_STATUS), PCI_STATUS_INTERRUPT);
}
END_TEST

START_TEST(test_scratch_registers)
{
    write8(PCI_CACHE_LINE_SIZE, 0x10);
    write8(PCI_LATENCY_TIMER, 0x40);
    write8(PCI_INTERRUPT_LINE, 0x0b);
    ck_assert_uint_eq(read8(PCI_CACHE_LINE_SIZE), 0x10);
    ck_assert_uint_eq(read8(PCI_LATENCY_TIMER), 0x40);
    ck_assert_uint_eq(read8(PCI_INTERRUPT_LINE), 0x0b);
    /* BIST, Min_Gnt and Max_Lat are not implemented. */
    write8(PCI_BIST, 0xff);
    write8(PCI_MIN_GNT, 0xff);
    write8(PCI_MAX_LAT, 0xff);
    ck_assert_uint_eq(read8(PCI_BIST), 0);
    ck_assert_uint_eq(read8(PCI_MIN_GNT), 0);
    ck_assert_uint_eq(read8(PCI_MAX_LAT), 0);
}
END_TEST

START_TEST(test_wide_write_applies_masks_per_byte)
{
    uint8_t ones[PCI_STD_HEADER_SIZEOF];
    uint8_t after[PCI_STD_HEADER_SIZEOF];

    ck_assert_int_eq(vu_pci_config_set_bar(config, 0, 4096, 0), 0);
    memset(ones, 0xff, sizeof(ones));
    ck_assert_int_eq(vu_pci_config_write(config, 0, ones, sizeof(ones)), 0);
    ck_assert_int_eq(vu_pci_config_read(config, 0, after, sizeof(after)), 0);
    ck_assert_uint_eq(after[PCI_VENDOR_ID], TEST_VENDOR & 0xff);
    ck_assert_uint_eq(after[PCI_HEADER_TYPE], 0);
    ck_assert_uint_eq(after[PCI_INTERRUPT_PIN], TEST_PIN);
    ck_assert_uint_eq(after[PCI_INTERRUPT_LINE], 0xff);
    ck_assert_uint_eq(read32(PCI_BASE_ADDRESS_0), 0xfffff000);
    ck_assert_uint_eq(read32(PCI_BASE_ADDRESS_1), 0);

    /* An unaligned write straddling the device ID and the command register. */
    write16(PCI_COMMAND, 0);
    write16(PCI_DEVICE_ID + 1, 0x0600);
    ck_assert_uint_eq(read16(PCI_DEVICE_ID), TEST_DEVICE);
    ck_assert_uint_eq(read16(PCI_COMMAND), PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
}
END_TEST

/* ---- BARs ---- */

START_TEST(test_bar_32bit_memory)
{
    ck_assert_int_eq(vu_pci_config_set_bar(config, 0, 4096, 0), 0);
    ck_assert_uint_eq(read32(PCI_BASE_ADDRESS_0), PCI_BASE_ADDRESS_MEM_TYPE_32);
    ck_assert_uint_eq(size_register(PCI_BASE_ADDRESS_0), 0xfffff000);
    write32(PCI_BASE_ADDRESS_0, 0xfebc1234);
    ck_assert_uint_eq(read32(PCI_BASE_ADDRESS_0), 0xfebc1000);
    ck_assert_uint_eq(config->bar_size[0], 4096);
    ck_assert_uint_eq(config->bar_flags[0], 0);

    /* Smallest and largest 32-bit memory BARs. */
    ck_assert_int_eq(vu_pci_config_set_bar(config, 1, 16, 0), 0);
    ck_assert_uint_eq(size_register(PCI_BASE_ADDRESS_1), 0xfffffff0);
    ck_assert_int_eq(vu_pci_config_set_bar(config, 2, UINT64_C(1) << 31, 0), 0);
    ck_assert_uint_eq(size_register(PCI_BASE_ADDRESS_2), 0x80000000);
}
END_TEST

START_TEST(test_bar_prefetchable)
{
    ck_assert_int_eq(vu_pci_config_set_bar(config, 3, 1u << 20, VFIO_USERD_BAR_PREFETCHABLE), 0);
    ck_assert_uint_eq(read32(PCI_BASE_ADDRESS_3), PCI_BASE_ADDRESS_MEM_PREFETCH);
    ck_assert_uint_eq(size_register(PCI_BASE_ADDRESS_3),
                      0xfff00000 | PCI_BASE_ADDRESS_MEM_PREFETCH);
    /* Writing zero keeps the read-only type bits. */
    write32(PCI_BASE_ADDRESS_3, 0);
    ck_assert_uint_eq(read32(PCI_BASE_ADDRESS_3), PCI_BASE_ADDRESS_MEM_PREFETCH);
}
END_TEST

START_TEST(test_bar_64bit_pairs)
{
    const uint32_t kind = VFIO_USERD_BAR_64BIT | VFIO_USERD_BAR_PREFETCHABLE;

    ck_assert_int_eq(vu_pci_config_set_bar(config, 2, 1u << 20, kind), 0);
    ck_assert_uint_eq(read32(PCI_BASE_ADDRESS_2),
                      PCI_BASE_ADDRESS_MEM_TYPE_64 | PCI_BASE_ADDRESS_MEM_PREFETCH);
    ck_assert_uint_eq(size_register(PCI_BASE_ADDRESS_2),
                      0xfff00000 | PCI_BASE_ADDRESS_MEM_TYPE_64 | PCI_BASE_ADDRESS_MEM_PREFETCH);
    ck_assert_uint_eq(size_register(PCI_BASE_ADDRESS_3), 0xffffffff);
    ck_assert(config->bar_upper_half[3]);
    ck_assert_uint_eq(config->bar_size[3], 0);
    /* The upper half cannot be declared again, nor overlapped by another 64-bit BAR. */
    ck_assert_int_eq(vu_pci_config_set_bar(config, 3, 4096, 0), -EEXIST);
    ck_assert_int_eq(vu_pci_config_set_bar(config, 1, 4096, VFIO_USERD_BAR_64BIT), -EEXIST);
    ck_assert_int_eq(vu_pci_config_set_bar(config, 2, 4096, 0), -EEXIST);

    /* Above 4 GiB the whole low dword is read-only. */
    ck_assert_int_eq(vu_pci_config_set_bar(config, 0, UINT64_C(8) << 30, VFIO_USERD_BAR_64BIT), 0);
    ck_assert_uint_eq(size_register(PCI_BASE_ADDRESS_0), PCI_BASE_ADDRESS_MEM_TYPE_64);
    ck_assert_uint_eq(size_register(PCI_BASE_ADDRESS_1), 0xfffffffe);
    write32(PCI_BASE_ADDRESS_1, 0x12345679);
    ck_assert_uint_eq(read32(PCI_BASE_ADDRESS_1), 0x12345678);

    /* A 64-bit BAR 4 takes BAR 5; BAR 5 cannot start one. */
    ck_assert_int_eq(vu_pci_config_set_bar(config, 5, 4096, VFIO_USERD_BAR_64BIT), -EINVAL);
    ck_assert_int_eq(vu_pci_config_set_bar(config, 5, 4096, 0), 0);
    ck_assert_int_eq(vu_pci_config_set_bar(config, 4, 4096, VFIO_USERD_BAR_64BIT), -EEXIST);
    ck_assert_uint_eq(read32(PCI_BASE_ADDRESS_4), 0);
}
END_TEST

START_TEST(test_bar_io)
{
    ck_assert_int_eq(vu_pci_config_set_bar(config, 4, 32, VFIO_USERD_BAR_IO), 0);
    ck_assert_uint_eq(read32(PCI_BASE_ADDRESS_4), PCI_BASE_ADDRESS_SPACE_IO);
    ck_assert_uint_eq(size_register(PCI_BASE_ADDRESS_4), 0xffffffe0 | PCI_BASE_ADDRESS_SPACE_IO);
    write32(PCI_BASE_ADDRESS_4, 0xc05f);
    ck_assert_uint_eq(read32(PCI_BASE_ADDRESS_4), 0xc041);

    ck_assert_int_eq(vu_pci_config_set_bar(config, 0, 4, VFIO_USERD_BAR_IO), 0);
    ck_assert_uint_eq(size_register(PCI_BASE_ADDRESS_0), 0xfffffffd);
    ck_assert_int_eq(vu_pci_config_set_bar(config, 1, 256, VFIO_USERD_BAR_IO), 0);
    ck_assert_uint_eq(size_register(PCI_BASE_ADDRESS_1), 0xffffff01);
}
END_TEST

START_TEST(test_bar_unused_reads_zero)
{
    ck_assert_int_eq(vu_pci_config_set_bar(config, 1, 4096, 0), 0);
    for (uint32_t bar = 0; bar < VU_PCI_BAR_COUNT; bar++) {
        if (bar == 1)
            continue;
        ck_assert_uint_eq(size_register(PCI_BASE_ADDRESS_0 + 4 * bar), 0);
    }
}
END_TEST

START_TEST(test_bar_validation)
{
    ck_assert_int_eq(vu_pci_config_set_bar(config, 6, 4096, 0), -EINVAL);
    ck_assert_int_eq(vu_pci_config_set_bar(config, UINT32_MAX, 4096, 0), -EINVAL);
    ck_assert_int_eq(vu_pci_config_set_bar(config, 0, 0, 0), -EINVAL);
    ck_assert_int_eq(vu_pci_config_set_bar(config, 0, 8, 0), -EINVAL);
    ck_assert_int_eq(vu_pci_config_set_bar(config, 0, 24, 0), -EINVAL);
    ck_assert_int_eq(vu_pci_config_set_bar(config, 0, 4097, 0), -EINVAL);
    ck_assert_int_eq(vu_pci_config_set_bar(config, 0, UINT64_C(1) << 32, 0), -EINVAL);
    ck_assert_int_eq(vu_pci_config_set_bar(config, 0, UINT64_MAX, VFIO_USERD_BAR_64BIT), -EINVAL);
    ck_assert_int_eq(vu_pci_config_set_bar(config, 0, 2, VFIO_USERD_BAR_IO), -EINVAL);
    ck_assert_int_eq(vu_pci_config_set_bar(config, 0, 512, VFIO_USERD_BAR_IO), -EINVAL);
    ck_assert_int_eq(vu_pci_config_set_bar(config, 0, 12, VFIO_USERD_BAR_IO), -EINVAL);
    ck_assert_int_eq(vu_pci_config_set_bar(config, 0, 16, VFIO_USERD_BAR_IO | VFIO_USERD_BAR_64BIT),
                     -EINVAL);
    ck_assert_int_eq(
        vu_pci_config_set_bar(config, 0, 16, VFIO_USERD_BAR_IO | VFIO_USERD_BAR_PREFETCHABLE),
        -EINVAL);
    /* Nothing was declared by the refusals. */
    for (uint32_t bar = 0; bar < VU_PCI_BAR_COUNT; bar++) {
        ck_assert_uint_eq(config->bar_size[bar], 0);
        ck_assert(!config->bar_upper_half[bar]);
    }
    ck_assert_uint_eq(read16(PCI_COMMAND), 0);
    write16(PCI_COMMAND, PCI_COMMAND_MEMORY | PCI_COMMAND_IO);
    ck_assert_uint_eq(read16(PCI_COMMAND), 0);

    /* The largest 64-bit BAR, and region flags other than the BAR kind are ignored. */
    ck_assert_int_eq(vu_pci_config_set_bar(config, 0, UINT64_C(1) << 63, VFIO_USERD_BAR_64BIT), 0);
    ck_assert_uint_eq(size_register(PCI_BASE_ADDRESS_1), 0x80000000);
    ck_assert_int_eq(vu_pci_config_set_bar(config, 2, 4096,
                                           VFIO_USERD_REGION_READABLE | VFIO_USERD_REGION_WRITABLE |
                                               VFIO_USERD_REGION_MEMORY |
                                               VFIO_USERD_REGION_MAPPABLE),
                     0);
    ck_assert_uint_eq(config->bar_flags[2], 0);
    ck_assert_uint_eq(read32(PCI_BASE_ADDRESS_2), PCI_BASE_ADDRESS_MEM_TYPE_32);
    ck_assert_int_eq(vu_pci_config_set_bar(config, 2, 4096, 0), -EEXIST);
}
END_TEST

/* ---- expansion ROM ---- */

START_TEST(test_rom_absent)
{
    ck_assert_uint_eq(size_register(PCI_ROM_ADDRESS), 0);
}
END_TEST

START_TEST(test_rom_sizing)
{
    ck_assert_int_eq(vu_pci_config_set_rom(config, 64 * 1024), 0);
    ck_assert_uint_eq(read32(PCI_ROM_ADDRESS), 0);
    ck_assert_uint_eq(size_register(PCI_ROM_ADDRESS), 0xffff0000 | PCI_ROM_ADDRESS_ENABLE);
    write32(PCI_ROM_ADDRESS, 0xfffffffe);
    ck_assert_uint_eq(read32(PCI_ROM_ADDRESS), 0xffff0000);
    write32(PCI_ROM_ADDRESS, 0xfeb40001);
    ck_assert_uint_eq(read32(PCI_ROM_ADDRESS), 0xfeb40001);
    ck_assert_uint_eq(config->rom_size, 64 * 1024);
    ck_assert_int_eq(vu_pci_config_set_rom(config, 4096), -EEXIST);
}
END_TEST

START_TEST(test_rom_limits)
{
    ck_assert_int_eq(vu_pci_config_set_rom(config, 0), -EINVAL);
    ck_assert_int_eq(vu_pci_config_set_rom(config, 1024), -EINVAL);
    ck_assert_int_eq(vu_pci_config_set_rom(config, 3000), -EINVAL);
    ck_assert_int_eq(vu_pci_config_set_rom(config, 32u << 20), -EINVAL);
    ck_assert_int_eq(vu_pci_config_set_rom(config, UINT64_MAX), -EINVAL);
    ck_assert_uint_eq(config->rom_size, 0);

    /* The smallest ROM leaves reserved bits 10:1 read-only. */
    ck_assert_int_eq(vu_pci_config_set_rom(config, 2048), 0);
    ck_assert_uint_eq(size_register(PCI_ROM_ADDRESS), 0xfffff801);

    vu_pci_config_init(config, &test_identity);
    ck_assert_int_eq(vu_pci_config_set_rom(config, 16u << 20), 0);
    ck_assert_uint_eq(size_register(PCI_ROM_ADDRESS), 0xff000001);
}
END_TEST

/* ---- capability list ---- */

START_TEST(test_capability_chain)
{
    static const uint8_t body[5] = {0xde, 0xad, 0xbe, 0xef, 0x42};
    uint8_t ids[8], offsets[8];
    unsigned count;

    ck_assert_int_eq(vu_pci_config_add_power_management(config), 0);
    ck_assert_int_eq(vu_pci_config_add_vendor_specific(config, body, sizeof(body)), 0);
    ck_assert_int_eq(vu_pci_config_add_msi(config, 4, true), 0);
    ck_assert_int_eq(vu_pci_config_add_msix(config, 8, 0, 0, 0, 0x800), 0);
    ck_assert_int_eq(vu_pci_config_add_express(config), 0);
    ck_assert_uint_ne(read16(PCI_STATUS) & PCI_STATUS_CAP_LIST, 0);

    count = walk_capabilities(ids, offsets, 8);
    ck_assert_uint_eq(count, 5);
    ck_assert_uint_eq(ids[0], PCI_CAP_ID_PM);
    ck_assert_uint_eq(ids[1], PCI_CAP_ID_VNDR);
    ck_assert_uint_eq(ids[2], PCI_CAP_ID_MSI);
    ck_assert_uint_eq(ids[3], PCI_CAP_ID_MSIX);
    ck_assert_uint_eq(ids[4], PCI_CAP_ID_EXP);
    /* Packed in call order, each at the next dword boundary. */
    ck_assert_uint_eq(offsets[0], 0x40);
    ck_assert_uint_eq(offsets[1], 0x40 + PCI_PM_SIZEOF);
    ck_assert_uint_eq(offsets[2], 0x48 + 8); /* 3 + 5 = 8 bytes of vendor-specific */
    ck_assert_uint_eq(offsets[3], 0x50 + VU_PCI_MSI_MASKED_SIZE);
    ck_assert_uint_eq(offsets[4], 0x68 + 12);
    ck_assert_uint_eq(config->power_management_offset, offsets[0]);
    ck_assert_uint_eq(config->msi_offset, offsets[2]);
    ck_assert_uint_eq(config->msix_offset, offsets[3]);
    ck_assert_uint_eq(config->express_offset, offsets[4]);

    /* The list itself is read-only. */
    write8(offsets[0] + PCI_CAP_LIST_NEXT, 0);
    write8(offsets[0] + PCI_CAP_LIST_ID, 0x55);
    write8(PCI_CAPABILITY_LIST, 0);
    ck_assert_uint_eq(walk_capabilities(ids, offsets, 8), 5);
    ck_assert_uint_eq(ids[0], PCI_CAP_ID_PM);
}
END_TEST

START_TEST(test_capability_alignment)
{
    uint8_t ids[4], offsets[4];
    uint8_t byte = 0x11;

    /* A 3 + 1 byte vendor capability, then MSI without masking (14 bytes used, 16 taken). */
    ck_assert_int_eq(vu_pci_config_add_vendor_specific(config, &byte, 1), 0);
    ck_assert_int_eq(vu_pci_config_add_vendor_specific(config, NULL, 0), 0);
    ck_assert_int_eq(vu_pci_config_add_msi(config, 1, false), 0);
    ck_assert_int_eq(vu_pci_config_add_power_management(config), 0);
    ck_assert_uint_eq(walk_capabilities(ids, offsets, 4), 4);
    ck_assert_uint_eq(offsets[0], 0x40);
    ck_assert_uint_eq(offsets[1], 0x44);
    ck_assert_uint_eq(offsets[2], 0x48);
    ck_assert_uint_eq(offsets[3], 0x48 + VU_PCI_MSI_SIZE);
}
END_TEST

START_TEST(test_capability_duplicates)
{
    ck_assert_int_eq(vu_pci_config_add_power_management(config), 0);
    ck_assert_int_eq(vu_pci_config_add_msi(config, 1, false), 0);
    ck_assert_int_eq(vu_pci_config_add_msix(config, 1, 0, 0, 0, 16), 0);
    ck_assert_int_eq(vu_pci_config_add_express(config), 0);
    ck_assert_int_eq(vu_pci_config_add_vendor_specific(config, NULL, 0), 0);
    ck_assert_int_eq(vu_pci_config_add_power_management(config), -EEXIST);
    ck_assert_int_eq(vu_pci_config_add_msi(config, 2, true), -EEXIST);
    ck_assert_int_eq(vu_pci_config_add_msix(config, 2, 1, 0, 1, 64), -EEXIST);
    ck_assert_int_eq(vu_pci_config_add_express(config), -EEXIST);
    ck_assert_int_eq(vu_pci_config_add_vendor_specific(config, NULL, 0), 0);
}
END_TEST

START_TEST(test_capability_no_space)
{
    static uint8_t body[252];
    uint8_t ids[4], offsets[4];

    /* 192 bytes, exactly 0x40..0xff. */
    ck_assert_int_eq(vu_pci_config_add_vendor_specific(config, body, 252), -ENOSPC);
    ck_assert_uint_eq(read8(PCI_CAPABILITY_LIST), 0);
    ck_assert_uint_eq(read16(PCI_STATUS) & PCI_STATUS_CAP_LIST, 0);
    ck_assert_int_eq(vu_pci_config_add_vendor_specific(config, body, 189), 0);
    ck_assert_uint_eq(read8(0x42), 192);

    ck_assert_int_eq(vu_pci_config_add_vendor_specific(config, NULL, 0), -ENOSPC);
    ck_assert_int_eq(vu_pci_config_add_power_management(config), -ENOSPC);
    ck_assert_int_eq(vu_pci_config_add_msi(config, 1, false), -ENOSPC);
    ck_assert_int_eq(vu_pci_config_add_msix(config, 1, 0, 0, 0, 16), -ENOSPC);
    ck_assert_int_eq(vu_pci_config_add_express(config), -ENOSPC);
    /* A failed add leaves no trace: no half-linked capability, no grown config space. */
    ck_assert_uint_eq(config->size, VU_PCI_CONFIG_SIZE);
    ck_assert_uint_eq(config->power_management_offset, 0);
    ck_assert_uint_eq(config->msi_offset, 0);
    ck_assert_uint_eq(config->msix_offset, 0);
    ck_assert_uint_eq(config->express_offset, 0);
    ck_assert_uint_eq(walk_capabilities(ids, offsets, 4), 1);
}
END_TEST

START_TEST(test_capability_no_space_express)
{
    static uint8_t body[141];

    /* 0x40 + 144 = 0xd0 leaves 48 bytes, less than the 60 Express needs. */
    ck_assert_int_eq(vu_pci_config_add_vendor_specific(config, body, 141), 0);
    ck_assert_int_eq(vu_pci_config_add_express(config), -ENOSPC);
    ck_assert_uint_eq(config->size, VU_PCI_CONFIG_SIZE);
    ck_assert_int_eq(vu_pci_config_add_msi(config, 32, true), 0);
    ck_assert_uint_eq(config->msi_offset, 0xd0);
}
END_TEST

START_TEST(test_vendor_specific)
{
    static const uint8_t body[6] = {1, 2, 3, 4, 5, 6};
    uint8_t back[6];

    ck_assert_int_eq(vu_pci_config_add_vendor_specific(config, NULL, 1), -EINVAL);
    ck_assert_int_eq(vu_pci_config_add_vendor_specific(config, body, 253), -EINVAL);
    ck_assert_int_eq(vu_pci_config_add_vendor_specific(config, body, 255), -EINVAL);
    ck_assert_uint_eq(read8(PCI_CAPABILITY_LIST), 0);

    ck_assert_int_eq(vu_pci_config_add_vendor_specific(config, body, sizeof(body)), 0);
    ck_assert_uint_eq(read8(0x40 + PCI_CAP_LIST_ID), PCI_CAP_ID_VNDR);
    ck_assert_uint_eq(read8(0x40 + PCI_CAP_LIST_NEXT), 0);
    ck_assert_uint_eq(read8(0x40 + PCI_CAP_FLAGS), 3 + sizeof(body));
    ck_assert_int_eq(vu_pci_config_read(config, 0x43, back, sizeof(back)), 0);
    ck_assert_mem_eq(back, body, sizeof(body));
    /* Read-only, body and length alike. */
    memset(back, 0, sizeof(back));
    ck_assert_int_eq(vu_pci_config_write(config, 0x42, back, sizeof(back)), 0);
    ck_assert_int_eq(vu_pci_config_read(config, 0x43, back, sizeof(back)), 0);
    ck_assert_mem_eq(back, body, sizeof(body));
    ck_assert_uint_eq(read8(0x40 + PCI_CAP_FLAGS), 3 + sizeof(body));
}
END_TEST

/* ---- power management ---- */

START_TEST(test_power_management)
{
    uint32_t pm;

    ck_assert_int_eq(vu_pci_config_add_power_management(config), 0);
    pm = config->power_management_offset;
    ck_assert_uint_eq(read8(pm + PCI_CAP_LIST_ID), PCI_CAP_ID_PM);
    ck_assert_uint_eq(read16(pm + PCI_PM_PMC), 3);
    ck_assert_uint_eq(read16(pm + PCI_PM_CTRL), PCI_PM_CTRL_NO_SOFT_RESET);
    ck_assert_uint_eq(vu_pci_config_power_state(config), 0);

    write16(pm + PCI_PM_CTRL, 3);
    ck_assert_uint_eq(vu_pci_config_power_state(config), 3);
    ck_assert_uint_eq(read16(pm + PCI_PM_CTRL), PCI_PM_CTRL_NO_SOFT_RESET | 3);
    /* D1 and D2 are not supported: such writes are discarded. */
    write16(pm + PCI_PM_CTRL, 1);
    ck_assert_uint_eq(vu_pci_config_power_state(config), 3);
    write8(pm + PCI_PM_CTRL, 2);
    ck_assert_uint_eq(vu_pci_config_power_state(config), 3);
    write16(pm + PCI_PM_CTRL, 0);
    ck_assert_uint_eq(vu_pci_config_power_state(config), 0);
    write16(pm + PCI_PM_CTRL, 2);
    ck_assert_uint_eq(vu_pci_config_power_state(config), 0);

    /* No PME: enable and status stay clear; capabilities and No_Soft_Reset are fixed. */
    write32(pm + PCI_PM_PMC - 2, 0xffffffff);
    write32(pm + PCI_PM_CTRL, 0xffffffff);
    ck_assert_uint_eq(read16(pm + PCI_PM_PMC), 3);
    ck_assert_uint_eq(read16(pm + PCI_PM_CTRL), PCI_PM_CTRL_NO_SOFT_RESET | 3);
    ck_assert_uint_eq(read8(pm + PCI_PM_PPB_EXTENSIONS), 0);
    ck_assert_uint_eq(read8(pm + PCI_PM_DATA_REGISTER), 0);
}
END_TEST

START_TEST(test_power_state_without_capability)
{
    ck_assert_uint_eq(vu_pci_config_power_state(config), 0);
}
END_TEST

/* ---- MSI ---- */

START_TEST(test_msi_validation)
{
    ck_assert_int_eq(vu_pci_config_add_msi(config, 0, false), -EINVAL);
    ck_assert_int_eq(vu_pci_config_add_msi(config, 3, false), -EINVAL);
    ck_assert_int_eq(vu_pci_config_add_msi(config, 64, false), -EINVAL);
    ck_assert_int_eq(vu_pci_config_add_msi(config, UINT32_MAX, true), -EINVAL);
    ck_assert_uint_eq(config->msi_offset, 0);
    ck_assert_uint_eq(read8(PCI_CAPABILITY_LIST), 0);
}
END_TEST

START_TEST(test_msi_enable_and_vector_count)
{
    uint32_t msi, enabled = 99;

    ck_assert(!vu_pci_config_msi_enabled(config, &enabled));
    ck_assert_uint_eq(enabled, 0);
    ck_assert_int_eq(vu_pci_config_add_msi(config, 8, true), 0);
    msi = config->msi_offset;
    ck_assert_uint_eq(read8(msi + PCI_CAP_LIST_ID), PCI_CAP_ID_MSI);
    ck_assert_uint_eq(read16(msi + PCI_MSI_FLAGS),
                      3u << 1 | PCI_MSI_FLAGS_64BIT | PCI_MSI_FLAGS_MASKBIT);
    ck_assert(!vu_pci_config_msi_enabled(config, &enabled));
    ck_assert_uint_eq(enabled, 0);

    write16(msi + PCI_MSI_FLAGS, PCI_MSI_FLAGS_ENABLE | 2u << 4);
    ck_assert(vu_pci_config_msi_enabled(config, &enabled));
    ck_assert_uint_eq(enabled, 4);
    ck_assert(vu_pci_config_msi_enabled(config, NULL));

    /* Multiple Message Enable is clamped to what the capability offers. */
    write16(msi + PCI_MSI_FLAGS, PCI_MSI_FLAGS_ENABLE | 7u << 4);
    ck_assert_uint_eq((read16(msi + PCI_MSI_FLAGS) & PCI_MSI_FLAGS_QSIZE) >> 4, 3);
    ck_assert(vu_pci_config_msi_enabled(config, &enabled));
    ck_assert_uint_eq(enabled, 8);

    /* The read-only fields survive a write of all ones. */
    write16(msi + PCI_MSI_FLAGS, 0xffff);
    ck_assert_uint_eq(read16(msi + PCI_MSI_FLAGS), PCI_MSI_FLAGS_ENABLE | 3u << 4 | 3u << 1 |
                                                       PCI_MSI_FLAGS_64BIT | PCI_MSI_FLAGS_MASKBIT);
    write16(msi + PCI_MSI_FLAGS, 0);
    ck_assert(!vu_pci_config_msi_enabled(config, &enabled));
    ck_assert_uint_eq(enabled, 0);
}
END_TEST

START_TEST(test_msi_single_vector)
{
    uint32_t msi, enabled;

    ck_assert_int_eq(vu_pci_config_add_msi(config, 1, false), 0);
    msi = config->msi_offset;
    ck_assert_uint_eq(read16(msi + PCI_MSI_FLAGS), PCI_MSI_FLAGS_64BIT);
    write16(msi + PCI_MSI_FLAGS, PCI_MSI_FLAGS_ENABLE | 5u << 4);
    ck_assert_uint_eq(read16(msi + PCI_MSI_FLAGS), PCI_MSI_FLAGS_64BIT | PCI_MSI_FLAGS_ENABLE);
    ck_assert(vu_pci_config_msi_enabled(config, &enabled));
    ck_assert_uint_eq(enabled, 1);

    /* Without per-vector masking nothing is ever masked, and nothing can be pending. */
    ck_assert(!vu_pci_config_msi_vector_masked(config, 0));
    ck_assert(vu_pci_config_msi_vector_masked(config, 1));
    ck_assert_int_eq(vu_pci_config_msi_set_pending(config, 0, true), -EINVAL);
    /* Without masking the capability ends where the Mask register would start. */
    ck_assert_uint_eq(config->capability_end, msi + VU_PCI_MSI_SIZE);
    write32(msi + PCI_MSI_MASK_64, 0xffffffff);
    ck_assert_uint_eq(read32(msi + PCI_MSI_MASK_64), 0);
}
END_TEST

START_TEST(test_msi_message_registers)
{
    uint32_t msi;

    ck_assert_int_eq(vu_pci_config_add_msi(config, 2, false), 0);
    msi = config->msi_offset;
    write32(msi + PCI_MSI_ADDRESS_LO, 0xfee01007);
    write32(msi + PCI_MSI_ADDRESS_HI, 0x12345678);
    write32(msi + PCI_MSI_DATA_64, 0xabcd4021);
    ck_assert_uint_eq(read32(msi + PCI_MSI_ADDRESS_LO), 0xfee01004);
    ck_assert_uint_eq(read32(msi + PCI_MSI_ADDRESS_HI), 0x12345678);
    /* No extended message data: only the low 16 bits exist. */
    ck_assert_uint_eq(read32(msi + PCI_MSI_DATA_64), 0x4021);
}
END_TEST

START_TEST(test_msi_per_vector_mask)
{
    uint32_t msi;

    ck_assert_int_eq(vu_pci_config_add_msi(config, 4, true), 0);
    msi = config->msi_offset;
    ck_assert_uint_eq(config->capability_end, msi + VU_PCI_MSI_MASKED_SIZE);
    ck_assert_uint_eq(read32(msi + PCI_MSI_MASK_64), 0);
    for (uint32_t vector = 0; vector < 4; vector++)
        ck_assert(!vu_pci_config_msi_vector_masked(config, vector));

    /* Mask bits of unimplemented vectors are reserved. */
    write32(msi + PCI_MSI_MASK_64, 0xffffffff);
    ck_assert_uint_eq(read32(msi + PCI_MSI_MASK_64), 0xf);
    write32(msi + PCI_MSI_MASK_64, 0x5);
    ck_assert(vu_pci_config_msi_vector_masked(config, 0));
    ck_assert(!vu_pci_config_msi_vector_masked(config, 1));
    ck_assert(vu_pci_config_msi_vector_masked(config, 2));
    ck_assert(!vu_pci_config_msi_vector_masked(config, 3));
    ck_assert(vu_pci_config_msi_vector_masked(config, 4));
    ck_assert(vu_pci_config_msi_vector_masked(config, UINT32_MAX));

    /* Pending bits are set by the device and read-only to the client. */
    ck_assert_int_eq(vu_pci_config_msi_set_pending(config, 2, true), 0);
    ck_assert_int_eq(vu_pci_config_msi_set_pending(config, 0, true), 0);
    ck_assert_int_eq(vu_pci_config_msi_set_pending(config, 4, true), -EINVAL);
    ck_assert_uint_eq(read32(msi + PCI_MSI_PENDING_64), 0x5);
    write32(msi + PCI_MSI_PENDING_64, 0);
    ck_assert_uint_eq(read32(msi + PCI_MSI_PENDING_64), 0x5);
    ck_assert_int_eq(vu_pci_config_msi_set_pending(config, 2, false), 0);
    ck_assert_uint_eq(read32(msi + PCI_MSI_PENDING_64), 0x1);
}
END_TEST

START_TEST(test_msi_32_vectors)
{
    uint32_t msi;

    ck_assert_int_eq(vu_pci_config_add_msi(config, 32, true), 0);
    msi = config->msi_offset;
    write32(msi + PCI_MSI_MASK_64, 0xffffffff);
    ck_assert_uint_eq(read32(msi + PCI_MSI_MASK_64), 0xffffffff);
    ck_assert(vu_pci_config_msi_vector_masked(config, 31));
    ck_assert_int_eq(vu_pci_config_msi_set_pending(config, 31, true), 0);
    ck_assert_uint_eq(read32(msi + PCI_MSI_PENDING_64), 0x80000000);
}
END_TEST

START_TEST(test_msi_absent)
{
    ck_assert(vu_pci_config_msi_vector_masked(config, 0));
    ck_assert_int_eq(vu_pci_config_msi_set_pending(config, 0, true), -EINVAL);
    ck_assert(!vu_pci_config_msi_enabled(config, NULL));
}
END_TEST

/* ---- MSI-X ---- */

START_TEST(test_msix_capability)
{
    uint32_t msix;

    ck_assert(!vu_pci_config_msix_enabled(config));
    ck_assert(!vu_pci_config_msix_function_masked(config));
    ck_assert_int_eq(vu_pci_config_add_msix(config, 8, 4, 0, 4, 0x800), 0);
    msix = config->msix_offset;
    ck_assert_uint_eq(read8(msix + PCI_CAP_LIST_ID), PCI_CAP_ID_MSIX);
    ck_assert_uint_eq(read16(msix + PCI_MSIX_FLAGS), 7);
    ck_assert_uint_eq(read32(msix + PCI_MSIX_TABLE), 4);
    ck_assert_uint_eq(read32(msix + PCI_MSIX_PBA), 0x800 | 4);
    ck_assert_uint_eq(config->msix_vectors, 8);
    ck_assert_uint_eq(config->msix_table_bar, 4);
    ck_assert_uint_eq(config->msix_pba_offset, 0x800);

    write16(msix + PCI_MSIX_FLAGS, 0xffff);
    ck_assert_uint_eq(read16(msix + PCI_MSIX_FLAGS),
                      PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL | 7);
    ck_assert(vu_pci_config_msix_enabled(config));
    ck_assert(vu_pci_config_msix_function_masked(config));
    write16(msix + PCI_MSIX_FLAGS, PCI_MSIX_FLAGS_ENABLE);
    ck_assert(vu_pci_config_msix_enabled(config));
    ck_assert(!vu_pci_config_msix_function_masked(config));
    write8(msix + PCI_MSIX_FLAGS + 1, PCI_MSIX_FLAGS_MASKALL >> 8);
    ck_assert(!vu_pci_config_msix_enabled(config));
    ck_assert(vu_pci_config_msix_function_masked(config));

    /* Table and PBA locations are fixed. */
    write32(msix + PCI_MSIX_TABLE, 0xffffffff);
    write32(msix + PCI_MSIX_PBA, 0);
    ck_assert_uint_eq(read32(msix + PCI_MSIX_TABLE), 4);
    ck_assert_uint_eq(read32(msix + PCI_MSIX_PBA), 0x800 | 4);
}
END_TEST

START_TEST(test_msix_table_size_field)
{
    ck_assert_int_eq(vu_pci_config_add_msix(config, 2048, 0, 0x1000, 2, 0x8), 0);
    ck_assert_uint_eq(read16(config->msix_offset + PCI_MSIX_FLAGS), 0x7ff);
    ck_assert_uint_eq(read32(config->msix_offset + PCI_MSIX_TABLE), 0x1000);
    ck_assert_uint_eq(read32(config->msix_offset + PCI_MSIX_PBA), 0x8 | 2);
}
END_TEST

START_TEST(test_msix_validation)
{
    ck_assert_int_eq(vu_pci_config_add_msix(config, 0, 0, 0, 0, 0x800), -EINVAL);
    ck_assert_int_eq(vu_pci_config_add_msix(config, 2049, 0, 0, 0, 0x8000), -EINVAL);
    ck_assert_int_eq(vu_pci_config_add_msix(config, 8, 6, 0, 0, 0x800), -EINVAL);
    ck_assert_int_eq(vu_pci_config_add_msix(config, 8, 0, 0, UINT32_MAX, 0x800), -EINVAL);
    ck_assert_int_eq(vu_pci_config_add_msix(config, 8, 0, 4, 0, 0x800), -EINVAL);
    ck_assert_int_eq(vu_pci_config_add_msix(config, 8, 0, 0, 0, 0x801), -EINVAL);
    ck_assert_int_eq(vu_pci_config_add_msix(config, 8, 0, 0, 0, 0x804), -EINVAL);
    ck_assert_uint_eq(config->msix_offset, 0);
    ck_assert_uint_eq(read8(PCI_CAPABILITY_LIST), 0);
    /* Quadword alignment is all the spec asks, for the table too. */
    ck_assert_int_eq(vu_pci_config_add_msix(config, 8, 0, 8, 0, 0x800), 0);
}
END_TEST

/* Declares an MSI-X capability and BARs, then returns what finalize says. */
static int finalize_msix(uint32_t vectors, uint32_t table_bar, uint32_t table_offset,
                         uint32_t pba_bar, uint32_t pba_offset)
{
    vu_pci_config_init(config, &test_identity);
    ck_assert_int_eq(vu_pci_config_set_bar(config, 0, 4096, 0), 0);
    ck_assert_int_eq(vu_pci_config_set_bar(config, 1, 64, VFIO_USERD_BAR_IO), 0);
    ck_assert_int_eq(vu_pci_config_set_bar(config, 2, 16384, VFIO_USERD_BAR_64BIT), 0);
    ck_assert_int_eq(
        vu_pci_config_add_msix(config, vectors, table_bar, table_offset, pba_bar, pba_offset), 0);
    return vu_pci_config_finalize(config);
}

START_TEST(test_msix_finalize_checks_bars)
{
    /* Fits: table 8 * 16 bytes at 0, PBA one quadword at 0x800. */
    ck_assert_int_eq(finalize_msix(8, 0, 0, 0, 0x800), 0);
    /* Exactly filling the BAR: 0xf80 + 128 = 4096, PBA at the last quadword before it. */
    ck_assert_int_eq(finalize_msix(8, 0, 0xf80, 0, 0xf78), 0);
    /* Table and PBA in different BARs, one of them 64-bit. */
    ck_assert_int_eq(finalize_msix(256, 2, 0, 0, 0), 0);
    /* Table past the end of its BAR. */
    ck_assert_int_eq(finalize_msix(8, 0, 0xf88, 0, 0), -EINVAL);
    ck_assert_int_eq(finalize_msix(257, 0, 0, 2, 0), -EINVAL);
    /* PBA past the end. */
    ck_assert_int_eq(finalize_msix(8, 0, 0, 0, 0x1000), -EINVAL);
    ck_assert_int_eq(finalize_msix(65, 0, 0, 2, 0x3ff8), -EINVAL);
    /* Offsets near 4 GiB must not wrap. */
    ck_assert_int_eq(finalize_msix(8, 0, 0xfffffff8, 0, 0x800), -EINVAL);
    ck_assert_int_eq(finalize_msix(8, 0, 0, 0, 0xfffffff8), -EINVAL);
    /* Overlap of table and PBA in one BAR, at either end. */
    ck_assert_int_eq(finalize_msix(8, 0, 0, 0, 0x78), -EINVAL);
    ck_assert_int_eq(finalize_msix(8, 0, 0, 0, 0x0), -EINVAL);
    ck_assert_int_eq(finalize_msix(8, 0, 0x100, 0, 0xf8), 0);
    ck_assert_int_eq(finalize_msix(8, 0, 0x108, 0, 0x100), 0);
    ck_assert_int_eq(finalize_msix(8, 0, 0x100, 0, 0x100), -EINVAL);
    ck_assert_int_eq(finalize_msix(8, 0, 0x100, 0, 0x178), -EINVAL);
    ck_assert_int_eq(finalize_msix(8, 0, 0x100, 0, 0x180), 0);
    /* The same offsets in different BARs do not overlap. */
    ck_assert_int_eq(finalize_msix(8, 0, 0, 2, 0), 0);
    /* An I/O BAR, an undeclared BAR, the upper half of a 64-bit BAR. */
    ck_assert_int_eq(finalize_msix(1, 1, 0, 0, 0x800), -EINVAL);
    ck_assert_int_eq(finalize_msix(1, 0, 0, 1, 0), -EINVAL);
    ck_assert_int_eq(finalize_msix(1, 4, 0, 0, 0x800), -EINVAL);
    ck_assert_int_eq(finalize_msix(1, 0, 0, 5, 0), -EINVAL);
    ck_assert_int_eq(finalize_msix(1, 3, 0, 0, 0x800), -EINVAL);
    ck_assert_int_eq(finalize_msix(1, 0, 0, 3, 0), -EINVAL);
    ck_assert(!config->finalized);
}
END_TEST

START_TEST(test_msix_bars_declared_after_capability)
{
    ck_assert_int_eq(vu_pci_config_add_msix(config, 8, 4, 0, 4, 0x800), 0);
    ck_assert_int_eq(vu_pci_config_set_bar(config, 4, 4096, 0), 0);
    ck_assert_int_eq(vu_pci_config_finalize(config), 0);
}
END_TEST

/* ---- PCI Express ---- */

START_TEST(test_express_capability)
{
    uint32_t exp;
    uint8_t extended[4];

    ck_assert_int_eq(vu_pci_config_add_express(config), 0);
    exp = config->express_offset;
    ck_assert_uint_eq(config->size, VU_PCI_EXPRESS_CONFIG_SIZE);
    ck_assert_uint_eq(read8(exp + PCI_CAP_LIST_ID), PCI_CAP_ID_EXP);
    ck_assert_uint_eq(read16(exp + PCI_EXP_FLAGS) & PCI_EXP_FLAGS_VERS, 2);
    ck_assert_uint_eq((read16(exp + PCI_EXP_FLAGS) & PCI_EXP_FLAGS_TYPE) >> 4,
                      PCI_EXP_TYPE_ENDPOINT);
    ck_assert_uint_eq(read16(exp + PCI_EXP_FLAGS) & PCI_EXP_FLAGS_SLOT, 0);
    ck_assert_uint_ne(read32(exp + PCI_EXP_DEVCAP) & PCI_EXP_DEVCAP_RBER, 0);
    ck_assert_uint_eq(read32(exp + PCI_EXP_DEVCAP) & PCI_EXP_DEVCAP_FLR, 0);
    ck_assert_uint_eq(read32(exp + PCI_EXP_DEVCAP) & PCI_EXP_DEVCAP_PAYLOAD, 0);
    ck_assert_uint_eq(read32(exp + PCI_EXP_LNKCAP) & PCI_EXP_LNKCAP_SLS, PCI_EXP_LNKCAP_SLS_2_5GB);
    ck_assert_uint_eq((read32(exp + PCI_EXP_LNKCAP) & PCI_EXP_LNKCAP_MLW) >> 4, 1);
    ck_assert_uint_eq(read16(exp + PCI_EXP_LNKSTA),
                      PCI_EXP_LNKSTA_CLS_2_5GB | PCI_EXP_LNKSTA_NLW_X1);
    ck_assert_uint_eq(read32(exp + PCI_EXP_LNKCAP2), PCI_EXP_LNKCAP2_SLS_2_5GB);
    ck_assert_uint_eq(read16(exp + PCI_EXP_LNKCTL2), PCI_EXP_LNKCTL2_TLS_2_5GT);
    ck_assert_uint_eq(read16(exp + PCI_EXP_DEVCTL), PCI_EXP_DEVCTL_RELAX_EN |
                                                        PCI_EXP_DEVCTL_NOSNOOP_EN |
                                                        PCI_EXP_DEVCTL_READRQ_512B);

    /* The extended capability list is empty: a zero header at 0x100. */
    ck_assert_int_eq(vu_pci_config_read(config, PCI_CFG_SPACE_SIZE, extended, 4), 0);
    ck_assert_uint_eq(extended[0] | extended[1] | extended[2] | extended[3], 0);
    write32(PCI_CFG_SPACE_SIZE, 0xffffffff);
    ck_assert_uint_eq(read32(PCI_CFG_SPACE_SIZE), 0);
    ck_assert_uint_eq(read32(PCI_CFG_SPACE_EXP_SIZE - 4), 0);
}
END_TEST

START_TEST(test_express_control_registers)
{
    uint32_t exp;

    ck_assert_int_eq(vu_pci_config_add_express(config), 0);
    exp = config->express_offset;

    write16(exp + PCI_EXP_DEVCTL, 0xffff);
    ck_assert_uint_eq(read16(exp + PCI_EXP_DEVCTL),
                      PCI_EXP_DEVCTL_CERE | PCI_EXP_DEVCTL_NFERE | PCI_EXP_DEVCTL_FERE |
                          PCI_EXP_DEVCTL_URRE | PCI_EXP_DEVCTL_RELAX_EN | PCI_EXP_DEVCTL_PAYLOAD |
                          PCI_EXP_DEVCTL_NOSNOOP_EN | PCI_EXP_DEVCTL_READRQ);
    /* No FLR is offered, so Initiate FLR never sticks. */
    ck_assert_uint_eq(read16(exp + PCI_EXP_DEVCTL) & PCI_EXP_DEVCTL_BCR_FLR, 0);
    write16(exp + PCI_EXP_DEVCTL, 0);
    ck_assert_uint_eq(read16(exp + PCI_EXP_DEVCTL), 0);

    write16(exp + PCI_EXP_LNKCTL, 0xffff);
    ck_assert_uint_eq(read16(exp + PCI_EXP_LNKCTL), PCI_EXP_LNKCTL_ASPMC | PCI_EXP_LNKCTL_RCB |
                                                        PCI_EXP_LNKCTL_CCC | PCI_EXP_LNKCTL_ES);

    /* Capability and status registers do not move. */
    write16(exp + PCI_EXP_FLAGS, 0xffff);
    write32(exp + PCI_EXP_DEVCAP, 0);
    write32(exp + PCI_EXP_LNKCAP, 0);
    write16(exp + PCI_EXP_LNKSTA, 0xffff);
    write32(exp + PCI_EXP_DEVCAP2, 0xffffffff);
    write16(exp + PCI_EXP_DEVCTL2, 0xffff);
    write32(exp + PCI_EXP_SLTCAP, 0xffffffff);
    ck_assert_uint_eq(read16(exp + PCI_EXP_FLAGS), 2);
    ck_assert_uint_ne(read32(exp + PCI_EXP_DEVCAP), 0);
    ck_assert_uint_ne(read32(exp + PCI_EXP_LNKCAP), 0);
    ck_assert_uint_eq(read16(exp + PCI_EXP_LNKSTA),
                      PCI_EXP_LNKSTA_CLS_2_5GB | PCI_EXP_LNKSTA_NLW_X1);
    ck_assert_uint_eq(read32(exp + PCI_EXP_DEVCAP2), 0);
    ck_assert_uint_eq(read16(exp + PCI_EXP_DEVCTL2), 0);
    ck_assert_uint_eq(read32(exp + PCI_EXP_SLTCAP), 0);
}
END_TEST

START_TEST(test_express_device_status_rw1c)
{
    const uint32_t errors =
        PCI_EXP_DEVSTA_CED | PCI_EXP_DEVSTA_NFED | PCI_EXP_DEVSTA_FED | PCI_EXP_DEVSTA_URD;
    uint32_t exp;

    ck_assert_int_eq(vu_pci_config_add_express(config), 0);
    exp = config->express_offset;
    write16(exp + PCI_EXP_DEVSTA, 0xffff);
    ck_assert_uint_eq(read16(exp + PCI_EXP_DEVSTA), 0);

    config->bytes[exp + PCI_EXP_DEVSTA] = (uint8_t)(errors | PCI_EXP_DEVSTA_TRPND);
    write16(exp + PCI_EXP_DEVSTA, PCI_EXP_DEVSTA_CED | PCI_EXP_DEVSTA_TRPND);
    ck_assert_uint_eq(read16(exp + PCI_EXP_DEVSTA),
                      (errors & ~(uint32_t)PCI_EXP_DEVSTA_CED) | PCI_EXP_DEVSTA_TRPND);
    write16(exp + PCI_EXP_DEVSTA, 0xffff);
    ck_assert_uint_eq(read16(exp + PCI_EXP_DEVSTA), PCI_EXP_DEVSTA_TRPND);
}
END_TEST

START_TEST(test_express_hardwires_latency_timer)
{
    write8(PCI_LATENCY_TIMER, 0x40);
    ck_assert_int_eq(vu_pci_config_add_express(config), 0);
    ck_assert_uint_eq(read8(PCI_LATENCY_TIMER), 0);
    write8(PCI_LATENCY_TIMER, 0x40);
    ck_assert_uint_eq(read8(PCI_LATENCY_TIMER), 0);
    /* The cache line size stays writable on Express. */
    write8(PCI_CACHE_LINE_SIZE, 0x10);
    ck_assert_uint_eq(read8(PCI_CACHE_LINE_SIZE), 0x10);
}
END_TEST

/* ---- access bounds ---- */

START_TEST(test_access_bounds)
{
    uint8_t buffer[VU_PCI_EXPRESS_CONFIG_SIZE + 1];

    memset(buffer, 0xff, sizeof(buffer));
    ck_assert_int_eq(vu_pci_config_read(config, 0, buffer, 0), -EINVAL);
    ck_assert_int_eq(vu_pci_config_write(config, 0, buffer, 0), -EINVAL);
    ck_assert_int_eq(vu_pci_config_read(config, 0, NULL, 4), -EINVAL);
    ck_assert_int_eq(vu_pci_config_write(config, 0, NULL, 4), -EINVAL);
    ck_assert_int_eq(vu_pci_config_read(config, 256, buffer, 1), -EINVAL);
    ck_assert_int_eq(vu_pci_config_write(config, 256, buffer, 1), -EINVAL);
    ck_assert_int_eq(vu_pci_config_read(config, 255, buffer, 2), -EINVAL);
    ck_assert_int_eq(vu_pci_config_write(config, 253, buffer, 4), -EINVAL);
    ck_assert_int_eq(vu_pci_config_read(config, 0, buffer, 257), -EINVAL);
    ck_assert_int_eq(vu_pci_config_read(config, 1, buffer, 256), -EINVAL);
    ck_assert_int_eq(vu_pci_config_read(config, 0, buffer, UINT32_MAX), -EINVAL);
    ck_assert_int_eq(vu_pci_config_read(config, UINT64_MAX, buffer, 1), -EINVAL);
    ck_assert_int_eq(vu_pci_config_write(config, UINT64_MAX, buffer, 1), -EINVAL);
    /* offset + count wraps to a small number. */
    ck_assert_int_eq(vu_pci_config_read(config, UINT64_MAX - 2, buffer, 4), -EINVAL);
    ck_assert_int_eq(vu_pci_config_write(config, UINT64_MAX - 2, buffer, 4), -EINVAL);
    ck_assert_int_eq(vu_pci_config_read(config, UINT64_C(1) << 32, buffer, 4), -EINVAL);
    /* Extended config space does not exist without Express. */
    ck_assert_int_eq(vu_pci_config_read(config, 0x100, buffer, 4), -EINVAL);

    /* Every legal edge: the whole space at once, the last byte. */
    ck_assert_int_eq(vu_pci_config_read(config, 0, buffer, 256), 0);
    ck_assert_uint_eq(buffer[0] | buffer[1] << 8, TEST_VENDOR);
    ck_assert_int_eq(vu_pci_config_read(config, 255, buffer, 1), 0);
    ck_assert_int_eq(vu_pci_config_write(config, 255, buffer, 1), 0);

    ck_assert_int_eq(vu_pci_config_add_express(config), 0);
    ck_assert_int_eq(vu_pci_config_read(config, 0, buffer, 4096), 0);
    ck_assert_int_eq(vu_pci_config_read(config, 0, buffer, 4097), -EINVAL);
    ck_assert_int_eq(vu_pci_config_read(config, 4095, buffer, 1), 0);
    ck_assert_int_eq(vu_pci_config_read(config, 4095, buffer, 2), -EINVAL);
    ck_assert_int_eq(vu_pci_config_read(config, 4096, buffer, 1), -EINVAL);
    memset(buffer, 0xff, sizeof(buffer));
    ck_assert_int_eq(vu_pci_config_write(config, 0, buffer, 4096), 0);
    ck_assert_int_eq(vu_pci_config_write(config, 0, buffer, 4097), -EINVAL);
}
END_TEST

START_TEST(test_refused_write_changes_nothing)
{
    uint8_t before[VU_PCI_CONFIG_SIZE], after[VU_PCI_CONFIG_SIZE];
    uint8_t ones[8];

    memset(ones, 0xff, sizeof(ones));
    ck_assert_int_eq(vu_pci_config_set_bar(config, 0, 4096, 0), 0);
    ck_assert_int_eq(vu_pci_config_read(config, 0, before, sizeof(before)), 0);
    /* Partly inside: must not write the part that is. */
    ck_assert_int_eq(vu_pci_config_write(config, 252, ones, 8), -EINVAL);
    ck_assert_int_eq(vu_pci_config_write(config, UINT64_MAX - 3, ones, 8), -EINVAL);
    ck_assert_int_eq(vu_pci_config_read(config, 0, after, sizeof(after)), 0);
    ck_assert_mem_eq(before, after, sizeof(before));
}
END_TEST

/* ---- life cycle ---- */

START_TEST(test_finalize_seals_declarations)
{
    ck_assert_int_eq(vu_pci_config_set_bar(config, 0, 4096, 0), 0);
    ck_assert_int_eq(vu_pci_config_finalize(config), 0);
    ck_assert(config->finalized);
    ck_assert_int_eq(vu_pci_config_finalize(config), -EBUSY);
    ck_assert_int_eq(vu_pci_config_set_identity(config, &test_identity), -EBUSY);
    ck_assert_int_eq(vu_pci_config_set_bar(config, 1, 4096, 0), -EBUSY);
    ck_assert_int_eq(vu_pci_config_set_rom(config, 4096), -EBUSY);
    ck_assert_int_eq(vu_pci_config_add_power_management(config), -EBUSY);
    ck_assert_int_eq(vu_pci_config_add_msi(config, 1, false), -EBUSY);
    ck_assert_int_eq(vu_pci_config_add_msix(config, 1, 0, 0, 0, 16), -EBUSY);
    ck_assert_int_eq(vu_pci_config_add_express(config), -EBUSY);
    ck_assert_int_eq(vu_pci_config_add_vendor_specific(config, NULL, 0), -EBUSY);
    ck_assert_uint_eq(read8(PCI_CAPABILITY_LIST), 0);
    ck_assert_uint_eq(config->size, VU_PCI_CONFIG_SIZE);
}
END_TEST

START_TEST(test_reset_before_finalize_is_noop)
{
    write8(PCI_INTERRUPT_LINE, 0x0a);
    vu_pci_config_reset(config);
    ck_assert_uint_eq(read8(PCI_INTERRUPT_LINE), 0x0a);
    ck_assert_uint_eq(read16(PCI_VENDOR_ID), TEST_VENDOR);
}
END_TEST

START_TEST(test_reset_restores_snapshot)
{
    uint8_t before[VU_PCI_EXPRESS_CONFIG_SIZE], after[VU_PCI_EXPRESS_CONFIG_SIZE];
    uint32_t msi, msix, pm, exp;

    ck_assert_int_eq(vu_pci_config_set_bar(config, 0, 4096, 0), 0);
    ck_assert_int_eq(vu_pci_config_set_bar(config, 2, 1u << 20, VFIO_USERD_BAR_64BIT), 0);
    ck_assert_int_eq(vu_pci_config_set_rom(config, 8192), 0);
    ck_assert_int_eq(vu_pci_config_add_power_management(config), 0);
    ck_assert_int_eq(vu_pci_config_add_msi(config, 4, true), 0);
    ck_assert_int_eq(vu_pci_config_add_msix(config, 4, 0, 0, 0, 0x800), 0);
    ck_assert_int_eq(vu_pci_config_add_express(config), 0);
    ck_assert_int_eq(vu_pci_config_finalize(config), 0);
    ck_assert_int_eq(vu_pci_config_read(config, 0, before, sizeof(before)), 0);
    ck_assert_mem_eq(before, config->reset_bytes, sizeof(before));
    msi = config->msi_offset;
    msix = config->msix_offset;
    pm = config->power_management_offset;
    exp = config->express_offset;

    write16(PCI_COMMAND, 0xffff);
    write32(PCI_BASE_ADDRESS_0, 0xfebf0000);
    write32(PCI_BASE_ADDRESS_2, 0xfe000000);
    write32(PCI_BASE_ADDRESS_3, 0x1);
    write32(PCI_ROM_ADDRESS, 0xfeb00001);
    write8(PCI_INTERRUPT_LINE, 11);
    write16(pm + PCI_PM_CTRL, 3);
    write16(msi + PCI_MSI_FLAGS, PCI_MSI_FLAGS_ENABLE | 2u << 4);
    write32(msi + PCI_MSI_ADDRESS_LO, 0xfee00000);
    write32(msi + PCI_MSI_MASK_64, 0xf);
    ck_assert_int_eq(vu_pci_config_msi_set_pending(config, 1, true), 0);
    write16(msix + PCI_MSIX_FLAGS, PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL);
    write16(exp + PCI_EXP_DEVCTL, 0);
    vu_pci_config_set_intx_status(config, true);
    ck_assert_int_eq(vu_pci_config_read(config, 0, after, sizeof(after)), 0);
    ck_assert_mem_ne(before, after, sizeof(before));

    vu_pci_config_reset(config);
    ck_assert_int_eq(vu_pci_config_read(config, 0, after, sizeof(after)), 0);
    ck_assert_mem_eq(before, after, sizeof(before));
    ck_assert(!vu_pci_config_bus_master_enabled(config));
    ck_assert(!vu_pci_config_msi_enabled(config, NULL));
    ck_assert(!vu_pci_config_msix_enabled(config));
    ck_assert(!vu_pci_config_msix_function_masked(config));
    ck_assert(!vu_pci_config_intx_disabled(config));
    for (uint32_t vector = 0; vector < 4; vector++)
        ck_assert(!vu_pci_config_msi_vector_masked(config, vector));
    ck_assert_uint_eq(vu_pci_config_power_state(config), 0);

    /* Masks survive a reset: sizing still works and read-only fields stay so. */
    ck_assert_uint_eq(size_register(PCI_BASE_ADDRESS_0), 0xfffff000);
    ck_assert_uint_eq(size_register(PCI_ROM_ADDRESS), 0xffffe001);
    write16(PCI_VENDOR_ID, 0);
    ck_assert_uint_eq(read16(PCI_VENDOR_ID), TEST_VENDOR);
}
END_TEST

/* The declarations a PCIe endpoint such as testdev makes, all at once. */
START_TEST(test_full_endpoint)
{
    uint8_t space[VU_PCI_CONFIG_SIZE];
    uint8_t ids[8], offsets[8];
    uint32_t enabled;

    ck_assert_int_eq(vu_pci_config_set_bar(config, 0, 4096,
                                           VFIO_USERD_REGION_READABLE | VFIO_USERD_REGION_WRITABLE),
                     0);
    ck_assert_int_eq(vu_pci_config_set_bar(config, 2, 1u << 20,
                                           VFIO_USERD_BAR_64BIT | VFIO_USERD_BAR_PREFETCHABLE |
                                               VFIO_USERD_REGION_MEMORY),
                     0);
    ck_assert_int_eq(vu_pci_config_set_bar(config, 4, 4096, VFIO_USERD_REGION_READABLE), 0);
    ck_assert_int_eq(vu_pci_config_set_bar(config, 5, 16, VFIO_USERD_BAR_IO), 0);
    ck_assert_int_eq(vu_pci_config_set_rom(config, 4096), 0);
    ck_assert_int_eq(vu_pci_config_add_power_management(config), 0);
    ck_assert_int_eq(vu_pci_config_add_msi(config, 1, false), 0);
    ck_assert_int_eq(vu_pci_config_add_msix(config, 8, 4, 0, 4, 0x800), 0);
    ck_assert_int_eq(vu_pci_config_add_express(config), 0);
    ck_assert_int_eq(vu_pci_config_finalize(config), 0);
    ck_assert_uint_eq(config->size, VU_PCI_EXPRESS_CONFIG_SIZE);

    /* QEMU reads the whole 256 bytes at once first. */
    ck_assert_int_eq(vu_pci_config_read(config, 0, space, sizeof(space)), 0);
    ck_assert_uint_eq(space[PCI_HEADER_TYPE], 0);
    ck_assert_uint_eq(space[PCI_CAPABILITY_LIST], 0x40);
    ck_assert_uint_ne(space[PCI_STATUS] & PCI_STATUS_CAP_LIST, 0);
    ck_assert_uint_eq(space[PCI_INTERRUPT_PIN], TEST_PIN);

    ck_assert_uint_eq(walk_capabilities(ids, offsets, 8), 4);
    ck_assert_uint_eq(ids[0], PCI_CAP_ID_PM);
    ck_assert_uint_eq(ids[1], PCI_CAP_ID_MSI);
    ck_assert_uint_eq(ids[2], PCI_CAP_ID_MSIX);
    ck_assert_uint_eq(ids[3], PCI_CAP_ID_EXP);
    ck_assert_uint_eq(offsets[3] + VU_PCI_EXPRESS_CAPABILITY_SIZE <= VU_PCI_CONFIG_SIZE, 1);

    /* BAR sizing, in the order a guest does it. */
    ck_assert_uint_eq(size_register(PCI_BASE_ADDRESS_0), 0xfffff000);
    ck_assert_uint_eq(size_register(PCI_BASE_ADDRESS_1), 0);
    ck_assert_uint_eq(size_register(PCI_BASE_ADDRESS_2), 0xfff0000c);
    ck_assert_uint_eq(size_register(PCI_BASE_ADDRESS_3), 0xffffffff);
    ck_assert_uint_eq(size_register(PCI_BASE_ADDRESS_4), 0xfffff000);
    ck_assert_uint_eq(size_register(PCI_BASE_ADDRESS_5), 0xfffffff1);
    ck_assert_uint_eq(size_register(PCI_ROM_ADDRESS), 0xfffff001);

    /* The driver picks MSI-X, masks the function while it programs the table, then runs. */
    write16(offsets[2] + PCI_MSIX_FLAGS, PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL);
    ck_assert(vu_pci_config_msix_enabled(config));
    ck_assert(vu_pci_config_msix_function_masked(config));
    write16(offsets[2] + PCI_MSIX_FLAGS, PCI_MSIX_FLAGS_ENABLE);
    ck_assert(!vu_pci_config_msix_function_masked(config));
    ck_assert(!vu_pci_config_msi_enabled(config, &enabled));
    write16(PCI_COMMAND, PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER | PCI_COMMAND_INTX_DISABLE);
    ck_assert(vu_pci_config_bus_master_enabled(config));
    ck_assert(vu_pci_config_intx_disabled(config));

    vu_pci_config_reset(config);
    ck_assert(!vu_pci_config_msix_enabled(config));
    ck_assert_uint_eq(read16(PCI_COMMAND), 0);
}
END_TEST

static Suite *pci_config_suite(void)
{
    Suite *suite = suite_create("pci_config");
    TCase *header = tcase_create("header");
    TCase *bars = tcase_create("bars");
    TCase *capabilities = tcase_create("capabilities");
    TCase *interrupts = tcase_create("interrupts");
    TCase *express = tcase_create("express");
    TCase *access = tcase_create("access");

    tcase_add_checked_fixture(header, setup, teardown);
    tcase_add_test(header, test_header_identity);
    tcase_add_test(header, test_identity_validation);
    tcase_add_test(header, test_finalize_needs_identity);
    tcase_add_test(header, test_command_register);
    tcase_add_test(header, test_command_io_only_and_rom_only);
    tcase_add_test(header, test_status_write_one_to_clear);
    tcase_add_test(header, test_status_interrupt_bit);
    tcase_add_test(header, test_scratch_registers);
    tcase_add_test(header, test_wide_write_applies_masks_per_byte);
    suite_add_tcase(suite, header);

    tcase_add_checked_fixture(bars, setup, teardown);
    tcase_add_test(bars, test_bar_32bit_memory);
    tcase_add_test(bars, test_bar_prefetchable);
    tcase_add_test(bars, test_bar_64bit_pairs);
    tcase_add_test(bars, test_bar_io);
    tcase_add_test(bars, test_bar_unused_reads_zero);
    tcase_add_test(bars, test_bar_validation);
    tcase_add_test(bars, test_rom_absent);
    tcase_add_test(bars, test_rom_sizing);
    tcase_add_test(bars, test_rom_limits);
    suite_add_tcase(suite, bars);

    tcase_add_checked_fixture(capabilities, setup, teardown);
    tcase_add_test(capabilities, test_capability_chain);
    tcase_add_test(capabilities, test_capability_alignment);
    tcase_add_test(capabilities, test_capability_duplicates);
    tcase_add_test(capabilities, test_capability_no_space);
    tcase_add_test(capabilities, test_capability_no_space_express);
    tcase_add_test(capabilities, test_vendor_specific);
    tcase_add_test(capabilities, test_power_management);
    tcase_add_test(capabilities, test_power_state_without_capability);
    suite_add_tcase(suite, capabilities);

    tcase_add_checked_fixture(interrupts, setup, teardown);
    tcase_add_test(interrupts, test_msi_validation);
    tcase_add_test(interrupts, test_msi_enable_and_vector_count);
    tcase_add_test(interrupts, test_msi_single_vector);
    tcase_add_test(interrupts, test_msi_message_registers);
    tcase_add_test(interrupts, test_msi_per_vector_mask);
    tcase_add_test(interrupts, test_msi_32_vectors);
    tcase_add_test(interrupts, test_msi_absent);
    tcase_add_test(interrupts, test_msix_capability);
    tcase_add_test(interrupts, test_msix_table_size_field);
    tcase_add_test(interrupts, test_msix_validation);
    tcase_add_test(interrupts, test_msix_finalize_checks_bars);
    tcase_add_test(interrupts, test_msix_bars_declared_after_capability);
    suite_add_tcase(suite, interrupts);

    tcase_add_checked_fixture(express, setup, teardown);
    tcase_add_test(express, test_express_capability);
    tcase_add_test(express, test_express_control_registers);
    tcase_add_test(express, test_express_device_status_rw1c);
    tcase_add_test(express, test_express_hardwires_latency_timer);
    suite_add_tcase(suite, express);

    tcase_add_checked_fixture(access, setup, teardown);
    tcase_add_test(access, test_access_bounds);
    tcase_add_test(access, test_refused_write_changes_nothing);
    tcase_add_test(access, test_finalize_seals_declarations);
    tcase_add_test(access, test_reset_before_finalize_is_noop);
    tcase_add_test(access, test_reset_restores_snapshot);
    tcase_add_test(access, test_full_endpoint);
    suite_add_tcase(suite, access);
    return suite;
}

int main(void)
{
    return test_run_suite(pci_config_suite());
}
