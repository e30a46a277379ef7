/*
 * store_multipart.h - S3 multipart upload in the embedded store, for the
 * operator credential: CreateMultipartUpload, UploadPart,
 * CompleteMultipartUpload, AbortMultipartUpload, ListParts and
 * ListMultipartUploads (docs/store.md, "Multipart upload").
 *
 * What it is for: clients that switch to multipart for large files (the
 * AWS CLI at 8 MB, boto3's upload_file) work against the store unchanged.
 * Devices never get it: grants stay single-use, single-request uploads, so
 * every multipart call signed with the device-grant credential is refused
 * (store.c, before any of this runs).
 *
 * Invariants:
 * - A part is written like a PutObject body (streamed to a data file with
 *   its MD5 and SHA-256, fdatasync, directory fsync, by a committer thread)
 *   and becomes a part only when its ledger row is committed; the upload's
 *   rows name the part files so the start-up sweep keeps them. A part
 *   copied from an object (UploadPartCopy) is read from the object's data,
 *   hashed (its ETag is its MD5), flushed and recorded the same way, on a
 *   thread of its own with the connection suspended.
 * - Completion copies the listed parts into a new data file while computing
 *   the SHA-256 of the whole object (on a thread of its own, the connection
 *   suspended), makes it durable, and then records the object (with its
 *   part boundaries) and deletes the upload and its parts in ONE ledger
 *   transaction:
 *   a crash at any point leaves the whole object or none of it (and then the
 *   upload as it was). Part files the ledger stopped naming are unlinked
 *   after the commit; whatever a crash leaves behind, the sweep removes.
 * - Aborted and expired uploads leave nothing: their rows go in one
 *   transaction, their files after it.
 * - The CompleteMultipartUpload body is untrusted: it is collected up to
 *   STORE_MP_XML_MAX bytes and parsed by store_mp_parse_complete(), a
 *   strict, bounded parser on expat (fuzzed: tests/fuzz/fuzz_store_multipart.c).
 */
#ifndef FERRY_STORE_MULTIPART_H
#define FERRY_STORE_MULTIPART_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ferry/ferry_error.h"

#define STORE_MP_PARTS_MAX     10000               /* part numbers 1..10,000 */
#define STORE_MP_PART_MIN      (UINT64_C(5) << 20) /* every part but the last */
#define STORE_MP_PART_MAX      (UINT64_C(5) << 30) /* 5 GiB, S3's limit */
#define STORE_MP_XML_MAX       (2u << 20)          /* a CompleteMultipartUpload body */
#define STORE_MP_COMPLETES_MAX 8                   /* completions assembled at once */

/* One <Part> of a CompleteMultipartUpload body. */
typedef struct store_mp_part_ref {
    unsigned number; /* as written (0..99999): the caller checks the range */
    bool etag_ok;    /* etag is 32 hex digits (lower-cased) */
    char etag[33];
} store_mp_part_ref;

/*
 * Parses a CompleteMultipartUpload document xml[0..len):
 *   <CompleteMultipartUpload [xmlns="http://s3.amazonaws.com/doc/2006-03-01/"]>
 *     <Part><PartNumber>1</PartNumber><ETag>"hex"</ETag>[<Checksum*>…]</Part>…
 *   </CompleteMultipartUpload>
 * into parts[0..*n) (at most max), in document order. Strict: no DOCTYPE
 * (so no entity but XML's own five), no attributes, no unknown element, no
 * text outside the leaves, leaves of at most 128 bytes, one PartNumber
 * (1..5 digits) and one ETag per Part, at least one Part.
 * FERRY_ERR_INVALID (with *why, a static message) for anything else;
 * *n is written only on FERRY_OK.
 */
__attribute__((warn_unused_result)) ferry_err store_mp_parse_complete(const char *xml, size_t len,
                                                                      store_mp_part_ref *parts,
                                                                      size_t max, size_t *n,
                                                                      const char **why);

/* Whether the raw query string names multipart sub-resources only
 * (uploads, uploadId, partNumber), or none; false with the other
 * sub-resource's name in sub when it names one more. query is
 * NUL-terminated, without the '?'. */
bool store_mp_query(const char *query, char *sub, size_t sub_size);

#ifdef FERRY_STORE_INT_H
/* The store.c hooks (see store_int.h for req and header_list). */

/* An authenticated operator's multipart call: answered here, or (UploadPart,
 * CompleteMultipartUpload) its body is read first. */
enum MHD_Result store_mp_begin(req *r, struct MHD_Connection *c, const header_list *h,
                               const sigv4_verdict *verdict);
/* PH_MP: a chunk of a CompleteMultipartUpload body, and its end: the part
 * list checked, then the object assembled on a thread of its own with the
 * connection suspended; called again when that thread resumes it
 * (PH_COMMITTED), it answers the outcome. */
void store_mp_body_chunk(req *r, const char *data, size_t len);
enum MHD_Result store_mp_body_done(req *r, struct MHD_Connection *c);
/* The end of an UploadPart body (all of it written, the pipeline joined),
 * called twice: it verifies the digests and hands the part to the
 * committers (its slot made durable and its row recorded off the
 * libmicrohttpd thread, the connection suspended meanwhile); when they
 * resume the connection (PH_COMMITTED) it answers their outcome. */
enum MHD_Result store_mp_part_done(req *r, struct MHD_Connection *c);
/* A committer's part of UploadPart and UploadPartCopy, once r's slot is
 * durable: the part's ledger row (the data of a part it replaces let go). */
ferry_err store_mp_record_part(store *s, req *r);
/* Whether r is a CompleteMultipartUpload whose assembly was handed off
 * (its PH_COMMITTED answer is store_mp_body_done's). */
bool store_mp_assembling(const req *r);
/* Safe on NULL. */
void store_mp_req_free(struct store_mp_req *m);
/* Aborts up to limit uploads older than [store] multipart_expiry (none
 * when it is 0) and removes their part files. */
__attribute__((warn_unused_result)) ferry_err store_mp_expire(store *s, size_t limit);
#endif

#endif
