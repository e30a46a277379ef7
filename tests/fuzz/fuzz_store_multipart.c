/*
 * fuzz_store_multipart.c - libFuzzer target for the embedded store's
 * CompleteMultipartUpload parser (store_mp_parse_complete, expat underneath)
 * and for the test that decides whether a query string names a multipart
 * call (store_mp_query). The same bytes go to both: once as the XML body,
 * once (up to its first NUL) as a raw query string.
 *
 * Properties checked (abort on violation): a parse that succeeds returns
 * 1..max parts, numbers of at most five digits, and an ETag marked valid
 * only when it is 32 lower-case hex digits; with a smaller max the parse
 * gives the same parts or fails (never more than max); a parse that fails
 * says why.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "store/store_multipart.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static store_mp_part_ref parts[STORE_MP_PARTS_MAX];
static store_mp_part_ref few[3];

static void check_parts(const store_mp_part_ref *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i].number > 99999)
            abort();
        if (p[i].etag_ok) {
            if (strlen(p[i].etag) != 32)
                abort();
            for (size_t j = 0; j < 32; j++)
                if (strchr("0123456789abcdef", p[i].etag[j]) == NULL)
                    abort();
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *xml = (const char *)data;
    const char *why = NULL;
    size_t n = 0, n_few = 0;
    ferry_err e = store_mp_parse_complete(xml, size, parts, STORE_MP_PARTS_MAX, &n, &why);
    if (e == FERRY_OK) {
        if (n == 0 || n > STORE_MP_PARTS_MAX)
            abort();
        check_parts(parts, n);
    } else if (why == NULL || why[0] == '\0') {
        abort();
    }
    ferry_err e2 = store_mp_parse_complete(xml, size, few, 3, &n_few, &why);
    if (e2 == FERRY_OK) {
        if (e != FERRY_OK || n_few != n || n_few > 3 ||
            memcmp(few, parts, n_few * sizeof few[0]) != 0)
            abort();
    } else if (e == FERRY_OK && n <= 3 && e2 != FERRY_ERR_NOMEM) {
        abort();
    }

    char *q = malloc(size + 1);
    if (q == NULL)
        return 0;
    memcpy(q, data, size);
    q[size] = '\0';
    char sub[40];
    memset(sub, 0, sizeof sub);
    if (!store_mp_query(q, sub, sizeof sub) && sub[0] == '\0')
        abort(); /* refused without naming the other sub-resource */
    free(q);
    return 0;
}
