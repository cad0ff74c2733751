/*
 * Test harness serving one device from a thread; see test_server.h.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <check.h>
#include <linux/pci_regs.h>

#include "client.h"
#include "device.h"
#include "endpoint.h"
#include "event_loop.h"
#include "test_server.h"

static int on_wake(sd_event_source *source, int fd, uint32_t revents, void *userdata)
{
    struct test_server *server = userdata;
    uint64_t value;

    if (read(fd, &value, sizeof(value)) < 0)
        return 0;
    pthread_mutex_lock(&server->lock);
    if (server->call != NULL) {
        server->call(server, server->call_argument);
        server->call = NULL;
        server->call_done = true;
        pthread_cond_broadcast(&server->done);
    }
    if (server->stopping)
        sd_event_exit(server->event, 0);
    pthread_mutex_unlock(&server->lock);
    return 0;
}

static void report_started(struct test_server *server, int result)
{
    pthread_mutex_lock(&server->lock);
    server->start_result = result;
    server->started = true;
    pthread_cond_broadcast(&server->done);
    pthread_mutex_unlock(&server->lock);
}

static void *server_main(void *argument)
{
    struct test_server *server = argument;
    sd_event_source *wake_source = NULL;
    json_t *params = NULL;
    int listen_fd = -1;
    int ret;

    if (server->params_json != NULL) {
        params = json_loads(server->params_json, 0, NULL);
        if (params == NULL) {
            report_started(server, -EINVAL);
            return NULL;
        }
    }
    ret = vu_loop_new(&server->loop);
    if (ret >= 0) {
        server->event = vu_loop_event(server->loop);
        ret =
            sd_event_add_io(server->event, &wake_source, server->wake_fd, EPOLLIN, on_wake, server);
    }
    if (ret >= 0)
        ret = vu_device_create(server->plugin, "test0", params, &server->device, &server->error);
    json_decref(params);
    if (ret >= 0)
        ret = vu_socket_listen(server->socket_path, NULL, &listen_fd);
    if (ret >= 0)
        ret = vu_endpoint_new(server->device, server->loop, listen_fd, &server->endpoint);
    report_started(server, ret < 0 ? ret : 0);
    if (ret >= 0)
        vu_loop_run(server->loop);

    vu_endpoint_free(server->endpoint);
    server->endpoint = NULL;
    vu_device_destroy(server->device);
    server->device = NULL;
    sd_event_source_disable_unref(wake_source);
    server->event = NULL;
    server->loop = vu_loop_unref(server->loop);
    return NULL;
}

int test_server_start(struct test_server *server, const struct vfio_userd_plugin *plugin,
                      const char *params_json)
{
    memset(server, 0, sizeof(*server));
    server->plugin = plugin;
    server->params_json = params_json;
    pthread_mutex_init(&server->lock, NULL);
    pthread_cond_init(&server->done, NULL);
    snprintf(server->directory, sizeof(server->directory), "/tmp/vfio-userd-test.XXXXXX");
    if (mkdtemp(server->directory) == NULL)
        return -errno;
    snprintf(server->socket_path, sizeof(server->socket_path), "%s/device.sock", server->directory);
    server->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (server->wake_fd < 0)
        return -errno;
    if (pthread_create(&server->thread, NULL, server_main, server) != 0)
        return -EAGAIN;
    pthread_mutex_lock(&server->lock);
    while (!server->started)
        pthread_cond_wait(&server->done, &server->lock);
    pthread_mutex_unlock(&server->lock);
    if (server->start_result < 0) {
        int result = server->start_result;
        pthread_join(server->thread, NULL);
        close(server->wake_fd);
        unlink(server->socket_path);
        rmdir(server->directory);
        return result;
    }
    return 0;
}

static void wake(struct test_server *server)
{
    uint64_t one = 1;

    if (write(server->wake_fd, &one, sizeof(one)) < 0)
        abort();
}

void test_server_call(struct test_server *server,
                      void (*call)(struct test_server *server, void *argument), void *argument)
{
    pthread_mutex_lock(&server->lock);
    server->call = call;
    server->call_argument = argument;
    server->call_done = false;
    wake(server);
    while (!server->call_done)
        pthread_cond_wait(&server->done, &server->lock);
    pthread_mutex_unlock(&server->lock);
}

void test_server_stop(struct test_server *server)
{
    pthread_mutex_lock(&server->lock);
    server->stopping = true;
    wake(server);
    pthread_mutex_unlock(&server->lock);
    pthread_join(server->thread, NULL);
    close(server->wake_fd);
    unlink(server->socket_path);
    rmdir(server->directory);
    pthread_mutex_destroy(&server->lock);
    pthread_cond_destroy(&server->done);
}

uint8_t test_enable_msix(struct vu_client *client)
{
    uint16_t control = PCI_MSIX_FLAGS_ENABLE;
    uint8_t config[256], msix = 0;

    ck_assert_int_eq(vu_client_region_read(client, VFIO_USERD_REGION_CONFIG, 0, config, 256), 0);
    for (uint8_t at = config[PCI_CAPABILITY_LIST]; at != 0; at = config[at + 1])
        if (config[at] == PCI_CAP_ID_MSIX)
            msix = at;
    ck_assert_uint_ne(msix, 0);
    ck_assert_int_eq(vu_client_region_write(client, VFIO_USERD_REGION_CONFIG, msix + PCI_MSIX_FLAGS,
                                            &control, 2),
                     0);
    return msix;
}

int test_count_open_fds(void)
{
    DIR *directory = opendir("/proc/self/fd");
    struct dirent *entry;
    int count = 0;

    if (directory == NULL)
        return -errno;
    while ((entry = readdir(directory)) != NULL)
        if (entry->d_name[0] != '.')
            count++;
    closedir(directory);
    return count - 1; /* the directory's own descriptor */
}
