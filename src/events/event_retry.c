/*
 * event_retry.c - when to try a failed delivery again, and when to stop.
 *
 * Capped exponential backoff with "equal jitter" (broker_backoff_ms, the
 * same curve the broker link reconnects with), so targets that come back
 * after an outage are not hit by every pending event at the same instant.
 * Pure: the clock and the random draw are inputs, which is what makes the
 * policy testable and the outbox's schedule reproducible in tests.
 */
#include "events.h"

#include "broker/broker_link.h"

events_next events_next_attempt(const events_retry_policy *policy, unsigned attempts,
                                int64_t now_ms, double random01, int64_t *next_ms)
{
    if (policy == NULL || attempts >= policy->max_attempts)
        return EVENTS_NEXT_DEAD_LETTER;
    /* attempts counts failures so far; the first retry waits about min. */
    unsigned exponent = attempts > 0 ? attempts - 1 : 0;
    if (exponent > 62)
        exponent = 62;
    int64_t delay = broker_backoff_ms(policy->min_ms, policy->max_ms, exponent, random01);
    *next_ms = now_ms > INT64_MAX - delay ? INT64_MAX : now_ms + delay;
    return EVENTS_NEXT_RETRY;
}
