"""S3 multipart upload on the embedded store with real clients: Debian's AWS
CLI (`aws s3 cp` of 20 MiB up and down, every `aws s3api` multipart call),
boto3 `upload_file` with a 5 MiB chunk size, an operator's pre-signed part
URL with curl; UploadPartCopy (boto3, and `aws s3 cp` between keys over the
CLI's multipart threshold), GetObject/HeadObject of one part, and
ListMultipartUploads with a delimiter. Then every refusal with its status and S3 code
(EntityTooSmall, InvalidPart, InvalidPartOrder, NoSuchUpload, MalformedXML,
EntityTooLarge, InvalidArgument, NotImplemented, the device credential's
AccessDenied), each followed by a valid upload and a check that the data
directory holds exactly the files the ledger names; aborted and expired
uploads leave no part file; an upload survives a SIGKILL of ferryd and
completes after the restart; the open-upload limit.
"""

import hashlib
import json
import os
import sqlite3
import sys
import threading
import time

import botocore.exceptions

import ferry_harness
from ferry_harness import wait_until
from store_harness import (BUCKET, GRANT_KEY, GRANT_SECRET, OPERATOR_KEY, OPERATOR_SECRET,
                           REGION, StoreFerryd)
from test_store_put import POLICY, StoreTestCase

MIB = 1 << 20


def mp_etag(parts):
    """S3's multipart ETag of the given part bodies."""
    md5s = b"".join(hashlib.md5(p).digest() for p in parts)
    return '"%s-%d"' % (hashlib.md5(md5s).hexdigest(), len(parts))


def start_upload(d, key, parts):
    """Creates an upload of key on ferryd d and uploads parts (a list of
    bytes); returns (upload id, [{'ETag', 'PartNumber'}])."""
    s3 = d.boto3()
    uid = s3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    done = []
    for i, body in enumerate(parts, 1):
        r = s3.upload_part(Bucket=BUCKET, Key=key, UploadId=uid, PartNumber=i, Body=body)
        done.append({"ETag": r["ETag"], "PartNumber": i})
    return uid, done


class MultipartCase(StoreTestCase):
    store_options = ["max_object_size = 32M"]

    def assert_code(self, call, status, code):
        with self.assertRaises(Exception) as cm:
            call()
        err = getattr(cm.exception, "response", None)
        self.assertIsNotNone(err, repr(cm.exception))
        self.assertEqual(err["ResponseMetadata"]["HTTPStatusCode"], status, err)
        self.assertEqual(err["Error"]["Code"], code, err)

    def files_match_ledger(self):
        """Every data file and pack region is an object's or a live
        upload's part, and every one the ledger names exists."""
        self.assertEqual(self.d.data_problems(), [])

    def part_rows(self):
        return self.ledger_exec("SELECT count(*) FROM upload_parts")[0][0]

    def open_uploads(self):
        return self.ledger_exec("SELECT count(*) FROM uploads")[0][0]

    def file(self, data, name):
        path = os.path.join(self.h.tmp, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def start_upload(self, key, parts):
        return start_upload(self.d, key, parts)


class Clients(MultipartCase):

    def test_aws_cli_cp_20mib_up_and_down(self):
        data = os.urandom(20 * MIB)
        src = self.file(data, "cli-20m")
        out = os.path.join(self.h.tmp, "cli-20m.back")
        self.d.aws("s3", "cp", src, "s3://%s/mp/cli.bin" % BUCKET)
        self.d.aws("s3", "cp", "s3://%s/mp/cli.bin" % BUCKET, out)
        with open(out, "rb") as f:
            self.assertEqual(hashlib.sha256(f.read()).hexdigest(),
                             hashlib.sha256(data).hexdigest())
        head = self.d.boto3().head_object(Bucket=BUCKET, Key="mp/cli.bin")
        # The CLI's 8 MiB parts: 8 + 8 + 4.
        chunks = [data[:8 * MIB], data[8 * MIB:16 * MIB], data[16 * MIB:]]
        self.assertEqual(head["ETag"], mp_etag(chunks))
        self.assertEqual(head["ContentLength"], len(data))
        # The ledger's SHA-256 is of the whole object, computed at completion.
        rows = self.ledger_exec("SELECT sha256, size, grant_id FROM objects"
                                " WHERE object_key = 'mp/cli.bin'")
        self.assertEqual(rows, [(hashlib.sha256(data).hexdigest(), len(data), None)])
        self.assertEqual(self.open_uploads(), 0)
        # An operator's object raises no event, multipart or not (as a PUT).
        self.assertEqual(self.ledger_exec("SELECT count(*) FROM events"
                                          " WHERE object_key = 'mp/cli.bin'")[0][0], 0)
        self.files_match_ledger()
        self.assert_clean_and_serving()

    def test_aws_s3api_calls(self):
        key = "mp/s3api.bin"
        p1, p2 = os.urandom(5 * MIB), os.urandom(123457)
        r = json.loads(self.d.aws("s3api", "create-multipart-upload", "--bucket", BUCKET,
                                  "--key", key, "--content-type", "audio/wav",
                                  "--metadata", "site=north").stdout)
        uid = r["UploadId"]
        etags = []
        for n, body in ((1, p1), (2, p2)):
            r = json.loads(self.d.aws("s3api", "upload-part", "--bucket", BUCKET, "--key", key,
                                      "--upload-id", uid, "--part-number", str(n),
                                      "--body", self.file(body, "s3api-part%d" % n)).stdout)
            self.assertEqual(r["ETag"], '"%s"' % hashlib.md5(body).hexdigest())
            etags.append(r["ETag"])
        r = json.loads(self.d.aws("s3api", "list-parts", "--bucket", BUCKET, "--key", key,
                                  "--upload-id", uid).stdout)
        self.assertEqual([(p["PartNumber"], p["ETag"], p["Size"]) for p in r["Parts"]],
                         [(1, etags[0], len(p1)), (2, etags[1], len(p2))])
        r = json.loads(self.d.aws("s3api", "list-multipart-uploads", "--bucket", BUCKET).stdout)
        self.assertIn((key, uid), [(u["Key"], u["UploadId"]) for u in r["Uploads"]])
        parts = self.file(json.dumps({"Parts": [{"ETag": etags[0], "PartNumber": 1},
                                                {"ETag": etags[1], "PartNumber": 2}]}).encode(),
                          "s3api-parts.json")
        r = json.loads(self.d.aws("s3api", "complete-multipart-upload", "--bucket", BUCKET,
                                  "--key", key, "--upload-id", uid,
                                  "--multipart-upload", "file://" + parts).stdout)
        self.assertEqual(r["ETag"], mp_etag([p1, p2]))
        self.assertEqual(self.get_bytes(key), p1 + p2)
        head = self.d.boto3().head_object(Bucket=BUCKET, Key=key)
        self.assertEqual(head["ContentType"], "audio/wav")
        self.assertEqual(head["Metadata"], {"site": "north"})

        # Abort: the upload and its part files are gone.
        before = self.part_rows()
        r = json.loads(self.d.aws("s3api", "create-multipart-upload", "--bucket", BUCKET,
                                  "--key", "mp/aborted").stdout)
        self.d.aws("s3api", "upload-part", "--bucket", BUCKET, "--key", "mp/aborted",
                   "--upload-id", r["UploadId"], "--part-number", "1",
                   "--body", self.file(p2, "s3api-abort"))
        self.assertEqual(self.part_rows(), before + 1)
        self.files_match_ledger()  # the part's data is there, named
        self.d.aws("s3api", "abort-multipart-upload", "--bucket", BUCKET, "--key", "mp/aborted",
                   "--upload-id", r["UploadId"])
        self.assertEqual(self.part_rows(), before)
        self.files_match_ledger()  # and gone with its row
        bad = self.d.aws("s3api", "list-parts", "--bucket", BUCKET, "--key", "mp/aborted",
                         "--upload-id", r["UploadId"], check=False)
        self.assertNotEqual(bad.returncode, 0)
        self.assertIn("NoSuchUpload", bad.stderr)
        self.assertFalse(self.exists("mp/aborted"))
        self.assertEqual(self.open_uploads(), 0)
        self.files_match_ledger()
        self.assert_clean_and_serving()

    def test_boto3_upload_file_5mib_chunks(self):
        from boto3.s3.transfer import TransferConfig
        data = os.urandom(17 * MIB + 4321)
        src = self.file(data, "boto3-17m")
        out = os.path.join(self.h.tmp, "boto3-17m.back")
        cfg = TransferConfig(multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB)
        s3 = self.d.boto3()
        s3.upload_file(src, BUCKET, "mp/boto3.bin", Config=cfg)
        s3.download_file(BUCKET, "mp/boto3.bin", out, Config=cfg)
        with open(out, "rb") as f:
            self.assertEqual(f.read(), data)
        chunks = [data[i:i + 5 * MIB] for i in range(0, len(data), 5 * MIB)]
        self.assertEqual(len(chunks), 4)
        self.assertEqual(s3.head_object(Bucket=BUCKET, Key="mp/boto3.bin")["ETag"],
                         mp_etag(chunks))
        # Replacing a key by a multipart upload removes the old file.
        s3.upload_file(src, BUCKET, "mp/boto3.bin", Config=cfg)
        self.files_match_ledger()
        self.assert_clean_and_serving()

    def test_presigned_part_url_and_replaced_part(self):
        """An operator's pre-signed UploadPart URL (query auth) with curl; a
        part uploaded twice keeps the second and removes the first file."""
        s3 = self.d.boto3()
        key = "mp/presigned.bin"
        uid = s3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
        first = os.urandom(5 * MIB)
        s3.upload_part(Bucket=BUCKET, Key=key, UploadId=uid, PartNumber=1, Body=os.urandom(100))
        url = s3.generate_presigned_url("upload_part", Params={
            "Bucket": BUCKET, "Key": key, "UploadId": uid, "PartNumber": 1}, ExpiresIn=300)
        code, body = self.d.curl(["-X", "PUT", "-T", self.file(first, "presigned-p1"), url])
        self.assertEqual(code, 200, body)
        last = b"the end"
        e2 = s3.upload_part(Bucket=BUCKET, Key=key, UploadId=uid, PartNumber=2, Body=last)["ETag"]
        parts = s3.list_parts(Bucket=BUCKET, Key=key, UploadId=uid)["Parts"]
        self.assertEqual([p["Size"] for p in parts], [len(first), len(last)])
        self.files_match_ledger()  # the first part 1 file is gone
        s3.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=uid, MultipartUpload={
            "Parts": [{"ETag": '"%s"' % hashlib.md5(first).hexdigest(), "PartNumber": 1},
                      {"ETag": e2, "PartNumber": 2}]})
        self.assertEqual(self.get_bytes(key), first + last)
        self.files_match_ledger()
        self.assert_clean_and_serving()


class Refusals(MultipartCase):

    def complete_with_body(self, key, uid, body):
        """CompleteMultipartUpload with a body of our own (signed as sent)."""
        s3 = self.d.boto3()

        def replace(request, **kw):
            request.data = body
            if "Content-MD5" in request.headers:
                del request.headers["Content-MD5"]
        s3.meta.events.register("before-sign.s3.CompleteMultipartUpload", replace)
        return s3.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=uid,
                                            MultipartUpload={"Parts": [
                                                {"ETag": '"x"', "PartNumber": 1}]})

    def after_refusal(self, key):
        self.assertFalse(self.exists(key))
        self.files_match_ledger()
        self.assert_clean_and_serving()

    def test_entity_too_small(self):
        s3 = self.d.boto3()
        uid, parts = self.start_upload("mp/small", [b"a" * 1000, b"b" * 1000])
        self.assert_code(lambda: s3.complete_multipart_upload(
            Bucket=BUCKET, Key="mp/small", UploadId=uid, MultipartUpload={"Parts": parts}),
            400, "EntityTooSmall")
        self.after_refusal("mp/small")
        # The upload is still there: a single small part is a valid last part.
        s3.complete_multipart_upload(Bucket=BUCKET, Key="mp/small", UploadId=uid,
                                     MultipartUpload={"Parts": parts[1:]})
        self.assertEqual(self.get_bytes("mp/small"), b"b" * 1000)
        self.files_match_ledger()

    def test_invalid_part_and_order(self):
        s3 = self.d.boto3()
        uid, parts = self.start_upload("mp/inv", [os.urandom(5 * MIB), b"tail"])
        wrong_etag = [dict(parts[0]), parts[1]]
        wrong_etag[0]["ETag"] = '"%s"' % ("0" * 32)
        self.assert_code(lambda: s3.complete_multipart_upload(
            Bucket=BUCKET, Key="mp/inv", UploadId=uid,
            MultipartUpload={"Parts": wrong_etag}), 400, "InvalidPart")
        self.after_refusal("mp/inv")
        missing = parts + [{"ETag": parts[1]["ETag"], "PartNumber": 3}]
        self.assert_code(lambda: s3.complete_multipart_upload(
            Bucket=BUCKET, Key="mp/inv", UploadId=uid,
            MultipartUpload={"Parts": missing}), 400, "InvalidPart")
        self.after_refusal("mp/inv")
        self.assert_code(lambda: s3.complete_multipart_upload(
            Bucket=BUCKET, Key="mp/inv", UploadId=uid,
            MultipartUpload={"Parts": [parts[1], parts[0]]}), 400, "InvalidPartOrder")
        self.after_refusal("mp/inv")
        self.assert_code(lambda: s3.complete_multipart_upload(
            Bucket=BUCKET, Key="mp/inv", UploadId=uid,
            MultipartUpload={"Parts": [parts[0], parts[0]]}), 400, "InvalidPartOrder")
        self.after_refusal("mp/inv")
        s3.abort_multipart_upload(Bucket=BUCKET, Key="mp/inv", UploadId=uid)
        self.assertEqual(self.open_uploads(), 0)
        self.after_refusal("mp/inv")

    def test_no_such_upload(self):
        s3 = self.d.boto3()
        uid, parts = self.start_upload("mp/nsu", [b"x" * 10])
        bogus = "0" * 32
        calls = [
            lambda: s3.upload_part(Bucket=BUCKET, Key="mp/nsu", UploadId=bogus, PartNumber=1,
                                   Body=b"part"),
            lambda: s3.complete_multipart_upload(Bucket=BUCKET, Key="mp/nsu", UploadId=bogus,
                                                 MultipartUpload={"Parts": parts}),
            lambda: s3.abort_multipart_upload(Bucket=BUCKET, Key="mp/nsu", UploadId=bogus),
            lambda: s3.list_parts(Bucket=BUCKET, Key="mp/nsu", UploadId=bogus),
            # The upload exists, but for another key.
            lambda: s3.list_parts(Bucket=BUCKET, Key="mp/other", UploadId=uid),
            lambda: s3.upload_part(Bucket=BUCKET, Key="mp/other", UploadId=uid, PartNumber=1,
                                   Body=b"part"),
        ]
        for call in calls:
            self.assert_code(call, 404, "NoSuchUpload")
            self.after_refusal("mp/nsu")
        s3.complete_multipart_upload(Bucket=BUCKET, Key="mp/nsu", UploadId=uid,
                                     MultipartUpload={"Parts": parts})
        # Completed: the upload id is gone.
        self.assert_code(lambda: s3.complete_multipart_upload(
            Bucket=BUCKET, Key="mp/nsu", UploadId=uid, MultipartUpload={"Parts": parts}),
            404, "NoSuchUpload")
        self.assertEqual(self.get_bytes("mp/nsu"), b"x" * 10)
        self.files_match_ledger()

    def test_malformed_xml(self):
        uid, parts = self.start_upload("mp/xml", [b"only part"])
        good = ('<CompleteMultipartUpload><Part><PartNumber>1</PartNumber>'
                '<ETag>%s</ETag></Part></CompleteMultipartUpload>' % parts[0]["ETag"]).encode()
        bodies = [
            b"",
            b"<CompleteMultipartUpload>",
            b"<CompleteMultipartUpload></CompleteMultipartUpload>",
            b"<Other/>",
            good.replace(b"<PartNumber>1</PartNumber>", b""),
            good.replace(b"<PartNumber>1<", b"<PartNumber>one<"),
            good.replace(b"</Part>", b"<Size>3</Size></Part>"),
            b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">'
            b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>'
            b"<CompleteMultipartUpload>&b;</CompleteMultipartUpload>",
            b"<CompleteMultipartUpload>" + b"<Part>" * 5,
        ]
        for body in bodies:
            self.assert_code(lambda: self.complete_with_body("mp/xml", uid, body),
                             400, "MalformedXML")
            self.after_refusal("mp/xml")
        # The same document, well-formed, completes.
        self.complete_with_body("mp/xml", uid, good)
        self.assertEqual(self.get_bytes("mp/xml"), b"only part")
        self.files_match_ledger()

    def signing_client(self):
        """boto3 signing the body's SHA-256 (x-amz-content-sha256) over TLS."""
        import boto3
        from botocore.config import Config
        cfg = Config(signature_version="s3v4", retries={"max_attempts": 1},
                     s3={"addressing_style": "path", "payload_signing_enabled": True})
        return boto3.client("s3", endpoint_url=self.d.endpoint, region_name=REGION,
                            aws_access_key_id=OPERATOR_KEY, aws_secret_access_key=OPERATOR_SECRET,
                            verify=self.d.ca, config=cfg)

    def test_part_list_digests(self):
        """The part list is a body like any: a wrong Content-MD5 is
        BadDigest, a body changed after signing XAmzContentSHA256Mismatch."""
        import base64
        uid, parts = self.start_upload("mp/dig", [b"digest part"])
        mpu = {"Parts": parts}
        s3 = self.d.boto3()

        def wrong_md5(request, **kw):
            if "Content-MD5" in request.headers:
                del request.headers["Content-MD5"]
            request.headers["Content-MD5"] = base64.b64encode(
                hashlib.md5(b"other").digest()).decode()
        s3.meta.events.register("before-sign.s3.CompleteMultipartUpload", wrong_md5)
        self.assert_code(lambda: s3.complete_multipart_upload(
            Bucket=BUCKET, Key="mp/dig", UploadId=uid, MultipartUpload=mpu), 400, "BadDigest")
        self.after_refusal("mp/dig")

        signed = self.signing_client()

        def change_body(request, **kw):
            body = request.body if isinstance(request.body, bytes) else request.body.encode()
            request.body = body.replace(b"<Part>", b"<Part> ", 1)
            request.headers["Content-Length"] = str(len(request.body))
        signed.meta.events.register("before-send.s3.CompleteMultipartUpload", change_body)
        self.assert_code(lambda: signed.complete_multipart_upload(
            Bucket=BUCKET, Key="mp/dig", UploadId=uid, MultipartUpload=mpu),
            400, "XAmzContentSHA256Mismatch")
        self.after_refusal("mp/dig")
        # Signed and unchanged, it completes.
        self.signing_client().complete_multipart_upload(Bucket=BUCKET, Key="mp/dig",
                                                        UploadId=uid, MultipartUpload=mpu)
        self.assertEqual(self.get_bytes("mp/dig"), b"digest part")

    def test_limits_and_unsupported(self):
        s3 = self.d.boto3()
        uid = s3.create_multipart_upload(Bucket=BUCKET, Key="mp/lim")["UploadId"]
        for n in (0, 10001):
            self.assert_code(lambda: s3.upload_part(Bucket=BUCKET, Key="mp/lim", UploadId=uid,
                                                    PartNumber=n, Body=b"x"),
                             400, "InvalidArgument")
        self.assert_code(lambda: s3.upload_part_copy(Bucket=BUCKET, Key="mp/lim", UploadId=uid,
                                                     PartNumber=1,
                                                     CopySource="%s/mp/none" % BUCKET),
                         404, "NoSuchKey")
        # The parts together may not exceed max_object_size (32M): the
        # seventh 5 MiB part is refused before its body is read.
        chunk = os.urandom(5 * MIB)
        for n in range(1, 7):
            s3.upload_part(Bucket=BUCKET, Key="mp/lim", UploadId=uid, PartNumber=n, Body=chunk)
        self.assert_code(lambda: s3.upload_part(Bucket=BUCKET, Key="mp/lim", UploadId=uid,
                                                PartNumber=7, Body=chunk),
                         400, "EntityTooLarge")
        # A part whose Content-MD5 does not match is not stored.
        self.assert_code(lambda: s3.upload_part(Bucket=BUCKET, Key="mp/lim", UploadId=uid,
                                                PartNumber=8, Body=b"abc",
                                                ContentMD5="1B2M2Y8AsgTpgAmY7PhCfg=="),
                         400, "BadDigest")
        self.assertEqual(len(s3.list_parts(Bucket=BUCKET, Key="mp/lim",
                                           UploadId=uid)["Parts"]), 6)
        self.assert_code(lambda: s3.get_object(Bucket=BUCKET, Key="mp/lim", PartNumber=1),
                         404, "NoSuchKey")
        s3.abort_multipart_upload(Bucket=BUCKET, Key="mp/lim", UploadId=uid)
        self.after_refusal("mp/lim")

    def test_device_credential_refused(self):
        """Grants stay single-use single-request uploads: every multipart
        call signed with the device-grant credential is AccessDenied."""
        uid, parts = self.start_upload("mp/dev", [b"x"])
        dev = self.d.boto3(access_key=GRANT_KEY, secret=GRANT_SECRET)
        calls = [
            lambda: dev.create_multipart_upload(Bucket=BUCKET, Key="dev-a/2026/11/25/g_x-a"),
            lambda: dev.upload_part(Bucket=BUCKET, Key="mp/dev", UploadId=uid, PartNumber=1,
                                    Body=b"part"),
            lambda: dev.complete_multipart_upload(Bucket=BUCKET, Key="mp/dev", UploadId=uid,
                                                  MultipartUpload={"Parts": parts}),
            lambda: dev.abort_multipart_upload(Bucket=BUCKET, Key="mp/dev", UploadId=uid),
            lambda: dev.list_parts(Bucket=BUCKET, Key="mp/dev", UploadId=uid),
            lambda: dev.list_multipart_uploads(Bucket=BUCKET),
        ]
        for call in calls:
            self.assert_code(call, 403, "AccessDenied")
            self.after_refusal("mp/dev")
        # Nothing of that touched the operator's upload.
        self.assertEqual(len(self.d.boto3().list_parts(Bucket=BUCKET, Key="mp/dev",
                                                       UploadId=uid)["Parts"]), 1)
        self.d.boto3().abort_multipart_upload(Bucket=BUCKET, Key="mp/dev", UploadId=uid)
        self.after_refusal("mp/dev")


class PartCopyAndParts(MultipartCase):
    """UploadPartCopy (boto3, with and without x-amz-copy-source-range and
    the copy conditions; `aws s3 cp` between keys of an object over the
    CLI's multipart threshold), GetObject/HeadObject of one part, and
    ListMultipartUploads with a delimiter."""

    def put_source(self, key, size):
        data = os.urandom(size)
        self.d.boto3().put_object(Bucket=BUCKET, Key=key, Body=data)
        return data

    def test_upload_part_copy_and_get_parts(self):
        s3 = self.d.boto3()
        src = self.put_source("pc/src", 11 * MIB)
        src_etag = s3.head_object(Bucket=BUCKET, Key="pc/src")["ETag"]
        key = "pc/dst"
        uid = s3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
        first, second = src[:5 * MIB], src[5 * MIB:]
        r1 = s3.upload_part_copy(Bucket=BUCKET, Key=key, UploadId=uid, PartNumber=1,
                                 CopySource={"Bucket": BUCKET, "Key": "pc/src"},
                                 CopySourceRange="bytes=0-%d" % (5 * MIB - 1),
                                 CopySourceIfMatch=src_etag)
        self.assertEqual(r1["CopyPartResult"]["ETag"], '"%s"' % hashlib.md5(first).hexdigest())
        self.assertIn("LastModified", r1["CopyPartResult"])
        r2 = s3.upload_part_copy(Bucket=BUCKET, Key=key, UploadId=uid, PartNumber=2,
                                 CopySource="%s/pc/src" % BUCKET,
                                 CopySourceRange="bytes=%d-%d" % (5 * MIB, len(src) - 1),
                                 CopySourceIfNoneMatch='"0123"')
        self.assertEqual(r2["CopyPartResult"]["ETag"], '"%s"' % hashlib.md5(second).hexdigest())
        tail = b"tail"
        e3 = s3.upload_part(Bucket=BUCKET, Key=key, UploadId=uid, PartNumber=3, Body=tail)["ETag"]
        parts = s3.list_parts(Bucket=BUCKET, Key=key, UploadId=uid)["Parts"]
        self.assertEqual([(p["PartNumber"], p["Size"]) for p in parts],
                         [(1, len(first)), (2, len(second)), (3, 4)])
        s3.complete_multipart_upload(
            Bucket=BUCKET, Key=key, UploadId=uid,
            MultipartUpload={"Parts": [
                {"ETag": r1["CopyPartResult"]["ETag"], "PartNumber": 1},
                {"ETag": r2["CopyPartResult"]["ETag"], "PartNumber": 2},
                {"ETag": e3, "PartNumber": 3}]})
        whole = src + tail
        self.assertEqual(self.get_bytes(key), whole)
        etag = mp_etag([first, second, tail])
        # One part at a time: 206, its bytes, Content-Range, the count.
        offsets = [(1, 0, first), (2, len(first), second), (3, len(src), tail)]
        for n, off, body in offsets:
            g = s3.get_object(Bucket=BUCKET, Key=key, PartNumber=n)
            self.assertEqual(g["ResponseMetadata"]["HTTPStatusCode"], 206)
            self.assertEqual(g["Body"].read(), body)
            self.assertEqual(g["ContentRange"],
                             "bytes %d-%d/%d" % (off, off + len(body) - 1, len(whole)))
            self.assertEqual(g["PartsCount"], 3)
            self.assertEqual(g["ETag"], etag)
            h = s3.head_object(Bucket=BUCKET, Key=key, PartNumber=n)
            self.assertEqual(h["ContentLength"], len(body))
            self.assertEqual(h["PartsCount"], 3)
        self.assert_code(lambda: s3.get_object(Bucket=BUCKET, Key=key, PartNumber=4),
                         416, "InvalidPartNumber")
        self.assert_code(lambda: s3.get_object(Bucket=BUCKET, Key=key, PartNumber=10001),
                         400, "InvalidArgument")
        self.assert_code(lambda: s3.get_object(Bucket=BUCKET, Key=key, PartNumber=1,
                                               Range="bytes=0-1"),
                         400, "InvalidRequest")
        # An object stored in one piece is its own part 1, and has no other.
        g = s3.get_object(Bucket=BUCKET, Key="pc/src", PartNumber=1)
        self.assertEqual(g["Body"].read(), src)
        self.assertNotIn("PartsCount", g)
        self.assert_code(lambda: s3.head_object(Bucket=BUCKET, Key="pc/src", PartNumber=2),
                         416, "416")
        # The boundaries go with their object: replaced by a PUT, then
        # deleted, no row of them is left.
        def boundaries():
            fid = self.ledger_exec("SELECT file_id FROM objects WHERE object_key = ?", key)
            return fid[0][0], self.ledger_exec(
                "SELECT count(*) FROM object_parts WHERE file_id = ?", fid[0][0])[0][0]

        def rows_of(fid):
            return self.ledger_exec("SELECT count(*) FROM object_parts WHERE file_id = ?",
                                    fid)[0][0]
        fid, n = boundaries()
        self.assertEqual(n, 3)
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"plain")
        self.assertEqual(rows_of(fid), 0)
        self.assert_code(lambda: s3.get_object(Bucket=BUCKET, Key=key, PartNumber=2),
                         416, "InvalidPartNumber")
        uid, done = self.start_upload(key, [os.urandom(5 * MIB), b"end"])
        s3.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=uid,
                                     MultipartUpload={"Parts": done})
        fid, n = boundaries()
        self.assertEqual(n, 2)
        s3.delete_object(Bucket=BUCKET, Key=key)
        self.assertEqual(rows_of(fid), 0)
        self.files_match_ledger()
        self.assert_clean_and_serving()

    def test_upload_part_copy_refusals(self):
        s3 = self.d.boto3()
        src = self.put_source("pc/r-src", 11 * MIB)
        key = "pc/r-dst"
        uid = s3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]

        def copy(**kw):
            args = {"Bucket": BUCKET, "Key": key, "UploadId": uid, "PartNumber": 1,
                    "CopySource": "%s/pc/r-src" % BUCKET}
            args.update(kw)
            return lambda: s3.upload_part_copy(**args)
        self.assert_code(copy(CopySource="%s/pc/none" % BUCKET), 404, "NoSuchKey")
        self.assert_code(copy(CopySource="other-bucket/pc/r-src"), 404, "NoSuchBucket")
        self.assert_code(copy(UploadId="0" * 32), 404, "NoSuchUpload")
        self.assert_code(copy(Key="pc/other"), 404, "NoSuchUpload")
        for bad in ("bytes=5-1", "bytes=0-", "bytes=-5", "bytes=0-1,3-4", "items=0-1",
                    "bytes=0-%d" % len(src)):
            self.assert_code(copy(CopySourceRange=bad), 400, "InvalidArgument")
        self.assert_code(copy(CopySourceIfMatch='"0123"'), 412, "PreconditionFailed")
        etag = s3.head_object(Bucket=BUCKET, Key="pc/r-src")["ETag"]
        self.assert_code(copy(CopySourceIfNoneMatch=etag), 412, "PreconditionFailed")
        self.assert_code(copy(CopySourceIfNoneMatch="*"), 412, "PreconditionFailed")
        import datetime
        future = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1)
        past = datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc)
        self.assert_code(copy(CopySourceIfModifiedSince=future), 412, "PreconditionFailed")
        self.assert_code(copy(CopySourceIfUnmodifiedSince=past), 412, "PreconditionFailed")
        self.assert_code(copy(CopySource={"Bucket": BUCKET, "Key": "pc/r-src",
                                          "VersionId": "v1"}), 501, "NotImplemented")
        self.assert_code(copy(PartNumber=10001), 400, "InvalidArgument")
        # A date that is not one, and a body: the store's own checks.
        s3h = self.d.boto3()

        def bad_date(request, **kw):
            request.headers["x-amz-copy-source-if-modified-since"] = "yesterday"
        s3h.meta.events.register("before-sign.s3.UploadPartCopy", bad_date)
        self.assert_code(lambda: s3h.upload_part_copy(
            Bucket=BUCKET, Key=key, UploadId=uid, PartNumber=1,
            CopySource="%s/pc/r-src" % BUCKET), 400, "InvalidArgument")
        s3b = self.d.boto3()

        def with_body(request, **kw):
            request.data = b"unexpected"
            request.headers["Content-Length"] = "10"
        s3b.meta.events.register("before-sign.s3.UploadPartCopy", with_body)
        self.assert_code(lambda: s3b.upload_part_copy(
            Bucket=BUCKET, Key=key, UploadId=uid, PartNumber=1,
            CopySource="%s/pc/r-src" % BUCKET), 400, "InvalidRequest")
        # The parts together may not exceed max_object_size (32M): a third
        # 11 MiB copy is refused before a byte is copied.
        ok = [copy(PartNumber=n, CopySourceIfUnmodifiedSince=future,
                   CopySourceIfModifiedSince=past)() for n in (1, 2)]
        self.assertEqual(ok[0]["CopyPartResult"]["ETag"], '"%s"' % hashlib.md5(src).hexdigest())
        self.assert_code(copy(PartNumber=3), 400, "EntityTooLarge")
        self.assertEqual(len(s3.list_parts(Bucket=BUCKET, Key=key, UploadId=uid)["Parts"]), 2)
        # The device credential is refused as for every multipart call.
        dev = self.d.boto3(access_key=GRANT_KEY, secret=GRANT_SECRET)
        self.assert_code(lambda: dev.upload_part_copy(
            Bucket=BUCKET, Key=key, UploadId=uid, PartNumber=4,
            CopySource="%s/pc/r-src" % BUCKET), 403, "AccessDenied")
        self.files_match_ledger()
        # A part copied again replaces the earlier copy (its file goes).
        copy(PartNumber=2, CopySourceRange="bytes=0-9")()
        parts = s3.list_parts(Bucket=BUCKET, Key=key, UploadId=uid)["Parts"]
        self.assertEqual([(p["PartNumber"], p["Size"]) for p in parts],
                         [(1, len(src)), (2, 10)])
        s3.complete_multipart_upload(
            Bucket=BUCKET, Key=key, UploadId=uid,
            MultipartUpload={"Parts": [{"ETag": p["ETag"], "PartNumber": p["PartNumber"]}
                                       for p in parts]})
        self.assertEqual(self.get_bytes(key), src + src[:10])
        self.files_match_ledger()
        self.assert_clean_and_serving()

    def test_upload_part_copy_from_a_packed_object(self):
        """A small source lives in a pack region (pack_max_object): its
        bytes are read at the region's offset; the copied part, small too,
        gets a region of its own."""
        s3 = self.d.boto3()
        src = self.put_source("pc/small-src", 3000)
        self.assertTrue(self.ledger_exec("SELECT file_id FROM objects WHERE object_key = ?",
                                         "pc/small-src")[0][0].startswith("p"))
        key = "pc/small-dst"
        uid = s3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
        r = s3.upload_part_copy(Bucket=BUCKET, Key=key, UploadId=uid, PartNumber=1,
                                CopySource="%s/pc/small-src" % BUCKET,
                                CopySourceRange="bytes=100-1099")
        s3.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=uid, MultipartUpload={
            "Parts": [{"ETag": r["CopyPartResult"]["ETag"], "PartNumber": 1}]})
        self.assertEqual(self.get_bytes(key), src[100:1100])
        g = s3.get_object(Bucket=BUCKET, Key=key, PartNumber=1)
        self.assertEqual(g["Body"].read(), src[100:1100])
        self.assertEqual(g["PartsCount"], 1)
        s3.delete_object(Bucket=BUCKET, Key="pc/small-src")
        self.assertEqual(self.get_bytes(key), src[100:1100])
        self.files_match_ledger()
        self.assert_clean_and_serving()

    def test_aws_cli_copy_between_keys_is_multipart(self):
        """`aws s3 cp` of an object over the CLI's multipart threshold
        (here 6 MB, chunks of 5 MB, set in its config file) to another key
        copies it with UploadPartCopy."""
        src = self.put_source("pc/cli-src", 12 * MIB + 12345)
        env_extra = "    multipart_threshold = 6MB\n    multipart_chunksize = 5MB\n"
        self.d.aws_s3_config = env_extra
        try:
            self.d.aws("s3", "cp", "s3://%s/pc/cli-src" % BUCKET, "s3://%s/pc/cli-dst" % BUCKET)
        finally:
            self.d.aws_s3_config = ""
        self.assertEqual(self.get_bytes("pc/cli-dst"), src)
        # The CLI read the source's tags first: GetObjectTagging answers the
        # empty set of the store's objects (setting tags stays refused).
        s3 = self.d.boto3()
        self.assertEqual(s3.get_object_tagging(Bucket=BUCKET, Key="pc/cli-src")["TagSet"], [])
        self.assert_code(lambda: s3.get_object_tagging(Bucket=BUCKET, Key="pc/none"),
                         404, "NoSuchKey")
        self.assert_code(lambda: s3.put_object_tagging(
            Bucket=BUCKET, Key="pc/cli-src", Tagging={"TagSet": [{"Key": "a", "Value": "b"}]}),
            501, "NotImplemented")
        head = self.d.boto3().head_object(Bucket=BUCKET, Key="pc/cli-dst", PartNumber=1)
        chunks = [src[:5 * MIB], src[5 * MIB:10 * MIB], src[10 * MIB:]]
        self.assertEqual(head["ETag"], mp_etag(chunks))
        self.assertEqual(head["PartsCount"], 3)
        self.assertEqual(head["ContentLength"], 5 * MIB)
        self.assertEqual(self.open_uploads(), 0)
        self.files_match_ledger()
        self.assert_clean_and_serving()

    def test_list_uploads_delimiter(self):
        s3 = self.d.boto3()
        keys = ["dl/a/1", "dl/a/2", "dl/b", "dl/c/x/1", "dl/d", "other/z"]
        ids = {k: s3.create_multipart_upload(Bucket=BUCKET, Key=k)["UploadId"] for k in keys}
        r = s3.list_multipart_uploads(Bucket=BUCKET, Prefix="dl/", Delimiter="/")
        self.assertEqual([u["Key"] for u in r["Uploads"]], ["dl/b", "dl/d"])
        self.assertEqual([p["Prefix"] for p in r["CommonPrefixes"]], ["dl/a/", "dl/c/"])
        self.assertEqual(r["Delimiter"], "/")
        self.assertFalse(r["IsTruncated"])
        r = s3.list_multipart_uploads(Bucket=BUCKET, Delimiter="/")
        self.assertEqual([p["Prefix"] for p in r["CommonPrefixes"]], ["dl/", "other/"])
        self.assertNotIn("Uploads", r)
        # Pages of two: a common prefix counts as one; the next page goes
        # on after it (key-marker = the prefix), not into it.
        seen, km, im = [], None, None
        for _ in range(5):
            args = {"Bucket": BUCKET, "Prefix": "dl/", "Delimiter": "/", "MaxUploads": 2}
            if km is not None:
                args.update(KeyMarker=km, UploadIdMarker=im or "")
            r = s3.list_multipart_uploads(**args)
            seen += [u["Key"] for u in r.get("Uploads", [])]
            seen += [p["Prefix"] for p in r.get("CommonPrefixes", [])]
            if not r["IsTruncated"]:
                break
            km, im = r["NextKeyMarker"], r.get("NextUploadIdMarker")
        self.assertEqual(sorted(seen), ["dl/a/", "dl/b", "dl/c/", "dl/d"])
        # An empty upload-id-marker is none: the keys after key-marker.
        r = s3.list_multipart_uploads(Bucket=BUCKET, KeyMarker="dl/b", UploadIdMarker="")
        self.assertEqual([u["Key"] for u in r["Uploads"]], keys[3:])
        # key-marker and upload-id-marker without a delimiter.
        r = s3.list_multipart_uploads(Bucket=BUCKET, KeyMarker="dl/a/1",
                                      UploadIdMarker=ids["dl/a/1"])
        self.assertEqual([u["Key"] for u in r["Uploads"]], keys[1:])
        # A delimiter of several bytes, and URL encoding of the prefixes.
        r = s3.list_multipart_uploads(Bucket=BUCKET, Prefix="dl/", Delimiter="/1",
                                      EncodingType="url")
        self.assertEqual([p["Prefix"] for p in r["CommonPrefixes"]], ["dl/a/1", "dl/c/x/1"])
        self.assertEqual([u["Key"] for u in r["Uploads"]], ["dl/a/2", "dl/b", "dl/d"])
        for k, uid in ids.items():
            s3.abort_multipart_upload(Bucket=BUCKET, Key=k, UploadId=uid)
        self.assertEqual(self.open_uploads(), 0)
        self.assert_clean_and_serving()


class PartsAreData(MultipartCase):
    """A completed object is made of its parts' own data (migration 10):
    completion writes no data file, the object's row names an "m" id and
    its object_parts rows name each part's data (files, and a pack region
    for a small last part). Whole, ranged (across part boundaries) and
    per-part reads, copies, delete and replace (which free every part's
    file and region), restarts (the sweep keeps the parts), part rows a
    crash left without their object (released by the sweep), and an object
    completed before the migration (its own file, rows without data)."""

    def data_files(self):
        out = set()
        for dirpath, _, names in os.walk(os.path.join(self.d.data_dir, "objects")):
            out |= set(names)
        return out

    def object_row(self, key):
        rows = self.ledger_exec("SELECT file_id, size FROM objects WHERE object_key = ?", key)
        return rows[0] if rows else None

    def data_ids(self, fid):
        return [r[0] for r in self.ledger_exec(
            "SELECT data_id FROM object_parts WHERE file_id = ? ORDER BY part_number", fid)]

    def complete_parts(self, key, parts, listed=None):
        """Uploads parts, completes with those numbered in listed (all by
        default); returns (the data ids of the listed parts, the unlisted
        ones) as upload_parts named them."""
        s3 = self.d.boto3()
        uid, done = self.start_upload(key, parts)
        rows = dict(self.ledger_exec(
            "SELECT part_number, file_id FROM upload_parts WHERE upload_id = ?", uid))
        listed = listed or list(range(1, len(parts) + 1))
        s3.complete_multipart_upload(
            Bucket=BUCKET, Key=key, UploadId=uid,
            MultipartUpload={"Parts": [p for p in done if p["PartNumber"] in listed]})
        return ([rows[n] for n in listed],
                [rows[n] for n in rows if n not in listed])

    def assert_gone(self, ids):
        """Each data id is removed: its file unlinked, and the harness's
        pack check (data_problems) finds no pack bytes it does not name."""
        files = self.data_files()
        for i in ids:
            if not i.startswith("p"):
                self.assertNotIn(i, files)
        wait_until(lambda: self.d.data_problems() == [], timeout=5,
                   what=lambda: "data problems: %r" % self.d.data_problems())

    def test_completion_writes_nothing_and_reads_span_parts(self):
        s3 = self.d.boto3()
        key = "parts/span"
        # Two 5 MiB parts in files of their own, a 100 KiB last part in a
        # pack; a fourth part that is not listed.
        parts = [os.urandom(5 * MIB), os.urandom(5 * MIB), os.urandom(100 * 1024),
                 os.urandom(5 * MIB)]
        before = self.data_files()
        uid, done = self.start_upload(key, parts)
        rows = dict(self.ledger_exec(
            "SELECT part_number, file_id FROM upload_parts WHERE upload_id = ?", uid))
        self.assertTrue(rows[3].startswith("p"), rows)
        with_parts = self.data_files()
        r = s3.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=uid,
                                         MultipartUpload={"Parts": done[:3]})
        data = b"".join(parts[:3])
        self.assertEqual(r["ETag"], mp_etag(parts[:3]))
        fid, size = self.object_row(key)
        self.assertRegex(fid, r"^m[0-9a-f]{32}$")
        self.assertEqual(size, len(data))
        self.assertEqual(self.data_ids(fid), [rows[1], rows[2], rows[3]])
        # No data file was created; the unlisted part's file is gone.
        self.assertEqual(self.data_files(), (with_parts - {rows[4]}))
        self.assertTrue(before <= self.data_files())
        self.assertEqual(self.ledger_exec("SELECT sha256 FROM objects WHERE object_key = ?",
                                          key)[0][0], hashlib.sha256(data).hexdigest())
        self.files_match_ledger()
        # Whole, HEAD, and ranges across one and two boundaries, into the
        # packed tail, suffix and open-ended.
        self.assertEqual(self.get_bytes(key), data)
        self.assertEqual(s3.head_object(Bucket=BUCKET, Key=key)["ContentLength"], len(data))
        b1, b2 = 5 * MIB, 10 * MIB
        for first, last in [(b1 - 10, b1 + 10), (b1 - 1, b1), (100, b2 + 5),
                            (b2 - 3, len(data) - 1), (0, len(data) - 1), (b2, b2)]:
            g = s3.get_object(Bucket=BUCKET, Key=key, Range="bytes=%d-%d" % (first, last))
            self.assertEqual(g["ResponseMetadata"]["HTTPStatusCode"], 206)
            self.assertEqual(g["Body"].read(), data[first:last + 1], (first, last))
            self.assertEqual(g["ContentRange"], "bytes %d-%d/%d" % (first, last, len(data)))
        g = s3.get_object(Bucket=BUCKET, Key=key, Range="bytes=-%d" % (200 * 1024))
        self.assertEqual(g["Body"].read(), data[-200 * 1024:])
        g = s3.get_object(Bucket=BUCKET, Key=key, Range="bytes=%d-" % (b1 + 7))
        self.assertEqual(g["Body"].read(), data[b1 + 7:])
        for n, off in [(1, 0), (2, b1), (3, b2)]:
            g = s3.get_object(Bucket=BUCKET, Key=key, PartNumber=n)
            self.assertEqual(g["Body"].read(), parts[n - 1])
            self.assertEqual(g["PartsCount"], 3)
            h = s3.head_object(Bucket=BUCKET, Key=key, PartNumber=n)
            self.assertEqual(h["ContentLength"], len(parts[n - 1]))
        self.assert_clean_and_serving()

    def test_copies_of_an_object_made_of_parts(self):
        s3 = self.d.boto3()
        parts = [os.urandom(5 * MIB), os.urandom(5 * MIB), os.urandom(3000)]
        data = b"".join(parts)
        self.complete_parts("parts/csrc", parts)
        etag = s3.head_object(Bucket=BUCKET, Key="parts/csrc")["ETag"]
        self.assertTrue(etag.endswith('-3"'), etag)
        # CopyObject: a normal object of one file, whose ETag is the MD5 of
        # its bytes (as S3 gives a copy made in one request), not the
        # source's "-3": the copy has one part.
        r = s3.copy_object(Bucket=BUCKET, Key="parts/ccopy",
                           CopySource={"Bucket": BUCKET, "Key": "parts/csrc"})
        md5 = '"%s"' % hashlib.md5(data).hexdigest()
        self.assertEqual(r["CopyObjectResult"]["ETag"], md5)
        fid, _ = self.object_row("parts/ccopy")
        self.assertRegex(fid, r"^[0-9a-f]{32}$")
        self.assertEqual(self.get_bytes("parts/ccopy"), data)
        h = s3.head_object(Bucket=BUCKET, Key="parts/ccopy", PartNumber=1)
        self.assertEqual(h["ETag"], md5)
        self.assertEqual(h["ContentLength"], len(data))
        self.assertNotIn("PartsCount", h)
        # UploadPartCopy of ranges that cross the source's part boundaries.
        key = "parts/cparts"
        uid = s3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
        a, b = (3 * MIB, 9 * MIB - 1), (9 * MIB, len(data) - 1)
        r1 = s3.upload_part_copy(Bucket=BUCKET, Key=key, UploadId=uid, PartNumber=1,
                                 CopySource={"Bucket": BUCKET, "Key": "parts/csrc"},
                                 CopySourceRange="bytes=%d-%d" % a)
        r2 = s3.upload_part_copy(Bucket=BUCKET, Key=key, UploadId=uid, PartNumber=2,
                                 CopySource={"Bucket": BUCKET, "Key": "parts/csrc"},
                                 CopySourceRange="bytes=%d-%d" % b)
        s3.complete_multipart_upload(
            Bucket=BUCKET, Key=key, UploadId=uid,
            MultipartUpload={"Parts": [{"ETag": r1["CopyPartResult"]["ETag"], "PartNumber": 1},
                                       {"ETag": r2["CopyPartResult"]["ETag"], "PartNumber": 2}]})
        self.assertEqual(self.get_bytes(key), data[a[0]:a[1] + 1] + data[b[0]:])
        # The source is untouched and still its own parts.
        self.assertEqual(self.get_bytes("parts/csrc"), data)
        self.files_match_ledger()
        self.assert_clean_and_serving()

    def test_delete_and_replace_free_every_part(self):
        s3 = self.d.boto3()
        parts = [os.urandom(5 * MIB), os.urandom(64 * 1024)]
        # Deleted: every part's file and region go, and its rows.
        ids, _ = self.complete_parts("parts/del", parts)
        fid, _ = self.object_row("parts/del")
        self.assertTrue(ids[1].startswith("p"), ids)
        self.assertTrue(set(ids[:1]) <= self.data_files())
        s3.delete_object(Bucket=BUCKET, Key="parts/del")
        self.assertEqual(self.data_ids(fid), [])
        self.assert_gone(ids)
        # Replaced by a PUT, then by another completion, then by a copy.
        for how in ("put", "multipart", "copy"):
            ids, _ = self.complete_parts("parts/rep", parts)
            fid, _ = self.object_row("parts/rep")
            if how == "put":
                s3.put_object(Bucket=BUCKET, Key="parts/rep", Body=b"plain")
                self.assertEqual(self.get_bytes("parts/rep"), b"plain")
            elif how == "multipart":
                new = [os.urandom(5 * MIB), b"x"]
                self.complete_parts("parts/rep", new)
                self.assertEqual(self.get_bytes("parts/rep"), b"".join(new))
            else:
                s3.put_object(Bucket=BUCKET, Key="parts/plain", Body=b"copied")
                s3.copy_object(Bucket=BUCKET, Key="parts/rep",
                               CopySource={"Bucket": BUCKET, "Key": "parts/plain"})
                self.assertEqual(self.get_bytes("parts/rep"), b"copied")
            self.assertEqual(self.data_ids(fid), [], how)
            self.assert_gone(ids)
        s3.delete_object(Bucket=BUCKET, Key="parts/rep")
        self.files_match_ledger()
        self.assert_clean_and_serving()

    def test_restart_keeps_parts_and_releases_loose_rows(self):
        s3 = self.d.boto3()
        parts = [os.urandom(5 * MIB), os.urandom(200 * 1024)]
        data = b"".join(parts)
        ids, _ = self.complete_parts("parts/keep", parts)
        loose_ids, _ = self.complete_parts("parts/loose", parts)
        self.d.kill()
        # A crash between a delete's commit and the release of its part
        # rows: the object row gone, its part rows (with data) left.
        self.ledger_exec("DELETE FROM objects WHERE object_key = 'parts/loose'")
        self.d.start()
        s3 = self.d.boto3()
        self.assertIn("event=store.loose_parts_released", self.d.log())
        self.assertEqual(self.get_bytes("parts/keep"), data)
        self.assertTrue(set(ids[:1]) <= self.data_files())
        self.assertEqual(self.ledger_exec(
            "SELECT count(*) FROM object_parts p WHERE NOT EXISTS"
            " (SELECT 1 FROM objects o WHERE o.file_id = p.file_id)")[0][0], 0)
        self.assert_gone(loose_ids)
        self.d.stop()
        self.d.start()
        self.assertEqual(self.d.boto3().get_object(Bucket=BUCKET, Key="parts/keep")["Body"].read(),
                         data)
        self.files_match_ledger()
        self.assert_clean_and_serving()

    def test_object_completed_before_migration_10(self):
        """An object assembled into its own file, with part rows without
        data (as completion wrote them before migration 10), still reads
        whole, by range and by part, and a delete frees its file."""
        s3 = self.d.boto3()
        data = os.urandom(11 * MIB)
        s3.put_object(Bucket=BUCKET, Key="parts/legacy", Body=data)
        fid, _ = self.object_row("parts/legacy")
        self.assertRegex(fid, r"^[0-9a-f]{32}$")
        self.ledger_exec("INSERT INTO object_parts (file_id, part_number, size) VALUES"
                         " (?, 1, ?), (?, 2, ?)", fid, 5 * MIB, fid, 6 * MIB)
        self.files_match_ledger()
        g = s3.get_object(Bucket=BUCKET, Key="parts/legacy", PartNumber=2)
        self.assertEqual(g["Body"].read(), data[5 * MIB:])
        self.assertEqual(g["PartsCount"], 2)
        g = s3.get_object(Bucket=BUCKET, Key="parts/legacy",
                          Range="bytes=%d-%d" % (5 * MIB - 2, 5 * MIB + 1))
        self.assertEqual(g["Body"].read(), data[5 * MIB - 2:5 * MIB + 2])
        self.assertEqual(self.get_bytes("parts/legacy"), data)
        s3.delete_object(Bucket=BUCKET, Key="parts/legacy")
        self.assertNotIn(fid, self.data_files())
        self.assertEqual(self.data_ids(fid), [])
        self.assertEqual(self.ledger_exec("SELECT count(*) FROM object_parts WHERE file_id = ?",
                                          fid)[0][0], 0)
        self.files_match_ledger()
        self.assert_clean_and_serving()

    def test_parts_that_do_not_match_are_an_error(self):
        """An object whose parts the disk or the ledger lost: a part's data
        file gone is lost data (500 InternalError, store.part_data_missing),
        not a missing object; part rows whose sizes do not add up to the
        object are 500 too (store.parts_mismatch). Deleting either object
        still works and leaves the data directory clean."""
        s3 = self.d.boto3()
        parts = [os.urandom(5 * MIB), os.urandom(5 * MIB)]
        self.complete_parts("parts/lost", parts)
        self.complete_parts("parts/odd", parts)
        fid, _ = self.object_row("parts/lost")
        first = self.data_ids(fid)[0]
        os.unlink(os.path.join(self.d.data_dir, "objects", first[:2], first))
        self.assert_code(lambda: s3.get_object(Bucket=BUCKET, Key="parts/lost"), 500,
                         "InternalError")
        self.assertIn("event=store.part_data_missing", self.d.log())
        fid, _ = self.object_row("parts/odd")
        self.ledger_exec("UPDATE object_parts SET size = size + 1 "
                         "WHERE file_id = ? AND part_number = 1", fid)
        self.assert_code(lambda: s3.get_object(Bucket=BUCKET, Key="parts/odd"), 500,
                         "InternalError")
        self.assertIn("event=store.parts_mismatch", self.d.log())
        for key in ("parts/lost", "parts/odd"):
            s3.delete_object(Bucket=BUCKET, Key=key)
        self.files_match_ledger()
        self.assert_clean_and_serving()

    def test_many_parts_and_a_delete_while_reading(self):
        """Six parts (more than the four a read opens at once): whole and
        ranged reads open the later ones as they go. A delete, or a
        replacement, while a GET is under way waits for it: the GET sends
        the version it began with, whole, and the parts' data goes when it
        ends."""
        s3 = self.d.boto3()
        parts = [os.urandom(5 * MIB) for _ in range(5)] + [b"tail"]
        data = b"".join(parts)
        self.complete_parts("parts/many", parts)
        self.assertEqual(self.get_bytes("parts/many"), data)
        g = s3.get_object(Bucket=BUCKET, Key="parts/many",
                          Range="bytes=%d-%d" % (MIB, 25 * MIB + 1))
        self.assertEqual(g["Body"].read(), data[MIB:25 * MIB + 2])
        for change in ("delete", "replace"):
            fid = self.ledger_exec("SELECT file_id FROM objects WHERE object_key = ?",
                                   "parts/many")[0][0]
            ids = self.data_ids(fid)
            g = s3.get_object(Bucket=BUCKET, Key="parts/many")
            got = g["Body"].read(MIB)
            if change == "delete":
                s3.delete_object(Bucket=BUCKET, Key="parts/many")
            else:
                s3.put_object(Bucket=BUCKET, Key="parts/many", Body=b"new")
            # The data of the version being read is still there...
            files = self.data_files()
            for i in ids:
                if not i.startswith("p"):
                    self.assertIn(i, files)
            got += g["Body"].read()
            self.assertEqual(len(got), len(data), change)
            self.assertEqual(got, data, change)
            g["Body"].close()
            # ... and goes once the GET is done.
            wait_until(lambda: self.data_ids(fid) == [] and not
                       [i for i in ids if not i.startswith("p") and i in self.data_files()],
                       timeout=10, what="the read version's parts released")
            self.assert_gone(ids)
            if change == "delete":
                with self.assertRaises(botocore.exceptions.ClientError):
                    s3.head_object(Bucket=BUCKET, Key="parts/many")
                self.complete_parts("parts/many", parts)
            else:
                self.assertEqual(self.get_bytes("parts/many"), b"new")
        self.files_match_ledger()
        self.assert_clean_and_serving()

    def test_aws_cli_cp_both_ways_and_between_keys(self):
        data = os.urandom(17 * MIB + 12345)
        src = self.file(data, "parts-cli")
        out = os.path.join(self.h.tmp, "parts-cli.back")
        self.d.aws("s3", "cp", src, "s3://%s/parts/cli.bin" % BUCKET)
        fid, _ = self.object_row("parts/cli.bin")
        self.assertRegex(fid, r"^m[0-9a-f]{32}$")
        self.assertEqual(len(self.data_ids(fid)), 3)  # the CLI's 8 MiB parts
        self.d.aws("s3", "cp", "s3://%s/parts/cli.bin" % BUCKET, out)
        with open(out, "rb") as f:
            self.assertEqual(f.read(), data)
        # Between keys: the CLI copies in parts (UploadPartCopy) from a
        # source made of parts.
        self.d.aws("s3", "cp", "s3://%s/parts/cli.bin" % BUCKET, "s3://%s/parts/cli2.bin" % BUCKET)
        self.assertEqual(self.get_bytes("parts/cli2.bin"), data)
        self.files_match_ledger()
        self.assert_clean_and_serving()


class Lifecycle(StoreTestCase):
    """Expiry of forgotten uploads (on CreateMultipartUpload, at start-up)
    and the open-upload limit. expire_interval is long here, so the
    periodic sweep (class PeriodicExpiry) does not run during the test."""
    store_options = ["max_object_size = 32M", "multipart_expiry = 3s",
                     "max_multipart_uploads = 3"]

    def test_expiry_and_limit(self):
        s3 = self.d.boto3()
        before = self.ledger_exec("SELECT count(*) FROM upload_parts")[0][0]
        old = s3.create_multipart_upload(Bucket=BUCKET, Key="life/old")["UploadId"]
        s3.upload_part(Bucket=BUCKET, Key="life/old", UploadId=old, PartNumber=1, Body=b"o" * 99)
        a = s3.create_multipart_upload(Bucket=BUCKET, Key="life/a")["UploadId"]
        s3.create_multipart_upload(Bucket=BUCKET, Key="life/b")
        with self.assertRaises(Exception) as cm:
            s3.create_multipart_upload(Bucket=BUCKET, Key="life/c")
        self.assertEqual(cm.exception.response["ResponseMetadata"]["HTTPStatusCode"], 503)
        self.assertEqual(cm.exception.response["Error"]["Code"], "SlowDown")
        self.assertEqual(self.ledger_exec("SELECT count(*) FROM upload_parts")[0][0], before + 1)

        # Past multipart_expiry: the next CreateMultipartUpload aborts the
        # old ones (and removes their part files) before it takes a slot.
        time.sleep(4.5)  # expiry counts whole seconds
        s3.create_multipart_upload(Bucket=BUCKET, Key="life/new")
        for uid, key in ((old, "life/old"), (a, "life/a")):
            with self.assertRaises(Exception) as cm:
                s3.list_parts(Bucket=BUCKET, Key=key, UploadId=uid)
            self.assertEqual(cm.exception.response["Error"]["Code"], "NoSuchUpload")
        self.assertEqual(self.ledger_exec("SELECT count(*) FROM upload_parts")[0][0], before)
        self.assertEqual(self.d.data_problems(), [])  # their data is gone too
        self.assertIn("event=store.multipart_expired", self.d.log())

        # An upload left open across a restart after its expiry is aborted
        # at start-up.
        late = s3.create_multipart_upload(Bucket=BUCKET, Key="life/late")["UploadId"]
        s3.upload_part(Bucket=BUCKET, Key="life/late", UploadId=late, PartNumber=1, Body=b"l")
        self.d.stop()
        time.sleep(4.5)
        self.d.start()
        self.assertEqual(self.ledger_exec("SELECT count(*) FROM uploads")[0][0], 0)
        self.assertEqual(self.d.data_problems(), [])
        self.assert_clean_and_serving()


class ShutdownDuringCompletion(StoreTestCase):
    """SIGTERM with shutdown_timeout = 0 while CompleteMultipartUpload
    reads 40 MiB of parts on its own thread: ferryd stops promptly (the reading
    gives up and its connection is answered, or it was done), and after the
    restart the object is there whole, or the upload is there with all its
    parts and completes."""

    def test_sigterm_while_assembling(self):
        d = StoreFerryd(self.h, name="ferryd-term", policy=POLICY,
                        store=["max_object_size = 64M"], extra=["shutdown_timeout = 0s"])
        self.addCleanup(d.stop)
        d.start()
        s3 = d.boto3()
        key = "life/term"
        parts = [os.urandom(5 * MIB) for _ in range(8)]
        data = b"".join(parts)
        uid, done = start_upload(d, key, parts)
        result = {}

        def complete():
            try:
                result["r"] = d.boto3().complete_multipart_upload(
                    Bucket=BUCKET, Key=key, UploadId=uid, MultipartUpload={"Parts": done})
            except Exception as e:  # SlowDown, or the connection closed
                result["e"] = e
        t = threading.Thread(target=complete)
        t.start()
        # The parts being read for the object's SHA-256, or the answer
        # already there (completion writes nothing any more, so there is no
        # file to watch for): either outcome is checked below.
        time.sleep(0.05)
        begin = time.monotonic()
        self.assertEqual(d.stop(), 0)
        self.assertLess(time.monotonic() - begin, 10)
        t.join(30)
        self.assertEqual(d.tmp_files(), [])
        d.start()
        s3 = d.boto3()
        db = sqlite3.connect(d.ledger, timeout=10)
        try:
            uploads = db.execute("SELECT count(*) FROM uploads WHERE id = ?", (uid,)).fetchone()[0]
        finally:
            db.close()
        print("term outcome: %r uploads=%d" % (sorted(result), uploads), file=sys.stderr)
        if uploads == 0:
            self.assertEqual(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read(), data)
        else:
            self.assertNotIn("r", result)
            if "e" in result and hasattr(result["e"], "response"):
                self.assertEqual(result["e"].response["Error"]["Code"], "SlowDown")
            s3.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=uid,
                                         MultipartUpload={"Parts": done})
            self.assertEqual(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read(), data)
        self.assertEqual(d.data_problems(), [])


class PeriodicExpiry(StoreTestCase):
    """ferryd's expire_interval sweep aborts forgotten uploads of an idle
    store (no start-up, no new upload)."""

    @classmethod
    def setUpClass(cls):
        super(StoreTestCase, cls).setUpClass()
        cls.d = StoreFerryd(cls.h, policy=POLICY, extra=["expire_interval = 1s"],
                            store=["multipart_expiry = 2s"])
        cls.addClassCleanup(cls.d.stop)
        cls.d.start()

    def test_idle_upload_expires(self):
        s3 = self.d.boto3()
        uid = s3.create_multipart_upload(Bucket=BUCKET, Key="idle/x")["UploadId"]
        s3.upload_part(Bucket=BUCKET, Key="idle/x", UploadId=uid, PartNumber=1, Body=b"i" * 10)
        self.assertEqual(self.ledger_exec("SELECT count(*) FROM upload_parts")[0][0], 1)
        wait_until(lambda: self.ledger_exec("SELECT count(*) FROM uploads")[0][0] == 0,
                   timeout=10, what="the sweep expired the upload")
        self.assertEqual(self.ledger_exec("SELECT count(*) FROM upload_parts")[0][0], 0)
        self.assertEqual(self.d.data_problems(), [])
        self.assertIn("event=store.multipart_expired", self.d.log())
        self.assert_clean_and_serving()


class Crash(MultipartCase):
    """Uploads and SIGKILL (multipart_expiry at its default, so a restart
    does not expire the upload)."""

    def test_upload_survives_sigkill(self):
        """SIGKILL with a part stored: the part survives the restart (the
        ledger names its file, so the start-up sweep keeps it) and the
        upload completes afterwards."""
        s3 = self.d.boto3()
        key = "life/survivor"
        uid = s3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
        part = os.urandom(5 * MIB)
        e1 = s3.upload_part(Bucket=BUCKET, Key=key, UploadId=uid, PartNumber=1,
                            Body=part)["ETag"]
        self.d.kill()
        self.d.start()
        s3 = self.d.boto3()
        e2 = s3.upload_part(Bucket=BUCKET, Key=key, UploadId=uid, PartNumber=2,
                            Body=b"after restart")["ETag"]
        s3.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=uid,
                                     MultipartUpload={"Parts": [{"ETag": e1, "PartNumber": 1},
                                                                {"ETag": e2, "PartNumber": 2}]})
        self.assertEqual(self.get_bytes(key), part + b"after restart")
        self.files_match_ledger()
        self.assert_clean_and_serving()

    def test_sigkill_during_completion(self):
        """SIGKILL while CompleteMultipartUpload reads 30 MiB of parts:
        after the restart either the object is there whole (with its
        SHA-256, made of its parts, which the sweep kept) and the upload is
        gone, or the upload is there with all its parts and no object, and
        then it completes; no other file is left either way."""
        s3 = self.d.boto3()
        key = "life/crash"
        parts = [os.urandom(5 * MIB) for _ in range(6)]
        data = b"".join(parts)
        uid, done = self.start_upload(key, parts)
        result = {}

        def complete():
            try:
                result["r"] = self.d.boto3().complete_multipart_upload(
                    Bucket=BUCKET, Key=key, UploadId=uid, MultipartUpload={"Parts": done})
            except Exception as e:  # the connection dies with ferryd
                result["e"] = e
        t = threading.Thread(target=complete)
        t.start()
        # By then the request is sent and its parts being read, or done:
        # either outcome is checked below (a completion writes nothing and
        # reads 30 MiB in well under 0.1 s: on this machine's debug build
        # MP_CRASH_DELAY=0.03 left the upload, 0.06 the object).
        time.sleep(float(os.environ.get("MP_CRASH_DELAY", "0.04")))
        self.d.kill()
        t.join(30)
        self.d.start()
        s3 = self.d.boto3()
        uploads = self.ledger_exec("SELECT count(*) FROM uploads WHERE id = ?", uid)[0][0]
        print("crash outcome: object=%s upload=%d" % (self.exists(key), uploads), file=sys.stderr)
        if self.exists(key):
            self.assertEqual(uploads, 0)
            self.assertEqual(self.ledger_exec("SELECT sha256 FROM objects WHERE object_key = ?",
                                              key)[0][0], hashlib.sha256(data).hexdigest())
            self.assertEqual(self.ledger_exec(
                "SELECT count(p.data_id) FROM objects o JOIN object_parts p"
                " ON p.file_id = o.file_id WHERE o.object_key = ?", key)[0][0], 6)
        else:
            self.assertNotIn("r", result)  # no 200 for an object that is not there
            self.assertEqual(uploads, 1)
            self.assertEqual(len(s3.list_parts(Bucket=BUCKET, Key=key, UploadId=uid)["Parts"]), 6)
            s3.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=uid,
                                         MultipartUpload={"Parts": done})
        self.assertEqual(self.get_bytes(key), data)
        self.files_match_ledger()
        self.assert_clean_and_serving()

if __name__ == "__main__":
    ferry_harness.main()
