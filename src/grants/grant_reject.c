/*
 * grant_reject.c - rejection codes, their protocol names, and the rejected
 * answer.
 *
 * The names are part of the protocol (docs/protocol.md): devices switch on
 * them, so they never change and new codes are only appended. A rejection's
 * id is echoed only if it is 1..128 printable ASCII; its message is built
 * by callers from fixed text and numbers of ours, so the answer never
 * carries raw device bytes.
 */
#include "grants.h"
#include "grants_int.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const code_names[GRANT_REJECT__COUNT] = {
    [GRANT_REJECT_NONE] = "None",
    [GRANT_REJECT_MALFORMED_JSON] = "MalformedJson",
    [GRANT_REJECT_MESSAGE_TOO_LARGE] = "MessageTooLarge",
    [GRANT_REJECT_DUPLICATE_KEY] = "DuplicateKey",
    [GRANT_REJECT_MISSING_FIELD] = "MissingField",
    [GRANT_REJECT_INVALID_FIELD] = "InvalidField",
    [GRANT_REJECT_UNKNOWN_FIELD] = "UnknownField",
    [GRANT_REJECT_UNSAFE_NAME] = "UnsafeName",
    [GRANT_REJECT_TOO_LARGE] = "TooLarge",
    [GRANT_REJECT_CONTENT_TYPE] = "ContentTypeNotAllowed",
    [GRANT_REJECT_QUOTA_EXCEEDED] = "QuotaExceeded",
    [GRANT_REJECT_RATE_LIMITED] = "RateLimited",
    [GRANT_REJECT_TOO_MANY_OPEN_GRANTS] = "TooManyOpenGrants",
    [GRANT_REJECT_DEVICE_DISABLED] = "DeviceDisabled",
    [GRANT_REJECT_INVALID_RESPONSE_TOPIC] = "InvalidResponseTopic",
    [GRANT_REJECT_INTERNAL] = "Internal",
};

const char *grant_reject_code_str(grant_reject_code code)
{
    if ((unsigned)code >= GRANT_REJECT__COUNT)
        return "Internal";
    return code_names[code];
}

bool grant_request_id_valid(const char *id, size_t len)
{
    if (id == NULL || len == 0 || len > GRANT_REQ_ID_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        if ((unsigned char)id[i] < 0x20 || (unsigned char)id[i] > 0x7E)
            return false;
    }
    return true;
}

void grant_rejection_init(grant_rejection *rej, const char *id)
{
    if (rej == NULL)
        return;
    memset(rej, 0, sizeof *rej);
    if (id != NULL) {
        size_t n = strnlen(id, GRANT_REQ_ID_MAX + 1);
        if (grant_request_id_valid(id, n)) {
            memcpy(rej->id, id, n);
            rej->id[n] = '\0';
            rej->has_id = true;
        }
    }
}

void grant_reject(grant_rejection *rej, grant_reject_code code, const char *fmt, ...)
{
    va_list ap;
    if (rej == NULL)
        return;
    rej->code = code;
    va_start(ap, fmt);
    vsnprintf(rej->message, sizeof rej->message, fmt, ap);
    va_end(ap);
}

ferry_err grant_rejection_json(const grant_rejection *rej, char **out)
{
    ferry_err err = FERRY_OK;
    json_t *obj = NULL;
    char *text = NULL;

    if (rej == NULL || out == NULL)
        return FERRY_ERR_INVALID;
    obj = json_pack("{s:s, s:o, s:s, s:s}", "type", "rejected", "id",
                    rej->has_id ? json_string(rej->id) : json_null(), "code",
                    grant_reject_code_str(rej->code), "message", rej->message);
    if (obj == NULL) {
        err = FERRY_ERR_NOMEM;
        goto out;
    }
    /* ENSURE_ASCII: the answer is plain ASCII whatever a message holds. */
    text = json_dumps(obj, JSON_COMPACT | JSON_ENSURE_ASCII | JSON_PRESERVE_ORDER);
    if (text == NULL) {
        err = FERRY_ERR_NOMEM;
        goto out;
    }
    *out = text;
out:
    json_decref(obj);
    return err;
}
