/*
 * grants_name_test.c - the name sanitiser (table-driven: the issue's
 * acceptance list, UTF-8 edge cases, replacements, cutting), device ids,
 * grant ids and object keys.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "grants/grants.h"

typedef struct name_case {
    const char *in;
    size_t len;         /* 0: strlen(in) */
    const char *expect; /* NULL: refused */
} name_case;

static const name_case name_cases[] = {
    /* Kept as they are. */
    {"lung-2026-11-25.wav", 0, "lung-2026-11-25.wav"},
    {"A_b.C-d", 0, "A_b.C-d"},
    {"x", 0, "x"},
    {"file.", 0, "file."},
    {"\xc5\x81\xc3\xb3\x64\xc5\xba.png", 0, "\xc5\x81\xc3\xb3\x64\xc5\xba.png"}, /* Łódź */
    {"\xe6\x97\xa5\xe6\x9c\xac", 0, "\xe6\x97\xa5\xe6\x9c\xac"},                 /* 日本 */
    {"\xf0\x9f\x98\x80", 0, "\xf0\x9f\x98\x80"},                                 /* emoji */
    {"\xd0\x90", 0, "\xd0\x90"},         /* Cyrillic A, a two-byte boundary case */
    {"\xef\xbf\xbd", 0, "\xef\xbf\xbd"}, /* U+FFFD is a visible character */
    /* Replaced by '_'. */
    {".bashrc", 0, "_bashrc"},
    {".", 0, "_"},
    {"a b", 0, "a_b"},
    {"a:b*c?d\"e<f>g|h", 0, "a_b_c_d_e_f_g_h"},
    {"%2e%2e%2f", 0, "_2e_2e_2f"},
    {"a+b=c&d#e", 0, "a_b_c_d_e"},
    {"~user'", 0, "_user_"},
    {"a\xc2\xa0"
     "b",
     0, "a_b"}, /* no-break space */
    {"a\xe2\x80\x8b"
     "b",
     0, "a_b"}, /* zero-width space */
    {"a\xe2\x80\xae"
     "b",
     0, "a_b"}, /* right-to-left override */
    {"\xef\xbb\xbf"
     "a",
     0, "_a"}, /* BOM */
    {"a\xe2\x81\x84"
     "b",
     0, "a_b"}, /* fraction slash */
    {"a\xef\xbc\x8f"
     "b",
     0, "a_b"}, /* fullwidth solidus */
    {"\xe2\x80\xa5"
     "x",
     0, "_x"}, /* two-dot leader */
    {"a\xee\x80\x80"
     "b",
     0, "a_b"}, /* private use U+E000 */
    {"a\xef\xbf\xbe"
     "b",
     0, "a_b"}, /* noncharacter U+FFFE */
    {"a\xf3\xa0\x80\x81"
     "b",
     0, "a_b"},                     /* tag U+E0001 */
    {"a\xf4\x8f\xbf\xbf", 0, "a_"}, /* U+10FFFF */
    /* Refused: the issue's acceptance list. */
    {"../x", 0, NULL},
    {"a/b", 0, NULL},
    {"a\0b", 3, NULL},
    {"\0", 1, NULL},
    {"a\xc3\x28", 0, NULL}, /* invalid continuation */
    /* Refused: more path forms. */
    {"..", 0, NULL},
    {"a..b", 0, NULL},
    {"x/..", 0, NULL},
    {"\\windows\\system32", 0, NULL},
    {"/etc/passwd", 0, NULL},
    {"", 0, NULL},
    /* Refused: controls. */
    {"a\tb", 0, NULL},
    {"a\nb", 0, NULL},
    {"a\rb", 0, NULL},
    {"a\x1b[31mb", 0, NULL},
    {"a\x7f", 0, NULL},
    {"a\xc2\x85", 0, NULL}, /* NEL, C1 */
    {"a\xc2\x9f", 0, NULL}, /* C1 */
    /* Refused: invalid UTF-8. */
    {"\xc0\xaf", 0, NULL},         /* overlong '/' */
    {"\xc1\xbf", 0, NULL},         /* overlong */
    {"\xe0\x80\xaf", 0, NULL},     /* overlong 3-byte '/' */
    {"\xf0\x80\x80\xaf", 0, NULL}, /* overlong 4-byte '/' */
    {"\xed\xa0\x80", 0, NULL},     /* surrogate U+D800 */
    {"\xed\xbf\xbf", 0, NULL},     /* surrogate U+DFFF */
    {"\xf4\x90\x80\x80", 0, NULL}, /* U+110000 */
    {"\xf5\x80\x80\x80", 0, NULL}, /* lead byte F5 */
    {"\xff", 0, NULL},
    {"\x80", 0, NULL},         /* stray continuation */
    {"a\xe6\x97", 0, NULL},    /* truncated */
    {"\xf0\x9f\x98", 0, NULL}, /* truncated 4-byte */
};

static void test_name_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof name_cases / sizeof name_cases[0]; i++) {
        const name_case *c = &name_cases[i];
        char out[GRANT_SAFE_NAME_MAX + 1];
        const char *why = NULL;
        size_t len = c->len ? c->len : strlen(c->in);
        ferry_err err = grant_safe_name(c->in, len, out, sizeof out, &why);
        if (c->expect == NULL) {
            if (err != FERRY_ERR_INVALID || why == NULL)
                fail_msg("case %zu: expected refusal, got \"%s\"", i, err ? "?" : out);
        } else {
            if (err != FERRY_OK)
                fail_msg("case %zu: refused (%s)", i, why);
            if (strcmp(out, c->expect) != 0)
                fail_msg("case %zu: got \"%s\", expected \"%s\"", i, out, c->expect);
        }
    }
}

static void test_name_lengths(void **state)
{
    (void)state;
    char in[10 * 1024 + 1];
    char out[GRANT_SAFE_NAME_MAX + 1];
    const char *why = NULL;

    /* 10 KB and 1025 bytes: refused; 1024 bytes: cut to 200. */
    memset(in, 'a', sizeof in);
    assert_int_equal(grant_safe_name(in, 10 * 1024, out, sizeof out, &why), FERRY_ERR_INVALID);
    assert_string_equal(why, "name is longer than 1024 bytes");
    assert_int_equal(grant_safe_name(in, 1025, out, sizeof out, &why), FERRY_ERR_INVALID);
    assert_int_equal(grant_safe_name(in, 1024, out, sizeof out, &why), FERRY_OK);
    assert_int_equal(strlen(out), GRANT_SAFE_NAME_MAX);
    assert_int_equal(grant_safe_name(in, 200, out, sizeof out, &why), FERRY_OK);
    assert_int_equal(strlen(out), 200);

    /* The extension survives the cut. */
    memcpy(in + 296, ".wav", 4);
    assert_int_equal(grant_safe_name(in, 300, out, sizeof out, &why), FERRY_OK);
    assert_int_equal(strlen(out), GRANT_SAFE_NAME_MAX);
    assert_string_equal(out + GRANT_SAFE_NAME_MAX - 4, ".wav");

    /* The cut never joins a stem's trailing '.' to the extension's. */
    memset(in, 'a', 300);
    in[195] = '.';
    memcpy(in + 296, ".wav", 4);
    assert_int_equal(grant_safe_name(in, 300, out, sizeof out, &why), FERRY_OK);
    assert_null(strstr(out, ".."));
    assert_string_equal(out + strlen(out) - 5, "a.wav");

    /* A multi-byte character is never split: 100 x "é" (2 bytes) + 'x'. */
    size_t n = 0;
    for (int i = 0; i < 100; i++) {
        in[n++] = '\xc3';
        in[n++] = '\xa9';
    }
    in[n++] = 'x';
    in[n++] = 'x';
    assert_int_equal(grant_safe_name(in, n, out, sizeof out, &why), FERRY_OK);
    assert_int_equal(strlen(out), 200);
    n = 0;
    in[n++] = 'x';
    for (int i = 0; i < 100; i++) {
        in[n++] = '\xc3';
        in[n++] = '\xa9';
    }
    assert_int_equal(grant_safe_name(in, n, out, sizeof out, &why), FERRY_OK);
    assert_int_equal(strlen(out), 199); /* 'x' + 99 x "é": the 100th did not fit */

    /* Too small an output buffer is a caller error, not a truncation. */
    char small[10];
    assert_int_equal(grant_safe_name("abc", 3, small, sizeof small, NULL), FERRY_ERR_INVALID);
    assert_int_equal(grant_safe_name(NULL, 0, out, sizeof out, NULL), FERRY_ERR_INVALID);
}

static void test_device_ids(void **state)
{
    (void)state;
    char longid[GRANT_DEVICE_MAX + 2];
    assert_true(grant_device_id_valid("dev-001"));
    assert_true(grant_device_id_valid("cam_7.north"));
    assert_false(grant_device_id_valid(""));
    assert_false(grant_device_id_valid(NULL));
    assert_false(grant_device_id_valid(".dev"));
    assert_false(grant_device_id_valid("a..b"));
    assert_false(grant_device_id_valid("a/b"));
    assert_false(grant_device_id_valid("a+b"));
    assert_false(grant_device_id_valid("a#"));
    assert_false(grant_device_id_valid("d\xc3\xa9v"));
    memset(longid, 'a', sizeof longid);
    longid[GRANT_DEVICE_MAX] = '\0';
    assert_true(grant_device_id_valid(longid));
    longid[GRANT_DEVICE_MAX] = 'a';
    longid[GRANT_DEVICE_MAX + 1] = '\0';
    assert_false(grant_device_id_valid(longid));
}

static void test_grant_ids(void **state)
{
    (void)state;
    char a[GRANT_ID_LEN + 1], b[GRANT_ID_LEN + 1];
    for (int i = 0; i < 1000; i++) {
        assert_int_equal(grant_id_new(a), FERRY_OK);
        assert_int_equal(strlen(a), GRANT_ID_LEN);
        assert_true(grant_id_valid(a));
        assert_int_equal(grant_id_new(b), FERRY_OK);
        assert_string_not_equal(a, b);
    }
    /* Ids sort by issue time (milliseconds): one made a few milliseconds
     * later sorts after, whatever its random part. */
    assert_int_equal(grant_id_new(a), FERRY_OK);
    struct timespec pause = {0, 3 * 1000 * 1000};
    nanosleep(&pause, NULL);
    assert_int_equal(grant_id_new(b), FERRY_OK);
    assert_true(strcmp(a, b) < 0);
    assert_true(grant_id_valid("g_0123456789abcdefghjkmnpqrs"));
    assert_true(grant_id_valid("g_7zzzzzzzzzzzzzzzzzzzzzzzzz"));
    assert_false(grant_id_valid("g_8zzzzzzzzzzzzzzzzzzzzzzzzz")); /* > 128 bits */
    assert_false(grant_id_valid("g_0123456789abcdefghjkmnpqri")); /* 'i' not Crockford */
    assert_false(grant_id_valid("g_0123456789ABCDEFGHJKMNPQRS"));
    assert_false(grant_id_valid("g_0123456789abcdefghjkmnpqr"));
    assert_false(grant_id_valid("x_0123456789abcdefghjkmnpqrs"));
    assert_false(grant_id_valid(NULL));
}

static void test_object_key(void **state)
{
    (void)state;
    char key[GRANT_KEY_MAX + 1];
    const char *gid = "g_0123456789abcdefghjkmnpqrs";
    /* 2026-11-25T12:45:00Z */
    assert_int_equal(grant_object_key("dev-001", 1795610700, gid, "lung.wav", key, sizeof key),
                     FERRY_OK);
    assert_string_equal(key, "dev-001/2026/11/25/g_0123456789abcdefghjkmnpqrs-lung.wav");
    /* The day boundary is UTC midnight. */
    assert_int_equal(grant_object_key("d", 1795651199, gid, "x", key, sizeof key), FERRY_OK);
    assert_string_equal(key, "d/2026/11/25/g_0123456789abcdefghjkmnpqrs-x");
    assert_int_equal(grant_object_key("d", 1795651200, gid, "x", key, sizeof key), FERRY_OK);
    assert_string_equal(key, "d/2026/11/26/g_0123456789abcdefghjkmnpqrs-x");
    /* Unchecked parts are refused, whoever the caller is. */
    assert_int_equal(grant_object_key("a/b", 0, gid, "x", key, sizeof key), FERRY_ERR_INVALID);
    assert_int_equal(grant_object_key("d", 0, "g_x", "x", key, sizeof key), FERRY_ERR_INVALID);
    assert_int_equal(grant_object_key("d", 0, gid, "../x", key, sizeof key), FERRY_ERR_INVALID);
    assert_int_equal(grant_object_key("d", 0, gid, "a b", key, sizeof key), FERRY_ERR_INVALID);
    assert_int_equal(grant_object_key("d", 0, gid, ".x", key, sizeof key), FERRY_ERR_INVALID);
    assert_int_equal(grant_object_key("d", 0, gid, "", key, sizeof key), FERRY_ERR_INVALID);
    assert_int_equal(grant_object_key("d", 0, gid, "x", key, 10), FERRY_ERR_TOO_LARGE);

    /* The longest key fits the ledger's column. */
    char dev[GRANT_DEVICE_MAX + 1], name[GRANT_SAFE_NAME_MAX + 1];
    memset(dev, 'd', GRANT_DEVICE_MAX);
    dev[GRANT_DEVICE_MAX] = '\0';
    memset(name, 'n', GRANT_SAFE_NAME_MAX);
    name[GRANT_SAFE_NAME_MAX] = '\0';
    assert_int_equal(grant_object_key(dev, 1795610700, gid, name, key, sizeof key), FERRY_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_name_table), cmocka_unit_test(test_name_lengths),
        cmocka_unit_test(test_device_ids), cmocka_unit_test(test_grant_ids),
        cmocka_unit_test(test_object_key),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
