/*
 * md5_lanes.c - MD5 of several streams side by side; see md5_lanes.h.
 *
 * The streams are fed through a buffer (the arena) of one slot per lane:
 * each round, every busy lane gets up to LANE_CHUNK bytes of its stream in
 * its slot, and the last piece of a stream gets MD5's padding right there,
 * so that every slot holds whole 64-byte blocks. A core then runs the 64
 * steps of MD5 over block b of every slot at once, for b = 0, 1, ... as
 * long as some slot has a block b; a lane whose slot has fewer blocks keeps
 * its state (the vector cores add the round's result under a lane mask).
 * A lane whose stream ended takes the next stream waiting. The message
 * words are gathered from the slots with 32-bit offsets from the arena's
 * start, which is why all slots live in one buffer. md5_lanes_advance
 * (md5_lanes_int.h) runs the same cores over pieces a caller has put in an
 * arena of its own (md5_hasher.c), the streams' states kept by the caller.
 *
 * Cores: portable C (the reference, any CPU), AVX2 (8 lanes), AVX-512F (16
 * lanes; vpternlogd does each round function in one instruction and vprold
 * the rotation), AVX-512VL (the same instructions on 8 lanes). The vector cores are compiled with
 * target attributes and only called after the CPU said it has the instructions.
 */
#include "md5_lanes.h"
#include "md5_lanes_int.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define MD5_LANES_X86 1
#include <immintrin.h>
#endif

#define LANE_CHUNK  (64u << 10)         /* bytes of a stream per lane and round */
#define LANE_STRIDE (LANE_CHUNK + MD5_LANES_PAD_ROOM) /* the padding after a last piece */
#define ARENA_BYTES ((size_t)MD5_LANES_MAX * LANE_STRIDE)

struct md5_lanes_scratch {
    unsigned char *arena; /* MD5_LANES_MAX slots of LANE_STRIDE bytes, 64-byte aligned */
};

/* The state of every lane: word w of lane l is v[w][l] (a, b, c, d). */
typedef struct lane_state {
    uint32_t v[4][MD5_LANES_MAX];
} lane_state;

/* A core: MD5 compression of nblocks[l] blocks from arena + off[l] into
 * lane l's state, for the core's lanes (8 or 16). */
typedef void (*md5_core_fn)(lane_state *st, const unsigned char *arena, const uint32_t *off,
                            const uint32_t *nblocks);

static const uint32_t md5_iv[4] = {0x67452301u, 0xefcdab89u, 0x98badcfeu, 0x10325476u};

/* MD5's 64 steps (RFC 1321): round function, the registers in the step's
 * order, message word, rotation, constant. */
#define MD5_STEPS(S)                                                                               \
    S(F, a, b, c, d, 0, 7, 0xd76aa478u)                                                            \
    S(F, d, a, b, c, 1, 12, 0xe8c7b756u)                                                           \
    S(F, c, d, a, b, 2, 17, 0x242070dbu)                                                           \
    S(F, b, c, d, a, 3, 22, 0xc1bdceeeu)                                                           \
    S(F, a, b, c, d, 4, 7, 0xf57c0fafu)                                                            \
    S(F, d, a, b, c, 5, 12, 0x4787c62au)                                                           \
    S(F, c, d, a, b, 6, 17, 0xa8304613u)                                                           \
    S(F, b, c, d, a, 7, 22, 0xfd469501u)                                                           \
    S(F, a, b, c, d, 8, 7, 0x698098d8u)                                                            \
    S(F, d, a, b, c, 9, 12, 0x8b44f7afu)                                                           \
    S(F, c, d, a, b, 10, 17, 0xffff5bb1u)                                                          \
    S(F, b, c, d, a, 11, 22, 0x895cd7beu)                                                          \
    S(F, a, b, c, d, 12, 7, 0x6b901122u)                                                           \
    S(F, d, a, b, c, 13, 12, 0xfd987193u)                                                          \
    S(F, c, d, a, b, 14, 17, 0xa679438eu)                                                          \
    S(F, b, c, d, a, 15, 22, 0x49b40821u)                                                          \
    S(G, a, b, c, d, 1, 5, 0xf61e2562u)                                                            \
    S(G, d, a, b, c, 6, 9, 0xc040b340u)                                                            \
    S(G, c, d, a, b, 11, 14, 0x265e5a51u)                                                          \
    S(G, b, c, d, a, 0, 20, 0xe9b6c7aau)                                                           \
    S(G, a, b, c, d, 5, 5, 0xd62f105du)                                                            \
    S(G, d, a, b, c, 10, 9, 0x02441453u)                                                           \
    S(G, c, d, a, b, 15, 14, 0xd8a1e681u)                                                          \
    S(G, b, c, d, a, 4, 20, 0xe7d3fbc8u)                                                           \
    S(G, a, b, c, d, 9, 5, 0x21e1cde6u)                                                            \
    S(G, d, a, b, c, 14, 9, 0xc33707d6u)                                                           \
    S(G, c, d, a, b, 3, 14, 0xf4d50d87u)                                                           \
    S(G, b, c, d, a, 8, 20, 0x455a14edu)                                                           \
    S(G, a, b, c, d, 13, 5, 0xa9e3e905u)                                                           \
    S(G, d, a, b, c, 2, 9, 0xfcefa3f8u)                                                            \
    S(G, c, d, a, b, 7, 14, 0x676f02d9u)                                                           \
    S(G, b, c, d, a, 12, 20, 0x8d2a4c8au)                                                          \
    S(H, a, b, c, d, 5, 4, 0xfffa3942u)                                                            \
    S(H, d, a, b, c, 8, 11, 0x8771f681u)                                                           \
    S(H, c, d, a, b, 11, 16, 0x6d9d6122u)                                                          \
    S(H, b, c, d, a, 14, 23, 0xfde5380cu)                                                          \
    S(H, a, b, c, d, 1, 4, 0xa4beea44u)                                                            \
    S(H, d, a, b, c, 4, 11, 0x4bdecfa9u)                                                           \
    S(H, c, d, a, b, 7, 16, 0xf6bb4b60u)                                                           \
    S(H, b, c, d, a, 10, 23, 0xbebfbc70u)                                                          \
    S(H, a, b, c, d, 13, 4, 0x289b7ec6u)                                                           \
    S(H, d, a, b, c, 0, 11, 0xeaa127fau)                                                           \
    S(H, c, d, a, b, 3, 16, 0xd4ef3085u)                                                           \
    S(H, b, c, d, a, 6, 23, 0x04881d05u)                                                           \
    S(H, a, b, c, d, 9, 4, 0xd9d4d039u)                                                            \
    S(H, d, a, b, c, 12, 11, 0xe6db99e5u)                                                          \
    S(H, c, d, a, b, 15, 16, 0x1fa27cf8u)                                                          \
    S(H, b, c, d, a, 2, 23, 0xc4ac5665u)                                                           \
    S(I, a, b, c, d, 0, 6, 0xf4292244u)                                                            \
    S(I, d, a, b, c, 7, 10, 0x432aff97u)                                                           \
    S(I, c, d, a, b, 14, 15, 0xab9423a7u)                                                          \
    S(I, b, c, d, a, 5, 21, 0xfc93a039u)                                                           \
    S(I, a, b, c, d, 12, 6, 0x655b59c3u)                                                           \
    S(I, d, a, b, c, 3, 10, 0x8f0ccc92u)                                                           \
    S(I, c, d, a, b, 10, 15, 0xffeff47du)                                                          \
    S(I, b, c, d, a, 1, 21, 0x85845dd1u)                                                           \
    S(I, a, b, c, d, 8, 6, 0x6fa87e4fu)                                                            \
    S(I, d, a, b, c, 15, 10, 0xfe2ce6e0u)                                                          \
    S(I, c, d, a, b, 6, 15, 0xa3014314u)                                                           \
    S(I, b, c, d, a, 13, 21, 0x4e0811a1u)                                                          \
    S(I, a, b, c, d, 4, 6, 0xf7537e82u)                                                            \
    S(I, d, a, b, c, 11, 10, 0xbd3af235u)                                                          \
    S(I, c, d, a, b, 2, 15, 0x2ad7d2bbu)                                                           \
    S(I, b, c, d, a, 9, 21, 0xeb86d391u)

/* ---------------------------------------------------------------------- */
/* Portable core                                                            */

#define P_F(x, y, z) ((z) ^ ((x) & ((y) ^ (z))))
#define P_G(x, y, z) ((y) ^ ((z) & ((x) ^ (y))))
#define P_H(x, y, z) ((x) ^ (y) ^ (z))
#define P_I(x, y, z) ((y) ^ ((x) | ~(z)))
#define P_STEP(f, a, b, c, d, k, s, t)                                                             \
    a += P_##f(b, c, d) + w[k] + (t);                                                              \
    a = ((a << (s)) | (a >> (32 - (s)))) + b;

static uint32_t load_le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

#ifdef MD5_LANES_X86
/* The blocks of the busiest of the first lanes lanes: a vector core runs
 * that many rounds, each lane masked off once its own are done. */
static uint32_t most_blocks(const uint32_t *nblocks, int lanes)
{
    uint32_t most = 0;
    for (int l = 0; l < lanes; l++)
        if (nblocks[l] > most)
            most = nblocks[l];
    return most;
}
#endif

static void core_portable(lane_state *st, const unsigned char *arena, const uint32_t *off,
                          const uint32_t *nblocks)
{
    for (unsigned l = 0; l < MD5_LANES_MAX; l++) {
        const unsigned char *p = arena + off[l];
        for (uint32_t blk = 0; blk < nblocks[l]; blk++, p += 64) {
            uint32_t w[16];
            uint32_t a = st->v[0][l], b = st->v[1][l], c = st->v[2][l], d = st->v[3][l];
            for (int j = 0; j < 16; j++)
                w[j] = load_le32(p + 4 * j);
            MD5_STEPS(P_STEP)
            st->v[0][l] += a;
            st->v[1][l] += b;
            st->v[2][l] += c;
            st->v[3][l] += d;
        }
    }
}

#ifdef MD5_LANES_X86
/* ---------------------------------------------------------------------- */
/* AVX2 core: 8 lanes                                                       */

#define V8_F(x, y, z) _mm256_xor_si256(z, _mm256_and_si256(x, _mm256_xor_si256(y, z)))
#define V8_G(x, y, z) _mm256_xor_si256(y, _mm256_and_si256(z, _mm256_xor_si256(x, y)))
#define V8_H(x, y, z) _mm256_xor_si256(x, _mm256_xor_si256(y, z))
#define V8_I(x, y, z) _mm256_xor_si256(y, _mm256_or_si256(x, _mm256_xor_si256(z, ones)))
#define V8_STEP(f, a, b, c, d, k, s, t)                                                            \
    a = _mm256_add_epi32(                                                                          \
        a,                                                                                         \
        _mm256_add_epi32(V8_##f(b, c, d), _mm256_add_epi32(w[k], _mm256_set1_epi32((int)(t)))));   \
    a = _mm256_add_epi32(_mm256_or_si256(_mm256_slli_epi32(a, s), _mm256_srli_epi32(a, 32 - (s))), \
                         b);

__attribute__((target("avx2"))) static void core_avx2(lane_state *st, const unsigned char *arena,
                                                      const uint32_t *off, const uint32_t *nblocks)
{
    const __m256i ones = _mm256_set1_epi32(-1);
    __m256i sa = _mm256_loadu_si256((const __m256i *)st->v[0]);
    __m256i sb = _mm256_loadu_si256((const __m256i *)st->v[1]);
    __m256i sc = _mm256_loadu_si256((const __m256i *)st->v[2]);
    __m256i sd = _mm256_loadu_si256((const __m256i *)st->v[3]);
    __m256i offs = _mm256_loadu_si256((const __m256i *)off);
    __m256i nbs = _mm256_loadu_si256((const __m256i *)nblocks);
    uint32_t most = most_blocks(nblocks, 8);
    for (uint32_t blk = 0; blk < most; blk++) {
        __m256i busy = _mm256_cmpgt_epi32(nbs, _mm256_set1_epi32((int)blk));
        __m256i at = _mm256_add_epi32(offs, _mm256_set1_epi32((int)(blk * 64)));
        __m256i w[16];
        for (int j = 0; j < 16; j++)
            w[j] = _mm256_mask_i32gather_epi32(_mm256_setzero_si256(), (const int *)arena,
                                               _mm256_add_epi32(at, _mm256_set1_epi32(4 * j)), busy,
                                               1);
        __m256i a = sa, b = sb, c = sc, d = sd;
        MD5_STEPS(V8_STEP)
        sa = _mm256_blendv_epi8(sa, _mm256_add_epi32(sa, a), busy);
        sb = _mm256_blendv_epi8(sb, _mm256_add_epi32(sb, b), busy);
        sc = _mm256_blendv_epi8(sc, _mm256_add_epi32(sc, c), busy);
        sd = _mm256_blendv_epi8(sd, _mm256_add_epi32(sd, d), busy);
    }
    _mm256_storeu_si256((__m256i *)st->v[0], sa);
    _mm256_storeu_si256((__m256i *)st->v[1], sb);
    _mm256_storeu_si256((__m256i *)st->v[2], sc);
    _mm256_storeu_si256((__m256i *)st->v[3], sd);
}

/* ---------------------------------------------------------------------- */
/* AVX-512 core: 16 lanes                                                   */

/* vpternlogd truth tables (operands x, y, z as the instruction's A, B, C). */
#define V16_F(x, y, z) _mm512_ternarylogic_epi32(x, y, z, 0xca) /* x ? y : z */
#define V16_G(x, y, z) _mm512_ternarylogic_epi32(x, y, z, 0xe4) /* z ? x : y */
#define V16_H(x, y, z) _mm512_ternarylogic_epi32(x, y, z, 0x96) /* x ^ y ^ z */
#define V16_I(x, y, z) _mm512_ternarylogic_epi32(x, y, z, 0x39) /* y ^ (x | ~z) */
#define V16_STEP(f, a, b, c, d, k, s, t)                                                           \
    a = _mm512_add_epi32(                                                                          \
        a,                                                                                         \
        _mm512_add_epi32(V16_##f(b, c, d), _mm512_add_epi32(w[k], _mm512_set1_epi32((int)(t)))));  \
    a = _mm512_add_epi32(_mm512_rol_epi32(a, s), b);

__attribute__((target("avx512f"))) static void core_avx512(lane_state *st,
                                                           const unsigned char *arena,
                                                           const uint32_t *off,
                                                           const uint32_t *nblocks)
{
    __m512i sa = _mm512_loadu_si512(st->v[0]);
    __m512i sb = _mm512_loadu_si512(st->v[1]);
    __m512i sc = _mm512_loadu_si512(st->v[2]);
    __m512i sd = _mm512_loadu_si512(st->v[3]);
    __m512i offs = _mm512_loadu_si512(off);
    __m512i nbs = _mm512_loadu_si512(nblocks);
    uint32_t most = most_blocks(nblocks, 16);
    for (uint32_t blk = 0; blk < most; blk++) {
        __mmask16 busy = _mm512_cmpgt_epu32_mask(nbs, _mm512_set1_epi32((int)blk));
        __m512i at = _mm512_add_epi32(offs, _mm512_set1_epi32((int)(blk * 64)));
        __m512i w[16];
        for (int j = 0; j < 16; j++)
            w[j] = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), busy,
                                               _mm512_add_epi32(at, _mm512_set1_epi32(4 * j)),
                                               arena, 1);
        __m512i a = sa, b = sb, c = sc, d = sd;
        MD5_STEPS(V16_STEP)
        sa = _mm512_mask_add_epi32(sa, busy, sa, a);
        sb = _mm512_mask_add_epi32(sb, busy, sb, b);
        sc = _mm512_mask_add_epi32(sc, busy, sc, c);
        sd = _mm512_mask_add_epi32(sd, busy, sd, d);
    }
    _mm512_storeu_si512(st->v[0], sa);
    _mm512_storeu_si512(st->v[1], sb);
    _mm512_storeu_si512(st->v[2], sc);
    _mm512_storeu_si512(st->v[3], sd);
}
/* ---------------------------------------------------------------------- */
/* AVX-512VL core: 8 lanes in 256-bit registers                             */

/* A batch of up to 8 streams: the AVX-512 instructions (one vpternlogd per
 * round function, vprold for the rotation: about half the operations of
 * the AVX2 step) on 256-bit registers, which this CPU executes at full
 * rate where 512-bit ones take two passes. */
#define V8X_F(x, y, z) _mm256_ternarylogic_epi32(x, y, z, 0xca)
#define V8X_G(x, y, z) _mm256_ternarylogic_epi32(x, y, z, 0xe4)
#define V8X_H(x, y, z) _mm256_ternarylogic_epi32(x, y, z, 0x96)
#define V8X_I(x, y, z) _mm256_ternarylogic_epi32(x, y, z, 0x39)
#define V8X_STEP(f, a, b, c, d, k, s, t)                                                           \
    a = _mm256_add_epi32(                                                                          \
        a,                                                                                         \
        _mm256_add_epi32(V8X_##f(b, c, d), _mm256_add_epi32(w[k], _mm256_set1_epi32((int)(t)))));  \
    a = _mm256_add_epi32(_mm256_rol_epi32(a, s), b);

__attribute__((target("avx512f,avx512vl"))) static void core_avx512vl(lane_state *st,
                                                                      const unsigned char *arena,
                                                                      const uint32_t *off,
                                                                      const uint32_t *nblocks)
{
    __m256i sa = _mm256_loadu_si256((const __m256i *)st->v[0]);
    __m256i sb = _mm256_loadu_si256((const __m256i *)st->v[1]);
    __m256i sc = _mm256_loadu_si256((const __m256i *)st->v[2]);
    __m256i sd = _mm256_loadu_si256((const __m256i *)st->v[3]);
    __m256i offs = _mm256_loadu_si256((const __m256i *)off);
    __m256i nbs = _mm256_loadu_si256((const __m256i *)nblocks);
    uint32_t most = most_blocks(nblocks, 8);
    for (uint32_t blk = 0; blk < most; blk++) {
        __mmask8 busy = _mm256_cmpgt_epu32_mask(nbs, _mm256_set1_epi32((int)blk));
        __m256i at = _mm256_add_epi32(offs, _mm256_set1_epi32((int)(blk * 64)));
        __m256i w[16];
        for (int j = 0; j < 16; j++)
            w[j] = _mm256_mmask_i32gather_epi32(_mm256_setzero_si256(), busy,
                                                _mm256_add_epi32(at, _mm256_set1_epi32(4 * j)),
                                                arena, 1);
        __m256i a = sa, b = sb, c = sc, d = sd;
        MD5_STEPS(V8X_STEP)
        sa = _mm256_mask_add_epi32(sa, busy, sa, a);
        sb = _mm256_mask_add_epi32(sb, busy, sb, b);
        sc = _mm256_mask_add_epi32(sc, busy, sc, c);
        sd = _mm256_mask_add_epi32(sd, busy, sd, d);
    }
    _mm256_storeu_si256((__m256i *)st->v[0], sa);
    _mm256_storeu_si256((__m256i *)st->v[1], sb);
    _mm256_storeu_si256((__m256i *)st->v[2], sc);
    _mm256_storeu_si256((__m256i *)st->v[3], sd);
}
#endif /* MD5_LANES_X86 */

/* ---------------------------------------------------------------------- */
/* Kinds                                                                    */

bool md5_lanes_supported(md5_lanes_kind kind)
{
    switch (kind) {
    case MD5_LANES_OPENSSL:
    case MD5_LANES_PORTABLE:
        return true;
#ifdef MD5_LANES_X86
    case MD5_LANES_AVX2:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2");
    case MD5_LANES_AVX512:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512f");
    case MD5_LANES_AVX512VL:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl");
#else
    case MD5_LANES_AVX2:
    case MD5_LANES_AVX512:
    case MD5_LANES_AVX512VL:
        return false;
#endif
    }
    return false;
}

md5_lanes_kind md5_lanes_best(void)
{
    if (md5_lanes_supported(MD5_LANES_AVX512))
        return MD5_LANES_AVX512;
    if (md5_lanes_supported(MD5_LANES_AVX2))
        return MD5_LANES_AVX2;
    return MD5_LANES_OPENSSL;
}

const char *md5_lanes_kind_str(md5_lanes_kind kind)
{
    switch (kind) {
    case MD5_LANES_OPENSSL:
        return "openssl";
    case MD5_LANES_PORTABLE:
        return "portable";
    case MD5_LANES_AVX2:
        return "avx2";
    case MD5_LANES_AVX512:
        return "avx512";
    case MD5_LANES_AVX512VL:
        return "avx512vl";
    }
    return "?";
}

/* ---------------------------------------------------------------------- */
/* Streams through the arena                                                */

/* Where the streams come from: read() puts len bytes of stream i, from pos,
 * into buf and returns 0 or an errno. */
typedef struct stream_set {
    size_t n;
    uint64_t (*length)(const struct stream_set *set, size_t i);
    int (*read)(const struct stream_set *set, size_t i, uint64_t pos, unsigned char *buf,
                size_t len);
    void (*done)(struct stream_set *set, size_t i, const unsigned char digest[16], int err);
    void *ctx;
} stream_set;

/* Appends MD5's padding for a stream of total bytes to the have bytes at
 * buf (its last piece); returns the piece's length, a multiple of 64. */
static size_t pad_last(unsigned char *buf, size_t have, uint64_t total)
{
    uint64_t bits = total * 8;
    size_t n = have;
    buf[n++] = 0x80;
    while (n % 64 != 56)
        buf[n++] = 0;
    for (int i = 0; i < 8; i++)
        buf[n++] = (unsigned char)(bits >> (8 * i));
    return n;
}

static void digest_of(const lane_state *st, unsigned l, unsigned char out[16])
{
    for (int w = 0; w < 4; w++)
        for (int i = 0; i < 4; i++)
            out[4 * w + i] = (unsigned char)(st->v[w][l] >> (8 * i));
}

static void run_lanes(md5_core_fn core, unsigned width, stream_set *set, unsigned char *arena)
{
    lane_state st;
    size_t stream[MD5_LANES_MAX];
    bool busy[MD5_LANES_MAX] = {false}, last[MD5_LANES_MAX];
    uint64_t pos[MD5_LANES_MAX];
    uint32_t off[MD5_LANES_MAX], nblocks[MD5_LANES_MAX];
    size_t next = 0;

    memset(&st, 0, sizeof st);
    for (unsigned l = 0; l < MD5_LANES_MAX; l++)
        off[l] = (uint32_t)(l * LANE_STRIDE);
    for (;;) {
        unsigned working = 0;
        for (unsigned l = 0; l < MD5_LANES_MAX; l++) {
            nblocks[l] = 0;
            last[l] = false;
            if (l >= width)
                continue;
            /* An idle lane takes the next stream; a stream whose read
             * fails is dropped and the lane tries the next one. */
            uint64_t total = 0, left = 0;
            size_t take = 0;
            unsigned char *slot = arena + off[l];
            for (;;) {
                if (!busy[l] && next < set->n) {
                    busy[l] = true;
                    stream[l] = next++;
                    pos[l] = 0;
                    for (int w = 0; w < 4; w++)
                        st.v[w][l] = md5_iv[w];
                }
                if (!busy[l])
                    break;
                total = set->length(set, stream[l]);
                left = total - pos[l];
                take = left < LANE_CHUNK ? (size_t)left : LANE_CHUNK;
                int err = take > 0 ? set->read(set, stream[l], pos[l], slot, take) : 0;
                if (err == 0)
                    break;
                set->done(set, stream[l], NULL, err);
                busy[l] = false;
            }
            if (!busy[l])
                continue;
            pos[l] += take;
            size_t bytes = take;
            if (left <= LANE_CHUNK) {
                bytes = pad_last(slot, take, total);
                last[l] = true;
            }
            nblocks[l] = (uint32_t)(bytes / 64);
            working++;
        }
        if (working == 0)
            break;
        core(&st, arena, off, nblocks);
        for (unsigned l = 0; l < width; l++) {
            if (!last[l])
                continue;
            unsigned char digest[16];
            digest_of(&st, l, digest);
            set->done(set, stream[l], digest, 0);
            busy[l] = false;
        }
    }
}

/* One stream after the other through OpenSSL, read through the arena. */
static void run_openssl(stream_set *set, unsigned char *arena)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    for (size_t i = 0; i < set->n; i++) {
        uint64_t total = set->length(set, i), pos = 0;
        unsigned char digest[16];
        unsigned int dlen = 0;
        int err = ctx == NULL || EVP_DigestInit_ex(ctx, EVP_md5(), NULL) != 1 ? ENOMEM : 0;
        while (err == 0 && pos < total) {
            size_t take = total - pos < ARENA_BYTES ? (size_t)(total - pos) : ARENA_BYTES;
            err = set->read(set, i, pos, arena, take);
            if (err == 0 && EVP_DigestUpdate(ctx, arena, take) != 1)
                err = ENOMEM;
            pos += take;
        }
        if (err == 0 && EVP_DigestFinal_ex(ctx, digest, &dlen) != 1)
            err = ENOMEM;
        set->done(set, i, err == 0 ? digest : NULL, err);
    }
    EVP_MD_CTX_free(ctx);
}

/* The core of kind, or NULL for a kind without lanes on this build. */
static md5_core_fn core_of(md5_lanes_kind kind)
{
    switch (kind) {
    case MD5_LANES_PORTABLE:
        return core_portable;
#ifdef MD5_LANES_X86
    case MD5_LANES_AVX2:
        return core_avx2;
    case MD5_LANES_AVX512:
        return core_avx512;
    case MD5_LANES_AVX512VL:
        return core_avx512vl;
#else
    case MD5_LANES_AVX2:
    case MD5_LANES_AVX512:
    case MD5_LANES_AVX512VL:
#endif
    case MD5_LANES_OPENSSL:
        break;
    }
    return NULL;
}

static void run_kind(md5_lanes_kind kind, stream_set *set, unsigned char *arena)
{
    md5_core_fn core = core_of(kind);
    if (core != NULL)
        run_lanes(core, md5_lanes_width(kind), set, arena);
    else
        run_openssl(set, arena);
}

md5_lanes_scratch *md5_lanes_scratch_new(void)
{
    md5_lanes_scratch *s = calloc(1, sizeof *s);
    if (s == NULL)
        return NULL;
    s->arena = aligned_alloc(64, ARENA_BYTES);
    if (s->arena == NULL) {
        free(s);
        return NULL;
    }
    return s;
}

void md5_lanes_scratch_free(md5_lanes_scratch *s)
{
    if (s == NULL)
        return;
    free(s->arena);
    free(s);
}

/* ---------------------------------------------------------------------- */
/* Files                                                                    */

static uint64_t file_length(const stream_set *set, size_t i)
{
    return ((const md5_lanes_file *)set->ctx)[i].len;
}

static int file_read(const stream_set *set, size_t i, uint64_t pos, unsigned char *buf, size_t len)
{
    const md5_lanes_file *f = &((const md5_lanes_file *)set->ctx)[i];
    while (len > 0) {
        ssize_t got = pread(f->fd, buf, len, (off_t)(f->off + pos));
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            return errno != 0 ? errno : EIO;
        if (got == 0)
            return EIO; /* the file ends before the stream does */
        buf += got;
        pos += (uint64_t)got;
        len -= (size_t)got;
    }
    return 0;
}

static void file_done(stream_set *set, size_t i, const unsigned char digest[16], int err)
{
    md5_lanes_file *f = &((md5_lanes_file *)set->ctx)[i];
    f->err = err;
    if (err == 0)
        memcpy(f->digest, digest, 16);
}

void md5_lanes_files_with(md5_lanes_kind kind, md5_lanes_file *files, size_t n,
                          md5_lanes_scratch *scratch)
{
    stream_set set = {
        .n = n, .length = file_length, .read = file_read, .done = file_done, .ctx = files};
    if (!md5_lanes_supported(kind))
        kind = MD5_LANES_OPENSSL;
    run_kind(kind, &set, scratch->arena);
}

md5_lanes_kind md5_lanes_for(md5_lanes_kind kind, size_t n)
{
    if (n <= 8 && kind == MD5_LANES_AVX512)
        return md5_lanes_supported(MD5_LANES_AVX512VL) ? MD5_LANES_AVX512VL : MD5_LANES_AVX2;
    return kind;
}

void md5_lanes_files(md5_lanes_file *files, size_t n, md5_lanes_scratch *scratch)
{
    /* One or two streams run faster through OpenSSL's assembly than in a
     * register of mostly idle lanes. */
    md5_lanes_kind kind = n < 3 ? MD5_LANES_OPENSSL : md5_lanes_for(md5_lanes_best(), n);
    md5_lanes_files_with(kind, files, n, scratch);
}

/* ---------------------------------------------------------------------- */
/* Memory                                                                   */

typedef struct mem_streams {
    const unsigned char *const *data;
    const size_t *len;
    unsigned char (*digest)[16];
} mem_streams;

static uint64_t mem_length(const stream_set *set, size_t i)
{
    return ((const mem_streams *)set->ctx)->len[i];
}

static int mem_read(const stream_set *set, size_t i, uint64_t pos, unsigned char *buf, size_t len)
{
    const mem_streams *m = set->ctx;
    if (len > 0)
        memcpy(buf, m->data[i] + pos, len);
    return 0;
}

static void mem_done(stream_set *set, size_t i, const unsigned char digest[16], int err)
{
    mem_streams *m = set->ctx;
    if (err == 0)
        memcpy(m->digest[i], digest, 16);
}

bool md5_lanes_mem(md5_lanes_kind kind, const unsigned char *const *data, const size_t *len,
                   size_t n, unsigned char (*digest)[16])
{
    mem_streams m = {.data = data, .len = len, .digest = digest};
    stream_set set = {.n = n, .length = mem_length, .read = mem_read, .done = mem_done, .ctx = &m};
    md5_lanes_scratch *s = md5_lanes_scratch_new();
    if (s == NULL)
        return false;
    if (!md5_lanes_supported(kind))
        kind = MD5_LANES_OPENSSL;
    run_kind(kind, &set, s->arena);
    md5_lanes_scratch_free(s);
    return true;
}

/* ---------------------------------------------------------------------- */
/* Pieces in the caller's arena                                             */

void md5_lanes_state_init(uint32_t v[4])
{
    memcpy(v, md5_iv, sizeof md5_iv);
}

unsigned md5_lanes_width(md5_lanes_kind kind)
{
    switch (kind) {
    case MD5_LANES_PORTABLE:
    case MD5_LANES_AVX512:
        return 16;
    case MD5_LANES_AVX2:
    case MD5_LANES_AVX512VL:
        return 8;
    case MD5_LANES_OPENSSL:
        break;
    }
    return 0;
}

bool md5_lanes_advance(md5_lanes_kind kind, unsigned char *arena, md5_lanes_piece *pieces, size_t n)
{
    lane_state st;
    uint32_t off[MD5_LANES_MAX] = {0}, nblocks[MD5_LANES_MAX] = {0};

    if (!md5_lanes_supported(kind) || n > md5_lanes_width(kind))
        return false;
    /* A lone stream runs at the latency of MD5's dependency chain, which
     * the scalar loop keeps shorter than a vector register of idle lanes
     * (here ~710 MB/s against ~445 with AVX-512VL; bench/md5_hasher). */
    kind = n == 1 ? MD5_LANES_PORTABLE : md5_lanes_for(kind, n);
    md5_core_fn core = core_of(kind);
    if (core == NULL)
        return false;
    for (size_t i = 0; i < n; i++) {
        const md5_lanes_piece *p = &pieces[i];
        if (!p->last && p->len % 64 != 0)
            return false;
        if ((uint64_t)p->off + p->len + MD5_LANES_PAD_ROOM > INT32_MAX)
            return false;
    }
    /* Lanes beyond n keep nblocks 0 (and offset 0): the cores leave them
     * alone. */
    memset(&st, 0, sizeof st);
    for (size_t i = 0; i < n; i++) {
        md5_lanes_piece *p = &pieces[i];
        size_t bytes = p->len;
        if (p->last)
            bytes = pad_last(arena + p->off, p->len, p->total);
        off[i] = p->off;
        nblocks[i] = (uint32_t)(bytes / 64);
        for (int w = 0; w < 4; w++)
            st.v[w][i] = p->v[w];
    }
    core(&st, arena, off, nblocks);
    for (size_t i = 0; i < n; i++) {
        md5_lanes_piece *p = &pieces[i];
        for (int w = 0; w < 4; w++)
            p->v[w] = st.v[w][i];
        if (p->last)
            digest_of(&st, (unsigned)i, p->digest);
    }
    return true;
}
