/*
 * store_fs.h - the embedded store's data directory.
 *
 * Layout under data_dir:
 *   objects/<xx>/<file-id>       data files; xx = the id's first two hex
 *                                digits, 256 directories created at start-up
 *                                (spread over the file system's block groups:
 *                                objects/ is marked FS_TOPDIR_FL)
 *   tmp/                         unused since; emptied at start-up
 * A file id is 32 random hex digits. Object keys never appear in paths: the
 * ledger maps (bucket, key) to a file id, and a data file is visible only
 * through its ledger row.
 *
 * A body is written straight into its final name, objects/xx/<id>: the
 * ledger row, not the name, makes it an object, so there is no rename.
 * Before the row is committed, store_fs_commit() makes the file durable:
 * fdatasync (bytes and size), then the directory entry. Directory syncs are
 * grouped: one fsync of a directory covers every entry created in it before
 * the fsync began, so an upload whose entry an fsync already covered skips
 * its own (per directory: a count of entries created, and the count the
 * last completed fsync covered).
 *
 * Invariants: a file under objects/ that no ledger row (an object's, or a
 * part's of a multipart upload in progress) names is garbage (an
 * upload in progress when the process died, a crash between the file's sync
 * and the ledger commit, a replaced object whose unlink did not happen, a
 * .part file of the older layout) and store_fs_sweep() removes it at
 * start-up; nothing else removes files that may belong to an upload (the
 * part files of a multipart upload are removed only after the transaction
 * that deletes their rows: completion, abort, expiry).
 */
#ifndef FERRY_STORE_FS_H
#define FERRY_STORE_FS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ferry/ferry_error.h"
#include "ledger/ledger.h"

#define STORE_FILE_ID_LEN 32
#define STORE_PATH_MAX    4096

typedef struct store_fs_dir {
    int fd;                       /* open, for fsync */
    atomic_uint_fast64_t created; /* entries created in it so far */
    pthread_mutex_t mu;           /* one fsync at a time; guards synced */
    uint64_t synced;              /* entries the last completed fsync covered */
} store_fs_dir;

typedef struct store_fs {
    char *root;
    store_fs_dir dirs[256];
    bool dirs_ready; /* the mutexes are initialised */
} store_fs;

/* Creates the layout under root if needed and opens it. */
__attribute__((warn_unused_result)) ferry_err store_fs_open(store_fs *fs, const char *root);
/* Safe on a zeroed or cleaned-up fs. */
void store_fs_cleanup(store_fs *fs);

/* Removes everything in tmp/ and every object file no ledger row names;
 * *removed (may be NULL) counts them. */
__attribute__((warn_unused_result)) ferry_err store_fs_sweep(store_fs *fs, ledger *l,
                                                             size_t *removed);

/* A fresh random file id (STORE_FILE_ID_LEN hex digits + NUL). */
__attribute__((warn_unused_result)) ferry_err store_fs_new_id(char id[STORE_FILE_ID_LEN + 1]);

/* Creates objects/xx/<id> for writing (exclusively, mode 0600): the data
 * file of an upload, invisible until its ledger row is committed. */
__attribute__((warn_unused_result)) ferry_err store_fs_create_tmp(store_fs *fs, const char *id,
                                                                  int *fd_out);
/* Removes an upload's data file that was not recorded (ignoring a missing
 * file); the same as store_fs_remove_object. */
void store_fs_remove_tmp(store_fs *fs, const char *id);

/* Makes objects/xx/<id> durable before its ledger row is written:
 * fdatasync(fd), then an fsync of objects/xx unless one that began after
 * the file's entry was created has already completed (grouped, see above).
 * The caller still owns and closes fd. */
__attribute__((warn_unused_result)) ferry_err store_fs_commit(store_fs *fs, int fd, const char *id);

/* Opens objects/xx/<id> for reading; FERRY_ERR_NOT_FOUND if absent. */
__attribute__((warn_unused_result)) ferry_err store_fs_open_object(store_fs *fs, const char *id,
                                                                   int *fd_out);
/* Unlinks objects/xx/<id> (ignoring a missing file). */
void store_fs_remove_object(store_fs *fs, const char *id);

#endif
