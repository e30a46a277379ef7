"""A third-party SigV4 verifier accepts Ferry's pre-signed URLs.

@20minutes/s3rver@4.0.4 (a fake S3 in Node.js that does verify SigV4; the
older s3rver@3 checks nothing and proves nothing) is installed from npm into
$FERRY_BUILD_DIR/node once and reused. It is started on a free loopback port
and stopped by its PID (also when a test fails). curl uploads to URLs that
`ferryctl presign` signed; tampered URLs must be refused, which shows the
server really checks.

Needs node and npm; the first run needs the npm registry.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.parse

from ferry_harness import build_dir
from ferryd_harness import S3RVER_KEY as AKID, S3RVER_SECRET as SECRET, S3rver

BUCKET = "ingest"
KEYS = ["dev-001/2026/11/25/g_01-lung.wav", "with space/plus+tilde~pct%.bin",
        "utf8/donn\u00e9es/\u20ac.wav"]


class S3rverAcceptsFerryUrls(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        if shutil.which("node") is None or shutil.which("npm") is None:
            raise RuntimeError("node and npm are required for this test")
        cls.tmp = tempfile.TemporaryDirectory(prefix="ferry-s3rver-")
        cls.store = S3rver(cls.tmp.name, BUCKET)
        try:
            cls.secret_file = os.path.join(cls.tmp.name, "secret")
            with open(cls.secret_file, "w") as f:
                f.write(SECRET + "\n")
            cls.store.start()
        except Exception:
            cls.tearDownClass()
            raise
        cls.endpoint = cls.store.endpoint

    @classmethod
    def tearDownClass(cls):
        cls.store.stop()
        cls.tmp.cleanup()

    def presign(self, key, method="PUT", headers=(), expires=300, now=None, region="us-east-1",
                akid=AKID):
        argv = [os.path.join(build_dir(), "cmd", "ferryctl", "ferryctl"), "presign",
                "--endpoint", self.endpoint, "--bucket", BUCKET, "--key", key, "--method",
                method, "--expires", str(expires), "--region", region, "--access-key", akid,
                "--secret-key-file", self.secret_file]
        if now is not None:
            argv += ["--now", str(now)]
        for n, v in headers:
            argv += ["--header", "%s: %s" % (n, v)]
        out = subprocess.run(argv, capture_output=True, check=True, timeout=60)
        return out.stdout.decode().strip()

    def curl(self, url, method="PUT", headers=(), body=None):
        """Returns (HTTP status, response body) of a curl request."""
        argv = ["curl", "-sS", "-g", "-o", "-", "-w", "\n%{http_code}", "-X", method,
                "--max-time", "30"]
        body_file = None
        if body is not None:
            body_file = os.path.join(self.tmp.name, "body")
            with open(body_file, "wb") as f:
                f.write(body)
            argv += ["--data-binary", "@" + body_file]
        for n, v in headers:
            argv += ["-H", "%s: %s" % (n, v)]
        # curl sends a default Content-Type with --data-binary; pin it so only
        # the headers we mean are sent.
        if body is not None and not any(n.lower() == "content-type" for n, _ in headers):
            argv += ["-H", "Content-Type:"]
        out = subprocess.run(argv + [url], capture_output=True, check=True, timeout=60)
        text, _, code = out.stdout.decode("utf-8", "replace").rpartition("\n")
        return int(code), text

    def test_upload_and_download(self):
        for i, key in enumerate(KEYS):
            with self.subTest(key=key):
                body = ("payload %d \u00e9\n" % i).encode() * 100
                hdrs = [("Content-Type", "audio/wav")]
                url = self.presign(key, headers=hdrs)
                code, text = self.curl(url, body=body, headers=hdrs)
                self.assertEqual(code, 200, text)
                code, text = self.curl(self.presign(key, "GET"), "GET")
                self.assertEqual(code, 200, text)
                self.assertEqual(text, body.decode())

    def test_tampered_urls_are_refused(self):
        body = b"x" * 64
        hdrs = [("Content-Type", "audio/wav")]
        url = self.presign("tamper/k.bin", headers=hdrs)
        i = url.index("X-Amz-Signature=") + len("X-Amz-Signature=")
        for pos in (i, i + 31, len(url) - 1):
            bad = url[:pos] + ("0" if url[pos] != "0" else "1") + url[pos + 1:]
            code, text = self.curl(bad, body=body, headers=hdrs)
            self.assertEqual(code, 403, text)
            self.assertIn("SignatureDoesNotMatch", text)
        # Another key than the one signed, another content type, another method.
        code, text = self.curl(url.replace("tamper/k.bin", "tamper/x.bin"), body=body,
                               headers=hdrs)
        self.assertEqual(code, 403, text)
        code, text = self.curl(url, body=body, headers=[("Content-Type", "text/html")])
        self.assertEqual(code, 403, text)
        self.assertIn("SignatureDoesNotMatch", text)
        code, text = self.curl(url, "DELETE")
        self.assertEqual(code, 403, text)
        # A wrong secret.
        with open(self.secret_file, "w") as f:
            f.write("not-the-secret\n")
        try:
            code, text = self.curl(self.presign("tamper/k.bin", headers=hdrs), body=body,
                                   headers=hdrs)
        finally:
            with open(self.secret_file, "w") as f:
                f.write(SECRET + "\n")
        self.assertEqual(code, 403, text)
        self.assertIn("SignatureDoesNotMatch", text)
        # The untampered URL still works.
        code, text = self.curl(url, body=body, headers=hdrs)
        self.assertEqual(code, 200, text)

    def test_expired_url_is_refused(self):
        url = self.presign("expired.bin", expires=60, now=int(time.time()) - 3600)
        code, text = self.curl(url, body=b"late")
        self.assertEqual(code, 403, text)
        self.assertIn("Request has expired", text)


if __name__ == "__main__":
    result = unittest.main(exit=False, verbosity=2).result
    sys.exit(0 if result.wasSuccessful() else 1)
