# Router Advertisement / Router Solicitation codec (RFC 4861 §4.1, §4.2, §4.6; RDNSS
# RFC 8106) and a sans-IO RA scheduler for one LAN interface (RFC 4861 §6.2,
# RFC 7084 L-13). MicroPython compatible: no time, no random, no sockets.
#
# Codec rules:
# - Messages are ICMPv6 messages without the IPv6 header; build_ra() leaves the checksum 0
#   (Linux computes it on raw ICMPv6 sockets).
# - Parsers are strict about option lengths (length 0 or an option running past the end is
#   an error, a known option with a wrong length is an error) and skip unknown options.
#   Every problem is a RemoteProtocolError with a readable reason.
#
# Scheduler rules (times are float seconds from the caller's monotonic clock):
# - Advertising starts with start(now), or the first set_prefixes() with a non-empty list.
# - Every multicast RA re-arms the periodic timer to a random value in
#   [MinRtrAdvInterval, MaxRtrAdvInterval] (§6.2.4). After start and after every change
#   of the advertised set (prefix added/removed/re-activated, default-router flag) the next
#   MAX_INITIAL_RTR_ADVERTISEMENTS (3) RAs use intervals capped at
#   MAX_INITIAL_RTR_ADVERT_INTERVAL (16 s); the first of them goes out at once.
#   Lifetime-only updates of an active prefix are not a change: they ride the next RA.
# - No two RAs leave closer than MIN_DELAY_BETWEEN_RAS (3 s) (§6.2.6, applied to all
#   multicast RAs). A Router Solicitation schedules an RA after a random 0..0.5 s
#   (MAX_RA_DELAY_TIME), or at last RA + 3 s + that delay when an RA went out less than
#   3 s ago; nothing is scheduled when an RA is already due by then. Solicited RAs are
#   multicast to all nodes (§6.2.6 allows it), so they also re-arm the periodic timer.
# - Active prefixes are advertised with the lifetimes last given (not decremented).
# - A prefix that leaves the active set is deprecated (RFC 7084 L-13, RFC 4862 §5.5.3 e):
#   preferred lifetime 0, valid lifetime min(last valid, 2 h) counting down in real time
#   from the moment it left. It stays in every RA until that countdown reaches 0 (at most
#   2 h), then it is dropped. At most MAX_DEPRECATED (8) deprecated prefixes are kept; the
#   oldest goes first. A deprecated prefix that comes back is active again.
# - stop(now) returns the final RA (router lifetime 0, every prefix with preferred 0 and
#   valid min(remaining, 2 h), RDNSS lifetime 0) and ends advertising (§6.2.5). Send it up
#   to MAX_FINAL_RTR_ADVERTISEMENTS times.

import struct

from cpe_tunnel.core.addr import format_prefix6, ip6_aton, mask
from cpe_tunnel.core.errors import ConfigError, LocalProtocolError, RemoteProtocolError

ND_ROUTER_SOLICIT = 133
ND_ROUTER_ADVERT = 134

OPT_SOURCE_LLADDR = 1
OPT_TARGET_LLADDR = 2
OPT_PREFIX_INFO = 3
OPT_REDIRECTED = 4
OPT_MTU = 5
OPT_RDNSS = 25

FLAG_MANAGED = 0x80
FLAG_OTHER = 0x40
PIO_ONLINK = 0x80
PIO_AUTONOMOUS = 0x40

# RFC 4861 §10 router constants
MAX_INITIAL_RTR_ADVERT_INTERVAL = 16
MAX_INITIAL_RTR_ADVERTISEMENTS = 3
MAX_FINAL_RTR_ADVERTISEMENTS = 3
MIN_DELAY_BETWEEN_RAS = 3
MAX_RA_DELAY_TIME = 0.5

INFINITE_LIFETIME = 0xFFFFFFFF
DEPRECATED_VALID_CAP = 7200  # two hours, RFC 7084 L-13
MAX_DEPRECATED = 8
MAX_RA_LEN = 1280 - 40  # must fit the IPv6 minimum MTU


def _int(v, lo, hi, what, exc=LocalProtocolError):
    if not isinstance(v, int) or isinstance(v, bool) or v < lo or v > hi:
        raise exc("%s must be an integer from %d to %d" % (what, lo, hi))
    return v


def _a16(a, what, exc=LocalProtocolError):
    if isinstance(a, str):
        try:
            return ip6_aton(a)
        except ValueError as e:
            raise exc("%s: %s" % (what, e))
    if not isinstance(a, (bytes, bytearray)) or len(a) != 16:
        raise exc("%s must be a 16-byte IPv6 address" % what)
    return bytes(a)


def _lladdr(ll, exc=LocalProtocolError):
    if not isinstance(ll, (bytes, bytearray)) or not 1 <= len(ll) <= 253:
        raise exc("link-layer address must be 1 to 253 bytes")
    return bytes(ll)


def _opt_lladdr(ll):
    n = 2 + len(ll)
    units = (n + 7) // 8
    return bytes((OPT_SOURCE_LLADDR, units)) + ll + bytes(units * 8 - n)


def build_ra(cur_hop_limit=64, managed=False, other=False, router_lifetime=1800, reachable=0,
             retrans=0, source_lladdr=None, mtu=None, prefixes=(), rdnss=(), rdnss_lifetime=None):
    """ICMPv6 Router Advertisement (checksum 0).
    prefixes: sequence of (prefix16, plen, onlink, autonomous, valid, preferred); bits after
    plen are cleared. rdnss: sequence of 16-byte (or text) addresses, sent in one RDNSS
    option with rdnss_lifetime (default 1800 = 3 x the default MaxRtrAdvInterval, RFC 8106).
    LocalProtocolError on values that do not fit or an RA larger than 1240 bytes."""
    _int(cur_hop_limit, 0, 255, "cur hop limit")
    _int(router_lifetime, 0, 0xFFFF, "router lifetime")
    _int(reachable, 0, 0xFFFFFFFF, "reachable time")
    _int(retrans, 0, 0xFFFFFFFF, "retrans timer")
    flags = (FLAG_MANAGED if managed else 0) | (FLAG_OTHER if other else 0)
    parts = [struct.pack("!BBHBBHII", ND_ROUTER_ADVERT, 0, 0, cur_hop_limit, flags,
                         router_lifetime, reachable, retrans)]
    if source_lladdr is not None:
        parts.append(_opt_lladdr(_lladdr(source_lladdr)))
    if mtu is not None:
        _int(mtu, 1280, 0xFFFFFFFF, "MTU")
        parts.append(struct.pack("!BBHI", OPT_MTU, 1, 0, mtu))
    for p in prefixes:
        if not isinstance(p, (tuple, list)) or len(p) != 6:
            raise LocalProtocolError("a prefix is (prefix16, plen, onlink, autonomous, valid, preferred)")
        net = _a16(p[0], "prefix")
        plen = _int(p[1], 0, 128, "prefix length")
        valid = _int(p[4], 0, 0xFFFFFFFF, "valid lifetime")
        pref = _int(p[5], 0, 0xFFFFFFFF, "preferred lifetime")
        if pref > valid:
            raise LocalProtocolError("preferred lifetime %d is above valid lifetime %d" % (pref, valid))
        pflags = (PIO_ONLINK if p[2] else 0) | (PIO_AUTONOMOUS if p[3] else 0)
        parts.append(struct.pack("!BBBBIII", OPT_PREFIX_INFO, 4, plen, pflags, valid, pref, 0))
        parts.append(mask(net, plen))
    if rdnss:
        lt = 1800 if rdnss_lifetime is None else rdnss_lifetime
        _int(lt, 0, 0xFFFFFFFF, "RDNSS lifetime")
        addrs = [_a16(a, "RDNSS address") for a in rdnss]
        if len(addrs) > 127:
            raise LocalProtocolError("too many RDNSS addresses (%d, at most 127)" % len(addrs))
        parts.append(struct.pack("!BBHI", OPT_RDNSS, 1 + 2 * len(addrs), 0, lt))
        for a in addrs:
            parts.append(a)
    msg = b"".join(parts)
    if len(msg) > MAX_RA_LEN:
        raise LocalProtocolError("RA of %d bytes does not fit in 1280 bytes; advertise fewer prefixes"
                                 % len(msg))
    return msg


def parse_options(data):
    """Split ND options: list of (type, body) where body is the option without its type
    and length bytes. Strict about lengths, tolerant of unknown types."""
    out = []
    n = len(data)
    i = 0
    while i < n:
        if n - i < 2:
            raise RemoteProtocolError("ND option header truncated at byte %d" % i)
        t = data[i]
        units = data[i + 1]
        if units == 0:
            raise RemoteProtocolError("ND option type %d has length 0" % t)
        end = i + 8 * units
        if end > n:
            raise RemoteProtocolError("ND option type %d (%d bytes) runs past the end of the message"
                                      % (t, 8 * units))
        out.append((t, bytes(data[i + 2:end])))
        i = end
    return out


def _check_msg(msg, type_, minlen, name):
    if not isinstance(msg, (bytes, bytearray, memoryview)):
        raise RemoteProtocolError("%s must be bytes" % name)
    if len(msg) < minlen:
        raise RemoteProtocolError("%s too short (%d bytes, need %d)" % (name, len(msg), minlen))
    if msg[0] != type_:
        raise RemoteProtocolError("ICMPv6 type %d is not a %s" % (msg[0], name))
    if msg[1] != 0:
        raise RemoteProtocolError("%s with code %d (must be 0)" % (name, msg[1]))


def _is_linklocal(a16):
    return a16[0] == 0xFE and (a16[1] & 0xC0) == 0x80


def _src(src):
    try:
        return _a16(src, "source address", RemoteProtocolError)
    except RemoteProtocolError:
        raise
    except Exception:
        raise RemoteProtocolError("source address is not an IPv6 address")


def parse_ra(msg, src=None):
    """Decode a Router Advertisement (ICMPv6 message) into a dict:
    cur_hop_limit, flags (raw byte), managed, other, router_lifetime, reachable, retrans,
    source_lladdr (bytes or None), mtu (int or None),
    prefixes: list of dicts {prefix (16 bytes), plen, onlink, autonomous, valid, preferred},
    rdnss: list of (addr16, lifetime), unknown_options: list of option types skipped.
    When src (16 bytes or text) is given it must be link-local (§6.1.2).
    The hop limit (must be 255) is the socket's job."""
    _check_msg(msg, ND_ROUTER_ADVERT, 16, "Router Advertisement")
    if src is not None and not _is_linklocal(_src(src)):
        raise RemoteProtocolError("Router Advertisement from a non-link-local source")
    chl, flags, rlt, reach, retrans = struct.unpack_from("!BBHII", msg, 4)
    r = {
        "cur_hop_limit": chl, "flags": flags, "managed": bool(flags & FLAG_MANAGED),
        "other": bool(flags & FLAG_OTHER), "router_lifetime": rlt, "reachable": reach,
        "retrans": retrans, "source_lladdr": None, "mtu": None, "prefixes": [], "rdnss": [],
        "unknown_options": [],
    }
    for t, body in parse_options(msg[16:]):
        if t == OPT_SOURCE_LLADDR:
            if r["source_lladdr"] is None:
                r["source_lladdr"] = body
        elif t == OPT_MTU:
            if len(body) != 6:
                raise RemoteProtocolError("MTU option must be 8 bytes, got %d" % (len(body) + 2))
            if r["mtu"] is None:
                r["mtu"] = struct.unpack_from("!I", body, 2)[0]
        elif t == OPT_PREFIX_INFO:
            if len(body) != 30:
                raise RemoteProtocolError("prefix information option must be 32 bytes, got %d"
                                          % (len(body) + 2))
            plen, pflags, valid, pref = struct.unpack_from("!BBII", body, 0)
            if plen > 128:
                raise RemoteProtocolError("prefix length %d is above 128" % plen)
            r["prefixes"].append({
                "prefix": body[14:30], "plen": plen, "onlink": bool(pflags & PIO_ONLINK),
                "autonomous": bool(pflags & PIO_AUTONOMOUS), "valid": valid, "preferred": pref,
            })
        elif t == OPT_RDNSS:
            if len(body) < 22 or (len(body) + 2 - 8) % 16 != 0:
                raise RemoteProtocolError("RDNSS option length %d is not 8 + 16n with n >= 1"
                                          % (len(body) + 2))
            lt = struct.unpack_from("!I", body, 2)[0]
            i = 6
            while i < len(body):
                r["rdnss"].append((body[i:i + 16], lt))
                i += 16
        else:
            r["unknown_options"].append(t)
    return r


def parse_rs(msg, src=None):
    """Decode a Router Solicitation: {source_lladdr (bytes or None), unknown_options}.
    When src is given and is the unspecified address, a source link-layer option is an
    error (§6.1.1)."""
    _check_msg(msg, ND_ROUTER_SOLICIT, 8, "Router Solicitation")
    r = {"source_lladdr": None, "unknown_options": []}
    for t, body in parse_options(msg[8:]):
        if t == OPT_SOURCE_LLADDR:
            if r["source_lladdr"] is None:
                r["source_lladdr"] = body
        else:
            r["unknown_options"].append(t)
    if src is not None and r["source_lladdr"] is not None and _src(src) == bytes(16):
        raise RemoteProtocolError("Router Solicitation from :: carries a link-layer address")
    return r


class _Lcg:
    # Fallback when no rand callable is given (MicroPython core has no random module).
    # Callers should pass a real source (random.random) so routers do not synchronise.
    def __init__(self, seed=12345):
        self.s = seed & 0x7FFFFFFF

    def __call__(self):
        self.s = (self.s * 1103515245 + 12345) & 0x7FFFFFFF
        return self.s / 2147483648.0


def _num(v, what):
    if (not isinstance(v, (int, float))) or isinstance(v, bool):
        raise ConfigError("%s must be a number" % what)
    return v


class RaScheduler:
    """When to send Router Advertisements on one LAN interface and what they contain.
    See the rules at the top of this file."""

    def __init__(self, max_interval=600, min_interval=None, router_lifetime=1800, mtu=None, rdnss=(),
                 rdnss_lifetime=None, source_lladdr=None, rand=None, cur_hop_limit=64, managed=False,
                 other=False):
        _num(max_interval, "maximum RA interval")
        if not 4 <= max_interval <= 1800:
            raise ConfigError("maximum RA interval must be 4 to 1800 s (RFC 4861), got %s" % max_interval)
        if min_interval is None:
            # RFC 4861 §6.2.1 with erratum 3154
            # (raised to the 3 s floor: 0.33 x 9 s would be 2.97 s)
            min_interval = 0.33 * max_interval if max_interval >= 9 else 0.75 * max_interval
            if min_interval < 3:
                min_interval = 3
        _num(min_interval, "minimum RA interval")
        if not 3 <= min_interval <= 0.75 * max_interval:
            raise ConfigError("minimum RA interval must be 3 s to 0.75 x the maximum (%s s), got %s"
                              % (0.75 * max_interval, min_interval))
        _int(router_lifetime, 0, 9000, "router lifetime", ConfigError)
        if 0 < router_lifetime < max_interval:
            raise ConfigError("router lifetime must be 0 or at least the maximum RA interval (%s s)"
                              % max_interval)
        if mtu is not None:
            _int(mtu, 1280, 0xFFFFFFFF, "MTU", ConfigError)
        self._rdnss = [_a16(a, "DNS server", ConfigError) for a in rdnss]
        if rdnss_lifetime is None:
            rdnss_lifetime = 3 * int(max_interval + 0.999)  # RFC 8106 §5.1
        _int(rdnss_lifetime, 1, 0xFFFFFFFF, "RDNSS lifetime", ConfigError)
        if source_lladdr is not None:
            source_lladdr = _lladdr(source_lladdr, ConfigError)
        _int(cur_hop_limit, 0, 255, "cur hop limit", ConfigError)
        self.max_interval = max_interval
        self.min_interval = min_interval
        self.router_lifetime = router_lifetime
        self.mtu = mtu
        self.rdnss_lifetime = rdnss_lifetime
        self.source_lladdr = source_lladdr
        self.cur_hop_limit = cur_hop_limit
        self.managed = managed
        self.other = other
        self._rand = rand if rand is not None else _Lcg()
        self.state = "idle"  # idle -> running -> stopped (-> running again via start)
        self._default_router = True
        # entries: dicts prefix, plen, valid, preferred, dep_at (None while active), dep_valid
        self._entries = []
        self._next_ra = None  # unsolicited (periodic or triggered) RA due time
        self._solicited = None  # solicited RA due time
        self._last_ra = None
        self._initial_left = 0
        self.sent = 0

    # -- inputs ----------------------------------------------------------------------
    def start(self, now):
        """Begin advertising (interface became an advertising interface)."""
        if self.state == "running":
            return
        self.state = "running"
        self._solicited = None
        self._next_ra = None
        self._trigger(now)

    def set_prefixes(self, now, prefixes):
        """prefixes: the currently active (prefix16, plen, valid, preferred) list."""
        keys = []
        given = []
        for p in prefixes:
            if not isinstance(p, (tuple, list)) or len(p) != 4:
                raise LocalProtocolError("a prefix is (prefix16, plen, valid, preferred)")
            plen = _int(p[1], 0, 128, "prefix length")
            net = mask(_a16(p[0], "prefix"), plen)
            valid = _int(p[2], 0, 0xFFFFFFFF, "valid lifetime")
            pref = _int(p[3], 0, 0xFFFFFFFF, "preferred lifetime")
            if pref > valid:
                raise LocalProtocolError("preferred lifetime %d is above valid lifetime %d for %s"
                                         % (pref, valid, format_prefix6(net, plen)))
            k = (net, plen)
            if k in keys:
                continue
            keys.append(k)
            given.append((k, valid, pref))
        changed = False
        for e in self._entries:
            k = (e["prefix"], e["plen"])
            if k not in keys and e["dep_at"] is None:
                e["dep_at"] = now
                e["dep_valid"] = min(e["valid"], DEPRECATED_VALID_CAP)
                changed = True
        for k, valid, pref in given:
            e = self._find(k)
            if e is None:
                self._entries.append({"prefix": k[0], "plen": k[1], "valid": valid, "preferred": pref,
                                      "dep_at": None, "dep_valid": 0})
                changed = True
            else:
                if e["dep_at"] is not None:
                    e["dep_at"] = None
                    changed = True
                e["valid"] = valid
                e["preferred"] = pref
        self._expire(now)
        if self.state == "idle" and given:
            self.start(now)
        elif changed and self.state == "running":
            self._trigger(now)

    def set_default_router(self, now, flag):
        """Advertise the configured router lifetime (True) or 0 (False: no default route
        upstream, RFC 7084 G-4/G-5). A change is announced promptly."""
        flag = bool(flag)
        if flag != self._default_router:
            self._default_router = flag
            if self.state == "running":
                self._trigger(now)

    def on_rs(self, now):
        """A valid Router Solicitation arrived: schedule a (multicast) answer."""
        if self.state != "running":
            return
        delay = self._rand() * MAX_RA_DELAY_TIME
        t = now + delay
        if self._last_ra is not None and now - self._last_ra < MIN_DELAY_BETWEEN_RAS:
            t = self._last_ra + MIN_DELAY_BETWEEN_RAS + delay
        if self._next_ra is not None and self._next_ra <= t:
            return
        if self._solicited is not None and self._solicited <= t:
            return
        self._solicited = t

    # -- timers ----------------------------------------------------------------------
    def get_timer(self):
        if self.state != "running":
            return None
        t = self._next_ra
        if self._solicited is not None and (t is None or self._solicited < t):
            t = self._solicited
        return t

    def handle_timer(self, now):
        """RA messages to multicast to ff02::1 now (zero or one)."""
        t = self.get_timer()
        if t is None or now < t:
            return []
        msg = self.current_ra(now)
        self._last_ra = now
        self._solicited = None
        if self._initial_left > 0:
            self._initial_left -= 1
        iv = self.min_interval + self._rand() * (self.max_interval - self.min_interval)
        if self._initial_left > 0 and iv > MAX_INITIAL_RTR_ADVERT_INTERVAL:
            iv = MAX_INITIAL_RTR_ADVERT_INTERVAL
        self._next_ra = now + iv
        self.sent += 1
        return [msg]

    def stop(self, now):
        """Final RA for shutdown (router lifetime 0, all prefixes preferred 0); ends advertising."""
        msg = self._build(now, True)
        self.state = "stopped"
        self._next_ra = None
        self._solicited = None
        self._last_ra = now
        return msg

    # -- content ---------------------------------------------------------------------
    def current_ra(self, now):
        """The RA that would be sent now (also usable for a unicast answer)."""
        return self._build(now, False)

    def prefixes_state(self, now):
        """[{prefix: 'text/plen', state: 'active'|'deprecated', valid, preferred}] with the
        lifetimes an RA sent now would carry."""
        self._expire(now)
        out = []
        for e in self._entries:
            if e["dep_at"] is None:
                out.append({"prefix": format_prefix6(e["prefix"], e["plen"]), "state": "active",
                            "valid": e["valid"], "preferred": e["preferred"]})
            else:
                out.append({"prefix": format_prefix6(e["prefix"], e["plen"]), "state": "deprecated",
                            "valid": self._remaining(e, now), "preferred": 0})
        return out

    def status(self, now):
        return {"state": self.state, "sent": self.sent, "next_ra": self.get_timer(),
                "default_router": self._default_router, "prefixes": self.prefixes_state(now)}

    # -- internals -------------------------------------------------------------------
    def _find(self, k):
        for e in self._entries:
            if e["prefix"] == k[0] and e["plen"] == k[1]:
                return e
        return None

    def _remaining(self, e, now):
        r = e["dep_valid"] - (now - e["dep_at"])
        return int(r) if r > 0 else 0

    def _expire(self, now):
        keep = []
        deps = []
        for e in self._entries:
            if e["dep_at"] is not None:
                if self._remaining(e, now) <= 0:
                    continue
                deps.append(e)
            keep.append(e)
        if len(deps) > MAX_DEPRECATED:
            deps.sort(key=lambda e: e["dep_at"])
            drop = deps[:len(deps) - MAX_DEPRECATED]
            keep = [e for e in keep if not _has(drop, e)]
        self._entries = keep

    def _trigger(self, now):
        self._initial_left = MAX_INITIAL_RTR_ADVERTISEMENTS
        t = now
        if self._last_ra is not None and t < self._last_ra + MIN_DELAY_BETWEEN_RAS:
            t = self._last_ra + MIN_DELAY_BETWEEN_RAS
        if self._next_ra is None or t < self._next_ra:
            self._next_ra = t

    def _build(self, now, final):
        self._expire(now)
        pl = []
        for e in self._entries:
            if e["dep_at"] is None and not final:
                pl.append((e["prefix"], e["plen"], True, True, e["valid"], e["preferred"]))
            elif e["dep_at"] is None:
                pl.append((e["prefix"], e["plen"], True, True, min(e["valid"], DEPRECATED_VALID_CAP), 0))
            else:
                pl.append((e["prefix"], e["plen"], True, True, self._remaining(e, now), 0))
        rl = self.router_lifetime if (self._default_router and not final) else 0
        return build_ra(cur_hop_limit=self.cur_hop_limit, managed=self.managed, other=self.other,
                        router_lifetime=rl, source_lladdr=self.source_lladdr, mtu=self.mtu,
                        prefixes=pl, rdnss=self._rdnss,
                        rdnss_lifetime=0 if final else self.rdnss_lifetime)


def _has(lst, x):
    for y in lst:
        if y is x:
            return True
    return False
