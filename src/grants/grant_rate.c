/*
 * grant_rate.c - per-device request rate limiting: a token bucket per
 * device in a bounded, chained hash table behind one mutex.
 *
 * Each bucket holds up to `burst` tokens and refills continuously at
 * `rate_per_s`; a request takes one token or is refused. Rate and burst
 * come with every call (they are the device's current policy), so a policy
 * change applies at once; tokens are clamped to the new burst.
 *
 * Bounded memory: at most max_entries devices are tracked. When a new
 * device arrives at a full table, one sweep forgets every device whose
 * bucket has refilled completely (a full bucket is exactly what a new entry
 * would start with, so forgetting it changes no decision). Only if no bucket
 * is full is the device idle longest forgotten, which errs on the lenient
 * side for it; size the table above the fleet to never get there. A sweep
 * costs O(max_entries) but frees every idle entry at once.
 *
 * The hash is FNV-1a over the device id, seeded from RAND_bytes per table
 * so that the bucket a device lands in cannot be predicted from outside.
 * Device ids come from authenticated topics, so this is defence in depth
 * rather than the only protection against collisions.
 *
 * The buckets are per process: N ferryd sharing a fleet allow a device up
 * to N times its rate. The limits that must hold fleet-wide (open grants,
 * the daily quota) are enforced in the ledger instead.
 *
 * Time is the caller's monotonic clock in nanoseconds; a clock that goes
 * backwards refills nothing.
 */
#include "grants.h"

#include <math.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

typedef struct rate_entry {
    struct rate_entry *next;
    double tokens;
    double rate_per_s; /* as of the last request: used when sweeping */
    double burst;
    int64_t last_ns;
    char device[GRANT_DEVICE_MAX + 1];
} rate_entry;

struct grant_rate_limiter {
    pthread_mutex_t lock;
    rate_entry **buckets;
    size_t nbuckets; /* a power of two */
    size_t count;
    size_t max_entries;
    uint64_t seed;
};

static uint64_t hash_device(uint64_t seed, const char *s)
{
    uint64_t h = UINT64_C(14695981039346656037) ^ seed;
    for (; *s != '\0'; s++) {
        h ^= (unsigned char)*s;
        h *= UINT64_C(1099511628211);
    }
    /* Final mix so that the low bits (the bucket index) depend on all. */
    h ^= h >> 33;
    h *= UINT64_C(0xff51afd7ed558ccd);
    h ^= h >> 33;
    return h;
}

ferry_err grant_rate_limiter_new(size_t max_entries, grant_rate_limiter **out)
{
    ferry_err err = FERRY_OK;
    grant_rate_limiter *rl = NULL;
    size_t nb = 16;

    if (out == NULL || max_entries < 1 || max_entries > ((size_t)1 << 24))
        return FERRY_ERR_INVALID;
    while (nb < max_entries)
        nb <<= 1;
    rl = calloc(1, sizeof *rl);
    if (rl == NULL)
        return FERRY_ERR_NOMEM;
    rl->buckets = calloc(nb, sizeof *rl->buckets);
    if (rl->buckets == NULL) {
        err = FERRY_ERR_NOMEM;
        goto out;
    }
    if (RAND_bytes((unsigned char *)&rl->seed, sizeof rl->seed) != 1) {
        err = FERRY_ERR_CRYPTO;
        goto out;
    }
    if (pthread_mutex_init(&rl->lock, NULL) != 0) {
        err = FERRY_ERR_INTERNAL;
        goto out;
    }
    rl->nbuckets = nb;
    rl->max_entries = max_entries;
    *out = rl;
    rl = NULL;
out:
    if (rl != NULL) {
        free(rl->buckets);
        free(rl);
    }
    return err;
}

void grant_rate_limiter_free(grant_rate_limiter *rl)
{
    if (rl == NULL)
        return;
    for (size_t i = 0; i < rl->nbuckets; i++) {
        rate_entry *e = rl->buckets[i];
        while (e != NULL) {
            rate_entry *next = e->next;
            free(e);
            e = next;
        }
    }
    pthread_mutex_destroy(&rl->lock);
    free(rl->buckets);
    free(rl);
}

/* Tokens e would hold at now_ns, capped at its burst. */
static double refilled(const rate_entry *e, int64_t now_ns)
{
    double t = e->tokens;
    if (now_ns > e->last_ns)
        t += (double)(now_ns - e->last_ns) * e->rate_per_s / 1e9;
    return t > e->burst ? e->burst : t;
}

/* Makes room for one entry; see the top of the file. Called locked. */
static void sweep(grant_rate_limiter *rl, int64_t now_ns)
{
    rate_entry **oldest = NULL;
    for (size_t i = 0; i < rl->nbuckets; i++) {
        rate_entry **pp = &rl->buckets[i];
        while (*pp != NULL) {
            rate_entry *e = *pp;
            if (refilled(e, now_ns) >= e->burst) {
                *pp = e->next;
                free(e);
                rl->count--;
                continue;
            }
            if (oldest == NULL || e->last_ns < (*oldest)->last_ns)
                oldest = pp;
            pp = &e->next;
        }
    }
    if (rl->count >= rl->max_entries && oldest != NULL) {
        rate_entry *e = *oldest;
        *oldest = e->next;
        free(e);
        rl->count--;
    }
}

ferry_err grant_rate_take(grant_rate_limiter *rl, const char *device, double rate_per_s,
                          double burst, int64_t now_ns, bool *allowed)
{
    ferry_err err = FERRY_OK;
    size_t len;
    rate_entry *e;
    bool ok;

    if (rl == NULL || device == NULL || allowed == NULL)
        return FERRY_ERR_INVALID;
    len = strnlen(device, GRANT_DEVICE_MAX + 1);
    if (len == 0 || len > GRANT_DEVICE_MAX)
        return FERRY_ERR_INVALID;
    if (!isfinite(rate_per_s) || rate_per_s <= 0) {
        *allowed = true; /* no limit for this device: nothing to track */
        return FERRY_OK;
    }
    if (!isfinite(burst) || burst < 1)
        burst = 1;

    pthread_mutex_lock(&rl->lock);
    size_t idx = (size_t)(hash_device(rl->seed, device) & (rl->nbuckets - 1));
    for (e = rl->buckets[idx]; e != NULL; e = e->next) {
        if (strcmp(e->device, device) == 0)
            break;
    }
    if (e == NULL) {
        if (rl->count >= rl->max_entries)
            sweep(rl, now_ns);
        e = calloc(1, sizeof *e);
        if (e == NULL) {
            err = FERRY_ERR_NOMEM;
            goto out;
        }
        memcpy(e->device, device, len);
        e->device[len] = '\0';
        e->tokens = burst;
        e->last_ns = now_ns;
        e->next = rl->buckets[idx];
        rl->buckets[idx] = e;
        rl->count++;
    }
    e->rate_per_s = rate_per_s;
    e->burst = burst;
    e->tokens = refilled(e, now_ns);
    if (now_ns > e->last_ns)
        e->last_ns = now_ns;
    ok = e->tokens >= 1.0;
    if (ok)
        e->tokens -= 1.0;
    *allowed = ok;
out:
    pthread_mutex_unlock(&rl->lock);
    return err;
}

size_t grant_rate_limiter_count(grant_rate_limiter *rl)
{
    size_t n;
    if (rl == NULL)
        return 0;
    pthread_mutex_lock(&rl->lock);
    n = rl->count;
    pthread_mutex_unlock(&rl->lock);
    return n;
}
