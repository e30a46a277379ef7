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
/* Files under the store's objects/ directories. No fuzz input carries a
 * valid signature, so none may be recorded: any file there is a leftover. */
size_t fuzz_store_data_files(void);

#endif
