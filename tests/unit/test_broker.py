"""The reference broker (tests/broker): update service, PoP packet checks, the process,
and -- marked `lab` -- the broker inside the namespace lab, driven from the cpe namespace."""

import base64
import json
import socket
import ssl
import struct
import urllib.request

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.broker import BrokerConfigError, BrokerHandle, example_config, parse_config
from tests.broker.client import BrokerError
from tests.broker.pop import Drop, classify_inbound, classify_outbound, parse_ipv4_41, parse_ipv6
from tests.broker.registry import Registry
from tests.broker.update import UpdateService, parse_basic_auth, redact_target
from tests.unit.peerproc import free_port, loopback_peer, run_peer_once, temp_certs

SECRETS = ("account-pass-1", "tunnel-key-1", "bob-pass", "bob-key")
TID = "12345"


def two_account_config(**top):
    cfg = example_config()
    cfg["accounts"].append(
        {
            "username": "bob",
            "password": "bob-pass",
            "tunnels": [
                {
                    "id": "777",
                    "updatekey": "bob-key",
                    "client_v6": "2001:db8:2::2/64",
                    "server_v6": "2001:db8:2::1",
                    "routed": ["2001:db8:2200::/48"],
                    "endpoint": "198.51.100.9",
                }
            ],
        }
    )
    cfg.update(top)
    return cfg


class Clock:
    def __init__(self):
        self.t = 5000.0

    def __call__(self):
        return self.t


def make_service(**top):
    clock = Clock()
    reg = Registry(parse_config(two_account_config(**top)), clock=clock)
    return reg, UpdateService(reg, wallclock=lambda: 1.0e9), clock


def basic(user, pw):
    return "Basic " + base64.b64encode(("%s:%s" % (user, pw)).encode()).decode()


def get(svc, target, user=None, pw=None, source="192.0.2.2", headers=None, method="GET"):
    h = dict(headers or {})
    if user is not None:
        h["authorization"] = basic(user, pw)
    return svc.handle(method, target, h, source, "http")


# ---------------------------------------------------------------------------------------------
# configuration


def test_example_config_parses_and_hides_secrets():
    cfg = parse_config(two_account_config())
    assert [a.username for a in cfg.accounts] == ["alice", "bob"]
    t = cfg.accounts[0].tunnels[0]
    assert t.id == TID and str(t.server_v6) == "2001:db8:1::1" and t.endpoint is None
    assert [str(n) for n in t.networks] == ["2001:db8:1::/64", "2001:db8:1234::/48"]
    text = repr(cfg)
    for s in SECRETS:
        assert s not in text


@pytest.mark.parametrize(
    "mutate, words",
    [
        (lambda c: c["accounts"][0]["tunnels"][0].update(client_v6="2001:db8:1::2"), "prefix length"),
        (lambda c: c["accounts"][0]["tunnels"][0].update(client_v6="nonsense/64"), "client_v6"),
        (lambda c: c["accounts"][0]["tunnels"][0].update(server_v6="2001:db8:9::1"), "inside"),
        (lambda c: c["accounts"][0]["tunnels"][0].update(routed=["2001:db8:1234::1/48"]), "routed[0]"),
        (lambda c: c["accounts"][0]["tunnels"][0].update(routed=["2001:db8:2200::/40"]), "overlaps"),
        (lambda c: c["accounts"][0]["tunnels"][0].update(endpoint="300.1.1.1"), "endpoint"),
        (lambda c: c["accounts"][1]["tunnels"][0].update(id=TID), "twice"),
        (lambda c: c["accounts"][1].update(username="alice"), "twice"),
        (lambda c: c["accounts"][0].update(username="a:b"), "':'"),
        (lambda c: c.update(https_port=443), "cert"),
        (lambda c: c.update(http_port=70000), "http_port"),
        (lambda c: c.update(badauth_status=403), "badauth_status"),
        (lambda c: c.update(bogus=1), "unknown key"),
        (lambda c: c["accounts"][0].update(password=5), "password"),
    ],
)
def test_config_errors_name_the_problem(mutate, words):
    cfg = two_account_config()
    mutate(cfg)
    with pytest.raises(BrokerConfigError) as ei:
        parse_config(cfg)
    assert words in str(ei.value)
    for s in SECRETS:
        assert s not in str(ei.value)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=10), kids, max_size=4),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(json_values)
def test_config_fuzz_only_raises_config_error(obj):
    try:
        parse_config(obj)
    except BrokerConfigError:
        pass


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["id", "updatekey", "client_v6", "server_v6", "routed", "endpoint", "x"]),
        json_values,
        max_size=6,
    )
)
def test_config_fuzz_tunnel_entries(tunnel):
    cfg = example_config()
    cfg["accounts"][0]["tunnels"] = [tunnel]
    try:
        parse_config(cfg)
    except BrokerConfigError:
        pass


# ---------------------------------------------------------------------------------------------
# HTTP basic auth and the update service


def test_parse_basic_auth_vectors():
    assert parse_basic_auth(basic("alice", "p:w")) == ("alice", "p:w")
    assert parse_basic_auth("basic " + base64.b64encode(b"u:").decode()) == ("u", "")
    assert parse_basic_auth("Basic " + base64.b64encode("m\u00fc:\u00e4".encode()).decode()) == (
        "m\u00fc",
        "\u00e4",
    )
    assert parse_basic_auth("Basic " + base64.b64encode(b"nocolon").decode()) is None
    assert parse_basic_auth("Bearer abc") is None
    assert parse_basic_auth("Basic !!!!") is None
    assert parse_basic_auth("Basic") is None
    assert parse_basic_auth("Basic \u00e9") is None
    assert parse_basic_auth(None) is None


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=80) | st.binary(max_size=60).map(lambda b: "Basic " + base64.b64encode(b).decode()))
def test_parse_basic_auth_fuzz(value):
    r = parse_basic_auth(value)
    assert r is None or (isinstance(r, tuple) and len(r) == 2 and ":" not in r[0])


def test_update_good_then_nochg_with_updatekey_and_source_address():
    reg, svc, _ = make_service()
    r = get(svc, "/nic/update?hostname=12345", "alice", "tunnel-key-1", source="192.0.2.2")
    assert (r.status, r.body) == (200, "good 192.0.2.2\n")
    assert reg.tunnels[TID].endpoint == "192.0.2.2"
    assert reg.by_endpoint["192.0.2.2"] == [reg.tunnels[TID]]
    r = get(svc, "/nic/update?hostname=12345", "alice", "tunnel-key-1", source="192.0.2.2")
    assert (r.status, r.body) == (200, "nochg 192.0.2.2\n")
    c = reg.state()["tunnels"][TID]["updates"]
    assert (c["good"], c["nochg"], c["requests"]) == (1, 1, 2)
    last = reg.state()["tunnels"][TID]["last_update"]
    assert last["source"] == "192.0.2.2" and last["myip"] is None and last["answer"] == "nochg"


def test_update_myip_wins_over_source_and_bad_myip_is_ignored():
    reg, svc, _ = make_service()
    r = get(
        svc, "/nic/update?hostname=12345&myip=198.51.100.7", "alice", "account-pass-1", source="203.0.113.2"
    )
    assert r.body == "good 198.51.100.7\n"
    for bad in ("198.51.100.300", "nonsense", "01.2.3.4", "2001:db8::1", ""):
        r = get(
            svc, "/nic/update?hostname=12345&myip=" + bad, "alice", "account-pass-1", source="203.0.113.2"
        )
        assert r.body in ("good 203.0.113.2\n", "nochg 203.0.113.2\n"), bad
    assert reg.tunnels[TID].endpoint == "203.0.113.2"


def test_ipv4_mapped_source_is_unwrapped():
    reg, svc, _ = make_service()
    assert (
        get(svc, "/nic/update?hostname=12345", "alice", "tunnel-key-1", source="::ffff:192.0.2.44").body
        == "good 192.0.2.44\n"
    )


def test_no_credentials_get_a_basic_challenge():
    reg, svc, _ = make_service()
    r = get(svc, "/nic/update?hostname=12345")
    assert r.status == 401 and r.body == "badauth\n"
    assert ("WWW-Authenticate", 'Basic realm="tunnelbroker"') in r.headers
    assert reg.tunnels[TID].endpoint is None


@pytest.mark.parametrize(
    "user, pw",
    [
        ("alice", "wrong"),
        ("mallory", "account-pass-1"),
        ("alice", "bob-key"),
        ("bob", "tunnel-key-1"),
        ("alice", ""),
        ("", ""),
    ],
)
def test_wrong_credentials_answer_badauth_200_by_default(user, pw):
    reg, svc, _ = make_service()
    r = get(svc, "/nic/update?hostname=12345", user, pw)
    assert (r.status, r.body, r.headers) == (200, "badauth\n", [])
    assert reg.tunnels[TID].endpoint is None
    assert reg.state()["answers"]["badauth"] == 1


def test_badauth_status_401_is_configurable():
    reg, svc, _ = make_service(badauth_status=401)
    r = get(svc, "/nic/update?hostname=12345", "alice", "nope")
    assert r.status == 401 and r.body == "badauth\n" and r.headers


def test_malformed_authorization_is_badauth():
    reg, svc, _ = make_service()
    r = svc.handle("GET", "/nic/update?hostname=12345", {"authorization": "Basic ***"}, "192.0.2.2", "http")
    assert r.body == "badauth\n"


def test_query_credentials_like_tunnelbroker():
    reg, svc, _ = make_service()
    r = get(svc, "/nic/update?username=alice&password=tunnel-key-1&hostname=12345&myip=192.0.2.9")
    assert r.body == "good 192.0.2.9\n"
    # the header wins over query parameters
    r = get(svc, "/nic/update?username=alice&password=tunnel-key-1&hostname=12345", "alice", "bad")
    assert r.body == "badauth\n"


def test_nohost_cases():
    reg, svc, _ = make_service()
    assert get(svc, "/nic/update?hostname=999", "alice", "account-pass-1").body == "nohost\n"
    assert get(svc, "/nic/update?hostname=777", "alice", "account-pass-1").body == "nohost\n"  # bob's tunnel
    assert get(svc, "/nic/update", "alice", "account-pass-1").body == "nohost\n"
    assert get(svc, "/nic/update?hostname=", "alice", "account-pass-1").body == "nohost\n"
    assert reg.tunnels["777"].endpoint == "198.51.100.9"
    assert reg.state()["answers"]["nohost"] == 4


def test_update_key_only_opens_its_own_tunnel():
    reg, svc, _ = make_service()
    cfg = two_account_config()
    cfg["accounts"][0]["tunnels"].append(
        {"id": "12346", "updatekey": "k2", "client_v6": "2001:db8:3::2/64", "server_v6": "2001:db8:3::1"}
    )
    reg = Registry(parse_config(cfg), clock=Clock())
    svc = UpdateService(reg)
    r = get(svc, "/nic/update?hostname=12345,12346", "alice", "tunnel-key-1", source="192.0.2.2")
    assert r.body == "good 192.0.2.2\nbadauth\n"
    r = get(svc, "/nic/update?hostname=12345,12346", "alice", "account-pass-1", source="192.0.2.3")
    assert r.body == "good 192.0.2.3\ngood 192.0.2.3\n"
    r = get(svc, "/nic/update?hostname=" + ",".join(["12345"] * 21), "alice", "account-pass-1")
    assert r.body == "numhost\n"


def test_abuse_limit_per_minute():
    reg, svc, clock = make_service(abuse_limit_per_minute=3)
    answers = []
    for i in range(5):
        clock.t += 1
        answers.append(
            get(
                svc, "/nic/update?hostname=12345&myip=192.0.2.%d" % (10 + i % 2), "alice", "tunnel-key-1"
            ).body.split()[0]
        )
    assert answers == ["good", "good", "good", "abuse", "abuse"]
    assert reg.tunnels[TID].endpoint == "192.0.2.10"
    clock.t += 61
    assert (
        get(svc, "/nic/update?hostname=12345&myip=192.0.2.12", "alice", "tunnel-key-1").body
        == "good 192.0.2.12\n"
    )
    assert reg.state()["tunnels"][TID]["updates"]["abuse"] == 2


def test_abuse_limit_zero_means_unlimited():
    reg, svc, clock = make_service(abuse_limit_per_minute=0)
    for _ in range(50):
        assert get(svc, "/nic/update?hostname=12345", "alice", "tunnel-key-1").status == 200
    assert reg.state()["tunnels"][TID]["updates"]["abuse"] == 0


def test_911_fault_badagent_and_paths():
    reg, svc, _ = make_service()
    reg.faults["answer_911"] = True
    assert get(svc, "/nic/update?hostname=12345", "alice", "tunnel-key-1").body == "911\n"
    assert reg.tunnels[TID].endpoint is None
    reg.faults["answer_911"] = False
    assert get(svc, "/nic/update?hostname=12345", "alice", "tunnel-key-1", method="POST").body == "badagent\n"
    assert get(svc, "/other", "alice", "tunnel-key-1").status == 404
    assert get(svc, "/nic/update?" + "&".join("a%d=1" % i for i in range(100)), "alice", "x").status == 400
    st_ = reg.state()
    assert (
        st_["answers"]["911"] == 1 and st_["answers"]["badagent"] == 1 and st_["answers"]["http_errors"] == 2
    )
    assert st_["tunnels"][TID]["updates"]["911"] == 1


def test_secrets_never_in_state_or_request_log():
    reg, svc, _ = make_service()
    get(svc, "/nic/update?hostname=12345&username=alice&password=account-pass-1")
    get(svc, "/nic/update?hostname=12345", "alice", "tunnel-key-1")
    get(svc, "/nic/update?hostname=777&pass=bob-pass&key=bob-key", "bob", "wrong")
    text = json.dumps(reg.state())
    for s in SECRETS:
        assert s not in text
    assert "password=***" in text


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_redact_target_fuzz(target):
    out = redact_target("/nic/update?password=%s&x=1" % target)
    assert isinstance(out, str)


_FUZZ_SVC = []


@settings(max_examples=300, deadline=None)
@given(
    method=st.sampled_from(["GET", "POST", "HEAD", "get", ""]),
    target=st.one_of(st.text(max_size=120), st.builds(lambda q: "/nic/update?" + q, st.text(max_size=120))),
    auth=st.one_of(
        st.none(),
        st.text(max_size=60),
        st.tuples(
            st.sampled_from(["alice", "bob", "x"]),
            st.sampled_from(["tunnel-key-1", "account-pass-1", "bob-key", "?"]),
        ).map(lambda t: basic(*t)),
    ),
    source=st.sampled_from(["192.0.2.2", "::ffff:198.51.100.1", "2001:db8::1", "garbage"]),
)
def test_update_service_fuzz_never_raises(method, target, auth, source):
    if not _FUZZ_SVC:
        _FUZZ_SVC.append(make_service())
    reg, svc, _ = _FUZZ_SVC[0]  # shared: state carried between examples is part of the fuzzing
    headers = {} if auth is None else {"authorization": auth}
    r = svc.handle(method, target, headers, source, "http")
    assert r.status in (200, 400, 401, 404)
    assert r.body.endswith("\n")
    for line in r.body.splitlines():
        assert line.split(" ")[0] in (
            "good",
            "nochg",
            "badauth",
            "nohost",
            "numhost",
            "abuse",
            "badagent",
            "911",
            "not",
            "bad",
        )
    json.dumps(reg.state())


# ---------------------------------------------------------------------------------------------
# PoP packet checks (pure)


def ip6(src, dst, payload=b"\x80\x00\x00\x00\x00\x01\x00\x01", nh=58):
    return (
        struct.pack("!IHBB", 6 << 28, len(payload), nh, 64)
        + socket.inet_pton(socket.AF_INET6, src)
        + socket.inet_pton(socket.AF_INET6, dst)
        + payload
    )


def ip4(src, dst, payload, proto=41):
    hdr = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(payload),
        0,
        0,
        64,
        proto,
        0,
        socket.inet_aton(src),
        socket.inet_aton(dst),
    )
    return hdr + payload


def pop_registry():
    reg = Registry(parse_config(two_account_config()), clock=Clock())
    reg.set_endpoint(TID, "192.0.2.2")
    return reg


def test_inbound_accepts_registered_endpoint_and_tunnel_sources():
    reg = pop_registry()
    for src in ("2001:db8:1::2", "2001:db8:1::abcd", "2001:db8:1234:5::1"):
        inner = ip6(src, "2001:db8:ffff::2")
        t, out = classify_inbound(reg, ip4("192.0.2.2", "203.0.113.18", inner + b"pad"))
        assert t.spec.id == TID and out == inner  # trailing bytes beyond the IPv6 length trimmed


def test_inbound_drops_by_reason():
    reg = pop_registry()
    good_inner = ip6("2001:db8:1::2", "2001:db8:ffff::2")
    cases = [
        (ip4("192.0.2.99", "203.0.113.18", good_inner), "unknown_source"),
        (ip4("198.51.100.9", "203.0.113.18", good_inner), "spoofed_source"),  # bob's endpoint, alice's source
        (ip4("192.0.2.2", "203.0.113.18", ip6("2001:db8:2::2", "2001:db8:ffff::2")), "spoofed_source"),
        (ip4("192.0.2.2", "203.0.113.18", ip6("fe80::1", "2001:db8:ffff::2")), "spoofed_source"),
        (ip4("192.0.2.2", "203.0.113.18", b"\x45" + good_inner[1:]), "not_ipv6"),
        (ip4("192.0.2.2", "203.0.113.18", good_inner[:30]), "truncated"),
        (ip4("192.0.2.2", "203.0.113.18", good_inner[:-1]), "truncated"),
        (ip4("192.0.2.2", "203.0.113.18", good_inner, proto=17), "not_ipv6"),
        (ip4("192.0.2.2", "203.0.113.18", good_inner)[:12], "truncated"),
    ]
    for pkt, reason in cases:
        with pytest.raises(Drop) as ei:
            classify_inbound(reg, pkt)
        assert ei.value.reason == reason, pkt


def test_outbound_lookup():
    reg = pop_registry()
    t, ep, _ = classify_outbound(reg, ip6("2001:db8:ffff::2", "2001:db8:1::2"))
    assert (t.spec.id, ep) == (TID, "192.0.2.2")
    t, ep, _ = classify_outbound(reg, ip6("2001:db8:ffff::2", "2001:db8:1234:ab::1"))
    assert (t.spec.id, ep) == (TID, "192.0.2.2")
    t, ep, _ = classify_outbound(reg, ip6("2001:db8:ffff::2", "2001:db8:2200::1"))
    assert (t.spec.id, ep) == ("777", "198.51.100.9")
    for dst, reason in (("2001:db8:9::1", "no_tunnel"), ("ff02::16", "multicast")):
        with pytest.raises(Drop) as ei:
            classify_outbound(reg, ip6("fe80::1", dst))
        assert ei.value.reason == reason
    reg.set_endpoint(TID, None)
    with pytest.raises(Drop) as ei:
        classify_outbound(reg, ip6("2001:db8:ffff::2", "2001:db8:1::2"))
    assert ei.value.reason == "no_endpoint" and ei.value.tunnel.spec.id == TID


def test_pop_parsers_agree_with_scapy():
    from scapy.layers.inet import IP
    from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6

    pkt = bytes(
        IP(src="192.0.2.2", dst="203.0.113.18", proto=41)
        / IPv6(src="2001:db8:1::2", dst="2001:db8:ffff::2")
        / ICMPv6EchoRequest(id=7, seq=1, data=b"x" * 20)
    )
    src, payload = parse_ipv4_41(pkt)
    assert src == "192.0.2.2"
    isrc, idst, inner = parse_ipv6(payload)
    parsed = IPv6(inner)
    assert socket.inet_ntop(socket.AF_INET6, isrc) == parsed.src
    assert socket.inet_ntop(socket.AF_INET6, idst) == parsed.dst
    assert parsed[ICMPv6EchoRequest].id == 7
    # IPv4 options (IHL > 5) are skipped correctly
    opt = bytes(
        IP(src="192.0.2.2", dst="203.0.113.18", proto=41, options=[b"\x01\x01\x01\x00"])
        / IPv6(src="2001:db8:1::2", dst="2001:db8:ffff::2")
    )
    assert parse_ipv4_41(opt)[1] == bytes(IPv6(src="2001:db8:1::2", dst="2001:db8:ffff::2"))
    t, _ = classify_inbound(pop_registry(), pkt)
    assert t.spec.id == TID


_FUZZ_REG = []


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=120))
def test_pop_classifiers_fuzz(data):
    if not _FUZZ_REG:
        _FUZZ_REG.append(pop_registry())
    reg = _FUZZ_REG[0]  # classification does not change the registry
    for fn, pkt in (
        (classify_inbound, data),
        (classify_outbound, data),
        (classify_inbound, ip4("192.0.2.2", "203.0.113.18", data)),
    ):
        try:
            fn(reg, pkt)
        except Drop as d:
            assert d.reason in reg.pop["drops"]


# ---------------------------------------------------------------------------------------------
# the broker process on loopback (HTTP only, no PoP: needs no root)


@pytest.fixture
def loopback_broker():
    with temp_certs("ctbroker-") as (d, certs):
        cfg = two_account_config(
            listen="127.0.0.1",
            http_port=free_port(),
            https_port=free_port(),
            cert=certs["cert_file"],
            key=certs["key_file"],
        )
        ca = certs["ca_file"]
        with loopback_peer(BrokerHandle, "tests.broker", "--no-pop", cfg, d, "broker.json", ca) as h:
            yield h


def _http(url, user=None, pw=None, ca=None, timeout=3):
    req = urllib.request.Request(url)
    if user is not None:
        req.add_header("Authorization", basic(user, pw))
    ctx = ssl.create_default_context(cafile=ca) if ca else None
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=ctx) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_process_http_https_control_and_http_down(loopback_broker):
    h = loopback_broker
    http = "http://127.0.0.1:%d/nic/update?hostname=12345" % h.config["http_port"]
    https = "https://127.0.0.1:%d/nic/update?hostname=12345" % h.config["https_port"]
    assert _http(http) == (401, "badauth\n")
    assert _http(http, "alice", "tunnel-key-1") == (200, "good 127.0.0.1\n")
    assert _http(https, "alice", "tunnel-key-1", ca=h.ca_file) == (200, "nochg 127.0.0.1\n")
    st_ = h.state()
    assert st_["tunnels"][TID]["endpoint"] == "127.0.0.1"
    assert [r["scheme"] for r in st_["requests"]] == ["http", "http", "https"]

    assert h.set_fault(http_down=True)["http_down"] is True
    with pytest.raises(OSError):
        _http(http, "alice", "tunnel-key-1", timeout=1)
    with pytest.raises(OSError):
        _http(https, "alice", "tunnel-key-1", ca=h.ca_file, timeout=1)
    h.set_fault(http_down=False, answer_911=True)
    assert _http(http, "alice", "tunnel-key-1") == (200, "911\n")
    h.set_fault(answer_911=False)

    assert h.set_endpoint(TID, "192.0.2.77")["endpoint"] == "192.0.2.77"
    assert _http(http, "alice", "tunnel-key-1") == (200, "good 127.0.0.1\n")
    h.reset_counters()
    assert h.state()["answers"]["good"] == 0 and h.state()["requests"] == []

    for bad in (
        {"cmd": "set_fault", "bogus": True},
        {"cmd": "set_endpoint", "tunnel": "nope", "ip": None},
        {"cmd": "set_endpoint", "tunnel": TID, "ip": "300.0.0.1"},
        {"cmd": "nonsense"},
        {"cmd": 5},
    ):
        args = dict(bad)
        cmd = args.pop("cmd")
        with pytest.raises(BrokerError):
            h.request(cmd, **args)
    s = socket.socket(socket.AF_UNIX)
    s.connect(h.control_path)
    s.sendall(b'\xff\xfe not json\n{"cmd": "ping"}\n')
    f = s.makefile("rb")
    assert json.loads(f.readline())["ok"] is False
    assert json.loads(f.readline())["ok"] is True
    s.close()
    log = h.log_text()
    for secret in SECRETS:
        assert secret not in log
    assert "good 127.0.0.1" in log


def test_process_refuses_bad_config(tmp_path):
    cfile = tmp_path / "c.json"
    cfile.write_text(
        json.dumps(
            {
                "accounts": [
                    {
                        "username": "a",
                        "password": "topsecret",
                        "tunnels": [
                            {
                                "id": "1",
                                "updatekey": "k",
                                "client_v6": "2001:db8::2/64",
                                "server_v6": "2001:db9::1",
                            }
                        ],
                    }
                ]
            }
        )
    )
    r = run_peer_once("tests.broker", cfile, tmp_path / "s", "--no-pop")
    assert r.returncode == 2
    assert "server_v6 must be inside" in r.stderr and "topsecret" not in r.stderr


# ---------------------------------------------------------------------------------------------
# in the namespace lab (root)


@pytest.mark.lab
def test_lab_update_answers_from_cpe(lab):
    b = lab.start_broker(tls=True)
    url = "http://203.0.113.18/nic/update?hostname=12345"
    r = lab.http_get("cpe", url)
    assert (r.status, r.body, r.headers.get("WWW-Authenticate")) == (
        401,
        "badauth\n",
        'Basic realm="tunnelbroker"',
    )
    assert lab.http_get("cpe", url, "alice", "wrong").body == "badauth\n"
    assert lab.http_get("cpe", url.replace("12345", "999"), "alice", "account-pass-1").body == "nohost\n"
    assert lab.http_get("cpe", url, "alice", "tunnel-key-1").body == "good 192.0.2.2\n"
    https = lab.http_get("cpe", url.replace("http:", "https:"), "alice", "tunnel-key-1", ca_file=b.ca_file)
    assert https.body == "nochg 192.0.2.2\n"
    assert lab.http_get("cpe", url + "&myip=192.0.2.50", "alice", "tunnel-key-1").body == "good 192.0.2.50\n"
    t = b.tunnel("12345")
    assert t["endpoint"] == "192.0.2.50"
    assert t["last_update"]["source"] == "192.0.2.2" and t["last_update"]["scheme"] == "http"
    assert (t["updates"]["good"], t["updates"]["nochg"], t["updates"]["badauth"]) == (2, 1, 2)
    # an untrusted certificate is refused by the client side
    assert lab.http_get("cpe", url.replace("http:", "https:"), "alice", "tunnel-key-1").error


@pytest.mark.lab
def test_lab_abuse_limit_and_http_down(lab):
    cfg = example_config()
    cfg["abuse_limit_per_minute"] = 2
    b = lab.start_broker(cfg)
    url = "http://203.0.113.18/nic/update?hostname=12345"
    bodies = [lab.http_get("cpe", url, "alice", "tunnel-key-1").body for _ in range(3)]
    assert bodies == ["good 192.0.2.2\n", "nochg 192.0.2.2\n", "abuse\n"]
    b.set_fault(http_down=True)
    r = lab.http_get("cpe", url, "alice", "tunnel-key-1", timeout=2)
    assert r.status is None and "Refused" in r.error
    b.set_fault(http_down=False)
    assert lab.http_get("cpe", url, "alice", "tunnel-key-1").body == "abuse\n"  # the limit is still in force


@pytest.mark.lab
def test_lab_pop_round_trip_and_drops(lab):
    b = lab.start_broker()
    b.set_endpoint("12345", "192.0.2.2")
    assert lab.v6host_counter("2001:db8:1::/64") == 0
    assert lab.v6host_counter("2001:db8:5::/64") == 0
    b.reset_counters()

    res = lab.sixin4_ping("cpe", "203.0.113.18", "2001:db8:1::2", "2001:db8:ffff::2", count=2)
    assert len(res["replies"]) == 2
    rep = res["replies"][0]
    assert (rep["outer_src"], rep["outer_dst"]) == ("203.0.113.18", "192.0.2.2")
    assert (rep["inner_src"], rep["inner_dst"]) == ("2001:db8:ffff::2", "2001:db8:1::2")
    assert lab.v6host_counter("2001:db8:1::/64") == 2
    # the broker's own tunnel address answers (the client's keepalive target)
    res = lab.sixin4_ping("cpe", "203.0.113.18", "2001:db8:1::2", "2001:db8:1::1")
    assert res["replies"] and res["replies"][0]["inner_src"] == "2001:db8:1::1"
    # a routed-prefix source is accepted too
    assert lab.sixin4_ping("cpe", "203.0.113.18", "2001:db8:1234:1::9", "2001:db8:ffff::2")["replies"]
    st_ = b.tunnel("12345")
    assert st_["rx_packets"] == 4 and st_["tx_packets"] == 4

    # spoofed inner source: dropped at the broker, never reaches the v6 host
    res = lab.sixin4_ping("cpe", "203.0.113.18", "2001:db8:5::2", "2001:db8:ffff::2", timeout=0.5)
    assert res["replies"] == []
    assert lab.v6host_counter("2001:db8:5::/64") == 0
    # the endpoint moves elsewhere: the cpe's packets now come from an unregistered IPv4
    b.set_endpoint("12345", "192.0.2.99")
    res = lab.sixin4_ping("cpe", "203.0.113.18", "2001:db8:1::2", "2001:db8:ffff::2", timeout=0.5)
    assert res["replies"] == []
    drops = b.state()["pop"]["drops"]
    assert drops["spoofed_source"] == 1 and drops["unknown_source"] == 1
    assert b.state()["pop"]["last_drop"] == {"reason": "unknown_source", "source": "192.0.2.2"}
    assert lab.v6host_counter("2001:db8:1::/64") == 2
    # v6 host -> client while the endpoint is unregistered: counted as no_endpoint
    b.set_endpoint("12345", None)
    assert not lab.ping6("v6host", "2001:db8:1::2", timeout=1)
    assert b.state()["pop"]["drops"]["no_endpoint"] >= 1


@pytest.mark.lab
def test_lab_pop_behind_nat_uses_public_address(lab_nat):
    b = lab_nat.start_broker()
    url = "http://203.0.113.18/nic/update?hostname=12345"
    assert lab_nat.http_get("cpe", url, "alice", "tunnel-key-1").body == "good 203.0.113.2\n"
    res = lab_nat.sixin4_ping("cpe", "203.0.113.18", "2001:db8:1::2", "2001:db8:ffff::2")
    assert len(res["replies"]) == 1 and res["replies"][0]["outer_dst"] == "198.51.100.2"
    assert b.tunnel("12345")["rx_packets"] == 1
