"""Event retention: ferryd removes an event from the ledger once every
target has it and `event_retention` has passed (here 2 s, swept every
second), and keeps an event whose webhook delivery is still pending until
the webhook is back and has it. The stored objects stay.
"""

import os
import time
import unittest

from ferry_harness import Harness
from outbox_harness import OutboxFerryd, OutboxTestCase, Receiver, device, upload, wait_for


class EventRetention(OutboxTestCase):

    @classmethod
    def setUpClass(cls):
        cls.h = Harness(devices=["dev-a"]).start()
        try:
            cls.hook = Receiver(cls.h)
            cls.d = OutboxFerryd(cls.h, targets={"hook": cls.hook.target(retry_max="1s")},
                                 extra=["event_retention = 2s", "expire_interval = 1s"])
            cls.d.start()
            cls.dev = device(cls.h, "dev-a")
        except BaseException:
            cls.tearDownClass()
            raise

    def count(self, table):
        with self.d.db() as c:
            return c.execute("SELECT count(*) FROM %s" % table).fetchone()[0]

    def test_delivered_events_go_pending_ones_stay(self):
        g1, code = upload(self.d, self.dev, "dev-a", os.urandom(1000))
        self.assertEqual(code, 200)
        wait_for(lambda: self.count("events") == 1 and
                 [x["state"] for x in self.d.deliveries("hook")] == ["delivered"],
                 what="the first event delivered to the webhook")

        # The webhook goes down: the second event stays pending, so it stays.
        self.hook.stop()
        g2, code = upload(self.d, self.dev, "dev-a", os.urandom(1000))
        self.assertEqual(code, 200)
        wait_for(lambda: self.count("events") == 1, timeout=20,
                 what="the first event pruned after its retention")
        with self.d.db() as c:
            left = c.execute("SELECT grant_id FROM events").fetchall()
        self.assertEqual([r[0] for r in left], [g2["grant"]])
        time.sleep(3)  # well past the retention: still there, still pending
        self.assertEqual(self.count("events"), 1)
        self.assertEqual([x["state"] for x in self.d.deliveries("hook")], ["pending"])

        # Back up: delivered, then pruned too. The objects are never touched.
        self.hook.start()
        wait_for(lambda: self.count("events") == 0, timeout=30,
                 what="the second event delivered and pruned")
        self.assertEqual(self.count("deliveries"), 0)
        self.assertEqual(self.count("objects"), 2)
        self.assertIn("event=events.pruned", self.d.log())


if __name__ == "__main__":
    unittest.main()
