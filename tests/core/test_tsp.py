# TSP client core: byte vectors from the gogoc-tsps capture, codec, reliable UDP and the
# client state machine against a scripted broker (pair helpers below). Runs under pytest
# and under MicroPython (tests/mprun.py).
from cpe_tunnel.core import sasl, tsp
from cpe_tunnel.core.errors import ConfigError, LocalProtocolError, RemoteProtocolError

# gogoc-tsps.pcap: the five TSP sessions (client port, [(sender, time, datagram)]).
# C = gogoCLIENT 1.2 at 192.0.2.2, S = tsps at 192.0.2.1:3653. Extracted with scapy;
# tests/unit/test_tsp_captures.py checks these literals against the pcap itself.
CAPTURE = [
    (54558, [
        ('C', 1795382027.495924,
         b'\xf0\x00\x00\xf0\x00\x00\x01\xefVERSION=2.0.2\r\n'),
        ('S', 1795382027.497454,
         b'\xf0\x00\x00\xf0\x00\x00\x01\xefCAPABILITY TUNNEL=V6UDPV4 AUTH=ANONYMOUS\r\n'),
        ('C', 1795382027.497511,
         (b'\xf0\x00\x00\xf1\x00\x00\x01\xf1AUTHENTICATE ANONYMOUS\r\n'
          b'\x00')),
        ('S', 1795382027.497548,
         b'\xf0\x00\x00\xf1\x00\x00\x01\xf1200 Success\r\n'),
        ('C', 1795382027.497623,
         (b'\xf0\x00\x00\xf2\x00\x00\x01\xf1Content-length: 214\r\n'
          b'<tunnel action="create" type="v6udpv4" proxy="no">\r\n'
          b' <client>\r\n'
          b'  <address type="ipv4">192.0.2.2</address>\r\n'
          b'  <keepalive interval="10">\r\n'
          b'    <address type="ipv6">::</address>\r\n'
          b'  </keepalive>\r\n'
          b' </client>\r\n'
          b'</tunnel>\r\n')),
        ('S', 1795382027.497776,
         (b'\xf0\x00\x00\xf2\x00\x00\x01\xf1Content-length: 429\r\n'
          b'200 Success\r\n'
          b'<tunnel action="info" type="v6udpv4" lifetime="604800">\r\n'
          b'\t<server>\r\n'
          b'\t\t<address type="ipv4">192.0.2.1</address>\r\n'
          b'\t\t<address type="ipv6">2001:db8:100::1</address>\r\n'
          b'\t</server>\r\n'
          b'\t<client>\r\n'
          b'\t\t<address type="ipv4">192.0.2.2</address>\r\n'
          b'\t\t<address type="ipv6">2001:db8:100:0:ffff:c000:202:d51e</address>\r\n'
          b'\t\t<keepalive interval="10">\r\n'
          b'\t\t\t<address type="ipv6">2001:db8:100::1</address>\r\n'
          b'\t\t</keepalive>\r\n'
          b'\t</client>\r\n'
          b'</tunnel>\r\n')),
        ('C', 1795382027.497851,
         (b'\xf0\x00\x00\xf3\x00\x00\x01\xf1Content-length: 35\r\n'
          b'<tunnel action="accept"></tunnel>\r\n')),
        ('S', 1795382027.497893,
         b'\xf0\x00\x00\xf3\x00\x00\x01\xf1'),
    ]),
    (56174, [
        ('C', 1795382038.338299,
         b'\xf0\x00\x00\xf0\x00\x00\x01RVERSION=2.0.2\r\n'),
        ('S', 1795382038.339244,
         b'\xf0\x00\x00\xf0\x00\x00\x01RCAPABILITY TUNNEL=V6UDPV4 AUTH=ANONYMOUS\r\n'),
        ('C', 1795382038.339276,
         (b'\xf0\x00\x00\xf1\x00\x00\x01SAUTHENTICATE ANONYMOUS\r\n'
          b'\x00')),
        ('S', 1795382038.339305,
         b'\xf0\x00\x00\xf1\x00\x00\x01S200 Success\r\n'),
        ('C', 1795382038.33936,
         (b'\xf0\x00\x00\xf2\x00\x00\x01SContent-length: 214\r\n'
          b'<tunnel action="create" type="v6udpv4" proxy="no">\r\n'
          b' <client>\r\n'
          b'  <address type="ipv4">192.0.2.2</address>\r\n'
          b'  <keepalive interval="10">\r\n'
          b'    <address type="ipv6">::</address>\r\n'
          b'  </keepalive>\r\n'
          b' </client>\r\n'
          b'</tunnel>\r\n')),
        ('S', 1795382038.339408,
         (b'\xf0\x00\x00\xf2\x00\x00\x01SContent-length: 429\r\n'
          b'200 Success\r\n'
          b'<tunnel action="info" type="v6udpv4" lifetime="604800">\r\n'
          b'\t<server>\r\n'
          b'\t\t<address type="ipv4">192.0.2.1</address>\r\n'
          b'\t\t<address type="ipv6">2001:db8:100::1</address>\r\n'
          b'\t</server>\r\n'
          b'\t<client>\r\n'
          b'\t\t<address type="ipv4">192.0.2.2</address>\r\n'
          b'\t\t<address type="ipv6">2001:db8:100:0:ffff:c000:202:db6e</address>\r\n'
          b'\t\t<keepalive interval="10">\r\n'
          b'\t\t\t<address type="ipv6">2001:db8:100::1</address>\r\n'
          b'\t\t</keepalive>\r\n'
          b'\t</client>\r\n'
          b'</tunnel>\r\n')),
        ('C', 1795382038.339454,
         (b'\xf0\x00\x00\xf3\x00\x00\x01SContent-length: 35\r\n'
          b'<tunnel action="accept"></tunnel>\r\n')),
        ('S', 1795382038.339476,
         b'\xf0\x00\x00\xf3\x00\x00\x01S'),
    ]),
    (41470, [
        ('C', 1795382046.960401,
         b'\xf0\x00\x00\xf0\x00\x00\x03\xc0VERSION=2.0.2\r\n'),
        ('S', 1795382046.961304,
         b'\xf0\x00\x00\xf0\x00\x00\x03\xc0CAPABILITY TUNNEL=V6UDPV4 AUTH=ANONYMOUS\r\n'),
        ('C', 1795382046.961331,
         (b'\xf0\x00\x00\xf1\x00\x00\x03\xc1AUTHENTICATE ANONYMOUS\r\n'
          b'\x00')),
        ('S', 1795382046.961351,
         b'\xf0\x00\x00\xf1\x00\x00\x03\xc1200 Success\r\n'),
        ('C', 1795382046.961398,
         (b'\xf0\x00\x00\xf2\x00\x00\x03\xc1Content-length: 214\r\n'
          b'<tunnel action="create" type="v6udpv4" proxy="no">\r\n'
          b' <client>\r\n'
          b'  <address type="ipv4">192.0.2.2</address>\r\n'
          b'  <keepalive interval="10">\r\n'
          b'    <address type="ipv6">::</address>\r\n'
          b'  </keepalive>\r\n'
          b' </client>\r\n'
          b'</tunnel>\r\n')),
        ('S', 1795382046.961448,
         (b'\xf0\x00\x00\xf2\x00\x00\x03\xc1Content-length: 429\r\n'
          b'200 Success\r\n'
          b'<tunnel action="info" type="v6udpv4" lifetime="604800">\r\n'
          b'\t<server>\r\n'
          b'\t\t<address type="ipv4">192.0.2.1</address>\r\n'
          b'\t\t<address type="ipv6">2001:db8:100::1</address>\r\n'
          b'\t</server>\r\n'
          b'\t<client>\r\n'
          b'\t\t<address type="ipv4">192.0.2.2</address>\r\n'
          b'\t\t<address type="ipv6">2001:db8:100:0:ffff:c000:202:a1fe</address>\r\n'
          b'\t\t<keepalive interval="10">\r\n'
          b'\t\t\t<address type="ipv6">2001:db8:100::1</address>\r\n'
          b'\t\t</keepalive>\r\n'
          b'\t</client>\r\n'
          b'</tunnel>\r\n')),
        ('C', 1795382046.961491,
         (b'\xf0\x00\x00\xf3\x00\x00\x03\xc1Content-length: 35\r\n'
          b'<tunnel action="accept"></tunnel>\r\n')),
        ('S', 1795382046.961508,
         b'\xf0\x00\x00\xf3\x00\x00\x03\xc1'),
    ]),
    (38001, [
        ('C', 1795382051.990188,
         b'\xf0\x00\x00\xf0\x00\x00\x03\xdeVERSION=2.0.2\r\n'),
        ('S', 1795382051.991459,
         b'\xf0\x00\x00\xf0\x00\x00\x03\xdeCAPABILITY TUNNEL=V6UDPV4 AUTH=ANONYMOUS\r\n'),
        ('C', 1795382051.991494,
         (b'\xf0\x00\x00\xf1\x00\x00\x03\xdfAUTHENTICATE ANONYMOUS\r\n'
          b'\x00')),
        ('S', 1795382051.991525,
         b'\xf0\x00\x00\xf1\x00\x00\x03\xdf200 Success\r\n'),
        ('C', 1795382051.991576,
         (b'\xf0\x00\x00\xf2\x00\x00\x03\xdfContent-length: 214\r\n'
          b'<tunnel action="create" type="v6udpv4" proxy="no">\r\n'
          b' <client>\r\n'
          b'  <address type="ipv4">192.0.2.2</address>\r\n'
          b'  <keepalive interval="10">\r\n'
          b'    <address type="ipv6">::</address>\r\n'
          b'  </keepalive>\r\n'
          b' </client>\r\n'
          b'</tunnel>\r\n')),
        ('S', 1795382051.991704,
         (b'\xf0\x00\x00\xf2\x00\x00\x03\xdfContent-length: 429\r\n'
          b'200 Success\r\n'
          b'<tunnel action="info" type="v6udpv4" lifetime="604800">\r\n'
          b'\t<server>\r\n'
          b'\t\t<address type="ipv4">192.0.2.1</address>\r\n'
          b'\t\t<address type="ipv6">2001:db8:100::1</address>\r\n'
          b'\t</server>\r\n'
          b'\t<client>\r\n'
          b'\t\t<address type="ipv4">192.0.2.2</address>\r\n'
          b'\t\t<address type="ipv6">2001:db8:100:0:ffff:c000:202:9471</address>\r\n'
          b'\t\t<keepalive interval="10">\r\n'
          b'\t\t\t<address type="ipv6">2001:db8:100::1</address>\r\n'
          b'\t\t</keepalive>\r\n'
          b'\t</client>\r\n'
          b'</tunnel>\r\n')),
        ('C', 1795382051.991755,
         (b'\xf0\x00\x00\xf3\x00\x00\x03\xdfContent-length: 35\r\n'
          b'<tunnel action="accept"></tunnel>\r\n')),
        ('S', 1795382051.99178,
         b'\xf0\x00\x00\xf3\x00\x00\x03\xdf'),
    ]),
    (51249, [
        ('C', 1795382068.760987,
         b'\xf0\x00\x00\xf0\x00\x00\x02\xf8VERSION=2.0.2\r\n'),
        ('S', 1795382068.761586,
         b'\xf0\x00\x00\xf0\x00\x00\x02\xf8CAPABILITY TUNNEL=V6UDPV4 AUTH=ANONYMOUS\r\n'),
        ('C', 1795382068.761779,
         (b'\xf0\x00\x00\xf1\x00\x00\x02\xf9AUTHENTICATE ANONYMOUS\r\n'
          b'\x00')),
        ('S', 1795382068.761802,
         b'\xf0\x00\x00\xf1\x00\x00\x02\xf9200 Success\r\n'),
        ('C', 1795382068.761846,
         (b'\xf0\x00\x00\xf2\x00\x00\x02\xf9Content-length: 214\r\n'
          b'<tunnel action="create" type="v6udpv4" proxy="no">\r\n'
          b' <client>\r\n'
          b'  <address type="ipv4">192.0.2.2</address>\r\n'
          b'  <keepalive interval="10">\r\n'
          b'    <address type="ipv6">::</address>\r\n'
          b'  </keepalive>\r\n'
          b' </client>\r\n'
          b'</tunnel>\r\n')),
        ('S', 1795382068.761903,
         (b'\xf0\x00\x00\xf2\x00\x00\x02\xf9Content-length: 429\r\n'
          b'200 Success\r\n'
          b'<tunnel action="info" type="v6udpv4" lifetime="604800">\r\n'
          b'\t<server>\r\n'
          b'\t\t<address type="ipv4">192.0.2.1</address>\r\n'
          b'\t\t<address type="ipv6">2001:db8:100::1</address>\r\n'
          b'\t</server>\r\n'
          b'\t<client>\r\n'
          b'\t\t<address type="ipv4">192.0.2.2</address>\r\n'
          b'\t\t<address type="ipv6">2001:db8:100:0:ffff:c000:202:c831</address>\r\n'
          b'\t\t<keepalive interval="10">\r\n'
          b'\t\t\t<address type="ipv6">2001:db8:100::1</address>\r\n'
          b'\t\t</keepalive>\r\n'
          b'\t</client>\r\n'
          b'</tunnel>\r\n')),
        ('C', 1795382068.761941,
         (b'\xf0\x00\x00\xf3\x00\x00\x02\xf9Content-length: 35\r\n'
          b'<tunnel action="accept"></tunnel>\r\n')),
        ('S', 1795382068.761965,
         b'\xf0\x00\x00\xf3\x00\x00\x02\xf9'),
    ]),
]

# An ICMPv6 packet the broker sent inside the v6udpv4 tunnel (no TSP header: data).
DATA_PACKET = (b'`\x00\x00\x00\x00\x10:\x05 \x01\r\xb8\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00'
               b'\x00\x01 \x01\r\xb8\x01\x00\x00\x00\xff\xff\xc0\x00\x02\x02\xd5\x1e\x80\x00\xf8'
               b'\xdc[\x0b\x00\x01\xcd\xcd\xcd\xcd\xcd\xcd\xcd\xcd')

CAPTURED_KW = {"mode": "v6udpv4", "keepalive_interval": 10, "local_ipv4": "192.0.2.2",
               "auth": "anonymous"}


def session(port):
    for p, msgs in CAPTURE:
        if p == port:
            return msgs
    raise KeyError(port)


def offer_body(client_v6="2001:db8:100:0:ffff:c000:202:d51e", ttype="v6udpv4", extra=b"",
               prefix=b""):
    """The capture's offer XML (status line and Content-length stripped), adjustable."""
    return (b'<tunnel action="info" type="' + ttype.encode() + b'" lifetime="604800">\r\n'
            b'\t<server>\r\n\t\t<address type="ipv4">192.0.2.1</address>\r\n'
            b'\t\t<address type="ipv6">2001:db8:100::1</address>\r\n\t</server>\r\n'
            b'\t<client>\r\n\t\t<address type="ipv4">192.0.2.2</address>\r\n'
            b'\t\t<address type="ipv6">' + client_v6.encode() + b'</address>\r\n' + prefix +
            b'\t\t<keepalive interval="10">\r\n\t\t\t<address type="ipv6">2001:db8:100::1</address>\r\n'
            b'\t\t</keepalive>\r\n\t</client>\r\n' + extra + b'</tunnel>\r\n')


def offer_reply(**kw):
    return tsp.frame(b"200 Success\r\n" + offer_body(**kw))


def raises(fn, exc, words=None):
    try:
        fn()
    except exc as e:
        if words:
            assert words in str(e), str(e)
        return e
    raise AssertionError("no %s" % exc.__name__)


def client(**kw):
    args = {"mode": "v6udpv4", "keepalive_interval": 10, "local_ipv4": "192.0.2.2",
            "server": "broker.example", "cnonce_source": lambda: "1795382027"}
    for k, v in kw.items():
        args[k] = v
    return tsp.TspClient(**args)


class Broker:
    """Scripted UDP broker: answers each new request with the next script entry (bytes,
    or a function(request payload) -> bytes, or None to stay silent). It echoes the
    request's header as tsps does, and answers a retransmission (same sequence number)
    with the same reply again."""

    def __init__(self, script):
        self.script = list(script)
        self.requests = []
        self._last = None

    def __call__(self, dgram):
        seq = dgram[:4]
        if self._last is not None and self._last[0] == seq:
            reply = self._last[1]
        else:
            payload = dgram[8:]
            self.requests.append(payload)
            reply = self.script.pop(0) if self.script else None
            if callable(reply):
                reply = reply(payload)
            self._last = (seq, reply)
        return None if reply is None else dgram[:8] + reply


def run_udp(c, broker, t=100.0, lose=(), steps=400):
    """Back-to-back pair: client datagrams to broker, replies back after 10 ms; `lose`
    holds the indexes (counting every datagram both ways) that the network drops.
    Time jumps to the client's timer when nothing is in flight. Returns (t, events)."""
    n = 0
    events = []
    for _ in range(steps):
        out = c.datagrams_to_send(t)
        if out:
            for d in out:
                n += 1
                if n - 1 in lose:
                    continue
                reply = broker(d)
                if reply is None:
                    continue
                n += 1
                if n - 1 in lose:
                    continue
                t += 0.01
                c.receive_datagram(reply, t)
            events.extend(c.events())
            continue
        events.extend(c.events())
        timer = c.get_timer()
        if timer is None:
            break
        t = max(t, timer)
        c.handle_timer(t)
    events.extend(c.events())
    return t, events


def kinds(events):
    return [e[0] for e in events]


def last_error(events):
    errs = [e[1] for e in events if e[0] == "error"]
    assert errs, events
    return errs[-1]


# ------------------------------------------------------------ capture vectors

def test_capture_replay_byte_for_byte():
    # Same inputs as gogoCLIENT had (mode, keepalive, address, the capture's clock):
    # every client datagram, header included, must come out identical.
    for port, msgs in CAPTURE:
        c = tsp.TspClient(**CAPTURED_KW)
        started = False
        for who, t, d in msgs:
            if who == "C":
                if not started:
                    c.connect(t)
                    started = True
                assert c.datagrams_to_send(t) == [d], (port, d)
            else:
                c.receive_datagram(d, t)
        assert c.state == tsp.UP, port
        ev = c.events()
        assert kinds(ev) == ["tunnel-offer", "tunnel-up"]
        up = ev[1][1]
        assert up["type"] == "v6udpv4" and up["server_ipv4"] == "192.0.2.1"
        assert up["client_ipv6"].startswith("2001:db8:100:0:ffff:c000:202:")
        assert up["transport"] == "udp" and up["auth"] == "ANONYMOUS" and up["version"] == "2.0.2"
        assert c.datagrams_to_send(t) == [] and c.get_timer() is None
        assert 0 < c.rtt < 0.01


def test_capture_every_control_message_decodes():
    seen = []
    for port, msgs in CAPTURE:
        for who, t, d in msgs:
            assert tsp.classify(d) == "control"
            seq, ts, payload = tsp.unpack_control(d)
            assert 0xF0 <= seq <= 0xF3 and ts < 1000
            m = tsp.decode_message(payload)
            seen.append((who, m.kind, m.code))
            if who == "S" and m.kind == "status" and m.rest:
                o = tsp.parse_offer(m.rest)
                assert o["client_ipv4"] == "192.0.2.2" and o["lifetime"] == 604800
    assert set(seen) == {("C", "line", None), ("S", "capability", None), ("S", "status", 200),
                         ("S", "empty", None)}
    assert len(seen) == 40


def test_capture_offer_fields():
    m = tsp.decode_message(session(54558)[5][2][8:])
    assert m.framed and m.kind == "status" and m.code == 200 and m.text == "Success"
    assert tsp.parse_offer(m.rest) == {
        "type": "v6udpv4", "action": "info", "lifetime": 604800, "mtu": None, "proxy": None,
        "server_ipv4": "192.0.2.1", "server_ipv6": "2001:db8:100::1",
        "client_ipv4": "192.0.2.2", "client_ipv6": "2001:db8:100:0:ffff:c000:202:d51e",
        "client_dns_name": None, "prefix": None, "prefix_len": None, "router_protocol": None,
        "dns_servers": [], "keepalive_interval": 10, "keepalive_address": "2001:db8:100::1"}


def test_capture_capability_and_header():
    d = session(54558)[1][2]
    assert tsp.unpack_control(d)[:2] == (0xF0, 0x1EF)
    m = tsp.decode_message(tsp.unpack_control(d)[2])
    assert tsp.parse_capability(m.line) == {"tunnel": ["V6UDPV4"], "auth": ["ANONYMOUS"]}
    assert tsp.pack_control(0xF0, 0x1EF, b"VERSION=2.0.2\r\n") == session(54558)[0][2]


def test_classify():
    assert tsp.classify(DATA_PACKET) == "data"
    assert tsp.classify(session(54558)[7][2]) == "control"  # the bare 8-byte ack
    assert tsp.classify(b"\xf0\x00\x00") == "junk"
    assert tsp.classify(b"") == "junk"
    assert tsp.classify(b"\x60" * 39) == "junk"
    assert tsp.classify(b"\x45" + b"\x00" * 19) == "data"
    assert tsp.classify(b"\x10" * 50) == "junk"
    raises(lambda: tsp.unpack_control(b"\xf0\x00"), RemoteProtocolError, "shorter")
    raises(lambda: tsp.unpack_control(DATA_PACKET), RemoteProtocolError, "not a TSP control")
    raises(lambda: tsp.pack_control(0x10000000, 0), LocalProtocolError)


def test_data_packets_are_not_control_input():
    c = tsp.TspClient(**CAPTURED_KW)
    c.connect(1.0)
    c.datagrams_to_send(1.0)
    c.receive_datagram(DATA_PACKET, 1.1)
    c.receive_datagram(b"junk", 1.1)
    assert c.state == tsp.WAIT_CAPABILITY and c.events() == []


# ------------------------------------------------------------ request builder

def test_request_host_matches_capture():
    body = tsp.build_request("v6udpv4", local_ipv4="192.0.2.2", keepalive_interval=10)
    assert tsp.frame(body) == session(54558)[4][2][8:]


def test_request_router_dns_v4v6_and_options():
    body = tsp.build_request("v6anyv4", local_ipv4="198.51.100.7", keepalive_interval=30,
                             host_type="router", prefix_len=56,
                             dns_server="ns1.example.net:ns2.example.net")
    assert body == (b'<tunnel action="create" type="v6anyv4" proxy="no">\r\n <client>\r\n'
                    b'  <address type="ipv4">198.51.100.7</address>\r\n'
                    b'  <keepalive interval="30">\r\n    <address type="ipv6">::</address>\r\n'
                    b'  </keepalive>\r\n  <router>\r\n   <prefix length="56"/>\r\n'
                    b'   <dns_server>\r\n     <address type="dn">ns1.example.net</address>\r\n'
                    b'     <address type="dn">ns2.example.net</address>\r\n   </dns_server>\r\n'
                    b'  </router>\r\n </client>\r\n</tunnel>\r\n')
    # router without prefix length: /48 (v6) or /24 (v4v6); keepalive 0: no element
    assert b'<prefix length="48"/>' in tsp.build_request("v6v4", "192.0.2.2", host_type="router")
    v4v6 = tsp.build_request("v4v6", local_ipv6="2001:DB8::0:5", keepalive_interval=0,
                             host_type="router", proxy=True)
    assert v4v6 == (b'<tunnel action="create" type="v4v6" proxy="yes">\r\n <client>\r\n'
                    b'  <address type="ipv6">2001:db8::5</address>\r\n  <router>\r\n'
                    b'   <prefix length="24"/>\r\n  </router>\r\n </client>\r\n</tunnel>\r\n')
    raises(lambda: tsp.build_request("v6v4", None), ConfigError, "IPv4")
    raises(lambda: tsp.build_request("v6v4", "192.0.2.300"), ConfigError, "IPv4")
    raises(lambda: tsp.build_request("v4v6", "192.0.2.1"), ConfigError, "IPv6")
    raises(lambda: tsp.build_request("v6v4", "192.0.2.1", host_type="router",
                                     dns_server="bad<name"), ConfigError, "host name")
    raises(lambda: tsp.build_request("ipip", "192.0.2.1"), ConfigError, "mode")
    assert tsp.frame(tsp.ACCEPT) == b'Content-length: 35\r\n<tunnel action="accept"></tunnel>\r\n'
    assert tsp.authenticate_line("PLAIN") == b"AUTHENTICATE PLAIN\r\n\x00"
    assert tsp.authenticate_line("PLAIN", udp=False) == b"AUTHENTICATE PLAIN\r\n"


# ------------------------------------------------------------ codec

def test_decode_message_kinds():
    m = tsp.decode_message(b"")
    assert m.kind == "empty"
    assert tsp.decode_message(b"\x00\x00").kind == "empty"
    m = tsp.decode_message(b"300 Authentication failed\r\n")
    assert (m.kind, m.code, m.text, m.framed) == ("status", 300, "Authentication failed", False)
    m = tsp.decode_message(b"Content-length: 27\r\n303 Unsupported tunnel type\r\n")
    assert (m.kind, m.code, m.framed) == ("status", 303, True)
    m = tsp.decode_message(b"CONTENT-LENGTH: 13\r\n200 Success\r\n\r\n\x00")
    assert m.code == 200  # case-insensitive header, trailing whitespace/NUL tolerated
    assert tsp.decode_message(b"200").code == 200
    assert tsp.decode_message(b"1200 Redirect\r\n<x/>").code == 1200
    assert tsp.decode_message(b"cmVhbG09InIi\r\n").kind == "line"
    assert tsp.decode_message(b"20 x\r\n").kind == "line"
    assert tsp.decode_message(b"200x\r\n").kind == "line"
    for bad, words in ((b"Content-length: 30\r\n200 Success\r\n", "truncated"),
                       (b"Content-length: 5\r\n200 Success\r\n", "more than Content-length"),
                       (b"Content-length: x\r\n", "not a number"),
                       (b"Content-length: -1\r\n", "not a number"),
                       (b"Content-length: 99999999\r\n", "out of range"),
                       (b"Content-length: 0\r\n", "empty Content-length"),
                       (b"Content-length: 5", "without a line end"),
                       (b"\xff\xfe\r\n", "UTF-8"),
                       (b"200 Su\x01ccess\r\n", "control character"),
                       (b"x" * 5000, "longer than")):
        raises(lambda bad=bad: tsp.decode_message(bad), RemoteProtocolError, words)


def test_split_stream():
    s = b"CAPABILITY TUNNEL=V6V4 AUTH=PLAIN\r\n200 Success\r\nContent-length: 13\r\n200 Success\r\nrest"
    m1, s = tsp.split_stream(s)
    assert m1 == b"CAPABILITY TUNNEL=V6V4 AUTH=PLAIN\r\n"
    m2, s = tsp.split_stream(s)
    assert m2 == b"200 Success\r\n"
    m3, s = tsp.split_stream(s)
    assert m3 == b"Content-length: 13\r\n200 Success\r\n" and s == b"rest"
    assert tsp.split_stream(s) is None
    assert tsp.split_stream(b"") is None
    assert tsp.split_stream(b"Conte") is None
    assert tsp.split_stream(b"Content-length: 13\r\n200 Su") is None
    assert tsp.split_stream(b"\x00\x00200 OK\r\n") == (b"200 OK\r\n", b"")
    red = b'1200 Redirect\r\n<tunnel action="info"><broker><address type="ipv4">192.0.2.9'
    assert tsp.split_stream(red) is None
    full = red + b"</address></broker></tunnel>\r\n"
    assert tsp.split_stream(full + b"x") == (full, b"x")
    raises(lambda: tsp.split_stream(b"x" * 5000), RemoteProtocolError, "longer than")
    raises(lambda: tsp.split_stream(b"Content-length: " + b"1" * 60), RemoteProtocolError)


def test_parse_status_and_capability():
    assert tsp.parse_status("200 Success") == (200, "Success")
    assert tsp.parse_status("1200\tRedirect ") == (1200, "Redirect")
    assert tsp.parse_status("530") == (530, "")
    for s in ("", "abc", "20 x", "200x", "-200 x", "123456 x"):
        assert tsp.parse_status(s) is None, s
    caps = tsp.parse_capability("CAPABILITY TUNNEL=V6V4 TUNNEL=v6udpv4 AUTH=DIGEST-MD5 "
                                "AUTH=PLAIN AUTH=ANONYMOUS AUTH=PLAIN JUNK X= =Y")
    assert caps == {"tunnel": ["V6V4", "V6UDPV4"], "auth": ["DIGEST-MD5", "PLAIN", "ANONYMOUS"]}
    assert tsp.parse_capability("CAPABILITY") == {"tunnel": [], "auth": []}
    raises(lambda: tsp.parse_capability("200 Success"), RemoteProtocolError)


def test_offer_router_prefix_mtu_dns_and_errors():
    pfx = (b'\t\t<router protocol="rip">\r\n\t\t\t<prefix length="56">2001:0db8:1234:5600:0000:0000:0000:0000'
           b'</prefix>\r\n\t\t\t<dns_server>\r\n\t\t\t\t<address type="ipv6">2001:db8::53</address>\r\n'
           b'\t\t\t\t<address type="ipv4">192.0.2.53</address>\r\n\t\t\t</dns_server>\r\n'
           b'\t\t</router>\r\n')
    o = tsp.parse_offer(offer_body(prefix=pfx).replace(b'lifetime="604800"', b'mtu="1280"'))
    assert (o["prefix"], o["prefix_len"], o["router_protocol"]) == ("2001:db8:1234:5600::", 56, "rip")
    assert o["dns_servers"] == ["2001:db8::53", "192.0.2.53"]
    assert o["mtu"] == 1280 and o["lifetime"] is None
    # prefix given as its groups only
    short = pfx.replace(b"2001:0db8:1234:5600:0000:0000:0000:0000", b"2001:db8:1234:5600")
    assert tsp.parse_offer(offer_body(prefix=short))["prefix"] == "2001:db8:1234:5600::"
    v4v6 = (b'<tunnel action="info" type="v4v6"><server><address type="ipv4">198.51.100.1</address>'
            b'<address type="ipv6">2001:db8::1</address></server><client>'
            b'<address type="ipv4">198.51.100.2</address><address type="ipv6">2001:db8::2</address>'
            b'<router><prefix length="24">198.51.100.77</prefix></router></client></tunnel>')
    o = tsp.parse_offer(v4v6)
    assert (o["type"], o["prefix"], o["prefix_len"]) == ("v4v6", "198.51.100.0", 24)
    bad = [
        (offer_body().replace(b"<server>", b"<srv>").replace(b"</server>", b"</srv>"), "no <server>"),
        (offer_body().replace(b'type="ipv4">192.0.2.1<', b'type="ipv4">192.0.2.256<'), "not an IPv4"),
        (offer_body().replace(b"2001:db8:100:0:ffff:c000:202:d51e", b"2001:db8::g"), "not an IPv6"),
        (offer_body().replace(b'<address type="ipv6">2001:db8:100::1</address>\r\n\t</server>',
                              b'</server>'), "no server IPv6"),
        (offer_body(ttype="ipip"), "unknown tunnel type"),
        (offer_body().replace(b'"604800"', b'"-5"'), "not a number"),
        (offer_body().replace(b'interval="10"', b'interval="99999"'), "out of range"),
        (offer_body(prefix=b'<router><prefix length="129">2001:db8::</prefix></router>'), "out of range"),
        (offer_body(prefix=b'<router><prefix>2001:db8::</prefix></router>'), "no length"),
        (offer_body(prefix=b'<router><prefix length="48">zz</prefix></router>'), "not an address"),
        (b"<offer/>", "not <tunnel>"),
        (b"", "no XML"),
        (offer_body()[:-12], "malformed XML"),
    ]
    for doc, words in bad:
        raises(lambda doc=doc: tsp.parse_offer(doc), RemoteProtocolError, words)


def test_parse_redirect():
    doc = (b'<tunnel action="info"><broker_redirect><broker><address type="ipv4">192.0.2.9</address>'
           b'</broker><broker><address type="ipv6">2001:DB8::9</address></broker>'
           b'<broker><address type="dn">Broker2.Example.NET</address></broker>'
           b'<broker><address type="ipv4">not-an-ip</address></broker>'
           b'<broker><address type="ipv4">192.0.2.9</address></broker>'
           b'<broker>203.0.113.5</broker></broker_redirect></tunnel>')
    assert tsp.parse_redirect(doc) == ["192.0.2.9", "2001:db8::9", "broker2.example.net",
                                       "203.0.113.5"]
    raises(lambda: tsp.parse_redirect(b"<tunnel/>"), RemoteProtocolError, "no usable broker")
    raises(lambda: tsp.parse_redirect(b"<tunnel><broker>"), RemoteProtocolError, "malformed")
    many = b"<t>" + b"".join(b"<broker>192.0.2.%d</broker>" % i for i in range(40)) + b"</t>"
    assert len(tsp.parse_redirect(many)) == tsp.MAX_BROKERS


def test_every_status_code_has_plain_words():
    for code in (300, 301, 302, 303, 310, 500, 501, 502, 506, 507, 509, 518, 520, 521, 522, 530):
        words, fatal = tsp.status_message(code)
        assert words and str(code) not in words and fatal in (True, False)
    assert tsp.status_message(300)[1] and not tsp.status_message(530)[1]
    assert not tsp.status_message(301)[1] and not tsp.status_message(310)[1]
    assert tsp.status_message(1200) == ("the broker redirected us to another broker (status 1200)", False)
    assert tsp.status_message(499) == ("the broker answered with unknown status 499", False)


# ------------------------------------------------------------ reliable UDP

def test_rudp_retransmit_backoff_and_rtt():
    r = tsp.ReliableUdp(rto_initial=1.0, max_tries=4)
    d = r.send(b"VERSION=2.0.2\r\n", 10.25)
    assert d[:8] == b"\xf0\x00\x00\xf0\x00\x00\x00\xfa"  # seq 240, 250 ms into second 10
    assert r.get_timer() == 11.25
    assert r.handle_timer(11.0) is None
    d2 = r.handle_timer(11.25)
    assert d2[:4] == d[:4] and d2[4:8] == b"\x00\x00\x04\xe2" and d2[8:] == d[8:]  # ts 1250
    assert r.get_timer() == 13.25  # doubled
    d3 = r.handle_timer(13.25)
    assert r.get_timer() == 17.25
    # the answer echoes the second send: the RTT is measured against that one (0.1 s)
    assert r.receive(d2[:8] + b"CAPABILITY\r\n", 11.35) == b"CAPABILITY\r\n"
    assert abs(r.srtt - 0.1) < 0.002 and r.rto == 1.0  # clamped to rto_min
    assert r.has_peer and r.retransmissions == 2 and r.get_timer() is None
    # duplicate of an older answer: ignored
    assert r.receive(d3[:8] + b"CAPABILITY\r\n", 11.4) is None and r.stale == 1
    raises(lambda: r.receive(b"\x60" * 8, 11.5), RemoteProtocolError)
    e = r.send(b"x", 12.0)
    assert e[:4] == b"\xf0\x00\x00\xf1"
    raises(lambda: r.send(b"y", 12.0), LocalProtocolError, "still waiting")
    for t in (13.0, 15.0, 19.0):
        assert r.handle_timer(t) is not None
    assert r.handle_timer(27.0) is None and r.exhausted and r.get_timer() is None


def test_rudp_slow_path_raises_rto():
    r = tsp.ReliableUdp(rto_initial=1.0)
    for i in range(6):
        d = r.send(b"x", i * 10.0)
        assert r.receive(d[:8], i * 10.0 + 2.5) == b""
    assert 2.4 < r.srtt < 2.6 and 2.5 < r.rto <= 8.0
    r.reset()
    assert r.srtt is None and r.rto == 1.0 and not r.has_peer


# ------------------------------------------------------------ state machine

def test_plain_over_udp():
    def creds(p):
        assert p == b"\x00alice\x00wonderland\r\n"
        return b"200 Success\r\n"
    b = Broker([b"CAPABILITY TUNNEL=V6UDPV4 AUTH=PLAIN AUTH=ANONYMOUS\r\n", b"", creds,
                offer_reply(), b""])
    c = client(username="alice", password="wonderland", auth="plain")
    c.connect(100.0)
    _t, ev = run_udp(c, b)
    assert kinds(ev) == ["tunnel-offer", "tunnel-up"] and c.state == tsp.UP
    assert b.requests[1] == b"AUTHENTICATE PLAIN\r\n\x00"
    assert ev[1][1]["auth"] == "PLAIN"


def digest_broker(caps=b"CAPABILITY TUNNEL=V6UDPV4 TUNNEL=V6V4 AUTH=DIGEST-MD5 AUTH=PLAIN\r\n",
                  server="broker.example", rspauth=None, final=b"200 Success\r\n"):
    """A broker side of TSP's DIGEST-MD5 that checks the client's response itself."""
    nonce = "T0E2TUc5dEVRR20yaGg="
    ch = b'realm="cdpatsps",nonce="' + nonce.encode() + b'",qop="auth",algorithm=md5-sess,charset=utf-8'
    state = {}

    def check(p):
        got = sasl.parse_directives(sasl.b64decode(p))
        ref = sasl.DigestMD5("alice", "wonderland", server)
        want = sasl.parse_directives(ref.response(sasl.parse_directives(ch), got["cnonce"]))
        assert got == want, (got, want)
        state["cnonce"] = got["cnonce"]
        return sasl.b64encode(rspauth or ("rspauth=" + ref._expected).encode()) + b"\r\n"

    def poll(p):
        assert p == b""  # the client fetches the status with an empty message
        return final
    return Broker([caps, sasl.b64encode(ch) + b"\r\n", check, poll, offer_reply(), b""]), state


def test_digest_md5_over_udp():
    b, st = digest_broker()
    c = client(username="alice", password="wonderland", auth="any")
    c.connect(100.0)
    _t, ev = run_udp(c, b)
    assert kinds(ev) == ["tunnel-offer", "tunnel-up"], ev
    assert b.requests[1] == b"AUTHENTICATE DIGEST-MD5\r\n\x00"
    assert st["cnonce"] == "1795382027" and ev[1][1]["auth"] == "DIGEST-MD5"
    # cnonce from rand when no cnonce_source is given
    b, st = digest_broker()
    c = client(username="alice", password="wonderland", cnonce_source=None, rand=lambda: 0.5)
    c.connect(100.0)
    _t, ev = run_udp(c, b)
    assert c.state == tsp.UP and st["cnonce"] == "80" * 16


def test_digest_md5_bad_rspauth_and_refusals():
    b, _ = digest_broker(rspauth=b"rspauth=00000000000000000000000000000000")
    c = client(username="alice", password="wonderland", auth="digest-md5")
    c.connect(100.0)
    _t, ev = run_udp(c, b)
    err = last_error(ev)
    assert c.state == tsp.FAILED and err["fatal"] and "rspauth" in err["message"]
    assert "wonderland" not in repr(ev) and "wonderland" not in repr(c)
    b, _ = digest_broker(final=b"300 Authentication failed\r\n")
    c = client(username="alice", password="wonderland")
    c.connect(100.0)
    _t, ev = run_udp(c, b)
    assert last_error(ev) == {"code": 300, "fatal": True, "message": tsp.STATUS[300][0]}
    # challenge refused outright
    b = Broker([b"CAPABILITY TUNNEL=V6UDPV4 AUTH=DIGEST-MD5\r\n", b"300 Authentication failed\r\n"])
    c = client(username="alice", password="wonderland")
    c.connect(100.0)
    _t, ev = run_udp(c, b)
    assert last_error(ev)["code"] == 300
    # a challenge that is not base64
    b = Broker([b"CAPABILITY TUNNEL=V6UDPV4 AUTH=DIGEST-MD5\r\n", b"realm=x!\r\n"])
    c = client(username="alice", password="wonderland")
    c.connect(100.0)
    _t, ev = run_udp(c, b)
    err = last_error(ev)
    assert err["code"] is None and "malformed" in err["message"] and not err["fatal"]


def test_auth_any_choice():
    def chosen(auth_line, username="alice", auth="any"):
        b = Broker([b"CAPABILITY TUNNEL=V6UDPV4 " + auth_line + b"\r\n", None])
        c = client(username=username, password="wonderland" if username else "", auth=auth)
        c.connect(100.0)
        run_udp(c, b, steps=3)
        return c.mechanism, b.requests[1:2], c
    assert chosen(b"AUTH=ANONYMOUS AUTH=PLAIN AUTH=DIGEST-MD5")[0] == "DIGEST-MD5"
    assert chosen(b"AUTH=ANONYMOUS AUTH=PLAIN")[0] == "PLAIN"
    assert chosen(b"AUTH=ANONYMOUS")[0] == "ANONYMOUS"
    assert chosen(b"AUTH=DIGEST-MD5 AUTH=ANONYMOUS", username="")[0] == "ANONYMOUS"
    m, _req, c = chosen(b"AUTH=PLAIN", auth="digest-md5")
    assert m is None and c.state == tsp.FAILED
    err = c.error
    assert err["fatal"] and "no common authentication" in err["message"] and "PLAIN" in err["message"]
    _m, _req, c = chosen(b"AUTH=DIGEST-MD5", username="")
    assert c.state == tsp.FAILED


def test_tunnel_type_not_offered():
    b = Broker([b"CAPABILITY TUNNEL=V6V4 AUTH=ANONYMOUS\r\n"])
    c = client()
    c.connect(100.0)
    _t, ev = run_udp(c, b)
    err = last_error(ev)
    assert err["fatal"] and "v6udpv4" in err["message"] and "v6v4" in err["message"]
    # v6anyv4 over UDP takes either; over TCP only v6v4
    for caps, ok in ((b"TUNNEL=V6UDPV4", True), (b"TUNNEL=V6V4", True), (b"TUNNEL=V4V6", False)):
        b = Broker([b"CAPABILITY " + caps + b" AUTH=ANONYMOUS\r\n", None])
        c = client(mode="v6anyv4")
        c.connect(100.0)
        run_udp(c, b, steps=3)
        assert (c.state != tsp.FAILED) == ok, caps


def test_status_errors_in_every_stage():
    caps = b"CAPABILITY TUNNEL=V6UDPV4 AUTH=ANONYMOUS\r\n"
    ok = b"200 Success\r\n"
    for code in sorted(tsp.STATUS):
        if code == 200:
            continue
        line = ("%d Some text\r\n" % code).encode()
        for script in ([line], [caps, line], [caps, ok, tsp.frame(line)], [caps, ok, line],
                       [caps, ok, offer_reply(), line]):
            c = client(version="2.0.0")
            c.connect(100.0)
            t, ev = run_udp(c, Broker(script))
            err = last_error(ev)
            assert c.state == tsp.FAILED and err["code"] == code, (code, script)
            assert err["message"].startswith(tsp.STATUS[code][0])
            assert err["fatal"] == tsp.STATUS[code][1]
            assert c.get_timer() is None and c.datagrams_to_send(t) == []
    # unknown status
    c = client()
    c.connect(100.0)
    t, ev = run_udp(c, Broker([b"777 Whatever\r\n"]))
    assert last_error(ev) == {"code": 777, "fatal": False,
                              "message": "the broker answered with unknown status 777"}


def test_version_fallback():
    c = client()
    c.connect(100.0)
    t, ev = run_udp(c, Broker([b"302 Unsupported client version\r\n"]))
    assert ev == [("version-fallback", {"version": "2.0.1", "rejected": "2.0.2"})]
    assert c.state == tsp.RESTART and c.get_timer() is None
    c.connect(t + 1)
    b = Broker([b"CAPABILITY TUNNEL=V6UDPV4 AUTH=ANONYMOUS\r\n", b"200 Success\r\n",
                offer_reply(), b""])
    first = []

    def spy(d):
        first.append(d)
        return b(d)
    t, ev = run_udp(c, spy, t=t + 1)
    assert first[0][:4] == b"\xf0\x00\x00\xf0" and first[0][8:] == b"VERSION=2.0.1\r\n"
    assert c.state == tsp.UP and ev[-1][1]["version"] == "2.0.1"
    c2 = client(version="2.0.1")
    c2.connect(1.0)
    t, ev = run_udp(c2, Broker([b"302 x\r\n"]), t=1.0)
    assert c2.version == "2.0.0" and c2.state == tsp.RESTART
    c2.connect(t)
    t, ev = run_udp(c2, Broker([b"302 x\r\n"]), t=t)
    err = last_error(ev)
    assert c2.state == tsp.FAILED and err["code"] == 302 and err["fatal"] and "2.0.0" in err["message"]
    raises(lambda: c2.connect(t), LocalProtocolError, "make a new TspClient")


def test_redirect_in_each_stage():
    red = (b'1200 Redirect\r\n<tunnel action="info"><broker><address type="ipv4">192.0.2.9'
           b'</address></broker><broker><address type="dn">b2.example.net</address></broker></tunnel>\r\n')
    caps = b"CAPABILITY TUNNEL=V6UDPV4 AUTH=ANONYMOUS\r\n"
    for script in ([red], [caps, red], [caps, b"200 Success\r\n", tsp.frame(red)]):
        c = client()
        c.connect(100.0)
        _t, ev = run_udp(c, Broker(script))
        assert ev == [("redirect", ["192.0.2.9", "b2.example.net"])], ev
        assert c.state == tsp.REDIRECTED and c.brokers == ["192.0.2.9", "b2.example.net"]
    c = client()
    c.connect(100.0)
    _t, ev = run_udp(c, Broker([b"1000 Redirect\r\n<tunnel/>"]))
    err = last_error(ev)
    assert err["code"] == 1000 and "no usable broker list" in err["message"]


def test_lossy_network_still_completes():
    caps = b"CAPABILITY TUNNEL=V6UDPV4 AUTH=ANONYMOUS\r\n"
    for lose in ((0,), (1,), (0, 1, 2), (3, 5, 6), (0, 2, 4, 6, 8), (7,), (6, 7, 8)):
        c = client()
        c.connect(100.0)
        b = Broker([caps, b"200 Success\r\n", offer_reply(), b""])
        t, ev = run_udp(c, b, lose=lose)
        assert c.state == tsp.UP, (lose, ev)
        assert c.retransmissions >= 1
        assert t < 100.0 + 30


def test_no_answer_udp():
    c = client(mode="v6anyv4", max_tries=3)
    c.connect(100.0)
    t, ev = run_udp(c, Broker([None]))
    assert ev == [("need-tcp", {"reason": "no answer over UDP after 3 tries"})]
    assert c.state == tsp.RESTART and t == 100.0 + 1 + 2 + 4
    # the caller switches to TCP on the same object
    c.connect(t, transport="tcp")
    assert c.data_to_send() == b"VERSION=2.0.2\r\n"
    raises(lambda: c.datagrams_to_send(t), LocalProtocolError)
    # v6udpv4 has no TCP fallback
    c = client(max_tries=2)
    c.connect(100.0)
    t, ev = run_udp(c, Broker([None]))
    err = last_error(ev)
    assert c.state == tsp.FAILED and "no answer from the broker over UDP" in err["message"]
    # a broker that answered once and then went silent
    c = client(max_tries=2)
    c.connect(100.0)
    t, ev = run_udp(c, Broker([b"CAPABILITY TUNNEL=V6UDPV4 AUTH=ANONYMOUS\r\n", None]))
    assert "stopped answering" in last_error(ev)["message"]


def test_hostile_replies_fail_cleanly():
    caps = b"CAPABILITY TUNNEL=V6UDPV4 AUTH=ANONYMOUS\r\n"
    ok = b"200 Success\r\n"
    cases = [
        [b"HELLO\r\n"],
        [b"200 Success\r\n"],
        [caps, ok, ok],
        [b""],
        [caps, b"CAPABILITY AUTH=PLAIN\r\n"],
        [caps, ok, b"Content-length: 500\r\n200 Success\r\n<tunnel/>"],
        [caps, ok, b"Content-length: 5\r\n200 Success\r\n<tunnel/>"],
        [caps, ok, tsp.frame(b"200 Success\r\n<tunnel><server></tunnel>")],
        [caps, ok, tsp.frame(b"200 Success\r\n" + b"<a>" * 40)],
        [caps, ok, tsp.frame(b"200 Success\r\n")],
        [caps, ok, tsp.frame(b"200 Success\r\n" + offer_body(ttype="v4v6"))],
        [caps, ok, offer_reply(), b"hello\r\n"],
        [caps, ok, b"\x00" * 3 + b"\xff" * 100],
    ]
    for script in cases:
        c = client()
        c.connect(100.0)
        t, ev = run_udp(c, Broker(script))
        err = last_error(ev)
        assert c.state == tsp.FAILED and err["code"] is None and not err["fatal"], script
        assert "malformed" in err["message"], err
        # a failed client stays failed and quiet
        c.receive_datagram(b"\xf0\x00\x00\xf0\x00\x00\x00\x00200 Success\r\n", t)
        c.handle_timer(t + 100)
        assert c.events() == [] and c.state == tsp.FAILED and c.get_timer() is None


def test_router_offer_needs_prefix_and_nat_detection():
    caps = b"CAPABILITY TUNNEL=V6V4 TUNNEL=V6UDPV4 AUTH=ANONYMOUS\r\n"
    ok = b"200 Success\r\n"
    pfx = b'\t\t<router><prefix length="48">2001:db8:77::</prefix></router>\r\n'
    c = client(mode="v6anyv4", host_type="router", local_ipv4="198.51.100.20")
    c.connect(100.0)
    b = Broker([caps, ok, offer_reply(ttype="v6v4", prefix=pfx), b""])
    _t, ev = run_udp(c, b)
    assert c.state == tsp.UP
    assert b'<router>\r\n   <prefix length="48"/>' in b.requests[2]
    up = ev[-1][1]
    assert (up["type"], up["prefix"], up["prefix_len"]) == ("v6v4", "2001:db8:77::", 48)
    assert up["nat_detected"]  # broker saw 192.0.2.2, we are 198.51.100.20
    c = client(host_type="router")
    c.connect(100.0)
    _t, ev = run_udp(c, Broker([caps, ok, offer_reply(), b""]))
    assert "has none" in last_error(ev)["message"]


def test_tcp_session_in_pieces():
    c = client(mode="v6v4", transport="tcp", username="alice", password="wonderland", auth="plain")
    c.connect(5.0)
    assert c.get_timer() == 35.0
    assert c.data_to_send() == b"VERSION=2.0.2\r\n"
    replies = [b"CAPABILITY TUNNEL=V6V4 AUTH=PLAIN\r\n", b"200 Success\r\n",
               offer_reply(ttype="v6v4")]
    sent = []
    t = 5.0
    for r in replies:
        for i in range(len(r)):
            t += 0.001
            c.receive_data(r[i:i + 1], t)
        sent.append(c.data_to_send())
    assert sent[0] == b"AUTHENTICATE PLAIN\r\n\x00alice\x00wonderland\r\n"
    assert sent[1] == tsp.frame(tsp.build_request("v6v4", "192.0.2.2", keepalive_interval=10))
    assert sent[2] == tsp.frame(tsp.ACCEPT)
    assert c.state == tsp.UP and c.get_timer() is None
    ev = c.events()
    assert kinds(ev) == ["tunnel-offer", "tunnel-up"] and ev[1][1]["transport"] == "tcp"
    c.receive_data(b"", t)  # closing after UP is fine
    assert c.state == tsp.UP and c.events() == []


def test_tcp_digest_all_at_once_and_failures():
    b, st = digest_broker(caps=b"CAPABILITY TUNNEL=V6V4 AUTH=DIGEST-MD5\r\n")
    c = client(mode="v6anyv4", transport="tcp", username="alice", password="wonderland")
    c.connect(0.0)
    out = c.data_to_send()
    seq = 0
    while out:  # VERSION, AUTHENTICATE, response: each answered by the broker
        seq += 1
        reply = b(tsp.pack_control(seq, 0, out))
        c.receive_data(reply[8:], 1.0)
        out = c.data_to_send()
    assert out == b"" and c.state == tsp.WAIT_DIGEST_OK and len(b.requests) == 3
    assert b.requests[1] == b"AUTHENTICATE DIGEST-MD5\r\n"  # no NUL over TCP
    assert c.get_timer() == 31.0
    c.receive_data(b"200 Success\r\n" + offer_reply(ttype="v6v4"), 2.0)
    assert c.data_to_send().startswith(b"Content-length: ")
    assert c.state == tsp.UP and c.mechanism == "DIGEST-MD5", c.events()
    assert st["cnonce"] == "1795382027"
    # EOF before UP, timeout, garbage
    c = client(mode="v6v4", transport="tcp")
    c.connect(0.0)
    c.receive_data(b"", 1.0)
    assert "closed the connection" in c.error["message"]
    c = client(mode="v6v4", transport="tcp", tcp_timeout=10)
    c.connect(0.0)
    c.handle_timer(9.9)
    assert c.state == tsp.WAIT_CAPABILITY
    c.handle_timer(10.0)
    assert c.state == tsp.FAILED and "within 10 s" in c.error["message"]
    c = client(mode="v6v4", transport="tcp")
    c.connect(0.0)
    c.receive_data(b"x" * 9000, 1.0)
    assert c.state == tsp.FAILED and "malformed" in c.error["message"]


def test_api_misuse_and_config_errors():
    c = client()
    raises(lambda: c.receive_datagram(b"\xf0" * 8, 0), LocalProtocolError, "before connect")
    raises(lambda: c.receive_data(b"x", 0), LocalProtocolError, "UDP session")
    raises(lambda: c.data_to_send(), LocalProtocolError)
    c.connect(0.0)
    raises(lambda: c.connect(0.0), LocalProtocolError, "connect() in state")
    raises(lambda: client(transport="tcp"), ConfigError, "v6udpv4")
    raises(lambda: client(auth="kerberos"), ConfigError, "auth")
    raises(lambda: client(auth="plain"), ConfigError, "username")
    raises(lambda: client(mode="6in4"), ConfigError, "mode")
    raises(lambda: client(version="3.0.0"), ConfigError, "version")
    raises(lambda: client(local_ipv4="192.0.2"), ConfigError, "IPv4")
    raises(lambda: client(prefix_len=0), ConfigError, "prefix")
    raises(lambda: client(keepalive_interval=-1), ConfigError, "keepalive")
    raises(lambda: client(host_type="server"), ConfigError, "host_type")
    raises(lambda: client(username="a", password="x\x00y"), ConfigError, "NUL")
    raises(lambda: client(username="a", password="p", server=""), ConfigError, "server")
    raises(lambda: client(username="a", password="p", cnonce_source=None), LocalProtocolError)
    e = raises(lambda: client(username="a", password="sekr\x00t"), ConfigError)
    assert "sekr" not in str(e)
    # local address given at connect time (the adapter learns its source address)
    c = client(local_ipv4=None)
    c.connect(0.0, local_ipv4="192.0.2.77")
    _t, ev = run_udp(c, Broker([b"CAPABILITY TUNNEL=V6UDPV4 AUTH=ANONYMOUS\r\n", b"200 OK\r\n",
                               offer_reply(), b""]), t=0.0)
    assert c.state == tsp.UP and ev[-1][1]["nat_detected"]
    raises(lambda: client().connect(0, transport="tcp"), LocalProtocolError)


def test_secrets_stay_out_of_reprs_and_events():
    b = Broker([b"CAPABILITY TUNNEL=V6UDPV4 AUTH=PLAIN\r\n", b"",
                b"300 Authentication failed\r\n"])
    c = client(username="alice", password="Sup3r-s3cret", auth="plain")
    c.connect(0.0)
    _t, ev = run_udp(c, b, t=0.0)
    assert "Sup3r" not in repr(ev) and "Sup3r" not in repr(c) and "Sup3r" not in repr(c.error)
    assert ev[-1][1]["code"] == 300
