/*
 * pki_x509.c - building keys, certificates and CRLs with the OpenSSL 3 API.
 *
 * Profiles (all signed with ECDSA P-256 / SHA-256, X.509 v3):
 *   CA      basicConstraints CA:TRUE (critical), keyUsage keyCertSign+cRLSign
 *           (critical), subject key id; self-signed.
 *   SERVER  basicConstraints CA:FALSE (critical), keyUsage digitalSignature
 *           (critical), extendedKeyUsage serverAuth, subjectAltName, subject
 *           and authority key ids.
 *   CLIENT  as SERVER but extendedKeyUsage clientAuth and no SANs. The EKU
 *           matters: OpenSSL checks the "SSL client" purpose when the broker
 *           verifies a client, so a server certificate cannot log in to the
 *           broker and a device certificate cannot pose as a server.
 * Serials are 128 random bits with the top bit cleared (positive, 16 bytes).
 * notBefore is five minutes in the past, to tolerate small clock skew.
 */
#include "pki_int.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#define PKI_BACKDATE_S 300

ferry_err pki_keygen(EVP_PKEY **out)
{
    EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    if (key == NULL)
        return FERRY_ERR_CRYPTO;
    *out = key;
    return FERRY_OK;
}

static ferry_err random_serial(ASN1_INTEGER **out, char hex[PKI_SERIAL_HEX_LEN + 1])
{
    static const char digits[] = "0123456789abcdef";
    unsigned char raw[PKI_SERIAL_HEX_LEN / 2];
    ferry_err result = FERRY_ERR_CRYPTO;
    BIGNUM *bn = NULL;
    ASN1_INTEGER *serial = NULL;
    if (RAND_bytes(raw, (int)sizeof raw) != 1)
        goto out;
    /* Positive, and never with a leading zero byte, so the hex form is
     * always exactly 32 digits and the DER integer always 16 bytes. */
    raw[0] = (unsigned char)((raw[0] & 0x7f) | 0x40);
    bn = BN_bin2bn(raw, (int)sizeof raw, NULL);
    if (bn == NULL)
        goto out;
    serial = BN_to_ASN1_INTEGER(bn, NULL);
    if (serial == NULL)
        goto out;
    for (size_t i = 0; i < sizeof raw; i++) {
        hex[2 * i] = digits[raw[i] >> 4];
        hex[2 * i + 1] = digits[raw[i] & 0xf];
    }
    hex[PKI_SERIAL_HEX_LEN] = '\0';
    *out = serial;
    serial = NULL;
    result = FERRY_OK;
out:
    ASN1_INTEGER_free(serial);
    BN_free(bn);
    return result;
}

static int add_ext(X509 *cert, X509V3_CTX *ctx, int nid, const char *value)
{
    X509_EXTENSION *ext = X509V3_EXT_nconf_nid(NULL, ctx, nid, value);
    if (ext == NULL)
        return 0;
    int ok = X509_add_ext(cert, ext, -1);
    X509_EXTENSION_free(ext);
    return ok;
}

/* The subjectAltName for a server: localhost, 127.0.0.1, ::1 and the
 * operator's names. Built as GENERAL_NAMEs rather than from a config string
 * so that no --name value can smuggle in extra entries. */
static ferry_err add_sans(X509 *cert, const char *const *sans, size_t count, char *err,
                          size_t err_size)
{
    static const char *const builtin[] = {"localhost", "127.0.0.1", "::1"};
    ferry_err result = FERRY_ERR_CRYPTO;
    GENERAL_NAMES *names = sk_GENERAL_NAME_new_null();
    if (names == NULL)
        return FERRY_ERR_NOMEM;
    size_t total = sizeof builtin / sizeof builtin[0] + count;
    for (size_t i = 0; i < total; i++) {
        const char *s = i < 3 ? builtin[i] : sans[i - 3];
        unsigned char addr[16];
        GENERAL_NAME *gn = GENERAL_NAME_new();
        if (gn == NULL)
            goto out;
        if (inet_pton(AF_INET, s, addr) == 1 || inet_pton(AF_INET6, s, addr) == 1) {
            int len = strchr(s, ':') != NULL ? 16 : 4;
            ASN1_OCTET_STRING *ip = ASN1_OCTET_STRING_new();
            if (ip == NULL || ASN1_OCTET_STRING_set(ip, addr, len) != 1) {
                ASN1_OCTET_STRING_free(ip);
                GENERAL_NAME_free(gn);
                goto out;
            }
            GENERAL_NAME_set0_value(gn, GEN_IPADD, ip);
        } else {
            ASN1_IA5STRING *dns = ASN1_IA5STRING_new();
            if (dns == NULL || ASN1_STRING_set(dns, s, -1) != 1) {
                ASN1_IA5STRING_free(dns);
                GENERAL_NAME_free(gn);
                goto out;
            }
            GENERAL_NAME_set0_value(gn, GEN_DNS, dns);
        }
        if (sk_GENERAL_NAME_push(names, gn) <= 0) {
            GENERAL_NAME_free(gn);
            goto out;
        }
    }
    if (X509_add1_ext_i2d(cert, NID_subject_alt_name, names, 0, X509V3_ADD_DEFAULT) != 1)
        goto out;
    result = FERRY_OK;
out:
    if (result != FERRY_OK)
        snprintf(err, err_size, "cannot build subjectAltName");
    GENERAL_NAMES_free(names);
    return result;
}

static ferry_err set_validity(X509 *cert, int64_t now, int days)
{
    if (ASN1_TIME_set(X509_getm_notBefore(cert), (time_t)(now - PKI_BACKDATE_S)) == NULL)
        return FERRY_ERR_CRYPTO;
    if (ASN1_TIME_set(X509_getm_notAfter(cert), (time_t)(now + (int64_t)days * 86400)) == NULL)
        return FERRY_ERR_CRYPTO;
    return FERRY_OK;
}

ferry_err pki_cert_build(const pki_cert_spec *spec, X509 **out,
                         char serial_hex[PKI_SERIAL_HEX_LEN + 1], char *err, size_t err_size)
{
    ferry_err result = FERRY_ERR_CRYPTO;
    X509 *cert = X509_new();
    X509_NAME *subject = X509_NAME_new();
    ASN1_INTEGER *serial = NULL;
    X509V3_CTX ctx;
    char hex[PKI_SERIAL_HEX_LEN + 1];
    if (cert == NULL || subject == NULL) {
        result = FERRY_ERR_NOMEM;
        goto out;
    }
    if (X509_set_version(cert, X509_VERSION_3) != 1)
        goto out;
    result = random_serial(&serial, hex);
    if (result != FERRY_OK)
        goto out;
    result = FERRY_ERR_CRYPTO;
    if (X509_set_serialNumber(cert, serial) != 1)
        goto out;
    if (X509_NAME_add_entry_by_txt(subject, "O", MBSTRING_UTF8, (const unsigned char *)"Ferry",
                                   -1, -1, 0) != 1 ||
        X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_UTF8,
                                   (const unsigned char *)spec->common_name, -1, -1, 0) != 1)
        goto out;
    if (X509_set_subject_name(cert, subject) != 1)
        goto out;
    X509 *issuer = spec->issuer != NULL ? spec->issuer : cert;
    if (X509_set_issuer_name(cert, X509_get_subject_name(issuer)) != 1)
        goto out;
    if (X509_set_pubkey(cert, spec->subject_key) != 1)
        goto out;
    result = set_validity(cert, spec->now, spec->days);
    if (result != FERRY_OK)
        goto out;
    result = FERRY_ERR_CRYPTO;

    X509V3_set_ctx(&ctx, issuer, cert, NULL, NULL, 0);
    int ok;
    switch (spec->kind) {
    case PKI_CERT_CA:
        ok = add_ext(cert, &ctx, NID_basic_constraints, "critical,CA:TRUE") &&
             add_ext(cert, &ctx, NID_key_usage, "critical,keyCertSign,cRLSign") &&
             add_ext(cert, &ctx, NID_subject_key_identifier, "hash");
        /* For a self-signed certificate the authority key id equals the
         * subject key id, which must exist before it can be copied. */
        ok = ok && add_ext(cert, &ctx, NID_authority_key_identifier, "keyid:always");
        break;
    case PKI_CERT_SERVER:
    case PKI_CERT_CLIENT:
        ok = add_ext(cert, &ctx, NID_basic_constraints, "critical,CA:FALSE") &&
             add_ext(cert, &ctx, NID_key_usage, "critical,digitalSignature") &&
             add_ext(cert, &ctx, NID_ext_key_usage,
                     spec->kind == PKI_CERT_SERVER ? "serverAuth" : "clientAuth") &&
             add_ext(cert, &ctx, NID_subject_key_identifier, "hash") &&
             add_ext(cert, &ctx, NID_authority_key_identifier, "keyid:always");
        break;
    default:
        ok = 0;
        break;
    }
    if (!ok) {
        snprintf(err, err_size, "cannot add certificate extensions");
        goto out;
    }
    if (spec->kind == PKI_CERT_SERVER) {
        result = add_sans(cert, spec->sans, spec->san_count, err, err_size);
        if (result != FERRY_OK)
            goto out;
        result = FERRY_ERR_CRYPTO;
    }
    if (X509_sign(cert, spec->issuer_key, EVP_sha256()) <= 0) {
        snprintf(err, err_size, "cannot sign certificate for %s", spec->common_name);
        goto out;
    }
    memcpy(serial_hex, hex, sizeof hex);
    *out = cert;
    cert = NULL;
    result = FERRY_OK;
out:
    if (result != FERRY_OK && err[0] == '\0')
        snprintf(err, err_size, "cannot build certificate for %s: %s", spec->common_name,
                 ferry_err_str(result));
    ASN1_INTEGER_free(serial);
    X509_NAME_free(subject);
    X509_free(cert);
    return result;
}

/* Hex serial from the index back to an ASN1_INTEGER. */
static ASN1_INTEGER *serial_from_hex(const char *hex)
{
    BIGNUM *bn = NULL;
    ASN1_INTEGER *serial = NULL;
    if (BN_hex2bn(&bn, hex) == PKI_SERIAL_HEX_LEN)
        serial = BN_to_ASN1_INTEGER(bn, NULL);
    BN_free(bn);
    return serial;
}

ferry_err pki_crl_build(X509 *ca, EVP_PKEY *ca_key, const pki_index *index, uint64_t crl_number,
                        int64_t now, int days, X509_CRL **out, char *err, size_t err_size)
{
    ferry_err result = FERRY_ERR_CRYPTO;
    X509_CRL *crl = X509_CRL_new();
    ASN1_TIME *t = ASN1_TIME_new();
    ASN1_INTEGER *number = ASN1_INTEGER_new();
    X509V3_CTX ctx;
    if (crl == NULL || t == NULL || number == NULL) {
        result = FERRY_ERR_NOMEM;
        goto out;
    }
    if (X509_CRL_set_version(crl, X509_CRL_VERSION_2) != 1 ||
        X509_CRL_set_issuer_name(crl, X509_get_subject_name(ca)) != 1)
        goto out;
    if (ASN1_TIME_set(t, (time_t)now) == NULL || X509_CRL_set1_lastUpdate(crl, t) != 1)
        goto out;
    if (ASN1_TIME_set(t, (time_t)(now + (int64_t)days * 86400)) == NULL ||
        X509_CRL_set1_nextUpdate(crl, t) != 1)
        goto out;
    for (size_t i = 0; i < index->count; i++) {
        const pki_index_entry *e = &index->entries[i];
        if (!e->revoked)
            continue;
        X509_REVOKED *rev = X509_REVOKED_new();
        ASN1_INTEGER *serial = serial_from_hex(e->serial);
        ASN1_TIME *when = ASN1_TIME_set(NULL, (time_t)e->revoked_at);
        int ok = rev != NULL && serial != NULL && when != NULL &&
                 X509_REVOKED_set_serialNumber(rev, serial) == 1 &&
                 X509_REVOKED_set_revocationDate(rev, when) == 1 &&
                 X509_CRL_add0_revoked(crl, rev) == 1;
        ASN1_INTEGER_free(serial);
        ASN1_TIME_free(when);
        if (!ok) {
            X509_REVOKED_free(rev);
            snprintf(err, err_size, "cannot add serial %s to the CRL", e->serial);
            goto out;
        }
    }
    if (ASN1_INTEGER_set_uint64(number, crl_number) != 1 ||
        X509_CRL_add1_ext_i2d(crl, NID_crl_number, number, 0, X509V3_ADD_DEFAULT) != 1)
        goto out;
    X509V3_set_ctx(&ctx, ca, NULL, NULL, crl, 0);
    X509_EXTENSION *aki = X509V3_EXT_nconf_nid(NULL, &ctx, NID_authority_key_identifier,
                                               "keyid:always");
    if (aki == NULL)
        goto out;
    int added = X509_CRL_add_ext(crl, aki, -1);
    X509_EXTENSION_free(aki);
    if (added != 1)
        goto out;
    if (X509_CRL_sort(crl) != 1 || X509_CRL_sign(crl, ca_key, EVP_sha256()) <= 0)
        goto out;
    *out = crl;
    crl = NULL;
    result = FERRY_OK;
out:
    if (result != FERRY_OK && err[0] == '\0')
        snprintf(err, err_size, "cannot build the CRL: %s", ferry_err_str(result));
    ASN1_INTEGER_free(number);
    ASN1_TIME_free(t);
    X509_CRL_free(crl);
    return result;
}

/* Device keys we certify: EC on a NIST curve of at least 256 bits, RSA of
 * at least 2048 bits, or Ed25519. Anything weaker or exotic is refused. */
static bool acceptable_key(EVP_PKEY *key, char *err, size_t err_size)
{
    if (EVP_PKEY_is_a(key, "EC")) {
        char group[64];
        size_t len = 0;
        if (EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group,
                                           &len) != 1) {
            snprintf(err, err_size, "CSR key: EC key without a named curve");
            return false;
        }
        if (strcmp(group, "prime256v1") == 0 || strcmp(group, "P-256") == 0 ||
            strcmp(group, "secp384r1") == 0 || strcmp(group, "P-384") == 0 ||
            strcmp(group, "secp521r1") == 0 || strcmp(group, "P-521") == 0)
            return true;
        snprintf(err, err_size, "CSR key: curve %s not accepted (P-256, P-384, P-521)", group);
        return false;
    }
    if (EVP_PKEY_is_a(key, "RSA")) {
        if (EVP_PKEY_get_bits(key) >= 2048)
            return true;
        snprintf(err, err_size, "CSR key: RSA key of %d bits (at least 2048 needed)",
                 EVP_PKEY_get_bits(key));
        return false;
    }
    if (EVP_PKEY_is_a(key, "ED25519"))
        return true;
    snprintf(err, err_size, "CSR key: key type not accepted (EC, RSA, Ed25519)");
    return false;
}

ferry_err pki_csr_public_key(const char *pem, size_t pem_len, EVP_PKEY **out, char *err,
                             size_t err_size)
{
    ferry_err result = FERRY_ERR_INVALID;
    BIO *bio = NULL;
    X509_REQ *req = NULL;
    EVP_PKEY *key = NULL;
    if (pem_len == 0 || pem_len > PKI_PEM_MAX) {
        snprintf(err, err_size, "CSR: empty or larger than %u bytes", PKI_PEM_MAX);
        goto out;
    }
    bio = BIO_new_mem_buf(pem, (int)pem_len);
    if (bio == NULL) {
        result = FERRY_ERR_NOMEM;
        goto out;
    }
    req = PEM_read_bio_X509_REQ(bio, NULL, NULL, NULL);
    if (req == NULL) {
        snprintf(err, err_size, "CSR: not a PEM certificate request");
        goto out;
    }
    key = X509_REQ_get_pubkey(req);
    if (key == NULL) {
        snprintf(err, err_size, "CSR: unreadable public key");
        goto out;
    }
    /* The self-signature proves the requester holds the private key. */
    if (X509_REQ_verify(req, key) != 1) {
        result = FERRY_ERR_AUTH;
        snprintf(err, err_size, "CSR: signature does not verify");
        goto out;
    }
    if (!acceptable_key(key, err, err_size))
        goto out;
    *out = key;
    key = NULL;
    result = FERRY_OK;
out:
    /* OpenSSL's error queue may hold parse errors from hostile input; they
     * are reported through err, not left for an unrelated later caller. */
    ERR_clear_error();
    EVP_PKEY_free(key);
    X509_REQ_free(req);
    BIO_free(bio);
    return result;
}
