/*
 * broker_config.h - generates the Mosquitto 2.0 configuration and ACL that
 * match a Ferry PKI: mutual TLS with the PKI's CA and CRL, the certificate's
 * CN as the MQTT username, and an ACL that confines each device to its own
 * topics under <prefix>/<device>/ while ferryd may use all of <prefix>/#.
 *
 * The per-device topics are one table in broker_config.c
 * (broker_device_topics); later features add rows there.
 */
#ifndef FERRY_PKI_BROKER_CONFIG_H
#define FERRY_PKI_BROKER_CONFIG_H

#include <stddef.h>

#include "ferry/ferry_error.h"

#define BROKER_DEFAULT_PORT 8883
#define BROKER_DEFAULT_PREFIX "ferry"
/* The brief's cap on one MQTT message (AWS IoT Core's limit): payload. */
#define BROKER_MESSAGE_MAX (128u * 1024u)
/* A whole packet may add the topic, properties and headers to that. */
#define BROKER_PACKET_MAX (BROKER_MESSAGE_MAX + 8u * 1024u)

typedef enum broker_access {
    BROKER_DEVICE_WRITE, /* the device publishes, ferryd reads */
    BROKER_DEVICE_READ,  /* ferryd publishes, the device reads */
} broker_access;

typedef struct broker_topic {
    const char *suffix; /* after <prefix>/<device>/ */
    broker_access access;
} broker_topic;

typedef struct broker_config_options {
    const char *out_dir;         /* where mosquitto.conf and acl go */
    const char *pki_dir;         /* the `ferryctl pki init` directory */
    const char *bind_address;    /* NULL: all interfaces */
    int port;                    /* 1..65535 */
    const char *prefix;          /* the topic root, one level */
    const char *persistence_dir; /* NULL: <out_dir>/persistence */
    const char *run_as_user;     /* NULL: Mosquitto's default ("mosquitto") */
} broker_config_options;

/* The table of per-device topics and its length. */
const broker_topic *broker_device_topics(size_t *count);

/* Writes out_dir/mosquitto.conf and out_dir/acl (replacing older versions
 * atomically) and creates the persistence directory (0700). All paths in
 * the configuration are absolute. */
__attribute__((warn_unused_result)) ferry_err
broker_config_write(const broker_config_options *opts, char *err, size_t err_size);

#endif
