/*
 * log.h - structured logging to stderr.
 *
 * Each record is one line of key=value pairs:
 *   time=2026-11-25T12:45:00Z level=info event=grant.issued device=dev-a grant=g_…
 * The caller's text is sanitised before it is written: control and non-ASCII
 * bytes become \xNN (a device-supplied name cannot forge log lines), and the
 * value of any X-Amz-Signature or Signature parameter is replaced by
 * "REDACTED", so a pre-signed URL can be logged without its secret part.
 * Never pass keys or passwords to the logger at all.
 *
 * Thread-safe: each record is written with a single call under the stream
 * lock (several records at once while the thread holds them, below).
 */
#ifndef FERRY_COMMON_LOG_H
#define FERRY_COMMON_LOG_H

#include <stdio.h>

#include "ferry/ferry_error.h"

typedef enum ferry_log_level {
    FERRY_LOG_DEBUG = 0,
    FERRY_LOG_INFO,
    FERRY_LOG_WARN,
    FERRY_LOG_ERROR,
} ferry_log_level;

void ferry_log_set_level(ferry_log_level level);
ferry_log_level ferry_log_get_level(void);
/* Where records go; NULL restores stderr. */
void ferry_log_set_stream(FILE *stream);
/* "debug", "info", "warn", "error". */
__attribute__((warn_unused_result)) ferry_err ferry_log_level_parse(const char *s,
                                                                    ferry_log_level *out);

__attribute__((format(printf, 3, 4))) void ferry_log(ferry_log_level level, const char *event,
                                                     const char *fmt, ...);

/*
 * Holding: between ferry_log_hold() and ferry_log_release(), the records
 * of the calling thread are collected (up to 64 KiB, written early when
 * full) and written together at the release, with one write instead of
 * one per record. For a loop that logs one record per item (ferryd's
 * grant.issued per committed grant). Holds nest; only the outermost
 * release writes. Records of other threads are not affected, and a held
 * record can appear after a later one of another thread, so hold only for
 * a short stretch of work.
 */
void ferry_log_hold(void);
void ferry_log_release(void);

/* Sanitises src into dst (always NUL-terminated, truncated to fit) as the
 * logger does; exposed for tests and for callers that build log text. */
void ferry_log_sanitize(char *dst, size_t dst_size, const char *src);

#define FERRY_LOG_DEBUG_(event, ...)                                                               \
    do {                                                                                           \
        if (ferry_log_get_level() <= FERRY_LOG_DEBUG)                                              \
            ferry_log(FERRY_LOG_DEBUG, event, __VA_ARGS__);                                        \
    } while (0)
#define log_debug(event, ...) FERRY_LOG_DEBUG_(event, __VA_ARGS__)
#define log_info(event, ...)  ferry_log(FERRY_LOG_INFO, event, __VA_ARGS__)
#define log_warn(event, ...)  ferry_log(FERRY_LOG_WARN, event, __VA_ARGS__)
#define log_error(event, ...) ferry_log(FERRY_LOG_ERROR, event, __VA_ARGS__)

#endif
