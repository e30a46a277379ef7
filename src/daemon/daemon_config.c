/* daemon_config.c - ferryd's option table and cross-option checks. */
#include "daemon_config.h"

#include <stdio.h>
#include <string.h>

#include "broker/broker_link.h"

#define S(field) offsetof(daemon_config, field)
#define DAY_MS   (86400LL * 1000)
#define WEEK_MS  (7 * DAY_MS)
#define TIB      (1LL << 40)

static const ferry_cfg_option options[] = {
    {"ferryd", "log_level", FERRY_CFG_ENUM, S(log_level), "info", 0, 0, "debug|info|warn|error", 0,
     "Least severe level that is logged (to stderr, as key=value lines)."},
    {"ferryd", "ledger", FERRY_CFG_STRING, S(ledger), "ferry-ledger.db", 1, 1024, NULL, 0,
     "The ledger: a SQLite file path (or `sqlite:PATH`). Created and migrated at start-up."},
    {"ferryd", "ledger_sync", FERRY_CFG_ENUM, S(ledger_sync), "normal", 0, 0, "normal|full", 0,
     "How grant records reach the disk. `normal`: no fsync per grant; a crash of ferryd loses "
     "nothing, a power failure may lose the newest grants (their URLs are then refused by the "
     "embedded store and the device asks again). `full`: an fsync per grant (milliseconds on "
     "most disks)."},
    {"ferryd", "commit_delay", FERRY_CFG_DURATION, S(commit_delay_ms), "2ms", 0, 1000, NULL, 0,
     "With the embedded store, how long ferryd may keep its grant transaction open after the "
     "answers have left, so that the grants of the requests arriving meanwhile share one "
     "ledger commit (fewer writes and lock calls per grant). Until the commit a store upload "
     "of those grants waits, and other writers of this process get the lock early by asking "
     "for it. If ferryd dies within that window, the grants answered in it were never recorded: "
     "the store refuses them and the devices ask again. 0: commit after every batch. With an "
     "external store every batch is committed before its answers go out, whatever this says."},
    {"ferryd", "prefix", FERRY_CFG_STRING, S(prefix), "ferry", 1, 64, NULL, 0,
     "First topic level of every Ferry topic (`<prefix>/<device>/upload/request`)."},
    {"ferryd", "expire_interval", FERRY_CFG_DURATION, S(expire_interval_ms), "30s", 1000, DAY_MS,
     NULL, 0, "How often grants past their expiry are marked expired in the ledger."},
    {"ferryd", "event_retention", FERRY_CFG_DURATION, S(event_retention_ms), "7d", 0,
     3650 * DAY_MS, NULL, 0,
     "How long an event stays in the ledger once every target has it (at each "
     "`expire_interval`, up to 10,000 at a time, oldest first). Events with a pending or "
     "dead-lettered delivery stay until delivered or replayed; stored objects are never "
     "touched. 0: keep every event."},
    {"ferryd", "shutdown_timeout", FERRY_CFG_DURATION, S(shutdown_timeout_ms), "5s", 0, 600 * 1000,
     NULL, 0, "On SIGTERM/SIGINT, how long to wait for answers to be acknowledged by the broker."},

    {"broker", "host", FERRY_CFG_STRING, S(broker_host), "127.0.0.1", 1, 253, NULL, 0,
     "MQTT broker host name or address."},
    {"broker", "port", FERRY_CFG_INT, S(broker_port), "8883", 1, 65535, NULL, 0,
     "MQTT broker TLS port."},
    {"broker", "cafile", FERRY_CFG_STRING, S(broker_cafile), NULL, 1, 4096, NULL,
     FERRY_CFG_REQUIRED, "CA certificate (PEM) the broker's certificate must chain to."},
    {"broker", "certfile", FERRY_CFG_STRING, S(broker_certfile), NULL, 1, 4096, NULL,
     FERRY_CFG_REQUIRED, "ferryd's client certificate (PEM); its CN is ferryd's broker identity."},
    {"broker", "keyfile", FERRY_CFG_STRING, S(broker_keyfile), NULL, 1, 4096, NULL,
     FERRY_CFG_REQUIRED, "ferryd's private key (PEM)."},
    {"broker", "client_id", FERRY_CFG_STRING, S(broker_client_id), "ferryd-1", 1, 128, NULL, 0,
     "MQTT client id. Must be stable across restarts (the broker keeps the session under it) "
     "and different for each ferryd sharing a broker."},
    {"broker", "protocol", FERRY_CFG_ENUM, S(broker_protocol), "auto", 0, 0, "auto|5|3.1.1", 0,
     "MQTT version: `auto` tries MQTT 5 and falls back to 3.1.1 if the broker refuses it."},
    {"broker", "keepalive", FERRY_CFG_DURATION, S(broker_keepalive_ms), "30s", 5000, 3600 * 1000,
     NULL, 0, "MQTT keep-alive interval."},
    {"broker", "reconnect_min", FERRY_CFG_DURATION, S(broker_reconnect_min_ms), "250ms", 10,
     60 * 1000, NULL, 0, "First reconnect delay; doubles per failed attempt, with jitter."},
    {"broker", "reconnect_max", FERRY_CFG_DURATION, S(broker_reconnect_max_ms), "30s", 10,
     3600 * 1000, NULL, 0, "Cap on the reconnect delay."},
    {"broker", "session_expiry", FERRY_CFG_DURATION, S(broker_session_expiry_ms), "1d", 0, WEEK_MS,
     NULL, 0,
     "MQTT 5 session expiry: how long the broker keeps ferryd's subscription and queued "
     "requests while ferryd is away."},
    {"broker", "share_group", FERRY_CFG_STRING, S(broker_share_group), "ferryd", 0, 64, NULL, 0,
     "Shared-subscription group: ferryd instances in one group split the requests. Empty: a "
     "plain subscription, for a single ferryd. Mosquitto 2.0 restores plain subscriptions "
     "from its persistence file after a restart but not shared ones, so only a plain "
     "subscription also keeps requests published between a broker restart and ferryd's "
     "reconnect (see docs/operations.md)."},

    {"store", "kind", FERRY_CFG_ENUM, S(store_kind), "embedded", 0, 0, "embedded|external", 0,
     "`embedded`: Ferry's own store (enforces single use and revocation). `external`: any "
     "S3-compatible store; its own rules apply (no revocation, no single use)."},
    {"store", "endpoint", FERRY_CFG_STRING, S(store_endpoint), "https://127.0.0.1:9443", 8, 2048,
     NULL, 0, "Base URL of the store as devices reach it (`https://host[:port]`, no path)."},
    {"store", "bucket", FERRY_CFG_STRING, S(store_bucket), "ingest", 3, 63, NULL, 0,
     "Bucket the objects go to (path-style: `<endpoint>/<bucket>/<key>`)."},
    {"store", "region", FERRY_CFG_STRING, S(store_region), "us-east-1", 1, 64, NULL, 0,
     "Region in the SigV4 credential scope."},
    {"store", "access_key", FERRY_CFG_STRING, S(store_access_key), "ferry-grants", 1, 128, NULL, 0,
     "Access key id that signs device grants."},
    {"store", "secret_key_file", FERRY_CFG_STRING, S(store_secret_key_file), NULL, 1, 4096, NULL,
     FERRY_CFG_REQUIRED,
     "File holding the secret key of `access_key` (first line; must not be group/world "
     "readable)."},
    {"store", "listen", FERRY_CFG_STRING, S(store_listen), "127.0.0.1", 2, 64, NULL, 0,
     "Embedded store: numeric IPv4 or IPv6 address to listen on (`0.0.0.0`, `::` for all)."},
    {"store", "port", FERRY_CFG_INT, S(store_port), "9443", 1, 65535, NULL, 0,
     "Embedded store: TCP port."},
    {"store", "plain_http", FERRY_CFG_BOOL, S(store_plain_http), "false", 0, 0, NULL, 0,
     "Embedded store: serve plain HTTP, for use behind a TLS-terminating proxy only."},
    {"store", "tls_cert", FERRY_CFG_STRING, S(store_tls_cert), NULL, 1, 4096, NULL, 0,
     "Embedded store: certificate (PEM, chain allowed), e.g. `store.pem` from `ferryctl pki "
     "init`. Required unless `plain_http`."},
    {"store", "tls_key", FERRY_CFG_STRING, S(store_tls_key), NULL, 1, 4096, NULL, 0,
     "Embedded store: private key (PEM) of `tls_cert`, e.g. `store.key`."},
    {"store", "data_dir", FERRY_CFG_STRING, S(store_data_dir), "ferry-store", 1, 3072, NULL, 0,
     "Embedded store: directory of the objects (`objects/`, and `packs/` for small ones). "
     "Created if missing."},
    {"store", "operator_access_key", FERRY_CFG_STRING, S(store_operator_access_key),
     "ferry-operator", 1, 128, NULL, 0,
     "Embedded store: access key id of the operator credential (GET, HEAD, DELETE, list, "
     "and PUT without a grant)."},
    {"store", "operator_secret_key_file", FERRY_CFG_STRING, S(store_operator_secret_key_file), NULL,
     1, 4096, NULL, 0,
     "Embedded store: file holding the operator secret key (first line, mode 600). Unset: "
     "no operator access at all."},
    {"store", "max_object_size", FERRY_CFG_SIZE, S(store_max_object_size), "5G", 0, 5 * TIB, NULL,
     0, "Embedded store: largest object accepted (EntityTooLarge above)."},
    {"store", "pack_max_object", FERRY_CFG_SIZE, S(store_pack_max_object), "1M", 0, 64 << 20,
     NULL, 0,
     "Embedded store: PUT bodies of up to this many bytes are written into a shared pack "
     "file (`packs/`), many objects to one fdatasync, instead of a file of their own "
     "(0: every object its own file). A deleted object's region is punched out of its "
     "pack; an empty pack is removed (docs/store.md)."},
    {"store", "pack_size", FERRY_CFG_SIZE, S(store_pack_size), "256M", 1 << 20, TIB, NULL, 0,
     "Embedded store: a pack takes new objects until it holds this many bytes (at least 4 "
     "`pack_max_object`); then the next one begins."},
    {"store", "max_connections", FERRY_CFG_INT, S(store_max_connections), "1024", 1, 100000, NULL,
     0, "Embedded store: concurrent connections; more are refused at accept."},
    {"store", "per_ip_connections", FERRY_CFG_INT, S(store_per_ip_connections), "0", 0, 100000,
     NULL, 0, "Embedded store: concurrent connections from one address (0: no limit)."},
    {"store", "threads", FERRY_CFG_INT, S(store_threads), "8", 1, 256, NULL, 0,
     "Embedded store: worker threads (each runs an epoll loop; fsyncs block only their "
     "thread)."},
    {"store", "idle_timeout", FERRY_CFG_DURATION, S(store_idle_timeout_ms), "30s", 1000,
     3600 * 1000, NULL, 0,
     "Embedded store: a body that sends nothing for this long is answered `400 "
     "RequestTimeout`; idle keep-alive connections and slow headers are closed."},
    {"store", "header_timeout", FERRY_CFG_DURATION, S(store_header_timeout_ms), "40s", 1000,
     3600 * 1000, NULL, 0,
     "Embedded store: a request line and headers not complete this long after the connection "
     "began, or after its previous request ended, close the connection (slowloris)."},
    {"store", "min_upload_rate", FERRY_CFG_SIZE, S(store_min_upload_rate), "1K", 0, TIB, NULL, 0,
     "Embedded store: average bytes per second a body must keep up once `min_rate_grace` "
     "has passed; slower uploads are answered `400 RequestTimeout` (0: no minimum)."},
    {"store", "min_rate_grace", FERRY_CFG_DURATION, S(store_min_rate_grace_ms), "20s", 0,
     3600 * 1000, NULL, 0, "Embedded store: time a body may take before the rate counts."},
    {"store", "connection_memory", FERRY_CFG_SIZE, S(store_connection_memory), "64K", 8192,
     16 << 20, NULL, 0,
     "Embedded store: memory per connection: it holds the request line and headers (see "
     "`max_header_bytes`) and is the receive buffer."},
    {"store", "max_headers", FERRY_CFG_INT, S(store_max_headers), "64", 8, 128, NULL, 0,
     "Embedded store: request headers accepted per request (more: "
     "`RequestHeaderSectionTooLarge`)."},
    {"store", "max_request_target", FERRY_CFG_SIZE, S(store_max_request_target), "8K", 1024, 24578,
     NULL, 0,
     "Embedded store: longest request target (path and query as sent); longer: `414 "
     "InvalidURI`."},
    {"store", "max_header_bytes", FERRY_CFG_SIZE, S(store_max_header_bytes), "16K", 1024, 1 << 20,
     NULL, 0,
     "Embedded store: largest header section; larger: `400 RequestHeaderSectionTooLarge`. "
     "`connection_memory` must hold it, `max_request_target` and 64 bytes a header, plus 5 KiB."},
    {"store", "multipart_expiry", FERRY_CFG_DURATION, S(store_multipart_expiry_ms), "7d", 0,
     3650 * DAY_MS, NULL, 0,
     "Embedded store: a multipart upload neither completed nor aborted this long after it was "
     "created is aborted and its parts removed (at start-up, at every `expire_interval`, and "
     "a few at each CreateMultipartUpload). 0: never."},
    {"store", "max_multipart_uploads", FERRY_CFG_INT, S(store_max_multipart_uploads), "1000", 0,
     1000000, NULL, 0,
     "Embedded store: multipart uploads open at once; CreateMultipartUpload beyond it is "
     "answered `503 SlowDown` (0: no limit)."},

    {"policy", "max_size", FERRY_CFG_SIZE, S(policy_max_size), "5G", 1, 5 * TIB, NULL, 0,
     "Largest payload a device may announce."},
    {"policy", "content_types", FERRY_CFG_STRING, S(policy_content_types), "*/*", 1,
     LEDGER_CONTENT_TYPES_MAX, NULL, 0,
     "Comma-separated content-type patterns a device may upload (`image/*`, `audio/wav`, "
     "`*/*`)."},
    {"policy", "expiry_min", FERRY_CFG_DURATION, S(policy_expiry_min_ms), "60s", 1000, WEEK_MS,
     NULL, 0, "Shortest grant lifetime."},
    {"policy", "expiry_base", FERRY_CFG_DURATION, S(policy_expiry_base_ms), "5m", 0, WEEK_MS, NULL,
     0, "Grant lifetime before the time the payload needs at `min_bandwidth`."},
    {"policy", "expiry_max", FERRY_CFG_DURATION, S(policy_expiry_max_ms), "1d", 1000, WEEK_MS, NULL,
     0, "Longest grant lifetime (never over 7 days, SigV4's limit)."},
    {"policy", "min_bandwidth", FERRY_CFG_SIZE, S(policy_min_bandwidth), "16K", 1, TIB, NULL, 0,
     "Upload speed (bytes per second) the slowest device is assumed to reach: "
     "expiry = clamp(expiry_min, expiry_base + size / min_bandwidth, expiry_max)."},
    {"policy", "max_open_grants", FERRY_CFG_INT, S(policy_max_open_grants), "16", 0, 1000000, NULL,
     0, "Grants a device may hold unused and unexpired at once (0: no limit)."},
    {"policy", "rate_per_minute", FERRY_CFG_INT, S(policy_rate_per_minute), "60", 0, 6000000, NULL,
     0, "Requests per minute a device may make, sustained (token bucket; 0: no limit)."},
    {"policy", "rate_burst", FERRY_CFG_INT, S(policy_rate_burst), "20", 1, 1000000, NULL, 0,
     "Requests a device may make at once before the rate applies."},
    {"policy", "daily_quota", FERRY_CFG_SIZE, S(policy_daily_quota), "0", 0, 1024 * TIB, NULL, 0,
     "Bytes a device may be granted per UTC day (0: no limit)."},
    {"policy", "put_max_size", FERRY_CFG_SIZE, S(policy_put_max_size), "5G", 1, 5LL << 30, NULL, 0,
     "`method: auto` picks a PUT grant up to this size and a POST grant above it."},
    {"policy", "rate_table_size", FERRY_CFG_INT, S(policy_rate_table_size), "100000", 16, 100000000,
     NULL, 0, "Devices whose request rate is tracked at once (memory bound)."},
    {"notify", "port", FERRY_CFG_INT, S(notify_port), "0", 0, 65535, NULL, 0,
     "HTTPS port of `POST /events/s3`, where an external S3-compatible store (or a forwarder "
     "of AWS S3 notifications) reports stored objects, fed into the event outbox. 0: off."},
    {"notify", "listen", FERRY_CFG_STRING, S(notify_listen), "127.0.0.1", 1, 64, NULL, 0,
     "Address `/events/s3` listens on (IPv4 or IPv6 literal)."},
    {"notify", "tls_cert", FERRY_CFG_STRING, S(notify_tls_cert), NULL, 1, 4096, NULL, 0,
     "Certificate (PEM) of the `/events/s3` listener. Required with a port."},
    {"notify", "tls_key", FERRY_CFG_STRING, S(notify_tls_key), NULL, 1, 4096, NULL, 0,
     "Private key (PEM) of `tls_cert`."},
    {"notify", "token_file", FERRY_CFG_STRING, S(notify_token_file), NULL, 1, 4096, NULL, 0,
     "File holding the bearer token notifications must carry (first line, mode 600). "
     "Required with a port."},
    {"notify", "max_body", FERRY_CFG_SIZE, S(notify_max_body), "1M", 1024, 16LL << 20, NULL, 0,
     "Largest notification body accepted."},
};

const ferry_cfg_table daemon_config_table = {options, sizeof options / sizeof options[0]};

ferry_err daemon_config_load(daemon_config *cfg, const char *path, char *err, size_t err_size)
{
    memset(cfg, 0, sizeof *cfg);
    events_config_init(&cfg->events);
    ferry_err e = ferry_cfg_load(&daemon_config_table, cfg, path, events_config_section,
                                 &cfg->events, err, err_size);
    if (e)
        return e;
    if ((e = daemon_config_check(cfg, err, err_size)) != FERRY_OK)
        return e;
    /* No target configured: the MQTT topic the issue names as the default,
     * built through the same parser as a written section would be. */
    if (cfg->events.count == 0 &&
        events_config_section(&cfg->events, "target." DAEMON_DEFAULT_TARGET, "type", "mqtt", err,
                              err_size) != 0)
        return FERRY_ERR_CONFIG;
    return events_config_check(&cfg->events, cfg->prefix, err, err_size);
}

void daemon_config_free(daemon_config *cfg)
{
    ferry_cfg_free(&daemon_config_table, cfg);
    events_config_cleanup(&cfg->events);
}

ferry_err daemon_config_check(const daemon_config *cfg, char *err, size_t err_size)
{
    if (cfg->policy_expiry_min_ms > cfg->policy_expiry_max_ms) {
        snprintf(err, err_size, "[policy] expiry_min is greater than expiry_max");
        return FERRY_ERR_CONFIG;
    }
    if (cfg->broker_reconnect_min_ms > cfg->broker_reconnect_max_ms) {
        snprintf(err, err_size, "[broker] reconnect_min is greater than reconnect_max");
        return FERRY_ERR_CONFIG;
    }
    if (strncmp(cfg->store_endpoint, "https://", 8) != 0 &&
        strncmp(cfg->store_endpoint, "http://", 7) != 0) {
        snprintf(err, err_size, "[store] endpoint: must start with https:// or http://");
        return FERRY_ERR_CONFIG;
    }
    const char *after_scheme = strstr(cfg->store_endpoint, "://") + 3;
    if (*after_scheme == '\0' || strchr(after_scheme, '/') != NULL ||
        strpbrk(after_scheme, "?#@ ") != NULL) {
        snprintf(err, err_size, "[store] endpoint: must be scheme://host[:port] with no path");
        return FERRY_ERR_CONFIG;
    }
    if (cfg->store_kind == DAEMON_STORE_EMBEDDED && !cfg->store_plain_http &&
        (cfg->store_tls_cert == NULL || cfg->store_tls_key == NULL)) {
        snprintf(err, err_size,
                 "[store] tls_cert and tls_key are required for the embedded store "
                 "(or plain_http = true behind a TLS proxy)");
        return FERRY_ERR_CONFIG;
    }
    for (const char *p = cfg->prefix; *p; p++) {
        if (*p == '/' || *p == '+' || *p == '#' || (unsigned char)*p < 0x20) {
            snprintf(err, err_size, "[ferryd] prefix: must be one topic level without / + #");
            return FERRY_ERR_CONFIG;
        }
    }
    for (const char *p = cfg->broker_share_group; *p; p++) {
        if (*p == '/' || *p == '+' || *p == '#' || (unsigned char)*p < 0x20) {
            snprintf(err, err_size, "[broker] share_group: must not contain / + #");
            return FERRY_ERR_CONFIG;
        }
    }
    if (cfg->notify_port != 0 && (cfg->notify_tls_cert == NULL || cfg->notify_tls_key == NULL ||
                                  cfg->notify_token_file == NULL)) {
        snprintf(err, err_size,
                 "[notify] tls_cert, tls_key and token_file are required with a "
                 "port");
        return FERRY_ERR_CONFIG;
    }
    grant_policy policy;
    daemon_config_policy(cfg, &policy);
    const char *why = NULL;
    if (grant_policy_validate(&policy, &why) != FERRY_OK) {
        snprintf(err, err_size, "[policy] %s", why ? why : "inconsistent policy");
        return FERRY_ERR_CONFIG;
    }
    return FERRY_OK;
}

void daemon_config_policy(const daemon_config *cfg, grant_policy *out)
{
    grant_policy_defaults(out);
    out->max_size_bytes = (uint64_t)cfg->policy_max_size;
    snprintf(out->content_types, sizeof out->content_types, "%s", cfg->policy_content_types);
    out->expiry_min_s = cfg->policy_expiry_min_ms / 1000;
    out->expiry_base_s = cfg->policy_expiry_base_ms / 1000;
    out->expiry_max_s = cfg->policy_expiry_max_ms / 1000;
    out->min_bandwidth_bps = (uint64_t)cfg->policy_min_bandwidth;
    out->max_open_grants = (uint64_t)cfg->policy_max_open_grants;
    out->rate_per_s = (double)cfg->policy_rate_per_minute / 60.0;
    out->rate_burst = (double)cfg->policy_rate_burst;
    out->daily_quota_bytes = (uint64_t)cfg->policy_daily_quota;
    out->put_max_bytes = (uint64_t)cfg->policy_put_max_size;
    out->disabled = false;
}
