"""`/events/s3`: an external store's bucket notifications into the outbox.

ferryd with [store] kind = external and the [notify] listener (HTTPS,
bearer token). A device gets a grant over MQTT; the test then plays the
external store and POSTs the S3 notification for the grant's object (the
key form-encoded as S3 sends it). Checked:
- without the token, or with a wrong one: 401, and nothing changes (no
  event, no delivery, the grant still issued, nothing to the device);
- with the token: one event, delivered to the webhook target (signature
  checked with Python's hmac) and as a receipt to the device;
- the same notification again: counted as a duplicate, nothing new;
- a notification for another bucket, an unknown grant or the wrong size is
  refused (422) and changes nothing; so are bodies that are not JSON, have
  duplicate keys, no Records array, bad records, a bad key escape, or are
  over max_body (413); non-ObjectCreated events are ignored.
"""

import json
import os
import ssl
import time
import unittest
import urllib.error
import urllib.parse
import urllib.request

from ferry_harness import Harness, free_port
from ferryd_harness import Ferryd
from outbox_harness import OutboxTestCase, Receiver, device, device_messages, wait_for

TOKEN = "notify-token-0123456789abcdef"


class FakeStore:
    endpoint = "https://127.0.0.1:9"  # never contacted: the test plays the store
    bucket = "ingest"


def record(key, size, bucket="ingest", name="ObjectCreated:Put"):
    return {"eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
            "eventName": name,
            "s3": {"bucket": {"name": bucket},
                   "object": {"key": urllib.parse.quote_plus(key, safe="/"), "size": size,
                              "eTag": "\"0123456789abcdef0123456789abcdef\""}}}


class OutboxNotify(OutboxTestCase):

    @classmethod
    def setUpClass(cls):
        cls.h = Harness(devices=["dev-a"]).start()
        try:
            cls.hook = Receiver(cls.h)
            cls.port = free_port()
            token_file = os.path.join(cls.h.tmp, "notify-token")
            fd = os.open(token_file, os.O_WRONLY | os.O_CREAT, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(TOKEN + "\n")
            cls.d = Ferryd(cls.h, FakeStore())
            lines = ["[notify]", "port = %d" % cls.port,
                     "tls_cert = %s" % os.path.join(cls.h.pki, "store.pem"),
                     "tls_key = %s" % os.path.join(cls.h.pki, "store.key"),
                     "token_file = %s" % token_file, "[target.hook]"]
            lines += ["%s = %s" % kv for kv in cls.hook.target().items()]
            with open(cls.d.config, "a") as f:
                f.write("\n".join(lines) + "\n")
            cls.d.start()
            wait_for(lambda: "event=notify.started" in cls.d.log(), timeout=5,
                     what="listener: " + cls.d.log()[-1500:])
            cls.dev = device(cls.h, "dev-a")
        except BaseException:
            cls.tearDownClass()
            raise


    def post(self, body, token=TOKEN, path="/events/s3"):
        ctx = ssl.create_default_context(cafile=self.h.ca)
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        req = urllib.request.Request("https://127.0.0.1:%d%s" % (self.port, path),
                                     data=data, method="POST",
                                     headers={"Content-Type": "application/json"})
        if token is not None:
            req.add_header("Authorization", "Bearer " + token)
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def grant(self, size, name):
        body = {"id": "r-%s" % name, "name": name, "size": size,
                "content_type": "application/octet-stream"}
        self.dev.publish("%s/dev-a/upload/request" % self.h.prefix, json.dumps(body).encode())
        while True:
            m = json.loads(self.dev.expect_message(timeout=10).payload)
            if m.get("id") == body["id"]:
                self.assertEqual(m["type"], "grant", m)
                return m

    def ledger_counts(self):
        with self.d_db() as c:
            return (c.execute("SELECT count(*) FROM events").fetchone()[0],
                    c.execute("SELECT count(*) FROM deliveries").fetchone()[0])

    def d_db(self):
        import sqlite3
        return sqlite3.connect("file:%s?mode=ro" % self.d.ledger, uri=True, timeout=10)

    def grant_state(self, gid):
        with self.d_db() as c:
            return c.execute("SELECT state FROM grants WHERE id = ?", (gid,)).fetchone()[0]

    def test_notifications(self):
        g = self.grant(1234, "sensor dump.bin")
        key = g["key"] if "key" in g else urllib.parse.unquote(
            urllib.parse.urlsplit(g["url"]).path.split("/", 2)[2])
        note = {"Records": [record(key, 1234)]}

        # No token, a wrong token, a wrong path: refused, nothing changes.
        self.assertEqual(self.post(note, token=None)[0], 401)
        self.assertEqual(self.post(note, token=TOKEN + "x")[0], 401)
        self.assertEqual(self.post(note, token="")[0], 401)
        self.assertEqual(self.post(note, path="/events/other")[0], 404)
        self.assertEqual(self.ledger_counts(), (0, 0))
        self.assertEqual(self.grant_state(g["grant"]), "issued")
        self.assertEqual(device_messages(self.dev, "receipt", 1, timeout=1), [])

        # Wrong bucket, wrong size, unknown grant: refused, nothing changes.
        for bad in (record(key, 1234, bucket="other"), record(key, 99),
                    record(key.replace(g["grant"], "g_" + "0" * 26), 1234)):
            code, body = self.post({"Records": [bad]})
            self.assertEqual(code, 422, body)
            self.assertEqual(body["refused"], 1)
        self.assertEqual(self.ledger_counts(), (0, 0))
        # Hostile bodies: refused, nothing changes, ferryd stays up.
        for junk in (b"not json", b"{\"Records\": 5}", b"[]", b"\x00\xff" * 10,
                     b"{\"Records\":[],\"Records\":[]}", b"{\"Records\":[5, null, {}]}"):
            code, _ = self.post(junk)
            self.assertIn(code, (400, 422), junk)
        self.assertEqual(self.post(b" " * (2 << 20))[0], 413)
        self.assertEqual(self.post({"Records": [record("%zz/" + key, 1234)]})[0], 422)
        self.assertEqual(self.ledger_counts(), (0, 0))
        code, body = self.post({"Records": [record(key, 1234, name="ObjectRemoved:Delete")]})
        self.assertEqual((code, body["ignored"]), (200, 1))

        # The right token: one event, to the webhook and as a receipt.
        code, body = self.post(note)
        self.assertEqual((code, body["accepted"]), (200, 1), body)
        self.assertEqual(self.grant_state(g["grant"]), "used")
        receipts = device_messages(self.dev, "receipt", 1)
        self.assertEqual(len(receipts), 1)
        self.assertEqual((receipts[0]["grant"], receipts[0]["key"], receipts[0]["size"]),
                         (g["grant"], key, 1234))
        wait_for(lambda: len(self.hook.events) == 1, what="webhook")
        self.assertEqual(self.hook.bad, [])
        rec = self.hook.events[0][1]["Records"][0]
        self.assertEqual(rec["ferry"]["grant"], g["grant"])
        self.assertEqual(rec["ferry"]["key"], key)
        self.assertEqual(self.hook.events[0][0], receipts[0]["event_id"])

        # Again (stores retry their notifications): a duplicate, nothing new.
        code, body = self.post(note)
        self.assertEqual((code, body["duplicates"], body["accepted"]), (200, 1, 0))
        self.assertEqual(self.ledger_counts(), (1, 2))
        time.sleep(0.5)
        self.assertEqual(len(self.hook.events), 1)
        self.assertEqual(device_messages(self.dev, "receipt", 1, timeout=0.5), [])


if __name__ == "__main__":
    unittest.main()
