/*
 * ferryd.c - the daemon's lifecycle; see ferryd.h.
 *
 * Threads: the broker link's network thread handles every request inline
 * (parse, policy, sign, ledger insert, publish): that keeps a request's
 * round trip free of thread hand-offs. Requests that arrive together are one
 * batch; with the embedded store the batch's answers are published before
 * its ledger transaction commits, and that transaction stays open for up to
 * [ferryd] commit_delay so that the batches arriving meanwhile join it and
 * share one commit (grant_service.h says why both are safe there). The
 * network thread owns the grant service and its ledger handle. The main
 * thread waits for the stop signal and sweeps expired grants with a ledger
 * handle of its own. With [store] kind =
 * embedded, the store (src/store) runs in libmicrohttpd's own threads with
 * ledger handles of its own; it starts before the broker link (a grant's URL
 * must work as soon as it is sent) and stops before it on SIGTERM, letting
 * uploads in flight finish for up to shutdown_timeout and aborting the rest
 * without leaving partial files. The outbox (outbox.h) runs one thread per
 * event target, started after the broker link and stopped before it.
 */
#include "ferryd.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "broker/broker_link.h"
#include "common/log.h"
#include "common/timefmt.h"
#include "daemon/grant_service.h"
#include "daemon/notify_http.h"
#include "daemon/outbox.h"
#include "ledger/ledger.h"
#include "sigv4/sigv4.h"
#include "store/store.h"

/* A request copied out of libmosquitto's buffers, waiting for its batch. */
typedef struct queued_request {
    char *topic;
    char *payload;
    size_t payload_len;
    bool is_v5;
    void *correlation;
    size_t correlation_len;
    char *response_topic;
} queued_request;

typedef struct ferryd_state {
    grant_service *service;
    /* Publish each batch's answers before its ledger commit (embedded store
     * only: grant_service.h says why that is safe there and not with an
     * external store). The commit then overlaps the answer's trip to the
     * device instead of delaying it. */
    bool answer_before_commit;
    /* Answering first, the transaction stays open after a batch's answers
     * have left, for up to this long, so that the batches arriving
     * meanwhile share its commit ([ferryd] commit_delay); 0: commit after
     * every batch. */
    int64_t commit_delay_ns;
    uint64_t busy_seen; /* ledger_busy_waits() when last looked at */
    ledger *ledger;     /* the grant service's handle (network thread only) */
    /* Set by the main loop after each background checkpoint: the network
     * thread then checkpoints the tail (checkpoint_tail). */
    atomic_bool tail_wanted;
    uint64_t handled;
    uint64_t batches;
    size_t queued;
    queued_request queue[GRANT_BATCH_MAX];
    grant_service_input inputs[GRANT_BATCH_MAX];
    grant_answer answers[GRANT_BATCH_MAX];
    ferry_err results[GRANT_BATCH_MAX];
} ferryd_state;

ferry_err ferryd_read_secret(const char *path, char *out, size_t out_size, char *err,
                             size_t err_size)
{
    ferry_err result = FERRY_OK;
    char buf[512];
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        snprintf(err, err_size, "%s: cannot open: %s", path, strerror(errno));
        return FERRY_ERR_CONFIG;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, err_size, "%s: not a regular file", path);
        result = FERRY_ERR_CONFIG;
        goto out;
    }
    if (st.st_mode & (S_IRWXG | S_IRWXO)) {
        snprintf(err, err_size, "%s: readable by group or others (mode %03o); chmod 600 it", path,
                 (unsigned)(st.st_mode & 0777));
        result = FERRY_ERR_CONFIG;
        goto out;
    }
    ssize_t n = read(fd, buf, sizeof buf - 1);
    if (n < 0) {
        snprintf(err, err_size, "%s: read error: %s", path, strerror(errno));
        result = FERRY_ERR_CONFIG;
        goto out;
    }
    buf[n] = '\0';
    size_t len = strcspn(buf, "\r\n");
    if (len == 0 || len >= out_size) {
        snprintf(err, err_size, "%s: the secret must be one line of 1 to %zu bytes", path,
                 out_size - 1);
        result = FERRY_ERR_CONFIG;
        goto out;
    }
    memcpy(out, buf, len);
    out[len] = '\0';
out:
    OPENSSL_cleanse(buf, sizeof buf);
    close(fd);
    return result;
}

static void *copy_bytes(const void *src, size_t len)
{
    char *dst = malloc(len + 1);
    if (dst != NULL) {
        if (len > 0)
            memcpy(dst, src, len);
        dst[len] = '\0';
    }
    return dst;
}

static void queued_request_cleanup(queued_request *q)
{
    free(q->topic);
    free(q->payload);
    free(q->correlation);
    free(q->response_topic);
    memset(q, 0, sizeof *q);
}

/* Commits the open grant transaction if it is due: it has been open for
 * commit_delay, or another handle of this process waited for the write
 * lock since we last looked (the store recording an upload, the outbox),
 * or `force`. Otherwise asks the link to call back when it falls due, so
 * that an idle ferryd commits on time. */
static void commit_if_due(ferryd_state *st, broker_link *link, bool force)
{
    int64_t since = 0;
    uint64_t busy = ledger_busy_waits();
    if (!grant_service_txn_open(st->service, &since)) {
        st->busy_seen = busy; /* waits with nothing open were not for us */
        return;
    }
    int64_t left = since + st->commit_delay_ns - ferry_time_mono_ns();
    if (force || left <= 0 || busy != st->busy_seen) {
        size_t voided = 0;
        st->busy_seen = busy;
        if (grant_service_commit_batch(st->service, &voided) != FERRY_OK)
            log_error("answer.grants_voided", "grants=%zu reason=\"ledger commit failed\"",
                      voided);
        return;
    }
    broker_link_wake_within(link, (int)((left + 999999) / 1000000));
}

/*
 * The write-ahead log's tail, checkpointed from the grant service's own
 * handle between two of its transactions. The main loop's checkpoint
 * copies what was committed before it began, but the grant transaction is
 * open nearly all the time under load, so the log is never wholly copied
 * when one begins, and SQLite starts the log over only then: without this
 * it grew for as long as grants kept coming (300 MB in 10 s of the grants
 * bench), every write on a new page of the file. Here, right after a
 * commit, only the commits since the main loop's copy are left (a PASSIVE
 * checkpoint: it waits for nobody), so the next transaction can write the
 * log from its start again. Costs the request path one short copy and the
 * checkpoint's fsyncs once per background checkpoint.
 */
static void checkpoint_tail(ferryd_state *st)
{
    if (grant_service_txn_open(st->service, NULL) || !atomic_exchange(&st->tail_wanted, false))
        return;
    if (ledger_checkpoint(st->ledger, NULL, NULL) != FERRY_OK)
        log_warn("ledger.checkpoint_failed", "handle=grants");
}

/* Handles every queued request as one batch (one ledger transaction,
 * which may also hold the batches before it) and publishes the answers. */
static void flush_requests(ferryd_state *st, broker_link *link)
{
    size_t n = st->queued;
    if (n == 0) {
        commit_if_due(st, link, false);
        checkpoint_tail(st);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        queued_request *q = &st->queue[i];
        st->inputs[i] = (grant_service_input){
            .topic = q->topic,
            .payload = q->payload,
            .payload_len = q->payload_len,
            .is_v5 = q->is_v5,
            .response_topic = q->response_topic,
        };
    }
    ferry_err e =
        st->answer_before_commit
            ? grant_service_decide_batch(st->service, st->inputs, n, ferry_time_now(),
                                         ferry_time_mono_ns(), st->answers, st->results)
            : grant_service_handle_batch(st->service, st->inputs, n, ferry_time_now(),
                                         ferry_time_mono_ns(), st->answers, st->results);
    for (size_t i = 0; i < n; i++) {
        queued_request *q = &st->queue[i];
        if (e != FERRY_OK || st->results[i] == FERRY_ERR_INVALID) {
            if (e == FERRY_OK)
                log_warn("request.dropped", "topic=%s reason=\"not a device request topic\"",
                         q->topic);
        } else if (st->results[i] != FERRY_OK) {
            log_error("request.failed", "topic=%s error=\"%s\"", q->topic,
                      ferry_err_str(st->results[i]));
        } else {
            grant_answer *a = &st->answers[i];
            broker_publish_options opts = {
                .correlation_data = q->correlation,
                .correlation_len = q->correlation_len,
                .message_expiry_s = a->message_expiry_s,
            };
            if (broker_link_publish(link, a->topic, a->json, a->json_len, &opts) != FERRY_OK)
                log_error("answer.publish_failed", "topic=%s", a->topic);
            grant_answer_cleanup(a);
            st->handled++;
        }
        queued_request_cleanup(q);
    }
    if (st->answer_before_commit && e == FERRY_OK) {
        size_t voided = 0;
        broker_link_flush(link); /* the answers leave now, the commit follows */
        if (grant_service_stage_batch(st->service, &voided) != FERRY_OK)
            log_error("answer.grants_voided", "grants=%zu reason=\"ledger commit failed\"",
                      voided);
        commit_if_due(st, link, st->commit_delay_ns == 0);
    }
    checkpoint_tail(st);
    st->queued = 0;
    st->batches++;
}

/* Runs in the broker link's thread for every request: copies it (capped:
 * a payload over the request size limit is kept only far enough for the
 * parser to refuse it as too large) and queues it for the batch. */
static void on_request(void *ctx, broker_link *link, const broker_message *msg)
{
    ferryd_state *st = ctx;
    if (st->queued == GRANT_BATCH_MAX)
        flush_requests(st, link);
    queued_request *q = &st->queue[st->queued];
    size_t keep = msg->payload_len > GRANT_MESSAGE_MAX_BYTES + 1 ? GRANT_MESSAGE_MAX_BYTES + 1
                                                                 : msg->payload_len;
    q->topic = copy_bytes(msg->topic, strlen(msg->topic));
    q->payload = copy_bytes(msg->payload, keep);
    q->payload_len = keep;
    q->is_v5 = msg->is_v5;
    if (msg->correlation_data != NULL) {
        q->correlation = copy_bytes(msg->correlation_data, msg->correlation_len);
        q->correlation_len = msg->correlation_len;
    }
    if (msg->response_topic != NULL)
        q->response_topic = copy_bytes(msg->response_topic, strlen(msg->response_topic));
    if (q->topic == NULL || q->payload == NULL ||
        (msg->correlation_data != NULL && q->correlation == NULL) ||
        (msg->response_topic != NULL && q->response_topic == NULL)) {
        log_error("request.dropped", "reason=\"out of memory\"");
        queued_request_cleanup(q);
        return;
    }
    st->queued++;
}

static void on_loop_end(void *ctx, broker_link *link)
{
    flush_requests(ctx, link);
}

/* Removes the events every target has had for longer than
 * event_retention, a bounded number per sweep so that the write lock is
 * held briefly; a backlog shrinks over the following sweeps. */
static void prune_events(const daemon_config *cfg, ledger *l)
{
    uint64_t pruned = 0;
    if (cfg->event_retention_ms <= 0)
        return;
    int64_t before_ms = ferry_time_now() * 1000 - cfg->event_retention_ms;
    if (ledger_events_prune(l, before_ms, 10000, &pruned) != FERRY_OK)
        log_warn("ledger.prune_failed", "ledger=%s", cfg->ledger);
    else if (pruned > 0)
        log_info("events.pruned", "count=%llu", (unsigned long long)pruned);
}

/* How often the main loop checkpoints the ledger (was every 5 s). Each
 * checkpoint costs an fsync of the database file, but under load the log
 * grows by ~10 KiB per grant (two index leaves of the device, the row), so
 * at 10,000 grants/s a log restarted every 5 s grows to ~500 MB, every
 * 1 s to ~100 MB, rewritten in pages the kernel holds (checkpoint_tail). */
#define CHECKPOINT_INTERVAL_MS 1000
/* The background passes stop when one had at most this many frames to
 * copy (what was committed during the pass before); the rest is the
 * network thread's tail. */
#define CHECKPOINT_TAIL_FRAMES 256
#define CHECKPOINT_PASSES_MAX  4

/* Copies the log back into the database in passes, each copying what was
 * committed during the one before, until little is left; then asks the
 * network thread to copy that rest between two grant transactions, so
 * that the log can start over (checkpoint_tail). */
static void checkpoint_in_background(ferryd_state *st, ledger *l, const char *path)
{
    uint64_t copied = 0, before = 0;
    for (int pass = 0; pass < CHECKPOINT_PASSES_MAX; pass++) {
        if (ledger_checkpoint(l, NULL, &copied) != FERRY_OK) {
            log_warn("ledger.checkpoint_failed", "ledger=%s", path);
            return;
        }
        /* Fewer than before: the log started over meanwhile. */
        if (copied < before || (pass > 0 && copied - before <= CHECKPOINT_TAIL_FRAMES))
            break;
        before = copied;
    }
    atomic_store(&st->tail_wanted, true);
}

static void sleep_ms(int64_t ms)
{
    struct timespec ts = {.tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

ferry_err ferryd_run(const daemon_config *cfg, volatile sig_atomic_t *stop)
{
    ferry_err result = FERRY_OK;
    ledger *service_ledger = NULL, *sweep_ledger = NULL;
    store *embedded = NULL;
    char op_secret[SIGV4_MAX_SECRET_LEN + 1] = "";
    broker_link *link = NULL;
    outbox *events = NULL;
    notify_http *notify = NULL;
    ferryd_state *st = calloc(1, sizeof *st);
    char secret[SIGV4_MAX_SECRET_LEN + 1];
    char err[512];
    char subscription[GRANT_TOPIC_MAX];

    ferry_log_set_level((ferry_log_level)cfg->log_level);
    if (st == NULL)
        return FERRY_ERR_NOMEM;
    result = ferryd_read_secret(cfg->store_secret_key_file, secret, sizeof secret, err, sizeof err);
    if (result) {
        log_error("config.secret", "error=\"%s\"", err);
        goto out;
    }
    result = ledger_open(cfg->ledger, &service_ledger);
    if (result == FERRY_OK)
        result = ledger_set_sync(service_ledger,
                                 cfg->ledger_sync == 1 ? LEDGER_SYNC_FULL : LEDGER_SYNC_NORMAL);
    /* The request path never pays for a checkpoint: the main loop below
     * runs them in the background, every 5 s (each costs an fsync of the
     * database file, so not more often). */
    if (result == FERRY_OK)
        result = ledger_set_autocheckpoint(service_ledger, false);
    if (result == FERRY_OK)
        result = ledger_open(cfg->ledger, &sweep_ledger);
    if (result) {
        log_error("ledger.open_failed", "ledger=%s error=\"%s\"", cfg->ledger,
                  ferry_err_str(result));
        goto out;
    }

    grant_policy fleet;
    daemon_config_policy(cfg, &fleet);
    grant_service_config scfg = {
        .prefix = cfg->prefix,
        .endpoint = cfg->store_endpoint,
        .bucket = cfg->store_bucket,
        .region = cfg->store_region,
        .access_key = cfg->store_access_key,
        .secret = secret,
        .fleet = &fleet,
        .rate_table_size = (size_t)cfg->policy_rate_table_size,
        .ledger = service_ledger,
    };
    result = grant_service_new(&scfg, &st->service);
    st->ledger = service_ledger;
    st->answer_before_commit = cfg->store_kind == DAEMON_STORE_EMBEDDED;
    st->commit_delay_ns = cfg->commit_delay_ms * 1000000;
    st->busy_seen = ledger_busy_waits();
    if (result) {
        log_error("service.init_failed", "error=\"%s\"", ferry_err_str(result));
        goto out;
    }

    if (cfg->store_kind == DAEMON_STORE_EMBEDDED) {
        if (cfg->store_operator_secret_key_file != NULL) {
            result = ferryd_read_secret(cfg->store_operator_secret_key_file, op_secret,
                                        sizeof op_secret, err, sizeof err);
            if (result) {
                log_error("config.secret", "error=\"%s\"", err);
                goto out;
            }
        }
        store_config stcfg = {
            .listen = cfg->store_listen,
            .port = (int)cfg->store_port,
            .plain_http = cfg->store_plain_http,
            .tls_cert_file = cfg->store_tls_cert,
            .tls_key_file = cfg->store_tls_key,
            .data_dir = cfg->store_data_dir,
            .ledger_url = cfg->ledger,
            .bucket = cfg->store_bucket,
            .region = cfg->store_region,
            .grant_access_key = cfg->store_access_key,
            .grant_secret = secret,
            .operator_access_key = op_secret[0] != '\0' ? cfg->store_operator_access_key : NULL,
            .operator_secret = op_secret[0] != '\0' ? op_secret : NULL,
            .max_object_size = (uint64_t)cfg->store_max_object_size,
            .pack_max_object = (uint64_t)cfg->store_pack_max_object,
            .pack_size = (uint64_t)cfg->store_pack_size,
            .max_connections = (unsigned)cfg->store_max_connections,
            .per_ip_connections = (unsigned)cfg->store_per_ip_connections,
            .threads = (unsigned)cfg->store_threads,
            .idle_timeout_s = (unsigned)((cfg->store_idle_timeout_ms + 999) / 1000),
            .header_timeout_s = (unsigned)((cfg->store_header_timeout_ms + 999) / 1000),
            .min_upload_rate = (uint64_t)cfg->store_min_upload_rate,
            .min_rate_grace_s = (unsigned)(cfg->store_min_rate_grace_ms / 1000),
            .conn_memory_bytes = (unsigned)cfg->store_connection_memory,
            .max_headers = (unsigned)cfg->store_max_headers,
            .max_target_bytes = (unsigned)cfg->store_max_request_target,
            .max_header_bytes = (unsigned)cfg->store_max_header_bytes,
            .multipart_expiry_s = (cfg->store_multipart_expiry_ms + 999) / 1000,
            .max_multipart_uploads = (unsigned)cfg->store_max_multipart_uploads,
        };
        result = store_new(&stcfg, &embedded);
        OPENSSL_cleanse(op_secret, sizeof op_secret);
        if (result) {
            log_error("store.init_failed", "error=\"%s\"", ferry_err_str(result));
            goto out;
        }
    }
    OPENSSL_cleanse(secret, sizeof secret);

    if (cfg->broker_share_group[0] != '\0')
        snprintf(subscription, sizeof subscription, "$share/%s/%s/+/upload/request",
                 cfg->broker_share_group, cfg->prefix);
    else
        snprintf(subscription, sizeof subscription, "%s/+/upload/request", cfg->prefix);
    const char *subs[] = {subscription};
    static const broker_protocol protocols[] = {BROKER_PROTOCOL_AUTO, BROKER_PROTOCOL_V5,
                                                BROKER_PROTOCOL_V311};
    broker_link_config bcfg = {
        .host = cfg->broker_host,
        .port = (int)cfg->broker_port,
        .cafile = cfg->broker_cafile,
        .certfile = cfg->broker_certfile,
        .keyfile = cfg->broker_keyfile,
        .client_id = cfg->broker_client_id,
        .keepalive_s = (int)(cfg->broker_keepalive_ms / 1000),
        .protocol = protocols[cfg->broker_protocol],
        .reconnect_min_ms = cfg->broker_reconnect_min_ms,
        .reconnect_max_ms = cfg->broker_reconnect_max_ms,
        .session_expiry_s = (uint32_t)(cfg->broker_session_expiry_ms / 1000),
        .subscriptions = subs,
        .subscription_count = 1,
        .on_message = on_request,
        .on_loop_end = on_loop_end,
        .ctx = st,
    };
    result = broker_link_new(&bcfg, &link);
    if (result == FERRY_OK)
        result = broker_link_start(link);
    if (result) {
        log_error("broker.init_failed", "error=\"%s\"", ferry_err_str(result));
        goto out;
    }
    /* The outbox after the link (its MQTT targets and the device messages
     * publish through it). Events recorded before this point, or while a
     * previous ferryd was down, are simply due and go out now. */
    outbox_config ocfg = {
        .ledger_url = cfg->ledger,
        .prefix = cfg->prefix,
        .region = cfg->store_region,
        .events = &cfg->events,
        .link = link,
    };
    err[0] = '\0';
    result = outbox_new(&ocfg, &events, err, sizeof err);
    if (result == FERRY_OK)
        result = outbox_start(events);
    if (result) {
        log_error("outbox.init_failed", "error=\"%s\" detail=\"%s\"", ferry_err_str(result), err);
        goto out;
    }
    /* /events/s3 last: a notification it accepts is delivered by the
     * outbox started above. */
    if (cfg->notify_port != 0) {
        char token[512];
        result = ferryd_read_secret(cfg->notify_token_file, token, sizeof token, err, sizeof err);
        if (result == FERRY_OK) {
            notify_http_config ncfg = {
                .listen = cfg->notify_listen,
                .port = (int)cfg->notify_port,
                .tls_cert_file = cfg->notify_tls_cert,
                .tls_key_file = cfg->notify_tls_key,
                .token = token,
                .ledger_url = cfg->ledger,
                .bucket = cfg->store_bucket,
                .max_body = (size_t)cfg->notify_max_body,
            };
            result = notify_http_new(&ncfg, &notify);
            if (result)
                snprintf(err, sizeof err, "cannot start the /events/s3 listener");
        }
        OPENSSL_cleanse(token, sizeof token);
        if (result) {
            log_error("notify.init_failed", "error=\"%s\" detail=\"%s\"", ferry_err_str(result),
                      err);
            goto out;
        }
    }
    log_info("ferryd.started", "broker=%s:%lld subscription=%s ledger=%s store=%s bucket=%s",
             cfg->broker_host, (long long)cfg->broker_port, subscription, cfg->ledger,
             cfg->store_endpoint, cfg->store_bucket);

    int64_t next_sweep = ferry_time_mono_ns();
    int64_t next_checkpoint = next_sweep;
    while (!*stop) {
        if (ferry_time_mono_ns() >= next_checkpoint) {
            checkpoint_in_background(st, sweep_ledger, cfg->ledger);
            next_checkpoint = ferry_time_mono_ns() + CHECKPOINT_INTERVAL_MS * 1000000LL;
        }
        if (ferry_time_mono_ns() >= next_sweep) {
            uint64_t expired = 0;
            if (ledger_grants_expire(sweep_ledger, ferry_time_now(), &expired) != FERRY_OK)
                log_warn("ledger.expire_failed", "ledger=%s", cfg->ledger);
            else if (expired > 0)
                log_info("grants.expired", "count=%llu", (unsigned long long)expired);
            prune_events(cfg, sweep_ledger);
            /* Forgotten multipart uploads of the embedded store. */
            if (embedded != NULL && store_expire_uploads(embedded) != FERRY_OK)
                log_warn("store.multipart_expire_failed", "ledger=%s", cfg->ledger);
            next_sweep = ferry_time_mono_ns() + cfg->expire_interval_ms * 1000000;
        }
        sleep_ms(100);
    }
    log_info("ferryd.stopping", "handled=%llu batches=%llu", (unsigned long long)st->handled,
             (unsigned long long)st->batches);

out:
    /* The store first: uploads in flight finish (or are aborted, leaving
     * nothing behind) before the rest goes away. */
    store_stop(embedded, cfg->shutdown_timeout_ms);
    store_free(embedded);
    OPENSSL_cleanse(op_secret, sizeof op_secret);
    notify_http_free(notify);
    /* Then the outbox: the delivery in progress finishes, the rest stays
     * pending in the ledger for the next start. */
    outbox_free(events);
    /* Stopping the link first finishes the request being handled and waits
     * for the broker to acknowledge the answers already published. */
    broker_link_stop(link, cfg->shutdown_timeout_ms);
    broker_link_free(link);
    /* The link's thread is gone: the grants it answered last are committed
     * here, not rolled back by grant_service_free. */
    if (st->service != NULL && grant_service_txn_open(st->service, NULL)) {
        size_t voided = 0;
        if (grant_service_commit_batch(st->service, &voided) != FERRY_OK)
            log_error("answer.grants_voided", "grants=%zu reason=\"ledger commit failed\"",
                      voided);
    }
    grant_service_free(st->service);
    ledger_close(service_ledger);
    ledger_close(sweep_ledger);
    OPENSSL_cleanse(secret, sizeof secret);
    if (result == FERRY_OK)
        log_info("ferryd.stopped", "handled=%llu", (unsigned long long)st->handled);
    for (size_t i = 0; i < st->queued; i++)
        queued_request_cleanup(&st->queue[i]);
    free(st);
    return result;
}
