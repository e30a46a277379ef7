/*
 * fuzz_store_head.c - libFuzzer target for the embedded store's request
 * admission: whatever bytes a client sends as a request (request line,
 * header section, the start of a body), through libmicrohttpd's parser and
 * the store's own limits on the request target, the header section and the
 * header count (store.c, begin()), the path and key checks, and the PUT and
 * POST paths up to their data file.
 *
 * A real store (plain HTTP, a temporary data directory and ledger, the
 * default limits) runs in this process on a loopback port; each input is
 * sent as is on a fresh connection, whose sending side is then closed.
 * Properties: the store never crashes (ASan/UBSan in the test build), ends
 * every connection within a few seconds with answers that are HTTP
 * responses (or with none: libmicrohttpd drops what is not HTTP), and
 * leaves no data file behind.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "fuzz_store_env.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char buf[16384];
    char first[8];
    size_t first_len = 0;
    if (size > (256u << 10))
        return 0;
    int fd = fuzz_store_connect("head", 1);
    fuzz_store_send_all(fd, data, size);
    shutdown(fd, SHUT_WR);
    /* Everything the store says, until it closes; with our side closed it
     * must close within a few seconds whatever the input was. */
    double deadline = now_s() + 10;
    for (;;) {
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n == 0)
            break;
        if (n < 0) {
            if (now_s() > deadline)
                abort(); /* the store held the connection */
            continue;
        }
        for (ssize_t i = 0; i < n && first_len < sizeof first; i++)
            first[first_len++] = buf[i];
    }
    close(fd);
    /* Whatever comes back is an HTTP response. */
    if (first_len > 0 && (first_len < 7 || memcmp(first, "HTTP/1.", 7) != 0))
        abort();
    /* Once the connection is over, nothing partial is left. */
    fuzz_store_expect_no_data_files(500);
    return 0;
}
