/*
 * grants_json_test.c - the answer writer: every string it writes reads back
 * through jansson (the parser the devices' side of the tests uses) as the
 * same string, escapes included; invalid UTF-8, the size cap and misuse are
 * errors, never broken text.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <jansson.h>
#include <string.h>

#include "grants/grant_json.h"

/* Writes {"k": s} and checks that jansson reads s back. */
static void expect_round_trip(const char *s)
{
    ferry_buf b;
    grant_json w;
    ferry_buf_init(&b, 4096);
    grant_json_begin(&w, &b);
    grant_json_string(&w, "k", s);
    assert_int_equal(grant_json_finish(&w), FERRY_OK);
    json_error_t err;
    json_t *doc = json_loads(ferry_buf_str(&b), JSON_REJECT_DUPLICATES, &err);
    assert_non_null(doc);
    assert_string_equal(json_string_value(json_object_get(doc, "k")), s);
    json_decref(doc);
    ferry_buf_cleanup(&b);
}

static void test_strings_round_trip(void **state)
{
    (void)state;
    static const char *const cases[] = {
        "",
        "plain ascii /path?x=1&y=2",
        "quote \" backslash \\ slash /",
        "controls \b\f\n\r\t \x01\x1f end",
        "\x7f delete is not escaped",
        "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x93\xa6", /* 2-, 3- and 4-byte UTF-8 */
        "\"\\\"",
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        expect_round_trip(cases[i]);
}

static void test_exact_text(void **state)
{
    (void)state;
    ferry_buf b;
    grant_json w;
    ferry_buf_init(&b, 4096);
    grant_json_begin(&w, &b);
    grant_json_string(&w, "type", "grant");
    grant_json_uint(&w, "size", UINT64_MAX);
    grant_json_string_or_null(&w, "id", NULL);
    grant_json_object(&w, "headers");
    grant_json_string(&w, "content-type", "a\x01");
    grant_json_object(&w, "empty");
    grant_json_end(&w);
    grant_json_end(&w);
    grant_json_string(&w, "last", "x");
    assert_int_equal(grant_json_finish(&w), FERRY_OK);
    assert_string_equal(ferry_buf_str(&b),
                        "{\"type\":\"grant\",\"size\":18446744073709551615,\"id\":null,"
                        "\"headers\":{\"content-type\":\"a\\u0001\",\"empty\":{}},\"last\":\"x\"}");
    ferry_buf_cleanup(&b);
}

static void test_invalid_utf8_is_refused(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "\xc3",             /* cut short */
        "\xc0\xaf",         /* overlong */
        "\xed\xa0\x80",     /* surrogate */
        "\xf4\x90\x80\x80", /* over U+10FFFF */
        "\x80",             /* lone continuation */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ferry_buf b;
        grant_json w;
        ferry_buf_init(&b, 4096);
        grant_json_begin(&w, &b);
        grant_json_string(&w, "k", bad[i]);
        grant_json_string(&w, "after", "ok"); /* sticky: nothing more happens */
        assert_int_equal(grant_json_finish(&w), FERRY_ERR_INVALID);
        assert_null(strstr(ferry_buf_str(&b), "after"));
        ferry_buf_cleanup(&b);
    }
}

static void test_cap_and_misuse(void **state)
{
    (void)state;
    ferry_buf b;
    grant_json w;
    ferry_buf_init(&b, 16);
    grant_json_begin(&w, &b);
    grant_json_string(&w, "key", "a value longer than the cap");
    assert_int_equal(grant_json_finish(&w), FERRY_ERR_TOO_LARGE);
    ferry_buf_cleanup(&b);

    ferry_buf_init(&b, 4096);
    grant_json_begin(&w, &b);
    grant_json_end(&w);
    grant_json_string(&w, "k", "v"); /* after the top object closed */
    assert_int_equal(grant_json_finish(&w), FERRY_ERR_INVALID);
    ferry_buf_cleanup(&b);

    ferry_buf_init(&b, 4096);
    grant_json_begin(&w, &b);
    for (int i = 0; i < GRANT_JSON_DEPTH_MAX; i++)
        grant_json_object(&w, "n");
    assert_int_equal(grant_json_finish(&w), FERRY_ERR_RANGE);
    ferry_buf_cleanup(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_strings_round_trip),
        cmocka_unit_test(test_exact_text),
        cmocka_unit_test(test_invalid_utf8_is_refused),
        cmocka_unit_test(test_cap_and_misuse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
