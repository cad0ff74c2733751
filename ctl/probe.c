/*
 * `vfio-userctl probe`: connects to a device socket as a vfio-user client and reads, and
 * only reads, what a VMM reads before it starts a guest: VERSION, DEVICE_GET_INFO,
 * GET_REGION_INFO and GET_IRQ_INFO for every index, and configuration space through
 * REGION_READ. No DMA is mapped, no interrupt set, nothing written, and every region
 * descriptor the device passes is closed at once, so probing leaves the device as it was.
 *
 * The device is not trusted: counts are bounded, and what the core client cannot check
 * (the contents of configuration space) is checked by pci_decode.c.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client.h"
#include "ctl.h"
#include "output.h"
#include "pci_decode.h"
#include "probe.h"

/* Beyond vfio-pci's 9 regions and 5 interrupts a device may define its own; a device that
 * claims more than these is listed up to the limit. */
#define PROBE_MAX_REGIONS 64u
#define PROBE_MAX_IRQS    16u
#define PROBE_CONFIG_MAX  4096u

struct probe {
    struct vu_client *client;
    json_t *report;
    json_t *problems;
    bool out_of_memory;
    /* Set when the device stopped answering or broke the protocol: the probe ends. */
    int fatal;
    char fatal_message[512];
    struct pci_decode_region bar_regions[PCI_DECODE_BAR_REGIONS];
    bool config_known;
    uint64_t config_size;
};

const char *probe_region_name(unsigned index)
{
    static const char *const names[] = {"BAR0", "BAR1", "BAR2",   "BAR3", "BAR4",
                                        "BAR5", "ROM",  "CONFIG", "VGA"};

    return index < sizeof(names) / sizeof(names[0]) ? names[index] : NULL;
}

const char *probe_irq_name(unsigned index)
{
    static const char *const names[] = {"INTx", "MSI", "MSI-X", "ERR", "REQ"};

    return index < sizeof(names) / sizeof(names[0]) ? names[index] : NULL;
}

static void put(struct probe *probe, json_t *object, const char *key, json_t *value)
{
    if (json_object_set_new(object, key, value) < 0)
        probe->out_of_memory = true;
}

static void put_integer(struct probe *probe, json_t *object, const char *key, uint64_t value)
{
    put(probe, object, key, json_integer((json_int_t)value));
}

static void put_bool(struct probe *probe, json_t *object, const char *key, bool value)
{
    put(probe, object, key, json_boolean(value));
}

static void append(struct probe *probe, json_t *array, json_t *value)
{
    if (json_array_append_new(array, value) < 0)
        probe->out_of_memory = true;
}

/*
 * Records a failed request: a refusal by the device becomes a problem in the report; a
 * failure that leaves no usable connection ends the probe.
 */
static void request_failed(struct probe *probe, int error, const char *what)
{
    char text[512];

    switch (-error) {
    case ETIMEDOUT:
    case ENOTCONN:
    case ECONNRESET:
    case EPIPE:
    case EPROTO:
    case ENOMEM:
        probe->fatal = error;
        snprintf(probe->fatal_message, sizeof(probe->fatal_message), "%s: %s", what,
                 error == -EPROTO ? "the device's reply breaks the protocol" : strerror(-error));
        return;
    default:
        snprintf(text, sizeof(text), "%s: the device answered %s", what, strerror(-error));
        append(probe, probe->problems, json_string(text));
        return;
    }
}

static void collect_session(struct probe *probe, const char *socket_path)
{
    const struct vu_capabilities *session = vu_client_session(probe->client);
    json_t *version = json_object(), *capabilities = json_object();

    put(probe, probe->report, "socket", json_string(socket_path));
    put(probe, probe->report, "version", version);
    put_integer(probe, version, "major", vu_client_server_major(probe->client));
    put_integer(probe, version, "minor", vu_client_server_minor(probe->client));
    put(probe, probe->report, "capabilities", capabilities);
    put_integer(probe, capabilities, "max_msg_fds", session->max_msg_fds);
    put_integer(probe, capabilities, "max_data_xfer_size", session->max_data_xfer_size);
    put_integer(probe, capabilities, "max_dma_maps", session->max_dma_maps);
    put_integer(probe, capabilities, "pgsizes", session->pgsizes);
    put_bool(probe, capabilities, "write_multiple", session->write_multiple);
    put_bool(probe, capabilities, "twin_socket", session->twin_socket);
}

static json_t *sparse_areas(struct probe *probe, const struct vfio_region_info *info,
                            unsigned index)
{
    struct vfio_region_sparse_mmap_area *areas = NULL;
    uint32_t count = 0;
    json_t *list;
    char text[128];
    int ret = vu_client_region_sparse_areas(info, &areas, &count);

    if (ret == -ENOENT)
        return json_null();
    if (ret < 0) {
        snprintf(text, sizeof(text), "region %u: unusable capability chain (%s)", index,
                 strerror(-ret));
        append(probe, probe->problems, json_string(text));
        return json_null();
    }
    list = json_array();
    for (uint32_t i = 0; list != NULL && i < count; i++) {
        json_t *area = json_object();
        append(probe, list, area);
        put_integer(probe, area, "offset", areas[i].offset);
        put_integer(probe, area, "size", areas[i].size);
    }
    free(areas);
    return list;
}

static void collect_region(struct probe *probe, json_t *regions, unsigned index)
{
    struct vfio_region_info *info = NULL;
    const char *name = probe_region_name(index);
    json_t *region;
    char what[64];
    int fd = -1;
    int ret;

    ret = vu_client_region_info(probe->client, index, &info, &fd);
    /* A descriptor is for mmap, which probing never does. */
    if (fd >= 0)
        close(fd);
    if (ret < 0) {
        snprintf(what, sizeof(what), "GET_REGION_INFO for region %u", index);
        request_failed(probe, ret, what);
        return;
    }
    region = json_object();
    append(probe, regions, region);
    put_integer(probe, region, "index", index);
    put(probe, region, "name", name != NULL ? json_string(name) : json_null());
    put_integer(probe, region, "size", info->size);
    put_integer(probe, region, "offset", info->offset);
    put_integer(probe, region, "flags", info->flags);
    put_bool(probe, region, "read", info->flags & VFIO_REGION_INFO_FLAG_READ);
    put_bool(probe, region, "write", info->flags & VFIO_REGION_INFO_FLAG_WRITE);
    put_bool(probe, region, "mmap", info->flags & VFIO_REGION_INFO_FLAG_MMAP);
    put_bool(probe, region, "fd", fd >= 0);
    put(probe, region, "sparse_areas", sparse_areas(probe, info, index));
    if (index < PCI_DECODE_BAR_REGIONS)
        probe->bar_regions[index] = (struct pci_decode_region){.known = true, .size = info->size};
    if (index == VFIO_PCI_CONFIG_REGION_INDEX) {
        probe->config_known = true;
        probe->config_size = info->size;
    }
    free(info);
}

static void collect_irq(struct probe *probe, json_t *irqs, unsigned index)
{
    struct vfio_irq_info info;
    const char *name = probe_irq_name(index);
    json_t *irq;
    char what[64];
    int ret;

    ret = vu_client_irq_info(probe->client, index, &info);
    if (ret < 0) {
        snprintf(what, sizeof(what), "GET_IRQ_INFO for index %u", index);
        request_failed(probe, ret, what);
        return;
    }
    irq = json_object();
    append(probe, irqs, irq);
    put_integer(probe, irq, "index", index);
    put(probe, irq, "name", name != NULL ? json_string(name) : json_null());
    put_integer(probe, irq, "count", info.count);
    put_integer(probe, irq, "flags", info.flags);
    put_bool(probe, irq, "eventfd", info.flags & VFIO_IRQ_INFO_EVENTFD);
    put_bool(probe, irq, "maskable", info.flags & VFIO_IRQ_INFO_MASKABLE);
    put_bool(probe, irq, "automasked", info.flags & VFIO_IRQ_INFO_AUTOMASKED);
    put_bool(probe, irq, "noresize", info.flags & VFIO_IRQ_INFO_NORESIZE);
}

/* Reads configuration space in pieces the session allows; returns the bytes read. */
static size_t read_config(struct probe *probe, uint8_t *config)
{
    const struct vu_capabilities *session = vu_client_session(probe->client);
    size_t wanted = probe->config_size < PROBE_CONFIG_MAX ? probe->config_size : PROBE_CONFIG_MAX;
    size_t chunk = session->max_data_xfer_size < PROBE_CONFIG_MAX ? session->max_data_xfer_size
                                                                  : PROBE_CONFIG_MAX;
    size_t done = 0;

    if (chunk == 0)
        return 0;
    while (done < wanted) {
        size_t count = wanted - done < chunk ? wanted - done : chunk;
        char what[96];
        int ret = vu_client_region_read(probe->client, VFIO_PCI_CONFIG_REGION_INDEX, done,
                                        config + done, (uint32_t)count);
        if (ret < 0) {
            snprintf(what, sizeof(what), "REGION_READ of configuration space at 0x%zx", done);
            request_failed(probe, ret, what);
            break;
        }
        done += count;
    }
    return done;
}

static void collect_pci(struct probe *probe)
{
    uint8_t config[PROBE_CONFIG_MAX];
    size_t length;
    json_t *pci;

    if (!probe->config_known || probe->config_size == 0) {
        append(probe, probe->problems,
               json_string("a PCI device without a configuration space region"));
        put(probe, probe->report, "pci", json_null());
        return;
    }
    length = read_config(probe, config);
    if (probe->fatal != 0 || length == 0) {
        put(probe, probe->report, "pci", json_null());
        return;
    }
    /* Decode whole spaces only: a partial read keeps the standard part. */
    if (length < PROBE_CONFIG_MAX && length > 256)
        length = 256;
    pci = pci_decode(config, length, probe->bar_regions, probe->problems);
    if (pci == NULL)
        probe->out_of_memory = true;
    put(probe, probe->report, "pci", pci);
}

static void collect_device(struct probe *probe)
{
    struct vu_device_info info;
    json_t *device, *regions, *irqs;
    unsigned region_count, irq_count;
    char text[128];
    int ret;

    ret = vu_client_device_info(probe->client, &info);
    if (ret < 0) {
        /* Without the counts there is nothing else to ask. */
        probe->fatal = ret;
        snprintf(probe->fatal_message, sizeof(probe->fatal_message), "DEVICE_GET_INFO: %s",
                 ret == -EPROTO ? "the device's reply breaks the protocol" : strerror(-ret));
        return;
    }
    device = json_object();
    put(probe, probe->report, "device", device);
    put_integer(probe, device, "flags", info.flags);
    put_bool(probe, device, "pci", info.flags & VFIO_DEVICE_FLAGS_PCI);
    put_bool(probe, device, "reset", info.flags & VFIO_DEVICE_FLAGS_RESET);
    put_integer(probe, device, "regions", info.num_regions);
    put_integer(probe, device, "irqs", info.num_irqs);
    region_count = info.num_regions < PROBE_MAX_REGIONS ? info.num_regions : PROBE_MAX_REGIONS;
    irq_count = info.num_irqs < PROBE_MAX_IRQS ? info.num_irqs : PROBE_MAX_IRQS;
    if (region_count < info.num_regions || irq_count < info.num_irqs) {
        snprintf(text, sizeof(text),
                 "the device claims %u regions and %u interrupt indexes; "
                 "only the first %u and %u are shown",
                 info.num_regions, info.num_irqs, region_count, irq_count);
        append(probe, probe->problems, json_string(text));
    }
    regions = json_array();
    put(probe, probe->report, "regions", regions);
    for (unsigned i = 0; i < region_count && probe->fatal == 0; i++)
        collect_region(probe, regions, i);
    irqs = json_array();
    put(probe, probe->report, "irqs", irqs);
    for (unsigned i = 0; i < irq_count && probe->fatal == 0; i++)
        collect_irq(probe, irqs, i);
    if (probe->fatal != 0)
        return;
    if (info.flags & VFIO_DEVICE_FLAGS_PCI)
        collect_pci(probe);
    else
        put(probe, probe->report, "pci", json_null());
}

/* Connects and negotiates; returns an exit code after saying what went wrong. */
static int connect_device(const char *path, int timeout_ms, struct vu_client **client)
{
    struct vu_client_options options;
    char escaped[512];
    int ret;

    output_escape(escaped, sizeof(escaped), path);
    vu_client_options_default(&options);
    options.timeout_ms = timeout_ms;
    ret = vu_client_connect_raw(path, client);
    if (ret < 0) {
        fprintf(stderr, CTL_PROGRAM ": cannot connect to %s: %s\n", escaped, strerror(-ret));
        return CTL_EXIT_UNREACHABLE;
    }
    ret = vu_client_negotiate(*client, &options);
    if (ret == 0)
        return CTL_EXIT_OK;
    vu_client_close(*client);
    *client = NULL;
    switch (-ret) {
    case ECONNRESET:
    case EPIPE:
    case ENOTCONN:
        fprintf(stderr,
                CTL_PROGRAM ": %s closed the connection before VERSION was answered; a device "
                            "serves one client at a time: is a VMM connected?\n",
                escaped);
        return CTL_EXIT_UNREACHABLE;
    case ETIMEDOUT:
        fprintf(stderr, CTL_PROGRAM ": no answer to VERSION from %s within %d ms\n", escaped,
                timeout_ms);
        return CTL_EXIT_UNREACHABLE;
    default:
        fprintf(stderr, CTL_PROGRAM ": %s: version negotiation failed: %s\n", escaped,
                ret == -EPROTO ? "the device's reply breaks the protocol" : strerror(-ret));
        return CTL_EXIT_REFUSED;
    }
}

int command_probe(struct ctl_options *options, int argc, char **argv)
{
    struct probe probe = {0};
    int first, ret;

    ret = ctl_parse_command(options, argc, argv, NULL, NULL, NULL, NULL, &first);
    if (ret != 0)
        return ret > 0 ? CTL_EXIT_OK : CTL_EXIT_USAGE;
    if (first >= argc)
        return ctl_usage_error("probe", "missing the DEVICE_SOCKET to probe");
    if (first + 1 < argc)
        return ctl_usage_error("probe", "unexpected argument '%s'", argv[first + 1]);
    ret = connect_device(argv[first], options->timeout_ms, &probe.client);
    if (ret != CTL_EXIT_OK)
        return ret;
    probe.report = json_object();
    probe.problems = json_array();
    if (probe.report == NULL || probe.problems == NULL) {
        probe.out_of_memory = true;
        goto out;
    }
    collect_session(&probe, argv[first]);
    collect_device(&probe);
    put(&probe, probe.report, "problems", json_incref(probe.problems));
out:
    vu_client_close(probe.client);
    if (probe.fatal != 0) {
        char escaped[1024];
        fprintf(stderr, CTL_PROGRAM ": %s\n",
                output_escape(escaped, sizeof(escaped), probe.fatal_message));
        ret = CTL_EXIT_REFUSED;
    } else if (probe.out_of_memory) {
        fprintf(stderr, CTL_PROGRAM ": out of memory\n");
        ret = CTL_EXIT_REFUSED;
    } else if (options->json) {
        ret = output_json(stdout, probe.report) < 0 ? CTL_EXIT_REFUSED : CTL_EXIT_OK;
    } else {
        ret = probe_print(stdout, probe.report) < 0 ? CTL_EXIT_REFUSED : CTL_EXIT_OK;
    }
    json_decref(probe.problems);
    json_decref(probe.report);
    return ret;
}
