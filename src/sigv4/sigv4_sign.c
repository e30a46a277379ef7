/*
 * sigv4_sign.c - the signer: credentials, the cached signing key, and
 * pre-signed URLs (query auth) built the way botocore builds them.
 *
 * Invariants:
 * - The signing key depends on (date, region, service); region and service
 *   are fixed per signer, so the cache holds the key of one date. When the
 *   date changes the old key and the HMAC states derived from it are wiped
 *   before the new ones are written.
 * - The HMAC with the cached key is computed from the two precomputed pad
 *   blocks (key XOR ipad, key XOR opad) on one reused digest context: no
 *   allocation, no HMAC set-up per signature. That, reused buffers and no
 *   printf on the hot path make pre-signing fast (see bench/presign).
 * - Pre-signing never fails half-way with visible effects: url_out grows
 *   only on success.
 * - Not thread-safe (the cache and the scratch buffers are mutable): one
 *   signer per thread.
 */
#include "sigv4_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "common/timefmt.h"

/* The latest time ferry_time_split() formats correctly (9999-12-31T23:59:59Z). */
#define SIGV4_MAX_TIME INT64_C(253402300799)

struct sigv4_signer {
    char *access_key_id;
    char *secret;
    char *region;
    char *service;
    char *cred_enc;  /* "akid%2F" ... as in X-Amz-Credential: the access key,
                        then (after the date) region and service, URI-encoded */
    char *scope_enc; /* "region%2Fservice%2Faws4_request", URI-encoded */

    EVP_MD *md;
    EVP_MD_CTX *work;       /* digest context, re-initialised per use */
    unsigned char ipad[64]; /* key ^ 0x36.. : secret, wiped with the key */
    unsigned char opad[64]; /* key ^ 0x5c.. */
    bool have_key;
    char key_date[FERRY_AMZ_DATE_LEN + 1];
    unsigned char key[32];

    ferry_buf creq;    /* canonical request, reused */
    ferry_buf query;   /* canonical query string, reused */
    ferry_buf scratch; /* encoded values awaiting sorting, reused */
};

/* memcpy that returns the end, for assembling fixed-size strings. */
static char *put(char *w, const char *s, size_t n)
{
    memcpy(w, s, n);
    return w + n;
}

void sigv4_signer_free(sigv4_signer *signer)
{
    if (signer == NULL)
        return;
    if (signer->secret != NULL) {
        OPENSSL_cleanse(signer->secret, strlen(signer->secret));
        free(signer->secret);
    }
    OPENSSL_cleanse(signer->key, sizeof signer->key);
    OPENSSL_cleanse(signer->ipad, sizeof signer->ipad);
    OPENSSL_cleanse(signer->opad, sizeof signer->opad);
    /* EVP_MD_CTX_free cleanses the digest state, which held key material. */
    EVP_MD_CTX_free(signer->work);
    EVP_MD_free(signer->md);
    free(signer->access_key_id);
    free(signer->region);
    free(signer->service);
    free(signer->cred_enc);
    free(signer->scope_enc);
    ferry_buf_cleanup(&signer->creq);
    ferry_buf_cleanup(&signer->query);
    ferry_buf_cleanup(&signer->scratch);
    free(signer);
}

sigv4_signer *sigv4_signer_new(const char *access_key_id, const char *secret, const char *region,
                               const char *service)
{
    if (!sigv4__valid_scope_part(access_key_id, SIGV4_MAX_ACCESS_KEY_LEN) ||
        !sigv4__valid_scope_part(region, SIGV4_MAX_REGION_LEN) ||
        !sigv4__valid_scope_part(service, SIGV4_MAX_SERVICE_LEN) || secret == NULL ||
        secret[0] == '\0' || strlen(secret) > SIGV4_MAX_SECRET_LEN)
        return NULL;
    sigv4_signer *s = calloc(1, sizeof *s);
    if (s == NULL)
        return NULL;
    ferry_buf_init(&s->creq, SIGV4_MAX_CANON_LEN);
    ferry_buf_init(&s->query, SIGV4_MAX_CANON_LEN);
    ferry_buf_init(&s->scratch, SIGV4_MAX_CANON_LEN);
    ferry_buf enc;
    ferry_buf_init(&enc, SIGV4_MAX_ACCESS_KEY_LEN * 3);
    s->access_key_id = strdup(access_key_id);
    s->secret = strdup(secret);
    s->region = strdup(region);
    s->service = strdup(service);
    s->md = EVP_MD_fetch(NULL, "SHA256", NULL);
    s->work = EVP_MD_CTX_new();
    if (sigv4__uri_encode(&enc, access_key_id, strlen(access_key_id), false) == FERRY_OK)
        s->cred_enc = ferry_buf_detach(&enc);
    ferry_buf_init(&enc, (SIGV4_MAX_REGION_LEN + SIGV4_MAX_SERVICE_LEN) * 3 + 32);
    if (sigv4__uri_encode(&enc, region, strlen(region), false) == FERRY_OK &&
        ferry_buf_append_str(&enc, "%2F") == FERRY_OK &&
        sigv4__uri_encode(&enc, service, strlen(service), false) == FERRY_OK &&
        ferry_buf_append_str(&enc, "%2Faws4_request") == FERRY_OK)
        s->scope_enc = ferry_buf_detach(&enc);
    ferry_buf_cleanup(&enc);
    if (s->access_key_id == NULL || s->secret == NULL || s->region == NULL || s->service == NULL ||
        s->md == NULL || s->work == NULL || s->cred_enc == NULL || s->scope_enc == NULL) {
        sigv4_signer_free(s);
        return NULL;
    }
    return s;
}

/* Makes sure the cached key is the one for date (8 chars). */
static ferry_err signer_key_for(sigv4_signer *s, const char *date)
{
    ferry_err err;
    if (s->have_key && memcmp(s->key_date, date, FERRY_AMZ_DATE_LEN) == 0)
        return FERRY_OK;
    /* Wipe the old key before anything else: a failure below must not
     * leave a stale key usable either. */
    s->have_key = false;
    OPENSSL_cleanse(s->key, sizeof s->key);
    OPENSSL_cleanse(s->ipad, sizeof s->ipad);
    OPENSSL_cleanse(s->opad, sizeof s->opad);
    if ((err = sigv4__derive_key(s->secret, date, s->region, s->service, s->key)))
        return err;
    memset(s->ipad, 0x36, sizeof s->ipad);
    memset(s->opad, 0x5c, sizeof s->opad);
    for (size_t i = 0; i < sizeof s->key; i++) {
        s->ipad[i] ^= s->key[i];
        s->opad[i] ^= s->key[i];
    }
    memcpy(s->key_date, date, FERRY_AMZ_DATE_LEN);
    s->key_date[FERRY_AMZ_DATE_LEN] = '\0';
    s->have_key = true;
    return FERRY_OK;
}

/* Starts a SHA-256 on the signer's context. The first time fetches the
 * implementation; after that, passing NULL re-initialises the same digest,
 * which lets OpenSSL keep its context instead of freeing and allocating
 * one per hash. */
static int digest_init(sigv4_signer *s)
{
    if (EVP_MD_CTX_get0_md(s->work) == NULL)
        return EVP_DigestInit_ex2(s->work, s->md, NULL);
    return EVP_DigestInit_ex2(s->work, NULL, NULL);
}

/* HMAC-SHA256(cached key, msg) as hex (RFC 2104 over the cached pads). */
static ferry_err signer_mac_hex(sigv4_signer *s, const char *msg, size_t len, char out[65])
{
    unsigned char inner[32], mac[32];
    unsigned int n = 0;
    if (!digest_init(s) || !EVP_DigestUpdate(s->work, s->ipad, sizeof s->ipad) ||
        !EVP_DigestUpdate(s->work, msg, len) || !EVP_DigestFinal_ex(s->work, inner, &n) ||
        !digest_init(s) || !EVP_DigestUpdate(s->work, s->opad, sizeof s->opad) ||
        !EVP_DigestUpdate(s->work, inner, sizeof inner) || !EVP_DigestFinal_ex(s->work, mac, &n))
        return FERRY_ERR_CRYPTO;
    sigv4__hex(mac, sizeof mac, out);
    return FERRY_OK;
}

static ferry_err signer_sha256_hex(sigv4_signer *s, const char *msg, size_t len, char out[65])
{
    unsigned char md[32];
    unsigned int n = 0;
    if (!digest_init(s) || !EVP_DigestUpdate(s->work, msg, len) ||
        !EVP_DigestFinal_ex(s->work, md, &n))
        return FERRY_ERR_CRYPTO;
    sigv4__hex(md, sizeof md, out);
    return FERRY_OK;
}

/* Splits "scheme://authority[/]" and derives the host header botocore uses:
 * the host lower-cased, the port kept unless it is the scheme's default. */
static ferry_err parse_endpoint(const char *endpoint, size_t *base_len, char *host, size_t host_cap)
{
    size_t scheme_len;
    const char *default_port;
    if (endpoint == NULL)
        return FERRY_ERR_INVALID;
    if (strncasecmp(endpoint, "https://", 8) == 0) {
        scheme_len = 8;
        default_port = "443";
    } else if (strncasecmp(endpoint, "http://", 7) == 0) {
        scheme_len = 7;
        default_port = "80";
    } else {
        return FERRY_ERR_INVALID;
    }
    const char *auth = endpoint + scheme_len;
    size_t alen = strlen(auth);
    if (alen > 0 && auth[alen - 1] == '/')
        alen--;
    if (alen == 0 || alen >= host_cap)
        return FERRY_ERR_INVALID;
    size_t host_end = alen; /* where the port (":NNN") starts, or alen */
    for (size_t i = 0; i < alen; i++) {
        unsigned char c = (unsigned char)auth[i];
        if (c <= 32 || c >= 127 || c == '/' || c == '?' || c == '#' || c == '@' || c == '\\')
            return FERRY_ERR_INVALID;
    }
    if (auth[0] == '[') {
        const char *close = memchr(auth, ']', alen);
        if (close == NULL)
            return FERRY_ERR_INVALID;
        host_end = (size_t)(close - auth) + 1;
        if (host_end != alen && auth[host_end] != ':')
            return FERRY_ERR_INVALID;
    } else {
        const char *colon = memchr(auth, ':', alen);
        if (colon != NULL)
            host_end = (size_t)(colon - auth);
    }
    if (host_end == 0)
        return FERRY_ERR_INVALID;
    size_t hlen = host_end;
    if (host_end < alen) {
        const char *port = auth + host_end + 1;
        size_t plen = alen - host_end - 1;
        if (plen == 0 || plen > 5)
            return FERRY_ERR_INVALID;
        long v = 0;
        for (size_t i = 0; i < plen; i++) {
            if (port[i] < '0' || port[i] > '9')
                return FERRY_ERR_INVALID;
            v = v * 10 + (port[i] - '0');
        }
        if (v < 1 || v > 65535)
            return FERRY_ERR_INVALID;
        if (!(plen == strlen(default_port) && memcmp(port, default_port, plen) == 0))
            hlen = alen;
    }
    for (size_t i = 0; i < hlen; i++) {
        char c = auth[i];
        host[i] = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
    }
    host[hlen] = '\0';
    *base_len = scheme_len + alen;
    return FERRY_OK;
}

/* Writes v (>= 0) in decimal; returns the length. No NUL. */
static size_t format_decimal(char out[24], int64_t v)
{
    char tmp[24];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v > 0);
    for (size_t i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    return n;
}

static bool reserved_query_name(const char *name)
{
    static const char *const reserved[] = {
        "X-Amz-Algorithm", "X-Amz-Credential",    "X-Amz-Date",
        "X-Amz-Expires",   "X-Amz-SignedHeaders", "X-Amz-Signature",
    };
    for (size_t i = 0; i < sizeof reserved / sizeof reserved[0]; i++)
        if (sigv4__ieq(name, reserved[i]))
            return true;
    return false;
}

static bool value_ok(const char *v)
{
    if (v == NULL)
        return false;
    size_t n = strnlen(v, SIGV4_MAX_HEADER_LEN + 1);
    if (n > SIGV4_MAX_HEADER_LEN)
        return false;
    for (size_t i = 0; i < n; i++)
        if (v[i] == '\r' || v[i] == '\n')
            return false;
    return true;
}

/* A caller header, lower-cased, for sorting. */
typedef struct hdr_ref {
    char name[128];
    size_t idx;       /* index in the caller's array; SIZE_MAX for host */
    size_t value_len; /* raw value length */
} hdr_ref;

static int cmp_hdr_ref(const void *pa, const void *pb)
{
    const hdr_ref *a = pa, *b = pb;
    int c = strcmp(a->name, b->name);
    if (c)
        return c;
    /* Keep duplicates in the caller's order: they are joined in order. */
    return a->idx < b->idx ? -1 : a->idx > b->idx;
}

typedef struct qs_ref {
    size_t name_off, name_len, value_off, value_len;
} qs_ref;

ferry_err sigv4_presign(sigv4_signer *s, const sigv4_presign_params *p, int64_t now,
                        ferry_buf *url_out)
{
    ferry_err err = FERRY_OK;
    char host[300];
    char amz_date[FERRY_AMZ_DATETIME_LEN + 1];
    char date[FERRY_AMZ_DATE_LEN + 1];
    char hash[65], sig[65];
    char sts[64 + SIGV4_MAX_REGION_LEN + SIGV4_MAX_SERVICE_LEN + 64 + 16];
    size_t base_len = 0;
    hdr_ref hdrs[33];
    size_t n_hdrs = p->n_headers;
    size_t url_start = url_out->len;

    if (p->method == NULL || !sigv4__is_token(p->method, strlen(p->method)) || p->path == NULL ||
        p->path[0] != '/' || strlen(p->path) > SIGV4_MAX_PATH_LEN ||
        n_hdrs >= sizeof hdrs / sizeof hdrs[0] || p->n_query > SIGV4_MAX_PARAMS ||
        (n_hdrs > 0 && p->headers == NULL) || (p->n_query > 0 && p->query == NULL))
        return FERRY_ERR_INVALID;
    if (p->expires_s < SIGV4_MIN_EXPIRES_S || p->expires_s > SIGV4_MAX_EXPIRES_S || now < 0 ||
        now > SIGV4_MAX_TIME)
        return FERRY_ERR_RANGE;
    if ((err = parse_endpoint(p->endpoint, &base_len, host, sizeof host)))
        return err;
    for (size_t i = 0; i < n_hdrs; i++) {
        const char *name = p->headers[i].name;
        size_t nlen = name ? strlen(name) : 0;
        if (!sigv4__is_token(name, nlen) || nlen >= sizeof hdrs[i].name ||
            !value_ok(p->headers[i].value) || sigv4__ieq(name, "host"))
            return FERRY_ERR_INVALID;
        for (size_t k = 0; k <= nlen; k++)
            hdrs[i].name[k] = (name[k] >= 'A' && name[k] <= 'Z') ? (char)(name[k] + 32) : name[k];
        hdrs[i].idx = i;
    }
    for (size_t i = 0; i < p->n_query; i++)
        if (p->query[i].name == NULL || p->query[i].value == NULL || p->query[i].name[0] == '\0' ||
            reserved_query_name(p->query[i].name))
            return FERRY_ERR_INVALID;
    /* host joins the caller's headers so that one sorted list drives both
     * the canonical headers and X-Amz-SignedHeaders. */
    memcpy(hdrs[n_hdrs].name, "host", 5);
    hdrs[n_hdrs].idx = SIZE_MAX;
    n_hdrs++;
    /* Insertion sort: a handful of headers, and no allocation. */
    for (size_t i = 1; i < n_hdrs; i++) {
        hdr_ref cur = hdrs[i];
        size_t j = i;
        while (j > 0 && cmp_hdr_ref(&hdrs[j - 1], &cur) > 0) {
            hdrs[j] = hdrs[j - 1];
            j--;
        }
        hdrs[j] = cur;
    }

    ferry_time_amz_datetime(now, amz_date);
    memcpy(date, amz_date, FERRY_AMZ_DATE_LEN);
    date[FERRY_AMZ_DATE_LEN] = '\0';
    if ((err = signer_key_for(s, date)))
        return err;

    ferry_buf *q = &s->query, *c = &s->creq, *sc = &s->scratch;
    ferry_buf_reset(q);
    ferry_buf_reset(c);
    ferry_buf_reset(sc);

    /* X-Amz-SignedHeaders value, encoded (';' is %3B), into scratch. */
    for (size_t i = 0; i < n_hdrs; i++) {
        if (i > 0 && strcmp(hdrs[i].name, hdrs[i - 1].name) == 0)
            continue;
        if ((i > 0 && (err = ferry_buf_append(sc, "%3B", 3))) ||
            (err = sigv4__uri_encode(sc, hdrs[i].name, strlen(hdrs[i].name), false)))
            goto out;
    }
    size_t sh_len = sc->len;

    /* The auth parameters, already in sorted order among themselves. */
    char expires[24];
    size_t expires_len = format_decimal(expires, p->expires_s);
    if ((err = ferry_buf_append(q, "X-Amz-Algorithm=" SIGV4_ALGORITHM "&X-Amz-Credential=",
                                sizeof("X-Amz-Algorithm=" SIGV4_ALGORITHM "&X-Amz-Credential=") -
                                    1)) ||
        (err = ferry_buf_append_str(q, s->cred_enc)) || (err = ferry_buf_append(q, "%2F", 3)) ||
        (err = ferry_buf_append(q, date, FERRY_AMZ_DATE_LEN)) ||
        (err = ferry_buf_append(q, "%2F", 3)) || (err = ferry_buf_append_str(q, s->scope_enc)) ||
        (err = ferry_buf_append(q, "&X-Amz-Date=", 12)) ||
        (err = ferry_buf_append(q, amz_date, FERRY_AMZ_DATETIME_LEN)) ||
        (err = ferry_buf_append(q, "&X-Amz-Expires=", 15)) ||
        (err = ferry_buf_append(q, expires, expires_len)) ||
        (err = ferry_buf_append(q, "&X-Amz-SignedHeaders=", 21)) ||
        (err = ferry_buf_append(q, sc->data, sh_len)))
        goto out;

    if (p->n_query > 0) {
        /* Merge the caller's parameters in: encode everything into scratch,
         * sort by encoded name then value, and rebuild. */
        qs_ref refs[SIGV4_MAX_PARAMS + 5];
        size_t n = 0;
        ferry_buf_reset(sc);
        for (size_t i = 0; i < p->n_query; i++) {
            refs[n].name_off = sc->len;
            if ((err = sigv4__uri_encode(sc, p->query[i].name, strlen(p->query[i].name), false)))
                goto out;
            refs[n].name_len = sc->len - refs[n].name_off;
            refs[n].value_off = sc->len;
            if ((err = sigv4__uri_encode(sc, p->query[i].value, strlen(p->query[i].value), false)))
                goto out;
            refs[n].value_len = sc->len - refs[n].value_off;
            n++;
        }
        /* The five auth parameters from q, split at '&' and '='. */
        size_t auth_off = sc->len;
        if ((err = ferry_buf_append(sc, q->data, q->len)))
            goto out;
        size_t pos = auth_off;
        while (pos < sc->len) {
            char *amp = memchr(sc->data + pos, '&', sc->len - pos);
            size_t end = amp ? (size_t)(amp - sc->data) : sc->len;
            char *eq = memchr(sc->data + pos, '=', end - pos);
            refs[n].name_off = pos;
            refs[n].name_len = (size_t)(eq - sc->data) - pos;
            refs[n].value_off = (size_t)(eq - sc->data) + 1;
            refs[n].value_len = end - refs[n].value_off;
            n++;
            pos = end + 1;
        }
        /* Insertion sort: n is small and this avoids a comparator that
         * needs the buffer's address. */
        for (size_t i = 1; i < n; i++) {
            qs_ref cur = refs[i];
            size_t j = i;
            while (j > 0) {
                const qs_ref *prev = &refs[j - 1];
                size_t m = prev->name_len < cur.name_len ? prev->name_len : cur.name_len;
                int cmp = memcmp(sc->data + prev->name_off, sc->data + cur.name_off, m);
                if (cmp == 0)
                    cmp = prev->name_len < cur.name_len ? -1 : prev->name_len > cur.name_len;
                if (cmp == 0) {
                    m = prev->value_len < cur.value_len ? prev->value_len : cur.value_len;
                    cmp = memcmp(sc->data + prev->value_off, sc->data + cur.value_off, m);
                    if (cmp == 0)
                        cmp =
                            prev->value_len < cur.value_len ? -1 : prev->value_len > cur.value_len;
                }
                if (cmp <= 0)
                    break;
                refs[j] = refs[j - 1];
                j--;
            }
            refs[j] = cur;
        }
        ferry_buf_reset(q);
        for (size_t i = 0; i < n; i++) {
            if ((i > 0 && (err = ferry_buf_append_byte(q, '&'))) ||
                (err = ferry_buf_append(q, sc->data + refs[i].name_off, refs[i].name_len)) ||
                (err = ferry_buf_append_byte(q, '=')) ||
                (err = ferry_buf_append(q, sc->data + refs[i].value_off, refs[i].value_len)))
                goto out;
        }
    }

    /* The canonical request, written in place after one reservation: the
     * bound is generous (every path byte may triple; header values only
     * shrink when trimmed). */
    size_t method_len = strlen(p->method), path_raw = strlen(p->path);
    size_t need = method_len + 1 + 3 * path_raw + 1 + q->len + 2 + sizeof SIGV4_UNSIGNED_PAYLOAD;
    for (size_t i = 0; i < n_hdrs; i++) {
        size_t vlen =
            hdrs[i].idx == SIZE_MAX ? strlen(host) : strlen(p->headers[hdrs[i].idx].value);
        hdrs[i].value_len = vlen;
        need += 2 * strlen(hdrs[i].name) + vlen + 3;
    }
    if ((err = ferry_buf_reserve(c, need)))
        goto out;
    char *w = c->data;
    w = put(w, p->method, method_len);
    *w++ = '\n';
    char *path_enc = w;
    w = sigv4__put_encoded(w, p->path, path_raw, true);
    size_t path_len = (size_t)(w - path_enc);
    *w++ = '\n';
    w = put(w, q->data, q->len);
    for (size_t i = 0; i < n_hdrs; i++) {
        const char *v = hdrs[i].idx == SIZE_MAX ? host : p->headers[hdrs[i].idx].value;
        if (i > 0 && strcmp(hdrs[i].name, hdrs[i - 1].name) == 0) {
            *w++ = ','; /* a repeated header: values joined in order */
        } else {
            *w++ = '\n';
            w = put(w, hdrs[i].name, strlen(hdrs[i].name));
            *w++ = ':';
        }
        w = sigv4__put_trimmed(w, v, hdrs[i].value_len);
    }
    *w++ = '\n';
    *w++ = '\n';
    for (size_t i = 0; i < n_hdrs; i++) {
        if (i > 0 && strcmp(hdrs[i].name, hdrs[i - 1].name) == 0)
            continue;
        if (i > 0)
            *w++ = ';';
        w = put(w, hdrs[i].name, strlen(hdrs[i].name));
    }
    *w++ = '\n';
    w = put(w, SIGV4_UNSIGNED_PAYLOAD, sizeof SIGV4_UNSIGNED_PAYLOAD - 1);
    c->len = (size_t)(w - c->data);
    c->data[c->len] = '\0';

    if ((err = signer_sha256_hex(s, c->data, c->len, hash)))
        goto out;
    /* The string to sign, assembled by hand: this is the hot path. Its
     * parts are bounded (region and service by SIGV4_MAX_*_LEN). */
    w = sts;
    w = put(w, SIGV4_ALGORITHM "\n", sizeof SIGV4_ALGORITHM);
    w = put(w, amz_date, FERRY_AMZ_DATETIME_LEN);
    w = put(w, "\n", 1);
    w = put(w, date, FERRY_AMZ_DATE_LEN);
    w = put(w, "/", 1);
    w = put(w, s->region, strlen(s->region));
    w = put(w, "/", 1);
    w = put(w, s->service, strlen(s->service));
    w = put(w, "/aws4_request\n", 14);
    w = put(w, hash, 64);
    if ((err = signer_mac_hex(s, sts, (size_t)(w - sts), sig)))
        goto out;

    /* The URL: endpoint, encoded path, the canonical query and the
     * signature. The query is already encoded exactly as signed. */
    if ((err = ferry_buf_reserve(url_out, base_len + path_len + q->len + 18 + 64 + 1)))
        goto out;
    if ((err = ferry_buf_append(url_out, p->endpoint, base_len)) ||
        (err = ferry_buf_append(url_out, path_enc, path_len)) ||
        (err = ferry_buf_append_byte(url_out, '?')) ||
        (err = ferry_buf_append(url_out, q->data, q->len)) ||
        (err = ferry_buf_append(url_out, "&X-Amz-Signature=", 17)) ||
        (err = ferry_buf_append(url_out, sig, 64)))
        goto out;
out:
    if (err) {
        url_out->len = url_start;
        if (url_out->data != NULL)
            url_out->data[url_start] = '\0';
    }
    return err;
}

ferry_err sigv4__signer_sign(sigv4_signer *s, int64_t now, const char *msg, size_t len,
                             char sig[65], char amz_date[FERRY_AMZ_DATETIME_LEN + 1],
                             ferry_buf *credential)
{
    char date[FERRY_AMZ_DATE_LEN + 1];
    ferry_err err;
    if (now < 0 || now > SIGV4_MAX_TIME)
        return FERRY_ERR_RANGE;
    ferry_time_amz_datetime(now, amz_date);
    memcpy(date, amz_date, FERRY_AMZ_DATE_LEN);
    date[FERRY_AMZ_DATE_LEN] = '\0';
    if ((err = signer_key_for(s, date)))
        return err;
    if (credential != NULL &&
        (err = ferry_buf_appendf(credential, "%s/%s/%s/%s/aws4_request", s->access_key_id, date,
                                 s->region, s->service)))
        return err;
    if (msg == NULL) /* the caller only wanted the date and credential */
        return FERRY_OK;
    return signer_mac_hex(s, msg, len, sig);
}

ferry_err sigv4__signer_endpoint(const char *endpoint, size_t *base_len)
{
    char host[300];
    return parse_endpoint(endpoint, base_len, host, sizeof host);
}
