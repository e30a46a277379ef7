/*
 * md5_hasher_test.c - the hasher thread against OpenSSL's MD5, with every
 * kind this CPU supports (PORTABLE too): many streams fed at once from
 * several threads in pieces of random sizes (an empty last piece, a full
 * block as the last one), a queue kept full, the blocks running out and
 * coming back, the highest block of the largest arena allowed, and passes
 * that fill several lanes. Also md5_lanes_advance's refusals, and broken
 * calling rules (a piece not of whole 64-byte blocks before the last, one
 * after the last, a block not the hasher's, ...) stopping the process.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "store/md5_hasher.h"
#include "store/md5_lanes_int.h"

static const md5_lanes_kind kinds[] = {MD5_LANES_PORTABLE, MD5_LANES_AVX2, MD5_LANES_AVX512,
                                       MD5_LANES_AVX512VL};
#define NKINDS (sizeof kinds / sizeof kinds[0])

/* The largest arena: blocks of MD5_HASHER_BLOCK + 4 KiB within INT32_MAX
 * bytes (md5_hasher.c). */
#define MAX_BLOCKS ((size_t)INT32_MAX / (MD5_HASHER_BLOCK + 4096u))

static uint64_t next_random(uint64_t *x)
{
    /* xorshift64: each stream has its own, so feeders need no lock. */
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

static void fill(unsigned char *p, size_t n, uint64_t *rng)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)(next_random(rng) >> 24);
}

static void hex_of(const unsigned char d[16], char out[33])
{
    for (int i = 0; i < 16; i++)
        snprintf(out + 2 * i, 3, "%02x", d[i]);
}

/* ---------------------------------------------------------------------- */
/* Many streams from several threads                                        */

#define STREAMS 40
#define FEEDERS 4

/* One stream being fed: two blocks used in turn (one is filled while the
 * other is queued), OpenSSL's MD5 of the same bytes alongside. */
typedef struct feed {
    md5_hasher_stream s;
    uint64_t rng;
    unsigned pieces_left; /* pieces before the last one */
    unsigned char *block[2];
    uint64_t ticket[2];
    unsigned turn;
    EVP_MD_CTX *want;
    bool ended;
    size_t length;
} feed;

typedef struct feeder_arg {
    md5_hasher *h;
    feed *feeds;
    unsigned first; /* this feeder's streams: first, first + FEEDERS, ... */
    int failures;
} feeder_arg;

/* The length of the next piece: whole 64-byte blocks up to a full block
 * before the last; the last anything from 0 to a full block, the edges
 * often. */
static size_t piece_len(feed *f, bool last)
{
    uint64_t r = next_random(&f->rng);
    if (!last)
        return (size_t)(r % (MD5_HASHER_BLOCK / 64 + 1)) * 64;
    switch (r % 8) {
    case 0:
        return 0;
    case 1:
        return MD5_HASHER_BLOCK;
    case 2:
        return 55 + (size_t)(r >> 8) % 3; /* 55, 56, 57: the padding's edge */
    case 3:
        return 64 * ((size_t)(r >> 8) % 64);
    default:
        return 1 + (size_t)(r >> 8) % MD5_HASHER_BLOCK;
    }
}

static void *feeder_main(void *p)
{
    feeder_arg *a = p;
    bool busy = true;
    while (busy) {
        busy = false;
        /* One piece of each of this feeder's streams in turn, so that its
         * streams are queued side by side. */
        for (unsigned i = a->first; i < STREAMS; i += FEEDERS) {
            feed *f = &a->feeds[i];
            if (f->ended)
                continue;
            busy = true;
            unsigned b = f->turn;
            f->turn ^= 1u;
            md5_hasher_wait(a->h, &f->s, f->ticket[b]);
            bool last = f->pieces_left == 0;
            size_t len = piece_len(f, last);
            fill(f->block[b], len, &f->rng);
            if (EVP_DigestUpdate(f->want, f->block[b], len) != 1)
                a->failures++;
            f->length += len;
            f->ticket[b] = md5_hasher_submit(a->h, &f->s, f->block[b], len, last);
            if (!last) {
                f->pieces_left--;
                continue;
            }
            unsigned char got[16], want[16];
            unsigned int want_len = 0;
            f->ended = true;
            if (!md5_hasher_finish(a->h, &f->s, got) ||
                EVP_DigestFinal_ex(f->want, want, &want_len) != 1 || memcmp(got, want, 16) != 0) {
                char g[33], w[33];
                hex_of(got, g);
                hex_of(want, w);
                fprintf(stderr, "stream %u (%zu bytes): %s, want %s\n", i, f->length, g, w);
                a->failures++;
            }
        }
    }
    return NULL;
}

static void run_streams(md5_lanes_kind kind, uint64_t seed)
{
    md5_hasher *h = md5_hasher_new(kind, 2 * STREAMS);
    feed *feeds = calloc(STREAMS, sizeof *feeds);
    feeder_arg args[FEEDERS];
    pthread_t threads[FEEDERS];

    assert_non_null(h);
    assert_non_null(feeds);
    for (unsigned i = 0; i < STREAMS; i++) {
        feed *f = &feeds[i];
        md5_hasher_stream_init(&f->s);
        f->rng = seed * 1000003u + i + 1;
        f->pieces_left = (unsigned)(next_random(&f->rng) % 7);
        f->block[0] = md5_hasher_block_take(h);
        f->block[1] = md5_hasher_block_take(h);
        assert_non_null(f->block[0]);
        assert_non_null(f->block[1]);
        f->want = EVP_MD_CTX_new();
        assert_non_null(f->want);
        assert_int_equal(EVP_DigestInit_ex(f->want, EVP_md5(), NULL), 1);
    }
    for (unsigned t = 0; t < FEEDERS; t++) {
        args[t] = (feeder_arg){.h = h, .feeds = feeds, .first = t};
        assert_int_equal(pthread_create(&threads[t], NULL, feeder_main, &args[t]), 0);
    }
    for (unsigned t = 0; t < FEEDERS; t++) {
        assert_int_equal(pthread_join(threads[t], NULL), 0);
        assert_int_equal(args[t].failures, 0);
    }
    uint64_t passes = 0, lanes = 0;
    md5_hasher_stats(h, &passes, &lanes);
    printf("md5_hasher %s: %llu passes, %llu lanes\n", md5_lanes_kind_str(kind),
           (unsigned long long)passes, (unsigned long long)lanes);
    assert_true(passes > 0);
    assert_true(lanes >= passes);
    assert_true(lanes <= passes * md5_lanes_width(kind));
    for (unsigned i = 0; i < STREAMS; i++) {
        md5_hasher_block_give(h, feeds[i].block[0]);
        md5_hasher_block_give(h, feeds[i].block[1]);
        EVP_MD_CTX_free(feeds[i].want);
    }
    md5_hasher_free(h);
    free(feeds);
}

static void test_many_streams(void **state)
{
    (void)state;
    for (size_t k = 0; k < NKINDS; k++) {
        if (!md5_lanes_supported(kinds[k]))
            continue;
        for (uint64_t seed = 1; seed <= 2; seed++)
            run_streams(kinds[k], seed);
    }
}

/* ---------------------------------------------------------------------- */
/* Single behaviours                                                        */

static void test_new_refuses(void **state)
{
    (void)state;
    assert_null(md5_hasher_new(MD5_LANES_OPENSSL, 4));
    assert_null(md5_hasher_new(MD5_LANES_PORTABLE, 0));
    assert_null(md5_hasher_new(MD5_LANES_PORTABLE, MAX_BLOCKS + 1));
    assert_null(md5_hasher_new((md5_lanes_kind)99, 4));
    md5_hasher_free(NULL);
}

/* take gives distinct 4 KiB aligned blocks until none is left, then NULL;
 * a block given back is taken again. */
static void test_blocks_run_out(void **state)
{
    md5_hasher *h = md5_hasher_new(MD5_LANES_PORTABLE, 3);
    unsigned char *b[3];
    (void)state;
    assert_non_null(h);
    for (int i = 0; i < 3; i++) {
        b[i] = md5_hasher_block_take(h);
        assert_non_null(b[i]);
        assert_int_equal((uintptr_t)b[i] % 4096, 0);
        for (int j = 0; j < i; j++) {
            size_t gap = b[i] > b[j] ? (size_t)(b[i] - b[j]) : (size_t)(b[j] - b[i]);
            assert_true(gap >= MD5_HASHER_BLOCK + MD5_LANES_PAD_ROOM);
        }
        /* The whole block and its padding room are writable. */
        memset(b[i], 0xa5, MD5_HASHER_BLOCK + MD5_LANES_PAD_ROOM);
    }
    assert_null(md5_hasher_block_take(h));
    assert_null(md5_hasher_block_take(h));
    md5_hasher_block_give(h, b[1]);
    unsigned char *again = md5_hasher_block_take(h);
    assert_ptr_equal(again, b[1]);
    assert_null(md5_hasher_block_take(h));
    for (int i = 0; i < 3; i++)
        md5_hasher_block_give(h, b[i]);
    md5_hasher_free(h);
}

/* An empty body (a last piece of 0 bytes); a stream without its last
 * piece has no digest; a wait for ticket 0 returns at once. */
static void test_empty_and_unfinished(void **state)
{
    (void)state;
    for (size_t k = 0; k < NKINDS; k++) {
        if (!md5_lanes_supported(kinds[k]))
            continue;
        md5_hasher *h = md5_hasher_new(kinds[k], 2);
        assert_non_null(h);
        unsigned char *block = md5_hasher_block_take(h);
        md5_hasher_stream s, open;
        unsigned char d[16];
        char hex[33];
        md5_hasher_stream_init(&s);
        md5_hasher_stream_init(&open);
        md5_hasher_wait(h, &s, 0);
        assert_int_equal(md5_hasher_submit(h, &s, block, 0, true), 1);
        assert_true(md5_hasher_finish(h, &s, d));
        hex_of(d, hex);
        assert_string_equal(hex, "d41d8cd98f00b204e9800998ecf8427e");
        /* "abc" in the same block, now free again: RFC 1321's vector. */
        md5_hasher_stream_init(&s);
        memcpy(block, "abc", 3);
        assert_int_equal(md5_hasher_submit(h, &s, block, 3, true), 1);
        assert_true(md5_hasher_finish(h, &s, d));
        hex_of(d, hex);
        assert_string_equal(hex, "900150983cd24fb0d6963f7d28e17f72");

        memset(block, 'x', 128);
        assert_int_equal(md5_hasher_submit(h, &open, block, 128, false), 1);
        assert_false(md5_hasher_finish(h, &open, d));
        md5_hasher_wait(h, &open, 1);
        md5_hasher_block_give(h, block);
        md5_hasher_free(h);
    }
}

/* Twice MD5_HASHER_QUEUED full blocks submitted without waiting: submit
 * waits while MD5_HASHER_QUEUED are queued, and the pieces are hashed in
 * order. */
static void test_queue_full(void **state)
{
    (void)state;
    for (size_t k = 0; k < NKINDS; k++) {
        if (!md5_lanes_supported(kinds[k]))
            continue;
        enum { PIECES = 2 * MD5_HASHER_QUEUED };
        md5_hasher *h = md5_hasher_new(kinds[k], PIECES);
        md5_hasher_stream s;
        EVP_MD_CTX *want = EVP_MD_CTX_new();
        unsigned char *b[PIECES], got[16], wd[16];
        unsigned int wlen = 0;
        uint64_t rng = 77;
        assert_non_null(h);
        assert_non_null(want);
        assert_int_equal(EVP_DigestInit_ex(want, EVP_md5(), NULL), 1);
        md5_hasher_stream_init(&s);
        for (unsigned i = 0; i < PIECES; i++) {
            b[i] = md5_hasher_block_take(h);
            assert_non_null(b[i]);
            size_t len = i + 1 < PIECES ? MD5_HASHER_BLOCK : 1000;
            fill(b[i], len, &rng);
            assert_int_equal(EVP_DigestUpdate(want, b[i], len), 1);
            assert_int_equal(md5_hasher_submit(h, &s, b[i], len, i + 1 == PIECES), i + 1);
        }
        assert_true(md5_hasher_finish(h, &s, got));
        assert_int_equal(EVP_DigestFinal_ex(want, wd, &wlen), 1);
        assert_memory_equal(got, wd, 16);
        for (unsigned i = 0; i < PIECES; i++)
            md5_hasher_block_give(h, b[i]);
        EVP_MD_CTX_free(want);
        md5_hasher_free(h);
    }
}

/* Pieces that start within a block (the store hands a block over 64 KiB
 * at a time as it fills), the last one's padding within the block or, at
 * its end, in the spare room after it. */
static void test_pieces_within_a_block(void **state)
{
    (void)state;
    for (size_t k = 0; k < NKINDS; k++) {
        if (!md5_lanes_supported(kinds[k]))
            continue;
        static const size_t last_lens[] = {1000, 65536, 0};
        for (size_t t = 0; t < sizeof last_lens / sizeof last_lens[0]; t++) {
            md5_hasher *h = md5_hasher_new(kinds[k], 1);
            md5_hasher_stream s;
            unsigned char *b, got[16], wd[16];
            unsigned int wlen = 0;
            uint64_t rng = 5 + t;
            size_t at = 0;
            assert_non_null(h);
            b = md5_hasher_block_take(h);
            assert_non_null(b);
            md5_hasher_stream_init(&s);
            /* Three 64 KiB pieces, then the last, ending at or before the
             * block's end. */
            size_t total = 3 * 65536 + last_lens[t];
            fill(b, total, &rng);
            EVP_MD_CTX *want = EVP_MD_CTX_new();
            assert_non_null(want);
            assert_int_equal(EVP_DigestInit_ex(want, EVP_md5(), NULL), 1);
            assert_int_equal(EVP_DigestUpdate(want, b, total), 1);
            assert_int_equal(EVP_DigestFinal_ex(want, wd, &wlen), 1);
            for (int i = 0; i < 3; i++, at += 65536)
                md5_hasher_submit(h, &s, b + at, 65536, false);
            md5_hasher_submit(h, &s, b + at, last_lens[t], true);
            assert_true(md5_hasher_finish(h, &s, got));
            assert_memory_equal(got, wd, 16);
            EVP_MD_CTX_free(want);
            md5_hasher_block_give(h, b);
            md5_hasher_free(h);
        }
    }
}

/* A stream taken over half way (md5_hasher_detach) and finished with
 * md5_lanes_advance on one stream gets the body's MD5; a stream whose last
 * piece was queued cannot be detached. */
static void test_detach(void **state)
{
    (void)state;
    for (size_t k = 0; k < NKINDS; k++) {
        if (!md5_lanes_supported(kinds[k]))
            continue;
        md5_hasher *h = md5_hasher_new(kinds[k], 2);
        md5_hasher_stream s;
        unsigned char *b, got[16], wd[16];
        unsigned char *rest = malloc(100000 + MD5_LANES_PAD_ROOM);
        unsigned int wlen = 0;
        uint64_t rng = 99, total = 0;
        uint32_t v[4];
        assert_non_null(h);
        assert_non_null(rest);
        b = md5_hasher_block_take(h);
        assert_non_null(b);
        fill(b, 3 * 65536, &rng);
        fill(rest, 100000, &rng);
        EVP_MD_CTX *want = EVP_MD_CTX_new();
        assert_non_null(want);
        assert_int_equal(EVP_DigestInit_ex(want, EVP_md5(), NULL), 1);
        assert_int_equal(EVP_DigestUpdate(want, b, 3 * 65536), 1);
        assert_int_equal(EVP_DigestUpdate(want, rest, 100000), 1);
        assert_int_equal(EVP_DigestFinal_ex(want, wd, &wlen), 1);
        md5_hasher_stream_init(&s);
        for (int i = 0; i < 3; i++)
            md5_hasher_submit(h, &s, b + i * 65536, 65536, false);
        assert_true(md5_hasher_detach(h, &s, v, &total));
        assert_int_equal(total, 3 * 65536);
        /* The rest on this thread: whole 64-byte blocks, then the last. */
        md5_lanes_piece p = {.off = 0, .len = 99968, .total = total + 99968};
        memcpy(p.v, v, sizeof v);
        assert_true(md5_lanes_advance(MD5_LANES_PORTABLE, rest, &p, 1));
        md5_lanes_piece last = {.off = 99968, .len = 32, .last = true, .total = p.total + 32};
        memcpy(last.v, p.v, sizeof v);
        assert_true(md5_lanes_advance(MD5_LANES_PORTABLE, rest, &last, 1));
        memcpy(got, last.digest, 16);
        assert_memory_equal(got, wd, 16);
        /* After a last piece there is nothing to take over. */
        md5_hasher_stream_init(&s);
        md5_hasher_submit(h, &s, b, 100, true);
        assert_false(md5_hasher_detach(h, &s, v, &total));
        assert_true(md5_hasher_finish(h, &s, got));
        EVP_MD_CTX_free(want);
        free(rest);
        md5_hasher_block_give(h, b);
        md5_hasher_free(h);
    }
}

/* Sixteen streams with their pieces queued before the thread can take
 * them one by one: the passes fill several lanes. */
static void test_passes_share_lanes(void **state)
{
    (void)state;
    for (size_t k = 0; k < NKINDS; k++) {
        if (!md5_lanes_supported(kinds[k]))
            continue;
        enum { N = 16 };
        md5_hasher *h = md5_hasher_new(kinds[k], N);
        md5_hasher_stream s[N];
        unsigned char *b[N], got[16], want[16];
        unsigned int wlen = 0;
        uint64_t rng = 5;
        assert_non_null(h);
        for (unsigned i = 0; i < N; i++) {
            md5_hasher_stream_init(&s[i]);
            b[i] = md5_hasher_block_take(h);
            assert_non_null(b[i]);
            fill(b[i], MD5_HASHER_BLOCK, &rng);
        }
        for (unsigned i = 0; i < N; i++)
            md5_hasher_submit(h, &s[i], b[i], MD5_HASHER_BLOCK, true);
        for (unsigned i = 0; i < N; i++) {
            assert_true(md5_hasher_finish(h, &s[i], got));
            assert_int_equal(EVP_Digest(b[i], MD5_HASHER_BLOCK, want, &wlen, EVP_md5(), NULL), 1);
            assert_memory_equal(got, want, 16);
            md5_hasher_block_give(h, b[i]);
        }
        uint64_t passes = 0, lanes = 0;
        md5_hasher_stats(h, &passes, &lanes);
        assert_int_equal(lanes, N);
        assert_true(lanes > passes);
        assert_true(passes >= (N + md5_lanes_width(kinds[k]) - 1) / md5_lanes_width(kinds[k]));
        md5_hasher_free(h);
    }
}

/* The largest arena allowed, and a body in its highest block: offsets
 * close to INT32_MAX reach the right bytes in the gathers. */
static void test_largest_arena(void **state)
{
    (void)state;
    for (size_t k = 0; k < NKINDS; k++) {
        if (!md5_lanes_supported(kinds[k]))
            continue;
        md5_hasher *h = md5_hasher_new(kinds[k], MAX_BLOCKS);
        unsigned char **all = calloc(MAX_BLOCKS, sizeof *all);
        unsigned char *top = NULL, got[16], want[16];
        unsigned int wlen = 0;
        uint64_t rng = 9;
        md5_hasher_stream s;
        assert_non_null(h);
        assert_non_null(all);
        for (size_t i = 0; i < MAX_BLOCKS; i++) {
            all[i] = md5_hasher_block_take(h);
            assert_non_null(all[i]);
            if (top == NULL || all[i] > top)
                top = all[i];
        }
        assert_null(md5_hasher_block_take(h));
        fill(top, MD5_HASHER_BLOCK, &rng);
        assert_int_equal(EVP_Digest(top, MD5_HASHER_BLOCK, want, &wlen, EVP_md5(), NULL), 1);
        md5_hasher_stream_init(&s);
        md5_hasher_submit(h, &s, top, MD5_HASHER_BLOCK, true);
        assert_true(md5_hasher_finish(h, &s, got));
        assert_memory_equal(got, want, 16);
        for (size_t i = 0; i < MAX_BLOCKS; i++)
            md5_hasher_block_give(h, all[i]);
        free(all);
        md5_hasher_free(h);
    }
}

/* md5_lanes_advance refuses what it cannot hash right, and does nothing
 * then. */
static void test_advance_refuses(void **state)
{
    static unsigned char arena[4096];
    md5_lanes_piece p[17];
    (void)state;
    memset(p, 0, sizeof p);
    for (int i = 0; i < 17; i++) {
        md5_lanes_state_init(p[i].v);
        p[i].off = (uint32_t)(i * 128);
    }
    assert_false(md5_lanes_advance(MD5_LANES_OPENSSL, arena, p, 1));
    assert_false(md5_lanes_advance(MD5_LANES_PORTABLE, arena, p, 17));
    p[0].len = 65; /* not whole blocks, and not last */
    assert_false(md5_lanes_advance(MD5_LANES_PORTABLE, arena, p, 1));
    p[0].len = 64;
    p[0].off = (uint32_t)INT32_MAX - 64;
    assert_false(md5_lanes_advance(MD5_LANES_PORTABLE, arena, p, 1));
    p[0].off = 0;
    p[0].last = true;
    p[0].total = 64;
    assert_true(md5_lanes_advance(MD5_LANES_PORTABLE, arena, p, 1));
    unsigned char want[16];
    unsigned int wlen = 0;
    static const unsigned char zeros[64];
    assert_int_equal(EVP_Digest(zeros, 64, want, &wlen, EVP_md5(), NULL), 1);
    assert_memory_equal(p[0].digest, want, 16);
}

/* ---------------------------------------------------------------------- */
/* Broken calling rules stop the process (md5_hasher.c, misuse)             */

typedef enum misuse_case {
    MISUSE_PARTIAL_BLOCK, /* a piece of 100 bytes that is not the last */
    MISUSE_OVERSIZED,     /* a piece longer than a block */
    MISUSE_FOREIGN_BLOCK, /* a piece in memory the hasher does not own */
    MISUSE_PAST_BLOCK,    /* a piece running past the end of its block */
    MISUSE_AFTER_LAST,    /* a piece after the stream's last */
    MISUSE_WAIT_UNSENT,   /* a wait for a ticket never handed out */
    MISUSE_GIVE_FOREIGN,  /* a foreign block given back */
    MISUSE_GIVE_TWICE,    /* more blocks given back than taken */
    MISUSE_CASES
} misuse_case;

static void misuse_child(misuse_case c)
{
    static unsigned char foreign[MD5_HASHER_BLOCK + 4096];
    md5_hasher *h = md5_hasher_new(MD5_LANES_PORTABLE, 2);
    md5_hasher_stream s;
    unsigned char *b;
    if (h == NULL || (b = md5_hasher_block_take(h)) == NULL)
        _exit(3);
    md5_hasher_stream_init(&s);
    switch (c) {
    case MISUSE_PARTIAL_BLOCK:
        md5_hasher_submit(h, &s, b, 100, false);
        break;
    case MISUSE_OVERSIZED:
        md5_hasher_submit(h, &s, b, MD5_HASHER_BLOCK + 64, true);
        break;
    case MISUSE_FOREIGN_BLOCK:
        md5_hasher_submit(h, &s, foreign, 64, false);
        break;
    case MISUSE_PAST_BLOCK:
        md5_hasher_submit(h, &s, b + 64, MD5_HASHER_BLOCK, false);
        break;
    case MISUSE_AFTER_LAST:
        md5_hasher_submit(h, &s, b, 10, true);
        md5_hasher_wait(h, &s, 1);
        md5_hasher_submit(h, &s, b, 64, false);
        break;
    case MISUSE_WAIT_UNSENT:
        md5_hasher_wait(h, &s, 1);
        break;
    case MISUSE_GIVE_FOREIGN:
        md5_hasher_block_give(h, foreign);
        break;
    case MISUSE_GIVE_TWICE:
        md5_hasher_block_give(h, b);
        md5_hasher_block_give(h, b);
        break;
    case MISUSE_CASES:
        break;
    }
    _exit(0); /* the misuse went unnoticed */
}

static void test_misuse_aborts(void **state)
{
    (void)state;
    for (int c = 0; c < MISUSE_CASES; c++) {
        fflush(NULL);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            /* The child's "md5_hasher: ..." line is expected; keep the
             * test's output readable. */
            if (freopen("/dev/null", "w", stderr) == NULL)
                _exit(4);
            misuse_child((misuse_case)c);
        }
        int status = 0;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGABRT)
            fail_msg("misuse case %d: status %d, not SIGABRT", c, status);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_refuses),    cmocka_unit_test(test_advance_refuses),
        cmocka_unit_test(test_blocks_run_out), cmocka_unit_test(test_empty_and_unfinished),
        cmocka_unit_test(test_queue_full),     cmocka_unit_test(test_passes_share_lanes),
        cmocka_unit_test(test_largest_arena),  cmocka_unit_test(test_many_streams),
        cmocka_unit_test(test_misuse_aborts),  cmocka_unit_test(test_pieces_within_a_block),
        cmocka_unit_test(test_detach),
    };
    printf("md5_hasher: best kind on this CPU: %s\n", md5_lanes_kind_str(md5_lanes_best()));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
