/* log.c - structured key=value logging; see log.h. */
#include "log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "timefmt.h"

static atomic_int current_level = FERRY_LOG_INFO;
static FILE *_Atomic log_stream = NULL;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void ferry_log_set_level(ferry_log_level level)
{
    atomic_store(&current_level, (int)level);
}

ferry_log_level ferry_log_get_level(void)
{
    return (ferry_log_level)atomic_load(&current_level);
}

void ferry_log_set_stream(FILE *stream)
{
    atomic_store(&log_stream, stream);
}

ferry_err ferry_log_level_parse(const char *s, ferry_log_level *out)
{
    for (size_t i = 0; i < sizeof level_names / sizeof level_names[0]; i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *out = (ferry_log_level)i;
            return FERRY_OK;
        }
    }
    return FERRY_ERR_INVALID;
}

/* Parameter names whose values are secrets that may appear inside URLs or
 * headers that get logged. Matched case-insensitively, followed by '='. */
static const char *const secret_params[] = {"X-Amz-Signature", "Signature"};

static size_t secret_prefix_len(const char *s)
{
    for (size_t i = 0; i < sizeof secret_params / sizeof secret_params[0]; i++) {
        size_t n = strlen(secret_params[i]);
        if (strncasecmp(s, secret_params[i], n) == 0 && s[n] == '=')
            return n + 1;
    }
    return 0;
}

void ferry_log_sanitize(char *dst, size_t dst_size, const char *src)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    if (dst_size == 0)
        return;
    for (const char *p = src; *p != '\0';) {
        /* A secret parameter only starts at a word boundary, so that e.g.
         * "X-Amz-Signature" is not matched as its suffix "Signature". */
        size_t secret = (p == src || p[-1] == '?' || p[-1] == '&' || p[-1] == ' ' || p[-1] == ',')
                            ? secret_prefix_len(p)
                            : 0;
        if (secret > 0) {
            const char *redacted = "REDACTED";
            if (o + secret + strlen(redacted) >= dst_size)
                break;
            memcpy(dst + o, p, secret);
            o += secret;
            memcpy(dst + o, redacted, strlen(redacted));
            o += strlen(redacted);
            p += secret;
            while (*p != '\0' && *p != '&' && *p != ' ' && *p != ',' && *p != '"')
                p++;
            continue;
        }
        unsigned char c = (unsigned char)*p;
        if (c >= 0x20 && c < 0x7f) {
            if (o + 1 >= dst_size)
                break;
            dst[o++] = (char)c;
        } else {
            if (o + 4 >= dst_size)
                break;
            dst[o++] = '\\';
            dst[o++] = 'x';
            dst[o++] = hex[c >> 4];
            dst[o++] = hex[c & 15];
        }
        p++;
    }
    dst[o] = '\0';
}

/* Records held by this thread (ferry_log_hold): written together at the
 * release, or earlier when the next one would not fit. */
#define HOLD_MAX_BYTES (64 * 1024)
static _Thread_local char *held_text;
static _Thread_local size_t held_len;
static _Thread_local unsigned hold_depth;

static FILE *log_out(void)
{
    FILE *out = atomic_load(&log_stream);
    return out != NULL ? out : stderr;
}

/* Writes len bytes of whole records with one write under the stream lock. */
static void write_records(const char *text, size_t len)
{
    FILE *out = log_out();
    flockfile(out);
    fwrite(text, 1, len, out);
    fflush(out);
    funlockfile(out);
}

static void write_held(void)
{
    if (held_len > 0)
        write_records(held_text, held_len);
    held_len = 0;
}

void ferry_log_hold(void)
{
    if (hold_depth++ == 0)
        held_text = malloc(HOLD_MAX_BYTES); /* NULL: records are written at once */
}

void ferry_log_release(void)
{
    if (hold_depth == 0 || --hold_depth > 0)
        return;
    write_held();
    free(held_text);
    held_text = NULL;
}

void ferry_log(ferry_log_level level, const char *event, const char *fmt, ...)
{
    if ((int)level < atomic_load(&current_level))
        return;
    char raw[2048];
    char clean[4096];
    char record[4096 + 256];
    char when[FERRY_ISO8601_LEN + 1];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(raw, sizeof raw, fmt, ap);
    va_end(ap);
    ferry_log_sanitize(clean, sizeof clean, raw);
    ferry_time_iso8601(ferry_time_now(), when);
    unsigned idx = (unsigned)level < 4 ? (unsigned)level : 3;
    int n = snprintf(record, sizeof record, "time=%s level=%s event=%s%s%s\n", when,
                     level_names[idx], event, clean[0] ? " " : "", clean);
    if (n < 0)
        return;
    size_t len = (size_t)n < sizeof record ? (size_t)n : sizeof record - 1;
    record[len - 1] = '\n'; /* a truncated record still ends its line */
    if (hold_depth == 0 || held_text == NULL) {
        write_records(record, len);
        return;
    }
    if (held_len + len > HOLD_MAX_BYTES)
        write_held();
    memcpy(held_text + held_len, record, len);
    held_len += len;
}
