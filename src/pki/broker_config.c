/*
 * broker_config.c - writes mosquitto.conf and the ACL file for a Ferry
 * broker; see broker_config.h.
 *
 * Invariants: every value written into the configuration has been checked
 * not to contain whitespace or control characters (a newline in a path would
 * inject configuration lines); every path is absolute (Mosquitto resolves
 * relative paths against its working directory, not the file's); the ACL
 * grants a device only the rows of broker_device_topics, each under its own
 * <prefix>/%u/ (Mosquitto substitutes %u with the username, which is the
 * certificate's CN, and refuses usernames containing + # or /, so %u is
 * always exactly one topic level); the client id is forced to the username,
 * so one certificate is one MQTT session and no client can take over
 * another's; every unrevoked ferryd identity of the PKI (ferryd,
 * ferryd-SUFFIX) gets ferryd's rights, and device names can never be
 * ferryd identities (pki_name_check).
 */
#include "broker_config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/buf.h"
#include "pki.h"
#include "pki_int.h"

#define CONF_MAX (16u * 1024u)

/* Every topic a device has, relative to <prefix>/<device>/. A device may
 * publish only on WRITE rows and receive only from READ rows; ferryd has
 * both directions on everything under <prefix>/. */
static const broker_topic device_topics[] = {
    {"upload/request", BROKER_DEVICE_WRITE},
    {"upload/response", BROKER_DEVICE_READ},
    /* MQTT 5 Response Topics a device may choose for itself (e.g. one per
     * session): ferryd answers on any topic under the device's own prefix,
     * but the device can read only these. */
    {"upload/response/#", BROKER_DEVICE_READ},
};

const broker_topic *broker_device_topics(size_t *count)
{
    *count = sizeof device_topics / sizeof device_topics[0];
    return device_topics;
}

/* A path or address safe to write as one configuration token. */
static bool is_plain_token(const char *s)
{
    if (s == NULL || *s == '\0')
        return false;
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++)
        if (*p <= ' ' || *p == 0x7f || *p == '#')
            return false;
    return true;
}

/* The topic prefix: one topic level, same characters as a device name, and
 * not starting with '$' (reserved by MQTT for broker topics). */
static bool is_valid_prefix(const char *s)
{
    size_t len = strnlen(s, 65);
    if (len == 0 || len > 64 || strcmp(s, ".") == 0 || strcmp(s, "..") == 0)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

/* A POSIX user name as useradd accepts it. */
static bool is_valid_user(const char *s)
{
    size_t len = strnlen(s, 33);
    if (len == 0 || len > 32 || !((s[0] >= 'a' && s[0] <= 'z') || s[0] == '_'))
        return false;
    for (size_t i = 1; i < len; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-'))
            return false;
    }
    return true;
}

/* Resolves path to an absolute, existing path in out (PATH_MAX). */
static ferry_err absolute(const char *path, char *out, char *err, size_t err_size)
{
    if (realpath(path, out) == NULL) {
        snprintf(err, err_size, "%s: %s", path, strerror(errno));
        return errno == ENOENT ? FERRY_ERR_NOT_FOUND : FERRY_ERR_IO;
    }
    if (!is_plain_token(out)) {
        snprintf(err, err_size, "%s: paths with spaces or control characters cannot be "
                                "written to mosquitto.conf", out);
        return FERRY_ERR_INVALID;
    }
    return FERRY_OK;
}

/* The PKI files the broker reads must exist now, not at broker start. */
static ferry_err pki_file(const char *pki_abs, const char *name, char *out, char *err,
                          size_t err_size)
{
    if (pki_path(out, PATH_MAX, pki_abs, name) != FERRY_OK) {
        snprintf(err, err_size, "%s: path too long", pki_abs);
        return FERRY_ERR_TOO_LARGE;
    }
    if (access(out, R_OK) != 0) {
        snprintf(err, err_size, "%s: %s (is --pki a `ferryctl pki init` directory?)", out,
                 strerror(errno));
        return FERRY_ERR_NOT_FOUND;
    }
    return FERRY_OK;
}

static ferry_err build_conf(ferry_buf *b, const broker_config_options *o, const char *pki_abs,
                            const char *out_abs, const char *persist_abs, char *err,
                            size_t err_size)
{
    char ca[PATH_MAX], cert[PATH_MAX], key[PATH_MAX], crl[PATH_MAX], acl[PATH_MAX];
    ferry_err result = pki_file(pki_abs, "ca.pem", ca, err, err_size);
    if (result == FERRY_OK)
        result = pki_file(pki_abs, "broker.pem", cert, err, err_size);
    if (result == FERRY_OK)
        result = pki_file(pki_abs, "broker.key", key, err, err_size);
    if (result == FERRY_OK)
        result = pki_file(pki_abs, "crl.pem", crl, err, err_size);
    if (result != FERRY_OK)
        return result;
    if (pki_path(acl, sizeof acl, out_abs, "acl") != FERRY_OK)
        return FERRY_ERR_TOO_LARGE;

    result = ferry_buf_appendf(
        b,
        "# mosquitto.conf for a Ferry broker, generated by `ferryctl broker-config`.\n"
        "# Regenerate it rather than editing it; see docs/pki.md.\n"
        "\n"
        "# One set of security settings for all listeners: there is only one.\n"
        "per_listener_settings false\n"
        "\n"
        "# Sessions and queued QoS 1 messages survive a restart of the broker.\n"
        "persistence true\n"
        "persistence_location %s/\n"
        "autosave_interval 60\n"
        "# While a client with a persistent session is away (ferryd restarting,\n"
        "# a device offline), the broker queues what is published for it.\n"
        "# Mosquitto's default keeps 1,000 messages and drops the rest, and a\n"
        "# fleet can send more requests than that while ferryd restarts. The\n"
        "# byte cap bounds the memory one away client can take.\n"
        "max_queued_messages 100000\n"
        "max_queued_bytes 268435456\n"
        "# QoS 1 messages in flight per client, both ways (Mosquitto 2 also\n"
        "# announces it as its MQTT 5 Receive Maximum). The default, 20, is\n"
        "# the whole window of ferryd's pipelined event publishing and of the\n"
        "# requests the broker hands ferryd at once.\n"
        "max_inflight_messages 256\n"
        "\n"
        "# The brief's cap: no MQTT message over 128 KB. max_packet_size also\n"
        "# covers the topic and MQTT 5 properties of the largest message.\n"
        "message_size_limit %u\n"
        "max_packet_size %u\n"
        "\n"
        "# Only clients with a certificate from the Ferry CA; the certificate's\n"
        "# CN is the MQTT username that the ACL's %%u stands for.\n"
        "allow_anonymous false\n"
        "acl_file %s\n"
        "\n"
        "log_dest stderr\n"
        "log_type error\n"
        "log_type warning\n"
        "log_type notice\n"
        "log_type information\n"
        "log_timestamp_format %%Y-%%m-%%dT%%H:%%M:%%S\n"
        "connection_messages true\n"
        "\n",
        persist_abs, BROKER_MESSAGE_MAX, BROKER_PACKET_MAX, acl);
    if (result == FERRY_OK && o->run_as_user != NULL)
        result = ferry_buf_appendf(b,
                                   "# Started as root, Mosquitto switches to this user before it\n"
                                   "# reads the ACL, certificates and key: they must be readable\n"
                                   "# by it.\n"
                                   "user %s\n\n",
                                   o->run_as_user);
    if (result != FERRY_OK)
        return result;
    if (o->bind_address != NULL)
        result = ferry_buf_appendf(b, "listener %d %s\n", o->port, o->bind_address);
    else
        result = ferry_buf_appendf(b, "listener %d\n", o->port);
    if (result != FERRY_OK)
        return result;
    return ferry_buf_appendf(b,
                             "cafile %s\n"
                             "certfile %s\n"
                             "keyfile %s\n"
                             "# The CRL is read at start and on SIGHUP: after "
                             "`ferryctl pki revoke`,\n"
                             "# send the broker a SIGHUP (or restart it).\n"
                             "crlfile %s\n"
                             "# TLS 1.2 is the lowest version Mosquitto 2 can be asked "
                             "for; 1.3 is\n"
                             "# negotiated when both sides have it.\n"
                             "tls_version tlsv1.2\n"
                             "require_certificate true\n"
                             "use_identity_as_username true\n"
                             "# The client id is the username too: otherwise a device could\n"
                             "# connect with another device's client id, cut that device off\n"
                             "# and discard its queued messages (session takeover).\n"
                             "use_username_as_clientid true\n"
                             "set_tcp_nodelay true\n",
                             ca, cert, key, crl);
}

/* ferryd's rights, once for every valid ferryd identity in the PKI's
 * index: "ferryd" and each "ferryd-SUFFIX" from `ferryctl pki ferryd`. */
static ferry_err build_acl(ferry_buf *b, const char *prefix, const pki_index *index)
{
    ferry_err result = ferry_buf_appendf(
        b,
        "# ACL for a Ferry broker, generated by `ferryctl broker-config`.\n"
        "# %%u is the username, i.e. the CN of the client certificate.\n"
        "#\n"
        "# Devices: each only on its own topics under %s/<device>/.\n",
        prefix);
    for (size_t i = 0; result == FERRY_OK && i < sizeof device_topics / sizeof device_topics[0];
         i++) {
        const broker_topic *t = &device_topics[i];
        result = ferry_buf_appendf(b, "pattern %s %s/%%u/%s\n",
                                   t->access == BROKER_DEVICE_WRITE ? "write" : "read", prefix,
                                   t->suffix);
    }
    if (result == FERRY_OK)
        result = ferry_buf_appendf(b, "\n# ferryd: every device's topics, in both directions.\n");
    /* Shared subscriptions ($share/ferryd/<filter>) are checked against the
     * filter part, so ferryd's grant covers them. */
    for (size_t i = 0; result == FERRY_OK && i < index->count; i++) {
        const pki_index_entry *e = &index->entries[i];
        if (e->revoked || !pki_is_ferryd_identity(e->name))
            continue;
        result = ferry_buf_appendf(b, "user %s\ntopic readwrite %s/#\n", e->name, prefix);
    }
    return result;
}

ferry_err broker_config_write(const broker_config_options *o, char *err, size_t err_size)
{
    char out_abs[PATH_MAX], pki_abs[PATH_MAX], persist_abs[PATH_MAX], path[PATH_MAX];
    ferry_buf conf, acl;
    pki_index index = {NULL, 0};
    ferry_buf_init(&conf, CONF_MAX);
    ferry_buf_init(&acl, CONF_MAX);
    ferry_err result = FERRY_ERR_INVALID;
    err[0] = '\0';
    if (o->out_dir == NULL || o->pki_dir == NULL) {
        snprintf(err, err_size, "an output directory and a PKI directory are needed");
        goto out;
    }
    if (o->port < 1 || o->port > 65535) {
        snprintf(err, err_size, "--port must be 1 to 65535");
        result = FERRY_ERR_RANGE;
        goto out;
    }
    if (o->prefix == NULL || !is_valid_prefix(o->prefix)) {
        snprintf(err, err_size, "--prefix must be one topic level of A-Z a-z 0-9 . _ -");
        goto out;
    }
    if (o->run_as_user != NULL && !is_valid_user(o->run_as_user)) {
        snprintf(err, err_size, "--user must be a user name ([a-z_][a-z0-9_-]*)");
        goto out;
    }
    if (o->bind_address != NULL) {
        unsigned char addr[16];
        if (inet_pton(AF_INET, o->bind_address, addr) != 1 &&
            inet_pton(AF_INET6, o->bind_address, addr) != 1) {
            snprintf(err, err_size, "--bind '%.64s' is not an IP address", o->bind_address);
            goto out;
        }
    }
    if (mkdir(o->out_dir, 0755) != 0 && errno != EEXIST) {
        snprintf(err, err_size, "%s: cannot create: %s", o->out_dir, strerror(errno));
        result = FERRY_ERR_IO;
        goto out;
    }
    result = absolute(o->out_dir, out_abs, err, err_size);
    if (result != FERRY_OK)
        goto out;
    result = absolute(o->pki_dir, pki_abs, err, err_size);
    if (result != FERRY_OK)
        goto out;
    const char *persist = o->persistence_dir;
    if (persist == NULL) {
        if (pki_path(path, sizeof path, out_abs, "persistence") != FERRY_OK) {
            result = FERRY_ERR_TOO_LARGE;
            snprintf(err, err_size, "%s: path too long", out_abs);
            goto out;
        }
        persist = path;
    }
    /* The persistence file holds queued messages: readable by the broker
     * only. */
    if (mkdir(persist, 0700) != 0 && errno != EEXIST) {
        snprintf(err, err_size, "%s: cannot create: %s", persist, strerror(errno));
        result = FERRY_ERR_IO;
        goto out;
    }
    result = absolute(persist, persist_abs, err, err_size);
    if (result != FERRY_OK)
        goto out;

    /* The configuration first: it checks that --pki holds a CA. */
    result = build_conf(&conf, o, pki_abs, out_abs, persist_abs, err, err_size);
    if (result == FERRY_OK)
        result = pki_index_load(pki_abs, &index, err, err_size);
    if (result == FERRY_OK)
        result = build_acl(&acl, o->prefix, &index);
    if (result != FERRY_OK) {
        if (err[0] == '\0')
            snprintf(err, err_size, "cannot build the configuration: %s",
                     ferry_err_str(result));
        goto out;
    }
    if (pki_path(path, sizeof path, out_abs, "acl") != FERRY_OK ||
        (result = pki_write_replace(path, ferry_buf_str(&acl), acl.len, 0644)) != FERRY_OK) {
        snprintf(err, err_size, "%s: cannot write: %s", path, ferry_err_str(result));
        goto out;
    }
    if (pki_path(path, sizeof path, out_abs, "mosquitto.conf") != FERRY_OK ||
        (result = pki_write_replace(path, ferry_buf_str(&conf), conf.len, 0644)) != FERRY_OK) {
        snprintf(err, err_size, "%s: cannot write: %s", path, ferry_err_str(result));
        goto out;
    }
out:
    pki_index_cleanup(&index);
    ferry_buf_cleanup(&conf);
    ferry_buf_cleanup(&acl);
    return result;
}
