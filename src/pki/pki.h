/*
 * pki.h - Ferry's certificate authority: the CA, the server and ferryd
 * certificates, device certificates (generated or signed from a CSR),
 * revocation and the CRL. Everything is done with the OpenSSL 3 API in
 * process; the openssl command line tool is never run.
 *
 * On-disk layout of a PKI directory (see docs/pki.md):
 *   ca.pem ca.key crl.pem              the CA and its (possibly empty) CRL
 *   broker.pem broker.key              the MQTT broker's server identity
 *   store.pem store.key                the embedded object store's server identity
 *   ferryd.pem ferryd.key              ferryd's client identity (CN=ferryd)
 *   ferryd-X.pem ferryd-X.key          extra ferryd identities (pki ferryd)
 *   devices/NAME.pem [devices/NAME.key] one per device (no key for a CSR)
 *   revoked/SERIAL.pem                 certificates moved out at revocation
 *   index                              one line per issued certificate
 *   crlnumber                          the last CRL number used
 *   lock                               flock()ed by every command that writes
 *
 * Invariants: a private key file is created with O_EXCL and mode 0600 and is
 * never overwritten; an existing CA is never replaced; every certificate the
 * CA signs is recorded in the index before the command reports success, so
 * it can be revoked; a device name always satisfies pki_name_check().
 *
 * Every function returns a ferry_err and, on failure, leaves one line
 * (no trailing newline) in err that names what went wrong.
 */
#ifndef FERRY_PKI_PKI_H
#define FERRY_PKI_PKI_H

#include <stdbool.h>
#include <stddef.h>

#include "ferry/ferry_error.h"

#define PKI_NAME_MAX 64          /* a device name is one MQTT topic level */
#define PKI_DEFAULT_DAYS 825     /* leaf certificates */
#define PKI_CA_DAYS 3650         /* the CA: ten years */
#define PKI_MAX_DAYS PKI_CA_DAYS /* a leaf never outlives the CA's nominal life */
#define PKI_MAX_SANS 32          /* extra --name values for server certificates */

typedef struct pki_init_options {
    int days;                        /* validity of broker/store/ferryd certs */
    const char *const *server_names; /* extra SANs: IP if it parses, else DNS */
    size_t server_name_count;
} pki_init_options;

/* A device name: [A-Za-z0-9._-]{1,64} except "." and "..", the names of
 * the server identities (ferryd, broker, store) and names starting with
 * "ferryd-" (reserved for ferryd identities), all in any letter case. */
__attribute__((warn_unused_result)) ferry_err pki_name_check(const char *name, char *err,
                                                             size_t err_size);

/* The name of an additional ferryd identity: "ferryd-" and a suffix, with
 * the charset and length of a device name. */
__attribute__((warn_unused_result)) ferry_err pki_ferryd_name_check(const char *name, char *err,
                                                                    size_t err_size);

/* True for "ferryd" and the "ferryd-SUFFIX" identities: the certificate
 * names that get ferryd's rights in the broker's ACL. */
bool pki_is_ferryd_identity(const char *name);

/* Creates the CA, broker, store and ferryd certificates and an empty CRL in
 * dir (created 0755 if missing). Refuses with FERRY_ERR_EXISTS if dir
 * already holds a CA. */
__attribute__((warn_unused_result)) ferry_err
pki_init(const char *dir, const pki_init_options *opts, char *err, size_t err_size);

/* Issues a device certificate with CN=name and clientAuth. Without csr_path
 * a new P-256 key is written to devices/NAME.key (0600); with it, the CSR's
 * self-signature is verified and its public key certified, its subject is
 * ignored. Refuses (FERRY_ERR_EXISTS) while the device holds an unrevoked
 * certificate. */
__attribute__((warn_unused_result)) ferry_err pki_issue(const char *dir, const char *name,
                                                        const char *csr_path, int days,
                                                        char *err, size_t err_size);

/* Issues an additional ferryd client identity (for a second ferryd sharing
 * the load): NAME.pem and NAME.key next to ferryd.pem, CN=NAME. The broker
 * configuration gives every ferryd identity ferryd's rights; rerun
 * `ferryctl broker-config` after issuing one. */
__attribute__((warn_unused_result)) ferry_err pki_issue_ferryd(const char *dir, const char *name,
                                                               int days, char *err,
                                                               size_t err_size);

/* Revokes the device's (or extra ferryd identity's) current certificate, regenerates crl.pem, moves the
 * certificate to revoked/SERIAL.pem and deletes its key, so that the name
 * can be issued again. */
__attribute__((warn_unused_result)) ferry_err pki_revoke(const char *dir, const char *name,
                                                         char *err, size_t err_size);

/* Regenerates crl.pem (new number, nextUpdate = now + days) without
 * revoking anything: a CRL past its nextUpdate makes OpenSSL reject every
 * client, so operators refresh it well before that. */
__attribute__((warn_unused_result)) ferry_err pki_crl_refresh(const char *dir, int days,
                                                              char *err, size_t err_size);

#endif
