/*
 * Logging for the protocol core. Lines go to a replaceable sink; the default writes
 * "<PRIORITY>device: message" to stderr, which the journal files at the right level when
 * the daemon runs under systemd. The daemon may install a sink that adds structured fields.
 */
#ifndef VU_LOG_H
#define VU_LOG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>

#include <vfio-userd/plugin.h>

typedef void (*vu_log_sink_fn)(enum vfio_userd_log_level level, const char *device,
                               const char *message);

/*
 * CLOCK_MONOTONIC in microseconds: the one clock for deadlines, rate limits and "how long
 * has this taken", which no clock adjustment moves. Every part of the daemon includes this
 * header, so it lives here rather than in a header of its own.
 */
uint64_t vu_monotonic_usec(void);

/* Lines above `level` (less important) are dropped. Default: VFIO_USERD_LOG_INFO. */
void vu_log_set_level(enum vfio_userd_log_level level);
enum vfio_userd_log_level vu_log_get_level(void);

/* NULL restores the stderr sink. Set before any thread logs. */
void vu_log_set_sink(vu_log_sink_fn sink);

/* `device` may be NULL for messages that are not about one device. */
__attribute__((format(printf, 3, 4))) void vu_log(enum vfio_userd_log_level level,
                                                  const char *device, const char *format, ...);
__attribute__((format(printf, 3, 0))) void
vu_log_va(enum vfio_userd_log_level level, const char *device, const char *format, va_list args);

/*
 * A rate limit for a line a remote party can make us write again and again (a client that
 * reconnects in a loop, a descriptor shortage it causes): at most `burst` lines per
 * `interval_usec`; the rest are counted, and the first line let through afterwards says
 * how many were left out. One limiter serves one thread (an endpoint's).
 */
struct vu_log_ratelimit {
    uint64_t interval_usec;
    unsigned burst;
    uint64_t begin_usec; /* of the current interval */
    unsigned printed;    /* lines let through in it */
    unsigned suppressed; /* lines left out since the last one let through */
};

#define VU_LOG_RATELIMIT_INIT(interval, lines)                                                     \
    {                                                                                              \
        .interval_usec = (interval), .burst = (lines)                                              \
    }

/* Whether to write the line now; if so, *suppressed is how many were left out before it. */
bool vu_log_ratelimit_allow(struct vu_log_ratelimit *limit, unsigned *suppressed);

/* vu_log() through `limit`, with " (N similar messages suppressed)" appended when some were. */
__attribute__((format(printf, 4, 5))) void vu_log_ratelimited(struct vu_log_ratelimit *limit,
                                                              enum vfio_userd_log_level level,
                                                              const char *device,
                                                              const char *format, ...);

#endif /* VU_LOG_H */
