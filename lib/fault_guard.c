/*
 * SIGBUS guard for DMA mappings; see fault_guard.h.
 */
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "device.h"
#include "fault_guard.h"

static __thread struct vu_device *guarded_device;
static uintptr_t page_size;
static pthread_once_t install_once = PTHREAD_ONCE_INIT;

/* Async-signal context: only reads of the device's DMA table (which the faulting thread
 * itself owns and is not modifying mid-access), mmap() and sigaction(). */
static void on_sigbus(int signal_number, siginfo_t *info, void *context)
{
    struct vu_device *device = guarded_device;
    uintptr_t address = (uintptr_t)info->si_addr;
    struct sigaction fallback;

    if (device != NULL) {
        for (uint32_t i = 0; i < device->dma.count; i++) {
            const struct vu_dma_range *range = &device->dma.ranges[i];
            uintptr_t start = (uintptr_t)range->mapping;

            if (range->mapping == NULL || address < start ||
                address - start >= range->mapping_length)
                continue;
            if (mmap((void *)(address & ~(page_size - 1)), page_size, PROT_READ | PROT_WRITE,
                     MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) == MAP_FAILED)
                break;
            device->dma_fault = 1;
            return;
        }
    }
    /* Not a guarded mapping: the access faults again with the default action. */
    memset(&fallback, 0, sizeof(fallback));
    fallback.sa_handler = SIG_DFL;
    sigaction(SIGBUS, &fallback, NULL);
}

static void install(void)
{
    struct sigaction action;

    page_size = (uintptr_t)sysconf(_SC_PAGESIZE);
    memset(&action, 0, sizeof(action));
    action.sa_sigaction = on_sigbus;
    action.sa_flags = SA_SIGINFO;
    sigemptyset(&action.sa_mask);
    sigaction(SIGBUS, &action, NULL);
}

void vu_fault_guard_install(void)
{
    pthread_once(&install_once, install);
}

struct vu_device *vu_fault_guard_enter(struct vu_device *device)
{
    struct vu_device *previous = guarded_device;

    guarded_device = device;
    return previous;
}
