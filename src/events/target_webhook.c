/*
 * target_webhook.c - the HTTPS webhook target (libcurl).
 *
 * One POST per event, the body signed with HMAC-SHA256 under a shared
 * secret so the receiver can tell the event came from this ferryd:
 *   X-Ferry-Signature: sha256=<64 lower-case hex digits>
 * computed over the exact body bytes. The body carries the event id and
 * time, and receivers deduplicate on X-Ferry-Event-Id, which is what makes
 * a replayed request harmless.
 *
 * Invariants: TLS is always verified (peer and host name) against the
 * configured CA file; only https:// is spoken; redirects are not followed
 * (a 3xx is a configuration error, not something to chase); the response
 * body is read into a small capped buffer and only its start is kept for
 * the log. The secret lives in one heap copy, wiped on free. The curl easy
 * handle is reused so a busy target keeps its TLS connection.
 */
#include "events_target_int.h"

#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "common/log.h"

#define WEBHOOK_MAX_SECRET_LEN 1024
#define WEBHOOK_MAX_URL_LEN    2048
#define WEBHOOK_BODY_KEEP      160 /* bytes of a response body kept for the log */

typedef struct webhook_target {
    events_target base;
    char *url;
    char *cafile;
    unsigned char *secret;
    size_t secret_len;
    int64_t connect_timeout_ms;
    CURL *curl;
} webhook_target;

typedef struct response_sink {
    char text[WEBHOOK_BODY_KEEP + 1];
    size_t len;
} response_sink;

ferry_err events_webhook_signature(const unsigned char *secret, size_t secret_len, const void *body,
                                   size_t len, char out[7 + 64 + 1])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int mac_len = 0;
    if (secret == NULL || secret_len == 0 || secret_len > WEBHOOK_MAX_SECRET_LEN ||
        (body == NULL && len > 0))
        return FERRY_ERR_INVALID;
    if (HMAC(EVP_sha256(), secret, (int)secret_len, body != NULL ? body : "", len, mac, &mac_len) ==
            NULL ||
        mac_len != 32)
        return FERRY_ERR_CRYPTO;
    memcpy(out, "sha256=", 7);
    for (unsigned int i = 0; i < 32; i++) {
        out[7 + 2 * i] = hex[mac[i] >> 4];
        out[7 + 2 * i + 1] = hex[mac[i] & 15];
    }
    out[7 + 64] = '\0';
    OPENSSL_cleanse(mac, sizeof mac);
    return FERRY_OK;
}

/* Keeps the start of the body for the log, discards the rest (but consumes
 * it, so the connection can be reused). */
static size_t sink_write(char *data, size_t size, size_t nmemb, void *ctx)
{
    response_sink *sink = ctx;
    size_t n = size * nmemb;
    size_t room = WEBHOOK_BODY_KEEP - sink->len;
    size_t take = n < room ? n : room;
    memcpy(sink->text + sink->len, data, take);
    sink->len += take;
    sink->text[sink->len] = '\0';
    return n;
}

static events_outcome classify_status(long status)
{
    if (status >= 200 && status <= 299)
        return EVENTS_DELIVERED;
    /* S3-style receivers answer 5xx (or 429 / 408) when they want the
     * sender to come back later; any other answer will not change by
     * asking again. */
    if (status == 408 || status == 429 || status >= 500 || status < 200)
        return EVENTS_RETRY_LATER;
    return EVENTS_FAILED;
}

static ferry_err webhook_deliver(events_target *target, const char *event_id, const char *json,
                                 size_t len, int64_t timeout_ms, events_delivery *out)
{
    webhook_target *w = (webhook_target *)target;
    ferry_err result = FERRY_OK;
    struct curl_slist *headers = NULL;
    char signature[7 + 64 + 1];
    char line[EVENTS_MAX_FIELD_LEN + 64];
    response_sink sink = {.len = 0};

    /* The event id goes into a header: refuse anything that could split it. */
    for (const char *p = event_id; *p != '\0'; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            return FERRY_ERR_INVALID;
    result = events_webhook_signature(w->secret, w->secret_len, json, len, signature);
    if (result != FERRY_OK)
        goto out;
    const char *fixed[] = {"Content-Type: application/json", "Expect:", "User-Agent: ferryd"};
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) {
        struct curl_slist *next = curl_slist_append(headers, fixed[i]);
        if (next == NULL) {
            result = FERRY_ERR_NOMEM;
            goto out;
        }
        headers = next;
    }
    snprintf(line, sizeof line, "X-Ferry-Event-Id: %s", event_id);
    struct curl_slist *next = curl_slist_append(headers, line);
    if (next != NULL) {
        headers = next;
        snprintf(line, sizeof line, "X-Ferry-Signature: %s", signature);
        next = curl_slist_append(headers, line);
    }
    if (next == NULL) {
        result = FERRY_ERR_NOMEM;
        goto out;
    }
    headers = next;

    CURL *c = w->curl;
    int64_t connect_ms = w->connect_timeout_ms < timeout_ms ? w->connect_timeout_ms : timeout_ms;
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, json);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)connect_ms);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, sink_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &sink);
    CURLcode rc = curl_easy_perform(c);
    /* The slist is freed below: make sure the handle forgets it. */
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, NULL);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, NULL);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, NULL);
    if (rc != CURLE_OK) {
        /* Refused, unreachable, timed out, TLS failed: all may pass (a
         * receiver restarting, a certificate being renewed). The retry
         * limit turns a lasting one into a dead letter. */
        out->outcome = EVENTS_RETRY_LATER;
        events_delivery_detail(out, "%s", curl_easy_strerror(rc));
        goto out;
    }
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    out->outcome = classify_status(status);
    events_delivery_detail(out, "HTTP %ld", status);
    if (out->outcome != EVENTS_DELIVERED)
        log_warn("events.webhook_refused", "target=%s event=%s status=%ld body=\"%s\"",
                 target->name, event_id, status, sink.text);
out:
    curl_slist_free_all(headers);
    return result;
}

static void webhook_destroy(events_target *target)
{
    webhook_target *w = (webhook_target *)target;
    if (w->curl != NULL)
        curl_easy_cleanup(w->curl);
    if (w->secret != NULL) {
        OPENSSL_cleanse(w->secret, w->secret_len);
        free(w->secret);
    }
    free(w->url);
    free(w->cafile);
    free(w);
}

static const events_target_ops webhook_ops = {
    .kind = "webhook",
    .deliver = webhook_deliver,
    .destroy = webhook_destroy,
};

ferry_err events_webhook_new(const events_webhook_config *config, events_target **out)
{
    ferry_err result = FERRY_OK;
    webhook_target *w = NULL;
    if (config == NULL || config->url == NULL || config->secret == NULL ||
        config->secret_len == 0 || config->secret_len > WEBHOOK_MAX_SECRET_LEN ||
        strnlen(config->url, WEBHOOK_MAX_URL_LEN + 1) > WEBHOOK_MAX_URL_LEN ||
        strncmp(config->url, "https://", 8) != 0 || config->connect_timeout_ms < 0)
        return FERRY_ERR_INVALID;
    /* Thread-safe since curl 7.84; a no-op after the first call. */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return FERRY_ERR_INTERNAL;
    w = calloc(1, sizeof *w);
    if (w == NULL)
        return FERRY_ERR_NOMEM;
    result = events_target_base_init(&w->base, &webhook_ops, config->name);
    if (result != FERRY_OK)
        goto out;
    w->url = strdup(config->url);
    w->cafile = config->cafile ? strdup(config->cafile) : NULL;
    w->secret = malloc(config->secret_len);
    w->curl = curl_easy_init();
    if (w->url == NULL || (config->cafile != NULL && w->cafile == NULL) || w->secret == NULL ||
        w->curl == NULL) {
        result = FERRY_ERR_NOMEM;
        goto out;
    }
    memcpy(w->secret, config->secret, config->secret_len);
    w->secret_len = config->secret_len;
    w->connect_timeout_ms = config->connect_timeout_ms > 0 ? config->connect_timeout_ms : 5000;

    CURL *c = w->curl;
    CURLcode rc = curl_easy_setopt(c, CURLOPT_URL, w->url);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "https");
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "https");
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
    if (rc == CURLE_OK && w->cafile != NULL)
        rc = curl_easy_setopt(c, CURLOPT_CAINFO, w->cafile);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(c, CURLOPT_POST, 1L);
    if (rc != CURLE_OK) {
        log_error("events.webhook_setup_failed", "target=%s error=\"%s\"", w->base.name,
                  curl_easy_strerror(rc));
        result = FERRY_ERR_CONFIG;
        goto out;
    }
    *out = &w->base;
    w = NULL;
out:
    if (w != NULL) {
        char *name = w->base.name;
        webhook_destroy(&w->base);
        free(name);
    }
    return result;
}
