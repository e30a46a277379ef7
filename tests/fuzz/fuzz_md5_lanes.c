/*
 * fuzz_md5_lanes.c - differential libFuzzer target: md5_lanes (every kind
 * this CPU supports) against OpenSSL's MD5.
 *
 * Input: byte 0 gives the number of streams (1..40), the next bytes one
 * repeat count per stream, the rest is cut into that many pieces of equal
 * share; stream i is its piece repeated (1 + count) times, so that streams
 * cross the 64-byte blocks, the padding boundary and the 64 KiB lane chunk
 * at every offset and run side by side with very different lengths.
 * Property (abort on violation): every digest equals OpenSSL's.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "store/md5_lanes.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define STREAMS_MAX 40

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
    for (size_t i = 0; i < n; i++)
        free(streams[i]);
    return 0;
}
