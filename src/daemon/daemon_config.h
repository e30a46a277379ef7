/*
 * daemon_config.h - ferryd's configuration: one struct, one option table.
 *
 * The table in daemon_config.c is the single source of truth: the loader
 * validates every value at start-up against it, and
 * `ferryd --print-config-reference` prints it as the option reference in
 * docs/operations.md. Cross-option checks (e.g. expiry_min <= expiry_max)
 * are in daemon_config_check().
 */
#ifndef FERRY_DAEMON_CONFIG_H
#define FERRY_DAEMON_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/config.h"
#include "events/events_config.h"
#include "ferry/ferry_error.h"
#include "grants/grants.h"

enum daemon_store_kind { DAEMON_STORE_EMBEDDED = 0, DAEMON_STORE_EXTERNAL = 1 };

typedef struct daemon_config {
    /* [ferryd] */
    int log_level; /* ferry_log_level */
    char *ledger;
    int ledger_sync; /* 0 normal, 1 full */
    char *prefix;
    int64_t expire_interval_ms;
    int64_t event_retention_ms; /* 0: keep every event */
    int64_t shutdown_timeout_ms;
    int64_t commit_delay_ms; /* embedded store: deferred grant commit, 0: none */

    /* [broker] */
    char *broker_host;
    int64_t broker_port;
    char *broker_cafile;
    char *broker_certfile;
    char *broker_keyfile;
    char *broker_client_id;
    int broker_protocol; /* broker_protocol */
    int64_t broker_keepalive_ms;
    int64_t broker_reconnect_min_ms;
    int64_t broker_reconnect_max_ms;
    int64_t broker_session_expiry_ms;
    char *broker_share_group;

    /* [store] */
    int store_kind;
    char *store_endpoint;
    char *store_bucket;
    char *store_region;
    char *store_access_key;
    char *store_secret_key_file;
    /* [store], the embedded store's own options (kind = embedded) */
    char *store_listen;
    int64_t store_port;
    bool store_plain_http;
    char *store_tls_cert;
    char *store_tls_key;
    char *store_data_dir;
    char *store_operator_access_key;
    char *store_operator_secret_key_file;
    int64_t store_max_object_size;
    int64_t store_pack_max_object;
    int64_t store_pack_size;
    int64_t store_max_connections;
    int64_t store_per_ip_connections;
    int64_t store_threads;
    int64_t store_idle_timeout_ms;
    int64_t store_header_timeout_ms;
    int64_t store_min_upload_rate;
    int64_t store_min_rate_grace_ms;
    int64_t store_connection_memory;
    int64_t store_max_headers;
    int64_t store_max_request_target;
    int64_t store_max_header_bytes;
    int64_t store_multipart_expiry_ms; /* 0: multipart uploads never expire */
    int64_t store_max_multipart_uploads;

    /* [policy]: fleet defaults; per-device overrides live in the ledger */
    int64_t policy_max_size;
    char *policy_content_types;
    int64_t policy_expiry_min_ms;
    int64_t policy_expiry_base_ms;
    int64_t policy_expiry_max_ms;
    int64_t policy_min_bandwidth; /* bytes per second */
    int64_t policy_max_open_grants;
    int64_t policy_rate_per_minute;
    int64_t policy_rate_burst;
    int64_t policy_daily_quota;
    int64_t policy_put_max_size;
    int64_t policy_rate_table_size;

    /* [notify]: the /events/s3 listener for external stores (notify_http.h) */
    char *notify_listen;
    int64_t notify_port; /* 0: off */
    char *notify_tls_cert;
    char *notify_tls_key;
    char *notify_token_file;
    int64_t notify_max_body;

    /* [target.NAME] sections (src/events/events_config.h), checked, with
     * their defaults filled in. With none, one MQTT target named "mqtt"
     * publishing to <prefix>/events/object-created stands in (docs/events.md). */
    events_config events;
} daemon_config;

extern const ferry_cfg_table daemon_config_table;

/* Name of the MQTT target ferryd adds when the config names none. */
#define DAEMON_DEFAULT_TARGET "mqtt"

/* Loads and checks path, [target.NAME] sections included; on failure err
 * holds one line naming file, line and option. The config must be freed with daemon_config_free in
 * every case. */
__attribute__((warn_unused_result)) ferry_err
daemon_config_load(daemon_config *cfg, const char *path, char *err, size_t err_size);
void daemon_config_free(daemon_config *cfg);

/* Cross-option checks, after loading. */
__attribute__((warn_unused_result)) ferry_err daemon_config_check(const daemon_config *cfg,
                                                                  char *err, size_t err_size);

/* The fleet policy the config describes. */
void daemon_config_policy(const daemon_config *cfg, grant_policy *out);

#endif
