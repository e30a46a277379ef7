"""The webhook events target against a real HTTPS receiver.

The receiver is Python's http.server behind ssl, with a certificate from
`ferryctl pki init --name localhost` (the store certificate, valid for
127.0.0.1); events_tool (src/events/events_tool.c) drives the target. The
X-Ferry-Signature header is checked with Python's hmac, an implementation
independent of the C code. Covered: delivery and signature, a receiver
answering 500 (retries then dead-letter, or recovery), 4xx as permanent,
429 as retryable, a receiver that is down and then comes up, a receiver too
slow for the timeout, a certificate from another CA, no redirects.
"""

import hashlib
import hmac
import http.server
import json
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import unittest

from ferry_harness import build_dir, ferryctl_path, free_port

SECRET = b"webhook-shared-secret-\x01\x02"


def events_tool():
    return os.path.join(build_dir(), "src", "events", "events_tool")


OBJECT = {
    "event_id": "ev_webhook_1", "sequencer": 7, "method": "put", "time_ms": 1795610700123,
    "region": "us-east-1", "bucket": "ingest", "key": "dev-a/2026/11/25/g_1-heart beat.wav",
    "size": 16044, "etag": "\"9b2cf535f27731c974343645a3985328\"", "device": "dev-a",
    "grant": "g_1", "sha256": "ab" * 32, "content_type": "audio/wav", "request_id": "r-42",
    "source_ip": "127.0.0.1",
}


def make_event(**changes):
    obj = dict(OBJECT, **changes)
    r = subprocess.run([events_tool(), "format"], input=json.dumps(obj).encode(),
                       capture_output=True, timeout=30, check=True)
    return r.stdout.rstrip(b"\n")


class Receiver:
    """An HTTPS server on 127.0.0.1 in a thread; answers from a script."""

    def __init__(self, cert, key, port=0):
        self.requests = []
        self.peers = set()   # (address, port) of each connection used
        self.statuses = []   # popped per request; empty -> 200
        self.delay_s = 0.0
        self.extra_headers = {}
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, so connection reuse shows

            def setup(self):
                super().setup()
                # Headers and body go out in two writes: without this, Nagle
                # and the client's delayed ACK add 40 ms to every answer.
                self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                outer.requests.append((dict(self.headers), body))
                outer.peers.add(self.client_address)
                if outer.delay_s:
                    time.sleep(outer.delay_s)
                status = outer.statuses.pop(0) if outer.statuses else 200
                self.send_response(status)
                for k, v in outer.extra_headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path="/hook"):
        return "https://127.0.0.1:%d%s" % (self.port, path)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class WebhookTarget(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="ferry-events-webhook-")
        cls.pki = os.path.join(cls.tmp, "pki")
        subprocess.run([ferryctl_path(), "pki", "init", cls.pki, "--name", "localhost"],
                       check=True, capture_output=True, timeout=60)
        cls.other = os.path.join(cls.tmp, "other")
        subprocess.run([ferryctl_path(), "pki", "init", cls.other, "--name", "localhost"],
                       check=True, capture_output=True, timeout=60)
        cls.ca = os.path.join(cls.pki, "ca.pem")
        cls.cert = os.path.join(cls.pki, "store.pem")
        cls.key = os.path.join(cls.pki, "store.key")
        cls.secret_file = os.path.join(cls.tmp, "secret")
        with open(cls.secret_file, "wb") as f:
            f.write(SECRET)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def setUp(self):
        self.rx = Receiver(self.cert, self.key)

    def tearDown(self):
        self.rx.close()

    def argv(self, url=None, ca=None, attempts=1, timeout_ms=5000, retry_min_ms=100,
             retry_max_ms=400):
        return [events_tool(), "webhook", "--url", url or self.rx.url(), "--cafile",
                ca or self.ca, "--secret-file", self.secret_file, "--attempts", str(attempts),
                "--timeout-ms", str(timeout_ms), "--retry-min-ms", str(retry_min_ms),
                "--retry-max-ms", str(retry_max_ms)]

    def deliver(self, event, **kw):
        r = subprocess.run(self.argv(**kw), input=event, capture_output=True, timeout=60)
        self.assertTrue(r.stdout, r.stderr.decode())
        report = json.loads(r.stdout.decode().strip().splitlines()[-1])
        return r.returncode, report, r.stderr.decode()

    def check_signature(self, headers, body):
        want = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
        self.assertTrue(hmac.compare_digest(headers["X-Ferry-Signature"], want),
                        (headers["X-Ferry-Signature"], want))

    def test_delivered_signed_and_verifiable(self):
        event = make_event()
        rc, report, err = self.deliver(event)
        self.assertEqual(rc, 0, err)
        self.assertEqual(report["outcome"], "delivered")
        self.assertEqual(report["attempts"], 1)
        self.assertEqual(len(self.rx.requests), 1)
        headers, body = self.rx.requests[0]
        self.assertEqual(body, event)
        self.assertEqual(headers["Content-Type"], "application/json")
        self.assertEqual(headers["X-Ferry-Event-Id"], "ev_webhook_1")
        self.check_signature(headers, body)
        # A tampered body does not verify: the check above is meaningful.
        bad = "sha256=" + hmac.new(SECRET, body + b" ", hashlib.sha256).hexdigest()
        self.assertNotEqual(headers["X-Ferry-Signature"], bad)
        # The body is the S3 notification, readable as such.
        rec = json.loads(body)["Records"][0]
        self.assertEqual(rec["eventName"], "ObjectCreated:Put")
        self.assertEqual(rec["s3"]["object"]["key"], "dev-a/2026/11/25/g_1-heart+beat.wav")
        self.assertEqual(rec["ferry"]["event_id"], "ev_webhook_1")

    def test_many_deliveries_reuse_connections(self):
        """Two threads, 300 events: each arrives once, signed; curl keeps
        its TLS connection between events."""
        event = make_event(event_id="ev_many")
        r = subprocess.run(self.argv() + ["--repeat", "300", "--threads", "2"], input=event,
                           capture_output=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr.decode()[-2000:])
        report = json.loads(r.stdout)
        self.assertEqual(report["delivered"], 300)
        print("webhook target (Python receiver), 2 threads: %s events/s" % report["per_s"])
        self.assertEqual(len(self.rx.requests), 300)
        self.assertLessEqual(len(self.rx.peers), 4, "connections are not reused")
        ids = {h["X-Ferry-Event-Id"] for h, _ in self.rx.requests}
        self.assertEqual(len(ids), 300)
        for h, b in self.rx.requests:
            self.assertEqual(b, event)
            self.check_signature(h, b)

    def test_500_retried_then_dead_letter(self):
        self.rx.statuses = [500] * 10
        event = make_event()
        rc, report, _ = self.deliver(event, attempts=3)
        self.assertEqual(rc, 2)
        self.assertEqual(report["outcome"], "dead-letter")
        self.assertEqual(report["attempts"], 3)
        self.assertEqual(report["detail"], "HTTP 500")
        self.assertEqual(len(self.rx.requests), 3)
        # Every attempt is the same event: same bytes, same id, same signature.
        self.assertEqual({b for _, b in self.rx.requests}, {event})
        self.assertEqual({h["X-Ferry-Event-Id"] for h, _ in self.rx.requests}, {"ev_webhook_1"})
        for h, b in self.rx.requests:
            self.check_signature(h, b)

    def test_500_then_recovers(self):
        self.rx.statuses = [500, 503]
        rc, report, _ = self.deliver(make_event(), attempts=5)
        self.assertEqual(rc, 0)
        self.assertEqual(report["outcome"], "delivered")
        self.assertEqual(report["attempts"], 3)

    def test_4xx_is_permanent_but_429_and_408_are_not(self):
        self.rx.statuses = [400]
        rc, report, _ = self.deliver(make_event(), attempts=5)
        self.assertEqual((rc, report["outcome"], report["attempts"]), (2, "failed", 1))
        self.rx.statuses = [429, 408]
        rc, report, _ = self.deliver(make_event(), attempts=5)
        self.assertEqual((rc, report["outcome"], report["attempts"]), (0, "delivered", 3))

    def test_redirect_not_followed(self):
        self.rx.statuses = [302]
        self.rx.extra_headers = {"Location": self.rx.url("/elsewhere")}
        rc, report, _ = self.deliver(make_event(), attempts=3)
        self.assertEqual((rc, report["outcome"]), (2, "failed"))
        self.assertEqual([h.get("X-Ferry-Event-Id") for h, _ in self.rx.requests],
                         ["ev_webhook_1"])

    def test_receiver_down_then_up(self):
        port = free_port()
        url = "https://127.0.0.1:%d/hook" % port
        event = make_event(event_id="ev_down_up")
        event_file = os.path.join(self.tmp, "event-down-up.json")
        with open(event_file, "wb") as f:
            f.write(event)
        with open(event_file, "rb") as stdin:
            proc = subprocess.Popen(self.argv(url=url, attempts=20, retry_min_ms=200,
                                              retry_max_ms=400),
                                    stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        late = None
        try:
            time.sleep(1.5)  # several refused attempts
            self.assertIsNone(proc.poll(), "gave up while the receiver was down")
            late = Receiver(self.cert, self.key, port=port)
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if late is not None:
                late.close()
        self.assertEqual(proc.returncode, 0, err.decode())
        report = json.loads(out.decode().strip())
        self.assertEqual(report["outcome"], "delivered")
        self.assertGreater(report["attempts"], 2)
        self.assertEqual(len(late.requests), 1)
        self.assertEqual(late.requests[0][1], event)
        self.check_signature(*late.requests[0])

    def test_timeout(self):
        self.rx.delay_s = 3.0
        start = time.monotonic()
        rc, report, _ = self.deliver(make_event(), attempts=1, timeout_ms=500)
        elapsed = time.monotonic() - start
        self.assertEqual(rc, 1)
        self.assertEqual(report["outcome"], "retry")
        self.assertIn("Timeout", report["detail"])
        self.assertLess(elapsed, 2.5)

    def test_certificate_from_another_ca_refused(self):
        rc, report, _ = self.deliver(make_event(), ca=os.path.join(self.other, "ca.pem"),
                                     attempts=2)
        self.assertNotEqual(rc, 0)
        self.assertEqual(report["last"], "retry")
        self.assertEqual(self.rx.requests, [])

    def test_plain_http_refused_at_setup(self):
        r = subprocess.run(self.argv(url="http://127.0.0.1:%d/" % self.rx.port),
                           input=make_event(), capture_output=True, timeout=30)
        self.assertEqual(r.returncode, 3)
        self.assertEqual(self.rx.requests, [])


if __name__ == "__main__":
    unittest.main(verbosity=2)
