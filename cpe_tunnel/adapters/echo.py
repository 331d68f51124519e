"""ICMPv6 (and, for v4v6 tunnels, ICMP) echo sockets for tunnel keepalives (CPython).

The socket is bound to the tunnel device, so the echo request leaves through the tunnel
whether the device is a kernel sit/ip6tnl link or our userspace TUN device, and only echo
replies arriving on that device are read. Scheduling is cpe_tunnel.core.keepalive's job.
"""

import socket

from cpe_tunnel.adapters.lan import MAX_DRAIN, addr_text, bound_icmp6_socket, check_ifname
from cpe_tunnel.core.addr import ip4_aton, ip4_ntoa, ip6_aton, ip6_ntoa
from cpe_tunnel.core.errors import RemoteProtocolError
from cpe_tunnel.core.icmp4 import ECHO_REPLY as ECHO_REPLY4
from cpe_tunnel.core.icmp4 import echo_request4, parse_echo_packet4
from cpe_tunnel.core.icmp6 import ECHO_REPLY, echo_request, parse_echo

PAYLOAD = b"cpe-tunnel keepalive"


class EchoSocket:
    def __init__(self, ifname, peer, ident, payload=PAYLOAD):
        """peer: the far end's IPv6 address inside the tunnel (16 bytes or text)."""
        self.ifname = check_ifname(ifname)
        self.peer = ip6_aton(peer) if isinstance(peer, str) else bytes(peer)
        if len(self.peer) != 16:
            raise ValueError("peer must be an IPv6 address")
        if not 0 <= ident <= 0xFFFF:
            raise ValueError("echo identifier must be 0..65535")
        self.ident = ident
        self.payload = payload
        self.ifindex = socket.if_nametoindex(ifname)
        self._dest = (ip6_ntoa(self.peer), 0, 0, self.ifindex)
        self.sock = bound_icmp6_socket(ifname, (ECHO_REPLY,))

    def fileno(self):
        return self.sock.fileno()

    def send(self, seq):
        """Send echo request seq to the peer (checksum by the kernel). OSError (device
        down, no route) is left to the caller."""
        self.sock.sendto(echo_request(self.ident, seq, self.payload), self._dest)

    def read(self):
        """Sequence numbers of the echo replies waiting that come from the peer and carry
        our identifier; anything else is dropped."""
        out = []
        for _ in range(MAX_DRAIN):
            try:
                data, addr = self.sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                break
            try:
                if ip6_aton(addr_text(addr[0])) != self.peer:
                    continue
                typ, ident, seq, _payload = parse_echo(data)
            except (RemoteProtocolError, ValueError):
                continue
            if typ == ECHO_REPLY and ident == self.ident:
                out.append(seq)
        return out

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class EchoSocket4:
    """ICMP (IPv4) echo socket for the keepalive of an IPv4-in-IPv6 (v4v6) tunnel: the
    same interface as EchoSocket. A raw IPPROTO_ICMP socket bound to the tunnel device;
    requests carry our own checksum (the kernel computes none for ICMPv4), replies are
    matched on source, identifier and checksum."""

    def __init__(self, ifname, peer, ident, payload=PAYLOAD):
        """peer: the broker's IPv4 address inside the tunnel (4 bytes or text)."""
        self.ifname = check_ifname(ifname)
        self.peer = ip4_aton(peer) if isinstance(peer, str) else bytes(peer)
        if len(self.peer) != 4:
            raise ValueError("peer must be an IPv4 address")
        if not 0 <= ident <= 0xFFFF:
            raise ValueError("echo identifier must be 0..65535")
        self.ident = ident
        self.payload = payload
        self._dest = (ip4_ntoa(self.peer), 0)
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
            s.setblocking(False)
        except BaseException:
            s.close()
            raise
        self.sock = s

    def fileno(self):
        return self.sock.fileno()

    def send(self, seq):
        self.sock.sendto(echo_request4(self.ident, seq, self.payload), self._dest)

    def read(self):
        out = []
        for _ in range(MAX_DRAIN):
            try:
                data = self.sock.recv(2048)
            except (BlockingIOError, InterruptedError):
                break
            try:
                src, _dst, typ, ident, seq, _payload = parse_echo_packet4(data)
            except RemoteProtocolError:
                continue
            if src == self.peer and typ == ECHO_REPLY4 and ident == self.ident:
                out.append(seq)
        return out

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def echo_socket(ifname, peer, ident):
    """EchoSocket or EchoSocket4, after the peer address (text or bytes) family."""
    if (isinstance(peer, str) and ":" not in peer) or (not isinstance(peer, str) and len(peer) == 4):
        return EchoSocket4(ifname, peer, ident)
    return EchoSocket(ifname, peer, ident)
