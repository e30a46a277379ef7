"""Harness pieces for the outbox tests (tests/integration/test_outbox_*.py):
ferryd with the embedded store and [target.NAME] sections, an HTTPS webhook
receiver that checks X-Ferry-Signature with Python's hmac, uploads as a
device does them (grant over MQTT, PUT with curl), and read-only looks at
the ledger's outbox tables with sqlite3.

    with Harness(devices=["dev-a"]) as h:
        hook = Receiver(h)                           # https://127.0.0.1:PORT/hook
        d = OutboxFerryd(h, targets={"hook": hook.target()}).start()
        dev = device(h, "dev-a")
        g, code = upload(d, dev, "dev-a", b"payload")

Every process is stopped by PID through the Harness (also on failure); the
receiver is a thread of the test process, closed by close().
"""

import hashlib
import hmac
import http.server
import json
import os
import socket
import sqlite3
import ssl
import tempfile
import threading
import time
import unittest

from ferry_harness import free_port
from ferryd_harness import secret_file
from store_harness import StoreFerryd

WEBHOOK_SECRET = b"outbox-webhook-secret-0123456789"


class OutboxFerryd(StoreFerryd):
    """StoreFerryd plus [target.NAME] sections: targets maps a name to a
    dict of keys (written in order)."""

    def __init__(self, harness, targets=None, **kw):
        super().__init__(harness, **kw)
        lines = []
        for name, keys in (targets or {}).items():
            lines.append("[target.%s]" % name)
            lines += ["%s = %s" % (k, v) for k, v in keys.items()]
        with open(self.config, "a") as f:
            f.write("\n".join(lines) + "\n")

    def db(self):
        """A read-only connection to the ledger (WAL: never blocks ferryd)."""
        c = sqlite3.connect("file:%s?mode=ro" % self.ledger, uri=True, timeout=10)
        c.row_factory = sqlite3.Row
        return c

    def deliveries(self, target, state=None):
        with self.db() as c:
            q = ("SELECT e.id, e.seq, e.object_key, d.state, d.attempts, d.last_error"
                 " FROM deliveries d JOIN events e ON e.seq = d.event_seq WHERE d.target = ?")
            args = [target]
            if state:
                q += " AND d.state = ?"
                args.append(state)
            return [dict(r) for r in c.execute(q + " ORDER BY e.seq", args)]


class Receiver:
    """An HTTPS webhook receiver on 127.0.0.1 (the harness PKI's store
    certificate) in a thread. Every request is checked: X-Ferry-Signature
    must be the HMAC-SHA256 of the body under WEBHOOK_SECRET (Python's own
    hmac); bodies with a bad signature are recorded in self.bad and answered
    401. statuses: answers to pop (empty: 200). stop()/start() take the port
    down and up again (connection refused meanwhile)."""

    def __init__(self, harness, secret=WEBHOOK_SECRET):
        self.h = harness
        self.secret = secret
        self.events = []      # (event id header, parsed body), in arrival order
        self.bad = []
        self.statuses = []
        self.conns = []       # open connections: stop() cuts kept-alive ones too
        self.lock = threading.Lock()
        self.secret_file = os.path.join(harness.tmp, "webhook-secret-%d" % id(self))
        secret_file(self.secret_file, secret)
        self.port = None
        self.server = None
        self.start()

    def _handler(self):
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                super().setup()
                self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                with outer.lock:
                    outer.conns.append(self.request)

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                want = "sha256=" + hmac.new(outer.secret, body, hashlib.sha256).hexdigest()
                got = self.headers.get("X-Ferry-Signature", "")
                with outer.lock:
                    if not hmac.compare_digest(want, got):
                        outer.bad.append(body)
                        status = 401
                    else:
                        status = outer.statuses.pop(0) if outer.statuses else 200
                        if 200 <= status < 300:
                            outer.events.append((self.headers.get("X-Ferry-Event-Id"),
                                                 json.loads(body)))
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        return Handler

    def start(self):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(os.path.join(self.h.pki, "store.pem"),
                            os.path.join(self.h.pki, "store.key"))
        http.server.ThreadingHTTPServer.allow_reuse_address = True
        # A port below the ephemeral range (free_port), so that stop() and
        # start() again on it cannot lose it to a client connection.
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port or free_port()),
                                                      self._handler())
        self.server.daemon_threads = True
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        with self.lock:
            conns, self.conns = self.conns, []
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    close = stop

    def target(self, **extra):
        keys = {"type": "webhook", "url": "https://127.0.0.1:%d/hook" % self.port,
                "ca_file": self.h.ca, "secret_file": self.secret_file,
                "connect_timeout": "1s", "timeout": "5s"}
        keys.update(extra)
        return keys

    def ids(self):
        with self.lock:
            return [i for i, _ in self.events]


def device(h, name):
    """The device's MQTT client, subscribed to its response topics."""
    c = h.device_client(name).connect()
    c.subscribe("%s/%s/upload/response" % (h.prefix, name))
    return c


_seq = [0]


def upload(d, client, name, data, content_type="application/octet-stream", filename=None):
    """Grant over MQTT, then PUT with curl as the grant says. Returns
    (grant, http status). Messages on the response topic other than the
    grant (receipts of earlier uploads) are set aside in client.others."""
    _seq[0] += 1
    rid = "r-%d-%d" % (os.getpid(), _seq[0])
    body = {"id": rid, "name": filename or "p%d.bin" % _seq[0], "size": len(data),
            "content_type": content_type, "sha256": hashlib.sha256(data).hexdigest()}
    client.publish("%s/%s/upload/request" % (d.h.prefix, name), json.dumps(body).encode())
    others = client.__dict__.setdefault("others", [])
    deadline = time.monotonic() + 10
    while True:
        msg = json.loads(client.expect_message(timeout=max(0.1, deadline - time.monotonic()))
                         .payload)
        if msg.get("id") == rid and msg.get("type") in ("grant", "rejected"):
            g = msg
            break
        others.append(msg)
    assert g["type"] == "grant", g
    fd, path = tempfile.mkstemp(dir=d.dir)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    args = ["-X", "PUT", "-T", path]
    for k, v in g["headers"].items():
        args += ["-H", "%s: %s" % (k, v)]
    code, _ = d.curl(args + [g["url"]])
    os.unlink(path)
    return g, code


def device_messages(client, kind, count, timeout=20):
    """Collects `count` messages of type kind from the device's topic
    (including any set aside by upload())."""
    out = [m for m in client.__dict__.get("others", []) if m.get("type") == kind]
    client.__dict__["others"] = [m for m in client.__dict__.get("others", [])
                                 if m.get("type") != kind]
    deadline = time.monotonic() + timeout
    while len(out) < count:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            m = json.loads(client.expect_message(timeout=left).payload)
        except TimeoutError:
            break
        if m.get("type") == kind:
            out.append(m)
        else:
            client.__dict__.setdefault("others", []).append(m)
    return out


def wait_for(predicate, timeout=20, interval=0.05, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = predicate()
        if v:
            return v
        time.sleep(interval)
    raise AssertionError("timed out waiting for " + what)


class OutboxTestCase(unittest.TestCase):
    """A test class with a harness ``h`` and maybe a webhook receiver
    ``hook``, both set in setUpClass; both are closed after the class (also
    when setUpClass failed half-way: call tearDownClass there)."""

    h = None
    hook = None

    @classmethod
    def tearDownClass(cls):
        if cls.hook is not None:
            cls.hook.close()
        if cls.h is not None:
            cls.h.close()
