/*
 * store_fs.c - see store_fs.h. All paths are built from the root and file
 * ids the store generated itself (hex, or "p" and hex for packs); ids that
 * come back from the ledger are re-checked before they are used in a path.
 */
#include "store_fs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <inttypes.h>
#include <linux/falloc.h>
#include <linux/fs.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "common/log.h"

struct store_fs_pack {
    uint32_t num;
    int fd;
    int dfd; /* the same file opened with O_DIRECT, or -1 (refused) */
    uint64_t end;     /* the next region starts here (aligned); pack_mu */
    unsigned writers; /* open slots; pack_mu */
    bool current;     /* new regions go here; pack_mu */
    atomic_bool failed; /* an fdatasync failed: no later sync may succeed */
    pthread_mutex_t sync_mu;         /* one fdatasync at a time; guards synced */
    atomic_uint_fast64_t completed;  /* regions whose bytes were all written */
    uint64_t synced;                 /* regions the last fdatasync covered */
    store_fs_pack *next;
};

#define PACK_ID_LEN 33 /* "p" + 8 + 16 + 8 hex digits */

/* Readers of a pack, and the regions of deleted objects whose holes wait
 * for them to finish (pack_mu). */
struct store_fs_pack_use {
    uint32_t num;
    unsigned readers;
    uint64_t (*punches)[2]; /* offset, length */
    size_t n_punches;
    size_t cap_punches;
};

static bool hex_only(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f')))
            return false;
    return true;
}

static ferry_err read_begin(store_fs *fs, uint32_t num);

static uint64_t hex_value(const char *p, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v = v << 4 | (uint64_t)OPENSSL_hexchar2int((unsigned char)p[i]);
    return v;
}

/* "p<8 hex: pack><16 hex: offset><8 hex: bytes reserved>" */
static bool pack_id_parse(const char *id, uint32_t *num, uint64_t *off, uint64_t *len)
{
    if (strnlen(id, PACK_ID_LEN + 1) != PACK_ID_LEN || id[0] != 'p' ||
        !hex_only(id + 1, PACK_ID_LEN - 1))
        return false;
    *num = (uint32_t)hex_value(id + 1, 8);
    *off = hex_value(id + 9, 16);
    *len = hex_value(id + 25, 8);
    return true;
}

static uint64_t align_up(uint64_t n)
{
    return (n + STORE_PACK_ALIGN - 1) & ~(uint64_t)(STORE_PACK_ALIGN - 1);
}

static bool id_ok(const char *id)
{
    return strnlen(id, STORE_FILE_ID_LEN + 1) == STORE_FILE_ID_LEN &&
           hex_only(id, STORE_FILE_ID_LEN);
}

static int dir_index(const char *id)
{
    static const char hex[] = "0123456789abcdef";
    return (int)((strchr(hex, id[0]) - hex) * 16 + (strchr(hex, id[1]) - hex));
}

static ferry_err mkdir_p(const char *path)
{
    if (mkdir(path, 0700) == 0 || errno == EEXIST)
        return FERRY_OK;
    log_error("store.mkdir_failed", "path=%s error=\"%s\"", path, strerror(errno));
    return FERRY_ERR_IO;
}

/* Marks objects/ as the top of a directory hierarchy (FS_TOPDIR_FL), so
 * that ext2/3/4's Orlov allocator spreads the 256 directories made under it
 * over block groups with free inodes, as it does for directories at the
 * root, instead of packing them into the data directory's own group. Every
 * file is allocated an inode in its directory's group, and on ext4 without
 * a journal each allocation scans the group's inodes freed in the last
 * minutes (recently_deleted): in a group shared with busy neighbours (a
 * data directory under /tmp) that scan took ~45% of the store's CPU in the
 * 64 KiB benchmark, and a create cost ~1 ms instead of ~0.1 ms. Best
 * effort: other file systems refuse or ignore the flag, and directories
 * that already exist stay where they are. */
static void mark_topdir(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int flags = 0;
    if (fd < 0)
        return;
    if (ioctl(fd, FS_IOC_GETFLAGS, &flags) == 0 && !(flags & FS_TOPDIR_FL)) {
        flags |= FS_TOPDIR_FL;
        if (ioctl(fd, FS_IOC_SETFLAGS, &flags) != 0)
            log_debug("store.topdir_unsupported", "path=%s error=\"%s\"", path, strerror(errno));
    }
    close(fd);
}

static ferry_err fsync_path(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return FERRY_ERR_IO;
    int rc = fsync(fd);
    close(fd);
    return rc == 0 ? FERRY_OK : FERRY_ERR_IO;
}

ferry_err store_fs_open(store_fs *fs, const char *root, uint64_t pack_max_object,
                        uint64_t pack_size)
{
    ferry_err err = FERRY_OK;
    char p[STORE_PATH_MAX];
    memset(fs, 0, sizeof *fs);
    fs->packs_fd = -1;
    fs->pack_max_object = pack_max_object;
    fs->pack_size = pack_size < 4 * pack_max_object ? 4 * pack_max_object : pack_size;
    fs->next_pack = 1;
    pthread_mutex_init(&fs->pack_mu, NULL);
    for (int i = 0; i < 256; i++) {
        fs->dirs[i].fd = -1;
        atomic_init(&fs->dirs[i].created, 0);
        pthread_mutex_init(&fs->dirs[i].mu, NULL);
    }
    fs->dirs_ready = true;
    if (strlen(root) > STORE_PATH_MAX - 64)
        return FERRY_ERR_TOO_LARGE;
    fs->root = strdup(root);
    if (fs->root == NULL)
        return FERRY_ERR_NOMEM;
    if ((err = mkdir_p(root)) != FERRY_OK)
        goto out;
    snprintf(p, sizeof p, "%s/tmp", root);
    if ((err = mkdir_p(p)) != FERRY_OK)
        goto out;
    snprintf(p, sizeof p, "%s/packs", root);
    if ((err = mkdir_p(p)) != FERRY_OK)
        goto out;
    fs->packs_fd = open(p, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fs->packs_fd < 0) {
        err = FERRY_ERR_IO;
        goto out;
    }
    snprintf(p, sizeof p, "%s/objects", root);
    if ((err = mkdir_p(p)) != FERRY_OK)
        goto out;
    mark_topdir(p);
    for (int i = 0; i < 256; i++) {
        snprintf(p, sizeof p, "%s/objects/%02x", root, i);
        if ((err = mkdir_p(p)) != FERRY_OK)
            goto out;
        fs->dirs[i].fd = open(p, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fs->dirs[i].fd < 0) {
            err = FERRY_ERR_IO;
            goto out;
        }
    }
    /* The directories themselves must survive a crash before any object
     * is acknowledged inside them. */
    snprintf(p, sizeof p, "%s/objects", root);
    if ((err = fsync_path(p)) == FERRY_OK && (err = fsync_path(root)) == FERRY_OK &&
        fsync(fs->packs_fd) != 0)
        err = FERRY_ERR_IO;
out:
    if (err)
        store_fs_cleanup(fs);
    return err;
}

static void pack_free(store_fs_pack *p);

void store_fs_cleanup(store_fs *fs)
{
    if (fs == NULL)
        return;
    if (fs->dirs_ready) {
        for (int i = 0; i < 256; i++) {
            if (fs->dirs[i].fd >= 0)
                close(fs->dirs[i].fd);
            fs->dirs[i].fd = -1;
            pthread_mutex_destroy(&fs->dirs[i].mu);
        }
        /* Every slot is closed by now; what is left are the current packs. */
        while (fs->packs != NULL) {
            store_fs_pack *p = fs->packs;
            fs->packs = p->next;
            pack_free(p);
        }
        for (size_t i = 0; i < fs->n_uses; i++)
            free(fs->uses[i].punches);
        free(fs->uses);
        fs->uses = NULL;
        fs->n_uses = 0;
        if (fs->packs_fd >= 0)
            close(fs->packs_fd);
        fs->packs_fd = -1;
        pthread_mutex_destroy(&fs->pack_mu);
    }
    fs->dirs_ready = false;
    free(fs->root);
    fs->root = NULL;
}

/* The regions of one pack that ledger rows name, in offset order: the
 * gaps between them are punched, the tail after the last is cut. */
typedef struct pack_walk {
    int fd;
    uint64_t file_size;
    uint64_t next_free; /* end of the previous region, aligned */
    uint64_t last_end;  /* exact end of the previous region */
    size_t regions;
    bool punched;
} pack_walk;

static void punch(int fd, uint64_t off, uint64_t len)
{
    if (len == 0)
        return;
    /* Best effort: where holes are not supported the bytes stay, unnamed,
     * until the pack is removed. */
    if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len) != 0)
        log_debug("store.punch_failed", "error=\"%s\"", strerror(errno));
}

static int pack_walk_region(const char *id, uint64_t size, void *arg)
{
    pack_walk *w = arg;
    uint32_t num;
    uint64_t off, len;
    if (!pack_id_parse(id, &num, &off, &len) || off < w->next_free || off > w->file_size)
        return 0; /* not a region this walk can place: left alone */
    if (off > w->next_free) {
        punch(w->fd, w->next_free, off - w->next_free);
        w->punched = true;
    }
    w->regions++;
    w->last_end = off + size;
    w->next_free = align_up(off + size);
    return 0;
}

/* One pack at start-up: removed when no row names it, else its unnamed
 * regions punched and its tail cut. *changed: either happened. */
static ferry_err sweep_pack(store_fs *fs, ledger *l, uint32_t num, const char *name,
                            bool *changed)
{
    ferry_err err = FERRY_OK;
    char prefix[16];
    struct stat st;
    pack_walk w;
    int fd = openat(fs->packs_fd, name, O_RDWR | O_CLOEXEC);
    *changed = false;
    if (fd < 0)
        return FERRY_ERR_IO;
    memset(&w, 0, sizeof w);
    w.fd = fd;
    if (fstat(fd, &st) != 0) {
        err = FERRY_ERR_IO;
        goto out;
    }
    w.file_size = (uint64_t)st.st_size;
    snprintf(prefix, sizeof prefix, "p%08" PRIx32, num);
    if ((err = ledger_object_file_walk(l, prefix, pack_walk_region, &w)) != FERRY_OK)
        goto out;
    if (w.regions == 0) {
        if (unlinkat(fs->packs_fd, name, 0) == 0)
            *changed = true;
        goto out;
    }
    if (w.file_size > w.last_end) {
        if (ftruncate(fd, (off_t)w.last_end) != 0 || fsync(fd) != 0) {
            err = FERRY_ERR_IO;
            goto out;
        }
        w.punched = true;
    }
    *changed = w.punched;
out:
    close(fd);
    return err;
}

static ferry_err sweep_packs(store_fs *fs, ledger *l, size_t *n)
{
    ferry_err err = FERRY_OK;
    uint32_t max = 0;
    struct dirent *e;
    int dfd = dup(fs->packs_fd);
    DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
    if (d == NULL) {
        if (dfd >= 0)
            close(dfd);
        return FERRY_ERR_IO;
    }
    rewinddir(d);
    while (err == FERRY_OK && (e = readdir(d)) != NULL) {
        bool changed = false;
        uint32_t num;
        if (e->d_name[0] == '.')
            continue;
        if (strlen(e->d_name) != 13 || strcmp(e->d_name + 8, ".pack") != 0 ||
            !hex_only(e->d_name, 8)) {
            if (unlinkat(fs->packs_fd, e->d_name, 0) == 0)
                (*n)++;
            continue;
        }
        num = (uint32_t)strtoul(e->d_name, NULL, 16);
        if (num > max)
            max = num;
        if ((err = sweep_pack(fs, l, num, e->d_name, &changed)) == FERRY_OK && changed)
            (*n)++;
    }
    closedir(d);
    if (err == FERRY_OK && fsync(fs->packs_fd) != 0)
        err = FERRY_ERR_IO;
    if (err == FERRY_OK) {
        if (max == UINT32_MAX)
            return FERRY_ERR_TOO_LARGE;
        fs->next_pack = max + 1;
    }
    return err;
}

ferry_err store_fs_sweep(store_fs *fs, ledger *l, size_t *removed)
{
    ferry_err err = FERRY_OK;
    char p[STORE_PATH_MAX];
    size_t n = 0;
    DIR *d;
    struct dirent *e;

    /* The part rows of objects made of their parts whose row a crash
     * took away before the store released them: dropped first, so the
     * data they named is unnamed below and goes with the rest. */
    uint64_t loose = 0;
    if ((err = ledger_object_parts_release(l, NULL, NULL, NULL, &loose)) != FERRY_OK)
        return err;
    if (loose > 0)
        log_info("store.loose_parts_released", "parts=%" PRIu64, loose);
    snprintf(p, sizeof p, "%s/tmp", fs->root);
    d = opendir(p);
    if (d == NULL)
        return FERRY_ERR_IO;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        if (unlinkat(dirfd(d), e->d_name, 0) == 0)
            n++;
    }
    closedir(d);
    for (int i = 0; i < 256 && err == FERRY_OK; i++) {
        int dfd = dup(fs->dirs[i].fd);
        if (dfd < 0)
            return FERRY_ERR_IO;
        d = fdopendir(dfd);
        if (d == NULL) {
            close(dfd);
            return FERRY_ERR_IO;
        }
        rewinddir(d);
        while ((e = readdir(d)) != NULL) {
            bool known = false;
            if (e->d_name[0] == '.')
                continue;
            if (id_ok(e->d_name) &&
                (err = ledger_object_file_known(l, e->d_name, &known)) != FERRY_OK)
                break;
            if (!known && unlinkat(dirfd(d), e->d_name, 0) == 0)
                n++;
        }
        closedir(d);
    }
    if (err == FERRY_OK)
        err = sweep_packs(fs, l, &n);
    if (removed != NULL && err == FERRY_OK)
        *removed = n;
    return err;
}

ferry_err store_fs_new_id(char id[STORE_FILE_ID_LEN + 1])
{
    unsigned char r[STORE_FILE_ID_LEN / 2];
    static const char hex[] = "0123456789abcdef";
    if (RAND_bytes(r, sizeof r) != 1)
        return FERRY_ERR_CRYPTO;
    for (size_t i = 0; i < sizeof r; i++) {
        id[2 * i] = hex[r[i] >> 4];
        id[2 * i + 1] = hex[r[i] & 15];
    }
    id[STORE_FILE_ID_LEN] = '\0';
    return FERRY_OK;
}

/* Creates objects/xx/<id> for writing (exclusively, mode 0600): the data
 * file of an upload, invisible until its ledger row is committed. */
static ferry_err file_create(store_fs *fs, const char *id, int *fd_out)
{
    if (!id_ok(id))
        return FERRY_ERR_INVALID;
    store_fs_dir *d = &fs->dirs[dir_index(id)];
    /* Read and write: the committers may read a body back for its MD5. */
    int fd = openat(d->fd, id, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        log_error("store.create_failed", "file_id=%s error=\"%s\"", id, strerror(errno));
        return FERRY_ERR_IO;
    }
    /* Counted after the entry exists: an fsync of the directory that reads
     * a count including this one began after the create. */
    atomic_fetch_add(&d->created, 1);
    *fd_out = fd;
    return FERRY_OK;
}

/* Makes every entry created in d up to now durable, with one fsync for all
 * the uploads that wait here at once: whoever holds mu syncs; those queued
 * behind it find their entries covered and return. */
static ferry_err dir_sync(store_fs_dir *d)
{
    ferry_err err = FERRY_OK;
    uint64_t need = atomic_load(&d->created);
    pthread_mutex_lock(&d->mu);
    if (d->synced < need) {
        uint64_t covers = atomic_load(&d->created);
        if (fsync(d->fd) == 0) {
            d->synced = covers;
        } else {
            log_error("store.dir_fsync_failed", "error=\"%s\"", strerror(errno));
            err = FERRY_ERR_IO;
        }
    }
    pthread_mutex_unlock(&d->mu);
    return err;
}

/* Makes objects/xx/<id> durable before its ledger row is written:
 * fdatasync(fd), then an fsync of objects/xx unless one that began after
 * the file's entry was created has already completed (grouped, see above). */
static ferry_err file_sync(store_fs *fs, int fd, const char *id)
{
    if (!id_ok(id))
        return FERRY_ERR_INVALID;
    /* fdatasync is enough for the bytes; the size is metadata that
     * fdatasync also flushes when it changed (it is needed to read them).
     * It comes first: on ext4 it also writes the new entry's directory
     * block, which leaves the directory's own fsync little to do. */
    if (fdatasync(fd) != 0) {
        log_error("store.fsync_failed", "error=\"%s\"", strerror(errno));
        return FERRY_ERR_IO;
    }
    return dir_sync(&fs->dirs[dir_index(id)]);
}

ferry_err store_fs_open_data(store_fs *fs, const char *id, int *fd_out, uint64_t *base_out)
{
    char p[STORE_PATH_MAX];
    uint32_t num;
    uint64_t off = 0, len;
    bool packed = pack_id_parse(id, &num, &off, &len);
    int fd;
    if (packed) {
        ferry_err err = read_begin(fs, num);
        if (err)
            return err;
        snprintf(p, sizeof p, "%s/packs/%08" PRIx32 ".pack", fs->root, num);
    } else if (id_ok(id)) {
        snprintf(p, sizeof p, "%s/objects/%c%c/%s", fs->root, id[0], id[1], id);
    } else {
        return FERRY_ERR_NOT_FOUND;
    }
    fd = open(p, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        if (packed)
            store_fs_read_done(fs, id);
        return e == ENOENT ? FERRY_ERR_NOT_FOUND : FERRY_ERR_IO;
    }
    *fd_out = fd;
    *base_out = off;
    return FERRY_OK;
}

static bool pack_in_use(store_fs *fs, uint32_t num);

/* The pack_use of pack num, or NULL (pack_mu held). */
static store_fs_pack_use *use_find(store_fs *fs, uint32_t num)
{
    for (size_t i = 0; i < fs->n_uses; i++)
        if (fs->uses[i].num == num)
            return &fs->uses[i];
    return NULL;
}

/* Punches n regions of pack num (offset, length), if the pack is there. */
static void punch_pack(store_fs *fs, uint32_t num, const uint64_t (*regions)[2], size_t n)
{
    char name[16];
    snprintf(name, sizeof name, "%08" PRIx32 ".pack", num);
    int fd = openat(fs->packs_fd, name, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    for (size_t i = 0; i < n; i++)
        punch(fd, regions[i][0], regions[i][1]);
    close(fd);
}

static ferry_err read_begin(store_fs *fs, uint32_t num)
{
    ferry_err err = FERRY_OK;
    pthread_mutex_lock(&fs->pack_mu);
    store_fs_pack_use *u = use_find(fs, num);
    if (u == NULL) {
        if (fs->n_uses == fs->cap_uses) {
            size_t cap = fs->cap_uses ? 2 * fs->cap_uses : 8;
            void *nu = realloc(fs->uses, cap * sizeof *fs->uses);
            if (nu == NULL) {
                err = FERRY_ERR_NOMEM;
                goto out;
            }
            fs->uses = nu;
            fs->cap_uses = cap;
        }
        u = &fs->uses[fs->n_uses++];
        memset(u, 0, sizeof *u);
        u->num = num;
    }
    u->readers++;
out:
    pthread_mutex_unlock(&fs->pack_mu);
    return err;
}

void store_fs_read_done(store_fs *fs, const char *id)
{
    uint32_t num;
    uint64_t off, len;
    uint64_t (*punches)[2] = NULL;
    size_t n = 0;
    if (!pack_id_parse(id, &num, &off, &len))
        return;
    pthread_mutex_lock(&fs->pack_mu);
    store_fs_pack_use *u = use_find(fs, num);
    if (u != NULL && --u->readers == 0) {
        punches = u->punches;
        n = u->n_punches;
        *u = fs->uses[--fs->n_uses];
    }
    pthread_mutex_unlock(&fs->pack_mu);
    if (n > 0)
        punch_pack(fs, num, (const uint64_t(*)[2])punches, n);
    free(punches);
}

/* Notes pack num for store_fs_reclaim (pack_mu held). A full list is not
 * an error: the start-up sweep removes empty packs too. */
static void note_dead_check(store_fs *fs, uint32_t num)
{
    for (size_t i = 0; i < fs->n_dead_check; i++)
        if (fs->dead_check[i] == num)
            return;
    if (fs->n_dead_check < sizeof fs->dead_check / sizeof fs->dead_check[0])
        fs->dead_check[fs->n_dead_check++] = num;
}

void store_fs_remove_object(store_fs *fs, const char *id)
{
    char p[STORE_PATH_MAX];
    uint32_t num;
    uint64_t off, len;
    if (pack_id_parse(id, &num, &off, &len)) {
        bool now = true;
        pthread_mutex_lock(&fs->pack_mu);
        note_dead_check(fs, num);
        store_fs_pack_use *u = use_find(fs, num);
        if (u != NULL && u->readers > 0) {
            /* Someone may be sending these bytes: the hole waits for the
             * pack's last reader (read_done). If the list cannot grow, the
             * bytes stay until the pack is removed. */
            if (u->n_punches == u->cap_punches) {
                size_t cap = u->cap_punches ? 2 * u->cap_punches : 16;
                void *np = cap <= 65536 ? realloc(u->punches, cap * sizeof *u->punches) : NULL;
                if (np != NULL) {
                    u->punches = np;
                    u->cap_punches = cap;
                }
            }
            if (u->n_punches < u->cap_punches) {
                u->punches[u->n_punches][0] = off;
                u->punches[u->n_punches][1] = len;
                u->n_punches++;
            }
            now = false;
        }
        pthread_mutex_unlock(&fs->pack_mu);
        if (now)
            punch_pack(fs, num, &(uint64_t[2]){off, len}, 1);
        return;
    }
    if (!id_ok(id))
        return;
    snprintf(p, sizeof p, "%s/objects/%c%c/%s", fs->root, id[0], id[1], id);
    unlink(p);
}

bool store_fs_is_packed(const char *id)
{
    uint32_t num;
    uint64_t off, len;
    return pack_id_parse(id, &num, &off, &len);
}

bool store_fs_is_parts(const char *id)
{
    return id[0] == 'm' && strnlen(id + 1, STORE_FILE_ID_LEN + 1) == STORE_FILE_ID_LEN &&
           hex_only(id + 1, STORE_FILE_ID_LEN);
}

ferry_err store_fs_new_parts_id(char id[STORE_FILE_ID_LEN + 2])
{
    id[0] = 'm';
    return store_fs_new_id(id + 1);
}

bool store_fs_reclaim_due(store_fs *fs)
{
    bool due = false;
    pthread_mutex_lock(&fs->pack_mu);
    for (size_t i = 0; i < fs->n_dead_check && !due; i++)
        due = !pack_in_use(fs, fs->dead_check[i]);
    pthread_mutex_unlock(&fs->pack_mu);
    return due;
}

/* Whether pack num is current or has open slots (pack_mu held): only such
 * a pack can gain a ledger row. */
static bool pack_in_use(store_fs *fs, uint32_t num)
{
    for (store_fs_pack *p = fs->packs; p != NULL; p = p->next)
        if (p->num == num)
            return true;
    return false;
}

static int found_one(const char *id, uint64_t size, void *arg)
{
    (void)id;
    (void)size;
    *(bool *)arg = true;
    return 1;
}

void store_fs_reclaim(store_fs *fs, ledger *l)
{
    uint32_t nums[sizeof fs->dead_check / sizeof fs->dead_check[0]];
    size_t todo = 0, kept = 0;
    pthread_mutex_lock(&fs->pack_mu);
    for (size_t i = 0; i < fs->n_dead_check; i++)
        if (pack_in_use(fs, fs->dead_check[i]))
            fs->dead_check[kept++] = fs->dead_check[i]; /* when it is retired */
        else
            nums[todo++] = fs->dead_check[i];
    fs->n_dead_check = kept;
    pthread_mutex_unlock(&fs->pack_mu);
    /* Not in use now means never again: new regions only go to current
     * packs, and a retired pack's numbers are not reused in this run. */
    for (size_t i = 0; i < todo; i++) {
        char prefix[16], name[16];
        bool named = false;
        snprintf(prefix, sizeof prefix, "p%08" PRIx32, nums[i]);
        snprintf(name, sizeof name, "%08" PRIx32 ".pack", nums[i]);
        if (ledger_object_file_walk(l, prefix, found_one, &named) != FERRY_OK || named)
            continue;
        if (unlinkat(fs->packs_fd, name, 0) == 0)
            log_info("store.pack_removed", "pack=%s", name);
    }
}

void store_fs_slot_init(store_fs_slot *slot)
{
    memset(slot, 0, sizeof *slot);
    slot->fd = -1;
    slot->dfd = -1;
}

/* Frees a pack nobody writes to any more (pack_mu held, p unlinked from
 * the list). */
static void pack_free(store_fs_pack *p)
{
    close(p->fd);
    if (p->dfd >= 0)
        close(p->dfd);
    pthread_mutex_destroy(&p->sync_mu);
    free(p);
}

static void pack_unlist(store_fs *fs, store_fs_pack *p)
{
    for (store_fs_pack **pp = &fs->packs; *pp != NULL; pp = &(*pp)->next)
        if (*pp == p) {
            *pp = p->next;
            return;
        }
}

/* The current pack stops taking regions (pack_mu held). */
static void pack_retire(store_fs *fs, store_fs_pack *p)
{
    p->current = false;
    note_dead_check(fs, p->num); /* all its objects may be gone already */
    if (p->writers == 0) {
        pack_unlist(fs, p);
        pack_free(p);
    }
}

/* A new current pack (pack_mu held). Its directory entry is made durable
 * here, once, so that a region's fdatasync is all its bytes need. */
static ferry_err pack_create(store_fs *fs, store_fs_pack **out)
{
    char name[16];
    store_fs_pack *p;
    if (fs->next_pack == UINT32_MAX)
        return FERRY_ERR_TOO_LARGE;
    p = calloc(1, sizeof *p);
    if (p == NULL)
        return FERRY_ERR_NOMEM;
    p->num = fs->next_pack++;
    snprintf(name, sizeof name, "%08" PRIx32 ".pack", p->num);
    p->fd = openat(fs->packs_fd, name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (p->fd < 0 || fsync(fs->packs_fd) != 0) {
        log_error("store.pack_create_failed", "pack=%s error=\"%s\"", name, strerror(errno));
        if (p->fd >= 0) {
            close(p->fd);
            unlinkat(fs->packs_fd, name, 0);
        }
        free(p);
        return FERRY_ERR_IO;
    }
    /* A second descriptor for direct writes: O_DIRECT is a property of the
     * open file, and the first one's buffered writers share it. */
    p->dfd = openat(fs->packs_fd, name, O_WRONLY | O_DIRECT | O_CLOEXEC);
    pthread_mutex_init(&p->sync_mu, NULL);
    atomic_init(&p->completed, 0);
    atomic_init(&p->failed, false);
    p->current = true;
    p->next = fs->packs;
    fs->packs = p;
    *out = p;
    return FERRY_OK;
}

/* Packs written at once. Buffered writes to one file hold its inode lock
 * while they copy into the page cache, so 32 uploads of 1 MiB into one
 * pack queued behind each other (the lock's spinning alone took ~10% of the
 * machine in bench/upload's 1m case). A new region goes to the current pack
 * with the fewest uploads writing to it; another pack is started only when
 * every current one has PACK_SHARED_WRITERS of them, so a store that
 * receives one upload at a time keeps filling one pack. Regions under
 * PACK_SPREAD_MIN all go to the newest current pack: their copies are
 * short, and every pack a batch touches costs its own fdatasync (with the
 * inode's synchronous write); spreading 64 KiB uploads over four packs
 * made the 64k case ~10% slower. */
#define PACK_STRIPES        4
#define PACK_SHARED_WRITERS 4
#define PACK_SPREAD_MIN     (256u << 10)

static ferry_err slot_open_packed(store_fs *fs, uint64_t size, store_fs_slot *slot)
{
    ferry_err err = FERRY_OK;
    store_fs_pack *cur = NULL, *full[PACK_STRIPES];
    size_t n_current = 0, n_full = 0;
    uint64_t room = align_up(size);
    pthread_mutex_lock(&fs->pack_mu);
    for (store_fs_pack *p = fs->packs; p != NULL; p = p->next) {
        if (!p->current)
            continue;
        if (atomic_load(&p->failed) || p->end + room > fs->pack_size) {
            if (n_full < PACK_STRIPES)
                full[n_full++] = p;
            continue;
        }
        n_current++;
        /* The list is newest first. */
        if (cur == NULL || (size >= PACK_SPREAD_MIN && p->writers < cur->writers))
            cur = p;
    }
    for (size_t i = 0; i < n_full; i++)
        pack_retire(fs, full[i]); /* may free it: after the walk */
    if ((cur == NULL || (size >= PACK_SPREAD_MIN && cur->writers >= PACK_SHARED_WRITERS &&
                         n_current < PACK_STRIPES)) &&
        (err = pack_create(fs, &cur)) != FERRY_OK) {
        if (cur == NULL)
            goto out;
        err = FERRY_OK; /* another current pack takes it */
    }
    slot->base = cur->end;
    slot->room = size;
    slot->pack = cur;
    slot->fd = cur->fd;
    snprintf(slot->id, sizeof slot->id, "p%08" PRIx32 "%016" PRIx64 "%08" PRIx64, cur->num,
             cur->end, room);
    cur->end += room;
    cur->writers++;
out:
    pthread_mutex_unlock(&fs->pack_mu);
    return err;
}

ferry_err store_fs_slot_open(store_fs *fs, uint64_t size, bool size_known, store_fs_slot *slot)
{
    ferry_err err;
    store_fs_slot_init(slot);
    if (size_known && size > 0 && size <= fs->pack_max_object)
        return slot_open_packed(fs, size, slot);
    if ((err = store_fs_new_id(slot->id)) != FERRY_OK ||
        (err = file_create(fs, slot->id, &slot->fd)) != FERRY_OK)
        store_fs_slot_init(slot);
    return err;
}

/* Writes the n buffers of iov (which it advances) at offset at, whole or
 * an error (errno set). */
static ferry_err pwritev_all(int fd, struct iovec *iov, int n, uint64_t at)
{
    while (n > 0) {
        ssize_t w = pwritev(fd, iov, n, (off_t)at);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            if (w == 0)
                errno = EIO;
            return FERRY_ERR_IO;
        }
        at += (uint64_t)w;
        /* Past the buffers written whole, into the one written in part. */
        while (n > 0 && (size_t)w >= iov->iov_len) {
            w -= (ssize_t)iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            iov->iov_base = (char *)iov->iov_base + w;
            iov->iov_len -= (size_t)w;
        }
    }
    return FERRY_OK;
}

ferry_err store_fs_slot_write(store_fs_slot *slot, uint64_t off, const void *data, size_t len)
{
    struct iovec one = {.iov_base = (void *)(uintptr_t)data, .iov_len = len};
    return store_fs_slot_writev(slot, off, &one, 1);
}

/* Copies iov's non-empty buffers into left and checks that off + their
 * length stays within the slot (a region's room: its size, or its size
 * rounded up to 4 KiB for direct writes). */
static ferry_err iov_take(const store_fs_slot *slot, uint64_t off, const struct iovec *iov,
                          int iovcnt, uint64_t room, struct iovec *left, int *n)
{
    uint64_t len = 0;
    *n = 0;
    if (iovcnt < 1 || iovcnt > STORE_FS_IOV_MAX)
        return FERRY_ERR_INVALID;
    for (int i = 0; i < iovcnt; i++) {
        len += iov[i].iov_len;
        if (iov[i].iov_len > 0)
            left[(*n)++] = iov[i];
    }
    if (slot->pack != NULL && off + len > room)
        return FERRY_ERR_TOO_LARGE; /* never past the region */
    return FERRY_OK;
}

ferry_err store_fs_slot_writev(store_fs_slot *slot, uint64_t off, const struct iovec *iov,
                               int iovcnt)
{
    struct iovec left[STORE_FS_IOV_MAX];
    int n;
    ferry_err err = iov_take(slot, off, iov, iovcnt, slot->room, left, &n);
    if (err != FERRY_OK)
        return err;
    return pwritev_all(slot->fd, left, n, slot->base + off);
}

bool store_fs_slot_direct(store_fs *fs, store_fs_slot *slot)
{
    if (slot->fd < 0)
        return false;
    if (slot->pack != NULL)
        return slot->base % STORE_FS_DIRECT_ALIGN == 0 && slot->pack->dfd >= 0;
    if (slot->dfd < 0 && id_ok(slot->id))
        slot->dfd = openat(fs->dirs[dir_index(slot->id)].fd, slot->id,
                           O_WRONLY | O_DIRECT | O_CLOEXEC);
    return slot->dfd >= 0;
}

ferry_err store_fs_slot_writev_direct(store_fs_slot *slot, uint64_t off, const struct iovec *iov,
                                      int iovcnt)
{
    struct iovec left[STORE_FS_IOV_MAX];
    int n, fd = slot->pack != NULL ? slot->pack->dfd : slot->dfd;
    ferry_err err = iov_take(slot, off, iov, iovcnt, align_up(slot->room), left, &n);
    if (err != FERRY_OK)
        return err;
    if (fd < 0 || off % STORE_FS_DIRECT_ALIGN != 0)
        return FERRY_ERR_INVALID;
    for (int i = 0; i < n; i++)
        if ((uintptr_t)left[i].iov_base % STORE_FS_DIRECT_ALIGN != 0 ||
            left[i].iov_len % STORE_FS_DIRECT_ALIGN != 0)
            return FERRY_ERR_INVALID;
    /* A short direct write ends on a block boundary (the disk's). */
    return pwritev_all(fd, left, n, slot->base + off);
}

ferry_err store_fs_slot_write_split(store_fs_slot *slot, uint64_t off, const void *buf,
                                    size_t len, size_t direct)
{
    const char *b = buf;
    ferry_err err = FERRY_OK;
    if (direct > 0) {
        struct iovec one = {.iov_base = (void *)(uintptr_t)buf, .iov_len = direct};
        err = store_fs_slot_writev_direct(slot, off, &one, 1);
        if (err == FERRY_ERR_IO && errno == EINVAL)
            return store_fs_slot_write(slot, off, buf, len); /* refused: as plain writes go */
    }
    if (err == FERRY_OK && direct < len)
        err = store_fs_slot_write(slot, off + direct, b + direct, len - direct);
    return err;
}

void store_fs_slot_written(store_fs_slot *slot)
{
    if (slot->pack != NULL && slot->ticket == 0)
        slot->ticket = atomic_fetch_add(&slot->pack->completed, 1) + 1;
}

/* Makes every region of p written before ticket was taken durable, with
 * one fdatasync for all of them (as dir_sync): whoever holds sync_mu
 * syncs everything written so far; those queued behind it find their
 * tickets covered. After a failed fdatasync the kernel may have dropped
 * the dirty pages and a later one would succeed without them: the pack
 * then fails every sync and is retired. */
static ferry_err pack_sync(store_fs_pack *p, uint64_t need)
{
    ferry_err err = FERRY_OK;
    pthread_mutex_lock(&p->sync_mu);
    if (atomic_load(&p->failed)) {
        err = FERRY_ERR_IO;
    } else if (p->synced < need) {
        uint64_t covers = atomic_load(&p->completed);
        if (fdatasync(p->fd) == 0) {
            p->synced = covers;
        } else {
            log_error("store.pack_fsync_failed", "pack=%08" PRIx32 " error=\"%s\"", p->num,
                      strerror(errno));
            atomic_store(&p->failed, true); /* slot_open_packed retires it */
            err = FERRY_ERR_IO;
        }
    }
    pthread_mutex_unlock(&p->sync_mu);
    return err;
}

ferry_err store_fs_slot_sync(store_fs *fs, store_fs_slot *slot)
{
    if (slot->pack != NULL) {
        store_fs_slot_written(slot);
        return pack_sync(slot->pack, slot->ticket);
    }
    return file_sync(fs, slot->fd, slot->id);
}

void store_fs_slot_close(store_fs *fs, store_fs_slot *slot, bool keep)
{
    store_fs_pack *p = slot->pack;
    if (slot->fd < 0)
        return;
    if (p == NULL) {
        close(slot->fd);
        if (slot->dfd >= 0)
            close(slot->dfd);
        if (!keep)
            store_fs_remove_object(fs, slot->id);
        store_fs_slot_init(slot);
        return;
    }
    if (!keep)
        punch(slot->fd, slot->base, align_up(slot->room));
    pthread_mutex_lock(&fs->pack_mu);
    if (--p->writers == 0 && !p->current) {
        pack_unlist(fs, p);
        pack_free(p);
    }
    pthread_mutex_unlock(&fs->pack_mu);
    store_fs_slot_init(slot);
}
