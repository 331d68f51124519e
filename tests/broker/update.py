"""The HTTP endpoint-update service: dyndns2 protocol as tunnelbroker.net offers it.

    GET /nic/update?hostname=<tunnel id>[&myip=<IPv4>]
    Authorization: Basic base64(<username>:<update key or account password>)

tunnelbroker.net also takes ``username=`` and ``password=`` as query parameters
instead of the header; this broker accepts both (the header wins when both are there).

Answers (text/plain, one line per hostname, newline-terminated), following the
dyndns2 return codes (help.dyn.com "return codes" / "perform update"):

  good <ip>    endpoint changed to <ip>
  nochg <ip>   endpoint was already <ip>
  badauth      unknown user or wrong password/update key. Returned once for the
               whole request when it fails at account level.
  nohost       hostname missing, or not a tunnel of this account
  numhost      more than MAX_HOSTS hostnames in one request
  abuse        the tunnel was updated more than ``abuse_limit_per_minute`` times
               in the last 60 s (counting accepted updates: good and nochg)
  badagent     HTTP method other than GET
  911          broker-side fault (switched on with the ``answer_911`` fault)

HTTP status: 200 for all of the above, as dyndns2 does, except:
  * no credentials at all -> 401 with ``WWW-Authenticate: Basic realm=...`` and
    body ``badauth`` (the standard basic-auth challenge; clients such as
    uclient-fetch only send credentials after such a challenge);
  * wrong credentials -> ``badauth_status`` from the config (default 200; set 401
    to test a client against a server that answers badauth with 401 too -- what
    tunnelbroker.net does exactly here is not documented, so clients must handle both);
  * other paths -> 404; a query that cannot be parsed -> 400.

``myip``: a well-formed IPv4 address is used as the new endpoint; when it is absent
or malformed it is ignored and the request's source address is used (dyndns2:
"if the IP address passed to the system is not properly formed, it will be ignored
and the system's best guess will be used") -- that is how updates work behind NAT.
"""

import base64
import binascii
import hmac
import ipaddress
import time
import urllib.parse

REALM = "tunnelbroker"
MAX_HOSTS = 20
ABUSE_WINDOW = 60.0
_SECRET_PARAMS = ("password", "pass", "updatekey", "key", "apikey")


class UpdateResponse:
    def __init__(self, status, body, headers=None, summary=None):
        self.status = status
        self.body = body  # str
        self.headers = list(headers or [])
        self.summary = summary if summary is not None else body.strip()

    def __repr__(self):
        return "UpdateResponse(%d, %r)" % (self.status, self.body)


def parse_basic_auth(value):
    """'Basic <base64 user:pass>' -> (user, password); None when absent or malformed."""
    if not isinstance(value, str):
        return None
    parts = value.strip().split(None, 1)
    if len(parts) != 2 or parts[0].lower() != "basic":
        return None
    try:
        raw = base64.b64decode(parts[1].strip().encode("ascii"), validate=True)
    except (ValueError, binascii.Error):
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    if ":" not in text:
        return None
    user, _, password = text.partition(":")
    return user, password


def parse_ipv4(text):
    """Strict dotted-quad IPv4 text -> canonical str, or None."""
    if not isinstance(text, str) or len(text) > 15:
        return None
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        return None


def source_ipv4(source):
    """The request's source as IPv4 text (unwrapping ::ffff:a.b.c.d), or None."""
    try:
        a = ipaddress.ip_address(source)
    except ValueError:
        return None
    if a.version == 6:
        a = a.ipv4_mapped
    return str(a) if a is not None else None


def redact_target(target):
    """Request target with secret query parameters replaced, for logs."""
    if not isinstance(target, str):
        return "?"
    path, sep, query = target.partition("?")
    if not sep:
        return path[:200]
    out = []
    for part in query.split("&"):
        name = urllib.parse.unquote_plus(part.partition("=")[0], errors="replace").lower()
        out.append(name + "=***" if name in _SECRET_PARAMS else part)
    return (path + "?" + "&".join(out))[:300]


def _short(value, limit=64):
    if value is None:
        return None
    value = str(value)
    return value if len(value) <= limit else value[:limit] + "..."


def _eq(a, b):
    return hmac.compare_digest(a.encode("utf-8", "surrogatepass"), b.encode("utf-8", "surrogatepass"))


class UpdateService:
    """Answers update requests against a Registry. Pure logic: no sockets here."""

    def __init__(self, registry, clock=None, wallclock=time.time):
        self.registry = registry
        self.clock = clock or registry.clock
        self.wallclock = wallclock

    def handle(self, method, target, headers, source, scheme="http"):
        """headers: dict of lower-case header name -> value. Returns an UpdateResponse."""
        reg = self.registry
        with reg.lock:
            resp, info = self._handle(method, target, headers, source, scheme)
            if resp.status >= 400 and resp.status != 401:
                reg.answers["http_errors"] += 1
            entry = {
                "time": round(self.wallclock(), 3),
                "scheme": scheme,
                "source": source,
                "method": _short(method, 16),
                "target": redact_target(target),
                "status": resp.status,
                "answer": resp.summary,
            }
            entry.update(info)
            reg.note_request(entry)
            return resp

    def _handle(self, method, target, headers, source, scheme):
        reg = self.registry
        info = {}
        try:
            parts = urllib.parse.urlsplit(target)
        except ValueError:
            return UpdateResponse(400, "bad request\n"), info
        if parts.path != "/nic/update":
            return UpdateResponse(404, "not found\n"), info
        try:
            q = urllib.parse.parse_qs(
                parts.query, keep_blank_values=True, max_num_fields=64, errors="replace"
            )
        except ValueError:
            return UpdateResponse(400, "bad request\n"), info

        def first(name):
            v = q.get(name)
            return v[0] if v else None

        hostnames = [h.strip() for h in (first("hostname") or "").split(",") if h.strip()]
        info["hostname"] = _short(first("hostname"))
        info["myip"] = _short(first("myip"))
        for h in hostnames[:MAX_HOSTS]:
            t = reg.tunnels.get(h)
            if t is not None:
                t.counts["requests"] += 1

        if method != "GET":
            self._count("badagent", hostnames)
            return UpdateResponse(200, "badagent\n"), info
        if reg.faults["answer_911"]:
            self._count("911", hostnames)
            return UpdateResponse(200, "911\n"), info

        auth = headers.get("authorization")
        if auth is not None:
            info["auth"] = "header"
            creds = parse_basic_auth(auth)
        elif "username" in q or "password" in q:
            info["auth"] = "query"
            creds = (first("username") or "", first("password") or "")
        else:
            info["auth"] = "none"
            self._count("badauth", hostnames)
            return UpdateResponse(401, "badauth\n", [("WWW-Authenticate", 'Basic realm="%s"' % REALM)]), info

        acct = reg.accounts.get(creds[0]) if creds else None
        if creds:
            info["user"] = _short(creds[0])
        acct_ok = acct is not None and _eq(creds[1], acct.password)
        key_ok = set()
        if acct is not None:
            for h in hostnames:
                t = reg.tunnels.get(h)
                if t is not None and t.account is acct and _eq(creds[1], t.spec.updatekey):
                    key_ok.add(h)
        if not acct_ok and not key_ok:
            self._count("badauth", hostnames)
            status = reg.config.badauth_status
            hdrs = [("WWW-Authenticate", 'Basic realm="%s"' % REALM)] if status == 401 else []
            return UpdateResponse(status, "badauth\n", hdrs), info

        if not hostnames:
            return self._answer(["nohost"]), info
        if len(hostnames) > MAX_HOSTS:
            return self._answer(["numhost"]), info

        myip = parse_ipv4(first("myip")) if first("myip") is not None else None
        ip = myip or source_ipv4(source)
        info["endpoint"] = ip
        lines = []
        for h in hostnames:
            t = reg.tunnels.get(h)
            if t is None or t.account is not acct:
                lines.append("nohost")
                continue
            if not (acct_ok or h in key_ok):
                lines.append("badauth")
                t.counts["badauth"] += 1
                continue
            if ip is None:  # no usable IPv4 at all (IPv6 client without myip)
                lines.append("nohost")
                continue
            now = self.clock()
            limit = reg.config.abuse_limit_per_minute
            times = t.update_times
            while times and times[0] <= now - ABUSE_WINDOW:
                times.popleft()
            if limit and len(times) >= limit:
                lines.append("abuse")
                t.counts["abuse"] += 1
                continue
            times.append(now)
            code = "nochg" if t.endpoint == ip else "good"
            if code == "good":
                reg.set_endpoint(t.spec.id, ip)
            t.counts[code] += 1
            t.last_update = {
                "time": round(self.wallclock(), 3),
                "scheme": scheme,
                "source": source,
                "myip": _short(first("myip")),
                "endpoint": ip,
                "answer": code,
            }
            lines.append("%s %s" % (code, ip))
        return self._answer(lines), info

    def _count(self, code, hostnames):
        reg = self.registry
        reg.answers[code] += 1
        for h in hostnames[:MAX_HOSTS]:
            t = reg.tunnels.get(h)
            if t is not None:
                t.counts[code] += 1

    def _answer(self, lines):
        reg = self.registry
        for line in lines:
            reg.answers[line.split(" ", 1)[0]] += 1
        return UpdateResponse(200, "".join(line + "\n" for line in lines))
