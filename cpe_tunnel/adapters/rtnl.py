# A small rtnetlink client of our own: message and attribute encoding, decoding of the
# replies the Netlink adapter needs (links, addresses, routes), and a request/ack
# socket. Replaces pyroute2 in the daemon (pyroute2 and the asyncio/ssl it imports
# cost ~14 MiB of RSS on a 64-256 MB router).
#
# CPython only (adapters need not run under MicroPython). Replies are decoded
# defensively: a malformed one raises RemoteProtocolError, never IndexError or
# struct.error. References: rtnetlink(7), netlink(7) and the kernel's uapi headers
# (linux/rtnetlink.h, if_link.h, if_addr.h, if_tunnel.h).

import errno
import os
import random
import socket
import struct
import threading

from cpe_tunnel.core.errors import RemoteProtocolError

__all__ = ["NetlinkError", "RtnlSocket", "attr", "decode_addr", "decode_link", "decode_route", "nested",
           "nlmsg", "parse_attrs", "split_messages"]

# netlink message types and flags
NLMSG_NOOP = 1
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLMSG_OVERRUN = 4

NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_ACK = 0x4
NLM_F_DUMP = 0x300
NLM_F_REPLACE = 0x100
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400

RTM_NEWLINK = 16
RTM_DELLINK = 17
RTM_GETLINK = 18
RTM_NEWADDR = 20
RTM_DELADDR = 21
RTM_GETADDR = 22
RTM_NEWROUTE = 24
RTM_DELROUTE = 25
RTM_GETROUTE = 26

# link attributes
IFLA_ADDRESS = 1
IFLA_IFNAME = 3
IFLA_MTU = 4
IFLA_STATS = 7
IFLA_LINKINFO = 18
IFLA_STATS64 = 23
IFLA_INFO_KIND = 1
IFLA_INFO_DATA = 2
IFLA_IPTUN_LINK = 1
IFLA_IPTUN_LOCAL = 2
IFLA_IPTUN_REMOTE = 3
IFLA_IPTUN_TTL = 4
IFLA_IPTUN_TOS = 5
IFLA_IPTUN_ENCAP_LIMIT = 6
IFLA_IPTUN_FLOWINFO = 7
IFLA_IPTUN_FLAGS = 8
IFLA_IPTUN_PROTO = 9
IFLA_IPTUN_PMTUDISC = 10

# address attributes
IFA_ADDRESS = 1
IFA_LOCAL = 2
IFA_LABEL = 3
IFA_FLAGS = 8

# route attributes and values
RTA_DST = 1
RTA_OIF = 4
RTA_GATEWAY = 5
RTA_PRIORITY = 6
RTA_MULTIPATH = 9
RTA_TABLE = 15
RT_TABLE_UNSPEC = 0
RT_TABLE_MAIN = 254
RTPROT_UNSPEC = 0
RTPROT_STATIC = 4
RT_SCOPE_UNIVERSE = 0
RTN_UNSPEC = 0
RTN_UNICAST = 1
RTN_UNREACHABLE = 7

NLA_TYPE_MASK = 0x3FFF  # without NLA_F_NESTED / NLA_F_NET_BYTEORDER

_HDR = struct.Struct("=IHHII")  # nlmsghdr: len, type, flags, seq, pid
_IFINFO = struct.Struct("=BxHiII")  # family, type, index, flags, change
_IFADDR = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
_RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, proto, scope, type, flags
_RTNH = struct.Struct("=HBBi")  # rtnexthop: len, flags, hops, ifindex
_ATTR = struct.Struct("=HH")

# struct rtnl_link_stats(64): the leading fields we report, in kernel order
_STATS_FIELDS = ("rx_packets", "tx_packets", "rx_bytes", "tx_bytes", "rx_errors", "tx_errors",
                 "rx_dropped", "tx_dropped")


class NetlinkError(OSError):
    """The kernel refused a request (NLMSG_ERROR with a negative code), or the exchange
    failed (timeout, malformed reply); .errno is the code."""

    def __init__(self, code, what=None):
        super().__init__(code, what or os.strerror(code))
        self.code = code


# ------------------------------------------------------------------------- encoding

def _pad(n):
    return (n + 3) & ~3


def attr(atype, payload):
    """One rtattr: 4-byte header (length without padding, type), payload, zero
    padding to a multiple of 4."""
    n = 4 + len(payload)
    if n > 0xFFFF:
        raise ValueError("netlink attribute payload of %d bytes is too long" % len(payload))
    return _ATTR.pack(n, atype) + payload + b"\0" * (_pad(n) - n)


def attr_u8(atype, v):
    return attr(atype, struct.pack("=B", v))


def attr_u32(atype, v):
    return attr(atype, struct.pack("=I", v))


def attr_str(atype, text):
    """A NUL-terminated string attribute (IFLA_IFNAME, IFLA_INFO_KIND)."""
    return attr(atype, text.encode("utf-8") + b"\0")


def attr_ip(atype, family, text):
    return attr(atype, socket.inet_pton(family, text))


def nested(atype, *attrs):
    """An attribute holding attributes (sent without NLA_F_NESTED, as iproute2 does for
    IFLA_LINKINFO; the kernel parses these leniently)."""
    return attr(atype, b"".join(attrs))


def nlmsg(mtype, flags, seq, pid, body):
    return _HDR.pack(16 + len(body), mtype, flags, seq, pid) + body


def ifinfomsg(family=0, index=0, flags=0, change=0):
    return _IFINFO.pack(family, 0, index, flags, change)


def ifaddrmsg(family, prefixlen, flags, scope, index):
    return _IFADDR.pack(family, prefixlen, flags, scope, index)


def rtmsg(family, dst_len, table, protocol, scope, rtype):
    return _RTMSG.pack(family, dst_len, 0, 0, table, protocol, scope, rtype, 0)


# ------------------------------------------------------------------------- decoding

def split_messages(data):
    """A datagram -> list of (type, flags, seq, pid, body bytes)."""
    data = bytes(data)
    out = []
    off = 0
    n = len(data)
    while off + 16 <= n:
        mlen, mtype, mflags, seq, pid = _HDR.unpack_from(data, off)
        if mlen < 16 or off + mlen > n:
            raise RemoteProtocolError("netlink message of length %d does not fit its datagram" % mlen)
        out.append((mtype, mflags, seq, pid, data[off + 16:off + mlen]))
        off += _pad(mlen)
    if off < n and n - off >= 4:
        raise RemoteProtocolError("netlink datagram ends in a partial message header")
    return out


def parse_attrs(data, off=0, end=None):
    """rtattrs in data[off:end] -> {type: payload bytes} (first occurrence wins)."""
    if end is None:
        end = len(data)
    out = {}
    while off + 4 <= end:
        alen, atype = _ATTR.unpack_from(data, off)
        if alen < 4 or off + alen > end:
            raise RemoteProtocolError("netlink attribute of length %d overruns its message" % alen)
        atype &= NLA_TYPE_MASK
        if atype not in out:
            out[atype] = bytes(data[off + 4:off + alen])
        off += _pad(alen)
    return out


def _int(b, fmt, what):
    need = struct.calcsize(fmt)
    if b is None:
        return None
    if len(b) < need:
        raise RemoteProtocolError("netlink %s attribute of %d bytes, want %d" % (what, len(b), need))
    return struct.unpack_from(fmt, b, 0)[0]


def u8(b, what="u8"):
    return _int(b, "=B", what)


def u16(b, what="u16"):
    return _int(b, "=H", what)


def u32(b, what="u32"):
    return _int(b, "=I", what)


def cstr(b, what="name"):
    if b is None:
        return None
    b = b.split(b"\0", 1)[0]
    try:
        return b.decode("utf-8")
    except UnicodeError:
        raise RemoteProtocolError("netlink %s is not UTF-8" % what)


def ip_text(b, family, what="address"):
    want = 4 if family == socket.AF_INET else 16
    if b is None:
        return None
    if len(b) != want:
        raise RemoteProtocolError("netlink %s of %d bytes, want %d" % (what, len(b), want))
    return socket.inet_ntop(family, b)


def _stats(b, fmt):
    size = struct.calcsize(fmt)
    if len(b) < size * len(_STATS_FIELDS):
        raise RemoteProtocolError("netlink link statistics too short (%d bytes)" % len(b))
    vals = struct.unpack_from("=" + fmt[-1] * len(_STATS_FIELDS), b, 0)
    return dict(zip(_STATS_FIELDS, vals))


def decode_link(body):
    """An RTM_NEWLINK body -> dict(index, flags, ifname, mtu, kind, info_data, stats):
    kind is IFLA_INFO_KIND text or None, info_data {attr type: bytes} (IFLA_INFO_DATA,
    {} when absent), stats a dict of _STATS_FIELDS (IFLA_STATS64, else IFLA_STATS) or
    None."""
    if len(body) < _IFINFO.size:
        raise RemoteProtocolError("netlink link message too short")
    _fam, _t, index, flags, _ch = _IFINFO.unpack_from(body, 0)
    a = parse_attrs(body, _IFINFO.size)
    kind = None
    data = {}
    li = a.get(IFLA_LINKINFO)
    if li is not None:
        info = parse_attrs(li)
        kind = cstr(info.get(IFLA_INFO_KIND), "link kind")
        if info.get(IFLA_INFO_DATA) is not None:
            data = parse_attrs(info[IFLA_INFO_DATA])
    stats = None
    if a.get(IFLA_STATS64) is not None:
        stats = _stats(a[IFLA_STATS64], "=Q")
    elif a.get(IFLA_STATS) is not None:
        stats = _stats(a[IFLA_STATS], "=I")
    return {"index": index, "flags": flags, "ifname": cstr(a.get(IFLA_IFNAME), "interface name"),
            "mtu": u32(a.get(IFLA_MTU), "MTU"), "kind": kind, "info_data": data, "stats": stats}


def decode_addr(body):
    """An RTM_NEWADDR body -> dict(family, prefixlen, flags, scope, index, address,
    local): flags is IFA_FLAGS (32 bits) when present, else the 8-bit ifa_flags;
    address / local are text or None."""
    if len(body) < _IFADDR.size:
        raise RemoteProtocolError("netlink address message too short")
    fam, plen, fl, scope, index = _IFADDR.unpack_from(body, 0)
    a = parse_attrs(body, _IFADDR.size)
    xf = u32(a.get(IFA_FLAGS), "IFA_FLAGS")
    out = {"family": fam, "prefixlen": plen, "flags": fl if xf is None else xf, "scope": scope,
           "index": index, "address": None, "local": None}
    if fam in (socket.AF_INET, socket.AF_INET6):
        out["address"] = ip_text(a.get(IFA_ADDRESS), fam)
        out["local"] = ip_text(a.get(IFA_LOCAL), fam)
    return out


def decode_route(body):
    """An RTM_NEWROUTE body -> dict(family, dst_len, table, type, priority, oif,
    gateway, multipath): table is RTA_TABLE when present; gateway text or None;
    multipath a list of (oif, gateway) from RTA_MULTIPATH ([] without it)."""
    if len(body) < _RTMSG.size:
        raise RemoteProtocolError("netlink route message too short")
    fam, dlen, _sl, _tos, table, _pr, _sc, rtype, _f = _RTMSG.unpack_from(body, 0)
    a = parse_attrs(body, _RTMSG.size)
    ipfam = fam if fam in (socket.AF_INET, socket.AF_INET6) else None
    t = u32(a.get(RTA_TABLE), "RTA_TABLE")
    out = {"family": fam, "dst_len": dlen, "table": table if t is None else t, "type": rtype,
           "priority": u32(a.get(RTA_PRIORITY), "RTA_PRIORITY") or 0, "oif": u32(a.get(RTA_OIF), "RTA_OIF"),
           "gateway": ip_text(a.get(RTA_GATEWAY), ipfam, "gateway") if ipfam else None, "multipath": []}
    mp = a.get(RTA_MULTIPATH)
    off = 0
    while mp is not None and off + _RTNH.size <= len(mp):
        nlen, _fl, _hops, ifindex = _RTNH.unpack_from(mp, off)
        if nlen < _RTNH.size or off + nlen > len(mp):
            raise RemoteProtocolError("netlink multipath next hop of length %d overruns its route" % nlen)
        na = parse_attrs(mp, off + _RTNH.size, off + nlen)
        gw = ip_text(na.get(RTA_GATEWAY), ipfam, "gateway") if ipfam else None
        out["multipath"].append((ifindex, gw))
        off += _pad(nlen)
    return out


# --------------------------------------------------------------------------- socket

class RtnlSocket:
    """A NETLINK_ROUTE socket for request/reply exchanges (no multicast groups).

    make: a function returning the bound socket (so the caller can open it inside a
    network namespace; see netlink.in_netns); default: a plain socket here.
    request() sends one message and collects the replies with its sequence number;
    calls from several threads are serialised."""

    def __init__(self, make=None, timeout=5.0):
        self._sock = (make or open_socket)()
        self._sock.settimeout(timeout)
        self.pid = self._sock.getsockname()[0]
        self._seq = random.getrandbits(31) or 1
        self._buf = bytearray(1 << 16)
        self._lock = threading.Lock()  # one exchange at a time (threads share an object)

    def fileno(self):
        return self._sock.fileno()

    def _recv(self):
        flags = socket.MSG_PEEK | socket.MSG_TRUNC
        n = self._sock.recv_into(self._buf, len(self._buf), flags)
        if n > len(self._buf):
            self._buf = bytearray(n)
        n = self._sock.recv_into(self._buf, len(self._buf))
        return memoryview(self._buf)[:n]

    def request(self, mtype, flags, body, dump=False):
        """Send one request; return the reply messages as a list of (type, body bytes).
        dump: NLM_F_DUMP, read the multipart answer up to NLMSG_DONE. Otherwise the
        request carries NLM_F_ACK and the answer ends with the kernel's ack. A kernel
        error raises NetlinkError with its (positive) errno."""
        with self._lock:
            return self._request(mtype, flags, body, dump)

    def _request(self, mtype, flags, body, dump):
        if self._sock is None:
            raise NetlinkError(errno.EBADF, "netlink socket is closed")
        self._seq = (self._seq % 0x7FFFFFFF) + 1
        seq = self._seq
        flags |= NLM_F_REQUEST | (NLM_F_DUMP if dump else NLM_F_ACK)
        out = []
        try:
            self._sock.send(nlmsg(mtype, flags, seq, 0, body))
            while True:
                try:
                    msgs = split_messages(self._recv())
                except RemoteProtocolError as e:
                    raise NetlinkError(errno.EPROTO, "malformed netlink reply: %s" % e.reason)
                for mt, _mf, mseq, _pid, mbody in msgs:
                    if mseq != seq:
                        continue  # a late answer to an earlier (timed out) request
                    if mt == NLMSG_ERROR:
                        if len(mbody) < 4:
                            raise NetlinkError(errno.EPROTO, "netlink error message too short")
                        code = -struct.unpack_from("=i", mbody, 0)[0]
                        if code:
                            raise NetlinkError(code if code > 0 else errno.EPROTO)
                        return out  # the ack
                    if mt == NLMSG_DONE:
                        if len(mbody) >= 4:
                            code = -struct.unpack_from("=i", mbody, 0)[0]
                            if code > 0:
                                raise NetlinkError(code)
                        return out
                    if mt in (NLMSG_NOOP, NLMSG_OVERRUN):
                        continue
                    out.append((mt, mbody))
        except socket.timeout:
            raise NetlinkError(errno.ETIMEDOUT, "no answer from the kernel over netlink")

    def close(self):
        s, self._sock = self._sock, None
        if s is not None:
            s.close()


def open_socket():
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | getattr(socket, "SOCK_CLOEXEC", 0),
                      socket.NETLINK_ROUTE)
    try:
        s.bind((0, 0))
    except BaseException:
        s.close()
        raise
    return s
