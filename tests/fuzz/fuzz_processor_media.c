/*
 * fuzz_processor_media.c - the example processor's WAV/PNG/JPEG header
 * parsers (examples/processors/media.c) on arbitrary bytes: uploaded
 * payloads are untrusted. Each input is tried as a whole file and as the
 * head of a larger one (total size > bytes present), the two ways the
 * processor calls the parser.
 */
#include <stddef.h>
#include <stdint.h>

#include "media.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    media_info info;
    const char *why = NULL;
    if (size > MEDIA_HEAD_MAX)
        size = MEDIA_HEAD_MAX;
    const uint64_t totals[] = {size, (uint64_t)size + 1000000, UINT64_MAX};
    for (size_t i = 0; i < sizeof totals / sizeof totals[0]; i++) {
        /* A result that claims more than the bytes allow is a parser bug. */
        if (media_identify(data, size, totals[i], &info, &why) == FERRY_OK &&
            info.kind == MEDIA_WAV && info.data_bytes > totals[i])
            __builtin_trap();
    }
    return 0;
}
