/*
 * Guard against client memory that shrinks under a DMA mapping.
 *
 * A client shares guest memory for DMA as a file descriptor that the server maps. Nothing
 * stops the client from truncating that file afterwards, and touching the pages it lost
 * raises SIGBUS, which would end the whole process and every device it serves. While a
 * thread works for a device (vu_fault_guard_enter), a SIGBUS at an address inside one of
 * that device's DMA mappings is absorbed: an anonymous page replaces the lost one, so the
 * access completes (a read sees zeros), and the device's client is marked to be
 * disconnected. Any other SIGBUS keeps its default action.
 *
 * Plugin threads of their own are not covered: only the device's worker thread is.
 */
#ifndef VU_FAULT_GUARD_H
#define VU_FAULT_GUARD_H

struct vu_device;

/* Installs the SIGBUS handler; once per process, any number of calls. */
void vu_fault_guard_install(void);

/* This thread now works for `device` (NULL: for none). Returns the previous one. */
struct vu_device *vu_fault_guard_enter(struct vu_device *device);

#endif /* VU_FAULT_GUARD_H */
