"""Hypothesis fuzzing of the ICMPv6 / IPv6 / ND parsers, plus checksum cross-checks
against scapy's independent implementation."""

from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet6 import ICMPv6EchoReply, ICMPv6EchoRequest, IPv6, in6_chksum
from scapy.packet import raw
from scapy.utils import checksum as scapy_checksum

from cpe_tunnel.core import icmp6, ra
from cpe_tunnel.core.addr import ip6_ntoa
from cpe_tunnel.core.errors import RemoteProtocolError

addr16 = st.binary(min_size=16, max_size=16)
u16 = st.integers(0, 0xFFFF)

GOOD_RA = ra.build_ra(source_lladdr=b"\x02\x00\x00\x00\x00\x01", mtu=1480,
                      prefixes=[(bytes(16), 64, True, True, 100, 50)], rdnss=[bytes(15) + b"\x01"])
GOOD_RS = b"\x85\x00\x00\x00\x00\x00\x00\x00\x01\x01\x02\x00\x00\x00\x00\x01"
GOOD_ECHO = icmp6.echo_request(1, 2, b"payload")
GOOD_PKT = icmp6.build_ipv6_packet(bytes(16), bytes(15) + b"\x01", 58, GOOD_ECHO)


@st.composite
def mutated(draw, base):
    """A valid message with a few bytes flipped, cut or appended."""
    b = bytearray(base)
    for _ in range(draw(st.integers(0, 4))):
        if b:
            i = draw(st.integers(0, len(b) - 1))
            b[i] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(b)))
    b = b[:cut] + draw(st.binary(max_size=24))
    return bytes(b)


def _only_remote_errors(fn, data, *args):
    try:
        fn(data, *args)
    except RemoteProtocolError as e:
        assert isinstance(e.reason, str) and e.reason


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.binary(max_size=200), mutated(GOOD_RA), mutated(GOOD_RS)))
def test_fuzz_nd_parsers(data):
    _only_remote_errors(ra.parse_ra, data)
    _only_remote_errors(ra.parse_ra, data, "fe80::1")
    _only_remote_errors(ra.parse_rs, data)
    _only_remote_errors(ra.parse_rs, data, "::")
    _only_remote_errors(ra.parse_options, data)
    _only_remote_errors(ra.parse_ra, memoryview(data))


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.binary(max_size=120), mutated(GOOD_ECHO), mutated(GOOD_PKT)), addr16, addr16)
def test_fuzz_icmp6_parsers(data, a, b):
    _only_remote_errors(icmp6.parse_echo, data)
    _only_remote_errors(icmp6.parse_echo, data, a, b)
    _only_remote_errors(icmp6.parse_ipv6_header, data)
    _only_remote_errors(icmp6.parse_ipv6_header, memoryview(data))
    _only_remote_errors(icmp6.parse_ipv6_header, bytearray(data))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000))
def test_checksum_matches_scapy(data):
    assert icmp6.checksum(data) == scapy_checksum(data)


@settings(max_examples=300, deadline=None)
@given(addr16, addr16, u16, u16, st.binary(max_size=300), st.booleans())
def test_echo_checksum_matches_scapy(src, dst, ident, seq, payload, reply):
    build = icmp6.echo_reply if reply else icmp6.echo_request
    layer = ICMPv6EchoReply if reply else ICMPv6EchoRequest
    ours = build(ident, seq, payload, src=src, dst=dst)
    theirs = raw(IPv6(src=ip6_ntoa(src), dst=ip6_ntoa(dst)) / layer(id=ident, seq=seq, data=payload))
    assert ours == theirs[40:]
    # the unchecksummed form differs only in the checksum field, which in6_chksum fills
    plain = build(ident, seq, payload)
    assert plain[2:4] == b"\x00\x00" and plain[4:] == ours[4:]
    assert in6_chksum(58, IPv6(src=ip6_ntoa(src), dst=ip6_ntoa(dst)), plain) == \
        icmp6.icmp6_checksum(src, dst, plain)
    # whole packet round trip
    pkt = icmp6.build_ipv6_packet(src, dst, 58, ours, hop_limit=7)
    s, d, nh, pl, hl = icmp6.parse_ipv6_header(pkt)
    assert (s, d, nh, hl) == (src, dst, 58, 7)
    assert icmp6.parse_echo(pl, s, d) == (129 if reply else 128, ident, seq, payload)
    # any single-bit corruption of the message is caught by the checksum
    for bit in (0, 17, 8 * len(ours) - 1):
        bad = bytearray(ours)
        bad[bit // 8] ^= 1 << (bit % 8)
        try:
            icmp6.parse_echo(bytes(bad), src, dst)
        except RemoteProtocolError:
            continue
        raise AssertionError("corruption at bit %d not detected" % bit)


@settings(max_examples=200, deadline=None)
@given(addr16, addr16, st.integers(0, 255), st.binary(max_size=100), st.integers(0, 255),
       st.integers(0, 255), st.integers(0, 0xFFFFF))
def test_ipv6_header_matches_scapy(src, dst, nh, payload, hlim, tc, fl):
    ours = icmp6.build_ipv6_packet(src, dst, nh, payload, hop_limit=hlim, tclass=tc, flow=fl)
    p = IPv6(ours)
    assert (p.version, p.tc, p.fl, p.plen, p.nh, p.hlim) == (6, tc, fl, len(payload), nh, hlim)
    assert p.src == ip6_ntoa(src) and p.dst == ip6_ntoa(dst)
