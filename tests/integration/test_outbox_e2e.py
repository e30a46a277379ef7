"""The outbox end to end: real Mosquitto, ferryd with the embedded store,
three targets (an MQTT subscriber, an HTTPS webhook whose signature is
checked with Python's hmac, examples/processors/payload_check as a command
target that reads the object back from the store), and the device.

One upload (grant over MQTT, PUT with curl) gives exactly one stored
object, one event on each target (same event id everywhere, the ledger's),
one receipt and one processed message to the device. Then: restarting
ferryd delivers nothing again; two more uploads arrive with growing
sequencers. (Device uploads never share a key, each key names its grant;
per-key order for replaced keys is covered by ledger_test.)
"""

import hashlib
import io
import json
import os
import stat
import unittest
import wave

from ferry_harness import Harness, build_dir
from outbox_harness import (OutboxFerryd, OutboxTestCase, Receiver, device, device_messages, upload,
                            wait_for)
from store_harness import OPERATOR_KEY, REGION


def make_wav(frames=8000, rate=8000):
    b = io.BytesIO()
    w = wave.open(b, "wb")
    w.setnchannels(1)
    w.setsampwidth(2)
    w.setframerate(rate)
    w.writeframes(bytes((i * 3) & 0xFF for i in range(frames * 2)))
    w.close()
    return b.getvalue()


class OutboxEndToEnd(OutboxTestCase):

    @classmethod
    def setUpClass(cls):
        cls.h = Harness(devices=["dev-a"]).start()
        try:
            cls.h.add_ferryd("ferryd-sub")
            cls.hook = Receiver(cls.h)
            # payload_check reads the object back with the operator's key.
            wrapper = os.path.join(cls.h.tmp, "payload_check.sh")
            cls.d = OutboxFerryd(cls.h, targets={
                "bus": {"type": "mqtt"},
                "hook": cls.hook.target(),
                "check": {"type": "command", "command": wrapper, "timeout": "20s"},
            })
            with open(wrapper, "w") as f:
                f.write("#!/bin/sh\n"
                        "export FERRY_S3_ENDPOINT=%s FERRY_S3_ACCESS_KEY=%s\n"
                        "export FERRY_S3_SECRET_KEY_FILE=%s FERRY_S3_REGION=%s\n"
                        "export FERRY_S3_CA_FILE=%s\n"
                        "exec %s\n" % (cls.d.endpoint, OPERATOR_KEY,
                                       os.path.join(cls.d.dir, "operator-secret"), REGION,
                                       cls.h.ca, os.path.join(build_dir(), "examples",
                                                              "processors", "payload_check")))
            os.chmod(wrapper, stat.S_IRWXU)
            cls.sub = cls.h.ferryd_client(identity="ferryd-sub").connect()
            cls.sub.subscribe("%s/events/object-created" % cls.h.prefix)
            cls.d.start()
            cls.dev = device(cls.h, "dev-a")
        except BaseException:
            cls.tearDownClass()
            raise


    def bus_events(self, n, timeout=20):
        out = []
        for _ in range(n):
            out.append(json.loads(self.sub.expect_message(timeout=timeout).payload))
        return out

    def test_1_one_upload_everywhere_once(self):
        data = make_wav()
        g, code = upload(self.d, self.dev, "dev-a", data, content_type="audio/wav",
                         filename="beat.wav")
        self.assertEqual(code, 200)
        key = g["key"] if "key" in g else None

        # The MQTT target.
        ev = self.bus_events(1)[0]
        rec = ev["Records"][0]
        self.assertEqual(rec["eventName"], "ObjectCreated:Put")
        self.assertEqual(rec["userIdentity"]["principalId"], "dev-a")
        self.assertEqual(rec["s3"]["object"]["size"], len(data))
        self.assertEqual(rec["ferry"]["sha256"], hashlib.sha256(data).hexdigest())
        self.assertEqual(rec["ferry"]["grant"], g["grant"])
        self.assertEqual(rec["ferry"]["id"], g["id"])
        event_id = rec["ferry"]["event_id"]
        self.assertTrue(event_id.startswith("ev_"))
        # Where the upload came from, and the store request that made it
        # (the request id of the store's log line for this object).
        self.assertEqual(rec["requestParameters"]["sourceIPAddress"], "127.0.0.1")
        store_rid = rec["responseElements"]["x-amz-request-id"]
        self.assertRegex(store_rid, r"^[0-9a-f]{16}$")
        self.assertIn("request_id=%s method=PUT" % store_rid, self.d.log())
        if key:
            self.assertEqual(rec["ferry"]["key"], key)

        # The webhook: signature checked by the receiver (hmac), same id.
        wait_for(lambda: len(self.hook.events) >= 1, what="webhook delivery")
        self.assertEqual(self.hook.bad, [])
        self.assertEqual(self.hook.ids(), [event_id])
        self.assertEqual(self.hook.events[0][1], ev)

        # The device: one receipt, one processed (payload_check's summary).
        receipts = device_messages(self.dev, "receipt", 1)
        self.assertEqual(len(receipts), 1)
        r = receipts[0]
        self.assertEqual((r["id"], r["grant"], r["size"], r["sha256"]),
                         (g["id"], g["grant"], len(data), hashlib.sha256(data).hexdigest()))
        processed = device_messages(self.dev, "processed", 1, timeout=30)
        self.assertEqual(len(processed), 1, self.d.log()[-3000:])
        p = processed[0]
        self.assertEqual((p["id"], p["grant"], p["target"]), (g["id"], g["grant"], "check"))
        self.assertNotIn("error", p["result"], p)
        self.assertIn("wav", json.dumps(p["result"]).lower())

        # The ledger: one object, one event, every delivery done.
        with self.d.db() as c:
            self.assertEqual(c.execute("SELECT count(*) FROM objects").fetchone()[0], 1)
            self.assertEqual(c.execute("SELECT id FROM events").fetchall()[0][0], event_id)
        for t in ("bus", "hook", "check", "@device"):
            wait_for(lambda: [x["state"] for x in self.d.deliveries(t)] == ["delivered"],
                     what="%s delivered" % t)

        # Nothing more: no duplicate anywhere.
        self.sub.expect_no_message(timeout=1.0)
        self.assertEqual(len(self.hook.events), 1)
        self.assertEqual(device_messages(self.dev, "receipt", 1, timeout=0.5), [])

    def test_2_restart_redelivers_nothing_and_sequencers_grow(self):
        wait_for(lambda: not any(self.d.deliveries(t, "pending")
                                 for t in ("bus", "hook", "check", "@device")),
                 what="nothing pending")
        # SIGTERM: the workers stop, ferryd exits 0 and says so.
        self.assertEqual(self.d.stop(), 0)
        self.assertIn("event=ferryd.stopped", self.d.log())
        self.d.start()
        self.sub.expect_no_message(timeout=1.5)
        before = len(self.hook.events)
        # Two uploads: distinct events in sequencer order on every target.
        ups = [upload(self.d, self.dev, "dev-a", make_wav(frames=800 + i)) for i in range(2)]
        self.assertEqual([c for _, c in ups], [200, 200])
        evs = self.bus_events(2)
        seqs = [int(e["Records"][0]["s3"]["object"]["sequencer"], 16) for e in evs]
        self.assertEqual(seqs, sorted(seqs))
        self.assertEqual([e["Records"][0]["ferry"]["grant"] for e in evs],
                         [g["grant"] for g, _ in ups])
        wait_for(lambda: len(self.hook.events) == before + 2, what="webhook")
        self.assertEqual(len(device_messages(self.dev, "receipt", 2)), 2)
        self.assertEqual(len(device_messages(self.dev, "processed", 2, timeout=30)), 2)


if __name__ == "__main__":
    unittest.main()
