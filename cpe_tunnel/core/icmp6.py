# ICMPv6 (RFC 4443) echo messages, Internet checksums and a minimal IPv6 header codec
# (RFC 8200) for the userspace data plane and for tests. Sans-IO, MicroPython compatible.
#
# Rules:
# - Addresses are 16-byte bytes objects (text is accepted by build_ipv6_packet too).
# - Builders raise LocalProtocolError when the caller passes values that do not fit
#   the wire format; parsers raise RemoteProtocolError (reason readable) on anything
#   malformed and never let IndexError / struct.error escape.
# - echo_request()/echo_reply() leave the checksum 0 unless src and dst are given:
#   Linux fills in the ICMPv6 checksum on raw IPPROTO_ICMPV6 sockets (RFC 3542 §3.1),
#   while a packet written to a TUN device needs it computed here.

import struct

from cpe_tunnel.core.addr import ip6_aton
from cpe_tunnel.core.errors import LocalProtocolError, RemoteProtocolError

ECHO_REQUEST = 128
ECHO_REPLY = 129
NEXT_HEADER_ICMPV6 = 58
IPV6_HEADER_LEN = 40


def checksum(data):
    """Internet checksum (RFC 1071) of data: the one's complement of the one's
    complement sum of its 16-bit big-endian words (an odd last byte is padded with 0).
    A block that already holds a correct checksum sums to 0."""
    n = len(data)
    s = 0
    words = n // 2
    if words:
        # unpack in chunks so a large packet does not make one huge tuple
        i = 0
        while i < words:
            k = words - i
            if k > 512:
                k = 512
            for w in struct.unpack_from("!%dH" % k, data, 2 * i):
                s += w
            i += k
    if n & 1:
        s += data[n - 1] << 8
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def _addr16(a, what):
    if isinstance(a, str):
        try:
            return ip6_aton(a)
        except ValueError as exc:
            raise LocalProtocolError("%s: %s" % (what, exc))
    if not isinstance(a, (bytes, bytearray, memoryview)) or len(a) != 16:
        raise LocalProtocolError("%s must be a 16-byte IPv6 address" % what)
    return bytes(a)


def icmp6_checksum(src16, dst16, msg, next_header=NEXT_HEADER_ICMPV6):
    """Checksum of an upper-layer message with the IPv6 pseudo-header (RFC 8200 §8.1):
    source, destination, 32-bit upper-layer length, 3 zero bytes, next header (58).
    With the message's checksum field 0 the result is the value to store there; over a
    message whose checksum is already right the result is 0."""
    src = _addr16(src16, "source address")
    dst = _addr16(dst16, "destination address")
    pseudo = src + dst + struct.pack("!IxxxB", len(msg), next_header)
    # fold the two partial sums: checksum(a + b) without concatenating the message
    # (the pseudo-header is 40 bytes, even, so its word alignment carries over)
    a = (~checksum(pseudo)) & 0xFFFF
    b = (~checksum(msg)) & 0xFFFF
    s = a + b
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def _u16(v, what):
    if not isinstance(v, int) or isinstance(v, bool) or v < 0 or v > 0xFFFF:
        raise LocalProtocolError("%s must be an integer from 0 to 65535" % what)
    return v


def echo_message(type_, ident, seq, payload, max_payload):
    """An echo message (ICMP or ICMPv6: the same layout) with checksum 0; ident and seq
    are 16-bit, payload bytes of at most max_payload. LocalProtocolError otherwise."""
    _u16(ident, "echo identifier")
    _u16(seq, "echo sequence number")
    if not isinstance(payload, (bytes, bytearray)):
        raise LocalProtocolError("echo payload must be bytes")
    if len(payload) > max_payload:
        raise LocalProtocolError("echo payload too long (%d bytes)" % len(payload))
    return struct.pack("!BBHHH", type_, 0, 0, ident, seq) + bytes(payload)


def with_checksum(msg, c):
    """msg with c stored in its checksum field (bytes 2-3, as in ICMP and ICMPv6)."""
    return msg[:2] + struct.pack("!H", c) + msg[4:]


def echo_header(msg, proto, request, reply):
    """(type, ident, seq) of an echo message of `proto` ("ICMP" or "ICMPv6") whose echo
    types are request/reply; the checksum is not looked at. RemoteProtocolError when it
    is not bytes, is short, or is not an echo request/reply with code 0."""
    if not isinstance(msg, (bytes, bytearray, memoryview)):
        raise RemoteProtocolError("%s message must be bytes" % proto)
    if len(msg) < 8:
        raise RemoteProtocolError("%s echo message too short (%d bytes, need 8)" % (proto, len(msg)))
    type_, code, _c, ident, seq = struct.unpack_from("!BBHHH", msg, 0)
    if type_ != request and type_ != reply:
        raise RemoteProtocolError("%s type %d is not an echo request/reply" % (proto, type_))
    if code != 0:
        raise RemoteProtocolError("%s echo with code %d (must be 0)" % (proto, code))
    return type_, ident, seq


def _echo(type_, ident, seq, payload, src, dst):
    msg = echo_message(type_, ident, seq, payload, 65535 - 8)
    if src is not None or dst is not None:
        if src is None or dst is None:
            raise LocalProtocolError("give both src and dst to compute the checksum")
        msg = with_checksum(msg, icmp6_checksum(src, dst, msg))
    return msg


def echo_request(ident, seq, payload=b"", src=None, dst=None):
    """ICMPv6 Echo Request (type 128, code 0). Checksum 0 (the kernel fills it on raw
    ICMPv6 sockets) unless src and dst (16 bytes or text) are given."""
    return _echo(ECHO_REQUEST, ident, seq, payload, src, dst)


def echo_reply(ident, seq, payload=b"", src=None, dst=None):
    """ICMPv6 Echo Reply (type 129), same rules as echo_request()."""
    return _echo(ECHO_REPLY, ident, seq, payload, src, dst)


def parse_echo(msg, src=None, dst=None):
    """(type, ident, seq, payload bytes) of an ICMPv6 Echo Request/Reply.
    When src and dst are given the checksum is verified too.
    RemoteProtocolError on anything else or anything malformed."""
    type_, ident, seq = echo_header(msg, "ICMPv6", ECHO_REQUEST, ECHO_REPLY)
    if src is not None and dst is not None:
        try:
            bad = icmp6_checksum(src, dst, msg) != 0
        except LocalProtocolError as exc:
            raise RemoteProtocolError("cannot verify checksum: %s" % exc.reason)
        if bad:
            raise RemoteProtocolError("ICMPv6 echo checksum is wrong")
    return type_, ident, seq, bytes(msg[8:])


def build_ipv6_packet(src, dst, next_header, payload, hop_limit=64, tclass=0, flow=0):
    """A whole IPv6 packet: the 40-byte fixed header + payload (no extension headers)."""
    s = _addr16(src, "source address")
    d = _addr16(dst, "destination address")
    for v, top, what in ((next_header, 255, "next header"), (hop_limit, 255, "hop limit"),
                         (tclass, 255, "traffic class"), (flow, 0xFFFFF, "flow label")):
        if not isinstance(v, int) or isinstance(v, bool) or v < 0 or v > top:
            raise LocalProtocolError("%s must be an integer from 0 to %d" % (what, top))
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise LocalProtocolError("payload must be bytes")
    if len(payload) > 0xFFFF:
        raise LocalProtocolError("payload of %d bytes needs a jumbogram (not supported)" % len(payload))
    first = (6 << 28) | (tclass << 20) | flow
    return struct.pack("!IHBB", first, len(payload), next_header, hop_limit) + s + d + bytes(payload)


def parse_ipv6_header(pkt):
    """(src16, dst16, next_header, payload, hop_limit) of an IPv6 packet.
    The payload is pkt[40:40 + payload length]: a memoryview when pkt is one (no copy),
    bytes otherwise. Bytes after the payload (link-layer padding) are ignored.
    RemoteProtocolError when the version is not 6 or the lengths disagree."""
    if not isinstance(pkt, (bytes, bytearray, memoryview)):
        raise RemoteProtocolError("IPv6 packet must be bytes")
    n = len(pkt)
    if n < IPV6_HEADER_LEN:
        raise RemoteProtocolError("IPv6 packet too short (%d bytes, header is 40)" % n)
    first, plen, nh, hlim = struct.unpack_from("!IHBB", pkt, 0)
    if first >> 28 != 6:
        raise RemoteProtocolError("IP version %d, expected 6" % (first >> 28))
    if plen > n - IPV6_HEADER_LEN:
        raise RemoteProtocolError("IPv6 payload length %d but only %d bytes follow the header" % (
            plen, n - IPV6_HEADER_LEN))
    if plen == 0 and nh == 0 and n > IPV6_HEADER_LEN:
        raise RemoteProtocolError("IPv6 jumbograms are not supported")
    if isinstance(pkt, memoryview):
        payload = pkt[IPV6_HEADER_LEN:IPV6_HEADER_LEN + plen]
    else:
        payload = bytes(pkt[IPV6_HEADER_LEN:IPV6_HEADER_LEN + plen])
    return bytes(pkt[8:24]), bytes(pkt[24:40]), nh, payload, hlim
