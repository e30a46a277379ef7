"""The command events target: a processor run like a Lambda, per event.

events_tool (src/events/events_tool.c) runs small /bin/sh processors written
by the test: exit codes (0 delivered, other retry, retried to dead-letter),
the JSON object on stdout as the result, non-JSON and oversized stdout, the
timeout (SIGTERM then SIGKILL to the whole process group, checked by the
PIDs the processor wrote), leftovers killed when the processor exits, a
processor that does not read its stdin, and a program that does not exist.
"""

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import unittest

from ferry_harness import build_dir

SH = "/bin/sh"


def events_tool():
    return os.path.join(build_dir(), "src", "events", "events_tool")


OBJECT = {
    "event_id": "ev_cmd_1", "sequencer": 1, "method": "post", "time_ms": 1795610700000,
    "region": "us-east-1", "bucket": "ingest", "key": "dev-a/x.png", "size": 10,
    "etag": "e", "device": "dev-a", "grant": "g_1",
}


def make_event(**changes):
    r = subprocess.run([events_tool(), "format"], input=json.dumps(dict(OBJECT, **changes)).encode(),
                       capture_output=True, timeout=30, check=True)
    return r.stdout.rstrip(b"\n")


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes (its parent may not have reaped it).
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class CommandTarget(unittest.TestCase):

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="ferry-events-cmd-")
        self.pids = []

    def tearDown(self):
        # Anything a failed test left running is stopped by its PID.
        for pid in self.pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def script(self, body):
        path = os.path.join(self.tmp, "proc-%d.sh" % len(os.listdir(self.tmp)))
        with open(path, "w") as f:
            f.write(body)
        return path

    def run_tool(self, script, event=None, attempts=1, timeout_ms=5000, grace_ms=300,
                 extra=(), program=None):
        argv = [events_tool(), "command", "--attempts", str(attempts), "--timeout-ms",
                str(timeout_ms), "--grace-ms", str(grace_ms), "--retry-min-ms", "50",
                "--retry-max-ms", "100"] + list(extra) + ["--"]
        argv += [program] if program else [SH, script]
        start = time.monotonic()
        r = subprocess.run(argv, input=event if event is not None else make_event(),
                           capture_output=True, timeout=60)
        elapsed = time.monotonic() - start
        self.assertTrue(r.stdout, r.stderr.decode())
        return r.returncode, json.loads(r.stdout.decode().strip()), r.stderr.decode(), elapsed

    def test_exit_0_with_json_result(self):
        seen = os.path.join(self.tmp, "stdin")
        s = self.script('cat > "%s"\necho \'{"format":"png","width":4}\'\n' % seen)
        event = make_event()
        rc, report, err, _ = self.run_tool(s, event)
        self.assertEqual(rc, 0, err)
        self.assertEqual(report["outcome"], "delivered")
        self.assertEqual(report["result"], {"format": "png", "width": 4})
        with open(seen, "rb") as f:
            self.assertEqual(f.read(), event)

    def test_non_json_stdout_is_no_result(self):
        s = self.script('cat >/dev/null\necho "hello, not json"\n')
        rc, report, _, _ = self.run_tool(s)
        self.assertEqual(rc, 0)
        self.assertNotIn("result", report)
        s = self.script('cat >/dev/null\necho "[1, 2]"\n')
        rc, report, _, _ = self.run_tool(s)
        self.assertEqual((rc, "result" in report), (0, False))

    def test_stderr_logged(self):
        s = self.script('echo "processor says hi" >&2\n')
        rc, _, err, _ = self.run_tool(s)
        self.assertEqual(rc, 0)
        self.assertIn("events.command_stderr", err)
        self.assertIn("processor says hi", err)

    def test_failing_exit_retried_then_dead_letter(self):
        count = os.path.join(self.tmp, "count")
        s = self.script('cat >/dev/null\necho x >> "%s"\nexit 3\n' % count)
        rc, report, _, _ = self.run_tool(s, attempts=4)
        self.assertEqual(rc, 2)
        self.assertEqual(report["outcome"], "dead-letter")
        self.assertEqual(report["attempts"], 4)
        self.assertEqual(report["detail"], "exit 3")
        with open(count) as f:
            self.assertEqual(len(f.read().split()), 4)

    def test_fails_then_works(self):
        count = os.path.join(self.tmp, "count")
        s = self.script('echo x >> "%s"\n[ $(wc -l < "%s") -ge 3 ] || exit 1\n'
                        'echo \'{"ok":true}\'\n' % (count, count))
        rc, report, _, _ = self.run_tool(s, attempts=5)
        self.assertEqual((rc, report["attempts"], report["result"]), (0, 3, {"ok": True}))

    def test_timeout_kills_the_process_group(self):
        pids = os.path.join(self.tmp, "pids")
        # Ignores SIGTERM, and has a child of its own: both must die.
        s = self.script('trap "" TERM\nsleep 60 &\necho $$ $! > "%s"\nwait\nsleep 60\n' % pids)
        rc, report, _, elapsed = self.run_tool(s, timeout_ms=500, grace_ms=300)
        self.assertEqual(rc, 1)
        self.assertEqual(report["outcome"], "retry")
        self.assertIn("timed out", report["detail"])
        self.assertLess(elapsed, 5)
        with open(pids) as f:
            self.pids = [int(p) for p in f.read().split()]
        self.assertEqual(len(self.pids), 2)
        time.sleep(0.2)
        for pid in self.pids:
            self.assertFalse(alive(pid), "pid %d survived the timeout" % pid)

    def test_leftovers_killed_when_the_command_exits(self):
        pids = os.path.join(self.tmp, "pids")
        s = self.script('sleep 60 &\necho $! > "%s"\necho \'{"done":1}\'\nexit 0\n' % pids)
        rc, report, _, elapsed = self.run_tool(s)
        self.assertEqual((rc, report["result"]), (0, {"done": 1}))
        self.assertLess(elapsed, 5)
        with open(pids) as f:
            self.pids = [int(f.read().strip())]
        time.sleep(0.2)
        self.assertFalse(alive(self.pids[0]))

    def test_big_stdout_capped(self):
        # 1 MB of output, well over the 64 KB cap, then valid-looking JSON.
        s = self.script('head -c 1048576 /dev/zero | tr "\\0" " "\necho \'{"a":1}\'\n')
        rc, report, _, elapsed = self.run_tool(s)
        self.assertEqual(rc, 0)
        self.assertIn("stdout over its cap", report["detail"])
        self.assertNotIn("result", report)
        self.assertLess(elapsed, 10)
        # With a smaller cap set explicitly, a small JSON result still passes.
        s = self.script('echo \'{"a":1}\'\n')
        rc, report, _, _ = self.run_tool(s, extra=["--stdout-max", "16"])
        self.assertEqual(report["result"], {"a": 1})

    def test_processor_that_does_not_read_stdin(self):
        # A large event and a processor that exits at once: no SIGPIPE death
        # of the caller, the exit status is what counts.
        s = self.script('exit 0\n')
        event = make_event(key="k" * 1000, content_type="x/" + "y" * 200)
        big = json.loads(event)
        big["padding"] = "p" * 60000
        rc, report, err, _ = self.run_tool(s, json.dumps(big).encode())
        self.assertEqual((rc, report["outcome"]), (0, "delivered"), err)

    def test_missing_program_is_permanent(self):
        rc, report, _, _ = self.run_tool(None, program="/nonexistent/processor", attempts=3)
        self.assertEqual((rc, report["outcome"], report["attempts"]), (2, "failed", 1))
        self.assertIn("cannot run", report["detail"])

    def test_killed_by_signal_is_retry(self):
        s = self.script('kill -KILL $$\n')
        rc, report, _, _ = self.run_tool(s)
        self.assertEqual((rc, report["outcome"]), (1, "retry"))
        self.assertIn("signal 9", report["detail"])


if __name__ == "__main__":
    unittest.main(verbosity=2)
