"""The embedded store's limits on the request head and on slow bodies,
answered as S3 answers them (status and S3 error code asserted), with real
ferryd, real Mosquitto and real clients (curl, raw TLS sockets):

- a request target longer than [store] max_request_target: 414 InvalidURI;
- a header section over max_header_bytes, or more than max_headers
  headers: 400 RequestHeaderSectionTooLarge; a key over 1,024 bytes:
  400 KeyTooLongError;
- a body that stops for idle_timeout, or trickles slower than
  min_upload_rate once min_rate_grace has passed: 400 RequestTimeout, then
  the connection is closed;
- a request line or header section trickled a byte a second: the
  connection is closed at header_timeout (no request to answer yet), while
  keep-alive requests are timed each from the previous one's end;
- past libmicrohttpd's own memory limit (connection_memory) the answer is
  libmicrohttpd's 414/431, as docs/store.md says.

After every refusal nothing is stored, no temporary file is left, and a
valid upload still succeeds.
"""

import os
import socket
import ssl
import subprocess
import time

import ferry_harness
from ferry_harness import wait_until
from ferryd_harness import ferryd_path
from store_harness import StoreFerryd, request_id, s3_code
from test_store_put import POLICY, StoreTestCase

IDLE_S = 3
HEAD_S = 5


class LimitsTestCase(StoreTestCase):
    store_options = ["max_object_size = 32M", "idle_timeout = %ds" % IDLE_S,
                     "min_upload_rate = 50K", "min_rate_grace = 1s",
                     "max_request_target = 8K", "max_header_bytes = 16K", "max_headers = 64",
                     "connection_memory = 64K"]

    def raw_put(self, s, url, length, extra=b""):
        """Sends the head of a PUT to url (a pre-signed URL of the store)."""
        target = url[len(self.d.endpoint):]
        s.sendall(b"PUT " + target.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                  b"Content-Length: %d\r\n" % (self.d.port, length) + extra + b"\r\n")

    def tls_socket(self):
        ctx = ssl.create_default_context(cafile=self.d.ca)
        raw = socket.create_connection(("127.0.0.1", self.d.port), timeout=30)
        return ctx.wrap_socket(raw, server_hostname="127.0.0.1")

    @staticmethod
    def read_response(s, limit_s=30):
        """Reads one HTTP response (head and Content-Length body) from s;
        returns (status, headers dict, body text), or (None, {}, raw) when
        the connection ended without one."""
        s.settimeout(limit_s)
        data = b""
        try:
            while b"\r\n\r\n" not in data:
                chunk = s.recv(65536)
                if not chunk:
                    return None, {}, data
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            headers = {}
            for line in lines[1:]:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
            want = int(headers.get("content-length", "0"))
            while len(body) < want:
                chunk = s.recv(65536)
                if not chunk:
                    break
                body += chunk
            return int(lines[0].split()[1]), headers, body.decode("utf-8", "replace")
        except (ConnectionResetError, ssl.SSLError, socket.timeout) as e:
            return None, {}, repr(e).encode() + data

    def assert_s3_error(self, status, headers, body, want_status, want_code):
        self.assertEqual(status, want_status, body)
        self.assertEqual(s3_code(body), want_code, body)
        rid = request_id(body)
        self.assertRegex(rid, r"^[0-9a-f]{16}$", body)
        self.assertEqual(headers.get("x-amz-request-id"), rid)
        self.assertEqual(headers.get("content-type"), "application/xml")

    def assert_closed(self, s):
        """The store ends the connection after the answer."""
        s.settimeout(10)
        try:
            rest = s.recv(4096)
        except (ConnectionResetError, ssl.SSLError):
            rest = b""
        self.assertEqual(rest, b"")


class HeadLimits(LimitsTestCase):

    def test_request_target_too_long(self):
        path = self.payload(b"abc")
        url = self.presign("op/long-target.bin")
        # Over max_request_target (8 KiB), well under connection_memory.
        r = self.d.curl(["-X", "PUT", "-T", path, url + "&pad=" + "a" * 9000])
        self.assert_refused(r, 414, "InvalidURI")
        # Just under the limit the request gets as far as the signature
        # check (the padding is not signed).
        r = self.d.curl(["-X", "PUT", "-T", path, url + "&pad=" + "a" * (7000 - len(url))])
        self.assert_refused(r, 403, "SignatureDoesNotMatch")
        # Far over the limit, but within connection_memory: still the
        # store's S3 XML.
        r = self.d.curl(["-X", "GET", self.d.endpoint + "/ingest/" + "k" * 16000])
        self.assert_refused(r, 414, "InvalidURI")
        self.assertFalse(self.exists("op/long-target.bin"))
        self.assert_clean_and_serving()

    def test_key_too_long(self):
        path = self.payload(b"abc")
        r = self.d.curl(["-X", "PUT", "-T", path, self.presign("op/" + "k" * 1022)])
        self.assert_refused(r, 400, "KeyTooLongError")
        # Multi-byte UTF-8: 1,025 bytes in 342 characters.
        r = self.d.curl(["-X", "PUT", "-T", path, self.presign("\u00e9" * 512 + "k")])
        self.assert_refused(r, 400, "KeyTooLongError")
        # 1,024 bytes exactly is a key.
        key = "op/" + "k" * 1021
        code, body = self.d.curl(["-X", "PUT", "-T", path, self.presign(key)])
        self.assertEqual(code, 200, body)
        self.assertEqual(self.get_bytes(key), b"abc")
        self.assert_clean_and_serving()

    def test_header_section_too_large(self):
        path = self.payload(b"abc")
        url = self.presign("op/big-headers.bin")
        # One header of 17,000 bytes (over max_header_bytes = 16K).
        r = self.d.curl(["-X", "PUT", "-T", path, "-H", "x-pad: " + "p" * 17000, url])
        self.assert_refused(r, 400, "RequestHeaderSectionTooLarge")
        # Many small headers that add up to more than 16 KiB.
        hdrs = []
        for i in range(40):
            hdrs += ["-H", "x-pad-%d: %s" % (i, "q" * 500)]
        r = self.d.curl(["-X", "PUT", "-T", path] + hdrs + [url])
        self.assert_refused(r, 400, "RequestHeaderSectionTooLarge")
        # More headers than max_headers (64), few bytes.
        hdrs = []
        for i in range(70):
            hdrs += ["-H", "x-n%d: 1" % i]
        r = self.d.curl(["-X", "PUT", "-T", path] + hdrs + [url])
        self.assert_refused(r, 400, "RequestHeaderSectionTooLarge")
        # A POST form upload is held to the same limits.
        r = self.d.curl(["-X", "POST", "-F", "key=op/x", "-F", "file=@" + path,
                         "-H", "x-pad: " + "p" * 17000, self.d.endpoint + "/ingest"])
        self.assert_refused(r, 400, "RequestHeaderSectionTooLarge")
        self.assertFalse(self.exists("op/big-headers.bin"))
        self.assert_clean_and_serving()

    def test_header_section_at_the_limit(self):
        """Just under the limits the request is served (header auth signs
        only some headers; x-pad is not one of them)."""
        path = self.payload(b"abc")
        url = self.presign("op/near-limit.bin")
        hdrs = []
        for i in range(30):
            hdrs += ["-H", "x-pad-%d: %s" % (i, "q" * 400)]
        code, body = self.d.curl(["-X", "PUT", "-T", path] + hdrs + [url])
        self.assertEqual(code, 200, body)
        self.assertEqual(self.get_bytes("op/near-limit.bin"), b"abc")
        self.assert_clean_and_serving()

    def test_libmicrohttpd_limit_beyond_connection_memory(self):
        """A request head larger than connection_memory (64 KiB) cannot be
        held: libmicrohttpd answers it itself (414 or 431, HTML), as
        docs/store.md says. The store keeps serving."""
        with self.tls_socket() as s:
            s.sendall(b"GET /ingest/" + b"k" * 70000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
            status, _, body = self.read_response(s)
            self.assertEqual(status, 414, body)
        with self.tls_socket() as s:
            s.sendall(b"GET /ingest/k HTTP/1.1\r\nHost: x\r\nx-pad: " + b"p" * 70000 +
                      b"\r\n\r\n")
            status, _, body = self.read_response(s)
            self.assertEqual(status, 431, body)
        self.assert_clean_and_serving()


class ConnectionMemoryCheck(LimitsTestCase):
    """ferryd refuses to start when connection_memory cannot hold the
    store's own limits (libmicrohttpd's HTML answers would win), and says
    what it needs."""

    @classmethod
    def setUpClass(cls):
        super(StoreTestCase, cls).setUpClass()  # the harness only

    def test_too_small_connection_memory(self):
        d = StoreFerryd(self.h, name="ferryd-small", policy=POLICY,
                        store=["connection_memory = 24K", "max_header_bytes = 16K"])
        r = subprocess.run([ferryd_path(), "-c", d.config], capture_output=True, text=True,
                           timeout=60, stdin=subprocess.DEVNULL)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("connection_memory (24576) must be at least 33792", r.stdout + r.stderr)
        # With a smaller header limit the same memory is enough.
        d = StoreFerryd(self.h, name="ferryd-small2", policy=POLICY,
                        store=["connection_memory = 24K", "max_header_bytes = 4K",
                               "max_request_target = 4K", "max_headers = 32"])
        d.start()
        try:
            s3 = d.boto3()
            s3.put_object(Bucket="ingest", Key="op/small-memory", Body=b"fits")
            self.assertEqual(s3.get_object(Bucket="ingest", Key="op/small-memory")["Body"].read(),
                             b"fits")
        finally:
            d.stop()


class RequestTimeouts(LimitsTestCase):
    """Stalled bodies (no minimum rate here, so that only idle_timeout
    counts)."""
    store_options = [o for o in LimitsTestCase.store_options if "min_upload_rate" not in o] + [
        "min_upload_rate = 0", "header_timeout = %ds" % HEAD_S]

    def test_stalled_body(self):
        """A body that stops for idle_timeout gets 400 RequestTimeout and
        the connection is closed; nothing is stored."""
        url = self.presign("op/stalled.bin")
        with self.tls_socket() as s:
            self.raw_put(s, url, 100000)
            s.sendall(b"x" * 5000)
            t0 = time.monotonic()
            status, headers, body = self.read_response(s)
            waited = time.monotonic() - t0
            self.assert_s3_error(status, headers, body, 400, "RequestTimeout")
            self.assertEqual(headers.get("connection"), "close")
            self.assertGreater(waited, IDLE_S - 0.5)
            self.assertLess(waited, IDLE_S + 3)
            self.assert_closed(s)
            # The store ends the connection itself after its linger, while
            # this client still holds it open: the .part file goes then.
            wait_until(lambda: self.d.tmp_files() == [], timeout=6, what="no .part")
            wait_until(lambda: "event=store.upload_aborted" in self.d.log(), timeout=5,
                       what="event=store.upload_aborted in ferryd's log")
        self.assertIn("reason=stalled", self.d.log())
        self.assertFalse(self.exists("op/stalled.bin"))
        self.assert_clean_and_serving()

    def test_stalled_before_the_first_byte(self):
        """Expect: 100-continue, then nothing: RequestTimeout too."""
        url = self.presign("op/never.bin")
        with self.tls_socket() as s:
            self.raw_put(s, url, 1000, b"Expect: 100-continue\r\n")
            status, _, _ = self.read_response(s)
            self.assertEqual(status, 100)
            status, headers, body = self.read_response(s)
            self.assert_s3_error(status, headers, body, 400, "RequestTimeout")
            self.assert_closed(s)
        self.assertFalse(self.exists("op/never.bin"))
        self.assert_clean_and_serving()

    def test_device_grant_stalled(self):
        """A device's upload to its grant URL that stalls: RequestTimeout,
        and the grant stays unused (the device may retry it)."""
        c = self.device()
        data = os.urandom(50000)
        g = self.new_grant(c, data)
        with self.tls_socket() as s:
            extra = b"".join(b"%s: %s\r\n" % (k.encode(), v.encode())
                             for k, v in g["headers"].items()
                             if k.lower() not in ("content-length", "host"))
            self.raw_put(s, g["url"], len(data), extra)
            s.sendall(data[:20000])
            status, headers, body = self.read_response(s)
            self.assert_s3_error(status, headers, body, 400, "RequestTimeout")
            self.assert_closed(s)
        self.assertFalse(self.exists(g["key"]))
        rows = self.ledger_exec("SELECT state FROM grants WHERE id = ?", g["grant"])
        self.assertEqual(rows, [("issued",)])
        self.assert_clean_and_serving()
        # The grant is still good: the same URL takes the whole body.
        code, body = self.put_grant(g, self.payload(data))
        self.assertEqual(code, 200, body)
        self.assertEqual(self.get_bytes(g["key"]), data)

    def test_stalled_post_form(self):
        """A form upload (POST) that stalls in the middle of its file."""
        boundary = b"ferryboundary"
        part = (b"--" + boundary + b"\r\nContent-Disposition: form-data; name=\"key\"\r\n\r\n"
                b"op/post-stalled\r\n--" + boundary +
                b"\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f\"\r\n\r\n")
        with self.tls_socket() as s:
            s.sendall(b"POST /ingest HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
                      b"boundary=" + boundary + b"\r\nContent-Length: 100000\r\n\r\n" + part)
            status, headers, body = self.read_response(s)
            self.assert_s3_error(status, headers, body, 400, "RequestTimeout")
            self.assert_closed(s)
        self.assertFalse(self.exists("op/post-stalled"))
        self.assert_clean_and_serving()

    def test_idle_headers_closed(self):
        """Before the header section is complete there is no request to
        answer yet: an idle connection is closed after idle_timeout."""
        with self.tls_socket() as s:
            s.sendall(b"PUT /ingest/op/idle HTTP/1.1\r\nHost: x\r\n")  # never finished
            t0 = time.monotonic()
            status, _, _ = self.read_response(s)
            self.assertIsNone(status)
            self.assertLess(time.monotonic() - t0, IDLE_S + 5)
        self.assert_clean_and_serving()

    def trickle_until_closed(self, s, first, byte, limit_s=20):
        """Sends first, then one byte a second (each well within
        idle_timeout); returns the seconds until the store closed."""
        t0 = time.monotonic()
        s.sendall(first)
        s.settimeout(1)
        while time.monotonic() - t0 < limit_s:
            try:
                if s.recv(100) == b"":
                    return time.monotonic() - t0
            except (socket.timeout, ssl.SSLWantReadError):
                pass
            except (ConnectionResetError, ssl.SSLError):
                return time.monotonic() - t0
            try:
                s.sendall(byte)
            except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                return time.monotonic() - t0
        return None

    def test_slow_headers_closed(self):
        """Headers trickled a byte a second (never idle for idle_timeout)
        are cut off at header_timeout: slowloris."""
        with self.tls_socket() as s:
            took = self.trickle_until_closed(
                s, b"PUT /ingest/op/slowhead HTTP/1.1\r\nHost: x\r\nX-Slow: ", b"a")
        self.assertIsNotNone(took, "still open after 20 s")
        self.assertGreater(took, HEAD_S - 1.5)
        self.assertLess(took, HEAD_S + 2.5)
        # The log line may land a moment after the socket is shut.
        wait_until(lambda: "event=store.head_timeout" in self.d.log(), timeout=5,
                   what="event=store.head_timeout in ferryd's log")
        self.assert_clean_and_serving()

    def test_slow_request_line_closed(self):
        """The same for a request line trickled before any header."""
        with self.tls_socket() as s:
            took = self.trickle_until_closed(s, b"GET /ingest/", b"k")
        self.assertIsNotNone(took, "still open after 20 s")
        self.assertLess(took, HEAD_S + 2.5)
        self.assert_clean_and_serving()

    def test_keep_alive_heads_are_timed_per_request(self):
        """A keep-alive connection making requests for longer than
        header_timeout is not cut: each head is timed from the end of the
        previous request. (PUTs with a body: refusals, answered before the
        body is read, close the connection.)"""
        with self.tls_socket() as s:
            t0 = time.monotonic()
            n = 0
            last_start = t0
            while time.monotonic() - t0 < HEAD_S + 3:
                last_start = time.monotonic()
                self.raw_put(s, self.presign("op/keepalive-%d" % n), 2)
                s.sendall(b"ka")
                status, headers, body = self.read_response(s)
                self.assertEqual(status, 200, body)
                self.assertNotEqual(headers.get("connection"), "close")
                n += 1
                time.sleep(1)
            # The connection outlived header_timeout (a loaded machine makes
            # fewer requests in that time; the count does not matter).
            self.assertGreater(last_start - t0, HEAD_S)
            self.assertGreaterEqual(n, 3)
        self.assertEqual(self.get_bytes("op/keepalive-%d" % (n - 1)), b"ka")

    def test_many_stalled_at_once(self):
        """Twenty stalled uploads at once are all answered; the store keeps
        serving meanwhile."""
        socks = []
        try:
            for i in range(20):
                s = self.tls_socket()
                socks.append(s)
                self.raw_put(s, self.presign("op/many-%d" % i), 10000)
                s.sendall(b"m" * 100)
            c = self.device("dev-b")
            data = os.urandom(1000)
            g = self.new_grant(c, data, device="dev-b")
            code, body = self.put_grant(g, self.payload(data))
            self.assertEqual(code, 200, body)
            for s in socks:
                status, headers, body = self.read_response(s)
                self.assert_s3_error(status, headers, body, 400, "RequestTimeout")
        finally:
            for s in socks:
                s.close()
        for i in range(20):
            self.assertFalse(self.exists("op/many-%d" % i))
        self.assert_clean_and_serving()


class SlowBodies(LimitsTestCase):
    """Bodies slower than min_upload_rate (50 KB/s) once min_rate_grace
    (1 s) has passed."""

    def test_slow_body_curl(self):
        """curl sending at 10 KB/s where 50 KB/s is the minimum: curl reads
        the RequestTimeout answer while it is still sending."""
        c = self.device()
        data = os.urandom(400000)
        g = self.new_grant(c, data)
        args = ["-X", "PUT", "-T", self.payload(data), "--limit-rate", "10K"]
        for k, v in g["headers"].items():
            args += ["-H", "%s: %s" % (k, v)]
        t0 = time.monotonic()
        code, body = self.d.curl(args + [g["url"]])
        self.assertLess(time.monotonic() - t0, 15)
        self.assertEqual(code, 400, body)
        self.assertEqual(s3_code(body), "RequestTimeout", body)
        self.assertIn("reason=too_slow", self.d.log())
        self.assertFalse(self.exists(g["key"]))
        rows = self.ledger_exec("SELECT state FROM grants WHERE id = ?", g["grant"])
        self.assertEqual(rows, [("issued",)])
        self.assert_clean_and_serving()

    def test_trickle_raw(self):
        """A body that never stops but averages 2 KB/s: RequestTimeout
        once min_rate_grace has passed, not only after idle_timeout."""
        url = self.presign("op/trickle.bin")
        with self.tls_socket() as s:
            self.raw_put(s, url, 1000000)
            s.settimeout(0.2)
            t0 = time.monotonic()
            got = b""
            while time.monotonic() - t0 < 20 and b"\r\n\r\n" not in got:
                try:
                    s.sendall(b"t" * 400)
                except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                    break
                try:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    got += chunk
                except (socket.timeout, ssl.SSLWantReadError):
                    pass
            self.assertLess(time.monotonic() - t0, IDLE_S + 2)
            head, _, body = got.partition(b"\r\n\r\n")
            self.assertTrue(head.startswith(b"HTTP/1.1 400 "), got)
            # the body may still be on its way
            s.settimeout(5)
            try:
                while b"</Error>" not in body:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    body += chunk
            except (ConnectionResetError, ssl.SSLError, socket.timeout):
                pass
            self.assertEqual(s3_code(body.decode()), "RequestTimeout", got + body)
        self.assertIn("reason=too_slow", self.d.log())
        self.assertFalse(self.exists("op/trickle.bin"))
        self.assert_clean_and_serving()


class PlainHttpTimeout(LimitsTestCase):
    """The same answer without TLS ([store] plain_http)."""

    @classmethod
    def setUpClass(cls):
        super(StoreTestCase, cls).setUpClass()  # the harness, not StoreTestCase's ferryd
        cls.d = StoreFerryd(cls.h, policy=POLICY, store=cls.store_options, plain_http=True)
        cls.addClassCleanup(cls.d.stop)
        cls.d.start()

    def test_stalled_body_plain(self):
        url = self.presign("op/plain-stalled.bin")
        with socket.create_connection(("127.0.0.1", self.d.port), timeout=30) as s:
            target = url[len(self.d.endpoint):]
            s.sendall(b"PUT " + target.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                      b"Content-Length: 1000\r\n\r\n" % self.d.port + b"p" * 10)
            status, headers, body = self.read_response(s)
            self.assert_s3_error(status, headers, body, 400, "RequestTimeout")
            self.assert_closed(s)
        self.assertFalse(self.exists("op/plain-stalled.bin"))
        self.assert_clean_and_serving()


if __name__ == "__main__":
    ferry_harness.main()
