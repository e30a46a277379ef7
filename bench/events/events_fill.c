/*
 * events_fill.c - fills the event outbox of a ledger for bench/events: N
 * objects stored under N grants, written through the ledger's own C API as
 * ferryd writes them (ledger_grant_insert_batch, then
 * ledger_object_put_batch: object, event and one delivery row per active
 * target in one transaction), so the backlog ferryd then drains holds the
 * same rows an upload leaves behind.
 *
 *   ferry_bench_events_fill LEDGER N [DEVICES]
 *
 * The ledger must already know its active targets (ferryd started once on
 * it); ferryd must not be running. Every key is distinct (one key per
 * object), so per-key order never holds a delivery back: what is measured
 * is the outbox's throughput, not the order rule. Prints
 * `fill: events=N seconds=S` on stdout; exits 1 with a message on stderr
 * on any error (a refused item included: the backlog must be exactly N).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "common/timefmt.h"
#include "ledger/ledger.h"

#define FILL_BATCH 500
#define FILL_MAX   10000000L

/* Lower-case hex of the digest md of data. */
static int digest_hex(const EVP_MD *md, const void *data, size_t len, char *out, size_t out_size)
{
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    if (EVP_Digest(data, len, d, &n, md, NULL) != 1 || out_size < (size_t)n * 2 + 1)
        return -1;
    for (unsigned int i = 0; i < n; i++)
        snprintf(out + i * 2, 3, "%02x", d[i]);
    return 0;
}

/* A grant id shaped like ferryd's ("g_" + 26 base32 digits): i in base 32,
 * zero-padded, so ids are distinct and sort as they were written. */
static void grant_id(long i, char *out, size_t size)
{
    static const char b32[] = "abcdefghijklmnopqrstuvwxyz234567";
    char s[27];
    uint64_t v = (uint64_t)i;
    for (int k = 25; k >= 0; k--, v >>= 5)
        s[k] = b32[v & 31];
    s[26] = '\0';
    snprintf(out, size, "g_%s", s);
}

static int fill_batch(ledger *l, long first, long n, long devices, int64_t now,
                      ledger_grant *grants, ledger_insert *ins, ledger_object *objs,
                      ledger_object_put_item *puts)
{
    ferry_err err;
    for (long j = 0; j < n; j++) {
        long i = first + j;
        ledger_grant *g = &grants[j];
        ledger_object *o = &objs[j];
        char body[96];
        int blen = snprintf(body, sizeof body, "bench payload %ld", i);
        memset(g, 0, sizeof *g);
        memset(o, 0, sizeof *o);
        grant_id(i, g->id, sizeof g->id);
        snprintf(g->device, sizeof g->device, "bench-%ld", i % devices);
        snprintf(g->request_id, sizeof g->request_id, "r-%ld", i);
        snprintf(g->key, sizeof g->key, "%s/2026/11/25/%08ld-reading.wav", g->device, i);
        snprintf(g->bucket, sizeof g->bucket, "ingest");
        snprintf(g->method, sizeof g->method, "PUT");
        g->size = (uint64_t)(96044 + i % 4096);
        snprintf(g->content_type, sizeof g->content_type, "audio/wav");
        if (digest_hex(EVP_sha256(), body, (size_t)blen, g->sha256, sizeof g->sha256) != 0 ||
            digest_hex(EVP_md5(), body, (size_t)blen, o->etag, sizeof o->etag) != 0) {
            fprintf(stderr, "events_fill: digest failed\n");
            return -1;
        }
        g->state = LEDGER_GRANT_ISSUED;
        g->issued_at = now;
        g->expires_at = now + 3600;
        ins[j] = (ledger_insert){.grant = g};

        snprintf(o->bucket, sizeof o->bucket, "%s", g->bucket);
        snprintf(o->key, sizeof o->key, "%s", g->key);
        snprintf(o->file_id, sizeof o->file_id, "f%031ld", i);
        o->size = g->size;
        snprintf(o->sha256, sizeof o->sha256, "%s", g->sha256);
        snprintf(o->content_type, sizeof o->content_type, "%s", g->content_type);
        snprintf(o->device, sizeof o->device, "%s", g->device);
        snprintf(o->grant_id, sizeof o->grant_id, "%s", g->id);
        o->created_at = now;
        puts[j] = (ledger_object_put_item){.obj = o, .now = now};
    }
    if ((err = ledger_grant_insert_batch(l, ins, (size_t)n)) != FERRY_OK) {
        fprintf(stderr, "events_fill: grants: %s\n", ferry_err_str(err));
        return -1;
    }
    for (long j = 0; j < n; j++) {
        if (ins[j].err != FERRY_OK || ins[j].verdict != LEDGER_INSERTED) {
            fprintf(stderr, "events_fill: grant %s refused: %s\n", grants[j].id,
                    ferry_err_str(ins[j].err));
            return -1;
        }
    }
    if ((err = ledger_object_put_batch(l, puts, (size_t)n)) != FERRY_OK) {
        fprintf(stderr, "events_fill: objects: %s\n", ferry_err_str(err));
        return -1;
    }
    for (long j = 0; j < n; j++) {
        if (puts[j].err != FERRY_OK) {
            fprintf(stderr, "events_fill: object %s refused: %s\n", objs[j].key,
                    ferry_err_str(puts[j].err));
            return -1;
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    int rc = 1;
    ledger *l = NULL;
    ledger_grant *grants = NULL;
    ledger_insert *ins = NULL;
    ledger_object *objs = NULL;
    ledger_object_put_item *puts = NULL;
    char *end = NULL;
    long n, devices = 100;
    ferry_err err;

    if (argc != 3 && argc != 4) {
        fprintf(stderr, "usage: ferry_bench_events_fill LEDGER N [DEVICES]\n");
        return 2;
    }
    n = strtol(argv[2], &end, 10);
    if (*end != '\0' || n < 1 || n > FILL_MAX) {
        fprintf(stderr, "events_fill: N must be 1..%ld\n", FILL_MAX);
        return 2;
    }
    if (argc == 4) {
        devices = strtol(argv[3], &end, 10);
        if (*end != '\0' || devices < 1 || devices > 100000) {
            fprintf(stderr, "events_fill: DEVICES must be 1..100000\n");
            return 2;
        }
    }
    grants = calloc(FILL_BATCH, sizeof *grants);
    ins = calloc(FILL_BATCH, sizeof *ins);
    objs = calloc(FILL_BATCH, sizeof *objs);
    puts = calloc(FILL_BATCH, sizeof *puts);
    if (grants == NULL || ins == NULL || objs == NULL || puts == NULL) {
        fprintf(stderr, "events_fill: out of memory\n");
        goto out;
    }
    if ((err = ledger_open(argv[1], &l)) != FERRY_OK) {
        fprintf(stderr, "events_fill: ledger %s: %s\n", argv[1], ferry_err_str(err));
        goto out;
    }
    int64_t t0 = ferry_time_mono_ns();
    int64_t now = ferry_time_now();
    for (long first = 0; first < n; first += FILL_BATCH) {
        long k = n - first < FILL_BATCH ? n - first : FILL_BATCH;
        if (fill_batch(l, first, k, devices, now, grants, ins, objs, puts) != 0)
            goto out;
    }
    printf("fill: events=%ld seconds=%.2f\n", n, (double)(ferry_time_mono_ns() - t0) / 1e9);
    rc = 0;
out:
    ledger_close(l);
    free(grants);
    free(ins);
    free(objs);
    free(puts);
    return rc;
}
