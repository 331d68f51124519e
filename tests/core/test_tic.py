# TIC client tests: session transcripts with a scripted server (lines written after
# sixxs.net/tools/tic and AICCU's tic.c), time stepped by hand. Runs under pytest and
# MicroPython (tests/mprun.py).
import binascii
import hashlib
import json

from cpe_tunnel.core import tic
from cpe_tunnel.core.errors import ConfigError, LocalProtocolError, RemoteProtocolError
from corecheck import raises as _raises

USER = "CPE1-SIXXS"
PASSWORD = "Tr0ub4dor&3"
WALL = 1795382240
CHALLENGE = "4f1c2a9d0e8b7c6a5d4e3f2a1b0c9d8e"

GREETING = b"200 SixXS TIC Service on tic.example.net ready (http://www.sixxs.net)\r\n"
SHOW_AYIYA = [
    "201 Showing tunnel information for T5072",
    "TunnelId: T5072",
    "Tunnel Name: Home router",
    "IPv6 Endpoint: 2001:db8:2ff:1::2",
    "IPv6 POP: 2001:db8:2ff:1::1",
    "IPv6 PrefixLength: 64",
    "Tunnel MTU: 1280",
    "POP Id: nlams01",
    "IPv4 Endpoint: ayiya",
    "IPv4 POP: 192.0.2.1",
    "UserState: enabled",
    "AdminState: enabled",
    "Type: ayiya",
    "Password: ayiyasecret123",
    "Heartbeat_Interval: 60",
    "202 Done",
]


def _md5hex(s):
    return binascii.hexlify(hashlib.md5(s.encode()).digest()).decode()



class Server:
    """Feeds scripted answers; records what the client sent."""

    def __init__(self, client, now=0.0, wall=WALL):
        self.c = client
        self.now = now
        self.wall = wall
        self.sent = []

    def say(self, *lines):
        data = b"".join([(l if isinstance(l, bytes) else l.encode()) +
                         (b"" if isinstance(l, bytes) else b"\r\n") for l in lines])
        self.c.receive_data(data, self.now, self.wall)
        return self.heard()

    def heard(self):
        out = self.c.data_to_send()
        lines = [l.decode() for l in out.split(b"\n")[:-1]] if out else []
        self.sent.extend(lines)
        return lines


def _login(client, srv, tls=True):
    client.connection_made(srv.now)
    assert srv.say(GREETING) == ["client TIC/draft-00 cpe-tunnel/0.1 Linux/6.1.0-openwrt"]
    assert srv.say("200 Client Identity accepted") == ["get unixtime"]
    out = srv.say("200 %d" % WALL)
    if client.starttls == "never":
        assert out == ["username " + USER]
    else:
        assert out == ["starttls"]
        if tls:
            assert srv.say("200 Starting TLS") == []
            assert client.events() == [("start-tls", {})]
            assert client.state == "tls-wait"
            client.tls_started(srv.now)
            assert srv.heard() == ["username " + USER]
        else:
            assert srv.say("400 This service is not TLS enabled") == ["username " + USER]
    assert srv.say("200 Choose your authentication challenge please") == ["challenge md5"]
    out = srv.say("200 " + CHALLENGE)
    assert out == ["authenticate md5 " + _md5hex(CHALLENGE + _md5hex(PASSWORD))]
    return srv.say("200 Succesfully logged in using md5 as %s from 192.0.2.2" % USER)


def _client(**kw):
    return tic.TicClient(USER, PASSWORD, os_version="6.1.0-openwrt", **kw)


def _failure(client):
    ev = client.events()
    f = [e for e in ev if e[0] == "failed"]
    assert len(f) == 1 and client.state == "failed" and client.wants_close
    assert client.get_timer() is None
    return f[0][1]


def test_response_rule_matches_aiccu():
    # AICCU: sSignature = md5(challenge . md5(password)), both as lowercase hex
    assert tic.tic_response("abc", "secret") == _md5hex("abc" + _md5hex("secret"))
    assert tic.tic_response("abc", "secret") == "%s" % binascii.hexlify(hashlib.md5(
        b"abc" + binascii.hexlify(hashlib.md5(b"secret").digest())).digest()).decode()


def test_full_session_with_tunnel_list_and_tls():
    c = _client()
    srv = Server(c)
    assert _login(c, srv) == ["tunnel list"]
    assert srv.say("201 Listing tunnels", "T5072 2001:db8:2ff:1::2 ayiya nlams01",
                   "202 <tunnel_list>") == ["tunnel show T5072"]
    ev = c.events()
    assert ev == [("tunnel-list", {"tunnels": [{"tunnel_id": "T5072",
                                                "ipv6_local": "2001:db8:2ff:1::2",
                                                "ipv4_local": "ayiya", "pop_id": "nlams01"}]})]
    out = srv.say(*SHOW_AYIYA)
    assert out == ["QUIT Thank you for the information"]
    assert c.state == "done" and c.wants_close and c.tls and c.get_timer() is None
    cfg = c.tunnel_config
    assert cfg == {"tunnel_id": "T5072", "type": "ayiya", "ipv6_local": "2001:db8:2ff:1::2",
                   "ipv6_pop": "2001:db8:2ff:1::1", "prefixlen": 64, "mtu": 1280,
                   "pop_id": "nlams01", "ipv4_local": "ayiya", "ipv4_pop": "192.0.2.1",
                   "user_state": "enabled", "admin_state": "enabled",
                   "password": "ayiyasecret123", "heartbeat_interval": 60,
                   "name": "Home router", "fetched_at": WALL}
    ev = c.events()
    assert [e[0] for e in ev] == ["tunnel", "done"]
    assert ev[0][1]["password"] == "(hidden)" and ev[0][1]["tunnel_id"] == "T5072"
    # the server's goodbye and anything later is ignored
    assert srv.say("200 Thank you for using this SixXS Service") == []
    assert c.status()["server_time_offset"] == 0 and c.status()["error"] is None


def test_configured_tunnel_id_skips_the_list():
    c = _client(tunnel_id="T5072", starttls="never")
    srv = Server(c)
    assert _login(c, srv) == ["tunnel show T5072"]
    srv.say(*SHOW_AYIYA)
    assert c.state == "done" and not c.tls


def test_byte_at_a_time_and_bare_lf():
    c = _client(tunnel_id="T5072", starttls="never")
    c.connection_made(0.0)
    script = [GREETING, b"200 ok\n", ("200 %d\n" % WALL).encode(), b"200 ok\n",
              ("200 %s\n" % CHALLENGE).encode(), b"200 ok\n",
              ("\n".join(SHOW_AYIYA) + "\n").encode()]
    for chunk in script:
        for i in range(len(chunk)):
            c.receive_data(chunk[i:i + 1], 1.0, WALL)
    assert c.state == "done" and c.tunnel_config["password"] == "ayiyasecret123"


def test_clock_off_is_a_plain_word_error_and_no_more_commands():
    c = _client()
    srv = Server(c)
    c.connection_made(0.0)
    srv.say(GREETING)
    srv.say("200 Client Identity accepted")
    out = srv.say("200 %d" % (WALL + 600))  # TIC's clock is 10 minutes ahead of ours
    assert out == ["QUIT Aborting: Clock is off by 600 seconds"]
    f = _failure(c)
    assert f["kind"] == "clock" and f["retry"] == "time-sync" and f["offset"] == 600
    assert "600 seconds behind" in f["message"] and "NTP" in f["message"]
    assert c.status()["error"]["kind"] == "clock"
    assert srv.say("200 Bye") == [] and c.events() == []
    # the other way round
    c = _client()
    srv = Server(c)
    c.connection_made(0.0)
    srv.say(GREETING, "200 ok")
    srv.say("200 %d" % (WALL - 121))
    f = _failure(c)
    assert f["offset"] == -121 and "ahead of" in f["message"]


def test_clock_within_limit_is_fine():
    for off in (-120, 0, 120):
        c = _client(starttls="never")
        srv = Server(c)
        c.connection_made(0.0)
        srv.say(GREETING, "200 ok")
        assert srv.say("200 %d" % (WALL + off)) == ["username " + USER]
        assert c.server_time_offset == off


def test_starttls_refused():
    c = _client(tunnel_id="T5072")
    srv = Server(c)
    assert _login(c, srv, tls=False) == ["tunnel show T5072"]
    assert not c.tls
    c = _client(starttls="require")
    srv = Server(c)
    c.connection_made(0.0)
    srv.say(GREETING, "200 ok")
    assert srv.say("200 %d" % WALL) == ["starttls"]
    out = srv.say("400 This service is not TLS enabled")
    assert out and out[0].startswith("QUIT")
    f = _failure(c)
    assert f["kind"] == "tls-required" and f["retry"] == "config"


def test_no_plain_data_around_starttls():
    # bytes after the starttls answer, in the same read: a classic injection
    c = _client()
    srv = Server(c)
    c.connection_made(0.0)
    srv.say(GREETING, "200 ok", "200 %d" % WALL)
    srv.say("200 Starting TLS", "200 Succesfully logged in")
    assert _failure(c)["kind"] == "protocol"
    # plain bytes while the TLS handshake runs
    c = _client()
    srv = Server(c)
    c.connection_made(0.0)
    srv.say(GREETING, "200 ok", "200 %d" % WALL, "200 Starting TLS")
    c.events()
    srv.say("200 hello")
    assert _failure(c)["kind"] == "protocol"
    _raises(LocalProtocolError, c.tls_started, 1.0)


def test_tls_failure():
    c = _client()
    srv = Server(c)
    c.connection_made(0.0)
    srv.say(GREETING, "200 ok", "200 %d" % WALL, "200 Starting TLS")
    c.tls_failed(1.0, "certificate verify failed")
    f = _failure(c)
    assert f["kind"] == "tls-failed" and "certificate verify failed" in f["message"]
    assert srv.heard() == []  # nothing more in the clear


def test_wrong_password():
    c = _client(starttls="never")
    srv = Server(c)
    c.connection_made(0.0)
    srv.say(GREETING, "200 ok", "200 %d" % WALL, "200 ok", "200 " + CHALLENGE)
    out = srv.say("400 Response not accepted")
    assert out[0].startswith("QUIT")
    f = _failure(c)
    assert f["kind"] == "auth-failed" and f["retry"] == "config"
    assert "Response not accepted" in f["message"]


def test_unknown_username():
    c = _client(starttls="never")
    srv = Server(c)
    c.connection_made(0.0)
    srv.say(GREETING, "200 ok", "200 %d" % WALL)
    srv.say("400 Unknown user")
    assert _failure(c)["kind"] == "auth-failed"


def test_server_unavailable():
    c = _client()
    srv = Server(c)
    c.connection_made(0.0)
    srv.say("400 Server is in maintenance mode, come back later")
    f = _failure(c)
    assert f["kind"] == "unavailable" and f["retry"] == "backoff"
    assert "maintenance" in f["message"]


def test_several_or_no_tunnels():
    c = _client(starttls="never")
    srv = Server(c)
    _login(c, srv)
    out = srv.say("201 Listing tunnels", "T5072 2001:db8:2ff:1::2 ayiya nlams01",
                  "T3740 2001:db8:2ff:2::2 heartbeat nlams01",
                  "T4141 2001:db8:2ff::2 198.51.100.2 deham01", "202 <tunnel_list>")
    assert out and out[0].startswith("QUIT")
    ev = c.events()
    assert len(ev[0][1]["tunnels"]) == 3
    f = ev[1][1]
    assert f["kind"] == "choose-tunnel" and "T5072, T3740, T4141" in f["message"]
    c = _client(starttls="never")
    srv = Server(c)
    _login(c, srv)
    srv.say("201 Listing tunnels", "202 <tunnel_list>")
    assert _failure(c)["kind"] == "no-tunnel"


def test_unknown_tunnel_id():
    c = _client(starttls="never", tunnel_id="T9999")
    srv = Server(c)
    _login(c, srv)
    srv.say("400 Unknown tunnel endpoint T9999")
    f = _failure(c)
    assert f["kind"] == "no-tunnel" and "T9999" in f["message"]


def _show(lines, tunnel_id="T5072"):
    c = _client(starttls="never", tunnel_id=tunnel_id)
    srv = Server(c)
    _login(c, srv)
    srv.say(*lines)
    return c


def test_heartbeat_and_static_records():
    c = _show(["201 Showing tunnel information for T3740", "TunnelId: T3740",
               "Type: 6in4-heartbeat", "IPv6 Endpoint: 2001:0db8:02ff:0002:0000:0000:0000:0002",
               "IPv6 POP: 2001:db8:2ff:2::1", "IPv6 PrefixLength: 64", "POP Id: nlams01",
               "IPv4 Endpoint: heartbeat", "IPv4 POP: 192.0.2.1", "UserState: enabled",
               "AdminState: enabled", "Password: hbsecret456", "Heartbeat_Interval: 30",
               "Tunnel MTU: 1400", "202 Done"], "T3740")
    cfg = c.tunnel_config
    assert cfg["type"] == "6in4-heartbeat" and cfg["ipv6_local"] == "2001:db8:2ff:2::2"
    assert cfg["heartbeat_interval"] == 30 and cfg["mtu"] == 1400
    c = _show(["201 Showing tunnel information for T4141", "TunnelId: T4141",
               "Type: 6in4-static", "IPv6 Endpoint: 2001:db8:2ff::2",
               "IPv6 PoP: 2001:db8:2ff::1", "ipv6 prefixlength: 64",
               "IPv4 Endpoint: 198.51.100.2", "IPv4 POP: 192.0.2.1", "202 Done"], "T4141")
    cfg = c.tunnel_config
    assert cfg["type"] == "6in4-static" and "password" not in cfg and cfg["mtu"] == 1280
    assert cfg["ipv4_local"] == "198.51.100.2" and cfg["ipv6_pop"] == "2001:db8:2ff::1"


def test_unusable_records():
    def bad(change, drop=None):
        lines = [l for l in SHOW_AYIYA if drop is None or not l.startswith(drop)]
        out = []
        for l in lines:
            for old, new in change:
                if l.startswith(old):
                    l = new
            out.append(l)
        c = _show(out)
        f = _failure(c)
        assert f["kind"] == "bad-tunnel", f
        assert "ayiyasecret123" not in f["message"]
        return f["message"]

    assert "l2tp" in bad([("Type:", "Type: l2tp")])
    bad([], "Password:")
    bad([("Password:", "Password: two words")])
    bad([("IPv6 POP:", "IPv6 POP: 2001:db8:2ff:1::zz")])
    bad([("IPv6 PrefixLength:", "IPv6 PrefixLength: 129")])
    bad([("IPv6 PrefixLength:", "IPv6 PrefixLength: sixty-four")])
    bad([("Tunnel MTU:", "Tunnel MTU: 576")])
    bad([("IPv4 POP:", "IPv4 POP: pop.example.net")])
    bad([("Heartbeat_Interval:", "Heartbeat_Interval: 0")])
    assert "T5073" in bad([("TunnelId:", "TunnelId: T5073")])
    bad([("Type:", "TunnelId: T5072")])  # a repeated field
    bad([], "IPv4 POP:")


def test_error_inside_a_record():
    c = _show(SHOW_AYIYA[:5] + ["500 Internal error, try again later"])
    f = _failure(c)
    assert f["kind"] == "bad-tunnel" and "Internal error" in f["message"]


def test_garbage_from_the_server():
    for junk in (b"HTTP/1.1 400 Bad Request\r\n", b"20 ok\n", b"2000 ok\n", b"abc\n",
                 b"200\x00ok\n", b"\xff\xfe\n", b"999 what\n", b"x" * 2000):
        c = _client()
        c.connection_made(0.0)
        c.receive_data(junk, 0.0, WALL)
        f = _failure(c)
        assert f["kind"] == "protocol", junk
    c = _client()
    c.connection_made(0.0)
    c.receive_data(GREETING + b"200 ok\n", 0.0, WALL)
    c.receive_data(b"200 soon\n", 0.0, WALL)
    assert _failure(c)["kind"] == "protocol"  # not a time


def test_timeouts():
    c = _client(timeout=30, session_timeout=100)
    assert c.get_timer() is None
    c.connection_made(10.0)
    assert c.get_timer() == 40.0
    c.handle_timer(39.0)
    assert c.state == "greeting"
    c.receive_data(GREETING, 20.0, WALL)
    assert c.get_timer() == 50.0
    c.handle_timer(50.0)
    f = _failure(c)
    assert f["kind"] == "timeout" and f["retry"] == "backoff"
    assert "client information" in f["message"]
    # a server trickling lines cannot hold us past the session deadline
    c = _client(timeout=30, session_timeout=100, starttls="never")
    c.connection_made(0.0)
    c.receive_data(GREETING + b"200 ok\n" + ("200 %d\n" % WALL).encode(), 0.0, WALL)
    c.receive_data(b"200 ok\n200 " + CHALLENGE.encode() + b"\n200 ok\n", 0.0, WALL)
    c.receive_data(b"201 Listing tunnels\n", 0.0, WALL)
    t = 0.0
    while not c.finished and t < 1000:
        t += 25.0
        c.handle_timer(t)
        if not c.finished:
            c.receive_data(b"T1 2001:db8::2 ayiya pop1\n", t, WALL)
    assert t == 100.0 and _failure(c)["kind"] == "timeout"


def test_connection_closed():
    c = _client()
    srv = Server(c)
    c.connection_made(0.0)
    srv.say(GREETING)
    c.connection_closed(1.0)
    f = _failure(c)
    assert f["kind"] == "closed" and "client information" in f["message"]
    assert srv.heard() == []  # no QUIT into a closed socket
    c.connection_closed(2.0)
    assert c.events() == []


def test_secrets_never_shown():
    c = _client(starttls="never")
    srv = Server(c)
    c.connection_made(0.0)
    srv.say(GREETING, "200 ok", "200 %d" % WALL, "200 ok", "200 " + CHALLENGE)
    srv.say("400 Wrong password %s for %s" % (PASSWORD, USER))
    f = _failure(c)
    assert PASSWORD not in f["message"] and "not shown" in f["message"]
    c = _client(starttls="never")
    srv = Server(c)
    c.connection_made(0.0)
    srv.say(GREETING, "200 ok", "200 %d" % WALL, "200 ok", "200 " + CHALLENGE)
    srv.say("400 stored hash %s" % _md5hex(PASSWORD).upper())
    assert _md5hex(PASSWORD) not in _failure(c)["message"].lower()
    c = _client()
    text = repr(c) + json.dumps(c.status())
    assert PASSWORD not in text and _md5hex(PASSWORD) not in text
    # the wire never carries the password itself
    c = _client(tunnel_id="T5072")
    srv = Server(c)
    _login(c, srv)
    srv.say(*SHOW_AYIYA)
    wire = "\n".join(srv.sent)
    assert PASSWORD not in wire and _md5hex(PASSWORD) not in wire


def test_constructor_checks():
    _raises(ConfigError, tic.TicClient, "", PASSWORD)
    _raises(ConfigError, tic.TicClient, "two words", PASSWORD)
    _raises(ConfigError, tic.TicClient, "user\nQUIT", PASSWORD)
    _raises(ConfigError, tic.TicClient, USER, "")
    _raises(ConfigError, tic.TicClient, USER, PASSWORD, "T1 ; tunnel list")
    _raises(ConfigError, tic.TicClient, USER, PASSWORD, None, "sometimes")
    _raises(LocalProtocolError, tic.TicClient, USER, PASSWORD, timeout=0)
    c = tic.TicClient(USER, PASSWORD, client_name="my client", os_name="Linux\r\n", os_version="")
    c.connection_made(0.0)
    _raises(LocalProtocolError, c.connection_made, 0.0)
    c.receive_data(GREETING, 0.0, WALL)
    assert c.data_to_send() == b"client TIC/draft-00 my-client/0.1 Linux--/unknown\n"


def test_config_cache_round_trip():
    c = _show(SHOW_AYIYA)
    cfg = c.tunnel_config
    back = tic.validate_tunnel_config(json.loads(json.dumps(cfg)))
    assert back == cfg
    broken = json.loads(json.dumps(cfg))
    broken["type"] = "6to4"
    _raises(ConfigError, tic.validate_tunnel_config, broken)
    broken = json.loads(json.dumps(cfg))
    broken["mtu"] = "1280"
    _raises(ConfigError, tic.validate_tunnel_config, broken)
    _raises(ConfigError, tic.validate_tunnel_config, [])
    assert tic.redacted(cfg)["password"] == "(hidden)" and cfg["password"] == "ayiyasecret123"


def test_line_parsers():
    assert tic.parse_status_line("200 1795382240") == (200, "1795382240")
    assert tic.parse_status_line("202") == (202, "")
    for bad in ("", "20", "2000", "abc def", "２００ ok", "099 x", "600 x", "200x"):
        _raises(RemoteProtocolError, tic.parse_status_line, bad)
    assert tic.decode_line(b"200 caf\xc3\xa9\r") == "200 caf\xe9"
    for bad in (b"\x00", b"a\x1bb", b"\xff", b"a\rb"):
        _raises(RemoteProtocolError, tic.decode_line, bad)
    assert tic.parse_tunnel_list_line("T1  2001:db8::2\theartbeat  pop1")["ipv4_local"] == "heartbeat"
    for bad in ("T1 2001:db8::2 ayiya", "T1 2001:db8::2 ayiya pop1 x", "T/1 2001:db8::2 a p",
                "T1 2001:db8::g a p", "T1 2001:db8::2 a;b p"):
        _raises(RemoteProtocolError, tic.parse_tunnel_list_line, bad)


def test_protocol_error_never_quotes_the_password():
    c = _client()
    c.connection_made(0.0)
    c.receive_data(b"hello " + PASSWORD.encode() + b"\n", 0.0, WALL)
    f = _failure(c)
    assert f["kind"] == "protocol" and PASSWORD not in f["message"]
    assert PASSWORD not in json.dumps(c.status())


def test_big_chunk_of_lines_is_handled_once():
    # many lines in one read: the session fails at the body limit without rescanning
    c = _client(starttls="never")
    srv = Server(c)
    _login(c, srv)
    c.receive_data(b"201 Listing tunnels\n" + b"x\n" * 100000, 1.0, WALL)
    f = _failure(c)
    assert f["kind"] == "protocol" and "too many lines" in f["message"]
