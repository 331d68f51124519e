# IPv4 / IPv6 address helpers for the core (MicroPython has no ipaddress module).
# Addresses are bytes (4 or 16 long); text forms follow RFC 5952 for IPv6.
# Every parser raises ValueError with a readable reason on bad input.

import struct

# Ranges where an IPv4 address is not reachable from the Internet (RFC 6890 and
# friends): an update sent from such an address leaves through a NAT, so the broker
# must take the source address it sees instead of the one we know.
_PRIVATE4 = (
    ("0.0.0.0", 8),
    ("10.0.0.0", 8),
    ("100.64.0.0", 10),  # RFC 6598 shared address space (carrier-grade NAT)
    ("127.0.0.0", 8),
    ("169.254.0.0", 16),
    ("172.16.0.0", 12),
    ("192.0.0.0", 24),  # RFC 6890 IETF protocol assignments (DS-Lite B4 192.0.0.2 ...)
    ("192.168.0.0", 16),
    ("198.18.0.0", 15),
    ("224.0.0.0", 4),
    ("240.0.0.0", 4),
)


def ip4_aton(text):
    if not isinstance(text, str):
        raise ValueError("IPv4 address must be text")
    parts = text.split(".")
    if len(parts) != 4:
        raise ValueError("'%s' is not an IPv4 address (expected four numbers like 192.0.2.1)" % text)
    out = bytearray(4)
    for i in range(4):
        p = parts[i]
        if not p or len(p) > 3 or not p.isdigit():
            raise ValueError("'%s' is not an IPv4 address (expected four numbers like 192.0.2.1)" % text)
        if len(p) > 1 and p[0] == "0":
            raise ValueError("'%s' is not an IPv4 address (leading zeros are ambiguous)" % text)
        v = int(p)
        if v > 255:
            raise ValueError("'%s' is not an IPv4 address (%d is above 255)" % (text, v))
        out[i] = v
    return bytes(out)


def ip4_ntoa(b):
    if len(b) != 4:
        raise ValueError("an IPv4 address is 4 bytes, got %d" % len(b))
    return "%d.%d.%d.%d" % (b[0], b[1], b[2], b[3])


def _hex16(s, text):
    if not s or len(s) > 4:
        raise ValueError("'%s' is not an IPv6 address" % text)
    for c in s:
        if c not in "0123456789abcdefABCDEF":
            raise ValueError("'%s' is not an IPv6 address" % text)
    return int(s, 16)


def ip6_aton(text):
    if not isinstance(text, str):
        raise ValueError("IPv6 address must be text")
    if "%" in text:
        raise ValueError("'%s': a zone index (%%) is not allowed here" % text)
    if len(text) > 45 or text.count("::") > 1 or ":::" in text:
        raise ValueError("'%s' is not an IPv6 address" % text)
    tail4 = b""
    s = text
    last = s.rfind(":")
    if last >= 0 and "." in s[last + 1:]:
        tail4 = ip4_aton(s[last + 1:])
        s = s[:last + 1] + "0:0"
    if "::" in s:
        left, right = s.split("::")
        lparts = left.split(":") if left else []
        rparts = right.split(":") if right else []
        if len(lparts) + len(rparts) > 7:
            raise ValueError("'%s' is not an IPv6 address (too many groups)" % text)
        groups = [_hex16(p, text) for p in lparts] + [0] * (8 - len(lparts) - len(rparts)) + [
            _hex16(p, text) for p in rparts
        ]
    else:
        parts = s.split(":")
        if len(parts) != 8:
            raise ValueError("'%s' is not an IPv6 address (expected 8 groups or ::)" % text)
        groups = [_hex16(p, text) for p in parts]
    b = struct.pack("!8H", *groups)
    if tail4:
        b = b[:12] + tail4
    return b


def ip6_ntoa(b):
    if len(b) != 16:
        raise ValueError("an IPv6 address is 16 bytes, got %d" % len(b))
    g = struct.unpack("!8H", bytes(b))
    # RFC 5952: the longest run (length >= 2) of zero groups becomes ::, first one wins.
    best, best_len, i = -1, 0, 0
    while i < 8:
        if g[i] == 0:
            j = i
            while j < 8 and g[j] == 0:
                j += 1
            if j - i > best_len and j - i >= 2:
                best, best_len = i, j - i
            i = j
        else:
            i += 1
    if best < 0:
        return ":".join("%x" % x for x in g)
    left = ":".join("%x" % x for x in g[:best])
    right = ":".join("%x" % x for x in g[best + best_len:])
    return left + "::" + right


def _split_plen(text, maxlen):
    if not isinstance(text, str):
        raise ValueError("prefix must be text")
    if "/" not in text:
        return text, None
    a, p = text.split("/", 1)
    if not p.isdigit() or len(p) > 3 or int(p) > maxlen:
        raise ValueError("'%s': prefix length must be a number from 0 to %d" % (text, maxlen))
    return a, int(p)


def parse_addr6_plen(text, default_plen=None):
    """'2001:db8::2/64' -> (16 bytes, 64). Host bits are kept (it is an address)."""
    a, plen = _split_plen(text, 128)
    if plen is None:
        if default_plen is None:
            raise ValueError("'%s' needs a prefix length (like 2001:db8::2/64)" % text)
        plen = default_plen
    return ip6_aton(a), plen


def parse_prefix6(text):
    """'2001:db8:1234::/48' -> (network bytes, 48). Host bits must be zero."""
    b, plen = parse_addr6_plen(text)
    if mask(b, plen) != b:
        raise ValueError("'%s' has bits set after the first %d (did you mean %s/%d?)" % (
            text, plen, ip6_ntoa(mask(b, plen)), plen))
    return b, plen


def parse_prefix4(text):
    a, plen = _split_plen(text, 32)
    if plen is None:
        plen = 32
    b = ip4_aton(a)
    if mask(b, plen) != b:
        raise ValueError("'%s' has bits set after the first %d (did you mean %s/%d?)" % (
            text, plen, ip4_ntoa(mask(b, plen)), plen))
    return b, plen


def mask(b, plen):
    """Keep the first plen bits of b, zero the rest."""
    out = bytearray(b)
    for i in range(len(out)):
        bits = plen - 8 * i
        if bits >= 8:
            continue
        if bits <= 0:
            out[i] = 0
        else:
            out[i] &= (0xFF << (8 - bits)) & 0xFF
    return bytes(out)


def in_prefix(addr, net, plen):
    return len(addr) == len(net) and mask(addr, plen) == mask(net, plen)


def ip4_is_private(addr, extra=()):
    """True when addr (4 bytes) is not a global unicast address, or lies in one of
    the extra (net bytes, plen) ranges the configuration names."""
    for net, plen in _PRIVATE4_B:
        if in_prefix(addr, net, plen):
            return True
    for net, plen in extra:
        if in_prefix(addr, net, plen):
            return True
    return False


_PRIVATE4_B = tuple((ip4_aton(a), p) for a, p in _PRIVATE4)


def subnet(prefix, plen, index, sublen=64):
    """The index-th /sublen inside prefix/plen (16 bytes). ValueError when it does not fit."""
    if sublen < plen:
        raise ValueError("a /%d does not fit in a /%d" % (sublen, plen))
    bits = sublen - plen
    if index < 0 or (bits < 31 and index >= (1 << bits)):
        raise ValueError("subnet %d does not fit in a /%d (%d available)" % (index, plen, 1 << bits))
    n = bytearray(mask(prefix, plen))
    # add index << (128 - sublen) into the address
    carry = index
    pos = sublen  # bit position just past the subnet field
    byte = (pos - 1) // 8
    shift = 7 - ((pos - 1) % 8)
    v = carry << shift
    while v and byte >= 0:
        s = n[byte] + (v & 0xFF)
        n[byte] = s & 0xFF
        v = (v >> 8) + (s >> 8)
        byte -= 1
    return bytes(n)


def with_iid(prefix64, iid):
    """prefix (16 bytes, first 64 bits used) + interface id (int)."""
    return bytes(prefix64[:8]) + struct.pack("!Q", iid)


def format_prefix6(b, plen):
    return "%s/%d" % (ip6_ntoa(b), plen)


def is_ip4(text):
    try:
        ip4_aton(text)
        return True
    except ValueError:
        return False


def is_ip6(text):
    try:
        ip6_aton(text)
        return True
    except ValueError:
        return False
