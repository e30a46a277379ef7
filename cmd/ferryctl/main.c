/* ferryctl - the operator's tool: PKI, broker configuration, pre-signing. */
#include <stdio.h>
#include <string.h>

#include "ferryctl.h"

typedef struct subcommand {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} subcommand;

static const subcommand subcommands[] = {
    {"pki", ferryctl_pki,
     "pki init DIR | issue DIR NAME [--csr FILE] | ferryd DIR ferryd-X | revoke DIR NAME | crl "
     "DIR"},
    {"broker-config", ferryctl_broker_config, "broker-config DIR [options]: mosquitto.conf + ACL"},
    {"device", ferryctl_device, "device set|show --ledger PATH NAME [...]: per-device policy"},
    {"grant", ferryctl_grant, "grant show|revoke --ledger PATH GRANT_ID: one grant"},
    {"audit", ferryctl_audit, "audit --ledger PATH DEVICE [--since T] [--limit N]: a device's log"},
    {"events", ferryctl_events, "events list-dead|list|replay --ledger PATH [...]: the outbox"},
    {"presign", ferryctl_presign, "presign --endpoint URL --bucket B --key K [...]: a URL"},
};

static void usage(FILE *out)
{
    fprintf(out, "usage: ferryctl COMMAND [ARGS]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof subcommands / sizeof subcommands[0]; i++)
        fprintf(out, "  %s\n", subcommands[i].summary);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
        usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof subcommands / sizeof subcommands[0]; i++)
        if (strcmp(argv[1], subcommands[i].name) == 0)
            return subcommands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "ferryctl: unknown command '%s' (try ferryctl --help)\n", argv[1]);
    return 2;
}
