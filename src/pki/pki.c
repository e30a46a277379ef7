/*
 * pki.c - the PKI operations behind `ferryctl pki`: init, issue, revoke and
 * CRL refresh; see pki.h for the directory layout.
 *
 * Every operation that writes takes an exclusive flock() on DIR/lock for its
 * whole duration, so two ferryctl runs cannot interleave index updates.
 * Order of writes, so that a crash never leaves a certificate the CA cannot
 * revoke: key and certificate files first (O_EXCL), then the index entry;
 * if the index cannot be written, the new files are removed again.
 */
#include "pki.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/asn1.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>

#include "common/timefmt.h"
#include "pki_int.h"

static const char *const reserved_names[] = {"ferryd", "broker", "store"};

/* Names of additional ferryd identities start with this; devices may not. */
#define FERRYD_PREFIX "ferryd-"

/* The characters and length every certificate name must have. */
static ferry_err check_charset(const char *name, char *err, size_t err_size)
{
    size_t len = name != NULL ? strnlen(name, PKI_NAME_MAX + 1) : 0;
    if (len == 0 || len > PKI_NAME_MAX) {
        snprintf(err, err_size, "name must be 1 to %d characters", PKI_NAME_MAX);
        return FERRY_ERR_INVALID;
    }
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-')) {
            snprintf(err, err_size,
                     "name may only contain A-Z a-z 0-9 . _ - (it is an MQTT "
                     "topic level and a file name)");
            return FERRY_ERR_INVALID;
        }
    }
    if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0) {
        snprintf(err, err_size, "name '%s' is not allowed", name);
        return FERRY_ERR_INVALID;
    }
    return FERRY_OK;
}

ferry_err pki_name_check(const char *name, char *err, size_t err_size)
{
    ferry_err result = check_charset(name, err, err_size);
    if (result != FERRY_OK)
        return result;
    /* Reserved in any case: "Ferryd" would be a different broker user but
     * an easy one to confuse with ferryd in logs and ACLs. */
    for (size_t i = 0; i < sizeof reserved_names / sizeof reserved_names[0]; i++) {
        if (strcasecmp(name, reserved_names[i]) == 0) {
            snprintf(err, err_size, "name '%s' is reserved for a server identity", name);
            return FERRY_ERR_INVALID;
        }
    }
    /* ferryd-* names get ferryd's rights in the broker's ACL. */
    if (strncasecmp(name, FERRYD_PREFIX, strlen(FERRYD_PREFIX)) == 0) {
        snprintf(err, err_size, "names starting with '%s' are reserved for ferryd identities",
                 FERRYD_PREFIX);
        return FERRY_ERR_INVALID;
    }
    return FERRY_OK;
}

ferry_err pki_ferryd_name_check(const char *name, char *err, size_t err_size)
{
    ferry_err result = check_charset(name, err, err_size);
    if (result != FERRY_OK)
        return result;
    /* Exactly lower-case "ferryd-" and at least one more character: the ACL
     * generator matches this prefix byte for byte. */
    if (strncmp(name, FERRYD_PREFIX, strlen(FERRYD_PREFIX)) != 0 ||
        name[strlen(FERRYD_PREFIX)] == '\0') {
        snprintf(err, err_size, "a ferryd identity is named '%sSUFFIX'", FERRYD_PREFIX);
        return FERRY_ERR_INVALID;
    }
    return FERRY_OK;
}

bool pki_is_ferryd_identity(const char *name)
{
    return strcmp(name, "ferryd") == 0 ||
           (strncmp(name, FERRYD_PREFIX, strlen(FERRYD_PREFIX)) == 0 &&
            name[strlen(FERRYD_PREFIX)] != '\0');
}

static ferry_err check_days(int days, char *err, size_t err_size)
{
    if (days < 1 || days > PKI_MAX_DAYS) {
        snprintf(err, err_size, "validity must be 1 to %d days", PKI_MAX_DAYS);
        return FERRY_ERR_RANGE;
    }
    return FERRY_OK;
}

/* Takes the directory's write lock; *fd_out is closed to release it. */
static ferry_err lock_dir(const char *dir, int *fd_out, char *err, size_t err_size)
{
    char path[PATH_MAX];
    if (pki_path(path, sizeof path, dir, "lock") != FERRY_OK) {
        snprintf(err, err_size, "%s: path too long", dir);
        return FERRY_ERR_TOO_LARGE;
    }
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0) {
        snprintf(err, err_size, "%s: %s", path, strerror(errno));
        return FERRY_ERR_IO;
    }
    while (flock(fd, LOCK_EX) != 0) {
        if (errno != EINTR) {
            snprintf(err, err_size, "%s: cannot lock: %s", path, strerror(errno));
            close(fd);
            return FERRY_ERR_IO;
        }
    }
    *fd_out = fd;
    return FERRY_OK;
}

static void unlock_dir(int fd)
{
    if (fd >= 0)
        close(fd);
}

/* Writes a key (0600) and a certificate (0644) as DIR/stem.key and
 * DIR/stem.pem; key may be NULL (a CSR-signed certificate). On failure
 * neither file is left behind. */
static ferry_err write_pair(const char *dir, const char *stem, EVP_PKEY *key, X509 *cert, char *err,
                            size_t err_size)
{
    char key_path[PATH_MAX], cert_path[PATH_MAX], rel[PATH_MAX];
    ferry_buf pem;
    bool key_written = false;
    ferry_buf_init(&pem, PKI_PEM_MAX);
    ferry_err result = FERRY_ERR_TOO_LARGE;
    int n = snprintf(rel, sizeof rel, "%s.key", stem);
    if (n < 0 || (size_t)n >= sizeof rel || pki_path(key_path, sizeof key_path, dir, rel) != 0)
        goto out;
    n = snprintf(rel, sizeof rel, "%s.pem", stem);
    if (n < 0 || (size_t)n >= sizeof rel || pki_path(cert_path, sizeof cert_path, dir, rel) != 0)
        goto out;
    if (key != NULL) {
        result = pki_pem_key(key, &pem);
        if (result == FERRY_OK)
            result = pki_write_new(key_path, ferry_buf_str(&pem), pem.len, 0600);
        ferry_buf_wipe(&pem);
        ferry_buf_init(&pem, PKI_PEM_MAX);
        if (result != FERRY_OK) {
            snprintf(err, err_size, "%s: cannot create: %s", key_path, ferry_err_str(result));
            goto out;
        }
        key_written = true;
    }
    result = pki_pem_cert(cert, &pem);
    if (result == FERRY_OK)
        result = pki_write_new(cert_path, ferry_buf_str(&pem), pem.len, 0644);
    if (result != FERRY_OK) {
        snprintf(err, err_size, "%s: cannot create: %s", cert_path, ferry_err_str(result));
        goto out;
    }
out:
    if (result != FERRY_OK && key_written)
        unlink(key_path);
    if (result == FERRY_ERR_TOO_LARGE && err[0] == '\0')
        snprintf(err, err_size, "%s: path too long", dir);
    ferry_buf_cleanup(&pem);
    return result;
}

static void remove_pair(const char *dir, const char *stem)
{
    char path[PATH_MAX], rel[PATH_MAX];
    int n = snprintf(rel, sizeof rel, "%s.key", stem);
    if (n > 0 && (size_t)n < sizeof rel && pki_path(path, sizeof path, dir, rel) == FERRY_OK)
        unlink(path);
    n = snprintf(rel, sizeof rel, "%s.pem", stem);
    if (n > 0 && (size_t)n < sizeof rel && pki_path(path, sizeof path, dir, rel) == FERRY_OK)
        unlink(path);
}

static ferry_err read_crl_number(const char *dir, uint64_t *out)
{
    char path[PATH_MAX];
    ferry_buf buf;
    ferry_buf_init(&buf, 32);
    uint64_t n = 0;
    ferry_err result = pki_path(path, sizeof path, dir, "crlnumber");
    if (result != FERRY_OK)
        goto out;
    result = pki_read_file(path, 32, &buf);
    if (result == FERRY_ERR_NOT_FOUND) {
        *out = 0;
        result = FERRY_OK;
        goto out;
    }
    if (result != FERRY_OK)
        goto out;
    const char *p = ferry_buf_str(&buf);
    if (*p == '\0' || *p == '\n') {
        result = FERRY_ERR_INVALID;
        goto out;
    }
    for (; *p >= '0' && *p <= '9'; p++) {
        if (n > (UINT64_MAX - 9) / 10) {
            result = FERRY_ERR_RANGE;
            goto out;
        }
        n = n * 10 + (uint64_t)(*p - '0');
    }
    if (strcmp(p, "\n") != 0) {
        result = FERRY_ERR_INVALID;
        goto out;
    }
    *out = n;
out:
    ferry_buf_cleanup(&buf);
    return result;
}

/* Builds crl.pem from the index with the next CRL number. The caller holds
 * the lock. */
static ferry_err write_crl(const char *dir, X509 *ca, EVP_PKEY *ca_key, const pki_index *index,
                           int days, char *err, size_t err_size)
{
    char path[PATH_MAX];
    char num_text[32];
    uint64_t number = 0;
    X509_CRL *crl = NULL;
    BIO *bio = NULL;
    ferry_err result = read_crl_number(dir, &number);
    if (result != FERRY_OK) {
        snprintf(err, err_size, "%s/crlnumber: unreadable: %s", dir, ferry_err_str(result));
        goto out;
    }
    number++;
    result = pki_crl_build(ca, ca_key, index, number, ferry_time_now(), days, &crl, err, err_size);
    if (result != FERRY_OK)
        goto out;
    result = FERRY_ERR_CRYPTO;
    bio = BIO_new(BIO_s_mem());
    if (bio == NULL || PEM_write_bio_X509_CRL(bio, crl) != 1) {
        snprintf(err, err_size, "cannot encode the CRL");
        goto out;
    }
    char *data = NULL;
    long len = BIO_get_mem_data(bio, &data);
    if (len <= 0 || data == NULL)
        goto out;
    /* The number first: if the CRL write then fails, the next run skips a
     * number, which is harmless; reusing one would not be. */
    int n = snprintf(num_text, sizeof num_text, "%" PRIu64 "\n", number);
    result = pki_path(path, sizeof path, dir, "crlnumber");
    if (result == FERRY_OK)
        result = pki_write_replace(path, num_text, (size_t)n, 0644);
    if (result == FERRY_OK)
        result = pki_path(path, sizeof path, dir, "crl.pem");
    if (result == FERRY_OK)
        result = pki_write_replace(path, data, (size_t)len, 0644);
    if (result != FERRY_OK)
        snprintf(err, err_size, "%s: cannot write the CRL: %s", dir, ferry_err_str(result));
out:
    BIO_free(bio);
    X509_CRL_free(crl);
    return result;
}

static ferry_err load_ca(const char *dir, X509 **ca_out, EVP_PKEY **key_out, char *err,
                         size_t err_size)
{
    char path[PATH_MAX];
    X509 *ca = NULL;
    EVP_PKEY *key = NULL;
    ferry_err result = pki_path(path, sizeof path, dir, "ca.pem");
    if (result == FERRY_OK)
        result = pki_load_cert(path, &ca);
    if (result != FERRY_OK) {
        snprintf(err, err_size, "%s: cannot load the CA certificate: %s (run ferryctl pki init)",
                 path, ferry_err_str(result));
        goto out;
    }
    result = pki_path(path, sizeof path, dir, "ca.key");
    if (result == FERRY_OK)
        result = pki_load_key(path, &key);
    if (result != FERRY_OK) {
        snprintf(err, err_size, "%s: cannot load the CA key: %s", path, ferry_err_str(result));
        goto out;
    }
    if (X509_check_private_key(ca, key) != 1) {
        snprintf(err, err_size, "%s: does not match ca.pem", path);
        result = FERRY_ERR_CRYPTO;
        goto out;
    }
    *ca_out = ca;
    *key_out = key;
    ca = NULL;
    key = NULL;
out:
    ERR_clear_error();
    X509_free(ca);
    EVP_PKEY_free(key);
    return result;
}

static ferry_err make_dir(const char *path, mode_t mode, char *err, size_t err_size)
{
    if (mkdir(path, mode) != 0 && errno != EEXIST) {
        snprintf(err, err_size, "%s: cannot create: %s", path, strerror(errno));
        return FERRY_ERR_IO;
    }
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode)) {
        snprintf(err, err_size, "%s: not a directory", path);
        return FERRY_ERR_INVALID;
    }
    return FERRY_OK;
}

/* Issues one certificate with a new key, writes DIR/stem.{key,pem} and adds
 * it to the index (in memory; the caller saves). */
static ferry_err issue_with_key(const char *dir, const char *stem, const char *name,
                                pki_cert_kind kind, X509 *ca, EVP_PKEY *ca_key, int days,
                                const pki_init_options *opts, pki_index *index, char *err,
                                size_t err_size)
{
    EVP_PKEY *key = NULL;
    X509 *cert = NULL;
    pki_index_entry entry;
    memset(&entry, 0, sizeof entry);
    ferry_err result = pki_keygen(&key);
    if (result != FERRY_OK) {
        snprintf(err, err_size, "cannot generate a key for %s", name);
        goto out;
    }
    pki_cert_spec spec = {
        .kind = kind,
        .common_name = name,
        .subject_key = key,
        .issuer = ca,
        .issuer_key = ca_key,
        .now = ferry_time_now(),
        .days = days,
        .sans = opts != NULL ? opts->server_names : NULL,
        .san_count = opts != NULL ? opts->server_name_count : 0,
    };
    result = pki_cert_build(&spec, &cert, entry.serial, err, err_size);
    if (result != FERRY_OK)
        goto out;
    result = write_pair(dir, stem, key, cert, err, err_size);
    if (result != FERRY_OK)
        goto out;
    entry.not_after = spec.now + (int64_t)days * 86400;
    snprintf(entry.name, sizeof entry.name, "%s", name);
    result = pki_index_add(index, &entry);
out:
    EVP_PKEY_free(key);
    X509_free(cert);
    return result;
}

/* Checks each --name: an IP address, or a DNS name of letters, digits,
 * hyphens and dots (a leading "*." wildcard label is allowed). */
static ferry_err check_server_names(const pki_init_options *opts, char *err, size_t err_size)
{
    if (opts->server_name_count > PKI_MAX_SANS) {
        snprintf(err, err_size, "at most %d --name values", PKI_MAX_SANS);
        return FERRY_ERR_TOO_LARGE;
    }
    for (size_t i = 0; i < opts->server_name_count; i++) {
        const char *s = opts->server_names[i];
        size_t len = strnlen(s, 254);
        bool ok = len > 0 && len <= 253;
        for (size_t j = 0; ok && j < len; j++) {
            char c = s[j];
            ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                 c == '-' || c == '.' || c == ':' || (c == '*' && j == 0 && s[1] == '.');
        }
        /* A colon only in an IPv6 address; "host:8883" is a mistake. */
        unsigned char addr[16];
        if (ok && strchr(s, ':') != NULL && inet_pton(AF_INET6, s, addr) != 1)
            ok = false;
        if (!ok) {
            snprintf(err, err_size, "--name '%.64s': not a host name or IP address", s);
            return FERRY_ERR_INVALID;
        }
    }
    return FERRY_OK;
}

ferry_err pki_init(const char *dir, const pki_init_options *opts, char *err, size_t err_size)
{
    static const pki_init_options no_opts = {PKI_DEFAULT_DAYS, NULL, 0};
    char path[PATH_MAX];
    int lock_fd = -1;
    EVP_PKEY *ca_key = NULL;
    X509 *ca = NULL;
    pki_index index = {NULL, 0};
    char ca_cn[64];
    unsigned char tag[4];
    struct stat st;
    bool ca_written = false;
    ferry_err result;
    if (opts == NULL)
        opts = &no_opts;
    err[0] = '\0';
    result = check_days(opts->days, err, err_size);
    if (result != FERRY_OK)
        return result;
    result = check_server_names(opts, err, err_size);
    if (result != FERRY_OK)
        return result;
    result = make_dir(dir, 0755, err, err_size);
    if (result != FERRY_OK)
        return result;
    result = lock_dir(dir, &lock_fd, err, err_size);
    if (result != FERRY_OK)
        return result;

    /* Either file means a CA lives here; replacing it would orphan every
     * device certificate it signed. */
    const char *ca_files[] = {"ca.pem", "ca.key", "index"};
    for (size_t i = 0; i < sizeof ca_files / sizeof ca_files[0]; i++) {
        result = pki_path(path, sizeof path, dir, ca_files[i]);
        if (result != FERRY_OK)
            goto out;
        if (lstat(path, &st) == 0) {
            snprintf(err, err_size, "%s already exists: refusing to replace an existing CA", path);
            result = FERRY_ERR_EXISTS;
            goto out;
        }
    }
    for (size_t i = 0; i < 2; i++) {
        result = pki_path(path, sizeof path, dir, i == 0 ? "devices" : "revoked");
        if (result == FERRY_OK)
            result = make_dir(path, 0755, err, err_size);
        if (result != FERRY_OK)
            goto out;
    }

    result = pki_keygen(&ca_key);
    if (result != FERRY_OK) {
        snprintf(err, err_size, "cannot generate the CA key");
        goto out;
    }
    /* A random tag in the CA's name keeps two Ferry CAs apart in logs and
     * in OpenSSL's issuer lookup. */
    if (RAND_bytes(tag, (int)sizeof tag) != 1) {
        result = FERRY_ERR_CRYPTO;
        goto out;
    }
    snprintf(ca_cn, sizeof ca_cn, "Ferry CA %02x%02x%02x%02x", tag[0], tag[1], tag[2], tag[3]);
    pki_cert_spec spec = {
        .kind = PKI_CERT_CA,
        .common_name = ca_cn,
        .subject_key = ca_key,
        .issuer = NULL,
        .issuer_key = ca_key,
        .now = ferry_time_now(),
        .days = PKI_CA_DAYS,
    };
    pki_index_entry ca_entry;
    memset(&ca_entry, 0, sizeof ca_entry);
    result = pki_cert_build(&spec, &ca, ca_entry.serial, err, err_size);
    if (result != FERRY_OK)
        goto out;
    result = write_pair(dir, "ca", ca_key, ca, err, err_size);
    if (result != FERRY_OK)
        goto out;
    ca_written = true;

    result = issue_with_key(dir, "broker", "broker", PKI_CERT_SERVER, ca, ca_key, opts->days, opts,
                            &index, err, err_size);
    if (result == FERRY_OK)
        result = issue_with_key(dir, "store", "store", PKI_CERT_SERVER, ca, ca_key, opts->days,
                                opts, &index, err, err_size);
    if (result == FERRY_OK)
        result = issue_with_key(dir, "ferryd", "ferryd", PKI_CERT_CLIENT, ca, ca_key, opts->days,
                                NULL, &index, err, err_size);
    if (result != FERRY_OK)
        goto out;
    result = write_crl(dir, ca, ca_key, &index, opts->days, err, err_size);
    if (result != FERRY_OK)
        goto out;
    result = pki_index_save(dir, &index);
    if (result != FERRY_OK)
        snprintf(err, err_size, "%s/index: cannot write: %s", dir, ferry_err_str(result));
out:
    if (result != FERRY_OK && ca_written) {
        /* Leave no half-made CA behind: the next init must be able to run. */
        const char *stems[] = {"ferryd", "store", "broker", "ca"};
        for (size_t i = 0; i < sizeof stems / sizeof stems[0]; i++)
            remove_pair(dir, stems[i]);
        const char *files[] = {"crl.pem", "crlnumber", "index"};
        for (size_t i = 0; i < sizeof files / sizeof files[0]; i++)
            if (pki_path(path, sizeof path, dir, files[i]) == FERRY_OK)
                unlink(path);
    }
    pki_index_cleanup(&index);
    X509_free(ca);
    EVP_PKEY_free(ca_key);
    unlock_dir(lock_fd);
    return result;
}

/* The index entry of the device's current (unrevoked) certificate. */
static pki_index_entry *find_current(pki_index *index, const char *name)
{
    for (size_t i = index->count; i > 0; i--) {
        pki_index_entry *e = &index->entries[i - 1];
        if (!e->revoked && strcmp(e->name, name) == 0)
            return e;
    }
    return NULL;
}

/* Where a client certificate lives: devices/NAME, or NAME at the top for
 * the extra ferryd identities (next to ferryd.pem). */
static void client_stem(char *out, size_t out_size, const char *name)
{
    if (pki_is_ferryd_identity(name))
        snprintf(out, out_size, "%s", name);
    else
        snprintf(out, out_size, "devices/%s", name);
}

/* Issues a client certificate for a device or an extra ferryd identity;
 * the name has been checked by the caller for its kind. */
/* What every operation on an existing PKI holds: the directory's lock, the
 * CA and its key, and the index of issued certificates. */
typedef struct pki_session {
    int lock_fd;
    X509 *ca;
    EVP_PKEY *ca_key;
    pki_index index;
} pki_session;

/* Takes the lock, then loads the CA and the index. On failure err says
 * why; session_close() is needed in every case. */
static ferry_err session_open(const char *dir, pki_session *s, char *err, size_t err_size)
{
    ferry_err result = lock_dir(dir, &s->lock_fd, err, err_size);
    if (result == FERRY_OK)
        result = load_ca(dir, &s->ca, &s->ca_key, err, err_size);
    if (result == FERRY_OK)
        result = pki_index_load(dir, &s->index, err, err_size);
    return result;
}

static void session_close(pki_session *s)
{
    pki_index_cleanup(&s->index);
    X509_free(s->ca);
    EVP_PKEY_free(s->ca_key);
    unlock_dir(s->lock_fd);
}

static ferry_err issue_client(const char *dir, const char *name, const char *csr_path, int days,
                              char *err, size_t err_size)
{
    char stem[PATH_MAX];
    pki_session ps = {.lock_fd = -1};
    X509 *cert = NULL;
    EVP_PKEY *key = NULL;
    ferry_buf csr;
    bool files_written = false;
    ferry_buf_init(&csr, PKI_PEM_MAX);
    ferry_err result = check_days(days, err, err_size);
    if (result != FERRY_OK)
        goto out;
    if (csr_path != NULL) {
        result = pki_read_file(csr_path, PKI_PEM_MAX, &csr);
        if (result != FERRY_OK) {
            snprintf(err, err_size, "%s: cannot read: %s", csr_path, ferry_err_str(result));
            goto out;
        }
        result = pki_csr_public_key(ferry_buf_str(&csr), csr.len, &key, err, err_size);
        if (result != FERRY_OK)
            goto out;
    } else {
        result = pki_keygen(&key);
        if (result != FERRY_OK) {
            snprintf(err, err_size, "cannot generate a key for %s", name);
            goto out;
        }
    }
    result = session_open(dir, &ps, err, err_size);
    if (result != FERRY_OK)
        goto out;
    if (find_current(&ps.index, name) != NULL) {
        snprintf(err, err_size, "'%s' already has a certificate (revoke it first)", name);
        result = FERRY_ERR_EXISTS;
        goto out;
    }
    pki_index_entry entry;
    memset(&entry, 0, sizeof entry);
    pki_cert_spec spec = {
        .kind = PKI_CERT_CLIENT,
        .common_name = name,
        .subject_key = key,
        .issuer = ps.ca,
        .issuer_key = ps.ca_key,
        .now = ferry_time_now(),
        .days = days,
    };
    result = pki_cert_build(&spec, &cert, entry.serial, err, err_size);
    if (result != FERRY_OK)
        goto out;
    client_stem(stem, sizeof stem, name);
    /* With a CSR the private key stays on the device: no key file. */
    result = write_pair(dir, stem, csr_path != NULL ? NULL : key, cert, err, err_size);
    if (result != FERRY_OK)
        goto out;
    files_written = true;
    entry.not_after = spec.now + (int64_t)days * 86400;
    snprintf(entry.name, sizeof entry.name, "%s", name);
    result = pki_index_add(&ps.index, &entry);
    if (result == FERRY_OK)
        result = pki_index_save(dir, &ps.index);
    if (result != FERRY_OK) {
        snprintf(err, err_size, "%s/index: cannot write: %s", dir, ferry_err_str(result));
        goto out;
    }
    files_written = false;
out:
    if (files_written)
        remove_pair(dir, stem);
    X509_free(cert);
    EVP_PKEY_free(key);
    ferry_buf_cleanup(&csr);
    session_close(&ps);
    return result;
}

ferry_err pki_issue(const char *dir, const char *name, const char *csr_path, int days, char *err,
                    size_t err_size)
{
    err[0] = '\0';
    ferry_err result = pki_name_check(name, err, err_size);
    if (result != FERRY_OK)
        return result;
    return issue_client(dir, name, csr_path, days, err, err_size);
}

ferry_err pki_issue_ferryd(const char *dir, const char *name, int days, char *err, size_t err_size)
{
    err[0] = '\0';
    ferry_err result = pki_ferryd_name_check(name, err, err_size);
    if (result != FERRY_OK)
        return result;
    return issue_client(dir, name, NULL, days, err, err_size);
}

/* The CRL's lifetime (lastUpdate to nextUpdate) in days, so that a
 * revocation keeps the interval the operator chose at init or refresh;
 * the default if the current CRL cannot be read. */
static int crl_interval_days(const char *dir)
{
    char path[PATH_MAX];
    ferry_buf buf;
    BIO *bio = NULL;
    X509_CRL *crl = NULL;
    int days = PKI_DEFAULT_DAYS, pday = 0, psec = 0;
    ferry_buf_init(&buf, PKI_PEM_MAX);
    if (pki_path(path, sizeof path, dir, "crl.pem") != FERRY_OK ||
        pki_read_file(path, PKI_INDEX_MAX, &buf) != FERRY_OK)
        goto out;
    bio = BIO_new_mem_buf(ferry_buf_str(&buf), (int)buf.len);
    if (bio == NULL)
        goto out;
    crl = PEM_read_bio_X509_CRL(bio, NULL, NULL, NULL);
    if (crl == NULL || X509_CRL_get0_lastUpdate(crl) == NULL ||
        X509_CRL_get0_nextUpdate(crl) == NULL)
        goto out;
    if (ASN1_TIME_diff(&pday, &psec, X509_CRL_get0_lastUpdate(crl),
                       X509_CRL_get0_nextUpdate(crl)) == 1 &&
        pday >= 1 && pday <= PKI_MAX_DAYS)
        days = pday;
out:
    ERR_clear_error();
    X509_CRL_free(crl);
    BIO_free(bio);
    ferry_buf_cleanup(&buf);
    return days;
}

/* Moves the revoked certificate out of devices/ (kept for the record) and
 * deletes the key, so the name is free for a new certificate. Failures here
 * do not undo the revocation, which is already in the CRL. */
static void retire_files(const char *dir, const pki_index_entry *e)
{
    /* Names are at most 64 bytes, so "devices/NAME.key" fits in 96. */
    char from[PATH_MAX], to[PATH_MAX], rel[128], stem[96];
    client_stem(stem, sizeof stem, e->name);
    int n = snprintf(rel, sizeof rel, "%s.pem", stem);
    if (n < 0 || (size_t)n >= sizeof rel || pki_path(from, sizeof from, dir, rel) != FERRY_OK)
        return;
    n = snprintf(rel, sizeof rel, "revoked/%s.pem", e->serial);
    if (n > 0 && (size_t)n < sizeof rel && pki_path(to, sizeof to, dir, rel) == FERRY_OK)
        rename(from, to);
    n = snprintf(rel, sizeof rel, "%s.key", stem);
    if (n > 0 && (size_t)n < sizeof rel && pki_path(from, sizeof from, dir, rel) == FERRY_OK)
        unlink(from);
}

ferry_err pki_revoke(const char *dir, const char *name, char *err, size_t err_size)
{
    pki_session ps = {.lock_fd = -1};
    err[0] = '\0';
    /* Devices and the extra ferryd identities; the primary ferryd, broker
     * and store are replaced by a new `pki init`, not revoked one by one. */
    ferry_err result = strncmp(name, FERRYD_PREFIX, strlen(FERRYD_PREFIX)) == 0
                           ? pki_ferryd_name_check(name, err, err_size)
                           : pki_name_check(name, err, err_size);
    if (result != FERRY_OK)
        goto out;
    result = session_open(dir, &ps, err, err_size);
    if (result != FERRY_OK)
        goto out;
    pki_index_entry *e = find_current(&ps.index, name);
    if (e == NULL) {
        snprintf(err, err_size, "'%s' has no unrevoked certificate", name);
        result = FERRY_ERR_NOT_FOUND;
        goto out;
    }
    e->revoked = true;
    e->revoked_at = ferry_time_now();
    /* The CRL first: if it cannot be written, the index still says valid
     * and the operator can simply run revoke again. */
    result = write_crl(dir, ps.ca, ps.ca_key, &ps.index, crl_interval_days(dir), err, err_size);
    if (result != FERRY_OK)
        goto out;
    result = pki_index_save(dir, &ps.index);
    if (result != FERRY_OK) {
        snprintf(err, err_size, "%s/index: cannot write: %s", dir, ferry_err_str(result));
        goto out;
    }
    retire_files(dir, e);
out:
    session_close(&ps);
    return result;
}

ferry_err pki_crl_refresh(const char *dir, int days, char *err, size_t err_size)
{
    pki_session ps = {.lock_fd = -1};
    err[0] = '\0';
    ferry_err result = check_days(days, err, err_size);
    if (result != FERRY_OK)
        goto out;
    result = session_open(dir, &ps, err, err_size);
    if (result != FERRY_OK)
        goto out;
    result = write_crl(dir, ps.ca, ps.ca_key, &ps.index, days, err, err_size);
out:
    session_close(&ps);
    return result;
}
