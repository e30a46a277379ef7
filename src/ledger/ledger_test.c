/*
 * ledger_test.c - unit tests of the ledger through its public interface,
 * against a real SQLite database in a fresh temporary directory per test:
 * migrations (fresh, re-open, too new), every operation, the limits checked
 * inside the insert transaction, and races between two connections (mark
 * used twice: exactly one wins; concurrent inserts never pass a limit).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ledger/ledger.h"

#define T0 INT64_C(1795000000) /* 2026-11-18, a fixed "now" */
#define LATEST_SCHEMA 10       /* the number of migrations in ledger_sqlite.c */

typedef struct fixture {
    char dir[64];
    char path[128];
    ledger *l;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (f == NULL)
        return -1;
    snprintf(f->dir, sizeof f->dir, "/tmp/ferry-ledger-XXXXXX");
    if (mkdtemp(f->dir) == NULL) {
        free(f);
        return -1;
    }
    snprintf(f->path, sizeof f->path, "%s/ledger.db", f->dir);
    if (ledger_open(f->path, &f->l) != FERRY_OK) {
        rmdir(f->dir);
        free(f);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    char p[160];
    ledger_close(f->l);
    static const char *const suffixes[] = {"", "-wal", "-shm", "-journal"};
    for (size_t i = 0; i < 4; i++) {
        snprintf(p, sizeof p, "%s%s", f->path, suffixes[i]);
        unlink(p);
    }
    rmdir(f->dir);
    free(f);
    return 0;
}

static void make_grant(ledger_grant *g, const char *id, const char *device, uint64_t size,
                       int64_t issued_at, int64_t ttl_s)
{
    memset(g, 0, sizeof *g);
    snprintf(g->id, sizeof g->id, "%s", id);
    snprintf(g->device, sizeof g->device, "%s", device);
    snprintf(g->request_id, sizeof g->request_id, "r-%s", id);
    snprintf(g->key, sizeof g->key, "%s/2026/11/18/%s-x.bin", device, id);
    snprintf(g->bucket, sizeof g->bucket, "ingest");
    snprintf(g->method, sizeof g->method, "PUT");
    snprintf(g->content_type, sizeof g->content_type, "application/octet-stream");
    g->size = size;
    g->issued_at = issued_at;
    g->expires_at = issued_at + ttl_s;
}

static void insert_ok(ledger *l, const ledger_grant *g)
{
    ledger_verdict v = LEDGER_OVER_QUOTA;
    assert_int_equal(ledger_grant_insert(l, g, NULL, &v), FERRY_OK);
    assert_int_equal(v, LEDGER_INSERTED);
}

static void make_object(ledger_object *o, const char *key, const char *grant_id)
{
    memset(o, 0, sizeof *o);
    snprintf(o->bucket, sizeof o->bucket, "ingest");
    snprintf(o->key, sizeof o->key, "%s", key);
    snprintf(o->file_id, sizeof o->file_id, "file-%s", key[0] == 'a' ? "a" : "b");
    o->size = 3;
    snprintf(o->etag, sizeof o->etag, "900150983cd24fb0d6963f7d28e17f72");
    snprintf(o->sha256, sizeof o->sha256, "%s",
             "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    snprintf(o->content_type, sizeof o->content_type, "text/plain");
    snprintf(o->meta, sizeof o->meta, "{\"a\":\"b\"}");
    if (grant_id != NULL) {
        snprintf(o->grant_id, sizeof o->grant_id, "%s", grant_id);
        snprintf(o->device, sizeof o->device, "dev-1");
    }
    o->created_at = T0;
}

static void test_migrate_fresh_and_reopen(void **state)
{
    fixture *f = *state;
    int64_t v = 0;
    ledger *again = NULL;
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;

    assert_string_equal(ledger_backend(f->l), "sqlite");
    assert_int_equal(ledger_schema_version(f->l, &v), FERRY_OK);
    assert_int_equal(v, LATEST_SCHEMA);
    /* Re-opening an up-to-date database changes nothing and keeps data. */
    ledger_grant g;
    make_grant(&g, "g_a", "dev-1", 10, T0, 60);
    insert_ok(f->l, &g);
    ledger_close(f->l);
    f->l = NULL;
    assert_int_equal(ledger_open(f->path, &again), FERRY_OK);
    assert_int_equal(ledger_schema_version(again, &v), FERRY_OK);
    assert_int_equal(v, LATEST_SCHEMA);
    ledger_grant back;
    assert_int_equal(ledger_grant_get(again, "g_a", &back), FERRY_OK);
    assert_string_equal(back.key, g.key);
    ledger_close(again);

    /* The file is in WAL mode (persistent), under the "sqlite:" URL too. */
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "wal");
    sqlite3_finalize(st);
    sqlite3_close(db);

    char url[160];
    snprintf(url, sizeof url, "sqlite:%s", f->path);
    assert_int_equal(ledger_open(url, &f->l), FERRY_OK);
}

static void test_schema_too_new_refused(void **state)
{
    fixture *f = *state;
    sqlite3 *db = NULL;
    ledger *l = NULL;
    ledger_close(f->l);
    f->l = NULL;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "PRAGMA user_version = 99", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    assert_int_equal(ledger_open(f->path, &l), FERRY_ERR_DB);
    assert_null(l);
}

static void test_open_bad_urls(void **state)
{
    (void)state;
    ledger *l = NULL;
    assert_int_equal(ledger_open("postgres://localhost/ferry", &l), FERRY_ERR_INVALID);
    assert_int_equal(ledger_open("sqlite:", &l), FERRY_ERR_INVALID);
    assert_int_equal(ledger_open(NULL, &l), FERRY_ERR_INVALID);
    assert_int_not_equal(ledger_open("/nonexistent-dir/x/ledger.db", &l), FERRY_OK);
    assert_null(l);
    ledger_close(NULL);
}

static void test_device_upsert_get(void **state)
{
    fixture *f = *state;
    ledger_device d, back;
    memset(&d, 0, sizeof d);
    assert_int_equal(ledger_device_get(f->l, "dev-1", &back), FERRY_ERR_NOT_FOUND);

    snprintf(d.id, sizeof d.id, "dev-1");
    d.max_size_bytes = (ledger_opt_u64){true, 1000};
    d.content_types_set = true;
    snprintf(d.content_types, sizeof d.content_types, "image/jpeg,audio/wav");
    d.expiry_max_s = (ledger_opt_i64){true, 600};
    d.rate_per_s = (ledger_opt_f64){true, 0.5};
    assert_int_equal(ledger_device_upsert(f->l, &d, T0), FERRY_OK);
    assert_int_equal(ledger_device_get(f->l, "dev-1", &back), FERRY_OK);
    assert_string_equal(back.id, "dev-1");
    assert_false(back.disabled);
    assert_true(back.max_size_bytes.set);
    assert_int_equal(back.max_size_bytes.v, 1000);
    assert_true(back.content_types_set);
    assert_string_equal(back.content_types, "image/jpeg,audio/wav");
    assert_false(back.expiry_min_s.set);
    assert_true(back.expiry_max_s.set);
    assert_int_equal(back.expiry_max_s.v, 600);
    assert_true(back.rate_per_s.set);
    assert_true(back.rate_per_s.v == 0.5);
    assert_false(back.rate_burst.set);
    assert_false(back.daily_quota_bytes.set);
    assert_int_equal(back.created_at, T0);

    /* Update: overrides replaced, created_at kept. */
    memset(&d, 0, sizeof d);
    snprintf(d.id, sizeof d.id, "dev-1");
    d.disabled = true;
    assert_int_equal(ledger_device_upsert(f->l, &d, T0 + 5), FERRY_OK);
    assert_int_equal(ledger_device_get(f->l, "dev-1", &back), FERRY_OK);
    assert_true(back.disabled);
    assert_false(back.max_size_bytes.set);
    assert_false(back.content_types_set);
    assert_int_equal(back.created_at, T0);
    assert_int_equal(back.updated_at, T0 + 5);

    /* Out-of-range and oversize input is refused, not truncated. */
    d.max_open_grants = (ledger_opt_u64){true, UINT64_MAX};
    assert_int_equal(ledger_device_upsert(f->l, &d, T0), FERRY_ERR_RANGE);
    char longid[LEDGER_DEVICE_MAX + 2];
    memset(longid, 'a', sizeof longid - 1);
    longid[sizeof longid - 1] = '\0';
    assert_int_equal(ledger_device_get(f->l, longid, &back), FERRY_ERR_TOO_LARGE);
    assert_int_equal(ledger_device_get(f->l, "", &back), FERRY_ERR_INVALID);
    assert_int_equal(ledger_device_get(f->l, NULL, &back), FERRY_ERR_INVALID);
}

/* Device rows are kept between write transactions (ledger_sqlite.c): a
 * change by another connection, this connection's own upsert, the row a
 * grant insert creates and a rollback must each be seen by the next read. */
static void test_device_cache_invalidation(void **state)
{
    fixture *f = *state;
    ledger *other = NULL;
    ledger_device d, back;
    ledger_grant g;
    assert_int_equal(ledger_open(f->path, &other), FERRY_OK);

    /* A miss read inside a transaction, then another connection adds the row. */
    assert_int_equal(ledger_write_begin(f->l), FERRY_OK);
    assert_int_equal(ledger_device_get(f->l, "dev-1", &back), FERRY_ERR_NOT_FOUND);
    assert_int_equal(ledger_write_commit(f->l), FERRY_OK);
    memset(&d, 0, sizeof d);
    snprintf(d.id, sizeof d.id, "dev-1");
    d.disabled = true;
    assert_int_equal(ledger_device_upsert(other, &d, T0), FERRY_OK);
    assert_int_equal(ledger_write_begin(f->l), FERRY_OK);
    assert_int_equal(ledger_device_get(f->l, "dev-1", &back), FERRY_OK);
    assert_true(back.disabled);
    assert_int_equal(ledger_write_commit(f->l), FERRY_OK);

    /* Read again from the cache, then changed by the other connection. */
    assert_int_equal(ledger_write_begin(f->l), FERRY_OK);
    assert_int_equal(ledger_device_get(f->l, "dev-1", &back), FERRY_OK);
    assert_true(back.disabled);
    assert_int_equal(ledger_write_commit(f->l), FERRY_OK);
    d.disabled = false;
    d.max_size_bytes = (ledger_opt_u64){true, 7};
    assert_int_equal(ledger_device_upsert(other, &d, T0 + 1), FERRY_OK);
    assert_int_equal(ledger_write_begin(f->l), FERRY_OK);
    assert_int_equal(ledger_device_get(f->l, "dev-1", &back), FERRY_OK);
    assert_false(back.disabled);
    assert_int_equal(back.max_size_bytes.v, 7);
    assert_int_equal(ledger_write_commit(f->l), FERRY_OK);

    /* This connection's own upsert (data_version does not count it). */
    d.max_size_bytes = (ledger_opt_u64){true, 9};
    assert_int_equal(ledger_device_upsert(f->l, &d, T0 + 2), FERRY_OK);
    assert_int_equal(ledger_write_begin(f->l), FERRY_OK);
    assert_int_equal(ledger_device_get(f->l, "dev-1", &back), FERRY_OK);
    assert_int_equal(back.max_size_bytes.v, 9);
    assert_int_equal(ledger_write_commit(f->l), FERRY_OK);

    /* A miss, then the row a grant insert of this connection creates. */
    assert_int_equal(ledger_write_begin(f->l), FERRY_OK);
    assert_int_equal(ledger_device_get(f->l, "dev-2", &back), FERRY_ERR_NOT_FOUND);
    make_grant(&g, "g_cache", "dev-2", 10, T0, 300);
    ledger_insert item = {.grant = &g};
    assert_int_equal(ledger_grant_insert_batch(f->l, &item, 1), FERRY_OK);
    assert_int_equal(item.err, FERRY_OK);
    assert_int_equal(ledger_write_commit(f->l), FERRY_OK);
    assert_int_equal(ledger_write_begin(f->l), FERRY_OK);
    assert_int_equal(ledger_device_get(f->l, "dev-2", &back), FERRY_OK);
    assert_string_equal(back.id, "dev-2");
    assert_int_equal(ledger_write_commit(f->l), FERRY_OK);

    /* A row read after this connection's own uncommitted upsert, rolled back. */
    assert_int_equal(ledger_write_begin(f->l), FERRY_OK);
    d.max_size_bytes = (ledger_opt_u64){true, 11};
    assert_int_equal(ledger_device_upsert(f->l, &d, T0 + 3), FERRY_OK);
    assert_int_equal(ledger_device_get(f->l, "dev-1", &back), FERRY_OK);
    assert_int_equal(back.max_size_bytes.v, 11);
    ledger_write_rollback(f->l);
    assert_int_equal(ledger_write_begin(f->l), FERRY_OK);
    assert_int_equal(ledger_device_get(f->l, "dev-1", &back), FERRY_OK);
    assert_int_equal(back.max_size_bytes.v, 9);
    assert_int_equal(ledger_write_commit(f->l), FERRY_OK);

    /* Outside a transaction the row is always read. */
    d.max_size_bytes = (ledger_opt_u64){true, 13};
    assert_int_equal(ledger_device_upsert(other, &d, T0 + 4), FERRY_OK);
    assert_int_equal(ledger_device_get(f->l, "dev-1", &back), FERRY_OK);
    assert_int_equal(back.max_size_bytes.v, 13);
    ledger_close(other);
}

/* Sync mode, autocheckpoint off and a background checkpoint: writes stay
 * readable from another connection and the log is folded back into the
 * database file. */
static void test_sync_and_checkpoint_controls(void **state)
{
    fixture *f = *state;
    assert_int_equal(ledger_set_sync(f->l, LEDGER_SYNC_NORMAL), FERRY_OK);
    assert_int_equal(ledger_set_sync(f->l, LEDGER_SYNC_FULL), FERRY_OK);
    assert_int_equal(ledger_set_sync(f->l, (ledger_sync)7), FERRY_ERR_INVALID);
    assert_int_equal(ledger_set_sync(NULL, LEDGER_SYNC_FULL), FERRY_ERR_INVALID);
    assert_int_equal(ledger_set_sync(f->l, LEDGER_SYNC_NORMAL), FERRY_OK);
    assert_int_equal(ledger_set_autocheckpoint(f->l, false), FERRY_OK);
    ledger_grant g;
    char id[16];
    for (int i = 0; i < 50; i++) {
        snprintf(id, sizeof id, "g_ck%d", i);
        make_grant(&g, id, "dev-ck", 10, T0, 300);
        insert_ok(f->l, &g);
    }
    ledger *other = NULL;
    assert_int_equal(ledger_open(f->path, &other), FERRY_OK);
    assert_int_equal(ledger_checkpoint(other, NULL, NULL), FERRY_OK);
    ledger_grant back;
    assert_int_equal(ledger_grant_get(other, "g_ck49", &back), FERRY_OK);
    uint64_t open = 0;
    assert_int_equal(ledger_open_grants(other, "dev-ck", T0, &open), FERRY_OK);
    assert_int_equal(open, 50);
    ledger_close(other);
    assert_int_equal(ledger_set_autocheckpoint(f->l, true), FERRY_OK);
    assert_int_equal(ledger_checkpoint(f->l, NULL, NULL), FERRY_OK);
    assert_int_equal(ledger_checkpoint(NULL, NULL, NULL), FERRY_ERR_INVALID);
}

/* The log's size on disk (it never shrinks: a log that starts over is
 * written from its start again). */
static off_t wal_size(const fixture *f)
{
    char path[600];
    struct stat st;
    snprintf(path, sizeof path, "%s-wal", f->path);
    assert_int_equal(stat(path, &st), 0);
    return st.st_size;
}

static void insert_run(ledger *l, const char *prefix, int n)
{
    ledger_grant g;
    char id[32];
    for (int i = 0; i < n; i++) {
        snprintf(id, sizeof id, "g_%s%03d", prefix, i);
        make_grant(&g, id, "dev-wal", 10, T0, 300);
        insert_ok(l, &g);
    }
}

/* The log starts over only after the writer's own checkpoint of the tail
 * (ledger.h): another handle's checkpoint during the writer's transaction
 * leaves that transaction's frames, and the log grows on; once the writer
 * has copied them itself, its next transactions write the log from the
 * start again. */
static void test_checkpoint_tail_restarts_log(void **state)
{
    fixture *f = *state;
    ledger *other = NULL;
    ledger_grant g, back;
    ledger_insert item;
    uint64_t log = 0, copied = 0;

    assert_int_equal(ledger_set_autocheckpoint(f->l, false), FERRY_OK);
    assert_int_equal(ledger_open(f->path, &other), FERRY_OK);
    insert_run(f->l, "a", 100);
    off_t first = wal_size(f);
    assert_int_equal(ledger_write_begin(f->l), FERRY_OK);
    make_grant(&g, "g_open", "dev-wal", 10, T0, 300);
    item = (ledger_insert){.grant = &g};
    assert_int_equal(ledger_grant_insert_batch(f->l, &item, 1), FERRY_OK);
    assert_int_equal(ledger_checkpoint(other, &log, &copied), FERRY_OK);
    assert_true(log >= 100);
    assert_int_equal(copied, log);
    assert_int_equal(ledger_write_commit(f->l), FERRY_OK);
    insert_run(f->l, "b", 100);
    off_t grown = wal_size(f);
    assert_true(grown > first);
    /* The tail, copied by the writer: its next writes start over. */
    assert_int_equal(ledger_checkpoint(f->l, &log, &copied), FERRY_OK);
    assert_int_equal(copied, log);
    insert_run(f->l, "c", 100);
    assert_int_equal(wal_size(f), grown);
    assert_int_equal(ledger_grant_get(other, "g_c099", &back), FERRY_OK);
    assert_int_equal(ledger_grant_get(other, "g_a050", &back), FERRY_OK);
    assert_int_equal(ledger_grant_get(other, "g_open", &back), FERRY_OK);
    ledger_close(other);
}

static void test_grant_insert_get(void **state)
{
    fixture *f = *state;
    ledger_grant g, back;
    ledger_verdict v;
    make_grant(&g, "g_one", "dev-1", 1234, T0, 300);
    memset(g.sha256, 'a', LEDGER_SHA256_HEX_LEN);
    insert_ok(f->l, &g);
    assert_int_equal(ledger_grant_get(f->l, "g_one", &back), FERRY_OK);
    assert_string_equal(back.device, "dev-1");
    assert_string_equal(back.request_id, "r-g_one");
    assert_string_equal(back.bucket, "ingest");
    assert_string_equal(back.method, "PUT");
    assert_int_equal(back.size, 1234);
    assert_string_equal(back.sha256, g.sha256);
    assert_int_equal(back.state, LEDGER_GRANT_ISSUED);
    assert_int_equal(back.issued_at, T0);
    assert_int_equal(back.expires_at, T0 + 300);
    assert_int_equal(back.used_at, 0);
    /* The insert created the device row (no overrides). */
    ledger_device d;
    assert_int_equal(ledger_device_get(f->l, "dev-1", &d), FERRY_OK);
    assert_false(d.max_size_bytes.set);
    /* Same id twice. */
    assert_int_equal(ledger_grant_insert(f->l, &g, NULL, &v), FERRY_ERR_EXISTS);
    assert_int_equal(ledger_grant_get(f->l, "g_none", &back), FERRY_ERR_NOT_FOUND);
    /* Malformed records. */
    make_grant(&g, "g_two", "dev-1", 1, T0, 0);
    assert_int_equal(ledger_grant_insert(f->l, &g, NULL, &v), FERRY_ERR_INVALID);
    make_grant(&g, "g_two", "dev-1", 1, T0, 10);
    snprintf(g.sha256, sizeof g.sha256, "abc");
    assert_int_equal(ledger_grant_insert(f->l, &g, NULL, &v), FERRY_ERR_INVALID);
    make_grant(&g, "g_two", "dev-1", 1, T0, 10);
    memset(g.key, 'k', sizeof g.key);
    assert_int_equal(ledger_grant_insert(f->l, &g, NULL, &v), FERRY_ERR_TOO_LARGE);
}

typedef struct audit_collect {
    int n;
    ledger_audit_row rows[16];
} audit_collect;

static int collect(const ledger_audit_row *row, void *arg)
{
    audit_collect *c = arg;
    if (c->n < 16)
        c->rows[c->n++] = *row;
    return 0;
}

static void test_audit(void **state)
{
    fixture *f = *state;
    ledger_grant g;
    audit_collect c;
    make_grant(&g, "g_1", "dev-1", 5, T0, 60);
    insert_ok(f->l, &g);
    assert_int_equal(ledger_audit_refusal(f->l, "dev-2", NULL, "MalformedJson", "bad", T0 + 1),
                     FERRY_OK);
    assert_int_equal(ledger_audit_refusal(f->l, "dev-1", "r-9", "TooLarge", "over 10", T0 + 2),
                     FERRY_OK);
    assert_int_equal(ledger_audit_refusal(f->l, "dev-1", NULL, "", "x", T0), FERRY_ERR_INVALID);

    assert_int_equal(ledger_audit_refusal(f->l, "dev-1", "r-10", "RateLimited", "slow", T0 + 3),
                     FERRY_OK);

    /* The issued grant's record is its row, not an audit row. */
    memset(&c, 0, sizeof c);
    assert_int_equal(ledger_audit_list(f->l, NULL, 0, 100, collect, &c), FERRY_OK);
    assert_int_equal(c.n, 3);
    assert_string_equal(c.rows[0].outcome, "refused");
    assert_string_equal(c.rows[0].device, "dev-2");
    assert_string_equal(c.rows[0].request_id, "");
    assert_string_equal(c.rows[1].code, "TooLarge");
    assert_int_equal(c.rows[1].at, T0 + 2);
    ledger_grant got;
    assert_int_equal(ledger_grant_get(f->l, "g_1", &got), FERRY_OK);
    assert_string_equal(got.device, "dev-1");
    assert_int_equal(got.issued_at, T0);

    memset(&c, 0, sizeof c);
    assert_int_equal(ledger_audit_list(f->l, "dev-1", 0, 100, collect, &c), FERRY_OK);
    assert_int_equal(c.n, 2);
    int64_t after = c.rows[0].seq;
    memset(&c, 0, sizeof c);
    assert_int_equal(ledger_audit_list(f->l, "dev-1", after, 1, collect, &c), FERRY_OK);
    assert_int_equal(c.n, 1);
    assert_string_equal(c.rows[0].request_id, "r-10");

    /* The whole log of a device: the issued grant merged in by time. */
    memset(&c, 0, sizeof c);
    assert_int_equal(ledger_audit_log(f->l, "dev-1", 0, 100, collect, &c), FERRY_OK);
    assert_int_equal(c.n, 3);
    assert_string_equal(c.rows[0].outcome, "issued");
    assert_string_equal(c.rows[0].code, "Granted");
    assert_string_equal(c.rows[0].grant_id, "g_1");
    assert_string_equal(c.rows[0].request_id, "r-g_1");
    assert_string_equal(c.rows[0].detail, "method=PUT size=5");
    assert_int_equal(c.rows[0].at, T0);
    assert_string_equal(c.rows[1].code, "TooLarge");
    assert_string_equal(c.rows[2].code, "RateLimited");
    memset(&c, 0, sizeof c);
    assert_int_equal(ledger_audit_log(f->l, "dev-1", T0 + 1, 1, collect, &c), FERRY_OK);
    assert_int_equal(c.n, 1);
    assert_string_equal(c.rows[0].code, "TooLarge");
    assert_int_equal(ledger_audit_log(f->l, NULL, 0, 1, collect, &c), FERRY_ERR_INVALID);

    /* The same for SQL readers, every device: the view audit_log. */
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT count(*) FROM audit_log", -1, &st, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(st, 0), 4);
    sqlite3_finalize(st);
    sqlite3_close(db);
}

static void test_open_count_and_bytes(void **state)
{
    fixture *f = *state;
    ledger_grant g;
    uint64_t n = 99;
    make_grant(&g, "g_1", "dev-1", 100, T0, 60);
    insert_ok(f->l, &g);
    make_grant(&g, "g_2", "dev-1", 200, T0 + 10, 60);
    insert_ok(f->l, &g);
    make_grant(&g, "g_3", "dev-1", 400, T0 + 20, 60);
    insert_ok(f->l, &g);
    make_grant(&g, "g_4", "dev-2", 800, T0, 60);
    insert_ok(f->l, &g);
    make_grant(&g, "g_old", "dev-1", 1600, T0 - 86400, 60); /* yesterday */
    insert_ok(f->l, &g);

    assert_int_equal(ledger_open_grants(f->l, "dev-1", T0 + 30, &n), FERRY_OK);
    assert_int_equal(n, 3);
    assert_int_equal(ledger_open_grants(f->l, "dev-1", T0 + 60, &n), FERRY_OK);
    assert_int_equal(n, 2); /* g_1 expired at T0 + 60 */
    assert_int_equal(ledger_open_grants(f->l, "dev-3", T0, &n), FERRY_OK);
    assert_int_equal(n, 0);

    assert_int_equal(ledger_bytes_since(f->l, "dev-1", T0 - 100, T0 + 30, &n), FERRY_OK);
    assert_int_equal(n, 700);
    /* Used grants keep counting after their expiry; revoked and expired
     * unused ones give their bytes back. */
    assert_int_equal(ledger_grant_mark_used(f->l, "g_1", T0 + 5), FERRY_OK);
    assert_int_equal(ledger_grant_revoke(f->l, "g_2", T0 + 15), FERRY_OK);
    assert_int_equal(ledger_bytes_since(f->l, "dev-1", T0 - 100, T0 + 75, &n), FERRY_OK);
    assert_int_equal(n, 500);
    assert_int_equal(ledger_bytes_since(f->l, "dev-1", T0 - 100, T0 + 1000, &n), FERRY_OK);
    assert_int_equal(n, 100);
}

static void test_limits_inside_insert(void **state)
{
    fixture *f = *state;
    ledger_grant g;
    ledger_verdict v;
    uint64_t n;
    ledger_limits lim = {.max_open_grants = 2, .daily_quota_bytes = 1000, .day_start = T0 - 10};

    make_grant(&g, "g_1", "dev-1", 400, T0, 60);
    assert_int_equal(ledger_grant_insert(f->l, &g, &lim, &v), FERRY_OK);
    assert_int_equal(v, LEDGER_INSERTED);
    make_grant(&g, "g_2", "dev-1", 400, T0, 60);
    assert_int_equal(ledger_grant_insert(f->l, &g, &lim, &v), FERRY_OK);
    assert_int_equal(v, LEDGER_INSERTED);
    make_grant(&g, "g_3", "dev-1", 1, T0, 60);
    assert_int_equal(ledger_grant_insert(f->l, &g, &lim, &v), FERRY_OK);
    assert_int_equal(v, LEDGER_OVER_OPEN_GRANTS);
    assert_int_equal(ledger_grant_get(f->l, "g_3", &g), FERRY_ERR_NOT_FOUND);

    /* One used: a slot frees, but 400 + 400 + 201 > 1000. */
    assert_int_equal(ledger_grant_mark_used(f->l, "g_1", T0 + 1), FERRY_OK);
    make_grant(&g, "g_3", "dev-1", 201, T0 + 2, 60);
    assert_int_equal(ledger_grant_insert(f->l, &g, &lim, &v), FERRY_OK);
    assert_int_equal(v, LEDGER_OVER_QUOTA);
    make_grant(&g, "g_3", "dev-1", 200, T0 + 2, 60);
    assert_int_equal(ledger_grant_insert(f->l, &g, &lim, &v), FERRY_OK);
    assert_int_equal(v, LEDGER_INSERTED);
    /* A size over the whole quota, and sizes that would overflow a sum. */
    lim.max_open_grants = 0;
    make_grant(&g, "g_4", "dev-9", UINT64_C(1) << 62, T0, 60);
    assert_int_equal(ledger_grant_insert(f->l, &g, &lim, &v), FERRY_OK);
    assert_int_equal(v, LEDGER_OVER_QUOTA);
    /* A refused insert writes nothing, not even the device row. */
    ledger_device d;
    assert_int_equal(ledger_device_get(f->l, "dev-9", &d), FERRY_ERR_NOT_FOUND);
    assert_int_equal(ledger_open_grants(f->l, "dev-1", T0 + 3, &n), FERRY_OK);
    assert_int_equal(n, 2);
}

static void test_mark_used_revoke_expire(void **state)
{
    fixture *f = *state;
    ledger_grant g;
    uint64_t n = 0;
    audit_collect c;
    make_grant(&g, "g_1", "dev-1", 1, T0, 60);
    insert_ok(f->l, &g);
    make_grant(&g, "g_2", "dev-1", 1, T0, 60);
    insert_ok(f->l, &g);
    make_grant(&g, "g_3", "dev-1", 1, T0, 60);
    insert_ok(f->l, &g);
    make_grant(&g, "g_4", "dev-1", 1, T0, 600);
    insert_ok(f->l, &g);

    assert_int_equal(ledger_grant_mark_used(f->l, "g_1", T0 + 1), FERRY_OK);
    assert_int_equal(ledger_grant_mark_used(f->l, "g_1", T0 + 2), FERRY_ERR_CONFLICT);
    assert_int_equal(ledger_grant_get(f->l, "g_1", &g), FERRY_OK);
    assert_int_equal(g.state, LEDGER_GRANT_USED);
    assert_int_equal(g.used_at, T0 + 1);
    assert_int_equal(ledger_grant_mark_used(f->l, "g_2", T0 + 60), FERRY_ERR_EXPIRED);
    assert_int_equal(ledger_grant_mark_used(f->l, "g_x", T0), FERRY_ERR_NOT_FOUND);

    assert_int_equal(ledger_grant_revoke(f->l, "g_3", T0 + 3), FERRY_OK);
    assert_int_equal(ledger_grant_revoke(f->l, "g_3", T0 + 3), FERRY_ERR_CONFLICT);
    assert_int_equal(ledger_grant_mark_used(f->l, "g_3", T0 + 4), FERRY_ERR_CONFLICT);
    assert_int_equal(ledger_grant_revoke(f->l, "g_1", T0 + 3), FERRY_ERR_CONFLICT);
    assert_int_equal(ledger_grant_revoke(f->l, "g_x", T0 + 3), FERRY_ERR_NOT_FOUND);
    assert_int_equal(ledger_grant_get(f->l, "g_3", &g), FERRY_OK);
    assert_int_equal(g.state, LEDGER_GRANT_REVOKED);
    assert_int_equal(g.revoked_at, T0 + 3);

    /* Sweep: only g_2 (issued, past its time) moves. */
    assert_int_equal(ledger_grants_expire(f->l, T0 + 100, &n), FERRY_OK);
    assert_int_equal(n, 1);
    assert_int_equal(ledger_grant_get(f->l, "g_2", &g), FERRY_OK);
    assert_int_equal(g.state, LEDGER_GRANT_EXPIRED);
    assert_int_equal(ledger_grant_mark_used(f->l, "g_2", T0 + 101), FERRY_ERR_EXPIRED);
    assert_int_equal(ledger_grant_revoke(f->l, "g_2", T0 + 101), FERRY_ERR_CONFLICT);
    assert_int_equal(ledger_grants_expire(f->l, T0 + 100, NULL), FERRY_OK);
    assert_int_equal(ledger_grant_get(f->l, "g_4", &g), FERRY_OK);
    assert_int_equal(g.state, LEDGER_GRANT_ISSUED);

    memset(&c, 0, sizeof c);
    assert_int_equal(ledger_audit_list(f->l, "dev-1", 0, 100, collect, &c), FERRY_OK);
    assert_int_equal(c.n, 1);
    assert_string_equal(c.rows[0].outcome, "revoked");
    assert_string_equal(c.rows[0].grant_id, "g_3");
    assert_string_equal(c.rows[0].request_id, "r-g_3");
}

static void test_insert_batch(void **state)
{
    fixture *f = *state;
    ledger_grant g[6];
    ledger_insert items[6];
    ledger_limits lim = {.max_open_grants = 3, .daily_quota_bytes = 0};
    uint64_t n = 0;

    make_grant(&g[0], "g_dup", "dev-1", 1, T0, 60);
    insert_ok(f->l, &g[0]); /* already there: the batch's copy must fail alone */
    make_grant(&g[1], "g_b1", "dev-2", 1, T0, 60);
    make_grant(&g[2], "g_b2", "dev-2", 1, T0, 60);
    make_grant(&g[3], "g_b3", "dev-2", 1, T0, 0); /* invalid: expires at issue */
    make_grant(&g[4], "g_b4", "dev-2", 1, T0, 60);
    make_grant(&g[5], "g_b5", "dev-2", 1, T0, 60);
    memset(items, 0, sizeof items);
    for (int i = 0; i < 6; i++) {
        items[i].grant = &g[i];
        items[i].limits = &lim;
    }
    assert_int_equal(ledger_grant_insert_batch(f->l, items, 6), FERRY_OK);
    assert_int_equal(items[0].err, FERRY_ERR_EXISTS);
    assert_int_equal(items[1].err, FERRY_OK);
    assert_int_equal(items[1].verdict, LEDGER_INSERTED);
    assert_int_equal(items[2].verdict, LEDGER_INSERTED);
    assert_int_equal(items[3].err, FERRY_ERR_INVALID);
    assert_int_equal(items[4].err, FERRY_OK);
    assert_int_equal(items[4].verdict, LEDGER_INSERTED);
    /* The limit counts the grants inserted earlier in the same batch. */
    assert_int_equal(items[5].err, FERRY_OK);
    assert_int_equal(items[5].verdict, LEDGER_OVER_OPEN_GRANTS);
    assert_int_equal(ledger_open_grants(f->l, "dev-2", T0, &n), FERRY_OK);
    assert_int_equal(n, 3);
    ledger_grant got;
    assert_int_equal(ledger_grant_get(f->l, "g_b4", &got), FERRY_OK);
    assert_int_equal(got.state, LEDGER_GRANT_ISSUED);
    assert_int_equal(ledger_grant_insert_batch(f->l, NULL, 0), FERRY_OK);
    assert_int_equal(ledger_grant_insert_batch(f->l, NULL, 1), FERRY_ERR_INVALID);
}

/* ledger_insert.device_exists: honoured only inside the caller's write
 * transaction; outside one the device row is still created. Inside one,
 * a wrong claim cannot plant a grant without its device: the foreign key
 * refuses it. */
static void test_insert_batch_device_exists(void **state)
{
    fixture *f = *state;
    ledger_grant g;
    ledger_insert item;
    ledger_device dev;

    make_grant(&g, "g_hint1", "dev-new", 1, T0, 60);
    item = (ledger_insert){.grant = &g, .device_exists = true};
    assert_int_equal(ledger_grant_insert_batch(f->l, &item, 1), FERRY_OK);
    assert_int_equal(item.err, FERRY_OK);
    assert_int_equal(item.verdict, LEDGER_INSERTED);
    assert_int_equal(ledger_device_get(f->l, "dev-new", &dev), FERRY_OK);

    assert_int_equal(ledger_write_begin(f->l), FERRY_OK);
    assert_int_equal(ledger_device_get(f->l, "dev-new", &dev), FERRY_OK);
    make_grant(&g, "g_hint2", "dev-new", 1, T0, 60);
    item = (ledger_insert){.grant = &g, .device_exists = true};
    assert_int_equal(ledger_grant_insert_batch(f->l, &item, 1), FERRY_OK);
    assert_int_equal(item.err, FERRY_OK);
    assert_int_equal(ledger_write_commit(f->l), FERRY_OK);
    assert_int_equal(ledger_grant_get(f->l, "g_hint2", &g), FERRY_OK);

    assert_int_equal(ledger_write_begin(f->l), FERRY_OK);
    make_grant(&g, "g_hint3", "dev-never", 1, T0, 60);
    item = (ledger_insert){.grant = &g, .device_exists = true};
    assert_int_not_equal(ledger_grant_insert_batch(f->l, &item, 1), FERRY_OK);
    ledger_write_rollback(f->l);
    assert_int_equal(ledger_grant_get(f->l, "g_hint3", &g), FERRY_ERR_NOT_FOUND);
    assert_int_equal(ledger_device_get(f->l, "dev-never", &dev), FERRY_ERR_NOT_FOUND);
}

/* A writer killed with SIGKILL in the middle of a run of inserts: every
 * grant whose insert had returned FERRY_OK is there after re-opening, and
 * the database passes SQLite's integrity check. (A process crash, not a
 * power cut; synchronous=FULL is what covers the latter.) */
static void test_crash_keeps_committed(void **state)
{
    fixture *f = *state;
    int fds[2];
    pid_t pid;
    int reported = 0;
    int status = 0;
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;

    /* No SQLite connection may cross a fork: close ours first. */
    ledger_close(f->l);
    f->l = NULL;
    assert_int_equal(pipe(fds), 0);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        ledger *l = NULL;
        close(fds[0]);
        if (ledger_open(f->path, &l) != FERRY_OK)
            _exit(2);
        for (int i = 0;; i++) {
            char id[32];
            ledger_grant g;
            ledger_verdict v;
            snprintf(id, sizeof id, "g_c%d", i);
            make_grant(&g, id, "dev-crash", 1, T0, 60);
            if (ledger_grant_insert(l, &g, NULL, &v) != FERRY_OK)
                _exit(3);
            if (write(fds[1], &i, sizeof i) != (ssize_t)sizeof i)
                _exit(4);
        }
    }
    close(fds[1]);
    for (;;) {
        int i;
        if (read(fds[0], &i, sizeof i) != (ssize_t)sizeof i)
            break;
        reported = i + 1;
        if (reported >= 200)
            break;
    }
    kill(pid, SIGKILL);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    close(fds[0]);
    assert_true(WIFSIGNALED(status));
    assert_true(reported >= 200);

    assert_int_equal(ledger_open(f->path, &f->l), FERRY_OK);
    for (int i = 0; i < reported; i++) {
        char id[32];
        ledger_grant g;
        snprintf(id, sizeof id, "g_c%d", i);
        if (ledger_grant_get(f->l, id, &g) != FERRY_OK)
            fail_msg("grant %s committed before the crash is missing", id);
    }
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "ok");
    sqlite3_finalize(st);
    /* The connection settings the ledger promises are in force on its own
     * connections; here we can at least check the file is in WAL mode. */
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "wal");
    sqlite3_finalize(st);
    sqlite3_close(db);
}

/* Two threads, each with its own connection to the same database. */
typedef struct racer {
    const char *path;
    pthread_barrier_t *barrier;
    int rounds;
    int wins;
    int conflicts;
    int other;
    int mode; /* 0: mark used g_<i>; 1: insert under a limit; 2: object_put with g_<i> */
    int id;
} racer;

static void *race_thread(void *arg)
{
    racer *r = arg;
    ledger *l = NULL;
    if (ledger_open(r->path, &l) != FERRY_OK) {
        r->other = -1000;
        /* Still meet the barrier so the other thread is not stuck. */
    }
    for (int i = 0; i < r->rounds; i++) {
        char id[32];
        pthread_barrier_wait(r->barrier);
        if (l == NULL)
            continue;
        if (r->mode == 2) {
            ledger_object o;
            snprintf(id, sizeof id, "g_%d", i);
            make_object(&o, "dev-1/k", id);
            snprintf(o.key, sizeof o.key, "dev-1/2026/11/18/%s-x.bin", id);
            snprintf(o.file_id, sizeof o.file_id, "f%d-%d", r->id, i);
            ferry_err err = ledger_object_put(l, &o, T0 + 1, NULL);
            if (err == FERRY_OK)
                r->wins++;
            else if (err == FERRY_ERR_CONFLICT)
                r->conflicts++;
            else
                r->other++;
        } else if (r->mode == 0) {
            snprintf(id, sizeof id, "g_%d", i);
            ferry_err err = ledger_grant_mark_used(l, id, T0 + 1);
            if (err == FERRY_OK)
                r->wins++;
            else if (err == FERRY_ERR_CONFLICT)
                r->conflicts++;
            else
                r->other++;
        } else {
            ledger_grant g;
            ledger_verdict v;
            ledger_limits lim = {.max_open_grants = 5, .daily_quota_bytes = 0};
            snprintf(id, sizeof id, "g_t%d_%d", r->id, i);
            make_grant(&g, id, "dev-race", 1, T0, 60);
            ferry_err err = ledger_grant_insert(l, &g, &lim, &v);
            if (err == FERRY_OK && v == LEDGER_INSERTED)
                r->wins++;
            else if (err == FERRY_OK)
                r->conflicts++;
            else
                r->other++;
        }
    }
    ledger_close(l);
    return NULL;
}

static void run_race(fixture *f, int mode, int rounds, racer *a, racer *b)
{
    pthread_barrier_t barrier;
    pthread_t ta, tb;
    pthread_barrier_init(&barrier, NULL, 2);
    *a = (racer){.path = f->path, .barrier = &barrier, .rounds = rounds, .mode = mode, .id = 1};
    *b = (racer){.path = f->path, .barrier = &barrier, .rounds = rounds, .mode = mode, .id = 2};
    assert_int_equal(pthread_create(&ta, NULL, race_thread, a), 0);
    assert_int_equal(pthread_create(&tb, NULL, race_thread, b), 0);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    pthread_barrier_destroy(&barrier);
}

static void test_race_mark_used(void **state)
{
    fixture *f = *state;
    racer a, b;
    enum { ROUNDS = 40 };
    for (int i = 0; i < ROUNDS; i++) {
        char id[32];
        ledger_grant g;
        snprintf(id, sizeof id, "g_%d", i);
        make_grant(&g, id, "dev-1", 1, T0, 60);
        insert_ok(f->l, &g);
    }
    run_race(f, 0, ROUNDS, &a, &b);
    assert_int_equal(a.other, 0);
    assert_int_equal(b.other, 0);
    /* Every grant used exactly once. */
    assert_int_equal(a.wins + b.wins, ROUNDS);
    assert_int_equal(a.conflicts + b.conflicts, ROUNDS);
}

typedef struct collect_ctx {
    char (*seen)[64];
    size_t *n;
} collect_ctx;

static int collect_object(const ledger_object *obj, void *arg)
{
    collect_ctx *ctx = arg;
    if (*ctx->n < 8) {
        /* The test's keys are short; a longer one would show as cut. */
        size_t len = strnlen(obj->key, 63);
        memcpy(ctx->seen[*ctx->n], obj->key, len);
        ctx->seen[*ctx->n][len] = '\0';
    }
    (*ctx->n)++;
    return 0;
}

/* Object records: put/get/replace/list/delete, and the grant consumed in
 * the same transaction (unknown, used, revoked, expired refused, nothing
 * written). */
typedef struct walk_seen {
    char ids[4][LEDGER_FILE_ID_MAX + 1];
    uint64_t sizes[4];
    size_t n;
} walk_seen;

static int walk_collect(const char *file_id, uint64_t size, void *arg)
{
    walk_seen *w = arg;
    if (w->n < 4) {
        snprintf(w->ids[w->n], sizeof w->ids[w->n], "%s", file_id);
        w->sizes[w->n] = size;
    }
    w->n++;
    return 0;
}

/* The store's packs: every object of one pack, in offset order, and
 * nothing of a neighbouring pack whose number shares the prefix's start. */
static void test_object_file_walk(void **state)
{
    fixture *f = *state;
    ledger_object o;
    walk_seen w;
    static const char *ids[] = {
        "p00000002000000000000200000001000", "p00000001000000000000100000001000",
        "p00000001000000000000000000001000", "p00000010000000000000000000001000", "0123abcd"};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        char key[16];
        snprintf(key, sizeof key, "k/%zu", i);
        make_object(&o, key, NULL);
        snprintf(o.file_id, sizeof o.file_id, "%s", ids[i]);
        o.size = 100 + i;
        assert_int_equal(ledger_object_put(f->l, &o, T0, NULL), FERRY_OK);
    }
    memset(&w, 0, sizeof w);
    assert_int_equal(ledger_object_file_walk(f->l, "p00000001", walk_collect, &w), FERRY_OK);
    assert_int_equal(w.n, 2);
    assert_string_equal(w.ids[0], ids[2]);
    assert_int_equal(w.sizes[0], 102);
    assert_string_equal(w.ids[1], ids[1]);
    memset(&w, 0, sizeof w);
    assert_int_equal(ledger_object_file_walk(f->l, "p00000003", walk_collect, &w), FERRY_OK);
    assert_int_equal(w.n, 0);
    assert_int_equal(ledger_object_file_walk(f->l, "p", NULL, &w), FERRY_ERR_INVALID);
}

static void test_objects(void **state)
{
    fixture *f = *state;
    ledger_object o, back;
    char old[LEDGER_FILE_ID_MAX + 1];
    ledger_grant g;
    bool known = true;

    make_object(&o, "a/one", NULL);
    assert_int_equal(ledger_object_put(f->l, &o, T0, old), FERRY_OK);
    assert_string_equal(old, "");
    assert_int_equal(ledger_object_get(f->l, "ingest", "a/one", &back), FERRY_OK);
    assert_string_equal(back.file_id, "file-a");
    assert_string_equal(back.meta, "{\"a\":\"b\"}");
    assert_string_equal(back.grant_id, "");
    assert_int_equal(back.size, 3);
    /* Replacing hands back the old file. */
    snprintf(o.file_id, sizeof o.file_id, "file-a2");
    assert_int_equal(ledger_object_put(f->l, &o, T0, old), FERRY_OK);
    assert_string_equal(old, "file-a");
    assert_int_equal(ledger_object_file_known(f->l, "file-a", &known), FERRY_OK);
    assert_false(known);
    assert_int_equal(ledger_object_file_known(f->l, "file-a2", &known), FERRY_OK);
    assert_true(known);
    assert_int_equal(ledger_object_get(f->l, "ingest", "nope", &back), FERRY_ERR_NOT_FOUND);
    assert_int_equal(ledger_object_get(f->l, "other", "a/one", &back), FERRY_ERR_NOT_FOUND);

    /* A grant pays for one object. */
    make_grant(&g, "g_obj", "dev-1", 3, T0, 60);
    insert_ok(f->l, &g);
    make_object(&o, "b/g", "g_obj");
    assert_int_equal(ledger_object_put(f->l, &o, T0 + 1, NULL), FERRY_OK);
    assert_int_equal(ledger_grant_get(f->l, "g_obj", &g), FERRY_OK);
    assert_int_equal(g.state, LEDGER_GRANT_USED);
    make_object(&o, "b/g2", "g_obj");
    assert_int_equal(ledger_object_put(f->l, &o, T0 + 1, NULL), FERRY_ERR_CONFLICT);
    assert_int_equal(ledger_object_get(f->l, "ingest", "b/g2", &back), FERRY_ERR_NOT_FOUND);
    make_object(&o, "b/g3", "g_unknown");
    assert_int_equal(ledger_object_put(f->l, &o, T0 + 1, NULL), FERRY_ERR_NOT_FOUND);
    make_grant(&g, "g_rev", "dev-1", 3, T0, 60);
    insert_ok(f->l, &g);
    assert_int_equal(ledger_grant_revoke(f->l, "g_rev", T0), FERRY_OK);
    make_object(&o, "b/g4", "g_rev");
    assert_int_equal(ledger_object_put(f->l, &o, T0 + 1, NULL), FERRY_ERR_CONFLICT);
    make_grant(&g, "g_exp", "dev-1", 3, T0, 60);
    insert_ok(f->l, &g);
    make_object(&o, "b/g5", "g_exp");
    assert_int_equal(ledger_object_put(f->l, &o, T0 + 60, NULL), FERRY_ERR_EXPIRED);
    assert_int_equal(ledger_object_get(f->l, "ingest", "b/g5", &back), FERRY_ERR_NOT_FOUND);
    assert_int_equal(ledger_grant_get(f->l, "g_exp", &g), FERRY_OK);
    assert_int_equal(g.state, LEDGER_GRANT_ISSUED);

    /* Listing: prefix, start_after, limit, byte order. */
    static const char *const keys[] = {"l/a", "l/b/1", "l/b/2", "l/c", "l/\xc3\xa9", "m"};
    for (size_t i = 0; i < 6; i++) {
        make_object(&o, keys[i], NULL);
        snprintf(o.file_id, sizeof o.file_id, "fl%zu", i);
        assert_int_equal(ledger_object_put(f->l, &o, T0, NULL), FERRY_OK);
    }
    char seen[8][64];
    size_t n = 0;
    collect_ctx ctx = {seen, &n};
    assert_int_equal(ledger_object_list(f->l, "ingest", "l/", "", 100, collect_object, &ctx),
                     FERRY_OK);
    assert_int_equal(n, 5);
    assert_string_equal(seen[0], "l/a");
    assert_string_equal(seen[4], "l/\xc3\xa9");
    n = 0;
    assert_int_equal(ledger_object_list(f->l, "ingest", "l/", "l/b\xff", 100, collect_object, &ctx),
                     FERRY_OK);
    assert_int_equal(n, 2);
    assert_string_equal(seen[0], "l/c");
    n = 0;
    assert_int_equal(ledger_object_list(f->l, "ingest", "", "l/b/1", 2, collect_object, &ctx),
                     FERRY_OK);
    assert_int_equal(n, 2);
    assert_string_equal(seen[0], "l/b/2");
    assert_string_equal(seen[1], "l/c");

    assert_int_equal(ledger_object_delete(f->l, "ingest", "l/c", old), FERRY_OK);
    assert_string_equal(old, "fl3");
    assert_int_equal(ledger_object_delete(f->l, "ingest", "l/c", old), FERRY_ERR_NOT_FOUND);

    /* Bounds: an over-long key is refused before the backend. */
    char big[LEDGER_OBJECT_KEY_MAX + 2];
    memset(big, 'k', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    assert_int_equal(ledger_object_get(f->l, "ingest", big, &back), FERRY_ERR_TOO_LARGE);
    make_object(&o, "x", NULL);
    o.sha256[0] = '\0';
    assert_int_equal(ledger_object_put(f->l, &o, T0, NULL), FERRY_ERR_INVALID);
}

/* Migration 6 rebuilds the grants table: a database at version 5 (its
 * grants table rebuilt here in the version-5 shape, with an object that
 * refers to a grant and an "issued" audit row) keeps every grant and
 * object, drops the issued audit rows, and passes the foreign-key check. */
/* Closes f's ledger, turns its database back into an older version with
 * script (raw SQL: drop what the later migrations added, set
 * user_version), and reopens it: the migrations since run, up to
 * LATEST_SCHEMA. */
static void migrate_from_script(fixture *f, const char *script)
{
    sqlite3 *db = NULL;
    int64_t v = 0;
    ledger_close(f->l);
    f->l = NULL;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, script, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    assert_int_equal(ledger_open(f->path, &f->l), FERRY_OK);
    assert_int_equal(ledger_schema_version(f->l, &v), FERRY_OK);
    assert_int_equal(v, LATEST_SCHEMA);
}

static void test_migrate_grants_v6(void **state)
{
    fixture *f = *state;
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    ledger_grant g;
    ledger_object o;

    make_grant(&g, "g_old", "dev-1", 3, T0, 60);
    insert_ok(f->l, &g);
    make_object(&o, "b/old", "g_old");
    assert_int_equal(ledger_object_put(f->l, &o, T0 + 1, NULL), FERRY_OK);
    migrate_from_script(
        f, "DROP TRIGGER object_parts_on_delete; DROP TRIGGER object_parts_on_replace;"
           "DROP TABLE object_parts;"                  /* migration 9 */
           "ALTER TABLE events DROP COLUMN source_ip;" /* migration 8 */
           "ALTER TABLE events DROP COLUMN store_request_id;"
           "DROP TABLE upload_parts; DROP TABLE uploads;" /* migration 7 */
           "DROP VIEW audit_log;"
           "CREATE TABLE grants_v5 (id TEXT PRIMARY KEY NOT NULL,"
           " device TEXT NOT NULL REFERENCES devices(id), request_id TEXT NOT NULL,"
           " object_key TEXT NOT NULL, bucket TEXT NOT NULL, method TEXT NOT NULL,"
           " size INTEGER NOT NULL, content_type TEXT NOT NULL, sha256 TEXT,"
           " state TEXT NOT NULL, issued_at INTEGER NOT NULL,"
           " expires_at INTEGER NOT NULL, used_at INTEGER, revoked_at INTEGER);"
           "INSERT INTO grants_v5 SELECT * FROM grants; DROP TABLE grants;"
           "ALTER TABLE grants_v5 RENAME TO grants;"
           "CREATE INDEX grants_device_state ON grants(device, state, expires_at);"
           "INSERT INTO audit (at, device, request_id, grant_id, outcome, code, detail)"
           " VALUES (1, 'dev-1', 'r-g_old', 'g_old', 'issued', 'Granted', 'x');"
           "PRAGMA user_version = 5;");
    assert_int_equal(ledger_grant_get(f->l, "g_old", &g), FERRY_OK);
    assert_int_equal(g.state, LEDGER_GRANT_USED);
    assert_int_equal(ledger_object_get(f->l, "ingest", "b/old", &o), FERRY_OK);
    assert_string_equal(o.grant_id, "g_old");

    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "SELECT (SELECT count(*) FROM audit),"
                                        " (SELECT count(*) FROM pragma_foreign_key_check),"
                                        " (SELECT sql LIKE '%WITHOUT ROWID' FROM sqlite_schema"
                                        "  WHERE name = 'grants')",
                                        -1, &st, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(st, 0), 0);
    assert_int_equal(sqlite3_column_int(st, 1), 0);
    assert_int_equal(sqlite3_column_int(st, 2), 1);
    sqlite3_finalize(st);
    sqlite3_close(db);
}

static int count_parts(const ledger_part *p, void *arg)
{
    (void)p;
    (*(size_t *)arg)++;
    return 0;
}

/* Migration 10 over a ledger of version 9 that holds an object completed
 * the old way (assembled into its own file; part rows without data_id):
 * its boundaries stay, it has no parts' data of its own, and deleting it
 * drops its rows as before (the triggers still drop rows without data). */
static void test_migrate_object_parts_v10(void **state)
{
    fixture *f = *state;
    ledger_object o;
    ledger_object_part op;
    char gone[LEDGER_FILE_ID_MAX + 1];
    uint64_t count = 9;
    size_t n = 0;
    bool known = true;

    make_object(&o, "b/old-multipart", NULL);
    snprintf(o.file_id, sizeof o.file_id, "0123456789abcdef0123456789abcdef");
    assert_int_equal(ledger_object_put(f->l, &o, T0, gone), FERRY_OK);
    migrate_from_script(f,
                        "DROP TRIGGER object_parts_on_delete; DROP TRIGGER object_parts_on_replace;"
                        "DROP INDEX object_parts_data;"
                        "ALTER TABLE object_parts DROP COLUMN data_id;"
                        "CREATE TRIGGER object_parts_on_delete AFTER DELETE ON objects BEGIN"
                        "  DELETE FROM object_parts WHERE file_id = old.file_id;"
                        " END;"
                        "CREATE TRIGGER object_parts_on_replace BEFORE INSERT ON objects BEGIN"
                        "  DELETE FROM object_parts WHERE file_id ="
                        "   (SELECT file_id FROM objects WHERE bucket = new.bucket"
                        "    AND object_key = new.object_key);"
                        " END;"
                        "INSERT INTO object_parts (file_id, part_number, size) VALUES"
                        " ('0123456789abcdef0123456789abcdef', 1, 2),"
                        " ('0123456789abcdef0123456789abcdef', 2, 1);"
                        "PRAGMA user_version = 9;");
    assert_int_equal(ledger_object_part_get(f->l, "0123456789abcdef0123456789abcdef", 2, &op),
                     FERRY_OK);
    assert_int_equal(op.count, 2);
    assert_true(op.found);
    assert_int_equal(op.offset, 2);
    assert_int_equal(ledger_object_parts(f->l, "0123456789abcdef0123456789abcdef", count_parts, &n),
                     FERRY_OK);
    assert_int_equal(n, 0);
    assert_int_equal(ledger_object_file_known(f->l, "0123456789abcdef0123456789abcdef", &known),
                     FERRY_OK);
    assert_true(known);
    assert_int_equal(ledger_object_delete(f->l, "ingest", "b/old-multipart", gone), FERRY_OK);
    assert_int_equal(ledger_object_part_get(f->l, "0123456789abcdef0123456789abcdef", 1, &op),
                     FERRY_OK);
    assert_int_equal(op.count, 0);
    assert_int_equal(ledger_object_parts_release(f->l, NULL, NULL, NULL, &count), FERRY_OK);
    assert_int_equal(count, 0);
}

typedef struct lookup_ctx {
    const char *path;
    const char *grant_id;
    ferry_err result;
} lookup_ctx;

static void *lookup_thread(void *arg)
{
    lookup_ctx *c = arg;
    ledger *l = NULL;
    ledger_grant g;
    c->result = ledger_open(c->path, &l);
    if (c->result == FERRY_OK)
        c->result = ledger_grant_get(l, c->grant_id, &g);
    ledger_close(l);
    return NULL;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {0, ms * 1000000L};
    nanosleep(&ts, NULL);
}

/* An explicit write transaction: a batch joins it (not visible to another
 * handle before the commit); a lookup on another handle that finds no
 * grant while the transaction is open waits for its end, then finds the
 * committed grant, or nothing after a rollback. */
static void test_write_transaction_gate(void **state)
{
    fixture *f = *state;
    ledger *other = NULL;
    ledger_grant g, back;
    ledger_insert item;
    pthread_t t;
    lookup_ctx c = {f->path, "g_gate", FERRY_ERR_INVALID};

    assert_int_equal(ledger_open(f->path, &other), FERRY_OK);
    assert_int_equal(ledger_write_commit(f->l), FERRY_ERR_INVALID); /* none open */
    assert_int_equal(ledger_write_begin(f->l), FERRY_OK);
    assert_int_equal(ledger_write_begin(f->l), FERRY_ERR_INVALID); /* no nesting */
    make_grant(&g, "g_gate", "dev-1", 3, T0, 60);
    item = (ledger_insert){.grant = &g};
    assert_int_equal(ledger_grant_insert_batch(f->l, &item, 1), FERRY_OK);
    assert_int_equal(item.verdict, LEDGER_INSERTED);
    /* Its own handle sees it; the lookup thread waits for the commit. */
    assert_int_equal(ledger_grant_get(f->l, "g_gate", &back), FERRY_OK);
    assert_int_equal(pthread_create(&t, NULL, lookup_thread, &c), 0);
    sleep_ms(100);
    assert_int_equal(ledger_write_commit(f->l), FERRY_OK);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(c.result, FERRY_OK);

    /* Rolled back: the waiting lookup finds nothing, and nothing was kept. */
    assert_int_equal(ledger_write_begin(f->l), FERRY_OK);
    make_grant(&g, "g_gone", "dev-1", 3, T0, 60);
    insert_ok(f->l, &g);
    c = (lookup_ctx){f->path, "g_gone", FERRY_ERR_INVALID};
    assert_int_equal(pthread_create(&t, NULL, lookup_thread, &c), 0);
    sleep_ms(100);
    ledger_write_rollback(f->l);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(c.result, FERRY_ERR_NOT_FOUND);
    assert_int_equal(ledger_grant_get(other, "g_gone", &back), FERRY_ERR_NOT_FOUND);
    /* The handle is usable on its own again. */
    make_grant(&g, "g_after", "dev-1", 3, T0, 60);
    insert_ok(f->l, &g);
    assert_int_equal(ledger_grant_get(other, "g_after", &back), FERRY_OK);
    ledger_close(other);
}

/* A group commit: each item's own grant verdict, the rest committed. */
static void test_object_put_batch(void **state)
{
    fixture *f = *state;
    ledger_object a, b, c, back;
    ledger_grant g;
    ledger_object_put_item items[3];

    make_grant(&g, "g_b1", "dev-1", 3, T0, 60);
    insert_ok(f->l, &g);
    make_object(&a, "batch/a", "g_b1");
    make_object(&b, "batch/b", "g_b1"); /* the same grant again: loses */
    make_object(&c, "batch/c", NULL);
    snprintf(c.file_id, sizeof c.file_id, "file-c");
    items[0] = (ledger_object_put_item){.obj = &a, .now = T0 + 1};
    items[1] = (ledger_object_put_item){.obj = &b, .now = T0 + 1};
    items[2] = (ledger_object_put_item){.obj = &c, .now = T0 + 1};
    assert_int_equal(ledger_object_put_batch(f->l, items, 3), FERRY_OK);
    assert_int_equal(items[0].err, FERRY_OK);
    assert_int_equal(items[1].err, FERRY_ERR_CONFLICT);
    assert_int_equal(items[2].err, FERRY_OK);
    assert_int_equal(ledger_object_get(f->l, "ingest", "batch/a", &back), FERRY_OK);
    assert_int_equal(ledger_object_get(f->l, "ingest", "batch/b", &back), FERRY_ERR_NOT_FOUND);
    assert_int_equal(ledger_object_get(f->l, "ingest", "batch/c", &back), FERRY_OK);
    /* Replacing c in a later batch hands its file back. */
    snprintf(c.file_id, sizeof c.file_id, "file-c2");
    items[0] = (ledger_object_put_item){.obj = &c, .now = T0 + 1};
    assert_int_equal(ledger_object_put_batch(f->l, items, 1), FERRY_OK);
    assert_string_equal(items[0].replaced_file_id, "file-c");
    assert_int_equal(ledger_object_put_batch(f->l, NULL, 0), FERRY_OK);
}

/* Two uploads of each grant race to record their object: exactly one wins. */
static void test_race_object_put(void **state)
{
    fixture *f = *state;
    racer a, b;
    enum { ROUNDS = 40 };
    for (int i = 0; i < ROUNDS; i++) {
        char id[32];
        ledger_grant g;
        snprintf(id, sizeof id, "g_%d", i);
        make_grant(&g, id, "dev-1", 1, T0, 60);
        insert_ok(f->l, &g);
    }
    run_race(f, 2, ROUNDS, &a, &b);
    assert_int_equal(a.other, 0);
    assert_int_equal(b.other, 0);
    assert_int_equal(a.wins + b.wins, ROUNDS);
    assert_int_equal(a.conflicts + b.conflicts, ROUNDS);
}

static void test_race_insert_limit(void **state)
{
    fixture *f = *state;
    racer a, b;
    uint64_t n = 0;
    run_race(f, 1, 20, &a, &b);
    assert_int_equal(a.other, 0);
    assert_int_equal(b.other, 0);
    /* 40 attempts, 5 slots: never more than the limit between the two. */
    assert_int_equal(a.wins + b.wins, 5);
    assert_int_equal(ledger_open_grants(f->l, "dev-race", T0, &n), FERRY_OK);
    assert_int_equal(n, 5);
}

/* ---------------------------------------------------------------------- */
/* The event outbox                                                         */

static int count_cb(const ledger_delivery *d, void *arg)
{
    (void)d;
    (*(int *)arg)++;
    return 0;
}

static int count_state(ledger *l, ledger_delivery_state state, const char *target)
{
    int n = 0;
    assert_int_equal(ledger_delivery_list(l, state, target, 0, 1000, count_cb, &n), FERRY_OK);
    return n;
}

/* An object under a grant brings its event and one delivery per active
 * target, in the same transaction; an operator's object brings none. */
static void test_outbox_event_with_object(void **state)
{
    fixture *f = *state;
    static const char *const targets[] = {"hook", LEDGER_DEVICE_TARGET};
    ledger_grant g;
    ledger_object o;
    ledger_event ev;
    ledger_delivery d[4];
    size_t n = 99;

    assert_int_equal(ledger_event_targets_set(f->l, targets, 2), FERRY_OK);
    make_grant(&g, "g_ev1", "dev-1", 3, T0, 60);
    insert_ok(f->l, &g);
    make_object(&o, "ev/one", "g_ev1");
    snprintf(o.source_ip, sizeof o.source_ip, "2001:db8::17");
    snprintf(o.store_request_id, sizeof o.store_request_id, "00000001000000a2");
    assert_int_equal(ledger_object_put(f->l, &o, T0 + 1, NULL), FERRY_OK);
    assert_int_equal(ledger_event_latest(f->l, "ingest", "ev/one", &ev), FERRY_OK);
    assert_string_equal(ev.source_ip, "2001:db8::17");
    assert_string_equal(ev.store_request_id, "00000001000000a2");
    assert_int_equal(strlen(ev.id), 35);
    assert_memory_equal(ev.id, "ev_", 3);
    assert_string_equal(ev.device, "dev-1");
    assert_string_equal(ev.grant_id, "g_ev1");
    assert_string_equal(ev.request_id, "r-g_ev1");
    assert_string_equal(ev.method, "PUT");
    assert_string_equal(ev.sha256, o.sha256);
    assert_int_equal(ev.size, 3);
    assert_int_equal(ev.created_ms, T0 * 1000);

    /* Claimed once: the lease hides it from the next claim. */
    assert_int_equal(ledger_delivery_claim(f->l, "hook", T0 * 1000, 30000, d, 4, &n), FERRY_OK);
    assert_int_equal(n, 1);
    assert_string_equal(d[0].event.id, ev.id);
    assert_string_equal(d[0].event.source_ip, "2001:db8::17");
    assert_string_equal(d[0].target, "hook");
    assert_int_equal(d[0].attempts, 0);
    assert_int_equal(ledger_delivery_claim(f->l, "hook", T0 * 1000, 30000, d, 4, &n), FERRY_OK);
    assert_int_equal(n, 0);
    /* After the lease (a worker that died) it comes back. */
    assert_int_equal(ledger_delivery_claim(f->l, "hook", T0 * 1000 + 30000, 30000, d, 4, &n),
                     FERRY_OK);
    assert_int_equal(n, 1);
    assert_int_equal(ledger_delivery_done(f->l, ev.seq, "hook"), FERRY_OK);
    assert_int_equal(ledger_delivery_done(f->l, ev.seq, "hook"), FERRY_ERR_CONFLICT);
    assert_int_equal(ledger_delivery_done(f->l, ev.seq + 1000, "hook"), FERRY_ERR_NOT_FOUND);
    assert_int_equal(count_state(f->l, LEDGER_DELIVERY_DELIVERED, "hook"), 1);
    assert_int_equal(count_state(f->l, LEDGER_DELIVERY_PENDING, LEDGER_DEVICE_TARGET), 1);

    /* A target dropped from the config gets no rows for new events. */
    assert_int_equal(ledger_event_targets_set(f->l, targets + 1, 1), FERRY_OK);
    make_grant(&g, "g_ev2", "dev-1", 3, T0, 60);
    insert_ok(f->l, &g);
    make_object(&o, "ev/two", "g_ev2");
    assert_int_equal(ledger_object_put(f->l, &o, T0 + 1, NULL), FERRY_OK);
    assert_int_equal(count_state(f->l, LEDGER_DELIVERY_PENDING, "hook"), 0);
    assert_int_equal(count_state(f->l, LEDGER_DELIVERY_PENDING, LEDGER_DEVICE_TARGET), 2);

    /* No grant, no device: no event. */
    make_object(&o, "ev/operator", NULL);
    assert_int_equal(ledger_object_put(f->l, &o, T0 + 1, NULL), FERRY_OK);
    assert_int_equal(ledger_event_latest(f->l, "ingest", "ev/operator", &ev), FERRY_ERR_NOT_FOUND);

    /* A refused grant in a batch writes neither object nor event. */
    ledger_object_put_item items[1];
    make_object(&o, "ev/again", "g_ev1");
    items[0] = (ledger_object_put_item){.obj = &o, .now = T0 + 1};
    assert_int_equal(ledger_object_put_batch(f->l, items, 1), FERRY_OK);
    assert_int_equal(items[0].err, FERRY_ERR_CONFLICT);
    assert_int_equal(ledger_event_latest(f->l, "ingest", "ev/again", &ev), FERRY_ERR_NOT_FOUND);

    /* Bad arguments. */
    assert_int_equal(ledger_delivery_claim(f->l, "", 0, 0, d, 4, &n), FERRY_ERR_INVALID);
    assert_int_equal(ledger_delivery_claim(f->l, "hook", 0, 0, d, 0, &n), FERRY_ERR_INVALID);
    assert_int_equal(ledger_event_targets_set(f->l, NULL, 1), FERRY_ERR_INVALID);
}

/* Retention: only events whose every delivery is delivered go, oldest
 * first, with their delivery rows; sequencers are not reused. */
static void test_events_prune(void **state)
{
    fixture *f = *state;
    static const char *const targets[] = {"hook", LEDGER_DEVICE_TARGET};
    ledger_grant g;
    ledger_object o;
    ledger_event ev[3], again;
    uint64_t n = 99;
    char id[16], key[16];

    assert_int_equal(ledger_event_targets_set(f->l, targets, 2), FERRY_OK);
    for (int i = 0; i < 3; i++) {
        snprintf(id, sizeof id, "g_pr%d", i);
        snprintf(key, sizeof key, "pr/%d", i);
        make_grant(&g, id, "dev-1", 3, T0, 60);
        insert_ok(f->l, &g);
        make_object(&o, key, id);
        snprintf(o.file_id, sizeof o.file_id, "file-pr%d", i);
        assert_int_equal(ledger_object_put(f->l, &o, T0 + 1, NULL), FERRY_OK);
        assert_int_equal(ledger_event_latest(f->l, "ingest", key, &ev[i]), FERRY_OK);
    }
    /* ev 0: delivered everywhere; ev 1: the device's receipt still pending;
     * ev 2: nothing delivered. */
    assert_int_equal(ledger_delivery_done(f->l, ev[0].seq, "hook"), FERRY_OK);
    assert_int_equal(ledger_delivery_done(f->l, ev[0].seq, LEDGER_DEVICE_TARGET), FERRY_OK);
    assert_int_equal(ledger_delivery_done(f->l, ev[1].seq, "hook"), FERRY_OK);

    /* Not older than the cutoff: kept. */
    assert_int_equal(ledger_events_prune(f->l, T0 * 1000, 10, &n), FERRY_OK);
    assert_int_equal(n, 0);
    assert_int_equal(ledger_events_prune(f->l, T0 * 1000 + 1, 10, &n), FERRY_OK);
    assert_int_equal(n, 1);
    assert_int_equal(ledger_event_latest(f->l, "ingest", "pr/0", &again), FERRY_ERR_NOT_FOUND);
    assert_int_equal(ledger_event_latest(f->l, "ingest", "pr/1", &again), FERRY_OK);
    assert_int_equal(ledger_event_latest(f->l, "ingest", "pr/2", &again), FERRY_OK);
    assert_int_equal(count_state(f->l, LEDGER_DELIVERY_DELIVERED, "hook"), 1);
    assert_int_equal(count_state(f->l, LEDGER_DELIVERY_PENDING, LEDGER_DEVICE_TARGET), 2);
    /* The objects themselves stay. */
    assert_int_equal(ledger_object_get(f->l, "ingest", "pr/0", &o), FERRY_OK);

    /* Once the receipt is out, ev 1 goes too; limit 1 takes one at a time. */
    assert_int_equal(ledger_delivery_done(f->l, ev[1].seq, LEDGER_DEVICE_TARGET), FERRY_OK);
    assert_int_equal(ledger_delivery_done(f->l, ev[2].seq, "hook"), FERRY_OK);
    assert_int_equal(ledger_delivery_done(f->l, ev[2].seq, LEDGER_DEVICE_TARGET), FERRY_OK);
    assert_int_equal(ledger_events_prune(f->l, T0 * 1000 + 1, 1, &n), FERRY_OK);
    assert_int_equal(n, 1);
    assert_int_equal(ledger_event_latest(f->l, "ingest", "pr/1", &again), FERRY_ERR_NOT_FOUND);
    assert_int_equal(ledger_event_latest(f->l, "ingest", "pr/2", &again), FERRY_OK);
    assert_int_equal(ledger_events_prune(f->l, T0 * 1000 + 1, 10, NULL), FERRY_OK);
    assert_int_equal(ledger_event_latest(f->l, "ingest", "pr/2", &again), FERRY_ERR_NOT_FOUND);

    /* A new event of a pruned key still sorts after the old ones. */
    make_grant(&g, "g_pr9", "dev-1", 3, T0, 60);
    insert_ok(f->l, &g);
    make_object(&o, "pr/0", "g_pr9");
    snprintf(o.file_id, sizeof o.file_id, "file-pr9");
    assert_int_equal(ledger_object_put(f->l, &o, T0 + 2, NULL), FERRY_OK);
    assert_int_equal(ledger_event_latest(f->l, "ingest", "pr/0", &again), FERRY_OK);
    assert_true(again.seq > ev[2].seq);

    assert_int_equal(ledger_events_prune(f->l, T0 * 1000, 0, &n), FERRY_ERR_INVALID);
}

/* Per-key order, retry, dead-letter and replay. */
static void test_outbox_order_dead_replay(void **state)
{
    fixture *f = *state;
    static const char *const targets[] = {"cmd"};
    ledger_grant g;
    ledger_object o;
    ledger_delivery d[4];
    size_t n = 0;
    uint64_t moved = 0;
    int64_t now = T0 * 1000;

    assert_int_equal(ledger_event_targets_set(f->l, targets, 1), FERRY_OK);
    /* Two events of one key, one of another. */
    make_grant(&g, "g_k1", "dev-1", 3, T0, 60);
    insert_ok(f->l, &g);
    make_grant(&g, "g_k2", "dev-1", 3, T0, 60);
    insert_ok(f->l, &g);
    make_grant(&g, "g_k3", "dev-1", 3, T0, 60);
    insert_ok(f->l, &g);
    make_object(&o, "same", "g_k1");
    assert_int_equal(ledger_object_put(f->l, &o, T0 + 1, NULL), FERRY_OK);
    make_object(&o, "same", "g_k2");
    assert_int_equal(ledger_object_put(f->l, &o, T0 + 1, NULL), FERRY_OK);
    make_object(&o, "other", "g_k3");
    assert_int_equal(ledger_object_put(f->l, &o, T0 + 1, NULL), FERRY_OK);

    /* The second event of "same" waits for the first. */
    assert_int_equal(ledger_delivery_claim(f->l, "cmd", now, 1000, d, 4, &n), FERRY_OK);
    assert_int_equal(n, 2);
    assert_string_equal(d[0].event.grant_id, "g_k1");
    assert_string_equal(d[1].event.grant_id, "g_k3");
    int64_t first = d[0].event.seq;
    assert_true(d[1].event.seq > first);
    assert_int_equal(ledger_delivery_done(f->l, d[1].event.seq, "cmd"), FERRY_OK);
    assert_int_equal(ledger_delivery_retry(f->l, first, "cmd", 1, now + 5000, "exit 1"), FERRY_OK);
    assert_int_equal(ledger_delivery_claim(f->l, "cmd", now + 1000, 1000, d, 4, &n), FERRY_OK);
    assert_int_equal(n, 0); /* first not due yet, second held back */
    assert_int_equal(ledger_delivery_claim(f->l, "cmd", now + 5000, 1000, d, 4, &n), FERRY_OK);
    assert_int_equal(n, 1);
    assert_int_equal(d[0].event.seq, first);
    assert_int_equal(d[0].attempts, 1);
    assert_string_equal(d[0].last_error, "exit 1");

    /* Dead-letter: no longer holds the key back. */
    assert_int_equal(ledger_delivery_dead(f->l, first, "cmd", 2, "exit 1 again"), FERRY_OK);
    assert_int_equal(ledger_delivery_claim(f->l, "cmd", now + 5000, 1000, d, 4, &n), FERRY_OK);
    assert_int_equal(n, 1);
    assert_string_equal(d[0].event.grant_id, "g_k2");
    assert_int_equal(ledger_delivery_done(f->l, d[0].event.seq, "cmd"), FERRY_OK);
    assert_int_equal(count_state(f->l, LEDGER_DELIVERY_DEAD, NULL), 1);
    assert_int_equal(ledger_delivery_retry(f->l, first, "cmd", 3, now, "x"), FERRY_ERR_CONFLICT);

    /* Replay: by event id (another id moves nothing), then due at once. */
    assert_int_equal(ledger_delivery_replay(f->l, "cmd", "ev_none", now, &moved), FERRY_OK);
    assert_int_equal(moved, 0);
    ledger_event ev;
    assert_int_equal(ledger_event_latest(f->l, "ingest", "same", &ev), FERRY_OK);
    assert_true(ev.seq > first); /* the latest of "same" is the second */
    assert_int_equal(ledger_delivery_replay(f->l, NULL, NULL, now + 6000, &moved), FERRY_OK);
    assert_int_equal(moved, 1);
    assert_int_equal(count_state(f->l, LEDGER_DELIVERY_DEAD, NULL), 0);
    assert_int_equal(ledger_delivery_claim(f->l, "cmd", now + 6000, 1000, d, 4, &n), FERRY_OK);
    assert_int_equal(n, 1);
    assert_int_equal(d[0].event.seq, first);
    assert_int_equal(d[0].attempts, 0);
    assert_int_equal(ledger_delivery_done(f->l, first, "cmd"), FERRY_OK);
    assert_int_equal(count_state(f->l, LEDGER_DELIVERY_DELIVERED, "cmd"), 3);

    /* Target-level backoff moves every pending row due earlier, keeps
     * attempts, and leaves later ones alone. */
    make_grant(&g, "g_k4", "dev-1", 3, T0, 60);
    insert_ok(f->l, &g);
    make_grant(&g, "g_k5", "dev-1", 3, T0, 60);
    insert_ok(f->l, &g);
    make_object(&o, "p4", "g_k4");
    assert_int_equal(ledger_object_put(f->l, &o, T0 + 1, NULL), FERRY_OK);
    make_object(&o, "p5", "g_k5");
    assert_int_equal(ledger_object_put(f->l, &o, T0 + 1, NULL), FERRY_OK);
    assert_int_equal(ledger_delivery_postpone(f->l, "cmd", now + 9000, &moved), FERRY_OK);
    assert_int_equal(moved, 2);
    assert_int_equal(ledger_delivery_postpone(f->l, "cmd", now + 8000, &moved), FERRY_OK);
    assert_int_equal(moved, 0);
    assert_int_equal(ledger_delivery_claim(f->l, "cmd", now + 8999, 1000, d, 4, &n), FERRY_OK);
    assert_int_equal(n, 0);
    assert_int_equal(ledger_delivery_claim(f->l, "cmd", now + 9000, 1000, d, 4, &n), FERRY_OK);
    assert_int_equal(n, 2);
    assert_true(d[0].event.seq < d[1].event.seq);
    int64_t seqs[3] = {d[0].event.seq, d[1].event.seq, first};
    assert_int_equal(ledger_delivery_done_batch(f->l, "cmd", seqs, 3, &moved), FERRY_OK);
    assert_int_equal(moved, 2); /* first was already delivered */
    assert_int_equal(count_state(f->l, LEDGER_DELIVERY_DELIVERED, "cmd"), 5);
    assert_int_equal(ledger_delivery_done_batch(f->l, "cmd", NULL, 0, &moved), FERRY_OK);
}

/* An external store's notification, matched to its grant. */
static void test_outbox_external(void **state)
{
    fixture *f = *state;
    static const char *const targets[] = {"hook"};
    ledger_grant g;
    ledger_external_object x;
    ledger_event ev, again;
    bool dup = true;

    assert_int_equal(ledger_event_targets_set(f->l, targets, 1), FERRY_OK);
    make_grant(&g, "g_x1", "dev-1", 3, T0, 60);
    snprintf(g.sha256, sizeof g.sha256, "%s",
             "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    insert_ok(f->l, &g);
    memset(&x, 0, sizeof x);
    snprintf(x.grant_id, sizeof x.grant_id, "g_x1");
    snprintf(x.bucket, sizeof x.bucket, "ingest");
    snprintf(x.key, sizeof x.key, "%s", g.key);
    snprintf(x.etag, sizeof x.etag, "900150983cd24fb0d6963f7d28e17f72");
    x.size = 3;

    /* Refusals change nothing. */
    x.size = 4;
    assert_int_equal(ledger_event_external(f->l, &x, T0 + 5, &ev, &dup), FERRY_ERR_INVALID);
    x.size = 3;
    snprintf(x.bucket, sizeof x.bucket, "other");
    assert_int_equal(ledger_event_external(f->l, &x, T0 + 5, &ev, &dup), FERRY_ERR_DENIED);
    snprintf(x.bucket, sizeof x.bucket, "ingest");
    snprintf(x.grant_id, sizeof x.grant_id, "g_nope");
    assert_int_equal(ledger_event_external(f->l, &x, T0 + 5, &ev, &dup), FERRY_ERR_NOT_FOUND);
    snprintf(x.grant_id, sizeof x.grant_id, "g_x1");
    assert_int_equal(count_state(f->l, LEDGER_DELIVERY_PENDING, NULL), 0);

    /* After the grant's expiry too: the upload happened while it was valid. */
    assert_int_equal(ledger_event_external(f->l, &x, T0 + 120, &ev, &dup), FERRY_OK);
    assert_false(dup);
    assert_string_equal(ev.grant_id, "g_x1");
    assert_string_equal(ev.device, "dev-1");
    assert_string_equal(ev.sha256, g.sha256);
    assert_int_equal(ev.created_ms, (T0 + 120) * 1000);
    assert_int_equal(count_state(f->l, LEDGER_DELIVERY_PENDING, "hook"), 1);
    ledger_grant back;
    assert_int_equal(ledger_grant_get(f->l, "g_x1", &back), FERRY_OK);
    assert_int_equal(back.state, LEDGER_GRANT_USED);
    /* The same notification again: the same event, nothing new. */
    assert_int_equal(ledger_event_external(f->l, &x, T0 + 130, &again, &dup), FERRY_OK);
    assert_true(dup);
    assert_string_equal(again.id, ev.id);
    assert_int_equal(count_state(f->l, LEDGER_DELIVERY_PENDING, "hook"), 1);

    /* A revoked grant raises no event. */
    make_grant(&g, "g_x2", "dev-1", 3, T0, 60);
    insert_ok(f->l, &g);
    assert_int_equal(ledger_grant_revoke(f->l, "g_x2", T0 + 1), FERRY_OK);
    snprintf(x.grant_id, sizeof x.grant_id, "g_x2");
    snprintf(x.key, sizeof x.key, "%s", g.key);
    assert_int_equal(ledger_event_external(f->l, &x, T0 + 5, &ev, &dup), FERRY_ERR_CONFLICT);
    assert_int_equal(count_state(f->l, LEDGER_DELIVERY_PENDING, "hook"), 1);
}

/* Multipart uploads (migration 7): create under a limit, parts replaced,
 * listing, completion recording the object and deleting the upload in one
 * transaction (stale parts refused), abort and expiry handing back every
 * part file, and part files counted as known by the sweep. */
typedef struct files_seen {
    char ids[8][LEDGER_FILE_ID_MAX + 1];
    size_t n;
} files_seen;

static void collect_file(const char *file_id, void *arg)
{
    files_seen *fs = arg;
    if (fs->n < 8)
        snprintf(fs->ids[fs->n++], sizeof fs->ids[0], "%s", file_id);
}

static int count_part(const ledger_part *p, void *arg)
{
    (void)p;
    (*(size_t *)arg)++;
    return 0;
}

static int count_file(const char *file_id, uint64_t size, void *arg)
{
    (void)file_id;
    (void)size;
    (*(size_t *)arg)++;
    return 0;
}

typedef struct parts_seen {
    ledger_part p[4];
    size_t n;
} parts_seen;

static int collect_parts(const ledger_part *p, void *arg)
{
    parts_seen *ps = arg;
    if (ps->n < 4)
        ps->p[ps->n++] = *p;
    return 0;
}

static int count_upload(const ledger_upload *u, void *arg)
{
    (void)u;
    (*(size_t *)arg)++;
    return 0;
}

static void make_upload(ledger_upload *u, const char *id, const char *key, int64_t at)
{
    memset(u, 0, sizeof *u);
    snprintf(u->id, sizeof u->id, "%s", id);
    snprintf(u->bucket, sizeof u->bucket, "ingest");
    snprintf(u->key, sizeof u->key, "%s", key);
    snprintf(u->content_type, sizeof u->content_type, "text/plain");
    u->initiated_at = at;
}

static void make_part(ledger_part *p, unsigned number, const char *file_id, uint64_t size)
{
    memset(p, 0, sizeof *p);
    p->number = number;
    snprintf(p->file_id, sizeof p->file_id, "%s", file_id);
    p->size = size;
    snprintf(p->etag, sizeof p->etag, "0123456789abcdef0123456789abcdef");
    p->created_at = T0;
}

static void test_uploads(void **state)
{
    fixture *f = *state;
    ledger_upload u, got;
    ledger_part p, used[2];
    ledger_object o, og;
    char replaced[LEDGER_FILE_ID_MAX + 1];
    uint64_t bytes = 0, count = 0;
    size_t n = 0;
    bool known = false;
    files_seen seen;

    make_upload(&u, "up-1", "big/one", T0);
    assert_int_equal(ledger_upload_create(f->l, &u, 2), FERRY_OK);
    assert_int_equal(ledger_upload_create(f->l, &u, 2), FERRY_ERR_EXISTS);
    make_upload(&u, "up-2", "big/two", T0 + 10);
    assert_int_equal(ledger_upload_create(f->l, &u, 2), FERRY_OK);
    make_upload(&u, "up-3", "big/three", T0);
    assert_int_equal(ledger_upload_create(f->l, &u, 2), FERRY_ERR_RANGE);
    assert_int_equal(ledger_upload_get(f->l, "up-3", &got, NULL), FERRY_ERR_NOT_FOUND);

    /* Parts: a second part 1 replaces the first and hands back its file. */
    make_part(&p, 1, "f-1a", 5);
    assert_int_equal(ledger_upload_part_put(f->l, "up-1", &p, replaced), FERRY_OK);
    assert_string_equal(replaced, "");
    make_part(&p, 1, "f-1b", 6);
    assert_int_equal(ledger_upload_part_put(f->l, "up-1", &p, replaced), FERRY_OK);
    assert_string_equal(replaced, "f-1a");
    make_part(&p, 2, "f-2", 3);
    assert_int_equal(ledger_upload_part_put(f->l, "up-1", &p, replaced), FERRY_OK);
    make_part(&p, 1, "f-x", 3);
    assert_int_equal(ledger_upload_part_put(f->l, "up-none", &p, replaced), FERRY_ERR_NOT_FOUND);
    make_part(&p, 10001, "f-x", 3);
    assert_int_equal(ledger_upload_part_put(f->l, "up-1", &p, replaced), FERRY_ERR_RANGE);
    assert_int_equal(ledger_upload_get(f->l, "up-1", &got, &bytes), FERRY_OK);
    assert_string_equal(got.key, "big/one");
    assert_int_equal(bytes, 9);
    assert_int_equal(ledger_upload_parts(f->l, "up-1", 0, 100, count_part, &n), FERRY_OK);
    assert_int_equal(n, 2);
    n = 0;
    assert_int_equal(ledger_upload_parts(f->l, "up-1", 1, 100, count_part, &n), FERRY_OK);
    assert_int_equal(n, 1);
    assert_int_equal(ledger_upload_parts(f->l, "up-none", 0, 100, count_part, &n),
                     FERRY_ERR_NOT_FOUND);
    n = 0;
    assert_int_equal(ledger_upload_list(f->l, "ingest", "big/", "", "", 100, count_upload, &n),
                     FERRY_OK);
    assert_int_equal(n, 2);
    n = 0;
    assert_int_equal(
        ledger_upload_list(f->l, "ingest", "", "big/one", "up-1", 100, count_upload, &n), FERRY_OK);
    assert_int_equal(n, 1); /* big/two only */
    assert_int_equal(ledger_object_file_known(f->l, "f-2", &known), FERRY_OK);
    assert_true(known);
    assert_int_equal(ledger_object_file_known(f->l, "f-1a", &known), FERRY_OK);
    assert_false(known);
    n = 0;
    assert_int_equal(ledger_object_file_walk(f->l, "f-", count_file, &n), FERRY_OK);
    assert_int_equal(n, 2); /* the parts f-1b and f-2: a pack keeps their regions */

    /* A third part the completion will not list. */
    make_part(&p, 3, "f-3u", 2);
    assert_int_equal(ledger_upload_part_put(f->l, "up-1", &p, replaced), FERRY_OK);

    /* Completion with a stale part (f-1a was replaced): nothing written. */
    make_object(&o, "big/one", NULL);
    snprintf(o.file_id, sizeof o.file_id, "f-obj");
    make_part(&used[0], 1, "f-1a", 5);
    make_part(&used[1], 2, "f-2", 3);
    memset(&seen, 0, sizeof seen);
    assert_int_equal(
        ledger_upload_complete(f->l, "up-1", used, 2, &o, T0, replaced, collect_file, &seen),
        FERRY_ERR_CONFLICT);
    assert_int_equal(seen.n, 0);
    assert_int_equal(ledger_object_get(f->l, "ingest", "big/one", &og), FERRY_ERR_NOT_FOUND);
    /* A grant's object cannot be a multipart one. */
    make_object(&o, "big/one", "g_x");
    assert_int_equal(ledger_upload_complete(f->l, "up-1", used, 2, &o, T0, replaced, NULL, NULL),
                     FERRY_ERR_INVALID);
    make_object(&o, "big/one", NULL);
    snprintf(o.file_id, sizeof o.file_id, "f-obj");
    make_part(&used[0], 1, "f-1b", 6);
    assert_int_equal(
        ledger_upload_complete(f->l, "up-1", used, 2, &o, T0, replaced, collect_file, &seen),
        FERRY_OK);
    assert_string_equal(replaced, "");
    /* Only the unlisted part's data is handed back: the listed parts'
     * data is the object's now (migration 10), named and walked. */
    assert_int_equal(seen.n, 1);
    assert_string_equal(seen.ids[0], "f-3u");
    assert_int_equal(ledger_object_get(f->l, "ingest", "big/one", &og), FERRY_OK);
    assert_string_equal(og.file_id, "f-obj");
    assert_int_equal(ledger_upload_get(f->l, "up-1", &got, NULL), FERRY_ERR_NOT_FOUND);
    assert_int_equal(ledger_object_file_known(f->l, "f-2", &known), FERRY_OK);
    assert_true(known);
    assert_int_equal(ledger_object_file_known(f->l, "f-1b", &known), FERRY_OK);
    assert_true(known);
    assert_int_equal(ledger_object_file_known(f->l, "f-3u", &known), FERRY_OK);
    assert_false(known);
    n = 0;
    assert_int_equal(ledger_object_file_walk(f->l, "f-", count_file, &n), FERRY_OK);
    assert_int_equal(n, 3); /* the object f-obj, and its parts' data f-1b and f-2 */
    {
        parts_seen ps;
        memset(&ps, 0, sizeof ps);
        assert_int_equal(ledger_object_parts(f->l, "f-obj", collect_parts, &ps), FERRY_OK);
        assert_int_equal(ps.n, 2);
        assert_int_equal(ps.p[0].number, 1);
        assert_string_equal(ps.p[0].file_id, "f-1b");
        assert_int_equal(ps.p[0].size, 6);
        assert_int_equal(ps.p[1].number, 2);
        assert_string_equal(ps.p[1].file_id, "f-2");
        assert_int_equal(ps.p[1].size, 3);
        /* A live object's parts are not released. */
        memset(&seen, 0, sizeof seen);
        assert_int_equal(ledger_object_parts_release(f->l, "f-obj", collect_file, &seen, &count),
                         FERRY_OK);
        assert_int_equal(count, 0);
        assert_int_equal(seen.n, 0);
        assert_int_equal(ledger_object_parts_release(f->l, NULL, NULL, NULL, &count), FERRY_OK);
        assert_int_equal(count, 0);
    }
    assert_int_equal(ledger_upload_complete(f->l, "up-1", used, 2, &o, T0, replaced, NULL, NULL),
                     FERRY_ERR_NOT_FOUND);

    /* The completed object's part boundaries (migration 9): part 2 starts
     * after part 1's 6 bytes; a number not uploaded is not found. */
    {
        ledger_object_part op;
        char gone[LEDGER_FILE_ID_MAX + 1];
        assert_int_equal(ledger_object_part_get(f->l, "f-obj", 2, &op), FERRY_OK);
        assert_int_equal(op.count, 2);
        assert_true(op.found);
        assert_int_equal(op.offset, 6);
        assert_int_equal(op.size, 3);
        assert_int_equal(ledger_object_part_get(f->l, "f-obj", 1, &op), FERRY_OK);
        assert_true(op.found);
        assert_int_equal(op.offset, 0);
        assert_int_equal(op.size, 6);
        assert_int_equal(ledger_object_part_get(f->l, "f-obj", 3, &op), FERRY_OK);
        assert_int_equal(op.count, 2);
        assert_false(op.found);
        assert_int_equal(ledger_object_part_get(f->l, "f-obj", 0, &op), FERRY_ERR_INVALID);
        /* A put over the key keeps the old object's part rows (and so its
         * parts' data named) until they are released; then the release
         * hands back each part's data. */
        make_object(&o, "big/one", NULL);
        snprintf(o.file_id, sizeof o.file_id, "f-obj2");
        assert_int_equal(ledger_object_put(f->l, &o, T0, replaced), FERRY_OK);
        assert_string_equal(replaced, "f-obj");
        assert_int_equal(ledger_object_part_get(f->l, "f-obj", 1, &op), FERRY_OK);
        assert_int_equal(op.count, 2);
        assert_int_equal(ledger_object_file_known(f->l, "f-2", &known), FERRY_OK);
        assert_true(known);
        memset(&seen, 0, sizeof seen);
        assert_int_equal(ledger_object_parts_release(f->l, "f-obj", collect_file, &seen, &count),
                         FERRY_OK);
        assert_int_equal(count, 2);
        assert_int_equal(seen.n, 2);
        assert_string_equal(seen.ids[0], "f-1b");
        assert_string_equal(seen.ids[1], "f-2");
        assert_int_equal(ledger_object_part_get(f->l, "f-obj", 1, &op), FERRY_OK);
        assert_int_equal(op.count, 0);
        assert_int_equal(ledger_object_file_known(f->l, "f-2", &known), FERRY_OK);
        assert_false(known);
        assert_int_equal(ledger_object_parts_release(f->l, "f-obj", NULL, NULL, &count), FERRY_OK);
        assert_int_equal(count, 0);
        /* ...and a delete keeps those of the deleted object until the
         * sweep's release of every object's loose rows. */
        make_upload(&u, "up-4", "big/four", T0);
        assert_int_equal(ledger_upload_create(f->l, &u, 0), FERRY_OK);
        make_part(&p, 7, "f-7", 4);
        assert_int_equal(ledger_upload_part_put(f->l, "up-4", &p, replaced), FERRY_OK);
        make_object(&o, "big/four", NULL);
        snprintf(o.file_id, sizeof o.file_id, "f-obj4");
        make_part(&used[0], 7, "f-7", 4);
        assert_int_equal(
            ledger_upload_complete(f->l, "up-4", used, 1, &o, T0, replaced, NULL, NULL), FERRY_OK);
        assert_int_equal(ledger_object_part_get(f->l, "f-obj4", 7, &op), FERRY_OK);
        assert_int_equal(op.count, 1);
        assert_true(op.found);
        assert_int_equal(ledger_object_delete(f->l, "ingest", "big/four", gone), FERRY_OK);
        assert_string_equal(gone, "f-obj4");
        assert_int_equal(ledger_object_part_get(f->l, "f-obj4", 7, &op), FERRY_OK);
        assert_int_equal(op.count, 1);
        n = 0;
        assert_int_equal(ledger_object_file_walk(f->l, "f-7", count_file, &n), FERRY_OK);
        assert_int_equal(n, 1);
        memset(&seen, 0, sizeof seen);
        assert_int_equal(ledger_object_parts_release(f->l, NULL, collect_file, &seen, &count),
                         FERRY_OK);
        assert_int_equal(count, 1);
        assert_string_equal(seen.ids[0], "f-7");
        assert_int_equal(ledger_object_part_get(f->l, "f-obj4", 7, &op), FERRY_OK);
        assert_int_equal(op.count, 0);
        n = 0;
        assert_int_equal(ledger_object_file_walk(f->l, "f-7", count_file, &n), FERRY_OK);
        assert_int_equal(n, 0);
    }

    /* Abort hands back the parts; a second abort finds nothing. */
    make_part(&p, 3, "f-3", 3);
    assert_int_equal(ledger_upload_part_put(f->l, "up-2", &p, replaced), FERRY_OK);
    memset(&seen, 0, sizeof seen);
    assert_int_equal(ledger_upload_abort(f->l, "up-2", collect_file, &seen), FERRY_OK);
    assert_int_equal(seen.n, 1);
    assert_string_equal(seen.ids[0], "f-3");
    assert_int_equal(ledger_upload_abort(f->l, "up-2", NULL, NULL), FERRY_ERR_NOT_FOUND);

    /* Expiry: only uploads initiated before the cutoff, oldest first. */
    make_upload(&u, "up-old", "k/old", T0 - 100);
    assert_int_equal(ledger_upload_create(f->l, &u, 0), FERRY_OK);
    make_upload(&u, "up-new", "k/new", T0 + 100);
    assert_int_equal(ledger_upload_create(f->l, &u, 0), FERRY_OK);
    make_part(&p, 1, "f-old", 1);
    assert_int_equal(ledger_upload_part_put(f->l, "up-old", &p, replaced), FERRY_OK);
    memset(&seen, 0, sizeof seen);
    assert_int_equal(ledger_uploads_expire(f->l, T0, 10, collect_file, &seen, &count), FERRY_OK);
    assert_int_equal(count, 1);
    assert_int_equal(seen.n, 1);
    assert_string_equal(seen.ids[0], "f-old");
    assert_int_equal(ledger_upload_get(f->l, "up-new", &got, NULL), FERRY_OK);
    assert_int_equal(ledger_uploads_expire(f->l, T0, 0, NULL, NULL, &count), FERRY_ERR_INVALID);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_migrate_fresh_and_reopen, setup, teardown),
        cmocka_unit_test_setup_teardown(test_schema_too_new_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_migrate_grants_v6, setup, teardown),
        cmocka_unit_test_setup_teardown(test_migrate_object_parts_v10, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_transaction_gate, setup, teardown),
        cmocka_unit_test_setup_teardown(test_device_cache_invalidation, setup, teardown),
        cmocka_unit_test(test_open_bad_urls),
        cmocka_unit_test_setup_teardown(test_device_upsert_get, setup, teardown),
        cmocka_unit_test_setup_teardown(test_grant_insert_get, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sync_and_checkpoint_controls, setup, teardown),
        cmocka_unit_test_setup_teardown(test_audit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_count_and_bytes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_limits_inside_insert, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mark_used_revoke_expire, setup, teardown),
        cmocka_unit_test_setup_teardown(test_insert_batch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_checkpoint_tail_restarts_log, setup, teardown),
        cmocka_unit_test_setup_teardown(test_insert_batch_device_exists, setup, teardown),
        cmocka_unit_test_setup_teardown(test_crash_keeps_committed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_race_mark_used, setup, teardown),
        cmocka_unit_test_setup_teardown(test_race_insert_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_objects, setup, teardown),
        cmocka_unit_test_setup_teardown(test_object_file_walk, setup, teardown),
        cmocka_unit_test_setup_teardown(test_race_object_put, setup, teardown),
        cmocka_unit_test_setup_teardown(test_object_put_batch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_outbox_event_with_object, setup, teardown),
        cmocka_unit_test_setup_teardown(test_outbox_order_dead_replay, setup, teardown),
        cmocka_unit_test_setup_teardown(test_events_prune, setup, teardown),
        cmocka_unit_test_setup_teardown(test_outbox_external, setup, teardown),
        cmocka_unit_test_setup_teardown(test_uploads, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
