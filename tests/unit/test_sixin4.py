# 6in4 data planes.
#
# Userspace plane: two namespaces joined by a veth, A (client, runs UserspaceSixin4)
# and B (an independent peer written with scapy: a raw protocol-41 socket that answers
# encapsulated ICMPv6 echo requests). `ping -6` in A goes through the TUN, our tx
# thread, the veth, the peer, back to our rx thread and the TUN.
#
# Kernel plane: the host kernel has no sit; test_kernel_sit_under_uml boots
# User-Mode Linux (when installed) and runs the same kind of check with a real sit link.

import os
import select
import socket
import subprocess
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cpe_tunnel.adapters.netlink import Netlink, in_netns
from cpe_tunnel.adapters.sixin4 import (
    KernelSixin4,
    UserspaceSixin4,
    choose_dataplane,
    create_dataplane,
    decap_6in4,
)
from cpe_tunnel.adapters.tun import open_tun
from cpe_tunnel.core.errors import ConfigError
from tests.unit import nsutil
from tests.unit.nsutil import ip as _ip
from tests.unit.nsutil import open_fds as _open_fds
from tests.unit.nsutil import ping as _ping
from tests.unit.nsutil import tun_gone as _tun_gone
from tests.unit.nsutil import wait as _wait

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

A_IP, A_IP2 = "192.0.2.1", "192.0.2.11"
B_IP, B_IP2 = "192.0.2.2", "192.0.2.3"
TUN_ADDR, PEER6 = "2001:db8:1::2", "2001:db8:1::1"


@pytest.fixture
def two_ns():
    with nsutil.two_ns("cpt64", (A_IP, A_IP2), (B_IP, B_IP2)) as ab:
        yield ab


class Peer:
    """The broker side, independent of the code under test: scapy decodes and builds,
    a raw protocol-41 socket in namespace B carries. Answers ICMPv6 echo requests,
    from the address they were sent to; records what it saw."""

    def __init__(self, netns):
        from scapy.layers.inet import IP
        from scapy.layers.inet6 import ICMPv6EchoReply, ICMPv6EchoRequest, IPv6

        self.IP, self.IPv6, self.Req, self.Rep = IP, IPv6, ICMPv6EchoRequest, ICMPv6EchoReply
        self.rx = in_netns(netns, lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, 41))
        self.tx = {}
        for addr in (B_IP, B_IP2):
            def make(addr=addr):
                s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 41)
                s.bind((addr, 0))
                return s
            self.tx[addr] = in_netns(netns, make)
        self.requests = []  # (outer src, outer dst) of echo requests answered
        self.replies = []  # (outer src, outer dst) of echo replies received
        self._stop = False
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop:
            r, _, _ = select.select([self.rx], [], [], 0.1)
            if not r:
                continue
            data, _ = self.rx.recvfrom(65535)
            outer = self.IP(data)
            if outer.proto != 41:
                continue
            inner = self.IPv6(bytes(outer.payload))
            if inner.haslayer(self.Rep):
                self.replies.append((outer.src, outer.dst))
            if not inner.haslayer(self.Req) or outer.dst not in self.tx:
                continue
            req = inner[self.Req]
            rep = self.IPv6(src=inner.dst, dst=inner.src, hlim=64) / self.Rep(id=req.id, seq=req.seq,
                                                                               data=req.data)
            self.requests.append((outer.src, outer.dst))
            self.tx[outer.dst].sendto(bytes(rep), (outer.src, 0))

    def inject_echo_request(self, src4, dst4):
        """Send an encapsulated echo request for the client's TUN address from src4."""
        pkt = self.IPv6(src=PEER6, dst=TUN_ADDR, hlim=64) / self.Req(id=0x4242, seq=1, data=b"x" * 8)
        self.tx[src4].sendto(bytes(pkt), (dst4, 0))

    def close(self):
        self._stop = True
        self._t.join(2)
        self.rx.close()
        for s in self.tx.values():
            s.close()


@pytest.mark.lab
@pytest.mark.parametrize("threads", [2, 1])
def test_userspace_ping_through_tunnel(two_ns, threads):
    a, b = two_ns
    peer = Peer(b)
    nl = Netlink(netns=a)
    fds0 = _open_fds()
    plane = UserspaceSixin4("cpt6in4", A_IP, B_IP, ttl=61, tos=0x20, mtu=1280, netlink=nl, netns=a,
                            threads=threads)
    try:
        assert plane.kind == "userspace"
        plane.open()
        assert plane.ifname == "cpt6in4"
        names = sorted(t.name for t in threading.enumerate() if t.name.startswith("6in4-"))
        assert names == (["6in4-tx+rx-cpt6in4"] if threads == 1 else ["6in4-rx-cpt6in4", "6in4-tx-cpt6in4"])
        out = _ip(a, "link", "show", "cpt6in4").stdout
        assert "mtu 1280" in out and ",UP" in out
        nl.addr_add("cpt6in4", TUN_ADDR, 64, flags=("nodad",))
        c0 = plane.counters()
        assert c0["last_rx"] is None and c0["rx_packets"] == 0  # (the kernel may already send MLD)

        res = _ping(a, PEER6)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "3 received" in res.stdout
        assert peer.requests.count((A_IP, B_IP)) >= 3  # the peer really answered, from B_IP
        # (a thread counts right after its syscall, which may be after ping is done)
        def enough(c):  # 40 + 8 + 56 bytes per echo
            return c["rx_packets"] >= 3 and c["rx_bytes"] >= 3 * 104 and c["tx_packets"] >= 3 and \
                c["tx_bytes"] >= 3 * 104

        assert _wait(lambda: enough(plane.counters()))
        c = plane.counters()
        assert c["last_tx"] is not None and c["last_rx"] is not None
        assert c["last_rx"] <= time.monotonic()
        assert c["rx_dropped"] == 0

        # a protocol-41 packet from a foreign IPv4 source is dropped and counted ...
        rx_before = c["rx_packets"]
        peer.inject_echo_request(B_IP2, A_IP)
        assert _wait(lambda: plane.counters()["drops"].get("foreign source", 0) == 1)
        c = plane.counters()
        assert c["rx_packets"] == rx_before and c["rx_dropped"] == 1
        # ... while the same packet from the broker goes in (positive control): the
        # client's kernel answers it through the tunnel
        peer.inject_echo_request(B_IP, A_IP)
        assert _wait(lambda: (A_IP, B_IP) in peer.replies)
        assert _wait(lambda: plane.counters()["rx_packets"] == rx_before + 1)
        assert (A_IP, B_IP2) not in peer.replies

        # outer TTL / TOS as configured (checked on the wire with tcpdump-free means:
        # the peer's raw socket sees the header)
        seen = []
        orig = peer.IP

        def spy(data, _orig=orig):
            p = _orig(data)
            seen.append((p.ttl, p.tos))
            return p

        peer.IP = spy
        assert _ping(a, PEER6, count=1).returncode == 0
        peer.IP = orig
        assert (61, 0x20) in seen

        # set_endpoints: move to the broker's other address and our other WAN address
        plane.set_endpoints(A_IP2, B_IP2)
        n_before = len(peer.requests)
        res = _ping(a, PEER6)
        assert res.returncode == 0, res.stdout + res.stderr
        assert set(peer.requests[n_before:]) == {(A_IP2, B_IP2)}
        # the old broker address is now foreign
        peer.inject_echo_request(B_IP, A_IP2)
        assert _wait(lambda: plane.counters()["drops"].get("foreign source", 0) == 2)
        # and back, local "any" (routing picks the source)
        plane.set_endpoints(None, B_IP)
        assert _ping(a, PEER6, count=1).returncode == 0
        assert peer.requests[-1] == (A_IP, B_IP)
    finally:
        plane.close()
        try:
            assert _tun_gone(a, "cpt6in4")  # close() leaves no TUN behind
            assert not [t for t in threading.enumerate() if t.name.startswith("6in4-")]
            # every socket (the replaced ones included), dup, pipe and the TUN fd closed
            assert _wait(lambda: _open_fds() == fds0)
        finally:
            peer.close()
            nl.close()


@pytest.mark.lab
def test_userspace_close_is_prompt_and_counts_wan_loss(two_ns):
    a, _b = two_ns
    nl = Netlink(netns=a)
    plane = UserspaceSixin4("cpt6x%d" % (os.getpid() % 1000), A_IP, "203.0.113.9", netlink=nl, netns=a)
    name = plane.ifname
    try:
        plane.open()
        nl.addr_add(name, TUN_ADDR, 64, flags=("nodad",))
        # no route to 203.0.113.9 in A: sends fail and are counted, threads survive
        _ping(a, PEER6, count=2)
        c = plane.counters()
        assert c["drops"].get("no route to broker", 0) >= 2
        assert c["tx_packets"] == 0 and "error" not in c
    finally:
        t = time.monotonic()
        plane.close()
        assert time.monotonic() - t < 1.0
        plane.close()  # twice is fine
        assert _tun_gone(a, name)
        nl.close()


@pytest.mark.lab
def test_open_tun_in_netns(two_ns):
    a, _b = two_ns
    fd, name = open_tun("cpttun%d", mtu=1400, nonblocking=True, netns=a)
    try:
        assert name.startswith("cpttun") and name != "cpttun%d"
        assert "mtu 1400" in _ip(a, "link", "show", name).stdout
        assert subprocess.run(["ip", "link", "show", name], capture_output=True).returncode != 0  # not here
    finally:
        os.close(fd)
    assert _tun_gone(a, name)
    for bad in ("", "x" * 16, "a/b", "a b"):
        with pytest.raises(ValueError):
            open_tun(bad)
    with pytest.raises(ValueError):
        open_tun("cpttun0", mtu=10)


# ---------------------------------------------------------------- decapsulation checks

def _pkt(src="192.0.2.2", inner=None, **ipkw):
    from scapy.layers.inet import IP
    from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6

    if inner is None:
        inner = IPv6(src=PEER6, dst=TUN_ADDR) / ICMPv6EchoRequest(data=b"hello")
    return bytes(IP(src=src, dst="192.0.2.1", proto=41, **ipkw) / inner), bytes(inner)


REMOTE = socket.inet_aton("192.0.2.2")


def test_decap_accepts_scapy_packet():
    data, inner = _pkt()
    buf = bytearray(data + b"\xee" * 7)  # trailing garbage beyond total length is ignored
    start, end = decap_6in4(buf, len(buf), REMOTE)
    assert bytes(buf[start:end]) == inner
    # with IPv4 options (IHL 6)
    from scapy.layers.inet import IPOption_NOP

    data, inner = _pkt(options=[IPOption_NOP()] * 4)
    assert data[0] & 15 == 6
    start, end = decap_6in4(bytearray(data), len(data), REMOTE)
    assert start == 24 and data[start:end] == inner


def test_decap_rejects():
    data, _ = _pkt()
    buf = bytearray(data)
    assert decap_6in4(buf, len(buf), socket.inet_aton("192.0.2.3")) == "foreign source"
    assert decap_6in4(buf, 19, REMOTE) == "not IPv4"
    assert decap_6in4(buf, len(buf) - 1, REMOTE) == "bad IPv4 header"  # total length > read
    b2 = bytearray(buf)
    b2[9] = 4
    assert decap_6in4(b2, len(b2), REMOTE) == "not protocol 41"
    b2 = bytearray(buf)
    b2[20] = 0x45  # IPv4 inside
    assert decap_6in4(b2, len(b2), REMOTE) == "not IPv6 inside"
    b2 = bytearray(buf)
    b2[24] = 0xFF  # IPv6 payload length beyond the packet
    assert decap_6in4(b2, len(b2), REMOTE) == "truncated IPv6 packet"
    b2 = bytearray(buf)
    b2[0] = 0x44  # IHL 4 (< 20 bytes)
    assert decap_6in4(b2, len(b2), REMOTE) == "bad IPv4 header"


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=120), st.integers(0, 120))
def test_decap_fuzz(data, n):
    buf = bytearray(data) + bytearray(120)
    n = min(n, len(data))
    r = decap_6in4(buf, n, REMOTE)
    if isinstance(r, str):
        assert r in ("not IPv4", "bad IPv4 header", "not protocol 41", "foreign source", "not IPv6 inside",
                     "truncated IPv6 packet")
    else:
        start, end = r
        assert 20 <= start and start + 40 <= end <= n
        assert buf[9] == 41 and bytes(buf[12:16]) == REMOTE and buf[start] >> 4 == 6


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=0, max_size=60), st.integers(0, 255), st.integers(0, 3))
def test_decap_fuzz_mutated_valid(junk, byte, pos_sel):
    data, _ = _pkt(inner=None)
    buf = bytearray(data)
    pos = (0, 2, 3, 24)[pos_sel]
    buf[pos] = byte
    buf += junk
    r = decap_6in4(buf, len(buf), REMOTE)
    if not isinstance(r, str):
        start, end = r
        assert start + 40 <= end <= len(buf)


# ---------------------------------------------------------------- choosing the plane

class FakeNetlink:
    def __init__(self, sit):
        self.sit = sit
        self.calls = []
        self.stats = None
        self.kind = None
        self.netns = None

    def sit_supported(self):
        return self.sit

    def link_kind(self, ifname):
        return self.kind

    def sit_create(self, *a):
        self.calls.append(("sit_create",) + a)
        self.kind = "sit"

    def sit_set_endpoints(self, *a):
        self.calls.append(("sit_set_endpoints",) + a)

    def link_up(self, ifname):
        self.calls.append(("link_up", ifname))

    def link_del(self, ifname):
        self.calls.append(("link_del", ifname))
        self.kind = None

    def link_stats(self, ifname):
        return self.stats


def test_choose_dataplane():
    assert choose_dataplane("auto", FakeNetlink(True)) == "kernel"
    assert choose_dataplane("auto", FakeNetlink(False)) == "userspace"
    assert choose_dataplane("kernel", FakeNetlink(True)) == "kernel"
    assert choose_dataplane("userspace", FakeNetlink(True)) == "userspace"
    with pytest.raises(ConfigError) as ei:
        choose_dataplane("kernel", FakeNetlink(False))
    assert ei.value.reason == ("this kernel has no sit (6in4) support: install kmod-sit or use dataplane "
                               "'userspace'")
    with pytest.raises(ConfigError):
        choose_dataplane("fast", FakeNetlink(True))
    assert isinstance(create_dataplane("auto", FakeNetlink(True), "t", None, "192.0.2.2"), KernelSixin4)
    assert isinstance(create_dataplane("auto", FakeNetlink(False), "t", None, "192.0.2.2"), UserspaceSixin4)


def test_kernel_plane_with_fake_netlink():
    nl = FakeNetlink(True)
    with pytest.raises(ValueError):
        KernelSixin4(nl, "t6", "192.0.2.300", "192.0.2.2")
    with pytest.raises(ValueError):
        KernelSixin4(nl, "t6", None, "192.0.2.2", ttl=256)
    p = KernelSixin4(nl, "t6", None, "192.0.2.2", ttl=64, tos=0, mtu=1480)
    assert p.kind == "kernel" and p.ifname == "t6"
    nl.kind = "sit"  # a stale one from a crash is replaced
    p.open()
    assert nl.calls == [("link_del", "t6"), ("sit_create", "t6", None, "192.0.2.2", 64, 0, 1480),
                        ("link_up", "t6")]
    nl.stats = {"tx_packets": 5, "tx_bytes": 500, "rx_packets": 2, "rx_bytes": 200, "rx_dropped": 1,
                "rx_errors": 0, "tx_errors": 0, "tx_dropped": 0}
    c = p.counters(now=10.0)
    assert (c["tx_packets"], c["rx_bytes"], c["rx_dropped"]) == (5, 200, 1)
    assert c["last_tx"] is None and c["last_rx"] is None  # nothing seen change yet
    nl.stats = dict(nl.stats, tx_packets=6)
    c = p.counters(now=11.0)
    assert c["last_tx"] == 11.0 and c["last_rx"] is None
    nl.stats = dict(nl.stats, rx_packets=3)
    c = p.counters(now=12.0)
    assert c["last_tx"] == 11.0 and c["last_rx"] == 12.0
    p.set_endpoints("192.0.2.1", "192.0.2.3")
    assert nl.calls[-1] == ("sit_set_endpoints", "t6", "192.0.2.1", "192.0.2.3")
    p.close()
    assert nl.calls[-1] == ("link_del", "t6")
    nl2 = FakeNetlink(True)
    nl2.kind = "veth"
    with pytest.raises(OSError):
        KernelSixin4(nl2, "eth0", None, "192.0.2.2").open()  # never delete a device not ours
    assert not [c for c in nl2.calls if c[0] == "link_del"]


# ------------------------------------------------------------- the real sit, under UML
