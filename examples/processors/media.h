/*
 * media.h - recognise WAV, PNG and JPEG from the first bytes of a payload
 * and read what a processor reports about them (duration, dimensions).
 *
 * The bytes are untrusted (whatever a device uploaded): every length field
 * is checked against the bytes actually present and against the total
 * size; a malformed header is FERRY_ERR_INVALID with a one-line reason,
 * never a read out of bounds (fuzzed: tests/fuzz/fuzz_processor_media.c).
 */
#ifndef FERRY_EXAMPLES_MEDIA_H
#define FERRY_EXAMPLES_MEDIA_H

#include <stddef.h>
#include <stdint.h>

#include "ferry/ferry_error.h"

/* How much of the start of a payload the parsers may need: a JPEG's frame
 * header can sit behind large EXIF/ICC segments. */
#define MEDIA_HEAD_MAX (1024 * 1024)

typedef enum media_kind {
    MEDIA_UNKNOWN = 0,
    MEDIA_WAV,
    MEDIA_PNG,
    MEDIA_JPEG,
} media_kind;

typedef struct media_info {
    media_kind kind;
    /* WAV */
    uint32_t sample_rate;
    uint16_t channels;
    uint16_t bits_per_sample;
    uint16_t audio_format; /* 1 = PCM, 3 = float, 0xFFFE = extensible */
    uint64_t data_bytes;
    double duration_s;
    /* PNG, JPEG */
    uint32_t width;
    uint32_t height;
    uint8_t bit_depth;  /* PNG bit depth, JPEG sample precision */
    uint8_t components; /* JPEG colour components; PNG colour type */
} media_info;

/* head: the first len bytes of a payload of total_size bytes (len <=
 * total_size). MEDIA_UNKNOWN with FERRY_OK if it is none of the three;
 * FERRY_ERR_INVALID with *why set if it claims to be one but is malformed
 * or truncated. *out is written only on FERRY_OK; *why on error. */
__attribute__((warn_unused_result)) ferry_err media_identify(const unsigned char *head, size_t len,
                                                             uint64_t total_size, media_info *out,
                                                             const char **why);

const char *media_kind_name(media_kind kind); /* "wav", "png", "jpeg", "unknown" */

#endif
