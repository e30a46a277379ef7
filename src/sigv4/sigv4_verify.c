/*
 * sigv4_verify.c - verification of header auth and query auth (pre-signed
 * URLs), the parsers of the Authorization header and the credential scope,
 * and the table mapping each refusal reason to S3's error code.
 *
 * Invariants:
 * - Checks run from cheapest to dearest, and the secret is looked up only
 *   once the request parsed and its scope and time are acceptable, so a
 *   flood of garbage never reaches the key store.
 * - The expected signature is computed in full and compared with
 *   CRYPTO_memcmp; the secret and derived key are wiped on every path.
 * - The verdict is always written, and carries no secret.
 */
#include "sigv4_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>

#include "common/timefmt.h"

typedef struct reason_info {
    const char *name;
    const char *code;
    int status;
    const char *message;
} reason_info;

static const reason_info reasons[SIGV4_R__COUNT] = {
    [SIGV4_R_OK] = {"OK", "OK", 200, "OK"},
    [SIGV4_R_NO_AUTH] = {"NO_AUTH", "AccessDenied", 403, "Access Denied"},
    [SIGV4_R_AMBIGUOUS_AUTH] = {"AMBIGUOUS_AUTH", "InvalidArgument", 400,
                                "Only one auth mechanism allowed; only the X-Amz-Algorithm "
                                "query parameter or the Authorization header should be specified"},
    [SIGV4_R_MALFORMED_REQUEST] = {"MALFORMED_REQUEST", "InvalidRequest", 400,
                                   "The request path or query string is malformed"},
    [SIGV4_R_AUTH_HEADER_MALFORMED] = {"AUTH_HEADER_MALFORMED", "AuthorizationHeaderMalformed",
                                       400, "The authorization header is malformed"},
    [SIGV4_R_UNSUPPORTED_ALGORITHM] = {"UNSUPPORTED_ALGORITHM",
                                       "AuthorizationQueryParametersError", 400,
                                       "Only AWS4-HMAC-SHA256 is supported"},
    [SIGV4_R_QUERY_PARAM_MISSING] = {"QUERY_PARAM_MISSING", "AuthorizationQueryParametersError",
                                     400,
                                     "Query-string authentication version 4 requires the "
                                     "X-Amz-Algorithm, X-Amz-Credential, X-Amz-Signature, "
                                     "X-Amz-Date, X-Amz-SignedHeaders, and X-Amz-Expires "
                                     "parameters"},
    [SIGV4_R_QUERY_PARAM_DUPLICATE] = {"QUERY_PARAM_DUPLICATE",
                                       "AuthorizationQueryParametersError", 400,
                                       "An authorization query parameter appears more than once"},
    [SIGV4_R_CREDENTIAL_MALFORMED] = {"CREDENTIAL_MALFORMED", "AuthorizationQueryParametersError",
                                      400,
                                      "Error parsing the X-Amz-Credential parameter; the "
                                      "credential is mal-formed; expecting "
                                      "\"<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request\""},
    [SIGV4_R_CREDENTIAL_DATE] = {"CREDENTIAL_DATE", "AuthorizationQueryParametersError", 400,
                                 "Invalid credential date. Date is not the same as X-Amz-Date."},
    [SIGV4_R_WRONG_REGION] = {"WRONG_REGION", "AuthorizationHeaderMalformed", 400,
                              "The authorization region is wrong for this endpoint"},
    [SIGV4_R_WRONG_SERVICE] = {"WRONG_SERVICE", "AuthorizationHeaderMalformed", 400,
                               "The authorization service is wrong for this endpoint"},
    [SIGV4_R_DATE_MISSING] = {"DATE_MISSING", "AccessDenied", 403,
                              "AWS authentication requires a valid Date or x-amz-date header"},
    [SIGV4_R_DATE_MALFORMED] = {"DATE_MALFORMED", "AuthorizationQueryParametersError", 400,
                                "X-Amz-Date must be in the ISO8601 Long Format "
                                "\"yyyyMMdd'T'HHmmss'Z'\""},
    [SIGV4_R_EXPIRES_MALFORMED] = {"EXPIRES_MALFORMED", "AuthorizationQueryParametersError", 400,
                                   "X-Amz-Expires should be a number between 1 and 604800"},
    [SIGV4_R_EXPIRES_TOO_LARGE] = {"EXPIRES_TOO_LARGE", "AuthorizationQueryParametersError", 400,
                                   "X-Amz-Expires must be less than a week (in seconds) that "
                                   "is 604800"},
    [SIGV4_R_NOT_YET_VALID] = {"NOT_YET_VALID", "AccessDenied", 403, "Request is not valid yet"},
    [SIGV4_R_EXPIRED] = {"EXPIRED", "AccessDenied", 403, "Request has expired"},
    [SIGV4_R_SKEWED] = {"SKEWED", "RequestTimeTooSkewed", 403,
                        "The difference between the request time and the current time is too "
                        "large."},
    [SIGV4_R_SIGNED_HEADERS_MALFORMED] = {"SIGNED_HEADERS_MALFORMED",
                                          "AuthorizationHeaderMalformed", 400,
                                          "SignedHeaders must be sorted lower-case header names"},
    [SIGV4_R_HOST_NOT_SIGNED] = {"HOST_NOT_SIGNED", "AccessDenied", 403,
                                 "Host must be a signed header"},
    [SIGV4_R_SIGNED_HEADER_MISSING] = {"SIGNED_HEADER_MISSING", "SignatureDoesNotMatch", 403,
                                       "A signed header is missing from the request"},
    [SIGV4_R_UNSIGNED_HEADER] = {"UNSIGNED_HEADER", "AccessDenied", 403,
                                 "There were headers present in the request which were not "
                                 "signed"},
    [SIGV4_R_CONTENT_SHA256_MISSING] = {"CONTENT_SHA256_MISSING", "InvalidRequest", 400,
                                        "Missing required header for this request: "
                                        "x-amz-content-sha256"},
    [SIGV4_R_CONTENT_SHA256_INVALID] = {"CONTENT_SHA256_INVALID", "InvalidArgument", 400,
                                        "x-amz-content-sha256 must be UNSIGNED-PAYLOAD or a "
                                        "SHA-256 value"},
    [SIGV4_R_UNSUPPORTED_PAYLOAD] = {"UNSUPPORTED_PAYLOAD", "NotImplemented", 501,
                                     "Streaming (aws-chunked) payload signatures are not "
                                     "implemented"},
    [SIGV4_R_UNKNOWN_ACCESS_KEY] = {"UNKNOWN_ACCESS_KEY", "InvalidAccessKeyId", 403,
                                    "The AWS Access Key Id you provided does not exist in our "
                                    "records."},
    [SIGV4_R_SIGNATURE_MALFORMED] = {"SIGNATURE_MALFORMED", "SignatureDoesNotMatch", 403,
                                     "The request signature we calculated does not match the "
                                     "signature you provided."},
    [SIGV4_R_SIGNATURE_MISMATCH] = {"SIGNATURE_MISMATCH", "SignatureDoesNotMatch", 403,
                                    "The request signature we calculated does not match the "
                                    "signature you provided. Check your key and signing "
                                    "method."},
    [SIGV4_R_FORM_MALFORMED] = {"FORM_MALFORMED", "InvalidArgument", 400,
                                "A form field is duplicated or too large"},
    [SIGV4_R_FORM_FIELD_MISSING] = {"FORM_FIELD_MISSING", "InvalidArgument", 400,
                                    "A required form field is missing"},
    [SIGV4_R_POLICY_MISSING] = {"POLICY_MISSING", "AccessDenied", 403,
                                "Bucket POST must contain a policy"},
    [SIGV4_R_POLICY_TOO_LARGE] = {"POLICY_TOO_LARGE", "MaxPostPreDataLengthExceeded", 400,
                                  "Your POST request fields preceding the upload file were too "
                                  "large."},
    [SIGV4_R_POLICY_BASE64] = {"POLICY_BASE64", "InvalidPolicyDocument", 400,
                               "Invalid Policy: Invalid 'POST' form policy (base64)"},
    [SIGV4_R_POLICY_JSON] = {"POLICY_JSON", "InvalidPolicyDocument", 400,
                             "Invalid Policy: Invalid JSON or policy document"},
    [SIGV4_R_POLICY_EXPIRED] = {"POLICY_EXPIRED", "AccessDenied", 403,
                                "Invalid according to Policy: Policy expired."},
    [SIGV4_R_POLICY_CONDITION] = {"POLICY_CONDITION", "AccessDenied", 403,
                                  "Invalid according to Policy: Policy Condition failed"},
    [SIGV4_R_POLICY_EXTRA_FIELD] = {"POLICY_EXTRA_FIELD", "AccessDenied", 403,
                                    "Invalid according to Policy: Extra input fields"},
    [SIGV4_R_ENTITY_TOO_SMALL] = {"ENTITY_TOO_SMALL", "EntityTooSmall", 400,
                                  "Your proposed upload is smaller than the minimum allowed "
                                  "size"},
    [SIGV4_R_ENTITY_TOO_LARGE] = {"ENTITY_TOO_LARGE", "EntityTooLarge", 400,
                                  "Your proposed upload exceeds the maximum allowed size"},
    [SIGV4_R_INTERNAL] = {"INTERNAL", "InternalError", 500,
                          "We encountered an internal error. Please try again."},
};

static const reason_info *info(sigv4_reason r)
{
    if ((unsigned)r >= SIGV4_R__COUNT || reasons[r].name == NULL)
        return &reasons[SIGV4_R_INTERNAL];
    return &reasons[r];
}

const char *sigv4_reason_s3_code(sigv4_reason r)
{
    return info(r)->code;
}

int sigv4_reason_http_status(sigv4_reason r)
{
    return info(r)->status;
}

const char *sigv4_reason_message(sigv4_reason r)
{
    return info(r)->message;
}

const char *sigv4_reason_name(sigv4_reason r)
{
    return info(r)->name;
}

/* ------------------------------------------------------------------ */
/* Parsers                                                              */

/* Copies s[0..n) into dst (cap bytes with NUL); false if it does not fit. */
static bool copy_bounded(char *dst, size_t cap, const char *s, size_t n)
{
    if (n >= cap)
        return false;
    memcpy(dst, s, n);
    dst[n] = '\0';
    return true;
}

sigv4_reason sigv4_parse_auth_header(const char *value, sigv4_auth_header *out)
{
    sigv4_auth_header h;
    bool have_cred = false, have_sh = false, have_sig = false;
    if (value == NULL)
        return SIGV4_R_AUTH_HEADER_MALFORMED;
    size_t len = strnlen(value, 4096 + 1);
    if (len > 4096)
        return SIGV4_R_AUTH_HEADER_MALFORMED;
    const char *p = value, *end = value + len;
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    const char *alg = p;
    while (p < end && *p != ' ' && *p != '\t')
        p++;
    if (!copy_bounded(h.algorithm, sizeof h.algorithm, alg, (size_t)(p - alg)))
        return SIGV4_R_UNSUPPORTED_ALGORITHM;
    if (strcmp(h.algorithm, SIGV4_ALGORITHM) != 0)
        return SIGV4_R_UNSUPPORTED_ALGORITHM;
    /* Components: "Name=value", separated by commas and optional spaces. */
    while (p < end) {
        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
        if (p == end)
            break;
        const char *comp = p;
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *comp_end = comma ? comma : end;
        const char *ce = comp_end;
        while (ce > comp && (ce[-1] == ' ' || ce[-1] == '\t'))
            ce--;
        const char *eq = memchr(comp, '=', (size_t)(ce - comp));
        if (eq == NULL)
            return SIGV4_R_AUTH_HEADER_MALFORMED;
        size_t nlen = (size_t)(eq - comp), vlen = (size_t)(ce - eq - 1);
        const char *v = eq + 1;
        if (nlen == 10 && memcmp(comp, "Credential", 10) == 0) {
            if (have_cred || !copy_bounded(h.credential, sizeof h.credential, v, vlen))
                return SIGV4_R_AUTH_HEADER_MALFORMED;
            have_cred = true;
        } else if (nlen == 13 && memcmp(comp, "SignedHeaders", 13) == 0) {
            if (have_sh || !copy_bounded(h.signed_headers, sizeof h.signed_headers, v, vlen))
                return SIGV4_R_AUTH_HEADER_MALFORMED;
            have_sh = true;
        } else if (nlen == 9 && memcmp(comp, "Signature", 9) == 0) {
            if (have_sig)
                return SIGV4_R_AUTH_HEADER_MALFORMED;
            if (!copy_bounded(h.signature, sizeof h.signature, v, vlen))
                return SIGV4_R_SIGNATURE_MALFORMED;
            have_sig = true;
        } else {
            return SIGV4_R_AUTH_HEADER_MALFORMED;
        }
        if (memchr(v, ' ', vlen) != NULL || memchr(v, '\t', vlen) != NULL)
            return SIGV4_R_AUTH_HEADER_MALFORMED;
        p = comma ? comma + 1 : end;
    }
    if (!have_cred || !have_sh || !have_sig)
        return SIGV4_R_AUTH_HEADER_MALFORMED;
    *out = h;
    return SIGV4_R_OK;
}

sigv4_reason sigv4_parse_credential(const char *credential, sigv4_scope *out)
{
    sigv4_scope sc;
    const char *parts[5];
    size_t lens[5];
    if (credential == NULL)
        return SIGV4_R_CREDENTIAL_MALFORMED;
    size_t len = strnlen(credential, 512 + 1);
    if (len > 512)
        return SIGV4_R_CREDENTIAL_MALFORMED;
    const char *p = credential, *end = credential + len;
    for (int i = 0; i < 5; i++) {
        const char *slash = memchr(p, '/', (size_t)(end - p));
        if ((i < 4) != (slash != NULL))
            return SIGV4_R_CREDENTIAL_MALFORMED;
        parts[i] = p;
        lens[i] = (size_t)((slash ? slash : end) - p);
        p = slash ? slash + 1 : end;
    }
    if (!copy_bounded(sc.access_key_id, sizeof sc.access_key_id, parts[0], lens[0]) ||
        !sigv4__valid_scope_part(sc.access_key_id, SIGV4_MAX_ACCESS_KEY_LEN) ||
        !copy_bounded(sc.date, sizeof sc.date, parts[1], lens[1]) || lens[1] != 8 ||
        !copy_bounded(sc.region, sizeof sc.region, parts[2], lens[2]) ||
        !sigv4__valid_scope_part(sc.region, SIGV4_MAX_REGION_LEN) ||
        !copy_bounded(sc.service, sizeof sc.service, parts[3], lens[3]) ||
        !sigv4__valid_scope_part(sc.service, SIGV4_MAX_SERVICE_LEN) || lens[4] != 12 ||
        memcmp(parts[4], "aws4_request", 12) != 0)
        return SIGV4_R_CREDENTIAL_MALFORMED;
    for (int i = 0; i < 8; i++)
        if (sc.date[i] < '0' || sc.date[i] > '9')
            return SIGV4_R_CREDENTIAL_MALFORMED;
    *out = sc;
    return SIGV4_R_OK;
}

/* ------------------------------------------------------------------ */
/* Shared steps                                                         */

static void verdict_init(sigv4_verdict *vd)
{
    memset(vd, 0, sizeof *vd);
    vd->reason = SIGV4_R_OK;
    vd->length_min = -1;
    vd->length_max = -1;
}

static void set_detail(sigv4_verdict *vd, const char *s)
{
    snprintf(vd->detail, sizeof vd->detail, "%s", s);
}

/* Checks the scope against the verifier and the request date. */
static sigv4_reason check_scope(const sigv4_verifier *v, const sigv4_scope *sc,
                                const char *amz_date, sigv4_verdict *vd)
{
    snprintf(vd->access_key_id, sizeof vd->access_key_id, "%s", sc->access_key_id);
    if (strcmp(sc->region, v->region) != 0) {
        set_detail(vd, sc->region);
        return SIGV4_R_WRONG_REGION;
    }
    if (strcmp(sc->service, v->service) != 0) {
        set_detail(vd, sc->service);
        return SIGV4_R_WRONG_SERVICE;
    }
    if (memcmp(sc->date, amz_date, 8) != 0)
        return SIGV4_R_CREDENTIAL_DATE;
    return SIGV4_R_OK;
}

/* Looks the secret up, derives the key for the scope and compares
 * HMAC(key, msg) with the given signature. */
static ferry_err check_mac(const sigv4_verifier *v, const sigv4_scope *sc, const char *msg,
                           size_t msg_len, const char *given_sig, sigv4_reason *why)
{
    ferry_err err = FERRY_OK;
    ferry_buf secret;
    unsigned char key[32], mac[32];
    char hex[65];
    ferry_buf_init(&secret, SIGV4_MAX_SECRET_LEN);
    if (v->lookup == NULL) {
        *why = SIGV4_R_INTERNAL;
        err = FERRY_ERR_INVALID;
        goto out;
    }
    err = v->lookup(v->lookup_ctx, sc->access_key_id, &secret);
    if (err == FERRY_ERR_NOT_FOUND) {
        *why = SIGV4_R_UNKNOWN_ACCESS_KEY;
        err = FERRY_OK;
        goto out;
    }
    if (err || secret.len == 0) {
        *why = SIGV4_R_INTERNAL;
        if (!err)
            err = FERRY_ERR_INTERNAL;
        goto out;
    }
    if ((err = sigv4__derive_key(secret.data, sc->date, sc->region, sc->service, key)) ||
        (err = sigv4__hmac(key, sizeof key, msg, msg_len, mac))) {
        *why = SIGV4_R_INTERNAL;
        goto out;
    }
    sigv4__hex(mac, sizeof mac, hex);
    *why = sigv4__sig_equal(hex, given_sig, strlen(given_sig)) ? SIGV4_R_OK
                                                                : SIGV4_R_SIGNATURE_MISMATCH;
out:
    ferry_buf_wipe(&secret);
    OPENSSL_cleanse(key, sizeof key);
    OPENSSL_cleanse(mac, sizeof mac);
    OPENSSL_cleanse(hex, sizeof hex);
    return err;
}

/* True if name is one of the ';'-separated entries of list. */
static bool in_list(const char *list, const char *name)
{
    size_t n = strlen(name);
    const char *p = list;
    while (*p) {
        const char *semi = strchr(p, ';');
        size_t l = semi ? (size_t)(semi - p) : strlen(p);
        if (l == n && strncasecmp(p, name, n) == 0)
            return true;
        p += l;
        if (*p == ';')
            p++;
    }
    return false;
}

/* Checks the signed-headers list covers host and every x-amz-* header. */
static sigv4_reason check_header_coverage(const sigv4_request *req, const char *signed_headers,
                                          sigv4_verdict *vd)
{
    if (!in_list(signed_headers, "host"))
        return SIGV4_R_HOST_NOT_SIGNED;
    for (size_t i = 0; i < req->n_headers && i < SIGV4_MAX_HEADERS; i++) {
        const char *n = req->headers[i].name;
        if (n != NULL && sigv4__iprefix(n, "x-amz-") && !in_list(signed_headers, n)) {
            set_detail(vd, n);
            return SIGV4_R_UNSIGNED_HEADER;
        }
    }
    return SIGV4_R_OK;
}

/* Finishes: canonical request, string to sign, MAC comparison. */
static ferry_err finish(const sigv4_verifier *v, const sigv4_request *req,
                        const sigv4_scope *sc, const char *amz_date, const char *signed_headers,
                        const char *payload_hash, const char *skip_param, const char *given_sig,
                        sigv4_verdict *vd)
{
    ferry_err err = FERRY_OK;
    sigv4_reason why = SIGV4_R_OK;
    ferry_buf creq, sts, scope;
    ferry_buf_init(&creq, SIGV4_MAX_CANON_LEN);
    ferry_buf_init(&sts, 1024);
    ferry_buf_init(&scope, 512);
    if (strlen(given_sig) != 64) {
        why = SIGV4_R_SIGNATURE_MALFORMED;
        goto out;
    }
    err = sigv4_canonical_request(req, signed_headers, payload_hash, skip_param, &creq, &why);
    if (why != SIGV4_R_OK) {
        err = why == SIGV4_R_INTERNAL ? err : FERRY_OK;
        goto out;
    }
    if ((err = sigv4__scope(&scope, sc->date, sc->region, sc->service)) ||
        (err = sigv4_string_to_sign(amz_date, scope.data, creq.data, creq.len, &sts))) {
        why = SIGV4_R_INTERNAL;
        goto out;
    }
    err = check_mac(v, sc, sts.data, sts.len, given_sig, &why);
out:
    ferry_buf_cleanup(&creq);
    ferry_buf_cleanup(&sts);
    ferry_buf_cleanup(&scope);
    vd->reason = why;
    if (err)
        return err;
    return why == SIGV4_R_OK ? FERRY_OK : FERRY_ERR_AUTH;
}

static ferry_err refuse(sigv4_verdict *vd, sigv4_reason why)
{
    vd->reason = why;
    return why == SIGV4_R_INTERNAL ? FERRY_ERR_INTERNAL : FERRY_ERR_AUTH;
}

/* The single header named name: NULL if absent, *dup set if repeated. */
static const char *find_header(const sigv4_request *req, const char *name, bool *dup)
{
    const char *found = NULL;
    *dup = false;
    for (size_t i = 0; i < req->n_headers && i < SIGV4_MAX_HEADERS; i++) {
        if (req->headers[i].name == NULL || !sigv4__ieq(req->headers[i].name, name))
            continue;
        if (found != NULL)
            *dup = true;
        found = req->headers[i].value;
    }
    return found;
}

static bool is_lower_hex64(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++)
        if (!((s[n] >= '0' && s[n] <= '9') || (s[n] >= 'a' && s[n] <= 'f')) || n >= 64)
            return false;
    return n == 64;
}

/* ------------------------------------------------------------------ */
/* Header auth                                                          */

ferry_err sigv4_verify_header(const sigv4_verifier *v, const sigv4_request *req, int64_t now,
                              sigv4_verdict *vd)
{
    sigv4_auth_header ah;
    sigv4_scope sc;
    sigv4_reason why;
    bool dup;
    verdict_init(vd);
    if (req->n_headers > SIGV4_MAX_HEADERS)
        return refuse(vd, SIGV4_R_MALFORMED_REQUEST);
    const char *authz = find_header(req, "authorization", &dup);
    if (authz == NULL)
        return refuse(vd, SIGV4_R_NO_AUTH);
    if (dup)
        return refuse(vd, SIGV4_R_AUTH_HEADER_MALFORMED);
    if ((why = sigv4_parse_auth_header(authz, &ah)) != SIGV4_R_OK)
        return refuse(vd, why);
    if ((why = sigv4_parse_credential(ah.credential, &sc)) != SIGV4_R_OK)
        return refuse(vd, why);
    const char *amz_date = find_header(req, "x-amz-date", &dup);
    if (amz_date == NULL)
        return refuse(vd, SIGV4_R_DATE_MISSING);
    if (dup || ferry_time_parse_amz_datetime(amz_date, &vd->signed_at))
        return refuse(vd, SIGV4_R_DATE_MALFORMED);
    if ((why = check_scope(v, &sc, amz_date, vd)) != SIGV4_R_OK)
        return refuse(vd, why);
    if (vd->signed_at > now + SIGV4_MAX_SKEW_S || vd->signed_at < now - SIGV4_MAX_SKEW_S)
        return refuse(vd, SIGV4_R_SKEWED);

    const char *payload = req->payload_hash;
    if (payload == NULL) {
        payload = find_header(req, "x-amz-content-sha256", &dup);
        if (payload == NULL)
            return refuse(vd, SIGV4_R_CONTENT_SHA256_MISSING);
        if (dup)
            return refuse(vd, SIGV4_R_CONTENT_SHA256_INVALID);
    }
    if (strncmp(payload, "STREAMING-", 10) == 0)
        return refuse(vd, SIGV4_R_UNSUPPORTED_PAYLOAD);
    if (strcmp(payload, SIGV4_UNSIGNED_PAYLOAD) != 0) {
        if (!is_lower_hex64(payload))
            return refuse(vd, SIGV4_R_CONTENT_SHA256_INVALID);
        memcpy(vd->payload_sha256, payload, 65);
    }
    if ((why = check_header_coverage(req, ah.signed_headers, vd)) != SIGV4_R_OK)
        return refuse(vd, why);
    return finish(v, req, &sc, amz_date, ah.signed_headers, payload, NULL, ah.signature, vd);
}

/* ------------------------------------------------------------------ */
/* Query auth                                                           */

enum { QP_ALGORITHM, QP_CREDENTIAL, QP_DATE, QP_EXPIRES, QP_SIGNED_HEADERS, QP_SIGNATURE, QP__N };
static const char *const qp_names[QP__N] = {
    "X-Amz-Algorithm", "X-Amz-Credential",    "X-Amz-Date",
    "X-Amz-Expires",   "X-Amz-SignedHeaders", "X-Amz-Signature",
};

ferry_err sigv4_verify_query(const sigv4_verifier *v, const sigv4_request *req, int64_t now,
                             sigv4_verdict *vd)
{
    ferry_err err = FERRY_OK;
    sigv4_query q;
    sigv4_scope sc;
    sigv4_reason why;
    const char *qp[QP__N] = {NULL};
    verdict_init(vd);
    if (req->n_headers > SIGV4_MAX_HEADERS)
        return refuse(vd, SIGV4_R_MALFORMED_REQUEST);
    if ((why = sigv4_parse_query(req->query, &q)) != SIGV4_R_OK)
        return refuse(vd, why);

    for (size_t i = 0; i < q.n; i++)
        for (int k = 0; k < QP__N; k++)
            if (strcmp(q.params[i].name, qp_names[k]) == 0) {
                if (qp[k] != NULL) {
                    set_detail(vd, qp_names[k]);
                    why = SIGV4_R_QUERY_PARAM_DUPLICATE;
                    goto out;
                }
                qp[k] = q.params[i].value;
            }
    for (int k = 0; k < QP__N; k++)
        if (qp[k] == NULL) {
            set_detail(vd, qp_names[k]);
            why = SIGV4_R_QUERY_PARAM_MISSING;
            goto out;
        }
    if (strcmp(qp[QP_ALGORITHM], SIGV4_ALGORITHM) != 0) {
        why = SIGV4_R_UNSUPPORTED_ALGORITHM;
        goto out;
    }
    if ((why = sigv4_parse_credential(qp[QP_CREDENTIAL], &sc)) != SIGV4_R_OK)
        goto out;
    if (ferry_time_parse_amz_datetime(qp[QP_DATE], &vd->signed_at)) {
        why = SIGV4_R_DATE_MALFORMED;
        goto out;
    }
    if ((why = check_scope(v, &sc, qp[QP_DATE], vd)) != SIGV4_R_OK)
        goto out;
    /* X-Amz-Expires: decimal seconds, 1..604800, nothing else. */
    const char *e = qp[QP_EXPIRES];
    int64_t expires = 0;
    size_t digits = 0;
    for (; e[digits]; digits++) {
        if (e[digits] < '0' || e[digits] > '9' || digits >= 12) {
            why = SIGV4_R_EXPIRES_MALFORMED;
            goto out;
        }
        expires = expires * 10 + (e[digits] - '0');
    }
    if (digits == 0 || expires < SIGV4_MIN_EXPIRES_S) {
        why = SIGV4_R_EXPIRES_MALFORMED;
        goto out;
    }
    if (expires > SIGV4_MAX_EXPIRES_S) {
        why = SIGV4_R_EXPIRES_TOO_LARGE;
        goto out;
    }
    vd->expires_at = vd->signed_at + expires;
    if (vd->signed_at > now + SIGV4_MAX_SKEW_S) {
        why = SIGV4_R_NOT_YET_VALID;
        goto out;
    }
    if (now > vd->expires_at) {
        why = SIGV4_R_EXPIRED;
        goto out;
    }
    if ((why = check_header_coverage(req, qp[QP_SIGNED_HEADERS], vd)) != SIGV4_R_OK)
        goto out;
    err = finish(v, req, &sc, qp[QP_DATE], qp[QP_SIGNED_HEADERS], SIGV4_UNSIGNED_PAYLOAD,
                 "X-Amz-Signature", qp[QP_SIGNATURE], vd);
    sigv4_query_cleanup(&q);
    return err;
out:
    sigv4_query_cleanup(&q);
    return refuse(vd, why);
}

ferry_err sigv4_verify_request(const sigv4_verifier *v, const sigv4_request *req, int64_t now,
                               sigv4_verdict *vd)
{
    bool dup;
    bool has_header = find_header(req, "authorization", &dup) != NULL;
    bool has_query = false;
    const char *q = req->query ? req->query : "";
    /* A cheap scan is enough to choose; the chosen verifier parses fully. */
    for (const char *p = q; p != NULL && *p; p = strchr(p, '&'), p = p ? p + 1 : NULL)
        if (strncmp(p, "X-Amz-Algorithm=", 16) == 0 || strncmp(p, "X-Amz-Signature=", 16) == 0 ||
            strncmp(p, "X-Amz-Credential=", 17) == 0)
            has_query = true;
    if (has_header && has_query) {
        verdict_init(vd);
        return refuse(vd, SIGV4_R_AMBIGUOUS_AUTH);
    }
    if (has_query)
        return sigv4_verify_query(v, req, now, vd);
    return sigv4_verify_header(v, req, now, vd);
}
