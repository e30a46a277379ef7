/*
 * grants_request_test.c - the request parser: valid requests and their
 * normalised fields, and one case per rejection path (table-driven), with
 * the code, whether the id is echoed, and that the message is safe.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grants/grants.h"

static ferry_err parse_str(const char *s, size_t len, grant_request *req, grant_rejection *rej)
{
    return grant_request_parse(s, len, req, rej);
}

static void assert_printable(const char *s)
{
    for (; *s != '\0'; s++)
        assert_true((unsigned char)*s >= 0x20 && (unsigned char)*s <= 0x7E);
}

static void test_valid_full(void **state)
{
    (void)state;
    grant_request req;
    grant_rejection rej;
    const char *msg =
        "{\"id\": \"r-42\", \"name\": \"lung-2026-11-25.wav\", \"size\": 5242880,"
        " \"content_type\": \"Audio/WAV\","
        " \"sha256\": \"E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855\","
        " \"method\": \"put\"}";
    assert_int_equal(parse_str(msg, strlen(msg), &req, &rej), FERRY_OK);
    assert_string_equal(req.id, "r-42");
    assert_string_equal(req.name, "lung-2026-11-25.wav");
    assert_int_equal(req.size, 5242880);
    assert_string_equal(req.content_type, "audio/wav");
    assert_true(req.has_sha256);
    assert_string_equal(req.sha256_hex,
                        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    /* SHA-256 of the empty string, base64 (as x-amz-checksum-sha256). */
    assert_string_equal(req.sha256_b64, "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=");
    assert_int_equal(req.method, GRANT_METHOD_PUT);
}

static void test_valid_minimal_and_optional_null(void **state)
{
    (void)state;
    grant_request req;
    grant_rejection rej;
    const char *msg = "{\"id\":\"r 1 ~!\",\"name\":\"my photo (1).jpg\",\"size\":9007199254740992,"
                      "\"content_type\":\"image/jpeg\",\"sha256\":null,\"method\":null}";
    assert_int_equal(parse_str(msg, strlen(msg), &req, &rej), FERRY_OK);
    assert_string_equal(req.id, "r 1 ~!");
    assert_string_equal(req.name, "my_photo__1_.jpg");
    assert_int_equal(req.size, UINT64_C(9007199254740992));
    assert_false(req.has_sha256);
    assert_int_equal(req.method, GRANT_METHOD_AUTO);

    const char *post = "{\"id\":\"x\",\"name\":\"a\",\"size\":1,\"content_type\":\"a/b\","
                       "\"method\":\"POST\"}";
    assert_int_equal(parse_str(post, strlen(post), &req, &rej), FERRY_OK);
    assert_int_equal(req.method, GRANT_METHOD_POST);
}

typedef struct reject_case {
    const char *label;
    const char *msg;
    size_t len; /* 0: strlen(msg) */
    grant_reject_code code;
    bool has_id;
} reject_case;

#define REQ_TAIL "\"size\":10,\"content_type\":\"text/plain\"}"

static const reject_case reject_cases[] = {
    {"empty", "", 0, GRANT_REJECT_MALFORMED_JSON, false},
    {"not json", "hello", 0, GRANT_REJECT_MALFORMED_JSON, false},
    {"truncated", "{\"id\":\"r-1\",\"name\":", 0, GRANT_REJECT_MALFORMED_JSON, false},
    {"trailing bytes", "{\"id\":\"r-1\"} x", 0, GRANT_REJECT_MALFORMED_JSON, false},
    {"array", "[1,2]", 0, GRANT_REJECT_MALFORMED_JSON, false},
    {"bare string", "\"x\"", 0, GRANT_REJECT_MALFORMED_JSON, false},
    {"lone surrogate", "{\"id\":\"r-1\",\"name\":\"\\ud800\"," REQ_TAIL, 0,
     GRANT_REJECT_MALFORMED_JSON, false},
    {"duplicate key", "{\"id\":\"r-1\",\"name\":\"a\",\"name\":\"b\"," REQ_TAIL, 0,
     GRANT_REJECT_DUPLICATE_KEY, false},
    {"missing id", "{\"name\":\"a\"," REQ_TAIL, 0, GRANT_REJECT_MISSING_FIELD, false},
    {"id number", "{\"id\":42,\"name\":\"a\"," REQ_TAIL, 0, GRANT_REJECT_INVALID_FIELD, false},
    {"id empty", "{\"id\":\"\",\"name\":\"a\"," REQ_TAIL, 0, GRANT_REJECT_INVALID_FIELD, false},
    {"id control", "{\"id\":\"r\\n1\",\"name\":\"a\"," REQ_TAIL, 0, GRANT_REJECT_INVALID_FIELD,
     false},
    {"id non-ascii", "{\"id\":\"r\\u00e9\",\"name\":\"a\"," REQ_TAIL, 0, GRANT_REJECT_INVALID_FIELD,
     false},
    {"id invalid utf8", "{\"id\":\"r\xff\",\"name\":\"a\"," REQ_TAIL, 0, GRANT_REJECT_INVALID_FIELD,
     false},
    {"unknown field", "{\"id\":\"r-1\",\"name\":\"a\",\"bucket\":\"x\"," REQ_TAIL, 0,
     GRANT_REJECT_UNKNOWN_FIELD, true},
    {"unknown key with NUL", "{\"id\":\"r-1\",\"na\\u0000me\":\"a\"," REQ_TAIL, 0,
     GRANT_REJECT_UNKNOWN_FIELD, false},
    {"missing name", "{\"id\":\"r-1\"," REQ_TAIL, 0, GRANT_REJECT_MISSING_FIELD, true},
    {"name number", "{\"id\":\"r-1\",\"name\":1," REQ_TAIL, 0, GRANT_REJECT_INVALID_FIELD, true},
    {"name object", "{\"id\":\"r-1\",\"name\":{\"a\":[1]}," REQ_TAIL, 0, GRANT_REJECT_INVALID_FIELD,
     true},
    {"name ../x", "{\"id\":\"r-1\",\"name\":\"../x\"," REQ_TAIL, 0, GRANT_REJECT_UNSAFE_NAME, true},
    {"name a/b", "{\"id\":\"r-1\",\"name\":\"a/b\"," REQ_TAIL, 0, GRANT_REJECT_UNSAFE_NAME, true},
    {"name backslash", "{\"id\":\"r-1\",\"name\":\"a\\\\b\"," REQ_TAIL, 0, GRANT_REJECT_UNSAFE_NAME,
     true},
    {"name NUL", "{\"id\":\"r-1\",\"name\":\"a\\u0000b\"," REQ_TAIL, 0, GRANT_REJECT_UNSAFE_NAME,
     true},
    {"name invalid utf8", "{\"id\":\"r-1\",\"name\":\"a\xc3\x28\"," REQ_TAIL, 0,
     GRANT_REJECT_UNSAFE_NAME, true},
    {"name overlong", "{\"id\":\"r-1\",\"name\":\"\xc0\xaf\"," REQ_TAIL, 0,
     GRANT_REJECT_UNSAFE_NAME, true},
    {"name empty", "{\"id\":\"r-1\",\"name\":\"\"," REQ_TAIL, 0, GRANT_REJECT_UNSAFE_NAME, true},
    {"name tab", "{\"id\":\"r-1\",\"name\":\"a\\tb\"," REQ_TAIL, 0, GRANT_REJECT_UNSAFE_NAME, true},
    {"missing size", "{\"id\":\"r-1\",\"name\":\"a\",\"content_type\":\"a/b\"}", 0,
     GRANT_REJECT_MISSING_FIELD, true},
    {"size zero", "{\"id\":\"r-1\",\"name\":\"a\",\"size\":0,\"content_type\":\"a/b\"}", 0,
     GRANT_REJECT_INVALID_FIELD, true},
    {"size negative", "{\"id\":\"r-1\",\"name\":\"a\",\"size\":-5,\"content_type\":\"a/b\"}", 0,
     GRANT_REJECT_INVALID_FIELD, true},
    {"size float", "{\"id\":\"r-1\",\"name\":\"a\",\"size\":5.0,\"content_type\":\"a/b\"}", 0,
     GRANT_REJECT_INVALID_FIELD, true},
    {"size exponent", "{\"id\":\"r-1\",\"name\":\"a\",\"size\":5e3,\"content_type\":\"a/b\"}", 0,
     GRANT_REJECT_INVALID_FIELD, true},
    {"size string", "{\"id\":\"r-1\",\"name\":\"a\",\"size\":\"5\",\"content_type\":\"a/b\"}", 0,
     GRANT_REJECT_INVALID_FIELD, true},
    {"size 2^53+1",
     "{\"id\":\"r-1\",\"name\":\"a\",\"size\":9007199254740993,\"content_type\":\"a/b\"}", 0,
     GRANT_REJECT_INVALID_FIELD, true},
    {"size overflow",
     "{\"id\":\"r-1\",\"name\":\"a\",\"size\":99999999999999999999999,\"content_type\":\"a/b\"}", 0,
     GRANT_REJECT_INVALID_FIELD, false},
    {"missing content type", "{\"id\":\"r-1\",\"name\":\"a\",\"size\":1}", 0,
     GRANT_REJECT_MISSING_FIELD, true},
    {"content type no slash", "{\"id\":\"r-1\",\"name\":\"a\",\"size\":1,\"content_type\":\"ab\"}",
     0, GRANT_REJECT_INVALID_FIELD, true},
    {"content type params",
     "{\"id\":\"r-1\",\"name\":\"a\",\"size\":1,\"content_type\":\"text/plain; charset=utf-8\"}", 0,
     GRANT_REJECT_INVALID_FIELD, true},
    {"content type two slashes",
     "{\"id\":\"r-1\",\"name\":\"a\",\"size\":1,\"content_type\":\"a/b/c\"}", 0,
     GRANT_REJECT_INVALID_FIELD, true},
    {"content type star", "{\"id\":\"r-1\",\"name\":\"a\",\"size\":1,\"content_type\":\"*/*\"}", 0,
     GRANT_REJECT_INVALID_FIELD, true},
    {"content type number", "{\"id\":\"r-1\",\"name\":\"a\",\"size\":1,\"content_type\":7}", 0,
     GRANT_REJECT_INVALID_FIELD, true},
    {"sha256 short", "{\"id\":\"r-1\",\"name\":\"a\",\"sha256\":\"abc\"," REQ_TAIL, 0,
     GRANT_REJECT_INVALID_FIELD, true},
    {"sha256 not hex",
     "{\"id\":\"r-1\",\"name\":\"a\",\"sha256\":"
     "\"zzb0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\"," REQ_TAIL,
     0, GRANT_REJECT_INVALID_FIELD, true},
    {"sha256 number", "{\"id\":\"r-1\",\"name\":\"a\",\"sha256\":1," REQ_TAIL, 0,
     GRANT_REJECT_INVALID_FIELD, true},
    {"method unknown", "{\"id\":\"r-1\",\"name\":\"a\",\"method\":\"multipart\"," REQ_TAIL, 0,
     GRANT_REJECT_INVALID_FIELD, true},
    {"method bool", "{\"id\":\"r-1\",\"name\":\"a\",\"method\":true," REQ_TAIL, 0,
     GRANT_REJECT_INVALID_FIELD, true},
};

static void test_rejections(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof reject_cases / sizeof reject_cases[0]; i++) {
        const reject_case *c = &reject_cases[i];
        grant_request req;
        grant_rejection rej;
        size_t len = c->len ? c->len : strlen(c->msg);
        ferry_err err = parse_str(c->msg, len, &req, &rej);
        if (err != FERRY_ERR_INVALID || rej.code != c->code || rej.has_id != c->has_id)
            fail_msg("case \"%s\": err=%d code=%s has_id=%d message=%s", c->label, err,
                     grant_reject_code_str(rej.code), rej.has_id, rej.message);
        if (c->has_id)
            assert_string_equal(rej.id, "r-1");
        assert_true(rej.message[0] != '\0');
        assert_printable(rej.message);
    }
}

static void test_ten_kb_name(void **state)
{
    (void)state;
    grant_request req;
    grant_rejection rej;
    size_t nlen = 10 * 1024;
    char *msg = malloc(nlen + 128);
    assert_non_null(msg);
    int n = snprintf(msg, 128, "{\"id\":\"r-1\",\"name\":\"");
    memset(msg + n, 'a', nlen);
    n += (int)nlen;
    n += snprintf(msg + n, 100, "\",\"size\":1,\"content_type\":\"a/b\"}");
    assert_int_equal(parse_str(msg, (size_t)n, &req, &rej), FERRY_ERR_INVALID);
    assert_int_equal(rej.code, GRANT_REJECT_UNSAFE_NAME);
    assert_true(rej.has_id);
    free(msg);
}

static void test_message_too_large(void **state)
{
    (void)state;
    grant_request req;
    grant_rejection rej;
    char *msg = malloc(GRANT_MESSAGE_MAX_BYTES + 1);
    assert_non_null(msg);
    memset(msg, ' ', GRANT_MESSAGE_MAX_BYTES + 1);
    assert_int_equal(parse_str(msg, GRANT_MESSAGE_MAX_BYTES + 1, &req, &rej), FERRY_ERR_INVALID);
    assert_int_equal(rej.code, GRANT_REJECT_MESSAGE_TOO_LARGE);
    assert_false(rej.has_id);
    /* At the cap exactly, the message is parsed (and is bad JSON here). */
    assert_int_equal(parse_str(msg, GRANT_MESSAGE_MAX_BYTES, &req, &rej), FERRY_ERR_INVALID);
    assert_int_equal(rej.code, GRANT_REJECT_MALFORMED_JSON);
    free(msg);
}

static void test_not_nul_terminated(void **state)
{
    (void)state;
    grant_request req;
    grant_rejection rej;
    /* The parser reads exactly len bytes: the tail after them is ignored. */
    const char *msg = "{\"id\":\"r\",\"name\":\"a\",\"size\":1,\"content_type\":\"a/b\"}GARBAGE";
    size_t len = strlen(msg) - 7;
    assert_int_equal(parse_str(msg, len, &req, &rej), FERRY_OK);
    assert_int_equal(grant_request_parse(NULL, 0, &req, &rej), FERRY_ERR_INVALID);
    assert_int_equal(rej.code, GRANT_REJECT_MALFORMED_JSON);
    assert_int_equal(grant_request_parse("{}", 2, &req, NULL), FERRY_ERR_INVALID);
}

static void test_unknown_field_message(void **state)
{
    (void)state;
    grant_request req;
    grant_rejection rej;
    const char *ok = "{\"id\":\"r\",\"colour\":1}";
    const char *odd = "{\"id\":\"r\",\"<script>\":1}";
    assert_int_equal(parse_str(ok, strlen(ok), &req, &rej), FERRY_ERR_INVALID);
    assert_string_equal(rej.message, "unknown field \"colour\"");
    assert_int_equal(parse_str(odd, strlen(odd), &req, &rej), FERRY_ERR_INVALID);
    assert_string_equal(rej.message, "unknown field");
}

static void test_rejection_json(void **state)
{
    (void)state;
    grant_rejection rej;
    char *json = NULL;
    grant_rejection_init(&rej, "r-42");
    grant_reject(&rej, GRANT_REJECT_TOO_LARGE, "size %d is over %d", 10, 5);
    assert_int_equal(grant_rejection_json(&rej, &json), FERRY_OK);
    assert_string_equal(json, "{\"type\":\"rejected\",\"id\":\"r-42\",\"code\":\"TooLarge\","
                              "\"message\":\"size 10 is over 5\"}");
    free(json);
    grant_rejection_init(&rej, "bad\nid");
    assert_false(rej.has_id);
    grant_reject(&rej, GRANT_REJECT_MALFORMED_JSON, "x");
    assert_int_equal(grant_rejection_json(&rej, &json), FERRY_OK);
    assert_string_equal(
        json, "{\"type\":\"rejected\",\"id\":null,\"code\":\"MalformedJson\",\"message\":\"x\"}");
    free(json);
    /* Quotes in an id are escaped by the JSON encoder. */
    grant_rejection_init(&rej, "a\"b");
    grant_reject(&rej, GRANT_REJECT_INTERNAL, "y");
    assert_int_equal(grant_rejection_json(&rej, &json), FERRY_OK);
    assert_non_null(strstr(json, "\"id\":\"a\\\"b\""));
    free(json);
}

static void test_code_names(void **state)
{
    (void)state;
    static const char *const expected[] = {
        "None",
        "MalformedJson",
        "MessageTooLarge",
        "DuplicateKey",
        "MissingField",
        "InvalidField",
        "UnknownField",
        "UnsafeName",
        "TooLarge",
        "ContentTypeNotAllowed",
        "QuotaExceeded",
        "RateLimited",
        "TooManyOpenGrants",
        "DeviceDisabled",
        "InvalidResponseTopic",
        "Internal",
    };
    assert_int_equal(sizeof expected / sizeof expected[0], GRANT_REJECT__COUNT);
    for (int i = 0; i < GRANT_REJECT__COUNT; i++)
        assert_string_equal(grant_reject_code_str((grant_reject_code)i), expected[i]);
    assert_string_equal(grant_reject_code_str((grant_reject_code)999), "Internal");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_full),
        cmocka_unit_test(test_valid_minimal_and_optional_null),
        cmocka_unit_test(test_rejections),
        cmocka_unit_test(test_ten_kb_name),
        cmocka_unit_test(test_message_too_large),
        cmocka_unit_test(test_not_nul_terminated),
        cmocka_unit_test(test_unknown_field_message),
        cmocka_unit_test(test_rejection_json),
        cmocka_unit_test(test_code_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
