/*
 * Worker threads with their own sd-event loops; see workers.h.
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "log.h"
#include "workers.h"

/* One queued call; lives on the caller's stack while the caller waits. */
struct task {
    worker_task_fn function;
    void *argument;
    int result;
    bool done;
    struct task *next;
};

struct worker {
    struct workers *owner;
    pthread_t thread;
    bool thread_started;
    sd_event *event;
    sd_event_source *wake_source;
    int wake_fd;
    pthread_mutex_t lock;
    pthread_cond_t finished;
    struct task *head, *tail;
    bool stopping;
};

struct workers {
    struct worker *workers;
    size_t count;
};

static int on_wake(sd_event_source *source, int fd, uint32_t revents, void *userdata)
{
    struct worker *worker = userdata;
    uint64_t value;

    if (read(fd, &value, sizeof(value)) < 0 && errno != EAGAIN)
        vu_log(VFIO_USERD_LOG_ERR, NULL, "worker wake-up read failed: %m");
    pthread_mutex_lock(&worker->lock);
    while (worker->head != NULL) {
        struct task *task = worker->head;
        worker->head = task->next;
        if (worker->head == NULL)
            worker->tail = NULL;
        /* Tasks run unlocked: they may take long and may log. */
        pthread_mutex_unlock(&worker->lock);
        int result = task->function(worker->event, task->argument);
        pthread_mutex_lock(&worker->lock);
        task->result = result;
        task->done = true;
        pthread_cond_broadcast(&worker->finished);
    }
    if (worker->stopping)
        sd_event_exit(worker->event, 0);
    pthread_mutex_unlock(&worker->lock);
    return 0;
}

static void *worker_main(void *argument)
{
    struct worker *worker = argument;
    int ret = sd_event_loop(worker->event);

    if (ret < 0)
        vu_log(VFIO_USERD_LOG_ERR, NULL, "worker event loop failed: %s", strerror(-ret));
    return NULL;
}

static void wake(struct worker *worker)
{
    uint64_t one = 1;

    if (write(worker->wake_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
        vu_log(VFIO_USERD_LOG_ERR, NULL, "worker wake-up failed: %m");
}

static int worker_init(struct worker *worker, struct workers *owner)
{
    int ret;

    worker->owner = owner;
    worker->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (worker->wake_fd < 0)
        return -errno;
    pthread_mutex_init(&worker->lock, NULL);
    pthread_cond_init(&worker->finished, NULL);
    ret = sd_event_new(&worker->event);
    if (ret < 0)
        return ret;
    ret = sd_event_add_io(worker->event, &worker->wake_source, worker->wake_fd, EPOLLIN, on_wake,
                          worker);
    if (ret < 0)
        return ret;
    if (pthread_create(&worker->thread, NULL, worker_main, worker) != 0)
        return -EAGAIN;
    worker->thread_started = true;
    return 0;
}

static void worker_fini(struct worker *worker)
{
    if (worker->thread_started) {
        pthread_mutex_lock(&worker->lock);
        worker->stopping = true;
        wake(worker);
        pthread_mutex_unlock(&worker->lock);
        pthread_join(worker->thread, NULL);
    }
    sd_event_source_disable_unref(worker->wake_source);
    sd_event_unref(worker->event);
    if (worker->wake_fd >= 0)
        close(worker->wake_fd);
    pthread_mutex_destroy(&worker->lock);
    pthread_cond_destroy(&worker->finished);
}

int workers_start(size_t count, struct workers **result)
{
    struct workers *workers;
    int ret = 0;

    if (count == 0) {
        long online = sysconf(_SC_NPROCESSORS_ONLN);
        count = online > 0 ? (size_t)online : 1;
    }
    workers = calloc(1, sizeof(*workers));
    if (workers == NULL)
        return -ENOMEM;
    workers->workers = calloc(count, sizeof(*workers->workers));
    if (workers->workers == NULL) {
        free(workers);
        return -ENOMEM;
    }
    for (size_t i = 0; i < count; i++)
        workers->workers[i].wake_fd = -1;
    for (size_t i = 0; i < count && ret >= 0; i++) {
        ret = worker_init(&workers->workers[i], workers);
        workers->count = i + 1;
    }
    if (ret < 0) {
        workers_stop(workers);
        return ret;
    }
    *result = workers;
    return 0;
}

void workers_stop(struct workers *workers)
{
    if (workers == NULL)
        return;
    for (size_t i = 0; i < workers->count; i++)
        worker_fini(&workers->workers[i]);
    free(workers->workers);
    free(workers);
}

size_t workers_count(const struct workers *workers)
{
    return workers->count;
}

int workers_call(struct workers *workers, size_t index, worker_task_fn function, void *argument)
{
    struct worker *worker = &workers->workers[index % workers->count];
    struct task task = {.function = function, .argument = argument};

    pthread_mutex_lock(&worker->lock);
    if (worker->tail != NULL)
        worker->tail->next = &task;
    else
        worker->head = &task;
    worker->tail = &task;
    wake(worker);
    while (!task.done)
        pthread_cond_wait(&worker->finished, &worker->lock);
    pthread_mutex_unlock(&worker->lock);
    return task.result;
}
