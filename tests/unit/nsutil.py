# Namespace helpers shared by the data-plane lab tests (test_udp6, test_sixin4, test_v4v6,
# test_ayiya_dp): two namespaces A (client, device "wan") and B (broker/PoP side, device
# "pop") joined by a veth, with documentation addresses, removed afterwards in every case.

import contextlib
import os
import subprocess
import threading
import time

import pytest

_counter = [0]


def ip(ns, *args, check=True):
    """`ip -n ns ARGS...`; CalledProcessError when check and it fails."""
    return subprocess.run(["ip", "-n", ns] + list(args), capture_output=True, text=True, timeout=10,
                          check=check)


def wait(pred, timeout=3.0, step=0.01):
    """Poll pred() until it is true or `timeout` seconds passed; its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return pred()


def ping(ns, dst, count=3, wait=2, family=6):
    """ping (-6 or -4) from namespace ns, 0.2 s apart; wait: seconds for the last reply
    (short where no answer is expected)."""
    return subprocess.run(["ip", "netns", "exec", ns, "ping", "-%d" % family, "-n", "-c", str(count), "-i",
                           "0.2", "-W", str(wait), dst], capture_output=True, text=True, timeout=20)


def open_fds():
    """The set of this process's open file descriptors."""
    return set(os.listdir("/proc/self/fd"))


def tun_gone(ns, name):
    return ip(ns, "link", "show", name, check=False).returncode != 0


def threads_gone(prefix):
    """No thread of this process has a name starting with prefix."""
    return not [t for t in threading.enumerate() if t.name.startswith(prefix)]


@contextlib.contextmanager
def two_ns(tag, a_addrs, b_addrs, plen=24, nodad=False):
    """Namespaces "<tag>a-PID-N" and "<tag>b-PID-N" (unique per run and call) joined by
    the veth pair wan (in A) / pop (in B), lo and both ends up, with a_addrs / b_addrs
    (prefix length plen; nodad for IPv6 so they are usable at once). Yields (a, b);
    both namespaces are deleted afterwards, also when the test fails. Skips the test
    when not root."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    _counter[0] += 1
    a = "%sa-%d-%d" % (tag, os.getpid(), _counter[0])
    b = "%sb-%d-%d" % (tag, os.getpid(), _counter[0])
    extra = ["nodad"] if nodad else []
    subprocess.run(["ip", "netns", "add", a], check=True, timeout=10)
    try:
        subprocess.run(["ip", "netns", "add", b], check=True, timeout=10)
        try:
            ip(a, "link", "add", "wan", "type", "veth", "peer", "name", "pop", "netns", b)
            for ns, dev, addrs in ((a, "wan", a_addrs), (b, "pop", b_addrs)):
                ip(ns, "link", "set", "lo", "up")
                ip(ns, "link", "set", dev, "up")
                for x in addrs:
                    ip(ns, "addr", "add", "%s/%d" % (x, plen), "dev", dev, *extra)
            yield a, b
        finally:
            subprocess.run(["ip", "netns", "del", b], timeout=10)
    finally:
        subprocess.run(["ip", "netns", "del", a], timeout=10)
