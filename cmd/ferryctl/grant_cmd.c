/*
 * grant_cmd.c - `ferryctl grant`: look at a grant in the ledger, or revoke
 * it. A revoked grant's URL is refused by the embedded store from the next
 * upload on (an external S3-compatible store cannot be told: it accepts the
 * URL until it expires).
 *
 *   ferryctl grant show --ledger PATH GRANT_ID
 *   ferryctl grant revoke --ledger PATH GRANT_ID
 */
#include <stdio.h>
#include <string.h>

#include "common/timefmt.h"
#include "ferryctl.h"
#include "grants/grants.h"
#include "ledger/ledger.h"

static void grant_usage(FILE *out)
{
    fprintf(out, "usage: ferryctl grant show --ledger PATH GRANT_ID\n"
                 "       ferryctl grant revoke --ledger PATH GRANT_ID\n");
}

static void print_time(const char *name, int64_t t)
{
    char when[FERRY_ISO8601_LEN + 1];
    if (t == 0) {
        printf("%s=-\n", name);
        return;
    }
    ferry_time_iso8601(t, when);
    printf("%s=%s\n", name, when);
}

static void print_grant(const ledger_grant *g)
{
    printf("grant=%s\ndevice=%s\nrequest_id=%s\nstate=%s\nmethod=%s\nbucket=%s\nkey=%s\n"
           "size=%llu\ncontent_type=%s\nsha256=%s\n",
           g->id, g->device, g->request_id, ledger_grant_state_str(g->state), g->method, g->bucket,
           g->key, (unsigned long long)g->size, g->content_type, g->sha256[0] ? g->sha256 : "-");
    print_time("issued_at", g->issued_at);
    print_time("expires_at", g->expires_at);
    print_time("used_at", g->used_at);
    print_time("revoked_at", g->revoked_at);
}

int ferryctl_grant(int argc, char **argv)
{
    const char *ledger_path = NULL, *grant_id = NULL;
    if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
        grant_usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *verb = argv[1];
    bool revoke = strcmp(verb, "revoke") == 0;
    if (!revoke && strcmp(verb, "show") != 0) {
        fprintf(stderr, "ferryctl grant: unknown command '%s'\n", verb);
        return 2;
    }
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--ledger") == 0 && i + 1 < argc) {
            ledger_path = argv[++i];
        } else if (argv[i][0] != '-' && grant_id == NULL) {
            grant_id = argv[i];
        } else {
            fprintf(stderr, "ferryctl grant: unexpected argument '%s'\n", argv[i]);
            return 2;
        }
    }
    if (ledger_path == NULL || grant_id == NULL) {
        fprintf(stderr, "ferryctl grant: --ledger PATH and a grant id are required\n");
        return 2;
    }
    if (!grant_id_valid(grant_id)) {
        fprintf(stderr, "ferryctl grant: '%s' is not a grant id (g_ and 26 characters)\n",
                grant_id);
        return 2;
    }
    int status = 1;
    ledger *l = NULL;
    ferry_err e = ledger_open(ledger_path, &l);
    if (e) {
        fprintf(stderr, "ferryctl grant: %s: cannot open the ledger: %s\n", ledger_path,
                ferry_err_str(e));
        return 1;
    }
    if (revoke) {
        e = ledger_grant_revoke(l, grant_id, ferry_time_now());
        if (e == FERRY_ERR_NOT_FOUND) {
            fprintf(stderr, "ferryctl grant: %s: no such grant\n", grant_id);
            goto out;
        }
        if (e == FERRY_ERR_CONFLICT) {
            ledger_grant g;
            const char *state = ledger_grant_get(l, grant_id, &g) == FERRY_OK
                                    ? ledger_grant_state_str(g.state)
                                    : "not issued";
            fprintf(stderr, "ferryctl grant: %s: cannot revoke a grant that is %s\n", grant_id,
                    state);
            goto out;
        }
        if (e) {
            fprintf(stderr, "ferryctl grant: %s: %s\n", grant_id, ferry_err_str(e));
            goto out;
        }
    }
    ledger_grant g;
    e = ledger_grant_get(l, grant_id, &g);
    if (e == FERRY_ERR_NOT_FOUND) {
        fprintf(stderr, "ferryctl grant: %s: no such grant\n", grant_id);
        goto out;
    }
    if (e) {
        fprintf(stderr, "ferryctl grant: %s: %s\n", grant_id, ferry_err_str(e));
        goto out;
    }
    print_grant(&g);
    status = 0;
out:
    ledger_close(l);
    return status;
}
