"""Shared state of the reference broker: tunnels, registered endpoints, counters, faults.

One lock guards everything that changes. The PoP's fast path reads two
structures that are replaced as a whole when they change (``by_endpoint`` and
``routes``), so it needs no lock to look something up.
"""

import collections
import ipaddress
import threading
import time

DROP_REASONS = (
    # inbound (IPv4 proto 41 -> TUN)
    "unknown_source",  # outer IPv4 source is no tunnel's registered endpoint
    "spoofed_source",  # inner IPv6 source outside the tunnel's /64 and routed prefixes
    "not_ipv6",  # payload is not an IPv6 packet
    "truncated",  # outer or inner header shorter than it claims
    # outbound (TUN -> IPv4 proto 41)
    "multicast",  # multicast destination (the kernel's own MLD chatter on the TUN)
    "no_tunnel",  # unicast destination in no tunnel's networks
    "no_endpoint",  # tunnel has no registered endpoint yet
    "send_error",  # sendto() failed
)

UPDATE_CODES = ("good", "nochg", "badauth", "nohost", "numhost", "abuse", "badagent", "911")


def _new_drops():
    return collections.OrderedDict((r, 0) for r in DROP_REASONS)


class TunnelState:
    def __init__(self, spec, account):
        self.spec = spec
        self.account = account
        self.endpoint = str(spec.endpoint) if spec.endpoint is not None else None
        self.update_times = collections.deque()  # monotonic times of accepted updates
        self.reset_counters()

    def reset_counters(self):
        self.counts = collections.OrderedDict((c, 0) for c in UPDATE_CODES)
        self.counts["requests"] = 0
        self.last_update = None
        self.rx_packets = self.rx_bytes = 0  # from the client, written to TUN
        self.tx_packets = self.tx_bytes = 0  # to the client, sent encapsulated
        self.drops = _new_drops()

    def state(self):
        s = self.spec
        return {
            "id": s.id,
            "username": self.account.username,
            "endpoint": self.endpoint,
            "client_v6": str(s.client_v6),
            "server_v6": str(s.server_v6),
            "routed": [str(r) for r in s.routed],
            "updates": dict(self.counts),
            "last_update": dict(self.last_update) if self.last_update else None,
            "rx_packets": self.rx_packets,
            "rx_bytes": self.rx_bytes,
            "tx_packets": self.tx_packets,
            "tx_bytes": self.tx_bytes,
            "drops": dict(self.drops),
        }


class Registry:
    def __init__(self, config, clock=time.monotonic):
        self.config = config
        self.clock = clock
        self.lock = threading.RLock()
        self.accounts = {}
        self.tunnels = collections.OrderedDict()
        for acct in config.accounts:
            self.accounts[acct.username] = acct
            for spec in acct.tunnels:
                self.tunnels[spec.id] = TunnelState(spec, acct)
        self.faults = {"http_down": False, "answer_911": False}
        self.routes = self._build_routes()
        self.by_endpoint = {}
        self._rebuild_endpoints()
        self.reset_counters()

    # ---- lookups (lock-free readers) -------------------------------------------------
    def _build_routes(self):
        """List of (network int, mask int, prefixlen, tunnel), longest prefix first."""
        out = []
        for t in self.tunnels.values():
            for net in t.spec.networks:
                out.append((int(net.network_address), int(net.netmask), net.prefixlen, t))
        out.sort(key=lambda r: -r[2])
        return out

    def _rebuild_endpoints(self):
        m = {}
        for t in self.tunnels.values():
            if t.endpoint is not None:
                m.setdefault(t.endpoint, []).append(t)
        self.by_endpoint = m  # replaced as a whole

    def tunnel_for_dst(self, addr16):
        """Tunnel whose networks contain the 16-byte IPv6 address, or None."""
        a = int.from_bytes(addr16, "big")
        for net, mask, _plen, t in self.routes:
            if a & mask == net:
                return t
        return None

    @staticmethod
    def tunnel_owns_src(t, addr16):
        a = int.from_bytes(addr16, "big")
        for net in t.spec.networks:
            if a & int(net.netmask) == int(net.network_address):
                return True
        return False

    # ---- changes ----------------------------------------------------------------------
    def set_endpoint(self, tid, ip):
        """Register `ip` (str or None) as the tunnel's endpoint. Returns the tunnel state."""
        with self.lock:
            t = self.tunnels.get(str(tid))
            if t is None:
                raise KeyError("no tunnel %r" % (tid,))
            if ip is not None:
                ip = str(ipaddress.IPv4Address(ip))
            t.endpoint = ip
            self._rebuild_endpoints()
            return t

    def count_drop(self, reason, tunnel=None, source=None):
        with self.lock:
            self.pop["drops"][reason] += 1
            if reason != "multicast":  # the kernel's own chatter would hide what tests look for
                self.pop["last_drop"] = {"reason": reason, "source": source}
            if tunnel is not None:
                tunnel.drops[reason] += 1

    def count_rx(self, tunnel, nbytes):
        with self.lock:
            tunnel.rx_packets += 1
            tunnel.rx_bytes += nbytes
            self.pop["rx_packets"] += 1
            self.pop["rx_bytes"] += nbytes

    def count_tx(self, tunnel, nbytes):
        with self.lock:
            tunnel.tx_packets += 1
            tunnel.tx_bytes += nbytes
            self.pop["tx_packets"] += 1
            self.pop["tx_bytes"] += nbytes

    def note_request(self, entry):
        with self.lock:
            self.requests.append(entry)

    def reset_counters(self):
        with self.lock:
            self.answers = collections.OrderedDict((c, 0) for c in UPDATE_CODES)
            self.answers["http_errors"] = 0
            self.pop = {
                "rx_packets": 0,
                "rx_bytes": 0,
                "tx_packets": 0,
                "tx_bytes": 0,
                "drops": _new_drops(),
                "last_drop": None,
            }
            self.requests = collections.deque(maxlen=50)
            for t in self.tunnels.values():
                t.reset_counters()
                t.update_times.clear()

    def state(self):
        """Everything a test may want to look at, JSON-serialisable, without secrets."""
        with self.lock:
            return {
                "tunnels": {tid: t.state() for tid, t in self.tunnels.items()},
                "answers": dict(self.answers),
                "pop": {
                    "rx_packets": self.pop["rx_packets"],
                    "rx_bytes": self.pop["rx_bytes"],
                    "tx_packets": self.pop["tx_packets"],
                    "tx_bytes": self.pop["tx_bytes"],
                    "drops": dict(self.pop["drops"]),
                    "last_drop": self.pop["last_drop"],
                },
                "faults": dict(self.faults),
                "requests": list(self.requests),
            }
