"""Crash consistency of the embedded store: ferryd is killed with SIGKILL
while 32 uploads are in flight, then restarted. Every upload that got a 200
must be present with the right SHA-256; none that did not may be visible
unless it is whole (the kill can land after an upload's commit and before
its 200 reaches the client: the object is stored, all of it, and only the
answer was lost, as with any server; a retry of the PUT is harmless); no
partial or foreign object is ever visible; the store starts clean (tmp/
empty, no data file that the ledger does not name). Uploads finish at
different times (sizes 64 KB to 4 MB, and 8 to 24 MB in a second test, at a
limited rate), so the kill lands before, during and after commits.

A body is written straight into objects/xx/<file-id> and becomes an object
only with its ledger row, so what a crash leaves is a data file no row
names: StartupSweep plants such files (and a .part file of the older
layout, and a file in tmp/) and checks the restart removes them and only
them.
"""

import hashlib
import os
import random
import sqlite3
import subprocess
import threading
import time
import unittest

import ferry_harness
from ferry_harness import HarnessTestCase, wait_until
from store_harness import BUCKET, StoreFerryd

N = 32


class CrashConsistency(HarnessTestCase):
    harness_devices = ("dev-a",)

    def test_kill_9_during_32_uploads(self):
        # Bodies of the pack, the staged and the plain file paths.
        self.kill_during_uploads(32, [64 << 10, 256 << 10, 1 << 20, 2 << 20, 4 << 20],
                                 rate="4M", kill_after_s=0.6, name="small")

    def test_kill_9_during_large_uploads(self):
        # Bodies of 8 MiB and more go through the hash pipeline and are
        # written with O_DIRECT from its ring: the same promise holds.
        self.kill_during_uploads(6, [8 << 20, 12 << 20, 16 << 20, 24 << 20],
                                 rate="8M", kill_after_s=1.6, name="large")

    def kill_during_uploads(self, n, sizes, rate, kill_after_s, name):
        # A ferryd (data directory, ledger) of its own: the class shares
        # one harness.
        d = StoreFerryd(self.h, name="ferryd-" + name, store=["threads = 8"])
        self.addCleanup(d.stop)
        d.start()
        s3 = d.boto3()
        rnd = random.Random(5)
        uploads = []
        for i in range(n):
            # Each size at least once, so that some finish before the kill
            # and some do not.
            size = sizes[i] if i < len(sizes) else rnd.choice(sizes)
            data = os.urandom(size)
            path = os.path.join(self.h.tmp, "crash-%d.bin" % i)
            with open(path, "wb") as f:
                f.write(data)
            key = "crash/%02d.bin" % i
            url = s3.generate_presigned_url("put_object", Params={"Bucket": BUCKET, "Key": key},
                                            ExpiresIn=600)
            uploads.append({"key": key, "sha": hashlib.sha256(data).hexdigest(), "path": path,
                            "url": url, "size": size})
        procs = []
        try:
            for u in uploads:
                procs.append(subprocess.Popen(
                    ["curl", "-sS", "--cacert", d.ca, "--limit-rate", rate, "-o", "/dev/null",
                     "-w", "%{http_code}", "-X", "PUT", "-T", u["path"], u["url"]],
                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL))
            time.sleep(kill_after_s)
            # On a loaded machine the first answers can come later: the kill
            # waits for one (the largest bodies are still far from done).
            deadline = time.monotonic() + 30
            while all(p.poll() is None for p in procs) and time.monotonic() < deadline:
                time.sleep(0.05)
            d.kill()
            for p, u in zip(procs, uploads):
                out, _ = p.communicate(timeout=60)
                u["status"] = out.decode().strip()
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        acked = [u for u in uploads if u["status"] == "200"]
        other = [u for u in uploads if u["status"] != "200"]
        statuses = [(u["size"], u["status"]) for u in uploads]
        # The kill must have landed in the middle: some finished, some not.
        self.assertGreater(len(acked), 0, statuses)
        self.assertGreater(len(other), 0, statuses)

        d.start()
        self.assertEqual(d.tmp_files(), [])
        for u in acked:
            got = s3.get_object(Bucket=BUCKET, Key=u["key"])["Body"].read()
            self.assertEqual(hashlib.sha256(got).hexdigest(), u["sha"], u["key"])
        answer_lost = []
        for u in other:
            try:
                got = s3.get_object(Bucket=BUCKET, Key=u["key"])["Body"].read()
            except Exception as e:  # not stored: the expected case
                self.assertIn("NoSuchKey", str(e), u["key"])
                continue
            # Committed, then killed before the 200 left: whole, or a bug.
            self.assertEqual(hashlib.sha256(got).hexdigest(), u["sha"], u["key"])
            answer_lost.append(u)
        self.assertEqual(d.data_problems(), [])
        listed = s3.list_objects_v2(Bucket=BUCKET, Prefix="crash/").get("Contents", [])
        self.assertEqual(sorted(o["Key"] for o in listed),
                         sorted(u["key"] for u in acked + answer_lost))
        print("crash test: acked=%d interrupted=%d stored_answer_lost=%d" % (
            len(acked), len(other) - len(answer_lost), len(answer_lost)))


class StopUnderLoad(HarnessTestCase):
    harness_devices = ("dev-a",)

    def test_sigterm_while_small_uploads_commit(self):
        """SIGTERM while 16 clients keep putting 64 KiB objects, all into one
        pack, so that its uploads queue behind the committer that holds it:
        ferryd drains them and exits 0, every upload that got a 200 is
        there with its bytes, and nothing else is left."""
        d = StoreFerryd(self.h, name="ferryd-stop", extra=["shutdown_timeout = 1s"])
        self.addCleanup(d.stop)
        d.start()
        acked, lock, stop = {}, threading.Lock(), threading.Event()

        # Made here: creating boto3 clients is not safe from several threads.
        clients = [d.boto3() for _ in range(16)]

        def client(n):
            s3 = clients[n]
            i = 0
            while not stop.is_set():
                key = "load/%02d-%05d.bin" % (n, i)
                data = os.urandom(64 << 10)
                try:
                    s3.put_object(Bucket=BUCKET, Key=key, Body=data)
                except Exception:
                    return  # refused or cut off by the stop
                with lock:
                    acked[key] = hashlib.sha256(data).hexdigest()
                i += 1

        threads = [threading.Thread(target=client, args=(n,)) for n in range(16)]
        for t in threads:
            t.start()
        try:
            wait_until(lambda: len(acked) >= 64, timeout=60, what="uploads under way")
            self.assertEqual(d.stop(), 0)
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=60)
        self.assertEqual(d.tmp_files(), [])
        d.start()
        s3 = d.boto3()
        for key, sha in sorted(acked.items()):
            got = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
            self.assertEqual(hashlib.sha256(got).hexdigest(), sha, key)
        self.assertEqual(d.data_problems(), [])
        print("stop under load: acked=%d" % len(acked))


class StartupSweep(HarnessTestCase):
    harness_devices = ("dev-a",)

    def test_unnamed_data_files_removed_at_start_up(self):
        d = StoreFerryd(self.h)
        self.addCleanup(d.stop)
        d.start()
        s3 = d.boto3()
        s3.put_object(Bucket=BUCKET, Key="keep/a.bin", Body=b"kept bytes")
        self.assertEqual(d.stop(), 0)
        kept = d.object_files()
        self.assertEqual(len(kept), 1)
        self.assertEqual(d.tmp_files(), [])
        objects = os.path.join(d.data_dir, "objects")
        planted = [
            os.path.join(objects, "ab", "ab" + "0" * 30),           # an upload cut off
            os.path.join(objects, "cd", "cd" + "1" * 30 + ".part"),  # the older layout
            os.path.join(objects, "ef", "not-a-file-id"),            # anything else
            os.path.join(d.data_dir, "tmp", "stray"),
        ]
        for p in planted:
            with open(p, "wb") as f:
                f.write(b"partial")
        self.assertEqual(len(d.tmp_files()), len(planted))
        d.start()
        self.assertEqual([p for p in planted if os.path.exists(p)], [])
        self.assertEqual(d.object_files(), kept)
        self.assertEqual(d.tmp_files(), [])
        self.assertIn("event=store.swept removed=%d" % len(planted), d.log())
        got = s3.get_object(Bucket=BUCKET, Key="keep/a.bin")["Body"].read()
        self.assertEqual(got, b"kept bytes")


if __name__ == "__main__":
    ferry_harness.main()
