"""Whole-network tests: the real daemon in the lab's router namespace, the reference
broker, and a LAN host that must reach the IPv6 host through the tunnel."""

import json
import os
import signal
import subprocess
import sys

import pytest

from tests import harness
from tests.harness import PREFIX, PREFIX2, V6HOST

pytestmark = pytest.mark.lab


def lan64(st):
    return st["lans"][0]["prefix"]


def reach_v6host(lab, prefix, src=None, timeout=15):
    """ping6 from the LAN host to the v6 host; also checked at the v6 host."""
    before = lab.v6host_counter(prefix)
    harness.wait_for(lambda: lab.ping6("lan", V6HOST, count=1, timeout=1, src=src), timeout=timeout,
                     what="ping6 from the LAN host to %s" % V6HOST)
    assert lab.v6host_counter(prefix) > before, "the v6 host did not count the echo request"


_daemons = []


@pytest.fixture(autouse=True)
def _stop_daemons():
    yield
    while _daemons:
        d = _daemons.pop()
        d.stop()
        d.cleanup()


def up(lab, **kw):
    broker = lab.start_broker(harness.broker_config())
    d = harness.Daemon(lab, **kw).start()
    _daemons.append(d)
    d.wait_status(lambda s: s["state"] == "up", timeout=20, what="tunnel up")
    return broker, d


def test_lan_host_reaches_v6_host_through_tunnel(lab):
    broker, d = up(lab)
    try:
        st = d.status()
        assert st["dataplane"] == "userspace"  # this kernel has no sit
        assert st["wan"]["local_ipv4"] == "192.0.2.2"
        assert st["wan"]["public_ipv4"] == "192.0.2.2" and not st["wan"]["nat_detected"]
        assert st["delegated_prefixes"] == [PREFIX]
        assert lan64(st) == "2001:db8:1234::/64"
        assert st["last_update"]["result"] == "ok"
        assert broker.tunnel(harness.TUNNEL_ID)["endpoint"] == "192.0.2.2"

        a = lab.wait_lan_address("2001:db8:1234::/64", timeout=15)
        assert a is not None, "LAN host got no SLAAC address in the delegated /64"
        reach_v6host(lab, lan64(st), src=a.address)

        # and inbound: the v6 host reaches the LAN host
        assert lab.ping6("v6host", a.address, count=1, timeout=2)

        st = d.status()
        assert st["counters"]["tx_packets"] > 0 and st["counters"]["rx_packets"] > 0
        assert st["keepalive"]["enabled"]

        res = d.cli("status")
        assert res.returncode == 0, res.stderr
        assert res.stdout.startswith("cpe-tunnel UP")
        assert "2001:db8:1234::/64 on br-lan" in res.stdout
        res = d.cli("status", "--json")
        assert res.returncode == 0 and json.loads(res.stdout)["state"] == "up"
        # the update key never shows
        import base64
        b64 = base64.b64encode(("%s:%s" % (harness.USERNAME, harness.UPDATEKEY)).encode()).decode()
        for text in (res.stdout, d.log(), d.cli("status").stdout):
            assert harness.UPDATEKEY not in text and b64 not in text
    finally:
        assert d.stop() == 0


@pytest.mark.parametrize("wan_device", ["wan0", None], ids=["wan_device", "default-route"])
def test_wan_address_change_moves_endpoint(lab, wan_device):
    # wan_device None: the daemon follows the device of the IPv4 default route
    broker, d = up(lab, tunnel_extra={"wan_device": wan_device})
    assert d.status()["wan"]["device"] == "wan0"
    try:
        a = lab.wait_lan_address("2001:db8:1234::/64", timeout=15)
        reach_v6host(lab, "2001:db8:1234::/64", src=a.address)
        lab.set_wan_address("192.0.2.3/24", "192.0.2.1")
        broker.wait_until(lambda s: s["tunnels"][harness.TUNNEL_ID]["endpoint"] == "192.0.2.3", timeout=5)
        d.wait_status(lambda s: s["wan"]["local_ipv4"] == "192.0.2.3" and s["state"] == "up", timeout=5,
                      what="daemon following the new WAN address")
        reach_v6host(lab, "2001:db8:1234::/64", src=a.address, timeout=5)
        assert "WAN changed" in d.log()
    finally:
        d.stop()


def test_prefix_change_deprecates_old_prefix(lab):
    broker, d = up(lab)
    try:
        old = lab.wait_lan_address("2001:db8:1234::/64", timeout=15)
        assert old is not None
        d.write_config(d.config(prefix=PREFIX2))
        d.signal(signal.SIGHUP)
        d.wait_status(lambda s: s["delegated_prefixes"] == [PREFIX2], timeout=10, what="new prefix")
        new = lab.wait_lan_address("2001:db8:5678::/64", timeout=15)
        assert new is not None, "LAN host got no address from the new prefix"
        # RFC 7084 L-13: the old prefix is advertised with preferred lifetime 0
        harness.wait_for(lambda: {x.address: x for x in lab.lan_addresses()}[old.address].deprecated,
                         timeout=10, what="old address deprecated")
        addrs = {x.address: x for x in lab.lan_addresses()}
        assert addrs[old.address].preferred_lft == 0
        assert 0 < addrs[old.address].valid_lft <= 7200
        st = d.status()
        assert [x["prefix"] for x in st["lans"][0]["deprecated"]] == ["2001:db8:1234::/64"]
        reach_v6host(lab, "2001:db8:5678::/64", src=new.address)
        # a new prefix does not need a new data plane
        assert "restarting tunnel" not in d.log()
        routes = lab.run("cpe", ["ip", "-6", "route", "show", "table", "all"]).stdout
        assert "unreachable 2001:db8:5678::/48" in routes and "2001:db8:1234::/48" not in routes
    finally:
        d.stop()


def test_reload_bad_config_keeps_last_good(lab):
    broker, d = up(lab)
    try:
        a = lab.wait_lan_address("2001:db8:1234::/64", timeout=15)
        tx_before = d.status()["counters"]["tx_packets"]
        good = open(d.path).read()
        d.write_config(good.replace("option mtu", "option mtu").replace(
            "option mode 'http-update'", "option mode 'http-update'\n\toption mtu '9000'"))
        assert d.call("reload")["message"].startswith("configuration rejected")
        st = d.status()
        assert st["state"] == "up"
        assert "option 'mtu'" in st["config_error"] and "9000" in st["config_error"]
        reach_v6host(lab, "2001:db8:1234::/64", src=a.address)

        # a LAN-only change is applied without restarting the tunnel
        d.write_config(d.config(lan_extra={"ra_interval": 20}))
        d.signal(signal.SIGHUP)
        d.wait_status(lambda s: s["lans"][0]["ra_interval"] == 20 and not s["config_error"], timeout=5,
                      what="LAN change applied")
        assert d.status()["counters"]["tx_packets"] >= tx_before  # same data plane, counters kept
        assert "restarting tunnel" not in d.log()
    finally:
        d.stop()


def test_stop_leaves_nothing_behind(lab):
    broker, d = up(lab)
    a = lab.wait_lan_address("2001:db8:1234::/64", timeout=15)
    assert a is not None
    assert d.stop() == 0
    links = lab.run("cpe", ["ip", "-j", "link", "show"]).stdout
    assert "cpe6in4" not in links
    addrs = lab.run("cpe", ["ip", "-6", "addr", "show", "dev", "br-lan", "scope", "global"]).stdout
    assert "2001:db8:1234" not in addrs
    routes = lab.run("cpe", ["ip", "-6", "route", "show", "table", "all"]).stdout
    assert "2001:db8:1234::/48" not in routes
    assert lab.run("cpe", ["ip", "-6", "route", "show", "default"]).stdout.strip() == ""
    # the final RA (router lifetime 0, prefixes deprecated) reached the LAN host
    harness.wait_for(lambda: all(x.deprecated for x in lab.lan_addresses()
                                 if x.address.startswith("2001:db8:1234:")), timeout=5,
                     what="LAN address deprecated after stop")
    r = lab.run("lan", ["ip", "-6", "route", "show", "default"]).stdout
    assert r.strip() == "", "LAN host still has a default route: %r" % r


BAD_CONFIGS = [
    ("config tunnel 'he'\n\toption mode 'http-update'\n\toption peeraddr '203.0.113.400'\n",
     ["option 'peeraddr'", "203.0.113.400"]),
    ("config tunnel 'he'\n\toption mode 'telepathy'\n", ["option 'mode'", "telepathy"]),
    ("config tunnel 'he'\n\toption mode 'static'\n\toption peeraddr '203.0.113.18'\n"
     "\toption ip6addr '2001:db8:1::2/64'\n\toption mtu 'big'\n", ["option 'mtu'", "'big'"]),
    ("config tunnel 'he\n", ["line 1"]),
    ("option mode 'x'\n", ["line 1", "outside"]),
    ("config tunnel 'he'\n\toption mode 'http-update'\n\toption peeraddr '203.0.113.18'\n"
     "\toption ip6addr '2001:db8:1::2/64'\n\toption username 'u'\n\toption tunnelid '1'\n",
     ["updatekey"]),
]


@pytest.mark.parametrize("text,expect", BAD_CONFIGS)
def test_bad_config_check_and_start_exit_2(tmp_path, text, expect):
    path = tmp_path / "cpe_tunnel"
    path.write_text(text)
    env = dict(os.environ, PYTHONPATH=harness.ROOT)
    for argv in (["--check", "-c", str(path)], ["-f", "-c", str(path)]):
        r = subprocess.run([sys.executable, "-m", "cpe_tunnel.daemon"] + argv, capture_output=True,
                           text=True, env=env, timeout=20)
        assert r.returncode == 2, (argv, r.stdout, r.stderr)
        for e in expect:
            assert e in r.stderr, (e, r.stderr)


def test_shipped_config_check_names_what_to_fill_in():
    path = os.path.join(harness.ROOT, "files", "etc", "config", "cpe_tunnel")
    r = subprocess.run([sys.executable, "-m", "cpe_tunnel.daemon", "--check", "-c", path], capture_output=True,
                       text=True, env=dict(os.environ, PYTHONPATH=harness.ROOT), timeout=20)
    assert r.returncode == 2
    assert "peeraddr" in r.stderr and "required" in r.stderr


def test_static_mode_without_broker_update(lab):
    # mode 'static': plain 6in4 to a broker that already knows our endpoint
    lab.start_broker(harness.broker_config(endpoint="192.0.2.2"))
    d = harness.Daemon(lab, mode="static").start()
    _daemons.append(d)
    st = d.wait_status(lambda s: s["state"] == "up", timeout=20, what="static tunnel up")
    assert "last_update" not in st and st["mode"] == "static"
    a = lab.wait_lan_address("2001:db8:1234::/64", timeout=15)
    reach_v6host(lab, "2001:db8:1234::/64", src=a.address)
