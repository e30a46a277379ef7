"""The MQTT events target through the real broker (the harness's Mosquitto).

events_tool publishes with ferryd's identity through a broker_link and
reports "delivered" only once the broker has acknowledged that message
(broker_link_publish_acked). An observer with another ferryd identity
receives the event on <prefix>/events/object-created byte for byte. A topic
the ACL does not allow is refused by an MQTT 5 broker (PUBACK 0x87): failed,
not retried. With the broker down, attempts time out (retry, then
dead-letter); when the broker comes back during the retries, the event is
delivered.
"""

import json
import os
import subprocess
import time

import ferry_harness
from ferry_harness import HarnessTestCase, build_dir

TOPIC = "ferry/events/object-created"


def events_tool():
    return os.path.join(build_dir(), "src", "events", "events_tool")


OBJECT = {
    "event_id": "ev_mqtt_1", "sequencer": 3, "method": "put", "time_ms": 1795610700000,
    "region": "us-east-1", "bucket": "ingest", "key": "dev-a/y.wav", "size": 44,
    "etag": "abc", "device": "dev-a", "grant": "g_2", "request_id": "r-9",
}


def make_event(**changes):
    r = subprocess.run([events_tool(), "format"], input=json.dumps(dict(OBJECT, **changes)).encode(),
                       capture_output=True, timeout=30, check=True)
    return r.stdout.rstrip(b"\n")


class MqttTarget(HarnessTestCase):
    harness_devices = ("dev-a",)

    def argv(self, topic=TOPIC, attempts=1, timeout_ms=3000, v311=False):
        pki = self.h.pki
        a = [events_tool(), "mqtt", "--host", "127.0.0.1", "--port", str(self.h.port),
             "--cafile", self.h.ca, "--cert", os.path.join(pki, "ferryd.pem"),
             "--key", os.path.join(pki, "ferryd.key"), "--client-id", "ferryd",
             "--topic", topic, "--attempts", str(attempts), "--timeout-ms", str(timeout_ms),
             "--retry-min-ms", "300", "--retry-max-ms", "600"]
        return a + (["--v311"] if v311 else [])

    def deliver(self, event, **kw):
        r = subprocess.run(self.argv(**kw), input=event, capture_output=True, timeout=120)
        self.assertTrue(r.stdout, r.stderr.decode())
        return r.returncode, json.loads(r.stdout.decode().strip()), r.stderr.decode()

    def observer(self):
        if not getattr(self.__class__, "_observer_added", False):
            self.h.add_ferryd("ferryd-observer")
            self.__class__._observer_added = True
        o = self.h.ferryd_client(identity="ferryd-observer").connect()
        o.subscribe(TOPIC)
        return o

    def test_delivered_on_puback_and_received(self):
        o = self.observer()
        for v311 in (False, True):
            event = make_event(event_id="ev_mqtt_%d" % v311)
            rc, report, err = self.deliver(event, v311=v311)
            self.assertEqual(rc, 0, err)
            self.assertEqual(report["outcome"], "delivered")
            self.assertEqual(report["detail"], "PUBACK")
            msg = o.expect_message(timeout=10, topic=TOPIC)
            self.assertEqual(msg.payload, event)
            self.assertEqual(msg.qos, 1)

    def test_concurrent_deliveries_each_acknowledged(self):
        """Four threads publish through one link, each waiting for its own
        PUBACK: every delivery is confirmed and the subscriber gets them all."""
        o = self.observer()
        # Below Mosquitto's default max_queued_messages (1000): beyond it
        # the broker drops QoS 1 messages for a slow subscriber (the Python
        # observer), after having acknowledged them to the publisher.
        n = 800
        argv = self.argv(timeout_ms=10000) + ["--repeat", str(n), "--threads", "4"]
        r = subprocess.run(argv, input=make_event(event_id="ev_bench"), capture_output=True,
                           timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr.decode()[-2000:])
        report = json.loads(r.stdout)
        self.assertEqual(report["delivered"], n)
        print("mqtt target, 4 threads, PUBACK per event: %s events/s" % report["per_s"])
        got = 0
        while got < n:
            o.expect_message(timeout=10, topic=TOPIC)
            got += 1
        o.expect_no_message(timeout=0.5)

    def test_topic_not_allowed_is_refused(self):
        rc, report, err = self.deliver(make_event(), topic="elsewhere/events", attempts=3)
        self.assertEqual(rc, 2, err)
        self.assertEqual((report["outcome"], report["attempts"]), ("failed", 1))

    def test_broker_down_then_dead_letter_or_back(self):
        event = make_event(event_id="ev_mqtt_down")
        self.h.broker.stop()
        try:
            start = time.monotonic()
            rc, report, _ = self.deliver(event, attempts=2, timeout_ms=700)
            self.assertEqual((rc, report["outcome"], report["attempts"]), (2, "dead-letter", 2))
            # Not connected: the publish is refused at once, or (after a
            # connection was lost) it waits in the queue and times out.
            self.assertRegex(report["detail"], "no PUBACK: (service unavailable|timed out)")
            self.assertLess(time.monotonic() - start, 15)

            # Down at first, back during the retries: delivered.
            event_file = os.path.join(self.h.tmp, "event-mqtt.json")
            with open(event_file, "wb") as f:
                f.write(event)
            with open(event_file, "rb") as stdin:
                proc = subprocess.Popen(self.argv(attempts=30, timeout_ms=700), stdin=stdin,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            try:
                time.sleep(1.5)
                self.assertIsNone(proc.poll())
                self.h.broker.start(ready=self.h._probe, timeout=20)
                out, err = proc.communicate(timeout=60)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            self.assertEqual(proc.returncode, 0, err.decode())
            report = json.loads(out.decode().strip())
            self.assertEqual(report["outcome"], "delivered")
            self.assertGreater(report["attempts"], 1)
        finally:
            if not self.h.broker.running():
                self.h.broker.start(ready=self.h._probe, timeout=20)


if __name__ == "__main__":
    ferry_harness.main()
