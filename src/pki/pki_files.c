/*
 * pki_files.c - the files of a PKI directory: creating key files safely,
 * replacing state files atomically, reading PEM input with a cap, and the
 * index of issued certificates.
 *
 * Key files are created with open(O_CREAT|O_EXCL, 0600): the key is never
 * readable by anyone else, not even for the moment between a create and a
 * chmod, and an existing file is never overwritten. State files (index,
 * crlnumber, crl.pem) are replaced with write-temporary, fsync, rename, so a
 * crash leaves either the old or the new version, never half of one.
 *
 * Index format, one certificate per line, fields separated by one space:
 *   V <serial hex> <not-after, UTC seconds> 0 <name>
 *   R <serial hex> <not-after, UTC seconds> <revoked at, UTC seconds> <name>
 */
#include "pki_int.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/pem.h>

static ferry_err write_all(int fd, const void *data, size_t len)
{
    const unsigned char *p = data;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return FERRY_ERR_IO;
        }
        p += n;
        len -= (size_t)n;
    }
    return FERRY_OK;
}

ferry_err pki_path(char *out, size_t out_size, const char *dir, const char *rel)
{
    int n = snprintf(out, out_size, "%s/%s", dir, rel);
    if (n < 0 || (size_t)n >= out_size)
        return FERRY_ERR_TOO_LARGE;
    return FERRY_OK;
}

ferry_err pki_write_new(const char *path, const void *data, size_t len, unsigned mode)
{
    ferry_err result = FERRY_OK;
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, (mode_t)mode);
    if (fd < 0)
        return errno == EEXIST ? FERRY_ERR_EXISTS : FERRY_ERR_IO;
    result = write_all(fd, data, len);
    if (result == FERRY_OK && fsync(fd) != 0)
        result = FERRY_ERR_IO;
    if (close(fd) != 0 && result == FERRY_OK)
        result = FERRY_ERR_IO;
    /* A half-written key or certificate must not stay behind to block the
     * next attempt or be mistaken for a good one. */
    if (result != FERRY_OK)
        unlink(path);
    return result;
}

ferry_err pki_write_replace(const char *path, const void *data, size_t len, unsigned mode)
{
    char tmp[PATH_MAX];
    int n = snprintf(tmp, sizeof tmp, "%s.tmp", path);
    if (n < 0 || (size_t)n >= sizeof tmp)
        return FERRY_ERR_TOO_LARGE;
    /* A stale temporary file from a crashed run is ours to replace: the
     * directory is locked by the caller. */
    unlink(tmp);
    ferry_err result = pki_write_new(tmp, data, len, mode);
    if (result != FERRY_OK)
        return result;
    if (rename(tmp, path) != 0) {
        unlink(tmp);
        return FERRY_ERR_IO;
    }
    return FERRY_OK;
}

ferry_err pki_read_file(const char *path, size_t max, ferry_buf *buf)
{
    ferry_err result = FERRY_OK;
    char chunk[4096];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? FERRY_ERR_NOT_FOUND : FERRY_ERR_IO;
    ferry_buf_reset(buf);
    buf->max_len = max;
    for (;;) {
        ssize_t n = read(fd, chunk, sizeof chunk);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            result = FERRY_ERR_IO;
            goto out;
        }
        if (n == 0)
            break;
        result = ferry_buf_append(buf, chunk, (size_t)n);
        if (result != FERRY_OK)
            goto out;
    }
out:
    OPENSSL_cleanse(chunk, sizeof chunk);
    close(fd);
    return result;
}

/* Copies a memory BIO's contents into out. */
static ferry_err bio_to_buf(BIO *bio, ferry_buf *out)
{
    char *data = NULL;
    long len = BIO_get_mem_data(bio, &data);
    if (len <= 0 || data == NULL)
        return FERRY_ERR_CRYPTO;
    ferry_buf_reset(out);
    return ferry_buf_append(out, data, (size_t)len);
}

ferry_err pki_pem_key(EVP_PKEY *key, ferry_buf *out)
{
    ferry_err result = FERRY_ERR_CRYPTO;
    /* The secure-memory BIO wipes its contents when freed. */
    BIO *bio = BIO_new(BIO_s_secmem());
    if (bio == NULL)
        return FERRY_ERR_NOMEM;
    if (PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL) != 1)
        goto out;
    result = bio_to_buf(bio, out);
out:
    BIO_free(bio);
    return result;
}

ferry_err pki_pem_cert(X509 *cert, ferry_buf *out)
{
    ferry_err result = FERRY_ERR_CRYPTO;
    BIO *bio = BIO_new(BIO_s_mem());
    if (bio == NULL)
        return FERRY_ERR_NOMEM;
    if (PEM_write_bio_X509(bio, cert) != 1)
        goto out;
    result = bio_to_buf(bio, out);
out:
    BIO_free(bio);
    return result;
}

ferry_err pki_load_cert(const char *path, X509 **out)
{
    ferry_buf buf;
    ferry_buf_init(&buf, PKI_PEM_MAX);
    ferry_err result = pki_read_file(path, PKI_PEM_MAX, &buf);
    BIO *bio = NULL;
    X509 *cert = NULL;
    if (result != FERRY_OK)
        goto out;
    result = FERRY_ERR_CRYPTO;
    bio = BIO_new_mem_buf(ferry_buf_str(&buf), (int)buf.len);
    if (bio == NULL)
        goto out;
    cert = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    if (cert == NULL)
        goto out;
    *out = cert;
    result = FERRY_OK;
out:
    BIO_free(bio);
    ferry_buf_cleanup(&buf);
    return result;
}

ferry_err pki_load_key(const char *path, EVP_PKEY **out)
{
    ferry_buf buf;
    ferry_buf_init(&buf, PKI_PEM_MAX);
    ferry_err result = pki_read_file(path, PKI_PEM_MAX, &buf);
    BIO *bio = NULL;
    EVP_PKEY *key = NULL;
    if (result != FERRY_OK)
        goto out;
    result = FERRY_ERR_CRYPTO;
    bio = BIO_new_mem_buf(ferry_buf_str(&buf), (int)buf.len);
    if (bio == NULL)
        goto out;
    /* A NULL passphrase callback with an empty passphrase: our keys are
     * never encrypted, and an encrypted one must fail, not prompt. */
    key = PEM_read_bio_PrivateKey(bio, NULL, NULL, (void *)"");
    if (key == NULL)
        goto out;
    *out = key;
    result = FERRY_OK;
out:
    BIO_free(bio);
    ferry_buf_wipe(&buf);
    return result;
}

void pki_index_cleanup(pki_index *index)
{
    if (index == NULL)
        return;
    free(index->entries);
    index->entries = NULL;
    index->count = 0;
}

ferry_err pki_index_add(pki_index *index, const pki_index_entry *entry)
{
    if (index->count >= SIZE_MAX / sizeof *entry - 1)
        return FERRY_ERR_TOO_LARGE;
    pki_index_entry *grown = realloc(index->entries, (index->count + 1) * sizeof *entry);
    if (grown == NULL)
        return FERRY_ERR_NOMEM;
    grown[index->count] = *entry;
    index->entries = grown;
    index->count++;
    return FERRY_OK;
}

static bool is_serial_hex(const char *s, size_t len)
{
    if (len != PKI_SERIAL_HEX_LEN)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

static bool parse_u63(const char *s, size_t len, int64_t *out)
{
    int64_t v = 0;
    if (len == 0 || len > 18)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return true;
}

/* Splits one line into its five fields. */
static bool parse_index_line(const char *line, size_t len, pki_index_entry *e)
{
    const char *field[5];
    size_t flen[5];
    size_t nf = 0;
    size_t start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i == len || line[i] == ' ') {
            if (nf == 5)
                return false;
            field[nf] = line + start;
            flen[nf] = i - start;
            nf++;
            start = i + 1;
        }
    }
    if (nf != 5 || flen[0] != 1 || (field[0][0] != 'V' && field[0][0] != 'R'))
        return false;
    memset(e, 0, sizeof *e);
    e->revoked = field[0][0] == 'R';
    if (!is_serial_hex(field[1], flen[1]))
        return false;
    memcpy(e->serial, field[1], flen[1]);
    if (!parse_u63(field[2], flen[2], &e->not_after) ||
        !parse_u63(field[3], flen[3], &e->revoked_at))
        return false;
    if (e->revoked != (e->revoked_at != 0))
        return false;
    if (flen[4] == 0 || flen[4] >= sizeof e->name)
        return false;
    memcpy(e->name, field[4], flen[4]);
    for (size_t i = 0; i < flen[4]; i++) {
        char c = e->name[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

ferry_err pki_index_load(const char *dir, pki_index *out, char *err, size_t err_size)
{
    char path[PATH_MAX];
    ferry_buf buf;
    pki_index index = {NULL, 0};
    ferry_buf_init(&buf, PKI_INDEX_MAX);
    ferry_err result = pki_path(path, sizeof path, dir, "index");
    if (result != FERRY_OK)
        goto out;
    result = pki_read_file(path, PKI_INDEX_MAX, &buf);
    if (result != FERRY_OK) {
        snprintf(err, err_size, "%s: cannot read: %s", path, ferry_err_str(result));
        goto out;
    }
    const char *p = ferry_buf_str(&buf);
    size_t line_no = 0;
    while (*p != '\0') {
        const char *nl = strchr(p, '\n');
        line_no++;
        if (nl == NULL) {
            /* Every line we write ends in a newline; a missing one means a
             * torn write or an edit by hand. */
            snprintf(err, err_size, "%s:%zu: last line has no newline", path, line_no);
            result = FERRY_ERR_INVALID;
            goto out;
        }
        pki_index_entry e;
        if (!parse_index_line(p, (size_t)(nl - p), &e)) {
            snprintf(err, err_size, "%s:%zu: malformed line", path, line_no);
            result = FERRY_ERR_INVALID;
            goto out;
        }
        result = pki_index_add(&index, &e);
        if (result != FERRY_OK)
            goto out;
        p = nl + 1;
    }
    *out = index;
    index.entries = NULL;
out:
    pki_index_cleanup(&index);
    ferry_buf_cleanup(&buf);
    return result;
}

ferry_err pki_index_save(const char *dir, const pki_index *index)
{
    char path[PATH_MAX];
    ferry_buf buf;
    ferry_buf_init(&buf, PKI_INDEX_MAX);
    ferry_err result = pki_path(path, sizeof path, dir, "index");
    if (result != FERRY_OK)
        goto out;
    for (size_t i = 0; i < index->count; i++) {
        const pki_index_entry *e = &index->entries[i];
        result = ferry_buf_appendf(&buf, "%c %s %" PRId64 " %" PRId64 " %s\n",
                                   e->revoked ? 'R' : 'V', e->serial, e->not_after,
                                   e->revoked_at, e->name);
        if (result != FERRY_OK)
            goto out;
    }
    result = pki_write_replace(path, ferry_buf_str(&buf), buf.len, 0644);
out:
    ferry_buf_cleanup(&buf);
    return result;
}
