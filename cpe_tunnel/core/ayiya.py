# AYIYA, "Anything In Anything" (draft-massar-v6ops-ayiya-02), as AICCU and sixxsd
# speak it on UDP port 5072. Codec and per-tunnel session, sans-IO, MicroPython subset.
#
# Wire format (checked against ../shared/captures/aiccu-ayiya.pcap and sixxsd_probe.pcap):
#   byte 0   IDLen << 4 | IDType     identity is 2**IDLen bytes; type 1 = integer
#   byte 1   SigLen << 4 | HshMth    signature is SigLen * 4 bytes; method 2 = SHA-1
#   byte 2   AutMth << 4 | OpCode    auth 1 = shared secret
#   byte 3   Next Header             IP protocol of the payload (41 IPv6, 59 none)
#   4..7     Epoch time              seconds since 1970, big-endian, 32 bits
#   8..23    Identity                the sender's own tunnel IPv6 address
#   24..43   Signature               SHA-1 over the whole datagram (header, identity,
#                                    signature slot, payload) with SHA-1(password) in
#                                    the signature slot while hashing
#   44..     Payload
# Only what sixxsd accepts is spoken: 0x41 (16-byte integer identity), 0x52 (20-byte
# SHA-1 signature), auth method 1.
#
# Checks on a received datagram, in this order; the first that fails names the drop
# (exc.code, also the key of the per-reason drop counters):
#   'truncated'            shorter than the 44-byte header
#   'unsupported identity' IDLen/IDType other than 4/1
#   'unsupported hash'     SigLen/HshMth other than 5/2
#   'unsupported auth'     AutMth other than 1
#   'unsupported opcode'   opcode above 7
#   'foreign identity'     identity is not the peer's tunnel address
#   'bad signature'        signature does not match the shared secret
#   'stale timestamp'      |now - epoch| > max_skew (120 s, sixxsd's CLOCK_OFF)
# The signature is checked before the time, so 'stale timestamp' always means an
# authentic packet that is old (a replay) or a clock that is off, and the offset it
# shows can be trusted. Identical packets inside the skew window are accepted: AICCU
# itself sends identical beats back to back (see the capture), as sixxsd allows.
# The session adds, for forwarded payloads:
#   'unsupported next header'  forward with a next header other than 41 (IPv6)
#   'bad payload'              forward whose payload is not an IPv6 packet
#
# Session rules (AyiyaSession):
# - A beat (opcode noop, next header 59, no payload) goes out at once when the session
#   starts and then whenever nothing was sent for `interval` seconds: any signed packet
#   refreshes the PoP's liveness timer and the NAT mapping, so beats are skipped while
#   traffic flows. interval 0 disables beats (the PoP side).
# - Echo request (2) is answered with an echo response (4) carrying the same payload;
#   echo request + forward (3) is answered and its payload also delivered.
# - MOTD (5), echo response (4) and query (6, 7) become events; they are not forwarded.
# - Bad input never raises out of receive(): it is dropped and counted by reason.
# - Time: `now` is the caller's monotonic clock (timers); `wall` is Unix time for the
#   epoch field and the skew check (defaults to `now` when not given).
# - Secrets: only SHA-1(password) is kept; it never appears in repr, status or errors.

import hashlib
import struct

from cpe_tunnel.core import addr
from cpe_tunnel.core.errors import LocalProtocolError, RemoteProtocolError

PORT = 5072
HEADER_LEN = 44  # 8 header + 16 identity + 20 signature
MAX_SKEW = 120

OP_NOOP = 0
OP_FORWARD = 1
OP_ECHO_REQUEST = 2
OP_ECHO_REQUEST_FORWARD = 3
OP_ECHO_RESPONSE = 4
OP_MOTD = 5
OP_QUERY_REQUEST = 6
OP_QUERY_RESPONSE = 7
OPCODE_NAMES = ("noop", "forward", "echo-request", "echo-request-forward",
                "echo-response", "motd", "query-request", "query-response")

NH_IPV4 = 4
NH_IPV6 = 41
NH_NONE = 59

_BYTE0 = 0x41  # IDLen 4 (16 bytes), IDType 1 (integer)
_BYTE1 = 0x52  # SigLen 5 (20 bytes), HshMth 2 (SHA-1)
_AUTH = 0x10  # AutMth 1 (shared secret), high nibble of byte 2
_BYTES01 = 0x4152

DROP_REASONS = ("truncated", "unsupported identity", "unsupported hash", "unsupported auth",
                "unsupported opcode", "foreign identity", "bad signature", "stale timestamp",
                "unsupported next header", "bad payload")

_sha1 = hashlib.sha1
_unpack = struct.unpack_from
_MOTD_MAX = 1024
_QUEUE_MAX = 64  # datagrams / events kept for the caller at most


class AyiyaError(RemoteProtocolError):
    """A datagram we do not accept. .code is one of DROP_REASONS (a short, stable word
    for counters); .reason is a sentence for people."""

    def __init__(self, code, detail=None):
        super().__init__(code if detail is None else code + ": " + detail)
        self.code = code


def password_hash(password):
    """SHA-1 of the tunnel password (text or bytes): the 20-byte key AYIYA uses."""
    if isinstance(password, str):
        password = password.encode("utf-8")
    if not isinstance(password, (bytes, bytearray)) or not password:
        raise LocalProtocolError("AYIYA password must be non-empty text or bytes")
    return _sha1(password).digest()


def _identity(value, what):
    if isinstance(value, str):
        try:
            return addr.ip6_aton(value)
        except ValueError as e:
            raise LocalProtocolError("%s: %s" % (what, e))
    if isinstance(value, (bytes, bytearray, memoryview)) and len(value) == 16:
        return bytes(value)
    raise LocalProtocolError("%s must be an IPv6 address (text or 16 bytes)" % what)


def _check_key(pw_sha1):
    if not isinstance(pw_sha1, (bytes, bytearray)) or len(pw_sha1) != 20:
        raise LocalProtocolError("AYIYA key must be the 20-byte SHA-1 of the password")


def ayiya_seal(buf, length, identity16, opcode, next_header, epoch, pw_sha1):
    """Fill in header, identity and signature of a datagram whose payload already sits
    at buf[44:length] (the data plane reads the inner packet straight there). Returns
    memoryview(buf)[:length]."""
    if not 0 <= opcode <= 7:
        raise LocalProtocolError("AYIYA opcode must be 0..7")
    if not 0 <= next_header <= 255:
        raise LocalProtocolError("AYIYA next header must be 0..255")
    if length < HEADER_LEN or length > len(buf):
        raise LocalProtocolError("AYIYA length must be 44..len(buf)")
    if len(identity16) != 16 or len(pw_sha1) != 20:
        raise LocalProtocolError("AYIYA identity must be 16 bytes and key 20 bytes")
    mv = memoryview(buf)
    struct.pack_into(">BBBBI", buf, 0, _BYTE0, _BYTE1, _AUTH | opcode, next_header,
                     int(epoch) & 0xFFFFFFFF)
    mv[8:24] = identity16
    mv[24:44] = pw_sha1
    mv[24:44] = _sha1(mv[:length]).digest()
    return mv[:length]


def ayiya_encode(identity16, opcode, next_header, payload, epoch, pw_sha1_20, buf=None):
    """A signed AYIYA datagram. Without buf: new bytes. With buf (a bytearray of at
    least 44 + len(payload) bytes): written into it, returns a memoryview of it."""
    _check_key(pw_sha1_20)
    if payload is None:
        payload = b""
    n = HEADER_LEN + len(payload)
    if buf is None:
        out = bytearray(n)
        out[HEADER_LEN:] = payload
        ayiya_seal(out, n, identity16, opcode, next_header, epoch, pw_sha1_20)
        return bytes(out)
    if len(buf) < n:
        raise LocalProtocolError("AYIYA buffer too small: need %d bytes" % n)
    memoryview(buf)[HEADER_LEN:n] = payload
    return ayiya_seal(buf, n, identity16, opcode, next_header, epoch, pw_sha1_20)


def _header_error(b0, b1, b2):
    if b0 != _BYTE0:
        raise AyiyaError("unsupported identity", "0x%02x" % b0)
    if b1 != _BYTE1:
        raise AyiyaError("unsupported hash", "0x%02x" % b1)
    if b2 & 0xF0 != _AUTH:
        raise AyiyaError("unsupported auth", "method %d" % (b2 >> 4))
    raise AyiyaError("unsupported opcode", "%d" % (b2 & 0x0F))


def ayiya_header(packet):
    """Unverified header fields (opcode, next_header, epoch, identity16) after the
    format checks; for a PoP that looks up the tunnel (and its key) by identity."""
    n = len(packet)
    if n < HEADER_LEN:
        raise AyiyaError("truncated", "%d bytes, the header alone is %d" % (n, HEADER_LEN))
    b0, b1, b2, nh, epoch = _unpack(">BBBBI", packet, 0)
    if b0 != _BYTE0 or b1 != _BYTE1 or b2 & 0xF8 != _AUTH:
        _header_error(b0, b1, b2)
    return b2 & 0x0F, nh, epoch, bytes(memoryview(packet)[8:24])


def skew(epoch, wall):
    """Signed seconds epoch - wall, computed modulo 2**32 (survives the 2106 wrap)."""
    d = (epoch - int(wall)) & 0xFFFFFFFF
    if d >= 0x80000000:
        d -= 0x100000000
    return d


def ayiya_decode(packet, pw_sha1, now, max_skew=MAX_SKEW, expected_identity=None):
    """Verify and split a received datagram: (opcode, next_header, payload, epoch) with
    payload a memoryview into `packet`. `now` is Unix time. Raises AyiyaError
    (a RemoteProtocolError; .code names the drop) on anything not acceptable."""
    # hot path: one struct call, one combined header test, three hash updates
    if len(pw_sha1) != 20:
        raise LocalProtocolError("AYIYA key must be the 20-byte SHA-1 of the password")
    n = len(packet)
    if n < HEADER_LEN:
        raise AyiyaError("truncated", "%d bytes, the header alone is %d" % (n, HEADER_LEN))
    w, b2, nh, epoch = _unpack(">HBBI", packet, 0)
    if w != _BYTES01 or b2 & 0xF8 != _AUTH:  # AutMth 1 and opcode 0..7
        _header_error(w >> 8, w & 0xFF, b2)
    mv = memoryview(packet)
    if expected_identity is not None and bytes(mv[8:24]) != expected_identity:
        raise AyiyaError("foreign identity")
    h = _sha1(mv[:24])
    h.update(pw_sha1)
    h.update(mv[HEADER_LEN:])
    if h.digest() != bytes(mv[24:HEADER_LEN]):
        raise AyiyaError("bad signature")
    d = (epoch - int(now)) & 0xFFFFFFFF
    if d >= 0x80000000:
        d -= 0x100000000
    if d > max_skew or d < -max_skew:
        e = AyiyaError("stale timestamp", "%d s %s our clock" % (
            d if d > 0 else -d, "ahead of" if d > 0 else "behind"))
        e.skew = d
        raise e
    return b2 & 0x0F, nh, mv[HEADER_LEN:], epoch


def _printable(b):
    out = []
    for x in bytes(b):
        if 32 <= x < 127:
            out.append(chr(x))
        elif x in (9, 10, 13):
            out.append(" ")
        else:
            out.append("?")
    return "".join(out).strip()


MOTD_TEXT_MAX = 512  # characters of a MOTD kept for status and logs


def motd_text(payload):
    """A MOTD payload as one line of text fit to show anywhere: printable ASCII only
    (tab, CR and LF become spaces, other bytes '?'), runs of spaces folded, at most
    MOTD_TEXT_MAX characters ('...' marks a cut)."""
    text = _printable(memoryview(payload)[:_MOTD_MAX])
    while "  " in text:
        text = text.replace("  ", " ")
    if len(text) > MOTD_TEXT_MAX:
        text = text[:MOTD_TEXT_MAX - 3] + "..."
    return text


def control_message(opcode, payload):
    """What an authentic non-forward datagram from the peer says, for a client to show:
    (name, text). name is the opcode's name (OPCODE_NAMES; 'opcode-N' for one outside
    them); text is motd_text(payload) for a MOTD, else None. Verify the datagram first
    (ayiya_decode): this only reads what it was told."""
    if isinstance(opcode, bool) or not isinstance(opcode, int):
        raise LocalProtocolError("AYIYA opcode must be an int")
    if 0 <= opcode < len(OPCODE_NAMES):
        name = OPCODE_NAMES[opcode]
    else:
        name = "opcode-%d" % opcode
    if opcode == OP_MOTD:
        return name, motd_text(payload)
    return name, None


class AyiyaSession:
    """One AYIYA tunnel end. identity: our tunnel IPv6 address (the client's, or the
    PoP's own when used on the PoP side); peer_identity: the address the other end
    signs with (PoP: 'IPv6 POP' from TIC; client as seen by the PoP: 'IPv6 Endpoint')."""

    def __init__(self, identity, peer_identity, password, interval=60, max_skew=MAX_SKEW):
        if (not isinstance(interval, (int, float))) or isinstance(interval, bool) or interval < 0:
            raise LocalProtocolError("AYIYA beat interval must be a number >= 0")
        if (not isinstance(max_skew, (int, float))) or isinstance(max_skew, bool) or max_skew < 0:
            raise LocalProtocolError("AYIYA max_skew must be a number >= 0")
        self.identity = _identity(identity, "AYIYA identity")
        self.peer_identity = _identity(peer_identity, "AYIYA peer identity")
        self._key = password_hash(password)
        self.interval = interval
        self.max_skew = max_skew
        self._out = []
        self._events = []
        self._next_beat = None  # None: due at once
        self.reset_counters()

    def __repr__(self):
        return "<AyiyaSession %s -> %s>" % (addr.ip6_ntoa(self.identity),
                                           addr.ip6_ntoa(self.peer_identity))

    def reset_counters(self):
        self.tx_packets = 0
        self.tx_bytes = 0
        self.rx_packets = 0
        self.rx_bytes = 0
        self.beats_sent = 0
        self.echo_answered = 0
        self.drops = {}
        self.last_drop = None
        self.last_drop_time = None
        self.last_rx = None  # monotonic time of the last accepted datagram
        self.last_tx = None
        self.accepted = False  # outcome of the last receive()
        # epoch - wall of the last authentic datagram, worked out when asked for
        self._peer_skew = None
        self._peer_epoch = None
        self._peer_wall = None

    # -- sending --------------------------------------------------------------

    def _sent(self, now, n):
        self.tx_packets += 1
        self.tx_bytes += n
        self.last_tx = now
        if self.interval > 0:
            self._next_beat = now + self.interval

    def encapsulate(self, packet, now, wall=None, buf=None):
        """An IPv6 packet from the LAN/TUN side as a signed forward datagram."""
        out = ayiya_encode(self.identity, OP_FORWARD, NH_IPV6, packet,
                           now if wall is None else wall, self._key, buf)
        self._sent(now, len(out))
        return out

    def seal(self, buf, length, now, wall=None):
        """Hot path: the IPv6 packet is already at buf[44:length]; returns a memoryview
        of the finished forward datagram."""
        out = ayiya_seal(buf, length, self.identity, OP_FORWARD, NH_IPV6,
                         now if wall is None else wall, self._key)
        self._sent(now, length)
        return out

    def _queue(self, now, wall, opcode, nh, payload):
        d = ayiya_encode(self.identity, opcode, nh, payload, now if wall is None else wall,
                         self._key)
        self._out.append(d)
        self._sent(now, len(d))

    def send_echo_request(self, now, wall=None, payload=b""):
        self._queue(now, wall, OP_ECHO_REQUEST, NH_NONE, payload)

    def datagrams_to_send(self):
        out = self._out
        self._out = []
        return out

    # -- timers ---------------------------------------------------------------

    def get_timer(self):
        if self.interval <= 0:
            return None
        if self._next_beat is None:
            return 0.0
        return self._next_beat

    def handle_timer(self, now, wall=None):
        if self.interval <= 0:
            return
        if self._next_beat is None or now >= self._next_beat:
            self._queue(now, wall, OP_NOOP, NH_NONE, b"")
            self.beats_sent += 1

    # -- receiving ------------------------------------------------------------

    def _drop(self, now, code):
        self.accepted = False
        self.drops[code] = self.drops.get(code, 0) + 1
        self.last_drop = code
        self.last_drop_time = now

    def receive(self, datagram, now, wall=None):
        """A datagram from the peer. Returns the IPv6 packet to deliver (a memoryview
        into `datagram`) or None (control message, or dropped and counted).
        Afterwards .accepted tells whether the datagram was authentic and taken (a PoP
        moves the tunnel endpoint to its source address only then, beats included)."""
        w = now if wall is None else wall
        try:
            op, nh, payload, epoch = ayiya_decode(datagram, self._key, w, self.max_skew,
                                                  self.peer_identity)
        except AyiyaError as e:
            if e.code == "stale timestamp":
                self._peer_epoch = None
                self._peer_skew = e.skew
            return self._drop(now, e.code)
        self._peer_epoch = epoch
        self._peer_wall = w
        deliver = op == OP_FORWARD or op == OP_ECHO_REQUEST_FORWARD
        if deliver:
            if nh != NH_IPV6:
                return self._drop(now, "unsupported next header")
            if len(payload) < 40 or (payload[0] >> 4) != 6:
                return self._drop(now, "bad payload")
        self.accepted = True
        self.rx_packets += 1
        self.rx_bytes += len(datagram)
        self.last_rx = now
        if op == OP_ECHO_REQUEST or op == OP_ECHO_REQUEST_FORWARD:
            if len(self._out) < _QUEUE_MAX:  # the caller is not draining: do not pile up
                self._queue(now, wall, OP_ECHO_RESPONSE, nh, payload)
                self.echo_answered += 1
        elif len(self._events) >= _QUEUE_MAX:
            pass
        elif op == OP_ECHO_RESPONSE:
            self._events.append(("echo-response", {"time": now, "length": len(payload)}))
        elif op == OP_MOTD:
            text = _printable(payload[:_MOTD_MAX])
            self._events.append(("motd", {"time": now, "text": text}))
        elif op == OP_QUERY_REQUEST or op == OP_QUERY_RESPONSE:
            self._events.append((OPCODE_NAMES[op], {"time": now, "length": len(payload)}))
        return payload if deliver else None

    def events(self):
        ev = self._events
        self._events = []
        return ev

    # -- status ---------------------------------------------------------------

    @property
    def peer_skew(self):
        """Seconds the peer's clock is ahead of ours (epoch - wall of the last authentic
        datagram, stale ones included), None before the first."""
        if self._peer_epoch is not None:
            self._peer_skew = skew(self._peer_epoch, self._peer_wall)
            self._peer_epoch = None
        return self._peer_skew

    def clock_problem(self):
        """A plain-words sentence when authentic packets from the peer carry a time
        too far from ours (our clock is probably wrong), else None."""
        d = self.peer_skew
        if d is None or (d <= self.max_skew and d >= -self.max_skew):
            return None
        return ("the tunnel server's clock and ours differ by %d seconds (%s), more than "
                "the %d s AYIYA allows: set the router's time (NTP)" % (
                    d if d > 0 else -d, "ours is behind" if d > 0 else "ours is ahead",
                    self.max_skew))

    def status(self, now):
        drops = {}
        total = 0
        for k in self.drops:
            drops[k] = self.drops[k]
            total += self.drops[k]
        return {
            "identity": addr.ip6_ntoa(self.identity),
            "peer_identity": addr.ip6_ntoa(self.peer_identity),
            "interval": self.interval,
            "tx_packets": self.tx_packets,
            "tx_bytes": self.tx_bytes,
            "rx_packets": self.rx_packets,
            "rx_bytes": self.rx_bytes,
            "beats_sent": self.beats_sent,
            "echo_answered": self.echo_answered,
            "drops": drops,
            "drops_total": total,
            "last_drop": self.last_drop,
            "last_drop_age": None if self.last_drop_time is None else now - self.last_drop_time,
            "last_rx_age": None if self.last_rx is None else now - self.last_rx,
            "last_tx_age": None if self.last_tx is None else now - self.last_tx,
            "peer_clock_offset": self.peer_skew,
            "clock_problem": self.clock_problem(),
        }
