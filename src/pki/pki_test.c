/*
 * pki_test.c - unit tests of the CA: certificates chain to the CA with the
 * right purpose, a CSR-signed certificate keeps the CSR's key, bad names are
 * refused, key files are 0600, revocation puts the serial in the CRL and
 * makes verification fail. Each test works in its own temporary directory.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "pki/pki.h"
#include "pki/pki_int.h"

typedef struct fixture {
    char dir[64];
    char err[512];
} fixture;

static void remove_tree(const char *path)
{
    DIR *d = opendir(path);
    if (d != NULL) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            char child[PATH_MAX];
            snprintf(child, sizeof child, "%s/%s", path, e->d_name);
            remove_tree(child);
        }
        closedir(d);
        rmdir(path);
    } else {
        unlink(path);
    }
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (f == NULL)
        return -1;
    snprintf(f->dir, sizeof f->dir, "/tmp/ferry-pki-test-XXXXXX");
    if (mkdtemp(f->dir) == NULL)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    remove_tree(f->dir);
    free(f);
    return 0;
}

static X509 *load_cert(const char *dir, const char *rel)
{
    char path[PATH_MAX];
    X509 *cert = NULL;
    snprintf(path, sizeof path, "%s/%s", dir, rel);
    assert_int_equal(pki_load_cert(path, &cert), FERRY_OK);
    return cert;
}

static mode_t file_mode(const char *dir, const char *rel)
{
    char path[PATH_MAX];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", dir, rel);
    assert_int_equal(stat(path, &st), 0);
    return st.st_mode & 07777;
}

static bool exists(const char *dir, const char *rel)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", dir, rel);
    return access(path, F_OK) == 0;
}

/* X509_verify_cert of cert against the PKI's CA, for an SSL purpose, with
 * the PKI's CRL when with_crl. Returns the verification error code. */
static int verify(const char *dir, X509 *cert, int purpose, bool with_crl)
{
    X509 *ca = load_cert(dir, "ca.pem");
    X509_STORE *store = X509_STORE_new();
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    assert_non_null(store);
    assert_non_null(ctx);
    assert_int_equal(X509_STORE_add_cert(store, ca), 1);
    if (with_crl) {
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/crl.pem", dir);
        FILE *fp = fopen(path, "r");
        assert_non_null(fp);
        X509_CRL *crl = PEM_read_X509_CRL(fp, NULL, NULL, NULL);
        fclose(fp);
        assert_non_null(crl);
        assert_int_equal(X509_STORE_add_crl(store, crl), 1);
        X509_CRL_free(crl);
        X509_STORE_set_flags(store, X509_V_FLAG_CRL_CHECK);
    }
    assert_int_equal(X509_STORE_CTX_init(ctx, store, cert, NULL), 1);
    X509_STORE_CTX_set_purpose(ctx, purpose);
    int ok = X509_verify_cert(ctx);
    int code = X509_STORE_CTX_get_error(ctx);
    X509_STORE_CTX_free(ctx);
    X509_STORE_free(store);
    X509_free(ca);
    ERR_clear_error();
    return ok == 1 ? X509_V_OK : (code == X509_V_OK ? -1 : code);
}

static void init_pki(fixture *f)
{
    static const char *const names[] = {"ferry.example.org", "192.0.2.7", "fd00::7",
                                        "*.fleet.example"};
    pki_init_options opts = {PKI_DEFAULT_DAYS, names, 4};
    assert_int_equal(pki_init(f->dir, &opts, f->err, sizeof f->err), FERRY_OK);
}

/* 64 characters: the longest name allowed. */
#define NAME64 "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

static void test_names(void **state)
{
    char err[256];
    (void)state;
    static const char *const good[] = {"dev-a", "DEV_01", "a", "x.y", "..a", "a..", NAME64};
    static const char *const bad[] = {"",       ".",         "..",     "a/b",   "a+b",
                                      "a#",     "a b",       "dév",    "$SYS",  "ferryd",
                                      "FERRYD", "broker",    "Store",  "a\nb",  "a\\b",
                                      "ferryd-2", "Ferryd-x", "ferryd-",
                                      NAME64 "x"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        assert_int_equal(pki_name_check(good[i], err, sizeof err), FERRY_OK);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        assert_int_equal(pki_name_check(bad[i], err, sizeof err), FERRY_ERR_INVALID);
        assert_true(err[0] != '\0');
    }
    assert_int_equal(pki_name_check(NULL, err, sizeof err), FERRY_ERR_INVALID);
    /* Close to the reserved names but not them. */
    assert_int_equal(pki_name_check("ferrydevice", err, sizeof err), FERRY_OK);
    assert_int_equal(pki_name_check("ferryd2", err, sizeof err), FERRY_OK);

    assert_int_equal(pki_ferryd_name_check("ferryd-2", err, sizeof err), FERRY_OK);
    assert_int_equal(pki_ferryd_name_check("ferryd-", err, sizeof err), FERRY_ERR_INVALID);
    assert_int_equal(pki_ferryd_name_check("ferryd", err, sizeof err), FERRY_ERR_INVALID);
    assert_int_equal(pki_ferryd_name_check("Ferryd-2", err, sizeof err), FERRY_ERR_INVALID);
    assert_int_equal(pki_ferryd_name_check("dev-a", err, sizeof err), FERRY_ERR_INVALID);
    assert_int_equal(pki_ferryd_name_check("ferryd-a/b", err, sizeof err), FERRY_ERR_INVALID);
    assert_true(pki_is_ferryd_identity("ferryd"));
    assert_true(pki_is_ferryd_identity("ferryd-2"));
    assert_false(pki_is_ferryd_identity("ferryd-"));
    assert_false(pki_is_ferryd_identity("ferryd2"));
    assert_false(pki_is_ferryd_identity("dev-a"));
}

static void test_init_chain_and_modes(void **state)
{
    fixture *f = *state;
    init_pki(f);

    /* Every key 0600, created that way. */
    static const char *const keys[] = {"ca.key", "broker.key", "store.key", "ferryd.key"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        assert_int_equal(file_mode(f->dir, keys[i]), 0600);

    /* The CA is a CA, self-signed, valid for about ten years. */
    X509 *ca = load_cert(f->dir, "ca.pem");
    assert_int_equal(X509_check_ca(ca), 1);
    assert_true((X509_get_extension_flags(ca) & EXFLAG_SS) != 0);
    assert_true((X509_get_key_usage(ca) & (KU_KEY_CERT_SIGN | KU_CRL_SIGN)) ==
                (KU_KEY_CERT_SIGN | KU_CRL_SIGN));
    int days = 0, secs = 0;
    assert_int_equal(ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(ca),
                                    X509_get0_notAfter(ca)),
                     1);
    assert_int_equal(days, PKI_CA_DAYS);

    /* Servers verify as servers, ferryd as a client, not the other way. */
    X509 *broker = load_cert(f->dir, "broker.pem");
    X509 *store = load_cert(f->dir, "store.pem");
    X509 *ferryd = load_cert(f->dir, "ferryd.pem");
    assert_int_equal(verify(f->dir, broker, X509_PURPOSE_SSL_SERVER, true), X509_V_OK);
    assert_int_equal(verify(f->dir, store, X509_PURPOSE_SSL_SERVER, true), X509_V_OK);
    assert_int_equal(verify(f->dir, ferryd, X509_PURPOSE_SSL_CLIENT, true), X509_V_OK);
    assert_int_not_equal(verify(f->dir, broker, X509_PURPOSE_SSL_CLIENT, false), X509_V_OK);
    assert_int_not_equal(verify(f->dir, ferryd, X509_PURPOSE_SSL_SERVER, false), X509_V_OK);

    /* The server certificates carry the built-in and the given names. */
    assert_int_equal(X509_check_host(broker, "localhost", 0, 0, NULL), 1);
    assert_int_equal(X509_check_host(broker, "ferry.example.org", 0, 0, NULL), 1);
    assert_int_equal(X509_check_ip_asc(broker, "127.0.0.1", 0), 1);
    assert_int_equal(X509_check_ip_asc(broker, "::1", 0), 1);
    assert_int_equal(X509_check_ip_asc(store, "192.0.2.7", 0), 1);
    assert_int_equal(X509_check_ip_asc(broker, "fd00::7", 0), 1);
    assert_int_equal(X509_check_host(broker, "gw1.fleet.example", 0, 0, NULL), 1);
    assert_int_equal(X509_check_host(broker, "evil.example.org", 0, 0, NULL), 0);

    char cn[65];
    assert_true(X509_NAME_get_text_by_NID(X509_get_subject_name(ferryd), NID_commonName, cn,
                                          sizeof cn) > 0);
    assert_string_equal(cn, "ferryd");

    /* The existing CA is never replaced. */
    pki_init_options opts = {PKI_DEFAULT_DAYS, NULL, 0};
    assert_int_equal(pki_init(f->dir, &opts, f->err, sizeof f->err), FERRY_ERR_EXISTS);
    X509 *ca_again = load_cert(f->dir, "ca.pem");
    assert_int_equal(X509_cmp(ca, ca_again), 0);

    X509_free(ca_again);
    X509_free(ca);
    X509_free(broker);
    X509_free(store);
    X509_free(ferryd);
}

static void test_init_rejects_bad_options(void **state)
{
    fixture *f = *state;
    static const char *const bad_names[] = {"host,IP:10.0.0.1", "host:8883", "a b", "",
                                            "x*.example.org", "DNS:evil"};
    for (size_t i = 0; i < sizeof bad_names / sizeof bad_names[0]; i++) {
        pki_init_options opts = {PKI_DEFAULT_DAYS, &bad_names[i], 1};
        assert_int_equal(pki_init(f->dir, &opts, f->err, sizeof f->err), FERRY_ERR_INVALID);
    }
    pki_init_options zero_days = {0, NULL, 0};
    assert_int_equal(pki_init(f->dir, &zero_days, f->err, sizeof f->err), FERRY_ERR_RANGE);
    assert_false(exists(f->dir, "ca.pem"));
}

static void test_issue_device(void **state)
{
    fixture *f = *state;
    init_pki(f);
    assert_int_equal(pki_issue(f->dir, "dev-a", NULL, 30, f->err, sizeof f->err), FERRY_OK);
    assert_int_equal(file_mode(f->dir, "devices/dev-a.key"), 0600);
    X509 *dev = load_cert(f->dir, "devices/dev-a.pem");
    assert_int_equal(verify(f->dir, dev, X509_PURPOSE_SSL_CLIENT, true), X509_V_OK);
    assert_int_not_equal(verify(f->dir, dev, X509_PURPOSE_SSL_SERVER, false), X509_V_OK);
    int days = 0, secs = 0;
    assert_int_equal(ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(dev),
                                    X509_get0_notAfter(dev)),
                     1);
    assert_int_equal(days, 30);
    /* 16-byte positive serial. */
    const ASN1_INTEGER *serial = X509_get0_serialNumber(dev);
    assert_int_equal(ASN1_STRING_length(serial), 16);

    /* The key file holds the certificate's key. */
    char path[PATH_MAX];
    EVP_PKEY *key = NULL;
    snprintf(path, sizeof path, "%s/devices/dev-a.key", f->dir);
    assert_int_equal(pki_load_key(path, &key), FERRY_OK);
    assert_int_equal(X509_check_private_key(dev, key), 1);

    /* A second certificate for the same device needs a revocation first. */
    assert_int_equal(pki_issue(f->dir, "dev-a", NULL, 30, f->err, sizeof f->err),
                     FERRY_ERR_EXISTS);
    assert_int_equal(pki_issue(f->dir, "ferryd", NULL, 30, f->err, sizeof f->err),
                     FERRY_ERR_INVALID);
    assert_int_equal(pki_issue(f->dir, "../x", NULL, 30, f->err, sizeof f->err),
                     FERRY_ERR_INVALID);
    assert_int_equal(pki_issue(f->dir, "dev-b", NULL, 0, f->err, sizeof f->err),
                     FERRY_ERR_RANGE);
    EVP_PKEY_free(key);
    X509_free(dev);
}

/* Writes a CSR for key with the given CN into DIR/name.csr; when tamper, one
 * byte of the signed content is changed after signing. */
static void write_csr(const char *dir, const char *file, EVP_PKEY *key, const char *cn,
                      bool tamper)
{
    X509_REQ *req = X509_REQ_new();
    X509_NAME *name = X509_NAME_new();
    assert_non_null(req);
    assert_non_null(name);
    assert_int_equal(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                                                (const unsigned char *)cn, -1, -1, 0),
                     1);
    assert_int_equal(X509_REQ_set_subject_name(req, name), 1);
    assert_int_equal(X509_REQ_set_pubkey(req, key), 1);
    assert_true(X509_REQ_sign(req, key, EVP_sha256()) > 0);
    unsigned char *der = NULL;
    int len = i2d_X509_REQ(req, &der);
    assert_true(len > 0);
    if (tamper) {
        /* The CN's last byte sits inside the signed request info. */
        for (int i = 0; i + 5 < len; i++) {
            if (memcmp(der + i, "victim", 6) == 0) {
                der[i] = 'V';
                break;
            }
        }
    }
    const unsigned char *p = der;
    X509_REQ *out = d2i_X509_REQ(NULL, &p, len);
    assert_non_null(out);
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    assert_int_equal(PEM_write_X509_REQ(fp, out), 1);
    fclose(fp);
    OPENSSL_free(der);
    X509_REQ_free(out);
    X509_REQ_free(req);
    X509_NAME_free(name);
}

static void test_issue_from_csr(void **state)
{
    fixture *f = *state;
    char path[PATH_MAX];
    init_pki(f);
    EVP_PKEY *device_key = NULL;
    assert_int_equal(pki_keygen(&device_key), FERRY_OK);
    /* The CSR asks for CN=ferryd: the CA must ignore that and use NAME. */
    write_csr(f->dir, "dev-c.csr", device_key, "ferryd", false);
    snprintf(path, sizeof path, "%s/dev-c.csr", f->dir);
    assert_int_equal(pki_issue(f->dir, "dev-c", path, 90, f->err, sizeof f->err), FERRY_OK);

    X509 *cert = load_cert(f->dir, "devices/dev-c.pem");
    EVP_PKEY *cert_key = X509_get0_pubkey(cert);
    assert_int_equal(EVP_PKEY_eq(cert_key, device_key), 1);
    assert_int_equal(X509_check_private_key(cert, device_key), 1);
    char cn[65];
    assert_true(X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn,
                                          sizeof cn) > 0);
    assert_string_equal(cn, "dev-c");
    assert_int_equal(verify(f->dir, cert, X509_PURPOSE_SSL_CLIENT, true), X509_V_OK);
    /* No key on the CA's side. */
    assert_false(exists(f->dir, "devices/dev-c.key"));

    /* A CSR whose signature does not match its content is refused. */
    write_csr(f->dir, "bad.csr", device_key, "victim", true);
    snprintf(path, sizeof path, "%s/bad.csr", f->dir);
    assert_int_equal(pki_issue(f->dir, "dev-d", path, 90, f->err, sizeof f->err),
                     FERRY_ERR_AUTH);
    assert_false(exists(f->dir, "devices/dev-d.pem"));

    /* Garbage instead of a CSR. */
    snprintf(path, sizeof path, "%s/garbage.csr", f->dir);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n", fp);
    fclose(fp);
    assert_int_equal(pki_issue(f->dir, "dev-e", path, 90, f->err, sizeof f->err),
                     FERRY_ERR_INVALID);
    snprintf(path, sizeof path, "%s/missing.csr", f->dir);
    assert_int_equal(pki_issue(f->dir, "dev-e", path, 90, f->err, sizeof f->err),
                     FERRY_ERR_NOT_FOUND);

    X509_free(cert);
    EVP_PKEY_free(device_key);
}

static void test_revoke(void **state)
{
    fixture *f = *state;
    init_pki(f);
    assert_int_equal(pki_issue(f->dir, "dev-a", NULL, 30, f->err, sizeof f->err), FERRY_OK);
    assert_int_equal(pki_issue(f->dir, "dev-b", NULL, 30, f->err, sizeof f->err), FERRY_OK);
    X509 *a = load_cert(f->dir, "devices/dev-a.pem");
    X509 *b = load_cert(f->dir, "devices/dev-b.pem");

    assert_int_equal(pki_revoke(f->dir, "dev-a", f->err, sizeof f->err), FERRY_OK);

    /* The serial is in the CRL, signed by the CA; dev-b's is not. */
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/crl.pem", f->dir);
    FILE *fp = fopen(path, "r");
    assert_non_null(fp);
    X509_CRL *crl = PEM_read_X509_CRL(fp, NULL, NULL, NULL);
    fclose(fp);
    assert_non_null(crl);
    X509 *ca = load_cert(f->dir, "ca.pem");
    assert_int_equal(X509_CRL_verify(crl, X509_get0_pubkey(ca)), 1);
    X509_REVOKED *rev = NULL;
    assert_int_equal(X509_CRL_get0_by_serial(crl, &rev, X509_get0_serialNumber(a)), 1);
    assert_int_equal(X509_CRL_get0_by_serial(crl, &rev, X509_get0_serialNumber(b)), 0);
    ASN1_INTEGER *number = X509_CRL_get_ext_d2i(crl, NID_crl_number, NULL, NULL);
    assert_non_null(number);
    assert_int_equal(ASN1_INTEGER_get(number), 2); /* 1 was the empty CRL of init */
    ASN1_INTEGER_free(number);

    assert_int_equal(verify(f->dir, a, X509_PURPOSE_SSL_CLIENT, true), X509_V_ERR_CERT_REVOKED);
    assert_int_equal(verify(f->dir, b, X509_PURPOSE_SSL_CLIENT, true), X509_V_OK);

    /* The key is gone, the certificate archived, the name free again. */
    assert_false(exists(f->dir, "devices/dev-a.key"));
    assert_false(exists(f->dir, "devices/dev-a.pem"));
    assert_int_equal(pki_revoke(f->dir, "dev-a", f->err, sizeof f->err), FERRY_ERR_NOT_FOUND);
    assert_int_equal(pki_issue(f->dir, "dev-a", NULL, 30, f->err, sizeof f->err), FERRY_OK);
    X509 *a2 = load_cert(f->dir, "devices/dev-a.pem");
    assert_int_equal(verify(f->dir, a2, X509_PURPOSE_SSL_CLIENT, true), X509_V_OK);

    /* Reserved and malformed names are refused here too. */
    assert_int_equal(pki_revoke(f->dir, "broker", f->err, sizeof f->err), FERRY_ERR_INVALID);
    assert_int_equal(pki_revoke(f->dir, "a/b", f->err, sizeof f->err), FERRY_ERR_INVALID);

    /* A refresh keeps the revocation. */
    assert_int_equal(pki_crl_refresh(f->dir, 7, f->err, sizeof f->err), FERRY_OK);
    assert_int_equal(verify(f->dir, a, X509_PURPOSE_SSL_CLIENT, true), X509_V_ERR_CERT_REVOKED);

    X509_free(a2);
    X509_free(ca);
    X509_CRL_free(crl);
    X509_free(a);
    X509_free(b);
}

static void test_extra_ferryd_identity(void **state)
{
    fixture *f = *state;
    init_pki(f);
    assert_int_equal(pki_issue_ferryd(f->dir, "ferryd-2", 30, f->err, sizeof f->err), FERRY_OK);
    assert_int_equal(file_mode(f->dir, "ferryd-2.key"), 0600);
    X509 *cert = load_cert(f->dir, "ferryd-2.pem");
    assert_int_equal(verify(f->dir, cert, X509_PURPOSE_SSL_CLIENT, true), X509_V_OK);
    char cn[65];
    assert_true(X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn,
                                          sizeof cn) > 0);
    assert_string_equal(cn, "ferryd-2");
    assert_int_equal(pki_issue_ferryd(f->dir, "ferryd-2", 30, f->err, sizeof f->err),
                     FERRY_ERR_EXISTS);
    assert_int_equal(pki_issue_ferryd(f->dir, "dev-a", 30, f->err, sizeof f->err),
                     FERRY_ERR_INVALID);
    /* A device cannot be issued under a ferryd name, by either path. */
    assert_int_equal(pki_issue(f->dir, "ferryd-3", NULL, 30, f->err, sizeof f->err),
                     FERRY_ERR_INVALID);
    assert_int_equal(pki_revoke(f->dir, "ferryd-2", f->err, sizeof f->err), FERRY_OK);
    assert_false(exists(f->dir, "ferryd-2.pem"));
    assert_false(exists(f->dir, "ferryd-2.key"));
    assert_int_equal(verify(f->dir, cert, X509_PURPOSE_SSL_CLIENT, true),
                     X509_V_ERR_CERT_REVOKED);
    X509_free(cert);
}

static void test_corrupt_index_is_an_error(void **state)
{
    fixture *f = *state;
    char path[PATH_MAX];
    init_pki(f);
    snprintf(path, sizeof path, "%s/index", f->dir);
    FILE *fp = fopen(path, "a");
    assert_non_null(fp);
    fputs("V nothex 1 0 dev-x\n", fp);
    fclose(fp);
    f->err[0] = '\0';
    assert_int_equal(pki_issue(f->dir, "dev-a", NULL, 30, f->err, sizeof f->err),
                     FERRY_ERR_INVALID);
    assert_non_null(strstr(f->err, "malformed"));
    assert_false(exists(f->dir, "devices/dev-a.pem"));
}

static void test_missing_ca(void **state)
{
    fixture *f = *state;
    f->err[0] = '\0';
    assert_int_equal(pki_issue(f->dir, "dev-a", NULL, 30, f->err, sizeof f->err),
                     FERRY_ERR_NOT_FOUND);
    assert_non_null(strstr(f->err, "pki init"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),
        cmocka_unit_test_setup_teardown(test_init_chain_and_modes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_init_rejects_bad_options, setup, teardown),
        cmocka_unit_test_setup_teardown(test_issue_device, setup, teardown),
        cmocka_unit_test_setup_teardown(test_issue_from_csr, setup, teardown),
        cmocka_unit_test_setup_teardown(test_revoke, setup, teardown),
        cmocka_unit_test_setup_teardown(test_extra_ferryd_identity, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_index_is_an_error, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_ca, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
