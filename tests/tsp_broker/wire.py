"""TSP (RFC 5572) on the wire, broker side: framing, status lines, CAPABILITY, the client's
tunnel request XML (parsed with the standard library's ElementTree) and the broker's
offer and redirect XML.

- UDP control datagram: 8-byte header (32-bit sequence word with the top 4 bits set,
  32-bit timestamp) + message. The broker answers with the request's header unchanged
  (what tsps does in /work/shared/captures/gogoc-tsps.pcap). Datagrams whose top nibble
  is not 0xF are tunnel data (v6udpv4), not control.
- Messages: one CRLF line, or "Content-length: N\\r\\n" + N bytes. gogoCLIENT sends
  C strings with their terminating NUL, so NULs around a message are ignored.
Every parser raises WireError (a ValueError) with a readable reason on bad input.
"""

import ipaddress
import struct
import xml.etree.ElementTree as ET

CONTROL_FLAG = 0xF0000000
HEADER = struct.Struct("!II")
MAX_MESSAGE = 16384  # a request is a few hundred bytes; anything near this is hostile
MAX_LINE = 2048

STATUS_TEXT = {
    200: "Success",
    300: "Authentication failed",
    301: "No more tunnels available",
    302: "Unsupported client version",
    303: "Unsupported tunnel type",
    310: "Server side error",
    500: "Invalid request",
    501: "Invalid IPv4 address",
    502: "Invalid IPv6 address",
    506: "IPv4 prefix already in use",
    507: "Requested prefix length cannot be assigned",
    509: "Reverse DNS delegation error",
    518: "Unsupported prefix length",
    520: "Missing prefix length",
    521: "Request already in progress",
    522: "Prefix requested by an anonymous session",
    530: "Server too busy",
}


class WireError(ValueError):
    """Malformed input from a client; str() says why. .code: the TSP status to answer
    with (500 invalid request unless a more precise one applies)."""

    def __init__(self, msg, code=500):
        super().__init__(msg)
        self.code = code


# ------------------------------------------------------------------ reliable-UDP header


def is_control(datagram):
    return len(datagram) >= 8 and datagram[0] >> 4 == 0xF


def split_control(datagram):
    """(header bytes, seq without flag bits, timestamp, payload bytes)."""
    if len(datagram) < 8:
        raise WireError("control datagram shorter than its 8-byte header")
    word, ts = HEADER.unpack_from(datagram, 0)
    if word & CONTROL_FLAG != CONTROL_FLAG:
        raise WireError("sequence word 0x%08x lacks the control flag bits" % word)
    return bytes(datagram[:8]), word & 0x0FFFFFFF, ts, bytes(datagram[8:])


def control_header(seq, ts):
    return HEADER.pack(CONTROL_FLAG | (seq & 0x0FFFFFFF), ts & 0xFFFFFFFF)


# ------------------------------------------------------------------ messages


def status(code, text=None):
    return ("%d %s\r\n" % (code, text if text is not None else STATUS_TEXT.get(code, "Error"))).encode()


def framed(body):
    return ("Content-length: %d\r\n" % len(body)).encode() + body


def capability(tunnel_types, mechanisms):
    parts = ["CAPABILITY"]
    parts += ["TUNNEL=%s" % t.upper() for t in tunnel_types]
    parts += ["AUTH=%s" % m.upper() for m in mechanisms]
    return (" ".join(parts) + "\r\n").encode()


def _lstrip_nul(b):
    i = 0
    while i < len(b) and b[i] == 0:
        i += 1
    return b[i:]


def _rstrip_nul(b):
    e = len(b)
    while e and b[e - 1] == 0:
        e -= 1
    return b[:e]


def _content_length(line):
    # line: "Content-length: N" (any case), without line end
    if line[:15].lower() != b"content-length:":
        return None
    v = line[15:].strip(b" \t")
    if not v or len(v) > 6 or not v.isdigit():
        raise WireError("Content-length value is not a number")
    n = int(v)
    if n > MAX_MESSAGE:
        raise WireError("Content-length %d is larger than %d" % (n, MAX_MESSAGE))
    return n


def decode_udp_message(payload):
    """One UDP message (payload after the header) -> (kind, body):
    ('empty', b'') | ('framed', body) | ('line', line-without-CRLF).
    Trailing NULs (C string terminators) are dropped; a line keeps leading NULs
    (a SASL PLAIN message starts with one)."""
    data = _rstrip_nul(bytes(payload))
    if not _lstrip_nul(data):
        return "empty", b""
    if len(data) > MAX_MESSAGE + 32:
        raise WireError("message larger than %d bytes" % MAX_MESSAGE)
    nl = data.find(b"\n")
    first = data if nl < 0 else data[:nl]
    n = _content_length(_lstrip_nul(first).rstrip(b"\r"))
    if n is not None:
        if nl < 0:
            raise WireError("Content-length header without a line end")
        body = data[nl + 1 :]
        if len(body) < n:
            raise WireError("truncated message: Content-length %d, got %d bytes" % (n, len(body)))
        if body[n:].strip(b" \t\r\n"):
            raise WireError("%d bytes beyond Content-length %d" % (len(body) - n, n))
        return "framed", body[:n]
    if data.endswith(b"\r\n"):
        data = data[:-2]
    elif data.endswith(b"\n"):
        data = data[:-1]
    if len(data) > MAX_LINE:
        raise WireError("line longer than %d bytes" % MAX_LINE)
    if b"\n" in data:
        raise WireError("more than one line in one message")
    return "line", data


def split_stream(buf):
    """One message from the front of a TCP buffer: ((kind, body), rest) or None when more
    bytes are needed; WireError when it can never become valid. NULs between messages
    (gogoCLIENT sends C strings with their terminator) are skipped before a
    Content-length header; a line keeps them (the session decides)."""
    stripped = _lstrip_nul(buf)
    if not stripped:
        return None
    nl = buf.find(b"\n")
    if nl < 0:
        if len(buf) > MAX_LINE + 64:
            raise WireError("line longer than %d bytes" % MAX_LINE)
        return None
    first = buf[:nl].rstrip(b"\r")
    n = _content_length(_lstrip_nul(first))
    if n is not None:
        end = nl + 1 + n
        if len(buf) < end:
            return None
        return ("framed", bytes(buf[nl + 1 : end])), buf[end:]
    if len(first) > MAX_LINE:
        raise WireError("line longer than %d bytes" % MAX_LINE)
    return ("line", bytes(first)), buf[nl + 1 :]


def line_text(line):
    try:
        t = bytes(line).decode("utf-8")
    except UnicodeDecodeError:
        raise WireError("line is not UTF-8")
    if any(ord(c) < 32 and c != "\t" for c in t):
        raise WireError("control character in line")
    return t


# ------------------------------------------------------------------ the client's XML


def _parse_xml(body):
    if len(body) > MAX_MESSAGE:
        raise WireError("XML larger than %d bytes" % MAX_MESSAGE)
    low = bytes(body).lower()
    if b"<!doctype" in low or b"<!entity" in low:
        raise WireError("DTDs and entity declarations are not accepted")
    try:
        return ET.fromstring(bytes(body).strip(b" \t\r\n\x00"))
    except (ET.ParseError, ValueError) as exc:
        raise WireError("malformed XML: %s" % str(exc)[:120])


def _addr(el, kind, what):
    text = (el.text or "").strip()
    try:
        if kind == "ipv4":
            return ipaddress.IPv4Address(text)
        return ipaddress.IPv6Address(text)
    except ValueError:
        raise WireError(
            "%s is not an %s address" % (what, "IPv4" if kind == "ipv4" else "IPv6"),
            501 if kind == "ipv4" else 502,
        )


def parse_tunnel_xml(body):
    """The client's <tunnel> message -> dict:
    action ('create' | 'accept' | 'reject' | 'delete' | ...), type, proxy,
    ipv4 / ipv6 (declared client addresses or None), dn, keepalive_interval (int or None),
    keepalive_address, router (bool), prefix_len (int or None), dns_names [..]."""
    root = _parse_xml(body)
    if root.tag != "tunnel":
        raise WireError("root element is <%s>, not <tunnel>" % root.tag[:30])
    action = (root.get("action") or "").lower()
    if not action:
        raise WireError("<tunnel> has no action")
    req = {
        "action": action,
        "type": (root.get("type") or "").lower(),
        "proxy": root.get("proxy"),
        "ipv4": None,
        "ipv6": None,
        "dn": None,
        "keepalive_interval": None,
        "keepalive_address": None,
        "router": False,
        "prefix_len": None,
        "dns_names": [],
    }
    client = root.find("client")
    if client is None:
        if action == "create":
            raise WireError("tunnel request without <client>")
        return req
    for a in client.findall("address"):
        kind = (a.get("type") or "").lower()
        if kind == "ipv4" and req["ipv4"] is None:
            req["ipv4"] = _addr(a, "ipv4", "client address")
        elif kind == "ipv6" and req["ipv6"] is None:
            req["ipv6"] = _addr(a, "ipv6", "client address")
        elif kind == "dn":
            req["dn"] = (a.text or "").strip()[:253]
    ka = client.find("keepalive")
    if ka is not None:
        iv = ka.get("interval")
        if iv is not None:
            iv = iv.strip()
            if not iv.isdigit() or len(iv) > 6:
                raise WireError("keepalive interval is not a number")
            req["keepalive_interval"] = int(iv)
        for a in ka.findall("address"):
            kind = (a.get("type") or "").lower()
            if kind in ("ipv4", "ipv6"):
                req["keepalive_address"] = _addr(a, kind, "keepalive address")
                break
    router = client.find("router")
    if router is not None:
        req["router"] = True
        p = router.find("prefix")
        if p is not None and p.get("length") is not None:
            ln = p.get("length").strip()
            if not ln.isdigit() or len(ln) > 3:
                raise WireError("prefix length is not a number")
            req["prefix_len"] = int(ln)
        dns = router.find("dns_server")
        if dns is not None:
            for a in dns.findall("address"):
                req["dns_names"].append((a.text or "").strip()[:253])
    return req


# ------------------------------------------------------------------ the broker's XML


def _esc(s):
    return str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def prefix_text(net, style):
    """A delegated prefix as the offer writes it: 'groups' = the RFC 5572 example style
    (only the prefix's 16-bit groups, four digits each: "2001:0db8:4000"); 'address' =
    the compressed network address ("2001:db8:4000::"). IPv4 prefixes: dotted quad."""
    if isinstance(net, ipaddress.IPv4Network):
        return str(net.network_address)
    if style == "address":
        return str(net.network_address)
    groups = max(1, (net.prefixlen + 15) // 16)
    return ":".join(net.network_address.exploded.split(":")[:groups])


def offer_xml(t):
    """The <tunnel action="info"> offer for tunnel dict t (keys: type, lifetime, mtu,
    server_ipv4, server_ipv6, client_ipv4, client_ipv6, keepalive_interval,
    keepalive_address, prefix, prefix_len, prefix_text). Layout as tsps writes it:
    tabs and CRLF."""
    attrs = ' type="%s" lifetime="%d"' % (t["type"], t["lifetime"])
    if t.get("mtu"):
        attrs += ' mtu="%d"' % t["mtu"]
    out = ['<tunnel action="info"%s>\r\n' % attrs, "\t<server>\r\n"]
    for k in ("ipv4", "ipv6"):
        if t.get("server_" + k):
            out.append('\t\t<address type="%s">%s</address>\r\n' % (k, t["server_" + k]))
    out.append("\t</server>\r\n\t<client>\r\n")
    for k in ("ipv4", "ipv6"):
        if t.get("client_" + k):
            out.append('\t\t<address type="%s">%s</address>\r\n' % (k, t["client_" + k]))
    if t.get("prefix"):
        out.append(
            '\t\t<router>\r\n\t\t\t<prefix length="%d">%s</prefix>\r\n\t\t</router>\r\n'
            % (t["prefix_len"], t["prefix_text"])
        )
    if t.get("keepalive_interval") is not None and t.get("keepalive_address"):
        ka = t["keepalive_address"]
        kind = "ipv4" if ":" not in ka else "ipv6"
        out.append(
            '\t\t<keepalive interval="%d">\r\n\t\t\t<address type="%s">%s</address>\r\n'
            "\t\t</keepalive>\r\n" % (t["keepalive_interval"], kind, ka)
        )
    out.append("\t</client>\r\n</tunnel>\r\n")
    return "".join(out).encode()


def redirect_xml(brokers):
    """The broker list of a redirect: <broker> elements holding <address type=ipv4|ipv6|dn>
    (the form gogoCLIENT reads), in the order given."""
    out = ['<tunnel action="info" type="v6anyv4" lifetime="0">\r\n']
    for b in brokers:
        try:
            kind = "ipv6" if ipaddress.ip_address(b).version == 6 else "ipv4"
        except ValueError:
            kind = "dn"
        out.append('\t<broker>\r\n\t\t<address type="%s">%s</address>\r\n\t</broker>\r\n' % (kind, _esc(b)))
    out.append("</tunnel>\r\n")
    return "".join(out).encode()
