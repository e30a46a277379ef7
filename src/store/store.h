/*
 * store.h - the embedded S3-compatible store: an HTTPS endpoint inside
 * ferryd that speaks the part of the S3 API devices, processors and
 * operators need (docs/store.md).
 *
 * What it is for: devices upload with the pre-signed URLs of their grants;
 * every upload signed with the device-grant credential is checked against
 * its grant in the ledger and consumes it atomically when it completes.
 * Operators and processors read, list and delete with the operator
 * credential (header auth), and may also write.
 *
 * Invariants:
 * - Request bodies are streamed to their data file or pack region; never a
 *   whole body in memory.
 * - A 200 for an upload is sent only after the bytes are durable (the
 *   file's fdatasync and its directory's fsync, or the pack's fdatasync)
 *   and the object is recorded in the ledger (synchronous=FULL). A crash at
 *   any point leaves the whole object or nothing visible; store_new()
 *   removes what an interrupted run left (store_fs.h).
 * - Every refusal is an S3 XML error with a request id.
 *
 * Threads: libmicrohttpd's thread pool (epoll); each request takes a ledger
 * handle from a small pool for the time of its ledger calls.
 */
#ifndef FERRY_STORE_H
#define FERRY_STORE_H

#include <stdbool.h>
#include <stdint.h>

#include "ferry/ferry_error.h"

typedef struct store store;

typedef struct store_config {
    const char *listen;        /* address to bind ("127.0.0.1", "::1", "0.0.0.0") */
    int port;                  /* 1..65535 */
    bool plain_http;           /* no TLS (behind a TLS-terminating proxy) */
    const char *tls_cert_file; /* PEM certificate (chain), required unless plain_http */
    const char *tls_key_file;  /* PEM private key */
    const char *data_dir;
    const char *ledger_url;
    const char *bucket;
    const char *region;
    const char *grant_access_key; /* device grants are signed with this */
    const char *grant_secret;
    const char *operator_access_key; /* NULL or "": no operator access */
    const char *operator_secret;
    uint64_t max_object_size;
    uint64_t pack_max_object; /* bodies up to this size go to packs; 0: none */
    uint64_t pack_size;       /* bytes per pack before the next begins */
    unsigned max_connections;
    unsigned per_ip_connections; /* 0: no per-address limit */
    unsigned threads;
    unsigned idle_timeout_s;    /* no byte for this long: connection closed */
    unsigned header_timeout_s;  /* a request head must be complete this long
                                   after the connection's start or its
                                   previous request's end; 0: 40 s */
    uint64_t min_upload_rate;   /* bytes/s a body must average ... */
    unsigned min_rate_grace_s;  /* ... once it has been arriving this long */
    unsigned conn_memory_bytes; /* per connection: request line + headers
                                   must fit, and it is the receive buffer */
    unsigned max_headers;       /* header count */
    unsigned max_target_bytes;  /* request target (path + query as sent);
                                   0: STORE_TARGET_DEFAULT */
    unsigned max_header_bytes;  /* header section (names, values, ": ",
                                   CRLF); 0: STORE_HEADER_BYTES_DEFAULT */
    int64_t multipart_expiry_s;    /* multipart uploads older than this are
                                      aborted (0: never) */
    unsigned max_multipart_uploads; /* open at once (0: no limit) */
} store_config;

#define STORE_TARGET_DEFAULT       8192u
#define STORE_HEADER_BYTES_DEFAULT 16384u

/* The smallest conn_memory_bytes that lets the store's own limits on the
 * request target, the header section and the header count answer before
 * libmicrohttpd runs out of connection memory (and answers 414/431 with its
 * own HTML): the three limits, libmicrohttpd's per-header bookkeeping, and
 * STORE_HEAD_MARGIN bytes of requests over the limits that still get the
 * store's S3 XML answer. store_new() refuses a smaller value. */
#define STORE_HEAD_MARGIN 4096u
unsigned store_min_conn_memory(unsigned max_target_bytes, unsigned max_header_bytes,
                               unsigned max_headers);

/* Prepares the data directory (sweeping what an interrupted run left),
 * opens its ledger handles, loads the TLS certificate and starts listening.
 * The secrets are copied (and wiped on free). */
__attribute__((warn_unused_result)) ferry_err store_new(const store_config *cfg, store **out);

/* Aborts the multipart uploads older than multipart_expiry (up to 1,000
 * a call) and removes their part files; FERRY_OK with nothing to do when
 * multipart_expiry is 0. ferryd calls it at every expire_interval. */
__attribute__((warn_unused_result)) ferry_err store_expire_uploads(store *s);

/* Stops accepting connections, lets requests in flight finish for up to
 * timeout_ms, then closes the rest (their temporary files are removed:
 * nothing partial is left). Safe on NULL and twice. */
void store_stop(store *s, int64_t timeout_ms);

/* Stops (without waiting) if still running, then frees. Safe on NULL. */
void store_free(store *s);

#endif
