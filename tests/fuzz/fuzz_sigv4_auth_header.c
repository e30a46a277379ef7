/*
 * fuzz_sigv4_auth_header.c - libFuzzer target for the Authorization header
 * parser, the credential-scope parser and the header-auth verifier
 * (src/sigv4). The input is the header's value.
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
    char *value = malloc(size + 1);
    if (value == NULL)
        return 0;
    memcpy(value, data, size);
    value[size] = '\0';

    sigv4_auth_header ah;
    if (sigv4_parse_auth_header(value, &ah) == SIGV4_R_OK) {
        sigv4_scope sc;
        if (strlen(ah.signature) > 64 || strcmp(ah.algorithm, SIGV4_ALGORITHM) != 0)
            abort();
        (void)sigv4_parse_credential(ah.credential, &sc);
    }
    sigv4_kv headers[] = {
        {"Host", "example.amazonaws.com"},
        {"X-Amz-Date", "20150830T123600Z"},
        {"x-amz-content-sha256", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"Authorization", value},
    };
    sigv4_verifier v = {.region = "us-east-1", .service = "service", .lookup = lookup};
    sigv4_request r = {.method = "GET", .path = "/", .query = "", .headers = headers,
                       .n_headers = 4};
    sigv4_verdict vd;
    ferry_err err = sigv4_verify_header(&v, &r, INT64_C(1440938160), &vd);
    if ((err == FERRY_OK) != (vd.reason == SIGV4_R_OK))
        abort();
    free(value);
    return 0;
}
