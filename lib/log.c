/*
 * Core logging: level filter and sink; see log.h.
 */
#include <stdio.h>
#include <time.h>

#include "log.h"

static enum vfio_userd_log_level log_level = VFIO_USERD_LOG_INFO;
static vu_log_sink_fn log_sink;

void vu_log_set_level(enum vfio_userd_log_level level)
{
    __atomic_store_n(&log_level, level, __ATOMIC_RELAXED);
}

enum vfio_userd_log_level vu_log_get_level(void)
{
    return __atomic_load_n(&log_level, __ATOMIC_RELAXED);
}

void vu_log_set_sink(vu_log_sink_fn sink)
{
    log_sink = sink;
}

void vu_log_va(enum vfio_userd_log_level level, const char *device, const char *format,
               va_list args)
{
    char message[1024];

    if (level > vu_log_get_level())
        return;
    vsnprintf(message, sizeof(message), format, args);
    if (log_sink != NULL) {
        log_sink(level, device, message);
        return;
    }
    /* One fprintf per line keeps lines from different threads whole. */
    if (device != NULL)
        fprintf(stderr, "<%d>%s: %s\n", (int)level, device, message);
    else
        fprintf(stderr, "<%d>%s\n", (int)level, message);
}

void vu_log(enum vfio_userd_log_level level, const char *device, const char *format, ...)
{
    va_list args;

    va_start(args, format);
    vu_log_va(level, device, format, args);
    va_end(args);
}

uint64_t vu_monotonic_usec(void)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000000 + (uint64_t)now.tv_nsec / 1000;
}

bool vu_log_ratelimit_allow(struct vu_log_ratelimit *limit, unsigned *suppressed)
{
    uint64_t now = vu_monotonic_usec();

    if (limit->begin_usec == 0 || now - limit->begin_usec >= limit->interval_usec) {
        limit->begin_usec = now;
        limit->printed = 0;
    }
    if (limit->printed >= limit->burst) {
        limit->suppressed++;
        return false;
    }
    limit->printed++;
    *suppressed = limit->suppressed;
    limit->suppressed = 0;
    return true;
}

void vu_log_ratelimited(struct vu_log_ratelimit *limit, enum vfio_userd_log_level level,
                        const char *device, const char *format, ...)
{
    char message[900];
    unsigned suppressed;
    va_list args;

    /* A line the level drops anyway uses none of the budget. */
    if (level > vu_log_get_level() || !vu_log_ratelimit_allow(limit, &suppressed))
        return;
    va_start(args, format);
    vsnprintf(message, sizeof(message), format, args);
    va_end(args);
    if (suppressed > 0)
        vu_log(level, device, "%s (%u similar messages suppressed)", message, suppressed);
    else
        vu_log(level, device, "%s", message);
}
