/*
 * store_multipart.c - S3 multipart upload in the embedded store, for the
 * operator credential; see store_multipart.h for the invariants and
 * docs/store.md ("Multipart upload") for the behaviour clients see.
 *
 * The calls, as store.c hands them over (authenticated, operator only):
 *   POST   /<bucket>/<key>?uploads                CreateMultipartUpload
 *   PUT    /<bucket>/<key>?partNumber=N&uploadId=  UploadPart (PutObject's
 *                                                 body path, store.c), or
 *                                                 UploadPartCopy with
 *                                                 x-amz-copy-source
 *   GET    /<bucket>/<key>?partNumber=N           GetObject of one part
 *                                                 (HEAD too; store.c)
 *   POST   /<bucket>/<key>?uploadId=              CompleteMultipartUpload
 *   DELETE /<bucket>/<key>?uploadId=              AbortMultipartUpload
 *   GET    /<bucket>/<key>?uploadId=              ListParts
 *   GET    /<bucket>?uploads                      ListMultipartUploads
 * Part files are data files (or pack regions) of store_fs (named by random
 * ids, never by keys); the ledger's uploads and upload_parts rows
 * (migration 7) say which of them are parts of which upload, and once the
 * upload is completed its object's object_parts rows (migration 10) say
 * which are the parts of which object.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <expat.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "common/log.h"
#include "common/timefmt.h"
#include "store_int.h"
#include "store_multipart.h"

#define S3_NS           "http://s3.amazonaws.com/doc/2006-03-01/"
#define MP_LEAF_MAX     128        /* bytes of text in one leaf element */
#define MP_COPY_BLOCK   (1u << 20) /* copies and completion read this much at a time */
#define MP_WRITEBACK    (8u << 20) /* copies start writeback this often */
#define MP_READ_AHEAD   (8u << 20) /* completion asks the disk for this much ahead */
#define MP_LIST_MAX     1000       /* parts or uploads in one listing */
#define MP_EXPIRE_BATCH 16         /* expired uploads aborted per CreateMultipartUpload */

/* Per request: the upload a call is about, and a CompleteMultipartUpload
 * body being collected. */
struct store_mp_req {
    char upload_id[LEDGER_UPLOAD_ID_MAX + 1];
    unsigned part_number;
    ledger_part part; /* UploadPart, UploadPartCopy: the row a committer records */
    /* CompleteMultipartUpload, once the part list checks out: the work of
     * its thread (complete_state), and its outcome, answered when the
     * connection is resumed. */
    struct complete_state *cs;
    /* UploadPartCopy: the source's data being copied (fd, offset of its
     * first byte in it) and the range */
    int copy_fd;
    uint64_t copy_base, copy_first, copy_len;
    size_t n_used;
    uint64_t total;
    bool completing;
    unsigned out_status; /* 200: stored */
    const char *out_code, *out_msg;
    char out_etag[LEDGER_ETAG_MAX + 1];
    bool copy; /* UploadPartCopy: answered with CopyPartResult */
    char source_key[LEDGER_OBJECT_KEY_MAX + 1];
    ferry_buf body;
    bool body_too_large;
};

static void complete_state_free(struct complete_state *cs);

static struct store_mp_req *mp_req_new(void)
{
    struct store_mp_req *m = calloc(1, sizeof *m);
    if (m != NULL)
        m->copy_fd = -1;
    return m;
}

bool store_mp_completing_now(const req *r)
{
    return r->mp != NULL && r->mp->completing;
}

void store_mp_req_free(struct store_mp_req *m)
{
    if (m == NULL)
        return;
    ferry_buf_cleanup(&m->body);
    complete_state_free(m->cs);
    if (m->copy_fd >= 0)
        close(m->copy_fd);
    free(m);
}

/* ---------------------------------------------------------------------- */
/* The CompleteMultipartUpload parser                                       */

enum mpx_leaf { LEAF_NONE = 0, LEAF_NUMBER, LEAF_ETAG, LEAF_IGNORED };

typedef struct mpx {
    XML_Parser p;
    int depth;
    enum mpx_leaf leaf;
    bool has_number, has_etag;
    char text[MP_LEAF_MAX + 1];
    size_t text_len;
    store_mp_part_ref cur;
    store_mp_part_ref *parts;
    size_t max, n;
    const char *why; /* set: refused */
} mpx;

static void mpx_fail(mpx *x, const char *why)
{
    if (x->why == NULL)
        x->why = why;
    (void)XML_StopParser(x->p, XML_FALSE);
}

/* The local name of an element, when it is in no namespace or in S3's
 * (the parser reports "uri\x1flocal"); NULL for any other namespace. */
static const char *mpx_local(const XML_Char *name)
{
    const char *sep = strchr(name, '\x1f');
    if (sep == NULL)
        return name;
    if ((size_t)(sep - name) != strlen(S3_NS) || strncmp(name, S3_NS, strlen(S3_NS)) != 0)
        return NULL;
    return sep + 1;
}

static void XMLCALL mpx_start(void *ud, const XML_Char *name, const XML_Char **atts)
{
    mpx *x = ud;
    const char *local = mpx_local(name);
    if (x->why != NULL)
        return;
    if (atts != NULL && atts[0] != NULL) {
        mpx_fail(x, "attributes are not allowed");
        return;
    }
    if (local == NULL) {
        mpx_fail(x, "an element in an unknown namespace");
        return;
    }
    switch (x->depth) {
    case 0:
        if (strcmp(local, "CompleteMultipartUpload") != 0) {
            mpx_fail(x, "the root element must be CompleteMultipartUpload");
            return;
        }
        break;
    case 1:
        if (strcmp(local, "Part") != 0) {
            mpx_fail(x, "CompleteMultipartUpload may contain Part elements only");
            return;
        }
        if (x->n == x->max) {
            mpx_fail(x, "too many parts");
            return;
        }
        memset(&x->cur, 0, sizeof x->cur);
        x->has_number = x->has_etag = false;
        break;
    case 2:
        if (strcmp(local, "PartNumber") == 0) {
            if (x->has_number) {
                mpx_fail(x, "a Part has two PartNumber elements");
                return;
            }
            x->leaf = LEAF_NUMBER;
        } else if (strcmp(local, "ETag") == 0) {
            if (x->has_etag) {
                mpx_fail(x, "a Part has two ETag elements");
                return;
            }
            x->leaf = LEAF_ETAG;
        } else if (strcmp(local, "ChecksumCRC32") == 0 || strcmp(local, "ChecksumCRC32C") == 0 ||
                   strcmp(local, "ChecksumSHA1") == 0 || strcmp(local, "ChecksumSHA256") == 0) {
            /* Per-part checksums are verified when the part arrives (or
             * not at all: the store keeps none but SHA-256 of objects). */
            x->leaf = LEAF_IGNORED;
        } else {
            mpx_fail(x, "unknown element in Part");
            return;
        }
        x->text_len = 0;
        break;
    default:
        mpx_fail(x, "elements nested too deep");
        return;
    }
    x->depth++;
}

static bool is_space(char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n';
}

/* The text of a leaf without surrounding white space. */
static void mpx_trim(mpx *x, const char **s, size_t *len)
{
    const char *t = x->text;
    size_t l = x->text_len;
    while (l > 0 && is_space(t[0])) {
        t++;
        l--;
    }
    while (l > 0 && is_space(t[l - 1]))
        l--;
    *s = t;
    *len = l;
}

static void mpx_leaf_end(mpx *x)
{
    const char *t;
    size_t l;
    mpx_trim(x, &t, &l);
    if (x->leaf == LEAF_NUMBER) {
        unsigned v = 0;
        if (l == 0 || l > 5) {
            mpx_fail(x, "PartNumber must be a number of 1 to 5 digits");
            return;
        }
        for (size_t i = 0; i < l; i++) {
            if (t[i] < '0' || t[i] > '9') {
                mpx_fail(x, "PartNumber must be a number of 1 to 5 digits");
                return;
            }
            v = v * 10 + (unsigned)(t[i] - '0');
        }
        x->cur.number = v;
        x->has_number = true;
    } else if (x->leaf == LEAF_ETAG) {
        /* Clients send the ETag as S3 gave it, in double quotes. */
        if (l >= 2 && t[0] == '"' && t[l - 1] == '"') {
            t++;
            l -= 2;
        }
        x->cur.etag_ok = l == 32;
        for (size_t i = 0; i < l && x->cur.etag_ok; i++) {
            char ch = t[i];
            if (ch >= 'A' && ch <= 'F')
                ch = (char)(ch - 'A' + 'a');
            if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f')))
                x->cur.etag_ok = false;
            x->cur.etag[i] = ch;
        }
        x->cur.etag[x->cur.etag_ok ? 32 : 0] = '\0';
        x->has_etag = true;
    }
    x->leaf = LEAF_NONE;
}

static void XMLCALL mpx_end(void *ud, const XML_Char *name)
{
    mpx *x = ud;
    (void)name;
    if (x->why != NULL)
        return;
    x->depth--;
    switch (x->depth) {
    case 2:
        mpx_leaf_end(x);
        break;
    case 1:
        if (!x->has_number || !x->has_etag) {
            mpx_fail(x, "every Part needs a PartNumber and an ETag");
            return;
        }
        x->parts[x->n++] = x->cur;
        break;
    case 0:
        if (x->n == 0)
            mpx_fail(x, "the part list is empty");
        break;
    default:
        break;
    }
}

static void XMLCALL mpx_text(void *ud, const XML_Char *s, int len)
{
    mpx *x = ud;
    if (x->why != NULL || len <= 0)
        return;
    if (x->leaf == LEAF_NONE) {
        for (int i = 0; i < len; i++) {
            if (!is_space(s[i])) {
                mpx_fail(x, "text outside PartNumber and ETag");
                return;
            }
        }
        return;
    }
    if (x->text_len + (size_t)len > MP_LEAF_MAX) {
        mpx_fail(x, "an element's text is too long");
        return;
    }
    memcpy(x->text + x->text_len, s, (size_t)len);
    x->text_len += (size_t)len;
}

static void XMLCALL mpx_doctype(void *ud, const XML_Char *name, const XML_Char *sysid,
                                const XML_Char *pubid, int has_internal_subset)
{
    (void)name;
    (void)sysid;
    (void)pubid;
    (void)has_internal_subset;
    /* No DTD: so no entity expansion beyond XML's five, and no external
     * resource, whatever the document declares. */
    mpx_fail(ud, "a DOCTYPE is not allowed");
}

ferry_err store_mp_parse_complete(const char *xml, size_t len, store_mp_part_ref *parts, size_t max,
                                  size_t *n, const char **why)
{
    ferry_err err = FERRY_ERR_INVALID;
    mpx x;

    if (xml == NULL || parts == NULL || n == NULL || why == NULL)
        return FERRY_ERR_INVALID;
    *why = "The XML you provided was not well-formed or did not validate against our published "
           "schema.";
    if (len > STORE_MP_XML_MAX || len > (size_t)INT32_MAX)
        return FERRY_ERR_INVALID;
    memset(&x, 0, sizeof x);
    x.parts = parts;
    x.max = max;
    x.p = XML_ParserCreateNS(NULL, '\x1f');
    if (x.p == NULL)
        return FERRY_ERR_NOMEM;
    XML_SetUserData(x.p, &x);
    XML_SetElementHandler(x.p, mpx_start, mpx_end);
    XML_SetCharacterDataHandler(x.p, mpx_text);
    XML_SetStartDoctypeDeclHandler(x.p, mpx_doctype);
    (void)XML_SetParamEntityParsing(x.p, XML_PARAM_ENTITY_PARSING_NEVER);
    if (XML_Parse(x.p, xml, (int)len, XML_TRUE) != XML_STATUS_OK || x.why != NULL) {
        if (x.why != NULL)
            *why = x.why;
        goto out;
    }
    *n = x.n;
    err = FERRY_OK;
out:
    XML_ParserFree(x.p);
    return err;
}

/* ---------------------------------------------------------------------- */
/* Helpers                                                                  */

static const char *const mp_names[] = {"uploads", "uploadId", "partNumber"};

bool store_mp_query(const char *query, char *sub, size_t sub_size)
{
    size_t len = strlen(query);
    size_t i = 0;
    /* Each parameter on its own: a multipart name, or another sub-resource
     * (then the call is not a multipart one), or a plain parameter. */
    while (i < len) {
        size_t end = i + strcspn(query + i, "&");
        size_t n_end = i + strcspn(query + i, "=&");
        char one[40];
        if (n_end > end)
            n_end = end;
        if (store_query_subresource(query + i, n_end - i, one, sizeof one)) {
            bool ours = false;
            for (size_t k = 0; k < sizeof mp_names / sizeof mp_names[0]; k++)
                if (strcmp(one, mp_names[k]) == 0)
                    ours = true;
            if (!ours) {
                snprintf(sub, sub_size, "%s", one);
                return false;
            }
        }
        i = end + 1;
    }
    return true;
}

static const char *qparam(const sigv4_query *q, const char *name)
{
    for (size_t i = 0; i < q->n; i++)
        if (strcmp(q->params[i].name, name) == 0)
            return q->params[i].value;
    return NULL;
}

/* A decimal number in [lo, hi]; false for anything else. */
static bool parse_uint(const char *v, uint64_t lo, uint64_t hi, uint64_t *out)
{
    uint64_t n = 0;
    if (v == NULL || v[0] == '\0' || strlen(v) > 19)
        return false;
    for (const char *p = v; *p != '\0'; p++) {
        if (*p < '0' || *p > '9')
            return false;
        n = n * 10 + (uint64_t)(*p - '0');
    }
    if (n < lo || n > hi)
        return false;
    *out = n;
    return true;
}

/* The ledger stopped naming a part's data: its file removed, or its pack
 * region let go. */
static void unlink_file(const char *file_id, void *arg)
{
    store_forget_data(arg, file_id);
}

#define NO_SUCH_UPLOAD_MSG                                                                         \
    "The specified multipart upload does not exist. The upload ID might be invalid, or the "       \
    "multipart upload might have been aborted or completed."

static enum MHD_Result no_such_upload(req *r, struct MHD_Connection *c)
{
    return store_respond_error(r, c, 404, "NoSuchUpload", NO_SUCH_UPLOAD_MSG);
}

/* The upload named by the query's uploadId, which must be this request's
 * bucket and key; otherwise the request is answered (*ret) and false. */
static bool upload_of(req *r, struct MHD_Connection *c, const char *upload_id, ledger_upload *u,
                      uint64_t *parts_bytes, enum MHD_Result *ret)
{
    store *s = r->s;
    ledger *l;
    ferry_err e;
    if (upload_id == NULL || upload_id[0] == '\0' || strlen(upload_id) > LEDGER_UPLOAD_ID_MAX) {
        *ret = no_such_upload(r, c);
        return false;
    }
    l = store_pool_take(s);
    e = ledger_upload_get(l, upload_id, u, parts_bytes);
    store_pool_give(s, l);
    if (e == FERRY_ERR_NOT_FOUND ||
        (e == FERRY_OK && (strcmp(u->bucket, r->t.bucket) != 0 || strcmp(u->key, r->t.key) != 0))) {
        *ret = no_such_upload(r, c);
        return false;
    }
    if (e != FERRY_OK) {
        *ret = store_respond_error(r, c, 503, "SlowDown", "the ledger is busy; retry");
        return false;
    }
    return true;
}

ferry_err store_mp_expire(store *s, size_t limit)
{
    ferry_err e;
    ledger *l;
    uint64_t count = 0;
    if (s->mp_expiry_s <= 0)
        return FERRY_OK;
    l = store_pool_take(s);
    /* In batches: each one is a write transaction of its own. */
    do {
        size_t batch = limit < 1000 ? limit : 1000;
        count = 0;
        e = ledger_uploads_expire(l, ferry_time_now() - s->mp_expiry_s, batch, unlink_file, s,
                                  &count);
        if (e == FERRY_OK && count > 0)
            log_info("store.multipart_expired", "uploads=%" PRIu64, count);
        limit -= (size_t)count;
    } while (e == FERRY_OK && count > 0 && limit > 0);
    store_pool_give(s, l);
    return e;
}

ferry_err store_expire_uploads(store *s)
{
    if (s == NULL)
        return FERRY_ERR_INVALID;
    return store_mp_expire(s, 1000);
}

/* ---------------------------------------------------------------------- */
/* CreateMultipartUpload                                                    */

static enum MHD_Result create_upload(req *r, struct MHD_Connection *c, const header_list *h)
{
    store *s = r->s;
    const char *why = NULL;
    ledger_upload *u = calloc(1, sizeof *u);
    ledger *l;
    ferry_err e;
    ferry_buf b;
    enum MHD_Result ret;

    if (u == NULL)
        return store_respond_error(r, c, 500, "InternalError", "out of memory");
    if (!store_content_type(r, c, u->content_type, &ret))
        goto out;
    if (!store_collect_meta(h, u->meta, sizeof u->meta, &why)) {
        ret = store_respond_error(r, c, 400, "MetadataTooLarge", why);
        goto out;
    }
    /* Stale uploads go first, a few at a time, so they cannot hold the
     * slots of max_multipart_uploads. */
    if (store_mp_expire(s, MP_EXPIRE_BATCH) != FERRY_OK)
        log_error("store.multipart_expire_failed", "request_id=%s", r->id);
    if (store_fs_new_id(u->id) != FERRY_OK) {
        ret = store_respond_error(r, c, 500, "InternalError", "no random upload id");
        goto out;
    }
    snprintf(u->bucket, sizeof u->bucket, "%s", r->t.bucket);
    memcpy(u->key, r->t.key, r->t.key_len + 1);
    u->initiated_at = ferry_time_now();
    l = store_pool_take(s);
    e = ledger_upload_create(l, u, s->mp_max_uploads);
    store_pool_give(s, l);
    if (e == FERRY_ERR_RANGE) {
        ret = store_respond_error(r, c, 503, "SlowDown",
                                  "Too many multipart uploads are in progress "
                                  "([store] max_multipart_uploads); complete or abort some.");
        goto out;
    }
    if (e != FERRY_OK) {
        ret = store_respond_error(r, c, 503, "SlowDown", "the ledger is busy; retry");
        goto out;
    }
    log_info("store.multipart_created", "request_id=%s key=\"%s\" upload_id=%s", r->id, u->key,
             u->id);
    ferry_buf_init(&b, 8192);
    e = ferry_buf_append_str(&b, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                                 "<InitiateMultipartUploadResult xmlns=\"" S3_NS "\"><Bucket>");
    if (e == FERRY_OK)
        e = store_xml_escape(&b, r->t.bucket, strlen(r->t.bucket));
    if (e == FERRY_OK)
        e = ferry_buf_append_str(&b, "</Bucket><Key>");
    if (e == FERRY_OK)
        e = store_xml_escape(&b, r->t.key, r->t.key_len);
    if (e == FERRY_OK)
        e = ferry_buf_appendf(&b, "</Key><UploadId>%s</UploadId></InitiateMultipartUploadResult>",
                              u->id);
    ret = e == FERRY_OK ? store_respond_xml(r, c, 200, &b) : MHD_NO;
    ferry_buf_cleanup(&b);
out:
    free(u);
    return ret;
}

/* ---------------------------------------------------------------------- */
/* UploadPart                                                               */

static enum MHD_Result copy_part(req *r, struct MHD_Connection *c, uint64_t parts_bytes);

static enum MHD_Result begin_part(req *r, struct MHD_Connection *c, const header_list *h,
                                  const sigv4_verdict *verdict, const sigv4_query *q)
{
    store *s = r->s;
    const char *cl = store_header(c, "Content-Length");
    uint64_t number = 0, parts_bytes = 0, len = 0;
    ledger_upload *u;
    enum MHD_Result ret = MHD_NO;

    if (!parse_uint(qparam(q, "partNumber"), 1, STORE_MP_PARTS_MAX, &number))
        return store_respond_error(r, c, 400, "InvalidArgument",
                                   "Part number must be an integer between 1 and 10000, "
                                   "inclusive");
    u = calloc(1, sizeof *u);
    if (u == NULL)
        return store_respond_error(r, c, 500, "InternalError", "out of memory");
    if (!upload_of(r, c, qparam(q, "uploadId"), u, &parts_bytes, &ret))
        goto out;
    r->mp = mp_req_new();
    if (r->mp == NULL) {
        ret = store_respond_error(r, c, 500, "InternalError", "out of memory");
        goto out;
    }
    snprintf(r->mp->upload_id, sizeof r->mp->upload_id, "%s", u->id);
    r->mp->part_number = (unsigned)number;
    if (store_header(c, "x-amz-copy-source") != NULL) {
        ret = copy_part(r, c, parts_bytes);
        goto out;
    }
    /* The limits on the part and on the whole, before a byte is read
     * (PutObject's own checks follow in store_begin_put). */
    if (cl != NULL && parse_uint(cl, 0, UINT64_MAX / 4, &len) &&
        (len > STORE_MP_PART_MAX || parts_bytes + len > s->max_object_size)) {
        ret = store_respond_error(r, c, 400, "EntityTooLarge",
                                  len > STORE_MP_PART_MAX
                                      ? "Your proposed upload exceeds the maximum allowed part "
                                        "size (5 GiB)."
                                      : "The parts of this upload would exceed the maximum "
                                        "allowed object size.");
        goto out;
    }
    ret = store_begin_put(r, c, h, verdict);
out:
    free(u);
    return ret;
}

ferry_err store_mp_record_part(store *s, req *r)
{
    char replaced[LEDGER_FILE_ID_MAX + 1] = "";
    ledger *l = store_pool_take(s);
    ferry_err e = ledger_upload_part_put(l, r->mp->upload_id, &r->mp->part, replaced);
    store_pool_give(s, l);
    if (e == FERRY_OK && replaced[0] != '\0')
        store_forget_data(s, replaced);
    return e;
}

/* The answer to UploadPart or UploadPartCopy once the committers are done
 * with its part (r->commit_err). */
static enum MHD_Result part_answer(req *r, struct MHD_Connection *c)
{
    const ledger_part *p = &r->mp->part;
    char etag[LEDGER_ETAG_MAX + 3], iso[STORE_ISO_TIME_LEN + 1];
    struct MHD_Response *resp;
    ferry_err e = r->commit_err;
    ferry_buf b;

    if (e == FERRY_ERR_NOT_FOUND)
        return no_such_upload(r, c); /* completed or aborted meanwhile */
    if (e == FERRY_ERR_IO || e == FERRY_ERR_NOMEM)
        return store_respond_error(r, c, 500, "InternalError",
                                   "the store could not write the part");
    if (e == FERRY_ERR_UNAVAILABLE)
        return store_respond_error(r, c, 503, "SlowDown", "The store is shutting down; retry.");
    if (e != FERRY_OK)
        return store_respond_error(r, c, 503, "SlowDown", "the ledger is busy; retry");
    log_info("store.part_stored",
             "request_id=%s key=\"%s\" upload_id=%s part=%u size=%" PRIu64
             " etag=%s copied_from=\"%s\"",
             r->id, r->t.key, r->mp->upload_id, p->number, p->size, p->etag, r->mp->source_key);
    if (r->mp->copy) {
        store_iso_time(p->created_at, iso);
        ferry_buf_init(&b, 1024);
        e = ferry_buf_appendf(&b,
                              "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<CopyPartResult "
                              "xmlns=\"" S3_NS "\"><LastModified>%s</LastModified>"
                              "<ETag>&quot;%s&quot;</ETag></CopyPartResult>",
                              iso, p->etag);
        enum MHD_Result ret = e == FERRY_OK ? store_respond_xml(r, c, 200, &b) : MHD_NO;
        ferry_buf_cleanup(&b);
        return ret;
    }
    snprintf(etag, sizeof etag, "\"%s\"", p->etag);
    resp = store_empty_response();
    if (resp == NULL)
        return MHD_NO;
    MHD_add_response_header(resp, "ETag", etag);
    if (r->want_checksum)
        MHD_add_response_header(resp, "x-amz-checksum-sha256",
                                store_header(c, "x-amz-checksum-sha256"));
    return store_queue(r, c, 200, resp);
}

/* r->mp->part is filled and r->slot written: the committers make the slot
 * durable and record the part while the connection is suspended (a slow
 * fdatasync must not stall the other connections of this libmicrohttpd
 * thread), then resume it, and part_answer() answers. */
static enum MHD_Result part_commit(req *r, struct MHD_Connection *c)
{
    snprintf(r->mp->part.file_id, sizeof r->mp->part.file_id, "%s", r->slot.id);
    r->mp->part.number = r->mp->part_number;
    r->mp->part.created_at = ferry_time_now();
    store_fs_slot_written(&r->slot); /* the next flush of its pack covers it */
    if (store_committer_submit(r, c))
        return MHD_YES;
    store_commit_now(r); /* the committers are stopping: on this thread */
    return part_answer(r, c);
}

enum MHD_Result store_mp_part_done(req *r, struct MHD_Connection *c)
{
    char md5_hex[33], sha_hex[65];
    enum MHD_Result ret = MHD_NO;

    if (r->phase == PH_COMMITTED)
        return part_answer(r, c);
    if (!store_body_digests_ok(r, c, md5_hex, sha_hex, &ret))
        return ret;
    snprintf(r->mp->part.etag, sizeof r->mp->part.etag, "%s", md5_hex);
    r->mp->part.size = r->received;
    return part_commit(r, c);
}

/* UploadPartCopy's copy, on a thread of its own (run_long_work): the
 * range read from the source's data while its MD5 (the part's ETag) is
 * computed, written to the part's slot, then flushed and recorded as a
 * committer does (store_commit_now); the outcome goes to r->commit_err and
 * part_answer() answers it. */
static bool copy_range(store_mp_data *d, int fd, uint64_t base, uint64_t first, uint64_t n,
                       store_fs_slot *out, const atomic_bool *abort, unsigned char md5[16]);

static void copy_work(req *r)
{
    store *s = r->s;
    struct store_mp_req *m = r->mp;
    unsigned char digest[16];
    /* A source made of its parts is read across them. */
    bool ok = copy_range(r->copy_parts, m->copy_fd, m->copy_base, m->copy_first, m->copy_len,
                         &r->slot, &s->mp_abort, digest);
    /* ECANCELED: the store is stopping: no part, the upload as it was. */
    ferry_err e = ok                  ? FERRY_OK
                  : errno == ECANCELED ? FERRY_ERR_UNAVAILABLE
                  : errno == ENOMEM    ? FERRY_ERR_NOMEM
                                       : FERRY_ERR_IO;
    if (e == FERRY_ERR_IO)
        log_error("store.copy_failed", "request_id=%s error=\"%s\"", r->id, strerror(errno));
    /* The source is read: its data is let go now, not when r is freed. */
    if (m->copy_fd >= 0)
        close(m->copy_fd);
    m->copy_fd = -1;
    store_fs_read_done(&s->fs, r->reading);
    r->reading[0] = '\0';
    store_mp_data_free(r->copy_parts);
    r->copy_parts = NULL;
    if (ok) {
        store_hex(digest, 16, m->part.etag);
        m->part.size = m->copy_len;
        snprintf(m->part.file_id, sizeof m->part.file_id, "%s", r->slot.id);
        m->part.number = m->part_number;
        m->part.created_at = ferry_time_now();
        store_commit_now(r); /* flush, row, slot closed: r->commit_err */
    } else {
        r->commit_err = e; /* req_free drops the slot */
    }
    r->phase = PH_COMMITTED;
}

/* UploadPartCopy: the part's bytes are the source object's, all of them or
 * x-amz-copy-source-range's. Checked here, then copied and committed by
 * copy_work on a thread of its own, the connection suspended. */
static enum MHD_Result copy_part(req *r, struct MHD_Connection *c, uint64_t parts_bytes)
{
    store *s = r->s;
    struct store_mp_req *m = r->mp;
    const char *cl = store_header(c, "Content-Length");
    const char *range = store_header(c, "x-amz-copy-source-range");
    ledger_object *o = calloc(1, sizeof *o);
    uint64_t first = 0, length = 0;
    uint64_t base = 0;
    int in = -1;
    char msg[160];
    enum MHD_Result ret = MHD_NO;

    if (o == NULL) {
        ret = store_respond_error(r, c, 500, "InternalError", "out of memory");
        goto out;
    }
    if (store_header(c, "Transfer-Encoding") != NULL || (cl != NULL && strcmp(cl, "0") != 0)) {
        ret = store_respond_error(r, c, 400, "InvalidRequest",
                                  "UploadPartCopy takes no request body.");
        goto out;
    }
    if (!store_copy_source_open(r, c, o, &in, &base, &ret))
        goto out;
    length = o->size;
    if (range != NULL) {
        switch (store_parse_copy_range(range, o->size, &first, &length)) {
        case STORE_COPY_RANGE_OK:
            break;
        case STORE_COPY_RANGE_OUTSIDE:
            snprintf(msg, sizeof msg,
                     "Range specified is not valid for source object of size: %" PRIu64, o->size);
            ret = store_respond_error(r, c, 400, "InvalidArgument", msg);
            goto out;
        default:
            ret = store_respond_error(r, c, 400, "InvalidArgument",
                                      "The x-amz-copy-source-range value must be of the form "
                                      "bytes=first-last where first and last are the zero-based "
                                      "offsets of the first and last bytes to copy");
            goto out;
        }
    }
    if (length > STORE_MP_PART_MAX) {
        ret = store_respond_error(r, c, 400, "InvalidRequest",
                                  "The specified copy source is larger than the maximum allowable "
                                  "size for a copy source: 5368709120");
        goto out;
    }
    if (parts_bytes + length > s->max_object_size) {
        ret = store_respond_error(r, c, 400, "EntityTooLarge",
                                  "The parts of this upload would exceed the maximum allowed "
                                  "object size.");
        goto out;
    }
    if (store_fs_slot_open(&s->fs, length, true, &r->slot) != FERRY_OK) {
        ret = store_respond_error(r, c, 500, "InternalError", "cannot create the part file");
        goto out;
    }
    m->copy_fd = in;
    in = -1;
    m->copy_base = base;
    m->copy_first = first;
    m->copy_len = length;
    m->copy = true;
    snprintf(m->source_key, sizeof m->source_key, "%s", o->key);
    ret = store_run_long_work(r, c, copy_work) ? MHD_YES : part_answer(r, c);
out:
    if (in >= 0)
        close(in);
    free(o);
    return ret;
}

/* ---------------------------------------------------------------------- */
/* Objects made of their parts                                              */

/* One part of an object made of its parts: where it lies in the object and
 * its data, while open. */
typedef struct mp_piece {
    char data_id[LEDGER_FILE_ID_MAX + 1];
    uint64_t start; /* the part's first byte in the object */
    uint64_t size;
    int fd; /* -1: not open */
    uint64_t base;
} mp_piece;

/* A completed object is read from up to 10,000 parts; at most this many of
 * them are open at once (an open part holds a file descriptor, and a
 * reader of its pack), each later group opened when the reads reach it.
 *
 * Readers are counted per object (s->mp_reading, under s->mp_read_mu),
 * and the release of an object's parts (store_mp_forget: the part rows
 * deleted, then their data) and a reader's start (its count, then the
 * part rows read) exclude each other. So a reader either finds the part
 * rows gone (the object was deleted or replaced: not found), or finds
 * them all, and then their data stays until it is done, however the
 * object changes meanwhile: a delete or replacement while it is being read
 * is deferred to the last reader's end (store_mp_data_free), as a pack
 * defers its hole punches, and a GET under way sends the version it began
 * with, whole. */
#define MP_OPEN_AHEAD 4

struct store_mp_reading {
    char file_id[LEDGER_FILE_ID_MAX + 1];
    unsigned readers;
    bool forgotten; /* deleted or replaced meanwhile: release after the last reader */
    bool releasing; /* being released (outside the lock): no reader may start */
};

static void release_parts(store *s, const char *file_id);

/* The entry of file_id, or NULL (s->mp_read_mu held). */
static struct store_mp_reading *reading_find(store *s, const char *file_id)
{
    for (size_t i = 0; i < s->n_mp_reading; i++)
        if (strcmp(s->mp_reading[i].file_id, file_id) == 0)
            return &s->mp_reading[i];
    return NULL;
}

/* A new entry for file_id, or NULL when out of memory (s->mp_read_mu held). */
static struct store_mp_reading *reading_new(store *s, const char *file_id)
{
    if (s->n_mp_reading == s->cap_mp_reading) {
        size_t cap = s->cap_mp_reading ? 2 * s->cap_mp_reading : 8;
        void *grown = realloc(s->mp_reading, cap * sizeof *s->mp_reading);
        if (grown == NULL)
            return NULL;
        s->mp_reading = grown;
        s->cap_mp_reading = cap;
    }
    struct store_mp_reading *e = &s->mp_reading[s->n_mp_reading++];
    memset(e, 0, sizeof *e);
    snprintf(e->file_id, sizeof e->file_id, "%s", file_id);
    return e;
}

/* Releases file_id's parts outside the lock (s->mp_read_mu held on entry
 * and on return): e is marked releasing meanwhile, so that no reader
 * starts on rows being deleted, and removed after. The release is a ledger
 * transaction and an unlink per part, too long to hold up every other
 * multipart object's readers. */
static void release_unlocked(store *s, struct store_mp_reading *e)
{
    char file_id[LEDGER_FILE_ID_MAX + 1];
    snprintf(file_id, sizeof file_id, "%s", e->file_id);
    e->releasing = true;
    pthread_mutex_unlock(&s->mp_read_mu);
    release_parts(s, file_id);
    pthread_mutex_lock(&s->mp_read_mu);
    e = reading_find(s, file_id); /* the array may have moved */
    *e = s->mp_reading[--s->n_mp_reading];
}

/* Counts a reader of file_id: FERRY_OK, FERRY_ERR_NOT_FOUND when its parts
 * are being released (the object is gone), FERRY_ERR_NOMEM. */
static ferry_err reading_add(store *s, const char *file_id)
{
    ferry_err err = FERRY_OK;
    pthread_mutex_lock(&s->mp_read_mu);
    struct store_mp_reading *e = reading_find(s, file_id);
    if (e == NULL && (e = reading_new(s, file_id)) == NULL)
        err = FERRY_ERR_NOMEM;
    else if (e->releasing)
        err = FERRY_ERR_NOT_FOUND;
    else
        e->readers++;
    pthread_mutex_unlock(&s->mp_read_mu);
    return err;
}

/* A reader of file_id is done; its parts are released if it was the last
 * and the object is gone. */
static void reading_drop(store *s, const char *file_id)
{
    pthread_mutex_lock(&s->mp_read_mu);
    struct store_mp_reading *e = reading_find(s, file_id);
    if (e != NULL && --e->readers == 0) {
        if (e->forgotten)
            release_unlocked(s, e);
        else
            *e = s->mp_reading[--s->n_mp_reading];
    }
    pthread_mutex_unlock(&s->mp_read_mu);
}

struct store_mp_data {
    store *s;
    char key[LEDGER_OBJECT_KEY_MAX + 1];  /* for the log */
    char file_id[LEDGER_FILE_ID_MAX + 1]; /* the object's ("m..."), d counted as its reader */
    mp_piece *p;
    size_t n, cap;
    bool nomem; /* collect_piece ran out of memory */
    uint64_t resp_first; /* a GET response: its first byte in the object */
    size_t last;         /* the last part the reads may reach */
    size_t open_from;    /* the parts before it are closed */
};

static int collect_piece(const ledger_part *p, void *arg)
{
    store_mp_data *d = arg;
    uint64_t start = d->n > 0 ? d->p[d->n - 1].start + d->p[d->n - 1].size : 0;
    if (d->n == d->cap) {
        size_t cap = d->cap ? 2 * d->cap : 16;
        void *grown = realloc(d->p, cap * sizeof *d->p);
        if (grown == NULL) {
            d->nomem = true;
            return 1;
        }
        d->p = grown;
        d->cap = cap;
    }
    mp_piece *q = &d->p[d->n++];
    memset(q, 0, sizeof *q);
    snprintf(q->data_id, sizeof q->data_id, "%s", p->file_id);
    q->start = start;
    q->size = p->size;
    q->fd = -1;
    return 0;
}

static void piece_close(store_mp_data *d, mp_piece *q)
{
    if (q->fd < 0)
        return;
    close(q->fd);
    q->fd = -1;
    store_fs_read_done(&d->s->fs, q->data_id);
}

void store_mp_data_free(store_mp_data *d)
{
    if (d == NULL)
        return;
    for (size_t i = 0; i < d->n; i++)
        piece_close(d, &d->p[i]);
    reading_drop(d->s, d->file_id);
    free(d->p);
    free(d);
}

/* Opens the parts [from, to) that are not open yet (their data stays while
 * d is counted as a reader of the object; a packed part's pack counts it
 * too, as for an object of one piece: store_fs_open_data). */
static ferry_err pieces_open(store_mp_data *d, size_t from, size_t to)
{
    store *s = d->s;
    ferry_err e = FERRY_OK;
    struct stat st;
    for (size_t i = from; i < to && e == FERRY_OK; i++) {
        mp_piece *q = &d->p[i];
        if (q->fd >= 0)
            continue;
        e = store_fs_open_data(&s->fs, q->data_id, &q->fd, &q->base);
        if (e != FERRY_OK) {
            /* Counted as a reader, d found the part rows: their data is
             * there until it is done, so missing data is lost data, not an
             * object deleted meanwhile. */
            log_error("store.part_data_missing", "key=\"%s\" file_id=%s part=%s error=%s",
                      d->key, d->file_id, q->data_id, ferry_err_str(e));
            q->fd = -1;
            e = FERRY_ERR_IO;
        } else if (fstat(q->fd, &st) != 0 || (uint64_t)st.st_size < q->base + q->size) {
            piece_close(d, q);
            e = FERRY_ERR_IO;
        }
    }
    return e;
}

/* The part holding byte off of the object (off < the object's size). */
static size_t piece_at(const store_mp_data *d, uint64_t off)
{
    size_t lo = 0, hi = d->n;
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (d->p[mid].start <= off)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

ferry_err store_mp_data_open(store *s, const ledger_object *o, uint64_t first, uint64_t length,
                             store_mp_data **out)
{
    store_mp_data *d = calloc(1, sizeof *d);
    uint64_t total;
    ledger *l;
    ferry_err e;
    if (d == NULL)
        return FERRY_ERR_NOMEM;
    d->s = s;
    snprintf(d->key, sizeof d->key, "%s", o->key);
    snprintf(d->file_id, sizeof d->file_id, "%s", o->file_id);
    if ((e = reading_add(s, d->file_id)) != FERRY_OK) {
        free(d);
        return e;
    }
    l = store_pool_take(s);
    e = ledger_object_parts(l, o->file_id, collect_piece, d);
    store_pool_give(s, l);
    if (d->nomem)
        e = FERRY_ERR_NOMEM;
    total = d->n > 0 ? d->p[d->n - 1].start + d->p[d->n - 1].size : 0;
    if (e == FERRY_OK && d->n == 0) {
        e = FERRY_ERR_NOT_FOUND; /* released: deleted or replaced since its row was read */
    } else if (e == FERRY_OK && total != o->size) {
        log_error("store.parts_mismatch",
                  "key=\"%s\" file_id=%s parts=%zu bytes=%" PRIu64 " size=%" PRIu64, o->key,
                  o->file_id, d->n, total, o->size);
        e = FERRY_ERR_IO;
    }
    if (e == FERRY_OK && length > 0) {
        size_t i = piece_at(d, first);
        d->last = piece_at(d, first + length - 1);
        e = pieces_open(d, i, d->last + 1 - i > MP_OPEN_AHEAD ? i + MP_OPEN_AHEAD : d->last + 1);
    }
    if (e != FERRY_OK) {
        store_mp_data_free(d);
        return e;
    }
    *out = d;
    return FERRY_OK;
}

ssize_t store_mp_data_read(store_mp_data *d, void *buf, size_t len, uint64_t off)
{
    size_t i;
    mp_piece *q;
    uint64_t in;
    ssize_t k;
    if (d->n == 0 || off >= d->p[d->n - 1].start + d->p[d->n - 1].size)
        return 0;
    i = piece_at(d, off);
    q = &d->p[i];
    /* The parts before this one are done with (reads go forward), all of
     * them: a ranged copy's first read may start past parts opened for the
     * whole object. */
    for (; d->open_from < i; d->open_from++)
        piece_close(d, &d->p[d->open_from]);
    if (q->fd < 0) {
        size_t end = d->last >= i ? d->last + 1 : i + 1;
        ferry_err e = pieces_open(d, i, end - i > MP_OPEN_AHEAD ? i + MP_OPEN_AHEAD : end);
        if (e != FERRY_OK) {
            errno = EIO;
            return -1;
        }
    }
    in = off - q->start;
    if (len > q->size - in)
        len = (size_t)(q->size - in);
    do
        k = pread(q->fd, buf, len, (off_t)(q->base + in));
    while (k < 0 && errno == EINTR);
    if (k == 0 && len > 0) {
        errno = EIO; /* the part's data is shorter than its record */
        return -1;
    }
    return k;
}

/* Copies n bytes, from offset first of an object made of its parts (d) or
 * of a file (fd, its first byte at base), to out (from its offset 0) with
 * their MD5 into md5, handing them to the disk on the way (the flush then
 * waits for the tail only); false with errno set: ECANCELED once *abort is
 * set, ENOMEM, EIO for a source shorter than its record, or the error. */
static bool copy_range(store_mp_data *d, int fd, uint64_t base, uint64_t first, uint64_t n,
                       store_fs_slot *out, const atomic_bool *abort, unsigned char md5[16])
{
    unsigned char *buf = malloc(MP_COPY_BLOCK);
    uint64_t done = 0, wb_start = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned int mlen = 0;
    bool ok = buf != NULL && ctx != NULL && EVP_DigestInit_ex(ctx, EVP_md5(), NULL) == 1;
    if (!ok)
        errno = ENOMEM;
    while (ok && done < n) {
        size_t want = n - done < MP_COPY_BLOCK ? (size_t)(n - done) : MP_COPY_BLOCK;
        ssize_t k;
        if (atomic_load(abort)) {
            errno = ECANCELED;
            ok = false;
            break;
        }
        k = d != NULL ? store_mp_data_read(d, buf, want, first + done)
                      : pread(fd, buf, want, (off_t)(base + first + done));
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            if (k == 0)
                errno = EIO; /* the source is shorter than its record */
            ok = false;
            break;
        }
        ok = store_fs_slot_write(out, done, buf, (size_t)k) == FERRY_OK &&
             EVP_DigestUpdate(ctx, buf, (size_t)k) == 1;
        done += (uint64_t)k;
        if (ok && done - wb_start >= MP_WRITEBACK) {
            (void)sync_file_range(out->fd, (off_t)(out->base + wb_start), (off_t)(done - wb_start),
                                  SYNC_FILE_RANGE_WRITE);
            wb_start = done;
        }
    }
    if (ok)
        ok = EVP_DigestFinal_ex(ctx, md5, &mlen) == 1;
    EVP_MD_CTX_free(ctx);
    free(buf);
    return ok;
}

bool store_mp_data_copy(store_mp_data *d, uint64_t first, uint64_t n, store_fs_slot *out,
                        const atomic_bool *abort, unsigned char md5[16])
{
    return copy_range(d, -1, 0, first, n, out, abort, md5);
}

/* libmicrohttpd asks for the response's bytes from pos on. */
static ssize_t data_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    store_mp_data *d = cls;
    ssize_t k = store_mp_data_read(d, buf, max, d->resp_first + pos);
    if (k <= 0) {
        log_error("store.parts_read_failed",
                  "key=\"%s\" file_id=%s offset=%" PRIu64 " error=\"%s\"", d->key, d->file_id,
                  d->resp_first + pos, k == 0 ? "short" : strerror(errno));
        return MHD_CONTENT_READER_END_WITH_ERROR;
    }
    return k;
}

static void data_reader_free(void *cls)
{
    store_mp_data_free(cls);
}

struct MHD_Response *store_mp_data_response(store_mp_data *d, uint64_t first, uint64_t length)
{
    struct MHD_Response *resp;
    d->resp_first = first;
    resp = MHD_create_response_from_callback(length, 256u << 10, data_reader, d, data_reader_free);
    if (resp == NULL)
        store_mp_data_free(d);
    return resp;
}

/* The ledger stopped naming the data of a part of a deleted or replaced
 * object (its row released after the commit): removed like an object's. */
static void remove_piece(const char *data_id, void *arg)
{
    store_fs_remove_object(arg, data_id);
}

/* Releases file_id's part rows and removes their data (no reader may
 * start meanwhile: see release_unlocked). */
static void release_parts(store *s, const char *file_id)
{
    uint64_t n = 0;
    ledger *l = store_pool_take(s);
    ferry_err e = ledger_object_parts_release(l, file_id, remove_piece, &s->fs, &n);
    store_pool_give(s, l);
    /* Not released: the rows stay, and the start-up sweep releases them. */
    if (e != FERRY_OK)
        log_error("store.parts_release_failed", "file_id=%s error=%s", file_id, ferry_err_str(e));
    store_reclaim_if_due(s);
}

void store_mp_forget(store *s, const char *file_id)
{
    pthread_mutex_lock(&s->mp_read_mu);
    struct store_mp_reading *e = reading_find(s, file_id);
    if (e != NULL)
        e->forgotten = true; /* being read: the last reader releases them */
    else if ((e = reading_new(s, file_id)) != NULL)
        release_unlocked(s, e);
    else
        release_parts(s, file_id); /* no memory for the entry: under the lock */
    pthread_mutex_unlock(&s->mp_read_mu);
}

/* ---------------------------------------------------------------------- */
/* CompleteMultipartUpload                                                  */

static enum MHD_Result begin_complete(req *r, struct MHD_Connection *c, const char *upload_id,
                                      const sigv4_verdict *verdict)
{
    const char *cl = store_header(c, "Content-Length");
    const char *md5 = store_header(c, "Content-MD5");
    uint64_t len = 0;
    if (upload_id == NULL || upload_id[0] == '\0' || strlen(upload_id) > LEDGER_UPLOAD_ID_MAX)
        return no_such_upload(r, c);
    if (cl != NULL && (!parse_uint(cl, 0, UINT64_MAX, &len) || len > STORE_MP_XML_MAX))
        return store_respond_error(r, c, 400, "MalformedXML",
                                   "The part list is larger than the store accepts (2 MiB).");
    /* The part list is checked like any body: Content-MD5 and a signed
     * x-amz-content-sha256, in store_mp_body_done. */
    if (md5 != NULL) {
        if (!store_b64_decode_exact(md5, r->content_md5, 16))
            return store_respond_error(r, c, 400, "InvalidDigest",
                                       "The Content-MD5 you specified was invalid.");
        r->want_md5 = true;
    }
    snprintf(r->payload_sha, sizeof r->payload_sha, "%s", verdict->payload_sha256);
    r->mp = mp_req_new();
    if (r->mp == NULL)
        return store_respond_error(r, c, 500, "InternalError", "out of memory");
    snprintf(r->mp->upload_id, sizeof r->mp->upload_id, "%s", upload_id);
    ferry_buf_init(&r->mp->body, STORE_MP_XML_MAX);
    r->start_ns = ferry_time_mono_ns();
    r->phase = PH_MP;
    store_watch_add(r, c);
    return MHD_YES;
}

void store_mp_body_chunk(req *r, const char *data, size_t len)
{
    struct store_mp_req *m = r->mp;
    r->received += len;
    if (m->body_too_large)
        return;
    if (ferry_buf_append(&m->body, data, len) != FERRY_OK) {
        m->body_too_large = true;
        ferry_buf_cleanup(&m->body);
    }
}

/* Everything completion works on, on the heap (10,000 parts). */
typedef struct complete_state complete_state;
struct complete_state {
    store_mp_part_ref refs[STORE_MP_PARTS_MAX];
    ledger_part *have[STORE_MP_PARTS_MAX + 1]; /* by part number */
    ledger_part *rows;                         /* the upload's parts */
    size_t n_rows;
    ledger_part used[STORE_MP_PARTS_MAX];
    ledger_upload upload;
    ledger_object obj;
    unsigned char buf[MP_COPY_BLOCK];
};

static void complete_state_free(complete_state *cs)
{
    if (cs == NULL)
        return;
    free(cs->rows);
    free(cs);
}

static int collect_part(const ledger_part *p, void *arg)
{
    complete_state *cs = arg;
    if (cs->n_rows == STORE_MP_PARTS_MAX)
        return 1;
    cs->rows[cs->n_rows++] = *p;
    return 0;
}

/* Reads the used parts, in order, to hash them (the SHA-256 of the whole
 * object: the ledger keeps it, and GetObject's clients may check it);
 * false when a part cannot be read in full (*gone: its data is missing). */
static bool hash_parts(req *r, complete_state *cs, size_t n, unsigned char sha[32], bool *gone)
{
    store *s = r->s;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned int slen = 0;
    bool ok = ctx != NULL && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1;
    *gone = false;
    for (size_t i = 0; ok && i < n; i++) {
        int in = -1;
        uint64_t base = 0, pos = 0, left = cs->used[i].size;
        /* A part's data: its own file, or a region of a pack (whose reader
         * count keeps the region's bytes until store_fs_read_done). */
        ferry_err e = store_fs_open_data(&s->fs, cs->used[i].file_id, &in, &base);
        if (e != FERRY_OK) {
            *gone = e == FERRY_ERR_NOT_FOUND;
            ok = false;
            break;
        }
        /* The disk reads ahead while the CPU hashes: the part's first
         * blocks at once, then MP_READ_AHEAD beyond each block read (else
         * it reads, then hashes, in turn: a 1 GiB completion took a median
         * 1.44 s without, 1.11 s with, 4 alternating runs at load 4-7). */
        (void)posix_fadvise(in, (off_t)base, (off_t)left, POSIX_FADV_SEQUENTIAL);
        (void)posix_fadvise(in, (off_t)base, (off_t)(left < MP_READ_AHEAD ? left : MP_READ_AHEAD),
                            POSIX_FADV_WILLNEED);
        while (ok && left > 0) {
            size_t want = left < sizeof cs->buf ? (size_t)left : sizeof cs->buf;
            if (atomic_load(&s->mp_abort)) {
                ok = false; /* the store is stopping: give up, keep the upload */
                break;
            }
            if (left > MP_READ_AHEAD)
                (void)posix_fadvise(in, (off_t)(base + pos + MP_READ_AHEAD), (off_t)want,
                                    POSIX_FADV_WILLNEED);
            ssize_t k = pread(in, cs->buf, want, (off_t)(base + pos));
            if (k < 0 && errno == EINTR)
                continue;
            if (k <= 0) {
                ok = false; /* shorter than its record */
                break;
            }
            ok = EVP_DigestUpdate(ctx, cs->buf, (size_t)k) == 1;
            pos += (uint64_t)k;
            left -= (uint64_t)k;
        }
        close(in);
        store_fs_read_done(&s->fs, cs->used[i].file_id);
    }
    if (ok)
        ok = EVP_DigestFinal_ex(ctx, sha, &slen) == 1;
    EVP_MD_CTX_free(ctx);
    return ok;
}

/* The multipart ETag: the MD5 of the parts' binary MD5s, "-<count>". */
static bool multipart_etag(const complete_state *cs, size_t n, char *out, size_t out_size)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned char md5[16];
    unsigned int mlen = 0;
    char hex[33];
    bool ok = ctx != NULL && EVP_DigestInit_ex(ctx, EVP_md5(), NULL) == 1;
    for (size_t i = 0; ok && i < n; i++) {
        unsigned char bin[16];
        for (size_t j = 0; j < 16; j++) {
            int hi = OPENSSL_hexchar2int((unsigned char)cs->used[i].etag[2 * j]);
            int lo = OPENSSL_hexchar2int((unsigned char)cs->used[i].etag[2 * j + 1]);
            if (hi < 0 || lo < 0)
                ok = false;
            bin[j] = (unsigned char)((hi << 4) | (lo & 0xf));
        }
        if (ok)
            ok = EVP_DigestUpdate(ctx, bin, sizeof bin) == 1;
    }
    if (ok)
        ok = EVP_DigestFinal_ex(ctx, md5, &mlen) == 1;
    EVP_MD_CTX_free(ctx);
    if (!ok)
        return false;
    store_hex(md5, 16, hex);
    snprintf(out, out_size, "%s-%zu", hex, n);
    return true;
}

static enum MHD_Result complete_answer(req *r, struct MHD_Connection *c, const char *etag)
{
    ferry_buf b;
    ferry_err e;
    enum MHD_Result ret;
    ferry_buf_init(&b, 16384);
    e = store_location_xml(&b, r, "CompleteMultipartUploadResult", " xmlns=\"" S3_NS "\"", etag);
    ret = e == FERRY_OK ? store_respond_xml(r, c, 200, &b) : MHD_NO;
    ferry_buf_cleanup(&b);
    return ret;
}

/* Content-MD5 and a signed x-amz-content-sha256 against the part list as
 * received: true when they match (or were not given), else false and the
 * request is answered (*ret). */
static bool body_digests_ok(req *r, struct MHD_Connection *c, const ferry_buf *b,
                            enum MHD_Result *ret)
{
    unsigned char md5[16], sha[32];
    char sha_hex[65];
    const unsigned char *data =
        b->data != NULL ? (const unsigned char *)b->data : (const unsigned char *)"";
    if (r->want_md5 && (EVP_Digest(data, b->len, md5, NULL, EVP_md5(), NULL) != 1 ||
                        CRYPTO_memcmp(md5, r->content_md5, 16) != 0)) {
        *ret = store_respond_error(r, c, 400, "BadDigest",
                                   "The Content-MD5 you specified did not match what we received.");
        return false;
    }
    if (r->payload_sha[0] == '\0')
        return true;
    if (EVP_Digest(data, b->len, sha, NULL, EVP_sha256(), NULL) != 1) {
        *ret = store_respond_error(r, c, 500, "InternalError", "digest failed");
        return false;
    }
    store_hex(sha, 32, sha_hex);
    if (strcmp(r->payload_sha, sha_hex) != 0) {
        *ret = store_respond_error(r, c, 400, "XAmzContentSHA256Mismatch",
                                   "The provided 'x-amz-content-sha256' header does not match "
                                   "what was computed.");
        return false;
    }
    return true;
}

/* The outcome of a completion, answered when the connection is resumed. */
static void set_outcome(struct store_mp_req *m, unsigned status, const char *code, const char *msg)
{
    m->out_status = status;
    m->out_code = code;
    m->out_msg = msg;
}

/* The heavy half of CompleteMultipartUpload, on a thread of its own (or
 * the connection's when none can be started): the listed parts read to
 * compute the object's SHA-256, then ONE ledger transaction records the
 * object, made of the parts' data (already durable: each part was made
 * durable before its row was recorded), and deletes the upload. Nothing is
 * written to the data directory. Writes its outcome to r->mp; never
 * answers (the connection is suspended). */
static void hash_parts_and_record(req *r)
{
    store *s = r->s;
    struct store_mp_req *m = r->mp;
    complete_state *cs = m->cs;
    size_t n = m->n_used;
    char replaced[LEDGER_FILE_ID_MAX + 1] = "";
    unsigned char sha[32];
    bool gone = false;
    ledger *l;
    ferry_err e;

    if (!hash_parts(r, cs, n, sha, &gone)) {
        if (gone) {
            set_outcome(m, 400, "InvalidPart",
                        "A part was removed while the upload was being completed.");
        } else if (atomic_load(&s->mp_abort)) {
            set_outcome(m, 503, "SlowDown", "The store is shutting down; retry.");
        } else {
            log_error("store.multipart_assemble_failed", "request_id=%s error=\"%s\"", r->id,
                      strerror(errno));
            set_outcome(m, 500, "InternalError", "the store could not read the parts");
        }
        return;
    }

    ledger_object *o = &cs->obj;
    snprintf(o->bucket, sizeof o->bucket, "%s", r->t.bucket);
    memcpy(o->key, r->t.key, r->t.key_len + 1);
    /* An id of no file: the object's data is its parts'. */
    if (store_fs_new_parts_id(o->file_id) != FERRY_OK) {
        set_outcome(m, 500, "InternalError", "no random object id");
        return;
    }
    o->size = m->total;
    store_hex(sha, 32, o->sha256);
    snprintf(o->content_type, sizeof o->content_type, "%s", cs->upload.content_type);
    snprintf(o->meta, sizeof o->meta, "%s", cs->upload.meta);
    o->created_at = ferry_time_now();
    if (!multipart_etag(cs, n, o->etag, sizeof o->etag)) {
        set_outcome(m, 500, "InternalError", "digest failed");
        return;
    }
    l = store_pool_take(s);
    e = ledger_upload_complete(l, m->upload_id, cs->used, n, o, o->created_at, replaced,
                               unlink_file, s);
    store_pool_give(s, l);
    if (e != FERRY_OK) {
        if (e == FERRY_ERR_NOT_FOUND)
            set_outcome(m, 404, "NoSuchUpload", NO_SUCH_UPLOAD_MSG);
        else if (e == FERRY_ERR_CONFLICT)
            set_outcome(m, 400, "InvalidPart",
                        "A part was replaced while the upload was being completed.");
        else
            set_outcome(m, 503, "SlowDown", "the ledger is busy; retry");
        return;
    }
    if (replaced[0] != '\0')
        store_forget_data(s, replaced);
    log_info("store.object_stored",
             "request_id=%s method=CompleteMultipartUpload key=\"%s\" size=%" PRIu64
             " sha256=%s etag=%s parts=%zu upload_id=%s",
             r->id, o->key, o->size, o->sha256, o->etag, n, m->upload_id);
    snprintf(m->out_etag, sizeof m->out_etag, "%s", o->etag);
    set_outcome(m, 200, NULL, NULL);
}

/* The whole of a completion's heavy half: its memory and its slot among
 * the 8 go after it; the connection is resumed by the caller. */
static void complete_work(req *r)
{
    hash_parts_and_record(r);
    complete_state_free(r->mp->cs);
    r->mp->cs = NULL;
    atomic_fetch_sub(&r->s->mp_completing, 1);
    r->phase = PH_COMMITTED;
}

static void *long_work_main(void *arg)
{
    req *r = arg;
    store *s = r->s;
    struct MHD_Connection *c = r->conn;
    r->long_work(r);
    store_resume_to_answer(r, c); /* from here c's thread may answer and free r */
    pthread_mutex_lock(&s->mp_mu);
    s->mp_threads--;
    pthread_cond_broadcast(&s->mp_cv);
    pthread_mutex_unlock(&s->mp_mu);
    return NULL;
}

/* Completing an object (its parts read for the SHA-256: 1 GiB ~1 s) or
 * copying an object or a part takes seconds.
 * See store_int.h. */
bool store_run_long_work(req *r, struct MHD_Connection *c, void (*work)(req *r))
{
    store *s = r->s;
    pthread_attr_t attr;
    pthread_t t;
    bool started = false;
    bool suspended = false;

    r->conn = c;
    r->phase = PH_COMMITTING;
    r->long_work = work;
    pthread_mutex_lock(&s->mp_mu);
    if (!atomic_load(&s->mp_abort) && pthread_attr_init(&attr) == 0) {
        (void)pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        s->mp_threads++;
        MHD_suspend_connection(c);
        suspended = true;
        started = pthread_create(&t, &attr, long_work_main, r) == 0;
        if (!started)
            s->mp_threads--;
        pthread_attr_destroy(&attr);
    }
    pthread_mutex_unlock(&s->mp_mu);
    if (started)
        return true;
    /* No thread: on this one; a suspended connection is resumed to be
     * answered. */
    work(r);
    if (suspended)
        store_resume_to_answer(r, c);
    return suspended;
}

enum MHD_Result store_mp_body_done(req *r, struct MHD_Connection *c)
{
    store *s = r->s;
    struct store_mp_req *m = r->mp;
    complete_state *cs = NULL;
    const char *why = NULL;
    uint64_t total = 0, parts_bytes = 0;
    size_t n = 0;
    ledger *l;
    ferry_err e;
    enum MHD_Result ret = MHD_NO;

    if (m->completing) {
        /* Resumed after the completion (PH_COMMITTED): its outcome. */
        if (m->out_status != 200)
            return store_respond_error(r, c, m->out_status, m->out_code, m->out_msg);
        return complete_answer(r, c, m->out_etag);
    }
    if (m->body_too_large)
        return store_respond_error(r, c, 400, "MalformedXML",
                                   "The part list is larger than the store accepts (2 MiB).");
    if (!body_digests_ok(r, c, &m->body, &ret))
        return ret;
    /* Completing is disk and hash work proportional to the object: a few
     * at a time. */
    if (atomic_fetch_add(&s->mp_completing, 1) >= STORE_MP_COMPLETES_MAX) {
        atomic_fetch_sub(&s->mp_completing, 1);
        return store_respond_error(r, c, 503, "SlowDown",
                                   "Too many multipart uploads are being completed; retry.");
    }
    cs = calloc(1, sizeof *cs);
    if (cs == NULL) {
        ret = store_respond_error(r, c, 500, "InternalError", "out of memory");
        goto out;
    }
    if (store_mp_parse_complete(m->body.data != NULL ? m->body.data : "", m->body.len, cs->refs,
                                STORE_MP_PARTS_MAX, &n, &why) != FERRY_OK) {
        ret = store_respond_error(r, c, 400, "MalformedXML", why);
        goto out;
    }
    for (size_t i = 1; i < n; i++) {
        if (cs->refs[i].number <= cs->refs[i - 1].number) {
            ret = store_respond_error(r, c, 400, "InvalidPartOrder",
                                      "The list of parts was not in ascending order. Parts must "
                                      "be ordered by part number.");
            goto out;
        }
    }
    if (!upload_of(r, c, m->upload_id, &cs->upload, &parts_bytes, &ret))
        goto out;
    cs->rows = calloc(STORE_MP_PARTS_MAX, sizeof *cs->rows);
    if (cs->rows == NULL) {
        ret = store_respond_error(r, c, 500, "InternalError", "out of memory");
        goto out;
    }
    l = store_pool_take(s);
    e = ledger_upload_parts(l, m->upload_id, 0, STORE_MP_PARTS_MAX, collect_part, cs);
    store_pool_give(s, l);
    if (e == FERRY_ERR_NOT_FOUND) {
        ret = no_such_upload(r, c);
        goto out;
    }
    if (e != FERRY_OK) {
        ret = store_respond_error(r, c, 503, "SlowDown", "the ledger is busy; retry");
        goto out;
    }
    for (size_t i = 0; i < cs->n_rows; i++)
        cs->have[cs->rows[i].number] = &cs->rows[i];
    for (size_t i = 0; i < n; i++) {
        const store_mp_part_ref *ref = &cs->refs[i];
        const ledger_part *p =
            ref->number >= 1 && ref->number <= STORE_MP_PARTS_MAX ? cs->have[ref->number] : NULL;
        if (p == NULL || !ref->etag_ok || strcmp(p->etag, ref->etag) != 0) {
            ret = store_respond_error(r, c, 400, "InvalidPart",
                                      "One or more of the specified parts could not be found. "
                                      "The part may not have been uploaded, or the specified "
                                      "entity tag may not have matched the part's entity tag.");
            goto out;
        }
        cs->used[i] = *p;
    }
    for (size_t i = 0; i < n; i++) {
        if (i + 1 < n && cs->used[i].size < STORE_MP_PART_MIN) {
            ret = store_respond_error(r, c, 400, "EntityTooSmall",
                                      "Your proposed upload is smaller than the minimum allowed "
                                      "object size (every part but the last must be at least "
                                      "5 MiB).");
            goto out;
        }
        total += cs->used[i].size;
    }
    if (total > s->max_object_size) {
        ret = store_respond_error(r, c, 400, "EntityTooLarge",
                                  "Your proposed upload exceeds the maximum allowed object size.");
        goto out;
    }

    m->cs = cs;
    m->n_used = n;
    m->total = total;
    m->completing = true;
    cs = NULL; /* r->mp owns it now */
    if (store_run_long_work(r, c, complete_work))
        return MHD_YES;
    return store_mp_body_done(r, c);
out:
    complete_state_free(cs);
    atomic_fetch_sub(&s->mp_completing, 1);
    return ret;
}

/* ---------------------------------------------------------------------- */
/* AbortMultipartUpload, ListParts, ListMultipartUploads                    */

static enum MHD_Result abort_upload(req *r, struct MHD_Connection *c, const char *upload_id)
{
    store *s = r->s;
    ledger_upload *u = calloc(1, sizeof *u);
    enum MHD_Result ret = MHD_NO;
    ledger *l;
    ferry_err e;
    if (u == NULL)
        return store_respond_error(r, c, 500, "InternalError", "out of memory");
    if (!upload_of(r, c, upload_id, u, NULL, &ret))
        goto out;
    l = store_pool_take(s);
    e = ledger_upload_abort(l, u->id, unlink_file, s);
    store_pool_give(s, l);
    if (e == FERRY_ERR_NOT_FOUND) {
        ret = no_such_upload(r, c);
        goto out;
    }
    if (e != FERRY_OK) {
        ret = store_respond_error(r, c, 503, "SlowDown", "the ledger is busy; retry");
        goto out;
    }
    log_info("store.multipart_aborted", "request_id=%s key=\"%s\" upload_id=%s", r->id, r->t.key,
             u->id);
    ret = store_queue(r, c, 204, store_empty_response());
out:
    free(u);
    return ret;
}

typedef struct list_parts_state {
    ferry_buf *b;
    size_t max, count;
    unsigned last;
    bool truncated;
    ferry_err err;
} list_parts_state;

static int list_part_row(const ledger_part *p, void *arg)
{
    list_parts_state *ls = arg;
    char iso[STORE_ISO_TIME_LEN + 1];
    if (ls->count == ls->max) {
        ls->truncated = true;
        return 1;
    }
    store_iso_time(p->created_at, iso);
    ls->err = ferry_buf_appendf(ls->b,
                                "<Part><PartNumber>%u</PartNumber><LastModified>%s</LastModified>"
                                "<ETag>&quot;%s&quot;</ETag><Size>%" PRIu64 "</Size></Part>",
                                p->number, iso, p->etag, p->size);
    ls->count++;
    ls->last = p->number;
    return ls->err != FERRY_OK;
}

static enum MHD_Result list_parts(req *r, struct MHD_Connection *c, const sigv4_query *q)
{
    store *s = r->s;
    ledger_upload *u = calloc(1, sizeof *u);
    list_parts_state ls;
    ferry_buf parts, b;
    uint64_t max = MP_LIST_MAX, marker = 0;
    enum MHD_Result ret = MHD_NO;
    ledger *l;
    ferry_err e;
    const char *v;

    ferry_buf_init(&parts, 4u << 20);
    ferry_buf_init(&b, 4u << 20);
    memset(&ls, 0, sizeof ls);
    if (u == NULL) {
        ret = store_respond_error(r, c, 500, "InternalError", "out of memory");
        goto out;
    }
    v = qparam(q, "max-parts");
    if (v != NULL && !parse_uint(v, 0, UINT64_MAX / 4, &max)) {
        ret = store_respond_error(r, c, 400, "InvalidArgument", "max-parts is not a number >= 0");
        goto out;
    }
    if (max > MP_LIST_MAX)
        max = MP_LIST_MAX;
    v = qparam(q, "part-number-marker");
    if (v != NULL && !parse_uint(v, 0, STORE_MP_PARTS_MAX, &marker)) {
        ret = store_respond_error(r, c, 400, "InvalidArgument",
                                  "part-number-marker is not a part number");
        goto out;
    }
    if (!upload_of(r, c, qparam(q, "uploadId"), u, NULL, &ret))
        goto out;
    ls.b = &parts;
    ls.max = (size_t)max;
    ls.last = (unsigned)marker;
    l = store_pool_take(s);
    e = ledger_upload_parts(l, u->id, (unsigned)marker, (size_t)max + 1, list_part_row, &ls);
    store_pool_give(s, l);
    if (e == FERRY_OK)
        e = ls.err;
    if (e == FERRY_ERR_NOT_FOUND) {
        ret = no_such_upload(r, c);
        goto out;
    }
    if (e != FERRY_OK) {
        ret = store_respond_error(r, c, 503, "SlowDown", "the listing could not be made");
        goto out;
    }
    e = ferry_buf_append_str(&b, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                                 "<ListPartsResult xmlns=\"" S3_NS "\"><Bucket>");
    if (e == FERRY_OK)
        e = store_xml_escape(&b, r->t.bucket, strlen(r->t.bucket));
    if (e == FERRY_OK)
        e = ferry_buf_append_str(&b, "</Bucket><Key>");
    if (e == FERRY_OK)
        e = store_xml_escape(&b, r->t.key, r->t.key_len);
    if (e == FERRY_OK)
        e = ferry_buf_appendf(&b,
                              "</Key><UploadId>%s</UploadId><PartNumberMarker>%" PRIu64
                              "</PartNumberMarker><NextPartNumberMarker>%u</NextPartNumberMarker>"
                              "<MaxParts>%" PRIu64 "</MaxParts><IsTruncated>%s</IsTruncated>"
                              "<StorageClass>STANDARD</StorageClass>",
                              u->id, marker, ls.last, max, ls.truncated ? "true" : "false");
    if (e == FERRY_OK)
        e = ferry_buf_append(&b, parts.data != NULL ? parts.data : "", parts.len);
    if (e == FERRY_OK)
        e = ferry_buf_append_str(&b, "</ListPartsResult>");
    ret = e == FERRY_OK
              ? store_respond_xml(r, c, 200, &b)
              : store_respond_error(r, c, 500, "InternalError", "the listing is too large");
out:
    ferry_buf_cleanup(&parts);
    ferry_buf_cleanup(&b);
    free(u);
    return ret;
}

typedef struct list_uploads_state {
    ferry_buf *b;
    ferry_buf *prefixes; /* CommonPrefixes, after the uploads */
    bool url;
    size_t prefix_len;
    const char *delim;
    size_t delim_len;
    size_t max, count;
    bool truncated;
    bool restart; /* a common prefix was rolled up: walk on after it */
    /* Where the walk goes on: after (key, id) */
    char key[LEDGER_OBJECT_KEY_MAX + 2];
    char id[LEDGER_UPLOAD_ID_MAX + 1];
    char next_key[LEDGER_OBJECT_KEY_MAX + 1];
    char next_id[LEDGER_UPLOAD_ID_MAX + 1];
    ferry_err err;
} list_uploads_state;

/* The length of the common prefix key rolls up into (the listing's prefix
 * and the key up to and including the first delimiter after it), or 0. */
static size_t common_prefix_len(const list_uploads_state *ls, const char *key, size_t klen)
{
    const char *hit;
    if (ls->delim_len == 0 || klen <= ls->prefix_len)
        return 0;
    hit = memmem(key + ls->prefix_len, klen - ls->prefix_len, ls->delim, ls->delim_len);
    return hit != NULL ? (size_t)(hit - key) + ls->delim_len : 0;
}

static ferry_err append_key(ferry_buf *b, bool url, const char *k, size_t len)
{
    return url ? store_url_encode(b, k, len) : store_xml_escape(b, k, len);
}

static int list_upload_row(const ledger_upload *u, void *arg)
{
    list_uploads_state *ls = arg;
    size_t klen = strlen(u->key);
    size_t cp_len = common_prefix_len(ls, u->key, klen);
    char iso[STORE_ISO_TIME_LEN + 1];
    if (ls->count == ls->max) {
        ls->truncated = true;
        return 1;
    }
    if (cp_len > 0) {
        /* One CommonPrefixes entry for every upload under it; the walk
         * goes on after it (keys are UTF-8, so none has a 0xFF byte and
         * the prefix followed by 0xFF sorts after all of them). */
        ls->err = ferry_buf_append_str(ls->prefixes, "<CommonPrefixes><Prefix>");
        if (ls->err == FERRY_OK)
            ls->err = append_key(ls->prefixes, ls->url, u->key, cp_len);
        if (ls->err == FERRY_OK)
            ls->err = ferry_buf_append_str(ls->prefixes, "</Prefix></CommonPrefixes>");
        ls->count++;
        memcpy(ls->next_key, u->key, cp_len);
        ls->next_key[cp_len] = '\0';
        ls->next_id[0] = '\0';
        memcpy(ls->key, u->key, cp_len);
        ls->key[cp_len] = (char)0xFF;
        ls->key[cp_len + 1] = '\0';
        ls->id[0] = '\0';
        ls->restart = true;
        return 1;
    }
    store_iso_time(u->initiated_at, iso);
    ls->err = ferry_buf_append_str(ls->b, "<Upload><Key>");
    if (ls->err == FERRY_OK)
        ls->err = append_key(ls->b, ls->url, u->key, strlen(u->key));
    if (ls->err == FERRY_OK)
        ls->err = ferry_buf_appendf(ls->b,
                                    "</Key><UploadId>%s</UploadId><StorageClass>STANDARD"
                                    "</StorageClass><Initiated>%s</Initiated></Upload>",
                                    u->id, iso);
    ls->count++;
    snprintf(ls->next_key, sizeof ls->next_key, "%s", u->key);
    snprintf(ls->next_id, sizeof ls->next_id, "%s", u->id);
    snprintf(ls->key, sizeof ls->key, "%s", u->key);
    snprintf(ls->id, sizeof ls->id, "%s", u->id);
    return ls->err != FERRY_OK;
}

static enum MHD_Result list_uploads(req *r, struct MHD_Connection *c, const sigv4_query *q)
{
    store *s = r->s;
    list_uploads_state *ls = calloc(1, sizeof *ls);
    ferry_buf ups, cps, b;
    uint64_t max = MP_LIST_MAX;
    const char *prefix = qparam(q, "prefix");
    const char *km = qparam(q, "key-marker");
    const char *im = qparam(q, "upload-id-marker");
    const char *enc = qparam(q, "encoding-type");
    const char *delim = qparam(q, "delimiter");
    const char *v;
    enum MHD_Result ret = MHD_NO;
    ledger *l;
    ferry_err e;

    ferry_buf_init(&ups, 4u << 20);
    ferry_buf_init(&cps, 4u << 20);
    ferry_buf_init(&b, 8u << 20);
    if (ls == NULL) {
        ret = store_respond_error(r, c, 500, "InternalError", "out of memory");
        goto out;
    }
    v = qparam(q, "max-uploads");
    if (v != NULL && !parse_uint(v, 0, UINT64_MAX / 4, &max)) {
        ret = store_respond_error(r, c, 400, "InvalidArgument", "max-uploads is not a number >= 0");
        goto out;
    }
    if (max > MP_LIST_MAX)
        max = MP_LIST_MAX;
    if (enc != NULL && strcmp(enc, "url") != 0) {
        ret =
            store_respond_error(r, c, 400, "InvalidArgument", "Invalid Encoding Method specified");
        goto out;
    }
    if ((prefix != NULL && strlen(prefix) > LEDGER_OBJECT_KEY_MAX) ||
        (km != NULL && strlen(km) > LEDGER_OBJECT_KEY_MAX) ||
        (im != NULL && strlen(im) > LEDGER_UPLOAD_ID_MAX) ||
        (delim != NULL && strlen(delim) > 64)) {
        ret = store_respond_error(r, c, 400, "InvalidArgument",
                                  "prefix, delimiter or marker too long");
        goto out;
    }
    ls->b = &ups;
    ls->prefixes = &cps;
    ls->url = enc != NULL;
    ls->max = (size_t)max;
    ls->prefix_len = prefix != NULL ? strlen(prefix) : 0;
    ls->delim = delim != NULL ? delim : "";
    ls->delim_len = strlen(ls->delim);
    snprintf(ls->key, sizeof ls->key, "%s", km != NULL ? km : "");
    /* Without an upload-id-marker, S3 lists the uploads of keys after
     * key-marker: every id sorts after the one below. */
    snprintf(ls->id, sizeof ls->id, "%s",
             im != NULL && im[0] != '\0' ? im : (km != NULL && km[0] != '\0' ? "\x7f" : ""));
    /* A key-marker that is a common prefix (the NextKeyMarker of a page
     * that ended on one) goes on after every key under it, which that
     * page rolled up already. */
    if (km != NULL && km[0] != '\0' && common_prefix_len(ls, km, strlen(km)) == strlen(km)) {
        size_t kl = strlen(km);
        ls->key[kl] = (char)0xFF;
        ls->key[kl + 1] = '\0';
        ls->id[0] = '\0';
    }
    l = store_pool_take(s);
    do {
        ls->restart = false;
        e = ledger_upload_list(l, s->bucket, prefix, ls->key, ls->id, ls->max - ls->count + 1,
                               list_upload_row, ls);
        if (e == FERRY_OK)
            e = ls->err;
    } while (e == FERRY_OK && ls->restart);
    store_pool_give(s, l);
    if (e != FERRY_OK) {
        ret = store_respond_error(r, c, 503, "SlowDown", "the listing could not be made");
        goto out;
    }
    e = ferry_buf_append_str(&b, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                                 "<ListMultipartUploadsResult xmlns=\"" S3_NS "\"><Bucket>");
    if (e == FERRY_OK)
        e = store_xml_escape(&b, s->bucket, strlen(s->bucket));
    if (e == FERRY_OK)
        e = ferry_buf_append_str(&b, "</Bucket><KeyMarker>");
    if (e == FERRY_OK && km != NULL)
        e = append_key(&b, ls->url, km, strlen(km));
    if (e == FERRY_OK)
        e = ferry_buf_append_str(&b, "</KeyMarker><UploadIdMarker>");
    if (e == FERRY_OK && im != NULL)
        e = store_xml_escape(&b, im, strlen(im));
    if (e == FERRY_OK)
        e = ferry_buf_append_str(&b, "</UploadIdMarker>");
    if (e == FERRY_OK && ls->truncated) {
        e = ferry_buf_append_str(&b, "<NextKeyMarker>");
        if (e == FERRY_OK)
            e = append_key(&b, ls->url, ls->next_key, strlen(ls->next_key));
        if (e == FERRY_OK)
            e = ferry_buf_appendf(&b, "</NextKeyMarker><NextUploadIdMarker>%s</NextUploadIdMarker>",
                                  ls->next_id);
    }
    if (e == FERRY_OK && ls->delim_len > 0) {
        e = ferry_buf_append_str(&b, "<Delimiter>");
        if (e == FERRY_OK)
            e = append_key(&b, ls->url, ls->delim, ls->delim_len);
        if (e == FERRY_OK)
            e = ferry_buf_append_str(&b, "</Delimiter>");
    }
    if (e == FERRY_OK && prefix != NULL) {
        e = ferry_buf_append_str(&b, "<Prefix>");
        if (e == FERRY_OK)
            e = append_key(&b, ls->url, prefix, strlen(prefix));
        if (e == FERRY_OK)
            e = ferry_buf_append_str(&b, "</Prefix>");
    }
    if (e == FERRY_OK && ls->url)
        e = ferry_buf_append_str(&b, "<EncodingType>url</EncodingType>");
    if (e == FERRY_OK)
        e = ferry_buf_appendf(&b,
                              "<MaxUploads>%" PRIu64 "</MaxUploads><IsTruncated>%s</IsTruncated>",
                              max, ls->truncated ? "true" : "false");
    if (e == FERRY_OK)
        e = ferry_buf_append(&b, ups.data != NULL ? ups.data : "", ups.len);
    if (e == FERRY_OK)
        e = ferry_buf_append(&b, cps.data != NULL ? cps.data : "", cps.len);
    if (e == FERRY_OK)
        e = ferry_buf_append_str(&b, "</ListMultipartUploadsResult>");
    ret = e == FERRY_OK
              ? store_respond_xml(r, c, 200, &b)
              : store_respond_error(r, c, 500, "InternalError", "the listing is too large");
out:
    ferry_buf_cleanup(&ups);
    ferry_buf_cleanup(&cps);
    ferry_buf_cleanup(&b);
    free(ls);
    return ret;
}

/* ---------------------------------------------------------------------- */
/* Dispatch                                                                 */

enum MHD_Result store_mp_begin(req *r, struct MHD_Connection *c, const header_list *h,
                               const sigv4_verdict *verdict)
{
    const char *qs = strchr(r->uri, '?');
    const char *method = r->method;
    bool uploads, upload_id, part;
    sigv4_query q;
    enum MHD_Result ret;

    memset(&q, 0, sizeof q);
    if (sigv4_parse_query(qs != NULL ? qs + 1 : "", &q) != SIGV4_R_OK)
        return store_respond_error(r, c, 400, "InvalidArgument", "malformed query string");
    uploads = qparam(&q, "uploads") != NULL;
    upload_id = qparam(&q, "uploadId") != NULL;
    part = qparam(&q, "partNumber") != NULL;
    if (r->t.key_len == 0) {
        if (strcmp(method, "GET") == 0 && uploads && !upload_id && !part)
            ret = list_uploads(r, c, &q);
        else
            ret = store_respond_error(r, c, 405, "MethodNotAllowed",
                                      "The specified method is not allowed against this "
                                      "resource.");
    } else if (strcmp(method, "POST") == 0 && uploads && !upload_id && !part) {
        ret = create_upload(r, c, h);
    } else if (strcmp(method, "PUT") == 0 && upload_id && part && !uploads) {
        ret = begin_part(r, c, h, verdict, &q);
    } else if (strcmp(method, "POST") == 0 && upload_id && !uploads && !part) {
        ret = begin_complete(r, c, qparam(&q, "uploadId"), verdict);
    } else if (strcmp(method, "DELETE") == 0 && upload_id && !uploads && !part) {
        ret = abort_upload(r, c, qparam(&q, "uploadId"));
    } else if (strcmp(method, "GET") == 0 && upload_id && !uploads && !part) {
        ret = list_parts(r, c, &q);
    } else if ((strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0) && part && !upload_id &&
               !uploads) {
        /* GetObject/HeadObject of one part of a completed object. */
        ret = store_get_object(r, c, strcmp(method, "HEAD") == 0, qparam(&q, "partNumber"));
    } else {
        /* PUT ?partNumber without uploadId, and the like. */
        ret = store_respond_error(r, c, 501, "NotImplemented",
                                  "This multipart operation is not supported.");
    }
    sigv4_query_cleanup(&q);
    return ret;
}
