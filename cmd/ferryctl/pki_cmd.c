/*
 * pki_cmd.c - `ferryctl pki`: argument parsing for the CA operations in
 * src/pki. Nothing here touches a key; this file only turns argv into a
 * pki_* call and its result into an exit status and a one-line message.
 *
 *   ferryctl pki init DIR [--name HOST]... [--days N]
 *   ferryctl pki issue DIR NAME [--csr FILE] [--days N]
 *   ferryctl pki ferryd DIR ferryd-SUFFIX [--days N]
 *   ferryctl pki revoke DIR NAME
 *   ferryctl pki crl DIR [--days N]
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/config.h"
#include "ferryctl.h"
#include "pki/pki.h"

#define MAX_POSITIONAL 3

typedef struct pki_args {
    const char *positional[MAX_POSITIONAL];
    size_t positional_count;
    const char *names[PKI_MAX_SANS];
    size_t name_count;
    const char *csr;
    int days;
} pki_args;

static void pki_usage(FILE *out)
{
    fprintf(out, "usage: ferryctl pki init DIR [--name HOST]... [--days N]\n"
                 "       ferryctl pki issue DIR NAME [--csr FILE] [--days N]\n"
                 "       ferryctl pki ferryd DIR ferryd-SUFFIX [--days N]\n"
                 "       ferryctl pki revoke DIR NAME\n"
                 "       ferryctl pki crl DIR [--days N]\n");
}

/* Parses options anywhere after the subcommand; returns 0 or an exit status. */
static int parse_args(int argc, char **argv, pki_args *a)
{
    memset(a, 0, sizeof *a);
    a->days = PKI_DEFAULT_DAYS;
    for (int i = 2; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--name") == 0 || strcmp(arg, "--csr") == 0 ||
            strcmp(arg, "--days") == 0) {
            if (i + 1 >= argc) {
                fprintf(stderr, "ferryctl pki: %s needs a value\n", arg);
                return 2;
            }
            const char *value = argv[++i];
            if (strcmp(arg, "--name") == 0) {
                if (a->name_count >= PKI_MAX_SANS) {
                    fprintf(stderr, "ferryctl pki: at most %d --name values\n", PKI_MAX_SANS);
                    return 2;
                }
                a->names[a->name_count++] = value;
            } else if (strcmp(arg, "--csr") == 0) {
                a->csr = value;
            } else {
                int64_t days = 0;
                if (ferry_parse_int(value, &days) != FERRY_OK || days < 1 ||
                    days > PKI_MAX_DAYS) {
                    fprintf(stderr, "ferryctl pki: --days must be 1 to %d\n", PKI_MAX_DAYS);
                    return 2;
                }
                a->days = (int)days;
            }
        } else if (strncmp(arg, "--", 2) == 0) {
            fprintf(stderr, "ferryctl pki: unknown option '%s'\n", arg);
            return 2;
        } else {
            if (a->positional_count >= MAX_POSITIONAL) {
                fprintf(stderr, "ferryctl pki: too many arguments\n");
                return 2;
            }
            a->positional[a->positional_count++] = arg;
        }
    }
    return 0;
}

/* Each option belongs to some subcommands only; a stray one is a mistake
 * worth stopping for (e.g. --csr on init). */
static int check_allowed(const char *cmd, const pki_args *a, size_t positional, bool names,
                         bool csr)
{
    if (a->positional_count != positional) {
        pki_usage(stderr);
        return 2;
    }
    if ((!names && a->name_count > 0) || (!csr && a->csr != NULL)) {
        fprintf(stderr, "ferryctl pki %s: option not valid here\n", cmd);
        return 2;
    }
    return 0;
}

int ferryctl_pki(int argc, char **argv)
{
    char err[512] = "";
    pki_args a;
    ferry_err result;
    if (argc < 2) {
        pki_usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "-h") == 0 || strcmp(cmd, "--help") == 0) {
        pki_usage(stdout);
        return 0;
    }
    int status = parse_args(argc, argv, &a);
    if (status != 0)
        return status;
    if (strcmp(cmd, "init") == 0) {
        if ((status = check_allowed(cmd, &a, 1, true, false)) != 0)
            return status;
        pki_init_options opts = {a.days, a.names, a.name_count};
        result = pki_init(a.positional[0], &opts, err, sizeof err);
        if (result == FERRY_OK)
            printf("created CA, broker, store and ferryd certificates in %s\n", a.positional[0]);
    } else if (strcmp(cmd, "issue") == 0) {
        if ((status = check_allowed(cmd, &a, 2, false, true)) != 0)
            return status;
        result = pki_issue(a.positional[0], a.positional[1], a.csr, a.days, err, sizeof err);
        if (result == FERRY_OK)
            printf("issued %s/devices/%s.pem%s\n", a.positional[0], a.positional[1],
                   a.csr != NULL ? " (from CSR; the key stays on the device)" : " and .key");
    } else if (strcmp(cmd, "ferryd") == 0) {
        if ((status = check_allowed(cmd, &a, 2, false, false)) != 0)
            return status;
        result = pki_issue_ferryd(a.positional[0], a.positional[1], a.days, err, sizeof err);
        if (result == FERRY_OK)
            printf("issued %s/%s.pem and .key; rerun ferryctl broker-config and send the "
                   "broker a SIGHUP\n",
                   a.positional[0], a.positional[1]);
    } else if (strcmp(cmd, "revoke") == 0) {
        if ((status = check_allowed(cmd, &a, 2, false, false)) != 0)
            return status;
        result = pki_revoke(a.positional[0], a.positional[1], err, sizeof err);
        if (result == FERRY_OK)
            printf("revoked %s; %s/crl.pem updated: send the broker a SIGHUP to reload it\n",
                   a.positional[1], a.positional[0]);
    } else if (strcmp(cmd, "crl") == 0) {
        if ((status = check_allowed(cmd, &a, 1, false, false)) != 0)
            return status;
        result = pki_crl_refresh(a.positional[0], a.days, err, sizeof err);
        if (result == FERRY_OK)
            printf("%s/crl.pem regenerated, valid for %d days\n", a.positional[0], a.days);
    } else {
        fprintf(stderr, "ferryctl pki: unknown subcommand '%s'\n", cmd);
        pki_usage(stderr);
        return 2;
    }
    if (result != FERRY_OK) {
        fprintf(stderr, "ferryctl pki %s: %s\n", cmd, err[0] ? err : ferry_err_str(result));
        return 1;
    }
    return 0;
}
