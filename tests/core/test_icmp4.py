import binascii

from corecheck import raises as _raises

from cpe_tunnel.core import icmp4
from cpe_tunnel.core.addr import ip4_aton
from cpe_tunnel.core.errors import LocalProtocolError, RemoteProtocolError

# Produced by scapy (an independent encoder), checksums included:
# IP(src=203.0.113.65, dst=203.0.113.66, id=1)/ICMP(type=0, id=0x1234, seq=7)/payload
REPLY_PKT = binascii.unhexlify(
    "450000300001000040010248cb007141cb007142000003d6123400076370652d74756e6e656c206b656570616c697665")
# ICMP(type=8, id=0xbeef, seq=65535)/b"abc"
REQUEST_MSG = binascii.unhexlify("080074adbeefffff616263")


def test_echo_request_matches_scapy():
    assert icmp4.echo_request4(0xBEEF, 65535, b"abc") == REQUEST_MSG
    assert icmp4.echo_reply4(0x1234, 7, b"cpe-tunnel keepalive") == REPLY_PKT[20:]


def test_parse_whole_packet():
    src, dst, typ, ident, seq, payload = icmp4.parse_echo_packet4(REPLY_PKT)
    assert src == ip4_aton("203.0.113.65") and dst == ip4_aton("203.0.113.66")
    assert (typ, ident, seq, payload) == (icmp4.ECHO_REPLY, 0x1234, 7, b"cpe-tunnel keepalive")
    # link-layer padding after the total length is ignored
    assert icmp4.parse_echo_packet4(REPLY_PKT + b"\0\0\0")[4] == 7
    assert icmp4.parse_echo4(REQUEST_MSG) == (icmp4.ECHO_REQUEST, 0xBEEF, 65535, b"abc")


def test_parse_rejects():
    bad_sum = bytearray(REPLY_PKT)
    bad_sum[-1] ^= 1
    e = _raises(RemoteProtocolError, icmp4.parse_echo_packet4, bytes(bad_sum))
    assert "checksum" in e.reason
    udp = bytearray(REPLY_PKT)
    udp[9] = 17
    assert "not ICMP" in _raises(RemoteProtocolError, icmp4.parse_echo_packet4, bytes(udp)).reason
    v6 = bytearray(REPLY_PKT)
    v6[0] = 0x65
    assert "version" in _raises(RemoteProtocolError, icmp4.parse_echo_packet4, bytes(v6)).reason
    short_ihl = bytearray(REPLY_PKT)
    short_ihl[0] = 0x44
    _raises(RemoteProtocolError, icmp4.parse_echo_packet4, bytes(short_ihl))
    _raises(RemoteProtocolError, icmp4.parse_echo_packet4, REPLY_PKT[:40])  # total length says 48
    _raises(RemoteProtocolError, icmp4.parse_echo_packet4, REPLY_PKT[:10])
    _raises(RemoteProtocolError, icmp4.parse_echo4, b"\x08\x00\x00")
    unreachable = icmp4.echo_request4(1, 1)
    unreachable = b"\x03" + unreachable[1:]
    _raises(RemoteProtocolError, icmp4.parse_echo4, unreachable)
    _raises(RemoteProtocolError, icmp4.parse_echo4, "text")


def test_every_cut_and_flip_is_a_remote_error():
    # hostile input: every truncation and every single-byte change either parses or
    # raises RemoteProtocolError, nothing else
    for n in range(len(REPLY_PKT) + 1):
        try:
            icmp4.parse_echo_packet4(REPLY_PKT[:n])
        except RemoteProtocolError:
            pass
    for i in range(len(REPLY_PKT)):
        b = bytearray(REPLY_PKT)
        b[i] ^= 0xFF
        try:
            icmp4.parse_echo_packet4(bytes(b))
        except RemoteProtocolError:
            pass


def test_builder_checks():
    _raises(LocalProtocolError, icmp4.echo_request4, 70000, 1)
    _raises(LocalProtocolError, icmp4.echo_request4, 1, -1)
    _raises(LocalProtocolError, icmp4.echo_request4, 1, 1, "text")
    _raises(LocalProtocolError, icmp4.echo_request4, True, 1)
