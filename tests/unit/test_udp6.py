# v6udpv4 data plane (cpe_tunnel/adapters/udp6.py).
#
# Lab tests: two namespaces joined by a veth, A (client: UserspaceUdp6 over a UDP socket
# connected to the broker, as a TSP session leaves it) and B (the broker side: an
# independent peer written here with a plain UDP socket and scapy, which decapsulates,
# answers ICMPv6 echo requests and re-encapsulates). `ping -6` in A goes through the
# TUN, our tx thread, the veth, the peer, back to our rx thread and the TUN.
# Every lab test runs for both packet paths: batched (sendmmsg/recvmmsg through ctypes)
# and plain (send/recv_into).

import select
import socket
import struct
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cpe_tunnel.adapters import udp6
from cpe_tunnel.adapters.netlink import Netlink, in_netns
from cpe_tunnel.adapters.udp6 import CONTROL, DROP_REASONS, UserspaceUdp6, classify_datagram
from cpe_tunnel.core import tsp
from tests.unit import nsutil
from tests.unit.nsutil import ip as _ip
from tests.unit.nsutil import open_fds as _open_fds
from tests.unit.nsutil import ping as _ping
from tests.unit.nsutil import tun_gone as _tun_gone
from tests.unit.nsutil import wait as _wait

A_IP, B_IP, B_IP2 = "192.0.2.1", "192.0.2.2", "192.0.2.3"
BPORT = 3653
TUN_ADDR, PEER6 = "2001:db8:1::2", "2001:db8:1::1"
CTL = b"\xf0\x00\x00\xf5" + b"\x00\x00\x01\x02" + b"Content-length: 0\r\n"

# (batched system calls?, forwarding threads)
_NO_MMSG = pytest.mark.skipif(udp6._MMSG is None, reason="no ctypes sendmmsg/recvmmsg here")
PATHS = [pytest.param(True, 2, id="batch-2threads", marks=_NO_MMSG),
         pytest.param(False, 1, id="plain-1thread"),
         pytest.param(True, 1, id="batch-1thread", marks=_NO_MMSG),
         pytest.param(False, 2, id="plain-2threads")]
PATHS2 = PATHS[:2]


def client_socket(ns, port=0):
    """The TSP session's socket as the daemon hands it over: bound, connected."""
    def make():
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((A_IP, port))
        s.connect((B_IP, BPORT))
        return s
    return in_netns(ns, make)


def _threads_gone():
    return nsutil.threads_gone("udp6-")


@pytest.fixture
def two_ns():
    with nsutil.two_ns("cptu6", (A_IP,), (B_IP, B_IP2)) as ab:
        yield ab


class Peer:
    """The broker's v6udpv4 end, independent of the code under test: a UDP socket on
    B_IP:3653; scapy decodes the IPv6 packet in each datagram and answers ICMPv6 echo
    requests (same IPv6 in UDP, to the datagram's source). Records what it saw."""

    def __init__(self, netns):
        from scapy.layers.inet6 import ICMPv6EchoReply, ICMPv6EchoRequest, IPv6

        self.IPv6, self.Req, self.Rep = IPv6, ICMPv6EchoRequest, ICMPv6EchoReply
        self.netns = netns
        self.sock = self._bind(B_IP)
        self.other = self._bind(B_IP2)  # a foreign source, same port
        self.seen = []  # (source address, datagram)
        self.requests = []  # source (addr, port) of echo requests answered
        self.replies = []  # source of echo replies received
        self._stop = False
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _bind(self, addr):
        def make():
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((addr, BPORT))
            return s
        return in_netns(self.netns, make)

    def _run(self):
        while not self._stop:
            r, _, _ = select.select([self.sock], [], [], 0.05)
            if not r:
                continue
            try:
                data, src = self.sock.recvfrom(65535)
            except OSError:
                continue
            self.seen.append((src, data))
            if not data or data[0] >> 4 != 6:
                continue
            pkt = self.IPv6(data)
            if pkt.haslayer(self.Rep):
                self.replies.append(src)
            if pkt.haslayer(self.Req):
                req = pkt[self.Req]
                rep = self.IPv6(src=pkt.dst, dst=pkt.src, hlim=64) / self.Rep(id=req.id, seq=req.seq,
                                                                               data=req.data)
                self.requests.append(src)
                self.sock.sendto(bytes(rep), src)

    def echo_request(self, seq=1, pad=b""):
        return bytes(self.IPv6(src=PEER6, dst=TUN_ADDR, hlim=64) / self.Req(id=0x4242, seq=seq,
                                                                            data=b"x" * 8)) + pad

    def close(self):
        self._stop = True
        self._t.join(2)
        self.sock.close()
        self.other.close()


def _setup_plane(a, sock, batch, threads, **kw):
    nl = Netlink(netns=a)
    plane = UserspaceUdp6("cptu6", sock, netlink=nl, netns=a, batch=batch, threads=threads, **kw)
    plane.open()
    nl.addr_add(plane.ifname, TUN_ADDR, 64, flags=("nodad",))
    return plane, nl


@pytest.mark.lab
@pytest.mark.parametrize("batch,threads", PATHS)
def test_ping_control_junk_and_close(two_ns, batch, threads):
    a, b = two_ns
    fds0 = _open_fds()
    peer = Peer(b)
    sock = client_socket(a)
    cport = sock.getsockname()[1]
    controls = []
    plane = nl = None
    try:
        plane, nl = _setup_plane(a, sock, batch, threads, mtu=1400, on_control=controls.append)
        assert plane.kind == "userspace" and plane.ifname == "cptu6" and plane.batch == batch
        names = sorted(t.name for t in threading.enumerate() if t.name.startswith("udp6-"))
        assert names == (["udp6-tx+rx-cptu6"] if threads == 1 else ["udp6-rx-cptu6", "udp6-tx-cptu6"])
        out = _ip(a, "link", "show", "cptu6").stdout
        assert "mtu 1400" in out and ",UP" in out

        res = _ping(a, PEER6)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "3 received" in res.stdout
        # the data rode the session's own 5-tuple
        assert peer.requests.count((A_IP, cport)) >= 3

        def enough(c):  # 40 + 8 + 56 bytes per echo
            return c["rx_packets"] >= 3 and c["rx_bytes"] >= 3 * 104 and c["tx_packets"] >= 3 and \
                c["tx_bytes"] >= 3 * 104
        assert _wait(lambda: enough(plane.counters()))
        c = plane.counters()
        assert c["last_tx"] is not None and c["last_rx"] is not None and c["last_rx"] <= time.monotonic()
        assert c["rx_dropped"] == 0 and c["rx_control"] == 0 and "error" not in c

        # a TSP control datagram goes to on_control, byte for byte, not to the TUN
        rx0 = c["rx_packets"]
        peer.sock.sendto(CTL, (A_IP, cport))
        assert _wait(lambda: controls == [CTL])
        assert plane.counters()["rx_control"] == 1

        # junk: dropped and counted by reason, nothing reaches the TUN
        v4 = bytes.fromhex("4500001c000040004011") + bytes(18)
        trunc = peer.echo_request()[:50]  # IPv6 payload length says 16, 10 bytes there
        big = peer.echo_request()[:4] + struct.pack(">H", 4960) + peer.echo_request()[6:40] + bytes(4960)
        for d in (v4, b"", b"\xf0\x00\x00", trunc, b"\x60\x00", big):
            peer.sock.sendto(d, (A_IP, cport))
        want = {"not IPv6": 2, "short control message": 1, "truncated IPv6 packet": 2,
                "datagram larger than the MTU": 1}
        assert _wait(lambda: plane.counters()["drops"] == want), plane.counters()["drops"]
        c = plane.counters()
        assert c["rx_dropped"] == 6 and c["rx_packets"] == rx0

        # a datagram from a foreign source never reaches the plane (connected socket) ...
        peer.other.sendto(peer.echo_request(seq=7), (A_IP, cport))
        time.sleep(0.2)
        assert plane.counters()["rx_packets"] == rx0 and not peer.replies
        # ... the same from the broker goes in, with trailing padding cut off: the client's
        # kernel answers it through the tunnel
        peer.sock.sendto(peer.echo_request(seq=8, pad=b"\0" * 5), (A_IP, cport))
        assert _wait(lambda: (A_IP, cport) in peer.replies)
        assert _wait(lambda: plane.counters()["rx_packets"] == rx0 + 1)
        assert plane.counters()["rx_bytes"] >= c["rx_bytes"] + 56  # 40 + 8 + 8, not + 5

        # send_control: a TSP message out on the session's socket
        n_seen = len(peer.seen)
        assert plane.send_control(CTL) is True
        assert _wait(lambda: (((A_IP, cport), CTL) in peer.seen[n_seen:]))
    finally:
        t = time.monotonic()
        if plane is not None:
            plane.close()
        took = time.monotonic() - t
        peer.close()
        if nl is not None:
            nl.close()
    assert took < 1.0
    assert _tun_gone(a, "cptu6")  # close() leaves no TUN behind ...
    assert _threads_gone()  # ... no thread ...
    assert sock.fileno() == -1  # ... closes the socket it was given ...
    assert _wait(lambda: _open_fds() == fds0)  # ... and every dup, pipe and the TUN fd
    plane.close()  # twice is fine
    with pytest.raises(OSError):
        plane.open()


@pytest.mark.lab
@pytest.mark.parametrize("batch,threads", PATHS)
def test_replace_socket_and_icmp_errors(two_ns, batch, threads):
    a, b = two_ns
    fds0 = _open_fds()
    peer = Peer(b)
    sock = client_socket(a)
    controls = []
    plane = nl = None
    try:
        plane, nl = _setup_plane(a, sock, batch, threads, on_control=controls.append)
        assert _ping(a, PEER6, count=1).returncode == 0

        # a new TSP session: new socket (new source port); the old one is closed
        sock2 = client_socket(a)
        port2 = sock2.getsockname()[1]
        plane.replace_socket(sock2)
        assert sock.fileno() == -1 and plane.sock is sock2
        n = len(peer.requests)
        res = _ping(a, PEER6)
        assert res.returncode == 0, res.stdout + res.stderr
        assert set(peer.requests[n:]) == {(A_IP, port2)}
        # control datagrams arrive on the new socket too
        peer.sock.sendto(CTL, (A_IP, port2))
        assert _wait(lambda: controls == [CTL])
        # twice quickly (the first handover may still be pending): nothing leaks
        sock3, sock4 = client_socket(a), client_socket(a)
        plane.replace_socket(sock3)
        plane.replace_socket(sock4)
        assert sock3.fileno() == -1
        port4 = sock4.getsockname()[1]
        n = len(peer.requests)
        assert _ping(a, PEER6, count=2).returncode == 0
        assert set(peer.requests[n:]) == {(A_IP, port4)}

        # the broker's port closes: ICMP port unreachable comes back on the connected
        # socket; it is counted, the threads live on
        peer.close()
        _ping(a, PEER6, count=3, wait=0.3)
        assert _wait(lambda: plane.counters()["drops"].get("broker port unreachable", 0) >= 1), \
            plane.counters()
        assert "error" not in plane.counters() and len([t for t in threading.enumerate()
                                                        if t.name.startswith("udp6-")]) == threads
        # and it comes back
        peer = Peer(b)
        res = _ping(a, PEER6, count=2)
        assert res.returncode == 0, res.stdout + res.stderr

        # bad arguments
        with pytest.raises(ValueError):
            plane.replace_socket(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))  # not connected
    finally:
        if plane is not None:
            plane.close()
        peer.close()
        if nl is not None:
            nl.close()
    assert sock4.fileno() == -1 and _tun_gone(a, "cptu6") and _threads_gone()
    assert _wait(lambda: _open_fds() == fds0)
    with pytest.raises(OSError):
        plane.replace_socket(client_socket(a))


@pytest.mark.lab
@pytest.mark.parametrize("batch,threads", PATHS)
def test_replace_socket_under_load(two_ns, batch, threads):
    """Sessions replaced again and again while echo requests stream in (and the kernel's
    replies stream out): traffic keeps flowing, nothing dies, nothing leaks."""
    a, b = two_ns
    fds0 = _open_fds()
    flood = in_netns(b, lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    flood.bind((B_IP, BPORT))
    flood.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the replies just overflow
    sock = client_socket(a)
    port = [sock.getsockname()[1]]
    plane, nl = _setup_plane(a, sock, batch, threads)
    from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6

    req = bytes(IPv6(src=PEER6, dst=TUN_ADDR) / ICMPv6EchoRequest(data=b"z" * 16))
    stop = []

    def run():
        deadline = time.monotonic() + 5.0
        for _ in range(200000):  # bounded in count and time
            if stop or time.monotonic() > deadline:
                break
            try:
                flood.sendto(req, (A_IP, port[0]))
            except OSError:
                pass

    t = threading.Thread(target=run, daemon=True)
    try:
        t.start()
        for _ in range(12):
            # traffic flows on the current socket (bounded wait) ...
            before = plane.counters()["rx_packets"]
            assert _wait(lambda b=before: plane.counters()["rx_packets"] > b + 10), plane.counters()
            # ... then a new session's socket takes over
            s = client_socket(a)
            plane.replace_socket(s)
            port[0] = s.getsockname()[1]
        before = plane.counters()["rx_packets"]
        assert _wait(lambda: plane.counters()["rx_packets"] > before + 10)
        c = plane.counters()
        stop.append(1)
        t.join(6)
        assert "error" not in c, c
        assert c["rx_packets"] > 100 and c["tx_packets"] > 100, c
    finally:
        stop.append(1)
        plane.close()
        nl.close()
        flood.close()
    assert _threads_gone() and _tun_gone(a, "cptu6")
    assert _wait(lambda: _open_fds() == fds0)


@pytest.mark.lab
@pytest.mark.parametrize("batch,threads", PATHS2)
def test_tx_drops_non_ipv6_and_no_route(two_ns, batch, threads):
    a, _b = two_ns
    sock = client_socket(a)
    plane, nl = _setup_plane(a, sock, batch, threads)
    try:
        # IPv4 routed into the TUN is not v6udpv4's business
        _ip(a, "addr", "add", "198.51.100.1/24", "dev", plane.ifname)

        def send4():
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                for _ in range(3):
                    s.sendto(b"x" * 20, ("198.51.100.2", 9))
            finally:
                s.close()
        in_netns(a, send4)
        assert _wait(lambda: plane.counters()["drops"].get("not IPv6 (from TUN)", 0) == 3), plane.counters()
        # the broker unreachable at the IPv4 level: sends fail and are counted
        _ip(a, "route", "add", "unreachable", B_IP + "/32")
        c0 = plane.counters()
        _ping(a, PEER6, count=2, wait=0.3)
        assert _wait(lambda: plane.counters()["drops"].get("no route to broker", 0) >= 2), plane.counters()
        c = plane.counters()
        assert c["tx_packets"] == c0["tx_packets"] and "error" not in c
    finally:
        plane.close()
        nl.close()
    assert _tun_gone(a, "cptu6")


@pytest.mark.lab
def test_failed_open_cleans_up(two_ns):
    a, _b = two_ns
    fds0 = _open_fds()

    class BadNetlink:
        def link_up(self, name):
            raise OSError(1, "no")

    sock = client_socket(a)
    plane = UserspaceUdp6("cptu6f", sock, netlink=BadNetlink(), netns=a)
    with pytest.raises(OSError):
        plane.open()
    assert _tun_gone(a, "cptu6f") and _threads_gone() and sock.fileno() == -1
    assert _open_fds() == fds0
    with pytest.raises(OSError, match="no socket"):
        plane.open()
    assert _tun_gone(a, "cptu6f") and _open_fds() == fds0
    plane.close()


@pytest.mark.lab
@pytest.mark.parametrize("batch,threads", PATHS2)
def test_rx_fuzz_through_the_plane(two_ns, batch, threads):
    """Hostile datagrams from the broker's 5-tuple, through the real rx thread: each one
    is either written to the TUN exactly (checked with a packet socket on the TUN),
    handed to on_control exactly, or dropped and counted. The thread never dies."""
    a, b = two_ns
    peer_sock = in_netns(b, lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    peer_sock.bind((B_IP, BPORT))
    sock = client_socket(a)
    cport = sock.getsockname()[1]
    controls = []
    plane, nl = _setup_plane(a, sock, batch, threads, on_control=controls.append)
    # protocol 0: the socket receives nothing until bind() names the TUN and ETH_P_ALL
    # (created with ETH_P_ALL it would queue packets from every interface, e.g. ARP on the
    # veth, in the moment before bind)
    cap = in_netns(a, lambda: socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, 0))
    try:
        cap.bind((plane.ifname, 3))  # ETH_P_ALL (host order here; Python swaps it)
        cap.settimeout(2.0)

        def total(c):
            return c["rx_packets"] + c["rx_dropped"] + c["rx_control"]

        def captured_in():
            while True:
                data, addr = cap.recvfrom(70000)
                if addr[2] != socket.PACKET_OUTGOING:
                    return data

        v6 = st.builds(lambda plen, body, extra: bytes([0x60, 0, 0, 0]) + struct.pack(">H", plen) +
                       bytes([59, 64]) + socket.inet_pton(socket.AF_INET6, PEER6) +
                       socket.inet_pton(socket.AF_INET6, TUN_ADDR) + body + extra,
                       st.integers(0, 80), st.binary(max_size=80), st.binary(max_size=8))

        @settings(max_examples=60, deadline=None)
        @given(st.one_of(st.binary(max_size=120), v6))
        def check(data):
            before = plane.counters()
            nctl = len(controls)
            peer_sock.sendto(data, (A_IP, cport))
            assert _wait(lambda: total(plane.counters()) == total(before) + 1), (data, plane.counters())
            after = plane.counters()
            r = classify_datagram(data, 0, len(data))
            if r > 0:
                assert after["rx_packets"] == before["rx_packets"] + 1
                assert captured_in() == data[:r]
            elif r == CONTROL:
                assert controls[nctl:] == [data]
            else:
                reason = DROP_REASONS[-r]
                assert after["drops"][reason] == before["drops"].get(reason, 0) + 1
            assert "error" not in after

        check()
    finally:
        cap.close()
        plane.close()
        nl.close()
        peer_sock.close()


# ------------------------------------------------------------- without namespaces

def test_constructor_checks():
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    unconnected = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    ok = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        ok.connect(("127.0.0.1", 9))
        with pytest.raises(ValueError, match="UDP socket"):
            UserspaceUdp6("t", tcp)
        with pytest.raises(ValueError, match="connected"):
            UserspaceUdp6("t", unconnected)
        with pytest.raises(ValueError, match="1280"):
            UserspaceUdp6("t", ok, mtu=1279)
        with pytest.raises(ValueError):
            UserspaceUdp6("t", ok, mtu=65536)
        for bad in (0, 3, None):
            with pytest.raises(ValueError):
                UserspaceUdp6("t", ok, threads=bad)
        p = UserspaceUdp6("t", ok, mtu=1280, batch=False)
        assert p.kind == "userspace" and p.batch is False and p.sock is ok
        c = p.counters()
        assert (c["tx_packets"], c["rx_packets"], c["rx_dropped"], c["drops"], c["last_rx"]) == \
            (0, 0, 0, {}, None)
        p.close()  # never opened: closes the socket it owns
        assert ok.fileno() == -1
    finally:
        for s in (tcp, unconnected, ok):
            s.close()


def test_classify_datagram_cases():
    from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6

    pkt = bytes(IPv6(src=PEER6, dst=TUN_ADDR) / ICMPv6EchoRequest(data=b"hello"))
    assert classify_datagram(pkt, 0, len(pkt)) == len(pkt)
    assert classify_datagram(pkt + b"pad", 0, len(pkt) + 3) == len(pkt)
    assert classify_datagram(b"zz" + pkt, 2, len(pkt)) == len(pkt)  # at an offset (batch slots)
    assert DROP_REASONS[-classify_datagram(pkt, 0, len(pkt) - 1)] == "truncated IPv6 packet"
    assert DROP_REASONS[-classify_datagram(pkt, 0, 39)] == "truncated IPv6 packet"
    assert classify_datagram(CTL, 0, len(CTL)) == CONTROL
    assert classify_datagram(CTL[:8], 0, 8) == CONTROL  # header only: an ack
    assert DROP_REASONS[-classify_datagram(CTL, 0, 7)] == "short control message"
    assert DROP_REASONS[-classify_datagram(b"", 0, 0)] == "not IPv6"
    assert DROP_REASONS[-classify_datagram(b"\x45" + bytes(40), 0, 41)] == "not IPv6"
    # 40 bytes of header and nothing else is a whole IPv6 packet (payload length 0)
    assert classify_datagram(pkt[:4] + b"\0\0" + pkt[6:40], 0, 40) == 40


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=100), st.integers(0, 8), st.integers(0, 100))
def test_classify_datagram_fuzz(data, off, n):
    buf = bytes(off) + data
    n = min(n, len(data))
    r = classify_datagram(buf, off, n)
    d = data[:n]
    # an independent statement of the rules, and agreement with the TSP core
    if n >= 40 and d[0] >> 4 == 6 and 40 + (d[4] << 8 | d[5]) <= n:
        assert r == 40 + (d[4] << 8 | d[5])
    elif n >= 8 and d[0] >> 4 == 0xF:
        assert r == CONTROL
    else:
        assert r < 0 and DROP_REASONS[-r]
    assert (r == CONTROL) == (tsp.classify(d) == "control")
    if r > 0:
        assert tsp.classify(d) == "data"


# -- the shared machinery (adapters/plane.py) as every plane uses it --------------------


def test_socket_error_reasons_per_plane():
    """One send_reason / recv_reason for all planes, each with its own names for the
    far end; the texts are the ones status output shows (never renamed)."""
    import errno

    from cpe_tunnel.adapters.ayiya_dp import UserspaceAyiya
    from cpe_tunnel.adapters.sixin4 import UserspaceSixin4
    from cpe_tunnel.adapters.v4v6 import UserspaceV4v6

    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect(("127.0.0.1", 9))  # nothing is sent: a connected socket for the constructor
    u = UserspaceUdp6("cptu6r", s)
    try:
        s6 = UserspaceSixin4("cptr", None, B_IP)
        v = UserspaceV4v6("cptr", None, "2001:db8::1")
        a = UserspaceAyiya("cptr", None, B_IP, "2001:db8::2", "2001:db8::1", "secret")
        for plane, refused, no_route in ((u, "broker port unreachable", "no route to broker"),
                                         (s6, "broker unreachable (ICMP)", "no route to broker"),
                                         (v, "broker unreachable (ICMPv6)", "no route to broker"),
                                         (a, "tunnel server port unreachable (ICMP)", "no route to tunnel server")):
            assert plane.send_reason(errno.ECONNREFUSED) == refused
            assert plane.recv_reason(errno.ECONNREFUSED) == refused
            for code in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN, errno.EADDRNOTAVAIL):
                assert plane.send_reason(code) == no_route
            assert plane.send_reason(errno.EMSGSIZE) == "packet too big for the WAN"
            assert plane.send_reason(errno.ENOBUFS) == plane.send_reason(errno.EAGAIN) == "send buffer full"
            assert plane.send_reason(errno.EPERM) == "blocked by firewall"
            assert plane.send_reason(errno.EIO) == "send error"
            assert plane.recv_reason(errno.EIO) == "socket read error"
        # an ICMP unreachable reported on receive: named for the 4in6 plane only
        assert v.recv_reason(errno.EHOSTUNREACH) == "broker unreachable (ICMPv6)"
        assert u.recv_reason(errno.EHOSTUNREACH) == "socket read error"
    finally:
        u.close()


def test_wait_writable_gives_up_when_the_plane_stops():
    from cpe_tunnel.adapters.plane import wait_writable

    class P:
        send_wait_ms = 5000
        _stopping = False

    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        a.setblocking(False)
        try:
            while True:
                a.send(b"x" * 512)
        except BlockingIOError:
            pass  # a's buffer is full (nobody reads b)
        p = P()
        threading.Timer(0.1, lambda: setattr(p, "_stopping", True)).start()
        t = time.monotonic()
        assert wait_writable(p, a) is False
        assert time.monotonic() - t < 3.0  # not the whole 5 s
        p._stopping = False
        p.send_wait_ms = 60
        assert wait_writable(p, a) is True  # timed out, not stopping: the caller retries once
        b.setblocking(False)
        try:
            while True:
                b.recv(1024)
        except BlockingIOError:
            pass  # drained: room again
        p.send_wait_ms = 5000
        t = time.monotonic()
        assert wait_writable(p, a) is True
        assert time.monotonic() - t < 2.0  # returned on room, not after the 5 s
    finally:
        a.close()
        b.close()
