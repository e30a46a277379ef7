/*
 * events_test.c - unit tests of the event format, the device messages, the
 * webhook signature and the retry policy (cmocka).
 *
 * The format is checked against Amazon S3's own documented notification
 * (testdata/s3_put_sample.json): every field S3 sends must be in Ferry's
 * event with the same JSON type, and values are checked after parsing the
 * output back with jansson, not by comparing strings.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "events.h"

static events_object sample_object(void)
{
    events_object o = {
        .event_id = "ev_01HZX3K7T9",
        .sequencer = 0x1F,
        .method = EVENTS_PUT,
        .time_ms = INT64_C(1795610700123), /* 2026-11-25T12:45:00.123Z */
        .region = "eu-central-1",
        .bucket = "ingest",
        .key = "dev-a/2026/11/25/g_1-heart beat+1.wav",
        .size = 16044,
        .etag = "\"9b2cf535f27731c974343645a3985328\"",
        .device = "dev-a",
        .grant = "g_1",
        .sha256 = "21D8203651E6F1E9A5A53C93AD7792D52EE2B8D2C5654589D0B53C1D4BE19CDE",
        .content_type = "audio/wav",
        .request_id = "r-42",
        .source_ip = "127.0.0.1",
    };
    return o;
}

static json_t *format_parse(const events_object *o)
{
    ferry_buf b;
    ferry_buf_init(&b, EVENTS_MAX_EVENT_LEN);
    assert_int_equal(events_format(o, &b), FERRY_OK);
    json_error_t err;
    json_t *v = json_loadb(ferry_buf_str(&b), b.len, JSON_REJECT_DUPLICATES, &err);
    assert_non_null(v);
    ferry_buf_cleanup(&b);
    return v;
}

static json_t *load_sample(void)
{
    const char *dir = getenv("EVENTS_SAMPLES");
    char path[1024];
    snprintf(path, sizeof path, "%s/s3_put_sample.json", dir ? dir : "testdata");
    json_error_t err;
    json_t *v = json_load_file(path, 0, &err);
    if (v == NULL)
        fail_msg("cannot load %s: %s", path, err.text);
    return v;
}

/* Every member of `want` is in `got` with the same type, recursively. */
static void assert_same_shape(json_t *want, json_t *got, const char *path)
{
    char sub[512];
    if (got == NULL)
        fail_msg("missing %s", path);
    if (json_typeof(want) != json_typeof(got) && !(json_is_integer(want) && json_is_integer(got)))
        fail_msg("%s: type %d, S3 has %d", path, json_typeof(got), json_typeof(want));
    if (json_is_object(want)) {
        const char *k;
        json_t *v;
        json_object_foreach(want, k, v)
        {
            if (strcmp(k, "versionId") == 0)
                continue;
            snprintf(sub, sizeof sub, "%s.%s", path, k);
            assert_same_shape(v, json_object_get(got, k), sub);
        }
    } else if (json_is_array(want)) {
        assert_int_equal(json_array_size(want), json_array_size(got));
        for (size_t i = 0; i < json_array_size(want); i++) {
            snprintf(sub, sizeof sub, "%s[%zu]", path, i);
            assert_same_shape(json_array_get(want, i), json_array_get(got, i), sub);
        }
    }
}

static const char *str_at(json_t *root, const char *p1, const char *p2, const char *p3)
{
    json_t *rec = json_array_get(json_object_get(root, "Records"), 0);
    json_t *v = json_object_get(rec, p1);
    if (p2)
        v = json_object_get(v, p2);
    if (p3)
        v = json_object_get(v, p3);
    return json_string_value(v);
}

static void test_format_matches_s3_sample(void **state)
{
    (void)state;
    events_object o = sample_object();
    json_t *ours = format_parse(&o);
    json_t *s3 = load_sample();
    assert_same_shape(s3, ours, "$");
    json_decref(s3);

    assert_string_equal(str_at(ours, "eventVersion", NULL, NULL), "2.1");
    assert_string_equal(str_at(ours, "eventSource", NULL, NULL), "aws:s3");
    assert_string_equal(str_at(ours, "awsRegion", NULL, NULL), "eu-central-1");
    assert_string_equal(str_at(ours, "eventTime", NULL, NULL), "2026-11-25T12:45:00.123Z");
    assert_string_equal(str_at(ours, "eventName", NULL, NULL), "ObjectCreated:Put");
    assert_string_equal(str_at(ours, "userIdentity", "principalId", NULL), "dev-a");
    assert_string_equal(str_at(ours, "requestParameters", "sourceIPAddress", NULL), "127.0.0.1");
    assert_string_equal(str_at(ours, "s3", "s3SchemaVersion", NULL), "1.0");
    assert_string_equal(str_at(ours, "s3", "bucket", "name"), "ingest");
    assert_string_equal(str_at(ours, "s3", "bucket", "arn"), "arn:aws:s3:::ingest");
    assert_string_equal(str_at(ours, "s3", "object", "key"),
                        "dev-a/2026/11/25/g_1-heart+beat%2B1.wav");
    assert_string_equal(str_at(ours, "s3", "object", "eTag"), "9b2cf535f27731c974343645a3985328");
    assert_string_equal(str_at(ours, "s3", "object", "sequencer"), "000000000000001F");
    json_t *rec = json_array_get(json_object_get(ours, "Records"), 0);
    assert_int_equal(json_integer_value(json_object_get(
                         json_object_get(json_object_get(rec, "s3"), "object"), "size")),
                     16044);
    assert_string_equal(str_at(ours, "ferry", "event_id", NULL), "ev_01HZX3K7T9");
    assert_string_equal(str_at(ours, "ferry", "device", NULL), "dev-a");
    assert_string_equal(str_at(ours, "ferry", "grant", NULL), "g_1");
    assert_string_equal(str_at(ours, "ferry", "key", NULL),
                        "dev-a/2026/11/25/g_1-heart beat+1.wav");
    assert_string_equal(str_at(ours, "ferry", "sha256", NULL),
                        "21d8203651e6f1e9a5a53c93ad7792d52ee2b8d2c5654589d0b53c1d4be19cde");
    assert_string_equal(str_at(ours, "ferry", "content_type", NULL), "audio/wav");
    assert_string_equal(str_at(ours, "ferry", "id", NULL), "r-42");
    json_decref(ours);
}

static void test_format_methods_and_options(void **state)
{
    (void)state;
    events_object o = sample_object();
    o.method = EVENTS_POST;
    o.event_source = "minio:s3";
    o.request_id = NULL;
    o.sha256 = NULL;
    json_t *v = format_parse(&o);
    assert_string_equal(str_at(v, "eventName", NULL, NULL), "ObjectCreated:Post");
    assert_string_equal(str_at(v, "eventSource", NULL, NULL), "minio:s3");
    json_t *rec = json_array_get(json_object_get(v, "Records"), 0);
    assert_true(json_is_null(json_object_get(json_object_get(rec, "ferry"), "id")));
    json_decref(v);

    o.method = EVENTS_MULTIPART;
    o.sequencer = UINT64_MAX;
    v = format_parse(&o);
    assert_string_equal(str_at(v, "eventName", NULL, NULL),
                        "ObjectCreated:CompleteMultipartUpload");
    assert_string_equal(str_at(v, "s3", "object", "sequencer"), "FFFFFFFFFFFFFFFF");
    json_decref(v);
}

/* Fixed width hex: string order is numeric order, as S3 says to compare. */
static void test_sequencer_orders_as_strings(void **state)
{
    (void)state;
    events_object o = sample_object();
    uint64_t seqs[] = {0, 1, 9, 10, 15, 16, 255, 256, 4096, 1u << 31, UINT64_C(1) << 40};
    char prev[32] = "";
    for (size_t i = 0; i < sizeof seqs / sizeof seqs[0]; i++) {
        o.sequencer = seqs[i];
        json_t *v = format_parse(&o);
        const char *s = str_at(v, "s3", "object", "sequencer");
        assert_int_equal(strlen(s), 16);
        assert_true(strcmp(prev, s) < 0);
        snprintf(prev, sizeof prev, "%s", s);
        json_decref(v);
    }
}

static void test_key_encoding(void **state)
{
    (void)state;
    const struct {
        const char *raw, *enc;
    } cases[] = {
        {"a b", "a+b"},
        {"a+b", "a%2Bb"},
        {"dir/sub/file.jpg", "dir/sub/file.jpg"},
        {"x=1&y=2", "x%3D1%26y%3D2"},
        {"caf\xc3\xa9", "caf%C3%A9"},
        {"~-_.", "~-_."},
        {"100%", "100%25"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ferry_buf b;
        ferry_buf_init(&b, 4096);
        assert_int_equal(events_key_encode(cases[i].raw, strlen(cases[i].raw), &b), FERRY_OK);
        assert_string_equal(ferry_buf_str(&b), cases[i].enc);
        ferry_buf_cleanup(&b);
    }
    /* Over the buffer's cap: an error and the buffer unchanged. */
    ferry_buf b;
    ferry_buf_init(&b, 4);
    assert_int_equal(ferry_buf_append_str(&b, "ab"), FERRY_OK);
    assert_int_equal(events_key_encode("   ", 3, &b), FERRY_ERR_TOO_LARGE);
    assert_string_equal(ferry_buf_str(&b), "ab");
    ferry_buf_cleanup(&b);
}

static void test_format_rejects_bad_input(void **state)
{
    (void)state;
    ferry_buf b;
    ferry_buf_init(&b, EVENTS_MAX_EVENT_LEN);
    events_object o = sample_object();
    o.key = NULL;
    assert_int_equal(events_format(&o, &b), FERRY_ERR_INVALID);
    o = sample_object();
    o.device = "";
    assert_int_equal(events_format(&o, &b), FERRY_ERR_INVALID);
    o = sample_object();
    o.size = -1;
    assert_int_equal(events_format(&o, &b), FERRY_ERR_INVALID);
    o = sample_object();
    o.sha256 = "abc";
    assert_int_equal(events_format(&o, &b), FERRY_ERR_INVALID);
    o = sample_object();
    o.key = "bad\xff\xfeutf8";
    assert_int_equal(events_format(&o, &b), FERRY_ERR_INVALID);
    o = sample_object();
    o.method = (events_method)7;
    assert_int_equal(events_format(&o, &b), FERRY_ERR_INVALID);
    char *long_key = malloc(EVENTS_MAX_KEY_LEN + 2);
    memset(long_key, 'k', EVENTS_MAX_KEY_LEN + 1);
    long_key[EVENTS_MAX_KEY_LEN + 1] = '\0';
    o = sample_object();
    o.key = long_key;
    assert_int_equal(events_format(&o, &b), FERRY_ERR_TOO_LARGE);
    free(long_key);
    assert_int_equal(events_format(NULL, &b), FERRY_ERR_INVALID);
    assert_int_equal(b.len, 0); /* nothing appended on any failure */
    ferry_buf_cleanup(&b);
}

static json_t *parse_buf(const ferry_buf *b)
{
    json_error_t err;
    json_t *v = json_loadb(ferry_buf_str(b), b->len, JSON_REJECT_DUPLICATES, &err);
    assert_non_null(v);
    return v;
}

static void test_receipt(void **state)
{
    (void)state;
    events_object o = sample_object();
    ferry_buf b;
    ferry_buf_init(&b, EVENTS_MAX_DEVICE_MESSAGE_LEN);
    assert_int_equal(events_receipt(&o, &b), FERRY_OK);
    json_t *v = parse_buf(&b);
    assert_string_equal(json_string_value(json_object_get(v, "type")), "receipt");
    assert_string_equal(json_string_value(json_object_get(v, "id")), "r-42");
    assert_string_equal(json_string_value(json_object_get(v, "grant")), "g_1");
    assert_string_equal(json_string_value(json_object_get(v, "key")), o.key); /* raw */
    assert_int_equal(json_integer_value(json_object_get(v, "size")), 16044);
    assert_string_equal(json_string_value(json_object_get(v, "sha256")),
                        "21d8203651e6f1e9a5a53c93ad7792d52ee2b8d2c5654589d0b53c1d4be19cde");
    assert_string_equal(json_string_value(json_object_get(v, "etag")),
                        "9b2cf535f27731c974343645a3985328");
    json_decref(v);
    ferry_buf_cleanup(&b);
}

static json_t *processed(const char *result, size_t len)
{
    events_object o = sample_object();
    ferry_buf b;
    ferry_buf_init(&b, EVENTS_MAX_DEVICE_MESSAGE_LEN);
    assert_int_equal(events_processed(&o, "wav-check", result, len, &b), FERRY_OK);
    assert_true(b.len < 128 * 1024);
    json_t *v = parse_buf(&b);
    ferry_buf_cleanup(&b);
    assert_string_equal(json_string_value(json_object_get(v, "type")), "processed");
    assert_string_equal(json_string_value(json_object_get(v, "id")), "r-42");
    assert_string_equal(json_string_value(json_object_get(v, "target")), "wav-check");
    assert_true(json_is_object(json_object_get(v, "result")));
    return v;
}

static const char *result_error(json_t *v)
{
    return json_string_value(json_object_get(json_object_get(v, "result"), "error"));
}

static void test_processed_wraps_result(void **state)
{
    (void)state;
    const char *r = "{\"format\":\"wav\",\"duration_s\":1.5,\"channels\":1}";
    json_t *v = processed(r, strlen(r));
    json_t *res = json_object_get(v, "result");
    assert_string_equal(json_string_value(json_object_get(res, "format")), "wav");
    assert_int_equal(json_integer_value(json_object_get(res, "channels")), 1);
    assert_null(result_error(v));
    json_decref(v);
}

static void test_processed_replaces_bad_results(void **state)
{
    (void)state;
    json_t *v = processed("[1,2]", 5);
    assert_string_equal(result_error(v), "processor result is not a JSON object");
    json_decref(v);
    v = processed("{\"a\":", 5);
    assert_string_equal(result_error(v), "processor result is not a JSON object");
    json_decref(v);
    v = processed("{\"a\":1,\"a\":2}", 13);
    assert_string_equal(result_error(v), "processor result is not a JSON object");
    json_decref(v);
    v = processed(NULL, 0);
    assert_string_equal(result_error(v), "processor printed no result");
    json_decref(v);

    /* Just under the cap as input, but over it once wrapped. */
    size_t n = 128 * 1024 - 40;
    char *big = malloc(n + 1);
    memcpy(big, "{\"blob\":\"", 9);
    memset(big + 9, 'x', n - 11);
    memcpy(big + n - 2, "\"}", 2);
    big[n] = '\0';
    v = processed(big, n);
    assert_string_equal(result_error(v), "processor result too large");
    json_decref(v);
    /* Over the cap as input: not even parsed. */
    char *huge = malloc(256 * 1024);
    memset(huge, ' ', 256 * 1024);
    v = processed(huge, 256 * 1024);
    assert_string_equal(result_error(v), "processor result too large");
    json_decref(v);
    free(huge);
    free(big);
}

static void test_webhook_signature(void **state)
{
    (void)state;
    /* RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?". */
    char sig[7 + 64 + 1];
    const char *data = "what do ya want for nothing?";
    assert_int_equal(
        events_webhook_signature((const unsigned char *)"Jefe", 4, data, strlen(data), sig),
        FERRY_OK);
    assert_string_equal(sig, "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec"
                             "3843");
    assert_int_equal(events_webhook_signature(NULL, 0, data, 1, sig), FERRY_ERR_INVALID);
}

static void test_retry_backoff(void **state)
{
    (void)state;
    events_retry_policy p = {.min_ms = 1000, .max_ms = 60000, .max_attempts = 8};
    int64_t next = -1;
    /* random 0.999...: the top of the jitter range, i.e. the full delay. */
    const int64_t full[] = {1000, 2000, 4000, 8000, 16000, 32000, 60000};
    for (unsigned a = 1; a <= 7; a++) {
        assert_int_equal(events_next_attempt(&p, a, 5000, 0.9999999, &next), EVENTS_NEXT_RETRY);
        assert_in_range(next - 5000, full[a - 1] - 1, full[a - 1]);
        /* random 0: half the delay (equal jitter). */
        assert_int_equal(events_next_attempt(&p, a, 5000, 0.0, &next), EVENTS_NEXT_RETRY);
        assert_int_equal(next - 5000, full[a - 1] / 2);
    }
    /* The 8th failure: dead-letter, and next is not written. */
    next = -7;
    assert_int_equal(events_next_attempt(&p, 8, 5000, 0.5, &next), EVENTS_NEXT_DEAD_LETTER);
    assert_int_equal(events_next_attempt(&p, 100, 5000, 0.5, &next), EVENTS_NEXT_DEAD_LETTER);
    assert_int_equal(next, -7);
    /* Huge attempt numbers and times do not overflow. */
    p.max_attempts = UINT32_MAX;
    assert_int_equal(events_next_attempt(&p, 4000000000u, INT64_MAX - 10, 0.5, &next),
                     EVENTS_NEXT_RETRY);
    assert_int_equal(next, INT64_MAX);
    /* No retries at all. */
    p.max_attempts = 0;
    assert_int_equal(events_next_attempt(&p, 0, 0, 0.5, &next), EVENTS_NEXT_DEAD_LETTER);
    assert_int_equal(events_next_attempt(NULL, 1, 0, 0.5, &next), EVENTS_NEXT_DEAD_LETTER);
}

static void test_retry_jitter_spread(void **state)
{
    (void)state;
    events_retry_policy p = EVENTS_RETRY_DEFAULT;
    int64_t lo = INT64_MAX, hi = 0;
    for (int i = 0; i < 1000; i++) {
        int64_t next = 0;
        assert_int_equal(events_next_attempt(&p, 3, 0, i / 1000.0, &next), EVENTS_NEXT_RETRY);
        lo = next < lo ? next : lo;
        hi = next > hi ? next : hi;
    }
    assert_int_equal(lo, 2000);
    assert_in_range(hi, 3990, 4000);
}

static void test_target_argument_checks(void **state)
{
    (void)state;
    events_target *t = NULL;
    events_webhook_config w = {
        .url = "http://127.0.0.1/", .secret = (const unsigned char *)"k", .secret_len = 1};
    assert_int_equal(events_webhook_new(&w, &t), FERRY_ERR_INVALID); /* not https */
    w.url = "https://127.0.0.1/";
    w.secret_len = 0;
    assert_int_equal(events_webhook_new(&w, &t), FERRY_ERR_INVALID);
    const char *rel[] = {"true", NULL};
    events_command_config c = {.argv = rel};
    assert_int_equal(events_command_new(&c, &t), FERRY_ERR_INVALID); /* no PATH search */
    events_mqtt_config m = {.topic = "a/#"};
    assert_int_equal(events_mqtt_new(&m, &t), FERRY_ERR_INVALID);
    assert_null(t);
    events_target_free(NULL);
    events_delivery_cleanup(NULL);

    const char *ok[] = {"/bin/true", NULL};
    c.argv = ok;
    assert_int_equal(events_command_new(&c, &t), FERRY_OK);
    events_delivery d;
    events_delivery_init(&d);
    assert_int_equal(events_target_deliver(t, "e1", "{}", 2, 0, &d), FERRY_ERR_INVALID);
    assert_int_equal(events_target_deliver(t, "e1", "{}", 2, 5000, &d), FERRY_OK);
    assert_int_equal(d.outcome, EVENTS_DELIVERED);
    assert_string_equal(events_target_kind(t), "command");
    events_delivery_cleanup(&d);
    events_target_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_format_matches_s3_sample),
        cmocka_unit_test(test_format_methods_and_options),
        cmocka_unit_test(test_sequencer_orders_as_strings),
        cmocka_unit_test(test_key_encoding),
        cmocka_unit_test(test_format_rejects_bad_input),
        cmocka_unit_test(test_receipt),
        cmocka_unit_test(test_processed_wraps_result),
        cmocka_unit_test(test_processed_replaces_bad_results),
        cmocka_unit_test(test_webhook_signature),
        cmocka_unit_test(test_retry_backoff),
        cmocka_unit_test(test_retry_jitter_spread),
        cmocka_unit_test(test_target_argument_checks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
