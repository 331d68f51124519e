"""The broker's tunnel data planes, all terminated in userspace on one TUN device
(IFF_TUN | IFF_NO_PI carries IPv6 and IPv4 alike; the kernel tells them apart by the
version nibble).

  v6v4     IPv6 in IPv4 protocol 41 (RFC 4213): raw IPv4 socket of protocol 41.
  v6udpv4  IPv6 directly in UDP on the TSP session's own 5-tuple: the broker's UDP
           socket (port 3653) carries control (top nibble 0xF) and data (IPv6) alike;
           the endpoint is the NAT'd source the session came from.
  v4v6     IPv4 in IPv6 (RFC 2473): raw IPv6 socket of protocol 4. The IPv4 side ends
           on the TUN device too: the broker's tunnel IPv4 address (first host of
           tunnel_prefix4) answers ping, and the namespace routes the rest (the lab has
           no IPv4 host behind the broker, so that address is the v4v6 test target).

Inbound (client -> TUN) is accepted only from an active tunnel's registered endpoint,
and only with an inner source inside the tunnel's address or delegated prefix (what
real brokers check); everything else is dropped and counted by reason. Outbound, the
inner destination picks the tunnel (longest match over client addresses and prefixes).

The broker's tunnel addresses sit on the TUN device, so the kernel answers ICMP(v6)
echo to them: those are the keepalive targets the offers name.

Threads: one reads the TUN device (outbound), one reads the sockets (inbound; UDP
control datagrams are handed to the control layer from there). Buffers are
preallocated; lookups use Registry.tables without the lock.
"""

import errno
import os
import select
import socket
import time

from tests.peer_util import Workers, close_fds, open_tun, set_up_tun

from .registry import owns_src4, owns_src6

IP_MTU_DISCOVER = getattr(socket, "IP_MTU_DISCOVER", 10)
IP_PMTUDISC_DONT = getattr(socket, "IP_PMTUDISC_DONT", 0)
BUFSIZE = 65536
DRAIN = 256  # packets per wake-up before checking the other sources


SO_SNDBUFFORCE, SO_RCVBUFFORCE = 32, 33  # Linux; root may exceed net.core.[rw]mem_max


def _bufsizes(sock, size=8 << 20):
    """Big socket buffers, so bursts queue instead of being dropped."""
    for force, plain in ((SO_RCVBUFFORCE, socket.SO_RCVBUF), (SO_SNDBUFFORCE, socket.SO_SNDBUF)):
        for opt in (force, plain):
            try:
                sock.setsockopt(socket.SOL_SOCKET, opt, size)
                break
            except OSError:
                pass


def configure_tun(config, v4=True):
    """Addresses and routes of the TUN device (run inside the broker's namespace)."""
    dev = config.tun_name
    lines = [
        "link set dev %s mtu %d up" % (dev, config.tun_mtu),
        "addr add %s/%d dev %s" % (config.server_v6, config.tunnel_prefix.prefixlen, dev),
        "route replace %s dev %s" % (config.prefix_pool, dev),
    ]
    if v4:
        lines += [
            "addr add %s/%d dev %s" % (config.server_v4, config.tunnel_prefix4.prefixlen, dev),
            "route replace %s dev %s" % (config.prefix_pool4, dev),
        ]
    set_up_tun(dev, lines, no_dad=("accept_dad", "dad_transmits"))


class DataPlane(Workers):
    """Owns the TUN fd and raw sockets; runs the outbound and inbound threads.

    udp4/udp6: the TSP UDP sockets (owned by the server; may be None);
    control: transport.UdpControl (control datagrams are handed to it)."""

    def __init__(self, registry, udp4, udp6, control, tun=True, log=None):
        self.reg = registry
        self.cfg = registry.config
        self.udp4 = udp4
        self.udp6 = udp6
        self.control = control
        self.log = log or (lambda m: None)
        self.tun_fd = None
        self.raw41 = None
        self.raw64 = None
        self.init_workers()
        if tun:
            self._open()

    def _open(self):
        cfg = self.cfg
        for sock in (self.udp4, self.udp6):
            if sock is not None:
                _bufsizes(sock)
        self.tun_fd = open_tun(cfg.tun_name)
        try:
            v4v6 = "v4v6" in cfg.tunnel_types and cfg.listen6 is not None
            configure_tun(cfg, v4=v4v6)
            if "v6v4" in cfg.tunnel_types:
                self.raw41 = socket.socket(socket.AF_INET, socket.SOCK_RAW, 41)
                self.raw41.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 64)
                self.raw41.bind((cfg.listen, 0))
                _bufsizes(self.raw41)
                self.raw41.setblocking(False)
            if v4v6:
                self.raw64 = socket.socket(socket.AF_INET6, socket.SOCK_RAW, 4)
                self.raw64.bind((cfg.listen6, 0))
                _bufsizes(self.raw64)
                self.raw64.setblocking(False)
        except Exception:
            self.close()
            raise

    @property
    def has_tun(self):
        return self.tun_fd is not None

    def start(self):
        if self.tun_fd is not None:
            self.start_worker(self._run_out, "tun-out")
        self.start_worker(self._run_in, "net-in")

    def stop(self):
        self.stop_workers()
        self.close()

    def close(self):
        for s in (self.raw41, self.raw64):
            if s is not None:
                s.close()
        self.raw41 = self.raw64 = None
        close_fds(self.tun_fd)
        self.tun_fd = None
        self.close_wake()

    # ---- outbound: TUN -> client ---------------------------------------------------------
    def _run_out(self):
        poller = select.poll()
        poller.register(self.tun_fd, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        buf = bytearray(BUFSIZE)
        mv = memoryview(buf)
        bufs = [buf]
        reg = self.reg
        fd = self.tun_fd
        while not self._stop:
            for rfd, _ev in poller.poll(1000):
                if rfd != fd:
                    continue
                for _ in range(DRAIN):
                    try:
                        n = os.readv(fd, bufs)
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError:
                        break
                    if n <= 0:
                        break
                    self._out_one(buf, mv, n, reg)

    def _out_one(self, buf, mv, n, reg):
        ver = buf[0] >> 4
        tables = reg.tables
        if ver == 6:
            if n < 40:
                reg.count_drop("bad_packet")
                return
            if buf[24] == 0xFF:
                reg.count_drop("multicast")
                return
            t = tables.tunnel_for_dst6(bytes(buf[24:40]))
            if t is None:
                reg.count_drop("no_tunnel")
                return
            try:
                if t.type == "v6udpv4":
                    self.udp4.sendto(mv[:n], t.endpoint)
                elif t.type == "v6v4" and self.raw41 is not None:
                    self.raw41.sendto(mv[:n], (t.endpoint, 0))
                else:
                    reg.count_drop("no_tunnel", t)
                    return
            except OSError:
                reg.count_drop("send_error", t)
                return
        elif ver == 4:
            if n < 20:
                reg.count_drop("bad_packet")
                return
            if 224 <= buf[16] <= 239 or buf[16:20] == b"\xff\xff\xff\xff":
                reg.count_drop("multicast")
                return
            t = tables.tunnel_for_dst4(bytes(buf[16:20]))
            if t is None or self.raw64 is None:
                reg.count_drop("no_tunnel", t)
                return
            try:
                self.raw64.sendto(mv[:n], (t.endpoint, 0))
            except OSError:
                reg.count_drop("send_error", t)
                return
        else:
            reg.count_drop("bad_packet")
            return
        t.tx_packets += 1
        t.tx_bytes += n
        t.last_tx = time.monotonic()

    # ---- inbound: client -> TUN (and UDP control) -------------------------------------------
    def _run_in(self):
        poller = select.poll()
        handlers = {}
        buf = bytearray(BUFSIZE)
        mv = memoryview(buf)
        for sock, fn in (
            (self.udp4, self._udp4),
            (self.udp6, self._udp6),
            (self.raw41, self._raw41),
            (self.raw64, self._raw64),
        ):
            if sock is not None:
                poller.register(sock.fileno(), select.POLLIN)
                handlers[sock.fileno()] = (sock, fn)
        poller.register(self._wake_r, select.POLLIN)
        next_expire = time.monotonic() + 1.0
        while not self._stop:
            for rfd, _ev in poller.poll(1000):
                h = handlers.get(rfd)
                if h is None:
                    continue
                sock, fn = h
                if sock is self.udp4 and self.tun_fd is not None:
                    self._drain_udp4(buf, mv)
                    continue
                for _ in range(DRAIN):
                    try:
                        n, addr = sock.recvfrom_into(buf)
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError as exc:
                        if exc.errno in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH):
                            continue  # an ICMP error for an earlier send
                        break
                    try:
                        fn(buf, mv, n, addr)
                    except Exception as exc:  # never let one packet stop the loop
                        self.log("inbound %s from %s: %s: %s" % (fn.__name__, addr, type(exc).__name__, exc))
            now = time.monotonic()
            if now >= next_expire:
                next_expire = now + 1.0
                self.control.expire(now, self.cfg.session_timeout)

    def _drain_udp4(self, buf, mv):
        """The v6udpv4 hot path (UDP -> TUN), inlined; control datagrams and anything
        unusual go through _udp4()."""
        recv = self.udp4.recvfrom_into
        write = os.write
        fd = self.tun_fd
        reg = self.reg
        udp = reg.tables.udp
        t = None
        for _ in range(DRAIN):
            try:
                n, addr = recv(buf)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                if exc.errno in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH):
                    continue
                break
            t = udp.get(addr)
            if t is None or n < 40 or buf[0] >> 4 != 6:
                try:
                    self._udp4(buf, mv, n, addr)
                except Exception as exc:  # never let one packet stop the loop
                    self.log("inbound udp from %s: %s: %s" % (addr, type(exc).__name__, exc))
                udp = reg.tables.udp  # a control message may have changed the tunnels
                t = None
                continue
            total = 40 + ((buf[4] << 8) | buf[5])
            if total > n:
                reg.count_drop("bad_packet", t)
                continue
            if mv[8:24] != t.c6 and not owns_src6(t, bytes(buf[8:24])):
                reg.count_drop("spoofed_source", t)
                continue
            try:
                write(fd, mv[:total])
            except OSError:
                reg.count_drop("send_error", t)
                continue
            t.rx_packets += 1
            t.rx_bytes += total
        if t is not None:
            t.last_rx = time.monotonic()  # per batch (at most DRAIN packets)

    def _control(self, sock, buf, n, addr):
        peer = (addr[0], addr[1])
        reply = self.control.datagram(bytes(buf[:n]), peer, time.monotonic())
        if reply is not None:
            try:
                sock.sendto(reply, addr)
            except OSError:
                self.reg.count("send_errors")

    def _udp6(self, buf, mv, n, addr):
        if n >= 8 and buf[0] >> 4 == 0xF:
            self._control(self.udp6, buf, n, addr)
        else:
            self.reg.count_drop("control_junk")

    def _udp4(self, buf, mv, n, addr):
        if n >= 1 and buf[0] >> 4 == 0xF:
            if n >= 8:
                self._control(self.udp4, buf, n, addr)
            else:
                self.reg.count_drop("control_junk")
            return
        reg = self.reg
        t = reg.tables.udp.get(addr)
        if t is None:
            reg.count_drop("unknown_source" if n >= 40 and buf[0] >> 4 == 6 else "control_junk")
            return
        self._to_tun6(buf, mv, 0, n, t)

    def _to_tun6(self, buf, mv, off, end, t):
        reg = self.reg
        if end - off < 40 or buf[off] >> 4 != 6:
            reg.count_drop("bad_packet", t)
            return
        total = 40 + ((buf[off + 4] << 8) | buf[off + 5])
        if off + total > end:
            reg.count_drop("bad_packet", t)
            return

        if not owns_src6(t, bytes(buf[off + 8 : off + 24])):
            reg.count_drop("spoofed_source", t)
            return
        self._write_tun(mv[off : off + total], t)

    def _write_tun(self, view, t):
        if self.tun_fd is None:
            self.reg.count_drop("send_error", t)
            return
        try:
            os.write(self.tun_fd, view)
        except OSError:
            self.reg.count_drop("send_error", t)
            return
        t.rx_packets += 1
        t.rx_bytes += len(view)
        t.last_rx = time.monotonic()

    def _raw41(self, buf, mv, n, addr):
        reg = self.reg
        if n < 20 or buf[0] >> 4 != 4:
            reg.count_drop("bad_packet")
            return
        ihl = (buf[0] & 0x0F) * 4
        total = (buf[2] << 8) | buf[3]
        if ihl < 20 or total > n or total < ihl:
            reg.count_drop("bad_packet")
            return
        cands = reg.tables.v4ep.get(addr[0])
        if not cands:
            reg.count_drop("unknown_source")
            return
        t = cands[0]
        if len(cands) > 1 and total - ihl >= 24:
            src = bytes(buf[ihl + 8 : ihl + 24])
            for c in cands:
                if owns_src6(c, src):
                    t = c
                    break
        self._to_tun6(buf, mv, ihl, total, t)

    def _raw64(self, buf, mv, n, addr):
        reg = self.reg
        try:
            key = socket.inet_pton(socket.AF_INET6, addr[0].split("%")[0])
        except OSError:
            reg.count_drop("bad_packet")
            return
        t = reg.tables.v6ep.get(key)
        if t is None:
            reg.count_drop("unknown_source")
            return
        if n < 20 or buf[0] >> 4 != 4:
            reg.count_drop("bad_packet", t)
            return
        total = (buf[2] << 8) | buf[3]
        if total > n or total < 20:
            reg.count_drop("bad_packet", t)
            return

        if not owns_src4(t, bytes(buf[12:16])):
            reg.count_drop("spoofed_source", t)
            return
        self._write_tun(mv[:total], t)
