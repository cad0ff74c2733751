/*
 * nvme doorbells: the values a guest writes to say where its queues stand (submission
 * queue tails, completion queue heads), through BAR0 writes or, after Doorbell Buffer
 * Config (admin opcode 7Ch, OACS bit 8), through shadow doorbells in guest memory.
 *
 * BAR0 writes to the doorbell page (1000h) reach the controller in one of three ways, by the
 * `doorbells` parameter: as REGION_WRITE messages (trapped, the default), as stores into
 * that page mapped by the client (mapped: a sparse mmap area of BAR0, which the controller
 * polls with a timer, fast while queues are busy and slowly when idle), or as I/O eventfds
 * (ioeventfd: the client, or KVM for it, signals an eventfd per doorbell and the value is
 * lost, so only a driver with shadow doorbells can use them). vfio-userd-nvme(7) gives the
 * measurements behind the default.
 *
 * Shadow doorbells are the NVMe 1.3 virtualization enhancement Linux's nvme driver uses on
 * emulated controllers. The driver gives two pages of its memory: the Shadow Doorbell
 * buffer, where it stores each I/O queue's tail or head (dword 2q: submission queue q,
 * 2q + 1: completion queue q, as BAR0's doorbells are laid out with CAP.DSTRD 0), and the
 * EventIdx buffer, where the controller stores, per doorbell, the value past which it wants
 * a BAR0 write. The driver stores the new value in the shadow, then writes BAR0 only when
 * the value moved past the EventIdx since its last store (virtio's vring_need_event rule).
 * With BAR0 writes being a message to the VMM and then to this device, each one saved is a
 * round trip saved.
 *
 * What this controller does with them:
 *  - Once configured, the shadow is the truth for every I/O queue: a BAR0 write to an I/O
 *    queue's doorbell is only a wake-up, its value is not used (it may be older than the
 *    shadow, since the message travels while the guest goes on). The admin queue keeps
 *    BAR0 doorbells, as Linux never stores its admin values in the shadow.
 *  - Each pass of the queue loop reads every I/O queue's shadow tail and head. The loop runs
 *    on every BAR0 write and every completion of backend I/O or DMA, so while a queue has
 *    commands in progress the controller will look again by itself: it leaves the queue's
 *    EventIdx where it is, and the guest adds commands without writing BAR0. Once the queue
 *    has nothing left to do, the controller stores EventIdx = the tail it saw, so the next
 *    command is announced, then reads the tail once more (the guest may have stored a new
 *    tail in between, seeing the old EventIdx).
 *  - With doorbell_poll_us the controller keeps reading the shadow that long after the last
 *    command it started before it sets EventIdx (nvme_dbbuf_poll_event), so that a driver
 *    that goes on submitting never pays a BAR0 write and the device never a wake-up.
 *  - Completion queue heads are read from the shadow whenever the controller needs room;
 *    only a submission queue held back by a full completion queue asks for a BAR0 write of
 *    the head (EventIdx = the head it saw), in the same store-then-read-again way.
 *  - Values are checked as BAR0 values are: a tail beyond its queue or a head beyond the
 *    entries posted is Controller Fatal Status.
 *  - The buffers must be page aligned (Invalid Field otherwise, as the specification says)
 *    and in client memory shared with the device (DMA_MAP with a file descriptor): a client
 *    serving DMA through messages gets Invalid Field, and Linux then goes on with BAR0
 *    doorbells. On Doorbell Buffer Config, and when a queue is created afterwards, the
 *    controller writes the queues' current values into both buffers, replacing whatever an
 *    earlier controller life left there. A controller reset forgets the buffers.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nvme.h"

/* Dword of queue `q`'s doorbell in BAR0 past NVME_DOORBELLS, and in both buffers. */
static uint32_t nvme_db_index(uint32_t q, bool completion)
{
    return 2 * q + (completion ? 1 : 0);
}

/* The two buffers, translated again after a DMA unmap dropped the pointers. */
static bool nvme_dbbuf_pages(struct nvme_controller *ctrl)
{
    const uint32_t access = VFIO_USERD_DMA_READ | VFIO_USERD_DMA_WRITE;

    if (ctrl->dbbuf_shadow_page != NULL && ctrl->dbbuf_eventidx_page != NULL)
        return true;
    ctrl->dbbuf_shadow_page =
        ctrl->host->dma_translate(ctrl->device, ctrl->dbbuf_shadow, NVME_PAGE_SIZE, access);
    ctrl->dbbuf_eventidx_page =
        ctrl->host->dma_translate(ctrl->device, ctrl->dbbuf_eventidx, NVME_PAGE_SIZE, access);
    if (ctrl->dbbuf_shadow_page != NULL && ctrl->dbbuf_eventidx_page != NULL)
        return true;
    ctrl->dbbuf_enabled = false;
    nvme_fatal(ctrl, "the doorbell buffers are no longer in client memory");
    return false;
}

bool nvme_dbbuf_active(const struct nvme_controller *ctrl, uint32_t q)
{
    return ctrl->dbbuf_enabled && q != 0;
}

static uint32_t nvme_dbbuf_load(struct nvme_controller *ctrl, uint32_t index)
{
    /* Acquire: the entries the driver wrote before storing the tail are seen too. */
    return __atomic_load_n(&ctrl->dbbuf_shadow_page[index], __ATOMIC_ACQUIRE);
}

static void nvme_dbbuf_store_eventidx(struct nvme_controller *ctrl, uint32_t index, uint32_t value)
{
    __atomic_store_n(&ctrl->dbbuf_eventidx_page[index], value, __ATOMIC_RELAXED);
    /* The driver stores its value, then reads EventIdx; the controller stores EventIdx, then
     * reads the value: a full barrier on each side, so one of them sees the other. */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
}

bool nvme_sq_set_tail(struct nvme_controller *ctrl, struct nvme_sq *sq, uint32_t value)
{
    if (value >= sq->size) {
        nvme_fatal(ctrl, "submission queue tail doorbell beyond the queue");
        return false;
    }
    sq->tail = value;
    return true;
}

bool nvme_cq_set_head(struct nvme_controller *ctrl, struct nvme_cq *cq, uint32_t value)
{
    /* The head may only move over entries the controller posted. */
    if (value >= cq->size ||
        (value + cq->size - cq->head) % cq->size > (cq->tail + cq->size - cq->head) % cq->size) {
        nvme_fatal(ctrl, "completion queue head doorbell beyond the posted entries");
        return false;
    }
    cq->head = value;
    return true;
}

void nvme_dbbuf_refresh(struct nvme_controller *ctrl, struct nvme_sq *sq)
{
    struct nvme_cq *cq = &ctrl->cqs[sq->cq_id];

    if (!nvme_dbbuf_active(ctrl, sq->id) || !sq->created || !nvme_dbbuf_pages(ctrl))
        return;
    if (!nvme_sq_set_tail(ctrl, sq, nvme_dbbuf_load(ctrl, nvme_db_index(sq->id, false))))
        return;
    if (cq->created)
        nvme_cq_set_head(ctrl, cq, nvme_dbbuf_load(ctrl, nvme_db_index(cq->id, true)));
}

static bool nvme_sq_busy(const struct nvme_sq *sq)
{
    for (uint32_t i = 0; i < sq->slots; i++)
        if (sq->commands[i].stage != NVME_STAGE_IDLE || sq->commands[i].outstanding > 0)
            return true;
    return false;
}

bool nvme_dbbuf_arm(struct nvme_controller *ctrl)
{
    bool again = false;

    if (!ctrl->dbbuf_enabled || !nvme_dbbuf_pages(ctrl))
        return false;
    for (uint32_t q = 1; q <= ctrl->config.io_queues; q++) {
        struct nvme_sq *sq = &ctrl->sqs[q];
        struct nvme_cq *cq = &ctrl->cqs[sq->cq_id];
        uint32_t tail = sq->tail, head;

        if (!sq->created)
            continue;
        if (sq->head == sq->tail && !nvme_sq_busy(sq)) {
            /* Idle: the next tail the guest stores must come with a BAR0 write. */
            nvme_dbbuf_store_eventidx(ctrl, nvme_db_index(q, false), tail);
            if (nvme_dbbuf_load(ctrl, nvme_db_index(q, false)) != tail)
                again = true;
        } else if (sq->head != sq->tail && cq->created) {
            /* Entries wait: if for completion queue room, the next head must be announced
             * (room that commands in progress free comes with their completions). */
            head = cq->head;
            nvme_dbbuf_store_eventidx(ctrl, nvme_db_index(cq->id, true), head);
            if (nvme_dbbuf_load(ctrl, nvme_db_index(cq->id, true)) != head)
                again = true;
        }
    }
    return again;
}

/* Whether a shadow value moved since the queue loop took it: a new tail, or a new head of a
 * completion queue that a submission queue with entries waits on. */
static bool nvme_dbbuf_moved(struct nvme_controller *ctrl)
{
    for (uint32_t q = 1; q <= ctrl->config.io_queues; q++) {
        const struct nvme_sq *sq = &ctrl->sqs[q];
        const struct nvme_cq *cq = &ctrl->cqs[sq->cq_id];

        if (!sq->created)
            continue;
        if (nvme_dbbuf_load(ctrl, nvme_db_index(q, false)) != sq->tail)
            return true;
        if (sq->head != sq->tail && cq->created &&
            nvme_dbbuf_load(ctrl, nvme_db_index(cq->id, true)) != cq->head)
            return true;
    }
    return false;
}

static uint64_t nvme_now_ns(void)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000000000ull + (uint64_t)now.tv_nsec;
}

/* Reads the shadow doorbells until one moves or a backend completion waits (true), or
 * `deadline_ns` passes (false). */
static bool nvme_dbbuf_spin(struct nvme_controller *ctrl, uint64_t deadline_ns)
{
    for (;;) {
        /* The clock (vDSO, tens of nanoseconds) once per 32 looks at the queues. */
        for (int i = 0; i < 32; i++) {
            if (nvme_dbbuf_moved(ctrl))
                return true;
            /* Backend completions wait for the queue loop too. */
            if (ctrl->ring_ready && io_uring_cq_ready(&ctrl->ring) > 0)
                return true;
#if defined(__x86_64__) || defined(__i386__)
            __builtin_ia32_pause(); /* spare the sibling hyperthread */
#endif
        }
        if (nvme_now_ns() >= deadline_ns)
            return false;
    }
}

/*
 * doorbell_poll_us. Once the queues have nothing left, the controller would set EventIdx and
 * sleep, and the driver's next command would cost it a BAR0 write (a message) and the device
 * a wake-up on another CPU: tens of microseconds on a virtual machine, longer than a batch of
 * commands takes. Instead it keeps reading the shadow doorbells for doorbell_poll_us after the
 * last command it started, and only then sets EventIdx. The polling runs from a zero-delay
 * timer, never inside the callback that ran the queues, so the reply to a trapped doorbell
 * write goes out first; and it gives the event loop (the VMM's messages, DMA unmaps) a turn
 * every NVME_SHADOW_POLL_SLICE_US.
 */
static void nvme_dbbuf_poll_event(void *opaque)
{
    struct nvme_controller *ctrl = opaque;
    uint64_t now = nvme_now_ns();
    const uint64_t slice_end = now + NVME_SHADOW_POLL_SLICE_US * 1000ull;

    for (;;) {
        uint64_t deadline =
            ctrl->dbbuf_poll_until_ns < slice_end ? ctrl->dbbuf_poll_until_ns : slice_end;
        if (!ctrl->dbbuf_enabled || !nvme_dbbuf_pages(ctrl) || now >= deadline ||
            !nvme_dbbuf_spin(ctrl, deadline))
            break;
        /* New commands: the pass runs them and moves the window on. */
        nvme_queues_run(ctrl);
        now = nvme_now_ns();
    }
    /* The window passed (EventIdx is set now) or this slice did (the timer comes back). */
    nvme_queues_run(ctrl);
}

bool nvme_dbbuf_poll_later(struct nvme_controller *ctrl, bool started)
{
    uint64_t now;

    if (ctrl->dbbuf_poll_source == NULL || !ctrl->dbbuf_enabled)
        return false;
    now = nvme_now_ns();
    if (started)
        ctrl->dbbuf_poll_until_ns = now + ctrl->config.doorbell_poll_us * 1000ull;
    if (now >= ctrl->dbbuf_poll_until_ns)
        return false;
    ctrl->host->timer_set(ctrl->device, ctrl->dbbuf_poll_source, 0);
    return true;
}

int nvme_dbbuf_poll_setup(struct nvme_controller *ctrl)
{
    if (ctrl->config.doorbell_poll_us == 0)
        return 0;
    if (!VFIO_USERD_HOST_HAS(ctrl->host, add_timer))
        return -ENOSYS;
    return ctrl->host->add_timer(ctrl->device, VFIO_USERD_TIMER_OFF, nvme_dbbuf_poll_event, ctrl,
                                 &ctrl->dbbuf_poll_source);
}

void nvme_dbbuf_poll_teardown(struct nvme_controller *ctrl)
{
    if (ctrl->dbbuf_poll_source != NULL)
        ctrl->host->remove_source(ctrl->device, ctrl->dbbuf_poll_source);
    ctrl->dbbuf_poll_source = NULL;
}

/* Writes a queue's current value into both buffers (the shadow as the driver would). */
static void nvme_dbbuf_sync(struct nvme_controller *ctrl, uint32_t q, bool completion)
{
    uint32_t value = completion ? ctrl->cqs[q].head : ctrl->sqs[q].tail;
    bool created = completion ? ctrl->cqs[q].created : ctrl->sqs[q].created;

    if (!created)
        return;
    ctrl->dbbuf_shadow_page[nvme_db_index(q, completion)] = value;
    ctrl->dbbuf_eventidx_page[nvme_db_index(q, completion)] = value;
}

void nvme_dbbuf_queue_created(struct nvme_controller *ctrl, uint32_t q, bool completion)
{
    /* A mapped doorbell page may hold what an earlier queue left: the new queue starts at 0. */
    nvme_doorbells_clear(ctrl, q, completion);
    if (nvme_dbbuf_active(ctrl, q) && nvme_dbbuf_pages(ctrl))
        nvme_dbbuf_sync(ctrl, q, completion);
}

uint16_t nvme_dbbuf_config(struct nvme_controller *ctrl, uint64_t shadow, uint64_t eventidx)
{
    const uint32_t access = VFIO_USERD_DMA_READ | VFIO_USERD_DMA_WRITE;
    uint32_t *shadow_page, *eventidx_page;

    _Static_assert(2 * (NVME_MAX_IO_QUEUES + 1) * 4 <= NVME_PAGE_SIZE,
                   "every queue's doorbell fits in one buffer page");
    if ((shadow & (NVME_PAGE_SIZE - 1)) != 0 || (eventidx & (NVME_PAGE_SIZE - 1)) != 0 ||
        shadow == eventidx)
        return NVME_INVALID_FIELD;
    shadow_page = ctrl->host->dma_translate(ctrl->device, shadow, NVME_PAGE_SIZE, access);
    eventidx_page = ctrl->host->dma_translate(ctrl->device, eventidx, NVME_PAGE_SIZE, access);
    if (shadow_page == NULL || eventidx_page == NULL) {
        nvme_guest_log(ctrl, "Doorbell Buffer Config refused: the buffers are not in client "
                             "memory shared with the device");
        return NVME_INVALID_FIELD;
    }
    ctrl->dbbuf_shadow = shadow;
    ctrl->dbbuf_eventidx = eventidx;
    ctrl->dbbuf_shadow_page = shadow_page;
    ctrl->dbbuf_eventidx_page = eventidx_page;
    if (!ctrl->dbbuf_enabled)
        nvme_guest_info(ctrl, "shadow doorbells on: buffers at 0x%llx and 0x%llx",
                        (unsigned long long)shadow, (unsigned long long)eventidx);
    ctrl->dbbuf_enabled = true;
    for (uint32_t q = 1; q <= ctrl->config.io_queues; q++) {
        nvme_dbbuf_sync(ctrl, q, false);
        nvme_dbbuf_sync(ctrl, q, true);
    }
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    return NVME_SUCCESS;
}

void nvme_dbbuf_reset(struct nvme_controller *ctrl)
{
    if (ctrl->dbbuf_poll_source != NULL)
        ctrl->host->timer_set(ctrl->device, ctrl->dbbuf_poll_source, VFIO_USERD_TIMER_OFF);
    ctrl->dbbuf_poll_until_ns = 0;
    ctrl->dbbuf_enabled = false;
    ctrl->dbbuf_shadow = ctrl->dbbuf_eventidx = 0;
    ctrl->dbbuf_shadow_page = ctrl->dbbuf_eventidx_page = NULL;
}

void nvme_dbbuf_unmapped(struct nvme_controller *ctrl)
{
    ctrl->dbbuf_shadow_page = ctrl->dbbuf_eventidx_page = NULL;
}

/* --- Mapped doorbells ------------------------------------------------------------------ */

static void nvme_doorbells_poll(void *opaque);

int nvme_doorbells_setup(struct nvme_controller *ctrl)
{
    if (ctrl->config.doorbells != NVME_DOORBELLS_MAPPED)
        return 0;
    ctrl->doorbell_seen = calloc(2 * (ctrl->config.io_queues + 1), sizeof(uint32_t));
    if (ctrl->doorbell_seen == NULL)
        return -ENOMEM;
    return ctrl->host->add_timer(ctrl->device, VFIO_USERD_TIMER_OFF, nvme_doorbells_poll, ctrl,
                                 &ctrl->poll_source);
}

void nvme_doorbells_teardown(struct nvme_controller *ctrl)
{
    if (ctrl->poll_source != NULL)
        ctrl->host->remove_source(ctrl->device, ctrl->poll_source);
    ctrl->poll_source = NULL;
    free(ctrl->doorbell_seen);
    ctrl->doorbell_seen = NULL;
}

/* BAR0's memory, from the first time the controller runs (region_memory is a run-time
 * call). */
static uint32_t *nvme_doorbell_page(struct nvme_controller *ctrl)
{
    uint8_t *bar0;

    if (ctrl->doorbell_page == NULL) {
        bar0 = ctrl->host->region_memory(ctrl->device, VFIO_USERD_REGION_BAR0);
        if (bar0 != NULL)
            ctrl->doorbell_page = (uint32_t *)(bar0 + NVME_DOORBELLS);
    }
    return ctrl->doorbell_page;
}

void nvme_doorbells_clear(struct nvme_controller *ctrl, uint32_t q, bool completion)
{
    uint32_t *page;

    if (ctrl->config.doorbells != NVME_DOORBELLS_MAPPED ||
        (page = nvme_doorbell_page(ctrl)) == NULL)
        return;
    if (q == UINT32_MAX) {
        for (uint32_t i = 0; i < 2 * (ctrl->config.io_queues + 1); i++) {
            __atomic_store_n(&page[i], 0, __ATOMIC_RELAXED);
            ctrl->doorbell_seen[i] = 0;
        }
        return;
    }
    __atomic_store_n(&page[nvme_db_index(q, completion)], 0, __ATOMIC_RELAXED);
    ctrl->doorbell_seen[nvme_db_index(q, completion)] = 0;
}

void nvme_doorbells_trapped(struct nvme_controller *ctrl, uint32_t index, uint32_t value)
{
    uint32_t *page = nvme_doorbell_page(ctrl);

    if (page == NULL || index >= 2 * (ctrl->config.io_queues + 1))
        return;
    __atomic_store_n(&page[index], value, __ATOMIC_RELAXED);
    ctrl->doorbell_seen[index] = value;
}

void nvme_doorbells_poll_start(struct nvme_controller *ctrl)
{
    if (ctrl->poll_source == NULL)
        return;
    ctrl->poll_quiet_us = 0;
    ctrl->host->timer_set(ctrl->device, ctrl->poll_source, 0);
}

void nvme_doorbells_poll_stop(struct nvme_controller *ctrl)
{
    if (ctrl->poll_source != NULL)
        ctrl->host->timer_set(ctrl->device, ctrl->poll_source, VFIO_USERD_TIMER_OFF);
}

/* Whether any queue has entries waiting or commands in progress. */
static bool nvme_queues_busy(const struct nvme_controller *ctrl)
{
    if (ctrl->in_flight > 0)
        return true;
    for (uint32_t q = 0; q <= ctrl->config.io_queues; q++) {
        const struct nvme_sq *sq = &ctrl->sqs[q];
        if (sq->created && (sq->head != sq->tail || nvme_sq_busy(sq)))
            return true;
    }
    return false;
}

static void nvme_doorbells_poll(void *opaque)
{
    struct nvme_controller *ctrl = opaque;
    uint32_t *page = nvme_doorbell_page(ctrl);
    uint64_t started = ctrl->commands_started;
    uint64_t interval;

    if (page == NULL || (ctrl->csts & NVME_CSTS_RDY) == 0)
        return; /* polling starts again with the next enable */
    for (uint32_t q = 0; q <= ctrl->config.io_queues; q++) {
        for (int completion = 0; completion < 2; completion++) {
            uint32_t index = nvme_db_index(q, completion != 0);
            uint32_t value = __atomic_load_n(&page[index], __ATOMIC_ACQUIRE);
            bool created = completion ? ctrl->cqs[q].created : ctrl->sqs[q].created;

            if (!created || value == ctrl->doorbell_seen[index])
                continue;
            ctrl->doorbell_seen[index] = value;
            nvme_doorbell_take(ctrl, q, completion != 0, value);
        }
    }
    /* Also reads shadow doorbells, which a guest may move without a BAR0 store. */
    nvme_queues_run(ctrl);
    if (ctrl->commands_started != started || nvme_queues_busy(ctrl))
        ctrl->poll_quiet_us = 0;
    interval = ctrl->poll_quiet_us < NVME_POLL_LINGER_US ? NVME_POLL_BUSY_US : NVME_POLL_IDLE_US;
    ctrl->poll_quiet_us += interval;
    ctrl->host->timer_set(ctrl->device, ctrl->poll_source, interval);
}
