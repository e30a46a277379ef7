"""Ferry integration-test harness: a real PKI, a real Mosquitto, real clients.

Everything here drives the real programs: the PKI and the broker
configuration come from the built ``ferryctl`` ($FERRY_BUILD_DIR/cmd/ferryctl/
ferryctl), the broker is ``/usr/sbin/mosquitto`` started on a free loopback
port, clients are paho-mqtt clients authenticating with certificates from
that PKI. Only the standard library and paho-mqtt are used, so it runs under
Debian's /usr/bin/python3.

Usage, as a context manager::

    from ferry_harness import Harness
    with Harness(devices=["dev-a", "dev-b"]) as h:      # PKI + broker running
        a = h.device_client("dev-a", protocol=5).connect()
        f = h.ferryd_client().connect()
        f.subscribe("$share/ferryd/ferry/+/upload/request")
        a.publish("ferry/dev-a/upload/request", b"{}")
        msg = f.expect_message()
        h.restart()                                     # broker restart, same port
        d = h.start_process([ferryd, "-c", conf], name="ferryd",
                            ready=lambda: h.port_open(8443))

or as a unittest fixture: subclass ``HarnessTestCase`` (one harness per test
class, ``self.h``) and end the file with ``ferry_harness.main()``.

The broker makes each certificate's CN the MQTT client id, so two clients
with one identity replace each other: ``ferryd_client()`` while a real ferryd
runs would cut that ferryd off. Give an observer its own identity with
``h.add_ferryd("ferryd-observer")`` and ``h.ferryd_client(identity=...)``.

Every process is started through ``Process`` and stopped by its PID: when the
``with`` block ends (also on an exception or a failed assertion), in
tearDownClass, and, as a last safety net, at interpreter exit and on SIGTERM.
Set FERRY_KEEP_TMP=1 to keep the temporary directory (logs, PKI, config).
"""

import atexit
import os
import queue
import random
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import paho.mqtt.client as mqtt

MQTT5 = 5
MQTT311 = 4
MOSQUITTO = "/usr/sbin/mosquitto"
LOOPBACK = "127.0.0.1"
# The device identity the readiness probe connects with.
PROBE_NAME = "harness-probe"

# Processes started and not yet stopped; the atexit hook stops them all.
_live = set()
_live_lock = threading.Lock()


def _stop_all_live():
    with _live_lock:
        procs = list(_live)
    for p in procs:
        p.stop()


atexit.register(_stop_all_live)


def _on_sigterm(signum, frame):
    # ctest sends SIGTERM on a timeout: turn it into a normal exit so the
    # atexit hook stops the broker and any daemon we started.
    raise SystemExit(128 + signum)


if threading.current_thread() is threading.main_thread():
    signal.signal(signal.SIGTERM, _on_sigterm)


def build_dir():
    d = os.environ.get("FERRY_BUILD_DIR")
    if not d:
        raise RuntimeError("FERRY_BUILD_DIR is not set (run the test through ctest)")
    return d


def ferryctl_path():
    return os.path.join(build_dir(), "cmd", "ferryctl", "ferryctl")


def _ephemeral_low():
    """The lowest port the kernel hands out for outgoing connections."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(host=LOOPBACK):
    """A TCP port that was free a moment ago (the caller retries on a race).

    Chosen below the kernel's ephemeral range: a server that a test stops
    and starts again on its port (a broker restart) must not find the port
    taken in between by some client connection's local end, which the
    kernel picks from that range (seen as "Address already in use" under
    ctest -j2)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    low = max(10000, min(_ephemeral_low(), 65536) - 12000)
    high = min(_ephemeral_low(), 65536) - 1
    rnd = random.Random()
    for _ in range(200):
        port = rnd.randint(low, high)
        with socket.socket(family, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_open(port, host=LOOPBACK, timeout=0.5):
    """True if something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(predicate, timeout=10.0, interval=0.05, what="condition"):
    """Polls predicate until it returns true; raises TimeoutError otherwise
    (what: a description, or a function that returns one at the time)."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() >= deadline:
            raise TimeoutError("timed out after %.1fs waiting for %s"
                               % (timeout, what() if callable(what) else what))
        time.sleep(interval)


class ProcessError(RuntimeError):
    pass


class Process:
    """A daemon started for a test and stopped by its PID.

    ``start(ready=...)`` returns once ``ready()`` is true (polled), and fails
    with the tail of the process's log if the process exits first or the
    timeout passes. ``stop()`` sends SIGTERM to that PID, waits, and sends
    SIGKILL if it has not exited; it is idempotent.
    """

    def __init__(self, argv, name, log_path, env=None, cwd=None):
        self.argv = list(argv)
        self.name = name
        self.log_path = log_path
        self.env = env
        self.cwd = cwd
        self.popen = None

    @property
    def pid(self):
        return self.popen.pid if self.popen else None

    def running(self):
        return self.popen is not None and self.popen.poll() is None

    def start(self, ready=None, timeout=20.0):
        if self.running():
            raise ProcessError("%s is already running (pid %d)" % (self.name, self.pid))
        log = open(self.log_path, "ab")
        try:
            self.popen = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=self.env, cwd=self.cwd, start_new_session=True)
        finally:
            log.close()
        with _live_lock:
            _live.add(self)
        if ready is None:
            return self
        deadline = time.monotonic() + timeout
        while True:
            if not self.running():
                rc = self.popen.returncode
                self._forget()
                raise ProcessError("%s exited with status %s before it was ready:\n%s"
                                   % (self.name, rc, self.log_tail()))
            try:
                if ready():
                    return self
            except Exception:  # a probe that cannot connect yet is "not ready"
                pass
            if time.monotonic() >= deadline:
                self.stop()
                raise ProcessError("%s not ready after %.0fs:\n%s"
                                   % (self.name, timeout, self.log_tail()))
            time.sleep(0.05)

    def signal(self, sig):
        """Sends sig to this process (e.g. SIGHUP to make Mosquitto reload)."""
        if not self.running():
            raise ProcessError("%s is not running" % self.name)
        os.kill(self.pid, sig)

    def stop(self, timeout=10.0):
        """Stops the process by its PID; returns its exit status."""
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            try:
                os.kill(self.popen.pid, signal.SIGTERM)
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout)
            except ProcessLookupError:
                pass
        self._forget()
        return self.popen.returncode

    def kill(self):
        """SIGKILL, for tests of crash recovery."""
        if self.running():
            os.kill(self.popen.pid, signal.SIGKILL)
            self.popen.wait(10)
        self._forget()

    def _forget(self):
        with _live_lock:
            _live.discard(self)

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_tail(self, lines=30):
        return "\n".join(self.log_text().splitlines()[-lines:])


def mqtt_probe(port, ca, cert, key, host=LOOPBACK, timeout=2.0):
    """A real mutual-TLS handshake plus an MQTT 3.1.1 CONNECT: True only if
    the broker answers CONNACK with return code 0, i.e. it accepted the
    client certificate and is serving MQTT."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(ca)
    ctx.load_cert_chain(cert, key)
    client_id = b"harness-probe"  # the broker replaces it with the CN anyway
    var_header = b"\x00\x04MQTT\x04\x02\x00\x0a"  # level 4, clean session, 10 s
    payload = len(client_id).to_bytes(2, "big") + client_id
    body = var_header + payload
    packet = b"\x10" + bytes([len(body)]) + body
    with socket.create_connection((host, port), timeout=timeout) as raw:
        with ctx.wrap_socket(raw, server_hostname=host) as s:
            s.sendall(packet)
            connack = b""
            while len(connack) < 4:
                chunk = s.recv(4 - len(connack))
                if not chunk:
                    return False
                connack += chunk
            ok = connack[0] == 0x20 and connack[3] == 0
            try:
                s.sendall(b"\xe0\x00")  # DISCONNECT
            except OSError:
                pass
            return ok


class ConnectError(RuntimeError):
    pass


class MqttClient:
    """A paho-mqtt client with a certificate, run on paho's network thread,
    with blocking helpers that wait for the broker's acknowledgements.

    Received messages are queued; ``expect_message`` and ``expect_no_message``
    read that queue."""

    def __init__(self, port, ca, cert=None, key=None, protocol=MQTT5, client_id=None,
                 clean=True, host=LOOPBACK, tls_version=None, session_expiry=None):
        self.port = port
        self.host = host
        self.protocol = mqtt.MQTTv5 if protocol == MQTT5 else mqtt.MQTTv311
        self.clean = clean
        # MQTT 5 ends a session at disconnect unless the client asks for a
        # Session Expiry Interval; default to a day for clean=False.
        if session_expiry is None:
            session_expiry = 0 if clean else 86400
        self.session_expiry = session_expiry
        self.session_present = False
        self.client_id = client_id or "ferry-test-%d-%d" % (os.getpid(), id(self))
        if self.protocol == mqtt.MQTTv5:
            self.client = mqtt.Client(client_id=self.client_id, protocol=self.protocol)
        else:
            self.client = mqtt.Client(client_id=self.client_id, clean_session=clean,
                                      protocol=self.protocol)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(ca)
        if tls_version is not None:
            ctx.minimum_version = tls_version
            ctx.maximum_version = tls_version
        if cert:
            ctx.load_cert_chain(cert, key)
        self.client.tls_set_context(ctx)
        self.messages = queue.Queue()
        self._lock = threading.Condition()
        self._connack = None        # reason code once CONNACK arrived
        self._disconnected = None   # reason code once the link dropped
        self._acks = {}             # mid -> SUBACK codes or True for PUBACK
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.on_publish = self._on_publish
        self._started = False

    # paho's callbacks differ in arity between MQTT 3.1.1 and 5: take *rest.
    def _on_connect(self, client, userdata, flags, rc, *rest):
        with self._lock:
            self._connack = int(rc.value if hasattr(rc, "value") else rc)
            self.session_present = bool(flags.get("session present"))
            self._lock.notify_all()

    def _on_disconnect(self, client, userdata, rc, *rest):
        with self._lock:
            self._disconnected = int(rc.value if hasattr(rc, "value") else rc)
            self._lock.notify_all()

    def _on_message(self, client, userdata, msg):
        self.messages.put(msg)

    def _on_subscribe(self, client, userdata, mid, granted, *rest):
        codes = [int(g.value if hasattr(g, "value") else g) for g in granted]
        with self._lock:
            self._acks[mid] = codes
            self._lock.notify_all()

    def _on_publish(self, client, userdata, mid):
        with self._lock:
            self._acks[mid] = True
            self._lock.notify_all()

    def _wait(self, predicate, timeout, what):
        with self._lock:
            if not self._lock.wait_for(predicate, timeout):
                raise TimeoutError("%s: timed out waiting for %s" % (self.client_id, what))

    def try_connect(self, timeout=10.0):
        """Connects; returns (True, 0) on CONNACK success, (False, reason)
        when the broker refuses, the TLS handshake fails or the link drops
        first. Never reconnects on its own after a failure."""
        kwargs = {"keepalive": 30}
        if self.protocol == mqtt.MQTTv5:
            kwargs["clean_start"] = self.clean
            if self.session_expiry:
                from paho.mqtt.packettypes import PacketTypes
                from paho.mqtt.properties import Properties
                props = Properties(PacketTypes.CONNECT)
                props.SessionExpiryInterval = self.session_expiry
                kwargs["properties"] = props
        with self._lock:
            self._connack = None
            self._disconnected = None
        try:
            self.client.connect(self.host, self.port, **kwargs)
        except (ssl.SSLError, OSError) as e:
            self._release_sockets()
            return False, "connect: %s" % e
        # Until CONNACK the network loop runs here, in this thread, so that a
        # TLS alert (e.g. "certificate revoked", which TLS 1.3 delivers after
        # the client's side of the handshake) surfaces as an exception we
        # can report instead of killing paho's background thread.
        deadline = time.monotonic() + timeout
        reason = None
        while reason is None:
            with self._lock:
                if self._connack is not None or self._disconnected is not None:
                    break
            if time.monotonic() >= deadline:
                reason = "no CONNACK within %.0fs" % timeout
                break
            try:
                rc = self.client.loop(timeout=0.05)
            except (ssl.SSLError, OSError) as e:
                reason = "%s" % e
                break
            if rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_AGAIN):
                reason = "connection lost: %s" % mqtt.error_string(rc)
        with self._lock:
            connack, dropped = self._connack, self._disconnected
        if reason is None and connack == 0 and dropped is None:
            # loop_start() makes a new wake-up socket pair without closing
            # the one loop() made: close that first.
            self._release_sockets(sockpair_only=True)
            self.client.loop_start()
            self._started = True
            return True, 0
        try:
            self.client.disconnect()
        except Exception:
            pass
        self._release_sockets()
        if reason is None:
            reason = "connack=%s disconnect=%s" % (connack, dropped)
        return False, reason

    def connect(self, timeout=10.0):
        ok, reason = self.try_connect(timeout)
        if not ok:
            raise ConnectError("%s could not connect: %s" % (self.client_id, reason))
        return self

    def subscribe(self, topic_filter, qos=1, timeout=10.0):
        """Subscribes and returns the SUBACK's codes (granted QoS or reason)."""
        rc, mid = self.client.subscribe(topic_filter, qos)
        if rc != mqtt.MQTT_ERR_SUCCESS:
            raise ConnectError("subscribe %s: %s" % (topic_filter, mqtt.error_string(rc)))
        self._wait(lambda: mid in self._acks, timeout, "SUBACK of %s" % topic_filter)
        return self._acks.pop(mid)

    def publish(self, topic, payload, qos=1, timeout=10.0, properties=None):
        """Publishes; with QoS > 0 waits for the broker's acknowledgement."""
        info = self.client.publish(topic, payload, qos=qos, properties=properties)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise ConnectError("publish %s: %s" % (topic, mqtt.error_string(info.rc)))
        if qos > 0:
            self._wait(lambda: info.mid in self._acks, timeout, "PUBACK on %s" % topic)
            self._acks.pop(info.mid, None)
        return info

    def expect_message(self, timeout=5.0, topic=None):
        """The next received message (optionally: the next on topic)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("%s: no message%s within %.1fs" % (
                    self.client_id, " on " + topic if topic else "", timeout))
            try:
                msg = self.messages.get(timeout=left)
            except queue.Empty:
                continue
            if topic is None or msg.topic == topic:
                return msg

    def expect_no_message(self, timeout=1.0):
        """Fails (AssertionError) if any message arrives within timeout."""
        try:
            msg = self.messages.get(timeout=timeout)
        except queue.Empty:
            return
        raise AssertionError("%s: unexpected message on %s: %r"
                             % (self.client_id, msg.topic, msg.payload[:200]))

    @property
    def connected(self):
        with self._lock:
            return self._connack == 0 and self._disconnected is None

    def close(self):
        """Disconnects cleanly and stops paho's thread; idempotent."""
        try:
            self.client.disconnect()
        except Exception:
            pass
        if self._started:
            self.client.loop_stop()
            self._started = False
        self._release_sockets()

    def _release_sockets(self, sockpair_only=False):
        # paho 1.6 keeps its socket and wake-up socket pair open after a
        # disconnect until the object is collected; close them now so a
        # long test run does not pile up descriptors.
        reset = getattr(self.client, "_reset_sockets", None)
        if reset is not None:
            try:
                reset(sockpair_only=sockpair_only)
            except Exception:
                pass


class Harness:
    """A temporary PKI, broker configuration and running Mosquitto.

    ``devices`` get certificates at start (more with ``issue``). The broker
    listens on LOOPBACK:``self.port``; ``restart()`` keeps that port.
    """

    def __init__(self, devices=("dev-a", "dev-b"), prefix="ferry", start_broker=True):
        self.devices = list(devices)
        self.prefix = prefix
        self._start_broker = start_broker
        self.tmp = None
        self.broker = None
        self.port = None
        self._processes = []
        self._clients = []

    # --- life cycle -------------------------------------------------------
    def __enter__(self):
        self.start()
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None and self.broker is not None:
            sys.stderr.write("--- mosquitto log (tail) ---\n%s\n" % self.broker.log_tail(40))
        self.close()
        return False

    def start(self):
        self.tmp = tempfile.mkdtemp(prefix="ferry-harness-")
        self.pki = os.path.join(self.tmp, "pki")
        self.broker_dir = os.path.join(self.tmp, "broker")
        try:
            self.ferryctl("pki", "init", self.pki)
            self.issue(PROBE_NAME)
            for d in self.devices:
                self.issue(d)
            if self._start_broker:
                self.start_broker()
        except BaseException:
            self.close()
            raise
        return self

    def close(self):
        for c in self._clients:
            c.close()
        self._clients = []
        for p in reversed(self._processes):
            p.stop()
        self._processes = []
        if self.broker is not None:
            self.broker.stop()
        if self.tmp and not os.environ.get("FERRY_KEEP_TMP"):
            shutil.rmtree(self.tmp, ignore_errors=True)
        elif self.tmp:
            sys.stderr.write("ferry_harness: kept %s\n" % self.tmp)

    # --- ferryctl and the PKI --------------------------------------------
    def ferryctl(self, *args, check=True):
        """Runs the real ferryctl; returns the CompletedProcess."""
        r = subprocess.run([ferryctl_path()] + [str(a) for a in args],
                           stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=60)
        if check and r.returncode != 0:
            raise RuntimeError("ferryctl %s failed (%d): %s"
                               % (" ".join(map(str, args)), r.returncode, r.stderr.strip()))
        return r

    def issue(self, name, pki=None):
        pki = pki or self.pki
        self.ferryctl("pki", "issue", pki, name)
        return self.device_files(name, pki)

    def revoke(self, name):
        """Revokes the device's certificate. ferryctl deletes the CA's copy
        of the key and archives the certificate, so copies are kept first:
        returns (cert, key) paths a test can still try to connect with."""
        keep = os.path.join(self.tmp, "revoked-" + name)
        os.makedirs(keep, exist_ok=True)
        cert, key = self.device_files(name)
        shutil.copy(cert, keep)
        shutil.copy(key, keep)
        self.ferryctl("pki", "revoke", self.pki, name)
        return (os.path.join(keep, name + ".pem"), os.path.join(keep, name + ".key"))

    def device_files(self, name, pki=None):
        pki = pki or self.pki
        return (os.path.join(pki, "devices", name + ".pem"),
                os.path.join(pki, "devices", name + ".key"))

    @property
    def ca(self):
        return os.path.join(self.pki, "ca.pem")

    def other_pki(self, name="other", devices=("dev-a",)):
        """A second, unrelated CA with its own device certificates (for
        tests that a foreign certificate is refused). Returns its dir."""
        d = os.path.join(self.tmp, name)
        self.ferryctl("pki", "init", d)
        for dev in devices:
            self.issue(dev, pki=d)
        return d

    # --- the broker ----------------------------------------------------------
    def _probe(self):
        # The probe has its own device identity: the broker forces the client
        # id to the certificate's CN, so probing as ferryd (with a clean
        # session) would cut off and wipe a running ferryd's session.
        cert, key = self.device_files(PROBE_NAME)
        return mqtt_probe(self.port, self.ca, cert, key)

    def _write_broker_config(self):
        args = ["broker-config", self.broker_dir, "--pki", self.pki, "--bind", LOOPBACK,
                "--port", self.port, "--prefix", self.prefix]
        if os.geteuid() == 0:
            # As root Mosquitto would switch to the "mosquitto" user, who
            # cannot read our private temporary directory.
            args += ["--user", "root"]
        self.ferryctl(*args)

    def start_broker(self, attempts=5):
        """Writes the config on a free port and starts Mosquitto; retries on
        another port if the chosen one was taken in the meantime."""
        last = None
        for _ in range(attempts):
            self.port = free_port()
            self._write_broker_config()
            self.broker = Process([MOSQUITTO, "-c", os.path.join(self.broker_dir,
                                                                 "mosquitto.conf")],
                                  "mosquitto", os.path.join(self.broker_dir, "mosquitto.log"))
            try:
                self.broker.start(ready=self._probe, timeout=20)
                return self.broker
            except ProcessError as e:
                last = e
                if "Address already in use" not in str(e):
                    raise
        raise last

    def restart(self, kill=False):
        """Stops the broker (SIGTERM, so it saves its persistence file; or
        SIGKILL with kill=True) and starts it again on the same port."""
        if kill:
            self.broker.kill()
        else:
            self.broker.stop()
        self.broker.start(ready=self._probe, timeout=20)
        return self.broker

    # --- clients and other processes -------------------------------------
    def client(self, cert=None, key=None, protocol=MQTT5, ca=None, **kw):
        c = MqttClient(self.port, ca or self.ca, cert, key, protocol=protocol, **kw)
        self._clients.append(c)
        return c

    def device_client(self, name, protocol=MQTT5, pki=None, **kw):
        cert, key = self.device_files(name, pki)
        return self.client(cert, key, protocol=protocol, **kw)

    def ferryd_client(self, protocol=MQTT5, identity="ferryd", **kw):
        """A client with ferryd's certificate, or with an extra ferryd
        identity ("ferryd-SUFFIX", see add_ferryd). The broker uses the CN
        as client id, so two clients of one identity replace each other."""
        return self.client(os.path.join(self.pki, identity + ".pem"),
                           os.path.join(self.pki, identity + ".key"), protocol=protocol, **kw)

    def add_ferryd(self, name):
        """Issues an extra ferryd identity, regenerates the ACL and reloads
        the broker so that it has ferryd's rights."""
        self.ferryctl("pki", "ferryd", self.pki, name)
        self._write_broker_config()
        self.reload()

    def reload(self):
        """SIGHUP: Mosquitto rereads its configuration, ACL and CRL. Returns
        once the broker has logged the reload."""
        before = self.broker.log_text().count("Reloading config")
        self.broker.signal(signal.SIGHUP)
        wait_until(lambda: self.broker.log_text().count("Reloading config") > before,
                   what="broker reload")

    def start_process(self, argv, ready=None, name=None, env=None, cwd=None, timeout=20.0):
        """Starts another daemon (e.g. ferryd) that close() stops by PID."""
        name = name or os.path.basename(argv[0])
        log = os.path.join(self.tmp, "%s-%d.log" % (name, len(self._processes)))
        p = Process(argv, name, log, env=env, cwd=cwd)
        self._processes.append(p)
        p.start(ready=ready, timeout=timeout)
        return p

    port_open = staticmethod(port_open)


class HarnessTestCase(unittest.TestCase):
    """One Harness per test class, as ``self.h`` (class attribute ``h``).
    Override ``harness_devices`` to choose the device certificates."""

    harness_devices = ("dev-a", "dev-b")
    h = None

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.h = Harness(devices=cls.harness_devices)
        cls.addClassCleanup(cls.h.close)
        cls.h.start()

    def tearDown(self):
        for c in self.h._clients:
            c.close()
        self.h._clients = []
        super().tearDown()


def main():
    """unittest.main with verbose output; exits non-zero on any failure."""
    unittest.main(verbosity=2)
