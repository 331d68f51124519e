"""The reference TSP broker (tests/tsp_broker).

Pure (no root): configuration, DIGEST-MD5 against RFC 2831's own example, the broker's
answers to the gogoCLIENT <-> tsps capture (byte for byte), the interop check with
cpe_tunnel.core.tsp.TspClient in process (both written independently), retransmission
and loss handling, faults, NAT detection, prefix delegation, hostile input (hypothesis),
and the process itself on loopback (--no-dataplane).

Marked `lab` (root): the broker in the lab's broker namespace, driven from the cpe
namespace behind a NAT: v6udpv4 data (an IPv6 echo in UDP reaches the v6 host and comes
back), TspClient over real UDP with DIGEST-MD5 and a v6v4 tunnel carrying a delegated
prefix, redirect to a second broker, v4v6 (IPv4 in IPv6) and TSP over TCP.
"""

import base64
import contextlib
import ipaddress
import json
import os
import random
import select
import socket
import struct
import tempfile
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.tsp_broker import (
    TspBrokerConfigError,
    TspBrokerError,
    example_config,
    parse_config,
    spawn_tsp_broker,
)
from tests.tsp_broker.auth import AuthError, DigestServer, digest_response, parse_plain
from tests.tsp_broker.miniclient import MiniClient, TspError
from tests.tsp_broker.registry import DataTables, Registry
from tests.tsp_broker.transport import TcpStream, UdpControl
from tests.tsp_broker.wire import WireError, decode_udp_message, parse_tunnel_xml, split_stream

from tests.captures import CAPTURES  # noqa: E402

PCAP = os.path.join(CAPTURES, "gogoc-tsps.pcap")
PASSWORDS = ("wonderland", "bob-secret-7")


def make_registry(**over):
    return Registry(parse_config(example_config(**over)))


def tsp_client(**kw):
    from cpe_tunnel.core import tsp

    kw.setdefault("server", "203.0.113.18")
    kw.setdefault("rand", random.Random(7).random)
    return tsp.TspClient(**kw)


def drive(client, reg, transport="udp", peer=("192.0.2.2", 40000), steps=80):
    """Run a TspClient against the broker's transport layer in process (a fresh UDP
    "socket" or TCP connection), with a fake clock stepped from the client's timer.
    Returns (events, UdpControl, TcpStream)."""
    now = 1000.0
    ctl = UdpControl(reg, lambda: "n0nce", None)
    tcp = TcpStream(reg, peer, now, lambda: "n0nce")
    client.connect(now)
    events = []
    for _ in range(steps):
        progressed = False
        if transport == "udp":
            for d in client.datagrams_to_send(now):
                r = ctl.datagram(d, peer, now)
                if r is not None:
                    client.receive_datagram(r, now + 0.002)
                progressed = True
        else:
            out = client.data_to_send()
            if out:
                back = tcp.feed(out, now)
                if back:
                    client.receive_data(back, now)
                progressed = True
        events += client.events()
        if client.state in ("UP", "FAILED", "REDIRECTED", "RESTART"):
            if transport == "tcp":
                out = client.data_to_send()
                if out:
                    tcp.feed(out, now)
            break
        if not progressed:
            t = client.get_timer()
            if t is None:
                break
            now = max(now + 0.001, t)
            client.handle_timer(now)
    return events, ctl, tcp


def last(events, kind):
    found = [e[1] for e in events if e[0] == kind]
    assert found, "no %s event in %r" % (kind, events)
    return found[-1]


# ------------------------------------------------------------------------------------------
# configuration


def test_config_defaults():
    c = parse_config(example_config())
    assert c.port == 3653 and c.udp and c.tcp
    assert c.server_v6 == ipaddress.IPv6Address("2001:db8:100::1")
    assert c.server_v4 == ipaddress.IPv4Address("203.0.113.65")
    assert [a.username for a in c.accounts] == ["alice", "bob"]
    assert "wonderland" not in repr(c) and "bob-secret-7" not in repr(c)


@pytest.mark.parametrize(
    "over, words",
    [
        ({"listen": "not-an-ip"}, "listen"),
        ({"port": 70000}, "port"),
        ({"versions": ["3.0"]}, "versions"),
        ({"tunnel_types": ["v6v4", "gre"]}, "tunnel_types"),
        ({"auth": ["CRAM-MD5"]}, "auth"),
        ({"accounts": [{"username": "a", "password": "x"}, {"username": "a", "password": "y"}]}, "twice"),
        ({"accounts": [{"username": "anonymous", "password": "x"}]}, "reserved"),
        ({"prefix_pool": "2001:db8:100::/48"}, "overlaps"),
        ({"prefix_lengths": [32]}, "prefix_lengths"),
        ({"tun_name": "a-very-long-interface-name"}, "tun_name"),
        ({"v6v4_endpoint": "guess"}, "v6v4_endpoint"),
        ({"udp": False, "tcp": False}, "udp and tcp"),
        ({"frobnicate": 1}, "unknown key"),
    ],
)
def test_config_errors(over, words):
    with pytest.raises(TspBrokerConfigError) as ei:
        parse_config(example_config(**over))
    assert words in str(ei.value)


# ------------------------------------------------------------------------------------------
# SASL


RFC2831 = dict(
    username="chris",
    realm="elwood.innosoft.com",
    password="secret",
    nonce="OA6MG9tEQGm2hh",
    cnonce="OA6MHXh6VqTrRk",
    digest_uri="imap/elwood.innosoft.com",
)


def test_digest_md5_rfc2831_example():
    """RFC 2831 section 4: response=d388dad90d4bbd760a152321f2143af7, rspauth=ea40f6..."""
    assert digest_response(**RFC2831) == "d388dad90d4bbd760a152321f2143af7"
    assert digest_response(for_rspauth=True, **RFC2831) == "ea40f60335c427b5527b84dbabcdfffd"


def test_digest_server_verifies_the_rfc2831_response():
    srv = DigestServer("elwood.innosoft.com", "OA6MG9tEQGm2hh", service="imap")
    resp = (
        b'charset=utf-8,username="chris",realm="elwood.innosoft.com",nonce="OA6MG9tEQGm2hh",'
        b'nc=00000001,cnonce="OA6MHXh6VqTrRk",digest-uri="imap/elwood.innosoft.com",'
        b"response=d388dad90d4bbd760a152321f2143af7,qop=auth"
    )
    user, rsp = srv.verify(resp, {"chris": "secret"}.get)
    assert user == "chris" and rsp == b"rspauth=ea40f60335c427b5527b84dbabcdfffd"
    with pytest.raises(AuthError) as ei:
        srv.verify(resp, {"chris": "Secret"}.get)
    assert "secret" not in str(ei.value).lower().replace("secrets", "")
    for bad in (
        resp.replace(b"nc=00000001", b"nc=00000002"),
        resp.replace(b"OA6MG9tEQGm2hh", b"other"),
        resp.replace(b"imap/", b"smtp/"),
        resp.replace(b"qop=auth", b"qop=auth-conf"),
        resp.replace(b",response=d388dad90d4bbd760a152321f2143af7", b""),
    ):
        with pytest.raises(AuthError):
            srv.verify(bad, {"chris": "secret"}.get)
    with pytest.raises(AuthError):
        DigestServer("elwood.innosoft.com", "OA6MG9tEQGm2hh", ["other.example"], "imap").verify(
            resp, {"chris": "secret"}.get
        )


def test_digest_challenge_is_what_the_client_expects():
    from cpe_tunnel.core import sasl

    srv = DigestServer("lab-tsp", "abc123")
    ch = sasl.parse_directives(srv.challenge())
    assert ch["realm"] == ["lab-tsp"] and ch["nonce"] == "abc123"
    assert ch["qop"] == "auth" and ch["algorithm"] == "md5-sess" and ch["charset"] == "utf-8"


def test_plain_parsing():
    assert parse_plain(b"\x00alice\x00wonderland\r\n") == ("", "alice", "wonderland")
    assert parse_plain(b"admin\x00alice\x00pw") == ("admin", "alice", "pw")
    assert parse_plain(b"\x00\x00alice\x00pw") == ("", "alice", "pw")  # a stray C-string NUL
    for bad in (b"alice:pw", b"\x00\x00pw", b"\x00\xff\x00pw"):
        with pytest.raises(AuthError):
            parse_plain(bad)


# ------------------------------------------------------------------------------------------
# the capture: our broker answers gogoCLIENT exactly as tsps did


@pytest.mark.skipif(not os.path.exists(PCAP), reason="capture not present")
def test_answers_match_tsps_in_the_capture_byte_for_byte():
    from scapy.all import IP, UDP, rdpcap

    cfg = parse_config(
        {
            "listen": "192.0.2.1",
            "tunnel_prefix": "2001:db8:100::/64",
            "anonymous_address": "ipv4-port",
            "tunnel_types": ["v6udpv4"],
            "auth": ["ANONYMOUS"],
        }
    )
    reg = Registry(cfg)
    ctl = UdpControl(reg, lambda: "n", None)
    pending, compared = {}, 0
    for p in rdpcap(PCAP):
        d = bytes(p[UDP].payload)
        if not d or d[0] >> 4 != 0xF:
            continue
        if p[UDP].dport == 3653:
            pending[p[UDP].sport] = ctl.datagram(d, (p[IP].src, p[UDP].sport), float(p.time))
        else:
            assert pending.pop(p[UDP].dport) == d
            compared += 1
    assert compared == 20
    tunnels = list(reg.tunnels.values())
    assert len(tunnels) == 5 and all(t.active and t.type == "v6udpv4" for t in tunnels)
    assert str(tunnels[0].client_v6) == "2001:db8:100:0:ffff:c000:202:d51e"


# ------------------------------------------------------------------------------------------
# interop with cpe_tunnel.core.tsp.TspClient (independently written), in process


@pytest.mark.parametrize("transport", ["udp", "tcp"])
@pytest.mark.parametrize(
    "kw",
    [
        dict(auth="anonymous"),
        dict(auth="plain", username="alice", password="wonderland"),
        dict(auth="digest-md5", username="bob", password="bob-secret-7"),
        dict(auth="any", username="alice", password="wonderland", host_type="router", prefix_len=56),
    ],
    ids=["anonymous", "plain", "digest", "any-router"],
)
def test_tspclient_interop_in_process(transport, kw):
    reg = make_registry()
    c = tsp_client(transport=transport, local_ipv4="192.0.2.2", mode="v6anyv4", **kw)
    events, _, _ = drive(c, reg, transport)
    up = last(events, "tunnel-up")
    assert c.state == "UP"
    (t,) = reg.tunnels.values()
    assert t.active and t.type == up["type"] == "v6v4"  # declared == seen: no NAT
    assert up["client_ipv6"] == str(t.client_v6) and up["server_ipv6"] == "2001:db8:100::1"
    assert up["keepalive_address"] == "2001:db8:100::1" and up["keepalive_interval"] == 30
    assert t.user == kw.get("username") and not t.nat
    if kw.get("host_type") == "router":
        assert up["prefix_len"] == 56 and ipaddress.IPv6Network(up["prefix"] + "/56") == t.prefix
    assert up["auth"] == {"anonymous": "ANONYMOUS", "plain": "PLAIN"}.get(kw["auth"], "DIGEST-MD5")


def test_wrong_password_gives_300_for_each_mechanism():
    for auth in ("plain", "digest-md5"):
        reg = make_registry()
        events, _, _ = drive(
            tsp_client(auth=auth, username="alice", password="not-it", local_ipv4="192.0.2.2"), reg
        )
        assert last(events, "error")["code"] == 300 and not reg.tunnels
    reg = make_registry(auth=["DIGEST-MD5"])
    events, _, _ = drive(tsp_client(auth="anonymous", local_ipv4="192.0.2.2"), reg)
    assert "no common authentication" in last(events, "error")["message"]


def test_version_negotiation_302_then_fallback():
    reg = make_registry(versions=["2.0.0"])
    c = tsp_client(auth="anonymous", local_ipv4="192.0.2.2")
    events, _, _ = drive(c, reg)
    assert [e[1] for e in events if e[0] == "version-fallback"] == [{"version": "2.0.1", "rejected": "2.0.2"}]
    assert c.state == "RESTART" and reg.answers["302"] == 1
    for _ in range(2):
        events, _, _ = drive(c, reg)  # connect() again, as the caller does (new session)
    assert c.state == "UP" and last(events, "tunnel-up")["version"] == "2.0.0"


def test_nat_detection_and_v6anyv4_resolution():
    # declared 192.0.2.2, seen 203.0.113.2: NAT -> v6udpv4 on the session's 5-tuple
    reg = make_registry()
    events, _, _ = drive(
        tsp_client(auth="anonymous", local_ipv4="192.0.2.2"), reg, peer=("203.0.113.2", 61000)
    )
    up = last(events, "tunnel-up")
    assert up["type"] == "v6udpv4" and up["nat_detected"] and up["client_ipv4"] == "203.0.113.2"
    (t,) = reg.tunnels.values()
    assert t.nat and t.endpoint == ("203.0.113.2", 61000) and t.declared == "192.0.2.2"
    assert reg.tables.udp[("203.0.113.2", 61000)] is t
    # the same over TCP: v6udpv4 is impossible, so v6v4 to the seen address
    reg = make_registry()
    events, _, _ = drive(
        tsp_client(auth="anonymous", local_ipv4="192.0.2.2", transport="tcp"),
        reg,
        "tcp",
        peer=("203.0.113.2", 61000),
    )
    (t,) = reg.tunnels.values()
    assert t.type == "v6v4" and t.nat and t.endpoint == "203.0.113.2"
    # explicit types are honoured; v6v4_endpoint=declared uses the declared address
    reg = make_registry(v6v4_endpoint="declared")
    drive(tsp_client(auth="anonymous", local_ipv4="192.0.2.2", mode="v6v4"), reg, peer=("203.0.113.2", 61000))
    (t,) = reg.tunnels.values()
    assert t.type == "v6v4" and t.endpoint == "192.0.2.2"
    # v6udpv4 not offered: v6anyv4 behind NAT still gets v6v4
    reg = make_registry(tunnel_types=["v6v4"])
    events, _, _ = drive(tsp_client(auth="anonymous", local_ipv4="192.0.2.2"), reg, peer=("203.0.113.2", 9))
    assert last(events, "tunnel-up")["type"] == "v6v4"


def test_tunnel_goes_live_only_after_accept():
    reg = make_registry()
    with MiniLoop(reg) as m:
        m.ok(b"VERSION=2.0.2\r\n")
        m.ok(b"AUTHENTICATE ANONYMOUS\r\n\x00")
        ans = m.ok(MiniClient.framed(MiniClient.request_xml("v6udpv4", "192.0.2.2")))
        assert ans.startswith(b"Content-length: ")
        (t,) = reg.tunnels.values()
        assert not t.active and not reg.tables.udp
        assert m.ok(MiniClient.framed(b'<tunnel action="accept"></tunnel>\r\n')) == b""
        assert t.active and reg.tables.udp[m.peer] is t


class MiniLoop:
    """Hand-made datagrams against UdpControl (no sockets)."""

    def __init__(self, reg, peer=("192.0.2.2", 40000)):
        self.reg = reg
        self.ctl = UdpControl(reg, lambda: "n0nce", None)
        self.peer = peer
        self.seq = 240
        self.now = 50.0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def send(self, payload, seq=None, ts=None):
        if seq is None:
            seq = self.seq
            self.seq += 1
        self.now += 0.01
        hdr = struct.pack(
            "!II", 0xF0000000 | seq, ts if ts is not None else int(self.now * 1000) & 0xFFFFFFFF
        )
        r = self.ctl.datagram(hdr + payload, self.peer, self.now)
        if r is not None:
            assert r[:8] == hdr
            return r[8:]
        return None

    def ok(self, payload):
        r = self.send(payload)
        assert r is not None
        if r[:3].isdigit():
            assert r.startswith(b"200 "), r
        return r


def test_retransmission_gets_the_same_answer_once_processed():
    reg = make_registry()
    m = MiniLoop(reg)
    a1 = m.send(b"VERSION=2.0.2\r\n", seq=240, ts=1)
    a2 = m.send(b"VERSION=2.0.2\r\n", seq=240, ts=999)  # retransmission: new timestamp echoed
    assert a1 == a2 and a1.startswith(b"CAPABILITY ")
    assert m.send(b"AUTHENTICATE ANONYMOUS\r\n\x00", seq=241) == b"200 Success\r\n"
    offer = m.send(MiniClient.framed(MiniClient.request_xml("v6udpv4", "192.0.2.2")), seq=242)
    again = m.send(MiniClient.framed(MiniClient.request_xml("v6udpv4", "192.0.2.2")), seq=242)
    assert offer == again and len(reg.tunnels) == 1  # one tunnel, not two
    assert m.send(b"AUTHENTICATE ANONYMOUS\r\n\x00", seq=241) is None  # stale: ignored
    assert reg.counters["duplicates"] == 2 and reg.counters["stale"] == 1
    # a VERSION line starts over even with an old sequence number (client restarted)
    assert m.send(b"VERSION=2.0.2\r\n", seq=240, ts=5).startswith(b"CAPABILITY ")


def test_lost_requests_and_answers_tspclient_recovers():
    reg = make_registry()
    reg.set_faults({"drop_in": 2, "drop_out": 2})
    c = tsp_client(auth="digest-md5", username="alice", password="wonderland", local_ipv4="192.0.2.2")
    events, ctl, _ = drive(c, reg)
    assert c.state == "UP", events
    assert c.retransmissions == 4
    assert reg.counters["dropped_in"] == 2 and reg.counters["dropped_out"] == 2
    assert reg.counters["duplicates"] == 2  # answers withheld were resent from the cache
    assert len(reg.tunnels) == 1


@pytest.mark.parametrize(
    "fault, code, words",
    [
        ({"busy": True}, 530, "too busy"),
        ({"refuse_auth": True}, 300, "authentication failed"),
        ({"status": {"code": 301, "at": "request"}}, 301, "no more tunnels"),
        ({"status": {"code": 310, "at": "version"}}, 310, "error on its side"),
        ({"status": {"code": 777, "at": "auth", "text": "Odd"}}, 777, "unknown status 777"),
    ],
)
def test_status_faults_reach_the_client_in_plain_words(fault, code, words):
    reg = make_registry()
    reg.set_faults(fault)
    events, _, _ = drive(
        tsp_client(auth="digest-md5", username="bob", password="bob-secret-7", local_ipv4="192.0.2.2"), reg
    )
    err = last(events, "error")
    assert err["code"] == code and words in err["message"]
    assert not any(t.active for t in reg.tunnels.values())
    assert reg.answers[str(code)] == 1


@pytest.mark.parametrize("stage", ["version", "auth", "request"])
@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_redirect_fault_gives_the_broker_list(stage, transport):
    reg = make_registry()
    reg.set_faults(
        {
            "redirect": {
                "brokers": ["203.0.113.19", "2001:db8:ffff::5", "tsp.example.net"],
                "at": stage,
                "times": 1,
            }
        }
    )
    c = tsp_client(auth="anonymous", local_ipv4="192.0.2.2", transport=transport)
    events, _, _ = drive(c, reg, transport)
    assert last(events, "redirect") == ["203.0.113.19", "2001:db8:ffff::5", "tsp.example.net"]
    assert reg.faults == []  # times=1: used up
    c2 = tsp_client(auth="anonymous", local_ipv4="192.0.2.2", transport=transport)
    drive(c2, reg, transport)
    assert c2.state == "UP"


def test_raw_fault_sends_hostile_bytes_and_the_client_fails_cleanly():
    reg = make_registry()
    junk = b"Content-length: 999\r\n200 Success\r\n<tunnel"
    reg.set_faults({"raw": {"at": "request", "data_b64": base64.b64encode(junk).decode()}})
    events, _, _ = drive(tsp_client(auth="anonymous", local_ipv4="192.0.2.2"), reg)
    assert last(events, "error")["code"] is None


def test_fault_requests_are_validated():
    reg = make_registry()
    for bad in (
        {"drop": -1},
        {"busy": "yes"},
        {"redirect": {"brokers": []}},
        {"status": {"code": 200, "at": "later"}},
        {"raw": {"data_b64": "!!"}},
        {"explode": True},
        {"redirect": ["a b"]},
    ):
        with pytest.raises(ValueError):
            reg.set_faults(bad)
    assert reg.faults_state() == {"faults": [], "drop_in": 0, "drop_out": 0}


def test_prefix_delegation_rules():
    reg = make_registry()

    def ask(user, plen, mode="v6anyv4", peer=("192.0.2.2", 1)):
        req = parse_tunnel_xml(
            MiniClient.request_xml(mode, "192.0.2.2", "2001:db8:c0::2", router=True, prefix_len=plen)
        )
        return reg.create_tunnel(user, req, "udp", peer, 1.0)

    a48 = ask("alice", 48).prefix
    b48 = ask("bob", 48).prefix
    a56 = ask("alice", 56).prefix
    assert a48.prefixlen == 48 and b48.prefixlen == 48 and a56.prefixlen == 56
    assert not a48.overlaps(b48) and not a56.overlaps(a48) and not a56.overlaps(b48)
    assert all(p.subnet_of(ipaddress.IPv6Network("2001:db8:4000::/40")) for p in (a48, b48, a56))
    assert ask("alice", 48).prefix == a48  # stable across sessions
    assert ask("alice", 48).client_v6 == ipaddress.IPv6Address("2001:db8:100::2")
    assert len([t for t in reg.tunnels.values() if t.user == "alice"]) == 1  # replaced, not added
    from tests.tsp_broker.registry import TunnelError

    for user, plen, code in ((None, 48, 522), ("alice", 60, 518), ("alice", None, 520)):
        with pytest.raises(TunnelError) as ei:
            ask(user, plen)
        assert ei.value.code == code
    three = [{"username": u, "password": "pw-" + u} for u in ("alice", "bob", "carol")]
    small = Registry(
        parse_config(example_config(prefix_pool="2001:db8:4000::/47", prefix_lengths=[48], accounts=three))
    )
    req = parse_tunnel_xml(MiniClient.request_xml("v6v4", "192.0.2.2", router=True, prefix_len=48))
    small.create_tunnel("alice", req, "udp", ("192.0.2.2", 1), 1.0)
    small.create_tunnel("bob", req, "udp", ("192.0.2.3", 1), 1.0)
    with pytest.raises(TunnelError) as ei:
        small.create_tunnel("carol", req, "udp", ("192.0.2.4", 1), 1.0)
    assert ei.value.code == 507
    # v4v6 delegates IPv4 prefixes
    reg6 = make_registry(listen6="2001:db8:c2::2")
    req = parse_tunnel_xml(
        MiniClient.request_xml("v4v6", local_ipv6="2001:db8:c0::2", router=True, prefix_len=28)
    )
    t = reg6.create_tunnel("bob", req, "udp", ("2001:db8:c0::2", 5), 1.0)
    assert t.type == "v4v6" and t.prefix == ipaddress.IPv4Network("203.0.113.128/28")
    assert str(t.client_v4) == "203.0.113.67" and t.endpoint == "2001:db8:c0::2"


def test_data_tables_longest_match_and_source_checks():
    from tests.tsp_broker.registry import owns_src6

    reg = make_registry()
    req = parse_tunnel_xml(MiniClient.request_xml("v6v4", "192.0.2.2", router=True, prefix_len=56))
    t = reg.create_tunnel("alice", req, "udp", ("192.0.2.2", 1), 1.0)
    reg.activate(t, 2.0)
    tab = reg.tables
    assert isinstance(tab, DataTables)
    assert tab.tunnel_for_dst6(ipaddress.IPv6Address("2001:db8:100::2").packed) is t
    assert tab.tunnel_for_dst6(ipaddress.IPv6Address("2001:db8:4000:ff::9").packed) is t
    assert tab.tunnel_for_dst6(ipaddress.IPv6Address("2001:db8:4000:100::9").packed) is None
    assert tab.tunnel_for_dst6(ipaddress.IPv6Address("2001:db8:100::3").packed) is None
    assert owns_src6(t, ipaddress.IPv6Address("2001:db8:4000:12::1").packed)
    assert not owns_src6(t, ipaddress.IPv6Address("2001:db8:100::3").packed)
    assert tab.v4ep["192.0.2.2"] == [t]


# ------------------------------------------------------------------------------------------
# hostile input


def _session_prefixes():
    req = MiniClient.framed(MiniClient.request_xml("v6udpv4", "192.0.2.2"))
    return [
        [],
        [b"VERSION=2.0.2\r\n"],
        [b"VERSION=2.0.2\r\n", b"AUTHENTICATE PLAIN\r\n\x00"],
        [b"VERSION=2.0.2\r\n", b"AUTHENTICATE DIGEST-MD5\r\n\x00"],
        [b"VERSION=2.0.2\r\n", b"AUTHENTICATE ANONYMOUS\r\n\x00"],
        [b"VERSION=2.0.2\r\n", b"AUTHENTICATE ANONYMOUS\r\n\x00", req],
    ]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prefix=st.sampled_from(range(6)), junk=st.binary(max_size=400), raw_header=st.booleans())
def test_fuzz_udp_control_never_crashes(prefix, junk, raw_header):
    reg = make_registry()
    m = MiniLoop(reg)
    for p in _session_prefixes()[prefix]:
        m.send(p)
    if raw_header:
        r = m.ctl.datagram(junk, m.peer, 99.0)
        assert r is None or (isinstance(r, bytes) and r[:8] == junk[:8])
    else:
        r = m.send(junk)
        assert r is None or isinstance(r, bytes)


@settings(max_examples=200, deadline=None)
@given(prefix=st.sampled_from(range(6)), junk=st.binary(max_size=600), cut=st.integers(0, 600))
def test_fuzz_tcp_stream_never_crashes(prefix, junk, cut):
    reg = make_registry()
    s = TcpStream(reg, ("192.0.2.2", 5), 1.0, lambda: "n")
    data = b"".join(p.replace(b"\r\n\x00", b"\r\n") for p in _session_prefixes()[prefix]) + junk
    out = s.feed(data[:cut], 1.0) + s.feed(data[cut:], 1.0)
    assert isinstance(out, bytes)


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_fuzz_mutated_requests_get_a_status(data):
    body = bytearray(MiniClient.request_xml("v6anyv4", "192.0.2.2", router=True, prefix_len=48))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(body) - 1))
        body[i] = data.draw(st.integers(0, 255))
    reg = make_registry()
    m = MiniLoop(reg)
    m.ok(b"VERSION=2.0.2\r\n")
    m.send(b"AUTHENTICATE PLAIN\r\n\x00")
    m.ok(b"\x00alice\x00wonderland\r\n")
    r = m.send(MiniClient.framed(bytes(body)))
    assert r.startswith(b"Content-length: ")
    code = int(r.split(b"\r\n")[1][:3])
    assert code in (200, 500, 501, 502, 303, 518, 520, 522)


def test_tcp_stream_with_gogoclient_style_nul_terminators_and_split_reads():
    """gogoCLIENT writes C strings with their NUL over TCP too; PLAIN starts with a NUL."""
    reg = make_registry()
    s = TcpStream(reg, ("192.0.2.2", 5), 1.0, lambda: "n")
    stream = (
        b"VERSION=2.0.2\r\n\x00AUTHENTICATE PLAIN\r\n\x00\x00alice\x00wonderland\r\n\x00"
        + MiniClient.framed(MiniClient.request_xml("v6v4", "192.0.2.2"))
        + b"\x00"
        + MiniClient.framed(b'<tunnel action="accept"></tunnel>\r\n')
    )
    out = b"".join(s.feed(stream[i : i + 7], 1.0) for i in range(0, len(stream), 7))
    assert out.startswith(
        b"CAPABILITY TUNNEL=V6V4 TUNNEL=V6UDPV4 AUTH=DIGEST-MD5 AUTH=PLAIN AUTH=ANONYMOUS\r\n"
    )
    assert b"200 Success\r\nContent-length: " in out and s.done
    (t,) = reg.tunnels.values()
    assert t.active and t.user == "alice" and t.transport == "tcp"


def test_idle_udp_sessions_are_forgotten():
    reg = make_registry()
    m = MiniLoop(reg)
    m.ok(b"VERSION=2.0.2\r\n")
    assert len(m.ctl.info()) == 1 and m.ctl.info()[0]["state"] == "AUTH"
    m.ctl.expire(m.now + 5, 120)
    assert len(m.ctl.info()) == 1
    m.ctl.expire(m.now + 121, 120)
    assert m.ctl.info() == []


def test_parsers_reject_hostile_xml_and_framing():
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE t [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]>'
        b'<tunnel action="create" type="v6v4"><client><address type="ipv4">&b;</address></client></tunnel>'
    )
    for bad in (
        bomb,
        b"<tunnel",
        b'<tunnel action="create"><client><address type="ipv4">1.2.3</address></client></tunnel>',
        b"<other/>",
        b"x" * 20000,
    ):
        with pytest.raises(WireError):
            parse_tunnel_xml(bad)
    with pytest.raises(WireError):
        decode_udp_message(b"Content-length: 50\r\nshort")
    with pytest.raises(WireError):
        decode_udp_message(b"Content-length: 5\r\n12345 and more")
    with pytest.raises(WireError):
        decode_udp_message(b"Content-length: 99999999\r\n")
    assert split_stream(b"Content-length: 10\r\n12345") is None
    assert split_stream(b"\x00Content-length: 3\r\nabcREST") == (("framed", b"abc"), b"REST")
    with pytest.raises(WireError):
        split_stream(b"A" * 5000)


# ------------------------------------------------------------------------------------------
# the process, on loopback (no root needed)


@contextlib.contextmanager
def local_broker(**over):
    cfg = example_config(listen="127.0.0.1", port=0, **over)
    with tempfile.TemporaryDirectory() as wd:
        h = spawn_tsp_broker(cfg, wd, dataplane=False)
        try:
            yield h
        finally:
            h.stop()


def test_process_on_loopback_udp_tcp_faults_and_state():
    with local_broker() as h:
        ports = h.ping()["ports"]
        with MiniClient("127.0.0.1", ports["udp"]) as c:
            offer = c.negotiate(
                "v6anyv4",
                "127.0.0.1",
                user="alice",
                password="wonderland",
                mechanism="DIGEST-MD5",
                server_name="127.0.0.1",
            )
        assert offer["type"] == "v6v4" and offer["rspauth_ok"]
        assert offer["client_ipv6"] == "2001:db8:100::2"
        assert "TUNNEL=V4V6" not in offer["capability"]  # no listen6: not offered
        with MiniClient("127.0.0.1", ports["tcp"], transport="tcp") as c:
            offer = c.negotiate(
                "v6v4",
                "127.0.0.1",
                user="bob",
                password="bob-secret-7",
                mechanism="PLAIN",
                router=True,
                prefix_len=56,
            )
        assert offer["prefix_len"] == 56 and offer["prefix_text"] == "2001:0db8:4000:0000"
        st_ = h.wait_until(lambda s: all(t["active"] for t in s["tunnels"].values()))
        ts = sorted(st_["tunnels"].values(), key=lambda t: t["user"])
        assert [(t["user"], t["transport"], t["active"]) for t in ts] == [
            ("alice", "udp", True),
            ("bob", "tcp", True),
        ]
        assert st_["dataplane"] is False and st_["answers"]["200"] >= 4
        h.set_fault(busy=True)
        with MiniClient("127.0.0.1", ports["udp"]) as c:
            with pytest.raises(TspError) as ei:
                c.negotiate("v6v4", "127.0.0.1")
        assert ei.value.code == 530
        h.set_fault(clear=True, drop=1)
        with MiniClient("127.0.0.1", ports["udp"], timeout=0.5) as c:
            c.negotiate("v6udpv4", "127.0.0.1")
            assert c.retransmissions >= 1  # (more only if the host is slow)
        h.set_fault(clear=True, refuse_auth=True)
        with MiniClient("127.0.0.1", ports["tcp"], transport="tcp") as c:
            with pytest.raises(TspError) as ei:
                c.negotiate("v6v4", "127.0.0.1", user="alice", password="wonderland", mechanism="PLAIN")
        assert ei.value.code == 300
        h.clear_faults()
        with MiniClient("127.0.0.1", ports["udp"]) as c:
            with pytest.raises(TspError):
                c.negotiate("v6v4", "127.0.0.1", user="alice", password="wonderland-typo", mechanism="PLAIN")
        h.reset_counters()
        assert h.state()["answers"] == {}
        with pytest.raises(TspBrokerError) as ei:
            h.set_fault(explode=True)
        assert "unknown fault" in str(ei.value)
        log = h.log_text()
    assert "offer" in log and "wonderland" not in log and "bob-secret-7" not in log


# ------------------------------------------------------------------------------------------
# the lab: broker namespace, client in the cpe namespace behind one NAT


@pytest.fixture(scope="module")
def natlab():
    from tests.lab.fixtures import lab_unusable_reason
    from tests.lab.lab import Lab

    reason = lab_unusable_reason()
    if reason:
        pytest.skip(reason)
    lab = Lab(nat=True).build()
    try:
        yield lab
    finally:
        lab.teardown()


@contextlib.contextmanager
def lab_broker(lab, cfg=None):
    from tests.tsp_broker import start_tsp_broker

    h = start_tsp_broker(lab, cfg or example_config())
    try:
        yield h
    finally:
        h.stop()
        if h in lab._brokers:
            lab._brokers.remove(h)


def _echo6(src, dst, ident, seq=1, payload=b"tsp-broker-lab"):
    from tests.lab.probe import echo_request

    return echo_request(src, dst, ident, seq, payload)


def _v6udpv4_session(ports):
    """In the cpe namespace: negotiate v6anyv4 (lossy: the broker drops some control
    packets), then send IPv6 echoes in UDP; returns what came back."""
    out = {}
    with MiniClient("203.0.113.18", ports["udp"], timeout=0.6, tries=6) as c:
        offer = out["offer"] = c.negotiate("v6anyv4", local_ipv4="198.51.100.2", keepalive=10)
        out["retransmissions"] = c.retransmissions
        me = offer["client_ipv6"]
        c.sock.send(_echo6(me, "2001:db8:ffff::2", 0x4242))
        c.sock.send(_echo6(me, offer["keepalive_address"], 0x4343))  # the keepalive target
        c.sock.send(_echo6("2001:db8:dead::1", "2001:db8:ffff::2", 0x4444))  # spoofed source
        got = []
        deadline = time.monotonic() + 3
        while len(got) < 2 and time.monotonic() < deadline:
            c.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                d = c.sock.recv(2048)
            except socket.timeout:
                break
            if d[0] >> 4 == 6 and d[40] == 129:
                got.append((socket.inet_ntop(socket.AF_INET6, d[8:24]), struct.unpack("!H", d[44:46])[0]))
        out["replies"] = sorted(got)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:  # data from another port
        other.sendto(_echo6(offer["client_ipv6"], "2001:db8:ffff::2", 0x4545), ("203.0.113.18", ports["udp"]))
    return out


@pytest.mark.lab
def test_lab_v6udpv4_behind_nat_echo_reaches_v6host_and_back(natlab):
    natlab.v6host_counter("2001:db8:100::/64")
    with lab_broker(natlab) as h:
        h.set_fault(drop_in=1, drop_out=1)
        out = natlab.call_in("cpe", _v6udpv4_session, h.ping()["ports"], timeout=30)
        offer = out["offer"]
        assert offer["type"] == "v6udpv4" and offer["client_ipv4"] == "203.0.113.2"  # NAT seen
        assert out["retransmissions"] >= 2  # one request and one answer lost
        assert out["replies"] == sorted([("2001:db8:ffff::2", 0x4242), ("2001:db8:100::1", 0x4343)])
        assert natlab.v6host_counter("2001:db8:100::/64") == 1
        st_ = h.wait_until(lambda s: s["drops"].get("unknown_source"))
        (t,) = st_["tunnels"].values()
        assert t["nat"] and t["declared"] == "198.51.100.2" and t["endpoint"].startswith("203.0.113.2:")
        assert t["rx_packets"] == 2 and t["tx_packets"] == 2 and t["drops"] == {"spoofed_source": 1}
        assert st_["counters"]["dropped_in"] == 1 and st_["counters"]["dropped_out"] == 1


def _run_tspclient(server, port, deadline_s=15, **kw):
    """Drive cpe_tunnel's TspClient over a real UDP socket in this thread's namespace."""
    c = tsp_client(server=server, **kw)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect((server, port))
    events = []
    try:
        c.connect(time.monotonic())
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            for d in c.datagrams_to_send(time.monotonic()):
                s.send(d)
            events += c.events()
            if c.state in ("UP", "FAILED", "REDIRECTED", "RESTART"):
                break
            t = c.get_timer()
            wait = 0.5 if t is None else max(0.0, min(0.5, t - time.monotonic()))
            r, _, _ = select.select([s], [], [], wait)
            if r:
                c.receive_datagram(s.recv(65536), time.monotonic())
            else:
                c.handle_timer(time.monotonic())
        for d in c.datagrams_to_send(time.monotonic()):
            s.send(d)
        events += c.events()
    finally:
        s.close()
    return c.state, events


@pytest.mark.lab
def test_lab_tspclient_interop_digest_v6v4_with_prefix(natlab):
    with lab_broker(natlab) as h:
        state, events = natlab.call_in(
            "cpe",
            _run_tspclient,
            "203.0.113.18",
            3653,
            auth="digest-md5",
            username="alice",
            password="wonderland",
            mode="v6v4",
            host_type="router",
            prefix_len=48,
            local_ipv4="198.51.100.2",
        )
        assert state == "UP", events
        up = last(events, "tunnel-up")
        assert up["type"] == "v6v4" and up["auth"] == "DIGEST-MD5" and up["nat_detected"]
        t = h.wait_tunnel(active=True, user="alice")
        assert t["endpoint"] == "203.0.113.2" and t["prefix"] == "2001:db8:4000::/48"
        # proto-41 through the NAT, from the tunnel address and from the delegated prefix
        for src in (up["client_ipv6"], "2001:db8:4000:1::1"):
            r = natlab.sixin4_ping("cpe", "203.0.113.18", src, "2001:db8:ffff::2", count=1, timeout=2)
            assert len(r["replies"]) == 1 and r["replies"][0]["inner_dst"] == src
        r = natlab.sixin4_ping(
            "cpe", "203.0.113.18", "2001:db8:4001::1", "2001:db8:ffff::2", count=1, timeout=0.5
        )
        assert r["replies"] == []  # outside the tunnel's prefix: dropped
        t = h.tunnels(user="alice")[0]
        assert t["rx_packets"] == 2 and t["tx_packets"] == 2 and t["drops"] == {"spoofed_source": 1}


@pytest.mark.lab
def test_lab_redirect_lands_on_the_second_broker(natlab):
    second = example_config(
        listen="203.0.113.19",
        tunnel_prefix="2001:db8:101::/64",
        prefix_pool="2001:db8:5000::/40",
        tunnel_prefix4="203.0.113.32/28",
        prefix_pool4="203.0.113.48/28",
    )
    with lab_broker(natlab) as h1, lab_broker(natlab, second) as h2:
        h1.set_fault(redirect=["203.0.113.19"])
        state, events = natlab.call_in(
            "cpe", _run_tspclient, "203.0.113.18", 3653, auth="anonymous", local_ipv4="198.51.100.2"
        )
        assert state == "REDIRECTED" and last(events, "redirect") == ["203.0.113.19"]
        state, events = natlab.call_in(
            "cpe", _run_tspclient, "203.0.113.19", 3653, auth="anonymous", local_ipv4="198.51.100.2"
        )
        assert state == "UP" and last(events, "tunnel-up")["client_ipv6"].startswith("2001:db8:101:")
        assert h1.state()["answers"] == {"1001": 1} and not h1.state()["tunnels"]
        assert h2.wait_tunnel(active=True)["type"] == "v6udpv4"


def _v4v6_session(ports):
    from scapy.all import ICMP, IP, raw

    out = {}
    with MiniClient("2001:db8:c2::2", ports["udp"]) as c:
        out["offer"] = offer = c.negotiate("v4v6", local_ipv6="2001:db8:c0::2")
    s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, 4)
    try:
        s.settimeout(3)
        pkt = raw(
            IP(src=offer["client_ipv4"], dst=offer["server_ipv4"], ttl=64) / ICMP(id=77, seq=1) / b"v4v6"
        )
        s.sendto(pkt, ("2001:db8:c2::2", 0))
        end = time.monotonic() + 3
        while time.monotonic() < end:
            d, addr = s.recvfrom(2048)
            if d[0] >> 4 == 4 and d[9] == 1 and d[20] == 0:
                out["reply"] = (
                    addr[0],
                    socket.inet_ntoa(d[12:16]),
                    socket.inet_ntoa(d[16:20]),
                    struct.unpack("!H", d[24:26])[0],
                )
                break
    finally:
        s.close()
    return out


@pytest.mark.lab
def test_lab_v4v6_ipv4_in_ipv6(natlab):
    # IPv6 on the access path (the ISP's NAT is IPv4 only): cpe - isp - inet - broker
    v6 = {
        "cpe": ["addr add 2001:db8:c0::2/64 dev wan0", "route add ::/0 via 2001:db8:c0::1"],
        "isp": [
            "addr add 2001:db8:c0::1/64 dev inside0",
            "addr add 2001:db8:c1::2/64 dev outside0",
            "route add ::/0 via 2001:db8:c1::1",
        ],
        "inet": [
            "addr add 2001:db8:c1::1/64 dev isp0",
            "addr add 2001:db8:c2::1/64 dev brk0",
            "route add 2001:db8:c0::/64 via 2001:db8:c1::2",
        ],
        "broker": ["addr add 2001:db8:c2::2/64 dev inet0", "route add 2001:db8:c0::/64 via 2001:db8:c2::1"],
    }
    for ns, lines in v6.items():
        natlab.run(ns, ["ip", "-batch", "-"], input="\n".join(lines) + "\n")
    try:
        with lab_broker(natlab, example_config(listen6="2001:db8:c2::2")) as h:
            out = natlab.call_in("cpe", _v4v6_session, h.ping()["ports"], timeout=30)
            offer = out["offer"]
            assert "TUNNEL=V4V6" in offer["capability"]
            assert offer["type"] == "v4v6" and offer["server_ipv6"] == "2001:db8:c2::2"
            assert offer["client_ipv6"] == "2001:db8:c0::2" and offer["server_ipv4"] == "203.0.113.65"
            assert offer["keepalive_address"] == "203.0.113.65"
            assert out.get("reply") == ("2001:db8:c2::2", "203.0.113.65", offer["client_ipv4"], 77)
            t = h.wait_tunnel(active=True)
            assert t["type"] == "v4v6" and t["rx_packets"] == 1 and t["tx_packets"] == 1
    finally:
        for ns, lines in v6.items():
            natlab.run(
                ns,
                ["ip", "-batch", "-"],
                check=False,
                input="\n".join(x.replace(" add ", " del ", 1) for x in reversed(lines)) + "\n",
            )


def _tcp_plain(ports):
    with MiniClient("203.0.113.18", ports["tcp"], transport="tcp") as c:
        return c.negotiate(
            "v6v4", local_ipv4="198.51.100.2", user="bob", password="bob-secret-7", mechanism="PLAIN"
        )


@pytest.mark.lab
def test_lab_tsp_over_tcp_then_proto41(natlab):
    with lab_broker(natlab) as h:
        offer = natlab.call_in("cpe", _tcp_plain, h.ping()["ports"], timeout=20)
        assert offer["type"] == "v6v4" and offer["client_ipv4"] == "203.0.113.2"
        t = h.wait_tunnel(active=True, user="bob")
        assert t["transport"] == "tcp" and t["endpoint"] == "203.0.113.2"
        r = natlab.sixin4_ping("cpe", "203.0.113.18", offer["client_ipv6"], offer["server_ipv6"], count=1)
        assert len(r["replies"]) == 1  # the keepalive target answers over proto 41
        log = h.log_text()
        assert "bob-secret-7" not in log and json.dumps(h.state()).find("bob-secret-7") < 0
