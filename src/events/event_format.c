/*
 * event_format.c - the S3 event-notification JSON and the device messages.
 *
 * The record has the fields, nesting and value formats of the notifications
 * Amazon S3 sends (eventVersion "2.1", eventTime with milliseconds, the key
 * form-encoded, the eTag without quotes, a fixed-width hex sequencer), so
 * code written for S3 or MinIO notifications reads it unchanged; Ferry's
 * own facts are in an extra "ferry" object inside the record, which such
 * code ignores.
 *
 * Invariants: pure functions of their inputs (the outbox assigns the event
 * id, sequencer and time, so a redelivery is the same bytes); every string
 * is checked (length, UTF-8 through jansson) before it is used; output is
 * appended to the caller's buffer only when the whole message is built.
 */
#include "events.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "common/timefmt.h"

const char *events_method_name(events_method method)
{
    switch (method) {
    case EVENTS_PUT:
        return "ObjectCreated:Put";
    case EVENTS_POST:
        return "ObjectCreated:Post";
    case EVENTS_MULTIPART:
        return "ObjectCreated:CompleteMultipartUpload";
    }
    return NULL;
}

/* A string field: required ones must be non-empty; every one is bounded. */
static ferry_err check_field(const char *s, bool required, size_t max_len)
{
    if (s == NULL)
        return required ? FERRY_ERR_INVALID : FERRY_OK;
    size_t len = strnlen(s, max_len + 1);
    if (len > max_len)
        return FERRY_ERR_TOO_LARGE;
    if (required && len == 0)
        return FERRY_ERR_INVALID;
    return FERRY_OK;
}

static bool is_hex64(const char *s)
{
    if (strlen(s) != 64)
        return false;
    for (size_t i = 0; i < 64; i++) {
        char c = s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')))
            return false;
    }
    return true;
}

static ferry_err check_object(const events_object *obj)
{
    ferry_err result = FERRY_OK;
    if (obj == NULL || events_method_name(obj->method) == NULL || obj->size < 0 ||
        obj->time_ms < 0 || obj->time_ms > INT64_C(253402300799999) /* 9999-12-31 */)
        return FERRY_ERR_INVALID;
    const struct {
        const char *value;
        bool required;
        size_t max;
    } fields[] = {
        {obj->event_id, true, EVENTS_MAX_FIELD_LEN},
        {obj->region, true, EVENTS_MAX_FIELD_LEN},
        {obj->bucket, true, EVENTS_MAX_FIELD_LEN},
        {obj->key, true, EVENTS_MAX_KEY_LEN},
        {obj->etag, true, EVENTS_MAX_FIELD_LEN},
        {obj->device, true, EVENTS_MAX_FIELD_LEN},
        {obj->grant, true, EVENTS_MAX_FIELD_LEN},
        {obj->sha256, false, 64},
        {obj->content_type, false, EVENTS_MAX_FIELD_LEN},
        {obj->request_id, false, EVENTS_MAX_FIELD_LEN},
        {obj->source_ip, false, EVENTS_MAX_FIELD_LEN},
        {obj->store_request_id, false, EVENTS_MAX_FIELD_LEN},
        {obj->event_source, false, EVENTS_MAX_FIELD_LEN},
        {obj->configuration_id, false, EVENTS_MAX_FIELD_LEN},
        {obj->bucket_owner, false, EVENTS_MAX_FIELD_LEN},
    };
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        result = check_field(fields[i].value, fields[i].required, fields[i].max);
        if (result != FERRY_OK)
            return result;
    }
    if (obj->sha256 != NULL && obj->sha256[0] != '\0' && !is_hex64(obj->sha256))
        return FERRY_ERR_INVALID;
    return FERRY_OK;
}

ferry_err events_key_encode(const char *key, size_t key_len, ferry_buf *out)
{
    static const char hex[] = "0123456789ABCDEF";
    ferry_err result = FERRY_OK;
    size_t start = out->len;
    for (size_t i = 0; i < key_len && result == FERRY_OK; i++) {
        unsigned char c = (unsigned char)key[i];
        bool keep = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '_' || c == '.' || c == '~' || c == '/';
        if (keep) {
            result = ferry_buf_append_byte(out, (char)c);
        } else if (c == ' ') {
            result = ferry_buf_append_byte(out, '+');
        } else {
            char esc[3] = {'%', hex[c >> 4], hex[c & 15]};
            result = ferry_buf_append(out, esc, sizeof esc);
        }
    }
    if (result != FERRY_OK) {
        /* Leave the buffer as it was. */
        out->len = start;
        if (out->data != NULL)
            out->data[start] = '\0';
    }
    return result;
}

/* "YYYY-MM-DDTHH:MM:SS.mmmZ", as S3 writes eventTime (24 characters for
 * the years check_object() allows; the buffer is larger only because the
 * compiler cannot know the fields' ranges). */
static void format_time_ms(int64_t time_ms, char out[64])
{
    ferry_tm tm;
    ferry_time_split(time_ms / 1000, &tm);
    snprintf(out, 64, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.year, tm.month, tm.day, tm.hour,
             tm.minute, tm.second, (int)(time_ms % 1000));
}

/* json_string() returns NULL for invalid UTF-8: that is how strings from
 * outside are checked. set_str() keeps a running failure flag so the
 * builders below read as a list of fields. */
static void set_str(json_t *obj, const char *name, const char *value, bool *ok)
{
    json_t *s = json_string(value != NULL ? value : "");
    if (s == NULL || json_object_set_new(obj, name, s) != 0)
        *ok = false;
}

static void set_int(json_t *obj, const char *name, int64_t value, bool *ok)
{
    json_t *n = json_integer((json_int_t)value);
    if (n == NULL || json_object_set_new(obj, name, n) != 0)
        *ok = false;
}

static void set_obj(json_t *obj, const char *name, json_t *child, bool *ok)
{
    if (child == NULL || json_object_set_new(obj, name, child) != 0)
        *ok = false;
}

/* The etag without the quotes S3 puts around it in headers. */
static const char *etag_unquoted(const char *etag, char *buf, size_t buf_size)
{
    size_t len = strlen(etag);
    if (len >= 2 && etag[0] == '"' && etag[len - 1] == '"' && len - 2 < buf_size) {
        memcpy(buf, etag + 1, len - 2);
        buf[len - 2] = '\0';
        return buf;
    }
    return etag;
}

static void lower_hex(const char *in, char out[65])
{
    size_t i = 0;
    for (; in != NULL && in[i] != '\0' && i < 64; i++)
        out[i] = (in[i] >= 'A' && in[i] <= 'F') ? (char)(in[i] - 'A' + 'a') : in[i];
    out[i] = '\0';
}

/* Serialises root and appends it to out if it fits both max_len and the
 * buffer's own cap. */
static ferry_err dump_append(json_t *root, size_t max_len, ferry_buf *out)
{
    ferry_err result = FERRY_OK;
    char *text = json_dumps(root, JSON_COMPACT);
    if (text == NULL)
        return FERRY_ERR_NOMEM;
    size_t len = strlen(text);
    if (len > max_len) {
        result = FERRY_ERR_TOO_LARGE;
        goto out;
    }
    result = ferry_buf_append(out, text, len);
out:
    free(text);
    return result;
}

ferry_err events_format(const events_object *obj, ferry_buf *out)
{
    ferry_err result = check_object(obj);
    json_t *root = NULL;
    ferry_buf key = {0};
    ferry_buf_init(&key, EVENTS_MAX_KEY_LEN * 3);
    if (result != FERRY_OK)
        goto out;
    result = events_key_encode(obj->key, strlen(obj->key), &key);
    if (result != FERRY_OK)
        goto out;

    char event_time[64], sequencer[17], etag_buf[EVENTS_MAX_FIELD_LEN], sha[65], arn[300];
    format_time_ms(obj->time_ms, event_time);
    snprintf(sequencer, sizeof sequencer, "%016" PRIX64, obj->sequencer);
    snprintf(arn, sizeof arn, "arn:aws:s3:::%s", obj->bucket);
    lower_hex(obj->sha256, sha);
    const char *etag = etag_unquoted(obj->etag, etag_buf, sizeof etag_buf);

    bool ok = true;
    /* Children are attached with set_obj(), which takes ownership even when
     * it fails, so nothing leaks on any path; `record` is the only object
     * we hold a reference to ourselves. */
    json_t *record = json_object();
    json_t *bucket = json_object(), *s3 = json_object(), *ferry = json_object();
    json_t *object = json_object();
    root = json_object();
    json_t *records = json_array();
    set_obj(root, "Records", records, &ok);
    if (record == NULL || records == NULL || json_array_append(records, record) != 0)
        ok = false;
    set_str(record, "eventVersion", "2.1", &ok);
    set_str(record, "eventSource",
            obj->event_source ? obj->event_source : EVENTS_DEFAULT_EVENT_SOURCE, &ok);
    set_str(record, "awsRegion", obj->region, &ok);
    set_str(record, "eventTime", event_time, &ok);
    set_str(record, "eventName", events_method_name(obj->method), &ok);
    set_obj(record, "userIdentity", json_pack("{s:s}", "principalId", obj->device), &ok);
    set_obj(record, "requestParameters",
            json_pack("{s:s}", "sourceIPAddress", obj->source_ip ? obj->source_ip : ""), &ok);
    set_obj(record, "responseElements",
            json_pack("{s:s,s:s}", "x-amz-request-id",
                      obj->store_request_id ? obj->store_request_id : obj->event_id, "x-amz-id-2",
                      obj->event_id),
            &ok);
    set_str(s3, "s3SchemaVersion", "1.0", &ok);
    set_str(s3, "configurationId", obj->configuration_id ? obj->configuration_id : "ferry", &ok);
    set_str(bucket, "name", obj->bucket, &ok);
    set_obj(bucket, "ownerIdentity",
            json_pack("{s:s}", "principalId", obj->bucket_owner ? obj->bucket_owner : "ferry"),
            &ok);
    set_str(bucket, "arn", arn, &ok);
    set_obj(s3, "bucket", bucket, &ok);
    set_str(object, "key", ferry_buf_str(&key), &ok);
    set_int(object, "size", obj->size, &ok);
    set_str(object, "eTag", etag, &ok);
    set_str(object, "sequencer", sequencer, &ok);
    set_obj(s3, "object", object, &ok);
    set_obj(record, "s3", s3, &ok);
    set_str(ferry, "event_id", obj->event_id, &ok);
    set_str(ferry, "device", obj->device, &ok);
    set_str(ferry, "grant", obj->grant, &ok);
    set_str(ferry, "key", obj->key, &ok);
    set_str(ferry, "sha256", sha, &ok);
    set_str(ferry, "content_type", obj->content_type, &ok);
    if (obj->request_id != NULL)
        set_str(ferry, "id", obj->request_id, &ok);
    else
        set_obj(ferry, "id", json_null(), &ok);
    set_obj(record, "ferry", ferry, &ok);
    json_decref(record);
    if (!ok) {
        /* Out of memory, or a string that is not valid UTF-8. */
        result = root == NULL ? FERRY_ERR_NOMEM : FERRY_ERR_INVALID;
        goto out;
    }
    result = dump_append(root, EVENTS_MAX_EVENT_LEN, out);
out:
    json_decref(root);
    ferry_buf_cleanup(&key);
    return result;
}

/* The fields receipt and processed share: type, id, grant, key. */
static json_t *device_message(const events_object *obj, const char *type, bool *ok)
{
    json_t *m = json_object();
    if (m == NULL) {
        *ok = false;
        return NULL;
    }
    set_str(m, "type", type, ok);
    if (obj->request_id != NULL)
        set_str(m, "id", obj->request_id, ok);
    else
        set_obj(m, "id", json_null(), ok);
    set_str(m, "grant", obj->grant, ok);
    set_str(m, "key", obj->key, ok);
    return m;
}

ferry_err events_receipt(const events_object *obj, ferry_buf *out)
{
    ferry_err result = check_object(obj);
    json_t *m = NULL;
    if (result != FERRY_OK)
        goto out;
    bool ok = true;
    char etag_buf[EVENTS_MAX_FIELD_LEN], sha[65];
    lower_hex(obj->sha256, sha);
    m = device_message(obj, "receipt", &ok);
    set_int(m, "size", obj->size, &ok);
    set_str(m, "sha256", sha, &ok);
    set_str(m, "etag", etag_unquoted(obj->etag, etag_buf, sizeof etag_buf), &ok);
    set_str(m, "event_id", obj->event_id, &ok);
    if (!ok) {
        result = m == NULL ? FERRY_ERR_NOMEM : FERRY_ERR_INVALID;
        goto out;
    }
    result = dump_append(m, EVENTS_MAX_DEVICE_MESSAGE_LEN, out);
out:
    json_decref(m);
    return result;
}

/* {"error": why} as the result that replaces one the device cannot have. */
static json_t *error_result(const char *why)
{
    json_t *r = json_object();
    if (r != NULL && json_object_set_new(r, "error", json_string(why)) != 0) {
        json_decref(r);
        r = NULL;
    }
    return r;
}

ferry_err events_processed(const events_object *obj, const char *target, const char *result_json,
                           size_t result_len, ferry_buf *out)
{
    ferry_err result = check_object(obj);
    json_t *m = NULL;
    json_t *parsed = NULL;
    if (result == FERRY_OK)
        result = check_field(target, false, EVENTS_MAX_FIELD_LEN);
    if (result != FERRY_OK)
        goto out;
    bool ok = true;
    m = device_message(obj, "processed", &ok);
    if (target != NULL)
        set_str(m, "target", target, &ok);
    set_str(m, "event_id", obj->event_id, &ok);
    if (!ok) {
        result = m == NULL ? FERRY_ERR_NOMEM : FERRY_ERR_INVALID;
        goto out;
    }

    /* The result is untrusted processor output: bounded before it is
     * parsed, and it must be one JSON object. */
    const char *why = NULL;
    if (result_json == NULL || result_len == 0) {
        why = "processor printed no result";
    } else if (result_len >= EVENTS_MAX_DEVICE_MESSAGE_LEN) {
        why = "processor result too large";
    } else {
        json_error_t jerr;
        parsed = json_loadb(result_json, result_len, JSON_REJECT_DUPLICATES, &jerr);
        if (parsed == NULL || !json_is_object(parsed))
            why = "processor result is not a JSON object";
    }
    if (why == NULL) {
        if (json_object_set(m, "result", parsed) != 0) {
            result = FERRY_ERR_NOMEM;
            goto out;
        }
        result = dump_append(m, EVENTS_MAX_DEVICE_MESSAGE_LEN, out);
        if (result != FERRY_ERR_TOO_LARGE)
            goto out;
        why = "processor result too large";
    }
    json_t *err = error_result(why);
    if (err == NULL || json_object_set_new(m, "result", err) != 0) {
        result = FERRY_ERR_NOMEM;
        goto out;
    }
    result = dump_append(m, EVENTS_MAX_DEVICE_MESSAGE_LEN, out);
out:
    json_decref(parsed);
    json_decref(m);
    return result;
}
