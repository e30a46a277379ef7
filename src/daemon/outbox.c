/*
 * outbox.c - ferryd's event delivery workers; see outbox.h.
 *
 * Each worker loops: claim up to CLAIM_MAX due deliveries of its target (a
 * command target: one at a time, its attempts may each take its whole
 * timeout), leased for the target's timeout plus LEASE_MARGIN_MS (so a
 * delivery still running is not handed out again; if a batch outlasts its
 * lease another ferryd on the same ledger may deliver a row twice, which
 * at-least-once allows), deliver them, record each outcome. With nothing
 * due it sleeps poll_ms on a condition variable that outbox_stop() signals,
 * so SIGTERM is answered within one delivery (or one pipelined batch).
 *
 * Webhook and command targets deliver a batch one event at a time. The
 * MQTT targets and the device's receipts are pipelined: a claimed batch
 * (up to PIPELINE_MAX) is published into a broker_ack_set without waiting;
 * while its PUBACKs come in, the next batch is claimed and published; then
 * the worker waits for the first batch's PUBACKs and records its outcomes,
 * the delivered ones in one transaction (pipelined_main). What that keeps:
 * - at least once: a row is marked delivered only after its own PUBACK;
 *   rows without one are retried (a disconnect loses nothing: their
 *   leases run out or the retry makes them due again);
 * - per-key order: a claim holds at most one event of a key, and none
 *   whose key has an earlier event still pending, leased ones included
 *   (ledger.h); so event n+1 is claimed only once event n is marked
 *   delivered, i.e. acknowledged, whichever batch n was in;
 * - a link that is down is probed with one message per round, as before,
 *   not flooded with batches that would pile up in the client's queue.
 * All workers' ledger writes take turns through one mutex (see ob_claim).
 */
#include "outbox.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "broker/broker_link.h"
#include "common/buf.h"
#include "common/log.h"
#include "events/events.h"
#include "ledger/ledger.h"

#define CLAIM_MAX 32
/* Claim size of the pipelined workers, i.e. how many PUBACKs one waits for
 * at once. libmosquitto keeps at most the broker's Receive Maximum on the
 * wire and queues the rest in order, so this only bounds the batch. */
#define PIPELINE_MAX 256
/* A claim's lease only has to outlast one attempt, which the target bounds
 * (its timeout, plus the kill grace for a command): the margin covers
 * recording the outcome. A ferryd killed mid-delivery thus delays that
 * delivery by about the target's timeout, no more. */
#define LEASE_MARGIN_MS   5000
#define DEVICE_TIMEOUT_MS 10000 /* PUBACK of a receipt */
#define TOPIC_MAX         1024

/* A claimed batch of a pipelined worker, from its claim until its outcomes
 * are recorded. */
typedef struct pipe_batch {
    ledger_delivery *rows;  /* claim_max rows */
    size_t n;               /* claimed rows; 0: the batch is free */
    size_t window;          /* the first `window` rows were tried */
    size_t *slot;           /* per row: its message in `acks`, or NOT_PUBLISHED */
    ferry_err *publish_err; /* per row not published: why (FERRY_OK: not tried) */
    broker_ack_set *acks;
} pipe_batch;

#define NOT_PUBLISHED ((size_t)-1)

typedef struct worker {
    struct outbox *owner;
    char name[LEDGER_TARGET_NAME_MAX + 1];
    events_target *target; /* NULL for the device's receipts */
    char *topic;           /* an MQTT target's topic (it is published directly) */
    bool pipelined;        /* MQTT targets and receipts */
    int64_t timeout_ms;
    int64_t lease_ms;
    size_t claim_max;
    bool send_processed;
    events_retry_policy retry;
    ledger *ledger;
    pthread_t thread;
    bool started;
    unsigned seed;          /* rand_r state for the jitter (not a secret) */
    ledger_delivery *batch; /* claim_max rows (not pipelined) */
    int64_t *done;          /* delivered, not yet marked in the ledger */
    size_t done_count;
    pipe_batch pipe[2]; /* pipelined: one waiting for PUBACKs, one being published */
} worker;

struct outbox {
    char *prefix;
    char *region;
    struct broker_link *link;
    int64_t poll_ms;
    worker *workers;
    size_t count;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stopping;
    pthread_mutex_t ledger_mu; /* the workers' turns at the ledger's write lock */
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * The workers' ledger writes, each under the outbox's ledger_mu. The
 * workers take turns at SQLite's write lock through that mutex because
 * SQLite's busy handler (sqlite3_busy_timeout) makes a handle that finds
 * the database locked sleep 1, 2, 5, 10, ... ms before it looks again,
 * whereas a mutex hands the turn over the moment the other commits. Writers
 * outside the outbox (the store, the grant service, another ferryd) still
 * meet the busy handler, as before.
 */
static ferry_err ob_claim(worker *w, int64_t now, int64_t lease, ledger_delivery *out, size_t max,
                          size_t *n)
{
    pthread_mutex_lock(&w->owner->ledger_mu);
    ferry_err err = ledger_delivery_claim(w->ledger, w->name, now, lease, out, max, n);
    pthread_mutex_unlock(&w->owner->ledger_mu);
    return err;
}

static ferry_err ob_done_batch(worker *w)
{
    pthread_mutex_lock(&w->owner->ledger_mu);
    ferry_err err = ledger_delivery_done_batch(w->ledger, w->name, w->done, w->done_count, NULL);
    pthread_mutex_unlock(&w->owner->ledger_mu);
    return err;
}

static ferry_err ob_retry(worker *w, int64_t seq, unsigned attempts, int64_t next_ms,
                          const char *detail)
{
    pthread_mutex_lock(&w->owner->ledger_mu);
    ferry_err err = ledger_delivery_retry(w->ledger, seq, w->name, attempts, next_ms, detail);
    pthread_mutex_unlock(&w->owner->ledger_mu);
    return err;
}

static ferry_err ob_dead(worker *w, int64_t seq, unsigned attempts, const char *detail)
{
    pthread_mutex_lock(&w->owner->ledger_mu);
    ferry_err err = ledger_delivery_dead(w->ledger, seq, w->name, attempts, detail);
    pthread_mutex_unlock(&w->owner->ledger_mu);
    return err;
}

static ferry_err ob_postpone(worker *w, int64_t until)
{
    pthread_mutex_lock(&w->owner->ledger_mu);
    ferry_err err = ledger_delivery_postpone(w->ledger, w->name, until, NULL);
    pthread_mutex_unlock(&w->owner->ledger_mu);
    return err;
}

/* The events_object the builders take, borrowing the row's strings. */
static void object_of(const outbox *o, const ledger_event *ev, events_object *obj)
{
    memset(obj, 0, sizeof *obj);
    obj->event_id = ev->id;
    obj->sequencer = (uint64_t)ev->seq;
    obj->method = strcmp(ev->method, "POST") == 0 ? EVENTS_POST : EVENTS_PUT;
    obj->time_ms = ev->created_ms;
    obj->region = o->region;
    obj->bucket = ev->bucket;
    obj->key = ev->key;
    obj->size = (int64_t)ev->size;
    obj->etag = ev->etag;
    obj->device = ev->device;
    obj->grant = ev->grant_id;
    obj->sha256 = ev->sha256[0] != '\0' ? ev->sha256 : NULL;
    obj->content_type = ev->content_type[0] != '\0' ? ev->content_type : NULL;
    obj->request_id = ev->request_id[0] != '\0' ? ev->request_id : NULL;
    obj->source_ip = ev->source_ip[0] != '\0' ? ev->source_ip : NULL;
    obj->store_request_id = ev->store_request_id[0] != '\0' ? ev->store_request_id : NULL;
}

static ferry_err device_topic(const outbox *o, const char *device, char *out, size_t out_size)
{
    int n = snprintf(out, out_size, "%s/%s/upload/response", o->prefix, device);
    return n < 0 || (size_t)n >= out_size ? FERRY_ERR_TOO_LARGE : FERRY_OK;
}

/* One attempt for the device worker: the receipt, acknowledged by the
 * broker. */
static ferry_err deliver_receipt(worker *w, const events_object *obj, events_delivery *d)
{
    outbox *o = w->owner;
    ferry_buf msg;
    char topic[TOPIC_MAX];
    ferry_err err;

    ferry_buf_init(&msg, EVENTS_MAX_DEVICE_MESSAGE_LEN + 1);
    if ((err = device_topic(o, obj->device, topic, sizeof topic)) != FERRY_OK ||
        (err = events_receipt(obj, &msg)) != FERRY_OK) {
        d->outcome = EVENTS_FAILED;
        snprintf(d->detail, sizeof d->detail, "cannot build the receipt: %s", ferry_err_str(err));
        err = FERRY_OK;
        goto out;
    }
    err = broker_link_publish_acked(o->link, topic, msg.data, msg.len, NULL, w->timeout_ms);
    if (err == FERRY_OK) {
        d->outcome = EVENTS_DELIVERED;
    } else if (err == FERRY_ERR_DENIED) {
        d->outcome = EVENTS_FAILED;
        snprintf(d->detail, sizeof d->detail, "broker refused the publish to %.180s", topic);
    } else {
        d->outcome = EVENTS_RETRY_LATER;
        snprintf(d->detail, sizeof d->detail, "no PUBACK: %s", ferry_err_str(err));
    }
    err = FERRY_OK;
out:
    ferry_buf_cleanup(&msg);
    return err;
}

/* A command target's result to the device. QoS 1 through the link's queue:
 * it goes out after a reconnect too. Failure to build or queue it is
 * logged; the event itself was delivered and is not run again for it. */
static void send_processed(worker *w, const events_object *obj, const events_delivery *d)
{
    outbox *o = w->owner;
    ferry_buf msg;
    char topic[TOPIC_MAX];
    ferry_err err;

    ferry_buf_init(&msg, EVENTS_MAX_DEVICE_MESSAGE_LEN + 1);
    if ((err = device_topic(o, obj->device, topic, sizeof topic)) == FERRY_OK &&
        (err = events_processed(obj, w->name, d->result_json, d->result_len, &msg)) == FERRY_OK)
        err = broker_link_publish(o->link, topic, msg.data, msg.len, NULL);
    if (err != FERRY_OK)
        log_error("event.processed_failed", "event=%s target=%s device=%s error=\"%s\"",
                  obj->event_id, w->name, obj->device, ferry_err_str(err));
    else
        log_info("event.processed_sent", "event=%s target=%s device=%s", obj->event_id, w->name,
                 obj->device);
    ferry_buf_cleanup(&msg);
}

/* Whether a "retry later" from this target says the target as a whole is
 * unreachable (a receiver or broker down), rather than something about one
 * event: then its whole backlog waits (target-level backoff). A command's
 * failure may be the event's own, so the others go on. */
static bool target_level(const worker *w)
{
    return w->target == NULL || strcmp(events_target_kind(w->target), "command") != 0;
}

/* Delivers one claimed delivery and records the outcome. Returns the time
 * the target's backlog should wait for (target-level backoff), or 0. */
static int64_t deliver_one(worker *w, ledger_delivery *ld)
{
    outbox *o = w->owner;
    events_object obj;
    events_delivery d;
    ferry_buf json;
    ferry_err err;
    const ledger_event *ev = &ld->event;

    events_delivery_init(&d);
    ferry_buf_init(&json, EVENTS_MAX_EVENT_LEN + 1);
    object_of(o, ev, &obj);
    if (w->target == NULL) {
        err = deliver_receipt(w, &obj, &d);
    } else if ((err = events_format(&obj, &json)) != FERRY_OK) {
        /* The row cannot become an event (it never will): dead-letter. */
        d.outcome = EVENTS_FAILED;
        snprintf(d.detail, sizeof d.detail, "cannot build the event: %s", ferry_err_str(err));
        err = FERRY_OK;
    } else {
        err = events_target_deliver(w->target, ev->id, json.data, json.len, w->timeout_ms, &d);
    }
    if (err != FERRY_OK) {
        d.outcome = EVENTS_RETRY_LATER;
        snprintf(d.detail, sizeof d.detail, "could not try: %s", ferry_err_str(err));
    }

    unsigned attempts = ld->attempts + 1;
    int64_t backoff_until = 0;
    if (d.outcome == EVENTS_DELIVERED) {
        if (w->send_processed && d.result_json != NULL)
            send_processed(w, &obj, &d);
        /* Marked with the rest of the batch (flush_done): one commit per
         * batch. A crash before it redelivers, which at-least-once allows. */
        w->done[w->done_count++] = ev->seq;
        log_debug("event.delivered", "event=%s target=%s key=\"%s\" attempts=%u", ev->id, w->name,
                  ev->key, attempts);
    } else {
        int64_t next = 0;
        double r = (double)rand_r(&w->seed) / ((double)RAND_MAX + 1.0);
        if (d.outcome == EVENTS_RETRY_LATER &&
            events_next_attempt(&w->retry, attempts, now_ms(), r, &next) == EVENTS_NEXT_RETRY) {
            err = ob_retry(w, ev->seq, attempts, next, d.detail);
            if (target_level(w))
                backoff_until = next;
            log_warn("event.retry", "event=%s target=%s attempts=%u in_ms=%lld detail=\"%s\"",
                     ev->id, w->name, attempts, (long long)(next - now_ms()), d.detail);
        } else {
            err = ob_dead(w, ev->seq, attempts, d.detail);
            log_error("event.dead_letter", "event=%s target=%s attempts=%u detail=\"%s\"", ev->id,
                      w->name, attempts, d.detail);
        }
    }
    /* CONFLICT: an operator replayed or the row moved meanwhile; the
     * delivery happened anyway, which at-least-once allows. */
    if (err != FERRY_OK && err != FERRY_ERR_CONFLICT)
        log_error("event.record_failed", "event=%s target=%s error=\"%s\"", ev->id, w->name,
                  ferry_err_str(err));
    ferry_buf_cleanup(&json);
    events_delivery_cleanup(&d);
    return backoff_until;
}

/* Marks the batch's delivered rows in one transaction. */
static void flush_done(worker *w)
{
    ferry_err err = ob_done_batch(w);
    if (err != FERRY_OK)
        log_error("event.record_failed", "target=%s count=%zu error=\"%s\"", w->name, w->done_count,
                  ferry_err_str(err));
    w->done_count = 0;
}

/* The message a pipelined worker publishes for ev and its topic: the
 * receipt on the device's response topic, or the event on the target's. */
static ferry_err pipelined_message(worker *w, const ledger_event *ev, ferry_buf *msg,
                                   char *topic_buf, size_t topic_size, const char **topic)
{
    events_object obj;
    ferry_err err;

    object_of(w->owner, ev, &obj);
    ferry_buf_reset(msg);
    if (w->target != NULL) {
        *topic = w->topic;
        return events_format(&obj, msg);
    }
    if ((err = device_topic(w->owner, obj.device, topic_buf, topic_size)) != FERRY_OK)
        return err;
    *topic = topic_buf;
    return events_receipt(&obj, msg);
}

static void record_dead(worker *w, const ledger_delivery *ld, const char *detail)
{
    ferry_err err = ob_dead(w, ld->event.seq, ld->attempts + 1, detail);
    log_error("event.dead_letter", "event=%s target=%s attempts=%u detail=\"%s\"", ld->event.id,
              w->name, ld->attempts + 1, detail);
    if (err != FERRY_OK && err != FERRY_ERR_CONFLICT)
        log_error("event.record_failed", "event=%s target=%s error=\"%s\"", ld->event.id, w->name,
                  ferry_err_str(err));
}

/* Publishes the batch's first `window` rows without waiting. A row that
 * can never be published (no message can be built, too large for the
 * broker) is dead-lettered at once; a publish the client refuses for now
 * (out of memory, ...) ends the window there: it and the rest are
 * retried. */
static void pipe_publish(worker *w, pipe_batch *b, size_t window)
{
    ferry_buf msg;
    char topic_buf[TOPIC_MAX], detail[256];
    const char *topic = NULL;

    broker_ack_set_reset(b->acks);
    for (size_t i = 0; i < b->n; i++) {
        b->slot[i] = NOT_PUBLISHED;
        b->publish_err[i] = FERRY_OK;
    }
    ferry_buf_init(&msg,
                   (w->target == NULL ? EVENTS_MAX_DEVICE_MESSAGE_LEN : EVENTS_MAX_EVENT_LEN) + 1);
    for (size_t i = 0; i < window; i++) {
        ledger_delivery *ld = &b->rows[i];
        ferry_err err = pipelined_message(w, &ld->event, &msg, topic_buf, sizeof topic_buf, &topic);
        if (err != FERRY_OK) {
            /* The row cannot become a message (it never will). */
            snprintf(detail, sizeof detail, "cannot build the %s: %s",
                     w->target == NULL ? "receipt" : "event", ferry_err_str(err));
            b->publish_err[i] = FERRY_ERR_INVALID;
            record_dead(w, ld, detail);
            continue;
        }
        err = broker_ack_set_publish(b->acks, topic, msg.data, msg.len, NULL, &b->slot[i]);
        if (err == FERRY_ERR_TOO_LARGE) {
            b->publish_err[i] = err;
            record_dead(w, ld, "too large for the broker");
        } else if (err != FERRY_OK) {
            b->publish_err[i] = err;
            window = i + 1;
        }
    }
    b->window = window;
    ferry_buf_cleanup(&msg);
}

/* Waits for the PUBACKs of a published batch (up to the target's timeout)
 * and records the outcomes. Rows with a PUBACK are marked delivered in one
 * transaction; a refusal (reason code >= 0x80) is dead-lettered. Without
 * a PUBACK: if `until` is 0 (no backoff yet), the first such row counts a
 * failed attempt and sets the target-level backoff; every other one waits
 * until the backoff instant with its attempts unchanged (as postpone_rest()
 * does). Rows beyond the window (a link that is down gets one probe) are
 * released: due now, or at the backoff instant. Returns the backoff instant
 * (`until`, or the one this batch set), 0 if none. The batch is free
 * afterwards. */
static int64_t pipe_finish(worker *w, pipe_batch *b, int64_t until)
{
    char detail[256];
    ferry_err err = FERRY_OK;
    int64_t set_until = 0;
    size_t unacked = 0;

    if (broker_ack_set_count(b->acks) > 0)
        unacked = broker_ack_set_wait(b->acks, w->timeout_ms);

    /* Delivered rows first, in one commit. */
    for (size_t i = 0; i < b->n; i++) {
        ledger_delivery *ld = &b->rows[i];
        if (b->slot[i] != NOT_PUBLISHED && broker_ack_set_result(b->acks, b->slot[i]) == FERRY_OK) {
            w->done[w->done_count++] = ld->event.seq;
            log_debug("event.delivered", "event=%s target=%s key=\"%s\" attempts=%u", ld->event.id,
                      w->name, ld->event.key, ld->attempts + 1);
        }
    }
    flush_done(w);

    for (size_t i = 0; i < b->n; i++) {
        ledger_delivery *ld = &b->rows[i];
        ferry_err result = b->slot[i] != NOT_PUBLISHED ? broker_ack_set_result(b->acks, b->slot[i])
                                                       : b->publish_err[i];
        if (result == FERRY_OK && b->slot[i] != NOT_PUBLISHED)
            continue; /* delivered */
        if (b->slot[i] == NOT_PUBLISHED &&
            (result == FERRY_ERR_INVALID || result == FERRY_ERR_TOO_LARGE))
            continue; /* dead-lettered while publishing */
        if (result == FERRY_ERR_DENIED) {
            snprintf(detail, sizeof detail, "broker refused the publish (%s)",
                     w->target == NULL ? "device response topic" : "target topic");
            record_dead(w, ld, detail);
            continue;
        }
        if (i >= b->window) {
            /* Not tried: give the lease back. */
            err = ob_retry(w, ld->event.seq, ld->attempts, until != 0 ? until : now_ms(),
                           ld->last_error);
        } else if (until == 0) {
            unsigned attempts = ld->attempts + 1;
            int64_t next = 0;
            double r = (double)rand_r(&w->seed) / ((double)RAND_MAX + 1.0);
            snprintf(detail, sizeof detail, "no PUBACK: %s", ferry_err_str(result));
            if (events_next_attempt(&w->retry, attempts, now_ms(), r, &next) == EVENTS_NEXT_RETRY) {
                err = ob_retry(w, ld->event.seq, attempts, next, detail);
                until = set_until = next;
                log_warn("event.retry",
                         "event=%s target=%s attempts=%u in_ms=%lld detail=\"%s\" unacked=%zu",
                         ld->event.id, w->name, attempts, (long long)(next - now_ms()), detail,
                         unacked);
            } else {
                record_dead(w, ld, detail);
                err = FERRY_OK;
            }
        } else {
            err = ob_retry(w, ld->event.seq, ld->attempts, until, ld->last_error);
        }
        if (err != FERRY_OK && err != FERRY_ERR_CONFLICT)
            log_error("event.record_failed", "event=%s target=%s error=\"%s\"", ld->event.id,
                      w->name, ferry_err_str(err));
    }
    if (set_until != 0 && (err = ob_postpone(w, set_until)) != FERRY_OK)
        log_error("event.postpone_failed", "target=%s error=\"%s\"", w->name, ferry_err_str(err));
    b->n = 0;
    return until;
}

/* Target-level backoff: the rest of the batch (still leased) and every
 * other pending delivery of the target wait until `until`, attempts
 * unchanged. When the target is back the backlog is due at one instant
 * and the claim hands it out in sequencer order. */
static void postpone_rest(worker *w, size_t from, size_t n, int64_t until)
{
    ferry_err err = ob_postpone(w, until);
    for (size_t i = from; err == FERRY_OK && i < n; i++) {
        ledger_delivery *ld = &w->batch[i];
        err = ob_retry(w, ld->event.seq, ld->attempts, until, ld->last_error);
        if (err == FERRY_ERR_CONFLICT)
            err = FERRY_OK;
    }
    if (err != FERRY_OK)
        log_error("event.postpone_failed", "target=%s error=\"%s\"", w->name, ferry_err_str(err));
}

static bool stopping(outbox *o)
{
    pthread_mutex_lock(&o->mu);
    bool s = o->stopping;
    pthread_mutex_unlock(&o->mu);
    return s;
}

/* Sleeps up to ms, returning early when the outbox stops. */
static void idle_wait(outbox *o, int64_t ms)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += (time_t)(ms / 1000);
    until.tv_nsec += (long)(ms % 1000) * 1000000;
    if (until.tv_nsec >= 1000000000) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&o->mu);
    if (!o->stopping)
        pthread_cond_timedwait(&o->cv, &o->mu, &until);
    pthread_mutex_unlock(&o->mu);
}

/* The pipelined workers' loop: while one batch's PUBACKs are on their way,
 * the next batch is claimed and published, so the link always has work and
 * the ledger transactions and message building overlap the round trips.
 * The next claim cannot hold a later event of a key in the batch in flight
 * (that batch's rows are still pending: ledger.h), so per-key order holds.
 * Only a connected link gets a second batch: one that is down is probed
 * with one message per round. */
static void pipelined_main(worker *w)
{
    outbox *o = w->owner;
    pipe_batch *cur = &w->pipe[0], *next = &w->pipe[1];

    for (;;) {
        bool stop = stopping(o);
        bool connected = broker_link_is_connected(o->link);
        bool claim_failed = false;
        if (!stop && (cur->n == 0 || connected)) {
            size_t n = 0;
            ferry_err err = ob_claim(w, now_ms(), w->lease_ms, next->rows, w->claim_max, &n);
            if (err != FERRY_OK) {
                log_error("event.claim_failed", "target=%s error=\"%s\"", w->name,
                          ferry_err_str(err));
                claim_failed = true;
            } else if (n > 0) {
                next->n = n;
                pipe_publish(w, next, connected ? n : 1);
            }
        }
        bool finished = cur->n > 0;
        if (finished) {
            int64_t until = pipe_finish(w, cur, 0);
            /* The target is down: the batch behind it is finished too, its
             * rows wait for the same instant without another attempt. */
            if (until != 0 && next->n > 0)
                (void)pipe_finish(w, next, until);
        }
        pipe_batch *t = cur;
        cur = next;
        next = t;
        if (cur->n > 0)
            continue;
        if (stop)
            break;
        /* A batch just finished may have unblocked the next events of its
         * keys: claim again before sleeping. */
        if (finished && !claim_failed)
            continue;
        idle_wait(o, claim_failed ? 1000 : o->poll_ms);
    }
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    outbox *o = w->owner;
    int64_t lease = w->lease_ms;

    if (w->pipelined) {
        pipelined_main(w);
        return NULL;
    }

    while (!stopping(o)) {
        size_t n = 0;
        ferry_err err = ob_claim(w, now_ms(), lease, w->batch, w->claim_max, &n);
        if (err != FERRY_OK) {
            log_error("event.claim_failed", "target=%s error=\"%s\"", w->name, ferry_err_str(err));
            idle_wait(o, 1000);
            continue;
        }
        if (n == 0) {
            idle_wait(o, o->poll_ms);
            continue;
        }
        /* Claimed rows not tried before the stop keep their lease and are
         * due again after it (at least once). */
        for (size_t i = 0; i < n && !stopping(o); i++) {
            int64_t until = deliver_one(w, &w->batch[i]);
            if (until != 0) {
                postpone_rest(w, i + 1, n, until);
                break;
            }
        }
        flush_done(w);
    }
    return NULL;
}

static ferry_err worker_init(outbox *o, worker *w, const outbox_config *config,
                             const events_target_spec *spec, unsigned index, char *err,
                             size_t err_size)
{
    ferry_err e;
    w->owner = o;
    w->seed = (unsigned)now_ms() ^ (index * 2654435761u);
    bool pipelined = spec == NULL || spec->type == EVENTS_TARGET_MQTT;
    w->claim_max = pipelined                                             ? PIPELINE_MAX
                   : spec != NULL && spec->type == EVENTS_TARGET_COMMAND ? 1
                                                                         : CLAIM_MAX;
    w->pipelined = pipelined;
    w->done = calloc(w->claim_max, sizeof *w->done);
    if (!pipelined)
        w->batch = calloc(w->claim_max, sizeof *w->batch);
    if (w->done == NULL || (!pipelined && w->batch == NULL)) {
        snprintf(err, err_size, "outbox: out of memory");
        return FERRY_ERR_NOMEM;
    }
    for (size_t i = 0; pipelined && i < 2; i++) {
        pipe_batch *b = &w->pipe[i];
        b->rows = calloc(w->claim_max, sizeof *b->rows);
        b->slot = calloc(w->claim_max, sizeof *b->slot);
        b->publish_err = calloc(w->claim_max, sizeof *b->publish_err);
        if (b->rows == NULL || b->slot == NULL || b->publish_err == NULL) {
            snprintf(err, err_size, "outbox: out of memory");
            return FERRY_ERR_NOMEM;
        }
        if ((e = broker_ack_set_new(config->link, w->claim_max, &b->acks)) != FERRY_OK) {
            snprintf(err, err_size, "outbox: cannot set up the publish pipeline: %s",
                     ferry_err_str(e));
            return e;
        }
    }
    if (spec != NULL && spec->type == EVENTS_TARGET_MQTT &&
        (spec->topic == NULL || (w->topic = strdup(spec->topic)) == NULL)) {
        snprintf(err, err_size, "[target.%s]: no topic", spec->name);
        return spec->topic == NULL ? FERRY_ERR_INVALID : FERRY_ERR_NOMEM;
    }
    if (spec != NULL) {
        snprintf(w->name, sizeof w->name, "%s", spec->name);
        w->timeout_ms = spec->timeout_ms;
        w->lease_ms = spec->timeout_ms + LEASE_MARGIN_MS +
                      (spec->type == EVENTS_TARGET_COMMAND
                           ? (spec->kill_grace_ms > 0 ? spec->kill_grace_ms : 2000)
                           : 0);
        w->send_processed = spec->send_processed;
        w->retry = spec->retry;
        if ((e = events_target_from_spec(spec, config->link, &w->target, err, err_size)) !=
            FERRY_OK)
            return e;
    } else {
        events_retry_policy def = EVENTS_RETRY_DEFAULT;
        snprintf(w->name, sizeof w->name, "%s", LEDGER_DEVICE_TARGET);
        w->timeout_ms = DEVICE_TIMEOUT_MS;
        w->lease_ms = DEVICE_TIMEOUT_MS + LEASE_MARGIN_MS;
        w->retry =
            config->events->retry_default.max_attempts > 0 ? config->events->retry_default : def;
    }
    if ((e = ledger_open(config->ledger_url, &w->ledger)) != FERRY_OK ||
        (e = ledger_set_sync(w->ledger, LEDGER_SYNC_NORMAL)) != FERRY_OK) {
        snprintf(err, err_size, "ledger %s: %s", config->ledger_url, ferry_err_str(e));
        return e;
    }
    return FERRY_OK;
}

ferry_err outbox_new(const outbox_config *config, outbox **out, char *err, size_t err_size)
{
    ferry_err result = FERRY_OK;
    outbox *o = NULL;
    const char *names[EVENTS_MAX_TARGETS + 1];

    if (config == NULL || out == NULL || config->events == NULL || config->link == NULL ||
        config->ledger_url == NULL || config->prefix == NULL || config->region == NULL) {
        snprintf(err, err_size, "outbox: incomplete configuration");
        return FERRY_ERR_INVALID;
    }
    o = calloc(1, sizeof *o);
    if (o == NULL)
        return FERRY_ERR_NOMEM;
    pthread_mutex_init(&o->mu, NULL);
    pthread_mutex_init(&o->ledger_mu, NULL);
    pthread_cond_init(&o->cv, NULL);
    o->link = config->link;
    o->poll_ms = config->poll_ms > 0 ? config->poll_ms : 100;
    o->prefix = strdup(config->prefix);
    o->region = strdup(config->region);
    o->workers = calloc(config->events->count + 1, sizeof *o->workers);
    if (o->prefix == NULL || o->region == NULL || o->workers == NULL) {
        result = FERRY_ERR_NOMEM;
        goto out;
    }
    for (size_t i = 0; i <= config->events->count; i++) {
        const events_target_spec *spec =
            i < config->events->count ? &config->events->targets[i] : NULL;
        o->count++;
        result = worker_init(o, &o->workers[i], config, spec, (unsigned)i, err, err_size);
        if (result != FERRY_OK)
            goto out;
        names[i] = o->workers[i].name;
    }
    /* From here on every new object gets a delivery row for each of them. */
    result = ledger_event_targets_set(o->workers[0].ledger, names, o->count);
    if (result != FERRY_OK) {
        snprintf(err, err_size, "ledger: cannot record the event targets: %s",
                 ferry_err_str(result));
        goto out;
    }
    *out = o;
    o = NULL;
out:
    outbox_free(o);
    return result;
}

ferry_err outbox_start(outbox *o)
{
    if (o == NULL)
        return FERRY_ERR_INVALID;
    for (size_t i = 0; i < o->count; i++) {
        worker *w = &o->workers[i];
        if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
            log_error("outbox.thread_failed", "target=%s", w->name);
            outbox_stop(o);
            return FERRY_ERR_NOMEM;
        }
        w->started = true;
        log_info("outbox.target", "target=%s kind=%s", w->name,
                 w->target != NULL ? events_target_kind(w->target) : "device");
    }
    return FERRY_OK;
}

void outbox_stop(outbox *o)
{
    if (o == NULL)
        return;
    pthread_mutex_lock(&o->mu);
    o->stopping = true;
    pthread_cond_broadcast(&o->cv);
    pthread_mutex_unlock(&o->mu);
    for (size_t i = 0; i < o->count; i++) {
        if (o->workers[i].started) {
            pthread_join(o->workers[i].thread, NULL);
            o->workers[i].started = false;
        }
    }
}

void outbox_free(outbox *o)
{
    if (o == NULL)
        return;
    outbox_stop(o);
    for (size_t i = 0; i < o->count; i++) {
        worker *w = &o->workers[i];
        events_target_free(w->target);
        ledger_close(w->ledger);
        free(w->topic);
        free(w->batch);
        free(w->done);
        for (size_t k = 0; k < 2; k++) {
            broker_ack_set_free(w->pipe[k].acks);
            free(w->pipe[k].rows);
            free(w->pipe[k].slot);
            free(w->pipe[k].publish_err);
        }
    }
    free(o->workers);
    free(o->prefix);
    free(o->region);
    pthread_cond_destroy(&o->cv);
    pthread_mutex_destroy(&o->mu);
    pthread_mutex_destroy(&o->ledger_mu);
    free(o);
}
