"""Shared state of the PoP: tunnels and their current endpoints, counters, faults, clock.

Writers: the data-plane thread (packet counters, endpoint moves), TIC threads (session
records) and the control thread (faults, clock offset, resets). Endpoint changes and
everything the control socket does take ``lock``; the data plane's per-packet counters
are plain increments done by that one thread. Lookup tables the data plane reads
(``by_ident``, ``by_endpoint``, ``routes``) are replaced as a whole, never edited.
"""

import collections
import hashlib
import ipaddress
import threading
import time

from .wire import AYIYA_DROPS, HEARTBEAT_DROPS, OUTBOUND_DROPS, PROTO41_DROPS

TIC_FAULTS = ("none", "refuse", "close", "silent", "inject_after_starttls")
BOOL_FAULTS = ("ayiya_drop", "heartbeat_drop", "proto41_drop")
RECENT_AYIYA = 16
RECENT_SESSIONS = 32


def _zeros(names):
    return collections.OrderedDict((n, 0) for n in names)


class Tunnel:
    def __init__(self, spec, account):
        self.spec = spec
        self.account = account
        self.key = hashlib.sha1(spec.password.encode("utf-8")).digest() if spec.password else None
        self.ident = spec.client_v6.ip.packed
        self.pop_ident = spec.pop_v6.packed
        self.endpoint = str(spec.endpoint) if spec.endpoint is not None else None
        self.port = None  # AYIYA: the client's UDP port
        self.reset_counters()

    def reset_counters(self):
        self.rx_packets = self.rx_bytes = 0  # from the client (to TUN / answered)
        self.tx_packets = self.tx_bytes = 0  # to the client
        self.ayiya_opcodes = _zeros(
            ("noop", "forward", "echo-request", "echo-request-forward", "echo-response")
        )
        self.echo_replies = 0
        self.heartbeats = 0
        self.endpoint_moves = 0
        self.last_seen = None  # PoP wall time of the last authentic packet / heartbeat
        self.last_epoch_delta = None  # client's epoch minus PoP clock, last accepted packet
        self.last_heartbeat = None
        self.drops = {
            "ayiya": _zeros(AYIYA_DROPS),
            "heartbeat": _zeros(HEARTBEAT_DROPS),
            "proto41": _zeros(PROTO41_DROPS),
            "outbound": _zeros(OUTBOUND_DROPS),
        }
        self.last_drop = None
        self.recent_ayiya = collections.deque(maxlen=RECENT_AYIYA)

    def state(self):
        s = self.spec
        return {
            "id": s.id,
            "type": s.type,
            "username": self.account.username,
            "enabled": s.enabled,
            "client_v6": str(s.client_v6),
            "pop_v6": str(s.pop_v6),
            "routed": [str(r) for r in s.routed],
            "endpoint": self.endpoint,
            "port": self.port,
            "endpoint_moves": self.endpoint_moves,
            "last_seen": self.last_seen,
            "last_epoch_delta": self.last_epoch_delta,
            "heartbeats": self.heartbeats,
            "last_heartbeat": dict(self.last_heartbeat) if self.last_heartbeat else None,
            "ayiya_opcodes": dict(self.ayiya_opcodes),
            "echo_replies": self.echo_replies,
            "rx_packets": self.rx_packets,
            "rx_bytes": self.rx_bytes,
            "tx_packets": self.tx_packets,
            "tx_bytes": self.tx_bytes,
            "drops": {k: dict(v) for k, v in self.drops.items()},
            "last_drop": self.last_drop,
        }


class PopState:
    def __init__(self, config, wallclock=time.time, log=None):
        self.config = config
        self.wallclock = wallclock
        self.log = log or (lambda msg: None)
        self.lock = threading.RLock()
        self.clock_offset = config.clock_offset
        self.faults = {"tic": "none"}
        for f in BOOL_FAULTS:
            self.faults[f] = False
        self.accounts = {}
        self.tunnels = collections.OrderedDict()
        for acct in config.accounts:
            self.accounts[acct.username.lower()] = acct
            for spec in acct.tunnels:
                self.tunnels[spec.id] = Tunnel(spec, acct)
        self.by_ident = {t.ident: t for t in self.tunnels.values()}
        self.routes = self._routes()
        self.by_endpoint = {}
        self._rebuild_endpoints()
        self.reset_counters()

    # ---- clock -----------------------------------------------------------------------
    def wall(self):
        """The PoP's idea of Unix time (the host clock plus the configured offset)."""
        return self.wallclock() + self.clock_offset

    # ---- lookups (lock-free readers) -------------------------------------------------
    def _routes(self):
        out = []
        for t in self.tunnels.values():
            for net in t.spec.networks:
                out.append((int(net.network_address), int(net.netmask), net.prefixlen, t))
        out.sort(key=lambda r: -r[2])
        return out

    def _rebuild_endpoints(self):
        m = {}
        for t in self.tunnels.values():
            if t.spec.type != "ayiya" and t.endpoint is not None:
                m.setdefault(t.endpoint, []).append(t)
        self.by_endpoint = m

    def lookup_ident(self, ident16):
        return self.by_ident.get(bytes(ident16))

    def tunnel_for_dst(self, dst16):
        a = int.from_bytes(dst16, "big")
        for net, mask, _plen, t in self.routes:
            if a & mask == net:
                return t
        return None

    @staticmethod
    def owns_source(t, src16):
        """Inner source allowed from tunnel t: its /64, its routed prefixes, link-local."""
        if src16[0] == 0xFE and src16[1] & 0xC0 == 0x80:
            return True
        a = int.from_bytes(src16, "big")
        for net in t.spec.networks:
            if a & int(net.netmask) == int(net.network_address):
                return True
        return False

    # ---- changes ---------------------------------------------------------------------
    def move_endpoint(self, t, ip, port=None, why=""):
        """Set the tunnel's endpoint (and AYIYA port); logs and counts a real change."""
        with self.lock:
            if t.endpoint == ip and t.port == port:
                return False
            old = "%s:%s" % (t.endpoint, t.port) if t.port else str(t.endpoint)
            t.endpoint = ip
            t.port = port
            t.endpoint_moves += 1
            self._rebuild_endpoints()
        new = "%s:%s" % (ip, port) if port else str(ip)
        self.log("tunnel %s endpoint %s -> %s%s" % (t.spec.id, old, new, (" (" + why + ")") if why else ""))
        return True

    def set_endpoint(self, tid, ip, port=None):
        t = self.tunnels.get(str(tid))
        if t is None:
            raise KeyError(tid)
        if ip is not None:
            ip = str(ipaddress.IPv4Address(ip))
        if t.spec.type == "ayiya":
            if (ip is None) != (port is None):
                raise ValueError("an ayiya endpoint needs both ip and port (or neither)")
        elif port is not None:
            raise ValueError("only ayiya tunnels have an endpoint port")
        self.move_endpoint(t, ip, port, "control")
        return t

    def drop(self, family, reason, tunnel=None, source=None):
        self.drops[family][reason] += 1
        if tunnel is not None:
            tunnel.drops[family][reason] += 1
        if reason != "multicast":
            self.last_drop = {
                "family": family,
                "reason": reason,
                "source": source,
                "tunnel": tunnel.spec.id if tunnel is not None else None,
            }
            if tunnel is not None:
                tunnel.last_drop = self.last_drop

    # ---- TIC bookkeeping -------------------------------------------------------------
    def tic_session_started(self, record):
        with self.lock:
            self.tic["sessions"] += 1
            self.tic["recent"].append(record)

    def tic_count(self, key):
        with self.lock:
            self.tic[key] = self.tic.get(key, 0) + 1

    # ---- counters --------------------------------------------------------------------
    def reset_counters(self):
        with self.lock:
            self.drops = {
                "ayiya": _zeros(AYIYA_DROPS),
                "heartbeat": _zeros(HEARTBEAT_DROPS),
                "proto41": _zeros(PROTO41_DROPS),
                "outbound": _zeros(OUTBOUND_DROPS),
            }
            self.last_drop = None
            self.totals = _zeros(("rx_packets", "rx_bytes", "tx_packets", "tx_bytes"))
            self.tic = {
                "sessions": 0,
                "auth_ok": 0,
                "auth_failed": 0,
                "tunnel_shows": 0,
                "starttls": 0,
                "refused": 0,
                "recent": collections.deque(maxlen=RECENT_SESSIONS),
            }
            for t in self.tunnels.values():
                t.reset_counters()

    def state(self):
        """Everything a test may want to look at, JSON-serialisable, without secrets."""
        with self.lock:
            tic = dict(self.tic)
            tic["recent"] = [dict(r, commands=list(r["commands"])) for r in self.tic["recent"]]
            return {
                "time": self.wall(),
                "clock_offset": self.clock_offset,
                "faults": dict(self.faults),
                "tunnels": {tid: t.state() for tid, t in self.tunnels.items()},
                "totals": dict(self.totals),
                "drops": {k: dict(v) for k, v in self.drops.items()},
                "last_drop": self.last_drop,
                "tic": tic,
            }
