/*
 * ledger.c - the public ledger API: picks the backend from the URL, checks
 * and bounds every argument once, and dispatches through the backend's
 * ledger_ops table (ledger_int.h). No SQL lives here.
 */
#include "ledger_int.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *const state_names[] = {
    [LEDGER_GRANT_ISSUED] = "issued",
    [LEDGER_GRANT_USED] = "used",
    [LEDGER_GRANT_EXPIRED] = "expired",
    [LEDGER_GRANT_REVOKED] = "revoked",
};

const char *ledger_grant_state_str(ledger_grant_state state)
{
    if ((unsigned)state >= sizeof state_names / sizeof state_names[0])
        return "unknown";
    return state_names[state];
}

/* A required string: non-NULL, non-empty, at most max bytes. */
static ferry_err check_str(const char *s, size_t max)
{
    if (s == NULL || s[0] == '\0')
        return FERRY_ERR_INVALID;
    if (strnlen(s, max + 1) > max)
        return FERRY_ERR_TOO_LARGE;
    return FERRY_OK;
}

/* An optional string: NULL or "" allowed, at most max bytes. */
static ferry_err check_opt_str(const char *s, size_t max)
{
    if (s == NULL)
        return FERRY_OK;
    if (strnlen(s, max + 1) > max)
        return FERRY_ERR_TOO_LARGE;
    return FERRY_OK;
}

ferry_err ledger_open(const char *url, ledger **out)
{
    ferry_err err = FERRY_OK;
    ledger *l = NULL;
    const ledger_ops *ops = &ledger_sqlite_ops;
    const char *location = url;

    if (url == NULL || out == NULL)
        return FERRY_ERR_INVALID;
    if (strncmp(url, "sqlite:", 7) == 0)
        location = url + 7;
    else if (strstr(url, "://") != NULL)
        return FERRY_ERR_INVALID; /* a backend this build does not have */
    if (location[0] == '\0')
        return FERRY_ERR_INVALID;

    l = calloc(1, sizeof *l);
    if (l == NULL)
        return FERRY_ERR_NOMEM;
    l->ops = ops;
    err = ops->open(location, &l->impl);
    if (err)
        goto out;
    *out = l;
    l = NULL;
out:
    free(l);
    return err;
}

ferry_err ledger_set_autocheckpoint(ledger *l, bool on)
{
    if (l == NULL)
        return FERRY_ERR_INVALID;
    return l->ops->set_autocheckpoint(l->impl, on);
}

ferry_err ledger_checkpoint(ledger *l, uint64_t *log_frames, uint64_t *copied_frames)
{
    uint64_t log = 0, copied = 0;
    if (l == NULL)
        return FERRY_ERR_INVALID;
    ferry_err err = l->ops->checkpoint(l->impl, &log, &copied);
    if (err == FERRY_OK && log_frames != NULL)
        *log_frames = log;
    if (err == FERRY_OK && copied_frames != NULL)
        *copied_frames = copied;
    return err;
}

ferry_err ledger_set_sync(ledger *l, ledger_sync mode)
{
    if (l == NULL || (mode != LEDGER_SYNC_FULL && mode != LEDGER_SYNC_NORMAL))
        return FERRY_ERR_INVALID;
    return l->ops->set_sync(l->impl, mode);
}

void ledger_close(ledger *l)
{
    if (l == NULL)
        return;
    l->ops->close(l->impl);
    free(l);
}

const char *ledger_backend(const ledger *l)
{
    return l != NULL ? l->ops->name : "none";
}

ferry_err ledger_schema_version(ledger *l, int64_t *out)
{
    if (l == NULL || out == NULL)
        return FERRY_ERR_INVALID;
    return l->ops->schema_version(l->impl, out);
}

ferry_err ledger_device_get(ledger *l, const char *device, ledger_device *out)
{
    ferry_err err;
    if (l == NULL || out == NULL)
        return FERRY_ERR_INVALID;
    if ((err = check_str(device, LEDGER_DEVICE_MAX)) != FERRY_OK)
        return err;
    return l->ops->device_get(l->impl, device, out);
}

ferry_err ledger_device_upsert(ledger *l, const ledger_device *dev, int64_t now)
{
    ferry_err err;
    if (l == NULL || dev == NULL)
        return FERRY_ERR_INVALID;
    if ((err = check_str(dev->id, LEDGER_DEVICE_MAX)) != FERRY_OK)
        return err;
    if (dev->content_types_set &&
        strnlen(dev->content_types, sizeof dev->content_types) == sizeof dev->content_types)
        return FERRY_ERR_TOO_LARGE;
    return l->ops->device_upsert(l->impl, dev, now);
}

ferry_err ledger_open_grants(ledger *l, const char *device, int64_t now, uint64_t *out)
{
    ferry_err err;
    if (l == NULL || out == NULL)
        return FERRY_ERR_INVALID;
    if ((err = check_str(device, LEDGER_DEVICE_MAX)) != FERRY_OK)
        return err;
    return l->ops->open_grants(l->impl, device, now, out);
}

ferry_err ledger_bytes_since(ledger *l, const char *device, int64_t day_start, int64_t now,
                             uint64_t *out)
{
    ferry_err err;
    if (l == NULL || out == NULL)
        return FERRY_ERR_INVALID;
    if ((err = check_str(device, LEDGER_DEVICE_MAX)) != FERRY_OK)
        return err;
    return l->ops->bytes_since(l->impl, device, day_start, now, out);
}

/* A grant record's strings are fixed arrays; each must be NUL-terminated
 * inside its array (a record filled by memcpy could forget). */
#define ARRAY_TERMINATED(a) (memchr((a), '\0', sizeof(a)) != NULL)

static ferry_err check_grant(const ledger_grant *g)
{
    if (!ARRAY_TERMINATED(g->id) || !ARRAY_TERMINATED(g->device) ||
        !ARRAY_TERMINATED(g->request_id) || !ARRAY_TERMINATED(g->key) ||
        !ARRAY_TERMINATED(g->bucket) || !ARRAY_TERMINATED(g->method) ||
        !ARRAY_TERMINATED(g->content_type) || !ARRAY_TERMINATED(g->sha256))
        return FERRY_ERR_TOO_LARGE;
    if (g->id[0] == '\0' || g->device[0] == '\0' || g->key[0] == '\0' || g->bucket[0] == '\0' ||
        g->method[0] == '\0' || g->content_type[0] == '\0')
        return FERRY_ERR_INVALID;
    if (g->sha256[0] != '\0' && strlen(g->sha256) != LEDGER_SHA256_HEX_LEN)
        return FERRY_ERR_INVALID;
    if (g->size > (UINT64_C(1) << 62) || g->expires_at <= g->issued_at)
        return FERRY_ERR_INVALID;
    return FERRY_OK;
}

/*
 * The grant gate. Inside ledger_write_begin() .. ledger_write_commit() a
 * caller may hand out grants before they are committed (the grant service
 * answers first when the embedded store enforces grants, ferryd.c). A
 * reader in this process that looks such a grant up in between would find
 * nothing and refuse a valid grant; so a lookup that finds no grant while
 * an explicit write transaction of this process is open waits for that
 * transaction to end and looks again. (Only the grant service opens
 * explicit write transactions, so the wait is for a grant batch.) Process-wide because the store's
 * handles and the grant service's are different handles on one database.
 */
static pthread_mutex_t gate_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cond = PTHREAD_COND_INITIALIZER;
static unsigned gate_holders;   /* explicit write transactions open in this process */
static uint64_t gate_ends;      /* how many of them have ended */

static void gate_hold(void)
{
    pthread_mutex_lock(&gate_lock);
    gate_holders++;
    pthread_mutex_unlock(&gate_lock);
}

static void gate_release(void)
{
    pthread_mutex_lock(&gate_lock);
    gate_holders--;
    gate_ends++;
    pthread_cond_broadcast(&gate_cond);
    pthread_mutex_unlock(&gate_lock);
}

/* Whether an explicit write transaction is open now; *ends: how many have
 * ended so far. Taken before a lookup, so that a transaction that commits
 * between the lookup and gate_wait() is not missed. */
static bool gate_snapshot(uint64_t *ends)
{
    pthread_mutex_lock(&gate_lock);
    bool held = gate_holders > 0;
    *ends = gate_ends;
    pthread_mutex_unlock(&gate_lock);
    return held;
}

/* Waits, at most LEDGER_BUSY_TIMEOUT_MS, until a write transaction has
 * ended since the snapshot that saw `seen` ended ones (it may have ended
 * already). Returns whether one did: then a second lookup may find what
 * the first did not. */
static bool gate_wait(uint64_t seen)
{
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += LEDGER_BUSY_TIMEOUT_MS / 1000;
    pthread_mutex_lock(&gate_lock);
    while (gate_ends == seen && gate_holders > 0 &&
           pthread_cond_timedwait(&gate_cond, &gate_lock, &deadline) == 0)
        ;
    bool ended = gate_ends != seen;
    pthread_mutex_unlock(&gate_lock);
    return ended;
}

/* Lock waits of every handle of this process (ledger_busy_waits). */
static atomic_uint_least64_t busy_waits;

void ledger__note_busy(void)
{
    atomic_fetch_add_explicit(&busy_waits, 1, memory_order_relaxed);
}

uint64_t ledger_busy_waits(void)
{
    return atomic_load_explicit(&busy_waits, memory_order_relaxed);
}

ferry_err ledger_write_begin(ledger *l)
{
    if (l == NULL || l->in_write)
        return FERRY_ERR_INVALID;
    ferry_err err = l->ops->write_begin(l->impl);
    if (err == FERRY_OK) {
        l->in_write = true;
        gate_hold();
    }
    return err;
}

ferry_err ledger_write_commit(ledger *l)
{
    if (l == NULL || !l->in_write)
        return FERRY_ERR_INVALID;
    ferry_err err = l->ops->write_commit(l->impl);
    l->in_write = false;
    gate_release();
    return err;
}

void ledger_write_rollback(ledger *l)
{
    if (l == NULL || !l->in_write)
        return;
    l->ops->write_rollback(l->impl);
    l->in_write = false;
    gate_release();
}

ferry_err ledger_grant_insert(ledger *l, const ledger_grant *g, const ledger_limits *limits,
                              ledger_verdict *verdict)
{
    ferry_err err;
    static const ledger_limits no_limits = {0, 0, 0};
    if (l == NULL || g == NULL || verdict == NULL)
        return FERRY_ERR_INVALID;
    if ((err = check_grant(g)) != FERRY_OK)
        return err;
    if (limits != NULL && limits->max_open_grants > INT64_MAX)
        return FERRY_ERR_RANGE;
    return l->ops->grant_insert(l->impl, g, limits != NULL ? limits : &no_limits, verdict);
}

ferry_err ledger_grant_insert_batch(ledger *l, ledger_insert *items, size_t n)
{
    if (l == NULL || (items == NULL && n > 0))
        return FERRY_ERR_INVALID;
    for (size_t i = 0; i < n; i++) {
        ledger_insert *it = &items[i];
        it->verdict = LEDGER_INSERTED;
        if (it->grant == NULL)
            it->err = FERRY_ERR_INVALID;
        else
            it->err = check_grant(it->grant);
        if (it->err == FERRY_OK && it->limits != NULL && it->limits->max_open_grants > INT64_MAX)
            it->err = FERRY_ERR_RANGE;
    }
    if (n == 0)
        return FERRY_OK;
    return l->ops->grant_insert_batch(l->impl, items, n);
}

ferry_err ledger_audit_refusal(ledger *l, const char *device, const char *request_id,
                               const char *code, const char *detail, int64_t now)
{
    ferry_err err;
    if (l == NULL)
        return FERRY_ERR_INVALID;
    if ((err = check_str(device, LEDGER_DEVICE_MAX)) != FERRY_OK ||
        (err = check_opt_str(request_id, LEDGER_REQUEST_ID_MAX)) != FERRY_OK ||
        (err = check_str(code, LEDGER_AUDIT_CODE_MAX)) != FERRY_OK ||
        (err = check_opt_str(detail, LEDGER_AUDIT_DETAIL_MAX)) != FERRY_OK)
        return err;
    return l->ops->audit_refusal(l->impl, device, request_id, code, detail != NULL ? detail : "",
                                 now);
}

ferry_err ledger_grant_get(ledger *l, const char *grant_id, ledger_grant *out)
{
    ferry_err err;
    if (l == NULL || out == NULL)
        return FERRY_ERR_INVALID;
    if ((err = check_str(grant_id, LEDGER_GRANT_ID_MAX)) != FERRY_OK)
        return err;
    uint64_t seen = 0;
    bool held = !l->in_write && gate_snapshot(&seen);
    err = l->ops->grant_get(l->impl, grant_id, out);
    if (err == FERRY_ERR_NOT_FOUND && held && gate_wait(seen))
        err = l->ops->grant_get(l->impl, grant_id, out);
    return err;
}

ferry_err ledger_grant_mark_used(ledger *l, const char *grant_id, int64_t now)
{
    ferry_err err;
    if (l == NULL)
        return FERRY_ERR_INVALID;
    if ((err = check_str(grant_id, LEDGER_GRANT_ID_MAX)) != FERRY_OK)
        return err;
    return l->ops->grant_mark_used(l->impl, grant_id, now);
}

ferry_err ledger_grant_revoke(ledger *l, const char *grant_id, int64_t now)
{
    ferry_err err;
    if (l == NULL)
        return FERRY_ERR_INVALID;
    if ((err = check_str(grant_id, LEDGER_GRANT_ID_MAX)) != FERRY_OK)
        return err;
    return l->ops->grant_revoke(l->impl, grant_id, now);
}

ferry_err ledger_grants_expire(ledger *l, int64_t now, uint64_t *count)
{
    uint64_t dummy = 0;
    if (l == NULL)
        return FERRY_ERR_INVALID;
    return l->ops->grants_expire(l->impl, now, count != NULL ? count : &dummy);
}

ferry_err ledger_audit_list(ledger *l, const char *device, int64_t after_seq, size_t limit,
                            int (*fn)(const ledger_audit_row *row, void *arg), void *arg)
{
    ferry_err err;
    if (l == NULL || fn == NULL)
        return FERRY_ERR_INVALID;
    if (device != NULL && (err = check_str(device, LEDGER_DEVICE_MAX)) != FERRY_OK)
        return err;
    return l->ops->audit_list(l->impl, device, after_seq, limit, fn, arg);
}

ferry_err ledger_audit_log(ledger *l, const char *device, int64_t since, size_t limit,
                           int (*fn)(const ledger_audit_row *row, void *arg), void *arg)
{
    ferry_err err;
    if (l == NULL || fn == NULL)
        return FERRY_ERR_INVALID;
    if ((err = check_str(device, LEDGER_DEVICE_MAX)) != FERRY_OK)
        return err;
    return l->ops->audit_log(l->impl, device, since, limit, fn, arg);
}

static ferry_err check_object(const ledger_object *o)
{
    if (!ARRAY_TERMINATED(o->bucket) || !ARRAY_TERMINATED(o->key) ||
        !ARRAY_TERMINATED(o->file_id) || !ARRAY_TERMINATED(o->etag) ||
        !ARRAY_TERMINATED(o->sha256) || !ARRAY_TERMINATED(o->content_type) ||
        !ARRAY_TERMINATED(o->meta) || !ARRAY_TERMINATED(o->device) ||
        !ARRAY_TERMINATED(o->grant_id))
        return FERRY_ERR_TOO_LARGE;
    if (o->bucket[0] == '\0' || o->key[0] == '\0' || o->file_id[0] == '\0' || o->etag[0] == '\0' ||
        strlen(o->sha256) != LEDGER_SHA256_HEX_LEN)
        return FERRY_ERR_INVALID;
    if (o->size > (UINT64_C(1) << 62))
        return FERRY_ERR_INVALID;
    return FERRY_OK;
}

ferry_err ledger_object_put(ledger *l, const ledger_object *obj, int64_t now,
                            char *replaced_file_id)
{
    ferry_err err;
    char dummy[LEDGER_FILE_ID_MAX + 1];
    if (l == NULL || obj == NULL)
        return FERRY_ERR_INVALID;
    if ((err = check_object(obj)) != FERRY_OK)
        return err;
    return l->ops->object_put(l->impl, obj, now,
                              replaced_file_id != NULL ? replaced_file_id : dummy);
}

ferry_err ledger_object_put_batch(ledger *l, ledger_object_put_item *items, size_t n)
{
    if (l == NULL || (items == NULL && n > 0))
        return FERRY_ERR_INVALID;
    for (size_t i = 0; i < n; i++) {
        items[i].replaced_file_id[0] = '\0';
        items[i].err = items[i].obj == NULL ? FERRY_ERR_INVALID : check_object(items[i].obj);
    }
    if (n == 0)
        return FERRY_OK;
    return l->ops->object_put_batch(l->impl, items, n);
}

ferry_err ledger_object_get(ledger *l, const char *bucket, const char *key, ledger_object *out)
{
    ferry_err err;
    if (l == NULL || out == NULL)
        return FERRY_ERR_INVALID;
    if ((err = check_str(bucket, LEDGER_BUCKET_MAX)) != FERRY_OK ||
        (err = check_str(key, LEDGER_OBJECT_KEY_MAX)) != FERRY_OK)
        return err;
    return l->ops->object_get(l->impl, bucket, key, out);
}

ferry_err ledger_object_delete(ledger *l, const char *bucket, const char *key, char *file_id_out)
{
    ferry_err err;
    if (l == NULL || file_id_out == NULL)
        return FERRY_ERR_INVALID;
    if ((err = check_str(bucket, LEDGER_BUCKET_MAX)) != FERRY_OK ||
        (err = check_str(key, LEDGER_OBJECT_KEY_MAX)) != FERRY_OK)
        return err;
    return l->ops->object_delete(l->impl, bucket, key, file_id_out);
}

ferry_err ledger_object_list(ledger *l, const char *bucket, const char *prefix,
                             const char *start_after, size_t limit,
                             int (*fn)(const ledger_object *obj, void *arg), void *arg)
{
    ferry_err err;
    if (l == NULL || fn == NULL)
        return FERRY_ERR_INVALID;
    if ((err = check_str(bucket, LEDGER_BUCKET_MAX)) != FERRY_OK ||
        (err = check_opt_str(prefix, LEDGER_OBJECT_KEY_MAX)) != FERRY_OK ||
        (err = check_opt_str(start_after, LEDGER_OBJECT_KEY_MAX + 4)) != FERRY_OK)
        return err;
    return l->ops->object_list(l->impl, bucket, prefix != NULL ? prefix : "",
                               start_after != NULL ? start_after : "", limit, fn, arg);
}

ferry_err ledger_object_file_known(ledger *l, const char *file_id, bool *known)
{
    ferry_err err;
    if (l == NULL || known == NULL)
        return FERRY_ERR_INVALID;
    if ((err = check_str(file_id, LEDGER_FILE_ID_MAX)) != FERRY_OK)
        return err;
    return l->ops->object_file_known(l->impl, file_id, known);
}

ferry_err ledger_object_file_walk(ledger *l, const char *prefix,
                                  int (*fn)(const char *file_id, uint64_t size, void *arg),
                                  void *arg)
{
    ferry_err err;
    if (l == NULL || fn == NULL)
        return FERRY_ERR_INVALID;
    if ((err = check_str(prefix, LEDGER_FILE_ID_MAX)) != FERRY_OK)
        return err;
    return l->ops->object_file_walk(l->impl, prefix, fn, arg);
}

/* ---------------------------------------------------------------------- */
/* Multipart uploads                                                        */

static ferry_err check_upload(const ledger_upload *u)
{
    ferry_err err;
    if (!ARRAY_TERMINATED(u->id) || !ARRAY_TERMINATED(u->bucket) || !ARRAY_TERMINATED(u->key) ||
        !ARRAY_TERMINATED(u->content_type) || !ARRAY_TERMINATED(u->meta))
        return FERRY_ERR_TOO_LARGE;
    if ((err = check_str(u->id, LEDGER_UPLOAD_ID_MAX)) != FERRY_OK ||
        (err = check_str(u->bucket, LEDGER_BUCKET_MAX)) != FERRY_OK ||
        (err = check_str(u->key, LEDGER_OBJECT_KEY_MAX)) != FERRY_OK ||
        (err = check_str(u->content_type, LEDGER_CONTENT_TYPE_MAX)) != FERRY_OK)
        return err;
    return FERRY_OK;
}

static ferry_err check_part(const ledger_part *p)
{
    ferry_err err;
    if (!ARRAY_TERMINATED(p->file_id) || !ARRAY_TERMINATED(p->etag))
        return FERRY_ERR_TOO_LARGE;
    if (p->number < 1 || p->number > LEDGER_PART_NUMBER_MAX || p->size > (UINT64_C(1) << 62))
        return FERRY_ERR_RANGE;
    if ((err = check_str(p->file_id, LEDGER_FILE_ID_MAX)) != FERRY_OK ||
        (err = check_str(p->etag, LEDGER_ETAG_MAX)) != FERRY_OK)
        return err;
    return FERRY_OK;
}

ferry_err ledger_upload_create(ledger *l, const ledger_upload *u, size_t max_open)
{
    ferry_err err;
    if (l == NULL || u == NULL)
        return FERRY_ERR_INVALID;
    if ((err = check_upload(u)) != FERRY_OK)
        return err;
    return l->ops->upload_create(l->impl, u, max_open);
}

ferry_err ledger_upload_get(ledger *l, const char *upload_id, ledger_upload *out,
                            uint64_t *parts_bytes)
{
    ferry_err err;
    uint64_t dummy;
    if (l == NULL || out == NULL)
        return FERRY_ERR_INVALID;
    if ((err = check_str(upload_id, LEDGER_UPLOAD_ID_MAX)) != FERRY_OK)
        return err;
    return l->ops->upload_get(l->impl, upload_id, out, parts_bytes != NULL ? parts_bytes : &dummy);
}

ferry_err ledger_upload_part_put(ledger *l, const char *upload_id, const ledger_part *p,
                                 char *replaced_file_id)
{
    ferry_err err;
    char dummy[LEDGER_FILE_ID_MAX + 1];
    if (l == NULL || p == NULL)
        return FERRY_ERR_INVALID;
    if ((err = check_str(upload_id, LEDGER_UPLOAD_ID_MAX)) != FERRY_OK ||
        (err = check_part(p)) != FERRY_OK)
        return err;
    return l->ops->upload_part_put(l->impl, upload_id, p,
                                   replaced_file_id != NULL ? replaced_file_id : dummy);
}

ferry_err ledger_upload_parts(ledger *l, const char *upload_id, unsigned after, size_t limit,
                              int (*fn)(const ledger_part *p, void *arg), void *arg)
{
    ferry_err err;
    if (l == NULL || fn == NULL)
        return FERRY_ERR_INVALID;
    if ((err = check_str(upload_id, LEDGER_UPLOAD_ID_MAX)) != FERRY_OK)
        return err;
    return l->ops->upload_parts(l->impl, upload_id, after, limit, fn, arg);
}

ferry_err ledger_upload_list(ledger *l, const char *bucket, const char *prefix,
                             const char *key_marker, const char *id_marker, size_t limit,
                             int (*fn)(const ledger_upload *u, void *arg), void *arg)
{
    ferry_err err;
    if (l == NULL || fn == NULL)
        return FERRY_ERR_INVALID;
    if ((err = check_str(bucket, LEDGER_BUCKET_MAX)) != FERRY_OK ||
        (err = check_opt_str(prefix, LEDGER_OBJECT_KEY_MAX)) != FERRY_OK ||
        (err = check_opt_str(key_marker, LEDGER_OBJECT_KEY_MAX + 4)) != FERRY_OK ||
        (err = check_opt_str(id_marker, LEDGER_UPLOAD_ID_MAX)) != FERRY_OK)
        return err;
    return l->ops->upload_list(l->impl, bucket, prefix != NULL ? prefix : "",
                               key_marker != NULL ? key_marker : "",
                               id_marker != NULL ? id_marker : "", limit, fn, arg);
}

ferry_err ledger_upload_complete(ledger *l, const char *upload_id, const ledger_part *used,
                                 size_t n_used, const ledger_object *obj, int64_t now,
                                 char *replaced_file_id, ledger_file_fn fn, void *arg)
{
    ferry_err err;
    char dummy[LEDGER_FILE_ID_MAX + 1];
    if (l == NULL || obj == NULL || (used == NULL && n_used > 0) || n_used > LEDGER_PART_NUMBER_MAX)
        return FERRY_ERR_INVALID;
    if ((err = check_str(upload_id, LEDGER_UPLOAD_ID_MAX)) != FERRY_OK ||
        (err = check_object(obj)) != FERRY_OK)
        return err;
    /* An operator's object: there is no grant to consume. */
    if (obj->grant_id[0] != '\0')
        return FERRY_ERR_INVALID;
    for (size_t i = 0; i < n_used; i++)
        if ((err = check_part(&used[i])) != FERRY_OK)
            return err;
    return l->ops->upload_complete(l->impl, upload_id, used, n_used, obj, now,
                                   replaced_file_id != NULL ? replaced_file_id : dummy, fn, arg);
}

ferry_err ledger_object_part_get(ledger *l, const char *file_id, unsigned number,
                                 ledger_object_part *out)
{
    ferry_err err;
    if (l == NULL || out == NULL || number < 1 || number > LEDGER_PART_NUMBER_MAX)
        return FERRY_ERR_INVALID;
    if ((err = check_str(file_id, LEDGER_FILE_ID_MAX)) != FERRY_OK)
        return err;
    return l->ops->object_part_get(l->impl, file_id, number, out);
}

ferry_err ledger_object_parts(ledger *l, const char *file_id,
                              int (*fn)(const ledger_part *p, void *arg), void *arg)
{
    ferry_err err;
    if (l == NULL || fn == NULL)
        return FERRY_ERR_INVALID;
    if ((err = check_str(file_id, LEDGER_FILE_ID_MAX)) != FERRY_OK)
        return err;
    return l->ops->object_parts(l->impl, file_id, fn, arg);
}

ferry_err ledger_object_parts_release(ledger *l, const char *file_id, ledger_file_fn fn, void *arg,
                                      uint64_t *count)
{
    ferry_err err;
    uint64_t dummy;
    if (l == NULL)
        return FERRY_ERR_INVALID;
    if (file_id != NULL && (err = check_str(file_id, LEDGER_FILE_ID_MAX)) != FERRY_OK)
        return err;
    return l->ops->object_parts_release(l->impl, file_id, fn, arg, count != NULL ? count : &dummy);
}

ferry_err ledger_upload_abort(ledger *l, const char *upload_id, ledger_file_fn fn, void *arg)
{
    ferry_err err;
    if (l == NULL)
        return FERRY_ERR_INVALID;
    if ((err = check_str(upload_id, LEDGER_UPLOAD_ID_MAX)) != FERRY_OK)
        return err;
    return l->ops->upload_abort(l->impl, upload_id, fn, arg);
}

ferry_err ledger_uploads_expire(ledger *l, int64_t before, size_t limit, ledger_file_fn fn,
                                void *arg, uint64_t *count)
{
    uint64_t dummy;
    if (l == NULL || limit == 0)
        return FERRY_ERR_INVALID;
    return l->ops->uploads_expire(l->impl, before, limit, fn, arg, count != NULL ? count : &dummy);
}

/* ---------------------------------------------------------------------- */
/* The event outbox                                                         */

static const char *const delivery_state_names[] = {
    [LEDGER_DELIVERY_PENDING] = "pending",
    [LEDGER_DELIVERY_DELIVERED] = "delivered",
    [LEDGER_DELIVERY_DEAD] = "dead",
};

const char *ledger_delivery_state_str(ledger_delivery_state state)
{
    if ((unsigned)state >= sizeof delivery_state_names / sizeof delivery_state_names[0])
        return "unknown";
    return delivery_state_names[state];
}

ferry_err ledger_event_targets_set(ledger *l, const char *const *names, size_t n)
{
    ferry_err err;
    if (l == NULL || (names == NULL && n > 0))
        return FERRY_ERR_INVALID;
    for (size_t i = 0; i < n; i++)
        if ((err = check_str(names[i], LEDGER_TARGET_NAME_MAX)) != FERRY_OK)
            return err;
    return l->ops->event_targets_set(l->impl, names, n);
}

ferry_err ledger_event_latest(ledger *l, const char *bucket, const char *key, ledger_event *out)
{
    ferry_err err;
    if (l == NULL || out == NULL)
        return FERRY_ERR_INVALID;
    if ((err = check_str(bucket, LEDGER_BUCKET_MAX)) != FERRY_OK ||
        (err = check_str(key, LEDGER_OBJECT_KEY_MAX)) != FERRY_OK)
        return err;
    return l->ops->event_latest(l->impl, bucket, key, out);
}

ferry_err ledger_delivery_claim(ledger *l, const char *target, int64_t now_ms, int64_t lease_ms,
                                ledger_delivery *out, size_t max, size_t *n)
{
    ferry_err err;
    if (l == NULL || out == NULL || n == NULL || max == 0 || lease_ms < 0)
        return FERRY_ERR_INVALID;
    if ((err = check_str(target, LEDGER_TARGET_NAME_MAX)) != FERRY_OK)
        return err;
    return l->ops->delivery_claim(l->impl, target, now_ms, lease_ms, out, max, n);
}

/* The error text is cut to LEDGER_DELIVERY_ERR_MAX bytes (it is only for
 * people), on a UTF-8 boundary. */
static void error_copy(char *dst, const char *src)
{
    size_t len = src != NULL ? strnlen(src, LEDGER_DELIVERY_ERR_MAX) : 0;
    while (len > 0 && src[len] != '\0' && ((unsigned char)src[len] & 0xC0) == 0x80)
        len--;
    if (len > 0)
        memcpy(dst, src, len);
    dst[len] = '\0';
}

static ferry_err delivery_set(ledger *l, int64_t event_seq, const char *target,
                              ledger_delivery_state to, unsigned attempts, int64_t next_ms,
                              const char *error)
{
    ferry_err err;
    char e[LEDGER_DELIVERY_ERR_MAX + 1];
    if (l == NULL || event_seq <= 0)
        return FERRY_ERR_INVALID;
    if ((err = check_str(target, LEDGER_TARGET_NAME_MAX)) != FERRY_OK)
        return err;
    error_copy(e, error);
    return l->ops->delivery_set(l->impl, event_seq, target, to, attempts, next_ms, e);
}

ferry_err ledger_delivery_done(ledger *l, int64_t event_seq, const char *target)
{
    return delivery_set(l, event_seq, target, LEDGER_DELIVERY_DELIVERED, 0, 0, NULL);
}

ferry_err ledger_delivery_retry(ledger *l, int64_t event_seq, const char *target, unsigned attempts,
                                int64_t next_ms, const char *error)
{
    return delivery_set(l, event_seq, target, LEDGER_DELIVERY_PENDING, attempts, next_ms, error);
}

ferry_err ledger_delivery_dead(ledger *l, int64_t event_seq, const char *target, unsigned attempts,
                               const char *error)
{
    return delivery_set(l, event_seq, target, LEDGER_DELIVERY_DEAD, attempts, 0, error);
}

ferry_err ledger_delivery_list(ledger *l, ledger_delivery_state state, const char *target,
                               int64_t after_seq, size_t limit,
                               int (*fn)(const ledger_delivery *d, void *arg), void *arg)
{
    ferry_err err;
    if (l == NULL || fn == NULL || (unsigned)state > LEDGER_DELIVERY_DEAD)
        return FERRY_ERR_INVALID;
    if (target != NULL && (err = check_str(target, LEDGER_TARGET_NAME_MAX)) != FERRY_OK)
        return err;
    return l->ops->delivery_list(l->impl, state, target, after_seq, limit, fn, arg);
}

ferry_err ledger_delivery_replay(ledger *l, const char *target, const char *event_id,
                                 int64_t now_ms, uint64_t *count)
{
    ferry_err err;
    uint64_t dummy;
    if (l == NULL)
        return FERRY_ERR_INVALID;
    if ((target != NULL && (err = check_str(target, LEDGER_TARGET_NAME_MAX)) != FERRY_OK) ||
        (event_id != NULL && (err = check_str(event_id, LEDGER_EVENT_ID_MAX)) != FERRY_OK))
        return err;
    return l->ops->delivery_replay(l->impl, target, event_id, now_ms,
                                   count != NULL ? count : &dummy);
}

ferry_err ledger_events_prune(ledger *l, int64_t before_ms, size_t limit, uint64_t *count)
{
    uint64_t dummy;
    if (l == NULL || limit == 0)
        return FERRY_ERR_INVALID;
    return l->ops->events_prune(l->impl, before_ms, limit, count != NULL ? count : &dummy);
}

ferry_err ledger_delivery_postpone(ledger *l, const char *target, int64_t until_ms, uint64_t *count)
{
    ferry_err err;
    uint64_t dummy;
    if (l == NULL)
        return FERRY_ERR_INVALID;
    if ((err = check_str(target, LEDGER_TARGET_NAME_MAX)) != FERRY_OK)
        return err;
    return l->ops->delivery_postpone(l->impl, target, until_ms, count != NULL ? count : &dummy);
}

ferry_err ledger_event_external(ledger *l, const ledger_external_object *obj, int64_t now,
                                ledger_event *out, bool *duplicate)
{
    if (l == NULL || obj == NULL || out == NULL || duplicate == NULL)
        return FERRY_ERR_INVALID;
    if (!ARRAY_TERMINATED(obj->grant_id) || !ARRAY_TERMINATED(obj->bucket) ||
        !ARRAY_TERMINATED(obj->key) || !ARRAY_TERMINATED(obj->etag))
        return FERRY_ERR_TOO_LARGE;
    if (obj->grant_id[0] == '\0' || obj->bucket[0] == '\0' || obj->key[0] == '\0' ||
        obj->size > (UINT64_C(1) << 62))
        return FERRY_ERR_INVALID;
    return l->ops->event_external(l->impl, obj, now, out, duplicate);
}

ferry_err ledger_delivery_done_batch(ledger *l, const char *target, const int64_t *event_seqs,
                                     size_t n, uint64_t *marked)
{
    ferry_err err;
    uint64_t dummy;
    if (l == NULL || (event_seqs == NULL && n > 0))
        return FERRY_ERR_INVALID;
    if ((err = check_str(target, LEDGER_TARGET_NAME_MAX)) != FERRY_OK)
        return err;
    if (n == 0) {
        if (marked != NULL)
            *marked = 0;
        return FERRY_OK;
    }
    return l->ops->delivery_done_batch(l->impl, target, event_seqs, n,
                                       marked != NULL ? marked : &dummy);
}
