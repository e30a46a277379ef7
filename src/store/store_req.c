/*
 * store_req.c - see store_req.h. Pure functions over untrusted bytes; every
 * loop is bounded by the input's length and every output by its capacity.
 */
#include "common/timefmt.h"
#include "store_req.h"

#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "grants/grants.h"

ferry_err store_pct_decode(const char *src, size_t len, char *dst, size_t dst_size, size_t *out_len)
{
    size_t n = 0;
    if (dst_size == 0)
        return FERRY_ERR_TOO_LARGE;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)src[i];
        if (c == '%') {
            if (i + 2 >= len)
                return FERRY_ERR_INVALID;
            int hi = OPENSSL_hexchar2int((unsigned char)src[i + 1]),
                lo = OPENSSL_hexchar2int((unsigned char)src[i + 2]);
            if (hi < 0 || lo < 0)
                return FERRY_ERR_INVALID;
            c = (unsigned char)(hi * 16 + lo);
            i += 2;
        }
        if (n + 1 >= dst_size)
            return FERRY_ERR_TOO_LARGE;
        dst[n++] = (char)c;
    }
    dst[n] = '\0';
    *out_len = n;
    return FERRY_OK;
}

/* Length of the valid UTF-8 sequence at s[0..len), or 0 if invalid
 * (overlong forms, surrogates and code points over U+10FFFF refused). */
static size_t utf8_seq(const unsigned char *s, size_t len)
{
    unsigned char c = s[0];
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        return (len >= 2 && (s[1] & 0xC0) == 0x80) ? 2 : 0;
    if (c >= 0xE0 && c <= 0xEF) {
        if (len < 3 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80)
            return 0;
        if (c == 0xE0 && s[1] < 0xA0)
            return 0; /* overlong */
        if (c == 0xED && s[1] >= 0xA0)
            return 0; /* surrogate */
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if (len < 4 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80 || (s[3] & 0xC0) != 0x80)
            return 0;
        if (c == 0xF0 && s[1] < 0x90)
            return 0;
        if (c == 0xF4 && s[1] >= 0x90)
            return 0;
        return 4;
    }
    return 0;
}

bool store_key_check(const char *key, size_t len)
{
    const unsigned char *s = (const unsigned char *)key;
    if (len == 0 || len > STORE_KEY_MAX)
        return false;
    for (size_t i = 0; i < len;) {
        if (s[i] < 0x20 || s[i] == 0x7F)
            return false;
        size_t n = utf8_seq(s + i, len - i);
        if (n == 0)
            return false;
        i += n;
    }
    return true;
}

/* The sub-resources of the S3 API (the signature V2 list and the newer
 * ones), sorted, less "location". */
static const char *const subresources[] = {
    "accelerate",
    "acl",
    "analytics",
    "attributes",
    "cors",
    "delete",
    "encryption",
    "intelligent-tiering",
    "inventory",
    "legal-hold",
    "lifecycle",
    "logging",
    "metadataTable",
    "metrics",
    "notification",
    "object-lock",
    "ownershipControls",
    "partNumber",
    "policy",
    "policyStatus",
    "publicAccessBlock",
    "replication",
    "requestPayment",
    "restore",
    "retention",
    "select",
    "session",
    "tagging",
    "torrent",
    "uploadId",
    "uploads",
    "versionId",
    "versioning",
    "versions",
    "website",
};

bool store_query_subresource(const char *query, size_t len, char *name, size_t name_size)
{
    size_t i = 0;
    if (query == NULL || name == NULL || name_size == 0)
        return false;
    while (i < len) {
        size_t end = i;
        while (end < len && query[end] != '&')
            end++;
        size_t n_end = i;
        while (n_end < end && query[n_end] != '=')
            n_end++;
        /* No sub-resource name is longer than 32 bytes, escaped or not
         * (three bytes an escaped character). */
        char dec[32 * 3 + 1];
        size_t dlen = 0;
        if (n_end - i <= 32 * 3 &&
            store_pct_decode(query + i, n_end - i, dec, sizeof dec, &dlen) == FERRY_OK &&
            dlen == strlen(dec)) {
            for (size_t k = 0; k < sizeof subresources / sizeof subresources[0]; k++) {
                if (strcmp(dec, subresources[k]) == 0) {
                    snprintf(name, name_size, "%s", dec);
                    return true;
                }
            }
        }
        i = end + 1;
    }
    return false;
}

/* S3 bucket names: 3..63 of a-z 0-9 . - (the store serves one; anything
 * else is refused before it is compared). */
static bool bucket_ok(const char *b, size_t len)
{
    if (len < 1 || len > STORE_BUCKET_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = b[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-' ||
              c == '_' || (c >= 'A' && c <= 'Z')))
            return false;
    }
    return true;
}

store_path_result store_parse_path(const char *raw, size_t raw_len, store_target *out)
{
    store_target t;
    const char *slash;
    size_t blen;
    if (raw == NULL || raw_len == 0 || raw[0] != '/' || raw_len > STORE_RAW_PATH_MAX)
        return STORE_PATH_MALFORMED;
    memset(&t, 0, sizeof t);
    raw++;
    raw_len--;
    slash = memchr(raw, '/', raw_len);
    blen = slash != NULL ? (size_t)(slash - raw) : raw_len;
    if (blen > 0) {
        size_t dlen = 0;
        /* Bucket names have no escapes worth decoding; decode anyway so
         * that "%69ngest" is the bucket it spells. */
        if (store_pct_decode(raw, blen, t.bucket, sizeof t.bucket, &dlen) != FERRY_OK)
            return STORE_PATH_BAD_BUCKET;
        if (!bucket_ok(t.bucket, dlen))
            return STORE_PATH_BAD_BUCKET;
    }
    if (slash != NULL) {
        const char *k = slash + 1;
        size_t klen = raw_len - blen - 1;
        ferry_err e = store_pct_decode(k, klen, t.key, sizeof t.key, &t.key_len);
        if (e == FERRY_ERR_TOO_LARGE)
            return STORE_PATH_KEY_TOO_LONG;
        if (e != FERRY_OK)
            return STORE_PATH_MALFORMED;
        if (t.key_len > 0 && !store_key_check(t.key, t.key_len))
            return STORE_PATH_BAD_KEY;
    }
    *out = t;
    return STORE_PATH_OK;
}

bool store_key_grant_id(const char *key, char *out, size_t out_size)
{
    const char *last = strrchr(key, '/');
    const char *seg = last != NULL ? last + 1 : key;
    const char *dash = strchr(seg, '-');
    size_t n;
    if (dash == NULL)
        return false;
    n = (size_t)(dash - seg);
    if (n == 0 || n + 1 > out_size)
        return false;
    memcpy(out, seg, n);
    out[n] = '\0';
    return grant_id_valid(out);
}

/* Parses a decimal uint64 from s[0..len); false on overflow or non-digit. */
static bool parse_u64(const char *s, size_t len, uint64_t *out)
{
    uint64_t v = 0;
    if (len == 0 || len > 19)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    *out = v;
    return true;
}

store_range_result store_parse_range(const char *header, uint64_t size, uint64_t *first,
                                     uint64_t *length)
{
    const char *spec, *dash;
    uint64_t a = 0, b = 0;
    size_t len;
    if (header == NULL || strncmp(header, "bytes=", 6) != 0)
        return STORE_RANGE_NONE;
    spec = header + 6;
    len = strnlen(spec, 64);
    if (len == 0 || len >= 64 || strchr(spec, ',') != NULL)
        return STORE_RANGE_NONE;
    dash = memchr(spec, '-', len);
    if (dash == NULL)
        return STORE_RANGE_NONE;
    if (dash == spec) {
        /* bytes=-N: the last N bytes. */
        if (!parse_u64(dash + 1, len - 1, &b))
            return STORE_RANGE_NONE;
        if (b == 0 || size == 0)
            return STORE_RANGE_UNSATISFIABLE;
        if (b > size)
            b = size;
        *first = size - b;
        *length = b;
        return STORE_RANGE_OK;
    }
    if (!parse_u64(spec, (size_t)(dash - spec), &a))
        return STORE_RANGE_NONE;
    if (dash[1] == '\0') {
        b = UINT64_MAX;
    } else if (!parse_u64(dash + 1, len - (size_t)(dash - spec) - 1, &b) || b < a) {
        return STORE_RANGE_NONE;
    }
    if (a >= size)
        return STORE_RANGE_UNSATISFIABLE;
    if (b >= size)
        b = size - 1;
    *first = a;
    *length = b - a + 1;
    return STORE_RANGE_OK;
}

store_copy_range_result store_parse_copy_range(const char *value, uint64_t size, uint64_t *first,
                                               uint64_t *length)
{
    const char *spec, *dash;
    uint64_t a = 0, b = 0;
    size_t len;
    if (value == NULL || strncmp(value, "bytes=", 6) != 0)
        return STORE_COPY_RANGE_MALFORMED;
    spec = value + 6;
    len = strnlen(spec, 64);
    if (len >= 64)
        return STORE_COPY_RANGE_MALFORMED;
    dash = memchr(spec, '-', len);
    /* Both ends, in order: S3 takes no suffix, open or multiple ranges here. */
    if (dash == NULL || !parse_u64(spec, (size_t)(dash - spec), &a) ||
        !parse_u64(dash + 1, len - (size_t)(dash - spec) - 1, &b) || b < a)
        return STORE_COPY_RANGE_MALFORMED;
    if (b >= size)
        return STORE_COPY_RANGE_OUTSIDE;
    *first = a;
    *length = b - a + 1;
    return STORE_COPY_RANGE_OK;
}

bool store_parse_http_date(const char *value, int64_t *out)
{
    static const char *const days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                         "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    static const int month_days[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    /* "Sun, 06 Nov 1994 08:49:37 GMT": every character checked by position. */
    static const char shape[] = "aaa, dd aaa dddd dd:dd:dd GMT";
    ferry_tm tm;
    bool day_ok = false;
    int month = 0;
    if (value == NULL || strlen(value) != sizeof shape - 1)
        return false;
    for (size_t i = 0; i < sizeof shape - 1; i++) {
        char want = shape[i], ch = value[i];
        if (want == 'd' ? (ch < '0' || ch > '9') : want == 'a' ? ch == '\0' : ch != want)
            return false;
    }
    for (size_t i = 0; i < 7; i++)
        if (memcmp(value, days[i], 3) == 0)
            day_ok = true;
    for (int i = 0; i < 12; i++)
        if (memcmp(value + 8, months[i], 3) == 0)
            month = i + 1;
    if (!day_ok || month == 0)
        return false;
#define DIGITS2(p) (((p)[0] - '0') * 10 + ((p)[1] - '0'))
    tm.day = DIGITS2(value + 5);
    tm.month = month;
    tm.year = DIGITS2(value + 12) * 100 + DIGITS2(value + 14);
    tm.hour = DIGITS2(value + 17);
    tm.minute = DIGITS2(value + 20);
    tm.second = DIGITS2(value + 23);
#undef DIGITS2
    if (tm.year < 1970 || tm.day < 1 || tm.day > month_days[month - 1] || tm.hour > 23 ||
        tm.minute > 59 || tm.second > 60)
        return false;
    if (month == 2 && tm.day == 29 &&
        !(tm.year % 4 == 0 && (tm.year % 100 != 0 || tm.year % 400 == 0)))
        return false;
    if (tm.second == 60)
        tm.second = 59; /* a leap second: the second before is close enough */
    *out = ferry_time_join(&tm);
    return true;
}

bool store_parse_part_number(const char *value, unsigned *out)
{
    uint64_t v = 0;
    if (value == NULL || !parse_u64(value, strlen(value), &v) || v < 1 || v > STORE_PART_NUMBER_MAX)
        return false;
    *out = (unsigned)v;
    return true;
}

ferry_err store_xml_escape(ferry_buf *out, const char *s, size_t len)
{
    ferry_err err = FERRY_OK;
    for (size_t i = 0; i < len && err == FERRY_OK; i++) {
        switch (s[i]) {
        case '&':
            err = ferry_buf_append_str(out, "&amp;");
            break;
        case '<':
            err = ferry_buf_append_str(out, "&lt;");
            break;
        case '>':
            err = ferry_buf_append_str(out, "&gt;");
            break;
        case '"':
            err = ferry_buf_append_str(out, "&quot;");
            break;
        case '\'':
            err = ferry_buf_append_str(out, "&apos;");
            break;
        default:
            /* Control characters cannot appear in XML 1.0 at all; callers
             * pass checked keys, but a message is never worth a broken
             * document. */
            if ((unsigned char)s[i] < 0x20 && s[i] != '\t' && s[i] != '\n')
                err = ferry_buf_append_byte(out, '?');
            else
                err = ferry_buf_append_byte(out, s[i]);
        }
    }
    return err;
}

ferry_err store_url_encode(ferry_buf *out, const char *s, size_t len)
{
    static const char hex[] = "0123456789ABCDEF";
    ferry_err err = FERRY_OK;
    for (size_t i = 0; i < len && err == FERRY_OK; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '.' || c == '_' || c == '~' || c == '/') {
            err = ferry_buf_append_byte(out, (char)c);
        } else {
            char e[3] = {'%', hex[c >> 4], hex[c & 15]};
            err = ferry_buf_append(out, e, 3);
        }
    }
    return err;
}

void store_iso_time(int64_t t, char out[STORE_ISO_TIME_LEN + 1])
{
    ferry_tm tm;
    ferry_time_split(t, &tm);
    snprintf(out, STORE_ISO_TIME_LEN + 1, "%04d-%02d-%02dT%02d:%02d:%02d.000Z", tm.year, tm.month,
             tm.day, tm.hour, tm.minute, tm.second);
}

void store_hex(const unsigned char *bytes, size_t len, char *out)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = hex[bytes[i] >> 4];
        out[2 * i + 1] = hex[bytes[i] & 15];
    }
    out[2 * len] = '\0';
}

bool store_b64_decode_exact(const char *s, unsigned char *out, size_t want)
{
    unsigned char tmp[96];
    size_t len = strnlen(s, 200);
    size_t expect_len = 4 * ((want + 2) / 3);
    int n;
    if (want > 64 || len != expect_len)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '+' || c == '/' || (c == '=' && i >= len - 2)))
            return false;
    }
    n = EVP_DecodeBlock(tmp, (const unsigned char *)s, (int)len);
    if (n < 0)
        return false;
    /* EVP_DecodeBlock counts the padding as zero bytes. */
    size_t pad = (size_t)(s[len - 1] == '=') + (size_t)(s[len - 2] == '=');
    if ((size_t)n - pad != want)
        return false;
    memcpy(out, tmp, want);
    return true;
}
