/*
 * pki_csr_fuzz.c - fuzz target for the CSR parser (pki_csr_public_key): a
 * CSR arrives from a device, so its bytes are hostile. Any input must end
 * in FERRY_OK with a key, or an error with a message; never a crash, a
 * leak or an OpenSSL error left on the thread's queue.
 */
#include <stddef.h>
#include <stdint.h>

#include <openssl/err.h>
#include <openssl/evp.h>

#include "pki/pki_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256];
    EVP_PKEY *key = NULL;
    err[0] = '\0';
    ferry_err result = pki_csr_public_key((const char *)data, size, &key, err, sizeof err);
    if (result == FERRY_OK) {
        if (key == NULL)
            __builtin_trap();
        EVP_PKEY_free(key);
    } else if (key != NULL || err[0] == '\0') {
        /* Out-parameters are written only on success; failures explain. */
        __builtin_trap();
    }
    if (ERR_peek_error() != 0)
        __builtin_trap();
    return 0;
}
