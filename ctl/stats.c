/*
 * vfio-userctl's operator commands over the daemon's counters and the journal:
 *   stats [NAME]  per-device message, error and byte counters with rates per second, as a
 *                 table, as JSON (--json), in the Prometheus text format (--prometheus, for
 *                 node-exporter's textfile collector), or refreshed in place (--watch);
 *   logs NAME     journalctl for one device's entries (VFIO_USERD_DEVICE=NAME).
 * The counters come from device_list; a rate is the difference of two samples taken
 * --interval seconds apart, divided by the time between them.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "config.h"
#include "ctl.h"
#include "output.h"

/* The counters device_list reports for each device, in the order they are printed. */
static const char *const counters[] = {"messages", "errors", "bytes_received", "bytes_sent",
                                       "connections"};
#define COUNTER_COUNT (sizeof(counters) / sizeof(counters[0]))

struct stats_request {
    bool prometheus;
    bool watch;
    double interval;
};

struct sample {
    json_t *devices; /* device_list's array, filtered to NAME when one is given */
    double time;     /* CLOCK_MONOTONIC, seconds */
};

enum { STATS_OPTION_PROMETHEUS = 0x200, STATS_OPTION_WATCH, STATS_OPTION_INTERVAL };

static const struct option stats_options[] = {
    {"prometheus", no_argument, NULL, STATS_OPTION_PROMETHEUS},
    {"watch", no_argument, NULL, STATS_OPTION_WATCH},
    {"interval", required_argument, NULL, STATS_OPTION_INTERVAL},
    {NULL, 0, NULL, 0},
};

static int stats_option(void *context, int option, const char *argument)
{
    struct stats_request *request = context;
    char *end;

    switch (option) {
    case STATS_OPTION_PROMETHEUS:
        request->prometheus = true;
        return 0;
    case STATS_OPTION_WATCH:
        request->watch = true;
        return 0;
    case STATS_OPTION_INTERVAL:
        errno = 0;
        request->interval = strtod(argument, &end);
        if (errno != 0 || end == argument || *end != '\0' || !(request->interval >= 0.1) ||
            request->interval > 3600) {
            ctl_usage_error("stats", "--interval: expected seconds from 0.1 to 3600, found '%s'",
                            argument);
            return -EINVAL;
        }
        return 0;
    }
    return -EINVAL;
}

static double monotonic_seconds(void)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)now.tv_sec + (double)now.tv_nsec / 1e9;
}

static const char *device_name(const json_t *device)
{
    const char *name = json_string_value(json_object_get(device, "name"));

    return name != NULL ? name : "?";
}

/* Takes one sample; with `name`, only that device, and an error when the daemon has none. */
static int take_sample(struct ctl_options *options, const char *name, struct sample *sample)
{
    json_t *devices = NULL, *kept;
    size_t index;
    json_t *device;
    int ret;

    sample->devices = NULL;
    ret = ctl_call_daemon(options, "device_list", NULL, &devices);
    if (ret != CTL_EXIT_OK)
        return ret;
    sample->time = monotonic_seconds();
    if (!json_is_array(devices)) {
        json_decref(devices);
        fprintf(stderr,
                CTL_PROGRAM ": the daemon's answer to device_list has an unexpected shape\n");
        return CTL_EXIT_UNREACHABLE;
    }
    if (name == NULL) {
        sample->devices = devices;
        return CTL_EXIT_OK;
    }
    kept = json_array();
    json_array_foreach (devices, index, device)
        if (strcmp(device_name(device), name) == 0)
            json_array_append(kept, device);
    json_decref(devices);
    if (json_array_size(kept) == 0) {
        json_decref(kept);
        fprintf(stderr, CTL_PROGRAM ": stats: no device named '%s'\n", name);
        return CTL_EXIT_REFUSED;
    }
    sample->devices = kept;
    return CTL_EXIT_OK;
}

/* The counter's value, or -1 when the daemon could not read it (a stuck device: null). */
static double counter_value(const json_t *device, const char *counter)
{
    json_t *value = json_object_get(device, counter);

    return json_is_integer(value) ? (double)json_integer_value(value) : -1;
}

/* The same device in an earlier sample, if it was there. */
static const json_t *find_device(const struct sample *sample, const char *name)
{
    size_t index;
    json_t *device;

    if (sample == NULL)
        return NULL;
    json_array_foreach (sample->devices, index, device)
        if (strcmp(device_name(device), name) == 0)
            return device;
    return NULL;
}

/* Per second between two samples, or NAN when either is unknown or the counter went back
 * (the device was replaced in between). */
static double counter_rate(const struct sample *before, const struct sample *after,
                           const json_t *device, const char *counter)
{
    const json_t *earlier = find_device(before, device_name(device));
    double then, now;

    if (earlier == NULL || after->time <= before->time)
        return NAN;
    then = counter_value(earlier, counter);
    now = counter_value(device, counter);
    if (then < 0 || now < 0 || now < then)
        return NAN;
    return (now - then) / (after->time - before->time);
}

/* Bytes as a short human text: 512, 1.5K, 20.0M. */
static const char *human(char *buffer, size_t size, double value)
{
    static const char units[] = "KMGTP";
    int unit = -1;

    if (value < 0 || isnan(value))
        return "-";
    while (value >= 1024 && unit < 4) {
        value /= 1024;
        unit++;
    }
    if (unit < 0)
        snprintf(buffer, size, "%.0f", value);
    else
        snprintf(buffer, size, "%.1f%c", value, units[unit]);
    return buffer;
}

static const char *number(char *buffer, size_t size, double value)
{
    if (value < 0 || isnan(value))
        return "-";
    snprintf(buffer, size, "%.0f", value);
    return buffer;
}

static void print_table(const struct sample *before, const struct sample *after)
{
    char text[8][32];
    size_t index;
    json_t *device;

    printf("%-20s %-10s %12s %9s %8s %9s %9s %9s %9s %5s\n", "NAME", "STATE", "MESSAGES", "MSG/S",
           "ERRORS", "RX", "RX/S", "TX", "TX/S", "CONNS");
    json_array_foreach (after->devices, index, device) {
        const char *state = json_string_value(json_object_get(device, "state"));

        printf(
            "%-20s %-10s %12s %9s %8s %9s %9s %9s %9s %5s\n", device_name(device),
            state != NULL ? state : "-",
            number(text[0], sizeof(text[0]), counter_value(device, "messages")),
            number(text[1], sizeof(text[1]), counter_rate(before, after, device, "messages")),
            number(text[2], sizeof(text[2]), counter_value(device, "errors")),
            human(text[3], sizeof(text[3]), counter_value(device, "bytes_received")),
            human(text[4], sizeof(text[4]), counter_rate(before, after, device, "bytes_received")),
            human(text[5], sizeof(text[5]), counter_value(device, "bytes_sent")),
            human(text[6], sizeof(text[6]), counter_rate(before, after, device, "bytes_sent")),
            number(text[7], sizeof(text[7]), counter_value(device, "connections")));
    }
    if (json_array_size(after->devices) == 0)
        printf("(no devices)\n");
}

static int print_stats_json(const struct sample *before, const struct sample *after,
                            double interval)
{
    json_t *devices = json_array(), *root;
    size_t index;
    json_t *device;
    int ret;

    json_array_foreach (after->devices, index, device) {
        json_t *entry = json_pack("{s:s, s:O, s:O}", "name", device_name(device), "state",
                                  json_object_get(device, "state"), "dma_maps",
                                  json_object_get(device, "dma_maps"));
        json_t *rates = json_object();

        for (size_t i = 0; i < COUNTER_COUNT; i++) {
            double rate = counter_rate(before, after, device, counters[i]);
            json_object_set(entry, counters[i], json_object_get(device, counters[i]));
            json_object_set_new(rates, counters[i], isnan(rate) ? json_null() : json_real(rate));
        }
        json_object_set_new(entry, "per_second", rates);
        json_array_append_new(devices, entry);
    }
    root = json_pack("{s:f, s:o}", "interval", interval, "devices", devices);
    ret = output_json(stdout, root) < 0 ? CTL_EXIT_REFUSED : CTL_EXIT_OK;
    json_decref(root);
    return ret;
}

/*
 * The Prometheus text exposition format: counters end in _total, each metric has its HELP
 * and TYPE lines once, and every sample carries the device and plugin as labels. Device
 * and plugin names are [A-Za-z0-9_.-], so the label values need no escaping.
 */
static void print_prometheus(const struct sample *sample)
{
    static const struct {
        const char *key, *metric, *type, *help;
    } metrics[] = {
        {"messages", "vfio_userd_device_messages_total", "counter",
         "vfio-user messages received by the device"},
        {"errors", "vfio_userd_device_errors_total", "counter",
         "vfio-user requests of the device answered with an error"},
        {"bytes_received", "vfio_userd_device_received_bytes_total", "counter",
         "Bytes received on the device's socket"},
        {"bytes_sent", "vfio_userd_device_sent_bytes_total", "counter",
         "Bytes sent on the device's socket"},
        {"connections", "vfio_userd_device_connections_total", "counter",
         "Clients accepted on the device's socket"},
        {"dma_maps", "vfio_userd_device_dma_maps", "gauge",
         "DMA regions the connected client has mapped"},
    };
    size_t index;
    json_t *device;

    for (size_t m = 0; m < sizeof(metrics) / sizeof(metrics[0]); m++) {
        printf("# HELP %s %s.\n# TYPE %s %s\n", metrics[m].metric, metrics[m].help,
               metrics[m].metric, metrics[m].type);
        json_array_foreach (sample->devices, index, device) {
            double value = counter_value(device, metrics[m].key);
            const char *plugin = json_string_value(json_object_get(device, "plugin"));

            if (value >= 0)
                printf("%s{device=\"%s\",plugin=\"%s\"} %.0f\n", metrics[m].metric,
                       device_name(device), plugin != NULL ? plugin : "", value);
        }
    }
    printf("# HELP vfio_userd_device_connected Whether a client is connected to the device.\n"
           "# TYPE vfio_userd_device_connected gauge\n");
    json_array_foreach (sample->devices, index, device) {
        const char *state = json_string_value(json_object_get(device, "state"));
        const char *plugin = json_string_value(json_object_get(device, "plugin"));

        printf("vfio_userd_device_connected{device=\"%s\",plugin=\"%s\"} %d\n", device_name(device),
               plugin != NULL ? plugin : "", state != NULL && strcmp(state, "connected") == 0);
    }
}

static void pause_for(double seconds)
{
    struct timespec wait = {.tv_sec = (time_t)seconds,
                            .tv_nsec = (long)((seconds - (double)(time_t)seconds) * 1e9)};

    while (nanosleep(&wait, &wait) < 0 && errno == EINTR)
        ;
}

int command_stats(struct ctl_options *options, int argc, char **argv)
{
    struct stats_request request = {.interval = 1.0};
    struct sample before = {0}, after = {0};
    const char *name = NULL;
    int first, ret;

    ret =
        ctl_parse_command(options, argc, argv, NULL, stats_options, stats_option, &request, &first);
    if (ret != 0)
        return ret > 0 ? CTL_EXIT_OK : CTL_EXIT_USAGE;
    if (first < argc)
        name = argv[first++];
    if (first < argc)
        return ctl_usage_error("stats", "unexpected argument '%s'", argv[first]);
    if (name != NULL && !config_name_valid(name))
        return ctl_usage_error("stats", "'%s' is not a device name", name);
    if (request.prometheus && options->json)
        return ctl_usage_error("stats", "--prometheus and --json exclude each other");
    if (request.watch && (request.prometheus || options->json))
        return ctl_usage_error("stats", "--watch refreshes the table; it takes no --json or "
                                        "--prometheus");

    ret = take_sample(options, name, &before);
    if (ret != CTL_EXIT_OK)
        return ret;
    /* The Prometheus format carries counters only: the scraper computes rates. */
    if (request.prometheus) {
        print_prometheus(&before);
        goto out;
    }
    for (;;) {
        pause_for(request.interval);
        ret = take_sample(options, name, &after);
        if (ret != CTL_EXIT_OK)
            goto out;
        if (!request.watch) {
            if (options->json)
                ret = print_stats_json(&before, &after, after.time - before.time);
            else
                print_table(&before, &after);
            goto out;
        }
        /* In place: home the cursor and clear the screen, then the table. */
        printf("\033[H\033[2J" CTL_PROGRAM " stats, every %.1f s (Ctrl-C stops)\n\n",
               request.interval);
        print_table(&before, &after);
        fflush(stdout);
        json_decref(before.devices);
        before = after;
        after.devices = NULL;
    }
out:
    json_decref(before.devices);
    json_decref(after.devices);
    return ret;
}

int command_logs(struct ctl_options *options, int argc, char **argv)
{
    char match[128];
    char **args;
    int count = 0;

    (void)options;
    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        printf("Usage: " CTL_PROGRAM " logs NAME [JOURNALCTL_OPTION]...\n\n"
               "Shows the journal entries of one device: journalctl VFIO_USERD_DEVICE=NAME,\n"
               "with any further options passed to journalctl (-f, -n 50, --since today, -b).\n"
               "See " CTL_PROGRAM "(8).\n");
        return CTL_EXIT_OK;
    }
    if (argc < 2)
        return ctl_usage_error("logs", "missing the device's NAME");
    if (!config_name_valid(argv[1]))
        return ctl_usage_error("logs", "'%s' is not a device name", argv[1]);
    snprintf(match, sizeof(match), "VFIO_USERD_DEVICE=%s", argv[1]);
    args = calloc((size_t)argc + 2, sizeof(*args));
    if (args == NULL)
        return CTL_EXIT_REFUSED;
    args[count++] = "journalctl";
    for (int i = 2; i < argc; i++)
        args[count++] = argv[i];
    args[count++] = match;
    args[count] = NULL;
    fflush(stdout);
    execvp("journalctl", args);
    fprintf(stderr, CTL_PROGRAM ": logs: cannot run journalctl: %s\n", strerror(errno));
    free(args);
    return CTL_EXIT_UNREACHABLE;
}
