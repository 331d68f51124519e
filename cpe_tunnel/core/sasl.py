# SASL mechanisms as TSP (RFC 5572) uses them: PLAIN (RFC 4616) and DIGEST-MD5
# (RFC 2831), sans-IO and MicroPython compatible.
#
# - PLAIN: the message is  [authzid] NUL authcid NUL passwd  (UTF-8). TSP sends it raw
#   (not base64) on its own line after "AUTHENTICATE PLAIN"; gogoCLIENT and tsps agree.
# - DIGEST-MD5 as gogoCLIENT 1.2 does it (the de-facto TSP profile of RFC 2831):
#   the broker's challenge and final message are base64 lines; our response is the
#   base64 of
#     [charset=utf-8,]username="u",realm="r",nonce="n",nc=00000001,cnonce="c",
#     digest-uri="tsp/<server>",response=<32 hex>,qop=auth
#   in that order (the order of RFC 2831's own example), with
#     A1 = H(u ":" r ":" password) ":" nonce ":" cnonce        (md5-sess)
#     A2 = "AUTHENTICATE:" digest-uri        (the broker's rspauth uses ":" digest-uri)
#     response = HEX(H(HEX(H(A1)) ":" nonce ":00000001:" cnonce ":auth:" HEX(H(A2))))
#   charset is echoed only when the challenge carries it; realm is the first realm
#   offered, or empty. Only qop=auth (no integrity/confidentiality layer) and
#   algorithm=md5-sess are supported; anything else is refused before we answer.
# - Parsers treat input as hostile: RemoteProtocolError with a readable reason, never
#   anything else. The password never appears in an error, a repr or an event.

import binascii
import hashlib

from cpe_tunnel.core.errors import ConfigError, RemoteProtocolError

MAX_CHALLENGE = 2048  # RFC 2831: a digest-challenge is less than 2048 bytes
_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_TOKEN = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_."
_SINGLE = ("nonce", "qop", "charset", "algorithm", "maxbuf", "stale", "rspauth", "cipher")
_LWS = " \t\r\n"


def b64encode(data):
    out = binascii.b2a_base64(bytes(data))
    if out[-1:] == b"\n":
        out = out[:-1]
    return out


def b64decode(data, what="base64 data"):
    """Strict base64 (surrounding whitespace allowed); RemoteProtocolError otherwise."""
    if isinstance(data, str):
        try:
            data = data.encode()
        except UnicodeError:
            raise RemoteProtocolError("%s is not base64" % what)
    s = bytes(data).strip(b" \t\r\n\x00")
    if not s or len(s) % 4:
        raise RemoteProtocolError("%s is not base64 (length %d)" % (what, len(s)))
    pad = 0
    for i in range(len(s)):
        c = chr(s[i])
        if c == "=":
            pad += 1
            if i < len(s) - 2:
                raise RemoteProtocolError("%s is not base64 (padding in the middle)" % what)
        elif pad or c not in _B64:
            raise RemoteProtocolError("%s is not base64" % what)
    try:
        return binascii.a2b_base64(s)
    except ValueError:
        raise RemoteProtocolError("%s is not base64" % what)


def _h(data):
    return hashlib.md5(data).digest()


def _hex(data):
    return binascii.hexlify(data).decode()


def _text(value, what):
    if not isinstance(value, str):
        raise ConfigError("%s must be text" % what)
    if "\x00" in value:
        raise ConfigError("%s must not contain a NUL character" % what)
    return value.encode()


def plain_message(username, password, authzid=""):
    """The SASL PLAIN message (bytes): authzid NUL username NUL password."""
    return _text(authzid, "authzid") + b"\x00" + _text(username, "username") + b"\x00" + \
        _text(password, "password")


def _decode_text(data, what):
    if isinstance(data, str):
        return data
    if len(data) > MAX_CHALLENGE:
        raise RemoteProtocolError("%s is longer than %d bytes" % (what, MAX_CHALLENGE))
    try:
        return str(bytes(data), "utf-8")
    except UnicodeError:
        raise RemoteProtocolError("%s is not valid UTF-8" % what)


def parse_directives(data, what="DIGEST-MD5 challenge"):
    """Parse an RFC 2831 list of name=value / name="quoted value" directives.
    Returns a dict: names lowercased, values as text; 'realm' maps to a list (it may
    repeat). Unknown directives are kept; directives that must be unique are checked."""
    text = _decode_text(data, what)
    if len(text) > MAX_CHALLENGE:
        raise RemoteProtocolError("%s is longer than %d bytes" % (what, MAX_CHALLENGE))
    out = {}
    i = 0
    n = len(text)
    while True:
        while i < n and (text[i] in _LWS or text[i] == ","):
            i += 1
        if i >= n:
            break
        j = i
        while j < n and text[j] in _TOKEN:
            j += 1
        if j == i:
            raise RemoteProtocolError("%s: expected a directive name at offset %d" % (what, i))
        name = text[i:j].lower()
        while j < n and text[j] in _LWS:
            j += 1
        if j >= n or text[j] != "=":
            raise RemoteProtocolError("%s: directive %s has no value" % (what, name))
        j += 1
        while j < n and text[j] in _LWS:
            j += 1
        if j < n and text[j] == '"':
            j += 1
            val = []
            closed = False
            while j < n:
                c = text[j]
                if c == "\\" and j + 1 < n:
                    val.append(text[j + 1])
                    j += 2
                    continue
                if c == '"':
                    closed = True
                    j += 1
                    break
                val.append(c)
                j += 1
            if not closed:
                raise RemoteProtocolError("%s: unterminated quoted value of %s" % (what, name))
            value = "".join(val)
        else:
            k = j
            while j < n and text[j] not in _LWS and text[j] != ",":
                if text[j] == '"':
                    raise RemoteProtocolError("%s: stray quote in %s" % (what, name))
                j += 1
            value = text[k:j]
        while j < n and text[j] in _LWS:
            j += 1
        if j < n and text[j] != ",":
            raise RemoteProtocolError("%s: expected ',' after directive %s" % (what, name))
        i = j
        if name == "realm":
            out.setdefault("realm", []).append(value)
        elif name in out and name in _SINGLE:
            raise RemoteProtocolError("%s: directive %s appears twice" % (what, name))
        else:
            out[name] = value
    return out


def _quote(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


class DigestMD5:
    """One DIGEST-MD5 exchange. response() answers the broker's challenge; check_rspauth()
    verifies the broker's final message proves it knows the password too."""

    def __init__(self, username, password, server, service="tsp"):
        self._user = _text(username, "username")
        self._pw = _text(password, "password")
        if not isinstance(server, str) or not server or "\x00" in server:
            raise ConfigError("DIGEST-MD5 needs the broker's name for digest-uri")
        self.digest_uri = service + "/" + server
        self._expected = None

    def __repr__(self):
        return "<DigestMD5 digest-uri=%s>" % self.digest_uri

    def response(self, challenge, cnonce):
        """challenge: dict from parse_directives (or the raw text). Returns the response
        directives as bytes (not yet base64)."""
        if not isinstance(challenge, dict):
            challenge = parse_directives(challenge)
        nonce = challenge.get("nonce")
        if not nonce:
            raise RemoteProtocolError("DIGEST-MD5 challenge has no nonce")
        qops = challenge.get("qop")
        if qops is not None:
            offered = [q.strip(_LWS).lower() for q in qops.split(",")]
            if "auth" not in offered:
                raise RemoteProtocolError("DIGEST-MD5 challenge does not offer qop=auth (offers %s)"
                                          % _printable(qops))
        alg = challenge.get("algorithm")
        if alg is not None and alg.lower() != "md5-sess":
            raise RemoteProtocolError("DIGEST-MD5 challenge asks for algorithm %s, not md5-sess"
                                      % _printable(alg))
        charset = challenge.get("charset")
        if charset is not None and charset.lower() != "utf-8":
            raise RemoteProtocolError("DIGEST-MD5 challenge asks for charset %s, not utf-8"
                                      % _printable(charset))
        realms = challenge.get("realm") or [""]
        realm = realms[0]
        if not isinstance(cnonce, str) or not cnonce or '"' in cnonce or "\\" in cnonce:
            raise ConfigError("cnonce must be non-empty text without quotes")
        ha1 = _hex(_h(_h(self._user + b":" + realm.encode() + b":" + self._pw)
                      + b":" + nonce.encode() + b":" + cnonce.encode()))
        tail = ":" + nonce + ":00000001:" + cnonce + ":auth:"
        resp = _hex(_h((ha1 + tail + _hex(_h(("AUTHENTICATE:" + self.digest_uri).encode())))
                       .encode()))
        self._expected = _hex(_h((ha1 + tail + _hex(_h((":" + self.digest_uri).encode())))
                                 .encode()))
        parts = []
        if charset is not None:
            parts.append("charset=" + charset)
        parts.append("username=" + _quote(self._user.decode()))
        parts.append("realm=" + _quote(realm))
        parts.append("nonce=" + _quote(nonce))
        parts.append("nc=00000001")
        parts.append("cnonce=" + _quote(cnonce))
        parts.append("digest-uri=" + _quote(self.digest_uri))
        parts.append("response=" + resp)
        parts.append("qop=auth")
        return ",".join(parts).encode()

    def check_rspauth(self, final):
        """final: dict from parse_directives or raw text. RemoteProtocolError if the
        broker's rspauth is missing or wrong."""
        if self._expected is None:
            raise RemoteProtocolError("rspauth before our DIGEST-MD5 response")
        if not isinstance(final, dict):
            final = parse_directives(final, "DIGEST-MD5 final message")
        got = final.get("rspauth")
        if got is None:
            raise RemoteProtocolError("DIGEST-MD5 final message has no rspauth")
        if got.lower() != self._expected:
            raise RemoteProtocolError("the broker's DIGEST-MD5 proof (rspauth) is wrong: it does "
                                      "not know our password, or realm/digest-uri differ")
        return True


def _printable(s, limit=40):
    out = []
    for c in s[:limit]:
        out.append(c if 32 <= ord(c) < 127 else "?")
    return "".join(out)
