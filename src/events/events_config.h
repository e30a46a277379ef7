/*
 * events_config.h - the [target.NAME] sections of ferryd's configuration:
 * one section per delivery target, read through the config loader's
 * unknown-section callback (src/common/config.h), checked as a whole after
 * the load, and turned into events targets.
 *
 *   [target.archive]
 *   type        = webhook          ; webhook | command | mqtt
 *   url         = https://archive.example.org/ferry
 *   ca_file     = /etc/ferry/archive-ca.pem
 *   secret_file = /etc/ferry/archive-hook.secret
 *
 * Keys (docs/events.md §3): type (required); webhook: url (required),
 * secret_file (required), ca_file, connect_timeout; command: command
 * (required, a path), args (split on spaces, no shell), kill_grace,
 * stdout_max, send_processed; mqtt: topic (default
 * <prefix>/events/object-created); every type: timeout, max_attempts,
 * retry_min, retry_max. Durations take ms/s/m/h/d suffixes (a bare number
 * is seconds), sizes K/M/G.
 *
 * Invariants: every value is bounded and checked when read, with the
 * section and key in the message; a key set twice, a key that does not
 * belong to the section's type, or a target left incomplete is an error
 * at start-up, not at the first event. The secret file is read only when
 * the target is built, and its bytes are wiped after being copied.
 */
#ifndef FERRY_EVENTS_CONFIG_H
#define FERRY_EVENTS_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "events.h"

#define EVENTS_MAX_TARGETS     32
#define EVENTS_MAX_TARGET_NAME 64
#define EVENTS_MAX_ARGS        32

typedef enum events_target_type {
    EVENTS_TARGET_UNSET = 0,
    EVENTS_TARGET_WEBHOOK,
    EVENTS_TARGET_COMMAND,
    EVENTS_TARGET_MQTT,
} events_target_type;

typedef struct events_target_spec {
    char *name; /* NAME of [target.NAME] */
    events_target_type type;
    char *url, *ca_file, *secret_file; /* webhook */
    char *argv[EVENTS_MAX_ARGS + 2];   /* command: program, args, NULL */
    char *topic;                       /* mqtt */
    int64_t timeout_ms;
    int64_t connect_timeout_ms;
    int64_t kill_grace_ms;
    int64_t stdout_max;
    bool send_processed; /* command: result -> device's processed message */
    events_retry_policy retry;
    unsigned set_mask; /* which keys were given (internal: duplicate check) */
} events_target_spec;

typedef struct events_config {
    events_target_spec targets[EVENTS_MAX_TARGETS];
    size_t count;
    events_retry_policy retry_default; /* for targets that set none; zero: EVENTS_RETRY_DEFAULT */
} events_config;

void events_config_init(events_config *config);
void events_config_cleanup(events_config *config); /* safe on NULL and twice */

/* A ferry_cfg_section_fn: pass it with an events_config as ctx. Accepts
 * sections named "target.NAME"; anything else is an unknown section. */
int events_config_section(void *ctx, const char *section, const char *name, const char *value,
                          char *err, size_t err_size);

/* After the load: every target complete and consistent; fills defaults
 * (the MQTT topic from mqtt_prefix, timeouts, the retry policy). */
__attribute__((warn_unused_result)) ferry_err
events_config_check(events_config *config, const char *mqtt_prefix, char *err, size_t err_size);

/* Builds one target from a checked spec. link is needed for mqtt targets
 * (borrowed: it must outlive the target). */
struct broker_link;
__attribute__((warn_unused_result)) ferry_err
events_target_from_spec(const events_target_spec *spec, struct broker_link *link,
                        events_target **out, char *err, size_t err_size);

const char *events_target_type_name(events_target_type type);

#endif
