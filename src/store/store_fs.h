/*
 * store_fs.h - the embedded store's data directory.
 *
 * Layout under data_dir:
 *   objects/<xx>/<file-id>       stored objects; xx = the id's first two hex
 *                                digits, 256 directories created at start-up
 *   objects/<xx>/<file-id>.part  bodies being received, in the directory
 *                                they will be renamed within (atomic, and
 *                                one directory to fsync). Spreading them
 *                                over 256 directories keeps concurrent
 *                                creates and renames from queueing on one
 *                                directory's lock.
 *   tmp/                         unused since; emptied at start-up
 * A file id is 32 random hex digits. Object keys never appear in paths: the
 * ledger maps (bucket, key) to a file id, and a data file is visible only
 * through its ledger row.
 *
 * Invariants: a file under objects/ that no ledger row names is garbage (an
 * interrupted upload's .part file, a crash between the rename and the ledger
 * commit, or a replaced object whose unlink did not happen) and
 * store_fs_sweep() removes it at start-up.
 */
#ifndef FERRY_STORE_FS_H
#define FERRY_STORE_FS_H

#include <stddef.h>

#include "ferry/ferry_error.h"
#include "ledger/ledger.h"

#define STORE_FILE_ID_LEN 32
#define STORE_PATH_MAX    4096

typedef struct store_fs {
    char *root;
    int objects_dirs[256]; /* open directory fds, for fsync after a rename */
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

/* Opens objects/xx/<id>.part for writing (created exclusively, mode 0600). */
__attribute__((warn_unused_result)) ferry_err store_fs_create_tmp(store_fs *fs, const char *id,
                                                                  int *fd_out);
/* Removes objects/xx/<id>.part (ignoring a missing file). */
void store_fs_remove_tmp(store_fs *fs, const char *id);

/* fdatasync(fd), rename objects/xx/<id>.part -> objects/xx/<id>, fsync
 * objects/xx.
 * The caller still owns and closes fd. */
__attribute__((warn_unused_result)) ferry_err store_fs_commit(store_fs *fs, int fd, const char *id);

/* Opens objects/xx/<id> for reading; FERRY_ERR_NOT_FOUND if absent. */
__attribute__((warn_unused_result)) ferry_err store_fs_open_object(store_fs *fs, const char *id,
                                                                   int *fd_out);
/* Unlinks objects/xx/<id> (ignoring a missing file). */
void store_fs_remove_object(store_fs *fs, const char *id);

#endif
