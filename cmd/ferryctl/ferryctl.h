/*
 * ferryctl.h - the operator tool's subcommands. main.c only dispatches; each
 * subcommand lives in its own file and gets argv starting at its own name.
 * Each returns the process exit status (0 ok, 1 failure, 2 usage) and prints
 * a one-line reason on stderr when it fails.
 */
#ifndef FERRY_CMD_FERRYCTL_H
#define FERRY_CMD_FERRYCTL_H

int ferryctl_pki(int argc, char **argv);           /* pki_cmd.c */
int ferryctl_broker_config(int argc, char **argv); /* broker_config_cmd.c */
int ferryctl_presign(int argc, char **argv);       /* presign_cmd.c */
int ferryctl_device(int argc, char **argv);        /* device_cmd.c */
int ferryctl_grant(int argc, char **argv);         /* grant_cmd.c */
int ferryctl_events(int argc, char **argv);        /* events_cmd.c */
int ferryctl_audit(int argc, char **argv);         /* audit_cmd.c */

/* Prints s double-quoted for a key=value line: quotes and backslashes
 * escaped, control bytes as \xHH, so text that came from devices (request
 * ids, refusal messages, keys) stays on its line (output.c). */
void ferryctl_print_quoted(const char *s);

#endif
