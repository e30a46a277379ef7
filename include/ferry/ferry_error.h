/*
 * ferry_error.h - the one error enum of Ferry.
 *
 * Every fallible function in Ferry, public or internal, returns a ferry_err.
 * FERRY_OK is zero so `if (err)` reads naturally; every other value has a
 * fixed, human-readable description from ferry_err_str().
 */
#ifndef FERRY_ERROR_H
#define FERRY_ERROR_H

#ifdef __cplusplus
extern "C" {
#endif

typedef enum ferry_err {
    FERRY_OK = 0,
    FERRY_ERR_NOMEM,       /* out of memory */
    FERRY_ERR_INVALID,     /* invalid argument or malformed input */
    FERRY_ERR_RANGE,       /* value out of its allowed range */
    FERRY_ERR_TOO_LARGE,   /* input or buffer over its cap */
    FERRY_ERR_IO,          /* file or socket I/O failed */
    FERRY_ERR_NOT_FOUND,   /* no such item */
    FERRY_ERR_EXISTS,      /* item already exists */
    FERRY_ERR_CONFIG,      /* configuration error */
    FERRY_ERR_CRYPTO,      /* a cryptographic primitive failed */
    FERRY_ERR_TLS,         /* TLS handshake or certificate error */
    FERRY_ERR_PROTOCOL,    /* peer violated the protocol */
    FERRY_ERR_AUTH,        /* authentication failed */
    FERRY_ERR_DENIED,      /* authenticated but not allowed */
    FERRY_ERR_EXPIRED,     /* credential, grant or URL expired */
    FERRY_ERR_CONFLICT,    /* state changed underneath (lost a race) */
    FERRY_ERR_TIMEOUT,     /* operation timed out */
    FERRY_ERR_UNAVAILABLE, /* peer or service not reachable */
    FERRY_ERR_DB,          /* ledger (database) error */
    FERRY_ERR_INTERNAL,    /* a bug: an invariant did not hold */
    FERRY_ERR__COUNT
} ferry_err;

/* A static string describing err; never NULL, also for unknown values. */
const char *ferry_err_str(ferry_err err);

#ifdef __cplusplus
}
#endif
#endif
