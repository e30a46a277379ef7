"""boto3 as the oracle for src/sigv4.

Both directions, with botocore's clock pinned (datetime.datetime patched while
botocore signs) so that both sides sign at the same instant:

- Ferry signs (``ferryctl presign`` and the ``sigv4_tool`` test driver) and
  its URLs must carry exactly the parameters and signature boto3's
  ``generate_presigned_url`` produces, for a spread of keys (spaces, ``+``,
  ``%``, ``~``, UTF-8, 1,024 bytes), methods and bound headers. The query
  parameters are compared parsed, since their order differs between
  botocore versions.
- boto3 signs and Ferry verifies: boto3's pre-signed URLs, boto3's
  header-signed requests (captured just before they would be sent) and
  boto3's ``generate_presigned_post`` forms must be accepted, and tampered
  copies refused with the right reason.

Run by ctest with Debian's /usr/bin/python3 (which has boto3).
"""

import base64
import datetime
import hashlib
import hmac
import json
import os
import subprocess
import sys
import tempfile
import unittest
import urllib.parse
from unittest import mock

import boto3
from botocore.awsrequest import AWSResponse
from botocore.config import Config

AKID = "AKIDEXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
REGION = "eu-west-1"
ENDPOINT = "http://127.0.0.1:9000"
BUCKET = "ingest"
FIXED = datetime.datetime(2026, 11, 25, 12, 0, 0)
NOW = 1795608000  # FIXED as UTC seconds

KEYS = [
    "plain.bin",
    "dev-001/2026/11/25/g_01-lung.wav",
    "with space/and  two  spaces",
    "plus+sign+",
    "percent%20literal%",
    "tilde~and-dash_and.dot",
    "reserved !*'();:@&=$,?#[]",
    "utf8/donn\u00e9es/\u20ac/\u00e9t\u00e9/\U0001f600.wav",
    "double//slash/./dot/../dotdot",
    "k" * 1024,
    "x/" + "\u00e9" * 511,  # 1,024 bytes of UTF-8
]

CHECKSUM = base64.b64encode(hashlib.sha256(b"hello").digest()).decode()

# (boto3 method, HTTP method, boto3 params beyond Bucket/Key, headers Ferry binds)
CASES = [
    ("put_object", "PUT", {}, []),
    ("put_object", "PUT", {"ContentType": "audio/wav"}, [("Content-Type", "audio/wav")]),
    ("put_object", "PUT",
     {"ContentType": "audio/wav", "ContentLength": 5, "ChecksumSHA256": CHECKSUM},
     [("Content-Type", "audio/wav"), ("Content-Length", "5"),
      ("x-amz-checksum-sha256", CHECKSUM)]),
    ("get_object", "GET", {}, []),
    ("head_object", "HEAD", {}, []),
    ("delete_object", "DELETE", {}, []),
]


class FixedDateTime(datetime.datetime):
    @classmethod
    def utcnow(cls):
        return FIXED

    @classmethod
    def now(cls, tz=None):
        return FIXED if tz is None else FIXED.replace(tzinfo=datetime.timezone.utc).astimezone(tz)


def pinned_clock():
    # botocore.auth does "import datetime" and calls datetime.datetime.utcnow().
    return mock.patch("botocore.auth.datetime.datetime", FixedDateTime)


def s3_client(region=REGION):
    return boto3.client(
        "s3", endpoint_url=ENDPOINT, region_name=region, aws_access_key_id=AKID,
        aws_secret_access_key=SECRET,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}))


def build_dir():
    d = os.environ.get("FERRY_BUILD_DIR")
    if not d:
        raise RuntimeError("FERRY_BUILD_DIR is not set (run through ctest)")
    return d


def ferryctl():
    return os.path.join(build_dir(), "cmd", "ferryctl", "ferryctl")


def sigv4_tool(request):
    path = os.path.join(build_dir(), "src", "sigv4", "sigv4_tool")
    out = subprocess.run([path], input=json.dumps(request).encode(), capture_output=True,
                         check=True, timeout=60)
    return json.loads(out.stdout)


def split_url(url):
    """scheme://netloc, raw path, and the query parsed into a dict."""
    parts = urllib.parse.urlsplit(url)
    params = urllib.parse.parse_qs(parts.query, keep_blank_values=True)
    return parts.scheme + "://" + parts.netloc, parts.path, params


def verify(method, url, headers=(), payload_hash=None, now=NOW):
    req = {"mode": "verify", "now": now, "region": REGION, "service": "s3",
           "keys": {AKID: SECRET, "AKIDOTHER": "other-secret"}, "method": method, "url": url,
           "headers": [[n, v] for n, v in headers]}
    if payload_hash is not None:
        req["payload_hash"] = payload_hash
    return sigv4_tool(req)["reason"]


def verify_post(fields, content_length=-1, now=NOW, bucket=BUCKET):
    return sigv4_tool({"mode": "post", "now": now, "region": REGION, "service": "s3",
                       "keys": {AKID: SECRET}, "bucket": bucket,
                       "fields": [[n, v] for n, v in fields], "content_length": content_length})


def tamper_sig(url):
    i = url.index("X-Amz-Signature=") + len("X-Amz-Signature=")
    c = "0" if url[i] != "0" else "1"
    return url[:i] + c + url[i + 1:]


class Boto3Oracle(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="ferry-sigv4-")
        cls.secret_file = os.path.join(cls.tmp.name, "secret")
        with open(cls.secret_file, "w") as f:
            f.write(SECRET + "\n")

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def ferry_presign(self, method, key, headers, expires=3600, region=REGION):
        argv = [ferryctl(), "presign", "--endpoint", ENDPOINT, "--bucket", BUCKET, "--key", key,
                "--method", method, "--expires", str(expires), "--region", region,
                "--access-key", AKID, "--secret-key-file", self.secret_file, "--now", str(NOW)]
        for n, v in headers:
            argv += ["--header", "%s: %s" % (n, v)]
        out = subprocess.run(argv, capture_output=True, check=True, timeout=60)
        lines = out.stdout.decode().splitlines()
        self.assertEqual(len(lines), 1, out.stdout)
        return lines[0]

    def boto3_presign(self, client_method, key, params, expires=3600, region=REGION):
        with pinned_clock():
            s3 = s3_client(region)
            return s3.generate_presigned_url(
                client_method, Params=dict(Bucket=BUCKET, Key=key, **params), ExpiresIn=expires)

    def test_ferryctl_matches_boto3(self):
        n = 0
        for key in KEYS:
            for client_method, method, params, headers in CASES:
                with self.subTest(key=key[:40], method=method, headers=len(headers)):
                    theirs = self.boto3_presign(client_method, key, params)
                    ours = self.ferry_presign(method, key, headers)
                    b_base, b_path, b_q = split_url(theirs)
                    f_base, f_path, f_q = split_url(ours)
                    self.assertEqual(f_base, b_base)
                    self.assertEqual(f_path, b_path)
                    self.assertEqual(f_q, b_q)
                    n += 1
        self.assertEqual(n, len(KEYS) * len(CASES))

    def test_expiries_and_regions(self):
        for expires in (1, 60, 3600, 604800):
            for region in ("us-east-1", "eu-west-1", "ap-southeast-2"):
                theirs = self.boto3_presign("put_object", "k", {}, expires, region)
                ours = self.ferry_presign("PUT", "k", [], expires, region)
                self.assertEqual(split_url(ours)[2], split_url(theirs)[2])
        for bad in ("0", "604801", "-1", "x"):
            argv = [ferryctl(), "presign", "--endpoint", ENDPOINT, "--bucket", BUCKET, "--key",
                    "k", "--expires", bad, "--access-key", AKID, "--secret-key-file",
                    self.secret_file]
            r = subprocess.run(argv, capture_output=True, timeout=60)
            self.assertNotEqual(r.returncode, 0, bad)
            self.assertEqual(r.stdout, b"")

    def test_endpoints_match_boto3(self):
        # The host header botocore signs: lower-cased, default port dropped,
        # IPv6 in brackets. The URL keeps the endpoint as given.
        for endpoint in ("http://[::1]:9000", "https://127.0.0.1:443", "https://s3.example.com",
                         "http://Store.Example.COM:80", "http://127.0.0.1:8080/"):
            with pinned_clock():
                s3 = boto3.client(
                    "s3", endpoint_url=endpoint, region_name=REGION, aws_access_key_id=AKID,
                    aws_secret_access_key=SECRET,
                    config=Config(signature_version="s3v4", s3={"addressing_style": "path"}))
                theirs = s3.generate_presigned_url(
                    "put_object", Params={"Bucket": BUCKET, "Key": "a b"}, ExpiresIn=60)
            argv = [ferryctl(), "presign", "--endpoint", endpoint, "--bucket", BUCKET, "--key",
                    "a b", "--expires", "60", "--region", REGION, "--access-key", AKID,
                    "--secret-key-file", self.secret_file, "--now", str(NOW)]
            ours = subprocess.run(argv, capture_output=True, check=True,
                                  timeout=60).stdout.decode().strip()
            self.assertEqual(split_url(ours)[1:], split_url(theirs)[1:], endpoint)

    def test_config_file(self):
        conf = os.path.join(self.tmp.name, "ferryd.ini")
        with open(conf, "w") as f:
            f.write("[store]\naccess_key = %s\nsecret_key_file = %s\nregion = %s\n"
                    % (AKID, self.secret_file, REGION))
        argv = [ferryctl(), "presign", "--endpoint", ENDPOINT, "--bucket", BUCKET, "--key", "k",
                "--config", conf, "--now", str(NOW)]
        ours = subprocess.run(argv, capture_output=True, check=True,
                              timeout=60).stdout.decode().strip()
        self.assertEqual(split_url(ours)[2],
                         split_url(self.boto3_presign("put_object", "k", {}))[2])
        with open(conf, "w") as f:
            f.write("[store]\naccess_key = %s\nbogus = 1\n" % AKID)
        r = subprocess.run(argv, capture_output=True, timeout=60)
        self.assertEqual(r.returncode, 1)
        self.assertIn(b"bogus", r.stderr)
        self.assertEqual(r.stdout, b"")

    def test_extra_query_params_match_boto3(self):
        # Extra signed query parameters go through the library (ferryctl has
        # no option for them): response-* overrides and versionId.
        params = {"ResponseContentType": "text/plain; charset=utf-8",
                  "ResponseContentDisposition": 'attachment; filename="\u00e9 t\u00e9.txt"',
                  "VersionId": "v1~+/="}
        theirs = self.boto3_presign("get_object", "a b/\u00e9", params, 900)
        query = [["response-content-type", params["ResponseContentType"]],
                 ["response-content-disposition", params["ResponseContentDisposition"]],
                 ["versionId", params["VersionId"]]]
        ours = sigv4_tool({"mode": "presign", "now": NOW, "region": REGION, "service": "s3",
                           "access_key": AKID, "secret": SECRET, "endpoint": ENDPOINT,
                           "method": "GET", "path": "/%s/a b/\u00e9" % BUCKET, "expires": 900,
                           "query": query})["url"]
        self.assertEqual(split_url(ours)[1:], split_url(theirs)[1:])
        self.assertEqual(verify("GET", theirs), "OK")

    def test_verifier_accepts_boto3_presigned_urls(self):
        for key in KEYS:
            for client_method, method, params, headers in CASES:
                with self.subTest(key=key[:40], method=method):
                    url = self.boto3_presign(client_method, key, params)
                    self.assertEqual(verify(method, url, headers), "OK")
                    # Tampering is refused with the specific reason.
                    self.assertEqual(verify(method, tamper_sig(url), headers),
                                     "SIGNATURE_MISMATCH")
                    other = "POST" if method != "POST" else "PUT"
                    self.assertEqual(verify(other, url, headers), "SIGNATURE_MISMATCH")
                    self.assertEqual(verify(method, url, headers, now=NOW + 3601), "EXPIRED")
                    if headers:
                        changed = [(n, v + "x") for n, v in headers]
                        self.assertEqual(verify(method, url, changed), "SIGNATURE_MISMATCH")
                        self.assertEqual(verify(method, url, headers[1:] if len(headers) > 1
                                                else []), "SIGNED_HEADER_MISSING")

    def captured_request(self, call, **kwargs):
        """Runs a boto3 call, captures the signed request, never sends it."""
        captured = {}

        class Raw:
            def stream(self, **kw):
                yield b""

            def read(self, *a, **kw):
                return b""

        def before_send(request, **kw):
            captured["request"] = request
            return AWSResponse(request.url, 200, {"ETag": '"0"'}, Raw())

        with pinned_clock():
            s3 = s3_client()
            s3.meta.events.register("before-send.s3", before_send)
            getattr(s3, call)(**kwargs)
        r = captured["request"]
        headers = []
        for n, v in r.headers.items():
            headers.append((n, v.decode() if isinstance(v, bytes) else str(v)))
        return r.method, r.url, headers

    def test_verifier_accepts_boto3_header_auth(self):
        calls = [
            ("put_object", dict(Bucket=BUCKET, Key=k, Body=b"hello", ContentType="text/plain"))
            for k in KEYS
        ] + [
            ("put_object", dict(Bucket=BUCKET, Key="m", Body=b"x" * 1000,
                                Metadata={"device": "dev-001", "note": "a  b"})),
            ("get_object", dict(Bucket=BUCKET, Key="a b/\u00e9", Range="bytes=0-9")),
            ("head_object", dict(Bucket=BUCKET, Key="plus+sign")),
            ("delete_object", dict(Bucket=BUCKET, Key="tilde~")),
            ("list_objects_v2", dict(Bucket=BUCKET, Prefix="dev-001/\u00e9 x", MaxKeys=10)),
            ("create_multipart_upload", dict(Bucket=BUCKET, Key="big.bin")),
            ("upload_part", dict(Bucket=BUCKET, Key="big.bin", UploadId="u+1/=", PartNumber=2,
                                 Body=b"part")),
        ]
        for call, kwargs in calls:
            with self.subTest(call=call, key=kwargs.get("Key", "")[:40]):
                method, url, headers = self.captured_request(call, **kwargs)
                self.assertEqual(verify(method, url, headers), "OK")
                # The same request a little later is fine, outside +-15 min not.
                self.assertEqual(verify(method, url, headers, now=NOW + 899), "OK")
                self.assertEqual(verify(method, url, headers, now=NOW + 901), "SKEWED")
                self.assertEqual(verify(method, url, headers, now=NOW - 901), "SKEWED")
                changed = [(n, v.replace("T120000Z", "T120001Z"))
                           if n.lower() == "x-amz-date" else (n, v) for n, v in headers]
                self.assertEqual(verify(method, url, changed), "SIGNATURE_MISMATCH")
                sep = "&" if "?" in url else "?"
                self.assertEqual(verify(method, url + sep + "extra=1", headers),
                                 "SIGNATURE_MISMATCH")

    def boto3_post(self, key, fields=None, conditions=None, expires=600):
        with pinned_clock():
            s3 = s3_client()
            return s3.generate_presigned_post(BUCKET, key, Fields=fields, Conditions=conditions,
                                              ExpiresIn=expires)

    def test_verifier_accepts_boto3_post_forms(self):
        post = self.boto3_post(
            "dev-001/${filename}",
            fields={"Content-Type": "audio/wav", "x-amz-meta-device": "dev-001",
                    "success_action_status": "201"},
            conditions=[["content-length-range", 1, 1000], {"Content-Type": "audio/wav"},
                        {"x-amz-meta-device": "dev-001"}, {"success_action_status": "201"}])
        self.assertEqual(post["url"], ENDPOINT + "/" + BUCKET)
        fields = dict(post["fields"])
        fields["key"] = "dev-001/lung.wav"  # the browser substitutes ${filename}
        items = list(fields.items())
        self.assertEqual(verify_post(items, 500)["reason"], "OK")
        self.assertEqual(verify_post(items)["reason"], "OK")
        self.assertEqual(verify_post(items, 1001)["reason"], "ENTITY_TOO_LARGE")
        self.assertEqual(verify_post(items, 0)["reason"], "ENTITY_TOO_SMALL")
        self.assertEqual(verify_post(items, 10, now=NOW + 601)["reason"], "POLICY_EXPIRED")
        self.assertEqual(verify_post(items, 10, bucket="other")["reason"], "POLICY_CONDITION")
        for name, value in (("key", "dev-002/lung.wav"), ("Content-Type", "text/html"),
                            ("x-amz-meta-device", "dev-002")):
            bad = dict(fields, **{name: value})
            v = verify_post(list(bad.items()), 10)
            self.assertEqual((v["reason"], v["detail"]), ("POLICY_CONDITION", name))
        v = verify_post(items + [("x-amz-meta-extra", "1")], 10)
        self.assertEqual((v["reason"], v["detail"]), ("POLICY_EXTRA_FIELD", "x-amz-meta-extra"))
        self.assertEqual(verify_post(items + [("x-ignore-me", "1")], 10)["reason"], "OK")
        bad = dict(fields, **{"x-amz-signature": "0" * 64})
        self.assertEqual(verify_post(list(bad.items()), 10)["reason"], "SIGNATURE_MISMATCH")

        # The plain form: exact key, no extra conditions.
        for key in KEYS:
            post = self.boto3_post(key)
            self.assertEqual(verify_post(list(post["fields"].items()), 5)["reason"], "OK",
                             key[:40])

    def test_ferry_post_form_like_boto3(self):
        form = sigv4_tool({"mode": "form", "now": NOW, "region": REGION, "service": "s3",
                           "access_key": AKID, "secret": SECRET, "endpoint": ENDPOINT,
                           "bucket": BUCKET, "key": "dev-001/", "key_is_prefix": True,
                           "expires": 600, "length_min": 1, "length_max": 1000,
                           "content_type": "audio/wav",
                           "fields": [["x-amz-meta-device", "dev-001"]]})
        theirs = self.boto3_post("dev-001/${filename}", fields={"Content-Type": "audio/wav",
                                                                 "x-amz-meta-device": "dev-001"},
                                 conditions=[["content-length-range", 1, 1000],
                                             {"Content-Type": "audio/wav"},
                                             {"x-amz-meta-device": "dev-001"}])
        self.assertEqual(form["url"], theirs["url"])
        ours = dict(form["fields"])
        self.assertEqual(set(ours), set(theirs["fields"]))
        for name in ("key", "x-amz-algorithm", "x-amz-credential", "x-amz-date", "Content-Type",
                     "x-amz-meta-device"):
            self.assertEqual(ours[name], theirs["fields"][name], name)
        # The signature is HMAC(signing key, policy), computed here
        # independently of both implementations.
        def h(k, m):
            return hmac.new(k, m.encode(), hashlib.sha256).digest()
        k = h(h(h(h(("AWS4" + SECRET).encode(), "20261125"), REGION), "s3"), "aws4_request")
        self.assertEqual(ours["x-amz-signature"],
                         hmac.new(k, ours["policy"].encode(), hashlib.sha256).hexdigest())
        policy = json.loads(base64.b64decode(ours["policy"]))
        self.assertEqual(policy["expiration"], "2026-11-25T12:10:00Z")
        self.assertIn(["starts-with", "$key", "dev-001/"], policy["conditions"])
        self.assertIn(["content-length-range", 1, 1000], policy["conditions"])
        fields = dict(ours, key="dev-001/lung.wav")
        self.assertEqual(verify_post(list(fields.items()), 999)["reason"], "OK")


if __name__ == "__main__":
    result = unittest.main(exit=False, verbosity=2).result
    sys.exit(0 if result.wasSuccessful() else 1)
