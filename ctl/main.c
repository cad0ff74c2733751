/*
 * vfio-userctl: the command-line client of vfio-userd's admin socket. This file holds the
 * command table, the global options (valid before and after the command's name) and the
 * help; the commands themselves live in commands.c and probe.c.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "ctl.h"

#ifndef VFIO_USERD_VERSION
#define VFIO_USERD_VERSION "unknown"
#endif

#define CTL_DEFAULT_ADMIN_SOCKET CONFIG_RUNTIME_DIR "/admin.sock"

struct ctl_command {
    const char *name;
    ctl_command_fn run;
    const char *brief;    /* the command and its operands, for the list of commands */
    const char *synopsis; /* after "vfio-userctl [OPTIONS] "; lines separated by '\n' */
    const char *summary;
    const char *help; /* the command's own options and what it prints */
};

static const struct ctl_command commands[] = {
    {"list", command_list, "list", "list", "List the devices and their state",
     "Prints one line per device: name, plugin, state (listening, connected, stuck,\n"
     "restarting, failed or error), isolation (process or thread), the pid of the process it\n"
     "runs in, how often its device host was restarted, the connected client's pid, whether\n"
     "a drop-in file keeps it, and its socket.\n"},
    {"info", command_info, "info NAME", "info NAME", "Show one device in detail",
     "Prints the device's state, counters and configuration.\n"},
    {"add", command_add, "add NAME --plugin P",
     "add NAME --plugin PLUGIN [--param KEY=VALUE]... [--socket-path PATH]\n"
     "             [--socket-user USER] [--socket-group GROUP] [--socket-mode MODE]\n"
     "             [--isolation process|thread] [--restart on-failure|always|no] [--user USER]\n"
     "             [--persist]\n"
     "add -f FILE.yaml [--persist]",
     "Create a device",
     "  -f, --file FILE.yaml    Read the device from a drop-in file, checked here first; its\n"
     "                          name defaults to the file's stem\n"
     "      --plugin PLUGIN     The plugin that implements the device\n"
     "      --param KEY=VALUE   A plugin parameter, sent as a string (repeatable)\n"
     "      --socket-path PATH  The device's socket (default RUNTIME_DIR/devices/NAME.sock)\n"
     "      --socket-user USER, --socket-group GROUP, --socket-mode MODE\n"
     "                          Owner and mode of the device's socket\n"
     "      --isolation MODE    process: in a sandboxed device host of its own; thread: on a\n"
     "                          worker of the daemon (default: the daemon's default_isolation)\n"
     "      --restart POLICY    When its device host is started again after it ended:\n"
     "                          on-failure (default), always or no\n"
     "      --user USER         The account its device host runs as\n"
     "      --persist           Also write the device to the first devices directory, so\n"
     "                          that it comes back when the daemon restarts\n"},
    {"remove", command_remove, "remove NAME", "remove NAME [--persist]", "Remove a device",
     "      --persist           Also delete the device's drop-in file (or mask it when it\n"
     "                          lives in a later devices directory); required for a device\n"
     "                          that comes from a file\n"},
    {"reset", command_reset, "reset NAME", "reset NAME",
     "Reset a device, as a VMM's DEVICE_RESET does",
     "A device whose device host failed (or waits to restart) is started again at once, its\n"
     "start limit cleared.\n"},
    {"plugins", command_plugins, "plugins", "plugins", "List the loaded plugins", ""},
    {"status", command_status, "status", "status", "Show the daemon's version, uptime and counts",
     ""},
    {"reload", command_reload, "reload", "reload", "Re-read the device drop-in directories",
     "Devices whose files appeared, changed or went away are added, replaced or removed.\n"},
    {"stats", command_stats, "stats [NAME]",
     "stats [NAME] [--interval SECONDS] [--watch]\n"
     "stats [NAME] --json\n"
     "stats [NAME] --prometheus",
     "Show the devices' message counters and rates",
     "Prints, per device, the messages, errors, bytes received and sent (with rates per\n"
     "second over the interval) and the clients accepted.\n"
     "      --interval SECONDS  Time between the two samples a rate needs (default 1)\n"
     "      --watch             Refresh the table in place every interval until Ctrl-C\n"
     "      --prometheus        Print the counters in the Prometheus text format, for\n"
     "                          node-exporter's textfile collector (no rates, no wait)\n"},
    {"logs", command_logs, "logs NAME", "logs NAME [JOURNALCTL_OPTION]...",
     "Show one device's journal entries",
     "Runs journalctl VFIO_USERD_DEVICE=NAME with the options given (-f, -n 50, ...).\n"},
    {"probe", command_probe, "probe DEVICE_SOCKET", "probe DEVICE_SOCKET",
     "Show what a VMM sees on a device socket",
     "Connects as a vfio-user client, as QEMU would, and prints the negotiated version and\n"
     "capabilities, the regions, the interrupts and the decoded PCI configuration space.\n"
     "Only reads: the device's state is not changed. Does not need the daemon.\n"},
};

enum {
    CTL_OPTION_JSON = 0x100,
    CTL_OPTION_TIMEOUT,
    CTL_OPTION_VERSION,
};

static const struct option global_options[] = {
    {"admin-socket", required_argument, NULL, 's'},
    {"json", no_argument, NULL, CTL_OPTION_JSON},
    {"timeout", required_argument, NULL, CTL_OPTION_TIMEOUT},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};
#define GLOBAL_SHORT_OPTIONS "s:h"
#define GLOBAL_OPTION_COUNT  (sizeof(global_options) / sizeof(global_options[0]) - 1)

static const char global_help[] =
    "  -s, --admin-socket PATH  The daemon's admin socket (default: the one vfio-userd.yaml\n"
    "                           names, else " CTL_DEFAULT_ADMIN_SOCKET ")\n"
    "      --json               Print JSON for scripts (errors too, on stdout)\n"
    "      --timeout SECONDS    Wait at most this long for each answer (default 30)\n"
    "  -h, --help               Show help\n";

static const struct ctl_command *find_command(const char *name)
{
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    return NULL;
}

static void print_synopsis(FILE *stream, const struct ctl_command *command)
{
    const char *line = command->synopsis;

    fprintf(stream, "Usage: " CTL_PROGRAM " [OPTIONS] ");
    for (;;) {
        const char *end = strchr(line, '\n');
        int length = end != NULL ? (int)(end - line) : (int)strlen(line);
        fprintf(stream, "%.*s\n", length, line);
        if (end == NULL)
            break;
        line = end + 1;
        /* Continuation lines start with spaces; alternative forms repeat the program. */
        if (line[0] != ' ')
            fprintf(stream, "       " CTL_PROGRAM " [OPTIONS] ");
    }
}

static void print_command_help(const struct ctl_command *command)
{
    print_synopsis(stdout, command);
    printf("\n%s.\n", command->summary);
    if (command->help[0] != '\0')
        printf("\n%s", command->help);
    printf("\nGlobal options:\n%s\nSee " CTL_PROGRAM "(8).\n", global_help);
}

static void print_help(void)
{
    printf("Usage: " CTL_PROGRAM " [OPTIONS] COMMAND [ARGUMENTS]\n\n"
           "Manages the devices of a running vfio-userd through its admin socket.\n\n"
           "Commands:\n");
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        printf("  %-22s %s\n", commands[i].brief, commands[i].summary);
    printf("  %-22s %s\n", "help [COMMAND]", "Show this help, or a command's");
    printf("\nOptions:\n%s      --version            Show the version\n\n"
           "Each command takes --help. Exit status: 0 done, 1 refused by the daemon (or the\n"
           "device), 2 usage error, 3 cannot reach the daemon (or the device).\n"
           "See " CTL_PROGRAM "(8).\n",
           global_help);
}

int ctl_usage_error(const char *command, const char *format, ...)
{
    va_list arguments;

    fprintf(stderr, CTL_PROGRAM ": ");
    if (command != NULL)
        fprintf(stderr, "%s: ", command);
    va_start(arguments, format);
    vfprintf(stderr, format, arguments);
    va_end(arguments);
    if (command != NULL)
        fprintf(stderr, "\nTry '" CTL_PROGRAM " %s --help'.\n", command);
    else
        fprintf(stderr, "\nTry '" CTL_PROGRAM " --help'.\n");
    return CTL_EXIT_USAGE;
}

/* SECONDS, fractions allowed, to milliseconds. */
static int parse_timeout(const char *text, int *timeout_ms)
{
    char *end;
    double seconds;

    errno = 0;
    seconds = strtod(text, &end);
    if (errno != 0 || end == text || *end != '\0' || !isfinite(seconds) || seconds <= 0 ||
        seconds * 1000 > CTL_MAX_TIMEOUT_MS)
        return -EINVAL;
    /* Rounded up, so that a tiny timeout still waits a millisecond. */
    *timeout_ms = (int)(seconds * 1000);
    if (*timeout_ms < seconds * 1000)
        (*timeout_ms)++;
    return 0;
}

static bool is_global_option(int option)
{
    return option == 's' || option == CTL_OPTION_JSON || option == CTL_OPTION_TIMEOUT;
}

/* Applies one of the global options: 0, or -EINVAL after reporting a usage error. */
static int apply_global_option(struct ctl_options *options, const char *command, int option,
                               const char *argument)
{
    switch (option) {
    case 's':
        if (argument[0] == '\0') {
            ctl_usage_error(command, "--admin-socket needs a path");
            return -EINVAL;
        }
        options->admin_socket = argument;
        return 0;
    case CTL_OPTION_JSON:
        options->json = true;
        return 0;
    default:
        if (parse_timeout(argument, &options->timeout_ms) < 0) {
            ctl_usage_error(command,
                            "--timeout wants a number of seconds above 0, up to a day, "
                            "not '%s'",
                            argument);
            return -EINVAL;
        }
        return 0;
    }
}

/* Reports getopt's failure as one sentence; returns -EINVAL. */
static int report_getopt_error(const char *command, int result, char **argv)
{
    const char *word = argv[optind - 1];

    if (result == ':')
        ctl_usage_error(command, "option '%s' needs a value", word);
    else if (optopt != 0)
        ctl_usage_error(command, "unknown option '-%c'", optopt);
    else
        ctl_usage_error(command, "unknown or ambiguous option '%s'", word);
    return -EINVAL;
}

int ctl_parse_command(struct ctl_options *options, int argc, char **argv, const char *extra_short,
                      const struct option *extra, ctl_option_fn handle, void *context, int *first)
{
    const char *command = argv[0];
    size_t extra_count = 0;
    struct option *all = NULL;
    char short_options[64];
    int ret = 0;

    while (extra != NULL && extra[extra_count].name != NULL)
        extra_count++;
    all = calloc(extra_count + GLOBAL_OPTION_COUNT + 1, sizeof(*all));
    if (all == NULL) {
        fprintf(stderr, CTL_PROGRAM ": out of memory\n");
        return -ENOMEM;
    }
    if (extra_count > 0)
        memcpy(all, extra, extra_count * sizeof(*all));
    memcpy(all + extra_count, global_options, sizeof(global_options));
    snprintf(short_options, sizeof(short_options), ":" GLOBAL_SHORT_OPTIONS "%s",
             extra_short != NULL ? extra_short : "");
    opterr = 0;
    optind = 0; /* glibc: start over, argv is another vector */
    for (;;) {
        int option = getopt_long(argc, argv, short_options, all, NULL);

        if (option == -1)
            break;
        if (option == '?' || option == ':') {
            ret = report_getopt_error(command, option, argv);
            goto out;
        }
        if (option == 'h') {
            print_command_help(find_command(command));
            ret = 1;
            goto out;
        }
        if (is_global_option(option))
            ret = apply_global_option(options, command, option, optarg);
        else
            ret = handle(context, option, optarg);
        if (ret < 0)
            goto out;
    }
    *first = optind;
out:
    free(all);
    return ret;
}

/* The admin socket the daemon's configuration file names, else the default. */
static const char *configured_admin_socket(void)
{
    static char path[CONFIG_SOCKET_PATH_MAX];
    struct config_daemon *settings = NULL;
    char error[CONFIG_ERROR_MAX];

    if (path[0] != '\0')
        return path;
    /* A file that cannot be read here (mode 0600) leaves the default, which is usual. */
    if (config_daemon_load(CONFIG_DAEMON_PATH, false, &settings, error, sizeof(error)) < 0 ||
        config_daemon_admin_socket(settings, path, sizeof(path)) < 0)
        snprintf(path, sizeof(path), "%s", CTL_DEFAULT_ADMIN_SOCKET);
    config_daemon_free(settings);
    return path;
}

int main(int argc, char **argv)
{
    struct ctl_options options = {.timeout_ms = CTL_DEFAULT_TIMEOUT_MS};
    const struct ctl_command *command;
    int ret;

    opterr = 0;
    for (;;) {
        static const struct option top_options[] = {
            {"admin-socket", required_argument, NULL, 's'},
            {"json", no_argument, NULL, CTL_OPTION_JSON},
            {"timeout", required_argument, NULL, CTL_OPTION_TIMEOUT},
            {"help", no_argument, NULL, 'h'},
            {"version", no_argument, NULL, CTL_OPTION_VERSION},
            {NULL, 0, NULL, 0},
        };
        int option = getopt_long(argc, argv, "+:" GLOBAL_SHORT_OPTIONS, top_options, NULL);

        if (option == -1)
            break;
        if (option == '?' || option == ':') {
            report_getopt_error(NULL, option, argv);
            return CTL_EXIT_USAGE;
        }
        if (option == 'h') {
            print_help();
            return CTL_EXIT_OK;
        }
        if (option == CTL_OPTION_VERSION) {
            printf(CTL_PROGRAM " " VFIO_USERD_VERSION "\n");
            return CTL_EXIT_OK;
        }
        if (apply_global_option(&options, NULL, option, optarg) < 0)
            return CTL_EXIT_USAGE;
    }
    if (optind >= argc)
        return ctl_usage_error(NULL, "no command given");
    if (strcmp(argv[optind], "help") == 0) {
        if (optind + 1 >= argc) {
            print_help();
            return CTL_EXIT_OK;
        }
        command = find_command(argv[optind + 1]);
        if (command == NULL)
            return ctl_usage_error(NULL, "no command '%s'", argv[optind + 1]);
        print_command_help(command);
        return CTL_EXIT_OK;
    }
    command = find_command(argv[optind]);
    if (command == NULL)
        return ctl_usage_error(NULL, "no command '%s'", argv[optind]);
    ret = command->run(&options, argc - optind, argv + optind);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, CTL_PROGRAM ": cannot write the output: %s\n", strerror(errno));
        if (ret == CTL_EXIT_OK)
            ret = CTL_EXIT_REFUSED;
    }
    return ret;
}

const char *ctl_admin_socket(const struct ctl_options *options)
{
    return options->admin_socket != NULL ? options->admin_socket : configured_admin_socket();
}
