/*
 * grant_key.c - grant ids, object keys, and the ledger record of a grant.
 *
 * A grant id is "g_" followed by 26 characters of lower-case Crockford
 * base32 (0-9, a-z without i, l, o, u) that encode 128 bits, most
 * significant bit first, with two zero bits in front (26 x 5 = 130), so the
 * first character is always 0-7. The first 48 bits are the issue time in
 * milliseconds since the epoch, the other 80 come from RAND_bytes
 * (drawn for 64 ids at a time, id_random). Why the
 * time: ids of grants issued one after another sort one after another, so
 * the ledger's primary key grows at its end (one B-tree page written per
 * batch of grants instead of one random page per grant; docs/benchmarks.md).
 * 80 random bits keep ids collision-free in practice and unguessable (the
 * id is not a secret anyway: the URL's signature is what authorises); the
 * alphabet needs no escaping in URLs, S3 keys, MQTT topics, file names or
 * SQL literals.
 *
 * The object key is "<device>/<yyyy>/<mm>/<dd>/<grant-id>-<safe-name>", the
 * date being the UTC date of issue. Every part is checked here again, so a
 * key is never built from unchecked text even if a caller skipped a step.
 */
#include "grants.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/timefmt.h"

static const char crockford[] = "0123456789abcdefghjkmnpqrstvwxyz";

#define ID_RANDOM_BYTES 10 /* the 80 random bits of an id */
/* RAND_bytes is drawn 64 ids at a time: one call per id cost the grant
 * path a DRBG round with its locks and a getpid() system call (OpenSSL's
 * fork check) before every answer. Per thread, so no lock; each id's bytes
 * are wiped from the pool as they are taken. A process that forks without
 * exec would share what is left with its child; ferryd's children exec. */
#define ID_POOL_BYTES (64 * ID_RANDOM_BYTES)
static _Thread_local unsigned char id_pool[ID_POOL_BYTES];
static _Thread_local size_t id_pool_left;

/* Writes ID_RANDOM_BYTES random bytes to out. */
static ferry_err id_random(unsigned char *out)
{
    if (id_pool_left < ID_RANDOM_BYTES) {
        if (RAND_bytes(id_pool, sizeof id_pool) != 1)
            return FERRY_ERR_CRYPTO;
        id_pool_left = sizeof id_pool;
    }
    id_pool_left -= ID_RANDOM_BYTES;
    memcpy(out, id_pool + id_pool_left, ID_RANDOM_BYTES);
    OPENSSL_cleanse(id_pool + id_pool_left, ID_RANDOM_BYTES);
    return FERRY_OK;
}

ferry_err grant_id_new(char out[GRANT_ID_LEN + 1])
{
    unsigned char raw[6 + ID_RANDOM_BYTES];
    uint32_t acc = 0;
    int bits = 2; /* the two leading zero bits */
    size_t o = 2;

    if (out == NULL)
        return FERRY_ERR_INVALID;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t ms = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
    for (int i = 5; i >= 0; i--, ms >>= 8)
        raw[i] = (unsigned char)(ms & 0xffu);
    if (id_random(raw + 6) != FERRY_OK)
        return FERRY_ERR_CRYPTO;
    out[0] = 'g';
    out[1] = '_';
    for (size_t i = 0; i < sizeof raw; i++) {
        acc = (acc << 8) | raw[i];
        bits += 8;
        while (bits >= 5) {
            bits -= 5;
            out[o++] = crockford[(acc >> bits) & 31u];
        }
        acc &= (1u << bits) - 1u; /* keep only the bits not yet written */
    }
    out[o] = '\0';
    OPENSSL_cleanse(raw, sizeof raw);
    return FERRY_OK;
}

bool grant_id_valid(const char *s)
{
    if (s == NULL || strnlen(s, GRANT_ID_LEN + 1) != GRANT_ID_LEN || s[0] != 'g' || s[1] != '_')
        return false;
    if (s[2] < '0' || s[2] > '7')
        return false;
    for (size_t i = 2; i < GRANT_ID_LEN; i++) {
        if (s[i] == '\0' || strchr(crockford, s[i]) == NULL)
            return false;
    }
    return true;
}

/* A sanitised name as grant_safe_name() makes them: re-sanitising it must
 * give it back unchanged. */
static bool safe_name_valid(const char *name)
{
    char again[GRANT_SAFE_NAME_MAX + 1];
    size_t n;
    if (name == NULL)
        return false;
    n = strnlen(name, GRANT_SAFE_NAME_MAX + 1);
    if (n == 0 || n > GRANT_SAFE_NAME_MAX)
        return false;
    if (grant_safe_name(name, n, again, sizeof again, NULL) != FERRY_OK)
        return false;
    return strcmp(again, name) == 0;
}

ferry_err grant_object_key(const char *device, int64_t now, const char *grant_id,
                           const char *safe_name, char *out, size_t out_size)
{
    ferry_tm tm;
    int n;
    if (out == NULL || !grant_device_id_valid(device) || !grant_id_valid(grant_id) ||
        !safe_name_valid(safe_name) || now < 0)
        return FERRY_ERR_INVALID;
    ferry_time_split(now, &tm);
    n = snprintf(out, out_size, "%s/%04d/%02d/%02d/%s-%s", device, tm.year, tm.month, tm.day,
                 grant_id, safe_name);
    if (n < 0 || (size_t)n >= out_size)
        return FERRY_ERR_TOO_LARGE;
    return FERRY_OK;
}

ferry_err grant_build(const grant_policy *p, const grant_request *req, const char *device,
                      const char *bucket, int64_t now, ledger_grant *out)
{
    ferry_err err;
    ledger_grant g;
    char id[GRANT_ID_LEN + 1];

    if (p == NULL || req == NULL || out == NULL || bucket == NULL || bucket[0] == '\0')
        return FERRY_ERR_INVALID;
    if (strnlen(bucket, LEDGER_BUCKET_MAX + 1) > LEDGER_BUCKET_MAX)
        return FERRY_ERR_TOO_LARGE;
    memset(&g, 0, sizeof g);
    if ((err = grant_id_new(id)) != FERRY_OK)
        return err;
    if ((err = grant_object_key(device, now, id, req->name, g.key, sizeof g.key)) != FERRY_OK)
        return err;
    /* Lengths are bounded by the checks above and the request's own
     * bounds, each no larger than the ledger's field. */
    snprintf(g.id, sizeof g.id, "%s", id);
    snprintf(g.device, sizeof g.device, "%s", device);
    snprintf(g.request_id, sizeof g.request_id, "%s", req->id);
    snprintf(g.bucket, sizeof g.bucket, "%s", bucket);
    snprintf(g.method, sizeof g.method, "%s",
             grant_method_str(grant_method_choose(p, req->method, req->size)));
    snprintf(g.content_type, sizeof g.content_type, "%s", req->content_type);
    if (req->has_sha256)
        snprintf(g.sha256, sizeof g.sha256, "%s", req->sha256_hex);
    g.size = req->size;
    g.state = LEDGER_GRANT_ISSUED;
    g.issued_at = now;
    g.expires_at = now + grant_policy_expiry_s(p, req->size);
    *out = g;
    return FERRY_OK;
}
