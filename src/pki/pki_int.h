/*
 * pki_int.h - internals of the pki module shared between its files:
 * certificate and CRL construction (pki_x509.c), file and index handling
 * (pki_files.c). Not for use outside src/pki.
 */
#ifndef FERRY_PKI_PKI_INT_H
#define FERRY_PKI_PKI_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "common/buf.h"
#include "ferry/ferry_error.h"

#define PKI_SERIAL_HEX_LEN 32          /* 128-bit serials, lower-case hex */
#define PKI_PEM_MAX (64u * 1024u)      /* any PEM file we read: cert, key, CSR */
#define PKI_INDEX_MAX (64u << 20)      /* the index: ~800k certificates */

/* What a certificate is for; decides its extensions. */
typedef enum pki_cert_kind {
    PKI_CERT_CA,
    PKI_CERT_SERVER, /* serverAuth, with subjectAltNames */
    PKI_CERT_CLIENT, /* clientAuth */
} pki_cert_kind;

typedef struct pki_cert_spec {
    pki_cert_kind kind;
    const char *common_name;
    EVP_PKEY *subject_key; /* only the public part is used */
    X509 *issuer;          /* NULL: self-signed (the CA) */
    EVP_PKEY *issuer_key;  /* the CA's private key */
    int64_t now;           /* UTC seconds */
    int days;
    const char *const *sans; /* SERVER only: DNS names or IP addresses */
    size_t san_count;
} pki_cert_spec;

/* One line of the index. */
typedef struct pki_index_entry {
    bool revoked;
    char serial[PKI_SERIAL_HEX_LEN + 1];
    int64_t not_after;
    int64_t revoked_at; /* 0 unless revoked */
    char name[65];
} pki_index_entry;

typedef struct pki_index {
    pki_index_entry *entries;
    size_t count;
} pki_index;

/* --- pki_x509.c --- */
__attribute__((warn_unused_result)) ferry_err pki_keygen(EVP_PKEY **out);
/* Builds and signs a certificate; writes its serial as hex into serial_hex. */
__attribute__((warn_unused_result)) ferry_err pki_cert_build(const pki_cert_spec *spec,
                                                             X509 **out,
                                                             char serial_hex[PKI_SERIAL_HEX_LEN +
                                                                             1],
                                                             char *err, size_t err_size);
/* A CRL listing every revoked entry of the index. */
__attribute__((warn_unused_result)) ferry_err
pki_crl_build(X509 *ca, EVP_PKEY *ca_key, const pki_index *index, uint64_t crl_number,
              int64_t now, int days, X509_CRL **out, char *err, size_t err_size);
/* Parses and checks a CSR: PEM, valid self-signature, acceptable key. Returns
 * the CSR's public key (the caller frees it). */
__attribute__((warn_unused_result)) ferry_err pki_csr_public_key(const char *pem, size_t pem_len,
                                                                 EVP_PKEY **out, char *err,
                                                                 size_t err_size);

/* --- pki_files.c --- */
/* Creates path with O_EXCL and mode, writes data, fsyncs. */
__attribute__((warn_unused_result)) ferry_err pki_write_new(const char *path, const void *data,
                                                            size_t len, unsigned mode);
/* Replaces path atomically: temporary file, fsync, rename. */
__attribute__((warn_unused_result)) ferry_err pki_write_replace(const char *path, const void *data,
                                                                size_t len, unsigned mode);
/* Reads a whole file of at most max bytes into buf (reset first). */
__attribute__((warn_unused_result)) ferry_err pki_read_file(const char *path, size_t max,
                                                            ferry_buf *buf);
/* PEM encodings into buffers; the key buffer must be wiped by the caller. */
__attribute__((warn_unused_result)) ferry_err pki_pem_key(EVP_PKEY *key, ferry_buf *out);
__attribute__((warn_unused_result)) ferry_err pki_pem_cert(X509 *cert, ferry_buf *out);
__attribute__((warn_unused_result)) ferry_err pki_load_cert(const char *path, X509 **out);
__attribute__((warn_unused_result)) ferry_err pki_load_key(const char *path, EVP_PKEY **out);
/* Writes dir/rel into out (size PATH_MAX); fails if it does not fit. */
__attribute__((warn_unused_result)) ferry_err pki_path(char *out, size_t out_size, const char *dir,
                                                       const char *rel);

/* The index: parsed strictly (a corrupt index is an error, not skipped). */
__attribute__((warn_unused_result)) ferry_err pki_index_load(const char *dir, pki_index *out,
                                                             char *err, size_t err_size);
__attribute__((warn_unused_result)) ferry_err pki_index_save(const char *dir,
                                                             const pki_index *index);
__attribute__((warn_unused_result)) ferry_err pki_index_add(pki_index *index,
                                                            const pki_index_entry *entry);
void pki_index_cleanup(pki_index *index);

#endif
