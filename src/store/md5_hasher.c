/*
 * md5_hasher.c - the ETag's MD5 of many bodies as they arrive, on one
 * thread; see md5_hasher.h.
 *
 * The arena is one mapping of nblocks slots of BLOCK_STRIDE bytes: a block
 * of MD5_HASHER_BLOCK bytes, then the rest of a 4 KiB page for MD5's
 * padding, so every block starts 4 KiB aligned. Pages are mapped up front
 * and touched only when a block is first used. The free blocks are a stack
 * (the block given back last is taken first, so the pages already touched
 * are reused before fresh ones).
 *
 * Invariants, under the hasher's lock:
 *  - a stream's pieces done .. submitted-1 sit in queue[ticket % QUEUED];
 *  - s->queued holds from a stream's first queued piece until a pass has
 *    hashed its last queued one: the stream is then on the list or in the
 *    pass running, never both, so its pieces are hashed one at a time and
 *    in order;
 *  - the thread writes s->v, s->done, s->finished and s->digest; the feeder
 *    writes s->queue, s->submitted and s->total.
 *
 * Gathering: a pass costs about the same for one stream as for 16, and a
 * pass run as soon as one piece is queued took two streams on average in
 * bench/upload's 1m case (32 bodies arriving). A body's next block takes
 * milliseconds to arrive, and its feeder waits on the hasher only when it
 * needs a block back or the digest; so while fewer than width streams have
 * work and some stream under way (a piece submitted, not yet its last, and
 * not finished) has none queued, the thread waits up to GATHER_NS for more, and up to GATHER_BLOCKED_NS
 * more once a feeder waits on it (a body's end waits for its digest: with
 * 32 bodies arriving one ends every few milliseconds, and ending the
 * gathering at once left passes of 3 to 5 lanes).
 *
 * Waiting: the feeders wait on one of WAKE_SLOTS conditions, the one their
 * stream's address picks, and the thread wakes a slot after a pass only
 * when a stream of the pass maps to it and someone waits on it, so a pass
 * does not wake every feeder of the hasher.
 */
#include "md5_hasher.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "common/timefmt.h"
#include "md5_lanes_int.h"

/* A block and the rest of its last page: the padding's room, and the next
 * block 4 KiB aligned. */
#define BLOCK_STRIDE ((size_t)MD5_HASHER_BLOCK + 4096u)
/* The vector cores address the arena with signed 32-bit offsets
 * (md5_lanes_int.h), so the whole arena must lie within INT32_MAX bytes. */
#define ARENA_MAX_BYTES ((size_t)INT32_MAX)
#define WAKE_SLOTS      16
#define GATHER_NS         4000000 /* 4 ms */
#define GATHER_BLOCKED_NS 500000  /* 0.5 ms */

struct md5_hasher {
    md5_lanes_kind kind;
    unsigned width; /* streams one pass takes at most */
    unsigned char *arena;
    size_t arena_bytes;
    size_t nblocks;

    pthread_mutex_t free_lock; /* the free stack alone */
    unsigned char **free_blocks;
    size_t nfree;

    pthread_mutex_t lock; /* everything below, and the streams' fields */
    pthread_cond_t work;  /* the thread waits here for streams with work */
    bool idle;            /* the thread waits on work */
    bool gathering;       /* the thread waits on work for more streams (GATHER_NS) */
    bool stop;
    md5_hasher_stream *head, *tail; /* streams with a piece to hash, oldest first */
    size_t listed;                  /* streams on that list */
    size_t active;                  /* streams under way (stream->active) */
    unsigned blocked;               /* feeders waiting on the thread */
    pthread_cond_t wake[WAKE_SLOTS];
    unsigned waiting[WAKE_SLOTS]; /* feeders waiting on wake[i] */
    uint64_t passes, lanes;

    pthread_t thread;
};

/* Broken calling rules are bugs of the store, and going on would put a
 * wrong ETag on a body or hash a block someone else owns: stop here, in
 * every build, saying why. */
__attribute__((noreturn)) static void misuse(const char *what)
{
    fprintf(stderr, "md5_hasher: %s\n", what);
    abort();
}

static unsigned wake_slot(const md5_hasher_stream *s)
{
    /* Streams are embedded in larger structs: drop the low bits that are
     * equal for all of them and mix the rest. */
    uintptr_t a = (uintptr_t)s >> 6;
    a ^= a >> 7;
    a ^= a >> 13;
    return (unsigned)(a % WAKE_SLOTS);
}

/* Waits on the stream's slot; the caller holds h->lock. */
static void wait_stream(md5_hasher *h, const md5_hasher_stream *s)
{
    unsigned slot = wake_slot(s);
    h->waiting[slot]++;
    h->blocked++;
    if (h->gathering)
        pthread_cond_signal(&h->work); /* someone waits: no more gathering */
    pthread_cond_wait(&h->wake[slot], &h->lock);
    h->blocked--;
    h->waiting[slot]--;
}

static void list_append(md5_hasher *h, md5_hasher_stream *s)
{
    s->next = NULL;
    if (h->tail != NULL)
        h->tail->next = s;
    else
        h->head = s;
    h->tail = s;
    h->listed++;
}

static md5_hasher_stream *list_pop(md5_hasher *h)
{
    md5_hasher_stream *s = h->head;
    if (s != NULL) {
        h->head = s->next;
        if (h->head == NULL)
            h->tail = NULL;
        s->next = NULL;
        h->listed--;
    }
    return s;
}

static bool earlier(const struct timespec *a, const struct timespec *b)
{
    return a->tv_sec < b->tv_sec || (a->tv_sec == b->tv_sec && a->tv_nsec < b->tv_nsec);
}

/* The stream is no longer under way (h->lock held). */
static void stream_retire(md5_hasher *h, md5_hasher_stream *s)
{
    if (s->active) {
        s->active = false;
        h->active--;
    }
}

/* Waits (h->lock held) until width streams (or every stream under way)
 * have work, the hasher stops,
 * GATHER_NS have passed, or GATHER_BLOCKED_NS since a feeder began to wait
 * on the thread. */
static void gather(md5_hasher *h)
{
    struct timespec deadline;
    bool blocked = false;
    if (h->listed >= h->width || h->listed >= h->active || h->stop)
        return;
    deadline = ferry_time_mono_deadline(GATHER_NS);
    h->gathering = true;
    while (h->listed < h->width && h->listed < h->active && !h->stop) {
        if (h->blocked > 0 && !blocked) {
            struct timespec soon = ferry_time_mono_deadline(GATHER_BLOCKED_NS);
            blocked = true;
            if (earlier(&soon, &deadline))
                deadline = soon;
        }
        if (pthread_cond_timedwait(&h->work, &h->lock, &deadline) != 0)
            break;
    }
    h->gathering = false;
}

static void *hasher_main(void *arg)
{
    md5_hasher *h = arg;
    md5_hasher_stream *pass[MD5_LANES_MAX];
    md5_lanes_piece pieces[MD5_LANES_MAX];

    pthread_mutex_lock(&h->lock);
    for (;;) {
        while (h->head == NULL && !h->stop) {
            h->idle = true;
            pthread_cond_wait(&h->work, &h->lock);
            h->idle = false;
        }
        if (h->head == NULL)
            break; /* stopping, and nothing left to hash */
        gather(h);
        /* The oldest piece of up to width streams, oldest stream first. */
        size_t n = 0;
        while (n < h->width && h->head != NULL) {
            md5_hasher_stream *s = list_pop(h);
            size_t q = (size_t)(s->done % MD5_HASHER_QUEUED);
            md5_lanes_piece *p = &pieces[n];
            memcpy(p->v, s->v, sizeof p->v);
            p->off = (uint32_t)(s->queue[q].block - h->arena);
            p->len = (uint32_t)s->queue[q].len;
            p->last = s->queue[q].last;
            /* Nothing is queued after a last piece, so the stream's total
             * is its length then. */
            p->total = s->total;
            pass[n++] = s;
        }
        pthread_mutex_unlock(&h->lock);
        /* md5_hasher_submit checked every piece, so this cannot fail. */
        if (!md5_lanes_advance(h->kind, h->arena, pieces, n))
            misuse("a piece the lanes refuse");
        pthread_mutex_lock(&h->lock);
        h->passes++;
        h->lanes += n;
        bool wake[WAKE_SLOTS] = {false};
        for (size_t i = 0; i < n; i++) {
            md5_hasher_stream *s = pass[i];
            memcpy(s->v, pieces[i].v, sizeof s->v);
            if (pieces[i].last) {
                memcpy(s->digest, pieces[i].digest, sizeof s->digest);
                s->finished = true;
                stream_retire(h, s);
            }
            s->done++;
            if (s->submitted > s->done)
                list_append(h, s);
            else
                s->queued = false;
            wake[wake_slot(s)] = true;
        }
        for (unsigned slot = 0; slot < WAKE_SLOTS; slot++)
            if (wake[slot] && h->waiting[slot] > 0)
                pthread_cond_broadcast(&h->wake[slot]);
    }
    pthread_mutex_unlock(&h->lock);
    return NULL;
}

md5_hasher *md5_hasher_new(md5_lanes_kind kind, size_t nblocks)
{
    md5_hasher *h = NULL;
    unsigned slots_ready = 0;
    bool lock_ready = false, free_lock_ready = false, work_ready = false;

    if (kind == MD5_LANES_OPENSSL || !md5_lanes_supported(kind) || nblocks == 0 ||
        nblocks > ARENA_MAX_BYTES / BLOCK_STRIDE)
        return NULL;
    h = calloc(1, sizeof *h);
    if (h == NULL)
        return NULL;
    h->kind = kind;
    h->width = md5_lanes_width(kind);
    h->nblocks = nblocks;
    h->arena_bytes = nblocks * BLOCK_STRIDE;
    h->arena =
        mmap(NULL, h->arena_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (h->arena == MAP_FAILED) {
        h->arena = NULL;
        goto fail;
    }
    h->free_blocks = malloc(nblocks * sizeof *h->free_blocks);
    if (h->free_blocks == NULL)
        goto fail;
    /* Block 0 on top: the first blocks taken are the lowest. */
    for (size_t i = 0; i < nblocks; i++)
        h->free_blocks[i] = h->arena + (nblocks - 1 - i) * BLOCK_STRIDE;
    h->nfree = nblocks;
    if (pthread_mutex_init(&h->free_lock, NULL) != 0)
        goto fail;
    free_lock_ready = true;
    if (pthread_mutex_init(&h->lock, NULL) != 0)
        goto fail;
    lock_ready = true;
    pthread_condattr_t monotonic; /* gather's deadline is on CLOCK_MONOTONIC */
    if (pthread_condattr_init(&monotonic) != 0)
        goto fail;
    bool work_ok = pthread_condattr_setclock(&monotonic, CLOCK_MONOTONIC) == 0 &&
                   pthread_cond_init(&h->work, &monotonic) == 0;
    pthread_condattr_destroy(&monotonic);
    if (!work_ok)
        goto fail;
    work_ready = true;
    for (; slots_ready < WAKE_SLOTS; slots_ready++)
        if (pthread_cond_init(&h->wake[slots_ready], NULL) != 0)
            goto fail;
    if (pthread_create(&h->thread, NULL, hasher_main, h) != 0)
        goto fail;
    return h;

fail:
    for (unsigned i = 0; i < slots_ready; i++)
        pthread_cond_destroy(&h->wake[i]);
    if (work_ready)
        pthread_cond_destroy(&h->work);
    if (lock_ready)
        pthread_mutex_destroy(&h->lock);
    if (free_lock_ready)
        pthread_mutex_destroy(&h->free_lock);
    free(h->free_blocks);
    if (h->arena != NULL)
        munmap(h->arena, h->arena_bytes);
    free(h);
    return NULL;
}

void md5_hasher_free(md5_hasher *h)
{
    if (h == NULL)
        return;
    pthread_mutex_lock(&h->lock);
    h->stop = true;
    pthread_cond_signal(&h->work);
    pthread_mutex_unlock(&h->lock);
    pthread_join(h->thread, NULL);
    if (h->nfree != h->nblocks)
        misuse("freed with blocks still taken");
    for (unsigned i = 0; i < WAKE_SLOTS; i++)
        pthread_cond_destroy(&h->wake[i]);
    pthread_cond_destroy(&h->work);
    pthread_mutex_destroy(&h->lock);
    pthread_mutex_destroy(&h->free_lock);
    free(h->free_blocks);
    munmap(h->arena, h->arena_bytes);
    free(h);
}

unsigned char *md5_hasher_block_take(md5_hasher *h)
{
    unsigned char *block = NULL;
    pthread_mutex_lock(&h->free_lock);
    if (h->nfree > 0)
        block = h->free_blocks[--h->nfree];
    pthread_mutex_unlock(&h->free_lock);
    return block;
}

/* Whether block is the start of one of h's blocks. */
static bool is_block(const md5_hasher *h, const unsigned char *block)
{
    uintptr_t at = (uintptr_t)block, base = (uintptr_t)h->arena;
    return at >= base && at - base < h->arena_bytes && (at - base) % BLOCK_STRIDE == 0;
}

/* Whether [piece, piece + len) lies within one block. */
static bool in_block(const md5_hasher *h, const unsigned char *piece, size_t len)
{
    uintptr_t at = (uintptr_t)piece, base = (uintptr_t)h->arena;
    return at >= base && at - base < h->arena_bytes &&
           (at - base) % BLOCK_STRIDE + len <= MD5_HASHER_BLOCK;
}

void md5_hasher_block_give(md5_hasher *h, unsigned char *block)
{
    if (!is_block(h, block))
        misuse("a block given back that is not the hasher's");
    pthread_mutex_lock(&h->free_lock);
    if (h->nfree >= h->nblocks)
        misuse("more blocks given back than taken");
    h->free_blocks[h->nfree++] = block;
    pthread_mutex_unlock(&h->free_lock);
}

void md5_hasher_stream_init(md5_hasher_stream *s)
{
    memset(s, 0, sizeof *s);
    md5_lanes_state_init(s->v);
}

uint64_t md5_hasher_submit(md5_hasher *h, md5_hasher_stream *s, unsigned char *block, size_t len,
                           bool last)
{
    uint64_t ticket;

    if (len > MD5_HASHER_BLOCK || (!last && len % 64 != 0))
        misuse("a piece longer than a block, or not whole 64-byte blocks before the last");
    if (!in_block(h, block, len))
        misuse("a piece that is not within one of the hasher's blocks");
    pthread_mutex_lock(&h->lock);
    if (s->submitted > 0 && s->queue[(s->submitted - 1) % MD5_HASHER_QUEUED].last)
        misuse("a piece submitted after the stream's last");
    while (s->submitted - s->done >= MD5_HASHER_QUEUED)
        wait_stream(h, s);
    size_t q = (size_t)(s->submitted % MD5_HASHER_QUEUED);
    s->queue[q].block = block;
    s->queue[q].len = len;
    s->queue[q].last = last;
    s->total += len;
    ticket = ++s->submitted;
    if (!s->active && !s->finished) {
        s->active = true;
        h->active++;
    }
    if (!s->queued) {
        s->queued = true;
        list_append(h, s);
        if (h->idle || (h->gathering && (h->listed >= h->width || h->listed >= h->active)))
            pthread_cond_signal(&h->work);
    }
    pthread_mutex_unlock(&h->lock);
    return ticket;
}

void md5_hasher_wait(md5_hasher *h, md5_hasher_stream *s, uint64_t t)
{
    if (t == 0)
        return;
    pthread_mutex_lock(&h->lock);
    if (t > s->submitted)
        misuse("a wait for a piece never submitted");
    while (s->done < t)
        wait_stream(h, s);
    pthread_mutex_unlock(&h->lock);
}

bool md5_hasher_finish(md5_hasher *h, md5_hasher_stream *s, unsigned char out[16])
{
    bool finished;
    pthread_mutex_lock(&h->lock);
    while (s->done < s->submitted)
        wait_stream(h, s);
    stream_retire(h, s); /* an abandoned stream too: no more of it to wait for */
    finished = s->finished;
    if (finished)
        memcpy(out, s->digest, sizeof s->digest);
    pthread_mutex_unlock(&h->lock);
    return finished;
}

bool md5_hasher_detach(md5_hasher *h, md5_hasher_stream *s, uint32_t v[4], uint64_t *total)
{
    bool ok;
    pthread_mutex_lock(&h->lock);
    while (s->done < s->submitted)
        wait_stream(h, s);
    stream_retire(h, s);
    ok = !s->finished && (s->submitted == 0 || !s->queue[(s->submitted - 1) % MD5_HASHER_QUEUED].last);
    if (ok) {
        memcpy(v, s->v, sizeof s->v);
        *total = s->total;
    }
    pthread_mutex_unlock(&h->lock);
    return ok;
}

void md5_hasher_stats(md5_hasher *h, uint64_t *passes, uint64_t *lanes)
{
    pthread_mutex_lock(&h->lock);
    *passes = h->passes;
    *lanes = h->lanes;
    pthread_mutex_unlock(&h->lock);
}
