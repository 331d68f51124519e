"""The daemon on the kernel data plane, end to end, inside User-Mode Linux (a kernel with
sit). Run by tests/unit/test_kernel_path.py through tests/kernel/runner.py; skipped
anywhere else. The lab is tests/lab's network without NAT (tests/kernel/umllab.py).

The broker side is the reference broker's userspace protocol-41 PoP, so every packet
crosses between the kernel's sit driver and an independent implementation."""

import ipaddress
import os
import re

import pytest

from tests import harness
from tests.harness import PREFIX, V6HOST
from tests.kernel.runner import IN_VM_ENV

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(os.environ.get(IN_VM_ENV) != "uml",
                       reason="runs inside User-Mode Linux (tests/unit/test_kernel_path.py boots it)"),
]

LAN64 = "2001:db8:1234::/64"
IFNAME = "cpe6in4"  # the daemon's default tunnel interface name


def sit_details(lab, ifname=IFNAME):
    """(ifindex, 'ip -d link show' text) of ifname in the cpe namespace, or (None, '')."""
    r = lab.run("cpe", ["ip", "-d", "-o", "link", "show", "dev", ifname], check=False)
    if r.returncode != 0:
        return None, ""
    return int(r.stdout.split(":", 1)[0]), r.stdout


def reach_v6host(lab, src, timeout=20):
    before = lab.v6host_counter()
    harness.wait_for(lambda: lab.ping6("lan", V6HOST, count=1, timeout=2, src=src), timeout=timeout,
                     what="ping6 from the LAN host (%s) to %s" % (src, V6HOST))
    assert lab.v6host_counter() > before, "the v6 host did not count the echo request"


def leftovers(lab):
    """What the daemon may have left in the cpe namespace: links that are not the lab's
    (sit0 and ip6tnl0 are the kernel's own fallback devices), IPv6 routes and addresses of the tunnel
    and of the delegated prefix."""
    found = []
    links = lab.run("cpe", ["ip", "-o", "link", "show"]).stdout
    for line in links.splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        if name not in ("lo", "wan0", "lanp0", "br-lan", "sit0", "ip6tnl0"):
            found.append("link " + name)
    routes = lab.run("cpe", ["ip", "-6", "route", "show", "table", "all"]).stdout
    for line in routes.splitlines():
        if IFNAME in line or "2001:db8:1234" in line or "2001:db8:1:" in line or line.startswith("default"):
            found.append("route " + line.strip())
    addrs = lab.run("cpe", ["ip", "-6", "-o", "addr", "show", "scope", "global"]).stdout
    for line in addrs.splitlines():
        found.append("address " + " ".join(line.split()[1:4]))
    return found


def kernel_up(pred):
    """A wait_status predicate that fails at once when the daemon says the kernel cannot
    make the tunnel (instead of waiting out the timeout)."""
    def check(st):
        err = st.get("last_error") or ""
        assert "no sit" not in err and "no ip6tnl" not in err, "the daemon found no kernel tunnel: %s" % err
        return pred(st)
    return check


def stop_daemon(d):
    """Stop the daemon and remove its run directory: (its exit status, its log)."""
    rc = d.stop()
    log = d.log()
    d.cleanup()
    return rc, log


def tic_daemon(lab, pop):
    """The daemon (not started yet) for the PoP's tunnel T3740 (6in4-heartbeat) over TIC
    with STARTTLS required, on the kernel's sit."""
    t = {"mode": "tic", "server": ["203.0.113.18"], "username": "CPE1-SIXXS", "password": "tic-secret-1",
         "tunnelid": "T3740", "ip6prefix": ["2001:db8:2f02::/48"], "keepalive_interval": 2, "tic_tls": "require",
         "ca_file": pop.ca_file, "dataplane": "kernel"}
    d = harness.Daemon(lab, mode="tic", prefix="2001:db8:2f02::/48", tunnel_extra=t)
    # the TIC cache goes to the run directory, not the system's /var/run
    d.write_config(open(d.path).read().replace("config globals 'main'",
                                               "config globals 'main'\n\toption state_dir '%s'" % d.dir))
    return d


def start(lab, **kw):
    broker = lab.start_broker(harness.broker_config())
    d = harness.Daemon(lab, **kw).start()
    return broker, d


def test_http_update_on_a_real_sit_tunnel(umllab):
    lab = umllab
    assert leftovers(lab) == []
    broker, d = start(lab, tunnel_extra={"dataplane": "kernel"})
    try:
        st = d.wait_status(kernel_up(lambda s: s["state"] == "up"), timeout=40, what="tunnel up")
        assert st["dataplane"] == "kernel"
        assert st["delegated_prefixes"] == [PREFIX]
        assert broker.tunnel(harness.TUNNEL_ID)["endpoint"] == "192.0.2.2"

        idx, link = sit_details(lab)
        assert idx is not None, "no %s link in the cpe namespace" % IFNAME
        assert " sit " in link and "remote 203.0.113.18 local 192.0.2.2" in link, link
        addrs = lab.run("cpe", ["ip", "-6", "-o", "addr", "show", "dev", IFNAME]).stdout
        assert "2001:db8:1::2/64" in addrs, addrs

        a = lab.wait_lan_address(LAN64, timeout=30)
        assert a is not None, "LAN host got no SLAAC address in %s" % LAN64
        reach_v6host(lab, a.address)
        assert lab.ping6("v6host", a.address, count=1, timeout=3), "v6 host -> LAN host failed"
        st = d.status()
        assert st["counters"]["tx_packets"] > 0 and st["counters"]["rx_packets"] > 0, st["counters"]
        # the sit device's own counters saw the traffic (not a userspace plane in disguise)
        stats = lab.run("cpe", ["cat", "/sys/class/net/%s/statistics/tx_packets" % IFNAME]).stdout
        assert int(stats) > 0

        # WAN renumbered: the same sit device gets the new local address in place
        lab.set_wan_address("192.0.2.3/24", "192.0.2.1")
        broker.wait_until(lambda s: s["tunnels"][harness.TUNNEL_ID]["endpoint"] == "192.0.2.3", timeout=20)
        d.wait_status(lambda s: s["wan"]["local_ipv4"] == "192.0.2.3" and s["state"] == "up", timeout=20,
                      what="daemon following the new WAN address")
        idx2, link = sit_details(lab)
        assert idx2 == idx, "the sit device was re-created (ifindex %s -> %s)" % (idx, idx2)
        assert "remote 203.0.113.18 local 192.0.2.3" in link, link
        reach_v6host(lab, a.address)
    finally:
        rc, log = stop_daemon(d)
    assert rc == 0, log[-3000:]
    left = leftovers(lab)
    assert left == [], "left behind after the daemon stopped: %s" % left


def test_auto_picks_the_kernel_and_tsp_v6v4_runs_on_sit(umllab):
    """dataplane unset (= auto) in TSP v6v4 mode: the kernel has sit, so sit it is."""
    from tests.tsp_broker import example_config, start_tsp_broker

    lab = umllab
    broker = start_tsp_broker(lab, example_config())
    t = {"mode": "tsp", "server": ["203.0.113.18"], "username": "alice", "password": "wonderland",
         "host_type": "router", "prefix_len": 48, "keepalive_interval": 2, "ip6prefix": None,
         "tunnel_mode": "v6v4"}
    d = harness.Daemon(lab, mode="tsp", prefix=None, tunnel_extra=t).start()
    try:
        st = d.wait_status(kernel_up(lambda s: s["state"] == "up" and s["lans"] and s["lans"][0]["prefix"]),
                           timeout=40, what="TSP tunnel up with a delegated prefix")
        assert st["dataplane"] == "kernel"
        assert st["tsp"]["tunnel_type"] == "v6v4"
        tun = broker.wait_tunnel(timeout=10, type="v6v4")
        assert tun["endpoint"] == "192.0.2.2"
        idx, link = sit_details(lab, st["ifname"])
        assert idx is not None and " sit " in link, link
        assert re.search(r"remote \d+\.\d+\.\d+\.\d+ local 192\.0\.2\.2", link), link
        lan64 = st["lans"][0]["prefix"]
        assert ipaddress.IPv6Network(lan64).subnet_of(ipaddress.IPv6Network("2001:db8:4000::/40"))
        a = lab.wait_lan_address(lan64, timeout=30)
        assert a is not None, "no SLAAC address in %s" % lan64
        reach_v6host(lab, a.address)
    finally:
        rc, log = stop_daemon(d)
    assert rc == 0, log[-3000:]
    assert sit_details(lab, st["ifname"])[0] is None, "the sit device outlived the daemon"


def test_tsp_v4v6_on_a_real_ip6tnl(request):
    """TSP v4v6 with dataplane 'kernel': IPv4 in IPv6 on the kernel's ip6tnl (proto 4), the
    broker's side the reference broker's userspace raw IPv6 protocol-4 socket. The WAN is
    IPv6 only; the LAN host (addressed from the delegated IPv4 prefix, as dnsmasq's DHCPv4
    would) reaches the IPv4 host behind the broker; a WAN IPv6 change moves the broker's
    endpoint; stop removes the ip6tnl device, addresses and routes."""
    from tests.e2e.test_e2e_v4v6 import ipv6_only_wan, lan_host_up, our_tunnel, reaches_v4host, v4v6_daemon
    from tests.kernel.umllab import UmlLab
    from tests.tsp_broker import example_config, start_tsp_broker

    lab = UmlLab(v6wan=True)
    lab.build()
    request.addfinalizer(lab.teardown)
    ipv6_only_wan(lab)
    broker = start_tsp_broker(lab, example_config(listen6=lab.addrs["broker6"]))
    d = v4v6_daemon(lab, dataplane="kernel").start()
    try:
        st = d.wait_status(kernel_up(lambda s: s["state"] == "up" and s.get("lan4")), timeout=40,
                           what="v4v6 tunnel up with a delegated IPv4 prefix")
        assert st["dataplane"] == "kernel" and st["tsp"]["tunnel_type"] == "v4v6"
        idx, link = sit_details(lab, st["ifname"])
        assert idx is not None and "ip6tnl ipip" in link, link
        assert "remote %s local %s" % (lab.addrs["broker6"], lab.addrs["cpe_wan6"]) in link, link
        addrs = lab.run("cpe", ["ip", "-4", "-o", "addr", "show", "dev", st["ifname"]]).stdout
        assert st["tunnel_addresses"]["local"] in addrs, addrs
        pfx, host = lan_host_up(lab, st)
        reaches_v4host(lab, pfx, host, timeout=20)
        assert our_tunnel(broker, st)["endpoint"] == lab.addrs["cpe_wan6"]
        stats = lab.run("cpe", ["cat", "/sys/class/net/%s/statistics/tx_packets" % st["ifname"]]).stdout
        assert int(stats) > 0  # the ip6tnl device carried it, not a userspace plane

        sessions = st["tsp"]["sessions"]
        lab.set_wan_address6("2001:db8:c0::3/64")
        st = d.wait_status(lambda s: s["state"] == "up" and s["wan"]["local_ipv6"] == "2001:db8:c0::3"
                           and s["tsp"]["sessions"] > sessions, timeout=30,
                           what="a new session from the WAN's new IPv6 address")
        assert our_tunnel(broker, st)["endpoint"] == "2001:db8:c0::3"
        idx, link = sit_details(lab, st["ifname"])
        assert "local 2001:db8:c0::3" in link, link
        pfx, host = lan_host_up(lab, st)
        reaches_v4host(lab, pfx, host, timeout=20)
    finally:
        rc, log = stop_daemon(d)
    assert rc == 0, log[-3000:]
    assert sit_details(lab, st["ifname"])[0] is None, "the ip6tnl device outlived the daemon"
    left4 = lab.run("cpe", ["ip", "-4", "-o", "addr", "show"]).stdout + lab.run(
        "cpe", ["ip", "-4", "route", "show", "table", "all"]).stdout
    assert "203.0.113." not in left4 and "default" not in left4, left4


def test_tic_heartbeat_tunnel_on_a_real_sit_follows_wan_change(umllab):
    """SixXS mode ('tic'), tunnel T3740 of the reference PoP (6in4-heartbeat): TIC over
    STARTTLS, the 6in4 part on the kernel's sit; a WAN change sends a heartbeat at once
    (the PoP moves the endpoint) and gives the same sit device its new local address."""
    from tests.sixxs_pop import example_config, start_pop

    lab = umllab
    assert leftovers(lab) == []
    pop = start_pop(lab, example_config())
    d = tic_daemon(lab, pop).start()
    try:
        st = d.wait_status(kernel_up(lambda s: s["state"] == "up" and s["lans"] and s["lans"][0]["prefix"]),
                           timeout=40, what="SixXS tunnel up with a LAN prefix")
        assert st["dataplane"] == "kernel"
        assert st["sixxs"]["type"] == "6in4-heartbeat" and st["sixxs"]["config_from"] == "TIC"
        assert pop.state()["tic"]["starttls"] >= 1
        assert pop.tunnel("T3740")["endpoint"] == "192.0.2.2"
        ifname = st["ifname"]
        idx, link = sit_details(lab, ifname)
        assert idx is not None, "no %s link in the cpe namespace" % ifname
        assert " sit " in link and "remote 203.0.113.18 local 192.0.2.2" in link, link
        addrs = lab.run("cpe", ["ip", "-6", "-o", "addr", "show", "dev", ifname]).stdout
        assert "2001:db8:2ff:2::2/64" in addrs, addrs

        lan64 = st["lans"][0]["prefix"]
        assert ipaddress.IPv6Network(lan64).subnet_of(ipaddress.IPv6Network("2001:db8:2f02::/48"))
        a = lab.wait_lan_address(lan64, timeout=30)
        assert a is not None, "no SLAAC address in %s" % lan64
        reach_v6host(lab, a.address)
        stats = lab.run("cpe", ["cat", "/sys/class/net/%s/statistics/tx_packets" % ifname]).stdout
        assert int(stats) > 0

        # WAN renumbered: the heartbeat goes out at once (the PoP's interval is 60 s, so
        # only that moves the endpoint within the wait) and the same sit is re-pointed
        moves = pop.tunnel("T3740")["endpoint_moves"]
        lab.set_wan_address("192.0.2.3/24", "192.0.2.1")
        pop.wait_until(lambda s: s["tunnels"]["T3740"]["endpoint"] == "192.0.2.3", timeout=15)
        assert pop.tunnel("T3740")["endpoint_moves"] > moves
        d.wait_status(lambda s: s["wan"]["local_ipv4"] == "192.0.2.3" and s["state"] == "up", timeout=20,
                      what="daemon following the new WAN address")
        idx2, link = sit_details(lab, ifname)
        assert idx2 == idx, "the sit device was re-created (ifindex %s -> %s)" % (idx, idx2)
        assert "remote 203.0.113.18 local 192.0.2.3" in link, link
        reach_v6host(lab, a.address)
        assert "tic-secret-1" not in d.log() and "hbsecret456" not in d.log()
    finally:
        rc, log = stop_daemon(d)
    assert rc == 0, log[-3000:]
    assert sit_details(lab, ifname)[0] is None, "the sit device outlived the daemon"
    left = leftovers(lab)
    assert left == [], "left behind after the daemon stopped: %s" % left
