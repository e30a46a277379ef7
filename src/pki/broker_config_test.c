/*
 * broker_config_test.c - unit tests of the Mosquitto configuration
 * generator: the settings the security model depends on are present, the
 * ACL has exactly one line per device topic, and hostile option values
 * (config injection through a newline, a '+' in the prefix) are refused.
 * Whether Mosquitto enforces all this is tested against the real broker in
 * tests/integration/test_broker_acl.py.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/buf.h"
#include "pki/broker_config.h"
#include "pki/pki.h"
#include "pki/pki_int.h"

static char dir[64];

static int setup(void **state)
{
    char err[512];
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/ferry-brokercfg-test-XXXXXX");
    if (mkdtemp(dir) == NULL)
        return -1;
    return pki_init(dir, NULL, err, sizeof err) == FERRY_OK ? 0 : -1;
}

static void remove_tree(const char *path)
{
    DIR *d = opendir(path);
    if (d == NULL) {
        unlink(path);
        return;
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        char child[PATH_MAX];
        snprintf(child, sizeof child, "%s/%s", path, e->d_name);
        remove_tree(child);
    }
    closedir(d);
    rmdir(path);
}

static int teardown(void **state)
{
    (void)state;
    remove_tree(dir);
    return 0;
}

static char *read_text(const char *rel)
{
    char path[PATH_MAX];
    ferry_buf buf;
    ferry_buf_init(&buf, 1 << 20);
    snprintf(path, sizeof path, "%s/%s", dir, rel);
    assert_int_equal(pki_read_file(path, 1 << 20, &buf), FERRY_OK);
    return ferry_buf_detach(&buf);
}

static bool has_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = text; (p = strstr(p, line)) != NULL; p++)
        if ((p == text || p[-1] == '\n') && (p[n] == '\n' || p[n] == '\0'))
            return true;
    return false;
}

static void test_defaults(void **state)
{
    char err[512], line[PATH_MAX + 64], real[PATH_MAX];
    (void)state;
    broker_config_options o = {.out_dir = dir, .pki_dir = dir, .port = 18883,
                               .bind_address = "127.0.0.1", .prefix = "ferry"};
    assert_int_equal(broker_config_write(&o, err, sizeof err), FERRY_OK);
    char *conf = read_text("mosquitto.conf");
    char *acl = read_text("acl");
    assert_non_null(realpath(dir, real));

    static const char *const required[] = {
        "per_listener_settings false", "listener 18883 127.0.0.1", "tls_version tlsv1.2",
        "require_certificate true",    "use_identity_as_username true",
        "allow_anonymous false",       "set_tcp_nodelay true",
        "persistence true",            "message_size_limit 131072",
        "use_username_as_clientid true", "max_queued_messages 100000",
        "max_inflight_messages 256",
    };
    for (size_t i = 0; i < sizeof required / sizeof required[0]; i++) {
        if (!has_line(conf, required[i]))
            fail_msg("mosquitto.conf lacks '%s'", required[i]);
    }
    static const char *const files[][2] = {{"cafile", "ca.pem"},     {"certfile", "broker.pem"},
                                           {"keyfile", "broker.key"}, {"crlfile", "crl.pem"},
                                           {"acl_file", "acl"}};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(line, sizeof line, "%s %s/%s", files[i][0], real, files[i][1]);
        if (!has_line(conf, line))
            fail_msg("mosquitto.conf lacks '%s'", line);
    }
    snprintf(line, sizeof line, "persistence_location %s/persistence/", real);
    assert_true(has_line(conf, line));
    struct stat st;
    snprintf(line, sizeof line, "%s/persistence", dir);
    assert_int_equal(stat(line, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);

    /* Exactly the table's rows for devices, and ferryd's block. */
    assert_true(has_line(acl, "pattern write ferry/%u/upload/request"));
    assert_true(has_line(acl, "pattern read ferry/%u/upload/response"));
    assert_true(has_line(acl, "pattern read ferry/%u/upload/response/#"));
    assert_true(has_line(acl, "user ferryd"));
    assert_true(has_line(acl, "topic readwrite ferry/#"));
    size_t count = 0, patterns = 0;
    broker_device_topics(&count);
    for (const char *p = acl; (p = strstr(p, "\npattern ")) != NULL; p++)
        patterns++;
    assert_int_equal(patterns, count);
    /* Nothing grants a device readwrite or a wildcard outside its level. */
    assert_null(strstr(acl, "pattern readwrite"));
    assert_null(strstr(acl, "ferry/+"));
    free(conf);
    free(acl);
}

static void test_every_ferryd_identity_gets_ferryds_rights(void **state)
{
    char err[512];
    (void)state;
    assert_int_equal(pki_issue_ferryd(dir, "ferryd-b", 30, err, sizeof err), FERRY_OK);
    assert_int_equal(pki_issue_ferryd(dir, "ferryd-gone", 30, err, sizeof err), FERRY_OK);
    assert_int_equal(pki_revoke(dir, "ferryd-gone", err, sizeof err), FERRY_OK);
    assert_int_equal(pki_issue(dir, "dev-z", NULL, 30, err, sizeof err), FERRY_OK);
    broker_config_options o = {.out_dir = dir, .pki_dir = dir, .port = 8883, .prefix = "ferry",
                               .run_as_user = "mosquitto"};
    assert_int_equal(broker_config_write(&o, err, sizeof err), FERRY_OK);
    char *acl = read_text("acl");
    char *conf = read_text("mosquitto.conf");
    assert_true(has_line(acl, "user ferryd"));
    assert_true(has_line(acl, "user ferryd-b"));
    assert_false(has_line(acl, "user ferryd-gone"));
    assert_false(has_line(acl, "user dev-z"));
    assert_false(has_line(acl, "user broker"));
    size_t users = 0;
    for (const char *p = acl; (p = strstr(p, "\nuser ")) != NULL; p++)
        users++;
    assert_int_equal(users, 2);
    assert_true(has_line(conf, "user mosquitto"));
    free(acl);
    free(conf);

    o.run_as_user = "root\nallow_anonymous true";
    assert_int_equal(broker_config_write(&o, err, sizeof err), FERRY_ERR_INVALID);
}

static void test_all_interfaces_and_prefix(void **state)
{
    char err[512];
    (void)state;
    broker_config_options o = {.out_dir = dir, .pki_dir = dir, .port = 8883, .prefix = "fleet7"};
    assert_int_equal(broker_config_write(&o, err, sizeof err), FERRY_OK);
    char *conf = read_text("mosquitto.conf");
    char *acl = read_text("acl");
    assert_true(has_line(conf, "listener 8883"));
    assert_true(has_line(acl, "pattern write fleet7/%u/upload/request"));
    assert_true(has_line(acl, "topic readwrite fleet7/#"));
    free(conf);
    free(acl);
}

static void test_refuses_hostile_options(void **state)
{
    char err[512], bad_dir[PATH_MAX];
    (void)state;
    static const char *const bad_prefixes[] = {"", "a/b", "+", "#", "$SYS", "a b", ".."};
    for (size_t i = 0; i < sizeof bad_prefixes / sizeof bad_prefixes[0]; i++) {
        broker_config_options o = {.out_dir = dir, .pki_dir = dir, .port = 8883,
                                   .prefix = bad_prefixes[i]};
        assert_int_equal(broker_config_write(&o, err, sizeof err), FERRY_ERR_INVALID);
    }
    broker_config_options bind = {.out_dir = dir, .pki_dir = dir, .port = 8883,
                                  .prefix = "ferry", .bind_address = "127.0.0.1\nuser root"};
    assert_int_equal(broker_config_write(&bind, err, sizeof err), FERRY_ERR_INVALID);
    broker_config_options port = {.out_dir = dir, .pki_dir = dir, .port = 70000,
                                  .prefix = "ferry"};
    assert_int_equal(broker_config_write(&port, err, sizeof err), FERRY_ERR_RANGE);

    /* A directory name with a newline would inject configuration lines. */
    snprintf(bad_dir, sizeof bad_dir, "%s/out\nallow_anonymous true", dir);
    broker_config_options inj = {.out_dir = bad_dir, .pki_dir = dir, .port = 8883,
                                 .prefix = "ferry"};
    assert_int_equal(broker_config_write(&inj, err, sizeof err), FERRY_ERR_INVALID);

    /* A PKI directory without a CA. */
    snprintf(bad_dir, sizeof bad_dir, "%s/devices", dir);
    broker_config_options nopki = {.out_dir = dir, .pki_dir = bad_dir, .port = 8883,
                                   .prefix = "ferry"};
    assert_int_equal(broker_config_write(&nopki, err, sizeof err), FERRY_ERR_NOT_FOUND);
    assert_non_null(strstr(err, "ca.pem"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_all_interfaces_and_prefix),
        cmocka_unit_test(test_every_ferryd_identity_gets_ferryds_rights),
        cmocka_unit_test(test_refuses_hostile_options),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
