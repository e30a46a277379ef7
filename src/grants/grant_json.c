/*
 * grant_json.c - the answer writer; see grant_json.h for why it exists and
 * what it guarantees.
 */
#include "grant_json.h"

#include <stdio.h>
#include <string.h>

#include "grants_int.h"

static void put(grant_json *w, const char *s, size_t n)
{
    if (w->err == FERRY_OK)
        w->err = ferry_buf_append(w->out, s, n);
}

/* A JSON string: runs of bytes that need no escape are copied at once. */
static void put_string(grant_json *w, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)s;
    size_t n = strlen(s), run = 0;
    put(w, "\"", 1);
    for (size_t i = 0; i < n && w->err == FERRY_OK;) {
        unsigned char c = p[i];
        if (c >= 0x20 && c != '"' && c != '\\' && c < 0x80) {
            i++;
            run++;
            continue;
        }
        if (c >= 0x80) {
            uint32_t cp;
            size_t len = grant_utf8_decode(p + i, n - i, &cp);
            if (len == 0) {
                w->err = FERRY_ERR_INVALID;
                return;
            }
            i += len;
            run += len;
            continue;
        }
        put(w, (const char *)p + i - run, run);
        run = 0;
        char esc[7] = {'\\', 0};
        size_t esc_len = 2;
        switch (c) {
        case '"':
            esc[1] = '"';
            break;
        case '\\':
            esc[1] = '\\';
            break;
        case '\b':
            esc[1] = 'b';
            break;
        case '\f':
            esc[1] = 'f';
            break;
        case '\n':
            esc[1] = 'n';
            break;
        case '\r':
            esc[1] = 'r';
            break;
        case '\t':
            esc[1] = 't';
            break;
        default:
            memcpy(esc + 1, "u00", 3);
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            esc_len = 6;
        }
        put(w, esc, esc_len);
        i++;
    }
    put(w, (const char *)p + n - run, run);
    put(w, "\"", 1);
}

/* The separator and the key of the next member. */
static void put_key(grant_json *w, const char *key)
{
    if (w->depth == 0 && w->err == FERRY_OK)
        w->err = FERRY_ERR_INVALID; /* nothing open */
    if (w->err != FERRY_OK)
        return;
    if (!w->first[w->depth])
        put(w, ",", 1);
    w->first[w->depth] = false;
    put_string(w, key);
    put(w, ":", 1);
}

void grant_json_begin(grant_json *w, ferry_buf *out)
{
    memset(w, 0, sizeof *w);
    w->out = out;
    w->depth = 1;
    w->first[1] = true;
    put(w, "{", 1);
}

void grant_json_string(grant_json *w, const char *key, const char *value)
{
    put_key(w, key);
    if (w->err == FERRY_OK)
        put_string(w, value);
}

void grant_json_string_or_null(grant_json *w, const char *key, const char *value)
{
    if (value != NULL) {
        grant_json_string(w, key, value);
        return;
    }
    put_key(w, key);
    put(w, "null", 4);
}

void grant_json_uint(grant_json *w, const char *key, uint64_t value)
{
    char digits[24];
    int n = snprintf(digits, sizeof digits, "%llu", (unsigned long long)value);
    put_key(w, key);
    put(w, digits, (size_t)n);
}

void grant_json_object(grant_json *w, const char *key)
{
    put_key(w, key);
    if (w->err == FERRY_OK && w->depth == GRANT_JSON_DEPTH_MAX)
        w->err = FERRY_ERR_RANGE;
    if (w->err != FERRY_OK)
        return;
    put(w, "{", 1);
    w->first[++w->depth] = true;
}

void grant_json_end(grant_json *w)
{
    if (w->err == FERRY_OK && w->depth == 0)
        w->err = FERRY_ERR_INVALID;
    if (w->err != FERRY_OK)
        return;
    put(w, "}", 1);
    w->depth--;
}

ferry_err grant_json_finish(grant_json *w)
{
    while (w->err == FERRY_OK && w->depth > 0)
        grant_json_end(w);
    return w->err;
}
