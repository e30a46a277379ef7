/*
 * grant_service.c - one upload request in, one answer out; see
 * grant_service.h.
 *
 * Order of checks, and why:
 *   1. topic -> device id: without a valid device there is nobody to answer.
 *   2. the JSON is parsed before anything else so that every rejection can
 *      echo the device's request id;
 *   3. the Response Topic: a request that tries to steer the answer into
 *      another device's topics is refused (answered on its own topic);
 *   4. the device's policy (fleet defaults + ledger overrides), then the
 *      rate limit, which counts every request, valid or not, so a device
 *      cannot flood the ledger with malformed ones for free;
 *   5. the request-only policy checks (disabled, size, content type);
 *   6. the grant is built and signed, and only then inserted: the insert
 *      re-checks the open-grant limit and daily quota inside its
 *      transaction, and a grant that fails to sign never reaches the ledger.
 * Every refusal is written to the audit log.
 */
#include "grant_service.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "common/buf.h"
#include "common/log.h"
#include "common/timefmt.h"
#include "sigv4/sigv4.h"

#define REJECTION_EXPIRY_S 600 /* rejections are stale after this long */
#define URL_MAX_BYTES (64 * 1024)

struct grant_service {
    char *prefix;
    char *endpoint;
    char *bucket;
    grant_policy fleet;
    sigv4_signer *signer;
    grant_rate_limiter *rate;
    ledger *ledger;
};

ferry_err grant_service_new(const grant_service_config *cfg, grant_service **out)
{
    ferry_err result = FERRY_OK;
    grant_service *svc = calloc(1, sizeof *svc);
    if (svc == NULL)
        return FERRY_ERR_NOMEM;
    svc->prefix = strdup(cfg->prefix);
    svc->endpoint = strdup(cfg->endpoint);
    svc->bucket = strdup(cfg->bucket);
    svc->fleet = *cfg->fleet;
    svc->ledger = cfg->ledger;
    if (svc->prefix == NULL || svc->endpoint == NULL || svc->bucket == NULL) {
        result = FERRY_ERR_NOMEM;
        goto out;
    }
    svc->signer = sigv4_signer_new(cfg->access_key, cfg->secret, cfg->region, "s3");
    if (svc->signer == NULL) {
        result = FERRY_ERR_INVALID;
        goto out;
    }
    result = grant_rate_limiter_new(cfg->rate_table_size ? cfg->rate_table_size : 1024,
                                    &svc->rate);
    if (result)
        goto out;
    *out = svc;
    svc = NULL;
out:
    grant_service_free(svc);
    return result;
}

void grant_service_free(grant_service *svc)
{
    if (svc == NULL)
        return;
    sigv4_signer_free(svc->signer);
    grant_rate_limiter_free(svc->rate);
    free(svc->prefix);
    free(svc->endpoint);
    free(svc->bucket);
    free(svc);
}

void grant_answer_cleanup(grant_answer *answer)
{
    if (answer == NULL)
        return;
    free(answer->json);
    answer->json = NULL;
    answer->json_len = 0;
}

ferry_err grant_service_topic_device(const char *prefix, const char *topic, char *device,
                                     size_t device_size)
{
    static const char suffix[] = "/upload/request";
    size_t plen = strlen(prefix);
    if (strncmp(topic, prefix, plen) != 0 || topic[plen] != '/')
        return FERRY_ERR_INVALID;
    const char *dev = topic + plen + 1;
    const char *slash = strchr(dev, '/');
    if (slash == NULL || strcmp(slash, suffix) != 0)
        return FERRY_ERR_INVALID;
    size_t dlen = (size_t)(slash - dev);
    if (dlen == 0 || dlen >= device_size || dlen > GRANT_DEVICE_MAX)
        return FERRY_ERR_INVALID;
    char tmp[GRANT_DEVICE_MAX + 1];
    memcpy(tmp, dev, dlen);
    tmp[dlen] = '\0';
    if (!grant_device_id_valid(tmp))
        return FERRY_ERR_INVALID;
    memcpy(device, tmp, dlen + 1);
    return FERRY_OK;
}

/* A Response Topic is acceptable only strictly under <prefix>/<device>/,
 * without wildcards, within the length limit. */
static bool response_topic_allowed(const char *prefix, const char *device, const char *topic)
{
    size_t plen = strlen(prefix), dlen = strlen(device);
    size_t tlen = strlen(topic);
    if (tlen > GRANT_TOPIC_MAX || tlen <= plen + dlen + 2)
        return false;
    if (strncmp(topic, prefix, plen) != 0 || topic[plen] != '/' ||
        strncmp(topic + plen + 1, device, dlen) != 0 || topic[plen + 1 + dlen] != '/')
        return false;
    for (const char *p = topic; *p; p++)
        if (*p == '+' || *p == '#' || (unsigned char)*p < 0x20 || *p == 0x7f)
            return false;
    /* Empty levels ("…//…", trailing "/") are valid MQTT but never ours. */
    return strstr(topic, "//") == NULL && topic[tlen - 1] != '/';
}

static ferry_err set_json(grant_answer *answer, json_t *doc)
{
    char *text = json_dumps(doc, JSON_COMPACT);
    if (text == NULL)
        return FERRY_ERR_NOMEM;
    size_t len = strlen(text);
    if (len > GRANT_ANSWER_MAX_BYTES) {
        free(text);
        return FERRY_ERR_TOO_LARGE;
    }
    answer->json = text;
    answer->json_len = len;
    return FERRY_OK;
}

static ferry_err reject(grant_service *svc, const char *device, const grant_rejection *rej,
                        int64_t now, grant_answer *answer)
{
    char *text = NULL;
    ferry_err e = grant_rejection_json(rej, &text);
    if (e)
        return e;
    answer->json = text;
    answer->json_len = strlen(text);
    answer->granted = false;
    answer->code = rej->code;
    answer->message_expiry_s = REJECTION_EXPIRY_S;
    const char *code = grant_reject_code_str(rej->code);
    if (ledger_audit_refusal(svc->ledger, device, rej->has_id ? rej->id : NULL, code,
                             rej->message, now) != FERRY_OK)
        log_error("ledger.audit_failed", "device=%s code=%s", device, code);
    log_info("grant.refused", "device=%s id=%s code=%s", device, rej->has_id ? rej->id : "-",
             code);
    return FERRY_OK;
}

/* Signs a PUT grant: content-length, content-type and (when announced) the
 * SHA-256 are bound into the signature, so the store refuses anything else. */
static ferry_err sign_put(grant_service *svc, const ledger_grant *g, const grant_request *req,
                          int64_t now, json_t *doc)
{
    char length[24];
    snprintf(length, sizeof length, "%llu", (unsigned long long)g->size);
    sigv4_kv headers[3] = {
        {"content-length", length},
        {"content-type", g->content_type},
        {"x-amz-checksum-sha256", req->sha256_b64},
    };
    size_t n_headers = req->has_sha256 ? 3 : 2;
    char path[LEDGER_BUCKET_MAX + LEDGER_KEY_MAX + 4];
    snprintf(path, sizeof path, "/%s/%s", g->bucket, g->key);
    sigv4_presign_params p = {
        .method = "PUT",
        .endpoint = svc->endpoint,
        .path = path,
        .expires_s = g->expires_at - now,
        .headers = headers,
        .n_headers = n_headers,
    };
    ferry_buf url;
    ferry_buf_init(&url, URL_MAX_BYTES);
    ferry_err e = sigv4_presign(svc->signer, &p, now, &url);
    if (e == FERRY_OK) {
        json_t *hdrs = json_object();
        for (size_t i = 0; hdrs != NULL && i < n_headers; i++)
            json_object_set_new(hdrs, headers[i].name, json_string(headers[i].value));
        if (hdrs == NULL || json_object_set_new(doc, "url", json_string(ferry_buf_str(&url))) ||
            json_object_set_new(doc, "headers", hdrs))
            e = FERRY_ERR_NOMEM;
    }
    ferry_buf_cleanup(&url);
    return e;
}

/* Signs a POST grant: the policy pins the exact key, the exact size, the
 * content type and (when announced) the checksum. */
static ferry_err sign_post(grant_service *svc, const ledger_grant *g, const grant_request *req,
                           int64_t now, json_t *doc)
{
    sigv4_kv extra[1] = {{"x-amz-checksum-sha256", req->sha256_b64}};
    sigv4_post_params p = {
        .endpoint = svc->endpoint,
        .bucket = g->bucket,
        .key = g->key,
        .expires_s = g->expires_at - now,
        .length_min = (int64_t)g->size,
        .length_max = (int64_t)g->size,
        .content_type = g->content_type,
        .fields = extra,
        .n_fields = req->has_sha256 ? 1 : 0,
    };
    sigv4_form form;
    sigv4_form_init(&form);
    ferry_err e = sigv4_post_policy(svc->signer, &p, now, &form);
    if (e == FERRY_OK) {
        json_t *fields = json_object();
        for (size_t i = 0; fields != NULL && i < form.n_fields; i++)
            json_object_set_new(fields, form.fields[i].name, json_string(form.fields[i].value));
        if (fields == NULL || json_object_set_new(doc, "url", json_string(form.url)) ||
            json_object_set_new(doc, "fields", fields))
            e = FERRY_ERR_NOMEM;
    }
    sigv4_form_cleanup(&form);
    return e;
}

static ferry_err grant(grant_service *svc, const char *device, const grant_policy *policy,
                       const grant_request *req, int64_t now, grant_answer *answer)
{
    ferry_err result = FERRY_OK;
    ledger_grant g;
    grant_rejection rej;
    grant_rejection_init(&rej, req->id);
    json_t *doc = NULL;

    result = grant_build(policy, req, device, svc->bucket, now, &g);
    if (result)
        goto refuse_internal;
    doc = json_object();
    if (doc == NULL) {
        result = FERRY_ERR_NOMEM;
        goto out;
    }
    char expires_at[FERRY_ISO8601_LEN + 1];
    ferry_time_iso8601(g.expires_at, expires_at);
    if (json_object_set_new(doc, "type", json_string("grant")) ||
        json_object_set_new(doc, "id", json_string(req->id)) ||
        json_object_set_new(doc, "grant", json_string(g.id)) ||
        json_object_set_new(doc, "method", json_string(g.method)) ||
        json_object_set_new(doc, "key", json_string(g.key)) ||
        json_object_set_new(doc, "size", json_integer((json_int_t)g.size)) ||
        json_object_set_new(doc, "expires_at", json_string(expires_at))) {
        result = FERRY_ERR_NOMEM;
        goto out;
    }
    result = strcmp(g.method, "POST") == 0 ? sign_post(svc, &g, req, now, doc)
                                           : sign_put(svc, &g, req, now, doc);
    if (result)
        goto refuse_internal;
    result = set_json(answer, doc);
    if (result)
        goto refuse_internal;

    ledger_limits limits;
    grant_policy_limits(policy, now, &limits);
    ledger_verdict verdict;
    char detail[128];
    snprintf(detail, sizeof detail, "method=%s size=%llu", g.method,
             (unsigned long long)g.size);
    result = ledger_grant_insert(svc->ledger, &g, &limits, detail, &verdict);
    if (result)
        goto refuse_internal;
    if (verdict != LEDGER_INSERTED) {
        grant_answer_cleanup(answer);
        if (verdict == LEDGER_OVER_OPEN_GRANTS)
            grant_reject(&rej, GRANT_REJECT_TOO_MANY_OPEN_GRANTS,
                         "the device already holds %llu open grants",
                         (unsigned long long)policy->max_open_grants);
        else
            grant_reject(&rej, GRANT_REJECT_QUOTA_EXCEEDED,
                         "the daily quota of %llu bytes would be exceeded",
                         (unsigned long long)policy->daily_quota_bytes);
        result = reject(svc, device, &rej, now, answer);
        goto out;
    }
    answer->granted = true;
    answer->code = GRANT_REJECT_NONE;
    answer->message_expiry_s = (uint32_t)(g.expires_at - now);
    log_info("grant.issued", "device=%s id=%s grant=%s method=%s size=%llu expires_in_s=%lld",
             device, req->id, g.id, g.method, (unsigned long long)g.size,
             (long long)(g.expires_at - now));
    goto out;

refuse_internal:
    grant_answer_cleanup(answer);
    log_error("grant.failed", "device=%s id=%s error=\"%s\"", device, req->id,
              ferry_err_str(result));
    grant_reject(&rej, GRANT_REJECT_INTERNAL, "the grant could not be issued; try again later");
    result = reject(svc, device, &rej, now, answer);
out:
    json_decref(doc);
    return result;
}

ferry_err grant_service_handle(grant_service *svc, const grant_service_input *in, int64_t now,
                               int64_t now_mono_ns, grant_answer *answer)
{
    char device[GRANT_DEVICE_MAX + 1];
    if (grant_service_topic_device(svc->prefix, in->topic, device, sizeof device) != FERRY_OK)
        return FERRY_ERR_INVALID;

    memset(answer, 0, sizeof *answer);
    snprintf(answer->topic, sizeof answer->topic, "%s/%s/upload/response", svc->prefix, device);

    grant_request req;
    grant_rejection rej;
    grant_rejection_init(&rej, NULL);
    ferry_err parsed = grant_request_parse(in->payload, in->payload_len, &req, &rej);
    if (parsed == FERRY_ERR_NOMEM)
        return parsed;
    bool ok = parsed == FERRY_OK;
    if (ok)
        grant_rejection_init(&rej, req.id);

    if (in->is_v5 && in->response_topic != NULL) {
        if (response_topic_allowed(svc->prefix, device, in->response_topic)) {
            snprintf(answer->topic, sizeof answer->topic, "%s", in->response_topic);
        } else {
            grant_reject(&rej, GRANT_REJECT_INVALID_RESPONSE_TOPIC,
                         "the response topic must lie under %s/%s/", svc->prefix, device);
            return reject(svc, device, &rej, now, answer);
        }
    }

    grant_policy policy = svc->fleet;
    ledger_device overrides;
    ferry_err e = ledger_device_get(svc->ledger, device, &overrides);
    if (e == FERRY_OK) {
        grant_policy_merge(&svc->fleet, &overrides, &policy);
    } else if (e != FERRY_ERR_NOT_FOUND) {
        log_error("ledger.read_failed", "device=%s error=\"%s\"", device, ferry_err_str(e));
        grant_reject(&rej, GRANT_REJECT_INTERNAL, "the ledger is unavailable; try again later");
        return reject(svc, device, &rej, now, answer);
    }

    bool allowed = true;
    e = grant_rate_take(svc->rate, device, policy.rate_per_s, policy.rate_burst, now_mono_ns,
                        &allowed);
    if (e)
        return e;
    if (!allowed) {
        grant_reject(&rej, GRANT_REJECT_RATE_LIMITED, "too many requests; slow down");
        return reject(svc, device, &rej, now, answer);
    }
    if (!ok)
        return reject(svc, device, &rej, now, answer);
    if (grant_policy_check(&policy, &req, &rej) != FERRY_OK)
        return reject(svc, device, &rej, now, answer);
    return grant(svc, device, &policy, &req, now, answer);
}
