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
# Userspace plane: a TUN device and a raw IPv4 socket of protocol 41, one thread per
# direction. Each thread drains its non-blocking fd until EAGAIN and only then waits
# in poll() on (fd, stop pipe): no poll per packet under load, and close() stops both
# threads promptly. Buffers are preallocated; there is no per-packet logging.

import errno
import os
import select
import socket
import threading
import time

from cpe_tunnel.adapters.netlink import in_netns
from cpe_tunnel.adapters.tun import open_tun
from cpe_tunnel.core.errors import ConfigError

__all__ = ["IPPROTO_IPV6", "KernelSixin4", "UserspaceSixin4", "choose_dataplane", "create_dataplane",
           "decap_6in4"]

IPPROTO_IPV6 = 41
IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)
BUFSIZE = 65536
BATCH = 64  # packets between clock reads / stop checks while draining

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


class KernelSixin4:
    """6in4 through the kernel's sit driver (netlink.sit_create)."""

    kind = "kernel"

    def __init__(self, netlink, ifname, local, remote, ttl=64, tos=0, mtu=1280):
        if local is not None:
            _ip4(local, "local endpoint")
        _ip4(remote, "remote endpoint")
        self.ttl, self.tos = _check_ttl_tos(ttl, tos)
        self.netlink = netlink
        self.ifname = ifname
        self.local = local
        self.remote = remote
        self.mtu = int(mtu)
        self._opened = False
        self._seen = None  # (tx_packets, rx_packets) at the last counters() call
        self._last_tx = None
        self._last_rx = None

    def open(self):
        kind = self.netlink.link_kind(self.ifname)
        if kind == "sit":
            self.netlink.link_del(self.ifname)  # a stale one of ours (crash, restart)
        elif kind is not None:
            raise OSError(errno.EEXIST, "device '%s' exists and is not a 6in4 (sit) tunnel" % self.ifname)
        self.netlink.sit_create(self.ifname, self.local, self.remote, self.ttl, self.tos, self.mtu)
        self._opened = True
        try:
            self.netlink.link_up(self.ifname)
        except BaseException:
            self.close()
            raise

    def set_endpoints(self, local, remote):
        if local is not None:
            _ip4(local, "local endpoint")
        _ip4(remote, "remote endpoint")
        if self._opened:
            self.netlink.sit_set_endpoints(self.ifname, local, remote)
        self.local = local
        self.remote = remote

    def counters(self, now=None):
        st = self.netlink.link_stats(self.ifname) if self._opened else None
        if st is None:
            st = {}
        now = time.monotonic() if now is None else now
        tx = st.get("tx_packets", 0)
        rx = st.get("rx_packets", 0)
        if self._seen is not None:
            if tx != self._seen[0]:
                self._last_tx = now
            if rx != self._seen[1]:
                self._last_rx = now
        self._seen = (tx, rx)
        drops = {}
        for key, reason in (("rx_errors", "kernel rx errors"), ("rx_dropped", "kernel rx dropped"),
                            ("tx_errors", "kernel tx errors"), ("tx_dropped", "kernel tx dropped")):
            if st.get(key):
                drops[reason] = st[key]
        return {
            "tx_packets": tx,
            "tx_bytes": st.get("tx_bytes", 0),
            "rx_packets": rx,
            "rx_bytes": st.get("rx_bytes", 0),
            "rx_dropped": st.get("rx_dropped", 0) + st.get("rx_errors", 0),
            "drops": drops,
            "last_tx": self._last_tx,
            "last_rx": self._last_rx,
        }

    def close(self):
        if self._opened:
            self._opened = False
            self.netlink.link_del(self.ifname)


# --------------------------------------------------------------------------------


class UserspaceSixin4:
    """6in4 in userspace: TUN device `ifname` + raw IPv4 socket of protocol 41.

    netlink: used to bring the TUN up (optional: without it the caller does that).
    netns: create the TUN and the socket in that network namespace (tests, or a
    daemon managing a namespace it does not run in).
    ttl 0 (inherit) is sent as 64 and tos 1 (inherit) as 0: a userspace socket cannot
    copy them per packet."""

    kind = "userspace"

    def __init__(self, ifname, local, remote, ttl=64, tos=0, mtu=1280, netlink=None, netns=None):
        if local is not None:
            _ip4(local, "local endpoint")
        rb = _ip4(remote, "remote endpoint")
        ttl, tos = _check_ttl_tos(ttl, tos)
        self.ttl = ttl or 64
        self.tos = 0 if tos == 1 else tos
        self.ifname = ifname
        self.local = local
        self.remote = remote
        self.mtu = int(mtu)
        self.netlink = netlink
        self.netns = netns
        self.error = None  # set when a forwarding thread died unexpectedly
        # state shared with the threads (plain attribute reads; each counter has one writer)
        self._remote_b = rb
        self._dest = (remote, 0)
        self._tun = None
        self._sock = None
        self._retired = []
        self._stop_r = self._stop_w = None
        self._wake_r = self._wake_w = None
        self._threads = []
        self._stopping = False
        self.tx_packets = self.tx_bytes = 0
        self.rx_packets = self.rx_bytes = 0
        self.last_tx = self.last_rx = None
        self._tx_drops = {}
        self._rx_drops = {}

    # -- setup -----------------------------------------------------------------------
    def _make_socket(self, local):
        def make():
            s = socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_IPV6)
            try:
                s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, self.ttl)
                s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, self.tos)
                for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                    try:
                        s.setsockopt(socket.SOL_SOCKET, opt, 1 << 20)
                    except OSError:
                        pass
                if local is not None:
                    # FREEBIND: the WAN address may come and go; bind anyway
                    s.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
                    s.bind((local, 0))
                s.setblocking(False)
            except BaseException:
                s.close()
                raise
            return s

        try:
            return in_netns(self.netns, make)
        except OSError as e:
            if e.errno in (errno.EPERM, errno.EACCES):
                raise OSError(e.errno, "a raw protocol-41 socket needs root (CAP_NET_RAW)")
            raise

    def open(self):
        if self._tun is not None:
            return
        fd, name = open_tun(self.ifname, mtu=self.mtu, nonblocking=True, netns=self.netns)
        self._tun = fd
        self.ifname = name
        try:
            self._sock = self._make_socket(self.local)
            self._stop_r, self._stop_w = os.pipe()
            self._wake_r, self._wake_w = os.pipe()
            for p in (self._stop_r, self._wake_r):
                os.set_blocking(p, False)
            if self.netlink is not None:
                self.netlink.link_up(name)
            self._stopping = False
            self._threads = [
                threading.Thread(target=self._run, args=(loop,), name=tag + name, daemon=True)
                for loop, tag in ((self._tx_loop, "6in4-tx-"), (self._rx_loop, "6in4-rx-"))
            ]
            for t in self._threads:
                t.start()
        except BaseException:
            self.close()
            raise

    def set_endpoints(self, local, remote):
        """Change endpoints while running: a new remote takes effect with the next
        packet; a new local address rebinds the socket (a fresh one is swapped in)."""
        if local is not None:
            _ip4(local, "local endpoint")
        rb = _ip4(remote, "remote endpoint")
        if local != self.local and self._sock is not None:
            new = self._make_socket(local)
            old, self._sock = self._sock, new
            # The rx thread re-registers on wake-up; the old socket is closed later (at
            # the next swap or close()) so no thread can be using it when it goes.
            while len(self._retired) >= 2:
                self._retired.pop(0).close()
            self._retired.append(old)
            try:
                os.write(self._wake_w, b"w")
            except OSError:
                pass
        self.local = local
        self._remote_b = rb
        self._dest = (remote, 0)
        self.remote = remote

    def counters(self):
        drops = {}
        for d in (self._tx_drops, self._rx_drops):
            for k in list(d):
                drops[k] = drops.get(k, 0) + d[k]
        out = {
            "tx_packets": self.tx_packets,
            "tx_bytes": self.tx_bytes,
            "rx_packets": self.rx_packets,
            "rx_bytes": self.rx_bytes,
            "rx_dropped": sum(self._rx_drops.values()),
            "drops": drops,
            "last_tx": self.last_tx,
            "last_rx": self.last_rx,
        }
        if self.error:
            out["error"] = self.error
        return out

    def close(self):
        self._stopping = True
        if self._stop_w is not None:
            try:
                os.write(self._stop_w, b"s")
            except OSError:
                pass
        for t in self._threads:
            t.join(5.0)
        alive = [t for t in self._threads if t.is_alive()]
        self._threads = []
        if alive:  # should not happen; do not pull fds from under a live thread
            self.error = "forwarding thread did not stop"
            return
        for s in self._retired:
            s.close()
        self._retired = []
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        for name in ("_tun", "_stop_r", "_stop_w", "_wake_r", "_wake_w"):
            fd = getattr(self, name)
            if fd is not None:
                setattr(self, name, None)
                try:
                    os.close(fd)
                except OSError:
                    pass

    # -- forwarding threads ----------------------------------------------------------
    def _run(self, loop):
        try:
            loop()
        except Exception as e:  # keep the reason for status; never a silent death
            self.error = "%s: %s" % (loop.__name__.strip("_"), e)

    def _drop(self, drops, reason):
        drops[reason] = drops.get(reason, 0) + 1

    def _wait_writable(self, sock, stop_r):
        p = select.poll()
        p.register(sock, select.POLLOUT)
        p.register(stop_r, select.POLLIN)
        for fd, _ev in p.poll(1000):
            if fd == stop_r:
                return False
        return True

    def _tx_loop(self):
        """TUN -> network: IPv6 packets from the TUN, sent to the broker over proto 41."""
        fd = self._tun
        stop_r = self._stop_r
        buf = bytearray(BUFSIZE)
        bufs = [buf]
        mv = memoryview(buf)
        drops = self._tx_drops
        readv = os.readv
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        poller.register(stop_r, select.POLLIN)
        while not self._stopping:
            sent = 0
            try:
                while True:
                    n = readv(fd, bufs)
                    if n < 40 or (buf[0] >> 4) != 6:
                        self._drop(drops, "not IPv6 (from TUN)")
                        continue
                    pkt = mv[:n]
                    try:
                        self._sock.sendto(pkt, self._dest)
                    except BlockingIOError:
                        # socket buffer full: wait for room (bounded), retry once
                        if not self._wait_writable(self._sock, stop_r):
                            return
                        try:
                            self._sock.sendto(pkt, self._dest)
                        except OSError:
                            self._drop(drops, "send buffer full")
                            continue
                    except OSError as e:
                        self._drop(drops, _send_reason(e))
                        continue
                    self.tx_packets += 1
                    self.tx_bytes += n
                    sent += 1
                    if sent >= BATCH:
                        self.last_tx = time.monotonic()
                        sent = 0
                        if self._stopping:
                            return
            except (BlockingIOError, InterruptedError):
                pass
            except OSError as e:
                if e.errno in (errno.EBADF, errno.EBADFD):
                    return  # closed under us
                self._drop(drops, "TUN read error")
            if sent:
                self.last_tx = time.monotonic()
            for rfd, _ev in poller.poll():
                if rfd == stop_r:
                    return

    def _rx_loop(self):
        """network -> TUN: proto-41 packets from the broker, decapsulated."""
        fd = self._tun
        stop_r = self._stop_r
        wake_r = self._wake_r
        buf = bytearray(BUFSIZE)
        mv = memoryview(buf)
        drops = self._rx_drops
        write = os.write
        decap = decap_6in4
        sock = self._sock
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        poller.register(stop_r, select.POLLIN)
        poller.register(wake_r, select.POLLIN)
        while not self._stopping:
            got = 0
            rb = self._remote_b
            try:
                while True:
                    n = sock.recv_into(buf)
                    r = decap(buf, n, rb)
                    if r.__class__ is str:
                        self._drop(drops, r)
                        continue
                    hl, end = r
                    try:
                        write(fd, mv[hl:end])
                    except OSError as e:
                        if e.errno in (errno.EBADF, errno.EBADFD):
                            return
                        self._drop(drops, "TUN write error")
                        continue
                    self.rx_packets += 1
                    self.rx_bytes += end - hl
                    got += 1
                    if got >= BATCH:
                        self.last_rx = time.monotonic()
                        got = 0
                        rb = self._remote_b
                        if self._stopping:
                            return
            except (BlockingIOError, InterruptedError):
                pass
            except OSError as e:
                if e.errno in (errno.EBADF, errno.EBADFD):
                    return
                self._drop(drops, "socket read error")
            if got:
                self.last_rx = time.monotonic()
            for rfd, _ev in poller.poll():
                if rfd == stop_r:
                    return
                if rfd == wake_r:
                    try:
                        os.read(wake_r, 64)
                    except OSError:
                        pass
                    new = self._sock
                    if new is not sock:
                        try:
                            poller.unregister(sock)
                        except (KeyError, ValueError, OSError):
                            pass
                        sock = new
                        poller.register(sock, select.POLLIN)


def _send_reason(e):
    code = e.errno
    if code in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN):
        return "no route to broker"
    if code == errno.EMSGSIZE:
        return "packet too big for the WAN"
    if code in (errno.ENOBUFS, errno.EAGAIN):
        return "send buffer full"
    if code in (errno.EPERM, errno.EACCES):
        return "blocked by firewall"
    return "send error"
