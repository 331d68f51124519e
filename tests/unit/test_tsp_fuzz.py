"""Hypothesis fuzzing of the TSP core: every parser returns a value or raises
RemoteProtocolError, nothing else; the client state machine survives any broker input
and ends in a defined state."""
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cpe_tunnel.core import sasl, tsp, tsp_xml
from cpe_tunnel.core.errors import RemoteProtocolError

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

OFFER = (b'<tunnel action="info" type="v6udpv4" lifetime="604800">\r\n\t<server>\r\n'
         b'\t\t<address type="ipv4">192.0.2.1</address>\r\n'
         b'\t\t<address type="ipv6">2001:db8:100::1</address>\r\n\t</server>\r\n\t<client>\r\n'
         b'\t\t<address type="ipv4">192.0.2.2</address>\r\n'
         b'\t\t<address type="ipv6">2001:db8:100:0:ffff:c000:202:d51e</address>\r\n'
         b'\t\t<router><prefix length="48">2001:db8:77::</prefix><dns_server>'
         b'<address type="ipv6">2001:db8::53</address></dns_server></router>'
         b'\t\t<keepalive interval="10">\r\n\t\t\t<address type="ipv6">2001:db8:100::1</address>\r\n'
         b'\t\t</keepalive>\r\n\t</client>\r\n</tunnel>\r\n')
REDIRECT = (b'<tunnel action="info"><broker><address type="ipv4">192.0.2.9</address></broker>'
            b'<broker><address type="dn">b.example.net</address></broker></tunnel>')
TOKENS = [b"<", b">", b"</", b"/>", b"<!--", b"-->", b"<?xml ?>", b"<![CDATA[", b"]]>", b"&amp;",
          b"&#x41;", b"&", b";", b'"', b"'", b"=", b" ", b"\r\n", b"tunnel", b"address",
          b'type="ipv4"', b"192.0.2.1", b"2001:db8::1", b"\x00", b"\xff", b"<!DOCTYPE"]


def mutate(base):
    """Documents near a valid one: byte flips, cuts, insertions of XML-ish tokens."""
    return st.one_of(
        st.builds(lambda i, b: base[:i % (len(base) + 1)] + bytes([b]) + base[i % (len(base) + 1) + 1:],
                  st.integers(0, 10 ** 6), st.integers(0, 255)),
        st.builds(lambda i: base[:i % (len(base) + 1)], st.integers(0, 10 ** 6)),
        st.builds(lambda i, t: base[:i % (len(base) + 1)] + t + base[i % (len(base) + 1):],
                  st.integers(0, 10 ** 6), st.sampled_from(TOKENS)),
        st.lists(st.sampled_from(TOKENS), max_size=40).map(b"".join),
        st.binary(max_size=400),
    )


def only_rpe(fn, *args):
    try:
        return fn(*args)
    except RemoteProtocolError as e:
        assert e.reason and isinstance(e.reason, str)
        return None


@FAST
@given(mutate(OFFER))
def test_xml_parse_total(doc):
    root = only_rpe(tsp_xml.parse, doc)
    if root is not None:
        assert isinstance(root.tag, str) and root.iter()[0] is root


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=300))
def test_xml_parse_text_total(doc):
    only_rpe(tsp_xml.parse, doc)


@FAST
@given(mutate(OFFER))
def test_parse_offer_total(doc):
    o = only_rpe(tsp.parse_offer, doc)
    if o is not None:
        assert o["type"] in ("v6v4", "v6udpv4", "v4v6", "v6anyv4")
        assert o["prefix_len"] is None or 0 <= o["prefix_len"] <= 128


@FAST
@given(mutate(REDIRECT))
def test_parse_redirect_total(doc):
    out = only_rpe(tsp.parse_redirect, doc)
    if out is not None:
        assert 1 <= len(out) <= tsp.MAX_BROKERS and all(isinstance(x, str) and x for x in out)


MSG_BASES = [b"Content-length: 13\r\n200 Success\r\n", b"CAPABILITY TUNNEL=V6V4 AUTH=PLAIN\r\n",
             b"1200 Redirect\r\n" + REDIRECT, b"300 Authentication failed\r\n",
             b"Content-length: 20\r\n200 Success\r\n<a/>\r\n"]


@FAST
@given(st.sampled_from(MSG_BASES).flatmap(mutate))
def test_decode_message_and_split_stream_total(data):
    m = only_rpe(tsp.decode_message, data)
    if m is not None:
        assert m.kind in ("empty", "capability", "status", "line")
        if m.kind == "status":
            assert 0 <= m.code <= 99999
        if m.kind == "capability":
            caps = tsp.parse_capability(m.line)
            assert set(caps) == {"tunnel", "auth"}
    got = only_rpe(tsp.split_stream, data)
    if got is not None:
        msg, rest = got
        assert msg and msg + rest == data.lstrip(b"\x00")


@FAST
@given(st.text(max_size=40))
def test_parse_status_total(line):
    st_ = tsp.parse_status(line)
    assert st_ is None or (isinstance(st_[0], int) and isinstance(st_[1], str))


@FAST
@given(st.binary(max_size=64))
def test_unpack_control_total(d):
    got = only_rpe(tsp.unpack_control, d)
    assert tsp.classify(d) in ("control", "data", "junk")
    if got is not None:
        assert tsp.classify(d) == "control"
        assert tsp.pack_control(got[0], got[1], got[2]) == d


CHALLENGE = b'realm="cdpatsps",nonce="T0E2TUc5",qop="auth",algorithm=md5-sess,charset=utf-8'


@FAST
@given(mutate(CHALLENGE))
def test_sasl_challenge_total(data):
    ch = only_rpe(sasl.parse_directives, data)
    if ch is not None:
        d = sasl.DigestMD5("alice", "wonderland", "broker.example")
        out = only_rpe(d.response, ch, "c1")
        if out is not None:
            assert b"wonderland" not in out and b'digest-uri="tsp/broker.example"' in out
    only_rpe(sasl.b64decode, data)


def _client(**kw):
    args = {"mode": "v6anyv4", "local_ipv4": "192.0.2.2", "username": "alice",
            "password": "wonderland", "server": "broker.example", "cnonce_source": lambda: "c1",
            "max_tries": 3}
    args.update(kw)
    return tsp.TspClient(**args)


GOOD_REPLIES = [b"CAPABILITY TUNNEL=V6V4 TUNNEL=V6UDPV4 AUTH=PLAIN AUTH=ANONYMOUS AUTH=DIGEST-MD5\r\n",
                sasl.b64encode(CHALLENGE) + b"\r\n", b"", b"200 Success\r\n",
                tsp.frame(b"200 Success\r\n" + OFFER), b"1200 Redirect\r\n" + REDIRECT]
reply = st.one_of(st.sampled_from(GOOD_REPLIES), st.sampled_from(GOOD_REPLIES).flatmap(mutate))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(reply, st.booleans(), st.booleans()), max_size=8),
       st.sampled_from(["any", "plain", "anonymous", "digest-md5"]))
def test_udp_client_survives_any_broker(script, auth):
    c = _client(auth=auth)
    t = 1.0
    c.connect(t)
    for payload, answer_right_seq, tick in script:
        out = c.datagrams_to_send(t)
        hdr = out[-1][:8] if out else b"\xf0\x00\x00\x01\x00\x00\x00\x00"
        if not answer_right_seq:
            hdr = b"\xf0\x00\x00\x77" + hdr[4:]
        t += 0.01
        c.receive_datagram(hdr + payload, t)
        if tick and c.get_timer() is not None:
            t = c.get_timer()
            c.handle_timer(t)
    for _ in range(20):  # whatever happened, the timers run out in bounded steps
        if c.get_timer() is None:
            break
        t = c.get_timer()
        c.handle_timer(t)
    assert c.get_timer() is None
    assert c.state in (tsp.UP, tsp.REDIRECTED, tsp.FAILED, tsp.RESTART)
    for name, ev in c.events():
        assert name in ("tunnel-offer", "tunnel-up", "redirect", "error", "need-tcp",
                        "version-fallback")
        assert "wonderland" not in repr(ev)
        if name == "error":
            assert set(ev) == {"code", "message", "fatal"} and ev["message"]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(reply, max_size=6), st.lists(st.integers(1, 50), min_size=1, max_size=5))
def test_tcp_client_survives_any_stream(replies, cuts):
    c = _client(transport="tcp")
    c.connect(0.0)
    stream = b"".join(replies)
    i = 0
    k = 0
    while i < len(stream) and c.state in tsp.WAITING:
        n = cuts[k % len(cuts)]
        k += 1
        c.receive_data(stream[i:i + n], 1.0)
        i += n
        c.data_to_send()
    c.handle_timer(1000.0)
    assert c.state in (tsp.UP, tsp.REDIRECTED, tsp.FAILED, tsp.RESTART)
    assert c.get_timer() is None
