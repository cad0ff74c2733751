/*
 * libFuzzer target for the server's whole message path, without a daemon or a listening
 * socket: every input is the byte stream a client sends on one connection to a fresh
 * device, cut into vfio-user messages the way the transport (lib/endpoint.c) cuts it, fed
 * to vu_session_handle_message() one by one, with the replies flushed through a real
 * socketpair (so descriptor passing runs too) and read back and dropped.
 *
 * Input format: vfio-user messages back to back, each header's message_size saying where
 * the next one starts; a message cut short by the end of the input ends the connection, as
 * a client hanging up mid-message would. Descriptors cannot travel in a byte string, so the
 * Error field of a *command* header, which the spec reserves, is reused to ask for them:
 *   bits 0-4  how many descriptors arrive with the message (more than the server's
 *             max_msg_fds is what the transport rejects as "too many descriptors")
 *   bit 5     swap their kind: DMA_MAP normally gets memfds and every other command
 *             eventfds
 *   bit 6     deliver the command on the twin socket, once one was negotiated
 *   bit 8     a memfd as long as the DMA_MAP asks (else 1 MiB; see memfd_length())
 *   bit 7     the next message arrived in the same read: handle it before flushing the
 *             replies, as the transport does for up to 64 messages per wake-up
 * Replies (the client's answers to DMA_READ/DMA_WRITE) keep their Error field as is and
 * arrive on the twin socket when there is one.
 *
 * Every VERSION payload is also run through the capability parser and the negotiation
 * with other server limits, and the spec's negotiation rules are asserted on the result;
 * every reply, through the DMA reply decoder with each count its length could mean.
 *
 * Each input builds and frees everything, so LeakSanitizer sees per-input leaks; leaked
 * file descriptors are caught by a check of the descriptor table after each input.
 *
 * Environment: FUZZ_MESSAGE_TRACE=1 prints the conversation (run it on a crash file to
 * decode it).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "device.h"
#include "log.h"
#include "session.h"
#include "wire.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_FD_COUNT_MASK  0x1fu
#define FUZZ_FD_SWAP_KIND   (1u << 5)
#define FUZZ_TWIN_CHANNEL   (1u << 6)
#define FUZZ_SAME_READ      (1u << 7)
#define FUZZ_BATCH_MAX      64
#define FUZZ_MEMFD_SIZE     (1u << 20)
#define FUZZ_DMA_BUFFER     (64u * 1024)
#define FUZZ_FD_CHECK_RANGE 256

/* FUZZ_MESSAGE_TRACE=1 prints the conversation, to decode a reproducer by running it. */
static bool trace;

static void trace_header(const char *direction, const struct vu_header *header)
{
    if (!trace)
        return;
    fprintf(stderr, "%s id %u %s size %u flags %#x error %u\n", direction, header->message_id,
            vu_wire_command_name(header->command), header->message_size, header->flags,
            header->error);
}

static void fuzz_fail(const char *what)
{
    fprintf(stderr, "fuzz_message: %s\n", what);
    abort();
}

/* ---------------------------------------------------------------------------------------
 * fuzzdev: a device model that reaches every host service from plain register writes.
 *
 * BAR0 4 KiB trapped, 32-bit registers (other sizes and offsets fail with -EINVAL):
 *   0x00 scratch              0x04 write N: irq_trigger(N); reads the last result
 *   0x08 write I << 8 | S: irq_signal(I, S)
 *   0x10/0x14 DMA address low/high   0x18 DMA length (at most 64 KiB)
 *   0x1c write E << 8 | OP, on DMA engine E (0 or 1): OP 1 dma_submit read, 2 dma_submit
 *        write, 3 dma_translate read, 4 dma_translate write
 *   0x20 resubmissions on success, for the next transfer started
 *   0x24/0x2c status of engine 0/1 (0 or -errno; 1 while in flight)
 *   0x28 write: pci_config_read of the config byte at that offset; reads it back
 * BAR1 256 B I/O, trapped: reads mirror the first bytes of BAR2's memory.
 * BAR2 64 KiB 64-bit prefetchable memory, mappable with two sparse areas, served by the
 * host.   BAR4 8 KiB host memory holding the MSI-X table (8 vectors) and PBA.   ROM 2 KiB.
 * PM, MSI (4, maskable), MSI-X, vendor-specific, Express, INTx pin A.
 */

#define FUZZDEV_ENGINES 2

struct fuzzdev;

/* Two engines, so the host queues a request behind another one. */
struct fuzzdev_engine {
    struct fuzzdev *dev;
    struct vfio_userd_dma_request request;
    uint8_t *buffer;
    uint32_t repeats;
    uint32_t status;
    bool busy;
};

struct fuzzdev {
    struct vfio_userd_device *device;
    uint32_t scratch;
    int32_t last_result;
    uint64_t dma_address;
    uint32_t dma_length;
    uint32_t dma_repeats;
    uint32_t config_byte;
    bool connected;
    struct fuzzdev_engine engines[FUZZDEV_ENGINES];
};

static void fuzzdev_dma_start(struct fuzzdev_engine *engine, bool to_client);

static void fuzzdev_dma_complete(struct vfio_userd_dma_request *request, int status)
{
    struct fuzzdev_engine *engine = request->opaque;

    if (!engine->busy)
        fuzz_fail("a DMA request completed twice");
    engine->busy = false;
    engine->status = (uint32_t)status;
    /* Chained transfers submit from inside the completion, as real engines do. */
    if (status == 0 && engine->repeats > 0) {
        engine->repeats--;
        fuzzdev_dma_start(engine, request->to_client);
    }
}

static void fuzzdev_dma_start(struct fuzzdev_engine *engine, bool to_client)
{
    struct fuzzdev *dev = engine->dev;
    int ret;

    if (engine->busy || dev->dma_length > FUZZ_DMA_BUFFER)
        return;
    engine->request = (struct vfio_userd_dma_request){
        .address = dev->dma_address,
        .buffer = engine->buffer,
        .length = dev->dma_length,
        .to_client = to_client,
        .complete = fuzzdev_dma_complete,
        .opaque = engine,
    };
    engine->busy = true;
    engine->status = 1;
    ret = dev->device->host->dma_submit(dev->device, &engine->request);
    if (ret != -EINPROGRESS) {
        engine->busy = false;
        engine->status = (uint32_t)ret;
    }
}

static void fuzzdev_dma_translate(struct fuzzdev_engine *engine, bool to_client)
{
    struct fuzzdev *dev = engine->dev;
    uint32_t access = to_client ? VFIO_USERD_DMA_WRITE : VFIO_USERD_DMA_READ;
    uint8_t *client;

    if (dev->dma_length > FUZZ_DMA_BUFFER)
        return;
    client =
        dev->device->host->dma_translate(dev->device, dev->dma_address, dev->dma_length, access);
    engine->status = client != NULL ? 0 : (uint32_t)-EFAULT;
    if (client == NULL)
        return;
    if (to_client)
        memcpy(client, engine->buffer, dev->dma_length);
    else
        memcpy(engine->buffer, client, dev->dma_length);
}

static void fuzzdev_dma_go(struct fuzzdev *dev, uint32_t value)
{
    struct fuzzdev_engine *engine = &dev->engines[(value >> 8) & 1];
    uint32_t operation = value & 0xff;

    if (operation == 1 || operation == 2) {
        if (!engine->busy)
            engine->repeats = dev->dma_repeats;
        fuzzdev_dma_start(engine, operation == 2);
    } else if (operation == 3 || operation == 4) {
        fuzzdev_dma_translate(engine, operation == 4);
    }
}

static void fuzzdev_register_write(struct fuzzdev *dev, uint64_t offset, uint32_t value)
{
    const struct vfio_userd_host *host = dev->device->host;

    switch (offset) {
    case 0x00:
        dev->scratch = value;
        break;
    case 0x04:
        dev->last_result = host->irq_trigger(dev->device, value);
        break;
    case 0x08:
        dev->last_result =
            host->irq_signal(dev->device, (enum vfio_userd_irq_index)(value >> 8), value & 0xff);
        break;
    case 0x10:
        dev->dma_address = (dev->dma_address & ~0xffffffffull) | value;
        break;
    case 0x14:
        dev->dma_address = (dev->dma_address & 0xffffffffull) | (uint64_t)value << 32;
        break;
    case 0x18:
        dev->dma_length = value;
        break;
    case 0x1c:
        fuzzdev_dma_go(dev, value);
        break;
    case 0x20:
        dev->dma_repeats = value;
        break;
    case 0x28: {
        uint8_t byte = 0;
        dev->last_result = host->pci_config_read(dev->device, value, &byte, 1);
        dev->config_byte = byte;
        break;
    }
    default:
        break;
    }
}

static uint32_t fuzzdev_register_read(const struct fuzzdev *dev, uint64_t offset)
{
    switch (offset) {
    case 0x00:
        return dev->scratch;
    case 0x04:
    case 0x08:
        return (uint32_t)dev->last_result;
    case 0x10:
        return (uint32_t)dev->dma_address;
    case 0x14:
        return (uint32_t)(dev->dma_address >> 32);
    case 0x18:
        return dev->dma_length;
    case 0x20:
        return dev->dma_repeats;
    case 0x24:
        return dev->engines[0].status;
    case 0x2c:
        return dev->engines[1].status;
    case 0x28:
        return dev->config_byte;
    default:
        return 0;
    }
}

static int fuzzdev_bar0_access(void *instance, uint32_t region, uint64_t offset, void *data,
                               uint32_t count, bool is_write)
{
    struct fuzzdev *dev = instance;
    uint32_t value;

    if (region != VFIO_USERD_REGION_BAR0)
        fuzz_fail("BAR0 callback called for another region");
    if (count != 4 || offset % 4 != 0)
        return -EINVAL;
    if (is_write) {
        memcpy(&value, data, sizeof(value));
        fuzzdev_register_write(dev, offset, value);
    } else {
        value = fuzzdev_register_read(dev, offset);
        memcpy(data, &value, sizeof(value));
    }
    return 0;
}

static int fuzzdev_io_access(void *instance, uint32_t region, uint64_t offset, void *data,
                             uint32_t count, bool is_write)
{
    struct fuzzdev *dev = instance;
    const uint8_t *memory = dev->device->host->region_memory(dev->device, VFIO_USERD_REGION_BAR2);

    if (region != VFIO_USERD_REGION_BAR1 || offset > 256 || count > 256 - offset)
        fuzz_fail("I/O BAR access out of its region");
    if (memory == NULL)
        fuzz_fail("no memory behind a MEMORY region");
    if (!is_write)
        memcpy(data, memory + offset, count);
    return 0;
}

static bool fuzzdev_busy(const struct fuzzdev *dev)
{
    for (unsigned i = 0; i < FUZZDEV_ENGINES; i++)
        if (dev->engines[i].busy)
            return true;
    return false;
}

static int fuzzdev_reset(void *instance)
{
    struct fuzzdev *dev = instance;

    dev->scratch = 0;
    dev->dma_repeats = 0;
    return 0;
}

static void fuzzdev_dma_map(void *instance, uint64_t address, uint64_t size, uint32_t access)
{
    struct fuzzdev *dev = instance;

    if (!dev->connected || size == 0 || address + size - 1 < address ||
        (access & ~(uint32_t)(VFIO_USERD_DMA_READ | VFIO_USERD_DMA_WRITE)) || access == 0)
        fuzz_fail("dma_map notice for a range the host should have refused");
}

static void fuzzdev_dma_unmap(void *instance, uint64_t address, uint64_t size)
{
    struct fuzzdev *dev = instance;

    if (!dev->connected)
        fuzz_fail("dma_unmap notice with no client");
}

static void fuzzdev_irq_state(void *instance, enum vfio_userd_irq_index irq)
{
    struct fuzzdev *dev = instance;

    if ((unsigned)irq >= VFIO_USERD_IRQ_COUNT || !dev->connected)
        fuzz_fail("irq_state notice for no interrupt type");
    /* A device that raises its interrupt as soon as an eventfd is wired, from the callback. */
    dev->last_result = dev->device->host->irq_trigger(dev->device, 0);
}

static void fuzzdev_client_connect(void *instance)
{
    struct fuzzdev *dev = instance;

    if (dev->connected)
        fuzz_fail("client_connect twice");
    dev->connected = true;
}

static void fuzzdev_client_disconnect(void *instance)
{
    struct fuzzdev *dev = instance;

    /* The session failed every queued request before detaching. */
    if (fuzzdev_busy(dev))
        fuzz_fail("client gone with a DMA request never completed");
    if (!dev->connected)
        fuzz_fail("client_disconnect without client_connect");
    dev->connected = false;
}

static void fuzzdev_free(struct fuzzdev *dev)
{
    for (unsigned i = 0; i < FUZZDEV_ENGINES; i++)
        free(dev->engines[i].buffer);
    free(dev);
}

static void fuzzdev_destroy(void *instance)
{
    struct fuzzdev *dev = instance;

    if (fuzzdev_busy(dev) || dev->connected)
        fuzz_fail("device destroyed while a client or a DMA request is still attached");
    fuzzdev_free(dev);
}

static const struct vfio_userd_device_ops fuzzdev_ops = {
    .reset = fuzzdev_reset,
    .dma_map = fuzzdev_dma_map,
    .dma_unmap = fuzzdev_dma_unmap,
    .irq_state = fuzzdev_irq_state,
    .client_connect = fuzzdev_client_connect,
    .client_disconnect = fuzzdev_client_disconnect,
    .destroy = fuzzdev_destroy,
};

static int fuzzdev_create(struct vfio_userd_device *device, const json_t *params,
                          struct vfio_userd_error *error)
{
    static const struct vfio_userd_sparse_area bar2_areas[] = {
        {.offset = 0, .size = 16 * 1024},
        {.offset = 32 * 1024, .size = 32 * 1024},
    };
    static const uint8_t vendor_data[] = {0xde, 0xad, 0xbe, 0xef, 0x01};
    const struct vfio_userd_host *host = device->host;
    const struct vfio_userd_pci_identity identity = {
        .vendor_id = 0x1de5,
        .device_id = 0xf022,
        .class_code = 0xff0000,
        .interrupt_pin = 1,
    };
    const uint32_t rw = VFIO_USERD_REGION_READABLE | VFIO_USERD_REGION_WRITABLE;
    struct fuzzdev *dev;
    int ret;

    dev = calloc(1, sizeof(*dev));
    if (dev == NULL)
        return -ENOMEM;
    dev->device = device;
    for (unsigned i = 0; i < FUZZDEV_ENGINES; i++) {
        dev->engines[i].dev = dev;
        dev->engines[i].buffer = calloc(1, FUZZ_DMA_BUFFER);
        if (dev->engines[i].buffer == NULL) {
            fuzzdev_free(dev);
            return -ENOMEM;
        }
    }
    ret = host->set_ops(device, &fuzzdev_ops, dev);
    if (ret < 0) {
        fuzzdev_free(dev);
        return ret;
    }
    if ((ret = host->pci_set_identity(device, &identity)) < 0 ||
        (ret = host->add_region(device, VFIO_USERD_REGION_BAR0,
                                &(struct vfio_userd_region){
                                    .size = 4096, .flags = rw, .access = fuzzdev_bar0_access})) <
            0 ||
        (ret = host->add_region(device, VFIO_USERD_REGION_BAR1,
                                &(struct vfio_userd_region){.size = 256,
                                                            .flags = rw | VFIO_USERD_BAR_IO,
                                                            .access = fuzzdev_io_access})) < 0 ||
        (ret = host->add_region(device, VFIO_USERD_REGION_BAR2,
                                &(struct vfio_userd_region){.size = 64 * 1024,
                                                            .flags = rw | VFIO_USERD_REGION_MEMORY |
                                                                     VFIO_USERD_REGION_MAPPABLE |
                                                                     VFIO_USERD_BAR_64BIT |
                                                                     VFIO_USERD_BAR_PREFETCHABLE,
                                                            .sparse_area_count = 2,
                                                            .sparse_areas = bar2_areas})) < 0 ||
        (ret = host->add_region(device, VFIO_USERD_REGION_BAR4,
                                &(struct vfio_userd_region){
                                    .size = 8192, .flags = rw | VFIO_USERD_REGION_MEMORY})) < 0 ||
        (ret = host->add_region(device, VFIO_USERD_REGION_ROM,
                                &(struct vfio_userd_region){.size = 2048,
                                                            .flags = VFIO_USERD_REGION_READABLE |
                                                                     VFIO_USERD_REGION_MEMORY})) <
            0 ||
        (ret = host->pci_add_power_management(device)) < 0 ||
        (ret = host->pci_add_msi(device, 4, true)) < 0 ||
        (ret = host->pci_add_msix(device, 8, 4, 0, 4, 0x1000)) < 0 ||
        (ret = host->pci_add_vendor_specific(device, vendor_data, sizeof(vendor_data))) < 0 ||
        (ret = host->pci_add_express(device)) < 0)
        return vfio_userd_error_set(error, ret, NULL, "declaring fuzzdev failed");
    return 0;
}

static const struct vfio_userd_plugin fuzzdev_plugin = {
    .abi_major = VFIO_USERD_ABI_MAJOR,
    .abi_minor = VFIO_USERD_ABI_MINOR,
    .name = "fuzzdev",
    .version = "1",
    .description = "device model of the message fuzzer",
    .create = fuzzdev_create,
};

/* ---------------------------------------------------------------------------------------
 * VERSION capabilities: parser round trip and negotiation rules.
 */

static bool capabilities_equal(const struct vu_capabilities *a, const struct vu_capabilities *b)
{
    return a->max_msg_fds == b->max_msg_fds && a->max_data_xfer_size == b->max_data_xfer_size &&
           a->max_dma_maps == b->max_dma_maps && a->pgsizes == b->pgsizes &&
           a->write_multiple == b->write_multiple && a->twin_socket == b->twin_socket;
}

static void check_round_trip(const struct vu_capabilities *parsed)
{
    struct vu_capabilities again;
    char *text = vu_wire_format_capabilities(parsed, -1);

    if (text == NULL)
        fuzz_fail("formatting parsed capabilities failed");
    if (vu_wire_parse_capabilities(text, strlen(text) + 1, &again) != 0 ||
        !capabilities_equal(parsed, &again))
        fuzz_fail("capabilities do not survive format and parse");
    free(text);
}

static void check_negotiation(uint16_t major, uint16_t minor, const char *json, size_t length,
                              int parse_result, const struct vu_capabilities *client,
                              const struct vu_capabilities *limits, bool twin_offered)
{
    struct vu_capabilities session, reply;
    char *reply_json = NULL;
    uint16_t reply_minor = 0xffff;
    int ret;

    ret = vu_wire_negotiate_version(major, minor, json, length, limits, twin_offered, &session,
                                    &reply_minor, &reply_json);
    if (major != VU_VERSION_MAJOR) {
        if (ret != -ENOTSUP || reply_json != NULL)
            fuzz_fail("a foreign major version was not refused with -ENOTSUP");
        return;
    }
    if (parse_result < 0) {
        if (ret != parse_result || reply_json != NULL)
            fuzz_fail("negotiation accepted JSON the parser refuses");
        return;
    }
    if (ret < 0) {
        /* The only refusals left: no common page size, or a zero transfer size. */
        if (ret != -EINVAL ||
            ((client->pgsizes & limits->pgsizes) != 0 && client->max_data_xfer_size != 0))
            fuzz_fail("negotiation refused a valid proposal");
        free(reply_json);
        return;
    }
    if (reply_minor > minor || reply_minor > VU_VERSION_MINOR)
        fuzz_fail("reply minor above the proposed or supported one");
    if (session.pgsizes == 0 || (session.pgsizes & ~client->pgsizes) ||
        (session.pgsizes & ~limits->pgsizes))
        fuzz_fail("page sizes are not a common subset");
    if (session.max_dma_maps > client->max_dma_maps || session.max_dma_maps > limits->max_dma_maps)
        fuzz_fail("max_dma_maps above what one side allows");
    if (session.write_multiple && !(client->write_multiple && limits->write_multiple))
        fuzz_fail("write_multiple enabled without both sides");
    if (session.twin_socket && !(client->twin_socket && twin_offered))
        fuzz_fail("twin socket enabled without both sides");
    if (session.max_msg_fds != client->max_msg_fds ||
        session.max_data_xfer_size != client->max_data_xfer_size)
        fuzz_fail("the client's receive limits were not kept");
    if (reply_json == NULL ||
        vu_wire_parse_capabilities(reply_json, strlen(reply_json) + 1, &reply) != 0)
        fuzz_fail("reply JSON does not parse");
    if (reply.max_msg_fds != limits->max_msg_fds ||
        reply.max_data_xfer_size != limits->max_data_xfer_size ||
        reply.pgsizes != session.pgsizes || reply.max_dma_maps != session.max_dma_maps ||
        reply.write_multiple != session.write_multiple || reply.twin_socket != session.twin_socket)
        fuzz_fail("reply JSON disagrees with the negotiated session");
    if (session.twin_socket != (strstr(reply_json, "\"fd_index\":0") != NULL))
        fuzz_fail("twin socket reply without its fd_index, or the reverse");
    free(reply_json);
}

static void fuzz_version_payload(const uint8_t *payload, size_t length)
{
    static const struct vu_capabilities limits[] = {
        {16, 1u << 20, 1024, 4096, true, true},
        {0, 512, 1, 4096 | (1u << 21) | (1ull << 30), false, false},
        {UINT32_MAX, UINT32_MAX, UINT32_MAX, UINT64_MAX, true, true},
    };
    struct vu_capabilities client;
    struct vu_version version;
    char *json;
    size_t json_length;
    int parse_result;

    if (length < sizeof(version))
        return;
    memcpy(&version, payload, sizeof(version));
    json_length = length - sizeof(version);
    /* An exact-size copy, so any read past the JSON is caught. */
    json = malloc(json_length > 0 ? json_length : 1);
    if (json == NULL)
        fuzz_fail("out of memory");
    memcpy(json, payload + sizeof(version), json_length);

    parse_result = vu_wire_parse_capabilities(json, json_length, &client);
    if (parse_result == 0)
        check_round_trip(&client);
    else if (parse_result != -EINVAL)
        fuzz_fail("the parser failed with something other than -EINVAL");
    for (size_t i = 0; i < sizeof(limits) / sizeof(limits[0]); i++)
        check_negotiation(version.major, version.minor, json, json_length, parse_result, &client,
                          &limits[i], i != 1);
    free(json);
}

/*
 * The DMA reply decoder on a reply, as the answer to a DMA_READ or DMA_WRITE at the
 * address it names, of each count its length could mean, after each earlier layout: data
 * it accepts lies within the payload, at one of the two offsets, and in the layout the
 * client showed before; what it refuses comes with a reason.
 */
static void fuzz_dma_reply(const uint8_t *payload, size_t length)
{
    const enum vu_dma_layout layouts[] = {VU_DMA_LAYOUT_UNKNOWN, VU_DMA_LAYOUT_COUNT64,
                                          VU_DMA_LAYOUT_COUNT32};
    uint64_t counts[4] = {0, 64, 0, 0}, address = 0;

    if (length >= 8)
        memcpy(&address, payload, sizeof(address));
    if (length >= 12)
        counts[2] = length - 12;
    if (length >= 16)
        counts[3] = length - 16;
    for (int is_write = 0; is_write <= 1; is_write++) {
        for (size_t c = 0; c < sizeof(counts) / sizeof(counts[0]); c++) {
            for (size_t l = 0; l < sizeof(layouts) / sizeof(layouts[0]); l++) {
                struct vu_dma_reply reply;
                int ret = vu_wire_decode_dma_reply(is_write, payload, length, address, counts[c],
                                                   layouts[l], &reply);

                if (ret < 0) {
                    if (ret != -EPROTO || reply.problem == NULL)
                        fuzz_fail("a DMA reply refused without -EPROTO and a reason");
                    continue;
                }
                if (ret != 0)
                    fuzz_fail("the DMA reply decoder returned a positive value");
                if (layouts[l] != VU_DMA_LAYOUT_UNKNOWN && reply.layout != VU_DMA_LAYOUT_UNKNOWN &&
                    reply.layout != layouts[l])
                    fuzz_fail("a DMA reply read in another layout than the client's");
                if (!is_write && ((reply.data_offset != 12 && reply.data_offset != 16) ||
                                  reply.data_offset + counts[c] > length))
                    fuzz_fail("DMA reply data outside the payload");
            }
        }
    }
}

/* ---------------------------------------------------------------------------------------
 * The connection: socket plumbing in place of lib/endpoint.c.
 */

struct fuzz_connection {
    struct vu_session *session;
    int server_socket; /* where the session's main queue is flushed */
    int client_socket; /* its peer, read and discarded */
    int twin_client;   /* client end of the twin socket, once received */
    bool closing;      /* the session asked to close: flush, then stop reading */
    bool dead;         /* a flush failed: the transport drops the client at once */
};

static void close_received(struct fuzz_connection *connection, struct msghdr *message)
{
    for (struct cmsghdr *cmsg = CMSG_FIRSTHDR(message); cmsg != NULL;
         cmsg = CMSG_NXTHDR(message, cmsg)) {
        size_t count;
        int fds[VU_OUTPUT_MAX_FDS_PER_MESSAGE];

        if (cmsg->cmsg_level != SOL_SOCKET || cmsg->cmsg_type != SCM_RIGHTS)
            continue;
        count = (cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        if (count > VU_OUTPUT_MAX_FDS_PER_MESSAGE)
            fuzz_fail("a reply carried more descriptors than the queue allows");
        memcpy(fds, CMSG_DATA(cmsg), count * sizeof(int));
        for (size_t i = 0; i < count; i++) {
            struct stat status;
            /* The VERSION reply hands over the client end of the twin socket. */
            if (connection->twin_client < 0 && fstat(fds[i], &status) == 0 &&
                S_ISSOCK(status.st_mode))
                connection->twin_client = fds[i];
            else
                close(fds[i]);
        }
    }
    if (message->msg_flags & MSG_CTRUNC)
        fuzz_fail("descriptors truncated on the way to the client");
}

/* Reads and drops whatever the server sent to `fd`, closing received descriptors. */
static void discard_input(struct fuzz_connection *connection, int fd)
{
    static uint8_t sink[256 * 1024];

    for (;;) {
        union {
            struct cmsghdr header;
            char space[CMSG_SPACE(sizeof(int) * VU_OUTPUT_MAX_FDS_PER_MESSAGE)];
        } control;
        struct iovec iov = {.iov_base = sink, .iov_len = sizeof(sink)};
        struct msghdr message = {
            .msg_iov = &iov,
            .msg_iovlen = 1,
            .msg_control = control.space,
            .msg_controllen = sizeof(control.space),
        };
        ssize_t received = recvmsg(fd, &message, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);

        if (received < 0 && errno == EINTR)
            continue;
        if (received <= 0)
            return;
        close_received(connection, &message);
        /* Best effort: messages split across reads are not traced. */
        for (size_t at = 0; trace && (size_t)received - at >= VU_HEADER_SIZE;) {
            struct vu_header header;
            memcpy(&header, sink + at, sizeof(header));
            trace_header(fd == connection->client_socket ? "  <-" : "  <= twin", &header);
            if (header.message_size < VU_HEADER_SIZE)
                break;
            at += header.message_size;
        }
    }
}

/* As the transport's flush_outputs(): both queues out, then let queued DMA proceed. */
static void drain(struct fuzz_connection *connection)
{
    for (int round = 0; round < 64 && !connection->dead; round++) {
        bool had_output = false;

        for (int channel = VU_CHANNEL_MAIN; channel <= VU_CHANNEL_TWIN; channel++) {
            struct vu_output_queue *queue = vu_session_output(connection->session, channel);
            int socket_fd = channel == VU_CHANNEL_MAIN
                                ? connection->server_socket
                                : vu_session_twin_socket(connection->session);
            int peer =
                channel == VU_CHANNEL_MAIN ? connection->client_socket : connection->twin_client;

            for (int attempt = 0; vu_output_queue_pending(queue) > 0; attempt++) {
                had_output = true;
                if (socket_fd < 0 || attempt > 1024)
                    fuzz_fail("output queued with no way to send it");
                if (vu_output_queue_flush(queue, socket_fd) < 0) {
                    connection->dead = true; /* e.g. the twin's client end was closed */
                    return;
                }
                if (peer >= 0)
                    discard_input(connection, peer);
                else if (channel == VU_CHANNEL_TWIN)
                    peer = connection->twin_client; /* arrives with the VERSION reply */
            }
        }
        if (!had_output)
            return;
        vu_session_output_drained(connection->session);
    }
}

/*
 * How long a memfd shared with DMA_MAP is: FUZZ_MEMFD_SIZE, which a larger map must be
 * refused for (touching a mapping past the end of its file would raise SIGBUS), or, with
 * bit 8 of the command's Error field, as long as the map asks, to explore the DMA paths.
 */
static off_t memfd_length(const struct vu_header *header, const uint8_t *body, size_t length)
{
    struct vu_dma_map map;

    if (!(header->error & (1u << 8)) || header->command != VU_COMMAND_DMA_MAP ||
        length != sizeof(map))
        return FUZZ_MEMFD_SIZE;
    memcpy(&map, body, sizeof(map));
    if (map.size > (uint64_t)INT64_MAX - map.offset)
        return FUZZ_MEMFD_SIZE;
    return (off_t)(map.offset + map.size) > FUZZ_MEMFD_SIZE ? (off_t)(map.offset + map.size)
                                                            : FUZZ_MEMFD_SIZE;
}

static int make_descriptor(bool memfd, off_t length)
{
    int fd;

    if (!memfd)
        return eventfd(0, EFD_CLOEXEC);
    fd = memfd_create("fuzz-dma", MFD_CLOEXEC);
    /* Huge lengths may be refused; the map then fails or stays short, as it would. */
    if (fd >= 0 && ftruncate(fd, length) < 0 && ftruncate(fd, FUZZ_MEMFD_SIZE) < 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

/* One complete message, as process_input() in lib/endpoint.c hands it over. */
static int deliver(struct fuzz_connection *connection, const struct vu_header *header,
                   const uint8_t *body, size_t body_length)
{
    bool is_reply = (header->flags & VU_FLAGS_TYPE_MASK) == VU_FLAGS_TYPE_REPLY;
    bool twin = vu_session_twin_socket(connection->session) >= 0;
    enum vu_channel channel = VU_CHANNEL_MAIN;
    int fds[VU_SERVER_MAX_MSG_FDS];
    size_t fd_count = 0, wanted = 0;
    uint8_t *payload;
    int ret;

    if (!is_reply) {
        bool memfd =
            (header->command == VU_COMMAND_DMA_MAP) != !!(header->error & FUZZ_FD_SWAP_KIND);
        wanted = header->error & FUZZ_FD_COUNT_MASK;
        if (wanted > VU_SERVER_MAX_MSG_FDS) {
            /* The transport drops the excess and rejects the message. */
            vu_session_reject_message(connection->session, header, -EINVAL);
            return 0;
        }
        for (fd_count = 0; fd_count < wanted; fd_count++) {
            fds[fd_count] = make_descriptor(memfd, memfd_length(header, body, body_length));
            if (fds[fd_count] < 0)
                fuzz_fail("cannot create a descriptor");
        }
        if (twin && (header->error & FUZZ_TWIN_CHANNEL))
            channel = VU_CHANNEL_TWIN;
        if (header->command == VU_COMMAND_VERSION)
            fuzz_version_payload(body, body_length);
    } else if (twin) {
        channel = VU_CHANNEL_TWIN;
    }

    /* An exact-size copy, so a read past the payload is caught. */
    payload = malloc(body_length > 0 ? body_length : 1);
    if (payload == NULL)
        fuzz_fail("out of memory");
    memcpy(payload, body, body_length);
    if (is_reply)
        fuzz_dma_reply(payload, body_length);
    ret = vu_session_handle_message(connection->session, channel, header, payload, body_length, fds,
                                    fd_count);
    free(payload);
    return ret;
}

/*
 * Descriptors open before the first input, then a scan after each one for eventfds,
 * memfds and sockets (what an input creates) that are still open. Other kinds are let be:
 * libFuzzer itself opens pipes to its symbolizer along the way.
 */
static bool baseline_taken;
static bool baseline_open[FUZZ_FD_CHECK_RANGE];

static void check_descriptors(void)
{
    for (int fd = 0; fd < FUZZ_FD_CHECK_RANGE; fd++) {
        bool open_now = fcntl(fd, F_GETFD) >= 0;
        char link[64], target[256];
        ssize_t length;

        if (!baseline_taken) {
            baseline_open[fd] = open_now;
            continue;
        }
        if (!open_now || baseline_open[fd])
            continue;
        snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
        length = readlink(link, target, sizeof(target) - 1);
        target[length > 0 ? length : 0] = '\0';
        if (strstr(target, "eventfd") != NULL || strncmp(target, "/memfd:", 7) == 0 ||
            strncmp(target, "socket:", 7) == 0) {
            fprintf(stderr, "fuzz_message: descriptor %d (%s) leaked\n", fd, target);
            abort();
        }
    }
    baseline_taken = true;
}

static void discard_log(enum vfio_userd_log_level level, const char *device, const char *message)
{
    /* Formatting already ran (vsnprintf); that is what needs exercising. */
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    trace = getenv("FUZZ_MESSAGE_TRACE") != NULL;
    vu_log_set_level(VFIO_USERD_LOG_DEBUG);
    vu_log_set_sink(trace ? NULL : discard_log);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fuzz_connection connection = {
        .server_socket = -1, .client_socket = -1, .twin_client = -1};
    struct vfio_userd_error error;
    struct vu_device *device = NULL;
    int pair[2];
    size_t offset = 0;
    unsigned batched = 0;
    bool same_read;

    memset(&error, 0, sizeof(error));
    if (!baseline_taken)
        check_descriptors();
    if (vu_device_create(&fuzzdev_plugin, "fuzz0", NULL, &device, &error) < 0) {
        fprintf(stderr, "fuzz_message: %s\n", error.message);
        abort();
    }
    if (vu_session_new(device, &connection.session) < 0 ||
        socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, pair) < 0)
        fuzz_fail("cannot set up a session");
    connection.server_socket = pair[0];
    connection.client_socket = pair[1];

    while (!connection.dead && !connection.closing && size - offset >= VU_HEADER_SIZE) {
        struct vu_header header;
        size_t body_length;
        int ret = vu_wire_decode_header(data + offset, size - offset, &header);

        /* Below the header size there is no next message to find: the client is dropped. */
        trace_header(ret < 0 ? "-> (bad header)" : "->", &header);
        if (ret < 0 && header.message_size < VU_HEADER_SIZE)
            break;
        body_length = header.message_size - VU_HEADER_SIZE;
        if (body_length > VU_MAX_MESSAGE_SIZE - VU_HEADER_SIZE) {
            /* Too large: the transport discards the body (the rest of this input). */
            vu_session_reject_message(connection.session, &header, -E2BIG);
            drain(&connection);
            break;
        }
        if (body_length > size - offset - VU_HEADER_SIZE)
            break; /* the client hung up mid-message */
        /* The transport reads a message only when the largest reply would fit. */
        if (!vu_session_ready(connection.session)) {
            drain(&connection);
            batched = 0;
            if (!connection.dead && !vu_session_ready(connection.session))
                fuzz_fail("session not ready after its output was drained");
        }
        same_read = ret == 0 && (header.flags & VU_FLAGS_TYPE_MASK) == VU_FLAGS_TYPE_COMMAND &&
                    (header.error & FUZZ_SAME_READ);
        if (ret < 0) {
            vu_session_reject_message(connection.session, &header, ret);
        } else {
            ret = deliver(&connection, &header, data + offset + VU_HEADER_SIZE, body_length);
            if (ret < 0)
                connection.closing = true;
        }
        offset += header.message_size;
        if (!same_read || ++batched >= FUZZ_BATCH_MAX || connection.closing) {
            drain(&connection);
            batched = 0;
        }
    }
    /* At the end of the input the client is gone: what is still queued is dropped unsent. */

    vu_session_free(connection.session);
    vu_device_destroy(device);
    close(connection.server_socket);
    close(connection.client_socket);
    if (connection.twin_client >= 0)
        close(connection.twin_client);
    check_descriptors();
    return 0;
}
