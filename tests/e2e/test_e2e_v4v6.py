"""TSP v4v6 end to end: IPv4 in IPv6 (RFC 2473) for a router whose WAN has IPv6 only
as far as the broker is concerned. The daemon talks TSP over IPv6 to the reference
broker (tests/tsp_broker), gets an IPv4 tunnel address and a delegated IPv4 prefix, and
the LAN host's IPv4 packets reach the IPv4 host behind the broker through the userspace
4in6 data plane (this kernel has no ip6tnl; the kernel plane is tested under UML in
tests/kernel/test_inside_daemon.py)."""

import ipaddress
import json

import pytest

from tests import harness
from tests.tsp_broker import example_config, start_tsp_broker

pytestmark = pytest.mark.lab

LAN_IF = "eth0"


def ipv6_only_wan(lab):
    """The lab's WAN is dual-stack; a v4v6 router's WAN has no IPv4 of its own."""
    lab.run("cpe", ["ip", "-4", "addr", "flush", "dev", "wan0"])
    lab.run("cpe", ["ip", "-4", "route", "flush", "table", "main"])


def v4v6_daemon(lab, **tunnel):
    t = {"mode": "tsp", "server": ["[%s]" % lab.addrs["broker6"]], "username": "alice", "password": "wonderland",
         "tunnel_mode": "v4v6", "host_type": "router", "prefix_len": 28, "keepalive_interval": 2,
         "dataplane": "userspace", "ip6prefix": None}
    t.update(tunnel)
    return harness.Daemon(lab, mode="tsp", prefix=None, tunnel_extra=t, lan_extra={"dns": None})


def our_tunnel(broker, st):
    """The broker's record of this session's tunnel: the one holding our tunnel IPv4."""
    local4 = st["tunnel_addresses"]["local"].split("/")[0]
    found = [t for t in broker.state()["tunnels"].values() if t["client_ipv4"] == local4 and t["active"]]
    assert len(found) == 1, "no single active broker tunnel for %s: %s" % (local4, broker.state()["tunnels"])
    return found[0]


def lan_host_up(lab, st):
    """Give the LAN host an address from the delegated prefix, as dnsmasq's DHCPv4 would
    (statically here: DHCPv4 on the LAN is dnsmasq's job on OpenWrt, not the daemon's)."""
    pfx = ipaddress.IPv4Network(st["delegated_prefixes4"][0])
    router = st["lan4"]["address"].split("/")[0]
    assert router == str(pfx.network_address + 1) and st["lan4"]["interface"] == "br-lan"
    host = str(pfx.network_address + 2)
    lab.run("lan", ["ip", "addr", "replace", "%s/%d" % (host, pfx.prefixlen), "dev", LAN_IF])
    lab.run("lan", ["ip", "route", "replace", "default", "via", router, "dev", LAN_IF])
    return pfx, host


def reaches_v4host(lab, pfx, host, timeout=15):
    before = lab.v4host_counter(str(pfx))
    harness.wait_for(lambda: lab.ping4("lan", lab.addrs["v4host"], count=1, timeout=1, src=host), timeout=timeout,
                     what="ping from the LAN host to the IPv4 host behind the broker")
    assert lab.v4host_counter(str(pfx)) > before, "the echo requests did not arrive at the IPv4 host"


def test_v4v6_lan_reaches_ipv4_host_recovers_and_cleans_up(make_lab):
    lab = make_lab(v6wan=True)
    ipv6_only_wan(lab)
    broker = start_tsp_broker(lab, example_config(listen6=lab.addrs["broker6"]))
    d = v4v6_daemon(lab).start()
    stopped = False
    try:
        st = d.wait_status(lambda s: s["state"] == "up" and s.get("delegated_prefixes4") and s.get("lan4"),
                           timeout=25, what="v4v6 tunnel up with a delegated IPv4 prefix")
        assert st["dataplane"] == "userspace" and st["tsp"]["tunnel_type"] == "v4v6"
        assert st["wan"]["local_ipv6"] == lab.addrs["cpe_wan6"] and st["wan"]["device"] == "wan0"
        assert st["broker"]["ipv6"] == lab.addrs["broker6"]
        assert ipaddress.IPv4Address(st["tunnel_addresses"]["remote"]) in ipaddress.IPv4Network("203.0.113.64/26")
        assert st["delegated_prefixes"] == [] and st["lans"][0]["prefix"] is None  # no IPv6 for the LAN
        pfx, host = lan_host_up(lab, st)
        assert pfx.prefixlen == 28 and pfx.subnet_of(ipaddress.IPv4Network("203.0.113.128/25"))
        tun = our_tunnel(broker, st)
        assert tun["type"] == "v4v6" and tun["endpoint"] == lab.addrs["cpe_wan6"] and tun["prefix"] == str(pfx)
        reaches_v4host(lab, pfx, host)
        # the rest of the prefix is unreachable on the router, never back into the tunnel
        r = lab.run("cpe", ["ip", "-4", "route", "show", "type", "unreachable"]).stdout
        assert str(pfx) in r
        assert "wonderland" not in d.log()
        out = d.cli("status").stdout
        assert "wonderland" not in out

        # keepalive loss: the path drops IPv4-in-IPv6 (TSP itself, UDP, still passes)
        sessions = st["tsp"]["sessions"]
        lab.nft("isp", "table inet drop4in6 {\n chain drop4in6 {\n  type filter hook forward priority -10; "
                       "policy accept;\n  ip6 nexthdr 4 counter drop\n }\n}\n")
        d.wait_status(lambda s: s["tsp"]["sessions"] > sessions, timeout=30,
                      what="a new TSP session after the keepalive stopped getting answers")
        assert "does not answer" in d.log() or "stopped answering" in d.log()
        lab.run("isp", ["nft", "delete", "table", "inet", "drop4in6"])
        d.wait_status(lambda s: s["state"] == "up", timeout=30, what="up again after the path recovered")
        reaches_v4host(lab, pfx, host, timeout=20)

        # the WAN's IPv6 address changes: a new session from the new address, traffic resumes
        st = d.status()
        sessions = st["tsp"]["sessions"]
        lab.set_wan_address6("2001:db8:c0::3/64")
        st = d.wait_status(lambda s: s["state"] == "up" and s["wan"]["local_ipv6"] == "2001:db8:c0::3"
                           and s["tsp"]["sessions"] > sessions, timeout=20,
                           what="a new session from the WAN's new IPv6 address")
        harness.wait_for(lambda: our_tunnel(broker, d.status())["endpoint"] == "2001:db8:c0::3", timeout=10,
                         what="the broker's endpoint following the WAN address")
        pfx2 = ipaddress.IPv4Network(st["delegated_prefixes4"][0])
        if pfx2 != pfx:  # a broker may hand out another prefix: renumber the LAN host
            pfx, host = lan_host_up(lab, st)
        reaches_v4host(lab, pfx, host, timeout=20)

        # stop leaves nothing behind
        assert d.stop() == 0
        stopped = True
        links = json.loads(lab.run("cpe", ["ip", "-j", "link", "show"]).stdout)
        assert "cpe6in4" not in [link["ifname"] for link in links]
        addrs = lab.run("cpe", ["ip", "-4", "-o", "addr", "show"]).stdout
        assert "203.0.113." not in addrs, addrs
        routes = lab.run("cpe", ["ip", "-4", "route", "show", "table", "all"]).stdout
        assert "default" not in routes and "203.0.113." not in routes, routes
    finally:
        if not stopped:
            d.stop()
        d.cleanup()


def test_v4v6_waits_for_an_ipv6_address_on_the_wan(make_lab):
    lab = make_lab(v6wan=True)
    ipv6_only_wan(lab)
    start_tsp_broker(lab, example_config(listen6=lab.addrs["broker6"]))
    lab.run("cpe", ["ip", "addr", "del", lab.addrs["cpe_wan6_cidr"], "dev", "wan0"])
    d = v4v6_daemon(lab).start()
    try:
        st = d.wait_status(lambda s: s["state"] == "down", timeout=15, what="down without an IPv6 WAN address")
        assert "waiting for an IPv6 address on the WAN" in st["reason"]
        lab.run("cpe", ["ip", "addr", "add", lab.addrs["cpe_wan6_cidr"], "dev", "wan0", "nodad"])
        lab.run("cpe", ["ip", "route", "replace", "::/0", "via", lab.addrs["cpe_gw6"], "dev", "wan0"])
        d.wait_status(lambda s: s["state"] == "up" and s.get("lan4"), timeout=25,
                      what="up once the WAN has its IPv6 address")
    finally:
        d.stop()
        d.cleanup()
