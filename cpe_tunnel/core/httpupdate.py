# dyndns2-style tunnel endpoint update client (the HTTP API tunnelbroker.net offers).
# Sans-IO: it builds Request objects and digests answers; an adapter does the HTTP.
#
#   GET <path>?[<existing query>&]hostname=<tunnel id>[&myip=<IPv4>]
#   Authorization: Basic base64(username ":" update key or password)
#
# Answers (first non-empty line of a plain-text body; one hostname, so one line):
#   good <ip> / nochg <ip>      -> ok (ip = the endpoint the broker now has)
#   badauth, HTTP 401           -> auth-failed
#   abuse, badagent             -> blocked
#   911, dnserr, HTTP 5xx, 429  -> broker-error
#   nohost, !yours, notfqdn     -> bad-tunnel-id
#   -ERROR: ..., anything else  -> unexpected-answer (quoted, sanitised, <= 80 chars)
#   transport failure           -> unreachable
#
# What happens next (documented rules; see help.dyn.com "Return Codes" and
# noip.com/integrate/response, the dyndns2 references tunnelbroker.net follows):
# - ok: both backoffs reset. No request is sent again until something changes:
#   repeated nochg answers get a client blocked (Dyn, No-IP), so a WAN event that
#   carries the address the broker already has is dropped.
# - transient (unreachable, unexpected-answer, HTTP 4xx other than 401, 5xx): retry
#   with Backoff(retry_min, retry_max). A WAN event with a new address during the
#   wait sends at once (a new address can cure the failure); the same one waits.
# - broker trouble the broker itself reports (911, dnserr, HTTP 429): No-IP says
#   "retry the update no sooner than 30 minutes" for 911, Dyn calls 911 a problem or
#   maintenance on its side. So at least SERVER_TROUBLE_WAIT, and WAN events do
#   not shorten it (a new address does not fix the broker).
# - auth-failed, blocked, bad-tunnel-id: Dyn and No-IP call these fatal ("client
#   should stop sending updates ... until the user has taken corrective action").
#   We hold off 1 hour, doubling up to a day, and WAN events during the hold-off do
#   not send: only an explicit trigger (reason 'reconnect', 'manual', 'start',
#   'reload') or a new client (config reload) does.
# - Triggers coalesce: while a request is in flight a trigger only notes the new
#   address; when the request is done one more follows if the address changed.
# - Two request starts are at least retry_min seconds apart (except a follow-up for
#   an address that changed while a successful request was in flight), so a
#   flapping WAN cannot hammer the broker.
# - Secrets (update key/password, the Authorization value) never appear in
#   events, status, messages or repr; a broker answer that echoes them is not quoted.

import binascii

from cpe_tunnel.core import addr
from cpe_tunnel.core.backoff import Backoff
from cpe_tunnel.core.errors import ConfigError, LocalProtocolError

MAX_BODY = 4096  # bytes of an answer we look at; the adapter caps reads as well
QUOTE_MAX = 80  # printable characters of an odd answer we quote
REASON_MAX = 200  # characters of a transport failure reason we keep
HOLD_MIN = 3600.0  # first hold-off after auth-failed / blocked / bad-tunnel-id
HOLD_MAX = 86400.0
SERVER_TROUBLE_WAIT = 1800.0  # 911: "retry the update no sooner than 30 minutes" (No-IP)
WATCHDOG_GRACE = 15.0  # seconds past Request.timeout before we give up on the adapter

EXPLICIT_REASONS = ("start", "reconnect", "reload", "manual")
RESULTS = ("ok", "auth-failed", "blocked", "broker-error", "bad-tunnel-id",
           "unexpected-answer", "unreachable")
HOLD_RESULTS = ("auth-failed", "blocked", "bad-tunnel-id")
SEND_MYIP = ("auto", "always", "never")

# answer word -> (result, message, minimum wait or 0). %s is the tunnel id.
_ANSWERS = {
    "badauth": ("auth-failed", "the broker rejected the username or update key", 0),
    "abuse": ("blocked", "the broker has blocked updates for this tunnel after too many updates "
              + "(abuse)", 0),
    "badagent": ("blocked", "the broker refused this client program (badagent)", 0),
    "911": ("broker-error", "the broker reports a problem or maintenance on its side (911)",
            SERVER_TROUBLE_WAIT),
    "dnserr": ("broker-error", "the broker reports a DNS error on its side (dnserr)",
               SERVER_TROUBLE_WAIT),
    "nohost": ("bad-tunnel-id", "the broker has no tunnel %s in this account (nohost)", 0),
    "!yours": ("bad-tunnel-id", "tunnel %s belongs to another account (!yours)", 0),
    "notfqdn": ("bad-tunnel-id", "the broker did not accept %s as a tunnel id (notfqdn)", 0),
    "numhost": ("unexpected-answer", "the broker says too many hosts were given (numhost)", 0),
    "!donator": ("unexpected-answer", "the broker says this needs a paid account (!donator)", 0),
}

_UNRESERVED = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
_HOSTCHARS = "abcdefghijklmnopqrstuvwxyz0123456789-"


def pct_encode(text):
    """Percent-encode text (UTF-8) for a query value: only RFC 3986 unreserved
    characters stay as they are."""
    out = []
    for b in text.encode("utf-8"):
        c = chr(b)
        if b < 128 and c in _UNRESERVED:
            out.append(c)
        else:
            out.append("%%%02X" % b)
    return "".join(out)


def _printable(b):
    """bytes -> str of printable ASCII; tab and CR become spaces, everything else '?'."""
    out = []
    for x in b:
        if 32 <= x < 127:
            out.append(chr(x))
        elif x == 9 or x == 13:
            out.append(" ")
        else:
            out.append("?")
    return "".join(out)


def _has_ctl(text):
    for c in text:
        o = ord(c)
        if o < 32 or o == 127:
            return True
    return False


def _quote(text):
    if len(text) > QUOTE_MAX:
        return "'" + text[:QUOTE_MAX] + "...'"
    return "'" + text + "'"


def _valid_hostname(h):
    if not h or len(h) > 253:
        return False
    for label in h.split("."):
        if not label or len(label) > 63 or label[0] == "-" or label[-1] == "-":
            return False
        for c in label:
            if c not in _HOSTCHARS:
                return False
    return True


def parse_url(url):
    """'https://ipv4.tunnelbroker.net/nic/update' ->
    (scheme, host, port, path, query). Query is '' when absent. ConfigError on bad input."""
    if not isinstance(url, str) or not url:
        raise ConfigError("the update URL is empty")
    for c in url:
        o = ord(c)
        if o <= 32 or o >= 127:
            raise ConfigError("the update URL contains a space, control or non-ASCII character")
    i = url.find("://")
    if i <= 0:
        raise ConfigError("the update URL must start with http:// or https://")
    scheme = url[:i].lower()
    if scheme not in ("http", "https"):
        raise ConfigError("the update URL must start with http:// or https:// (not %s://)" % scheme)
    rest = url[i + 3:]
    h = rest.find("#")
    if h >= 0:
        rest = rest[:h]
    end = len(rest)
    for sep in "/?":
        j = rest.find(sep)
        if 0 <= j < end:
            end = j
    authority = rest[:end]
    pq = rest[end:]
    if "@" in authority:
        raise ConfigError("the update URL must not contain a username or password; "
                          "use the username and updatekey/password options")
    port = None
    if authority.startswith("["):
        k = authority.find("]")
        if k < 0:
            raise ConfigError("the update URL has an unclosed [ in its host")
        host = authority[1:k]
        if not addr.is_ip6(host):
            raise ConfigError("the update URL has a bad IPv6 address in []")
        host = addr.ip6_ntoa(addr.ip6_aton(host))
        tail = authority[k + 1:]
        if tail:
            if not tail.startswith(":"):
                raise ConfigError("the update URL has text after the ] of its host")
            port = tail[1:]
    else:
        if authority.count(":") > 1:
            raise ConfigError("an IPv6 address in the update URL must be written in [ ]")
        if ":" in authority:
            host, port = authority.split(":")
        else:
            host = authority
        host = host.lower()
        if not host:
            raise ConfigError("the update URL has no host name")
        if not addr.is_ip4(host) and not _valid_hostname(host):
            raise ConfigError("'%s' in the update URL is not a valid host name" % host)
    if port is None or port == "":
        port = 443 if scheme == "https" else 80
    else:
        if not port.isdigit() or len(port) > 5 or not (1 <= int(port) <= 65535):
            raise ConfigError("the update URL's port must be a number from 1 to 65535")
        port = int(port)
    if not pq:
        pq = "/"
    elif pq[0] == "?":
        pq = "/" + pq
    q = pq.find("?")
    if q >= 0:
        path, query = pq[:q], pq[q + 1:]
    else:
        path, query = pq, ""
    return scheme, host, port, path, query


class Request:
    """One HTTP request for the adapter to run. Plain attributes; repr hides the
    Authorization header and the query (a broker URL may carry a password there)."""

    def __init__(self, scheme, host, port, method, target, headers, timeout):
        self.scheme = scheme
        self.host = host
        self.port = port
        self.method = method
        self.target = target
        self.headers = headers
        self.timeout = timeout

    def header(self, name):
        n = name.lower()
        for k, v in self.headers:
            if k.lower() == n:
                return v
        return None

    def __repr__(self):
        path = self.target.split("?")[0]
        names = ", ".join(k for k, v in self.headers)
        return "Request(%s %s://%s:%d%s?..., headers=[%s], timeout=%s)" % (
            self.method, self.scheme, self.host, self.port, path, names, self.timeout)


def classify_answer(status, body, tunnel_id="?"):
    """(HTTP status, body bytes) -> (result, message, registered_ip or None, min_wait).
    Never raises on any status/body (hostile input)."""
    if isinstance(body, str):
        body = body.encode("utf-8")
    elif body is None:
        body = b""
    try:
        body = bytes(body[:MAX_BODY])
    except Exception:  # not bytes-like at all: the adapter gave us junk
        body = b""
    if not isinstance(status, int) or not (100 <= status <= 599):
        return "unexpected-answer", "the broker sent an invalid HTTP status", None, 0
    line = ""
    for raw in body.split(b"\n"):
        s = _printable(raw).strip()
        if s:
            line = s
            break
    words = line.split()
    word = words[0].lower() if words else ""
    if 200 <= status < 300 and word in ("good", "nochg"):
        reg = None
        bad = None
        if len(words) > 1:
            # "good 203.0.113.2"; some brokers list "v4,v6": take the IPv4 one.
            for part in words[1].split(","):
                if addr.is_ip4(part):
                    reg = part
                    break
            if reg is None:
                bad = words[1]
        if reg is not None and reg.startswith("127.") and word == "good":
            # Dyn: "good 127.0.0.1" means the update was ignored because the broker
            # does not accept the client program.
            return ("blocked", "the broker ignored the update: it does not accept this client "
                    + "program (good 127.0.0.1)", None, 0)
        if word == "good":
            msg = ("the broker now has %s as the tunnel endpoint" % reg) if reg else \
                "the broker accepted the update"
        else:
            msg = ("the broker already had %s as the tunnel endpoint" % reg) if reg else \
                "the broker already had the current address"
        if bad is not None:
            msg += " (the address in its answer, %s, is not an IPv4 address)" % _quote(bad)
        return "ok", msg, reg, 0
    if status == 401:
        return "auth-failed", _ANSWERS["badauth"][1], None, 0
    if word in _ANSWERS:
        res, msg, wait = _ANSWERS[word]
        if "%s" in msg:
            msg = msg % _quote(_printable(str(tunnel_id).encode("utf-8"))[:QUOTE_MAX])
        return res, msg, None, wait
    if 200 <= status < 300:
        if not line:
            return "unexpected-answer", "the broker sent an empty answer", None, 0
        if word.startswith("-error"):
            return "unexpected-answer", "the broker refused the update: " + _quote(line), None, 0
        return ("unexpected-answer", "the broker sent an answer we do not understand: " + _quote(line),
                None, 0)
    if status == 429:
        return ("broker-error", "the broker asks us to slow down (HTTP 429)", None,
                SERVER_TROUBLE_WAIT)
    if status >= 500:
        msg = "the broker has a problem on its side (HTTP %d)" % status
        return "broker-error", msg + (": " + _quote(line) if line else ""), None, 0
    if 300 <= status < 400:
        return ("unexpected-answer", "the broker redirected the update (HTTP %d); check the "
                "update URL" % status, None, 0)
    msg = "the broker answered HTTP %d" % status
    return "unexpected-answer", msg + (": " + _quote(line) if line else ""), None, 0


class HttpUpdateClient:
    def __init__(self, url, username, secret, tunnel_id, send_myip="auto", private_ranges=(),
                 retry_min=5, retry_max=900, rand=None, user_agent="cpe-tunnel/0.1", timeout=30):
        self.scheme, self.host, self.port, self.path, self._query = parse_url(url)
        if not isinstance(username, str) or not username:
            raise ConfigError("the broker username is empty")
        if ":" in username or _has_ctl(username):
            raise ConfigError("the broker username must not contain ':' or control characters")
        if not isinstance(secret, str) or not secret:
            raise ConfigError("the update key / password is empty")
        if _has_ctl(secret):
            raise ConfigError("the update key / password contains control characters")
        if not isinstance(tunnel_id, str):
            tunnel_id = str(tunnel_id)
        if not tunnel_id or len(tunnel_id) > 253 or _has_ctl(tunnel_id):
            raise ConfigError("the tunnel id must be 1 to 253 printable characters")
        if send_myip not in SEND_MYIP:
            raise ConfigError("send_myip must be one of auto, always, never")
        if not isinstance(user_agent, str) or not user_agent or _has_ctl(user_agent):
            raise ConfigError("the user agent must be printable text")
        for c in user_agent:
            if ord(c) > 126:
                raise ConfigError("the user agent must be ASCII")
        try:
            retry_min = float(retry_min)
            retry_max = float(retry_max)
            timeout = float(timeout)
        except (TypeError, ValueError):
            raise ConfigError("retry and timeout values must be numbers of seconds")
        if not (retry_min > 0) or not (retry_max >= retry_min):
            raise ConfigError("retry times must satisfy 0 < retry_min <= retry_max")
        if not (timeout > 0):
            raise ConfigError("the request timeout must be above 0 seconds")
        if rand is None or not callable(rand):
            raise ConfigError("rand must be a callable returning a float in [0, 1)")
        ranges = []
        for r in private_ranges:
            if isinstance(r, str):
                try:
                    ranges.append(addr.parse_prefix4(r))
                except ValueError as e:
                    raise ConfigError("private range: %s" % e)
            else:
                net, plen = r
                if len(net) != 4 or not (0 <= plen <= 32):
                    raise ConfigError("a private range must be IPv4 (net bytes, prefix length)")
                ranges.append((bytes(net), plen))
        self.username = username
        self.tunnel_id = tunnel_id
        self.send_myip = send_myip
        self.private_ranges = tuple(ranges)
        self.retry_min = retry_min
        self.retry_max = retry_max
        self.timeout = timeout
        self.user_agent = user_agent
        self._secret = secret
        cred = binascii.b2a_base64((username + ":" + secret).encode("utf-8"))
        self._auth_b64 = cred.decode().strip()
        self._backoff = Backoff(retry_min, retry_max, rand)
        hold_max = HOLD_MAX if HOLD_MAX > retry_max else retry_max
        self._hold_backoff = Backoff(HOLD_MIN, hold_max, rand, 2.0, 0.1)
        self._events = []
        self._now = None
        self._inflight = None  # dict while a request runs
        self._abandoned = False  # the watchdog gave up on the request in flight
        self._ready = False  # a request may go out now
        self._ready_at = None
        self._due = None  # a request becomes ready at this time
        self._hold_until = None  # WAN events do not send before this
        self._local_ip = None  # latest local IPv4 text we were told
        self._last_attempt_ip = None
        self._have_ok = False
        self._last_ok_ip = None
        self._last_sent = None
        self._pending_change = False
        self.requests_sent = 0
        self.failures = 0  # consecutive failed attempts
        self.last_result = None
        self.last_message = None
        self.last_time = None
        self.registered_ip = None
        self.nat_detected = False

    # -- inputs -------------------------------------------------------------

    def trigger(self, now, local_ipv4, reason):
        """An update is wanted: reason 'start' (new client), 'wan-change', 'reconnect',
        'manual', 'reload' or any other word (treated like a WAN event)."""
        self._now = now
        if local_ipv4 is not None and not addr.is_ip4(local_ipv4):
            raise LocalProtocolError("trigger: %r is not an IPv4 address" % (local_ipv4,))
        if not isinstance(reason, str):
            raise LocalProtocolError("trigger: reason must be text")
        explicit = reason in EXPLICIT_REASONS
        self._local_ip = local_ipv4
        if self._inflight is not None:
            if local_ipv4 != self._inflight["ip"]:
                self._pending_change = True
            return
        if explicit:
            self._schedule_soon(now)
            return
        if local_ipv4 is None:
            return  # the WAN went away: nothing to tell the broker
        if self._hold_until is not None and now < self._hold_until:
            self._events.append(("update-held", {
                "result": self.last_result, "message": self.last_message,
                "retry_in": self._retry_in(now), "reason": reason, "time": now}))
            return
        if (self.last_result == "ok" and self._have_ok and local_ipv4 == self._last_ok_ip
                and reason != "keepalive-lost"):
            # The broker already has it; a repeat would only earn 'nochg'. Not so when
            # the tunnel went quiet: a NAT in front of us may have a new public address,
            # which only a new update (without myip) tells the broker.
            return
        if self._due is not None and local_ipv4 == self._last_attempt_ip:
            return  # the retry timer already covers this address
        self._schedule_soon(now)

    def next_request(self, now):
        """The Request to run now, or None. The request is then in flight until
        response_received() or transport_failed()."""
        self._now = now
        if self._inflight is not None:
            return None
        if self._due is not None and now >= self._due:
            self._make_ready(now)
        if not self._ready:
            return None
        self._ready = False
        self._ready_at = None
        self._due = None
        ip = self._local_ip
        params = "hostname=" + pct_encode(self.tunnel_id)
        myip = None
        if ip is not None and self.send_myip != "never":
            if self.send_myip == "always" or not addr.ip4_is_private(addr.ip4_aton(ip),
                                                                     self.private_ranges):
                myip = ip
                params += "&myip=" + pct_encode(ip)
        q = self._query
        if q and not q.endswith("&"):
            q += "&"
        target = self.path + "?" + q + params
        hosthdr = ("[%s]" % self.host) if ":" in self.host else self.host
        if self.port != (443 if self.scheme == "https" else 80):
            hosthdr += ":%d" % self.port
        headers = [
            ("Host", hosthdr),
            ("Authorization", "Basic " + self._auth_b64),
            ("User-Agent", self.user_agent),
            ("Accept", "text/plain, */*;q=0.1"),
            ("Connection", "close"),
        ]
        self._inflight = {"ip": ip, "myip": myip, "sent": now,
                          "deadline": now + self.timeout + WATCHDOG_GRACE}
        self._abandoned = False
        self._pending_change = False
        self._last_attempt_ip = ip
        self._last_sent = now
        self.requests_sent += 1
        self._events.append(("update-started", {"myip": myip, "local_ip": ip, "time": now}))
        return Request(self.scheme, self.host, self.port, "GET", target, headers, self.timeout)

    def response_received(self, now, status_code, body_bytes):
        self._now = now
        if self._inflight is None:
            if self._abandoned:
                self._abandoned = False
                return
            raise LocalProtocolError("response_received: no update request is in flight")
        res, msg, reg, wait = classify_answer(status_code, body_bytes, self.tunnel_id)
        if res != "ok" and self._leaks(msg):
            msg = "the broker sent an answer that repeats our credentials (not shown)"
        self._finish(now, res, msg, reg, wait, status_code)

    def transport_failed(self, now, reason_text):
        self._now = now
        if self._inflight is None:
            if self._abandoned:
                self._abandoned = False
                return
            raise LocalProtocolError("transport_failed: no update request is in flight")
        if isinstance(reason_text, str):
            reason = _printable(reason_text.encode("utf-8")).strip()
        else:
            reason = ""
        if len(reason) > REASON_MAX:
            reason = reason[:REASON_MAX] + "..."
        if not reason or self._leaks(reason):
            reason = "transport error"
        self._finish(now, "unreachable", "cannot reach the broker: " + reason, None, 0, None)

    # -- timers ---------------------------------------------------------------

    def get_timer(self):
        if self._inflight is not None:
            return self._inflight["deadline"]
        if self._ready:
            return self._ready_at
        return self._due

    def handle_timer(self, now):
        self._now = now
        if self._inflight is not None:
            if now >= self._inflight["deadline"]:
                secs = self._inflight["deadline"] - self._inflight["sent"]
                self._finish(now, "unreachable",
                             "cannot reach the broker: no answer within %d s" % int(secs),
                             None, 0, None)
                self._abandoned = True
            return
        if self._due is not None and now >= self._due:
            self._make_ready(now)

    # -- outputs ------------------------------------------------------------

    def events(self):
        ev = self._events
        self._events = []
        return ev

    def state(self, now=None):
        if now is None:
            now = self._now
        if self._inflight is not None:
            return "in-flight"
        if self.last_result in HOLD_RESULTS and self._hold_until is not None and \
                now is not None and now < self._hold_until and not self._ready:
            return self.last_result
        if self._ready:
            return "pending"
        if self._due is not None:
            return "waiting-retry" if self.last_result not in (None, "ok") else "pending"
        if self.last_result is None:
            return "idle"
        if self.last_result == "ok":
            return "ok"
        return "failed"  # not reached: a failure always schedules a retry

    def status(self, now=None):
        if now is None:
            now = self._now
        broker = "%s://%s" % (self.scheme, ("[%s]" % self.host) if ":" in self.host else self.host)
        if self.port != (443 if self.scheme == "https" else 80):
            broker += ":%d" % self.port
        broker += self.path
        return {
            "state": self.state(now),
            "broker": broker,
            "tunnel_id": self.tunnel_id,
            "last_result": self.last_result,
            "last_message": self.last_message,
            "last_time": self.last_time,
            "registered_ip": self.registered_ip,
            "nat_detected": self.nat_detected,
            "next_retry_in": self._retry_in(now),
            "wan_updates_held": self._hold_until is not None and now is not None
            and now < self._hold_until,
            "attempts": self.failures,
            "requests_sent": self.requests_sent,
        }

    def __repr__(self):
        return "HttpUpdateClient(%s://%s:%d%s, tunnel=%s, state=%s)" % (
            self.scheme, self.host, self.port, self.path, self.tunnel_id, self.state())

    # -- internals ----------------------------------------------------------

    def _retry_in(self, now):
        if self._inflight is not None or now is None:
            return None
        if self._ready:
            return 0
        if self._due is None:
            return None
        d = self._due - now
        return d if d > 0 else 0

    def _make_ready(self, now):
        self._ready = True
        self._ready_at = now
        self._due = None

    def _schedule_soon(self, now, floor=True):
        t = now
        if floor and self._last_sent is not None and self._last_sent + self.retry_min > now:
            t = self._last_sent + self.retry_min
        if t <= now:
            self._make_ready(now)
        elif not self._ready and (self._due is None or t < self._due):
            self._due = t

    def _leaks(self, text):
        s = self._secret
        if s in text or self._auth_b64 in text:
            return True
        ps = _printable(s.encode("utf-8"))
        return ps in text

    def _finish(self, now, res, msg, reg, wait, http_status):
        sent = self._inflight
        self._inflight = None
        self.last_result = res
        self.last_message = msg
        self.last_time = now
        retry_in = None
        if res == "ok":
            self._backoff.reset()
            self._hold_backoff.reset()
            self._hold_until = None
            self._due = None
            self.failures = 0
            self._have_ok = True
            self._last_ok_ip = sent["ip"]
            self.registered_ip = reg
            self.nat_detected = reg is not None and sent["ip"] is not None and reg != sent["ip"]
            if self._pending_change and self._local_ip != sent["ip"] and self._local_ip is not None:
                # The address changed while the broker was being told the old one.
                self._schedule_soon(now, floor=False)
                retry_in = 0
        else:
            self.failures += 1
            if res in HOLD_RESULTS:
                delay = self._hold_backoff.next_delay()
                self._hold_until = now + delay
            else:
                delay = self._backoff.next_delay()
                if wait and delay < wait:
                    delay = wait
                self._hold_until = (now + delay) if wait else None
            self._ready = False
            self._due = now + delay
            retry_in = delay
            if self._pending_change and self._hold_until is None and \
                    self._local_ip is not None and self._local_ip != sent["ip"]:
                # A transient failure, and meanwhile a new address: try that soon.
                self._schedule_soon(now)
                retry_in = self._retry_in(now)
        self._pending_change = False
        self._events.append(("update-result", {
            "result": res, "message": msg, "registered_ip": reg if res == "ok" else None,
            "nat_detected": self.nat_detected if res == "ok" else False,
            "http_status": http_status, "retry_in": retry_in, "time": now}))
