/*
 * broker_config_cmd.c - `ferryctl broker-config`: argument parsing for the
 * Mosquitto configuration generator in src/pki/broker_config.c.
 *
 *   ferryctl broker-config DIR [--pki DIR] [--bind ADDR] [--port N]
 *                              [--prefix ferry] [--persistence-dir D] [--user U]
 *
 * --pki defaults to DIR itself, so `ferryctl pki init X && ferryctl
 * broker-config X` is a complete broker setup.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/config.h"
#include "ferryctl.h"
#include "pki/broker_config.h"

static void broker_config_usage(FILE *out)
{
    fprintf(out, "usage: ferryctl broker-config DIR [--pki DIR] [--bind ADDR] [--port N]\n"
                 "                              [--prefix ferry] [--persistence-dir D] [--user U]\n"
                 "writes DIR/mosquitto.conf and DIR/acl for Mosquitto 2.0\n");
}

int ferryctl_broker_config(int argc, char **argv)
{
    static const char *const value_opts[] = {"--pki", "--bind", "--port", "--prefix",
                                             "--persistence-dir", "--user"};
    char err[512] = "";
    broker_config_options o = {
        .port = BROKER_DEFAULT_PORT,
        .prefix = BROKER_DEFAULT_PREFIX,
    };
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
            broker_config_usage(stdout);
            return 0;
        }
        if (strncmp(arg, "--", 2) != 0) {
            if (o.out_dir != NULL) {
                broker_config_usage(stderr);
                return 2;
            }
            o.out_dir = arg;
            continue;
        }
        size_t k = 0;
        while (k < sizeof value_opts / sizeof value_opts[0] && strcmp(arg, value_opts[k]) != 0)
            k++;
        if (k == sizeof value_opts / sizeof value_opts[0]) {
            fprintf(stderr, "ferryctl broker-config: unknown option '%s'\n", arg);
            return 2;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "ferryctl broker-config: %s needs a value\n", arg);
            return 2;
        }
        const char *value = argv[++i];
        switch (k) {
        case 0:
            o.pki_dir = value;
            break;
        case 1:
            o.bind_address = value;
            break;
        case 2: {
            int64_t port = 0;
            if (ferry_parse_int(value, &port) != FERRY_OK || port < 1 || port > 65535) {
                fprintf(stderr, "ferryctl broker-config: --port must be 1 to 65535\n");
                return 2;
            }
            o.port = (int)port;
            break;
        }
        case 3:
            o.prefix = value;
            break;
        case 4:
            o.persistence_dir = value;
            break;
        default:
            o.run_as_user = value;
            break;
        }
    }
    if (o.out_dir == NULL) {
        broker_config_usage(stderr);
        return 2;
    }
    if (o.pki_dir == NULL)
        o.pki_dir = o.out_dir;
    ferry_err result = broker_config_write(&o, err, sizeof err);
    if (result != FERRY_OK) {
        fprintf(stderr, "ferryctl broker-config: %s\n", err[0] ? err : ferry_err_str(result));
        return 1;
    }
    printf("wrote %s/mosquitto.conf and %s/acl\n", o.out_dir, o.out_dir);
    return 0;
}
