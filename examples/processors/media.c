/*
 * media.c - WAV (RIFF), PNG (IHDR) and JPEG (SOFn) header parsers.
 *
 * Invariant: every read goes through need(), which checks the offset and
 * length against the bytes present, so no field is read past `len`; sizes
 * from the file are widened to 64 bits before any arithmetic.
 */
#include "media.h"

#include <stdbool.h>
#include <string.h>

static bool need(size_t len, uint64_t off, uint64_t n)
{
    return off <= len && n <= len - off;
}

static uint16_t le16(const unsigned char *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t le32(const unsigned char *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static uint16_t be16(const unsigned char *p)
{
    return (uint16_t)((p[0] << 8) | p[1]);
}

static uint32_t be32(const unsigned char *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

const char *media_kind_name(media_kind kind)
{
    switch (kind) {
    case MEDIA_WAV:
        return "wav";
    case MEDIA_PNG:
        return "png";
    case MEDIA_JPEG:
        return "jpeg";
    case MEDIA_UNKNOWN:
        break;
    }
    return "unknown";
}

/* RIFF/WAVE: walk the chunks for "fmt " and "data". */
static ferry_err parse_wav(const unsigned char *p, size_t len, uint64_t total, media_info *info,
                           const char **why)
{
    bool have_fmt = false;
    uint32_t byte_rate = 0;
    uint64_t riff_end = (uint64_t)le32(p + 4) + 8;
    if (riff_end > total)
        riff_end = total; /* streaming writers leave the size wrong; the file rules */
    uint64_t off = 12;
    for (;;) {
        if (!need(len, off, 8)) {
            *why = have_fmt ? "WAV has no data chunk in its first bytes" : "WAV has no fmt chunk";
            return FERRY_ERR_INVALID;
        }
        const unsigned char *c = p + off;
        uint64_t size = le32(c + 4);
        if (memcmp(c, "fmt ", 4) == 0) {
            if (size < 16 || !need(len, off + 8, 16)) {
                *why = "WAV fmt chunk too short";
                return FERRY_ERR_INVALID;
            }
            info->audio_format = le16(c + 8);
            info->channels = le16(c + 10);
            info->sample_rate = le32(c + 12);
            byte_rate = le32(c + 16);
            uint16_t block_align = le16(c + 20);
            info->bits_per_sample = le16(c + 22);
            if (info->channels == 0 || info->sample_rate == 0 || byte_rate == 0 ||
                block_align == 0) {
                *why = "WAV fmt chunk has a zero channel count, rate or block size";
                return FERRY_ERR_INVALID;
            }
            if (info->audio_format == 1 && (uint64_t)info->sample_rate * block_align != byte_rate) {
                *why = "WAV byte rate does not match sample rate x block size";
                return FERRY_ERR_INVALID;
            }
            have_fmt = true;
        } else if (memcmp(c, "data", 4) == 0) {
            if (!have_fmt) {
                *why = "WAV data chunk before its fmt chunk";
                return FERRY_ERR_INVALID;
            }
            uint64_t avail = total - (off + 8 <= total ? off + 8 : total);
            /* 0xFFFFFFFF: a streamed file that never went back to
             * fill in the size; everything that follows is data. */
            if (size == 0xFFFFFFFFu)
                size = avail;
            if (size > avail) {
                *why = "WAV data chunk longer than the file (truncated)";
                return FERRY_ERR_INVALID;
            }
            info->data_bytes = size;
            info->duration_s = (double)size / (double)byte_rate;
            info->kind = MEDIA_WAV;
            return FERRY_OK;
        }
        uint64_t next = off + 8 + size + (size & 1);
        if (next > riff_end || next <= off) {
            *why = "WAV chunk runs past the end of the file";
            return FERRY_ERR_INVALID;
        }
        off = next;
    }
}

static uint32_t crc32_png(const unsigned char *p, size_t n)
{
    uint32_t crc = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++)
            crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
    }
    return crc ^ 0xFFFFFFFFu;
}

/* PNG: the signature, then IHDR must be the first chunk (13 bytes, CRC). */
static ferry_err parse_png(const unsigned char *p, size_t len, media_info *info, const char **why)
{
    if (!need(len, 8, 8 + 13 + 4) || be32(p + 8) != 13 || memcmp(p + 12, "IHDR", 4) != 0) {
        *why = "PNG does not start with a complete IHDR chunk";
        return FERRY_ERR_INVALID;
    }
    if (crc32_png(p + 12, 4 + 13) != be32(p + 8 + 8 + 13)) {
        *why = "PNG IHDR checksum mismatch";
        return FERRY_ERR_INVALID;
    }
    uint32_t w = be32(p + 16), h = be32(p + 20);
    if (w == 0 || h == 0 || w > 0x7FFFFFFFu || h > 0x7FFFFFFFu) {
        *why = "PNG dimensions out of range";
        return FERRY_ERR_INVALID;
    }
    uint8_t depth = p[24], color = p[25];
    bool depth_ok =
        (color == 0 && (depth == 1 || depth == 2 || depth == 4 || depth == 8 || depth == 16)) ||
        (color == 3 && (depth == 1 || depth == 2 || depth == 4 || depth == 8)) ||
        ((color == 2 || color == 4 || color == 6) && (depth == 8 || depth == 16));
    if (!depth_ok) {
        *why = "PNG bit depth and colour type do not go together";
        return FERRY_ERR_INVALID;
    }
    info->kind = MEDIA_PNG;
    info->width = w;
    info->height = h;
    info->bit_depth = depth;
    info->components = color;
    return FERRY_OK;
}

static bool is_sof(unsigned char m)
{
    /* SOF0-3, 5-7, 9-11, 13-15; C4 (DHT), C8 (JPG) and CC (DAC) are not. */
    return m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC;
}

/* JPEG: walk the marker segments up to the first SOFn. */
static ferry_err parse_jpeg(const unsigned char *p, size_t len, media_info *info, const char **why)
{
    uint64_t off = 2;
    for (;;) {
        /* Markers may be preceded by any number of 0xFF fill bytes. */
        if (!need(len, off, 2) || p[off] != 0xFF) {
            *why = need(len, off, 2) ? "JPEG segment does not start with a marker"
                                     : "JPEG has no frame header in its first bytes";
            return FERRY_ERR_INVALID;
        }
        while (need(len, off, 2) && p[off + 1] == 0xFF)
            off++;
        if (!need(len, off, 2)) {
            *why = "JPEG has no frame header in its first bytes";
            return FERRY_ERR_INVALID;
        }
        unsigned char m = p[off + 1];
        off += 2;
        if (m == 0x01 || (m >= 0xD0 && m <= 0xD7))
            continue; /* stand-alone markers, no length */
        if (m == 0xD8 || m == 0xD9 || m == 0xDA || m == 0x00) {
            *why = "JPEG reaches image data (or its end) before a frame header";
            return FERRY_ERR_INVALID;
        }
        if (!need(len, off, 2)) {
            *why = "JPEG has no frame header in its first bytes";
            return FERRY_ERR_INVALID;
        }
        uint16_t seg = be16(p + off);
        if (seg < 2) {
            *why = "JPEG segment length below 2";
            return FERRY_ERR_INVALID;
        }
        if (is_sof(m)) {
            if (seg < 8 || !need(len, off, 8)) {
                *why = "JPEG frame header too short";
                return FERRY_ERR_INVALID;
            }
            uint8_t precision = p[off + 2];
            uint16_t h = be16(p + off + 3), w = be16(p + off + 5);
            uint8_t comps = p[off + 7];
            if (w == 0 || comps == 0 || (uint32_t)seg != 8u + 3u * comps) {
                *why = "JPEG frame header inconsistent (width 0, no components or bad length)";
                return FERRY_ERR_INVALID;
            }
            info->kind = MEDIA_JPEG;
            info->width = w;
            info->height = h; /* 0 means "defined by the DNL marker later" */
            info->bit_depth = precision;
            info->components = comps;
            return FERRY_OK;
        }
        off += seg;
    }
}

ferry_err media_identify(const unsigned char *head, size_t len, uint64_t total_size,
                         media_info *out, const char **why)
{
    static const unsigned char png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
    media_info info;
    memset(&info, 0, sizeof info);
    ferry_err result = FERRY_OK;
    if (head == NULL || (uint64_t)len > total_size) {
        *why = "bad arguments";
        return FERRY_ERR_INVALID;
    }
    if (len >= 12 && memcmp(head, "RIFF", 4) == 0 && memcmp(head + 8, "WAVE", 4) == 0)
        result = parse_wav(head, len, total_size, &info, why);
    else if (len >= 8 && memcmp(head, png_sig, 8) == 0)
        result = parse_png(head, len, &info, why);
    else if (len >= 3 && head[0] == 0xFF && head[1] == 0xD8 && head[2] == 0xFF)
        result = parse_jpeg(head, len, &info, why);
    if (result == FERRY_OK)
        *out = info;
    return result;
}
