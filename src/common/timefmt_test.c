/* timefmt_test.c - formatting and strict parsing of UTC times. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "common/timefmt.h"

static void test_formats_known_instants(void **state)
{
    (void)state;
    char iso[FERRY_ISO8601_LEN + 1], amz[FERRY_AMZ_DATETIME_LEN + 1], day[FERRY_AMZ_DATE_LEN + 1];
    ferry_time_iso8601(0, iso);
    assert_string_equal(iso, "1970-01-01T00:00:00Z");
    /* 2015-08-30T12:36:00Z is the instant of AWS's SigV4 test suite. */
    ferry_time_iso8601(1440938160, iso);
    assert_string_equal(iso, "2015-08-30T12:36:00Z");
    ferry_time_amz_datetime(1440938160, amz);
    assert_string_equal(amz, "20150830T123600Z");
    ferry_time_amz_date(1440938160, day);
    assert_string_equal(day, "20150830");
    /* A leap day and the last second of a year. */
    ferry_time_iso8601(951782400, iso);
    assert_string_equal(iso, "2000-02-29T00:00:00Z");
    ferry_time_iso8601(1798761599, iso);
    assert_string_equal(iso, "2026-12-31T23:59:59Z");
}

static void test_parse_round_trips(void **state)
{
    (void)state;
    for (int64_t t = 0; t < 4102444800; t += 86400 * 37 + 3607) {
        char iso[FERRY_ISO8601_LEN + 1], amz[FERRY_AMZ_DATETIME_LEN + 1];
        int64_t back = -1;
        ferry_time_iso8601(t, iso);
        assert_int_equal(ferry_time_parse_iso8601(iso, &back), FERRY_OK);
        assert_int_equal(back, t);
        ferry_time_amz_datetime(t, amz);
        assert_int_equal(ferry_time_parse_amz_datetime(amz, &back), FERRY_OK);
        assert_int_equal(back, t);
    }
}

static void test_parse_accepts_fractional_seconds(void **state)
{
    (void)state;
    int64_t t;
    assert_int_equal(ferry_time_parse_iso8601("2015-08-30T12:36:00.000Z", &t), FERRY_OK);
    assert_int_equal(t, 1440938160);
}

static void test_parse_rejects_malformed(void **state)
{
    (void)state;
    static const char *const bad_amz[] = {
        "",
        "20150830",
        "20150830T123600",
        "20150830T123600Z ",
        " 20150830T123600Z",
        "20151330T123600Z",
        "20150230T123600Z",
        "20150830T243600Z",
        "20150830T126000Z",
        "20150830T123660Z",
        "2015083OT123600Z",
        "+0150830T123600Z",
        "20150830t123600z",
        "19690101T000000Z",
        "20150830T123600ZZ",
    };
    static const char *const bad_iso[] = {
        "",
        "2015-08-30",
        "2015-08-30T12:36:00",
        "2015-08-30 12:36:00Z",
        "2015-08-30T12:36:00.Z",
        "2015-02-29T00:00:00Z",
        "2015-08-30T12:36:00+00:00",
        "2015-8-30T12:36:00Z",
    };
    int64_t t = 7;
    for (size_t i = 0; i < sizeof bad_amz / sizeof bad_amz[0]; i++) {
        assert_int_equal(ferry_time_parse_amz_datetime(bad_amz[i], &t), FERRY_ERR_INVALID);
        assert_int_equal(t, 7); /* out-parameter untouched on error */
    }
    for (size_t i = 0; i < sizeof bad_iso / sizeof bad_iso[0]; i++)
        assert_int_equal(ferry_time_parse_iso8601(bad_iso[i], &t), FERRY_ERR_INVALID);
    assert_int_equal(t, 7);
}

static void test_clocks_move_forward(void **state)
{
    (void)state;
    assert_true(ferry_time_now() > 1700000000);
    int64_t a = ferry_time_mono_ns();
    int64_t b = ferry_time_mono_ns();
    assert_true(b >= a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_formats_known_instants),
        cmocka_unit_test(test_parse_round_trips),
        cmocka_unit_test(test_parse_accepts_fractional_seconds),
        cmocka_unit_test(test_parse_rejects_malformed),
        cmocka_unit_test(test_clocks_move_forward),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
