/* buf_test.c - the capped buffer: growth, the cap, formatting, detach. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <stdlib.h>

#include <cmocka.h>

#include "common/buf.h"

static void test_empty_buffer_reads_as_empty_string(void **state)
{
    (void)state;
    ferry_buf b;
    ferry_buf_init(&b, 16);
    assert_string_equal(ferry_buf_str(&b), "");
    assert_int_equal(b.len, 0);
    ferry_buf_cleanup(&b);
    ferry_buf_cleanup(&b); /* twice is safe */
}

static void test_append_grows_and_terminates(void **state)
{
    (void)state;
    ferry_buf b;
    ferry_buf_init(&b, 1 << 20);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(ferry_buf_append_str(&b, "abc"), FERRY_OK);
    assert_int_equal(b.len, 3000);
    assert_int_equal(b.data[3000], '\0');
    assert_memory_equal(b.data + 2997, "abc", 3);
    ferry_buf_cleanup(&b);
}

static void test_cap_is_exact_and_failure_leaves_buffer_unchanged(void **state)
{
    (void)state;
    ferry_buf b;
    ferry_buf_init(&b, 10);
    assert_int_equal(ferry_buf_append_str(&b, "0123456789"), FERRY_OK);
    assert_int_equal(b.len, 10);
    assert_int_equal(ferry_buf_append_byte(&b, 'x'), FERRY_ERR_TOO_LARGE);
    assert_string_equal(ferry_buf_str(&b), "0123456789");
    ferry_buf_reset(&b);
    assert_int_equal(ferry_buf_append_str(&b, "01234"), FERRY_OK);
    assert_int_equal(ferry_buf_append_str(&b, "567890"), FERRY_ERR_TOO_LARGE);
    assert_string_equal(ferry_buf_str(&b), "01234");
    assert_true(b.alloc <= 11);
    ferry_buf_cleanup(&b);
}

static void test_huge_append_does_not_overflow(void **state)
{
    (void)state;
    ferry_buf b;
    ferry_buf_init(&b, SIZE_MAX - 1);
    assert_int_equal(ferry_buf_append_str(&b, "ab"), FERRY_OK);
    assert_int_equal(ferry_buf_reserve(&b, SIZE_MAX - 1), FERRY_ERR_TOO_LARGE);
    assert_int_equal(ferry_buf_reserve(&b, SIZE_MAX), FERRY_ERR_TOO_LARGE);
    ferry_buf_cleanup(&b);
}

static void test_appendf_formats_and_respects_cap(void **state)
{
    (void)state;
    ferry_buf b;
    ferry_buf_init(&b, 12);
    assert_int_equal(ferry_buf_appendf(&b, "%s=%d", "size", 42), FERRY_OK);
    assert_string_equal(ferry_buf_str(&b), "size=42");
    assert_int_equal(ferry_buf_appendf(&b, "&%s", "toolong"), FERRY_ERR_TOO_LARGE);
    assert_string_equal(ferry_buf_str(&b), "size=42");
    ferry_buf_cleanup(&b);
}

static void test_detach_hands_over_ownership(void **state)
{
    (void)state;
    ferry_buf b;
    ferry_buf_init(&b, 100);
    char *empty = ferry_buf_detach(&b);
    assert_non_null(empty);
    assert_string_equal(empty, "");
    free(empty);
    assert_int_equal(ferry_buf_append(&b, "hello", 5), FERRY_OK);
    char *s = ferry_buf_detach(&b);
    assert_string_equal(s, "hello");
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    free(s);
    ferry_buf_cleanup(&b);
}

static void test_wipe_releases(void **state)
{
    (void)state;
    ferry_buf b;
    ferry_buf_init(&b, 100);
    assert_int_equal(ferry_buf_append_str(&b, "secret"), FERRY_OK);
    ferry_buf_wipe(&b);
    assert_null(b.data);
    ferry_buf_wipe(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty_buffer_reads_as_empty_string),
        cmocka_unit_test(test_append_grows_and_terminates),
        cmocka_unit_test(test_cap_is_exact_and_failure_leaves_buffer_unchanged),
        cmocka_unit_test(test_huge_append_does_not_overflow),
        cmocka_unit_test(test_appendf_formats_and_respects_cap),
        cmocka_unit_test(test_detach_hands_over_ownership),
        cmocka_unit_test(test_wipe_releases),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
