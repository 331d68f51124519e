# What every tunnel data plane shares (CPython only; no protocol logic here).
#
# Userspace planes (6in4, v6udpv4, 4in6, AYIYA) are a TunSocketPlane: a TUN device, a
# socket the plane owns, two "pumps" (tx: TUN -> socket, rx: socket -> TUN) run by one
# or two forwarding threads, counters and a prompt close(). A pump's run() moves up to
# a batch of packets from its non-blocking source and says whether the source ran dry;
# a thread sleeps in poll() (on its pumps' fds and its control pipe) only when all its
# pumps ran dry, so under load there is no poll per packet.
#
# Socket replacement without races: each thread works on its own dup() of the plane's
# socket, picks up a new one left by _hand_over() (checked once per batch, or woken
# through its control pipe when idle) and closes its old one itself, so no fd is ever
# closed under a thread that may still use it. A dup shares the socket itself with the
# original: connect(), setsockopt() on the plane's socket apply to the threads' dups.
#
# Counters: each is written by exactly one thread (the tx pump, the rx pump, or the
# caller under the plane's lock); drop counters are {reason: n} dicts merged by
# counters(). Pumps publish their packet/byte counts once per batch.
#
# Kernel planes (sit, ip6tnl) are a KernelTunnel: create the link, bring it up, derive
# counters and last_tx / last_rx from the link's statistics.
#
# Batched datagram I/O: where ctypes offers libc's sendmmsg / recvmmsg (MMSG below), a
# batch of datagrams moves with one system call; Ring holds the buffers and the C arrays.

import errno
import os
import select
import socket
import threading
import time

from cpe_tunnel.adapters.tun import open_tun

__all__ = ["BATCH", "BUFSIZE", "MMSG", "MSG_DONTWAIT", "SOCKBUF", "KernelTunnel", "PlainTx", "Pump", "Ring", "RxPump",
           "Stop", "TunSocketPlane", "drop", "open_raw_socket", "recv_reason", "send_reason", "wait_writable"]

BUFSIZE = 65536
BATCH = 32  # packets per pump call (and per sendmmsg / recvmmsg)
SOCKBUF = 1 << 20
# plain int: socket's is an IntFlag member, whose use costs a Python-level call
MSG_DONTWAIT = int(getattr(socket, "MSG_DONTWAIT", 0x40))

_NO_ROUTE = (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN, errno.EADDRNOTAVAIL,
             errno.EDESTADDRREQ, errno.ENOTCONN)
_ICMP_UNREACH = (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EPROTO)


IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)
IPV6_FREEBIND = getattr(socket, "IPV6_FREEBIND", 78)


def open_raw_socket(netns, family, proto, options, local, what):
    """A non-blocking raw socket of `proto` (in netns): `options` [(level, name, value)],
    big socket buffers, and, when `local` is given, bound to it with FREEBIND (the WAN
    address may come and go; bind anyway). EPERM/EACCES say that `what` needs root."""
    from cpe_tunnel.adapters.netlink import in_netns

    def make():
        s = socket.socket(family, socket.SOCK_RAW, proto)
        try:
            for level, name, value in options:
                s.setsockopt(level, name, value)
            for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                try:
                    s.setsockopt(socket.SOL_SOCKET, opt, SOCKBUF)
                except OSError:
                    pass
            if local is not None:
                if family == socket.AF_INET:
                    s.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
                else:
                    s.setsockopt(socket.IPPROTO_IPV6, IPV6_FREEBIND, 1)
                s.bind((local, 0))
            s.setblocking(False)
        except BaseException:
            s.close()
            raise
        return s

    try:
        return in_netns(netns, make)
    except OSError as e:
        if e.errno in (errno.EPERM, errno.EACCES):
            raise OSError(e.errno, "%s needs root (CAP_NET_RAW)" % what)
        raise


def drop(drops, reason, n=1):
    """Count n packets dropped for `reason` in the dict `drops`."""
    drops[reason] = drops.get(reason, 0) + n


def send_reason(code, no_route="no route to broker", refused="broker port unreachable"):
    """The drop reason for a send that failed with errno `code`."""
    if code == errno.ECONNREFUSED:
        return refused
    if code in _NO_ROUTE:
        return no_route
    if code == errno.EMSGSIZE:
        return "packet too big for the WAN"
    if code in (errno.ENOBUFS, errno.EAGAIN):
        return "send buffer full"
    if code in (errno.EPERM, errno.EACCES):
        return "blocked by firewall"
    return "send error"


def recv_reason(code, refused="broker port unreachable", unreachable="socket read error"):
    """The drop reason for a receive that failed with errno `code` (on a connected or raw
    socket these are mostly ICMP errors the kernel reports)."""
    if code == errno.ECONNREFUSED:
        return refused
    if code in _ICMP_UNREACH:
        return unreachable
    return "socket read error"


def wait_writable(plane, sock):
    """Wait up to plane.send_wait_ms for room in sock's send buffer. False when the plane
    is stopping (checked at least every 50 ms)."""
    p = select.poll()
    p.register(sock, select.POLLOUT)
    left = plane.send_wait_ms
    while left > 0:
        step = min(left, 50)
        if p.poll(step):
            break
        left -= step
        if plane._stopping:
            return False
    return not plane._stopping


class Stop(Exception):
    """Raised inside a pump when its thread must end (the TUN or socket was closed
    under it)."""


# --------------------------------------------------------------------------------
# Batched datagram I/O through ctypes (optional: absent ctypes or libc symbols -> None)


def _load_mmsg():
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        sendmmsg = libc.sendmmsg
        recvmmsg = libc.recvmmsg
    except (ImportError, OSError, AttributeError):
        return None

    class iovec(ctypes.Structure):
        _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]

    class msghdr(ctypes.Structure):
        _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32), ("iov", ctypes.c_void_p),
                    ("iovlen", ctypes.c_size_t), ("control", ctypes.c_void_p),
                    ("controllen", ctypes.c_size_t),
                    ("flags", ctypes.c_int)]

    class mmsghdr(ctypes.Structure):
        _fields_ = [("hdr", msghdr), ("len", ctypes.c_uint)]

    sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
    sendmmsg.restype = ctypes.c_int
    recvmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
    recvmmsg.restype = ctypes.c_int
    return ctypes, iovec, msghdr, mmsghdr, sendmmsg, recvmmsg


# (ctypes, iovec, msghdr, mmsghdr, sendmmsg, recvmmsg) or None
MMSG = _load_mmsg()


class Ring:
    """n slots of `slot` bytes in one bytearray, with the iovec and mmsghdr arrays that
    point into it (iovec i covers all of slot i). views[i] is slot i. iov_words: the iovec array as size_t
    words (the length of slot i's datagram to send is word i * iov_stride + iov_len_off);
    msg_words: the mmsghdr array as 32-bit words (the length recvmmsg reported for
    datagram i is word i * msg_stride + msg_len_off). msgs / iov: the ctypes arrays."""

    def __init__(self, n, slot):
        ctypes, iovec, _msghdr, mmsghdr, _s, _r = MMSG
        self.n = n
        self.slot = slot
        self.buf = bytearray(n * slot)
        # keep the ctypes view alive: it pins the bytearray (it cannot be resized)
        self._cbuf = (ctypes.c_char * len(self.buf)).from_buffer(self.buf)
        base = ctypes.addressof(self._cbuf)
        self.iov = (iovec * n)()
        self.msgs = (mmsghdr * n)()
        for i in range(n):
            self.iov[i].base = base + i * slot
            self.iov[i].len = slot
            self.msgs[i].hdr.iov = ctypes.addressof(self.iov[i])
            self.msgs[i].hdr.iovlen = 1
        self.addr = ctypes.addressof(self.msgs)
        self.msg_size = ctypes.sizeof(mmsghdr)
        # memoryviews over the C arrays, for cheap per-packet reads and writes
        size_fmt = {4: "I", 8: "Q"}[ctypes.sizeof(ctypes.c_size_t)]
        self.iov_words = memoryview(self.iov).cast("B").cast(size_fmt)  # [base, len] per slot
        self.iov_stride = ctypes.sizeof(iovec) // ctypes.sizeof(ctypes.c_size_t)
        self.iov_len_off = iovec.len.offset // ctypes.sizeof(ctypes.c_size_t)
        self.msg_words = memoryview(self.msgs).cast("B").cast("I")
        self.msg_stride = ctypes.sizeof(mmsghdr) // 4
        self.msg_len_off = mmsghdr.len.offset // 4
        mv = memoryview(self.buf)
        self.views = [mv[i * slot:(i + 1) * slot] for i in range(n)]

    def lengths(self, k):
        """What recvmmsg reported for datagrams 0..k-1, as a list."""
        return self.msg_words[self.msg_len_off:k * self.msg_stride:self.msg_stride].tolist()

    def release(self):
        for v in self.views:
            v.release()
        self.iov_words.release()
        self.msg_words.release()
        self._cbuf = None


# --------------------------------------------------------------------------------


class TunSocketPlane:
    """A TUN device and a socket, forwarded by pumps (see the top of this file).
    Subclasses provide _new_socket() and _pumps(tx_sock, rx_sock) -> (tx, rx), and may
    override _configure_tun(name). threads: 2 (one per direction) or 1 (both pumps in
    one thread). Drop reasons for socket errors use the class's NO_ROUTE / REFUSED /
    UNREACHABLE texts (send_reason / recv_reason)."""

    kind = "userspace"
    thread_tag = "plane"
    NO_ROUTE = "no route to broker"
    REFUSED = "broker port unreachable"  # ICMP port unreachable on a connected socket
    UNREACHABLE = "socket read error"  # ICMP host/net unreachable reported on receive
    send_wait_ms = 10  # socket buffer full: wait this long for room, then drop

    def __init__(self, ifname, mtu, netlink=None, netns=None, threads=2):
        if threads not in (1, 2):
            raise ValueError("threads must be 1 or 2")
        self.ifname = ifname
        self.mtu = mtu
        self.netlink = netlink
        self.netns = netns
        self.threads = threads
        self.error = None  # set when a forwarding thread died unexpectedly
        self._sock = None  # the current socket (the threads use dups of it)
        self._lock = threading.RLock()
        self._pending = [None, None]  # dup of a new socket for thread [0, 1], not yet picked up
        self._ctl = [None, None]  # (read fd, write fd) control pipe of thread [0, 1]
        self._tun = None
        self._threads = []
        self._stopping = False
        self.tx_packets = self.tx_bytes = 0
        self.rx_packets = self.rx_bytes = 0
        self.last_tx = self.last_rx = None
        self._tx_drops = {}
        self._rx_drops = {}

    # -- hooks -------------------------------------------------------------------------
    def _new_socket(self):
        """The socket to start with (called by open() when there is none)."""
        raise NotImplementedError

    def _pumps(self, tx_sock, rx_sock):
        """(tx pump, rx pump) working on the given sockets (the same one when a single
        thread runs both)."""
        raise NotImplementedError

    def _configure_tun(self, name):
        """Called by open() once the TUN exists, before it is brought up."""

    # -- drop reasons ------------------------------------------------------------------
    def send_reason(self, code):
        return send_reason(code, self.NO_ROUTE, self.REFUSED)

    def recv_reason(self, code):
        return recv_reason(code, self.REFUSED, self.UNREACHABLE)

    # -- setup -------------------------------------------------------------------------
    def open(self):
        if self._tun is not None:
            return
        fd, name = open_tun(self.ifname, mtu=self.mtu, nonblocking=True, netns=self.netns)
        self._tun = fd
        self.ifname = name
        socks = []
        pumps = []
        try:
            if self._sock is None:
                self._sock = self._new_socket()
            n = self.threads
            for i in range(n):
                r, w = os.pipe()
                os.set_blocking(r, False)
                os.set_blocking(w, False)
                self._ctl[i] = (r, w)
                socks.append(self._sock.dup())
            self._configure_tun(name)
            if self.netlink is not None:
                self.netlink.link_up(name)
            self._stopping = False
            tx, rx = self._pumps(socks[0], socks[-1])
            pumps = [tx, rx]
            work = [(0, [tx, rx], socks[0])] if n == 1 else [(0, [tx], socks[0]), (1, [rx], socks[1])]
            tag = self.thread_tag
            self._threads = [
                threading.Thread(target=self._run, args=(i, ps, s), daemon=True,
                                 name="%s-%s-%s" % (tag, "+".join(p.name for p in ps), name))
                for i, ps, s in work
            ]
            socks = pumps = []  # the threads own them now
            for t in self._threads:
                t.start()
        except BaseException:
            for p in pumps:
                p.close()
            for s in socks:
                s.close()
            self._shutdown()
            raise

    def _hand_over(self, sock):
        """Make `sock` the current socket; the threads switch to dups of it within one
        batch (woken if idle) and close their old ones; the old socket is closed."""
        with self._lock:
            old, self._sock = self._sock, sock
            if self._threads:
                n = len(self._threads)
                dups = [sock.dup() for _ in range(n)]
                stale = self._pending[:n]
                self._pending[:n] = dups  # in place: the threads hold the list
                for s in stale:
                    if s is not None:
                        s.close()  # never picked up: no thread ever used it
                for i in range(n):
                    self._poke(i)
            if old is not None and old is not sock:
                old.close()  # the threads work on their own dups

    def _drops(self, *dicts):
        out = {}
        for d in dicts or (self._tx_drops, self._rx_drops):
            for k in list(d):
                out[k] = out.get(k, 0) + d[k]
        return out

    def counters(self):
        out = {
            "tx_packets": self.tx_packets,
            "tx_bytes": self.tx_bytes,
            "rx_packets": self.rx_packets,
            "rx_bytes": self.rx_bytes,
            "rx_dropped": sum(list(self._rx_drops.values())),
            "drops": self._drops(),
            "last_tx": self.last_tx,
            "last_rx": self.last_rx,
        }
        if self.error:
            out["error"] = self.error
        return out

    def close(self):
        self._shutdown()

    def _shutdown(self):
        self._stopping = True
        for i in (0, 1):
            self._poke(i)
        for t in self._threads:
            t.join(5.0)
        alive = [t for t in self._threads if t.is_alive()]
        self._threads = []
        if alive:  # should not happen; do not pull fds from under a live thread
            self.error = "forwarding thread did not stop"
            return
        with self._lock:
            stale = list(self._pending)
            self._pending[0] = self._pending[1] = None
            for s in stale:
                if s is not None:
                    s.close()
            if self._sock is not None:
                self._sock.close()
                self._sock = None
        fds = [self._tun]
        self._tun = None
        for i in (0, 1):
            if self._ctl[i] is not None:
                fds.extend(self._ctl[i])
                self._ctl[i] = None
        for fd in fds:
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass

    # -- forwarding threads ------------------------------------------------------------
    def _poke(self, i):
        ctl = self._ctl[i]
        if ctl is not None:
            try:
                os.write(ctl[1], b"x")
            except OSError:
                pass  # pipe full: it is awake anyway

    def _run(self, i, pumps, sock):
        try:
            self._forward(i, pumps, sock)
        except Exception as e:  # keep the reason for status; never a silent death
            self.error = "%s: %s" % ("+".join(p.name for p in pumps), e)

    def _poller(self, pumps, ctl):
        poller = select.poll()
        for p in pumps:
            poller.register(p.poll_fd(), select.POLLIN)
        poller.register(ctl, select.POLLIN)
        return poller

    def _forward(self, i, pumps, sock):
        """Thread i: run its pumps until all ran dry, then sleep in poll()."""
        ctl = self._ctl[i][0]
        pending = self._pending
        try:
            poller = self._poller(pumps, ctl)
            while True:
                if pending[i] is not None:
                    sock = self._take(i, sock)
                    for p in pumps:
                        p.set_socket(sock)
                    poller = self._poller(pumps, ctl)
                dry = True
                for p in pumps:
                    if not p.run():
                        dry = False
                if self._stopping:
                    return
                if dry:
                    for fd, _ev in poller.poll():
                        if fd == ctl:
                            try:
                                os.read(ctl, 64)
                            except OSError:
                                pass
                    if self._stopping:
                        return
        except Stop:
            return
        finally:
            for p in pumps:
                p.close()
            sock.close()

    def _take(self, i, sock):
        """Swap to a socket _hand_over() left for thread i, if any; closes the old dup."""
        with self._lock:
            new = self._pending[i]
            self._pending[i] = None
        if new is None:
            return sock
        sock.close()
        return new


# --------------------------------------------------------------------------------
# Pumps: run() moves up to BATCH packets and returns True when its source ran dry.


class Pump:
    name = "pump"

    def __init__(self, plane, sock):
        self.plane = plane
        self.fd = plane._tun
        self.rng = range(BATCH)
        self.set_socket(sock)

    def set_socket(self, sock):
        self.sock = sock

    def poll_fd(self):
        return self.fd

    def plain_buffer(self):
        """One packet buffer and its memoryview, for the loops that move one packet per
        system call."""
        self.buf = bytearray(BUFSIZE)
        self.mv = memoryview(self.buf)

    def close(self):
        pass

    def tx_done(self, pk, by):
        plane = self.plane
        plane.tx_packets += pk
        plane.tx_bytes += by
        plane.last_tx = time.monotonic()

    def rx_done(self, pk, by):
        plane = self.plane
        plane.rx_packets += pk
        plane.rx_bytes += by
        plane.last_rx = time.monotonic()


class RxPump(Pump):
    """network -> TUN: waits on the socket."""

    name = "rx"

    def poll_fd(self):
        return self.sock.fileno()


class PlainTx(Pump):
    """TUN -> socket, one read and one send() per packet: the packet read from the TUN
    goes out as it is (version nibble `version`, at least `min_len` bytes; anything else
    is dropped as `not_reason`). With plane._dest set (read once per batch) packets go
    with sendto(packet, dest), else with send() on a connected socket."""

    name = "tx"
    version = 6
    min_len = 40
    not_reason = "not IPv6 (from TUN)"

    def __init__(self, plane, sock):
        import io
        super().__init__(plane, sock)
        self.plain_buffer()
        # FileIO.readinto: None when empty, cheaper than os.readv + BlockingIOError
        self.tunf = io.FileIO(self.fd, "rb", closefd=False)

    def run(self):
        buf, mv, plane = self.buf, self.mv, self.plane
        readinto = self.tunf.readinto
        dest = getattr(plane, "_dest", None)
        if dest is None:
            send = self.sock.send
            args = ()
        else:
            send = self.sock.sendto
            args = (dest,)
        version, min_len = self.version, self.min_len
        drops = plane._tx_drops
        pk = by = 0
        dry = False
        try:
            for _ in self.rng:
                n = readinto(buf)
                if n is None:
                    dry = True
                    break
                if n < min_len or buf[0] >> 4 != version:
                    drop(drops, self.not_reason)
                    continue
                try:
                    send(mv[:n], *args)
                except BlockingIOError:
                    if not wait_writable(plane, self.sock):
                        raise Stop()
                    try:
                        send(mv[:n], *args)
                    except OSError as e:
                        drop(drops, plane.send_reason(e.errno))
                        continue
                except OSError as e:
                    if e.errno in (errno.EBADF, errno.EBADFD) and plane._stopping:
                        raise Stop()
                    drop(drops, plane.send_reason(e.errno))
                    continue
                pk += 1
                by += n
        except OSError as e:
            if e.errno in (errno.EBADF, errno.EBADFD):
                raise Stop()
            drop(drops, "TUN read error")
            dry = True
        finally:
            if pk:
                self.tx_done(pk, by)
        return dry


# --------------------------------------------------------------------------------


class KernelTunnel:
    """A tunnel the kernel forwards (a sit or ip6tnl link): open() creates the link
    (replacing a stale one of the same kind, refusing a device of another kind) and
    brings it up; counters() derives the plane counters, last_tx and last_rx from the
    link's statistics. Subclasses set link_kind / what and provide _check(local, remote),
    _create() and _move(local, remote); _after_create() runs before the link goes up."""

    kind = "kernel"
    link_kind = None  # 'sit', 'ip6tnl'
    what = "tunnel"  # for the error when the name is taken by another kind of device

    def __init__(self, netlink, ifname, local, remote, mtu):
        self._check(local, remote)
        self.netlink = netlink
        self.ifname = ifname
        self.local = local
        self.remote = remote
        self.mtu = mtu
        self._opened = False
        self._seen = None  # (tx_packets, rx_packets) at the last counters() call
        self._last_tx = None
        self._last_rx = None

    def _check(self, local, remote):
        raise NotImplementedError

    def _create(self):
        raise NotImplementedError

    def _move(self, local, remote):
        raise NotImplementedError

    def _after_create(self):
        pass

    def open(self):
        kind = self.netlink.link_kind(self.ifname)
        if kind == self.link_kind:
            self.netlink.link_del(self.ifname)  # a stale one of ours (crash, restart)
        elif kind is not None:
            raise OSError(errno.EEXIST, "device '%s' exists and is not a %s" % (self.ifname, self.what))
        self._create()
        self._opened = True
        try:
            self._after_create()
            self.netlink.link_up(self.ifname)
        except BaseException:
            self.close()
            raise

    def set_endpoints(self, local, remote):
        self._check(local, remote)
        if self._opened:
            self._move(local, remote)
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
