"""One TSP control session, broker side (sans-IO: messages in, answers out).

State table (what the broker expects next -> what it answers):

  VERSION   "VERSION=x"      supported: CAPABILITY line -> AUTH;  else 302 -> CLOSED
  AUTH      "AUTHENTICATE ANONYMOUS"   200 -> REQUEST (if ANONYMOUS is offered)
            "AUTHENTICATE PLAIN"       UDP: empty ack; TCP: nothing -> PLAIN
            "AUTHENTICATE DIGEST-MD5"  base64 challenge -> DIGEST
  PLAIN     NUL user NUL password      200 -> REQUEST | 300 -> CLOSED
  DIGEST    base64 response            base64 rspauth -> POLL (UDP);
                                       TCP: rspauth line + "200 Success" -> REQUEST
                                       wrong: 300 -> CLOSED
  POLL      empty message (UDP)        200 -> REQUEST
  REQUEST   Content-length + <tunnel action="create">
                                       Content-length + "200 Success" + offer -> ACCEPT
                                       refused: Content-length + status -> CLOSED
  ACCEPT    <tunnel action="accept">   empty answer; the tunnel goes live -> DONE
            <tunnel action="reject">   empty answer; the tunnel is dropped -> DONE
  DONE/CLOSED                          an empty message gets an empty answer; anything
                                       else: 500 (TCP: the connection is closed)

Anywhere: "VERSION=..." starts the session over (a client retrying on the same port).
A message that does not fit the state: 500 Invalid request -> CLOSED.
Over UDP every request gets exactly one answer (possibly empty); the transport layer
puts the request's 8-byte header on it and answers retransmissions from its cache.

Faults (Registry.take_fault(stage)) replace the normal answer at a stage: a status
code (>= 1000: redirect with a broker list), or raw bytes.
"""

import hmac

from . import auth, wire
from .registry import TunnelError

VERSION, AUTH, PLAIN, DIGEST, POLL, REQUEST, ACCEPT, DONE, CLOSED = (
    "VERSION",
    "AUTH",
    "PLAIN",
    "DIGEST",
    "POLL",
    "REQUEST",
    "ACCEPT",
    "DONE",
    "CLOSED",
)


class Session:
    """transport: 'udp' | 'tcp'; peer: (ip text, port). handle() returns the answer
    bytes (b'' = empty answer / nothing to write). After `closed` is set a TCP connection
    should be closed once the answer is written."""

    def __init__(self, registry, transport, peer, now, nonce_source, log=None):
        self.reg = registry
        self.transport = transport
        self.peer = peer
        self.started = now
        self.last = now
        self._nonce_source = nonce_source
        self._log = log or (lambda msg: None)
        self.state = VERSION
        self.version = None
        self.mechanism = None
        self.user = None
        self.tunnel = None
        self.result = None  # last status code answered
        self.closed = False
        self.messages = 0
        self._digest = None

    def __repr__(self):
        return "<Session %s %s:%s %s>" % (self.transport, self.peer[0], self.peer[1], self.state)

    def info(self):
        return {
            "transport": self.transport,
            "peer": "%s:%d" % self.peer,
            "state": self.state,
            "version": self.version,
            "auth": self.mechanism,
            "user": self.user,
            "tunnel": self.tunnel.id if self.tunnel else None,
            "result": self.result,
            "messages": self.messages,
            "started": self.started,
            "last": self.last,
        }

    # ---- entry point -----------------------------------------------------------------
    def handle(self, kind, body, now):
        """kind/body from wire.decode_udp_message / wire.split_stream."""
        self.last = now
        self.messages += 1
        self.reg.count("messages")
        if kind == "line" and self.state != PLAIN:
            body = body.lstrip(b"\x00")
        try:
            if kind == "line" and body.startswith(b"VERSION="):
                return self._version(body, now)
            handler = getattr(self, "_in_" + self.state.lower())
            return handler(kind, body, now)
        except (wire.WireError, auth.AuthError) as exc:
            code = getattr(exc, "code", 500) if isinstance(exc, wire.WireError) else 500
            self._log("%s:%d: bad message in %s: %s" % (self.peer[0], self.peer[1], self.state, exc))
            return self._fail(code, framed=self.state == REQUEST)

    # ---- helpers ---------------------------------------------------------------------
    def _status(self, code, text=None, framed=False, close=False):
        self.result = code
        self.reg.count_answer(code)
        msg = wire.status(code, text)
        if close:
            self.state = CLOSED
            self.closed = True
        return wire.framed(msg) if framed else msg

    def _fail(self, code, text=None, framed=False):
        return self._status(code, text, framed, close=True)

    def _fault(self, stage):
        """The answer a fault asks for at this stage, or None."""
        f = self.reg.take_fault(stage)
        if f is None:
            return None
        self.reg.count("faults_applied")
        framed = stage in ("request", "accept")
        self.state = CLOSED
        self.closed = True
        if "raw" in f:
            self.result = "raw"
            return f["raw"]
        code = f["code"]
        if code >= 1000:
            self.result = code
            self.reg.count_answer(code)
            msg = wire.status(code, f.get("text") or "Redirect") + wire.redirect_xml(f["brokers"])
            return wire.framed(msg) if framed else msg
        return self._status(code, f.get("text"), framed, close=True)

    def _unexpected(self, what):
        self._log("%s:%d: expected %s in state %s" % (self.peer[0], self.peer[1], what, self.state))
        return self._fail(500, framed=self.state in (REQUEST, ACCEPT))

    # ---- states ----------------------------------------------------------------------
    def _version(self, body, now):
        if self.state != VERSION:
            self.reg.count("restarts")
        self.state = VERSION
        self.closed = False
        self.mechanism = self.user = self.tunnel = None
        self._digest = None
        v = wire.line_text(body)[8:].strip()
        self.version = v[:20]
        f = self._fault("version")
        if f is not None:
            return f
        if v not in self.reg.config.versions:
            return self._fail(302)
        self.state = AUTH
        cfg = self.reg.config
        types = [t for t in cfg.tunnel_types if t != "v4v6" or cfg.listen6]  # v4v6 needs listen6
        return wire.capability(types, cfg.auth)

    def _in_version(self, kind, body, now):
        return self._unexpected("VERSION")

    def _in_auth(self, kind, body, now):
        if kind != "line":
            return self._unexpected("AUTHENTICATE")
        text = wire.line_text(body).strip()
        parts = text.split()
        if len(parts) != 2 or parts[0].upper() != "AUTHENTICATE":
            return self._unexpected("AUTHENTICATE")
        mech = parts[1].upper()
        if mech not in self.reg.config.auth:
            self._log("%s:%d: mechanism %s not offered" % (self.peer[0], self.peer[1], mech[:20]))
            return self._fail(300, "Authentication failed: mechanism not offered")
        self.mechanism = mech
        if mech == "ANONYMOUS":
            f = self._fault("auth")
            if f is not None:
                return f
            self.user = None
            self.state = REQUEST
            return self._status(200)
        if mech == "PLAIN":
            self.state = PLAIN
            return b""
        self._digest = auth.DigestServer(
            self.reg.config.realm, self._nonce_source(), self.reg.config.server_names
        )
        self.state = DIGEST
        return auth.b64line(self._digest.challenge())

    def _in_plain(self, kind, body, now):
        if kind != "line":
            return self._unexpected("PLAIN credentials")
        f = self._fault("auth")
        if f is not None:
            return f
        try:
            _authz, user, pw = auth.parse_plain(body)
        except auth.AuthError as exc:
            self._log("%s:%d: PLAIN: %s" % (self.peer[0], self.peer[1], exc))
            return self._fail(300)
        want = self.reg.password(user)
        if want is None or not hmac.compare_digest(want.encode("utf-8"), pw.encode("utf-8")):
            self._log(
                "%s:%d: PLAIN: unknown user or wrong password (user %s)"
                % (self.peer[0], self.peer[1], user[:40])
            )
            return self._fail(300)
        self.user = user
        self.state = REQUEST
        return self._status(200)

    def _in_digest(self, kind, body, now):
        if kind != "line":
            return self._unexpected("DIGEST-MD5 response")
        f = self._fault("auth")
        if f is not None:
            return f
        raw = auth.b64decode_line(body, "DIGEST-MD5 response")
        try:
            user, rsp = self._digest.verify(raw, self.reg.password)
        except auth.AuthError as exc:
            self._log("%s:%d: DIGEST-MD5: %s" % (self.peer[0], self.peer[1], exc))
            return self._fail(300)
        self.user = user
        if self.transport == "udp":
            self.state = POLL
            return auth.b64line(rsp)
        self.state = REQUEST
        return auth.b64line(rsp) + self._status(200)

    def _in_poll(self, kind, body, now):
        if kind != "empty":
            return self._unexpected("the empty poll after rspauth")
        self.state = REQUEST
        return self._status(200)

    def _in_request(self, kind, body, now):
        if kind != "framed":
            return self._unexpected("a Content-length framed tunnel request")
        req = wire.parse_tunnel_xml(body)
        if req["action"] != "create":
            return self._unexpected("action=create")
        f = self._fault("request")
        if f is not None:
            return f
        try:
            t = self.reg.create_tunnel(self.user, req, self.transport, self.peer, now)
        except TunnelError as exc:
            self._log("%s:%d: tunnel refused (%d): %s" % (self.peer[0], self.peer[1], exc.code, exc))
            return self._fail(exc.code, framed=True)
        self.tunnel = t
        self.state = ACCEPT
        self.result = 200
        self.reg.count_answer(200)
        self._log(
            "%s:%d: offer %s %s (asked %s) user=%s endpoint=%s nat=%s prefix=%s"
            % (
                self.peer[0],
                self.peer[1],
                t.id,
                t.type,
                req["type"],
                self.user or "-",
                t.state()["endpoint"],
                t.nat,
                t.prefix,
            )
        )
        return wire.framed(wire.status(200) + wire.offer_xml(t.offer(self.reg.config)))

    def _in_accept(self, kind, body, now):
        if kind != "framed":
            return self._unexpected("the accept message")
        req = wire.parse_tunnel_xml(body)
        f = self._fault("accept")
        if f is not None:
            return f
        if req["action"] == "accept":
            self.reg.activate(self.tunnel, now)
            self.state = DONE
            self.closed = self.transport == "tcp"
            self._log("%s:%d: tunnel %s accepted, live" % (self.peer[0], self.peer[1], self.tunnel.id))
            return b""
        if req["action"] == "reject":
            self.reg.remove(self.tunnel)
            self.state = DONE
            self.closed = self.transport == "tcp"
            return b""
        return self._unexpected("action=accept or reject")

    def _in_done(self, kind, body, now):
        if kind == "empty":
            return b""
        return self._unexpected("nothing more")

    _in_closed = _in_done
