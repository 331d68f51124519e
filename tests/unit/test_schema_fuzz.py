"""Fuzzing validate() (any Package: a config dict and a list of problem strings,
never an exception, never a secret in a problem) and checking that the committed
files/etc/config/cpe_tunnel and docs/CONFIG.md are what the schema generates."""

import json
import pathlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cpe_tunnel import uciio
from cpe_tunnel.core import schema, uci

ROOT = pathlib.Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "files" / "etc" / "config" / "cpe_tunnel"
CONFIG_MD = ROOT / "docs" / "CONFIG.md"
REGEN = ("regenerate with: .venv/bin/python -c \"from cpe_tunnel.core import schema; "
         "open('files/etc/config/cpe_tunnel','w').write(schema.defaults_text()); "
         "open('docs/CONFIG.md','w').write(schema.markdown())\"")

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SECRET = "Zq9SECRETx"  # never a substring of anything validate() says by itself

OPTION_NAMES = sorted({o.name for s in schema.SCHEMA for o in s.options} | {"updatkey", "bogus", "x"})
INTERESTING = ["", "0", "1", "yes", "off", "64", "1280", "1480", "9000", "-1", "4294967296", "ffff", "10000",
               "10", "a0", "auto", "static", "http-update", "kernel", "info", "br-lan", "br-lan br-x",
               "eth0", "abcdefghijklmnopq", "203.0.113.1", "192.0.2.256", "2001:db8:1::2/64", "2001:db8:1::1",
               "2001:db8:2::/64", "2001:db8:2::/80", "2001:db8:2::1/48", "2001:db8::53 2001:db8::54",
               "198.51.100.0/24", "10.0.0.1/8", "/var/run/x", "relative", "https://ipv4.tunnelbroker.net/nic/update",
               "https://u:p@host/", "http://[2001:db8::1]:8080/x", "https://host:0/", "\x01", "a\nb", "é"]
VALUES = st.one_of(st.sampled_from(INTERESTING), st.text(max_size=20))


@st.composite
def packages(draw):
    p = uci.Package("cpe_tunnel")
    for _ in range(draw(st.integers(0, 5))):
        typ = draw(st.sampled_from(["globals", "tunnel", "tunnel", "lan", "lan", "lann", "x"]))
        name = draw(st.one_of(st.none(), st.sampled_from(["main", "he", "guest", "b"])))
        try:
            s = p.add(typ, name)
        except uci.UciError:
            continue
        for _ in range(draw(st.integers(0, 12))):
            opt = draw(st.sampled_from(OPTION_NAMES))
            if opt in ("updatekey", "password"):
                value = draw(st.sampled_from(["", "ok-key", "a\nb", "x" * 300])) + SECRET
            else:
                value = draw(VALUES)
            if "\x00" in value:
                continue
            if draw(st.booleans()):
                s.set(opt, value)
            else:
                s.add_list(opt, value)
    return p


@FUZZ
@given(packages())
def test_validate_never_raises_and_hides_secrets(p):
    cfg, problems = schema.validate(p)
    assert isinstance(problems, list)
    for x in problems:
        assert isinstance(x, str) and x
        assert SECRET not in x, x
        assert "\n" not in x and "\r" not in x, x
    assert set(cfg) == {"globals", "tunnel", "lans"}
    assert set(cfg["globals"]) == {o.name for o in schema.SECTIONS["globals"].options}
    if cfg["tunnel"] is not None:
        assert set(cfg["tunnel"]) == {o.name for o in schema.SECTIONS["tunnel"].options} | {"name"}
    for lan in cfg["lans"]:
        assert lan["enabled"] is True
    if not problems:
        # a clean config has exactly one enabled tunnel with what the daemon needs
        t = cfg["tunnel"]
        assert t is not None and t["enabled"] is True
        assert t["mode"] in schema.MODES and t["peeraddr"] and t["ip6addr"]
        if t["mode"] == "http-update":
            assert t["username"] and t["tunnelid"] and (t["updatekey"] or t["password"])
        json.dumps(cfg)  # plain data


@FUZZ
@given(st.text(max_size=400))
def test_parse_then_validate_any_text(text):
    try:
        p = uci.parse(text)
    except uci.UciError:
        return
    cfg, problems = schema.validate(p)
    assert all(isinstance(x, str) for x in problems)


def _fill(p):
    he = p.get_section("he")
    he.set("peeraddr", "203.0.113.1")
    he.set("ip6addr", "2001:db8:1::2/64")
    he.set("username", "example-user")
    he.set("updatekey", "example-update-key")
    he.set("tunnelid", "123456")
    he.add_list("ip6prefix", "2001:db8:2::/64")
    p.add("lan", "lan").set("interface", "br-lan")
    p.get_section("main").set("enabled", "1")


def test_committed_default_file_is_current():
    assert SHIPPED.read_text() == schema.defaults_text(), REGEN


def test_committed_config_md_is_current():
    assert CONFIG_MD.read_text() == schema.markdown(), REGEN


def test_shipped_file_loads_and_says_what_to_fill_in():
    p = uciio.load(str(SHIPPED))
    cfg, problems = schema.validate(p)
    assert cfg["globals"]["enabled"] is False
    assert len(problems) == 5 and all("is required" in x for x in problems)
    # the steps in docs/CONFIG.md make it clean
    _fill(p)
    cfg, problems = schema.validate(p)
    assert problems == []
    assert cfg["globals"]["enabled"] is True and cfg["lans"][0]["interface"] == "br-lan"
    # and the examples in it, uncommented, are valid together
    cfg, problems = schema.validate(uci.parse(schema.uncomment_examples(SHIPPED.read_text())))
    assert problems == []


def test_commit_after_filling_keeps_everything(tmp_path):
    p = uciio.load(str(SHIPPED))
    _fill(p)
    f = tmp_path / "cpe_tunnel"
    uciio.save(str(f), p)
    again = uciio.load(str(f))
    assert again == p
    assert schema.validate(again) == schema.validate(p)


# valid values per option, none of which trips a check across options
VALID = {
    "enabled": ["1", "yes", "on", "true"], "log_level": ["debug", "error"], "control_socket": ["/tmp/s"],
    "state_dir": ["/var/run/x"], "wan_device": ["eth0", "wan"], "ipaddr": ["192.0.2.2", "10.0.0.2"],
    "ip6gw": ["2001:db8:1::1", "2001:db8:1::ffff"], "ifname": ["he0", "cpe6in4"],
    "dataplane": ["auto", "kernel", "userspace"], "mtu": ["1280", "1480", "1400"], "ttl": ["1", "255"],
    "tos": ["0", "255"], "defaultroute": ["0", "1"], "keepalive_interval": ["0", "3600"],
    "update_url": ["http://broker.example:8080/nic/update", "https://[2001:db8::1]/u", "https://h"],
    "tls_verify": ["off", "1"], "ca_file": ["/etc/ssl/ca.pem"], "send_myip": ["always", "never"],
    "private_range": ["198.51.100.0/24", "100.64.0.0/10 192.0.2.0/24"], "update_retry_min": ["1", "5"],
    "update_retry_max": ["900", "86400"], "password": ["pw"], "ip6assign": ["64"],
    "ra": ["0", "1"], "ra_interval": ["4", "600"], "ra_lifetime": ["0", "1800", "9000"],
    "ra_mtu": ["0", "1280", "65535"], "ra_preferred": ["0", "3600"], "ra_valid": ["7200", "4294967295"],
    "dns": ["2001:db8::53", "2001:db8::53 2001:db8::54"],
}


@FUZZ
@given(st.data())
def test_valid_values_give_no_problems(data):
    text = ("config tunnel 'he'\n option mode http-update\n option peeraddr 203.0.113.1\n"
            " option ip6addr 2001:db8:1::2/64\n option username u\n option updatekey k\n option tunnelid 1\n"
            " list ip6prefix 2001:db8:2::/48\n")
    p = uci.parse(text)
    he = p.get_section("he")
    lan = p.add("lan")
    lan.set("interface", "br-lan")
    for sec, typ in ((he, "tunnel"), (lan, "lan")):
        for o in schema.SECTIONS[typ].options:
            if o.name in VALID and data.draw(st.booleans()):
                sec.set(o.name, data.draw(st.sampled_from(VALID[o.name])))
    cfg, problems = schema.validate(p)
    assert problems == []
    assert cfg["tunnel"]["name"] == "he" and cfg["lans"][0]["interface"] == "br-lan"


def test_other_scripts_digits_are_not_addresses():
    opt = schema.SECTIONS["tunnel"].by_name["peeraddr"]
    assert schema.check_value(opt, "\u0661\u0669\u0662.0.2.1")[0] is False
    opt = schema.SECTIONS["tunnel"].by_name["ip6addr"]
    assert schema.check_value(opt, "2001:db8::1/\u0666\u0664")[0] is False
