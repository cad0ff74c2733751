/*
 * vfio-userctl: what every command shares (the exit codes the man page promises, the global
 * options) and the entry point of each command. main.c parses the global options and
 * dispatches; commands.c and probe.c implement the commands.
 */
#ifndef VFIO_USERCTL_CTL_H
#define VFIO_USERCTL_CTL_H

#include <stdbool.h>

/* The exit codes are part of the interface: scripts act on them. */
enum ctl_exit {
    CTL_EXIT_OK = 0,
    CTL_EXIT_REFUSED = 1,     /* the daemon (or, for probe, the device) refused or failed */
    CTL_EXIT_USAGE = 2,       /* bad command line or input file; nothing was sent */
    CTL_EXIT_UNREACHABLE = 3, /* no daemon (or device) to talk to, or no usable answer */
};

#define CTL_PROGRAM            "vfio-userctl"
#define CTL_DEFAULT_TIMEOUT_MS 30000
#define CTL_MAX_TIMEOUT_MS     (24 * 3600 * 1000)

/* The options valid before or after the command name. */
struct ctl_options {
    const char *admin_socket;
    bool json;
    int timeout_ms;
};

/* One command: argv[0] is the command's name; getopt state is fresh. Returns an enum ctl_exit. */
typedef int (*ctl_command_fn)(struct ctl_options *options, int argc, char **argv);

int command_list(struct ctl_options *options, int argc, char **argv);
int command_info(struct ctl_options *options, int argc, char **argv);
int command_add(struct ctl_options *options, int argc, char **argv);
int command_remove(struct ctl_options *options, int argc, char **argv);
int command_reset(struct ctl_options *options, int argc, char **argv);
int command_plugins(struct ctl_options *options, int argc, char **argv);
int command_status(struct ctl_options *options, int argc, char **argv);
int command_reload(struct ctl_options *options, int argc, char **argv);
int command_probe(struct ctl_options *options, int argc, char **argv);
int command_stats(struct ctl_options *options, int argc, char **argv);
int command_logs(struct ctl_options *options, int argc, char **argv);

/*
 * Calls one admin method on the daemon (commands.c). Returns CTL_EXIT_OK with *result set
 * (the caller frees it), or another exit code after telling the user why. Takes `params`.
 */
struct json_t;
int ctl_call_daemon(struct ctl_options *options, const char *method, struct json_t *params,
                    struct json_t **result);

/*
 * Parses a command's argv: its own options (`extra_short`, `extra`: may be NULL) and the
 * global ones, in any order among the operands. Returns 1 after printing the command's help
 * for --help, -EINVAL after reporting a usage error, or 0 with *first the index of the
 * first operand. Each of the command's own options goes to `handle` with getopt's value and
 * argument; it returns 0, or -EINVAL after reporting the problem with ctl_usage_error().
 */
struct option;
typedef int (*ctl_option_fn)(void *context, int option, const char *argument);
int ctl_parse_command(struct ctl_options *options, int argc, char **argv, const char *extra_short,
                      const struct option *extra, ctl_option_fn handle, void *context, int *first);

/* -s, else the admin socket vfio-userd.yaml names, else RUNTIME_DIR/admin.sock. */
const char *ctl_admin_socket(const struct ctl_options *options);

/* "vfio-userctl: COMMAND: message" and the hint to --help, on stderr; returns CTL_EXIT_USAGE. */
int ctl_usage_error(const char *command, const char *format, ...)
    __attribute__((format(printf, 2, 3)));

#endif /* VFIO_USERCTL_CTL_H */
