"""`ferryctl pki` and `ferryctl broker-config` as an operator runs them,
checked with an independent implementation: the openssl command-line tool
verifies the chains, purposes and the CRL, and plays the device that keeps
its key and only sends a CSR. The CSR-issued certificate then logs in to the
real broker.
"""

import os
import stat
import subprocess
import tempfile
import unittest

import ferry_harness
from ferry_harness import HarnessTestCase


def read(path):
    with open(path) as f:
        return f.read()


def openssl(*args, check=True):
    r = subprocess.run(["openssl"] + list(args), capture_output=True, text=True, timeout=30)
    if check and r.returncode != 0:
        raise AssertionError("openssl %s: %s" % (" ".join(args), r.stderr.strip()))
    return r


class PkiCliTest(HarnessTestCase):
    harness_devices = ("dev-a",)

    def run_ctl(self, *args):
        return self.h.ferryctl(*args, check=False)

    def assert_one_line_error(self, r, status=1):
        self.assertEqual(r.returncode, status, r.stderr)
        self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)

    def test_openssl_verifies_the_chains(self):
        pki = self.h.pki
        ca = os.path.join(pki, "ca.pem")
        crl = os.path.join(pki, "crl.pem")
        for name, purpose in (("broker", "sslserver"), ("store", "sslserver"),
                              ("ferryd", "sslclient"), ("devices/dev-a", "sslclient")):
            with self.subTest(cert=name):
                openssl("verify", "-CAfile", ca, "-crl_check", "-CRLfile", crl,
                        "-purpose", purpose, os.path.join(pki, name + ".pem"))
        # A device certificate is no server certificate.
        r = openssl("verify", "-CAfile", ca, "-purpose", "sslserver",
                    os.path.join(pki, "devices/dev-a.pem"), check=False)
        self.assertNotEqual(r.returncode, 0)
        text = openssl("x509", "-in", ca, "-noout", "-text").stdout
        self.assertIn("CA:TRUE", text)
        self.assertIn("Certificate Sign, CRL Sign", text)
        self.assertIn("prime256v1", text)

    def test_key_files_are_0600(self):
        pki = self.h.pki
        for rel in ("ca.key", "broker.key", "store.key", "ferryd.key", "devices/dev-a.key"):
            with self.subTest(key=rel):
                mode = stat.S_IMODE(os.stat(os.path.join(pki, rel)).st_mode)
                self.assertEqual(mode, 0o600)

    def test_init_refuses_an_existing_ca(self):
        before = read(os.path.join(self.h.pki, "ca.pem"))
        r = self.run_ctl("pki", "init", self.h.pki)
        self.assert_one_line_error(r)
        self.assertIn("refusing", r.stderr)
        self.assertEqual(read(os.path.join(self.h.pki, "ca.pem")), before)

    def test_bad_names_are_refused(self):
        for name in ("", ".", "..", "a/b", "dev+1", "dev#", "$SYS", "ferryd", "broker",
                     "store", "x" * 65, "dév", "a b", "../../etc/x"):
            with self.subTest(name=name):
                r = self.run_ctl("pki", "issue", self.h.pki, name)
                self.assert_one_line_error(r)
                if name:
                    self.assertFalse(os.path.exists(
                        os.path.join(self.h.pki, "devices", name + ".pem")))
        r = self.run_ctl("pki", "revoke", self.h.pki, "a/b")
        self.assert_one_line_error(r)

    def test_usage_errors_exit_2(self):
        for args in (("pki",), ("pki", "init"), ("pki", "frobnicate", "x"),
                     ("pki", "issue", self.h.pki), ("pki", "init", "x", "--csr", "f"),
                     ("pki", "issue", self.h.pki, "d", "--days", "0"),
                     ("pki", "issue", self.h.pki, "d", "--days", "x"),
                     ("broker-config",), ("broker-config", "x", "--port", "0"),
                     ("broker-config", "x", "--bogus", "1")):
            with self.subTest(args=args):
                r = self.run_ctl(*args)
                self.assertEqual(r.returncode, 2, r.stderr)

    def test_csr_flow_key_stays_on_device_and_logs_in(self):
        with tempfile.TemporaryDirectory() as device:
            key = os.path.join(device, "dev-csr.key")
            csr = os.path.join(device, "dev-csr.csr")
            # The device asks for another name; the CA must not care.
            openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-keyout", key, "-subj", "/CN=ferryd", "-out", csr)
            r = self.run_ctl("pki", "issue", self.h.pki, "dev-csr", "--csr", csr)
            self.assertEqual(r.returncode, 0, r.stderr)
            cert = os.path.join(self.h.pki, "devices", "dev-csr.pem")
            self.assertFalse(os.path.exists(os.path.join(self.h.pki, "devices",
                                                         "dev-csr.key")))
            subject = openssl("x509", "-in", cert, "-noout", "-subject").stdout
            self.assertIn("CN = dev-csr", subject)
            self.assertNotIn("ferryd", subject)
            cert_pub = openssl("x509", "-in", cert, "-noout", "-pubkey").stdout
            key_pub = openssl("pkey", "-in", key, "-pubout").stdout
            self.assertEqual(cert_pub, key_pub)
            # The device logs in with its own key and gets its topics.
            c = self.h.client(cert, key).connect()
            c.subscribe("ferry/dev-csr/upload/response")
            f = self.h.ferryd_client().connect()
            f.publish("ferry/dev-csr/upload/response", b"hello")
            self.assertEqual(c.expect_message().payload, b"hello")

    def test_bad_csrs_are_refused(self):
        with tempfile.TemporaryDirectory() as device:
            key = os.path.join(device, "k.key")
            csr = os.path.join(device, "weak.csr")
            openssl("req", "-new", "-newkey", "rsa:1024", "-nodes", "-keyout", key,
                    "-subj", "/CN=x", "-out", csr)
            r = self.run_ctl("pki", "issue", self.h.pki, "dev-weak", "--csr", csr)
            self.assert_one_line_error(r)
            self.assertIn("RSA", r.stderr)
            junk = os.path.join(device, "junk.csr")
            with open(junk, "wb") as f:
                f.write(os.urandom(4096))
            r = self.run_ctl("pki", "issue", self.h.pki, "dev-junk", "--csr", junk)
            self.assert_one_line_error(r)
            big = os.path.join(device, "big.csr")
            with open(big, "wb") as f:
                f.write(b"A" * (1 << 20))
            r = self.run_ctl("pki", "issue", self.h.pki, "dev-big", "--csr", big)
            self.assert_one_line_error(r)
            for name in ("dev-weak", "dev-junk", "dev-big"):
                self.assertFalse(os.path.exists(
                    os.path.join(self.h.pki, "devices", name + ".pem")))

    def test_revoke_then_openssl_sees_it_in_the_crl(self):
        pki = self.h.pki
        self.h.issue("dev-rev")
        cert_copy, _ = self.h.revoke("dev-rev")
        r = openssl("verify", "-CAfile", os.path.join(pki, "ca.pem"), "-crl_check",
                    "-CRLfile", os.path.join(pki, "crl.pem"), cert_copy, check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("certificate revoked", r.stdout + r.stderr)
        serial = openssl("x509", "-in", cert_copy, "-noout", "-serial").stdout
        serial = serial.strip().split("=")[1].upper()
        crl_text = openssl("crl", "-in", os.path.join(pki, "crl.pem"), "-noout",
                           "-text").stdout
        self.assertIn(serial, crl_text.upper())
        # Revoking twice is an error, not a second CRL entry.
        self.assert_one_line_error(self.run_ctl("pki", "revoke", pki, "dev-rev"))

    def test_days_option(self):
        r = self.run_ctl("pki", "issue", self.h.pki, "dev-short", "--days", "2")
        self.assertEqual(r.returncode, 0, r.stderr)
        cert = os.path.join(self.h.pki, "devices", "dev-short.pem")
        r = openssl("x509", "-in", cert, "-noout", "-checkend", str(3 * 86400), check=False)
        self.assertNotEqual(r.returncode, 0)  # expires within three days
        openssl("x509", "-in", cert, "-noout", "-checkend", str(86400))


if __name__ == "__main__":
    ferry_harness.main()
