/*
 * grant_name.c - turns a device-supplied file name into a safe object key
 * component, and checks device ids.
 *
 * The rule (also in docs/protocol.md, which is the reference):
 *
 *   Refused, with UnsafeName: empty; over GRANT_NAME_IN_MAX bytes; not valid
 *   UTF-8 (overlong forms, UTF-16 surrogates, code points over U+10FFFF,
 *   truncated or stray continuation bytes); NUL or any other control
 *   character (C0 U+0000-U+001F, DEL U+007F, C1 U+0080-U+009F); '/' or '\';
 *   the sequence "..". These are what path tricks and log or terminal
 *   injection are made of: a name carrying them is not a mistake to repair
 *   quietly but a request to refuse.
 *
 *   Replaced by '_': every other ASCII character except letters, digits and
 *   ".-_" (space, quotes, '%', '+', '#', '?', '*', ':' ...); a leading '.'
 *   (no hidden files); and these non-ASCII characters: spaces and
 *   separators, invisible format characters (zero-width, bidirectional
 *   controls, BOM, soft hyphen, tags), private-use characters and
 *   noncharacters, and look-alikes of '/', '\' and '.' (fraction slash,
 *   division slash, fullwidth solidus, one- and two-dot leaders, ...).
 *
 *   Kept: ASCII letters and digits, '.', '-', '_', and every other non-ASCII
 *   character (letters of every script, and symbols such as emoji).
 *
 *   Cut: to GRANT_SAFE_NAME_MAX bytes on a character boundary; when the name
 *   has an extension (a '.' not at the start, at most 16 bytes from the
 *   end), the cut falls before it so the extension survives.
 *
 * The result is never empty, never contains '/', "..", controls or
 * invalid UTF-8, and is at most GRANT_SAFE_NAME_MAX bytes.
 */
#include "grants.h"
#include "grants_int.h"

#include <string.h>

#define EXT_MAX 16

/* Decodes one UTF-8 character at p (n bytes available). Returns its length,
 * or 0 when the bytes there are not a valid, shortest-form encoding of a
 * Unicode scalar value (RFC 3629, Table 3-7 of the Unicode standard). */
static size_t utf8_decode(const unsigned char *p, size_t n, uint32_t *cp)
{
    unsigned char b0 = p[0];
    unsigned char lo = 0x80, hi = 0xBF;
    size_t len;
    uint32_t c;

    if (b0 < 0x80) {
        *cp = b0;
        return 1;
    }
    if (b0 >= 0xC2 && b0 <= 0xDF) {
        len = 2;
        c = b0 & 0x1Fu;
    } else if (b0 >= 0xE0 && b0 <= 0xEF) {
        len = 3;
        c = b0 & 0x0Fu;
        if (b0 == 0xE0)
            lo = 0xA0; /* overlong below U+0800 */
        else if (b0 == 0xED)
            hi = 0x9F; /* surrogates U+D800-U+DFFF */
    } else if (b0 >= 0xF0 && b0 <= 0xF4) {
        len = 4;
        c = b0 & 0x07u;
        if (b0 == 0xF0)
            lo = 0x90; /* overlong below U+10000 */
        else if (b0 == 0xF4)
            hi = 0x8F; /* over U+10FFFF */
    } else {
        return 0; /* continuation byte, C0/C1 overlong lead, or F5-FF */
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        unsigned char b = p[i];
        if (b < lo || b > hi)
            return 0;
        lo = 0x80;
        hi = 0xBF;
        c = (c << 6) | (b & 0x3Fu);
    }
    *cp = c;
    return len;
}

size_t grant_utf8_decode(const unsigned char *p, size_t n, uint32_t *cp)
{
    return n == 0 ? 0 : utf8_decode(p, n, cp);
}

/* Non-ASCII characters that are replaced by '_' (see the rule above). */
static bool nonascii_replaced(uint32_t c)
{
    static const struct {
        uint32_t lo, hi;
    } ranges[] = {
        {0x00A0, 0x00A0},    /* no-break space */
        {0x00AD, 0x00AD},    /* soft hyphen */
        {0x034F, 0x034F},    /* combining grapheme joiner */
        {0x061C, 0x061C},    /* Arabic letter mark */
        {0x115F, 0x1160},    /* Hangul fillers */
        {0x1680, 0x1680},    /* Ogham space mark */
        {0x180E, 0x180E},    /* Mongolian vowel separator */
        {0x2000, 0x200F},    /* spaces, zero-width, LRM/RLM */
        {0x2024, 0x2025},    /* one- and two-dot leaders (look like "." and "..") */
        {0x2028, 0x202F},    /* line/paragraph separators, bidi embeddings */
        {0x2044, 0x2044},    /* fraction slash */
        {0x205F, 0x206F},    /* math space, invisible operators, bidi isolates */
        {0x2215, 0x2216},    /* division slash, set minus */
        {0x29F5, 0x29F5},    /* reverse solidus operator */
        {0x29F8, 0x29F9},    /* big solidus, big reverse solidus */
        {0x3000, 0x3000},    /* ideographic space */
        {0x3164, 0x3164},    /* Hangul filler */
        {0xE000, 0xF8FF},    /* private use */
        {0xFDD0, 0xFDEF},    /* noncharacters */
        {0xFEFF, 0xFEFF},    /* BOM, zero-width no-break space */
        {0xFF0E, 0xFF0F},    /* fullwidth full stop and solidus */
        {0xFF3C, 0xFF3C},    /* fullwidth reverse solidus */
        {0xFFA0, 0xFFA0},    /* halfwidth Hangul filler */
        {0xFFF9, 0xFFFB},    /* interlinear annotation controls */
        {0x1BCA0, 0x1BCA3},  /* shorthand format controls */
        {0x1D173, 0x1D17A},  /* musical format controls */
        {0xE0000, 0xE007F},  /* tags */
        {0xF0000, 0x10FFFF}, /* private use planes 15-16 */
    };
    if ((c & 0xFFFEu) == 0xFFFEu)
        return true; /* U+xxFFFE and U+xxFFFF are noncharacters in every plane */
    for (size_t i = 0; i < sizeof ranges / sizeof ranges[0]; i++) {
        if (c >= ranges[i].lo && c <= ranges[i].hi)
            return true;
    }
    return false;
}

static bool ascii_kept(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '-' || c == '_';
}

/* The largest n' <= n that does not split a UTF-8 character of s. */
static size_t utf8_floor(const char *s, size_t n)
{
    while (n > 0 && ((unsigned char)s[n] & 0xC0u) == 0x80u)
        n--;
    return n;
}

ferry_err grant_safe_name(const char *name, size_t len, char *out, size_t out_size,
                          const char **reason)
{
    /* Each input character becomes at most as many output bytes as it had,
     * so the work buffer never needs more than the input cap. */
    char work[GRANT_NAME_IN_MAX + 1];
    size_t w = 0;
    const char *why = NULL;

    if (name == NULL || out == NULL || out_size < GRANT_SAFE_NAME_MAX + 1) {
        why = "internal error";
        goto refuse;
    }
    if (len == 0) {
        why = "name is empty";
        goto refuse;
    }
    if (len > GRANT_NAME_IN_MAX) {
        why = "name is longer than 1024 bytes";
        goto refuse;
    }
    for (size_t i = 0; i < len;) {
        const unsigned char *p = (const unsigned char *)name + i;
        uint32_t c = 0;
        size_t n = utf8_decode(p, len - i, &c);
        if (n == 0) {
            why = "name is not valid UTF-8";
            goto refuse;
        }
        if (c == 0) {
            why = "name contains a NUL character";
            goto refuse;
        }
        if (c < 0x20 || c == 0x7F || (c >= 0x80 && c <= 0x9F)) {
            why = "name contains a control character";
            goto refuse;
        }
        if (c == '/' || c == '\\') {
            why = "name contains a path separator";
            goto refuse;
        }
        if (c == '.' && i + 1 < len && name[i + 1] == '.') {
            why = "name contains \"..\"";
            goto refuse;
        }
        if (c < 0x80) {
            bool keep = ascii_kept((unsigned char)c) && !(w == 0 && c == '.');
            work[w++] = keep ? (char)c : '_';
        } else if (nonascii_replaced(c)) {
            work[w++] = '_';
        } else {
            memcpy(work + w, p, n);
            w += n;
        }
        i += n;
    }

    if (w > GRANT_SAFE_NAME_MAX) {
        /* Keep a short extension: the last '.' that is not the first byte
         * and leaves at most EXT_MAX bytes after it. */
        size_t ext = 0;
        for (size_t j = w; j-- > 1 && w - j <= EXT_MAX;) {
            if (work[j] == '.') {
                ext = w - j;
                break;
            }
        }
        size_t stem = utf8_floor(work, GRANT_SAFE_NAME_MAX - ext);
        /* A stem ending in '.' joined to the extension's '.' would make the
         * ".." the rule refuses. The name has no "..", so at most one dot
         * goes, and the stem keeps its first (non-dot) character. */
        if (ext > 0 && stem > 1 && work[stem - 1] == '.')
            stem--;
        memmove(work + stem, work + w - ext, ext);
        w = stem + ext;
    }
    memcpy(out, work, w);
    out[w] = '\0';
    return FERRY_OK;
refuse:
    if (reason != NULL)
        *reason = why;
    return FERRY_ERR_INVALID;
}

bool grant_device_id_valid(const char *device)
{
    size_t n;
    if (device == NULL || device[0] == '\0' || device[0] == '.')
        return false;
    n = strnlen(device, GRANT_DEVICE_MAX + 1);
    if (n > GRANT_DEVICE_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (!ascii_kept((unsigned char)device[i]))
            return false;
        if (device[i] == '.' && device[i + 1] == '.')
            return false;
    }
    return true;
}
