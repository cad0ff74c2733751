/*
 * Test harness: serves one device on a UNIX socket in a temporary directory from a
 * server thread with its own device loop, the way a daemon worker does.
 */
#ifndef TEST_SERVER_H
#define TEST_SERVER_H

#include <pthread.h>
#include <stdbool.h>
#include <systemd/sd-event.h>

#include <vfio-userd/plugin.h>

struct vu_device;
struct vu_endpoint;
struct vu_loop;

struct test_server {
    pthread_t thread;
    struct vu_loop *loop;
    sd_event *event; /* the loop's */
    int wake_fd;     /* eventfd: run the queued call, or stop */
    struct vu_device *device;
    struct vu_endpoint *endpoint;
    const struct vfio_userd_plugin *plugin;
    const char *params_json;
    char directory[64];
    char socket_path[128];
    int start_result;
    struct vfio_userd_error error;
    pthread_mutex_t lock;
    pthread_cond_t done;
    bool started;
    void (*call)(struct test_server *server, void *argument);
    void *call_argument;
    bool call_done;
    bool stopping;
};

/* Starts serving `plugin` with `params_json` (NULL: none); 0 or -errno (error filled). */
int test_server_start(struct test_server *server, const struct vfio_userd_plugin *plugin,
                      const char *params_json);

/* Stops the thread, destroys the device, removes the directory. */
void test_server_stop(struct test_server *server);

/* Runs `call` on the server thread and waits for it (to inspect device state safely). */
void test_server_call(struct test_server *server,
                      void (*call)(struct test_server *server, void *argument), void *argument);

struct vu_client;

/* Turns MSI-X on in the device's capability, as a guest driver does, through `client`;
 * returns the capability's offset in config space (the test fails if there is none). */
uint8_t test_enable_msix(struct vu_client *client);

/* Number of open file descriptors of this process. */
int test_count_open_fds(void);

#endif /* TEST_SERVER_H */
