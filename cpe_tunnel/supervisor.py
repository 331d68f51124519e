"""The supervisor: events come in (WAN changes, broker answers, keepalive replies,
router solicitations, timers), it decides, and effects go out (data plane endpoints,
broker updates, RAs, addresses and routes).

    Supervisor
      ├─ TunnelRunner (one tunnel section): data plane, broker session, keepalive
      └─ LanAnnouncer: one LanPort per LAN interface (address, RA scheduler, RA socket)

The LanAnnouncer outlives a TunnelRunner, so that when a reload brings a new
delegated prefix the old one is deprecated on the LAN (RFC 7084 L-13) instead of
silently vanishing.
"""

import os
import random
import time

from .adapters.log import log
from .core import addr
from .core.errors import ConfigError

_rand = random.SystemRandom().random

DEBOUNCE_QUIET = 0.05  # a WAN event burst is over after this much quiet ...
DEBOUNCE_MAX = 0.3  # ... or this long after its first event, whichever comes first
# When the tunnel stops answering and a new broker session starts at once (a NAT that
# changed its address), the LANs keep their prefix and default router for this long:
# a session that is back within it costs the LAN hosts nothing, where withdrawing would
# cost them the RA spacing (RFC 4861 MIN_DELAY_BETWEEN_RAS, 3 s) and a deprecated
# address. If it is not back by then, the router withdraws (RFC 7084 G-5, L-13).
RECONNECT_GRACE = 2.0


def carries_ipv4(t):
    """True for a tunnel section that carries IPv4 over an IPv6 WAN (TSP v4v6)."""
    return t.get("mode") == "tsp" and t.get("tunnel_mode") == "v4v6"


def peer_of(ip6, plen):
    """The broker's side of a tunnel /64 when the config does not name it: the
    usual broker convention is ::1 for the server and ::2 for the client."""
    net = addr.mask(ip6, plen)
    one = net[:15] + b"\x01"
    return addr.with_iid(net, 2) if ip6 == one else one


def _ip4_plus(b, n):
    v = ((b[0] << 24) | (b[1] << 16) | (b[2] << 8) | b[3]) + n
    return bytes(((v >> 24) & 255, (v >> 16) & 255, (v >> 8) & 255, v & 255))


class Wall:
    """Converts the loop's monotonic time to wall-clock time for status output."""

    def __init__(self, clock):
        self.clock = clock

    def __call__(self, t):
        if t is None:
            return None
        return time.time() - (self.clock() - t)


class TunnelRunner:
    def __init__(self, sup, cfg):
        self.sup = sup
        self.loop = sup.loop
        self.nl = sup.nl
        self.cfg = cfg
        t = cfg["tunnel"]
        self.t = t
        self.name = t["name"]
        self.mode = t["mode"]
        self.ifname = t["ifname"]
        # Set by configure(): from the configuration (6in4 modes) or from what the
        # broker offered (tsp).
        self.local6 = self.plen6 = self.peer6 = None
        self.prefixes = []
        self.keepalive_interval = t["keepalive_interval"]
        self.remote4 = None  # the broker's IPv4 end of the data plane, when it has one
        # v4v6 (IPv4 in IPv6): the WAN is IPv6 (wan_ip is the WAN's IPv6 address), the
        # tunnel carries IPv4: our and the broker's tunnel IPv4 addresses (text), the
        # broker's IPv6 endpoint, the delegated IPv4 prefixes [(text, len)] and the
        # LAN address made from the first one (ifname, address, len).
        self.v4v6 = carries_ipv4(t)
        self.wan_family = 6 if self.v4v6 else 4
        self.local4 = self.peer4 = self.remote6 = self.keepalive4 = None
        self.prefixes4 = []
        self.lan4 = None
        self._traffic = (None, None)  # (last_tx, last_rx) of the data plane as last read
        self.dp = None
        self.monitor = None
        self.session = None
        self.keepalive = None
        self.echo = None
        self.wan_dev = None
        self.wan_ip = None
        self.fatal = None
        self._debounce_first = None
        self._debounce_at = None
        self._routes = []
        self._addrs4 = []  # (ifname, address, len) of IPv4 addresses we added on the tunnel

    # -- start / stop ------------------------------------------------------
    def start(self, now):
        from .adapters import netlink

        t = self.t
        self.monitor = netlink.WanMonitor(t.get("wan_device"), family=self.wan_family)
        self.loop.add_reader(self.monitor, self._on_netlink)
        self.wan_dev, self.wan_ip = self._read_wan()
        self.session = self._new_session()
        if self.configured_by_config:  # the other modes learn it from the broker
            self.configure(now, self.params_from_config())
        self.session.start(now, self.wan_ip, "start")
        if not self.wan_ip:
            log.warning("tunnel %s: no IPv%d address on the WAN yet (%s); waiting", self.name, self.wan_family,
                        self.wan_dev or "no default route")

    def params_from_config(self):
        t = self.t
        # The schema hands addresses over as canonical text, (text, length) pairs.
        local6, plen6 = addr.ip6_aton(t["ip6addr"][0]), t["ip6addr"][1]
        return {
            "kind": "6in4",
            "remote4": t["peeraddr"],
            "local6": local6,
            "plen6": plen6,
            "peer6": addr.ip6_aton(t["ip6gw"]) if t.get("ip6gw") else peer_of(local6, plen6),
            "prefixes": [(addr.ip6_aton(p), n) for p, n in (t.get("ip6prefix") or [])],
            "keepalive_interval": t["keepalive_interval"],
            "mtu": t["mtu"],
        }

    def configure(self, now, params):
        """Build the data plane, addresses, routes and keepalive for a tunnel.
        params: kind ('6in4' with remote4, or 'udp6' with sock and on_control),
        local6/plen6/peer6 (bytes), prefixes [(bytes, len)], keepalive_interval, mtu;
        or kind '4in6' (see _configure_4in6)."""
        from .adapters import sixin4

        if params["kind"] == "4in6":
            self._configure_4in6(now, params)
            return
        t = self.t
        self.local6, self.plen6, self.peer6 = params["local6"], params["plen6"], params["peer6"]
        self.prefixes = list(params["prefixes"])
        self.keepalive_interval = params["keepalive_interval"]
        mtu = params["mtu"]
        self.remote4 = params.get("remote4")
        if params["kind"] == "udp6":
            from .adapters.udp6 import UserspaceUdp6

            self.remote4 = None  # rides the TSP session's socket
            self.dp = UserspaceUdp6(self.ifname, params["sock"], mtu=mtu, netlink=self.nl,
                                    on_control=params.get("on_control"))
        elif params["kind"] == "ayiya":
            from .adapters.ayiya_dp import UserspaceAyiya

            self.dp = UserspaceAyiya(self.ifname, self.wan_ip, params["remote4"], self.local6, self.peer6,
                                     params["password"], mtu=mtu, netlink=self.nl,
                                     on_control=params.get("on_control"))
        else:
            self.dp = sixin4.create_dataplane(t["dataplane"], self.nl, self.ifname, self.wan_ip,
                                              params["remote4"], ttl=t["ttl"], tos=t["tos"], mtu=mtu)
        self.dp.open()
        nl = self.nl
        nl.link_set_mtu(self.ifname, mtu)
        nl.link_up(self.ifname)
        nl.addr_add(self.ifname, addr.ip6_ntoa(self.local6), self.plen6)
        if not addr.in_prefix(self.peer6, self.local6, self.plen6):
            # a /128 from a TSP broker: reach its tunnel address through the tunnel
            route = (addr.ip6_ntoa(self.peer6), 128, dict(ifname=self.ifname, family=6))
            nl.route_add(route[0], route[1], **route[2])
            self._routes.append(route)
        if t["defaultroute"]:
            nl.route_add("::", 0, ifname=self.ifname, family=6)
            self._routes.append(("::", 0, dict(ifname=self.ifname, family=6)))
        self._add_prefix_routes()
        log.info("tunnel %s: %s %s data plane on %s, local %s, broker %s", self.name, self.dp.kind,
                 params["kind"], self.ifname, self.wan_ip or "(none yet)", params.get("remote4") or "-")
        self._start_keepalive()
        self.sup.prefixes_changed(now)

    def _configure_4in6(self, now, params):
        """IPv4 in IPv6 (TSP v4v6). params: remote6 (the broker's IPv6 endpoint, text),
        local4/peer4 (our and the broker's tunnel IPv4 address, text), keepalive4 (the
        keepalive target, text), prefixes4 [(text, len)], keepalive_interval, mtu.

        Addresses and routes: local4/32 on the tunnel, peer4/32 through it, with
        defaultroute an IPv4 default through it (metric DEFAULT4_FALLBACK_METRIC, a
        fallback, when the WAN already has an IPv4 default route of its own). The first
        delegated IPv4 prefix goes to the first enabled LAN: its first host with the
        prefix's length (DHCPv4 there is dnsmasq's job); each delegated prefix also gets
        an unreachable route (metric PREFIX4_UNREACHABLE_METRIC) so that what the LAN
        does not cover, or the whole prefix while the LAN is down, never loops back into
        the tunnel."""
        from .adapters.v4v6 import create_v4v6

        t = self.t
        mtu = params["mtu"]
        self.remote6 = params["remote6"]
        self.local4, self.peer4 = params["local4"], params["peer4"]
        self.keepalive4 = params.get("keepalive4") or self.peer4
        self.prefixes4 = list(params.get("prefixes4") or [])
        self.keepalive_interval = params["keepalive_interval"]
        self.remote4 = None
        self.dp = create_v4v6(t["dataplane"], self.nl, self.ifname, self.wan_ip, self.remote6, mtu=mtu,
                              ttl=t["ttl"])
        self.dp.open()
        nl = self.nl
        nl.link_set_mtu(self.ifname, mtu)
        nl.link_up(self.ifname)
        nl.addr_add(self.ifname, self.local4, 32)
        self._addrs4 = [(self.ifname, self.local4, 32)]
        route = (self.peer4, 32, dict(ifname=self.ifname, family=4))
        nl.route_add(route[0], route[1], **route[2])
        self._routes.append(route)
        if self.keepalive4 != self.peer4:
            route = (self.keepalive4, 32, dict(ifname=self.ifname, family=4))
            nl.route_add(route[0], route[1], **route[2])
            self._routes.append(route)
        if t["defaultroute"]:
            kw = dict(ifname=self.ifname, family=4)
            other = nl.default_route_v4()[1]
            if other is not None and other != self.ifname:
                kw["metric"] = self.DEFAULT4_FALLBACK_METRIC
                log.notice("tunnel %s: the WAN has an IPv4 default route of its own (%s): the tunnel's "
                           "IPv4 default route gets metric %d, as a fallback", self.name, other,
                           self.DEFAULT4_FALLBACK_METRIC)
            nl.route_add("0.0.0.0", 0, **kw)
            self._routes.append(("0.0.0.0", 0, kw))
        lan = self._first_lan()
        if self.prefixes4 and lan:
            p, plen = self.prefixes4[0]
            host = p if plen >= 31 else addr.ip4_ntoa(_ip4_plus(addr.ip4_aton(p), 1))
            nl.addr_add(lan, host, plen)
            self.lan4 = (lan, host, plen)
            log.info("tunnel %s: LAN %s: %s/%d from the delegated IPv4 prefix %s/%d", self.name, lan, host,
                     plen, p, plen)
        for p, plen in self.prefixes4:
            route = (p, plen, dict(family=4, kind="unreachable", metric=self.PREFIX4_UNREACHABLE_METRIC))
            nl.route_add(route[0], route[1], **route[2])
            self._routes.append(route)
        log.info("tunnel %s: %s 4in6 data plane on %s, local %s, broker %s; tunnel IPv4 %s, broker side %s",
                 self.name, self.dp.kind, self.ifname, self.wan_ip or "(none yet)", self.remote6, self.local4,
                 self.peer4)
        self._start_keepalive()
        self.sup.prefixes_changed(now)

    DEFAULT4_FALLBACK_METRIC = 1024
    PREFIX4_UNREACHABLE_METRIC = 4096

    def _first_lan(self):
        return self._first_lan_of(self.cfg)

    def _del_addrs4(self):
        if self.lan4 is not None:
            lan, host, plen = self.lan4
            self.lan4 = None
            try:
                self.nl.addr_del(lan, host, plen)
            except OSError as exc:
                log.debug("removing %s/%d from %s: %s", host, plen, lan, exc)
        for ifname, a, plen in getattr(self, "_addrs4", []):
            try:
                self.nl.addr_del(ifname, a, plen)
            except OSError as exc:
                log.debug("removing %s/%d from %s: %s", a, plen, ifname, exc)
        self._addrs4 = []

    def unconfigure(self, now):
        """Take the tunnel down (a new broker session follows)."""
        self._stop_keepalive()
        self._del_routes()
        self._del_addrs4()
        if self.dp is not None:
            self.dp.close()
            self.dp = None
        self.local4 = self.peer4 = self.remote6 = self.keepalive4 = None
        self._traffic = (None, None)
        if self.prefixes or self.prefixes4:
            self.prefixes = []
            self.prefixes4 = []
            self.sup.prefixes_changed(now)

    def _add_prefix_routes(self):
        for p, plen in self.prefixes:
            # The delegated prefix is ours: what the LANs do not use must not leak
            # back into the tunnel (routing loop with the broker), RFC 7084 WPD-5.
            route = (addr.ip6_ntoa(p), plen, dict(family=6, kind="unreachable"))
            self.nl.route_add(route[0], route[1], **route[2])
            self._routes.append(route)

    def _del_routes(self, only_unreachable=False):
        keep = []
        for dst, plen, kw in reversed(self._routes):
            if only_unreachable and kw.get("kind") != "unreachable":
                keep.insert(0, (dst, plen, kw))
                continue
            try:
                self.nl.route_del(dst, plen, **kw)
            except OSError as exc:
                log.debug("removing route %s/%d: %s", dst, plen, exc)
        self._routes = keep

    def _start_keepalive(self):
        if not self.keepalive_interval:
            return
        from .adapters.echo import EchoSocket, EchoSocket4
        from .core.keepalive import Keepalive

        ident = os.getpid() & 0xFFFF
        self.keepalive = Keepalive(self.keepalive_interval, ident=ident)
        self._traffic = (None, None)
        if self.keepalive4:
            self.echo = EchoSocket4(self.ifname, self.keepalive4, ident)
        else:
            self.echo = EchoSocket(self.ifname, addr.ip6_ntoa(self.peer6), ident)
        self.loop.add_reader(self.echo, self._on_echo)

    def _stop_keepalive(self):
        if self.echo is not None:
            self.loop.remove_reader(self.echo)
            self.echo.close()
        self.echo = self.keepalive = None

    def _new_session(self):
        from .sessions import SESSIONS

        return SESSIONS[self.mode](self, self.t)

    def _start_session(self, now, reason):
        self.session = self._new_session()
        self.session.start(now, self.wan_ip, reason)

    @property
    def configured_by_config(self):
        """True when the configuration (not a broker) gives the tunnel's addresses."""
        return bool(self.session is not None and getattr(self.session, "configured_by_config", False))

    def _stop_session(self):
        if self.session is not None:
            self.session.stop()
            self.session = None

    # Options whose change needs a new data plane; the others are applied in place.
    HARD_KEYS = ("mode", "ifname", "dataplane", "peeraddr", "ip6addr", "ip6gw", "mtu", "ttl", "tos",
                 "defaultroute", "wan_device", "ipaddr", "tunnel_mode")
    UPDATE_KEYS = ("update_url", "username", "updatekey", "password", "tunnelid", "tls_verify", "ca_file",
                   "send_myip", "private_range", "update_retry_min", "update_retry_max")

    def apply(self, now, cfg):
        """Apply a new configuration in place when possible. False when the data
        plane itself must be rebuilt (the caller restarts the tunnel)."""
        new = cfg["tunnel"]
        if self.fatal or any(new.get(k) != self.t.get(k) for k in self.HARD_KEYS):
            return False
        if self.v4v6 and self._first_lan_of(cfg) != self._first_lan_of(self.cfg):
            return False  # the delegated IPv4 prefix moves to another LAN: rebuild
        old, self.t, self.cfg = self.t, new, cfg
        by_config = self.configured_by_config
        if new.get("ip6prefix") != old.get("ip6prefix") and by_config:
            self._del_routes(only_unreachable=True)
            self.prefixes = [(addr.ip6_aton(p), n) for p, n in (new.get("ip6prefix") or [])]
            self._add_prefix_routes()
            log.notice("tunnel %s: delegated prefixes now %s", self.name,
                       ", ".join(addr.format_prefix6(p, n) for p, n in self.prefixes) or "none")
        if new["keepalive_interval"] != old["keepalive_interval"] and by_config:
            self.keepalive_interval = new["keepalive_interval"]
            self._stop_keepalive()
            self._start_keepalive()
        if any(new.get(k) != old.get(k) for k in self.UPDATE_KEYS):
            self._stop_session()
            self._start_session(now, "reload")
        return True

    @staticmethod
    def _first_lan_of(cfg):
        for lc in cfg.get("lans") or []:
            if lc.get("enabled", True):
                return lc["interface"]
        return None

    def stop(self):
        self._stop_session()
        self._stop_keepalive()
        if self.monitor is not None:
            self.loop.remove_reader(self.monitor)
            self.monitor.close()
            self.monitor = None
        self._del_routes()
        self._del_addrs4()
        if self.dp is not None:
            self.dp.close()
            self.dp = None

    # -- WAN ---------------------------------------------------------------
    def _read_wan(self):
        t = self.t
        dev = t.get("wan_device")
        if self.wan_family == 6:
            if not dev:
                dev = self.nl.default_route_v6()[1]
            if not dev:
                return None, None
            ips = self.nl.ipv6_wan_addrs(dev)
            if self.wan_ip in ips and dev == self.wan_dev:
                return dev, self.wan_ip  # still there: no reason to move the tunnel
            return dev, (ips[0] if ips else None)
        if not dev:
            dev = self.nl.default_route_v4()[1]
        if t.get("ipaddr"):
            return dev, t["ipaddr"]
        if not dev:
            return None, None
        ips = self.nl.ipv4_addrs(dev)
        return dev, (ips[0] if ips else None)

    def _on_netlink(self):
        if self.monitor.read():
            self.wan_hint(self.loop.clock())

    def wan_hint(self, now):
        """Something outside netlink (ubus, hotplug) says the WAN changed."""
        if self._debounce_first is None:
            self._debounce_first = now
        self._debounce_at = min(self._debounce_first + DEBOUNCE_MAX, now + DEBOUNCE_QUIET)

    def _check_wan(self, now):
        self._debounce_first = self._debounce_at = None
        dev, ip = self._read_wan()
        if (dev, ip) == (self.wan_dev, self.wan_ip):
            return
        log.notice("tunnel %s: WAN changed: %s on %s -> %s on %s", self.name, self.wan_ip,
                   self.wan_dev, ip, dev)
        self.wan_dev, self.wan_ip = dev, ip
        if ip is None:
            self.sup.state_changed(now)
            return
        if self.dp is not None and self.remote4:
            self.dp.set_endpoints(ip, self.remote4)
        self.session.wan_changed(now, ip)
        if self.keepalive:
            self.keepalive.reset(now)
        self.sup.state_changed(now)

    def reconnect(self, now):
        self._check_wan(now)  # hotplug's reconnect: re-read the WAN first
        if self.session:
            self.session.reconnect(now)

    # -- keepalive ------------------------------------------------------------
    def _last_traffic(self):
        """(last_tx, last_rx) of the data plane, for the keepalive."""
        if not self.dp:
            return None, None
        c = self.dp.counters()
        return c.get("last_tx"), c.get("last_rx")

    def _on_echo(self):
        now = self.loop.clock()
        was = self.keepalive.status(now).get("alive")
        for seq in self.echo.read():
            self.keepalive.on_echo_reply(now, seq)
        if self.keepalive.status(now).get("alive") != was:
            self.sup.state_changed(now)

    # -- timers ---------------------------------------------------------------
    # The keepalive deadline comes from the traffic times as last read (self._traffic):
    # traffic only moves that deadline later, so a stale value fires early, never late;
    # the counters (a netlink dump for a kernel plane) are read only when it fires.
    def get_timer(self):
        ds = [self._debounce_at]
        if self.session:
            ds.append(self.session.get_timer())
        if self.keepalive:
            ds.append(self.keepalive.get_timer(*self._traffic))
        ds = [d for d in ds if d is not None]
        return min(ds) if ds else None

    def handle_timer(self, now):
        if self._debounce_at is not None and now >= self._debounce_at:
            self._check_wan(now)
        if self.session:
            d = self.session.get_timer()
            if d is not None and now >= d:
                self.session.handle_timer(now)
        if self.keepalive:
            d = self.keepalive.get_timer(*self._traffic)
            if d is not None and now >= d:
                self._traffic = self._last_traffic()
            last_tx, last_rx = self._traffic
            d = self.keepalive.get_timer(last_tx, last_rx)
            if d is not None and now >= d:
                was = self.keepalive.status(now).get("alive")
                for seq in self.keepalive.handle_timer(now, last_tx, last_rx):
                    try:
                        self.echo.send(seq)
                    except OSError as exc:
                        log.debug("keepalive send failed: %s", exc)
                if self.keepalive.status(now).get("alive") != was:
                    if self.keepalive.status(now).get("alive") is False and self.session:
                        self.session.keepalive_lost(now)
                    self.sup.state_changed(now)

    # -- status -----------------------------------------------------------
    def reconnecting(self, now):
        """True while a new broker session, started at once after the tunnel stopped
        answering, is under way (for at most RECONNECT_GRACE seconds)."""
        since = getattr(self.session, "reconnecting_since", None)
        return since is not None and now - since < RECONNECT_GRACE

    def state(self, now):
        """(state, reason) in plain words."""
        if self.fatal:
            return "down", self.fatal
        if not self.wan_ip:
            return "down", "waiting for an IPv%d address on the WAN (%s)" % (
                self.wan_family, self.wan_dev or "no IPv%d default route" % self.wan_family)
        if self.session:
            verdict = self.session.state(now)
            if verdict is not None:
                return verdict
        if self.keepalive:
            k = self.keepalive.status(now)
            if k.get("alive") is False:
                return "down", "the broker's tunnel address %s does not answer" % (
                    self.keepalive4 or addr.ip6_ntoa(self.peer6))
        if self.dp is None:
            return "down", "no tunnel yet"
        return "up", "tunnel up"

    def status(self, now, wall):
        t = self.t
        st = {
            "tunnel": self.name,
            "mode": self.mode,
            "dataplane": self.dp.kind if self.dp else None,
            "ifname": self.ifname,
            "wan": {
                "device": self.wan_dev,
                "local_ipv4": None if self.v4v6 else self.wan_ip,
                "public_ipv4": None if self.v4v6 else (self.session.public_ip if self.session else None),
                "nat_detected": bool(self.session and self.session.nat_detected),
            },
            "broker": {"ipv4": t.get("peeraddr")},
            "tunnel_addresses": {
                "local": "%s/%d" % (addr.ip6_ntoa(self.local6), self.plen6),
                "remote": addr.ip6_ntoa(self.peer6),
            } if self.local6 else {},
            "delegated_prefixes": [addr.format_prefix6(p, n) for p, n in self.prefixes],
            "mtu": t["mtu"],
            "last_error": self.fatal or (self.session.last_error if self.session else None),
        }
        if self.v4v6:
            st["wan"]["local_ipv6"] = self.wan_ip
            st["wan"]["public_ipv6"] = self.session.public_ip if self.session else None
            st["tunnel_family"] = "ipv4"
            st["tunnel_addresses"] = {
                "local": "%s/32" % self.local4, "remote": self.peer4, "family": "ipv4",
                "local_endpoint": self.wan_ip, "remote_endpoint": self.remote6,
            } if self.local4 else {}
            st["delegated_prefixes4"] = ["%s/%d" % p for p in self.prefixes4]
            st["lan4"] = {"interface": self.lan4[0], "address": "%s/%d" % self.lan4[1:]} if self.lan4 else None
        if self.session:
            extra = self.session.status(wall)
            st["broker"].update(extra.pop("broker", {}))
            st.update(extra)
        if self.dp:
            c = dict(self.dp.counters())
            self._traffic = (c.get("last_tx"), c.get("last_rx"))
            c["last_tx"] = wall(c.get("last_tx"))
            c["last_rx"] = wall(c.get("last_rx"))
            st["counters"] = c
        if self.keepalive:
            k = dict(self.keepalive.status(now))
            k["enabled"] = True
            k["interval"] = self.keepalive_interval
            st["keepalive"] = k
        else:
            st["keepalive"] = {"enabled": False}
        return st


class LanPort:
    def __init__(self, sup, lcfg):
        self.sup = sup
        self.cfg = lcfg
        self.ifname = lcfg["interface"]
        self.prefix = None  # 16 bytes of the /64 in use
        self.sched = None
        self.sock = None
        self.addr = None
        # Hold the first RA until the tunnel's state is known: an RA saying "no default
        # router" followed by one saying "default router" must be 3 s apart (RFC 4861
        # MIN_DELAY_BETWEEN_RAS), which would cost the LAN those 3 s at every start.
        self.held = True

    def release(self, now):
        if self.held:
            self.held = False
            self._announce(now)

    def open(self, now, mtu):
        from .adapters.lan import RaSocket, link_lladdr
        from .core.ra import RaScheduler

        c = self.cfg
        if not c["ra"] or self.sup.ipv4_only():
            return  # v4v6 gives the LANs IPv4 only: no IPv6 router to announce
        self.sock = RaSocket(self.ifname)
        self.sup.loop.add_reader(self.sock, self._on_rs)
        dns = [addr.ip6_aton(d) for d in (c.get("dns") or [])]
        self.sched = RaScheduler(
            max_interval=c["ra_interval"], router_lifetime=c["ra_lifetime"],
            mtu=c["ra_mtu"] or mtu, rdnss=dns, rdnss_lifetime=(2 * c["ra_interval"]) if dns else None,
            source_lladdr=link_lladdr(self.ifname), rand=_rand)
        # No default route to offer until the tunnel is up (RFC 7084 G-4).
        self.sched.set_default_router(now, self.sup.is_up())

    def set_default_router(self, now, flag):
        if self.sched:
            self.sched.set_default_router(now, flag)

    def _on_rs(self):
        now = self.sup.loop.clock()
        for _msg, _src in self.sock.read():
            if self.sched:
                self.sched.on_rs(now)

    def set_prefix(self, now, prefix):
        """prefix: 16 bytes of the LAN /64, or None when there is none."""
        if prefix == self.prefix:
            return
        nl = self.sup.nl
        if self.addr is not None:
            nl.addr_del(self.ifname, addr.ip6_ntoa(self.addr), 64)
            self.addr = None
        self.prefix = prefix
        if prefix is not None:
            self.addr = addr.with_iid(prefix, 1)
            nl.addr_add(self.ifname, addr.ip6_ntoa(self.addr), 64)
            log.info("LAN %s: %s/64, router address %s", self.ifname, addr.ip6_ntoa(prefix),
                     addr.ip6_ntoa(self.addr))
        self._announce(now)

    def _announce(self, now):
        if self.sched and not self.held:
            c = self.cfg
            plist = [] if self.prefix is None else [(self.prefix, 64, c["ra_valid"], c["ra_preferred"])]
            self.sched.set_prefixes(now, plist)

    def get_timer(self):
        return self.sched.get_timer() if self.sched else None

    def handle_timer(self, now):
        if not self.sched:
            return
        d = self.sched.get_timer()
        if d is None or now < d:
            return
        for msg in self.sched.handle_timer(now):
            self._send(msg)

    def _send(self, msg):
        try:
            self.sock.send(msg)
        except OSError as exc:
            log.warning("LAN %s: cannot send a router advertisement: %s", self.ifname, exc)

    def close(self, now, final=True):
        if self.sched and final:
            self._send(self.sched.stop(now))
        if self.sock:
            self.sup.loop.remove_reader(self.sock)
            self.sock.close()
            self.sock = None
        if self.addr is not None:
            try:
                self.sup.nl.addr_del(self.ifname, addr.ip6_ntoa(self.addr), 64)
            except Exception:
                pass
            self.addr = None

    def status(self, now):
        c = self.cfg
        st = {
            "interface": self.ifname,
            "prefix": "%s/64" % addr.ip6_ntoa(self.prefix) if self.prefix else None,
            "address": addr.ip6_ntoa(self.addr) if self.addr else None,
            "ra": bool(c["ra"]) and not self.sup.ipv4_only(),
            "ra_interval": c["ra_interval"],
            "deprecated": [],
        }
        if self.sched:
            for p in self.sched.prefixes_state(now):
                if p.get("state") == "deprecated":
                    st["deprecated"].append(p)
        return st


def assign_lan_prefixes(lans, prefixes):
    """ip6assign/ip6hint-style: each LAN gets a /64 out of the first delegated
    prefix; hinted LANs get their hint, the others the lowest free subnets."""
    if not prefixes:
        return [None] * len(lans)
    base, plen = prefixes[0]
    out = [None] * len(lans)
    used = set()
    for i, lan in enumerate(lans):
        h = lan.get("ip6hint")
        if h is not None:
            try:
                out[i] = addr.subnet(base, plen, h)
                used.add(h)
            except ValueError as exc:
                log.warning("LAN %s: ip6hint %x: %s", lan["interface"], h, exc)
    nxt = 0
    for i, lan in enumerate(lans):
        if out[i] is not None or lan.get("ip6hint") is not None:
            continue
        while nxt in used:
            nxt += 1
        try:
            out[i] = addr.subnet(base, plen, nxt)
        except ValueError:
            log.warning("LAN %s: no /64 left in %s", lan["interface"], addr.format_prefix6(base, plen))
            continue
        used.add(nxt)
    return out


class Supervisor:
    def __init__(self, loop, cfg, nl=None, on_state=None):
        from .adapters.netlink import Netlink

        self.loop = loop
        self.nl = nl or Netlink()
        self.cfg = cfg
        self.wall = Wall(loop.clock)
        self.tunnel = None
        self.lans = []
        self.config_error = None
        self.on_state = on_state
        self._state = None
        self.since = None
        self._lan_hold = None  # until when the LANs keep their state (RECONNECT_GRACE)
        loop.add_timer_source(self.get_timer, self.handle_timer)

    # A slow broker must not keep the LAN without its prefix for long.
    RA_HOLD_MAX = 2.0

    def start(self):
        now = self.loop.clock()
        self._enable_forwarding()
        self._start_tunnel(now, self.cfg)
        self._apply_lans(now, self.cfg)
        self.state_changed(now)
        self.loop.call_later(self.RA_HOLD_MAX, self._release_lans)

    def _release_lans(self):
        now = self.loop.clock()
        for p in self.lans:
            p.release(now)

    def ipv4_only(self):
        """True when the tunnel carries IPv4 only (TSP v4v6)."""
        return carries_ipv4(self.cfg.get("tunnel") or {})

    def _enable_forwarding(self):
        if not self.cfg["lans"]:
            return
        if self.ipv4_only():
            path, name, what = "/proc/sys/net/ipv4/ip_forward", "net.ipv4.ip_forward", "IPv4"
        else:
            path, name, what = "/proc/sys/net/ipv6/conf/all/forwarding", "net.ipv6.conf.all.forwarding", "IPv6"
        try:
            with open(path) as f:
                if f.read().strip() == "1":
                    return
            with open(path, "w") as f:
                f.write("1")
            log.info("enabled %s forwarding (%s=1) to route for the LAN", what, name)
        except OSError as exc:
            log.warning("cannot enable %s forwarding: %s", what, exc)

    def _start_tunnel(self, now, cfg):
        self.tunnel = TunnelRunner(self, cfg)
        try:
            self.tunnel.start(now)
        except (ConfigError, OSError) as exc:
            reason = getattr(exc, "reason", None) or str(exc)
            self.tunnel.fatal = "cannot set up the tunnel: %s" % reason
            log.error("tunnel %s: %s", self.tunnel.name, self.tunnel.fatal)

    def _apply_lans(self, now, cfg):
        lans = [lc for lc in cfg["lans"] if lc["enabled"]]
        old = {p.ifname: p for p in self.lans}
        ports = []
        for lc in lans:
            p = old.pop(lc["interface"], None)
            if p is not None and p.cfg != lc:
                p.close(now, final=False)
                p = None
            if p is None:
                p = LanPort(self, lc)
                p.open(now, cfg["tunnel"]["mtu"])
            ports.append(p)
        for p in old.values():
            p.close(now, final=True)
        self.lans = ports
        prefixes = self.tunnel.prefixes if self.tunnel and not self.tunnel.fatal else []
        for port, pfx in zip(ports, assign_lan_prefixes([p.cfg for p in ports], prefixes)):
            port.set_prefix(now, pfx)
            if self._state is not None and self._state[0] != "starting":
                port.release(now)

    def reload(self, cfg):
        now = self.loop.clock()
        self.config_error = None
        if cfg["tunnel"] != self.cfg["tunnel"] and not self.tunnel.apply(now, cfg):
            log.notice("configuration changed: restarting tunnel %s", cfg["tunnel"]["name"])
            self.tunnel.stop()
            self._start_tunnel(now, cfg)
        self.cfg = cfg
        self._apply_lans(now, cfg)
        self.state_changed(now)

    def _hold_lans(self, now):
        """True when the LANs' state is held: the tunnel is being re-established at once."""
        if self.tunnel is None or not self.tunnel.reconnecting(now):
            return False
        if self._lan_hold is None:
            self._lan_hold = now + RECONNECT_GRACE
            log.info("LANs keep their prefix and default router for %.0f s while the tunnel reconnects",
                     RECONNECT_GRACE)
        return True

    def _release_hold(self, now):
        """The hold ended (the tunnel is back, or the grace ran out): the LANs get the
        tunnel's current prefixes and default-router flag."""
        self._lan_hold = None
        self.prefixes_changed(now)
        up = self.is_up()
        for p in self.lans:
            p.set_default_router(now, up)

    def prefixes_changed(self, now):
        """The tunnel's delegated prefixes changed (a broker session came or went)."""
        if self.tunnel is not None and self.lans:
            if not self.tunnel.prefixes and self._hold_lans(now):
                return
            prefixes = self.tunnel.prefixes
            for port, pfx in zip(self.lans, assign_lan_prefixes([p.cfg for p in self.lans], prefixes)):
                port.set_prefix(now, pfx)

    def wan_hint(self):
        if self.tunnel and not self.tunnel.fatal:
            self.tunnel.wan_hint(self.loop.clock())

    def reconnect(self):
        now = self.loop.clock()
        if self.tunnel:
            self.tunnel.reconnect(now)

    def stop(self):
        now = self.loop.clock()
        for p in self.lans:
            p.close(now, final=True)
        self.lans = []
        if self.tunnel:
            self.tunnel.stop()
        self.loop.remove_timer_source(self.get_timer)

    # -- timers -------------------------------------------------------------
    def get_timer(self):
        ds = [self.tunnel.get_timer()] if self.tunnel else []
        ds += [p.get_timer() for p in self.lans]
        ds.append(self._lan_hold)
        ds = [d for d in ds if d is not None]
        return min(ds) if ds else None

    def handle_timer(self, now):
        if self.tunnel:
            self.tunnel.handle_timer(now)
        for p in self.lans:
            p.handle_timer(now)
        # Timers are where states that depend on time change (keepalive misses, retries);
        # every other change calls state_changed() where it happens. Reading the status
        # never does, so it never emits events.
        self.state_changed(now)
        if self._lan_hold is not None and now >= self._lan_hold:
            self._release_hold(now)

    # -- state ---------------------------------------------------------------
    def state_changed(self, now):
        state, reason = self.tunnel.state(now) if self.tunnel else ("down", "no tunnel")
        if (state, reason) != self._state:
            if self._state is None or state != self._state[0]:
                self.since = now
            self._state = (state, reason)
            log.notice("state: %s (%s)", state, reason)
            if state == "up" and self._lan_hold is not None:
                self._release_hold(now)  # back within the grace: nothing changes on the LANs
            hold = state != "up" and self._hold_lans(now)
            for p in self.lans:
                if not hold:
                    p.set_default_router(now, state == "up")
                if state != "starting":
                    p.release(now)
            if self.on_state:
                self.on_state(self.status())

    def is_up(self):
        return self._state is not None and self._state[0] == "up"

    def status(self):
        now = self.loop.clock()
        if self._state is not None:
            state, reason = self._state
        else:
            state, reason = self.tunnel.state(now) if self.tunnel else ("down", "no tunnel")
        st = self.tunnel.status(now, self.wall) if self.tunnel else {}
        st["state"] = state
        st["reason"] = reason
        st["since"] = self.wall(self.since)
        st["lans"] = [p.status(now) for p in self.lans]
        st["config_error"] = self.config_error
        st["now"] = time.time()  # the daemon's clock, for ages shown elsewhere (LuCI)
        return st
