"""Shared state of the reference TSP broker: accounts, tunnels, address and prefix pools,
faults and counters.

One lock guards every change. The data plane's fast path reads ``self.tables`` (a
DataTables object replaced as a whole on every change), so it never takes the lock.

Tunnel rules (what a real broker does):
- an account keeps its tunnel address and delegated prefix across sessions; its new
  tunnel replaces the old one;
- an anonymous session gets a fresh address (sequential, or tsps' ::ffff:<v4>:<port>);
  beyond max_tunnels the oldest anonymous tunnel is dropped;
- a tunnel carries data only after the client's accept (UDP and TCP alike);
- v6anyv4: the declared IPv4 differs from the source seen -> NAT -> v6udpv4 (over UDP);
  otherwise v6v4. The seen address is the endpoint ("seen" v6v4_endpoint policy).
"""

import base64
import binascii
import collections
import ipaddress
import threading

from .wire import prefix_text

DROP_REASONS = (
    "unknown_source",  # outer source is no active tunnel's endpoint
    "spoofed_source",  # inner source outside the tunnel's address and prefix
    "bad_packet",  # not an IP packet of the expected family, or truncated
    "no_tunnel",  # TUN packet to an address of no active tunnel
    "multicast",  # TUN packet to a multicast address (kernel chatter)
    "send_error",  # sendto()/write() failed
    "control_junk",  # UDP datagram that is neither control nor data
)

STAGES = ("version", "auth", "request", "accept")


class TunnelError(Exception):
    """create_tunnel refuses: .code is the TSP status, str() the reason."""

    def __init__(self, code, reason):
        super().__init__(reason)
        self.code = code


class Tunnel:
    def __init__(self, tid, user, ttype, transport):
        self.id = tid
        self.user = user  # None: anonymous
        self.type = ttype
        self.requested_type = ttype
        self.transport = transport
        self.declared = None  # address text the client declared
        self.seen = None  # (ip text, port) the session came from
        self.endpoint = None  # ip text (v6v4, v4v6) or (ip text, port) (v6udpv4)
        self.nat = False
        self.c6 = b""  # client_v6 packed (data-plane fast path)
        self.client_v6 = None  # ipaddress objects
        self.server_v6 = None
        self.client_v4 = None
        self.server_v4 = None
        self.prefix = None
        self.keepalive_interval = None
        self.keepalive_address = None
        self.lifetime = 0
        self.mtu = None
        self.created = None
        self.accepted = None
        self.active = False
        self.reset_counters()

    def reset_counters(self):
        self.rx_packets = self.rx_bytes = 0  # from the client, written to TUN
        self.tx_packets = self.tx_bytes = 0  # to the client
        self.last_rx = self.last_tx = None  # monotonic seconds
        self.drops = collections.Counter()

    def offer(self, config):
        """Dict for wire.offer_xml."""
        o = {
            "type": self.type,
            "lifetime": self.lifetime,
            "mtu": self.mtu,
            "keepalive_interval": self.keepalive_interval,
            "keepalive_address": str(self.keepalive_address) if self.keepalive_address else None,
        }
        if self.type == "v4v6":
            o.update(
                server_ipv4=str(self.server_v4),
                server_ipv6=config.listen6,
                client_ipv4=str(self.client_v4),
                client_ipv6=self.endpoint,
            )
        else:
            o.update(
                server_ipv4=config.listen,
                server_ipv6=str(self.server_v6),
                client_ipv4=self.endpoint if self.type == "v6v4" else self.endpoint[0],
                client_ipv6=str(self.client_v6),
            )
        if self.prefix is not None:
            o.update(
                prefix=str(self.prefix),
                prefix_len=self.prefix.prefixlen,
                prefix_text=prefix_text(self.prefix, config.prefix_text),
            )
        return o

    def state(self):
        ep = self.endpoint
        return {
            "id": self.id,
            "user": self.user,
            "type": self.type,
            "requested_type": self.requested_type,
            "transport": self.transport,
            "declared": self.declared,
            "seen": "%s:%d" % self.seen
            if self.seen and ":" not in self.seen[0]
            else ("[%s]:%d" % self.seen if self.seen else None),
            "endpoint": ("%s:%d" % ep) if isinstance(ep, tuple) else ep,
            "nat": self.nat,
            "client_ipv6": str(self.client_v6) if self.client_v6 else None,
            "server_ipv6": str(self.server_v6) if self.server_v6 else None,
            "client_ipv4": str(self.client_v4) if self.client_v4 else None,
            "server_ipv4": str(self.server_v4) if self.server_v4 else None,
            "prefix": str(self.prefix) if self.prefix else None,
            "keepalive_interval": self.keepalive_interval,
            "keepalive_address": str(self.keepalive_address) if self.keepalive_address else None,
            "created": self.created,
            "accepted": self.accepted,
            "active": self.active,
            "rx_packets": self.rx_packets,
            "rx_bytes": self.rx_bytes,
            "tx_packets": self.tx_packets,
            "tx_bytes": self.tx_bytes,
            "last_rx": self.last_rx,
            "last_tx": self.last_tx,
            "drops": dict(self.drops),
        }


class DataTables:
    """Lookup tables of the active tunnels, for the data plane (read without the lock).

    udp: {(ip, port): tunnel}; v4ep: {ip: [tunnels]}; v6ep: {16 bytes: tunnel};
    host6: {16 bytes: tunnel} (client addresses, tried first);
    dst6: [(plen, {int key: tunnel})] longest first; dst4 likewise (32-bit)."""

    def __init__(self, tunnels=()):
        self.udp = {}
        self.host6 = {}
        self.v4ep = {}
        self.v6ep = {}
        d6 = collections.defaultdict(dict)
        d4 = collections.defaultdict(dict)
        for t in tunnels:
            if not t.active:
                continue
            if t.type == "v6udpv4":
                self.udp[t.endpoint] = t
            elif t.type == "v6v4":
                self.v4ep.setdefault(t.endpoint, []).append(t)
            elif t.type == "v4v6":
                self.v6ep[ipaddress.IPv6Address(t.endpoint).packed] = t
            if t.type == "v4v6":
                d4[32][int(t.client_v4)] = t
                if t.prefix is not None:
                    d4[t.prefix.prefixlen][int(t.prefix.network_address) >> (32 - t.prefix.prefixlen)] = t
            else:
                t.c6 = t.client_v6.packed
                self.host6[t.c6] = t
                d6[128][int(t.client_v6)] = t
                if t.prefix is not None:
                    d6[t.prefix.prefixlen][int(t.prefix.network_address) >> (128 - t.prefix.prefixlen)] = t
        self.dst6 = sorted(d6.items(), reverse=True)
        self.dst4 = sorted(d4.items(), reverse=True)

    def tunnel_for_dst6(self, dst16):
        t = self.host6.get(dst16)
        if t is not None:
            return t
        v = int.from_bytes(dst16, "big")
        for plen, table in self.dst6:
            t = table.get(v >> (128 - plen))
            if t is not None:
                return t
        return None

    def tunnel_for_dst4(self, dst4):
        v = int.from_bytes(dst4, "big")
        for plen, table in self.dst4:
            t = table.get(v >> (32 - plen))
            if t is not None:
                return t
        return None


def owns_src6(t, src16):
    if src16 == t.c6:
        return True
    v = int.from_bytes(src16, "big")
    if v == int(t.client_v6):
        return True
    p = t.prefix
    return (
        p is not None
        and p.version == 6
        and v >> (128 - p.prefixlen) == int(p.network_address) >> (128 - p.prefixlen)
    )


def owns_src4(t, src4):
    v = int.from_bytes(src4, "big")
    if v == int(t.client_v4):
        return True
    p = t.prefix
    return (
        p is not None
        and p.version == 4
        and v >> (32 - p.prefixlen) == int(p.network_address) >> (32 - p.prefixlen)
    )


class Registry:
    def __init__(self, config):
        self.config = config
        self.lock = threading.RLock()
        self.tunnels = collections.OrderedDict()  # id -> Tunnel
        self.tables = DataTables()
        self._next_id = 1
        self._anon6 = 0
        self._slots = {a.username: i for i, a in enumerate(config.accounts)}
        self._user_prefix = {}  # (user, family, plen) -> network
        self.faults = []  # [{"at", "code", "text", "brokers", "raw", "times"}]
        self.drop_in = 0
        self.drop_out = 0
        self.reset_counters()

    # ---- counters --------------------------------------------------------------------
    def reset_counters(self):
        with self.lock:
            self.counters = collections.Counter()
            self.answers = collections.Counter()
            self.drops = collections.Counter()
            for t in self.tunnels.values():
                t.reset_counters()

    def count(self, name, n=1):
        self.counters[name] += n

    def count_answer(self, code):
        self.answers[str(code)] += 1

    def count_drop(self, reason, tunnel=None):
        self.drops[reason] += 1
        if tunnel is not None:
            tunnel.drops[reason] += 1

    # ---- accounts --------------------------------------------------------------------
    def password(self, username):
        a = self.config.account(username)
        return a.password if a is not None else None

    # ---- faults ----------------------------------------------------------------------
    def set_faults(self, req):
        """Apply a set_fault request (dict, already without 'cmd'); returns faults_state()."""
        known = {"clear", "drop_in", "drop_out", "drop", "refuse_auth", "busy", "redirect", "status", "raw"}
        extra = sorted(set(req) - known)
        if extra:
            raise ValueError("unknown fault(s): %s" % ", ".join(extra))
        new = []
        if req.get("refuse_auth"):
            new.append(self._fault({"at": "auth", "code": 300}))
        busy = req.get("busy")
        if busy:
            new.append(self._fault({"at": "version", "code": 530 if busy is True else busy}))
        red = req.get("redirect")
        if red is not None:
            if isinstance(red, list):
                red = {"brokers": red}
            if not isinstance(red, dict):
                raise ValueError("redirect must be a list of brokers or an object")
            red = dict(red)
            red.setdefault("code", 1001)
            red.setdefault("at", "version")
            new.append(self._fault(red))
        for key in ("status", "raw"):
            v = req.get(key)
            if v is None:
                continue
            items = v if isinstance(v, list) else [v]
            for item in items:
                if not isinstance(item, dict):
                    raise ValueError("%s must be an object (or a list of them)" % key)
                if key == "raw" and "data_b64" not in item:
                    raise ValueError("raw needs data_b64")
                new.append(self._fault(item))
        for key in ("drop_in", "drop_out", "drop"):
            if key in req:
                v = req[key]
                if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                    raise ValueError("%s must be a non-negative integer" % key)
        with self.lock:
            if req.get("clear"):
                self.faults = []
                self.drop_in = self.drop_out = 0
            self.faults.extend(new)
            if "drop" in req:
                self.drop_in = req["drop"]
            if "drop_in" in req:
                self.drop_in = req["drop_in"]
            if "drop_out" in req:
                self.drop_out = req["drop_out"]
            return self.faults_state()

    def _fault(self, f):
        bad = sorted(set(f) - {"at", "code", "text", "brokers", "data_b64", "times"})
        if bad:
            raise ValueError("unknown fault key(s): %s" % ", ".join(bad))
        at = f.get("at", "version")
        if at not in STAGES:
            raise ValueError("fault 'at' must be one of %s" % ", ".join(STAGES))
        out = {"at": at, "times": f.get("times")}
        if out["times"] is not None and (
            not isinstance(out["times"], int) or isinstance(out["times"], bool) or out["times"] < 1
        ):
            raise ValueError("times must be a positive integer or null (always)")
        if "data_b64" in f:
            try:
                out["raw"] = base64.b64decode(f["data_b64"], validate=True)
            except (binascii.Error, ValueError, TypeError):
                raise ValueError("data_b64 is not base64")
            return out
        code = f.get("code")
        if not isinstance(code, int) or isinstance(code, bool) or not 100 <= code <= 99999:
            raise ValueError("fault code must be an integer status 100..99999")
        out["code"] = code
        text = f.get("text")
        if text is not None and (not isinstance(text, str) or any(c in text for c in "\r\n\x00")):
            raise ValueError("fault text must be a one-line string")
        out["text"] = text
        brokers = f.get("brokers")
        if code >= 1000:
            if not isinstance(brokers, list) or not brokers or not all(isinstance(b, str) for b in brokers):
                raise ValueError("a redirect (code >= 1000) needs 'brokers': a list of addresses")
            for b in brokers:
                if any(c in b for c in '<>&"\r\n\x00 '):
                    raise ValueError("broker %r has characters that do not belong in an address" % b)
            out["brokers"] = list(brokers)
        return out

    def faults_state(self):
        with self.lock:
            fl = []
            for f in self.faults:
                d = dict(f)
                if "raw" in d:
                    d["raw"] = len(d["raw"])
                fl.append(d)
            return {"faults": fl, "drop_in": self.drop_in, "drop_out": self.drop_out}

    def take_fault(self, stage):
        with self.lock:
            for i, f in enumerate(self.faults):
                if f["at"] != stage:
                    continue
                if f["times"] is not None:
                    f["times"] -= 1
                    if f["times"] <= 0:
                        del self.faults[i]
                return dict(f)
        return None

    def take_drop(self, direction):
        with self.lock:
            if direction == "in" and self.drop_in > 0:
                self.drop_in -= 1
                return True
            if direction == "out" and self.drop_out > 0:
                self.drop_out -= 1
                return True
        return False

    # ---- tunnels ---------------------------------------------------------------------
    def create_tunnel(self, user, req, transport, peer, now):
        """A tunnel for a parsed create request (wire.parse_tunnel_xml) from peer
        (ip text, port) over transport ('udp' | 'tcp'). Returns the Tunnel (not active
        yet) or raises TunnelError(code, reason)."""
        cfg = self.config
        rtype = req["type"]
        over_v6 = ":" in peer[0]
        if rtype not in ("v6v4", "v6udpv4", "v6anyv4", "v4v6"):
            raise TunnelError(303, "unknown tunnel type %r" % rtype[:20])
        if rtype == "v4v6":
            if "v4v6" not in cfg.tunnel_types or cfg.listen6 is None:
                raise TunnelError(303, "v4v6 is not offered here")
            declared = req["ipv6"]
            if declared is None:
                raise TunnelError(502, "v4v6 request without the client's IPv6 address")
            seen = ipaddress.IPv6Address(peer[0]) if over_v6 else None
            ep = seen if seen is not None else declared
            ttype = "v4v6"
            nat = seen is not None and seen != declared
        else:
            if over_v6:
                raise TunnelError(303, "%s needs the TSP session over IPv4" % rtype)
            declared = req["ipv4"]
            if declared is None:
                raise TunnelError(501, "request without the client's IPv4 address")
            seen = ipaddress.IPv4Address(peer[0])
            nat = seen != declared
            if rtype == "v6anyv4":
                if nat and transport == "udp" and "v6udpv4" in cfg.tunnel_types:
                    ttype = "v6udpv4"
                elif "v6v4" in cfg.tunnel_types:
                    ttype = "v6v4"
                elif transport == "udp" and "v6udpv4" in cfg.tunnel_types:
                    ttype = "v6udpv4"
                else:
                    raise TunnelError(303, "neither v6v4 nor v6udpv4 is possible here")
            else:
                ttype = rtype
                if ttype not in cfg.tunnel_types:
                    raise TunnelError(303, "%s is not offered here" % ttype)
                if ttype == "v6udpv4" and transport != "udp":
                    raise TunnelError(303, "v6udpv4 needs the TSP session over UDP")
            if ttype == "v6udpv4":
                ep = (str(seen), peer[1])
            elif cfg.v6v4_endpoint == "declared":
                ep = str(declared)
            else:
                ep = str(seen)
        with self.lock:
            t = Tunnel("t%d" % self._next_id, user, ttype, transport)
            t.requested_type = rtype
            t.declared = str(declared)
            t.seen = (peer[0], peer[1])
            t.endpoint = ep if isinstance(ep, tuple) else str(ep)
            t.nat = nat
            t.lifetime = cfg.lifetime
            t.mtu = cfg.mtu
            t.created = now
            ki = req["keepalive_interval"]
            if cfg.keepalive_interval is not None:
                ki = cfg.keepalive_interval
            t.keepalive_interval = ki
            if ttype == "v4v6":
                t.server_v4 = cfg.server_v4
                t.client_v4 = self._alloc_v4(user)
                t.keepalive_address = t.server_v4 if ki is not None else None
            else:
                t.server_v6 = cfg.server_v6
                t.client_v6 = self._alloc_v6(user, peer, declared, ttype)
                t.keepalive_address = t.server_v6 if ki is not None else None
            if req["router"]:
                t.prefix = self._alloc_prefix(user, req["prefix_len"], ttype == "v4v6")
            self._next_id += 1
            # one tunnel per account; one per v6udpv4 5-tuple
            for old in list(self.tunnels.values()):
                if (user is not None and old.user == user) or (
                    old.type == t.type == "v6udpv4" and old.endpoint == t.endpoint
                ):
                    self._remove(old)
            self.tunnels[t.id] = t
            self._trim()
            self._publish()
            return t

    def activate(self, t, now):
        with self.lock:
            if self.tunnels.get(t.id) is not t:
                return False
            t.accepted = now
            t.active = True
            self._publish()
            return True

    def remove(self, t):
        with self.lock:
            self._remove(t)
            self._publish()

    def _remove(self, t):
        if self.tunnels.pop(t.id, None) is not None:
            t.active = False
            if t.user is None and t.prefix is not None:
                pass  # anonymous prefixes are not remembered, so they are free again

    def _trim(self):
        while len(self.tunnels) > self.config.max_tunnels:
            victim = None
            for t in self.tunnels.values():
                if t.user is None:
                    victim = t
                    break
            if victim is None:
                victim = next(iter(self.tunnels.values()))
            self._remove(victim)

    def _publish(self):
        self.tables = DataTables(list(self.tunnels.values()))

    def _in_use_v6(self):
        return {t.client_v6 for t in self.tunnels.values() if t.client_v6 is not None}

    def _alloc_v6(self, user, peer, declared, ttype):
        cfg = self.config
        base = cfg.tunnel_prefix.network_address
        if user is not None:
            return base + 2 + self._slots[user]
        if cfg.anonymous_address == "ipv4-port" and ttype in ("v6udpv4", "v6v4"):
            iid = (0xFFFF << 48) | (int(ipaddress.IPv4Address(peer[0])) << 16) | peer[1]
            return base + iid
        used = self._in_use_v6()
        size = cfg.tunnel_prefix.num_addresses
        first = 0x1000 if size > 0x2000 else len(self._slots) + 2
        span = min(size - first - 1, 1 << 24)
        for _ in range(span):
            a = base + first + (self._anon6 % span)
            self._anon6 += 1
            if a not in used:
                return a
        raise TunnelError(301, "no tunnel address free")

    def _alloc_v4(self, user):
        cfg = self.config
        net = cfg.tunnel_prefix4
        base = net.network_address
        nslots = len(self._slots)
        hosts = net.num_addresses - 3  # minus network, broadcast, server
        if user is not None:
            if self._slots[user] >= hosts:
                raise TunnelError(301, "tunnel_prefix4 too small for the accounts")
            return base + 2 + self._slots[user]
        used = {t.client_v4 for t in self.tunnels.values() if t.client_v4 is not None}
        for i in range(nslots, hosts):
            a = base + 2 + i
            if a not in used:
                return a
        raise TunnelError(301, "no IPv4 tunnel address free")

    def _alloc_prefix(self, user, plen, v4):
        cfg = self.config
        if user is None and not cfg.anonymous_prefix:
            raise TunnelError(522, "an anonymous session cannot get a prefix")
        if plen is None:
            raise TunnelError(520, "router request without a prefix length")
        pool = cfg.prefix_pool4 if v4 else cfg.prefix_pool
        lengths = cfg.prefix_lengths4 if v4 else cfg.prefix_lengths
        if plen not in lengths:
            raise TunnelError(
                518,
                "prefix length /%d is not one we delegate (%s)"
                % (plen, ", ".join("/%d" % n for n in lengths)),
            )
        if plen < pool.prefixlen:
            raise TunnelError(507, "/%d is larger than the pool %s" % (plen, pool))
        fam = 4 if v4 else 6
        key = (user, fam, plen)
        if user is not None and key in self._user_prefix:
            return self._user_prefix[key]
        taken = [n for n in self._user_prefix.values() if n.version == fam]
        taken += [t.prefix for t in self.tunnels.values() if t.prefix is not None and t.prefix.version == fam]
        bits = pool.max_prefixlen
        step = 1 << (bits - plen)
        start = int(pool.network_address)
        cls = ipaddress.IPv4Network if v4 else ipaddress.IPv6Network
        count = pool.num_addresses // step
        i = 0
        while i < count:
            cand = cls((start + i * step, plen))
            clash = [n for n in taken if n.overlaps(cand)]
            if not clash:
                if user is not None:
                    self._user_prefix[key] = cand
                return cand
            # skip past the largest clashing allocation
            end = max(int(n.broadcast_address) for n in clash) + 1
            i = max(i + 1, (end - start + step - 1) // step)
        raise TunnelError(507, "no /%d left in %s" % (plen, pool))

    # ---- reporting -------------------------------------------------------------------
    def state(self, sessions=None):
        with self.lock:
            return {
                "tunnels": {tid: t.state() for tid, t in self.tunnels.items()},
                "sessions": sessions if sessions is not None else [],
                "counters": dict(self.counters),
                "answers": dict(self.answers),
                "drops": dict(self.drops),
                "faults": self.faults_state(),
            }
