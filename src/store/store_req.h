/*
 * store_req.h - the embedded store's pure request helpers: the path of a
 * request split into bucket and key, keys checked, Range headers, grant ids
 * found in keys, XML and URL escaping for answers.
 *
 * What it is for: everything the store reads from a request line or a
 * header before it touches the disk or the ledger goes through here, so it
 * can be fuzzed without a server (tests/fuzz/fuzz_store_request.c).
 *
 * Invariants:
 * - No I/O, no globals, no allocation except where a function says so.
 * - A key that store_key_check() accepts is 1..STORE_KEY_MAX bytes of valid
 *   UTF-8 with no control character (so it can be written into XML and logs
 *   as is). Keys never become file names: the data file of an object is
 *   named by a random id (see store_fs.h), so no key, whatever its bytes,
 *   can reach outside the data directory.
 */
#ifndef FERRY_STORE_REQ_H
#define FERRY_STORE_REQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "ferry/ferry_error.h"
#include "ledger/ledger.h"

#define STORE_KEY_MAX      LEDGER_OBJECT_KEY_MAX /* 1,024 bytes, S3's limit */
#define STORE_BUCKET_MAX   63
#define STORE_RAW_PATH_MAX 8192 /* percent-encoded path as received */

/* A request path split: bucket (may be "" for "/") and key (may be "" for
 * "/bucket" and "/bucket/"). */
typedef struct store_target {
    char bucket[STORE_BUCKET_MAX + 1];
    char key[STORE_KEY_MAX + 1];
    size_t key_len;
} store_target;

typedef enum store_path_result {
    STORE_PATH_OK = 0,
    STORE_PATH_MALFORMED,  /* not starting with '/', bad escape, too long */
    STORE_PATH_BAD_BUCKET, /* bucket name too long or with bytes S3 forbids */
    STORE_PATH_KEY_TOO_LONG,
    STORE_PATH_BAD_KEY, /* NUL, control characters, invalid UTF-8 */
} store_path_result;

/* Splits the raw (percent-encoded) path of a request into *out. '+' is
 * literal (S3 path style). out is written only on STORE_PATH_OK. */
store_path_result store_parse_path(const char *raw, size_t raw_len, store_target *out);

/* true when key[0..len) is an acceptable object key (see above). */
bool store_key_check(const char *key, size_t len);

/* Percent-decodes src[0..len) into dst (cap dst_size, NUL-terminated);
 * '+' stays '+'. FERRY_ERR_INVALID on a bad escape, FERRY_ERR_TOO_LARGE when
 * it does not fit. *out_len is the decoded length (may contain NUL bytes). */
__attribute__((warn_unused_result)) ferry_err
store_pct_decode(const char *src, size_t len, char *dst, size_t dst_size, size_t *out_len);

/* The grant id a grant key carries: the last path segment up to its first
 * '-' ("dev/2026/11/25/g_XXXX-name" -> "g_XXXX"). false when the key has no
 * such part or it is not a well-formed grant id. */
bool store_key_grant_id(const char *key, char *out, size_t out_size);

/* The S3 sub-resource ("?acl", "?uploads", "?uploadId=", "?tagging",
 * "?versionId=", ...) that query[0..len) (the raw query string, without
 * '?') names and the store does not implement, if any: such a request
 * means another operation than the plain object or bucket request (PUT
 * ?acl is PutObjectAcl, DELETE ?tagging is DeleteObjectTagging), so it
 * must be refused, never served as that plain request. "location"
 * (GetBucketLocation) is implemented. Names are percent-decoded before
 * they are compared. Returns true and the name (NUL-terminated, cut to
 * name_size - 1) when there is one. */
bool store_query_subresource(const char *query, size_t len, char *name, size_t name_size);

/* A byte range resolved against an object of size bytes. */
typedef enum store_range_result {
    STORE_RANGE_NONE = 0,      /* no Range header, or one we ignore (as S3
                                  does for several ranges or bad syntax) */
    STORE_RANGE_OK,            /* [first, first + length) */
    STORE_RANGE_UNSATISFIABLE, /* 416 InvalidRange */
} store_range_result;

store_range_result store_parse_range(const char *header, uint64_t size, uint64_t *first,
                                     uint64_t *length);

/* UploadPartCopy's x-amz-copy-source-range, "bytes=first-last" (both
 * zero-based and inclusive, first <= last), against a source of size
 * bytes: OK with [first, first + length) inside the source; MALFORMED for
 * any other form (no suffix "-n", no open end, no list); OUTSIDE when last
 * is beyond the source. Both refusals are S3's 400 InvalidArgument. */
typedef enum store_copy_range_result {
    STORE_COPY_RANGE_OK = 0,
    STORE_COPY_RANGE_MALFORMED,
    STORE_COPY_RANGE_OUTSIDE,
} store_copy_range_result;

store_copy_range_result store_parse_copy_range(const char *value, uint64_t size, uint64_t *first,
                                               uint64_t *length);

/* An HTTP date in the one form clients send (RFC 9110's IMF-fixdate,
 * "Sun, 06 Nov 1994 08:49:37 GMT", years from 1970), as seconds since the
 * epoch; false for anything else. For x-amz-copy-source-if-(un)modified-since. */
bool store_parse_http_date(const char *value, int64_t *out);

#define STORE_PART_NUMBER_MAX 10000
/* A ?partNumber= value: a decimal 1..10,000 (no sign, no spaces, at most
 * 19 digits); false for anything else. */
bool store_parse_part_number(const char *value, unsigned *out);

/* Appends s[0..len) escaped for XML text (& < > " '). */
__attribute__((warn_unused_result)) ferry_err store_xml_escape(ferry_buf *out, const char *s,
                                                               size_t len);
/* Appends s[0..len) URL-encoded as S3's encoding-type=url does (everything
 * but A-Z a-z 0-9 - . _ ~ and '/' escaped). */
__attribute__((warn_unused_result)) ferry_err store_url_encode(ferry_buf *out, const char *s,
                                                               size_t len);

/* Hex of bytes into out (2 * len + 1). */
void store_hex(const unsigned char *bytes, size_t len, char *out);
/* t as S3 writes LastModified and Initiated in XML: "2026-12-07T05:54:00.000Z". */
#define STORE_ISO_TIME_LEN 24
void store_iso_time(int64_t t, char out[STORE_ISO_TIME_LEN + 1]);
/* Decodes standard base64 of exactly want bytes; false otherwise. */
bool store_b64_decode_exact(const char *s, unsigned char *out, size_t want);

#endif
