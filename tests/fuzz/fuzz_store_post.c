/*
 * fuzz_store_post.c - libFuzzer target for the embedded store's form-upload
 * path: libmicrohttpd's multipart/form-data post processor as the store
 * drives it, the store's field accumulation (names, pieces, caps), the POST
 * policy verification at the file field, the key built from ${filename},
 * and the body written to its data file and committed or removed.
 *
 * A real store (plain HTTP, a temporary data directory and ledger) runs in
 * this process on a loopback port; each input is sent as the body of
 * "POST /ingest" with a fixed multipart boundary, and the answer is read.
 * Properties: the store answers every input (a status line comes back) and
 * leaves no data file behind once it has answered (no input carries a valid
 * signature, so no upload may be recorded: every file under objects/ is a
 * leftover).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fuzz_store_env.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char head[256];
    char answer[512];
    ssize_t got = 0;
    if (size > (1 << 20))
        return 0;
    int fd = fuzz_store_connect("post", 5);
    int hl = snprintf(head, sizeof head,
                      "POST /ingest HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                      "Content-Type: multipart/form-data; boundary=FerryFuzz\r\n"
                      "Content-Length: %zu\r\n\r\n",
                      size);
    if (send(fd, head, (size_t)hl, MSG_NOSIGNAL) != hl)
        abort();
    fuzz_store_send_all(fd, data, size);
    got = recv(fd, answer, sizeof answer - 1, 0);
    close(fd);
    if (got < 12 || memcmp(answer, "HTTP/1.1 ", 9) != 0)
        abort(); /* every request gets an answer */
    /* Once answered, nothing partial is left. */
    fuzz_store_expect_no_data_files(200);
    return 0;
}
