"""RaSocket / EchoSocket on real interfaces: two network namespaces joined by a veth pair.

router namespace (vr<pid>) ── veth ── host namespace (vh<pid>): a normal Linux host
(forwarding off, accept_ra on) that must configure a SLAAC address from our RA.
The lab tests need root; the helpers at the top run anywhere.
"""

import contextlib
import ctypes
import os
import select
import shutil
import socket
import struct
import subprocess
import sys
import time

import pytest

from cpe_tunnel.adapters.echo import EchoSocket
from cpe_tunnel.adapters.lan import RaSocket, check_ifname, icmp6_filter, link_lladdr
from cpe_tunnel.core import ra
from cpe_tunnel.core.addr import ip6_aton, ip6_ntoa
from cpe_tunnel.core.keepalive import Keepalive

PREFIX = ip6_aton("2001:db8:1:1::")


# ---- helpers that need no privileges ----------------------------------------------------

def test_icmp6_filter_layout():
    f = icmp6_filter([133])
    words = struct.unpack("=8I", f)
    assert len(f) == 32
    assert words[4] == 0xFFFFFFFF & ~(1 << 5)  # 133 = 4 * 32 + 5
    assert all(w == 0xFFFFFFFF for i, w in enumerate(words) if i != 4)
    words = struct.unpack("=8I", icmp6_filter([0, 129, 255]))
    assert words[0] == 0xFFFFFFFE and words[4] == 0xFFFFFFFD and words[7] == 0x7FFFFFFF
    with pytest.raises(ValueError):
        icmp6_filter([256])


def test_check_ifname():
    for good in ["eth0", "br-lan", "a", "x" * 15, "wan.2"]:
        assert check_ifname(good) == good
    for bad in ["", "x" * 16, "../etc", "a/b", ".", "..", "eth 0", "eth0:1", None, 3]:
        with pytest.raises(ValueError):
            check_ifname(bad)


def test_link_lladdr_from_sysfs(tmp_path):
    def put(name, text):
        (tmp_path / name).mkdir()
        (tmp_path / name / "address").write_text(text)

    put("eth0", "02:00:5e:10:00:01\n")
    put("tun0", "\n")
    put("sit0", "00:00:00:00\n")
    put("odd0", "zz:00\n")
    put("odd1", "2:0:5e:10:0:1\n")
    assert link_lladdr("eth0", str(tmp_path)) == b"\x02\x00\x5e\x10\x00\x01"
    for name in ["tun0", "sit0", "odd0", "odd1", "missing0"]:
        assert link_lladdr(name, str(tmp_path)) is None, name
    with pytest.raises(ValueError):
        link_lladdr("../../etc", str(tmp_path))
    assert link_lladdr("lo") is None  # loopback: all zeros


# ---- namespaces ------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000


@contextlib.contextmanager
def in_netns(name):
    """Run the block with this thread in network namespace `name` (sockets created
    inside stay there)."""
    back = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    fd = os.open("/run/netns/%s" % name, os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns %s" % name)
        try:
            yield
        finally:
            if _libc.setns(back, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back")
    finally:
        os.close(fd)
        os.close(back)


def sh(*args, ns=None, check=True, timeout=10):
    argv = list(args)
    if ns is not None:
        argv = ["ip", "netns", "exec", ns] + argv
    return subprocess.run(argv, check=check, timeout=timeout, capture_output=True, text=True)


class Pair:
    def __init__(self):
        tag = "%d-%d" % (os.getpid(), time.monotonic_ns() % 100000)
        self.r = "cpet-ra-%s-r" % tag
        self.h = "cpet-ra-%s-h" % tag
        self.vr = "vr%d" % (os.getpid() % 10000000)
        self.vh = "vh%d" % (os.getpid() % 10000000)

    def build(self):
        sh("ip", "netns", "add", self.r)
        sh("ip", "netns", "add", self.h)
        sh("ip", "-n", self.r, "link", "add", self.vr, "type", "veth", "peer", "name", self.vh,
           "netns", self.h)
        sh("sysctl", "-qw", "net.ipv6.conf.%s.accept_dad=0" % self.vr, ns=self.r)
        # the host solicits only when the test says so (rdisc6), not on link-up
        sh("sysctl", "-qw", "net.ipv6.conf.%s.router_solicitations=0" % self.vh, ns=self.h)
        for ns, dev in ((self.r, self.vr), (self.h, self.vh)):
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", ns, "link", "set", dev, "up")
        assert sh("sysctl", "-n", "net.ipv6.conf.%s.forwarding" % self.vh, ns=self.h).stdout.strip() == "0"
        assert sh("sysctl", "-n", "net.ipv6.conf.%s.accept_ra" % self.vh, ns=self.h).stdout.strip() == "1"

    def teardown(self):
        for ns in (self.r, self.h):
            sh("ip", "netns", "del", ns, check=False)

    def addrs(self, ns, dev):
        """[(address text, plen, flags list)] for IPv6 on dev."""
        out = []
        for line in sh("ip", "-n", ns, "-6", "-o", "addr", "show", "dev", dev).stdout.splitlines():
            f = line.split()
            i = f.index("inet6")
            a, p = f[i + 1].split("/")
            out.append((a, int(p), f[i + 2:]))
        return out

    def wait_linklocal(self, ns, dev, timeout=5.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for a, _plen, flags in self.addrs(ns, dev):
                if a.startswith("fe80:") and "tentative" not in flags:
                    return a
            time.sleep(0.05)
        raise AssertionError("no usable link-local address on %s" % dev)


def _need_root():
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    if shutil.which("ip") is None:
        pytest.skip("needs iproute2")


@pytest.fixture
def pair():
    _need_root()
    p = Pair()
    try:
        p.build()
        yield p
    finally:
        p.teardown()


def _poll_readable(sock_like, timeout):
    r, _, _ = select.select([sock_like], [], [], timeout)
    return bool(r)


@pytest.mark.lab
def test_host_configures_slaac_from_our_ra(pair):
    with in_netns(pair.r):
        rs = RaSocket(pair.vr)
    lladdr = link_lladdr_in(pair.r, pair.vr)
    try:
        assert lladdr is not None and len(lladdr) == 6
        pair.wait_linklocal(pair.r, pair.vr)
        msg = ra.build_ra(router_lifetime=1800, source_lladdr=lladdr, mtu=1480,
                          prefixes=[(PREFIX, 64, True, True, 86400, 14400)])
        found = None
        end = time.monotonic() + 10
        sends = 0
        while found is None and time.monotonic() < end and sends < 20:
            rs.send(msg)
            sends += 1
            deadline = time.monotonic() + 1.0
            while found is None and time.monotonic() < deadline:
                for a, p, flags in pair.addrs(pair.h, pair.vh):
                    if a.startswith("2001:db8:1:1:") and p == 64:
                        found = (a, flags)
                time.sleep(0.05)
        assert found is not None, "host did not configure a SLAAC address in 2001:db8:1:1::/64"
        assert "dynamic" in found[1]  # from the RA, with lifetimes
        # the router lifetime made us the host's default router, via our link-local address
        route = sh("ip", "-n", pair.h, "-6", "route", "show", "default").stdout
        assert "via fe80:" in route and pair.vh in route, route
        mtu = sh("cat", "/proc/sys/net/ipv6/conf/%s/mtu" % pair.vh, ns=pair.h).stdout.strip()
        assert mtu == "1480"
        # a final RA (router lifetime 0, preferred 0) removes the default route and
        # deprecates the address
        sched = ra.RaScheduler(max_interval=600, source_lladdr=lladdr)
        sched.set_prefixes(0.0, [(PREFIX, 64, 86400, 14400)])
        rs.send(sched.stop(1.0))
        end = time.monotonic() + 5
        while time.monotonic() < end:
            route = sh("ip", "-n", pair.h, "-6", "route", "show", "default").stdout
            flags = [f for a, p, f in pair.addrs(pair.h, pair.vh) if a == found[0]]
            if not route.strip() and flags and "deprecated" in flags[0]:
                break
            time.sleep(0.05)
        assert not route.strip(), route
        assert flags and "deprecated" in flags[0], flags
    finally:
        rs.close()


@pytest.mark.lab
def test_router_solicitation_is_read(pair):
    with in_netns(pair.r):
        rs = RaSocket(pair.vr)
    try:
        host_ll = pair.wait_linklocal(pair.h, pair.vh)
        host_mac = link_lladdr_in(pair.h, pair.vh)
        got = []
        if shutil.which("rdisc6"):
            # rdisc6 sends one RS (nobody answers, so it gives up after -w ms)
            proc = subprocess.Popen(["ip", "netns", "exec", pair.h, "rdisc6", "-1", "-r", "1", "-w", "1500",
                                     pair.vh], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        else:
            proc = None
            with in_netns(pair.h):
                _send_rs(pair.vh, 255, host_mac)
        try:
            end = time.monotonic() + 5
            while not got and time.monotonic() < end:
                if _poll_readable(rs, 0.2):
                    got += rs.read()
        finally:
            if proc is not None:
                proc.terminate()  # our own child; it would wait -w ms for an RA
                proc.wait(timeout=5)
        assert got, "no Router Solicitation read"
        msg, src = got[0]
        assert src == ip6_ntoa(ip6_aton(host_ll))
        parsed = ra.parse_rs(msg, src)
        # rdisc6 sends no source link-layer option; our fallback sender does
        assert parsed["source_lladdr"] in (None, host_mac), got
        assert rs.read() == []
    finally:
        rs.close()


def link_lladdr_in(ns, dev):
    """link_lladdr() run inside ns (sysfs shows the netns of the process that mounted it,
    so this needs a process started by `ip netns exec`, which remounts /sys)."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    code = ("import sys; sys.path.insert(0, %r); from cpe_tunnel.adapters.lan import link_lladdr; "
            "a = link_lladdr(%r); print(a.hex() if a else '')" % (root, dev))
    out = sh(sys.executable, "-c", code, ns=ns).stdout.strip()
    return bytes.fromhex(out) if out else None


def _send_rs(dev, hops, lladdr):
    s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, dev.encode())
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, hops)
        msg = b"\x85\x00\x00\x00\x00\x00\x00\x00\x01\x01" + lladdr
        s.sendto(msg, ("ff02::2", 0, 0, socket.if_nametoindex(dev)))
    finally:
        s.close()


@pytest.mark.lab
def test_solicitation_with_wrong_hop_limit_is_dropped(pair):
    with in_netns(pair.r):
        rs = RaSocket(pair.vr)
    try:
        pair.wait_linklocal(pair.h, pair.vh)
        mac = link_lladdr_in(pair.h, pair.vh)
        with in_netns(pair.h):
            _send_rs(pair.vh, 64, mac)  # forged from off-link: must be ignored
        end = time.monotonic() + 2
        while rs.dropped == 0 and time.monotonic() < end:
            if _poll_readable(rs, 0.1):
                assert rs.read() == []
        assert rs.dropped == 1
        with in_netns(pair.h):
            _send_rs(pair.vh, 255, mac)
        got = []
        end = time.monotonic() + 2
        while not got and time.monotonic() < end:
            if _poll_readable(rs, 0.1):
                got += rs.read()
        assert len(got) == 1 and ra.parse_rs(got[0][0])["source_lladdr"] == mac
        assert rs.dropped == 1
    finally:
        rs.close()


@pytest.mark.lab
def test_echo_socket_and_keepalive(pair):
    sh("ip", "-n", pair.r, "addr", "add", "2001:db8:ffff::1/64", "dev", pair.vr, "nodad")
    sh("ip", "-n", pair.h, "addr", "add", "2001:db8:ffff::2/64", "dev", pair.vh, "nodad")
    ident = os.getpid() & 0xFFFF
    with in_netns(pair.r):
        es = EchoSocket(pair.vr, "2001:db8:ffff::2", ident)
        other_ident = EchoSocket(pair.vr, "2001:db8:ffff::2", ident ^ 0x5555)
        other_peer = EchoSocket(pair.vr, ip6_aton("2001:db8:ffff::3"), ident)
    try:
        es.send(1)
        es.send(2)
        got = []
        end = time.monotonic() + 3
        while len(got) < 2 and time.monotonic() < end:
            if _poll_readable(es, 0.2):
                got += es.read()
        assert sorted(got) == [1, 2]
        time.sleep(0.1)
        assert other_ident.read() == []  # replies carry another identifier
        assert other_peer.read() == []  # and come from another address
        # drive the keepalive core with the socket for a couple of seconds
        k = Keepalive(0.5, misses_allowed=2)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 1.6:
            now = time.monotonic()
            for seq in k.handle_timer(now, None):
                es.send(seq)
            timeout = max(0.0, min(k.get_timer(None) - time.monotonic(), 0.2))
            if _poll_readable(es, timeout):
                for seq in es.read():
                    k.on_echo_reply(time.monotonic(), seq)
        st = k.status(time.monotonic())
        assert st["alive"] is True and st["sent"] >= 3 and st["answered"] >= st["sent"] - 1
        assert st["rtt_ms"] is not None and st["rtt_ms"] < 100
        # the peer goes away: misses mark it dead
        sh("ip", "-n", pair.h, "link", "set", pair.vh, "down")
        t0 = time.monotonic()
        while k.status(time.monotonic())["alive"] and time.monotonic() - t0 < 5:
            now = time.monotonic()
            for seq in k.handle_timer(now, None):
                try:
                    es.send(seq)
                except OSError:
                    pass
            time.sleep(max(0.0, min(k.get_timer(None) - time.monotonic(), 0.2)))
            for seq in es.read():
                k.on_echo_reply(time.monotonic(), seq)
        assert k.status(time.monotonic())["alive"] is False
    finally:
        es.close()
        other_ident.close()
        other_peer.close()


RADVD_CONF = """interface %s {
    AdvSendAdvert on;
    MinRtrAdvInterval 3;
    MaxRtrAdvInterval 4;
    AdvDefaultLifetime 1800;
    AdvLinkMTU 1480;
    prefix 2001:db8:1:2::/64 {
        AdvOnLink on;
        AdvAutonomous on;
        AdvValidLifetime 86400;
        AdvPreferredLifetime 14400;
    };
    RDNSS 2001:db8::53 2001:db8::54 {
        AdvRDNSSLifetime 1200;
    };
};
"""


@pytest.mark.lab
def test_same_content_as_radvd(pair, tmp_path):
    """Debian's radvd, an independent implementation, advertises the same parameters:
    our build_ra must produce the same RA (same fields, same option bytes)."""
    if shutil.which("radvd") is None:
        pytest.skip("radvd not installed")
    conf = tmp_path / "radvd.conf"
    conf.write_text(RADVD_CONF % pair.vr)
    sh("sysctl", "-qw", "net.ipv6.conf.all.forwarding=1", ns=pair.r)
    pair.wait_linklocal(pair.r, pair.vr)
    with in_netns(pair.h):
        s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, pair.vh.encode())
    s.setsockopt(socket.IPPROTO_ICMPV6, 1, icmp6_filter([134]))
    proc = subprocess.Popen(["ip", "netns", "exec", pair.r, "radvd", "-n", "-C", str(conf),
                             "-p", str(tmp_path / "radvd.pid"), "-m", "stderr"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        got = None
        end = time.monotonic() + 8
        mac_h = link_lladdr_in(pair.h, pair.vh)
        pair.wait_linklocal(pair.h, pair.vh)
        while got is None and time.monotonic() < end:
            with in_netns(pair.h):
                _send_rs(pair.vh, 255, mac_h)  # ask, rather than wait for the periodic RA
            if _poll_readable(s, 0.5):
                data, addr = s.recvfrom(2048)
                got = data
        assert got is not None, "no RA from radvd"
    finally:
        proc.terminate()
        proc.wait(timeout=5)
        s.close()
    theirs = ra.parse_ra(got, addr[0].split("%")[0])
    mac = link_lladdr_in(pair.r, pair.vr)
    ours_msg = ra.build_ra(router_lifetime=1800, source_lladdr=mac, mtu=1480,
                           prefixes=[(ip6_aton("2001:db8:1:2::"), 64, True, True, 86400, 14400)],
                           rdnss=["2001:db8::53", "2001:db8::54"], rdnss_lifetime=1200)
    ours = ra.parse_ra(ours_msg)
    assert theirs == ours
    # option by option, the bytes agree too (radvd orders options differently)
    assert sorted(ra.parse_options(got[16:])) == sorted(ra.parse_options(ours_msg[16:]))
    assert got[4:16] == ours_msg[4:16]
