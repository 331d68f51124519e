# v4v6 (TSP, RFC 5572): IPv4 packets in IPv6 (RFC 2473 generic packet tunnelling,
# next header 4), for IPv4 tunnel brokers. Two data planes with the interface of
# adapters/sixin4.py:
#
#   .kind                       'kernel' | 'userspace'
#   .ifname                     the tunnel device (ip6tnl link or TUN)
#   open()                      create the device and bring it up
#   set_endpoints(local6, remote6) change endpoints in place (WAN address change)
#   counters()                  dict(tx_packets, tx_bytes, rx_packets, rx_bytes,
#                               rx_dropped, drops={reason: n}, last_tx, last_rx)
#   close()                     remove everything it created
#
# Kernel plane: an ip6tnl link with proto 4 (netlink.ip6tnl_create). OpenWrt: kmod-ip6-tunnel.
# Userspace plane: a TUN carrying IPv4 (IPv6 disabled on it) + a raw IPv6 socket of
# protocol 4, bound to local6 when given. The raw socket sends and receives the IPv4
# packet without the IPv6 header; the kernel adds and strips it (and any extension
# headers, such as an encapsulation limit option from a kernel peer). Packets from any
# source but remote6 are dropped and counted ("foreign source"). The socket is not
# connect()ed: that needs a route to the broker at the time, which a WAN going up and
# down does not promise. Forwarding machinery (threads, socket hand-over on a new local
# address, counters, prompt close) is plane.TunSocketPlane's; the kernel plane is a
# plane.KernelTunnel. No Tunnel Encapsulation Limit option is sent. Byte counters
# count the inner IPv4 packets.

import errno
import os
import socket

from cpe_tunnel.adapters.netlink import in_netns
from cpe_tunnel.adapters.plane import (
    KernelTunnel,
    PlainTx,
    RxPump,
    Stop,
    TunSocketPlane,
    drop,
    open_raw_socket,
)
from cpe_tunnel.core.errors import ConfigError

__all__ = ["IPPROTO_IPIP", "KernelV4v6", "UserspaceV4v6", "choose_v4v6", "create_v4v6", "decap_4in6",
           "DROP_REASONS"]

IPPROTO_IPIP = 4

NO_IP6TNL = ("this kernel has no ip6tnl (4in6) support: install kmod-ip6-tunnel or use dataplane "
             "'userspace'")

# decap_4in6() results below 0, as drop reasons (index = -result)
DROP_REASONS = (None, "not IPv4 inside", "bad IPv4 header", "truncated IPv4 packet")


def _norm6(text):
    return socket.inet_ntop(socket.AF_INET6, socket.inet_pton(socket.AF_INET6, text))


def _ip6(text, what):
    if isinstance(text, str) and ":" in text:
        try:
            return socket.inet_pton(socket.AF_INET6, text)
        except (OSError, ValueError):
            pass
    raise ValueError("%s '%s' is not an IPv6 address" % (what, text))


def _check_mtu(mtu):
    mtu = int(mtu)
    if not 68 <= mtu <= 65535 - 40:
        raise ValueError("4in6 MTU %d is out of range (68..65495)" % mtu)
    return mtu


def _check_ttl(ttl):
    ttl = int(ttl)
    if not 0 <= ttl <= 255:
        raise ValueError("hop limit must be 0..255 (0 = inherit)")
    return ttl


def decap_4in6(buf, n):
    """Check the payload buf[:n] of a protocol-4 IPv6 packet (as a raw IPv6 socket
    returns it: the IPv4 packet, IPv6 header already removed). Returns the IPv4 packet's
    length (> 0; bytes after it are padding) or a negative code whose reason is
    DROP_REASONS[-code]. Never raises for n <= len(buf)."""
    if n < 20 or buf[0] >> 4 != 4:
        return -1
    hl = (buf[0] & 15) * 4
    tot = buf[2] << 8 | buf[3]
    if hl < 20 or tot < hl:
        return -2
    if tot > n:
        return -3
    return tot


def choose_v4v6(mode, netlink):
    """'auto' | 'kernel' | 'userspace' -> 'kernel' or 'userspace'.
    'auto' picks the kernel when netlink.ip6tnl_supported(). Forcing 'kernel' on a
    kernel without ip6tnl raises ConfigError."""
    if mode == "userspace":
        return "userspace"
    if mode not in ("auto", "kernel"):
        raise ConfigError("dataplane must be 'auto', 'kernel' or 'userspace', not '%s'" % (mode,))
    if netlink.ip6tnl_supported():
        return "kernel"
    if mode == "kernel":
        raise ConfigError(NO_IP6TNL)
    return "userspace"


def create_v4v6(mode, netlink, ifname, local6, remote6, mtu=1280, ttl=64):
    """choose_v4v6() then construct (not open) the matching data plane."""
    if choose_v4v6(mode, netlink) == "kernel":
        return KernelV4v6(netlink, ifname, local6, remote6, mtu, ttl=ttl)
    return UserspaceV4v6(ifname, local6, remote6, mtu, ttl=ttl, netlink=netlink,
                         netns=getattr(netlink, "netns", None))


# --------------------------------------------------------------------------------


class KernelV4v6(KernelTunnel):
    """4in6 through the kernel's ip6tnl driver (netlink.ip6tnl_create)."""

    link_kind = "ip6tnl"
    what = "4in6 (ip6tnl) tunnel"

    def __init__(self, netlink, ifname, local6, remote6, mtu=1280, ttl=64):
        self._check(local6, remote6)
        mtu = _check_mtu(mtu)
        self.ttl = _check_ttl(ttl)
        super().__init__(netlink, ifname, local6, remote6, mtu)

    def _check(self, local6, remote6):
        if local6 is not None:
            _ip6(local6, "local endpoint")
        _ip6(remote6, "remote endpoint")

    def _create(self):
        self.netlink.ip6tnl_create(self.ifname, self.local, self.remote, ttl=self.ttl, mtu=self.mtu)

    def _after_create(self):
        self.netlink.link_set_mtu(self.ifname, self.mtu)  # the driver may pick its own at creation

    def _move(self, local6, remote6):
        self.netlink.ip6tnl_set_endpoints(self.ifname, local6, remote6)


# --------------------------------------------------------------------------------


class UserspaceV4v6(TunSocketPlane):
    """4in6 in userspace: TUN device `ifname` (IPv4) + raw IPv6 socket of protocol 4.

    local6: our IPv6 WAN address (None: routing picks it); remote6: the broker's.
    ttl: outer hop limit (0 = inherit: sent as 64). netlink: used to bring the TUN up
    (optional). netns: create the TUN and the socket in that network namespace.
    threads: 2 (one per direction) or 1, as for plane.TunSocketPlane."""

    thread_tag = "4in6"
    NO_ROUTE = "no route to broker"
    REFUSED = UNREACHABLE = "broker unreachable (ICMPv6)"

    def __init__(self, ifname, local6, remote6, mtu=1280, ttl=64, netlink=None, netns=None, threads=2):
        if local6 is not None:
            _ip6(local6, "local endpoint")
        _ip6(remote6, "remote endpoint")
        super().__init__(ifname, _check_mtu(mtu), netlink, netns, threads)
        self.ttl = _check_ttl(ttl) or 64
        self.local = local6
        self.remote = remote6
        # read by the pumps once per batch
        self._dest = (remote6, 0)
        self._remote_s = _norm6(remote6)  # as recvfrom reports a source

    # -- setup -------------------------------------------------------------------------
    def _make_socket(self, local):
        return open_raw_socket(self.netns, socket.AF_INET6, IPPROTO_IPIP,
                               [(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, self.ttl)],
                               local, "a raw IPv6 protocol-4 socket")

    def _new_socket(self):
        return self._make_socket(self.local)

    def _pumps(self, tx_sock, rx_sock):
        return _Tx4(self, tx_sock), _Rx4(self, rx_sock)

    def _configure_tun(self, name):
        # an IPv4-only device: no link-local address, no router solicitations or MLD
        def off():
            with open("/proc/sys/net/ipv6/conf/%s/disable_ipv6" % name, "w") as f:
                f.write("1")
        try:
            in_netns(self.netns, off)
        except (OSError, ValueError):
            pass  # IPv6 compiled out, or no /proc: nothing to switch off

    def set_endpoints(self, local6, remote6):
        """Change endpoints while running: a new remote takes effect within one batch; a
        new local address rebinds: a fresh socket is handed to the forwarding threads."""
        if local6 is not None:
            _ip6(local6, "local endpoint")
        _ip6(remote6, "remote endpoint")
        if local6 != self.local and self._tun is not None:
            self._hand_over(self._make_socket(local6))
        self.local = local6
        self._dest = (remote6, 0)
        self._remote_s = _norm6(remote6)
        self.remote = remote6


class _Tx4(PlainTx):
    """TUN -> network: IPv4 packets from the TUN, sent to the broker in IPv6."""

    version = 4
    min_len = 20
    not_reason = "not IPv4 (from TUN)"


class _Rx4(RxPump):
    """network -> TUN: IPv4 packets from the broker, IPv6 header already removed."""

    def __init__(self, plane, sock):
        super().__init__(plane, sock)
        self.plain_buffer()

    def run(self):
        buf, mv, plane = self.buf, self.mv, self.plane
        recvfrom_into = self.sock.recvfrom_into
        remote = plane._remote_s
        write = os.write
        fd = self.fd
        drops = plane._rx_drops
        pk = by = 0
        dry = False
        try:
            for _ in self.rng:
                n, src = recvfrom_into(buf)
                if src[0] != remote:
                    drop(drops, "foreign source")
                    continue
                end = decap_4in6(buf, n)
                if end < 0:
                    drop(drops, DROP_REASONS[-end])
                    continue
                try:
                    write(fd, mv[:end])
                except OSError as e:
                    if e.errno in (errno.EBADF, errno.EBADFD):
                        raise Stop()
                    drop(drops, "TUN write error")
                    continue
                pk += 1
                by += end
        except (BlockingIOError, InterruptedError):
            dry = True
        except OSError as e:
            if e.errno in (errno.EBADF, errno.EBADFD):
                raise Stop()
            drop(drops, plane.recv_reason(e.errno))
        finally:
            if pk:
                self.rx_done(pk, by)
        return dry
