# TIC, SixXS's Tunnel Information and Control protocol (TCP port 3874): the client that
# fetches a tunnel's configuration. Sans-IO, MicroPython subset.
#
# Protocol (sixxs.net/tools/tic and AICCU's common/tic.c, the client SixXS shipped):
# lines end in LF (a CR before it is dropped); each command gets a status line
# "<3 digits> <text>": 2xx success, 4xx/5xx failure. Lists and records come as a
# "201 ..." line, body lines, then a "202 ..." line.
#
# Session, as AICCU runs it (S: server, C: us):
#   S: 200 <greeting>
#   C: client TIC/draft-00 <name>/<version> <os>/<release>   -> 2xx
#   C: get unixtime                                            -> 200 <seconds since 1970>
#        |server - ours| > max_skew (120 s): fail 'clock', QUIT "Aborting: Clock is off ..."
#   C: starttls (unless starttls='never')                      -> 2xx: TLS, else plain
#        2xx: event 'start-tls'; the adapter wraps the socket and calls tls_started().
#        Refused and starttls='require' (AICCU's requiretls): fail 'tls-required'.
#   C: username <user>                                         -> 2xx
#   C: challenge md5                                           -> 200 <challenge>
#   C: authenticate md5 <md5hex(challenge + md5hex(password))> -> 2xx
#        (AICCU: "sSignature = md5(challenge.md5(password))"; the server stores only
#        md5(password), so that is all it can check against)
#   C: tunnel list (only without a configured tunnel id)       -> 201, "<id> <ipv6> <ipv4> <pop>"..., 202
#        exactly one tunnel: use it; none: fail 'no-tunnel'; several: fail 'choose-tunnel'
#   C: tunnel show <id>                                        -> 201, "<Key>: <value>"..., 202
#   C: QUIT <words>
#
# Rules:
# - Every wait has a deadline: `timeout` seconds after the last line or command, and the
#   whole session at most `session_timeout`; a missed deadline fails with 'timeout'.
# - A failure ends the session in state 'failed' with one ('failed', {...}) event carrying
#   kind, message (plain words) and retry: 'backoff' (try again later, with backoff),
#   'time-sync' (do not retry until the clock was set: the 'clock' failure) or
#   'config' (retrying cannot help until the configuration changes).
# - Anything the server sends that is not the protocol (overlong line, control bytes,
#   bad status line, bytes after the starttls answer) fails with 'protocol'.
# - Success: state 'done', the parsed config in .tunnel_config, events 'tunnel' (summary
#   without the password) and 'done'. Then the adapter closes after data_to_send().
# - Secrets: the password and its md5 never appear in events, status, repr or messages
#   (a server text that repeats them is not quoted). .tunnel_config holds the tunnel
#   password because the data plane needs it; use redacted() before showing it.

import binascii
import hashlib

from cpe_tunnel.core import addr
from cpe_tunnel.core.errors import ConfigError, LocalProtocolError, RemoteProtocolError

PORT = 3874
TIC_VERSION = "draft-00"
CLIENT_NAME = "cpe-tunnel"
CLIENT_VERSION = "0.1"
MAX_SKEW = 120
DEFAULT_TIMEOUT = 30.0
SESSION_TIMEOUT = 120.0
MAX_LINE = 1024
MAX_BODY_LINES = 256
QUOTE_MAX = 120

TUNNEL_TYPES = ("6in4-static", "6in4-heartbeat", "ayiya")
STARTTLS_MODES = ("never", "try", "require")
FAILURE_RETRY = {
    "unavailable": "backoff",
    "timeout": "backoff",
    "closed": "backoff",
    "protocol": "backoff",
    "tls-failed": "backoff",
    "clock": "time-sync",
    "rejected-client": "config",
    "tls-required": "config",
    "auth-failed": "config",
    "no-tunnel": "config",
    "choose-tunnel": "config",
    "bad-tunnel": "config",
}

_DIGITS = "0123456789"
_ID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-"
_VISIBLE = "".join([chr(i) for i in range(33, 127)])  # printable ASCII without space


def _md5hex(data):
    if isinstance(data, str):
        data = data.encode("utf-8")
    return binascii.hexlify(hashlib.md5(data).digest()).decode()


def tic_response(challenge, password):
    """The 'authenticate md5' answer: md5hex(challenge + md5hex(password))."""
    return _md5hex(challenge + _md5hex(password))


def _all_in(text, chars):
    for c in text:
        if c not in chars:
            return False
    return True


def _printable(text):
    out = []
    for c in text:
        o = ord(c)
        out.append(c if 32 <= o < 127 else "?")
    return "".join(out)


def _quote(text):
    t = _printable(text).strip()
    if len(t) > QUOTE_MAX:
        t = t[:QUOTE_MAX] + "..."
    return t


def _word(text):
    # a token we put on the wire: printable ASCII, no spaces
    out = []
    for c in text:
        o = ord(c)
        out.append(c if 33 <= o < 127 else "-")
    return "".join(out)[:64] or "unknown"


# -- line level ---------------------------------------------------------------------

def decode_line(raw):
    """One received line (bytes, without its LF) as text. A trailing CR is dropped.
    Raises RemoteProtocolError on control characters or bytes that are not UTF-8."""
    raw = bytes(raw)
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    if len(raw) > MAX_LINE:
        raise RemoteProtocolError("TIC line longer than %d bytes" % MAX_LINE)
    for x in raw:
        if (x < 32 and x != 9) or x == 127:
            raise RemoteProtocolError("TIC line contains control characters")
    try:
        return raw.decode("utf-8")
    except UnicodeError:
        raise RemoteProtocolError("TIC line is not UTF-8 text")


def is_status_line(line):
    return len(line) >= 3 and _all_in(line[:3], _DIGITS) and (len(line) == 3 or line[3] == " ")


def parse_status_line(line):
    """'200 text' -> (200, 'text'). Raises RemoteProtocolError otherwise."""
    if not isinstance(line, str) or not is_status_line(line):
        raise RemoteProtocolError("TIC server sent %r where a status line was expected"
                                  % _quote(line if isinstance(line, str) else "?"))
    code = int(line[:3])
    if code < 100 or code > 599:
        raise RemoteProtocolError("TIC status code %d is out of range" % code)
    return code, line[4:]


def _tunnel_id_ok(t):
    return isinstance(t, str) and 0 < len(t) <= 32 and _all_in(t, _ID_CHARS)


def parse_tunnel_list_line(line):
    """'T1234 2001:db8::2 heartbeat pop01' -> dict (tunnel_id, ipv6_local, ipv4_local,
    pop_id). Raises RemoteProtocolError."""
    parts = [p for p in line.replace("\t", " ").split(" ") if p]
    if len(parts) != 4:
        raise RemoteProtocolError("TIC tunnel list line does not have 4 fields")
    tid, ip6, ip4, pop = parts
    if not _tunnel_id_ok(tid):
        raise RemoteProtocolError("TIC tunnel list: bad tunnel id %r" % _quote(tid))
    try:
        ip6 = addr.ip6_ntoa(addr.ip6_aton(ip6))
    except ValueError:
        raise RemoteProtocolError("TIC tunnel list: bad IPv6 address for %s" % tid)
    if not (addr.is_ip4(ip4) or _all_in(ip4, _ID_CHARS)) or len(ip4) > 32:
        raise RemoteProtocolError("TIC tunnel list: bad IPv4 endpoint for %s" % tid)
    if not _all_in(pop, _ID_CHARS) or len(pop) > 32:
        raise RemoteProtocolError("TIC tunnel list: bad PoP id for %s" % tid)
    return {"tunnel_id": tid, "ipv6_local": ip6, "ipv4_local": ip4, "pop_id": pop}


# -- tunnel records -------------------------------------------------------------------

# lower-cased TIC key -> config key
_SHOW_KEYS = {
    "tunnelid": "tunnel_id",
    "type": "type",
    "ipv6 endpoint": "ipv6_local",
    "ipv6 pop": "ipv6_pop",
    "ipv6 prefixlength": "prefixlen",
    "pop id": "pop_id",
    "ipv4 endpoint": "ipv4_local",
    "ipv4 pop": "ipv4_pop",
    "userstate": "user_state",
    "adminstate": "admin_state",
    "password": "password",
    "heartbeat_interval": "heartbeat_interval",
    "tunnel mtu": "mtu",
    "tunnel name": "name",
}
# (fetched_at, Unix time of the fetch, is added by the client, never read from TIC)
_INT_KEYS = ("prefixlen", "heartbeat_interval", "mtu")
CONFIG_KEYS = ("tunnel_id", "type", "ipv6_local", "ipv6_pop", "prefixlen", "pop_id",
               "ipv4_local", "ipv4_pop", "user_state", "admin_state", "password",
               "heartbeat_interval", "mtu", "name")


def _check_config(raw, err):
    """Validate and normalise a tunnel config dict (values text or int); raise err."""
    cfg = {}
    tid = raw.get("tunnel_id")
    if not _tunnel_id_ok(tid):
        raise err("tunnel config: missing or bad tunnel id")
    cfg["tunnel_id"] = tid
    ttype = raw.get("type")
    if ttype not in TUNNEL_TYPES:
        raise err("tunnel %s: type %r is not supported (only %s)" % (
            tid, _quote(ttype) if isinstance(ttype, str) else ttype, ", ".join(TUNNEL_TYPES)))
    cfg["type"] = ttype
    for k in ("ipv6_local", "ipv6_pop"):
        v = raw.get(k)
        try:
            cfg[k] = addr.ip6_ntoa(addr.ip6_aton(v))
        except (ValueError, TypeError):
            raise err("tunnel %s: %s is missing or not an IPv6 address" % (tid, k))
    v = raw.get("ipv4_pop")
    if not addr.is_ip4(v):
        raise err("tunnel %s: ipv4_pop is missing or not an IPv4 address" % tid)
    cfg["ipv4_pop"] = v
    v = raw.get("ipv4_local")
    if ttype == "6in4-static":
        if not addr.is_ip4(v):
            raise err("tunnel %s: a static tunnel needs an IPv4 endpoint" % tid)
    elif v is None:
        v = ttype == "ayiya" and "ayiya" or "heartbeat"
    elif not isinstance(v, str) or len(v) > 32 or not _all_in(v, _ID_CHARS):
        raise err("tunnel %s: bad ipv4_local" % tid)
    cfg["ipv4_local"] = v
    for k, lo, hi, dflt in (("prefixlen", 1, 128, None), ("mtu", 1280, 9000, 1280),
                            ("heartbeat_interval", 1, 3600, 60)):
        v = raw.get(k, dflt)
        if isinstance(v, bool) or not isinstance(v, int) or v < lo or v > hi:
            raise err("tunnel %s: %s must be a whole number from %d to %d" % (tid, k, lo, hi))
        cfg[k] = v
    pw = raw.get("password")
    if ttype != "6in4-static" or pw is not None:
        if not isinstance(pw, str) or not pw or len(pw) > 128 or \
                not _all_in(pw, _VISIBLE):
            raise err("tunnel %s: the tunnel password is missing or has odd characters" % tid)
        cfg["password"] = pw
    for k in ("pop_id", "user_state", "admin_state"):
        v = raw.get(k)
        if v is None:
            continue
        if not isinstance(v, str) or len(v) > 64 or not _all_in(v, _ID_CHARS):
            raise err("tunnel %s: bad %s" % (tid, k))
        cfg[k] = v
    v = raw.get("name")
    if v is not None:
        if not isinstance(v, str):
            raise err("tunnel %s: bad name" % tid)
        cfg["name"] = _quote(v)
    v = raw.get("fetched_at")
    if v is not None:
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise err("tunnel %s: bad fetched_at" % tid)
        cfg["fetched_at"] = v
    return cfg


def parse_tunnel_show(lines, tunnel_id=None):
    """The body lines of 'tunnel show' ('Key: value') -> normalised config dict.
    Keys are matched without regard to case; unknown keys are ignored. Raises
    RemoteProtocolError on missing/bad fields (never quoting the password)."""
    if len(lines) > MAX_BODY_LINES:
        raise RemoteProtocolError("TIC tunnel record has too many lines")
    raw = {}
    for line in lines:
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.strip().lower()
        name = _SHOW_KEYS.get(key)
        if name is None:
            continue
        if name in raw:
            raise RemoteProtocolError("TIC tunnel record repeats the field %r" % key)
        value = value.strip()
        if name in _INT_KEYS:
            if not value or len(value) > 9 or not _all_in(value, _DIGITS):
                raise RemoteProtocolError("TIC tunnel record: %s is not a number" % key)
            raw[name] = int(value)
        else:
            raw[name] = value
    cfg = _check_config(raw, RemoteProtocolError)
    if tunnel_id is not None and cfg["tunnel_id"] != tunnel_id:
        raise RemoteProtocolError("TIC sent tunnel %s when %s was asked for" % (
            cfg["tunnel_id"], tunnel_id))
    return cfg


def validate_tunnel_config(d):
    """Check a cached tunnel config (e.g. read back from JSON); returns the normalised
    dict or raises ConfigError."""
    if not isinstance(d, dict):
        raise ConfigError("tunnel config must be a JSON object")
    return _check_config(d, ConfigError)


def redacted(cfg):
    """A copy of a tunnel config that can be shown or logged."""
    out = {}
    for k in cfg:
        out[k] = "(hidden)" if k == "password" else cfg[k]
    return out


# -- the client -----------------------------------------------------------------------

class TicClient:
    def __init__(self, username, password, tunnel_id=None, starttls="try",
                 client_name=CLIENT_NAME, client_version=CLIENT_VERSION, os_name="Linux",
                 os_version="unknown", max_skew=MAX_SKEW, timeout=DEFAULT_TIMEOUT,
                 session_timeout=SESSION_TIMEOUT):
        if not isinstance(username, str) or not username or len(username) > 64 or \
                not _all_in(username, _VISIBLE):
            raise ConfigError("TIC username must be 1 to 64 printable characters without spaces")
        if not isinstance(password, str) or not password:
            raise ConfigError("TIC password must not be empty")
        if tunnel_id is not None and not _tunnel_id_ok(tunnel_id):
            raise ConfigError("tunnel id must be letters, digits, '_', '.' or '-' (like T12345)")
        if starttls not in STARTTLS_MODES:
            raise ConfigError("starttls must be one of %s" % ", ".join(STARTTLS_MODES))
        for v in (max_skew, timeout, session_timeout):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
                raise LocalProtocolError("TIC max_skew and timeouts must be numbers > 0")
        self.username = username
        self._password = password
        self._pwmd5 = _md5hex(password)
        self.tunnel_id = tunnel_id
        self.starttls = starttls
        self.max_skew = max_skew
        self.timeout = timeout
        self.session_timeout = session_timeout
        self._client_line = "client TIC/%s %s/%s %s/%s" % (
            TIC_VERSION, _word(client_name), _word(client_version), _word(os_name),
            _word(os_version))
        self._handlers = {
            "greeting": self._on_greeting,
            "client": self._on_client,
            "time": self._on_time,
            "starttls": self._on_starttls,
            "username": self._on_username,
            "challenge": self._on_challenge,
            "authenticate": self._on_authenticate,
            "list": self._on_list,
            "list-body": self._on_list_body,
            "show": self._on_show,
            "show-body": self._on_show_body,
        }
        self.state = "idle"
        self._buf = b""
        self._out = []
        self._events = []
        self._body = []
        self._deadline = None
        self._session_deadline = None
        self._closed = False
        self.tls = False
        self.server_time_offset = None
        self.error = None  # (kind, message) after a failure
        self.tunnels = None  # list from 'tunnel list'
        self.tunnel_config = None

    def __repr__(self):
        return "<TicClient %s %s>" % (self.username, self.state)

    # -- helpers --------------------------------------------------------------

    def _send(self, line):
        self._out.append(line.encode("utf-8") + b"\n")

    def _arm(self, now):
        self._deadline = now + self.timeout

    def _leaks(self, text):
        return self._password in text or self._pwmd5 in text.lower()

    def _server_text(self, text):
        if self._leaks(text):
            return "(answer not shown: it repeats our credentials)"
        return "'%s'" % _quote(text) if text.strip() else "(no text)"

    def _fail(self, kind, message, quit_text=None, extra=None):
        if self.state in ("done", "failed"):
            return
        if self._leaks(message):
            message = "%s (details not shown: they repeat our credentials)" % kind
        self.state = "failed"
        self.error = (kind, message)
        self._deadline = None
        self._session_deadline = None
        if not self._closed and kind not in ("closed", "tls-failed"):
            self._send("QUIT " + (quit_text or "cpe-tunnel giving up"))
        ev = {"kind": kind, "message": message, "retry": FAILURE_RETRY[kind]}
        if extra:
            for k in extra:
                ev[k] = extra[k]
        self._events.append(("failed", ev))

    @property
    def finished(self):
        return self.state in ("done", "failed")

    @property
    def wants_close(self):
        """True once the session is over: flush data_to_send(), then close."""
        return self.finished

    # -- inputs ---------------------------------------------------------------

    def connection_made(self, now):
        if self.state != "idle":
            raise LocalProtocolError("connection_made: the session already started")
        self.state = "greeting"
        self._arm(now)
        self._session_deadline = now + self.session_timeout

    def receive_data(self, data, now, wall=None):
        """Bytes from the TCP (or TLS) stream. `wall` (Unix time, defaults to now) is
        used for the clock check."""
        if self.state == "idle":
            self.connection_made(now)
        if self.finished:
            return
        if self.state == "tls-wait":
            self._fail("protocol", "the TIC server sent plain data while TLS was being set up")
            return
        buf = self._buf + bytes(data)
        pos = 0  # scan by index: no copying of the rest of a big chunk per line
        while not self.finished:
            i = buf.find(b"\n", pos)
            if i < 0:
                break
            raw = buf[pos:i]
            pos = i + 1
            self._arm(now)
            try:
                line = decode_line(raw)
                self._handlers[self.state](line, now, now if wall is None else wall)
            except RemoteProtocolError as e:
                self._fail("protocol", "the TIC server does not speak TIC as expected: %s"
                           % e.reason)
            if self.state == "tls-wait":
                if pos < len(buf):
                    self._fail("protocol", "the TIC server sent data after its starttls "
                               "answer (possible injection); not using this connection")
                break
        if self.finished:
            self._buf = b""
            return
        self._buf = buf[pos:]
        if len(self._buf) > MAX_LINE:
            self._buf = b""
            self._fail("protocol", "the TIC server sent a line longer than %d bytes" % MAX_LINE)

    def tls_started(self, now):
        """The adapter finished the TLS handshake (certificate verified)."""
        if self.state != "tls-wait":
            raise LocalProtocolError("tls_started: no TLS handshake was requested")
        self.tls = True
        self._arm(now)
        self._username()

    def tls_failed(self, now, reason):
        if self.state != "tls-wait":
            raise LocalProtocolError("tls_failed: no TLS handshake was requested")
        r = _quote(reason) if isinstance(reason, str) else ""
        self._fail("tls-failed", "TLS with the TIC server failed" + (": " + r if r else ""))

    def connection_closed(self, now):
        self._closed = True
        if not self.finished:
            self._fail("closed", "the TIC server closed the connection (while %s)"
                       % self._waiting_for())

    def get_timer(self):
        if self.finished or self._deadline is None:
            return None
        if self._session_deadline is not None and self._session_deadline < self._deadline:
            return self._session_deadline
        return self._deadline

    def handle_timer(self, now):
        t = self.get_timer()
        if t is not None and now >= t:
            self._fail("timeout", "no answer from the TIC server in time (while %s)"
                       % self._waiting_for())

    # -- outputs --------------------------------------------------------------

    def data_to_send(self):
        out = b"".join(self._out)
        self._out = []
        return out

    def events(self):
        ev = self._events
        self._events = []
        return ev

    def status(self):
        return {
            "state": self.state,
            "tls": self.tls,
            "tunnel_id": self.tunnel_id,
            "server_time_offset": self.server_time_offset,
            "error": None if self.error is None else {"kind": self.error[0],
                                                      "message": self.error[1]},
        }

    def _waiting_for(self):
        return {
            "idle": "connecting",
            "greeting": "waiting for the greeting",
            "client": "sending client information",
            "time": "checking the time",
            "starttls": "asking for TLS",
            "tls-wait": "setting up TLS",
            "username": "sending the username",
            "challenge": "asking for a challenge",
            "authenticate": "authenticating",
            "list": "listing tunnels",
            "list-body": "listing tunnels",
            "show": "fetching the tunnel",
            "show-body": "fetching the tunnel",
        }.get(self.state, self.state)

    # -- state handlers (one status line each, or one body line) --------------

    def _on_greeting(self, line, now, wall):
        code, text = parse_status_line(line)
        if code // 100 != 2:
            self._fail("unavailable", "the TIC server is not available: %s"
                       % self._server_text(text))
            return
        self._send(self._client_line)
        self.state = "client"

    def _on_client(self, line, now, wall):
        code, text = parse_status_line(line)
        if code // 100 != 2:
            self._fail("rejected-client", "the TIC server refused our client: %s"
                       % self._server_text(text))
            return
        self._send("get unixtime")
        self.state = "time"

    def _on_time(self, line, now, wall):
        code, text = parse_status_line(line)
        t = text.strip()
        if code // 100 != 2 or not t or len(t) > 12 or not _all_in(t, _DIGITS):
            raise RemoteProtocolError("'get unixtime' answered %s" % self._server_text(text))
        off = int(t) - int(wall)
        self.server_time_offset = off
        if off > self.max_skew or off < -self.max_skew:
            secs = off if off > 0 else -off
            self._fail("clock",
                       "the router's clock is %d seconds %s the tunnel broker's (at most %d "
                       "allowed); set the time (NTP) and the tunnel will be set up then"
                       % (secs, "behind" if off > 0 else "ahead of", self.max_skew),
                       "Aborting: Clock is off by %d seconds" % secs, {"offset": off})
            return
        if self.starttls == "never":
            self._username()
            return
        self._send("starttls")
        self.state = "starttls"

    def _on_starttls(self, line, now, wall):
        code, _text = parse_status_line(line)
        if code // 100 == 2:
            self.state = "tls-wait"
            self._events.append(("start-tls", {}))
            return
        if self.starttls == "require":
            self._fail("tls-required", "the TIC server does not offer TLS and TLS is "
                       "required (requiretls)")
            return
        self._username()

    def _username(self):
        self._send("username " + self.username)
        self.state = "username"

    def _on_username(self, line, now, wall):
        code, text = parse_status_line(line)
        if code // 100 != 2:
            self._fail("auth-failed", "the TIC server did not accept the username: %s"
                       % self._server_text(text))
            return
        self._send("challenge md5")
        self.state = "challenge"

    def _on_challenge(self, line, now, wall):
        code, text = parse_status_line(line)
        if code // 100 != 2:
            self._fail("auth-failed", "the TIC server refused an md5 challenge: %s"
                       % self._server_text(text))
            return
        challenge = text.strip()
        if not challenge or " " in challenge:
            raise RemoteProtocolError("the md5 challenge is empty or has spaces")
        self._send("authenticate md5 " + _md5hex(challenge + self._pwmd5))
        self.state = "authenticate"

    def _on_authenticate(self, line, now, wall):
        code, text = parse_status_line(line)
        if code // 100 != 2:
            self._fail("auth-failed", "wrong TIC username or password: %s"
                       % self._server_text(text))
            return
        if self.tunnel_id is None:
            self._send("tunnel list")
            self.state = "list"
        else:
            self._show()

    def _show(self):
        self._send("tunnel show " + self.tunnel_id)
        self.state = "show"

    def _on_list(self, line, now, wall):
        code, text = parse_status_line(line)
        if code != 201:
            self._fail("no-tunnel", "the TIC server could not list tunnels: %s"
                       % self._server_text(text))
            return
        self._body = []
        self.state = "list-body"

    def _body_line(self, line, what):
        """True when `line` ends the body (202); fails on an error status."""
        if is_status_line(line):
            code, text = parse_status_line(line)
            if code == 202:
                return True
            if code // 100 != 2:
                self._fail("bad-tunnel" if what == "show" else "no-tunnel",
                           "the TIC server broke off the %s: %s" % (
                               "tunnel record" if what == "show" else "tunnel list",
                               self._server_text(text)))
                return False
        if len(self._body) >= MAX_BODY_LINES:
            raise RemoteProtocolError("too many lines in one answer")
        self._body.append(line)
        return False

    def _on_list_body(self, line, now, wall):
        if not self._body_line(line, "list") or self.finished:
            return
        tunnels = []
        for l in self._body:
            tunnels.append(parse_tunnel_list_line(l))
        self._body = []
        self.tunnels = tunnels
        self._events.append(("tunnel-list", {"tunnels": tunnels}))
        if not tunnels:
            self._fail("no-tunnel", "the TIC account has no tunnels")
        elif len(tunnels) > 1:
            ids = [t["tunnel_id"] for t in tunnels]
            self._fail("choose-tunnel", "the TIC account has %d tunnels (%s): set the tunnel "
                       "id to use" % (len(ids), ", ".join(ids[:8]) + (
                           ", ..." if len(ids) > 8 else "")))
        else:
            self.tunnel_id = tunnels[0]["tunnel_id"]
            self._show()

    def _on_show(self, line, now, wall):
        code, text = parse_status_line(line)
        if code != 201:
            self._fail("no-tunnel", "the TIC server has no tunnel %s for this account: %s"
                       % (self.tunnel_id, self._server_text(text)))
            return
        self._body = []
        self.state = "show-body"

    def _on_show_body(self, line, now, wall):
        if not self._body_line(line, "show") or self.finished:
            return
        lines = self._body
        self._body = []
        try:
            cfg = parse_tunnel_show(lines, self.tunnel_id)
        except RemoteProtocolError as e:
            self._fail("bad-tunnel", "unusable tunnel information from TIC: %s" % e.reason)
            return
        cfg["fetched_at"] = int(wall)
        self.tunnel_config = cfg
        self._send("QUIT Thank you for the information")
        self.state = "done"
        self._deadline = None
        self._session_deadline = None
        self._events.append(("tunnel", redacted(cfg)))
        self._events.append(("done", {}))
