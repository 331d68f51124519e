"""A small TSP client for tests, built on plain sockets (not cpe_tunnel.core.tsp): it
speaks the messages gogoCLIENT sends (see the gogoc-tsps capture) so tests can drive
the reference broker step by step, retransmit on purpose, and keep the UDP socket to
carry v6udpv4 data on the same 5-tuple afterwards.

    c = MiniClient("203.0.113.18")               # UDP; MiniClient(..., transport="tcp")
    offer = c.negotiate("v6udpv4", local_ipv4="192.0.2.2")          # ANONYMOUS
    offer = c.negotiate("v6anyv4", "192.0.2.2", user="alice", password="wonderland",
                        mechanism="DIGEST-MD5", server_name="203.0.113.18")
    c.sock  # the UDP socket: c.sock.send(ipv6_packet) is v6udpv4 data
"""

import base64
import os
import socket
import struct
import time
import xml.etree.ElementTree as ET

from .auth import digest_response, parse_digest_directives


class TspError(Exception):
    """The broker answered with a status other than 200 (.code, .text, .body)."""

    def __init__(self, code, text, body=b""):
        super().__init__("%s %s" % (code, text))
        self.code = code
        self.text = text
        self.body = body


class MiniClient:
    def __init__(self, server, port=3653, transport="udp", timeout=1.0, tries=4, bind=None, seq=240):
        self.server = server
        self.port = port
        self.transport = transport
        self.timeout = timeout
        self.tries = tries
        fam = socket.AF_INET6 if ":" in server else socket.AF_INET
        self.sock = socket.socket(fam, socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM)
        if bind:
            self.sock.bind(bind)
        self.sock.settimeout(timeout)
        self.sock.connect((server, port))
        self.seq = seq
        self.t0 = time.monotonic()
        self.retransmissions = 0
        self.buf = b""
        self.data = []  # non-control datagrams received while waiting for control answers

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def local(self):
        return self.sock.getsockname()

    # ---- one exchange ----------------------------------------------------------------------
    def header(self, seq=None):
        ms = int((time.monotonic() - self.t0) * 1000) & 0xFFFFFFFF
        return struct.pack("!II", 0xF0000000 | (self.seq if seq is None else seq), ms)

    def exchange(self, payload, expect_answer=True):
        """Send one request; return the answer's payload (UDP: header checked and removed).
        TCP: returns what arrives until a complete answer (or b'' when expect_answer is
        False)."""
        if self.transport == "udp":
            return self._udp(payload)
        self.sock.sendall(payload)
        return self.read_answer() if expect_answer else b""

    def _udp(self, payload):
        seq = self.seq
        self.seq += 1
        hdr = self.header(seq)
        for attempt in range(self.tries):
            if attempt:
                self.retransmissions += 1
                hdr = self.header(seq)
            self.sock.send(hdr + payload)
            deadline = time.monotonic() + self.timeout
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.sock.settimeout(left)
                try:
                    d = self.sock.recv(65536)
                except socket.timeout:
                    break
                if len(d) >= 8 and d[0] >> 4 == 0xF:
                    if struct.unpack("!I", d[:4])[0] & 0x0FFFFFFF != seq:
                        continue  # an answer to an earlier send
                    if d[:8] != hdr:
                        raise AssertionError(
                            "answer header %s does not echo ours %s" % (d[:8].hex(), hdr.hex())
                        )
                    return d[8:]
                self.data.append(d)
        raise socket.timeout("no answer to %r after %d tries" % (payload[:30], self.tries))

    def read_answer(self, until=None):
        """TCP: one answer: a CRLF line, or a Content-length framed message, or a line and
        the XML after it up to </tunnel> for an unframed redirect."""
        deadline = time.monotonic() + self.timeout * self.tries
        while True:
            got = self._split(until)
            if got is not None:
                return got
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("no complete answer over TCP (have %r)" % self.buf[:60])
            self.sock.settimeout(left)
            chunk = self.sock.recv(65536)
            if not chunk:
                if self.buf:
                    out, self.buf = self.buf, b""
                    return out
                raise ConnectionError("broker closed the connection")
            self.buf += chunk

    def _split(self, until):
        b = self.buf
        nl = b.find(b"\n")
        if nl < 0:
            return None
        if b[:15].lower() == b"content-length:":
            n = int(b[15:nl].strip())
            if len(b) < nl + 1 + n:
                return None
            self.buf = b[nl + 1 + n :]
            return b[: nl + 1 + n]
        end = nl + 1
        if until is not None:
            k = b.find(until)
            if k < 0:
                return None
            end = k + len(until)
        elif b[:1].isdigit() and int(b[:4].split(b" ")[0] or b"0") >= 1000:
            k = b.find(b"</tunnel>")
            if k < 0:
                return None
            end = b.find(b"\n", k)
            end = len(b) if end < 0 else end + 1
        self.buf = b[end:]
        return b[:end]

    # ---- parsing answers -------------------------------------------------------------------
    @staticmethod
    def unframe(ans):
        if ans[:15].lower() == b"content-length:":
            nl = ans.find(b"\n")
            n = int(ans[15:nl].strip())
            body = ans[nl + 1 :]
            assert len(body) == n, "Content-length %d but %d bytes" % (n, len(body))
            return body
        return ans

    @classmethod
    def status_of(cls, ans):
        body = cls.unframe(ans)
        line, _, rest = body.partition(b"\r\n")
        code, _, text = line.decode().partition(" ")
        return int(code), text, rest

    @staticmethod
    def parse_offer(xml_bytes):
        root = ET.fromstring(xml_bytes)
        o = {"type": root.get("type"), "lifetime": root.get("lifetime"), "action": root.get("action")}
        for part in ("server", "client"):
            el = root.find(part)
            for a in el.findall("address") if el is not None else []:
                o["%s_%s" % (part, a.get("type"))] = a.text.strip()
        client = root.find("client")
        ka = client.find("keepalive") if client is not None else None
        if ka is not None:
            o["keepalive_interval"] = int(ka.get("interval"))
            o["keepalive_address"] = ka.find("address").text.strip()
        router = client.find("router") if client is not None else None
        if router is not None:
            p = router.find("prefix")
            o["prefix_len"] = int(p.get("length"))
            o["prefix_text"] = p.text.strip()
        o["brokers"] = [a.text.strip() for b in root.iter("broker") for a in b.findall("address")]
        return o

    # ---- whole session ---------------------------------------------------------------------
    @staticmethod
    def request_xml(mode, local_ipv4=None, local_ipv6=None, keepalive=10, router=False, prefix_len=None):
        v4v6 = mode == "v4v6"
        x = '<tunnel action="create" type="%s" proxy="no">\r\n <client>\r\n' % mode
        if v4v6:
            x += '  <address type="ipv6">%s</address>\r\n' % local_ipv6
        else:
            x += '  <address type="ipv4">%s</address>\r\n' % local_ipv4
        if keepalive is not None:
            x += (
                '  <keepalive interval="%d">\r\n    <address type="%s">%s</address>\r\n  </keepalive>\r\n'
                % (keepalive, "ipv4" if v4v6 else "ipv6", "127.0.0.1" if v4v6 else "::")
            )
        if router:
            x += "  <router>\r\n"
            if prefix_len is not None:
                x += '   <prefix length="%d"/>\r\n' % prefix_len
            x += "  </router>\r\n"
        return (x + " </client>\r\n</tunnel>\r\n").encode()

    @staticmethod
    def framed(body):
        return b"Content-length: %d\r\n" % len(body) + body

    def check(self, ans, what):
        code, text, rest = self.status_of(ans)
        if code != 200:
            raise TspError(code, text, rest)
        return rest

    def negotiate(
        self,
        mode,
        local_ipv4=None,
        local_ipv6=None,
        user=None,
        password=None,
        mechanism="ANONYMOUS",
        server_name=None,
        keepalive=10,
        router=False,
        prefix_len=None,
        version="2.0.2",
        accept=True,
        cnonce=None,
    ):
        """VERSION .. accept. Returns the offer dict (plus 'capability' and 'rspauth_ok').
        Raises TspError on a non-200 status (redirects included: .code >= 1000)."""
        udp = self.transport == "udp"
        nul = b"\x00" if udp else b""
        ans = self.exchange(b"VERSION=%s\r\n" % version.encode())
        if not ans.startswith(b"CAPABILITY "):
            self.check(ans, "capability")
            raise TspError(0, "no CAPABILITY: %r" % ans[:60])
        caps = ans.decode().split()
        mech = mechanism.upper()
        info = {"capability": caps}
        if mech == "ANONYMOUS":
            self.check(self.exchange(b"AUTHENTICATE ANONYMOUS\r\n" + nul), "auth")
        elif mech == "PLAIN":
            creds = b"\x00" + user.encode() + b"\x00" + password.encode() + b"\r\n"
            if udp:
                assert self.exchange(b"AUTHENTICATE PLAIN\r\n" + nul) == b""
                self.check(self.exchange(creds), "auth")
            else:
                self.check(self.exchange(b"AUTHENTICATE PLAIN\r\n" + creds), "auth")
        else:
            ch = self.exchange(b"AUTHENTICATE DIGEST-MD5\r\n" + nul)
            if ch[:1].isdigit():
                self.check(ch, "challenge")
            d = parse_digest_directives(base64.b64decode(ch.strip()))
            realm = d.get("realm", "")
            cn = cnonce or base64.b16encode(os.urandom(8)).decode().lower()
            uri = "tsp/" + (server_name or self.server)
            resp = digest_response(user, realm, password, d["nonce"], cn, uri)
            msg = (
                'charset=utf-8,username="%s",realm="%s",nonce="%s",nc=00000001,cnonce="%s",'
                'digest-uri="%s",response=%s,qop=auth' % (user, realm, d["nonce"], cn, uri, resp)
            )
            if udp:
                fin = self.exchange(base64.b64encode(msg.encode()) + b"\r\n")
                if fin[:1].isdigit():
                    self.check(fin, "rspauth")
                rsp = parse_digest_directives(base64.b64decode(fin.strip()))["rspauth"]
                self.check(self.exchange(b""), "auth")
            else:
                self.sock.sendall(base64.b64encode(msg.encode()) + b"\r\n")
                fin = self.read_answer()
                if fin[:1].isdigit():
                    self.check(fin, "rspauth")
                rsp = parse_digest_directives(base64.b64decode(fin.strip()))["rspauth"]
                self.check(self.read_answer(), "auth")
            want = digest_response(user, realm, password, d["nonce"], cn, uri, for_rspauth=True)
            info["rspauth_ok"] = rsp == want
        req = self.request_xml(mode, local_ipv4, local_ipv6, keepalive, router, prefix_len)
        ans = self.exchange(self.framed(req))
        rest = self.check(ans, "offer")
        offer = self.parse_offer(rest)
        offer.update(info)
        if accept:
            acc = self.framed(b'<tunnel action="accept"></tunnel>\r\n')
            if udp:
                assert self.exchange(acc) == b""
            else:
                self.sock.sendall(acc)
        return offer
