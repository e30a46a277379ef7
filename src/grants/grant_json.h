/*
 * grant_json.h - a small JSON object writer for the answers ferryd sends.
 *
 * Why not jansson, which parses the requests: an answer is a fixed shape
 * (a flat object, one nested object of strings), written once per request
 * on the answer's path, and building a jansson tree for it cost more than
 * the rest of the answer (one allocation per value, a hash table per
 * object, then a walk to dump it). This writes the text straight into a
 * ferry_buf.
 *
 * Invariants: the output is always valid JSON text once finished without
 * error: keys and values are escaped (", \ and every control character
 * below U+0020; the rest as is, UTF-8) and must be valid UTF-8, or the
 * writer fails with FERRY_ERR_INVALID instead of producing broken text;
 * the buffer's cap bounds the size (FERRY_ERR_TOO_LARGE). Errors are
 * sticky: after the first, every call does nothing and
 * grant_json_finish() returns it, so callers check once.
 */
#ifndef FERRY_GRANTS_GRANT_JSON_H
#define FERRY_GRANTS_GRANT_JSON_H

#include <stdbool.h>
#include <stdint.h>

#include "common/buf.h"
#include "ferry/ferry_error.h"

#define GRANT_JSON_DEPTH_MAX 4

typedef struct grant_json {
    ferry_buf *out;
    ferry_err err;
    unsigned depth;                       /* objects open */
    bool first[GRANT_JSON_DEPTH_MAX + 1]; /* no member yet at that depth */
} grant_json;

/* Starts the top-level object in out (appended to what it holds). */
void grant_json_begin(grant_json *w, ferry_buf *out);
void grant_json_string(grant_json *w, const char *key, const char *value);
/* value may be NULL: the member is then JSON null. */
void grant_json_string_or_null(grant_json *w, const char *key, const char *value);
void grant_json_uint(grant_json *w, const char *key, uint64_t value);
/* Opens a nested object as the value of key; grant_json_end() closes it. */
void grant_json_object(grant_json *w, const char *key);
void grant_json_end(grant_json *w);
/* Closes the objects still open; the first error, or FERRY_OK. */
__attribute__((warn_unused_result)) ferry_err grant_json_finish(grant_json *w);

#endif
