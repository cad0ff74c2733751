/*
 * Logging for the protocol core. Lines go to a replaceable sink; the default writes
 * "<PRIORITY>device: message" to stderr, which the journal files at the right level when
 * the daemon runs under systemd. The daemon may install a sink that adds structured fields.
 */
#ifndef VU_LOG_H
#define VU_LOG_H

#include <stdarg.h>

#include <vfio-userd/plugin.h>

typedef void (*vu_log_sink_fn)(enum vfio_userd_log_level level, const char *device,
                               const char *message);

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

#endif /* VU_LOG_H */
