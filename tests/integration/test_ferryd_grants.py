"""ferryd end to end: real Mosquitto (mutual TLS), real ferryd, real clients.

Devices are paho-mqtt clients (MQTT 5 and 3.1.1) and mosquitto_rr; the
store is @20minutes/s3rver 4.0.4, which verifies SigV4, standing in for an
external S3-compatible store until the embedded store lands (issue 5): the
URLs in the grants are uploaded to with curl. Every rejection code is
provoked once, and after each one ferryd must still grant a valid request.
"""

import hashlib
import base64
import json
import os
import signal
import subprocess
import sys
import time
import unittest

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

import ferry_harness
from ferry_harness import MQTT5, MQTT311, HarnessTestCase, wait_until
from ferryd_harness import Ferryd, S3rver, ferryd_path

DEVICES = ("dev-a", "dev-b", "dev-c", "dev-rej", "dev-o", "dev-q", "dev-r", "dev-d", "dev-t",
           "dev-p")
POLICY = [
    "content_types = audio/*, image/*, application/octet-stream",
    "max_size = 10M",
    "max_open_grants = 100",
    "rate_per_minute = 600",
    "rate_burst = 60",
    "put_max_size = 1M",
]


def request(rid, name="lung.wav", size=1000, content_type="audio/wav", **extra):
    body = {"id": rid, "name": name, "size": size, "content_type": content_type}
    body.update(extra)
    return json.dumps(body).encode()


def curl(args, timeout=60):
    """Runs curl; returns (status, body)."""
    argv = ["curl", "-sS", "-g", "-o", "-", "-w", "\n%{http_code}", "--max-time", "30"] + args
    out = subprocess.run(argv, capture_output=True, timeout=timeout, check=True)
    text, _, code = out.stdout.decode("utf-8", "replace").rpartition("\n")
    return int(code), text


class FerrydTestCase(HarnessTestCase):
    harness_devices = DEVICES
    policy = POLICY
    broker_options = []

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.store = S3rver(cls.h.tmp)
        cls.addClassCleanup(cls.store.stop)
        cls.store.start()
        cls.ferryd = Ferryd(cls.h, cls.store, policy=cls.policy, broker=cls.broker_options)
        cls.addClassCleanup(cls.ferryd.stop)
        cls.ferryd.start()

    def device(self, name, protocol=MQTT5):
        c = self.h.device_client(name, protocol=protocol).connect()
        c.subscribe("ferry/%s/upload/response" % name)
        return c

    def ask(self, client, name, payload, props=None, timeout=10):
        """Publishes a request and returns (answer dict, message)."""
        client.publish("ferry/%s/upload/request" % name, payload, properties=props)
        msg = client.expect_message(timeout=timeout)
        return json.loads(msg.payload), msg

    def upload(self, grant, path, skip=()):
        args = ["-X", "PUT", "-T", path]
        for k, v in grant["headers"].items():
            if k not in skip:
                args += ["-H", "%s: %s" % (k, v)]
        return curl(args + [grant["url"]])

    def stored_bytes(self, key):
        """Reads an object back through a GET URL signed by ferryctl."""
        secret = os.path.join(self.ferryd.dir, "store-secret")
        url = self.h.ferryctl("presign", "--endpoint", self.store.endpoint, "--bucket",
                              self.store.bucket, "--key", key, "--method", "GET",
                              "--access-key", "S3RVER", "--secret-key-file",
                              secret).stdout.strip()
        out = subprocess.run(["curl", "-sS", "-g", "--fail", "--max-time", "30", url],
                             capture_output=True, check=True, timeout=60)
        return out.stdout

    def payload_file(self, name, data):
        path = os.path.join(self.h.tmp, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def assert_still_serving(self, client, name):
        answer, _ = self.ask(client, name, request("still-%d" % time.monotonic_ns(), size=10))
        self.assertEqual(answer["type"], "grant", answer)


class GrantsOverMqtt(FerrydTestCase):

    def test_mqtt5_grant_uploads_with_curl(self):
        data = os.urandom(70000)
        sha = hashlib.sha256(data).hexdigest()
        path = self.payload_file("a.wav", data)
        c = self.device("dev-a", MQTT5)
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = "ferry/dev-a/upload/response"
        props.CorrelationData = b"\x00corr-1\xff"
        before = time.time()
        answer, msg = self.ask(c, "dev-a", request("r-42", "lung 2026-11-25.wav", len(data),
                                                   sha256=sha), props)
        self.assertEqual(answer["type"], "grant", answer)
        self.assertEqual(answer["id"], "r-42")
        self.assertEqual(answer["method"], "PUT")
        self.assertTrue(answer["grant"].startswith("g_"))
        self.assertTrue(answer["key"].startswith("dev-a/"), answer["key"])
        self.assertIn(answer["grant"], answer["key"])
        self.assertEqual(answer["headers"]["x-amz-checksum-sha256"],
                         base64.b64encode(bytes.fromhex(sha)).decode())
        self.assertEqual(msg.properties.CorrelationData, b"\x00corr-1\xff")
        expires_at = time.mktime(time.strptime(answer["expires_at"], "%Y-%m-%dT%H:%M:%SZ")) \
            - time.timezone
        self.assertLessEqual(msg.properties.MessageExpiryInterval, expires_at - before + 1)
        self.assertGreater(msg.properties.MessageExpiryInterval, 0)
        self.assertLess(len(msg.payload), 128 * 1024)

        code, text = self.upload(answer, path)
        self.assertEqual(code, 200, text)
        self.assertEqual(self.stored_bytes(answer["key"]), data)

        # The grant binds the size: a body of another length, sent with its
        # own Content-Length, does not match the signed one and is refused.
        # (Sending the grant's Content-Length with a longer body would make
        # curl send only that many bytes: s3rver may then take them, so
        # that says nothing. The embedded store's own tests cover the
        # checksum.)
        other = self.payload_file("other.wav", os.urandom(len(data) + 1))
        code, text = self.upload(answer, other, skip=("content-length",))
        self.assertIn(code, (400, 403), text)

    def test_mqtt311_grant_uploads_with_curl(self):
        data = b"RIFF" + os.urandom(5000)
        path = self.payload_file("b.wav", data)
        c = self.device("dev-b", MQTT311)
        answer, msg = self.ask(c, "dev-b", request("r-311", "b.wav", len(data)))
        self.assertEqual(answer["type"], "grant", answer)
        self.assertEqual(answer["id"], "r-311")
        code, text = self.upload(answer, path)
        self.assertEqual(code, 200, text)
        self.assertEqual(self.stored_bytes(answer["key"]), data)

    def test_mosquitto_rr_as_the_device(self):
        cert, key = self.h.device_files("dev-c")
        for version in ("mqttv5", "mqttv311"):
            with self.subTest(version=version):
                out = subprocess.run(
                    ["mosquitto_rr", "-h", "127.0.0.1", "-p", str(self.h.port), "--cafile",
                     self.h.ca, "--cert", cert, "--key", key, "-V", version, "-q", "1",
                     "-t", "ferry/dev-c/upload/request", "-e", "ferry/dev-c/upload/response",
                     "-m", request("rr-" + version, "cam.jpg", 1234, "image/jpeg").decode(),
                     "-W", "15"], capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
                self.assertEqual(out.returncode, 0, out.stderr)
                answer = json.loads(out.stdout)
                self.assertEqual(answer["type"], "grant")
                self.assertEqual(answer["id"], "rr-" + version)

    def test_post_grant_above_put_threshold(self):
        c = self.device("dev-p")
        answer, _ = self.ask(c, "dev-p", request("r-post", "big.bin", 2 * 1024 * 1024,
                                                 "application/octet-stream", method="auto"))
        self.assertEqual(answer["type"], "grant", answer)
        self.assertEqual(answer["method"], "POST")
        fields = answer["fields"]
        self.assertEqual(fields["key"], answer["key"])
        for f in ("policy", "x-amz-signature", "x-amz-credential", "x-amz-date",
                  "x-amz-algorithm", "Content-Type"):
            self.assertIn(f, fields)
        policy = json.loads(base64.b64decode(fields["policy"]))
        self.assertIn(["content-length-range", 2 * 1024 * 1024, 2 * 1024 * 1024],
                      policy["conditions"])
        answer, _ = self.ask(c, "dev-p", request("r-put", "small.bin", 100,
                                                 "application/octet-stream", method="put"))
        self.assertEqual(answer["method"], "PUT")

    def test_every_rejection_has_its_code(self):
        c = self.device("dev-rej")
        name_10k = "n" * 10240
        cases = [
            (b"{\"id\": \"r-1\", ", "MalformedJson"),
            (b"[1, 2, 3]", "MalformedJson"),
            (b"{\"id\":\"r-1\",\"id\":\"r-2\",\"name\":\"a\",\"size\":1,"
             b"\"content_type\":\"audio/wav\"}", "DuplicateKey"),
            (json.dumps({"id": "r-1", "size": 1, "content_type": "audio/wav"}).encode(),
             "MissingField"),
            (json.dumps({"id": "r-1", "name": "a", "size": "12",
                         "content_type": "audio/wav"}).encode(), "InvalidField"),
            (json.dumps({"id": "r-1", "name": "a", "size": 1.5,
                         "content_type": "audio/wav"}).encode(), "InvalidField"),
            (json.dumps({"id": "r" * 200, "name": "a", "size": 1,
                         "content_type": "audio/wav"}).encode(), "InvalidField"),
            (json.dumps({"id": "r-1", "name": "a", "size": 2 ** 60,
                         "content_type": "audio/wav"}).encode(), "InvalidField"),
            (json.dumps({"id": "r-1", "name": "a", "size": 1, "content_type": "audio/wav",
                         "bucket": "other"}).encode(), "UnknownField"),
            (b"{\"pad\": \"" + b"x" * 20000 + b"\"}", "MessageTooLarge"),
            (request("r-1", "../x"), "UnsafeName"),
            (request("r-1", "a/b"), "UnsafeName"),
            (request("r-1", "a\u0000b"), "UnsafeName"),
            (b"{\"id\":\"r-1\",\"name\":\"a\xc3\x28\",\"size\":1,\"content_type\":\"audio/wav\"}",
             "UnsafeName"),
            (request("r-1", name_10k), "UnsafeName"),
            (request("r-1", "big.wav", 10 * 1024 * 1024 + 1), "TooLarge"),
            (request("r-1", "page.html", 10, "text/html"), "ContentTypeNotAllowed"),
        ]
        for payload, code in cases:
            with self.subTest(code=code, payload=payload[:60]):
                answer, _ = self.ask(c, "dev-rej", payload)
                self.assertEqual(answer["type"], "rejected", answer)
                self.assertEqual(answer["code"], code, answer)
                self.assertTrue(answer["message"])
                self.assertIn("id", answer)
                self.assert_still_serving(c, "dev-rej")
        self.assertTrue(self.ferryd.proc.running())

    def test_too_many_open_grants(self):
        self.ferryd.ferryctl_device("dev-o", "--max-open-grants", "6")
        c = self.device("dev-o")
        for i in range(6):
            answer, _ = self.ask(c, "dev-o", request("o-%d" % i))
            self.assertEqual(answer["type"], "grant", answer)
        answer, _ = self.ask(c, "dev-o", request("o-6"))
        self.assertEqual(answer["code"], "TooManyOpenGrants", answer)
        self.assertEqual(answer["id"], "o-6")

    def test_daily_quota(self):
        self.ferryd.ferryctl_device("dev-q", "--daily-quota", "3000")
        c = self.device("dev-q")
        for i in range(3):
            answer, _ = self.ask(c, "dev-q", request("q-%d" % i, size=1000))
            self.assertEqual(answer["type"], "grant", answer)
        answer, _ = self.ask(c, "dev-q", request("q-3", size=1))
        self.assertEqual(answer["code"], "QuotaExceeded", answer)

    def test_rate_limit(self):
        self.ferryd.ferryctl_device("dev-r", "--rate-per-minute", "1", "--rate-burst", "3")
        c = self.device("dev-r")
        codes = [self.ask(c, "dev-r", request("rt-%d" % i))[0].get("code", "grant")
                 for i in range(5)]
        self.assertEqual(codes, ["grant", "grant", "grant", "RateLimited", "RateLimited"])

    def test_disabled_device(self):
        self.ferryd.ferryctl_device("dev-d", "--disable")
        c = self.device("dev-d")
        answer, _ = self.ask(c, "dev-d", request("d-1"))
        self.assertEqual(answer["code"], "DeviceDisabled", answer)
        self.ferryd.ferryctl_device("dev-d", "--enable")
        answer, _ = self.ask(c, "dev-d", request("d-2"))
        self.assertEqual(answer["type"], "grant", answer)

    def test_ferryctl_grant_show_and_revoke(self):
        c = self.device("dev-c")
        answer, _ = self.ask(c, "dev-c", request("g-1", "cam.jpg", 321, "image/jpeg"))
        gid = answer["grant"]
        show = self.h.ferryctl("grant", "show", "--ledger", self.ferryd.ledger, gid).stdout
        self.assertIn("state=issued", show)
        self.assertIn("device=dev-c", show)
        self.assertIn("request_id=g-1", show)
        self.assertIn("key=%s" % answer["key"], show)
        out = self.h.ferryctl("grant", "revoke", "--ledger", self.ferryd.ledger, gid).stdout
        self.assertIn("state=revoked", out)
        again = self.h.ferryctl("grant", "revoke", "--ledger", self.ferryd.ledger, gid,
                                check=False)
        self.assertEqual(again.returncode, 1)
        self.assertIn("cannot revoke a grant that is revoked", again.stderr)
        for bad in ("g_nope", "../x"):
            r = self.h.ferryctl("grant", "show", "--ledger", self.ferryd.ledger, bad, check=False)
            self.assertEqual(r.returncode, 2, r.stderr)
        r = self.h.ferryctl("grant", "show", "--ledger", self.ferryd.ledger,
                            "g_" + "0" * 26, check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("no such grant", r.stderr)

    def test_ferryctl_audit_lists_grants_and_refusals(self):
        c = self.device("dev-c")
        granted, _ = self.ask(c, "dev-c", request("au-1", "cam.jpg", 11, "image/jpeg"))
        self.assertEqual(granted["type"], "grant", granted)
        refused, _ = self.ask(c, "dev-c", request("au-2", "notes.txt", 12, "text/plain"))
        self.assertEqual(refused["code"], "ContentTypeNotAllowed", refused)
        out = self.h.ferryctl("audit", "--ledger", self.ferryd.ledger, "dev-c").stdout
        lines = [l for l in out.splitlines() if 'request_id="au-' in l]
        self.assertEqual(len(lines), 2, out)
        self.assertIn("outcome=issued code=Granted grant=%s" % granted["grant"], lines[0])
        self.assertIn('detail="method=PUT size=11"', lines[0])
        self.assertIn("outcome=refused code=ContentTypeNotAllowed grant=-", lines[1])
        limited = self.h.ferryctl("audit", "--ledger", self.ferryd.ledger, "dev-c", "--limit",
                                  "1").stdout
        self.assertEqual(len(limited.splitlines()), 1)
        for bad in (["../x"], ["dev-c", "--limit", "0"], ["dev-c", "--since", "yesterday"], []):
            r = self.h.ferryctl("audit", "--ledger", self.ferryd.ledger, *bad, check=False)
            self.assertEqual(r.returncode, 2, r.stderr)
            self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)

    def test_response_topic_of_another_device_is_refused(self):
        victim = self.device("dev-b")
        c = self.device("dev-t")
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = "ferry/dev-b/upload/response"
        props.CorrelationData = b"steer"
        answer, msg = self.ask(c, "dev-t", request("t-1"), props)
        self.assertEqual(msg.topic, "ferry/dev-t/upload/response")
        self.assertEqual(answer["code"], "InvalidResponseTopic", answer)
        victim.expect_no_message(timeout=1.0)
        # A Response Topic under the device's own prefix is honoured.
        props.ResponseTopic = "ferry/dev-t/upload/response/session-9"
        c.subscribe("ferry/dev-t/upload/response/session-9")
        answer, msg = self.ask(c, "dev-t", request("t-2"), props)
        self.assertEqual(msg.topic, "ferry/dev-t/upload/response/session-9")
        self.assertEqual(answer["type"], "grant", answer)


class Restarts(FerrydTestCase):
    """With the default shared subscription. Mosquitto 2.0 does not restore
    shared subscriptions from its persistence file, so requests published
    after a broker restart but before ferryd has resubscribed have no
    subscriber and are dropped by the broker: they were never held for
    ferryd. Requests the broker held (queued before the restart) survive."""
    harness_devices = ("dev-s", "dev-u")
    plain_subscription = False

    def collect(self, client, n, timeout=30):
        ids = set()
        deadline = time.monotonic() + timeout
        while len(ids) < n and time.monotonic() < deadline:
            msg = client.expect_message(timeout=max(0.1, deadline - time.monotonic()))
            answer = json.loads(msg.payload)
            self.assertEqual(answer["type"], "grant", answer)
            ids.add(answer["id"])
        return ids

    def test_broker_restart_mid_run(self):
        c = self.device("dev-s")
        answer, _ = self.ask(c, "dev-s", request("before"))
        self.assertEqual(answer["type"], "grant")
        c.close()
        before = self.ferryd.connects()
        self.h.restart()
        c = self.device("dev-s")
        if self.plain_subscription:
            # Published right after the restart, before ferryd is back: the
            # broker restored ferryd's plain subscription and holds them.
            for i in range(10):
                c.publish("ferry/dev-s/upload/request", request("after-%d" % i))
        self.ferryd.wait_reconnected(before)
        for i in range(10 if self.plain_subscription else 0, 20):
            c.publish("ferry/dev-s/upload/request", request("after-%d" % i))
        self.assertEqual(self.collect(c, 20), {"after-%d" % i for i in range(20)})

    def test_requests_held_while_ferryd_is_down_are_answered(self):
        c = self.device("dev-u")
        self.assertEqual(self.ferryd.stop(), 0)  # SIGTERM: a clean exit
        self.assertIn("event=ferryd.stopped", self.ferryd.log())
        for i in range(10):
            c.publish("ferry/dev-u/upload/request", request("held-%d" % i))
        # The broker restarts too while ferryd is away: it keeps the queue
        # for ferryd's persistent session across the restart.
        c.close()
        self.h.restart()
        c = self.device("dev-u")
        self.ferryd.start()
        self.assertEqual(self.collect(c, 10), {"held-%d" % i for i in range(10)})


class RestartsPlainSubscription(Restarts):
    """share_group empty: a plain subscription, which the broker restores
    after its restart, so even requests published before ferryd is back
    are held for it and answered."""
    plain_subscription = True
    broker_options = ["share_group ="]


class FerrydOverMqtt311(FerrydTestCase):
    """ferryd itself speaking MQTT 3.1.1 (what `protocol = auto` falls back
    to when a broker refuses MQTT 5): no properties, same answers."""
    harness_devices = ("dev-a", "dev-b")
    broker_options = ["protocol = 3.1.1"]

    def test_answers_devices_of_both_versions(self):
        self.assertIn("event=broker.connected", self.ferryd.log())
        self.assertIn("mqtt=3.1.1", self.ferryd.log())
        for name, version in (("dev-a", MQTT5), ("dev-b", MQTT311)):
            c = self.device(name, version)
            answer, msg = self.ask(c, name, request("v-%s" % name))
            self.assertEqual(answer["type"], "grant", answer)
            self.assertEqual(msg.topic, "ferry/%s/upload/response" % name)


class ConfigChecks(unittest.TestCase):

    def test_check_config_names_file_line_and_option(self):
        import tempfile
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "bad.ini")
            with open(path, "w") as f:
                f.write("[broker]\ncafile = a\ncertfile = b\nkeyfile = c\nport = 99999\n"
                        "[store]\nsecret_key_file = s\n")
            r = subprocess.run([ferryd_path(), "--check-config", "-c", path],
                               capture_output=True, text=True, timeout=30)
            self.assertEqual(r.returncode, 1)
            self.assertEqual(r.stderr.strip(), "ferryd: %s:5: [broker] port: \"99999\" is out "
                             "of range (1 to 65535)" % path)
            with open(path, "w") as f:
                f.write("[broker]\ncafile = a\ncertfile = b\nkeyfile = c\n"
                        "[store]\nkind = external\nsecret_key_file = s\n")
            r = subprocess.run([ferryd_path(), "--check-config", "-c", path],
                               capture_output=True, text=True, timeout=30)
            self.assertEqual(r.returncode, 0, r.stderr)


if __name__ == "__main__":
    result = unittest.main(exit=False, verbosity=2).result
    sys.exit(0 if result.wasSuccessful() else 1)
