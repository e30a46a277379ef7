/* log.c - structured key=value logging; see log.h. */
#include "log.h"

#include <stdarg.h>
#include <stdatomic.h>
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

void ferry_log(ferry_log_level level, const char *event, const char *fmt, ...)
{
    if ((int)level < atomic_load(&current_level))
        return;
    char raw[2048];
    char clean[4096];
    char when[FERRY_ISO8601_LEN + 1];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(raw, sizeof raw, fmt, ap);
    va_end(ap);
    ferry_log_sanitize(clean, sizeof clean, raw);
    ferry_time_iso8601(ferry_time_now(), when);
    FILE *out = atomic_load(&log_stream);
    if (out == NULL)
        out = stderr;
    unsigned idx = (unsigned)level < 4 ? (unsigned)level : 3;
    flockfile(out);
    fprintf(out, "time=%s level=%s event=%s%s%s\n", when, level_names[idx], event,
            clean[0] ? " " : "", clean);
    fflush(out);
    funlockfile(out);
}
