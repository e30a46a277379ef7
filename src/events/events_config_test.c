/*
 * events_config_test.c - [target.NAME] sections: a full configuration read
 * through the real config loader, every refusal with its message, and
 * targets built from the specs.
 */
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
#include "events_config.h"

typedef struct app {
    char *prefix;
} app;

static const ferry_cfg_option options[] = {
    {"mqtt", "prefix", FERRY_CFG_STRING, offsetof(app, prefix), "ferry", 0, 0, NULL, 0, "prefix"},
};
static const ferry_cfg_table table = {options, 1};

/* Loads text as a file; returns the loader's result, err holds the message. */
static ferry_err load(const char *text, events_config *ec, app *a, char *err, size_t err_size)
{
    char path[] = "/tmp/events-config-test-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    memset(a, 0, sizeof *a);
    events_config_init(ec);
    err[0] = '\0';
    ferry_err r = ferry_cfg_load(&table, a, path, events_config_section, ec, err, err_size);
    if (r == FERRY_OK)
        r = events_config_check(ec, a->prefix, err, err_size);
    unlink(path);
    return r;
}

static const events_target_spec *find(const events_config *ec, const char *name)
{
    for (size_t i = 0; i < ec->count; i++)
        if (strcmp(ec->targets[i].name, name) == 0)
            return &ec->targets[i];
    return NULL;
}

static void test_full_config(void **state)
{
    (void)state;
    const char *ini = "[mqtt]\nprefix = fleet\n"
                      "[target.archive]\n"
                      "url = https://archive.example.org/ferry\n"
                      "type = webhook\n"
                      "secret_file = /etc/ferry/hook.secret\n"
                      "ca_file = /etc/ferry/ca.pem\n"
                      "timeout = 2500ms\nconnect_timeout = 3\n"
                      "max_attempts = 4\nretry_min = 2s\nretry_max = 1m\n"
                      "[target.check]\ntype = command\ncommand = /usr/libexec/check\n"
                      "args = --strict  -v\tx\nkill_grace = 500ms\nstdout_max = 8K\n"
                      "[target.bus]\ntype = mqtt\n";
    events_config ec;
    app a;
    char err[256];
    assert_int_equal(load(ini, &ec, &a, err, sizeof err), FERRY_OK);
    assert_int_equal(ec.count, 3);

    const events_target_spec *w = find(&ec, "archive");
    assert_int_equal(w->type, EVENTS_TARGET_WEBHOOK);
    assert_string_equal(w->url, "https://archive.example.org/ferry");
    assert_string_equal(w->ca_file, "/etc/ferry/ca.pem");
    assert_int_equal(w->timeout_ms, 2500);
    assert_int_equal(w->connect_timeout_ms, 3000);
    assert_int_equal(w->retry.max_attempts, 4);
    assert_int_equal(w->retry.min_ms, 2000);
    assert_int_equal(w->retry.max_ms, 60000);
    assert_false(w->send_processed);

    const events_target_spec *c = find(&ec, "check");
    assert_int_equal(c->type, EVENTS_TARGET_COMMAND);
    assert_string_equal(c->argv[0], "/usr/libexec/check");
    assert_string_equal(c->argv[1], "--strict");
    assert_string_equal(c->argv[2], "-v");
    assert_string_equal(c->argv[3], "x");
    assert_null(c->argv[4]);
    assert_int_equal(c->kill_grace_ms, 500);
    assert_int_equal(c->stdout_max, 8192);
    assert_int_equal(c->timeout_ms, 60000); /* command default */
    assert_true(c->send_processed);
    events_retry_policy def = EVENTS_RETRY_DEFAULT;
    assert_int_equal(c->retry.max_attempts, def.max_attempts);

    const events_target_spec *m = find(&ec, "bus");
    assert_string_equal(m->topic, "fleet/events/object-created");
    assert_int_equal(m->timeout_ms, 10000);

    events_config_cleanup(&ec);
    events_config_cleanup(&ec); /* twice is fine */
    ferry_cfg_free(&table, &a);
}

static void expect_error(const char *ini, const char *message)
{
    events_config ec;
    app a;
    char err[256];
    ferry_err r = load(ini, &ec, &a, err, sizeof err);
    assert_int_not_equal(r, FERRY_OK);
    if (strstr(err, message) == NULL)
        fail_msg("expected \"%s\" in \"%s\"", message, err);
    events_config_cleanup(&ec);
    ferry_cfg_free(&table, &a);
}

static void test_refusals(void **state)
{
    (void)state;
    expect_error("[target.x]\nurl = https://h/\n", "[target.x] type: required option is not set");
    expect_error("[target.x]\ntype = ftp\n", "is not one of webhook|command|mqtt");
    expect_error("[target.x]\ntype = mqtt\ncolour = red\n", "[target.x] colour: unknown option");
    expect_error("[target.x]\ntype = mqtt\ntype = mqtt\n", "type: set twice");
    expect_error("[target.x]\ntype = mqtt\nurl = https://h/\n",
                 "[target.x] url: not an option of a mqtt target");
    expect_error("[target.x]\ntype = webhook\nurl = http://h/\n", "must be an https:// URL");
    expect_error("[target.x]\ntype = webhook\nurl = https://h/\n",
                 "[target.x] secret_file: required option is not set");
    expect_error("[target.x]\ntype = command\ncommand = check\n", "a path is needed");
    expect_error("[target.x]\ntype = command\n", "command: required option is not set");
    expect_error("[target.x]\ntype = mqtt\ntopic = a/#\n", "without wildcards");
    expect_error("[target.x]\ntype = mqtt\ntimeout = soon\n", "is not a duration");
    expect_error("[target.x]\ntype = mqtt\ntimeout = 1ms\n", "is not a duration");
    expect_error("[target.x]\ntype = mqtt\nmax_attempts = 0\n", "is not a number from 1");
    expect_error("[target.x]\ntype = mqtt\nretry_min = 10s\nretry_max = 1s\n",
                 "retry_max: below retry_min");
    expect_error("[target.a b]\ntype = mqtt\n", "a target name is");
    expect_error("[targets]\ntype = mqtt\n", "[targets]: unknown section");
    expect_error("[mqtt]\nprefix =\n[target.x]\ntype = mqtt\n", "no MQTT prefix");

    /* More targets than allowed. */
    ferry_buf b;
    ferry_buf_init(&b, 1 << 16);
    for (int i = 0; i <= EVENTS_MAX_TARGETS; i++)
        assert_int_equal(ferry_buf_appendf(&b, "[target.t%d]\ntype = mqtt\n", i), FERRY_OK);
    expect_error(ferry_buf_str(&b), "more than 32 targets");
    ferry_buf_cleanup(&b);

    char args[2048] = "[target.x]\ntype = command\ncommand = /bin/true\nargs =";
    for (int i = 0; i < EVENTS_MAX_ARGS + 1; i++)
        strcat(args, " a");
    strcat(args, "\n");
    expect_error(args, "more than 32 arguments");
}

static void test_targets_from_specs(void **state)
{
    (void)state;
    char secret_path[] = "/tmp/events-config-secret-XXXXXX";
    int fd = mkstemp(secret_path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "s3cret\n", 7), 7);
    close(fd);
    char ini[512];
    snprintf(ini, sizeof ini,
             "[target.ok]\ntype = command\ncommand = /bin/sh\nargs = -c exit\n"
             "[target.hook]\ntype = webhook\nurl = https://127.0.0.1:1/\nsecret_file = %s\n"
             "[target.nosecret]\ntype = webhook\nurl = https://127.0.0.1:1/\n"
             "secret_file = /nonexistent/secret\n"
             "[target.bus]\ntype = mqtt\n",
             secret_path);
    events_config ec;
    app a;
    char err[256];
    assert_int_equal(load(ini, &ec, &a, err, sizeof err), FERRY_OK);

    events_target *t = NULL;
    err[0] = '\0';
    assert_int_equal(events_target_from_spec(find(&ec, "ok"), NULL, &t, err, sizeof err), FERRY_OK);
    assert_string_equal(events_target_name(t), "ok");
    events_delivery d;
    events_delivery_init(&d);
    assert_int_equal(events_target_deliver(t, "e1", "{}", 2, 5000, &d), FERRY_OK);
    assert_int_equal(d.outcome, EVENTS_DELIVERED);
    events_target_free(t);
    t = NULL;

    assert_int_equal(events_target_from_spec(find(&ec, "hook"), NULL, &t, err, sizeof err),
                     FERRY_OK);
    assert_string_equal(events_target_kind(t), "webhook");
    events_target_free(t);
    t = NULL;

    assert_int_not_equal(events_target_from_spec(find(&ec, "nosecret"), NULL, &t, err, sizeof err),
                         FERRY_OK);
    assert_non_null(strstr(err, "secret_file: cannot read"));
    /* An MQTT target needs the broker link. */
    assert_int_not_equal(events_target_from_spec(find(&ec, "bus"), NULL, &t, err, sizeof err),
                         FERRY_OK);
    assert_null(t);
    events_delivery_cleanup(&d);
    events_config_cleanup(&ec);
    ferry_cfg_free(&table, &a);
    unlink(secret_path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_config),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_targets_from_specs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
