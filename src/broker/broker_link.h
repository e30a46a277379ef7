/*
 * broker_link.h - ferryd's link to the MQTT broker (libmosquitto).
 *
 * One link is one MQTT client identity with mutual TLS, QoS 1 and a
 * persistent session (clean start off, a session expiry for MQTT 5), so the
 * broker keeps the requests addressed to ferryd while it is away. The link
 * runs its own network thread: it connects, subscribes, reconnects with
 * capped exponential backoff and jitter, and calls on_message in that thread
 * for every message. Handlers may call broker_link_publish() from there.
 *
 * Protocol: MQTT 5 by default; with protocol "auto", a broker that refuses
 * MQTT 5 makes the link fall back to 3.1.1 for the next attempt.
 *
 * Ownership: the config strings are copied; messages passed to on_message
 * are valid only during the call.
 */
#ifndef FERRY_BROKER_LINK_H
#define FERRY_BROKER_LINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ferry/ferry_error.h"

typedef struct broker_link broker_link;

typedef enum broker_protocol {
    BROKER_PROTOCOL_AUTO = 0, /* MQTT 5, falling back to 3.1.1 */
    BROKER_PROTOCOL_V5,
    BROKER_PROTOCOL_V311,
} broker_protocol;

typedef struct broker_message {
    const char *topic;
    const void *payload;
    size_t payload_len;
    bool is_v5;                   /* received over MQTT 5: properties below may be set */
    const void *correlation_data; /* NULL if absent */
    size_t correlation_len;
    const char *response_topic; /* NULL if absent */
} broker_message;

typedef void (*broker_message_fn)(void *ctx, broker_link *link, const broker_message *msg);
/* Called in the network thread after each turn of the network loop, i.e.
 * after every burst of messages that arrived together: a handler that
 * queued messages in on_message handles them here as one batch. */
typedef void (*broker_loop_fn)(void *ctx, broker_link *link);

typedef struct broker_link_config {
    const char *host;
    int port;
    const char *cafile;
    const char *certfile;
    const char *keyfile;
    const char *client_id;
    int keepalive_s;
    broker_protocol protocol;
    int64_t reconnect_min_ms;
    int64_t reconnect_max_ms;
    uint32_t session_expiry_s;        /* MQTT 5 session expiry; 3.1.1 sessions never expire */
    const char *const *subscriptions; /* topic filters, subscribed at QoS 1 on every connect */
    size_t subscription_count;
    broker_message_fn on_message;
    broker_loop_fn on_loop_end; /* may be NULL */
    void *ctx;
} broker_link_config;

typedef struct broker_publish_options {
    const void *correlation_data; /* MQTT 5 only; NULL for none */
    size_t correlation_len;
    uint32_t message_expiry_s; /* MQTT 5 only; 0 for none */
} broker_publish_options;

__attribute__((warn_unused_result)) ferry_err broker_link_new(const broker_link_config *config,
                                                              broker_link **out);
/* Starts the network thread; the first connection is made from it. */
__attribute__((warn_unused_result)) ferry_err broker_link_start(broker_link *link);
/* Publishes at QoS 1. While the link is down the message waits in the
 * client's queue and goes out after the reconnect. */
__attribute__((warn_unused_result)) ferry_err
broker_link_publish(broker_link *link, const char *topic, const void *payload, size_t len,
                    const broker_publish_options *options);
/* Publishes at QoS 1 and waits up to timeout_ms for the broker's PUBACK of
 * this message: FERRY_OK when it arrived with a success reason code (MQTT 5
 * "no matching subscribers" included), FERRY_ERR_DENIED when the broker
 * refused it (MQTT 5 reason code >= 0x80, e.g. not authorised; an MQTT
 * 3.1.1 broker cannot say so), FERRY_ERR_TIMEOUT when no PUBACK came in
 * time, or broker_link_publish()'s errors. After a timeout the message
 * stays queued in the client and may still be delivered (at least once).
 * Must not be called from the link's own thread (its handlers), which is
 * the one that reads the PUBACK. */
__attribute__((warn_unused_result)) ferry_err
broker_link_publish_acked(broker_link *link, const char *topic, const void *payload, size_t len,
                          const broker_publish_options *options, int64_t timeout_ms);
/* Writes what is queued for the broker now, instead of at the network
 * thread's next turn (publishes from any thread are only queued, because
 * the client runs in threaded mode). Only from the link's own thread (its
 * handlers): ferryd sends a batch's answers before the batch's ledger
 * commit this way. Errors are left to the next turn, which sees them too. */
void broker_link_flush(broker_link *link);
/* How long, at most, the network thread's next wait for input may last
 * (milliseconds, at least 1; the default of 100 applies again after each
 * turn). Only from the link's own thread (its handlers): ferryd's on_loop_end
 * asks to be called back when its deferred ledger commit falls due. */
void broker_link_wake_within(broker_link *link, int ms);
/*
 * Pipelined acknowledged publishes: one thread publishes several QoS 1
 * messages into an ack set without waiting, then waits once for all their
 * PUBACKs and reads each message's outcome. Several messages are thus in
 * flight at once (libmosquitto sends at most the broker's Receive Maximum
 * unacknowledged and queues the rest), instead of one round trip each.
 * Messages on one link go out in the order they were published, so QoS 1
 * keeps their order.
 *
 * A set belongs to one thread (not the link's own: that one reads the
 * PUBACKs); several sets and publish_acked() callers may share a link.
 * Messages left without PUBACK when the set is reset or freed stay queued
 * in the client and may still be delivered (at least once).
 */
typedef struct broker_ack_set broker_ack_set;

/* A set for up to capacity (1..4096) messages between resets. It must be
 * freed before the link. */
__attribute__((warn_unused_result)) ferry_err broker_ack_set_new(broker_link *link, size_t capacity,
                                                                 broker_ack_set **out);
/* Safe on NULL. */
void broker_ack_set_free(broker_ack_set *set);
/* Publishes at QoS 1 as broker_link_publish() and remembers the message:
 * *index (may be NULL) receives its number in the set, 0, 1, ... in
 * publish order. FERRY_ERR_RANGE when the set holds capacity messages;
 * broker_link_publish()'s errors (then nothing is remembered). */
__attribute__((warn_unused_result)) ferry_err
broker_ack_set_publish(broker_ack_set *set, const char *topic, const void *payload, size_t len,
                       const broker_publish_options *options, size_t *index);
/* Waits until every message of the set has its PUBACK or timeout_ms has
 * passed. Returns how many are still without PUBACK. */
size_t broker_ack_set_wait(broker_ack_set *set, int64_t timeout_ms);
/* Message index's outcome so far, as broker_link_publish_acked() would
 * say it: FERRY_OK (PUBACK, success reason code), FERRY_ERR_DENIED (reason
 * code >= 0x80), FERRY_ERR_TIMEOUT (no PUBACK yet), FERRY_ERR_INVALID (no
 * such message). */
__attribute__((warn_unused_result)) ferry_err broker_ack_set_result(broker_ack_set *set,
                                                                    size_t index);
/* How many messages the set holds. */
size_t broker_ack_set_count(const broker_ack_set *set);
/* Forgets every message (late PUBACKs for them are ignored). */
void broker_ack_set_reset(broker_ack_set *set);

/* Waits up to timeout_ms for every QoS 1 publish to be acknowledged, then
 * disconnects and joins the network thread. */
void broker_link_stop(broker_link *link, int64_t timeout_ms);
void broker_link_free(broker_link *link);

bool broker_link_is_connected(const broker_link *link);
/* Counts since start, for logs and tests. */
uint64_t broker_link_connect_count(const broker_link *link);
/* The protocol of the current (or last) connection: 5 or 4 (3.1.1). */
int broker_link_protocol_version(const broker_link *link);

/* Next reconnect delay: min * 2^attempt capped at max, then "equal jitter"
 * (a uniform draw from [d/2, d]) so a fleet of ferryd does not reconnect in
 * step. random01 is in [0, 1). Exposed for tests. */
int64_t broker_backoff_ms(int64_t min_ms, int64_t max_ms, unsigned attempt, double random01);

#endif
