"""TSP v4v6 in the daemon, piece by piece: server addresses (IPv6 literals), the schema's
combination checks, the IPv4 keepalive echo socket against a real kernel, and two
review fixes in the supervisor (keepalive deadline without a counters read per loop
turn; reading the status emits no events). End to end: tests/e2e/test_e2e_v4v6.py."""

import os
import select
import subprocess
import time

import pytest

from cpe_tunnel.core import schema, uci
from cpe_tunnel.core.errors import ConfigError
from cpe_tunnel.core.keepalive import Keepalive
from cpe_tunnel.sessions_tsp import parse_server, server_text
from cpe_tunnel.supervisor import Supervisor, TunnelRunner

# ------------------------------------------------------------------ server entries

@pytest.mark.parametrize("text,want", [
    ("broker.example.net", ("broker.example.net", 3653)),
    ("203.0.113.18:3000", ("203.0.113.18", 3000)),
    ("[2001:db8:c2::2]:4000", ("2001:db8:c2::2", 4000)),
    ("[2001:db8:c2::2]", ("2001:db8:c2::2", 3653)),
    ("2001:db8:c2::2", ("2001:db8:c2::2", 3653)),
])
def test_parse_server(text, want):
    assert parse_server(text) == want
    # what status shows parses back to the same
    assert parse_server(server_text(*want)) == want


@pytest.mark.parametrize("text", ["[2001:db8::1", "[2001:db8::1]x", "[broker]:1", "2001:db8::zz",
                                  "host:0", "host:99999", "[2001:db8::1]:", ":3653"])
def test_parse_server_rejects(text):
    with pytest.raises(ConfigError) as e:
        parse_server(text)
    assert text in e.value.reason
    with pytest.raises(ValueError):
        schema.check_server(text)  # the schema says no to the same entries


# ------------------------------------------------------------------ schema

def problems(**opts):
    lines = ["config tunnel 't'", " option mode 'tsp'", " option tunnel_mode 'v4v6'"]
    for k, v in opts.items():
        for x in (v if isinstance(v, list) else [v]):
            lines.append(" %s %s '%s'" % ("list" if isinstance(v, list) else "option", k, x))
    if "server" not in opts:
        lines.append(" list server '[2001:db8:c2::2]:3653'")
    cfg, p = schema.validate(uci.parse("\n".join(lines) + "\n"))
    return cfg, p


def test_schema_v4v6_good():
    cfg, p = problems(prefix_len="28", wan_device="wan0", ttl="32")
    assert p == [] and cfg["tunnel"]["tunnel_mode"] == "v4v6"
    cfg, p = problems(server=["broker.example.net", "2001:db8::1"])
    assert p == []


def test_schema_v4v6_says_what_does_not_go_together():
    _, p = problems(ipaddr="192.0.2.2")
    assert len(p) == 1 and "option 'ipaddr' does not go with tunnel_mode 'v4v6'" in p[0] and "IPv6" in p[0]
    _, p = problems(tos="16")
    assert len(p) == 1 and "'tos'" in p[0] and "outer header is IPv6" in p[0]
    _, p = problems(private_range=["198.51.100.0/24"])
    assert len(p) == 1 and "'private_range'" in p[0]
    _, p = problems(prefix_len="48")
    assert len(p) == 1 and "32 or less" in p[0]
    _, p = problems(server="203.0.113.18")
    assert len(p) == 1 and "is an IPv4 address, but tunnel_mode 'v4v6' talks TSP over IPv6" in p[0]
    _, p = problems(server="[2001:db8::1")
    assert len(p) == 1 and "closing ]" in p[0]
    # the other way round: an IPv6 broker for a mode that talks TSP over IPv4
    _, p = schema.validate(uci.parse("config tunnel t\n option mode tsp\n list server '[2001:db8::1]'\n"))
    assert len(p) == 1 and "talks TSP over IPv4" in p[0]


# ------------------------------------------------------------------ IPv4 echo socket

def _ip(ns, *args):
    return subprocess.run(["ip", "-n", ns] + list(args), capture_output=True, text=True, timeout=10, check=True)


@pytest.mark.lab
def test_echo_socket4_against_the_kernel():
    if os.geteuid() != 0:
        pytest.skip("needs root")
    from cpe_tunnel.adapters.echo import EchoSocket4, echo_socket
    from cpe_tunnel.adapters.netlink import in_netns

    a, b = "cpte4-%d-a" % os.getpid(), "cpte4-%d-b" % os.getpid()
    subprocess.run(["ip", "netns", "add", a], check=True, timeout=10)
    subprocess.run(["ip", "netns", "add", b], check=True, timeout=10)
    try:
        _ip(a, "link", "add", "t4", "type", "veth", "peer", "name", "p4", "netns", b)
        _ip(a, "addr", "add", "203.0.113.66/32", "peer", "203.0.113.65/32", "dev", "t4")
        _ip(b, "addr", "add", "203.0.113.65/32", "peer", "203.0.113.66/32", "dev", "p4")
        _ip(a, "link", "set", "t4", "up")
        _ip(b, "link", "set", "p4", "up")
        s = in_netns(a, lambda: EchoSocket4("t4", "203.0.113.65", 0x4242))
        other = in_netns(a, lambda: EchoSocket4("t4", "203.0.113.65", 0x4243))
        try:
            assert isinstance(in_netns(a, lambda: echo_socket("t4", "203.0.113.65", 1)), EchoSocket4)
            got = []
            deadline = time.monotonic() + 10
            seq = 0
            while not got and time.monotonic() < deadline:
                seq += 1
                try:
                    s.send(seq)  # the first may wait for ARP/carrier
                except OSError:
                    pass
                if select.select([s], [], [], 0.5)[0]:
                    got = s.read()
            assert got and got[0] <= seq, "no echo reply from the kernel"
            # the other identifier's socket sees the reply too (raw socket) but drops it
            assert other.read() == []
        finally:
            s.close()
            other.close()
    finally:
        subprocess.run(["ip", "netns", "del", a], check=False, timeout=10)
        subprocess.run(["ip", "netns", "del", b], check=False, timeout=10)


# ------------------------------------------------------------------ supervisor review fixes

class FakeDp:
    kind = "userspace"

    def __init__(self):
        self.reads = 0
        self.last_tx = None

    def counters(self):
        self.reads += 1
        return {"last_tx": self.last_tx, "last_rx": None}


class FakeEcho:
    def __init__(self):
        self.sent = []

    def send(self, seq):
        self.sent.append(seq)


class FakeSup:
    def __init__(self):
        self.changes = 0

    def state_changed(self, now):
        self.changes += 1


def bare_runner():
    r = TunnelRunner.__new__(TunnelRunner)
    r.sup = FakeSup()
    r.session = None
    r._debounce_at = None
    r._traffic = (None, None)
    r.dp = FakeDp()
    r.echo = FakeEcho()
    r.keepalive = Keepalive(10, ident=1)
    return r


def test_keepalive_deadline_does_not_read_counters_every_loop_turn():
    r = bare_runner()
    r.handle_timer(0.0)  # the first echo goes out at once
    assert r.echo.sent == [1]
    r.keepalive.on_echo_reply(0.1, 1)
    reads = r.dp.reads
    for _ in range(100):
        assert r.get_timer() == 10.0
    assert r.dp.reads == reads, "get_timer() read the data plane's counters"
    # traffic in the meantime: when the stale deadline fires, the counters are read
    # once, the deadline moves to 10 s after that traffic, and no echo goes out
    r.dp.last_tx = 8.0
    r.handle_timer(10.0)
    assert r.dp.reads == reads + 1 and r.echo.sent == [1]
    assert r.get_timer() == 18.0 and r.dp.reads == reads + 1
    r.handle_timer(18.0)
    assert r.echo.sent == [1, 2]


class FakeLoop:
    def clock(self):
        return 5.0

    def add_timer_source(self, get_timer, handle_timer):
        pass


class StubTunnel:
    def __init__(self):
        self.verdict = ("starting", "asking")

    def state(self, now):
        return self.verdict

    def status(self, now, wall):
        return {}

    def reconnecting(self, now):
        return False

    def get_timer(self):
        return None

    def handle_timer(self, now):
        pass


def test_reading_status_emits_no_events():
    events = []
    cfg = {"tunnel": {"mode": "static"}, "lans": []}
    sup = Supervisor(FakeLoop(), cfg, nl=object(), on_state=events.append)
    sup.tunnel = StubTunnel()
    sup.state_changed(1.0)
    assert len(events) == 1 and events[0]["state"] == "starting"
    sup.tunnel.verdict = ("up", "tunnel up")
    for _ in range(3):
        sup.status()
    assert len(events) == 1, "reading the status emitted a state event"
    sup.handle_timer(2.0)  # a timer turn recomputes the state: one event
    assert len(events) == 2 and events[1]["state"] == "up" and sup.status()["state"] == "up"
    sup.handle_timer(3.0)
    assert len(events) == 2


# ------------------------------------------------------------------ netifd report

def test_netifd_update_for_a_v4v6_tunnel():
    from cpe_tunnel.adapters.netifd import NetifdReporter

    sent = []
    rep = NetifdReporter("tun4", run=lambda argv, timeout: sent.append(argv) or 0)
    st = {"state": "up", "ifname": "cpe6in4", "tunnel_family": "ipv4",
          "tunnel_addresses": {"local": "203.0.113.66/32", "remote": "203.0.113.65", "family": "ipv4"},
          "delegated_prefixes": [], "delegated_prefixes4": ["203.0.113.128/28"]}
    msg = rep.build_update(st)
    assert msg["ipaddr"] == [{"ipaddr": "203.0.113.66", "mask": "32", "ptp": "203.0.113.65"}]
    assert msg["routes"] == [{"target": "0.0.0.0", "netmask": "0", "source": "203.0.113.66/32"},
                             {"target": "0.0.0.0", "netmask": "0", "source": "203.0.113.128/28"}]
    assert "ip6addr" not in msg and "routes6" not in msg and "ip6prefix" not in msg
    assert list(msg)[-1] == "interface" and msg["interface"] == "tun4"
    assert rep.update(st) and '"ptp":"203.0.113.65"' in sent[-1][-1]
    # down after up: the address stays (the keepalive needs it), the routes go
    down = dict(st, state="down")
    msg = rep.build_update(down)
    assert msg["ipaddr"] and "routes" not in msg
