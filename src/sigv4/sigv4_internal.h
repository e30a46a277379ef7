/*
 * sigv4_internal.h - helpers shared by the files of src/sigv4 (not public).
 *
 * Encoding, hashing and key derivation used by signing and verification
 * alike, so that both sides build canonical requests with the same code.
 */
#ifndef FERRY_SIGV4_INTERNAL_H
#define FERRY_SIGV4_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sigv4.h"

/* Upper bound on a canonical request or string to sign we build. */
#define SIGV4_MAX_CANON_LEN (256 * 1024)

/* True for A-Z a-z 0-9 - . _ ~ (RFC 3986 unreserved). */
static inline bool sigv4__unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '.' || c == '_' || c == '~';
}

/* Appends s[0..len) URI-encoded: unreserved bytes as they are, '/' too when
 * keep_slash, everything else as %XX with upper-case hex. */
ferry_err sigv4__uri_encode(ferry_buf *out, const char *s, size_t len, bool keep_slash);

/* The same, written at w (room for 3 * len bytes); returns the new end. */
char *sigv4__put_encoded(char *w, const char *s, size_t len, bool keep_slash);

/* Percent-decodes s[0..len) into out; FERRY_ERR_INVALID for a bad escape or
 * a NUL byte (decoded or raw). '+' stays '+'. */
ferry_err sigv4__uri_decode(ferry_buf *out, const char *s, size_t len);

/* Lower-case hex of n bytes into out (2n chars + NUL). */
void sigv4__hex(const unsigned char *in, size_t n, char *out);

/* SHA-256 of data as 64 lower-case hex digits plus NUL. */
ferry_err sigv4__sha256_hex(const void *data, size_t len, char out[65]);

/* HMAC-SHA256 one-shot. */
ferry_err sigv4__hmac(const unsigned char *key, size_t key_len, const void *data, size_t len,
                      unsigned char out[32]);

/* kSigning = HMAC(HMAC(HMAC(HMAC("AWS4"+secret, date), region), service),
 * "aws4_request"). Wipes its intermediates. */
ferry_err sigv4__derive_key(const char *secret, const char *date, const char *region,
                            const char *service, unsigned char out[32]);

/* Trims a header value and folds runs of spaces/tabs/newlines into one
 * space, appending the result. */
ferry_err sigv4__append_trimmed(ferry_buf *out, const char *v, size_t len);

/* The same, written at w (room for len bytes); returns the new end. */
char *sigv4__put_trimmed(char *w, const char *v, size_t len);

/* Case-insensitive ASCII comparison helpers. */
bool sigv4__ieq(const char *a, const char *b);
bool sigv4__iprefix(const char *s, const char *prefix);

/* A header/parameter name is a non-empty HTTP token. */
bool sigv4__is_token(const char *s, size_t len);

/* Checks access key / region / service strings: printable ASCII, no '/',
 * 1..max bytes. */
bool sigv4__valid_scope_part(const char *s, size_t max);

/* Constant-time check of a 64-char hex signature against the expected one. */
bool sigv4__sig_equal(const char *expected_hex, const char *given, size_t given_len);

/* Builds the credential scope "date/region/service/aws4_request". */
ferry_err sigv4__scope(ferry_buf *out, const char *date, const char *region,
                       const char *service);

/* Signs msg with the signer's cached key for the date of now (sigv4_sign.c):
 * writes the hex signature, the X-Amz-Date and, when credential is not NULL,
 * appends "akid/date/region/service/aws4_request". Used for POST policies. */
ferry_err sigv4__signer_sign(sigv4_signer *s, int64_t now, const char *msg, size_t len,
                             char sig[65], char amz_date[17], ferry_buf *credential);

/* Validates "scheme://host[:port][/]"; *base_len is its length without the
 * trailing slash. */
ferry_err sigv4__signer_endpoint(const char *endpoint, size_t *base_len);

#endif
