"""Packs in the embedded store (src/store/store_fs.h): small PUT bodies are
written into regions of shared pack files, one fdatasync for many objects.

- Bodies up to pack_max_object go to packs, larger ones and pack_max_object
  = 0 to files of their own; both read back whole and by range.
- A deleted or replaced object's region is punched out; a pack that no
  object is left in (and is no longer the current one) is removed.
- GETs racing with replacements of the same key get one version whole, never
  bytes of a punched region.
- The start-up sweep punches regions no row names, cuts a pack's unnamed
  tail and removes packs no row names.
- Uploads of 256 KiB or more that arrive at once spread over up to four
  packs (one file's inode lock serialised their page-cache copies); smaller
  ones, and uploads one at a time, fill one pack.
"""

import hashlib
import http.client
import os
import ssl
import threading
import time

import ferry_harness
from ferry_harness import HarnessTestCase, wait_until
from store_harness import BUCKET, StoreFerryd

KIB = 1024


class Packs(HarnessTestCase):
    harness_devices = ("dev-a",)

    def start(self, *store):
        # A ferryd (and data directory) of its own for each test.
        d = StoreFerryd(self.h, name="ferryd-" + self._testMethodName[5:20], store=list(store))
        self.addCleanup(d.stop)
        d.start()
        return d

    def file_ids(self, d):
        return {k: v for k, v in d.ledger_rows("SELECT object_key, file_id FROM objects")}


    def test_small_bodies_packed_large_ones_not(self):
        d = self.start("pack_max_object = 64K")
        s3 = d.boto3()
        small = {"p/%d" % i: os.urandom(1000 + 7000 * i) for i in range(8)}
        big = os.urandom(64 * KIB + 1)
        for k, v in small.items():
            s3.put_object(Bucket=BUCKET, Key=k, Body=v)
        s3.put_object(Bucket=BUCKET, Key="p/big", Body=big)
        s3.put_object(Bucket=BUCKET, Key="p/empty", Body=b"")
        ids = self.file_ids(d)
        for k in small:
            self.assertTrue(ids[k].startswith("p"), ids[k])
            self.assertEqual(int(ids[k][9:25], 16) % 4096, 0, ids[k])  # aligned
        self.assertFalse(ids["p/big"].startswith("p"))
        self.assertFalse(ids["p/empty"].startswith("p"))
        self.assertEqual(len(d.pack_files()), 1)
        for k, v in small.items():
            self.assertEqual(s3.get_object(Bucket=BUCKET, Key=k)["Body"].read(), v)
            got = s3.get_object(Bucket=BUCKET, Key=k, Range="bytes=10-99")["Body"].read()
            self.assertEqual(got, v[10:100])
        self.assertEqual(s3.get_object(Bucket=BUCKET, Key="p/big")["Body"].read(), big)
        self.assertEqual(s3.get_object(Bucket=BUCKET, Key="p/empty")["Body"].read(), b"")
        # The last byte of one region is not followed by the next one's.
        got = s3.get_object(Bucket=BUCKET, Key="p/0", Range="bytes=990-")["Body"].read()
        self.assertEqual(got, small["p/0"][990:])
        # A copy of a packed object is packed too, and whole.
        s3.copy_object(Bucket=BUCKET, Key="p/copy", CopySource={"Bucket": BUCKET, "Key": "p/3"})
        self.assertTrue(self.file_ids(d)["p/copy"].startswith("p"))
        self.assertEqual(s3.get_object(Bucket=BUCKET, Key="p/copy")["Body"].read(), small["p/3"])
        self.assertEqual(d.data_problems(), [])

    def test_packs_off(self):
        d = self.start("pack_max_object = 0")
        s3 = d.boto3()
        s3.put_object(Bucket=BUCKET, Key="f/a", Body=b"own file")
        self.assertFalse(self.file_ids(d)["f/a"].startswith("p"))
        self.assertEqual(d.pack_files(), [])
        self.assertEqual(s3.get_object(Bucket=BUCKET, Key="f/a")["Body"].read(), b"own file")

    def test_deleted_regions_punched_empty_packs_removed(self):
        # 1 MiB packs: five 200 KiB objects to a pack.
        d = self.start("pack_max_object = 256K", "pack_size = 1M")
        s3 = d.boto3()
        data = {"d/%02d" % i: os.urandom(200 * KIB) for i in range(12)}
        for k, v in data.items():
            s3.put_object(Bucket=BUCKET, Key=k, Body=v)
        ids = self.file_ids(d)
        packs = sorted({ids[k][1:9] for k in data})
        self.assertGreaterEqual(len(packs), 3, ids)
        first = [k for k in data if ids[k][1:9] == packs[0]]
        # Half of the first pack's objects deleted: their holes punched.
        for k in first[: len(first) // 2]:
            s3.delete_object(Bucket=BUCKET, Key=k)
        self.assertEqual(d.data_problems(), [])
        self.assertIn(packs[0] + ".pack", [os.path.basename(p) for p in d.pack_files()])
        # All of them: the pack goes.
        for k in first[len(first) // 2:]:
            s3.delete_object(Bucket=BUCKET, Key=k)
        wait_until(lambda: packs[0] + ".pack" not in
                   [os.path.basename(p) for p in d.pack_files()],
                   timeout=5, what="the empty pack removed")
        self.assertIn("event=store.pack_removed", d.log())
        # Replacing objects punches the old regions as well.
        rest = [k for k in data if k not in first]
        for k in rest[:3]:
            data[k] = os.urandom(10 * KIB)
            s3.put_object(Bucket=BUCKET, Key=k, Body=data[k])
        self.assertEqual(d.data_problems(), [])
        for k in rest:
            self.assertEqual(s3.get_object(Bucket=BUCKET, Key=k)["Body"].read(), data[k])

    def test_reads_racing_replacements_get_whole_versions(self):
        d = self.start("pack_max_object = 1M")
        versions = [os.urandom(200 * KIB) for _ in range(4)]
        digests = {hashlib.sha256(v).hexdigest() for v in versions}
        d.boto3().put_object(Bucket=BUCKET, Key="race/k", Body=versions[0])
        stop = threading.Event()
        bad = []
        reads = [0]

        def reader():
            s3 = d.boto3()
            while not stop.is_set():
                try:
                    body = s3.get_object(Bucket=BUCKET, Key="race/k")["Body"].read()
                except Exception as e:  # a 404 between delete and put is fine
                    if "NoSuchKey" not in str(e):
                        bad.append(str(e))
                    continue
                reads[0] += 1
                if hashlib.sha256(body).hexdigest() not in digests:
                    bad.append("torn read of %d bytes" % len(body))

        threads = [threading.Thread(target=reader) for _ in range(3)]
        for t in threads:
            t.start()
        try:
            s3 = d.boto3()
            for i in range(60):
                if i % 5 == 4:
                    s3.delete_object(Bucket=BUCKET, Key="race/k")
                s3.put_object(Bucket=BUCKET, Key="race/k", Body=versions[i % len(versions)])
        finally:
            stop.set()
            for t in threads:
                t.join()
        self.assertEqual(bad, [])
        self.assertGreater(reads[0], 10)
        wait_until(lambda: d.data_problems() == [], timeout=5,
                   what=lambda: "no unnamed bytes: %r" % d.data_problems())

    def test_start_up_sweep_trims_and_removes(self):
        d = self.start("pack_max_object = 64K")
        s3 = d.boto3()
        s3.put_object(Bucket=BUCKET, Key="s/a", Body=b"a" * 5000)
        s3.put_object(Bucket=BUCKET, Key="s/b", Body=b"b" * 5000)
        self.assertEqual(d.stop(), 0)
        [pack] = d.pack_files()
        size = os.path.getsize(pack)
        # A crash's leftovers: an unrecorded region after the last object,
        # garbage between two regions, and a pack no row names.
        with open(pack, "r+b") as f:
            f.seek(5000)
            f.write(b"x" * 3000)       # inside s/a's aligned room: harmless
            f.seek(size)
            f.write(b"y" * 20000)      # a tail no row names
        stray = os.path.join(os.path.dirname(pack), "000000ff.pack")
        with open(stray, "wb") as f:
            f.write(b"z" * 10000)
        self.assertNotEqual(d.tmp_files(), [])
        d.start()
        self.assertEqual(d.tmp_files(), [])
        self.assertFalse(os.path.exists(stray))
        self.assertEqual(os.path.getsize(pack), size)
        self.assertEqual(s3.get_object(Bucket=BUCKET, Key="s/a")["Body"].read(), b"a" * 5000)
        self.assertEqual(s3.get_object(Bucket=BUCKET, Key="s/b")["Body"].read(), b"b" * 5000)
        # New objects go to a new pack, numbered after the highest seen.
        s3.put_object(Bucket=BUCKET, Key="s/c", Body=b"c" * 100)
        self.assertTrue(self.file_ids(d)["s/c"].startswith("p00000100"), self.file_ids(d))
        self.assertEqual(d.data_problems(), [])

    def test_concurrent_uploads_spread_over_packs(self):
        d = self.start("pack_max_object = 1M")
        s3 = d.boto3()
        ctx = ssl.create_default_context(cafile=d.ca)
        size = 512 * KIB
        bodies = {"spread/%d" % i: os.urandom(size) for i in range(12)}
        conns = []
        try:
            # Every upload's region is taken when its headers arrive: send
            # the headers and a first piece of each body, then the rest.
            for key, body in bodies.items():
                url = s3.generate_presigned_url("put_object",
                                                Params={"Bucket": BUCKET, "Key": key})
                c = http.client.HTTPSConnection("127.0.0.1", d.port, context=ctx, timeout=30)
                c.putrequest("PUT", url[len("https://127.0.0.1:%d" % d.port):],
                             skip_accept_encoding=True)
                c.putheader("Content-Length", str(size))
                c.endheaders()
                c.send(body[:4096])
                conns.append((c, body))
            time.sleep(0.5)
            for c, body in conns:
                c.send(body[4096:])
            for c, _ in conns:
                r = c.getresponse()
                self.assertEqual(r.status, 200, r.read())
        finally:
            for c, _ in conns:
                c.close()
        packs = {fid[1:9] for fid in self.file_ids(d).values()}
        self.assertGreater(len(packs), 1, packs)
        self.assertLessEqual(len(packs), 4, packs)
        self.assertEqual(len(d.pack_files()), len(packs))
        # Small ones that arrive together still share the newest pack.
        small = {"small/%d" % i: os.urandom(9000) for i in range(8)}
        threads = [threading.Thread(target=s3.put_object,
                                    kwargs=dict(Bucket=BUCKET, Key=k, Body=v))
                   for k, v in small.items()]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        ids = self.file_ids(d)
        self.assertEqual(len({ids[k][1:9] for k in small}), 1)
        for k, v in list(bodies.items()) + list(small.items()):
            self.assertEqual(s3.get_object(Bucket=BUCKET, Key=k)["Body"].read(), v, k)
        self.assertEqual(d.data_problems(), [])
        # After a restart every pack is still whole, and a new one begins.
        d.stop()
        d.start()
        s3 = d.boto3()
        for k, v in bodies.items():
            self.assertEqual(s3.get_object(Bucket=BUCKET, Key=k)["Body"].read(), v, k)
        self.assertEqual(d.data_problems(), [])


if __name__ == "__main__":
    ferry_harness.main()
