"""The SixXS captures (../shared/captures, real AICCU / sixxsd traffic) read with scapy:
every AYIYA datagram and heartbeat verifies with our codecs, re-encodes byte for byte,
replays through our sessions, and the hex tables in tests/core match the pcaps."""

import hashlib
import os
import socket

import pytest
import test_ayiya
import test_heartbeat
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.utils import rdpcap

from cpe_tunnel.core import addr, ayiya, heartbeat

from tests.captures import CAPTURES  # noqa: E402
AYIYA_PCAP = os.path.join(CAPTURES, "aiccu-ayiya.pcap")
PROBE_PCAP = os.path.join(CAPTURES, "sixxsd_probe.pcap")
KEY = ayiya.password_hash("ayiyasecret123")
CLIENT = addr.ip6_aton("2001:db8:2ff:1::2")
POP = addr.ip6_aton("2001:db8:2ff:1::1")

pytestmark = pytest.mark.skipif(not os.path.exists(AYIYA_PCAP) or not os.path.exists(PROBE_PCAP),
                                reason="SixXS captures not present")


def _udp(path, port):
    out = []
    for p in rdpcap(path):
        if UDP in p and port in (p[UDP].sport, p[UDP].dport):
            out.append((float(p.time), p[IP].src, p[IP].dst, p[UDP].sport, p[UDP].dport,
                        bytes(p[UDP].payload)))
    return out


def _ayiya():
    return _udp(AYIYA_PCAP, ayiya.PORT) + _udp(PROBE_PCAP, ayiya.PORT)


def test_core_tables_match_the_pcaps():
    seen = []
    table = []
    for t, src, dst, sport, dport, d in _ayiya():
        if d in seen:
            continue
        seen.append(d)
        table.append(("c2p" if dport == ayiya.PORT else "p2c", int(t), d.hex()))
    assert table == test_ayiya.VECTORS
    hb = _udp(PROBE_PCAP, heartbeat.PORT)
    assert len(hb) == 1
    assert hb[0][5] == test_heartbeat.CAPTURED and int(hb[0][0]) == test_heartbeat.CAPTURED_TIME


def test_every_ayiya_datagram_verifies_and_reencodes():
    pkts = _ayiya()
    assert len(pkts) == 18
    for t, src, dst, sport, dport, d in pkts:
        from_client = dport == ayiya.PORT
        assert src == ("192.0.2.2" if from_client else "192.0.2.1")
        ident = CLIENT if from_client else POP
        op, nh, payload, epoch = ayiya.ayiya_decode(d, KEY, t, 120, ident)
        assert ayiya.ayiya_encode(ident, op, nh, bytes(payload), epoch, KEY) == d
        # an independent statement of the signature rule
        b = bytearray(d)
        b[24:44] = hashlib.sha1(b"ayiyasecret123").digest()
        assert hashlib.sha1(bytes(b)).digest() == d[24:44]
        if op == ayiya.OP_FORWARD:
            inner = IPv6(bytes(payload))
            assert len(bytes(payload)) == 40 + inner.plen
            if from_client:
                assert inner.src in ("2001:db8:2ff:1::2",) or inner.src.startswith("fe80:")
            else:
                assert inner.dst == "2001:db8:2ff:1::2"


def test_capture_replays_through_sessions():
    client = ayiya.AyiyaSession(CLIENT, POP, "ayiyasecret123", 60)
    pop = ayiya.AyiyaSession(POP, CLIENT, "ayiyasecret123", 0)
    delivered = 0
    for t, src, dst, sport, dport, d in _ayiya():
        side = pop if dport == ayiya.PORT else client
        if side.receive(d, t, t) is not None:
            delivered += 1
        assert side.accepted
    assert client.status(0)["drops_total"] == 0 and pop.status(0)["drops_total"] == 0
    assert delivered == 15  # everything but AICCU's three no-op beats
    # the same datagrams resent 10 minutes later: all dropped as stale, none delivered
    late = ayiya.AyiyaSession(CLIENT, POP, "ayiyasecret123", 60)
    for t, src, dst, sport, dport, d in _ayiya():
        if dport != ayiya.PORT:
            assert late.receive(d, t + 600, t + 600) is None
    st = late.status(0)
    assert st["drops"] == {"stale timestamp": st["drops_total"]} and st["drops_total"] == 7
    assert "600 seconds" in late.clock_problem()


def test_our_beat_equals_aiccus():
    beats = [(t, d) for t, src, dst, sport, dport, d in _udp(AYIYA_PCAP, ayiya.PORT)
             if d[2] & 15 == ayiya.OP_NOOP]
    assert len(beats) == 3
    for t, d in beats:
        s = ayiya.AyiyaSession("2001:db8:2ff:1::2", "2001:db8:2ff:1::1", "ayiyasecret123", 60)
        s.handle_timer(0.0, t)
        assert s.datagrams_to_send() == [d]


def test_heartbeat_from_capture():
    (t, src, _dst, _sport, _dport, d), = _udp(PROBE_PCAP, heartbeat.PORT)
    r = heartbeat.heartbeat_verify(d, "hbsecret456", t, 120, src)
    assert r["ipv4"] == src and r["sender"] and r["ipv6"] == "2001:db8:2ff:2::2"
    assert heartbeat.heartbeat_message(r["ipv6"], "sender", r["epoch"], "hbsecret456") == d
    s = heartbeat.HeartbeatSession(60, "2001:db8:2ff:2::2", "hbsecret456")
    s.handle_timer(1.0, t)
    assert s.datagrams_to_send() == [d]
    # the same heartbeat stating an address is bound to that source
    m = heartbeat.heartbeat_message(r["ipv6"], src, r["epoch"], "hbsecret456")
    assert heartbeat.heartbeat_verify(m, "hbsecret456", t, 120, src)["ipv4"] == src
    with pytest.raises(heartbeat.HeartbeatError) as ei:
        heartbeat.heartbeat_verify(m, "hbsecret456", t, 120, "192.0.2.99")
    assert ei.value.code == "address mismatch"
    assert socket.inet_aton(src)  # sanity: the capture's source is an IPv4 address
