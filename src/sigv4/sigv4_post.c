/*
 * sigv4_post.c - browser-style POST uploads: building and signing the POST
 * policy document (as boto3's generate_presigned_post does) and verifying a
 * submitted form against its policy.
 *
 * Invariants:
 * - The policy is authenticated (HMAC over its base64 text) before it is
 *   decoded or parsed: an unauthenticated client never reaches the JSON
 *   parser through the store. sigv4_policy_parse() is still written for
 *   hostile input and fuzzed on its own.
 * - A form is accepted only if the signature matches, the policy has not
 *   expired, every condition holds, and every submitted field is covered by
 *   a condition (bar the fields S3 exempts). The content-length-range is
 *   recorded in the verdict for the store to enforce while streaming.
 * - Policies larger than 20 KB (S3's limit on the fields before the file)
 *   are refused before anything else is done with them.
 */
#include "sigv4_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "common/timefmt.h"

#define SIGV4_MAX_CONDITIONS 64
#define SIGV4_MAX_FIELD_LEN  8192

typedef enum cond_kind { COND_EQ, COND_PREFIX, COND_RANGE } cond_kind;

typedef struct policy_cond {
    cond_kind kind;
    char *field; /* without '$'; matched case-insensitively */
    char *value;
    int64_t min, max;
} policy_cond;

struct sigv4_policy {
    int64_t expiration;
    size_t n;
    policy_cond conds[SIGV4_MAX_CONDITIONS];
};

/* ------------------------------------------------------------------ */
/* Parsing                                                              */

static int b64val(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

/* Strict standard base64: length a multiple of 4, '=' only as padding at
 * the very end, no whitespace. out needs len / 4 * 3 bytes. */
static bool b64_decode(const char *in, size_t len, unsigned char *out, size_t *out_len)
{
    size_t o = 0;
    if (len == 0 || len % 4 != 0)
        return false;
    for (size_t i = 0; i < len; i += 4) {
        int v[4];
        int pad = 0;
        for (int k = 0; k < 4; k++) {
            unsigned char c = (unsigned char)in[i + (size_t)k];
            if (c == '=' && i + 4 == len && k >= 2) {
                v[k] = 0;
                pad++;
                continue;
            }
            if (pad > 0) /* data after padding */
                return false;
            v[k] = b64val(c);
            if (v[k] < 0)
                return false;
        }
        unsigned triple =
            (unsigned)v[0] << 18 | (unsigned)v[1] << 12 | (unsigned)v[2] << 6 | (unsigned)v[3];
        out[o++] = (unsigned char)(triple >> 16);
        if (pad < 2)
            out[o++] = (unsigned char)(triple >> 8 & 0xff);
        if (pad < 1)
            out[o++] = (unsigned char)(triple & 0xff);
    }
    *out_len = o;
    return true;
}

void sigv4_policy_free(sigv4_policy *policy)
{
    if (policy == NULL)
        return;
    for (size_t i = 0; i < policy->n; i++) {
        free(policy->conds[i].field);
        free(policy->conds[i].value);
    }
    free(policy);
}

int64_t sigv4_policy_expiration(const sigv4_policy *policy)
{
    return policy->expiration;
}

/* A JSON integer that fits a non-negative int64. */
static bool json_size(const json_t *j, int64_t *out)
{
    if (!json_is_integer(j) || json_integer_value(j) < 0)
        return false;
    *out = (int64_t)json_integer_value(j);
    return true;
}

static sigv4_reason parse_condition(const json_t *c, policy_cond *out)
{
    out->field = NULL;
    out->value = NULL;
    out->min = out->max = 0;
    if (json_is_object(c)) {
        /* {"field": "value"}: exact match, exactly one member. */
        if (json_object_size(c) != 1)
            return SIGV4_R_POLICY_JSON;
        const char *k;
        json_t *val;
        json_object_foreach((json_t *)c, k, val)
        {
            if (!json_is_string(val) || k[0] == '\0')
                return SIGV4_R_POLICY_JSON;
            out->kind = COND_EQ;
            out->field = strdup(k[0] == '$' ? k + 1 : k);
            out->value = strdup(json_string_value(val));
        }
    } else if (json_is_array(c) && json_array_size(c) == 3) {
        const json_t *op = json_array_get(c, 0);
        if (!json_is_string(op))
            return SIGV4_R_POLICY_JSON;
        const char *ops = json_string_value(op);
        if (strcasecmp(ops, "content-length-range") == 0) {
            out->kind = COND_RANGE;
            if (!json_size(json_array_get(c, 1), &out->min) ||
                !json_size(json_array_get(c, 2), &out->max) || out->min > out->max)
                return SIGV4_R_POLICY_JSON;
            out->field = strdup("content-length-range");
        } else {
            if (strcasecmp(ops, "eq") == 0)
                out->kind = COND_EQ;
            else if (strcasecmp(ops, "starts-with") == 0)
                out->kind = COND_PREFIX;
            else
                return SIGV4_R_POLICY_JSON;
            const json_t *f = json_array_get(c, 1), *v = json_array_get(c, 2);
            if (!json_is_string(f) || !json_is_string(v))
                return SIGV4_R_POLICY_JSON;
            const char *fs = json_string_value(f);
            /* Array conditions name fields with a leading '$'. */
            if (fs[0] != '$' || fs[1] == '\0')
                return SIGV4_R_POLICY_JSON;
            out->field = strdup(fs + 1);
            out->value = strdup(json_string_value(v));
        }
    } else {
        return SIGV4_R_POLICY_JSON;
    }
    if (out->field == NULL || (out->kind != COND_RANGE && out->value == NULL))
        return SIGV4_R_INTERNAL;
    return SIGV4_R_OK;
}

sigv4_reason sigv4_policy_parse(const char *b64, size_t b64_len, sigv4_policy **out)
{
    sigv4_reason why = SIGV4_R_OK;
    unsigned char *raw = NULL;
    size_t raw_len = 0;
    json_t *root = NULL;
    sigv4_policy *pol = NULL;
    if (b64_len > SIGV4_MAX_POLICY_LEN)
        return SIGV4_R_POLICY_TOO_LARGE;
    raw = malloc(b64_len / 4 * 3 + 1);
    if (raw == NULL)
        return SIGV4_R_INTERNAL;
    if (!b64_decode(b64, b64_len, raw, &raw_len)) {
        why = SIGV4_R_POLICY_BASE64;
        goto out;
    }
    json_error_t jerr;
    root = json_loadb((const char *)raw, raw_len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL || !json_is_object(root)) {
        why = SIGV4_R_POLICY_JSON;
        goto out;
    }
    const json_t *exp = json_object_get(root, "expiration");
    const json_t *conds = json_object_get(root, "conditions");
    /* Only the two documented members, both required. */
    if (!json_is_string(exp) || !json_is_array(conds) || json_object_size(root) != 2 ||
        json_array_size(conds) > SIGV4_MAX_CONDITIONS) {
        why = SIGV4_R_POLICY_JSON;
        goto out;
    }
    pol = calloc(1, sizeof *pol);
    if (pol == NULL) {
        why = SIGV4_R_INTERNAL;
        goto out;
    }
    if (ferry_time_parse_iso8601(json_string_value(exp), &pol->expiration)) {
        why = SIGV4_R_POLICY_JSON;
        goto out;
    }
    for (size_t i = 0; i < json_array_size(conds); i++) {
        why = parse_condition(json_array_get(conds, i), &pol->conds[pol->n]);
        pol->n++; /* counted even on failure so that free releases its strings */
        if (why != SIGV4_R_OK)
            goto out;
    }
    *out = pol;
    pol = NULL;
out:
    sigv4_policy_free(pol);
    json_decref(root);
    free(raw);
    return why;
}

/* ------------------------------------------------------------------ */
/* Verification                                                         */

/* Fields S3 does not require a condition for: the signature, the file and
 * the policy itself, x-ignore-* fields, and the V2 signature fields. */
static bool exempt_field(const char *name)
{
    return sigv4__ieq(name, "x-amz-signature") || sigv4__ieq(name, "file") ||
           sigv4__ieq(name, "policy") || sigv4__iprefix(name, "x-ignore-") ||
           sigv4__ieq(name, "AWSAccessKeyId") || sigv4__ieq(name, "signature");
}

static const char *form_get(const sigv4_post_form *f, const char *name)
{
    for (size_t i = 0; i < f->n_fields; i++)
        if (sigv4__ieq(f->fields[i].name, name))
            return f->fields[i].value;
    return NULL;
}

static ferry_err refuse(sigv4_verdict *vd, sigv4_reason why)
{
    vd->reason = why;
    return why == SIGV4_R_INTERNAL ? FERRY_ERR_INTERNAL : FERRY_ERR_AUTH;
}

static void set_detail(sigv4_verdict *vd, const char *s)
{
    snprintf(vd->detail, sizeof vd->detail, "%s", s);
}

/* The same scope check as sigv4_verify.c, for the form's credential. */
static sigv4_reason post_scope(const sigv4_verifier *v, const sigv4_scope *sc, const char *amz_date,
                               sigv4_verdict *vd)
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

ferry_err sigv4_verify_post(const sigv4_verifier *v, const sigv4_post_form *form, int64_t now,
                            sigv4_verdict *vd)
{
    ferry_err err = FERRY_OK;
    sigv4_reason why = SIGV4_R_OK;
    sigv4_scope sc;
    sigv4_policy *pol = NULL;
    ferry_buf secret;
    unsigned char key[32], mac[32];
    char hex[65];
    ferry_buf_init(&secret, SIGV4_MAX_SECRET_LEN);
    memset(vd, 0, sizeof *vd);
    vd->length_min = vd->length_max = -1;

    if (form->n_fields > SIGV4_MAX_FORM_FIELDS || form->bucket == NULL) {
        why = SIGV4_R_FORM_MALFORMED;
        goto out;
    }
    for (size_t i = 0; i < form->n_fields; i++) {
        const char *n = form->fields[i].name, *val = form->fields[i].value;
        if (n == NULL || val == NULL || n[0] == '\0' || strlen(n) > 256) {
            why = SIGV4_R_FORM_MALFORMED;
            goto out;
        }
        if (!sigv4__ieq(n, "policy") &&
            strnlen(val, SIGV4_MAX_FIELD_LEN + 1) > SIGV4_MAX_FIELD_LEN) {
            set_detail(vd, n);
            why = SIGV4_R_FORM_MALFORMED;
            goto out;
        }
        for (size_t k = 0; k < i; k++)
            if (sigv4__ieq(form->fields[k].name, n)) {
                set_detail(vd, n);
                why = SIGV4_R_FORM_MALFORMED;
                goto out;
            }
    }
    const char *policy = form_get(form, "policy");
    if (policy == NULL) {
        why = SIGV4_R_POLICY_MISSING;
        goto out;
    }
    size_t policy_len = strnlen(policy, SIGV4_MAX_POLICY_LEN + 1);
    if (policy_len > SIGV4_MAX_POLICY_LEN) {
        why = SIGV4_R_POLICY_TOO_LARGE;
        goto out;
    }
    static const char *const required[] = {"x-amz-algorithm", "x-amz-credential", "x-amz-date",
                                           "x-amz-signature"};
    for (size_t i = 0; i < 4; i++)
        if (form_get(form, required[i]) == NULL) {
            set_detail(vd, required[i]);
            why = SIGV4_R_FORM_FIELD_MISSING;
            goto out;
        }
    if (strcmp(form_get(form, "x-amz-algorithm"), SIGV4_ALGORITHM) != 0) {
        why = SIGV4_R_UNSUPPORTED_ALGORITHM;
        goto out;
    }
    if ((why = sigv4_parse_credential(form_get(form, "x-amz-credential"), &sc)) != SIGV4_R_OK)
        goto out;
    const char *amz_date = form_get(form, "x-amz-date");
    if (ferry_time_parse_amz_datetime(amz_date, &vd->signed_at)) {
        why = SIGV4_R_DATE_MALFORMED;
        goto out;
    }
    if ((why = post_scope(v, &sc, amz_date, vd)) != SIGV4_R_OK)
        goto out;
    const char *given = form_get(form, "x-amz-signature");
    if (strlen(given) != 64) {
        why = SIGV4_R_SIGNATURE_MALFORMED;
        goto out;
    }

    /* Authenticate the policy text before looking inside it. */
    if (v->lookup == NULL) {
        why = SIGV4_R_INTERNAL;
        err = FERRY_ERR_INVALID;
        goto out;
    }
    err = v->lookup(v->lookup_ctx, sc.access_key_id, &secret);
    if (err == FERRY_ERR_NOT_FOUND) {
        err = FERRY_OK;
        why = SIGV4_R_UNKNOWN_ACCESS_KEY;
        goto out;
    }
    if (err || secret.len == 0) {
        err = err ? err : FERRY_ERR_INTERNAL;
        why = SIGV4_R_INTERNAL;
        goto out;
    }
    if ((err = sigv4__derive_key(secret.data, sc.date, sc.region, sc.service, key)) ||
        (err = sigv4__hmac(key, sizeof key, policy, policy_len, mac))) {
        why = SIGV4_R_INTERNAL;
        goto out;
    }
    sigv4__hex(mac, sizeof mac, hex);
    if (!sigv4__sig_equal(hex, given, 64)) {
        why = SIGV4_R_SIGNATURE_MISMATCH;
        goto out;
    }

    if ((why = sigv4_policy_parse(policy, policy_len, &pol)) != SIGV4_R_OK)
        goto out;
    vd->expires_at = pol->expiration;
    if (now > pol->expiration) {
        why = SIGV4_R_POLICY_EXPIRED;
        goto out;
    }
    for (size_t i = 0; i < pol->n; i++) {
        const policy_cond *c = &pol->conds[i];
        if (c->kind == COND_RANGE) {
            /* Several ranges must all hold: keep their intersection (an
             * empty one refuses every size). */
            if (vd->length_max < 0) {
                vd->length_min = c->min;
                vd->length_max = c->max;
            } else {
                vd->length_min = c->min > vd->length_min ? c->min : vd->length_min;
                vd->length_max = c->max < vd->length_max ? c->max : vd->length_max;
            }
            continue;
        }
        /* The bucket is the one in the URL, not a form field. */
        const char *got = sigv4__ieq(c->field, "bucket") ? form->bucket : form_get(form, c->field);
        bool ok =
            got != NULL && (c->kind == COND_EQ ? strcmp(got, c->value) == 0
                                               : strncmp(got, c->value, strlen(c->value)) == 0);
        if (!ok) {
            set_detail(vd, c->field);
            why = SIGV4_R_POLICY_CONDITION;
            goto out;
        }
    }
    for (size_t i = 0; i < form->n_fields; i++) {
        const char *n = form->fields[i].name;
        if (exempt_field(n))
            continue;
        bool covered = false;
        for (size_t k = 0; k < pol->n && !covered; k++)
            covered = pol->conds[k].kind != COND_RANGE && sigv4__ieq(pol->conds[k].field, n);
        if (!covered) {
            set_detail(vd, n);
            why = SIGV4_R_POLICY_EXTRA_FIELD;
            goto out;
        }
    }
    if (form->content_length >= 0)
        why = sigv4_post_check_length(vd, form->content_length);
out:
    sigv4_policy_free(pol);
    ferry_buf_wipe(&secret);
    OPENSSL_cleanse(key, sizeof key);
    OPENSSL_cleanse(mac, sizeof mac);
    OPENSSL_cleanse(hex, sizeof hex);
    if (err) {
        vd->reason = SIGV4_R_INTERNAL;
        return err;
    }
    if (why != SIGV4_R_OK)
        return refuse(vd, why);
    vd->reason = SIGV4_R_OK;
    return FERRY_OK;
}

sigv4_reason sigv4_post_check_length(const sigv4_verdict *vd, int64_t length)
{
    if (vd->length_max < 0)
        return SIGV4_R_OK;
    if (length < vd->length_min)
        return SIGV4_R_ENTITY_TOO_SMALL;
    if (length > vd->length_max)
        return SIGV4_R_ENTITY_TOO_LARGE;
    return SIGV4_R_OK;
}

/* ------------------------------------------------------------------ */
/* Building                                                             */

void sigv4_form_init(sigv4_form *form)
{
    form->url = NULL;
    form->fields = NULL;
    form->n_fields = 0;
    form->expires_at = 0;
}

void sigv4_form_cleanup(sigv4_form *form)
{
    if (form == NULL)
        return;
    for (size_t i = 0; i < form->n_fields; i++) {
        free(form->fields[i].name);
        free(form->fields[i].value);
    }
    free(form->fields);
    free(form->url);
    sigv4_form_init(form);
}

static ferry_err form_add(sigv4_form *f, size_t cap, const char *name, const char *value)
{
    if (f->n_fields >= cap)
        return FERRY_ERR_INTERNAL;
    char *n = strdup(name), *v = strdup(value);
    if (n == NULL || v == NULL) {
        free(n);
        free(v);
        return FERRY_ERR_NOMEM;
    }
    f->fields[f->n_fields].name = n;
    f->fields[f->n_fields].value = v;
    f->n_fields++;
    return FERRY_OK;
}

/* Names the caller may not set through extra fields: Ferry writes them. */
static bool reserved_field(const char *name)
{
    static const char *const names[] = {"policy",           "x-amz-signature", "x-amz-algorithm",
                                        "x-amz-credential", "x-amz-date",      "key",
                                        "bucket",           "content-type",    "file"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (sigv4__ieq(name, names[i]))
            return true;
    return sigv4__iprefix(name, "x-ignore-");
}

static bool text_ok(const char *s, size_t max)
{
    if (s == NULL)
        return false;
    size_t n = strnlen(s, max + 1);
    if (n == 0 || n > max)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 32 || s[i] == 127)
            return false;
    return true;
}

ferry_err sigv4_post_policy(sigv4_signer *signer, const sigv4_post_params *p, int64_t now,
                            sigv4_form *out)
{
    ferry_err err = FERRY_OK;
    json_t *root = NULL, *conds = NULL;
    char *json = NULL;
    char *b64 = NULL;
    ferry_buf cred, url, keyfield;
    char amz_date[FERRY_AMZ_DATETIME_LEN + 1], sig[65], expiration[FERRY_ISO8601_LEN + 1];
    size_t base_len = 0;
    sigv4_form f;
    sigv4_form_init(&f);
    ferry_buf_init(&cred, 512);
    ferry_buf_init(&url, 4096);
    ferry_buf_init(&keyfield, 2048);

    if (p->expires_s < SIGV4_MIN_EXPIRES_S || p->expires_s > SIGV4_MAX_EXPIRES_S ||
        (p->length_max >= 0 && (p->length_min < 0 || p->length_min > p->length_max))) {
        err = FERRY_ERR_RANGE;
        goto out;
    }
    if (sigv4__signer_endpoint(p->endpoint, &base_len) || !text_ok(p->bucket, 63) ||
        strchr(p->bucket, '/') != NULL || !text_ok(p->key, 1024) ||
        (p->content_type != NULL && !text_ok(p->content_type, 256)) ||
        p->n_fields > SIGV4_MAX_FORM_FIELDS - 10 || (p->n_fields > 0 && p->fields == NULL)) {
        err = FERRY_ERR_INVALID;
        goto out;
    }
    for (size_t i = 0; i < p->n_fields; i++)
        if (p->fields[i].name == NULL ||
            !sigv4__is_token(p->fields[i].name, strlen(p->fields[i].name)) ||
            reserved_field(p->fields[i].name) || !text_ok(p->fields[i].value, 4096)) {
            err = FERRY_ERR_INVALID;
            goto out;
        }
    /* Date and credential first: they go into the policy that is signed. */
    if ((err = sigv4__signer_sign(signer, now, NULL, 0, sig, amz_date, &cred)))
        goto out;
    ferry_time_iso8601(now + p->expires_s, expiration);

    if ((err = ferry_buf_append_str(&keyfield, p->key)) ||
        (p->key_is_prefix && (err = ferry_buf_append_str(&keyfield, "${filename}"))))
        goto out;

    conds = json_array();
    root = json_object();
    if (conds == NULL || root == NULL) {
        err = FERRY_ERR_NOMEM;
        goto out;
    }
    /* json_pack fails on invalid UTF-8, which is how a bad key is refused. */
    int rc = json_array_append_new(conds, json_pack("{s:s}", "bucket", p->bucket));
    if (p->key_is_prefix)
        rc |= json_array_append_new(conds, json_pack("[s,s,s]", "starts-with", "$key", p->key));
    else
        rc |= json_array_append_new(conds, json_pack("{s:s}", "key", p->key));
    if (p->content_type != NULL)
        rc |= json_array_append_new(conds, json_pack("{s:s}", "Content-Type", p->content_type));
    if (p->length_max >= 0)
        rc |= json_array_append_new(conds, json_pack("[s,I,I]", "content-length-range",
                                                     (json_int_t)p->length_min,
                                                     (json_int_t)p->length_max));
    for (size_t i = 0; i < p->n_fields; i++)
        rc |=
            json_array_append_new(conds, json_pack("{s:s}", p->fields[i].name, p->fields[i].value));
    rc |= json_array_append_new(conds, json_pack("{s:s}", "x-amz-algorithm", SIGV4_ALGORITHM));
    rc |= json_array_append_new(conds, json_pack("{s:s}", "x-amz-credential", cred.data));
    rc |= json_array_append_new(conds, json_pack("{s:s}", "x-amz-date", amz_date));
    rc |= json_object_set_new(root, "expiration", json_string(expiration));
    rc |= json_object_set(root, "conditions", conds);
    if (rc != 0) {
        err = FERRY_ERR_INVALID;
        goto out;
    }
    json = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (json == NULL) {
        err = FERRY_ERR_NOMEM;
        goto out;
    }
    size_t json_len = strlen(json);
    if (json_len > SIGV4_MAX_POLICY_LEN / 4 * 3) {
        err = FERRY_ERR_TOO_LARGE;
        goto out;
    }
    b64 = malloc((json_len + 2) / 3 * 4 + 1);
    if (b64 == NULL) {
        err = FERRY_ERR_NOMEM;
        goto out;
    }
    int b64_len = EVP_EncodeBlock((unsigned char *)b64, (const unsigned char *)json, (int)json_len);
    if (b64_len < 0) {
        err = FERRY_ERR_CRYPTO;
        goto out;
    }
    if ((err = sigv4__signer_sign(signer, now, b64, (size_t)b64_len, sig, amz_date, NULL)))
        goto out;

    if ((err = ferry_buf_append(&url, p->endpoint, base_len)) ||
        (err = ferry_buf_append_byte(&url, '/')) ||
        (err = sigv4__uri_encode(&url, p->bucket, strlen(p->bucket), false)))
        goto out;
    f.fields = calloc(SIGV4_MAX_FORM_FIELDS, sizeof *f.fields);
    if (f.fields == NULL) {
        err = FERRY_ERR_NOMEM;
        goto out;
    }
    size_t cap = SIGV4_MAX_FORM_FIELDS;
    if ((err = form_add(&f, cap, "key", keyfield.data)) ||
        (p->content_type != NULL && (err = form_add(&f, cap, "Content-Type", p->content_type))))
        goto out;
    for (size_t i = 0; i < p->n_fields; i++)
        if ((err = form_add(&f, cap, p->fields[i].name, p->fields[i].value)))
            goto out;
    if ((err = form_add(&f, cap, "x-amz-algorithm", SIGV4_ALGORITHM)) ||
        (err = form_add(&f, cap, "x-amz-credential", cred.data)) ||
        (err = form_add(&f, cap, "x-amz-date", amz_date)) ||
        (err = form_add(&f, cap, "policy", b64)) ||
        (err = form_add(&f, cap, "x-amz-signature", sig)))
        goto out;
    f.url = ferry_buf_detach(&url);
    if (f.url == NULL) {
        err = FERRY_ERR_NOMEM;
        goto out;
    }
    f.expires_at = now + p->expires_s;
    *out = f;
    sigv4_form_init(&f);
out:
    sigv4_form_cleanup(&f);
    json_decref(conds);
    json_decref(root);
    free(json);
    free(b64);
    ferry_buf_cleanup(&cred);
    ferry_buf_cleanup(&url);
    ferry_buf_cleanup(&keyfield);
    return err;
}
