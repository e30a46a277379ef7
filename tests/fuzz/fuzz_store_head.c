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
#include <arpa/inet.h>
#include <dirent.h>
#include <ftw.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "store/store.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static store *the_store;
static int the_port;
static char the_dir[64];

static int pick_port(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int port = -1;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

/* At exit: the store stopped and its temporary directory removed, so that
 * replays in every test run leave nothing in /tmp. */
static void stop_store(void)
{
    store_free(the_store);
    the_store = NULL;
    nftw(the_dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void start_store(void)
{
    char ledger[128], data[128];
    ferry_log_set_level(FERRY_LOG_ERROR);
    snprintf(the_dir, sizeof the_dir, "/tmp/ferry-fuzz-head-XXXXXX");
    if (mkdtemp(the_dir) == NULL)
        abort();
    snprintf(ledger, sizeof ledger, "%s/ledger.db", the_dir);
    snprintf(data, sizeof data, "%s/store", the_dir);
    the_port = pick_port();
    store_config cfg = {
        .listen = "127.0.0.1",
        .port = the_port,
        .plain_http = true,
        .data_dir = data,
        .ledger_url = ledger,
        .bucket = "ingest",
        .region = "us-east-1",
        .grant_access_key = "ferry-grants",
        .grant_secret = "grant-secret-for-fuzzing-only",
        .operator_access_key = "ferry-operator",
        .operator_secret = "operator-secret-for-fuzzing-only",
        .max_object_size = 1 << 20,
        .max_connections = 16,
        .threads = 1,
        .idle_timeout_s = 2,
        .conn_memory_bytes = 65536,
        .max_headers = 64,
        .max_target_bytes = STORE_TARGET_DEFAULT,
        .max_header_bytes = STORE_HEADER_BYTES_DEFAULT,
    };
    if (the_port <= 0 || store_new(&cfg, &the_store) != 0)
        abort();
    atexit(stop_store);
}

static size_t count_data_files(const char *dir)
{
    char p[512];
    size_t n = 0;
    for (int i = 0; i < 256; i++) {
        snprintf(p, sizeof p, "%s/store/objects/%02x", dir, i);
        DIR *d = opendir(p);
        struct dirent *e;
        if (d == NULL)
            continue;
        while ((e = readdir(d)) != NULL)
            if (e->d_name[0] != '.') /* no input is validly signed: any file is left over */
                n++;
        closedir(d);
    }
    return n;
}

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
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct timeval tv = {1, 0};
    if (the_store == NULL)
        start_store();
    if (size > (256u << 10))
        return 0;
    a.sin_port = htons((uint16_t)the_port);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0)
        abort();
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    /* The store may answer (and close) before it has read everything. */
    size_t off = 0;
    while (off < size) {
        ssize_t n = send(fd, data + off, size - off, MSG_NOSIGNAL);
        if (n <= 0)
            break;
        off += (size_t)n;
    }
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
    /* Once the connection is over, nothing partial is left (the completion
     * callback may run just after the close: give it a moment). */
    for (int i = 0; i < 500 && count_data_files(the_dir) > 0; i++)
        usleep(1000);
    if (count_data_files(the_dir) > 0)
        abort();
    return 0;
}
