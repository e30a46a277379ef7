"""CopyObject on the embedded store with real clients (boto3, Debian's AWS
CLI): the copy's bytes, ETag, content type and metadata (COPY and REPLACE
directives), a replaced destination's old file removed, and every refusal
with its status and S3 code, each followed by a valid upload with no
temporary file left. Then the operations the store does not implement
(ACLs, tagging, versions, DeleteObjects): each is
answered 501 NotImplemented and leaves the object it names as it was.
"""

import hashlib
import os
import threading
import time

import ferry_harness
from ferry_harness import HarnessTestCase
from store_harness import BUCKET, GRANT_KEY, GRANT_SECRET, StoreFerryd
from test_store_put import StoreTestCase


class CopyObject(StoreTestCase):

    def put(self, key, data, **kw):
        self.d.boto3().put_object(Bucket=BUCKET, Key=key, Body=data, **kw)

    def assert_code(self, call, status, code):
        with self.assertRaises(Exception) as cm:
            call()
        err = cm.exception.response
        self.assertEqual(err["ResponseMetadata"]["HTTPStatusCode"], status, err)
        self.assertEqual(err["Error"]["Code"], code, err)

    def files_match_ledger(self):
        self.assertEqual(self.d.data_problems(), [])

    def test_copy_keeps_bytes_etag_and_metadata(self):
        s3 = self.d.boto3()
        data = os.urandom(300000)
        self.put("copy/src.bin", data, ContentType="image/png", Metadata={"camera": "north"})
        r = s3.copy_object(Bucket=BUCKET, Key="copy/dst.bin",
                           CopySource={"Bucket": BUCKET, "Key": "copy/src.bin"})
        src = s3.head_object(Bucket=BUCKET, Key="copy/src.bin")
        dst = s3.head_object(Bucket=BUCKET, Key="copy/dst.bin")
        self.assertEqual(r["CopyObjectResult"]["ETag"], src["ETag"])
        self.assertEqual(dst["ETag"], src["ETag"])
        self.assertEqual(dst["ContentType"], "image/png")
        self.assertEqual(dst["Metadata"], {"camera": "north"})
        self.assertEqual(self.get_bytes("copy/dst.bin"), data)
        rows = self.ledger_exec("SELECT sha256, size, device, grant_id FROM objects"
                                " WHERE object_key = 'copy/dst.bin'")
        src_sha = self.ledger_exec("SELECT sha256 FROM objects"
                                   " WHERE object_key = 'copy/src.bin'")[0][0]
        self.assertEqual(rows, [(src_sha, len(data), None, None)])  # an operator's object
        # The source is untouched and independent of the copy.
        s3.delete_object(Bucket=BUCKET, Key="copy/src.bin")
        self.assertEqual(self.get_bytes("copy/dst.bin"), data)
        self.files_match_ledger()
        self.assert_clean_and_serving()

    def test_replace_directive_and_overwrite(self):
        s3 = self.d.boto3()
        self.put("copy/a", b"alpha", ContentType="text/plain", Metadata={"k": "v"})
        self.put("copy/b", b"old bytes of b")
        s3.copy_object(Bucket=BUCKET, Key="copy/b", CopySource="%s/copy/a" % BUCKET,
                       MetadataDirective="REPLACE", ContentType="application/json",
                       Metadata={"other": "x"})
        head = s3.head_object(Bucket=BUCKET, Key="copy/b")
        self.assertEqual(head["ContentType"], "application/json")
        self.assertEqual(head["Metadata"], {"other": "x"})
        self.assertEqual(self.get_bytes("copy/b"), b"alpha")
        # Onto itself with REPLACE: allowed (S3 uses it to change metadata).
        s3.copy_object(Bucket=BUCKET, Key="copy/a", CopySource="%s/copy/a" % BUCKET,
                       MetadataDirective="REPLACE", ContentType="text/csv")
        self.assertEqual(s3.head_object(Bucket=BUCKET, Key="copy/a")["ContentType"], "text/csv")
        self.assertEqual(self.get_bytes("copy/a"), b"alpha")
        # The replaced files are gone: exactly the files the ledger names.
        self.files_match_ledger()
        self.assert_clean_and_serving()

    def test_aws_cli(self):
        self.put("copy/cli-src", b"from the cli")
        self.d.aws("s3api", "copy-object", "--bucket", BUCKET, "--key", "copy/cli-dst",
                   "--copy-source", "%s/copy/cli-src" % BUCKET)
        self.assertEqual(self.get_bytes("copy/cli-dst"), b"from the cli")
        self.d.aws("s3", "cp", "s3://%s/copy/cli-src" % BUCKET, "s3://%s/copy/cli-dst2" % BUCKET)
        self.assertEqual(self.get_bytes("copy/cli-dst2"), b"from the cli")
        # A key with spaces and UTF-8 (the copy source is URL-encoded).
        self.put("copy/ü n.txt", b"utf8")
        self.d.aws("s3", "cp", "s3://%s/copy/ü n.txt" % BUCKET, "s3://%s/copy/ü 2.txt" % BUCKET)
        self.assertEqual(self.get_bytes("copy/ü 2.txt"), b"utf8")
        self.assert_clean_and_serving()

    def test_large_copy_while_others_are_served(self):
        """A 30 MiB copy runs on a thread of its own with its connection
        suspended: GETs on other connections are answered meanwhile, and
        the copy is whole (its SHA-256 in the ledger and its bytes)."""
        s3 = self.d.boto3()
        data = os.urandom(30 << 20)
        self.put("copy/big-src.bin", data)
        self.put("copy/small.bin", b"small")
        result = {}

        def copy():
            result["r"] = self.d.boto3().copy_object(
                Bucket=BUCKET, Key="copy/big-dst.bin",
                CopySource={"Bucket": BUCKET, "Key": "copy/big-src.bin"})

        t = threading.Thread(target=copy)
        t.start()
        reads = 0
        while t.is_alive() or reads == 0:
            self.assertEqual(s3.get_object(Bucket=BUCKET, Key="copy/small.bin")["Body"].read(),
                             b"small")
            reads += 1
        t.join()
        self.assertEqual(result["r"]["CopyObjectResult"]["ETag"],
                         '"%s"' % hashlib.md5(data).hexdigest())
        got = s3.get_object(Bucket=BUCKET, Key="copy/big-dst.bin")["Body"].read()
        self.assertEqual(hashlib.sha256(got).hexdigest(), hashlib.sha256(data).hexdigest())
        self.files_match_ledger()

    def test_refusals(self):
        s3 = self.d.boto3()
        self.put("copy/r", b"r")
        self.assert_code(lambda: s3.copy_object(Bucket=BUCKET, Key="copy/x",
                                                CopySource="%s/copy/missing" % BUCKET),
                         404, "NoSuchKey")
        self.assert_code(lambda: s3.copy_object(Bucket=BUCKET, Key="copy/x",
                                                CopySource="other-bucket/copy/r"),
                         404, "NoSuchBucket")
        self.assert_code(lambda: s3.copy_object(Bucket=BUCKET, Key="copy/r",
                                                CopySource="%s/copy/r" % BUCKET),
                         400, "InvalidRequest")
        self.assert_code(lambda: s3.copy_object(Bucket=BUCKET, Key="copy/x",
                                                CopySource="%s/copy/r" % BUCKET,
                                                CopySourceIfMatch='"abc"'),
                         412, "PreconditionFailed")
        # The conditions are checked (store_copy_source_open): one that
        # holds copies.
        etag = s3.head_object(Bucket=BUCKET, Key="copy/r")["ETag"]
        s3.copy_object(Bucket=BUCKET, Key="copy/cond", CopySource="%s/copy/r" % BUCKET,
                       CopySourceIfMatch=etag)
        self.assertEqual(self.get_bytes("copy/cond"), b"r")
        s3.delete_object(Bucket=BUCKET, Key="copy/cond")
        self.assert_code(lambda: s3.copy_object(Bucket=BUCKET, Key="copy/x",
                                                CopySource={"Bucket": BUCKET, "Key": "copy/r",
                                                            "VersionId": "v1"}),
                         501, "NotImplemented")
        self.assert_code(lambda: s3.copy_object(Bucket=BUCKET, Key="copy/x",
                                                CopySource="%s/%s" % (BUCKET, "k" * 1025)),
                         400, "KeyTooLongError")
        # Device credentials never copy (they may only upload to a grant).
        dev = self.d.boto3(access_key=GRANT_KEY, secret=GRANT_SECRET)
        self.assert_code(lambda: dev.copy_object(Bucket=BUCKET, Key="copy/x",
                                                 CopySource="%s/copy/r" % BUCKET),
                         403, "AccessDenied")
        self.assertFalse(self.exists("copy/x"))
        self.files_match_ledger()
        self.assert_clean_and_serving()


class NotImplementedOperations(StoreTestCase):

    def test_subresources_are_not_the_plain_operation(self):
        s3 = self.d.boto3()
        data = os.urandom(2000)
        s3.put_object(Bucket=BUCKET, Key="ni/obj", Body=data)
        calls = [
            lambda: s3.put_object_acl(Bucket=BUCKET, Key="ni/obj", ACL="private"),
            lambda: s3.get_object_acl(Bucket=BUCKET, Key="ni/obj"),
            lambda: s3.put_object_tagging(Bucket=BUCKET, Key="ni/obj",
                                          Tagging={"TagSet": [{"Key": "a", "Value": "b"}]}),
            lambda: s3.delete_object_tagging(Bucket=BUCKET, Key="ni/obj"),
            lambda: s3.list_object_versions(Bucket=BUCKET),
            lambda: s3.delete_object(Bucket=BUCKET, Key="ni/obj", VersionId="v1"),
            lambda: s3.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": "ni/obj"}]}),
        ]
        for call in calls:
            with self.assertRaises(Exception) as cm:
                call()
            err = cm.exception.response
            self.assertEqual(err["ResponseMetadata"]["HTTPStatusCode"], 501, err)
            self.assertEqual(err["Error"]["Code"], "NotImplemented", err)
            # The object those requests name is as it was.
            self.assertEqual(self.get_bytes("ni/obj"), data)
        self.assert_clean_and_serving()


class CopyAtShutdown(HarnessTestCase):
    harness_devices = ("dev-a",)

    def test_sigterm_during_a_large_copy(self):
        """SIGTERM while a 256 MiB CopyObject runs, with no grace period
        (shutdown_timeout = 0s): the copy either ends first (200, and the
        copy is whole after a restart) or gives up (503 SlowDown, no
        object); ferryd exits 0 either way, and no partial object or
        temporary file is left. Which one happens depends on timing; the
        test prints it."""
        d = StoreFerryd(self.h, name="ferryd-copystop", extra=["shutdown_timeout = 0s"])
        self.addCleanup(d.stop)
        d.start()
        src = os.path.join(self.h.tmp, "copy-src.bin")
        with open(src, "wb") as f:
            block = os.urandom(1 << 20)
            for _ in range(256):
                f.write(block)
        with open(src, "rb") as f:
            d.boto3().put_object(Bucket=BUCKET, Key="copy/src.bin", Body=f)
        want = hashlib.sha256(block * 256).hexdigest()
        os.unlink(src)  # disk: the store's copy is enough
        result = {}

        def copy():
            try:
                # No retry: a retried copy would meet the stopped store.
                result["r"] = d.boto3(retries={"max_attempts": 0}).copy_object(
                    Bucket=BUCKET, Key="copy/dst.bin",
                    CopySource={"Bucket": BUCKET, "Key": "copy/src.bin"})
            except Exception as e:
                result["e"] = e

        t = threading.Thread(target=copy)
        t.start()
        time.sleep(0.05)  # the request on its way; the copy takes ~0.2 s or more
        self.assertEqual(d.stop(), 0)
        t.join(timeout=60)
        self.assertEqual(d.tmp_files(), [])
        d.start()
        s3 = d.boto3()
        if "r" in result:
            got = s3.get_object(Bucket=BUCKET, Key="copy/dst.bin")["Body"].read()
            self.assertEqual(hashlib.sha256(got).hexdigest(), want)
            print("copy at shutdown: finished first")
        else:
            err = getattr(result["e"], "response", None)
            if err is not None:  # answered: the give-up
                self.assertEqual(err["ResponseMetadata"]["HTTPStatusCode"], 503, err)
                self.assertEqual(err["Error"]["Code"], "SlowDown", err)
            with self.assertRaises(Exception) as cm:
                s3.head_object(Bucket=BUCKET, Key="copy/dst.bin")
            self.assertIn("404", str(cm.exception))
            print("copy at shutdown: gave up (%s)" % ("503" if err is not None else "cut off"))
        self.assertEqual(d.data_problems(), [])


if __name__ == "__main__":
    ferry_harness.main()
