"""Harness pieces for tests of the embedded store: ferryd with [store]
kind = embedded, on a free loopback port, TLS with the PKI's store.pem.

    with Harness(devices=["dev-a"]) as h:
        d = StoreFerryd(h).start()
        s3 = d.boto3()                       # operator credential, verifies ca.pem
        s3.put_object(Bucket="ingest", Key="k", Body=b"x")
        d.stop()

``StoreFerryd`` is stopped by PID through ``ferry_harness.Process`` (the
Harness stops it too, also when a test fails). Clients: ``boto3()``,
``aws(...)`` (Debian's /usr/bin/aws with the operator credential),
``curl(...)``, and ``grant(...)`` which asks for a grant over MQTT as a
device would.
"""

import json
import os
import re
import sqlite3
import socket
import ssl
import subprocess
import time

from ferry_harness import HarnessTestCase, Process, build_dir, free_port, wait_until
from ferryd_harness import ferryd_config_head, ferryd_path, secret_file

BUCKET = "ingest"
REGION = "us-east-1"
GRANT_KEY = "ferry-grants"
GRANT_SECRET = "grant-secret-0123456789abcdefghijklmnop"
OPERATOR_KEY = "ferry-operator"
OPERATOR_SECRET = "operator-secret-0123456789abcdefghijkl"


def _store_ready(port, ca):
    """A real TLS handshake with the store, verifying its certificate."""
    ctx = ssl.create_default_context(cafile=ca)
    with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
        with ctx.wrap_socket(sock, server_hostname="127.0.0.1"):
            return True


def made_of_parts(file_id):
    """An object made of its multipart parts names an "m" id of no file
    (src/store/store_fs.h)."""
    return file_id.startswith("m") and len(file_id) == 33


class StoreFerryd:
    """ferryd with the embedded store, for a Harness's broker and PKI.

    ``store`` adds lines to [store], ``policy`` to [policy], ``extra`` to
    [ferryd]."""

    def __init__(self, harness, name="ferryd", store=None, policy=None, extra=None,
                 plain_http=False):
        self.h = harness
        self.name = name
        self.dir = os.path.join(harness.tmp, name)
        os.makedirs(self.dir, exist_ok=True)
        self.config = os.path.join(self.dir, "ferryd.ini")
        self.ledger = os.path.join(self.dir, "ledger.db")
        self.data_dir = os.path.join(self.dir, "store")
        self.port = free_port()
        self.plain_http = plain_http
        self.proc = None
        self.ca = harness.ca
        grant_secret = secret_file(os.path.join(self.dir, "grant-secret"), GRANT_SECRET)
        op_secret = secret_file(os.path.join(self.dir, "operator-secret"), OPERATOR_SECRET)
        pki = harness.pki
        lines = ferryd_config_head(harness, self.ledger, client_id=name, extra=extra) + [
            "[store]",
            "kind = embedded",
            "endpoint = %s" % self.endpoint,
            "bucket = %s" % BUCKET,
            "region = %s" % REGION,
            "access_key = %s" % GRANT_KEY,
            "secret_key_file = %s" % grant_secret,
            "listen = 127.0.0.1",
            "port = %d" % self.port,
            "data_dir = %s" % self.data_dir,
            "operator_access_key = %s" % OPERATOR_KEY,
            "operator_secret_key_file = %s" % op_secret,
        ] + (["plain_http = true"] if plain_http else [
            "tls_cert = %s" % os.path.join(pki, "store.pem"),
            "tls_key = %s" % os.path.join(pki, "store.key"),
        ]) + list(store or []) + [
            "[policy]",
        ] + list(policy or [])
        with open(self.config, "w") as f:
            f.write("\n".join(lines) + "\n")

    @property
    def endpoint(self):
        return "%s://127.0.0.1:%d" % ("http" if self.plain_http else "https", self.port)

    def _ready(self, before):
        if self.connects() <= before:
            return False
        if self.plain_http:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        return _store_ready(self.port, self.ca)

    def start(self, timeout=30.0):
        if self.proc is None:
            self.proc = Process([ferryd_path(), "-c", self.config], self.name,
                                os.path.join(self.dir, "ferryd.log"))
            self.h._processes.append(self.proc)
        before = self.connects()
        self.proc.start(ready=lambda: self._ready(before), timeout=timeout)
        return self

    def log(self):
        return self.proc.log_text() if self.proc else ""

    def md5_lanes(self):
        """The MD5 kind the store chose for this CPU (store.started's
        md5_lanes: "openssl" when it has no vector kind)."""
        m = re.search(r"event=store.started .*md5_lanes=(\w+)", self.log())
        assert m is not None, "store.started names the MD5 kind"
        return m.group(1)

    def connects(self):
        return self.log().count("event=broker.connected")

    def stop(self):
        return self.proc.stop() if self.proc is not None else None

    def kill(self):
        if self.proc is not None:
            self.proc.kill()

    # --- the data directory ----------------------------------------------
    # Objects live in files of their own (objects/xx/<32 hex>) or in regions
    # of packs (packs/<8 hex>.pack; file id "p" + pack + 16 hex of offset,
    # regions 4 KiB aligned; see src/store/store_fs.h).
    def _all_files(self):
        out = []
        for sub in ("tmp", "objects"):
            for dirpath, _, names in os.walk(os.path.join(self.data_dir, sub)):
                out += [os.path.join(dirpath, n) for n in names]
        return sorted(out)

    def pack_files(self):
        d = os.path.join(self.data_dir, "packs")
        if not os.path.isdir(d):
            return []
        return sorted(os.path.join(d, n) for n in os.listdir(d))

    def ledger_rows(self, sql):
        """The rows of a query on the ledger, opened read-only; [] when
        there is no ledger yet or its schema has no such table (an older
        one, before the migration that adds it)."""
        if not os.path.exists(self.ledger):
            return []
        db = sqlite3.connect("file:%s?mode=ro" % self.ledger, uri=True, timeout=10)
        try:
            return db.execute(sql).fetchall()
        except sqlite3.OperationalError:
            return []
        finally:
            db.close()

    def _object_rows(self):
        # Objects, the parts of multipart uploads in progress, and the parts
        # a completed object is made of (migration 10) all name data.
        return (self.ledger_rows("SELECT file_id, size FROM objects")
                + self.ledger_rows("SELECT file_id, size FROM upload_parts")
                + self.ledger_rows("SELECT data_id, size FROM object_parts"
                                   " WHERE data_id IS NOT NULL"))

    def named_file_ids(self):
        """The file ids the ledger names (read-only): objects (an object
        made of its parts names an "m" id of no file), the parts of
        multipart uploads in progress, and the parts' data of completed
        objects."""
        return {r[0] for r in self._object_rows()}

    @staticmethod
    def _data_segments(path):
        """The byte ranges of a file that hold data (SEEK_DATA/SEEK_HOLE:
        holes and the file system's own metadata blocks are not data)."""
        out = []
        fd = os.open(path, os.O_RDONLY)
        try:
            end = os.fstat(fd).st_size
            pos = 0
            while pos < end:
                try:
                    start = os.lseek(fd, pos, os.SEEK_DATA)
                except OSError:
                    break  # ENXIO: only a hole is left
                stop = os.lseek(fd, start, os.SEEK_HOLE)
                out.append((start, stop))
                pos = stop
        finally:
            os.close(fd)
        return out

    def _pack_problems(self, rows):
        """Pack bytes no ledger row names: data outside every named region
        (a refused upload's region must have been punched out, a deleted
        object's too once nobody reads it)."""
        regions = {}
        for fid, size in rows:
            if fid.startswith("p") and len(fid) == 33:
                off = int(fid[9:25], 16)
                regions.setdefault(fid[1:9], []).append((off, off + (size + 4095) // 4096 * 4096))
        out = []
        for path in self.pack_files():
            name = os.path.basename(path)
            if not name.endswith(".pack"):
                out.append(path)
                continue
            named = sorted(regions.get(name[:8], []))
            stray = 0
            for a, b in self._data_segments(path):
                for ra, rb in named:
                    if rb <= a or ra >= b:
                        continue
                    if ra > a:
                        stray += ra - a
                    a = max(a, rb)
                    if a >= b:
                        break
                stray += max(0, b - a)
            if stray:
                out.append("%s unnamed_bytes=%d" % (path, stray))
        return out

    def data_problems(self):
        """Where the data directory and the ledger disagree: files or pack
        bytes no row names, rows whose data is missing. [] when they match."""
        rows = self._object_rows()
        named = {r[0] for r in rows}
        out = self.tmp_files()
        for fid, size in rows:
            if fid.startswith("p"):
                path = os.path.join(self.data_dir, "packs", fid[1:9] + ".pack")
                if not os.path.exists(path) or os.path.getsize(path) < int(fid[9:25], 16) + size:
                    out.append("missing region %s" % fid)
            elif made_of_parts(fid):
                continue  # made of its parts: their rows name the data
            elif not os.path.exists(os.path.join(self.data_dir, "objects", fid[:2], fid)):
                out.append("missing file %s" % fid)
        out += self._part_boundary_problems()
        return out

    def _part_boundary_problems(self):
        """The part boundaries of completed multipart objects (migration 9):
        each set belongs to an object's data and adds up to its size."""
        rows = self.ledger_rows("SELECT p.file_id, sum(p.size), o.size FROM object_parts p"
                                " LEFT JOIN objects o ON o.file_id = p.file_id"
                                " GROUP BY p.file_id")
        out = ["part boundaries of %s: %s bytes, object %s" % (fid, total, size)
               for fid, total, size in rows if size is None or total != size]
        # An object made of its parts ("m" id) has a part row naming the
        # data of each part, and no other object has any.
        rows = self.ledger_rows("SELECT o.file_id, count(p.file_id), count(p.data_id)"
                                " FROM objects o LEFT JOIN object_parts p"
                                " ON p.file_id = o.file_id GROUP BY o.file_id")
        for fid, n_rows, n_data in rows:
            if made_of_parts(fid) and (n_rows == 0 or n_data != n_rows):
                out.append("object %s made of its parts: %d part rows, %d with data"
                           % (fid, n_rows, n_data))
            if not made_of_parts(fid) and n_data:
                out.append("object %s of its own data has %d part data rows" % (fid, n_data))
        return out

    def tmp_files(self):
        """Uploads in progress (or left over): data files under objects/
        that no ledger row names (a body is written straight into
        objects/xx/<id>; the row makes it an object), pack bytes no row
        names, .part files of the older layout, anything in tmp/."""
        rows = self._object_rows()
        named = {r[0] for r in rows}
        return [f for f in self._all_files()
                if "/tmp/" in f[len(self.data_dir):] or f.endswith(".part")
                or os.path.basename(f) not in named] + self._pack_problems(rows)

    def object_files(self):
        """Every data file: under objects/ (objects/xx/<id>), named or not,
        and the packs."""
        return [f for f in self._all_files()
                if not f.endswith(".part") and "/objects/" in f[len(self.data_dir):]] + \
            self.pack_files()

    # --- clients ----------------------------------------------------------
    def boto3(self, access_key=OPERATOR_KEY, secret=OPERATOR_SECRET, **config):
        import boto3
        from botocore.config import Config
        # SigV4 explicitly: botocore 1.29 still pre-signs S3 URLs with SigV2
        # by default, which the store does not accept.
        config.setdefault("signature_version", "s3v4")
        config.setdefault("retries", {"max_attempts": 1})
        cfg = Config(s3={"addressing_style": "path"}, **config)
        return boto3.client("s3", endpoint_url=self.endpoint, region_name=REGION,
                            aws_access_key_id=access_key, aws_secret_access_key=secret,
                            verify=False if self.plain_http else self.ca, config=cfg)

    def aws_env(self):
        env = dict(os.environ)
        env.update({
            "AWS_ACCESS_KEY_ID": OPERATOR_KEY,
            "AWS_SECRET_ACCESS_KEY": OPERATOR_SECRET,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_CA_BUNDLE": self.ca,
            "AWS_CONFIG_FILE": os.path.join(self.dir, "aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": os.path.join(self.dir, "aws-credentials"),
            "AWS_PAGER": "",
            "HOME": self.dir,
        })
        with open(env["AWS_CONFIG_FILE"], "w") as f:
            f.write("[default]\ns3 =\n    addressing_style = path\n" +
                    getattr(self, "aws_s3_config", ""))
        return env

    def aws(self, *args, check=True, timeout=120):
        """Runs Debian's /usr/bin/aws against the store; returns CompletedProcess."""
        argv = ["/usr/bin/aws", "--endpoint-url", self.endpoint] + [str(a) for a in args]
        r = subprocess.run(argv, env=self.aws_env(), capture_output=True, text=True,
                           timeout=timeout, stdin=subprocess.DEVNULL)
        if check and r.returncode != 0:
            raise AssertionError("aws %s failed (%d): %s %s" % (" ".join(args), r.returncode,
                                                                r.stdout, r.stderr))
        return r

    def curl(self, args, timeout=60):
        """Runs curl (verifying the store against ca.pem); returns (status, body)."""
        argv = ["curl", "-sS", "-g", "--cacert", self.ca, "-o", "-", "-w", "\n%{http_code}",
                "--max-time", "30"] + list(args)
        out = subprocess.run(argv, capture_output=True, timeout=timeout, check=True)
        text, _, code = out.stdout.decode("utf-8", "replace").rpartition("\n")
        return int(code), text

    def grant(self, client, device, rid, size, name="payload.bin",
              content_type="application/octet-stream", **extra):
        """Asks for a grant over MQTT as the device (client subscribed to its
        response topic); returns the answer dict."""
        body = {"id": rid, "name": name, "size": size, "content_type": content_type}
        body.update(extra)
        client.publish("%s/%s/upload/request" % (self.h.prefix, device),
                       json.dumps(body).encode())
        # Receipts and processed messages of earlier uploads share the
        # response topic and may arrive in between: the answer is the
        # grant or rejection that echoes this request's id.
        deadline = time.monotonic() + 10
        while True:
            msg = client.expect_message(timeout=max(0.1, deadline - time.monotonic()))
            answer = json.loads(msg.payload)
            if answer.get("type") in ("grant", "rejected") and answer.get("id") == rid:
                return answer


def s3_code(text):
    """The <Code> of an S3 error document ("" if none)."""
    start = text.find("<Code>")
    end = text.find("</Code>")
    return text[start + 6:end] if start >= 0 and end > start else ""


def request_id(text):
    start = text.find("<RequestId>")
    end = text.find("</RequestId>")
    return text[start + 11:end] if start >= 0 and end > start else ""


class StoreTestCase(HarnessTestCase):
    """A test with a ferryd of its own (embedded store, default options) in
    self.d, started before each test and stopped after it."""

    harness_devices = ("dev-a",)

    def setUp(self):
        super().setUp()
        self.d = StoreFerryd(self.h, name="ferryd-" + self._testMethodName[5:20])
        self.addCleanup(self.d.stop)
        self.d.start()
