/*
 * events_config.c - reading and checking [target.NAME] sections, and
 * building targets from them. See events_config.h for the keys.
 *
 * Values are parsed with the config loader's own parsers (sizes,
 * durations, booleans), so a target section reads like the rest of
 * ferryd.ini. Whether a key fits the target's type can only be decided
 * once the whole section is read (type may come last), so that check is
 * in events_config_check().
 */
#include "events_config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "common/buf.h"
#include "common/config.h"

#define MAX_VALUE_LEN 4096

enum key_id {
    K_TYPE,
    K_URL,
    K_CA_FILE,
    K_SECRET_FILE,
    K_CONNECT_TIMEOUT,
    K_COMMAND,
    K_ARGS,
    K_KILL_GRACE,
    K_STDOUT_MAX,
    K_SEND_PROCESSED,
    K_TOPIC,
    K_TIMEOUT,
    K_MAX_ATTEMPTS,
    K_RETRY_MIN,
    K_RETRY_MAX,
};

/* Which type each key belongs to (UNSET: every type). */
static const struct {
    const char *name;
    events_target_type type;
} keys[] = {
    [K_TYPE] = {"type", EVENTS_TARGET_UNSET},
    [K_URL] = {"url", EVENTS_TARGET_WEBHOOK},
    [K_CA_FILE] = {"ca_file", EVENTS_TARGET_WEBHOOK},
    [K_SECRET_FILE] = {"secret_file", EVENTS_TARGET_WEBHOOK},
    [K_CONNECT_TIMEOUT] = {"connect_timeout", EVENTS_TARGET_WEBHOOK},
    [K_COMMAND] = {"command", EVENTS_TARGET_COMMAND},
    [K_ARGS] = {"args", EVENTS_TARGET_COMMAND},
    [K_KILL_GRACE] = {"kill_grace", EVENTS_TARGET_COMMAND},
    [K_STDOUT_MAX] = {"stdout_max", EVENTS_TARGET_COMMAND},
    [K_SEND_PROCESSED] = {"send_processed", EVENTS_TARGET_COMMAND},
    [K_TOPIC] = {"topic", EVENTS_TARGET_MQTT},
    [K_TIMEOUT] = {"timeout", EVENTS_TARGET_UNSET},
    [K_MAX_ATTEMPTS] = {"max_attempts", EVENTS_TARGET_UNSET},
    [K_RETRY_MIN] = {"retry_min", EVENTS_TARGET_UNSET},
    [K_RETRY_MAX] = {"retry_max", EVENTS_TARGET_UNSET},
};
#define KEY_COUNT (sizeof keys / sizeof keys[0])

const char *events_target_type_name(events_target_type type)
{
    switch (type) {
    case EVENTS_TARGET_WEBHOOK:
        return "webhook";
    case EVENTS_TARGET_COMMAND:
        return "command";
    case EVENTS_TARGET_MQTT:
        return "mqtt";
    case EVENTS_TARGET_UNSET:
        break;
    }
    return "unset";
}

__attribute__((format(printf, 3, 4))) static void errf(char *err, size_t err_size, const char *fmt,
                                                       ...)
{
    if (err == NULL || err_size == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, err_size, fmt, ap);
    va_end(ap);
}

void events_config_init(events_config *config)
{
    memset(config, 0, sizeof *config);
}

static void spec_cleanup(events_target_spec *s)
{
    free(s->name);
    free(s->url);
    free(s->ca_file);
    free(s->secret_file);
    free(s->topic);
    for (size_t i = 0; s->argv[i] != NULL; i++)
        free(s->argv[i]);
    memset(s, 0, sizeof *s);
}

void events_config_cleanup(events_config *config)
{
    if (config == NULL)
        return;
    for (size_t i = 0; i < config->count; i++)
        spec_cleanup(&config->targets[i]);
    config->count = 0;
}

static bool valid_name(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > EVENTS_MAX_TARGET_NAME)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_'))
            return false;
    }
    return true;
}

/* The spec for NAME, created on first sight. */
static events_target_spec *spec_for(events_config *c, const char *name, char *err, size_t err_size)
{
    for (size_t i = 0; i < c->count; i++)
        if (strcmp(c->targets[i].name, name) == 0)
            return &c->targets[i];
    if (c->count >= EVENTS_MAX_TARGETS) {
        errf(err, err_size, "[target.%s]: more than %d targets", name, EVENTS_MAX_TARGETS);
        return NULL;
    }
    events_target_spec *s = &c->targets[c->count];
    memset(s, 0, sizeof *s);
    s->name = strdup(name);
    if (s->name == NULL) {
        errf(err, err_size, "out of memory");
        return NULL;
    }
    c->count++;
    return s;
}

static int set_string(char **field, const char *value)
{
    char *copy = strdup(value);
    if (copy == NULL)
        return -1;
    free(*field);
    *field = copy;
    return 0;
}

/* "args = a b  c": words separated by spaces or tabs; no quoting, no shell. */
static int set_args(events_target_spec *s, const char *value, char *err, size_t err_size)
{
    size_t n = 1; /* argv[0] is the command, set by its own key */
    for (const char *p = value; *p != '\0';) {
        p += strspn(p, " \t");
        size_t len = strcspn(p, " \t");
        if (len == 0)
            break;
        if (n > EVENTS_MAX_ARGS) {
            errf(err, err_size, "[target.%s] args: more than %d arguments", s->name,
                 EVENTS_MAX_ARGS);
            return -1;
        }
        char *word = strndup(p, len);
        if (word == NULL) {
            errf(err, err_size, "out of memory");
            return -1;
        }
        s->argv[n++] = word;
        p += len;
    }
    return 0;
}

static int set_duration(events_target_spec *s, const char *key, const char *value, int64_t min,
                        int64_t max, int64_t *field, char *err, size_t err_size)
{
    int64_t ms = 0;
    if (ferry_parse_duration_ms(value, &ms) != FERRY_OK || ms < min || ms > max) {
        errf(err, err_size, "[target.%s] %s: \"%s\" is not a duration from %lld ms to %lld ms",
             s->name, key, value, (long long)min, (long long)max);
        return -1;
    }
    *field = ms;
    return 0;
}

int events_config_section(void *ctx, const char *section, const char *name, const char *value,
                          char *err, size_t err_size)
{
    events_config *c = ctx;
    if (strncmp(section, "target.", 7) != 0) {
        errf(err, err_size, "[%s]: unknown section", section);
        return -1;
    }
    const char *tname = section + 7;
    if (!valid_name(tname)) {
        errf(err, err_size, "[%s]: a target name is 1-%d letters, digits, '-' or '_'", section,
             EVENTS_MAX_TARGET_NAME);
        return -1;
    }
    if (strlen(value) > MAX_VALUE_LEN) {
        errf(err, err_size, "[%s] %s: value longer than %d bytes", section, name, MAX_VALUE_LEN);
        return -1;
    }
    size_t k = 0;
    while (k < KEY_COUNT && strcmp(keys[k].name, name) != 0)
        k++;
    if (k == KEY_COUNT) {
        errf(err, err_size, "[%s] %s: unknown option", section, name);
        return -1;
    }
    events_target_spec *s = spec_for(c, tname, err, err_size);
    if (s == NULL)
        return -1;
    if (s->set_mask & (1u << k)) {
        errf(err, err_size, "[%s] %s: set twice", section, name);
        return -1;
    }
    s->set_mask |= 1u << k;

    int64_t n = 0;
    bool b = false;
    switch ((enum key_id)k) {
    case K_TYPE:
        s->type = strcmp(value, "webhook") == 0   ? EVENTS_TARGET_WEBHOOK
                  : strcmp(value, "command") == 0 ? EVENTS_TARGET_COMMAND
                  : strcmp(value, "mqtt") == 0    ? EVENTS_TARGET_MQTT
                                                  : EVENTS_TARGET_UNSET;
        if (s->type == EVENTS_TARGET_UNSET) {
            errf(err, err_size, "[%s] type: \"%s\" is not one of webhook|command|mqtt", section,
                 value);
            return -1;
        }
        return 0;
    case K_URL:
        if (strncmp(value, "https://", 8) != 0 || value[8] == '\0') {
            errf(err, err_size, "[%s] url: must be an https:// URL", section);
            return -1;
        }
        return set_string(&s->url, value);
    case K_CA_FILE:
        return set_string(&s->ca_file, value);
    case K_SECRET_FILE:
        return set_string(&s->secret_file, value);
    case K_COMMAND:
        if (strchr(value, '/') == NULL) {
            errf(err, err_size, "[%s] command: a path is needed (no PATH search): \"%s\"", section,
                 value);
            return -1;
        }
        return set_string(&s->argv[0], value);
    case K_ARGS:
        return set_args(s, value, err, err_size);
    case K_TOPIC:
        if (value[0] == '\0' || strpbrk(value, "+#") != NULL) {
            errf(err, err_size, "[%s] topic: a topic name without wildcards is needed", section);
            return -1;
        }
        return set_string(&s->topic, value);
    case K_TIMEOUT:
        return set_duration(s, name, value, 100, 3600000, &s->timeout_ms, err, err_size);
    case K_CONNECT_TIMEOUT:
        return set_duration(s, name, value, 100, 600000, &s->connect_timeout_ms, err, err_size);
    case K_KILL_GRACE:
        return set_duration(s, name, value, 0, 600000, &s->kill_grace_ms, err, err_size);
    case K_RETRY_MIN:
        return set_duration(s, name, value, 10, 86400000, &s->retry.min_ms, err, err_size);
    case K_RETRY_MAX:
        return set_duration(s, name, value, 10, 86400000 * 7LL, &s->retry.max_ms, err, err_size);
    case K_STDOUT_MAX:
        if (ferry_parse_size(value, &n) != FERRY_OK || n < 1 || n > 16 * 1024 * 1024) {
            errf(err, err_size, "[%s] stdout_max: \"%s\" is not a size from 1 to 16M", section,
                 value);
            return -1;
        }
        s->stdout_max = n;
        return 0;
    case K_MAX_ATTEMPTS:
        if (ferry_parse_int(value, &n) != FERRY_OK || n < 1 || n > 1000) {
            errf(err, err_size, "[%s] max_attempts: \"%s\" is not a number from 1 to 1000", section,
                 value);
            return -1;
        }
        s->retry.max_attempts = (unsigned)n;
        return 0;
    case K_SEND_PROCESSED:
        if (ferry_parse_bool(value, &b) != FERRY_OK) {
            errf(err, err_size, "[%s] send_processed: \"%s\" is not a boolean", section, value);
            return -1;
        }
        s->send_processed = b;
        return 0;
    }
    return -1;
}

ferry_err events_config_check(events_config *c, const char *mqtt_prefix, char *err, size_t err_size)
{
    events_retry_policy fallback = EVENTS_RETRY_DEFAULT;
    if (c->retry_default.max_attempts > 0)
        fallback = c->retry_default;
    for (size_t i = 0; i < c->count; i++) {
        events_target_spec *s = &c->targets[i];
        if (s->type == EVENTS_TARGET_UNSET) {
            errf(err, err_size, "[target.%s] type: required option is not set", s->name);
            return FERRY_ERR_CONFIG;
        }
        for (size_t k = 0; k < KEY_COUNT; k++) {
            if ((s->set_mask & (1u << k)) && keys[k].type != EVENTS_TARGET_UNSET &&
                keys[k].type != s->type) {
                errf(err, err_size, "[target.%s] %s: not an option of a %s target", s->name,
                     keys[k].name, events_target_type_name(s->type));
                return FERRY_ERR_CONFIG;
            }
        }
        const char *missing = NULL;
        if (s->type == EVENTS_TARGET_WEBHOOK)
            missing = s->url == NULL ? "url" : s->secret_file == NULL ? "secret_file" : NULL;
        else if (s->type == EVENTS_TARGET_COMMAND)
            missing = s->argv[0] == NULL ? "command" : NULL;
        if (missing != NULL) {
            errf(err, err_size, "[target.%s] %s: required option is not set", s->name, missing);
            return FERRY_ERR_CONFIG;
        }
        if (s->type == EVENTS_TARGET_MQTT && s->topic == NULL) {
            char topic[1100];
            if (mqtt_prefix == NULL || mqtt_prefix[0] == '\0' ||
                (size_t)snprintf(topic, sizeof topic, "%s%s", mqtt_prefix,
                                 EVENTS_DEFAULT_TOPIC_SUFFIX) >= sizeof topic) {
                errf(err, err_size, "[target.%s] topic: not set and no MQTT prefix to derive it",
                     s->name);
                return FERRY_ERR_CONFIG;
            }
            if (set_string(&s->topic, topic) != 0)
                return FERRY_ERR_NOMEM;
        }
        if (!(s->set_mask & (1u << K_SEND_PROCESSED)))
            s->send_processed = s->type == EVENTS_TARGET_COMMAND;
        if (s->timeout_ms == 0)
            s->timeout_ms = s->type == EVENTS_TARGET_COMMAND ? 60000 : 10000;
        if (s->retry.max_attempts == 0)
            s->retry.max_attempts = fallback.max_attempts;
        if (s->retry.min_ms == 0)
            s->retry.min_ms = fallback.min_ms;
        if (s->retry.max_ms == 0)
            s->retry.max_ms = fallback.max_ms;
        if (s->retry.max_ms < s->retry.min_ms) {
            errf(err, err_size, "[target.%s] retry_max: below retry_min", s->name);
            return FERRY_ERR_CONFIG;
        }
    }
    return FERRY_OK;
}

/* The secret: the file's bytes, without one trailing newline (what `echo`
 * and editors add). */
static ferry_err read_secret(const char *path, ferry_buf *out)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return FERRY_ERR_IO;
    ferry_err result = FERRY_OK;
    char chunk[256];
    size_t n;
    while (result == FERRY_OK && (n = fread(chunk, 1, sizeof chunk, f)) > 0)
        result = ferry_buf_append(out, chunk, n);
    if (result == FERRY_OK && ferror(f))
        result = FERRY_ERR_IO;
    fclose(f);
    OPENSSL_cleanse(chunk, sizeof chunk);
    if (result == FERRY_OK && out->len > 0 && out->data[out->len - 1] == '\n')
        out->data[--out->len] = '\0';
    if (result == FERRY_OK && out->len > 0 && out->data[out->len - 1] == '\r')
        out->data[--out->len] = '\0';
    if (result == FERRY_OK && out->len == 0)
        result = FERRY_ERR_INVALID;
    return result;
}

ferry_err events_target_from_spec(const events_target_spec *spec, struct broker_link *link,
                                  events_target **out, char *err, size_t err_size)
{
    ferry_err result = FERRY_ERR_INVALID;
    bool reported = false;
    ferry_buf secret;
    ferry_buf_init(&secret, 1024);
    switch (spec->type) {
    case EVENTS_TARGET_WEBHOOK: {
        result = read_secret(spec->secret_file, &secret);
        if (result != FERRY_OK) {
            errf(err, err_size, "[target.%s] secret_file: cannot read %s (1 to 1024 bytes)",
                 spec->name, spec->secret_file);
            reported = true;
            break;
        }
        events_webhook_config c = {.name = spec->name,
                                   .url = spec->url,
                                   .cafile = spec->ca_file,
                                   .secret = (const unsigned char *)secret.data,
                                   .secret_len = secret.len,
                                   .connect_timeout_ms = spec->connect_timeout_ms};
        result = events_webhook_new(&c, out);
        break;
    }
    case EVENTS_TARGET_COMMAND: {
        events_command_config c = {.name = spec->name,
                                   .argv = (const char *const *)spec->argv,
                                   .stdout_max = (size_t)spec->stdout_max,
                                   .kill_grace_ms = spec->kill_grace_ms};
        result = events_command_new(&c, out);
        break;
    }
    case EVENTS_TARGET_MQTT: {
        events_mqtt_config c = {.name = spec->name, .link = link, .topic = spec->topic};
        result = events_mqtt_new(&c, out);
        break;
    }
    case EVENTS_TARGET_UNSET:
        break;
    }
    if (result != FERRY_OK && !reported)
        errf(err, err_size, "[target.%s]: cannot set up the %s target: %s", spec->name,
             events_target_type_name(spec->type), ferry_err_str(result));
    ferry_buf_wipe(&secret);
    return result;
}
