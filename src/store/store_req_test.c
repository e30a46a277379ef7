/*
 * store_req_test.c - unit tests of the store's pure request helpers: path
 * splitting and key checks (hostile bytes, lengths, UTF-8), S3
 * sub-resources in queries, grant ids in keys, Range headers, escaping and
 * base64 digests.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <string.h>

#include "store/store_req.h"

static store_path_result parse(const char *p, store_target *t)
{
    return store_parse_path(p, strlen(p), t);
}

static void test_paths(void **state)
{
    store_target t;
    (void)state;
    assert_int_equal(parse("/ingest/a/b%20c+d", &t), STORE_PATH_OK);
    assert_string_equal(t.bucket, "ingest");
    assert_string_equal(t.key, "a/b c+d");
    assert_int_equal(t.key_len, 7);
    assert_int_equal(parse("/ingest", &t), STORE_PATH_OK);
    assert_string_equal(t.key, "");
    assert_int_equal(parse("/ingest/", &t), STORE_PATH_OK);
    assert_int_equal(t.key_len, 0);
    assert_int_equal(parse("/", &t), STORE_PATH_OK);
    assert_string_equal(t.bucket, "");
    /* Keys are names, not paths: dots and slashes are kept as they are. */
    assert_int_equal(parse("/ingest/../../etc/passwd", &t), STORE_PATH_OK);
    assert_string_equal(t.key, "../../etc/passwd");
    assert_int_equal(parse("/ingest//abs", &t), STORE_PATH_OK);
    assert_string_equal(t.key, "/abs");
    /* Hostile bytes. */
    assert_int_equal(parse("ingest/a", &t), STORE_PATH_MALFORMED);
    assert_int_equal(parse("", &t), STORE_PATH_MALFORMED);
    assert_int_equal(parse("/ingest/a%2", &t), STORE_PATH_MALFORMED);
    assert_int_equal(parse("/ingest/a%zz", &t), STORE_PATH_MALFORMED);
    assert_int_equal(parse("/ingest/a%00b", &t), STORE_PATH_BAD_KEY);
    assert_int_equal(parse("/ingest/a%0ab", &t), STORE_PATH_BAD_KEY);
    assert_int_equal(parse("/ingest/a%7f", &t), STORE_PATH_BAD_KEY);
    assert_int_equal(parse("/ingest/%c3%28", &t), STORE_PATH_BAD_KEY);       /* bad UTF-8 */
    assert_int_equal(parse("/ingest/%c0%af", &t), STORE_PATH_BAD_KEY);       /* overlong '/' */
    assert_int_equal(parse("/ingest/%ed%a0%80", &t), STORE_PATH_BAD_KEY);    /* surrogate */
    assert_int_equal(parse("/ingest/%f4%90%80%80", &t), STORE_PATH_BAD_KEY); /* > U+10FFFF */
    assert_int_equal(parse("/ingest/%c3%a9t%c3%a9", &t), STORE_PATH_OK);
    assert_int_equal(parse("/in%2Fgest/a", &t), STORE_PATH_BAD_BUCKET);
    assert_int_equal(parse("/in gest/a", &t), STORE_PATH_BAD_BUCKET);

    /* 1,024 bytes of key pass, 1,025 do not (also when escaped). */
    char p[4 * 1100];
    strcpy(p, "/ingest/");
    memset(p + 8, 'k', 1024);
    p[8 + 1024] = '\0';
    assert_int_equal(parse(p, &t), STORE_PATH_OK);
    assert_int_equal(t.key_len, 1024);
    strcat(p, "k");
    assert_int_equal(parse(p, &t), STORE_PATH_KEY_TOO_LONG);
    strcpy(p, "/ingest/");
    for (int i = 0; i < 1025; i++)
        strcat(p, "%41");
    assert_int_equal(parse(p, &t), STORE_PATH_KEY_TOO_LONG);
}

static bool sub(const char *q, char *name)
{
    return store_query_subresource(q, strlen(q), name, 40);
}

static void test_subresources(void **state)
{
    char n[40];
    (void)state;
    /* Pre-signed URLs, listings and GetBucketLocation name none. */
    assert_false(sub("X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=00", n));
    assert_false(sub("list-type=2&prefix=a&delimiter=%2F&continuation-token=6162", n));
    assert_false(sub("location", n));
    assert_false(sub("", n));
    assert_false(sub("&&=&", n));
    assert_false(sub("aclx=1&xacl&ac=l", n));
    /* Those that change what a request means. */
    assert_true(sub("acl", n));
    assert_string_equal(n, "acl");
    assert_true(sub("uploads=", n));
    assert_string_equal(n, "uploads");
    assert_true(sub("partNumber=1&uploadId=abc&X-Amz-Date=1", n));
    assert_string_equal(n, "partNumber");
    assert_true(sub("X-Amz-Date=1&tagging", n));
    assert_string_equal(n, "tagging");
    assert_true(sub("versionId=null", n));
    assert_true(sub("delete", n));
    /* Escaped names are the names they spell; bad escapes are no name. */
    assert_true(sub("%61cl", n));
    assert_string_equal(n, "acl");
    assert_false(sub("%zzacl", n));
    assert_false(sub("acl%00", n));
    /* A short output buffer cuts the name, and is never overrun. */
    char small[4];
    assert_true(store_query_subresource("uploads", 7, small, sizeof small));
    assert_string_equal(small, "upl");
}

static void test_grant_ids(void **state)
{
    char id[64];
    (void)state;
    assert_true(store_key_grant_id("dev-a/2026/11/25/g_0123456789abcdefghjkmnpqrs-lung.wav", id,
                                   sizeof id));
    assert_string_equal(id, "g_0123456789abcdefghjkmnpqrs");
    assert_false(store_key_grant_id("dev-a/2026/11/25/nogrant", id, sizeof id));
    assert_false(store_key_grant_id("dev-a/2026/11/25/g_short-x", id, sizeof id));
    assert_false(store_key_grant_id("-x", id, sizeof id));
    assert_false(store_key_grant_id("a/", id, sizeof id));
}

static void test_ranges(void **state)
{
    uint64_t a = 0, n = 0;
    (void)state;
    assert_int_equal(store_parse_range(NULL, 10, &a, &n), STORE_RANGE_NONE);
    assert_int_equal(store_parse_range("bytes=0-3", 10, &a, &n), STORE_RANGE_OK);
    assert_true(a == 0 && n == 4);
    assert_int_equal(store_parse_range("bytes=5-", 10, &a, &n), STORE_RANGE_OK);
    assert_true(a == 5 && n == 5);
    assert_int_equal(store_parse_range("bytes=-3", 10, &a, &n), STORE_RANGE_OK);
    assert_true(a == 7 && n == 3);
    assert_int_equal(store_parse_range("bytes=-30", 10, &a, &n), STORE_RANGE_OK);
    assert_true(a == 0 && n == 10);
    assert_int_equal(store_parse_range("bytes=8-100", 10, &a, &n), STORE_RANGE_OK);
    assert_true(a == 8 && n == 2);
    assert_int_equal(store_parse_range("bytes=10-", 10, &a, &n), STORE_RANGE_UNSATISFIABLE);
    assert_int_equal(store_parse_range("bytes=-0", 10, &a, &n), STORE_RANGE_UNSATISFIABLE);
    assert_int_equal(store_parse_range("bytes=3-1", 10, &a, &n), STORE_RANGE_NONE);
    assert_int_equal(store_parse_range("bytes=0-1,3-4", 10, &a, &n), STORE_RANGE_NONE);
    assert_int_equal(store_parse_range("bytes=99999999999999999999-", 10, &a, &n),
                     STORE_RANGE_NONE);
    assert_int_equal(store_parse_range("items=0-1", 10, &a, &n), STORE_RANGE_NONE);
}

static void test_copy_ranges_and_part_numbers(void **state)
{
    uint64_t a = 99, n = 99;
    unsigned part = 0;
    (void)state;
    assert_int_equal(store_parse_copy_range("bytes=0-9", 10, &a, &n), STORE_COPY_RANGE_OK);
    assert_int_equal(a, 0);
    assert_int_equal(n, 10);
    assert_int_equal(store_parse_copy_range("bytes=4-4", 10, &a, &n), STORE_COPY_RANGE_OK);
    assert_int_equal(a, 4);
    assert_int_equal(n, 1);
    assert_int_equal(store_parse_copy_range("bytes=0-10", 10, &a, &n), STORE_COPY_RANGE_OUTSIDE);
    assert_int_equal(store_parse_copy_range("bytes=0-0", 0, &a, &n), STORE_COPY_RANGE_OUTSIDE);
    const char *bad[] = {
        NULL,         "",          "bytes=",        "bytes=-5",
        "bytes=5-",   "bytes=5-4", "bytes=0-1,3-4", "bytes= 0-1",
        "bytes=+0-1", "items=0-1", "bytes=0x1-2",   "bytes=99999999999999999999-1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(store_parse_copy_range(bad[i], 100, &a, &n), STORE_COPY_RANGE_MALFORMED);
    assert_true(store_parse_part_number("1", &part));
    assert_int_equal(part, 1);
    assert_true(store_parse_part_number("10000", &part));
    assert_int_equal(part, 10000);
    assert_true(store_parse_part_number("007", &part));
    assert_int_equal(part, 7);
    int64_t t = 0;
    assert_true(store_parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT", &t));
    char iso[STORE_ISO_TIME_LEN + 1];
    store_iso_time(t, iso);
    assert_string_equal(iso, "1994-11-06T08:49:37.000Z");
    assert_int_equal(t, 784111777);
    assert_true(store_parse_http_date("Thu, 29 Feb 2024 00:00:00 GMT", &t));
    const char *bad_dates[] = {NULL,
                               "",
                               "Sun, 06 Nov 1994 08:49:37 UTC",
                               "Sunday, 06-Nov-94 08:49:37 GMT",
                               "Sun Nov  6 08:49:37 1994",
                               "Sun, 06 Nov 1994 24:49:37 GMT",
                               "Sun, 31 Apr 1994 08:49:37 GMT",
                               "Thu, 29 Feb 2023 00:00:00 GMT",
                               "Sun, 06 Nox 1994 08:49:37 GMT",
                               "Sun, 06 Nov 1969 08:49:37 GMT",
                               "Sun, 06 Nov 1994 08:49:37 GMT "};
    for (size_t i = 0; i < sizeof bad_dates / sizeof bad_dates[0]; i++)
        assert_false(store_parse_http_date(bad_dates[i], &t));
    const char *bad_parts[] = {
        NULL, "", "0", "10001", "-1", "+1", " 1", "1 ", "1.0", "abc", "99999999999999999999"};
    for (size_t i = 0; i < sizeof bad_parts / sizeof bad_parts[0]; i++)
        assert_false(store_parse_part_number(bad_parts[i], &part));
}

static void test_escape_and_digests(void **state)
{
    ferry_buf b;
    unsigned char md5[16];
    (void)state;
    ferry_buf_init(&b, 1024);
    assert_int_equal(store_xml_escape(&b, "a<&>\"'", 6), FERRY_OK);
    assert_string_equal(ferry_buf_str(&b), "a&lt;&amp;&gt;&quot;&apos;");
    ferry_buf_reset(&b);
    assert_int_equal(store_url_encode(&b, "a b/\xc3\xa9", 6), FERRY_OK);
    assert_string_equal(ferry_buf_str(&b), "a%20b/%C3%A9");
    ferry_buf_cleanup(&b);
    /* MD5("") */
    assert_true(store_b64_decode_exact("1B2M2Y8AsgTpgAmY7PhCfg==", md5, 16));
    assert_int_equal(md5[0], 0xd4);
    assert_false(store_b64_decode_exact("1B2M2Y8AsgTpgAmY7PhCfg=", md5, 16));
    assert_false(store_b64_decode_exact("1B2M2Y8AsgTpgAmY7PhCf!==", md5, 16));
    assert_false(store_b64_decode_exact("", md5, 16));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_paths),
        cmocka_unit_test(test_subresources),
        cmocka_unit_test(test_grant_ids),
        cmocka_unit_test(test_ranges),
        cmocka_unit_test(test_copy_ranges_and_part_numbers),
        cmocka_unit_test(test_escape_and_digests),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
