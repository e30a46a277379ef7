/*
 * store_fs.h - the embedded store's data directory.
 *
 * Layout under data_dir:
 *   objects/<xx>/<file-id>       data files; xx = the id's first two hex
 *                                digits, 256 directories created at start-up
 *                                (spread over the file system's block groups:
 *                                objects/ is marked FS_TOPDIR_FL)
 *   packs/<nnnnnnnn>.pack        small objects, many to a file (below)
 *   tmp/                         unused since; emptied at start-up
 * A file id is 32 random hex digits (a file of its own) or "p", the pack's
 * number (8 hex digits), the object's offset in it (16 hex digits) and the
 * bytes reserved for it (8 hex digits, the size rounded up to 4 KiB). An
 * object completed from a multipart upload is made of its parts' data
 * (each a file or a region, named by the ledger's object_parts rows): its
 * own id is "m" and 32 random hex digits and names no file (see
 * store_multipart.h).
 * Object keys never appear in paths: the ledger maps (bucket, key) to a
 * file id, and data is visible only through its ledger row.
 *
 * Packs: a body whose size is known when it starts and is at most
 * pack_max_object bytes gets a region of the current pack (4 KiB aligned)
 * instead of a file of its own, and one fdatasync of the pack makes every
 * region written before it durable: an ext4/XFS file create costs an inode,
 * a directory entry and their synchronous writes, and 32 writers of 64 KiB
 * objects made ~1,400 durable files/s here against ~5,500 regions/s in one
 * pack. The pack changes when it reaches pack_size bytes (each start-up
 * begins a new one); under concurrent uploads up to four packs take
 * regions at once (slot_open_packed: one file's inode lock serialised the
 * page-cache copies). A region no ledger row names is garbage and its hole
 * is punched (FALLOC_FL_PUNCH_HOLE): at once for a refused or failed
 * upload; for a deleted or replaced object as soon as nobody reads the
 * pack (a reader registers before it re-checks the ledger row, so a hole is
 * never punched under bytes being sent); by the start-up sweep for what a
 * crash left, which also trims the tail. A pack no row names any more is
 * removed. Packs are not compacted: a 4 KiB block shared by two objects'
 * regions never is (regions are aligned, so none is).
 *
 * A body is written straight into its final name, objects/xx/<id>: the
 * ledger row, not the name, makes it an object, so there is no rename.
 * Before the row is committed, store_fs_slot_sync() makes the file durable:
 * fdatasync (bytes and size), then the directory entry. Directory syncs are
 * grouped: one fsync of a directory covers every entry created in it before
 * the fsync began, so an upload whose entry an fsync already covered skips
 * its own (per directory: a count of entries created, and the count the
 * last completed fsync covered).
 *
 * Invariants: a file under objects/ that no ledger row (an object's, a
 * part's of a multipart upload in progress, or a part's of an object
 * completed from one: object_parts.data_id) names is garbage (an
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
#include <sys/uio.h>

#include "ferry/ferry_error.h"
#include "ledger/ledger.h"

#define STORE_FILE_ID_LEN 32
#define STORE_FILE_ID_MAX 48 /* either kind of id (room for any printf) */
#define STORE_PATH_MAX    4096
#define STORE_PACK_ALIGN  4096u

typedef struct store_fs_pack store_fs_pack;
typedef struct store_fs_pack_use store_fs_pack_use;

/* Where an upload's bytes go: a file of its own or a pack region. The body
 * is written with pwrite at base + n. */
typedef struct store_fs_slot {
    char id[STORE_FILE_ID_MAX + 1]; /* the file id its ledger row will name */
    int fd;                         /* -1: the slot is closed */
    uint64_t base;                  /* the body's first byte in fd */
    uint64_t room;                  /* packs: the bytes reserved */
    store_fs_pack *pack;            /* NULL: a file of its own */
    uint64_t ticket;                /* packs: store_fs_slot_written's count */
    int dfd;                        /* the O_DIRECT descriptor (store_fs_slot_direct), or -1 */
} store_fs_slot;

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
    int packs_fd;    /* packs/, for fsync after a pack is created */

    /* Packs (pack_mu guards the rest of these and every pack's end and
     * writers). */
    uint64_t pack_max_object; /* 0: no packs */
    uint64_t pack_size;
    pthread_mutex_t pack_mu;
    store_fs_pack *packs;     /* the current pack and older ones still written to */
    uint32_t next_pack;       /* number of the next pack to create */
    uint32_t dead_check[16];  /* packs that lost an object: empty now? */
    size_t n_dead_check;
    store_fs_pack_use *uses;  /* packs being read */
    size_t n_uses, cap_uses;
} store_fs;

/* Creates the layout under root if needed and opens it. Bodies of 1 ..
 * pack_max_object bytes go to packs of pack_size bytes (pack_max_object 0:
 * none; pack_size is raised to at least 4 pack_max_object). */
__attribute__((warn_unused_result)) ferry_err store_fs_open(store_fs *fs, const char *root,
                                                            uint64_t pack_max_object,
                                                            uint64_t pack_size);
/* Safe on a zeroed or cleaned-up fs. */
void store_fs_cleanup(store_fs *fs);

/* Removes everything in tmp/, every object file no ledger row names and
 * every pack no row names, punches the regions of the other packs that no
 * row names and trims their tails; *removed (may be NULL) counts the files
 * removed and the packs trimmed. Sets the next pack's number. */
__attribute__((warn_unused_result)) ferry_err store_fs_sweep(store_fs *fs, ledger *l,
                                                             size_t *removed);

/* A fresh random file id (STORE_FILE_ID_LEN hex digits + NUL). */
__attribute__((warn_unused_result)) ferry_err store_fs_new_id(char id[STORE_FILE_ID_LEN + 1]);

/* Opens the data of file id for reading: its file, or its pack, with the
 * offset of its first byte in *base_out. FERRY_ERR_NOT_FOUND if absent. */
__attribute__((warn_unused_result)) ferry_err store_fs_open_data(store_fs *fs, const char *id,
                                                                 int *fd_out, uint64_t *base_out);
/* For a packed object, store_fs_open_data counts a reader of its pack:
 * call this when done with the bytes (closing the fd is not enough). The
 * caller re-reads the object's ledger row after the open and treats a
 * changed row as not found. Does nothing for other ids. */
void store_fs_read_done(store_fs *fs, const char *id);
/* An object's data is no longer named by the ledger (deleted, replaced,
 * or its record failed): unlinks objects/xx/<id> (ignoring a missing
 * file). A packed object's region stays until its pack is empty: the pack
 * is noted for store_fs_reclaim. */
void store_fs_remove_object(store_fs *fs, const char *id);
/* Whether id names a pack region. */
bool store_fs_is_packed(const char *id);
/* Whether id is an object made of its multipart parts' data ("m" + 32 hex
 * digits): store_fs_open_data and store_fs_remove_object do not take it. */
bool store_fs_is_parts(const char *id);
/* A fresh id of that kind ("m", 32 hex digits, NUL). */
__attribute__((warn_unused_result)) ferry_err store_fs_new_parts_id(char id[STORE_FILE_ID_LEN + 2]);
/* Whether store_fs_reclaim has packs to look at. */
bool store_fs_reclaim_due(store_fs *fs);
/* Removes the packs noted by store_fs_remove_object that no ledger row
 * names any more and that no upload is writing to. */
void store_fs_reclaim(store_fs *fs, ledger *l);

/* Opens a place for a body: a pack region when size_known and 1 <= size <=
 * pack_max_object, else a file of its own (objects/xx/<id>, invisible until
 * its ledger row is committed). */
__attribute__((warn_unused_result)) ferry_err store_fs_slot_open(store_fs *fs, uint64_t size,
                                                                 bool size_known,
                                                                 store_fs_slot *slot);
/* Writes len bytes at the body's offset off (pwrite, whole or error). */
__attribute__((warn_unused_result)) ferry_err store_fs_slot_write(store_fs_slot *slot,
                                                                  uint64_t off, const void *data,
                                                                  size_t len);
/* The same for the iovcnt (1..STORE_FS_IOV_MAX) buffers of iov, one after
 * the other from off (one system call for several blocks: a direct write
 * of 1 MiB costs the disk little more than one of 256 KiB). */
#define STORE_FS_IOV_MAX 64
__attribute__((warn_unused_result)) ferry_err store_fs_slot_writev(store_fs_slot *slot,
                                                                   uint64_t off,
                                                                   const struct iovec *iov,
                                                                   int iovcnt);
/* Direct writes (O_DIRECT): the bytes go from the caller's buffer to the
 * disk, with no page-cache copy (on this machine's virtual disk the copy
 * into fresh page-cache pages cost more CPU than MD5 and SHA-256 of the
 * same bytes) and no writeback left for the fdatasync. True when the slot
 * can take them: a descriptor of its own for a file, the pack's second
 * descriptor for a region; false where the file system refuses O_DIRECT
 * (tmpfs), and then plain writes are the only ones. */
#define STORE_FS_DIRECT_ALIGN 4096u
bool store_fs_slot_direct(store_fs *fs, store_fs_slot *slot);
/* Writes the iovcnt buffers of iov at the body's offset off, directly:
 * off and every buffer's address and length multiples of
 * STORE_FS_DIRECT_ALIGN (FERRY_ERR_INVALID otherwise). A region may be
 * written up to its reserved length (its size rounded up to 4 KiB: the
 * last block padded); a file's last bytes that do not fill a block go
 * through store_fs_slot_write, so that the file ends where the body does.
 * FERRY_ERR_IO with errno EINVAL: the file system refused the direct
 * write (then plain writes are the way). */
__attribute__((warn_unused_result)) ferry_err store_fs_slot_writev_direct(store_fs_slot *slot,
                                                                          uint64_t off,
                                                                          const struct iovec *iov,
                                                                          int iovcnt);
/* Writes len bytes of buf at off: the first direct bytes directly (direct
 * a multiple of STORE_FS_DIRECT_ALIGN; it may exceed len by a pack
 * region's padding, which buf must hold), the rest through the page
 * cache; all of it through the page cache if the file system refuses the
 * direct write. */
__attribute__((warn_unused_result)) ferry_err store_fs_slot_write_split(store_fs_slot *slot,
                                                                        uint64_t off,
                                                                        const void *buf,
                                                                        size_t len,
                                                                        size_t direct);
/* Says that every byte of the slot is written: a pack's next fdatasync
 * covers it. store_fs_slot_sync does it too; calling it first for every
 * slot of a batch lets one fdatasync cover the whole batch. */
void store_fs_slot_written(store_fs_slot *slot);
/* Makes the slot's bytes durable before its ledger row is written: a
 * file's fdatasync and (grouped) directory fsync, or the pack's (grouped)
 * fdatasync. */
__attribute__((warn_unused_result)) ferry_err store_fs_slot_sync(store_fs *fs,
                                                                 store_fs_slot *slot);
/* Closes the slot. keep: its ledger row was committed (or will decide);
 * otherwise its bytes are removed (the file unlinked, the region's hole
 * punched). Safe on a closed slot. */
void store_fs_slot_close(store_fs *fs, store_fs_slot *slot, bool keep);
/* A closed slot (fd -1). */
void store_fs_slot_init(store_fs_slot *slot);

#endif
