/*
 * md5_lanes_test.c - every kind of md5_lanes this CPU supports gives
 * OpenSSL's MD5, bit for bit: RFC 1321's vectors, lengths around the block,
 * padding and lane-chunk boundaries, more streams than lanes (lanes taking
 * the next stream), streams of very different lengths side by side; and
 * for files, a stream beyond the end of its file is an error for that
 * stream alone.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "store/md5_lanes.h"

static const md5_lanes_kind kinds[] = {MD5_LANES_OPENSSL, MD5_LANES_PORTABLE, MD5_LANES_AVX2,
                                       MD5_LANES_AVX512, MD5_LANES_AVX512VL};

static void openssl_md5(const unsigned char *p, size_t n, unsigned char out[16])
{
    unsigned int len = 0;
    assert_int_equal(EVP_Digest(p, n, out, &len, EVP_md5(), NULL), 1);
}

/* Hashes the streams with every supported kind and compares each digest
 * with OpenSSL's. */
static void check_all(const unsigned char *const *data, const size_t *len, size_t n)
{
    unsigned char(*got)[16] = calloc(n, 16);
    assert_non_null(got);
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        if (!md5_lanes_supported(kinds[k]))
            continue;
        memset(got, 0, n * 16);
        assert_true(md5_lanes_mem(kinds[k], data, len, n, got));
        for (size_t i = 0; i < n; i++) {
            unsigned char want[16];
            openssl_md5(data[i], len[i], want);
            if (memcmp(want, got[i], 16) != 0)
                fail_msg("kind %s stream %zu of %zu (%zu bytes) differs",
                         md5_lanes_kind_str(kinds[k]), i, n, len[i]);
        }
    }
    free(got);
}

static void test_rfc1321(void **state)
{
    static const char *msgs[] = {
        "",
        "a",
        "abc",
        "message digest",
        "abcdefghijklmnopqrstuvwxyz",
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
        "12345678901234567890123456789012345678901234567890123456789012345678901234567890"};
    static const char *want[] = {
        "d41d8cd98f00b204e9800998ecf8427e", "0cc175b9c0f1b6a831c399e269772661",
        "900150983cd24fb0d6963f7d28e17f72", "f96b697d7cb7938d525a2f31aaf161d0",
        "c3fcd3d76192e4007dfb496cca67e13b", "d174ab98d277d9f5a5611c2c9f419d9f",
        "57edf4a22be3c955ac49da2e2107b67a"};
    const size_t n = sizeof msgs / sizeof msgs[0];
    const unsigned char *data[7];
    size_t len[7];
    unsigned char got[7][16];
    (void)state;
    for (size_t i = 0; i < n; i++) {
        data[i] = (const unsigned char *)msgs[i];
        len[i] = strlen(msgs[i]);
    }
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        if (!md5_lanes_supported(kinds[k]))
            continue;
        assert_true(md5_lanes_mem(kinds[k], data, len, n, got));
        for (size_t i = 0; i < n; i++) {
            char hex[33];
            for (int j = 0; j < 16; j++)
                snprintf(hex + 2 * j, 3, "%02x", got[i][j]);
            assert_string_equal(hex, want[i]);
        }
    }
    check_all(data, len, n);
}

static unsigned char *random_bytes(size_t n)
{
    unsigned char *p = malloc(n > 0 ? n : 1);
    assert_non_null(p);
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)(rand() >> 7);
    return p;
}

/* Lengths at every edge: a block, the padding's 56 bytes, the lane chunk
 * (64 KiB), several chunks. */
static void test_edges(void **state)
{
    static const size_t lens[] = {0,      1,      55,     56,     57,     63,      64,
                                  65,     119,    120,    127,    128,    129,     1000,
                                  65471,  65472,  65480,  65535,  65536,  65537,   65600,
                                  131071, 131072, 131073, 200000, 262144, 1048576, 1048577};
    const size_t n = sizeof lens / sizeof lens[0];
    const unsigned char *data[sizeof lens / sizeof lens[0]];
    size_t len[sizeof lens / sizeof lens[0]];
    (void)state;
    srand(1);
    for (size_t i = 0; i < n; i++) {
        len[i] = lens[i];
        data[i] = random_bytes(lens[i]);
    }
    check_all(data, len, n);
    /* One at a time too: a lone stream in a register of idle lanes. */
    for (size_t i = 0; i < n; i++)
        check_all(&data[i], &len[i], 1);
    for (size_t i = 0; i < n; i++)
        free((void *)data[i]);
}

/* From 1 to 40 streams of random lengths (more than 16: lanes take the
 * next stream when theirs ends, at different rounds). */
static void test_many(void **state)
{
    const unsigned char *data[40];
    size_t len[40];
    (void)state;
    srand(2);
    for (size_t n = 1; n <= 40; n += (n < 18 ? 1 : 7)) {
        for (size_t i = 0; i < n; i++) {
            len[i] = (size_t)rand() % (i % 3 == 0 ? 150000 : 5000);
            data[i] = random_bytes(len[i]);
        }
        check_all(data, len, n);
        for (size_t i = 0; i < n; i++)
            free((void *)data[i]);
    }
}

/* Streams read from a file (pread at offsets, as the store reads pack
 * regions); one reaching past the end of the file fails alone. */
static void test_files(void **state)
{
    char path[] = "/tmp/md5-lanes-test-XXXXXX";
    int fd = mkstemp(path);
    const size_t size = 3u << 20;
    unsigned char *all = random_bytes(size);
    md5_lanes_file f[20];
    md5_lanes_scratch *scratch = md5_lanes_scratch_new();
    (void)state;
    assert_true(fd >= 0);
    assert_non_null(scratch);
    unlink(path);
    assert_int_equal(write(fd, all, size), (ssize_t)size);
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        if (!md5_lanes_supported(kinds[k]))
            continue;
        for (size_t n = 1; n <= 20; n += 3) {
            for (size_t i = 0; i < n; i++) {
                memset(&f[i], 0, sizeof f[i]);
                f[i].fd = fd;
                f[i].off = (uint64_t)(i * 4096 * 37 % (2u << 20));
                f[i].len = (uint64_t)(i * 70001 % (1u << 20));
                f[i].err = -1;
            }
            f[n / 2].off = size - 100; /* 100 bytes left */
            f[n / 2].len = 101;
            md5_lanes_files_with(kinds[k], f, n, scratch);
            for (size_t i = 0; i < n; i++) {
                if (i == n / 2) {
                    assert_int_not_equal(f[i].err, 0);
                    continue;
                }
                unsigned char want[16];
                assert_int_equal(f[i].err, 0);
                openssl_md5(all + f[i].off, (size_t)f[i].len, want);
                assert_memory_equal(want, f[i].digest, 16);
            }
        }
    }
    /* The kind md5_lanes_files picks for each batch size. */
    for (size_t n = 1; n <= 20; n++) {
        for (size_t i = 0; i < n; i++) {
            memset(&f[i], 0, sizeof f[i]);
            f[i].fd = fd;
            f[i].off = (uint64_t)(i * 4096);
            f[i].len = (uint64_t)(i * 9999 % 200000);
        }
        md5_lanes_files(f, n, scratch);
        for (size_t i = 0; i < n; i++) {
            unsigned char want[16];
            assert_int_equal(f[i].err, 0);
            openssl_md5(all + f[i].off, (size_t)f[i].len, want);
            assert_memory_equal(want, f[i].digest, 16);
        }
    }
    md5_lanes_scratch_free(scratch);
    free(all);
    close(fd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc1321),
        cmocka_unit_test(test_edges),
        cmocka_unit_test(test_many),
        cmocka_unit_test(test_files),
    };
    printf("md5_lanes: best kind on this CPU: %s\n", md5_lanes_kind_str(md5_lanes_best()));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
