/*
 * SIGBUS guard: a read of DMA memory the client truncated completes and marks the device,
 * while any other SIGBUS keeps its fatal default. Each case runs in a child process, since
 * the point is whether a process survives.
 */
#include <check.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "device.h"
#include "fault_guard.h"
#include "test_process.h"
#include "test_runner.h"

static void read_truncated_dma_memory(void)
{
    struct vu_device *device = calloc(1, sizeof(*device));
    int fd = memfd_create("guest", MFD_CLOEXEC);
    volatile uint8_t *memory;
    uint8_t value;

    if (device == NULL || fd < 0 || ftruncate(fd, 2 * 4096) < 0)
        _exit(10);
    vu_dma_table_init(&device->dma, 4);
    if (vu_dma_table_add(&device->dma, 0x1000, 2 * 4096,
                         VU_DMA_FLAG_READABLE | VU_DMA_FLAG_WRITABLE, fd, 0) < 0)
        _exit(11);
    memory = vu_dma_table_translate(&device->dma, 0x1000, 2 * 4096, VU_DMA_FLAG_READABLE);
    memory[4096] = 0x5a;
    /* The client shrinks the file under the mapping. */
    if (ftruncate(fd, 0) < 0)
        _exit(12);
    vu_fault_guard_install();
    vu_fault_guard_enter(device);
    value = memory[4096 + 7]; /* would be SIGBUS */
    memory[10] = 1;           /* the first page too */
    vu_fault_guard_enter(NULL);
    if (value != 0 || !device->dma_fault)
        _exit(13);
    vu_dma_table_destroy(&device->dma);
    close(fd);
    free(device);
}

START_TEST(truncated_dma_memory_is_absorbed)
{
    test_assert_child_passed(read_truncated_dma_memory);
}
END_TEST

static void unguarded_fault(void)
{
    int fd = memfd_create("other", MFD_CLOEXEC);
    volatile uint8_t *memory;

    if (fd < 0 || ftruncate(fd, 4096) < 0)
        _exit(10);
    memory = mmap(NULL, 4096, PROT_READ, MAP_SHARED, fd, 0);
    if (ftruncate(fd, 0) < 0)
        _exit(12);
    vu_fault_guard_install();
    /* No device is being served: the fault must end the process as usual. */
    (void)memory[0];
}

START_TEST(other_faults_stay_fatal)
{
    int status = test_run_child(unguarded_fault);

    ck_assert(WIFSIGNALED(status));
    ck_assert_int_eq(WTERMSIG(status), SIGBUS);
}
END_TEST

static void sent_sigbus(void)
{
    struct vu_device device;

    memset(&device, 0, sizeof(device));
    vu_fault_guard_install();
    vu_fault_guard_enter(&device);
    /* A SIGBUS someone sends is not a fault: it keeps its default, fatal effect. */
    kill(getpid(), SIGBUS);
}

START_TEST(sent_sigbus_stays_fatal)
{
    int status = test_run_child(sent_sigbus);

    ck_assert(WIFSIGNALED(status));
    ck_assert_int_eq(WTERMSIG(status), SIGBUS);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("fault_guard");
    TCase *test_case = tcase_create("guard");

    tcase_add_test(test_case, truncated_dma_memory_is_absorbed);
    tcase_add_test(test_case, other_faults_stay_fatal);
    tcase_add_test(test_case, sent_sigbus_stays_fatal);
    suite_add_tcase(suite, test_case);
    return test_run_suite(suite);
}
