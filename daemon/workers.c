/*
 * Worker threads with their own device loops, and the control plane's bounded waits on
 * them; see workers.h.
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "workers.h"

enum task_state { TASK_QUEUED, TASK_RUNNING, TASK_DONE };

/*
 * One queued call. It and its copy of the argument live on the heap, so that a caller
 * that stopped waiting can leave a running task behind: the worker frees it then.
 */
struct task {
    worker_task_fn function;
    worker_abandon_fn abandon;
    void *argument;
    size_t size; /* of the argument */
    uint64_t timeout_usec;
    bool must_run;
    struct worker *worker;
    int result;
    enum task_state state;
    bool abandoned;
    struct task *next;
};

struct worker {
    struct workers *owner;
    size_t index;
    pthread_t thread;
    bool thread_started;
    struct vu_loop *loop;
    sd_event_source *wake_source;
    int wake_fd;
    /* Written by the worker before each plugin callback; read by the control plane. */
    struct vu_callback_tracker tracker;

    /* Under `lock`. */
    pthread_mutex_t lock;
    pthread_cond_t finished; /* a task finished, or the worker answered a heartbeat */
    struct task *head, *tail;
    bool stopping;
    bool heartbeat_pending;  /* set by the control plane, cleared by the worker */
    uint64_t heartbeat_sent; /* CLOCK_MONOTONIC, microseconds */
    bool timed_out;          /* a wait ran out while the heartbeat was pending */

    /* The control plane's own. */
    bool reported;        /* logged as stuck, and not yet as back */
    uint64_t logged_usec; /* when it was last logged as stuck */
};

struct workers {
    struct worker *workers;
    size_t count;
};

static struct timespec monotonic_deadline(uint64_t usec)
{
    return (struct timespec){.tv_sec = (time_t)(usec / 1000000),
                             .tv_nsec = (long)(usec % 1000000) * 1000};
}

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
        task->state = TASK_RUNNING;
        /* Tasks run unlocked: they may take long and may log. */
        pthread_mutex_unlock(&worker->lock);
        int result = task->function(worker->loop, task->argument);
        pthread_mutex_lock(&worker->lock);
        if (task->abandoned) {
            /* Its caller gave up on it: what the result holds goes here, on this thread,
             * unlocked (it may call plugin code). */
            pthread_mutex_unlock(&worker->lock);
            if (task->abandon != NULL)
                task->abandon(task->argument);
            free(task->argument);
            free(task);
            pthread_mutex_lock(&worker->lock);
            continue;
        }
        task->result = result;
        task->state = TASK_DONE;
    }
    /* Back in the event loop: whatever the control plane asked is answered. */
    worker->heartbeat_pending = false;
    worker->timed_out = false;
    pthread_cond_broadcast(&worker->finished);
    if (worker->stopping)
        sd_event_exit(vu_loop_event(worker->loop), 0);
    pthread_mutex_unlock(&worker->lock);
    return 0;
}

static void *worker_main(void *argument)
{
    struct worker *worker = argument;
    int ret;

    vu_device_track_callbacks(&worker->tracker);
    ret = vu_loop_run(worker->loop);
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

static int worker_init(struct worker *worker, struct workers *owner, size_t index)
{
    pthread_condattr_t attributes;
    int ret;

    worker->owner = owner;
    worker->index = index;
    worker->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (worker->wake_fd < 0)
        return -errno;
    pthread_mutex_init(&worker->lock, NULL);
    pthread_condattr_init(&attributes);
    pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC);
    pthread_cond_init(&worker->finished, &attributes);
    pthread_condattr_destroy(&attributes);
    ret = vu_loop_new(&worker->loop);
    if (ret < 0)
        return ret;
    ret = sd_event_add_io(vu_loop_event(worker->loop), &worker->wake_source, worker->wake_fd,
                          EPOLLIN, on_wake, worker);
    if (ret < 0)
        return ret;
    /* Queued work first when the worker comes back: a device being stopped must not serve
     * its client any more. */
    ret = sd_event_source_set_priority(worker->wake_source, SD_EVENT_PRIORITY_IMPORTANT);
    if (ret < 0)
        return ret;
    if (pthread_create(&worker->thread, NULL, worker_main, worker) != 0)
        return -EAGAIN;
    worker->thread_started = true;
    return 0;
}

static void worker_fini(struct worker *worker)
{
    sd_event_source_disable_unref(worker->wake_source);
    worker->loop = vu_loop_unref(worker->loop);
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
        ret = worker_init(&workers->workers[i], workers, i);
        workers->count = i + 1;
    }
    if (ret < 0) {
        workers_stop(workers);
        return ret;
    }
    *result = workers;
    return 0;
}

/* Under the worker's lock. */
static bool is_stuck(const struct worker *worker, uint64_t now)
{
    return worker->heartbeat_pending &&
           (worker->timed_out ||
            (now >= worker->heartbeat_sent && now - worker->heartbeat_sent >= WORKERS_STUCK_USEC));
}

/* Under the worker's lock: asks the worker to answer, unless it was already asked. */
static void send_heartbeat(struct worker *worker, uint64_t now)
{
    if (worker->heartbeat_pending)
        return;
    worker->heartbeat_pending = true;
    worker->heartbeat_sent = now;
    wake(worker);
}

static void describe_stuck(struct worker *worker, uint64_t now, struct worker_stuck *stuck)
{
    uint64_t since = worker->heartbeat_sent;

    stuck->worker = worker->index;
    vu_callback_tracker_read(&worker->tracker, &stuck->state);
    if (stuck->state.callback != NULL && stuck->state.since_usec < since)
        since = stuck->state.since_usec;
    stuck->seconds = now > since ? (now - since) / 1000000 : 0;
}

/* Under the worker's lock: logs a stuck worker, at most once per interval. */
static void report_stuck(struct worker *worker, uint64_t now)
{
    struct worker_stuck stuck;

    if (worker->reported && now - worker->logged_usec < WORKERS_STUCK_LOG_INTERVAL_USEC)
        return;
    describe_stuck(worker, now, &stuck);
    if (stuck.state.callback != NULL)
        vu_log(VFIO_USERD_LOG_ERR, stuck.state.device,
               "stuck for %llu s in the %s callback of plugin %s: worker %zu does not answer, "
               "and the devices it hosts are reported stuck until it does",
               (unsigned long long)stuck.seconds, stuck.state.callback, stuck.state.plugin,
               worker->index);
    else
        vu_log(VFIO_USERD_LOG_ERR, NULL,
               "worker %zu has not answered for %llu s (outside plugin callbacks); the devices "
               "it hosts are reported stuck until it does",
               worker->index, (unsigned long long)stuck.seconds);
    worker->reported = true;
    worker->logged_usec = now;
}

size_t workers_stop(struct workers *workers)
{
    uint64_t deadline = vu_monotonic_usec() + WORKERS_CALL_TIMEOUT_USEC;
    size_t left = 0;

    if (workers == NULL)
        return 0;
    for (size_t i = 0; i < workers->count; i++) {
        struct worker *worker = &workers->workers[i];
        if (!worker->thread_started)
            continue;
        pthread_mutex_lock(&worker->lock);
        worker->stopping = true;
        wake(worker);
        pthread_mutex_unlock(&worker->lock);
    }
    for (size_t i = 0; i < workers->count; i++) {
        struct worker *worker = &workers->workers[i];
        bool running = worker->thread_started, stuck;

        pthread_mutex_lock(&worker->lock);
        stuck = is_stuck(worker, vu_monotonic_usec());
        pthread_mutex_unlock(&worker->lock);
        /* pthread_timedjoin_np measures against CLOCK_REALTIME: poll the end instead. A
         * worker already known to be stuck is not waited for. */
        while (running && !stuck) {
            if (pthread_tryjoin_np(worker->thread, NULL) == 0) {
                running = false;
                break;
            }
            if (vu_monotonic_usec() >= deadline)
                break;
            usleep(1000);
        }
        if (running) {
            pthread_mutex_lock(&worker->lock);
            report_stuck(worker, vu_monotonic_usec());
            pthread_mutex_unlock(&worker->lock);
            left++;
            continue;
        }
        worker->thread_started = false;
    }
    if (left > 0)
        return left; /* the stuck threads still use their workers; the process ends soon */
    for (size_t i = 0; i < workers->count; i++)
        worker_fini(&workers->workers[i]);
    free(workers->workers);
    free(workers);
    return 0;
}

size_t workers_count(const struct workers *workers)
{
    return workers->count;
}

/*
 * Under the worker's lock. Only a task into an empty queue wakes the worker: one already
 * queued did, and the worker takes every task the queue holds, under this lock, before it
 * goes back to its loop; so a burst of tasks costs it one wake-up, not one per task.
 */
static void enqueue(struct worker *worker, struct task *task)
{
    bool was_empty = worker->head == NULL;

    if (worker->tail != NULL)
        worker->tail->next = task;
    else
        worker->head = task;
    worker->tail = task;
    if (was_empty)
        wake(worker);
}

/* Under the worker's lock: takes a task that has not started out of the queue. */
static void withdraw(struct worker *worker, struct task *task)
{
    struct task **link = &worker->head, *previous = NULL;

    while (*link != task) {
        previous = *link;
        link = &(*link)->next;
    }
    *link = task->next;
    if (worker->tail == task)
        worker->tail = previous;
}

static void free_task(struct task *task)
{
    free(task->argument);
    free(task);
}

int workers_submit_sized(struct workers *workers, size_t index, const struct worker_call *call,
                         void *argument, size_t size, struct worker_task **submitted)
{
    struct worker *worker = &workers->workers[index % workers->count];
    struct task *task;
    bool stuck;

    *submitted = NULL;
    pthread_mutex_lock(&worker->lock);
    stuck = is_stuck(worker, vu_monotonic_usec());
    pthread_mutex_unlock(&worker->lock);
    if (stuck && !call->must_run) {
        if (call->abandon != NULL)
            call->abandon(argument);
        return -ETIMEDOUT;
    }

    task = calloc(1, sizeof(*task));
    if (task == NULL)
        return -ENOMEM;
    task->argument = malloc(size > 0 ? size : 1);
    if (task->argument == NULL) {
        free(task);
        return -ENOMEM;
    }
    memcpy(task->argument, argument, size);
    task->function = call->task;
    task->abandon = call->abandon;
    task->size = size;
    task->timeout_usec = call->timeout_usec > 0 && call->timeout_usec < WORKERS_CALL_TIMEOUT_USEC
                             ? call->timeout_usec
                             : WORKERS_CALL_TIMEOUT_USEC;
    task->must_run = call->must_run;
    task->worker = worker;

    pthread_mutex_lock(&worker->lock);
    if (stuck) {
        /* A task that must run waits in the queue for the stuck worker, unwatched. */
        task->abandoned = true;
        enqueue(worker, task);
        pthread_mutex_unlock(&worker->lock);
        return -ETIMEDOUT;
    }
    enqueue(worker, task);
    pthread_mutex_unlock(&worker->lock);
    *submitted = (struct worker_task *)task;
    return 0;
}

int workers_wait(struct worker_task *submitted, void *argument)
{
    struct task *task = (struct task *)submitted;
    struct worker *worker = task->worker;
    uint64_t now = vu_monotonic_usec();
    /* From now, not from the submission: a task queued behind others gets as long as it
     * would have had, called on its own after them. */
    struct timespec deadline = monotonic_deadline(now + task->timeout_usec);
    bool withdrawn;
    int ret;

    pthread_mutex_lock(&worker->lock);
    /* A worker found stuck meanwhile (a wait for an earlier task ran out) is not waited for
     * again, as a call would not be. */
    while (task->state != TASK_DONE && !is_stuck(worker, now)) {
        if (pthread_cond_timedwait(&worker->finished, &worker->lock, &deadline) == ETIMEDOUT &&
            task->state != TASK_DONE)
            break;
    }
    if (task->state == TASK_DONE) {
        memcpy(argument, task->argument, task->size);
        ret = task->result;
        free_task(task);
        pthread_mutex_unlock(&worker->lock);
        return ret;
    }

    /* No answer in time. */
    withdrawn = task->state == TASK_QUEUED && !task->must_run;
    if (withdrawn)
        withdraw(worker, task);
    else
        task->abandoned = true; /* the worker releases it once it has run */
    send_heartbeat(worker, now);
    /* A full wait in vain makes the worker stuck; a shorter one only asks it to answer. */
    if (task->timeout_usec >= WORKERS_STUCK_USEC) {
        worker->timed_out = true;
        report_stuck(worker, vu_monotonic_usec());
    }
    pthread_mutex_unlock(&worker->lock);
    if (withdrawn) {
        /* Withdrawn, so never run: released here. */
        if (task->abandon != NULL)
            task->abandon(task->argument);
        free_task(task);
    }
    return -ETIMEDOUT;
}

int workers_call_sized(struct workers *workers, size_t index, const struct worker_call *call,
                       void *argument, size_t size)
{
    struct worker_task *task;
    int ret = workers_submit_sized(workers, index, call, argument, size, &task);

    return ret < 0 ? ret : workers_wait(task, argument);
}

bool workers_stuck(struct workers *workers, size_t index, struct worker_stuck *stuck)
{
    struct worker *worker = &workers->workers[index % workers->count];
    uint64_t now = vu_monotonic_usec();
    bool result;

    pthread_mutex_lock(&worker->lock);
    result = is_stuck(worker, now);
    if (result && stuck != NULL)
        describe_stuck(worker, now, stuck);
    pthread_mutex_unlock(&worker->lock);
    return result;
}

bool workers_heartbeat(struct workers *workers)
{
    uint64_t now = vu_monotonic_usec();
    bool recovered = false;

    for (size_t i = 0; i < workers->count; i++) {
        struct worker *worker = &workers->workers[i];

        pthread_mutex_lock(&worker->lock);
        if (is_stuck(worker, now)) {
            report_stuck(worker, now);
        } else if (!worker->heartbeat_pending && worker->reported) {
            vu_log(VFIO_USERD_LOG_NOTICE, NULL, "worker %zu answers again", worker->index);
            worker->reported = false;
            recovered = true;
        }
        send_heartbeat(worker, now);
        pthread_mutex_unlock(&worker->lock);
    }
    return recovered;
}

size_t workers_probe(struct workers *workers, uint64_t timeout_usec)
{
    uint64_t now = vu_monotonic_usec();
    struct timespec deadline = monotonic_deadline(now + timeout_usec);
    size_t stuck = 0;

    for (size_t i = 0; i < workers->count; i++) {
        struct worker *worker = &workers->workers[i];
        pthread_mutex_lock(&worker->lock);
        if (!is_stuck(worker, now))
            send_heartbeat(worker, now);
        pthread_mutex_unlock(&worker->lock);
    }
    for (size_t i = 0; i < workers->count; i++) {
        struct worker *worker = &workers->workers[i];

        pthread_mutex_lock(&worker->lock);
        while (worker->heartbeat_pending && !is_stuck(worker, now) &&
               pthread_cond_timedwait(&worker->finished, &worker->lock, &deadline) != ETIMEDOUT)
            ;
        if (worker->heartbeat_pending) {
            worker->timed_out = true;
            report_stuck(worker, vu_monotonic_usec());
            stuck++;
        }
        pthread_mutex_unlock(&worker->lock);
    }
    return stuck;
}
