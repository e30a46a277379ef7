/*
 * store_int.h - what the embedded store's HTTP layer (store.c) shares with
 * its multipart upload operations (store_multipart.c): the store and
 * request structures and the few helpers both answer with.
 *
 * Not a public interface: only the files of src/store/ include it. The
 * invariants are those of store.c (see its top comment): a request is
 * handled by one connection thread at a time; a ledger handle is taken
 * from the pool for the time of the ledger calls only; every answer goes
 * through store_queue() / store_respond_error().
 */
#ifndef FERRY_STORE_INT_H
#define FERRY_STORE_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <microhttpd.h>
#include <openssl/evp.h>

#include "common/buf.h"
#include "ledger/ledger.h"
#include "sigv4/sigv4.h"
#include "store.h"
#include "md5_lanes.h"
#include "store_fs.h"
#include "store_req.h"

#define DEFAULT_CONTENT_TYPE "binary/octet-stream"
#define STORE_COMMITTERS     4
#define STORE_HELD_PACKS     8 /* distinct packs in one committer's batch, at most */

struct store {
    char *bucket;
    char *region;
    char *grant_ak;
    char *op_ak; /* NULL: no operator */
    char grant_secret[SIGV4_MAX_SECRET_LEN + 1];
    char op_secret[SIGV4_MAX_SECRET_LEN + 1];
    sigv4_verifier verifier;
    store_fs fs;
    uint64_t max_object_size;
    uint64_t min_upload_rate;
    int64_t min_rate_grace_ns;
    int64_t stall_ns; /* [store] idle_timeout: a body silent this long */
    unsigned idle_timeout_s;
    unsigned max_headers;
    unsigned max_target_bytes;
    unsigned max_header_bytes;
    int64_t mp_expiry_s;      /* [store] multipart_expiry: older uploads are aborted */
    size_t mp_max_uploads;    /* [store] max_multipart_uploads: open at once */
    atomic_int mp_completing; /* completions running (STORE_MP_COMPLETES_MAX) */
    /* Long-work threads (store_multipart.c): one per completion, copy
     * or part copy running, its connection suspended. store_stop waits for them
     * (mp_threads, under mp_mu) before stopping libmicrohttpd, after
     * setting mp_abort once shutdown_timeout has passed. */
    pthread_mutex_t mp_mu;
    /* Objects made of their parts that are being read, and whether they
     * were deleted or replaced meanwhile (store_multipart.c, "Objects made
     * of their parts"): their parts' data stays until the last reader is
     * done. */
    pthread_mutex_t mp_read_mu;
    struct store_mp_reading *mp_reading;
    size_t n_mp_reading, cap_mp_reading;
    pthread_cond_t mp_cv;
    int mp_threads;
    atomic_bool mp_abort;
    struct MHD_Daemon *daemon;
    bool stopped;
    bool tls;

    /* Bodies being received, watched for RequestTimeout (see "Body
     * watchdog" below). watch_mu guards the list and the w_* fields of its
     * requests; a request leaves the list in req_free, under watch_mu, so
     * the watchdog never touches a freed request or a closed socket. */
    pthread_mutex_t watch_mu;
    pthread_cond_t watch_cv;
    struct req *watch_head;
    struct conn_watch *conns; /* every connection, for the head deadline */
    int64_t head_timeout_ns;
    pthread_t watch_thread;
    bool watch_started;
    bool watch_stop;
    char *tls_cert;
    char *tls_key;

    /* Ledger handles, one per request at a time (a handle is not shared
     * between threads). */
    pthread_mutex_t pool_mu;
    pthread_cond_t pool_cv;
    ledger **pool;
    size_t pool_size;
    size_t pool_free; /* pool[0 .. pool_free) are free */
    bool pool_ready;

    /* Group commit: uploads that finish together are recorded in one
     * ledger transaction (one fsync of the write-ahead log for all), by
     * whichever of their threads comes first (the leader). */
    pthread_mutex_t cq_mu;
    pthread_cond_t cq_cv;
    struct commit_item *cq_head;
    struct commit_item *cq_tail;
    bool cq_leader;

    /* Committers: an upload whose body has arrived and been verified waits
     * here, its connection suspended, for the flush of its bytes and its
     * ledger row; so no libmicrohttpd thread blocks on a flush. A thread
     * serves many connections (with 32 keep-alive connections, 13 landed
     * on one thread) and one blocked in fdatasync stalled them all. */
    pthread_mutex_t job_mu;
    pthread_cond_t job_cv;
    struct req *job_head;
    struct req *job_tail;
    pthread_t committers[STORE_COMMITTERS];
    int n_committers;
    /* The packs whose regions each committer's batch holds (job_mu): a
     * pack is committed by one committer at a time (see "A pack at a
     * time" in store.c). */
    const store_fs_pack *held[STORE_COMMITTERS][STORE_HELD_PACKS];
    int n_held[STORE_COMMITTERS];
    int next_committer; /* the index the next committer to start takes */
    bool job_stop;  /* no new jobs: uploads commit on their own thread */
    bool gathering; /* a committer gathers a batch: the others leave the queue */

    /* The committers hash the ETag's MD5 of a batch of PUT bodies side by
     * side (md5_lanes), reading them back from the page cache, instead of
     * each connection hashing its own as it arrives; see "MD5 later" in
     * store.c. md5_kind: the CPU's vector kind (MD5_LANES_OPENSSL: none,
     * MD5 is always hashed as the body arrives). */
    md5_lanes_kind md5_kind;
    atomic_int puts_open;      /* PUT bodies that could be hashed later, begun, not freed */
    atomic_int later_arriving; /* bodies to be hashed later, not yet at the committers */
    /* Medium bodies are staged in the hasher's blocks, written with
     * O_DIRECT and MD5'd side by side as they arrive ("Staged direct
     * writes" in store.c); NULL without vector MD5. */
    struct md5_hasher *hasher;

    atomic_int active; /* requests between URI log and completion */
    atomic_int answers_pending; /* resumed to be answered, answer not yet gone */
    atomic_int pipes;  /* hash pipelines running */
    atomic_uint_fast64_t seq;
    char id_prefix[9];
};

/* PH_COMMITTING: the body is verified and its connection suspended while a
 * committer makes it durable and records it; PH_COMMITTED: resumed, the
 * outcome (commit_err) is answered. PH_MP: the body of a multipart call
 * (CompleteMultipartUpload's part list) is being collected by
 * store_multipart.c. */
enum phase {
    PH_NEW = 0,
    PH_HEAD_READ,
    PH_BODY,
    PH_POST,
    PH_DISCARD,
    PH_COMMITTING,
    PH_COMMITTED,
    PH_MP,
    PH_DONE
};

struct post_state;
struct store_mp_req;

typedef struct req {
    store *s;
    char *uri; /* raw request target */
    bool uri_too_long;
    char id[17];
    enum phase phase;
    store_target t;
    const char *method;

    /* PutObject */
    store_fs_slot slot;                   /* open while a body is written and committed */
    char reading[LEDGER_FILE_ID_MAX + 1]; /* GET, copy: the data being read */

    /* The commit of a verified upload (committers) */
    struct MHD_Connection *conn;
    ledger_object *obj; /* the row to record */
    char md5_hex[33];
    ferry_err commit_err;
    struct req *job_next;
    uint64_t expected;
    uint64_t received;
    uint64_t written;  /* bytes of body written to the slot */
    uint64_t wb_start; /* writeback started for body bytes [0, wb_start) */
    int64_t start_ns;
    EVP_MD_CTX *md5;
    EVP_MD_CTX *sha;
    bool want_md5;
    bool md5_later;      /* the committers compute the MD5 (commit_jobs) */
    bool md5_mismatch;   /* ... and it is not the Content-MD5 */
    bool puts_open;      /* counted in s->puts_open */
    bool later_arriving; /* counted in s->later_arriving */
    unsigned char content_md5[16];
    bool want_checksum;
    unsigned char checksum[32];
    char payload_sha[65];
    bool is_grant;
    ledger_grant grant;
    char content_type[LEDGER_CONTENT_TYPE_MAX + 1];
    char meta[LEDGER_META_MAX + 1];

    /* CopyObject: the source's data (fd, offset of its first byte in it)
     * and key, read on a thread of its own (store_run_long_work); the new
     * row is obj. */
    bool copying;
    bool copy_replace; /* x-amz-metadata-directive: REPLACE */
    int copy_in;
    uint64_t copy_in_base;
    char *copy_source;
    /* CopyObject, UploadPartCopy: a source made of its parts (copy_in and
     * the multipart copy fd are then -1) */
    struct store_mp_data *copy_parts;
    /* Work that takes seconds (CopyObject, UploadPartCopy, completing a
     * multipart upload), run by store_run_long_work. */
    void (*long_work)(struct req *r);
    bool resumed_to_answer; /* store_resume_to_answer: counted in s->answers_pending */

    struct post_state *post; /* POST object only */
    struct store_mp_req *mp; /* multipart upload calls only (store_multipart.c) */
    struct hash_pipe *pipe;  /* large PUT bodies: hashing on two helper threads */
    struct stage *stage;     /* medium PUT bodies: staged direct writes */

    /* an error found while the body was arriving, answered at its end */
    int err_status;
    const char *err_code;
    char err_msg[200];

    /* Body watchdog. progress (bytes of body seen, dropped ones included)
     * is written by the connection's thread; wstate by either side; the
     * w_* fields and the links only under s->watch_mu. */
    atomic_uint_fast64_t progress;
    atomic_int wstate;
    bool watched;
    struct req *w_prev, *w_next;
    int w_sock;
    void *w_tls; /* gnutls_session_t of a TLS connection, else NULL */
    uint64_t w_seen;
    int64_t w_seen_ns;
    int64_t w_answered_ns;
    bool w_shut;
} req;

typedef struct header_list {
    sigv4_kv kv[SIGV4_MAX_HEADERS];
    size_t n;
    size_t total;
    size_t bytes; /* the header section as sent: "name: value\r\n" each */
} header_list;

/* Shared helpers, defined in store.c (see there). */
enum MHD_Result store_respond_error(req *r, struct MHD_Connection *c, unsigned status,
                                    const char *code, const char *message);
/* Queues resp (consumed; NULL answers MHD_NO) with status. */
enum MHD_Result store_queue(req *r, struct MHD_Connection *c, unsigned status,
                            struct MHD_Response *resp);
/* An XML answer from b (emptied). */
enum MHD_Result store_respond_xml(req *r, struct MHD_Connection *c, unsigned status, ferry_buf *b);
struct MHD_Response *store_empty_response(void);
const char *store_header(struct MHD_Connection *c, const char *name);
ledger *store_pool_take(store *s);
/* Removes the packs that lost their last object, if any did
 * (store_fs_reclaim), with a ledger handle of the pool. */
void store_reclaim_if_due(store *s);
void store_pool_give(store *s, ledger *l);
bool store_collect_meta(const header_list *h, char *out, size_t out_size, const char **why);
/* PutObject's body handling (limits, digests, the data file, the hash
 * pipeline, the body watchdog) for an UploadPart: r->mp is set, so its end
 * goes to store_mp_part_done() instead of recording an object. */
enum MHD_Result store_begin_put(req *r, struct MHD_Connection *c, const header_list *h,
                                const sigv4_verdict *verdict);
/* Appends S3's answer naming r's object: <?xml?><root attrs><Location>
 * <Bucket><Key><ETag>, escaped (POST's PostResponse, multipart's
 * CompleteMultipartUploadResult). */
ferry_err store_location_xml(ferry_buf *b, const req *r, const char *root, const char *attrs,
                             const char *etag);
/* The request's Content-Type (S3's default when absent) into out; false,
 * with the request answered (400 InvalidArgument, *ret), when too long. */
bool store_content_type(req *r, struct MHD_Connection *c, char out[LEDGER_CONTENT_TYPE_MAX + 1],
                        enum MHD_Result *ret);
/* Finishes r's body digests (hex into md5_hex and sha_hex) and checks them
 * against what the request declared: Content-MD5, a signed
 * x-amz-content-sha256, x-amz-checksum-sha256. False, with the request
 * answered (*ret), on a mismatch. */
bool store_body_digests_ok(req *r, struct MHD_Connection *c, char md5_hex[33], char sha_hex[65],
                           enum MHD_Result *ret);
/* GetObject/HeadObject; part_number: the raw ?partNumber= value, or NULL
 * for the whole object (docs/store.md). */
enum MHD_Result store_get_object(req *r, struct MHD_Connection *c, bool head,
                                 const char *part_number);
/* The source of a copy (x-amz-copy-source, CopyObject and UploadPartCopy):
 * parsed, looked up into o, the x-amz-copy-source-if-* conditions checked,
 * its data opened (*fd_out at *base_out, registered as r's read: see
 * store_fs_read_done). False, with the request answered (*ret), otherwise. */
bool store_copy_source_open(req *r, struct MHD_Connection *c, ledger_object *o, int *fd_out,
                            uint64_t *base_out, enum MHD_Result *ret);
/* Hands r (its slot written, its record ready) to the committers with its
 * connection suspended; false when they are stopping. When they are done
 * they set r->phase = PH_COMMITTED and r->commit_err, and resume it. */
bool store_committer_submit(req *r, struct MHD_Connection *c);
/* What a committer does for r, on this thread (the committers stopping). */
void store_commit_now(req *r);
/* Runs work(r), which leaves r in PH_COMMITTED with its outcome, on a
 * thread of its own with the connection suspended (work that takes seconds
 * would stall every connection of a libmicrohttpd thread); work gives up
 * once s->mp_abort is set (shutdown). True when the answer comes once the
 * connection is resumed; false when no thread could take it (the store is
 * stopping): then work(r) ran on this thread and the caller answers now. */
bool store_run_long_work(req *r, struct MHD_Connection *c, void (*work)(req *r));

/* Resumes c, suspended while r's outcome was worked out elsewhere (a
 * committer, a long work), for its worker to answer; counted in
 * s->answers_pending until the answer has gone (on_completed), so that a
 * shutdown lets such answers out before it closes the connections. */
void store_resume_to_answer(req *r, struct MHD_Connection *c);
/* Puts r's body under the body watchdog (RequestTimeout). */
void store_watch_add(req *r, struct MHD_Connection *c);
/* Data the ledger no longer names: its file removed, or its pack region
 * (and the pack once empty) let go. */
void store_forget_data(store *s, const char *file_id);

#endif
