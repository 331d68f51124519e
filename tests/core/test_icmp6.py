import binascii

from corecheck import raises as _raises

from cpe_tunnel.core import icmp6
from cpe_tunnel.core.addr import ip6_aton
from cpe_tunnel.core.errors import LocalProtocolError, RemoteProtocolError

A = ip6_aton("2001:db8::1")
B = ip6_aton("2001:db8::2")

# Whole packets produced by scapy (an independent encoder), checksums included.
PKT1 = binascii.unhexlify(
    "60000000000b3a4020010db800000000000000000000000120010db80000000000000000000000028000"
    "4dad12340001616263")
PKT2 = binascii.unhexlify(
    "6000000000083afffe800000000000000000000000000001ff0200000000000000000000000000018000"
    "82300007ffff")


def test_checksum_rfc1071_example():
    # RFC 1071 §3 example: the sum of 0001 f203 f4f5 f6f7 is ddf2, complemented 220d
    assert icmp6.checksum(b"\x00\x01\xf2\x03\xf4\xf5\xf6\xf7") == 0x220D
    assert icmp6.checksum(b"") == 0xFFFF
    # odd length pads with a zero byte
    assert icmp6.checksum(b"\x01") == icmp6.checksum(b"\x01\x00")
    # carries wrap around
    assert icmp6.checksum(b"\xff\xff\x00\x01") == 0xFFFE


def test_checksum_large_buffer():
    data = bytes(range(256)) * 20 + b"\x07"
    s = 0
    for i in range(0, len(data) - 1, 2):
        s += (data[i] << 8) | data[i + 1]
    s += data[-1] << 8
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    assert icmp6.checksum(data) == (~s) & 0xFFFF


def test_echo_request_matches_scapy_vector():
    msg = icmp6.echo_request(0x1234, 1, b"abc", src=A, dst=B)
    assert msg == PKT1[40:]
    pkt = icmp6.build_ipv6_packet(A, B, 58, msg)
    assert pkt == PKT1
    msg2 = icmp6.echo_request(7, 65535, b"", src="fe80::1", dst="ff02::1")
    assert icmp6.build_ipv6_packet("fe80::1", "ff02::1", 58, msg2, hop_limit=255) == PKT2


def test_echo_request_without_addresses_has_zero_checksum():
    msg = icmp6.echo_request(0x1234, 1, b"abc")
    assert msg[:4] == b"\x80\x00\x00\x00"
    assert msg[4:] == b"\x12\x34\x00\x01abc"
    # a correct message checks to 0 against its pseudo-header
    assert icmp6.icmp6_checksum(A, B, PKT1[40:]) == 0
    assert icmp6.icmp6_checksum(A, B, msg) == 0x4DAD


def test_echo_reply_and_parse():
    msg = icmp6.echo_reply(0xBEEF, 42, b"\x00\x01payload", src=B, dst=A)
    assert msg[0] == 129
    assert icmp6.parse_echo(msg) == (129, 0xBEEF, 42, b"\x00\x01payload")
    assert icmp6.parse_echo(msg, B, A) == (129, 0xBEEF, 42, b"\x00\x01payload")
    # (swapping src and dst keeps the sum, another address does not)
    _raises(RemoteProtocolError, icmp6.parse_echo, msg, B, ip6_aton("2001:db8::3"))
    assert icmp6.parse_echo(PKT1[40:], A, B) == (128, 0x1234, 1, b"abc")


def test_parse_echo_rejects():
    good = icmp6.echo_request(1, 2)
    for bad in [b"", b"\x80", good[:7], b"\x87\x00" + good[2:], b"\x80\x01" + good[2:],
                b"\x01\x00" + good[2:]]:
        _raises(RemoteProtocolError, icmp6.parse_echo, bad)
    _raises(RemoteProtocolError, icmp6.parse_echo, "text")


def test_echo_builder_rejects_bad_values():
    for args in [(-1, 0), (65536, 0), (0, 70000), (0, -5), ("1", 0)]:
        _raises(LocalProtocolError, icmp6.echo_request, *args)
    _raises(LocalProtocolError, icmp6.echo_request, 1, 1, "text")
    _raises(LocalProtocolError, icmp6.echo_request, 1, 1, b"", A)
    _raises(LocalProtocolError, icmp6.echo_request, 1, 1, b"", b"short", B)


def test_ipv6_header_roundtrip():
    pkt = icmp6.build_ipv6_packet(A, B, 17, b"hello", hop_limit=3, tclass=0xB8, flow=0xABCDE)
    assert pkt[:4] == b"\x6b\x8a\xbc\xde"
    src, dst, nh, payload, hlim = icmp6.parse_ipv6_header(pkt)
    assert (src, dst, nh, payload, hlim) == (A, B, 17, b"hello", 3)
    # trailing link-layer padding is cut off
    assert icmp6.parse_ipv6_header(pkt + b"\x00\x00")[3] == b"hello"
    # a memoryview gives a memoryview payload without copying
    mv = memoryview(pkt)
    p = icmp6.parse_ipv6_header(mv)[3]
    assert isinstance(p, memoryview) and bytes(p) == b"hello"
    # parse of a scapy packet
    s, d, nh, payload, hlim = icmp6.parse_ipv6_header(PKT1)
    assert (s, d, nh, hlim) == (A, B, 58, 64)
    assert icmp6.parse_echo(payload, s, d) == (128, 0x1234, 1, b"abc")


def test_ipv6_header_rejects():
    pkt = icmp6.build_ipv6_packet(A, B, 58, b"12345678")
    bad = [b"", pkt[:39], b"\x40" + pkt[1:], pkt[:-1], pkt[:4] + b"\xff\xff" + pkt[6:],
           b"\x60\x00\x00\x00\x00\x00\x00\x40" + A + B + b"jumbo"]
    for b in bad:
        _raises(RemoteProtocolError, icmp6.parse_ipv6_header, b)
    _raises(RemoteProtocolError, icmp6.parse_ipv6_header, None)


def test_build_ipv6_rejects():
    _raises(LocalProtocolError, icmp6.build_ipv6_packet, A, B, 256, b"")
    _raises(LocalProtocolError, icmp6.build_ipv6_packet, A, B, 58, b"", 300)
    _raises(LocalProtocolError, icmp6.build_ipv6_packet, A, B, 58, b"", 64, 0, 1 << 20)
    _raises(LocalProtocolError, icmp6.build_ipv6_packet, "2001:db8::zz", B, 58, b"")
    _raises(LocalProtocolError, icmp6.build_ipv6_packet, A, B, 58, bytes(65536))
