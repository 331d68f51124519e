"""A userspace 6in4 (IPv4 protocol 41, RFC 4213) point of presence.

    TUN device (IFF_TUN | IFF_NO_PI) <-> this loop <-> raw IPv4 socket, protocol 41

Outbound (TUN -> client): the IPv6 destination selects the tunnel (its /64 or a
routed prefix, longest match); the packet goes to that tunnel's *currently
registered* IPv4 endpoint with sendto(); the kernel adds the IPv4 header.

Inbound (client -> TUN): an IPv4 packet of protocol 41 is accepted only when its
outer source is some tunnel's registered endpoint and the inner IPv6 source lies
in that tunnel's /64 or routed prefixes (RFC 4213 section 3.6 ingress checks, and
what real brokers do). Everything else is dropped and counted by reason
(see registry.DROP_REASONS).

The broker's own tunnel address sits on the TUN device, so the kernel answers
ICMPv6 echo to it -- the keepalive target of a client.
"""

import os
import select
import socket
import struct
import subprocess

from tests.peer_util import Workers, close_fds, open_tun, set_up_tun, tunnels_tun_lines

IPPROTO_IPV6_IN_IPV4 = 41


class Drop(Exception):
    """A packet is dropped; .reason is one of registry.DROP_REASONS."""

    def __init__(self, reason, tunnel=None, source=None):
        super().__init__(reason)
        self.reason = reason
        self.tunnel = tunnel
        self.source = source


def parse_ipv4_41(pkt):
    """IPv4 datagram as a raw socket hands it over -> (source str, payload bytes).

    Raises Drop('truncated' | 'not_ipv6') on malformed input ('not_ipv6' also
    stands for "this is not an IPv4 protocol-41 packet at all").
    """
    if len(pkt) < 20:
        raise Drop("truncated")
    vihl = pkt[0]
    if vihl >> 4 != 4:
        raise Drop("not_ipv6")
    ihl = (vihl & 0x0F) * 4
    if ihl < 20 or len(pkt) < ihl:
        raise Drop("truncated")
    total = struct.unpack_from("!H", pkt, 2)[0]
    if total < ihl or total > len(pkt):
        raise Drop("truncated")
    if pkt[9] != IPPROTO_IPV6_IN_IPV4:
        raise Drop("not_ipv6")
    src = socket.inet_ntop(socket.AF_INET, bytes(pkt[12:16]))
    return src, bytes(pkt[ihl:total])


def parse_ipv6(pkt):
    """IPv6 packet -> (src 16 bytes, dst 16 bytes, packet trimmed to its length).

    Raises Drop('truncated' | 'not_ipv6')."""
    if len(pkt) < 1 or pkt[0] >> 4 != 6:
        raise Drop("not_ipv6")
    if len(pkt) < 40:
        raise Drop("truncated")
    plen = struct.unpack_from("!H", pkt, 4)[0]
    if 40 + plen > len(pkt):
        raise Drop("truncated")
    return bytes(pkt[8:24]), bytes(pkt[24:40]), bytes(pkt[: 40 + plen])


def classify_inbound(registry, pkt):
    """Raw-socket packet -> (tunnel, inner IPv6 packet) to write to TUN; raises Drop
    (with .tunnel and .source filled in where known, for the counters)."""
    src, payload = parse_ipv4_41(pkt)
    candidates = registry.by_endpoint.get(src)
    if not candidates:
        raise Drop("unknown_source", None, src)
    try:
        isrc, _idst, inner = parse_ipv6(payload)
    except Drop as d:
        raise Drop(d.reason, candidates[0], src)
    for t in candidates:
        if registry.tunnel_owns_src(t, isrc):
            return t, inner
    raise Drop("spoofed_source", candidates[0], src)


def classify_outbound(registry, pkt):
    """TUN packet -> (tunnel, endpoint str, packet) to send; raises Drop."""
    _src, dst, inner = parse_ipv6(pkt)
    if dst[0] == 0xFF:
        raise Drop("multicast")
    t = registry.tunnel_for_dst(dst)
    if t is None:
        raise Drop("no_tunnel")
    ep = t.endpoint
    if ep is None:
        raise Drop("no_endpoint", t)
    return t, ep, inner


def configure_tun(config, run=subprocess.run):
    """Addresses and routes of the PoP's TUN device (run inside the broker namespace)."""
    tunnels = [(t.server_v6, t.client_v6.network.prefixlen, t.routed) for t in config.tunnels()]
    set_up_tun(config.tun_name, tunnels_tun_lines(config.tun_name, config.tun_mtu, tunnels), run=run)


class PopEngine(Workers):
    """The data-plane loop, in its own thread."""

    def __init__(self, registry, tun_fd, raw_sock):
        self.registry = registry
        self.tun_fd = tun_fd
        self.raw = raw_sock
        self.raw.setblocking(False)
        self.init_workers()

    @classmethod
    def open(cls, registry):
        cfg = registry.config
        fd = open_tun(cfg.tun_name)
        try:
            configure_tun(cfg)
            raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_IPV6_IN_IPV4)
            raw.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 64)
        except Exception:
            os.close(fd)
            raise
        return cls(registry, fd, raw)

    def start(self):
        self.start_worker(self.run, "pop")

    def stop(self):
        self.stop_workers()
        self.close_wake()
        close_fds(self.tun_fd)
        self.raw.close()

    def run(self):
        poller = select.poll()
        poller.register(self.tun_fd, select.POLLIN)
        poller.register(self.raw.fileno(), select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        while not self._stop:
            for fd, _ev in poller.poll(1000):
                if fd == self.tun_fd:
                    self._drain_tun()
                elif fd == self.raw.fileno():
                    self._drain_raw()

    def _drain_tun(self):
        reg = self.registry
        for _ in range(256):
            try:
                pkt = os.read(self.tun_fd, 65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            if not pkt:
                return
            try:
                t, ep, inner = classify_outbound(reg, pkt)
            except Drop as d:
                reg.count_drop(d.reason, d.tunnel, d.source)
                continue
            try:
                self.raw.sendto(inner, (ep, 0))
            except OSError:
                reg.count_drop("send_error", t, ep)
                continue
            reg.count_tx(t, len(inner))

    def _drain_raw(self):
        reg = self.registry
        for _ in range(256):
            try:
                pkt = self.raw.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            try:
                t, inner = classify_inbound(reg, pkt)
            except Drop as d:
                reg.count_drop(d.reason, d.tunnel, d.source)
                continue
            try:
                os.write(self.tun_fd, inner)
            except OSError:
                reg.count_drop("send_error", t, None)
                continue
            reg.count_rx(t, len(inner))
