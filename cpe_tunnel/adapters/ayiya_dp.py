# AYIYA (draft-massar-v6ops-ayiya, SixXS / AICCU style) userspace data plane: a TUN
# device and a UDP socket connected to the PoP's port 5072, one thread per direction.
# Same interface as the 6in4 planes in adapters/sixin4.py:
#
#   .kind, .protocol            'userspace', 'ayiya'
#   .ifname                     the TUN device
#   open()                      create the TUN (up), the socket, start the threads
#   set_endpoints(local, pop)   WAN address change: new local -> a fresh socket bound to
#                               it; new PoP address -> the socket is re-connected
#   counters()                  dict(tx_packets, tx_bytes, rx_packets, rx_bytes,
#                               rx_dropped, drops={reason: n}, last_tx, last_rx,
#                               control_tx, control_rx, echo_answered, peer_skew[, error])
#   send_control(opcode, payload=b'', next_header=59)
#                               a signed control datagram (beat, echo request, ...) now;
#                               thread-safe
#   local_address()             (ip, port) of the socket (None when closed)
#   close()                     stop the threads, remove the TUN, close everything
#
# Byte counters count the inner IPv6 packets; tx/rx_packets count forwarded IPv6 packets
# only (control datagrams have their own counters). last_tx/last_rx: time.monotonic() of
# the last datagram sent / the last authentic one received (beats included).
#
# Wire format, checks and drop reasons: cpe_tunnel/core/ayiya.py. The forwarding threads
# use the core's algorithm specialised for speed, which tests/unit/test_ayiya_dp.py
# checks against the core byte for byte and drop reason for drop reason:
# - TX: the IPv6 packet is read from the TUN straight into a preallocated buffer at
#   offset 44. Header and identity change only when the second (epoch) does, so they are
#   written and hashed together with SHA-1(password) once per second; per packet the
#   saved SHA-1 state is copied, the payload hashed into it and the digest written into
#   the signature slot. The bytes equal ayiya_seal()'s.
# - RX: a datagram that is a plain forward (opcode 1, next header 41) from the PoP's
#   identity with an epoch inside the skew window and an IPv6 payload is checked the
#   same way (the SHA-1 state of header + identity + key is cached per epoch) and its
#   payload written to the TUN. Everything else - control opcodes, bad signatures, stale
#   times, junk - goes through the core's ayiya_decode(), which names the drop reason
#   (AyiyaError.code) that is counted in counters()['drops'].
# - Inner packets larger than max(mtu, 1500) are dropped and counted (both directions).
# - Control datagrams from the PoP: echo requests are answered here (echo response with
#   the same payload, as AICCU does); echo-request-forward is answered and its payload
#   delivered; every other authentic non-forward datagram (beat/no-op, echo response,
#   MOTD, queries) is handed whole (header included, already verified) as bytes to
#   on_control(datagram), called from the rx thread: keep it short (queue it).
# - The socket is connected, so the kernel only hands us datagrams from the PoP's
#   address and port; the signature and identity checks make sure they are the PoP's.
# - Time: the epoch is Unix time (time.time()), read once per batch of packets (and
#   after every wait), not per packet.
#
# Threads, socket hand-over (a new local address), counters and close() are
# plane.TunSocketPlane's: each direction is a pump that runs one batch of the drain
# functions below per call; a thread sleeps in poll() only when its fd ran dry.
# Speed (bench/ayiya.py, bench/README.md): Where ctypes offers them, a batch of up to
# BATCH datagrams goes out with one sendmmsg() and comes in with one recvmmsg() into a
# ring of preallocated buffers (batch_io; else one send / recv_into per packet). The TUN
# is read with FileIO.readinto (cheaper per call than os.readv). No per-packet logging
# or allocation beyond the memoryview slices and digests Python needs. Secrets: only
# SHA-1(password) is kept; it never appears in repr(), counters() or errors.

import errno
import hashlib
import io
import socket
import struct
import time

from cpe_tunnel.adapters.netlink import in_netns
from cpe_tunnel.adapters.plane import (
    BUFSIZE,
    IP_FREEBIND,
    MMSG,
    MSG_DONTWAIT,
    SOCKBUF,
    Pump,
    RxPump,
    Stop,
    TunSocketPlane,
    drop,
    wait_writable,
)
from cpe_tunnel.core import ayiya
from cpe_tunnel.core.ayiya import AyiyaError
from cpe_tunnel.core.errors import LocalProtocolError

__all__ = ["UserspaceAyiya", "BATCH", "BUFSIZE", "HDR"]

HDR = ayiya.HEADER_LEN  # 44
BATCH = 64  # packets between clock reads / stop checks while draining
MAX_MTU = 65507 - HDR  # largest IPv6 packet that fits one AYIYA/UDP/IPv4 datagram
# bytes 0..3 of a plain forward: identity 16 B integer, SHA-1 signature, auth shared
# secret + opcode forward, next header IPv6
FWD_WORD = (0x41 << 24) | (0x52 << 16) | ((0x10 | ayiya.OP_FORWARD) << 8) | ayiya.NH_IPV6
MIN_FWD = HDR + 40  # a forward must carry at least an IPv6 header

_pack_into = struct.pack_into
# the 44-byte header at once: (bytes 0..3, epoch, identity, signature); one precompiled
# unpack and two bytes comparisons are cheaper than slicing or bytearray.find
_unpack_head = struct.Struct(">II16s20s").unpack_from
_RANGE = range(BATCH)
STOP, EMPTY, MORE = 0, 1, 2  # what a drain call ended with


# -- sendmmsg / recvmmsg (plane.MMSG: through ctypes, one system call per batch) -------
# Python's socket module has neither; calling them through ctypes saves the per-packet
# cost of socket.send / recv_into (measured ~1 us of ~6 per packet here). Without ctypes
# or these calls (some minimal Pythons / libcs) the plane falls back to one send /
# recv_into per packet.
if MMSG is not None and MMSG[0].sizeof(MMSG[0].c_size_t) == MMSG[0].sizeof(MMSG[0].c_ulong):
    ctypes, _Iovec, _Msghdr, _Mmsghdr, _sendmmsg, _recvmmsg = MMSG
    _get_errno = ctypes.get_errno
else:  # (the ring below reads iovec lengths as unsigned longs)
    ctypes = _sendmmsg = _recvmmsg = _get_errno = None

HAVE_MMSG = _sendmmsg is not None


class _Ring:
    """BATCH packet buffers (bytearrays) and the iovec / mmsghdr arrays pointing at
    them, for sendmmsg / recvmmsg. One per thread."""

    def __init__(self, cap):
        self.cap = cap  # largest IPv6 packet a slot takes
        size = (HDR + cap + 64) & ~63
        self.bufs = [bytearray(size) for _ in range(BATCH)]
        self.mvs = [memoryview(b) for b in self.bufs]
        self.reads = [mv[HDR:HDR + cap + 1] for mv in self.mvs]  # +1: spots oversize
        self._keep = [(ctypes.c_char * size).from_buffer(b) for b in self.bufs]
        self.iov = (_Iovec * BATCH)()
        self.msgs = (_Mmsghdr * BATCH)()
        for i in range(BATCH):
            self.iov[i].base = ctypes.addressof(self._keep[i])
            self.iov[i].len = size
            self.msgs[i].hdr.iov = ctypes.addressof(self.iov[i])
            self.msgs[i].hdr.iovlen = 1
        self.addr = ctypes.addressof(self.msgs)
        self.msg_size = ctypes.sizeof(_Mmsghdr)
        ul = ctypes.sizeof(ctypes.c_ulong)
        # iovec lengths (what sendmmsg sends) and msg_len (what recvmmsg got) as
        # plain memoryview items: cheaper than ctypes attribute access per packet
        self.iov_len = memoryview(self.iov).cast("B").cast("L")
        self.iov_idx = [(i * ctypes.sizeof(_Iovec) + _Iovec.len.offset) // ul for i in range(BATCH)]
        self.msg_len = memoryview(self.msgs).cast("B").cast("I")
        self.msg_idx = [(i * self.msg_size + _Mmsghdr.len.offset) // 4 for i in range(BATCH)]
        self.epoch = -1
        self.pre = None


def _ip4(text, what):
    if isinstance(text, str) and text.count(".") == 3:
        try:
            return socket.inet_pton(socket.AF_INET, text)
        except (OSError, ValueError):
            pass
    raise ValueError("%s '%s' is not an IPv4 address" % (what, text))


def _identity(value, what):
    if isinstance(value, str):
        try:
            return socket.inet_pton(socket.AF_INET6, value)
        except (OSError, ValueError):
            raise ValueError("%s '%s' is not an IPv6 address" % (what, value))
    if isinstance(value, (bytes, bytearray, memoryview)) and len(value) == 16:
        return bytes(value)
    raise ValueError("%s must be an IPv6 address (text or 16 bytes)" % what)


# a send failing with these fails for the rest of the batch as well
_BATCH_FAILS = (errno.EDESTADDRREQ, errno.ENOTCONN, errno.ENETUNREACH, errno.EHOSTUNREACH,
                errno.ENETDOWN)


class UserspaceAyiya(TunSocketPlane):
    """AYIYA tunnel end (the client side, as AICCU): IPv6 from the TUN goes to the PoP
    as signed forward datagrams; the PoP's authentic forwards go to the TUN.

    identity16: our tunnel IPv6 address (TIC 'IPv6 Endpoint'), text or 16 bytes;
    peer_identity16: the PoP's ('IPv6 POP'); password: the tunnel password (text or
    bytes; only its SHA-1 is kept). max_skew: seconds an epoch may differ from ours."""

    protocol = "ayiya"
    thread_tag = "ayiya"
    NO_ROUTE = "no route to tunnel server"
    REFUSED = "tunnel server port unreachable (ICMP)"
    send_wait_ms = 1000

    def __init__(self, ifname, local_ipv4, pop_ipv4, identity16, peer_identity16, password,
                 mtu=1280, port=ayiya.PORT, netlink=None, netns=None, on_control=None,
                 max_skew=ayiya.MAX_SKEW, batch_io=None):
        if local_ipv4 is not None:
            _ip4(local_ipv4, "local endpoint")
        _ip4(pop_ipv4, "tunnel server")
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise ValueError("AYIYA port must be 1..65535")
        if isinstance(mtu, bool) or not isinstance(mtu, int) or not 1280 <= mtu <= MAX_MTU:
            raise ValueError("AYIYA tunnel MTU must be 1280..%d" % MAX_MTU)
        if isinstance(max_skew, bool) or not isinstance(max_skew, (int, float)) or max_skew < 0:
            raise ValueError("AYIYA max_skew must be a number >= 0")
        if on_control is not None and not callable(on_control):
            raise ValueError("on_control must be callable")
        self._identity = _identity(identity16, "AYIYA identity")
        self._peer = _identity(peer_identity16, "AYIYA PoP identity")
        try:
            self._key = ayiya.password_hash(password)
        except LocalProtocolError as e:
            raise ValueError(e.reason)
        super().__init__(ifname, mtu, netlink, netns, threads=2)
        self.local = local_ipv4
        self.remote = pop_ipv4
        self.port = port
        # largest inner packet taken either way: the MTU, but at least 1500 so that a
        # PoP configured with a larger MTU than ours is not cut off
        self.cap = max(mtu, 1500)
        self.on_control = on_control
        self.max_skew = int(max_skew)
        # sendmmsg/recvmmsg batches (None: when available) or one system call per packet
        self.batch_io = HAVE_MMSG if batch_io is None else bool(batch_io) and HAVE_MMSG
        # self._lock: send_control (any thread), set_endpoints, connect retries
        self._unconnected = False  # the socket could not be connected yet (no route)
        self._connect_tried = 0.0
        # counters: each has exactly one writer (tx thread, rx thread, or under _lock)
        self.control_tx = 0  # send_control() datagrams sent (under _lock)
        self.control_rx = 0  # authentic control datagrams received (rx thread)
        self.echo_answered = 0  # echo responses sent by the rx thread
        # epoch - our time of the most recent authentic datagram (stale ones included;
        # for forwards, the last of a batch): > 0 when the PoP's clock is ahead of ours
        self.peer_skew = None
        self._slow_skew = 0  # bumped when the slow path sets peer_skew (rx thread)
        self._ctl_last_tx = None
        self._ctl_drops = {}  # send_control() failures (under _lock)
        self._echo_drops = {}  # echo responses the rx thread could not send
        # per-epoch SHA-1 states (owned by the tx / rx thread)
        self._tx_epoch = -1
        self._tx_pre = None
        self._rx_epoch = -1
        self._rx_pre = None

    def __repr__(self):
        return "<UserspaceAyiya %s %s -> %s:%d>" % (self.ifname, self.local or "*", self.remote,
                                                   self.port)

    # -- setup -----------------------------------------------------------------------
    def _make_socket(self, local, remote):
        def make():
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                    try:
                        s.setsockopt(socket.SOL_SOCKET, opt, SOCKBUF)
                    except OSError:
                        pass
                if local is not None:
                    # FREEBIND: the WAN address may come and go; bind anyway
                    s.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
                    s.bind((local, 0))
                self._unconnected = not self._connect(s, remote)
                s.setblocking(False)
            except BaseException:
                s.close()
                raise
            return s

        return in_netns(self.netns, make)

    _NO_ROUTE = (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN, errno.EADDRNOTAVAIL)

    def _connect(self, s, remote):
        """Connect s to the PoP. False (not raised) when there is no route yet (WAN
        down at start or during a change): sends then fail and are counted as 'no route
        to tunnel server' and the connect is retried (_retry_connect) until it works."""
        try:
            s.connect((remote, self.port))
            return True
        except OSError as e:
            if e.errno in self._NO_ROUTE:
                return False
            raise

    def _retry_connect(self):
        """From the tx thread after a failed send, at most once a second (the
        daemon's calls to set_endpoints / send_control retry as well)."""
        now = time.monotonic()
        if self._unconnected and now - self._connect_tried >= 1.0:
            self._connect_tried = now
            with self._lock:
                if self._unconnected and self._sock is not None:
                    self._unconnected = not self._connect(self._sock, self.remote)

    def _new_socket(self):
        return self._make_socket(self.local, self.remote)

    def _pumps(self, tx_sock, rx_sock):
        return _Tx(self, tx_sock), _Rx(self, rx_sock)

    def local_address(self):
        """(ip, port) the socket is bound to (the NAT's inside view), None when closed."""
        s = self._sock
        if s is None:
            return None
        try:
            return s.getsockname()
        except OSError:
            return None

    def set_endpoints(self, local, remote):
        """Change endpoints while running. A new local address gets a fresh socket bound
        to it (swapped in; the rx thread picks it up at once); a new PoP address
        re-connects the socket. Takes effect with the next packet."""
        if local is not None:
            _ip4(local, "local endpoint")
        _ip4(remote, "tunnel server")
        with self._lock:
            if self._sock is None:
                self.local, self.remote = local, remote
                return
            if local != self.local:
                # the threads switch to dups of it within a batch (woken if idle)
                self._hand_over(self._make_socket(local, remote))
            elif remote != self.remote or self._unconnected:
                self._unconnected = not self._connect(self._sock, remote)
            self.local, self.remote = local, remote

    def counters(self):
        drops = self._drops(self._tx_drops, self._rx_drops, self._ctl_drops, self._echo_drops)
        last_tx = self.last_tx
        c = self._ctl_last_tx
        if c is not None and (last_tx is None or c > last_tx):
            last_tx = c
        out = {
            "tx_packets": self.tx_packets,
            "tx_bytes": self.tx_bytes,
            "rx_packets": self.rx_packets,
            "rx_bytes": self.rx_bytes,
            "rx_dropped": sum(list(self._rx_drops.values())),
            "drops": drops,
            "last_tx": last_tx,
            "last_rx": self.last_rx,
            "control_tx": self.control_tx,
            "control_rx": self.control_rx,
            "echo_answered": self.echo_answered,
            "peer_skew": self.peer_skew,
        }
        if self.error:
            out["error"] = self.error
        return out

    def send_control(self, opcode, payload=b"", next_header=ayiya.NH_NONE):
        """Send one signed control datagram (ayiya.OP_NOOP beat, OP_ECHO_REQUEST, ...)
        stamped with the current time. Thread-safe. Returns True when handed to the
        kernel, False when the send failed (counted in drops). Raises ValueError for an
        opcode/next header out of range, OSError when the plane is not open."""
        if isinstance(opcode, bool) or not isinstance(opcode, int) or not 0 <= opcode <= 7:
            raise ValueError("AYIYA opcode must be 0..7")
        if isinstance(next_header, bool) or not isinstance(next_header, int) or \
                not 0 <= next_header <= 255:
            raise ValueError("AYIYA next header must be 0..255")
        if not isinstance(payload, (bytes, bytearray, memoryview)) or len(payload) > MAX_MTU:
            raise ValueError("AYIYA payload must be bytes of at most %d" % MAX_MTU)
        with self._lock:
            sock = self._sock
            if sock is None:
                raise OSError(errno.ENOTCONN, "the AYIYA data plane is not open")
            if self._unconnected:
                self._unconnected = not self._connect(sock, self.remote)
            d = ayiya.ayiya_encode(self._identity, opcode, next_header, payload, time.time(),
                                   self._key)
            try:
                sock.send(d)
            except OSError as e:
                drop(self._ctl_drops, self.send_reason(e.errno))
                return False
            self.control_tx += 1
            self._ctl_last_tx = time.monotonic()
            return True

    # -- forwarding (the pumps below call these) --------------------------------------
    _drop = staticmethod(drop)

    def _send_failed(self, e, sock, data):
        """A forward send raised e. Retries once after waiting for room when the
        buffer was full. Returns (sent, keep_going)."""
        if e.errno == errno.EAGAIN:
            if not wait_writable(self, sock):
                return False, False
            try:
                sock.send(data)
                return True, True
            except OSError as e2:
                e = e2
        if e.errno in (errno.EBADF, errno.EBADFD) and self._stopping:
            return False, False
        self._drop(self._tx_drops, self.send_reason(e.errno))
        if self._unconnected:
            self._retry_connect()
        return False, True

    def _tx_drain(self, readinto, buf, mv, batches=-1, clock=time.time, sock=None):
        """Forward packets from the TUN until it is empty (EMPTY), `batches` batches of
        BATCH packets were done (MORE; -1: no limit) or the plane stops (STOP, false).
        readinto: the TUN's FileIO.readinto (None when empty); sock: the socket to send
        on (None: the plane's); clock: for the tests."""
        if sock is None:
            sock = self._sock
        drops = self._tx_drops
        rd = mv[HDR:]
        sha1 = hashlib.sha1
        key = self._key
        ident = self._identity
        epoch = self._tx_epoch
        pre = self._tx_pre
        cap = self.cap
        while True:
            e = int(clock()) & 0xFFFFFFFF
            if e != epoch:
                _pack_into(">II", buf, 0, FWD_WORD, e)
                mv[8:24] = ident
                pre = sha1(mv[:24])
                pre.update(key)
                epoch = self._tx_epoch = e
                self._tx_pre = pre
            send = sock.send
            cnt = nbytes = 0
            try:
                for _ in _RANGE:
                    m = readinto(rd)
                    if m is None:
                        return EMPTY
                    if m < 40 or (buf[HDR] >> 4) != 6 or m > cap:
                        self._drop(drops, "not IPv6 (from TUN)" if m <= cap else
                                   "packet bigger than the tunnel MTU")
                        continue
                    n = m + HDR
                    h = pre.copy()
                    h.update(mv[HDR:n])
                    mv[24:HDR] = h.digest()
                    try:
                        send(mv[:n])
                    except OSError as err:
                        sent, go = self._send_failed(err, sock, mv[:n])
                        if not go:
                            return STOP
                        if not sent:
                            continue
                    cnt += 1
                    nbytes += m
            except (BlockingIOError, InterruptedError):
                return EMPTY
            except OSError as err:
                if err.errno in (errno.EBADF, errno.EBADFD):
                    return STOP  # closed under us
                self._drop(drops, "TUN read error")
                return EMPTY
            finally:
                if cnt:
                    self.tx_packets += cnt
                    self.tx_bytes += nbytes
                    self.last_tx = time.monotonic()
            if self._stopping:
                return STOP
            batches -= 1
            if batches == 0:
                return MORE

    def _rx_drain(self, sock, write, buf, mv, batches=-1, clock=time.time):
        """Take datagrams from sock until it is empty (EMPTY), `batches` batches were
        done (MORE) or the plane stops (STOP). write: the TUN's FileIO.write."""
        recv_into = sock.recv_into
        sha1 = hashlib.sha1
        key = self._key
        peer = self._peer
        skew = self.max_skew
        pre_ep = self._rx_epoch
        pre = self._rx_pre
        limit = HDR + self.cap
        while True:
            wall = clock()
            w = int(wall)
            lo = w - skew
            hi = w + skew
            cnt = nbytes = 0
            slow_skew = self._slow_skew
            try:
                for _ in _RANGE:
                    n = recv_into(buf)
                    if n >= MIN_FWD:
                        word, ep, ident, sig = _unpack_head(buf, 0)
                        if word == FWD_WORD and lo <= ep <= hi and ident == peer and \
                                (buf[HDR] >> 4) == 6 and n <= limit:
                            if ep != pre_ep:
                                pre = sha1(mv[:24])
                                pre.update(key)
                                pre_ep = self._rx_epoch = ep
                                self._rx_pre = pre
                            h = pre.copy()
                            p = mv[HDR:n]
                            h.update(p)
                            if h.digest() == sig:
                                try:
                                    write(p)
                                except OSError as err:
                                    if err.errno in (errno.EBADF, errno.EBADFD):
                                        return STOP
                                    self._drop(self._rx_drops, "TUN write error")
                                    continue
                                cnt += 1
                                nbytes += n - HDR
                                good_ep = ep
                                continue
                    if n > limit:
                        self._drop(self._rx_drops, "datagram bigger than the tunnel MTU")
                        continue
                    if not self._rx_slow(sock, mv[:n], wall, write):
                        return STOP
            except (BlockingIOError, InterruptedError):
                return EMPTY
            except ConnectionRefusedError:
                # an ICMP port unreachable from the PoP reported on the connected socket
                self._drop(self._rx_drops, "tunnel server port unreachable (ICMP)")
            except OSError as err:
                if err.errno in (errno.EBADF, errno.EBADFD):
                    return STOP
                self._drop(self._rx_drops, "socket read error")
                return EMPTY
            finally:
                if cnt:
                    self.rx_packets += cnt
                    self.rx_bytes += nbytes
                    self.last_rx = time.monotonic()
                    if self._slow_skew == slow_skew:  # no control/stale datagram since
                        self.peer_skew = ayiya.skew(good_ep, wall)
            if self._stopping:
                return STOP
            batches -= 1
            if batches == 0:
                return MORE

    # -- batched system calls (sendmmsg / recvmmsg) ----------------------------------
    def _tx_drain_mm(self, readinto, ring, batches=-1, sendmmsg=_sendmmsg, clock=time.time, sock=None):
        """_tx_drain with the packets of a batch read into the ring's slots, signed
        there and sent with one sendmmsg. Same results."""
        if sock is None:
            sock = self._sock
        drops = self._tx_drops
        sha1 = hashlib.sha1
        key = self._key
        ident = self._identity
        bufs = ring.bufs
        mvs = ring.mvs
        reads = ring.reads
        iov_len = ring.iov_len
        iov_idx = ring.iov_idx
        cap = ring.cap
        epoch = ring.epoch
        pre = ring.pre
        while True:
            e = int(clock()) & 0xFFFFFFFF
            if e != epoch:
                head = struct.pack(">II", FWD_WORD, e) + ident
                for b in bufs:
                    b[:24] = head
                pre = sha1(head)
                pre.update(key)
                epoch = ring.epoch = e
                ring.pre = pre
            k = nbytes = 0
            status = MORE
            try:
                for _ in _RANGE:
                    m = readinto(reads[k])
                    if m is None:
                        status = EMPTY
                        break
                    b = bufs[k]
                    if m < 40 or (b[HDR] >> 4) != 6 or m > cap:
                        self._drop(drops, "not IPv6 (from TUN)" if m <= cap else
                                   "packet bigger than the tunnel MTU")
                        continue
                    n = m + HDR
                    mv = mvs[k]
                    h = pre.copy()
                    h.update(mv[HDR:n])
                    mv[24:HDR] = h.digest()
                    iov_len[iov_idx[k]] = n
                    k += 1
                    nbytes += m
            except (BlockingIOError, InterruptedError):
                status = EMPTY
            except OSError as err:
                if err.errno in (errno.EBADF, errno.EBADFD):
                    return STOP  # closed under us
                self._drop(drops, "TUN read error")
                status = EMPTY
            if k:
                sent, lost_bytes, go = self._tx_flush(ring, k, sendmmsg, sock)
                if sent:
                    self.tx_packets += sent
                    self.tx_bytes += nbytes - lost_bytes
                    self.last_tx = time.monotonic()
                if not go:
                    return STOP
            if status == EMPTY:
                return EMPTY
            if self._stopping:
                return STOP
            batches -= 1
            if batches == 0:
                return MORE

    def _tx_flush(self, ring, k, sendmmsg, sock):
        """sendmmsg the first k slots on sock; a message the kernel refuses is dropped
        and counted, the rest still go. Returns (sent, bytes not sent, keep_going)."""
        sfd = sock.fileno()
        addr = ring.addr
        size = ring.msg_size
        off = sent = lost = 0
        waited = False
        while off < k:
            r = sendmmsg(sfd, addr + off * size, k - off, 0)
            if r > 0:
                sent += r
                off += r
                continue
            code = _get_errno() if r < 0 else errno.EAGAIN
            if code == errno.EINTR:
                continue
            if code == errno.EAGAIN and not waited:
                waited = True
                if not wait_writable(self, sock):
                    return sent, lost, False
                continue
            if code in (errno.EBADF, errno.EBADFD) and self._stopping:
                return sent, lost, False
            reason = self.send_reason(code)
            # no route / not connected: true for the rest of the batch as well
            last = k if code in _BATCH_FAILS else off + 1
            while off < last:
                self._drop(self._tx_drops, reason)
                lost += ring.iov_len[ring.iov_idx[off]] - HDR
                off += 1
        if self._unconnected:
            self._retry_connect()
        return sent, lost, True

    def _rx_drain_mm(self, sock, write, ring, batches=-1, recvmmsg=_recvmmsg,
                     clock=time.time):
        """_rx_drain with recvmmsg: up to BATCH datagrams per system call. Same results."""
        sfd = sock.fileno()
        sha1 = hashlib.sha1
        key = self._key
        peer = self._peer
        skew = self.max_skew
        bufs = ring.bufs
        mvs = ring.mvs
        msg_len = ring.msg_len
        len0 = ring.msg_idx[0]  # msg_len of datagram i: msg_len[len0 + i * stride]
        stride = ring.msg_size // 4
        limit = HDR + ring.cap
        addr = ring.addr
        pre_ep = ring.epoch
        pre = ring.pre
        drops = self._rx_drops
        while True:
            r = recvmmsg(sfd, addr, BATCH, MSG_DONTWAIT, None)
            if r <= 0:
                code = _get_errno() if r < 0 else errno.EAGAIN
                if code == errno.EAGAIN or code == errno.EWOULDBLOCK:
                    return EMPTY
                if code == errno.EINTR:
                    continue
                if code in (errno.EBADF, errno.EBADFD):
                    return STOP
                self._drop(drops, self.recv_reason(code))
                if code == errno.ECONNREFUSED:
                    # an ICMP port unreachable from the PoP reported on the connected socket
                    continue
                return EMPTY
            wall = clock()
            w = int(wall)
            lo = w - skew
            hi = w + skew
            cnt = nbytes = 0
            slow_skew = self._slow_skew
            try:
                # the lengths recvmmsg reported, all at once
                for b, mv, n in zip(bufs, mvs, msg_len[len0:r * stride:stride].tolist()):
                    if n >= MIN_FWD:
                        word, ep, ident, sig = _unpack_head(b, 0)
                        if word == FWD_WORD and lo <= ep <= hi and ident == peer and \
                                (b[HDR] >> 4) == 6 and n <= limit:
                            if ep != pre_ep:
                                pre = sha1(mv[:24])
                                pre.update(key)
                                pre_ep = ring.epoch = ep
                                ring.pre = pre
                            h = pre.copy()
                            p = mv[HDR:n]
                            h.update(p)
                            if h.digest() == sig:
                                try:
                                    write(p)
                                except OSError as err:
                                    if err.errno in (errno.EBADF, errno.EBADFD):
                                        return STOP
                                    self._drop(drops, "TUN write error")
                                    continue
                                cnt += 1
                                nbytes += n - HDR
                                good_ep = ep
                                continue
                    if n > limit:
                        self._drop(drops, "datagram bigger than the tunnel MTU")
                        continue
                    if not self._rx_slow(sock, mv[:n], wall, write):
                        return STOP
            finally:
                if cnt:
                    self.rx_packets += cnt
                    self.rx_bytes += nbytes
                    self.last_rx = time.monotonic()
                    if self._slow_skew == slow_skew:  # no control/stale datagram since
                        self.peer_skew = ayiya.skew(good_ep, wall)
            if self._stopping:
                return STOP
            if r < BATCH:
                return EMPTY  # (nearly) drained: the caller polls again
            batches -= 1
            if batches == 0:
                return MORE

    def _rx_slow(self, sock, pkt, wall, write):
        """Everything that is not a plain authentic forward: the core decides. Returns
        False when the plane is going away."""
        drops = self._rx_drops
        try:
            op, nh, payload, epoch = ayiya.ayiya_decode(pkt, self._key, wall, self.max_skew,
                                                        self._peer)
        except AyiyaError as e:
            if e.code == "stale timestamp":
                self.peer_skew = getattr(e, "skew", None)
                self._slow_skew += 1
            self._drop(drops, e.code)
            return True
        forward = op == ayiya.OP_FORWARD or op == ayiya.OP_ECHO_REQUEST_FORWARD
        if forward:
            if nh != ayiya.NH_IPV6:
                self._drop(drops, "unsupported next header")
                return True
            if len(payload) < 40 or (payload[0] >> 4) != 6:
                self._drop(drops, "bad payload")
                return True
        self.last_rx = time.monotonic()
        if op != ayiya.OP_FORWARD:
            self.control_rx += 1
            self.peer_skew = ayiya.skew(epoch, wall)
            self._slow_skew += 1
        if forward:
            try:
                write(payload)
            except OSError as err:
                if err.errno in (errno.EBADF, errno.EBADFD):
                    return False
                self._drop(drops, "TUN write error")
            else:
                self.rx_packets += 1
                self.rx_bytes += len(payload)
        if op == ayiya.OP_ECHO_REQUEST or op == ayiya.OP_ECHO_REQUEST_FORWARD:
            d = ayiya.ayiya_encode(self._identity, ayiya.OP_ECHO_RESPONSE, nh, payload,
                                   time.time(), self._key)
            try:
                sock.send(d)
                self.echo_answered += 1
            except OSError as e:
                self._drop(self._echo_drops, self.send_reason(e.errno))
        elif op != ayiya.OP_FORWARD and self.on_control is not None:
            try:
                self.on_control(bytes(pkt))
            except Exception:
                self._drop(drops, "control handler error")
        return True


class _Tx(Pump):
    """TUN -> PoP: one batch of _tx_drain / _tx_drain_mm per run()."""

    name = "tx"

    def __init__(self, plane, sock):
        super().__init__(plane, sock)
        # FileIO.readinto: a little cheaper per call than os.readv; None when empty
        self.readinto = io.FileIO(self.fd, "rb", closefd=False).readinto
        if plane.batch_io:
            self.ring = _Ring(plane.cap)
        else:
            self.plain_buffer()

    def run(self):
        plane = self.plane
        if plane.batch_io:
            st = plane._tx_drain_mm(self.readinto, self.ring, 1, sock=self.sock)
        else:
            st = plane._tx_drain(self.readinto, self.buf, self.mv, 1, sock=self.sock)
        if st == STOP:
            raise Stop()
        return st == EMPTY


class _Rx(RxPump):
    """PoP -> TUN: one batch of _rx_drain / _rx_drain_mm per run()."""

    def __init__(self, plane, sock):
        super().__init__(plane, sock)
        # FileIO.write: a little cheaper per call than os.write
        self.write = io.FileIO(self.fd, "wb", closefd=False).write
        if plane.batch_io:
            self.ring = _Ring(plane.cap)
        else:
            self.plain_buffer()

    def run(self):
        plane = self.plane
        if plane.batch_io:
            st = plane._rx_drain_mm(self.sock, self.write, self.ring, 1)
        else:
            st = plane._rx_drain(self.sock, self.write, self.buf, self.mv, 1)
        if st == STOP:
            raise Stop()
        return st == EMPTY
