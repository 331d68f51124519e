# 6in4 (RFC 4213, IPv6 in IPv4, IP protocol 41) data planes with one interface:
#
#   .kind                       'kernel' | 'userspace'
#   .ifname                     the tunnel device (sit link or TUN)
#   open()                      create the device and bring it up
#   set_endpoints(local, remote) change endpoints in place (WAN address change)
#   counters()                  dict(tx_packets, tx_bytes, rx_packets, rx_bytes,
#                               rx_dropped, drops={reason: n}, last_tx, last_rx)
#   close()                     remove everything it created
#
# Addresses and routes on the tunnel device are the daemon's business (Netlink).
# Byte counters count IPv6 packets (inner), as the kernel's sit device does.
#
# Userspace plane: a TUN device and a raw IPv4 socket of protocol 41, forwarded by
# plane.TunSocketPlane (threads, socket hand-over when the local address changes,
# counters, prompt close); this module has the 6in4 pumps and decapsulation.
# Kernel plane: plane.KernelTunnel with a sit link.

import errno
import os
import socket

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

__all__ = ["IPPROTO_IPV6", "KernelSixin4", "UserspaceSixin4", "choose_dataplane", "create_dataplane",
           "decap_6in4"]

IPPROTO_IPV6 = 41

NO_SIT = "this kernel has no sit (6in4) support: install kmod-sit or use dataplane 'userspace'"


def _ip4(text, what):
    if isinstance(text, str) and text.count(".") == 3:
        try:
            return socket.inet_pton(socket.AF_INET, text)
        except (OSError, ValueError):
            pass
    raise ValueError("%s '%s' is not an IPv4 address" % (what, text))


def decap_6in4(buf, n, remote_b):
    """Check the IPv4 datagram buf[:n] as read from a raw protocol-41 socket (IPv4
    header included) and locate the IPv6 packet inside.
    Returns (start, end) of the IPv6 packet in buf, or a drop reason (str) when the
    datagram is not IPv4 protocol 41 from remote_b (4 bytes) carrying a whole IPv6
    packet. Never raises for any content of buf (n <= len(buf))."""
    if n < 20 or (buf[0] >> 4) != 4:
        return "not IPv4"
    hl = (buf[0] & 15) * 4
    tot = (buf[2] << 8) | buf[3]
    if hl < 20 or tot < hl or tot > n:
        return "bad IPv4 header"
    if buf[9] != IPPROTO_IPV6:
        return "not protocol 41"
    if buf[12] != remote_b[0] or buf[13] != remote_b[1] or buf[14] != remote_b[2] or buf[15] != remote_b[3]:
        return "foreign source"
    if tot - hl < 40 or (buf[hl] >> 4) != 6:
        return "not IPv6 inside"
    end = hl + 40 + ((buf[hl + 4] << 8) | buf[hl + 5])
    if end > tot:
        return "truncated IPv6 packet"
    return (hl, end)


def _check_ttl_tos(ttl, tos):
    ttl = int(ttl)
    tos = int(tos)
    if not 0 <= ttl <= 255:
        raise ValueError("ttl must be 0..255 (0 = inherit)")
    if not 0 <= tos <= 255:
        raise ValueError("tos must be 0..255 (1 = inherit)")
    return ttl, tos


def choose_dataplane(mode, netlink):
    """'auto' | 'kernel' | 'userspace' -> 'kernel' or 'userspace'.
    'auto' picks the kernel when netlink.sit_supported(). Forcing 'kernel' on a kernel
    without sit raises ConfigError."""
    if mode == "userspace":
        return "userspace"
    if mode not in ("auto", "kernel"):
        raise ConfigError("dataplane must be 'auto', 'kernel' or 'userspace', not '%s'" % (mode,))
    if netlink.sit_supported():
        return "kernel"
    if mode == "kernel":
        raise ConfigError(NO_SIT)
    return "userspace"


def create_dataplane(mode, netlink, ifname, local, remote, ttl=64, tos=0, mtu=1280):
    """choose_dataplane() then construct (not open) the matching data plane."""
    kind = choose_dataplane(mode, netlink)
    if kind == "kernel":
        return KernelSixin4(netlink, ifname, local, remote, ttl=ttl, tos=tos, mtu=mtu)
    return UserspaceSixin4(ifname, local, remote, ttl=ttl, tos=tos, mtu=mtu, netlink=netlink,
                           netns=getattr(netlink, "netns", None))


# --------------------------------------------------------------------------------


class KernelSixin4(KernelTunnel):
    """6in4 through the kernel's sit driver (netlink.sit_create)."""

    link_kind = "sit"
    what = "6in4 (sit) tunnel"

    def __init__(self, netlink, ifname, local, remote, ttl=64, tos=0, mtu=1280):
        self.ttl, self.tos = _check_ttl_tos(ttl, tos)
        super().__init__(netlink, ifname, local, remote, int(mtu))

    def _check(self, local, remote):
        if local is not None:
            _ip4(local, "local endpoint")
        _ip4(remote, "remote endpoint")

    def _create(self):
        self.netlink.sit_create(self.ifname, self.local, self.remote, self.ttl, self.tos, self.mtu)

    def _move(self, local, remote):
        self.netlink.sit_set_endpoints(self.ifname, local, remote)


# --------------------------------------------------------------------------------


class UserspaceSixin4(TunSocketPlane):
    """6in4 in userspace: TUN device `ifname` + raw IPv4 socket of protocol 41.

    netlink: used to bring the TUN up (optional: without it the caller does that).
    netns: create the TUN and the socket in that network namespace (tests, or a
    daemon managing a namespace it does not run in).
    ttl 0 (inherit) is sent as 64 and tos 1 (inherit) as 0: a userspace socket cannot
    copy them per packet. threads: 2 (one per direction) or 1 (both in one thread)."""

    thread_tag = "6in4"
    REFUSED = "broker unreachable (ICMP)"
    send_wait_ms = 1000

    def __init__(self, ifname, local, remote, ttl=64, tos=0, mtu=1280, netlink=None, netns=None,
                 threads=2):
        if local is not None:
            _ip4(local, "local endpoint")
        rb = _ip4(remote, "remote endpoint")
        ttl, tos = _check_ttl_tos(ttl, tos)
        super().__init__(ifname, int(mtu), netlink, netns, threads)
        self.ttl = ttl or 64
        self.tos = 0 if tos == 1 else tos
        self.local = local
        self.remote = remote
        # read by the pumps once per batch
        self._remote_b = rb
        self._dest = (remote, 0)

    # -- setup -----------------------------------------------------------------------
    def _make_socket(self, local):
        return open_raw_socket(self.netns, socket.AF_INET, IPPROTO_IPV6,
                               [(socket.IPPROTO_IP, socket.IP_TTL, self.ttl),
                                (socket.IPPROTO_IP, socket.IP_TOS, self.tos)],
                               local, "a raw protocol-41 socket")

    def _new_socket(self):
        return self._make_socket(self.local)

    def _pumps(self, tx_sock, rx_sock):
        return PlainTx(self, tx_sock), _Rx6in4(self, rx_sock)

    def set_endpoints(self, local, remote):
        """Change endpoints while running: a new remote takes effect within one batch; a
        new local address rebinds: a fresh socket is handed to the forwarding threads."""
        if local is not None:
            _ip4(local, "local endpoint")
        rb = _ip4(remote, "remote endpoint")
        if local != self.local and self._tun is not None:
            self._hand_over(self._make_socket(local))
        self.local = local
        self._remote_b = rb
        self._dest = (remote, 0)
        self.remote = remote


class _Rx6in4(RxPump):
    """network -> TUN: proto-41 packets from the broker, decapsulated."""

    def __init__(self, plane, sock):
        super().__init__(plane, sock)
        self.plain_buffer()

    def run(self):
        buf, mv, plane = self.buf, self.mv, self.plane
        recv_into = self.sock.recv_into
        rb = plane._remote_b
        write = os.write
        fd = self.fd
        decap = decap_6in4
        drops = plane._rx_drops
        pk = by = 0
        dry = False
        try:
            for _ in self.rng:
                n = recv_into(buf)
                r = decap(buf, n, rb)
                if r.__class__ is str:
                    drop(drops, r)
                    continue
                hl, end = r
                try:
                    write(fd, mv[hl:end])
                except OSError as e:
                    if e.errno in (errno.EBADF, errno.EBADFD):
                        raise Stop()
                    drop(drops, "TUN write error")
                    continue
                pk += 1
                by += end - hl
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
