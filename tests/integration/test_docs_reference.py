"""docs/operations.md carries ferryd's option reference exactly as the binary
prints it, so the documentation cannot drift from the option table."""

import os
import subprocess
import sys
import unittest


class ConfigReferenceIsCurrent(unittest.TestCase):
    def test_operations_md_matches_ferryd(self):
        build = os.environ["FERRY_BUILD_DIR"]
        src = os.environ["FERRY_SOURCE_DIR"]
        out = subprocess.run([os.path.join(build, "cmd", "ferryd", "ferryd"),
                              "--print-config-reference"], capture_output=True, text=True,
                             check=True, timeout=30).stdout
        with open(os.path.join(src, "docs", "operations.md")) as f:
            doc = f.read()
        begin, end = "<!-- BEGIN CONFIG REFERENCE -->\n", "<!-- END CONFIG REFERENCE -->"
        self.assertIn(begin, doc)
        section = doc.split(begin, 1)[1].split(end, 1)[0]
        self.assertEqual(section, out, "docs/operations.md is stale: regenerate the section "
                         "with `ferryd --print-config-reference`")


if __name__ == "__main__":
    result = unittest.main(exit=False, verbosity=2).result
    sys.exit(0 if result.wasSuccessful() else 1)
