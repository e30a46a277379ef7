/* broker_backoff_test.c - reconnect delays: exponential, capped, jittered. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "broker/broker_link.h"

static void test_doubles_then_caps(void **state)
{
    (void)state;
    /* With random01 just under 1 the delay is the full (uncapped) value. */
    assert_int_equal(broker_backoff_ms(100, 30000, 0, 0.9999999), 99);
    assert_in_range(broker_backoff_ms(100, 30000, 1, 0.9999999), 199, 200);
    assert_in_range(broker_backoff_ms(100, 30000, 4, 0.9999999), 1599, 1600);
    assert_in_range(broker_backoff_ms(100, 30000, 9, 0.9999999), 29999, 30000);
    assert_in_range(broker_backoff_ms(100, 30000, 1000, 0.9999999), 29999, 30000);
}

static void test_jitter_stays_in_upper_half(void **state)
{
    (void)state;
    for (unsigned attempt = 0; attempt < 20; attempt++) {
        int64_t lo = broker_backoff_ms(250, 10000, attempt, 0.0);
        int64_t hi = broker_backoff_ms(250, 10000, attempt, 0.999);
        assert_true(lo >= 125);
        assert_true(hi <= 10000);
        assert_true(lo <= hi);
        assert_true(hi - lo >= lo / 2);
    }
}

static void test_bad_bounds_are_sane(void **state)
{
    (void)state;
    assert_true(broker_backoff_ms(0, 0, 3, 0.5) >= 0);
    assert_true(broker_backoff_ms(500, 100, 3, 0.5) <= 500);
    assert_true(broker_backoff_ms(100, 1000, 2, -3.0) == 200);
    assert_true(broker_backoff_ms(100, 1000, 2, 7.0) <= 400);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_doubles_then_caps),
        cmocka_unit_test(test_jitter_stays_in_upper_half),
        cmocka_unit_test(test_bad_bounds_are_sane),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
