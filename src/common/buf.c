/* buf.c - growable byte buffer with a cap; see buf.h. */
#include "buf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

void ferry_buf_init(ferry_buf *buf, size_t max_len)
{
    buf->data = NULL;
    buf->len = 0;
    buf->alloc = 0;
    buf->max_len = max_len;
}

void ferry_buf_cleanup(ferry_buf *buf)
{
    if (buf == NULL)
        return;
    free(buf->data);
    buf->data = NULL;
    buf->len = 0;
    buf->alloc = 0;
}

void ferry_buf_wipe(ferry_buf *buf)
{
    if (buf == NULL)
        return;
    if (buf->data != NULL)
        OPENSSL_cleanse(buf->data, buf->alloc);
    ferry_buf_cleanup(buf);
}

void ferry_buf_reset(ferry_buf *buf)
{
    buf->len = 0;
    if (buf->data != NULL)
        buf->data[0] = '\0';
}

ferry_err ferry_buf_reserve(ferry_buf *buf, size_t extra)
{
    if (extra > buf->max_len || buf->len > buf->max_len - extra)
        return FERRY_ERR_TOO_LARGE;
    size_t need = buf->len + extra + 1;
    if (need <= buf->alloc)
        return FERRY_OK;
    size_t alloc = buf->alloc ? buf->alloc : 64;
    while (alloc < need)
        alloc = alloc > SIZE_MAX / 2 ? need : alloc * 2;
    /* Never allocate much beyond what the cap can ever use. */
    if (alloc > buf->max_len + 1)
        alloc = buf->max_len + 1;
    char *data = realloc(buf->data, alloc);
    if (data == NULL)
        return FERRY_ERR_NOMEM;
    if (buf->data == NULL)
        data[0] = '\0';
    buf->data = data;
    buf->alloc = alloc;
    return FERRY_OK;
}

ferry_err ferry_buf_append(ferry_buf *buf, const void *data, size_t len)
{
    ferry_err err = ferry_buf_reserve(buf, len);
    if (err)
        return err;
    if (len > 0)
        memcpy(buf->data + buf->len, data, len);
    buf->len += len;
    buf->data[buf->len] = '\0';
    return FERRY_OK;
}

ferry_err ferry_buf_append_str(ferry_buf *buf, const char *s)
{
    return ferry_buf_append(buf, s, strlen(s));
}

ferry_err ferry_buf_append_byte(ferry_buf *buf, char c)
{
    return ferry_buf_append(buf, &c, 1);
}

ferry_err ferry_buf_vappendf(ferry_buf *buf, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n < 0)
        return FERRY_ERR_INVALID;
    ferry_err err = ferry_buf_reserve(buf, (size_t)n);
    if (err)
        return err;
    vsnprintf(buf->data + buf->len, (size_t)n + 1, fmt, ap);
    buf->len += (size_t)n;
    return FERRY_OK;
}

ferry_err ferry_buf_appendf(ferry_buf *buf, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    ferry_err err = ferry_buf_vappendf(buf, fmt, ap);
    va_end(ap);
    return err;
}

char *ferry_buf_detach(ferry_buf *buf)
{
    char *data = buf->data;
    if (data == NULL)
        data = calloc(1, 1);
    buf->data = NULL;
    buf->len = 0;
    buf->alloc = 0;
    return data;
}
