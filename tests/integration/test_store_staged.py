"""Staged direct writes (src/store/store.c, "Staged direct writes for medium
bodies"): a PUT or UploadPart body of 256 KiB up to 8 MiB is copied into
blocks of the store's MD5 hasher as it arrives, written with O_DIRECT and
MD5'd by the hasher's thread, side by side with the other bodies arriving.

- Bodies of every size around the edges (the 256 KiB threshold and block
  size, a pack region's 1 MiB, files of their own up to the hash pipeline's
  8 MiB), one at a time and many at once: the ETag is the MD5 of the bytes
  (answer, HEAD, listing), the bytes read back whole and by range, a data
  file ends where its body does, and the ledger and the data directory
  agree.
- A wrong Content-MD5 is BadDigest and stores nothing; a right one stores.
- A staged body cut off by its client leaves nothing behind, and the store
  goes on staging others.
- A 5 MiB part of a multipart upload is staged too; the completed object is
  whole.
- Bodies still arriving a second after they began give their blocks back
  (devices on slow links) and are hashed on their connection's thread from
  there: more slow bodies than the hasher has blocks for all get their MD5,
  and a fast body after them is staged again.
- After a restart every staged object is still whole.
"""

import base64
import hashlib
import http.client
import os
import re
import ssl
import threading
import time

import botocore.exceptions

import ferry_harness
from ferry_harness import wait_until
from store_harness import BUCKET, StoreTestCase

KIB = 1024
MIB = 1024 * KIB
BLOCK = 256 * KIB

EDGE_SIZES = [BLOCK - 1, BLOCK, BLOCK + 1, 2 * BLOCK, 2 * BLOCK + 4095, MIB - 1, MIB, MIB + 1,
              3 * MIB + 77, 8 * MIB - 1]


def md5_etag(body):
    return '"%s"' % hashlib.md5(body).hexdigest()


class Staged(StoreTestCase):

    def vector_md5(self):
        return self.d.md5_lanes() not in ("openssl", "portable")

    def stored_how(self, key):
        lines = [l for l in self.d.log().splitlines()
                 if "event=store.object_stored" in l and 'key="%s"' % key in l]
        self.assertEqual(len(lines), 1, key)
        return re.search(r"md5=(\w+)", lines[0]).group(1)

    def check_stored(self, bodies):
        s3 = self.d.boto3()
        listed = {o["Key"]: (o["ETag"], o["Size"]) for o in
                  s3.list_objects_v2(Bucket=BUCKET, Prefix="s/")["Contents"]}
        for k, v in bodies.items():
            self.assertEqual(listed[k], (md5_etag(v), len(v)), k)
            self.assertEqual(s3.head_object(Bucket=BUCKET, Key=k)["ETag"], md5_etag(v), k)
            self.assertEqual(s3.get_object(Bucket=BUCKET, Key=k)["Body"].read(), v, k)
            tail = s3.get_object(Bucket=BUCKET, Key=k, Range="bytes=-5000")["Body"].read()
            self.assertEqual(tail, v[-5000:], k)
        # A data file of its own ends where its body does (its tail went
        # through the page cache); a region's padding stays in the region.
        for fid, size in self.d._object_rows():
            if not fid.startswith("p"):
                path = os.path.join(self.d.data_dir, "objects", fid[:2], fid)
                self.assertEqual(os.path.getsize(path), size, fid)
        self.assertEqual(self.d.data_problems(), [])

    def test_one_at_a_time(self):
        s3 = self.d.boto3()
        bodies = {"s/one-%d" % n: os.urandom(n) for n in EDGE_SIZES}
        for k, v in bodies.items():
            self.assertEqual(s3.put_object(Bucket=BUCKET, Key=k, Body=v)["ETag"], md5_etag(v))
        self.check_stored(bodies)
        if self.vector_md5():
            self.assertEqual(self.stored_how("s/one-%d" % (BLOCK - 1)), "inline")
            for n in EDGE_SIZES[1:]:
                self.assertEqual(self.stored_how("s/one-%d" % n), "staged", n)

    def test_many_at_once(self):
        bodies = {"s/many-%02d-%d" % (i, n): os.urandom(n)
                  for i, n in enumerate(EDGE_SIZES * 3)}
        results = {}
        clients = {k: self.d.boto3() for k in bodies}
        start = threading.Barrier(len(bodies))

        def one(key, body):
            start.wait(timeout=30)
            results[key] = clients[key].put_object(Bucket=BUCKET, Key=key, Body=body)["ETag"]

        threads = [threading.Thread(target=one, args=kv) for kv in bodies.items()]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        for k, v in bodies.items():
            self.assertEqual(results.get(k), md5_etag(v), k)
        self.check_stored(bodies)
        # Restarted, every staged object is still whole.
        self.d.stop()
        self.d.start()
        self.check_stored(bodies)

    def test_content_md5_checked(self):
        s3 = self.d.boto3()
        body = os.urandom(MIB + 5)
        good = base64.b64encode(hashlib.md5(body).digest()).decode()
        bad = base64.b64encode(hashlib.md5(b"other").digest()).decode()
        with self.assertRaises(botocore.exceptions.ClientError) as cm:
            s3.put_object(Bucket=BUCKET, Key="s/bad", Body=body, ContentMD5=bad)
        self.assertEqual(cm.exception.response["Error"]["Code"], "BadDigest")
        with self.assertRaises(botocore.exceptions.ClientError):
            s3.head_object(Bucket=BUCKET, Key="s/bad")
        self.assertEqual(s3.put_object(Bucket=BUCKET, Key="s/good", Body=body,
                                       ContentMD5=good)["ETag"], md5_etag(body))
        self.check_stored({"s/good": body})

    def test_cut_off_body_leaves_nothing(self):
        s3 = self.d.boto3()
        for key, size, sent in (("s/cut-file", 3 * MIB, 600 * KIB),
                                ("s/cut-region", 900 * KIB, 300 * KIB)):
            c = self.open_put(s3, key, size)
            c.send(os.urandom(sent))
            c.close()
        wait_until(lambda: self.d.tmp_files() == [], timeout=20, what="cut-off bodies removed")
        for key in ("s/cut-file", "s/cut-region"):
            with self.assertRaises(botocore.exceptions.ClientError):
                s3.head_object(Bucket=BUCKET, Key=key)
        # Their blocks went back to the hasher: more bodies than it has
        # blocks for at once are staged afterwards.
        bodies = {"s/after-%d" % i: os.urandom(BLOCK + i) for i in range(40)}
        for k, v in bodies.items():
            s3.put_object(Bucket=BUCKET, Key=k, Body=v)
        self.check_stored(bodies)
        if self.vector_md5():
            self.assertEqual(self.stored_how("s/after-39"), "staged")

    def test_multipart_part_staged(self):
        s3 = self.d.boto3()
        parts = [os.urandom(5 * MIB), os.urandom(5 * MIB + 3), os.urandom(300 * KIB)]
        up = s3.create_multipart_upload(Bucket=BUCKET, Key="s/mp")["UploadId"]
        done = []
        for i, p in enumerate(parts, 1):
            r = s3.upload_part(Bucket=BUCKET, Key="s/mp", UploadId=up, PartNumber=i, Body=p)
            self.assertEqual(r["ETag"], md5_etag(p))
            done.append({"PartNumber": i, "ETag": r["ETag"]})
        s3.complete_multipart_upload(Bucket=BUCKET, Key="s/mp", UploadId=up,
                                     MultipartUpload={"Parts": done})
        whole = b"".join(parts)
        got = s3.get_object(Bucket=BUCKET, Key="s/mp")["Body"].read()
        self.assertEqual(hashlib.sha256(got).hexdigest(), hashlib.sha256(whole).hexdigest())
        self.assertEqual(self.d.data_problems(), [])

    def open_put(self, s3, key, size):
        url = s3.generate_presigned_url("put_object", Params={"Bucket": BUCKET, "Key": key})
        ctx = ssl.create_default_context(cafile=self.d.ca)
        c = http.client.HTTPSConnection("127.0.0.1", self.d.port, context=ctx, timeout=60)
        c.putrequest("PUT", url[len("https://127.0.0.1:%d" % self.d.port):],
                     skip_accept_encoding=True)
        c.putheader("Content-Length", str(size))
        c.endheaders()
        return c

    def test_slow_bodies_give_their_blocks_back(self):
        s3 = self.d.boto3()
        # 40 bodies, more than the 32 the hasher has blocks for; sizes that
        # cut pieces, 64-byte blocks and 4 KiB blocks at odd places; packed
        # regions and files of their own.
        sizes = [600 * KIB + 77, 2 * MIB + 4095, BLOCK + 1, 700 * KIB]
        bodies = {"s/slow-%02d" % i: os.urandom(sizes[i % len(sizes)]) for i in range(40)}
        conns = {}
        try:
            for k, v in bodies.items():
                conns[k] = self.open_put(s3, k, len(v))
                conns[k].send(v[:100 * KIB + 3])
            time.sleep(1.3)  # past the second a body may keep its blocks
            for k, v in bodies.items():
                conns[k].send(v[100 * KIB + 3:100 * KIB + 1000])
            wait_until(lambda: self.d.log().count("event=store.stage_released") >= 32,
                       timeout=20, what="slow bodies gave their blocks back")
            # A fast body now finds blocks.
            fast = os.urandom(MIB - 7)
            self.assertEqual(s3.put_object(Bucket=BUCKET, Key="s/fast", Body=fast)["ETag"],
                             md5_etag(fast))
            if self.vector_md5():
                self.assertEqual(self.stored_how("s/fast"), "staged")
            for k, v in bodies.items():
                at = 100 * KIB + 1000
                while at < len(v):  # odd-sized chunks, across 64-byte blocks
                    conns[k].send(v[at:at + 33333])
                    at += 33333
            for k, c in conns.items():
                r = c.getresponse()
                self.assertEqual(r.status, 200, r.read())
                self.assertEqual(r.getheader("ETag"), md5_etag(bodies[k]), k)
        finally:
            for c in conns.values():
                c.close()
        bodies["s/fast"] = fast
        self.check_stored(bodies)


if __name__ == "__main__":
    ferry_harness.main()
