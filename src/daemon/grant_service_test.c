/*
 * grant_service_test.c - request in, answer out, against a real SQLite
 * ledger in a temp dir and the real signer; the URLs in the grants are
 * checked with Ferry's own SigV4 verifier (boto3 and s3rver check them in
 * the integration tests).
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "daemon/grant_service.h"
#include "sigv4/sigv4.h"

#define NOW    1764072000 /* 2025-11-25T12:00:00Z */
#define SECRET "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"

typedef struct fixture {
    char dir[64];
    char db[128];
    ledger *ledger;
    grant_service *svc;
    grant_policy fleet;
    int64_t mono_ns;
} fixture;

static int make_service(fixture *f)
{
    grant_service_config cfg = {
        .prefix = "ferry",
        .endpoint = "https://127.0.0.1:9443",
        .bucket = "ingest",
        .region = "us-east-1",
        .access_key = "AKIDFERRYTEST",
        .secret = SECRET,
        .fleet = &f->fleet,
        .rate_table_size = 64,
        .ledger = f->ledger,
    };
    grant_service_free(f->svc);
    f->svc = NULL;
    return grant_service_new(&cfg, &f->svc) == FERRY_OK ? 0 : -1;
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    strcpy(f->dir, "/tmp/ferry-gs-test-XXXXXX");
    if (mkdtemp(f->dir) == NULL)
        return -1;
    snprintf(f->db, sizeof f->db, "%s/ledger.db", f->dir);
    if (ledger_open(f->db, &f->ledger) != FERRY_OK)
        return -1;
    grant_policy_defaults(&f->fleet);
    f->fleet.max_size_bytes = 100 * 1024 * 1024;
    strcpy(f->fleet.content_types, "audio/*,image/jpeg");
    f->fleet.max_open_grants = 0;
    f->fleet.rate_per_s = 0;
    f->fleet.daily_quota_bytes = 0;
    f->fleet.put_max_bytes = 50 * 1024 * 1024;
    f->mono_ns = 1000000000;
    *state = f;
    return make_service(f);
}

static int teardown(void **state)
{
    fixture *f = *state;
    char cmd[128];
    grant_service_free(f->svc);
    ledger_close(f->ledger);
    snprintf(cmd, sizeof cmd, "rm -rf %s", f->dir);
    if (system(cmd) != 0)
        return -1;
    free(f);
    return 0;
}

/* Sends one request; returns the parsed answer (caller decrefs). */
static json_t *ask(fixture *f, const char *topic, const char *payload, const char *response_topic,
                   grant_answer *answer)
{
    grant_service_input in = {
        .topic = topic,
        .payload = payload,
        .payload_len = strlen(payload),
        .is_v5 = true,
        .response_topic = response_topic,
    };
    f->mono_ns += 1000; /* 1 µs between requests */
    assert_int_equal(grant_service_handle(f->svc, &in, NOW, f->mono_ns, answer), FERRY_OK);
    assert_true(answer->json_len <= GRANT_ANSWER_MAX_BYTES);
    json_error_t jerr;
    json_t *doc = json_loads(answer->json, 0, &jerr);
    assert_non_null(doc);
    return doc;
}

static void expect_rejection(fixture *f, const char *payload, const char *code)
{
    grant_answer answer;
    json_t *doc = ask(f, "ferry/dev-a/upload/request", payload, NULL, &answer);
    assert_false(answer.granted);
    assert_string_equal(json_string_value(json_object_get(doc, "type")), "rejected");
    assert_string_equal(json_string_value(json_object_get(doc, "code")), code);
    assert_non_null(json_string_value(json_object_get(doc, "message")));
    assert_string_equal(answer.topic, "ferry/dev-a/upload/response");
    json_decref(doc);
    grant_answer_cleanup(&answer);
}

static ferry_err lookup_secret(void *ctx, const char *akid, ferry_buf *out)
{
    (void)ctx;
    if (strcmp(akid, "AKIDFERRYTEST") != 0)
        return FERRY_ERR_NOT_FOUND;
    return ferry_buf_append_str(out, SECRET);
}

/* Checks a PUT grant's URL with the verifier, as the store will. */
static sigv4_reason verify_put(json_t *doc, int64_t at, const char *length_override)
{
    const char *url = json_string_value(json_object_get(doc, "url"));
    const char *prefix = "https://127.0.0.1:9443";
    assert_true(strncmp(url, prefix, strlen(prefix)) == 0);
    char *path = strdup(url + strlen(prefix));
    char *q = strchr(path, '?');
    assert_non_null(q);
    *q++ = '\0';
    json_t *headers = json_object_get(doc, "headers");
    sigv4_kv hdrs[8];
    size_t n = 0;
    hdrs[n++] = (sigv4_kv){"Host", "127.0.0.1:9443"};
    const char *name;
    json_t *value;
    json_object_foreach(headers, name, value)
    {
        const char *v = json_string_value(value);
        if (length_override && strcmp(name, "content-length") == 0)
            v = length_override;
        hdrs[n++] = (sigv4_kv){name, v};
    }
    sigv4_request req = {
        .method = "PUT", .path = path, .query = q, .headers = hdrs, .n_headers = n};
    sigv4_verifier v = {.region = "us-east-1", .service = "s3", .lookup = lookup_secret};
    sigv4_verdict verdict;
    ferry_err e = sigv4_verify_query(&v, &req, at, &verdict);
    free(path);
    return e == FERRY_OK ? SIGV4_R_OK : verdict.reason;
}

static void test_valid_request_gets_a_verifiable_put_grant(void **state)
{
    fixture *f = *state;
    grant_answer answer;
    json_t *doc = ask(f, "ferry/dev-a/upload/request",
                      "{\"id\":\"r-42\",\"name\":\"lung 2026.wav\",\"size\":5242880,"
                      "\"content_type\":\"audio/wav\",\"sha256\":"
                      "\"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\"}",
                      NULL, &answer);
    assert_true(answer.granted);
    assert_string_equal(answer.topic, "ferry/dev-a/upload/response");
    assert_string_equal(json_string_value(json_object_get(doc, "type")), "grant");
    assert_string_equal(json_string_value(json_object_get(doc, "id")), "r-42");
    assert_string_equal(json_string_value(json_object_get(doc, "method")), "PUT");
    const char *grant_id = json_string_value(json_object_get(doc, "grant"));
    assert_true(grant_id_valid(grant_id));
    const char *key = json_string_value(json_object_get(doc, "key"));
    assert_true(strncmp(key, "dev-a/2025/11/25/", 17) == 0);
    assert_non_null(strstr(key, grant_id));
    json_t *headers = json_object_get(doc, "headers");
    assert_string_equal(json_string_value(json_object_get(headers, "content-type")), "audio/wav");
    assert_string_equal(json_string_value(json_object_get(headers, "content-length")), "5242880");
    assert_string_equal(json_string_value(json_object_get(headers, "x-amz-checksum-sha256")),
                        "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=");
    /* The expiry follows the policy, and the MQTT message expires with it. */
    int64_t expiry = grant_policy_expiry_s(&f->fleet, 5242880);
    assert_int_equal(answer.message_expiry_s, expiry);
    assert_int_equal(verify_put(doc, NOW + 1, NULL), SIGV4_R_OK);
    assert_int_equal(verify_put(doc, NOW + expiry + 1, NULL), SIGV4_R_EXPIRED);
    /* A different length breaks the signature: the size is bound. */
    assert_int_equal(verify_put(doc, NOW + 1, "5242881"), SIGV4_R_SIGNATURE_MISMATCH);

    ledger_grant g;
    assert_int_equal(ledger_grant_get(f->ledger, grant_id, &g), FERRY_OK);
    assert_int_equal(g.state, LEDGER_GRANT_ISSUED);
    assert_string_equal(g.device, "dev-a");
    assert_string_equal(g.request_id, "r-42");
    assert_int_equal(g.size, 5242880);
    json_decref(doc);
    grant_answer_cleanup(&answer);
}

static void test_large_auto_request_gets_a_post_grant(void **state)
{
    fixture *f = *state;
    grant_answer answer;
    json_t *doc = ask(f, "ferry/dev-a/upload/request",
                      "{\"id\":\"r-1\",\"name\":\"x.jpg\",\"size\":60000000,"
                      "\"content_type\":\"image/jpeg\",\"method\":\"auto\"}",
                      NULL, &answer);
    assert_true(answer.granted);
    assert_string_equal(json_string_value(json_object_get(doc, "method")), "POST");
    assert_string_equal(json_string_value(json_object_get(doc, "url")),
                        "https://127.0.0.1:9443/ingest");
    json_t *fields = json_object_get(doc, "fields");
    assert_non_null(json_object_get(fields, "policy"));
    assert_non_null(json_object_get(fields, "x-amz-signature"));
    assert_string_equal(json_string_value(json_object_get(fields, "key")),
                        json_string_value(json_object_get(doc, "key")));
    json_decref(doc);
    grant_answer_cleanup(&answer);
}

static void test_foreign_topics_are_not_answered(void **state)
{
    fixture *f = *state;
    static const char *const topics[] = {
        "ferry/dev-a/upload/response", "other/dev-a/upload/request", "ferry/upload/request",
        "ferry//upload/request",       "ferry/../upload/request",    "ferry/a/b/upload/request",
    };
    for (size_t i = 0; i < sizeof topics / sizeof topics[0]; i++) {
        grant_service_input in = {.topic = topics[i], .payload = "{}", .payload_len = 2};
        grant_answer answer;
        assert_int_equal(grant_service_handle(f->svc, &in, NOW, 1, &answer), FERRY_ERR_INVALID);
    }
}

static void test_response_topic_must_be_the_devices_own(void **state)
{
    fixture *f = *state;
    const char *req =
        "{\"id\":\"r-7\",\"name\":\"a.wav\",\"size\":10,\"content_type\":\"audio/wav\"}";
    static const char *const bad[] = {
        "ferry/dev-b/upload/response",
        "ferry/dev-a",
        "ferry/dev-a/",
        "ferry/dev-ab/x",
        "ferry/dev-a/#",
        "ferry/dev-a/+/x",
        "elsewhere/dev-a/x",
        "ferry/dev-a//x",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        grant_answer answer;
        json_t *doc = ask(f, "ferry/dev-a/upload/request", req, bad[i], &answer);
        assert_false(answer.granted);
        assert_string_equal(json_string_value(json_object_get(doc, "code")),
                            "InvalidResponseTopic");
        assert_string_equal(answer.topic, "ferry/dev-a/upload/response");
        json_decref(doc);
        grant_answer_cleanup(&answer);
    }
    grant_answer answer;
    json_t *doc = ask(f, "ferry/dev-a/upload/request", req, "ferry/dev-a/replies/7", &answer);
    assert_true(answer.granted);
    assert_string_equal(answer.topic, "ferry/dev-a/replies/7");
    json_decref(doc);
    grant_answer_cleanup(&answer);
}

static void test_each_rejection_has_its_code(void **state)
{
    fixture *f = *state;
    expect_rejection(f, "{\"id\":", "MalformedJson");
    expect_rejection(f, "{\"id\":\"a\",\"id\":\"b\"}", "DuplicateKey");
    expect_rejection(f, "{\"id\":\"r\",\"size\":1,\"content_type\":\"audio/wav\"}", "MissingField");
    expect_rejection(f,
                     "{\"id\":\"r\",\"name\":\"a\",\"size\":\"1\",\"content_type\":\"audio/wav\"}",
                     "InvalidField");
    expect_rejection(f,
                     "{\"id\":\"r\",\"name\":\"../x\",\"size\":1,\"content_type\":\"audio/wav\"}",
                     "UnsafeName");
    expect_rejection(f, "{\"id\":\"r\",\"name\":\"a/b\",\"size\":1,\"content_type\":\"audio/wav\"}",
                     "UnsafeName");
    expect_rejection(f,
                     "{\"id\":\"r\",\"name\":\"a.wav\",\"size\":104857601,"
                     "\"content_type\":\"audio/wav\"}",
                     "TooLarge");
    expect_rejection(f,
                     "{\"id\":\"r\",\"name\":\"a.png\",\"size\":1,\"content_type\":\"image/png\"}",
                     "ContentTypeNotAllowed");
}

static void test_open_grants_rate_quota_and_disabled(void **state)
{
    fixture *f = *state;
    const char *req =
        "{\"id\":\"r\",\"name\":\"a.wav\",\"size\":1000,\"content_type\":\"audio/wav\"}";
    grant_answer answer;
    json_t *doc;

    f->fleet.max_open_grants = 2;
    assert_int_equal(make_service(f), 0);
    for (int i = 0; i < 2; i++) {
        doc = ask(f, "ferry/dev-o/upload/request", req, NULL, &answer);
        assert_true(answer.granted);
        json_decref(doc);
        grant_answer_cleanup(&answer);
    }
    doc = ask(f, "ferry/dev-o/upload/request", req, NULL, &answer);
    assert_string_equal(json_string_value(json_object_get(doc, "code")), "TooManyOpenGrants");
    json_decref(doc);
    grant_answer_cleanup(&answer);

    f->fleet.max_open_grants = 0;
    f->fleet.daily_quota_bytes = 2500;
    assert_int_equal(make_service(f), 0);
    for (int i = 0; i < 2; i++) {
        doc = ask(f, "ferry/dev-q/upload/request", req, NULL, &answer);
        assert_true(answer.granted);
        json_decref(doc);
        grant_answer_cleanup(&answer);
    }
    doc = ask(f, "ferry/dev-q/upload/request", req, NULL, &answer);
    assert_string_equal(json_string_value(json_object_get(doc, "code")), "QuotaExceeded");
    json_decref(doc);
    grant_answer_cleanup(&answer);

    f->fleet.daily_quota_bytes = 0;
    f->fleet.rate_per_s = 0.001;
    f->fleet.rate_burst = 3;
    assert_int_equal(make_service(f), 0);
    for (int i = 0; i < 3; i++) {
        doc = ask(f, "ferry/dev-r/upload/request", req, NULL, &answer);
        assert_true(answer.granted);
        json_decref(doc);
        grant_answer_cleanup(&answer);
    }
    doc = ask(f, "ferry/dev-r/upload/request", req, NULL, &answer);
    assert_string_equal(json_string_value(json_object_get(doc, "code")), "RateLimited");
    json_decref(doc);
    grant_answer_cleanup(&answer);

    ledger_device dev;
    memset(&dev, 0, sizeof dev);
    strcpy(dev.id, "dev-d");
    dev.disabled = true;
    assert_int_equal(ledger_device_upsert(f->ledger, &dev, NOW), FERRY_OK);
    doc = ask(f, "ferry/dev-d/upload/request", req, NULL, &answer);
    assert_string_equal(json_string_value(json_object_get(doc, "code")), "DeviceDisabled");
    json_decref(doc);
    grant_answer_cleanup(&answer);
}

static int count_refusals(const ledger_audit_row *row, void *arg)
{
    if (strcmp(row->outcome, "refused") == 0)
        (*(int *)arg)++;
    return 0;
}

static void test_refusals_are_audited(void **state)
{
    fixture *f = *state;
    expect_rejection(f, "not json", "MalformedJson");
    expect_rejection(f,
                     "{\"id\":\"r-9\",\"name\":\"a\",\"size\":1,\"content_type\":\"text/plain\"}",
                     "ContentTypeNotAllowed");
    int refusals = 0;
    assert_int_equal(ledger_audit_list(f->ledger, "dev-a", 0, 100, count_refusals, &refusals),
                     FERRY_OK);
    assert_int_equal(refusals, 2);
}

static void test_a_batch_is_one_transaction_with_per_request_answers(void **state)
{
    fixture *f = *state;
    f->fleet.max_open_grants = 2;
    assert_int_equal(make_service(f), 0);
    const char *ok = "{\"id\":\"b\",\"name\":\"a.wav\",\"size\":10,\"content_type\":\"audio/wav\"}";
    grant_service_input in[5] = {
        {.topic = "ferry/dev-b/upload/request", .payload = ok, .payload_len = strlen(ok)},
        {.topic = "not/a/request/topic", .payload = ok, .payload_len = strlen(ok)},
        {.topic = "ferry/dev-b/upload/request", .payload = "{", .payload_len = 1},
        {.topic = "ferry/dev-b/upload/request", .payload = ok, .payload_len = strlen(ok)},
        /* The limit counts the grants inserted earlier in the same batch. */
        {.topic = "ferry/dev-b/upload/request", .payload = ok, .payload_len = strlen(ok)},
    };
    grant_answer answers[5];
    ferry_err results[5];
    assert_int_equal(grant_service_handle_batch(f->svc, in, 5, NOW, 1, answers, results), FERRY_OK);
    assert_int_equal(results[0], FERRY_OK);
    assert_true(answers[0].granted);
    assert_int_equal(results[1], FERRY_ERR_INVALID);
    assert_int_equal(results[2], FERRY_OK);
    assert_int_equal(answers[2].code, GRANT_REJECT_MALFORMED_JSON);
    assert_int_equal(results[3], FERRY_OK);
    assert_true(answers[3].granted);
    assert_int_equal(results[4], FERRY_OK);
    assert_false(answers[4].granted);
    assert_int_equal(answers[4].code, GRANT_REJECT_TOO_MANY_OPEN_GRANTS);
    assert_non_null(strstr(answers[4].json, "TooManyOpenGrants"));
    uint64_t open = 0;
    assert_int_equal(ledger_open_grants(f->ledger, "dev-b", NOW, &open), FERRY_OK);
    assert_int_equal(open, 2);
    for (size_t i = 0; i < 5; i++)
        if (results[i] == FERRY_OK)
            grant_answer_cleanup(&answers[i]);
    assert_int_equal(grant_service_handle_batch(f->svc, in, 0, NOW, 1, answers, results),
                     FERRY_ERR_INVALID);
    assert_int_equal(
        grant_service_handle_batch(f->svc, in, GRANT_BATCH_MAX + 1, NOW, 1, answers, results),
        FERRY_ERR_INVALID);
}

/* Two steps (answers published before the commit): until
 * grant_service_commit_batch the grant and the refusal's audit row are in
 * the open transaction only; after it both are in the ledger. A service
 * freed between the two keeps nothing. */
static void test_decide_then_commit(void **state)
{
    fixture *f = *state;
    const char *ok = "{\"id\":\"d\",\"name\":\"a.wav\",\"size\":10,\"content_type\":\"audio/wav\"}";
    grant_service_input in[2] = {
        {.topic = "ferry/dev-d/upload/request", .payload = ok, .payload_len = strlen(ok)},
        {.topic = "ferry/dev-d/upload/request", .payload = "[", .payload_len = 1},
    };
    grant_answer answers[2];
    ferry_err results[2];
    ledger *other = NULL;
    ledger_grant g;
    char grant_id[LEDGER_GRANT_ID_MAX + 1];
    int refusals = 0;

    assert_int_equal(ledger_open(f->db, &other), FERRY_OK);
    assert_int_equal(grant_service_decide_batch(f->svc, in, 2, NOW, 1, answers, results), FERRY_OK);
    assert_int_equal(results[0], FERRY_OK);
    assert_true(answers[0].granted);
    assert_int_equal(answers[1].code, GRANT_REJECT_MALFORMED_JSON);
    /* A second batch cannot start while this one is open. */
    assert_int_equal(grant_service_decide_batch(f->svc, in, 1, NOW, 1, answers, results),
                     FERRY_ERR_INVALID);
    json_t *doc = json_loads(answers[0].json, 0, NULL);
    assert_non_null(doc);
    snprintf(grant_id, sizeof grant_id, "%s", json_string_value(json_object_get(doc, "grant")));
    json_decref(doc);
    assert_int_equal(ledger_audit_list(other, "dev-d", 0, 100, count_refusals, &refusals),
                     FERRY_OK);
    assert_int_equal(refusals, 0);
    assert_int_equal(grant_service_commit_batch(f->svc, NULL), FERRY_OK);
    assert_int_equal(ledger_grant_get(other, grant_id, &g), FERRY_OK);
    assert_string_equal(g.device, "dev-d");
    assert_int_equal(ledger_audit_list(other, "dev-d", 0, 100, count_refusals, &refusals),
                     FERRY_OK);
    assert_int_equal(refusals, 1);
    assert_int_equal(grant_service_commit_batch(f->svc, NULL), FERRY_OK); /* nothing open */
    for (size_t i = 0; i < 2; i++)
        grant_answer_cleanup(&answers[i]);

    /* Decided, never committed: freeing the service rolls it back. */
    assert_int_equal(grant_service_decide_batch(f->svc, in, 1, NOW, 1, answers, results), FERRY_OK);
    doc = json_loads(answers[0].json, 0, NULL);
    snprintf(grant_id, sizeof grant_id, "%s", json_string_value(json_object_get(doc, "grant")));
    json_decref(doc);
    grant_answer_cleanup(&answers[0]);
    grant_service_free(f->svc);
    f->svc = NULL;
    assert_int_equal(ledger_grant_get(other, grant_id, &g), FERRY_ERR_NOT_FOUND);
    ledger_close(other);
    assert_int_equal(make_service(f), 0);
}

static const char *grant_id_of(const grant_answer *a, char *out, size_t out_size)
{
    json_t *doc = json_loads(a->json, 0, NULL);
    assert_non_null(doc);
    snprintf(out, out_size, "%s", json_string_value(json_object_get(doc, "grant")));
    json_decref(doc);
    return out;
}

/* Group commit across batches: staged batches stay in the one open
 * transaction (invisible to other handles, counted by the next batch's
 * limits) until grant_service_commit_batch records them all. */
static void test_staged_batches_share_one_commit(void **state)
{
    fixture *f = *state;
    f->fleet.max_open_grants = 2;
    assert_int_equal(make_service(f), 0);
    const char *ok = "{\"id\":\"s\",\"name\":\"a.wav\",\"size\":10,\"content_type\":\"audio/wav\"}";
    grant_service_input in[2] = {
        {.topic = "ferry/dev-s/upload/request", .payload = ok, .payload_len = strlen(ok)},
        {.topic = "ferry/dev-s/upload/request", .payload = "[", .payload_len = 1},
    };
    grant_answer answers[2];
    ferry_err results[2];
    char ids[2][LEDGER_GRANT_ID_MAX + 1];
    ledger *other = NULL;
    ledger_grant g;
    int64_t since = 0;
    int refusals = 0;

    assert_int_equal(ledger_open(f->db, &other), FERRY_OK);
    assert_false(grant_service_txn_open(f->svc, &since));
    assert_int_equal(grant_service_decide_batch(f->svc, in, 2, NOW, 77, answers, results),
                     FERRY_OK);
    assert_true(answers[0].granted);
    grant_id_of(&answers[0], ids[0], sizeof ids[0]);
    grant_answer_cleanup(&answers[0]);
    grant_answer_cleanup(&answers[1]);
    assert_int_equal(grant_service_stage_batch(f->svc, NULL), FERRY_OK);
    assert_true(grant_service_txn_open(f->svc, &since));
    assert_int_equal(since, 77);
    /* (Counted, not looked up: a lookup that misses would wait for the
     * commit, ledger.h.) */
    uint64_t open = 1;
    assert_int_equal(ledger_open_grants(other, "dev-s", NOW, &open), FERRY_OK);
    assert_int_equal(open, 0);

    /* The next batch joins the open transaction and sees the staged grant. */
    assert_int_equal(grant_service_decide_batch(f->svc, in, 1, NOW, 99, answers, results),
                     FERRY_OK);
    assert_true(answers[0].granted);
    grant_id_of(&answers[0], ids[1], sizeof ids[1]);
    grant_answer_cleanup(&answers[0]);
    assert_int_equal(grant_service_stage_batch(f->svc, NULL), FERRY_OK);
    assert_true(grant_service_txn_open(f->svc, &since));
    assert_int_equal(since, 77);
    assert_int_equal(grant_service_decide_batch(f->svc, in, 1, NOW, 99, answers, results),
                     FERRY_OK);
    assert_false(answers[0].granted);
    assert_int_equal(answers[0].code, GRANT_REJECT_TOO_MANY_OPEN_GRANTS);
    grant_answer_cleanup(&answers[0]);
    assert_int_equal(ledger_audit_list(other, "dev-s", 0, 100, count_refusals, &refusals),
                     FERRY_OK);
    assert_int_equal(refusals, 0);

    /* The commit stages the last decided batch and records everything. */
    assert_int_equal(grant_service_commit_batch(f->svc, NULL), FERRY_OK);
    assert_false(grant_service_txn_open(f->svc, NULL));
    for (size_t i = 0; i < 2; i++) {
        assert_int_equal(ledger_grant_get(other, ids[i], &g), FERRY_OK);
        assert_string_equal(g.device, "dev-s");
    }
    assert_int_equal(ledger_audit_list(other, "dev-s", 0, 100, count_refusals, &refusals),
                     FERRY_OK);
    assert_int_equal(refusals, 2);
    ledger_close(other);
}

typedef struct writer {
    const char *db;
    ferry_err result;
} writer;

static void *write_one_refusal(void *arg)
{
    writer *w = arg;
    ledger *l = NULL;
    w->result = ledger_open(w->db, &l);
    if (w->result == FERRY_OK)
        w->result = ledger_audit_refusal(l, "dev-w", NULL, "MalformedJson", "x", NOW);
    ledger_close(l);
    return NULL;
}

/* Another handle that needs the write lock while the service holds its
 * transaction is counted by ledger_busy_waits (which ferryd watches to
 * commit early) and gets through once the service commits. */
static void test_a_waiting_writer_is_seen_and_gets_through(void **state)
{
    fixture *f = *state;
    const char *ok = "{\"id\":\"w\",\"name\":\"a.wav\",\"size\":10,\"content_type\":\"audio/wav\"}";
    grant_service_input in = {
        .topic = "ferry/dev-w/upload/request", .payload = ok, .payload_len = strlen(ok)};
    grant_answer answer;
    ferry_err result;
    writer w = {.db = f->db, .result = FERRY_ERR_INVALID};
    pthread_t thread;
    int refusals = 0;

    assert_int_equal(grant_service_decide_batch(f->svc, &in, 1, NOW, 1, &answer, &result),
                     FERRY_OK);
    grant_answer_cleanup(&answer);
    assert_int_equal(grant_service_stage_batch(f->svc, NULL), FERRY_OK);
    uint64_t seen = ledger_busy_waits();
    assert_int_equal(pthread_create(&thread, NULL, write_one_refusal, &w), 0);
    for (int i = 0; i < 2000 && ledger_busy_waits() == seen; i++) {
        struct timespec ms = {.tv_sec = 0, .tv_nsec = 1000000};
        nanosleep(&ms, NULL);
    }
    assert_true(ledger_busy_waits() != seen);
    assert_int_equal(grant_service_commit_batch(f->svc, NULL), FERRY_OK);
    pthread_join(thread, NULL);
    assert_int_equal(w.result, FERRY_OK);
    assert_int_equal(ledger_audit_list(f->ledger, "dev-w", 0, 100, count_refusals, &refusals),
                     FERRY_OK);
    assert_int_equal(refusals, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_valid_request_gets_a_verifiable_put_grant, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_large_auto_request_gets_a_post_grant, setup, teardown),
        cmocka_unit_test_setup_teardown(test_foreign_topics_are_not_answered, setup, teardown),
        cmocka_unit_test_setup_teardown(test_response_topic_must_be_the_devices_own, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_each_rejection_has_its_code, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_grants_rate_quota_and_disabled, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refusals_are_audited, setup, teardown),
        cmocka_unit_test_setup_teardown(test_decide_then_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_staged_batches_share_one_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_waiting_writer_is_seen_and_gets_through, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_a_batch_is_one_transaction_with_per_request_answers,
                                        setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
