/*
 * sigv4.h - AWS Signature Version 4 for S3: pre-signed URLs, POST policies,
 * and verification of all three ways a request can carry a signature.
 *
 * What it is for: ferryd signs grants (pre-signed PUT/GET URLs, POST forms)
 * that work unchanged against the embedded store and any S3-compatible store,
 * and the embedded store verifies them. The output matches botocore byte for
 * byte (the AWS SigV4 test suite and boto3 are the oracles, see tests/).
 *
 * Invariants:
 * - Pure code: no I/O, no clock, no globals. Every function that depends on
 *   the time takes `now` (UTC seconds since the epoch) from the caller.
 * - A sigv4_signer caches the derived signing key for one (date, region,
 *   service) and wipes it (OPENSSL_cleanse) when the date changes or the
 *   signer is freed. A signer is NOT thread-safe: give each thread its own
 *   (they are cheap). Verifiers are read-only and may be shared.
 * - Every input from outside is bounded (SIGV4_MAX_*) and checked; a bad
 *   input is a refusal with a reason, never a crash.
 * - Signatures are compared with CRYPTO_memcmp; secrets and signing keys are
 *   wiped after use and never logged.
 *
 * Encoding conventions (S3's, not the generic SigV4 ones): paths are
 * URI-encoded once ('/' kept, no normalisation of "." or "//"); query names
 * and values are encoded with everything but A-Z a-z 0-9 - . _ ~ escaped.
 * Callers pass paths, keys and parameters raw (unencoded, UTF-8).
 */
#ifndef FERRY_SIGV4_H
#define FERRY_SIGV4_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "ferry/ferry_error.h"

#define SIGV4_ALGORITHM "AWS4-HMAC-SHA256"
#define SIGV4_UNSIGNED_PAYLOAD "UNSIGNED-PAYLOAD"

#define SIGV4_MIN_EXPIRES_S 1
#define SIGV4_MAX_EXPIRES_S 604800 /* one week, S3's limit */
#define SIGV4_MAX_SKEW_S 900       /* header auth: +-15 minutes */

#define SIGV4_MAX_ACCESS_KEY_LEN 128
#define SIGV4_MAX_SECRET_LEN 128
#define SIGV4_MAX_REGION_LEN 64
#define SIGV4_MAX_SERVICE_LEN 32
#define SIGV4_MAX_PATH_LEN 8192   /* raw path as received (S3 keys are <= 1024 bytes) */
#define SIGV4_MAX_QUERY_LEN 16384 /* raw query string as received */
#define SIGV4_MAX_PARAMS 64       /* query parameters */
#define SIGV4_MAX_HEADERS 128     /* request headers looked at */
#define SIGV4_MAX_HEADER_LEN 8192 /* one header value */
#define SIGV4_MAX_POLICY_LEN 20480 /* base64 POST policy: S3's 20 KB */
#define SIGV4_MAX_FORM_FIELDS 64

/* A name/value pair: a header, a query parameter, a form field. Borrowed. */
typedef struct sigv4_kv {
    const char *name;
    const char *value;
} sigv4_kv;

/* ---------------------------------------------------------------------- */
/* Signing                                                                  */

typedef struct sigv4_signer sigv4_signer;

/* Copies its arguments. NULL on bad arguments (empty, too long, control
 * characters or '/' in the access key, region or service) or out of memory. */
sigv4_signer *sigv4_signer_new(const char *access_key_id, const char *secret, const char *region,
                               const char *service);
/* Wipes the secret and the cached signing key. Safe on NULL. */
void sigv4_signer_free(sigv4_signer *signer);

typedef struct sigv4_presign_params {
    const char *method;   /* "PUT", "GET", ... (upper-case token) */
    const char *endpoint; /* "https://host[:port]", no path; the host header is
                             derived from it the way botocore does */
    const char *path;     /* raw path starting with '/', e.g. "/bucket/my key" */
    int64_t expires_s;    /* SIGV4_MIN_EXPIRES_S .. SIGV4_MAX_EXPIRES_S */
    const sigv4_kv *headers; /* headers to bind (besides host), raw values */
    size_t n_headers;
    const sigv4_kv *query; /* extra signed query parameters, raw */
    size_t n_query;
} sigv4_presign_params;

/* Appends the pre-signed URL to url_out (left as it was on failure).
 * FERRY_ERR_RANGE for an expiry out of range, FERRY_ERR_INVALID for a
 * malformed argument (a "host" header, an X-Amz-* auth parameter among the
 * extra query parameters, CR/LF in a value, ...). */
__attribute__((warn_unused_result)) ferry_err sigv4_presign(sigv4_signer *signer,
                                                            const sigv4_presign_params *p,
                                                            int64_t now, ferry_buf *url_out);

typedef struct sigv4_post_params {
    const char *endpoint; /* "https://host[:port]"; the form posts to endpoint/bucket */
    const char *bucket;
    const char *key;         /* the object key; with key_is_prefix, the prefix */
    bool key_is_prefix;      /* condition ["starts-with", "$key", key]; the key
                                field is key + "${filename}" as S3 documents */
    int64_t expires_s;       /* SIGV4_MIN_EXPIRES_S .. SIGV4_MAX_EXPIRES_S */
    /* content-length-range [length_min, length_max], always in the policy
     * unless length_max is negative (no size limit: not recommended). A
     * zeroed struct therefore allows only empty files: fail closed. */
    int64_t length_min;
    int64_t length_max;
    const char *content_type; /* exact Content-Type condition and field; NULL: none */
    const sigv4_kv *fields;   /* extra fields bound exactly (x-amz-meta-*,
                                 x-amz-checksum-sha256, success_action_status...) */
    size_t n_fields;
} sigv4_post_params;

/* A POST form as boto3's generate_presigned_post returns it: the URL to post
 * to and the fields to send (in order) before the file. Owns its strings. */
typedef struct sigv4_form_field {
    char *name;
    char *value;
} sigv4_form_field;

typedef struct sigv4_form {
    char *url;
    sigv4_form_field *fields;
    size_t n_fields;
    int64_t expires_at; /* the policy's expiration */
} sigv4_form;

void sigv4_form_init(sigv4_form *form);
void sigv4_form_cleanup(sigv4_form *form); /* safe on NULL and twice */

/* Builds the policy, signs it and fills *out (which must be initialised and
 * empty; written only on success). */
__attribute__((warn_unused_result)) ferry_err sigv4_post_policy(sigv4_signer *signer,
                                                                const sigv4_post_params *p,
                                                                int64_t now, sigv4_form *out);

/* ---------------------------------------------------------------------- */
/* Verification                                                             */

/* Why a request was refused. Each maps to one S3 error code and HTTP status
 * (sigv4_reason_s3_code / sigv4_reason_http_status). */
typedef enum sigv4_reason {
    SIGV4_R_OK = 0,
    SIGV4_R_NO_AUTH,                /* no signature of any kind */
    SIGV4_R_AMBIGUOUS_AUTH,         /* both an Authorization header and X-Amz-* query auth */
    SIGV4_R_MALFORMED_REQUEST,      /* path/query not decodable, too long, too many parts */
    SIGV4_R_AUTH_HEADER_MALFORMED,  /* Authorization header unparseable */
    SIGV4_R_UNSUPPORTED_ALGORITHM,  /* not AWS4-HMAC-SHA256 */
    SIGV4_R_QUERY_PARAM_MISSING,    /* an X-Amz-* auth parameter is missing */
    SIGV4_R_QUERY_PARAM_DUPLICATE,  /* an auth parameter appears twice */
    SIGV4_R_CREDENTIAL_MALFORMED,   /* not akid/yyyymmdd/region/service/aws4_request */
    SIGV4_R_CREDENTIAL_DATE,        /* scope date is not the date of X-Amz-Date */
    SIGV4_R_WRONG_REGION,           /* scope region is not ours */
    SIGV4_R_WRONG_SERVICE,          /* scope service is not ours */
    SIGV4_R_DATE_MISSING,           /* header auth without x-amz-date */
    SIGV4_R_DATE_MALFORMED,         /* X-Amz-Date not YYYYMMDDTHHMMSSZ */
    SIGV4_R_EXPIRES_MALFORMED,      /* X-Amz-Expires not a number, or < 1 */
    SIGV4_R_EXPIRES_TOO_LARGE,      /* X-Amz-Expires > 604800 */
    SIGV4_R_NOT_YET_VALID,          /* query auth dated in the future */
    SIGV4_R_EXPIRED,                /* query auth past X-Amz-Date + X-Amz-Expires */
    SIGV4_R_SKEWED,                 /* header auth outside +-15 minutes */
    SIGV4_R_SIGNED_HEADERS_MALFORMED, /* empty, unsorted, duplicated, bad names */
    SIGV4_R_HOST_NOT_SIGNED,        /* host is not among the signed headers */
    SIGV4_R_SIGNED_HEADER_MISSING,  /* a signed header is absent from the request */
    SIGV4_R_UNSIGNED_HEADER,        /* an x-amz-* header present but not signed */
    SIGV4_R_CONTENT_SHA256_MISSING, /* header auth without x-amz-content-sha256 */
    SIGV4_R_CONTENT_SHA256_INVALID, /* neither 64 hex digits nor UNSIGNED-PAYLOAD */
    SIGV4_R_UNSUPPORTED_PAYLOAD,    /* aws-chunked streaming signatures */
    SIGV4_R_UNKNOWN_ACCESS_KEY,     /* the lookup callback does not know the key */
    SIGV4_R_SIGNATURE_MALFORMED,    /* not 64 characters */
    SIGV4_R_SIGNATURE_MISMATCH,     /* the signature does not match */
    SIGV4_R_FORM_MALFORMED,         /* POST: duplicated or oversized fields */
    SIGV4_R_FORM_FIELD_MISSING,     /* POST: x-amz-credential/-date/-signature missing */
    SIGV4_R_POLICY_MISSING,         /* POST: no policy field */
    SIGV4_R_POLICY_TOO_LARGE,       /* POST: policy over 20 KB */
    SIGV4_R_POLICY_BASE64,          /* POST: policy is not valid base64 */
    SIGV4_R_POLICY_JSON,            /* POST: policy is not a valid policy document */
    SIGV4_R_POLICY_EXPIRED,         /* POST: past the policy's expiration */
    SIGV4_R_POLICY_CONDITION,       /* POST: a condition does not hold */
    SIGV4_R_POLICY_EXTRA_FIELD,     /* POST: a field no condition covers */
    SIGV4_R_ENTITY_TOO_SMALL,       /* POST: size below content-length-range */
    SIGV4_R_ENTITY_TOO_LARGE,       /* POST: size above content-length-range */
    SIGV4_R_INTERNAL,               /* out of memory or a crypto failure */
    SIGV4_R__COUNT
} sigv4_reason;

/* "SignatureDoesNotMatch", "AccessDenied", ...; never NULL. */
const char *sigv4_reason_s3_code(sigv4_reason r);
/* 400, 403, 500, ... */
int sigv4_reason_http_status(sigv4_reason r);
/* The S3-style human message ("Request has expired"); never NULL. */
const char *sigv4_reason_message(sigv4_reason r);
/* The enum's name without prefix ("SIGNATURE_MISMATCH"), for logs and tests. */
const char *sigv4_reason_name(sigv4_reason r);

/* Finds the secret for an access key id. Writes the secret into secret_out
 * (cap SIGV4_MAX_SECRET_LEN; the verifier wipes it) and returns FERRY_OK, or
 * FERRY_ERR_NOT_FOUND for an unknown key; any other error is an internal
 * failure. Called at most once per verification, only after the request
 * parsed and its scope and date were checked. */
typedef ferry_err (*sigv4_secret_fn)(void *ctx, const char *access_key_id, ferry_buf *secret_out);

typedef struct sigv4_verifier {
    const char *region;  /* the region requests must be scoped to */
    const char *service; /* "s3" */
    sigv4_secret_fn lookup;
    void *lookup_ctx;
} sigv4_verifier;

/* A request as the HTTP server saw it. */
typedef struct sigv4_request {
    const char *method;
    const char *path;  /* raw path as on the wire (percent-encoded), from '/' */
    const char *query; /* raw query string without '?', NULL or "" for none */
    const sigv4_kv *headers; /* all request headers, any case, duplicates allowed */
    size_t n_headers;
    /* Header auth: the payload hash to put in the canonical request. NULL
     * means S3's rule: the x-amz-content-sha256 header's value (required). */
    const char *payload_hash;
} sigv4_request;

/* What verification concluded. Unlike ordinary out-parameters it is written
 * in every case: on refusal it says why. Contains no secret. */
typedef struct sigv4_verdict {
    sigv4_reason reason;
    char detail[160]; /* the header/field/parameter concerned, or "" */
    char access_key_id[SIGV4_MAX_ACCESS_KEY_LEN + 1];
    int64_t signed_at;  /* X-Amz-Date */
    int64_t expires_at; /* query: date + expires; POST: policy expiration; header: 0 */
    char payload_sha256[65]; /* header auth: the signed body hash the store must
                                check, "" for UNSIGNED-PAYLOAD or query auth */
    int64_t length_min; /* POST: content-length-range, -1 when none */
    int64_t length_max;
} sigv4_verdict;

/* Each returns FERRY_OK when the request is authentic and in time,
 * FERRY_ERR_AUTH when it is refused (verdict->reason says why) and
 * FERRY_ERR_NOMEM / FERRY_ERR_CRYPTO / FERRY_ERR_INTERNAL (reason
 * SIGV4_R_INTERNAL) when the check itself could not be made. */

/* Authorization: AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=... */
__attribute__((warn_unused_result)) ferry_err sigv4_verify_header(const sigv4_verifier *v,
                                                                  const sigv4_request *req,
                                                                  int64_t now,
                                                                  sigv4_verdict *verdict);
/* X-Amz-Algorithm=...&X-Amz-Credential=...&...&X-Amz-Signature=... */
__attribute__((warn_unused_result)) ferry_err sigv4_verify_query(const sigv4_verifier *v,
                                                                 const sigv4_request *req,
                                                                 int64_t now,
                                                                 sigv4_verdict *verdict);
/* Whichever of the two the request carries (SIGV4_R_NO_AUTH if neither,
 * SIGV4_R_AMBIGUOUS_AUTH if both). */
__attribute__((warn_unused_result)) ferry_err sigv4_verify_request(const sigv4_verifier *v,
                                                                   const sigv4_request *req,
                                                                   int64_t now,
                                                                   sigv4_verdict *verdict);

/* A browser-style POST form: every field before the file, as received. */
typedef struct sigv4_post_form {
    const char *bucket; /* from the URL the form was posted to */
    const sigv4_kv *fields;
    size_t n_fields;
    int64_t content_length; /* the file's size if known, -1 to check later
                               with sigv4_post_check_length() */
} sigv4_post_form;

/* Checks the policy's signature, expiration and every condition, and that
 * every field is covered by a condition (except x-amz-signature, file,
 * policy, x-ignore-*, and the V2 fields AWSAccessKeyId and signature). */
__attribute__((warn_unused_result)) ferry_err sigv4_verify_post(const sigv4_verifier *v,
                                                                const sigv4_post_form *form,
                                                                int64_t now,
                                                                sigv4_verdict *verdict);
/* After streaming the file: SIGV4_R_OK, or ENTITY_TOO_SMALL/_LARGE against
 * the content-length-range a successful sigv4_verify_post() recorded. */
sigv4_reason sigv4_post_check_length(const sigv4_verdict *verdict, int64_t length);

/* ---------------------------------------------------------------------- */
/* Building blocks, exposed for tests, fuzzers and clients that sign
 * requests with an Authorization header.                                   */

/* The canonical request of req for the given signed-headers list
 * ("host;x-amz-date") and payload hash. Refusals come back as
 * FERRY_ERR_INVALID with *reason set (also written on success: SIGV4_R_OK). */
__attribute__((warn_unused_result)) ferry_err
sigv4_canonical_request(const sigv4_request *req, const char *signed_headers,
                        const char *payload_hash, const char *skip_query_param,
                        ferry_buf *out, sigv4_reason *reason);

/* "AWS4-HMAC-SHA256\n<amz_date>\n<scope>\n<hex sha256(creq)>" */
__attribute__((warn_unused_result)) ferry_err sigv4_string_to_sign(const char *amz_date,
                                                                   const char *scope,
                                                                   const char *creq,
                                                                   size_t creq_len,
                                                                   ferry_buf *out);

/* The Authorization header value for req, signing every header listed in
 * signed_headers (which must be sorted, lower-case, ';'-separated). amz_date
 * is "YYYYMMDDTHHMMSSZ" and should match the request's x-amz-date header. */
__attribute__((warn_unused_result)) ferry_err
sigv4_authorization(const char *access_key_id, const char *secret, const char *region,
                    const char *service, const char *amz_date, const sigv4_request *req,
                    const char *signed_headers, const char *payload_hash, ferry_buf *out);

/* Parsers of untrusted input, each bounded (fuzzed in tests/fuzz/). */

typedef struct sigv4_auth_header {
    char algorithm[32];
    char credential[SIGV4_MAX_ACCESS_KEY_LEN + SIGV4_MAX_REGION_LEN + SIGV4_MAX_SERVICE_LEN + 32];
    char signed_headers[1024];
    char signature[65];
} sigv4_auth_header;

/* Parses an Authorization header value. SIGV4_R_OK or the reason. */
sigv4_reason sigv4_parse_auth_header(const char *value, sigv4_auth_header *out);

typedef struct sigv4_scope {
    char access_key_id[SIGV4_MAX_ACCESS_KEY_LEN + 1];
    char date[9];
    char region[SIGV4_MAX_REGION_LEN + 1];
    char service[SIGV4_MAX_SERVICE_LEN + 1];
} sigv4_scope;

/* Parses "akid/yyyymmdd/region/service/aws4_request". */
sigv4_reason sigv4_parse_credential(const char *credential, sigv4_scope *out);

/* A parsed query string: names and values percent-decoded, in order. */
typedef struct sigv4_query {
    size_t n;
    struct {
        char *name;
        char *value;
        size_t name_len, value_len; /* decoded values may contain any byte but NUL */
    } params[SIGV4_MAX_PARAMS];
    char *storage;
} sigv4_query;

/* SIGV4_R_OK, SIGV4_R_MALFORMED_REQUEST (bad escape, NUL, too long, too many)
 * or SIGV4_R_INTERNAL (out of memory). On success the caller must
 * sigv4_query_cleanup(); on failure there is nothing to free. */
sigv4_reason sigv4_parse_query(const char *query, sigv4_query *out);
void sigv4_query_cleanup(sigv4_query *q);

/* A decoded POST policy document. */
typedef struct sigv4_policy sigv4_policy;

/* Decodes and checks a base64 policy document: SIGV4_R_OK and *out (free with
 * sigv4_policy_free), or POLICY_TOO_LARGE / POLICY_BASE64 / POLICY_JSON. */
sigv4_reason sigv4_policy_parse(const char *b64, size_t b64_len, sigv4_policy **out);
void sigv4_policy_free(sigv4_policy *policy);
int64_t sigv4_policy_expiration(const sigv4_policy *policy);

#endif
