"""Where the shared packet captures are: $CPE_CAPTURES, else ../shared/captures beside
this checkout (as CI lays it out), else /work/shared/captures."""

import os

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _find():
    env = os.environ.get("CPE_CAPTURES")
    if env:
        return env
    for d in (os.path.join(_ROOT, "..", "shared", "captures"), "/work/shared/captures"):
        if os.path.isdir(d):
            return os.path.abspath(d)
    return os.path.abspath(os.path.join(_ROOT, "..", "shared", "captures"))


CAPTURES = _find()
