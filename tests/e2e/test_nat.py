"""End to end behind the ISP's NAT: endpoint registration without myip, NAT state kept
by the keepalive (with a control run that shows the test can fail), two NATs in a row,
and the NAT's public address changing under a running tunnel."""

import shutil
import threading
import time

import pytest

from tests import harness

pytestmark = pytest.mark.lab

NAT_PUBLIC = "203.0.113.2"
NAT_PUBLIC2 = "203.0.113.3"


@pytest.fixture
def daemons():
    """start(lab, **daemon_config kw) -> a running harness.Daemon; all stopped afterwards."""
    started = []

    def start(lab, **kw):
        d = harness.Daemon(lab, **kw)
        started.append(d)
        return d.start()

    try:
        yield start
    finally:
        for d in started:
            d.stop()
            shutil.rmtree(d.dir, ignore_errors=True)


def _up(daemon, timeout=30):
    return daemon.wait_status(lambda s: s.get("state") == "up", timeout=timeout, what="tunnel up")


def _lan_address(lab, daemon):
    """The LAN host's SLAAC address inside the LAN /64 the daemon announces."""
    prefix = daemon.status()["lans"][0]["prefix"]
    a = lab.wait_lan_address(prefix, timeout=30)
    assert a is not None, "the LAN host got no address in %s: %s" % (prefix, lab.lan_addresses())
    return prefix, a.address


def _lan_reaches_v6host(lab, prefix, timeout=20):
    """LAN host -> v6 host ping works, and the v6 host itself counted the request."""
    before = lab.v6host_counter(prefix)
    harness.wait_for(lambda: lab.ping6("lan", harness.V6HOST, count=1, timeout=1), timeout=timeout,
                     interval=0.2, what="ping6 from the LAN host to the v6 host")
    assert lab.v6host_counter(prefix) > before, "the v6 host did not see the LAN host's echo request"


def _proto41_entries(lab, ns):
    """conntrack entries of protocol 41 in `ns` (text lines), or None without the tool."""
    if not shutil.which("conntrack"):
        return None
    r = lab.run(ns, ["conntrack", "-L"], check=False)
    return [line for line in r.stdout.splitlines() if " 41 " in " %s " % line and "unknown" in line]


def test_behind_nat_registers_public_address_without_myip(lab_nat, daemons):
    lab = lab_nat
    assert lab.addrs["cpe_wan"] == "198.51.100.2"
    broker = lab.start_broker(harness.broker_config())
    d = daemons(lab)
    st = _up(d)

    # What the update carried, seen at the broker: no myip, source = the NAT's address.
    bs = broker.state()
    updates = [r for r in bs["requests"] if r.get("hostname") == harness.TUNNEL_ID]
    assert updates, bs["requests"]
    for r in updates:
        assert r["myip"] is None, "the update sent myip=%s from behind NAT" % r["myip"]
        assert r["source"] == NAT_PUBLIC
    t = bs["tunnels"][harness.TUNNEL_ID]
    assert t["endpoint"] == NAT_PUBLIC
    assert t["last_update"]["myip"] is None
    assert t["last_update"]["answer"] == "good"

    wan = st["wan"]
    assert wan["local_ipv4"] == "198.51.100.2"
    assert wan["public_ipv4"] == NAT_PUBLIC
    assert wan["nat_detected"] is True
    out = d.cli("status")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "203.0.113.2 (behind NAT)" in out.stdout

    prefix, _addr = _lan_address(lab, d)
    _lan_reaches_v6host(lab, prefix)


def test_two_nat_hops(make_lab, daemons):
    lab = make_lab(nat=True, nat_hops=2)
    broker = lab.start_broker(harness.broker_config())
    d = daemons(lab)
    st = _up(d)
    t = broker.tunnel(harness.TUNNEL_ID)
    # The outer NAT's address, not the inner NAT's 198.51.100.130 nor our WAN address.
    assert t["endpoint"] == NAT_PUBLIC
    assert t["last_update"]["myip"] is None
    assert st["wan"]["public_ipv4"] == NAT_PUBLIC and st["wan"]["nat_detected"] is True
    prefix, lan_addr = _lan_address(lab, d)
    _lan_reaches_v6host(lab, prefix)
    # ... and inbound, from the v6 host through both NATs to the LAN host.
    assert lab.ping6("v6host", lan_addr, count=3, timeout=1)


def test_keepalive_holds_nat_state(make_lab, daemons):
    """Two labs side by side (so the idle time is spent once): the NAT forgets protocol-41
    state after 5 s; with keepalive_interval 2 an inbound ping still reaches the LAN host
    after ~3 timeouts of idle LAN, with the keepalive off (the control) it does not."""
    idle = 16.0
    labs = {}
    for name, interval in (("keepalive", 2), ("control", 0)):
        lab = make_lab(nat=True)
        lab.set_conntrack_timeouts("isp", generic=5)
        lab.start_broker(harness.broker_config())
        d = daemons(lab, tunnel_extra={"keepalive_interval": interval})
        labs[name] = (lab, d)
    ready = {}
    for name, (lab, d) in labs.items():
        st = _up(d)
        assert st["keepalive"]["enabled"] is (name == "keepalive")
        prefix, lan_addr = _lan_address(lab, d)
        _lan_reaches_v6host(lab, prefix)
        # Inbound works in both while the NAT state is fresh (so the control's later
        # failure is the NAT's timeout and nothing else).
        assert lab.ping6("v6host", lan_addr, count=2, timeout=1), name
        ready[name] = lan_addr

    sent_before = labs["keepalive"][1].status()["keepalive"]["sent"]
    time.sleep(idle)  # the LAN is idle: nothing of ours crosses the tunnel but keepalives

    ka_lab, ka_d = labs["keepalive"]
    ctl_lab, ctl_d = labs["control"]
    entries = _proto41_entries(ctl_lab, "isp")
    if entries is not None:
        assert entries == [], "the control NAT still has protocol-41 state: %s" % entries
    entries = _proto41_entries(ka_lab, "isp")
    if entries is not None:
        assert entries, "the keepalive lab's NAT lost its protocol-41 state"

    results = {}

    def inbound(name):
        lab = labs[name][0]
        results[name] = lab.ping6("v6host", ready[name], count=3, timeout=1)

    threads = [threading.Thread(target=inbound, args=(n,)) for n in labs]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    assert results.get("keepalive") is True, \
        "the v6 host could not reach the LAN host after %.0f s idle although keepalives ran" % idle
    assert results.get("control") is False, \
        "control run: inbound ping got through without keepalives, so the test proves nothing"
    ka = ka_d.status()["keepalive"]
    # One echo per interval while idle (give or take one at the edges).
    assert ka["sent"] - sent_before >= idle / 2 - 2, ka
    assert ka["alive"] is True
    assert ctl_d.status()["keepalive"] == {"enabled": False}


def test_nat_public_address_change(lab_nat, daemons):
    """The NAT's public address changes (conntrack flushed): the broker's packets stop
    reaching us, the keepalive notices (misses_allowed echoes unanswered), the daemon sends
    the update again without myip, and the broker registers the new address."""
    lab = lab_nat
    interval, misses = 1, 3  # misses: the keepalive's default misses_allowed
    broker = lab.start_broker(harness.broker_config())
    d = daemons(lab, tunnel_extra={"keepalive_interval": interval})
    _up(d)
    prefix, _addr = _lan_address(lab, d)
    _lan_reaches_v6host(lab, prefix)
    goods = broker.tunnel(harness.TUNNEL_ID)["updates"]["good"]

    # While the keepalive says the broker is gone the router withdraws itself as the LAN's
    # default router (RA lifetime 0, RFC 7084 G-4); the RA that restores it may follow that
    # one no sooner than MIN_DELAY_BETWEEN_RAS = 3 s (RFC 4861), hence the "+ 3".
    bound = interval * (misses + 1) + 3 + 3
    probe = harness.EchoProbe(lab, "lan", harness.V6HOST, interval=0.1, duration=bound + 10).start()
    try:
        assert probe.wait_reply(timeout=5), "LAN traffic does not flow before the change"
        t0 = time.monotonic()
        lab.set_nat_public(NAT_PUBLIC2)  # SNAT to the new address, conntrack flushed
        t1 = time.monotonic()
        got = probe.wait_reply(after=t1, timeout=bound + 5)
    finally:
        probe.stop()
    assert got is not None, "LAN traffic did not flow again within %.0f s;\n%s" % (
        bound + 5, d.log()[-3000:])
    took = got[1] - t0
    assert probe.unanswered_between(t1, got[0]) > 0, "no outage at all: the change did not bite"
    t = broker.tunnel(harness.TUNNEL_ID)
    assert t["endpoint"] == NAT_PUBLIC2
    assert t["updates"]["good"] == goods + 1
    assert t["last_update"]["myip"] is None and t["last_update"]["source"] == NAT_PUBLIC2
    assert "does not answer" in d.log(), "the change was not noticed through the keepalive"
    assert took <= bound, "recovery after the NAT's address change took %.1f s (bound %d s)" % (took, bound)
    st = d.wait_status(lambda s: s["wan"]["public_ipv4"] == NAT_PUBLIC2 and s["state"] == "up",
                       timeout=interval * 2 + 2, what="status with the new public address")
    assert st["wan"]["nat_detected"] is True
