"""Hypothesis fuzzing of the SixXS codecs and the TIC client: hostile AYIYA datagrams,
heartbeats and TIC lines give a value or a RemoteProtocolError (with a drop code where
the API promises one), never anything else; sessions never raise on network input."""

import binascii

import test_ayiya
import test_heartbeat
import test_tic
from hypothesis import given, settings
from hypothesis import strategies as st

from cpe_tunnel.core import addr, ayiya, heartbeat, tic
from cpe_tunnel.core.errors import RemoteProtocolError

KEY = ayiya.password_hash("ayiyasecret123")
CLIENT = addr.ip6_aton("2001:db8:2ff:1::2")
POP = addr.ip6_aton("2001:db8:2ff:1::1")
CAPTURED = [(t, binascii.unhexlify(h)) for d, t, h in test_ayiya.VECTORS]
T0 = CAPTURED[0][0]


@st.composite
def mutated(draw, base):
    """A valid message with a few bytes changed, cut or extended."""
    b = bytearray(base)
    for _ in range(draw(st.integers(0, 4))):
        if b:
            i = draw(st.integers(0, len(b) - 1))
            b[i] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(b)))
    b = b[:cut] + draw(st.binary(max_size=24))
    return bytes(b)


captured_pkt = st.sampled_from([p for t, p in CAPTURED])
ayiya_input = st.one_of(st.binary(max_size=120), captured_pkt.flatmap(mutated))


@settings(max_examples=500, deadline=None)
@given(ayiya_input, st.integers(0, 0xFFFFFFFF), st.sampled_from([None, CLIENT, POP]))
def test_fuzz_ayiya_decode(data, now, ident):
    for pkt in (data, bytearray(data), memoryview(data)):
        try:
            op, nh, payload, _epoch = ayiya.ayiya_decode(pkt, KEY, now, 120, ident)
        except ayiya.AyiyaError as e:
            assert isinstance(e, RemoteProtocolError) and e.code in ayiya.DROP_REASONS
            continue
        assert 0 <= op <= 7 and 0 <= nh <= 255 and len(payload) == len(data) - 44
        # only authentic packets pass: it must be one of the captured ones, unchanged
        assert bytes(data) in [p for t, p in CAPTURED]
        try:
            ayiya.ayiya_header(pkt)
        except ayiya.AyiyaError:
            assert False, "decode accepted what the header check refuses"


@settings(max_examples=300, deadline=None)
@given(captured_pkt, st.integers(0, 43), st.integers(0, 255))
def test_any_change_to_a_captured_packet_is_refused(p, i, val):
    # changing a single byte of header, identity or signature never passes
    b = bytearray(p)
    if b[i] == val:
        return
    b[i] = val
    try:
        ayiya.ayiya_decode(bytes(b), KEY, T0, 10 ** 10)
    except ayiya.AyiyaError as e:
        assert e.code != "stale timestamp"
        return
    assert False, "accepted a modified packet"


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=16, max_size=16), st.integers(0, 7), st.integers(0, 255),
       st.binary(max_size=300), st.integers(0, 0xFFFFFFFF), st.binary(min_size=1, max_size=40),
       st.booleans())
def test_ayiya_round_trip(ident, op, nh, payload, epoch, password, into_buf):
    key = ayiya.password_hash(password)
    buf = bytearray(400) if into_buf else None
    pkt = ayiya.ayiya_encode(ident, op, nh, payload, epoch, key, buf)
    pkt = bytes(pkt)
    assert len(pkt) == 44 + len(payload)
    o, n, pl, e = ayiya.ayiya_decode(pkt, key, epoch, 0, ident)
    assert (o, n, bytes(pl), e) == (op, nh, payload, epoch)
    assert ayiya.ayiya_header(pkt) == (op, nh, epoch, ident)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(ayiya_input, st.floats(-1e4, 1e4, allow_nan=False)), max_size=20))
def test_ayiya_session_never_raises_and_counts_everything(stream):
    s = ayiya.AyiyaSession(CLIENT, POP, "ayiyasecret123", 30)
    now = 0.0
    for data, dt in stream:
        now += 1.0
        out = s.receive(data, now, T0 + dt)
        assert out is None or isinstance(out, memoryview)
        s.handle_timer(now, T0 + dt)
    st_ = s.status(now)
    assert st_["rx_packets"] + st_["drops_total"] == len(stream)
    for code in st_["drops"]:
        assert code in ayiya.DROP_REASONS
    s.events()
    s.datagrams_to_send()


# -- heartbeat ------------------------------------------------------------------------

hb_words = st.sampled_from([b"HEARTBEAT", b"TUNNEL", b"2001:db8:2ff:2::2", b"sender",
                            b"192.0.2.2", b"1795381916", b"46c0ca8d10f1bea9835782f650847d56",
                            b"", b"::", b"0", b"\xff", b"\n", b"1.2.3.4.5"])
hb_input = st.one_of(
    st.binary(max_size=200),
    mutated(test_heartbeat.CAPTURED),
    st.lists(hb_words, max_size=8).map(lambda ws: b" ".join(ws)),
)


@settings(max_examples=500, deadline=None)
@given(hb_input, st.integers(0, 2 ** 33), st.sampled_from([None, "192.0.2.2", "198.51.100.1"]))
def test_fuzz_heartbeat(data, now, source):
    try:
        ip6, ip4, epoch, digest = heartbeat.heartbeat_parse(data)
        assert addr.is_ip6(ip6) and (ip4 == "sender" or addr.is_ip4(ip4)) and epoch >= 0
        assert len(digest) == 32
    except heartbeat.HeartbeatError as e:
        assert e.code == "malformed" and e.reason
    try:
        r = heartbeat.heartbeat_verify(data, "hbsecret456", now, 120, source)
    except heartbeat.HeartbeatError as e:
        assert e.code in heartbeat.DROP_REASONS and "hbsecret456" not in e.reason
        return
    # only the authentic captured message (possibly with a line end) passes
    assert bytes(data).split(b"\n")[0].split(b"\r")[0].split(b"\x00")[0] == test_heartbeat.CAPTURED
    assert r["epoch"] == test_heartbeat.CAPTURED_TIME


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=16, max_size=16), st.one_of(st.just("sender"), st.ip_addresses(v=4).map(str)),
       st.integers(0, 2 ** 32), st.text(min_size=1, max_size=30))
def test_heartbeat_round_trip(ip6, ip4, epoch, password):
    m = heartbeat.heartbeat_message(ip6, ip4, epoch, password)
    r = heartbeat.heartbeat_verify(m, password, epoch, 0, ip4 if ip4 != "sender" else "203.0.113.5")
    assert r["ipv6"] == addr.ip6_ntoa(ip6) and r["epoch"] == epoch
    assert r["ipv4"] == (ip4 if ip4 != "sender" else "203.0.113.5")
    if password != "x":
        try:
            heartbeat.heartbeat_verify(m, password + "x", epoch)
            assert False
        except heartbeat.HeartbeatError as e:
            assert e.code == "bad signature"


# -- TIC ------------------------------------------------------------------------------

tic_lines = st.sampled_from(
    [l.encode() for l in test_tic.SHOW_AYIYA] +
    [b"200 SixXS TIC Service ready", b"200 1795382240", b"200 " + test_tic.CHALLENGE.encode(),
     b"200 ok", b"201 Listing tunnels", b"T5072 2001:db8:2ff:1::2 ayiya nlams01", b"202 Done",
     b"400 Error", b"500", b"", b"\xff", b"200 \x00", b"2", b"Password: a b", b"Type: l2tp",
     b"x" * 1100, b"TunnelId: T9", b"IPv6 PrefixLength: 999999999999"])
tic_stream = st.lists(st.one_of(tic_lines, st.binary(max_size=60)), max_size=40)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=200), tic_lines))
def test_fuzz_tic_line_parsers(raw):
    try:
        line = tic.decode_line(raw)
    except RemoteProtocolError:
        return
    for fn in (tic.parse_status_line, tic.parse_tunnel_list_line):
        try:
            fn(line)
        except RemoteProtocolError as e:
            assert e.reason
    try:
        tic.parse_tunnel_show([line])
    except RemoteProtocolError as e:
        assert e.reason


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=80), tic_lines), max_size=30), st.permutations(range(5)))
def test_fuzz_tunnel_show(lines, order):
    decoded = []
    for raw in lines:
        try:
            decoded.append(tic.decode_line(raw))
        except RemoteProtocolError:
            pass
    body = [test_tic.SHOW_AYIYA[1 + i] for i in order] + decoded
    try:
        cfg = tic.parse_tunnel_show(body)
    except RemoteProtocolError as e:
        assert "ayiyasecret123" not in e.reason
        return
    assert tic.validate_tunnel_config(cfg) == cfg


@settings(max_examples=300, deadline=None)
@given(tic_stream, st.sampled_from(["never", "try", "require"]),
       st.sampled_from([None, "T5072"]), st.booleans(), st.integers(1, 7))
def test_fuzz_tic_client(stream, starttls, tunnel_id, crlf, split):
    c = tic.TicClient("CPE1-SIXXS", "Tr0ub4dor&3", tunnel_id, starttls)
    c.connection_made(0.0)
    now = 0.0
    kinds = set()
    for raw in stream:
        now += 1.0
        data = raw + (b"\r\n" if crlf else b"\n")
        for i in range(0, len(data), split):
            c.receive_data(data[i:i + split], now, 1795382240)
        for name, ev in c.events():
            kinds.add(name)
            assert "Tr0ub4dor&3" not in repr(ev)
            if name == "failed":
                assert ev["kind"] in tic.FAILURE_RETRY and ev["message"]
        if c.state == "tls-wait":
            c.tls_started(now)
        c.handle_timer(now)
        c.data_to_send()
    assert kinds <= {"start-tls", "tunnel-list", "tunnel", "done", "failed"}
    assert c.state in ("greeting", "client", "time", "starttls", "username", "challenge",
                       "authenticate", "list", "list-body", "show", "show-body", "done", "failed")
    c.connection_closed(now + 1)
    assert c.finished and c.get_timer() is None
    if c.state == "done":
        assert tic.validate_tunnel_config(c.tunnel_config) == c.tunnel_config
