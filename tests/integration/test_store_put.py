"""The embedded store end to end: real Mosquitto (mutual TLS), real ferryd
with [store] kind = embedded (TLS with the PKI's store.pem), real clients:
curl to Ferry grant URLs obtained over MQTT, boto3, and Debian's AWS CLI.

Every refusal is asserted with its HTTP status and S3 error code (and a
request id), and after each one the store must still take a valid upload
and hold no temporary file; a refused upload leaves no object.
"""

import base64
import itertools
import hashlib
import os
import sqlite3
import threading
import time
import unittest

import ferry_harness
from ferry_harness import HarnessTestCase, wait_until
from store_harness import (BUCKET, GRANT_KEY, GRANT_SECRET, OPERATOR_KEY, OPERATOR_SECRET,
                           StoreFerryd, request_id, s3_code)

SEQ = itertools.count(1)

POLICY = [
    "content_types = audio/*, image/*, application/octet-stream",
    "max_size = 64M",
    "max_open_grants = 1000",
    "rate_per_minute = 60000",
    "rate_burst = 1000",
]


class StoreTestCase(HarnessTestCase):
    harness_devices = ("dev-a", "dev-b")
    store_options = ["max_object_size = 32M"]

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.d = StoreFerryd(cls.h, policy=POLICY, store=cls.store_options)
        cls.addClassCleanup(cls.d.stop)
        cls.d.start()

    def device(self, name="dev-a"):
        c = self.h.device_client(name).connect()
        c.subscribe("ferry/%s/upload/response" % name)
        return c

    def payload(self, data, name=None):
        path = os.path.join(self.h.tmp, name or "payload-%d" % next(SEQ))
        with open(path, "wb") as f:
            f.write(data)
        return path

    def new_grant(self, client, data, device="dev-a", with_sha=True, **kw):
        extra = {"sha256": hashlib.sha256(data).hexdigest()} if with_sha else {}
        extra.update(kw)
        g = self.d.grant(client, device, "r-%d" % next(SEQ), len(data), **extra)
        self.assertEqual(g["type"], "grant", g)
        return g

    def put_grant(self, g, path, extra_headers=(), skip=()):
        args = ["-X", "PUT", "-T", path]
        for k, v in g["headers"].items():
            if k.lower() not in skip:
                args += ["-H", "%s: %s" % (k, v)]
        for h in extra_headers:
            args += ["-H", h]
        return self.d.curl(args + [g["url"]])

    def presign(self, key, method="PUT", access_key=OPERATOR_KEY, secret=OPERATOR_SECRET,
                bucket=BUCKET, headers=(), expires=300, now=None):
        sf = os.path.join(self.d.dir, "presign-secret")
        fd = os.open(sf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secret + "\n")
        args = ["presign", "--endpoint", self.d.endpoint, "--bucket", bucket, "--key", key,
                "--method", method, "--access-key", access_key, "--secret-key-file", sf,
                "--expires", str(expires)]
        for h in headers:
            args += ["--header", h]
        if now is not None:
            args += ["--now", str(now)]
        return self.h.ferryctl(*args).stdout.strip()

    def get_bytes(self, key):
        return self.d.boto3().get_object(Bucket=BUCKET, Key=key)["Body"].read()

    def exists(self, key):
        try:
            self.d.boto3().head_object(Bucket=BUCKET, Key=key)
            return True
        except Exception as e:  # botocore ClientError 404
            if "404" in str(e):
                return False
            raise

    def assert_refused(self, result, status, code):
        got_status, body = result
        self.assertEqual(got_status, status, body)
        self.assertEqual(s3_code(body), code, body)
        self.assertRegex(request_id(body), r"^[0-9a-f]{16}$", body)

    def assert_clean_and_serving(self):
        """No temporary file is left, and a fresh grant still uploads."""
        wait_until(lambda: self.d.tmp_files() == [], timeout=5,
                   what=lambda: "tmp/ empty: %r" % self.d.tmp_files())
        c = self.device("dev-b")
        data = os.urandom(1000)
        g = self.new_grant(c, data, device="dev-b")
        code, body = self.put_grant(g, self.payload(data))
        self.assertEqual(code, 200, body)
        self.assertEqual(self.get_bytes(g["key"]), data)
        c.close()

    def ledger_exec(self, sql, *args):
        db = sqlite3.connect(self.d.ledger, timeout=10)
        try:
            with db:
                return db.execute(sql, args).fetchall()
        finally:
            db.close()


class GrantUploads(StoreTestCase):

    def test_curl_upload_to_a_ferry_grant(self):
        data = os.urandom(300000)
        c = self.device()
        g = self.new_grant(c, data)
        self.assertTrue(g["url"].startswith(self.d.endpoint + "/ingest/dev-a/"), g["url"])
        code, body = self.put_grant(g, self.payload(data))
        self.assertEqual(code, 200, body)
        self.assertEqual(self.get_bytes(g["key"]), data)
        head = self.d.boto3().head_object(Bucket=BUCKET, Key=g["key"])
        self.assertEqual(head["ETag"], '"%s"' % hashlib.md5(data).hexdigest())
        self.assertEqual(head["ContentLength"], len(data))
        self.assertEqual(head["ContentType"], "application/octet-stream")
        rows = self.ledger_exec("SELECT state FROM grants WHERE id = ?", g["grant"])
        self.assertEqual(rows, [("used",)])
        rows = self.ledger_exec("SELECT size, sha256, device, grant_id FROM objects"
                                " WHERE object_key = ?", g["key"])
        self.assertEqual(rows, [(len(data), hashlib.sha256(data).hexdigest(), "dev-a",
                                 g["grant"])])
        self.assertEqual(self.d.tmp_files(), [])
        # Used once: the same URL again is refused, and says why.
        r = self.put_grant(g, self.payload(data))
        self.assert_refused(r, 403, "AccessDenied")
        self.assertIn("grant already used", r[1])
        self.assert_clean_and_serving()

    def test_grant_without_sha256(self):
        data = b"hello world\n" * 10
        c = self.device()
        g = self.new_grant(c, data, with_sha=False)
        code, body = self.put_grant(g, self.payload(data))
        self.assertEqual(code, 200, body)
        self.assertEqual(self.get_bytes(g["key"]), data)

    def test_revoked_expired_unknown(self):
        c = self.device()
        data = os.urandom(5000)
        path = self.payload(data)
        g = self.new_grant(c, data)
        self.ledger_exec("UPDATE grants SET state = 'revoked', revoked_at = 1 WHERE id = ?",
                         g["grant"])
        r = self.put_grant(g, path)
        self.assert_refused(r, 403, "AccessDenied")
        self.assertIn("grant revoked", r[1])
        self.assertFalse(self.exists(g["key"]))
        self.assert_clean_and_serving()

        g = self.new_grant(c, data)
        self.ledger_exec("UPDATE grants SET expires_at = ? WHERE id = ?", int(time.time()) - 1,
                         g["grant"])
        r = self.put_grant(g, path)
        self.assert_refused(r, 403, "AccessDenied")
        self.assertIn("grant expired", r[1])
        self.assertFalse(self.exists(g["key"]))
        self.assert_clean_and_serving()

        # A URL correctly signed with the grant credential for a grant the
        # ledger never issued.
        key = "dev-a/2026/11/25/g_0000000000000000000000000a-x.bin"
        url = self.presign(key, access_key=GRANT_KEY, secret=GRANT_SECRET)
        r = self.d.curl(["-X", "PUT", "-T", path, url])
        self.assert_refused(r, 403, "AccessDenied")
        self.assertIn("unknown grant", r[1])
        # ... and for a key that names no grant at all.
        url = self.presign("dev-a/free-choice.bin", access_key=GRANT_KEY, secret=GRANT_SECRET)
        r = self.d.curl(["-X", "PUT", "-T", path, url])
        self.assert_refused(r, 403, "AccessDenied")
        self.assert_clean_and_serving()

    def test_signature_and_binding_refusals(self):
        c = self.device()
        data = os.urandom(4096)
        g = self.new_grant(c, data)
        # A tampered signature.
        sig = g["url"].split("X-Amz-Signature=")[1][:64]
        bad = g["url"].replace(sig, ("0" if sig[0] != "0" else "1") + sig[1:])
        r = self.put_grant(dict(g, url=bad), self.payload(data))
        self.assert_refused(r, 403, "SignatureDoesNotMatch")
        # Another size than the grant's: content-length is signed. (With the
        # grant's own content-length header curl would send only the first
        # 4096 bytes, which is the right upload.)
        r = self.put_grant(g, self.payload(data + b"x"), skip=("content-length",))
        self.assert_refused(r, 403, "SignatureDoesNotMatch")
        # Other bytes of the same size: the announced SHA-256 does not match.
        other = bytes(b ^ 1 for b in data)
        r = self.put_grant(g, self.payload(other))
        self.assert_refused(r, 400, "BadDigest")
        self.assertFalse(self.exists(g["key"]))
        # A wrong Content-MD5 (not signed, but checked against the bytes).
        r = self.put_grant(g, self.payload(data),
                           ["Content-MD5: %s" % base64.b64encode(b"\0" * 16).decode()])
        self.assert_refused(r, 400, "BadDigest")
        r = self.put_grant(g, self.payload(data), ["Content-MD5: not-base64"])
        self.assert_refused(r, 400, "InvalidDigest")
        self.assertFalse(self.exists(g["key"]))
        # The grant is still unused: the right bytes, with a right MD5, go in.
        md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
        code, body = self.put_grant(g, self.payload(data), ["Content-MD5: %s" % md5])
        self.assertEqual(code, 200, body)
        self.assertEqual(self.get_bytes(g["key"]), data)
        # An expired URL (signed an hour ago for 60 s).
        url = self.presign("op/old.bin", expires=60, now=int(time.time()) - 3600)
        r = self.d.curl(["-X", "PUT", "-T", self.payload(b"x"), url])
        self.assert_refused(r, 403, "AccessDenied")
        self.assertIn("expired", r[1])
        # No signature at all.
        r = self.d.curl(["-X", "PUT", "-T", self.payload(b"x"),
                         self.d.endpoint + "/ingest/op/anon.bin"])
        self.assert_refused(r, 403, "AccessDenied")
        self.assert_clean_and_serving()

    def test_request_refusals(self):
        path = self.payload(b"abc")
        r = self.d.curl(["-X", "PATCH", self.d.endpoint + "/ingest/x"])
        self.assert_refused(r, 405, "MethodNotAllowed")
        url = self.presign("k.bin", bucket="other-bucket")
        r = self.d.curl(["-X", "PUT", "-T", path, url])
        self.assert_refused(r, 404, "NoSuchBucket")
        url = self.presign("k" * 1025)
        r = self.d.curl(["-X", "PUT", "-T", path, url])
        self.assert_refused(r, 400, "KeyTooLongError")
        url = self.presign("bad\x01key")
        r = self.d.curl(["-X", "PUT", "-T", path, url])
        self.assert_refused(r, 400, "InvalidArgument")
        # No Content-Length (a chunked body from stdin).
        url = self.presign("op/chunked.bin")
        r = self.d.curl(["-X", "PUT", "-T", "-", url])
        self.assert_refused(r, 411, "MissingContentLength")
        # Over [store] max_object_size (32M): refused before the body is sent.
        big = os.path.join(self.h.tmp, "big")
        with open(big, "wb") as f:
            f.truncate(33 << 20)
        url = self.presign("op/big.bin")
        r = self.d.curl(["-X", "PUT", "-T", big, url])
        self.assert_refused(r, 400, "EntityTooLarge")
        self.assertFalse(self.exists("op/big.bin"))
        # Device credentials never read or list.
        dev = self.d.boto3(access_key=GRANT_KEY, secret=GRANT_SECRET)
        for call in (lambda: dev.list_objects_v2(Bucket=BUCKET),
                     lambda: dev.get_object(Bucket=BUCKET, Key="op/x"),
                     lambda: dev.delete_object(Bucket=BUCKET, Key="op/x")):
            with self.assertRaises(Exception) as cm:
                call()
            self.assertEqual(cm.exception.response["Error"]["Code"], "AccessDenied")
        self.assert_clean_and_serving()

    def test_payload_sha256_mismatch(self):
        """Header auth with a signed x-amz-content-sha256 that does not match
        the bytes sent (same length): XAmzContentSHA256Mismatch."""
        import urllib.request
        import ssl
        from botocore.auth import S3SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials
        url = self.d.endpoint + "/ingest/op/sha-mismatch.bin"
        signed_body, sent_body = b"A" * 100, b"B" * 100
        req = AWSRequest(method="PUT", url=url, data=signed_body,
                         headers={"Content-Length": "100"})
        req.context["payload_signing_enabled"] = True
        auth = S3SigV4Auth(Credentials(OPERATOR_KEY, OPERATOR_SECRET), "s3", "us-east-1")
        auth.add_auth(req)
        headers = dict(req.headers.items())
        headers["X-Amz-Content-SHA256"] = hashlib.sha256(signed_body).hexdigest()
        # Sign again with the explicit hash so that it is bound.
        req = AWSRequest(method="PUT", url=url, data=signed_body, headers=headers)
        auth.add_auth(req)
        self.assertEqual(req.headers["X-Amz-Content-SHA256"],
                         hashlib.sha256(signed_body).hexdigest())
        ctx = ssl.create_default_context(cafile=self.d.ca)
        http = urllib.request.Request(url, data=sent_body, method="PUT",
                                      headers=dict(req.headers.items()))
        try:
            urllib.request.urlopen(http, context=ctx, timeout=30)
            self.fail("accepted")
        except urllib.error.HTTPError as e:
            body = e.read().decode()
            self.assertEqual(e.code, 400, body)
            self.assertEqual(s3_code(body), "XAmzContentSHA256Mismatch", body)
        self.assertFalse(self.exists("op/sha-mismatch.bin"))
        self.assert_clean_and_serving()

    def test_header_auth_outside_the_skew_window(self):
        """A header-signed request dated 20 minutes off (botocore's clock
        pinned there) is refused with RequestTimeTooSkewed, before any byte
        is stored; the same request signed now goes through."""
        import datetime
        import ssl
        import urllib.request
        from unittest import mock
        from botocore.auth import S3SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        def signed_put(key, body, skew_s):
            real = datetime.datetime

            class Skewed(real):
                @classmethod
                def utcnow(cls):
                    return real.utcnow() + datetime.timedelta(seconds=skew_s)

                @classmethod
                def now(cls, tz=None):
                    return real.now(tz) + datetime.timedelta(seconds=skew_s)

            url = self.d.endpoint + "/ingest/" + key
            req = AWSRequest(method="PUT", url=url, data=body,
                             headers={"Content-Length": str(len(body)),
                                      "X-Amz-Content-SHA256":
                                      hashlib.sha256(body).hexdigest()})
            with mock.patch("botocore.auth.datetime.datetime", Skewed):
                S3SigV4Auth(Credentials(OPERATOR_KEY, OPERATOR_SECRET), "s3",
                            "us-east-1").add_auth(req)
            ctx = ssl.create_default_context(cafile=self.d.ca)
            http = urllib.request.Request(url, data=body, method="PUT",
                                          headers=dict(req.headers.items()))
            try:
                with urllib.request.urlopen(http, context=ctx, timeout=30) as resp:
                    return resp.status, resp.read().decode()
            except urllib.error.HTTPError as e:
                return e.code, e.read().decode()

        for skew in (-1200, 1200):
            with self.subTest(skew_s=skew):
                r = signed_put("op/skewed.bin", b"late" * 10, skew)
                self.assert_refused(r, 403, "RequestTimeTooSkewed")
                self.assertFalse(self.exists("op/skewed.bin"))
        status, body = signed_put("op/skewed.bin", b"in time" * 10, 0)
        self.assertEqual(status, 200, body)
        self.assertEqual(self.get_bytes("op/skewed.bin"), b"in time" * 10)
        self.assert_clean_and_serving()

    def test_ledger_busy_is_slowdown_and_stores_nothing(self):
        """While another process holds the ledger's write lock longer than
        the busy timeout, an upload cannot be recorded: 503 SlowDown, the
        bytes already on disk are removed, the grant stays unused, and the
        same grant uploads once the ledger is free again."""
        c = self.device("dev-a")
        data = os.urandom(5000)
        g = self.new_grant(c, data)
        path = self.payload(data)
        locked, release = threading.Event(), threading.Event()

        def hold_write_lock():
            db = sqlite3.connect(self.d.ledger, timeout=10, isolation_level=None)
            db.execute("BEGIN IMMEDIATE")
            locked.set()
            release.wait(30)
            db.execute("ROLLBACK")
            db.close()

        t = threading.Thread(target=hold_write_lock)
        t.start()
        try:
            self.assertTrue(locked.wait(10))
            r = self.put_grant(g, path)
        finally:
            release.set()
            t.join()
        self.assert_refused(r, 503, "SlowDown")
        self.assertFalse(self.exists(g["key"]))
        wait_until(lambda: self.d.tmp_files() == [], timeout=5,
                   what=lambda: "tmp/ empty: %r" % self.d.tmp_files())
        self.assertEqual(self.ledger_exec("SELECT state FROM grants WHERE id = ?", g["grant"]),
                         [("issued",)])
        code, body = self.put_grant(g, path)
        self.assertEqual(code, 200, body)
        self.assertEqual(self.get_bytes(g["key"]), data)
        c.close()

    def test_two_racing_uploads_of_one_grant(self):
        data = os.urandom(8 << 20)
        path = self.payload(data)
        c = self.device()
        g = self.new_grant(c, data)
        results = [None, None]

        def run(i):
            results[i] = self.put_grant(g, path)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        codes = sorted(r[0] for r in results)
        self.assertEqual(codes, [200, 403], results)
        loser = [r for r in results if r[0] == 403][0]
        self.assertEqual(s3_code(loser[1]), "AccessDenied")
        self.assertEqual(self.get_bytes(g["key"]), data)
        rows = self.ledger_exec("SELECT count(*) FROM objects WHERE grant_id = ?", g["grant"])
        self.assertEqual(rows, [(1,)])
        self.assert_clean_and_serving()
        # Exactly the data the ledger names is stored.
        self.assertEqual(self.d.data_problems(), [])


# Slow and stalled bodies (400 RequestTimeout), idle connections and the
# limits on the request head: tests/integration/test_store_limits.py.


if __name__ == "__main__":
    ferry_harness.main()
