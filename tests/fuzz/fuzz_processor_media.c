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
    (void)media_identify(data, size, size, &info, &why);
    (void)media_identify(data, size, (uint64_t)size + 1000000, &info, &why);
    (void)media_identify(data, size, UINT64_MAX, &info, &why);
    return 0;
}
