/*
 * buf.h - a growable byte buffer with a hard cap.
 *
 * Every buffer built from outside input has a cap: appending past it fails
 * with FERRY_ERR_TOO_LARGE and leaves the buffer as it was. The contents are
 * always NUL-terminated (the NUL is not counted in len and does not count
 * against the cap), so text can be passed to C string functions directly.
 *
 * Ownership: ferry_buf_init() makes an empty buffer that owns no memory;
 * ferry_buf_cleanup() frees what it grew and is safe to call twice.
 */
#ifndef FERRY_COMMON_BUF_H
#define FERRY_COMMON_BUF_H

#include <stdarg.h>
#include <stddef.h>

#include "ferry/ferry_error.h"

typedef struct ferry_buf {
    char *data;     /* NULL until the first append */
    size_t len;     /* bytes in use, excluding the trailing NUL */
    size_t alloc;   /* bytes allocated, including room for the NUL */
    size_t max_len; /* cap on len */
} ferry_buf;

void ferry_buf_init(ferry_buf *buf, size_t max_len);
void ferry_buf_cleanup(ferry_buf *buf);
/* Empties the buffer but keeps its memory for reuse. */
void ferry_buf_reset(ferry_buf *buf);
/* Like cleanup, but overwrites the memory first: for buffers that held secrets. */
void ferry_buf_wipe(ferry_buf *buf);

__attribute__((warn_unused_result)) ferry_err ferry_buf_reserve(ferry_buf *buf, size_t extra);
__attribute__((warn_unused_result)) ferry_err ferry_buf_append(ferry_buf *buf, const void *data,
                                                               size_t len);
__attribute__((warn_unused_result)) ferry_err ferry_buf_append_str(ferry_buf *buf, const char *s);
__attribute__((warn_unused_result)) ferry_err ferry_buf_append_byte(ferry_buf *buf, char c);
__attribute__((warn_unused_result, format(printf, 2, 3))) ferry_err
ferry_buf_appendf(ferry_buf *buf, const char *fmt, ...);
__attribute__((warn_unused_result, format(printf, 2, 0))) ferry_err
ferry_buf_vappendf(ferry_buf *buf, const char *fmt, va_list ap);

/* Hands the data to the caller (who frees it) and leaves the buffer empty.
 * Returns an allocated empty string for a buffer that never grew; NULL only
 * when that allocation fails. */
char *ferry_buf_detach(ferry_buf *buf);

/* The contents as a C string; "" for a buffer that never grew. */
static inline const char *ferry_buf_str(const ferry_buf *buf)
{
    return buf->data ? buf->data : "";
}

#endif
