# Netlink adapter: links, addresses, routes, sit and ip6tnl tunnels, over our own small
# rtnetlink client (adapters/rtnl.py: request/ack with sequence numbers, dumps,
# attribute packing), and the WAN monitor (a plain non-blocking rtnetlink socket whose
# notifications are parsed here, for the daemon's selector).
#
# The daemon does not use pyroute2 (it pulled in asyncio and ssl: ~14 MiB of RSS on a
# 64-256 MB router); tests still use it on their side to decode what we encode.
# Tested: tests/unit/test_netlink.py and test_rtnl.py against the host kernel in
# namespaces; the host has no sit/ip6tnl, so those requests are checked byte for byte
# (test_rtnl.py) and run for real under User-Mode Linux (tests/kernel,
# test_sixin4.py::test_kernel_sit_under_uml). A Netlink object may be used from any
# thread (its requests are serialised).

import errno
import os
import random
import socket
import struct
import threading

from cpe_tunnel.adapters import rtnl
from cpe_tunnel.core.errors import RemoteProtocolError

__all__ = ["Netlink", "NetlinkOpError", "WanMonitor", "in_netns", "parse_rtnl"]

AF_INET = socket.AF_INET
AF_INET6 = socket.AF_INET6

IFF_UP = 0x1
IFF_LOOPBACK = 0x8
IFF_RUNNING = 0x40

IFA_F_SECONDARY = 0x01
IFA_F_NODAD = 0x02
IFA_F_DADFAILED = 0x08
IFA_F_DEPRECATED = 0x20
IFA_F_TENTATIVE = 0x40
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
IFA_F_HOMEADDRESS = 0x10
IFA_F_MANAGETEMPADDR = 0x100
IFA_F_NOPREFIXROUTE = 0x200

_ADDR_FLAGS = {
    "nodad": IFA_F_NODAD,
    "homeaddress": IFA_F_HOMEADDRESS,
    "mngtmpaddr": IFA_F_MANAGETEMPADDR,
    "noprefixroute": IFA_F_NOPREFIXROUTE,
}

RT_TABLE_MAIN = 254
RTN_UNICAST = 1
RTN_UNREACHABLE = 7

CLONE_NEWNET = 0x40000000


class NetlinkOpError(OSError):
    """A netlink request failed; .errno is the kernel's error code, str() says what
    we tried to do and why it failed, in words."""

    def __init__(self, code, what):
        reason = "%s: %s" % (what, os.strerror(code))
        super().__init__(code, reason)
        self.reason = reason

    def __str__(self):
        return self.reason


# --------------------------------------------------------------------------------
# Network namespaces (tests, and a daemon managing a namespace it does not run in)


def _netns_path(netns):
    if not isinstance(netns, str) or not netns:
        raise ValueError("network namespace name must be non-empty text")
    if netns.startswith("/"):
        return netns
    if "/" in netns or netns in (".", ".."):
        raise ValueError("'%s' is not a network namespace name" % netns)
    return "/run/netns/" + netns


def _setns(fd):
    fn = getattr(os, "setns", None)
    if fn is not None:  # Python >= 3.12
        fn(fd, CLONE_NEWNET)
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, "setns: %s" % os.strerror(code))


def in_netns(netns, fn):
    """Run fn() with the calling context's network namespace switched to `netns`
    (a name under /run/netns or an absolute path) and return its result. Sockets and
    TUN devices opened by fn stay in that namespace. Runs fn in a short-lived helper
    thread (a namespace switch is per thread), so the caller's thread is untouched.
    netns None: just fn()."""
    if netns is None:
        return fn()
    path = _netns_path(netns)
    box = []

    def run():
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            try:
                _setns(fd)
            finally:
                os.close(fd)
            box.append((True, fn()))
        except BaseException as e:  # handed to the caller's thread
            box.append((False, e))

    t = threading.Thread(target=run, name="netns-helper", daemon=True)
    t.start()
    t.join()
    ok, value = box[0]
    if not ok:
        raise value
    return value


# --------------------------------------------------------------------------------
# Netlink: the small interface the daemon uses


def _ipaddr_text(text, family):
    # Normalise and validate address text before it is packed for the kernel.
    try:
        return socket.inet_ntop(family, socket.inet_pton(family, text))
    except (OSError, TypeError, ValueError):
        kind = "IPv4" if family == AF_INET else "IPv6"
        raise ValueError("'%s' is not an %s address" % (text, kind))


def _family_of(text):
    return AF_INET6 if ":" in str(text) else AF_INET


class _Closing:
    """Context manager support for a class with close()."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Netlink(_Closing):
    """Links, addresses and routes over rtnetlink (our own client, adapters/rtnl.py).

    netns: a namespace name (or /proc/.../ns/net path) to work in, None for ours; the
    socket is opened inside it and stays bound to it.
    Errors are NetlinkOpError (an OSError with .errno), except where a method says it
    is idempotent and the kernel answer means "already so"."""

    def __init__(self, netns=None):
        self.netns = netns
        if netns is not None:
            _netns_path(netns)  # ValueError on a bad name, before any thread
        self._rt = rtnl.RtnlSocket(lambda: in_netns(netns, rtnl.open_socket))
        self._sit = None
        self._sit_params = {}

    # -- helpers ---------------------------------------------------------------
    def _req(self, what, mtype, flags, body, dump=False, ok=()):
        """One request; returns the reply messages [(type, body)]. A kernel error in
        `ok` returns None; any other raises NetlinkOpError(code, what)."""
        if self._rt is None:
            raise NetlinkOpError(errno.EBADF, what + " (netlink is closed)")
        try:
            return self._rt.request(mtype, flags, body, dump)
        except rtnl.NetlinkError as e:
            if e.code in ok:
                return None
            raise NetlinkOpError(e.code, what)

    def _decode(self, what, fn, body):
        try:
            return fn(body)
        except RemoteProtocolError as e:
            raise NetlinkOpError(errno.EPROTO, "%s (%s)" % (what, e.reason))

    def _index(self, ifname):
        idx = self.link_index(ifname)
        if idx is None:
            raise NetlinkOpError(errno.ENODEV, "network device '%s'" % ifname)
        return idx

    def _get_link(self, what, body):
        """RTM_GETLINK -> the decoded link or None when there is no such device."""
        msgs = self._req(what, rtnl.RTM_GETLINK, 0, body, ok=(errno.ENODEV, errno.ENOENT))
        for mt, mb in msgs or ():
            if mt == rtnl.RTM_NEWLINK:
                return self._decode(what, rtnl.decode_link, mb)
        return None

    def _link_msg(self, ifname):
        """The decoded link ifname (see rtnl.decode_link) or None when it does not
        exist."""
        if not isinstance(ifname, str) or not ifname or "\0" in ifname:
            return None
        try:
            name = rtnl.attr_str(rtnl.IFLA_IFNAME, ifname)
        except UnicodeError:
            return None
        if len(name) > 4 + 16:  # IFNAMSIZ, with the NUL
            return None
        return self._get_link("reading link '%s'" % ifname, rtnl.ifinfomsg() + name)

    def _link_by_index(self, idx):
        return self._get_link("reading link %d" % idx, rtnl.ifinfomsg(index=idx))

    def _link_change(self, what, idx, flags=0, change=0, attrs=b""):
        self._req(what, rtnl.RTM_NEWLINK, 0, rtnl.ifinfomsg(0, idx, flags, change) + attrs)

    # -- links -------------------------------------------------------------------
    def link_index(self, ifname):
        """Interface index of ifname, or None when there is no such device."""
        try:
            msg = self._link_msg(ifname)
        except NetlinkOpError:
            return None
        return msg["index"] if msg is not None else None

    def link_exists(self, ifname):
        return self.link_index(ifname) is not None

    def link_up(self, ifname):
        idx = self._index(ifname)
        self._link_change("bringing up '%s'" % ifname, idx, IFF_UP, IFF_UP)

    def link_down(self, ifname):
        idx = self._index(ifname)
        self._link_change("bringing down '%s'" % ifname, idx, 0, IFF_UP)

    def link_set_mtu(self, ifname, mtu):
        idx = self._index(ifname)
        self._link_change("setting MTU %d on '%s'" % (mtu, ifname), idx,
                          attrs=rtnl.attr_u32(rtnl.IFLA_MTU, int(mtu)))

    def link_del(self, ifname):
        """Delete a link; no error when it does not exist."""
        idx = self.link_index(ifname)
        if idx is None:
            return
        self._req("deleting link '%s'" % ifname, rtnl.RTM_DELLINK, 0, rtnl.ifinfomsg(index=idx),
                  ok=(errno.ENODEV, errno.ENOENT))

    def link_kind(self, ifname):
        """Link kind ('sit', 'tun', 'veth', ...; '' for a device without one such as a
        plain Ethernet port) or None when it does not exist."""
        msg = self._link_msg(ifname)
        if msg is None:
            return None
        return msg["kind"] or ""

    def link_is_up(self, ifname):
        """(admin_up, running) of ifname, or None when it does not exist."""
        msg = self._link_msg(ifname)
        if msg is None:
            return None
        flags = msg["flags"]
        return (bool(flags & IFF_UP), bool(flags & IFF_RUNNING))

    def link_stats(self, ifname):
        """dict(rx_packets, rx_bytes, tx_packets, tx_bytes, rx_dropped, tx_dropped,
        rx_errors, tx_errors) of ifname, or None when it does not exist."""
        msg = self._link_msg(ifname)
        if msg is None:
            return None
        st = msg["stats"] or {}
        return {k: int(st.get(k, 0)) for k in ("rx_packets", "rx_bytes", "tx_packets", "tx_bytes",
                                              "rx_dropped", "tx_dropped", "rx_errors", "tx_errors")}

    # -- addresses -----------------------------------------------------------------
    def _addr_msgs(self, ifname, family):
        """The decoded addresses of one family on ifname ([] if no such device)."""
        idx = self.link_index(ifname)
        if idx is None:
            return []
        what = "reading addresses of '%s'" % ifname
        msgs = self._req(what, rtnl.RTM_GETADDR, 0, rtnl.ifaddrmsg(family, 0, 0, 0, idx), dump=True)
        out = []
        for mt, mb in msgs:
            if mt != rtnl.RTM_NEWADDR:
                continue
            m = self._decode(what, rtnl.decode_addr, mb)
            if m["index"] == idx and m["family"] == family:
                out.append(m)
        return out

    def ipv4_addrs(self, ifname):
        """IPv4 addresses on ifname as text, primary addresses first ([] if none or no
        such device)."""
        prim, sec = [], []
        for m in self._addr_msgs(ifname, AF_INET):
            a = m["local"] or m["address"]
            if not a:
                continue
            (sec if m["flags"] & IFA_F_SECONDARY else prim).append(a)
        return prim + sec

    def addr_list6(self, ifname):
        """IPv6 addresses on ifname: list of (addr_text, plen), link-local included;
        [] if none or no such device."""
        out = []
        for m in self._addr_msgs(ifname, AF_INET6):
            a = m["address"] or m["local"]
            if a:
                out.append((a, m["prefixlen"]))
        return out

    def ipv6_wan_addrs(self, ifname):
        """Global IPv6 addresses of ifname usable as a tunnel endpoint, as text:
        link-local, tentative (DAD not done), DAD-failed and deprecated addresses are
        left out; [] if none or no such device."""
        out = []
        for m in self._addr_msgs(ifname, AF_INET6):
            if m["scope"] != RT_SCOPE_UNIVERSE:
                continue
            if m["flags"] & (IFA_F_TENTATIVE | IFA_F_DEPRECATED | IFA_F_DADFAILED):
                continue
            a = m["address"] or m["local"]
            if a:
                out.append(a)
        return out

    def _addr_args(self, ifname, addr, plen, flags):
        """-> (RTM_*ADDR body, 'addr/plen' text)."""
        fam = _family_of(addr)
        addr = _ipaddr_text(addr, fam)
        plen = int(plen)
        if not 0 <= plen <= (32 if fam == AF_INET else 128):
            raise ValueError("prefix length %d is out of range for %s" % (plen, addr))
        bits = 0
        for f in flags or ():
            if f not in _ADDR_FLAGS:
                raise ValueError("unknown address flag '%s'" % f)
            bits |= _ADDR_FLAGS[f]
        if bits and fam != AF_INET6:
            raise ValueError("address flags are for IPv6 addresses")
        body = rtnl.ifaddrmsg(fam, plen, 0, RT_SCOPE_UNIVERSE, self._index(ifname))
        body += rtnl.attr_ip(rtnl.IFA_ADDRESS, fam, addr)
        if fam == AF_INET:
            body += rtnl.attr_ip(rtnl.IFA_LOCAL, fam, addr)
        if bits:
            # IFA_FLAGS (32 bit) carries flags above 0xff; the kernel takes it over
            # ifa_flags when present.
            body += rtnl.attr_u32(rtnl.IFA_FLAGS, bits)
        return body, "%s/%d" % (addr, plen)

    def addr_add(self, ifname, addr, plen, flags=()):
        """Add addr/plen on ifname; already present is fine. flags (IPv6 only): names
        from 'nodad', 'noprefixroute', 'mngtmpaddr', 'homeaddress'."""
        body, text = self._addr_args(ifname, addr, plen, flags)
        self._req("adding address %s on '%s'" % (text, ifname), rtnl.RTM_NEWADDR,
                  rtnl.NLM_F_CREATE | rtnl.NLM_F_EXCL, body, ok=(errno.EEXIST,))

    def addr_del(self, ifname, addr, plen, flags=()):
        """Remove addr/plen from ifname; absent address or device is fine."""
        if self.link_index(ifname) is None:
            return
        try:
            body, text = self._addr_args(ifname, addr, plen, ())
        except NetlinkOpError as e:
            if e.errno == errno.ENODEV:  # went away meanwhile
                return
            raise
        self._req("removing address %s from '%s'" % (text, ifname), rtnl.RTM_DELADDR, 0, body,
                  ok=(errno.EADDRNOTAVAIL, errno.ENODEV, errno.ENOENT, errno.ESRCH))

    # -- routes ----------------------------------------------------------------------
    @staticmethod
    def _route_body(fam, dst, plen, rtype, proto, scope, oif=None, gateway=None, metric=None, table=None):
        tbl = RT_TABLE_MAIN if table is None else int(table)
        if not 0 <= tbl <= 0xFFFFFFFF:
            raise ValueError("route table %d is out of range" % tbl)
        body = rtnl.rtmsg(fam, plen, tbl if tbl < 256 else rtnl.RT_TABLE_UNSPEC, proto, scope, rtype)
        if plen:  # a default route carries no RTA_DST
            body += rtnl.attr_ip(rtnl.RTA_DST, fam, dst)
        if gateway is not None:
            body += rtnl.attr_ip(rtnl.RTA_GATEWAY, fam, gateway)
        if oif is not None:
            body += rtnl.attr_u32(rtnl.RTA_OIF, oif)
        if metric is not None:
            m = int(metric)
            if not 0 <= m <= 0xFFFFFFFF:
                raise ValueError("route metric %d is out of range" % m)
            body += rtnl.attr_u32(rtnl.RTA_PRIORITY, m)
        if table is not None:
            body += rtnl.attr_u32(rtnl.RTA_TABLE, tbl)
        return body

    def _route_args(self, dst, plen, ifname, gateway, family, kind, metric, table, delete=False):
        """-> (RTM_*ROUTE body, text for messages)."""
        if family not in (4, 6):
            raise ValueError("route family must be 4 or 6")
        fam = AF_INET6 if family == 6 else AF_INET
        dst = _ipaddr_text(dst, fam)
        plen = int(plen)
        if not 0 <= plen <= (32 if fam == AF_INET else 128):
            raise ValueError("prefix length %d is out of range for %s" % (plen, dst))
        if kind not in ("unicast", "unreachable"):
            raise ValueError("route kind must be 'unicast' or 'unreachable'")
        oif = gw = None
        if kind == "unicast":
            if ifname is not None:
                oif = self._index(ifname)
            if gateway is not None:
                gw = _ipaddr_text(gateway, fam)
            if ifname is None and gateway is None:
                raise ValueError("a unicast route needs a device or a gateway")
        rtype = RTN_UNREACHABLE if kind == "unreachable" else RTN_UNICAST
        if delete:  # match any protocol; type as asked
            body = self._route_body(fam, dst, plen, rtype if kind == "unreachable" else rtnl.RTN_UNSPEC,
                                    rtnl.RTPROT_UNSPEC, RT_SCOPE_UNIVERSE, oif, gw, metric, table)
        else:
            body = self._route_body(fam, dst, plen, rtype, rtnl.RTPROT_STATIC, RT_SCOPE_UNIVERSE, oif, gw,
                                    metric, table)
        text = "%s/%d" % (dst, plen)
        if kind == "unreachable":
            text = "unreachable " + text
        if ifname:
            text += " dev " + ifname
        if gateway:
            text += " via " + gateway
        return body, text

    def route_add(self, dst, plen, ifname=None, gateway=None, family=6, kind="unicast", metric=None,
                  table=None):
        """Add a route; an identical existing one is fine (EEXIST ignored)."""
        body, text = self._route_args(dst, plen, ifname, gateway, family, kind, metric, table)
        self._req("adding route %s" % text, rtnl.RTM_NEWROUTE, rtnl.NLM_F_CREATE | rtnl.NLM_F_EXCL, body,
                  ok=(errno.EEXIST,))

    def route_replace(self, dst, plen, ifname=None, gateway=None, family=6, kind="unicast", metric=None,
                      table=None):
        """Add or replace the route to dst/plen (same metric and table)."""
        body, text = self._route_args(dst, plen, ifname, gateway, family, kind, metric, table)
        self._req("replacing route %s" % text, rtnl.RTM_NEWROUTE, rtnl.NLM_F_CREATE | rtnl.NLM_F_REPLACE,
                  body)

    def route_del(self, dst, plen, ifname=None, gateway=None, family=6, kind="unicast", metric=None,
                  table=None):
        """Delete a route; a missing route or device is fine."""
        if family not in (4, 6):
            raise ValueError("route family must be 4 or 6")
        if ifname is not None and self.link_index(ifname) is None:
            return
        if kind == "unicast" and ifname is None and gateway is None:
            # match on destination (plus metric / table when given) only
            fam = AF_INET6 if family == 6 else AF_INET
            dst = _ipaddr_text(dst, fam)
            plen = int(plen)
            if not 0 <= plen <= (32 if fam == AF_INET else 128):
                raise ValueError("prefix length %d is out of range for %s" % (plen, dst))
            body = self._route_body(fam, dst, plen, rtnl.RTN_UNSPEC, rtnl.RTPROT_UNSPEC, RT_SCOPE_UNIVERSE,
                                    metric=metric, table=table)
            text = "%s/%d" % (dst, plen)
        else:
            try:
                body, text = self._route_args(dst, plen, ifname, gateway, family, kind, metric, table,
                                              delete=True)
            except NetlinkOpError as e:
                if e.errno == errno.ENODEV:  # the device went away meanwhile
                    return
                raise
        self._req("deleting route %s" % text, rtnl.RTM_DELROUTE, 0, body,
                  ok=(errno.ESRCH, errno.ENOENT, errno.ENODEV))

    def default_route_v4(self):
        """(gateway_text_or_None, ifname_or_None) of the IPv4 default route in the main
        table with the lowest metric; (None, None) when there is none."""
        return self._default_route(AF_INET)

    def default_route_v6(self):
        """As default_route_v4(), for the IPv6 default route."""
        return self._default_route(AF_INET6)

    def _default_route(self, family):
        what = "reading IPv%d routes" % (4 if family == AF_INET else 6)
        msgs = self._req(what, rtnl.RTM_GETROUTE, 0, rtnl.rtmsg(family, 0, 0, 0, 0, 0), dump=True)
        best = None
        for mt, mb in msgs:
            if mt != rtnl.RTM_NEWROUTE:
                continue
            m = self._decode(what, rtnl.decode_route, mb)
            if m["family"] != family or m["dst_len"] != 0 or m["type"] != RTN_UNICAST:
                continue
            if m["table"] != RT_TABLE_MAIN:
                continue
            oif, gw = m["oif"], m["gateway"]
            if oif is None and m["multipath"]:
                oif, gw = m["multipath"][0]
            if best is None or m["priority"] < best[0]:
                best = (m["priority"], gw, oif)
        if best is None:
            return (None, None)
        ifname = None
        if best[2]:
            try:
                link = self._link_by_index(best[2])
                if link is not None:
                    ifname = link["ifname"]
            except NetlinkOpError:
                pass
        return (best[1], ifname)

    # -- tunnel links (sit, ip6tnl) -----------------------------------------------------
    def _tunnel_body(self, kind, data_attrs, ifname=None, index=0, mtu=None):
        body = rtnl.ifinfomsg(index=index)
        if ifname is not None:
            body += rtnl.attr_str(rtnl.IFLA_IFNAME, ifname)
        if mtu is not None:
            body += rtnl.attr_u32(rtnl.IFLA_MTU, int(mtu))
        info = rtnl.attr_str(rtnl.IFLA_INFO_KIND, kind)
        if data_attrs is not None:
            info += rtnl.nested(rtnl.IFLA_INFO_DATA, *data_attrs)
        return body + rtnl.nested(rtnl.IFLA_LINKINFO, info)

    # -- sit (6in4) --------------------------------------------------------------------
    def sit_supported(self):
        """True when the kernel can make sit (6in4) links: probes once by creating and
        deleting a throwaway link with a random name; the answer is cached."""
        if self._sit is None:
            self._sit = self._kind_supported("sit", "cpts")
        return self._sit

    def _kind_supported(self, kind, prefix):
        """Whether a link of `kind` can be made: creates prefix + 8 random hex digits and
        deletes it again."""
        name = "%s%08x" % (prefix, random.getrandbits(32))
        try:
            self._rt.request(rtnl.RTM_NEWLINK, rtnl.NLM_F_CREATE | rtnl.NLM_F_EXCL,
                             self._tunnel_body(kind, None, ifname=name))
        except rtnl.NetlinkError as exc:
            # An endpoint-less sit/ip6tnl duplicates the kernel's own sit0/ip6tnl0
            # (EEXIST): the kind is there. A kernel without it answers "unknown device
            # type" (EOPNOTSUPP).
            return exc.code == errno.EEXIST
        self.link_del(name)
        return True

    @staticmethod
    def _sit_attrs(local, remote, ttl, tos):
        a = [rtnl.attr_ip(rtnl.IFLA_IPTUN_REMOTE, AF_INET, remote)]
        if local is not None:
            a.append(rtnl.attr_ip(rtnl.IFLA_IPTUN_LOCAL, AF_INET, local))
        if ttl is not None:
            a.append(rtnl.attr_u8(rtnl.IFLA_IPTUN_TTL, ttl))
        if tos is not None:
            a.append(rtnl.attr_u8(rtnl.IFLA_IPTUN_TOS, tos))
        if ttl:
            a.append(rtnl.attr_u8(rtnl.IFLA_IPTUN_PMTUDISC, 1))  # the kernel insists on DF with a fixed TTL
        return a

    def sit_create(self, ifname, local, remote, ttl=64, tos=0, mtu=1280):
        """Create sit link ifname from local (IPv4 text or None = any) to remote, with
        the given TTL (0 = inherit), TOS (1 = inherit) and MTU; left down."""
        remote_t = _ipaddr_text(remote, AF_INET)
        local_t = _ipaddr_text(local, AF_INET) if local is not None else None
        ttl, tos = int(ttl), int(tos)
        if not 0 <= ttl <= 255 or not 0 <= tos <= 255:
            raise ValueError("ttl and tos must be 0..255")
        body = self._tunnel_body("sit", self._sit_attrs(local_t, remote_t, ttl, tos), ifname=ifname, mtu=mtu)
        self._req("creating 6in4 (sit) link '%s' to %s" % (ifname, remote), rtnl.RTM_NEWLINK,
                  rtnl.NLM_F_CREATE | rtnl.NLM_F_EXCL, body)
        self._sit_params[ifname] = (ttl, tos)

    def sit_set_endpoints(self, ifname, local, remote):
        """Change the endpoints of sit link ifname in place (no delete/re-create).
        TTL and TOS are kept (the kernel resets what a change request leaves out)."""
        remote_t = _ipaddr_text(remote, AF_INET)
        local_t = _ipaddr_text(local, AF_INET) if local is not None else "0.0.0.0"
        msg = self._link_msg(ifname)
        if msg is None:
            raise NetlinkOpError(errno.ENODEV, "network device '%s'" % ifname)
        ttl, tos = self._sit_params.get(ifname, (None, None))
        data = msg["info_data"]
        what = "reading link '%s'" % ifname
        try:
            t = rtnl.u8(data.get(rtnl.IFLA_IPTUN_TTL), "TTL")
            s = rtnl.u8(data.get(rtnl.IFLA_IPTUN_TOS), "TOS")
        except RemoteProtocolError as e:
            raise NetlinkOpError(errno.EPROTO, "%s (%s)" % (what, e.reason))
        if t is not None or s is not None:
            ttl = t if t is not None else ttl
            tos = s if s is not None else tos
        body = self._tunnel_body("sit", self._sit_attrs(local_t, remote_t, ttl, tos), index=msg["index"])
        self._req("changing endpoints of '%s' to %s -> %s" % (ifname, local or "any", remote),
                  rtnl.RTM_NEWLINK, 0, body)

    def close(self):
        rt, self._rt = self._rt, None
        if rt is not None:
            rt.close()

    # -- ip6tnl (IPv4 in IPv6, RFC 2473; used by adapters/v4v6.py) ----------------------
    # The kernel's change request resets every tunnel parameter it leaves out (it zeroes
    # them before parsing), so ip6tnl_set_endpoints sends them all again.
    IP6TNL_F_IGN_ENCAP_LIMIT = 0x1
    IPPROTO_IPIP = 4

    def ip6tnl_supported(self):
        """True when the kernel can make ip6tnl links: probes once by creating and
        deleting a throwaway link with a random name; the answer is cached."""
        if getattr(self, "_ip6tnl", None) is None:
            self._ip6tnl = self._kind_supported("ip6tnl", "cpti")
        return self._ip6tnl

    @staticmethod
    def _ip6tnl_params(ttl, encap_limit):
        ttl = int(ttl)
        if not 0 <= ttl <= 255:
            raise ValueError("hop limit must be 0..255 (0 = inherit)")
        if encap_limit is None:
            return ttl, 0, Netlink.IP6TNL_F_IGN_ENCAP_LIMIT
        encap_limit = int(encap_limit)
        if not 0 <= encap_limit <= 255:
            raise ValueError("encapsulation limit must be 0..255 (or None: no limit option)")
        return ttl, encap_limit, 0

    def _ip6tnl_attrs(self, local, remote, ttl, limit, flags):
        return [rtnl.attr_ip(rtnl.IFLA_IPTUN_REMOTE, AF_INET6, remote),
                rtnl.attr_ip(rtnl.IFLA_IPTUN_LOCAL, AF_INET6, local),
                rtnl.attr_u8(rtnl.IFLA_IPTUN_PROTO, self.IPPROTO_IPIP),
                rtnl.attr_u8(rtnl.IFLA_IPTUN_TTL, ttl),
                rtnl.attr_u8(rtnl.IFLA_IPTUN_ENCAP_LIMIT, limit),
                rtnl.attr_u32(rtnl.IFLA_IPTUN_FLAGS, flags)]

    def ip6tnl_create(self, ifname, local, remote, ttl=64, encap_limit=None, mtu=1280):
        """Create ip6tnl link ifname carrying IPv4 (proto 4, RFC 2473) from local (IPv6
        text or None = any) to remote, with hop limit ttl (0 = inherit), MTU mtu, and
        encap_limit: None = send no Tunnel Encapsulation Limit option (the flag
        ignore-encap-limit), or the limit 0..255 to put in that option; left down."""
        ttl, limit, flags = self._ip6tnl_params(ttl, encap_limit)
        remote_t = _ipaddr_text(remote, AF_INET6)
        local_t = _ipaddr_text(local, AF_INET6) if local is not None else "::"
        body = self._tunnel_body("ip6tnl", self._ip6tnl_attrs(local_t, remote_t, ttl, limit, flags),
                                 ifname=ifname, mtu=mtu)
        self._req("creating 4in6 (ip6tnl) link '%s' to %s" % (ifname, remote), rtnl.RTM_NEWLINK,
                  rtnl.NLM_F_CREATE | rtnl.NLM_F_EXCL, body)
        if not hasattr(self, "_ip6tnl_parms"):
            self._ip6tnl_parms = {}
        self._ip6tnl_parms[ifname] = (ttl, limit, flags)

    def ip6tnl_set_endpoints(self, ifname, local, remote):
        """Change the endpoints of ip6tnl link ifname in place (no delete/re-create);
        protocol, hop limit, encapsulation limit and flags are kept (read back from the
        link, else as created)."""
        remote_t = _ipaddr_text(remote, AF_INET6)
        local_t = _ipaddr_text(local, AF_INET6) if local is not None else "::"
        msg = self._link_msg(ifname)
        if msg is None:
            raise NetlinkOpError(errno.ENODEV, "network device '%s'" % ifname)
        ttl, limit, flags = getattr(self, "_ip6tnl_parms", {}).get(
            ifname, (64, 0, self.IP6TNL_F_IGN_ENCAP_LIMIT))
        data = msg["info_data"]
        try:
            t = rtnl.u8(data.get(rtnl.IFLA_IPTUN_TTL), "hop limit")
            e = rtnl.u8(data.get(rtnl.IFLA_IPTUN_ENCAP_LIMIT), "encapsulation limit")
            f = rtnl.u32(data.get(rtnl.IFLA_IPTUN_FLAGS), "tunnel flags")
        except RemoteProtocolError as exc:
            raise NetlinkOpError(errno.EPROTO, "reading link '%s' (%s)" % (ifname, exc.reason))
        ttl = t if t is not None else ttl
        limit = e if e is not None else limit
        flags = f if f is not None else flags
        attrs = self._ip6tnl_attrs(local_t, remote_t, int(ttl), int(limit), int(flags))
        body = self._tunnel_body("ip6tnl", attrs, index=msg["index"])
        self._req("changing endpoints of '%s' to %s -> %s" % (ifname, local or "any", remote),
                  rtnl.RTM_NEWLINK, 0, body)

# --------------------------------------------------------------------------------
# rtnetlink decoding for the WAN monitor

from .rtnl import (  # noqa: E402  (the message and attribute numbers live in rtnl.py)
    IFA_ADDRESS, IFA_FLAGS, IFA_LABEL, IFA_LOCAL, IFLA_IFNAME, NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE,
    NLMSG_ERROR, NLMSG_OVERRUN, RTA_GATEWAY, RTA_MULTIPATH, RTA_OIF, RTA_PRIORITY,
    RTA_TABLE, RTM_DELADDR, RTM_DELLINK, RTM_DELROUTE, RTM_GETLINK, RTM_NEWADDR, RTM_NEWLINK, RTM_NEWROUTE,
)

RTMGRP_LINK = 0x1
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV4_ROUTE = 0x40
RTMGRP_IPV6_IFADDR = 0x100
RTMGRP_IPV6_ROUTE = 0x400

_NLMSG_HDR = "=IHHII"  # len, type, flags, seq, pid
_IFINFO = "=BxHiII"  # family, type, index, flags, change
_IFADDR = "=BBBBI"  # family, prefixlen, flags, scope, index
_RTMSG = "=BBBBBBBBI"  # family, dst_len, src_len, tos, table, protocol, scope, type, flags


def _attrs(data, off, end):
    """rtattrs in data[off:end] -> {type: bytes} (first occurrence wins)."""
    out = {}
    while off + 4 <= end:
        alen, atype = struct.unpack_from("=HH", data, off)
        if alen < 4 or off + alen > end:
            raise RemoteProtocolError("netlink attribute of length %d overruns its message" % alen)
        atype &= 0x3FFF  # drop NLA_F_NESTED / NLA_F_NET_BYTEORDER
        if atype not in out:
            out[atype] = bytes(data[off + 4:off + alen])
        off += (alen + 3) & ~3
    return out


def _cstr(b):
    if b is None:
        return None
    b = b.split(b"\0", 1)[0]
    try:
        return b.decode("utf-8")
    except UnicodeError:
        raise RemoteProtocolError("netlink interface name is not UTF-8")


def _u32(b):
    if b is None:
        return None
    if len(b) < 4:
        raise RemoteProtocolError("netlink attribute too short for a 32-bit value")
    return struct.unpack_from("=I", b, 0)[0]


def _ip6_text(raw):
    return socket.inet_ntop(AF_INET6, raw)


def parse_rtnl(data, family=AF_INET):
    """Decode one datagram of rtnetlink messages into a list of dicts:
    {'type', 'seq', 'pid', ...} with per type:
      link (RTM_NEWLINK/DELLINK): index, flags, ifname
      addr (RTM_NEWADDR/DELADDR, of `family` only): index, prefixlen, addr (text), label;
           IPv6 also: aflags (IFA_FLAGS when present, else the 8-bit flags), scope
      route (RTM_NEWROUTE/DELROUTE, of `family` only): dst_len, table, rtype, oif,
                                                 gateway, priority, multipath (bool)
      NLMSG_DONE / NLMSG_ERROR (error = positive errno or 0) / NLMSG_OVERRUN
    family: AF_INET (default) or AF_INET6. Other message types and families are
    skipped. Malformed input raises RemoteProtocolError, nothing else."""
    alen_want = 4 if family == AF_INET else 16
    out = []
    data = memoryview(data) if not isinstance(data, memoryview) else data
    off = 0
    n = len(data)
    while off + 16 <= n:
        mlen, mtype, mflags, seq, pid = struct.unpack_from(_NLMSG_HDR, data, off)
        if mlen < 16 or off + mlen > n:
            raise RemoteProtocolError("netlink message of length %d does not fit its datagram" % mlen)
        body = off + 16
        end = off + mlen
        msg = {"type": mtype, "seq": seq, "pid": pid, "flags": mflags}
        if mtype in (RTM_NEWLINK, RTM_DELLINK):
            if end - body < 16:
                raise RemoteProtocolError("netlink link message too short")
            _fam, _t, index, flags, _ch = struct.unpack_from(_IFINFO, data, body)
            a = _attrs(data, body + 16, end)
            msg["index"] = index
            msg["flags"] = flags
            msg["ifname"] = _cstr(a.get(IFLA_IFNAME))
            out.append(msg)
        elif mtype in (RTM_NEWADDR, RTM_DELADDR):
            if end - body < 8:
                raise RemoteProtocolError("netlink address message too short")
            fam, plen, fl, sc, index = struct.unpack_from(_IFADDR, data, body)
            if fam == family:
                a = _attrs(data, body + 8, end)
                raw = a.get(IFA_LOCAL) or a.get(IFA_ADDRESS)
                if raw is None or len(raw) != alen_want:
                    raise RemoteProtocolError("netlink IPv%d address message without a %d-byte address"
                                              % (4 if family == AF_INET else 6, alen_want))
                msg["index"] = index
                msg["prefixlen"] = plen
                if family == AF_INET:
                    msg["addr"] = "%d.%d.%d.%d" % (raw[0], raw[1], raw[2], raw[3])
                else:
                    msg["addr"] = _ip6_text(raw)
                    xf = _u32(a.get(IFA_FLAGS))
                    msg["aflags"] = xf if xf is not None else fl
                    msg["scope"] = sc
                msg["label"] = _cstr(a.get(IFA_LABEL))
                out.append(msg)
        elif mtype in (RTM_NEWROUTE, RTM_DELROUTE):
            if end - body < 12:
                raise RemoteProtocolError("netlink route message too short")
            fam, dlen, _sl, _tos, table, _pr, _sc, rtype, _f = struct.unpack_from(_RTMSG, data, body)
            if fam == family:
                a = _attrs(data, body + 12, end)
                t = _u32(a.get(RTA_TABLE))
                gw = a.get(RTA_GATEWAY)
                if gw is not None and len(gw) != alen_want:
                    raise RemoteProtocolError("netlink IPv%d route with a gateway of %d bytes"
                                              % (4 if family == AF_INET else 6, len(gw)))
                msg["dst_len"] = dlen
                msg["table"] = t if t is not None else table
                msg["rtype"] = rtype
                msg["oif"] = _u32(a.get(RTA_OIF))
                if gw and family == AF_INET:
                    msg["gateway"] = "%d.%d.%d.%d" % (gw[0], gw[1], gw[2], gw[3])
                else:
                    msg["gateway"] = _ip6_text(gw) if gw else None
                msg["priority"] = _u32(a.get(RTA_PRIORITY)) or 0
                msg["multipath"] = RTA_MULTIPATH in a
                out.append(msg)
        elif mtype == NLMSG_ERROR:
            if end - body < 4:
                raise RemoteProtocolError("netlink error message too short")
            msg["error"] = -struct.unpack_from("=i", data, body)[0]
            out.append(msg)
        elif mtype in (NLMSG_DONE, NLMSG_OVERRUN):
            out.append(msg)
        off += (mlen + 3) & ~3
    return out


class WanMonitor(_Closing):
    """Watches IPv4 (family 4, the default) or IPv6 (family 6) addresses and default
    routes, and links, over rtnetlink.

    wan_device: the configured WAN device name; None = follow the default route (then
    events for any device except loopback are reported). Non-blocking: register
    fileno() with the selector and call read() when it is readable.

    read() -> list of events:
      ('addr-add', ifname, addr_text) / ('addr-del', ifname, addr_text)
      ('route-default', ifname)  an IPv4 default route (main table) via ifname appeared
      ('route-default', None)    an IPv4 default route went away (ask
                                 Netlink.default_route_v4() for the one left, if any)
      ('link', ifname, up)       up = administratively up and running; only on change
                                 (and on deletion, with up False)
      ('resync',)                the kernel dropped notifications (socket overrun):
                                 re-read the state instead of trusting events
    With family 6, link-local addresses are not reported, nor an address that is
    still tentative (its DAD-complete notification follows); a deprecated one is (the
    WAN's usable address changed). Routes and addresses are IPv6 ones then.
    """

    MAX_DATAGRAMS_PER_READ = 256

    def __init__(self, wan_device=None, netns=None, rcvbuf=1 << 20, family=4):
        if family not in (4, 6):
            raise ValueError("family must be 4 or 6")
        self.wan_device = wan_device
        self.family = AF_INET if family == 4 else AF_INET6
        if family == 4:
            groups = RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE
        else:
            groups = RTMGRP_LINK | RTMGRP_IPV6_IFADDR | RTMGRP_IPV6_ROUTE

        def make():
            s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
            try:
                try:
                    s.setsockopt(socket.SOL_SOCKET, 33, rcvbuf)  # SO_RCVBUFFORCE (root)
                except OSError:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
                s.bind((0, groups))
            except BaseException:
                s.close()
                raise
            return s

        self._sock = in_netns(netns, make)
        self._pid = self._sock.getsockname()[0]
        self._seq = 0
        self._dump_seq = None
        self._names = {}  # index -> ifname
        self._up = {}  # index -> bool
        self._loopback = set()
        self._buf = bytearray(65536)
        self.errors = 0  # malformed datagrams seen (skipped)
        try:
            self._initial_dump()
        except BaseException:
            self._sock.close()
            raise
        self._sock.setblocking(False)

    def fileno(self):
        return self._sock.fileno()

    def _request_link_dump(self):
        self._seq += 1
        self._dump_seq = self._seq
        # nlmsghdr + struct rtgenmsg (family AF_UNSPEC, padded to 4)
        msg = struct.pack(_NLMSG_HDR, 20, RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, self._seq, 0) + b"\0" * 4
        self._sock.send(msg)

    def _initial_dump(self):
        self._request_link_dump()
        self._sock.settimeout(2.0)
        for _ in range(10000):
            n = self._sock.recv_into(self._buf)
            done = False
            for m in parse_rtnl(memoryview(self._buf)[:n], self.family):
                if m["pid"] == self._pid and m["seq"] == self._dump_seq:
                    if m["type"] in (NLMSG_DONE, NLMSG_ERROR):
                        done = True
                    elif m["type"] == RTM_NEWLINK:
                        self._learn_link(m)
                # notifications racing with the dump are dropped: the caller reads
                # the state after constructing the monitor
            if done:
                self._dump_seq = None
                return
        raise OSError(errno.ETIMEDOUT, "netlink link dump did not finish")

    def _learn_link(self, m):
        idx = m["index"]
        if m["ifname"]:
            self._names[idx] = m["ifname"]
        if m["flags"] & IFF_LOOPBACK:
            self._loopback.add(idx)
        up = bool(m["flags"] & IFF_UP) and bool(m["flags"] & IFF_RUNNING)
        old = self._up.get(idx)
        self._up[idx] = up
        return old, up

    def _relevant(self, idx, ifname):
        if self.wan_device is not None:
            return ifname == self.wan_device
        return idx not in self._loopback and ifname != "lo"

    def _handle(self, m, events):
        t = m["type"]
        if m["pid"] == self._pid and self._dump_seq is not None and m["seq"] == self._dump_seq:
            # a resync dump answer: refresh the map quietly
            if t == RTM_NEWLINK:
                self._learn_link(m)
            elif t in (NLMSG_DONE, NLMSG_ERROR):
                self._dump_seq = None
            return
        if t == RTM_NEWLINK:
            idx = m["index"]
            oldname = self._names.get(idx)
            old, up = self._learn_link(m)
            name = self._names.get(idx)
            if self._relevant(idx, name) and (old is None or old != up or oldname != name):
                events.append(("link", name, up))
        elif t == RTM_DELLINK:
            idx = m["index"]
            name = self._names.pop(idx, None) or m["ifname"]
            was_up = self._up.pop(idx, None)
            self._loopback.discard(idx)
            if was_up is not False and self._relevant(idx, name):
                events.append(("link", name, False))
        elif t in (RTM_NEWADDR, RTM_DELADDR):
            idx = m["index"]
            name = self._names.get(idx) or m["label"]
            if self._relevant(idx, name):
                if self.family == AF_INET6:
                    if m["scope"] == RT_SCOPE_LINK:
                        return
                    if t == RTM_NEWADDR and m["aflags"] & IFA_F_TENTATIVE:
                        return
                events.append(("addr-add" if t == RTM_NEWADDR else "addr-del", name, m["addr"]))
        elif t in (RTM_NEWROUTE, RTM_DELROUTE):
            if m["dst_len"] != 0 or m["table"] != RT_TABLE_MAIN or m["rtype"] != RTN_UNICAST:
                return
            name = self._names.get(m["oif"]) if m["oif"] is not None else None
            if self.wan_device is not None and name != self.wan_device:
                return
            if t == RTM_NEWROUTE:
                events.append(("route-default", name))
            else:
                events.append(("route-default", None))
        elif t == NLMSG_OVERRUN:
            events.append(("resync",))

    def read(self):
        """Drain the socket (without blocking) and return the relevant events."""
        events = []
        mv = memoryview(self._buf)
        for _ in range(self.MAX_DATAGRAMS_PER_READ):
            try:
                n = self._sock.recv_into(self._buf)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                if e.errno == errno.ENOBUFS:
                    # notifications were lost: tell the daemon, re-learn link names
                    events.append(("resync",))
                    try:
                        self._request_link_dump()
                    except OSError:
                        pass
                    continue
                raise
            if n == 0:
                break
            try:
                msgs = parse_rtnl(mv[:n], self.family)
            except RemoteProtocolError:
                self.errors += 1
                continue
            for m in msgs:
                self._handle(m, events)
        return events

    def close(self):
        s, self._sock = self._sock, None
        if s is not None:
            s.close()
