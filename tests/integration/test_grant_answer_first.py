"""With the embedded store, ferryd publishes a batch's answers before the
batch's ledger commit (src/daemon/grant_service.h). A device that uploads
the instant its grant arrives must still be accepted: the store's lookup of
a grant that is not committed yet waits for the commit instead of answering
"unknown grant".

The device here is as quick as a test can be: its TLS connection to the
store is open before it asks, and the PUT goes out from the MQTT client's
own thread the moment the grant is delivered, for many grants in a row.
Every upload must get its 200, and every grant must end up used in the
ledger.
"""

import hashlib
import http.client
import json
import queue
import sqlite3
import ssl
import threading
import unittest
import urllib.parse

from ferry_harness import HarnessTestCase
from store_harness import StoreFerryd

ROUNDS = 150
POLICY = [
    "content_types = application/octet-stream",
    "max_open_grants = 1000",
    "rate_per_minute = 60000",
    "rate_burst = 1000",
]


class AnswerBeforeCommitTest(HarnessTestCase):
    harness_devices = ("dev-q",)

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.d = StoreFerryd(cls.h, policy=POLICY)
        cls.addClassCleanup(cls.d.stop)
        cls.d.start()

    def test_upload_right_after_the_grant_is_accepted(self):
        ctx = ssl.create_default_context(cafile=self.d.ca)
        conn = http.client.HTTPSConnection("127.0.0.1", self.d.port, context=ctx, timeout=30)
        conn.connect()
        self.addCleanup(conn.close)
        body = b"q" * 1000
        sha = hashlib.sha256(body).hexdigest()
        results = queue.Queue()

        def on_grant(client, userdata, msg):
            # paho's network thread: upload at once, before anything else.
            try:
                g = json.loads(msg.payload)
                if g.get("type") == "receipt":  # of an earlier round's object
                    return
                if g.get("type") != "grant":
                    results.put(("answer", g))
                    return
                url = urllib.parse.urlsplit(g["url"])
                conn.request("PUT", url.path + "?" + url.query, body=body, headers=g["headers"])
                resp = conn.getresponse()
                results.put((resp.status, g["grant"], resp.read().decode("utf-8", "replace")))
            except Exception as e:  # reported by the test thread below
                results.put(("error", repr(e)))

        c = self.h.device_client("dev-q").connect()
        c.subscribe("ferry/dev-q/upload/response")
        c.client.on_message = on_grant
        grants = []
        for i in range(ROUNDS):
            request = {"id": "q-%d" % i, "name": "q.bin", "size": len(body),
                       "content_type": "application/octet-stream", "sha256": sha}
            c.publish("ferry/dev-q/upload/request", json.dumps(request).encode())
            got = results.get(timeout=15)
            self.assertEqual(len(got), 3, "round %d: %r" % (i, got))
            status, grant, text = got
            self.assertEqual(status, 200, "round %d: %s %s" % (i, grant, text))
            grants.append(grant)

        db = sqlite3.connect(self.d.ledger)
        self.addCleanup(db.close)
        marks = ",".join("?" * len(grants))
        used = db.execute("SELECT count(*) FROM grants WHERE state = 'used' AND id IN (%s)"
                          % marks, grants).fetchone()[0]
        self.assertEqual(used, ROUNDS)
        self.assertNotIn("unknown grant", self.d.log())


if __name__ == "__main__":
    unittest.main()
