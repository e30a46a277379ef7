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
 * - Completion reads the listed parts to compute the SHA-256 of the whole
 *   object (on a thread of its own, the connection suspended) and writes
 *   nothing: ONE ledger transaction records the object, made of the listed
 *   parts' data (its row names an "m" id of no file; its object_parts rows
 *   name each part's data), and deletes the upload and its parts: a crash
 *   at any point leaves the whole object or none of it (and then the upload
 *   as it was). The data of parts not listed is removed after the commit;
 *   whatever a crash leaves behind, the sweep removes.
 * - Such an object is read across its parts (store_mp_data_*), and deleting
 *   or replacing it releases its part rows after the commit and removes
 *   each part's data (store_mp_forget), or after its last reader is done
 *   when it is being read; part rows a crash left without their object are
 *   released by the start-up sweep.
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
#include <sys/types.h>

#include "ferry/ferry_error.h"

typedef struct store_mp_data store_mp_data;

#define STORE_MP_PARTS_MAX     10000               /* part numbers 1..10,000 */
#define STORE_MP_PART_MIN      (UINT64_C(5) << 20) /* every part but the last */
#define STORE_MP_PART_MAX      (UINT64_C(5) << 30) /* 5 GiB, S3's limit */
#define STORE_MP_XML_MAX       (2u << 20)          /* a CompleteMultipartUpload body */
#define STORE_MP_COMPLETES_MAX 8                   /* completions running at once */

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
 * list checked, then the parts read (the object's SHA-256) and the object
 * recorded on a thread of its own with the connection suspended; called
 * again when that thread resumes it (PH_COMMITTED), it answers the
 * outcome. */
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
/* Whether r is a CompleteMultipartUpload whose completion was handed off
 * (its PH_COMMITTED answer is store_mp_body_done's). */
bool store_mp_completing_now(const req *r);
/* Safe on NULL. */
void store_mp_req_free(struct store_mp_req *m);

/* The data of an object made of its parts (store_fs_is_parts(o->file_id)),
 * open for reading bytes [first, first + length) of it: counted as a
 * reader of the object (its parts' data stays until the reader is freed,
 * whatever happens to the object meanwhile), its part rows read, the parts
 * holding the bytes opened (at most 4 at a time, the next ones as reads
 * reach them; a packed one registered as a reader of its pack).
 * FERRY_ERR_NOT_FOUND when the object was deleted or replaced before.
 * length 0 opens no part (HeadObject). */
__attribute__((warn_unused_result)) ferry_err store_mp_data_open(store *s, const ledger_object *o,
                                                                 uint64_t first, uint64_t length,
                                                                 store_mp_data **out);
/* Reads up to len bytes at the object's offset off, from one part (a read
 * never crosses a part's end): the bytes read, 0 at the object's end, -1
 * (errno) on an error or a part's data missing or shorter than its
 * record. */
ssize_t store_mp_data_read(store_mp_data *d, void *buf, size_t len, uint64_t off);
/* Copies n bytes from the object's offset first to out (from its offset
 * 0) with their MD5 into md5, giving up (errno ECANCELED) once *abort is
 * set. */
bool store_mp_data_copy(store_mp_data *d, uint64_t first, uint64_t n, store_fs_slot *out,
                        const atomic_bool *abort, unsigned char md5[16]);
/* A GetObject response of bytes [first, first + length): takes d (freed
 * with the response, or at once when none can be made). */
struct MHD_Response *store_mp_data_response(store_mp_data *d, uint64_t first, uint64_t length);
/* Closes every part and lets go of their packs' readers. Safe on NULL. */
void store_mp_data_free(store_mp_data *d);
/* An object made of its parts is no longer named by the ledger (deleted
 * or replaced; file_id is its "m" id): its part rows are released and
 * every part's data removed (a file unlinked, a pack region noted for
 * reclaim), as store_fs_remove_object does for an object of one piece. */
void store_mp_forget(store *s, const char *file_id);
/* Aborts up to limit uploads older than [store] multipart_expiry (none
 * when it is 0) and removes their part files. */
__attribute__((warn_unused_result)) ferry_err store_mp_expire(store *s, size_t limit);
#endif

#endif
