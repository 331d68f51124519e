# v6udpv4 (TSP, RFC 5572 §3.3): IPv6 packets carried directly in UDP, no header, on the
# same UDP 5-tuple as the TSP session, so data rides the NAT mapping the session opened.
# Userspace data plane, same interface as adapters/sixin4.py:
#
#   .kind                       'userspace'
#   .ifname                     the TUN device
#   open()                      create the TUN, bring it up, start forwarding
#   replace_socket(sock)        a new TSP session's socket (instead of set_endpoints)
#   send_control(data)          send a TSP control datagram on the current socket
#   counters()                  dict(tx_packets, tx_bytes, rx_packets, rx_bytes, rx_dropped,
#                               drops={reason: n}, last_tx, last_rx, rx_control)
#   close()                     stop, remove the TUN, close the socket(s)
#
# The plane owns the socket it is given: it makes it non-blocking, reads it exclusively
# and closes it (at close(), or when replace_socket() hands it a newer one). Datagrams
# from the broker are sorted as tsp.classify() does: top nibble 0xF (and >= 8 bytes) is a
# TSP control message, copied and handed to on_control(bytes) from the receiving thread
# (the daemon queues it to its loop); an IPv6 packet whose payload length fits the
# datagram goes to the TUN (trailing bytes cut off); anything else is dropped and counted.
#
# Speed (bench/v6udpv4.py, bench/README.md): one thread per direction; each drains its
# non-blocking fd until EAGAIN and only then sleeps in poll() on (fd, its control pipe).
# Where ctypes and sendmmsg/recvmmsg exist, datagrams move in batches of up to BATCH per
# system call (the TUN still needs one read or write per packet); otherwise socket
# send()/recv_into(). Buffers are preallocated, the packet path allocates nothing but
# memoryview slices, counters are published once per batch, and nothing is logged.
#
# Socket replacement without races: each thread works on its own dup() of the socket,
# picks up a new one handed over by replace_socket() (checked once per batch, or woken
# through its control pipe when idle) and closes its old one itself, so no fd is ever
# closed under a thread that may still use it.

import errno
import os
import select
import socket
import threading
import time

from cpe_tunnel.adapters.tun import open_tun

__all__ = ["UserspaceUdp6", "TunSocketPlane", "BATCH", "CONTROL", "DROP_REASONS", "classify_datagram"]

BUFSIZE = 65536
BATCH = 32  # datagrams per sendmmsg/recvmmsg, and packets between counter updates
SOCKBUF = 1 << 20

# classify_datagram() results below 0, as drop reasons (index = -result)
DROP_REASONS = (None, "not IPv6", "truncated IPv6 packet", "short control message",
                "datagram larger than the MTU")
_NOT_IPV6, _TRUNCATED, _SHORT_CONTROL, _TOO_BIG = -1, -2, -3, -4
CONTROL = 0


def classify_datagram(buf, off, n):
    """Sort the datagram buf[off:off+n] from the broker without copying it.
    Returns the length of the IPv6 packet at its start (> 0: data for the TUN; any bytes
    beyond it are padding), CONTROL (0: a TSP control message) or a negative code whose
    reason is DROP_REASONS[-code]. Never raises for off + n <= len(buf)."""
    if n >= 40:
        b0 = buf[off]
        if b0 >> 4 == 6:
            end = 40 + (buf[off + 4] << 8 | buf[off + 5])
            return end if end <= n else _TRUNCATED
        return CONTROL if b0 >= 0xF0 else _NOT_IPV6
    if n < 1:
        return _NOT_IPV6
    b0 = buf[off]
    if b0 >= 0xF0:
        return CONTROL if n >= 8 else _SHORT_CONTROL
    return _TRUNCATED if b0 >> 4 == 6 else _NOT_IPV6


def _check_socket(sock):
    if not isinstance(sock, socket.socket) or sock.type != socket.SOCK_DGRAM or \
            sock.family not in (socket.AF_INET, socket.AF_INET6):
        raise ValueError("v6udpv4 needs a UDP socket")
    try:
        sock.getpeername()
    except OSError:
        raise ValueError("the UDP socket must be connected to the broker (the TSP session's socket)")


def _send_reason(e):
    code = e.errno
    if code == errno.ECONNREFUSED:
        return "broker port unreachable"
    if code in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN):
        return "no route to broker"
    if code == errno.EMSGSIZE:
        return "packet too big for the WAN"
    if code in (errno.ENOBUFS, errno.EAGAIN):
        return "send buffer full"
    if code in (errno.EPERM, errno.EACCES):
        return "blocked by firewall"
    return "send error"


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
                    ("iovlen", ctypes.c_size_t), ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                    ("flags", ctypes.c_int)]

    class mmsghdr(ctypes.Structure):
        _fields_ = [("hdr", msghdr), ("len", ctypes.c_uint)]

    sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
    sendmmsg.restype = ctypes.c_int
    recvmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
    recvmmsg.restype = ctypes.c_int
    return ctypes, iovec, msghdr, mmsghdr, sendmmsg, recvmmsg


_MMSG = _load_mmsg()
# plain ints: socket's are IntFlag members, whose & costs a Python-level call per packet
MSG_DONTWAIT = int(getattr(socket, "MSG_DONTWAIT", 0x40))


class _Ring:
    """n slots of `slot` bytes in one bytearray, with the iovec and mmsghdr arrays that
    point into it. views[i] is slot i. iov_words: the iovec array as size_t words (the
    length of slot i's datagram to send is word i * iov_stride + iov_len_off);
    msg_words: the mmsghdr array as 32-bit words (the length recvmmsg reported for
    datagram i is word i * msg_stride + msg_len_off)."""

    def __init__(self, n, slot):
        ctypes, iovec, _msghdr, mmsghdr, _s, _r = _MMSG
        self.n = n
        self.slot = slot
        self.buf = bytearray(n * slot)
        # keep the ctypes view alive: it pins the bytearray (it cannot be resized)
        self._cbuf = (ctypes.c_char * len(self.buf)).from_buffer(self.buf)
        base = ctypes.addressof(self._cbuf)
        self._iov = (iovec * n)()
        self._msgs = (mmsghdr * n)()
        for i in range(n):
            self._iov[i].base = base + i * slot
            self._iov[i].len = slot
            self._msgs[i].hdr.iov = ctypes.addressof(self._iov[i])
            self._msgs[i].hdr.iovlen = 1
        self.addr = ctypes.addressof(self._msgs)
        self.msg_size = ctypes.sizeof(mmsghdr)
        # memoryviews over the C arrays, for cheap per-packet reads and writes
        raw = (ctypes.c_char * ctypes.sizeof(self._iov)).from_address(ctypes.addressof(self._iov))
        self._iov_raw = raw
        size_fmt = {4: "I", 8: "Q"}[ctypes.sizeof(ctypes.c_size_t)]
        self.iov_words = memoryview(raw).cast("B").cast(size_fmt)  # [base, len] per slot
        self.iov_stride = ctypes.sizeof(iovec) // ctypes.sizeof(ctypes.c_size_t)
        self.iov_len_off = iovec.len.offset // ctypes.sizeof(ctypes.c_size_t)
        raw = (ctypes.c_char * ctypes.sizeof(self._msgs)).from_address(self.addr)
        self._msgs_raw = raw
        self.msg_words = memoryview(raw).cast("B").cast("I")
        self.msg_stride = ctypes.sizeof(mmsghdr) // 4
        self.msg_len_off = mmsghdr.len.offset // 4
        mv = memoryview(self.buf)
        self.views = [mv[i * slot:(i + 1) * slot] for i in range(n)]

    def release(self):
        for v in self.views:
            v.release()
        self.iov_words.release()
        self.msg_words.release()
        self._cbuf = None


# --------------------------------------------------------------------------------


class TunSocketPlane:
    """What the userspace planes here share: a TUN device, a socket the plane owns, one
    forwarding thread per direction (tx: TUN -> socket, rx: socket -> TUN), each with
    its own dup() of the socket and a control pipe; counters; prompt close().
    Subclasses provide _tx_loop(sock) / _rx_loop(sock) and _new_socket()."""

    kind = "userspace"
    thread_tag = "plane"

    def __init__(self, ifname, mtu, netlink=None, netns=None):
        self.ifname = ifname
        self.mtu = mtu
        self.netlink = netlink
        self.netns = netns
        self.error = None  # set when a forwarding thread died unexpectedly
        self._sock = None  # the current socket (the threads use dups of it)
        self._lock = threading.Lock()
        self._pending = [None, None]  # dup of a new socket for [tx, rx], not yet picked up
        self._ctl = [None, None]  # (read fd, write fd) control pipe of [tx, rx]
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
        """The socket to start with (called by open())."""
        raise NotImplementedError

    def _loops(self):
        """(tx loop, rx loop): bound methods taking the thread's socket."""
        raise NotImplementedError

    def _configure_tun(self, name):
        """Called by open() once the TUN exists, before it is brought up."""

    # -- setup -------------------------------------------------------------------------
    def open(self):
        if self._tun is not None:
            return
        fd, name = open_tun(self.ifname, mtu=self.mtu, nonblocking=True, netns=self.netns)
        self._tun = fd
        self.ifname = name
        socks = None
        try:
            if self._sock is None:
                self._sock = self._new_socket()
            socks = [self._sock.dup(), self._sock.dup()]
            for i in (0, 1):
                r, w = os.pipe()
                os.set_blocking(r, False)
                os.set_blocking(w, False)
                self._ctl[i] = (r, w)
            self._configure_tun(name)
            if self.netlink is not None:
                self.netlink.link_up(name)
            self._stopping = False
            tx, rx = self._loops()
            tag = self.thread_tag
            self._threads = [
                threading.Thread(target=self._run, args=(tx, socks[0]), name=tag + "-tx-" + name, daemon=True),
                threading.Thread(target=self._run, args=(rx, socks[1]), name=tag + "-rx-" + name, daemon=True),
            ]
            socks = None
            for t in self._threads:
                t.start()
        except BaseException:
            if socks:
                for s in socks:
                    s.close()
            self._shutdown()
            raise

    def _hand_over(self, sock):
        """Make `sock` the current socket; the threads switch to dups of it within one
        batch (woken if idle) and close their old ones; the old socket is closed."""
        old, self._sock = self._sock, sock
        if self._threads:
            dups = [sock.dup(), sock.dup()]
            with self._lock:
                stale = list(self._pending)
                self._pending[0], self._pending[1] = dups  # in place: the threads hold the list
            for s in stale:
                if s is not None:
                    s.close()  # never picked up: no thread ever used it
            for i in (0, 1):
                self._poke(i)
        if old is not None and old is not sock:
            old.close()  # the threads work on their own dups

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
            "rx_dropped": sum(list(self._rx_drops.values())),
            "drops": drops,
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

    # -- thread plumbing -------------------------------------------------------------------
    def _poke(self, i):
        ctl = self._ctl[i]
        if ctl is not None:
            try:
                os.write(ctl[1], b"x")
            except OSError:
                pass  # pipe full: it is awake anyway

    def _run(self, loop, sock):
        try:
            loop(sock)
        except Exception as e:  # keep the reason for status; never a silent death
            self.error = "%s: %s" % (loop.__name__.strip("_"), e)

    def _take(self, i, sock):
        """Swap to a socket _hand_over() left for thread i, if any; closes the old dup."""
        with self._lock:
            new = self._pending[i]
            self._pending[i] = None
        if new is None:
            return sock
        sock.close()
        return new

    def _idle(self, i, poller):
        """Sleep until the fd registered in poller or the control pipe is ready.
        Returns False when the thread must stop."""
        if self._stopping:
            return False
        ctl = self._ctl[i][0]
        for fd, _ev in poller.poll():
            if fd == ctl:
                try:
                    os.read(ctl, 64)
                except OSError:
                    pass
        return not self._stopping

    @staticmethod
    def _drop(drops, reason, n=1):
        drops[reason] = drops.get(reason, 0) + n

    def _wait_writable(self, sock):
        """Wait (at most 1 s) for room in sock's send buffer; False when stopping."""
        p = select.poll()
        p.register(sock, select.POLLOUT)
        p.register(self._ctl[0][0], select.POLLIN)
        p.poll(1000)
        return not self._stopping


class UserspaceUdp6(TunSocketPlane):
    """v6udpv4 data plane: TUN device `ifname` <-> connected UDP socket `sock`.

    sock: the TSP session's UDP socket, connected to the broker (ValueError otherwise);
    the plane owns it from now on (also when open() fails: close() it). mtu: of the TUN
    (1280..65535: IPv6 needs 1280). netlink: used to bring the TUN up (optional).
    netns: create the TUN there (the socket stays wherever it was made).
    on_control(bytes): gets each TSP control datagram (called from the rx thread; must
    not block). batch: False forces plain send()/recv_into() even where sendmmsg and
    recvmmsg are available (the default uses them when present).
    After close() the plane cannot be opened again (its socket is gone)."""

    thread_tag = "udp6"

    def __init__(self, ifname, sock, mtu=1280, netlink=None, netns=None, on_control=None, batch=True):
        _check_socket(sock)
        mtu = int(mtu)
        if not 1280 <= mtu <= 65535:
            raise ValueError("v6udpv4 MTU %d is out of range (1280..65535: IPv6 needs at least 1280)" % mtu)
        super().__init__(ifname, mtu, netlink, netns)
        self.on_control = on_control
        self.batch = bool(batch) and _MMSG is not None
        self.rx_control = 0
        self._closed = False
        self._prepare(sock)
        self._sock = sock

    @property
    def sock(self):
        """The current session socket (as given to the constructor or replace_socket)."""
        return self._sock

    @staticmethod
    def _prepare(sock):
        sock.setblocking(False)
        for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            try:
                sock.setsockopt(socket.SOL_SOCKET, opt, SOCKBUF)
            except OSError:
                pass

    def _loops(self):
        if self.batch:
            return self._tx_batch, self._rx_batch
        return self._tx_plain, self._rx_plain

    def open(self):
        if self._closed:
            raise OSError(errno.EBADF, "this v6udpv4 data plane was closed")
        super().open()

    def replace_socket(self, sock):
        """Use `sock` (a new TSP session's connected UDP socket) from now on; the old one
        is closed. Takes effect within one batch; call from the thread that owns the
        plane (the daemon's loop)."""
        _check_socket(sock)
        if self._closed:
            raise OSError(errno.EBADF, "this v6udpv4 data plane was closed")
        self._prepare(sock)
        self._hand_over(sock)

    def send_control(self, data):
        """Send one TSP control datagram on the current socket (never blocks).
        Returns True when the kernel took it, False otherwise."""
        sock = self._sock
        if sock is None:
            return False
        try:
            sock.send(data, MSG_DONTWAIT)
            return True
        except OSError:
            return False

    def counters(self):
        out = super().counters()
        out["rx_control"] = self.rx_control
        return out

    def close(self):
        self._closed = True
        self._shutdown()

    # -- TUN -> broker -------------------------------------------------------------------
    def _tx_plain(self, sock):
        fd = self._tun
        buf = bytearray(BUFSIZE)
        bufs = [buf]
        mv = memoryview(buf)
        drops = self._tx_drops
        readv = os.readv
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        poller.register(self._ctl[0][0], select.POLLIN)
        pending = self._pending
        try:
            while True:
                if pending[0] is not None:
                    sock = self._take(0, sock)
                send = sock.send
                pk = by = 0
                try:
                    while True:
                        n = readv(fd, bufs)
                        if n < 40 or buf[0] >> 4 != 6:
                            self._drop(drops, "not IPv6 (from TUN)")
                            continue
                        try:
                            send(mv[:n])
                        except BlockingIOError:
                            if not self._wait_writable(sock):
                                return
                            try:
                                send(mv[:n])
                            except OSError as e:
                                self._drop(drops, _send_reason(e))
                                continue
                        except OSError as e:
                            self._drop(drops, _send_reason(e))
                            continue
                        pk += 1
                        by += n
                        if pk >= BATCH:
                            self.tx_packets += pk
                            self.tx_bytes += by
                            pk = by = 0
                            self.last_tx = time.monotonic()
                            if self._stopping:
                                return
                            if pending[0] is not None:
                                sock = self._take(0, sock)
                                send = sock.send
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError as e:
                    if e.errno in (errno.EBADF, errno.EBADFD):
                        return  # closed under us
                    self._drop(drops, "TUN read error")
                if pk:
                    self.tx_packets += pk
                    self.tx_bytes += by
                    self.last_tx = time.monotonic()
                if not self._idle(0, poller):
                    return
        finally:
            sock.close()

    def _tx_batch(self, sock):
        fd = self._tun
        ring = None
        try:
            ring = _Ring(BATCH, max(self.mtu, 2048) + 1)
            sendmmsg = _MMSG[4]
            get_errno = _MMSG[0].get_errno
            buf = ring.buf
            slot = ring.slot
            slots = [[v] for v in ring.views]
            words = ring.iov_words
            wstride, woff = ring.iov_stride, ring.iov_len_off
            addr, msize = ring.addr, ring.msg_size
            drops = self._tx_drops
            readv = os.readv
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            poller.register(self._ctl[0][0], select.POLLIN)
            pending = self._pending
            sfd = sock.fileno()
            while True:
                k = by = 0
                empty = False
                try:
                    while k < BATCH:
                        n = readv(fd, slots[k])
                        if n < 40 or n >= slot or buf[k * slot] >> 4 != 6:
                            self._drop(drops, "packet larger than the MTU" if n >= slot else "not IPv6 (from TUN)")
                            continue
                        words[k * wstride + woff] = n
                        k += 1
                        by += n
                except (BlockingIOError, InterruptedError):
                    empty = True
                except OSError as e:
                    if e.errno in (errno.EBADF, errno.EBADFD):
                        return
                    self._drop(drops, "TUN read error")
                    empty = True
                if k:
                    if pending[0] is not None:
                        sock = self._take(0, sock)
                        sfd = sock.fileno()
                    done = failed = 0
                    waited = False
                    while done < k:
                        r = sendmmsg(sfd, addr + done * msize, k - done, 0)
                        if r > 0:
                            done += r
                            continue
                        code = get_errno()
                        if code == errno.EINTR:
                            continue
                        if code == errno.EAGAIN and not waited:
                            waited = True  # socket buffer full: wait for room once per batch
                            if self._wait_writable(sock):
                                continue
                            return
                        # this datagram failed: count it, go on with the next one
                        self._drop(drops, _send_reason(OSError(code, "")))
                        by -= words[done * wstride + woff]
                        done += 1
                        failed += 1
                    self.tx_packets += k - failed
                    self.tx_bytes += by
                    self.last_tx = time.monotonic()
                if self._stopping:
                    return
                if empty and not self._idle(0, poller):
                    return
        finally:
            if ring is not None:
                ring.release()
            sock.close()

    # -- broker -> TUN -------------------------------------------------------------------
    def _control(self, data):
        self.rx_control += 1
        cb = self.on_control
        if cb is None:
            self._drop(self._rx_drops, "control message (no handler)")
            return
        try:
            cb(data)
        except Exception:
            self._drop(self._rx_drops, "control handler error")

    def _rx_error(self, e):
        """Count a socket read error; True when the thread must stop."""
        if e.errno in (errno.EBADF, errno.EBADFD):
            return True
        self._drop(self._rx_drops, "broker port unreachable" if e.errno == errno.ECONNREFUSED
                   else "socket read error")
        return False

    def _rx_limit(self):
        """Datagrams this long or longer are dropped ("datagram larger than the MTU"):
        room for a broker whose MTU is larger than ours, within a fixed buffer."""
        return max(4096, self.mtu + 1)

    def _rx_plain(self, sock):
        fd = self._tun
        limit = self._rx_limit()
        buf = bytearray(BUFSIZE)
        mv = memoryview(buf)
        drops = self._rx_drops
        write = os.write
        classify = classify_datagram
        reasons = DROP_REASONS
        ctl = self._ctl[1][0]
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        poller.register(ctl, select.POLLIN)
        pending = self._pending
        try:
            while True:
                if pending[1] is not None:
                    poller.unregister(sock)
                    sock = self._take(1, sock)
                    poller.register(sock, select.POLLIN)
                recv_into = sock.recv_into
                pk = by = 0
                idle = True
                try:
                    while True:
                        n = recv_into(buf)
                        # the common case inline; classify_datagram() has the whole rule
                        if n >= 40 and buf[0] >> 4 == 6 and n < limit:
                            end = 40 + (buf[4] << 8 | buf[5])
                            if end > n:
                                end = _TRUNCATED
                        elif n >= limit:
                            end = _TOO_BIG
                        else:
                            end = classify(buf, 0, n)
                        if end > 0:
                            try:
                                write(fd, mv[:end])
                            except OSError as e:
                                if e.errno in (errno.EBADF, errno.EBADFD):
                                    return
                                self._drop(drops, "TUN write error")
                                continue
                            pk += 1
                            by += end
                            if pk >= BATCH:
                                self.rx_packets += pk
                                self.rx_bytes += by
                                pk = by = 0
                                self.last_rx = time.monotonic()
                                if self._stopping or pending[1] is not None:
                                    idle = False
                                    break
                        elif end == 0:
                            self._control(bytes(mv[:n]))
                        else:
                            self._drop(drops, reasons[-end])
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError as e:
                    if self._rx_error(e):
                        return
                    idle = False
                if pk:
                    self.rx_packets += pk
                    self.rx_bytes += by
                    self.last_rx = time.monotonic()
                if self._stopping:
                    return
                if idle and not self._idle(1, poller):
                    return
        finally:
            sock.close()

    def _rx_batch(self, sock):
        fd = self._tun
        ring = None
        try:
            ring = _Ring(BATCH, self._rx_limit())
            recvmmsg = _MMSG[5]
            get_errno = _MMSG[0].get_errno
            buf = ring.buf
            slot = ring.slot
            views = ring.views
            mw = ring.msg_words
            mstride, lenoff = ring.msg_stride, ring.msg_len_off
            addr = ring.addr
            drops = self._rx_drops
            write = os.write
            classify = classify_datagram
            reasons = DROP_REASONS
            ctl = self._ctl[1][0]
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            poller.register(ctl, select.POLLIN)
            pending = self._pending
            sfd = sock.fileno()
            while True:
                if pending[1] is not None:
                    poller.unregister(sock)
                    sock = self._take(1, sock)
                    sfd = sock.fileno()
                    poller.register(sock, select.POLLIN)
                k = recvmmsg(sfd, addr, BATCH, MSG_DONTWAIT, None)
                if k <= 0:
                    code = get_errno() if k < 0 else errno.EAGAIN
                    if code in (errno.EAGAIN, errno.EWOULDBLOCK):
                        if not self._idle(1, poller):
                            return
                    elif code != errno.EINTR and self._rx_error(OSError(code, "")):
                        return
                    continue
                pk = by = 0
                # msg_len of each datagram, all at once
                for i, n in enumerate(mw[lenoff:k * mstride:mstride].tolist()):
                    o = i * slot
                    if n >= 40 and buf[o] >> 4 == 6 and n < slot:
                        end = 40 + (buf[o + 4] << 8 | buf[o + 5])
                        if end > n:
                            end = _TRUNCATED
                    elif n >= slot:  # filled the slot: it was cut short
                        end = _TOO_BIG
                    else:
                        end = classify(buf, o, n)
                    if end > 0:
                        try:
                            write(fd, views[i][:end])
                            pk += 1
                            by += end
                        except OSError as e:
                            if e.errno in (errno.EBADF, errno.EBADFD):
                                return
                            self._drop(drops, "TUN write error")
                    elif end == 0:
                        self._control(bytes(views[i][:n]))
                    else:
                        self._drop(drops, reasons[-end])
                if pk:
                    self.rx_packets += pk
                    self.rx_bytes += by
                    self.last_rx = time.monotonic()
                if self._stopping:
                    return
        finally:
            if ring is not None:
                ring.release()
            sock.close()
