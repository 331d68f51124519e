"""The netifd protocol handler (files/lib/netifd/proto/cpetunnel.sh) in the shell
harness (tests/openwrt: STAND-INS for netifd-proto.sh, jshn.sh, functions.sh and the
`ubus` command, written from their documented behaviour), under dash and busybox ash;
and cpe_tunnel.adapters.netifd.NetifdReporter, whose messages must equal what
netifd-proto.sh's helpers send for the same data."""
import json
import os
import stat
import subprocess

import pytest

from cpe_tunnel import netifd_schema
from cpe_tunnel.adapters.netifd import NetifdReporter
from cpe_tunnel.core import schema, uci
from tests.openwrt import harness

SHELLS = [s[1] for s in harness.shells()]
SHELL_IDS = [s[0] for s in harness.shells()]
SECRET = "it's a \"s3cr3t\" key"

DATA = {
    "mode": "http-update", "peeraddr": "203.0.113.1", "ip6addr": "2001:db8:1::2/64",
    "ip6prefix": ["2001:db8:2::/64", "2001:db8:3::/48"], "username": "example-user",
    "updatekey": SECRET, "tunnelid": "123456", "tunlink": "wan", "mtu": 1400,
    "tls_verify": True, "private_range": ["198.51.100.0/24"], "log_level": "debug",
}


def setup_run(tmp_path, shell, data=DATA, env=None):
    e = {"HARNESS_DEV_wan": "eth1"}
    e.update(env or {})
    return harness.run(harness.proto_driver("setup", "wan6tun", data), tmp_path, shell, env=e)


def test_generated_block_matches_the_schema():
    assert netifd_schema.is_current(harness.HANDLER), \
        "run: python3 -m cpe_tunnel.netifd_schema --write"
    names = [n for n, k, s in netifd_schema.netifd_options()]
    tunnel = [o.name for o in schema.SECTIONS["tunnel"].options]
    # every tunnel option reaches the daemon except the ones the handler owns
    assert set(tunnel) - set(names) == set(tunnel) & set(netifd_schema.SKIP_TUNNEL)
    assert {"enabled", "ifname", "wan_device", "defaultroute"} <= set(netifd_schema.SKIP_TUNNEL)
    assert "tunlink" in names and "log_level" in names


def test_splice_rejects_a_file_without_markers():
    with pytest.raises(ValueError):
        netifd_schema.splice("#!/bin/sh\n")


@pytest.mark.parametrize("shell", SHELLS, ids=SHELL_IDS)
def test_dump_declares_the_typed_schema(tmp_path, shell):
    script = "\n".join(['. "$HARNESS_DIR/stubs/functions.sh"', '. "$HARNESS_DIR/stubs/netifd-proto.sh"',
                        "INCLUDE_ONLY=1", ". " + harness.sq(harness.HANDLER),
                        "init_proto cpetunnel dump", "add_protocol cpetunnel"])
    r = harness.run(script, tmp_path, shell)
    assert r.rc == 0, r
    dump = json.loads(r.stdout)
    assert dump["name"] == "cpetunnel"
    assert dump["no-device"] is True and dump["available"] is True
    codes = {"int": 5, "string": 3, "boolean": 7, "array": 1}
    assert dump["config"] == [[n, codes[k]] for n, k, s in netifd_schema.netifd_options()]
    pairs = dict(dump["config"])
    assert pairs["mtu"] == 5 and pairs["ip6prefix"] == 1 and pairs["tls_verify"] == 7 and pairs["mode"] == 3


@pytest.mark.parametrize("shell", SHELLS, ids=SHELL_IDS)
def test_setup_writes_a_private_config_and_runs_the_daemon(tmp_path, shell):
    r = setup_run(tmp_path, shell)
    assert r.rc == 0, r
    msgs = r.notify()
    # host dependency on the broker first (ubus -S, as the helper does), then the command
    assert r.calls[0]["argv"][0] == "-S"
    assert msgs[0] == {"action": 6, "host": "203.0.113.1", "ifname": "wan", "interface": "wan6tun"}
    conf = str(tmp_path / "run" / "netifd-wan6tun")
    daemon = os.path.join(harness.HERE, "bin", "cpe-tunneld")
    assert msgs[1] == {"action": 1, "command": [daemon, "-c", conf, "--netifd", "wan6tun"],
                       "interface": "wan6tun"}
    assert len(msgs) == 2
    assert stat.S_IMODE(os.stat(conf).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(str(tmp_path / "run")).st_mode) == 0o700
    with open(conf) as f:
        pkg = uci.parse(f.read(), "netifd-wan6tun")
    cfg, problems = schema.validate(pkg)
    assert problems == []
    t = cfg["tunnel"]
    assert t["updatekey"] == SECRET  # quoting survived the shell
    assert t["ifname"] == "cpe-wan6tun" and t["wan_device"] == "eth1" and t["defaultroute"] is False
    assert t["ip6prefix"] == [("2001:db8:2::", 64), ("2001:db8:3::", 48)]
    assert t["private_range"] == [("198.51.100.0", 24)]
    assert t["mtu"] == 1400 and t["tls_verify"] is True
    g = cfg["globals"]
    assert g["enabled"] is True and g["log_level"] == "debug"
    assert g["control_socket"] == str(tmp_path / "run" / "wan6tun.sock")
    assert cfg["lans"] == []
    # the secret is in the 0600 file only
    assert SECRET not in json.dumps(r.calls) and not r.logged


@pytest.mark.parametrize("shell", SHELLS, ids=SHELL_IDS)
def test_missing_broker_is_a_blocked_config_error(tmp_path, shell):
    data = dict(DATA)
    del data["peeraddr"]
    r = setup_run(tmp_path, shell, data)
    assert r.notify() == [{"action": 3, "error": ["MISSING_ADDRESS"], "interface": "wan6tun"},
                          {"action": 4, "interface": "wan6tun"}]
    assert not os.path.exists(str(tmp_path / "run" / "netifd-wan6tun"))


@pytest.mark.parametrize("shell", SHELLS, ids=SHELL_IDS)
def test_invalid_config_reports_problems_without_secrets(tmp_path, shell):
    data = dict(DATA, mtu=9000, send_myip="sometimes")
    r = setup_run(tmp_path, shell, data)
    msgs = r.notify()
    assert [m["action"] for m in msgs] == [6, 3, 4]
    err = msgs[1]["error"]
    assert err[0] == "INVALID_CONFIG" and 2 <= len(err) <= 4
    assert any("'mtu'" in e for e in err[1:])
    assert any("mtu" in line for line in r.logged) and any("send_myip" in line for line in r.logged)
    assert SECRET not in json.dumps(r.calls) and SECRET not in "\n".join(r.logged)
    assert not os.path.exists(str(tmp_path / "run" / "netifd-wan6tun"))


@pytest.mark.parametrize("shell", SHELLS, ids=SHELL_IDS)
def test_wan_not_up_is_transient(tmp_path, shell):
    r = setup_run(tmp_path, shell, env={"HARNESS_DEV_wan": ""})
    assert r.notify()[1:] == [{"action": 3, "error": ["NO_WAN_LINK"], "interface": "wan6tun"}]


@pytest.mark.parametrize("shell", SHELLS, ids=SHELL_IDS)
def test_teardown_removes_the_config(tmp_path, shell):
    assert setup_run(tmp_path, shell).rc == 0
    conf = tmp_path / "run" / "netifd-wan6tun"
    assert conf.exists()
    r = harness.run(harness.proto_driver("teardown", "wan6tun", DATA), tmp_path, shell)
    assert r.rc == 0, r
    assert not conf.exists()
    assert r.notify() == [{"action": 2, "interface": "wan6tun"}]
    # the daemon ended with status 2 (configuration problem): no restart loop
    assert setup_run(tmp_path, shell).rc == 0
    r = harness.run(harness.proto_driver("teardown", "wan6tun", DATA), tmp_path, shell, env={"ERROR": "2"})
    assert r.notify() == [{"action": 3, "error": ["INVALID_CONFIG"], "interface": "wan6tun"},
                          {"action": 4, "interface": "wan6tun"}, {"action": 2, "interface": "wan6tun"}]


# -- NetifdReporter ------------------------------------------------------------

STATUS = {
    "state": "up", "reason": "tunnel up", "ifname": "cpe-wan6tun",
    "tunnel_addresses": {"local": "2001:db8:1::2/64", "remote": "2001:db8:1::1"},
    "delegated_prefixes": ["2001:db8:2::/64", "2001:db8:3::/48"], "mtu": 1280,
}

# What netifd-proto.sh's helpers send for
#   proto_init_update cpe-wan6tun 1
#   proto_add_ipv6_address 2001:db8:1::2 64
#   proto_add_ipv6_route :: 0 "" "" "" 2001:db8:1::2/64   (and per prefix)
#   proto_add_ipv6_prefix 2001:db8:2::/64 (and 2001:db8:3::/48)
#   proto_send_update wan6tun
# written out by hand from the helpers' documented behaviour: ints/bools typed, mask
# and netmask strings, arrays only when non-empty, "interface" last.
EXPECTED_UP = (
    '{"action":0,"ifname":"cpe-wan6tun","link-up":true,"keep":false,'
    '"ip6addr":[{"ipaddr":"2001:db8:1::2","mask":"64"}],'
    '"routes6":[{"target":"::","netmask":"0","source":"2001:db8:1::2/64"},'
    '{"target":"::","netmask":"0","source":"2001:db8:2::/64"},'
    '{"target":"::","netmask":"0","source":"2001:db8:3::/48"}],'
    '"ip6prefix":["2001:db8:2::/64","2001:db8:3::/48"],"interface":"wan6tun"}')

HELPERS_UP = "\n".join([
    '. "$HARNESS_DIR/stubs/netifd-proto.sh"',
    "proto_init_update cpe-wan6tun 1",
    "proto_add_ipv6_address 2001:db8:1::2 64",
    'proto_add_ipv6_route "::" 0 "" "" "" 2001:db8:1::2/64',
    "for p in 2001:db8:2::/64 2001:db8:3::/48; do",
    '\tproto_add_ipv6_route "::" 0 "" "" "" "$p"',
    "done",
    "proto_add_ipv6_prefix 2001:db8:2::/64",
    "proto_add_ipv6_prefix 2001:db8:3::/48",
    "proto_send_update wan6tun",
    "proto_init_update cpe-wan6tun 1",
    "proto_add_ipv6_address 2001:db8:1::2 64",
    "proto_send_update wan6tun",
    "proto_notify_error wan6tun TUNNEL_SETUP_FAILED 'cannot create cpe-wan6tun'",
    "proto_block_restart wan6tun",
])


def test_reporter_message_is_what_the_helpers_send(tmp_path):
    rep = NetifdReporter("wan6tun", run=lambda argv, t: 0)
    up = rep.build_update(STATUS)
    assert json.dumps(up, separators=(",", ":")) == EXPECTED_UP
    r = harness.run(HELPERS_UP, tmp_path)
    assert r.rc == 0, r
    helpers = r.notify()
    assert helpers[0] == json.loads(EXPECTED_UP)
    assert list(helpers[0]) == list(up)  # same key order too
    rep.was_up = True
    down = rep.build_update(dict(STATUS, state="down"))
    # down: prefix and default routes withdrawn, the tunnel address kept
    assert down == helpers[1] == {"action": 0, "ifname": "cpe-wan6tun", "link-up": True, "keep": False,
                                  "ip6addr": [{"ipaddr": "2001:db8:1::2", "mask": "64"}],
                                  "interface": "wan6tun"}
    assert list(down) == list(helpers[1])
    assert rep.build_error("TUNNEL_SETUP_FAILED", "cannot create cpe-wan6tun") == helpers[2]
    assert rep.build_block_restart() == helpers[3]


def test_reporter_sends_changes_only_through_the_ubus_command(tmp_path):
    log = tmp_path / "ubus.log"
    env = dict(os.environ, UBUS_LOG=str(log))

    def run(argv, timeout):
        argv = [os.path.join(harness.HERE, "bin", "ubus")] + argv[1:]
        return subprocess.run(argv, env=env, timeout=timeout).returncode

    rep = NetifdReporter("wan6tun", run=run)
    assert rep.update(dict(STATUS, state="starting")) is False  # nothing to say yet
    assert rep.update(dict(STATUS, state="down")) is False  # never up: netifd keeps waiting
    assert rep.update(STATUS) is True
    assert rep.update(dict(STATUS, reason="other words", counters={"tx_packets": 5})) is False  # same
    assert rep.update(dict(STATUS, delegated_prefixes=["2001:db8:2::/64"])) is True
    assert rep.update(dict(STATUS, state="down")) is True
    assert rep.update(dict(STATUS, state="down")) is False
    assert rep.error("INVALID_CONFIG") and rep.block_restart()
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert [c["argv"][:5] for c in calls] == [["-t", "5", "call", "network.interface", "notify_proto"]] * 5
    assert calls[0]["data"] == json.loads(EXPECTED_UP)
    assert calls[1]["data"]["ip6prefix"] == ["2001:db8:2::/64"]
    assert "ip6prefix" not in calls[2]["data"] and "routes6" not in calls[2]["data"]
    assert calls[2]["data"]["ip6addr"] == [{"ipaddr": "2001:db8:1::2", "mask": "64"}]
    assert [c["data"]["action"] for c in calls[3:]] == [3, 4]


def test_reporter_survives_a_failing_ubus():
    rep = NetifdReporter("wan6tun", run=lambda argv, t: 4)
    assert rep.update(STATUS) is False
    assert rep.last is None  # retried with the next state change
    rep._run = lambda argv, t: (_ for _ in ()).throw(OSError("no ubus"))
    assert rep.update(STATUS) is False
    rep._run = lambda argv, t: 0
    assert rep.update(STATUS) is True


def test_reporter_ignores_malformed_status():
    rep = NetifdReporter("wan6tun", run=lambda argv, t: 0)
    msg = rep.build_update({"state": "up", "ifname": "x", "tunnel_addresses": {"local": "nonsense"},
                            "delegated_prefixes": ["bad", 7, "2001:db8::/48"]})
    assert "ip6addr" not in msg and msg["ip6prefix"] == ["2001:db8::/48"]
