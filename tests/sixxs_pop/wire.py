"""Wire formats the PoP checks and produces, written from the specifications
(draft-massar-v6ops-ayiya, draft-massar-v6ops-heartbeat, sixxs.net/tools/tic and what
the captures in ../shared/captures show), independent of cpe_tunnel.core.

AYIYA datagram (UDP 5072)::

    0     IDLen<<4 | IDType      0x41: 2**4 = 16-byte identity, type 1 (integer)
    1     SigLen<<4 | HshMth     0x52: 5 * 4 = 20-byte signature, method 2 (SHA-1)
    2     AutMth<<4 | OpCode     auth 1 (shared secret); opcode 0..7
    3     Next Header            41 IPv6, 59 nothing
    4-7   Epoch                  Unix time, 32 bits, network order
    8-23  Identity               the SENDER's tunnel IPv6 address
    24-43 Signature              SHA-1 of the datagram computed with SHA-1(password)
                                 in this slot
    44-   Payload

Heartbeat datagram (UDP 3740), ASCII, no newline::

    HEARTBEAT TUNNEL <ipv6> <ipv4|sender> <epoch> <md5>
    md5 = lowercase hex MD5 of "HEARTBEAT TUNNEL <ipv6> <ipv4|sender> <epoch> <password>"

TIC md5 authentication (AICCU's rule, the client that worked with the real server)::

    response = md5hex(challenge + md5hex(password))

Parsers raise ``Drop(reason)`` for every hostile input; nothing else escapes.
"""

import hashlib
import hmac
import ipaddress
import struct

AYIYA_HEADER = 44
OP_NOOP, OP_FORWARD, OP_ECHO_REQUEST, OP_ECHO_REQUEST_FORWARD = 0, 1, 2, 3
OP_ECHO_RESPONSE, OP_MOTD, OP_QUERY_REQUEST, OP_QUERY_RESPONSE = 4, 5, 6, 7
OPCODE_NAMES = (
    "noop",
    "forward",
    "echo-request",
    "echo-request-forward",
    "echo-response",
    "motd",
    "query-request",
    "query-response",
)
NH_IPV6 = 41
NH_NONE = 59

# drop reasons, per family (the keys of the counters in state())
AYIYA_DROPS = (
    "truncated",  # shorter than the 44-byte header
    "unsupported identity",  # not 16-byte integer identity
    "unsupported hash",  # not a 20-byte SHA-1 signature
    "unsupported auth",  # not shared-secret authentication
    "unsupported opcode",  # opcode the PoP does not take from a client (5..15)
    "foreign identity",  # identity is no tunnel's client address
    "not an ayiya tunnel",  # identity belongs to a static / heartbeat tunnel
    "tunnel disabled",  # user or admin state is 'disabled'
    "bad signature",  # SHA-1 does not match the tunnel password
    "stale timestamp",  # |epoch - PoP clock| > max_skew
    "unsupported next header",  # forward of something that is not IPv6 (41)
    "bad payload",  # forward whose payload is not a whole IPv6 packet
    "spoofed source",  # inner IPv6 source outside the tunnel's networks
    "fault",  # dropped on purpose (fault switch ayiya_drop)
    "tun error",  # write to the TUN device failed
)
HEARTBEAT_DROPS = (
    "malformed",  # not "HEARTBEAT TUNNEL <ipv6> <ipv4|sender> <epoch> <md5>"
    "unknown tunnel",  # <ipv6> is no tunnel's client address
    "not a heartbeat tunnel",  # the tunnel is static or AYIYA
    "tunnel disabled",
    "bad signature",  # md5 does not match the tunnel password
    "stale timestamp",  # |epoch - PoP clock| > max_skew
    "address mismatch",  # stated IPv4 is not the datagram's source (and not 'sender')
    "fault",  # fault switch heartbeat_drop
)
PROTO41_DROPS = (
    "truncated",
    "not ipv6",
    "unknown source",  # outer IPv4 source is no 6in4 tunnel's current endpoint
    "spoofed source",  # inner IPv6 source outside the tunnel's networks
    "tunnel disabled",
    "fault",  # fault switch proto41_drop
    "tun error",
)
OUTBOUND_DROPS = (
    "not ipv6",
    "truncated",
    "multicast",  # the kernel's own chatter on the TUN device (MLD, RS ...)
    "no tunnel",  # destination in no tunnel's networks
    "no endpoint",  # the tunnel has no (learned) endpoint yet
    "tunnel disabled",
    "fault",  # ayiya_drop / proto41_drop also stop the PoP's sending
    "send error",
)


class Drop(Exception):
    """A datagram is not accepted; .reason is one of the *_DROPS words, .tunnel the
    tunnel it was for when known."""

    def __init__(self, reason, tunnel=None):
        super().__init__(reason)
        self.reason = reason
        self.tunnel = tunnel


def sha1(data):
    return hashlib.sha1(data).digest()


def md5hex(text):
    if isinstance(text, str):
        text = text.encode("utf-8")
    return hashlib.md5(text).hexdigest()


def tic_md5_response(challenge, password_md5):
    """What 'authenticate md5' must carry: md5hex(challenge + md5hex(password))."""
    return md5hex(challenge + password_md5)


# ---- AYIYA -----------------------------------------------------------------------------------


def ayiya_header(identity16, opcode, next_header, epoch):
    """The first 24 bytes (header + identity)."""
    return struct.pack(
        "!BBBBI", 0x41, 0x52, 0x10 | (opcode & 0x0F), next_header & 0xFF, epoch & 0xFFFFFFFF
    ) + bytes(identity16)


def ayiya_build(identity16, opcode, next_header, epoch, payload, key_sha1):
    """A signed AYIYA datagram. key_sha1 = SHA-1(password)."""
    buf = bytearray(ayiya_header(identity16, opcode, next_header, epoch))
    buf += key_sha1
    buf += payload
    buf[24:44] = sha1(bytes(buf))
    return bytes(buf)


def ayiya_sign_in_place(buf, length, key_sha1):
    """buf[0:24] header+identity and buf[44:length] payload are filled in: put the
    signature into buf[24:44] (one SHA-1 over the finished datagram)."""
    buf[24:44] = key_sha1
    buf[24:44] = hashlib.sha1(memoryview(buf)[:length]).digest()


def ayiya_signature_ok(data, key_sha1):
    """data: the whole datagram (bytes-like, >= 44 bytes)."""
    mv = memoryview(data)
    h = hashlib.sha1(mv[:24])
    h.update(key_sha1)
    h.update(mv[44:])
    return hmac.compare_digest(h.digest(), bytes(mv[24:44]))


def ayiya_parse_header(data):
    """-> (opcode, next_header, epoch, identity16 bytes). Raises Drop for the
    structural checks (truncated, unsupported identity / hash / auth)."""
    if len(data) < AYIYA_HEADER:
        raise Drop("truncated")
    if data[0] != 0x41:
        raise Drop("unsupported identity")
    if data[1] != 0x52:
        raise Drop("unsupported hash")
    if data[2] >> 4 != 1:
        raise Drop("unsupported auth")
    epoch = struct.unpack_from("!I", data, 4)[0]
    return data[2] & 0x0F, data[3], epoch, bytes(data[8:24])


def ayiya_verify(data, lookup, wall, max_skew):
    """PoP-side acceptance of a datagram from a client.

    lookup(identity16) -> tunnel object with .spec (TunnelSpec) and .key (SHA-1 of the
    tunnel password), or None. Order of the checks (first failure is the drop reason):
    structure, opcode, identity (foreign / not AYIYA / disabled), signature, time.
    sixxsd checks the time before the signature; checking the signature first means a
    'stale timestamp' drop is always an authentic (replayed or clock-skewed) packet and
    a forgery is always 'bad signature' -- the same packets are accepted either way.
    Returns (tunnel, opcode, next_header, epoch)."""
    op, nh, epoch, ident = ayiya_parse_header(data)
    if op > OP_ECHO_RESPONSE:  # MOTD and queries go from the PoP to clients, not back
        raise Drop("unsupported opcode")
    t = lookup(ident)
    if t is None:
        raise Drop("foreign identity")
    if t.spec.type != "ayiya":
        raise Drop("not an ayiya tunnel", t)
    if not t.spec.enabled:
        raise Drop("tunnel disabled", t)
    if not ayiya_signature_ok(data, t.key):
        raise Drop("bad signature", t)
    if abs(int(wall) - epoch) > max_skew:
        raise Drop("stale timestamp", t)
    return t, op, nh, epoch


# ---- IPv6 / IPv4 packets ---------------------------------------------------------------------


def ipv6_check(pkt):
    """A whole IPv6 packet? -> (src16, dst16, total length). Raises Drop."""
    if len(pkt) < 1 or pkt[0] >> 4 != 6:
        raise Drop("not ipv6")
    if len(pkt) < 40:
        raise Drop("truncated")
    total = 40 + struct.unpack_from("!H", pkt, 4)[0]
    if total > len(pkt):
        raise Drop("truncated")
    return bytes(pkt[8:24]), bytes(pkt[24:40]), total


def ipv4_41(pkt):
    """A raw-socket IPv4 datagram of protocol 41 -> (source text, payload offset, end).
    Raises Drop('truncated' | 'not ipv6')."""
    if len(pkt) < 20:
        raise Drop("truncated")
    if pkt[0] >> 4 != 4:
        raise Drop("not ipv6")
    ihl = (pkt[0] & 0x0F) * 4
    total = struct.unpack_from("!H", pkt, 2)[0]
    if ihl < 20 or total < ihl or total > len(pkt):
        raise Drop("truncated")
    if pkt[9] != 41:
        raise Drop("not ipv6")
    src = "%d.%d.%d.%d" % (pkt[12], pkt[13], pkt[14], pkt[15])
    return src, ihl, total


# ---- heartbeat -------------------------------------------------------------------------------


def heartbeat_parse(data):
    """-> dict(text, signed, ipv6, ipv6_16, ipv4 ('sender' or dotted quad), epoch, md5).
    The message ends at the first CR, LF or NUL (as sixxsd reads it). Raises
    Drop('malformed')."""
    data = bytes(data[:1024])
    for stop in (b"\r", b"\n", b"\0"):
        i = data.find(stop)
        if i >= 0:
            data = data[:i]
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise Drop("malformed")
    parts = text.split(" ")
    if len(parts) != 6 or parts[0] != "HEARTBEAT" or parts[1] != "TUNNEL":
        raise Drop("malformed")
    _h, _t, ip6, ip4, epoch, sig = parts
    try:
        a6 = ipaddress.IPv6Address(ip6)
    except ValueError:
        raise Drop("malformed")
    if ip4 != "sender":
        try:
            ip4 = str(ipaddress.IPv4Address(ip4))
        except ValueError:
            raise Drop("malformed")
    if not epoch.isdigit() or len(epoch) > 10 or not epoch.isascii():
        raise Drop("malformed")
    if len(sig) != 32:
        raise Drop("malformed")
    return {
        "text": text,
        "signed": text[: -len(sig)],  # "HEARTBEAT TUNNEL ... <epoch> "
        "ipv6": str(a6),
        "ipv6_16": a6.packed,
        "ipv4": ip4,
        "stated": parts[3],
        "epoch": int(epoch),
        "md5": sig,
    }


def heartbeat_build(ipv6, ipv4, epoch, password):
    """The datagram a client sends (for tests)."""
    head = "HEARTBEAT TUNNEL %s %s %d " % (ipv6, ipv4, epoch)
    return (head + md5hex(head + password)).encode("ascii")


def heartbeat_verify(data, source, lookup, wall, max_skew):
    """PoP-side acceptance. lookup(ipv6_16) -> tunnel (.spec, .spec.password) or None.
    Checks: format, tunnel, signature (exact lowercase hex, as sixxsd's strcmp), time,
    stated IPv4 == source unless 'sender'. Returns (tunnel, parsed dict)."""
    hb = heartbeat_parse(data)
    t = lookup(hb["ipv6_16"])
    if t is None:
        raise Drop("unknown tunnel")
    if t.spec.type != "6in4-heartbeat":
        raise Drop("not a heartbeat tunnel", t)
    if not t.spec.enabled:
        raise Drop("tunnel disabled", t)
    want = md5hex(hb["signed"] + t.spec.password)
    if not hmac.compare_digest(want.encode(), hb["md5"].encode("ascii", "replace")):
        raise Drop("bad signature", t)
    if abs(int(wall) - hb["epoch"]) > max_skew:
        raise Drop("stale timestamp", t)
    if hb["ipv4"] != "sender" and hb["ipv4"] != source:
        raise Drop("address mismatch", t)
    return t, hb
