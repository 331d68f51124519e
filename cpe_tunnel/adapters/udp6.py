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
# Speed (bench/v6udpv4.py; figures and the variants measured in bench/README.md):
# - Two "pumps", TUN -> socket and socket -> TUN. Each call moves up to BATCH packets from
#   a non-blocking fd and says whether the fd ran dry; a forwarding thread sleeps in
#   poll() only when all its pumps ran dry (never a poll per packet under load).
# - One thread per pump by default, so that the kernel work of the two directions (most
#   of the cost) can proceed on two cores; threads=1 runs both pumps in one thread (no
#   GIL hand-over; on one core it measured the same as two threads, within noise).
# - Where ctypes and sendmmsg/recvmmsg exist, datagrams move in batches of up to BATCH
#   per system call (the TUN still needs one read or write per packet), else socket
#   send()/recv_into(). TUN reads use FileIO.readinto (None when empty: no exception).
# - Buffers are preallocated; the packet path allocates nothing but memoryview slices;
#   counters are published once per batch; nothing is logged per packet.
#
# Socket replacement without races: each thread works on its own dup() of the socket,
# picks up a new one handed over by replace_socket() (checked once per batch, or woken
# through its control pipe when idle) and closes its old one itself, so no fd is ever
# closed under a thread that may still use it.

import errno
import io
import os
import select
import socket
import threading
import time

from cpe_tunnel.adapters.tun import open_tun

__all__ = ["BATCH", "CONTROL", "DROP_REASONS", "TunSocketPlane", "UserspaceUdp6", "classify_datagram"]

BUFSIZE = 65536
BATCH = 32  # packets per pump call (and per sendmmsg/recvmmsg)
SOCKBUF = 1 << 20
SEND_WAIT_MS = 10  # socket buffer full: wait this long for room, then drop the rest of the batch

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


class _Stop(Exception):
    """Raised inside a pump when its thread must end (the TUN was closed under it)."""


class TunSocketPlane:
    """What the userspace planes here share: a TUN device, a socket the plane owns, two
    pumps (tx: TUN -> socket, rx: socket -> TUN) run by one or two forwarding threads,
    each thread with its own dup() of the socket and a control pipe; counters; prompt
    close(). Subclasses provide _new_socket() and _pumps(tx_sock, rx_sock) -> (tx, rx).

    threads: 2 (one per direction) or 1 (both directions in one thread)."""

    kind = "userspace"
    thread_tag = "plane"

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
        self._lock = threading.Lock()
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
        """The socket to start with (called by open())."""
        raise NotImplementedError

    def _pumps(self, tx_sock, rx_sock):
        """(tx pump, rx pump) working on the given sockets (the same one when a single
        thread runs both)."""
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
        old, self._sock = self._sock, sock
        if self._threads:
            n = len(self._threads)
            dups = [sock.dup() for _ in range(n)]
            with self._lock:
                stale = self._pending[:n]
                self._pending[:n] = dups  # in place: the threads hold the list
            for s in stale:
                if s is not None:
                    s.close()  # never picked up: no thread ever used it
            for i in range(n):
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
        except _Stop:
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


def _drop(drops, reason, n=1):
    drops[reason] = drops.get(reason, 0) + n


def _wait_writable(sock):
    """Wait up to SEND_WAIT_MS for room in sock's send buffer."""
    p = select.poll()
    p.register(sock, select.POLLOUT)
    p.poll(SEND_WAIT_MS)


# --------------------------------------------------------------------------------
# Pumps: run() moves up to BATCH packets and returns True when its source ran dry.


class _Pump:
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

    def close(self):
        pass


class _UdpTxPlain(_Pump):
    """TUN -> broker, one send() per packet."""

    name = "tx"

    def __init__(self, plane, sock):
        super().__init__(plane, sock)
        self.buf = bytearray(BUFSIZE)
        self.mv = memoryview(self.buf)
        self.tunf = io.FileIO(self.fd, "rb", closefd=False)

    def run(self):
        buf, mv, plane = self.buf, self.mv, self.plane
        readinto = self.tunf.readinto  # None when empty: cheaper than os.readv + BlockingIOError
        send = self.sock.send
        drops = plane._tx_drops
        pk = by = 0
        dry = False
        try:
            for _ in self.rng:
                n = readinto(buf)
                if n is None:
                    dry = True
                    break
                if n < 40 or buf[0] >> 4 != 6:
                    _drop(drops, "not IPv6 (from TUN)")
                    continue
                try:
                    send(mv[:n])
                except BlockingIOError:
                    _wait_writable(self.sock)
                    try:
                        send(mv[:n])
                    except OSError as e:
                        _drop(drops, _send_reason(e))
                        continue
                except OSError as e:
                    _drop(drops, _send_reason(e))
                    continue
                pk += 1
                by += n
        except OSError as e:
            if e.errno in (errno.EBADF, errno.EBADFD):
                raise _Stop()
            _drop(drops, "TUN read error")
            dry = True
        if pk:
            plane.tx_packets += pk
            plane.tx_bytes += by
            plane.last_tx = time.monotonic()
        return dry


class _UdpTxBatch(_Pump):
    """TUN -> broker: packets read into the slots of a ring, sent with one sendmmsg()."""

    name = "tx"

    def __init__(self, plane, sock):
        self.ring = _Ring(BATCH, max(plane.mtu, 2048) + 1)
        super().__init__(plane, sock)
        self.tunf = io.FileIO(self.fd, "rb", closefd=False)

    def set_socket(self, sock):
        self.sock = sock
        self.sfd = sock.fileno()

    def close(self):
        self.ring.release()

    def run(self):
        ring, plane = self.ring, self.plane
        buf, slot, views = ring.buf, ring.slot, ring.views
        words, ws, wo = ring.iov_words, ring.iov_stride, ring.iov_len_off
        readinto = self.tunf.readinto
        drops = plane._tx_drops
        k = by = 0
        dry = False
        try:
            for _ in self.rng:
                n = readinto(views[k])
                if n is None:
                    dry = True
                    break
                if n < 40 or n >= slot or buf[k * slot] >> 4 != 6:
                    _drop(drops, "packet larger than the MTU" if n >= slot else "not IPv6 (from TUN)")
                    continue
                words[k * ws + wo] = n
                k += 1
                by += n
        except OSError as e:
            if e.errno in (errno.EBADF, errno.EBADFD):
                raise _Stop()
            _drop(drops, "TUN read error")
            dry = True
        if k:
            self._send(k, by)
        return dry

    def _send(self, k, by):
        ring, plane = self.ring, self.plane
        sendmmsg = _MMSG[4]
        words, ws, wo = ring.iov_words, ring.iov_stride, ring.iov_len_off
        drops = plane._tx_drops
        done = failed = 0
        waited = False
        while done < k:
            r = sendmmsg(self.sfd, ring.addr + done * ring.msg_size, k - done, 0)
            if r > 0:
                done += r
                continue
            code = _MMSG[0].get_errno()
            if code == errno.EINTR:
                continue
            if code == errno.EAGAIN:
                if not waited:  # socket buffer full: wait briefly for room, once
                    waited = True
                    _wait_writable(self.sock)
                    continue
                _drop(drops, "send buffer full", k - done)
                for j in range(done, k):
                    by -= words[j * ws + wo]
                failed += k - done
                break
            # this datagram failed: count it, go on with the next one
            _drop(drops, _send_reason(OSError(code, "")))
            by -= words[done * ws + wo]
            done += 1
            failed += 1
        if k > failed:
            plane.tx_packets += k - failed
            plane.tx_bytes += by
            plane.last_tx = time.monotonic()


class _UdpRx(_Pump):
    """Broker -> TUN (shared parts)."""

    name = "rx"

    def __init__(self, plane, sock):
        super().__init__(plane, sock)
        self.limit = plane._rx_limit()

    def poll_fd(self):
        return self.sock.fileno()

    def control(self, data):
        plane = self.plane
        plane.rx_control += 1
        cb = plane.on_control
        if cb is None:
            _drop(plane._rx_drops, "control message (no handler)")
            return
        try:
            cb(data)
        except Exception:
            _drop(plane._rx_drops, "control handler error")

    def error(self, code):
        """Count a socket read error (an ICMP error reported on the connected socket,
        mostly); _Stop when the socket is gone."""
        if code in (errno.EBADF, errno.EBADFD):
            raise _Stop()
        _drop(self.plane._rx_drops, "broker port unreachable" if code == errno.ECONNREFUSED
              else "socket read error")


class _UdpRxPlain(_UdpRx):
    """Broker -> TUN, one recv_into() per datagram."""

    def __init__(self, plane, sock):
        super().__init__(plane, sock)
        self.buf = bytearray(BUFSIZE)
        self.mv = memoryview(self.buf)

    def run(self):
        buf, mv, plane, limit = self.buf, self.mv, self.plane, self.limit
        recv_into = self.sock.recv_into
        write = os.write
        fd = self.fd
        drops = plane._rx_drops
        pk = by = 0
        dry = False
        try:
            for _ in self.rng:
                n = recv_into(buf)
                # the common case inline; classify_datagram() has the whole rule
                if n >= 40 and buf[0] >> 4 == 6 and n < limit:
                    end = 40 + (buf[4] << 8 | buf[5])
                    if end > n:
                        end = _TRUNCATED
                elif n >= limit:
                    end = _TOO_BIG
                else:
                    end = classify_datagram(buf, 0, n)
                if end > 0:
                    try:
                        write(fd, mv[:end])
                    except OSError as e:
                        if e.errno in (errno.EBADF, errno.EBADFD):
                            raise _Stop()
                        _drop(drops, "TUN write error")
                        continue
                    pk += 1
                    by += end
                elif end == 0:
                    self.control(bytes(mv[:n]))
                else:
                    _drop(drops, DROP_REASONS[-end])
        except (BlockingIOError, InterruptedError):
            dry = True
        except OSError as e:
            self.error(e.errno)
        if pk:
            plane.rx_packets += pk
            plane.rx_bytes += by
            plane.last_rx = time.monotonic()
        return dry


class _UdpRxBatch(_UdpRx):
    """Broker -> TUN: up to BATCH datagrams per recvmmsg() into the slots of a ring."""

    def __init__(self, plane, sock):
        super().__init__(plane, sock)
        self.ring = _Ring(BATCH, self.limit)

    def close(self):
        self.ring.release()

    def run(self):
        ring, plane = self.ring, self.plane
        k = _MMSG[5](self.sock.fileno(), ring.addr, BATCH, MSG_DONTWAIT, None)
        if k <= 0:
            code = _MMSG[0].get_errno() if k < 0 else errno.EAGAIN
            if code in (errno.EAGAIN, errno.EWOULDBLOCK):
                return True
            if code != errno.EINTR:
                self.error(code)
            return False
        buf, slot, views = ring.buf, ring.slot, ring.views
        mw, ms = ring.msg_words, ring.msg_stride
        write = os.write
        fd = self.fd
        drops = plane._rx_drops
        pk = by = 0
        # msg_len of each datagram, all at once
        for i, n in enumerate(mw[ring.msg_len_off:k * ms:ms].tolist()):
            o = i * slot
            if n >= 40 and buf[o] >> 4 == 6 and n < slot:
                end = 40 + (buf[o + 4] << 8 | buf[o + 5])
                if end > n:
                    end = _TRUNCATED
            elif n >= slot:  # filled the slot: it was cut short
                end = _TOO_BIG
            else:
                end = classify_datagram(buf, o, n)
            if end > 0:
                try:
                    write(fd, views[i][:end])
                except OSError as e:
                    if e.errno in (errno.EBADF, errno.EBADFD):
                        raise _Stop()
                    _drop(drops, "TUN write error")
                    continue
                pk += 1
                by += end
            elif end == 0:
                self.control(bytes(views[i][:n]))
            else:
                _drop(drops, DROP_REASONS[-end])
        if pk:
            plane.rx_packets += pk
            plane.rx_bytes += by
            plane.last_rx = time.monotonic()
        return k < BATCH


# --------------------------------------------------------------------------------


class UserspaceUdp6(TunSocketPlane):
    """v6udpv4 data plane: TUN device `ifname` <-> connected UDP socket `sock`.

    sock: the TSP session's UDP socket, connected to the broker (ValueError otherwise);
    the plane owns it from now on (also when open() fails: close() it). mtu: of the TUN
    (1280..65535: IPv6 needs 1280). netlink: used to bring the TUN up (optional).
    netns: create the TUN there (the socket stays wherever it was made).
    on_control(bytes): gets each TSP control datagram (called from a forwarding thread;
    must not block). batch: False forces plain send()/recv_into() even where sendmmsg
    and recvmmsg are available (the default uses them when present). threads: 2 (one
    per direction) or 1 (both in one thread).
    After close() the plane cannot be opened again (its socket is gone)."""

    thread_tag = "udp6"

    def __init__(self, ifname, sock, mtu=1280, netlink=None, netns=None, on_control=None, batch=True,
                 threads=2):
        _check_socket(sock)
        mtu = int(mtu)
        if not 1280 <= mtu <= 65535:
            raise ValueError("v6udpv4 MTU %d is out of range (1280..65535: IPv6 needs at least 1280)" % mtu)
        super().__init__(ifname, mtu, netlink, netns, threads)
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

    def _new_socket(self):
        # only reached when a failed open() closed the given socket
        raise OSError(errno.EBADF, "the v6udpv4 data plane has no socket left (a failed open() closed it)")

    def _rx_limit(self):
        """Datagrams this long or longer are dropped ("datagram larger than the MTU"):
        room for a broker whose MTU is larger than ours, within a fixed buffer."""
        return max(4096, self.mtu + 1)

    def _pumps(self, tx_sock, rx_sock):
        if self.batch:
            return _UdpTxBatch(self, tx_sock), _UdpRxBatch(self, rx_sock)
        return _UdpTxPlain(self, tx_sock), _UdpRxPlain(self, rx_sock)

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
