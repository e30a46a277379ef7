"""Large bodies through the embedded store: bodies of 8 MiB and more go
through the helper pipeline (MD5, SHA-256 and the file write on three
threads, each reading the worker's blocks in place) and are written with
O_DIRECT while they arrive (the last block, when it is not whole pages,
through the page cache). A 40 MiB PUT (many blocks, five
writeback steps, a short last block) must come back byte for byte with the
ETag of its MD5; a 20 MiB PUT whose Content-MD5 does not match is refused
with BadDigest and leaves no data file behind, and the store goes on
serving.
"""

import base64
import hashlib
import os
import unittest

import ferry_harness
from ferry_harness import wait_until
from store_harness import BUCKET, StoreTestCase, s3_code


class LargeBodies(StoreTestCase):
    def setUp(self):
        super().setUp()
        self.s3 = self.d.boto3()

    def payload(self, name, size):
        data = os.urandom(size)
        path = os.path.join(self.h.tmp, name)
        with open(path, "wb") as f:
            f.write(data)
        return data, path

    def put(self, key, path, headers=()):
        url = self.s3.generate_presigned_url("put_object", Params={"Bucket": BUCKET, "Key": key},
                                             ExpiresIn=600)
        args = ["-X", "PUT", "-T", path, "-D", "-"]
        for h in headers:
            args += ["-H", h]
        return self.d.curl(args + [url], timeout=120)

    def test_40_mib_put_round_trip(self):
        size = (40 << 20) + 12345  # the last pipeline block is a short one
        data, path = self.payload("big.bin", size)
        code, body = self.put("large/big.bin", path)
        self.assertEqual(code, 200, body)
        md5 = hashlib.md5(data).hexdigest()
        self.assertIn('etag: "%s"' % md5, body.lower())
        got = self.s3.get_object(Bucket=BUCKET, Key="large/big.bin")
        self.assertEqual(got["ETag"], '"%s"' % md5)
        self.assertEqual(hashlib.sha256(got["Body"].read()).hexdigest(),
                         hashlib.sha256(data).hexdigest())
        self.assertEqual(len(self.d.object_files()), 1)
        self.assertEqual(self.d.tmp_files(), [])

    def test_direct_write_edges(self):
        # The pipeline writes whole pages with O_DIRECT and a last block
        # that is not a whole number of pages through the page cache: a body
        # of whole 256 KiB blocks, one whose last block is whole pages but
        # short, one with a single odd byte at the end.
        for i, size in enumerate([(9 << 20), (9 << 20) + 8192, (8 << 20) + 1]):
            data, path = self.payload("edge%d.bin" % i, size)
            code, body = self.put("large/edge%d.bin" % i, path)
            self.assertEqual(code, 200, body)
            self.assertIn('etag: "%s"' % hashlib.md5(data).hexdigest(), body.lower())
            got = self.s3.get_object(Bucket=BUCKET, Key="large/edge%d.bin" % i)["Body"].read()
            self.assertEqual(got, data, size)

    def test_20_mib_bad_content_md5_leaves_nothing(self):
        _, path = self.payload("bad.bin", 20 << 20)
        wrong = base64.b64encode(hashlib.md5(b"something else").digest()).decode()
        code, body = self.put("large/bad.bin", path, headers=["Content-MD5: " + wrong])
        self.assertEqual(code, 400, body)
        self.assertEqual(s3_code(body), "BadDigest")
        wait_until(lambda: self.d.tmp_files() == [], timeout=5, what="no data file left")
        self.assertEqual(self.d.object_files(), [])
        # Still serving.
        data, path = self.payload("ok.bin", 9 << 20)
        code, body = self.put("large/ok.bin", path)
        self.assertEqual(code, 200, body)
        got = self.s3.get_object(Bucket=BUCKET, Key="large/ok.bin")["Body"].read()
        self.assertEqual(got, data)


if __name__ == "__main__":
    ferry_harness.main()
