/*
 * file.h - reading a small file (a certificate, a key) whole, with a cap.
 */
#ifndef FERRY_COMMON_FILE_H
#define FERRY_COMMON_FILE_H

#include <stddef.h>

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

#endif
