/*
 * grant_request.c - the strict parser of upload requests.
 *
 * Input is hostile: a message from any device, of any shape. The parser
 * caps the message (GRANT_MESSAGE_MAX_BYTES) before jansson sees it, makes
 * jansson refuse duplicate keys and trailing bytes, accepts only an object
 * with the six known fields, and checks every field's type and bounds. Every
 * failure ends in a grant_rejection whose message is fixed text (plus our
 * own numbers and field names), so it is safe to echo; the device's id is
 * echoed only once it has been checked to be printable ASCII.
 *
 * Checks run in a fixed order, so a request with several faults always gets
 * the same answer: message size, JSON syntax (duplicate keys included),
 * top-level object, id, unknown fields, name, size, content_type, sha256,
 * method.
 *
 * Invalid UTF-8 inside the JSON text makes jansson fail the whole message,
 * which would lose the id and turn a bad name into MalformedJson. So the
 * parser repairs such a message once, replacing each invalid byte by DEL
 * (0x7F), and parses the repair: every field refuses DEL, so the repair can
 * only end in a rejection, now with the right field and code (a bad name is
 * UnsafeName) and the id when the id itself was clean. If the repair were
 * to pass, the original is still refused as MalformedJson.
 */
#include "grants.h"
#include "grants_int.h"

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define REPAIR_BYTE 0x7F

static const char *const known_fields[] = {"id",           "name",   "size",
                                           "content_type", "sha256", "method"};

static bool field_known(const char *key)
{
    for (size_t i = 0; i < sizeof known_fields / sizeof known_fields[0]; i++) {
        if (strcmp(key, known_fields[i]) == 0)
            return true;
    }
    return false;
}

/* A field name worth quoting back: short, from a plain alphabet. Anything
 * else is described without being echoed. */
static bool field_name_echoable(const char *key)
{
    size_t n = strlen(key);
    if (n == 0 || n > 32)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = key[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return false;
    }
    return true;
}

static bool restricted_first(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

static bool restricted_char(unsigned char c)
{
    return restricted_first(c) || c == '!' || c == '#' || c == '$' || c == '&' || c == '-' ||
           c == '^' || c == '_' || c == '.' || c == '+';
}

bool grant_content_type_valid(const char *s, size_t len)
{
    size_t slash = 0, i;
    if (s == NULL || len < 3 || len > GRANT_CONTENT_TYPE_MAX)
        return false;
    for (i = 0; i < len && s[i] != '/'; i++) {
        if (i == 0 ? !restricted_first((unsigned char)s[i]) : !restricted_char((unsigned char)s[i]))
            return false;
    }
    if (i == 0 || i >= len - 1)
        return false;
    slash = i;
    for (i = slash + 1; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (i == slash + 1 ? !restricted_first(c) : !restricted_char(c))
            return false;
    }
    return true;
}

/* Fills out's sha256 fields from 64 hex digits; false if s is not that. */
static bool parse_sha256(const char *s, size_t len, grant_request *out)
{
    unsigned char digest[32];
    if (len != GRANT_SHA256_HEX_LEN)
        return false;
    for (size_t i = 0; i < 32; i++) {
        int hi = OPENSSL_hexchar2int((unsigned char)s[2 * i]),
            lo = OPENSSL_hexchar2int((unsigned char)s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return false;
        digest[i] = (unsigned char)(hi << 4 | lo);
    }
    for (size_t i = 0; i < GRANT_SHA256_HEX_LEN; i++) {
        char c = s[i];
        out->sha256_hex[i] = (c >= 'A' && c <= 'F') ? (char)(c - 'A' + 'a') : c;
    }
    out->sha256_hex[GRANT_SHA256_HEX_LEN] = '\0';
    /* 32 bytes encode to exactly 44 characters plus the NUL. */
    EVP_EncodeBlock((unsigned char *)out->sha256_b64, digest, 32);
    out->has_sha256 = true;
    return true;
}

/* Validates a parsed JSON value as a request. repaired: the message had
 * invalid UTF-8 replaced by REPAIR_BYTE (see the top of the file). */
static ferry_err parse_object(json_t *root, bool repaired, grant_request *out, grant_rejection *rej)
{
    grant_request req;
    json_t *v;
    const char *key;
    const char *s;
    size_t len;

    memset(&req, 0, sizeof req);
    if (!json_is_object(root)) {
        grant_reject(rej, GRANT_REJECT_MALFORMED_JSON, "request must be a JSON object");
        return FERRY_ERR_INVALID;
    }

    v = json_object_get(root, "id");
    if (v == NULL) {
        grant_reject(rej, GRANT_REJECT_MISSING_FIELD, "field \"id\" is missing");
        return FERRY_ERR_INVALID;
    }
    s = json_string_value(v);
    len = json_string_length(v);
    if (s == NULL || !grant_request_id_valid(s, len)) {
        grant_reject(rej, GRANT_REJECT_INVALID_FIELD,
                     "field \"id\" must be a string of 1 to %d printable ASCII characters",
                     GRANT_REQ_ID_MAX);
        return FERRY_ERR_INVALID;
    }
    memcpy(req.id, s, len);
    req.id[len] = '\0';
    /* From here on every rejection carries the id. */
    grant_rejection_init(rej, req.id);

    json_object_foreach(root, key, v)
    {
        if (!field_known(key)) {
            if (field_name_echoable(key))
                grant_reject(rej, GRANT_REJECT_UNKNOWN_FIELD, "unknown field \"%s\"", key);
            else
                grant_reject(rej, GRANT_REJECT_UNKNOWN_FIELD, "unknown field");
            return FERRY_ERR_INVALID;
        }
    }

    v = json_object_get(root, "name");
    if (v == NULL) {
        grant_reject(rej, GRANT_REJECT_MISSING_FIELD, "field \"name\" is missing");
        return FERRY_ERR_INVALID;
    }
    if (!json_is_string(v)) {
        grant_reject(rej, GRANT_REJECT_INVALID_FIELD, "field \"name\" must be a string");
        return FERRY_ERR_INVALID;
    }
    {
        const char *why = NULL;
        s = json_string_value(v);
        len = json_string_length(v);
        if (grant_safe_name(s, len, req.name, sizeof req.name, &why) != FERRY_OK) {
            if (repaired && memchr(s, REPAIR_BYTE, len) != NULL)
                why = "name is not valid UTF-8";
            grant_reject(rej, GRANT_REJECT_UNSAFE_NAME, "%s", why != NULL ? why : "unsafe name");
            return FERRY_ERR_INVALID;
        }
    }

    v = json_object_get(root, "size");
    if (v == NULL) {
        grant_reject(rej, GRANT_REJECT_MISSING_FIELD, "field \"size\" is missing");
        return FERRY_ERR_INVALID;
    }
    /* An integer token only: 5.0, "5" and 5e3 are refused, so the size the
     * device meant is never a matter of interpretation. */
    if (!json_is_integer(v) || json_integer_value(v) < 1 ||
        (uint64_t)json_integer_value(v) > GRANT_SIZE_MAX) {
        grant_reject(rej, GRANT_REJECT_INVALID_FIELD,
                     "field \"size\" must be an integer from 1 to %llu",
                     (unsigned long long)GRANT_SIZE_MAX);
        return FERRY_ERR_INVALID;
    }
    req.size = (uint64_t)json_integer_value(v);

    v = json_object_get(root, "content_type");
    if (v == NULL) {
        grant_reject(rej, GRANT_REJECT_MISSING_FIELD, "field \"content_type\" is missing");
        return FERRY_ERR_INVALID;
    }
    s = json_string_value(v);
    len = json_string_length(v);
    if (s == NULL || !grant_content_type_valid(s, len)) {
        grant_reject(rej, GRANT_REJECT_INVALID_FIELD,
                     "field \"content_type\" must be a media type \"type/subtype\" of at most "
                     "%d characters, without parameters",
                     GRANT_CONTENT_TYPE_MAX);
        return FERRY_ERR_INVALID;
    }
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        req.content_type[i] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
    }
    req.content_type[len] = '\0';

    /* Optional fields: absent or null mean "not given". */
    v = json_object_get(root, "sha256");
    if (v != NULL && !json_is_null(v)) {
        s = json_string_value(v);
        if (s == NULL || !parse_sha256(s, json_string_length(v), &req)) {
            grant_reject(rej, GRANT_REJECT_INVALID_FIELD,
                         "field \"sha256\" must be 64 hexadecimal digits");
            return FERRY_ERR_INVALID;
        }
    }

    req.method = GRANT_METHOD_AUTO;
    v = json_object_get(root, "method");
    if (v != NULL && !json_is_null(v)) {
        s = json_string_value(v);
        len = json_string_length(v);
        if (s != NULL && len == 4 && strncasecmp(s, "auto", 4) == 0)
            req.method = GRANT_METHOD_AUTO;
        else if (s != NULL && len == 3 && strncasecmp(s, "put", 3) == 0)
            req.method = GRANT_METHOD_PUT;
        else if (s != NULL && len == 4 && strncasecmp(s, "post", 4) == 0)
            req.method = GRANT_METHOD_POST;
        else {
            grant_reject(rej, GRANT_REJECT_INVALID_FIELD,
                         "field \"method\" must be \"auto\", \"put\" or \"post\"");
            return FERRY_ERR_INVALID;
        }
    }

    if (repaired) {
        /* Every field refuses the repair byte, so this cannot happen; if it
         * did, the original message was still not valid UTF-8. */
        grant_reject(rej, GRANT_REJECT_MALFORMED_JSON, "request is not valid UTF-8");
        return FERRY_ERR_INVALID;
    }
    *out = req;
    return FERRY_OK;
}

static const size_t load_flags = JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL;

/* Maps a jansson load error to a rejection. */
static ferry_err load_failed(const json_error_t *jerr, grant_rejection *rej)
{
    switch (json_error_code(jerr)) {
    case json_error_duplicate_key:
        grant_reject(rej, GRANT_REJECT_DUPLICATE_KEY, "request has a duplicate key");
        return FERRY_ERR_INVALID;
    case json_error_numeric_overflow:
        grant_reject(rej, GRANT_REJECT_INVALID_FIELD, "request has a number out of range");
        return FERRY_ERR_INVALID;
    case json_error_out_of_memory:
        grant_reject(rej, GRANT_REJECT_INTERNAL, "out of memory");
        return FERRY_ERR_NOMEM;
    case json_error_null_byte_in_key:
        grant_reject(rej, GRANT_REJECT_UNKNOWN_FIELD, "unknown field");
        return FERRY_ERR_INVALID;
    default:
        /* Line and column are our numbers; jansson's text quotes input. */
        grant_reject(rej, GRANT_REJECT_MALFORMED_JSON,
                     "request is not valid JSON (line %d, column %d)", jerr->line, jerr->column);
        return FERRY_ERR_INVALID;
    }
}

/* Parses a copy of msg whose invalid UTF-8 bytes are replaced; see the top
 * of the file. */
static ferry_err parse_repaired(const char *msg, size_t msg_len, grant_request *out,
                                grant_rejection *rej)
{
    ferry_err err;
    json_error_t jerr;
    json_t *root = NULL;
    unsigned char *copy = malloc(msg_len > 0 ? msg_len : 1);

    if (copy == NULL) {
        grant_reject(rej, GRANT_REJECT_INTERNAL, "out of memory");
        return FERRY_ERR_NOMEM;
    }
    memcpy(copy, msg, msg_len);
    for (size_t i = 0; i < msg_len;) {
        uint32_t cp;
        size_t n = grant_utf8_decode(copy + i, msg_len - i, &cp);
        if (n == 0) {
            copy[i++] = REPAIR_BYTE;
            continue;
        }
        i += n;
    }
    root = json_loadb((const char *)copy, msg_len, load_flags, &jerr);
    if (root == NULL) {
        err = load_failed(&jerr, rej);
        if (rej->code == GRANT_REJECT_MALFORMED_JSON)
            grant_reject(rej, GRANT_REJECT_MALFORMED_JSON, "request is not valid UTF-8");
        goto out;
    }
    err = parse_object(root, true, out, rej);
out:
    json_decref(root);
    free(copy);
    return err;
}

ferry_err grant_request_parse(const char *msg, size_t msg_len, grant_request *out,
                              grant_rejection *rej)
{
    ferry_err err;
    json_error_t jerr;
    json_t *root = NULL;

    if (rej == NULL)
        return FERRY_ERR_INVALID;
    grant_rejection_init(rej, NULL);
    if (out == NULL || (msg == NULL && msg_len > 0)) {
        grant_reject(rej, GRANT_REJECT_INTERNAL, "internal error");
        return FERRY_ERR_INVALID;
    }
    if (msg_len > GRANT_MESSAGE_MAX_BYTES) {
        grant_reject(rej, GRANT_REJECT_MESSAGE_TOO_LARGE, "request is larger than %d bytes",
                     GRANT_MESSAGE_MAX_BYTES);
        return FERRY_ERR_INVALID;
    }
    if (msg_len == 0) {
        grant_reject(rej, GRANT_REJECT_MALFORMED_JSON, "request is empty");
        return FERRY_ERR_INVALID;
    }
    root = json_loadb(msg, msg_len, load_flags, &jerr);
    if (root == NULL) {
        if (json_error_code(&jerr) == json_error_invalid_utf8)
            return parse_repaired(msg, msg_len, out, rej);
        return load_failed(&jerr, rej);
    }
    err = parse_object(root, false, out, rej);
    json_decref(root);
    return err;
}
