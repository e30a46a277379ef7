/*
 * store_fs.c - see store_fs.h. All paths are built from the root and file
 * ids the store generated itself (hex); ids that come back from the ledger
 * are re-checked to be hex before they are used in a path.
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

#include <linux/fs.h>

#include <openssl/rand.h>

#include "common/log.h"

static bool id_ok(const char *id)
{
    size_t n = strnlen(id, STORE_FILE_ID_LEN + 1);
    if (n != STORE_FILE_ID_LEN)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'f')))
            return false;
    return true;
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

ferry_err store_fs_open(store_fs *fs, const char *root)
{
    ferry_err err = FERRY_OK;
    char p[STORE_PATH_MAX];
    memset(fs, 0, sizeof *fs);
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
    if ((err = fsync_path(p)) == FERRY_OK)
        err = fsync_path(root);
out:
    if (err)
        store_fs_cleanup(fs);
    return err;
}

void store_fs_cleanup(store_fs *fs)
{
    if (fs == NULL)
        return;
    if (fs->dirs_ready)
        for (int i = 0; i < 256; i++) {
            if (fs->dirs[i].fd >= 0)
                close(fs->dirs[i].fd);
            fs->dirs[i].fd = -1;
            pthread_mutex_destroy(&fs->dirs[i].mu);
        }
    fs->dirs_ready = false;
    free(fs->root);
    fs->root = NULL;
}

ferry_err store_fs_sweep(store_fs *fs, ledger *l, size_t *removed)
{
    ferry_err err = FERRY_OK;
    char p[STORE_PATH_MAX];
    size_t n = 0;
    DIR *d;
    struct dirent *e;

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

ferry_err store_fs_create_tmp(store_fs *fs, const char *id, int *fd_out)
{
    if (!id_ok(id))
        return FERRY_ERR_INVALID;
    store_fs_dir *d = &fs->dirs[dir_index(id)];
    int fd = openat(d->fd, id, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
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

void store_fs_remove_tmp(store_fs *fs, const char *id)
{
    store_fs_remove_object(fs, id);
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

ferry_err store_fs_commit(store_fs *fs, int fd, const char *id)
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

ferry_err store_fs_open_object(store_fs *fs, const char *id, int *fd_out)
{
    char p[STORE_PATH_MAX];
    if (!id_ok(id))
        return FERRY_ERR_NOT_FOUND;
    snprintf(p, sizeof p, "%s/objects/%c%c/%s", fs->root, id[0], id[1], id);
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? FERRY_ERR_NOT_FOUND : FERRY_ERR_IO;
    *fd_out = fd;
    return FERRY_OK;
}

void store_fs_remove_object(store_fs *fs, const char *id)
{
    char p[STORE_PATH_MAX];
    if (!id_ok(id))
        return;
    snprintf(p, sizeof p, "%s/objects/%c%c/%s", fs->root, id[0], id[1], id);
    unlink(p);
}
