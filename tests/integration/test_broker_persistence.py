"""Persistent sessions survive a broker restart (the generated config turns
persistence on), for MQTT 5 (clean start off, Session Expiry Interval) and
MQTT 3.1.1 (clean session off): a QoS 1 response that ferryd publishes while
the device is offline is delivered when the device comes back, even though
the broker was restarted in between. Also exercises the harness's restart().
"""

import os
import unittest

import ferry_harness
from ferry_harness import MQTT5, MQTT311, HarnessTestCase


class BrokerPersistenceTest(HarnessTestCase):
    harness_devices = ("dev-a",)

    def _offline_delivery(self, proto, kill):
        cid = "dev-a-persist-%d-%s" % (proto, "kill" if kill else "term")
        topic = "ferry/dev-a/upload/response"
        a = self.h.device_client("dev-a", protocol=proto, client_id=cid, clean=False).connect()
        a.subscribe(topic, qos=1)
        a.close()
        ferryd = self.h.ferryd_client(protocol=proto).connect()
        body = ('{"type":"receipt","id":"%s"}' % cid).encode()
        ferryd.publish(topic, body, qos=1)
        ferryd.close()
        if kill:
            # A crash loses what was not yet autosaved; make the broker save
            # first by restarting it cleanly, then kill it.
            self.h.restart()
            self.h.restart(kill=True)
        else:
            self.h.restart()
        a = self.h.device_client("dev-a", protocol=proto, client_id=cid, clean=False).connect()
        self.assertTrue(a.session_present, "the broker forgot the session")
        msg = a.expect_message(timeout=5)
        self.assertEqual((msg.topic, msg.payload), (topic, body))
        self.assertEqual(msg.qos, 1)
        a.close()

    def test_queued_response_survives_restart_mqtt5(self):
        self._offline_delivery(MQTT5, kill=False)

    def test_queued_response_survives_restart_mqtt311(self):
        self._offline_delivery(MQTT311, kill=False)

    def test_saved_session_survives_sigkill(self):
        self._offline_delivery(MQTT5, kill=True)

    def test_restart_keeps_the_port_and_pid_changes(self):
        port, pid = self.h.port, self.h.broker.pid
        self.h.restart()
        self.assertEqual(self.h.port, port)
        self.assertNotEqual(self.h.broker.pid, pid)
        self.h.device_client("dev-a").connect().close()


class HarnessCleanupTest(unittest.TestCase):
    def test_broker_stopped_when_the_block_fails(self):
        pid = None
        with self.assertRaises(RuntimeError):
            with ferry_harness.Harness(devices=()) as h:
                pid = h.broker.pid
                tmp = h.tmp
                raise RuntimeError("a failing test")
        self.assertIsNotNone(pid)
        with self.assertRaises(ProcessLookupError):
            os.kill(pid, 0)
        self.assertFalse(os.path.exists(tmp))


if __name__ == "__main__":
    ferry_harness.main()
