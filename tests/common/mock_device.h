/*
 * mockdev: a small device model compiled into the tests, so the protocol core can be
 * tested region kind by region kind without depending on a shipped plugin.
 *
 * Layout:
 *   BAR0  4 KiB  32-bit memory, trapped (callback): registers below
 *   BAR1  256 B  I/O, trapped: reads return the offset's low byte, writes are counted
 *   BAR2  64 KiB 64-bit prefetchable memory, mappable; first page trapped (sparse areas
 *                [4 KiB, 32 KiB) and [48 KiB, 64 KiB)), served by the host when untrapped
 *   BAR4  8 KiB  32-bit memory, trapped: MSI-X table at 0, PBA at 0x1000 (8 vectors)
 *   ROM   4 KiB  memory, read-only, filled with 0xa5
 *   Capabilities: power management, MSI (4 vectors, per-vector mask), MSI-X, Express.
 *   INTx pin A.
 * BAR0 registers (32-bit):
 *   0x00 magic (0x4d4f434b, read-only)   0x04..0x0c scratch
 *   0x10 write N: irq_trigger(N); reads the last return value
 *   0x20/0x24 DMA address low/high  0x28 DMA length  0x2c write 1: DMA read into the
 *   device buffer, 2: DMA write of the buffer (filled with the byte in 0x30)
 *   0x34 DMA status: 0 idle, 1 in flight, 2 done, 0x80000000|errno on error
 *   0x38 sum of the bytes of the last DMA read
 *   0x40 doorbell: writes are counted (reads return the count); also an I/O eventfd that
 *        matches the value 0x1234; 0x44 the last value written to the doorbell
 * BAR1 offset 0x10, 2 bytes: an I/O eventfd without datamatch (a write of 0xbeef).
 */
#ifndef TEST_MOCK_DEVICE_H
#define TEST_MOCK_DEVICE_H

#include <stdint.h>

#include <vfio-userd/plugin.h>

#define MOCK_MAGIC                0x4d4f434bu
#define MOCK_REG_MAGIC            0x00
#define MOCK_REG_SCRATCH          0x04
#define MOCK_REG_IRQ              0x10
#define MOCK_REG_DMA_ADDRESS_LOW  0x20
#define MOCK_REG_DMA_ADDRESS_HIGH 0x24
#define MOCK_REG_DMA_LENGTH       0x28
#define MOCK_REG_DMA_GO           0x2c
#define MOCK_REG_DMA_FILL         0x30
#define MOCK_REG_DMA_STATUS       0x34
#define MOCK_REG_DMA_SUM          0x38
#define MOCK_REG_DOORBELL         0x40
#define MOCK_REG_DOORBELL_VALUE   0x44
#define MOCK_DOORBELL_MATCH       0x1234u
#define MOCK_DMA_GO_READ          1u
#define MOCK_DMA_GO_WRITE         2u
#define MOCK_DMA_IDLE             0u
#define MOCK_DMA_BUSY             1u
#define MOCK_DMA_DONE             2u
#define MOCK_DMA_ERROR            0x80000000u
#define MOCK_DMA_MAX              (4u << 20)

#define MOCK_BAR2_SIZE    (64u * 1024)
#define MOCK_MSIX_VECTORS 8u

/* Callback counts, readable from the test thread. */
struct mock_observations {
    unsigned resets;
    unsigned dma_maps;
    unsigned dma_unmaps;
    unsigned irq_state_changes;
    unsigned connects;
    unsigned disconnects;
    unsigned destroys;
    unsigned io_writes;
    unsigned io_doorbells;
};

extern const struct vfio_userd_plugin mock_plugin;
extern struct mock_observations mock_observed;

/* Reads one counter with the ordering the server thread wrote it with. */
#define MOCK_OBSERVED(field) __atomic_load_n(&mock_observed.field, __ATOMIC_SEQ_CST)

#endif /* TEST_MOCK_DEVICE_H */
