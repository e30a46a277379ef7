/*
 * grant_policy.c - per-device upload policy: fleet defaults, per-device
 * overrides from the ledger, the checks a request must pass, the grant's
 * expiry and the choice of upload method.
 *
 * Invariants: grant_policy_expiry_s() always returns 1..604800 whatever the
 * policy holds (a device override in the ledger is not trusted to be sane);
 * grant_policy_check() runs its checks in a fixed order, so a request that
 * breaks several rules always gets the same code.
 *
 * The method rule. A PUT URL binds content-length, content-type and (when
 * announced) x-amz-checksum-sha256 into its signature: the store refuses a
 * single byte more or less, another type or other content, and the device
 * needs only a plain HTTP PUT. A POST policy can bind the same things (an
 * exact content-length-range, the type, the checksum) but needs a
 * multipart/form-data body, which is more for a small device to build. So
 * "auto" picks PUT whenever the size allows (size <= put_max_bytes, by
 * default 5 GiB, the largest single PUT S3 accepts) and POST only above the
 * threshold an operator sets lower for stores or proxies that limit PUT
 * bodies. Explicit "put" and "post" are honoured. Multipart grants for
 * larger payloads (a later issue) will take over above put_max_bytes.
 */
#include "grants.h"
#include "grants_int.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

void grant_policy_defaults(grant_policy *p)
{
    memset(p, 0, sizeof *p);
    p->max_size_bytes = UINT64_C(5) << 30; /* 5 GiB */
    snprintf(p->content_types, sizeof p->content_types, "*/*");
    p->expiry_min_s = 60;
    p->expiry_base_s = 300;
    p->expiry_max_s = 86400;
    p->min_bandwidth_bps = 65536; /* 512 kbit/s */
    p->max_open_grants = 16;
    p->rate_per_s = 1.0;
    p->rate_burst = 10.0;
    p->daily_quota_bytes = UINT64_C(10) << 30; /* 10 GiB */
    p->put_max_bytes = UINT64_C(5) << 30;
    p->disabled = false;
}

/* Calls fn on each comma-separated pattern of list, trimmed of spaces and
 * tabs; stops when fn returns true and returns true then. */
static bool patterns_each(const char *list, bool (*fn)(const char *pat, size_t len, void *arg),
                          void *arg)
{
    const char *p = list;
    /* Every piece counts, empty ones too ("a/b," has an empty second
     * pattern), so that validation sees them. */
    for (;;) {
        const char *end = strchr(p, ',');
        size_t len = end != NULL ? (size_t)(end - p) : strlen(p);
        const char *s = p;
        while (len > 0 && (*s == ' ' || *s == '\t')) {
            s++;
            len--;
        }
        while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t'))
            len--;
        if (fn(s, len, arg))
            return true;
        if (end == NULL)
            break;
        p = end + 1;
    }
    return false;
}

static bool pattern_invalid(const char *pat, size_t len, void *arg)
{
    size_t *count = arg;
    (*count)++;
    if (len == 3 && memcmp(pat, "*/*", 3) == 0)
        return false;
    /* "type/" then a star: the type part must itself be a valid name. */
    if (len >= 3 && pat[len - 1] == '*' && pat[len - 2] == '/') {
        char probe[GRANT_CONTENT_TYPE_MAX + 1];
        if (len > GRANT_CONTENT_TYPE_MAX)
            return true;
        memcpy(probe, pat, len - 1);
        probe[len - 1] = 'x';
        return !grant_content_type_valid(probe, len);
    }
    return !grant_content_type_valid(pat, len);
}

typedef struct match_ctx {
    const char *ct;
    size_t ct_len;
    size_t type_len; /* bytes before the '/' */
} match_ctx;

static bool pattern_matches(const char *pat, size_t len, void *arg)
{
    const match_ctx *m = arg;
    if (len == 3 && memcmp(pat, "*/*", 3) == 0)
        return true;
    if (len >= 3 && pat[len - 1] == '*' && pat[len - 2] == '/')
        return len - 2 == m->type_len && strncasecmp(pat, m->ct, m->type_len) == 0;
    return len == m->ct_len && strncasecmp(pat, m->ct, len) == 0;
}

bool grant_content_type_allowed(const char *patterns, const char *content_type)
{
    match_ctx m;
    const char *slash;
    if (patterns == NULL || content_type == NULL)
        return false;
    m.ct = content_type;
    m.ct_len = strlen(content_type);
    if (!grant_content_type_valid(content_type, m.ct_len))
        return false;
    slash = strchr(content_type, '/');
    m.type_len = (size_t)(slash - content_type);
    return patterns_each(patterns, pattern_matches, &m);
}

ferry_err grant_policy_validate(const grant_policy *p, const char **why)
{
    const char *problem = NULL;
    size_t count = 0;
    if (p == NULL)
        problem = "no policy";
    else if (p->max_size_bytes < 1 || p->max_size_bytes > GRANT_SIZE_MAX)
        problem = "max_size_bytes must be 1..2^53";
    else if (memchr(p->content_types, '\0', sizeof p->content_types) == NULL ||
             patterns_each(p->content_types, pattern_invalid, &count) || count == 0)
        problem = "content_types must be a comma-separated list of type/subtype, type/* or */*";
    else if (p->expiry_min_s < 1 || p->expiry_max_s > GRANT_EXPIRY_CAP_S ||
             p->expiry_min_s > p->expiry_max_s)
        problem = "expiry bounds must satisfy 1 <= min <= max <= 604800 seconds";
    else if (p->expiry_base_s < 0 || p->expiry_base_s > p->expiry_max_s)
        problem = "expiry base must be 0..max seconds";
    else if (p->min_bandwidth_bps < 1)
        problem = "min_bandwidth must be at least 1 byte per second";
    else if (!isfinite(p->rate_per_s) || p->rate_per_s < 0)
        problem = "rate must be a finite number >= 0";
    else if (p->rate_per_s > 0 && (!isfinite(p->rate_burst) || p->rate_burst < 1))
        problem = "rate burst must be a finite number >= 1";
    if (problem != NULL) {
        if (why != NULL)
            *why = problem;
        return FERRY_ERR_CONFIG;
    }
    return FERRY_OK;
}

void grant_policy_merge(const grant_policy *fleet, const ledger_device *dev, grant_policy *out)
{
    grant_policy p = *fleet;
    if (dev != NULL) {
        p.disabled = p.disabled || dev->disabled;
        if (dev->max_size_bytes.set)
            p.max_size_bytes = dev->max_size_bytes.v;
        if (dev->content_types_set)
            snprintf(p.content_types, sizeof p.content_types, "%s", dev->content_types);
        if (dev->expiry_min_s.set)
            p.expiry_min_s = dev->expiry_min_s.v;
        if (dev->expiry_base_s.set)
            p.expiry_base_s = dev->expiry_base_s.v;
        if (dev->expiry_max_s.set)
            p.expiry_max_s = dev->expiry_max_s.v;
        if (dev->min_bandwidth_bps.set)
            p.min_bandwidth_bps = dev->min_bandwidth_bps.v;
        if (dev->max_open_grants.set)
            p.max_open_grants = dev->max_open_grants.v;
        if (dev->rate_per_s.set)
            p.rate_per_s = dev->rate_per_s.v;
        if (dev->rate_burst.set)
            p.rate_burst = dev->rate_burst.v;
        if (dev->daily_quota_bytes.set)
            p.daily_quota_bytes = dev->daily_quota_bytes.v;
    }
    *out = p;
}

int64_t grant_policy_expiry_s(const grant_policy *p, uint64_t size)
{
    uint64_t bw = p->min_bandwidth_bps > 0 ? p->min_bandwidth_bps : 1;
    /* Seconds the slowest allowed link needs, rounded up. */
    uint64_t transfer = size / bw + (size % bw != 0);
    int64_t lo = p->expiry_min_s, hi = p->expiry_max_s, e;
    uint64_t base = p->expiry_base_s > 0 ? (uint64_t)p->expiry_base_s : 0;

    if (hi > GRANT_EXPIRY_CAP_S || hi < 1)
        hi = GRANT_EXPIRY_CAP_S;
    if (lo < 1)
        lo = 1;
    if (lo > hi)
        lo = hi;
    /* Saturate instead of overflowing: anything past the cap is the cap. */
    if (base >= (uint64_t)GRANT_EXPIRY_CAP_S || transfer >= (uint64_t)GRANT_EXPIRY_CAP_S)
        e = GRANT_EXPIRY_CAP_S;
    else
        e = (int64_t)(base + transfer);
    if (e < lo)
        e = lo;
    if (e > hi)
        e = hi;
    return e;
}

ferry_err grant_policy_check(const grant_policy *p, const grant_request *req, grant_rejection *rej)
{
    if (p == NULL || req == NULL || rej == NULL)
        return FERRY_ERR_INVALID;
    grant_rejection_init(rej, req->id);
    if (p->disabled) {
        grant_reject(rej, GRANT_REJECT_DEVICE_DISABLED, "device is disabled");
        return FERRY_ERR_DENIED;
    }
    if (req->size > p->max_size_bytes) {
        grant_reject(rej, GRANT_REJECT_TOO_LARGE,
                     "size %llu is over this device's limit of %llu bytes",
                     (unsigned long long)req->size, (unsigned long long)p->max_size_bytes);
        return FERRY_ERR_DENIED;
    }
    if (!grant_content_type_allowed(p->content_types, req->content_type)) {
        /* The content type was checked to be restricted-name characters
         * only (grant_request_parse), so it is safe to quote. */
        grant_reject(rej, GRANT_REJECT_CONTENT_TYPE, "content type %s is not allowed",
                     req->content_type);
        return FERRY_ERR_DENIED;
    }
    return FERRY_OK;
}

int64_t grant_day_start(int64_t t)
{
    int64_t r = t % 86400;
    if (r < 0)
        r += 86400;
    return t - r;
}

void grant_policy_limits(const grant_policy *p, int64_t now, ledger_limits *out)
{
    out->max_open_grants = p->max_open_grants;
    out->daily_quota_bytes = p->daily_quota_bytes;
    out->day_start = grant_day_start(now);
}

grant_method grant_method_choose(const grant_policy *p, grant_method requested, uint64_t size)
{
    if (requested == GRANT_METHOD_PUT || requested == GRANT_METHOD_POST)
        return requested;
    return size <= p->put_max_bytes ? GRANT_METHOD_PUT : GRANT_METHOD_POST;
}

const char *grant_method_str(grant_method m)
{
    switch (m) {
    case GRANT_METHOD_PUT:
        return "PUT";
    case GRANT_METHOD_POST:
        return "POST";
    case GRANT_METHOD_AUTO:
    default:
        return "auto";
    }
}
