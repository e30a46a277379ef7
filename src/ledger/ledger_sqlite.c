/*
 * ledger_sqlite.c - the SQLite backend of the ledger (the default).
 *
 * One connection per handle, in WAL mode (readers never block the writer),
 * synchronous=FULL (a commit that returned is on disk: a grant or, later, a
 * stored object's record survives a crash or power cut), foreign keys on,
 * and a busy timeout so that several handles or several ferryd processes on
 * one database wait for each other instead of failing.
 *
 * The schema is versioned with PRAGMA user_version and built by the ordered
 * list `migrations` below: entry i takes the database from version i to
 * i + 1, in its own transaction that re-reads the version first, so two
 * processes starting at once migrate exactly once. Later issues append
 * entries (objects, event outbox); entries are never edited once released.
 *
 * Writes that must see a consistent count (grant insert) run in
 * BEGIN IMMEDIATE transactions: the write lock is taken before the count is
 * read, so two writers cannot both read "one slot left" and both insert.
 * State changes of a grant are single UPDATE statements with the expected
 * old state in their WHERE clause (compare-and-set); sqlite3_changes() says
 * whether this caller made the change.
 *
 * Statements are prepared once per connection, on first use, and kept.
 */
#include "ledger_int.h"

#include <inttypes.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "common/timefmt.h"

/* The schema, one step per entry. See the block comment above. */
static const char *const migrations[] = {
    /* 1: devices, grants, audit (issue 4). State and method are not CHECK
     * constrained because SQLite cannot alter a CHECK without rebuilding the
     * table, and later issues add states (uploading, stored) and methods
     * (multipart); the code validates both. */
    "CREATE TABLE devices ("
    "  id TEXT PRIMARY KEY NOT NULL,"
    "  disabled INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),"
    /* Per-device overrides: NULL means the fleet default applies. */
    "  max_size_bytes INTEGER,"
    "  content_types TEXT,"
    "  expiry_min_s INTEGER,"
    "  expiry_base_s INTEGER,"
    "  expiry_max_s INTEGER,"
    "  min_bandwidth_bps INTEGER,"
    "  max_open_grants INTEGER,"
    "  rate_per_s REAL,"
    "  rate_burst REAL,"
    "  daily_quota_bytes INTEGER,"
    "  created_at INTEGER NOT NULL,"
    "  updated_at INTEGER NOT NULL"
    ");"
    "CREATE TABLE grants ("
    "  id TEXT PRIMARY KEY NOT NULL,"
    "  device TEXT NOT NULL REFERENCES devices(id),"
    "  request_id TEXT NOT NULL,"
    "  object_key TEXT NOT NULL,"
    "  bucket TEXT NOT NULL,"
    "  method TEXT NOT NULL,"
    "  size INTEGER NOT NULL CHECK (size >= 0),"
    "  content_type TEXT NOT NULL,"
    "  sha256 TEXT,"
    "  state TEXT NOT NULL,"
    "  issued_at INTEGER NOT NULL,"
    "  expires_at INTEGER NOT NULL,"
    "  used_at INTEGER,"
    "  revoked_at INTEGER"
    ");"
    /* Open-grant count: device + state + expiry. */
    "CREATE INDEX grants_device_state ON grants(device, state, expires_at);"
    /* Daily quota: covers the whole SUM(size) query, so it never touches
     * the table rows. */
    "CREATE INDEX grants_device_issued ON grants(device, issued_at, state, expires_at, size);"
    /* The expiry sweep. */
    "CREATE INDEX grants_state_expires ON grants(state, expires_at);"
    /* The audit log has no foreign key: refusals are recorded also for
     * devices the ledger has never seen. */
    "CREATE TABLE audit ("
    "  seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  at INTEGER NOT NULL,"
    "  device TEXT NOT NULL,"
    "  request_id TEXT,"
    "  grant_id TEXT,"
    "  outcome TEXT NOT NULL,"
    "  code TEXT NOT NULL,"
    "  detail TEXT NOT NULL"
    ");"
    "CREATE INDEX audit_device ON audit(device, seq);",
    /* 2: objects of the embedded store (issue 5). The key is compared as
     * bytes (BINARY collation is memcmp, S3's UTF-8 byte order), so a
     * listing walks the primary key. file_id names the data file; the
     * grant column is NULL for objects an operator stored. */
    "CREATE TABLE objects ("
    "  bucket TEXT NOT NULL,"
    "  object_key TEXT NOT NULL,"
    "  file_id TEXT NOT NULL,"
    "  size INTEGER NOT NULL CHECK (size >= 0),"
    "  etag TEXT NOT NULL,"
    "  sha256 TEXT NOT NULL,"
    "  content_type TEXT NOT NULL,"
    "  meta TEXT NOT NULL,"
    "  device TEXT,"
    "  grant_id TEXT REFERENCES grants(id),"
    "  created_at INTEGER NOT NULL,"
    "  PRIMARY KEY (bucket, object_key)"
    ") WITHOUT ROWID;"
    "CREATE INDEX objects_file ON objects(file_id);",
    /* 3: the event outbox (issue 6). An event row is written in the
     * transaction that records its object, with one delivery row per
     * active target (event_targets, kept by ferryd from its config). seq is
     * AUTOINCREMENT so a sequencer is never reused, even after the newest
     * events are deleted. The event copies what it is built from (not a
     * foreign key to objects: the object may be replaced or deleted later,
     * its event stays as it was). */
    "CREATE TABLE event_targets ("
    "  name TEXT PRIMARY KEY NOT NULL,"
    "  active INTEGER NOT NULL CHECK (active IN (0, 1))"
    ") WITHOUT ROWID;"
    "CREATE TABLE events ("
    "  seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  id TEXT NOT NULL UNIQUE,"
    "  bucket TEXT NOT NULL,"
    "  object_key TEXT NOT NULL,"
    "  size INTEGER NOT NULL CHECK (size >= 0),"
    "  etag TEXT NOT NULL,"
    "  sha256 TEXT NOT NULL,"
    "  content_type TEXT NOT NULL,"
    "  device TEXT NOT NULL,"
    "  grant_id TEXT NOT NULL,"
    "  request_id TEXT NOT NULL,"
    "  method TEXT NOT NULL,"
    "  created_ms INTEGER NOT NULL"
    ");"
    /* Per-key order: the earlier events of one key. */
    "CREATE INDEX events_key ON events(bucket, object_key, seq);"
    "CREATE TABLE deliveries ("
    "  event_seq INTEGER NOT NULL REFERENCES events(seq),"
    "  target TEXT NOT NULL,"
    "  state TEXT NOT NULL,"
    "  attempts INTEGER NOT NULL,"
    "  next_ms INTEGER NOT NULL,"
    "  last_error TEXT NOT NULL,"
    "  PRIMARY KEY (event_seq, target)"
    ") WITHOUT ROWID;"
    /* A worker's claim: its target's due pending rows. */
    "CREATE INDEX deliveries_due ON deliveries(target, state, next_ms);",
    /* 4: an external store's notification is matched to its grant's event
     * (a repeated notification must not raise a second event). */
    "CREATE INDEX events_grant ON events(grant_id);",
    /* 5: the claim walks a target's pending rows in sequencer order and
     * stops after its batch (a backlog of N rows no longer costs a sort of
     * N per claim); rows not yet due are filtered on the way. */
    ("DROP INDEX deliveries_due;"
     "CREATE INDEX deliveries_pending ON deliveries(target, state, event_seq);"),
    /* 6: fewer B-tree pages written per grant (docs/benchmarks.md, grants).
     * Grant ids sort by issue time (grant_key.c), so the table is keyed by
     * its id without a rowid: one B-tree instead of a rowid table plus the
     * id's unique index, and inserts append at its end. An issued grant's
     * record is its row (device, request id, time, method, size), so the
     * audit log keeps refusals and revocations only. The open-grant and
     * sweep indexes cover only issued grants (partial indexes): a grant
     * leaves them when it is used, revoked or expired. Rebuilt by the
     * documented table-rebuild procedure; foreign keys are off during
     * migrations (sq_open), so dropping the old table does not touch the
     * objects that refer to its grants. */
    ("CREATE TABLE grants_v6 ("
     "  id TEXT PRIMARY KEY NOT NULL,"
     "  device TEXT NOT NULL REFERENCES devices(id),"
     "  request_id TEXT NOT NULL,"
     "  object_key TEXT NOT NULL,"
     "  bucket TEXT NOT NULL,"
     "  method TEXT NOT NULL,"
     "  size INTEGER NOT NULL CHECK (size >= 0),"
     "  content_type TEXT NOT NULL,"
     "  sha256 TEXT,"
     "  state TEXT NOT NULL,"
     "  issued_at INTEGER NOT NULL,"
     "  expires_at INTEGER NOT NULL,"
     "  used_at INTEGER,"
     "  revoked_at INTEGER"
     ") WITHOUT ROWID;"
     "INSERT INTO grants_v6 SELECT id, device, request_id, object_key, bucket, method, size,"
     "  content_type, sha256, state, issued_at, expires_at, used_at, revoked_at FROM grants;"
     "DROP TABLE grants;"
     "ALTER TABLE grants_v6 RENAME TO grants;"
     "CREATE INDEX grants_open ON grants(device, expires_at) WHERE state = 'issued';"
     "CREATE INDEX grants_device_issued ON grants(device, issued_at, state, expires_at, size);"
     "CREATE INDEX grants_open_expires ON grants(expires_at) WHERE state = 'issued';"
     "DELETE FROM audit WHERE outcome = 'issued';"
     /* The audit log of every grant issued or refused, for SQL readers;
      * ledger_audit_log() reads the same per device. */
     "CREATE VIEW audit_log AS"
     "  SELECT 0 AS seq, issued_at AS at, device, request_id, id AS grant_id,"
     "   'issued' AS outcome, 'Granted' AS code,"
     "   'method=' || method || ' size=' || size AS detail FROM grants"
     "  UNION ALL SELECT seq, at, device, request_id, grant_id, outcome, code, detail"
     "  FROM audit;"),
    /* 7: multipart uploads of the embedded store. A part row names its
     * data file as an object row does, so the store's start-up sweep keeps
     * the part files of uploads in progress (ST_OBJECT_FILE_KNOWN looks in
     * both tables). Completing, aborting or expiring an upload deletes its
     * rows in the transaction that decides its fate. */
    ("CREATE TABLE uploads ("
     "  id TEXT PRIMARY KEY NOT NULL,"
     "  bucket TEXT NOT NULL,"
     "  object_key TEXT NOT NULL,"
     "  content_type TEXT NOT NULL,"
     "  meta TEXT NOT NULL,"
     "  initiated_at INTEGER NOT NULL"
     ") WITHOUT ROWID;"
     "CREATE INDEX uploads_key ON uploads(bucket, object_key, id);"
     "CREATE INDEX uploads_initiated ON uploads(initiated_at);"
     "CREATE TABLE upload_parts ("
     "  upload_id TEXT NOT NULL REFERENCES uploads(id),"
     "  part_number INTEGER NOT NULL CHECK (part_number BETWEEN 1 AND 10000),"
     "  file_id TEXT NOT NULL,"
     "  size INTEGER NOT NULL CHECK (size >= 0),"
     "  etag TEXT NOT NULL,"
     "  created_at INTEGER NOT NULL,"
     "  PRIMARY KEY (upload_id, part_number)"
     ") WITHOUT ROWID;"
     "CREATE INDEX upload_parts_file ON upload_parts(file_id);"),
    /* 8: an event says where its upload came from (sourceIPAddress) and
     * which store request made it (responseElements' x-amz-request-id), as
     * S3's do. Events recorded before this migration have neither. */
    ("ALTER TABLE events ADD COLUMN source_ip TEXT NOT NULL DEFAULT '';"
     "ALTER TABLE events ADD COLUMN store_request_id TEXT NOT NULL DEFAULT '';"),
    /* 9: the part boundaries of objects completed from a multipart upload
     * (GetObject/HeadObject ?partNumber=), keyed by the object's file id:
     * written in the transaction that records the object. The triggers
     * keep them no longer than their object: a delete drops them, and so
     * does a put over the key (INSERT OR REPLACE fires no delete trigger
     * without recursive_triggers, so the old row's file is looked up
     * before the insert). */
    ("CREATE TABLE object_parts ("
     "  file_id TEXT NOT NULL,"
     "  part_number INTEGER NOT NULL CHECK (part_number BETWEEN 1 AND 10000),"
     "  size INTEGER NOT NULL CHECK (size >= 0),"
     "  PRIMARY KEY (file_id, part_number)"
     ") WITHOUT ROWID;"
     "CREATE TRIGGER object_parts_on_delete AFTER DELETE ON objects BEGIN"
     "  DELETE FROM object_parts WHERE file_id = old.file_id;"
     " END;"
     "CREATE TRIGGER object_parts_on_replace BEFORE INSERT ON objects BEGIN"
     "  DELETE FROM object_parts WHERE file_id ="
     "   (SELECT file_id FROM objects WHERE bucket = new.bucket AND object_key = new.object_key);"
     " END;"),
    /* 10: an object completed from a multipart upload is made of its
     * parts' own data: its row names an id of no file ("m" + 32 hex, the
     * store's), and each of its object_parts rows names the part's data
     * (data_id: a data file or a pack region), so the bytes are written
     * once. Rows of older objects (assembled into a file of their own)
     * have no data_id. When such an object is deleted or replaced, its
     * part rows stay until the store has let go of their data
     * (ledger_object_parts_release): the triggers drop only rows without
     * a data_id, and the start-up sweep releases what a crash left. */
    ("ALTER TABLE object_parts ADD COLUMN data_id TEXT;"
     "CREATE INDEX object_parts_data ON object_parts(data_id);"
     "DROP TRIGGER object_parts_on_delete;"
     "DROP TRIGGER object_parts_on_replace;"
     "CREATE TRIGGER object_parts_on_delete AFTER DELETE ON objects BEGIN"
     "  DELETE FROM object_parts WHERE file_id = old.file_id AND data_id IS NULL;"
     " END;"
     "CREATE TRIGGER object_parts_on_replace BEFORE INSERT ON objects BEGIN"
     "  DELETE FROM object_parts WHERE data_id IS NULL AND file_id ="
     "   (SELECT file_id FROM objects WHERE bucket = new.bucket AND object_key = new.object_key);"
     " END;"),
};
#define MIGRATION_COUNT ((int64_t)(sizeof migrations / sizeof migrations[0]))

enum stmt_id {
    ST_BEGIN_IMMEDIATE,
    ST_COMMIT,
    ST_ROLLBACK,
    ST_DEVICE_GET,
    ST_DEVICE_UPSERT,
    ST_DEVICE_ENSURE,
    ST_DATA_VERSION,
    ST_OPEN_COUNT,
    ST_BYTES_SINCE,
    ST_GRANT_INSERT,
    ST_AUDIT_INSERT,
    ST_GRANT_GET,
    ST_MARK_USED,
    ST_GRANT_STATE,
    ST_REVOKE,
    ST_EXPIRE,
    ST_AUDIT_LIST_ALL,
    ST_AUDIT_LIST_DEVICE,
    ST_AUDIT_LOG,
    ST_OBJECT_FILE_OF,
    ST_OBJECT_UPSERT,
    ST_OBJECT_GET,
    ST_OBJECT_DELETE,
    ST_OBJECT_LIST,
    ST_OBJECT_FILE_KNOWN,
    ST_OBJECT_FILE_WALK,
    ST_EVENT_INSERT,
    ST_DELIVERY_FANOUT,
    ST_TARGETS_OFF,
    ST_TARGET_ON,
    ST_EVENT_LATEST,
    ST_DELIVERY_DUE,
    ST_DELIVERY_LEASE,
    ST_DELIVERY_DONE,
    ST_DELIVERY_SET,
    ST_DELIVERY_EXISTS,
    ST_DELIVERY_LIST_ALL,
    ST_DELIVERY_LIST_TARGET,
    ST_DELIVERY_REPLAY,
    ST_PRUNE_UPTO,
    ST_PRUNE_DELIVERIES,
    ST_PRUNE_EVENTS,
    ST_DELIVERY_POSTPONE,
    ST_EVENT_BY_GRANT,
    ST_GRANT_USE_EXTERNAL,
    ST_EVENT_INSERT_EXTERNAL,
    ST_UPLOAD_COUNT,
    ST_UPLOAD_INSERT,
    ST_UPLOAD_GET,
    ST_UPLOAD_EXISTS,
    ST_PART_FILE_OF,
    ST_PART_UPSERT,
    ST_PARTS_LIST,
    ST_UPLOAD_LIST,
    ST_PART_FILES,
    ST_PARTS_DELETE,
    ST_UPLOAD_DELETE,
    ST_UPLOADS_OLD,
    ST_OBJECT_PART_INSERT,
    ST_OBJECT_PART_GET,
    ST_PART_DELETE_ONE,
    ST_OBJECT_PIECES,
    ST_LOOSE_PARTS_OF,
    ST_LOOSE_PARTS_OF_DELETE,
    ST_LOOSE_PARTS_ALL,
    ST_LOOSE_PARTS_ALL_DELETE,
    ST__COUNT
};

/* The columns event_row() reads, then those delivery_row() adds. */
#define EVENT_COLS                                                                                 \
    "e.seq, e.id, e.bucket, e.object_key, e.size, e.etag, e.sha256, e.content_type, e.device,"     \
    " e.grant_id, e.request_id, e.method, e.created_ms, e.source_ip, e.store_request_id"
#define EVENT_COL_COUNT 15
#define DELIVERY_COLS   EVENT_COLS ", d.target, d.state, d.attempts, d.next_ms, d.last_error"

static const char *const stmt_sql[ST__COUNT] = {
    [ST_BEGIN_IMMEDIATE] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_DEVICE_GET] =
        "SELECT id, disabled, max_size_bytes, content_types, expiry_min_s, expiry_base_s,"
        " expiry_max_s, min_bandwidth_bps, max_open_grants, rate_per_s, rate_burst,"
        " daily_quota_bytes, created_at, updated_at FROM devices WHERE id = ?1",
    [ST_DEVICE_UPSERT] =
        "INSERT INTO devices (id, disabled, max_size_bytes, content_types, expiry_min_s,"
        " expiry_base_s, expiry_max_s, min_bandwidth_bps, max_open_grants, rate_per_s,"
        " rate_burst, daily_quota_bytes, created_at, updated_at)"
        " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?13)"
        " ON CONFLICT (id) DO UPDATE SET disabled = excluded.disabled,"
        " max_size_bytes = excluded.max_size_bytes, content_types = excluded.content_types,"
        " expiry_min_s = excluded.expiry_min_s, expiry_base_s = excluded.expiry_base_s,"
        " expiry_max_s = excluded.expiry_max_s, min_bandwidth_bps = excluded.min_bandwidth_bps,"
        " max_open_grants = excluded.max_open_grants, rate_per_s = excluded.rate_per_s,"
        " rate_burst = excluded.rate_burst, daily_quota_bytes = excluded.daily_quota_bytes,"
        " updated_at = excluded.updated_at",
    [ST_DATA_VERSION] = "PRAGMA data_version",
    [ST_DEVICE_ENSURE] = "INSERT OR IGNORE INTO devices (id, created_at, updated_at)"
                         " VALUES (?1, ?2, ?2)",
    [ST_OPEN_COUNT] = "SELECT count(*) FROM grants"
                      " WHERE device = ?1 AND state = 'issued' AND expires_at > ?2",
    [ST_BYTES_SINCE] = "SELECT coalesce(sum(size), 0) FROM grants"
                       " WHERE device = ?1 AND issued_at >= ?2"
                       " AND (state = 'used' OR (state = 'issued' AND expires_at > ?3))",
    [ST_GRANT_INSERT] =
        "INSERT INTO grants (id, device, request_id, object_key, bucket, method, size,"
        " content_type, sha256, state, issued_at, expires_at)"
        " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'issued', ?10, ?11)",
    [ST_AUDIT_INSERT] = "INSERT INTO audit (at, device, request_id, grant_id, outcome, code,"
                        " detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    [ST_GRANT_GET] = "SELECT id, device, request_id, object_key, bucket, method, size,"
                     " content_type, sha256, state, issued_at, expires_at, used_at, revoked_at"
                     " FROM grants WHERE id = ?1",
    [ST_MARK_USED] = "UPDATE grants SET state = 'used', used_at = ?2"
                     " WHERE id = ?1 AND state = 'issued' AND expires_at > ?2",
    [ST_GRANT_STATE] = "SELECT state, expires_at, device, request_id FROM grants WHERE id = ?1",
    [ST_REVOKE] = "UPDATE grants SET state = 'revoked', revoked_at = ?2"
                  " WHERE id = ?1 AND state = 'issued'",
    [ST_EXPIRE] = "UPDATE grants SET state = 'expired'"
                  " WHERE state = 'issued' AND expires_at <= ?1",
    [ST_AUDIT_LIST_ALL] = "SELECT seq, at, device, request_id, grant_id, outcome, code, detail"
                          " FROM audit WHERE seq > ?1 ORDER BY seq LIMIT ?2",
    [ST_AUDIT_LIST_DEVICE] = "SELECT seq, at, device, request_id, grant_id, outcome, code, detail"
                             " FROM audit WHERE device = ?3 AND seq > ?1 ORDER BY seq LIMIT ?2",
    /* A device's whole audit log through the view (migration 6): its
     * grants (each row records its issue) merged with its audit rows
     * (refusals, revocations), by time. SQLite pushes the WHERE into both
     * halves of the view, so each uses its device index. */
    [ST_AUDIT_LOG] = "SELECT seq, at, device, coalesce(request_id, ''), coalesce(grant_id, ''),"
                     " outcome, code, detail FROM audit_log WHERE device = ?1 AND at >= ?2"
                     " ORDER BY at, seq LIMIT ?3",
    [ST_OBJECT_FILE_OF] = "SELECT file_id FROM objects WHERE bucket = ?1 AND object_key = ?2",
    [ST_OBJECT_UPSERT] =
        "INSERT OR REPLACE INTO objects (bucket, object_key, file_id, size, etag, sha256,"
        " content_type, meta, device, grant_id, created_at)"
        " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    [ST_OBJECT_GET] = "SELECT bucket, object_key, file_id, size, etag, sha256, content_type,"
                      " meta, device, grant_id, created_at FROM objects"
                      " WHERE bucket = ?1 AND object_key = ?2",
    [ST_OBJECT_DELETE] = "DELETE FROM objects WHERE bucket = ?1 AND object_key = ?2",
    /* The prefix test compares bytes (a BLOB cast), not characters. */
    [ST_OBJECT_LIST] = "SELECT bucket, object_key, file_id, size, etag, sha256, content_type,"
                       " meta, device, grant_id, created_at FROM objects"
                       " WHERE bucket = ?1 AND object_key > ?2"
                       " AND substr(CAST(object_key AS BLOB), 1, ?4) = CAST(?3 AS BLOB)"
                       " ORDER BY object_key LIMIT ?5",
    /* Part files of uploads in progress are data files too (migration 7). */
    [ST_OBJECT_FILE_KNOWN] = "SELECT 1 FROM objects WHERE file_id = ?1"
                             " UNION ALL SELECT 1 FROM upload_parts WHERE file_id = ?1"
                             " UNION ALL SELECT 1 FROM object_parts WHERE data_id = ?1 LIMIT 1",
    /* File ids are ASCII (hex digits and a letter): every id that starts
     * with the prefix sorts between it and the prefix followed by '~'. The
     * parts of uploads in progress name data too (migration 7): a pack
     * region of a part is as alive as an object's, and so is the data of
     * the parts a completed object is made of (migration 10). */
    [ST_OBJECT_FILE_WALK] =
        "SELECT file_id, size FROM ("
        "SELECT file_id, size FROM objects INDEXED BY objects_file"
        " WHERE file_id >= ?1 AND file_id < ?1 || '~'"
        " UNION ALL SELECT file_id, size FROM upload_parts INDEXED BY upload_parts_file"
        " WHERE file_id >= ?1 AND file_id < ?1 || '~'"
        " UNION ALL SELECT data_id, size FROM object_parts INDEXED BY object_parts_data"
        " WHERE data_id >= ?1 AND data_id < ?1 || '~') ORDER BY file_id",
    /* The event id comes from SQLite's CSPRNG-seeded randomblob: 128 bits,
     * so ids from several ferryd on one ledger never collide in practice
     * (and the UNIQUE constraint would refuse the commit if they did). */
    [ST_EVENT_INSERT] =
        "INSERT INTO events (id, bucket, object_key, size, etag, sha256, content_type, device,"
        " grant_id, request_id, method, created_ms, source_ip, store_request_id)"
        " SELECT 'ev_' || lower(hex(randomblob(16))), ?1, ?2, ?3, ?4, ?5, ?6, device, id,"
        " request_id, method, ?7, ?9, ?10 FROM grants WHERE id = ?8",
    [ST_DELIVERY_FANOUT] = "INSERT INTO deliveries (event_seq, target, state, attempts, next_ms,"
                           " last_error) SELECT ?1, name, 'pending', 0, ?2, ''"
                           " FROM event_targets WHERE active = 1",
    [ST_TARGETS_OFF] = "UPDATE event_targets SET active = 0",
    [ST_TARGET_ON] = "INSERT INTO event_targets (name, active) VALUES (?1, 1)"
                     " ON CONFLICT (name) DO UPDATE SET active = 1",
    [ST_EVENT_LATEST] = "SELECT " EVENT_COLS " FROM events e"
                        " WHERE e.bucket = ?1 AND e.object_key = ?2 ORDER BY e.seq DESC LIMIT 1",
    /* Per-key order: a row is due only when no earlier event of its key is
     * still pending for the same target (leased rows count as pending).
     * The check looks up the key's earlier events (events_key), a handful;
     * left to itself SQLite walks every earlier pending row of the target
     * instead (deliveries_pending), which made each claim cost O(rows in
     * flight or waiting) per candidate: 29 ms instead of 1 ms for 128 rows
     * behind 256 leased ones. */
    [ST_DELIVERY_DUE] =
        "SELECT " DELIVERY_COLS " FROM deliveries d JOIN events e ON e.seq = d.event_seq"
        " WHERE d.target = ?1 AND d.state = 'pending' AND d.next_ms <= ?2"
        " AND NOT EXISTS (SELECT 1 FROM events e2 INDEXED BY events_key JOIN deliveries d2"
        "   ON d2.event_seq = e2.seq AND d2.target = ?1"
        "   WHERE e2.bucket = e.bucket AND e2.object_key = e.object_key AND e2.seq < e.seq"
        "   AND d2.state = 'pending')"
        " ORDER BY d.event_seq LIMIT ?3",
    [ST_DELIVERY_LEASE] = "UPDATE deliveries SET next_ms = ?3"
                          " WHERE event_seq = ?1 AND target = ?2 AND state = 'pending'",
    [ST_DELIVERY_DONE] = "UPDATE deliveries SET state = 'delivered', last_error = ''"
                         " WHERE event_seq = ?1 AND target = ?2 AND state = 'pending'",
    [ST_DELIVERY_SET] = "UPDATE deliveries SET state = ?3, attempts = ?4, next_ms = ?5,"
                        " last_error = ?6"
                        " WHERE event_seq = ?1 AND target = ?2 AND state = 'pending'",
    [ST_DELIVERY_EXISTS] = "SELECT 1 FROM deliveries WHERE event_seq = ?1 AND target = ?2",
    [ST_DELIVERY_LIST_ALL] =
        "SELECT " DELIVERY_COLS " FROM deliveries d JOIN events e ON e.seq = d.event_seq"
        " WHERE d.state = ?1 AND d.event_seq > ?2 ORDER BY d.event_seq, d.target LIMIT ?3",
    [ST_DELIVERY_LIST_TARGET] =
        "SELECT " DELIVERY_COLS " FROM deliveries d JOIN events e ON e.seq = d.event_seq"
        " WHERE d.state = ?1 AND d.event_seq > ?2 AND d.target = ?4"
        " ORDER BY d.event_seq LIMIT ?3",
    [ST_EVENT_BY_GRANT] = "SELECT " EVENT_COLS " FROM events e WHERE e.grant_id = ?1"
                          " ORDER BY e.seq LIMIT 1",
    [ST_GRANT_USE_EXTERNAL] = "UPDATE grants SET state = 'used', used_at = ?2"
                              " WHERE id = ?1 AND state IN ('issued', 'expired', 'used')",
    /* As ST_EVENT_INSERT, with the grant's own sha256 and content type
     * (the external store's notification carries neither reliably). */
    [ST_EVENT_INSERT_EXTERNAL] =
        "INSERT INTO events (id, bucket, object_key, size, etag, sha256, content_type, device,"
        " grant_id, request_id, method, created_ms)"
        " SELECT 'ev_' || lower(hex(randomblob(16))), ?1, ?2, ?3, ?4, coalesce(sha256, ''),"
        " content_type, device, id, request_id, method, ?5 FROM grants WHERE id = ?6",
    [ST_DELIVERY_POSTPONE] = "UPDATE deliveries SET next_ms = ?2"
                             " WHERE target = ?1 AND state = 'pending' AND next_ms < ?2",
    /* Pruning, in three steps inside one transaction: the highest seq of
     * the oldest `limit` events created before the cutoff whose every
     * delivery is delivered; their deliveries; then every event up to that
     * seq and before the cutoff left without any delivery row. An event
     * with a pending or dead delivery keeps that row, so it stays. */
    [ST_PRUNE_UPTO] = "SELECT max(seq) FROM (SELECT e.seq FROM events e WHERE e.created_ms < ?1"
                      " AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_seq = e.seq"
                      "   AND d.state <> 'delivered') ORDER BY e.seq LIMIT ?2)",
    [ST_PRUNE_DELIVERIES] = "DELETE FROM deliveries WHERE event_seq <= ?2 AND state = 'delivered'"
                            " AND event_seq IN (SELECT e.seq FROM events e WHERE e.seq <= ?2"
                            "   AND e.created_ms < ?1 AND NOT EXISTS (SELECT 1 FROM deliveries d"
                            "   WHERE d.event_seq = e.seq AND d.state <> 'delivered'))",
    [ST_PRUNE_EVENTS] = "DELETE FROM events WHERE seq <= ?2 AND created_ms < ?1"
                        " AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_seq = events.seq)",
    [ST_UPLOAD_COUNT] = "SELECT count(*) FROM uploads",
    [ST_UPLOAD_INSERT] = "INSERT INTO uploads (id, bucket, object_key, content_type, meta,"
                         " initiated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    [ST_UPLOAD_GET] = "SELECT id, bucket, object_key, content_type, meta, initiated_at,"
                      " (SELECT coalesce(sum(size), 0) FROM upload_parts WHERE upload_id = ?1)"
                      " FROM uploads WHERE id = ?1",
    [ST_UPLOAD_EXISTS] = "SELECT 1 FROM uploads WHERE id = ?1",
    [ST_PART_FILE_OF] = "SELECT file_id FROM upload_parts WHERE upload_id = ?1"
                        " AND part_number = ?2",
    [ST_PART_UPSERT] = "INSERT OR REPLACE INTO upload_parts (upload_id, part_number, file_id,"
                       " size, etag, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    [ST_PARTS_LIST] = "SELECT part_number, file_id, size, etag, created_at FROM upload_parts"
                      " WHERE upload_id = ?1 AND part_number > ?2 ORDER BY part_number LIMIT ?3",
    /* Ordered as S3 lists uploads: by key (bytes), then upload id. */
    [ST_UPLOAD_LIST] = "SELECT id, bucket, object_key, content_type, meta, initiated_at"
                       " FROM uploads INDEXED BY uploads_key WHERE bucket = ?1"
                       " AND substr(CAST(object_key AS BLOB), 1, ?3) = CAST(?2 AS BLOB)"
                       " AND (object_key > ?4 OR (object_key = ?4 AND id > ?5))"
                       " ORDER BY object_key, id LIMIT ?6",
    [ST_PART_FILES] = "SELECT file_id FROM upload_parts WHERE upload_id = ?1",
    [ST_PARTS_DELETE] = "DELETE FROM upload_parts WHERE upload_id = ?1",
    [ST_UPLOAD_DELETE] = "DELETE FROM uploads WHERE id = ?1",
    [ST_UPLOADS_OLD] = "SELECT id FROM uploads WHERE initiated_at < ?1"
                       " ORDER BY initiated_at LIMIT ?2",
    [ST_OBJECT_PART_INSERT] = "INSERT INTO object_parts (file_id, part_number, size, data_id)"
                              " VALUES (?1, ?2, ?3, ?4)",
    [ST_PART_DELETE_ONE] =
        "DELETE FROM upload_parts WHERE upload_id = ?1 AND part_number = ?2 AND file_id = ?3",
    [ST_OBJECT_PIECES] = "SELECT part_number, data_id, size FROM object_parts"
                         " WHERE file_id = ?1 AND data_id IS NOT NULL ORDER BY part_number",
    /* Part rows (with data) whose object row is gone: of one object id,
     * or of every object (the start-up sweep). */
    [ST_LOOSE_PARTS_OF] = "SELECT data_id FROM object_parts WHERE file_id = ?1"
                          " AND data_id IS NOT NULL"
                          " AND NOT EXISTS (SELECT 1 FROM objects WHERE file_id = ?1)",
    [ST_LOOSE_PARTS_OF_DELETE] = "DELETE FROM object_parts WHERE file_id = ?1"
                                 " AND data_id IS NOT NULL"
                                 " AND NOT EXISTS (SELECT 1 FROM objects WHERE file_id = ?1)",
    [ST_LOOSE_PARTS_ALL] = "SELECT data_id FROM object_parts p WHERE data_id IS NOT NULL"
                           " AND NOT EXISTS (SELECT 1 FROM objects o WHERE o.file_id = p.file_id)",
    [ST_LOOSE_PARTS_ALL_DELETE] =
        "DELETE FROM object_parts WHERE data_id IS NOT NULL AND NOT EXISTS"
        " (SELECT 1 FROM objects o WHERE o.file_id = object_parts.file_id)",
    /* How many parts, the bytes before part ?2, and its size (-1: none). */
    [ST_OBJECT_PART_GET] =
        "SELECT count(*), coalesce(sum(CASE WHEN part_number < ?2 THEN size ELSE 0 END), 0),"
        " coalesce(max(CASE WHEN part_number = ?2 THEN size END), -1)"
        " FROM object_parts WHERE file_id = ?1",
    [ST_DELIVERY_REPLAY] =
        "UPDATE deliveries SET state = 'pending', attempts = 0, next_ms = ?1"
        " WHERE state = 'dead' AND (?2 IS NULL OR target = ?2)"
        " AND (?3 IS NULL OR event_seq = (SELECT seq FROM events WHERE id = ?3))",
};

/*
 * The device rows read inside write transactions, kept between them: the
 * grant service reads its device's row for every request, and the row
 * changes only when an operator edits it (ferryctl, another connection).
 * An entry is used only inside a write transaction whose start found
 * PRAGMA data_version unchanged since the entries were read, i.e. no
 * other connection has committed anything since; the write lock then keeps
 * it so until the transaction ends. This connection's own writes of a
 * device row (upsert, the row a grant insert creates) drop the entry
 * (data_version does not count them), and a rollback drops them all.
 * Misses (no row) are kept too. Direct-mapped by a hash of the id.
 */
#define DEVICE_CACHE_SLOTS 256

typedef struct device_cache_entry {
    bool used;
    bool found; /* else: no row for this id */
    ledger_device dev;
} device_cache_entry;

typedef struct sqlite_ledger {
    sqlite3 *db;
    sqlite3_stmt *stmts[ST__COUNT];
    bool in_write;                    /* inside ledger_write_begin() .. _commit()/_rollback() */
    int64_t busy_since_ns;            /* when the current wait for a lock began */
    device_cache_entry *device_cache; /* DEVICE_CACHE_SLOTS, allocated on first use */
    int64_t cache_data_version;       /* PRAGMA data_version the entries were read at */
    bool cache_checked;               /* data_version compared in this write transaction */
} sqlite_ledger;

/*
 * The busy handler, instead of sqlite3_busy_timeout(): SQLite's own sleeps
 * 1, 2, 5, 10, ... ms between tries, so a writer that meets the grant
 * service's transaction (held up to [ferryd] commit_delay, and begun again
 * as soon as the next request comes) can miss every short gap between two
 * of them. This one retries every 50 us for the first millisecond and then
 * every millisecond, up to LEDGER_BUSY_TIMEOUT_MS in all, and counts each
 * wait (ledger_busy_waits) so that the holder can give way.
 */
static int busy_wait(void *arg, int count)
{
    sqlite_ledger *s = arg;
    int64_t now = ferry_time_mono_ns();
    if (count == 0)
        s->busy_since_ns = now;
    else if (now - s->busy_since_ns >= (int64_t)LEDGER_BUSY_TIMEOUT_MS * 1000000)
        return 0;
    ledger__note_busy();
    struct timespec pause = {.tv_sec = 0,
                             .tv_nsec = now - s->busy_since_ns < 1000000 ? 50000 : 1000000};
    nanosleep(&pause, NULL);
    return 1;
}

/* Logs a database error with the operation that failed; never logs bound
 * values (they may hold device text). */
static ferry_err db_fail(sqlite_ledger *s, const char *op, int rc)
{
    log_error("ledger.db_error", "backend=sqlite op=%s rc=%d msg=\"%s\"", op, rc,
              s->db != NULL ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
    if (rc == SQLITE_NOMEM)
        return FERRY_ERR_NOMEM;
    return FERRY_ERR_DB;
}

/* The cached statement id, reset and with its bindings cleared. */
static ferry_err stmt_get(sqlite_ledger *s, enum stmt_id id, sqlite3_stmt **out)
{
    sqlite3_stmt *st = s->stmts[id];
    if (st == NULL) {
        int rc = sqlite3_prepare_v3(s->db, stmt_sql[id], -1, SQLITE_PREPARE_PERSISTENT, &st, NULL);
        if (rc != SQLITE_OK)
            return db_fail(s, "prepare", rc);
        s->stmts[id] = st;
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    *out = st;
    return FERRY_OK;
}

/* Runs a statement that returns no rows (BEGIN, COMMIT, UPDATE, INSERT). */
static ferry_err stmt_done(sqlite_ledger *s, sqlite3_stmt *st, const char *op)
{
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc == SQLITE_CONSTRAINT_PRIMARYKEY || rc == SQLITE_CONSTRAINT_UNIQUE)
        return FERRY_ERR_EXISTS;
    if (rc != SQLITE_DONE)
        return db_fail(s, op, rc);
    return FERRY_OK;
}

static ferry_err exec_simple(sqlite_ledger *s, enum stmt_id id, const char *op)
{
    sqlite3_stmt *st;
    ferry_err err = stmt_get(s, id, &st);
    if (err)
        return err;
    return stmt_done(s, st, op);
}

/* Rolls back after a failure inside a transaction. Its own failure is only
 * logged: the caller already returns the first error, and SQLite rolls back
 * by itself when the connection closes. */
static void rollback(sqlite_ledger *s)
{
    if (sqlite3_get_autocommit(s->db))
        return; /* SQLite already rolled back (e.g. after SQLITE_FULL) */
    if (exec_simple(s, ST_ROLLBACK, "rollback") != FERRY_OK)
        log_error("ledger.rollback_failed", "backend=sqlite");
}

static int bind_text(sqlite3_stmt *st, int idx, const char *v)
{
    if (v == NULL)
        return sqlite3_bind_null(st, idx);
    return sqlite3_bind_text(st, idx, v, -1, SQLITE_STATIC);
}

/* "" stored as NULL: for optional text (request id, sha256, grant id). */
static int bind_text_or_null(sqlite3_stmt *st, int idx, const char *v)
{
    return bind_text(st, idx, (v != NULL && v[0] != '\0') ? v : NULL);
}

static int bind_opt_u64(sqlite3_stmt *st, int idx, const ledger_opt_u64 *v)
{
    return v->set ? sqlite3_bind_int64(st, idx, (sqlite3_int64)v->v) : sqlite3_bind_null(st, idx);
}

static int bind_opt_i64(sqlite3_stmt *st, int idx, const ledger_opt_i64 *v)
{
    return v->set ? sqlite3_bind_int64(st, idx, v->v) : sqlite3_bind_null(st, idx);
}

static int bind_opt_f64(sqlite3_stmt *st, int idx, const ledger_opt_f64 *v)
{
    return v->set ? sqlite3_bind_double(st, idx, v->v) : sqlite3_bind_null(st, idx);
}

/* Copies a text column into a fixed array; NULL reads as "". A value that
 * does not fit means the database holds something no writer of ours put
 * there: reported as a database error rather than truncated silently. */
static ferry_err col_text(sqlite_ledger *s, sqlite3_stmt *st, int col, char *dst, size_t dst_size)
{
    const unsigned char *v = sqlite3_column_text(st, col);
    int n = sqlite3_column_bytes(st, col);
    if (v == NULL) {
        if (sqlite3_column_type(st, col) != SQLITE_NULL)
            return db_fail(s, "column_text", SQLITE_NOMEM);
        dst[0] = '\0';
        return FERRY_OK;
    }
    if (n < 0 || (size_t)n >= dst_size) {
        log_error("ledger.corrupt", "backend=sqlite col=%d len=%d", col, n);
        return FERRY_ERR_DB;
    }
    memcpy(dst, v, (size_t)n);
    dst[n] = '\0';
    return FERRY_OK;
}

static void col_opt_u64(sqlite3_stmt *st, int col, ledger_opt_u64 *out)
{
    sqlite3_int64 v = sqlite3_column_int64(st, col);
    out->set = sqlite3_column_type(st, col) != SQLITE_NULL && v >= 0;
    out->v = out->set ? (uint64_t)v : 0;
}

static void col_opt_i64(sqlite3_stmt *st, int col, ledger_opt_i64 *out)
{
    out->set = sqlite3_column_type(st, col) != SQLITE_NULL;
    out->v = out->set ? sqlite3_column_int64(st, col) : 0;
}

static void col_opt_f64(sqlite3_stmt *st, int col, ledger_opt_f64 *out)
{
    out->set = sqlite3_column_type(st, col) != SQLITE_NULL;
    out->v = out->set ? sqlite3_column_double(st, col) : 0.0;
}

static ferry_err state_parse(const char *s, ledger_grant_state *out)
{
    for (int i = LEDGER_GRANT_ISSUED; i <= LEDGER_GRANT_REVOKED; i++) {
        if (strcmp(s, ledger_grant_state_str((ledger_grant_state)i)) == 0) {
            *out = (ledger_grant_state)i;
            return FERRY_OK;
        }
    }
    log_error("ledger.corrupt", "backend=sqlite what=grant_state");
    return FERRY_ERR_DB;
}

static ferry_err pragma_int(sqlite_ledger *s, const char *sql, int64_t *out)
{
    sqlite3_stmt *st = NULL;
    ferry_err err = FERRY_OK;
    int rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);
    if (rc != SQLITE_OK) {
        err = db_fail(s, "pragma", rc);
        goto out;
    }
    rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        err = db_fail(s, "pragma", rc);
        goto out;
    }
    *out = sqlite3_column_int64(st, 0);
out:
    sqlite3_finalize(st);
    return err;
}

static ferry_err exec_sql(sqlite_ledger *s, const char *sql, const char *op)
{
    int rc = sqlite3_exec(s->db, sql, NULL, NULL, NULL);
    return rc == SQLITE_OK ? FERRY_OK : db_fail(s, op, rc);
}

/* Applies every migration the database lacks, one transaction each. */
static ferry_err migrate(sqlite_ledger *s)
{
    ferry_err err = FERRY_OK;
    for (;;) {
        int64_t version = 0;
        char set_version[64];
        if ((err = exec_sql(s, "BEGIN IMMEDIATE", "migrate.begin")) != FERRY_OK)
            return err;
        /* Re-read inside the write lock: another process may have migrated
         * while we waited for it. */
        if ((err = pragma_int(s, "PRAGMA user_version", &version)) != FERRY_OK)
            goto out;
        if (version > MIGRATION_COUNT || version < 0) {
            log_error("ledger.schema_too_new", "backend=sqlite version=%" PRId64 " known=%" PRId64,
                      version, MIGRATION_COUNT);
            err = FERRY_ERR_DB;
            goto out;
        }
        if (version == MIGRATION_COUNT) {
            err = exec_sql(s, "COMMIT", "migrate.commit");
            if (err)
                goto out;
            return FERRY_OK;
        }
        if ((err = exec_sql(s, migrations[version], "migrate.apply")) != FERRY_OK)
            goto out;
        snprintf(set_version, sizeof set_version, "PRAGMA user_version = %" PRId64, version + 1);
        if ((err = exec_sql(s, set_version, "migrate.version")) != FERRY_OK)
            goto out;
        if ((err = exec_sql(s, "COMMIT", "migrate.commit")) != FERRY_OK)
            goto out;
        log_info("ledger.migrated", "backend=sqlite version=%" PRId64, version + 1);
    }
out:
    rollback(s);
    return err;
}

static void sq_close(void *impl)
{
    sqlite_ledger *s = impl;
    if (s == NULL)
        return;
    for (int i = 0; i < ST__COUNT; i++)
        sqlite3_finalize(s->stmts[i]);
    sqlite3_close(s->db);
    free(s->device_cache);
    free(s);
}

static ferry_err sq_open(const char *location, void **impl)
{
    ferry_err err = FERRY_OK;
    sqlite_ledger *s = calloc(1, sizeof *s);
    int64_t wal = 0;
    sqlite3_stmt *st = NULL;
    int rc;

    if (s == NULL)
        return FERRY_ERR_NOMEM;
    /* NOMUTEX: a handle is used by one thread at a time (ledger.h), so
     * SQLite's per-connection mutex would only cost time. */
    rc = sqlite3_open_v2(location, &s->db,
                         SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX |
                             SQLITE_OPEN_EXRESCODE,
                         NULL);
    if (rc != SQLITE_OK) {
        err = db_fail(s, "open", rc);
        goto out;
    }
    sqlite3_extended_result_codes(s->db, 1);
    sqlite3_busy_handler(s->db, busy_wait, s);
    /* journal_mode answers with the mode now in force; anything but "wal"
     * (e.g. a file system without shared memory) is refused rather than
     * silently running with different durability and locking. */
    rc = sqlite3_prepare_v2(s->db, "PRAGMA journal_mode = WAL", -1, &st, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        err = db_fail(s, "journal_mode", rc);
        goto out;
    }
    {
        const char *mode = (const char *)sqlite3_column_text(st, 0);
        wal = mode != NULL && sqlite3_stricmp(mode, "wal") == 0;
    }
    /* Finalised now: an unfinished statement would keep the migration's
     * COMMIT from completing. */
    sqlite3_finalize(st);
    st = NULL;
    if (!wal) {
        log_error("ledger.no_wal", "backend=sqlite");
        err = FERRY_ERR_DB;
        goto out;
    }
    /* A checkpoint (copying the log back into the database, with an fsync)
     * every 10,000 pages instead of SQLite's 1,000: hot index pages are
     * written back once instead of ten times. Reads go through mmap and a
     * 16 MB page cache, so the open-grant and quota queries seldom hit the
     * file system. */
    if ((err = exec_sql(s,
                        "PRAGMA synchronous = FULL;"
                        " PRAGMA wal_autocheckpoint = 10000; PRAGMA mmap_size = 268435456;"
                        " PRAGMA cache_size = -16384;",
                        "pragmas")) != FERRY_OK)
        goto out;
    /* Foreign keys are enforced only after the migrations: a migration that
     * rebuilds a table (6) drops the old one while other tables refer to
     * its rows, which SQLite's table-rebuild procedure does with them off
     * (and the pragma cannot change inside the migration's transaction). */
    if ((err = migrate(s)) != FERRY_OK)
        goto out;
    if ((err = exec_sql(s, "PRAGMA foreign_keys = ON", "pragmas")) != FERRY_OK)
        goto out;
    *impl = s;
    s = NULL;
out:
    sqlite3_finalize(st);
    sq_close(s);
    return err;
}

static ferry_err sq_set_sync(void *impl, ledger_sync mode)
{
    /* In WAL mode NORMAL syncs only at checkpoints: the database stays
     * consistent after any crash, only the newest commits can be lost. */
    return exec_sql(impl,
                    mode == LEDGER_SYNC_NORMAL ? "PRAGMA synchronous = NORMAL"
                                               : "PRAGMA synchronous = FULL",
                    "synchronous");
}

static ferry_err sq_set_autocheckpoint(void *impl, bool on)
{
    /* The threshold set at open (10,000 pages), or none. */
    return exec_sql(impl, on ? "PRAGMA wal_autocheckpoint = 10000" : "PRAGMA wal_autocheckpoint = 0",
                    "wal_autocheckpoint");
}

static ferry_err sq_checkpoint(void *impl, uint64_t *log_frames, uint64_t *copied_frames)
{
    sqlite_ledger *s = impl;
    int log = 0, copied = 0;
    int rc = sqlite3_wal_checkpoint_v2(s->db, NULL, SQLITE_CHECKPOINT_PASSIVE, &log, &copied);
    /* BUSY: another connection is checkpointing; nothing to do this time. */
    if (rc != SQLITE_OK && rc != SQLITE_BUSY)
        return db_fail(s, "checkpoint", rc);
    *log_frames = log > 0 ? (uint64_t)log : 0;
    *copied_frames = copied > 0 ? (uint64_t)copied : 0;
    return FERRY_OK;
}

static ferry_err sq_schema_version(void *impl, int64_t *out)
{
    return pragma_int(impl, "PRAGMA user_version", out);
}

static void device_cache_clear(sqlite_ledger *s)
{
    if (s->device_cache != NULL)
        memset(s->device_cache, 0, DEVICE_CACHE_SLOTS * sizeof *s->device_cache);
}

static device_cache_entry *device_cache_slot(sqlite_ledger *s, const char *device)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)device; *p; p++)
        h = (h ^ *p) * 16777619u;
    return &s->device_cache[h % DEVICE_CACHE_SLOTS];
}

/* Drops the entry of one device (this connection wrote its row). */
static void device_cache_forget(sqlite_ledger *s, const char *device)
{
    if (s->device_cache == NULL)
        return;
    device_cache_entry *e = device_cache_slot(s, device);
    if (e->used && strcmp(e->dev.id, device) == 0)
        e->used = false;
}

/* The cache entry slot for device if the cache may be used now (inside a
 * write transaction, after this transaction's data_version check), else
 * NULL. A failed check only means the row is read from the database. */
static device_cache_entry *device_cache_usable(sqlite_ledger *s, const char *device)
{
    if (!s->in_write)
        return NULL;
    if (s->device_cache == NULL) {
        s->device_cache = calloc(DEVICE_CACHE_SLOTS, sizeof *s->device_cache);
        if (s->device_cache == NULL)
            return NULL;
    }
    if (!s->cache_checked) {
        sqlite3_stmt *st;
        if (stmt_get(s, ST_DATA_VERSION, &st) != FERRY_OK)
            return NULL;
        int rc = sqlite3_step(st);
        int64_t version = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
        sqlite3_reset(st);
        if (rc != SQLITE_ROW)
            return NULL;
        if (version != s->cache_data_version) {
            device_cache_clear(s);
            s->cache_data_version = version;
        }
        s->cache_checked = true;
    }
    return device_cache_slot(s, device);
}

static ferry_err sq_device_get(void *impl, const char *device, ledger_device *out)
{
    sqlite_ledger *s = impl;
    device_cache_entry *cached = device_cache_usable(s, device);
    if (cached != NULL && cached->used && strcmp(cached->dev.id, device) == 0) {
        if (!cached->found)
            return FERRY_ERR_NOT_FOUND;
        *out = cached->dev;
        return FERRY_OK;
    }
    sqlite3_stmt *st;
    ledger_device dev;
    ferry_err err = stmt_get(s, ST_DEVICE_GET, &st);
    int rc;
    if (err)
        return err;
    memset(&dev, 0, sizeof dev);
    bind_text(st, 1, device);
    rc = sqlite3_step(st);
    if (rc == SQLITE_DONE) {
        err = FERRY_ERR_NOT_FOUND;
        if (cached != NULL) {
            *cached = (device_cache_entry){.used = true, .found = false};
            snprintf(cached->dev.id, sizeof cached->dev.id, "%s", device);
        }
        goto out;
    }
    if (rc != SQLITE_ROW) {
        err = db_fail(s, "device_get", rc);
        goto out;
    }
    if ((err = col_text(s, st, 0, dev.id, sizeof dev.id)) != FERRY_OK)
        goto out;
    dev.disabled = sqlite3_column_int(st, 1) != 0;
    col_opt_u64(st, 2, &dev.max_size_bytes);
    dev.content_types_set = sqlite3_column_type(st, 3) != SQLITE_NULL;
    if ((err = col_text(s, st, 3, dev.content_types, sizeof dev.content_types)) != FERRY_OK)
        goto out;
    col_opt_i64(st, 4, &dev.expiry_min_s);
    col_opt_i64(st, 5, &dev.expiry_base_s);
    col_opt_i64(st, 6, &dev.expiry_max_s);
    col_opt_u64(st, 7, &dev.min_bandwidth_bps);
    col_opt_u64(st, 8, &dev.max_open_grants);
    col_opt_f64(st, 9, &dev.rate_per_s);
    col_opt_f64(st, 10, &dev.rate_burst);
    col_opt_u64(st, 11, &dev.daily_quota_bytes);
    dev.created_at = sqlite3_column_int64(st, 12);
    dev.updated_at = sqlite3_column_int64(st, 13);
    *out = dev;
    if (cached != NULL && strcmp(dev.id, device) == 0)
        *cached = (device_cache_entry){.used = true, .found = true, .dev = dev};
out:
    sqlite3_reset(st);
    return err;
}

static bool opt_u64_fits(const ledger_opt_u64 *v)
{
    return !v->set || v->v <= (uint64_t)INT64_MAX;
}

static ferry_err sq_device_upsert(void *impl, const ledger_device *dev, int64_t now)
{
    sqlite_ledger *s = impl;
    sqlite3_stmt *st;
    ferry_err err;
    if (!opt_u64_fits(&dev->max_size_bytes) || !opt_u64_fits(&dev->min_bandwidth_bps) ||
        !opt_u64_fits(&dev->max_open_grants) || !opt_u64_fits(&dev->daily_quota_bytes))
        return FERRY_ERR_RANGE;
    if ((err = stmt_get(s, ST_DEVICE_UPSERT, &st)) != FERRY_OK)
        return err;
    device_cache_forget(s, dev->id);
    bind_text(st, 1, dev->id);
    sqlite3_bind_int(st, 2, dev->disabled ? 1 : 0);
    bind_opt_u64(st, 3, &dev->max_size_bytes);
    bind_text(st, 4, dev->content_types_set ? dev->content_types : NULL);
    bind_opt_i64(st, 5, &dev->expiry_min_s);
    bind_opt_i64(st, 6, &dev->expiry_base_s);
    bind_opt_i64(st, 7, &dev->expiry_max_s);
    bind_opt_u64(st, 8, &dev->min_bandwidth_bps);
    bind_opt_u64(st, 9, &dev->max_open_grants);
    bind_opt_f64(st, 10, &dev->rate_per_s);
    bind_opt_f64(st, 11, &dev->rate_burst);
    bind_opt_u64(st, 12, &dev->daily_quota_bytes);
    sqlite3_bind_int64(st, 13, now);
    return stmt_done(s, st, "device_upsert");
}

/* Runs a one-row, one-column count/sum query that is already bound. */
static ferry_err scalar_u64(sqlite_ledger *s, sqlite3_stmt *st, const char *op, uint64_t *out)
{
    ferry_err err = FERRY_OK;
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        err = db_fail(s, op, rc);
        goto out;
    }
    sqlite3_int64 v = sqlite3_column_int64(st, 0);
    if (v < 0) {
        err = FERRY_ERR_DB;
        goto out;
    }
    *out = (uint64_t)v;
out:
    sqlite3_reset(st);
    return err;
}

static ferry_err sq_open_grants(void *impl, const char *device, int64_t now, uint64_t *out)
{
    sqlite_ledger *s = impl;
    sqlite3_stmt *st;
    ferry_err err = stmt_get(s, ST_OPEN_COUNT, &st);
    if (err)
        return err;
    bind_text(st, 1, device);
    sqlite3_bind_int64(st, 2, now);
    return scalar_u64(s, st, "open_grants", out);
}

static ferry_err sq_bytes_since(void *impl, const char *device, int64_t day_start, int64_t now,
                                uint64_t *out)
{
    sqlite_ledger *s = impl;
    sqlite3_stmt *st;
    ferry_err err = stmt_get(s, ST_BYTES_SINCE, &st);
    if (err)
        return err;
    bind_text(st, 1, device);
    sqlite3_bind_int64(st, 2, day_start);
    sqlite3_bind_int64(st, 3, now);
    return scalar_u64(s, st, "bytes_since", out);
}

static ferry_err audit_insert(sqlite_ledger *s, int64_t at, const char *device,
                              const char *request_id, const char *grant_id, const char *outcome,
                              const char *code, const char *detail)
{
    sqlite3_stmt *st;
    ferry_err err = stmt_get(s, ST_AUDIT_INSERT, &st);
    if (err)
        return err;
    sqlite3_bind_int64(st, 1, at);
    bind_text(st, 2, device);
    bind_text_or_null(st, 3, request_id);
    bind_text_or_null(st, 4, grant_id);
    bind_text(st, 5, outcome);
    bind_text(st, 6, code);
    bind_text(st, 7, detail);
    return stmt_done(s, st, "audit_insert");
}

/* The body of a grant insert, run inside a BEGIN IMMEDIATE transaction the
 * caller owns: checks the limits, then writes the device row and the grant
 * (whose row is the record of its issue). *verdict is set when FERRY_OK is returned. On
 * FERRY_ERR_EXISTS only the failed INSERT statement was undone (SQLite
 * aborts the statement, not the transaction), so a batch can go on. */
static ferry_err insert_locked(sqlite_ledger *s, const ledger_grant *g, const ledger_limits *limits,
                               bool device_exists, ledger_verdict *verdict)
{
    sqlite3_stmt *st;
    ferry_err err;

    /* The caller holds the database's write lock: the counts below cannot
     * change until COMMIT or ROLLBACK. */
    if (limits->max_open_grants > 0) {
        uint64_t open = 0;
        if ((err = sq_open_grants(s, g->device, g->issued_at, &open)) != FERRY_OK)
            return err;
        if (open >= limits->max_open_grants) {
            *verdict = LEDGER_OVER_OPEN_GRANTS;
            return FERRY_OK;
        }
    }
    if (limits->daily_quota_bytes > 0) {
        uint64_t used = 0;
        if ((err = sq_bytes_since(s, g->device, limits->day_start, g->issued_at, &used)) !=
            FERRY_OK)
            return err;
        /* Written as a subtraction so that no sum can overflow. */
        if (g->size > limits->daily_quota_bytes || used > limits->daily_quota_bytes - g->size) {
            *verdict = LEDGER_OVER_QUOTA;
            return FERRY_OK;
        }
    }
    /* The caller may know the row is there (ledger_insert.device_exists),
     * which saves a statement per grant; the foreign key still checks. */
    if (!device_exists) {
        if ((err = stmt_get(s, ST_DEVICE_ENSURE, &st)) != FERRY_OK)
            return err;
        device_cache_forget(s, g->device);
        bind_text(st, 1, g->device);
        sqlite3_bind_int64(st, 2, g->issued_at);
        if ((err = stmt_done(s, st, "device_ensure")) != FERRY_OK)
            return err;
    }

    if ((err = stmt_get(s, ST_GRANT_INSERT, &st)) != FERRY_OK)
        return err;
    bind_text(st, 1, g->id);
    bind_text(st, 2, g->device);
    bind_text(st, 3, g->request_id);
    bind_text(st, 4, g->key);
    bind_text(st, 5, g->bucket);
    bind_text(st, 6, g->method);
    sqlite3_bind_int64(st, 7, (sqlite3_int64)g->size);
    bind_text(st, 8, g->content_type);
    bind_text_or_null(st, 9, g->sha256);
    sqlite3_bind_int64(st, 10, g->issued_at);
    sqlite3_bind_int64(st, 11, g->expires_at);
    if ((err = stmt_done(s, st, "grant_insert")) != FERRY_OK)
        return err;
    *verdict = LEDGER_INSERTED;
    return FERRY_OK;
}

/* A call's own write transaction, unless the caller holds one
 * (ledger_write_begin): then the call's writes join it, and committing or
 * rolling back is the caller's. */
static ferry_err call_begin(sqlite_ledger *s, const char *op)
{
    return s->in_write ? FERRY_OK : exec_simple(s, ST_BEGIN_IMMEDIATE, op);
}

static ferry_err call_commit(sqlite_ledger *s, const char *op)
{
    return s->in_write ? FERRY_OK : exec_simple(s, ST_COMMIT, op);
}

static void call_rollback(sqlite_ledger *s)
{
    if (!s->in_write)
        rollback(s);
}

static ferry_err sq_grant_insert(void *impl, const ledger_grant *g, const ledger_limits *limits,
                                 ledger_verdict *verdict)
{
    sqlite_ledger *s = impl;
    ferry_err err;
    ledger_verdict v = LEDGER_INSERTED;

    if ((err = call_begin(s, "grant_insert.begin")) != FERRY_OK)
        return err;
    if ((err = insert_locked(s, g, limits, false, &v)) != FERRY_OK)
        goto out;
    if (v != LEDGER_INSERTED) {
        /* Nothing was written; ROLLBACK just ends the transaction. */
        call_rollback(s);
        *verdict = v;
        return FERRY_OK;
    }
    if ((err = call_commit(s, "grant_insert.commit")) != FERRY_OK)
        goto out;
    *verdict = v;
    return FERRY_OK;
out:
    call_rollback(s);
    return err;
}

static ferry_err sq_grant_insert_batch(void *impl, ledger_insert *items, size_t n)
{
    static const ledger_limits no_limits = {0, 0, 0};
    sqlite_ledger *s = impl;
    ferry_err err;

    if ((err = call_begin(s, "grant_insert_batch.begin")) != FERRY_OK)
        return err;
    for (size_t i = 0; i < n; i++) {
        ledger_insert *it = &items[i];
        if (it->err != FERRY_OK)
            continue;
        /* Only inside the caller's transaction can its word hold. */
        bool device_exists = it->device_exists && s->in_write;
        err = insert_locked(s, it->grant, it->limits != NULL ? it->limits : &no_limits,
                            device_exists, &it->verdict);
        if (err == FERRY_ERR_EXISTS) {
            it->err = err;
            err = FERRY_OK;
        }
        if (err)
            goto out;
    }
    if ((err = call_commit(s, "grant_insert_batch.commit")) != FERRY_OK)
        goto out;
    return FERRY_OK;
out:
    call_rollback(s);
    return err;
}

static ferry_err sq_write_begin(void *impl)
{
    sqlite_ledger *s = impl;
    ferry_err err = exec_simple(s, ST_BEGIN_IMMEDIATE, "write.begin");
    if (err == FERRY_OK)
        s->in_write = true;
    s->cache_checked = false;
    return err;
}

static ferry_err sq_write_commit(void *impl)
{
    sqlite_ledger *s = impl;
    ferry_err err = exec_simple(s, ST_COMMIT, "write.commit");
    if (err) {
        rollback(s);
        device_cache_clear(s);
    }
    s->in_write = false;
    s->cache_checked = false;
    return err;
}

static void sq_write_rollback(void *impl)
{
    sqlite_ledger *s = impl;
    rollback(s);
    device_cache_clear(s); /* it may hold rows read after our own writes */
    s->in_write = false;
    s->cache_checked = false;
}

static ferry_err sq_audit_refusal(void *impl, const char *device, const char *request_id,
                                  const char *code, const char *detail, int64_t now)
{
    return audit_insert(impl, now, device, request_id, NULL, "refused", code, detail);
}

static ferry_err sq_grant_get(void *impl, const char *grant_id, ledger_grant *out)
{
    sqlite_ledger *s = impl;
    sqlite3_stmt *st;
    ledger_grant g;
    char state[16];
    sqlite3_int64 size;
    ferry_err err = stmt_get(s, ST_GRANT_GET, &st);
    int rc;
    if (err)
        return err;
    memset(&g, 0, sizeof g);
    bind_text(st, 1, grant_id);
    rc = sqlite3_step(st);
    if (rc == SQLITE_DONE) {
        err = FERRY_ERR_NOT_FOUND;
        goto out;
    }
    if (rc != SQLITE_ROW) {
        err = db_fail(s, "grant_get", rc);
        goto out;
    }
    if ((err = col_text(s, st, 0, g.id, sizeof g.id)) != FERRY_OK ||
        (err = col_text(s, st, 1, g.device, sizeof g.device)) != FERRY_OK ||
        (err = col_text(s, st, 2, g.request_id, sizeof g.request_id)) != FERRY_OK ||
        (err = col_text(s, st, 3, g.key, sizeof g.key)) != FERRY_OK ||
        (err = col_text(s, st, 4, g.bucket, sizeof g.bucket)) != FERRY_OK ||
        (err = col_text(s, st, 5, g.method, sizeof g.method)) != FERRY_OK ||
        (err = col_text(s, st, 7, g.content_type, sizeof g.content_type)) != FERRY_OK ||
        (err = col_text(s, st, 8, g.sha256, sizeof g.sha256)) != FERRY_OK ||
        (err = col_text(s, st, 9, state, sizeof state)) != FERRY_OK ||
        (err = state_parse(state, &g.state)) != FERRY_OK)
        goto out;
    size = sqlite3_column_int64(st, 6);
    if (size < 0) {
        err = FERRY_ERR_DB;
        goto out;
    }
    g.size = (uint64_t)size;
    g.issued_at = sqlite3_column_int64(st, 10);
    g.expires_at = sqlite3_column_int64(st, 11);
    g.used_at = sqlite3_column_int64(st, 12);
    g.revoked_at = sqlite3_column_int64(st, 13);
    *out = g;
out:
    sqlite3_reset(st);
    return err;
}

/* Why a compare-and-set on grant_id changed nothing: unknown, expired, or
 * no longer issued. */
static ferry_err cas_failure(sqlite_ledger *s, const char *grant_id, int64_t now)
{
    sqlite3_stmt *st;
    char state[16];
    ferry_err err = stmt_get(s, ST_GRANT_STATE, &st);
    int rc;
    if (err)
        return err;
    bind_text(st, 1, grant_id);
    rc = sqlite3_step(st);
    if (rc == SQLITE_DONE) {
        err = FERRY_ERR_NOT_FOUND;
        goto out;
    }
    if (rc != SQLITE_ROW) {
        err = db_fail(s, "grant_state", rc);
        goto out;
    }
    if ((err = col_text(s, st, 0, state, sizeof state)) != FERRY_OK)
        goto out;
    if (strcmp(state, "expired") == 0 ||
        (strcmp(state, "issued") == 0 && sqlite3_column_int64(st, 1) <= now))
        err = FERRY_ERR_EXPIRED;
    else
        err = FERRY_ERR_CONFLICT;
out:
    sqlite3_reset(st);
    return err;
}

static ferry_err sq_grant_mark_used(void *impl, const char *grant_id, int64_t now)
{
    sqlite_ledger *s = impl;
    sqlite3_stmt *st;
    ferry_err err = stmt_get(s, ST_MARK_USED, &st);
    if (err)
        return err;
    bind_text(st, 1, grant_id);
    sqlite3_bind_int64(st, 2, now);
    if ((err = stmt_done(s, st, "mark_used")) != FERRY_OK)
        return err;
    /* One UPDATE is atomic: of two connections racing here, SQLite
     * serialises the writes and the second finds the state already 'used'. */
    if (sqlite3_changes(s->db) == 1)
        return FERRY_OK;
    return cas_failure(s, grant_id, now);
}

static ferry_err sq_grant_revoke(void *impl, const char *grant_id, int64_t now)
{
    sqlite_ledger *s = impl;
    sqlite3_stmt *st;
    ferry_err err;
    char device[LEDGER_DEVICE_MAX + 1];
    char request_id[LEDGER_REQUEST_ID_MAX + 1];

    if ((err = exec_simple(s, ST_BEGIN_IMMEDIATE, "revoke.begin")) != FERRY_OK)
        return err;
    if ((err = stmt_get(s, ST_REVOKE, &st)) != FERRY_OK)
        goto out;
    bind_text(st, 1, grant_id);
    sqlite3_bind_int64(st, 2, now);
    if ((err = stmt_done(s, st, "revoke")) != FERRY_OK)
        goto out;
    if (sqlite3_changes(s->db) != 1) {
        err = cas_failure(s, grant_id, now);
        if (err == FERRY_ERR_EXPIRED)
            err = FERRY_ERR_CONFLICT; /* only issued grants can be revoked */
        if (err == FERRY_OK)
            err = FERRY_ERR_INTERNAL;
        goto out;
    }
    /* The audit row names the device and request of the grant. */
    if ((err = stmt_get(s, ST_GRANT_STATE, &st)) != FERRY_OK)
        goto out;
    bind_text(st, 1, grant_id);
    if (sqlite3_step(st) != SQLITE_ROW) {
        sqlite3_reset(st);
        err = FERRY_ERR_DB;
        goto out;
    }
    err = col_text(s, st, 2, device, sizeof device);
    if (err == FERRY_OK)
        err = col_text(s, st, 3, request_id, sizeof request_id);
    sqlite3_reset(st);
    if (err)
        goto out;
    if ((err = audit_insert(s, now, device, request_id, grant_id, "revoked", "Revoked", "")) !=
        FERRY_OK)
        goto out;
    if ((err = exec_simple(s, ST_COMMIT, "revoke.commit")) != FERRY_OK)
        goto out;
    return FERRY_OK;
out:
    rollback(s);
    return err;
}

static ferry_err sq_grants_expire(void *impl, int64_t now, uint64_t *count)
{
    sqlite_ledger *s = impl;
    sqlite3_stmt *st;
    ferry_err err = stmt_get(s, ST_EXPIRE, &st);
    if (err)
        return err;
    sqlite3_bind_int64(st, 1, now);
    if ((err = stmt_done(s, st, "expire")) != FERRY_OK)
        return err;
    *count = (uint64_t)sqlite3_changes64(s->db);
    return FERRY_OK;
}

/* Steps st (columns: seq, at, device, request_id, grant_id, outcome, code,
 * detail) and calls fn for each row; resets st. */
static ferry_err audit_rows(sqlite_ledger *s, sqlite3_stmt *st, const char *op,
                            int (*fn)(const ledger_audit_row *row, void *arg), void *arg)
{
    ferry_err err = FERRY_OK;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        ledger_audit_row row;
        memset(&row, 0, sizeof row);
        row.seq = sqlite3_column_int64(st, 0);
        row.at = sqlite3_column_int64(st, 1);
        if ((err = col_text(s, st, 2, row.device, sizeof row.device)) != FERRY_OK ||
            (err = col_text(s, st, 3, row.request_id, sizeof row.request_id)) != FERRY_OK ||
            (err = col_text(s, st, 4, row.grant_id, sizeof row.grant_id)) != FERRY_OK ||
            (err = col_text(s, st, 5, row.outcome, sizeof row.outcome)) != FERRY_OK ||
            (err = col_text(s, st, 6, row.code, sizeof row.code)) != FERRY_OK ||
            (err = col_text(s, st, 7, row.detail, sizeof row.detail)) != FERRY_OK)
            goto out;
        if (fn(&row, arg) != 0)
            goto out;
    }
    if (rc != SQLITE_DONE)
        err = db_fail(s, op, rc);
out:
    sqlite3_reset(st);
    return err;
}

static sqlite3_int64 limit_i64(size_t limit)
{
    return limit > (size_t)INT64_MAX ? INT64_MAX : (sqlite3_int64)limit;
}

static ferry_err sq_audit_list(void *impl, const char *device, int64_t after_seq, size_t limit,
                               int (*fn)(const ledger_audit_row *row, void *arg), void *arg)
{
    sqlite_ledger *s = impl;
    sqlite3_stmt *st;
    ferry_err err = stmt_get(s, device != NULL ? ST_AUDIT_LIST_DEVICE : ST_AUDIT_LIST_ALL, &st);
    if (err)
        return err;
    sqlite3_bind_int64(st, 1, after_seq);
    sqlite3_bind_int64(st, 2, limit_i64(limit));
    if (device != NULL)
        bind_text(st, 3, device);
    return audit_rows(s, st, "audit_list", fn, arg);
}

static ferry_err sq_audit_log(void *impl, const char *device, int64_t since, size_t limit,
                              int (*fn)(const ledger_audit_row *row, void *arg), void *arg)
{
    sqlite_ledger *s = impl;
    sqlite3_stmt *st;
    ferry_err err = stmt_get(s, ST_AUDIT_LOG, &st);
    if (err)
        return err;
    bind_text(st, 1, device);
    sqlite3_bind_int64(st, 2, since);
    sqlite3_bind_int64(st, 3, limit_i64(limit));
    return audit_rows(s, st, "audit_log", fn, arg);
}

/* Reads the current file id of (bucket, key) into out ("" when none). */
static ferry_err object_file_of(sqlite_ledger *s, const char *bucket, const char *key, char *out)
{
    sqlite3_stmt *st;
    ferry_err err = stmt_get(s, ST_OBJECT_FILE_OF, &st);
    int rc;
    if (err)
        return err;
    bind_text(st, 1, bucket);
    bind_text(st, 2, key);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        err = col_text(s, st, 0, out, LEDGER_FILE_ID_MAX + 1);
    else if (rc == SQLITE_DONE)
        out[0] = '\0';
    else
        err = db_fail(s, "object_file_of", rc);
    sqlite3_reset(st);
    return err;
}

/* The outbox half of an object put: the event (its device, request id and
 * method read from the grant, already consumed in this transaction) and
 * one pending delivery per active target, due at once. */
static ferry_err event_insert_locked(sqlite_ledger *s, const ledger_object *obj)
{
    sqlite3_stmt *st;
    ferry_err err;
    int64_t created_ms = obj->created_at * 1000;

    if ((err = stmt_get(s, ST_EVENT_INSERT, &st)) != FERRY_OK)
        return err;
    bind_text(st, 1, obj->bucket);
    bind_text(st, 2, obj->key);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)obj->size);
    bind_text(st, 4, obj->etag);
    bind_text(st, 5, obj->sha256);
    bind_text(st, 6, obj->content_type);
    sqlite3_bind_int64(st, 7, created_ms);
    bind_text(st, 8, obj->grant_id);
    bind_text(st, 9, obj->source_ip);
    bind_text(st, 10, obj->store_request_id);
    if ((err = stmt_done(s, st, "event.insert")) != FERRY_OK)
        return err == FERRY_ERR_EXISTS ? FERRY_ERR_DB : err;
    if (sqlite3_changes(s->db) != 1)
        return FERRY_ERR_INTERNAL; /* the grant was consumed just above */
    sqlite3_int64 seq = sqlite3_last_insert_rowid(s->db);
    if ((err = stmt_get(s, ST_DELIVERY_FANOUT, &st)) != FERRY_OK)
        return err;
    sqlite3_bind_int64(st, 1, seq);
    sqlite3_bind_int64(st, 2, created_ms);
    return stmt_done(s, st, "event.fanout");
}

/* The body of an object put, inside a write transaction the caller owns:
 * the grant's compare-and-set (if any), the old file id, the new row. On a
 * grant refusal nothing was written (the UPDATE changed no row), so a batch
 * can go on. */
static ferry_err object_put_locked(sqlite_ledger *s, const ledger_object *obj, int64_t now,
                                   char *replaced_file_id)
{
    sqlite3_stmt *st;
    ferry_err err;
    char old[LEDGER_FILE_ID_MAX + 1];

    if (obj->grant_id[0] != '\0') {
        if ((err = stmt_get(s, ST_MARK_USED, &st)) != FERRY_OK)
            return err;
        bind_text(st, 1, obj->grant_id);
        sqlite3_bind_int64(st, 2, now);
        if ((err = stmt_done(s, st, "object_put.mark_used")) != FERRY_OK)
            return err;
        if (sqlite3_changes(s->db) != 1) {
            err = cas_failure(s, obj->grant_id, now);
            return err == FERRY_OK ? FERRY_ERR_INTERNAL : err;
        }
    }
    if ((err = object_file_of(s, obj->bucket, obj->key, old)) != FERRY_OK)
        return err;
    if ((err = stmt_get(s, ST_OBJECT_UPSERT, &st)) != FERRY_OK)
        return err;
    bind_text(st, 1, obj->bucket);
    bind_text(st, 2, obj->key);
    bind_text(st, 3, obj->file_id);
    sqlite3_bind_int64(st, 4, (sqlite3_int64)obj->size);
    bind_text(st, 5, obj->etag);
    bind_text(st, 6, obj->sha256);
    bind_text(st, 7, obj->content_type);
    bind_text(st, 8, obj->meta);
    bind_text_or_null(st, 9, obj->device);
    bind_text_or_null(st, 10, obj->grant_id);
    sqlite3_bind_int64(st, 11, obj->created_at);
    if ((err = stmt_done(s, st, "object_put.upsert")) != FERRY_OK)
        return err;
    if (obj->grant_id[0] != '\0' && (err = event_insert_locked(s, obj)) != FERRY_OK)
        return err;
    memcpy(replaced_file_id, old, sizeof old);
    return FERRY_OK;
}

static bool grant_refusal(ferry_err err)
{
    return err == FERRY_ERR_CONFLICT || err == FERRY_ERR_EXPIRED || err == FERRY_ERR_NOT_FOUND;
}

static ferry_err sq_object_put(void *impl, const ledger_object *obj, int64_t now,
                               char *replaced_file_id)
{
    sqlite_ledger *s = impl;
    ferry_err err;
    char old[LEDGER_FILE_ID_MAX + 1];

    /* The write lock first: the grant's compare-and-set, the old file id
     * and the new row are then one atomic step. */
    if ((err = exec_simple(s, ST_BEGIN_IMMEDIATE, "object_put.begin")) != FERRY_OK)
        return err;
    if ((err = object_put_locked(s, obj, now, old)) != FERRY_OK)
        goto out;
    if ((err = exec_simple(s, ST_COMMIT, "object_put.commit")) != FERRY_OK)
        goto out;
    memcpy(replaced_file_id, old, sizeof old);
    return FERRY_OK;
out:
    rollback(s);
    return err;
}

static ferry_err sq_object_put_batch(void *impl, ledger_object_put_item *items, size_t n)
{
    sqlite_ledger *s = impl;
    ferry_err err;

    if ((err = exec_simple(s, ST_BEGIN_IMMEDIATE, "object_put_batch.begin")) != FERRY_OK)
        return err;
    for (size_t i = 0; i < n; i++) {
        ledger_object_put_item *it = &items[i];
        if (it->err != FERRY_OK)
            continue;
        err = object_put_locked(s, it->obj, it->now, it->replaced_file_id);
        if (grant_refusal(err)) {
            it->err = err;
            err = FERRY_OK;
        }
        if (err)
            goto out;
    }
    if ((err = exec_simple(s, ST_COMMIT, "object_put_batch.commit")) != FERRY_OK)
        goto out;
    return FERRY_OK;
out:
    rollback(s);
    return err;
}

/* Fills out from a row of ST_OBJECT_GET / ST_OBJECT_LIST. */
static ferry_err object_row(sqlite_ledger *s, sqlite3_stmt *st, ledger_object *o)
{
    ferry_err err;
    sqlite3_int64 size;
    memset(o, 0, sizeof *o);
    if ((err = col_text(s, st, 0, o->bucket, sizeof o->bucket)) != FERRY_OK ||
        (err = col_text(s, st, 1, o->key, sizeof o->key)) != FERRY_OK ||
        (err = col_text(s, st, 2, o->file_id, sizeof o->file_id)) != FERRY_OK ||
        (err = col_text(s, st, 4, o->etag, sizeof o->etag)) != FERRY_OK ||
        (err = col_text(s, st, 5, o->sha256, sizeof o->sha256)) != FERRY_OK ||
        (err = col_text(s, st, 6, o->content_type, sizeof o->content_type)) != FERRY_OK ||
        (err = col_text(s, st, 7, o->meta, sizeof o->meta)) != FERRY_OK ||
        (err = col_text(s, st, 8, o->device, sizeof o->device)) != FERRY_OK ||
        (err = col_text(s, st, 9, o->grant_id, sizeof o->grant_id)) != FERRY_OK)
        return err;
    size = sqlite3_column_int64(st, 3);
    if (size < 0)
        return FERRY_ERR_DB;
    o->size = (uint64_t)size;
    o->created_at = sqlite3_column_int64(st, 10);
    return FERRY_OK;
}

static ferry_err sq_object_get(void *impl, const char *bucket, const char *key, ledger_object *out)
{
    sqlite_ledger *s = impl;
    sqlite3_stmt *st;
    ferry_err err = stmt_get(s, ST_OBJECT_GET, &st);
    int rc;
    if (err)
        return err;
    bind_text(st, 1, bucket);
    bind_text(st, 2, key);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        err = object_row(s, st, out);
    else if (rc == SQLITE_DONE)
        err = FERRY_ERR_NOT_FOUND;
    else
        err = db_fail(s, "object_get", rc);
    sqlite3_reset(st);
    return err;
}

static ferry_err sq_object_delete(void *impl, const char *bucket, const char *key,
                                  char *file_id_out)
{
    sqlite_ledger *s = impl;
    sqlite3_stmt *st;
    ferry_err err;
    char old[LEDGER_FILE_ID_MAX + 1];

    if ((err = exec_simple(s, ST_BEGIN_IMMEDIATE, "object_delete.begin")) != FERRY_OK)
        return err;
    if ((err = object_file_of(s, bucket, key, old)) != FERRY_OK)
        goto out;
    if (old[0] == '\0') {
        err = FERRY_ERR_NOT_FOUND;
        goto out;
    }
    if ((err = stmt_get(s, ST_OBJECT_DELETE, &st)) != FERRY_OK)
        goto out;
    bind_text(st, 1, bucket);
    bind_text(st, 2, key);
    if ((err = stmt_done(s, st, "object_delete")) != FERRY_OK)
        goto out;
    if ((err = exec_simple(s, ST_COMMIT, "object_delete.commit")) != FERRY_OK)
        goto out;
    memcpy(file_id_out, old, sizeof old);
    return FERRY_OK;
out:
    rollback(s);
    return err;
}

static ferry_err sq_object_list(void *impl, const char *bucket, const char *prefix,
                                const char *start_after, size_t limit,
                                int (*fn)(const ledger_object *obj, void *arg), void *arg)
{
    sqlite_ledger *s = impl;
    sqlite3_stmt *st;
    ferry_err err = stmt_get(s, ST_OBJECT_LIST, &st);
    int rc;
    if (err)
        return err;
    bind_text(st, 1, bucket);
    /* start_after may hold bytes that are not UTF-8 (a prefix followed by
     * 0xFF skips everything under it). It is still bound as TEXT: SQLite
     * keeps text bytes as given and BINARY collation is memcmp, whereas a
     * BLOB would sort after every TEXT value whatever its bytes. */
    sqlite3_bind_text(st, 2, start_after, (int)strlen(start_after), SQLITE_STATIC);
    bind_text(st, 3, prefix);
    sqlite3_bind_int64(st, 4, (sqlite3_int64)strlen(prefix));
    sqlite3_bind_int64(st, 5, limit > (size_t)INT64_MAX ? INT64_MAX : (sqlite3_int64)limit);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        ledger_object o;
        if ((err = object_row(s, st, &o)) != FERRY_OK)
            goto out;
        if (fn(&o, arg) != 0)
            goto out;
    }
    if (rc != SQLITE_DONE)
        err = db_fail(s, "object_list", rc);
out:
    sqlite3_reset(st);
    return err;
}

static ferry_err sq_object_file_known(void *impl, const char *file_id, bool *known)
{
    sqlite_ledger *s = impl;
    sqlite3_stmt *st;
    ferry_err err = stmt_get(s, ST_OBJECT_FILE_KNOWN, &st);
    int rc;
    if (err)
        return err;
    bind_text(st, 1, file_id);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        *known = true;
    else if (rc == SQLITE_DONE)
        *known = false;
    else
        err = db_fail(s, "object_file_known", rc);
    sqlite3_reset(st);
    return err;
}

static ferry_err sq_object_file_walk(void *impl, const char *prefix,
                                     int (*fn)(const char *file_id, uint64_t size, void *arg),
                                     void *arg)
{
    sqlite_ledger *s = impl;
    sqlite3_stmt *st;
    ferry_err err = stmt_get(s, ST_OBJECT_FILE_WALK, &st);
    int rc;
    if (err)
        return err;
    bind_text(st, 1, prefix);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        char id[LEDGER_FILE_ID_MAX + 1];
        sqlite3_int64 size = sqlite3_column_int64(st, 1);
        if ((err = col_text(s, st, 0, id, sizeof id)) != FERRY_OK)
            goto out;
        if (size < 0) {
            err = FERRY_ERR_DB;
            goto out;
        }
        if (fn(id, (uint64_t)size, arg) != 0)
            goto out;
    }
    if (rc != SQLITE_DONE)
        err = db_fail(s, "object_file_walk", rc);
out:
    sqlite3_reset(st);
    return err;
}

/* ---------------------------------------------------------------------- */
/* Multipart uploads                                                        */

/* The part files a transaction stops naming, handed to the caller's
 * callback only after the commit (a rolled-back transaction names them
 * still, and they must stay). */
typedef struct file_list {
    char (*ids)[LEDGER_FILE_ID_MAX + 1];
    size_t n, cap;
} file_list;

static void file_list_cleanup(file_list *fl)
{
    free(fl->ids);
    fl->ids = NULL;
    fl->n = fl->cap = 0;
}

/* Appends column 0 of each row of statement id (its ?1 bound to key, or
 * nothing bound when key is NULL) to fl. */
static ferry_err ids_locked(sqlite_ledger *s, enum stmt_id id, const char *key, file_list *fl)
{
    sqlite3_stmt *st;
    ferry_err err = stmt_get(s, id, &st);
    int rc;
    if (err)
        return err;
    if (key != NULL)
        bind_text(st, 1, key);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (fl->n == fl->cap) {
            size_t cap = fl->cap == 0 ? 16 : fl->cap * 2;
            void *grown = realloc(fl->ids, cap * sizeof *fl->ids);
            if (grown == NULL) {
                err = FERRY_ERR_NOMEM;
                goto out;
            }
            fl->ids = grown;
            fl->cap = cap;
        }
        if ((err = col_text(s, st, 0, fl->ids[fl->n], sizeof fl->ids[fl->n])) != FERRY_OK)
            goto out;
        fl->n++;
    }
    if (rc != SQLITE_DONE)
        err = db_fail(s, "ids_locked", rc);
out:
    sqlite3_reset(st);
    return err;
}

/* Appends the file ids of upload_id's parts to fl. */
static ferry_err part_files_locked(sqlite_ledger *s, const char *upload_id, file_list *fl)
{
    return ids_locked(s, ST_PART_FILES, upload_id, fl);
}

static ferry_err upload_exists_locked(sqlite_ledger *s, const char *upload_id)
{
    sqlite3_stmt *st;
    ferry_err err = stmt_get(s, ST_UPLOAD_EXISTS, &st);
    int rc;
    if (err)
        return err;
    bind_text(st, 1, upload_id);
    rc = sqlite3_step(st);
    if (rc == SQLITE_DONE)
        err = FERRY_ERR_NOT_FOUND;
    else if (rc != SQLITE_ROW)
        err = db_fail(s, "upload.exists", rc);
    sqlite3_reset(st);
    return err;
}

/* Deletes the upload and its parts (their files collected into fl), inside
 * the caller's transaction. */
static ferry_err upload_delete_locked(sqlite_ledger *s, const char *upload_id, file_list *fl)
{
    sqlite3_stmt *st;
    ferry_err err;
    if ((err = part_files_locked(s, upload_id, fl)) != FERRY_OK)
        return err;
    if ((err = stmt_get(s, ST_PARTS_DELETE, &st)) != FERRY_OK)
        return err;
    bind_text(st, 1, upload_id);
    if ((err = stmt_done(s, st, "upload.parts_delete")) != FERRY_OK)
        return err;
    if ((err = stmt_get(s, ST_UPLOAD_DELETE, &st)) != FERRY_OK)
        return err;
    bind_text(st, 1, upload_id);
    return stmt_done(s, st, "upload.delete");
}

static void file_list_give(const file_list *fl, ledger_file_fn fn, void *arg)
{
    if (fn == NULL)
        return;
    for (size_t i = 0; i < fl->n; i++)
        fn(fl->ids[i], arg);
}

static ferry_err sq_upload_create(void *impl, const ledger_upload *u, size_t max_open)
{
    sqlite_ledger *s = impl;
    sqlite3_stmt *st;
    ferry_err err;
    uint64_t open_now = 0;

    /* The write lock before the count: two creators cannot both take the
     * last slot. */
    if ((err = exec_simple(s, ST_BEGIN_IMMEDIATE, "upload_create.begin")) != FERRY_OK)
        return err;
    if (max_open > 0) {
        if ((err = stmt_get(s, ST_UPLOAD_COUNT, &st)) != FERRY_OK ||
            (err = scalar_u64(s, st, "upload_create.count", &open_now)) != FERRY_OK)
            goto out;
        if (open_now >= max_open) {
            err = FERRY_ERR_RANGE;
            goto out;
        }
    }
    if ((err = stmt_get(s, ST_UPLOAD_INSERT, &st)) != FERRY_OK)
        goto out;
    bind_text(st, 1, u->id);
    bind_text(st, 2, u->bucket);
    bind_text(st, 3, u->key);
    bind_text(st, 4, u->content_type);
    bind_text(st, 5, u->meta);
    sqlite3_bind_int64(st, 6, u->initiated_at);
    if ((err = stmt_done(s, st, "upload_create.insert")) != FERRY_OK)
        goto out;
    if ((err = exec_simple(s, ST_COMMIT, "upload_create.commit")) != FERRY_OK)
        goto out;
    return FERRY_OK;
out:
    rollback(s);
    return err;
}

/* Fills u from columns 0..5 of ST_UPLOAD_GET / ST_UPLOAD_LIST. */
static ferry_err upload_row(sqlite_ledger *s, sqlite3_stmt *st, ledger_upload *u)
{
    ferry_err err;
    memset(u, 0, sizeof *u);
    if ((err = col_text(s, st, 0, u->id, sizeof u->id)) != FERRY_OK ||
        (err = col_text(s, st, 1, u->bucket, sizeof u->bucket)) != FERRY_OK ||
        (err = col_text(s, st, 2, u->key, sizeof u->key)) != FERRY_OK ||
        (err = col_text(s, st, 3, u->content_type, sizeof u->content_type)) != FERRY_OK ||
        (err = col_text(s, st, 4, u->meta, sizeof u->meta)) != FERRY_OK)
        return err;
    u->initiated_at = sqlite3_column_int64(st, 5);
    return FERRY_OK;
}

static ferry_err sq_upload_get(void *impl, const char *upload_id, ledger_upload *out,
                               uint64_t *parts_bytes)
{
    sqlite_ledger *s = impl;
    sqlite3_stmt *st;
    ledger_upload u;
    ferry_err err = stmt_get(s, ST_UPLOAD_GET, &st);
    int rc;
    if (err)
        return err;
    bind_text(st, 1, upload_id);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        err = upload_row(s, st, &u);
        sqlite3_int64 bytes = sqlite3_column_int64(st, 6);
        if (err == FERRY_OK && bytes < 0)
            err = FERRY_ERR_DB;
        if (err == FERRY_OK) {
            *out = u;
            *parts_bytes = (uint64_t)bytes;
        }
    } else if (rc == SQLITE_DONE) {
        err = FERRY_ERR_NOT_FOUND;
    } else {
        err = db_fail(s, "upload_get", rc);
    }
    sqlite3_reset(st);
    return err;
}

/* The file id of part number of upload_id, "" when none (in a transaction). */
static ferry_err part_file_of(sqlite_ledger *s, const char *upload_id, unsigned number, char *out)
{
    sqlite3_stmt *st;
    ferry_err err = stmt_get(s, ST_PART_FILE_OF, &st);
    int rc;
    if (err)
        return err;
    bind_text(st, 1, upload_id);
    sqlite3_bind_int64(st, 2, number);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        err = col_text(s, st, 0, out, LEDGER_FILE_ID_MAX + 1);
    else if (rc == SQLITE_DONE)
        out[0] = '\0';
    else
        err = db_fail(s, "part_file_of", rc);
    sqlite3_reset(st);
    return err;
}

static ferry_err sq_upload_part_put(void *impl, const char *upload_id, const ledger_part *p,
                                    char *replaced_file_id)
{
    sqlite_ledger *s = impl;
    sqlite3_stmt *st;
    ferry_err err;
    char old[LEDGER_FILE_ID_MAX + 1];

    if ((err = exec_simple(s, ST_BEGIN_IMMEDIATE, "part_put.begin")) != FERRY_OK)
        return err;
    if ((err = upload_exists_locked(s, upload_id)) != FERRY_OK ||
        (err = part_file_of(s, upload_id, p->number, old)) != FERRY_OK)
        goto out;
    if ((err = stmt_get(s, ST_PART_UPSERT, &st)) != FERRY_OK)
        goto out;
    bind_text(st, 1, upload_id);
    sqlite3_bind_int64(st, 2, p->number);
    bind_text(st, 3, p->file_id);
    sqlite3_bind_int64(st, 4, (sqlite3_int64)p->size);
    bind_text(st, 5, p->etag);
    sqlite3_bind_int64(st, 6, p->created_at);
    if ((err = stmt_done(s, st, "part_put.upsert")) != FERRY_OK)
        goto out;
    if ((err = exec_simple(s, ST_COMMIT, "part_put.commit")) != FERRY_OK)
        goto out;
    memcpy(replaced_file_id, old, sizeof old);
    return FERRY_OK;
out:
    rollback(s);
    return err;
}

static ferry_err sq_upload_parts(void *impl, const char *upload_id, unsigned after, size_t limit,
                                 int (*fn)(const ledger_part *p, void *arg), void *arg)
{
    sqlite_ledger *s = impl;
    sqlite3_stmt *st;
    ferry_err err;
    int rc = SQLITE_DONE;

    /* One read transaction: the upload and its parts as of one moment. */
    if (sqlite3_exec(s->db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK)
        return db_fail(s, "upload_parts.begin", sqlite3_errcode(s->db));
    if ((err = upload_exists_locked(s, upload_id)) != FERRY_OK)
        goto done;
    if ((err = stmt_get(s, ST_PARTS_LIST, &st)) != FERRY_OK)
        goto done;
    bind_text(st, 1, upload_id);
    sqlite3_bind_int64(st, 2, after);
    sqlite3_bind_int64(st, 3, limit_i64(limit));
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        ledger_part p;
        memset(&p, 0, sizeof p);
        sqlite3_int64 num = sqlite3_column_int64(st, 0);
        sqlite3_int64 size = sqlite3_column_int64(st, 2);
        if (num < 1 || num > LEDGER_PART_NUMBER_MAX || size < 0) {
            err = FERRY_ERR_DB;
            break;
        }
        p.number = (unsigned)num;
        p.size = (uint64_t)size;
        p.created_at = sqlite3_column_int64(st, 4);
        if ((err = col_text(s, st, 1, p.file_id, sizeof p.file_id)) != FERRY_OK ||
            (err = col_text(s, st, 3, p.etag, sizeof p.etag)) != FERRY_OK)
            break;
        if (fn(&p, arg) != 0) {
            rc = SQLITE_DONE;
            break;
        }
    }
    if (err == FERRY_OK && rc != SQLITE_DONE)
        err = db_fail(s, "upload_parts", rc);
    sqlite3_reset(st);
done:
    rollback(s); /* a read transaction: nothing to keep */
    return err;
}

static ferry_err sq_upload_list(void *impl, const char *bucket, const char *prefix,
                                const char *key_marker, const char *id_marker, size_t limit,
                                int (*fn)(const ledger_upload *u, void *arg), void *arg)
{
    sqlite_ledger *s = impl;
    sqlite3_stmt *st;
    ferry_err err = stmt_get(s, ST_UPLOAD_LIST, &st);
    int rc;
    if (err)
        return err;
    bind_text(st, 1, bucket);
    bind_text(st, 2, prefix);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)strlen(prefix));
    bind_text(st, 4, key_marker);
    bind_text(st, 5, id_marker);
    sqlite3_bind_int64(st, 6, limit_i64(limit));
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        ledger_upload u;
        if ((err = upload_row(s, st, &u)) != FERRY_OK)
            goto out;
        if (fn(&u, arg) != 0)
            goto out;
    }
    if (rc != SQLITE_DONE)
        err = db_fail(s, "upload_list", rc);
out:
    sqlite3_reset(st);
    return err;
}

static ferry_err sq_upload_complete(void *impl, const char *upload_id, const ledger_part *used,
                                    size_t n_used, const ledger_object *obj, int64_t now,
                                    char *replaced_file_id, ledger_file_fn fn, void *arg)
{
    sqlite_ledger *s = impl;
    ferry_err err;
    char old[LEDGER_FILE_ID_MAX + 1];
    file_list fl = {0};

    if ((err = exec_simple(s, ST_BEGIN_IMMEDIATE, "upload_complete.begin")) != FERRY_OK)
        return err;
    if ((err = upload_exists_locked(s, upload_id)) != FERRY_OK)
        goto fail;
    /* The object is made of these parts' data: a part replaced since
     * (another UploadPart of the same number) makes it stale. A listed
     * part's row goes here, so that only the unlisted parts' data is
     * handed to fn: the listed parts' data now belongs to the object. */
    for (size_t i = 0; i < n_used; i++) {
        sqlite3_stmt *st;
        /* Compare-and-set: the row goes only if it still names that data. */
        if ((err = stmt_get(s, ST_PART_DELETE_ONE, &st)) != FERRY_OK)
            goto fail;
        bind_text(st, 1, upload_id);
        sqlite3_bind_int64(st, 2, (sqlite3_int64)used[i].number);
        bind_text(st, 3, used[i].file_id);
        if ((err = stmt_done(s, st, "upload_complete.part_delete")) != FERRY_OK)
            goto fail;
        if (sqlite3_changes(s->db) != 1) {
            err = FERRY_ERR_CONFLICT;
            goto fail;
        }
    }
    if ((err = upload_delete_locked(s, upload_id, &fl)) != FERRY_OK ||
        (err = object_put_locked(s, obj, now, old)) != FERRY_OK)
        goto fail;
    /* The parts, in the object's byte order, each naming its data, after
     * the object's row (whose insert drops the boundaries of an older
     * object it replaces; a replaced object made of its parts keeps its
     * rows until the store releases their data). */
    for (size_t i = 0; i < n_used; i++) {
        sqlite3_stmt *st;
        if ((err = stmt_get(s, ST_OBJECT_PART_INSERT, &st)) != FERRY_OK)
            goto fail;
        bind_text(st, 1, obj->file_id);
        sqlite3_bind_int64(st, 2, (sqlite3_int64)used[i].number);
        sqlite3_bind_int64(st, 3, (sqlite3_int64)used[i].size);
        bind_text(st, 4, used[i].file_id);
        if ((err = stmt_done(s, st, "upload_complete.part")) != FERRY_OK)
            goto fail;
    }
    if ((err = exec_simple(s, ST_COMMIT, "upload_complete.commit")) != FERRY_OK)
        goto fail;
    memcpy(replaced_file_id, old, sizeof old);
    file_list_give(&fl, fn, arg);
    file_list_cleanup(&fl);
    return FERRY_OK;
fail:
    rollback(s);
    file_list_cleanup(&fl);
    return err;
}

static ferry_err sq_object_part_get(void *impl, const char *file_id, unsigned number,
                                    ledger_object_part *out)
{
    sqlite_ledger *s = impl;
    sqlite3_stmt *st;
    ferry_err err = stmt_get(s, ST_OBJECT_PART_GET, &st);
    int rc;
    if (err)
        return err;
    bind_text(st, 1, file_id);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)number);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        sqlite3_int64 count = sqlite3_column_int64(st, 0);
        sqlite3_int64 offset = sqlite3_column_int64(st, 1);
        sqlite3_int64 size = sqlite3_column_int64(st, 2);
        if (count < 0 || count > LEDGER_PART_NUMBER_MAX || offset < 0) {
            err = FERRY_ERR_DB;
        } else {
            memset(out, 0, sizeof *out);
            out->count = (unsigned)count;
            out->found = size >= 0;
            out->offset = (uint64_t)offset;
            out->size = size >= 0 ? (uint64_t)size : 0;
        }
    } else {
        err = db_fail(s, "object_part_get", rc);
    }
    sqlite3_reset(st);
    return err;
}

static ferry_err sq_object_parts(void *impl, const char *file_id,
                                 int (*fn)(const ledger_part *p, void *arg), void *arg)
{
    sqlite_ledger *s = impl;
    sqlite3_stmt *st;
    ferry_err err = stmt_get(s, ST_OBJECT_PIECES, &st);
    int rc;
    if (err)
        return err;
    bind_text(st, 1, file_id);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        ledger_part p;
        sqlite3_int64 num = sqlite3_column_int64(st, 0);
        sqlite3_int64 size = sqlite3_column_int64(st, 2);
        memset(&p, 0, sizeof p);
        if (num < 1 || num > LEDGER_PART_NUMBER_MAX || size < 0) {
            err = FERRY_ERR_DB;
            goto out;
        }
        p.number = (unsigned)num;
        p.size = (uint64_t)size;
        if ((err = col_text(s, st, 1, p.file_id, sizeof p.file_id)) != FERRY_OK)
            goto out;
        if (fn(&p, arg) != 0)
            goto out;
    }
    if (rc != SQLITE_DONE)
        err = db_fail(s, "object_parts", rc);
out:
    sqlite3_reset(st);
    return err;
}

static ferry_err sq_object_parts_release(void *impl, const char *file_id, ledger_file_fn fn,
                                         void *arg, uint64_t *count)
{
    sqlite_ledger *s = impl;
    sqlite3_stmt *st;
    ferry_err err;
    file_list fl = {0};

    if ((err = exec_simple(s, ST_BEGIN_IMMEDIATE, "object_parts_release.begin")) != FERRY_OK)
        return err;
    if ((err = ids_locked(s, file_id != NULL ? ST_LOOSE_PARTS_OF : ST_LOOSE_PARTS_ALL, file_id,
                          &fl)) != FERRY_OK)
        goto fail;
    if ((err = stmt_get(s, file_id != NULL ? ST_LOOSE_PARTS_OF_DELETE : ST_LOOSE_PARTS_ALL_DELETE,
                        &st)) != FERRY_OK)
        goto fail;
    if (file_id != NULL)
        bind_text(st, 1, file_id);
    if ((err = stmt_done(s, st, "object_parts_release.delete")) != FERRY_OK ||
        (err = exec_simple(s, ST_COMMIT, "object_parts_release.commit")) != FERRY_OK)
        goto fail;
    *count = fl.n;
    file_list_give(&fl, fn, arg);
    file_list_cleanup(&fl);
    return FERRY_OK;
fail:
    rollback(s);
    file_list_cleanup(&fl);
    return err;
}

static ferry_err sq_upload_abort(void *impl, const char *upload_id, ledger_file_fn fn, void *arg)
{
    sqlite_ledger *s = impl;
    ferry_err err;
    file_list fl = {0};

    if ((err = exec_simple(s, ST_BEGIN_IMMEDIATE, "upload_abort.begin")) != FERRY_OK)
        return err;
    if ((err = upload_exists_locked(s, upload_id)) != FERRY_OK ||
        (err = upload_delete_locked(s, upload_id, &fl)) != FERRY_OK)
        goto fail;
    if ((err = exec_simple(s, ST_COMMIT, "upload_abort.commit")) != FERRY_OK)
        goto fail;
    file_list_give(&fl, fn, arg);
    file_list_cleanup(&fl);
    return FERRY_OK;
fail:
    rollback(s);
    file_list_cleanup(&fl);
    return err;
}

static ferry_err sq_uploads_expire(void *impl, int64_t before, size_t limit, ledger_file_fn fn,
                                   void *arg, uint64_t *count)
{
    sqlite_ledger *s = impl;
    sqlite3_stmt *st;
    ferry_err err;
    file_list fl = {0};
    char (*ids)[LEDGER_UPLOAD_ID_MAX + 1] = NULL;
    size_t n = 0;
    int rc = SQLITE_DONE;

    if (limit > 10000)
        limit = 10000;
    ids = calloc(limit, sizeof *ids);
    if (ids == NULL)
        return FERRY_ERR_NOMEM;
    if ((err = exec_simple(s, ST_BEGIN_IMMEDIATE, "uploads_expire.begin")) != FERRY_OK)
        goto out;
    if ((err = stmt_get(s, ST_UPLOADS_OLD, &st)) != FERRY_OK)
        goto fail;
    sqlite3_bind_int64(st, 1, before);
    sqlite3_bind_int64(st, 2, limit_i64(limit));
    while (n < limit && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        if ((err = col_text(s, st, 0, ids[n], sizeof ids[n])) != FERRY_OK)
            break;
        n++;
    }
    if (err == FERRY_OK && n < limit && rc != SQLITE_DONE)
        err = db_fail(s, "uploads_expire.select", rc);
    sqlite3_reset(st);
    if (err)
        goto fail;
    for (size_t i = 0; i < n; i++)
        if ((err = upload_delete_locked(s, ids[i], &fl)) != FERRY_OK)
            goto fail;
    if ((err = exec_simple(s, ST_COMMIT, "uploads_expire.commit")) != FERRY_OK)
        goto fail;
    file_list_give(&fl, fn, arg);
    *count = n;
    goto out;
fail:
    rollback(s);
out:
    file_list_cleanup(&fl);
    free(ids);
    return err;
}

/* ---------------------------------------------------------------------- */
/* The event outbox                                                         */

/* Fills ev from columns 0..14 (EVENT_COLS). */
static ferry_err event_row(sqlite_ledger *s, sqlite3_stmt *st, ledger_event *ev)
{
    ferry_err err;
    sqlite3_int64 size;
    memset(ev, 0, sizeof *ev);
    ev->seq = sqlite3_column_int64(st, 0);
    if ((err = col_text(s, st, 1, ev->id, sizeof ev->id)) != FERRY_OK ||
        (err = col_text(s, st, 2, ev->bucket, sizeof ev->bucket)) != FERRY_OK ||
        (err = col_text(s, st, 3, ev->key, sizeof ev->key)) != FERRY_OK ||
        (err = col_text(s, st, 5, ev->etag, sizeof ev->etag)) != FERRY_OK ||
        (err = col_text(s, st, 6, ev->sha256, sizeof ev->sha256)) != FERRY_OK ||
        (err = col_text(s, st, 7, ev->content_type, sizeof ev->content_type)) != FERRY_OK ||
        (err = col_text(s, st, 8, ev->device, sizeof ev->device)) != FERRY_OK ||
        (err = col_text(s, st, 9, ev->grant_id, sizeof ev->grant_id)) != FERRY_OK ||
        (err = col_text(s, st, 10, ev->request_id, sizeof ev->request_id)) != FERRY_OK ||
        (err = col_text(s, st, 11, ev->method, sizeof ev->method)) != FERRY_OK ||
        (err = col_text(s, st, 13, ev->source_ip, sizeof ev->source_ip)) != FERRY_OK ||
        (err = col_text(s, st, 14, ev->store_request_id, sizeof ev->store_request_id)) !=
            FERRY_OK)
        return err;
    size = sqlite3_column_int64(st, 4);
    if (size < 0)
        return FERRY_ERR_DB;
    ev->size = (uint64_t)size;
    ev->created_ms = sqlite3_column_int64(st, 12);
    return FERRY_OK;
}

static ferry_err delivery_state_parse(const char *v, ledger_delivery_state *out)
{
    for (int i = LEDGER_DELIVERY_PENDING; i <= LEDGER_DELIVERY_DEAD; i++) {
        if (strcmp(v, ledger_delivery_state_str((ledger_delivery_state)i)) == 0) {
            *out = (ledger_delivery_state)i;
            return FERRY_OK;
        }
    }
    log_error("ledger.corrupt", "backend=sqlite what=delivery_state");
    return FERRY_ERR_DB;
}

/* Fills d from the columns of DELIVERY_COLS. */
static ferry_err delivery_row(sqlite_ledger *s, sqlite3_stmt *st, ledger_delivery *d)
{
    ferry_err err;
    char state[16];
    sqlite3_int64 attempts;
    if ((err = event_row(s, st, &d->event)) != FERRY_OK)
        return err;
    const int c = EVENT_COL_COUNT;
    if ((err = col_text(s, st, c, d->target, sizeof d->target)) != FERRY_OK ||
        (err = col_text(s, st, c + 1, state, sizeof state)) != FERRY_OK ||
        (err = col_text(s, st, c + 4, d->last_error, sizeof d->last_error)) != FERRY_OK ||
        (err = delivery_state_parse(state, &d->state)) != FERRY_OK)
        return err;
    attempts = sqlite3_column_int64(st, c + 2);
    if (attempts < 0 || attempts > UINT32_MAX)
        return FERRY_ERR_DB;
    d->attempts = (unsigned)attempts;
    d->next_ms = sqlite3_column_int64(st, c + 3);
    return FERRY_OK;
}

static ferry_err sq_event_targets_set(void *impl, const char *const *names, size_t n)
{
    sqlite_ledger *s = impl;
    sqlite3_stmt *st;
    ferry_err err;

    if ((err = exec_simple(s, ST_BEGIN_IMMEDIATE, "targets_set.begin")) != FERRY_OK)
        return err;
    if ((err = exec_simple(s, ST_TARGETS_OFF, "targets_set.off")) != FERRY_OK)
        goto out;
    for (size_t i = 0; i < n; i++) {
        if ((err = stmt_get(s, ST_TARGET_ON, &st)) != FERRY_OK)
            goto out;
        bind_text(st, 1, names[i]);
        if ((err = stmt_done(s, st, "targets_set.on")) != FERRY_OK)
            goto out;
    }
    if ((err = exec_simple(s, ST_COMMIT, "targets_set.commit")) != FERRY_OK)
        goto out;
    return FERRY_OK;
out:
    rollback(s);
    return err;
}

static ferry_err sq_event_latest(void *impl, const char *bucket, const char *key, ledger_event *out)
{
    sqlite_ledger *s = impl;
    sqlite3_stmt *st;
    ledger_event ev;
    ferry_err err = stmt_get(s, ST_EVENT_LATEST, &st);
    int rc;
    if (err)
        return err;
    bind_text(st, 1, bucket);
    bind_text(st, 2, key);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        err = event_row(s, st, &ev);
    else if (rc == SQLITE_DONE)
        err = FERRY_ERR_NOT_FOUND;
    else
        err = db_fail(s, "event_latest", rc);
    sqlite3_reset(st);
    if (err == FERRY_OK)
        *out = ev;
    return err;
}

static ferry_err sq_delivery_claim(void *impl, const char *target, int64_t now_ms, int64_t lease_ms,
                                   ledger_delivery *out, size_t max, size_t *n)
{
    sqlite_ledger *s = impl;
    sqlite3_stmt *st;
    ferry_err err;
    size_t got = 0;
    int rc;

    /* An idle worker polls several times a second: look first without the
     * write lock (a plain read in WAL mode blocks nobody), so polling never
     * competes with the store's and the grant service's commits. */
    if ((err = stmt_get(s, ST_DELIVERY_DUE, &st)) != FERRY_OK)
        return err;
    bind_text(st, 1, target);
    sqlite3_bind_int64(st, 2, now_ms);
    sqlite3_bind_int64(st, 3, 1);
    rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc == SQLITE_DONE) {
        *n = 0;
        return FERRY_OK;
    }
    if (rc != SQLITE_ROW)
        return db_fail(s, "claim.peek", rc);
    /* Then the write lock: two workers of one target (two ferryd on one
     * ledger) never claim the same row. */
    if ((err = exec_simple(s, ST_BEGIN_IMMEDIATE, "claim.begin")) != FERRY_OK)
        return err;
    if ((err = stmt_get(s, ST_DELIVERY_DUE, &st)) != FERRY_OK)
        goto out;
    bind_text(st, 1, target);
    sqlite3_bind_int64(st, 2, now_ms);
    sqlite3_bind_int64(st, 3, max > (size_t)INT64_MAX ? INT64_MAX : (sqlite3_int64)max);
    while (got < max && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        if ((err = delivery_row(s, st, &out[got])) != FERRY_OK) {
            sqlite3_reset(st);
            goto out;
        }
        got++;
    }
    if (got < max && rc != SQLITE_DONE) {
        err = db_fail(s, "claim.select", rc);
        sqlite3_reset(st);
        goto out;
    }
    sqlite3_reset(st);
    for (size_t i = 0; i < got; i++) {
        if ((err = stmt_get(s, ST_DELIVERY_LEASE, &st)) != FERRY_OK)
            goto out;
        sqlite3_bind_int64(st, 1, out[i].event.seq);
        bind_text(st, 2, target);
        sqlite3_bind_int64(st, 3, now_ms + lease_ms);
        if ((err = stmt_done(s, st, "claim.lease")) != FERRY_OK)
            goto out;
    }
    if ((err = exec_simple(s, ST_COMMIT, "claim.commit")) != FERRY_OK)
        goto out;
    *n = got;
    return FERRY_OK;
out:
    rollback(s);
    return err;
}

static ferry_err sq_delivery_set(void *impl, int64_t event_seq, const char *target,
                                 ledger_delivery_state to, unsigned attempts, int64_t next_ms,
                                 const char *error)
{
    sqlite_ledger *s = impl;
    sqlite3_stmt *st;
    ferry_err err;
    int rc;

    if (to == LEDGER_DELIVERY_DELIVERED) {
        if ((err = stmt_get(s, ST_DELIVERY_DONE, &st)) != FERRY_OK)
            return err;
        sqlite3_bind_int64(st, 1, event_seq);
        bind_text(st, 2, target);
    } else {
        if ((err = stmt_get(s, ST_DELIVERY_SET, &st)) != FERRY_OK)
            return err;
        sqlite3_bind_int64(st, 1, event_seq);
        bind_text(st, 2, target);
        bind_text(st, 3, ledger_delivery_state_str(to));
        sqlite3_bind_int64(st, 4, (sqlite3_int64)attempts);
        sqlite3_bind_int64(st, 5, next_ms);
        bind_text(st, 6, error);
    }
    if ((err = stmt_done(s, st, "delivery_set")) != FERRY_OK)
        return err;
    if (sqlite3_changes(s->db) == 1)
        return FERRY_OK;
    /* No row moved: say whether it is unknown or no longer pending. */
    if ((err = stmt_get(s, ST_DELIVERY_EXISTS, &st)) != FERRY_OK)
        return err;
    sqlite3_bind_int64(st, 1, event_seq);
    bind_text(st, 2, target);
    rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc == SQLITE_ROW)
        return FERRY_ERR_CONFLICT;
    if (rc == SQLITE_DONE)
        return FERRY_ERR_NOT_FOUND;
    return db_fail(s, "delivery_set.exists", rc);
}

static ferry_err sq_delivery_done_batch(void *impl, const char *target, const int64_t *event_seqs,
                                        size_t n, uint64_t *marked)
{
    sqlite_ledger *s = impl;
    sqlite3_stmt *st;
    ferry_err err;
    uint64_t moved = 0;

    if ((err = exec_simple(s, ST_BEGIN_IMMEDIATE, "done_batch.begin")) != FERRY_OK)
        return err;
    for (size_t i = 0; i < n; i++) {
        if ((err = stmt_get(s, ST_DELIVERY_DONE, &st)) != FERRY_OK)
            goto out;
        sqlite3_bind_int64(st, 1, event_seqs[i]);
        bind_text(st, 2, target);
        if ((err = stmt_done(s, st, "done_batch")) != FERRY_OK)
            goto out;
        moved += (uint64_t)sqlite3_changes(s->db);
    }
    if ((err = exec_simple(s, ST_COMMIT, "done_batch.commit")) != FERRY_OK)
        goto out;
    *marked = moved;
    return FERRY_OK;
out:
    rollback(s);
    return err;
}

static ferry_err sq_delivery_list(void *impl, ledger_delivery_state state, const char *target,
                                  int64_t after_seq, size_t limit,
                                  int (*fn)(const ledger_delivery *d, void *arg), void *arg)
{
    sqlite_ledger *s = impl;
    sqlite3_stmt *st;
    ferry_err err =
        stmt_get(s, target != NULL ? ST_DELIVERY_LIST_TARGET : ST_DELIVERY_LIST_ALL, &st);
    ledger_delivery *d = NULL;
    int rc;
    if (err)
        return err;
    d = malloc(sizeof *d);
    if (d == NULL)
        return FERRY_ERR_NOMEM;
    bind_text(st, 1, ledger_delivery_state_str(state));
    sqlite3_bind_int64(st, 2, after_seq);
    sqlite3_bind_int64(st, 3, limit > (size_t)INT64_MAX ? INT64_MAX : (sqlite3_int64)limit);
    if (target != NULL)
        bind_text(st, 4, target);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if ((err = delivery_row(s, st, d)) != FERRY_OK)
            goto out;
        if (fn(d, arg) != 0)
            goto out;
    }
    if (rc != SQLITE_DONE)
        err = db_fail(s, "delivery_list", rc);
out:
    sqlite3_reset(st);
    free(d);
    return err;
}

/* The first event recorded for grant_id into out; *found says whether. */
static ferry_err event_by_grant(sqlite_ledger *s, const char *grant_id, ledger_event *out,
                                bool *found)
{
    sqlite3_stmt *st;
    ferry_err err = stmt_get(s, ST_EVENT_BY_GRANT, &st);
    int rc;
    if (err)
        return err;
    bind_text(st, 1, grant_id);
    rc = sqlite3_step(st);
    *found = rc == SQLITE_ROW;
    if (rc == SQLITE_ROW)
        err = event_row(s, st, out);
    else if (rc != SQLITE_DONE)
        err = db_fail(s, "event_by_grant", rc);
    sqlite3_reset(st);
    return err;
}

static ferry_err sq_event_external(void *impl, const ledger_external_object *obj, int64_t now,
                                   ledger_event *out, bool *duplicate)
{
    sqlite_ledger *s = impl;
    sqlite3_stmt *st;
    ferry_err err;
    ledger_grant g;
    ledger_event ev;
    bool found = false, dup = false;
    int64_t created_ms = now * 1000;

    if ((err = exec_simple(s, ST_BEGIN_IMMEDIATE, "event_external.begin")) != FERRY_OK)
        return err;
    if ((err = sq_grant_get(s, obj->grant_id, &g)) != FERRY_OK)
        goto out;
    if (strcmp(g.bucket, obj->bucket) != 0 || strcmp(g.key, obj->key) != 0) {
        err = FERRY_ERR_DENIED;
        goto out;
    }
    if (g.size != obj->size) {
        err = FERRY_ERR_INVALID;
        goto out;
    }
    if ((err = event_by_grant(s, obj->grant_id, &ev, &found)) != FERRY_OK)
        goto out;
    dup = found;
    if (!found) {
        if ((err = stmt_get(s, ST_GRANT_USE_EXTERNAL, &st)) != FERRY_OK)
            goto out;
        bind_text(st, 1, obj->grant_id);
        sqlite3_bind_int64(st, 2, now);
        if ((err = stmt_done(s, st, "event_external.use")) != FERRY_OK)
            goto out;
        if (sqlite3_changes(s->db) != 1) {
            err = FERRY_ERR_CONFLICT; /* revoked */
            goto out;
        }
        if ((err = stmt_get(s, ST_EVENT_INSERT_EXTERNAL, &st)) != FERRY_OK)
            goto out;
        bind_text(st, 1, obj->bucket);
        bind_text(st, 2, obj->key);
        sqlite3_bind_int64(st, 3, (sqlite3_int64)obj->size);
        bind_text(st, 4, obj->etag);
        sqlite3_bind_int64(st, 5, created_ms);
        bind_text(st, 6, obj->grant_id);
        if ((err = stmt_done(s, st, "event_external.insert")) != FERRY_OK)
            goto out;
        sqlite3_int64 seq = sqlite3_last_insert_rowid(s->db);
        if ((err = stmt_get(s, ST_DELIVERY_FANOUT, &st)) != FERRY_OK)
            goto out;
        sqlite3_bind_int64(st, 1, seq);
        sqlite3_bind_int64(st, 2, created_ms);
        if ((err = stmt_done(s, st, "event_external.fanout")) != FERRY_OK)
            goto out;
        if ((err = event_by_grant(s, obj->grant_id, &ev, &found)) != FERRY_OK)
            goto out;
        if (!found) {
            err = FERRY_ERR_INTERNAL;
            goto out;
        }
    }
    if ((err = exec_simple(s, ST_COMMIT, "event_external.commit")) != FERRY_OK)
        goto out;
    *duplicate = dup;
    *out = ev;
    return FERRY_OK;
out:
    rollback(s);
    return err;
}

static ferry_err sq_delivery_postpone(void *impl, const char *target, int64_t until_ms,
                                      uint64_t *count)
{
    sqlite_ledger *s = impl;
    sqlite3_stmt *st;
    ferry_err err = stmt_get(s, ST_DELIVERY_POSTPONE, &st);
    if (err)
        return err;
    bind_text(st, 1, target);
    sqlite3_bind_int64(st, 2, until_ms);
    if ((err = stmt_done(s, st, "delivery_postpone")) != FERRY_OK)
        return err;
    *count = (uint64_t)sqlite3_changes(s->db);
    return FERRY_OK;
}

static ferry_err sq_delivery_replay(void *impl, const char *target, const char *event_id,
                                    int64_t now_ms, uint64_t *count)
{
    sqlite_ledger *s = impl;
    sqlite3_stmt *st;
    ferry_err err = stmt_get(s, ST_DELIVERY_REPLAY, &st);
    if (err)
        return err;
    sqlite3_bind_int64(st, 1, now_ms);
    bind_text(st, 2, target);
    bind_text(st, 3, event_id);
    if ((err = stmt_done(s, st, "delivery_replay")) != FERRY_OK)
        return err;
    *count = (uint64_t)sqlite3_changes(s->db);
    return FERRY_OK;
}

static ferry_err sq_events_prune(void *impl, int64_t before_ms, size_t limit, uint64_t *count)
{
    sqlite_ledger *s = impl;
    sqlite3_stmt *st;
    int64_t upto = 0;
    ferry_err err;

    if ((err = exec_simple(s, ST_BEGIN_IMMEDIATE, "events_prune.begin")) != FERRY_OK)
        return err;
    if ((err = stmt_get(s, ST_PRUNE_UPTO, &st)) != FERRY_OK)
        goto out;
    sqlite3_bind_int64(st, 1, before_ms);
    sqlite3_bind_int64(st, 2, limit_i64(limit));
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        upto = sqlite3_column_int64(st, 0); /* NULL (nothing to prune) reads as 0 */
    sqlite3_reset(st);
    if (rc != SQLITE_ROW) {
        err = db_fail(s, "events_prune.select", rc);
        goto out;
    }
    uint64_t pruned = 0;
    if (upto > 0) {
        static const enum stmt_id steps[] = {ST_PRUNE_DELIVERIES, ST_PRUNE_EVENTS};
        for (size_t i = 0; i < 2; i++) {
            if ((err = stmt_get(s, steps[i], &st)) != FERRY_OK)
                goto out;
            sqlite3_bind_int64(st, 1, before_ms);
            sqlite3_bind_int64(st, 2, upto);
            if ((err = stmt_done(s, st, "events_prune")) != FERRY_OK)
                goto out;
        }
        pruned = (uint64_t)sqlite3_changes(s->db);
    }
    if ((err = exec_simple(s, ST_COMMIT, "events_prune.commit")) != FERRY_OK)
        goto out;
    *count = pruned;
    return FERRY_OK;
out:
    rollback(s);
    return err;
}

const ledger_ops ledger_sqlite_ops = {
    .name = "sqlite",
    .open = sq_open,
    .close = sq_close,
    .schema_version = sq_schema_version,
    .set_sync = sq_set_sync,
    .set_autocheckpoint = sq_set_autocheckpoint,
    .checkpoint = sq_checkpoint,
    .device_get = sq_device_get,
    .device_upsert = sq_device_upsert,
    .open_grants = sq_open_grants,
    .bytes_since = sq_bytes_since,
    .grant_insert = sq_grant_insert,
    .grant_insert_batch = sq_grant_insert_batch,
    .write_begin = sq_write_begin,
    .write_commit = sq_write_commit,
    .write_rollback = sq_write_rollback,
    .audit_refusal = sq_audit_refusal,
    .grant_get = sq_grant_get,
    .grant_mark_used = sq_grant_mark_used,
    .grant_revoke = sq_grant_revoke,
    .grants_expire = sq_grants_expire,
    .audit_list = sq_audit_list,
    .audit_log = sq_audit_log,
    .object_put = sq_object_put,
    .object_put_batch = sq_object_put_batch,
    .object_get = sq_object_get,
    .object_delete = sq_object_delete,
    .object_list = sq_object_list,
    .object_file_known = sq_object_file_known,
    .object_file_walk = sq_object_file_walk,
    .upload_create = sq_upload_create,
    .upload_get = sq_upload_get,
    .upload_part_put = sq_upload_part_put,
    .upload_parts = sq_upload_parts,
    .upload_list = sq_upload_list,
    .upload_complete = sq_upload_complete,
    .object_part_get = sq_object_part_get,
    .object_parts = sq_object_parts,
    .object_parts_release = sq_object_parts_release,
    .upload_abort = sq_upload_abort,
    .uploads_expire = sq_uploads_expire,
    .event_targets_set = sq_event_targets_set,
    .event_latest = sq_event_latest,
    .delivery_claim = sq_delivery_claim,
    .delivery_set = sq_delivery_set,
    .delivery_done_batch = sq_delivery_done_batch,
    .delivery_list = sq_delivery_list,
    .event_external = sq_event_external,
    .delivery_postpone = sq_delivery_postpone,
    .delivery_replay = sq_delivery_replay,
    .events_prune = sq_events_prune,
};
