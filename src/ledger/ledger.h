/*
 * ledger.h - Ferry's ledger: devices and their policy overrides, grants and
 * their life cycle (a grant's row records its issue), and the audit trail of
 * every refusal and revocation.
 *
 * Callers see only this interface. Behind it sits one backend chosen by the
 * URL given to ledger_open() ("sqlite:PATH" or a plain path today; a
 * PostgreSQL backend can be added as another ledger_ops table, see
 * ledger_int.h, without touching any caller).
 *
 * Invariants the backends keep:
 *   - A grant moves only issued -> used, issued -> revoked or
 *     issued -> expired; every move is a compare-and-set on the current
 *     state, so of two racing callers exactly one wins (the other gets
 *     FERRY_ERR_CONFLICT).
 *   - A grant's row is the record of its issue (device, request id, time,
 *     method, size); the audit log holds refusals and revocations. The
 *     open-grant limit and the daily byte quota are re-checked inside the
 *     write transaction that inserts the grant, so several ferryd sharing
 *     one ledger can never together pass a limit.
 *   - Every write that returns FERRY_OK is durable (SQLite: WAL with
 *     synchronous=FULL).
 *
 * Thread-safety: a ledger handle must be used by one thread at a time. Open
 * one handle per thread (they may all point at the same database; the
 * database serialises writers, waiting up to LEDGER_BUSY_TIMEOUT_MS).
 *
 * Strings in records are bounded by the LEDGER_*_MAX lengths below; a write
 * with a longer string fails with FERRY_ERR_TOO_LARGE and changes nothing.
 */
#ifndef FERRY_LEDGER_H
#define FERRY_LEDGER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ferry/ferry_error.h"

#define LEDGER_DEVICE_MAX        128 /* device id (the topic level, the certificate CN) */
#define LEDGER_GRANT_ID_MAX      64  /* grant id ("g_" + 26 base32 today) */
#define LEDGER_REQUEST_ID_MAX    128 /* the device's correlation id */
#define LEDGER_KEY_MAX           512 /* object key */
#define LEDGER_BUCKET_MAX        63  /* S3 bucket names are at most 63 bytes */
#define LEDGER_METHOD_MAX        8   /* "PUT", "POST" */
#define LEDGER_SOURCE_IP_MAX     45  /* an IPv6 address in text (INET6_ADDRSTRLEN - 1) */
#define LEDGER_STORE_REQ_ID_MAX  32  /* the store's x-amz-request-id */
#define LEDGER_CONTENT_TYPE_MAX  127 /* RFC 6838: type/subtype, each <= 127 */
#define LEDGER_SHA256_HEX_LEN    64
#define LEDGER_CONTENT_TYPES_MAX 1024 /* a device's list of allowed patterns */
#define LEDGER_AUDIT_CODE_MAX    64
#define LEDGER_AUDIT_DETAIL_MAX  512
#define LEDGER_BUSY_TIMEOUT_MS   5000
#define LEDGER_OBJECT_KEY_MAX    1024 /* S3's limit on object keys (bytes of UTF-8) */
#define LEDGER_FILE_ID_MAX       64   /* the store's name for an object's data file */
#define LEDGER_ETAG_MAX          64   /* hex MD5 (32) or a multipart ETag */
#define LEDGER_META_MAX          2048 /* x-amz-meta-* as JSON: S3 allows 2 KB of user metadata */

typedef struct ledger ledger;

/* Optional values: set == false means "no override, use the fleet default"
 * (a NULL column). */
typedef struct ledger_opt_u64 {
    bool set;
    uint64_t v;
} ledger_opt_u64;
typedef struct ledger_opt_i64 {
    bool set;
    int64_t v;
} ledger_opt_i64;
typedef struct ledger_opt_f64 {
    bool set;
    double v;
} ledger_opt_f64;

/* A device and its per-device policy overrides. The meaning of each value is
 * that of the same-named field of grant_policy (src/grants/grants.h). */
typedef struct ledger_device {
    char id[LEDGER_DEVICE_MAX + 1];
    bool disabled;
    ledger_opt_u64 max_size_bytes;
    bool content_types_set;
    char content_types[LEDGER_CONTENT_TYPES_MAX + 1]; /* as grant_policy.content_types */
    ledger_opt_i64 expiry_min_s;
    ledger_opt_i64 expiry_base_s;
    ledger_opt_i64 expiry_max_s;
    ledger_opt_u64 min_bandwidth_bps; /* bytes per second */
    ledger_opt_u64 max_open_grants;
    ledger_opt_f64 rate_per_s;
    ledger_opt_f64 rate_burst;
    ledger_opt_u64 daily_quota_bytes;
    int64_t created_at; /* UTC seconds; filled by the ledger, ignored on upsert */
    int64_t updated_at;
} ledger_device;

typedef enum ledger_grant_state {
    LEDGER_GRANT_ISSUED = 0,
    LEDGER_GRANT_USED,
    LEDGER_GRANT_EXPIRED,
    LEDGER_GRANT_REVOKED,
} ledger_grant_state;

/* "issued", "used", "expired", "revoked" (the values stored). */
const char *ledger_grant_state_str(ledger_grant_state state);

typedef struct ledger_grant {
    char id[LEDGER_GRANT_ID_MAX + 1];
    char device[LEDGER_DEVICE_MAX + 1];
    char request_id[LEDGER_REQUEST_ID_MAX + 1]; /* may be "" */
    char key[LEDGER_KEY_MAX + 1];
    char bucket[LEDGER_BUCKET_MAX + 1];
    char method[LEDGER_METHOD_MAX + 1];
    uint64_t size;
    char content_type[LEDGER_CONTENT_TYPE_MAX + 1];
    char sha256[LEDGER_SHA256_HEX_LEN + 1]; /* lower-case hex, or "" when not announced */
    ledger_grant_state state;
    int64_t issued_at; /* UTC seconds */
    int64_t expires_at;
    int64_t used_at;    /* 0 while not used */
    int64_t revoked_at; /* 0 while not revoked */
} ledger_grant;

/* Limits re-checked inside the insert transaction. Zero means "no limit". */
typedef struct ledger_limits {
    uint64_t max_open_grants;
    uint64_t daily_quota_bytes;
    int64_t day_start; /* UTC midnight of the day the quota counts (see grant_day_start) */
} ledger_limits;

typedef enum ledger_verdict {
    LEDGER_INSERTED = 0,
    LEDGER_OVER_OPEN_GRANTS, /* nothing written: too many open grants */
    LEDGER_OVER_QUOTA,       /* nothing written: the daily quota would be exceeded */
} ledger_verdict;

/*
 * Opens (creating if needed) the ledger at url and migrates its schema to the
 * current version in one transaction per step. url is "sqlite:PATH" or a
 * plain file path. A database written by a newer Ferry (a schema version this
 * binary does not know) is refused with FERRY_ERR_DB.
 */
__attribute__((warn_unused_result)) ferry_err ledger_open(const char *url, ledger **out);
/* Safe on NULL. */
void ledger_close(ledger *l);

/* How commits reach the disk. FULL (the default of ledger_open): every
 * commit is fsynced before it returns. NORMAL: commits go to the write-ahead
 * log without an fsync; they survive a crash of the process (the log is in
 * the OS's cache) but the last ones may be lost if the machine itself loses
 * power. ferryd issues grants with NORMAL by default, because an fsync per
 * grant (milliseconds on ordinary disks) would dominate a request's round
 * trip, and a grant lost that way costs only a new request: its URL is then
 * unknown to the embedded store. Records that stand for stored data are
 * written with FULL. */
typedef enum ledger_sync {
    LEDGER_SYNC_FULL = 0,
    LEDGER_SYNC_NORMAL,
} ledger_sync;

__attribute__((warn_unused_result)) ferry_err ledger_set_sync(ledger *l, ledger_sync mode);

/* Checkpoints on the caller's schedule. By default SQLite copies the
 * write-ahead log back into the database (with an fsync) inside whichever
 * commit crosses the threshold, which stalls that one request for tens of
 * milliseconds. ferryd turns that off on its request-path handle and calls
 * ledger_checkpoint() from a background thread instead. A PASSIVE
 * checkpoint never waits for, nor blocks, readers or writers.
 *
 * The log starts over (is written from its start again, instead of
 * growing) only when a write transaction begins while every frame in it
 * has been copied and no reader is inside it. A handle whose writer keeps
 * committing, as the grant service does under load, never sees that after
 * another handle's checkpoint: frames it committed during the copy are
 * left. So its owner checkpoints that tail itself between two of its
 * transactions. *log_frames (may be NULL) is set to the frames in the log,
 * *copied_frames (may be NULL) to how many of them are now in the
 * database; both are 0 when the log was just started over, or when another
 * connection was checkpointing (SQLITE_BUSY, not an error). */
__attribute__((warn_unused_result)) ferry_err ledger_set_autocheckpoint(ledger *l, bool on);
__attribute__((warn_unused_result)) ferry_err ledger_checkpoint(ledger *l, uint64_t *log_frames,
                                                                uint64_t *copied_frames);
/* Name of the backend ("sqlite"). */
const char *ledger_backend(const ledger *l);
/* The schema version the database is at. */
__attribute__((warn_unused_result)) ferry_err ledger_schema_version(ledger *l, int64_t *out);

/* A device's overrides; FERRY_ERR_NOT_FOUND when the ledger has no row for
 * it (then the fleet defaults apply unchanged). */
__attribute__((warn_unused_result)) ferry_err ledger_device_get(ledger *l, const char *device,
                                                                ledger_device *out);
/* Inserts or replaces the device's overrides (created_at kept on update). */
__attribute__((warn_unused_result)) ferry_err
ledger_device_upsert(ledger *l, const ledger_device *dev, int64_t now);

/* Grants of device in state issued whose expires_at is after now. */
__attribute__((warn_unused_result)) ferry_err ledger_open_grants(ledger *l, const char *device,
                                                                 int64_t now, uint64_t *out);
/*
 * Bytes that count against device's daily quota: the sizes of its grants
 * issued at or after day_start that are used, or issued and not yet expired
 * at now. Revoked and expired (never used) grants give their bytes back.
 */
__attribute__((warn_unused_result)) ferry_err
ledger_bytes_since(ledger *l, const char *device, int64_t day_start, int64_t now, uint64_t *out);

/*
 * In one write transaction (BEGIN IMMEDIATE): creates the device row if
 * missing, counts the device's open grants and its quota bytes at
 * g->issued_at, and if both stay within limits inserts g (state issued).
 * *verdict says which, and is written whenever FERRY_OK is returned; on any
 * other return nothing was written. A grant id that already exists is
 * FERRY_ERR_EXISTS. Inside ledger_write_begin() it joins that transaction.
 */
__attribute__((warn_unused_result)) ferry_err ledger_grant_insert(ledger *l, const ledger_grant *g,
                                                                  const ledger_limits *limits,
                                                                  ledger_verdict *verdict);

/* One grant of a batch (ledger_grant_insert_batch). */
typedef struct ledger_insert {
    const ledger_grant *grant;   /* in */
    const ledger_limits *limits; /* in; NULL: no limits */
    /* in: the caller found the device's row (ledger_device_get) inside the
     * write transaction this batch joins (ledger_write_begin), so the row
     * cannot have gone and need not be ensured; false: it is created if
     * missing, as ledger_grant_insert does. */
    bool device_exists;
    ledger_verdict verdict; /* out, meaningful when err is FERRY_OK */
    ferry_err err;          /* out: FERRY_OK, or this item's own error
                               (FERRY_ERR_EXISTS, _INVALID, _TOO_LARGE) */
} ledger_insert;

/*
 * Group commit: does what ledger_grant_insert does for each of n items, in
 * order, inside ONE write transaction, so n grants cost one fsync instead of
 * n (with synchronous=FULL the commit, not the SQL, is what limits a single
 * ledger to a few thousand commits per second). Each item's limits are
 * checked against the ledger including the items inserted before it in the
 * same batch. An item with a bad record or an existing id gets its own err
 * and writes nothing; the others go on. Returns FERRY_OK when the batch
 * committed (every item's err and verdict are then set); any other return
 * means nothing at all was written and the items' outputs are unspecified.
 */
__attribute__((warn_unused_result)) ferry_err
ledger_grant_insert_batch(ledger *l, ledger_insert *items, size_t n);

/*
 * An explicit write transaction on this handle (BEGIN IMMEDIATE: it holds
 * the database's write lock until it ends). Inside it, ledger_grant_insert
 * and ledger_grant_insert_batch join it instead of committing on their own
 * (a batch that fails then leaves the transaction to be rolled back), and
 * reads on this handle see its writes. It must end with
 * ledger_write_commit() or ledger_write_rollback(); a failed commit rolls
 * back. Grants inserted in it are not visible to other handles until the
 * commit; a ledger_grant_get() of this process that finds no grant while
 * such a transaction is open waits for it to end and looks once more, so
 * grants may be handed out once the transaction is open and inserted just
 * before its commit (see grant_service.h).
 */
__attribute__((warn_unused_result)) ferry_err ledger_write_begin(ledger *l);
__attribute__((warn_unused_result)) ferry_err ledger_write_commit(ledger *l);
void ledger_write_rollback(ledger *l);

/*
 * How many times, since the process started, a handle of this process found
 * the write lock taken and waited for it (a monotonic counter). The holder
 * of a long explicit write transaction (the grant service, which keeps one
 * open across several batches, grant_service.h) compares it with the value
 * it saw last and commits early when it moved, so that the store's and the
 * outbox's writes wait about one lock-retry interval, not a whole hold.
 */
uint64_t ledger_busy_waits(void);

/* Records a refused request in the audit log: outcome "refused", code is the
 * protocol's rejection code name, detail the message sent. request_id may be
 * NULL (the request had no valid id). */
__attribute__((warn_unused_result)) ferry_err ledger_audit_refusal(ledger *l, const char *device,
                                                                   const char *request_id,
                                                                   const char *code,
                                                                   const char *detail, int64_t now);

/* FERRY_ERR_NOT_FOUND when there is no such grant. */
__attribute__((warn_unused_result)) ferry_err ledger_grant_get(ledger *l, const char *grant_id,
                                                               ledger_grant *out);

/*
 * Compare-and-set issued -> used, only while now < expires_at. Returns
 * FERRY_OK for the one caller that made the move; FERRY_ERR_CONFLICT if the
 * grant is already used or revoked (or another caller won the race);
 * FERRY_ERR_EXPIRED if it expired; FERRY_ERR_NOT_FOUND if unknown.
 */
__attribute__((warn_unused_result)) ferry_err
ledger_grant_mark_used(ledger *l, const char *grant_id, int64_t now);
/* Compare-and-set issued -> revoked, with an audit row (outcome "revoked").
 * FERRY_ERR_CONFLICT if the grant is no longer issued, FERRY_ERR_NOT_FOUND
 * if unknown. */
__attribute__((warn_unused_result)) ferry_err ledger_grant_revoke(ledger *l, const char *grant_id,
                                                                  int64_t now);
/* Moves every issued grant whose expires_at <= now to expired; *count (may
 * be NULL) receives how many moved. */
__attribute__((warn_unused_result)) ferry_err ledger_grants_expire(ledger *l, int64_t now,
                                                                   uint64_t *count);

/* One audit row, for tools and tests. */
typedef struct ledger_audit_row {
    int64_t seq; /* increasing */
    int64_t at;
    char device[LEDGER_DEVICE_MAX + 1];
    char request_id[LEDGER_REQUEST_ID_MAX + 1]; /* "" when none */
    char grant_id[LEDGER_GRANT_ID_MAX + 1];     /* "" when none */
    char outcome[16];                           /* "issued", "refused", "revoked" */
    char code[LEDGER_AUDIT_CODE_MAX + 1];
    char detail[LEDGER_AUDIT_DETAIL_MAX + 1];
} ledger_audit_row;

/* Calls fn for each audit row (refusals and revocations) of device (all
 * devices when device is NULL) with seq > after_seq, oldest first, at most
 * limit rows. fn returning non-zero stops the walk early. */
__attribute__((warn_unused_result)) ferry_err
ledger_audit_list(ledger *l, const char *device, int64_t after_seq, size_t limit,
                  int (*fn)(const ledger_audit_row *row, void *arg), void *arg);

/* A device's whole audit log from time `since` on, oldest first, at most
 * limit rows: every grant issued (from its grant row: outcome "issued",
 * code "Granted", detail "method=... size=...", seq 0) merged with its
 * audit rows. The same log, for every device, is the SQL view audit_log. */
__attribute__((warn_unused_result)) ferry_err
ledger_audit_log(ledger *l, const char *device, int64_t since, size_t limit,
                 int (*fn)(const ledger_audit_row *row, void *arg), void *arg);

/* ---------------------------------------------------------------------- */
/* Objects of the embedded store (issue 5).                                 */

/* One stored object. The data lives in a file of the store's data directory
 * named by file_id (the key never becomes a path); the row is what makes the
 * object visible. */
typedef struct ledger_object {
    char bucket[LEDGER_BUCKET_MAX + 1];
    char key[LEDGER_OBJECT_KEY_MAX + 1];
    char file_id[LEDGER_FILE_ID_MAX + 1];
    uint64_t size;
    char etag[LEDGER_ETAG_MAX + 1];         /* hex, without quotes */
    char sha256[LEDGER_SHA256_HEX_LEN + 1]; /* lower-case hex of the bytes stored */
    char content_type[LEDGER_CONTENT_TYPE_MAX + 1];
    char meta[LEDGER_META_MAX + 1];         /* JSON object of x-amz-meta-* (names
                                               lower-case, without the prefix); "" = none */
    char device[LEDGER_DEVICE_MAX + 1];     /* "" when an operator stored it */
    char grant_id[LEDGER_GRANT_ID_MAX + 1]; /* "" when an operator stored it */
    int64_t created_at;
    /* Copied into the object's event (not kept in the object's row): */
    char source_ip[LEDGER_SOURCE_IP_MAX + 1];           /* the uploader's address, or "" */
    char store_request_id[LEDGER_STORE_REQ_ID_MAX + 1]; /* the upload's request id, or "" */
} ledger_object;

/*
 * Records obj (replacing any object of the same bucket and key) in ONE write
 * transaction. With obj->grant_id set, the same transaction first consumes
 * the grant (compare-and-set issued -> used at now, as
 * ledger_grant_mark_used), so a grant pays for exactly one object: of two
 * racing uploads of one grant exactly one gets FERRY_OK, the other
 * FERRY_ERR_CONFLICT and nothing is written. Errors as ledger_grant_mark_used
 * (CONFLICT: used or revoked, EXPIRED, NOT_FOUND). When an object was
 * replaced, its file id is written to replaced_file_id (size
 * LEDGER_FILE_ID_MAX + 1; may be NULL), else "" is written there; the caller
 * removes that file after the commit. Open the handle with
 * LEDGER_SYNC_FULL: the row stands for data already on disk.
 */
__attribute__((warn_unused_result)) ferry_err
ledger_object_put(ledger *l, const ledger_object *obj, int64_t now, char *replaced_file_id);
/* One object of a group commit (ledger_object_put_batch). */
typedef struct ledger_object_put_item {
    const ledger_object *obj;                      /* in */
    int64_t now;                                   /* in: for the grant's expiry */
    char replaced_file_id[LEDGER_FILE_ID_MAX + 1]; /* out, as ledger_object_put */
    ferry_err err;                                 /* out: this item's result */
} ledger_object_put_item;

/*
 * Group commit: does what ledger_object_put does for each of n items, in
 * order, inside ONE write transaction (one fsync for the lot). An item whose
 * grant is not usable (CONFLICT, EXPIRED, NOT_FOUND) or whose record is bad
 * gets its own err and writes nothing; the others go on. Returns FERRY_OK
 * when the transaction committed (every item's err is then set); any other
 * return means nothing was written.
 */
__attribute__((warn_unused_result)) ferry_err
ledger_object_put_batch(ledger *l, ledger_object_put_item *items, size_t n);

/* FERRY_ERR_NOT_FOUND when bucket has no object key. */
__attribute__((warn_unused_result)) ferry_err
ledger_object_get(ledger *l, const char *bucket, const char *key, ledger_object *out);
/* Removes the row; its file id goes to file_id_out (size LEDGER_FILE_ID_MAX
 * + 1) for the caller to unlink. FERRY_ERR_NOT_FOUND when absent. */
__attribute__((warn_unused_result)) ferry_err
ledger_object_delete(ledger *l, const char *bucket, const char *key, char *file_id_out);
/* Calls fn for each object of bucket whose key starts with prefix (bytes;
 * "" for all) and sorts after start_after (bytewise, as S3 orders keys; ""
 * for none), in key order, at most limit objects. fn returning non-zero
 * stops the walk early. */
__attribute__((warn_unused_result)) ferry_err
ledger_object_list(ledger *l, const char *bucket, const char *prefix, const char *start_after,
                   size_t limit, int (*fn)(const ledger_object *obj, void *arg), void *arg);
/* *known = whether some object row, multipart upload part or part of a
 * completed object (ledger_object_parts) names file_id (the store's
 * start-up sweep removes data files no row names). */
__attribute__((warn_unused_result)) ferry_err
ledger_object_file_known(ledger *l, const char *file_id, bool *known);
/* Calls fn(file_id, size, arg) for each object, each part of a multipart
 * upload in progress and each part's data of a completed object
 * (ledger_object_parts), whose file id starts with prefix, in file
 * id order (the store's packs: a pack's regions in offset order). fn
 * returning non-zero stops the walk early. */
__attribute__((warn_unused_result)) ferry_err
ledger_object_file_walk(ledger *l, const char *prefix,
                        int (*fn)(const char *file_id, uint64_t size, void *arg), void *arg);

/* ---------------------------------------------------------------------- */
/* Multipart uploads of the embedded store (migration 7).                   */
/*
 * An upload in progress is a row in `uploads` and one row per part in
 * `upload_parts`, each part naming its data file (the store's file id,
 * like an object's). A part file named by a part row is not garbage: the
 * store's start-up sweep keeps it (ledger_object_file_known counts parts).
 * Completing an upload records its object and deletes the upload and its
 * parts in ONE write transaction, so a crash leaves either the upload (and
 * no object) or the object (and no upload); aborting and expiring delete
 * the upload and its parts the same way. The part files the ledger no
 * longer names are handed to a callback AFTER the commit, for the caller to
 * unlink (a crash before that leaves files the sweep removes).
 */

#define LEDGER_UPLOAD_ID_MAX   64
#define LEDGER_PART_NUMBER_MAX 10000 /* S3: parts are numbered 1..10,000 */

typedef struct ledger_upload {
    char id[LEDGER_UPLOAD_ID_MAX + 1];
    char bucket[LEDGER_BUCKET_MAX + 1];
    char key[LEDGER_OBJECT_KEY_MAX + 1];
    char content_type[LEDGER_CONTENT_TYPE_MAX + 1];
    char meta[LEDGER_META_MAX + 1]; /* as ledger_object.meta */
    int64_t initiated_at;
} ledger_upload;

typedef struct ledger_part {
    unsigned number; /* 1..LEDGER_PART_NUMBER_MAX */
    char file_id[LEDGER_FILE_ID_MAX + 1];
    uint64_t size;
    char etag[LEDGER_ETAG_MAX + 1]; /* hex MD5 of the part, without quotes */
    int64_t created_at;
} ledger_part;

/* Called after a commit with each data file the ledger stopped naming. */
typedef void (*ledger_file_fn)(const char *file_id, void *arg);

/* Records a new upload, unless max_open (0: no limit) uploads are already
 * open: then FERRY_ERR_RANGE and nothing is written (counted and inserted
 * in one write transaction). FERRY_ERR_EXISTS when the id is taken. */
__attribute__((warn_unused_result)) ferry_err
ledger_upload_create(ledger *l, const ledger_upload *u, size_t max_open);
/* The upload id, and the sum of its parts' sizes (parts_bytes may be
 * NULL). FERRY_ERR_NOT_FOUND when there is no such upload. */
__attribute__((warn_unused_result)) ferry_err
ledger_upload_get(ledger *l, const char *upload_id, ledger_upload *out, uint64_t *parts_bytes);
/* Records part p of the upload, replacing a part of the same number (its
 * file id to replaced_file_id, size LEDGER_FILE_ID_MAX + 1, "" when none;
 * the caller unlinks it). FERRY_ERR_NOT_FOUND when the upload no longer
 * exists (completed or aborted meanwhile): nothing is written. */
__attribute__((warn_unused_result)) ferry_err ledger_upload_part_put(ledger *l,
                                                                     const char *upload_id,
                                                                     const ledger_part *p,
                                                                     char *replaced_file_id);
/* Calls fn for each part of the upload numbered above after, in number
 * order, at most limit; fn returning non-zero stops early.
 * FERRY_ERR_NOT_FOUND when there is no such upload. */
__attribute__((warn_unused_result)) ferry_err
ledger_upload_parts(ledger *l, const char *upload_id, unsigned after, size_t limit,
                    int (*fn)(const ledger_part *p, void *arg), void *arg);
/* Calls fn for each upload of bucket whose key starts with prefix (bytes)
 * and that sorts after (key_marker, id_marker) (both "" for all), in that
 * order, at most limit. key_marker may be a key plus a few bytes (up to
 * LEDGER_OBJECT_KEY_MAX + 4: a listing skips what a common prefix rolled
 * up by walking on after prefix + 0xFF). */
__attribute__((warn_unused_result)) ferry_err
ledger_upload_list(ledger *l, const char *bucket, const char *prefix, const char *key_marker,
                   const char *id_marker, size_t limit,
                   int (*fn)(const ledger_upload *u, void *arg), void *arg);
/*
 * Completes the upload in ONE write transaction: checks that every part of
 * used[0..n_used) still names the same file (FERRY_ERR_CONFLICT if one was
 * replaced or is gone meanwhile), records obj (as ledger_object_put, without
 * a grant: obj->grant_id must be ""), records the object's parts (used[i]
 * .number and .size in the object's byte order, see ledger_object_part_get,
 * and .file_id as the part's data: the object is made of its parts' data,
 * see ledger_object_parts; obj->file_id names no data of its own), and
 * deletes the upload and all its parts. replaced_file_id as
 * ledger_object_put. After the commit fn (may be NULL) gets the file id of
 * every part deleted that is not one of used (those now belong to the
 * object). FERRY_ERR_NOT_FOUND when the upload no longer exists. On any
 * error nothing is written.
 */
__attribute__((warn_unused_result)) ferry_err
ledger_upload_complete(ledger *l, const char *upload_id, const ledger_part *used, size_t n_used,
                       const ledger_object *obj, int64_t now, char *replaced_file_id,
                       ledger_file_fn fn, void *arg);
/* Where one part of an object completed from a multipart upload lies
 * (migration 9): the parts recorded for the object whose data is file_id
 * (count; 0 for an object stored in one piece), whether one is numbered
 * `number`, the bytes of the parts before it (offset) and its size. The
 * boundaries live as long as their object's row: deleting or replacing the
 * object drops them in the same transaction. */
typedef struct ledger_object_part {
    unsigned count;
    bool found;
    uint64_t offset;
    uint64_t size;
} ledger_object_part;
__attribute__((warn_unused_result)) ferry_err
ledger_object_part_get(ledger *l, const char *file_id, unsigned number, ledger_object_part *out);
/* The data an object completed by ledger_upload_complete is made of
 * (migration 10): fn gets each of its parts in number order (p->number,
 * p->size, p->file_id: the part's data; etag and created_at empty). No
 * call for an object stored in one piece, or one completed before
 * migration 10 (assembled into its own file_id). fn returning non-zero
 * stops early. */
__attribute__((warn_unused_result)) ferry_err
ledger_object_parts(ledger *l, const char *file_id, int (*fn)(const ledger_part *p, void *arg),
                    void *arg);
/* The part rows of an object made of its parts outlive its row when it is
 * deleted or replaced (ledger_object_delete, ledger_object_put: the file
 * id they hand back names no data of its own): the caller releases them
 * after it. In one transaction, deletes the part rows of file_id (NULL:
 * of every object whose row is gone; the start-up sweep) if no object row
 * names it; after the commit fn (may be NULL) gets each part's data id,
 * for the caller to remove; *count (may be NULL) counts them. */
__attribute__((warn_unused_result)) ferry_err
ledger_object_parts_release(ledger *l, const char *file_id, ledger_file_fn fn, void *arg,
                            uint64_t *count);
/* Deletes the upload and its parts in one transaction; then fn (may be
 * NULL) gets each part's file id. FERRY_ERR_NOT_FOUND when absent. */
__attribute__((warn_unused_result)) ferry_err ledger_upload_abort(ledger *l, const char *upload_id,
                                                                  ledger_file_fn fn, void *arg);
/* Aborts, as ledger_upload_abort, up to limit (1..) of the oldest uploads
 * initiated before `before`; *count (may be NULL) says how many. */
__attribute__((warn_unused_result)) ferry_err ledger_uploads_expire(ledger *l, int64_t before,
                                                                    size_t limit, ledger_file_fn fn,
                                                                    void *arg, uint64_t *count);

/* ---------------------------------------------------------------------- */
/* The event outbox (issue 6).                                              */
/*
 * Every object recorded under a grant (ledger_object_put, _put_batch) gets,
 * in the SAME transaction, one event row and one delivery row per active
 * event target (ledger_event_targets_set), so an object never exists
 * without its event nor an event without its object. The event row holds
 * everything the event JSON and the device messages are built from, so a
 * redelivery builds the same bytes. Objects stored by an operator (no
 * grant) have no device to tell and raise no event.
 *
 * Event ids ("ev_" + 32 hex digits from SQLite's randomblob) are unique and
 * never change: they are the idempotency key. seq grows with every event
 * (one counter for the whole ledger), so it also orders the events of one
 * key: it is the S3 `sequencer`.
 *
 * A delivery is pending, delivered or dead. The worker of a target claims
 * due pending deliveries (taking a lease: next_ms moves to now + lease, so
 * a worker that dies mid-delivery only delays it) and records the outcome.
 * A pending delivery holds back the later events of the same bucket and key
 * for that target (per-key order); a dead one does not (otherwise one
 * poison event would stop its key for good).
 */

#define LEDGER_EVENT_ID_MAX     40        /* "ev_" + 32 hex */
#define LEDGER_TARGET_NAME_MAX  64        /* a [target.NAME] section name, or "@device" */
#define LEDGER_DELIVERY_ERR_MAX 255       /* last error, for the dead-letter listing */
#define LEDGER_DEVICE_TARGET    "@device" /* the receipt to the device */

typedef struct ledger_event {
    int64_t seq; /* the sequencer */
    char id[LEDGER_EVENT_ID_MAX + 1];
    char bucket[LEDGER_BUCKET_MAX + 1];
    char key[LEDGER_OBJECT_KEY_MAX + 1];
    uint64_t size;
    char etag[LEDGER_ETAG_MAX + 1];
    char sha256[LEDGER_SHA256_HEX_LEN + 1];
    char content_type[LEDGER_CONTENT_TYPE_MAX + 1];
    char device[LEDGER_DEVICE_MAX + 1];
    char grant_id[LEDGER_GRANT_ID_MAX + 1];
    char request_id[LEDGER_REQUEST_ID_MAX + 1]; /* "" when the grant had none */
    char method[LEDGER_METHOD_MAX + 1];         /* the grant's: "PUT", "POST" */
    int64_t created_ms;                         /* the object's created_at, in ms */
    char source_ip[LEDGER_SOURCE_IP_MAX + 1];   /* "" when unknown (external store) */
    char store_request_id[LEDGER_STORE_REQ_ID_MAX + 1]; /* "" when unknown */
} ledger_event;

typedef enum ledger_delivery_state {
    LEDGER_DELIVERY_PENDING = 0,
    LEDGER_DELIVERY_DELIVERED,
    LEDGER_DELIVERY_DEAD,
} ledger_delivery_state;

/* "pending", "delivered", "dead". */
const char *ledger_delivery_state_str(ledger_delivery_state state);

typedef struct ledger_delivery {
    ledger_event event;
    char target[LEDGER_TARGET_NAME_MAX + 1];
    ledger_delivery_state state;
    unsigned attempts; /* failed attempts so far */
    int64_t next_ms;   /* when due (UTC ms) */
    char last_error[LEDGER_DELIVERY_ERR_MAX + 1];
} ledger_delivery;

/* Makes names (n of them, each 1..LEDGER_TARGET_NAME_MAX bytes) exactly the
 * set of active targets: the ones new events get a delivery row for.
 * Deliveries of a target no longer active stay as they are (pending ones
 * wait until it comes back). One transaction. */
__attribute__((warn_unused_result)) ferry_err
ledger_event_targets_set(ledger *l, const char *const *names, size_t n);

/* The event of the current object at (bucket, key): the latest event
 * recorded for it. FERRY_ERR_NOT_FOUND when none. For tools and tests. */
__attribute__((warn_unused_result)) ferry_err
ledger_event_latest(ledger *l, const char *bucket, const char *key, ledger_event *out);

/* In one write transaction: up to max due deliveries of target (pending,
 * next_ms <= now_ms, no earlier pending event of the same key for that
 * target), oldest first, each leased until now_ms + lease_ms. *n receives
 * how many were written to out. */
__attribute__((warn_unused_result)) ferry_err
ledger_delivery_claim(ledger *l, const char *target, int64_t now_ms, int64_t lease_ms,
                      ledger_delivery *out, size_t max, size_t *n);

/* pending -> delivered. FERRY_ERR_CONFLICT when the delivery is not pending
 * (replayed or already marked), FERRY_ERR_NOT_FOUND when unknown. */
__attribute__((warn_unused_result)) ferry_err ledger_delivery_done(ledger *l, int64_t event_seq,
                                                                   const char *target);
/* ledger_delivery_done for n deliveries of target in ONE transaction (a
 * worker marks a claimed batch at once: one commit instead of n). Rows no
 * longer pending are skipped; *marked (may be NULL) receives how many
 * moved. */
__attribute__((warn_unused_result)) ferry_err
ledger_delivery_done_batch(ledger *l, const char *target, const int64_t *event_seqs, size_t n,
                           uint64_t *marked);
/* A failed attempt: stays pending, attempts set, due again at next_ms. */
__attribute__((warn_unused_result)) ferry_err
ledger_delivery_retry(ledger *l, int64_t event_seq, const char *target, unsigned attempts,
                      int64_t next_ms, const char *error);
/* pending -> dead (dead-letter), with the last error. */
__attribute__((warn_unused_result)) ferry_err ledger_delivery_dead(ledger *l, int64_t event_seq,
                                                                   const char *target,
                                                                   unsigned attempts,
                                                                   const char *error);

/* An object an EXTERNAL store reports (its bucket notification, matched to
 * a grant by the key): what the store says it stored. */
typedef struct ledger_external_object {
    char grant_id[LEDGER_GRANT_ID_MAX + 1];
    char bucket[LEDGER_BUCKET_MAX + 1];
    char key[LEDGER_OBJECT_KEY_MAX + 1];
    uint64_t size;
    char etag[LEDGER_ETAG_MAX + 1]; /* hex, without quotes; may be "" */
} ledger_external_object;

/*
 * Feeds an external store's object into the outbox, in one write
 * transaction: the grant must exist and name exactly obj's bucket and key
 * (FERRY_ERR_NOT_FOUND / FERRY_ERR_DENIED otherwise) and obj->size must be
 * the grant's size (FERRY_ERR_INVALID). A grant already reported is not
 * reported twice: *duplicate = true and nothing is written (the store may
 * send its notification more than once). Otherwise the grant moves to used
 * (from issued or expired: the upload happened while the URL was valid,
 * the notification may come later; a revoked grant is FERRY_ERR_CONFLICT)
 * and the event and its deliveries are inserted as for a stored object
 * (sha256 and content type from the grant, created at now). On success
 * the event (new or existing) is written to out.
 */
__attribute__((warn_unused_result)) ferry_err
ledger_event_external(ledger *l, const ledger_external_object *obj, int64_t now, ledger_event *out,
                      bool *duplicate);

/* Target-level backoff: every pending delivery of target due before
 * until_ms becomes due at until_ms (attempts unchanged), so a receiver
 * that is down is not tried once per event, and when it is back the
 * backlog goes out in sequencer order. *count (may be NULL) receives how
 * many moved. */
__attribute__((warn_unused_result)) ferry_err
ledger_delivery_postpone(ledger *l, const char *target, int64_t until_ms, uint64_t *count);

/* Calls fn for each delivery in state (of target; all targets when NULL)
 * with event seq > after_seq, oldest first, at most limit. fn returning
 * non-zero stops the walk. */
__attribute__((warn_unused_result)) ferry_err
ledger_delivery_list(ledger *l, ledger_delivery_state state, const char *target, int64_t after_seq,
                     size_t limit, int (*fn)(const ledger_delivery *d, void *arg), void *arg);

/* dead -> pending (attempts 0, due at now_ms) for the dead deliveries of
 * target (all when NULL) and of event_id (all when NULL). *count (may be
 * NULL) receives how many moved. */
__attribute__((warn_unused_result)) ferry_err ledger_delivery_replay(ledger *l, const char *target,
                                                                     const char *event_id,
                                                                     int64_t now_ms,
                                                                     uint64_t *count);

/* Removes up to limit (1..) of the oldest events created before before_ms
 * whose every delivery is delivered (or that have none), with their
 * delivery rows, in one transaction. Events with a pending or dead
 * delivery stay. *count (may be NULL) receives how many were removed.
 * Sequencers are never reused (seq is AUTOINCREMENT), so a later event of
 * a pruned key still sorts after it. */
__attribute__((warn_unused_result)) ferry_err ledger_events_prune(ledger *l, int64_t before_ms,
                                                                  size_t limit, uint64_t *count);

#endif
