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
 *   6. the grant is built and signed; the open-grant limit and the daily
 *      quota are counted inside the batch's write transaction; the grants
 *      are inserted into that transaction just before it commits, after
 *      the answers have gone out when ferryd answers first
 *      (grant_service.h). A grant that fails to sign never reaches the
 *      ledger.
 * Every refusal is written to the audit log.
 */
#include "grant_service.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "common/buf.h"
#include "common/log.h"
#include "common/timefmt.h"
#include "grants/grant_json.h"
#include "sigv4/sigv4.h"

#define REJECTION_EXPIRY_S 600 /* rejections are stale after this long */
#define URL_MAX_BYTES      (64 * 1024)

/* One request of a batch, between its checks and its ledger insert. */
typedef struct pending {
    char device[GRANT_DEVICE_MAX + 1];
    grant_request req;
    grant_policy policy;
    ledger_grant grant;
    bool to_insert;     /* passed every check; answer->json holds the grant */
    bool device_exists; /* its ledger row was read in the open transaction */
    bool refused;       /* answered with `refusal`, whose audit row was written */
    grant_rejection refusal;
} pending;

/* A decided request of a staged batch, until the commit: its grant, to be
 * inserted just before the commit (and logged after it), or its refusal,
 * whose audit row is in the open transaction and is written again if that
 * is rolled back. */
typedef struct held {
    char device[GRANT_DEVICE_MAX + 1];
    bool granted;       /* else refused */
    bool device_exists; /* as pending.device_exists */
    char request_id[GRANT_REQ_ID_MAX + 1];
    ledger_grant grant;
    grant_rejection refusal;
    int64_t at;
} held;

/* Requests held in one transaction at most: after a stage that leaves more
 * than HELD_MAX - GRANT_BATCH_MAX, the transaction is committed at once, so
 * the next batch always fits. */
#define HELD_MAX (2 * GRANT_BATCH_MAX)

struct grant_service {
    char *prefix;
    char *endpoint;
    char *bucket;
    grant_policy fleet;
    sigv4_signer *signer;
    grant_rate_limiter *rate;
    ledger *ledger;
    pending *pending; /* GRANT_BATCH_MAX entries, reused by every batch */
    /* The batch decided by grant_service_decide_batch, until it is staged
     * or committed. */
    size_t batch_n;
    int64_t batch_now;
    bool decided;
    /* The ledger write transaction, open from the first decide_batch until
     * commit_batch; it may span several staged batches. */
    bool txn_open;
    int64_t txn_since_ns; /* now_mono_ns of the decide that opened it */
    held *held;           /* HELD_MAX entries: the staged batches' requests */
    size_t held_n;
    size_t held_grants;
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
    result = grant_rate_limiter_new(cfg->rate_table_size ? cfg->rate_table_size : 1024, &svc->rate);
    if (result)
        goto out;
    svc->pending = calloc(GRANT_BATCH_MAX, sizeof *svc->pending);
    svc->held = calloc(HELD_MAX, sizeof *svc->held);
    if (svc->pending == NULL || svc->held == NULL) {
        result = FERRY_ERR_NOMEM;
        goto out;
    }
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
    if (svc->txn_open) /* decided but never committed: nothing is kept */
        ledger_write_rollback(svc->ledger);
    sigv4_signer_free(svc->signer);
    grant_rate_limiter_free(svc->rate);
    free(svc->pending);
    free(svc->held);
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

/* Writes the audit row of a refusal (inside the batch's transaction when
 * one is open). */
static void audit_refusal(grant_service *svc, const char *device, const grant_rejection *rej,
                          int64_t now)
{
    const char *code = grant_reject_code_str(rej->code);
    if (ledger_audit_refusal(svc->ledger, device, rej->has_id ? rej->id : NULL, code, rej->message,
                             now) != FERRY_OK)
        log_error("ledger.audit_failed", "device=%s code=%s", device, code);
}

static ferry_err reject(grant_service *svc, pending *p, const grant_rejection *rej, int64_t now,
                        grant_answer *answer)
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
    p->refusal = *rej;
    p->refused = true;
    audit_refusal(svc, p->device, &p->refusal, now);
    log_info("grant.refused", "device=%s id=%s code=%s", p->device, rej->has_id ? rej->id : "-",
             grant_reject_code_str(rej->code));
    return FERRY_OK;
}

/* Signs a PUT grant: content-length, content-type and (when announced) the
 * SHA-256 are bound into the signature, so the store refuses anything else. */
static ferry_err sign_put(grant_service *svc, const ledger_grant *g, const grant_request *req,
                          int64_t now, grant_json *doc)
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
        grant_json_string(doc, "url", ferry_buf_str(&url));
        grant_json_object(doc, "headers");
        for (size_t i = 0; i < n_headers; i++)
            grant_json_string(doc, headers[i].name, headers[i].value);
        grant_json_end(doc);
    }
    ferry_buf_cleanup(&url);
    return e;
}

/* Signs a POST grant: the policy pins the exact key, the exact size, the
 * content type and (when announced) the checksum. */
static ferry_err sign_post(grant_service *svc, const ledger_grant *g, const grant_request *req,
                           int64_t now, grant_json *doc)
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
        grant_json_string(doc, "url", form.url);
        grant_json_object(doc, "fields");
        for (size_t i = 0; i < form.n_fields; i++)
            grant_json_string(doc, form.fields[i].name, form.fields[i].value);
        grant_json_end(doc);
    }
    sigv4_form_cleanup(&form);
    return e;
}

/* Internal failure while granting: the device is told to try again. */
static ferry_err refuse_internal(grant_service *svc, pending *p, ferry_err why, int64_t now,
                                 grant_answer *answer)
{
    grant_rejection rej;
    grant_rejection_init(&rej, p->req.id);
    grant_answer_cleanup(answer);
    log_error("grant.failed", "device=%s id=%s error=\"%s\"", p->device, p->req.id,
              ferry_err_str(why));
    grant_reject(&rej, GRANT_REJECT_INTERNAL, "the grant could not be issued; try again later");
    return reject(svc, p, &rej, now, answer);
}

/* Builds and signs the grant for an allowed request; the answer is ready to
 * go once the ledger has accepted the grant. */
static ferry_err prepare_grant(grant_service *svc, pending *p, int64_t now, grant_answer *answer)
{
    ferry_err result = grant_build(&p->policy, &p->req, p->device, svc->bucket, now, &p->grant);
    ferry_buf text;
    grant_json doc;
    ferry_buf_init(&text, GRANT_ANSWER_MAX_BYTES);
    if (result)
        goto out;
    const ledger_grant *g = &p->grant;
    char expires_at[FERRY_ISO8601_LEN + 1];
    ferry_time_iso8601(g->expires_at, expires_at);
    /* Room for the usual answer (a PUT grant is ~700 bytes) at once. */
    if ((result = ferry_buf_reserve(&text, 1024)) != FERRY_OK)
        goto out;
    grant_json_begin(&doc, &text);
    grant_json_string(&doc, "type", "grant");
    grant_json_string(&doc, "id", p->req.id);
    grant_json_string(&doc, "grant", g->id);
    grant_json_string(&doc, "method", g->method);
    grant_json_string(&doc, "key", g->key);
    grant_json_uint(&doc, "size", g->size);
    grant_json_string(&doc, "expires_at", expires_at);
    result = strcmp(g->method, "POST") == 0 ? sign_post(svc, g, &p->req, now, &doc)
                                            : sign_put(svc, g, &p->req, now, &doc);
    if (result == FERRY_OK)
        result = grant_json_finish(&doc);
    if (result == FERRY_OK) {
        answer->json_len = text.len;
        answer->json = ferry_buf_detach(&text);
        if (answer->json == NULL)
            result = FERRY_ERR_NOMEM;
    }
    if (result == FERRY_OK) {
        answer->granted = true;
        answer->code = GRANT_REJECT_NONE;
        answer->message_expiry_s = (uint32_t)(g->expires_at - now);
        p->to_insert = true;
    }
out:
    ferry_buf_cleanup(&text);
    return result;
}

/* Everything but the ledger insert, for one request. Returns
 * FERRY_ERR_INVALID when there is nobody to answer; otherwise the answer is
 * either final (a rejection) or a grant waiting for the insert. */
static ferry_err check_request(grant_service *svc, const grant_service_input *in, int64_t now,
                               int64_t now_mono_ns, pending *p, grant_answer *answer)
{
    memset(answer, 0, sizeof *answer);
    p->to_insert = false;
    p->device_exists = false;
    p->refused = false;
    p->req.id[0] = '\0';
    if (grant_service_topic_device(svc->prefix, in->topic, p->device, sizeof p->device) != FERRY_OK)
        return FERRY_ERR_INVALID;
    snprintf(answer->topic, sizeof answer->topic, "%s/%s/upload/response", svc->prefix, p->device);

    grant_rejection rej;
    grant_rejection_init(&rej, NULL);
    ferry_err parsed = grant_request_parse(in->payload, in->payload_len, &p->req, &rej);
    if (parsed == FERRY_ERR_NOMEM)
        return parsed;
    bool ok = parsed == FERRY_OK;
    if (ok)
        grant_rejection_init(&rej, p->req.id);

    if (in->is_v5 && in->response_topic != NULL) {
        if (response_topic_allowed(svc->prefix, p->device, in->response_topic)) {
            snprintf(answer->topic, sizeof answer->topic, "%s", in->response_topic);
        } else {
            grant_reject(&rej, GRANT_REJECT_INVALID_RESPONSE_TOPIC,
                         "the response topic must lie under %s/%s/", svc->prefix, p->device);
            return reject(svc, p, &rej, now, answer);
        }
    }

    p->policy = svc->fleet;
    ledger_device overrides;
    ferry_err e = ledger_device_get(svc->ledger, p->device, &overrides);
    if (e == FERRY_OK) {
        grant_policy_merge(&svc->fleet, &overrides, &p->policy);
        p->device_exists = svc->txn_open;
    } else if (e != FERRY_ERR_NOT_FOUND) {
        log_error("ledger.read_failed", "device=%s error=\"%s\"", p->device, ferry_err_str(e));
        grant_reject(&rej, GRANT_REJECT_INTERNAL, "the ledger is unavailable; try again later");
        return reject(svc, p, &rej, now, answer);
    }

    bool allowed = true;
    e = grant_rate_take(svc->rate, p->device, p->policy.rate_per_s, p->policy.rate_burst,
                        now_mono_ns, &allowed);
    if (e)
        return e;
    if (!allowed) {
        grant_reject(&rej, GRANT_REJECT_RATE_LIMITED, "too many requests; slow down");
        return reject(svc, p, &rej, now, answer);
    }
    if (!ok)
        return reject(svc, p, &rej, now, answer);
    if (grant_policy_check(&p->policy, &p->req, &rej) != FERRY_OK)
        return reject(svc, p, &rej, now, answer);
    e = prepare_grant(svc, p, now, answer);
    if (e)
        return refuse_internal(svc, p, e, now, answer);
    return FERRY_OK;
}

/* Turns an insert's outcome into the final answer of one request. */
static ferry_err settle(grant_service *svc, pending *p, ledger_verdict verdict, int64_t now,
                        grant_answer *answer)
{
    if (verdict == LEDGER_INSERTED)
        return FERRY_OK; /* logged once committed (grant_service_commit_batch) */
    grant_rejection rej;
    grant_rejection_init(&rej, p->req.id);
    grant_answer_cleanup(answer);
    if (verdict == LEDGER_OVER_OPEN_GRANTS)
        grant_reject(&rej, GRANT_REJECT_TOO_MANY_OPEN_GRANTS,
                     "the device already holds %llu open grants",
                     (unsigned long long)p->policy.max_open_grants);
    else
        grant_reject(&rej, GRANT_REJECT_QUOTA_EXCEEDED,
                     "the daily quota of %llu bytes would be exceeded",
                     (unsigned long long)p->policy.daily_quota_bytes);
    return reject(svc, p, &rej, now, answer);
}

/* The transaction was rolled back: the refusals' audit rows of every
 * batch held in it went with it, so they are written again, each on its
 * own. */
static void reaudit_refusals(grant_service *svc)
{
    for (size_t i = 0; i < svc->held_n; i++)
        if (!svc->held[i].granted)
            audit_refusal(svc, svc->held[i].device, &svc->held[i].refusal, svc->held[i].at);
}

static bool granted(const pending *p)
{
    return p->to_insert && !p->refused;
}

/* The open-grant limit and the daily quota of request i, read inside the
 * batch's write transaction (so several ferryd on one ledger cannot pass a
 * limit together) plus the grants given earlier in the same batch and in
 * the batches staged before it, which are inserted only at the commit. */
static ferry_err limits_verdict(grant_service *svc, size_t i, int64_t now, ledger_verdict *out)
{
    const pending *p = &svc->pending[i];
    ledger_limits lim;
    uint64_t batch_open = 0, batch_bytes = 0, n = 0;
    ferry_err e;

    grant_policy_limits(&p->policy, now, &lim);
    *out = LEDGER_INSERTED;
    if (lim.max_open_grants == 0 && lim.daily_quota_bytes == 0)
        return FERRY_OK;
    for (size_t j = 0; j < i; j++) {
        const pending *q = &svc->pending[j];
        if (granted(q) && strcmp(q->device, p->device) == 0) {
            batch_open++;
            batch_bytes += q->grant.size;
        }
    }
    for (size_t j = 0; j < svc->held_n; j++) {
        const held *h = &svc->held[j];
        if (h->granted && strcmp(h->device, p->device) == 0) {
            batch_open++;
            batch_bytes += h->grant.size;
        }
    }
    if (lim.max_open_grants > 0) {
        if ((e = ledger_open_grants(svc->ledger, p->device, p->grant.issued_at, &n)) != FERRY_OK)
            return e;
        if (n + batch_open >= lim.max_open_grants) {
            *out = LEDGER_OVER_OPEN_GRANTS;
            return FERRY_OK;
        }
    }
    if (lim.daily_quota_bytes > 0) {
        if ((e = ledger_bytes_since(svc->ledger, p->device, lim.day_start, p->grant.issued_at,
                                    &n)) != FERRY_OK)
            return e;
        uint64_t used = n + batch_bytes;
        /* Written as subtractions so that no sum can overflow. */
        if (p->grant.size > lim.daily_quota_bytes || used < n ||
            used > lim.daily_quota_bytes - p->grant.size)
            *out = LEDGER_OVER_QUOTA;
    }
    return FERRY_OK;
}

ferry_err grant_service_decide_batch(grant_service *svc, const grant_service_input *in, size_t n,
                                     int64_t now, int64_t now_mono_ns, grant_answer *answers,
                                     ferry_err *results)
{
    if (svc == NULL || n == 0 || n > GRANT_BATCH_MAX || svc->decided)
        return FERRY_ERR_INVALID;
    pending *p = svc->pending;

    /* One write transaction for the whole batch: the device reads, the
     * limit counts, the refusals' audit rows and (at the stage or commit)
     * the grants. It may already be open, holding earlier staged batches,
     * whose grants the limit counts then see. Without it nothing can be
     * granted consistently, so a batch whose transaction cannot be opened
     * (the database stayed busy past its timeout) is refused as a whole,
     * to be asked again. */
    svc->batch_n = n;
    svc->batch_now = now;
    svc->decided = true;
    ferry_err begun = FERRY_OK;
    if (!svc->txn_open) {
        begun = ledger_write_begin(svc->ledger);
        svc->txn_open = begun == FERRY_OK;
        svc->txn_since_ns = now_mono_ns;
    }
    for (size_t i = 0; i < n; i++) {
        results[i] = check_request(svc, &in[i], now, now_mono_ns, &p[i], &answers[i]);
        if (results[i] != FERRY_OK || !p[i].to_insert)
            continue;
        ledger_verdict verdict = LEDGER_INSERTED;
        ferry_err e = begun != FERRY_OK ? begun : limits_verdict(svc, i, now, &verdict);
        if (e != FERRY_OK)
            results[i] = refuse_internal(svc, &p[i], e, now, &answers[i]);
        else
            results[i] = settle(svc, &p[i], verdict, now, &answers[i]);
    }
    return FERRY_OK;
}

/* Ends the open transaction after a failure: nothing it held is kept, the
 * refusals' audit rows are written again on their own. */
static void void_held(grant_service *svc, ferry_err why, size_t *voided)
{
    if (svc->txn_open)
        ledger_write_rollback(svc->ledger);
    svc->txn_open = false;
    log_error("grant.commit_failed", "grants=%zu error=\"%s\"", svc->held_grants,
              ferry_err_str(why));
    reaudit_refusals(svc);
    if (voided != NULL)
        *voided = svc->held_grants;
    svc->held_n = 0;
    svc->held_grants = 0;
}

/* Moves the decided batch's requests to `held`; their grants are
 * inserted at the commit (insert_held). */
static void stage(grant_service *svc)
{
    if (!svc->decided)
        return;
    svc->decided = false;
    if (!svc->txn_open)
        return; /* refused as a whole; the refusals are recorded */
    for (size_t i = 0; i < svc->batch_n; i++) {
        const pending *p = &svc->pending[i];
        if (!granted(p) && !p->refused)
            continue;
        held *h = &svc->held[svc->held_n++];
        snprintf(h->device, sizeof h->device, "%s", p->device);
        h->granted = granted(p);
        h->at = svc->batch_now;
        if (h->granted) {
            snprintf(h->request_id, sizeof h->request_id, "%s", p->req.id);
            h->device_exists = p->device_exists;
            h->grant = p->grant;
            svc->held_grants++;
        } else {
            h->refusal = p->refusal;
        }
    }
}

/* Inserts every held grant into the open transaction, in one batch.
 * Limits were checked by limits_verdict() in this transaction. */
static ferry_err insert_held(grant_service *svc)
{
    ledger_insert inserts[HELD_MAX];
    size_t k = 0;
    for (size_t i = 0; i < svc->held_n; i++)
        if (svc->held[i].granted)
            inserts[k++] = (ledger_insert){.grant = &svc->held[i].grant,
                                           .device_exists = svc->held[i].device_exists};
    ferry_err e = k > 0 ? ledger_grant_insert_batch(svc->ledger, inserts, k) : FERRY_OK;
    for (size_t j = 0; e == FERRY_OK && j < k; j++)
        if (inserts[j].err != FERRY_OK)
            e = inserts[j].err; /* a grant id taken twice: not one of them is kept */
    return e;
}

ferry_err grant_service_stage_batch(grant_service *svc, size_t *voided)
{
    if (svc == NULL)
        return FERRY_ERR_INVALID;
    stage(svc);
    if (svc->held_n > HELD_MAX - GRANT_BATCH_MAX)
        return grant_service_commit_batch(svc, voided);
    return FERRY_OK;
}

bool grant_service_txn_open(const grant_service *svc, int64_t *since_mono_ns)
{
    if (svc == NULL || !svc->txn_open)
        return false;
    if (since_mono_ns != NULL)
        *since_mono_ns = svc->txn_since_ns;
    return true;
}

ferry_err grant_service_commit_batch(grant_service *svc, size_t *voided)
{
    if (svc == NULL)
        return FERRY_ERR_INVALID;
    ferry_err e = FERRY_OK;
    stage(svc);
    if (svc->txn_open)
        e = insert_held(svc);
    if (e == FERRY_OK && svc->txn_open) {
        svc->txn_open = false; /* ended either way: a failed commit rolls back */
        e = ledger_write_commit(svc->ledger);
    }
    if (e != FERRY_OK) {
        void_held(svc, e, voided);
        return e;
    }
    /* Logged here, not when decided: a grant is issued once it is recorded,
     * and with ferryd answering first this keeps the log line off the
     * answer's path. The batch's lines are written together (one write,
     * not one per grant). */
    ferry_log_hold();
    for (size_t i = 0; i < svc->held_n; i++) {
        const held *h = &svc->held[i];
        if (h->granted)
            log_info("grant.issued",
                     "device=%s id=%s grant=%s method=%s size=%llu expires_in_s=%lld", h->device,
                     h->request_id, h->grant.id, h->grant.method, (unsigned long long)h->grant.size,
                     (long long)(h->grant.expires_at - h->at));
    }
    ferry_log_release();
    svc->held_n = 0;
    svc->held_grants = 0;
    return FERRY_OK;
}

ferry_err grant_service_handle_batch(grant_service *svc, const grant_service_input *in, size_t n,
                                     int64_t now, int64_t now_mono_ns, grant_answer *answers,
                                     ferry_err *results)
{
    if (svc == NULL || svc->txn_open) /* answering first and committing first do not mix */
        return FERRY_ERR_INVALID;
    ferry_err e = grant_service_decide_batch(svc, in, n, now, now_mono_ns, answers, results);
    if (e)
        return e;
    if (grant_service_commit_batch(svc, NULL) == FERRY_OK)
        return FERRY_OK;
    /* Nothing of the batch was kept: its grants become refusals. */
    for (size_t i = 0; i < n; i++) {
        pending *p = &svc->pending[i];
        if (results[i] == FERRY_OK && granted(p))
            results[i] = refuse_internal(svc, p, FERRY_ERR_DB, now, &answers[i]);
    }
    return FERRY_OK;
}

ferry_err grant_service_handle(grant_service *svc, const grant_service_input *in, int64_t now,
                               int64_t now_mono_ns, grant_answer *answer)
{
    ferry_err result = FERRY_OK;
    ferry_err e = grant_service_handle_batch(svc, in, 1, now, now_mono_ns, answer, &result);
    return e ? e : result;
}
