/*
 * events.h - object-created events: their JSON, the device messages, the
 * delivery targets and the retry policy. The outbox worker (ferryd) drives
 * this library; nothing here touches the ledger.
 *
 * What it is for: when an object is durably stored, ferryd tells processors
 * (an MQTT topic, an HTTPS webhook, a local command) in the shape S3 and
 * MinIO bucket notifications have, so processors written for those work
 * unchanged, and tells the device with a `receipt` and, when a processor
 * returns a result, a `processed` message. docs/events.md is the reference.
 *
 * Invariants:
 * - Builders are pure (no I/O, no clock): the event id (idempotency key),
 *   the per-key sequencer and the time are inputs that the outbox assigns,
 *   so a redelivered event is byte for byte the same event.
 * - Every string input is checked (present where required, bounded, valid
 *   UTF-8); a bad input is FERRY_ERR_INVALID / FERRY_ERR_TOO_LARGE, never a
 *   crash. Every message is capped (EVENTS_MAX_*).
 * - A target's deliver() says delivered / retry later / failed for good in
 *   an events_delivery; it returns an error only when it could not even try
 *   (out of memory, bad arguments): the caller treats that as "retry later".
 * - A target is driven by one thread at a time (the webhook keeps one curl
 *   handle for connection reuse); different targets may run in parallel.
 * - Secrets (the webhook's HMAC key) are copied, wiped on free and never
 *   logged.
 */
#ifndef FERRY_EVENTS_H
#define FERRY_EVENTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "ferry/ferry_error.h"

#define EVENTS_MAX_EVENT_LEN          (64 * 1024)      /* one event notification */
#define EVENTS_MAX_DEVICE_MESSAGE_LEN (128 * 1024 - 1) /* receipt / processed, < 128 KB */
#define EVENTS_MAX_KEY_LEN            1024             /* S3's key limit, in bytes */
#define EVENTS_MAX_FIELD_LEN          256              /* every other string field */
#define EVENTS_COMMAND_STDOUT_MAX     (64 * 1024)      /* default stdout cap of a command */
#define EVENTS_COMMAND_STDERR_MAX     (4 * 1024)       /* default stderr cap (logged) */
#define EVENTS_DEFAULT_EVENT_SOURCE   "aws:s3"
#define EVENTS_DEFAULT_TOPIC_SUFFIX   "/events/object-created"

/* ---------------------------------------------------------------------- */
/* The event                                                                */

typedef enum events_method {
    EVENTS_PUT = 0,   /* ObjectCreated:Put */
    EVENTS_POST,      /* ObjectCreated:Post */
    EVENTS_MULTIPART, /* ObjectCreated:CompleteMultipartUpload */
} events_method;

/* One stored object, as the outbox recorded it. Strings are borrowed, UTF-8.
 * Optional fields may be NULL; they are then written as S3 writes an
 * unknown value (see docs/events.md). */
typedef struct events_object {
    const char *event_id; /* required: the idempotency key, unique and stable */
    uint64_t sequencer;   /* required: per-key, grows with every event of a key */
    events_method method;
    int64_t time_ms;              /* when the object was stored, UTC milliseconds */
    const char *region;           /* required, e.g. "us-east-1" */
    const char *bucket;           /* required */
    const char *key;              /* required, raw (not encoded), <= EVENTS_MAX_KEY_LEN */
    int64_t size;                 /* bytes, >= 0 */
    const char *etag;             /* required; surrounding quotes are dropped as S3 does */
    const char *device;           /* required: the principal */
    const char *grant;            /* required */
    const char *sha256;           /* 64 hex digits or NULL */
    const char *content_type;     /* or NULL */
    const char *request_id;       /* the device's request "id", or NULL */
    const char *source_ip;        /* the uploader's address, or NULL */
    const char *store_request_id; /* the store's x-amz-request-id, or NULL */
    const char *event_source;     /* NULL: "aws:s3" (see docs/events.md) */
    const char *configuration_id; /* NULL: "ferry" */
    const char *bucket_owner;     /* NULL: "ferry" */
} events_object;

/* Appends the S3 event-notification JSON ({"Records":[{...}]}) for obj to
 * out (compact, at most EVENTS_MAX_EVENT_LEN bytes). On error out is left as
 * it was. */
__attribute__((warn_unused_result)) ferry_err events_format(const events_object *obj,
                                                            ferry_buf *out);

/* Appends key encoded as S3 encodes keys in notifications: form encoding,
 * a space becomes '+', every byte except A-Z a-z 0-9 - _ . ~ / becomes %XX.
 * (Python: urllib.parse.unquote_plus() gives the key back.) */
__attribute__((warn_unused_result)) ferry_err events_key_encode(const char *key, size_t key_len,
                                                                ferry_buf *out);

/* "ObjectCreated:Put" etc.; NULL for an unknown value. */
const char *events_method_name(events_method method);

/* ---------------------------------------------------------------------- */
/* Device messages (on the device's response topic)                        */

/* {"type":"receipt","id":…,"grant":…,"key":…,"size":…,"sha256":…,"etag":…}
 * from the same record the event was built from (the key raw, as the
 * device named it in its grant). */
__attribute__((warn_unused_result)) ferry_err events_receipt(const events_object *obj,
                                                             ferry_buf *out);

/* {"type":"processed","id":…,"grant":…,"key":…,"target":…,"result":{…}}.
 * result_json is what the processor printed: if it is not a JSON object,
 * or the message would reach 128 KB, "result" becomes
 * {"error":"<why>"} instead, so the device always learns that processing
 * happened. target names the processor (the target's name) or NULL. */
__attribute__((warn_unused_result)) ferry_err events_processed(const events_object *obj,
                                                               const char *target,
                                                               const char *result_json,
                                                               size_t result_len, ferry_buf *out);

/* ---------------------------------------------------------------------- */
/* Retry policy                                                             */

typedef struct events_retry_policy {
    int64_t min_ms;        /* first retry delay (before jitter) */
    int64_t max_ms;        /* cap on the delay */
    unsigned max_attempts; /* after this many failed attempts: dead-letter */
} events_retry_policy;

#define EVENTS_RETRY_DEFAULT                                                                       \
    {                                                                                              \
        .min_ms = 1000, .max_ms = 300000, .max_attempts = 10                                       \
    }

typedef enum events_next {
    EVENTS_NEXT_RETRY = 0,   /* try again at *next_ms */
    EVENTS_NEXT_DEAD_LETTER, /* give up: the event goes to dead-letter */
} events_next;

/* After `attempts` failed attempts (1 after the first failure), when to try
 * again: now_ms + min*2^(attempts-1) capped at max, with equal jitter (a
 * uniform draw from [d/2, d], random01 in [0,1)); or dead-letter once
 * attempts >= max_attempts. A policy with max_attempts 0 never retries.
 * *next_ms is written only for EVENTS_NEXT_RETRY. */
events_next events_next_attempt(const events_retry_policy *policy, unsigned attempts,
                                int64_t now_ms, double random01, int64_t *next_ms);

/* ---------------------------------------------------------------------- */
/* Targets                                                                  */

typedef enum events_outcome {
    EVENTS_DELIVERED = 0, /* the target has the event */
    EVENTS_RETRY_LATER,   /* a failure that may pass: back off and retry */
    EVENTS_FAILED,        /* will not pass by retrying: dead-letter now */
} events_outcome;

/* What one delivery attempt concluded. Initialise with
 * events_delivery_init(), release with events_delivery_cleanup(). */
typedef struct events_delivery {
    events_outcome outcome;
    char detail[256];  /* why, for the log and the dead-letter record; no secrets */
    char *result_json; /* command target: its stdout when that is a JSON
                          object (compact, NUL-terminated), else NULL */
    size_t result_len;
} events_delivery;

void events_delivery_init(events_delivery *d);
void events_delivery_cleanup(events_delivery *d); /* safe on NULL and twice */
const char *events_outcome_name(events_outcome outcome);

typedef struct events_target events_target;

/* Delivers one event (json, len bytes) with the given idempotency key,
 * giving up after timeout_ms. Writes *out (after cleaning it up) when it
 * returns FERRY_OK. */
__attribute__((warn_unused_result)) ferry_err
events_target_deliver(events_target *target, const char *event_id, const char *json, size_t len,
                      int64_t timeout_ms, events_delivery *out);
const char *events_target_name(const events_target *target);
const char *events_target_kind(const events_target *target); /* "webhook", "command", "mqtt" */
void events_target_free(events_target *target);

/* HTTPS webhook: POST of the event with
 *   Content-Type: application/json
 *   X-Ferry-Event-Id: <event id>
 *   X-Ferry-Signature: sha256=<lower-case hex HMAC-SHA256(secret, body)>
 * TLS always verified against cafile (NULL: the system's CAs); redirects
 * are not followed. 2xx: delivered. 408, 429, 5xx, no answer, transport
 * or TLS errors: retry later. Any other status (3xx, other 4xx): failed. */
typedef struct events_webhook_config {
    const char *name;            /* the target's name in logs */
    const char *url;             /* https:// only */
    const char *cafile;          /* PEM bundle, or NULL for the system's */
    const unsigned char *secret; /* HMAC key, copied and wiped on free */
    size_t secret_len;           /* 1..1024 bytes */
    int64_t connect_timeout_ms;  /* 0: 5000 */
} events_webhook_config;

__attribute__((warn_unused_result)) ferry_err
events_webhook_new(const events_webhook_config *config, events_target **out);

/* HMAC-SHA256 of body under secret as "sha256=<64 lower-case hex>" (the
 * X-Ferry-Signature value), NUL-terminated. Exposed for tests. */
__attribute__((warn_unused_result)) ferry_err events_webhook_signature(const unsigned char *secret,
                                                                       size_t secret_len,
                                                                       const void *body, size_t len,
                                                                       char out[7 + 64 + 1]);

/* Local command, like a Lambda: argv[0] is run directly (a path, no shell,
 * no PATH search) in its own process group with the event on stdin and the
 * daemon's environment. Exit 0: delivered, and stdout (capped at
 * stdout_max), if it is a JSON object, is the result for the device's
 * `processed` message. Other exit, a signal, or the timeout (SIGTERM to the
 * group, SIGKILL after kill_grace_ms): retry later. The program missing or
 * not executable: failed. stderr (capped) is logged. When the command
 * exits, whatever it left running in its process group is killed. */
typedef struct events_command_config {
    const char *name;
    const char *const *argv; /* argv[0] is the program; NULL-terminated */
    size_t stdout_max;       /* 0: EVENTS_COMMAND_STDOUT_MAX */
    size_t stderr_max;       /* 0: EVENTS_COMMAND_STDERR_MAX */
    int64_t kill_grace_ms;   /* 0: 2000 */
} events_command_config;

__attribute__((warn_unused_result)) ferry_err
events_command_new(const events_command_config *config, events_target **out);

/* MQTT topic: publish at QoS 1 through a broker link (borrowed: it must
 * outlive the target); delivered when the broker acknowledges (PUBACK with
 * a success reason code). No acknowledgement within the timeout: retry
 * later (the link keeps the message and may still deliver it: at least
 * once). PUBACK with an error reason (e.g. not authorised): failed. */
struct broker_link;
typedef struct events_mqtt_config {
    const char *name;
    struct broker_link *link;
    const char *topic; /* e.g. "<prefix>/events/object-created" */
} events_mqtt_config;

__attribute__((warn_unused_result)) ferry_err events_mqtt_new(const events_mqtt_config *config,
                                                              events_target **out);

#endif
