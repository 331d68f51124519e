"""Kernel (sit) vs userspace (TUN + raw socket) 6in4 data plane, as a ratio, inside
User-Mode Linux (not a test). The host kernel has no sit, so this boots UML through
tests/kernel/runner.py and runs itself inside with --inside.

Two namespaces joined by a veth. A runs the data plane under test (KernelSixin4 or
UserspaceSixin4, in this process); B is the broker side: a sit link made with iproute2,
the same for both runs. Load: UDP/IPv6 datagrams of the given payload sizes (checksums
computed in software, see SENDER) from a sender process to a counting sink process, both
directions:
  tx: sender in A -> A's plane -> veth -> B's sit -> sink in B
  rx: sender in B -> B's sit -> veth -> A's plane -> sink in A
Every phase is bounded in time (--seconds, at most 10) and packet count.

Absolute numbers inside UML mean little: every system call of a UML process is a ptrace
round trip to the UML kernel, and all of UML runs on one host CPU. The userspace plane
needs two extra system calls per packet and shares that CPU with the load, so the
figures say how much a kernel with sit saves per packet, not what a router achieves.
The ratio is of CPU time per delivered datagram (everything inside the VM: sender,
plane, sink), steadier than a ratio of rates, which depends on how the one CPU happens
to be shared between the load generator and the userspace plane's threads.

    .venv/bin/python bench/kernel_vs_userspace.py [--seconds 2] [--sizes 64,1200]
"""

import argparse
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.kernel import runner  # noqa: E402

sys.path.insert(0, os.path.join(ROOT, "bench"))
from sixin4_userspace import UDP6_SINK  # noqa: E402

A_IP, B_IP = "192.0.2.1", "192.0.2.2"
A6, B6 = "2001:db8:1::2", "2001:db8:1::1"
MAX_PACKETS = 1_000_000

# UDP through a raw IPv6 socket with IPV6_CHECKSUM: the kernel computes the checksum in
# software. A UDP socket's datagrams may cross the veth with the checksum left to
# "hardware" (CHECKSUM_PARTIAL); a userspace plane then forwards them unfinished and the
# receiver drops them (Udp6InCsumErrors). On a real link the NIC completes them.
SENDER = r"""
import socket, struct, sys, time
size, secs, limit, dst = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_UDP)
s.setsockopt(socket.IPPROTO_IPV6, getattr(socket, "IPV6_CHECKSUM", 7), 6)
payload = struct.pack("!HHHH", 9999, 9, 8 + size, 0) + b"x" * size
end = time.monotonic() + secs
n = 0
while n < limit and time.monotonic() < end:
    for _ in range(64):
        try:
            s.sendto(payload, (dst, 0))
            n += 1
        except OSError:
            pass
print(n)
"""

# the counting sink is sixin4_userspace.py's
SINK = UDP6_SINK


def sh(*args):
    subprocess.run(args, check=True, timeout=20, capture_output=True)


def in_ns(ns, script, *args):
    cmd = ["ip", "netns", "exec", ns, sys.executable, "-c", script] + [str(a) for a in args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)


def busy_seconds():
    """CPU time the (one-CPU) kernel spent not idle, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    hz = os.sysconf("SC_CLK_TCK")
    return (sum(v) - v[3] - (v[4] if len(v) > 4 else 0)) / hz  # minus idle, iowait


def measure(a, b, size, secs, direction):
    """(delivered/s, offered/s, CPU microseconds per delivered datagram) for one direction.
    The CPU figure covers everything that ran: sender, plane, sink."""
    src, dst, dst6 = (a, b, B6) if direction == "tx" else (b, a, A6)
    sink = in_ns(dst, SINK, secs + 2.0, dst6)
    sink.stdout.readline()
    t0, c0 = time.monotonic(), busy_seconds()
    sender = in_ns(src, SENDER, size, secs, MAX_PACKETS, dst6)
    sent = int(sender.communicate(timeout=secs + 30)[0].strip() or 0)
    dt = time.monotonic() - t0
    got = int(sink.communicate(timeout=secs + 30)[0].split()[-1])
    cpu = busy_seconds() - c0
    return got / dt, sent / dt, (cpu / got * 1e6) if got else float("inf")


def run_plane(kind, sizes, secs):
    from cpe_tunnel.adapters.netlink import Netlink
    from cpe_tunnel.adapters.sixin4 import KernelSixin4, UserspaceSixin4

    a, b = "cptkb%d-a" % os.getpid(), "cptkb%d-b" % os.getpid()
    sh("ip", "netns", "add", a)
    sh("ip", "netns", "add", b)
    plane = nl = None
    results = {}
    try:
        sh("ip", "-n", a, "link", "add", "wan", "type", "veth", "peer", "name", "pop", "netns", b)
        for ns, dev, addr in ((a, "wan", A_IP), (b, "pop", B_IP)):
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", ns, "addr", "add", addr + "/24", "dev", dev)
        sh("ip", "-n", b, "link", "add", "name", "peer", "type", "sit", "local", B_IP, "remote", A_IP,
           "ttl", "64")
        sh("ip", "-n", b, "link", "set", "peer", "mtu", "1480", "up")
        sh("ip", "-n", b, "addr", "add", B6 + "/64", "dev", "peer", "nodad")
        nl = Netlink(netns=a)
        if kind == "kernel":
            plane = KernelSixin4(nl, "cpt6in4", A_IP, B_IP, mtu=1480)
        else:
            plane = UserspaceSixin4("cpt6in4", A_IP, B_IP, mtu=1480, netlink=nl, netns=a)
        plane.open()
        nl.addr_add("cpt6in4", A6, 64, flags=("nodad",))
        for size in sizes:
            for direction in ("tx", "rx"):
                results[(direction, size)] = measure(a, b, size, secs, direction)
    finally:
        if plane is not None:
            plane.close()
        if nl is not None:
            nl.close()
        subprocess.run(["ip", "netns", "del", b], check=False, timeout=20)
        subprocess.run(["ip", "netns", "del", a], check=False, timeout=20)
    return results


def inside(sizes, secs):
    if os.environ.get(runner.IN_VM_ENV) != "uml":
        sys.exit("--inside runs inside User-Mode Linux only")
    res = {kind: run_plane(kind, sizes, secs) for kind in ("kernel", "userspace")}
    print("6in4 inside User-Mode Linux %s, %.1f s per phase" % (os.uname().release, secs))
    print("delivered datagrams/s (offered/s), CPU us per delivered datagram (sender, plane and")
    print("sink together); ratio = userspace CPU per datagram / kernel CPU per datagram")
    print("%-4s %6s %27s %27s %7s" % ("dir", "bytes", "kernel (sit)", "userspace (TUN)", "ratio"))
    for size in sizes:
        for direction in ("tx", "rx"):
            k, u = res["kernel"][(direction, size)], res["userspace"][(direction, size)]
            ratio = u[2] / k[2] if k[2] else float("inf")
            print("%-4s %6d %7.0f (%7.0f) %6.0f us %7.0f (%7.0f) %6.0f us %7.2f"
                  % (direction, size, k[0], k[1], k[2], u[0], u[1], u[2], ratio))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--sizes", default="64,1200")
    ap.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    secs = max(0.5, min(args.seconds, 10.0))
    sizes = [int(x) for x in args.sizes.split(",")]
    if args.inside:
        return inside(sizes, secs)
    why = runner.unusable_reason()
    if why:
        sys.exit("cannot boot User-Mode Linux: " + why)
    budget = int(len(sizes) * 2 * 2 * (secs + 8) + 60)
    res = runner.run([sys.executable, os.path.join("bench", "kernel_vs_userspace.py"), "--inside",
                      "--seconds", str(secs), "--sizes", ",".join(map(str, sizes))], timeout=budget)
    sys.stdout.write(res.output)
    if res.status != 0:
        sys.exit("failed inside UML:\n" + res.summary())
    print("(UML: fpu %s, boot %.1f s, total %.1f s)" % (res.fpu, res.timings.get("boot", 0),
                                                      res.timings.get("total", 0)))


if __name__ == "__main__":
    main()
