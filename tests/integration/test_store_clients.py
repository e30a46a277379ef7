"""The embedded store with unmodified third-party clients and the operator
credential: boto3 (put_object, upload_fileobj, download_file, get_object
with Range, head_object, list_objects_v2 with prefix, delimiter and
continuation tokens, delete_object), Debian's AWS CLI (`aws s3 cp` up and
down, `aws s3api put-object/get-object/head-object/list-objects-v2/
delete-object`), curl to a boto3-made pre-signed URL; and the store's
behaviour on SIGTERM with an upload in flight (nothing partial is left).
"""

import hashlib
import http.client
import io
import json
import os
import ssl
import subprocess
import time
import unittest

import ferry_harness
from ferry_harness import HarnessTestCase, wait_until
from store_harness import BUCKET, StoreFerryd, s3_code


class OperatorClients(HarnessTestCase):
    harness_devices = ("dev-a",)

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.d = StoreFerryd(cls.h)
        cls.addClassCleanup(cls.d.stop)
        cls.d.start()

    def path(self, name, data):
        p = os.path.join(self.h.tmp, name)
        with open(p, "wb") as f:
            f.write(data)
        return p

    def test_boto3_put_get_head_range_delete(self):
        s3 = self.d.boto3()
        data = os.urandom(200000)
        r = s3.put_object(Bucket=BUCKET, Key="proc/a b+c/ü.bin", Body=data,
                          ContentType="image/png", Metadata={"Camera": "north-7"})
        self.assertEqual(r["ETag"], '"%s"' % hashlib.md5(data).hexdigest())
        got = s3.get_object(Bucket=BUCKET, Key="proc/a b+c/ü.bin")
        self.assertEqual(got["Body"].read(), data)
        self.assertEqual(got["ContentType"], "image/png")
        self.assertEqual(got["Metadata"], {"camera": "north-7"})
        part = s3.get_object(Bucket=BUCKET, Key="proc/a b+c/ü.bin", Range="bytes=100-199")
        self.assertEqual(part["ResponseMetadata"]["HTTPStatusCode"], 206)
        self.assertEqual(part["Body"].read(), data[100:200])
        self.assertEqual(part["ContentRange"], "bytes 100-199/200000")
        tail = s3.get_object(Bucket=BUCKET, Key="proc/a b+c/ü.bin", Range="bytes=-10")
        self.assertEqual(tail["Body"].read(), data[-10:])
        with self.assertRaises(Exception) as cm:
            s3.get_object(Bucket=BUCKET, Key="proc/a b+c/ü.bin", Range="bytes=200000-")
        self.assertEqual(cm.exception.response["Error"]["Code"], "InvalidRange")
        head = s3.head_object(Bucket=BUCKET, Key="proc/a b+c/ü.bin")
        self.assertEqual(head["ContentLength"], len(data))
        # Replacing an object keeps one data file.
        s3.put_object(Bucket=BUCKET, Key="proc/a b+c/ü.bin", Body=b"v2")
        self.assertEqual(s3.get_object(Bucket=BUCKET, Key="proc/a b+c/ü.bin")["Body"].read(),
                         b"v2")
        s3.delete_object(Bucket=BUCKET, Key="proc/a b+c/ü.bin")
        with self.assertRaises(Exception) as cm:
            s3.get_object(Bucket=BUCKET, Key="proc/a b+c/ü.bin")
        self.assertEqual(cm.exception.response["Error"]["Code"], "NoSuchKey")
        with self.assertRaises(Exception) as cm:
            s3.get_object(Bucket="nope", Key="x")
        self.assertEqual(cm.exception.response["Error"]["Code"], "NoSuchBucket")
        # Deleting what is not there is not an error (S3 answers 204).
        s3.delete_object(Bucket=BUCKET, Key="proc/never")

    def test_reads_keep_the_connection_alive(self):
        """GET, HEAD, ListObjectsV2, DELETE and a NoSuchKey refusal are
        answered on one keep-alive connection: a processor fetching many
        objects pays for one TLS handshake, not one per object."""
        s3 = self.d.boto3()
        s3.put_object(Bucket=BUCKET, Key="proc/ka.bin", Body=b"keep")
        calls = [("GET", "get_object", {"Key": "proc/ka.bin"}, 200, b"keep"),
                 ("HEAD", "head_object", {"Key": "proc/ka.bin"}, 200, b""),
                 ("GET", "list_objects_v2", {"Prefix": "proc/ka"}, 200, None),
                 ("GET", "get_object", {"Key": "proc/none"}, 404, None),
                 ("DELETE", "delete_object", {"Key": "proc/ka.bin"}, 204, b""),
                 ("GET", "get_object", {"Key": "proc/ka.bin"}, 404, None)]
        ctx = ssl.create_default_context(cafile=self.d.ca)
        conn = http.client.HTTPSConnection("127.0.0.1", self.d.port, context=ctx, timeout=30)
        sock = None
        try:
            for method, op, params, status, body in calls:
                url = s3.generate_presigned_url(op, Params=dict(Bucket=BUCKET, **params))
                conn.request(method, url[len("https://127.0.0.1:%d" % self.d.port):])
                r = conn.getresponse()
                got = r.read()
                self.assertEqual(r.status, status, got)
                if body is not None:
                    self.assertEqual(got, body)
                self.assertNotEqual(r.getheader("Connection"), "close", op)
                if sock is None:
                    sock = conn.sock
                self.assertIs(conn.sock, sock, "%s opened a new connection" % op)
        finally:
            conn.close()

    def test_boto3_upload_fileobj_download_file(self):
        s3 = self.d.boto3()
        data = os.urandom(3 << 20)
        from boto3.s3.transfer import TransferConfig
        cfg = TransferConfig(multipart_threshold=64 << 20)
        s3.upload_fileobj(io.BytesIO(data), BUCKET, "proc/fileobj.bin", Config=cfg)
        out = os.path.join(self.h.tmp, "downloaded.bin")
        s3.download_file(BUCKET, "proc/fileobj.bin", out, Config=cfg)
        with open(out, "rb") as f:
            self.assertEqual(f.read(), data)

    def test_list_objects_v2(self):
        s3 = self.d.boto3()
        keys = ["list/a", "list/b/1", "list/b/2", "list/c/x/y", "list/d", "list/é", "lisu"]
        for k in keys:
            s3.put_object(Bucket=BUCKET, Key=k, Body=k.encode())
        r = s3.list_objects_v2(Bucket=BUCKET, Prefix="list/")
        self.assertEqual([o["Key"] for o in r["Contents"]], sorted(keys[:-1],
                         key=lambda k: k.encode()))
        self.assertEqual(r["KeyCount"], 6)
        self.assertEqual(r["Contents"][0]["Size"], len(b"list/a"))
        r = s3.list_objects_v2(Bucket=BUCKET, Prefix="list/", Delimiter="/")
        self.assertEqual([o["Key"] for o in r["Contents"]], ["list/a", "list/d", "list/é"])
        self.assertEqual([p["Prefix"] for p in r["CommonPrefixes"]], ["list/b/", "list/c/"])
        # Pages of two, with continuation tokens, delimiter included.
        pages = s3.get_paginator("list_objects_v2").paginate(
            Bucket=BUCKET, Prefix="list/", Delimiter="/", PaginationConfig={"PageSize": 2})
        seen = []
        n_pages = 0
        for page in pages:
            n_pages += 1
            seen += [o["Key"] for o in page.get("Contents", [])]
            seen += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
        self.assertEqual(sorted(seen), sorted(["list/a", "list/d", "list/é", "list/b/",
                                               "list/c/"]))
        self.assertEqual(n_pages, 3)
        r = s3.list_objects_v2(Bucket=BUCKET, Prefix="list/", StartAfter="list/b/2")
        self.assertEqual([o["Key"] for o in r["Contents"]], ["list/c/x/y", "list/d", "list/é"])
        with self.assertRaises(Exception) as cm:
            s3.list_objects_v2(Bucket=BUCKET, ContinuationToken="zz")
        self.assertEqual(cm.exception.response["Error"]["Code"], "InvalidArgument")

    def test_aws_cli(self):
        data = os.urandom(1 << 20)
        src = self.path("cli-src.bin", data)
        self.d.aws("s3", "cp", src, "s3://%s/cli/cp.bin" % BUCKET)
        dst = os.path.join(self.h.tmp, "cli-dst.bin")
        self.d.aws("s3", "cp", "s3://%s/cli/cp.bin" % BUCKET, dst)
        with open(dst, "rb") as f:
            self.assertEqual(f.read(), data)
        src2 = self.path("cli-src2.bin", b"s3api body")
        r = self.d.aws("s3api", "put-object", "--bucket", BUCKET, "--key", "cli/api.txt",
                       "--body", src2, "--content-type", "text/plain")
        self.assertEqual(json.loads(r.stdout)["ETag"],
                         '"%s"' % hashlib.md5(b"s3api body").hexdigest())
        r = self.d.aws("s3api", "head-object", "--bucket", BUCKET, "--key", "cli/api.txt")
        self.assertEqual(json.loads(r.stdout)["ContentLength"], 10)
        out = os.path.join(self.h.tmp, "cli-api-out.txt")
        self.d.aws("s3api", "get-object", "--bucket", BUCKET, "--key", "cli/api.txt", out)
        with open(out, "rb") as f:
            self.assertEqual(f.read(), b"s3api body")
        r = self.d.aws("s3api", "list-objects-v2", "--bucket", BUCKET, "--prefix", "cli/")
        self.assertEqual(sorted(o["Key"] for o in json.loads(r.stdout)["Contents"]),
                         ["cli/api.txt", "cli/cp.bin"])
        self.d.aws("s3api", "delete-object", "--bucket", BUCKET, "--key", "cli/api.txt")
        r = self.d.aws("s3api", "head-object", "--bucket", BUCKET, "--key", "cli/api.txt",
                       check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("404", r.stderr)

    def test_curl_to_boto3_presigned_url(self):
        s3 = self.d.boto3()
        url = s3.generate_presigned_url("put_object", Params={"Bucket": BUCKET,
                                                              "Key": "proc/presigned.bin"},
                                        ExpiresIn=300)
        data = os.urandom(12345)
        code, body = self.d.curl(["-X", "PUT", "-T", self.path("ps.bin", data), url])
        self.assertEqual(code, 200, body)
        url = s3.generate_presigned_url("get_object", Params={"Bucket": BUCKET,
                                                              "Key": "proc/presigned.bin"},
                                        ExpiresIn=300)
        out = subprocess.run(["curl", "-sS", "--fail", "--cacert", self.d.ca, url],
                             capture_output=True, check=True, timeout=60).stdout
        self.assertEqual(out, data)


class Shutdown(HarnessTestCase):
    harness_devices = ("dev-a",)

    def test_sigterm_with_an_upload_in_flight_leaves_nothing(self):
        d = StoreFerryd(self.h, extra=["shutdown_timeout = 1s"])
        self.addCleanup(d.stop)
        d.start()
        s3 = d.boto3()
        url = s3.generate_presigned_url("put_object", Params={"Bucket": BUCKET,
                                                              "Key": "slow/partial.bin"},
                                        ExpiresIn=300)
        src = os.path.join(self.h.tmp, "slow.bin")
        with open(src, "wb") as f:
            f.write(os.urandom(4 << 20))
        curl = subprocess.Popen(["curl", "-sS", "--cacert", d.ca, "--limit-rate", "200K",
                                 "-X", "PUT", "-T", src, url],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_until(lambda: d.tmp_files() != [], timeout=10, what="upload started")
            self.assertEqual(d.stop(), 0)
        finally:
            curl.kill()
            curl.wait()
        self.assertEqual(d.tmp_files(), [])
        self.assertIn("event=store.stopped aborted=1", d.log())
        d.start()
        with self.assertRaises(Exception) as cm:
            d.boto3().head_object(Bucket=BUCKET, Key="slow/partial.bin")
        self.assertIn("404", str(cm.exception))
        self.assertEqual(d.object_files(), [])


if __name__ == "__main__":
    ferry_harness.main()
