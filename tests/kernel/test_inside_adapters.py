"""The kernel data planes (adapters/sixin4.KernelSixin4: sit; adapters/v4v6.KernelV4v6:
ip6tnl) on a real kernel, inside User-Mode Linux; skipped anywhere else. Two namespaces
joined by a veth; the peer is a tunnel made with iproute2, independent of our code."""

import os
import subprocess

import pytest

from tests.kernel.runner import IN_VM_ENV

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(os.environ.get(IN_VM_ENV) != "uml",
                       reason="runs inside User-Mode Linux (tests/unit/test_kernel_path.py boots it)"),
]


def sh(*argv):
    r = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, "%s: %s" % (" ".join(argv), r.stderr.strip())
    return r.stdout


def ping(ns, *args):
    return subprocess.run(["ip", "netns", "exec", ns, "ping"] + list(args), check=False, capture_output=True,
                          timeout=30).returncode == 0


@pytest.fixture
def pair():
    """Namespaces (a, b) joined by veth wan (a) <-> pop (b), both up; removed afterwards."""
    a, b = "cptk%d-a" % os.getpid(), "cptk%d-b" % os.getpid()
    sh("ip", "netns", "add", a)
    try:
        sh("ip", "netns", "add", b)
        sh("ip", "-n", a, "link", "add", "wan", "type", "veth", "peer", "name", "pop", "netns", b)
        for ns, dev in ((a, "wan"), (b, "pop")):
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", ns, "link", "set", dev, "up")
        yield a, b
    finally:
        subprocess.run(["ip", "netns", "del", b], check=False, capture_output=True)
        subprocess.run(["ip", "netns", "del", a], check=False, capture_output=True)


def test_probes_find_sit_and_ip6tnl_and_auto_picks_the_kernel(pair):
    from cpe_tunnel.adapters.netlink import Netlink
    from cpe_tunnel.adapters.sixin4 import choose_dataplane
    from cpe_tunnel.adapters.v4v6 import choose_v4v6

    a, _b = pair
    before = sh("ip", "-n", a, "-o", "link", "show")
    nl = Netlink(netns=a)
    try:
        # a fresh namespace already holds the drivers' fallback devices sit0 / ip6tnl0,
        # whose (any, any) endpoints equal those of a link made without parameters
        assert nl.sit_supported() is True
        assert nl.ip6tnl_supported() is True
        assert choose_dataplane("auto", nl) == "kernel"
        assert choose_v4v6("auto", nl) == "kernel"
    finally:
        nl.close()
    assert sh("ip", "-n", a, "-o", "link", "show") == before, "the probes left a link behind"


def test_kernel_sit_against_an_iproute2_peer(pair):
    from cpe_tunnel.adapters.netlink import Netlink
    from cpe_tunnel.adapters.sixin4 import KernelSixin4

    a, b = pair
    for ns, dev, addrs in ((a, "wan", ("192.0.2.1", "192.0.2.11")), (b, "pop", ("192.0.2.2", "192.0.2.3"))):
        for x in addrs:
            sh("ip", "-n", ns, "addr", "add", x + "/24", "dev", dev)
    sh("ip", "-n", b, "link", "add", "name", "peer", "type", "sit", "local", "192.0.2.2",
       "remote", "192.0.2.1", "ttl", "64")
    sh("ip", "-n", b, "link", "set", "peer", "up")
    sh("ip", "-n", b, "addr", "add", "2001:db8:1::1/64", "dev", "peer", "nodad")

    nl = Netlink(netns=a)
    p = KernelSixin4(nl, "cpt6in4", "192.0.2.1", "192.0.2.2", ttl=61, tos=0, mtu=1280)
    try:
        p.open()
        nl.addr_add("cpt6in4", "2001:db8:1::2", 64, flags=("nodad",))
        out = sh("ip", "-n", a, "-d", "link", "show", "cpt6in4")
        assert " sit " in out and "remote 192.0.2.2 local 192.0.2.1" in out, out
        assert "ttl 61" in out and "mtu 1280" in out, out
        p.counters()
        assert ping(a, "-6", "-c", "2", "-W", "2", "2001:db8:1::1")
        c = p.counters()
        assert c["tx_packets"] >= 2 and c["rx_packets"] >= 2, c
        assert c["last_tx"] is not None and c["last_rx"] is not None, c

        # endpoints changed in place: same ifindex, TTL kept
        idx = nl.link_index("cpt6in4")
        sh("ip", "-n", b, "link", "set", "peer", "type", "sit", "local", "192.0.2.3", "remote", "192.0.2.11")
        p.set_endpoints("192.0.2.11", "192.0.2.3")
        out = sh("ip", "-n", a, "-d", "link", "show", "cpt6in4")
        assert nl.link_index("cpt6in4") == idx
        assert "remote 192.0.2.3 local 192.0.2.11" in out and "ttl 61" in out, out
        assert ping(a, "-6", "-c", "2", "-W", "2", "2001:db8:1::1")
        assert p.counters()["rx_packets"] >= c["rx_packets"] + 2
    finally:
        p.close()
        gone = not nl.link_exists("cpt6in4")
        nl.close()
    assert gone, "close() left the sit link"


def test_kernel_ip6tnl_against_an_iproute2_peer(pair):
    from cpe_tunnel.adapters.netlink import Netlink
    from cpe_tunnel.adapters.v4v6 import KernelV4v6

    a, b = pair
    for ns, dev, addrs in ((a, "wan", ("2001:db8:f::1", "2001:db8:f::11")),
                           (b, "pop", ("2001:db8:f::2", "2001:db8:f::3"))):
        for x in addrs:
            sh("ip", "-n", ns, "addr", "add", x + "/64", "dev", dev, "nodad")
    sh("ip", "-n", b, "link", "add", "name", "peer", "type", "ip6tnl", "mode", "ipip6",
       "local", "2001:db8:f::2", "remote", "2001:db8:f::1")
    sh("ip", "-n", b, "link", "set", "peer", "up")
    sh("ip", "-n", b, "addr", "add", "198.51.100.2/24", "dev", "peer")

    nl = Netlink(netns=a)
    p = KernelV4v6(nl, "cpt4in6", "2001:db8:f::1", "2001:db8:f::2", mtu=1400, ttl=61)
    try:
        p.open()
        sh("ip", "-n", a, "addr", "add", "198.51.100.1/24", "dev", "cpt4in6")
        out = sh("ip", "-n", a, "-d", "link", "show", "cpt4in6")
        assert "ipip6" in out and "remote 2001:db8:f::2" in out and "local 2001:db8:f::1" in out, out
        assert "hoplimit 61" in out and "mtu 1400" in out, out
        p.counters()
        assert ping(a, "-4", "-c", "2", "-W", "2", "198.51.100.2")
        c = p.counters()
        assert c["tx_packets"] >= 2 and c["rx_packets"] >= 2, c

        idx = nl.link_index("cpt4in6")
        sh("ip", "-n", b, "link", "set", "peer", "type", "ip6tnl", "mode", "ipip6", "local", "2001:db8:f::3",
           "remote", "2001:db8:f::11")
        p.set_endpoints("2001:db8:f::11", "2001:db8:f::3")
        out = sh("ip", "-n", a, "-d", "link", "show", "cpt4in6")
        assert nl.link_index("cpt4in6") == idx
        assert "remote 2001:db8:f::3" in out and "local 2001:db8:f::11" in out, out
        assert "ipip6" in out and "hoplimit 61" in out, out
        assert ping(a, "-4", "-c", "2", "-W", "2", "198.51.100.2")
    finally:
        p.close()
        gone = not nl.link_exists("cpt4in6")
        nl.close()
    assert gone, "close() left the ip6tnl link"
