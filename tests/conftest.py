import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
# tests/core modules import each other by plain name (as under MicroPython's runner).
CORE_TESTS = os.path.join(ROOT, "tests", "core")
if CORE_TESTS not in sys.path:
    sys.path.insert(0, CORE_TESTS)

from tests.lab.fixtures import lab, lab_nat, make_lab  # noqa: E402,F401
