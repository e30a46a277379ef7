/*
 * ledger_int.h - the backend interface behind ledger.h.
 *
 * A backend is one table of function pointers (like curl's vtls table): the
 * public functions in ledger.c check and bound their arguments once, then
 * call the backend through l->ops. So a backend may assume that every string
 * it receives is non-NULL (unless documented as optional) and within the
 * LEDGER_*_MAX bounds, and that out-pointers are valid.
 *
 * Each function has the contract of the ledger.h function of the same name,
 * with the handle replaced by the backend's own state (impl).
 */
#ifndef FERRY_LEDGER_INT_H
#define FERRY_LEDGER_INT_H

#include "ledger.h"

/* Called by a backend each time one of its handles waits for a write lock
 * that another connection holds (ledger_busy_waits() in ledger.h). */
void ledger__note_busy(void);

typedef struct ledger_ops {
    const char *name;
    ferry_err (*open)(const char *location, void **impl);
    void (*close)(void *impl);
    ferry_err (*schema_version)(void *impl, int64_t *out);
    ferry_err (*set_sync)(void *impl, ledger_sync mode);
    ferry_err (*set_autocheckpoint)(void *impl, bool on);
    ferry_err (*checkpoint)(void *impl, uint64_t *log_frames, uint64_t *copied_frames);
    ferry_err (*device_get)(void *impl, const char *device, ledger_device *out);
    ferry_err (*device_upsert)(void *impl, const ledger_device *dev, int64_t now);
    ferry_err (*open_grants)(void *impl, const char *device, int64_t now, uint64_t *out);
    ferry_err (*bytes_since)(void *impl, const char *device, int64_t day_start, int64_t now,
                             uint64_t *out);
    ferry_err (*grant_insert)(void *impl, const ledger_grant *g, const ledger_limits *limits,
                              ledger_verdict *verdict);
    /* Items whose err is already set (by ledger.c's checks) are skipped. */
    ferry_err (*grant_insert_batch)(void *impl, ledger_insert *items, size_t n);
    /* Inside write_begin .. write_commit/_rollback, grant_insert and
     * grant_insert_batch join the open transaction instead of running their
     * own, and leave ending it to the caller. */
    ferry_err (*write_begin)(void *impl);
    ferry_err (*write_commit)(void *impl);
    void (*write_rollback)(void *impl);
    ferry_err (*audit_refusal)(void *impl, const char *device, const char *request_id,
                               const char *code, const char *detail, int64_t now);
    ferry_err (*grant_get)(void *impl, const char *grant_id, ledger_grant *out);
    ferry_err (*grant_mark_used)(void *impl, const char *grant_id, int64_t now);
    ferry_err (*grant_revoke)(void *impl, const char *grant_id, int64_t now);
    ferry_err (*grants_expire)(void *impl, int64_t now, uint64_t *count);
    ferry_err (*audit_list)(void *impl, const char *device, int64_t after_seq, size_t limit,
                            int (*fn)(const ledger_audit_row *row, void *arg), void *arg);
    ferry_err (*audit_log)(void *impl, const char *device, int64_t since, size_t limit,
                           int (*fn)(const ledger_audit_row *row, void *arg), void *arg);
    ferry_err (*object_put)(void *impl, const ledger_object *obj, int64_t now,
                            char *replaced_file_id);
    /* Items whose err is already set (by ledger.c's checks) are skipped. */
    ferry_err (*object_put_batch)(void *impl, ledger_object_put_item *items, size_t n);
    ferry_err (*object_get)(void *impl, const char *bucket, const char *key, ledger_object *out);
    ferry_err (*object_delete)(void *impl, const char *bucket, const char *key, char *file_id_out);
    ferry_err (*object_list)(void *impl, const char *bucket, const char *prefix,
                             const char *start_after, size_t limit,
                             int (*fn)(const ledger_object *obj, void *arg), void *arg);
    ferry_err (*object_file_known)(void *impl, const char *file_id, bool *known);
    ferry_err (*object_file_walk)(void *impl, const char *prefix,
                                  int (*fn)(const char *file_id, uint64_t size, void *arg),
                                  void *arg);
    ferry_err (*upload_create)(void *impl, const ledger_upload *u, size_t max_open);
    ferry_err (*upload_get)(void *impl, const char *upload_id, ledger_upload *out,
                            uint64_t *parts_bytes);
    ferry_err (*upload_part_put)(void *impl, const char *upload_id, const ledger_part *p,
                                 char *replaced_file_id);
    ferry_err (*upload_parts)(void *impl, const char *upload_id, unsigned after, size_t limit,
                              int (*fn)(const ledger_part *p, void *arg), void *arg);
    ferry_err (*upload_list)(void *impl, const char *bucket, const char *prefix,
                             const char *key_marker, const char *id_marker, size_t limit,
                             int (*fn)(const ledger_upload *u, void *arg), void *arg);
    /* fn may be NULL. */
    ferry_err (*upload_complete)(void *impl, const char *upload_id, const ledger_part *used,
                                 size_t n_used, const ledger_object *obj, int64_t now,
                                 char *replaced_file_id, ledger_file_fn fn, void *arg);
    ferry_err (*upload_abort)(void *impl, const char *upload_id, ledger_file_fn fn, void *arg);
    ferry_err (*object_part_get)(void *impl, const char *file_id, unsigned number,
                                 ledger_object_part *out);
    ferry_err (*object_parts)(void *impl, const char *file_id,
                              int (*fn)(const ledger_part *p, void *arg), void *arg);
    /* file_id NULL: every object's; fn may be NULL. */
    ferry_err (*object_parts_release)(void *impl, const char *file_id, ledger_file_fn fn, void *arg,
                                      uint64_t *count);
    ferry_err (*uploads_expire)(void *impl, int64_t before, size_t limit, ledger_file_fn fn,
                                void *arg, uint64_t *count);
    ferry_err (*event_targets_set)(void *impl, const char *const *names, size_t n);
    ferry_err (*event_latest)(void *impl, const char *bucket, const char *key, ledger_event *out);
    ferry_err (*delivery_claim)(void *impl, const char *target, int64_t now_ms, int64_t lease_ms,
                                ledger_delivery *out, size_t max, size_t *n);
    /* to: LEDGER_DELIVERY_DELIVERED, _PENDING (a retry) or _DEAD; error may
     * be NULL. */
    ferry_err (*delivery_set)(void *impl, int64_t event_seq, const char *target,
                              ledger_delivery_state to, unsigned attempts, int64_t next_ms,
                              const char *error);
    ferry_err (*delivery_done_batch)(void *impl, const char *target, const int64_t *event_seqs,
                                     size_t n, uint64_t *marked);
    ferry_err (*delivery_list)(void *impl, ledger_delivery_state state, const char *target,
                               int64_t after_seq, size_t limit,
                               int (*fn)(const ledger_delivery *d, void *arg), void *arg);
    ferry_err (*event_external)(void *impl, const ledger_external_object *obj, int64_t now,
                                ledger_event *out, bool *duplicate);
    ferry_err (*delivery_postpone)(void *impl, const char *target, int64_t until_ms,
                                   uint64_t *count);
    ferry_err (*delivery_replay)(void *impl, const char *target, const char *event_id,
                                 int64_t now_ms, uint64_t *count);
    ferry_err (*events_prune)(void *impl, int64_t before_ms, size_t limit, uint64_t *count);
} ledger_ops;

struct ledger {
    const ledger_ops *ops;
    void *impl;
    bool in_write; /* between ledger_write_begin and its end (holds the gate, ledger.c) */
};

extern const ledger_ops ledger_sqlite_ops;

#endif
