/*
 * presign_bench.c - how many pre-signed PUT URLs one thread makes per
 * second. Each URL is what a grant carries: path-style key under a device
 * prefix, bound Content-Type, 15-minute expiry; the key changes every time
 * (a counter) and so does "now" (one second per 1,000 URLs), so nothing is
 * cached but the signing key, exactly as in ferryd.
 *
 * Usage: presign_bench [RUNS [SECONDS_PER_RUN]]  (defaults 5 and 1.0)
 * Prints one line per run and, last, "ferry_per_s=N" (the median).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/timefmt.h"
#include "sigv4.h"

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    int runs = argc > 1 ? atoi(argv[1]) : 5;
    double seconds = argc > 2 ? atof(argv[2]) : 1.0;
    if (runs < 1 || runs > 100 || seconds <= 0 || seconds > 60) {
        fprintf(stderr, "usage: presign_bench [RUNS [SECONDS_PER_RUN]]\n");
        return 2;
    }
    sigv4_signer *s = sigv4_signer_new("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
                                       "us-east-1", "s3");
    if (s == NULL)
        return 1;
    static const sigv4_kv headers[] = {{"Content-Type", "audio/wav"}};
    char path[] = "/ingest/dev-001/2026/11/25/g_000000000000-lung.wav";
    const size_t digits = strlen("/ingest/dev-001/2026/11/25/g_");
    ferry_buf url;
    ferry_buf_init(&url, 8192);
    double rates[100];
    size_t total_len = 0;
    int64_t now0 = INT64_C(1795608000);
    for (int r = 0; r < runs; r++) {
        uint64_t n = 0;
        int64_t start = ferry_time_mono_ns(), limit = start + (int64_t)(seconds * 1e9), t;
        do {
            /* Check the clock every 1,000 URLs so timing costs nothing. */
            for (int k = 0; k < 1000; k++, n++) {
                /* The counter into the key's 12 digits, without printf: the
                 * bench measures signing, not formatting. */
                uint64_t v = n;
                for (size_t d = 12; d-- > 0; v /= 10)
                    path[digits + d] = (char)('0' + v % 10);
                sigv4_presign_params p = {.method = "PUT",
                                          .endpoint = "https://store.example.com:8443",
                                          .path = path,
                                          .expires_s = 900,
                                          .headers = headers,
                                          .n_headers = 1};
                ferry_buf_reset(&url);
                if (sigv4_presign(s, &p, now0 + (int64_t)(n / 1000), &url) != FERRY_OK) {
                    fprintf(stderr, "presign failed\n");
                    return 1;
                }
                total_len += url.len;
            }
            t = ferry_time_mono_ns();
        } while (t < limit);
        rates[r] = (double)n / ((double)(t - start) / 1e9);
        printf("run %d: %.0f URLs/s\n", r + 1, rates[r]);
    }
    qsort(rates, (size_t)runs, sizeof rates[0], cmp_double);
    printf("url_bytes=%zu\n", url.len);
    printf("ferry_per_s=%.0f\n", rates[runs / 2]);
    ferry_buf_cleanup(&url);
    sigv4_signer_free(s);
    return total_len > 0 ? 0 : 1;
}
