"""The pipelined MQTT delivery (docs/events.md §6, "Workers") when the broker
goes away with a window of publishes in flight: nothing is lost.

ferryd's MQTT target and its receipts worker publish a whole claimed batch
without waiting for each PUBACK, then mark delivered only what was
acknowledged. Here a backlog of events (written through the ledger API by
the benchmark's filler, as ferryd writes them) is being drained when the
broker is restarted:

- SIGTERM (the broker saves its persistence file): afterwards every
  delivery of both workers is "delivered", none dead, and a subscriber with
  a persistent session has received every event id at least once, each
  duplicate byte-identical;
- SIGKILL (the broker loses what it had not saved, which is the broker's
  own durability, not ferryd's): every delivery still ends "delivered"
  (what was not acknowledged is published again), none dead.

In both cases the restart must happen while deliveries are pending (the
test checks), and ferryd's log must show the lost connection.
"""

import os
import subprocess
import time
import unittest

from ferry_harness import Harness, build_dir
from outbox_harness import OutboxFerryd, wait_for

EVENTS = 3000
TOPIC_SUFFIX = "/events/object-created"


def fill_path():
    return os.path.join(build_dir(), "bench", "events", "ferry_bench_events_fill")


class OutboxPipeline(unittest.TestCase):

    def setUp(self):
        self.h = Harness(devices=["dev-a"]).start()
        try:
            self.h.add_ferryd("ferryd-sub")
            self.d = OutboxFerryd(self.h, targets={
                "bus": {"type": "mqtt", "timeout": "2s", "retry_min": "50ms",
                        "retry_max": "500ms", "max_attempts": "1000"},
            })
            # Once, so that its targets become the ledger's active set.
            self.d.start()
            self.d.stop()
            r = subprocess.run([fill_path(), self.d.ledger, str(EVENTS)], capture_output=True,
                               text=True, timeout=120)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.sub = self.h.ferryd_client(identity="ferryd-sub", clean=False).connect()
            self.sub.subscribe(self.h.prefix + TOPIC_SUFFIX)
            self.early = []
        except BaseException:
            self.h.close()
            raise

    def tearDown(self):
        self.h.close()

    def counts(self):
        with self.d.db() as c:
            return {(t, s): n for t, s, n in c.execute(
                "SELECT target, state, count(*) FROM deliveries GROUP BY target, state")}

    def restart_during_delivery(self, kill):
        self.d.start()
        # Some, not all, delivered: a window is in flight.
        wait_for(lambda: self.counts().get(("bus", "delivered"), 0) >= EVENTS // 10,
                 timeout=60, interval=0.01, what="first deliveries")
        before = self.counts()
        # ferryd may be back before the subscriber, and Mosquitto keeps at
        # most max_queued_messages (default 1000) for a session that is
        # away, dropping the rest: the broker's loss, not ferryd's, so the
        # restarted broker keeps them all.
        with open(os.path.join(self.h.broker_dir, "mosquitto.conf"), "a") as f:
            f.write("max_queued_messages 0\n")
        self.h.restart(kill=kill)
        self.resubscribe()
        self.assertGreater(before.get(("bus", "pending"), 0), 0, before)
        self.assertGreater(before.get(("@device", "pending"), 0), 0, before)

        def settled():
            c = self.counts()
            return (c.get(("bus", "delivered"), 0) == EVENTS and
                    c.get(("@device", "delivered"), 0) == EVENTS)
        wait_for(settled, timeout=180, interval=0.2, what="every delivery done")
        after = self.counts()
        self.assertEqual(sum(n for (_, s), n in after.items() if s != "delivered"), 0, after)
        log = self.d.log()
        self.assertTrue("broker.connection_lost" in log or "broker.disconnected" in log)
        return before

    def event_ids(self):
        with self.d.db() as c:
            return {r[0] for r in c.execute("SELECT id FROM events")}

    def resubscribe(self):
        """paho's network thread may die when the broker goes away: what the
        first client received is kept, then a new client takes over the
        persistent session (same identity, so the same client id) and gets
        what the broker kept for it."""
        self.sub.close()
        while not self.sub.messages.empty():
            self.early.append(self.sub.messages.get())
        self.sub = self.h.ferryd_client(identity="ferryd-sub", clean=False).connect()

    def received(self, want, timeout=60):
        """Event bodies by id from the subscriber (both clients), until
        every id in want has come (or nothing more comes)."""
        bodies = {}
        total = 0

        def take(m):
            eid = m.payload.split(b'"event_id":"', 1)[1].split(b'"', 1)[0].decode()
            bodies.setdefault(eid, set()).add(bytes(m.payload))

        for m in self.early:
            take(m)
            total += 1
        deadline = time.monotonic() + timeout
        while not want <= set(bodies) and time.monotonic() < deadline:
            try:
                m = self.sub.expect_message(timeout=5)
            except TimeoutError:
                break
            take(m)
            total += 1
        return bodies, total

    def test_1_broker_restart_loses_nothing(self):
        before = self.restart_during_delivery(kill=False)
        ids = self.event_ids()
        self.assertEqual(len(ids), EVENTS)
        bodies, total = self.received(ids)
        self.assertEqual(len(ids - set(bodies)), 0, "events never received")
        # A duplicate is the same event: same id, same bytes.
        self.assertTrue(all(len(b) == 1 for b in bodies.values()))
        print("restart at %s: received=%d duplicates=%d" % (before, total, total - len(ids)))

    def test_2_broker_killed_every_delivery_still_done(self):
        before = self.restart_during_delivery(kill=True)
        print("kill at %s: %s" % (before, self.counts()))


if __name__ == "__main__":
    unittest.main()
