/*
 * fuzz_store_request.c - libFuzzer target for the embedded store's request
 * handling that runs before any disk or ledger access (src/store/store_req.h):
 * the request target split into path and query, the path into bucket and
 * key (percent-decoding, UTF-8 and control-character checks, lengths), the
 * S3 sub-resource a query names (store_query_subresource), the grant id
 * taken from the key, the Range header (and the same line as UploadPartCopy's
 * x-amz-copy-source-range, as a ?partNumber= value and as an HTTP date), and the escaping of
 * keys into XML and URLs. The input is "<request target>\n<range header>".
 *
 * Properties checked (abort on violation): an accepted key is within
 * STORE_KEY_MAX, passes store_key_check, and contains no NUL; a resolved
 * range (Range or copy range) lies inside the object; a part number accepted
 * is 1..10,000; escaped output never contains '<' from the
 * key.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sigv4/sigv4.h"
#include "store/store_req.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *in = malloc(size + 1);
    if (in == NULL)
        return 0;
    memcpy(in, data, size);
    in[size] = '\0';
    char *nl = memchr(in, '\n', size);
    const char *range = "";
    if (nl != NULL) {
        *nl = '\0';
        range = nl + 1;
    }
    size_t target_len = strlen(in);
    char *q = strchr(in, '?');
    size_t path_len = q != NULL ? (size_t)(q - in) : target_len;

    store_target t;
    if (store_parse_path(in, path_len, &t) == STORE_PATH_OK) {
        if (t.key_len > STORE_KEY_MAX || memchr(t.key, '\0', t.key_len) != NULL)
            abort();
        if (t.key_len > 0 && !store_key_check(t.key, t.key_len))
            abort();
        char gid[80];
        (void)store_key_grant_id(t.key, gid, sizeof gid);
        ferry_buf b;
        ferry_buf_init(&b, 16 * 1024);
        if (store_xml_escape(&b, t.key, t.key_len) == FERRY_OK && b.data != NULL &&
            memchr(b.data, '<', b.len) != NULL)
            abort();
        ferry_buf_reset(&b);
        if (store_url_encode(&b, t.key, t.key_len) == FERRY_OK && b.data != NULL &&
            memchr(b.data, ' ', b.len) != NULL)
            abort();
        ferry_buf_cleanup(&b);
    }
    if (q != NULL) {
        sigv4_query parsed;
        if (sigv4_parse_query(q + 1, &parsed) == SIGV4_R_OK)
            sigv4_query_cleanup(&parsed);
        /* A sub-resource found is a short, NUL-free name that occurs in
         * the query (escaped or not). */
        char sub[40];
        if (store_query_subresource(q + 1, strlen(q + 1), sub, sizeof sub) &&
            (sub[0] == '\0' || strlen(sub) > 32))
            abort();
    }
    uint64_t sizes[] = {0, 1, 10, 1u << 20, UINT64_MAX / 2};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        uint64_t first = 0, len = 0;
        if (store_parse_range(range, sizes[i], &first, &len) == STORE_RANGE_OK) {
            if (len == 0 || first >= sizes[i] || len > sizes[i] - first)
                abort();
        }
    }
    /* The same line as x-amz-copy-source-range and as ?partNumber=. */
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        uint64_t first = 0, len = 0;
        if (store_parse_copy_range(range, sizes[i], &first, &len) == STORE_COPY_RANGE_OK) {
            if (len == 0 || first >= sizes[i] || len > sizes[i] - first)
                abort();
        }
    }
    unsigned part = 0;
    if (store_parse_part_number(range, &part) && (part < 1 || part > STORE_PART_NUMBER_MAX))
        abort();
    int64_t when = 0;
    if (store_parse_http_date(range, &when) && when < 0)
        abort();
    unsigned char dig[32];
    (void)store_b64_decode_exact(range, dig, 32);
    (void)store_b64_decode_exact(range, dig, 16);
    free(in);
    return 0;
}
