"""The reference SixXS-style PoP (tests/sixxs_pop): its checks against the real captures,
the TIC session logic, the heartbeat / AYIYA acceptance rules, fuzzing, the process on
loopback, and -- marked `lab` -- the PoP in the namespace lab driven from the cpe.

Packets the tests send are built here with hashlib / scapy from the captures' rules (a
second, independent statement of the formats), not with the PoP's own encoder."""

import hashlib
import json
import os
import socket
import ssl
import struct
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import ICMPv6EchoReply, ICMPv6EchoRequest, IPv6
from scapy.utils import rdpcap

from tests.captures import CAPTURES  # noqa: E402
from tests.sixxs_pop import (
    PopConfigError,
    PopError,
    PopHandle,
    example_config,
    parse_config,
    single_tunnel_config,
    start_pop,
    wire,
)
from tests.sixxs_pop.dataplane import Dataplane
from tests.sixxs_pop.state import PopState
from tests.sixxs_pop.tic import TicSession
from tests.unit.peerproc import free_port, loopback_peer, run_peer_once, temp_certs

AYIYA_PCAP = os.path.join(CAPTURES, "aiccu-ayiya.pcap")
PROBE_PCAP = os.path.join(CAPTURES, "sixxsd_probe.pcap")
have_captures = pytest.mark.skipif(
    not (os.path.exists(AYIYA_PCAP) and os.path.exists(PROBE_PCAP)), reason="SixXS captures not present"
)

TIC_USER, TIC_PASS = "CPE1-SIXXS", "tic-secret-1"
AYIYA_PW, HB_PW = "ayiyasecret123", "hbsecret456"
SECRETS = (TIC_PASS, AYIYA_PW, HB_PW)
A_CLIENT = socket.inet_pton(socket.AF_INET6, "2001:db8:2ff:1::2")
A_POP = socket.inet_pton(socket.AF_INET6, "2001:db8:2ff:1::1")
HB_CLIENT = "2001:db8:2ff:2::2"


# ---------------------------------------------------------------------------------------------
# independent builders (the captures' rules)


def ayiya(ident, op, nh, epoch, payload=b"", pw=AYIYA_PW):
    hdr = bytes([0x41, 0x52, 0x10 | op, nh]) + struct.pack("!I", epoch) + ident
    sig = hashlib.sha1(hdr + hashlib.sha1(pw.encode()).digest() + payload).digest()
    return hdr + sig + payload


def ayiya_open(d, ident=A_POP, pw=AYIYA_PW):
    """Check a PoP datagram the way a client would -> (opcode, next header, epoch, payload)."""
    assert d[0] == 0x41 and d[1] == 0x52 and d[2] >> 4 == 1
    assert d[8:24] == ident
    b = bytearray(d)
    b[24:44] = hashlib.sha1(pw.encode()).digest()
    assert hashlib.sha1(bytes(b)).digest() == d[24:44], "bad signature from the PoP"
    return d[2] & 15, d[3], struct.unpack("!I", d[4:8])[0], d[44:]


def heartbeat(ip6, ip4, epoch, pw=HB_PW):
    head = "HEARTBEAT TUNNEL %s %s %d " % (ip6, ip4, epoch)
    return (head + hashlib.md5((head + pw).encode()).hexdigest()).encode()


def ping6(src, dst, ident=0x4242, seq=1, data=b"sixxs-pop-test"):
    return bytes(IPv6(src=src, dst=dst, hlim=64) / ICMPv6EchoRequest(id=ident, seq=seq, data=data))


def conf(**top):
    c = example_config()
    c["tic_tls"] = "off"
    c.update(top)
    return c


def pop_state(cfg=None, clock=None):
    return PopState(parse_config(cfg or conf()), wallclock=clock or time.time)


def offline_state(clock=None):
    """A PopState whose Dataplane opens no sockets at all."""
    return pop_state(conf(tic_port=None, ayiya_port=None, heartbeat_port=None), clock)


def _udp(path, port):
    out = []
    for p in rdpcap(path):
        if UDP in p and port in (p[UDP].sport, p[UDP].dport):
            out.append((float(p.time), p[IP].src, p[UDP].sport, p[UDP].dport, bytes(p[UDP].payload)))
    return out


# ---------------------------------------------------------------------------------------------
# configuration


def test_example_config_parses_and_hides_secrets():
    cfg = parse_config(conf())
    assert [t.id for t in cfg.tunnels()] == ["T4141", "T3740", "T5072"]
    assert cfg.effective_tun_mtu() == 1280
    text = repr(cfg)
    for s in SECRETS + (hashlib.md5(TIC_PASS.encode()).hexdigest(),):
        assert s not in text
    md5only = conf()
    acct = md5only["accounts"][0]
    acct["password_md5"] = hashlib.md5(TIC_PASS.encode()).hexdigest().upper()
    del acct["password"]
    assert parse_config(md5only).accounts[0].password_md5 == hashlib.md5(TIC_PASS.encode()).hexdigest()
    with pytest.raises(PopConfigError, match="cert"):
        parse_config(example_config())  # STARTTLS offered without a certificate


def _tunnel(cfg, tid):
    return next(t for t in cfg["accounts"][0]["tunnels"] if t["id"] == tid)


@pytest.mark.parametrize(
    "mutate, words",
    [
        (lambda c: c.update(bogus=1), "unknown key"),
        (lambda c: c.update(tic_tls="maybe"), "tic_tls"),
        (lambda c: c.update(ayiya_port=70000), "ayiya_port"),
        (lambda c: c.update(pop_ipv4="203.0.113.300"), "pop_ipv4"),
        (lambda c: c.update(clock_offset=True), "clock_offset"),
        (lambda c: _tunnel(c, "T5072").update(type="gre"), "type"),
        (lambda c: _tunnel(c, "T5072").update(pop_v6="2001:db8:9::1"), "must be inside"),
        (lambda c: _tunnel(c, "T5072").update(endpoint="192.0.2.2"), "learns its endpoint"),
        (lambda c: _tunnel(c, "T5072").pop("password"), "password"),
        (lambda c: _tunnel(c, "T4141").pop("endpoint"), "needs an endpoint"),
        (lambda c: _tunnel(c, "T4141").update(password="x"), "no password"),
        (lambda c: _tunnel(c, "T3740").update(routed=["2001:db8:2f01::/56"]), "overlaps"),
        (lambda c: _tunnel(c, "T3740").update(id="T5072"), "twice"),
        (lambda c: _tunnel(c, "T3740").update(id="T 1"), "id"),
        (lambda c: _tunnel(c, "T3740").update(mtu=100), "mtu"),
        (lambda c: _tunnel(c, "T3740").update(admin_state="off"), "admin_state"),
        (lambda c: c["accounts"][0].update(password="has space"), "password"),
    ],
)
def test_config_errors_name_the_problem(mutate, words):
    c = conf()
    mutate(c)
    with pytest.raises(PopConfigError) as ei:
        parse_config(c)
    assert words in str(ei.value)
    for s in SECRETS:
        assert s not in str(ei.value)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 70000) | st.text(max_size=20),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=12), kids, max_size=4),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "type",
                "id",
                "client_v6",
                "pop_v6",
                "password",
                "endpoint",
                "routed",
                "mtu",
                "heartbeat_interval",
                "name",
                "x",
            ]
        ),
        json_values,
        max_size=8,
    )
)
def test_config_fuzz_only_raises_config_error(tunnel):
    c = conf()
    c["accounts"][0]["tunnels"] = [tunnel]
    try:
        parse_config(c)
    except PopConfigError:
        pass


# ---------------------------------------------------------------------------------------------
# AYIYA / heartbeat acceptance against the real captures


@have_captures
def test_every_captured_aiccu_and_probe_datagram_is_accepted_at_capture_time():
    st_ = pop_state()
    accepted = 0
    for t, _src, _sport, dport, d in _udp(AYIYA_PCAP, 5072) + _udp(PROBE_PCAP, 5072):
        if dport != 5072:
            continue
        tun, _op, _nh, epoch = wire.ayiya_verify(d, st_.lookup_ident, t, 120)
        assert tun.spec.id == "T5072" and abs(epoch - t) <= 1
        accepted += 1
        # ... and a minute either way still passes, three minutes do not
        wire.ayiya_verify(d, st_.lookup_ident, t + 119, 120)
        with pytest.raises(wire.Drop) as ei:
            wire.ayiya_verify(d, st_.lookup_ident, t + 180, 120)
        assert ei.value.reason == "stale timestamp"
    assert accepted == 11


@have_captures
def test_pop_encoder_reproduces_sixxsd_datagrams_byte_for_byte():
    key = hashlib.sha1(AYIYA_PW.encode()).digest()
    n = 0
    for t, _src, sport, _dport, d in _udp(AYIYA_PCAP, 5072) + _udp(PROBE_PCAP, 5072):
        if sport != 5072:
            continue
        op, nh, epoch, payload = ayiya_open(d)
        assert wire.ayiya_build(A_POP, op, nh, epoch, payload, key) == d
        buf = bytearray(len(d) + 10)
        buf[0:24] = wire.ayiya_header(A_POP, op, nh, epoch)
        buf[44 : len(d)] = payload
        wire.ayiya_sign_in_place(buf, len(d), key)
        assert bytes(buf[: len(d)]) == d
        # the PoP's own datagrams are not accepted back as a client's
        with pytest.raises(wire.Drop) as ei:
            wire.ayiya_verify(d, pop_state().lookup_ident, t, 120)
        assert ei.value.reason == "foreign identity"
        n += 1
    assert n == 7


@have_captures
def test_captured_heartbeat_is_accepted_and_checked_like_sixxsd():
    ((t, src, _sport, _dport, d),) = _udp(PROBE_PCAP, 3740)
    st_ = pop_state()
    tun, hb = wire.heartbeat_verify(d, src, st_.lookup_ident, t, 120)
    assert tun.spec.id == "T3740" and hb["ipv4"] == "sender"
    assert heartbeat(HB_CLIENT, "sender", hb["epoch"]) == d  # our test builder agrees
    for wall, source, data, reason in [
        (t + 121, src, d, "stale timestamp"),
        (t, src, d.replace(b"sender", b"192.0.2.9"), "bad signature"),
        (t, src, d[:-1] + (b"0" if d[-1:] != b"0" else b"1"), "bad signature"),
        (t, src, d[:-32] + d[-32:].upper(), "bad signature"),  # sixxsd compares with strcmp
        (t, src, heartbeat(HB_CLIENT, "192.0.2.9", int(t)), "address mismatch"),
        (t, src, heartbeat(HB_CLIENT, "sender", int(t), pw="wrong"), "bad signature"),
        (t, src, heartbeat("2001:db8:2ff:2::3", "sender", int(t)), "unknown tunnel"),
        (t, src, heartbeat("2001:db8:2ff:1::2", "sender", int(t)), "not a heartbeat tunnel"),
        (t, src, b"HEARTBEAT TUNNEL " + HB_CLIENT.encode() + b" sender", "malformed"),
        (t, src, b"heartbeat tunnel " + d[17:], "malformed"),
        (t, src, d.replace(b"sender", b"300.1.1.1"), "malformed"),
        (t, src, b"\xff" * 40, "malformed"),
    ]:
        with pytest.raises(wire.Drop) as ei:
            wire.heartbeat_verify(data, source, st_.lookup_ident, wall, 120)
        assert ei.value.reason == reason, (data, reason)
    # stated address equal to the source; a trailing CR LF is the end of the message
    ok = heartbeat(HB_CLIENT, "192.0.2.9", int(t))
    assert wire.heartbeat_verify(ok + b"\r\n", "192.0.2.9", st_.lookup_ident, t, 120)[0] is tun


def test_ayiya_drop_reasons_in_order():
    st_ = pop_state()
    now = 1_800_000_000
    good = ayiya(A_CLIENT, 1, 41, now, ping6("2001:db8:2ff:1::2", "2001:db8:ffff::2"))
    assert wire.ayiya_verify(good, st_.lookup_ident, now + 120, 120)[1] == 1
    assert wire.ayiya_verify(good, st_.lookup_ident, now - 120, 120)[1] == 1

    def bad(data, reason, wall=now):
        with pytest.raises(wire.Drop) as ei:
            wire.ayiya_verify(data, st_.lookup_ident, wall, 120)
        assert ei.value.reason == reason

    bad(good[:43], "truncated")
    bad(b"\x42" + good[1:], "unsupported identity")
    bad(good[:1] + b"\x53" + good[2:], "unsupported hash")
    bad(good[:2] + b"\x21" + good[3:], "unsupported auth")
    bad(ayiya(A_CLIENT, 5, 59, now), "unsupported opcode")  # MOTD goes PoP -> client only
    bad(ayiya(A_POP, 0, 59, now), "foreign identity")
    bad(ayiya(socket.inet_pton(socket.AF_INET6, HB_CLIENT), 0, 59, now, pw=HB_PW), "not an ayiya tunnel")
    bad(ayiya(A_CLIENT, 0, 59, now, pw="wrong"), "bad signature")
    bad(good[:-1] + bytes([good[-1] ^ 1]), "bad signature")
    bad(good, "stale timestamp", now + 121)
    bad(good, "stale timestamp", now - 121)
    # a forgery that is also stale is a forgery
    bad(ayiya(A_CLIENT, 0, 59, now, pw="wrong"), "bad signature", now + 1000)
    c = conf()
    _tunnel(c, "T5072")["user_state"] = "disabled"
    st2 = pop_state(c)
    with pytest.raises(wire.Drop) as ei:
        wire.ayiya_verify(good, st2.lookup_ident, now, 120)
    assert ei.value.reason == "tunnel disabled"


class FakeClock:
    def __init__(self, t):
        self.t = t

    def __call__(self):
        return self.t


def test_dataplane_learns_endpoint_counts_and_ignores_replays_that_are_stale():
    clock = FakeClock(1_800_000_000.0)
    st_ = offline_state(clock)
    dp = Dataplane(st_, tun=False)  # no sockets at all
    try:
        t = st_.tunnels["T5072"]
        beat = ayiya(A_CLIENT, 0, 59, int(clock.t))
        dp.ayiya_datagram(memoryview(beat), "192.0.2.2", 40000)
        assert (t.endpoint, t.port, t.endpoint_moves, t.ayiya_opcodes["noop"]) == ("192.0.2.2", 40000, 1, 1)
        dp.ayiya_datagram(beat, "198.51.100.7", 40001)  # NAT rebinding, replay inside the window
        assert (t.endpoint, t.port, t.endpoint_moves) == ("198.51.100.7", 40001, 2)
        clock.t += 200
        dp.ayiya_datagram(beat, "203.0.113.99", 1)  # the same packet later: stale, moves nothing
        assert (t.endpoint, t.port) == ("198.51.100.7", 40001)
        assert t.drops["ayiya"]["stale timestamp"] == 1
        fwd = ayiya(A_CLIENT, 1, 41, int(clock.t), ping6("2001:db8:5::1", "2001:db8:ffff::2"))
        dp.ayiya_datagram(fwd, "198.51.100.7", 40001)
        assert t.drops["ayiya"]["spoofed source"] == 1
        dp.ayiya_datagram(ayiya(A_CLIENT, 1, 4, int(clock.t), b"E" * 20), "198.51.100.7", 40001)
        assert t.drops["ayiya"]["unsupported next header"] == 1
        dp.ayiya_datagram(ayiya(A_CLIENT, 1, 41, int(clock.t), b"\x60" + b"\0" * 10), "198.51.100.7", 40001)
        assert t.drops["ayiya"]["bad payload"] == 1
        fwd = ayiya(A_CLIENT, 1, 41, int(clock.t), ping6("2001:db8:2f01::5", "2001:db8:ffff::2"))
        dp.ayiya_datagram(fwd, "198.51.100.7", 40001)
        assert t.drops["ayiya"]["tun error"] == 1  # passed every check; no TUN in this test
        st_.faults["ayiya_drop"] = True
        dp.ayiya_datagram(fwd, "192.0.2.2", 5)
        assert st_.drops["ayiya"]["fault"] == 1 and t.port == 40001
        s = st_.state()
        json.dumps(s)
        assert s["tunnels"]["T5072"]["endpoint"] == "198.51.100.7"
        assert s["last_drop"]["reason"] == "fault"
        hb = st_.tunnels["T3740"]
        dp.heartbeat_datagram(heartbeat(HB_CLIENT, "sender", int(clock.t)), "192.0.2.2")
        assert (hb.endpoint, hb.heartbeats) == ("192.0.2.2", 1)
        assert {x.spec.id for x in st_.by_endpoint["192.0.2.2"]} == {"T4141", "T3740"}
    finally:
        dp.close()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=120), st.integers(0, 2**32 - 1))
def test_ayiya_and_heartbeat_checks_fuzz_only_drop(data, wall):
    st_ = pop_state()
    for d in (
        data,
        bytes([0x41, 0x52, 0x10]) + data,
        bytes([0x41, 0x52, 0x11, 41]) + data[:4] + A_CLIENT + data,
    ):
        try:
            wire.ayiya_verify(d, st_.lookup_ident, wall, 120)
        except wire.Drop as e:
            assert e.reason in wire.AYIYA_DROPS
    for d in (
        data,
        b"HEARTBEAT TUNNEL " + data,
        b"HEARTBEAT TUNNEL %s sender %d " % (HB_CLIENT.encode(), wall) + data,
    ):
        try:
            wire.heartbeat_verify(d, "192.0.2.2", st_.lookup_ident, wall, 120)
        except wire.Drop as e:
            assert e.reason in wire.HEARTBEAT_DROPS
    for fn in (wire.ipv6_check, wire.ipv4_41):
        try:
            fn(data)
        except wire.Drop as e:
            assert e.reason in ("truncated", "not ipv6")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_dataplane_handlers_never_raise(data):
    st_ = offline_state()
    dp = Dataplane(st_, tun=False)
    try:
        dp.ayiya_datagram(memoryview(data), "192.0.2.2", 1)
        dp.ayiya_datagram(ayiya(A_CLIENT, 1, 41, int(time.time()), data), "192.0.2.2", 1)
        dp.heartbeat_datagram(data, "192.0.2.2")
        dp.proto41_packet(memoryview(data))
        dp.proto41_packet(
            bytes([0x45, 0, 0, 20 + len(data)])
            + b"\0" * 5
            + b"\x29"
            + b"\0" * 2
            + bytes([192, 0, 2, 2])
            + b"\0" * 4
            + data
        )
    finally:
        dp.close()


# ---------------------------------------------------------------------------------------------
# TIC session logic


class Tic:
    """Drive a TicSession line by line."""

    def __init__(self, cfg=None, peer="192.0.2.2", tls=False, clock=None):
        self.pop = pop_state(cfg, clock)
        self.s = TicSession(self.pop, peer, tls)
        self.greeting = self.s.greeting()

    def __call__(self, line):
        out = self.s.feed_line(line.encode() if isinstance(line, str) else line)
        return [v for k, v in out if k == "line"], [k for k, v in out if k != "line"]

    def one(self, line):
        lines, _ = self(line)
        assert len(lines) == 1, lines
        return lines[0]


def md5(s):
    return hashlib.md5(s.encode()).hexdigest()


def login(tic, user=TIC_USER, pw=TIC_PASS):
    assert tic.one("client TIC/draft-00 test/1 Linux/6.1").startswith("200 ")
    assert tic.one("username " + user).startswith("200 ")
    ch = tic.one("challenge md5")
    assert ch.startswith("200 ") and len(ch) == 36
    return tic.one("authenticate md5 " + md5(ch[4:] + md5(pw)))


def test_tic_session_in_aiccu_order():
    clock = FakeClock(1_800_000_123.9)
    tic = Tic(clock=clock)
    assert tic.greeting == [("line", "200 TIC Service on reference-pop ready (cpe-tunnel lab)")]
    assert tic.one("get unixtime") == "200 1800000123"
    assert tic.one("starttls").startswith("400 ")  # no TLS configured
    assert login(tic).startswith("200 Successfully logged in using md5 as CPE1-SIXXS")
    lines, _ = tic("tunnel list")
    assert lines == [
        "201 Listing tunnels",
        "T4141 2001:db8:2ff::2 192.0.2.2 tstpop01",
        "T3740 2001:db8:2ff:2::2 heartbeat tstpop01",
        "T5072 2001:db8:2ff:1::2 ayiya tstpop01",
        "202 <tunnel_id> <ipv6_endpoint> <ipv4_endpoint> <pop_name>",
    ]
    lines, _ = tic("tunnel show T3740")
    assert lines[0].startswith("201 ") and lines[-1].startswith("202 ")
    rec = dict(x.split(": ", 1) for x in lines[1:-1])
    assert rec == {
        "TunnelId": "T3740",
        "Type": "6in4-heartbeat",
        "IPv6 Endpoint": "2001:db8:2ff:2::2",
        "IPv6 POP": "2001:db8:2ff:2::1",
        "IPv6 PrefixLength": "64",
        "Tunnel MTU": "1280",
        "Tunnel Name": "heartbeat lab tunnel",
        "POP Id": "tstpop01",
        "IPv4 Endpoint": "heartbeat",
        "IPv4 POP": "203.0.113.18",
        "UserState": "enabled",
        "AdminState": "enabled",
        "Password": HB_PW,
        "Heartbeat_Interval": "60",
    }
    lines, _ = tic("tunnel show t4141")
    rec = dict(x.split(": ", 1) for x in lines[1:-1])
    assert rec["Type"] == "6in4-static" and rec["IPv4 Endpoint"] == "192.0.2.2" and "Password" not in rec
    assert tic.one("tunnel show T9999") == "400 Unknown tunnel endpoint"
    lines, _ = tic("pop show tstpop01")
    assert "IPv4: 203.0.113.18" in lines
    lines, actions = tic("QUIT Thank you")
    assert lines[0].startswith("200 ") and actions == ["close"]
    assert tic("get unixtime") == ([], [])  # closed
    rec = tic.pop.state()["tic"]
    assert (rec["auth_ok"], rec["tunnel_shows"]) == (1, 2)
    assert tic.s.record["commands"][:4] == ["get unixtime", "starttls", "client", "username"]
    assert tic.s.record["end"] == "quit"


def test_tic_wrong_password_unknown_user_and_one_try_per_challenge():
    tic = Tic()
    assert login(tic, pw="wrong") == "400 Login failed, login/password mismatch"
    assert tic.one("tunnel list") == "400 You are not logged in"
    assert tic.one("authenticate md5 " + "0" * 32) == "400 Ask for a challenge first"
    ch = tic.one("challenge md5")[4:]
    good = "authenticate md5 " + md5(ch + md5(TIC_PASS))
    assert tic.one(good).startswith("200 ")
    tic2 = Tic()
    assert login(tic2, user="NOBODY-SIXXS") == "400 Login failed, login/password mismatch"
    ch = tic2.one("challenge md5")[4:]
    assert tic2.one("authenticate md5 " + md5(ch + md5(TIC_PASS))).startswith("400 ")
    # the SixXS web page's order (md5(md5(pw) + challenge)) is not what AICCU sends
    tic3 = Tic()
    tic3.one("username " + TIC_USER)
    ch = tic3.one("challenge md5")[4:]
    assert tic3.one("authenticate md5 " + md5(md5(TIC_PASS) + ch)).startswith("400 ")
    # usernames are case-insensitive nic-handles; response hex case does not matter
    tic4 = Tic()
    tic4.one("username cpe1-sixxs")
    ch = tic4.one("challenge md5")[4:]
    assert tic4.one("authenticate md5 " + md5(ch + md5(TIC_PASS)).upper()).startswith("200 ")
    st_ = tic.pop.state()["tic"]
    assert st_["auth_failed"] == 1 and st_["auth_ok"] == 1


def test_tic_stage_rules_and_hostile_lines():
    tic = Tic(tls=True)
    assert tic.one("challenge md5") == "400 Give your username first"
    assert tic.one("tunnel show T5072") == "400 You are not logged in"
    assert tic.one("challenge clear").startswith("400 ")
    assert tic.one("frobnicate").startswith("400 Unknown command")
    assert tic.one("get time").startswith("400 ")
    assert tic.one("client nonsense").startswith("400 ")
    assert tic("") == ([], [])
    assert tic.one(b"\xff\xfe").startswith("400 ")
    assert tic.one(b"get unixtime\x00").startswith("400 ")
    assert tic.one(b"get unixtime\r").startswith("200 ")
    lines, actions = tic("starttls")
    assert lines == ["200 You can start the TLS/SSL handshake now"] and actions == ["starttls"]
    tic.s.tls_started()
    assert tic.one("starttls") == "400 TLS is already active"
    lines, actions = tic(b"x" * 1025)
    assert lines[0].startswith("400 Line too long") and actions == ["close"]

    req = Tic(conf(tic_tls="require", cert="c", key="k"), tls=True)
    assert req.one("username " + TIC_USER).startswith("400 TLS is required")
    req("starttls")
    req.s.tls_started()
    assert req.one("username " + TIC_USER).startswith("200 ")
    assert req.one("starttls").startswith("400 ")  # already TLS

    inj = Tic(tls=True)
    inj.pop.faults["tic"] = "inject_after_starttls"
    out = inj.s.feed_line(b"starttls")
    assert [k for k, v in out] == ["line", "inject", "starttls"]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.binary(max_size=80)
        | st.sampled_from(
            [
                b"username CPE1-SIXXS",
                b"challenge md5",
                b"authenticate md5 x",
                b"tunnel list",
                b"tunnel show T5072",
                b"starttls",
                b"client TIC/x",
                b"get unixtime",
                b"pop list",
                b"QUIT",
            ]
        ),
        max_size=12,
    )
)
def test_tic_session_fuzz(lines):
    tic = Tic(tls=True)
    for line in lines:
        out = tic.s.feed_line(line)
        for kind, value in out:
            assert kind in ("line", "inject", "starttls", "close")
            if kind == "line":
                assert value[:3].isdigit() and value[3] == " "
                assert TIC_PASS not in value
        if tic.s.closed:
            break
        if any(k == "starttls" for k, v in out):
            tic.s.tls_started()
    json.dumps(tic.pop.state())


def test_interop_with_the_client_core_back_to_back():
    """One interop check with cpe_tunnel's TIC client (the PoP itself never imports it)."""
    from cpe_tunnel.core.tic import TicClient

    def run(cfg, password=TIC_PASS, offset=0):
        clock = FakeClock(1_800_000_000.0)
        tic = Tic(cfg, clock=clock)
        tic.pop.clock_offset = offset
        c = TicClient(TIC_USER, password, starttls="try")
        c.connection_made(0.0)
        c.receive_data(b"".join(v.encode() + b"\n" for k, v in tic.greeting), 0.0, clock.t)
        for _ in range(50):
            data = c.data_to_send()
            if not data:
                break
            for raw in data.split(b"\n")[:-1]:
                lines, _ = tic(raw)
                if lines:
                    c.receive_data(b"".join(x.encode() + b"\n" for x in lines), 0.0, clock.t)
        return c

    c = run(dict(single_tunnel_config("T5072"), tic_tls="off"))
    cfg = c.tunnel_config
    assert (
        cfg["tunnel_id"],
        cfg["type"],
        cfg["ipv6_local"],
        cfg["ipv6_pop"],
        cfg["ipv4_pop"],
        cfg["password"],
        cfg["heartbeat_interval"],
        cfg["mtu"],
    ) == ("T5072", "ayiya", "2001:db8:2ff:1::2", "2001:db8:2ff:1::1", "203.0.113.18", AYIYA_PW, 60, 1280)
    assert run(conf(), password="wrong").error[0] == "auth-failed"
    assert run(conf()).error[0] == "choose-tunnel"  # three tunnels and no id
    assert run(conf(), offset=600).error[0] == "clock"


# ---------------------------------------------------------------------------------------------
# the process on loopback (no TUN, any user)


@pytest.fixture
def loopback_pop():
    with temp_certs("sixxs-pop-test-", "tls") as (d, certs):
        cfg = example_config()
        cfg.update(
            listen="127.0.0.1",
            tic_port=free_port(socket.SOCK_STREAM),
            heartbeat_port=free_port(socket.SOCK_DGRAM),
            ayiya_port=free_port(socket.SOCK_DGRAM),
            cert=certs["cert_file"],
            key=certs["key_file"],
            tic_idle_timeout=5,
        )
        ca = certs["ca_file"]
        with loopback_peer(PopHandle, "tests.sixxs_pop", "--no-tun", cfg, d, "pop.json", ca) as h:
            yield h


class LineConn:
    def __init__(self, host, port, timeout=5):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""

    def read(self):
        while b"\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise EOFError(self.buf)
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line.decode()

    def send(self, line):
        self.sock.sendall(line.encode() + b"\n")

    def ask(self, line):
        self.send(line)
        return self.read()

    def read_body(self):
        out = [self.read()]
        while not out[-1].startswith(("202", "4")):
            out.append(self.read())
        return out

    def starttls(self, ca, host):
        ctx = ssl.create_default_context(cafile=ca)
        self.sock = ctx.wrap_socket(self.sock, server_hostname=host)
        assert self.buf == b""

    def close(self):
        self.sock.close()


def tic_session(host, port, ca, password=TIC_PASS, tls=True, show="T5072"):
    """A scripted AICCU-order session; returns the transcript (list of server lines)."""
    c = LineConn(host, port)
    try:
        out = [c.read(), c.ask("client TIC/draft-00 scripted/1 Linux/6.1"), c.ask("get unixtime")]
        if tls:
            out.append(c.ask("starttls"))
            if out[-1].startswith("200"):
                c.starttls(ca, host)
        out.append(c.ask("username " + TIC_USER))
        ch = c.ask("challenge md5")
        out.append(ch)
        out.append(c.ask("authenticate md5 " + md5(ch[4:] + md5(password))))
        if out[-1].startswith("200"):
            c.send("tunnel list")
            out += c.read_body()
            c.send("tunnel show " + show)
            out += c.read_body()
        out.append(c.ask("QUIT bye"))
        return out
    finally:
        c.close()


def test_process_tic_tls_heartbeat_ayiya_and_control(loopback_pop):
    h = loopback_pop
    cfg = h.config
    out = tic_session("127.0.0.1", cfg["tic_port"], h.ca_file)
    assert out[0].startswith("200 TIC Service")
    assert abs(int(out[2][4:]) - time.time()) <= 2
    assert "Password: " + AYIYA_PW in out and out[-1].startswith("200 ")
    out = tic_session("127.0.0.1", cfg["tic_port"], h.ca_file, password="wrong")
    assert out[-2] == "400 Login failed, login/password mismatch"
    tic = h.state()["tic"]
    assert (tic["sessions"], tic["auth_ok"], tic["auth_failed"], tic["starttls"]) == (2, 1, 1, 2)
    assert [r["tls"] for r in tic["recent"]] == [True, True]

    # plain bytes pipelined behind STARTTLS are discarded, never obeyed
    c = LineConn("127.0.0.1", cfg["tic_port"])
    c.read()
    c.sock.sendall(b"starttls\nusername " + TIC_USER.encode() + b"\n")
    assert c.read().startswith("200 ")
    c.starttls(h.ca_file, "127.0.0.1")
    assert c.ask("challenge md5") == "400 Give your username first"
    c.close()

    h.set_clock_offset(-600)
    c = LineConn("127.0.0.1", cfg["tic_port"])
    c.read()
    assert abs(int(c.ask("get unixtime")[4:]) - (time.time() - 600)) <= 2
    c.close()
    h.set_clock_offset(0)

    h.set_fault(tic="refuse")
    c = LineConn("127.0.0.1", cfg["tic_port"])
    assert c.read().startswith("400 ")
    with pytest.raises(EOFError):
        c.read()
    h.set_fault(tic="close")
    c = LineConn("127.0.0.1", cfg["tic_port"])
    with pytest.raises((EOFError, ConnectionResetError)):
        c.read()
    h.set_fault(tic="inject_after_starttls")
    c = LineConn("127.0.0.1", cfg["tic_port"])
    c.read()
    c.send("starttls")
    assert c.read().startswith("200 ") and c.read() == "200 injected in plain text after starttls"
    c.sock.close()
    h.set_fault(tic="none")
    assert h.state()["tic"]["refused"] == 2

    # heartbeat over UDP: endpoint = source
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(("127.0.0.1", 0))
    u.settimeout(2)
    u.sendto(heartbeat(HB_CLIENT, "sender", int(time.time())), ("127.0.0.1", cfg["heartbeat_port"]))
    st_ = h.wait_until(lambda s: s["tunnels"]["T3740"]["heartbeats"] == 1)
    assert st_["tunnels"]["T3740"]["endpoint"] == "127.0.0.1"
    u.sendto(heartbeat(HB_CLIENT, "sender", int(time.time()) - 300), ("127.0.0.1", cfg["heartbeat_port"]))
    h.wait_until(lambda s: s["drops"]["heartbeat"]["stale timestamp"] == 1)

    # AYIYA echo: answered, signed with the PoP's identity and clock
    u.sendto(ayiya(A_CLIENT, 2, 59, int(time.time()), b"probe"), ("127.0.0.1", cfg["ayiya_port"]))
    d, src = u.recvfrom(2048)
    op, nh, epoch, payload = ayiya_open(d)
    assert (op, nh, payload, src[1]) == (4, 59, b"probe", cfg["ayiya_port"]) and abs(epoch - time.time()) <= 2
    t = h.tunnel("T5072")
    assert (t["endpoint"], t["port"], t["echo_replies"]) == ("127.0.0.1", u.getsockname()[1], 1)
    r = h.send_ayiya("T5072", opcode=5, next_header=59, payload=b"hello".hex())
    d, _ = u.recvfrom(2048)
    assert bytes.fromhex(r["hex"]) == d and ayiya_open(d)[0] == 5 and ayiya_open(d)[3] == b"hello"
    r = h.send_ayiya("T5072", epoch_delta=-500, bad_signature=True)
    d, _ = u.recvfrom(2048)
    assert struct.unpack("!I", d[4:8])[0] < time.time() - 400
    with pytest.raises(AssertionError):
        ayiya_open(d)
    assert len(h.recent_ayiya("T5072")) == 1
    u.close()

    h.reset_counters()
    assert h.state()["tic"]["sessions"] == 0 and h.tunnel("T5072")["echo_replies"] == 0
    for bad in (
        {"cmd": "set_fault", "bogus": True},
        {"cmd": "set_fault", "tic": "explode"},
        {"cmd": "set_clock_offset", "seconds": "soon"},
        {"cmd": "set_endpoint", "tunnel": "nope", "ip": None},
        {"cmd": "set_endpoint", "tunnel": "T5072", "ip": "192.0.2.1"},  # ayiya needs a port too
        {"cmd": "send_ayiya", "tunnel": "T3740"},
        {"cmd": "send_ayiya", "tunnel": "T5072", "payload": "zz"},
        {"cmd": "nonsense"},
        {"cmd": 5},
    ):
        args = dict(bad)
        cmd = args.pop("cmd")
        with pytest.raises(PopError):
            h.request(cmd, **args)
    assert h.set_endpoint("T3740", "192.0.2.50")["endpoint"] == "192.0.2.50"
    log = h.log_text()
    for secret in SECRETS + (md5(TIC_PASS),):
        assert secret not in log
    assert "endpoint" in log and "logged in" in log


def test_process_refuses_bad_config(tmp_path):
    cfile = tmp_path / "c.json"
    c = conf()
    _tunnel(c, "T5072")["pop_v6"] = "2001:db8:9::1"
    cfile.write_text(json.dumps(c))
    r = run_peer_once("tests.sixxs_pop", cfile, tmp_path / "s", "--no-tun")
    assert r.returncode == 2
    assert "must be inside" in r.stderr and AYIYA_PW not in r.stderr


# ---------------------------------------------------------------------------------------------
# in the namespace lab (root): the PoP in the broker namespace, the client side from the cpe

POP4 = "203.0.113.18"


def _udp_sock(bind=("0.0.0.0", 0)):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(bind)
    s.settimeout(2)
    return s


def _recv_until(s, want, timeout=3.0):
    """Datagrams from s until want(d) holds; returns that datagram (or None on timeout)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            d, _src = s.recvfrom(65536)
        except socket.timeout:
            return None
        if want(d):
            return d
    return None


@pytest.mark.lab
def test_lab_tic_session_from_cpe(lab):
    h = start_pop(lab)
    out = lab.call_in("cpe", tic_session, POP4, 3874, h.ca_file, timeout=20)
    assert out[3].startswith("200 ") and "IPv4 Endpoint: ayiya" in out and out[-1].startswith("200 ")
    out = lab.call_in("cpe", tic_session, POP4, 3874, h.ca_file, "wrong", timeout=20)
    assert out[-2].startswith("400 Login failed")
    h.set_clock_offset(600)
    out = lab.call_in("cpe", tic_session, POP4, 3874, h.ca_file, tls=False, show="T4141", timeout=20)
    assert abs(int(out[2][4:]) - (time.time() + 600)) <= 2 and "IPv4 Endpoint: 192.0.2.2" in out
    st_ = h.state()["tic"]
    assert (st_["sessions"], st_["auth_ok"], st_["auth_failed"]) == (3, 2, 1)
    assert [(r["peer"], r["tls"], r["auth"]) for r in st_["recent"]] == [
        ("192.0.2.2", True, "ok"),
        ("192.0.2.2", True, "failed"),
        ("192.0.2.2", False, "ok"),
    ]
    h.set_fault(tic="refuse")
    with pytest.raises((EOFError, OSError)):
        lab.call_in("cpe", tic_session, POP4, 3874, h.ca_file, timeout=20)
    for s in SECRETS:
        assert s not in h.log_text()


@pytest.mark.lab
def test_lab_heartbeat_moves_the_6in4_endpoint(lab):
    h = start_pop(lab, tls=False)
    assert lab.v6host_counter("2001:db8:2ff:2::/64") == 0
    # static tunnel: registered in the configuration, works at once
    res = lab.sixin4_ping("cpe", POP4, "2001:db8:2ff::2", "2001:db8:ffff::2")
    assert len(res["replies"]) == 1 and res["replies"][0]["outer_src"] == POP4
    # heartbeat tunnel: nothing before a heartbeat
    res = lab.sixin4_ping("cpe", POP4, HB_CLIENT, "2001:db8:ffff::2", timeout=0.5)
    assert res["replies"] == []
    assert h.state()["drops"]["proto41"]["spoofed source"] >= 1  # T4141's endpoint, not its prefix
    u = lab.call_in("cpe", _udp_sock)
    try:
        u.sendto(heartbeat(HB_CLIENT, "sender", int(time.time())), (POP4, 3740))
        h.wait_until(lambda s: s["tunnels"]["T3740"]["endpoint"] == "192.0.2.2")
        res = lab.sixin4_ping("cpe", POP4, HB_CLIENT, "2001:db8:ffff::2", count=2)
        assert len(res["replies"]) == 2
        res = lab.sixin4_ping("cpe", POP4, "2001:db8:2f02::1", "2001:db8:ffff::2")  # routed prefix
        assert len(res["replies"]) == 1
        assert lab.v6host_counter("2001:db8:2ff:2::/64") == 2

        # a second WAN address: a stated heartbeat from it moves the endpoint there
        lab.run("cpe", ["ip", "addr", "add", "192.0.2.3/24", "dev", "wan0"])
        u2 = lab.call_in("cpe", _udp_sock, ("192.0.2.3", 0))
        now = int(time.time())
        u2.sendto(heartbeat(HB_CLIENT, "192.0.2.4", now), (POP4, 3740))  # says .4, comes from .3
        u2.sendto(heartbeat(HB_CLIENT, "192.0.2.3", now, pw="guess"), (POP4, 3740))
        u2.sendto(heartbeat(HB_CLIENT, "192.0.2.3", now - 200), (POP4, 3740))
        st_ = h.wait_until(lambda s: sum(s["tunnels"]["T3740"]["drops"]["heartbeat"].values()) == 3)
        assert st_["tunnels"]["T3740"]["endpoint"] == "192.0.2.2"
        assert [
            st_["tunnels"]["T3740"]["drops"]["heartbeat"][k]
            for k in ("address mismatch", "bad signature", "stale timestamp")
        ] == [1, 1, 1]
        u2.sendto(heartbeat(HB_CLIENT, "192.0.2.3", now), (POP4, 3740))
        st_ = h.wait_until(lambda s: s["tunnels"]["T3740"]["endpoint"] == "192.0.2.3")
        assert st_["tunnels"]["T3740"]["last_heartbeat"]["stated"] == "192.0.2.3"
        res = lab.sixin4_ping("cpe", POP4, HB_CLIENT, "2001:db8:ffff::2", local="192.0.2.3")
        assert len(res["replies"]) == 1 and res["replies"][0]["outer_dst"] == "192.0.2.3"
        res = lab.sixin4_ping("cpe", POP4, HB_CLIENT, "2001:db8:ffff::2", local="192.0.2.2", timeout=0.5)
        assert res["replies"] == []  # the old endpoint is no longer this tunnel's
        h.set_fault(heartbeat_drop=True)
        u.sendto(heartbeat(HB_CLIENT, "sender", int(time.time())), (POP4, 3740))
        st_ = h.wait_until(lambda s: s["drops"]["heartbeat"]["fault"] == 1)
        assert st_["tunnels"]["T3740"]["endpoint"] == "192.0.2.3"
        u2.close()
    finally:
        u.close()


@pytest.mark.lab
def test_lab_ayiya_echo_forward_rebinding_and_drops(lab):
    h = start_pop(lab, tls=False)
    lab.v6host_counter("2001:db8:2ff:1::/64")
    u = lab.call_in("cpe", _udp_sock)
    try:
        pop = (POP4, 5072)
        u.sendto(ayiya(A_CLIENT, 2, 59, int(time.time()), b"are you there"), pop)
        d = _recv_until(u, lambda d: d[2] & 15 == 4)
        assert d is not None and ayiya_open(d)[3] == b"are you there"
        t = h.tunnel("T5072")
        assert (t["endpoint"], t["port"]) == ("192.0.2.2", u.getsockname()[1])

        # forward an ICMPv6 echo request to the v6 host; its reply comes back inside AYIYA
        u.sendto(
            ayiya(A_CLIENT, 1, 41, int(time.time()), ping6("2001:db8:2ff:1::2", "2001:db8:ffff::2", seq=7)),
            pop,
        )
        d = _recv_until(u, lambda d: d[2] & 15 == 1)
        assert d is not None
        _op, nh, _epoch, payload = ayiya_open(d)
        reply = IPv6(payload)
        assert nh == 41 and ICMPv6EchoReply in reply and reply[ICMPv6EchoReply].seq == 7
        assert reply.src == "2001:db8:ffff::2" and reply.dst == "2001:db8:2ff:1::2"
        assert lab.v6host_counter("2001:db8:2ff:1::/64") == 1

        # NAT rebinding: a beat from another port moves the endpoint; traffic follows it
        u2 = lab.call_in("cpe", _udp_sock)
        u2.sendto(ayiya(A_CLIENT, 0, 59, int(time.time())), pop)
        h.wait_until(lambda s: s["tunnels"]["T5072"]["port"] == u2.getsockname()[1])
        u2.sendto(
            ayiya(A_CLIENT, 1, 41, int(time.time()), ping6("2001:db8:2f01::9", "2001:db8:ffff::2", seq=8)),
            pop,
        )  # routed prefix
        d = _recv_until(u2, lambda d: d[2] & 15 == 1)
        assert d is not None and IPv6(ayiya_open(d)[3])[ICMPv6EchoReply].seq == 8

        # replay of an authentic packet after 200 s (the PoP's clock moved on): dropped, no move
        old = bytes.fromhex(h.recent_ayiya("T5072")[0]["hex"])
        assert old[2] & 15 == 2
        h.set_clock_offset(200)
        u.sendto(old, pop)
        # a foreign identity, a forged signature, a stale timestamp
        u.sendto(
            ayiya(socket.inet_pton(socket.AF_INET6, "2001:db8:2ff:1::99"), 0, 59, int(time.time()) + 200), pop
        )
        u.sendto(ayiya(A_CLIENT, 0, 59, int(time.time()) + 200, pw="guess"), pop)
        u.sendto(ayiya(A_CLIENT, 0, 59, int(time.time()) + 200 - 150), pop)
        st_ = h.wait_until(lambda s: sum(s["drops"]["ayiya"].values()) == 4)
        drops = st_["drops"]["ayiya"]
        assert (drops["stale timestamp"], drops["foreign identity"], drops["bad signature"]) == (2, 1, 1)
        t = st_["tunnels"]["T5072"]
        assert (t["endpoint"], t["port"]) == ("192.0.2.2", u2.getsockname()[1])
        assert _recv_until(u, lambda d: True, timeout=0.3) is None  # nothing answered the replay
        h.set_clock_offset(0)

        # the PoP's own echo request reaches the client at its current endpoint
        h.send_ayiya("T5072", opcode=2, payload=b"pop-probe".hex())
        d = _recv_until(u2, lambda d: d[2] & 15 == 2)
        assert d is not None and ayiya_open(d)[3] == b"pop-probe"
        u2.close()
    finally:
        u.close()


@pytest.mark.lab
@have_captures
def test_lab_pop_accepts_the_captured_aiccu_stream(lab):
    """AICCU's own datagrams (same source address as in the capture), replayed with the
    PoP's clock set to the capture time: all accepted, none dropped."""
    c2p = [x for x in _udp(AYIYA_PCAP, 5072) if x[3] == 5072]
    h = start_pop(lab, tls=False)
    h.set_clock_offset(c2p[0][0] - time.time())
    u = lab.call_in("cpe", _udp_sock)
    try:
        for _t, src, _sport, _dport, d in c2p:
            assert src == "192.0.2.2"
            u.sendto(d, (POP4, 5072))
        st_ = h.wait_until(lambda s: s["tunnels"]["T5072"]["rx_packets"] == len(c2p))
    finally:
        u.close()
    assert sum(st_["drops"]["ayiya"].values()) == 0
    ops = st_["tunnels"]["T5072"]["ayiya_opcodes"]
    assert ops["noop"] == 3 and ops["forward"] == len(c2p) - 3
    assert st_["tunnels"]["T5072"]["endpoint"] == "192.0.2.2"


@pytest.mark.lab
def test_lab_behind_nat_heartbeat_sender_and_ayiya_follow_the_public_address(lab_nat):
    lab = lab_nat
    h = start_pop(lab, tls=False)
    u = lab.call_in("cpe", _udp_sock)
    try:
        # heartbeat 'sender' from behind the NAT: the endpoint is the NAT's public address
        u.sendto(heartbeat(HB_CLIENT, "sender", int(time.time())), (POP4, 3740))
        h.wait_until(lambda s: s["tunnels"]["T3740"]["endpoint"] == "203.0.113.2")
        res = lab.sixin4_ping("cpe", POP4, HB_CLIENT, "2001:db8:ffff::2")
        assert len(res["replies"]) == 1  # proto 41 back through the NAT's conntrack entry
        # stating the private address is refused: it is not the source the PoP sees
        u.sendto(heartbeat(HB_CLIENT, "198.51.100.2", int(time.time())), (POP4, 3740))
        h.wait_until(lambda s: s["drops"]["heartbeat"]["address mismatch"] == 1)

        u.sendto(ayiya(A_CLIENT, 2, 59, int(time.time()), b"nat"), (POP4, 5072))
        assert _recv_until(u, lambda d: d[2] & 15 == 4) is not None
        first = h.tunnel("T5072")
        assert first["endpoint"] == "203.0.113.2"
        # the NAT's public address changes; the next signed packet moves the endpoint
        lab.set_nat_public("203.0.113.5")
        u.sendto(ayiya(A_CLIENT, 0, 59, int(time.time())), (POP4, 5072))
        h.wait_until(lambda s: s["tunnels"]["T5072"]["endpoint"] == "203.0.113.5")
        u.sendto(
            ayiya(A_CLIENT, 1, 41, int(time.time()), ping6("2001:db8:2ff:1::2", "2001:db8:ffff::2", seq=9)),
            (POP4, 5072),
        )
        d = _recv_until(u, lambda d: d[2] & 15 == 1)
        assert d is not None and IPv6(ayiya_open(d)[3])[ICMPv6EchoReply].seq == 9
        assert h.tunnel("T5072")["endpoint_moves"] == 2
    finally:
        u.close()
