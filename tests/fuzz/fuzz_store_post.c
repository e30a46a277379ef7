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
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "fuzz_store_env.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char head[256];
    char answer[512];
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct timeval tv = {5, 0};
    ssize_t got = 0;
    int port = fuzz_store_port("post");
    if (size > (1 << 20))
        return 0;
    a.sin_port = htons((uint16_t)port);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0)
        abort();
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    int hl = snprintf(head, sizeof head,
                      "POST /ingest HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                      "Content-Type: multipart/form-data; boundary=FerryFuzz\r\n"
                      "Content-Length: %zu\r\n\r\n",
                      size);
    if (send(fd, head, (size_t)hl, MSG_NOSIGNAL) != hl)
        abort();
    /* The store may answer (and close) before it has read everything. */
    size_t off = 0;
    while (off < size) {
        ssize_t n = send(fd, data + off, size - off, MSG_NOSIGNAL);
        if (n <= 0)
            break;
        off += (size_t)n;
    }
    got = recv(fd, answer, sizeof answer - 1, 0);
    close(fd);
    if (got < 12 || memcmp(answer, "HTTP/1.1 ", 9) != 0)
        abort(); /* every request gets an answer */
    /* Once answered, nothing partial is left (the completion callback may
     * run just after the answer: give it a moment). */
    for (int i = 0; i < 200 && fuzz_store_data_files() > 0; i++)
        usleep(1000);
    if (fuzz_store_data_files() > 0)
        abort();
    return 0;
}
