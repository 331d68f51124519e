# Netlink adapter and WAN monitor, against the real kernel in a namespace of our own.
# Checks go through `ip` (iproute2) where possible, so the adapter is not judged by
# itself.

import errno
import os
import select
import struct
import subprocess
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cpe_tunnel.adapters import netlink as nlmod
from cpe_tunnel.adapters.netlink import Netlink, NetlinkOpError, WanMonitor, in_netns, parse_rtnl
from cpe_tunnel.core.errors import ConfigError, RemoteProtocolError

_counter = [0]


def _ip(ns, *args, check=True):
    return subprocess.run(["ip", "-n", ns] + list(args), capture_output=True, text=True, timeout=10,
                          check=check)


@pytest.fixture
def ns():
    if os.geteuid() != 0:
        pytest.skip("needs root")
    _counter[0] += 1
    name = "cptnl-%d-%d" % (os.getpid(), _counter[0])
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=10)
    try:
        _ip(name, "link", "add", "va", "type", "veth", "peer", "name", "vb")
        _ip(name, "link", "set", "lo", "up")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], timeout=10)


@pytest.fixture
def nl(ns):
    n = Netlink(netns=ns)
    try:
        yield n
    finally:
        n.close()


# --------------------------------------------------------------------------------- links

@pytest.mark.lab
def test_links(ns, nl):
    assert nl.link_index("lo") == 1
    assert nl.link_index("va") > 1
    assert nl.link_index("nosuchdev") is None
    assert nl.link_index("x" * 40) is None
    assert nl.link_exists("vb") and not nl.link_exists("nosuchdev")
    assert nl.link_kind("va") == "veth"
    assert nl.link_kind("nosuchdev") is None
    nl.link_set_mtu("va", 1400)
    nl.link_up("va")
    nl.link_up("vb")
    out = _ip(ns, "link", "show", "va").stdout
    assert "mtu 1400" in out and ",UP" in out
    st_ = nl.link_stats("va")
    assert {"rx_packets", "rx_bytes", "tx_packets", "tx_bytes"} <= set(st_)
    assert nl.link_stats("nosuchdev") is None
    with pytest.raises(NetlinkOpError) as ei:
        nl.link_up("nosuchdev")
    assert ei.value.errno == errno.ENODEV and "nosuchdev" in str(ei.value)
    nl.link_del("vb")
    nl.link_del("vb")  # missing: no error
    assert _ip(ns, "link", "show", "vb", check=False).returncode != 0
    assert not nl.link_exists("va")  # its peer went with it


@pytest.mark.lab
def test_link_stats_count_traffic(ns, nl):
    nl.link_up("va")
    nl.link_up("vb")
    nl.addr_add("va", "192.0.2.1", 24)
    before = nl.link_stats("va")["tx_packets"]
    # ARP for a neighbour that does not answer still sends frames out of va
    subprocess.run(["ip", "netns", "exec", ns, "ping", "-c", "2", "-i", "0.2", "-W", "1", "192.0.2.9"],
                   capture_output=True, timeout=10)
    assert nl.link_stats("va")["tx_packets"] > before


# ------------------------------------------------------------------------------ addresses

@pytest.mark.lab
def test_addr_add_del_idempotent(ns, nl):
    nl.link_up("va")
    nl.addr_add("va", "192.0.2.1", 24)
    nl.addr_add("va", "192.0.2.1", 24)  # EEXIST ignored
    nl.addr_add("va", "192.0.2.7", 24)  # secondary
    assert nl.ipv4_addrs("va") == ["192.0.2.1", "192.0.2.7"]
    assert "192.0.2.7/24" in _ip(ns, "-4", "addr", "show", "va").stdout
    nl.addr_del("va", "192.0.2.7", 24)
    nl.addr_del("va", "192.0.2.7", 24)  # EADDRNOTAVAIL ignored
    assert nl.ipv4_addrs("va") == ["192.0.2.1"]
    assert "192.0.2.7" not in _ip(ns, "-4", "addr", "show", "va").stdout
    assert nl.ipv4_addrs("nosuchdev") == []
    nl.addr_del("nosuchdev", "192.0.2.1", 24)  # no device: nothing to remove


@pytest.mark.lab
def test_addr6_flags_and_list(ns, nl):
    nl.link_up("va")
    nl.addr_add("va", "2001:db8:0:1::1", 64, flags=("nodad", "noprefixroute"))
    nl.addr_add("va", "2001:DB8:0:1:0::1", 64, flags=("nodad",))  # same address: fine
    out = _ip(ns, "-6", "addr", "show", "va").stdout
    assert "2001:db8:0:1::1/64" in out and "nodad" in out and "noprefixroute" in out
    assert "2001:db8:0:1::/64" not in _ip(ns, "-6", "route", "show").stdout  # noprefixroute honoured
    assert ("2001:db8:0:1::1", 64) in nl.addr_list6("va")
    nl.addr_del("va", "2001:db8:0:1::1", 64)
    nl.addr_del("va", "2001:db8:0:1::1", 64)
    assert ("2001:db8:0:1::1", 64) not in nl.addr_list6("va")
    assert nl.addr_list6("nosuchdev") == []


@pytest.mark.lab
def test_addr_errors(ns, nl):
    with pytest.raises(ValueError):
        nl.addr_add("va", "2001:db8::zz", 64)
    with pytest.raises(ValueError):
        nl.addr_add("va", "192.0.2.1", 33)
    with pytest.raises(ValueError):
        nl.addr_add("va", "2001:db8::1", 64, flags=("bogus",))
    with pytest.raises(NetlinkOpError) as ei:
        nl.addr_add("nosuchdev", "192.0.2.1", 24)
    assert "nosuchdev" in str(ei.value)


# --------------------------------------------------------------------------------- routes

@pytest.mark.lab
def test_routes_v6(ns, nl):
    nl.link_up("va")
    nl.link_up("vb")
    nl.route_add("2001:db8:5::", 48, kind="unreachable")
    nl.route_add("2001:db8:5::", 48, kind="unreachable")  # EEXIST ignored
    nl.route_add("2001:db8:6::", 48, ifname="va", metric=5)
    out = _ip(ns, "-6", "route", "show").stdout
    assert "unreachable 2001:db8:5::/48" in out
    assert "2001:db8:6::/48 dev va" in out and "metric 5" in out
    nl.route_replace("2001:db8:6::", 48, ifname="vb", metric=5)
    out = _ip(ns, "-6", "route", "show").stdout
    assert "2001:db8:6::/48 dev vb" in out and "2001:db8:6::/48 dev va" not in out
    nl.route_del("2001:db8:5::", 48, kind="unreachable")
    nl.route_del("2001:db8:5::", 48, kind="unreachable")  # missing: fine
    nl.route_del("2001:db8:6::", 48, ifname="vb", metric=5)
    nl.route_del("2001:db8:6::", 48, ifname="vb", metric=5)
    nl.route_del("2001:db8:6::", 48, ifname="nosuchdev")
    out = _ip(ns, "-6", "route", "show").stdout
    assert "2001:db8:5::" not in out and "2001:db8:6::" not in out
    with pytest.raises(ValueError):
        nl.route_add("2001:db8:6::", 48)  # neither device nor gateway
    with pytest.raises(ValueError):
        nl.route_add("2001:db8:6::", 48, ifname="va", kind="blackhole")


@pytest.mark.lab
def test_default_route_v4(ns, nl):
    assert nl.default_route_v4() == (None, None)
    nl.link_up("va")
    nl.link_up("vb")
    nl.addr_add("va", "192.0.2.1", 24)
    nl.addr_add("vb", "198.51.100.1", 24)
    nl.route_add("0.0.0.0", 0, gateway="192.0.2.254", family=4, metric=100)
    nl.route_add("0.0.0.0", 0, gateway="192.0.2.254", family=4, metric=100)
    assert nl.default_route_v4() == ("192.0.2.254", "va")
    assert "default via 192.0.2.254 dev va" in _ip(ns, "-4", "route", "show").stdout
    nl.route_add("0.0.0.0", 0, gateway="198.51.100.254", family=4, metric=50)
    assert nl.default_route_v4() == ("198.51.100.254", "vb")
    nl.route_del("0.0.0.0", 0, gateway="198.51.100.254", family=4, metric=50)
    assert nl.default_route_v4() == ("192.0.2.254", "va")
    nl.route_replace("0.0.0.0", 0, ifname="vb", family=4, metric=100)  # device route, no gateway
    assert nl.default_route_v4() == (None, "vb")
    nl.route_del("0.0.0.0", 0, family=4, metric=100)
    assert nl.default_route_v4() == (None, None)
    # a default route in another table is not ours; a multipath one gives its first hop
    _ip(ns, "route", "add", "default", "via", "198.51.100.254", "table", "100")
    assert nl.default_route_v4() == (None, None)
    _ip(ns, "route", "add", "default", "nexthop", "via", "192.0.2.254", "dev", "va",
        "nexthop", "via", "198.51.100.254", "dev", "vb")
    assert nl.default_route_v4() == ("192.0.2.254", "va")


# ------------------------------------------------------------------------------------ sit

@pytest.mark.lab
def test_sit_supported_false_on_this_kernel(ns, nl):
    if os.path.exists("/proc/config.gz"):
        import gzip

        with gzip.open("/proc/config.gz", "rt") as f:
            if "CONFIG_IPV6_SIT=y" in f.read():
                pytest.skip("this kernel has sit")
    t = time.monotonic()
    assert nl.sit_supported() is False
    assert nl.sit_supported() is False  # cached
    assert time.monotonic() - t < 2
    assert _ip(ns, "link", "show").stdout.count("cpts") == 0  # no probe left behind
    from cpe_tunnel.adapters.sixin4 import choose_dataplane

    assert choose_dataplane("auto", nl) == "userspace"
    assert choose_dataplane("userspace", nl) == "userspace"
    with pytest.raises(ConfigError) as ei:
        choose_dataplane("kernel", nl)
    assert "kmod-sit" in ei.value.reason
    with pytest.raises(NetlinkOpError):
        nl.sit_create("cpt6", "192.0.2.1", "192.0.2.2", 64, 0, 1280)


# ----------------------------------------------------------------------------- WAN monitor

def _collect(mon, want, timeout=3.0):
    """Read events until every tuple in `want` was seen or timeout; returns all seen."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(w in seen for w in want):
            break
        r, _, _ = select.select([mon], [], [], max(0.0, deadline - time.monotonic()))
        if r:
            seen.extend(mon.read())
    return seen


def _settle(mon, quiet=0.3):
    """Drain events until the socket is quiet for `quiet` seconds (bounded)."""
    seen = []
    for _ in range(50):
        r, _, _ = select.select([mon], [], [], quiet)
        if not r:
            break
        seen.extend(mon.read())
    return seen


@pytest.mark.lab
def test_wan_monitor_device(ns, nl):
    mon = WanMonitor("va", netns=ns)
    try:
        t = time.monotonic()
        assert mon.read() == []  # non-blocking, nothing yet
        assert time.monotonic() - t < 0.5
        nl.link_up("vb")
        nl.link_up("va")
        ev = _collect(mon, [("link", "va", True)])
        assert ("link", "va", True) in ev
        assert not [e for e in ev if e[0] == "link" and e[1] == "vb"]  # other device: not reported
        nl.addr_add("vb", "198.51.100.1", 24)
        nl.addr_add("va", "192.0.2.1", 24)
        ev = _collect(mon, [("addr-add", "va", "192.0.2.1")])
        assert ("addr-add", "va", "192.0.2.1") in ev
        assert not [e for e in ev if "198.51.100.1" in e]
        _ip(ns, "route", "add", "default", "via", "198.51.100.254", "metric", "10")
        _ip(ns, "route", "add", "default", "via", "192.0.2.254", "metric", "20")
        ev = _collect(mon, [("route-default", "va")])
        assert ev.count(("route-default", "va")) == 1 and ("route-default", "vb") not in ev
        _ip(ns, "route", "del", "default", "via", "192.0.2.254")
        ev = _collect(mon, [("route-default", None)])
        assert ("route-default", None) in ev
        _ip(ns, "addr", "del", "192.0.2.1/24", "dev", "va")
        ev = _collect(mon, [("addr-del", "va", "192.0.2.1")])
        assert ("addr-del", "va", "192.0.2.1") in ev
        _ip(ns, "link", "set", "va", "down")
        ev = _collect(mon, [("link", "va", False)])
        assert ("link", "va", False) in ev
        assert not [e for e in _settle(mon) if e == ("link", "va", False)]  # reported once
    finally:
        mon.close()


@pytest.mark.lab
def test_wan_monitor_follow_default_route(ns, nl):
    mon = WanMonitor(None, netns=ns)
    try:
        _ip(ns, "link", "set", "va", "up")
        _ip(ns, "link", "set", "vb", "up")
        _ip(ns, "addr", "add", "198.51.100.1/24", "dev", "vb")
        _ip(ns, "addr", "add", "127.0.0.2/8", "dev", "lo")
        _ip(ns, "route", "add", "default", "via", "198.51.100.254")
        want = [("link", "va", True), ("link", "vb", True), ("addr-add", "vb", "198.51.100.1"),
                ("route-default", "vb")]
        ev = _collect(mon, want)
        for w in want:
            assert w in ev
        assert not [e for e in ev if e[1] == "lo"]  # loopback is never the WAN
        # a renamed device is reported under its new name
        _ip(ns, "link", "set", "vb", "down")
        _ip(ns, "link", "set", "vb", "name", "wan0")
        _ip(ns, "link", "set", "wan0", "up")
        ev = _collect(mon, [("link", "wan0", True)])
        assert ("link", "wan0", True) in ev
    finally:
        mon.close()


@pytest.mark.lab
def test_wan_monitor_overrun_resyncs(ns, nl):
    mon = WanMonitor(None, netns=ns, rcvbuf=4096)
    try:
        # shrink the receive buffer below what a burst of notifications needs
        mon._sock.setsockopt(nlmod.socket.SOL_SOCKET, nlmod.socket.SO_RCVBUF, 1024)
        batch = "".join("addr add 192.0.2.%d/32 dev va\n" % i for i in range(1, 200))
        subprocess.run(["ip", "-n", ns, "-batch", "-"], input=batch, text=True, check=True, timeout=10)
        ev = _settle(mon)
        assert ("resync",) in ev
        # the monitor keeps working afterwards
        _ip(ns, "addr", "add", "203.0.113.5/32", "dev", "vb")
        assert ("addr-add", "vb", "203.0.113.5") in _collect(mon, [("addr-add", "vb", "203.0.113.5")])
    finally:
        mon.close()


def test_netns_name_checks():
    for bad in ("", "a/b", "..", 5):
        with pytest.raises(ValueError):
            in_netns(bad, lambda: None)
    assert in_netns(None, lambda: 42) == 42


# ----------------------------------------------------------------------- rtnetlink decoding

def _rta(t, payload):
    ln = 4 + len(payload)
    return struct.pack("=HH", ln, t) + payload + b"\0" * ((4 - ln % 4) % 4)


def _nlmsg(t, body, seq=0, pid=0, flags=0):
    return struct.pack("=IHHII", 16 + len(body), t, flags, seq, pid) + body


def test_parse_rtnl_messages():
    link = _nlmsg(16, struct.pack("=BxHiII", 0, 1, 5, 0x41, 0) + _rta(3, b"wan0\0"), seq=7, pid=9)
    addr = _nlmsg(20, struct.pack("=BBBBI", 2, 24, 0, 0, 5) + _rta(1, bytes([192, 0, 2, 9]))
                  + _rta(2, bytes([192, 0, 2, 1])) + _rta(3, b"wan0\0"))
    addr6 = _nlmsg(20, struct.pack("=BBBBI", 10, 64, 0, 0, 5) + _rta(1, b"\x20\x01\x0d\xb8" + b"\0" * 12))
    route = _nlmsg(25, struct.pack("=BBBBBBBBI", 2, 0, 0, 0, 254, 3, 0, 1, 0)
                   + _rta(5, bytes([192, 0, 2, 254])) + _rta(4, struct.pack("=I", 5))
                   + _rta(6, struct.pack("=I", 100)))
    done = _nlmsg(3, b"\0\0\0\0", seq=7)
    err = _nlmsg(2, struct.pack("=i", -errno.EEXIST) + b"\0" * 16)
    msgs = parse_rtnl(link + addr + addr6 + route + done + err)
    assert [m["type"] for m in msgs] == [16, 20, 25, 3, 2]  # the IPv6 address is skipped
    assert msgs[0]["ifname"] == "wan0" and msgs[0]["index"] == 5 and msgs[0]["seq"] == 7
    assert msgs[0]["pid"] == 9 and msgs[0]["flags"] == 0x41
    assert msgs[1]["addr"] == "192.0.2.1" and msgs[1]["prefixlen"] == 24 and msgs[1]["label"] == "wan0"
    r = msgs[2]
    assert (r["dst_len"], r["table"], r["rtype"], r["oif"], r["gateway"], r["priority"]) == \
        (0, 254, 1, 5, "192.0.2.254", 100)
    assert msgs[4]["error"] == errno.EEXIST
    # RTA_TABLE overrides the 8-bit table field
    route2 = _nlmsg(24, struct.pack("=BBBBBBBBI", 2, 0, 0, 0, 252, 3, 0, 1, 0)
                    + _rta(15, struct.pack("=I", 1000)))
    assert parse_rtnl(route2)[0]["table"] == 1000


@pytest.mark.parametrize("data", [
    _nlmsg(16, b"\0" * 8),  # link body too short
    _nlmsg(20, struct.pack("=BBBBI", 2, 24, 0, 0, 5)),  # IPv4 address without address
    _nlmsg(20, struct.pack("=BBBBI", 2, 24, 0, 0, 5) + _rta(2, b"\1\2")),  # 2-byte address
    _nlmsg(20, struct.pack("=BBBBI", 2, 24, 0, 0, 5) + struct.pack("=HH", 40, 2)),  # attr overruns
    struct.pack("=IHHII", 64, 16, 0, 0, 0),  # message longer than datagram
    struct.pack("=IHHII", 8, 16, 0, 0, 0),  # message shorter than its header
    _nlmsg(16, struct.pack("=BxHiII", 0, 1, 5, 0, 0) + _rta(3, b"\xff\xfe\0")),  # name not UTF-8
])
def test_parse_rtnl_rejects(data):
    with pytest.raises(RemoteProtocolError):
        parse_rtnl(data)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_parse_rtnl_fuzz_raw(data):
    try:
        parse_rtnl(data)
    except RemoteProtocolError as e:
        assert e.reason


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([2, 3, 16, 17, 20, 21, 24, 25]), st.binary(max_size=80), st.integers(0, 200))
def test_parse_rtnl_fuzz_typed(mtype, body, cut):
    # well-formed headers around hostile bodies, optionally cut short
    data = _nlmsg(mtype, body)
    data = data[:16 + cut] if cut < len(body) else data
    try:
        for m in parse_rtnl(data):
            assert m["type"] == mtype
    except RemoteProtocolError as e:
        assert e.reason


# ------------------------------------------------- the daemon runs without pyroute2
# (requests are compared byte for byte with pyroute2's encoder in test_rtnl.py)

@pytest.mark.lab
def test_running_daemon_does_not_load_pyroute2(lab):
    from tests import harness

    lab.start_broker(harness.broker_config())
    d = harness.Daemon(lab)
    try:
        # -X importtime's log (stderr, into the daemon log) lists every module imported
        d.start(env={"PYTHONPROFILEIMPORTTIME": "1"})
        d.wait_status(lambda s: s["state"] == "up", timeout=30, what="tunnel up")
        with open("/proc/%d/maps" % d.proc.pid) as f:
            maps = f.read()
        log = d.log()
    finally:
        d.stop()
        d.cleanup()
    imported = [line.rsplit("|", 1)[1].strip() for line in log.splitlines()
                if line.startswith("import time:") and line.count("|") == 2]
    assert "cpe_tunnel.adapters.netlink" in imported and "cpe_tunnel.adapters.rtnl" in imported
    assert not [m for m in imported if m.startswith("pyroute2")], "the daemon imported pyroute2"
    assert "asyncio" not in imported  # what pyroute2 0.9 dragged in
    assert "pyroute2" not in maps


def test_netlink_in_missing_namespace():
    with pytest.raises(ValueError):
        Netlink(netns="a/b")
    if os.geteuid() != 0:
        pytest.skip("needs root")
    with pytest.raises(OSError):
        Netlink(netns="cptnl-missing-%d" % os.getpid())


# ------------------------------------------------------------- IPv6 WAN (TSP v4v6)

def test_parse_rtnl_ipv6_family():
    a6 = b"\x20\x01\x0d\xb8" + b"\0" * 11 + b"\x02"
    addr6 = _nlmsg(20, struct.pack("=BBBBI", 10, 64, 0x40, 0, 5) + _rta(1, a6)
                   + _rta(8, struct.pack("=I", 0x240)))
    ll = _nlmsg(20, struct.pack("=BBBBI", 10, 64, 0x80, 253, 5) + _rta(1, b"\xfe\x80" + b"\0" * 13 + b"\x01"))
    addr4 = _nlmsg(20, struct.pack("=BBBBI", 2, 24, 0, 0, 5) + _rta(2, bytes([192, 0, 2, 1])))
    gw6 = b"\x20\x01\x0d\xb8" + b"\0" * 11 + b"\x01"
    route6 = _nlmsg(24, struct.pack("=BBBBBBBBI", 10, 0, 0, 0, 254, 3, 0, 1, 0)
                    + _rta(5, gw6) + _rta(4, struct.pack("=I", 5)))
    data = addr6 + ll + addr4 + route6
    msgs = parse_rtnl(data, nlmod.AF_INET6)
    assert [m["type"] for m in msgs] == [20, 20, 24]  # the IPv4 address is skipped
    assert msgs[0]["addr"] == "2001:db8::2" and msgs[0]["aflags"] == 0x240 and msgs[0]["scope"] == 0
    assert msgs[1]["addr"] == "fe80::1" and msgs[1]["aflags"] == 0x80 and msgs[1]["scope"] == 253
    assert msgs[2]["gateway"] == "2001:db8::1" and msgs[2]["oif"] == 5 and msgs[2]["dst_len"] == 0
    # the default family still skips IPv6, as before
    assert [m["type"] for m in parse_rtnl(data)] == [20]
    # an IPv6 message with a 4-byte address or gateway is malformed
    with pytest.raises(RemoteProtocolError):
        parse_rtnl(_nlmsg(20, struct.pack("=BBBBI", 10, 64, 0, 0, 5) + _rta(1, b"\1\2\3\4")), nlmod.AF_INET6)
    with pytest.raises(RemoteProtocolError):
        parse_rtnl(_nlmsg(24, struct.pack("=BBBBBBBBI", 10, 0, 0, 0, 254, 3, 0, 1, 0) + _rta(5, b"\1\2\3\4")),
                   nlmod.AF_INET6)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([20, 21, 24, 25]), st.binary(max_size=80), st.integers(0, 200))
def test_parse_rtnl_ipv6_fuzz_typed(mtype, body, cut):
    data = _nlmsg(mtype, body)
    data = data[:16 + cut] if cut < len(body) else data
    try:
        for m in parse_rtnl(data, nlmod.AF_INET6):
            assert m["type"] == mtype
    except RemoteProtocolError as e:
        assert e.reason


@pytest.mark.lab
def test_wan_monitor_ipv6_and_wan_addresses(ns, nl):
    for dev in ("va", "vb"):
        _ip(ns, "link", "set", dev, "up")
    mon = WanMonitor("va", netns=ns, family=6)
    try:
        _settle(mon)  # link-local notifications of the links just brought up
        # a tentative address (DAD pending on a link that is down) is not reported
        # nor usable; once DAD is off for it (nodad) it is both
        _ip(ns, "link", "set", "va", "down")
        nl.addr_add("va", "2001:db8:9::1", 64)
        ev = _settle(mon)
        assert not [e for e in ev if e[0] == "addr-add" and e[2] == "2001:db8:9::1"], ev
        assert nl.ipv6_wan_addrs("va") == []
        _ip(ns, "link", "set", "va", "up")
        _ip(ns, "addr", "add", "2001:db8:9::2/64", "dev", "va", "nodad")
        ev = _collect(mon, [("addr-add", "va", "2001:db8:9::2")])
        assert ("addr-add", "va", "2001:db8:9::2") in ev
        assert not [e for e in ev if e[0].startswith("addr") and e[2].startswith("fe80:")], ev
        assert "2001:db8:9::2" in nl.ipv6_wan_addrs("va")
        # another device's address is not the WAN's
        _ip(ns, "addr", "add", "2001:db8:8::1/64", "dev", "vb", "nodad")
        assert not [e for e in _settle(mon) if "2001:db8:8::1" in e]
        # deprecated (preferred lifetime 0): reported (the usable set changed), not usable
        _ip(ns, "addr", "change", "2001:db8:9::2/64", "dev", "va", "preferred_lft", "0")
        ev = _collect(mon, [("addr-add", "va", "2001:db8:9::2")])
        assert ("addr-add", "va", "2001:db8:9::2") in ev
        assert "2001:db8:9::2" not in nl.ipv6_wan_addrs("va")
        _ip(ns, "addr", "del", "2001:db8:9::2/64", "dev", "va")
        ev = _collect(mon, [("addr-del", "va", "2001:db8:9::2")])
        assert ("addr-del", "va", "2001:db8:9::2") in ev
        # the IPv6 default route and default_route_v6()
        _ip(ns, "addr", "add", "2001:db8:9::3/64", "dev", "va", "nodad")
        _ip(ns, "-6", "route", "add", "default", "via", "2001:db8:9::ff", "dev", "va")
        ev = _collect(mon, [("route-default", "va")])
        assert ("route-default", "va") in ev
        assert nl.default_route_v6() == ("2001:db8:9::ff", "va")
        assert nl.default_route_v4() == (None, None)
        _ip(ns, "-6", "route", "del", "default", "via", "2001:db8:9::ff", "dev", "va")
        ev = _collect(mon, [("route-default", None)])
        assert ("route-default", None) in ev
    finally:
        mon.close()
    with pytest.raises(ValueError):
        WanMonitor("va", netns=ns, family=5)
