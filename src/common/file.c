/* file.c - reading a small file whole, with a cap; see file.h. */
#include "file.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

ferry_err ferry_read_small_file(const char *path, size_t max_bytes, char **out, const char **why)
{
    ferry_err err = FERRY_OK;
    const char *reason = NULL;
    struct stat st;
    char *data = NULL;
    size_t got = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (why != NULL)
            *why = "cannot open";
        return FERRY_ERR_CONFIG;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size <= 0 ||
        (unsigned long long)st.st_size > max_bytes) {
        reason = "not a regular file of 1 B to the size limit";
        err = FERRY_ERR_CONFIG;
        goto out;
    }
    data = malloc((size_t)st.st_size + 1);
    if (data == NULL) {
        err = FERRY_ERR_NOMEM;
        goto out;
    }
    while (got < (size_t)st.st_size) {
        ssize_t n = read(fd, data + got, (size_t)st.st_size - got);
        if (n <= 0) {
            reason = "read error";
            err = FERRY_ERR_IO;
            goto out;
        }
        got += (size_t)n;
    }
    data[got] = '\0';
    *out = data;
    data = NULL;
out:
    if (data != NULL) {
        /* It may have been a private key. */
        OPENSSL_cleanse(data, (size_t)st.st_size);
        free(data);
    }
    if (reason != NULL && why != NULL)
        *why = reason;
    close(fd);
    return err;
}

ferry_err ferry_read_stream(FILE *f, ferry_buf *out)
{
    char chunk[8192];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        ferry_err err = ferry_buf_append(out, chunk, n);
        if (err != FERRY_OK)
            return err;
    }
    return ferror(f) ? FERRY_ERR_IO : FERRY_OK;
}
