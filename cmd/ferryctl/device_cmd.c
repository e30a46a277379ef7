/*
 * device_cmd.c - `ferryctl device`: per-device policy overrides in the
 * ledger. ferryd reads them on every request, so a change applies to the
 * next request without a restart.
 *
 *   ferryctl device set --ledger PATH NAME [options]   create or change
 *   ferryctl device show --ledger PATH NAME            print as key=value
 *
 * An option given as "default" removes the override (the fleet default from
 * ferryd's [policy] section applies again).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/config.h"
#include "common/timefmt.h"
#include "ferryctl.h"
#include "grants/grants.h"
#include "ledger/ledger.h"

static void device_usage(FILE *out)
{
    fprintf(out, "usage: ferryctl device set --ledger PATH NAME [--disable | --enable]\n"
                 "           [--max-size SIZE] [--content-types PATTERNS] [--max-open-grants N]\n"
                 "           [--rate-per-minute N] [--rate-burst N] [--daily-quota SIZE]\n"
                 "           [--expiry-min DUR] [--expiry-base DUR] [--expiry-max DUR]\n"
                 "           [--min-bandwidth SIZE]\n"
                 "       ferryctl device show --ledger PATH NAME\n"
                 "A value of 'default' removes the override.\n");
}

static int parse_u64(const char *opt, const char *v, bool size, ledger_opt_u64 *out)
{
    if (strcmp(v, "default") == 0) {
        out->set = false;
        return 0;
    }
    int64_t n;
    ferry_err e = size ? ferry_parse_size(v, &n) : ferry_parse_int(v, &n);
    if (e || n < 0) {
        fprintf(stderr, "ferryctl device: %s: \"%s\" is not a %s\n", opt, v,
                size ? "size (e.g. 64K, 5M)" : "non-negative integer");
        return -1;
    }
    out->set = true;
    out->v = (uint64_t)n;
    return 0;
}

static int parse_duration_s(const char *opt, const char *v, ledger_opt_i64 *out)
{
    if (strcmp(v, "default") == 0) {
        out->set = false;
        return 0;
    }
    int64_t ms;
    if (ferry_parse_duration_ms(v, &ms) || ms > (int64_t)GRANT_EXPIRY_CAP_S * 1000) {
        fprintf(stderr, "ferryctl device: %s: \"%s\" is not a duration up to 7d\n", opt, v);
        return -1;
    }
    out->set = true;
    out->v = ms / 1000;
    return 0;
}

static void print_device(const ledger_device *d)
{
    printf("device=%s\ndisabled=%s\n", d->id, d->disabled ? "true" : "false");
#define U64(name, f)                                                                               \
    if (d->f.set)                                                                                  \
        printf(name "=%llu\n", (unsigned long long)d->f.v);                                        \
    else                                                                                           \
        printf(name "=default\n");
#define I64(name, f)                                                                               \
    if (d->f.set)                                                                                  \
        printf(name "=%llds\n", (long long)d->f.v);                                                \
    else                                                                                           \
        printf(name "=default\n");
    U64("max_size", max_size_bytes);
    printf("content_types=%s\n", d->content_types_set ? d->content_types : "default");
    U64("max_open_grants", max_open_grants);
    if (d->rate_per_s.set)
        printf("rate_per_minute=%.0f\n", d->rate_per_s.v * 60.0);
    else
        printf("rate_per_minute=default\n");
    if (d->rate_burst.set)
        printf("rate_burst=%.0f\n", d->rate_burst.v);
    else
        printf("rate_burst=default\n");
    U64("daily_quota", daily_quota_bytes);
    I64("expiry_min", expiry_min_s);
    I64("expiry_base", expiry_base_s);
    I64("expiry_max", expiry_max_s);
    U64("min_bandwidth", min_bandwidth_bps);
#undef U64
#undef I64
}

int ferryctl_device(int argc, char **argv)
{
    int status = 1;
    ledger *l = NULL;
    const char *ledger_path = NULL, *name = NULL;
    if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
        device_usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *verb = argv[1];
    bool set = strcmp(verb, "set") == 0;
    if (!set && strcmp(verb, "show") != 0) {
        fprintf(stderr, "ferryctl device: unknown command '%s'\n", verb);
        return 2;
    }
    ledger_device dev;
    memset(&dev, 0, sizeof dev);
    int disable = -1;

    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int rc = 0;
        if (strcmp(a, "--disable") == 0 || strcmp(a, "--enable") == 0) {
            disable = strcmp(a, "--disable") == 0;
            continue;
        }
        if (a[0] != '-') {
            if (name != NULL) {
                fprintf(stderr, "ferryctl device: more than one device name\n");
                return 2;
            }
            name = a;
            continue;
        }
        if (v == NULL) {
            fprintf(stderr, "ferryctl device: %s needs a value\n", a);
            return 2;
        }
        i++;
        if (strcmp(a, "--ledger") == 0) {
            ledger_path = v;
        } else if (!set) {
            fprintf(stderr, "ferryctl device: show takes only --ledger and a name\n");
            return 2;
        } else if (strcmp(a, "--max-size") == 0) {
            rc = parse_u64(a, v, true, &dev.max_size_bytes);
        } else if (strcmp(a, "--max-open-grants") == 0) {
            rc = parse_u64(a, v, false, &dev.max_open_grants);
        } else if (strcmp(a, "--daily-quota") == 0) {
            rc = parse_u64(a, v, true, &dev.daily_quota_bytes);
        } else if (strcmp(a, "--min-bandwidth") == 0) {
            rc = parse_u64(a, v, true, &dev.min_bandwidth_bps);
        } else if (strcmp(a, "--rate-per-minute") == 0 || strcmp(a, "--rate-burst") == 0) {
            ledger_opt_u64 n = {0};
            rc = parse_u64(a, v, false, &n);
            ledger_opt_f64 *dst = a[7] == 'p' ? &dev.rate_per_s : &dev.rate_burst;
            dst->set = n.set;
            dst->v = a[7] == 'p' ? (double)n.v / 60.0 : (double)n.v;
        } else if (strcmp(a, "--content-types") == 0) {
            dev.content_types_set = strcmp(v, "default") != 0;
            if (strlen(v) > LEDGER_CONTENT_TYPES_MAX) {
                fprintf(stderr, "ferryctl device: --content-types: longer than %d bytes\n",
                        LEDGER_CONTENT_TYPES_MAX);
                return 2;
            }
            snprintf(dev.content_types, sizeof dev.content_types, "%s",
                     dev.content_types_set ? v : "");
        } else if (strcmp(a, "--expiry-min") == 0) {
            rc = parse_duration_s(a, v, &dev.expiry_min_s);
        } else if (strcmp(a, "--expiry-base") == 0) {
            rc = parse_duration_s(a, v, &dev.expiry_base_s);
        } else if (strcmp(a, "--expiry-max") == 0) {
            rc = parse_duration_s(a, v, &dev.expiry_max_s);
        } else {
            fprintf(stderr, "ferryctl device: unknown option '%s'\n", a);
            return 2;
        }
        if (rc)
            return 2;
    }
    if (ledger_path == NULL || name == NULL) {
        fprintf(stderr, "ferryctl device: --ledger PATH and a device name are required\n");
        return 2;
    }
    if (!grant_device_id_valid(name)) {
        fprintf(stderr, "ferryctl device: '%s' is not a valid device name\n", name);
        return 2;
    }
    ferry_err e = ledger_open(ledger_path, &l);
    if (e) {
        fprintf(stderr, "ferryctl device: %s: cannot open the ledger: %s\n", ledger_path,
                ferry_err_str(e));
        goto out;
    }
    ledger_device current;
    e = ledger_device_get(l, name, &current);
    if (e && e != FERRY_ERR_NOT_FOUND) {
        fprintf(stderr, "ferryctl device: %s: %s\n", ledger_path, ferry_err_str(e));
        goto out;
    }
    if (!set) {
        if (e == FERRY_ERR_NOT_FOUND) {
            memset(&current, 0, sizeof current);
            snprintf(current.id, sizeof current.id, "%s", name);
        }
        print_device(&current);
        status = 0;
        goto out;
    }
    /* Options not given keep their current value. */
    if (e == FERRY_OK) {
        ledger_device merged = current;
        for (int i = 2; i < argc; i++) {
            if (strcmp(argv[i], "--max-size") == 0)
                merged.max_size_bytes = dev.max_size_bytes;
            else if (strcmp(argv[i], "--max-open-grants") == 0)
                merged.max_open_grants = dev.max_open_grants;
            else if (strcmp(argv[i], "--daily-quota") == 0)
                merged.daily_quota_bytes = dev.daily_quota_bytes;
            else if (strcmp(argv[i], "--min-bandwidth") == 0)
                merged.min_bandwidth_bps = dev.min_bandwidth_bps;
            else if (strcmp(argv[i], "--rate-per-minute") == 0)
                merged.rate_per_s = dev.rate_per_s;
            else if (strcmp(argv[i], "--rate-burst") == 0)
                merged.rate_burst = dev.rate_burst;
            else if (strcmp(argv[i], "--content-types") == 0) {
                merged.content_types_set = dev.content_types_set;
                memcpy(merged.content_types, dev.content_types, sizeof dev.content_types);
            } else if (strcmp(argv[i], "--expiry-min") == 0)
                merged.expiry_min_s = dev.expiry_min_s;
            else if (strcmp(argv[i], "--expiry-base") == 0)
                merged.expiry_base_s = dev.expiry_base_s;
            else if (strcmp(argv[i], "--expiry-max") == 0)
                merged.expiry_max_s = dev.expiry_max_s;
        }
        dev = merged;
    }
    snprintf(dev.id, sizeof dev.id, "%s", name);
    if (disable >= 0)
        dev.disabled = disable == 1;
    /* Check the overrides on top of the built-in fleet defaults: catches
     * malformed patterns and expiry bounds that contradict each other. */
    grant_policy fleet, merged;
    const char *why = NULL;
    grant_policy_defaults(&fleet);
    grant_policy_merge(&fleet, &dev, &merged);
    if (grant_policy_validate(&merged, &why) != FERRY_OK) {
        fprintf(stderr, "ferryctl device: %s\n", why ? why : "inconsistent policy");
        goto out;
    }
    e = ledger_device_upsert(l, &dev, ferry_time_now());
    if (e) {
        fprintf(stderr, "ferryctl device: %s: cannot write: %s\n", ledger_path, ferry_err_str(e));
        goto out;
    }
    print_device(&dev);
    status = 0;
out:
    ledger_close(l);
    return status;
}
