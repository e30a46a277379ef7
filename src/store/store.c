/*
 * store.c - the embedded store's HTTP server (libmicrohttpd) and its S3
 * operations; see store.h and docs/store.md.
 *
 * A request goes through on_access() in phases:
 *   PH_NEW      headers complete: the store's limits on the request head
 *               (target length, header bytes and count: set below
 *               libmicrohttpd's memory limit so that the S3 answer wins),
 *               path split, signature verified, grant checked, limits
 *               applied. Anything refused is answered here,
 *               before a byte of body is read (clients that sent
 *               "Expect: 100-continue" never send it).
 *   PH_HEAD_READ a GET, HEAD or DELETE without a body waits here for
 *               libmicrohttpd's next call, then is answered as in PH_NEW
 *               (an answer on the first call would cost the keep-alive).
 *   PH_BODY     PutObject: each chunk goes to the data file and into
 *               MD5 and SHA-256; the last call verifies, commits (fsync,
 *               fsync dir, ledger) and answers.
 *   PH_DISCARD  a failure in the middle of a body (a write error): the rest
 *               is read and dropped, then the error is answered.
 * While a body arrives, the body watchdog (its own thread) answers one that
 * stalls or trickles with 400 RequestTimeout, which libmicrohttpd cannot
 * (see "Body watchdog"); exactly one of the watchdog and the connection's
 * thread answers a body (enum watch_state).
 * The request context is created by the URI log callback (which sees the
 * raw request target, query string included, before libmicrohttpd decodes
 * it: SigV4 needs the bytes as sent) and freed by the completion callback,
 * which also removes the data file of any upload that did not commit,
 * whatever the reason (client gone, timeout, shutdown).
 */
#include "store.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <gnutls/gnutls.h>
#include <jansson.h>
#include <microhttpd.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "common/buf.h"
#include "common/file.h"
#include "common/log.h"
#include "common/timefmt.h"
#include "grants/grants.h"
#include "ledger/ledger.h"
#include "sigv4/sigv4.h"
#include "md5_hasher.h"
#include "md5_lanes_int.h"
#include "store_fs.h"
#include "store_int.h"
#include "store_multipart.h"
#include "store_req.h"

#define STORE_RAW_URI_MAX    (STORE_RAW_PATH_MAX + SIGV4_MAX_QUERY_LEN + 2)
#define STORE_XML_MAX        (8u << 20) /* a listing of 1,000 keys of 1 KB fits */
#define STORE_LIST_MAX_KEYS  1000
#define STORE_TLS_FILE_MAX   (256u << 10)

/* Who answers a body being received: nobody yet, the watchdog (it sent
 * RequestTimeout; the rest of the body is dropped, nothing is stored), or
 * the connection's own thread (the body ended: it verifies and answers).
 * Whichever moves the state away from W_RECEIVING first wins. */
enum watch_state { W_RECEIVING = 0, W_TIMED_OUT, W_FINISHING };

/* One per connection (libmicrohttpd's socket context), for the deadline on
 * request heads: in_request and head_start_ns are written by the
 * connection's thread; the links and shut only under s->watch_mu. */
typedef struct conn_watch {
    int sock;
    atomic_bool in_request;        /* a request head is complete */
    _Atomic int64_t head_start_ns; /* connection start or previous request's end */
    bool shut;
    struct conn_watch *prev, *next;
} conn_watch;

/* ---------------------------------------------------------------------- */
/* Ledger pool                                                              */

static ledger *pool_take(store *s)
{
    ledger *l;
    pthread_mutex_lock(&s->pool_mu);
    while (s->pool_free == 0)
        pthread_cond_wait(&s->pool_cv, &s->pool_mu);
    l = s->pool[--s->pool_free];
    pthread_mutex_unlock(&s->pool_mu);
    return l;
}

static void pool_give(store *s, ledger *l)
{
    pthread_mutex_lock(&s->pool_mu);
    s->pool[s->pool_free++] = l;
    pthread_cond_signal(&s->pool_cv);
    pthread_mutex_unlock(&s->pool_mu);
}

/* Data the ledger no longer names (a deleted or replaced object): its file
 * is removed, or its pack when no object of the pack is left; an object
 * made of its multipart parts lets go of every part's. */
static void forget_data(store *s, const char *file_id)
{
    if (store_fs_is_parts(file_id)) {
        store_mp_forget(s, file_id);
        return;
    }
    store_fs_remove_object(&s->fs, file_id);
    store_reclaim_if_due(s);
}

void store_reclaim_if_due(store *s)
{
    if (store_fs_reclaim_due(&s->fs)) {
        ledger *l = pool_take(s);
        store_fs_reclaim(&s->fs, l);
        pool_give(s, l);
    }
}

/* Opens the data of o, just looked up, for reading until r is freed. A
 * packed object's row is read again once its pack counts r as a reader: if
 * the object was deleted or replaced in between, its region may be punched
 * already, so it is not found (as if the lookup had come later). */
static ferry_err open_object_data(req *r, const ledger_object *o, int *fd_out, uint64_t *base_out)
{
    store *s = r->s;
    ledger_object *again = NULL;
    ledger *l;
    int fd = -1;
    ferry_err e = store_fs_open_data(&s->fs, o->file_id, &fd, base_out);
    if (e != FERRY_OK)
        return e;
    snprintf(r->reading, sizeof r->reading, "%s", o->file_id);
    if (store_fs_is_packed(o->file_id)) {
        again = malloc(sizeof *again);
        if (again == NULL) {
            e = FERRY_ERR_NOMEM;
        } else {
            l = pool_take(s);
            e = ledger_object_get(l, o->bucket, o->key, again);
            pool_give(s, l);
            if (e == FERRY_OK && strcmp(again->file_id, o->file_id) != 0)
                e = FERRY_ERR_NOT_FOUND;
            free(again);
        }
    }
    if (e != FERRY_OK) {
        close(fd);
        store_fs_read_done(&s->fs, r->reading);
        r->reading[0] = '\0';
        return e;
    }
    *fd_out = fd;
    return FERRY_OK;
}

/* ---------------------------------------------------------------------- */
/* Group commit of object records                                           */

#define COMMIT_BATCH_MAX 256

typedef struct commit_item {
    ledger_object_put_item item;
    bool done;
    struct commit_item *next;
} commit_item;

/* Records the n objects of mine (each consuming its grant) together with
 * whatever other uploads are waiting; each item's err and replaced file id
 * are its own result. Without the queue, 32 threads would each wait for
 * SQLite's write lock (whose busy handler sleeps) and pay one log fsync per
 * object. The leader commits batches in queue order, so the last of mine
 * being done means all of them are. */
static void group_commit_many(store *s, commit_item *mine, size_t n)
{
    if (n == 0)
        return;
    pthread_mutex_lock(&s->cq_mu);
    for (size_t i = 0; i < n; i++) {
        mine[i].done = false;
        mine[i].next = NULL;
        if (s->cq_tail != NULL)
            s->cq_tail->next = &mine[i];
        else
            s->cq_head = &mine[i];
        s->cq_tail = &mine[i];
    }
    while (!mine[n - 1].done) {
        if (s->cq_leader) {
            pthread_cond_wait(&s->cq_cv, &s->cq_mu);
            continue;
        }
        s->cq_leader = true;
        while (s->cq_head != NULL) {
            ledger_object_put_item items[COMMIT_BATCH_MAX];
            commit_item *batch[COMMIT_BATCH_MAX];
            size_t k = 0;
            while (s->cq_head != NULL && k < COMMIT_BATCH_MAX) {
                batch[k] = s->cq_head;
                items[k] = s->cq_head->item;
                k++;
                s->cq_head = s->cq_head->next;
            }
            if (s->cq_head == NULL)
                s->cq_tail = NULL;
            pthread_mutex_unlock(&s->cq_mu);
            ledger *l = pool_take(s);
            ferry_err e = ledger_object_put_batch(l, items, k);
            pool_give(s, l);
            pthread_mutex_lock(&s->cq_mu);
            for (size_t i = 0; i < k; i++) {
                batch[i]->item.err = e != FERRY_OK ? e : items[i].err;
                memcpy(batch[i]->item.replaced_file_id, items[i].replaced_file_id,
                       sizeof items[i].replaced_file_id);
                batch[i]->done = true;
            }
            pthread_cond_broadcast(&s->cq_cv);
        }
        s->cq_leader = false;
        pthread_cond_broadcast(&s->cq_cv);
    }
    pthread_mutex_unlock(&s->cq_mu);
}

/* One object: group_commit_many of one. */
static ferry_err group_commit(store *s, const ledger_object *o, int64_t now, char *replaced)
{
    commit_item me;
    memset(&me, 0, sizeof me);
    me.item.obj = o;
    me.item.now = now;
    group_commit_many(s, &me, 1);
    if (me.item.err == FERRY_OK)
        memcpy(replaced, me.item.replaced_file_id, sizeof me.item.replaced_file_id);
    return me.item.err;
}

/*
 * MD5 later: the ETag's MD5 costs ~1.4 ms of CPU per MiB (one stream runs
 * at the latency of MD5's dependency chain), the largest cost of a PUT
 * after the data's own copies; 16 streams side by side in AVX-512 lanes
 * cost about what one does. So while several PUT bodies are arriving at
 * once (md5_later_decide), a PutObject body is not MD5-hashed as it
 * arrives: the committer that takes it reads it back from the page cache
 * with the other bodies of its batch and hashes them together
 * (md5_later_hash), then checks a Content-MD5 (BadDigest, the bytes
 * removed, as before), before the bytes are flushed and the rows written.
 * The SHA-256 is still computed as the body arrives (SHA-NI runs it at
 * ~1.7 GB/s) and the SHA-256 digests the client sent are checked before
 * the upload goes to the committers, so when both a SHA-256 and the
 * Content-MD5 are wrong, the answer names the SHA-256.
 * A lone upload is hashed as it arrives, as before: one or two streams
 * gain nothing from the lanes and would only answer later.
 */
#define MD5_LATER_MIN_PUTS 3              /* bodies arriving at once, this one included */
#define MD5_LATER_MAX      (8u << 20) /* PIPE_MIN_BYTES: larger ones use the hash pipeline */

static void md5_later_decide(req *r)
{
    store *s = r->s;
    if (r->pipe != NULL || r->stage != NULL || r->mp != NULL || s->md5_kind == MD5_LANES_OPENSSL ||
        r->expected == 0 || r->expected > MD5_LATER_MAX)
        return;
    r->puts_open = true;
    r->md5_later = atomic_fetch_add(&s->puts_open, 1) + 1 >= MD5_LATER_MIN_PUTS;
    if (r->md5_later) {
        r->later_arriving = true;
        atomic_fetch_add(&s->later_arriving, 1);
    }
}

/* r's body has arrived (or never will): the committers stop counting on
 * it when they gather a batch (gather_jobs). */
static void later_arrived(req *r)
{
    if (r->later_arriving) {
        r->later_arriving = false;
        atomic_fetch_sub(&r->s->later_arriving, 1);
    }
}

/* Computes the MD5 of every job of jobs[0..n) that left it to the
 * committers, all together, into its md5_hex and its row's ETag; a body
 * that cannot be read back fails its upload (commit_err). scratch may be
 * NULL (one is made for the call). */
static void md5_later_hash(req **jobs, size_t n, md5_lanes_scratch *scratch)
{
    md5_lanes_file *files = calloc(n, sizeof *files);
    req **of = calloc(n, sizeof *of);
    md5_lanes_scratch *own = NULL;
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (!jobs[i]->md5_later || jobs[i]->commit_err != FERRY_OK)
            continue;
        if (files == NULL || of == NULL) {
            jobs[i]->commit_err = FERRY_ERR_NOMEM;
            continue;
        }
        files[m].fd = jobs[i]->slot.fd;
        files[m].off = jobs[i]->slot.base;
        files[m].len = jobs[i]->received;
        of[m++] = jobs[i];
    }
    if (m > 0 && scratch == NULL && (scratch = own = md5_lanes_scratch_new()) == NULL) {
        for (size_t k = 0; k < m; k++)
            of[k]->commit_err = FERRY_ERR_NOMEM;
        m = 0;
    }
    if (m > 0)
        md5_lanes_files(files, m, scratch);
    for (size_t k = 0; k < m; k++) {
        req *r = of[k];
        if (files[k].err != 0) {
            log_error("store.read_back_failed", "request_id=%s file_id=%s error=\"%s\"", r->id,
                      r->slot.id, strerror(files[k].err));
            r->commit_err = FERRY_ERR_IO;
            continue;
        }
        if (r->want_md5 && CRYPTO_memcmp(files[k].digest, r->content_md5, 16) != 0) {
            r->md5_mismatch = true;
            r->commit_err = FERRY_ERR_INVALID;
            continue;
        }
        store_hex(files[k].digest, 16, r->md5_hex);
        snprintf(r->obj->etag, sizeof r->obj->etag, "%s", r->md5_hex);
    }
    md5_lanes_scratch_free(own);
    free(files);
    free(of);
}

/* Makes the verified uploads jobs[0..n) durable and records them: the MD5
 * of those that left it to the committers computed (md5_later_hash), their
 * bytes flushed (one fdatasync for all the regions of a pack), then their
 * rows in one group commit; each request's outcome goes to its commit_err,
 * its slot is closed (its bytes removed unless recorded) and the data of
 * an object it replaced is let go. */
static void commit_jobs(store *s, req **jobs, size_t n, md5_lanes_scratch *scratch)
{
    commit_item *items = calloc(n, sizeof *items);
    size_t *of = calloc(n, sizeof *of);
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        jobs[i]->commit_err = FERRY_OK;
    if (items == NULL || of == NULL) {
        for (size_t i = 0; i < n; i++)
            jobs[i]->commit_err = FERRY_ERR_NOMEM;
        goto out;
    }
    md5_later_hash(jobs, n, scratch);
    for (size_t i = 0; i < n; i++)
        store_fs_slot_written(&jobs[i]->slot); /* so one flush covers the batch */
    for (size_t i = 0; i < n; i++) {
        req *r = jobs[i];
        if (r->commit_err != FERRY_OK)
            continue;
        r->commit_err = store_fs_slot_sync(&s->fs, &r->slot);
        if (r->commit_err != FERRY_OK)
            continue;
        if (r->mp != NULL) {
            /* A multipart part (UploadPart, UploadPartCopy): its own row. */
            r->commit_err = store_mp_record_part(s, r);
            continue;
        }
        items[m].item.obj = r->obj;
        items[m].item.now = r->obj->created_at;
        of[m++] = i;
    }
    group_commit_many(s, items, m);
    for (size_t k = 0; k < m; k++) {
        req *r = jobs[of[k]];
        r->commit_err = items[k].item.err;
        if (r->commit_err == FERRY_OK && items[k].item.replaced_file_id[0] != '\0')
            forget_data(s, items[k].item.replaced_file_id);
    }
out:
    for (size_t i = 0; i < n; i++) {
        req *r = jobs[i];
        /* The slot stays open (its pack cannot be removed) until its row
         * is committed or refused. */
        store_fs_slot_close(&s->fs, &r->slot, r->commit_err == FERRY_OK);
        if (r->commit_err == FERRY_ERR_CONFLICT && r->is_grant) {
            /* Say which: another upload won the race, or it was revoked. */
            ledger_grant g;
            ledger *l = pool_take(s);
            if (ledger_grant_get(l, r->grant.id, &g) == FERRY_OK &&
                g.state == LEDGER_GRANT_REVOKED)
                r->commit_err = FERRY_ERR_DENIED;
            pool_give(s, l);
        }
    }
    free(items);
    free(of);
}

/*
 * A pack at a time: the uploads whose bodies went to one pack are committed
 * by one committer at a time. Two committers flushing the same pack wait
 * on each other in fdatasync anyway, and each makes a ledger commit for its
 * few rows; one committer taking every job of the pack queued meanwhile
 * makes one flush and one commit for all. (With 32 connections of 64 KiB
 * PUTs, all in one pack, the batches held ~3.5 uploads; one committer for
 * everything cut the CPU per upload by ~15% but made 1 MiB PUTs, spread
 * over four packs, ~13% slower, their flushes no longer overlapping.) A
 * committer's batch holds the packs of the jobs it took (s->held) until it
 * is done, and the others leave those packs' jobs in the queue. With the
 * wake-ups in committer_submit: ~19% less CPU a 64 KiB PUT, 1 MiB PUTs
 * unchanged (docs/benchmarks.md, upload).
 */
static bool pack_held_by(const store *s, int committer, const store_fs_pack *p)
{
    for (int k = 0; k < s->n_held[committer]; k++)
        if (s->held[committer][k] == p)
            return true;
    return false;
}

/* self: -1 for "by any committer". */
static bool pack_held_by_other(const store *s, int self, const store_fs_pack *p)
{
    for (int c = 0; c < STORE_COMMITTERS; c++)
        if (c != self && pack_held_by(s, c, p))
            return true;
    return false;
}

/* Whether committer self may take r now (under job_mu): a file of its
 * own, a pack it holds, or one nobody holds while it has room for one
 * more. */
static bool job_takeable(const store *s, int self, const req *r)
{
    const store_fs_pack *p = r->slot.pack;
    if (p == NULL || pack_held_by(s, self, p))
        return true;
    return s->n_held[self] < STORE_HELD_PACKS && !pack_held_by_other(s, self, p);
}

static bool any_takeable(const store *s, int self)
{
    for (const req *r = s->job_head; r != NULL; r = r->job_next)
        if (job_takeable(s, self, r))
            return true;
    return false;
}

/* Moves the queued jobs committer self may take into
 * jobs[*n..COMMIT_BATCH_MAX), holding their packs (under job_mu); returns
 * how many of those leave their MD5 to the committers, and adds their
 * bytes to *later_bytes. */
static size_t take_jobs(store *s, int self, req **jobs, size_t *n, uint64_t *later_bytes)
{
    size_t later = 0;
    req *prev = NULL, *r = s->job_head;
    while (r != NULL && *n < COMMIT_BATCH_MAX) {
        req *next = r->job_next;
        if (!job_takeable(s, self, r)) {
            prev = r;
            r = next;
            continue;
        }
        if (r->slot.pack != NULL && !pack_held_by(s, self, r->slot.pack))
            s->held[self][s->n_held[self]++] = r->slot.pack;
        later += r->md5_later;
        if (r->md5_later)
            *later_bytes += r->received;
        jobs[(*n)++] = r;
        if (prev != NULL)
            prev->job_next = next;
        else
            s->job_head = next;
        if (s->job_tail == r)
            s->job_tail = prev;
        r = next;
    }
    return later;
}

/*
 * Gathering a batch for the lanes: bodies whose MD5 is left to the
 * committers are hashed side by side, 16 at a time, and one or two at a
 * time gain nothing; but with 4 committers each taking the queue as soon
 * as a job arrives, most batches held one or two (measured: half of the
 * MD5 work went through OpenSSL one stream at a time with 32 concurrent
 * 1 MiB PUTs). So a committer whose batch holds fewer than
 * MD5_GATHER_WANT such bodies, while more of them are still arriving
 * (s->later_arriving), waits up to MD5_GATHER_NS for them, taking each
 * as it is queued; meanwhile the other committers leave the queue to it
 * (s->gathering). The wait costs no CPU and happens only while several
 * uploads are in progress, whose clients keep the machine busy anyway;
 * and only for bodies of MD5_GATHER_MIN_AVG bytes or more on average: the
 * MD5 of a small one is worth less than the wait (0.1 ms of CPU for 64 KiB,
 * while 32 connections of 64 KiB PUTs are answered every ~16 ms).
 */
#define MD5_GATHER_WANT    16
#define MD5_GATHER_NS      (4 * 1000000)
#define MD5_GATHER_MIN_AVG (256u << 10)

static void gather_jobs(store *s, int self, req **jobs, size_t *n, size_t later,
                        uint64_t later_bytes)
{
    struct timespec deadline = ferry_time_mono_deadline(MD5_GATHER_NS);
    s->gathering = true;
    while (later < MD5_GATHER_WANT && *n < COMMIT_BATCH_MAX && !s->job_stop &&
           atomic_load(&s->later_arriving) > 0) {
        if (pthread_cond_timedwait(&s->job_cv, &s->job_mu, &deadline) == ETIMEDOUT) {
            later += take_jobs(s, self, jobs, n, &later_bytes);
            break;
        }
        later += take_jobs(s, self, jobs, n, &later_bytes);
    }
    s->gathering = false;
    pthread_cond_broadcast(&s->job_cv); /* the others may take the queue again */
}

static void *committer_main(void *arg)
{
    store *s = arg;
    req *jobs[COMMIT_BATCH_MAX];
    /* NULL (no memory now) is retried by each batch that needs one. */
    md5_lanes_scratch *scratch = md5_lanes_scratch_new();
    pthread_mutex_lock(&s->job_mu);
    int self = s->next_committer++;
    for (;;) {
        size_t n = 0, later;
        uint64_t later_bytes = 0;
        /* Once stopping, every job is still committed: jobs of a pack
         * another committer holds wait for its release. */
        while (s->job_stop ? s->job_head != NULL && !any_takeable(s, self)
                           : s->gathering || !any_takeable(s, self))
            pthread_cond_wait(&s->job_cv, &s->job_mu);
        if (s->job_head == NULL)
            break; /* stopping, and every job is done */
        later = take_jobs(s, self, jobs, &n, &later_bytes);
        if (later > 0 && later < MD5_GATHER_WANT && later_bytes / later >= MD5_GATHER_MIN_AVG &&
            !s->job_stop && atomic_load(&s->later_arriving) > 0)
            gather_jobs(s, self, jobs, &n, later, later_bytes);
        pthread_mutex_unlock(&s->job_mu);
        commit_jobs(s, jobs, n, scratch);
        for (size_t i = 0; i < n; i++) {
            struct MHD_Connection *c = jobs[i]->conn;
            jobs[i]->phase = PH_COMMITTED;
            /* From here the connection's thread may answer and free it. */
            store_resume_to_answer(jobs[i], c);
        }
        pthread_mutex_lock(&s->job_mu);
        /* The jobs of its packs queued meanwhile: this committer takes
         * them next (nobody was woken for them); once stopping, the others
         * may be waiting for them. */
        s->n_held[self] = 0;
        if (s->job_stop)
            pthread_cond_broadcast(&s->job_cv);
    }
    pthread_mutex_unlock(&s->job_mu);
    md5_lanes_scratch_free(scratch);
    return NULL;
}

/* Hands r to the committers with its connection suspended; false when they
 * are stopping (the caller commits on its own thread). */
static bool committer_submit(req *r, struct MHD_Connection *c)
{
    store *s = r->s;
    bool ok;
    pthread_mutex_lock(&s->job_mu);
    ok = !s->job_stop && s->n_committers > 0;
    if (ok) {
        r->conn = c;
        r->phase = PH_COMMITTING;
        r->job_next = NULL;
        MHD_suspend_connection(c);
        if (s->job_tail != NULL)
            s->job_tail->job_next = r;
        else
            s->job_head = r;
        s->job_tail = r;
        later_arrived(r);
        /* All while a committer gathers: it must hear of it, not only an
         * idle one. Otherwise one idle committer, and none for a pack a
         * committer holds: that one takes it when its batch is done.
         * (Waking every idle committer for each job cost ~3 wake-ups an
         * upload, all but one of them for nothing.) */
        if (s->gathering)
            pthread_cond_broadcast(&s->job_cv);
        else if (r->slot.pack == NULL || !pack_held_by_other(s, -1, r->slot.pack))
            pthread_cond_signal(&s->job_cv);
    }
    pthread_mutex_unlock(&s->job_mu);
    return ok;
}

/* Lets the committers finish every job (resuming its connection), then
 * stops them. */
static void committers_stop(store *s)
{
    pthread_mutex_lock(&s->job_mu);
    s->job_stop = true;
    pthread_cond_broadcast(&s->job_cv);
    pthread_mutex_unlock(&s->job_mu);
    for (int i = 0; i < s->n_committers; i++)
        pthread_join(s->committers[i], NULL);
    s->n_committers = 0;
    s->next_committer = 0;
}

/* ---------------------------------------------------------------------- */
/* Answers                                                                  */

static void add_common_headers(req *r, struct MHD_Response *resp)
{
    MHD_add_response_header(resp, "x-amz-request-id", r->id);
    MHD_add_response_header(resp, "Server", "Ferry");
}

/* Queues resp (consumed) with status; PH_DONE. */
static enum MHD_Result queue(req *r, struct MHD_Connection *c, unsigned status,
                             struct MHD_Response *resp)
{
    enum MHD_Result ret;
    if (resp == NULL)
        return MHD_NO;
    add_common_headers(r, resp);
    ret = MHD_queue_response(c, status, resp);
    MHD_destroy_response(resp);
    r->phase = PH_DONE;
    return ret;
}

static struct MHD_Response *buf_response(ferry_buf *b)
{
    size_t len = b->len;
    char *data = ferry_buf_detach(b);
    if (data == NULL && len > 0)
        return NULL;
    if (data == NULL)
        return MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, data, MHD_RESPMEM_MUST_FREE);
    if (resp == NULL)
        free(data);
    return resp;
}

static struct MHD_Response *empty_response(void)
{
    return MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
}

/* Appends the S3 error document to b, e.g.
 * <Error><Code>AccessDenied</Code><Message>grant revoked</Message>
 * <Resource>/ingest/key</Resource><RequestId>…</RequestId></Error>,
 * and logs the refusal. The resource is r's bucket and, unless no_key, its
 * key (the body watchdog passes no_key for a form upload, whose key its
 * connection's thread may be writing). */
static ferry_err error_xml(const req *r, ferry_buf *b, unsigned status, const char *code,
                           const char *message, bool no_key)
{
    const char *key = no_key ? "" : r->t.key;
    size_t key_len = no_key ? 0 : r->t.key_len;
    ferry_err e;
    e = ferry_buf_append_str(b, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>");
    if (e == FERRY_OK)
        e = ferry_buf_append_str(b, code);
    if (e == FERRY_OK)
        e = ferry_buf_append_str(b, "</Code><Message>");
    if (e == FERRY_OK)
        e = store_xml_escape(b, message, strlen(message));
    if (e == FERRY_OK && r->t.bucket[0] != '\0') {
        e = ferry_buf_append_str(b, "</Message><Resource>/");
        if (e == FERRY_OK)
            e = store_xml_escape(b, r->t.bucket, strlen(r->t.bucket));
        if (e == FERRY_OK && key_len > 0)
            e = ferry_buf_append_byte(b, '/');
        if (e == FERRY_OK)
            e = store_xml_escape(b, key, key_len);
        if (e == FERRY_OK)
            e = ferry_buf_append_str(b, "</Resource><RequestId>");
    } else if (e == FERRY_OK) {
        e = ferry_buf_append_str(b, "</Message><RequestId>");
    }
    if (e == FERRY_OK)
        e = ferry_buf_appendf(b, "%s</RequestId></Error>", r->id);
    log_info("store.refused", "request_id=%s method=%s status=%u code=%s message=\"%s\" key=\"%s\"",
             r->id, r->method, status, code, message, key);
    return e;
}

/* The S3 error document as the answer to r. */
static enum MHD_Result respond_error(req *r, struct MHD_Connection *c, unsigned status,
                                     const char *code, const char *message)
{
    ferry_buf b;
    ferry_err e;
    ferry_buf_init(&b, 8192);
    e = error_xml(r, &b, status, code, message, false);
    if (e != FERRY_OK) {
        ferry_buf_cleanup(&b);
        return MHD_NO;
    }
    struct MHD_Response *resp = buf_response(&b);
    ferry_buf_cleanup(&b);
    if (resp == NULL)
        return MHD_NO;
    MHD_add_response_header(resp, "Content-Type", "application/xml");
    return queue(r, c, status, resp);
}

/* Remembers an error found mid-body; it is answered once the body ends. */
static void defer_error(req *r, unsigned status, const char *code, const char *message)
{
    if (r->err_code != NULL)
        return;
    r->err_status = (int)status;
    r->err_code = code;
    snprintf(r->err_msg, sizeof r->err_msg, "%s", message);
}

/* ---------------------------------------------------------------------- */
/* Body watchdog: RequestTimeout                                            */

/*
 * S3 answers a body that stops, or trickles too slowly, with 400
 * RequestTimeout and closes the connection. libmicrohttpd 0.9.75 cannot
 * do that by itself: its connection timeout closes silently, a response
 * can only be queued before the body is read or after all of it, and a
 * silent connection never calls the access handler. So one store thread
 * looks at every body being received (PutObject and POST) every
 * WATCH_TICK_MS; one that has sent nothing for idle_timeout, or averages
 * less than min_upload_rate once min_rate_grace has passed, gets the
 * RequestTimeout answer written on its socket (through its TLS session)
 * by this thread, then the end of the stream (TLS close_notify, FIN). The
 * connection's thread drops whatever body still arrives and stores
 * nothing; WATCH_LINGER_MS later the watchdog shuts the socket's reading
 * side, so libmicrohttpd closes the connection and its completion callback
 * removes the data file. The linger lets a client that is still sending
 * read the answer before the close (a close with unread bytes resets the
 * connection, which can discard the answer on the client's side).
 *
 * Writing from this thread while the connection's thread may read is safe:
 * GnuTLS allows one thread sending and one receiving on a session, and
 * libmicrohttpd sends nothing while it receives a body (its "100 Continue"
 * went out before the first byte of body arrived).
 */
#define WATCH_TICK_MS   250
#define WATCH_LINGER_MS 2000
#define WATCH_SEND_MS   200 /* the answer must fit in the socket buffer by then */

/* Sends data[0..len) on r's connection without blocking for more than
 * WATCH_SEND_MS; false when it could not. */
static bool watch_send(req *r, const char *data, size_t len)
{
    int64_t deadline = ferry_time_mono_ns() + (int64_t)WATCH_SEND_MS * 1000000;
    size_t off = 0;
    while (off < len) {
        ssize_t n;
        bool again;
        if (r->w_tls != NULL) {
            n = gnutls_record_send((gnutls_session_t)r->w_tls, data + off, len - off);
            again = n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED;
        } else {
            n = send(r->w_sock, data + off, len - off, MSG_NOSIGNAL | MSG_DONTWAIT);
            again = n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR);
        }
        if (n > 0) {
            off += (size_t)n;
            continue;
        }
        int64_t left_ms = (deadline - ferry_time_mono_ns()) / 1000000;
        if (!again || left_ms <= 0)
            return false;
        struct pollfd pfd = {.fd = r->w_sock, .events = POLLOUT};
        (void)poll(&pfd, 1, (int)left_ms);
    }
    return true;
}

static void http_date(int64_t t, char out[64]);

/* Answers r with 400 RequestTimeout and ends the stream; called by the
 * watchdog under watch_mu once it won r (W_RECEIVING -> W_TIMED_OUT). */
static void watch_answer(req *r, const char *why)
{
    ferry_buf xml, msg;
    char date[64];
    bool sent = false;
    ferry_buf_init(&xml, 8192);
    ferry_buf_init(&msg, 16384);
    http_date(ferry_time_now(), date);
    ferry_err e = error_xml(r, &xml, 400, "RequestTimeout",
                            "Your socket connection to the server was not read from or written "
                            "to within the timeout period.",
                            r->post != NULL);
    if (e == FERRY_OK)
        e = ferry_buf_appendf(&msg,
                              "HTTP/1.1 400 Bad Request\r\nDate: %s\r\nServer: Ferry\r\n"
                              "x-amz-request-id: %s\r\nContent-Type: application/xml\r\n"
                              "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                              date, r->id, xml.len);
    if (e == FERRY_OK)
        e = ferry_buf_append(&msg, xml.data, xml.len);
    if (e == FERRY_OK)
        sent = watch_send(r, msg.data, msg.len);
    if (r->w_tls != NULL)
        (void)gnutls_bye((gnutls_session_t)r->w_tls, GNUTLS_SHUT_WR);
    (void)shutdown(r->w_sock, SHUT_WR);
    log_info("store.request_timeout",
             "request_id=%s reason=%s received=%" PRIu64 " expected=%" PRIu64 " answered=%s", r->id,
             why, (uint64_t)atomic_load(&r->progress), r->expected, sent ? "yes" : "no");
    ferry_buf_cleanup(&xml);
    ferry_buf_cleanup(&msg);
    r->w_answered_ns = ferry_time_mono_ns();
}

/* One look at r (under watch_mu). */
static void watch_check(store *s, req *r, int64_t now)
{
    int state = atomic_load(&r->wstate);
    if (state == W_FINISHING)
        return;
    if (state == W_TIMED_OUT) {
        /* The linger is over: end the connection (see above). */
        if (!r->w_shut && now - r->w_answered_ns >= (int64_t)WATCH_LINGER_MS * 1000000) {
            (void)shutdown(r->w_sock, SHUT_RDWR);
            r->w_shut = true;
        }
        return;
    }
    uint64_t seen = atomic_load(&r->progress);
    if (seen != r->w_seen) {
        r->w_seen = seen;
        r->w_seen_ns = now;
    }
    const char *why = NULL;
    int64_t elapsed = now - r->start_ns;
    if (now - r->w_seen_ns >= s->stall_ns)
        why = "stalled";
    else if (s->min_upload_rate > 0 && elapsed > s->min_rate_grace_ns &&
             (double)seen < (double)s->min_upload_rate * ((double)elapsed / 1e9))
        why = "too_slow";
    if (why == NULL)
        return;
    int expect = W_RECEIVING;
    if (atomic_compare_exchange_strong(&r->wstate, &expect, W_TIMED_OUT))
        watch_answer(r, why);
}

/* A connection whose request head is not complete head_timeout after the
 * connection began, or after its previous request ended, is closed: a
 * client trickling its request line or headers (slowloris) would
 * otherwise hold the connection as long as it sends a byte within every
 * idle_timeout. There is no request to answer yet (and before the TLS
 * handshake no way to): the socket is shut down and libmicrohttpd closes
 * the connection. */
static void head_check(store *s, conn_watch *w, int64_t now)
{
    if (w->shut || atomic_load(&w->in_request) ||
        now - atomic_load(&w->head_start_ns) < s->head_timeout_ns)
        return;
    (void)shutdown(w->sock, SHUT_RDWR);
    w->shut = true;
    log_info("store.head_timeout", "sock=%d", w->sock);
}

/* MHD_OPTION_NOTIFY_CONNECTION: connections enter and leave s->conns. */
static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe)
{
    store *s = cls;
    conn_watch *w;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *fd_info =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        w = calloc(1, sizeof *w);
        if (w == NULL || fd_info == NULL) {
            free(w); /* unwatched: libmicrohttpd's idle timeout still applies */
            return;
        }
        w->sock = fd_info->connect_fd;
        /* An answer is a few small TLS records after a long body: with
         * Nagle each waited for the client's delayed ACK of the previous
         * one (~40 ms a request, 32 connections at ~900 PUT/s). */
        (void)setsockopt(w->sock, IPPROTO_TCP, TCP_NODELAY, &(int){1}, sizeof(int));
        atomic_store(&w->head_start_ns, ferry_time_mono_ns());
        pthread_mutex_lock(&s->watch_mu);
        w->next = s->conns;
        if (s->conns != NULL)
            s->conns->prev = w;
        s->conns = w;
        pthread_mutex_unlock(&s->watch_mu);
        *socket_context = w;
        return;
    }
    w = *socket_context;
    if (w == NULL)
        return;
    pthread_mutex_lock(&s->watch_mu);
    if (w->prev != NULL)
        w->prev->next = w->next;
    else
        s->conns = w->next;
    if (w->next != NULL)
        w->next->prev = w->prev;
    pthread_mutex_unlock(&s->watch_mu);
    free(w);
    *socket_context = NULL;
}

/* The connection's head deadline state; NULL when unwatched. */
static conn_watch *conn_of(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci != NULL ? ci->socket_context : NULL;
}

static void *watch_thread(void *arg)
{
    store *s = arg;
    pthread_mutex_lock(&s->watch_mu);
    while (!s->watch_stop) {
        struct timespec ts = ferry_time_mono_deadline((int64_t)WATCH_TICK_MS * 1000000);
        (void)pthread_cond_timedwait(&s->watch_cv, &s->watch_mu, &ts);
        int64_t now = ferry_time_mono_ns();
        for (req *r = s->watch_head; r != NULL && !s->watch_stop; r = r->w_next)
            watch_check(s, r, now);
        for (conn_watch *w = s->conns; w != NULL && !s->watch_stop; w = w->next)
            head_check(s, w, now);
    }
    pthread_mutex_unlock(&s->watch_mu);
    return NULL;
}

/* Puts r (whose body is about to arrive on connection c) under watch, and
 * gives libmicrohttpd's own timeout for c enough slack that the watchdog
 * answers first. */
static void watch_add(req *r, struct MHD_Connection *c)
{
    store *s = r->s;
    const union MHD_ConnectionInfo *fd_info =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    const union MHD_ConnectionInfo *tls_info =
        s->tls ? MHD_get_connection_info(c, MHD_CONNECTION_INFO_GNUTLS_SESSION) : NULL;
    if (fd_info == NULL || (s->tls && (tls_info == NULL || tls_info->tls_session == NULL)))
        return; /* unwatched: libmicrohttpd's idle timeout still applies */
    /* on_access() sets it back when the body has ended. */
    (void)MHD_set_connection_option(c, MHD_CONNECTION_OPTION_TIMEOUT,
                                    s->idle_timeout_s + (WATCH_LINGER_MS / 1000) + 3);
    pthread_mutex_lock(&s->watch_mu);
    r->w_sock = fd_info->connect_fd;
    r->w_tls = tls_info != NULL ? tls_info->tls_session : NULL;
    r->w_seen = atomic_load(&r->progress);
    r->w_seen_ns = ferry_time_mono_ns();
    r->w_next = s->watch_head;
    r->w_prev = NULL;
    if (s->watch_head != NULL)
        s->watch_head->w_prev = r;
    s->watch_head = r;
    r->watched = true;
    pthread_mutex_unlock(&s->watch_mu);
}

static void watch_remove(req *r)
{
    store *s = r->s;
    if (!r->watched)
        return;
    pthread_mutex_lock(&s->watch_mu);
    if (r->w_prev != NULL)
        r->w_prev->w_next = r->w_next;
    else
        s->watch_head = r->w_next;
    if (r->w_next != NULL)
        r->w_next->w_prev = r->w_prev;
    r->watched = false;
    pthread_mutex_unlock(&s->watch_mu);
}

/* The body ended: the connection's thread answers it, unless the watchdog
 * already did (then false: nothing may be stored, the connection closes). */
static bool watch_claim(req *r)
{
    int expect = W_RECEIVING;
    return atomic_compare_exchange_strong(&r->wstate, &expect, W_FINISHING) ||
           expect == W_FINISHING;
}

/* ---------------------------------------------------------------------- */
/* Request context                                                          */

static void pipe_free(store *s, struct hash_pipe *p);
static void stage_free(req *r);

static void req_discard_upload(req *r)
{
    pipe_free(r->s, r->pipe);
    r->pipe = NULL;
    stage_free(r);
    store_fs_slot_close(&r->s->fs, &r->slot, false);
}

static void post_state_free(struct post_state *ps);

static void req_free(req *r)
{
    if (r == NULL)
        return;
    watch_remove(r);
    req_discard_upload(r);
    if (r->reading[0] != '\0')
        store_fs_read_done(&r->s->fs, r->reading);
    post_state_free(r->post);
    store_mp_req_free(r->mp);
    if (r->copying && r->copy_in >= 0)
        close(r->copy_in);
    store_mp_data_free(r->copy_parts);
    free(r->copy_source);
    free(r->obj);
    EVP_MD_CTX_free(r->md5);
    EVP_MD_CTX_free(r->sha);
    if (r->puts_open)
        atomic_fetch_sub(&r->s->puts_open, 1);
    later_arrived(r);
    free(r->uri);
    atomic_fetch_sub(&r->s->active, 1);
    free(r);
}

/* MHD_OPTION_URI_LOG_CALLBACK: the raw request target, before any
 * decoding; its return value becomes the request's context. */
static void *on_uri(void *cls, const char *uri, struct MHD_Connection *c)
{
    store *s = cls;
    req *r = calloc(1, sizeof *r);
    (void)c;
    if (r == NULL)
        return NULL;
    r->s = s;
    store_fs_slot_init(&r->slot);
    r->method = "?";
    atomic_fetch_add(&s->active, 1);
    uint64_t n = atomic_fetch_add(&s->seq, 1);
    snprintf(r->id, sizeof r->id, "%s%08" PRIx64, s->id_prefix, n & 0xffffffffu);
    size_t len = strnlen(uri, (size_t)s->max_target_bytes + 1);
    if (len <= s->max_target_bytes)
        r->uri = strndup(uri, len);
    else
        r->uri_too_long = true;
    /* A NULL uri (too long, out of memory) is refused in on_access. */
    return r;
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    req *r = *con_cls;
    conn_watch *w = conn_of(c);
    (void)cls;
    if (w != NULL) {
        /* The next request's head is timed from now. */
        atomic_store(&w->head_start_ns, ferry_time_mono_ns());
        atomic_store(&w->in_request, false);
    }
    if (r == NULL)
        return;
    if (r->resumed_to_answer)
        atomic_fetch_sub(&r->s->answers_pending, 1);
    if (r->slot.fd >= 0)
        log_info("store.upload_aborted",
                 "request_id=%s key=\"%s\" received=%" PRIu64 " expected=%" PRIu64 " reason=%d",
                 r->id, r->t.key, r->received, r->expected, (int)toe);
    req_free(r);
    *con_cls = NULL;
}

void store_resume_to_answer(req *r, struct MHD_Connection *c)
{
    r->resumed_to_answer = true;
    atomic_fetch_add(&r->s->answers_pending, 1);
    MHD_resume_connection(c); /* from here c's thread may answer and free r */
}

/* ---------------------------------------------------------------------- */
/* Headers                                                                  */

static enum MHD_Result collect_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                      const char *value)
{
    header_list *h = cls;
    (void)kind;
    h->total++;
    h->bytes += strlen(key) + (value != NULL ? strlen(value) : 0) + 4;
    if (h->n < SIGV4_MAX_HEADERS) {
        h->kv[h->n].name = key;
        h->kv[h->n].value = value != NULL ? value : "";
        h->n++;
    }
    return MHD_YES;
}

static const char *header(struct MHD_Connection *c, const char *name)
{
    return MHD_lookup_connection_value(c, MHD_HEADER_KIND, name);
}

/* Builds the x-amz-meta-* JSON object; false (with a message) when the
 * metadata is too large or not UTF-8. */
static bool collect_meta(const header_list *h, char *out, size_t out_size, const char **why)
{
    json_t *obj = json_object();
    char *text = NULL;
    bool ok = false;
    size_t total = 0;
    if (obj == NULL) {
        *why = "out of memory";
        return false;
    }
    for (size_t i = 0; i < h->n; i++) {
        const char *name = h->kv[i].name;
        if (strncasecmp(name, "x-amz-meta-", 11) != 0)
            continue;
        char lower[256];
        size_t nl = strlen(name + 11);
        if (nl == 0 || nl >= sizeof lower) {
            *why = "metadata name too long";
            goto out;
        }
        for (size_t j = 0; j <= nl; j++) {
            char ch = name[11 + j];
            lower[j] = (ch >= 'A' && ch <= 'Z') ? (char)(ch - 'A' + 'a') : ch;
        }
        total += nl + strlen(h->kv[i].value);
        json_t *v = json_string(h->kv[i].value);
        if (v == NULL) {
            *why = "metadata values must be UTF-8";
            goto out;
        }
        if (json_object_set_new(obj, lower, v) != 0) {
            *why = "metadata names must be UTF-8";
            goto out;
        }
    }
    if (json_object_size(obj) == 0) {
        out[0] = '\0';
        ok = true;
        goto out;
    }
    /* S3 counts user metadata as the sum of names and values: 2 KB. */
    text = json_dumps(obj, JSON_COMPACT | JSON_SORT_KEYS);
    if (total > 2048 || text == NULL || strlen(text) >= out_size) {
        *why = "Your metadata headers exceed the maximum allowed metadata size.";
        goto out;
    }
    memcpy(out, text, strlen(text) + 1);
    ok = true;
out:
    free(text);
    json_decref(obj);
    return ok;
}

/* Adds x-amz-meta-* headers of a stored object to a response. */
static void add_meta_headers(struct MHD_Response *resp, const char *meta)
{
    json_error_t jerr;
    json_t *obj;
    const char *name;
    json_t *v;
    if (meta[0] == '\0')
        return;
    obj = json_loads(meta, 0, &jerr);
    if (obj == NULL)
        return;
    json_object_foreach(obj, name, v)
    {
        char h[300];
        const char *val = json_string_value(v);
        if (val == NULL || strlen(name) > 256)
            continue;
        snprintf(h, sizeof h, "x-amz-meta-%s", name);
        MHD_add_response_header(resp, h, val);
    }
    json_decref(obj);
}

/* ---------------------------------------------------------------------- */
/* Authentication                                                           */

static ferry_err lookup_secret(void *ctx, const char *akid, ferry_buf *out)
{
    store *s = ctx;
    if (strcmp(akid, s->grant_ak) == 0)
        return ferry_buf_append_str(out, s->grant_secret);
    if (s->op_ak != NULL && strcmp(akid, s->op_ak) == 0)
        return ferry_buf_append_str(out, s->op_secret);
    return FERRY_ERR_NOT_FOUND;
}

typedef enum principal { P_NONE = 0, P_GRANT, P_OPERATOR } principal;

/* Verifies the request's signature; on refusal answers it and returns
 * P_NONE with *ret set. */
static principal authenticate(req *r, struct MHD_Connection *c, const header_list *h,
                              sigv4_verdict *verdict, enum MHD_Result *ret)
{
    store *s = r->s;
    char *q = strchr(r->uri, '?');
    size_t path_len = q != NULL ? (size_t)(q - r->uri) : strlen(r->uri);
    char path[STORE_RAW_PATH_MAX + 1];
    ferry_err e;
    memcpy(path, r->uri, path_len);
    path[path_len] = '\0';
    sigv4_request sr = {
        .method = r->method,
        .path = path,
        .query = q != NULL ? q + 1 : NULL,
        .headers = h->kv,
        .n_headers = h->n,
        .payload_hash = NULL,
    };
    e = sigv4_verify_request(&s->verifier, &sr, ferry_time_now(), verdict);
    if (e == FERRY_OK) {
        if (strcmp(verdict->access_key_id, s->grant_ak) == 0)
            return P_GRANT;
        return P_OPERATOR;
    }
    if (e == FERRY_ERR_AUTH) {
        char msg[256];
        if (verdict->detail[0] != '\0')
            snprintf(msg, sizeof msg, "%s (%s)", sigv4_reason_message(verdict->reason),
                     verdict->detail);
        else
            snprintf(msg, sizeof msg, "%s", sigv4_reason_message(verdict->reason));
        *ret = respond_error(r, c, (unsigned)sigv4_reason_http_status(verdict->reason),
                             sigv4_reason_s3_code(verdict->reason), msg);
    } else {
        *ret = respond_error(r, c, 500, "InternalError", "signature check failed");
    }
    return P_NONE;
}

/* Checks an upload signed with the device-grant credential against its
 * grant. On refusal answers and returns false. */
/* A refusal: status, S3 code, message. */
typedef struct refusal {
    unsigned status;
    const char *code;
    const char *message;
} refusal;

/* Checks an upload signed with the device-grant credential against its
 * grant (r->t.key names it). Returns false and fills *why when refused. */
static bool grant_allows(req *r, const char *method, refusal *why)
{
    store *s = r->s;
    char gid[LEDGER_GRANT_ID_MAX + 1];
    ledger *l;
    ferry_err e;
    int64_t now = ferry_time_now();

    *why = (refusal){403, "AccessDenied", NULL};
    if (!store_key_grant_id(r->t.key, gid, sizeof gid)) {
        why->message = "the key names no grant";
        return false;
    }
    l = pool_take(s);
    e = ledger_grant_get(l, gid, &r->grant);
    pool_give(s, l);
    if (e == FERRY_ERR_NOT_FOUND)
        why->message = "unknown grant";
    else if (e != FERRY_OK)
        *why = (refusal){503, "SlowDown", "the ledger is not available; retry"};
    else if (r->grant.state == LEDGER_GRANT_REVOKED)
        why->message = "grant revoked";
    else if (r->grant.state == LEDGER_GRANT_USED)
        why->message = "grant already used";
    else if (r->grant.state == LEDGER_GRANT_EXPIRED || r->grant.expires_at <= now)
        why->message = "grant expired";
    else if (strcmp(r->grant.bucket, r->t.bucket) != 0 || strcmp(r->grant.key, r->t.key) != 0)
        why->message = "the key is not the grant's key";
    else if (strcmp(r->grant.method, method) != 0)
        why->message = "the grant is for another method";
    if (why->message != NULL)
        return false;
    r->is_grant = true;
    return true;
}

static bool check_grant(req *r, struct MHD_Connection *c, const char *method, enum MHD_Result *ret)
{
    refusal why;
    if (grant_allows(r, method, &why))
        return true;
    *ret = respond_error(r, c, why.status, why.code, why.message);
    return false;
}

/* ---------------------------------------------------------------------- */
/* Hash pipeline for large bodies                                           */

/*
 * One connection is served by one worker thread, and for a large body MD5
 * and SHA-256 cost that thread more than TLS and the write together. So
 * bodies of PIPE_MIN_BYTES or more are cut into PIPE_BLOCK blocks in a ring
 * of PIPE_DEPTH: the worker fills a block and hands it to three helper
 * threads that read it in place, one per digest and one that writes it to
 * the file (the page-cache copy was the largest part of the worker's time
 * once the digests had moved off it). The worker waits only when the ring
 * is full (memory per upload: PIPE_DEPTH blocks).
 * At most PIPES_MAX uploads use a pipeline at once; others hash inline.
 *
 * Direct writes: the writer writes the blocks with O_DIRECT, through the
 * slot's direct descriptor (store_fs_slot_direct: a file's own, a pack's
 * second one). The blocks are page-aligned, every one but the last a whole
 * number of pages, so the bytes go from the block to the disk without a page-cache
 * copy and without writeback running behind the upload; the last, partial
 * block goes through the page cache. The fdatasync before the answer then
 * flushes the disk's cache and the file's size and extents, as before.
 * Measured on this machine with a 1 GiB PUT: the buffered copy and its
 * writeback (sync_file_range every 8 MiB) cost ferryd 2.5-3.5 s of CPU per
 * GiB, more than MD5 and SHA-256 together. A file system that refuses
 * O_DIRECT (tmpfs) keeps the buffered writes.
 */
#define PIPE_BLOCK     (256u << 10)
#define PIPE_DEPTH     8
#define PIPE_MIN_BYTES (8u << 20)
#define PIPES_MAX      8

#define PIPE_HELPERS 3 /* MD5, SHA-256, the file write */

typedef struct hash_pipe {
    req *r;
    pthread_t threads[PIPE_HELPERS];
    int started;
    pthread_mutex_t mu;
    /* Each thread sleeps on a condition of its own and is woken only when
     * it has something to do: with one condition broadcast at every event,
     * each 256 KiB block woke every thread about four times (~12 wake-ups
     * a block, 0.3-0.4 s of ferryd's CPU in a 1 GiB PUT). */
    pthread_cond_t helper_cv[PIPE_HELPERS]; /* helper k: a block handed over, or closing */
    pthread_cond_t worker_cv;               /* the worker: a ring slot freed, or a failure */
    bool worker_waiting;
    unsigned char *blocks[PIPE_DEPTH];
    size_t lens[PIPE_DEPTH];
    uint64_t produced;               /* blocks handed over */
    uint64_t consumed[PIPE_HELPERS]; /* blocks each helper is done with */
    bool closing;
    bool write_failed; /* under mu; the writer stops writing, the worker feeding */
    int write_errno;
    bool direct; /* the writer's: whole blocks go through the slot's direct descriptor */
    size_t fill; /* bytes in the block being filled: blocks[produced % DEPTH] */
} hash_pipe;

typedef struct pipe_arg {
    hash_pipe *p;
    int k;
} pipe_arg;

static void writeback_kick(req *r);

#define PIPE_WRITE_BLOCKS 4 /* blocks the writer writes in one call, when ready */

/* Writes n blocks in one call: direct while they are whole pages, through
 * the page cache when the file system refuses a direct write. */
static ferry_err pipe_write_iov(hash_pipe *p, const struct iovec *iov, int n)
{
    req *r = p->r;
    size_t len = 0;
    ferry_err e;
    for (int i = 0; i < n; i++)
        len += iov[i].iov_len;
    if (p->direct) {
        e = store_fs_slot_writev_direct(&r->slot, r->written, iov, n);
        if (e == FERRY_ERR_IO && errno == EINVAL)
            p->direct = false; /* refused: plain writes from here on */
    }
    if (!p->direct)
        e = store_fs_slot_writev(&r->slot, r->written, iov, n);
    if (e == FERRY_OK) {
        r->written += len;
        if (!p->direct)
            writeback_kick(r);
    }
    return e;
}

/* The writer's write of the n blocks from ring position first: a last
 * block that is not a whole number of pages goes through the page cache,
 * the others together. */
static ferry_err pipe_write(hash_pipe *p, uint64_t first, int n)
{
    struct iovec iov[PIPE_WRITE_BLOCKS];
    ferry_err e = FERRY_OK;
    for (int i = 0; i < n; i++) {
        size_t idx = (size_t)((first + (uint64_t)i) % PIPE_DEPTH);
        iov[i].iov_base = p->blocks[idx];
        iov[i].iov_len = p->lens[idx];
    }
    if (p->direct && iov[n - 1].iov_len % STORE_FS_DIRECT_ALIGN != 0) {
        if (n > 1 && (e = pipe_write_iov(p, iov, n - 1)) != FERRY_OK)
            return e;
        p->direct = false;
        return pipe_write_iov(p, &iov[n - 1], 1);
    }
    return pipe_write_iov(p, iov, n);
}

static uint64_t pipe_done(const hash_pipe *p);

/* Helper k: 0 and 1 hash each block (MD5, SHA-256), 2 writes it to the file
 * (and owns r->written, the early writeback and direct writes while the pipeline
 * runs). */
static void *pipe_thread(void *arg)
{
    hash_pipe *p = ((pipe_arg *)arg)->p;
    int k = ((pipe_arg *)arg)->k;
    EVP_MD_CTX *ctx = k == 0 ? p->r->md5 : p->r->sha;
    bool failed = false;
    free(arg);
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (p->consumed[k] == p->produced && !p->closing)
            pthread_cond_wait(&p->helper_cv[k], &p->mu);
        if (p->consumed[k] == p->produced)
            break; /* closing and nothing left */
        size_t idx = (size_t)(p->consumed[k] % PIPE_DEPTH);
        size_t len = p->lens[idx];
        /* The writer takes every block ready (up to PIPE_WRITE_BLOCKS). */
        uint64_t ready = p->produced - p->consumed[k];
        int n = k < 2 ? 1 : (int)(ready < PIPE_WRITE_BLOCKS ? ready : PIPE_WRITE_BLOCKS);
        pthread_mutex_unlock(&p->mu);
        int err = 0;
        if (k < 2) {
            EVP_DigestUpdate(ctx, p->blocks[idx], len);
        } else if (!failed) {
            if (pipe_write(p, p->consumed[k], n) != FERRY_OK) {
                failed = true;
                err = errno != 0 ? errno : EIO;
            }
        }
        pthread_mutex_lock(&p->mu);
        if (failed && !p->write_failed) {
            p->write_failed = true;
            p->write_errno = err;
        }
        p->consumed[k] += (uint64_t)n;
        if (p->worker_waiting && (p->write_failed || p->produced - pipe_done(p) < PIPE_DEPTH))
            pthread_cond_signal(&p->worker_cv);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

/* Stops the helpers, once each is done with every block handed over. */
static void pipe_join(hash_pipe *p)
{
    pthread_mutex_lock(&p->mu);
    p->closing = true;
    for (int k = 0; k < PIPE_HELPERS; k++)
        pthread_cond_signal(&p->helper_cv[k]);
    pthread_mutex_unlock(&p->mu);
    for (int k = 0; k < p->started; k++)
        pthread_join(p->threads[k], NULL);
    p->started = 0;
}

/* Stops the helpers and frees the pipeline. Safe on NULL. */
static void pipe_free(store *s, hash_pipe *p)
{
    if (p == NULL)
        return;
    pipe_join(p);
    for (int i = 0; i < PIPE_DEPTH; i++)
        free(p->blocks[i]);
    pthread_mutex_destroy(&p->mu);
    for (int k = 0; k < PIPE_HELPERS; k++)
        pthread_cond_destroy(&p->helper_cv[k]);
    pthread_cond_destroy(&p->worker_cv);
    free(p);
    atomic_fetch_sub(&s->pipes, 1);
}

/* A pipeline for r, or NULL (then r hashes inline). */
static hash_pipe *pipe_new(req *r)
{
    store *s = r->s;
    hash_pipe *p;
    if (atomic_fetch_add(&s->pipes, 1) >= PIPES_MAX) {
        atomic_fetch_sub(&s->pipes, 1);
        return NULL;
    }
    p = calloc(1, sizeof *p);
    if (p == NULL) {
        atomic_fetch_sub(&s->pipes, 1);
        return NULL;
    }
    p->r = r;
    pthread_mutex_init(&p->mu, NULL);
    for (int k = 0; k < PIPE_HELPERS; k++)
        pthread_cond_init(&p->helper_cv[k], NULL);
    pthread_cond_init(&p->worker_cv, NULL);
    for (int i = 0; i < PIPE_DEPTH; i++) {
        p->blocks[i] = aligned_alloc(STORE_FS_DIRECT_ALIGN, PIPE_BLOCK);
        if (p->blocks[i] == NULL) {
            pipe_free(s, p);
            return NULL;
        }
    }
    p->direct = store_fs_slot_direct(&s->fs, &r->slot);
    for (int k = 0; k < PIPE_HELPERS; k++) {
        pipe_arg *a = malloc(sizeof *a);
        if (a != NULL) {
            a->p = p;
            a->k = k;
        }
        if (a == NULL || pthread_create(&p->threads[k], NULL, pipe_thread, a) != 0) {
            free(a);
            pipe_free(s, p);
            return NULL;
        }
        p->started++;
    }
    return p;
}

/*
 * Early writeback: a large body is handed to the disk 8 MiB at a time while
 * it arrives (sync_file_range, which only starts the write), so the
 * fdatasync before the answer waits for the tail, not the whole body. With
 * the page cache's own thresholds (10% of memory) a 1 GiB body would stay
 * dirty until that fdatasync wrote all of it while the client waited.
 */
#define WRITEBACK_STEP (8u << 20)

static void writeback_kick(req *r)
{
    if (r->written - r->wb_start < WRITEBACK_STEP)
        return;
    /* Failures are not fatal here: the fdatasync at commit reports them. */
    (void)sync_file_range(r->slot.fd, (off_t)(r->slot.base + r->wb_start),
                          (off_t)(r->written - r->wb_start), SYNC_FILE_RANGE_WRITE);
    r->wb_start = r->written;
}

/* The slowest helper's count of blocks done (under mu). */
static uint64_t pipe_done(const hash_pipe *p)
{
    uint64_t m = p->consumed[0];
    for (int k = 1; k < PIPE_HELPERS; k++)
        if (p->consumed[k] < m)
            m = p->consumed[k];
    return m;
}

/* Hands the block being filled to the helpers; waits for a free slot.
 * False once the writer has failed (errno set to its error). */
static bool pipe_submit(hash_pipe *p)
{
    size_t idx = (size_t)(p->produced % PIPE_DEPTH);
    bool ok;
    pthread_mutex_lock(&p->mu);
    if (p->fill > 0) {
        p->lens[idx] = p->fill;
        p->produced++;
        p->fill = 0;
        for (int k = 0; k < PIPE_HELPERS; k++)
            pthread_cond_signal(&p->helper_cv[k]);
    }
    /* The next block to fill must be free: every helper is past it. */
    p->worker_waiting = true;
    while (p->produced - pipe_done(p) >= PIPE_DEPTH && !p->write_failed)
        pthread_cond_wait(&p->worker_cv, &p->mu);
    p->worker_waiting = false;
    ok = !p->write_failed;
    if (!ok)
        errno = p->write_errno;
    pthread_mutex_unlock(&p->mu);
    return ok;
}

static bool pipe_feed(hash_pipe *p, const char *data, size_t len)
{
    while (len > 0) {
        size_t idx = (size_t)(p->produced % PIPE_DEPTH);
        size_t n = PIPE_BLOCK - p->fill;
        if (n > len)
            n = len;
        memcpy(p->blocks[idx] + p->fill, data, n);
        p->fill += n;
        data += n;
        len -= n;
        if (p->fill == PIPE_BLOCK && !pipe_submit(p))
            return false;
    }
    return true;
}

/* Hands over the last block and waits until it is written and both
 * digests are complete. */
static bool pipe_finish(req *r)
{
    hash_pipe *p = r->pipe;
    bool ok;
    if (p == NULL)
        return true;
    ok = pipe_submit(p);
    pipe_join(p); /* the helpers finish every block handed over */
    if (p->write_failed) {
        errno = p->write_errno;
        ok = false;
    }
    pipe_free(r->s, p);
    r->pipe = NULL;
    return ok;
}

/* ---------------------------------------------------------------------- */
/* Staged direct writes for medium bodies                                   */

/*
 * A body of STAGE_MIN_BYTES up to PIPE_MIN_BYTES (PutObject or UploadPart,
 * its size known) is copied, as it arrives, into blocks of the store's MD5
 * hasher (md5_hasher.h), two per body. Every STAGE_PIECE bytes are handed
 * to the hasher as soon as they are in; a full block is written to the
 * slot with O_DIRECT, and the body goes on into the other block. The
 * hasher's thread MD5s the pieces of every body that has one waiting side
 * by side in vector lanes, so 16 bodies cost about what one does, and the
 * digest is known when the body ends: nothing is
 * read back (as "MD5 later" does, from the page cache) and nothing goes
 * through the page cache. On this machine's virtual disk the copy into
 * fresh page-cache pages cost from 0.2 to 3 ms of CPU per MiB, depending on
 * how recently the memory had been used, more than MD5 and SHA-256
 * together; a direct write costs ~0.2 ms and the staging copy ~0.1. The
 * SHA-256 is computed by the connection's thread as before. Pieces are
 * smaller than blocks so that a pass of the hasher finds many bodies with
 * one waiting: with whole 256 KiB blocks it found ~3 of 32 bodies arriving,
 * since a block takes long to fill, and a pass costs the same for 3 lanes
 * as for 8; a direct write, though, is cheaper per byte the larger it is.
 *
 * The last block of a body is padded with zeros to a whole 4 KiB block
 * in a pack region (its reserved length covers it); in a file of its own
 * the body's tail that does not fill a block goes through the page cache,
 * so that the file ends where the body does. Bodies the hasher has no
 * blocks for (STAGE_BLOCKS / 2 at once), file systems that refuse
 * O_DIRECT and CPUs without vector MD5 keep the other paths.
 *
 * A body still arriving STAGE_HOLD_NS after it began gives its blocks
 * back (stage_demote), so that devices on slow links, which may take
 * minutes over a few MiB, do not keep them from the bodies that arrive
 * fast: what it has is written (whole 4 KiB blocks directly, the rest
 * through the page cache, where the rest of it goes too), the hasher hands
 * over the MD5 state of its bytes so far, and the connection's thread goes
 * on hashing it with the scalar loop of md5_lanes (one stream), carrying
 * the bytes short of a 64-byte block from chunk to chunk.
 */
#define STAGE_MIN_BYTES (256u << 10)
#define STAGE_BLOCKS    64           /* 16 MiB of blocks, touched only as used */
#define STAGE_PIECE     (64u << 10) /* bytes handed to the hasher at a time */
#define STAGE_HOLD_NS   1000000000  /* 1 s: blocks kept at most this long */

typedef struct stage {
    md5_hasher_stream stream;
    unsigned char *blocks[2];
    uint64_t tickets[2]; /* the hasher's ticket of the last piece of each block (0: none) */
    unsigned cur;        /* the block being filled */
    size_t fill;         /* its bytes */
    size_t handed;       /* its bytes handed to the hasher */
    uint64_t off;        /* the body offset of its first byte */
    bool finished;       /* the last piece is hashed: md5 is the body's */
    unsigned char md5[16];
    /* Once demoted (stage_demote): the MD5 state of the first total bytes,
     * and the bytes after them short of a 64-byte block. */
    bool demoted;
    uint32_t v[4];
    uint64_t total;
    unsigned char carry[64 + MD5_LANES_PAD_ROOM];
    size_t carry_len;
} stage;

/* Gives the blocks back once the hasher is done with them. */
static void stage_release(store *s, stage *g)
{
    unsigned char unused[16];
    (void)md5_hasher_finish(s->hasher, &g->stream, unused); /* waits for every piece */
    for (int i = 0; i < 2; i++) {
        if (g->blocks[i] != NULL)
            md5_hasher_block_give(s->hasher, g->blocks[i]);
        g->blocks[i] = NULL;
    }
}

static void stage_free(req *r)
{
    if (r->stage == NULL)
        return;
    stage_release(r->s, r->stage);
    free(r->stage);
    r->stage = NULL;
}

/* Stages r's body when it is of the size, the hasher has two blocks free
 * and the slot takes direct writes. */
static void stage_begin(req *r)
{
    store *s = r->s;
    stage *g;
    if (s->hasher == NULL || r->pipe != NULL || r->expected < STAGE_MIN_BYTES ||
        r->expected >= PIPE_MIN_BYTES || !store_fs_slot_direct(&s->fs, &r->slot))
        return;
    if ((g = calloc(1, sizeof *g)) == NULL)
        return;
    md5_hasher_stream_init(&g->stream);
    g->blocks[0] = md5_hasher_block_take(s->hasher);
    g->blocks[1] = g->blocks[0] != NULL ? md5_hasher_block_take(s->hasher) : NULL;
    if (g->blocks[1] == NULL) {
        stage_release(s, g);
        free(g);
        return;
    }
    r->stage = g;
}

/* Hands the block's bytes from g->handed to upto to the hasher (last: the
 * body ends there). */
static void stage_hand(req *r, size_t upto, bool last)
{
    stage *g = r->stage;
    g->tickets[g->cur] = md5_hasher_submit(r->s->hasher, &g->stream, g->blocks[g->cur] + g->handed,
                                           upto - g->handed, last);
    g->handed = upto;
}

/* Writes the block being filled (its pieces but the body's last already
 * handed to the hasher); the body goes on into the other block once the
 * hasher is done with it. last: the body's last bytes, handed after the
 * write (the hasher pads a last piece in place). */
static bool stage_flush(req *r, bool last)
{
    store *s = r->s;
    stage *g = r->stage;
    unsigned char *b = g->blocks[g->cur];
    size_t len = g->fill, direct = len;
    if (last && r->slot.pack != NULL) {
        direct = (len + STORE_FS_DIRECT_ALIGN - 1) & ~(size_t)(STORE_FS_DIRECT_ALIGN - 1);
        memset(b + len, 0, direct - len);
    } else if (last) {
        direct = len & ~(size_t)(STORE_FS_DIRECT_ALIGN - 1);
    }
    if (store_fs_slot_write_split(&r->slot, g->off, b, len, direct) != FERRY_OK)
        return false;
    r->written += len;
    if (last)
        stage_hand(r, len, true);
    g->off += len;
    g->fill = 0;
    g->handed = 0;
    g->cur ^= 1;
    if (!last)
        md5_hasher_wait(s->hasher, &g->stream, g->tickets[g->cur]);
    return true;
}

/* A chunk of body into the blocks. A full block is written at once
 * unless it holds the body's last byte (stage_finish writes that one). */
static bool stage_feed(req *r, const char *data, size_t len)
{
    stage *g = r->stage;
    while (len > 0) {
        size_t n = MD5_HASHER_BLOCK - g->fill;
        if (n > len)
            n = len;
        memcpy(g->blocks[g->cur] + g->fill, data, n);
        g->fill += n;
        data += n;
        len -= n;
        /* Whole pieces with more body after them; the last goes at the end. */
        while (g->fill - g->handed >= STAGE_PIECE && g->off + g->handed + STAGE_PIECE < r->expected)
            stage_hand(r, g->handed + STAGE_PIECE, false);
        if (g->fill == MD5_HASHER_BLOCK && g->off + g->fill < r->expected && !stage_flush(r, false))
            return false;
    }
    return true;
}

/* A demoted body's MD5 advanced by len bytes at at (a multiple of 64, or
 * its last bytes, then with room for the padding after them). */
static bool stage_md5_step(stage *g, unsigned char *at, size_t len, bool last)
{
    md5_lanes_piece p = {.off = 0, .len = (uint32_t)len, .last = last};
    memcpy(p.v, g->v, sizeof p.v);
    p.total = g->total + len;
    if (!md5_lanes_advance(MD5_LANES_PORTABLE, at, &p, 1)) /* one stream: the scalar loop */
        return false;
    memcpy(g->v, p.v, sizeof g->v);
    g->total = p.total;
    if (last)
        memcpy(g->md5, p.digest, sizeof g->md5);
    return true;
}

/* A demoted body's chunk: through the page cache, and into its MD5. */
static bool stage_feed_demoted(req *r, const char *data, size_t len)
{
    stage *g = r->stage;
    unsigned char *in = (unsigned char *)(uintptr_t)data; /* read only: not a last piece */
    if (store_fs_slot_write(&r->slot, r->written, data, len) != FERRY_OK)
        return false;
    r->written += len;
    if (g->carry_len > 0) {
        size_t n = 64 - g->carry_len < len ? 64 - g->carry_len : len;
        memcpy(g->carry + g->carry_len, in, n);
        g->carry_len += n;
        in += n;
        len -= n;
        if (g->carry_len < 64)
            return true;
        if (!stage_md5_step(g, g->carry, 64, false))
            return false;
        g->carry_len = 0;
    }
    size_t whole = len & ~(size_t)63;
    if (whole > 0 && !stage_md5_step(g, in, whole, false))
        return false;
    memcpy(g->carry, in + whole, len - whole);
    g->carry_len = len - whole;
    return true;
}

/* Gives a slow body's blocks back: its bytes so far written, the MD5 of
 * those before its last partial 64-byte block taken over from the hasher,
 * the rest of the body hashed on this thread (see the top of this part). */
static bool stage_demote(req *r)
{
    stage *g = r->stage;
    unsigned char *b = g->blocks[g->cur];
    size_t whole = g->fill & ~(size_t)63;
    size_t direct = g->fill & ~(size_t)(STORE_FS_DIRECT_ALIGN - 1);
    if (whole > g->handed)
        stage_hand(r, whole, false);
    if (store_fs_slot_write_split(&r->slot, g->off, b, g->fill, direct) != FERRY_OK)
        return false;
    r->written += g->fill;
    g->carry_len = g->fill - whole;
    memcpy(g->carry, b + whole, g->carry_len);
    if (!md5_hasher_detach(r->s->hasher, &g->stream, g->v, &g->total)) {
        errno = EINVAL; /* cannot be: the last piece is handed over only at the end */
        return false;
    }
    stage_release(r->s, g);
    g->demoted = true;
    g->off += g->fill;
    g->fill = g->handed = 0;
    log_info("store.stage_released", "request_id=%s received=%" PRIu64 " of=%" PRIu64, r->id,
             r->received, r->expected);
    return true;
}

/* The body has arrived: its last block written and hashed, the MD5 known,
 * the blocks given back. Safe to call again. */
static bool stage_finish(req *r)
{
    stage *g = r->stage;
    if (g == NULL || g->finished)
        return true;
    if (g->demoted) {
        if (!stage_md5_step(g, g->carry, g->carry_len, true))
            return false;
        g->finished = true;
        return true;
    }
    if (!stage_flush(r, true))
        return false;
    if (!md5_hasher_finish(r->s->hasher, &g->stream, g->md5))
        return false;
    g->finished = true;
    stage_release(r->s, g);
    return true;
}

/* ---------------------------------------------------------------------- */
/* PutObject                                                                */

static enum MHD_Result finish_put(req *r, struct MHD_Connection *c);
static enum MHD_Result copy_object(req *r, struct MHD_Connection *c, const header_list *h);

bool store_content_type(req *r, struct MHD_Connection *c, char out[LEDGER_CONTENT_TYPE_MAX + 1],
                        enum MHD_Result *ret)
{
    const char *v = header(c, "Content-Type");
    if (v == NULL || v[0] == '\0')
        v = DEFAULT_CONTENT_TYPE;
    if (strlen(v) > LEDGER_CONTENT_TYPE_MAX) {
        *ret = respond_error(r, c, 400, "InvalidArgument", "Content-Type is too long");
        return false;
    }
    snprintf(out, LEDGER_CONTENT_TYPE_MAX + 1, "%s", v);
    return true;
}

static enum MHD_Result begin_put(req *r, struct MHD_Connection *c, const header_list *h,
                                 const sigv4_verdict *verdict)
{
    store *s = r->s;
    const char *cl = header(c, "Content-Length");
    const char *te = header(c, "Transfer-Encoding");
    const char *v;
    const char *why = NULL;
    char *end = NULL;
    unsigned long long n;
    ferry_err e;
    enum MHD_Result ret;

    if (header(c, "x-amz-copy-source") != NULL)
        return copy_object(r, c, h);
    if (te != NULL || cl == NULL)
        return respond_error(r, c, 411, "MissingContentLength",
                             "You must provide the Content-Length HTTP header "
                             "(chunked bodies are not accepted).");
    errno = 0;
    n = strtoull(cl, &end, 10);
    if (errno != 0 || end == cl || *end != '\0' || cl[0] == '-' || cl[0] == '+')
        return respond_error(r, c, 400, "InvalidArgument", "Content-Length is not a number");
    r->expected = (uint64_t)n;
    if (r->expected > s->max_object_size)
        return respond_error(r, c, 400, "EntityTooLarge",
                             "Your proposed upload exceeds the maximum allowed object size.");
    if (r->is_grant) {
        if (r->expected < r->grant.size)
            return respond_error(r, c, 400, "EntityTooSmall",
                                 "Your proposed upload is smaller than the grant's size.");
        if (r->expected > r->grant.size)
            return respond_error(r, c, 400, "EntityTooLarge",
                                 "Your proposed upload is larger than the grant's size.");
    }
    v = header(c, "Content-MD5");
    if (v != NULL) {
        if (!store_b64_decode_exact(v, r->content_md5, 16))
            return respond_error(r, c, 400, "InvalidDigest",
                                 "The Content-MD5 you specified was invalid.");
        r->want_md5 = true;
    }
    v = header(c, "x-amz-checksum-sha256");
    if (v != NULL) {
        if (!store_b64_decode_exact(v, r->checksum, 32))
            return respond_error(r, c, 400, "InvalidRequest",
                                 "Value for x-amz-checksum-sha256 header is invalid.");
        r->want_checksum = true;
    }
    v = header(c, "x-amz-sdk-checksum-algorithm");
    if (v != NULL && strcasecmp(v, "SHA256") != 0)
        return respond_error(r, c, 400, "InvalidRequest",
                             "Only the SHA256 checksum algorithm is supported.");
    snprintf(r->payload_sha, sizeof r->payload_sha, "%s", verdict->payload_sha256);
    if (!store_content_type(r, c, r->content_type, &ret))
        return ret;
    if (r->is_grant && strcasecmp(r->content_type, r->grant.content_type) != 0)
        return respond_error(r, c, 403, "AccessDenied",
                             "Content-Type is not the grant's content type");
    if (!collect_meta(h, r->meta, sizeof r->meta, &why))
        return respond_error(r, c, 400, "MetadataTooLarge", why);

    r->md5 = EVP_MD_CTX_new();
    r->sha = EVP_MD_CTX_new();
    if (r->md5 == NULL || r->sha == NULL || EVP_DigestInit_ex(r->md5, EVP_md5(), NULL) != 1 ||
        EVP_DigestInit_ex(r->sha, EVP_sha256(), NULL) != 1)
        return respond_error(r, c, 500, "InternalError", "digest setup failed");
    if ((e = store_fs_slot_open(&s->fs, r->expected, true, &r->slot)) != FERRY_OK)
        return respond_error(r, c, 500, "InternalError", "cannot create the temporary file");
    if (r->expected >= PIPE_MIN_BYTES)
        r->pipe = pipe_new(r);
    else
        stage_begin(r);
    md5_later_decide(r);
    r->start_ns = ferry_time_mono_ns();
    r->phase = PH_BODY;
    if (r->expected == 0)
        return finish_put(r, c);
    watch_add(r, c);
    return MHD_YES;
}

/* Appends a chunk to the temporary file and the digests; false (after
 * deferring an error and dropping the file) when it cannot be written. */
static bool body_write(req *r, const char *data, size_t len)
{
    bool ok;
    r->received += len;
    if (r->pipe != NULL) {
        ok = pipe_feed(r->pipe, data, len); /* both digests on its threads */
    } else if (r->stage != NULL) {
        EVP_DigestUpdate(r->sha, data, len);
        ok = r->stage->demoted ? stage_feed_demoted(r, data, len)
                               : stage_feed(r, data, len) &&
                                     (r->received == r->expected ||
                                      ferry_time_mono_ns() - r->start_ns < STAGE_HOLD_NS ||
                                      stage_demote(r));
    } else {
        if (!r->md5_later)
            EVP_DigestUpdate(r->md5, data, len);
        EVP_DigestUpdate(r->sha, data, len);
        ok = store_fs_slot_write(&r->slot, r->written, data, len) == FERRY_OK;
        if (ok) {
            r->written += len;
            writeback_kick(r);
        }
    }
    if (!ok) {
        log_error("store.write_failed", "request_id=%s error=\"%s\"", r->id, strerror(errno));
        defer_error(r, 500, "InternalError", "the store could not write the object");
        req_discard_upload(r);
    }
    return ok;
}

/* One chunk of body: to the file and the digests. (A client too slow to
 * be worth its slot is answered by the body watchdog.) */
static enum MHD_Result put_chunk(req *r, const char *data, size_t len)
{
    if (r->received + len > r->expected) {
        /* libmicrohttpd frames the body by Content-Length; more is a bug. */
        defer_error(r, 400, "IncompleteBody", "more bytes than Content-Length");
        r->phase = PH_DISCARD;
        req_discard_upload(r);
        return MHD_YES;
    }
    if (!body_write(r, data, len)) {
        r->phase = PH_DISCARD;
        return MHD_YES;
    }
    return MHD_YES;
}

bool store_body_digests_ok(req *r, struct MHD_Connection *c, char md5_hex[33], char sha_hex[65],
                           enum MHD_Result *ret)
{
    unsigned char md5[16], sha[32];
    unsigned int mlen = 0, slen = 0;
    bool md5_ok = true;
    if (r->stage != NULL)
        memcpy(md5, r->stage->md5, sizeof md5); /* the hasher's (stage_finish) */
    else if (!r->md5_later)
        md5_ok = EVP_DigestFinal_ex(r->md5, md5, &mlen) == 1;
    if (!md5_ok || EVP_DigestFinal_ex(r->sha, sha, &slen) != 1) {
        *ret = respond_error(r, c, 500, "InternalError", "digest failed");
        return false;
    }
    if (r->md5_later)
        md5_hex[0] = '\0'; /* the committers' (md5_later_hash), Content-MD5 checked there */
    else
        store_hex(md5, 16, md5_hex);
    store_hex(sha, 32, sha_hex);
    if (r->want_md5 && !r->md5_later && CRYPTO_memcmp(md5, r->content_md5, 16) != 0) {
        *ret = respond_error(r, c, 400, "BadDigest",
                             "The Content-MD5 you specified did not match what we received.");
        return false;
    }
    if (r->payload_sha[0] != '\0' && strcmp(r->payload_sha, sha_hex) != 0) {
        *ret = respond_error(r, c, 400, "XAmzContentSHA256Mismatch",
                             "The provided 'x-amz-content-sha256' header does not match what "
                             "was computed.");
        return false;
    }
    if (r->want_checksum && CRYPTO_memcmp(sha, r->checksum, 32) != 0) {
        *ret = respond_error(r, c, 400, "BadDigest",
                             "The SHA256 you specified did not match the calculated checksum.");
        return false;
    }
    return true;
}


/* The peer's address in text ("" when unknown), for the object's event; an
 * IPv4 client of a dual-stack listener is written as IPv4, as S3 does. */
static void client_address(struct MHD_Connection *c, char *out, size_t out_size)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    const struct sockaddr *sa = ci != NULL ? ci->client_addr : NULL;
    out[0] = '\0';
    if (sa == NULL)
        return;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in4 = (const struct sockaddr_in *)(const void *)sa;
        if (inet_ntop(AF_INET, &in4->sin_addr, out, (socklen_t)out_size) == NULL)
            out[0] = '\0';
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)sa;
        const void *a = &in6->sin6_addr;
        int family = AF_INET6;
        if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
            a = &in6->sin6_addr.s6_addr[12];
            family = AF_INET;
        }
        if (inet_ntop(family, a, out, (socklen_t)out_size) == NULL)
            out[0] = '\0';
    }
}
/* The end of an upload (PUT or POST), called twice: first it verifies the
 * digests and hands the upload to the committers (fdatasync, ledger row
 * consuming the grant, see commit_jobs), returning false with *ret =
 * MHD_YES and the connection suspended; when the committers resume it (phase
 * PH_COMMITTED) it answers their outcome. Returns true with the hex MD5 in
 * md5_hex when the object is stored; otherwise the request is answered
 * (*ret) and nothing is left behind. */
static bool commit_object(req *r, struct MHD_Connection *c, char md5_hex[33], enum MHD_Result *ret)
{
    store *s = r->s;
    char sha_hex[65];
    ledger_object *o;
    ferry_err e;

    if (r->phase == PH_COMMITTED)
        goto answer;
    if (!store_body_digests_ok(r, c, md5_hex, sha_hex, ret))
        return false;
    if (r->is_grant && r->grant.sha256[0] != '\0' && strcmp(r->grant.sha256, sha_hex) != 0) {
        *ret = respond_error(r, c, 400, "BadDigest",
                             "The bytes do not match the SHA-256 the grant was issued for.");
        return false;
    }

    o = calloc(1, sizeof *o);
    if (o == NULL) {
        *ret = respond_error(r, c, 500, "InternalError", "out of memory");
        return false;
    }
    snprintf(o->bucket, sizeof o->bucket, "%s", r->t.bucket);
    memcpy(o->key, r->t.key, r->t.key_len + 1);
    snprintf(o->file_id, sizeof o->file_id, "%s", r->slot.id);
    o->size = r->received;
    snprintf(o->etag, sizeof o->etag, "%s", md5_hex);
    snprintf(o->sha256, sizeof o->sha256, "%s", sha_hex);
    snprintf(o->content_type, sizeof o->content_type, "%s", r->content_type);
    snprintf(o->meta, sizeof o->meta, "%s", r->meta);
    if (r->is_grant) {
        snprintf(o->device, sizeof o->device, "%s", r->grant.device);
        snprintf(o->grant_id, sizeof o->grant_id, "%s", r->grant.id);
    }
    o->created_at = ferry_time_now();
    client_address(c, o->source_ip, sizeof o->source_ip);
    snprintf(o->store_request_id, sizeof o->store_request_id, "%s", r->id);
    r->obj = o;
    memcpy(r->md5_hex, md5_hex, sizeof r->md5_hex);
    store_fs_slot_written(&r->slot); /* the next flush of its pack covers it */
    if (committer_submit(r, c)) {
        *ret = MHD_YES;
        return false;
    }
    commit_jobs(s, &r, 1, NULL); /* the committers are stopping: on this thread */

answer:
    memcpy(md5_hex, r->md5_hex, sizeof r->md5_hex);
    o = r->obj;
    e = r->commit_err;
    if (e != FERRY_OK) {
        if (r->md5_mismatch)
            *ret = respond_error(r, c, 400, "BadDigest",
                                 "The Content-MD5 you specified did not match what we received.");
        else if (e == FERRY_ERR_CONFLICT)
            *ret = respond_error(r, c, 403, "AccessDenied", "grant already used");
        else if (e == FERRY_ERR_DENIED)
            *ret = respond_error(r, c, 403, "AccessDenied", "grant revoked");
        else if (e == FERRY_ERR_EXPIRED)
            *ret = respond_error(r, c, 403, "AccessDenied", "grant expired");
        else if (e == FERRY_ERR_NOT_FOUND)
            *ret = respond_error(r, c, 403, "AccessDenied", "unknown grant");
        else if (e == FERRY_ERR_IO || e == FERRY_ERR_NOMEM)
            *ret = respond_error(r, c, 500, "InternalError",
                                 "the store could not write the object");
        else
            *ret = respond_error(r, c, 503, "SlowDown", "the ledger is busy; retry");
        return false;
    }
    log_info("store.object_stored",
             "request_id=%s method=%s key=\"%s\" size=%" PRIu64 " sha256=%s etag=%s device=%s "
             "grant=%s md5=%s",
             r->id, r->method, o->key, o->size, o->sha256, o->etag, o->device, o->grant_id,
             r->md5_later ? "later" : r->stage != NULL ? "staged" : "inline");
    return true;
}

static enum MHD_Result finish_put(req *r, struct MHD_Connection *c)
{
    char md5_hex[33], etag[40];
    enum MHD_Result ret = MHD_NO;
    struct MHD_Response *resp;

    if (r->received != r->expected)
        return respond_error(r, c, 400, "IncompleteBody",
                             "You did not provide the number of bytes specified by the "
                             "Content-Length HTTP header.");
    if (!pipe_finish(r) || !stage_finish(r)) {
        log_error("store.write_failed", "request_id=%s error=\"%s\"", r->id, strerror(errno));
        return respond_error(r, c, 500, "InternalError", "the store could not write the object");
    }
    if (r->mp != NULL) /* UploadPart: a part, not an object */
        return store_mp_part_done(r, c);
    if (!commit_object(r, c, md5_hex, &ret))
        return ret;
    snprintf(etag, sizeof etag, "\"%s\"", md5_hex);
    resp = empty_response();
    if (resp == NULL)
        return MHD_NO;
    MHD_add_response_header(resp, "ETag", etag);
    if (r->want_checksum)
        MHD_add_response_header(resp, "x-amz-checksum-sha256", header(c, "x-amz-checksum-sha256"));
    return queue(r, c, 200, resp);
}

/* ---------------------------------------------------------------------- */
/* CopyObject                                                               */

/* Copies n bytes from in to out (both at offset 0): copy_file_range, so the
 * kernel moves the bytes (or shares the extents where the file system can),
 * with a read/write fallback where it cannot. */
static bool copy_bytes(int in, uint64_t in_base, store_fs_slot *out, uint64_t n,
                       const atomic_bool *abort)
{
    loff_t off_in = (loff_t)in_base, off_out = (loff_t)out->base;
    while (n > 0) {
        /* 64 MiB at a time, so that a shutdown is seen within a moment. */
        size_t chunk = n > (64u << 20) ? (size_t)(64u << 20) : (size_t)n;
        if (atomic_load(abort)) {
            errno = ECANCELED;
            return false;
        }
        ssize_t k = copy_file_range(in, &off_in, out->fd, &off_out, chunk, 0);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0 &&
            (errno == EXDEV || errno == ENOSYS || errno == EINVAL || errno == EOPNOTSUPP)) {
            char buf[65536];
            size_t want = chunk < sizeof buf ? chunk : sizeof buf;
            k = pread(in, buf, want, off_in);
            if (k > 0 && store_fs_slot_write(out, (uint64_t)off_out - out->base, buf,
                                             (size_t)k) != FERRY_OK)
                return false;
            if (k > 0) {
                off_in += k;
                off_out += k;
            }
        }
        if (k <= 0)
            return false; /* an error, or the source shorter than its record */
        n -= (uint64_t)k;
    }
    return true;
}

/* Whether an x-amz-copy-source-if-(none-)match value (a comma-separated
 * list of quoted ETags, or "*") names etag. */
static bool etag_listed(const char *list, const char *etag)
{
    const char *p = list;
    while (*p != '\0') {
        size_t len = strcspn(p, ",");
        const char *t = p;
        size_t l = len;
        while (l > 0 && (*t == ' ' || *t == '\t')) {
            t++;
            l--;
        }
        while (l > 0 && (t[l - 1] == ' ' || t[l - 1] == '\t'))
            l--;
        if (l >= 2 && t[0] == '"' && t[l - 1] == '"') {
            t++;
            l -= 2;
        }
        if ((l == 1 && t[0] == '*') || (l == strlen(etag) && strncasecmp(t, etag, l) == 0))
            return true;
        p += len;
        if (*p == ',')
            p++;
    }
    return false;
}

/* The x-amz-copy-source-if-* conditions against the source o, as S3 weighs
 * them: an if-match that holds overrides a failing if-unmodified-since, an
 * if-none-match decides over if-modified-since. False, with the request
 * answered (412 PreconditionFailed, or 400 for a date that is not one),
 * when the copy must not happen. */
static bool copy_conditions_ok(req *r, struct MHD_Connection *c, const ledger_object *o,
                               enum MHD_Result *ret)
{
    const char *match = header(c, "x-amz-copy-source-if-match");
    const char *none_match = header(c, "x-amz-copy-source-if-none-match");
    const char *since = header(c, "x-amz-copy-source-if-modified-since");
    const char *unmod = header(c, "x-amz-copy-source-if-unmodified-since");
    int64_t since_t = 0, unmod_t = 0;
    bool hold = true;
    if ((since != NULL && !store_parse_http_date(since, &since_t)) ||
        (unmod != NULL && !store_parse_http_date(unmod, &unmod_t))) {
        *ret = respond_error(r, c, 400, "InvalidArgument",
                             "x-amz-copy-source-if-modified-since and -if-unmodified-since take "
                             "an HTTP date (\"Sun, 06 Nov 1994 08:49:37 GMT\").");
        return false;
    }
    if (match != NULL)
        hold = hold && etag_listed(match, o->etag);
    else if (unmod != NULL)
        hold = hold && o->created_at <= unmod_t;
    if (none_match != NULL)
        hold = hold && !etag_listed(none_match, o->etag);
    else if (since != NULL)
        hold = hold && o->created_at > since_t;
    if (!hold) {
        *ret = respond_error(r, c, 412, "PreconditionFailed",
                             "At least one of the pre-conditions you specified did not hold");
        return false;
    }
    return true;
}

/* The source of CopyObject or UploadPartCopy: x-amz-copy-source
 * ("bucket/key" or "/bucket/key", URL-encoded) parsed, its object looked up
 * into o, the copy conditions checked, and its data opened (*fd_out, at
 * *base_out; read until r is freed or store_fs_read_done). False, with the
 * request answered (*ret), when there is no such source or it may not be
 * copied. */
bool store_copy_source_open(req *r, struct MHD_Connection *c, ledger_object *o, int *fd_out,
                            uint64_t *base_out, enum MHD_Result *ret)
{
    store *s = r->s;
    const char *src = header(c, "x-amz-copy-source");
    char src_path[STORE_RAW_PATH_MAX + 2];
    store_target *st = NULL;
    struct stat sb;
    int in = -1;
    uint64_t in_base = 0;
    ledger *l;
    ferry_err e;
    bool ok = false;

    /* "bucket/key" or "/bucket/key", URL-encoded, maybe "?versionId=". */
    size_t src_len = strcspn(src, "?");
    if (src[src_len] == '?') {
        *ret = respond_error(r, c, 501, "NotImplemented", "Object versions are not supported.");
        return false;
    }
    if (src[0] == '/') {
        src++;
        src_len--;
    }
    if (src_len + 1 > STORE_RAW_PATH_MAX) {
        *ret = respond_error(r, c, 400, "KeyTooLongError", "Your key is too long");
        return false;
    }
    src_path[0] = '/';
    memcpy(src_path + 1, src, src_len);
    src_path[src_len + 1] = '\0';
    st = calloc(1, sizeof *st);
    if (st == NULL) {
        *ret = respond_error(r, c, 500, "InternalError", "out of memory");
        goto out;
    }
    store_path_result pr = store_parse_path(src_path, src_len + 1, st);
    if (pr == STORE_PATH_KEY_TOO_LONG) {
        *ret = respond_error(r, c, 400, "KeyTooLongError", "Your key is too long");
        goto out;
    }
    if (pr != STORE_PATH_OK || st->key_len == 0 || memchr(st->key, '\0', st->key_len) != NULL) {
        *ret = respond_error(r, c, 400, "InvalidArgument",
                             "Copy Source must mention the source bucket and key: "
                             "sourcebucket/sourcekey");
        goto out;
    }
    if (strcmp(st->bucket, s->bucket) != 0) {
        *ret = respond_error(r, c, 404, "NoSuchBucket", "The specified bucket does not exist");
        goto out;
    }
    l = pool_take(s);
    e = ledger_object_get(l, st->bucket, st->key, o);
    pool_give(s, l);
    if (e == FERRY_OK && !copy_conditions_ok(r, c, o, ret))
        goto out;
    if (e == FERRY_OK && store_fs_is_parts(o->file_id)) {
        /* Made of its parts: read across them (r->copy_parts), no fd. */
        e = store_mp_data_open(s, o, 0, o->size, &r->copy_parts);
        if (e == FERRY_OK) {
            *fd_out = -1;
            *base_out = 0;
            ok = true;
            goto out;
        }
    } else if (e == FERRY_OK) {
        e = open_object_data(r, o, &in, &in_base);
    }
    if (e == FERRY_ERR_NOT_FOUND) {
        *ret = respond_error(r, c, 404, "NoSuchKey", "The specified key does not exist.");
        goto out;
    }
    if (e != FERRY_OK || fstat(in, &sb) != 0 || (uint64_t)sb.st_size < in_base + o->size) {
        *ret = respond_error(r, c, 500, "InternalError", "the source object cannot be read");
        goto out;
    }
    *fd_out = in;
    *base_out = in_base;
    in = -1;
    ok = true;
out:
    if (in >= 0)
        close(in);
    free(st);
    return ok;
}

/* CopyObject: PUT with x-amz-copy-source, for operators. The source's bytes
 * go to a new data file committed like an upload (fdatasync, rename, fsync
 * of the directory, then the ledger row); the copy keeps the source's
 * ETag (unless the source is made of its parts: see copy_object_work),
 * SHA-256 and size, and its content type and metadata unless
 * x-amz-metadata-directive is REPLACE; the x-amz-copy-source-if-*
 * conditions are checked (store_copy_source_open). Not supported: versions
 * (NotImplemented). */
/* CopyObject's copy, on a thread of its own (store_run_long_work): the
 * source's bytes into r's slot, flushed, then the new row (the source's
 * size and digests, this key and file: an operator's object, no device,
 * no grant to consume); the outcome goes to r->commit_err and
 * copy_object_answer() answers it. */
static void copy_object_work(req *r)
{
    store *s = r->s;
    ledger_object *o = r->obj;
    char replaced[LEDGER_FILE_ID_MAX + 1] = "";
    unsigned char md5[16];
    ferry_err e = FERRY_OK;

    /* A copy of an object made of its parts is an object of one piece,
     * and its ETag the MD5 of its bytes (S3 gives a copy made in one
     * request the same), not the source's "-N": that one names parts the
     * copy does not have. Any other copy keeps the source's bytes and
     * so its ETag. */
    if (!(r->copy_parts != NULL
              ? store_mp_data_copy(r->copy_parts, 0, o->size, &r->slot, &s->mp_abort, md5)
              : copy_bytes(r->copy_in, r->copy_in_base, &r->slot, o->size, &s->mp_abort)))
        e = errno == ECANCELED ? FERRY_ERR_UNAVAILABLE : FERRY_ERR_IO;
    else if (store_fs_slot_sync(&s->fs, &r->slot) != FERRY_OK)
        e = FERRY_ERR_IO;
    if (e == FERRY_ERR_IO)
        log_error("store.copy_failed", "request_id=%s error=\"%s\"", r->id, strerror(errno));
    /* The source is read: its data is let go now, not when r is freed. */
    if (r->copy_in >= 0)
        close(r->copy_in);
    r->copy_in = -1;
    store_fs_read_done(&s->fs, r->reading);
    r->reading[0] = '\0';
    store_mp_data_free(r->copy_parts);
    r->copy_parts = NULL;
    if (e == FERRY_OK) {
        if (store_fs_is_parts(o->file_id))
            store_hex(md5, sizeof md5, o->etag);
        snprintf(o->bucket, sizeof o->bucket, "%s", r->t.bucket);
        memcpy(o->key, r->t.key, r->t.key_len + 1);
        snprintf(o->file_id, sizeof o->file_id, "%s", r->slot.id);
        if (r->copy_replace) {
            snprintf(o->content_type, sizeof o->content_type, "%s", r->content_type);
            snprintf(o->meta, sizeof o->meta, "%s", r->meta);
        }
        o->device[0] = '\0';
        o->grant_id[0] = '\0';
        o->source_ip[0] = '\0';
        o->store_request_id[0] = '\0';
        o->created_at = ferry_time_now();
        e = group_commit(s, o, o->created_at, replaced);
        store_fs_slot_close(&s->fs, &r->slot, e == FERRY_OK);
        if (e != FERRY_OK)
            e = FERRY_ERR_DB; /* answered SlowDown: retry */
    } /* else req_free removes the data */
    if (e == FERRY_OK && replaced[0] != '\0')
        forget_data(s, replaced);
    if (e == FERRY_OK)
        log_info("store.object_copied", "request_id=%s key=\"%s\" source=\"%s\" size=%" PRIu64,
                 r->id, o->key, r->copy_source, o->size);
    r->commit_err = e;
    r->phase = PH_COMMITTED;
}

/* CopyObject's answer, once its copy is done. */
static enum MHD_Result copy_object_answer(req *r, struct MHD_Connection *c)
{
    char iso[STORE_ISO_TIME_LEN + 1];
    ferry_buf b;
    ferry_err e;
    struct MHD_Response *resp;

    switch (r->commit_err) {
    case FERRY_OK:
        break;
    case FERRY_ERR_UNAVAILABLE:
        return respond_error(r, c, 503, "SlowDown", "The store is shutting down; retry.");
    case FERRY_ERR_IO:
        return respond_error(r, c, 500, "InternalError", "the store could not write the object");
    default:
        return respond_error(r, c, 503, "SlowDown", "the ledger is busy; retry");
    }
    store_iso_time(r->obj->created_at, iso);
    ferry_buf_init(&b, 1024);
    e = ferry_buf_appendf(&b,
                          "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<CopyObjectResult "
                          "xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><LastModified>%s"
                          "</LastModified><ETag>&quot;%s&quot;</ETag></CopyObjectResult>",
                          iso, r->obj->etag);
    resp = e == FERRY_OK ? buf_response(&b) : NULL;
    ferry_buf_cleanup(&b);
    if (resp == NULL)
        return MHD_NO;
    MHD_add_response_header(resp, "Content-Type", "application/xml");
    return queue(r, c, 200, resp);
}

/* CopyObject: checked here, then copied and recorded by copy_object_work
 * on a thread of its own, the connection suspended (a copy of gigabytes
 * takes seconds, during which this libmicrohttpd thread would stall every
 * other connection it serves). */
static enum MHD_Result copy_object(req *r, struct MHD_Connection *c, const header_list *h)
{
    store *s = r->s;
    const char *cl = header(c, "Content-Length");
    const char *directive = header(c, "x-amz-metadata-directive");
    const char *why = NULL;
    ledger_object *o = NULL;
    int in = -1;
    uint64_t in_base = 0;
    bool replace;
    enum MHD_Result ret;

    if (r->is_grant)
        return respond_error(r, c, 403, "AccessDenied", "device credentials may not copy objects");
    if (header(c, "Transfer-Encoding") != NULL || (cl != NULL && strcmp(cl, "0") != 0))
        return respond_error(r, c, 400, "InvalidRequest", "CopyObject takes no request body.");
    if (directive != NULL && strcmp(directive, "COPY") != 0 && strcmp(directive, "REPLACE") != 0)
        return respond_error(r, c, 400, "InvalidArgument", "Unknown metadata directive.");
    replace = directive != NULL && strcmp(directive, "REPLACE") == 0;
    o = calloc(1, sizeof *o);
    if (o == NULL)
        return respond_error(r, c, 500, "InternalError", "out of memory");
    if (!store_copy_source_open(r, c, o, &in, &in_base, &ret))
        goto out;
    if (!replace && strlen(o->key) == r->t.key_len && memcmp(o->key, r->t.key, r->t.key_len) == 0) {
        ret = respond_error(r, c, 400, "InvalidRequest",
                            "This copy request is illegal because it is trying to copy an object "
                            "to itself without changing the object's metadata, storage class, "
                            "website redirect location or encryption attributes.");
        goto out;
    }
    if (replace) {
        if (!store_content_type(r, c, r->content_type, &ret))
            goto out;
        if (!collect_meta(h, r->meta, sizeof r->meta, &why)) {
            ret = respond_error(r, c, 400, "MetadataTooLarge", why);
            goto out;
        }
    }
    r->copy_source = strdup(o->key);
    if (r->copy_source == NULL) {
        ret = respond_error(r, c, 500, "InternalError", "out of memory");
        goto out;
    }
    if (store_fs_slot_open(&s->fs, o->size, true, &r->slot) != FERRY_OK) {
        ret = respond_error(r, c, 500, "InternalError", "cannot create the temporary file");
        goto out;
    }
    /* r owns the source and the row from here (req_free lets them go). */
    r->copying = true;
    r->copy_replace = replace;
    r->copy_in = in;
    r->copy_in_base = in_base;
    r->obj = o;
    if (store_run_long_work(r, c, copy_object_work))
        return MHD_YES;
    return copy_object_answer(r, c);
out:
    if (in >= 0)
        close(in);
    free(o);
    return ret;
}

/* ---------------------------------------------------------------------- */
/* POST object (browser-style form upload with a policy)                   */

#define POST_FIELD_MAX        (SIGV4_MAX_POLICY_LEN + 1024) /* one field's value */
#define POST_FIELDS_BYTES_MAX (64u << 10)                   /* all fields before the file */
#define POST_BUFFER           16384                         /* the post processor's buffer */

/* The form's fields as sigv4 wants them; values grow as the post processor
 * hands them over in pieces. */
typedef struct post_state {
    struct MHD_PostProcessor *pp;
    sigv4_kv kv[SIGV4_MAX_FORM_FIELDS];
    size_t len[SIGV4_MAX_FORM_FIELDS];
    size_t n;
    size_t bytes;
    bool file_started;
    bool file_done;
    bool failed; /* a refusal is deferred in the req */
    unsigned success_status;
    sigv4_verdict verdict;
    char filename[256];
} post_state;

static void post_state_free(post_state *ps)
{
    if (ps == NULL)
        return;
    if (ps->pp != NULL)
        MHD_destroy_post_processor(ps->pp);
    for (size_t i = 0; i < ps->n; i++) {
        free((char *)ps->kv[i].name);
        free((char *)ps->kv[i].value);
    }
    free(ps);
}

static const char *post_field(const post_state *ps, const char *name)
{
    for (size_t i = 0; i < ps->n; i++)
        if (strcasecmp(ps->kv[i].name, name) == 0)
            return ps->kv[i].value;
    return NULL;
}

static void post_fail(req *r, post_state *ps, unsigned status, const char *code,
                      const char *message)
{
    defer_error(r, status, code, message);
    ps->failed = true;
    req_discard_upload(r);
}

/* The file field begins: every field before it is known, so the policy is
 * verified, the key and the grant checked and the temporary file opened. */
static void post_start_file(req *r, post_state *ps, const char *filename)
{
    store *s = r->s;
    sigv4_post_form form = {
        .bucket = r->t.bucket, .fields = ps->kv, .n_fields = ps->n, .content_length = -1};
    const char *key, *v;
    ferry_buf kb;
    refusal why;
    ferry_err e;
    const char *mwhy = NULL;
    header_list *meta = NULL;

    ps->file_started = true;
    snprintf(ps->filename, sizeof ps->filename, "%s", filename != NULL ? filename : "");
    e = sigv4_verify_post(&s->verifier, &form, ferry_time_now(), &ps->verdict);
    if (e == FERRY_ERR_AUTH) {
        post_fail(r, ps, (unsigned)sigv4_reason_http_status(ps->verdict.reason),
                  sigv4_reason_s3_code(ps->verdict.reason),
                  sigv4_reason_message(ps->verdict.reason));
        return;
    }
    if (e != FERRY_OK) {
        post_fail(r, ps, 500, "InternalError", "the policy could not be checked");
        return;
    }
    key = post_field(ps, "key");
    if (key == NULL) {
        post_fail(r, ps, 400, "InvalidArgument", "Bucket POST must contain a field named 'key'.");
        return;
    }
    /* S3 replaces ${filename} with the name of the file sent. */
    ferry_buf_init(&kb, STORE_KEY_MAX);
    e = FERRY_OK;
    for (const char *p = key; *p != '\0' && e == FERRY_OK;) {
        if (strncmp(p, "${filename}", 11) == 0) {
            e = ferry_buf_append_str(&kb, ps->filename);
            p += 11;
        } else {
            e = ferry_buf_append_byte(&kb, *p++);
        }
    }
    if (e != FERRY_OK || kb.len == 0 || !store_key_check(kb.data, kb.len)) {
        ferry_buf_cleanup(&kb);
        post_fail(r, ps, 400, e == FERRY_ERR_TOO_LARGE ? "KeyTooLongError" : "InvalidArgument",
                  "The key is empty, too long or not UTF-8 without control characters.");
        return;
    }
    memcpy(r->t.key, kb.data, kb.len + 1);
    r->t.key_len = kb.len;
    ferry_buf_cleanup(&kb);

    if (strcmp(ps->verdict.access_key_id, s->grant_ak) == 0 && !grant_allows(r, "POST", &why)) {
        post_fail(r, ps, why.status, why.code, why.message);
        return;
    }
    v = post_field(ps, "Content-Type");
    snprintf(r->content_type, sizeof r->content_type, "%s",
             v != NULL && v[0] != '\0' ? v : DEFAULT_CONTENT_TYPE);
    if (r->is_grant && strcasecmp(r->content_type, r->grant.content_type) != 0) {
        post_fail(r, ps, 403, "AccessDenied", "Content-Type is not the grant's content type");
        return;
    }
    v = post_field(ps, "x-amz-checksum-sha256");
    if (v != NULL) {
        if (!store_b64_decode_exact(v, r->checksum, 32)) {
            post_fail(r, ps, 400, "InvalidRequest", "Value for x-amz-checksum-sha256 is invalid.");
            return;
        }
        r->want_checksum = true;
    }
    v = post_field(ps, "success_action_status");
    ps->success_status = 204;
    if (v != NULL && (strcmp(v, "200") == 0 || strcmp(v, "201") == 0))
        ps->success_status = (unsigned)atoi(v);
    meta = calloc(1, sizeof *meta);
    if (meta == NULL) {
        post_fail(r, ps, 500, "InternalError", "out of memory");
        return;
    }
    for (size_t i = 0; i < ps->n && meta->n < SIGV4_MAX_HEADERS; i++)
        meta->kv[meta->n++] = ps->kv[i];
    bool meta_ok = collect_meta(meta, r->meta, sizeof r->meta, &mwhy);
    free(meta);
    if (!meta_ok) {
        post_fail(r, ps, 400, "MetadataTooLarge", mwhy);
        return;
    }
    r->md5 = EVP_MD_CTX_new();
    r->sha = EVP_MD_CTX_new();
    if (r->md5 == NULL || r->sha == NULL || EVP_DigestInit_ex(r->md5, EVP_md5(), NULL) != 1 ||
        EVP_DigestInit_ex(r->sha, EVP_sha256(), NULL) != 1) {
        post_fail(r, ps, 500, "InternalError", "digest setup failed");
        return;
    }
    /* The file's size is not known before the form ends: its own file. */
    if (store_fs_slot_open(&s->fs, 0, false, &r->slot) != FERRY_OK) {
        post_fail(r, ps, 500, "InternalError", "cannot create the temporary file");
        return;
    }
}

static enum MHD_Result post_iterator(void *cls, enum MHD_ValueKind kind, const char *key,
                                     const char *filename, const char *content_type,
                                     const char *transfer_encoding, const char *data, uint64_t off,
                                     size_t size)
{
    req *r = cls;
    post_state *ps = r->post;
    (void)kind;
    (void)content_type;
    (void)transfer_encoding;
    if (ps->failed || ps->file_done || key == NULL)
        return MHD_YES;
    if (strcmp(key, "file") == 0) {
        if (!ps->file_started) {
            post_start_file(r, ps, filename);
            if (ps->failed)
                return MHD_YES;
        }
        if (size > 0) {
            if (r->received + size > r->s->max_object_size) {
                post_fail(r, ps, 400, "EntityTooLarge",
                          "Your proposed upload exceeds the maximum allowed object size.");
                return MHD_YES;
            }
            if (!body_write(r, data, size))
                ps->failed = true;
        }
        return MHD_YES;
    }
    if (ps->file_started) {
        /* S3 ignores fields after the file. */
        return MHD_YES;
    }
    if (off == 0) {
        if (ps->n == SIGV4_MAX_FORM_FIELDS) {
            post_fail(r, ps, 400, "InvalidArgument", "Too many form fields.");
            return MHD_YES;
        }
        ps->kv[ps->n].name = strdup(key);
        ps->kv[ps->n].value = calloc(1, 1);
        ps->len[ps->n] = 0;
        ps->n++;
        if (ps->kv[ps->n - 1].name == NULL || ps->kv[ps->n - 1].value == NULL) {
            post_fail(r, ps, 500, "InternalError", "out of memory");
            return MHD_YES;
        }
    }
    if (ps->n == 0 || strcmp(ps->kv[ps->n - 1].name, key) != 0) {
        post_fail(r, ps, 400, "MalformedPOSTRequest", "The form fields are interleaved.");
        return MHD_YES;
    }
    size_t i = ps->n - 1;
    if (ps->len[i] + size > POST_FIELD_MAX || ps->bytes + size > POST_FIELDS_BYTES_MAX ||
        memchr(data, '\0', size) != NULL) {
        post_fail(r, ps, 400, "MalformedPOSTRequest", "A form field is too large or has NUL.");
        return MHD_YES;
    }
    char *grown = realloc((char *)ps->kv[i].value, ps->len[i] + size + 1);
    if (grown == NULL) {
        post_fail(r, ps, 500, "InternalError", "out of memory");
        return MHD_YES;
    }
    memcpy(grown + ps->len[i], data, size);
    ps->len[i] += size;
    grown[ps->len[i]] = '\0';
    ps->kv[i].value = grown;
    ps->bytes += size;
    return MHD_YES;
}

static enum MHD_Result begin_post(req *r, struct MHD_Connection *c)
{
    const char *ct = header(c, "Content-Type");
    post_state *ps;
    if (ct == NULL || strncasecmp(ct, "multipart/form-data", 19) != 0)
        return respond_error(r, c, 412, "PreconditionFailed",
                             "Bucket POST must be of the enclosure-type multipart/form-data");
    ps = calloc(1, sizeof *ps);
    if (ps == NULL)
        return MHD_NO;
    r->post = ps;
    ps->pp = MHD_create_post_processor(c, POST_BUFFER, post_iterator, r);
    if (ps->pp == NULL)
        return respond_error(r, c, 400, "MalformedPOSTRequest",
                             "The body of your POST request is not well-formed "
                             "multipart/form-data.");
    r->start_ns = ferry_time_mono_ns();
    r->phase = PH_POST;
    watch_add(r, c);
    return MHD_YES;
}

static enum MHD_Result post_chunk(req *r, const char *data, size_t len)
{
    post_state *ps = r->post;
    if (!ps->failed && MHD_post_process(ps->pp, data, len) != MHD_YES && !ps->failed)
        post_fail(r, ps, 400, "MalformedPOSTRequest",
                  "The body of your POST request is not well-formed multipart/form-data.");
    return MHD_YES;
}

ferry_err store_location_xml(ferry_buf *b, const req *r, const char *root, const char *attrs,
                             const char *etag)
{
    ferry_err e = ferry_buf_appendf(b, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<%s%s>"
                                       "<Location>/", root, attrs);
    if (e == FERRY_OK)
        e = store_xml_escape(b, r->t.bucket, strlen(r->t.bucket));
    if (e == FERRY_OK)
        e = ferry_buf_append_byte(b, '/');
    if (e == FERRY_OK)
        e = store_url_encode(b, r->t.key, r->t.key_len);
    if (e == FERRY_OK)
        e = ferry_buf_append_str(b, "</Location><Bucket>");
    if (e == FERRY_OK)
        e = store_xml_escape(b, r->t.bucket, strlen(r->t.bucket));
    if (e == FERRY_OK)
        e = ferry_buf_append_str(b, "</Bucket><Key>");
    if (e == FERRY_OK)
        e = store_xml_escape(b, r->t.key, r->t.key_len);
    if (e == FERRY_OK)
        e = ferry_buf_appendf(b, "</Key><ETag>&quot;%s&quot;</ETag></%s>", etag, root);
    return e;
}

static enum MHD_Result finish_post(req *r, struct MHD_Connection *c)
{
    post_state *ps = r->post;
    char md5_hex[33], etag[40];
    enum MHD_Result ret = MHD_NO;
    struct MHD_Response *resp;
    ferry_buf b;
    ferry_err e;

    if (ps->failed)
        return respond_error(r, c, (unsigned)r->err_status, r->err_code, r->err_msg);
    if (!ps->file_started)
        return respond_error(r, c, 400, "InvalidArgument",
                             "POST requires exactly one file upload per request.");
    sigv4_reason lr = sigv4_post_check_length(&ps->verdict, (int64_t)r->received);
    if (lr != SIGV4_R_OK)
        return respond_error(r, c, (unsigned)sigv4_reason_http_status(lr), sigv4_reason_s3_code(lr),
                             sigv4_reason_message(lr));
    if (r->is_grant && r->received != r->grant.size)
        return respond_error(r, c, 400,
                             r->received < r->grant.size ? "EntityTooSmall" : "EntityTooLarge",
                             "The file is not of the grant's size.");
    if (!commit_object(r, c, md5_hex, &ret))
        return ret;
    snprintf(etag, sizeof etag, "\"%s\"", md5_hex);
    ferry_buf_init(&b, 16384);
    e = FERRY_OK;
    if (ps->success_status == 201)
        e = store_location_xml(&b, r, "PostResponse", "", md5_hex);
    if (e != FERRY_OK) {
        ferry_buf_cleanup(&b);
        return MHD_NO;
    }
    resp = buf_response(&b);
    ferry_buf_cleanup(&b);
    if (resp == NULL)
        return MHD_NO;
    MHD_add_response_header(resp, "ETag", etag);
    if (ps->success_status == 201)
        MHD_add_response_header(resp, "Content-Type", "application/xml");
    return queue(r, c, ps->success_status, resp);
}

/* ---------------------------------------------------------------------- */
/* GetObject, HeadObject, DeleteObject                                      */

static void http_date(int64_t t, char out[64])
{
    struct tm tm;
    time_t tt = (time_t)t;
    static const char *const days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                         "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    gmtime_r(&tt, &tm);
    snprintf(out, 64, "%s, %02d %s %04d %02d:%02d:%02d GMT", days[tm.tm_wday], tm.tm_mday,
             months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/* GetObject and HeadObject; part_number (the raw ?partNumber=, or NULL)
 * asks for one part of an object completed from a multipart upload: its
 * bytes (206, Content-Range) and x-amz-mp-parts-count. An object stored in
 * one piece has one part, itself. */
static enum MHD_Result get_object(req *r, struct MHD_Connection *c, bool head,
                                  const char *part_number)
{
    store *s = r->s;
    ledger_object *o = calloc(1, sizeof *o);
    ledger *l;
    ferry_err e;
    int fd = -1;
    uint64_t base = 0;
    struct stat st;
    uint64_t first = 0, length = 0;
    store_range_result rr;
    struct MHD_Response *resp;
    char etag[LEDGER_ETAG_MAX + 3], date[64], range[96];
    unsigned status = 200;
    unsigned part = 0;
    ledger_object_part op;
    char parts_count[16] = "";
    bool parts = false;
    enum MHD_Result ret;

    if (o == NULL)
        return respond_error(r, c, 500, "InternalError", "out of memory");
    memset(&op, 0, sizeof op);
    if (part_number != NULL) {
        if (!store_parse_part_number(part_number, &part)) {
            free(o);
            return respond_error(r, c, 400, "InvalidArgument",
                                 "Part number must be an integer between 1 and 10000, inclusive");
        }
        if (header(c, "Range") != NULL) {
            free(o);
            return respond_error(r, c, 400, "InvalidRequest",
                                 "Cannot specify both Range header and partNumber query "
                                 "parameter.");
        }
    }
    l = pool_take(s);
    e = ledger_object_get(l, r->t.bucket, r->t.key, o);
    pool_give(s, l);
    if (e == FERRY_ERR_NOT_FOUND) {
        free(o);
        return respond_error(r, c, 404, "NoSuchKey", "The specified key does not exist.");
    }
    /* An object made of its multipart parts is opened once its range is
     * known (store_mp_data_open, below). */
    parts = e == FERRY_OK && store_fs_is_parts(o->file_id);
    if (e == FERRY_OK && !parts)
        e = open_object_data(r, o, &fd, &base);
    if (e == FERRY_ERR_NOT_FOUND) {
        /* Deleted or replaced between the lookup and the open. */
        free(o);
        return respond_error(r, c, 404, "NoSuchKey", "The specified key does not exist.");
    }
    if (e != FERRY_OK ||
        (!parts && (fstat(fd, &st) != 0 || (uint64_t)st.st_size < base + o->size))) {
        if (fd >= 0)
            close(fd);
        free(o);
        return respond_error(r, c, 500, "InternalError", "the object cannot be read");
    }
    length = o->size;
    if (part != 0) {
        /* After the open: the boundaries belong to the file id just opened
         * (a put over the key meanwhile drops them; then the object read is
         * the one opened, as one part). */
        l = pool_take(s);
        e = ledger_object_part_get(l, o->file_id, part, &op);
        pool_give(s, l);
        if (e == FERRY_OK && op.count == 0 && part == 1) {
            op.found = true;
            op.offset = 0;
            op.size = o->size;
        }
        if (e == FERRY_OK && op.found && op.offset + op.size > o->size)
            e = FERRY_ERR_DB; /* boundaries that do not fit the object */
        if (e != FERRY_OK || !op.found) {
            if (fd >= 0) /* none for an object made of its parts */
                close(fd);
            free(o);
            if (e != FERRY_OK)
                return respond_error(r, c, 503, "SlowDown", "the ledger is busy; retry");
            return respond_error(r, c, 416, "InvalidPartNumber",
                                 "The requested partnumber is not satisfiable");
        }
        if (op.count > 0)
            snprintf(parts_count, sizeof parts_count, "%u", op.count);
        rr = op.size > 0 ? STORE_RANGE_OK : STORE_RANGE_NONE;
        first = op.offset;
        length = op.size;
    } else {
        rr = store_parse_range(header(c, "Range"), o->size, &first, &length);
    }
    if (rr == STORE_RANGE_UNSATISFIABLE) {
        if (fd >= 0)
            close(fd);
        free(o);
        return respond_error(r, c, 416, "InvalidRange", "The requested range is not satisfiable");
    }
    if (rr == STORE_RANGE_OK) {
        status = 206;
        snprintf(range, sizeof range, "bytes %" PRIu64 "-%" PRIu64 "/%" PRIu64, first,
                 first + length - 1, o->size);
    } else if (part == 0) {
        first = 0;
        length = o->size;
    }
    /* For HEAD libmicrohttpd sends the headers of this same response
     * (Content-Length included) and never reads the file (nor the parts,
     * which are not even opened). */
    if (parts) {
        store_mp_data *d = NULL;
        e = store_mp_data_open(s, o, first, head ? 0 : length, &d);
        if (e != FERRY_OK) {
            free(o);
            if (e == FERRY_ERR_NOT_FOUND)
                return respond_error(r, c, 404, "NoSuchKey", "The specified key does not exist.");
            return respond_error(r, c, 500, "InternalError", "the object cannot be read");
        }
        resp = store_mp_data_response(d, first, length);
    } else {
        resp = MHD_create_response_from_fd_at_offset64(length, fd, base + first);
        if (resp == NULL)
            close(fd);
    }
    if (resp == NULL) {
        free(o);
        return MHD_NO;
    }
    snprintf(etag, sizeof etag, "\"%s\"", o->etag);
    http_date(o->created_at, date);
    MHD_add_response_header(resp, "ETag", etag);
    MHD_add_response_header(resp, "Last-Modified", date);
    MHD_add_response_header(resp, "Content-Type", o->content_type);
    MHD_add_response_header(resp, "Accept-Ranges", "bytes");
    if (status == 206)
        MHD_add_response_header(resp, "Content-Range", range);
    if (parts_count[0] != '\0')
        MHD_add_response_header(resp, "x-amz-mp-parts-count", parts_count);
    add_meta_headers(resp, o->meta);
    free(o);
    ret = queue(r, c, status, resp);
    return ret;
}

/* GetObjectTagging: the store keeps no tags, so an existing object's tag
 * set is empty. */
static enum MHD_Result get_object_tagging(req *r, struct MHD_Connection *c)
{
    store *s = r->s;
    ledger_object *o = calloc(1, sizeof *o);
    ledger *l;
    ferry_err e;
    ferry_buf b;
    enum MHD_Result ret;
    if (o == NULL)
        return respond_error(r, c, 500, "InternalError", "out of memory");
    l = pool_take(s);
    e = ledger_object_get(l, r->t.bucket, r->t.key, o);
    pool_give(s, l);
    free(o);
    if (e == FERRY_ERR_NOT_FOUND)
        return respond_error(r, c, 404, "NoSuchKey", "The specified key does not exist.");
    if (e != FERRY_OK)
        return respond_error(r, c, 503, "SlowDown", "the ledger is busy; retry");
    ferry_buf_init(&b, 1024);
    e = ferry_buf_append_str(&b, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Tagging "
                                 "xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><TagSet>"
                                 "</TagSet></Tagging>");
    ret = e == FERRY_OK ? store_respond_xml(r, c, 200, &b) : MHD_NO;
    ferry_buf_cleanup(&b);
    return ret;
}

static enum MHD_Result delete_object(req *r, struct MHD_Connection *c)
{
    store *s = r->s;
    char file_id[LEDGER_FILE_ID_MAX + 1];
    ledger *l = pool_take(s);
    ferry_err e = ledger_object_delete(l, r->t.bucket, r->t.key, file_id);
    pool_give(s, l);
    if (e == FERRY_OK) {
        forget_data(s, file_id);
        log_info("store.object_deleted", "request_id=%s key=\"%s\"", r->id, r->t.key);
    } else if (e != FERRY_ERR_NOT_FOUND) {
        return respond_error(r, c, 503, "SlowDown", "the ledger is busy; retry");
    }
    /* S3 answers 204 whether or not the key existed. */
    return queue(r, c, 204, empty_response());
}

/* ---------------------------------------------------------------------- */
/* ListObjectsV2                                                            */

typedef struct list_state {
    const char *prefix;
    size_t prefix_len;
    const char *delim;
    size_t delim_len;
    bool url;
    size_t max_keys;
    size_t count;
    bool truncated;
    bool restart;
    char start[STORE_KEY_MAX + 8];
    ferry_buf *contents;
    ferry_buf *prefixes;
    ferry_err err;
} list_state;

static ferry_err append_key(list_state *ls, ferry_buf *b, const char *k, size_t len)
{
    return ls->url ? store_url_encode(b, k, len) : store_xml_escape(b, k, len);
}

static int list_row(const ledger_object *o, void *arg)
{
    list_state *ls = arg;
    size_t klen = strlen(o->key);
    if (ls->delim_len > 0 && klen > ls->prefix_len) {
        const char *rest = o->key + ls->prefix_len;
        const char *hit = memmem(rest, klen - ls->prefix_len, ls->delim, ls->delim_len);
        if (hit != NULL) {
            size_t cp_len = (size_t)(hit - o->key) + ls->delim_len;
            if (ls->count == ls->max_keys) {
                ls->truncated = true;
                return 1;
            }
            ls->err = ferry_buf_append_str(ls->prefixes, "<CommonPrefixes><Prefix>");
            if (ls->err == FERRY_OK)
                ls->err = append_key(ls, ls->prefixes, o->key, cp_len);
            if (ls->err == FERRY_OK)
                ls->err = ferry_buf_append_str(ls->prefixes, "</Prefix></CommonPrefixes>");
            ls->count++;
            /* Skip every other key under this prefix: keys are UTF-8, so
             * none contains 0xFF and prefix+0xFF sorts after all of them. */
            memcpy(ls->start, o->key, cp_len);
            ls->start[cp_len] = (char)0xFF;
            ls->start[cp_len + 1] = '\0';
            ls->restart = true;
            return 1;
        }
    }
    if (ls->count == ls->max_keys) {
        ls->truncated = true;
        return 1;
    }
    char iso[STORE_ISO_TIME_LEN + 1];
    store_iso_time(o->created_at, iso);
    ls->err = ferry_buf_append_str(ls->contents, "<Contents><Key>");
    if (ls->err == FERRY_OK)
        ls->err = append_key(ls, ls->contents, o->key, klen);
    if (ls->err == FERRY_OK)
        ls->err = ferry_buf_appendf(ls->contents,
                                    "</Key><LastModified>%s</LastModified><ETag>&quot;%s&quot;"
                                    "</ETag><Size>%" PRIu64
                                    "</Size><StorageClass>STANDARD</StorageClass></Contents>",
                                    iso, o->etag, o->size);
    ls->count++;
    memcpy(ls->start, o->key, klen + 1);
    return ls->err != FERRY_OK;
}

/* The value of query parameter name, or NULL. */
static const char *qparam(const sigv4_query *q, const char *name)
{
    for (size_t i = 0; i < q->n; i++)
        if (strcmp(q->params[i].name, name) == 0)
            return q->params[i].value;
    return NULL;
}

static enum MHD_Result list_objects(req *r, struct MHD_Connection *c)
{
    store *s = r->s;
    const char *qs = strchr(r->uri, '?');
    sigv4_query q;
    list_state *ls = NULL;
    ferry_buf out, contents, prefixes;
    const char *lt, *prefix, *delim, *mk, *token, *sa, *enc;
    enum MHD_Result ret;
    ferry_err e = FERRY_OK;
    char token_out[2 * (STORE_KEY_MAX + 8) + 1];

    memset(&q, 0, sizeof q);
    if (sigv4_parse_query(qs != NULL ? qs + 1 : "", &q) != SIGV4_R_OK)
        return respond_error(r, c, 400, "InvalidArgument", "malformed query string");
    ferry_buf_init(&out, STORE_XML_MAX);
    ferry_buf_init(&contents, STORE_XML_MAX);
    ferry_buf_init(&prefixes, STORE_XML_MAX);
    lt = qparam(&q, "list-type");
    prefix = qparam(&q, "prefix");
    delim = qparam(&q, "delimiter");
    mk = qparam(&q, "max-keys");
    token = qparam(&q, "continuation-token");
    sa = qparam(&q, "start-after");
    enc = qparam(&q, "encoding-type");
    if (qparam(&q, "location") != NULL) {
        e = ferry_buf_appendf(&out,
                              "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<LocationConstraint "
                              "xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">%s"
                              "</LocationConstraint>",
                              strcmp(s->region, "us-east-1") == 0 ? "" : s->region);
        goto send;
    }
    if (lt == NULL || strcmp(lt, "2") != 0) {
        ret = respond_error(r, c, 501, "NotImplemented",
                            "Only ListObjectsV2 (list-type=2) is supported.");
        goto done;
    }
    ls = calloc(1, sizeof *ls);
    if (ls == NULL) {
        ret = respond_error(r, c, 500, "InternalError", "out of memory");
        goto done;
    }
    ls->prefix = prefix != NULL ? prefix : "";
    ls->prefix_len = strlen(ls->prefix);
    ls->delim = delim != NULL ? delim : "";
    ls->delim_len = strlen(ls->delim);
    ls->max_keys = STORE_LIST_MAX_KEYS;
    ls->contents = &contents;
    ls->prefixes = &prefixes;
    if (ls->prefix_len > STORE_KEY_MAX || ls->delim_len > 64) {
        ret = respond_error(r, c, 400, "InvalidArgument", "prefix or delimiter too long");
        goto done;
    }
    if (mk != NULL) {
        char *end = NULL;
        errno = 0;
        long long v = strtoll(mk, &end, 10);
        if (errno != 0 || end == mk || *end != '\0' || v < 0) {
            ret = respond_error(r, c, 400, "InvalidArgument", "max-keys is not a number >= 0");
            goto done;
        }
        if (v < STORE_LIST_MAX_KEYS)
            ls->max_keys = (size_t)v;
    }
    if (enc != NULL && strcmp(enc, "url") != 0) {
        ret = respond_error(r, c, 400, "InvalidArgument", "Invalid Encoding Method specified");
        goto done;
    }
    ls->url = enc != NULL;
    if (sa != NULL) {
        if (strlen(sa) > STORE_KEY_MAX) {
            ret = respond_error(r, c, 400, "InvalidArgument", "start-after too long");
            goto done;
        }
        snprintf(ls->start, sizeof ls->start, "%s", sa);
    }
    if (token != NULL) {
        /* Our tokens are the hex of where the walk stopped. */
        size_t tl = strlen(token);
        char dec[STORE_KEY_MAX + 8];
        bool ok = tl % 2 == 0 && tl / 2 < sizeof dec;
        for (size_t i = 0; ok && i < tl / 2; i++) {
            unsigned int byte;
            if (sscanf(token + 2 * i, "%2x", &byte) != 1 ||
                strchr("0123456789abcdef", token[2 * i]) == NULL ||
                strchr("0123456789abcdef", token[2 * i + 1]) == NULL || byte == 0)
                ok = false;
            else
                dec[i] = (char)byte;
        }
        if (!ok) {
            ret = respond_error(r, c, 400, "InvalidArgument",
                                "The continuation token provided is incorrect");
            goto done;
        }
        dec[tl / 2] = '\0';
        if (strcmp(dec, ls->start) > 0)
            memcpy(ls->start, dec, tl / 2 + 1);
    }
    {
        ledger *l = pool_take(s);
        do {
            ls->restart = false;
            size_t limit = ls->max_keys - ls->count + 1;
            e = ledger_object_list(l, s->bucket, ls->prefix, ls->start, limit, list_row, ls);
            if (e == FERRY_OK)
                e = ls->err;
        } while (e == FERRY_OK && ls->restart);
        pool_give(s, l);
    }
    if (e != FERRY_OK) {
        ret = respond_error(r, c, e == FERRY_ERR_TOO_LARGE ? 400 : 503,
                            e == FERRY_ERR_TOO_LARGE ? "InvalidArgument" : "SlowDown",
                            "the listing could not be made");
        goto done;
    }
    e = ferry_buf_append_str(&out, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListBucketResult "
                                   "xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Name>");
    if (e == FERRY_OK)
        e = store_xml_escape(&out, s->bucket, strlen(s->bucket));
    if (e == FERRY_OK)
        e = ferry_buf_append_str(&out, "</Name><Prefix>");
    if (e == FERRY_OK)
        e = append_key(ls, &out, ls->prefix, ls->prefix_len);
    if (e == FERRY_OK)
        e = ferry_buf_append_str(&out, "</Prefix>");
    if (e == FERRY_OK && ls->delim_len > 0) {
        e = ferry_buf_append_str(&out, "<Delimiter>");
        if (e == FERRY_OK)
            e = append_key(ls, &out, ls->delim, ls->delim_len);
        if (e == FERRY_OK)
            e = ferry_buf_append_str(&out, "</Delimiter>");
    }
    if (e == FERRY_OK)
        e = ferry_buf_appendf(&out,
                              "<MaxKeys>%zu</MaxKeys><KeyCount>%zu</KeyCount>"
                              "<IsTruncated>%s</IsTruncated>",
                              ls->max_keys, ls->count, ls->truncated ? "true" : "false");
    if (e == FERRY_OK && ls->url)
        e = ferry_buf_append_str(&out, "<EncodingType>url</EncodingType>");
    if (e == FERRY_OK && token != NULL) {
        e = ferry_buf_append_str(&out, "<ContinuationToken>");
        if (e == FERRY_OK)
            e = store_xml_escape(&out, token, strlen(token));
        if (e == FERRY_OK)
            e = ferry_buf_append_str(&out, "</ContinuationToken>");
    }
    if (e == FERRY_OK && ls->truncated) {
        store_hex((const unsigned char *)ls->start, strlen(ls->start), token_out);
        e = ferry_buf_appendf(&out, "<NextContinuationToken>%s</NextContinuationToken>", token_out);
    }
    if (e == FERRY_OK && sa != NULL) {
        e = ferry_buf_append_str(&out, "<StartAfter>");
        if (e == FERRY_OK)
            e = append_key(ls, &out, sa, strlen(sa));
        if (e == FERRY_OK)
            e = ferry_buf_append_str(&out, "</StartAfter>");
    }
    if (e == FERRY_OK)
        e = ferry_buf_append(&out, contents.data != NULL ? contents.data : "", contents.len);
    if (e == FERRY_OK)
        e = ferry_buf_append(&out, prefixes.data != NULL ? prefixes.data : "", prefixes.len);
    if (e == FERRY_OK)
        e = ferry_buf_append_str(&out, "</ListBucketResult>");
send:
    if (e != FERRY_OK) {
        ret = respond_error(r, c, 500, "InternalError", "the listing is too large");
        goto done;
    }
    {
        struct MHD_Response *resp = buf_response(&out);
        if (resp == NULL) {
            ret = MHD_NO;
            goto done;
        }
        MHD_add_response_header(resp, "Content-Type", "application/xml");
        ret = queue(r, c, 200, resp);
    }
done:
    free(ls);
    ferry_buf_cleanup(&out);
    ferry_buf_cleanup(&contents);
    ferry_buf_cleanup(&prefixes);
    sigv4_query_cleanup(&q);
    return ret;
}

/* ---------------------------------------------------------------------- */
/* Dispatch                                                                 */

static enum MHD_Result begin(req *r, struct MHD_Connection *c, const char *method)
{
    store *s = r->s;
    header_list *h = NULL;
    sigv4_verdict verdict;
    enum MHD_Result ret = MHD_NO;
    principal p;
    bool is_put, is_get, is_head, is_delete;
    char *q;
    size_t path_len;
    char msg[160];
    char sub[40];
    bool mp = false;
    bool get_tagging = false;

    if (strlen(method) > 16) {
        r->method = "?";
        return respond_error(r, c, 405, "MethodNotAllowed",
                             "The specified method is not allowed against this resource.");
    }
    r->method = method;
    /* The store's own limits on the request head come first, and are set
     * below libmicrohttpd's memory limit (store_min_conn_memory), so that a
     * client over them gets an S3 answer rather than libmicrohttpd's HTML. */
    if (r->uri == NULL) {
        if (!r->uri_too_long)
            return respond_error(r, c, 500, "InternalError", "out of memory");
        snprintf(msg, sizeof msg, "The request target is longer than %u bytes.",
                 s->max_target_bytes);
        return respond_error(r, c, 414, "InvalidURI", msg);
    }
    h = calloc(1, sizeof *h);
    if (h == NULL)
        return respond_error(r, c, 500, "InternalError", "out of memory");
    MHD_get_connection_values(c, MHD_HEADER_KIND, collect_header, h);
    if (h->total > s->max_headers || h->bytes > s->max_header_bytes) {
        snprintf(msg, sizeof msg,
                 "Your request header section exceeds the maximum allowed size (%u headers, "
                 "%u bytes).",
                 s->max_headers, s->max_header_bytes);
        ret = respond_error(r, c, 400, "RequestHeaderSectionTooLarge", msg);
        goto out;
    }
    q = strchr(r->uri, '?');
    path_len = q != NULL ? (size_t)(q - r->uri) : strlen(r->uri);
    switch (store_parse_path(r->uri, path_len, &r->t)) {
    case STORE_PATH_OK:
        break;
    case STORE_PATH_KEY_TOO_LONG:
        ret = respond_error(r, c, 400, "KeyTooLongError", "Your key is too long");
        goto out;
    case STORE_PATH_BAD_KEY:
        ret = respond_error(r, c, 400, "InvalidArgument",
                            "Object keys must be UTF-8 without control characters.");
        goto out;
    case STORE_PATH_BAD_BUCKET:
        ret = respond_error(r, c, 400, "InvalidBucketName", "The specified bucket is not valid.");
        goto out;
    default:
        ret = respond_error(r, c, 400, "InvalidURI", "Couldn't parse the specified URI.");
        goto out;
    }
    /* The key must not have been truncated at a NUL by the decoder. */
    if (memchr(r->t.key, '\0', r->t.key_len) != NULL) {
        ret = respond_error(r, c, 400, "InvalidArgument", "Object keys must not contain NUL");
        goto out;
    }
    /* PUT ?acl, DELETE ?tagging, PUT ?partNumber&uploadId... are other
     * operations than the plain request: served as that, they would
     * overwrite or delete the object. */
    if (q != NULL && store_query_subresource(q + 1, strlen(q + 1), sub, sizeof sub)) {
        /* Multipart upload (store_multipart.c), unless the query names
         * another sub-resource as well. */
        mp = store_mp_query(q + 1, sub, sizeof sub);
        /* GetObjectTagging alone is answered: the store keeps no tags, so
         * every object's set is empty (the AWS CLI reads it before a
         * multipart copy). Setting or deleting tags stays refused. */
        get_tagging = !mp && strcmp(method, "GET") == 0 &&
                      (strcmp(q + 1, "tagging") == 0 || strcmp(q + 1, "tagging=") == 0);
        if (!mp && !get_tagging) {
            snprintf(msg, sizeof msg, "The ?%s sub-resource is not supported.", sub);
            ret = respond_error(r, c, 501, "NotImplemented", msg);
            goto out;
        }
    }

    is_put = strcmp(method, "PUT") == 0;
    is_get = strcmp(method, "GET") == 0;
    is_head = strcmp(method, "HEAD") == 0;
    is_delete = strcmp(method, "DELETE") == 0;
    if (!is_put && !is_get && !is_head && !is_delete && strcmp(method, "POST") != 0) {
        ret = respond_error(r, c, 405, "MethodNotAllowed",
                            "The specified method is not allowed against this resource.");
        goto out;
    }

    if (strcmp(method, "POST") == 0 && !mp) {
        /* A form upload carries its signature in the form (the policy), so
         * it is checked when the file field begins (post_start_file). */
        if (r->t.bucket[0] == '\0' || r->t.key_len != 0)
            ret = respond_error(r, c, 405, "MethodNotAllowed",
                                "POST uploads go to the bucket (/<bucket>).");
        else if (strcmp(r->t.bucket, s->bucket) != 0)
            ret = respond_error(r, c, 404, "NoSuchBucket", "The specified bucket does not exist");
        else
            ret = begin_post(r, c);
        goto out;
    }
    p = authenticate(r, c, h, &verdict, &ret);
    if (p == P_NONE)
        goto out;
    if (r->t.bucket[0] == '\0') {
        ret = respond_error(r, c, 405, "MethodNotAllowed", "Listing buckets is not supported.");
        goto out;
    }
    if (strcmp(r->t.bucket, s->bucket) != 0) {
        ret = respond_error(r, c, 404, "NoSuchBucket", "The specified bucket does not exist");
        goto out;
    }
    if (mp) {
        /* Grants stay single-use, single-request uploads. */
        if (p == P_GRANT)
            ret = respond_error(r, c, 403, "AccessDenied",
                                "device credentials may not use multipart upload");
        else
            ret = store_mp_begin(r, c, h, &verdict);
        goto out;
    }
    if (p == P_GRANT && !is_put) {
        ret = respond_error(r, c, 403, "AccessDenied",
                            "device credentials may only upload with a grant");
        goto out;
    }
    if (get_tagging) {
        ret = r->t.key_len == 0
                  ? respond_error(r, c, 501, "NotImplemented", "Bucket tagging is not supported.")
                  : get_object_tagging(r, c);
        goto out;
    }
    if (r->t.key_len == 0) {
        if (is_get)
            ret = list_objects(r, c);
        else if (is_head)
            ret = queue(r, c, 200, empty_response());
        else
            ret = respond_error(r, c, 405, "MethodNotAllowed",
                                "The specified method is not allowed against this resource.");
        goto out;
    }
    if (is_put) {
        if (p == P_GRANT && !check_grant(r, c, "PUT", &ret))
            goto out;
        ret = begin_put(r, c, h, &verdict);
    } else if (is_get || is_head) {
        ret = get_object(r, c, is_head, NULL);
    } else {
        ret = delete_object(r, c);
    }
out:
    free(h);
    return ret;
}

/* A GET, HEAD or DELETE that announces no body (no Content-Length other
 * than 0, no Transfer-Encoding). */
static bool bodyless(struct MHD_Connection *c, const char *method)
{
    const char *length = header(c, "Content-Length");
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0 && strcmp(method, "DELETE") != 0)
        return false;
    return header(c, "Transfer-Encoding") == NULL && (length == NULL || strcmp(length, "0") == 0);
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *c, const char *url,
                                 const char *method, const char *version, const char *upload_data,
                                 size_t *upload_data_size, void **con_cls)
{
    req *r = *con_cls;
    (void)cls;
    (void)url;
    (void)version;
    if (r == NULL)
        return MHD_NO;
    if (r->phase == PH_BODY || r->phase == PH_POST || r->phase == PH_DISCARD || r->phase == PH_MP) {
        atomic_fetch_add(&r->progress, *upload_data_size);
        if (atomic_load(&r->wstate) == W_TIMED_OUT) {
            /* Answered RequestTimeout: drop the rest, store nothing; at the
             * body's end, close (there is nothing more to answer). */
            bool more = *upload_data_size > 0;
            *upload_data_size = 0;
            return more ? MHD_YES : MHD_NO;
        }
        if (*upload_data_size == 0) {
            if (!watch_claim(r))
                return MHD_NO;
            if (r->watched) /* the watchdog is done with it: the idle timeout again */
                (void)MHD_set_connection_option(c, MHD_CONNECTION_OPTION_TIMEOUT,
                                                r->s->idle_timeout_s);
        }
    }
    switch (r->phase) {
    case PH_NEW: {
        conn_watch *w = conn_of(c);
        if (w != NULL)
            atomic_store(&w->in_request, true);
        if (bodyless(c, method)) {
            /* libmicrohttpd 0.9.75 closes the connection after an answer
             * queued on this first call (it counts as "early": the request
             * might still have a body to skip). Answering on the next call,
             * once the request is complete, keeps the connection alive for
             * the client's next GET, HEAD or DELETE. */
            r->phase = PH_HEAD_READ;
            return MHD_YES;
        }
        return begin(r, c, method);
    }
    case PH_HEAD_READ:
        return begin(r, c, method);
    case PH_BODY:
        if (*upload_data_size > 0) {
            size_t n = *upload_data_size;
            *upload_data_size = 0;
            return put_chunk(r, upload_data, n);
        }
        return finish_put(r, c);
    case PH_POST:
        if (*upload_data_size > 0) {
            size_t n = *upload_data_size;
            *upload_data_size = 0;
            return post_chunk(r, upload_data, n);
        }
        return finish_post(r, c);
    case PH_MP:
        if (*upload_data_size > 0) {
            size_t n = *upload_data_size;
            *upload_data_size = 0;
            store_mp_body_chunk(r, upload_data, n);
            return MHD_YES;
        }
        return store_mp_body_done(r, c);
    case PH_DISCARD:
        if (*upload_data_size > 0) {
            *upload_data_size = 0;
            return MHD_YES;
        }
        return respond_error(r, c, (unsigned)r->err_status, r->err_code, r->err_msg);
    case PH_COMMITTING:
        /* Not called while suspended; nothing to do if it were. */
        *upload_data_size = 0;
        return MHD_YES;
    case PH_COMMITTED:
        /* libmicrohttpd 0.9.75 does not restart a resumed connection's idle
         * timer: a commit that took a while under load got the keep-alive
         * connection closed right after its answer. Setting the timeout
         * again restarts it. */
        (void)MHD_set_connection_option(c, MHD_CONNECTION_OPTION_TIMEOUT, r->s->idle_timeout_s);
        if (r->copying)
            return copy_object_answer(r, c);
        if (store_mp_completing_now(r))
            return store_mp_body_done(r, c);
        return r->post != NULL ? finish_post(r, c) : finish_put(r, c);
    case PH_DONE:
    default:
        /* A response is queued; drop anything more the client sends. */
        *upload_data_size = 0;
        return MHD_YES;
    }
}

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[512];
    (void)cls;
    vsnprintf(msg, sizeof msg, fmt, ap);
    msg[strcspn(msg, "\r\n")] = '\0';
    log_debug("store.http", "msg=\"%s\"", msg);
}
#pragma GCC diagnostic pop

/* ---------------------------------------------------------------------- */
/* Life cycle                                                               */

static ferry_err read_small_file(const char *path, char **out)
{
    const char *why = "";
    ferry_err err = ferry_read_small_file(path, STORE_TLS_FILE_MAX, out, &why);
    if (err != FERRY_OK)
        log_error("store.tls_file", "path=%s error=\"%s\"", path, why);
    return err;
}

static void free_secret_str(char *p)
{
    if (p == NULL)
        return;
    OPENSSL_cleanse(p, strlen(p));
    free(p);
}

/* libmicrohttpd 0.9.75 keeps the request line and the header section in
 * the connection's memory pool, with a record of about 48 bytes per header
 * (measured: a 64 KiB pool holds up to 65,365 bytes of request line, or
 * 922 empty headers). */
#define MHD_HEADER_RECORD 64u
#define MHD_HEAD_FIXED    1024u /* method, version, CRLFs, pool bookkeeping */

unsigned store_min_conn_memory(unsigned max_target_bytes, unsigned max_header_bytes,
                               unsigned max_headers)
{
    return max_target_bytes + max_header_bytes + max_headers * MHD_HEADER_RECORD + MHD_HEAD_FIXED +
           STORE_HEAD_MARGIN;
}

ferry_err store_new(const store_config *cfg, store **out)
{
    ferry_err err = FERRY_OK;
    store *s = NULL;
    struct sockaddr_in sin;
    struct sockaddr_in6 sin6;
    struct sockaddr *sa;
    unsigned int flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_USE_ITC | MHD_USE_ERROR_LOG |
                         MHD_ALLOW_SUSPEND_RESUME;
    size_t removed = 0;
    unsigned char rnd[4];

    if (cfg == NULL || out == NULL || cfg->data_dir == NULL || cfg->ledger_url == NULL ||
        cfg->bucket == NULL || cfg->region == NULL || cfg->grant_access_key == NULL ||
        cfg->grant_secret == NULL || cfg->listen == NULL || cfg->port < 1 || cfg->port > 65535 ||
        cfg->threads == 0 || strlen(cfg->grant_secret) > SIGV4_MAX_SECRET_LEN ||
        (cfg->operator_secret != NULL && strlen(cfg->operator_secret) > SIGV4_MAX_SECRET_LEN))
        return FERRY_ERR_INVALID;
    if (!cfg->plain_http && (cfg->tls_cert_file == NULL || cfg->tls_key_file == NULL))
        return FERRY_ERR_CONFIG;

    memset(&sin, 0, sizeof sin);
    memset(&sin6, 0, sizeof sin6);
    if (inet_pton(AF_INET, cfg->listen, &sin.sin_addr) == 1) {
        sin.sin_family = AF_INET;
        sin.sin_port = htons((uint16_t)cfg->port);
        sa = (struct sockaddr *)&sin;
    } else if (inet_pton(AF_INET6, cfg->listen, &sin6.sin6_addr) == 1) {
        sin6.sin6_family = AF_INET6;
        sin6.sin6_port = htons((uint16_t)cfg->port);
        sa = (struct sockaddr *)&sin6;
        flags |= MHD_USE_IPv6;
    } else {
        log_error("store.listen", "listen=%s error=\"not a numeric IPv4 or IPv6 address\"",
                  cfg->listen);
        return FERRY_ERR_CONFIG;
    }

    s = calloc(1, sizeof *s);
    if (s == NULL)
        return FERRY_ERR_NOMEM;
    pthread_mutex_init(&s->pool_mu, NULL);
    pthread_cond_init(&s->pool_cv, NULL);
    pthread_mutex_init(&s->cq_mu, NULL);
    pthread_cond_init(&s->cq_cv, NULL);
    pthread_mutex_init(&s->job_mu, NULL);
    {
        /* A committer gathering a batch waits on the monotonic clock. */
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&s->job_cv, &ca);
        pthread_condattr_destroy(&ca);
    }
    pthread_mutex_init(&s->mp_mu, NULL);
    pthread_mutex_init(&s->mp_read_mu, NULL);
    pthread_cond_init(&s->mp_cv, NULL);
    pthread_mutex_init(&s->watch_mu, NULL);
    {
        /* The watchdog's ticks are measured on the monotonic clock. */
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&s->watch_cv, &ca);
        pthread_condattr_destroy(&ca);
    }
    s->pool_ready = true;
    s->bucket = strdup(cfg->bucket);
    s->region = strdup(cfg->region);
    s->grant_ak = strdup(cfg->grant_access_key);
    if (cfg->operator_access_key != NULL && cfg->operator_access_key[0] != '\0' &&
        cfg->operator_secret != NULL) {
        s->op_ak = strdup(cfg->operator_access_key);
        if (s->op_ak == NULL) {
            err = FERRY_ERR_NOMEM;
            goto out;
        }
        snprintf(s->op_secret, sizeof s->op_secret, "%s", cfg->operator_secret);
    }
    if (s->bucket == NULL || s->region == NULL || s->grant_ak == NULL) {
        err = FERRY_ERR_NOMEM;
        goto out;
    }
    snprintf(s->grant_secret, sizeof s->grant_secret, "%s", cfg->grant_secret);
    s->verifier = (sigv4_verifier){
        .region = s->region, .service = "s3", .lookup = lookup_secret, .lookup_ctx = s};
    s->max_object_size = cfg->max_object_size;
    s->md5_kind = md5_lanes_best();
    /* Eight lanes of AVX-512VL cost no more per stream than sixteen of
     * AVX-512 here (bench/md5_hasher), and a pass of eight fills sooner. */
    s->hasher = md5_hasher_new(md5_lanes_for(s->md5_kind, 8), STAGE_BLOCKS); /* NULL: no staging */
    s->min_upload_rate = cfg->min_upload_rate;
    s->min_rate_grace_ns = (int64_t)cfg->min_rate_grace_s * 1000000000;
    s->max_headers = cfg->max_headers > 0 ? cfg->max_headers : SIGV4_MAX_HEADERS;
    if (s->max_headers > SIGV4_MAX_HEADERS)
        s->max_headers = SIGV4_MAX_HEADERS;
    s->max_target_bytes = cfg->max_target_bytes > 0 ? cfg->max_target_bytes : STORE_TARGET_DEFAULT;
    if (s->max_target_bytes > STORE_RAW_URI_MAX)
        s->max_target_bytes = STORE_RAW_URI_MAX;
    s->max_header_bytes =
        cfg->max_header_bytes > 0 ? cfg->max_header_bytes : STORE_HEADER_BYTES_DEFAULT;
    s->mp_expiry_s = cfg->multipart_expiry_s;
    s->mp_max_uploads = cfg->max_multipart_uploads;
    s->idle_timeout_s = cfg->idle_timeout_s > 0 ? cfg->idle_timeout_s : 30;
    s->stall_ns = (int64_t)s->idle_timeout_s * 1000000000;
    s->head_timeout_ns =
        (int64_t)(cfg->header_timeout_s > 0 ? cfg->header_timeout_s : 40) * 1000000000;
    {
        unsigned need =
            store_min_conn_memory(s->max_target_bytes, s->max_header_bytes, s->max_headers);
        if (cfg->conn_memory_bytes < need) {
            log_error("store.config",
                      "error=\"connection_memory (%u) must be at least %u for max_request_target "
                      "= %u, max_header_bytes = %u, max_headers = %u\"",
                      cfg->conn_memory_bytes, need, s->max_target_bytes, s->max_header_bytes,
                      s->max_headers);
            err = FERRY_ERR_CONFIG;
            goto out;
        }
    }
    if (RAND_bytes(rnd, sizeof rnd) != 1) {
        err = FERRY_ERR_CRYPTO;
        goto out;
    }
    store_hex(rnd, sizeof rnd, s->id_prefix);

    /* Ledger handles: one per worker thread, plus one for the sweep. */
    s->pool_size = cfg->threads + 1;
    s->pool = calloc(s->pool_size, sizeof *s->pool);
    if (s->pool == NULL) {
        err = FERRY_ERR_NOMEM;
        goto out;
    }
    for (size_t i = 0; i < s->pool_size; i++) {
        if ((err = ledger_open(cfg->ledger_url, &s->pool[i])) != FERRY_OK)
            goto out;
        /* The rows stand for bytes already on disk: FULL (the default of
         * ledger_open, set again so that it never depends on it). */
        if ((err = ledger_set_sync(s->pool[i], LEDGER_SYNC_FULL)) != FERRY_OK)
            goto out;
        s->pool_free++;
    }

    if ((err = store_fs_open(&s->fs, cfg->data_dir, cfg->pack_max_object, cfg->pack_size)) !=
        FERRY_OK) {
        log_error("store.data_dir", "path=%s error=\"%s\"", cfg->data_dir, ferry_err_str(err));
        goto out;
    }
    /* Expired multipart uploads first: the sweep then finds their part
     * files unnamed, whatever of them the expiry could not remove. */
    if ((err = store_mp_expire(s, SIZE_MAX)) != FERRY_OK)
        goto out;
    if ((err = store_fs_sweep(&s->fs, s->pool[0], &removed)) != FERRY_OK)
        goto out;
    if (removed > 0)
        log_info("store.swept", "removed=%zu", removed);

    if (!cfg->plain_http) {
        if ((err = read_small_file(cfg->tls_cert_file, &s->tls_cert)) != FERRY_OK ||
            (err = read_small_file(cfg->tls_key_file, &s->tls_key)) != FERRY_OK)
            goto out;
        flags |= MHD_USE_TLS;
        s->tls = true;
    }

    s->daemon = MHD_start_daemon(
        flags, (uint16_t)cfg->port, NULL, NULL, on_access, s, MHD_OPTION_EXTERNAL_LOGGER,
        on_mhd_log, s, MHD_OPTION_SOCK_ADDR, sa, MHD_OPTION_THREAD_POOL_SIZE, cfg->threads,
        MHD_OPTION_CONNECTION_LIMIT, cfg->max_connections, MHD_OPTION_PER_IP_CONNECTION_LIMIT,
        cfg->per_ip_connections, MHD_OPTION_CONNECTION_TIMEOUT, cfg->idle_timeout_s,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)cfg->conn_memory_bytes,
        MHD_OPTION_URI_LOG_CALLBACK, on_uri, s, MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
        MHD_OPTION_NOTIFY_CONNECTION, on_connection, s,
        cfg->plain_http ? MHD_OPTION_END : MHD_OPTION_HTTPS_MEM_CERT, s->tls_cert,
        MHD_OPTION_HTTPS_MEM_KEY, s->tls_key, MHD_OPTION_HTTPS_PRIORITIES,
        "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2", MHD_OPTION_END);
    if (s->daemon == NULL) {
        log_error("store.start_failed", "listen=%s port=%d tls=%s", cfg->listen, cfg->port,
                  cfg->plain_http ? "no" : "yes");
        err = FERRY_ERR_IO;
        goto out;
    }
    if (pthread_create(&s->watch_thread, NULL, watch_thread, s) != 0) {
        err = FERRY_ERR_NOMEM;
        goto out;
    }
    s->watch_started = true;
    pthread_mutex_lock(&s->job_mu);
    while (s->n_committers < STORE_COMMITTERS &&
           pthread_create(&s->committers[s->n_committers], NULL, committer_main, s) == 0)
        s->n_committers++;
    pthread_mutex_unlock(&s->job_mu);
    if (s->n_committers == 0) {
        err = FERRY_ERR_NOMEM;
        goto out;
    }
    log_info("store.started",
             "listen=%s port=%d tls=%s bucket=%s data_dir=%s threads=%u md5_lanes=%s",
             cfg->listen, cfg->port, cfg->plain_http ? "no" : "yes", s->bucket, cfg->data_dir,
             cfg->threads, md5_lanes_kind_str(s->md5_kind));
    *out = s;
    s = NULL;
out:
    store_free(s);
    return err;
}

/* How long a stopping store waits for answers resumed at the end (see
 * store_stop) to go out. */
#define STORE_ANSWERS_GRACE_MS 1000

/* Polls *count every few milliseconds until it is 0 or timeout_ms have
 * passed (the counts change on libmicrohttpd's threads, which signal
 * nothing). */
static void wait_for_zero(atomic_int *count, int64_t timeout_ms)
{
    int64_t deadline = ferry_time_mono_ns() + timeout_ms * 1000000;
    while (atomic_load(count) > 0 && ferry_time_mono_ns() < deadline) {
        struct timespec ts = {0, 5 * 1000000};
        nanosleep(&ts, NULL);
    }
}

void store_stop(store *s, int64_t timeout_ms)
{
    if (s == NULL || s->stopped || s->daemon == NULL)
        return;
    s->stopped = true;
    /* No new connections; requests in flight may finish. */
    MHD_socket lfd = MHD_quiesce_daemon(s->daemon);
    if (lfd != MHD_INVALID_SOCKET)
        close(lfd);
    wait_for_zero(&s->active, timeout_ms);
    int left = atomic_load(&s->active);
    /* Completions still running give up (their uploads stay, the client
     * is told SlowDown) and resume their connections; no new one starts. */
    pthread_mutex_lock(&s->mp_mu);
    atomic_store(&s->mp_abort, true);
    while (s->mp_threads > 0)
        pthread_cond_wait(&s->mp_cv, &s->mp_mu);
    pthread_mutex_unlock(&s->mp_mu);
    /* Every suspended upload is committed and resumed first: libmicrohttpd
     * must not be stopped with connections suspended. Bodies that end
     * after this commit on their own thread. */
    committers_stop(s);
    /* The answers just resumed (a copy or completion that gave up: 503
     * SlowDown; uploads the committers recorded: 200) go out before the
     * connections close, within a bound: a client that does not read its
     * answer does not hold the shutdown. */
    wait_for_zero(&s->answers_pending, STORE_ANSWERS_GRACE_MS);
    /* Closing the remaining connections runs their completion callbacks,
     * which remove the temporary files of unfinished uploads. */
    MHD_stop_daemon(s->daemon);
    s->daemon = NULL;
    if (s->watch_started) {
        pthread_mutex_lock(&s->watch_mu);
        s->watch_stop = true;
        pthread_cond_signal(&s->watch_cv);
        pthread_mutex_unlock(&s->watch_mu);
        pthread_join(s->watch_thread, NULL);
        s->watch_started = false;
    }
    uint64_t passes = 0, lanes = 0;
    if (s->hasher != NULL)
        md5_hasher_stats(s->hasher, &passes, &lanes);
    log_info("store.stopped", "aborted=%d md5_passes=%" PRIu64 " md5_lanes_used=%" PRIu64, left,
             passes, lanes);
}

void store_free(store *s)
{
    if (s == NULL)
        return;
    if (s->daemon != NULL) {
        s->stopped = false;
        store_stop(s, 0);
    }
    if (s->pool != NULL) {
        for (size_t i = 0; i < s->pool_size; i++)
            ledger_close(s->pool[i]);
        free(s->pool);
    }
    store_fs_cleanup(&s->fs);
    md5_hasher_free(s->hasher); /* every request is freed: no block is out */
    if (s->pool_ready) {
        pthread_mutex_destroy(&s->pool_mu);
        pthread_cond_destroy(&s->pool_cv);
        pthread_mutex_destroy(&s->cq_mu);
        pthread_cond_destroy(&s->cq_cv);
        pthread_mutex_destroy(&s->job_mu);
        pthread_cond_destroy(&s->job_cv);
        pthread_mutex_destroy(&s->mp_mu);
        pthread_mutex_destroy(&s->mp_read_mu);
        free(s->mp_reading);
        pthread_cond_destroy(&s->mp_cv);
        pthread_mutex_destroy(&s->watch_mu);
        pthread_cond_destroy(&s->watch_cv);
    }
    free(s->bucket);
    free(s->region);
    free(s->grant_ak);
    free(s->op_ak);
    free(s->tls_cert);
    free_secret_str(s->tls_key);
    OPENSSL_cleanse(s->grant_secret, sizeof s->grant_secret);
    OPENSSL_cleanse(s->op_secret, sizeof s->op_secret);
    free(s);
}

/* ---------------------------------------------------------------------- */
/* Shared with store_multipart.c (store_int.h)                              */

enum MHD_Result store_respond_error(req *r, struct MHD_Connection *c, unsigned status,
                                    const char *code, const char *message)
{
    return respond_error(r, c, status, code, message);
}

enum MHD_Result store_queue(req *r, struct MHD_Connection *c, unsigned status,
                            struct MHD_Response *resp)
{
    return queue(r, c, status, resp);
}

enum MHD_Result store_respond_xml(req *r, struct MHD_Connection *c, unsigned status, ferry_buf *b)
{
    struct MHD_Response *resp = buf_response(b);
    if (resp == NULL)
        return MHD_NO;
    MHD_add_response_header(resp, "Content-Type", "application/xml");
    return queue(r, c, status, resp);
}

struct MHD_Response *store_empty_response(void)
{
    return empty_response();
}

const char *store_header(struct MHD_Connection *c, const char *name)
{
    return header(c, name);
}

ledger *store_pool_take(store *s)
{
    return pool_take(s);
}

void store_pool_give(store *s, ledger *l)
{
    pool_give(s, l);
}

bool store_collect_meta(const header_list *h, char *out, size_t out_size, const char **why)
{
    return collect_meta(h, out, out_size, why);
}

enum MHD_Result store_begin_put(req *r, struct MHD_Connection *c, const header_list *h,
                                const sigv4_verdict *verdict)
{
    return begin_put(r, c, h, verdict);
}

void store_watch_add(req *r, struct MHD_Connection *c)
{
    watch_add(r, c);
}

enum MHD_Result store_get_object(req *r, struct MHD_Connection *c, bool head,
                                 const char *part_number)
{
    return get_object(r, c, head, part_number);
}

bool store_committer_submit(req *r, struct MHD_Connection *c)
{
    return committer_submit(r, c);
}

void store_commit_now(req *r)
{
    commit_jobs(r->s, &r, 1, NULL);
}

void store_forget_data(store *s, const char *file_id)
{
    forget_data(s, file_id);
}
