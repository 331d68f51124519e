# TSP (Tunnel Setup Protocol, RFC 5572) client core: codec, reliable-UDP framing and the
# client state machine. Sans-IO and MicroPython compatible. docs/TSP.md has the notes.
#
# Wire format (as gogoCLIENT 1.2 and tsps speak it; see tests/core/test_tsp.py vectors):
# - UDP control datagram = 8-byte header + message. Header: 32-bit sequence number with
#   the top 4 bits set (0xF0000000 | seq; seq starts at 240 for old HexOS brokers), then a
#   32-bit timestamp in ms since the whole second the session started. The broker echoes
#   the header of the request it answers. Datagrams whose top nibble is not 0xF are data
#   (IPv6 in UDP for v6udpv4) on the same socket: classify() tells them apart.
# - Stop and wait: one request outstanding; retransmitted with an RFC 6298 style RTO
#   (SRTT/RTTVAR from the echoed timestamp, initial 1 s, min 1 s, max 8 s, doubling per
#   retry) up to max_tries sends. An empty message (header only) is a valid reply (ack).
# - Messages are lines ending in CRLF, or "Content-length: N\r\n" + N bytes of payload.
#
# Client rules (one session = connect() up to UP, REDIRECTED, RESTART or FAILED):
# - VERSION=<v> -> "CAPABILITY TUNNEL=.. AUTH=.." | 302 (fall back to the next older
#   version: event version-fallback, state RESTART, the caller calls connect() again) |
#   1000+ (redirect) | other status (error).
# - The tunnel type we want must be offered (v6anyv4: V6V4 or V6UDPV4; over TCP only
#   V6V4). Mechanism: the configured one if offered; for auth='any' the strongest one
#   offered, DIGEST-MD5 > PLAIN > ANONYMOUS, where DIGEST-MD5 and PLAIN count only when
#   a username is configured. No common mechanism: fatal error.
# - ANONYMOUS: "AUTHENTICATE ANONYMOUS\r\n" -> status.
#   PLAIN: "AUTHENTICATE PLAIN\r\n" (UDP: -> empty ack), then NUL user NUL pass CRLF ->
#   status. DIGEST-MD5: "AUTHENTICATE DIGEST-MD5\r\n" -> base64 challenge -> base64
#   response -> base64 rspauth (checked) -> status (UDP: we poll with an empty message).
#   Over UDP the AUTHENTICATE line carries a trailing NUL, as gogoCLIENT sends it.
# - 200 -> tunnel request (Content-length framed XML) -> "[Content-length..] 200
#   Success" + offer XML (event tunnel-offer) -> accept (UDP: -> empty ack) -> event
#   tunnel-up, state UP. TSP 1.0.1 had no accept; we speak 2.0.x only.
# - Any status other than 200 where one is expected: event error with the code, a
#   plain-word message and fatal (True when retrying the same broker with the same
#   settings cannot help), state FAILED. Status 1000 and above: redirect with the broker
#   list, state REDIRECTED. Malformed input: error with code None, state FAILED.
# - UDP without any answer after max_tries: event need-tcp (modes that can run over a
#   TCP session: v6v4, v6anyv4, v4v6), state RESTART: connect(now, transport='tcp').
#   For v6udpv4, or a broker that answered before and then fell silent: error.
# - TCP: no answer within tcp_timeout seconds, or the broker closing the connection
#   before UP: error. Terminal states ignore further input.

import struct

from cpe_tunnel.core import addr, sasl, tsp_xml
from cpe_tunnel.core.errors import ConfigError, LocalProtocolError, RemoteProtocolError

PORT = 3653
VERSIONS = ("2.0.2", "2.0.1", "2.0.0")
MODES = ("v6anyv4", "v6v4", "v6udpv4", "v4v6")
AUTHS = ("any", "anonymous", "plain", "digest-md5")
HOST_TYPES = ("host", "router")
TRANSPORTS = ("udp", "tcp")
CONTROL_FLAG = 0xF0000000
HEADER_LEN = 8
INITIAL_SEQ = 240
MAX_BODY = tsp_xml.MAX_SIZE + 512  # a Content-length payload: status line + XML
MAX_LINE = 4096
RTO_INITIAL = 1.0
RTO_MIN = 1.0
RTO_MAX = 8.0
MAX_TRIES = 8
TCP_TIMEOUT = 30.0
REDIRECT_BASE = 1000
MAX_BROKERS = 16

ACCEPT = b'<tunnel action="accept"></tunnel>\r\n'

# code -> (plain words, fatal). fatal: asking the same broker again with the same
# settings will not help. Codes from RFC 5572 and the gogoCLIENT/HexOS list.
STATUS = {
    200: ("success", False),
    300: ("authentication failed: the broker rejected the username or password", True),
    301: ("the broker has no more tunnels available", False),
    302: ("the broker does not support this TSP version", True),
    303: ("the broker does not support the requested tunnel type", True),
    310: ("the broker reported an error on its side", False),
    500: ("the broker rejected the tunnel request as invalid", True),
    501: ("the broker rejected our IPv4 address", True),
    502: ("the broker rejected our IPv6 address", True),
    506: ("the IPv4 prefix is already in use at the broker", True),
    507: ("the requested prefix length cannot be assigned by the broker", True),
    509: ("the broker could not delegate reverse DNS to the given DNS server", True),
    518: ("the broker does not support the requested prefix length", True),
    520: ("the broker needs a prefix length in the request", True),
    521: ("the broker is still working on an earlier request for this account", False),
    522: ("a prefix needs an account: anonymous sessions cannot get one", True),
    530: ("the broker is too busy, try again later", False),
}


def status_message(code):
    """(plain-word message, fatal) for a TSP status code."""
    if code in STATUS:
        return STATUS[code]
    if code >= REDIRECT_BASE:
        return ("the broker redirected us to another broker (status %d)" % code, False)
    return ("the broker answered with unknown status %d" % code, False)


def _printable(b, limit=80):
    if isinstance(b, str):
        b = b.encode()
    out = []
    for c in bytes(b[:limit]):
        out.append(chr(c) if 32 <= c < 127 else "?")
    s = "".join(out)
    if len(b) > limit:
        s += "..."
    return s


def _uint(text, what, lo, hi):
    if not isinstance(text, str):
        raise RemoteProtocolError("%s is missing" % what)
    t = text.strip(" \t\r\n")
    if not t or len(t) > 10:
        raise RemoteProtocolError("%s is not a number: '%s'" % (what, _printable(text, 20)))
    for c in t:
        if c not in "0123456789":
            raise RemoteProtocolError("%s is not a number: '%s'" % (what, _printable(text, 20)))
    v = int(t)
    if v < lo or v > hi:
        raise RemoteProtocolError("%s %d is out of range %d..%d" % (what, v, lo, hi))
    return v


def _lower_ascii(b):
    return bytes(c + 32 if 65 <= c <= 90 else c for c in b)


# ---------------------------------------------------------------- reliable-UDP framing

def pack_control(seq, timestamp, payload=b""):
    """One control datagram: header (CONTROL_FLAG | seq, timestamp) + payload."""
    if not isinstance(seq, int) or not 0 <= seq <= 0x0FFFFFFF:
        raise LocalProtocolError("sequence number must be 0..0x0FFFFFFF")
    return struct.pack(">II", CONTROL_FLAG | seq, timestamp & 0xFFFFFFFF) + bytes(payload)


def unpack_control(datagram):
    """(seq, timestamp, payload) of a control datagram; seq without the flag bits."""
    if len(datagram) < HEADER_LEN:
        raise RemoteProtocolError("control datagram shorter than its 8-byte header (%d bytes)"
                                  % len(datagram))
    word, ts = struct.unpack(">II", bytes(datagram[:HEADER_LEN]))
    if word & CONTROL_FLAG != CONTROL_FLAG:
        raise RemoteProtocolError("not a TSP control datagram (sequence word 0x%08x)" % word)
    return word & 0x0FFFFFFF, ts, bytes(datagram[HEADER_LEN:])


def classify(datagram):
    """'control' (TSP message), 'data' (an IPv6 or IPv4 packet) or 'junk'."""
    if len(datagram) < 1:
        return "junk"
    top = datagram[0] >> 4
    if top == 0xF:
        return "control" if len(datagram) >= HEADER_LEN else "junk"
    if top == 6 and len(datagram) >= 40:
        return "data"
    if top == 4 and len(datagram) >= 20:
        return "data"
    return "junk"


class ReliableUdp:
    """TSP's stop-and-wait reliable UDP: one outstanding request, retransmitted with an
    RTT-based timeout (RFC 6298 estimator, exponential backoff) up to max_tries sends."""

    def __init__(self, initial_seq=INITIAL_SEQ, rto_initial=RTO_INITIAL, rto_min=RTO_MIN,
                 rto_max=RTO_MAX, max_tries=MAX_TRIES):
        if not 0 <= initial_seq <= 0x0FFFFFFF:
            raise LocalProtocolError("initial sequence number must be 0..0x0FFFFFFF")
        if max_tries < 1 or not 0 < rto_min <= rto_initial <= rto_max:
            raise LocalProtocolError("need max_tries >= 1 and 0 < rto_min <= rto_initial <= rto_max")
        self.initial_seq = initial_seq
        self.rto_initial = float(rto_initial)
        self.rto_min = float(rto_min)
        self.rto_max = float(rto_max)
        self.max_tries = max_tries
        self.reset()

    def reset(self):
        self.seq = self.initial_seq
        self.srtt = None
        self.rttvar = None
        self.rto = self.rto_initial
        self.has_peer = False
        self.exhausted = False
        self.retransmissions = 0
        self.stale = 0
        self._t0 = None
        self._out = None  # [seq, payload, first_sent, last_sent, tries, rto]

    def timestamp(self, now):
        if self._t0 is None:
            self._t0 = int(now) if now >= 0 else int(now) - 1
        ms = int((now - self._t0) * 1000)
        return max(0, ms) & 0xFFFFFFFF

    @property
    def busy(self):
        return self._out is not None

    def send(self, payload, now):
        """Datagram carrying payload as the next request (none may be outstanding)."""
        if self._out is not None:
            raise LocalProtocolError("a request is still waiting for its answer")
        seq = self.seq
        self.seq = (self.seq + 1) & 0x0FFFFFFF
        self.exhausted = False
        self._out = [seq, bytes(payload), now, now, 1, self.rto]
        return pack_control(seq, self.timestamp(now), payload)

    def receive(self, datagram, now):
        """Payload of the answer to the outstanding request, or None (a stale or
        duplicate answer, or nothing outstanding). RemoteProtocolError if malformed."""
        seq, ts, payload = unpack_control(datagram)
        out = self._out
        if out is None or seq != out[0]:
            self.stale += 1
            return None
        self._out = None
        self.has_peer = True
        rtt = None
        echoed = (self.timestamp(now) - ts) & 0xFFFFFFFF
        if echoed <= int((now - out[2]) * 1000) + 1:
            rtt = echoed / 1000.0  # echo of one of our sends: no retransmission ambiguity
        elif out[4] == 1:
            rtt = now - out[3]
        if rtt is not None:
            self._sample(rtt if rtt > 0 else 0.0)
        return payload

    def _sample(self, r):
        if self.srtt is None:
            self.srtt = r
            self.rttvar = r / 2
        else:
            d = self.srtt - r
            self.rttvar = 0.75 * self.rttvar + 0.25 * (d if d > 0 else -d)
            self.srtt = 0.875 * self.srtt + 0.125 * r
        rto = self.srtt + max(0.01, 4 * self.rttvar)
        self.rto = min(max(rto, self.rto_min), self.rto_max)

    def get_timer(self):
        if self._out is None:
            return None
        return self._out[3] + self._out[5]

    def handle_timer(self, now):
        """The retransmission due now, or None. Sets `exhausted` (and forgets the
        request) when max_tries sends went unanswered."""
        out = self._out
        if out is None or now < out[3] + out[5]:
            return None
        if out[4] >= self.max_tries:
            self._out = None
            self.exhausted = True
            return None
        out[4] += 1
        out[3] = now
        out[5] = min(out[5] * 2, self.rto_max)
        self.rto = out[5]
        self.retransmissions += 1
        return pack_control(out[0], self.timestamp(now), out[1])


# ---------------------------------------------------------------- messages

def frame(body):
    """Content-length framing of a payload."""
    body = bytes(body)
    return ("Content-length: %d\r\n" % len(body)).encode() + body


def version_line(version):
    return ("VERSION=%s\r\n" % version).encode()


def authenticate_line(mechanism, udp=True):
    """'AUTHENTICATE <MECH>\\r\\n'; over UDP with the trailing NUL gogoCLIENT sends."""
    line = ("AUTHENTICATE %s\r\n" % mechanism).encode()
    return line + b"\x00" if udp else line


class Message:
    """A decoded broker message. kind: 'empty' | 'capability' | 'status' | 'line'.
    line: first line (text, without CRLF); code/text for a status; rest: bytes after
    the first line; framed: it came with Content-length."""

    def __init__(self, kind, line="", code=None, text="", rest=b"", framed=False):
        self.kind = kind
        self.line = line
        self.code = code
        self.text = text
        self.rest = rest
        self.framed = framed

    def __repr__(self):
        return "<Message %s %s>" % (self.kind, _printable(self.line, 40))


def _content_length(header):
    # header: the bytes of the "Content-length: N" line without line end
    value = header[15:]
    try:
        text = str(bytes(value), "ascii")
    except UnicodeError:
        raise RemoteProtocolError("Content-length value is not a number")
    return _uint(text, "Content-length", 0, MAX_BODY)


def _is_content_length(b):
    return len(b) >= 15 and _lower_ascii(b[:15]) == b"content-length:"


def parse_status(line):
    """(code, text) of a status line like '200 Success', or None if it is not one."""
    i = 0
    n = len(line)
    while i < n and line[i] in "0123456789":
        i += 1
    if i < 3 or i > 5 or (i < n and line[i] not in " \t"):
        return None
    return int(line[:i]), line[i:].strip(" \t")


def parse_capability(line):
    """{'tunnel': [...], 'auth': [...]} (upper case, in order) from a CAPABILITY line."""
    if not line.startswith("CAPABILITY"):
        raise RemoteProtocolError("not a CAPABILITY line: '%s'" % _printable(line, 40))
    caps = {"tunnel": [], "auth": []}
    for tok in line[10:].split():
        k, sep, v = tok.partition("=")
        k = k.lower()
        if sep and v and k in caps:
            v = v.upper()
            if v not in caps[k]:
                caps[k].append(v)
    return caps


def decode_message(payload):
    """Decode one complete broker message (a UDP payload or one framed TCP message)."""
    data = bytes(payload)
    end = len(data)
    while end and data[end - 1] == 0:
        end -= 1
    data = data[:end]
    if not data:
        return Message("empty")
    framed = False
    if _is_content_length(data):
        nl = data.find(b"\n")
        if nl < 0:
            raise RemoteProtocolError("Content-length header without a line end")
        n = _content_length(data[:nl].rstrip(b"\r"))
        body = data[nl + 1:]
        if len(body) < n:
            raise RemoteProtocolError("truncated message: Content-length %d, got %d bytes"
                                      % (n, len(body)))
        if body[n:].strip(b" \t\r\n"):
            raise RemoteProtocolError("%d bytes more than Content-length %d says"
                                      % (len(body) - n, n))
        data = body[:n]
        framed = True
        if not data:
            raise RemoteProtocolError("empty Content-length message")
    nl = data.find(b"\n")
    if nl < 0:
        raw, rest = data, b""
    else:
        raw, rest = data[:nl], data[nl + 1:]
    raw = raw.rstrip(b"\r")
    if len(raw) > MAX_LINE:
        raise RemoteProtocolError("line longer than %d bytes" % MAX_LINE)
    try:
        line = str(raw, "utf-8")
    except UnicodeError:
        raise RemoteProtocolError("line is not valid UTF-8: '%s'" % _printable(raw, 40))
    for c in line:
        if ord(c) < 32 and c != "\t":
            raise RemoteProtocolError("control character in line '%s'" % _printable(raw, 40))
    if line.startswith("CAPABILITY"):
        return Message("capability", line, rest=rest, framed=framed)
    st = parse_status(line)
    if st is not None:
        return Message("status", line, st[0], st[1], rest, framed)
    return Message("line", line, rest=rest, framed=framed)


def split_stream(buf):
    """One complete message from the front of a TCP receive buffer: (message, rest) or
    None when more bytes are needed. RemoteProtocolError when it can never be valid."""
    i = 0
    while i < len(buf) and buf[i] == 0:
        i += 1
    if i:
        buf = buf[i:]
    if not buf:
        return None
    if len(buf) < 15 and b"content-length:".startswith(_lower_ascii(buf)):
        return None
    nl = buf.find(b"\n")
    if _is_content_length(buf):
        if nl < 0:
            if len(buf) > 64:
                raise RemoteProtocolError("Content-length header without a line end")
            return None
        n = _content_length(buf[:nl].rstrip(b"\r"))
        end = nl + 1 + n
        if len(buf) < end:
            return None
        return buf[:end], buf[end:]
    if nl < 0:
        if len(buf) > MAX_LINE:
            raise RemoteProtocolError("line longer than %d bytes" % MAX_LINE)
        return None
    line = buf[:nl + 1]
    st = None
    try:
        st = parse_status(str(line, "utf-8").rstrip("\r\n"))
    except UnicodeError:
        pass
    if st is not None and st[0] >= REDIRECT_BASE and buf[nl + 1:].lstrip(b" \t\r\n")[:1] == b"<":
        # an unframed redirect: the status line and then the broker list XML
        end = buf.find(b"</tunnel>", nl + 1)
        if end < 0:
            if len(buf) > MAX_BODY:
                raise RemoteProtocolError("redirect XML larger than %d bytes" % MAX_BODY)
            return None
        end += 9
        while end < len(buf) and buf[end] in b"\r\n":
            end += 1
        return buf[:end], buf[end:]
    return line, buf[nl + 1:]


def _addr_text(el, what):
    t = el.text.strip(" \t\r\n")
    if not t:
        raise RemoteProtocolError("%s is empty" % what)
    return t


def _norm_ip(text, kind, what):
    try:
        if kind == "ipv4":
            return addr.ip4_ntoa(addr.ip4_aton(text))
        return addr.ip6_ntoa(addr.ip6_aton(text))
    except ValueError:
        raise RemoteProtocolError("%s is not an %s address: '%s'"
                                  % (what, "IPv4" if kind == "ipv4" else "IPv6", _printable(text, 50)))


def _addresses(parent, what):
    out = {}
    if parent is None:
        return out
    for a in parent.findall("address"):
        kind = (a.get("type") or "").lower()
        if kind in ("ipv4", "ipv6"):
            if kind not in out:
                out[kind] = _norm_ip(_addr_text(a, what), kind, what + " " + kind)
        elif kind == "dn" and "dn" not in out:
            out["dn"] = _hostname(_addr_text(a, what), what)
    return out


def _hostname(text, what):
    if len(text) > 253:
        raise RemoteProtocolError("%s name is longer than 253 characters" % what)
    for c in text:
        if c not in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_":
            raise RemoteProtocolError("%s name '%s' has bad characters" % (what, _printable(text, 50)))
    return text.lower()


def _parse_xml(data):
    i = 0
    while i < len(data) and data[i] in b" \t\r\n":
        i += 1
    if i >= len(data):
        raise RemoteProtocolError("the broker sent no XML")
    return tsp_xml.parse(data[i:])


def parse_offer(data):
    """The broker's tunnel offer (<tunnel action="info" ...> XML) as a dict:
    type, action, lifetime, mtu, proxy, server_ipv4, server_ipv6, client_ipv4,
    client_ipv6, client_dns_name, prefix, prefix_len, router_protocol, dns_servers,
    keepalive_interval, keepalive_address. Missing optional items are None."""
    root = _parse_xml(data)
    if root.tag != "tunnel":
        raise RemoteProtocolError("the offer's root element is <%s>, not <tunnel>" % root.tag)
    ttype = (root.get("type") or "").lower()
    if ttype not in ("v6v4", "v6udpv4", "v4v6", "v6anyv4"):
        raise RemoteProtocolError("the offer has an unknown tunnel type '%s'"
                                  % _printable(root.get("type") or "", 20))
    o = {"type": ttype, "action": (root.get("action") or "").lower(),
         "lifetime": None, "mtu": None, "proxy": root.get("proxy"),
         "server_ipv4": None, "server_ipv6": None, "client_ipv4": None, "client_ipv6": None,
         "client_dns_name": None, "prefix": None, "prefix_len": None, "router_protocol": None,
         "dns_servers": [], "keepalive_interval": None, "keepalive_address": None}
    if root.get("lifetime") is not None:
        o["lifetime"] = _uint(root.get("lifetime"), "tunnel lifetime", 0, 0x7FFFFFFF)
    if root.get("mtu") is not None:
        o["mtu"] = _uint(root.get("mtu"), "tunnel MTU", 68, 65535)
    server = root.find("server")
    client = root.find("client")
    if server is None or client is None:
        raise RemoteProtocolError("the offer has no <server> or no <client> part")
    sa = _addresses(server, "server address")
    ca = _addresses(client, "client address")
    o["server_ipv4"] = sa.get("ipv4")
    o["server_ipv6"] = sa.get("ipv6")
    o["client_ipv4"] = ca.get("ipv4")
    o["client_ipv6"] = ca.get("ipv6")
    o["client_dns_name"] = ca.get("dn")
    if ttype == "v4v6":
        need = (("server_ipv6", "server IPv6"), ("server_ipv4", "server IPv4"),
                ("client_ipv4", "client IPv4"))
    else:
        need = (("server_ipv4", "server IPv4"), ("server_ipv6", "server IPv6"),
                ("client_ipv6", "client IPv6"))
    for key, what in need:
        if o[key] is None:
            raise RemoteProtocolError("the offer has no %s address" % what)
    ka = client.find("keepalive")
    if ka is not None:
        if ka.get("interval") is not None:
            o["keepalive_interval"] = _uint(ka.get("interval"), "keepalive interval", 0, 86400)
        kaa = _addresses(ka, "keepalive address")
        o["keepalive_address"] = kaa.get("ipv6") or kaa.get("ipv4")
    router = client.find("router")
    if router is not None:
        o["router_protocol"] = router.get("protocol")
        pfx = router.find("prefix")
        if pfx is not None:
            v4 = ttype == "v4v6"
            maxlen = 32 if v4 else 128
            if pfx.get("length") is None:
                raise RemoteProtocolError("the offered prefix has no length")
            plen = _uint(pfx.get("length"), "prefix length", 0, maxlen)
            o["prefix"] = _prefix_text(pfx.text.strip(" \t\r\n"), plen, v4)
            o["prefix_len"] = plen
        dns = router.find("dns_server")
        if dns is not None:
            for a in dns.findall("address"):
                kind = (a.get("type") or "").lower()
                if kind in ("ipv4", "ipv6"):
                    o["dns_servers"].append(_norm_ip(_addr_text(a, "DNS server"), kind,
                                                     "DNS server"))
    return o


def _prefix_text(text, plen, v4):
    if not text:
        raise RemoteProtocolError("the offered prefix is empty")
    try:
        if v4:
            b = addr.ip4_aton(text)
            return addr.ip4_ntoa(addr.mask(b, plen))
        try:
            b = addr.ip6_aton(text)
        except ValueError:
            # some brokers send only the prefix groups ("2001:db8:1234")
            if "::" in text:
                raise
            b = addr.ip6_aton(text + "::")
        return addr.ip6_ntoa(addr.mask(b, plen))
    except ValueError:
        raise RemoteProtocolError("the offered prefix '%s' is not an address" % _printable(text, 50))


def parse_redirect(data):
    """Broker addresses (text, in order) from a redirect's XML: every <broker> element
    (inside <tunnel> or <broker_redirect>) with <address type="ipv4|ipv6|dn"> children.
    Invalid entries are skipped; no valid entry is an error."""
    root = _parse_xml(data)
    out = []
    for b in root.iter("broker"):
        entries = b.findall("address")
        if not entries and not b.children:
            entries = [b]
        for a in entries:
            t = a.text.strip(" \t\r\n")
            kind = (a.get("type") or "").lower()
            try:
                if kind == "ipv4" or (not kind and addr.is_ip4(t)):
                    v = _norm_ip(t, "ipv4", "broker")
                elif kind == "ipv6" or (not kind and addr.is_ip6(t)):
                    v = _norm_ip(t, "ipv6", "broker")
                elif kind in ("dn", ""):
                    v = _hostname(t, "broker")
                    if not v:
                        continue
                else:
                    continue
            except RemoteProtocolError:
                continue
            if v not in out:
                out.append(v)
            if len(out) >= MAX_BROKERS:
                return out
    if not out:
        raise RemoteProtocolError("the redirect lists no usable broker")
    return out


def build_request(mode, local_ipv4=None, local_ipv6=None, keepalive_interval=30,
                  host_type="host", prefix_len=None, dns_server=None, proxy=False):
    """The tunnel request XML (bytes, without Content-length), byte for byte as
    gogoCLIENT 1.2 writes it."""
    if mode not in MODES:
        raise ConfigError("tunnel mode must be one of %s" % ", ".join(MODES))
    v4v6 = mode == "v4v6"
    out = ['<tunnel action="create" type="%s" proxy="%s">\r\n' % (mode, "yes" if proxy else "no"),
           " <client>\r\n"]
    if v4v6:
        out.append('  <address type="ipv6">%s</address>\r\n' % _cfg_ip(local_ipv6, "ipv6"))
    else:
        out.append('  <address type="ipv4">%s</address>\r\n' % _cfg_ip(local_ipv4, "ipv4"))
    if keepalive_interval:
        out.append('  <keepalive interval="%d">\r\n    <address type="%s">%s</address>\r\n'
                   '  </keepalive>\r\n' % (keepalive_interval, "ipv4" if v4v6 else "ipv6",
                                         "127.0.0.1" if v4v6 else "::"))
    if host_type == "router":
        if prefix_len is None:
            prefix_len = 24 if v4v6 else 48
        out.append("  <router>\r\n")
        out.append('   <prefix length="%d"/>\r\n' % prefix_len)
        names = _dns_names(dns_server)
        if names:
            out.append("   <dns_server>\r\n")
            for name in names:
                out.append('     <address type="dn">%s</address>\r\n' % tsp_xml.escape(name))
            out.append("   </dns_server>\r\n")
        out.append("  </router>\r\n")
    out.append(" </client>\r\n</tunnel>\r\n")
    return "".join(out).encode()


def _cfg_ip(text, kind):
    if kind == "ipv4":
        if not isinstance(text, str) or not addr.is_ip4(text):
            raise ConfigError("the local IPv4 address is missing or invalid")
        return addr.ip4_ntoa(addr.ip4_aton(text))
    if not isinstance(text, str) or not addr.is_ip6(text):
        raise ConfigError("the local IPv6 address (needed for v4v6) is missing or invalid")
    return addr.ip6_ntoa(addr.ip6_aton(text))


def _dns_names(dns_server):
    if not dns_server:
        return []
    if isinstance(dns_server, str):
        names = dns_server.split(":")  # gogoCLIENT's dns_server=a.example:b.example
    else:
        names = list(dns_server)
    out = []
    for n in names:
        if not isinstance(n, str):
            raise ConfigError("DNS server names must be text")
        n = n.strip()
        if not n:
            continue
        if len(n) > 253:
            raise ConfigError("DNS server name longer than 253 characters")
        for c in n:
            if c not in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_":
                raise ConfigError("DNS server '%s' is not a host name" % _printable(n, 50))
        out.append(n)
    return out


# ---------------------------------------------------------------- client state machine

IDLE = "IDLE"
WAIT_CAPABILITY = "WAIT_CAPABILITY"
WAIT_PLAIN_ACK = "WAIT_PLAIN_ACK"
WAIT_AUTH_OK = "WAIT_AUTH_OK"
WAIT_CHALLENGE = "WAIT_CHALLENGE"
WAIT_RSPAUTH = "WAIT_RSPAUTH"
WAIT_DIGEST_OK = "WAIT_DIGEST_OK"
WAIT_OFFER = "WAIT_OFFER"
WAIT_ACCEPT_ACK = "WAIT_ACCEPT_ACK"
UP = "UP"
REDIRECTED = "REDIRECTED"
RESTART = "RESTART"
FAILED = "FAILED"

WAITING = (WAIT_CAPABILITY, WAIT_PLAIN_ACK, WAIT_AUTH_OK, WAIT_CHALLENGE, WAIT_RSPAUTH,
           WAIT_DIGEST_OK, WAIT_OFFER, WAIT_ACCEPT_ACK)
TERMINAL = (UP, REDIRECTED, FAILED)

# (state, input) -> next state. Every change of state goes through this table; an input
# not listed for a state is a bug on our side (LocalProtocolError).
TRANSITIONS = {
    (IDLE, "connect"): WAIT_CAPABILITY,
    (RESTART, "connect"): WAIT_CAPABILITY,
    (WAIT_CAPABILITY, "use-anonymous"): WAIT_AUTH_OK,
    (WAIT_CAPABILITY, "use-plain-udp"): WAIT_PLAIN_ACK,
    (WAIT_CAPABILITY, "use-plain-tcp"): WAIT_AUTH_OK,
    (WAIT_CAPABILITY, "use-digest"): WAIT_CHALLENGE,
    (WAIT_CAPABILITY, "version-fallback"): RESTART,
    (WAIT_CAPABILITY, "need-tcp"): RESTART,
    (WAIT_PLAIN_ACK, "ack"): WAIT_AUTH_OK,
    (WAIT_CHALLENGE, "challenge"): WAIT_RSPAUTH,
    (WAIT_RSPAUTH, "rspauth"): WAIT_DIGEST_OK,
    (WAIT_AUTH_OK, "ok"): WAIT_OFFER,
    (WAIT_DIGEST_OK, "ok"): WAIT_OFFER,
    (WAIT_OFFER, "offer-udp"): WAIT_ACCEPT_ACK,
    (WAIT_OFFER, "offer-tcp"): UP,
    (WAIT_ACCEPT_ACK, "ack"): UP,
}
for _s in WAITING:
    TRANSITIONS[(_s, "redirect")] = REDIRECTED
    TRANSITIONS[(_s, "error")] = FAILED
for _s in (IDLE, RESTART):
    TRANSITIONS[(_s, "error")] = FAILED

# state -> handler of a broker message received in that state
DISPATCH = {
    WAIT_CAPABILITY: "_on_capability",
    WAIT_PLAIN_ACK: "_on_ack",
    WAIT_AUTH_OK: "_on_auth_status",
    WAIT_CHALLENGE: "_on_challenge",
    WAIT_RSPAUTH: "_on_rspauth",
    WAIT_DIGEST_OK: "_on_auth_status",
    WAIT_OFFER: "_on_offer",
    WAIT_ACCEPT_ACK: "_on_ack",
}

_MECH_RANK = ("DIGEST-MD5", "PLAIN", "ANONYMOUS")


class TspClient:
    """Sans-IO TSP client for one broker. Feed it with receive_datagram() (UDP) or
    receive_data() (TCP), send what datagrams_to_send() / data_to_send() return, drive
    it with get_timer()/handle_timer(), read events()."""

    def __init__(self, username="", password="", auth="any", mode="v6anyv4",
                 host_type="host", prefix_len=None, local_ipv4=None, local_ipv6=None,
                 keepalive_interval=30, dns_server=None, transport="udp", version="2.0.2",
                 server="", rand=None, cnonce_source=None, proxy=False,
                 rto_initial=RTO_INITIAL, max_tries=MAX_TRIES, tcp_timeout=TCP_TIMEOUT,
                 initial_seq=INITIAL_SEQ):
        if not isinstance(username, str) or not isinstance(password, str):
            raise ConfigError("username and password must be text")
        if "\x00" in username or "\x00" in password or "\n" in username or "\n" in password:
            raise ConfigError("username and password must not contain NUL or line breaks")
        auth = auth.lower() if isinstance(auth, str) else auth
        if auth not in AUTHS:
            raise ConfigError("auth must be one of %s" % ", ".join(AUTHS))
        if auth in ("plain", "digest-md5") and not username:
            raise ConfigError("auth %s needs a username" % auth)
        if mode not in MODES:
            raise ConfigError("tunnel mode must be one of %s" % ", ".join(MODES))
        if host_type not in HOST_TYPES:
            raise ConfigError("host_type must be host or router")
        if prefix_len is not None:
            maxlen = 32 if mode == "v4v6" else 128
            if not isinstance(prefix_len, int) or isinstance(prefix_len, bool) \
                    or not 1 <= prefix_len <= maxlen:
                raise ConfigError("prefix length must be 1..%d" % maxlen)
        if not isinstance(keepalive_interval, int) or isinstance(keepalive_interval, bool) \
                or not 0 <= keepalive_interval <= 86400:
            raise ConfigError("keepalive interval must be 0..86400 seconds")
        if transport not in TRANSPORTS:
            raise ConfigError("transport must be udp or tcp")
        if transport == "tcp" and mode == "v6udpv4":
            raise ConfigError("v6udpv4 needs the TSP session over UDP")
        if version not in VERSIONS:
            raise ConfigError("TSP version must be one of %s" % ", ".join(VERSIONS))
        if local_ipv4 is not None:
            _cfg_ip(local_ipv4, "ipv4")
        if local_ipv6 is not None:
            _cfg_ip(local_ipv6, "ipv6")
        self._dns = _dns_names(dns_server)
        if username and auth in ("any", "digest-md5"):
            if not isinstance(server, str) or not server:
                raise ConfigError("the broker's name (server) is needed for DIGEST-MD5")
            if cnonce_source is None and rand is None:
                raise LocalProtocolError("DIGEST-MD5 needs rand or cnonce_source")
        self.username = username
        self._password = password
        self.auth = auth
        self.mode = mode
        self.host_type = host_type
        self.prefix_len = prefix_len
        self.local_ipv4 = local_ipv4
        self.local_ipv6 = local_ipv6
        self.keepalive_interval = keepalive_interval
        self.transport = transport
        self.version = version
        self.server = server
        self.proxy = bool(proxy)
        self._rand = rand
        self._cnonce_source = cnonce_source
        self.tcp_timeout = float(tcp_timeout)
        self._rudp = ReliableUdp(initial_seq=initial_seq, rto_initial=rto_initial,
                                 max_tries=max_tries)
        self.state = IDLE
        self._events = []
        self._reset_session()

    def __repr__(self):
        return "<TspClient %s %s/%s state=%s user=%s>" % (
            self.mode, self.transport, self.version, self.state, self.username or "-")

    def _reset_session(self):
        self._out_dgrams = []
        self._out_bytes = bytearray()
        self._rbuf = b""
        self._tcp_deadline = None
        self._digest = None
        self.capabilities = None
        self.mechanism = None
        self.offer = None
        self.brokers = None
        self.error = None
        self._rudp.reset()

    # -- public API --------------------------------------------------------

    def connect(self, now, transport=None, local_ipv4=None, local_ipv6=None):
        """Start a session (from IDLE, or again after version-fallback / need-tcp)."""
        if self.state not in (IDLE, RESTART):
            raise LocalProtocolError("connect() in state %s; make a new TspClient" % self.state)
        if transport is not None:
            if transport not in TRANSPORTS or (transport == "tcp" and self.mode == "v6udpv4"):
                raise LocalProtocolError("transport %s is not possible for %s" % (transport, self.mode))
            self.transport = transport
        if local_ipv4 is not None:
            _cfg_ip(local_ipv4, "ipv4")
            self.local_ipv4 = local_ipv4
        if local_ipv6 is not None:
            _cfg_ip(local_ipv6, "ipv6")
            self.local_ipv6 = local_ipv6
        self._reset_session()
        self._go("connect")
        self._send(version_line(self.version), now)

    def receive_datagram(self, data, now):
        """A UDP datagram from the broker's address and port. Data packets (not
        control) are ignored here: the data plane takes them (see classify())."""
        if self.transport != "udp":
            raise LocalProtocolError("receive_datagram() on a TCP session")
        if self.state == IDLE:
            raise LocalProtocolError("receive_datagram() before connect()")
        if self.state not in WAITING or classify(data) != "control":
            return
        try:
            payload = self._rudp.receive(data, now)
            if payload is None:
                return
            if len(payload) > MAX_BODY + 64:
                raise RemoteProtocolError("control message larger than %d bytes" % (MAX_BODY + 64))
            self._dispatch(decode_message(payload), now)
        except RemoteProtocolError as e:
            self._malformed(e)

    def receive_data(self, data, now):
        """Bytes from the TCP connection; b'' means the broker closed it."""
        if self.transport != "tcp":
            raise LocalProtocolError("receive_data() on a UDP session")
        if self.state == IDLE:
            raise LocalProtocolError("receive_data() before connect()")
        if self.state not in WAITING:
            return
        if not data:
            self._fail(None, "the broker closed the connection during the TSP session", False)
            return
        try:
            self._rbuf += bytes(data)
            if len(self._rbuf) > MAX_BODY + MAX_LINE:
                raise RemoteProtocolError("the broker sent more than %d bytes without a complete "
                                          "message" % (MAX_BODY + MAX_LINE))
            while self.state in WAITING:
                got = split_stream(self._rbuf)
                if got is None:
                    break
                msg, self._rbuf = got
                self._dispatch(decode_message(msg), now)
        except RemoteProtocolError as e:
            self._malformed(e)

    def datagrams_to_send(self, now=None):
        if self.transport != "udp":
            raise LocalProtocolError("datagrams_to_send() on a TCP session")
        out = self._out_dgrams
        self._out_dgrams = []
        return out

    def data_to_send(self):
        if self.transport != "tcp":
            raise LocalProtocolError("data_to_send() on a UDP session")
        out = bytes(self._out_bytes)
        self._out_bytes = bytearray()
        return out

    def get_timer(self):
        if self.state not in WAITING:
            return None
        if self.transport == "udp":
            return self._rudp.get_timer()
        return self._tcp_deadline

    def handle_timer(self, now):
        if self.state not in WAITING:
            return
        if self.transport == "tcp":
            if self._tcp_deadline is not None and now >= self._tcp_deadline:
                self._fail(None, "no answer from the broker within %d s" % int(self.tcp_timeout),
                           False)
            return
        d = self._rudp.handle_timer(now)
        if d is not None:
            self._out_dgrams.append(d)
            return
        if not self._rudp.exhausted:
            return
        tries = self._rudp.max_tries
        if not self._rudp.has_peer and self.state == WAIT_CAPABILITY and self.mode != "v6udpv4":
            self._go("need-tcp")
            self._events.append(("need-tcp", {"reason": "no answer over UDP after %d tries" % tries}))
        elif self._rudp.has_peer:
            self._fail(None, "the broker stopped answering (no reply after %d tries)" % tries, False)
        else:
            self._fail(None, "no answer from the broker over UDP after %d tries" % tries, False)

    def events(self):
        ev = self._events
        self._events = []
        return ev

    @property
    def retransmissions(self):
        """UDP control retransmissions in this session."""
        return self._rudp.retransmissions

    @property
    def rtt(self):
        """Smoothed round-trip time of the UDP control exchange (s), or None."""
        return self._rudp.srtt

    # -- internals ---------------------------------------------------------

    def _go(self, inp):
        nxt = TRANSITIONS.get((self.state, inp))
        if nxt is None:
            raise LocalProtocolError("TSP client: no transition for %s in state %s" % (inp, self.state))
        self.state = nxt

    def _send(self, payload, now):
        if self.transport == "udp":
            self._out_dgrams.append(self._rudp.send(payload, now))
        else:
            self._out_bytes += payload
            self._tcp_deadline = now + self.tcp_timeout

    def _fail(self, code, message, fatal):
        self.error = {"code": code, "message": message, "fatal": fatal}
        self._go("error")
        self._events.append(("error", {"code": code, "message": message, "fatal": fatal}))

    def _malformed(self, e):
        if self.state in WAITING:
            self._fail(None, "the broker sent a malformed reply: " + e.reason, False)

    def _dispatch(self, msg, now):
        getattr(self, DISPATCH[self.state])(msg, now)

    def _status(self, msg):
        """Common handling of a status where success (200) is expected. True if 200."""
        code = msg.code
        if code == 200:
            return True
        if code >= REDIRECT_BASE:
            self._redirect(msg)
            return False
        words, fatal = status_message(code)
        if code == 302:
            words += " (%s)" % self.version
        elif code == 303:
            words += " (%s)" % self.mode
        self._fail(code, words, fatal)
        return False

    def _redirect(self, msg):
        try:
            brokers = parse_redirect(msg.rest)
        except RemoteProtocolError as e:
            self._fail(msg.code, "the broker redirected us but sent no usable broker list: "
                       + e.reason, False)
            return
        self.brokers = brokers
        self._go("redirect")
        self._events.append(("redirect", brokers))

    def _unexpected(self, msg, expected):
        raise RemoteProtocolError("expected %s, got '%s'" % (expected, _printable(msg.line, 60)
                                                             if msg.kind != "empty" else "an empty message"))

    def _on_capability(self, msg, now):
        if msg.kind == "status":
            if msg.code == 302:
                i = VERSIONS.index(self.version)
                if i + 1 < len(VERSIONS):
                    old = self.version
                    self.version = VERSIONS[i + 1]
                    self._go("version-fallback")
                    self._events.append(("version-fallback", {"version": self.version,
                                                              "rejected": old}))
                    return
            if self._status(msg):  # a 200 out of turn
                self._unexpected(msg, "CAPABILITY")
            return
        if msg.kind != "capability":
            self._unexpected(msg, "CAPABILITY")
        caps = parse_capability(msg.line)
        self.capabilities = caps
        tunnels = caps["tunnel"]
        want = {"v6v4": ("V6V4",), "v6udpv4": ("V6UDPV4",), "v4v6": ("V4V6",),
                "v6anyv4": ("V6V4",) if self.transport == "tcp" else ("V6V4", "V6UDPV4")}[self.mode]
        if not [t for t in want if t in tunnels]:
            self._fail(None, "the broker does not offer tunnel type %s (it offers: %s)"
                       % (self.mode, ", ".join(tunnels).lower() or "none"), True)
            return
        mech = self._choose_mechanism(caps["auth"])
        if mech is None:
            self._fail(None, "no common authentication method: the broker offers %s, we are "
                       "configured for %s" % (", ".join(caps["auth"]) or "none", self.auth), True)
            return
        self.mechanism = mech
        udp = self.transport == "udp"
        if mech == "ANONYMOUS":
            self._go("use-anonymous")
            self._send(authenticate_line("ANONYMOUS", udp), now)
        elif mech == "PLAIN":
            if udp:
                self._go("use-plain-udp")
                self._send(authenticate_line("PLAIN", True), now)
            else:
                self._go("use-plain-tcp")
                self._send(authenticate_line("PLAIN", False)
                           + sasl.plain_message(self.username, self._password) + b"\r\n", now)
        else:
            self._digest = sasl.DigestMD5(self.username, self._password, self.server)
            self._go("use-digest")
            self._send(authenticate_line("DIGEST-MD5", udp), now)

    def _choose_mechanism(self, offered):
        if self.auth != "any":
            m = self.auth.upper()
            return m if m in offered else None
        for m in _MECH_RANK:
            if m in offered and (m == "ANONYMOUS" or self.username):
                return m
        return None

    def _on_ack(self, msg, now):
        if msg.kind == "status":
            if self._status(msg):
                self._unexpected(msg, "an empty acknowledgement")
            return
        if msg.kind != "empty":
            self._unexpected(msg, "an empty acknowledgement")
        if self.state == WAIT_PLAIN_ACK:
            self._go("ack")
            self._send(sasl.plain_message(self.username, self._password) + b"\r\n", now)
        else:
            self._go("ack")
            self._tunnel_up()

    def _on_auth_status(self, msg, now):
        if msg.kind != "status":
            self._unexpected(msg, "an authentication status")
        if not self._status(msg):
            return
        self._go("ok")
        self._send(frame(self._request()), now)

    def _request(self):
        return build_request(self.mode, self.local_ipv4, self.local_ipv6,
                             self.keepalive_interval, self.host_type, self.prefix_len,
                             self._dns, self.proxy)

    def _on_challenge(self, msg, now):
        if msg.kind == "status":
            self._status(msg)
            if self.state in WAITING:  # a 200 here is out of turn
                self._unexpected(msg, "a DIGEST-MD5 challenge")
            return
        if msg.kind != "line" or msg.rest.strip(b" \t\r\n"):
            self._unexpected(msg, "a DIGEST-MD5 challenge")
        challenge = sasl.parse_directives(sasl.b64decode(msg.line, "DIGEST-MD5 challenge"))
        if self._cnonce_source is not None:
            cnonce = self._cnonce_source()
        else:
            cnonce = "".join("%02x" % (int(self._rand() * 256) & 0xFF) for _ in range(16))
        resp = self._digest.response(challenge, cnonce)
        self._go("challenge")
        self._send(sasl.b64encode(resp) + b"\r\n", now)

    def _on_rspauth(self, msg, now):
        if msg.kind == "status":
            self._status(msg)
            if self.state in WAITING:
                self._unexpected(msg, "the DIGEST-MD5 rspauth")
            return
        if msg.kind != "line":
            self._unexpected(msg, "the DIGEST-MD5 rspauth")
        final = sasl.parse_directives(sasl.b64decode(msg.line, "DIGEST-MD5 final message"),
                                      "DIGEST-MD5 final message")
        try:
            self._digest.check_rspauth(final)
        except RemoteProtocolError as e:
            self._fail(None, "authentication failed: " + e.reason, True)
            return
        self._go("rspauth")
        if self.transport == "udp":
            self._send(b"", now)  # poll for the status line, as gogoCLIENT does
        else:
            self._tcp_deadline = now + self.tcp_timeout

    def _on_offer(self, msg, now):
        if msg.kind != "status":
            self._unexpected(msg, "the tunnel offer")
        if not self._status(msg):
            return
        offer = parse_offer(msg.rest)
        asked = self.mode
        ok = {"v6anyv4": ("v6v4", "v6udpv4"), "v6v4": ("v6v4",), "v6udpv4": ("v6udpv4",),
              "v4v6": ("v4v6",)}[asked]
        if offer["type"] not in ok:
            raise RemoteProtocolError("the broker offered a %s tunnel, we asked for %s"
                                      % (offer["type"], asked))
        if offer["type"] == "v6udpv4" and self.transport != "udp":
            raise RemoteProtocolError("the broker offered v6udpv4 on a TCP session")
        if self.host_type == "router" and offer["prefix"] is None:
            raise RemoteProtocolError("we asked for a prefix and the offer has none")
        offer["nat_detected"] = bool(offer["type"] != "v4v6" and self.local_ipv4 is not None
                                     and offer["client_ipv4"] is not None
                                     and offer["client_ipv4"] != addr.ip4_ntoa(addr.ip4_aton(self.local_ipv4)))
        self.offer = offer
        self._events.append(("tunnel-offer", dict(offer)))
        if self.transport == "udp":
            self._go("offer-udp")
            self._send(frame(ACCEPT), now)
        else:
            self._go("offer-tcp")
            self._out_bytes += frame(ACCEPT)
            self._tcp_deadline = None
            self._tunnel_up()

    def _tunnel_up(self):
        p = dict(self.offer)
        p["transport"] = self.transport
        p["version"] = self.version
        p["auth"] = self.mechanism
        p["rtt"] = self._rudp.srtt
        self._events.append(("tunnel-up", p))
