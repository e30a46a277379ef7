/*
 * fuzz_store_env.h - a real embedded store for the store's fuzz targets:
 * plain HTTP on a loopback port, in the fuzzing process, with a temporary
 * data directory and ledger that are removed at exit (replays in every test
 * run leave nothing in /tmp). Small limits (1 MiB objects, one thread,
 * 2 s idle timeout) so that a hostile input cannot make a run slow.
 */
#ifndef FERRY_TESTS_FUZZ_STORE_ENV_H
#define FERRY_TESTS_FUZZ_STORE_ENV_H

#include <stddef.h>

/* Starts the store once (later calls return the same port); aborts if it
 * cannot. name tags the temporary directory (/tmp/ferry-fuzz-NAME-XXXXXX). */
int fuzz_store_port(const char *name);
/* A TCP connection to the store (started if needed) with a receive
 * timeout of recv_timeout_s; aborts if it cannot connect. */
int fuzz_store_connect(const char *name, int recv_timeout_s);
/* Sends what the store takes of data; stops early when the store has
 * answered and closed (it may before reading everything). */
void fuzz_store_send_all(int fd, const void *data, size_t size);
/* Aborts unless the store's objects/ directories are empty within
 * wait_ms: no fuzz input carries a valid signature, so none may be
 * recorded and any file there is a leftover (the completion callback may
 * run just after the answer, hence the wait). */
void fuzz_store_expect_no_data_files(int wait_ms);

#endif
