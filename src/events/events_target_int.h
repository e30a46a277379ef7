/*
 * events_target_int.h - the table of functions behind every events target
 * (curl's vtls pattern): one file per backend (target_webhook.c,
 * target_command.c, target_mqtt.c), each embedding `struct events_target`
 * as its first member so a target pointer converts to the backend's struct.
 *
 * Invariant: ops->deliver is called only with a cleaned-up (initialised)
 * events_delivery and valid arguments (checked in events_target.c); it
 * writes `out` only when it returns FERRY_OK.
 */
#ifndef FERRY_EVENTS_TARGET_INT_H
#define FERRY_EVENTS_TARGET_INT_H

#include "events.h"

typedef struct events_target_ops {
    const char *kind;
    ferry_err (*deliver)(events_target *target, const char *event_id, const char *json, size_t len,
                         int64_t timeout_ms, events_delivery *out);
    void (*destroy)(events_target *target); /* frees the backend's own fields */
} events_target_ops;

struct events_target {
    const events_target_ops *ops;
    char *name; /* owned */
};

/* Sets up the base; FERRY_ERR_NOMEM if the name cannot be copied. */
__attribute__((warn_unused_result)) ferry_err
events_target_base_init(events_target *target, const events_target_ops *ops, const char *name);

/* printf into d->detail (truncated to fit). */
__attribute__((format(printf, 2, 3))) void events_delivery_detail(events_delivery *d,
                                                                  const char *fmt, ...);

#endif
