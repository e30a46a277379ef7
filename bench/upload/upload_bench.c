/*
 * upload_bench.c - HTTPS upload load generator for bench/upload: N PUTs of
 * SIZE bytes over C concurrent keep-alive connections (libcurl multi), to
 * the embedded store (each URL pre-signed with SigV4 by the operator
 * credential, as a client would) or to a plain WebDAV server (nginx).
 *
 *   ferry_bench_upload --base https://127.0.0.1:PORT/ingest --ca ca.pem
 *       --size BYTES --count N --concurrency C [--access-key K --secret S]
 *       [--slow RATE --hold SECONDS]
 *
 * Prints "req_per_s=… mb_per_s=… ok=… failed=… seconds=… tls=VERSION/SUITE"
 * (the protocol and cipher suite the server chose, read from the first
 * connection, so that a comparison can show both sides negotiated the
 * same). With --slow, every
 * connection sends at RATE bytes/s and the program exits after HOLD
 * seconds (the store's memory under many slow uploads is measured by the
 * caller). Bodies come from a 1 MiB random block repeated, so a 1 GB upload
 * needs no 1 GB of memory.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>

#include "common/buf.h"
#include "sigv4/sigv4.h"

#define BLOCK (1u << 20)

static unsigned char block[BLOCK];
static char tls[128]; /* "TLSv1.3/TLS_AES_256_GCM_SHA384", from the first body read */

typedef struct job {
    CURL *h;
    uint64_t sent;
    uint64_t size;
    char url[2048];
    struct curl_slist *hdrs;
} job;

static size_t read_body(char *buf, size_t sz, size_t n, void *arg)
{
    job *j = arg;
    size_t want = sz * n;
    if (tls[0] == '\0') {
        /* The TLS session is only reachable while a transfer runs. */
        struct curl_tlssessioninfo *info = NULL;
        if (curl_easy_getinfo(j->h, CURLINFO_TLS_SSL_PTR, &info) == CURLE_OK && info != NULL &&
            info->backend == CURLSSLBACKEND_OPENSSL && info->internals != NULL) {
            SSL *ssl = info->internals;
            snprintf(tls, sizeof tls, "%s/%s", SSL_get_version(ssl), SSL_get_cipher_name(ssl));
        }
    }
    uint64_t left = j->size - j->sent;
    if (want > left)
        want = (size_t)left;
    size_t off = (size_t)(j->sent % BLOCK);
    if (want > BLOCK - off)
        want = BLOCK - off;
    memcpy(buf, block + off, want);
    j->sent += want;
    return want;
}

static size_t discard(char *p, size_t sz, size_t n, void *arg)
{
    (void)p;
    (void)arg;
    return sz * n;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

typedef struct opts {
    const char *base; /* https://host:port/bucket or https://host:port/dav */
    const char *ca;
    const char *access_key;
    const char *secret;
    uint64_t size;
    long count;
    long concurrency;
} opts;

static int prepare(const opts *o, sigv4_signer *signer, job *j, long seq)
{
    char endpoint[512], path[512];
    const char *after = strstr(o->base, "://");
    const char *slash = after != NULL ? strchr(after + 3, '/') : NULL;
    if (slash == NULL)
        return -1;
    snprintf(endpoint, sizeof endpoint, "%.*s", (int)(slash - o->base), o->base);
    snprintf(path, sizeof path, "%s/bench/%ld-%d.bin", slash, seq, rand());
    if (signer != NULL) {
        ferry_buf url;
        ferry_buf_init(&url, sizeof j->url - 1);
        sigv4_presign_params p = {.method = "PUT", .endpoint = endpoint, .path = path,
                                  .expires_s = 3600};
        if (sigv4_presign(signer, &p, (int64_t)time(NULL), &url) != FERRY_OK) {
            ferry_buf_cleanup(&url);
            return -1;
        }
        snprintf(j->url, sizeof j->url, "%s", ferry_buf_str(&url));
        ferry_buf_cleanup(&url);
    } else {
        snprintf(j->url, sizeof j->url, "%s%s", endpoint, path);
    }
    j->sent = 0;
    j->size = o->size;
    curl_easy_setopt(j->h, CURLOPT_URL, j->url);
    curl_easy_setopt(j->h, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(j->h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)o->size);
    curl_easy_setopt(j->h, CURLOPT_READFUNCTION, read_body);
    curl_easy_setopt(j->h, CURLOPT_READDATA, j);
    curl_easy_setopt(j->h, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(j->h, CURLOPT_CAINFO, o->ca);
    curl_easy_setopt(j->h, CURLOPT_UPLOAD_BUFFERSIZE, 512L * 1024);
    curl_easy_setopt(j->h, CURLOPT_PRIVATE, j);
    if (j->hdrs == NULL)
        j->hdrs = curl_slist_append(NULL, "Expect:");
    curl_easy_setopt(j->h, CURLOPT_HTTPHEADER, j->hdrs);
    return 0;
}

int main(int argc, char **argv)
{
    opts o = {.size = 65536, .count = 1000, .concurrency = 32};
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (strcmp(k, "--base") == 0)
            o.base = v;
        else if (strcmp(k, "--ca") == 0)
            o.ca = v;
        else if (strcmp(k, "--access-key") == 0)
            o.access_key = v;
        else if (strcmp(k, "--secret") == 0)
            o.secret = v;
        else if (strcmp(k, "--size") == 0)
            o.size = strtoull(v, NULL, 10);
        else if (strcmp(k, "--count") == 0)
            o.count = strtol(v, NULL, 10);
        else if (strcmp(k, "--concurrency") == 0)
            o.concurrency = strtol(v, NULL, 10);
        else {
            fprintf(stderr, "ferry_bench_upload: unknown option %s\n", k);
            return 2;
        }
    }
    if (o.base == NULL || o.ca == NULL || o.count < 1 || o.concurrency < 1) {
        fprintf(stderr, "usage: ferry_bench_upload --base URL --ca FILE [--size B --count N "
                        "--concurrency C --access-key K --secret S]\n");
        return 2;
    }
    if (RAND_bytes(block, sizeof block) != 1)
        return 1;
    /* Keys differ from run to run: an unseeded rand() gave every run the
     * same keys, so later rounds replaced the earlier rounds' objects
     * (Ferry punching holes, nginx overwriting) instead of storing new ones. */
    srand((unsigned)time(NULL) ^ ((unsigned)getpid() << 16));
    curl_global_init(CURL_GLOBAL_DEFAULT);
    sigv4_signer *signer = NULL;
    if (o.access_key != NULL && o.secret != NULL) {
        signer = sigv4_signer_new(o.access_key, o.secret, "us-east-1", "s3");
        if (signer == NULL)
            return 1;
    }
    CURLM *m = curl_multi_init();
    curl_multi_setopt(m, CURLMOPT_MAX_TOTAL_CONNECTIONS, o.concurrency);
    job *jobs = calloc((size_t)o.concurrency, sizeof *jobs);
    long started = 0, ok = 0, failed = 0;
    double t0 = now_s();
    for (long i = 0; i < o.concurrency && started < o.count; i++) {
        jobs[i].h = curl_easy_init();
        if (prepare(&o, signer, &jobs[i], started++) != 0)
            return 1;
        curl_multi_add_handle(m, jobs[i].h);
    }
    int running = 1;
    while (running > 0) {
        curl_multi_perform(m, &running);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(m, &left)) != NULL) {
            if (msg->msg != CURLMSG_DONE)
                continue;
            job *j = NULL;
            long code = 0;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&j);
            curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &code);
            if (msg->data.result == CURLE_OK && code >= 200 && code < 300)
                ok++;
            else {
                if (failed < 3)
                    fprintf(stderr, "upload failed: %s http=%ld\n",
                            curl_easy_strerror(msg->data.result), code);
                failed++;
            }
            curl_multi_remove_handle(m, j->h);
            if (started < o.count) {
                if (prepare(&o, signer, j, started++) != 0)
                    return 1;
                curl_multi_add_handle(m, j->h);
                running++;
            }
        }
        if (running > 0)
            curl_multi_poll(m, NULL, 0, 100, NULL);
    }
    double el = now_s() - t0;
    printf("req_per_s=%.1f mb_per_s=%.1f ok=%ld failed=%ld seconds=%.2f tls=%s\n", (double)ok / el,
           (double)ok * (double)o.size / el / 1e6, ok, failed, el, tls[0] ? tls : "none");
    for (long i = 0; i < o.concurrency; i++) {
        if (jobs[i].h != NULL) {
            curl_multi_remove_handle(m, jobs[i].h);
            curl_easy_cleanup(jobs[i].h);
        }
        curl_slist_free_all(jobs[i].hdrs);
    }
    free(jobs);
    curl_multi_cleanup(m);
    sigv4_signer_free(signer);
    curl_global_cleanup();
    return failed > 0 ? 1 : 0;
}
