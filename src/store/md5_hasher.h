/*
 * md5_hasher.h - the ETag's MD5 of many bodies as they arrive, side by side
 * in the lanes of vector registers (md5_lanes.h), on one thread of its own.
 *
 * MD5 is serial within a body (~1.4 ms of CPU per MiB here); 8 or 16 bodies
 * hashed together cost about what one does. md5_lanes_files gets there by
 * reading finished bodies back from the page cache; this hasher instead
 * takes each body in blocks while it arrives, so the bytes need never be
 * read back, and the store can write them with O_DIRECT (no page-cache
 * copy) while the digest is still computed before the answer.
 *
 * The blocks live in one arena the hasher owns (the vector cores address
 * their lanes by 32-bit offsets from one base): a body takes blocks with
 * md5_hasher_block_take, fills one, hands it over with md5_hasher_submit
 * and fills another meanwhile; the hasher thread takes the oldest piece of
 * every stream that has one (at most one piece of a stream at a time, so a
 * stream's pieces are hashed in order), up to the kind's lane count, and
 * hashes them in one pass. Blocks are MD5_HASHER_BLOCK bytes, 4 KiB
 * aligned (fit for O_DIRECT), followed by spare room for MD5's padding.
 *
 * Thread safety: every function may be called from any thread; one stream
 * is fed by one thread at a time.
 */
#ifndef FERRY_STORE_MD5_HASHER_H
#define FERRY_STORE_MD5_HASHER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store/md5_lanes.h"

#define MD5_HASHER_BLOCK  (256u << 10) /* bytes of body a block holds */
#define MD5_HASHER_QUEUED 8            /* pieces of one stream queued at most */

typedef struct md5_hasher md5_hasher;

/* One body being hashed. Embedded in its owner; the fields are the
 * hasher's (read them only through the functions below). */
typedef struct md5_hasher_stream {
    uint32_t v[4];      /* MD5 state (a, b, c, d) */
    uint64_t total;     /* bytes hashed or queued so far */
    uint64_t submitted; /* pieces queued so far (the last one's ticket) */
    uint64_t done;      /* pieces hashed so far; under the hasher's lock */
    struct {
        unsigned char *block;
        size_t len;
        bool last;
    } queue[MD5_HASHER_QUEUED]; /* pieces done .. submitted-1, by ticket */
    bool queued;                /* on the hasher's list of streams with work */
    bool active;                /* counted among the hasher's streams under way */
    bool finished;              /* the last piece is hashed: digest is set */
    unsigned char digest[16];
    struct md5_hasher_stream *next; /* the hasher's list */
} md5_hasher_stream;

/* A hasher with nblocks blocks (allocated up front, touched only when
 * used) and its thread, hashing with kind (a vector kind, or
 * MD5_LANES_PORTABLE for tests; md5_lanes_supported(kind) must hold).
 * NULL when kind is MD5_LANES_OPENSSL or unsupported, or on failure; also
 * when nblocks is 0 or the arena would pass 2 GiB (8065 blocks), the
 * reach of the vector cores' signed 32-bit offsets. */
md5_hasher *md5_hasher_new(md5_lanes_kind kind, size_t nblocks);

/* Stops the thread and frees the arena. Every stream must be idle (each
 * piece submitted hashed) and every block given back. Safe on NULL. */
void md5_hasher_free(md5_hasher *h);

/* A free block, or NULL when all are taken (the caller hashes another
 * way). */
unsigned char *md5_hasher_block_take(md5_hasher *h);

/* Gives a block back (its stream must not have it queued any more). */
void md5_hasher_block_give(md5_hasher *h, unsigned char *block);

void md5_hasher_stream_init(md5_hasher_stream *s);

/* Queues block[0..len) as the stream's next piece and returns its ticket
 * (1 for the first piece, 2 for the next, ...). block is a block taken
 * from this hasher or a place within one, and the piece ends within that
 * block. len is a multiple of 64, except for the last piece (last: the
 * stream ends with it; len may be 0), after which the hasher writes MD5's
 * padding after it, within the block or into its spare room: bytes after
 * a last piece must not be written to disk after this call. Waits while MD5_HASHER_QUEUED pieces of the stream are
 * queued. Nothing may be submitted after a last piece. */
uint64_t md5_hasher_submit(md5_hasher *h, md5_hasher_stream *s, unsigned char *block, size_t len,
                           bool last);

/* Waits until the piece with ticket t (and every one before it) is hashed:
 * its block may be reused or given back. t 0 returns at once. */
void md5_hasher_wait(md5_hasher *h, md5_hasher_stream *s, uint64_t t);

/* Waits for every piece queued, then returns false unless the stream's
 * last piece was queued; true and the digest in out otherwise. Nothing may
 * be submitted to the stream afterwards (an abandoned stream is finished
 * so, and the hasher stops counting on more of it). */
bool md5_hasher_finish(md5_hasher *h, md5_hasher_stream *s, unsigned char out[16]);

/* Waits for every piece queued, then hands over the stream's MD5 state
 * and its length so far (a multiple of 64) to a caller that goes on
 * hashing the rest itself (md5_lanes_advance, one stream): false, with
 * nothing set, when the stream's last piece was queued. The stream is
 * finished for the hasher, as by md5_hasher_finish. */
bool md5_hasher_detach(md5_hasher *h, md5_hasher_stream *s, uint32_t v[4], uint64_t *total);

/* Lanes filled per pass so far, and passes (for the store's log line and
 * tests: lanes / passes is the average width used). */
void md5_hasher_stats(md5_hasher *h, uint64_t *passes, uint64_t *lanes);

#endif
