/*
 * sigv4_tool.c - a test driver for src/sigv4: reads one JSON request on
 * stdin, runs the signer or a verifier, writes one JSON answer on stdout.
 * Used by tests/integration/test_sigv4_boto3.py so that boto3 (the oracle)
 * and Ferry can be compared in both directions. Not installed.
 *
 * Input (all modes): {"mode": ..., "now": <epoch s>, "region": "...",
 *   "service": "s3", "keys": {"AKID": "secret", ...}}, and per mode:
 *   "verify":  "method", "url", "headers": [[name, value], ...],
 *              "payload_hash" (optional) -> sigv4_verify_request()
 *   "post":    "bucket", "fields": [[name, value], ...],
 *              "content_length" (optional) -> sigv4_verify_post()
 *   "presign": "access_key", "secret", "endpoint", "method", "path",
 *              "expires", "headers": [[n, v]], "query": [[n, v]]
 *   "form":    "access_key", "secret", "endpoint", "bucket", "key",
 *              "key_is_prefix", "expires", "length_min", "length_max",
 *              "content_type", "fields": [[n, v]]  -> sigv4_post_policy()
 * Output: {"reason": "OK", "code": ..., "status": ..., "detail": ...},
 *   {"url": ...} or {"url": ..., "fields": [[n, v], ...]}.
 * Exit status 0 when the tool ran (whatever the verdict), 1 otherwise.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "sigv4.h"

#define MAX_KV 64

static ferry_err lookup(void *ctx, const char *akid, ferry_buf *out)
{
    json_t *keys = ctx;
    json_t *secret = json_object_get(keys, akid);
    if (!json_is_string(secret))
        return FERRY_ERR_NOT_FOUND;
    return ferry_buf_append_str(out, json_string_value(secret));
}

static const char *str(const json_t *o, const char *k, const char *dflt)
{
    const json_t *v = json_object_get(o, k);
    return json_is_string(v) ? json_string_value(v) : dflt;
}

static json_int_t num(const json_t *o, const char *k, json_int_t dflt)
{
    const json_t *v = json_object_get(o, k);
    return json_is_integer(v) ? json_integer_value(v) : dflt;
}

/* [[name, value], ...] into kv (borrowing the JSON strings). */
static size_t pairs(const json_t *o, const char *k, sigv4_kv *kv)
{
    const json_t *a = json_object_get(o, k);
    size_t n = 0;
    for (size_t i = 0; json_is_array(a) && i < json_array_size(a) && n < MAX_KV; i++) {
        const json_t *p = json_array_get(a, i);
        if (json_array_size(p) != 2)
            continue;
        kv[n].name = json_string_value(json_array_get(p, 0));
        kv[n].value = json_string_value(json_array_get(p, 1));
        if (kv[n].name != NULL && kv[n].value != NULL)
            n++;
    }
    return n;
}

static json_t *verdict_json(const sigv4_verdict *vd)
{
    return json_pack("{s:s,s:s,s:i,s:s}", "reason", sigv4_reason_name(vd->reason), "code",
                     sigv4_reason_s3_code(vd->reason), "status",
                     sigv4_reason_http_status(vd->reason), "detail", vd->detail);
}

int main(void)
{
    int status = 1;
    json_error_t jerr;
    json_t *in = json_loadf(stdin, JSON_REJECT_DUPLICATES, &jerr);
    json_t *out = NULL;
    sigv4_signer *signer = NULL;
    ferry_buf path, url;
    sigv4_form form;
    sigv4_kv h[MAX_KV], f[MAX_KV];
    ferry_buf_init(&path, 65536);
    ferry_buf_init(&url, 65536);
    sigv4_form_init(&form);
    if (in == NULL) {
        fprintf(stderr, "sigv4_tool: bad JSON input: %s\n", jerr.text);
        goto out;
    }
    const char *mode = str(in, "mode", "");
    int64_t now = (int64_t)num(in, "now", 0);
    sigv4_verifier v = {.region = str(in, "region", "us-east-1"),
                        .service = str(in, "service", "s3"),
                        .lookup = lookup,
                        .lookup_ctx = json_object_get(in, "keys")};
    if (strcmp(mode, "verify") == 0) {
        /* Split the URL into path and query; add Host as a client would. */
        const char *u = str(in, "url", "");
        const char *auth = strstr(u, "://");
        if (auth == NULL)
            goto out;
        auth += 3;
        const char *slash = strchr(auth, '/');
        if (slash == NULL)
            goto out;
        const char *qmark = strchr(slash, '?');
        if (ferry_buf_append(&path, slash, qmark ? (size_t)(qmark - slash) : strlen(slash)))
            goto out;
        size_t n = pairs(in, "headers", h);
        bool has_host = false;
        for (size_t i = 0; i < n; i++)
            has_host |= strcasecmp(h[i].name, "host") == 0;
        char host[512];
        snprintf(host, sizeof host, "%.*s", (int)(slash - auth), auth);
        if (!has_host && n < MAX_KV)
            h[n++] = (sigv4_kv){"Host", host};
        sigv4_request r = {.method = str(in, "method", "GET"),
                           .path = path.data,
                           .query = qmark ? qmark + 1 : "",
                           .headers = h,
                           .n_headers = n,
                           .payload_hash = str(in, "payload_hash", NULL)};
        sigv4_verdict vd;
        ferry_err err = sigv4_verify_request(&v, &r, now, &vd);
        if (err != FERRY_OK && err != FERRY_ERR_AUTH)
            fprintf(stderr, "sigv4_tool: verification failed: %s\n", ferry_err_str(err));
        out = verdict_json(&vd);
    } else if (strcmp(mode, "post") == 0) {
        sigv4_post_form pf = {.bucket = str(in, "bucket", ""),
                              .fields = f,
                              .n_fields = pairs(in, "fields", f),
                              .content_length = (int64_t)num(in, "content_length", -1)};
        sigv4_verdict vd;
        ferry_err err = sigv4_verify_post(&v, &pf, now, &vd);
        if (err != FERRY_OK && err != FERRY_ERR_AUTH)
            fprintf(stderr, "sigv4_tool: verification failed: %s\n", ferry_err_str(err));
        out = verdict_json(&vd);
    } else if (strcmp(mode, "presign") == 0 || strcmp(mode, "form") == 0) {
        signer = sigv4_signer_new(str(in, "access_key", ""), str(in, "secret", ""), v.region,
                                  v.service);
        if (signer == NULL)
            goto out;
        ferry_err err;
        if (mode[0] == 'p') {
            sigv4_presign_params p = {.method = str(in, "method", "PUT"),
                                      .endpoint = str(in, "endpoint", ""),
                                      .path = str(in, "path", "/"),
                                      .expires_s = (int64_t)num(in, "expires", 3600),
                                      .headers = h,
                                      .n_headers = pairs(in, "headers", h),
                                      .query = f,
                                      .n_query = pairs(in, "query", f)};
            err = sigv4_presign(signer, &p, now, &url);
            out = err ? json_pack("{s:s}", "error", ferry_err_str(err))
                      : json_pack("{s:s}", "url", url.data);
        } else {
            const json_t *ct = json_object_get(in, "content_type");
            sigv4_post_params p = {.endpoint = str(in, "endpoint", ""),
                                   .bucket = str(in, "bucket", ""),
                                   .key = str(in, "key", ""),
                                   .key_is_prefix = json_is_true(json_object_get(in, "key_is_prefix")),
                                   .expires_s = (int64_t)num(in, "expires", 3600),
                                   .length_min = (int64_t)num(in, "length_min", 0),
                                   .length_max = (int64_t)num(in, "length_max", -1),
                                   .content_type = json_is_string(ct) ? json_string_value(ct) : NULL,
                                   .fields = f,
                                   .n_fields = pairs(in, "fields", f)};
            err = sigv4_post_policy(signer, &p, now, &form);
            if (err) {
                out = json_pack("{s:s}", "error", ferry_err_str(err));
            } else {
                json_t *fields = json_array();
                for (size_t i = 0; i < form.n_fields; i++)
                    json_array_append_new(fields, json_pack("[s,s]", form.fields[i].name,
                                                            form.fields[i].value));
                out = json_pack("{s:s,s:o}", "url", form.url, "fields", fields);
            }
        }
    } else {
        fprintf(stderr, "sigv4_tool: unknown mode '%s'\n", mode);
        goto out;
    }
    if (out == NULL)
        goto out;
    if (json_dumpf(out, stdout, JSON_COMPACT) != 0)
        goto out;
    putchar('\n');
    status = 0;
out:
    json_decref(out);
    json_decref(in);
    sigv4_signer_free(signer);
    sigv4_form_cleanup(&form);
    ferry_buf_cleanup(&path);
    ferry_buf_cleanup(&url);
    return status;
}
