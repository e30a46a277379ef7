"""Harness pieces for tests that run ferryd: an s3rver store and ferryd itself.

``S3rver`` installs @20minutes/s3rver@4.0.4 from npm into the build dir (once,
under a file lock, since ctest runs tests in parallel) and starts it on a
free loopback port; it verifies SigV4, which is why it stands in for an
external S3-compatible store. ``Ferryd`` writes a ferryd configuration for a
``ferry_harness.Harness`` (its broker and PKI) and starts the real ferryd.
Both are stopped by PID through ``ferry_harness.Process``.

    with Harness(devices=["dev-a"]) as h:
        store = S3rver(h.tmp).start()
        d = Ferryd(h, store).start()
        ...
        d.stop(); store.stop()
"""

import fcntl
import os
import shutil
import subprocess

from ferry_harness import Process, build_dir, free_port, port_open, wait_until

S3RVER_SPEC = "s3rver@npm:@20minutes/s3rver@4.0.4"
S3RVER_KEY = S3RVER_SECRET = "S3RVER"  # s3rver's built-in account

# The package's declared bin script is missing from its tarball, so the
# server is started through its module API.
_LAUNCHER = """
const S3rver = require(process.argv[1] + '/lib/s3rver.js');
new S3rver({address: '127.0.0.1', port: Number(process.argv[2]), directory: process.argv[3],
            silent: false, configureBuckets: [{name: process.argv[4], configs: []}]})
  .run().then(({address, port}) => console.log('S3rver listening on %s:%d', address, port));
"""


def s3rver_package():
    """Installs s3rver 4.0.4 into $FERRY_BUILD_DIR/node once; returns its dir."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        raise RuntimeError("node and npm are required (scripts/deps.sh installs them)")
    prefix = os.path.join(build_dir(), "node")
    pkg = os.path.join(prefix, "node_modules", "s3rver")
    os.makedirs(prefix, exist_ok=True)
    with open(os.path.join(prefix, ".install.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.exists(os.path.join(pkg, "lib", "s3rver.js")):
            subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--prefix", prefix,
                            S3RVER_SPEC], check=True, timeout=600, stdout=subprocess.DEVNULL,
                           stdin=subprocess.DEVNULL)
    with open(os.path.join(pkg, "package.json")) as f:
        if '"version": "4.0.4"' not in f.read():
            raise RuntimeError("%s is not s3rver 4.0.4" % pkg)
    return pkg


class S3rver:
    """A running s3rver with one bucket, on 127.0.0.1:self.port (plain HTTP)."""

    def __init__(self, tmp, bucket="ingest"):
        self.dir = os.path.join(tmp, "s3rver")
        self.bucket = bucket
        self.proc = None
        self.port = None

    @property
    def endpoint(self):
        return "http://127.0.0.1:%d" % self.port

    def start(self, attempts=5):
        pkg = s3rver_package()
        data = os.path.join(self.dir, "data")
        os.makedirs(data, exist_ok=True)
        for attempt in range(attempts):
            self.port = free_port()
            self.proc = Process(["node", "-e", _LAUNCHER, pkg, str(self.port), data, self.bucket],
                                "s3rver", os.path.join(self.dir, "s3rver-%d.log" % attempt))
            try:
                self.proc.start(ready=lambda: port_open(self.port), timeout=30)
                return self
            except Exception:
                self.proc.stop()
                if attempt == attempts - 1:
                    raise
        return self

    def object_path(self, key):
        """Where s3rver keeps an object's bytes (its on-disk layout)."""
        return os.path.join(self.dir, "data", self.bucket, key + "._S3rver_object")

    def stop(self):
        if self.proc is not None:
            self.proc.stop()


def ferryd_path():
    return os.path.join(build_dir(), "cmd", "ferryd", "ferryd")


def secret_file(path, value):
    """Writes value (str or bytes) as a 0600 secret file; returns path.
    Text gets a trailing newline, as an operator's file would."""
    data = value if isinstance(value, bytes) else (value + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return path


def ferryd_config_head(harness, ledger, identity="ferryd", client_id=None, extra=None,
                       broker=None):
    """The [ferryd] and [broker] sections every test ferryd shares: debug
    logs, the ledger, the harness's prefix and broker with ferryd's (or
    another ferryd-*) identity, quick reconnects. ``extra`` adds lines to
    [ferryd], ``broker`` to [broker]."""
    return [
        "[ferryd]",
        "log_level = debug",
        "ledger = %s" % ledger,
        "prefix = %s" % harness.prefix,
    ] + list(extra or []) + [
        "[broker]",
        "host = 127.0.0.1",
        "port = %d" % harness.port,
        "cafile = %s" % harness.ca,
        "certfile = %s" % os.path.join(harness.pki, identity + ".pem"),
        "keyfile = %s" % os.path.join(harness.pki, identity + ".key"),
        "client_id = %s" % (client_id or identity),
        "reconnect_min = 100ms",
        "reconnect_max = 2s",
    ] + list(broker or [])


class Ferryd:
    """ferryd configured for a Harness's broker and PKI and a store.

    ``policy`` and ``extra`` add lines to the [policy] and [ferryd] sections;
    ``broker`` to [broker]."""

    def __init__(self, harness, store, name="ferryd", policy=None, broker=None, extra=None,
                 identity="ferryd"):
        self.h = harness
        self.store = store
        self.name = name
        self.dir = os.path.join(harness.tmp, name)
        os.makedirs(self.dir, exist_ok=True)
        self.config = os.path.join(self.dir, "ferryd.ini")
        self.ledger = os.path.join(self.dir, "ledger.db")
        self.proc = None
        store_secret = secret_file(os.path.join(self.dir, "store-secret"), S3RVER_SECRET)
        lines = ferryd_config_head(harness, self.ledger, identity, extra=extra,
                                   broker=broker) + [
            "[store]",
            "kind = external",
            "endpoint = %s" % store.endpoint,
            "bucket = %s" % store.bucket,
            "access_key = %s" % S3RVER_KEY,
            "secret_key_file = %s" % store_secret,
            "[policy]",
        ] + list(policy or [])
        with open(self.config, "w") as f:
            f.write("\n".join(lines) + "\n")

    def start(self, timeout=20.0):
        """Starts ferryd (again, after stop()) and waits for one more broker
        connection in its log; the log is appended to across restarts."""
        if self.proc is None:
            self.proc = Process([ferryd_path(), "-c", self.config], self.name,
                                os.path.join(self.dir, "ferryd.log"))
            self.h._processes.append(self.proc)
        before = self.connects()
        self.proc.start(ready=lambda: self.connects() > before, timeout=timeout)
        return self

    def _log(self):
        return self.proc.log_text() if self.proc else ""

    def log(self):
        return self._log()

    def connects(self):
        return self._log().count("event=broker.connected")

    def wait_reconnected(self, before, timeout=30):
        wait_until(lambda: self.connects() > before, timeout=timeout, what="ferryd reconnect")

    def ferryctl_device(self, name, *args):
        return self.h.ferryctl("device", "set", "--ledger", self.ledger, name, *args)

    def stop(self):
        """SIGTERM; returns the exit status."""
        if self.proc is None:
            return None
        return self.proc.stop()
