/*
 * vfio-userd: command line, logging set-up, and the three ways to run: the broker
 * (default), --check-config, and --single (one device in the foreground, the backend
 * program convention of the vfio-user spec).
 */
#include <errno.h>
#include <getopt.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <systemd/sd-journal.h>
#include <unistd.h>

#include "config.h"
#include "daemon.h"
#include "device.h"
#include "devices.h"
#include "endpoint.h"
#include "event_loop.h"
#include "log.h"
#include "plugins.h"

#define EXIT_USAGE 2

static void print_help(void)
{
    printf("Usage: vfio-userd [OPTION]...\n"
           "       vfio-userd --single PLUGIN --socket PATH [--param KEY=VALUE]...\n"
           "                  [--socket-mode MODE] [--socket-owner USER[:GROUP]]\n"
           "\n"
           "Serve emulated PCI devices to virtual machine monitors over vfio-user.\n"
           "Each device comes from a YAML drop-in file and gets a UNIX socket of its own.\n"
           "\n"
           "  -c, --config FILE         daemon configuration (default %s)\n"
           "      --devices-dir DIR     device drop-in directory; repeat for several, earlier\n"
           "                            ones masking later ones (replaces the configured list)\n"
           "      --plugin-dir DIR      plugin directory; repeatable (replaces the list)\n"
           "      --runtime-dir DIR     where device sockets live (default %s)\n"
           "      --admin-socket PATH   JSON-RPC admin socket (default RUNTIME-DIR/admin.sock)\n"
           "      --log-level LEVEL     err, warning, notice, info or debug (default info)\n"
           "      --check-config        validate the configuration and every drop-in, then\n"
           "                            exit: 0 when valid, 1 with each problem listed\n"
           "      --single PLUGIN       serve one device of PLUGIN (a name, or a path to a\n"
           "                            .so) in the foreground, without drop-ins\n"
           "      --socket PATH         with --single: the socket to serve the device on\n"
           "      --param KEY=VALUE     with --single: a device parameter; repeatable\n"
           "      --socket-mode MODE    with --single: the socket's mode in octal (default\n"
           "                            0600, whatever the umask)\n"
           "      --socket-owner USER[:GROUP]\n"
           "                            with --single: the socket's owner and group, names\n"
           "                            or numbers (default: the caller's)\n"
           "  -h, --help                show this help and exit\n"
           "      --version             show the version and exit\n"
           "\n"
           "See vfio-userd(8) and vfio-userd.yaml(5).\n",
           CONFIG_DAEMON_PATH, CONFIG_RUNTIME_DIR);
}

/* --- Logging: the journal with structured fields when stderr is the journal. --- */

static void journal_sink(enum vfio_userd_log_level level, const char *device, const char *message)
{
    if (device != NULL)
        sd_journal_send("MESSAGE=%s: %s", device, message, "PRIORITY=%d", (int)level,
                        "VFIO_USERD_DEVICE=%s", device, NULL);
    else
        sd_journal_send("MESSAGE=%s", message, "PRIORITY=%d", (int)level, NULL);
}

static bool stderr_is_journal(void)
{
    const char *stream = getenv("JOURNAL_STREAM");
    unsigned long long device, inode;
    struct stat status;

    if (stream == NULL || sscanf(stream, "%llu:%llu", &device, &inode) != 2)
        return false;
    return fstat(STDERR_FILENO, &status) == 0 && status.st_dev == device && status.st_ino == inode;
}

/* --check-config prints plain lines, like a compiler. */
static void plain_sink(enum vfio_userd_log_level level, const char *device, const char *message)
{
    if (device != NULL)
        fprintf(stderr, "%s: %s\n", device, message);
    else
        fprintf(stderr, "%s\n", message);
}

/* --- --single. --- */

static int on_single_signal(sd_event_source *source, const struct signalfd_siginfo *info,
                            void *userdata)
{
    sd_notify(0, "STOPPING=1");
    sd_event_exit(sd_event_source_get_event(source), 0);
    return 0;
}

/* --single's socket: private to the caller unless --socket-mode/--socket-owner say more. */
#define SINGLE_SOCKET_MODE 0600

struct single_socket {
    const char *path;
    mode_t mode;
    const char *owner; /* USER[:GROUP] or :GROUP, or NULL */
};

/* Resolves --socket-owner; (uid_t)-1 / (gid_t)-1 for what it leaves out. */
static int resolve_owner(const char *owner, uid_t *uid, gid_t *gid)
{
    char user[CONFIG_ACCOUNT_MAX + 1];
    const char *colon = strchr(owner, ':');
    size_t length = colon != NULL ? (size_t)(colon - owner) : strlen(owner);
    int ret;

    *uid = (uid_t)-1;
    *gid = (gid_t)-1;
    if (length > CONFIG_ACCOUNT_MAX || (length == 0 && (colon == NULL || colon[1] == '\0'))) {
        vu_log(VFIO_USERD_LOG_ERR, NULL, "--socket-owner %s: expected USER, USER:GROUP or :GROUP",
               owner);
        return -EINVAL;
    }
    memcpy(user, owner, length);
    user[length] = '\0';
    if (length > 0 && (ret = device_lookup_user(user, uid)) < 0) {
        vu_log(VFIO_USERD_LOG_ERR, NULL, "--socket-owner: no user '%s'%s%s", user,
               ret == -ENOENT ? "" : ": ", ret == -ENOENT ? "" : strerror(-ret));
        return ret;
    }
    if (colon != NULL && colon[1] != '\0' && (ret = device_lookup_group(colon + 1, gid)) < 0) {
        vu_log(VFIO_USERD_LOG_ERR, NULL, "--socket-owner: no group '%s'%s%s", colon + 1,
               ret == -ENOENT ? "" : ": ", ret == -ENOENT ? "" : strerror(-ret));
        return ret;
    }
    return 0;
}

/* Listens on the socket, which appears with its owner and mode. */
static int listen_single(const struct single_socket *socket_settings, int *listen_fd)
{
    struct vu_socket_access access = {(uid_t)-1, (gid_t)-1, socket_settings->mode};
    const char *path = socket_settings->path;
    int ret;

    if (socket_settings->owner != NULL &&
        resolve_owner(socket_settings->owner, &access.uid, &access.gid) < 0)
        return -EINVAL;
    /* The caller's umask does not decide who may connect: the mode does. */
    umask(0077);
    ret = vu_socket_listen(path, &access, listen_fd);
    if (ret < 0)
        vu_log(VFIO_USERD_LOG_ERR, NULL, "socket %s: %s", path,
               ret == -EADDRINUSE ? "a live process is listening on it" : strerror(-ret));
    return ret;
}

static int run_single(const struct config_daemon *settings, const char *plugin_name,
                      const struct single_socket *socket_settings, json_t *params)
{
    const char *socket_path = socket_settings->path;
    struct plugin_registry plugins = {0};
    const struct vfio_userd_plugin *plugin = NULL;
    struct vfio_userd_error error = {0};
    struct vu_device *device = NULL;
    struct vu_endpoint *endpoint = NULL;
    struct vu_loop *loop = NULL;
    sd_event *event;
    sigset_t signals;
    int listen_fd = -1, ret, status = EXIT_FAILURE;

    if (strchr(plugin_name, '/') != NULL) {
        if (plugin_registry_load_file(&plugins, plugin_name) == 0)
            plugin = plugins.modules[0].plugin;
    } else {
        plugin_registry_load(&plugins, settings->plugin_dirs, settings->plugin_dir_count);
        plugin = plugin_registry_find(&plugins, plugin_name);
        if (plugin == NULL)
            vu_log(VFIO_USERD_LOG_ERR, NULL, "no plugin named '%s' in the plugin directories",
                   plugin_name);
    }
    if (plugin == NULL)
        goto out;

    sigemptyset(&signals);
    sigaddset(&signals, SIGTERM);
    sigaddset(&signals, SIGINT);
    pthread_sigmask(SIG_BLOCK, &signals, NULL);
    signal(SIGPIPE, SIG_IGN);
    ret = vu_loop_new(&loop);
    event = ret < 0 ? NULL : vu_loop_event(loop);
    if (ret < 0 || (ret = sd_event_add_signal(event, NULL, SIGTERM, on_single_signal, NULL)) < 0 ||
        (ret = sd_event_add_signal(event, NULL, SIGINT, on_single_signal, NULL)) < 0 ||
        (ret = sd_event_set_watchdog(event, true)) < 0) {
        vu_log(VFIO_USERD_LOG_ERR, NULL, "event loop: %s", strerror(-ret));
        goto out;
    }
    ret = vu_device_create(plugin, "single", params, &device, &error);
    if (ret < 0) {
        vu_log(VFIO_USERD_LOG_ERR, NULL, "--param %s: %s",
               error.field[0] != '\0' ? error.field : "", error.message);
        goto out;
    }
    ret = listen_single(socket_settings, &listen_fd);
    if (ret < 0)
        goto out;
    ret = vu_endpoint_new(device, loop, listen_fd, &endpoint);
    if (ret < 0) {
        vu_log(VFIO_USERD_LOG_ERR, NULL, "serving %s: %s", socket_path, strerror(-ret));
        unlink(socket_path);
        goto out;
    }
    device_endpoint_configure(endpoint, settings);
    vu_log(VFIO_USERD_LOG_INFO, NULL, "serving one %s device on %s", plugin->name, socket_path);
    sd_notify(0, "READY=1");
    ret = vu_loop_run(loop);
    status = ret < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
    vu_endpoint_free(endpoint);
    unlink(socket_path);
out:
    vu_device_destroy(device);
    vu_loop_unref(loop);
    plugin_registry_free(&plugins);
    return status;
}

/* --- Command line. --- */

enum {
    OPTION_DEVICES_DIR = 256,
    OPTION_PLUGIN_DIR,
    OPTION_RUNTIME_DIR,
    OPTION_ADMIN_SOCKET,
    OPTION_LOG_LEVEL,
    OPTION_CHECK_CONFIG,
    OPTION_SINGLE,
    OPTION_SOCKET,
    OPTION_PARAM,
    OPTION_SOCKET_MODE,
    OPTION_SOCKET_OWNER,
    OPTION_VERSION,
};

/* Flags may name paths relative to the working directory; the daemon keeps them absolute. */
static json_t *absolute_path(const char *path)
{
    char directory[4096], joined[8192];

    if (path[0] == '/' || getcwd(directory, sizeof(directory)) == NULL)
        return json_string(path);
    snprintf(joined, sizeof(joined), "%s/%s", directory, path);
    return json_string(joined);
}

static int add_list_item(json_t *overrides, const char *key, const char *value)
{
    json_t *list = json_object_get(overrides, key);

    if (list == NULL) {
        list = json_array();
        if (list == NULL || json_object_set_new(overrides, key, list) < 0)
            return -ENOMEM;
    }
    return json_array_append_new(list, absolute_path(value)) < 0 ? -ENOMEM : 0;
}

static int add_param(json_t *params, const char *assignment)
{
    char error[512];
    int ret = config_param_assign(params, assignment, error, sizeof(error));

    if (ret < 0)
        fprintf(stderr, "vfio-userd: %s\n", error);
    return ret;
}

/* --socket-mode: permission bits in octal, as chmod(1) takes them ("660" or "0660"). */
static int parse_socket_mode(const char *text, mode_t *mode)
{
    unsigned long value = 0;
    size_t length = strlen(text);

    for (size_t i = 0; i < length; i++) {
        if (text[i] < '0' || text[i] > '7' || value > 0777)
            break;
        value = value * 8 + (unsigned long)(text[i] - '0');
        if (i + 1 == length && value <= 0777) {
            *mode = (mode_t)value;
            return 0;
        }
    }
    fprintf(stderr, "vfio-userd: --socket-mode %s: expected an octal mode from 0 to 0777\n", text);
    return -EINVAL;
}

/*
 * Every client may make its device hold max_client_fds descriptors (4096 by default), but
 * systemd starts services with a soft limit of 1024: one client could then use up all the
 * daemon has. The daemon never uses select(), so it takes the hard limit, as systemd
 * advises for such services.
 */
static void raise_descriptor_limit(void)
{
    struct rlimit limit;

    if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
        limit.rlim_cur = limit.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &limit) < 0)
            vu_log(VFIO_USERD_LOG_WARNING, NULL, "cannot raise the descriptor limit: %s",
                   strerror(errno));
    }
}

int main(int argc, char **argv)
{
    static const struct option options[] = {
        {"config", required_argument, NULL, 'c'},
        {"devices-dir", required_argument, NULL, OPTION_DEVICES_DIR},
        {"plugin-dir", required_argument, NULL, OPTION_PLUGIN_DIR},
        {"runtime-dir", required_argument, NULL, OPTION_RUNTIME_DIR},
        {"admin-socket", required_argument, NULL, OPTION_ADMIN_SOCKET},
        {"log-level", required_argument, NULL, OPTION_LOG_LEVEL},
        {"check-config", no_argument, NULL, OPTION_CHECK_CONFIG},
        {"single", required_argument, NULL, OPTION_SINGLE},
        {"socket", required_argument, NULL, OPTION_SOCKET},
        {"param", required_argument, NULL, OPTION_PARAM},
        {"socket-mode", required_argument, NULL, OPTION_SOCKET_MODE},
        {"socket-owner", required_argument, NULL, OPTION_SOCKET_OWNER},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, OPTION_VERSION},
        {0},
    };
    struct config_daemon *settings = NULL;
    const char *config_path = CONFIG_DAEMON_PATH, *single = NULL;
    struct single_socket single_socket = {.mode = SINGLE_SOCKET_MODE};
    bool socket_access_given = false;
    bool config_given = false, check_config = false;
    json_t *overrides = json_object(), *params = json_object();
    char error[1024];
    int option, status = EXIT_USAGE;

    /*
     * Memory that devices used goes back to the system once they are gone (devices.c trims
     * the heap after removals), which takes two settings of glibc's allocator:
     *  - one arena for every thread: malloc_trim() cannot shrink the top of a thread's own
     *    arena, and workers allocate only when devices come and go, not per message, so
     *    they gain nothing from arenas of their own;
     *  - a fixed mmap threshold: large blocks (a plugin's buffers) get mappings of their
     *    own, unmapped when freed. glibc would otherwise raise the threshold after the
     *    first such block is freed and serve later ones from the heap.
     * A third, no per-thread cache (tcache: freed blocks malloc_trim() cannot release), has
     * no mallopt(): the systemd unit sets it in GLIBC_TUNABLES, see vfio-userd(8).
     */
    mallopt(M_ARENA_MAX, 1);
    mallopt(M_MMAP_THRESHOLD, 128 * 1024);
    raise_descriptor_limit();
    if (overrides == NULL || params == NULL)
        return EXIT_FAILURE;
    while ((option = getopt_long(argc, argv, "c:h", options, NULL)) != -1) {
        int ret = 0;
        switch (option) {
        case 'c':
            config_path = optarg;
            config_given = true;
            break;
        case OPTION_DEVICES_DIR:
            ret = add_list_item(overrides, "devices_dirs", optarg);
            break;
        case OPTION_PLUGIN_DIR:
            ret = add_list_item(overrides, "plugin_dirs", optarg);
            break;
        case OPTION_RUNTIME_DIR:
            ret = json_object_set_new(overrides, "runtime_dir", absolute_path(optarg));
            break;
        case OPTION_ADMIN_SOCKET:
            ret = json_object_set_new(overrides, "admin_socket", absolute_path(optarg));
            break;
        case OPTION_LOG_LEVEL:
            ret = json_object_set_new(overrides, "log_level", json_string(optarg));
            break;
        case OPTION_CHECK_CONFIG:
            check_config = true;
            break;
        case OPTION_SINGLE:
            single = optarg;
            break;
        case OPTION_SOCKET:
            single_socket.path = optarg;
            break;
        case OPTION_SOCKET_MODE:
            ret = parse_socket_mode(optarg, &single_socket.mode);
            socket_access_given = true;
            break;
        case OPTION_SOCKET_OWNER:
            single_socket.owner = optarg;
            socket_access_given = true;
            break;
        case OPTION_PARAM:
            ret = add_param(params, optarg);
            break;
        case 'h':
            print_help();
            status = EXIT_SUCCESS;
            goto out;
        case OPTION_VERSION:
            printf("vfio-userd %s (plugin ABI %d.%d, vfio-user protocol %d.%d)\n",
                   VFIO_USERD_VERSION, VFIO_USERD_ABI_MAJOR, VFIO_USERD_ABI_MINOR, VU_VERSION_MAJOR,
                   VU_VERSION_MINOR);
            status = EXIT_SUCCESS;
            goto out;
        default:
            fprintf(stderr, "Try 'vfio-userd --help'.\n");
            goto out;
        }
        if (ret < 0)
            goto out;
    }
    if (optind < argc) {
        fprintf(stderr, "vfio-userd: unexpected argument '%s'; try 'vfio-userd --help'.\n",
                argv[optind]);
        goto out;
    }
    if ((single != NULL) != (single_socket.path != NULL) ||
        ((json_object_size(params) > 0 || socket_access_given) && single == NULL) ||
        (single != NULL && check_config)) {
        fprintf(stderr, "vfio-userd: --single needs --socket (and --param, --socket-mode and "
                        "--socket-owner go with them), and not --check-config\n");
        goto out;
    }

    if (check_config)
        vu_log_set_sink(plain_sink);
    else if (stderr_is_journal())
        vu_log_set_sink(journal_sink);

    status = EXIT_FAILURE;
    if (config_daemon_load(config_path, config_given, &settings, error, sizeof(error)) < 0 ||
        config_daemon_apply(settings, overrides, "command line", error, sizeof(error)) < 0) {
        fprintf(stderr, "%s\n", error);
        goto out;
    }
    vu_log_set_level((enum vfio_userd_log_level)settings->log_level);

    if (check_config)
        status = daemon_check_config(settings);
    else if (single != NULL)
        status = run_single(settings, single, &single_socket, params);
    else {
        status = daemon_run(settings);
        settings = NULL; /* taken */
    }
out:
    config_daemon_free(settings);
    json_decref(overrides);
    json_decref(params);
    return status;
}
