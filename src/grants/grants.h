/*
 * grants.h - the grant service core: upload requests parsed strictly,
 * device names made into safe key components, per-device policy, the rate
 * limiter, grant ids and object keys.
 *
 * Everything here is pure (no I/O; the clock is passed in) apart from
 * grant_id_new(), which draws from RAND_bytes. docs/protocol.md is the
 * reference for the wire formats and the rejection codes.
 *
 * Invariants:
 *   - Nothing that leaves this module in a grant_rejection contains raw
 *     device bytes: the echoed id is checked printable ASCII, messages are
 *     built from fixed text and our own field names.
 *   - A grant_request that parsed is fully validated: its name is already
 *     the sanitised key component, its content type lower-cased and checked,
 *     its size in 1..2^53, its sha256 (when present) 64 lower-case hex.
 *   - Object keys are built only from a validated device id, the date, a
 *     grant id of ours and a sanitised name: the device never chooses them.
 */
#ifndef FERRY_GRANTS_H
#define FERRY_GRANTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ferry/ferry_error.h"
#include "ledger/ledger.h"

#define GRANT_MESSAGE_MAX_BYTES 16384 /* request messages larger than this are refused */
#define GRANT_REQ_ID_MAX        128   /* the device's correlation id: 1..128 printable ASCII */
#define GRANT_NAME_IN_MAX       1024  /* names longer than this (bytes) are refused */
#define GRANT_SAFE_NAME_MAX     200   /* sanitised names are cut to this many bytes */
#define GRANT_CONTENT_TYPE_MAX  127
#define GRANT_SIZE_MAX          (UINT64_C(1) << 53) /* the largest integer a JSON double holds exactly */
#define GRANT_SHA256_HEX_LEN    64
#define GRANT_SHA256_B64_LEN    44
#define GRANT_ID_LEN            28 /* "g_" + 26 Crockford base32 characters */
#define GRANT_DEVICE_MAX        128
#define GRANT_REJECT_MSG_MAX    200
#define GRANT_EXPIRY_CAP_S      604800 /* 7 days: SigV4's own limit for pre-signed URLs */
#define GRANT_KEY_MAX           LEDGER_KEY_MAX

/* Rejection codes. The names (grant_reject_code_str) are part of the
 * protocol and never change; new codes are only appended. */
typedef enum grant_reject_code {
    GRANT_REJECT_NONE = 0,               /* "None": not a rejection */
    GRANT_REJECT_MALFORMED_JSON,         /* "MalformedJson" */
    GRANT_REJECT_MESSAGE_TOO_LARGE,      /* "MessageTooLarge" */
    GRANT_REJECT_DUPLICATE_KEY,          /* "DuplicateKey" */
    GRANT_REJECT_MISSING_FIELD,          /* "MissingField" */
    GRANT_REJECT_INVALID_FIELD,          /* "InvalidField" */
    GRANT_REJECT_UNKNOWN_FIELD,          /* "UnknownField" */
    GRANT_REJECT_UNSAFE_NAME,            /* "UnsafeName" */
    GRANT_REJECT_TOO_LARGE,              /* "TooLarge" */
    GRANT_REJECT_CONTENT_TYPE,           /* "ContentTypeNotAllowed" */
    GRANT_REJECT_QUOTA_EXCEEDED,         /* "QuotaExceeded" */
    GRANT_REJECT_RATE_LIMITED,           /* "RateLimited" */
    GRANT_REJECT_TOO_MANY_OPEN_GRANTS,   /* "TooManyOpenGrants" */
    GRANT_REJECT_DEVICE_DISABLED,        /* "DeviceDisabled" */
    GRANT_REJECT_INVALID_RESPONSE_TOPIC, /* "InvalidResponseTopic" */
    GRANT_REJECT_INTERNAL,               /* "Internal" */
    GRANT_REJECT__COUNT
} grant_reject_code;

/* The code's protocol name; "Internal" for values out of range. */
const char *grant_reject_code_str(grant_reject_code code);

/* A rejection to send back: the device's id when it was valid (else the
 * answer carries "id": null), a code and a message safe to echo. */
typedef struct grant_rejection {
    grant_reject_code code;
    bool has_id;
    char id[GRANT_REQ_ID_MAX + 1];
    char message[GRANT_REJECT_MSG_MAX + 1];
} grant_rejection;

/* Empties rej and sets its id (NULL: no id). An id that is not 1..128
 * printable ASCII is treated as no id. */
void grant_rejection_init(grant_rejection *rej, const char *id);
/* Sets code and message (printf-style, truncated to fit) and keeps the id.
 * Callers must not pass device bytes as arguments. */
__attribute__((format(printf, 3, 4))) void
grant_reject(grant_rejection *rej, grant_reject_code code, const char *fmt, ...);
/* {"type":"rejected","id":…,"code":…,"message":…} as a malloc'ed string
 * the caller frees. */
__attribute__((warn_unused_result)) ferry_err grant_rejection_json(const grant_rejection *rej,
                                                                   char **out);

typedef enum grant_method {
    GRANT_METHOD_AUTO = 0,
    GRANT_METHOD_PUT,
    GRANT_METHOD_POST,
} grant_method;

/* "auto", "PUT", "POST". */
const char *grant_method_str(grant_method m);

/* A validated upload request. */
typedef struct grant_request {
    char id[GRANT_REQ_ID_MAX + 1];
    char name[GRANT_SAFE_NAME_MAX + 1]; /* already sanitised (grant_safe_name) */
    uint64_t size;
    char content_type[GRANT_CONTENT_TYPE_MAX + 1]; /* lower-cased */
    bool has_sha256;
    char sha256_hex[GRANT_SHA256_HEX_LEN + 1]; /* lower-case */
    char sha256_b64[GRANT_SHA256_B64_LEN + 1]; /* for x-amz-checksum-sha256 */
    grant_method method;
} grant_request;

/*
 * Parses and validates one request message (msg need not be NUL-terminated).
 * FERRY_OK: *out is filled, rej untouched. FERRY_ERR_INVALID: rej is filled
 * (code, safe message, the id when it was readable and valid), *out
 * untouched. FERRY_ERR_NOMEM: rej says Internal.
 */
__attribute__((warn_unused_result)) ferry_err
grant_request_parse(const char *msg, size_t msg_len, grant_request *out, grant_rejection *rej);

/*
 * Sanitises a device-supplied name (len bytes, may contain NUL) into a key
 * component of at most GRANT_SAFE_NAME_MAX bytes written to out (out_size >=
 * GRANT_SAFE_NAME_MAX + 1). The rule is in docs/protocol.md:
 *   refused (FERRY_ERR_INVALID, *reason set to a fixed message): empty,
 *     over GRANT_NAME_IN_MAX bytes, invalid UTF-8 (overlong forms,
 *     surrogates, > U+10FFFF, truncated), NUL or any other control
 *     character (C0, DEL, C1), '/', '\\', "..";
 *   replaced by '_': a leading '.', ASCII other than letters, digits and
 *     ".-_", and non-ASCII spaces, invisible format characters, private
 *     use and noncharacters;
 *   kept: ASCII letters, digits, ".-_" and all other non-ASCII characters;
 *   then cut to GRANT_SAFE_NAME_MAX bytes on a character boundary, keeping
 *     an extension of up to 16 bytes.
 * On FERRY_OK only out is written; on refusal only *reason (may be NULL).
 */
__attribute__((warn_unused_result)) ferry_err
grant_safe_name(const char *name, size_t len, char *out, size_t out_size, const char **reason);

/* A device id usable as the first key component and topic level: 1..128
 * bytes of ASCII letters, digits, ".-_", not starting with '.', no "..". */
bool grant_device_id_valid(const char *device);

/* The effective policy of one device. Zero in max_open_grants,
 * daily_quota_bytes or rate_per_s means "no limit". */
typedef struct grant_policy {
    uint64_t max_size_bytes;
    char content_types[LEDGER_CONTENT_TYPES_MAX + 1]; /* comma-separated patterns, see below */
    int64_t expiry_min_s;
    int64_t expiry_base_s;
    int64_t expiry_max_s;
    uint64_t min_bandwidth_bps; /* bytes per second the slowest device sustains */
    uint64_t max_open_grants;
    double rate_per_s; /* requests per second, refilled continuously */
    double rate_burst; /* bucket size */
    uint64_t daily_quota_bytes;
    uint64_t put_max_bytes; /* "auto" picks PUT up to this size, POST above */
    bool disabled;
} grant_policy;

/* Fleet defaults a daemon starts from before reading its config (documented
 * in docs/protocol.md). */
void grant_policy_defaults(grant_policy *p);
/* Checks a policy is coherent (min <= base, min <= max <= 7 days, patterns
 * well formed, rate and burst sensible). On failure *why (may be NULL)
 * names the problem. */
__attribute__((warn_unused_result)) ferry_err grant_policy_validate(const grant_policy *p,
                                                                    const char **why);
/* out = fleet with dev's overrides applied (dev may be NULL). out may alias
 * fleet. */
void grant_policy_merge(const grant_policy *fleet, const ledger_device *dev, grant_policy *out);
/* clamp(min, base + ceil(size / bandwidth), max), never over 604800. */
int64_t grant_policy_expiry_s(const grant_policy *p, uint64_t size);
/*
 * The request-only checks, in this order: disabled (DeviceDisabled), size
 * over max_size_bytes (TooLarge), content type not matching any pattern
 * (ContentTypeNotAllowed). FERRY_OK when allowed; FERRY_ERR_DENIED with rej
 * filled (id taken from req) when not.
 */
__attribute__((warn_unused_result)) ferry_err
grant_policy_check(const grant_policy *p, const grant_request *req, grant_rejection *rej);
/* Whether content_type (lower-case type/subtype) matches one of the
 * comma-separated patterns. A pattern is "type/subtype" (exact), "type/"
 * followed by a star (any subtype of type), or a star, slash, star (any);
 * compared case-insensitively, spaces around commas ignored. */
bool grant_content_type_allowed(const char *patterns, const char *content_type);
/* The limits the ledger re-checks when it inserts a grant issued at now. */
void grant_policy_limits(const grant_policy *p, int64_t now, ledger_limits *out);
/* UTC midnight of the day that contains t. */
int64_t grant_day_start(int64_t t);
/* Explicit put/post are honoured; auto is PUT when size <= put_max_bytes,
 * else POST. Never returns GRANT_METHOD_AUTO. */
grant_method grant_method_choose(const grant_policy *p, grant_method requested, uint64_t size);

/* A token bucket per device, in a bounded hash table. Thread-safe. */
typedef struct grant_rate_limiter grant_rate_limiter;

/* max_entries >= 1: devices tracked at once. When full, devices whose
 * bucket has refilled completely are forgotten first (they lose nothing);
 * if none has, the one idle longest is. */
__attribute__((warn_unused_result)) ferry_err grant_rate_limiter_new(size_t max_entries,
                                                                     grant_rate_limiter **out);
/* Safe on NULL. */
void grant_rate_limiter_free(grant_rate_limiter *rl);
/* Takes one token from device's bucket (created full with burst tokens).
 * rate_per_s <= 0 means unlimited (always allowed, nothing tracked).
 * now_ns: a monotonic clock (ferry_time_mono_ns). */
__attribute__((warn_unused_result)) ferry_err grant_rate_take(grant_rate_limiter *rl,
                                                              const char *device, double rate_per_s,
                                                              double burst, int64_t now_ns,
                                                              bool *allowed);
/* Devices currently tracked (for tests and status). */
size_t grant_rate_limiter_count(grant_rate_limiter *rl);

/* A fresh grant id: "g_" + 26 lower-case Crockford base32 characters
 * encoding 128 bits: the issue time in milliseconds (48 bits, so ids sort
 * by time) and 80 bits from RAND_bytes. URL-safe and key-safe. */
__attribute__((warn_unused_result)) ferry_err grant_id_new(char out[GRANT_ID_LEN + 1]);
/* Whether s has the shape of a grant id of ours. */
bool grant_id_valid(const char *s);

/* "<device>/<yyyy>/<mm>/<dd>/<grant-id>-<safe-name>" for the UTC date of
 * now. FERRY_ERR_INVALID if device, grant id or name is not valid,
 * FERRY_ERR_TOO_LARGE if out_size is too small. */
__attribute__((warn_unused_result)) ferry_err grant_object_key(const char *device, int64_t now,
                                                               const char *grant_id,
                                                               const char *safe_name, char *out,
                                                               size_t out_size);

/*
 * Fills a ledger record for an allowed request: a fresh grant id, the key,
 * bucket, chosen method, expiry from the policy, state issued at now.
 * Does not touch the ledger; the caller inserts it with
 * ledger_grant_insert(..., grant_policy_limits(...)).
 */
__attribute__((warn_unused_result)) ferry_err grant_build(const grant_policy *p,
                                                          const grant_request *req,
                                                          const char *device, const char *bucket,
                                                          int64_t now, ledger_grant *out);

#endif
