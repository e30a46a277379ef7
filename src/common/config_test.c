/* config_test.c - the table-driven INI loader: every type, bound and error. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/config.h"

typedef struct test_config {
    char *name;
    char *secret;
    int64_t count;
    bool enabled;
    int64_t max_bytes;
    int64_t timeout_ms;
    int mode;
    char *required;
} test_config;

#define OPT(sec, nm, type, field, def, lo, hi, choices, flags)                                     \
    {                                                                                              \
        sec, nm, type, offsetof(test_config, field), def, lo, hi, choices, flags, "help for " nm   \
    }

static const ferry_cfg_option options[] = {
    OPT("main", "name", FERRY_CFG_STRING, name, "ferry", 1, 8, NULL, 0),
    OPT("main", "secret", FERRY_CFG_STRING, secret, NULL, 0, 0, NULL, FERRY_CFG_SECRET),
    OPT("main", "count", FERRY_CFG_INT, count, "3", -5, 100, NULL, 0),
    OPT("main", "enabled", FERRY_CFG_BOOL, enabled, "false", 0, 0, NULL, 0),
    OPT("limits", "max_bytes", FERRY_CFG_SIZE, max_bytes, "5M", 1, 1LL << 40, NULL, 0),
    OPT("limits", "timeout", FERRY_CFG_DURATION, timeout_ms, "30s", 100, 86400000, NULL, 0),
    OPT("limits", "mode", FERRY_CFG_ENUM, mode, "auto", 0, 0, "auto|put|post", 0),
    OPT("limits", "required", FERRY_CFG_STRING, required, NULL, 0, 0, NULL, FERRY_CFG_REQUIRED),
};
static const ferry_cfg_table table = {options, sizeof options / sizeof options[0]};

static char path[64];

static ferry_err load_text(const char *text, test_config *cfg, char *err, size_t err_size)
{
    strcpy(path, "/tmp/ferry-config-test-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    fputs(text, f);
    fclose(f);
    memset(cfg, 0, sizeof *cfg);
    err[0] = '\0';
    ferry_err e = ferry_cfg_load(&table, cfg, path, NULL, NULL, err, err_size);
    unlink(path);
    return e;
}

/* Loads text that must fail; checks the message is "PATH:LINE: " + expected. */
static void expect_error(const char *text, int line, const char *expected)
{
    test_config cfg;
    char err[512], want[640];
    assert_int_not_equal(load_text(text, &cfg, err, sizeof err), FERRY_OK);
    if (line > 0)
        snprintf(want, sizeof want, "%s:%d: %s", path, line, expected);
    else
        snprintf(want, sizeof want, "%s: %s", path, expected);
    assert_string_equal(err, want);
    ferry_cfg_free(&table, &cfg);
}

static void test_defaults_apply(void **state)
{
    (void)state;
    test_config cfg;
    char err[256];
    assert_int_equal(load_text("[limits]\nrequired = x\n", &cfg, err, sizeof err), FERRY_OK);
    assert_string_equal(cfg.name, "ferry");
    assert_null(cfg.secret);
    assert_int_equal(cfg.count, 3);
    assert_false(cfg.enabled);
    assert_int_equal(cfg.max_bytes, 5 * 1024 * 1024);
    assert_int_equal(cfg.timeout_ms, 30000);
    assert_int_equal(cfg.mode, 0);
    assert_string_equal(cfg.required, "x");
    ferry_cfg_free(&table, &cfg);
    ferry_cfg_free(&table, &cfg); /* twice is safe */
}

static void test_every_type_parses(void **state)
{
    (void)state;
    test_config cfg;
    char err[256];
    const char *text = "; comment\n[main]\nname = abc\nsecret = s3cr3t\ncount = -5\n"
                       "enabled = yes\n[limits]\nmax_bytes = 2G\ntimeout = 250ms\n"
                       "mode = post\nrequired = r\n";
    assert_int_equal(load_text(text, &cfg, err, sizeof err), FERRY_OK);
    assert_string_equal(cfg.name, "abc");
    assert_string_equal(cfg.secret, "s3cr3t");
    assert_int_equal(cfg.count, -5);
    assert_true(cfg.enabled);
    assert_int_equal(cfg.max_bytes, 2LL << 30);
    assert_int_equal(cfg.timeout_ms, 250);
    assert_int_equal(cfg.mode, 2);
    ferry_cfg_free(&table, &cfg);
}

static void test_value_parsers(void **state)
{
    (void)state;
    int64_t v;
    bool b;
    assert_int_equal(ferry_parse_size("512", &v), FERRY_OK);
    assert_int_equal(v, 512);
    assert_int_equal(ferry_parse_size("64K", &v), FERRY_OK);
    assert_int_equal(v, 65536);
    assert_int_equal(ferry_parse_size("3MiB", &v), FERRY_OK);
    assert_int_equal(v, 3 << 20);
    assert_int_equal(ferry_parse_size("1T", &v), FERRY_OK);
    assert_int_equal(v, 1LL << 40);
    assert_int_equal(ferry_parse_size("9999999999T", &v), FERRY_ERR_RANGE);
    assert_int_equal(ferry_parse_size("-1", &v), FERRY_ERR_INVALID);
    assert_int_equal(ferry_parse_size("1.5M", &v), FERRY_ERR_INVALID);
    assert_int_equal(ferry_parse_size("5X", &v), FERRY_ERR_INVALID);
    assert_int_equal(ferry_parse_duration_ms("15", &v), FERRY_OK);
    assert_int_equal(v, 15000);
    assert_int_equal(ferry_parse_duration_ms("15m", &v), FERRY_OK);
    assert_int_equal(v, 900000);
    assert_int_equal(ferry_parse_duration_ms("7d", &v), FERRY_OK);
    assert_int_equal(v, 604800000);
    assert_int_equal(ferry_parse_duration_ms("2h", &v), FERRY_OK);
    assert_int_equal(v, 7200000);
    assert_int_equal(ferry_parse_duration_ms("1w", &v), FERRY_ERR_INVALID);
    assert_int_equal(ferry_parse_duration_ms("", &v), FERRY_ERR_INVALID);
    assert_int_equal(ferry_parse_int("99999999999999999999", &v), FERRY_ERR_RANGE);
    assert_int_equal(ferry_parse_int("12a", &v), FERRY_ERR_INVALID);
    assert_int_equal(ferry_parse_int(" 12", &v), FERRY_ERR_INVALID);
    assert_int_equal(ferry_parse_bool("On", &b), FERRY_OK);
    assert_true(b);
    assert_int_equal(ferry_parse_bool("0", &b), FERRY_OK);
    assert_false(b);
    assert_int_equal(ferry_parse_bool("maybe", &b), FERRY_ERR_INVALID);
}

static void test_errors_name_file_line_and_option(void **state)
{
    (void)state;
    const char *req = "[limits]\nrequired = r\n";
    char text[512];

    snprintf(text, sizeof text, "%s[main]\ncount = 101\n", req);
    expect_error(text, 4, "[main] count: \"101\" is out of range (-5 to 100)");
    snprintf(text, sizeof text, "%s[main]\ncount = -6\n", req);
    expect_error(text, 4, "[main] count: \"-6\" is out of range (-5 to 100)");
    snprintf(text, sizeof text, "%s[main]\ncount = ten\n", req);
    expect_error(text, 4, "[main] count: \"ten\" is not an integer");
    snprintf(text, sizeof text, "%s[main]\nenabled = sure\n", req);
    expect_error(text, 4, "[main] enabled: \"sure\" is not a boolean (true/false, yes/no, on/off)");
    snprintf(text, sizeof text, "%s[main]\nname = waytoolongname\n", req);
    expect_error(text, 4, "[main] name: value is 14 bytes long, the limit is 8");
    snprintf(text, sizeof text, "%s[main]\nname =\n", req);
    expect_error(text, 4, "[main] name: value must be at least 1 bytes long");
    snprintf(text, sizeof text, "%s\nmax_bytes = 9Z\n", req);
    expect_error(text, 4, "[limits] max_bytes: \"9Z\" is not a size (e.g. 512, 64K, 5M, 2G)");
    snprintf(text, sizeof text, "%smax_bytes = 0\n", req);
    expect_error(text, 3, "[limits] max_bytes: \"0\" is out of range (1 to 1099511627776)");
    snprintf(text, sizeof text, "%stimeout = 10ms\n", req);
    expect_error(text, 3, "[limits] timeout: \"10ms\" is out of range (100ms to 86400s)");
    snprintf(text, sizeof text, "%stimeout = soon\n", req);
    expect_error(text, 3,
                 "[limits] timeout: \"soon\" is not a duration (e.g. 250ms, 30s, 15m, 1h, 7d)");
    snprintf(text, sizeof text, "%smode = multipart\n", req);
    expect_error(text, 3, "[limits] mode: \"multipart\" is not one of auto|put|post");
    snprintf(text, sizeof text, "%s[main]\nsecret = x\nenabled = maybe\n", req);
    expect_error(text, 5,
                 "[main] enabled: \"maybe\" is not a boolean (true/false, yes/no, on/off)");
    snprintf(text, sizeof text, "%scolour = red\n", req);
    expect_error(text, 3, "[limits] colour: unknown option");
    snprintf(text, sizeof text, "%s[nosuch]\nx = 1\n", req);
    expect_error(text, 4, "[nosuch]: unknown section");
    snprintf(text, sizeof text, "%s[main]\ncount = 1\n\ncount = 2\n", req);
    expect_error(text, 6, "[main] count: set twice (first on line 4)");
    snprintf(text, sizeof text, "%s[main]\nthis line has no equals sign\n", req);
    expect_error(text, 4, "syntax error (expected [section] or name = value)");
    expect_error("[main]\ncount = 1\n", 0, "[limits] required: required option is not set");
}

static void test_secret_values_are_not_echoed(void **state)
{
    (void)state;
    static const ferry_cfg_option secret_opts[] = {
        {"s", "key", FERRY_CFG_BOOL, 0, NULL, 0, 0, NULL, FERRY_CFG_SECRET, "k"},
    };
    static const ferry_cfg_table secret_table = {secret_opts, 1};
    bool target = false;
    char err[256];
    assert_int_not_equal(
        ferry_cfg_set(&secret_table, &target, "s", "key", "hunter2", err, sizeof err), FERRY_OK);
    assert_null(strstr(err, "hunter2"));
    assert_non_null(strstr(err, "(secret)"));
}

static void test_long_line_is_refused(void **state)
{
    (void)state;
    char text[2048];
    snprintf(text, sizeof text, "[limits]\nrequired = r\n[main]\nname = %01000d\n", 0);
    test_config cfg;
    char err[256];
    assert_int_equal(load_text(text, &cfg, err, sizeof err), FERRY_ERR_CONFIG);
    assert_non_null(strstr(err, ":4: line too long"));
    ferry_cfg_free(&table, &cfg);
}

static void test_missing_file(void **state)
{
    (void)state;
    test_config cfg = {0};
    char err[256];
    assert_int_equal(
        ferry_cfg_load(&table, &cfg, "/nonexistent/ferry.ini", NULL, NULL, err, sizeof err),
        FERRY_ERR_CONFIG);
    assert_string_equal(err, "/nonexistent/ferry.ini: cannot open: No such file or directory");
    ferry_cfg_free(&table, &cfg);
}

static int collect_targets(void *ctx, const char *section, const char *name, const char *value,
                           char *err, size_t err_size)
{
    int *count = ctx;
    if (strncmp(section, "target.", 7) != 0) {
        snprintf(err, err_size, "[%s]: unknown section", section);
        return 1;
    }
    (void)name;
    (void)value;
    (*count)++;
    return 0;
}

static void test_unknown_sections_go_to_the_callback(void **state)
{
    (void)state;
    strcpy(path, "/tmp/ferry-config-test-XXXXXX");
    int fd = mkstemp(path);
    FILE *f = fdopen(fd, "w");
    fputs("[limits]\nrequired = r\n[target.hook]\nurl = x\ntype = webhook\n[bogus]\na = 1\n", f);
    fclose(f);
    test_config cfg = {0};
    char err[256];
    int count = 0;
    assert_int_equal(ferry_cfg_load(&table, &cfg, path, collect_targets, &count, err, sizeof err),
                     FERRY_ERR_CONFIG);
    assert_int_equal(count, 2);
    assert_non_null(strstr(err, ":7: [bogus]: unknown section"));
    unlink(path);
    ferry_cfg_free(&table, &cfg);
}

static void test_reference_lists_every_option(void **state)
{
    (void)state;
    char *mem = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&mem, &size);
    ferry_cfg_write_reference(&table, f);
    fclose(f);
    for (size_t i = 0; i < table.count; i++) {
        char needle[64];
        snprintf(needle, sizeof needle, "| `%s` |", options[i].name);
        assert_non_null(strstr(mem, needle));
    }
    assert_non_null(strstr(mem, "### [limits]"));
    assert_non_null(strstr(mem, "`auto\\|put\\|post`"));
    assert_non_null(strstr(mem, "100ms to 86400s"));
    free(mem);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_apply),
        cmocka_unit_test(test_every_type_parses),
        cmocka_unit_test(test_value_parsers),
        cmocka_unit_test(test_errors_name_file_line_and_option),
        cmocka_unit_test(test_secret_values_are_not_echoed),
        cmocka_unit_test(test_long_line_is_refused),
        cmocka_unit_test(test_missing_file),
        cmocka_unit_test(test_unknown_sections_go_to_the_callback),
        cmocka_unit_test(test_reference_lists_every_option),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
