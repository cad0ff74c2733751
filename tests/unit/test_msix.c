/*
 * Unit tests for the MSI-X table and PBA emulation (lib/msix.c): reset state, the access
 * rules clients must follow, reserved bits, per-vector masking, when the table's masks
 * hold vectors back, and the pending bits.
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <check.h>
#include <linux/pci_regs.h>

#include "msix.h"
#include "test_runner.h"

static struct vu_msix msix;

static void teardown(void)
{
    vu_msix_destroy(&msix);
}

static uint64_t read_le(const uint8_t *bytes, uint32_t count)
{
    uint64_t value = 0;

    for (uint32_t i = 0; i < count; i++)
        value |= (uint64_t)bytes[i] << (8 * i);
    return value;
}

static void put_le(uint8_t *bytes, uint32_t count, uint64_t value)
{
    for (uint32_t i = 0; i < count; i++)
        bytes[i] = (uint8_t)(value >> (8 * i));
}

static uint64_t table_read(uint64_t offset, uint32_t count)
{
    uint8_t bytes[8];

    ck_assert_int_eq(vu_msix_table_read(&msix, offset, bytes, count), 0);
    return read_le(bytes, count);
}

static void table_write(uint64_t offset, uint32_t count, uint64_t value)
{
    uint8_t bytes[8];

    put_le(bytes, count, value);
    ck_assert_int_eq(vu_msix_table_write(&msix, offset, bytes, count), 0);
}

static uint64_t pba_read(uint64_t offset, uint32_t count)
{
    uint8_t bytes[8];

    ck_assert_int_eq(vu_msix_pba_read(&msix, offset, bytes, count), 0);
    return read_le(bytes, count);
}

static uint64_t entry(uint32_t vector, uint32_t field)
{
    return (uint64_t)vector * PCI_MSIX_ENTRY_SIZE + field;
}

START_TEST(test_init_limits)
{
    ck_assert_int_eq(vu_msix_init(&msix, 0), -EINVAL);
    ck_assert_ptr_null(msix.table);
    ck_assert_ptr_null(msix.pending);
    ck_assert_uint_eq(msix.vectors, 0);
    ck_assert_int_eq(vu_msix_init(&msix, VU_MSIX_MAX_VECTORS + 1), -EINVAL);
    ck_assert_int_eq(vu_msix_init(&msix, UINT32_MAX), -EINVAL);
    ck_assert_uint_eq(msix.vectors, 0);

    ck_assert_int_eq(vu_msix_init(&msix, 1), 0);
    ck_assert_uint_eq(vu_msix_table_size(&msix), 16);
    ck_assert_uint_eq(vu_msix_pba_size(&msix), 8);
    vu_msix_destroy(&msix);
    ck_assert_int_eq(vu_msix_init(&msix, 64), 0);
    ck_assert_uint_eq(vu_msix_table_size(&msix), 1024);
    ck_assert_uint_eq(vu_msix_pba_size(&msix), 8);
    vu_msix_destroy(&msix);
    ck_assert_int_eq(vu_msix_init(&msix, 65), 0);
    ck_assert_uint_eq(vu_msix_pba_size(&msix), 16);
    vu_msix_destroy(&msix);
    ck_assert_int_eq(vu_msix_init(&msix, 2048), 0);
    ck_assert_uint_eq(vu_msix_table_size(&msix), 32768);
    ck_assert_uint_eq(vu_msix_pba_size(&msix), 256);
}
END_TEST

START_TEST(test_reset_state)
{
    ck_assert_int_eq(vu_msix_init(&msix, 8), 0);
    for (uint32_t vector = 0; vector < 8; vector++) {
        ck_assert_uint_eq(table_read(entry(vector, PCI_MSIX_ENTRY_LOWER_ADDR), 8), 0);
        ck_assert_uint_eq(table_read(entry(vector, PCI_MSIX_ENTRY_DATA), 4), 0);
        ck_assert_uint_eq(table_read(entry(vector, PCI_MSIX_ENTRY_VECTOR_CTRL), 4),
                          PCI_MSIX_ENTRY_CTRL_MASKBIT);
        ck_assert(vu_msix_vector_masked(&msix, vector));
        ck_assert(!vu_msix_pending(&msix, vector));
    }
    ck_assert_uint_eq(pba_read(0, 8), 0);
}
END_TEST

START_TEST(test_entry_fields)
{
    uint64_t address;
    uint32_t data;

    ck_assert_int_eq(vu_msix_init(&msix, 4), 0);
    table_write(entry(2, PCI_MSIX_ENTRY_LOWER_ADDR), 4, 0xfee00ffb);
    table_write(entry(2, PCI_MSIX_ENTRY_UPPER_ADDR), 4, 0x00000001);
    table_write(entry(2, PCI_MSIX_ENTRY_DATA), 4, 0xdeadbeef);
    /* The two low address bits are reserved and read as zero. */
    ck_assert_uint_eq(table_read(entry(2, PCI_MSIX_ENTRY_LOWER_ADDR), 4), 0xfee00ff8);
    ck_assert_uint_eq(table_read(entry(2, PCI_MSIX_ENTRY_UPPER_ADDR), 4), 1);
    ck_assert_uint_eq(table_read(entry(2, PCI_MSIX_ENTRY_DATA), 4), 0xdeadbeef);
    ck_assert_int_eq(vu_msix_message(&msix, 2, &address, &data), 0);
    ck_assert_uint_eq(address, UINT64_C(0x1fee00ff8));
    ck_assert_uint_eq(data, 0xdeadbeef);
    ck_assert_int_eq(vu_msix_message(&msix, 2, NULL, NULL), 0);
    ck_assert_int_eq(vu_msix_message(&msix, 4, &address, &data), -EINVAL);
    /* Neighbours are untouched. */
    ck_assert_uint_eq(table_read(entry(1, PCI_MSIX_ENTRY_DATA), 4), 0);
    ck_assert_uint_eq(table_read(entry(3, PCI_MSIX_ENTRY_LOWER_ADDR), 4), 0);
    ck_assert(vu_msix_vector_masked(&msix, 2));
}
END_TEST

START_TEST(test_vector_control)
{
    ck_assert_int_eq(vu_msix_init(&msix, 4), 0);
    /* Only the Mask bit exists: reserved bits read as zero. */
    table_write(entry(1, PCI_MSIX_ENTRY_VECTOR_CTRL), 4, 0xfffffffe);
    ck_assert_uint_eq(table_read(entry(1, PCI_MSIX_ENTRY_VECTOR_CTRL), 4), 0);
    ck_assert(!vu_msix_vector_masked(&msix, 1));
    ck_assert(vu_msix_vector_masked(&msix, 0));
    ck_assert(vu_msix_vector_masked(&msix, 2));
    table_write(entry(1, PCI_MSIX_ENTRY_VECTOR_CTRL), 4, 0xffffffff);
    ck_assert_uint_eq(table_read(entry(1, PCI_MSIX_ENTRY_VECTOR_CTRL), 4), 1);
    ck_assert(vu_msix_vector_masked(&msix, 1));
    /* Out of the table counts as masked. */
    ck_assert(vu_msix_vector_masked(&msix, 4));
    ck_assert(vu_msix_vector_masked(&msix, UINT32_MAX));
}
END_TEST

START_TEST(test_qword_accesses)
{
    ck_assert_int_eq(vu_msix_init(&msix, 2), 0);
    /* Address as one quadword, then data and vector control as one. */
    table_write(entry(1, PCI_MSIX_ENTRY_LOWER_ADDR), 8, UINT64_C(0x12345678fee01003));
    table_write(entry(1, PCI_MSIX_ENTRY_DATA), 8, UINT64_C(0xfffffff000004041));
    ck_assert_uint_eq(table_read(entry(1, PCI_MSIX_ENTRY_LOWER_ADDR), 8),
                      UINT64_C(0x12345678fee01000));
    ck_assert_uint_eq(table_read(entry(1, PCI_MSIX_ENTRY_DATA), 8), 0x4041);
    ck_assert(!vu_msix_vector_masked(&msix, 1));
    table_write(entry(1, PCI_MSIX_ENTRY_DATA), 8, UINT64_C(0x0000000100004041));
    ck_assert_uint_eq(table_read(entry(1, PCI_MSIX_ENTRY_DATA), 8), UINT64_C(0x100004041));
    ck_assert(vu_msix_vector_masked(&msix, 1));
    /* Halves of a quadword read back through dword reads. */
    ck_assert_uint_eq(table_read(entry(1, PCI_MSIX_ENTRY_UPPER_ADDR), 4), 0x12345678);
    ck_assert(vu_msix_vector_masked(&msix, 0));
}
END_TEST

START_TEST(test_table_access_rules)
{
    uint8_t bytes[16];
    uint8_t before[32], after[32];

    memset(bytes, 0xff, sizeof(bytes));
    ck_assert_int_eq(vu_msix_init(&msix, 2), 0);
    for (uint32_t offset = 0; offset < sizeof(before); offset += 4)
        put_le(&before[offset], 4, table_read(offset, 4));

    /* Sizes other than 4 and 8. */
    for (uint32_t count = 0; count <= 16; count++) {
        if (count == 4 || count == 8)
            continue;
        ck_assert_int_eq(vu_msix_table_read(&msix, 0, bytes, count), -EINVAL);
        ck_assert_int_eq(vu_msix_table_write(&msix, 0, bytes, count), -EINVAL);
    }
    /* Misaligned. */
    ck_assert_int_eq(vu_msix_table_write(&msix, 2, bytes, 4), -EINVAL);
    ck_assert_int_eq(vu_msix_table_write(&msix, 4, bytes, 8), -EINVAL);
    ck_assert_int_eq(vu_msix_table_write(&msix, 12, bytes, 8), -EINVAL);
    ck_assert_int_eq(vu_msix_table_read(&msix, 1, bytes, 4), -EINVAL);
    ck_assert_int_eq(vu_msix_table_read(&msix, 4, bytes, 8), -EINVAL);
    /* Past the end, including offsets that wrap when the count is added. */
    ck_assert_int_eq(vu_msix_table_write(&msix, 32, bytes, 4), -EINVAL);
    ck_assert_int_eq(vu_msix_table_read(&msix, 32, bytes, 8), -EINVAL);
    ck_assert_int_eq(vu_msix_table_write(&msix, UINT64_MAX - 3, bytes, 4), -EINVAL);
    ck_assert_int_eq(vu_msix_table_read(&msix, UINT64_MAX - 7, bytes, 8), -EINVAL);
    ck_assert_int_eq(vu_msix_table_write(&msix, UINT64_C(1) << 32, bytes, 4), -EINVAL);
    /* No buffer. */
    ck_assert_int_eq(vu_msix_table_read(&msix, 0, NULL, 4), -EINVAL);
    ck_assert_int_eq(vu_msix_table_write(&msix, 0, NULL, 4), -EINVAL);

    for (uint32_t offset = 0; offset < sizeof(after); offset += 4)
        put_le(&after[offset], 4, table_read(offset, 4));
    ck_assert_mem_eq(before, after, sizeof(before));

    /* The last legal accesses. */
    ck_assert_int_eq(vu_msix_table_read(&msix, 28, bytes, 4), 0);
    ck_assert_int_eq(vu_msix_table_read(&msix, 24, bytes, 8), 0);
}
END_TEST

START_TEST(test_pending_bits)
{
    ck_assert_int_eq(vu_msix_init(&msix, 70), 0);
    vu_msix_set_pending(&msix, 0, true);
    vu_msix_set_pending(&msix, 63, true);
    vu_msix_set_pending(&msix, 64, true);
    vu_msix_set_pending(&msix, 69, true);
    /* Outside the table: ignored, never pending, no bits beyond the last vector. */
    vu_msix_set_pending(&msix, 70, true);
    vu_msix_set_pending(&msix, 127, true);
    vu_msix_set_pending(&msix, UINT32_MAX, true);
    ck_assert(!vu_msix_pending(&msix, 70));
    ck_assert(!vu_msix_pending(&msix, UINT32_MAX));

    ck_assert(vu_msix_pending(&msix, 0));
    ck_assert(vu_msix_pending(&msix, 63));
    ck_assert(vu_msix_pending(&msix, 64));
    ck_assert(vu_msix_pending(&msix, 69));
    ck_assert(!vu_msix_pending(&msix, 1));
    ck_assert(!vu_msix_pending(&msix, 65));
    ck_assert_uint_eq(pba_read(0, 8), UINT64_C(0x8000000000000001));
    ck_assert_uint_eq(pba_read(0, 4), 1);
    ck_assert_uint_eq(pba_read(4, 4), 0x80000000);
    ck_assert_uint_eq(pba_read(8, 8), 0x21);
    ck_assert_uint_eq(pba_read(12, 4), 0);

    vu_msix_set_pending(&msix, 63, false);
    vu_msix_set_pending(&msix, 69, false);
    ck_assert(!vu_msix_pending(&msix, 63));
    ck_assert_uint_eq(pba_read(0, 8), 1);
    ck_assert_uint_eq(pba_read(8, 8), 1);

    /* Pending state is independent of the table. */
    table_write(entry(0, PCI_MSIX_ENTRY_VECTOR_CTRL), 4, 0);
    ck_assert(vu_msix_pending(&msix, 0));
}
END_TEST

START_TEST(test_pba_access_rules)
{
    uint8_t bytes[8];

    memset(bytes, 0xff, sizeof(bytes));
    ck_assert_int_eq(vu_msix_init(&msix, 8), 0);
    vu_msix_set_pending(&msix, 3, true);

    ck_assert_int_eq(vu_msix_pba_read(&msix, 0, bytes, 1), -EINVAL);
    ck_assert_int_eq(vu_msix_pba_read(&msix, 0, bytes, 2), -EINVAL);
    ck_assert_int_eq(vu_msix_pba_read(&msix, 2, bytes, 4), -EINVAL);
    ck_assert_int_eq(vu_msix_pba_read(&msix, 4, bytes, 8), -EINVAL);
    ck_assert_int_eq(vu_msix_pba_read(&msix, 8, bytes, 4), -EINVAL);
    ck_assert_int_eq(vu_msix_pba_read(&msix, UINT64_MAX - 3, bytes, 4), -EINVAL);
    ck_assert_int_eq(vu_msix_pba_read(&msix, 0, NULL, 8), -EINVAL);

    /* Well-formed writes are accepted and discarded; malformed ones are refused. */
    ck_assert_int_eq(vu_msix_pba_write(&msix, 0, bytes, 8), 0);
    ck_assert_int_eq(vu_msix_pba_write(&msix, 4, bytes, 4), 0);
    ck_assert_int_eq(vu_msix_pba_write(&msix, 0, bytes, 2), -EINVAL);
    ck_assert_int_eq(vu_msix_pba_write(&msix, 8, bytes, 8), -EINVAL);
    ck_assert_int_eq(vu_msix_pba_write(&msix, 0, NULL, 8), -EINVAL);
    ck_assert_uint_eq(pba_read(0, 8), 0x8);
    memset(bytes, 0, sizeof(bytes));
    ck_assert_int_eq(vu_msix_pba_write(&msix, 0, bytes, 8), 0);
    ck_assert(vu_msix_pending(&msix, 3));
}
END_TEST

START_TEST(test_reset_clears_everything)
{
    ck_assert_int_eq(vu_msix_init(&msix, 130), 0);
    for (uint32_t vector = 0; vector < 130; vector += 43) {
        table_write(entry(vector, PCI_MSIX_ENTRY_LOWER_ADDR), 8, UINT64_C(0xfee00000));
        table_write(entry(vector, PCI_MSIX_ENTRY_DATA), 8, 0x41);
        vu_msix_set_pending(&msix, vector, true);
    }
    ck_assert(!vu_msix_vector_masked(&msix, 129));
    ck_assert(vu_msix_pending(&msix, 129));

    vu_msix_reset(&msix);
    for (uint32_t vector = 0; vector < 130; vector++) {
        ck_assert_uint_eq(table_read(entry(vector, PCI_MSIX_ENTRY_LOWER_ADDR), 8), 0);
        ck_assert_uint_eq(table_read(entry(vector, PCI_MSIX_ENTRY_DATA), 8), UINT64_C(1) << 32);
        ck_assert(vu_msix_vector_masked(&msix, vector));
        ck_assert(!vu_msix_pending(&msix, vector));
    }
    for (uint64_t offset = 0; offset < vu_msix_pba_size(&msix); offset += 8)
        ck_assert_uint_eq(pba_read(offset, 8), 0);
}
END_TEST

START_TEST(test_destroyed_table_refuses_access)
{
    uint8_t bytes[8] = {0};

    ck_assert_int_eq(vu_msix_init(&msix, 4), 0);
    vu_msix_destroy(&msix);
    vu_msix_destroy(&msix);
    ck_assert_ptr_null(msix.table);
    ck_assert_uint_eq(vu_msix_table_size(&msix), 0);
    ck_assert_uint_eq(vu_msix_pba_size(&msix), 0);
    ck_assert_int_eq(vu_msix_table_read(&msix, 0, bytes, 4), -EINVAL);
    ck_assert_int_eq(vu_msix_table_write(&msix, 0, bytes, 4), -EINVAL);
    ck_assert_int_eq(vu_msix_pba_read(&msix, 0, bytes, 8), -EINVAL);
    ck_assert(vu_msix_vector_masked(&msix, 0));
    vu_msix_set_pending(&msix, 0, true);
    ck_assert(!vu_msix_pending(&msix, 0));
    vu_msix_reset(&msix);
}
END_TEST

/* The testdev layout: 8 vectors, table at 0 and PBA at 0x800 of BAR4; the engine maps BAR
 * offsets onto table and PBA offsets. */
START_TEST(test_masked_vector_becomes_pending_then_fires)
{
    ck_assert_int_eq(vu_msix_init(&msix, 8), 0);
    table_write(entry(5, PCI_MSIX_ENTRY_LOWER_ADDR), 8, UINT64_C(0xfee00000));
    table_write(entry(5, PCI_MSIX_ENTRY_DATA), 4, 0x4025);

    /* What the engine does on a trigger while vector 5 is still masked. */
    ck_assert(vu_msix_vector_masked(&msix, 5));
    vu_msix_set_pending(&msix, 5, true);
    ck_assert_uint_eq(pba_read(0, 8), 1u << 5);

    /* The driver unmasks; the engine sees a pending unmasked vector, fires and clears. */
    table_write(entry(5, PCI_MSIX_ENTRY_VECTOR_CTRL), 4, 0);
    ck_assert(!vu_msix_vector_masked(&msix, 5));
    ck_assert(vu_msix_pending(&msix, 5));
    vu_msix_set_pending(&msix, 5, false);
    ck_assert_uint_eq(pba_read(0, 4), 0);
}
END_TEST

/* QEMU keeps the guest's table itself and never writes ours: its reset state, every vector
 * masked, must hold nothing back. */
START_TEST(test_unwritten_table_holds_nothing)
{
    uint8_t bytes[8] = {0};

    ck_assert_int_eq(vu_msix_init(&msix, 8), 0);
    ck_assert(!vu_msix_client_writes_table(&msix));
    for (uint32_t vector = 0; vector < 8; vector++) {
        ck_assert(vu_msix_vector_masked(&msix, vector));
        ck_assert(!vu_msix_vector_held(&msix, vector));
    }
    /* Reads and refused writes do not make a client one that writes the table. */
    (void)table_read(entry(3, PCI_MSIX_ENTRY_VECTOR_CTRL), 4);
    ck_assert_int_eq(vu_msix_table_write(&msix, 2, bytes, 4), -EINVAL);
    ck_assert_int_eq(vu_msix_table_write(&msix, entry(8, 0), bytes, 4), -EINVAL);
    ck_assert_int_eq(vu_msix_pba_write(&msix, 0, bytes, 8), 0);
    ck_assert(!vu_msix_client_writes_table(&msix));
    ck_assert(!vu_msix_vector_held(&msix, 0));
}
END_TEST

/* A client that forwards the guest's table writes: from its first write on, each vector's
 * Mask bit counts, including the reset value of entries it has not written yet. */
START_TEST(test_written_table_holds_masked_vectors)
{
    ck_assert_int_eq(vu_msix_init(&msix, 4), 0);
    table_write(entry(1, PCI_MSIX_ENTRY_LOWER_ADDR), 4, 0xfee00000);
    ck_assert(vu_msix_client_writes_table(&msix));
    for (uint32_t vector = 0; vector < 4; vector++)
        ck_assert(vu_msix_vector_held(&msix, vector));
    table_write(entry(1, PCI_MSIX_ENTRY_VECTOR_CTRL), 4, 0);
    ck_assert(!vu_msix_vector_held(&msix, 1));
    ck_assert(vu_msix_vector_held(&msix, 0));
    ck_assert(vu_msix_vector_held(&msix, 2));
    table_write(entry(1, PCI_MSIX_ENTRY_VECTOR_CTRL), 4, PCI_MSIX_ENTRY_CTRL_MASKBIT);
    ck_assert(vu_msix_vector_held(&msix, 1));
    /* Outside the table counts as held. */
    ck_assert(vu_msix_vector_held(&msix, 4));
}
END_TEST

/* A reset returns the entries to masked and keeps the kind of client; only a new client
 * starts over, and the entries it finds are left as they were. */
START_TEST(test_reset_and_new_client)
{
    ck_assert_int_eq(vu_msix_init(&msix, 2), 0);
    table_write(entry(0, PCI_MSIX_ENTRY_VECTOR_CTRL), 4, 0);
    ck_assert(!vu_msix_vector_held(&msix, 0));
    vu_msix_reset(&msix);
    ck_assert(vu_msix_client_writes_table(&msix));
    ck_assert(vu_msix_vector_held(&msix, 0));

    table_write(entry(1, PCI_MSIX_ENTRY_VECTOR_CTRL), 4, 0);
    vu_msix_set_pending(&msix, 0, true);
    vu_msix_forget_client(&msix);
    ck_assert(!vu_msix_client_writes_table(&msix));
    ck_assert(!vu_msix_vector_held(&msix, 0));
    ck_assert(vu_msix_vector_masked(&msix, 0));
    ck_assert(!vu_msix_vector_masked(&msix, 1));
    ck_assert(vu_msix_pending(&msix, 0));

    /* The next writer makes the masks count again. */
    table_write(entry(1, PCI_MSIX_ENTRY_DATA), 4, 0x41);
    ck_assert(vu_msix_vector_held(&msix, 0));
    ck_assert(!vu_msix_vector_held(&msix, 1));
}
END_TEST

static Suite *msix_suite(void)
{
    Suite *suite = suite_create("msix");
    TCase *table = tcase_create("table");
    TCase *pba = tcase_create("pba");
    TCase *masks = tcase_create("masks");

    tcase_add_checked_fixture(table, NULL, teardown);
    tcase_add_test(table, test_init_limits);
    tcase_add_test(table, test_reset_state);
    tcase_add_test(table, test_entry_fields);
    tcase_add_test(table, test_vector_control);
    tcase_add_test(table, test_qword_accesses);
    tcase_add_test(table, test_table_access_rules);
    tcase_add_test(table, test_destroyed_table_refuses_access);
    suite_add_tcase(suite, table);

    tcase_add_checked_fixture(pba, NULL, teardown);
    tcase_add_test(pba, test_pending_bits);
    tcase_add_test(pba, test_pba_access_rules);
    tcase_add_test(pba, test_reset_clears_everything);
    tcase_add_test(pba, test_masked_vector_becomes_pending_then_fires);
    suite_add_tcase(suite, pba);

    tcase_add_checked_fixture(masks, NULL, teardown);
    tcase_add_test(masks, test_unwritten_table_holds_nothing);
    tcase_add_test(masks, test_written_table_holds_masked_vectors);
    tcase_add_test(masks, test_reset_and_new_client);
    suite_add_tcase(suite, masks);
    return suite;
}

int main(void)
{
    return test_run_suite(msix_suite());
}
