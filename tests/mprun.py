# Runs the core's unit tests (tests/core/test_*.py) without pytest, so the same
# tests run under MicroPython's unix port and under CPython.
#   MICROPYPATH=.:tests/core micropython tests/mprun.py
# A test is any module-level function named test_*; it passes if it returns.
import os
import sys


def main(argv):
    here = "tests/core"
    names = sorted(n[:-3] for n in os.listdir(here) if n.startswith("test_") and n.endswith(".py"))
    if len(argv) > 1:
        names = [n for n in names if n in argv[1:]]
    passed = failed = 0
    for name in names:
        mod = __import__(name)
        for attr in sorted(dir(mod)):
            if not attr.startswith("test_"):
                continue
            fn = getattr(mod, attr)
            if not callable(fn):
                continue
            try:
                fn()
                passed += 1
            except Exception as exc:  # report and go on
                failed += 1
                print("FAIL %s.%s: %s: %s" % (name, attr, type(exc).__name__, exc))
                if hasattr(sys, "print_exception"):
                    sys.print_exception(exc)
    print("micropython core tests: %d passed, %d failed" % (passed, failed))
    return 1 if failed or not passed else 0


sys.exit(main(sys.argv))
