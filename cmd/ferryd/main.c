/* ferryd - Ferry's daemon: argument parsing and signals only. */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "common/config.h"
#include "daemon/daemon_config.h"
#include "daemon/ferryd.h"

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static void usage(FILE *out)
{
    fprintf(out, "usage: ferryd -c FILE            run the daemon\n"
                 "       ferryd --check-config -c FILE  validate FILE and exit\n"
                 "       ferryd --print-config-reference  every option, as Markdown\n");
}

int main(int argc, char **argv)
{
    const char *config_path = NULL;
    int check_only = 0;
    for (int i = 1; i < argc; i++) {
        if ((strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0) && i + 1 < argc) {
            config_path = argv[++i];
        } else if (strcmp(argv[i], "--check-config") == 0) {
            check_only = 1;
        } else if (strcmp(argv[i], "--print-config-reference") == 0) {
            ferry_cfg_write_reference(&daemon_config_table, stdout);
            return 0;
        } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "ferryd: unknown argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (config_path == NULL) {
        fprintf(stderr, "ferryd: a configuration file is required (-c FILE)\n");
        return 2;
    }

    daemon_config cfg;
    char err[512];
    if (daemon_config_load(&cfg, config_path, err, sizeof err) != FERRY_OK) {
        fprintf(stderr, "ferryd: %s\n", err);
        daemon_config_free(&cfg);
        return 1;
    }
    if (check_only) {
        printf("ferryd: %s: configuration OK\n", config_path);
        daemon_config_free(&cfg);
        return 0;
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    ferry_err e = ferryd_run(&cfg, &stop_requested);
    daemon_config_free(&cfg);
    if (e) {
        fprintf(stderr, "ferryd: stopped on error: %s\n", ferry_err_str(e));
        return 1;
    }
    return 0;
}
