/*
 * fuzz_grant_request.c - libFuzzer target for the upload request parser
 * (grant_request_parse), the first code to see a device's bytes.
 *
 * Beyond "no crash, no leak, no undefined behaviour" (the sanitizers), it
 * checks the parser's promises: every outcome is a request or a rejection
 * with a known code; a rejection's message and id are printable ASCII (safe
 * to echo) and render as JSON; a request's name re-sanitises to itself and
 * builds a valid object key; its content type and sha256 are in their
 * normalised forms.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "grants/grants.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_printable(const char *s)
{
    for (; *s != '\0'; s++) {
        if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7E)
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    grant_request req;
    grant_rejection rej;
    ferry_err err = grant_request_parse((const char *)data, size, &req, &rej);

    if (err == FERRY_OK) {
        char again[GRANT_SAFE_NAME_MAX + 1];
        char key[GRANT_KEY_MAX + 1];
        if (grant_safe_name(req.name, strlen(req.name), again, sizeof again, NULL) != FERRY_OK ||
            strcmp(again, req.name) != 0)
            abort();
        if (grant_object_key("dev-1", 1795000000, "g_0123456789abcdefghjkmnpqrs", req.name, key,
                             sizeof key) != FERRY_OK)
            abort();
        if (req.size < 1 || req.size > GRANT_SIZE_MAX)
            abort();
        check_printable(req.id);
        for (const char *c = req.content_type; *c != '\0'; c++) {
            if (*c >= 'A' && *c <= 'Z')
                abort();
        }
        if (req.has_sha256 && (strlen(req.sha256_hex) != 64 || strlen(req.sha256_b64) != 44))
            abort();
        return 0;
    }
    if (err != FERRY_ERR_INVALID && err != FERRY_ERR_NOMEM)
        abort();
    if (rej.code <= GRANT_REJECT_NONE || rej.code >= GRANT_REJECT__COUNT)
        abort();
    check_printable(rej.message);
    if (rej.has_id)
        check_printable(rej.id);
    char *json = NULL;
    if (grant_rejection_json(&rej, &json) != FERRY_OK)
        abort();
    free(json);
    return 0;
}
