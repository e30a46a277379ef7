/*
 * events_target.c - what every target shares: argument checks before a
 * backend's deliver(), the delivery record, names, and freeing.
 *
 * Invariant: a backend never sees a NULL or oversized event, nor an
 * events_delivery with a result left over from an earlier attempt.
 */
#include "events_target_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void events_delivery_init(events_delivery *d)
{
    memset(d, 0, sizeof *d);
    d->outcome = EVENTS_RETRY_LATER;
}

void events_delivery_cleanup(events_delivery *d)
{
    if (d == NULL)
        return;
    free(d->result_json);
    events_delivery_init(d);
}

const char *events_outcome_name(events_outcome outcome)
{
    switch (outcome) {
    case EVENTS_DELIVERED:
        return "delivered";
    case EVENTS_RETRY_LATER:
        return "retry";
    case EVENTS_FAILED:
        return "failed";
    }
    return "unknown";
}

void events_delivery_detail(events_delivery *d, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d->detail, sizeof d->detail, fmt, ap);
    va_end(ap);
}

ferry_err events_target_base_init(events_target *target, const events_target_ops *ops,
                                  const char *name)
{
    target->ops = ops;
    target->name = strdup(name != NULL && name[0] != '\0' ? name : ops->kind);
    return target->name != NULL ? FERRY_OK : FERRY_ERR_NOMEM;
}

ferry_err events_target_deliver(events_target *target, const char *event_id, const char *json,
                                size_t len, int64_t timeout_ms, events_delivery *out)
{
    if (target == NULL || event_id == NULL || json == NULL || out == NULL || timeout_ms <= 0)
        return FERRY_ERR_INVALID;
    if (len > EVENTS_MAX_EVENT_LEN || strlen(event_id) > EVENTS_MAX_FIELD_LEN)
        return FERRY_ERR_TOO_LARGE;
    events_delivery d;
    events_delivery_init(&d);
    ferry_err result = target->ops->deliver(target, event_id, json, len, timeout_ms, &d);
    if (result != FERRY_OK) {
        events_delivery_cleanup(&d);
        return result;
    }
    events_delivery_cleanup(out);
    *out = d;
    return FERRY_OK;
}

const char *events_target_name(const events_target *target)
{
    return target->name;
}

const char *events_target_kind(const events_target *target)
{
    return target->ops->kind;
}

void events_target_free(events_target *target)
{
    if (target == NULL)
        return;
    char *name = target->name;
    target->ops->destroy(target);
    free(name);
}
