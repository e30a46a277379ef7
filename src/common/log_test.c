/* log_test.c - record format, level filter, sanitising and redaction. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/log.h"

static char *capture(ferry_log_level min, ferry_log_level level, const char *event,
                     const char *text)
{
    char *mem = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&mem, &size);
    assert_non_null(f);
    ferry_log_set_stream(f);
    ferry_log_set_level(min);
    ferry_log(level, event, "%s", text);
    ferry_log_set_stream(NULL);
    fclose(f);
    return mem;
}

static void test_record_is_one_key_value_line(void **state)
{
    (void)state;
    char *out = capture(FERRY_LOG_INFO, FERRY_LOG_WARN, "grant.refused", "device=dev-a code=X");
    assert_non_null(strstr(out, " level=warn event=grant.refused device=dev-a code=X\n"));
    assert_true(strncmp(out, "time=", 5) == 0);
    assert_int_equal(strcspn(out, "\n") + 1, strlen(out));
    free(out);
}

static void test_level_filter(void **state)
{
    (void)state;
    char *out = capture(FERRY_LOG_WARN, FERRY_LOG_INFO, "x", "y=1");
    assert_string_equal(out, "");
    free(out);
    ferry_log_level lvl;
    assert_int_equal(ferry_log_level_parse("debug", &lvl), FERRY_OK);
    assert_int_equal(lvl, FERRY_LOG_DEBUG);
    assert_int_equal(ferry_log_level_parse("loud", &lvl), FERRY_ERR_INVALID);
    ferry_log_set_level(FERRY_LOG_INFO);
}

static void test_control_bytes_cannot_forge_lines(void **state)
{
    (void)state;
    char *out = capture(FERRY_LOG_INFO, FERRY_LOG_INFO, "req",
                        "name=a\nlevel=error event=forged \x1b[31m\xc3\xa9");
    assert_non_null(strstr(out, "name=a\\x0alevel=error event=forged \\x1b[31m\\xc3\\xa9\n"));
    assert_int_equal(strcspn(out, "\n") + 1, strlen(out));
    free(out);
}

static void test_signatures_are_redacted(void **state)
{
    (void)state;
    char out[512];
    ferry_log_sanitize(
        out, sizeof out,
        "url=https://h/b/k?X-Amz-Date=1&X-Amz-Signature=abcdef0123&X-Amz-Expires=60");
    assert_string_equal(out,
                        "url=https://h/b/k?X-Amz-Date=1&X-Amz-Signature=REDACTED&X-Amz-Expires=60");
    ferry_log_sanitize(out, sizeof out,
                       "auth=AWS4-HMAC-SHA256 Credential=a/b, Signature=ff00 next=1");
    assert_string_equal(out, "auth=AWS4-HMAC-SHA256 Credential=a/b, Signature=REDACTED next=1");
}

static void test_sanitize_truncates_safely(void **state)
{
    (void)state;
    char out[8];
    ferry_log_sanitize(out, sizeof out, "abcdefghijkl");
    assert_string_equal(out, "abcdefg");
    ferry_log_sanitize(out, sizeof out, "abcde\x01zz");
    assert_string_equal(out, "abcde");
}

/* Held records reach the stream only at the outermost release, whole and
 * in order; a hold that overflows its buffer writes early, losing nothing. */
static void test_hold_writes_records_together(void **state)
{
    (void)state;
    char *mem = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&mem, &size);
    assert_non_null(f);
    ferry_log_set_stream(f);
    ferry_log_set_level(FERRY_LOG_INFO);
    ferry_log_hold();
    ferry_log_hold();
    ferry_log(FERRY_LOG_INFO, "grant.issued", "n=%d", 1);
    ferry_log(FERRY_LOG_INFO, "grant.issued", "n=%d", 2);
    ferry_log_release();
    fflush(f);
    assert_int_equal(size, 0);
    ferry_log_release();
    fflush(f);
    assert_non_null(strstr(mem, "event=grant.issued n=1\n"));
    assert_non_null(strstr(mem, "event=grant.issued n=2\n"));
    assert_true(strstr(mem, "n=1") < strstr(mem, "n=2"));

    /* Past the buffer (64 KiB): 2,000 records of ~100 bytes, all kept. */
    ferry_log_hold();
    for (int i = 0; i < 2000; i++)
        ferry_log(FERRY_LOG_INFO, "grant.issued", "seq=%05d pad=%040d", i, 0);
    ferry_log_release();
    ferry_log_set_stream(NULL);
    fclose(f);
    size_t lines = 0;
    for (const char *p = mem; *p; p++)
        lines += *p == '\n';
    assert_int_equal(lines, 2002);
    assert_non_null(strstr(mem, "seq=01999 "));
    assert_true(strstr(mem, "seq=00000 ") < strstr(mem, "seq=01999 "));
    free(mem);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_record_is_one_key_value_line),
        cmocka_unit_test(test_level_filter),
        cmocka_unit_test(test_control_bytes_cannot_forge_lines),
        cmocka_unit_test(test_signatures_are_redacted),
        cmocka_unit_test(test_sanitize_truncates_safely),
        cmocka_unit_test(test_hold_writes_records_together),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
