# SixXS heartbeat (draft-massar-v6ops-heartbeat), UDP port 3740: tells the PoP that a
# dynamic 6in4 endpoint is alive and where it is. Sans-IO, MicroPython subset.
#
# Message (one datagram, ASCII, no newline; checked against sixxsd_probe.pcap):
#   HEARTBEAT TUNNEL <ipv6> <ipv4|sender> <epoch> <md5>
# <md5> is the lowercase hex MD5 of the same line with the password in its place:
#   md5("HEARTBEAT TUNNEL <ipv6> <ipv4|sender> <epoch> <password>")
# 'sender' asks the PoP to take the datagram's source address (we are behind a NAT or
# do not know our public address).
#
# PoP-side checks (sixxsd's hb.c; heartbeat_verify), first failure names the drop code:
#   'malformed'         not the format above (a CR/LF ends the message, as sixxsd allows)
#   'bad signature'     md5 does not match (compared as sixxsd does: exact lowercase hex)
#   'address mismatch'  a stated IPv4 that is not the datagram's source
#   'stale timestamp'   |now - epoch| > max_skew (120 s)
# The signature is checked first, so the two later drops concern authentic messages.
#
# Client rules (HeartbeatSession):
# - The first heartbeat goes out at once; then one every `interval` seconds (TIC's
#   Heartbeat_Interval).
# - wan_changed(now, ip) with a new address sends the next heartbeat at once, but never
#   two within min_gap seconds (a flapping WAN cannot flood the PoP); changes inside
#   the gap coalesce into one heartbeat carrying the latest address.
# - wan_changed(now, None) (no WAN address) pauses heartbeats until an address comes back.
# - sender='auto' states our IPv4 when we know it and it is public, 'sender' otherwise;
#   'always' always says 'sender'; 'never' always states it (nothing is sent while the
#   address is unknown).
# - `now` is monotonic (timers); `wall` is Unix time for the epoch (defaults to now).
# - The password never appears in repr, status, events or errors.

import binascii
import hashlib

from cpe_tunnel.core import addr
from cpe_tunnel.core.errors import LocalProtocolError, RemoteProtocolError

PORT = 3740
MAX_SKEW = 120
MIN_GAP = 0.2  # seconds between two heartbeats triggered by WAN changes
MAX_MESSAGE = 512
SENDER_MODES = ("auto", "always", "never")
DROP_REASONS = ("malformed", "bad signature", "address mismatch", "stale timestamp")

_PREFIX = "HEARTBEAT TUNNEL "
_HEX = "0123456789abcdefABCDEF"


class HeartbeatError(RemoteProtocolError):
    """A heartbeat we do not accept; .code is one of DROP_REASONS."""

    def __init__(self, code, detail=None):
        super().__init__(code if detail is None else code + ": " + detail)
        self.code = code


def _md5hex(text):
    return binascii.hexlify(hashlib.md5(text.encode("utf-8")).digest()).decode()


def _secret(password):
    if isinstance(password, (bytes, bytearray)):
        try:
            password = bytes(password).decode("utf-8")
        except UnicodeError:
            raise LocalProtocolError("heartbeat password must be UTF-8 text")
    if not isinstance(password, str) or not password:
        raise LocalProtocolError("heartbeat password must be non-empty text")
    return password


def _ipv6_text(ipv6):
    try:
        if isinstance(ipv6, str):
            return addr.ip6_ntoa(addr.ip6_aton(ipv6))
        if isinstance(ipv6, (bytes, bytearray)) and len(ipv6) == 16:
            return addr.ip6_ntoa(bytes(ipv6))
    except ValueError as e:
        raise LocalProtocolError("heartbeat IPv6 address: %s" % e)
    raise LocalProtocolError("heartbeat IPv6 address must be text or 16 bytes")


def _ipv4_text(ipv4):
    if ipv4 == "sender":
        return ipv4
    try:
        if isinstance(ipv4, str):
            return addr.ip4_ntoa(addr.ip4_aton(ipv4))
        if isinstance(ipv4, (bytes, bytearray)) and len(ipv4) == 4:
            return addr.ip4_ntoa(bytes(ipv4))
    except ValueError as e:
        raise LocalProtocolError("heartbeat IPv4 address: %s" % e)
    raise LocalProtocolError("heartbeat IPv4 must be 'sender', text or 4 bytes")


def heartbeat_message(ipv6, ipv4_or_sender, epoch, password):
    """The signed heartbeat datagram (bytes). ipv6 is written in RFC 5952 form."""
    if isinstance(epoch, bool) or not isinstance(epoch, (int, float)) or epoch < 0:
        raise LocalProtocolError("heartbeat epoch must be a number >= 0")
    head = "%s%s %s %d " % (_PREFIX, _ipv6_text(ipv6), _ipv4_text(ipv4_or_sender), int(epoch))
    return (head + _md5hex(head + _secret(password))).encode()


def heartbeat_parse(msg):
    """Split a received heartbeat: (ipv6_text, ipv4_text_or_'sender', epoch, md5hex),
    the texts exactly as sent (the signature covers them as sent). Raises HeartbeatError
    'malformed' on anything else."""
    if not isinstance(msg, (bytes, bytearray, memoryview)):
        raise HeartbeatError("malformed", "not bytes")
    raw = bytes(msg)
    if len(raw) > MAX_MESSAGE:
        raise HeartbeatError("malformed", "longer than %d bytes" % MAX_MESSAGE)
    end = len(raw)
    for i in range(len(raw)):
        x = raw[i]
        if x == 10 or x == 13 or x == 0:
            end = i
            break
        if x < 32 or x > 126:
            raise HeartbeatError("malformed", "not printable ASCII")
    text = raw[:end].decode()
    if not text.startswith(_PREFIX):
        raise HeartbeatError("malformed", "does not start with '%s'" % _PREFIX.strip())
    parts = text[len(_PREFIX):].split(" ")
    if len(parts) != 4:
        raise HeartbeatError("malformed", "expected <ipv6> <ipv4|sender> <epoch> <md5>")
    ip6, ip4, ep, digest = parts
    try:
        addr.ip6_aton(ip6)
    except ValueError:
        raise HeartbeatError("malformed", "bad IPv6 address")
    if ip4 != "sender":
        try:
            addr.ip4_aton(ip4)
        except ValueError:
            raise HeartbeatError("malformed", "bad IPv4 address")
    if not ep or len(ep) > 12 or not ep.isdigit() or (len(ep) > 1 and ep[0] == "0"):
        raise HeartbeatError("malformed", "bad time")
    if len(digest) != 32:
        raise HeartbeatError("malformed", "bad md5")
    for c in digest:
        if c not in _HEX:
            raise HeartbeatError("malformed", "bad md5")
    return ip6, ip4, int(ep), digest


def heartbeat_verify(msg, password, now, max_skew=MAX_SKEW, source=None):
    """PoP side: check a heartbeat against the tunnel's password. now: Unix time;
    source: the datagram's IPv4 source (text), needed when the message states an IPv4.
    Returns {"ipv6": RFC 5952 text, "ipv4": endpoint to use (the source for 'sender'),
    "sender": bool, "epoch": int, "skew": epoch - now}. Raises HeartbeatError."""
    ip6, ip4, epoch, digest = heartbeat_parse(msg)
    pw = _secret(password)
    if _md5hex("%s%s %s %d %s" % (_PREFIX, ip6, ip4, epoch, pw)) != digest:
        raise HeartbeatError("bad signature")
    src = None
    if source is not None:
        try:
            src = addr.ip4_ntoa(addr.ip4_aton(source))
        except ValueError:
            raise LocalProtocolError("heartbeat_verify: source must be an IPv4 address")
    if ip4 == "sender":
        endpoint = src
    else:
        endpoint = addr.ip4_ntoa(addr.ip4_aton(ip4))
        if src is not None and src != endpoint:
            raise HeartbeatError("address mismatch", "says %s, sent from %s" % (endpoint, src))
    d = epoch - int(now)
    if d > max_skew or d < -max_skew:
        e = HeartbeatError("stale timestamp", "%d s %s the PoP's clock" % (
            d if d > 0 else -d, "ahead of" if d > 0 else "behind"))
        e.skew = d
        raise e
    return {"ipv6": addr.ip6_ntoa(addr.ip6_aton(ip6)), "ipv4": endpoint,
            "sender": ip4 == "sender", "epoch": epoch, "skew": d}


class HeartbeatSession:
    def __init__(self, interval, ipv6, password, ipv4=None, sender="auto", private_ranges=(),
                 min_gap=MIN_GAP):
        if (not isinstance(interval, (int, float))) or isinstance(interval, bool) or interval <= 0:
            raise LocalProtocolError("heartbeat interval must be a number > 0")
        if sender not in SENDER_MODES:
            raise LocalProtocolError("heartbeat sender mode must be one of %s" % ", ".join(SENDER_MODES))
        if (not isinstance(min_gap, (int, float))) or isinstance(min_gap, bool) or min_gap < 0:
            raise LocalProtocolError("heartbeat min_gap must be a number >= 0")
        self.interval = interval
        self.ipv6 = _ipv6_text(ipv6)
        self._password = _secret(password)
        self.sender = sender
        self.min_gap = min_gap
        ranges = []
        for r in private_ranges:
            if isinstance(r, str):
                try:
                    ranges.append(addr.parse_prefix4(r))
                except ValueError as e:
                    raise LocalProtocolError("heartbeat private range: %s" % e)
            else:
                net, plen = r
                if len(net) != 4 or not 0 <= plen <= 32:
                    raise LocalProtocolError("a private range is (4 net bytes, prefix length)")
                ranges.append((bytes(net), plen))
        self.private_ranges = tuple(ranges)
        self.wan_ip = None if ipv4 is None else _ipv4_text(ipv4)
        if self.wan_ip == "sender":
            raise LocalProtocolError("heartbeat ipv4 must be an address or None")
        self._paused = False
        self._due = None  # None: at once
        self._last_sent = None
        self._out = []
        self.sent = 0
        self.last_stated = None

    def __repr__(self):
        return "<HeartbeatSession %s every %ss>" % (self.ipv6, self.interval)

    def stated_ipv4(self):
        """What the next heartbeat says instead of our address: an IPv4 text,
        'sender', or None (nothing can be sent)."""
        if self.sender == "always":
            return "sender"
        if self.wan_ip is None:
            return None if self.sender == "never" else "sender"
        if self.sender == "never":
            return self.wan_ip
        if addr.ip4_is_private(addr.ip4_aton(self.wan_ip), self.private_ranges):
            return "sender"
        return self.wan_ip

    def wan_changed(self, now, ip):
        """The WAN IPv4 address is now `ip` (text), or None when there is none."""
        if ip is None:
            self._paused = True
            self.wan_ip = None
            return
        ip = _ipv4_text(ip)
        if ip == "sender":
            raise LocalProtocolError("wan_changed: ip must be an IPv4 address or None")
        if ip == self.wan_ip and not self._paused:
            return
        self.wan_ip = ip
        self._paused = False
        t = now
        if self._last_sent is not None and self._last_sent + self.min_gap > t:
            t = self._last_sent + self.min_gap
        if self._due is not None and self._due > t:
            self._due = t

    def get_timer(self):
        if self._paused or self.stated_ipv4() is None:
            return None
        if self._due is None:
            return 0.0
        return self._due

    def handle_timer(self, now, wall=None):
        if self._paused:
            return
        stated = self.stated_ipv4()
        if stated is None:
            return
        if self._due is not None and now < self._due:
            return
        self._out.append(heartbeat_message(self.ipv6, stated, now if wall is None else wall,
                                           self._password))
        self.sent += 1
        self.last_stated = stated
        self._last_sent = now
        self._due = now + self.interval

    def datagrams_to_send(self):
        out = self._out
        self._out = []
        return out

    def status(self, now):
        t = self.get_timer()
        return {
            "ipv6": self.ipv6,
            "interval": self.interval,
            "sender_mode": self.sender,
            "wan_ip": self.wan_ip,
            "paused": self._paused,
            "stated": self.last_stated,
            "sent": self.sent,
            "last_sent_age": None if self._last_sent is None else now - self._last_sent,
            "next_in": None if t is None else max(0.0, t - now),
        }
