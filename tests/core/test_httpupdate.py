import binascii

from cpe_tunnel.core import httpupdate
from cpe_tunnel.core.errors import ConfigError, LocalProtocolError
from cpe_tunnel.core.httpupdate import HttpUpdateClient, parse_url

URL = "https://ipv4.tunnelbroker.net/nic/update"
SECRET = "Upd4teK3y-7f3a9c"
B64 = binascii.b2a_base64(("alice:" + SECRET).encode()).decode().strip()


def client(**kw):
    args = {"url": URL, "username": "alice", "secret": SECRET, "tunnel_id": "654321",
            "rand": lambda: 0.0}
    for k in kw:
        args[k] = kw[k]
    return HttpUpdateClient(**args)


def query_of(req):
    q = req.target.split("?", 1)[1]
    out = []
    for part in q.split("&"):
        k, v = part.split("=", 1)
        out.append((k, v))
    return out


class Broker:
    """A stand-in broker: answers every request with the same (status, body), or with
    answer(req) when given a function. Records the requests."""

    def __init__(self, status=200, body=b"good 203.0.113.2", answer=None):
        self.status = status
        self.body = body
        self.answer = answer
        self.requests = []

    def __call__(self, req):
        self.requests.append(req)
        if self.answer is not None:
            return self.answer(req)
        return self.status, self.body


def drive(c, broker, until, triggers=(), max_steps=100000):
    """Step the client with a fake clock up to `until`. triggers: (time, ip, reason)
    sorted by time. The broker answers at once. Returns the send times."""
    t = 0.0
    i = 0
    sent = []
    for _ in range(max_steps):
        timer = c.get_timer()
        nt = triggers[i][0] if i < len(triggers) else None
        cands = [x for x in (timer, nt) if x is not None]
        if not cands:
            break
        t = max(t, min(cands))
        if t > until:
            break
        if nt is not None and nt <= t and (timer is None or nt <= timer):
            c.trigger(t, triggers[i][1], triggers[i][2])
            i += 1
        else:
            c.handle_timer(t)
        req = c.next_request(t)
        if req is not None:
            sent.append(t)
            status, body = broker(req)
            if status is None:
                c.transport_failed(t, body)
            else:
                c.response_received(t, status, body)
    else:
        assert False, "drive did not settle"
    return sent


def one(c, t, status, body, ip="203.0.113.7", reason="start"):
    c.trigger(t, ip, reason)
    req = c.next_request(t)
    assert req is not None
    c.response_received(t, status, body)
    ev = [e for e in c.events() if e[0] == "update-result"]
    assert len(ev) == 1
    return ev[0][1]


ANSWERS = [
    (200, b"good 203.0.113.7", "ok", "now has 203.0.113.7"),
    (200, b"nochg 203.0.113.7\n", "ok", "already had 203.0.113.7"),
    (200, b"GOOD 203.0.113.7\r\n", "ok", "now has 203.0.113.7"),
    (200, b"\n\n  good 203.0.113.7", "ok", "now has"),
    (200, b"good", "ok", "accepted the update"),
    (200, b"good 2001:db8::1,203.0.113.7", "ok", "203.0.113.7"),
    (200, b"good not-an-ip", "ok", "is not an IPv4 address"),
    (200, b"good 127.0.0.1", "blocked", "does not accept this client"),
    (200, b"badauth", "auth-failed", "rejected the username or update key"),
    (401, b"", "auth-failed", "rejected the username or update key"),
    (401, b"good 203.0.113.7", "auth-failed", "rejected"),
    (403, b"badauth", "auth-failed", "rejected"),
    (200, b"abuse", "blocked", "too many updates"),
    (200, b"badagent", "blocked", "client program"),
    (200, b"911", "broker-error", "(911)"),
    (200, b"dnserr", "broker-error", "(dnserr)"),
    (500, b"", "broker-error", "HTTP 500"),
    (503, b"Service Unavailable", "broker-error", "'Service Unavailable'"),
    (429, b"", "broker-error", "slow down"),
    (200, b"nohost", "bad-tunnel-id", "no tunnel '654321'"),
    (200, b"!yours", "bad-tunnel-id", "another account"),
    (200, b"notfqdn", "bad-tunnel-id", "did not accept '654321'"),
    (200, b"-ERROR: Missing parameter(s).", "unexpected-answer",
     "refused the update: '-ERROR: Missing parameter(s).'"),
    (200, b"<html><body>captive portal</body></html>", "unexpected-answer",
     "do not understand: '<html><body>captive portal</body></html>'"),
    (200, b"", "unexpected-answer", "empty answer"),
    (200, b"\xff\xfe\x00garbage", "unexpected-answer", "'???garbage'"),
    (200, b"x" * 5000, "unexpected-answer", "'" + "x" * 80 + "...'"),
    (404, b"Not Found", "unexpected-answer", "HTTP 404: 'Not Found'"),
    (301, b"", "unexpected-answer", "redirected"),
    (999, b"good 203.0.113.7", "unexpected-answer", "invalid HTTP status"),
    (200, b"numhost", "unexpected-answer", "numhost"),
]


def test_answer_table():
    for status, body, result, msg in ANSWERS:
        c = client()
        ev = one(c, 0.0, status, body)
        assert ev["result"] == result, (status, body, ev)
        assert msg in ev["message"], (status, body, ev["message"])
        assert len(ev["message"]) < 200
        assert c.status()["last_result"] == result
        assert c.status()["last_message"] == ev["message"]


def test_registered_ip_and_nat():
    c = client()
    ev = one(c, 0.0, 200, b"good 203.0.113.7", ip="203.0.113.7")
    assert ev["registered_ip"] == "203.0.113.7" and ev["nat_detected"] is False
    c = client()
    ev = one(c, 0.0, 200, b"nochg 203.0.113.99", ip="192.0.2.10")
    assert ev["registered_ip"] == "203.0.113.99" and ev["nat_detected"] is True
    assert c.status()["nat_detected"] is True and c.status()["registered_ip"] == "203.0.113.99"
    c = client()
    ev = one(c, 0.0, 200, b"good 999.1.1.1", ip="192.0.2.10")
    assert ev["registered_ip"] is None and ev["nat_detected"] is False


def _myip(send_myip, ip, ranges=()):
    c = client(send_myip=send_myip, private_ranges=ranges)
    c.trigger(0.0, ip, "start")
    req = c.next_request(0.0)
    return [v for k, v in query_of(req) if k == "myip"]


def test_myip_rules():
    assert _myip("auto", "203.0.113.7") == ["203.0.113.7"]
    assert _myip("auto", "192.168.1.2") == []
    assert _myip("auto", "10.1.2.3") == []
    assert _myip("auto", "100.64.1.1") == []  # carrier-grade NAT space
    assert _myip("auto", "198.51.100.7", ("198.51.100.0/24",)) == []
    assert _myip("auto", "203.0.113.7", ("198.51.100.0/24",)) == ["203.0.113.7"]
    assert _myip("always", "192.168.1.2") == ["192.168.1.2"]
    assert _myip("never", "203.0.113.7") == []
    assert _myip("auto", None) == []
    assert _myip("always", None) == []


def test_request_shape():
    c = client(url="http://broker.example:8080/nic/update?x=1", tunnel_id="user-1.tunnel/ä &=")
    c.trigger(0.0, "203.0.113.7", "start")
    r = c.next_request(0.0)
    assert (r.scheme, r.host, r.port, r.method) == ("http", "broker.example", 8080, "GET")
    assert r.target == "/nic/update?x=1&hostname=user-1.tunnel%2F%C3%A4%20%26%3D&myip=203.0.113.7"
    assert [k for k, v in r.headers] == ["Host", "Authorization", "User-Agent", "Accept",
                                         "Connection"]
    assert r.header("host") == "broker.example:8080"
    assert r.header("Authorization") == "Basic " + B64
    assert binascii.a2b_base64(B64) == b"alice:" + SECRET.encode()
    assert r.header("Connection") == "close"
    assert r.header("User-Agent") == "cpe-tunnel/0.1"
    assert r.timeout == 30
    c = client(url="https://[2001:db8::1]/u")
    c.trigger(0.0, None, "start")
    r = c.next_request(0.0)
    assert r.host == "2001:db8::1" and r.port == 443 and r.header("Host") == "[2001:db8::1]"
    assert r.target == "/u?hostname=654321"


def test_parse_url():
    assert parse_url("https://ipv4.tunnelbroker.net/nic/update") == (
        "https", "ipv4.tunnelbroker.net", 443, "/nic/update", "")
    assert parse_url("HTTP://Broker.Example") == ("http", "broker.example", 80, "/", "")
    assert parse_url("http://192.0.2.1:81?a=b#frag") == ("http", "192.0.2.1", 81, "/", "a=b")
    assert parse_url("https://[2001:DB8::1]:8443/x?y") == ("https", "2001:db8::1", 8443, "/x", "y")
    bad = ["", "ftp://x/", "x", "//x/", "https://", "https://:80/", "https://a b/",
           "https://user:pw@host/", "https://host:0/", "https://host:65536/", "https://host:x/",
           "https://2001:db8::1/", "https://[2001:db8::1/", "https://[zz]/", "https://-a.b/",
           "https://a..b/", "https://h\u00e9/", "https://h/\n", None, 5]
    for u in bad:
        try:
            parse_url(u)
        except ConfigError as e:
            assert e.reason
            continue
        assert False, u


def test_config_errors():
    for kw in ({"username": ""}, {"username": "a:b"}, {"secret": ""}, {"tunnel_id": ""},
               {"send_myip": "sometimes"}, {"retry_min": 0}, {"retry_min": 10, "retry_max": 5},
               {"rand": None}, {"private_ranges": ("10.0.0.1/8",)}, {"user_agent": "x\r\ny"},
               {"secret": "a\nb"}, {"url": "gopher://x"}):
        try:
            client(**kw)
        except ConfigError as e:
            assert SECRET not in e.reason
            continue
        assert False, kw


def test_backoff_growth_with_fixed_rand():
    c = client(retry_min=5, retry_max=900, rand=lambda: 0.0)
    broker = Broker(status=None, body="connection refused by 203.0.113.18:443")
    sent = drive(c, broker, 4000, [(0.0, "203.0.113.7", "start")])
    gaps = [b - a for a, b in zip(sent, sent[1:])]
    assert gaps[:9] == [5, 10, 20, 40, 80, 160, 320, 640, 900], gaps
    assert all(g == 900 for g in gaps[8:])
    st = c.status()
    assert st["state"] == "waiting-retry" and st["last_result"] == "unreachable"
    assert st["attempts"] == len(sent)
    assert "connection refused by 203.0.113.18:443" in st["last_message"]
    # rand near 1 with the default jitter: each gap in [base/2, base], never below retry_min
    c = client(retry_min=5, retry_max=900, rand=lambda: 0.99)
    sent = drive(c, broker, 4000, [(0.0, "203.0.113.7", "start")])
    gaps = [b - a for a, b in zip(sent, sent[1:])]
    base = 5
    for g in gaps:
        assert max(5, base * 0.5) <= g <= base, (g, base)
        base = min(900, base * 2)


def test_success_resets_backoff():
    state = {"n": 0}

    def answer(req):
        state["n"] += 1
        if state["n"] in (1, 2, 3, 5):
            return 502, b""
        return 200, b"good 203.0.113.7"

    c = client()
    sent = drive(c, Broker(answer=answer), 100, [(0.0, "203.0.113.7", "start"),
                                                 (50.0, "203.0.113.8", "wan-change")])
    assert sent == [0.0, 5.0, 15.0, 35.0, 50.0, 55.0], sent
    assert c.status()["attempts"] == 0 and c.status()["state"] == "ok"


def test_badauth_few_requests_over_a_day_of_wan_changes():
    broker = Broker(status=200, body=b"badauth")
    c = client(rand=lambda: 0.5)
    triggers = [(0.0, "203.0.113.7", "start")]
    for k in range(1, 24 * 12):  # a new WAN address every 5 minutes
        triggers.append((k * 300.0, "203.0.113.%d" % (k % 200 + 1), "wan-change"))
    sent = drive(c, broker, 86400, triggers)
    assert 2 <= len(sent) <= 6, sent
    assert len(broker.requests) == len(sent)
    assert sent[1] - sent[0] == 3600.0  # first hold-off: one hour
    for a, b, gap in zip(sent[1:], sent[2:], [6840.0, 13680.0, 27360.0]):
        assert abs((b - a) - gap) < 1e-6, (a, b)  # doubling (jitter 0.1 * 0.5)
    assert c.status()["state"] == "auth-failed"
    assert c.status()["wan_updates_held"] is True
    held = [e for e in c.events() if e[0] == "update-held"]
    assert held and held[-1][1]["result"] == "auth-failed"
    # the retry after the hold-off carries the latest WAN address
    latest = [ip for t, ip, _ in triggers if t <= sent[-1]][-1]
    assert ("myip", latest) in query_of(broker.requests[-1])


def test_explicit_reconnect_sends_during_hold_off():
    c = client()
    one(c, 0.0, 200, b"abuse")
    assert c.state(10.0) == "blocked"
    c.trigger(100.0, "203.0.113.9", "wan-change")
    assert c.next_request(100.0) is None
    c.trigger(200.0, "203.0.113.9", "reconnect")
    req = c.next_request(200.0)
    assert req is not None and ("myip", "203.0.113.9") in query_of(req)
    c.response_received(201.0, 200, b"good 203.0.113.9")
    assert c.status()["state"] == "ok" and not c.status()["wan_updates_held"]
    # after success WAN changes go out at once again
    c.trigger(300.0, "203.0.113.10", "wan-change")
    assert c.next_request(300.0) is not None


def test_explicit_trigger_respects_spacing():
    c = client(retry_min=5)
    one(c, 0.0, 200, b"badauth")
    c.trigger(1.0, "203.0.113.7", "reconnect")
    assert c.next_request(1.0) is None
    assert c.get_timer() == 5.0
    c.handle_timer(5.0)
    assert c.next_request(5.0) is not None


def test_911_waits_at_least_30_minutes_and_wan_changes_do_not_shorten():
    c = client(retry_min=5, retry_max=900)
    ev = one(c, 0.0, 200, b"911")
    assert ev["retry_in"] >= 1800
    c.trigger(60.0, "203.0.113.50", "wan-change")
    assert c.next_request(60.0) is None
    assert c.get_timer() >= 1800
    assert c.status(60.0)["state"] == "waiting-retry"


def test_transient_failure_then_new_address_sends_soon():
    c = client(retry_min=5, retry_max=900)
    for t in (0.0, 5.0, 15.0, 35.0, 75.0):
        if t:
            c.handle_timer(t)
        else:
            c.trigger(t, "203.0.113.7", "start")
        assert c.next_request(t) is not None
        c.transport_failed(t, "timed out after 10 s connecting to 203.0.113.18:443")
    assert c.get_timer() == 75.0 + 80
    c.trigger(80.0, "203.0.113.7", "wan-change")  # same address: keep waiting
    assert c.next_request(80.0) is None and c.get_timer() == 155.0
    c.trigger(90.0, "203.0.113.8", "wan-change")  # new address: now
    req = c.next_request(90.0)
    assert req is not None and ("myip", "203.0.113.8") in query_of(req)


def test_no_repeat_for_same_address_after_success():
    c = client()
    one(c, 0.0, 200, b"good 203.0.113.7")
    for t in (100.0, 200.0, 300.0):
        c.trigger(t, "203.0.113.7", "wan-change")
        assert c.next_request(t) is None
        assert c.get_timer() is None
    c.trigger(400.0, None, "wan-change")  # WAN gone
    assert c.next_request(400.0) is None
    c.trigger(500.0, "203.0.113.7", "wan-up")  # same address back
    assert c.next_request(500.0) is None
    c.trigger(600.0, "203.0.113.8", "wan-change")
    assert c.next_request(600.0) is not None


def test_coalescing():
    c = client()
    c.trigger(0.0, "203.0.113.7", "start")
    r1 = c.next_request(0.0)
    assert c.state() == "in-flight"
    for k in range(10):
        c.trigger(0.1 + k * 0.01, "203.0.113.%d" % (20 + k), "wan-change")
        assert c.next_request(0.1 + k * 0.01) is None
    c.response_received(0.5, 200, b"good 203.0.113.7")
    r2 = c.next_request(0.5)  # one follow-up, with the latest address, right away
    assert r2 is not None and ("myip", "203.0.113.29") in query_of(r2)
    assert ("myip", "203.0.113.7") in query_of(r1)
    c.response_received(0.9, 200, b"good 203.0.113.29")
    assert c.next_request(1.0) is None and c.get_timer() is None
    assert c.requests_sent == 2
    # a trigger during flight that ends on the same address needs no follow-up
    c.trigger(100.0, "203.0.113.30", "wan-change")
    assert c.next_request(100.0) is not None
    c.trigger(100.1, "203.0.113.31", "wan-change")
    c.trigger(100.2, "203.0.113.30", "wan-change")
    c.response_received(100.5, 200, b"good 203.0.113.30")
    assert c.next_request(100.5) is None and c.get_timer() is None
    assert c.requests_sent == 3


def test_status_states():
    c = client()
    assert c.status(0.0)["state"] == "idle"
    c.trigger(0.0, "203.0.113.7", "start")
    assert c.status(0.0)["state"] == "pending" and c.status(0.0)["next_retry_in"] == 0
    c.next_request(0.0)
    st = c.status(0.0)
    assert st["state"] == "in-flight" and st["requests_sent"] == 1
    c.response_received(1.0, 200, b"nochg 203.0.113.7")
    st = c.status(1.0)
    assert st["state"] == "ok" and st["last_time"] == 1.0 and st["next_retry_in"] is None
    assert st["broker"] == "https://ipv4.tunnelbroker.net/nic/update"
    c.trigger(10.0, "203.0.113.8", "wan-change")
    c.next_request(10.0)
    c.transport_failed(11.0, "cannot resolve host 'ipv4.tunnelbroker.net'")
    st = c.status(12.0)
    assert st["state"] == "waiting-retry" and st["attempts"] == 1
    assert abs(st["next_retry_in"] - 4.0) < 1e-9
    assert st["last_result"] == "unreachable"


def test_watchdog_and_late_answer():
    c = client(timeout=10)
    c.trigger(0.0, "203.0.113.7", "start")
    assert c.next_request(0.0) is not None
    assert c.get_timer() == 10 + httpupdate.WATCHDOG_GRACE
    c.handle_timer(100.0)
    ev = [e for e in c.events() if e[0] == "update-result"]
    assert ev[0][1]["result"] == "unreachable" and "no answer within" in ev[0][1]["message"]
    c.response_received(101.0, 200, b"good 203.0.113.7")  # late: ignored
    assert c.status()["last_result"] == "unreachable"
    try:
        c.response_received(102.0, 200, b"good 203.0.113.7")
        assert False
    except LocalProtocolError:
        pass


def test_api_misuse():
    c = client()
    for fn in (lambda: c.response_received(0.0, 200, b"good"),
               lambda: c.transport_failed(0.0, "x"),
               lambda: c.trigger(0.0, "300.1.1.1", "start"),
               lambda: c.trigger(0.0, "203.0.113.7", None)):
        try:
            fn()
        except LocalProtocolError:
            continue
        assert False


def test_hostile_bodies_never_raise():
    bodies = [None, b"", b"\x00" * 10000, b"\n" * 5000, b"good " + b"9" * 100000,
              bytearray(b"good 203.0.113.7"), memoryview(b"nochg 203.0.113.7"), "good 203.0.113.7",
              b"\xc3\x28\xa0\xa1", b"\r\r\r", 12345, b"good \xff.\xfe", b"abuse\x00"]
    for body in bodies:
        for status in (200, 401, 500, 0, -1, None, "200", 200.0, True):
            c = client()
            c.trigger(0.0, "203.0.113.7", "start")
            c.next_request(0.0)
            c.response_received(0.0, status, body)
            r = c.status()["last_result"]
            assert r in httpupdate.RESULTS, r
            msg = c.status()["last_message"]
            for ch in msg:
                assert 32 <= ord(ch) < 127, msg


def test_secrets_never_shown():
    texts = []
    scenarios = [
        (200, b"good 203.0.113.7"), (200, b"badauth"), (401, b""), (200, b"abuse"),
        (200, ("-ERROR: bad key " + SECRET).encode()), (500, SECRET.encode()),
        (200, ("something " + B64).encode()), (None, "refused for alice:" + SECRET),
        (200, b"911"),
    ]
    for status, body in scenarios:
        c = client()
        c.trigger(0.0, "192.168.1.2", "start")
        req = c.next_request(0.0)
        texts.append(repr(req))
        if status is None:
            c.transport_failed(1.0, body)
        else:
            c.response_received(1.0, status, body)
        c.trigger(2.0, "203.0.113.1", "wan-change")
        c.trigger(3.0, "203.0.113.2", "reconnect")
        texts.append(repr(c))
        texts.append(str(c.status()))
        texts.append(str(c.events()))
    blob = "\n".join(texts)
    assert SECRET not in blob
    assert B64 not in blob
    assert "repeats our credentials" in blob  # the echoing answers were not quoted
    assert "Authorization" in blob  # the header name may show, its value not
