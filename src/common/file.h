/*
 * file.h - reading a small file (a certificate, a key) whole, with a cap;
 * reading a stream to its end into a capped buffer.
 */
#ifndef FERRY_COMMON_FILE_H
#define FERRY_COMMON_FILE_H

#include <stddef.h>
#include <stdio.h>

#include "common/buf.h"
#include "ferry/ferry_error.h"

/*
 * Reads the regular file at path (1 to max_bytes bytes) into a new
 * NUL-terminated buffer that the caller frees (wiping it first if it held a
 * key). On failure nothing is allocated and, when why is not NULL, *why
 * points to a fixed one-line reason ("cannot open", "not a regular file of
 * 1 B to the size limit", "read error"); FERRY_ERR_CONFIG for a missing or
 * unsuitable file, FERRY_ERR_IO for a read error, FERRY_ERR_NOMEM.
 */
__attribute__((warn_unused_result)) ferry_err ferry_read_small_file(const char *path,
                                                                    size_t max_bytes, char **out,
                                                                    const char **why);

/* Appends everything f yields until its end to out: FERRY_ERR_TOO_LARGE
 * past out's cap, FERRY_ERR_IO on a read error (what was read stays in out). */
__attribute__((warn_unused_result)) ferry_err ferry_read_stream(FILE *f, ferry_buf *out);

#endif
