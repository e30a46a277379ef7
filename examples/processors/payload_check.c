/*
 * payload_check.c - an example processor for Ferry's command target.
 *
 * Run by ferryd once per stored object with the S3 event notification on
 * stdin (docs/events.md), like an S3-triggered Lambda function. It
 *   1. reads the bucket and key from Records[0].s3 (the key form-decoded,
 *      exactly as code written for S3 must do), the expected size, and the
 *      SHA-256 the device declared from Records[0].ferry;
 *   2. reads the object back with a GetObject signed with SigV4 header auth
 *      (path-style URL) from the store named in the environment:
 *        FERRY_S3_ENDPOINT         http(s)://host:port
 *        FERRY_S3_ACCESS_KEY       access key id
 *        FERRY_S3_SECRET_KEY_FILE  file holding the secret key
 *        FERRY_S3_REGION           region of the signing scope
 *        FERRY_S3_CA_FILE          (optional) CA bundle for https
 *   3. streams the body through SHA-256 while keeping its first
 *      MEDIA_HEAD_MAX bytes, and checks size and digest;
 *   4. recognises WAV (duration, rate, channels), PNG and JPEG (dimensions)
 *      and prints a one-line JSON summary on stdout, which ferryd sends to
 *      the device in its `processed` message.
 * Any mismatch or error: exit status 1 and a one-line reason on stderr
 * (ferryd then retries, and dead-letters after its limit). Bad usage: 2.
 *
 * Invariants: everything read (the event, the body, the headers) is
 * bounded; the body may not be longer than the event says; the secret is
 * wiped after signing and never printed.
 */
#include <errno.h>
#include <stdarg.h>
#include <strings.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "common/buf.h"
#include "common/file.h"
#include "common/timefmt.h"
#include "media.h"
#include "sigv4.h"

#define EVENT_MAX    (256 * 1024)
#define EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

typedef struct download {
    EVP_MD_CTX *sha;
    unsigned char *head;
    size_t head_len;
    uint64_t received;
    uint64_t limit; /* the size the event announced */
    bool too_long;
} download;

/* The one-line reason on stderr that ferryd logs. */
__attribute__((format(printf, 1, 2))) static void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "payload_check: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* Form decoding, as S3 encodes keys in notifications ('+' is a space). */
static ferry_err form_decode(const char *in, ferry_buf *out)
{
    for (size_t i = 0; in[i] != '\0'; i++) {
        char c = in[i];
        if (c == '+') {
            c = ' ';
        } else if (c == '%') {
            int v = 0;
            for (int k = 1; k <= 2; k++) {
                char h = in[i + (size_t)k];
                int d = h >= '0' && h <= '9'   ? h - '0'
                        : h >= 'a' && h <= 'f' ? h - 'a' + 10
                        : h >= 'A' && h <= 'F' ? h - 'A' + 10
                                               : -1;
                if (d < 0)
                    return FERRY_ERR_INVALID;
                v = v * 16 + d;
            }
            c = (char)v;
            i += 2;
        }
        if (c == '\0')
            return FERRY_ERR_INVALID;
        ferry_err err = ferry_buf_append_byte(out, c);
        if (err != FERRY_OK)
            return err;
    }
    return FERRY_OK;
}

/* Percent-encodes a key for the URL path ('/' kept, RFC 3986 unreserved). */
static ferry_err path_encode(const char *key, ferry_buf *out)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)key; *p != '\0'; p++) {
        unsigned char c = *p;
        bool keep = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '_' || c == '.' || c == '~' || c == '/';
        ferry_err err = keep ? ferry_buf_append_byte(out, (char)c)
                             : ferry_buf_appendf(out, "%%%c%c", hex[c >> 4], hex[c & 15]);
        if (err != FERRY_OK)
            return err;
    }
    return FERRY_OK;
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *ctx)
{
    download *d = ctx;
    size_t n = size * nmemb;
    if (d->received + n > d->limit) {
        d->too_long = true;
        return 0; /* abort: the store sends more than was stored */
    }
    if (EVP_DigestUpdate(d->sha, data, n) != 1)
        return 0;
    if (d->head_len < MEDIA_HEAD_MAX) {
        size_t take = MEDIA_HEAD_MAX - d->head_len;
        take = n < take ? n : take;
        memcpy(d->head + d->head_len, data, take);
        d->head_len += take;
    }
    d->received += n;
    return n;
}

/* The secret key: the file's first line. */
static ferry_err read_secret(const char *path, ferry_buf *out)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return FERRY_ERR_IO;
    ferry_err err = ferry_read_stream(f, out);
    fclose(f);
    if (err != FERRY_OK)
        return err;
    char *nl = memchr(out->data ? out->data : "", '\n', out->len);
    if (nl != NULL) {
        out->len = (size_t)(nl - out->data);
        out->data[out->len] = '\0';
    }
    if (out->len > 0 && out->data[out->len - 1] == '\r')
        out->data[--out->len] = '\0';
    return out->len > 0 ? FERRY_OK : FERRY_ERR_INVALID;
}

/* "host[:port]" of an endpoint URL, for the signed Host header. */
static bool endpoint_host(const char *endpoint, char *out, size_t out_size, bool *https)
{
    const char *p;
    if (strncmp(endpoint, "https://", 8) == 0) {
        p = endpoint + 8;
        *https = true;
    } else if (strncmp(endpoint, "http://", 7) == 0) {
        p = endpoint + 7;
        *https = false;
    } else {
        return false;
    }
    size_t n = strcspn(p, "/?#");
    if (n == 0 || n >= out_size || p[n] == '?' || p[n] == '#' || (p[n] == '/' && p[n + 1] != '\0'))
        return false;
    memcpy(out, p, n);
    out[n] = '\0';
    return true;
}

static const char *expected_kind(const char *content_type)
{
    if (content_type == NULL)
        return NULL;
    if (strcmp(content_type, "audio/wav") == 0 || strcmp(content_type, "audio/x-wav") == 0 ||
        strcmp(content_type, "audio/wave") == 0 || strcmp(content_type, "audio/vnd.wave") == 0)
        return "wav";
    if (strcmp(content_type, "image/png") == 0)
        return "png";
    if (strcmp(content_type, "image/jpeg") == 0)
        return "jpeg";
    return NULL;
}

int main(void)
{
    int status = 1;
    json_error_t jerr;
    json_t *event = NULL, *summary = NULL;
    ferry_buf input, key, path, url, secret, authz;
    struct curl_slist *headers = NULL;
    CURL *curl = NULL;
    download d = {0};
    ferry_buf_init(&input, EVENT_MAX);
    ferry_buf_init(&key, 4096);
    ferry_buf_init(&path, 16384);
    ferry_buf_init(&url, 16384);
    ferry_buf_init(&secret, 256);
    ferry_buf_init(&authz, 4096);

    const char *endpoint = getenv("FERRY_S3_ENDPOINT");
    const char *akid = getenv("FERRY_S3_ACCESS_KEY");
    const char *secret_file = getenv("FERRY_S3_SECRET_KEY_FILE");
    const char *region = getenv("FERRY_S3_REGION");
    const char *cafile = getenv("FERRY_S3_CA_FILE");
    char host[512];
    bool https = false;
    if (endpoint == NULL || akid == NULL || secret_file == NULL || region == NULL) {
        status = 2;
        fail("FERRY_S3_ENDPOINT, FERRY_S3_ACCESS_KEY, FERRY_S3_SECRET_KEY_FILE and "
             "FERRY_S3_REGION must be set");
        goto out;
    }
    if (!endpoint_host(endpoint, host, sizeof host, &https)) {
        status = 2;
        fail("FERRY_S3_ENDPOINT is not http(s)://host[:port]: %s", endpoint);
        goto out;
    }
    if (read_secret(secret_file, &secret) != FERRY_OK) {
        status = 2;
        fail("cannot read the secret key from %s", secret_file);
        goto out;
    }

    /* The event. */
    if (ferry_read_stream(stdin, &input) != FERRY_OK) {
        fail("event on stdin unreadable or over 256 KB");
        goto out;
    }
    event = json_loadb(ferry_buf_str(&input), input.len, JSON_REJECT_DUPLICATES, &jerr);
    json_t *rec = json_array_get(json_object_get(event, "Records"), 0);
    json_t *s3 = json_object_get(rec, "s3");
    json_t *obj = json_object_get(s3, "object");
    json_t *ferry = json_object_get(rec, "ferry");
    const char *bucket = json_string_value(json_object_get(json_object_get(s3, "bucket"), "name"));
    const char *enc_key = json_string_value(json_object_get(obj, "key"));
    json_t *size_j = json_object_get(obj, "size");
    const char *want_sha = json_string_value(json_object_get(ferry, "sha256"));
    const char *content_type = json_string_value(json_object_get(ferry, "content_type"));
    const char *raw_key = json_string_value(json_object_get(ferry, "key"));
    if (bucket == NULL || enc_key == NULL || !json_is_integer(size_j) ||
        json_integer_value(size_j) < 0) {
        fail("event lacks Records[0].s3.bucket.name, .object.key or .object.size");
        goto out;
    }
    if (form_decode(enc_key, &key) != FERRY_OK || key.len == 0) {
        fail("bad object key encoding: %s", enc_key);
        goto out;
    }
    if (raw_key != NULL && strcmp(raw_key, ferry_buf_str(&key)) != 0) {
        fail("s3.object.key and ferry.key disagree: %s", enc_key);
        goto out;
    }
    uint64_t want_size = (uint64_t)json_integer_value(size_j);

    /* The signed GetObject. */
    char amz_date[FERRY_AMZ_DATETIME_LEN + 1];
    ferry_time_amz_datetime(ferry_time_now(), amz_date);
    if (ferry_buf_appendf(&path, "/%s/", bucket) != FERRY_OK ||
        path_encode(ferry_buf_str(&key), &path) != FERRY_OK ||
        ferry_buf_appendf(&url, "%s://%s%s", https ? "https" : "http", host,
                          ferry_buf_str(&path)) != FERRY_OK) {
        fail("key too long");
        goto out;
    }
    sigv4_kv h[3] = {
        {"host", host}, {"x-amz-content-sha256", EMPTY_SHA256}, {"x-amz-date", amz_date}};
    sigv4_request req = {.method = "GET",
                         .path = ferry_buf_str(&path),
                         .query = "",
                         .headers = h,
                         .n_headers = 3,
                         .payload_hash = EMPTY_SHA256};
    ferry_err err =
        sigv4_authorization(akid, ferry_buf_str(&secret), region, "s3", amz_date, &req,
                            "host;x-amz-content-sha256;x-amz-date", EMPTY_SHA256, &authz);
    ferry_buf_wipe(&secret);
    if (err != FERRY_OK) {
        fail("cannot sign the request: %s", ferry_err_str(err));
        goto out;
    }
    char line[4200];
    const char *hdr_lines[4];
    char date_line[64], sha_line[100];
    snprintf(line, sizeof line, "Authorization: %s", ferry_buf_str(&authz));
    snprintf(date_line, sizeof date_line, "x-amz-date: %s", amz_date);
    snprintf(sha_line, sizeof sha_line, "x-amz-content-sha256: %s", EMPTY_SHA256);
    hdr_lines[0] = line;
    hdr_lines[1] = date_line;
    hdr_lines[2] = sha_line;
    hdr_lines[3] = "Accept-Encoding:"; /* the bytes as stored, never transcoded */
    for (size_t i = 0; i < 4; i++) {
        struct curl_slist *next = curl_slist_append(headers, hdr_lines[i]);
        if (next == NULL) {
            fail("out of memory");
            goto out;
        }
        headers = next;
    }
    OPENSSL_cleanse(line, sizeof line);

    d.sha = EVP_MD_CTX_new();
    d.head = malloc(MEDIA_HEAD_MAX);
    d.limit = want_size;
    curl = curl_easy_init();
    if (d.sha == NULL || d.head == NULL || curl == NULL ||
        EVP_DigestInit_ex(d.sha, EVP_sha256(), NULL) != 1) {
        fail("out of memory");
        goto out;
    }
    curl_easy_setopt(curl, CURLOPT_URL, ferry_buf_str(&url));
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &d);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, 10L);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, 300L);
    curl_easy_setopt(curl, CURLOPT_FAILONERROR, 1L);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    if (cafile != NULL)
        curl_easy_setopt(curl, CURLOPT_CAINFO, cafile);
    CURLcode rc = curl_easy_perform(curl);
    if (d.too_long) {
        fail("size mismatch: the store returned more bytes than the event's size");
        goto out;
    }
    if (rc != CURLE_OK) {
        long code = 0;
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &code);
        char detail[160];
        snprintf(detail, sizeof detail, "%s (HTTP %ld)", curl_easy_strerror(rc), code);
        fail("GetObject failed: %s", detail);
        goto out;
    }
    if (d.received != want_size) {
        char detail[96];
        snprintf(detail, sizeof detail, "%llu bytes stored, event says %llu",
                 (unsigned long long)d.received, (unsigned long long)want_size);
        fail("size mismatch: %s", detail);
        goto out;
    }
    unsigned char md[32];
    unsigned int md_len = 0;
    char got_sha[65];
    if (EVP_DigestFinal_ex(d.sha, md, &md_len) != 1 || md_len != 32) {
        fail("SHA-256 failed");
        goto out;
    }
    for (int i = 0; i < 32; i++)
        snprintf(got_sha + 2 * i, 3, "%02x", md[i]);
    bool verified = false;
    if (want_sha != NULL && want_sha[0] != '\0') {
        if (strcasecmp(want_sha, got_sha) != 0) {
            fail("sha256 mismatch: stored object hashes to %s", got_sha);
            goto out;
        }
        verified = true;
    }

    /* What it is. */
    media_info info;
    const char *why = NULL;
    if (media_identify(d.head, d.head_len, d.received, &info, &why) != FERRY_OK) {
        fail("malformed payload: %s", why);
        goto out;
    }
    const char *expect = expected_kind(content_type);
    if (expect != NULL && strcmp(expect, media_kind_name(info.kind)) != 0) {
        char detail[128];
        snprintf(detail, sizeof detail, "content type %s but the bytes are %s", content_type,
                 media_kind_name(info.kind));
        fail("format mismatch: %s", detail);
        goto out;
    }
    summary = json_pack("{s:s,s:s,s:I,s:s,s:b,s:s}", "bucket", bucket, "key", ferry_buf_str(&key),
                        "size", (json_int_t)d.received, "sha256", got_sha, "sha256_verified",
                        verified, "format", media_kind_name(info.kind));
    if (summary == NULL) {
        fail("cannot build the summary");
        goto out;
    }
    json_t *eid = json_object_get(ferry, "event_id");
    if (json_is_string(eid))
        json_object_set(summary, "event_id", eid);
    if (info.kind == MEDIA_WAV) {
        json_object_set_new(summary, "sample_rate", json_integer(info.sample_rate));
        json_object_set_new(summary, "channels", json_integer(info.channels));
        json_object_set_new(summary, "bits_per_sample", json_integer(info.bits_per_sample));
        json_object_set_new(summary, "duration_s",
                            json_real((double)(int64_t)(info.duration_s * 1000.0 + 0.5) / 1000.0));
    } else if (info.kind == MEDIA_PNG || info.kind == MEDIA_JPEG) {
        json_object_set_new(summary, "width", json_integer(info.width));
        json_object_set_new(summary, "height", json_integer(info.height));
    }
    char *text = json_dumps(summary, JSON_COMPACT);
    if (text == NULL) {
        fail("cannot build the summary");
        goto out;
    }
    printf("%s\n", text);
    free(text);
    status = 0;
out:
    if (curl != NULL)
        curl_easy_cleanup(curl);
    curl_slist_free_all(headers);
    EVP_MD_CTX_free(d.sha);
    free(d.head);
    json_decref(event);
    json_decref(summary);
    ferry_buf_wipe(&secret);
    ferry_buf_wipe(&authz);
    ferry_buf_cleanup(&input);
    ferry_buf_cleanup(&key);
    ferry_buf_cleanup(&path);
    ferry_buf_cleanup(&url);
    return status;
}
