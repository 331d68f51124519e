"""The namespace lab (tests/lab): topology, helpers, teardown. Mostly marked `lab` (root)."""

import os
import shutil
import signal
import socket
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.lab import Lab, LabError, cleanup_stale, probe
from tests.lab.lab import REPO_ROOT

URL = "http://203.0.113.18/nic/update?hostname=12345"


def netns_names():
    r = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    return {line.split()[0] for line in r.stdout.splitlines() if line.split()}


def needs_lab():
    from tests.lab.fixtures import lab_unusable_reason

    reason = lab_unusable_reason()
    if reason:
        pytest.skip(reason)


# ---------------------------------------------------------------------------------------------
# without root


def test_names_are_unique_and_interface_names_fit():
    a, b = Lab(), Lab(nat=True, nat_hops=2)
    assert set(a.ns.values()).isdisjoint(b.ns.values())
    assert a.ns["cpe"].startswith("ct%d-" % os.getpid())
    assert b.ns["isp"] == b.ns["isp2"] and "isp1" in b.ns
    for lab_ in (a, b):
        for _ra, ia, _rb, ib in lab_._links:
            assert len(ia) <= 15 and len(ib) <= 15
        assert all(len(n) <= 15 for n in lab_.ifnames.values())
    assert Lab(prefix="xy").ns["lan"] == "xy-lan"
    with pytest.raises(ValueError):
        Lab(nat=True, nat_hops=3)


def test_addresses_are_documentation_ranges():
    import ipaddress

    doc4 = [ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")]
    doc6 = ipaddress.ip_network("2001:db8::/32")
    for kw in ({}, {"nat": True}, {"nat": True, "nat_hops": 2}):
        lab_ = Lab(**kw)
        for key, val in lab_.addrs.items():
            net = ipaddress.ip_network(val, strict=False)
            ok = any(net.subnet_of(d) for d in doc4) if net.version == 4 else net.subnet_of(doc6)
            assert ok, (key, val)
        text = " ".join(" ".join(c) for c in lab_._cmds.values())
        for tok in text.split():
            if tok[0].isdigit() and tok.count(".") == 3:
                assert any(ipaddress.ip_network(tok, strict=False).subnet_of(d) for d in doc4), tok
    assert Lab(nat=True).addrs["public"] == "203.0.113.2" and Lab().addrs["public"] == "192.0.2.2"


def test_echo_request_checksum_agrees_with_scapy():
    from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6

    pkt = probe.echo_request("2001:db8:1::2", "2001:db8:ffff::2", 0x1234, 7, b"hello", hlim=9)
    ref = IPv6(src="2001:db8:1::2", dst="2001:db8:ffff::2", hlim=9) / ICMPv6EchoRequest(
        id=0x1234, seq=7, data=b"hello"
    )
    assert pkt == bytes(ref)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=100))
def test_parse_reply_fuzz(data):
    d = probe.parse_reply(data)
    assert d is None or "inner_src" in d
    d = probe.parse_reply(b"\x45" + b"\0" * 8 + b"\x29" + b"\0" * 10 + data)
    assert d is None or "inner_src" in d


def test_parse_reply_of_encapsulated_echo_reply():
    from scapy.layers.inet import IP
    from scapy.layers.inet6 import ICMPv6EchoReply, IPv6

    pkt = bytes(
        IP(src="203.0.113.18", dst="192.0.2.2", proto=41)
        / IPv6(src="2001:db8:ffff::2", dst="2001:db8:1::2", hlim=63)
        / ICMPv6EchoReply(id=5, seq=2)
    )
    d = probe.parse_reply(pkt)
    assert d == {
        "outer_src": "203.0.113.18",
        "outer_dst": "192.0.2.2",
        "inner_src": "2001:db8:ffff::2",
        "inner_dst": "2001:db8:1::2",
        "next_header": 58,
        "hlim": 63,
        "icmp_type": 129,
        "icmp_code": 0,
        "ident": 5,
        "seq": 2,
    }


# ---------------------------------------------------------------------------------------------
# build and teardown


@pytest.mark.lab
def test_build_and_teardown_leave_nothing():
    needs_lab()
    lab_ = Lab()
    with lab_:
        names = set(lab_.ns.values())
        assert names <= netns_names()
        p = lab_.popen("cpe", ["sleep", "60"])
        assert "wan0" in lab_.run("cpe", "ip -o link show").stdout
        workdir = lab_.workdir
        assert os.path.isdir(workdir)
    assert not names & netns_names()
    assert p.poll() is not None  # tracked process was killed
    assert not os.path.exists(workdir)
    lab_.teardown()  # idempotent


@pytest.mark.lab
def test_teardown_when_the_body_raises():
    needs_lab()
    lab_ = Lab(nat=True)
    with pytest.raises(KeyboardInterrupt):
        with lab_:
            names = set(lab_.ns.values())
            lab_.popen("isp", "sleep 60")
            raise KeyboardInterrupt
    assert not names & netns_names()


@pytest.mark.lab
def test_teardown_on_sigterm_in_another_process():
    needs_lab()
    code = (
        "import sys, time\nfrom tests.lab import Lab\nlab = Lab().build()\n"
        "print(' '.join(lab.ns.values()), flush=True)\ntime.sleep(30)\n"
    )
    p = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
        env=dict(os.environ, PYTHONPATH=REPO_ROOT),
    )
    try:
        names = set(p.stdout.readline().split())
        assert names and names <= netns_names()
        p.send_signal(signal.SIGTERM)
        assert p.wait(10) == 128 + signal.SIGTERM
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert not names & netns_names()


@pytest.mark.lab
def test_stale_namespaces_of_dead_runs_are_removed():
    needs_lab()
    dead = subprocess.Popen(["true"])
    dead.wait()
    name = "ct%d-0-lan" % dead.pid
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        assert name in cleanup_stale()
        assert name not in netns_names()
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


# ---------------------------------------------------------------------------------------------
# reachability and what the broker sees


@pytest.mark.lab
def test_reachability_without_nat(lab):
    assert lab.ping4("cpe", lab.addrs["broker"])
    assert lab.ping4("broker", lab.addrs["cpe_wan"])  # routed, no NAT
    assert lab.ping6("broker", lab.addrs["v6host"])
    assert lab.ping6("v6host", lab.addrs["broker_v6"])
    b = lab.start_broker()
    assert lab.http_get("cpe", URL, "alice", "tunnel-key-1").body == "good 192.0.2.2\n"
    assert b.tunnel("12345")["last_update"]["source"] == "192.0.2.2"
    assert lab.read_sysctl("cpe", "net.ipv6.conf.all.forwarding") == "1"
    assert lab.read_sysctl("lan", "net.ipv6.conf.eth0.forwarding") == "0"
    assert lab.read_sysctl("lan", "net.ipv6.conf.eth0.accept_ra") == "1"
    assert "inet6" not in lab.run("cpe", "ip -6 addr show dev br-lan scope global").stdout


@pytest.mark.lab
def test_reachability_behind_nat(lab_nat):
    assert lab_nat.ping4("cpe", "203.0.113.18")
    assert not lab_nat.ping4("inet", "198.51.100.2", timeout=1)  # nothing routes to the inside
    b = lab_nat.start_broker()
    assert lab_nat.http_get("cpe", URL, "alice", "tunnel-key-1").body == "good 203.0.113.2\n"
    assert b.tunnel("12345")["last_update"]["source"] == "203.0.113.2"
    assert lab_nat.conntrack_count("isp") >= 1


@pytest.mark.lab
def test_two_nat_hops(make_lab):
    lab_ = make_lab(nat=True, nat_hops=2)
    b = lab_.start_broker()
    assert lab_.http_get("cpe", URL, "alice", "tunnel-key-1").body == "good 203.0.113.2\n"
    assert lab_.conntrack_count("isp1") >= 1 and lab_.conntrack_count("isp2") >= 1
    assert not lab_.ping4("isp2", "198.51.100.2", timeout=1)
    assert b.tunnel("12345")["endpoint"] == "203.0.113.2"


@pytest.mark.lab
def test_set_wan_address_renumbers_like_dhcp(lab):
    b = lab.start_broker()
    lab.set_wan_address("192.0.2.66/24", "192.0.2.1")
    out = lab.run("cpe", "ip -4 -o addr show dev wan0").stdout
    assert "192.0.2.66/24" in out and "192.0.2.2/" not in out
    assert lab.addrs["public"] == "192.0.2.66"
    assert lab.http_get("cpe", URL, "alice", "tunnel-key-1").body == "good 192.0.2.66\n"
    lab.set_wan_address("198.51.100.20/25", "198.51.100.1")  # a different subnet: isp and inet follow
    assert lab.http_get("cpe", URL, "alice", "tunnel-key-1").body == "good 198.51.100.20\n"
    assert b.tunnel("12345")["updates"]["good"] == 2
    with pytest.raises(LabError):
        lab.set_wan_address("192.0.2.5/24", "198.51.100.1")


@pytest.mark.lab
def test_set_nat_public_flushes_conntrack_and_changes_source(lab_nat):
    b = lab_nat.start_broker()
    assert lab_nat.http_get("cpe", URL, "alice", "tunnel-key-1").body == "good 203.0.113.2\n"
    b.set_endpoint("12345", "203.0.113.2")
    assert lab_nat.sixin4_ping("cpe", "203.0.113.18", "2001:db8:1::2", "2001:db8:ffff::2")["replies"]
    assert lab_nat.conntrack_count("isp") >= 1
    lab_nat.set_nat_public("203.0.113.3")
    assert lab_nat.conntrack_count("isp") == 0
    assert lab_nat.addrs["public"] == "203.0.113.3"
    # the registered endpoint is now stale: the broker drops the cpe's packets ...
    assert not lab_nat.sixin4_ping("cpe", "203.0.113.18", "2001:db8:1::2", "2001:db8:ffff::2", timeout=0.5)[
        "replies"
    ]
    assert b.state()["pop"]["drops"]["unknown_source"] == 1
    # ... until an update from behind the NAT registers the new public address
    assert lab_nat.http_get("cpe", URL, "alice", "tunnel-key-1").body == "good 203.0.113.3\n"
    assert lab_nat.sixin4_ping("cpe", "203.0.113.18", "2001:db8:1::2", "2001:db8:ffff::2")["replies"]


@pytest.mark.lab
@pytest.mark.parametrize("method", ["tool", "netlink"])
def test_flush_conntrack_methods(lab_nat, method):
    if method == "tool" and not shutil.which("conntrack"):
        pytest.skip("conntrack tool not installed (Debian package conntrack)")
    assert lab_nat.ping4("cpe", "203.0.113.18")
    assert lab_nat.conntrack_count("isp") >= 1
    lab_nat.flush_conntrack("isp", method=method)
    assert lab_nat.conntrack_count("isp") == 0


@pytest.mark.lab
def test_conntrack_timeouts_and_nft(lab_nat):
    lab_nat.set_conntrack_timeouts("isp", generic=7, udp=5, udp_stream=9)
    assert lab_nat.read_sysctl("isp", "net.netfilter.nf_conntrack_generic_timeout") == "7"
    assert lab_nat.read_sysctl("isp", "net.netfilter.nf_conntrack_udp_timeout") == "5"
    assert lab_nat.read_sysctl("isp", "net.netfilter.nf_conntrack_udp_timeout_stream") == "9"
    assert lab_nat.read_sysctl("cpe", "net.netfilter.nf_conntrack_generic_timeout") == "600"  # per namespace
    assert lab_nat.ping4("cpe", "203.0.113.18")
    lab_nat.nft(
        "inet",
        "table ip t {\n chain f {\n  type filter hook forward priority 0;\n  ip protocol icmp drop\n }\n}\n",
    )
    assert not lab_nat.ping4("cpe", "203.0.113.18", timeout=1)


@pytest.mark.lab
def test_lan_host_does_slaac_and_flags_are_reported(lab):
    assert lab.lan_addresses() == []
    lab.send_ra("cpe", "br-lan", "2001:db8:1234:7::/64")
    a = lab.wait_lan_address("2001:db8:1234:7::/64", timeout=5)
    assert a is not None and a.dynamic and a.prefixlen == 64 and a.preferred_lft != "forever"
    assert "default via fe80::" in lab.run("lan", "ip -6 route show default").stdout
    lab.sysctl("lan", "net.ipv6.conf.eth0.accept_dad", 1)
    lab.run(
        "lan",
        "ip addr add 2001:db8:2::5/64 dev eth0 && ip addr add 2001:db8:3::5/64 dev eth0 preferred_lft 0",
    )
    by_addr = {x.address: x for x in lab.lan_addresses()}
    assert by_addr["2001:db8:2::5"].tentative and not by_addr["2001:db8:2::5"].deprecated
    assert by_addr["2001:db8:3::5"].deprecated and by_addr["2001:db8:3::5"].valid_lft == "forever"


@pytest.mark.lab
def test_v6host_counter_counts_by_source_prefix(lab):
    assert lab.v6host_counter("2001:db8:ffff::/64") == 0
    assert lab.v6host_counter("2001:db8:1::/64") == 0
    before = lab.v6host_counter()
    assert lab.ping6("broker", "2001:db8:ffff::2", count=2)
    assert lab.v6host_counter("2001:db8:ffff::/64") == 2
    assert lab.v6host_counter("2001:db8:1::/64") == 0
    assert lab.v6host_counter() == before + 2


@pytest.mark.lab
def test_run_popen_and_call_in(lab):
    assert lab.run("cpe", "echo $0").stdout.strip() == "sh"
    assert lab.run("cpe", "ip", "-o", "link", "show", "wan0").returncode == 0
    assert lab.run("cpe", ["true"]).returncode == 0
    with pytest.raises(LabError):
        lab.run("cpe", "exit 3")
    assert lab.run("cpe", "exit 3", check=False).returncode == 3
    with pytest.raises(LabError):
        lab.run("nowhere", "true")

    def names():
        return sorted(i[1] for i in socket.if_nameindex())

    assert "wan0" in lab.call_in("cpe", names) and "br-lan" in lab.call_in("cpe", names)
    assert "wan0" not in names()
    with pytest.raises(ZeroDivisionError):
        lab.call_in("cpe", lambda: 1 / 0)
    p = lab.popen("v6host", ["sleep", "30"])
    assert p.poll() is None
    assert str(p.pid) in lab.run(None, ["ip", "netns", "pids", lab.ns["v6host"]]).stdout
