/*
 * audit_cmd.c - `ferryctl audit`: a device's audit log, oldest first: every
 * grant issued (recorded by its grant row) and every request refused or
 * grant revoked (the audit rows), one key=value line each.
 *
 *   ferryctl audit --ledger PATH DEVICE [--since ISO8601] [--limit N]
 *
 * The same log for every device is the ledger's SQL view audit_log.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/timefmt.h"
#include "ferryctl.h"
#include "grants/grants.h"
#include "ledger/ledger.h"

#define AUDIT_DEFAULT_LIMIT 1000

static void audit_usage(FILE *out)
{
    fprintf(out, "usage: ferryctl audit --ledger PATH DEVICE [--since ISO8601] [--limit N]\n");
}

static int print_row(const ledger_audit_row *row, void *arg)
{
    char when[FERRY_ISO8601_LEN + 1];
    (void)arg;
    ferry_time_iso8601(row->at, when);
    printf("at=%s outcome=%s code=%s grant=%s request_id=", when, row->outcome, row->code,
           row->grant_id[0] != '\0' ? row->grant_id : "-");
    ferryctl_print_quoted(row->request_id);
    printf(" detail=");
    ferryctl_print_quoted(row->detail);
    putchar('\n');
    return 0;
}

int ferryctl_audit(int argc, char **argv)
{
    const char *ledger_path = NULL, *device = NULL;
    int64_t since = 0;
    unsigned long long limit = AUDIT_DEFAULT_LIMIT;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            audit_usage(stdout);
            return 0;
        } else if (strcmp(argv[i], "--ledger") == 0 && i + 1 < argc) {
            ledger_path = argv[++i];
        } else if (strcmp(argv[i], "--since") == 0 && i + 1 < argc) {
            if (ferry_time_parse_iso8601(argv[++i], &since) != FERRY_OK) {
                fprintf(stderr, "ferryctl audit: --since wants a time like 2026-11-25T12:00:00Z\n");
                return 2;
            }
        } else if (strcmp(argv[i], "--limit") == 0 && i + 1 < argc) {
            char *end = NULL;
            errno = 0;
            limit = strtoull(argv[++i], &end, 10);
            if (errno != 0 || end == argv[i] || *end != '\0' || limit == 0 || argv[i][0] == '-') {
                fprintf(stderr, "ferryctl audit: --limit wants a positive number\n");
                return 2;
            }
        } else if (argv[i][0] != '-' && device == NULL) {
            device = argv[i];
        } else {
            fprintf(stderr, "ferryctl audit: unexpected argument '%s'\n", argv[i]);
            return 2;
        }
    }
    if (ledger_path == NULL || device == NULL) {
        audit_usage(stderr);
        return 2;
    }
    if (!grant_device_id_valid(device)) {
        fprintf(stderr, "ferryctl audit: '%s' is not a valid device id\n", device);
        return 2;
    }
    ledger *l = NULL;
    ferry_err e = ledger_open(ledger_path, &l);
    if (e) {
        fprintf(stderr, "ferryctl audit: %s: cannot open the ledger: %s\n", ledger_path,
                ferry_err_str(e));
        return 1;
    }
    e = ledger_audit_log(l, device, since, (size_t)limit, print_row, NULL);
    ledger_close(l);
    if (e) {
        fprintf(stderr, "ferryctl audit: %s\n", ferry_err_str(e));
        return 1;
    }
    return 0;
}
