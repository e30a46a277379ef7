/*
 * target_mqtt.c - the MQTT topic target: the event published at QoS 1
 * through ferryd's broker link, delivered when the broker says PUBACK.
 *
 * Invariant: "delivered" means the broker acknowledged this very message
 * (broker_link_publish_acked), not merely that it was queued. A message
 * whose acknowledgement does not come in time stays queued in the link and
 * may still arrive; the retry then sends it again under the same event id,
 * which is the at-least-once contract processors deduplicate on.
 */
#include "events_target_int.h"

#include <stdlib.h>
#include <string.h>

#include "broker/broker_link.h"

#define MQTT_MAX_TOPIC_LEN 1024

typedef struct mqtt_target {
    events_target base;
    broker_link *link;
    char *topic;
} mqtt_target;

static ferry_err mqtt_deliver(events_target *target, const char *event_id, const char *json,
                              size_t len, int64_t timeout_ms, events_delivery *out)
{
    (void)event_id;
    mqtt_target *t = (mqtt_target *)target;
    ferry_err err = broker_link_publish_acked(t->link, t->topic, json, len, NULL, timeout_ms);
    switch (err) {
    case FERRY_OK:
        out->outcome = EVENTS_DELIVERED;
        events_delivery_detail(out, "PUBACK");
        break;
    case FERRY_ERR_DENIED:
        out->outcome = EVENTS_FAILED;
        events_delivery_detail(out, "broker refused the publish to %s", t->topic);
        break;
    case FERRY_ERR_TOO_LARGE:
        out->outcome = EVENTS_FAILED;
        events_delivery_detail(out, "event too large for the broker");
        break;
    case FERRY_ERR_NOMEM:
        return err;
    default:
        out->outcome = EVENTS_RETRY_LATER;
        events_delivery_detail(out, "no PUBACK: %s", ferry_err_str(err));
        break;
    }
    return FERRY_OK;
}

static void mqtt_destroy(events_target *target)
{
    mqtt_target *t = (mqtt_target *)target;
    free(t->topic);
    free(t);
}

static const events_target_ops mqtt_ops = {
    .kind = "mqtt",
    .deliver = mqtt_deliver,
    .destroy = mqtt_destroy,
};

ferry_err events_mqtt_new(const events_mqtt_config *config, events_target **out)
{
    ferry_err result = FERRY_OK;
    mqtt_target *t = NULL;
    if (config == NULL || config->link == NULL || config->topic == NULL ||
        config->topic[0] == '\0' ||
        strnlen(config->topic, MQTT_MAX_TOPIC_LEN + 1) > MQTT_MAX_TOPIC_LEN ||
        strpbrk(config->topic, "+#") != NULL)
        return FERRY_ERR_INVALID;
    t = calloc(1, sizeof *t);
    if (t == NULL)
        return FERRY_ERR_NOMEM;
    result = events_target_base_init(&t->base, &mqtt_ops, config->name);
    if (result != FERRY_OK)
        goto out;
    t->link = config->link;
    t->topic = strdup(config->topic);
    if (t->topic == NULL) {
        result = FERRY_ERR_NOMEM;
        goto out;
    }
    *out = &t->base;
    t = NULL;
out:
    if (t != NULL) {
        char *name = t->base.name;
        mqtt_destroy(&t->base);
        free(name);
    }
    return result;
}
