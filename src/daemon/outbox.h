/*
 * outbox.h - ferryd's event delivery: the worker side of the ledger's
 * transactional outbox (ledger.h, "The event outbox").
 *
 * The ledger records an event and one pending delivery per active target
 * in the transaction that records an object; this module delivers them.
 * One thread per target, plus one for the device's receipts (the reserved
 * target LEDGER_DEVICE_TARGET), each with a ledger handle of its own:
 * claim due deliveries (leased), deliver, record delivered / retry at
 * (capped exponential backoff with jitter) / dead-letter. A slow or broken
 * target therefore never delays the others. MQTT targets and receipts are
 * pipelined: a batch of QoS 1 publishes in flight, the next batch claimed
 * and published while its PUBACKs come in (outbox.c).
 *
 * Invariants:
 * - At least once: a delivery is marked delivered only after its target
 *   said so; a crash between the two redelivers the same bytes (the JSON is
 *   rebuilt from the event row, the id is the idempotency key).
 * - Per-key order per target: the ledger hands out event n+1 of a key only
 *   when event n is no longer pending for that target.
 * - The worker's ledger handles commit with LEDGER_SYNC_NORMAL: losing the
 *   last "delivered" marks to a power cut only causes redeliveries.
 * - A command target's JSON result goes to the device as its `processed`
 *   message (QoS 1) before the delivery is marked done.
 */
#ifndef FERRY_DAEMON_OUTBOX_H
#define FERRY_DAEMON_OUTBOX_H

#include <stdint.h>

#include "events/events_config.h"
#include "ferry/ferry_error.h"

struct broker_link;

typedef struct outbox_config {
    const char *ledger_url;
    const char *prefix;          /* MQTT prefix: receipts go to <prefix>/<device>/upload/response */
    const char *region;          /* the events' awsRegion */
    const events_config *events; /* checked (events_config_check) */
    struct broker_link *link;    /* borrowed: must outlive the outbox */
    int64_t poll_ms;             /* idle wait between claims; 0: 100 */
} outbox_config;

typedef struct outbox outbox;

/* Builds every target (reading webhook secrets), opens the ledger handles
 * and makes the configured targets the ledger's active set. err gets one
 * line on failure. */
__attribute__((warn_unused_result)) ferry_err outbox_new(const outbox_config *config, outbox **out,
                                                         char *err, size_t err_size);
/* Starts the worker threads. */
__attribute__((warn_unused_result)) ferry_err outbox_start(outbox *o);
/* Asks the workers to stop and joins them; a delivery in progress is
 * finished first (bounded by its target's timeout). Safe on NULL. */
void outbox_stop(outbox *o);
/* Safe on NULL; stops first if needed. */
void outbox_free(outbox *o);

#endif
