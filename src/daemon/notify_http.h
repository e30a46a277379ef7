/*
 * notify_http.h - ferryd's `/events/s3` endpoint: bucket notifications
 * from an EXTERNAL S3-compatible store (AWS S3 through a forwarder, MinIO's
 * webhook target, ...) fed into the same outbox as the embedded store's
 * objects, so a fleet on an external store gets the same receipts and
 * processor events.
 *
 * It is its own small HTTPS listener ([notify] section), not a path of the
 * embedded store, because a fleet on an external store runs no embedded
 * store at all.
 *
 *   POST /events/s3
 *   Authorization: Bearer <token from [notify] token_file>
 *   Content-Type: application/json
 *   {"Records":[{"eventName":"ObjectCreated:Put" | "s3:ObjectCreated:Put", ...,
 *                "s3":{"bucket":{"name":…},"object":{"key":…,"size":…,"eTag":…}}}]}
 *
 * Invariants:
 * - A request without exactly the right bearer token is answered 401 before
 *   its body is read and changes nothing (the token is compared as SHA-256
 *   digests with CRYPTO_memcmp: no timing leak of content or length).
 * - The body is bounded (max_body), parsed with duplicate keys refused;
 *   each record is matched to its grant by the key (the grant id is in the
 *   key's last segment), and must name the configured bucket, the grant's
 *   key and size; ledger_event_external() records it (or recognises a
 *   repeated notification) in one transaction.
 * - Only ObjectCreated events are taken; others are counted as ignored.
 */
#ifndef FERRY_DAEMON_NOTIFY_HTTP_H
#define FERRY_DAEMON_NOTIFY_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include "ferry/ferry_error.h"

typedef struct notify_http_config {
    const char *listen; /* IPv4 or IPv6 literal */
    int port;
    const char *tls_cert_file;
    const char *tls_key_file;
    const char *token; /* copied, wiped on free */
    const char *ledger_url;
    const char *bucket; /* the only bucket accepted */
    size_t max_body;
} notify_http_config;

typedef struct notify_http notify_http;

__attribute__((warn_unused_result)) ferry_err notify_http_new(const notify_http_config *config,
                                                              notify_http **out);
/* Stops listening and frees; safe on NULL. */
void notify_http_free(notify_http *n);

#endif
