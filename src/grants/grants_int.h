/*
 * grants_int.h - helpers shared between the files of src/grants, not part
 * of its interface.
 */
#ifndef FERRY_GRANTS_INT_H
#define FERRY_GRANTS_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The length of the valid, shortest-form UTF-8 character at p (n bytes
 * available), its code point in *cp; 0 when the bytes are not one. */
size_t grant_utf8_decode(const unsigned char *p, size_t n, uint32_t *cp);

/* Whether s (len bytes) is an RFC 6838 restricted-name "type/subtype" of at
 * most GRANT_CONTENT_TYPE_MAX bytes. */
bool grant_content_type_valid(const char *s, size_t len);

/* The request id rule: 1..GRANT_REQ_ID_MAX bytes, each printable ASCII
 * (0x20-0x7E), so that it can be echoed as it is. */
bool grant_request_id_valid(const char *id, size_t len);

#endif
