"""SASL, server side, as a TSP broker uses it: PLAIN (RFC 4616) and DIGEST-MD5 (RFC 2831).

Written from the RFCs (standard library only), not from the client's sasl module.

DIGEST-MD5 (RFC 2831 section 2.1):
  challenge  realm="r",nonce="n",qop="auth",charset=utf-8,algorithm=md5-sess
  response   username, realm, nonce, cnonce, nc, qop, digest-uri, response [, charset, authzid]
  A1 = H(username ":" realm ":" password) ":" nonce ":" cnonce [":" authzid]
  A2 = "AUTHENTICATE:" digest-uri          (rspauth: A2 = ":" digest-uri)
  response-value = HEX(KD(HEX(H(A1)), nonce ":" nc ":" cnonce ":" qop ":" HEX(H(A2))))
  with KD(k, s) = H(k ":" s), H = MD5.
Over TSP the challenge, the response and the final message (rspauth=...) travel as base64
lines; PLAIN travels raw: NUL username NUL password (optionally an authzid first).

Every parser raises AuthError (a ValueError) with a readable reason on bad input; the
password never appears in an error.
"""

import base64
import binascii
import hashlib
import hmac

MAX_DIGEST_RESPONSE = 4096  # RFC 2831: a digest-response is less than 4096 bytes
_TOKEN_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-.^_`|~")
_SINGLE = {
    "username",
    "realm",
    "nonce",
    "cnonce",
    "nc",
    "qop",
    "digest-uri",
    "response",
    "maxbuf",
    "charset",
    "cipher",
    "authzid",
}


class AuthError(ValueError):
    """The client's authentication message is malformed or wrong; str() says why."""


def _md5(data):
    return hashlib.md5(data).digest()


def _hexmd5(data):
    return hashlib.md5(data).hexdigest()


def digest_response(
    username,
    realm,
    password,
    nonce,
    cnonce,
    digest_uri,
    nc="00000001",
    qop="auth",
    authzid=None,
    for_rspauth=False,
):
    """The 32 hex digits of an RFC 2831 response-value (for_rspauth: the server's rspauth).
    Text arguments are encoded as UTF-8."""

    def b(s):
        return s.encode("utf-8") if isinstance(s, str) else bytes(s)

    a1 = _md5(b(username) + b":" + b(realm) + b":" + b(password)) + b":" + b(nonce) + b":" + b(cnonce)
    if authzid:
        a1 += b":" + b(authzid)
    a2 = (b"" if for_rspauth else b"AUTHENTICATE") + b":" + b(digest_uri)
    kd = (
        _hexmd5(a1).encode()
        + b":"
        + b(nonce)
        + b":"
        + b(nc)
        + b":"
        + b(cnonce)
        + b":"
        + b(qop)
        + b":"
        + _hexmd5(a2).encode()
    )
    return _hexmd5(kd)


def parse_digest_directives(text):
    """RFC 2831 directive list (name=token or name="quoted-string", comma separated,
    empty elements allowed) -> dict of lowercase names to text. Repeated single-use
    directives are an error."""
    if isinstance(text, (bytes, bytearray)):
        if len(text) > MAX_DIGEST_RESPONSE:
            raise AuthError("DIGEST-MD5 response longer than %d bytes" % MAX_DIGEST_RESPONSE)
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError:
            raise AuthError("DIGEST-MD5 response is not UTF-8")
    if len(text) > MAX_DIGEST_RESPONSE:
        raise AuthError("DIGEST-MD5 response longer than %d characters" % MAX_DIGEST_RESPONSE)
    out = {}
    i, n = 0, len(text)
    lws = " \t\r\n"
    while True:
        while i < n and (text[i] in lws or text[i] == ","):
            i += 1
        if i >= n:
            return out
        j = i
        while j < n and text[j] in _TOKEN_CHARS:
            j += 1
        if j == i:
            raise AuthError("DIGEST-MD5 response: no directive name at offset %d" % i)
        name = text[i:j].lower()
        while j < n and text[j] in lws:
            j += 1
        if j >= n or text[j] != "=":
            raise AuthError("DIGEST-MD5 response: directive %s has no value" % name)
        j += 1
        while j < n and text[j] in lws:
            j += 1
        if j < n and text[j] == '"':
            j += 1
            buf = []
            while True:
                if j >= n:
                    raise AuthError("DIGEST-MD5 response: unterminated quoted value of %s" % name)
                ch = text[j]
                if ch == "\\":
                    if j + 1 >= n:
                        raise AuthError("DIGEST-MD5 response: unterminated quoted value of %s" % name)
                    buf.append(text[j + 1])
                    j += 2
                    continue
                if ch == '"':
                    j += 1
                    break
                buf.append(ch)
                j += 1
            value = "".join(buf)
        else:
            k = j
            while j < n and text[j] in _TOKEN_CHARS:
                j += 1
            value = text[k:j]
            if not value:
                raise AuthError("DIGEST-MD5 response: directive %s has an empty value" % name)
        while j < n and text[j] in lws:
            j += 1
        if j < n and text[j] != ",":
            raise AuthError("DIGEST-MD5 response: expected ',' after %s" % name)
        if name in out and name in _SINGLE:
            raise AuthError("DIGEST-MD5 response: directive %s appears twice" % name)
        out[name] = value
        i = j


def b64decode_line(data, what):
    s = bytes(data).strip(b" \t\r\n\x00")
    if not s:
        raise AuthError("%s is empty" % what)
    try:
        return base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError):
        raise AuthError("%s is not base64" % what)


def b64line(data):
    return base64.b64encode(data) + b"\r\n"


def parse_plain(data):
    """SASL PLAIN message -> (authzid, username, password). Trailing CR/LF ignored."""
    msg = bytes(data)
    while msg[-1:] in (b"\r", b"\n"):
        msg = msg[:-1]
    parts = msg.split(b"\x00")
    if len(parts) > 3 and not any(parts[:-3]):
        parts = parts[-3:]  # stray NULs before it (a C string terminator of the line before)
    if len(parts) != 3:
        raise AuthError("PLAIN message must be [authzid] NUL username NUL password")
    try:
        authzid, user, pw = (p.decode("utf-8") for p in parts)
    except UnicodeDecodeError:
        raise AuthError("PLAIN message is not UTF-8")
    if not user:
        raise AuthError("PLAIN message has an empty username")
    return authzid, user, pw


class DigestServer:
    """One DIGEST-MD5 exchange, server side.

    challenge() -> bytes (the directives, before base64);
    verify(response_bytes, lookup) -> (username, rspauth_bytes) or raises AuthError.
    lookup(username) -> password or None."""

    def __init__(self, realm, nonce, server_names=(), service="tsp"):
        self.realm = realm
        self.nonce = nonce
        self.server_names = [n.lower() for n in server_names]
        self.service = service

    def __repr__(self):
        return "<DigestServer realm=%s>" % self.realm

    def challenge(self):
        return (
            'realm="%s",nonce="%s",qop="auth",algorithm=md5-sess,charset=utf-8' % (self.realm, self.nonce)
        ).encode()

    def verify(self, response, lookup):
        d = parse_digest_directives(response)
        for need in ("username", "nonce", "cnonce", "nc", "digest-uri", "response"):
            if need not in d:
                raise AuthError("DIGEST-MD5 response has no %s" % need)
        if d.get("charset") is not None and d["charset"].lower() != "utf-8":
            raise AuthError("DIGEST-MD5 response charset must be utf-8")
        qop = d.get("qop", "auth")
        if qop != "auth":
            raise AuthError("DIGEST-MD5 response asks for qop=%s; only auth is offered" % qop[:20])
        if d["nonce"] != self.nonce:
            raise AuthError("DIGEST-MD5 response nonce is not the one we sent")
        if d["nc"] != "00000001":
            raise AuthError("DIGEST-MD5 response nc must be 00000001 for a new exchange")
        realm = d.get("realm", "")
        if realm != self.realm:
            raise AuthError("DIGEST-MD5 response realm is not ours")
        serv, sep, host = d["digest-uri"].partition("/")
        if not sep or serv.lower() != self.service or not host:
            raise AuthError("DIGEST-MD5 digest-uri must be %s/<broker name>" % self.service)
        host = host.split("/")[0].lower()
        if self.server_names and host not in self.server_names:
            raise AuthError("DIGEST-MD5 digest-uri names another server")
        resp = d["response"].lower()
        if len(resp) != 32 or any(c not in "0123456789abcdef" for c in resp):
            raise AuthError("DIGEST-MD5 response value is not 32 hex digits")
        user = d["username"]
        password = lookup(user)
        authzid = d.get("authzid")
        if authzid is not None and authzid != user:
            raise AuthError("DIGEST-MD5 authzid differs from the username")
        if password is None:
            # compute anyway so unknown users cost the same
            digest_response(user, realm, "", self.nonce, d["cnonce"], d["digest-uri"], d["nc"], qop, authzid)
            raise AuthError("unknown user or wrong password")
        want = digest_response(
            user, realm, password, self.nonce, d["cnonce"], d["digest-uri"], d["nc"], qop, authzid
        )
        if not hmac.compare_digest(want, resp):
            raise AuthError("unknown user or wrong password")
        rsp = digest_response(
            user,
            realm,
            password,
            self.nonce,
            d["cnonce"],
            d["digest-uri"],
            d["nc"],
            qop,
            authzid,
            for_rspauth=True,
        )
        return user, ("rspauth=" + rsp).encode()
