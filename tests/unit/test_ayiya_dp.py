# AYIYA userspace data plane (cpe_tunnel/adapters/ayiya_dp.py).
#
# Without root: the forwarding code (_tx_drain / _rx_drain, the exact functions the
# threads run) driven with fake I/O and checked against the core codec
# (cpe_tunnel/core/ayiya.py) with hypothesis: same bytes out, same drop reasons.
#
# With root: two namespaces joined by a veth. A runs UserspaceAyiya (TUN with
# 2001:db8:2ff:1::2/64); B runs an AYIYA PoP written here from the draft
# (draft-massar-v6ops-ayiya), independent of the code under test: its own encoder and
# verifier (hashlib + struct), scapy for the inner ICMPv6. It answers echo requests
# forwarded to it. `ping -6 2001:db8:2ff:1::1` in A goes TUN -> tx thread -> veth ->
# PoP -> rx thread -> TUN.

import errno
import hashlib
import os
import select
import socket
import struct
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cpe_tunnel.adapters import ayiya_dp
from cpe_tunnel.adapters.ayiya_dp import HDR, UserspaceAyiya
from cpe_tunnel.adapters.netlink import Netlink, in_netns
from cpe_tunnel.core import ayiya
from tests.unit import nsutil
from tests.unit.nsutil import ip as _ip
from tests.unit.nsutil import open_fds as _open_fds
from tests.unit.nsutil import ping as _ping
from tests.unit.nsutil import tun_gone as _tun_gone
from tests.unit.nsutil import wait as _wait

A_IP, A_IP2 = "192.0.2.1", "192.0.2.11"
B_IP, B_IP2 = "192.0.2.2", "192.0.2.3"
CLIENT6, POP6 = "2001:db8:2ff:1::2", "2001:db8:2ff:1::1"
CLIENT_ID = socket.inet_pton(socket.AF_INET6, CLIENT6)
POP_ID = socket.inet_pton(socket.AF_INET6, POP6)
PASSWORD = "ayiyasecret123"
KEY = hashlib.sha1(PASSWORD.encode()).digest()
T0 = 1_790_000_000  # a fixed Unix time for the fake-I/O tests

# -- an independent AYIYA encoder / verifier, from the draft ---------------------------


def pop_sign(opcode, next_header, payload, epoch, identity=POP_ID, password=PASSWORD):
    """IDLen 4 / IDType 1 (16-byte integer identity), SigLen 5 / HshMth 2 (SHA-1),
    AutMth 1 (shared secret); SHA-1 over the datagram with SHA-1(password) in the
    signature field."""
    head = struct.pack("!BBBBL", 0x41, 0x52, 0x10 | opcode, next_header, epoch & 0xFFFFFFFF) + identity
    pw = hashlib.sha1(password.encode() if isinstance(password, str) else password).digest()
    sig = hashlib.sha1(head + pw + payload).digest()
    return head + sig + payload


def pop_verify(d, identity=CLIENT_ID, password=PASSWORD):
    """(opcode, next_header, epoch, payload) of an authentic datagram, else None."""
    if len(d) < 44 or d[0] != 0x41 or d[1] != 0x52 or d[2] >> 4 != 1 or d[8:24] != identity:
        return None
    pw = hashlib.sha1(password.encode()).digest()
    if hashlib.sha1(d[:24] + pw + d[44:]).digest() != d[24:44]:
        return None
    return d[2] & 15, d[3], struct.unpack("!L", d[4:8])[0], d[44:]


def ipv6_packet(payload_len, fill=b"\x00"):
    """A syntactically plausible IPv6 packet (version 6, payload length right)."""
    body = (fill * payload_len)[:payload_len]
    return struct.pack("!IHBB", 0x60000000, payload_len, 59, 64) + POP_ID + CLIENT_ID + body


def test_independent_encoder_matches_capture_style_vector():
    # our test encoder and the core must agree, or one of them is wrong
    p = ipv6_packet(8)
    assert pop_sign(1, 41, p, T0) == ayiya.ayiya_encode(POP_ID, 1, 41, p, T0, KEY)
    assert pop_verify(pop_sign(0, 59, b"", T0, identity=CLIENT_ID)) == (0, 59, T0, b"")


# -- construction ------------------------------------------------------------------------


def make_plane(**kw):
    args = dict(ifname="cptay%d", local_ipv4=A_IP, pop_ipv4=B_IP, identity16=CLIENT6,
                peer_identity16=POP6, password=PASSWORD)
    args.update(kw)
    return UserspaceAyiya(**args)


@pytest.mark.parametrize("kw, words", [
    (dict(local_ipv4="192.0.2"), "local endpoint"),
    (dict(pop_ipv4="2001:db8::1"), "tunnel server"),
    (dict(identity16="192.0.2.1"), "identity"),
    (dict(peer_identity16=b"short"), "PoP identity"),
    (dict(password=""), "password"),
    (dict(password=None), "password"),
    (dict(mtu=1279), "MTU"),
    (dict(mtu=70000), "MTU"),
    (dict(port=0), "port"),
    (dict(max_skew=-1), "max_skew"),
    (dict(on_control="nope"), "on_control"),
])
def test_constructor_rejects(kw, words):
    with pytest.raises(ValueError) as ei:
        make_plane(**kw)
    assert words in str(ei.value)


def test_no_secret_in_repr_or_counters():
    p = make_plane(identity16=CLIENT_ID, peer_identity16=POP_ID, password=b"hunter2-secret")
    text = repr(p) + repr(p.counters()) + repr(vars(p))
    assert "hunter2" not in text
    assert hashlib.sha1(b"hunter2-secret").hexdigest() not in text
    c = p.counters()
    assert (c["tx_packets"], c["rx_packets"], c["rx_dropped"], c["drops"]) == (0, 0, 0, {})
    assert p.kind == "userspace" and p.protocol == "ayiya"
    assert p.local_address() is None
    with pytest.raises(OSError):
        p.send_control(ayiya.OP_NOOP)
    with pytest.raises(ValueError):
        p.send_control(8)


# -- the forwarding code with fake I/O ---------------------------------------------------


class FakeSock:
    def __init__(self, incoming=(), fail=None):
        self.incoming = list(incoming)
        self.sent = []
        self.fail = fail  # errno to raise on send

    def fileno(self):
        return -1

    def recv_into(self, buf):
        if not self.incoming:
            raise BlockingIOError(errno.EAGAIN, "empty")
        d = self.incoming.pop(0)
        if isinstance(d, int):
            raise OSError(d, os.strerror(d))
        n = min(len(d), len(buf))
        buf[:n] = d[:n]
        return n

    def send(self, data):
        if self.fail is not None:
            raise OSError(self.fail, os.strerror(self.fail))
        self.sent.append(bytes(data))
        return len(data)


class FakeClock:
    """Unix time advancing `step` seconds per read."""

    def __init__(self, t, step=0.0):
        self.t = t
        self.step = step

    def __call__(self):
        t = self.t
        self.t += self.step
        return t


PATHS = ["plain", "mmsg"] if ayiya_dp.HAVE_MMSG else ["plain"]


def fake_readinto(queue):
    """FileIO.readinto of the TUN: copies what fits, returns the packet's whole length
    (as the TUN driver does when the buffer is too small), None when empty."""
    def readinto(b):
        if not queue:
            return None
        p = queue.pop(0)
        n = min(len(p), len(b))
        b[:n] = p[:n]
        return len(p)
    return readinto


def run_tx(plane, packets, clock, path, fail=None):
    """Feed packets as TUN reads into the tx drain of `path`; returns (status, what
    went to the socket)."""
    readinto = fake_readinto(list(packets))
    sock = plane._sock = FakeSock(fail=fail)
    if path == "plain":
        buf = bytearray(ayiya_dp.BUFSIZE)
        mv = memoryview(buf)
        return plane._tx_drain(readinto, buf, mv, clock=clock), sock.sent
    import ctypes

    ring = ayiya_dp._Ring(plane.cap)

    def sendmmsg(sfd, addr, k, flags):
        assert sfd == -1 and flags == 0 and 1 <= k <= ayiya_dp.BATCH
        first = (addr - ring.addr) // ring.msg_size
        assert 0 <= first and first + k <= ayiya_dp.BATCH
        if fail is not None:
            ctypes.set_errno(fail)
            return -1
        for j in range(first, first + k):
            # what the kernel would read: the iovec as the ctypes structures say
            iov = ring.iov[j]
            sock.sent.append(ctypes.string_at(iov.base, iov.len))
        return k

    return plane._tx_drain_mm(readinto, ring, sendmmsg=sendmmsg, clock=clock), sock.sent


def run_rx(plane, datagrams, clock, path, batches=-1):
    """Feed datagrams to the rx drain of `path`; returns (status, written, sock)."""
    sock = plane._sock = FakeSock(datagrams)
    written = []

    def write(b):  # FileIO.write of the TUN
        written.append(bytes(b))
        return len(b)

    if path == "plain":
        buf = bytearray(ayiya_dp.BUFSIZE)
        return plane._rx_drain(sock, write, buf, memoryview(buf), batches=batches,
                               clock=clock), written, sock
    import ctypes

    ring = ayiya_dp._Ring(plane.cap)

    def recvmmsg(sfd, addr, vlen, flags, timeout):
        assert sfd == -1 and addr == ring.addr and vlen == ayiya_dp.BATCH and timeout is None
        assert flags & ayiya_dp.MSG_DONTWAIT
        if not sock.incoming:
            ctypes.set_errno(errno.EAGAIN)
            return -1
        if isinstance(sock.incoming[0], int):
            ctypes.set_errno(sock.incoming.pop(0))
            return -1
        i = 0
        while i < vlen and sock.incoming and not isinstance(sock.incoming[0], int):
            d = sock.incoming.pop(0)
            iov = ring.iov[i]
            n = min(len(d), iov.len)
            ctypes.memmove(iov.base, d, n)
            ring.msgs[i].len = n
            i += 1
        return i

    return plane._rx_drain_mm(sock, write, ring, batches=batches, recvmmsg=recvmmsg,
                              clock=clock), written, sock


tun_packets = st.one_of(
    st.builds(lambda n, b: ipv6_packet(n, b), st.integers(0, 1500), st.binary(min_size=1, max_size=3)),
    st.binary(min_size=1, max_size=200),  # mostly not IPv6
)


@pytest.mark.parametrize("path", PATHS)
@settings(max_examples=120, deadline=None)
@given(packets=st.lists(tun_packets, max_size=3 * ayiya_dp.BATCH + 5), t=st.integers(0, 2**32 + 5),
       step=st.sampled_from([0.0, 0.01, 0.4]))
def test_tx_drain_equals_core_seal(path, packets, t, step):
    plane = make_plane()
    status, sent = run_tx(plane, packets, FakeClock(t + 0.5, step), path)
    assert status == ayiya_dp.EMPTY
    good = [(i, p) for i, p in enumerate(packets) if len(p) >= 40 and p[0] >> 4 == 6 and len(p) <= 1500]
    assert len(sent) == len(good)
    assert plane.tx_packets == len(good) and plane.tx_bytes == sum(len(p) for _, p in good)
    drops = {}
    for p in packets:
        if len(p) > 1500:
            drops["packet bigger than the tunnel MTU"] = drops.get("packet bigger than the tunnel MTU", 0) + 1
        elif len(p) < 40 or p[0] >> 4 != 6:
            drops["not IPv6 (from TUN)"] = drops.get("not IPv6 (from TUN)", 0) + 1
    assert plane.counters()["drops"] == drops
    # the clock is read once per batch of BATCH reads: every datagram carries the epoch
    # of its batch and is byte-identical to the core's encoding with that epoch
    for d, (i, p) in zip(sent, good):
        epoch = int(t + 0.5 + (i // ayiya_dp.BATCH) * step) & 0xFFFFFFFF
        assert d == ayiya.ayiya_encode(CLIENT_ID, ayiya.OP_FORWARD, 41, p, epoch, KEY)
        assert pop_verify(d) == (1, 41, epoch, p)


@pytest.mark.parametrize("path", PATHS)
def test_tx_send_errors_counted_not_fatal(path):
    plane = make_plane()
    status, sent = run_tx(plane, [ipv6_packet(10), ipv6_packet(20)], FakeClock(T0), path,
                          fail=errno.ECONNREFUSED)
    assert status == ayiya_dp.EMPTY and sent == []
    assert plane.tx_packets == 0 and plane.tx_bytes == 0
    assert plane.counters()["drops"] == {"tunnel server port unreachable (ICMP)": 2}


def expected_rx(datagrams, wall, max_skew=120, cap=1500):
    """What the core says should happen to each datagram: ('deliver', payload),
    ('drop', code), ('echo', payload), ('echo+deliver', payload), ('control', None)."""
    out = []
    for d in datagrams:
        if len(d) > HDR + cap:
            out.append(("drop", "datagram bigger than the tunnel MTU"))
            continue
        try:
            op, nh, payload, _ = ayiya.ayiya_decode(d, KEY, wall, max_skew, POP_ID)
        except ayiya.AyiyaError as e:
            out.append(("drop", e.code))
            continue
        payload = bytes(payload)
        if op in (1, 3):
            if nh != 41:
                out.append(("drop", "unsupported next header"))
                continue
            if len(payload) < 40 or payload[0] >> 4 != 6:
                out.append(("drop", "bad payload"))
                continue
        out.append({1: ("deliver", payload), 2: ("echo", payload), 3: ("echo+deliver", payload)}.get(
            op, ("control", None)))
    return out


def mutate(d, how, pos, val):
    d = bytearray(d)
    if how == "flip" and d:
        d[pos % len(d)] ^= val or 1
    elif how == "truncate":
        d = d[:pos % (len(d) + 1)]
    elif how == "byte" and d:
        d[pos % min(len(d), 44)] = val
    return bytes(d)


@st.composite
def rx_datagrams(draw):
    """Mostly authentic forwards, plus control opcodes, wrong keys, foreign identities,
    skewed times, oversize, and mutations of all of them."""
    kind = draw(st.sampled_from(["fwd", "fwd", "fwd", "ctl", "badkey", "foreign", "skew", "junk",
                                 "nh", "big"]))
    payload = ipv6_packet(draw(st.integers(0, 300)), draw(st.binary(min_size=1, max_size=2)))
    epoch = T0 + draw(st.integers(-3, 3))
    if kind == "junk":
        return draw(st.binary(max_size=120))
    if kind == "ctl":
        d = pop_sign(draw(st.integers(0, 7)), draw(st.sampled_from([59, 41])),
                     draw(st.sampled_from([b"", payload, b"motd text"])), epoch)
    elif kind == "badkey":
        d = pop_sign(1, 41, payload, epoch, password="wrong")
    elif kind == "foreign":
        d = pop_sign(1, 41, payload, epoch, identity=CLIENT_ID)
    elif kind == "skew":
        d = pop_sign(1, 41, payload, T0 + draw(st.sampled_from([-121, 121, -120, 120, 2**31, -2**31])))
    elif kind == "nh":
        d = pop_sign(1, draw(st.sampled_from([4, 59, 0])), payload, epoch)
    elif kind == "big":  # around the 1500-byte inner limit (and past the buffers)
        d = pop_sign(1, 41, ipv6_packet(draw(st.sampled_from([1459, 1460, 1461, 1600, 3000]))), epoch)
    else:
        d = pop_sign(1, 41, payload, epoch)
    how = draw(st.sampled_from(["none", "none", "none", "flip", "truncate", "byte"]))
    return mutate(d, how, draw(st.integers(0, 400)), draw(st.integers(0, 255)))


@pytest.mark.parametrize("path", PATHS)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(datagrams=st.lists(rx_datagrams(), max_size=2 * ayiya_dp.BATCH + 3))
def test_rx_drain_equals_core_decode(path, datagrams):
    controls = []
    plane = make_plane(on_control=controls.append)
    status, written, sock = run_rx(plane, datagrams, FakeClock(T0 + 0.25), path)
    assert status == ayiya_dp.EMPTY
    exp = expected_rx(datagrams, T0 + 0.25)
    delivered = [p for k, p in exp if k in ("deliver", "echo+deliver")]
    assert written == delivered
    drops = {}
    for k, code in exp:
        if k == "drop":
            drops[code] = drops.get(code, 0) + 1
    c = plane.counters()
    assert c["drops"] == drops and c["rx_dropped"] == sum(drops.values())
    assert c["rx_packets"] == len(delivered) and c["rx_bytes"] == sum(map(len, delivered))
    # control datagrams go whole to on_control; echo requests are answered instead
    assert controls == [d for d, (k, _) in zip(datagrams, exp) if k == "control"]
    echoes = [p for k, p in exp if k in ("echo", "echo+deliver")]
    assert len(sock.sent) == len(echoes) == c["echo_answered"]
    for d, p in zip(sock.sent, echoes):
        v = pop_verify(d)
        assert v is not None and v[0] == ayiya.OP_ECHO_RESPONSE and v[3] == p
    assert c["control_rx"] == len(controls) + len(echoes)


@pytest.mark.parametrize("path", PATHS)
def test_rx_fast_path_epoch_cache_and_window(path):
    """The cached SHA-1 state per epoch must never accept a datagram signed for a
    different epoch, and the window edges are the core's (±max_skew inclusive)."""
    plane = make_plane(max_skew=120)
    p = ipv6_packet(16)
    good1 = pop_sign(1, 41, p, T0)
    good2 = pop_sign(1, 41, p, T0 + 1)
    forged = bytearray(good1)
    forged[4:8] = struct.pack("!L", T0 + 1)  # epoch changed, signature of T0 kept
    edge = [pop_sign(1, 41, p, T0 + d) for d in (-120, 120, -121, 121)]
    _, written, _ = run_rx(plane, [good1, bytes(forged), good2, bytes(forged), good1] + edge,
                           FakeClock(T0), path)
    assert len(written) == 5
    assert plane.counters()["drops"] == {"bad signature": 2, "stale timestamp": 2}
    assert plane.peer_skew == 121  # the stale one (a clock problem) is what counts
    # forwards alone also tell the PoP's clock offset
    plane = make_plane()
    run_rx(plane, [pop_sign(1, 41, p, T0 + 3)] * 3, FakeClock(T0 + 0.5), path)
    assert plane.peer_skew == 3 and plane.counters()["peer_skew"] == 3


@pytest.mark.parametrize("path", PATHS)
def test_rx_socket_errors_and_batches(path):
    plane = make_plane()
    good = pop_sign(1, 41, ipv6_packet(8), T0)
    status, written, _ = run_rx(plane, [errno.ECONNREFUSED, good], FakeClock(T0), path)
    assert status == ayiya_dp.EMPTY and len(written) == 1
    assert plane.counters()["drops"] == {"tunnel server port unreachable (ICMP)": 1}

    # a broken on_control handler is counted and does not stop forwarding
    def boom(_d):
        raise RuntimeError("x")

    plane = make_plane(on_control=boom)
    _, written, _ = run_rx(plane, [pop_sign(0, 59, b"", T0), good], FakeClock(T0), path)
    assert len(written) == 1 and plane.counters()["drops"] == {"control handler error": 1}

    # a bounded drain (one thread serving both directions) stops after its batches
    plane = make_plane()
    status, written, sock = run_rx(plane, [good] * (2 * ayiya_dp.BATCH + 1), FakeClock(T0), path,
                                   batches=1)
    assert status == ayiya_dp.MORE and len(written) == ayiya_dp.BATCH
    assert len(sock.incoming) == ayiya_dp.BATCH + 1


def _capture_datagrams():
    """(src ip, sport, AYIYA datagram) from the real AICCU <-> sixxsd capture."""
    from scapy.layers.inet import IP, UDP
    from scapy.utils import rdpcap

    from tests.captures import CAPTURES

    path = os.path.join(CAPTURES, "aiccu-ayiya.pcap")
    if not os.path.exists(path):
        pytest.skip("SixXS captures not present")
    return [(p[IP].src, p[UDP].sport, bytes(p[UDP].payload)) for p in rdpcap(path)
            if UDP in p and ayiya.PORT in (p[UDP].sport, p[UDP].dport)]


@pytest.mark.parametrize("path", PATHS)
def test_real_aiccu_and_sixxsd_datagrams(path):
    """Against the capture (tunnel T5072, same addresses and password as here): every
    forward AICCU sent is what our tx path makes from its inner packet at its epoch,
    byte for byte; every datagram sixxsd sent is accepted by our rx path at its epoch
    (forwards delivered, others to on_control or answered)."""
    dgrams = _capture_datagrams()
    from_pop = [d for src, sport, d in dgrams if sport == ayiya.PORT and d[8:24] == POP_ID]
    from_client = [d for src, sport, d in dgrams if d[8:24] == CLIENT_ID]
    fwd_client = [d for d in from_client if d[2] & 15 == ayiya.OP_FORWARD]
    assert fwd_client and from_pop
    for d in fwd_client:
        epoch = struct.unpack("!L", d[4:8])[0]
        _, sent = run_tx(make_plane(), [d[HDR:]], FakeClock(epoch + 0.5), path)
        assert sent == [d]
    for d in from_pop:
        epoch = struct.unpack("!L", d[4:8])[0]
        controls = []
        plane = make_plane(on_control=controls.append)
        _, written, sock = run_rx(plane, [d], FakeClock(epoch + 0.5), path)
        op = d[2] & 15
        assert plane.counters()["rx_dropped"] == 0
        if op == ayiya.OP_FORWARD:
            assert written == [d[HDR:]]
        elif op in (ayiya.OP_ECHO_REQUEST, ayiya.OP_ECHO_REQUEST_FORWARD):
            assert len(sock.sent) == 1
        else:
            assert controls == [d]


# -- in namespaces -----------------------------------------------------------------------


@pytest.fixture
def two_ns():
    with nsutil.two_ns("cptay", (A_IP, A_IP2), (B_IP, B_IP2)) as ab:
        yield ab


class Pop:
    """The PoP side, independent of the code under test: UDP 5072 on both of B's
    addresses, verifies every datagram with pop_verify(), answers ICMPv6 echo requests
    forwarded to it (scapy builds the reply) with a signed forward, and records
    (opcode, client address, PoP address, epoch, payload) of everything authentic."""

    def __init__(self, netns, addrs=(B_IP, B_IP2)):
        from scapy.layers.inet6 import ICMPv6EchoReply, ICMPv6EchoRequest, IPv6

        self.IPv6, self.Req, self.Rep = IPv6, ICMPv6EchoRequest, ICMPv6EchoReply
        self.socks = {}
        for a in addrs:
            def make(a=a):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.bind((a, ayiya.PORT))
                return s
            self.socks[a] = in_netns(netns, make)
        self.seen = []
        self.rejected = 0
        self._stop = False
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        by_fd = {s.fileno(): (a, s) for a, s in self.socks.items()}
        while not self._stop:
            r, _, _ = select.select(list(self.socks.values()), [], [], 0.1)
            for s in r:
                a, s = by_fd[s.fileno()]
                data, src = s.recvfrom(65535)
                v = pop_verify(data)
                if v is None:
                    self.rejected += 1
                    continue
                op, nh, epoch, payload = v
                self.seen.append((op, src, a, epoch, payload))
                if op != 1 or nh != 41:
                    continue
                inner = self.IPv6(payload)
                if inner.haslayer(self.Req) and inner.dst == POP6:
                    req = inner[self.Req]
                    rep = self.IPv6(src=POP6, dst=inner.src, hlim=64) / self.Rep(id=req.id, seq=req.seq,
                                                                                 data=req.data)
                    s.sendto(pop_sign(1, 41, bytes(rep), int(time.time())), src)

    def forwards(self, client, pop):
        return [x for x in self.seen if x[0] == 1 and x[1][0] == client and x[2] == pop]

    def send(self, pop_addr, client_addr, datagram):
        self.socks[pop_addr].sendto(datagram, client_addr)

    def echo_request(self, epoch=None, **kw):
        """A signed forward carrying an ICMPv6 echo request for the client."""
        pkt = self.IPv6(src=POP6, dst=CLIENT6, hlim=64) / self.Req(id=0x4242, seq=7, data=b"y" * 8)
        return pop_sign(1, 41, bytes(pkt), int(time.time()) if epoch is None else epoch, **kw)

    def close(self):
        self._stop = True
        self._t.join(2)
        for s in self.socks.values():
            s.close()


@pytest.mark.lab
@pytest.mark.parametrize("path", PATHS)
def test_ping_through_ayiya_tunnel(two_ns, path):
    a, b = two_ns
    pop = Pop(b)
    nl = Netlink(netns=a)
    controls = []
    fds_before = _open_fds()
    threads_before = set(threading.enumerate())
    plane = UserspaceAyiya("cptay0", A_IP, B_IP, CLIENT6, POP6, PASSWORD, mtu=1280, netlink=nl,
                           netns=a, on_control=controls.append, batch_io=(path == "mmsg"))
    assert plane.batch_io == (path == "mmsg")
    try:
        plane.open()
        assert plane.ifname == "cptay0"
        out = _ip(a, "link", "show", "cptay0").stdout
        assert "mtu 1280" in out and ",UP" in out
        assert plane.local_address()[0] == A_IP
        nl.addr_add("cptay0", CLIENT6, 64, flags=("nodad",))

        res = _ping(a, POP6)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "3 received" in res.stdout
        assert len(pop.forwards(A_IP, B_IP)) >= 3  # signed, verified by the independent PoP
        assert pop.rejected == 0
        now = int(time.time())
        assert all(abs(x[3] - now) <= 5 for x in pop.seen)

        def enough(c):  # 40 + 8 + 56 bytes per echo
            return c["rx_packets"] >= 3 and c["rx_bytes"] >= 3 * 104 and c["tx_packets"] >= 3 and \
                c["tx_bytes"] >= 3 * 104

        assert _wait(lambda: enough(plane.counters()))
        c = plane.counters()
        assert c["rx_dropped"] == 0 and c["last_rx"] is not None and c["last_tx"] is not None
        client = (A_IP, plane.local_address()[1])

        # wrong signature, stale time, foreign identity: dropped and counted ...
        rx0 = c["rx_packets"]
        good = pop.echo_request()
        pop.send(B_IP, client, pop.echo_request(password="not-the-password"))
        pop.send(B_IP, client, pop.echo_request(epoch=int(time.time()) - 600))
        pop.send(B_IP, client, pop.echo_request(identity=CLIENT_ID))
        assert _wait(lambda: plane.counters()["rx_dropped"] == 3)
        c = plane.counters()
        assert c["drops"] == {"bad signature": 1, "stale timestamp": 1, "foreign identity": 1}
        assert c["rx_packets"] == rx0
        assert c["peer_skew"] is not None and -610 <= c["peer_skew"] <= -590
        n_fwd = len(pop.forwards(A_IP, B_IP))
        # ... while an authentic one goes in: A's kernel answers through the tunnel
        pop.send(B_IP, client, good)
        assert _wait(lambda: len(pop.forwards(A_IP, B_IP)) == n_fwd + 1)
        assert plane.counters()["rx_packets"] == rx0 + 1

        # echo request from the PoP: answered by the plane with the same payload
        pop.send(B_IP, client, pop_sign(ayiya.OP_ECHO_REQUEST, 59, b"ping-data", int(time.time())))
        assert _wait(lambda: any(x[0] == ayiya.OP_ECHO_RESPONSE and x[4] == b"ping-data" for x in pop.seen))
        # a beat and a MOTD go to on_control, whole
        beat = pop_sign(ayiya.OP_NOOP, 59, b"", int(time.time()))
        motd = pop_sign(ayiya.OP_MOTD, 59, b"hello from the PoP", int(time.time()))
        pop.send(B_IP, client, beat)
        pop.send(B_IP, client, motd)
        assert _wait(lambda: len(controls) == 2)
        assert controls == [beat, motd]
        c = plane.counters()
        assert c["echo_answered"] == 1 and c["control_rx"] == 3

        # send_control: a beat the PoP verifies, stamped now
        assert plane.send_control(ayiya.OP_NOOP) is True
        assert _wait(lambda: any(x[0] == ayiya.OP_NOOP for x in pop.seen))
        beat_seen = [x for x in pop.seen if x[0] == ayiya.OP_NOOP][0]
        assert abs(beat_seen[3] - time.time()) <= 2 and beat_seen[2] == B_IP
        assert plane.counters()["control_tx"] == 1

        # set_endpoints: the PoP moved (same local): re-connected socket
        plane.set_endpoints(A_IP, B_IP2)
        res = _ping(a, POP6, count=2)
        assert res.returncode == 0, res.stdout + res.stderr
        assert len(pop.forwards(A_IP, B_IP2)) >= 2
        # packets from the old PoP address are no longer taken (connected socket)
        rx1 = plane.counters()["rx_packets"]
        pop.send(B_IP, client, pop.echo_request())
        time.sleep(0.3)
        assert plane.counters()["rx_packets"] == rx1
        # our WAN address changed: a fresh socket bound to the new address
        plane.set_endpoints(A_IP2, B_IP2)
        assert plane.local_address()[0] == A_IP2
        res = _ping(a, POP6, count=2)
        assert res.returncode == 0, res.stdout + res.stderr
        assert len(pop.forwards(A_IP2, B_IP2)) >= 2
        assert plane.error is None
    finally:
        plane.close()
        nl.close()
        pop.close()
    # close leaves nothing: TUN gone, threads gone, no fd left open
    assert _tun_gone(a, "cptay0")
    assert _wait(lambda: set(threading.enumerate()) <= threads_before, 2)
    assert _open_fds() <= fds_before
    assert plane.error is None


@pytest.mark.lab
def test_close_is_prompt_under_load_and_idempotent(two_ns):
    """close() stops both threads quickly while traffic flows (bounded flood)."""
    a, b = two_ns
    pop = Pop(b)
    plane = UserspaceAyiya("cptay1", None, B_IP, CLIENT6, POP6, PASSWORD, netns=a, netlink=Netlink(netns=a))
    try:
        plane.open()
        plane.netlink.addr_add("cptay1", CLIENT6, 64, flags=("nodad",))
        client = (A_IP, plane.local_address()[1])
        flood = pop.echo_request()
        for _ in range(2000):
            pop.send(B_IP, client, flood)
        t0 = time.monotonic()
        plane.close()
        assert time.monotonic() - t0 < 1.5
        assert plane.counters()["rx_packets"] > 0
        plane.close()  # twice is fine
        assert _tun_gone(a, "cptay1")
    finally:
        plane.close()
        plane.netlink.close()
        pop.close()


@pytest.mark.lab
def test_no_route_at_start_then_wan_up(two_ns):
    """The PoP is unreachable when the plane opens (no route: WAN not up yet): open()
    still works, sends are counted as 'no route', and once the route appears the
    plane connects by itself and traffic flows."""
    a, b = two_ns
    far = "198.51.100.1"
    _ip(b, "addr", "add", far + "/24", "dev", "pop")
    pop = Pop(b, addrs=(far,))
    nl = Netlink(netns=a)
    plane = UserspaceAyiya("cptay2", A_IP, far, CLIENT6, POP6, PASSWORD, netlink=nl, netns=a)
    try:
        plane.open()
        nl.addr_add("cptay2", CLIENT6, 64, flags=("nodad",))
        assert plane.send_control(ayiya.OP_NOOP) is False
        res = _ping(a, POP6, count=1)
        assert res.returncode != 0
        assert _wait(lambda: plane.counters()["drops"].get("no route to tunnel server", 0) >= 2)
        assert pop.seen == []
        _ip(a, "route", "add", "198.51.100.0/24", "dev", "wan")
        # nobody calls set_endpoints: the tx thread retries the connect itself (once
        # a second) when sends fail; the first echoes may still go nowhere
        _ping(a, POP6, count=4)
        assert _wait(lambda: len(pop.forwards(A_IP, far)) >= 1, 3)
        res = _ping(a, POP6, count=2)
        assert res.returncode == 0, res.stdout + res.stderr
        assert plane.error is None
    finally:
        plane.close()
        nl.close()
        pop.close()
