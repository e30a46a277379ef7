/*
 * ferryd.h - the daemon: ledger, grant service and broker link wired
 * together, run until asked to stop.
 */
#ifndef FERRY_DAEMON_FERRYD_H
#define FERRY_DAEMON_FERRYD_H

#include <signal.h>

#include "daemon/daemon_config.h"
#include "ferry/ferry_error.h"

/* Runs until *stop becomes non-zero (set it from a signal handler), then
 * shuts down cleanly: answers in flight are acknowledged (up to
 * shutdown_timeout), the broker session is closed, the ledger closed. */
__attribute__((warn_unused_result)) ferry_err ferryd_run(const daemon_config *cfg,
                                                         volatile sig_atomic_t *stop);

/* Reads a secret key file: it must be a regular file not readable by group
 * or others; the secret is its first line. */
__attribute__((warn_unused_result)) ferry_err ferryd_read_secret(const char *path, char *out,
                                                                 size_t out_size, char *err,
                                                                 size_t err_size);

#endif
