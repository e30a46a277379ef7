/*
 * notify_http.c - the `/events/s3` listener; see notify_http.h.
 *
 * libmicrohttpd with one internal polling thread: notifications are small
 * and rare next to uploads, and one thread lets the server own one ledger
 * handle. Each request's body is collected (bounded) in its own buffer and
 * handled when complete.
 */
#include "notify_http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/file.h"
#include "common/log.h"
#include "common/timefmt.h"
#include "grants/grants.h"
#include "ledger/ledger.h"

#define NOTIFY_PATH        "/events/s3"
#define NOTIFY_PEM_MAX     (256 * 1024)
#define NOTIFY_RECORDS_MAX 1000

struct notify_http {
    struct MHD_Daemon *daemon;
    ledger *ledger;
    unsigned char token_sha[SHA256_DIGEST_LENGTH];
    char *bucket;
    size_t max_body;
    char *cert, *key;
};

typedef struct notify_req {
    ferry_buf body;
    bool too_large;
} notify_req;

static enum MHD_Result respond(struct MHD_Connection *c, unsigned status, const char *json)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(json), (void *)json, MHD_RESPMEM_MUST_COPY);
    if (r == NULL)
        return MHD_NO;
    MHD_add_response_header(r, "Content-Type", "application/json");
    if (status == MHD_HTTP_UNAUTHORIZED)
        MHD_add_response_header(r, "WWW-Authenticate", "Bearer realm=\"ferry\"");
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

static bool token_ok(const notify_http *n, struct MHD_Connection *c)
{
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    unsigned char got[SHA256_DIGEST_LENGTH];
    if (h == NULL || strncmp(h, "Bearer ", 7) != 0)
        return false;
    SHA256((const unsigned char *)h + 7, strlen(h + 7), got);
    return CRYPTO_memcmp(got, n->token_sha, sizeof got) == 0;
}

/* S3 sends keys form-encoded ('+' for space, %XX); false on a bad escape,
 * a NUL byte or a result that does not fit. */
static bool key_decode(const char *in, char *out, size_t out_size)
{
    size_t o = 0;
    for (const char *p = in; *p; p++) {
        int c = (unsigned char)*p;
        if (c == '+') {
            c = ' ';
        } else if (c == '%') {
            int hi = OPENSSL_hexchar2int((unsigned char)p[1]),
                lo = hi >= 0 ? OPENSSL_hexchar2int((unsigned char)p[2]) : -1;
            if (hi < 0 || lo < 0)
                return false;
            c = hi * 16 + lo;
            p += 2;
        }
        if (c == 0 || o + 1 >= out_size)
            return false;
        out[o++] = (char)c;
    }
    out[o] = '\0';
    return o > 0;
}

/* The grant id in a Ferry key: the last segment up to its first '-'. */
static bool key_grant(const char *key, char *out, size_t out_size)
{
    const char *seg = strrchr(key, '/');
    seg = seg != NULL ? seg + 1 : key;
    const char *dash = strchr(seg, '-');
    size_t len = dash != NULL ? (size_t)(dash - seg) : 0;
    if (len == 0 || len >= out_size)
        return false;
    memcpy(out, seg, len);
    out[len] = '\0';
    return grant_id_valid(out);
}

static bool copy_str(char *dst, size_t dst_size, const char *src)
{
    size_t len = strlen(src);
    if (len >= dst_size)
        return false;
    memcpy(dst, src, len + 1);
    return true;
}

/* One record: 0 accepted, 1 duplicate, 2 ignored (not ObjectCreated),
 * -1 refused (why set). */
static int handle_record(notify_http *n, json_t *rec, const char **why)
{
    ledger_external_object x;
    ledger_event ev;
    bool dup = false;
    const char *name = json_string_value(json_object_get(rec, "eventName"));
    json_t *s3 = json_object_get(rec, "s3");
    json_t *obj = json_object_get(s3, "object");
    const char *bucket = json_string_value(json_object_get(json_object_get(s3, "bucket"), "name"));
    const char *key = json_string_value(json_object_get(obj, "key"));
    json_t *size = json_object_get(obj, "size");
    const char *etag = json_string_value(json_object_get(obj, "eTag"));

    if (name == NULL) {
        *why = "eventName missing";
        return -1;
    }
    if (strstr(name, "ObjectCreated:") == NULL)
        return 2;
    memset(&x, 0, sizeof x);
    if (bucket == NULL || key == NULL || !json_is_integer(size) || json_integer_value(size) < 0) {
        *why = "s3.bucket.name, s3.object.key or s3.object.size missing";
        return -1;
    }
    if (strcmp(bucket, n->bucket) != 0) {
        *why = "not the configured bucket";
        return -1;
    }
    if (!copy_str(x.bucket, sizeof x.bucket, bucket) || !key_decode(key, x.key, sizeof x.key)) {
        *why = "bad key";
        return -1;
    }
    if (!key_grant(x.key, x.grant_id, sizeof x.grant_id)) {
        *why = "the key names no grant";
        return -1;
    }
    if (etag != NULL) {
        size_t len = strlen(etag);
        if (len >= 2 && etag[0] == '"' && etag[len - 1] == '"') {
            etag++;
            len -= 2;
        }
        if (len >= sizeof x.etag) {
            *why = "bad eTag";
            return -1;
        }
        memcpy(x.etag, etag, len);
        x.etag[len] = '\0';
    }
    x.size = (uint64_t)json_integer_value(size);
    ferry_err e = ledger_event_external(n->ledger, &x, ferry_time_now(), &ev, &dup);
    if (e != FERRY_OK) {
        *why = e == FERRY_ERR_NOT_FOUND  ? "unknown grant"
               : e == FERRY_ERR_DENIED   ? "bucket or key differ from the grant's"
               : e == FERRY_ERR_INVALID  ? "size differs from the grant's"
               : e == FERRY_ERR_CONFLICT ? "grant revoked"
                                         : "ledger error";
        log_warn("notify.refused", "grant=%s reason=\"%s\"", x.grant_id, *why);
        return -1;
    }
    log_info("notify.accepted", "grant=%s event=%s duplicate=%s", x.grant_id, ev.id,
             dup ? "yes" : "no");
    return dup ? 1 : 0;
}

static enum MHD_Result handle_body(notify_http *n, struct MHD_Connection *c, notify_req *r)
{
    json_error_t jerr;
    json_t *root = json_loadb(r->body.data != NULL ? r->body.data : "", r->body.len,
                              JSON_REJECT_DUPLICATES, &jerr);
    json_t *records = json_object_get(root, "Records");
    unsigned counts[3] = {0, 0, 0}, refused = 0;
    char out[256];
    const char *last_why = "";
    if (!json_is_array(records) || json_array_size(records) > NOTIFY_RECORDS_MAX) {
        json_decref(root);
        return respond(c, MHD_HTTP_BAD_REQUEST,
                       "{\"error\":\"expected {\\\"Records\\\":[...]} of at most 1000 records\"}");
    }
    size_t i;
    json_t *rec;
    json_array_foreach(records, i, rec)
    {
        const char *why = NULL;
        int k = json_is_object(rec) ? handle_record(n, rec, &why) : -1;
        if (k < 0) {
            refused++;
            last_why = why != NULL ? why : "not an object";
        } else {
            counts[k]++;
        }
    }
    json_decref(root);
    snprintf(out, sizeof out,
             "{\"accepted\":%u,\"duplicates\":%u,\"ignored\":%u,\"refused\":%u,\"reason\":\"%s\"}",
             counts[0], counts[1], counts[2], refused, last_why);
    return respond(
        c, refused > 0 && counts[0] + counts[1] == 0 ? MHD_HTTP_UNPROCESSABLE_CONTENT : MHD_HTTP_OK,
        out);
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *c, const char *url,
                                 const char *method, const char *version, const char *data,
                                 size_t *data_size, void **con_cls)
{
    notify_http *n = cls;
    notify_req *r = *con_cls;
    (void)version;
    if (r == NULL) {
        /* Headers only so far: refuse before reading any body. */
        if (strcmp(url, NOTIFY_PATH) != 0)
            return respond(c, MHD_HTTP_NOT_FOUND, "{\"error\":\"not found\"}");
        if (strcmp(method, "POST") != 0)
            return respond(c, MHD_HTTP_METHOD_NOT_ALLOWED, "{\"error\":\"POST only\"}");
        if (!token_ok(n, c)) {
            log_warn("notify.unauthorized", "path=%s", url);
            return respond(c, MHD_HTTP_UNAUTHORIZED, "{\"error\":\"bad or missing token\"}");
        }
        r = calloc(1, sizeof *r);
        if (r == NULL)
            return MHD_NO;
        ferry_buf_init(&r->body, n->max_body);
        *con_cls = r;
        return MHD_YES;
    }
    if (*data_size > 0) {
        if (!r->too_large && ferry_buf_append(&r->body, data, *data_size) != FERRY_OK)
            r->too_large = true;
        *data_size = 0;
        return MHD_YES;
    }
    if (r->too_large)
        return respond(c, MHD_HTTP_CONTENT_TOO_LARGE, "{\"error\":\"body too large\"}");
    return handle_body(n, c, r);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode code)
{
    notify_req *r = *con_cls;
    (void)cls;
    (void)c;
    (void)code;
    if (r != NULL) {
        ferry_buf_cleanup(&r->body);
        free(r);
        *con_cls = NULL;
    }
}

static ferry_err read_pem(const char *path, char **out)
{
    const char *why = "";
    ferry_err err = ferry_read_small_file(path, NOTIFY_PEM_MAX, out, &why);
    if (err != FERRY_OK)
        log_error("notify.tls_file", "path=%s error=\"%s\"", path, why);
    return err;
}

ferry_err notify_http_new(const notify_http_config *config, notify_http **out)
{
    ferry_err err = FERRY_OK;
    notify_http *n = NULL;
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);

    if (config == NULL || out == NULL || config->token == NULL || config->token[0] == '\0' ||
        config->bucket == NULL || config->listen == NULL || config->port <= 0 ||
        config->port > 65535 || config->tls_cert_file == NULL || config->tls_key_file == NULL)
        return FERRY_ERR_INVALID;
    struct sockaddr_in *v4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&ss;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_TLS;
    if (inet_pton(AF_INET, config->listen, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)config->port);
    } else if (inet_pton(AF_INET6, config->listen, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)config->port);
        flags |= MHD_USE_IPv6;
    } else {
        log_error("notify.listen", "listen=%s error=\"not an IP address\"", config->listen);
        return FERRY_ERR_CONFIG;
    }
    n = calloc(1, sizeof *n);
    if (n == NULL)
        return FERRY_ERR_NOMEM;
    SHA256((const unsigned char *)config->token, strlen(config->token), n->token_sha);
    n->max_body = config->max_body > 0 ? config->max_body : 1024 * 1024;
    n->bucket = strdup(config->bucket);
    if (n->bucket == NULL) {
        err = FERRY_ERR_NOMEM;
        goto out;
    }
    if ((err = ledger_open(config->ledger_url, &n->ledger)) != FERRY_OK ||
        (err = ledger_set_sync(n->ledger, LEDGER_SYNC_FULL)) != FERRY_OK)
        goto out;
    if ((err = read_pem(config->tls_cert_file, &n->cert)) != FERRY_OK ||
        (err = read_pem(config->tls_key_file, &n->key)) != FERRY_OK)
        goto out;
    n->daemon = MHD_start_daemon(
        flags, (uint16_t)config->port, NULL, NULL, on_access, n, MHD_OPTION_SOCK_ADDR,
        (struct sockaddr *)&ss, MHD_OPTION_NOTIFY_COMPLETED, on_completed, n,
        MHD_OPTION_CONNECTION_LIMIT, 64u, MHD_OPTION_CONNECTION_TIMEOUT, 30u,
        MHD_OPTION_HTTPS_MEM_CERT, n->cert, MHD_OPTION_HTTPS_MEM_KEY, n->key,
        MHD_OPTION_HTTPS_PRIORITIES, "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2", MHD_OPTION_END);
    if (n->daemon == NULL) {
        log_error("notify.start_failed", "listen=%s port=%d", config->listen, config->port);
        err = FERRY_ERR_IO;
        goto out;
    }
    log_info("notify.started", "listen=%s port=%d path=%s", config->listen, config->port,
             NOTIFY_PATH);
    *out = n;
    n = NULL;
out:
    notify_http_free(n);
    return err;
}

void notify_http_free(notify_http *n)
{
    if (n == NULL)
        return;
    if (n->daemon != NULL)
        MHD_stop_daemon(n->daemon);
    ledger_close(n->ledger);
    free(n->bucket);
    free(n->cert);
    if (n->key != NULL) {
        OPENSSL_cleanse(n->key, strlen(n->key));
        free(n->key);
    }
    OPENSSL_cleanse(n->token_sha, sizeof n->token_sha);
    free(n);
}
