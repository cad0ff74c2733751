/*
 * SIGBUS guard for DMA mappings; see fault_guard.h.
 */
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

#include "device.h"
#include "fault_guard.h"

static __thread struct vu_device *guarded_device;
static pthread_once_t install_once = PTHREAD_ONCE_INIT;

/* Async-signal context: only reads of the device's DMA table (which the faulting thread
 * itself owns and is not modifying mid-access), mmap(), sigaction() and raise(). */
static void on_sigbus(int signal_number, siginfo_t *info, void *context)
{
    struct vu_device *device = guarded_device;
    uintptr_t address = (uintptr_t)info->si_addr;
    struct sigaction fallback;

    /* Only a fault (si_code > 0) has an address; a SIGBUS sent by someone is not ours. */
    if (device != NULL && info->si_code > 0) {
        for (uint32_t i = 0; i < device->dma.count; i++) {
            const struct vu_dma_range *range = &device->dma.ranges[i];
            uintptr_t start = (uintptr_t)range->mapping, page;

            if (range->mapping == NULL || address < start ||
                address - start >= range->mapping_length)
                continue;
            /* The mapping's own page size: a hugetlbfs mapping splits only at huge pages. */
            page = start + (address - start) / range->page_size * range->page_size;
            if (mmap((void *)page, range->page_size, PROT_READ | PROT_WRITE,
                     MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) == MAP_FAILED)
                break;
            device->dma_fault = 1;
            return;
        }
    }
    /* Not a guarded mapping: the default action, at once (a fault would also repeat). */
    memset(&fallback, 0, sizeof(fallback));
    fallback.sa_handler = SIG_DFL;
    sigaction(SIGBUS, &fallback, NULL);
    raise(SIGBUS);
}

static void install(void)
{
    struct sigaction action;

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
