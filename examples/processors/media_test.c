/*
 * media_test.c - the WAV/PNG/JPEG header parsers on hand-built headers:
 * the values they report, and the malformed cases they must refuse with a
 * reason (the fuzz target covers "never crashes"; this covers "right").
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "media.h"

static void put_le16(unsigned char *p, uint16_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
}

static void put_le32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

/* A 44-byte canonical PCM header followed by data_len bytes of space. */
static size_t wav_header(unsigned char *p, uint32_t rate, uint16_t channels, uint16_t bits,
                         uint32_t data_len)
{
    uint16_t align = (uint16_t)(channels * bits / 8);
    memcpy(p, "RIFF", 4);
    put_le32(p + 4, 36 + data_len);
    memcpy(p + 8, "WAVEfmt ", 8);
    put_le32(p + 16, 16);
    put_le16(p + 20, 1);
    put_le16(p + 22, channels);
    put_le32(p + 24, rate);
    put_le32(p + 28, rate * align);
    put_le16(p + 32, align);
    put_le16(p + 34, bits);
    memcpy(p + 36, "data", 4);
    put_le32(p + 40, data_len);
    return 44;
}

static void test_wav(void **state)
{
    (void)state;
    unsigned char h[64];
    media_info info;
    const char *why = NULL;
    size_t n = wav_header(h, 48000, 2, 16, 192000);
    assert_int_equal(media_identify(h, n, n + 192000, &info, &why), FERRY_OK);
    assert_int_equal(info.kind, MEDIA_WAV);
    assert_int_equal(info.sample_rate, 48000);
    assert_int_equal(info.channels, 2);
    assert_int_equal(info.bits_per_sample, 16);
    assert_true(info.duration_s > 0.999 && info.duration_s < 1.001);

    /* Streamed: data size 0xFFFFFFFF means "the rest of the file". */
    put_le32(h + 40, 0xFFFFFFFFu);
    assert_int_equal(media_identify(h, n, n + 96000, &info, &why), FERRY_OK);
    assert_true(info.duration_s > 0.499 && info.duration_s < 0.501);

    /* Truncated: the data chunk claims more than the file holds. */
    n = wav_header(h, 48000, 2, 16, 192000);
    assert_int_equal(media_identify(h, n, n + 1000, &info, &why), FERRY_ERR_INVALID);
    assert_non_null(strstr(why, "truncated"));

    /* Inconsistent fmt: byte rate that does not match. */
    put_le32(h + 28, 12345);
    assert_int_equal(media_identify(h, n, n + 192000, &info, &why), FERRY_ERR_INVALID);
    /* Zero channels. */
    n = wav_header(h, 48000, 2, 16, 100);
    put_le16(h + 22, 0);
    assert_int_equal(media_identify(h, n, n + 100, &info, &why), FERRY_ERR_INVALID);
    /* Header cut short. */
    n = wav_header(h, 8000, 1, 8, 100);
    assert_int_equal(media_identify(h, 30, n + 100, &info, &why), FERRY_ERR_INVALID);
}

static void test_png(void **state)
{
    (void)state;
    /* 1920x1080 RGBA, 8 bits; the IHDR CRC is Python's zlib.crc32. */
    static const unsigned char png[] = {
        0x89, 'P',  'N',  'G', '\r', '\n', 0x1A, '\n', 0, 0, 0, 13, 'I',  'H',  'D',  'R', 0,
        0,    0x07, 0x80, 0,   0,    0x04, 0x38, 8,    6, 0, 0, 0,  0xE8, 0xD3, 0xC1, 0x43};
    media_info info;
    const char *why = NULL;
    assert_int_equal(media_identify(png, sizeof png, sizeof png, &info, &why), FERRY_OK);
    assert_int_equal(info.kind, MEDIA_PNG);
    assert_int_equal(info.width, 1920);
    assert_int_equal(info.height, 1080);
    unsigned char bad[sizeof png];
    memcpy(bad, png, sizeof png);
    bad[19] ^= 1; /* width changed: CRC no longer matches */
    assert_int_equal(media_identify(bad, sizeof bad, sizeof bad, &info, &why), FERRY_ERR_INVALID);
    assert_string_equal(why, "PNG IHDR checksum mismatch");
    assert_int_equal(media_identify(png, 20, 20, &info, &why), FERRY_ERR_INVALID);
}

static void test_jpeg(void **state)
{
    (void)state;
    /* SOI, APP0 (len 4), fill bytes, SOF2 (progressive) 640x480, 3 comps. */
    static const unsigned char jpg[] = {0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x04, 'a',  'b',  0xFF, 0xFF,
                                        0xFF, 0xC2, 0x00, 0x11, 0x08, 0x01, 0xE0, 0x02, 0x80, 0x03,
                                        1,    0x22, 0,    2,    0x11, 1,    3,    0x11, 1};
    media_info info;
    const char *why = NULL;
    assert_int_equal(media_identify(jpg, sizeof jpg, sizeof jpg, &info, &why), FERRY_OK);
    assert_int_equal(info.kind, MEDIA_JPEG);
    assert_int_equal(info.width, 640);
    assert_int_equal(info.height, 480);
    assert_int_equal(info.components, 3);
    /* DHT (C4) is not a frame header, SOS before any SOF is refused. */
    static const unsigned char sos_first[] = {0xFF, 0xD8, 0xFF, 0xC4, 0x00,
                                              0x02, 0xFF, 0xDA, 0x00, 0x02};
    assert_int_equal(media_identify(sos_first, sizeof sos_first, 100, &info, &why),
                     FERRY_ERR_INVALID);
    /* A segment whose length runs past the bytes present. */
    static const unsigned char cut[] = {0xFF, 0xD8, 0xFF, 0xE1, 0xFF, 0xF0, 'E', 'x'};
    assert_int_equal(media_identify(cut, sizeof cut, 1 << 20, &info, &why), FERRY_ERR_INVALID);
    /* Segment length below 2. */
    static const unsigned char tiny[] = {0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x01, 0xFF, 0xC0};
    assert_int_equal(media_identify(tiny, sizeof tiny, sizeof tiny, &info, &why),
                     FERRY_ERR_INVALID);
}

static void test_unknown_and_arguments(void **state)
{
    (void)state;
    media_info info;
    const char *why = NULL;
    const unsigned char text[] = "just some text";
    assert_int_equal(media_identify(text, sizeof text, sizeof text, &info, &why), FERRY_OK);
    assert_int_equal(info.kind, MEDIA_UNKNOWN);
    assert_int_equal(media_identify(text, 0, 0, &info, &why), FERRY_OK);
    assert_int_equal(media_identify(text, sizeof text, 1, &info, &why), FERRY_ERR_INVALID);
    assert_string_equal(media_kind_name(MEDIA_JPEG), "jpeg");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wav),
        cmocka_unit_test(test_png),
        cmocka_unit_test(test_jpeg),
        cmocka_unit_test(test_unknown_and_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
