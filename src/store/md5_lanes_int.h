/*
 * md5_lanes_int.h - the lanes of md5_lanes.c for callers that keep their
 * streams' state themselves (md5_hasher.c, the tests, fuzz_md5_lanes.c):
 * each stream advances by one piece that already sits in the caller's
 * arena, and the state stays with the caller between pieces.
 *
 * Not part of the store's interface: include it only from src/store and
 * its tests.
 */
#ifndef FERRY_STORE_MD5_LANES_INT_H
#define FERRY_STORE_MD5_LANES_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store/md5_lanes.h"

/* Bytes a last piece may need after its data for MD5's padding (0x80, up
 * to 63 zeros, the 8-byte length: at most 72; rounded up). */
#define MD5_LANES_PAD_ROOM 128u

/* One stream's next piece, for md5_lanes_advance. */
typedef struct md5_lanes_piece {
    uint32_t v[4];  /* in: the stream's state before the piece; out: after it */
    uint64_t total; /* bytes of the stream up to the end of this piece (read for a last one) */
    uint32_t off;   /* where the piece starts, from the arena's start */
    uint32_t len;   /* bytes: a multiple of 64, unless last */
    bool last;      /* the stream ends with this piece */
    unsigned char digest[16]; /* out, for a last piece: the stream's MD5 */
} md5_lanes_piece;

/* Sets v to MD5's initial state (the state of an empty stream). */
void md5_lanes_state_init(uint32_t v[4]);

/* Lanes one pass of kind fills (16 or 8); 0 for MD5_LANES_OPENSSL, which
 * has no lanes. */
unsigned md5_lanes_width(md5_lanes_kind kind);

/* Advances pieces[0..n) (n of them, at most md5_lanes_width(kind), each a
 * different stream) by one piece each, side by side, with kind or, for 8
 * streams or fewer when kind is AVX-512, the 8-lane kind this CPU has; a
 * single stream goes through the scalar loop (MD5_LANES_PORTABLE's core).
 * kind must be supported and not MD5_LANES_OPENSSL. A last piece gets
 * MD5's padding written in place right after its data (up to
 * MD5_LANES_PAD_ROOM bytes at arena + off + len, which must be the
 * caller's to write) and its digest set.
 *
 * The vector cores gather with signed 32-bit indices, so every byte they
 * read must lie below arena + INT32_MAX: off + len + MD5_LANES_PAD_ROOM
 * <= INT32_MAX for every piece. False, with nothing done, when a piece
 * breaks that or another rule above. */
__attribute__((warn_unused_result)) bool
md5_lanes_advance(md5_lanes_kind kind, unsigned char *arena, md5_lanes_piece *pieces, size_t n);

#endif
