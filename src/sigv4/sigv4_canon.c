/*
 * sigv4_canon.c - canonical requests as S3 defines them, and the primitives
 * under them: URI encoding and decoding, header value folding, query-string
 * parsing, SHA-256/HMAC and signing-key derivation.
 *
 * Invariants: every function here is pure and bounded; inputs come from the
 * network and are checked (lengths against SIGV4_MAX_*, escapes, NUL bytes)
 * before use. The canonical request is built by the same code for the test
 * vectors, for the Authorization-header signer and for every verifier, so
 * signing and checking cannot drift apart. (The pre-signer in sigv4_sign.c
 * has its own fast path; the tests cross-check the two.)
 */
#include "sigv4_internal.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

static const char hexdigits_upper[] = "0123456789ABCDEF";
static const char hexdigits_lower[] = "0123456789abcdef";

/* Bytes that stay as they are in a URI-encoded query value (1) and, in
 * addition, in a path (2: '/'). A table because this is the hot loop of
 * pre-signing. */
static const unsigned char keep_table[256] = {
    ['-'] = 3, ['.'] = 3, ['_'] = 3, ['~'] = 3, ['/'] = 2,
    ['0'] = 3, ['1'] = 3, ['2'] = 3, ['3'] = 3, ['4'] = 3, ['5'] = 3, ['6'] = 3, ['7'] = 3,
    ['8'] = 3, ['9'] = 3,
    ['A'] = 3, ['B'] = 3, ['C'] = 3, ['D'] = 3, ['E'] = 3, ['F'] = 3, ['G'] = 3, ['H'] = 3,
    ['I'] = 3, ['J'] = 3, ['K'] = 3, ['L'] = 3, ['M'] = 3, ['N'] = 3, ['O'] = 3, ['P'] = 3,
    ['Q'] = 3, ['R'] = 3, ['S'] = 3, ['T'] = 3, ['U'] = 3, ['V'] = 3, ['W'] = 3, ['X'] = 3,
    ['Y'] = 3, ['Z'] = 3,
    ['a'] = 3, ['b'] = 3, ['c'] = 3, ['d'] = 3, ['e'] = 3, ['f'] = 3, ['g'] = 3, ['h'] = 3,
    ['i'] = 3, ['j'] = 3, ['k'] = 3, ['l'] = 3, ['m'] = 3, ['n'] = 3, ['o'] = 3, ['p'] = 3,
    ['q'] = 3, ['r'] = 3, ['s'] = 3, ['t'] = 3, ['u'] = 3, ['v'] = 3, ['w'] = 3, ['x'] = 3,
    ['y'] = 3, ['z'] = 3,
};

char *sigv4__put_encoded(char *w, const char *s, size_t len, bool keep_slash)
{
    const unsigned char mask = keep_slash ? 2 : 1;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (keep_table[c] & mask) {
            *w++ = (char)c;
        } else {
            *w++ = '%';
            *w++ = hexdigits_upper[c >> 4];
            *w++ = hexdigits_upper[c & 15];
        }
    }
    return w;
}

ferry_err sigv4__uri_encode(ferry_buf *out, const char *s, size_t len, bool keep_slash)
{
    /* Worst case every byte triples; reserve once so the loop cannot fail. */
    if (len > (SIZE_MAX - 1) / 3)
        return FERRY_ERR_TOO_LARGE;
    ferry_err err = ferry_buf_reserve(out, len * 3);
    if (err)
        return err;
    char *p = sigv4__put_encoded(out->data + out->len, s, len, keep_slash);
    out->len = (size_t)(p - out->data);
    out->data[out->len] = '\0';
    return FERRY_OK;
}

ferry_err sigv4__uri_decode(ferry_buf *out, const char *s, size_t len)
{
    ferry_err err = ferry_buf_reserve(out, len);
    if (err)
        return err;
    char *p = out->data + out->len;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '%') {
            if (len - i < 3)
                return FERRY_ERR_INVALID;
            int hi = OPENSSL_hexchar2int((unsigned char)s[i + 1]);
            int lo = hi < 0 ? -1 : OPENSSL_hexchar2int((unsigned char)s[i + 2]);
            if (hi < 0 || lo < 0)
                return FERRY_ERR_INVALID;
            c = (unsigned char)(hi << 4 | lo);
            i += 2;
        }
        if (c == '\0')
            return FERRY_ERR_INVALID;
        *p++ = (char)c;
    }
    out->len = (size_t)(p - out->data);
    out->data[out->len] = '\0';
    return FERRY_OK;
}

void sigv4__hex(const unsigned char *in, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hexdigits_lower[in[i] >> 4];
        out[2 * i + 1] = hexdigits_lower[in[i] & 15];
    }
    out[2 * n] = '\0';
}

ferry_err sigv4__sha256_hex(const void *data, size_t len, char out[65])
{
    unsigned char md[32];
    unsigned int md_len = 0;
    if (!EVP_Digest(data, len, md, &md_len, EVP_sha256(), NULL) || md_len != 32)
        return FERRY_ERR_CRYPTO;
    sigv4__hex(md, 32, out);
    return FERRY_OK;
}

ferry_err sigv4__hmac(const unsigned char *key, size_t key_len, const void *data, size_t len,
                      unsigned char out[32])
{
    unsigned int out_len = 0;
    if (key_len > INT32_MAX)
        return FERRY_ERR_INVALID;
    if (HMAC(EVP_sha256(), key, (int)key_len, data, len, out, &out_len) == NULL || out_len != 32)
        return FERRY_ERR_CRYPTO;
    return FERRY_OK;
}

ferry_err sigv4__derive_key(const char *secret, const char *date, const char *region,
                            const char *service, unsigned char out[32])
{
    ferry_err err = FERRY_OK;
    unsigned char k[32], k2[32];
    char first[4 + SIGV4_MAX_SECRET_LEN + 1];
    size_t secret_len = strlen(secret);
    if (secret_len > SIGV4_MAX_SECRET_LEN) {
        err = FERRY_ERR_INVALID;
        goto out;
    }
    memcpy(first, "AWS4", 4);
    memcpy(first + 4, secret, secret_len);
    if ((err = sigv4__hmac((const unsigned char *)first, 4 + secret_len, date, strlen(date), k)))
        goto out;
    if ((err = sigv4__hmac(k, 32, region, strlen(region), k2)))
        goto out;
    if ((err = sigv4__hmac(k2, 32, service, strlen(service), k)))
        goto out;
    if ((err = sigv4__hmac(k, 32, "aws4_request", 12, k2)))
        goto out;
    memcpy(out, k2, 32);
out:
    OPENSSL_cleanse(first, sizeof first);
    OPENSSL_cleanse(k, sizeof k);
    OPENSSL_cleanse(k2, sizeof k2);
    return err;
}

static bool is_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

char *sigv4__put_trimmed(char *w, const char *v, size_t len)
{
    size_t start = 0, end = len;
    while (start < end && is_space((unsigned char)v[start]))
        start++;
    while (end > start && is_space((unsigned char)v[end - 1]))
        end--;
    bool in_space = false;
    for (size_t i = start; i < end; i++) {
        unsigned char c = (unsigned char)v[i];
        if (is_space(c)) {
            if (!in_space)
                *w++ = ' ';
            in_space = true;
        } else {
            *w++ = (char)c;
            in_space = false;
        }
    }
    return w;
}

ferry_err sigv4__append_trimmed(ferry_buf *out, const char *v, size_t len)
{
    ferry_err err = ferry_buf_reserve(out, len);
    if (err)
        return err;
    char *p = sigv4__put_trimmed(out->data + out->len, v, len);
    out->len = (size_t)(p - out->data);
    out->data[out->len] = '\0';
    return FERRY_OK;
}

static unsigned char lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
}

bool sigv4__ieq(const char *a, const char *b)
{
    while (*a && *b) {
        if (lower((unsigned char)*a) != lower((unsigned char)*b))
            return false;
        a++;
        b++;
    }
    return *a == *b;
}

bool sigv4__iprefix(const char *s, const char *prefix)
{
    for (; *prefix; s++, prefix++)
        if (*s == '\0' || lower((unsigned char)*s) != lower((unsigned char)*prefix))
            return false;
    return true;
}

bool sigv4__is_token(const char *s, size_t len)
{
    /* RFC 9110 tchar: "!#$%&'*+-.^_`|~", digits and letters. */
    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!(keep_table[c] & 1) && strchr("!#$%&'*+^`|", c) == NULL)
            return false;
        if (c == '\0')
            return false;
    }
    return true;
}

bool sigv4__valid_scope_part(const char *s, size_t max)
{
    size_t n = 0;
    if (s == NULL)
        return false;
    for (; s[n]; n++) {
        unsigned char c = (unsigned char)s[n];
        if (c <= 32 || c >= 127 || c == '/' || n >= max)
            return false;
    }
    return n > 0;
}

bool sigv4__sig_equal(const char *expected_hex, const char *given, size_t given_len)
{
    if (given_len != 64)
        return false;
    return CRYPTO_memcmp(expected_hex, given, 64) == 0;
}

ferry_err sigv4__scope(ferry_buf *out, const char *date, const char *region,
                       const char *service)
{
    return ferry_buf_appendf(out, "%s/%s/%s/aws4_request", date, region, service);
}

/* ------------------------------------------------------------------ */
/* Query strings                                                        */

sigv4_reason sigv4_parse_query(const char *query, sigv4_query *out)
{
    sigv4_query q;
    q.n = 0;
    q.storage = NULL;
    if (query == NULL)
        query = "";
    size_t len = strnlen(query, SIGV4_MAX_QUERY_LEN + 1);
    if (len > SIGV4_MAX_QUERY_LEN)
        return SIGV4_R_MALFORMED_REQUEST;
    /* Decoding never grows a string, so len plus a NUL per name and value
     * bounds the storage. */
    q.storage = malloc(len + 2 * SIGV4_MAX_PARAMS + 2);
    if (q.storage == NULL)
        return SIGV4_R_INTERNAL;
    char *w = q.storage;
    const char *p = query, *end = query + len;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *seg_end = amp ? amp : end;
        if (seg_end > p) { /* empty segments ("a=1&&b=2") carry nothing */
            if (q.n == SIGV4_MAX_PARAMS)
                goto bad;
            const char *eq = memchr(p, '=', (size_t)(seg_end - p));
            const char *name_end = eq ? eq : seg_end;
            const char *parts[2][2] = {{p, name_end}, {eq ? eq + 1 : seg_end, seg_end}};
            for (int k = 0; k < 2; k++) {
                char *start = w;
                for (const char *s = parts[k][0]; s < parts[k][1]; s++) {
                    unsigned char c = (unsigned char)*s;
                    if (c == '%') {
                        if (parts[k][1] - s < 3)
                            goto bad;
                        int hi = OPENSSL_hexchar2int((unsigned char)s[1]),
                            lo = OPENSSL_hexchar2int((unsigned char)s[2]);
                        if (hi < 0 || lo < 0)
                            goto bad;
                        c = (unsigned char)(hi << 4 | lo);
                        s += 2;
                    }
                    if (c == '\0')
                        goto bad;
                    *w++ = (char)c;
                }
                *w++ = '\0';
                if (k == 0) {
                    q.params[q.n].name = start;
                    q.params[q.n].name_len = (size_t)(w - start - 1);
                } else {
                    q.params[q.n].value = start;
                    q.params[q.n].value_len = (size_t)(w - start - 1);
                }
            }
            q.n++;
        }
        p = amp ? amp + 1 : end;
    }
    *out = q;
    return SIGV4_R_OK;
bad:
    free(q.storage);
    return SIGV4_R_MALFORMED_REQUEST;
}

void sigv4_query_cleanup(sigv4_query *q)
{
    if (q == NULL)
        return;
    free(q->storage);
    q->storage = NULL;
    q->n = 0;
}

/* An encoded parameter inside a scratch buffer, for sorting. */
typedef struct enc_param {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
} enc_param;

static int cmp_bytes(const char *a, size_t al, const char *b, size_t bl)
{
    size_t n = al < bl ? al : bl;
    int c = memcmp(a, b, n);
    if (c != 0)
        return c;
    return al < bl ? -1 : al > bl;
}

static int cmp_enc_param(const void *pa, const void *pb)
{
    const enc_param *a = pa, *b = pb;
    int c = cmp_bytes(a->name, a->name_len, b->name, b->name_len);
    return c ? c : cmp_bytes(a->value, a->value_len, b->value, b->value_len);
}

/* Appends the canonical query string of q (minus the parameter named skip,
 * if any): names and values encoded, sorted by name then value. */
static ferry_err canonical_query(ferry_buf *out, const sigv4_query *q, const char *skip)
{
    ferry_err err = FERRY_OK;
    ferry_buf scratch;
    size_t offs[SIGV4_MAX_PARAMS][4];
    enc_param sorted[SIGV4_MAX_PARAMS];
    size_t n = 0;
    ferry_buf_init(&scratch, SIGV4_MAX_QUERY_LEN * 3 + 16);
    for (size_t i = 0; i < q->n; i++) {
        if (skip != NULL && strcmp(q->params[i].name, skip) == 0)
            continue;
        offs[n][0] = scratch.len;
        if ((err = sigv4__uri_encode(&scratch, q->params[i].name, q->params[i].name_len, false)))
            goto out;
        offs[n][1] = scratch.len - offs[n][0];
        offs[n][2] = scratch.len;
        if ((err = sigv4__uri_encode(&scratch, q->params[i].value, q->params[i].value_len,
                                     false)))
            goto out;
        offs[n][3] = scratch.len - offs[n][2];
        n++;
    }
    for (size_t i = 0; i < n; i++) {
        sorted[i].name = ferry_buf_str(&scratch) + offs[i][0];
        sorted[i].name_len = offs[i][1];
        sorted[i].value = ferry_buf_str(&scratch) + offs[i][2];
        sorted[i].value_len = offs[i][3];
    }
    if (n > 1)
        qsort(sorted, n, sizeof sorted[0], cmp_enc_param);
    for (size_t i = 0; i < n; i++) {
        if (i > 0 && (err = ferry_buf_append_byte(out, '&')))
            goto out;
        if ((err = ferry_buf_append(out, sorted[i].name, sorted[i].name_len)) ||
            (err = ferry_buf_append_byte(out, '=')) ||
            (err = ferry_buf_append(out, sorted[i].value, sorted[i].value_len)))
            goto out;
    }
out:
    ferry_buf_cleanup(&scratch);
    return err;
}

/* ------------------------------------------------------------------ */
/* Canonical requests                                                   */

ferry_err sigv4_canonical_request(const sigv4_request *req, const char *signed_headers,
                                  const char *payload_hash, const char *skip_query_param,
                                  ferry_buf *out, sigv4_reason *reason)
{
    ferry_err err = FERRY_OK;
    sigv4_reason why = SIGV4_R_OK;
    sigv4_query q;
    bool have_query = false;
    ferry_buf path;
    size_t start_len = out->len;
    ferry_buf_init(&path, SIGV4_MAX_PATH_LEN);

    if (req->method == NULL || !sigv4__is_token(req->method, strlen(req->method)) ||
        req->path == NULL || req->path[0] != '/' || payload_hash == NULL ||
        signed_headers == NULL || req->n_headers > SIGV4_MAX_HEADERS) {
        why = SIGV4_R_MALFORMED_REQUEST;
        goto out;
    }
    size_t path_len = strnlen(req->path, SIGV4_MAX_PATH_LEN + 1);
    if (path_len > SIGV4_MAX_PATH_LEN || sigv4__uri_decode(&path, req->path, path_len)) {
        why = SIGV4_R_MALFORMED_REQUEST;
        goto out;
    }
    if ((why = sigv4_parse_query(req->query, &q)) != SIGV4_R_OK)
        goto out;
    have_query = true;

    if ((err = ferry_buf_append_str(out, req->method)) || (err = ferry_buf_append_byte(out, '\n')))
        goto out;
    /* S3 signs the path encoded once: decode what came on the wire and
     * encode it canonically, keeping '/'. */
    if ((err = sigv4__uri_encode(out, path.data, path.len, true)) ||
        (err = ferry_buf_append_byte(out, '\n')))
        goto out;
    if ((err = canonical_query(out, &q, skip_query_param)) ||
        (err = ferry_buf_append_byte(out, '\n')))
        goto out;

    /* The signed-headers list must be lower-case tokens in strictly
     * ascending order: that is how every signer writes it, and accepting
     * anything else would let two lists sign the same canonical request. */
    const char *prev = NULL;
    size_t prev_len = 0;
    const char *s = signed_headers;
    if (*s == '\0' || strlen(s) >= 1024) {
        why = SIGV4_R_SIGNED_HEADERS_MALFORMED;
        goto out;
    }
    while (*s) {
        const char *semi = strchr(s, ';');
        size_t nlen = semi ? (size_t)(semi - s) : strlen(s);
        if (!sigv4__is_token(s, nlen)) {
            why = SIGV4_R_SIGNED_HEADERS_MALFORMED;
            goto out;
        }
        for (size_t i = 0; i < nlen; i++)
            if (s[i] >= 'A' && s[i] <= 'Z') {
                why = SIGV4_R_SIGNED_HEADERS_MALFORMED;
                goto out;
            }
        if (prev != NULL && cmp_bytes(prev, prev_len, s, nlen) >= 0) {
            why = SIGV4_R_SIGNED_HEADERS_MALFORMED;
            goto out;
        }
        if ((err = ferry_buf_append(out, s, nlen)) || (err = ferry_buf_append_byte(out, ':')))
            goto out;
        int found = 0;
        for (size_t i = 0; i < req->n_headers; i++) {
            const char *hn = req->headers[i].name;
            if (hn == NULL || req->headers[i].value == NULL || strlen(hn) != nlen ||
                strncasecmp(hn, s, nlen) != 0)
                continue;
            size_t vlen = strnlen(req->headers[i].value, SIGV4_MAX_HEADER_LEN + 1);
            if (vlen > SIGV4_MAX_HEADER_LEN) {
                why = SIGV4_R_MALFORMED_REQUEST;
                goto out;
            }
            /* Repeated headers are joined with commas, in arrival order. */
            if (found++ && (err = ferry_buf_append_byte(out, ',')))
                goto out;
            if ((err = sigv4__append_trimmed(out, req->headers[i].value, vlen)))
                goto out;
        }
        if (!found) {
            why = SIGV4_R_SIGNED_HEADER_MISSING;
            goto out;
        }
        if ((err = ferry_buf_append_byte(out, '\n')))
            goto out;
        prev = s;
        prev_len = nlen;
        s += nlen;
        if (*s == ';') {
            s++;
            if (*s == '\0') {
                why = SIGV4_R_SIGNED_HEADERS_MALFORMED;
                goto out;
            }
        }
    }
    if ((err = ferry_buf_appendf(out, "\n%s\n%s", signed_headers, payload_hash)))
        goto out;
out:
    if (have_query)
        sigv4_query_cleanup(&q);
    ferry_buf_cleanup(&path);
    if (why != SIGV4_R_OK && !err)
        err = FERRY_ERR_INVALID;
    if (err == FERRY_ERR_TOO_LARGE && why == SIGV4_R_OK)
        why = SIGV4_R_MALFORMED_REQUEST;
    else if (err && why == SIGV4_R_OK)
        why = SIGV4_R_INTERNAL;
    if (err) {
        /* Leave out as it was. */
        out->len = start_len;
        if (out->data != NULL)
            out->data[start_len] = '\0';
    }
    *reason = why;
    return err;
}

ferry_err sigv4_string_to_sign(const char *amz_date, const char *scope, const char *creq,
                               size_t creq_len, ferry_buf *out)
{
    char hash[65];
    ferry_err err = sigv4__sha256_hex(creq, creq_len, hash);
    if (err)
        return err;
    return ferry_buf_appendf(out, SIGV4_ALGORITHM "\n%s\n%s\n%s", amz_date, scope, hash);
}

ferry_err sigv4_authorization(const char *access_key_id, const char *secret, const char *region,
                              const char *service, const char *amz_date,
                              const sigv4_request *req, const char *signed_headers,
                              const char *payload_hash, ferry_buf *out)
{
    ferry_err err = FERRY_OK;
    sigv4_reason why;
    ferry_buf creq, sts, scope;
    unsigned char key[32], mac[32];
    char sig[65], date[9];
    ferry_buf_init(&creq, SIGV4_MAX_CANON_LEN);
    ferry_buf_init(&sts, 1024);
    ferry_buf_init(&scope, 512);

    if (!sigv4__valid_scope_part(access_key_id, SIGV4_MAX_ACCESS_KEY_LEN) ||
        !sigv4__valid_scope_part(region, SIGV4_MAX_REGION_LEN) ||
        !sigv4__valid_scope_part(service, SIGV4_MAX_SERVICE_LEN) || secret == NULL ||
        amz_date == NULL || strlen(amz_date) != 16) {
        err = FERRY_ERR_INVALID;
        goto out;
    }
    memcpy(date, amz_date, 8);
    date[8] = '\0';
    if ((err = sigv4_canonical_request(req, signed_headers, payload_hash, NULL, &creq, &why)))
        goto out;
    if ((err = sigv4__scope(&scope, date, region, service)) ||
        (err = sigv4_string_to_sign(amz_date, scope.data, creq.data, creq.len, &sts)))
        goto out;
    if ((err = sigv4__derive_key(secret, date, region, service, key)) ||
        (err = sigv4__hmac(key, 32, sts.data, sts.len, mac)))
        goto out;
    sigv4__hex(mac, 32, sig);
    err = ferry_buf_appendf(out, SIGV4_ALGORITHM " Credential=%s/%s, SignedHeaders=%s, Signature=%s",
                            access_key_id, scope.data, signed_headers, sig);
out:
    OPENSSL_cleanse(key, sizeof key);
    ferry_buf_cleanup(&creq);
    ferry_buf_cleanup(&sts);
    ferry_buf_cleanup(&scope);
    return err;
}
