/*
 * md5_hasher_bench.c - STREAMS bodies of MIB MiB each through one
 * md5_hasher (src/store/md5_hasher.h), fed the way the store feeds it: one
 * feeder thread submits one block-sized piece of each stream in turn,
 * reusing a stream's MD5_HASHER_QUEUED blocks once their pieces are
 * hashed (the blocks are filled once, up front: what is measured is the
 * hashing, not the copying). Then OpenSSL's MD5 of the same bytes, one
 * stream after the other on one thread: the peer. Every digest of the
 * hasher is checked against OpenSSL's.
 *
 * Usage: ferry_bench_md5_hasher STREAMS MIB [KIND]   (KIND: best (default),
 * portable, avx2, avx512, avx512vl)
 * Prints one line: streams= mib= kind= hasher_mb_s= hasher_cpu_s= passes=
 * lanes= lanes_per_pass= openssl_mb_s= (MB = 10^6 bytes of body; CPU: the
 * whole process's, user + system, over the hasher's span).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include <openssl/evp.h>

#include "store/md5_hasher.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static md5_lanes_kind parse_kind(const char *s)
{
    static const md5_lanes_kind all[] = {MD5_LANES_PORTABLE, MD5_LANES_AVX2, MD5_LANES_AVX512,
                                         MD5_LANES_AVX512VL};
    if (s == NULL || strcmp(s, "best") == 0)
        return md5_lanes_best();
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (strcmp(s, md5_lanes_kind_str(all[i])) == 0)
            return all[i];
    return MD5_LANES_OPENSSL;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s STREAMS MIB [KIND]\n", argv[0]);
        return 2;
    }
    long streams_arg = strtol(argv[1], NULL, 10), mib_arg = strtol(argv[2], NULL, 10);
    md5_lanes_kind kind = parse_kind(argc > 3 ? argv[3] : NULL);
    if (streams_arg < 1 || streams_arg > 256 || mib_arg < 1 || mib_arg > 4096) {
        fprintf(stderr, "md5_hasher_bench: STREAMS 1..256, MIB 1..4096\n");
        return 2;
    }
    if (kind == MD5_LANES_OPENSSL || !md5_lanes_supported(kind)) {
        fprintf(stderr, "md5_hasher_bench: kind not supported here\n");
        return 2;
    }
    size_t streams = (size_t)streams_arg;
    size_t pieces = (size_t)mib_arg * (1u << 20) / MD5_HASHER_BLOCK;
    md5_hasher *h = md5_hasher_new(kind, streams * MD5_HASHER_QUEUED);
    md5_hasher_stream *s = calloc(streams, sizeof *s);
    unsigned char **block = calloc(streams * MD5_HASHER_QUEUED, sizeof *block);
    uint64_t *ticket = calloc(streams * MD5_HASHER_QUEUED, sizeof *ticket);
    unsigned char(*digest)[16] = calloc(streams, 16);
    if (h == NULL || s == NULL || block == NULL || ticket == NULL || digest == NULL) {
        fprintf(stderr, "md5_hasher_bench: out of memory\n");
        return 1;
    }
    unsigned seed = 1;
    for (size_t i = 0; i < streams * MD5_HASHER_QUEUED; i++) {
        block[i] = md5_hasher_block_take(h);
        for (size_t j = 0; j < MD5_HASHER_BLOCK; j++)
            block[i][j] = (unsigned char)(rand_r(&seed) >> 7);
    }
    /* OpenSSL first, while the blocks hold only body bytes (the hasher
     * pads its last piece in place). */
    unsigned char(*want)[16] = calloc(streams, 16);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (want == NULL || ctx == NULL)
        return 1;
    double t0 = now_s();
    for (size_t i = 0; i < streams; i++) {
        unsigned int len = 0;
        EVP_DigestInit_ex(ctx, EVP_md5(), NULL);
        for (size_t p = 0; p < pieces; p++)
            EVP_DigestUpdate(ctx, block[i * MD5_HASHER_QUEUED + p % MD5_HASHER_QUEUED],
                             MD5_HASHER_BLOCK);
        EVP_DigestFinal_ex(ctx, want[i], &len);
    }
    double openssl_s = now_s() - t0;
    EVP_MD_CTX_free(ctx);

    double c0 = cpu_s();
    t0 = now_s();
    for (size_t i = 0; i < streams; i++)
        md5_hasher_stream_init(&s[i]);
    for (size_t p = 0; p < pieces; p++) {
        for (size_t i = 0; i < streams; i++) {
            size_t b = i * MD5_HASHER_QUEUED + p % MD5_HASHER_QUEUED;
            /* The block's previous piece must be hashed before it is
             * filled again (here it is not refilled, but the store does). */
            md5_hasher_wait(h, &s[i], ticket[b]);
            ticket[b] = md5_hasher_submit(h, &s[i], block[b], MD5_HASHER_BLOCK, p + 1 == pieces);
        }
    }
    int bad = 0;
    for (size_t i = 0; i < streams; i++)
        if (!md5_hasher_finish(h, &s[i], digest[i]) || memcmp(digest[i], want[i], 16) != 0)
            bad++;
    double hasher_s = now_s() - t0, hasher_cpu = cpu_s() - c0;
    uint64_t passes = 0, lanes = 0;
    md5_hasher_stats(h, &passes, &lanes);
    for (size_t i = 0; i < streams * MD5_HASHER_QUEUED; i++)
        md5_hasher_block_give(h, block[i]);
    md5_hasher_free(h);
    if (bad > 0) {
        fprintf(stderr, "md5_hasher_bench: %d digests differ from OpenSSL's\n", bad);
        return 1;
    }
    double bytes = (double)streams * (double)pieces * MD5_HASHER_BLOCK;
    printf("streams=%zu mib=%ld kind=%s hasher_mb_s=%.0f hasher_cpu_s=%.3f passes=%llu lanes=%llu "
           "lanes_per_pass=%.2f openssl_mb_s=%.0f\n",
           streams, mib_arg, md5_lanes_kind_str(kind), bytes / hasher_s / 1e6, hasher_cpu,
           (unsigned long long)passes, (unsigned long long)lanes,
           passes > 0 ? (double)lanes / (double)passes : 0.0, bytes / openssl_s / 1e6);
    free(s);
    free(block);
    free(ticket);
    free(digest);
    free(want);
    return 0;
}
