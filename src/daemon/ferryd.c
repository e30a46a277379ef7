/*
 * ferryd.c - the daemon's lifecycle; see ferryd.h.
 *
 * Threads: the broker link's network thread handles every request inline
 * (parse, policy, sign, ledger insert, publish): that keeps a request's
 * round trip free of thread hand-offs, and one thread sustains well over
 * 10,000 grants/s (docs/benchmarks.md). It owns the grant service and its
 * ledger handle. The main thread waits for the stop signal and sweeps
 * expired grants with a ledger handle of its own.
 */
#include "ferryd.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
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
#include "ledger/ledger.h"
#include "sigv4/sigv4.h"

typedef struct ferryd_state {
    grant_service *service;
    uint64_t handled;
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
        snprintf(err, err_size, "%s: readable by group or others (mode %03o); chmod 600 it",
                 path, (unsigned)(st.st_mode & 0777));
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

static void on_request(void *ctx, broker_link *link, const broker_message *msg)
{
    ferryd_state *st = ctx;
    grant_service_input in = {
        .topic = msg->topic,
        .payload = msg->payload,
        .payload_len = msg->payload_len,
        .is_v5 = msg->is_v5,
        .response_topic = msg->response_topic,
    };
    grant_answer answer;
    ferry_err e = grant_service_handle(st->service, &in, ferry_time_now(), ferry_time_mono_ns(),
                                       &answer);
    if (e == FERRY_ERR_INVALID) {
        log_warn("request.dropped", "topic=%s reason=\"not a device request topic\"", msg->topic);
        return;
    }
    if (e) {
        log_error("request.failed", "topic=%s error=\"%s\"", msg->topic, ferry_err_str(e));
        return;
    }
    broker_publish_options opts = {
        .correlation_data = msg->correlation_data,
        .correlation_len = msg->correlation_len,
        .message_expiry_s = answer.message_expiry_s,
    };
    if (broker_link_publish(link, answer.topic, answer.json, answer.json_len, &opts) != FERRY_OK)
        log_error("answer.publish_failed", "topic=%s", answer.topic);
    grant_answer_cleanup(&answer);
    st->handled++;
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
    broker_link *link = NULL;
    ferryd_state st = {0};
    char secret[SIGV4_MAX_SECRET_LEN + 1];
    char err[512];
    char subscription[GRANT_TOPIC_MAX];

    ferry_log_set_level((ferry_log_level)cfg->log_level);
    result = ferryd_read_secret(cfg->store_secret_key_file, secret, sizeof secret, err, sizeof err);
    if (result) {
        log_error("config.secret", "error=\"%s\"", err);
        goto out;
    }
    result = ledger_open(cfg->ledger, &service_ledger);
    if (result == FERRY_OK)
        result = ledger_set_sync(service_ledger,
                                 cfg->ledger_sync == 1 ? LEDGER_SYNC_FULL : LEDGER_SYNC_NORMAL);
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
    result = grant_service_new(&scfg, &st.service);
    OPENSSL_cleanse(secret, sizeof secret);
    if (result) {
        log_error("service.init_failed", "error=\"%s\"", ferry_err_str(result));
        goto out;
    }

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
        .ctx = &st,
    };
    result = broker_link_new(&bcfg, &link);
    if (result == FERRY_OK)
        result = broker_link_start(link);
    if (result) {
        log_error("broker.init_failed", "error=\"%s\"", ferry_err_str(result));
        goto out;
    }
    log_info("ferryd.started", "broker=%s:%lld subscription=%s ledger=%s store=%s bucket=%s",
             cfg->broker_host, (long long)cfg->broker_port, subscription, cfg->ledger,
             cfg->store_endpoint, cfg->store_bucket);

    int64_t next_sweep = ferry_time_mono_ns();
    while (!*stop) {
        if (ferry_time_mono_ns() >= next_sweep) {
            uint64_t expired = 0;
            if (ledger_grants_expire(sweep_ledger, ferry_time_now(), &expired) != FERRY_OK)
                log_warn("ledger.expire_failed", "ledger=%s", cfg->ledger);
            else if (expired > 0)
                log_info("grants.expired", "count=%llu", (unsigned long long)expired);
            next_sweep = ferry_time_mono_ns() + cfg->expire_interval_ms * 1000000;
        }
        sleep_ms(100);
    }
    log_info("ferryd.stopping", "handled=%llu", (unsigned long long)st.handled);

out:
    /* Stopping the link first finishes the request being handled and waits
     * for the broker to acknowledge the answers already published. */
    broker_link_stop(link, cfg->shutdown_timeout_ms);
    broker_link_free(link);
    grant_service_free(st.service);
    ledger_close(service_ledger);
    ledger_close(sweep_ledger);
    OPENSSL_cleanse(secret, sizeof secret);
    if (result == FERRY_OK)
        log_info("ferryd.stopped", "handled=%llu", (unsigned long long)st.handled);
    return result;
}
