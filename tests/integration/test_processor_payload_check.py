"""examples/processors/payload_check end to end against s3rver.

The test makes a real WAV (Python's wave module), PNG (zlib, with CRCs) and
JPEG (a minimal baseline greyscale JPEG: SOI, JFIF, DQT, SOF0, DHT, SOS and
DC-only scan data), uploads them to s3rver (which verifies SigV4) with
boto3, builds each object's S3 event with events_tool, and runs
payload_check on it, directly and as a command target through events_tool
(the way ferryd will). The processor signs its GetObject itself. Then the
failures: bytes whose SHA-256 differs from the event's, a header that is
corrupt (PNG IHDR checksum, truncated WAV), a size mismatch, bytes that are
not what the content type says, a missing object, a wrong secret key.
"""

import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
import tempfile
import unittest
import wave
import zlib

import boto3
from botocore.config import Config

from ferry_harness import build_dir
from ferryd_harness import S3RVER_KEY, S3RVER_SECRET, S3rver

BUCKET = "ingest"


def tool(*parts):
    return os.path.join(build_dir(), *parts)


def make_wav(rate=16000, channels=1, frames=24000):
    b = io.BytesIO()
    w = wave.open(b, "wb")
    w.setnchannels(channels)
    w.setsampwidth(2)
    w.setframerate(rate)
    w.writeframes(bytes((i * 7) & 0xFF for i in range(frames * channels * 2)))
    w.close()
    return b.getvalue()


def make_png(width=37, height=21):
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    raw = b"".join(b"\x00" + bytes((x * 5 + y) & 0xFF for x in range(width * 3))
                   for y in range(height))
    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def make_jpeg(width=64, height=48):
    def seg(marker, data):
        return b"\xff" + bytes([marker]) + struct.pack(">H", len(data) + 2) + data
    out = b"\xff\xd8" + seg(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00")
    out += seg(0xFE, b"made by test_processor_payload_check" + b"." * 3000)  # a comment first
    out += seg(0xDB, b"\x00" + b"\x01" * 64)
    out += seg(0xC0, struct.pack(">BHHB", 8, height, width, 1) + b"\x01\x11\x00")
    # One-symbol Huffman tables: DC category 0 and AC end-of-block, code "0".
    out += seg(0xC4, b"\x00" + bytes([1] + [0] * 15) + b"\x00")
    out += seg(0xC4, b"\x10" + bytes([1] + [0] * 15) + b"\x00")
    out += seg(0xDA, b"\x01\x01\x00\x00\x3f\x00")
    bits = "00" * ((width // 8) * (height // 8))
    bits += "1" * (-len(bits) % 8)
    return out + bytes(int(bits[i:i + 8], 2) for i in range(0, len(bits), 8)) + b"\xff\xd9"


class PayloadCheck(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="ferry-processor-")
        cls.store = S3rver(cls.tmp, BUCKET)
        try:
            cls.store.start()
        except Exception:
            cls.store.stop()
            shutil.rmtree(cls.tmp, ignore_errors=True)
            raise
        cls.s3 = boto3.client("s3", endpoint_url=cls.store.endpoint,
                              aws_access_key_id=S3RVER_KEY, aws_secret_access_key=S3RVER_SECRET,
                              region_name="us-east-1",
                              config=Config(signature_version="s3v4",
                                            s3={"addressing_style": "path"}))
        cls.secret_file = os.path.join(cls.tmp, "secret")
        with open(cls.secret_file, "w") as f:
            f.write(S3RVER_SECRET + "\n")
        cls.env = dict(os.environ, FERRY_S3_ENDPOINT=cls.store.endpoint,
                       FERRY_S3_ACCESS_KEY=S3RVER_KEY, FERRY_S3_SECRET_KEY_FILE=cls.secret_file,
                       FERRY_S3_REGION="us-east-1")
        cls.seq = 0

    @classmethod
    def tearDownClass(cls):
        cls.store.stop()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def put(self, key, data, content_type, declared=None, size=None, store=True):
        """Stores data under key; returns the event for (declared or data)."""
        if store:
            self.s3.put_object(Bucket=BUCKET, Key=key, Body=data, ContentType=content_type)
        self.__class__.seq += 1
        obj = {"event_id": "ev_proc_%d" % self.seq, "sequencer": self.seq, "method": "put",
               "time_ms": 1795610700000, "region": "us-east-1", "bucket": BUCKET, "key": key,
               "size": len(data) if size is None else size, "etag": hashlib.md5(data).hexdigest(),
               "device": "dev-a", "grant": "g_%d" % self.seq, "content_type": content_type,
               "sha256": hashlib.sha256(declared if declared is not None else data).hexdigest(),
               "request_id": "r-%d" % self.seq}
        r = subprocess.run([tool("src", "events", "events_tool"), "format"],
                           input=json.dumps(obj).encode(), capture_output=True, timeout=30,
                           check=True)
        return r.stdout

    def check(self, event, env=None):
        r = subprocess.run([tool("examples", "processors", "payload_check")], input=event,
                           capture_output=True, timeout=60, env=env or self.env)
        return r.returncode, r.stdout.decode(), r.stderr.decode()

    def check_ok(self, event):
        rc, out, err = self.check(event)
        self.assertEqual(rc, 0, err)
        self.assertEqual(err, "")
        return json.loads(out)

    def check_fails(self, event, reason, env=None):
        rc, out, err = self.check(event, env)
        self.assertEqual(rc, 1, (out, err))
        self.assertEqual(out, "")
        self.assertEqual(len(err.strip().splitlines()), 1, err)
        self.assertIn(reason, err)
        return err

    def test_wav(self):
        data = make_wav(rate=16000, channels=2, frames=24000)
        s = self.check_ok(self.put("dev-a/2026/11/25/g_1-heart beat+1.wav", data, "audio/wav"))
        self.assertEqual(s["format"], "wav")
        self.assertEqual((s["sample_rate"], s["channels"], s["bits_per_sample"]), (16000, 2, 16))
        self.assertAlmostEqual(s["duration_s"], 1.5, places=3)
        self.assertEqual(s["key"], "dev-a/2026/11/25/g_1-heart beat+1.wav")
        self.assertEqual(s["sha256"], hashlib.sha256(data).hexdigest())
        self.assertTrue(s["sha256_verified"])
        self.assertEqual(s["size"], len(data))

    def test_png(self):
        s = self.check_ok(self.put("dev-a/photo.png", make_png(37, 21), "image/png"))
        self.assertEqual((s["format"], s["width"], s["height"]), ("png", 37, 21))

    def test_jpeg(self):
        s = self.check_ok(self.put("dev-a/caf\u00e9 (1).jpg", make_jpeg(64, 48), "image/jpeg"))
        self.assertEqual((s["format"], s["width"], s["height"]), ("jpeg", 64, 48))

    def test_unknown_format_is_fine(self):
        s = self.check_ok(self.put("dev-a/blob.bin", os.urandom(5000), "application/octet-stream"))
        self.assertEqual(s["format"], "unknown")

    def test_as_command_target(self):
        """The way ferryd runs it: through the command target; the summary
        comes back as the result for the device's processed message."""
        event = self.put("dev-a/via-target.png", make_png(5, 4), "image/png")
        argv = [tool("src", "events", "events_tool"), "command", "--timeout-ms", "20000", "--",
                tool("examples", "processors", "payload_check")]
        r = subprocess.run(argv, input=event, capture_output=True, timeout=60, env=self.env)
        self.assertEqual(r.returncode, 0, r.stderr.decode())
        report = json.loads(r.stdout)
        self.assertEqual(report["outcome"], "delivered")
        self.assertEqual((report["result"]["width"], report["result"]["height"]), (5, 4))
        # ... and it makes a processed message under 128 KB.
        obj = json.loads(event)["Records"][0]
        result_file = os.path.join(self.tmp, "result.json")
        with open(result_file, "w") as f:
            json.dump(report["result"], f)
        msg_in = {"event_id": obj["ferry"]["event_id"], "sequencer": 1, "time_ms": 0,
                  "region": "us-east-1", "bucket": BUCKET, "key": obj["ferry"]["key"],
                  "size": obj["s3"]["object"]["size"], "etag": "e", "device": "dev-a",
                  "grant": obj["ferry"]["grant"], "request_id": obj["ferry"]["id"]}
        r = subprocess.run([tool("src", "events", "events_tool"), "processed", "--target",
                            "payload-check", "--result", result_file],
                           input=json.dumps(msg_in).encode(), capture_output=True, timeout=30,
                           check=True)
        msg = json.loads(r.stdout)
        self.assertEqual(msg["type"], "processed")
        self.assertEqual(msg["result"]["format"], "png")

    def test_sha256_mismatch(self):
        good = make_png(8, 8)
        bad = bytearray(good)
        bad[-20] ^= 0x01  # corrupted in transit or at rest: same size
        event = self.put("dev-a/corrupt.png", bytes(bad), "image/png", declared=good)
        self.check_fails(event, "sha256 mismatch")

    def test_corrupt_header(self):
        png = bytearray(make_png(8, 8))
        png[17] ^= 0x40  # width changed, IHDR CRC no longer matches
        self.check_fails(self.put("dev-a/bad-ihdr.png", bytes(png), "image/png"),
                         "PNG IHDR checksum mismatch")
        wav = make_wav()
        self.check_fails(self.put("dev-a/truncated.wav", wav[:len(wav) // 2], "audio/wav"),
                         "truncated")

    def test_size_mismatch(self):
        data = make_wav()
        self.check_fails(self.put("dev-a/short.wav", data, "audio/wav", size=len(data) + 10),
                         "size mismatch")
        self.check_fails(self.put("dev-a/long.wav", data, "audio/wav", size=len(data) - 10),
                         "size mismatch")

    def test_content_type_mismatch(self):
        self.check_fails(self.put("dev-a/lies.png", make_jpeg(), "image/png"), "format mismatch")

    def test_missing_object(self):
        self.check_fails(self.put("dev-a/never-stored.png", make_png(), "image/png", store=False),
                         "GetObject failed")

    def test_wrong_secret_refused_by_store(self):
        event = self.put("dev-a/secret.png", make_png(), "image/png")
        wrong = os.path.join(self.tmp, "wrong-secret")
        with open(wrong, "w") as f:
            f.write("not-the-secret\n")
        err = self.check_fails(event, "GetObject failed",
                               env=dict(self.env, FERRY_S3_SECRET_KEY_FILE=wrong))
        self.assertIn("403", err)
        self.assertNotIn("not-the-secret", err)

    def test_bad_environment(self):
        env = dict(self.env)
        del env["FERRY_S3_ENDPOINT"]
        r = subprocess.run([tool("examples", "processors", "payload_check")], input=b"{}",
                           capture_output=True, timeout=30, env=env)
        self.assertEqual(r.returncode, 2)
        r = subprocess.run([tool("examples", "processors", "payload_check")],
                           input=b"not json", capture_output=True, timeout=30, env=self.env)
        self.assertEqual(r.returncode, 1)
        self.assertIn("event lacks", r.stderr.decode())


if __name__ == "__main__":
    unittest.main(verbosity=2)
