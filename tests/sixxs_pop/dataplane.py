"""The PoP's packet side, one thread polling four descriptors:

    UDP 5072   AYIYA from clients   -> checks (wire.ayiya_verify) -> TUN / echo response
    UDP 3740   heartbeats           -> checks (wire.heartbeat_verify) -> endpoint moves
    raw IPv4 proto 41               -> 6in4 from static/heartbeat endpoints -> TUN
    TUN (IFF_TUN | IFF_NO_PI)       -> by destination: AYIYA to the learned (ip, port),
                                       or proto 41 to the 6in4 endpoint

The PoP's tunnel addresses sit on the TUN device, so the kernel answers pings to them
(the clients' keepalive target) and routes the v6 host's traffic to the routed prefixes.

AYIYA: the identity selects the tunnel; an authentic, fresh datagram of any opcode
(noop beat, forward, echo) moves the tunnel's endpoint to its (IPv4, port) -- NAT
rebinding is followed on the next signed packet, a stale or forged one moves nothing.
Echo requests are answered with an echo response carrying the same next header and
payload (opcode 3 also forwards the payload). Outbound datagrams carry the PoP's tunnel
address as identity and the PoP's clock (with its offset) as epoch.

Heartbeat: the tunnel's proto-41 endpoint becomes the datagram's source address
('sender', or a stated address that equals the source).

No per-packet logging; counters only. Endpoint moves are logged.
"""

import os
import select
import socket
import subprocess

from tests.peer_util import Workers, close_fds, open_tun, set_up_tun, tunnels_tun_lines

from . import wire
from .wire import Drop

BUF = 65536 + 64


def configure_tun(config, run=subprocess.run):
    tunnels = [(t.pop_v6, t.client_v6.network.prefixlen, t.routed) for t in config.tunnels()]
    lines = tunnels_tun_lines(config.tun_name, config.effective_tun_mtu(), tunnels)
    set_up_tun(config.tun_name, lines, run=run)


class Dataplane(Workers):
    def __init__(self, pop, tun=True):
        self.pop = pop
        self.cfg = pop.config
        self.tun_fd = None
        self.raw = None
        self.ayiya = None
        self.hb = None
        self.init_workers()
        self.buf = bytearray(BUF)
        self.mv = memoryview(self.buf)
        self.obuf = bytearray(BUF)
        self.omv = memoryview(self.obuf)
        try:
            if tun:
                self.tun_fd = open_tun(self.cfg.tun_name)
                configure_tun(self.cfg)
                self.raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, 41)
                self.raw.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 64)
                self.raw.setblocking(False)
            if self.cfg.ayiya_port is not None:
                self.ayiya = self._udp(self.cfg.ayiya_port)
            if self.cfg.heartbeat_port is not None:
                self.hb = self._udp(self.cfg.heartbeat_port)
        except Exception:
            self.close()
            raise

    def _udp(self, port):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        except OSError:
            pass
        s.bind((self.cfg.listen, port))
        s.setblocking(False)
        return s

    # ---- life cycle ------------------------------------------------------------------
    def start(self):
        self.start_worker(self.run, "dataplane")

    def stop(self):
        self.stop_workers()
        self.close()

    def close(self):
        for s in (self.raw, self.ayiya, self.hb):
            if s is not None:
                s.close()
        close_fds(self.tun_fd)
        self.tun_fd = None
        self.close_wake()

    def run(self):
        poller = select.poll()
        handlers = {self._wake_r: None}
        poller.register(self._wake_r, select.POLLIN)
        for obj, fn in (
            (self.tun_fd, self._drain_tun),
            (self.raw, self._drain_raw),
            (self.ayiya, self._drain_ayiya),
            (self.hb, self._drain_heartbeat),
        ):
            if obj is None:
                continue
            fd = obj if isinstance(obj, int) else obj.fileno()
            poller.register(fd, select.POLLIN)
            handlers[fd] = fn
        while not self._stop:
            for fd, _ev in poller.poll(1000):
                fn = handlers.get(fd)
                if fn is not None:
                    try:
                        fn()
                    except Exception as exc:  # a bug here must not kill the PoP silently
                        self.pop.log("dataplane error in %s: %r" % (fn.__name__, exc))

    # ---- AYIYA -----------------------------------------------------------------------
    def _drain_ayiya(self):
        mv = self.mv
        for _ in range(256):
            try:
                n, (ip, port) = self.ayiya.recvfrom_into(self.buf)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            self.ayiya_datagram(mv[:n], ip, port)

    def ayiya_datagram(self, data, ip, port):
        """One datagram from (ip, port): check, learn the endpoint, act."""
        pop = self.pop
        if pop.faults["ayiya_drop"]:
            pop.drop("ayiya", "fault", None, ip)
            return
        wall = pop.wall()
        try:
            t, op, nh, epoch = wire.ayiya_verify(data, pop.lookup_ident, wall, self.cfg.max_skew)
        except Drop as d:
            pop.drop("ayiya", d.reason, d.tunnel, "%s:%d" % (ip, port))
            return
        n = len(data)
        t.last_seen = wall
        t.last_epoch_delta = epoch - int(wall)
        t.recent_ayiya.append((round(wall, 3), ip, port, bytes(data)))
        if t.endpoint != ip or t.port != port:
            pop.move_endpoint(t, ip, port, "ayiya")
        t.ayiya_opcodes[wire.OPCODE_NAMES[op]] += 1
        t.rx_packets += 1
        t.rx_bytes += n
        pop.totals["rx_packets"] += 1
        pop.totals["rx_bytes"] += n
        if op == wire.OP_ECHO_REQUEST or op == wire.OP_ECHO_REQUEST_FORWARD:
            reply = wire.ayiya_build(
                t.pop_ident, wire.OP_ECHO_RESPONSE, nh, int(wall), bytes(data[44:]), t.key
            )
            if self._send_ayiya(t, reply):
                t.echo_replies += 1
        if op == wire.OP_FORWARD or op == wire.OP_ECHO_REQUEST_FORWARD:
            if nh != wire.NH_IPV6:
                pop.drop("ayiya", "unsupported next header", t, ip)
                return
            payload = data[44:]
            try:
                src, _dst, total = wire.ipv6_check(payload)
            except Drop:
                pop.drop("ayiya", "bad payload", t, ip)
                return
            if not pop.owns_source(t, src):
                pop.drop("ayiya", "spoofed source", t, ip)
                return
            self._to_tun("ayiya", t, payload[:total], ip)

    def _send_ayiya(self, t, datagram):
        if t.endpoint is None or self.ayiya is None:
            self.pop.drop("outbound", "no endpoint", t, None)
            return False
        try:
            self.ayiya.sendto(datagram, (t.endpoint, t.port))
        except OSError:
            self.pop.drop("outbound", "send error", t, t.endpoint)
            return False
        t.tx_packets += 1
        t.tx_bytes += len(datagram)
        self.pop.totals["tx_packets"] += 1
        self.pop.totals["tx_bytes"] += len(datagram)
        return True

    def send_ayiya(
        self,
        t,
        opcode=wire.OP_ECHO_REQUEST,
        next_header=wire.NH_NONE,
        payload=b"",
        epoch_delta=0,
        identity=None,
        bad_signature=False,
        raw=None,
        to=None,
    ):
        """Control-socket helper: send one AYIYA datagram to the tunnel's endpoint (or to
        `to` = (ip, port)), for tests of the client's receive checks. Returns the datagram."""
        if raw is not None:
            datagram = bytes(raw)
        else:
            ident = identity if identity is not None else t.pop_ident
            datagram = bytearray(
                wire.ayiya_build(
                    ident, opcode, next_header, int(self.pop.wall()) + int(epoch_delta), payload, t.key
                )
            )
            if bad_signature:
                datagram[24] ^= 0x01
            datagram = bytes(datagram)
        dest = to or ((t.endpoint, t.port) if t.endpoint else None)
        if dest is None or self.ayiya is None:
            raise ValueError("tunnel %s has no AYIYA endpoint yet" % t.spec.id)
        self.ayiya.sendto(datagram, dest)
        t.tx_packets += 1
        t.tx_bytes += len(datagram)
        return datagram, dest

    # ---- heartbeat -------------------------------------------------------------------
    def _drain_heartbeat(self):
        for _ in range(64):
            try:
                data, (ip, _port) = self.hb.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            self.heartbeat_datagram(data, ip)

    def heartbeat_datagram(self, data, ip):
        pop = self.pop
        if pop.faults["heartbeat_drop"]:
            pop.drop("heartbeat", "fault", None, ip)
            return
        wall = pop.wall()
        try:
            t, hb = wire.heartbeat_verify(data, ip, pop.lookup_ident, wall, self.cfg.max_skew)
        except Drop as d:
            pop.drop("heartbeat", d.reason, d.tunnel, ip)
            return
        t.heartbeats += 1
        t.last_seen = wall
        t.last_epoch_delta = hb["epoch"] - int(wall)
        t.last_heartbeat = {
            "time": round(wall, 3),
            "source": ip,
            "stated": hb["stated"],
            "epoch_delta": t.last_epoch_delta,
        }
        if t.endpoint != ip:
            pop.move_endpoint(t, ip, None, "heartbeat")

    # ---- proto 41 --------------------------------------------------------------------
    def _drain_raw(self):
        mv = self.mv
        for _ in range(256):
            try:
                n = self.raw.recv_into(self.buf)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            self.proto41_packet(mv[:n])

    def proto41_packet(self, pkt):
        pop = self.pop
        try:
            src, off, end = wire.ipv4_41(pkt)
        except Drop as d:
            pop.drop("proto41", d.reason)
            return
        cands = pop.by_endpoint.get(src)
        if not cands:
            pop.drop("proto41", "unknown source", None, src)
            return
        if pop.faults["proto41_drop"]:
            pop.drop("proto41", "fault", cands[0], src)
            return
        inner = pkt[off:end]
        try:
            isrc, _dst, total = wire.ipv6_check(inner)
        except Drop as d:
            pop.drop("proto41", d.reason, cands[0], src)
            return
        for t in cands:
            if pop.owns_source(t, isrc):
                break
        else:
            pop.drop("proto41", "spoofed source", cands[0], src)
            return
        if not t.spec.enabled:
            pop.drop("proto41", "tunnel disabled", t, src)
            return
        t.last_seen = pop.wall()
        t.rx_packets += 1
        t.rx_bytes += total
        pop.totals["rx_packets"] += 1
        pop.totals["rx_bytes"] += total
        self._to_tun("proto41", t, inner[:total], src)

    def _to_tun(self, family, t, packet, src):
        if self.tun_fd is None:
            self.pop.drop(family, "tun error", t, src)
            return
        try:
            os.write(self.tun_fd, packet)
        except OSError:
            self.pop.drop(family, "tun error", t, src)

    # ---- TUN -> clients --------------------------------------------------------------
    def _drain_tun(self):
        pop = self.pop
        ob = self.obuf
        omv = self.omv
        payload = omv[44:]
        for _ in range(256):
            try:
                n = os.readv(self.tun_fd, [payload])
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            if n <= 0:
                return
            pkt = omv[44 : 44 + n]
            try:
                _src, dst, total = wire.ipv6_check(pkt)
            except Drop as d:
                pop.drop("outbound", d.reason)
                continue
            if dst[0] == 0xFF:
                pop.drop("outbound", "multicast")
                continue
            t = pop.tunnel_for_dst(dst)
            if t is None:
                pop.drop("outbound", "no tunnel")
                continue
            if not t.spec.enabled:
                pop.drop("outbound", "tunnel disabled", t)
                continue
            if t.endpoint is None:
                pop.drop("outbound", "no endpoint", t)
                continue
            if t.spec.type == "ayiya":
                if pop.faults["ayiya_drop"]:
                    pop.drop("outbound", "fault", t)
                    continue
                ob[0:24] = wire.ayiya_header(t.pop_ident, wire.OP_FORWARD, wire.NH_IPV6, int(pop.wall()))
                length = 44 + total
                wire.ayiya_sign_in_place(ob, length, t.key)
                try:
                    self.ayiya.sendto(omv[:length], (t.endpoint, t.port))
                except OSError:
                    pop.drop("outbound", "send error", t, t.endpoint)
                    continue
            else:
                if pop.faults["proto41_drop"]:
                    pop.drop("outbound", "fault", t)
                    continue
                length = total
                try:
                    self.raw.sendto(omv[44 : 44 + total], (t.endpoint, 0))
                except OSError:
                    pop.drop("outbound", "send error", t, t.endpoint)
                    continue
            t.tx_packets += 1
            t.tx_bytes += length
            pop.totals["tx_packets"] += 1
            pop.totals["tx_bytes"] += length
