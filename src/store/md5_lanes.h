/*
 * md5_lanes.h - MD5 of several streams at once, side by side in the lanes of
 * vector registers (8 with AVX2, 16 with AVX-512), for the store's
 * committers, which hash the bodies of a batch of finished uploads together.
 *
 * MD5 is serial within a stream (each 64-byte block needs the state the
 * previous one left), so one stream runs at the latency of its dependency
 * chain: ~4.5 cycles a byte with OpenSSL's assembly, about 700 MB/s here.
 * Independent streams do not wait for each other: the same step applied to
 * 8 or 16 of them in one instruction costs about what it costs for one, so
 * a batch of uploads is hashed several times faster per byte. One stream
 * or two gain nothing from the lanes and go through OpenSSL.
 * (md5_lanes_best names the widest kind; md5_lanes_files picks by batch.)
 *
 * The kind is chosen at run time from what the CPU supports
 * (md5_lanes_best); MD5_LANES_PORTABLE is the same lane loop in plain C,
 * the reference the vector kinds are tested against (and OpenSSL is the
 * reference for all of them: md5_lanes_test.c, fuzz_md5_lanes.c).
 */
#ifndef FERRY_STORE_MD5_LANES_H
#define FERRY_STORE_MD5_LANES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MD5_LANES_MAX 16

typedef enum md5_lanes_kind {
    MD5_LANES_OPENSSL = 0, /* one stream after the other, OpenSSL's MD5 */
    MD5_LANES_PORTABLE,    /* 16 lanes in plain C (the reference) */
    MD5_LANES_AVX2,        /* 8 lanes in 256-bit registers */
    MD5_LANES_AVX512,      /* 16 lanes in 512-bit registers */
    MD5_LANES_AVX512VL,    /* 8 lanes, AVX-512 instructions on 256-bit registers */
} md5_lanes_kind;

/* Whether this CPU (and its operating system) can run kind. */
bool md5_lanes_supported(md5_lanes_kind kind);

/* The widest vector kind this CPU supports, or MD5_LANES_OPENSSL when it
 * has none (then nothing is gained by batching streams). */
md5_lanes_kind md5_lanes_best(void);

/* "openssl", "portable", "avx2", "avx512", "avx512vl". */
const char *md5_lanes_kind_str(md5_lanes_kind kind);

/* One stream read from a file: len bytes of fd from offset off. digest
 * and err are the outcome: err is 0, or the errno of a failed read (EIO
 * for a file shorter than off + len), and then digest is not set. */
typedef struct md5_lanes_file {
    int fd;
    uint64_t off;
    uint64_t len;
    unsigned char digest[16];
    int err;
} md5_lanes_file;

/* The read buffers of md5_lanes_files (about 1 MiB); one per thread that
 * hashes, reused from call to call. */
typedef struct md5_lanes_scratch md5_lanes_scratch;

md5_lanes_scratch *md5_lanes_scratch_new(void);
void md5_lanes_scratch_free(md5_lanes_scratch *s); /* safe on NULL */

/* Hashes files[0..n) (pread, so the files' offsets do not move) with the
 * kind that suits n on this CPU: OpenSSL for fewer than three streams or
 * without vector support, AVX-512VL (or AVX2) up to 8, AVX-512 above. */
void md5_lanes_files(md5_lanes_file *files, size_t n, md5_lanes_scratch *scratch);

/* The kind that runs n streams side by side best, given the CPU's widest
 * kind: up to 8 streams, 256-bit registers (AVX-512VL, or AVX2) do the
 * work of 512-bit ones in fewer micro-operations; otherwise kind. */
md5_lanes_kind md5_lanes_for(md5_lanes_kind kind, size_t n);

/* The same with the kind given (one this CPU does not support: OpenSSL's
 * MD5 instead). */
void md5_lanes_files_with(md5_lanes_kind kind, md5_lanes_file *files, size_t n,
                          md5_lanes_scratch *scratch);

/* MD5 of n streams in memory (data[i], len[i] bytes) with kind, into
 * digest[i]; the tests' and the fuzz target's entry. False only when
 * memory for the buffers cannot be had. */
bool md5_lanes_mem(md5_lanes_kind kind, const unsigned char *const *data, const size_t *len,
                   size_t n, unsigned char (*digest)[16]);

#endif
