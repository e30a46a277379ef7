"""The outbox under kill -9: 200 uploads from 8 devices (grant over MQTT,
PUT with curl) while ferryd is killed with SIGKILL at random moments and
restarted each time, with events being delivered to three targets: an MQTT
subscriber, an HTTPS webhook (signature checked with Python's hmac), and a
command that appends the event id to a file.

Afterwards (every delivery settled):
- every object stored under a grant has exactly one event, and every event
  names an object that exists (same bucket, key, grant): the object and its
  event are one transaction;
- every event id reached every target at least once (counted by id);
- duplicates carry the same event id: no grant appears under two ids on
  any target, and every body received is byte-identical for one id.
Uploads cut by a kill may fail on the client side; that is expected and
not counted: the ledger is the truth.
"""

import json
import os
import random
import stat
import threading
import time
import unittest

from ferry_harness import Harness
from outbox_harness import OutboxFerryd, Receiver, device, upload, wait_for

DEVICES = ["dev-%d" % i for i in range(8)]
UPLOADS = 200
KILLS = 4


class OutboxCrash(unittest.TestCase):

    def setUp(self):
        self.h = Harness(devices=DEVICES).start()
        self.hook = None
        try:
            self.h.add_ferryd("ferryd-sub")
            self.hook = Receiver(self.h)
            self.ids_file = os.path.join(self.h.tmp, "command-ids")
            cmd = os.path.join(self.h.tmp, "record.sh")
            with open(cmd, "w") as f:
                f.write("#!/bin/sh\n"
                        "grep -o '\"event_id\":\"ev_[0-9a-f]*\"' | head -n 1 >> %s\n"
                        % self.ids_file)
            os.chmod(cmd, stat.S_IRWXU)
            self.d = OutboxFerryd(self.h, targets={
                "bus": {"type": "mqtt"},
                "hook": self.hook.target(retry_min="50ms", retry_max="500ms",
                                         max_attempts="1000"),
                "rec": {"type": "command", "command": cmd, "timeout": "5s",
                        "retry_min": "50ms", "retry_max": "500ms", "max_attempts": "1000"},
            }, policy=["rate_per_minute = 100000", "rate_burst = 100000",
                       "max_open_grants = 10000"])
            # A persistent session: events published while the subscriber
            # is connected are all seen; it stays connected throughout.
            self.sub = self.h.ferryd_client(identity="ferryd-sub").connect()
            self.sub.subscribe("%s/events/object-created" % self.h.prefix)
            self.d.start()
        except BaseException:
            self.tearDown()
            raise

    def tearDown(self):
        if self.hook is not None:
            self.hook.close()
        self.h.close()

    def uploader(self, name, count, results):
        c = device(self.h, name)
        for i in range(count):
            try:
                _, code = upload(self.d, c, name, os.urandom(200 + i))
                results.append(code)
            except Exception as e:  # cut by a kill: the ledger decides
                results.append(repr(e)[:60])

    def test_kill9_during_uploads_and_delivery(self):
        rng = random.Random(int(os.environ.get("FERRY_TEST_SEED", time.time())))
        results = []
        per = UPLOADS // len(DEVICES)
        threads = [threading.Thread(target=self.uploader, args=(n, per, results))
                   for n in DEVICES]
        for t in threads:
            t.start()
        kills = 0
        while any(t.is_alive() for t in threads) and kills < KILLS:
            time.sleep(rng.uniform(0.3, 1.5))
            self.d.kill()
            kills += 1
            time.sleep(rng.uniform(0.0, 0.3))
            self.d.start()
        for t in threads:
            t.join(timeout=600)
        self.assertEqual(len(results), UPLOADS)
        ok = sum(1 for r in results if r == 200)
        self.assertGreater(ok, UPLOADS // 2, results)

        # Settle: nothing pending for any target.
        def settled():
            with self.d.db() as c:
                return c.execute("SELECT count(*) FROM deliveries"
                                 " WHERE state != 'delivered'").fetchone()[0] == 0
        wait_for(settled, timeout=120, interval=0.2, what="every delivery done")

        with self.d.db() as c:
            objects = {(r[0], r[1]): r[2] for r in c.execute(
                "SELECT bucket, object_key, grant_id FROM objects WHERE grant_id IS NOT NULL")}
            events = {r[0]: (r[1], r[2], r[3]) for r in c.execute(
                "SELECT id, bucket, object_key, grant_id FROM events")}
            n_deliv = c.execute("SELECT count(*) FROM deliveries").fetchone()[0]
        self.assertGreaterEqual(len(objects), ok)
        # One event per object, each naming an existing object and its grant.
        self.assertEqual(len(events), len(objects))
        for eid, (bucket, key, grant) in events.items():
            self.assertEqual(objects.get((bucket, key)), grant, eid)
        self.assertEqual(n_deliv, 4 * len(events))

        # Every target has every id at least once; duplicates share the id.
        bus = []
        while True:
            try:
                bus.append(self.sub.expect_message(timeout=2).payload)
            except TimeoutError:
                break
        for name, bodies in (("bus", bus), ("hook", [json.dumps(b).encode()
                                                      for _, b in self.hook.events])):
            by_grant = {}
            for body in bodies:
                rec = json.loads(body)["Records"][0]["ferry"]
                by_grant.setdefault(rec["grant"], set()).add(rec["event_id"])
            self.assertEqual(set().union(*by_grant.values()), set(events), name)
            self.assertTrue(all(len(v) == 1 for v in by_grant.values()), name)
        self.assertEqual(self.hook.bad, [])
        with open(self.ids_file) as f:
            rec_ids = [line.strip()[len('"event_id":"'):-1] for line in f if line.strip()]
        self.assertEqual(set(rec_ids), set(events))
        sys_dups = {"bus": len(bus) - len(events), "hook": len(self.hook.events) - len(events),
                    "rec": len(rec_ids) - len(events)}
        print("uploads ok=%d objects=%d kills=%d duplicates=%s" % (ok, len(objects), kills,
                                                                  sys_dups))


if __name__ == "__main__":
    unittest.main()
