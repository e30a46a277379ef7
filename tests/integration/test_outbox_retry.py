"""The outbox when targets fail: real Mosquitto, ferryd with the embedded
store, uploads with curl.

- A webhook receiver that is down (connection refused) while six objects
  are stored receives every event once it is back, each exactly as signed
  (Python's hmac), in sequencer order, with nothing dead-lettered.
- A command target that always fails dead-letters each event after
  max_attempts attempts; `ferryctl events list-dead` shows it, and after the
  command is fixed `ferryctl events replay` gets it delivered (and its
  result to the device as a processed message). Meanwhile the other
  targets were not held back.
- A delivery killed with ferryd (SIGKILL while the receiver is down) is
  delivered after the restart, with the same event id.
"""

import json
import os
import stat
import subprocess
import time
import unittest

from ferry_harness import Harness, ferryctl_path
from outbox_harness import (OutboxFerryd, OutboxTestCase, Receiver, device, device_messages, upload,
                            wait_for)

MAX_ATTEMPTS = 3


class OutboxRetry(OutboxTestCase):

    @classmethod
    def setUpClass(cls):
        cls.h = Harness(devices=["dev-a"]).start()
        try:
            cls.hook = Receiver(cls.h)
            cls.flag = os.path.join(cls.h.tmp, "command-works")
            cmd = os.path.join(cls.h.tmp, "flaky.sh")
            with open(cmd, "w") as f:
                # Fails until the flag file exists; then prints a result.
                f.write("#!/bin/sh\ncat >/dev/null\n[ -f %s ] || { echo broken >&2; exit 3; }\n"
                        "echo '{\"checked\":true}'\n" % cls.flag)
            os.chmod(cmd, stat.S_IRWXU)
            cls.d = OutboxFerryd(cls.h, targets={
                "hook": cls.hook.target(retry_min="100ms", retry_max="400ms",
                                        max_attempts="1000"),
                "flaky": {"type": "command", "command": cmd, "timeout": "10s",
                          "retry_min": "50ms", "retry_max": "100ms",
                          "max_attempts": str(MAX_ATTEMPTS)},
            })
            cls.d.start()
            cls.dev = device(cls.h, "dev-a")
        except BaseException:
            cls.tearDownClass()
            raise


    def ferryctl_events(self, *args):
        r = subprocess.run([ferryctl_path(), "events"] + list(args) + ["--ledger", self.d.ledger],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout

    def event_ids_in_order(self):
        with self.d.db() as c:
            return [r[0] for r in c.execute("SELECT id FROM events ORDER BY seq")]

    def test_1_webhook_down_then_back_and_command_dead_then_replayed(self):
        self.hook.stop()
        ups = [upload(self.d, self.dev, "dev-a", b"payload %d" % i) for i in range(6)]
        self.assertEqual([c for _, c in ups], [200] * 6)
        # Receipts are not held back by the failing targets.
        self.assertEqual(len(device_messages(self.dev, "receipt", 6)), 6)
        # The webhook is being retried, not dead-lettered.
        wait_for(lambda: any(x["attempts"] >= 2 for x in self.d.deliveries("hook")),
                 what="webhook retries")
        # The command target: every event dead after MAX_ATTEMPTS.
        wait_for(lambda: len(self.d.deliveries("flaky", "dead")) == 6, timeout=30,
                 what="flaky dead-lettered")
        for x in self.d.deliveries("flaky"):
            self.assertEqual(x["attempts"], MAX_ATTEMPTS)
            self.assertIn("3", x["last_error"])  # exit status 3
        listing = self.ferryctl_events("list-dead").splitlines()
        self.assertEqual(len(listing), 6, listing)
        self.assertTrue(all(" target=flaky " in line for line in listing))

        # The receiver comes back: every event, once, in order.
        time.sleep(1.0)
        self.hook.start()
        ids = self.event_ids_in_order()
        wait_for(lambda: len(self.hook.events) >= 6, timeout=30, what="webhook backlog")
        self.assertEqual(self.hook.bad, [])
        self.assertEqual(self.hook.ids(), ids)
        seqs = [int(e["Records"][0]["s3"]["object"]["sequencer"], 16)
                for _, e in self.hook.events]
        self.assertEqual(seqs, sorted(seqs))
        self.assertEqual(self.d.deliveries("hook", "dead"), [])

        # The command is fixed; replay one event, then the rest.
        open(self.flag, "w").close()
        out = self.ferryctl_events("replay", "--target", "flaky", "--event", ids[0])
        self.assertEqual(out.strip(), "replayed=1")
        processed = device_messages(self.dev, "processed", 1, timeout=20)
        self.assertEqual(len(processed), 1)
        self.assertEqual(processed[0]["result"], {"checked": True})
        self.assertEqual(processed[0]["grant"], ups[0][0]["grant"])
        wait_for(lambda: len(self.d.deliveries("flaky", "delivered")) == 1, what="one replayed")
        self.assertEqual(self.ferryctl_events("replay", "--all").strip(), "replayed=5")
        wait_for(lambda: len(self.d.deliveries("flaky", "delivered")) == 6, what="all replayed")
        self.assertEqual(len(device_messages(self.dev, "processed", 5, timeout=20)), 5)
        self.assertEqual(self.ferryctl_events("list-dead"), "")

    def test_2_delivery_survives_sigkill(self):
        self.hook.stop()
        before = set(self.hook.ids())
        g, code = upload(self.d, self.dev, "dev-a", b"killed in flight")
        self.assertEqual(code, 200)
        wait_for(lambda: any(x["attempts"] >= 1 and x["state"] == "pending"
                             for x in self.d.deliveries("hook")), what="a failed attempt")
        self.d.kill()
        self.hook.start()
        self.d.start()
        wait_for(lambda: len(set(self.hook.ids()) - before) == 1, timeout=30,
                 what="delivery after restart")
        new = (set(self.hook.ids()) - before).pop()
        with self.d.db() as c:
            row = c.execute("SELECT grant_id FROM events WHERE id = ?", (new,)).fetchone()
        self.assertEqual(row[0], g["grant"])
        self.assertEqual(self.hook.bad, [])


if __name__ == "__main__":
    unittest.main()
