"""The ETag's MD5 hashed by the committers (src/store/store.c, "MD5 later"):
while several PUT bodies arrive at once, a body with no Content-MD5 to check
is hashed after it has arrived, read back with the other bodies of its
commit batch and hashed side by side (src/store/md5_lanes.c).

- Concurrent PUTs of sizes around every edge (a byte, packed regions, data
  files of their own up to the hash pipeline's 8 MiB) get the MD5 of their
  bytes as ETag, in the answer, in HEAD and in listings, and read back whole;
  at least one of them went through the committers (when the CPU has the
  vector instructions).
- Among them, PUTs with a Content-MD5 are still checked before the commit:
  a wrong one is BadDigest and stores nothing, a right one is stored.
- A lone PUT is hashed as it arrives.
(Bodies of 256 KiB up to 8 MiB are mostly staged instead, and MD5'd by the
store's hasher as they arrive: test_store_staged.py.)
"""

import base64
import hashlib
import os
import threading

import botocore.exceptions

import ferry_harness
from store_harness import BUCKET, StoreTestCase

KIB = 1024
MIB = 1024 * KIB


class Md5Later(StoreTestCase):

    def lanes(self):
        return self.d.md5_lanes()

    def put_all(self, bodies, md5_headers=None):
        """PUTs every (key, body) at once, one thread and client each;
        returns {key: ETag or the error code}."""
        md5_headers = md5_headers or {}
        results = {}
        start = threading.Barrier(len(bodies))

        # Clients are made here: boto3's default session is not thread-safe.
        clients = {k: self.d.boto3() for k in bodies}

        def one(key, body):
            s3 = clients[key]
            kw = {}
            if key in md5_headers:
                kw["ContentMD5"] = md5_headers[key]
            start.wait(timeout=30)
            try:
                results[key] = s3.put_object(Bucket=BUCKET, Key=key, Body=body, **kw)["ETag"]
            except botocore.exceptions.ClientError as e:
                results[key] = e.response["Error"]["Code"]

        threads = [threading.Thread(target=one, args=kv) for kv in bodies.items()]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        return results

    def test_concurrent_puts_get_their_md5(self):
        sizes = [1, 55, 56, 64, 4 * KIB + 3, 64 * KIB, 64 * KIB + 1, 200 * KIB, MIB - 1, MIB,
                 MIB + 1, 3 * MIB + 77, 8 * MIB - 1]
        bodies = {}
        for i, n in enumerate(sizes * 2):
            bodies["m/%02d-%d" % (i, n)] = os.urandom(n)
        for attempt in range(3):
            etags = self.put_all(bodies)
            for k, v in bodies.items():
                self.assertEqual(etags[k], '"%s"' % hashlib.md5(v).hexdigest(), k)
            if self.lanes() == "openssl" or "md5=later" in self.d.log():
                break
        s3 = self.d.boto3()
        listed = {o["Key"]: o["ETag"] for o in
                  s3.list_objects_v2(Bucket=BUCKET, Prefix="m/")["Contents"]}
        for k, v in bodies.items():
            want = '"%s"' % hashlib.md5(v).hexdigest()
            self.assertEqual(listed[k], want, k)
            self.assertEqual(s3.head_object(Bucket=BUCKET, Key=k)["ETag"], want, k)
            self.assertEqual(s3.get_object(Bucket=BUCKET, Key=k)["Body"].read(), v, k)
        if self.lanes() != "openssl":
            self.assertIn("md5=later", self.d.log(),
                          "no PUT was hashed by the committers in 3 rounds of 26")
        self.assertEqual(self.d.data_problems(), [])

    def test_content_md5_still_checked_among_them(self):
        bodies = {"c/%02d" % i: os.urandom(300 * KIB + i) for i in range(12)}
        good = base64.b64encode(hashlib.md5(bodies["c/00"]).digest()).decode()
        bad = base64.b64encode(hashlib.md5(b"something else").digest()).decode()
        etags = self.put_all(bodies, md5_headers={"c/00": good, "c/01": bad})
        self.assertEqual(etags["c/01"], "BadDigest")
        for k, v in bodies.items():
            if k != "c/01":
                self.assertEqual(etags[k], '"%s"' % hashlib.md5(v).hexdigest(), k)
        s3 = self.d.boto3()
        with self.assertRaises(botocore.exceptions.ClientError):
            s3.head_object(Bucket=BUCKET, Key="c/01")
        self.assertEqual(self.d.data_problems(), [])

    def test_lone_put_hashed_as_it_arrives(self):
        s3 = self.d.boto3()
        body = os.urandom(200 * KIB)  # under the 256 KiB that are staged (test_store_staged)
        etag = s3.put_object(Bucket=BUCKET, Key="lone", Body=body)["ETag"]
        self.assertEqual(etag, '"%s"' % hashlib.md5(body).hexdigest())
        lines = [l for l in self.d.log().splitlines()
                 if "event=store.object_stored" in l and 'key="lone"' in l]
        self.assertEqual(len(lines), 1)
        self.assertIn("md5=inline", lines[0])


if __name__ == "__main__":
    ferry_harness.main()
