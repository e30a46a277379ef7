"""POST object on the embedded store: multipart/form-data streamed through
libmicrohttpd's post processor, the policy verified when the file field
begins and its content-length-range after the last byte. Clients: curl -F
with a form made by boto3's generate_presigned_post, and with a Ferry POST
grant obtained over MQTT; success_action_status honoured; refusals asserted
with status and S3 code, with a valid upload after each.
"""

import hashlib
import itertools
import os
import sqlite3
import unittest

import ferry_harness
from ferry_harness import HarnessTestCase, wait_until
from store_harness import BUCKET, StoreFerryd, s3_code

SEQ = itertools.count(1)
POLICY = ["content_types = */*", "max_size = 64M", "rate_per_minute = 60000",
          "rate_burst = 1000", "max_open_grants = 1000", "put_max_size = 1K"]


class PostUploads(HarnessTestCase):
    harness_devices = ("dev-a",)

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.d = StoreFerryd(cls.h, policy=POLICY)
        cls.addClassCleanup(cls.d.stop)
        cls.d.start()

    def file(self, data):
        p = os.path.join(self.h.tmp, "post-%d.bin" % next(SEQ))
        with open(p, "wb") as f:
            f.write(data)
        return p

    def post(self, url, fields, path, extra=()):
        args = ["-X", "POST"]
        for k, v in fields.items():
            args += ["--form-string", "%s=%s" % (k, v)]
        args += list(extra)
        args += ["-F", "file=@%s" % path, url]
        return self.d.curl(args)

    def boto3_form(self, key, max_len=1 << 20, status=None, ctype=None):
        fields, conditions = {}, [["content-length-range", 0, max_len]]
        if status:
            fields["success_action_status"] = status
            conditions.append({"success_action_status": status})
        if ctype:
            fields["Content-Type"] = ctype
            conditions.append({"Content-Type": ctype})
        return self.d.boto3().generate_presigned_post(BUCKET, key, Fields=fields,
                                                      Conditions=conditions, ExpiresIn=300)

    def assert_serving(self):
        wait_until(lambda: self.d.tmp_files() == [], timeout=5, what="tmp/ empty")
        form = self.boto3_form("post/ok-%d" % next(SEQ))
        code, body = self.post(form["url"], form["fields"], self.file(b"ok"))
        self.assertEqual(code, 204, body)

    def test_boto3_presigned_post(self):
        data = os.urandom(300000)
        form = self.boto3_form("post/boto3.bin")
        code, body = self.post(form["url"], form["fields"], self.file(data))
        self.assertEqual(code, 204, body)
        got = self.d.boto3().get_object(Bucket=BUCKET, Key="post/boto3.bin")
        self.assertEqual(got["Body"].read(), data)
        self.assertEqual(got["ETag"], '"%s"' % hashlib.md5(data).hexdigest())
        form = self.boto3_form("post/${filename}", status="201", ctype="text/plain")
        code, body = self.post(form["url"], form["fields"], self.file(b"named"))
        self.assertEqual(code, 201, body)
        self.assertIn("<Key>post/post-", body)
        form = self.boto3_form("post/two.bin", status="200")
        code, body = self.post(form["url"], form["fields"], self.file(b"two"))
        self.assertEqual(code, 200, body)

    def test_post_refusals(self):
        form = self.boto3_form("post/small.bin", max_len=10)
        r = self.post(form["url"], form["fields"], self.file(b"x" * 11))
        self.assertEqual((r[0], s3_code(r[1])), (400, "EntityTooLarge"), r)
        self.assert_serving()
        fields = dict(form["fields"], key="post/other-key.bin")
        r = self.post(form["url"], fields, self.file(b"x"))
        self.assertEqual((r[0], s3_code(r[1])), (403, "AccessDenied"), r)
        self.assert_serving()
        fields = dict(form["fields"])
        sig = fields["x-amz-signature"]
        fields["x-amz-signature"] = ("0" if sig[0] != "0" else "1") + sig[1:]
        r = self.post(form["url"], fields, self.file(b"x"))
        self.assertEqual((r[0], s3_code(r[1])), (403, "SignatureDoesNotMatch"), r)
        self.assert_serving()
        fields = dict(form["fields"], extra="field")
        r = self.post(form["url"], fields, self.file(b"x"))
        self.assertEqual((r[0], s3_code(r[1])), (403, "AccessDenied"), r)
        self.assert_serving()
        r = self.d.curl(["-X", "POST", "-d", "a=b", form["url"]])
        self.assertEqual((r[0], s3_code(r[1])), (412, "PreconditionFailed"), r)
        r = self.post(form["url"], {}, self.file(b"x"))
        self.assertEqual(r[0] in (400, 403), True, r)
        self.assert_serving()
        for key in ("post/small.bin", "post/other-key.bin"):
            with self.assertRaises(Exception):
                self.d.boto3().head_object(Bucket=BUCKET, Key=key)

    def test_ferry_post_grant(self):
        c = self.h.device_client("dev-a").connect()
        c.subscribe("ferry/dev-a/upload/response")
        data = os.urandom(50000)
        sha = hashlib.sha256(data).hexdigest()
        g = self.d.grant(c, "dev-a", "p-1", len(data), name="big.bin", sha256=sha,
                         method="POST")
        self.assertEqual(g["type"], "grant", g)
        self.assertEqual(g["method"], "POST", g)
        # Other bytes of the right size: the bound checksum refuses them.
        r = self.post(g["url"], g["fields"], self.file(bytes(b ^ 1 for b in data)))
        self.assertEqual((r[0], s3_code(r[1])), (400, "BadDigest"), r)
        # One byte short: below the exact content-length-range.
        r = self.post(g["url"], g["fields"], self.file(data[:-1]))
        self.assertEqual((r[0], s3_code(r[1])), (400, "EntityTooSmall"), r)
        self.assert_serving()
        code, body = self.post(g["url"], g["fields"], self.file(data))
        self.assertIn(code, (200, 201, 204), body)
        got = self.d.boto3().get_object(Bucket=BUCKET, Key=g["key"])
        self.assertEqual(got["Body"].read(), data)
        db = sqlite3.connect(self.d.ledger)
        self.assertEqual(db.execute("SELECT state FROM grants WHERE id = ?",
                                    (g["grant"],)).fetchall(), [("used",)])
        db.close()
        r = self.post(g["url"], g["fields"], self.file(data))
        self.assertEqual((r[0], s3_code(r[1])), (403, "AccessDenied"), r)
        self.assertIn("grant already used", r[1])
        self.assert_serving()


if __name__ == "__main__":
    ferry_harness.main()
