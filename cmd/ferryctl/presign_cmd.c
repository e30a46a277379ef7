/*
 * presign_cmd.c - `ferryctl presign`: prints one SigV4 pre-signed URL, like
 * `aws s3 presign` (but for any method, with bound headers).
 *
 *   ferryctl presign --endpoint URL --bucket B --key K [--method PUT]
 *                    [--expires S] [--header 'name: value']... [--region R]
 *                    [--access-key ID --secret-key-file F | --config FILE]
 *                    [--now EPOCH]
 *
 * The URL is path-style: ENDPOINT/BUCKET/KEY (the key raw; it is encoded
 * here). --config reads [store] access_key, secret_key_file and region from
 * an INI file; command-line options win over it. --now signs as of a given
 * time (UTC seconds), for reproducible output in tests.
 *
 * The secret is read from a file (never from the command line, where `ps`
 * would show it), kept in memory only while signing, and wiped.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "common/buf.h"
#include "common/config.h"
#include "common/timefmt.h"
#include "ferryctl.h"
#include "sigv4.h"

#define PRESIGN_MAX_HEADERS 16

typedef struct presign_config {
    char *access_key;
    char *secret_key_file;
    char *region;
} presign_config;

static const ferry_cfg_option presign_options[] = {
    {"store", "access_key", FERRY_CFG_STRING, offsetof(presign_config, access_key), NULL, 0,
     SIGV4_MAX_ACCESS_KEY_LEN, NULL, 0, "access key id used to sign store URLs"},
    {"store", "secret_key_file", FERRY_CFG_STRING, offsetof(presign_config, secret_key_file), NULL,
     0, 0, NULL, 0, "file holding the secret access key"},
    {"store", "region", FERRY_CFG_STRING, offsetof(presign_config, region), "us-east-1", 0,
     SIGV4_MAX_REGION_LEN, NULL, 0, "region of the signing scope"},
};
static const ferry_cfg_table presign_table = {presign_options,
                                              sizeof presign_options / sizeof presign_options[0]};

static void usage(FILE *out)
{
    fprintf(out, "usage: ferryctl presign --endpoint URL --bucket B --key K [--method PUT]\n"
                 "         [--expires S] [--header 'name: value']... [--region R]\n"
                 "         [--access-key ID --secret-key-file F | --config FILE] [--now EPOCH]\n");
}

/* Reads the secret: the first line of path, without its line ending. */
static ferry_err read_secret(const char *path, ferry_buf *out)
{
    ferry_err err = FERRY_OK;
    char line[SIGV4_MAX_SECRET_LEN + 4];
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return FERRY_ERR_IO;
    if (fgets(line, sizeof line, f) == NULL) {
        err = FERRY_ERR_INVALID;
        goto out;
    }
    size_t n = strcspn(line, "\r\n");
    if (line[n] == '\0' && !feof(f)) { /* longer than any secret can be */
        err = FERRY_ERR_TOO_LARGE;
        goto out;
    }
    line[n] = '\0';
    if (n == 0) {
        err = FERRY_ERR_INVALID;
        goto out;
    }
    err = ferry_buf_append(out, line, n);
out:
    OPENSSL_cleanse(line, sizeof line);
    fclose(f);
    return err;
}

static bool parse_int(const char *s, int64_t *out)
{
    return ferry_parse_int(s, out) == FERRY_OK;
}

int ferryctl_presign(int argc, char **argv)
{
    int status = 1;
    const char *endpoint = NULL, *bucket = NULL, *key = NULL, *method = "PUT";
    const char *region = NULL, *access_key = NULL, *secret_file = NULL, *config = NULL;
    int64_t expires = 3600, now = -1;
    sigv4_kv headers[PRESIGN_MAX_HEADERS];
    char *header_copies[PRESIGN_MAX_HEADERS] = {NULL};
    size_t n_headers = 0;
    presign_config cfg = {NULL, NULL, NULL};
    sigv4_signer *signer = NULL;
    ferry_buf secret, path, url;
    char err_text[512];
    ferry_buf_init(&secret, SIGV4_MAX_SECRET_LEN);
    ferry_buf_init(&path, SIGV4_MAX_PATH_LEN);
    ferry_buf_init(&url, 64 * 1024);

    for (int i = 1; i < argc; i++) {
        const char *opt = argv[i];
        if (strcmp(opt, "-h") == 0 || strcmp(opt, "--help") == 0) {
            usage(stdout);
            status = 0;
            goto out;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "ferryctl presign: %s needs a value\n", opt);
            status = 2;
            goto out;
        }
        const char *val = argv[++i];
        if (strcmp(opt, "--endpoint") == 0) {
            endpoint = val;
        } else if (strcmp(opt, "--bucket") == 0) {
            bucket = val;
        } else if (strcmp(opt, "--key") == 0) {
            key = val;
        } else if (strcmp(opt, "--method") == 0) {
            method = val;
        } else if (strcmp(opt, "--region") == 0) {
            region = val;
        } else if (strcmp(opt, "--access-key") == 0) {
            access_key = val;
        } else if (strcmp(opt, "--secret-key-file") == 0) {
            secret_file = val;
        } else if (strcmp(opt, "--config") == 0) {
            config = val;
        } else if (strcmp(opt, "--expires") == 0) {
            if (!parse_int(val, &expires)) {
                fprintf(stderr, "ferryctl presign: --expires: '%s' is not a number\n", val);
                status = 2;
                goto out;
            }
        } else if (strcmp(opt, "--now") == 0) {
            if (!parse_int(val, &now) || now < 0) {
                fprintf(stderr, "ferryctl presign: --now: '%s' is not a time\n", val);
                status = 2;
                goto out;
            }
        } else if (strcmp(opt, "--header") == 0) {
            const char *colon = strchr(val, ':');
            if (colon == NULL || colon == val || n_headers == PRESIGN_MAX_HEADERS) {
                fprintf(stderr, "ferryctl presign: --header wants 'name: value' (at most %d)\n",
                        PRESIGN_MAX_HEADERS);
                status = 2;
                goto out;
            }
            char *copy = strdup(val);
            if (copy == NULL)
                goto out;
            header_copies[n_headers] = copy;
            copy[colon - val] = '\0';
            headers[n_headers].name = copy;
            headers[n_headers].value = copy + (colon - val) + 1; /* trimmed when signed */
            n_headers++;
        } else {
            fprintf(stderr, "ferryctl presign: unknown option '%s'\n", opt);
            usage(stderr);
            status = 2;
            goto out;
        }
    }
    if (endpoint == NULL || bucket == NULL || key == NULL) {
        usage(stderr);
        status = 2;
        goto out;
    }
    if (config != NULL) {
        if (ferry_cfg_load(&presign_table, &cfg, config, NULL, NULL, err_text, sizeof err_text)) {
            fprintf(stderr, "ferryctl presign: %s\n", err_text);
            goto out;
        }
        if (access_key == NULL)
            access_key = cfg.access_key;
        if (secret_file == NULL)
            secret_file = cfg.secret_key_file;
        if (region == NULL)
            region = cfg.region;
    }
    if (region == NULL)
        region = "us-east-1";
    if (access_key == NULL || secret_file == NULL) {
        fprintf(stderr, "ferryctl presign: give --access-key and --secret-key-file, or --config\n");
        status = 2;
        goto out;
    }
    ferry_err err = read_secret(secret_file, &secret);
    if (err) {
        fprintf(stderr, "ferryctl presign: %s: cannot read the secret key: %s\n", secret_file,
                ferry_err_str(err));
        goto out;
    }
    signer = sigv4_signer_new(access_key, secret.data, region, "s3");
    ferry_buf_wipe(&secret);
    if (signer == NULL) {
        fprintf(stderr, "ferryctl presign: invalid access key, secret or region\n");
        goto out;
    }
    if (strchr(bucket, '/') != NULL || bucket[0] == '\0') {
        fprintf(stderr, "ferryctl presign: invalid bucket name '%s'\n", bucket);
        goto out;
    }
    if (ferry_buf_appendf(&path, "/%s/%s", bucket, key)) {
        fprintf(stderr, "ferryctl presign: the key is too long\n");
        goto out;
    }
    sigv4_presign_params p = {.method = method,
                              .endpoint = endpoint,
                              .path = path.data,
                              .expires_s = expires,
                              .headers = headers,
                              .n_headers = n_headers};
    err = sigv4_presign(signer, &p, now >= 0 ? now : ferry_time_now(), &url);
    if (err == FERRY_ERR_RANGE) {
        fprintf(stderr, "ferryctl presign: --expires must be between %d and %d seconds\n",
                SIGV4_MIN_EXPIRES_S, SIGV4_MAX_EXPIRES_S);
        goto out;
    }
    if (err) {
        fprintf(stderr, "ferryctl presign: cannot sign: %s (check --endpoint, --method, --header)\n",
                ferry_err_str(err));
        goto out;
    }
    if (printf("%s\n", url.data) < 0 || fflush(stdout) != 0)
        goto out;
    status = 0;
out:
    for (size_t i = 0; i < n_headers; i++)
        free(header_copies[i]);
    sigv4_signer_free(signer);
    ferry_cfg_free(&presign_table, &cfg);
    ferry_buf_wipe(&secret);
    ferry_buf_cleanup(&path);
    ferry_buf_cleanup(&url);
    return status;
}
