/*
 * grant_service.h - turns one upload request into one answer.
 *
 * This is the "rules engine + Lambda" of the cloud pattern as a function:
 * given the topic and payload of a request (and its MQTT 5 properties), it
 * validates the request, applies the device's policy, records the grant or
 * the refusal in the ledger, signs the grant, and returns the answer to
 * publish and where to publish it. It does no network I/O, so it is tested
 * without a broker; ferryd calls it from the broker link's thread.
 *
 * Trust: the device id is the topic level after the prefix, which the
 * broker's ACL ties to the device's certificate; nothing in the payload can
 * change it. A Response Topic is honoured only under <prefix>/<device>/.
 *
 * Thread-safety: one service per thread (it owns a signer and borrows a
 * ledger handle, neither of which is thread-safe).
 */
#ifndef FERRY_DAEMON_GRANT_SERVICE_H
#define FERRY_DAEMON_GRANT_SERVICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ferry/ferry_error.h"
#include "grants/grants.h"
#include "ledger/ledger.h"

#define GRANT_ANSWER_MAX_BYTES (128 * 1024) /* the brief's cap on every message */
#define GRANT_TOPIC_MAX        512

typedef struct grant_service grant_service;

typedef struct grant_service_config {
    const char *prefix;   /* "ferry" */
    const char *endpoint; /* store base URL as devices see it */
    const char *bucket;
    const char *region;
    const char *access_key;
    const char *secret;        /* copied into the signer; the caller wipes its own copy */
    const grant_policy *fleet; /* fleet defaults; copied */
    size_t rate_table_size;
    ledger *ledger; /* borrowed; must outlive the service */
} grant_service_config;

typedef struct grant_service_input {
    const char *topic;
    const void *payload;
    size_t payload_len;
    bool is_v5;
    const char *response_topic; /* MQTT 5 Response Topic, NULL if none */
} grant_service_input;

typedef struct grant_answer {
    char topic[GRANT_TOPIC_MAX + 1];
    char *json; /* owned; NUL-terminated */
    size_t json_len;
    uint32_t message_expiry_s; /* never later than the grant's expiry */
    bool granted;
    grant_reject_code code; /* GRANT_REJECT_NONE when granted */
} grant_answer;

__attribute__((warn_unused_result)) ferry_err grant_service_new(const grant_service_config *cfg,
                                                                grant_service **out);
void grant_service_free(grant_service *svc);

/*
 * Handles one request. FERRY_OK: *answer is filled (a grant or a
 * rejection) and must be published to answer->topic, then cleaned up.
 * FERRY_ERR_INVALID: the topic is not a request topic of a valid device,
 * so there is nobody to answer; nothing was written. Other errors: out of
 * memory. now is UTC seconds; now_mono_ns feeds the rate limiter.
 */
__attribute__((warn_unused_result)) ferry_err grant_service_handle(grant_service *svc,
                                                                   const grant_service_input *in,
                                                                   int64_t now, int64_t now_mono_ns,
                                                                   grant_answer *answer);
void grant_answer_cleanup(grant_answer *answer);

#define GRANT_BATCH_MAX 128 /* requests handled per ledger transaction, at most */

/*
 * Handles n (1..GRANT_BATCH_MAX) requests as one batch: each is checked on
 * its own, and the grants of the whole batch are recorded in ONE ledger
 * transaction (group commit), which is what lets one ferryd keep up with a
 * fleet. results[i] and answers[i] are as for grant_service_handle(); the
 * function itself fails only on bad arguments.
 */
__attribute__((warn_unused_result)) ferry_err
grant_service_handle_batch(grant_service *svc, const grant_service_input *in, size_t n, int64_t now,
                           int64_t now_mono_ns, grant_answer *answers, ferry_err *results);

/*
 * grant_service_handle_batch in two steps, for a caller that publishes the
 * answers before the ledger commit (ferryd, when the embedded store is the
 * one that enforces grants).
 *
 * decide_batch does all of handle_batch's work inside one open ledger
 * write transaction and leaves it open: the answers are final unless the
 * commit fails. commit_batch ends it. Until then the batch's grants are
 * invisible to other ledger handles, and a store lookup of one of them
 * waits for the commit (ledger_write_begin), so a device that is quicker
 * than the commit is not refused. If the commit fails, every grant of the
 * batch is void: never recorded, refused by the embedded store as an
 * unknown grant, so the device asks again; commit_batch returns the error,
 * logs it, writes the refusals' audit rows again and sets *voided (may be
 * NULL) to the number of grants voided.
 *
 * Why this is safe only with the embedded store: a grant is usable only
 * once it is in the ledger there (it fails closed). An external store
 * honours the signed URL whatever the ledger says, so with it ferryd
 * commits first (handle_batch) and an unrecorded grant can never be used.
 * Between the two calls nothing else may use the service or its ledger.
 */
__attribute__((warn_unused_result)) ferry_err
grant_service_decide_batch(grant_service *svc, const grant_service_input *in, size_t n,
                           int64_t now, int64_t now_mono_ns, grant_answer *answers,
                           ferry_err *results);
__attribute__((warn_unused_result)) ferry_err grant_service_commit_batch(grant_service *svc,
                                                                         size_t *voided);

/*
 * Group commit across batches (ferryd with the embedded store, [ferryd]
 * commit_delay): after its answers have left, a decided batch is staged
 * (stage_batch): it stays in the still-open transaction (its refusals'
 * audit rows are there already) and the next decide_batch continues in
 * it, without a BEGIN of its own, counting the staged grants in its
 * limits; commit_batch later inserts the grants of every staged batch at
 * once and commits. So one commit, one set of WAL page writes and one
 * round of lock calls serve several requests, and nothing but the
 * bookkeeping follows each answer. The rules of decide/commit apply to the
 * whole span: a lookup of the store waits for the commit (so the caller
 * bounds how long it defers it), and if the commit fails every grant held
 * is void (commit_batch then returns the error, logs it, writes the
 * refusals' audit rows again and sets *voided). stage_batch commits by
 * itself when the next batch might not fit (2 * GRANT_BATCH_MAX requests
 * held), and can then fail the same way. txn_open says whether a
 * transaction is open and since when (the now_mono_ns of the decide that
 * opened it).
 */
__attribute__((warn_unused_result)) ferry_err grant_service_stage_batch(grant_service *svc,
                                                                        size_t *voided);
bool grant_service_txn_open(const grant_service *svc, int64_t *since_mono_ns);

/* Extracts the device id from "<prefix>/<device>/upload/request".
 * FERRY_ERR_INVALID if the topic has another shape or the id is invalid. */
__attribute__((warn_unused_result)) ferry_err
grant_service_topic_device(const char *prefix, const char *topic, char *device, size_t device_size);

#endif
