"""Packets per second through the userspace 6in4 data plane (not a test).

Two namespaces joined by a veth: A runs UserspaceSixin4 in this process; load
generators and counters run as separate processes (so they do not share our GIL).
  tx: UDP/IPv6 from A's kernel -> TUN -> our tx thread -> raw proto-41 socket -> B counts
  rx: B sends proto-41 packets -> our rx thread -> TUN -> a UDP socket in A counts
Each phase is bounded in time and packet count. Needs root.

    .venv/bin/python bench/sixin4_userspace.py [--seconds 2] [--sizes 64,1200]
"""

import argparse
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cpe_tunnel.adapters.netlink import Netlink  # noqa: E402
from cpe_tunnel.adapters.sixin4 import UserspaceSixin4  # noqa: E402

A_IP, B_IP = "192.0.2.1", "192.0.2.2"
TUN_ADDR, PEER6 = "2001:db8:1::2", "2001:db8:1::1"
MAX_PACKETS = 2_000_000

UDP6_SENDER = r"""
import socket, sys, time
size, secs, limit = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
payload = b"x" * size
end = time.monotonic() + secs
n = 0
while n < limit and time.monotonic() < end:
    for _ in range(256):
        try:
            s.sendto(payload, (sys.argv[4], 9))
            n += 1
        except OSError:
            pass
print(n)
"""

RAW41_SINK = r"""
import socket, sys, time, select
secs = float(sys.argv[1])
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 41)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
s.setblocking(False)
buf = bytearray(65536)
n = 0
print("ready", flush=True)
end = time.monotonic() + secs
while time.monotonic() < end:
    select.select([s], [], [], 0.2)
    try:
        while True:
            s.recv_into(buf)
            n += 1
    except BlockingIOError:
        pass
print(n)
"""

RAW41_SENDER = r"""
import socket, struct, sys, time
size, secs, limit, src, dst, src6, dst6 = (int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]),
                                          sys.argv[4], sys.argv[5], sys.argv[6], sys.argv[7])
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 41)
s.bind((src, 0))
# IPv6 + UDP (checksum computed once: the packet never changes)
udp_len = 8 + size
payload = b"x" * size
s6, d6 = socket.inet_pton(socket.AF_INET6, src6), socket.inet_pton(socket.AF_INET6, dst6)
pseudo = s6 + d6 + struct.pack("!IxxxB", udp_len, 17)
udp = struct.pack("!HHHH", 9999, 9, udp_len, 0) + payload
data = pseudo + udp
if len(data) % 2:
    data += b"\0"
c = sum(struct.unpack("!%dH" % (len(data) // 2), data))
while c >> 16:
    c = (c & 0xFFFF) + (c >> 16)
c = (~c) & 0xFFFF or 0xFFFF
udp = udp[:6] + struct.pack("!H", c) + udp[8:]
pkt = struct.pack("!IHBB", 0x60000000, udp_len, 17, 64) + s6 + d6 + udp
end = time.monotonic() + secs
n = 0
while n < limit and time.monotonic() < end:
    for _ in range(256):
        try:
            s.sendto(pkt, (dst, 0))
            n += 1
        except OSError:
            pass
print(n)
"""

UDP6_SINK = r"""
import socket, sys, time, select
secs = float(sys.argv[1])
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
s.bind((sys.argv[2], 9))
s.setblocking(False)
buf = bytearray(65536)
n = 0
print("ready", flush=True)
end = time.monotonic() + secs
while time.monotonic() < end:
    select.select([s], [], [], 0.2)
    try:
        while True:
            s.recv_into(buf)
            n += 1
    except BlockingIOError:
        pass
print(n)
"""


def sh(*args):
    subprocess.run(args, check=True, timeout=10)


def in_ns(ns, script, *args):
    cmd = ["ip", "netns", "exec", ns, sys.executable, "-c", script] + [str(a) for a in args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)


def phase(name, plane, sink, sender, secs):
    c0 = plane.counters()
    t0 = time.monotonic()
    sent = int(sender.communicate(timeout=secs + 10)[0].strip() or 0)
    dt = time.monotonic() - t0
    time.sleep(0.3)
    got = int(sink.communicate(timeout=secs + 10)[0].split()[-1])
    c1 = plane.counters()
    key = "tx_packets" if name == "tx" else "rx_packets"
    through = c1[key] - c0[key]
    drops = {k: v - c0["drops"].get(k, 0) for k, v in c1["drops"].items() if v != c0["drops"].get(k, 0)}
    return sent, through, got, dt, drops


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--sizes", default="64,1200")
    args = ap.parse_args()
    secs = min(args.seconds, 10.0)
    if os.geteuid() != 0:
        sys.exit("needs root (namespaces, TUN, raw sockets)")
    a, b = "cptbencha-%d" % os.getpid(), "cptbenchb-%d" % os.getpid()
    sh("ip", "netns", "add", a)
    sh("ip", "netns", "add", b)
    plane = nl = None
    try:
        sh("ip", "-n", a, "link", "add", "wan", "type", "veth", "peer", "name", "pop", "netns", b)
        for ns, dev, addr in ((a, "wan", A_IP), (b, "pop", B_IP)):
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", ns, "addr", "add", addr + "/24", "dev", dev)
        nl = Netlink(netns=a)
        plane = UserspaceSixin4("cpt6in4", A_IP, B_IP, mtu=1480, netlink=nl, netns=a)
        plane.open()
        nl.addr_add("cpt6in4", TUN_ADDR, 64, flags=("nodad",))
        print("userspace 6in4, %.1f s per phase, python %s" % (secs, sys.version.split()[0]))
        print("%-4s %6s %12s %12s %12s %10s %s" % ("dir", "bytes", "offered/s", "forwarded/s", "delivered/s",
                                                    "Mbit/s", "drops"))
        for size in [int(x) for x in args.sizes.split(",")]:
            # tx: sink in B first
            sink = in_ns(b, RAW41_SINK, secs + 1.5)
            sink.stdout.readline()
            sender = in_ns(a, UDP6_SENDER, size, secs, MAX_PACKETS, PEER6)
            sent, through, got, dt, drops = phase("tx", plane, sink, sender, secs)
            print("%-4s %6d %12.0f %12.0f %12.0f %10.1f %s" % ("tx", size, sent / dt, through / dt, got / dt,
                                                            got * (size + 48) * 8 / dt / 1e6, drops or ""))
            # rx
            sink = in_ns(a, UDP6_SINK, secs + 1.5, TUN_ADDR)
            sink.stdout.readline()
            sender = in_ns(b, RAW41_SENDER, size, secs, MAX_PACKETS, B_IP, A_IP, PEER6, TUN_ADDR)
            sent, through, got, dt, drops = phase("rx", plane, sink, sender, secs)
            print("%-4s %6d %12.0f %12.0f %12.0f %10.1f %s" % ("rx", size, sent / dt, through / dt, got / dt,
                                                            got * (size + 48) * 8 / dt / 1e6, drops or ""))
    finally:
        if plane is not None:
            plane.close()
        if nl is not None:
            nl.close()
        subprocess.run(["ip", "netns", "del", b], timeout=10)
        subprocess.run(["ip", "netns", "del", a], timeout=10)


if __name__ == "__main__":
    main()
