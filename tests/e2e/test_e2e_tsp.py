"""TSP (RFC 5572) mode end to end: the daemon asks the reference TSP broker
(tests/tsp_broker, written independently of our client core) for a tunnel and a
delegated prefix, and the LAN host reaches the IPv6 host through it."""

import ipaddress
import re
import time

import pytest

from tests import harness
from tests.tsp_broker import example_config, start_tsp_broker

pytestmark = pytest.mark.lab


def tsp_daemon(lab, **tunnel):
    t = {"mode": "tsp", "server": ["203.0.113.18"], "username": "alice", "password": "wonderland",
         "host_type": "router", "prefix_len": 48, "keepalive_interval": 2, "ip6prefix": None}
    t.update(tunnel)
    d = harness.Daemon(lab, mode="tsp", prefix=None, tunnel_extra=t)
    return d


def lan_reaches_v6host(lab, d, timeout=20):
    st = d.wait_status(lambda s: s["state"] == "up" and s["lans"] and s["lans"][0]["prefix"], timeout=timeout,
                       what="TSP tunnel up with a delegated prefix")
    lan64 = st["lans"][0]["prefix"]
    a = lab.wait_lan_address(lan64, timeout=15)
    assert a is not None, "no SLAAC address in %s" % lan64
    before = lab.v6host_counter(lan64)
    harness.wait_for(lambda: lab.ping6("lan", harness.V6HOST, count=1, timeout=1, src=a.address), timeout=15,
                     what="ping6 through the TSP tunnel")
    assert lab.v6host_counter(lan64) > before
    return st


def session_tunnel(broker, st):
    """The broker's record of the daemon's current tunnel: the active one holding the
    tunnel address the daemon has (status tunnel_addresses.local)."""
    local6 = str(ipaddress.IPv6Interface(st["tunnel_addresses"]["local"]).ip)
    found = [t for t in broker.state()["tunnels"].values() if t["active"] and t["client_ipv6"] == local6]
    assert len(found) == 1, "no single active broker tunnel for %s: %s" % (local6, broker.state()["tunnels"])
    return found[0]


def test_tsp_v6v4_without_nat(lab):
    broker = start_tsp_broker(lab, example_config())
    d = tsp_daemon(lab, tunnel_mode="v6v4").start()
    try:
        st = lan_reaches_v6host(lab, d)
        assert st["tsp"]["tunnel_type"] == "v6v4" and not st["wan"]["nat_detected"]
        pfx = ipaddress.IPv6Network(st["delegated_prefixes"][0])
        assert pfx.prefixlen == 48 and pfx.subnet_of(ipaddress.IPv6Network("2001:db8:4000::/40"))
        tun = broker.wait_tunnel(timeout=5, type="v6v4")
        assert tun["endpoint"] == "192.0.2.2"
        assert "wonderland" not in d.log()
    finally:
        d.stop()
        d.cleanup()


def test_tsp_v6anyv4_behind_nat_ends_in_v6udpv4(lab_nat):
    lab = lab_nat
    start_tsp_broker(lab, example_config())
    d = tsp_daemon(lab).start()
    try:
        st = lan_reaches_v6host(lab, d)
        assert st["tsp"]["tunnel_type"] == "v6udpv4"
        assert st["wan"]["nat_detected"] and st["dataplane"] == "userspace"
        # inbound too: the v6 host reaches the LAN host through the NAT mapping
        a = lab.wait_lan_address(st["lans"][0]["prefix"], timeout=5)
        assert lab.ping6("v6host", a.address, count=1, timeout=2)
    finally:
        d.stop()
        d.cleanup()


def test_tsp_falls_back_to_udp_when_protocol_41_is_dropped(lab_nat):
    lab = lab_nat
    start_tsp_broker(lab, example_config())
    # the ISP drops protocol 41 (a NAT or firewall that does not pass it)
    lab.nft("isp", "table inet drop41 {\n chain forward41 {\n  type filter hook forward priority -10; policy accept;\n"
                   "  ip protocol 41 drop\n }\n}\n")
    d = tsp_daemon(lab, tsp_transport="tcp").start()  # over TCP the broker offers v6v4 even behind NAT
    try:
        d.wait_status(lambda s: (s.get("tsp") or {}).get("fallback"), timeout=40,
                      what="fallback to v6udpv4 noticed")
        d.wait_status(lambda s: s["state"] == "up" and s["tsp"]["tunnel_type"] == "v6udpv4", timeout=30,
                      what="v6udpv4 tunnel after the fallback")
        lan_reaches_v6host(lab, d)
        res = d.cli("status")
        assert "protocol 41" in res.stdout or "protocol 41" in d.log()
    finally:
        d.stop()
        d.cleanup()


def test_tsp_through_two_nat_hops(make_lab):
    lab = make_lab(nat=True, nat_hops=2)
    start_tsp_broker(lab, example_config())
    d = tsp_daemon(lab).start()
    try:
        st = lan_reaches_v6host(lab, d)
        assert st["tsp"]["tunnel_type"] == "v6udpv4" and st["wan"]["nat_detected"]
    finally:
        d.stop()
        d.cleanup()


def test_tsp_keepalive_holds_udp_mapping_and_nat_change_recovers(lab_nat):
    lab = lab_nat
    broker = start_tsp_broker(lab, example_config())
    lab.set_conntrack_timeouts("isp", udp=5, udp_stream=5)
    d = tsp_daemon(lab, keepalive_interval=2).start()
    try:
        lan_reaches_v6host(lab, d)
        st = d.status()
        a = lab.wait_lan_address(st["lans"][0]["prefix"], timeout=5)
        sessions = st["tsp"]["sessions"]
        time.sleep(16)  # three UDP timeouts with only keepalives on the wire
        st = d.status()
        assert st["state"] == "up" and st["tsp"]["sessions"] == sessions, "the tunnel was rebuilt while idle"
        assert lab.ping6("v6host", a.address, count=1, timeout=2), "inbound lost: the NAT mapping expired"

        # the NAT's public address changes: keepalive loss, a new session at once, traffic
        # again; the LAN keeps its prefix and default router meanwhile (no RA with router
        # lifetime 0, which would cost the LAN hosts 3 s more: RFC 4861's RA spacing)
        probe = harness.EchoProbe(lab, "lan", harness.V6HOST, interval=0.05, duration=40).start()
        try:
            assert probe.wait_reply(timeout=5), "no replies before the change"
            t0 = time.monotonic()
            lab.set_nat_public("203.0.113.3")
            t1 = time.monotonic()
            got = probe.wait_reply(after=t1, timeout=30)
        finally:
            probe.stop()
        assert got, "no traffic after the NAT's address changed"
        took = got[1] - t0
        # dead after the interval (2 s) + 3 answer timeouts of ~1 s (millisecond round
        # trips here), then a session round trip: well under interval + a few seconds
        assert took < 2 + 3 * 1 + 4, "recovery took %.1f s" % took
        assert d.status()["tsp"]["sessions"] > sessions
        withdrawn = [at for at, lifetime in probe.router_ads if at >= t0 and lifetime == 0]
        assert not withdrawn, "the LAN was told to drop its default router during a quick reconnect"
        now = [x for x in lab.lan_addresses() if x.address == a.address]
        assert now and not now[0].deprecated, "the LAN host's address was deprecated: %s" % now
        # the broker's record of THIS session's tunnel (the one holding our tunnel
        # address) has the NAT's new address as the endpoint it sends to
        ours = session_tunnel(broker, d.status())
        assert ours["seen"].startswith("203.0.113.3:") and ours["endpoint"].startswith("203.0.113.3:"), ours
    finally:
        d.stop()
        d.cleanup()


def test_tsp_negotiates_with_30_percent_control_loss(lab_nat):
    lab = lab_nat
    start_tsp_broker(lab, example_config())
    lab.nft("isp", "table inet lossy {\n chain forward30 {\n  type filter hook forward priority -10; policy accept;\n"
                   # TSP control datagrams only (first payload nibble 0xF); data passes
                   "  udp dport 3653 @th,64,4 15 numgen random mod 10 < 3 counter drop\n"
                   "  udp sport 3653 @th,64,4 15 numgen random mod 10 < 3 counter drop\n }\n}\n")
    d = tsp_daemon(lab).start()
    try:
        lan_reaches_v6host(lab, d, timeout=60)
        rules = lab.run("isp", ["nft", "list", "table", "inet", "lossy"]).stdout
        dropped = sum(int(w) for w in re.findall(r"counter packets (\d+)", rules))
        assert dropped > 0, "no control packet was dropped: the test did not test loss\n" + rules
    finally:
        d.stop()
        d.cleanup()


@pytest.mark.parametrize("fault,words", [
    ({"refuse_auth": True}, "authentication failed"),
    ({"busy": True}, "busy"),
])
def test_tsp_error_status_in_plain_words(lab, fault, words):
    broker = start_tsp_broker(lab, example_config())
    broker.set_fault(**fault)
    d = tsp_daemon(lab).start()
    try:
        st = d.wait_status(lambda s: s["state"] == "down" and words in (s["reason"] or "").lower(), timeout=15,
                           what="the TSP error in status")
        assert st["last_error"]
        assert d.cli("status").returncode == 1
    finally:
        d.stop()
        d.cleanup()


def test_tsp_redirect_lands_on_second_broker(lab):
    first = start_tsp_broker(lab, example_config())
    second = start_tsp_broker(lab, example_config(listen="203.0.113.19", tunnel_prefix="2001:db8:101::/64",
                                                  prefix_pool="2001:db8:5000::/40"))
    first.set_fault(redirect=["203.0.113.19"])
    d = tsp_daemon(lab, tunnel_mode="v6v4").start()
    try:
        st = lan_reaches_v6host(lab, d)
        assert st["broker"]["server"].startswith("203.0.113.19")
        second.wait_tunnel(timeout=5, type="v6v4")
    finally:
        d.stop()
        d.cleanup()
