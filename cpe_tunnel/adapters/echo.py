"""ICMPv6 (and, for v4v6 tunnels, ICMP) echo sockets for tunnel keepalives (CPython).

The socket is bound to the tunnel device, so the echo request leaves through the tunnel
whether the device is a kernel sit/ip6tnl link or our userspace TUN device, and only echo
replies arriving on that device are read. Scheduling is cpe_tunnel.core.keepalive's job.
"""

import socket

from cpe_tunnel.adapters.lan import RawSocket, addr_text, bound_icmp6_socket, bound_raw_socket, check_ifname
from cpe_tunnel.core.addr import ip4_aton, ip4_ntoa, ip6_aton, ip6_ntoa
from cpe_tunnel.core.errors import RemoteProtocolError
from cpe_tunnel.core.icmp4 import ECHO_REPLY as ECHO_REPLY4
from cpe_tunnel.core.icmp4 import echo_request4, parse_echo_packet4
from cpe_tunnel.core.icmp6 import ECHO_REPLY, echo_request, parse_echo

PAYLOAD = b"cpe-tunnel keepalive"


class _EchoBase(RawSocket):
    """The interface both echo sockets offer: send(seq), read() -> [seq], fileno(), close().
    A subclass sets _ADDR_LEN/_FAMILY/_aton and, in _open(), self._dest and self.sock, and
    answers _reply_seq(data, addr): the sequence number of an echo reply from the peer with
    our identifier, else None."""

    _ADDR_LEN = 16
    _FAMILY = "IPv6"

    def __init__(self, ifname, peer, ident, payload=PAYLOAD):
        self.ifname = check_ifname(ifname)
        self.peer = self._aton(peer) if isinstance(peer, str) else bytes(peer)
        if len(self.peer) != self._ADDR_LEN:
            raise ValueError("peer must be an %s address" % self._FAMILY)
        if not 0 <= ident <= 0xFFFF:
            raise ValueError("echo identifier must be 0..65535")
        self.ident = ident
        self.payload = payload
        self._open()

    def read(self):
        """Sequence numbers of the echo replies waiting that come from the peer and carry
        our identifier; anything else is dropped."""
        out = []
        for data, addr in self.drain(self.sock.recvfrom, 2048):
            seq = self._reply_seq(data, addr)
            if seq is not None:
                out.append(seq)
        return out


class EchoSocket(_EchoBase):
    """ICMPv6 echo socket; peer: the far end's IPv6 address inside the tunnel (16 bytes or
    text)."""

    _aton = staticmethod(ip6_aton)

    def _open(self):
        self.ifindex = socket.if_nametoindex(self.ifname)
        self._dest = (ip6_ntoa(self.peer), 0, 0, self.ifindex)
        self.sock = bound_icmp6_socket(self.ifname, (ECHO_REPLY,))

    def send(self, seq):
        """Send echo request seq to the peer (checksum by the kernel). OSError (device
        down, no route) is left to the caller."""
        self.sock.sendto(echo_request(self.ident, seq, self.payload), self._dest)

    def _reply_seq(self, data, addr):
        try:
            if ip6_aton(addr_text(addr[0])) != self.peer:
                return None
            typ, ident, seq, _payload = parse_echo(data)
        except (RemoteProtocolError, ValueError):
            return None
        return seq if typ == ECHO_REPLY and ident == self.ident else None


class EchoSocket4(_EchoBase):
    """ICMP (IPv4) echo socket for the keepalive of an IPv4-in-IPv6 (v4v6) tunnel: the
    same interface as EchoSocket. A raw IPPROTO_ICMP socket bound to the tunnel device;
    requests carry our own checksum (the kernel computes none for ICMPv4), replies are
    matched on source, identifier and checksum. peer: the broker's IPv4 address inside the
    tunnel (4 bytes or text)."""

    _ADDR_LEN = 4
    _FAMILY = "IPv4"
    _aton = staticmethod(ip4_aton)

    def _open(self):
        self._dest = (ip4_ntoa(self.peer), 0)
        self.sock = bound_raw_socket(socket.AF_INET, socket.IPPROTO_ICMP, self.ifname)

    def send(self, seq):
        self.sock.sendto(echo_request4(self.ident, seq, self.payload), self._dest)

    def _reply_seq(self, data, _addr):
        try:
            src, _dst, typ, ident, seq, _payload = parse_echo_packet4(data)
        except RemoteProtocolError:
            return None
        return seq if src == self.peer and typ == ECHO_REPLY4 and ident == self.ident else None


def echo_socket(ifname, peer, ident):
    """EchoSocket or EchoSocket4, after the peer address (text or bytes) family."""
    if (isinstance(peer, str) and ":" not in peer) or (not isinstance(peer, str) and len(peer) == 4):
        return EchoSocket4(ifname, peer, ident)
    return EchoSocket(ifname, peer, ident)
