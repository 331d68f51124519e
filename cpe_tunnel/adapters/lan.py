"""LAN side of Router Advertisements: a raw ICMPv6 socket on one interface (CPython).

Thin I/O only: what to send and when is decided by cpe_tunnel.core.ra.RaScheduler, and
received Router Solicitations are decoded by cpe_tunnel.core.ra.parse_rs.
"""

import os
import socket
import struct

from cpe_tunnel.core.addr import ip6_ntoa

ICMP6_FILTER = 1  # <linux/icmpv6.h>, level IPPROTO_ICMPV6
ND_ROUTER_SOLICIT = 133
ALL_NODES = "ff02::1"
ALL_ROUTERS = "ff02::2"
MAX_DRAIN = 64  # packets per read() call, so one busy socket cannot starve the loop


def icmp6_filter(pass_types):
    """ICMP6_FILTER value letting only pass_types through: 256 bits, a set bit BLOCKS the
    type (Linux tests data[type >> 5] & (1 << (type & 31)) on native-endian u32 words)."""
    words = [0xFFFFFFFF] * 8
    for t in pass_types:
        if not 0 <= t <= 255:
            raise ValueError("ICMPv6 type %r out of range" % (t,))
        words[t >> 5] &= ~(1 << (t & 31)) & 0xFFFFFFFF
    return struct.pack("=8I", *words)


def check_ifname(ifname):
    """Linux interface names: 1..15 bytes, no '/', whitespace or ':' and not '.'/'..'."""
    if not isinstance(ifname, str) or not 0 < len(ifname.encode()) < 16 or ifname in (".", ".."):
        raise ValueError("%r is not a network interface name" % (ifname,))
    for c in ifname:
        if c in "/:" or c.isspace():
            raise ValueError("%r is not a network interface name" % (ifname,))
    return ifname


def addr_text(host):
    host = host.split("%", 1)[0]
    try:
        return ip6_ntoa(socket.inet_pton(socket.AF_INET6, host))
    except (OSError, ValueError):
        return host


def bound_raw_socket(family, proto, ifname, setup=None):
    """Non-blocking raw socket bound to ifname; setup(sock), when given, sets further
    options. The socket is closed again when any of this fails."""
    s = socket.socket(family, socket.SOCK_RAW, proto)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
        if setup is not None:
            setup(s)
        s.setblocking(False)
    except BaseException:
        s.close()
        raise
    return s


def bound_icmp6_socket(ifname, pass_types):
    """Non-blocking raw ICMPv6 socket bound to ifname, receiving only pass_types."""
    filt = icmp6_filter(pass_types)
    return bound_raw_socket(
        socket.AF_INET6,
        socket.IPPROTO_ICMPV6,
        ifname,
        lambda s: s.setsockopt(socket.IPPROTO_ICMPV6, ICMP6_FILTER, filt),
    )


class RawSocket:
    """What the raw sockets here share: self.sock (non-blocking), fileno() for the loop,
    drain() and an idempotent close() (also as a context manager)."""

    sock = None

    def fileno(self):
        return self.sock.fileno()

    def drain(self, recv, *args):
        """Yield recv(*args) until nothing is waiting, at most MAX_DRAIN times."""
        for _ in range(MAX_DRAIN):
            try:
                got = recv(*args)
            except (BlockingIOError, InterruptedError):
                return
            yield got

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class RaSocket(RawSocket):
    """Raw ICMPv6 socket for sending RAs and receiving RSs on one LAN interface.
    Sends with hop limit 255 (RFC 4861 §6.1.2 makes receivers check it), receives only
    Router Solicitations that arrived with hop limit 255 (§6.1.1)."""

    def __init__(self, ifname):
        self.ifname = check_ifname(ifname)
        self.ifindex = socket.if_nametoindex(ifname)
        self.dropped = 0  # solicitations dropped for a hop limit other than 255
        s = bound_icmp6_socket(ifname, (ND_ROUTER_SOLICIT,))
        try:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 255)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, self.ifindex)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
            mreq = socket.inet_pton(socket.AF_INET6, ALL_ROUTERS) + struct.pack("@I", self.ifindex)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)
        except BaseException:
            s.close()
            raise
        self.sock = s

    def send(self, msg, dst=ALL_NODES):
        """Send one ICMPv6 message (the kernel fills in the checksum and picks the
        interface's link-local source). OSError (e.g. no usable link-local address
        yet, interface down) is left to the caller."""
        self.sock.sendto(msg, (dst, 0, 0, self.ifindex))

    def read(self):
        """[(msg bytes, source address text)] of the Router Solicitations waiting."""
        out = []
        cmsg_space = socket.CMSG_SPACE(4)
        for data, anc, _flags, addr in self.drain(self.sock.recvmsg, 2048, cmsg_space):
            hlim = None
            for level, typ, cdata in anc:
                if level == socket.IPPROTO_IPV6 and typ == socket.IPV6_HOPLIMIT and len(cdata) >= 4:
                    hlim = struct.unpack("@i", cdata[:4])[0]
            if hlim != 255:
                self.dropped += 1
                continue
            out.append((bytes(data), addr_text(addr[0])))
        return out


def link_lladdr(ifname, sysfs="/sys/class/net"):
    """The interface's link-layer address as bytes, or None when it has none (TUN, sit,
    missing interface, all zeros)."""
    check_ifname(ifname)
    try:
        with open(os.path.join(sysfs, ifname, "address")) as f:
            text = f.read().strip()
    except OSError:
        return None
    if not text:
        return None
    try:
        b = bytes(int(p, 16) for p in text.split(":"))
    except ValueError:
        return None
    if any(len(p) != 2 for p in text.split(":")) or not any(b):
        return None
    return b
