/* broker_config_cmd.c - placeholder until its issue lands; replaced by the real command. */
#include <stdio.h>

#include "ferryctl.h"

int ferryctl_broker_config(int argc, char **argv)
{
    (void)argc;
    fprintf(stderr, "ferryctl: %s: not built yet\n", argv[0]);
    return 1;
}
