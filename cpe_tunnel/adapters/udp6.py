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
# Threads, socket hand-over (replace_socket), counters and close() are
# plane.TunSocketPlane's; this module has the v6udpv4 pumps.

import errno
import io
import os
import socket

from cpe_tunnel.adapters.plane import (
    BATCH,
    MMSG,
    MSG_DONTWAIT,
    SOCKBUF,
    PlainTx,
    Pump,
    RxPump,
    Ring,
    Stop,
    TunSocketPlane,
    drop,
    wait_writable,
)

__all__ = ["BATCH", "CONTROL", "DROP_REASONS", "TunSocketPlane", "UserspaceUdp6", "classify_datagram"]

_MMSG = MMSG  # (tests look here to know whether the batched path exists)

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


class _UdpTxBatch(Pump):
    """TUN -> broker: packets read into the slots of a ring, sent with one sendmmsg()."""

    name = "tx"

    def __init__(self, plane, sock):
        self.ring = Ring(BATCH, max(plane.mtu, 2048) + 1)
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
                    drop(drops, "packet larger than the MTU" if n >= slot else "not IPv6 (from TUN)")
                    continue
                words[k * ws + wo] = n
                k += 1
                by += n
        except OSError as e:
            if e.errno in (errno.EBADF, errno.EBADFD):
                raise Stop()
            drop(drops, "TUN read error")
            dry = True
        if k:
            self._send(k, by)
        return dry

    def _send(self, k, by):
        ring, plane = self.ring, self.plane
        sendmmsg = MMSG[4]
        words, ws, wo = ring.iov_words, ring.iov_stride, ring.iov_len_off
        drops = plane._tx_drops
        done = failed = 0
        waited = False
        while done < k:
            r = sendmmsg(self.sfd, ring.addr + done * ring.msg_size, k - done, 0)
            if r > 0:
                done += r
                continue
            code = MMSG[0].get_errno()
            if code == errno.EINTR:
                continue
            if code == errno.EAGAIN:
                if not waited:  # socket buffer full: wait briefly for room, once
                    waited = True
                    if not wait_writable(plane, self.sock):
                        raise Stop()
                    continue
                drop(drops, "send buffer full", k - done)
                for j in range(done, k):
                    by -= words[j * ws + wo]
                failed += k - done
                break
            # this datagram failed: count it, go on with the next one
            if code in (errno.EBADF, errno.EBADFD) and plane._stopping:
                raise Stop()
            drop(drops, plane.send_reason(code))
            by -= words[done * ws + wo]
            done += 1
            failed += 1
        if k > failed:
            self.tx_done(k - failed, by)


class _UdpRx(RxPump):
    """Broker -> TUN (shared parts)."""

    def __init__(self, plane, sock):
        super().__init__(plane, sock)
        self.limit = plane._rx_limit()

    def control(self, data):
        plane = self.plane
        plane.rx_control += 1
        cb = plane.on_control
        if cb is None:
            drop(plane._rx_drops, "control message (no handler)")
            return
        try:
            cb(data)
        except Exception:
            drop(plane._rx_drops, "control handler error")

    def error(self, code):
        """Count a socket read error (an ICMP error reported on the connected socket,
        mostly); Stop when the socket is gone."""
        if code in (errno.EBADF, errno.EBADFD):
            raise Stop()
        drop(self.plane._rx_drops, self.plane.recv_reason(code))


class _UdpRxPlain(_UdpRx):
    """Broker -> TUN, one recv_into() per datagram."""

    def __init__(self, plane, sock):
        super().__init__(plane, sock)
        self.plain_buffer()

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
                            raise Stop()
                        drop(drops, "TUN write error")
                        continue
                    pk += 1
                    by += end
                elif end == 0:
                    self.control(bytes(mv[:n]))
                else:
                    drop(drops, DROP_REASONS[-end])
        except (BlockingIOError, InterruptedError):
            dry = True
        except OSError as e:
            self.error(e.errno)
        if pk:
            self.rx_done(pk, by)
        return dry


class _UdpRxBatch(_UdpRx):
    """Broker -> TUN: up to BATCH datagrams per recvmmsg() into the slots of a ring."""

    def __init__(self, plane, sock):
        super().__init__(plane, sock)
        self.ring = Ring(BATCH, self.limit)
        self.offs = list(range(0, BATCH * self.limit, self.limit))
        # FileIO.write: a little cheaper per call than os.write(fd, ...)
        self.write = io.FileIO(self.fd, "wb", closefd=False).write

    def close(self):
        self.ring.release()

    def run(self):
        ring = self.ring
        k = MMSG[5](self.sock.fileno(), ring.addr, BATCH, MSG_DONTWAIT, None)
        if k <= 0:
            code = MMSG[0].get_errno() if k < 0 else errno.EAGAIN
            if code in (errno.EAGAIN, errno.EWOULDBLOCK):
                return True
            if code != errno.EINTR:
                self.error(code)
            return False
        buf, slot = ring.buf, ring.slot
        write = self.write
        pk = by = 0
        # the common case (a whole IPv6 packet that fits its slot) inline, the rest
        # through classify_datagram(), which has the whole rule
        for v, o, n in zip(ring.views, self.offs, ring.lengths(k)):
            if 40 <= n < slot and buf[o] >> 4 == 6:
                end = 40 + (buf[o + 4] << 8 | buf[o + 5])
                if end <= n:
                    try:
                        write(v[:end])
                    except OSError as e:
                        self.write_failed(e)
                        continue
                    pk += 1
                    by += end
                    continue
            self.slow(v, o, n)
        if pk:
            self.rx_done(pk, by)
        return k < BATCH

    def write_failed(self, e):
        if e.errno in (errno.EBADF, errno.EBADFD):
            raise Stop()
        drop(self.plane._rx_drops, "TUN write error")

    def slow(self, v, o, n):
        """Whatever the inline test did not pass: control message, drop, or a packet
        the test could not decide on."""
        slot = self.ring.slot
        end = _TOO_BIG if n >= slot else classify_datagram(self.ring.buf, o, n)
        if end > 0:
            try:
                self.write(v[:end])
            except OSError as e:
                self.write_failed(e)
                return
            self.rx_done(1, end)
        elif end == 0:
            self.control(bytes(v[:n]))
        else:
            drop(self.plane._rx_drops, DROP_REASONS[-end])


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
        self.batch = bool(batch) and MMSG is not None
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
        return PlainTx(self, tx_sock), _UdpRxPlain(self, rx_sock)

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
