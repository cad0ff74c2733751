/*
 * testdev, the reference device model: private declarations shared by its source files.
 *
 * The register map below is the contract documented in vfio-userd-testdev(7); a change here
 * is a change to that page. Register logic lives in plain functions that take a struct
 * testdev and reach the host only through td->host, so a test can drive them with a fake
 * host table.
 */
#ifndef TESTDEV_H
#define TESTDEV_H

#include <stdbool.h>
#include <stdint.h>

#include <vfio-userd/plugin.h>

#define TESTDEV_MAGIC   0x54444556u /* "TDEV" */
#define TESTDEV_VERSION 0x00010000u /* major << 16 | minor */

#define TESTDEV_PAGE_SIZE 4096u
#define TESTDEV_BAR0_SIZE 4096u

/* The longest DMA operation; the bounce buffer has this size. */
#define TESTDEV_DMA_MAX_LENGTH (1u << 20)

/* BAR0 register offsets. 64-bit registers are two 32-bit halves, low half first. */
enum testdev_register {
    TESTDEV_REG_MAGIC = 0x000,
    TESTDEV_REG_VERSION = 0x004,
    TESTDEV_REG_FEATURES = 0x008,
    TESTDEV_REG_RESET = 0x00c,
    TESTDEV_REG_SCRATCH0 = 0x010,
    TESTDEV_REG_SCRATCH1 = 0x014,
    TESTDEV_REG_SCRATCH2 = 0x018,
    TESTDEV_REG_SCRATCH3 = 0x01c,
    TESTDEV_REG_SCRATCH64 = 0x020,
    TESTDEV_REG_RAM_SIZE = 0x028,
    TESTDEV_REG_RAM_TRAP_READS = 0x030,
    TESTDEV_REG_RAM_TRAP_WRITES = 0x034,
    TESTDEV_REG_MSIX_VECTORS = 0x038,
    TESTDEV_REG_MSI_VECTORS = 0x03c,

    TESTDEV_REG_DOORBELL = 0x040,
    TESTDEV_REG_INT_STATUS = 0x044,
    TESTDEV_REG_INT_ACK = 0x048,
    TESTDEV_REG_INT_COUNT = 0x04c,
    TESTDEV_REG_INT_LAST_VECTOR = 0x050,
    TESTDEV_REG_INT_LAST_ERROR = 0x054,
    TESTDEV_REG_INT_FAIL_COUNT = 0x058,

    TESTDEV_REG_DMA_SOURCE = 0x080,
    TESTDEV_REG_DMA_DESTINATION = 0x088,
    TESTDEV_REG_DMA_LENGTH = 0x090,
    TESTDEV_REG_DMA_PATTERN = 0x094,
    TESTDEV_REG_DMA_OPERATION = 0x098,
    TESTDEV_REG_DMA_CONTROL = 0x09c,
    TESTDEV_REG_DMA_STATUS = 0x0a0,
    TESTDEV_REG_DMA_CHECKSUM = 0x0a4,
    TESTDEV_REG_DMA_ERRNO = 0x0a8,
    TESTDEV_REG_DMA_MAX_LENGTH = 0x0ac,
    TESTDEV_REG_DMA_DONE_COUNT = 0x0b0,
    TESTDEV_REG_DMA_ERROR_COUNT = 0x0b4,

    /* One 64-bit counter per vfio-user command number: MESSAGE_COUNTS + 8 * command. */
    TESTDEV_REG_MESSAGE_COUNTS = 0x200,
    TESTDEV_REG_MESSAGE_COUNTS_END = 0x300,
};

/* FEATURES bits. */
#define TESTDEV_FEATURE_DMA            (1u << 0)
#define TESTDEV_FEATURE_RAM            (1u << 1)
#define TESTDEV_FEATURE_MSI            (1u << 2)
#define TESTDEV_FEATURE_MSIX           (1u << 3)
#define TESTDEV_FEATURE_MESSAGE_COUNTS (1u << 4)

/* RESET bits. */
#define TESTDEV_RESET_DEVICE (1u << 0)

/* INT_STATUS / INT_ACK bits: why the device raised an interrupt. */
#define TESTDEV_INT_DOORBELL (1u << 0)
#define TESTDEV_INT_DMA      (1u << 1)
#define TESTDEV_INT_ALL      (TESTDEV_INT_DOORBELL | TESTDEV_INT_DMA)

enum testdev_dma_operation {
    TESTDEV_DMA_OP_COPY = 0,
    TESTDEV_DMA_OP_FILL = 1,
    TESTDEV_DMA_OP_CHECKSUM = 2,
};

/* DMA_CONTROL bits. */
#define TESTDEV_DMA_CONTROL_GO           (1u << 0)
#define TESTDEV_DMA_CONTROL_IRQ_ENABLE   (1u << 1)
#define TESTDEV_DMA_CONTROL_VECTOR_SHIFT 16
#define TESTDEV_DMA_CONTROL_VECTOR_MASK  (0xffffu << TESTDEV_DMA_CONTROL_VECTOR_SHIFT)
/* What DMA_CONTROL keeps and reads back: GO acts once and reads as 0. */
#define TESTDEV_DMA_CONTROL_STORED                                                                 \
    (TESTDEV_DMA_CONTROL_IRQ_ENABLE | TESTDEV_DMA_CONTROL_VECTOR_MASK)

/* DMA_STATUS fields. */
#define TESTDEV_DMA_STATE_MASK        0xfu
#define TESTDEV_DMA_STATE_IDLE        0u
#define TESTDEV_DMA_STATE_BUSY        1u
#define TESTDEV_DMA_STATE_DONE        2u
#define TESTDEV_DMA_STATE_ERROR       3u
#define TESTDEV_DMA_STATUS_REJECTED   (1u << 4) /* a GO arrived while BUSY */
#define TESTDEV_DMA_STATUS_MESSAGES   (1u << 5) /* part of it waited for DMA_READ/DMA_WRITE */
#define TESTDEV_DMA_STATUS_CODE_SHIFT 8

enum testdev_dma_error {
    TESTDEV_DMA_ERROR_NONE = 0,
    TESTDEV_DMA_ERROR_OPERATION = 1,
    TESTDEV_DMA_ERROR_LENGTH = 2,
    TESTDEV_DMA_ERROR_WRAP = 3,
    TESTDEV_DMA_ERROR_UNMAPPED = 4,
    TESTDEV_DMA_ERROR_READ_ONLY = 5,
    TESTDEV_DMA_ERROR_IO = 6,
    TESTDEV_DMA_ERROR_BUSY = 7,
    TESTDEV_DMA_ERROR_BUS_MASTER = 8,
};

/* Parameters, validated once at create. */
struct testdev_config {
    struct vfio_userd_pci_identity identity;
    uint64_t ram_size;
    uint32_t msix_vectors;
    uint32_t msi_vectors; /* 0: no MSI capability */
};

/* Everything a reset returns to zero. */
struct testdev_registers {
    uint32_t scratch[4];
    uint64_t scratch64;
    uint32_t ram_trap_reads;
    uint32_t ram_trap_writes;

    uint32_t int_status;
    uint32_t int_count;
    uint32_t int_last_vector;
    uint32_t int_last_error;
    uint32_t int_fail_count;

    uint64_t dma_source;
    uint64_t dma_destination;
    uint32_t dma_length;
    uint32_t dma_pattern;
    uint32_t dma_operation;
    uint32_t dma_control;
    uint32_t dma_status;
    uint32_t dma_checksum;
    uint32_t dma_errno;
    uint32_t dma_done_count;
    uint32_t dma_error_count;
};

enum testdev_dma_stage {
    TESTDEV_DMA_STAGE_IDLE,
    TESTDEV_DMA_STAGE_READ,     /* bring the source in (COPY, CHECKSUM) */
    TESTDEV_DMA_STAGE_CHECKSUM, /* checksum the bounce buffer */
    TESTDEV_DMA_STAGE_WRITE,    /* write the destination (COPY, FILL) */
    TESTDEV_DMA_STAGE_FINISH,
};

/* The engine's state beyond its registers; the operation's parameters are latched at GO. */
struct testdev_dma {
    struct vfio_userd_dma_request request;
    uint8_t *bounce; /* TESTDEV_DMA_MAX_LENGTH bytes, for transfers through messages */
    enum testdev_dma_stage stage;
    bool outstanding; /* the host holds `request` until it calls complete() */
    bool abandoned;   /* a reset came while outstanding: drop the result */

    uint32_t operation;
    uint64_t source;
    uint64_t destination;
    uint32_t length;
    uint32_t pattern;
    bool irq_enable;
    uint32_t vector;
};

struct testdev {
    struct vfio_userd_device *device;
    const struct vfio_userd_host *host;
    struct testdev_config config;
    uint32_t features;
    struct testdev_registers registers;
    struct testdev_dma dma;
};

/* registers.c */
uint32_t testdev_register_read(const struct testdev *td, uint32_t offset);
void testdev_register_write(struct testdev *td, uint32_t offset, uint32_t value);
void testdev_reset(struct testdev *td);
void testdev_raise_interrupt(struct testdev *td, uint32_t cause, uint32_t vector);
int testdev_bar0_access(void *instance, uint32_t region, uint64_t offset, void *data,
                        uint32_t count, bool is_write);
int testdev_ram_access(void *instance, uint32_t region, uint64_t offset, void *data, uint32_t count,
                       bool is_write);
int testdev_msix_bar_access(void *instance, uint32_t region, uint64_t offset, void *data,
                            uint32_t count, bool is_write);
/* Whether the host table has message_counters (older hosts end before it). */
bool testdev_host_has_message_counters(const struct vfio_userd_host *host);

/* dma.c */
void testdev_dma_go(struct testdev *td);
/* A reset: forget the current operation; a transfer the host still holds is abandoned. */
void testdev_dma_reset(struct testdev *td);
uint32_t testdev_crc32(uint32_t crc, const uint8_t *bytes, size_t length);

#endif /* TESTDEV_H */
