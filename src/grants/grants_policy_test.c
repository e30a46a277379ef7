/*
 * grants_policy_test.c - policy (expiry formula and clamps, content-type
 * patterns, each check's code, validation, merging overrides, method
 * choice), the token-bucket rate limiter (refill, burst, eviction, threads)
 * and grant_build feeding a real ledger.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "grants/grants.h"

#define SEC INT64_C(1000000000)

static void test_expiry(void **state)
{
    (void)state;
    grant_policy p;
    grant_policy_defaults(&p);
    p.expiry_min_s = 60;
    p.expiry_base_s = 300;
    p.expiry_max_s = 3600;
    p.min_bandwidth_bps = 1000;
    /* base + ceil(size / bandwidth) inside the bounds. */
    assert_int_equal(grant_policy_expiry_s(&p, 0), 300);
    assert_int_equal(grant_policy_expiry_s(&p, 1), 301);
    assert_int_equal(grant_policy_expiry_s(&p, 1000), 301);
    assert_int_equal(grant_policy_expiry_s(&p, 1001), 302);
    assert_int_equal(grant_policy_expiry_s(&p, 2000000), 2300);
    /* Clamped to max, and to min when base is below it. */
    assert_int_equal(grant_policy_expiry_s(&p, 100000000), 3600);
    p.expiry_base_s = 0;
    assert_int_equal(grant_policy_expiry_s(&p, 10), 60);
    /* Never over 7 days, whatever the policy says; no overflow at 2^53 or
     * UINT64_MAX with a 1 B/s link. */
    p.expiry_max_s = INT64_C(1) << 40;
    p.min_bandwidth_bps = 1;
    assert_int_equal(grant_policy_expiry_s(&p, GRANT_SIZE_MAX), 604800);
    assert_int_equal(grant_policy_expiry_s(&p, UINT64_MAX), 604800);
    p.expiry_base_s = INT64_MAX;
    assert_int_equal(grant_policy_expiry_s(&p, 1), 604800);
    /* Nonsense bounds still give 1..604800. */
    p.expiry_min_s = -5;
    p.expiry_max_s = -5;
    p.expiry_base_s = -5;
    p.min_bandwidth_bps = 0;
    assert_int_equal(grant_policy_expiry_s(&p, 0), 1);
    p.expiry_min_s = 1000;
    p.expiry_max_s = 10;
    assert_int_equal(grant_policy_expiry_s(&p, 0), 10);
}

static void test_content_types(void **state)
{
    (void)state;
    assert_true(grant_content_type_allowed("*/*", "application/octet-stream"));
    assert_true(grant_content_type_allowed("image/*", "image/jpeg"));
    assert_true(grant_content_type_allowed("image/*", "image/svg+xml"));
    assert_false(grant_content_type_allowed("image/*", "imagex/jpeg"));
    assert_false(grant_content_type_allowed("image/*", "audio/wav"));
    assert_true(grant_content_type_allowed("image/*, audio/wav", "audio/wav"));
    assert_false(grant_content_type_allowed("image/*, audio/wav", "audio/x-wav"));
    assert_true(grant_content_type_allowed(" Audio/WAV ,text/plain", "audio/wav"));
    assert_false(grant_content_type_allowed("audio/wav", "audio/wa"));
    assert_false(grant_content_type_allowed("audio/wav", "audio/wavx"));
    assert_false(grant_content_type_allowed("", "audio/wav"));
    assert_false(grant_content_type_allowed("*/*", "not a type"));
    assert_false(grant_content_type_allowed(NULL, "a/b"));
    assert_false(grant_content_type_allowed("a/*", NULL));
}

static grant_request request(uint64_t size, const char *ct)
{
    grant_request r;
    memset(&r, 0, sizeof r);
    snprintf(r.id, sizeof r.id, "r-1");
    snprintf(r.name, sizeof r.name, "x.bin");
    snprintf(r.content_type, sizeof r.content_type, "%s", ct);
    r.size = size;
    return r;
}

static void test_policy_check(void **state)
{
    (void)state;
    grant_policy p;
    grant_rejection rej;
    grant_request r;
    grant_policy_defaults(&p);
    p.max_size_bytes = 1000;
    snprintf(p.content_types, sizeof p.content_types, "image/*,audio/wav");

    r = request(1000, "image/png");
    assert_int_equal(grant_policy_check(&p, &r, &rej), FERRY_OK);
    r = request(1001, "image/png");
    assert_int_equal(grant_policy_check(&p, &r, &rej), FERRY_ERR_DENIED);
    assert_int_equal(rej.code, GRANT_REJECT_TOO_LARGE);
    assert_true(rej.has_id);
    assert_string_equal(rej.id, "r-1");
    assert_string_equal(rej.message, "size 1001 is over this device's limit of 1000 bytes");
    r = request(10, "video/mp4");
    assert_int_equal(grant_policy_check(&p, &r, &rej), FERRY_ERR_DENIED);
    assert_int_equal(rej.code, GRANT_REJECT_CONTENT_TYPE);
    assert_string_equal(rej.message, "content type video/mp4 is not allowed");
    /* Disabled comes first, then size, then type. */
    p.disabled = true;
    r = request(5000, "video/mp4");
    assert_int_equal(grant_policy_check(&p, &r, &rej), FERRY_ERR_DENIED);
    assert_int_equal(rej.code, GRANT_REJECT_DEVICE_DISABLED);
    p.disabled = false;
    assert_int_equal(grant_policy_check(&p, &r, &rej), FERRY_ERR_DENIED);
    assert_int_equal(rej.code, GRANT_REJECT_TOO_LARGE);
}

static void test_policy_validate(void **state)
{
    (void)state;
    grant_policy p;
    const char *why = NULL;
    grant_policy_defaults(&p);
    assert_int_equal(grant_policy_validate(&p, &why), FERRY_OK);
    snprintf(p.content_types, sizeof p.content_types, "image/*, audio/wav ,application/x-foo+json");
    assert_int_equal(grant_policy_validate(&p, &why), FERRY_OK);

    static const char *const bad_types[] = {"",         "image", "*/jpeg", "ima ge/*",
                                            "image/*,", "a/b;c", "*"};
    for (size_t i = 0; i < sizeof bad_types / sizeof bad_types[0]; i++) {
        grant_policy_defaults(&p);
        snprintf(p.content_types, sizeof p.content_types, "%s", bad_types[i]);
        why = NULL;
        if (grant_policy_validate(&p, &why) != FERRY_ERR_CONFIG)
            fail_msg("content types \"%s\" accepted", bad_types[i]);
        assert_non_null(why);
    }
    grant_policy_defaults(&p);
    p.expiry_max_s = 604801;
    assert_int_equal(grant_policy_validate(&p, &why), FERRY_ERR_CONFIG);
    grant_policy_defaults(&p);
    p.expiry_min_s = 0;
    assert_int_equal(grant_policy_validate(&p, &why), FERRY_ERR_CONFIG);
    grant_policy_defaults(&p);
    p.expiry_min_s = 500;
    p.expiry_max_s = 400;
    p.expiry_base_s = 300;
    assert_int_equal(grant_policy_validate(&p, &why), FERRY_ERR_CONFIG);
    grant_policy_defaults(&p);
    p.min_bandwidth_bps = 0;
    assert_int_equal(grant_policy_validate(&p, &why), FERRY_ERR_CONFIG);
    grant_policy_defaults(&p);
    p.rate_per_s = NAN;
    assert_int_equal(grant_policy_validate(&p, &why), FERRY_ERR_CONFIG);
    grant_policy_defaults(&p);
    p.rate_burst = 0.5;
    assert_int_equal(grant_policy_validate(&p, &why), FERRY_ERR_CONFIG);
    grant_policy_defaults(&p);
    p.max_size_bytes = 0;
    assert_int_equal(grant_policy_validate(&p, &why), FERRY_ERR_CONFIG);
}

static void test_policy_merge_and_limits(void **state)
{
    (void)state;
    grant_policy fleet, p;
    ledger_device d;
    ledger_limits lim;
    grant_policy_defaults(&fleet);
    memset(&d, 0, sizeof d);
    snprintf(d.id, sizeof d.id, "dev-1");

    grant_policy_merge(&fleet, NULL, &p);
    assert_memory_equal(&p, &fleet, sizeof p);
    grant_policy_merge(&fleet, &d, &p); /* no overrides: unchanged */
    assert_memory_equal(&p, &fleet, sizeof p);

    d.max_size_bytes = (ledger_opt_u64){true, 77};
    d.content_types_set = true;
    snprintf(d.content_types, sizeof d.content_types, "image/*");
    d.expiry_max_s = (ledger_opt_i64){true, 120};
    d.rate_per_s = (ledger_opt_f64){true, 0.25};
    d.daily_quota_bytes = (ledger_opt_u64){true, 0};
    d.disabled = true;
    grant_policy_merge(&fleet, &d, &p);
    assert_int_equal(p.max_size_bytes, 77);
    assert_string_equal(p.content_types, "image/*");
    assert_int_equal(p.expiry_max_s, 120);
    assert_int_equal(p.expiry_min_s, fleet.expiry_min_s);
    assert_true(p.rate_per_s == 0.25);
    assert_true(p.rate_burst == fleet.rate_burst);
    assert_int_equal(p.daily_quota_bytes, 0);
    assert_true(p.disabled);
    /* In place. */
    grant_policy_merge(&fleet, &d, &fleet);
    assert_int_equal(fleet.max_size_bytes, 77);

    /* 2026-11-25T12:45:00Z -> that day's 00:00:00Z. */
    assert_int_equal(grant_day_start(1795610700), 1795564800);
    assert_int_equal(grant_day_start(1795564800), 1795564800);
    assert_int_equal(grant_day_start(-1), -86400);
    p.max_open_grants = 3;
    p.daily_quota_bytes = 99;
    grant_policy_limits(&p, 1795610700, &lim);
    assert_int_equal(lim.max_open_grants, 3);
    assert_int_equal(lim.daily_quota_bytes, 99);
    assert_int_equal(lim.day_start, 1795564800);
}

static void test_method_choice(void **state)
{
    (void)state;
    grant_policy p;
    grant_policy_defaults(&p);
    assert_int_equal(grant_method_choose(&p, GRANT_METHOD_AUTO, 1), GRANT_METHOD_PUT);
    assert_int_equal(grant_method_choose(&p, GRANT_METHOD_AUTO, UINT64_C(5) << 30),
                     GRANT_METHOD_PUT);
    assert_int_equal(grant_method_choose(&p, GRANT_METHOD_AUTO, (UINT64_C(5) << 30) + 1),
                     GRANT_METHOD_POST);
    p.put_max_bytes = 1000;
    assert_int_equal(grant_method_choose(&p, GRANT_METHOD_AUTO, 1001), GRANT_METHOD_POST);
    assert_int_equal(grant_method_choose(&p, GRANT_METHOD_PUT, 1001), GRANT_METHOD_PUT);
    assert_int_equal(grant_method_choose(&p, GRANT_METHOD_POST, 1), GRANT_METHOD_POST);
    assert_string_equal(grant_method_str(GRANT_METHOD_PUT), "PUT");
    assert_string_equal(grant_method_str(GRANT_METHOD_POST), "POST");
    assert_string_equal(grant_method_str(GRANT_METHOD_AUTO), "auto");
}

static bool take(grant_rate_limiter *rl, const char *dev, double rate, double burst, int64_t t)
{
    bool ok = false;
    assert_int_equal(grant_rate_take(rl, dev, rate, burst, t, &ok), FERRY_OK);
    return ok;
}

static void test_token_bucket(void **state)
{
    (void)state;
    grant_rate_limiter *rl = NULL;
    int64_t t = 1000 * SEC;
    assert_int_equal(grant_rate_limiter_new(100, &rl), FERRY_OK);
    /* Burst of 3, then refused, then one token per second (rate 1/s). */
    assert_true(take(rl, "a", 1.0, 3, t));
    assert_true(take(rl, "a", 1.0, 3, t));
    assert_true(take(rl, "a", 1.0, 3, t));
    assert_false(take(rl, "a", 1.0, 3, t));
    assert_false(take(rl, "a", 1.0, 3, t + SEC / 2));
    assert_true(take(rl, "a", 1.0, 3, t + SEC));
    assert_false(take(rl, "a", 1.0, 3, t + SEC));
    /* Other devices have their own buckets. */
    assert_true(take(rl, "b", 1.0, 1, t));
    assert_false(take(rl, "b", 1.0, 1, t));
    /* Refill is capped at the burst. */
    assert_true(take(rl, "a", 1.0, 3, t + 100 * SEC));
    assert_true(take(rl, "a", 1.0, 3, t + 100 * SEC));
    assert_true(take(rl, "a", 1.0, 3, t + 100 * SEC));
    assert_false(take(rl, "a", 1.0, 3, t + 100 * SEC));
    /* A clock going backwards refills nothing. */
    assert_false(take(rl, "a", 1.0, 3, t));
    /* Fractional rates: one per 4 s. */
    assert_true(take(rl, "c", 0.25, 1, t));
    assert_false(take(rl, "c", 0.25, 1, t + 3 * SEC));
    assert_true(take(rl, "c", 0.25, 1, t + 4 * SEC));
    /* Rate 0: unlimited, untracked. */
    size_t before = grant_rate_limiter_count(rl);
    for (int i = 0; i < 100; i++)
        assert_true(take(rl, "free", 0, 0, t));
    assert_int_equal(grant_rate_limiter_count(rl), before);
    /* Bad arguments. */
    bool ok;
    assert_int_equal(grant_rate_take(rl, "", 1, 1, t, &ok), FERRY_ERR_INVALID);
    assert_int_equal(grant_rate_take(rl, NULL, 1, 1, t, &ok), FERRY_ERR_INVALID);
    assert_int_equal(grant_rate_take(NULL, "a", 1, 1, t, &ok), FERRY_ERR_INVALID);
    grant_rate_limiter_free(rl);
    grant_rate_limiter_free(NULL);
    assert_int_equal(grant_rate_limiter_new(0, &rl), FERRY_ERR_INVALID);
}

static void test_token_bucket_eviction(void **state)
{
    (void)state;
    grant_rate_limiter *rl = NULL;
    char dev[32];
    int64_t t = 0;
    assert_int_equal(grant_rate_limiter_new(4, &rl), FERRY_OK);
    /* Four devices each spend their single token. */
    for (int i = 0; i < 4; i++) {
        snprintf(dev, sizeof dev, "d%d", i);
        assert_true(take(rl, dev, 1.0, 1, t + i));
    }
    assert_int_equal(grant_rate_limiter_count(rl), 4);
    /* A fifth arrives while none has refilled: the idle-longest (d0) goes,
     * the table stays at its bound. */
    assert_true(take(rl, "d4", 1.0, 1, t + 10));
    assert_int_equal(grant_rate_limiter_count(rl), 4);
    /* d1 is still tracked and still empty. */
    assert_false(take(rl, "d1", 1.0, 1, t + 20));
    /* Two seconds later every bucket has refilled: one sweep frees them all,
     * which loses nothing since a full bucket is a fresh bucket. */
    assert_true(take(rl, "d5", 1.0, 1, t + 3 * SEC));
    assert_int_equal(grant_rate_limiter_count(rl), 1);
    grant_rate_limiter_free(rl);
}

typedef struct rate_thread {
    grant_rate_limiter *rl;
    int allowed;
} rate_thread;

static void *rate_worker(void *arg)
{
    rate_thread *rt = arg;
    for (int i = 0; i < 1000; i++) {
        bool ok = false;
        if (grant_rate_take(rt->rl, "shared", 1.0, 100, 5 * SEC, &ok) == FERRY_OK && ok)
            rt->allowed++;
    }
    return NULL;
}

static void test_token_bucket_threads(void **state)
{
    (void)state;
    grant_rate_limiter *rl = NULL;
    pthread_t th[4];
    rate_thread rt[4];
    assert_int_equal(grant_rate_limiter_new(16, &rl), FERRY_OK);
    for (int i = 0; i < 4; i++) {
        rt[i] = (rate_thread){rl, 0};
        assert_int_equal(pthread_create(&th[i], NULL, rate_worker, &rt[i]), 0);
    }
    int total = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        total += rt[i].allowed;
    }
    /* 4000 attempts at one instant against a burst of 100. */
    assert_int_equal(total, 100);
    grant_rate_limiter_free(rl);
}

static void test_build_and_ledger(void **state)
{
    (void)state;
    char dir[] = "/tmp/ferry-grants-XXXXXX";
    char path[64];
    ledger *l = NULL;
    grant_policy p;
    grant_request r;
    ledger_grant g, back;
    ledger_limits lim;
    ledger_verdict v;
    const int64_t now = 1795610700; /* 2026-11-25T12:45:00Z */

    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/l.db", dir);
    assert_int_equal(ledger_open(path, &l), FERRY_OK);
    grant_policy_defaults(&p);
    p.max_open_grants = 1;
    p.min_bandwidth_bps = 1000;
    r = request(5000, "audio/wav");
    snprintf(r.name, sizeof r.name, "lung.wav");
    r.has_sha256 = true;
    memset(r.sha256_hex, 'a', GRANT_SHA256_HEX_LEN);

    assert_int_equal(grant_build(&p, &r, "dev-001", "ingest", now, &g), FERRY_OK);
    assert_true(grant_id_valid(g.id));
    assert_int_equal(strncmp(g.key, "dev-001/2026/11/25/", 19), 0);
    assert_int_equal(strncmp(g.key + 19, g.id, GRANT_ID_LEN), 0);
    assert_string_equal(g.key + 19 + GRANT_ID_LEN, "-lung.wav");
    assert_string_equal(g.method, "PUT");
    assert_string_equal(g.bucket, "ingest");
    assert_string_equal(g.request_id, "r-1");
    assert_string_equal(g.sha256, r.sha256_hex);
    assert_int_equal(g.expires_at, now + 305);
    grant_policy_limits(&p, now, &lim);
    assert_int_equal(ledger_grant_insert(l, &g, &lim, &v), FERRY_OK);
    assert_int_equal(v, LEDGER_INSERTED);
    assert_int_equal(ledger_grant_get(l, g.id, &back), FERRY_OK);
    assert_string_equal(back.key, g.key);
    /* A second grant passes the policy but not the open-grant limit. */
    assert_int_equal(grant_build(&p, &r, "dev-001", "ingest", now, &g), FERRY_OK);
    assert_int_equal(ledger_grant_insert(l, &g, &lim, &v), FERRY_OK);
    assert_int_equal(v, LEDGER_OVER_OPEN_GRANTS);

    assert_int_equal(grant_build(&p, &r, "bad/dev", "ingest", now, &g), FERRY_ERR_INVALID);
    assert_int_equal(grant_build(&p, &r, "dev", "", now, &g), FERRY_ERR_INVALID);
    assert_int_equal(
        grant_build(&p, &r, "dev",
                    "a-bucket-name-that-is-longer-than-sixty-three-characters-in-all-x", now, &g),
        FERRY_ERR_TOO_LARGE);
    ledger_close(l);
    static const char *const suffixes[] = {"", "-wal", "-shm"};
    for (size_t i = 0; i < 3; i++) {
        char p2[80];
        snprintf(p2, sizeof p2, "%s%s", path, suffixes[i]);
        unlink(p2);
    }
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_expiry),
        cmocka_unit_test(test_content_types),
        cmocka_unit_test(test_policy_check),
        cmocka_unit_test(test_policy_validate),
        cmocka_unit_test(test_policy_merge_and_limits),
        cmocka_unit_test(test_method_choice),
        cmocka_unit_test(test_token_bucket),
        cmocka_unit_test(test_token_bucket_eviction),
        cmocka_unit_test(test_token_bucket_threads),
        cmocka_unit_test(test_build_and_ledger),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
