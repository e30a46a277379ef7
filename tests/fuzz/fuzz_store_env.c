/*
 * fuzz_store_env.c - the store the store's fuzz targets send their inputs
 * to; see fuzz_store_env.h.
 */
#define _XOPEN_SOURCE 700
#include "fuzz_store_env.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <ftw.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "common/log.h"
#include "store/store.h"

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

static void stop_store(void)
{
    store_free(the_store);
    the_store = NULL;
    nftw(the_dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

int fuzz_store_port(const char *name)
{
    char ledger[128], data[128];
    if (the_store != NULL)
        return the_port;
    ferry_log_set_level(FERRY_LOG_ERROR);
    snprintf(the_dir, sizeof the_dir, "/tmp/ferry-fuzz-%.16s-XXXXXX", name);
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
        .pack_max_object = 1 << 20, /* as ferryd's default: small bodies to packs */
        .pack_size = 4 << 20,
        .max_connections = 16,
        .threads = 1,
        .idle_timeout_s = 1, /* inputs that stop short wait this long */
        .conn_memory_bytes = 65536,
        .max_headers = 64,
        .max_target_bytes = STORE_TARGET_DEFAULT,
        .max_header_bytes = STORE_HEADER_BYTES_DEFAULT,
    };
    if (the_port <= 0 || store_new(&cfg, &the_store) != 0)
        abort();
    atexit(stop_store);
    return the_port;
}

static size_t data_files(void)
{
    char p[512];
    size_t n = 0;
    for (int i = 0; i < 256; i++) {
        snprintf(p, sizeof p, "%s/store/objects/%02x", the_dir, i);
        DIR *d = opendir(p);
        struct dirent *e;
        if (d == NULL)
            continue;
        while ((e = readdir(d)) != NULL)
            if (e->d_name[0] != '.')
                n++;
        closedir(d);
    }
    /* Pack bytes count too: a pack may exist, but holds no data blocks
     * unless an upload was recorded (refused regions are punched). */
    snprintf(p, sizeof p, "%s/store/packs", the_dir);
    DIR *d = opendir(p);
    if (d != NULL) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            struct stat st;
            if (e->d_name[0] != '.' && fstatat(dirfd(d), e->d_name, &st, 0) == 0 &&
                st.st_blocks > 0)
                n++;
        }
        closedir(d);
    }
    return n;
}

void fuzz_store_expect_no_data_files(int wait_ms)
{
    for (int i = 0; i < wait_ms && data_files() > 0; i++)
        usleep(1000);
    if (data_files() > 0)
        abort();
}

int fuzz_store_connect(const char *name, int recv_timeout_s)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct timeval tv = {recv_timeout_s, 0};
    a.sin_port = htons((uint16_t)fuzz_store_port(name));
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0)
        abort();
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

void fuzz_store_send_all(int fd, const void *data, size_t size)
{
    size_t off = 0;
    while (off < size) {
        ssize_t n = send(fd, (const char *)data + off, size - off, MSG_NOSIGNAL);
        if (n <= 0)
            break;
        off += (size_t)n;
    }
}
