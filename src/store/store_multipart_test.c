/*
 * store_multipart_test.c - unit tests of the CompleteMultipartUpload part
 * list parser (store_mp_parse_complete): the documents real clients send
 * (AWS CLI, boto3 with checksums, quotes as entities, namespaces), and the
 * strictness that makes it safe on hostile input (DOCTYPE, attributes,
 * unknown elements, stray text, sizes and counts); and the test of a
 * query string for multipart sub-resources (store_mp_query).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/store_multipart.h"

#define HEX_A "0cc175b9c0f1b6a831c399e269772661"

static store_mp_part_ref parts[STORE_MP_PARTS_MAX];

static ferry_err parse(const char *xml, size_t max, size_t *n)
{
    const char *why = NULL;
    ferry_err e = store_mp_parse_complete(xml, strlen(xml), parts, max, n, &why);
    assert_non_null(why);
    return e;
}

static void test_clients_documents(void **state)
{
    size_t n = 0;
    (void)state;
    /* The AWS CLI: S3's namespace, ETag before PartNumber, quotes. */
    assert_int_equal(parse("<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/"
                           "2006-03-01/\"><Part><ETag>\"" HEX_A "\"</ETag><PartNumber>1"
                           "</PartNumber></Part><Part><ETag>\"" HEX_A "\"</ETag><PartNumber>"
                           "7</PartNumber></Part></CompleteMultipartUpload>",
                           10, &n),
                     FERRY_OK);
    assert_int_equal(n, 2);
    assert_int_equal(parts[0].number, 1);
    assert_int_equal(parts[1].number, 7);
    assert_true(parts[0].etag_ok);
    assert_string_equal(parts[0].etag, HEX_A);
    /* Pretty-printed, &quot;, upper-case hex, a checksum, a declaration. */
    assert_int_equal(parse("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                           "<CompleteMultipartUpload>\n <Part>\n  <PartNumber> 0003 </PartNumber>\n"
                           "  <ETag>&quot;0CC175B9C0F1B6A831C399E269772661&quot;</ETag>\n"
                           "  <ChecksumSHA256>abc=</ChecksumSHA256>\n </Part>\n"
                           "</CompleteMultipartUpload>\n",
                           10, &n),
                     FERRY_OK);
    assert_int_equal(n, 1);
    assert_int_equal(parts[0].number, 3);
    assert_string_equal(parts[0].etag, HEX_A);
    /* An ETag that is no MD5 parses, marked not ok (the store answers
     * InvalidPart, as S3 does for an ETag that matches no part). */
    assert_int_equal(parse("<CompleteMultipartUpload><Part><PartNumber>1</PartNumber>"
                           "<ETag>\"abc\"</ETag></Part></CompleteMultipartUpload>",
                           10, &n),
                     FERRY_OK);
    assert_false(parts[0].etag_ok);
}

static void test_hostile_documents(void **state)
{
    static const char *const bad[] = {
        "",
        "not xml",
        "<CompleteMultipartUpload>",
        "<CompleteMultipartUpload></CompleteMultipartUpload>",
        "<Other><Part><PartNumber>1</PartNumber><ETag>x</ETag></Part></Other>",
        "<CompleteMultipartUpload a=\"b\"><Part><PartNumber>1</PartNumber><ETag>x</ETag></Part>"
        "</CompleteMultipartUpload>",
        "<x:CompleteMultipartUpload xmlns:x=\"urn:other\"><x:Part/></x:CompleteMultipartUpload>",
        "<CompleteMultipartUpload><Part><ETag>x</ETag></Part></CompleteMultipartUpload>",
        "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber></Part>"
        "</CompleteMultipartUpload>",
        "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><PartNumber>2</PartNumber>"
        "<ETag>x</ETag></Part></CompleteMultipartUpload>",
        "<CompleteMultipartUpload><Part><PartNumber>123456</PartNumber><ETag>x</ETag></Part>"
        "</CompleteMultipartUpload>",
        "<CompleteMultipartUpload><Part><PartNumber>-1</PartNumber><ETag>x</ETag></Part>"
        "</CompleteMultipartUpload>",
        "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>x</ETag><Size>1</Size>"
        "</Part></CompleteMultipartUpload>",
        "<CompleteMultipartUpload>text<Part><PartNumber>1</PartNumber><ETag>x</ETag></Part>"
        "</CompleteMultipartUpload>",
        "<CompleteMultipartUpload><Part><PartNumber>1<b/></PartNumber><ETag>x</ETag></Part>"
        "</CompleteMultipartUpload>",
        "<?xml version=\"1.0\"?><!DOCTYPE l [<!ENTITY a \"aaaa\">]>"
        "<CompleteMultipartUpload>&a;</CompleteMultipartUpload>",
        "<!DOCTYPE x SYSTEM \"file:///etc/passwd\"><CompleteMultipartUpload/>",
        "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>x</ETag></Part>"
        "</CompleteMultipartUpload><extra/>",
    };
    size_t n = 77;
    (void)state;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (parse(bad[i], 10, &n) != FERRY_ERR_INVALID)
            fail_msg("accepted: %s", bad[i]);
        assert_int_equal(n, 77); /* not written on failure */
    }
}

static void test_bounds(void **state)
{
    char *doc = malloc(STORE_MP_XML_MAX + 64);
    size_t len = 0, n = 0;
    const char *why = NULL;
    (void)state;
    assert_non_null(doc);
    /* A leaf of 128 bytes is fine, 129 is not. */
    len = (size_t)snprintf(doc, 512,
                           "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>%0128d"
                           "</ETag></Part></CompleteMultipartUpload>",
                           0);
    assert_int_equal(store_mp_parse_complete(doc, len, parts, 10, &n, &why), FERRY_OK);
    len = (size_t)snprintf(doc, 512,
                           "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>%0129d"
                           "</ETag></Part></CompleteMultipartUpload>",
                           0);
    assert_int_equal(store_mp_parse_complete(doc, len, parts, 10, &n, &why), FERRY_ERR_INVALID);
    /* More parts than max. */
    len = (size_t)snprintf(doc, 1024,
                           "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>a"
                           "</ETag></Part><Part><PartNumber>2</PartNumber><ETag>a</ETag></Part>"
                           "</CompleteMultipartUpload>");
    assert_int_equal(store_mp_parse_complete(doc, len, parts, 2, &n, &why), FERRY_OK);
    assert_int_equal(store_mp_parse_complete(doc, len, parts, 1, &n, &why), FERRY_ERR_INVALID);
    /* Over STORE_MP_XML_MAX, whatever it holds. */
    memset(doc, ' ', STORE_MP_XML_MAX + 1);
    assert_int_equal(store_mp_parse_complete(doc, STORE_MP_XML_MAX + 1, parts, 10, &n, &why),
                     FERRY_ERR_INVALID);
    free(doc);
}

static void test_query(void **state)
{
    char sub[40] = "";
    (void)state;
    assert_true(store_mp_query("uploads", sub, sizeof sub));
    assert_true(store_mp_query("partNumber=1&uploadId=abc&X-Amz-Signature=00", sub, sizeof sub));
    assert_true(store_mp_query("uploads&prefix=a&max-uploads=3", sub, sizeof sub));
    assert_false(store_mp_query("uploadId=abc&acl", sub, sizeof sub));
    assert_string_equal(sub, "acl");
    assert_false(store_mp_query("uploads&%74agging", sub, sizeof sub));
    assert_string_equal(sub, "tagging");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_clients_documents),
        cmocka_unit_test(test_hostile_documents),
        cmocka_unit_test(test_bounds),
        cmocka_unit_test(test_query),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
