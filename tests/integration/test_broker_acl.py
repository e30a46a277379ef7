"""The broker's trust boundary, tested against a real Mosquitto.

The configuration and ACL come from `ferryctl broker-config`, the
certificates from `ferryctl pki`. What is checked:

* a device's request reaches ferryd through the shared subscription;
* a device never receives another device's responses, never gets its
  publishes into another device's topics, cannot read request topics (its
  own or others', also not through $share) and cannot write response topics;
* a device cannot take over another device's session by using its client id
  (the broker makes the certificate's CN the client id);
* several ferryd identities share requests through $share/ferryd;
* clients without a certificate, with one from another CA, with a server
  certificate, with a revoked certificate (after SIGHUP or restart), or
  speaking TLS below 1.2 cannot connect;
* the 128 KB message cap.

Mosquitto 2.0 grants a forbidden SUBSCRIBE (SUBACK with the requested QoS)
and acknowledges a forbidden PUBLISH; it enforces the ACL when it delivers.
So every negative here is "nothing arrives", and each is made meaningful by
a positive in the same test: the client that may receive the message does,
or a later allowed message from the same publisher arrives first (MQTT keeps
the order of one publisher's messages at one QoS).
"""

import ssl
import time
import unittest
import warnings

import ferry_harness
from ferry_harness import MQTT5, MQTT311, HarnessTestCase

PROTOCOLS = ((MQTT5, "MQTT 5"), (MQTT311, "MQTT 3.1.1"))
QUIET_S = 1.0  # how long "nothing arrives" is watched


class BrokerAclTest(HarnessTestCase):
    harness_devices = ("dev-a", "dev-b", "dev-r")

    def test_request_reaches_ferryd_via_shared_subscription(self):
        for dev_proto, dev_label in PROTOCOLS:
            for fd_proto, fd_label in PROTOCOLS:
                with self.subTest(device=dev_label, ferryd=fd_label):
                    ferryd = self.h.ferryd_client(protocol=fd_proto).connect()
                    ferryd.subscribe("$share/ferryd/ferry/+/upload/request")
                    a = self.h.device_client("dev-a", protocol=dev_proto).connect()
                    body = ('{"id":"r-%d-%d"}' % (dev_proto, fd_proto)).encode()
                    a.publish("ferry/dev-a/upload/request", body, qos=1)
                    msg = ferryd.expect_message()
                    self.assertEqual(msg.topic, "ferry/dev-a/upload/request")
                    self.assertEqual(msg.payload, body)
                    a.close()
                    ferryd.close()

    def test_shared_subscription_delivers_each_request_once(self):
        # Two ferryd instances: each has its own identity, since the broker
        # makes the certificate's CN the client id.
        self.h.add_ferryd("ferryd-2")
        f1 = self.h.ferryd_client().connect()
        f2 = self.h.ferryd_client(identity="ferryd-2", protocol=MQTT311).connect()
        for f in (f1, f2):
            f.subscribe("$share/ferryd/ferry/+/upload/request")
        a = self.h.device_client("dev-a").connect()
        sent = [("r-%d" % i).encode() for i in range(20)]
        for body in sent:
            a.publish("ferry/dev-a/upload/request", body)
        got = []
        deadline = time.monotonic() + 10
        while len(got) < len(sent) and time.monotonic() < deadline:
            for f in (f1, f2):
                while not f.messages.empty():
                    got.append(f.messages.get().payload)
            time.sleep(0.02)
        f1.expect_no_message(0.3)
        f2.expect_no_message(0.3)
        self.assertEqual(sorted(got), sorted(sent))

    def test_device_never_receives_another_devices_response(self):
        for proto, label in PROTOCOLS:
            with self.subTest(protocol=label):
                a = self.h.device_client("dev-a", protocol=proto).connect()
                # Mosquitto grants these; the ACL must still filter delivery.
                for filt in ("ferry/dev-b/upload/response", "ferry/+/upload/response",
                             "ferry/#", "#", "$share/g/ferry/dev-b/upload/response"):
                    codes = a.subscribe(filt)
                    self.assertEqual(len(codes), 1)
                b = self.h.device_client("dev-b", protocol=proto).connect()
                b.subscribe("ferry/dev-b/upload/response")
                ferryd = self.h.ferryd_client(protocol=proto).connect()
                ferryd.publish("ferry/dev-b/upload/response", b'{"type":"grant","id":"b"}')
                # The negative means something: dev-b does get it.
                self.assertEqual(b.expect_message().payload, b'{"type":"grant","id":"b"}')
                a.expect_no_message(QUIET_S)
                # dev-a is subscribed and does get its own responses.
                ferryd.publish("ferry/dev-a/upload/response", b'{"id":"a"}')
                self.assertEqual(a.expect_message().topic, "ferry/dev-a/upload/response")
                for c in (a, b, ferryd):
                    c.close()

    def test_device_cannot_publish_into_another_devices_topics(self):
        for proto, label in PROTOCOLS:
            with self.subTest(protocol=label):
                ferryd = self.h.ferryd_client(protocol=proto).connect()
                ferryd.subscribe("ferry/#")
                b = self.h.device_client("dev-b", protocol=proto).connect()
                b.subscribe("ferry/dev-b/upload/response")
                a = self.h.device_client("dev-a", protocol=proto).connect()
                # Forbidden: another device's request and response topics,
                # its own response topic, topics outside the table, and
                # topics outside the prefix.
                for topic in ("ferry/dev-b/upload/request", "ferry/dev-b/upload/response",
                              "ferry/dev-a/upload/response", "ferry/dev-a/other",
                              "ferry/dev-a", "elsewhere/dev-a/upload/request"):
                    a.publish(topic, b"forged")
                # Allowed, published last: when it arrives, any forbidden
                # message would already have arrived before it.
                a.publish("ferry/dev-a/upload/request", b"genuine")
                msg = ferryd.expect_message()
                self.assertEqual((msg.topic, msg.payload),
                                 ("ferry/dev-a/upload/request", b"genuine"))
                ferryd.expect_no_message(QUIET_S)
                b.expect_no_message(0.1)
                for c in (a, b, ferryd):
                    c.close()

    def test_device_cannot_read_request_topics(self):
        for proto, label in PROTOCOLS:
            with self.subTest(protocol=label):
                a = self.h.device_client("dev-a", protocol=proto).connect()
                for filt in ("ferry/dev-b/upload/request", "ferry/dev-a/upload/request",
                             "ferry/+/upload/request", "$share/ferryd/ferry/+/upload/request"):
                    a.subscribe(filt)
                ferryd = self.h.ferryd_client(protocol=proto).connect()
                ferryd.subscribe("ferry/+/upload/request")
                b = self.h.device_client("dev-b", protocol=proto).connect()
                b.publish("ferry/dev-b/upload/request", b"b-req")
                self.assertEqual(ferryd.expect_message().payload, b"b-req")
                # A device may write its request topic but not read it back,
                # so it cannot even see its own traffic echoed.
                a.publish("ferry/dev-a/upload/request", b"a-req")
                self.assertEqual(ferryd.expect_message().payload, b"a-req")
                a.expect_no_message(QUIET_S)
                for c in (a, b, ferryd):
                    c.close()

    def test_response_subtopics_are_the_devices_own(self):
        # A device may name an MQTT 5 Response Topic below its response
        # topic; only it can read there and only ferryd can write there.
        for proto, label in PROTOCOLS:
            with self.subTest(protocol=label):
                topic = "ferry/dev-a/upload/response/session-9"
                a = self.h.device_client("dev-a", protocol=proto).connect()
                a.subscribe("ferry/dev-a/upload/response/#")
                b = self.h.device_client("dev-b", protocol=proto).connect()
                b.subscribe("ferry/dev-a/upload/response/#")
                b.subscribe("ferry/+/upload/response/#")
                ferryd = self.h.ferryd_client(protocol=proto).connect()
                b.publish(topic, b"forged by b")
                a.publish(topic, b"forged by a")
                ferryd.publish(topic, b"from ferryd")
                msg = a.expect_message()
                self.assertEqual((msg.topic, msg.payload), (topic, b"from ferryd"))
                a.expect_no_message(QUIET_S)
                b.expect_no_message(0.1)
                for c in (a, b, ferryd):
                    c.close()

    def test_message_size_cap(self):
        a = self.h.device_client("dev-a").connect()
        a.subscribe("ferry/dev-a/upload/response")
        ferryd = self.h.ferryd_client(protocol=MQTT311).connect()
        cap = 128 * 1024
        ferryd.publish("ferry/dev-a/upload/response", b"x" * (cap + 1))
        ferryd.publish("ferry/dev-a/upload/response", b"y" * cap)
        msg = a.expect_message()
        self.assertEqual(len(msg.payload), cap)
        self.assertEqual(msg.payload[:1], b"y")
        a.expect_no_message(QUIET_S)

    def test_no_session_takeover_with_another_devices_client_id(self):
        for proto, label in PROTOCOLS:
            with self.subTest(protocol=label):
                topic = "ferry/dev-b/upload/response"
                b = self.h.device_client("dev-b", protocol=proto, client_id="dev-b",
                                         clean=False).connect()
                b.subscribe(topic)
                b.close()
                ferryd = self.h.ferryd_client(protocol=proto).connect()
                ferryd.publish(topic, b"queued-for-b")
                # dev-a claims dev-b's client id, asking to resume its session.
                a = self.h.device_client("dev-a", protocol=proto, client_id="dev-b",
                                         clean=False).connect()
                a.expect_no_message(QUIET_S)
                # dev-b's session and its queued message were not touched.
                b = self.h.device_client("dev-b", protocol=proto, client_id="dev-b",
                                         clean=False).connect()
                self.assertTrue(b.session_present)
                self.assertEqual(b.expect_message().payload, b"queued-for-b")
                # And a live dev-b is not cut off by dev-a connecting "as" it.
                a2 = self.h.device_client("dev-a", protocol=proto, client_id="dev-b").connect()
                ferryd.publish(topic, b"live")
                self.assertEqual(b.expect_message().payload, b"live")
                self.assertTrue(b.connected)
                for c in (a, a2, b, ferryd):
                    c.close()
                # Leave no session behind for the other protocol's round.
                self.h.device_client("dev-b", protocol=proto, client_id="dev-b",
                                     clean=True).connect().close()

    def _assert_refused(self, client, what):
        ok, reason = client.try_connect(timeout=5)
        self.assertFalse(ok, "%s was allowed to connect" % what)
        return reason

    def test_client_without_certificate_is_refused(self):
        for proto, label in PROTOCOLS:
            with self.subTest(protocol=label):
                self._assert_refused(self.h.client(protocol=proto), "a client without cert")

    def test_certificate_from_another_ca_is_refused(self):
        other = self.h.other_pki("other-ca", devices=("dev-a",))
        for proto, label in PROTOCOLS:
            with self.subTest(protocol=label):
                c = self.h.device_client("dev-a", protocol=proto, pki=other)
                self._assert_refused(c, "dev-a with a foreign CA's certificate")
        # ferryd's name from a foreign CA gets nothing either.
        c = self.h.client(other + "/ferryd.pem", other + "/ferryd.key")
        self._assert_refused(c, "ferryd with a foreign CA's certificate")
        # The same name from our CA still works.
        self.h.device_client("dev-a").connect().close()

    def test_server_certificates_cannot_log_in(self):
        # serverAuth-only certificates fail OpenSSL's SSL-client purpose.
        for name in ("broker", "store"):
            with self.subTest(cert=name):
                c = self.h.client(self.h.pki + "/%s.pem" % name, self.h.pki + "/%s.key" % name)
                self._assert_refused(c, "the %s server certificate" % name)

    def test_tls_below_1_2_is_refused(self):
        with warnings.catch_warnings():
            # Python deprecates TLS 1.1 itself; here it is the point.
            warnings.simplefilter("ignore", DeprecationWarning)
            c = self.h.device_client("dev-a", tls_version=ssl.TLSVersion.TLSv1_1)
        self._assert_refused(c, "TLS 1.1")
        self.h.device_client("dev-a", tls_version=ssl.TLSVersion.TLSv1_2).connect().close()

    def test_zz_revoked_certificate_is_refused(self):
        # Runs last in the class (name order): it reloads the broker.
        r = self.h.device_client("dev-r").connect()
        r.close()
        cert, key = self.h.revoke("dev-r")
        # The CRL is read at start and on SIGHUP.
        self.h.reload()
        for proto, label in PROTOCOLS:
            with self.subTest(protocol=label, after="SIGHUP"):
                ferry_harness.wait_until(
                    lambda: not self.h.client(cert, key, protocol=proto).try_connect(3)[0],
                    timeout=10, what="revoked dev-r refused")
        # Other devices are unaffected.
        self.h.device_client("dev-a").connect().close()
        # And after a full restart too.
        self.h.restart()
        for proto, label in PROTOCOLS:
            with self.subTest(protocol=label, after="restart"):
                self._assert_refused(self.h.client(cert, key, protocol=proto), "revoked dev-r")
        # A new certificate for the same name is accepted.
        self.h.issue("dev-r")
        self.h.device_client("dev-r").connect().close()


if __name__ == "__main__":
    ferry_harness.main()
