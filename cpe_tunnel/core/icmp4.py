# ICMP (IPv4, RFC 792) echo messages and the IPv4 header around them, for the keepalive
# of IPv4-in-IPv6 (v4v6) tunnels. Sans-IO, MicroPython compatible.
#
# Rules:
# - Unlike ICMPv6 on Linux raw sockets, the ICMP checksum is never filled in by the
#   kernel: echo_request4()/echo_reply4() always compute it (RFC 792, over the ICMP
#   message only, no pseudo-header).
# - A raw IPPROTO_ICMP socket hands back the whole IPv4 packet: parse_echo_packet4()
#   checks the IPv4 header (version, header length, total length, protocol 1) and the
#   ICMP checksum, and returns the echo fields with the source and destination.
# - Builders raise LocalProtocolError on values that do not fit the wire format;
#   parsers raise RemoteProtocolError (reason readable) on anything malformed and
#   never let IndexError / struct.error escape.

from cpe_tunnel.core.errors import RemoteProtocolError
from cpe_tunnel.core.icmp6 import checksum, echo_header, echo_message, with_checksum

ECHO_REPLY = 0
ECHO_REQUEST = 8
PROTO_ICMP = 1


def _echo(type_, ident, seq, payload):
    msg = echo_message(type_, ident, seq, payload, 65535 - 20 - 8)
    return with_checksum(msg, checksum(msg))


def echo_request4(ident, seq, payload=b""):
    """ICMP Echo Request (type 8, code 0) with its checksum."""
    return _echo(ECHO_REQUEST, ident, seq, payload)


def echo_reply4(ident, seq, payload=b""):
    """ICMP Echo Reply (type 0, code 0) with its checksum."""
    return _echo(ECHO_REPLY, ident, seq, payload)


def parse_echo4(msg):
    """(type, ident, seq, payload bytes) of an ICMP Echo Request/Reply message (no IP
    header); the checksum is verified. RemoteProtocolError on anything else."""
    type_, ident, seq = echo_header(msg, "ICMP", ECHO_REQUEST, ECHO_REPLY)
    if checksum(msg) != 0:
        raise RemoteProtocolError("ICMP echo checksum is wrong")
    return type_, ident, seq, bytes(msg[8:])


def parse_ipv4_header(pkt):
    """(src4, dst4, protocol, payload bytes, ttl) of an IPv4 packet. Bytes after the
    total length (padding) are ignored. RemoteProtocolError when the version is not 4
    or the lengths disagree."""
    if not isinstance(pkt, (bytes, bytearray, memoryview)):
        raise RemoteProtocolError("IPv4 packet must be bytes")
    n = len(pkt)
    if n < 20:
        raise RemoteProtocolError("IPv4 packet too short (%d bytes, header is at least 20)" % n)
    vihl = pkt[0]
    if vihl >> 4 != 4:
        raise RemoteProtocolError("IP version %d, expected 4" % (vihl >> 4))
    ihl = (vihl & 0x0F) * 4
    if ihl < 20:
        raise RemoteProtocolError("IPv4 header length %d is below 20" % ihl)
    total = (pkt[2] << 8) | pkt[3]
    if total < ihl or total > n:
        raise RemoteProtocolError("IPv4 total length %d does not fit %d bytes with a %d-byte header"
                                  % (total, n, ihl))
    return bytes(pkt[12:16]), bytes(pkt[16:20]), pkt[9], bytes(pkt[ihl:total]), pkt[8]


def parse_echo_packet4(pkt):
    """(src4, dst4, type, ident, seq, payload) of a whole IPv4 packet carrying an ICMP
    echo request or reply. RemoteProtocolError on anything else."""
    src, dst, proto, payload, _ttl = parse_ipv4_header(pkt)
    if proto != PROTO_ICMP:
        raise RemoteProtocolError("IPv4 protocol %d is not ICMP" % proto)
    type_, ident, seq, data = parse_echo4(payload)
    return src, dst, type_, ident, seq, data
