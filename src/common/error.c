/* error.c - descriptions of the ferry_err values. */
#include "ferry/ferry_error.h"

#include <stddef.h>

static const char *const descriptions[FERRY_ERR__COUNT] = {
    [FERRY_OK] = "success",
    [FERRY_ERR_NOMEM] = "out of memory",
    [FERRY_ERR_INVALID] = "invalid argument or malformed input",
    [FERRY_ERR_RANGE] = "value out of range",
    [FERRY_ERR_TOO_LARGE] = "input exceeds its size limit",
    [FERRY_ERR_IO] = "I/O error",
    [FERRY_ERR_NOT_FOUND] = "not found",
    [FERRY_ERR_EXISTS] = "already exists",
    [FERRY_ERR_CONFIG] = "configuration error",
    [FERRY_ERR_CRYPTO] = "cryptographic operation failed",
    [FERRY_ERR_TLS] = "TLS or certificate error",
    [FERRY_ERR_PROTOCOL] = "protocol error",
    [FERRY_ERR_AUTH] = "authentication failed",
    [FERRY_ERR_DENIED] = "access denied",
    [FERRY_ERR_EXPIRED] = "expired",
    [FERRY_ERR_CONFLICT] = "conflict",
    [FERRY_ERR_TIMEOUT] = "timed out",
    [FERRY_ERR_UNAVAILABLE] = "service unavailable",
    [FERRY_ERR_DB] = "database error",
    [FERRY_ERR_INTERNAL] = "internal error",
};

const char *ferry_err_str(ferry_err err)
{
    if ((unsigned)err >= FERRY_ERR__COUNT || descriptions[err] == NULL)
        return "unknown error";
    return descriptions[err];
}
