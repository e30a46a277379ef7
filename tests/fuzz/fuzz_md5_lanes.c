/*
 * fuzz_md5_lanes.c - differential libFuzzer target: md5_lanes (every kind
 * this CPU supports) against OpenSSL's MD5.
 *
 * Input: byte 0 gives the number of streams (1..40), the next bytes one
 * repeat count per stream, the rest is cut into that many pieces of equal
 * share; stream i is its piece repeated (1 + count) times, so that streams
 * cross the 64-byte blocks, the padding boundary and the 64 KiB lane chunk
 * at every offset and run side by side with very different lengths.
 * The same streams then go through md5_lanes_advance (md5_lanes_int.h), as
 * the store's hasher feeds it: each stream in pieces of 64-byte blocks
 * whose counts come from the input (0 to 255 blocks; a piece that would
 * reach the stream's end is its last, of whatever length is left, and one
 * ending exactly there is followed by an empty last piece or is the last
 * itself), each piece at an input-chosen skew in its slot of one arena,
 * the streams of a round advanced in groups of an input-chosen size up to
 * the kind's width.
 * Property (abort on violation): every digest equals OpenSSL's.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "store/md5_lanes.h"
#include "store/md5_lanes_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define STREAMS_MAX 40
#define PIECE_MAX   (255u * 64u)
#define SLOT_BYTES  (PIECE_MAX + 64u + MD5_LANES_PAD_ROOM) /* a piece, its skew, its padding */

/* Where one stream is, between its pieces. */
typedef struct piece_feed {
    uint32_t v[4];
    size_t pos;
    unsigned pieces;
    bool ended;
} piece_feed;

/* Advances the g pieces of a group; returns how many streams ended, each
 * with the digest it must have. */
static size_t advance_group(md5_lanes_kind kind, unsigned char *arena, md5_lanes_piece *pieces,
                            const size_t *which, size_t g, piece_feed *feed,
                            unsigned char (*want)[16])
{
    size_t ended = 0;
    if (!md5_lanes_advance(kind, arena, pieces, g))
        abort();
    for (size_t j = 0; j < g; j++) {
        piece_feed *f = &feed[which[j]];
        memcpy(f->v, pieces[j].v, sizeof f->v);
        if (!pieces[j].last)
            continue;
        if (memcmp(pieces[j].digest, want[which[j]], 16) != 0)
            abort();
        f->ended = true;
        ended++;
    }
    return ended;
}

/* The streams in pieces through md5_lanes_advance with kind; every digest
 * must equal want. */
static void check_pieces(md5_lanes_kind kind, const uint8_t *data, size_t n,
                         unsigned char *const *streams, const size_t *len,
                         unsigned char (*want)[16], unsigned char *arena)
{
    piece_feed feed[STREAMS_MAX];
    md5_lanes_piece pieces[MD5_LANES_MAX];
    size_t which[MD5_LANES_MAX];
    unsigned width = md5_lanes_width(kind);
    size_t left = n;

    for (size_t i = 0; i < n; i++) {
        memset(&feed[i], 0, sizeof feed[i]);
        md5_lanes_state_init(feed[i].v);
    }
    for (unsigned round = 0; left > 0; round++) {
        size_t group = 1 + (data[0] / STREAMS_MAX + round) % width, g = 0;
        for (size_t i = 0; i < n; i++) {
            piece_feed *f = &feed[i];
            if (f->ended)
                continue;
            uint8_t pick = data[1 + (i + f->pieces) % n];
            size_t units = (size_t)(pick + 7u * f->pieces) % 256;
            size_t rest = len[i] - f->pos, take = units * 64;
            bool last = rest < take || (rest == take && (pick & 1u));
            if (last)
                take = rest;
            md5_lanes_piece *p = &pieces[g];
            memset(p, 0, sizeof *p);
            memcpy(p->v, f->v, sizeof p->v);
            p->off = (uint32_t)(g * SLOT_BYTES + pick % 64);
            p->len = (uint32_t)take;
            p->last = last;
            p->total = f->pos + take;
            if (take > 0)
                memcpy(arena + p->off, streams[i] + f->pos, take);
            which[g++] = i;
            f->pos += take;
            f->pieces++;
            if (g < group && i + 1 < n)
                continue;
            left -= advance_group(kind, arena, pieces, which, g, feed, want);
            g = 0;
        }
        if (g > 0)
            left -= advance_group(kind, arena, pieces, which, g, feed, want);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const md5_lanes_kind kinds[] = {MD5_LANES_OPENSSL, MD5_LANES_PORTABLE, MD5_LANES_AVX2,
                                           MD5_LANES_AVX512, MD5_LANES_AVX512VL};
    unsigned char *streams[STREAMS_MAX] = {NULL};
    const unsigned char *views[STREAMS_MAX];
    size_t len[STREAMS_MAX];
    unsigned char got[STREAMS_MAX][16], want[STREAMS_MAX][16];
    size_t n, share, at;

    if (size < 1)
        return 0;
    n = 1 + data[0] % STREAMS_MAX;
    if (size < 1 + n)
        return 0;
    share = (size - 1 - n) / n;
    at = 1 + n;
    for (size_t i = 0; i < n; i++) {
        size_t reps = 1 + data[1 + i];
        len[i] = share * reps;
        streams[i] = malloc(len[i] > 0 ? len[i] : 1);
        if (streams[i] == NULL)
            abort();
        for (size_t r = 0; r < reps; r++)
            if (share > 0)
                memcpy(streams[i] + r * share, data + at, share);
        at += share;
        views[i] = streams[i];
        unsigned int dlen = 0;
        if (EVP_Digest(streams[i], len[i], want[i], &dlen, EVP_md5(), NULL) != 1)
            abort();
    }
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        if (!md5_lanes_supported(kinds[k]))
            continue;
        if (!md5_lanes_mem(kinds[k], views, len, n, got))
            abort();
        if (memcmp(got, want, n * 16) != 0)
            abort();
    }
    unsigned char *arena = malloc((size_t)MD5_LANES_MAX * SLOT_BYTES);
    if (arena == NULL)
        abort();
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++)
        if (kinds[k] != MD5_LANES_OPENSSL && md5_lanes_supported(kinds[k]))
            check_pieces(kinds[k], data, n, streams, len, want, arena);
    free(arena);
    for (size_t i = 0; i < n; i++)
        free(streams[i]);
    return 0;
}
