/*
 * fuzz_sigv4_policy.c - libFuzzer target for the POST policy parser
 * (base64, JSON, conditions) of src/sigv4. The input is the policy field as
 * a client would send it (base64 text). The store only reaches this parser
 * after the policy's signature checked out; the fuzzer goes straight in.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sigv4.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sigv4_policy *pol = NULL;
    sigv4_reason r = sigv4_policy_parse((const char *)data, size, &pol);
    if ((r == SIGV4_R_OK) != (pol != NULL))
        abort();
    if (pol != NULL)
        (void)sigv4_policy_expiration(pol);
    sigv4_policy_free(pol);
    return 0;
}
