"""Hypothesis fuzzing of the HTTP update client core: the answer parser, the URL parser
and the state machine under random event sequences."""
import binascii

from hypothesis import given, settings
from hypothesis import strategies as st

from cpe_tunnel.core import addr, httpupdate
from cpe_tunnel.core.errors import ConfigError, LocalProtocolError
from cpe_tunnel.core.httpupdate import HttpUpdateClient, classify_answer, parse_url

SECRET = "Zq9-secret-KEY"
B64 = binascii.b2a_base64(("bob:" + SECRET).encode()).decode().strip()

WORDS = [b"good", b"nochg", b"badauth", b"abuse", b"911", b"nohost", b"!yours", b"notfqdn",
         b"-ERROR:", b"badagent", b"dnserr", b"GOOD", b""]

bodies = st.one_of(
    st.binary(max_size=6000),
    st.builds(lambda w, sep, rest: w + sep + rest, st.sampled_from(WORDS),
              st.sampled_from([b" ", b"\n", b"\r\n", b"\t", b""]), st.binary(max_size=64)),
    st.builds(lambda w, ip: w + b" " + ip.encode(), st.sampled_from([b"good", b"nochg"]),
              st.ip_addresses(v=4).map(str)),
)
statuses = st.one_of(st.integers(min_value=-1000, max_value=1000),
                     st.sampled_from([200, 201, 204, 301, 400, 401, 403, 404, 429, 500, 502, 503]))


def _printable_ascii(s):
    return all(32 <= ord(c) < 127 for c in s)


@settings(max_examples=400, deadline=None)
@given(statuses, bodies)
def test_classify_answer_total(status, body):
    res, msg, reg, wait = classify_answer(status, body, "123")
    assert res in httpupdate.RESULTS
    assert msg and _printable_ascii(msg) and len(msg) < 220
    assert reg is None or (res == "ok" and addr.is_ip4(reg))
    assert wait >= 0
    if res == "ok":
        assert 200 <= status < 300


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(max_size=80),
                 st.builds(lambda s, r: s + "://" + r, st.sampled_from(["http", "https", "HTTPS", "ftp"]),
                           st.text(alphabet="ab.-:[]@/?#%1234567890fe", max_size=40))))
def test_parse_url_total(text):
    try:
        scheme, host, port, path, query = parse_url(text)
    except ConfigError as e:
        assert e.reason
        return
    assert scheme in ("http", "https")
    assert host and 1 <= port <= 65535
    assert path.startswith("/")
    assert "@" not in host and "?" not in path and "#" not in path + query


OPS = st.lists(st.tuples(
    st.sampled_from(["trigger", "timer", "answer", "fail", "advance"]),
    st.floats(min_value=0, max_value=5000, allow_nan=False),
    st.sampled_from([None, "203.0.113.7", "203.0.113.8", "192.168.1.2", "198.51.100.9"]),
    st.sampled_from(["start", "wan-change", "reconnect", "wan-up", "keepalive"]),
    statuses, bodies), max_size=60)


@settings(max_examples=300, deadline=None)
@given(OPS, st.floats(min_value=0, max_value=0.999), st.sampled_from(["auto", "always", "never"]))
def test_state_machine_invariants(ops, r, send_myip):
    c = HttpUpdateClient("https://broker.example/nic/update", "bob", SECRET, "42",
                         send_myip=send_myip, retry_min=5, retry_max=900, rand=lambda: r)
    now = 0.0
    starts = []  # (time, result of the previous request)
    prev_result = None
    texts = []
    inflight = False
    abandoned = False
    for op, dt, ip, reason, status, body in ops:
        if op == "advance":
            now += dt
            continue
        if op == "trigger":
            c.trigger(now, ip, reason)
        elif op == "timer":
            t = c.get_timer()
            if t is not None:
                now = max(now, t)
                c.handle_timer(now)
                if inflight:  # the watchdog gave up on the adapter
                    assert c.status(now)["last_result"] == "unreachable"
                    inflight = False
                    abandoned = True
        elif op in ("answer", "fail"):
            if not inflight:
                try:
                    c.response_received(now, status, body)
                except LocalProtocolError:
                    assert not abandoned
                else:
                    assert abandoned, "answer accepted with nothing in flight"
                abandoned = False
                continue
            if op == "answer":
                c.response_received(now, status, body)
            else:
                c.transport_failed(now, body.decode("latin-1"))
            inflight = False
        if not inflight:
            req = c.next_request(now)
            if req is not None:
                inflight = True
                abandoned = False
                starts.append((now, prev_result))
                texts.append(repr(req))
                assert req.header("Authorization") == "Basic " + B64
                assert req.target.startswith("/nic/update?hostname=42")
        for name, data in c.events():
            texts.append(repr((name, data)))
            if name == "update-result":
                prev_result = data["result"]
                assert data["result"] in httpupdate.RESULTS
                assert _printable_ascii(data["message"])
        st_ = c.status(now)
        texts.append(repr(st_))
        texts.append(repr(c))
        assert st_["state"] in ("idle", "pending", "in-flight", "waiting-retry", "ok",
                                "auth-failed", "blocked", "bad-tunnel-id")
        assert (st_["state"] == "in-flight") == inflight
        if inflight:
            assert c.next_request(now) is None
        if st_["state"] == "waiting-retry" or st_["state"] in httpupdate.HOLD_RESULTS:
            assert c.get_timer() is not None
    # Requests are spaced by retry_min, except the follow-up right after a success.
    for (t0, _), (t1, prev) in zip(starts, starts[1:]):
        assert t1 - t0 >= 5 - 1e-9 or prev == "ok", (t0, t1, prev)
    blob = "\n".join(texts)
    assert SECRET not in blob and B64 not in blob
