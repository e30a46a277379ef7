/*
 * fuzz_sigv4_query.c - libFuzzer target for the SigV4 query-string parser
 * and the query-auth verifier that consumes it (src/sigv4). The input is a
 * raw query string as it would follow '?' in a request line.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sigv4.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static ferry_err lookup(void *ctx, const char *akid, ferry_buf *out)
{
    (void)ctx;
    if (strcmp(akid, "AKIDEXAMPLE") != 0)
        return FERRY_ERR_NOT_FOUND;
    return ferry_buf_append_str(out, "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *q = malloc(size + 1);
    if (q == NULL)
        return 0;
    memcpy(q, data, size);
    q[size] = '\0';

    sigv4_query parsed;
    if (sigv4_parse_query(q, &parsed) == SIGV4_R_OK) {
        for (size_t i = 0; i < parsed.n; i++)
            if (strlen(parsed.params[i].name) != parsed.params[i].name_len)
                abort();
        sigv4_query_cleanup(&parsed);
    }
    static const sigv4_kv headers[] = {{"Host", "127.0.0.1:9000"}, {"Content-Type", "a/b"}};
    sigv4_verifier v = {.region = "us-east-1", .service = "s3", .lookup = lookup};
    sigv4_request r = {.method = "PUT", .path = "/bucket/key", .query = q, .headers = headers,
                       .n_headers = 2};
    sigv4_verdict vd;
    ferry_err err = sigv4_verify_request(&v, &r, INT64_C(1440938160), &vd);
    if ((err == FERRY_OK) != (vd.reason == SIGV4_R_OK))
        abort();
    free(q);
    return 0;
}
