"""Broker session for mode 'tsp': TSP (RFC 5572) over UDP (TCP when UDP gets no
answer), the sans-IO TspClient driven over a real socket, and the tunnel it offers
brought up through the TunnelRunner:

- v6v4: 6in4 (kernel sit or userspace) to the broker's IPv4 address; the TSP
  socket is closed once the tunnel is up.
- v6udpv4: IPv6 in UDP on the TSP session's own socket (same 5-tuple, so data rides
  the NAT mapping the session opened); the userspace data plane takes the socket
  over and hands TSP control datagrams back to us.
- v4v6: IPv4 in IPv6 (RFC 2473) for an IPv6-only WAN: TSP runs over IPv6 to the
  broker's IPv6 address, the tunnel is ip6tnl (kernel) or TUN + raw IPv6 protocol-4
  socket (userspace) to the broker's IPv6 endpoint; the runner puts the offered IPv4
  address, routes and the delegated IPv4 prefix in place.

Resolving the broker's name and connecting (TCP: up to 5 s) run in a worker thread
(adapters/connect.py): the loop never waits for them.

Recovery: the keepalive (to the broker's keepalive address, at its interval) losing
its answers, or a WAN address change, starts a new session. When a v6v4 tunnel gets
no answers although TSP itself works, something on the path drops protocol 41: the
next session asks for v6udpv4 instead, and status says so. Brokers are tried in
the configured order; a redirect replaces the list. Failures back off (jittered,
capped); an authentication failure backs off long.
"""

import random
import socket

from .adapters.connect import Connector

from .adapters.log import log
from .core import addr
from .core.backoff import Backoff
from .core.errors import ConfigError, RemoteProtocolError

_rand = random.SystemRandom().random
MAX_REDIRECTS = 5


def parse_server(text):
    """'host[:port]', '[IPv6]:port', '[IPv6]' or a bare IPv6 literal -> (host, port)."""
    host, port = text, 3653
    p = None
    if text.startswith("["):
        end = text.find("]")
        rest = text[end + 1:] if end > 0 else None
        if end < 0 or (rest and not rest.startswith(":")):
            raise ConfigError("server '%s': write an IPv6 address as [address] or [address]:port" % text)
        host = text[1:end]
        if not addr.is_ip6(host):
            raise ConfigError("server '%s': '%s' is not an IPv6 address" % (text, host))
        p = rest[1:] if rest else None
    elif text.count(":") == 1:
        host, p = text.split(":")
    elif ":" in text and not addr.is_ip6(text):
        raise ConfigError("server '%s' is neither host[:port] nor an IPv6 address" % text)
    if p is not None:
        if not p.isdigit() or not 0 < int(p) < 65536:
            raise ConfigError("server '%s': the port must be a number from 1 to 65535" % text)
        port = int(p)
    if not host:
        raise ConfigError("server '%s': no host name or address" % text)
    return host, port


def server_text(host, port):
    return ("[%s]:%d" if ":" in host else "%s:%d") % (host, port)


class TspSession:
    configured_by_config = False  # the broker's offer configures the tunnel

    def __init__(self, runner, t):
        self.runner = runner
        self.loop = runner.loop
        self.t = t
        self.name = t["name"]
        self.servers = [parse_server(x) for x in t["server"]]
        self.index = 0
        self.redirects = 0
        self.client = None
        self.sock = None
        self.connector = Connector(self.loop)
        self.connecting = False
        self.transport = None
        self.offer = None
        self.retry_at = None
        self.backoff = Backoff(2.0, 300.0, _rand)
        self.wan_ip = None
        self.public_ip = None
        self.nat_detected = False
        self.last_error = None
        self.reconnecting_since = None  # a new session right after a keepalive loss
        self.fallback_udp = False  # protocol 41 did not get through: ask for v6udpv4
        self.sessions = 0
        self.up_since = None
        self.v4v6 = runner.v4v6  # over IPv6: wan_ip is the WAN's IPv6 address

    # -- session life -------------------------------------------------------
    def start(self, now, wan_ip, reason="start"):
        self.wan_ip = wan_ip
        if wan_ip:
            self._connect(now)

    def stop(self):
        self._close_socket()
        self.client = None

    def _close_socket(self):
        self.connector.cancel()
        self.connecting = False
        if self.sock is not None:
            self.loop.remove_reader(self.sock)
            self.sock.close()
            self.sock = None

    def _mode(self):
        return "v6udpv4" if self.fallback_udp else self.t["tunnel_mode"]

    def _connect(self, now, transport=None):
        """A new session with the current broker."""
        from .core.tsp import TspClient

        t = self.t
        host, _port = self.servers[self.index % len(self.servers)]
        if transport is None:
            # IPv6 in UDP rides the TSP session's own UDP socket
            transport = "tcp" if t["tsp_transport"] == "tcp" and self._mode() != "v6udpv4" else "udp"
        self.sessions += 1
        local = {"local_ipv6": self.wan_ip} if self.v4v6 else {"local_ipv4": self.wan_ip}
        try:
            self.client = TspClient(
                username=t.get("username") or "", password=t.get("password") or "",
                auth=t["auth"] if t.get("username") else "anonymous", mode=self._mode(),
                host_type=t["host_type"], prefix_len=t["prefix_len"] or None,
                keepalive_interval=t["keepalive_interval"] or 30, transport=transport, server=host, rand=_rand,
                **local)
        except ConfigError as exc:
            self._failed(now, "cannot start a TSP session: %s" % exc.reason, fatal=True)
            return
        self._open(now, transport)

    def _open(self, now, transport):
        """(Re)connect the current client over a fresh socket: resolved and connected in
        a worker thread, the session starts in _on_connected()."""
        self._close_socket()
        self.retry_at = None
        host, port = self.servers[self.index % len(self.servers)]
        self.transport = transport
        self.connecting = True
        fam = socket.AF_INET6 if self.v4v6 else socket.AF_INET
        client = self.client
        self.connector.start(host, port, socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM,
                             lambda sock, ip, error: self._on_connected(client, transport, sock, ip, error),
                             family=fam, source=self.wan_ip, timeout=5.0)

    def _on_connected(self, client, transport, sock, ip, error):
        now = self.loop.clock()
        if client is not self.client or transport != self.transport:
            if sock is not None:
                sock.close()
            return
        self.connecting = False
        host, port = self.servers[self.index % len(self.servers)]
        if error is not None:
            self._failed(now, "the TSP broker %s: %s" % (server_text(host, port), error), fatal=False)
            return
        self.sock = sock
        self.loop.add_reader(sock, self._on_readable)
        log.info("tunnel %s: TSP session %d with %s (%s) over %s, asking for %s", self.name, self.sessions,
                 server_text(host, port), ip, transport, self._mode())
        local = {"local_ipv6": self.wan_ip} if self.v4v6 else {"local_ipv4": self.wan_ip}
        try:
            self.client.connect(now, transport=transport, **local)
        except ConfigError as exc:
            self._failed(now, "cannot start a TSP session: %s" % exc.reason, fatal=True)
            return
        self._flush(now)
        self.runner.sup.state_changed(now)  # "connecting" -> "asking for a tunnel"

    def _on_readable(self):
        now = self.loop.clock()
        if self.sock is None or self.client is None:
            return
        try:
            if self.transport == "udp":
                while True:
                    data = self.sock.recv(65536)
                    self.client.receive_datagram(data, now)
            else:
                data = self.sock.recv(65536)
                self.client.receive_data(data, now)
        except BlockingIOError:
            pass
        except OSError as exc:
            self._failed(now, "lost the TSP broker: %s" % (exc.strerror or exc), fatal=False)
            return
        self._flush(now)

    def _on_control(self, data):
        # a TSP control datagram that arrived on the v6udpv4 data socket
        if self.client is not None:
            self.client.receive_datagram(data, self.loop.clock())

    def _flush(self, now):
        c = self.client
        if c is None:
            return
        try:
            if self.sock is not None:
                if self.transport == "udp":
                    for d in c.datagrams_to_send(now):
                        self.sock.send(d)
                else:
                    out = c.data_to_send()
                    if out:
                        self.sock.sendall(out)
        except OSError as exc:
            log.debug("TSP send: %s", exc)
        for name, ev in c.events():
            getattr(self, "_ev_" + name.replace("-", "_"), self._ev_other)(now, ev)

    # -- client events ---------------------------------------------------------
    def _ev_tunnel_offer(self, now, offer):
        pass

    def _ev_tunnel_up(self, now, p):
        self.reconnecting_since = None
        self.offer = p
        self.backoff.reset()
        self.redirects = 0
        self.last_error = None
        if p["type"] == "v4v6":
            params = self._params_v4v6(p)
        else:
            params = self._params_v6(p)
        log.notice("tunnel %s: TSP tunnel %s up: %s, prefix %s%s", self.name, p["type"],
                   p["client_ipv4"] if p["type"] == "v4v6" else p["client_ipv6"],
                   "%s/%s" % (p["prefix"], p["prefix_len"]) if p.get("prefix") else "none",
                   " (NAT seen by the broker)" if self.nat_detected else "")
        self.up_since = now
        try:
            self.runner.configure(now, params)
        except (OSError, ConfigError, ValueError) as exc:
            self.runner.unconfigure(now)
            self._failed(now, "cannot set up the offered tunnel: %s" % (getattr(exc, "reason", None) or exc),
                         fatal=False)
            return
        self.runner.sup.state_changed(now)

    def _params_v6(self, p):
        self.nat_detected = bool(p.get("nat_detected"))
        self.public_ip = p.get("client_ipv4") if self.nat_detected else self.wan_ip
        local6 = addr.ip6_aton(p["client_ipv6"])
        peer6 = addr.ip6_aton(p["server_ipv6"])
        ka = p.get("keepalive_address")
        prefixes = []
        if p.get("prefix") and p.get("prefix_len"):
            prefixes = [(addr.mask(addr.ip6_aton(p["prefix"].split("/")[0]), p["prefix_len"]), p["prefix_len"])]
        params = {
            "local6": local6, "plen6": 128, "peer6": addr.ip6_aton(ka) if ka and ":" in ka else peer6,
            "prefixes": prefixes,
            "keepalive_interval": p.get("keepalive_interval") or self.t["keepalive_interval"],
            "mtu": min(p.get("mtu") or self.t["mtu"], self.t["mtu"]),
        }
        if p["type"] == "v6udpv4":
            self.loop.remove_reader(self.sock)
            params.update(kind="udp6", sock=self.sock,
                          on_control=lambda d: self.loop.call_soon_threadsafe(lambda: self._on_control(d)))
            self.sock = None  # the data plane owns it now
        else:
            params.update(kind="6in4", remote4=p["server_ipv4"])
            self._close_socket()
        return params

    def _params_v4v6(self, p):
        # The broker names the IPv6 source it saw; a different one than ours means
        # something on the path rewrote it (NPTv6). The tunnel goes to the broker's
        # IPv6 endpoint from our WAN address either way.
        seen = p.get("client_ipv6")
        self.nat_detected = bool(seen and self.wan_ip and addr.ip6_aton(seen) != addr.ip6_aton(self.wan_ip))
        self.public_ip = seen or self.wan_ip
        ka = p.get("keepalive_address")
        prefixes4 = []
        if p.get("prefix") and p.get("prefix_len") is not None:
            prefixes4 = [(addr.ip4_ntoa(addr.mask(addr.ip4_aton(p["prefix"].split("/")[0]), p["prefix_len"])),
                          p["prefix_len"])]
        self._close_socket()
        return {
            "kind": "4in6",
            "remote6": p["server_ipv6"],
            "local4": p["client_ipv4"],
            "peer4": p["server_ipv4"],
            "keepalive4": ka if ka and ":" not in ka else p["server_ipv4"],
            "prefixes4": prefixes4,
            "keepalive_interval": p.get("keepalive_interval") or self.t["keepalive_interval"],
            "mtu": min(p.get("mtu") or self.t["mtu"], self.t["mtu"]),
        }

    def _ev_redirect(self, now, brokers):
        self.redirects += 1
        if not brokers or self.redirects > MAX_REDIRECTS:
            self._failed(now, "the broker redirected us %d times" % self.redirects, fatal=False)
            return
        log.notice("tunnel %s: TSP broker redirects to %s", self.name, ", ".join(brokers))
        self.servers = [parse_server(b) for b in brokers]
        self.index = 0
        self._connect(now)

    def _ev_version_fallback(self, now, ev):
        self._open(now, self.transport)

    def _ev_need_tcp(self, now, ev):
        if self.t["tsp_transport"] == "udp":
            self._failed(now, "the TSP broker does not answer over UDP", fatal=False)
            return
        log.info("tunnel %s: no answer over UDP, trying TSP over TCP", self.name)
        self._open(now, "tcp")

    def _ev_error(self, now, ev):
        self._failed(now, ev.get("message") or "TSP error", fatal=bool(ev.get("fatal")), code=ev.get("code"))

    def _ev_other(self, now, ev):
        pass

    def _failed(self, now, message, fatal, code=None):
        self.reconnecting_since = None
        self.last_error = message
        self._close_socket()
        self.client = None
        self.index += 1  # the next broker in the list, if there is one
        delay = self.backoff.next_delay()
        if fatal:
            delay = max(delay, 300.0)
        self.retry_at = now + delay
        log.warning("tunnel %s: TSP: %s; next try in %.0f s", self.name, message, delay)
        self.runner.sup.state_changed(now)

    # -- runner hooks ----------------------------------------------------------
    def wan_changed(self, now, ip):
        self.wan_ip = ip
        self.runner.unconfigure(now)
        self.offer = None
        self._close_socket()
        self.client = None
        if ip:
            self._connect(now)

    def keepalive_lost(self, now):
        if self.offer is None:
            return
        if self.offer["type"] == "v6v4" and self.t["tunnel_mode"] == "v6anyv4" and not self.fallback_udp:
            self.fallback_udp = True
            log.warning("tunnel %s: no answers through the 6in4 tunnel although TSP works: protocol 41 "
                        "seems blocked on the way; asking for IPv6 in UDP (v6udpv4) instead", self.name)
        # The first loss since the tunnel came up: a new session at once (the usual cause
        # is a NAT that changed its address or dropped the mapping, and every second
        # counts), and the supervisor holds the LANs' state while it runs. Losses in a
        # row without a working tunnel in between back off.
        first = self.backoff.attempts == 0
        if first:
            self.reconnecting_since = now
        self.runner.unconfigure(now)
        self.offer = None
        self.last_error = "the tunnel stopped answering; starting a new TSP session"
        self.retry_at = now + (0.0 if first else self.backoff.next_delay() * 0.5)
        if first:
            self.backoff.next_delay()  # the next loss in a row waits
        self.runner.sup.state_changed(now)

    def reconnect(self, now):
        self.runner.unconfigure(now)
        self.offer = None
        if self.wan_ip:
            self._connect(now)

    def get_timer(self):
        if self.connecting:
            return self.retry_at  # the client starts once the socket is there
        ds = [self.retry_at]
        if self.client is not None:
            ds.append(self.client.get_timer())
        ds = [d for d in ds if d is not None]
        return min(ds) if ds else None

    def handle_timer(self, now):
        if self.retry_at is not None and now >= self.retry_at:
            self.retry_at = None
            if self.wan_ip:
                self._connect(now)
            return
        if self.client is not None and not self.connecting:
            d = self.client.get_timer()
            if d is not None and now >= d:
                try:
                    self.client.handle_timer(now)
                except RemoteProtocolError as exc:
                    self._failed(now, exc.reason, fatal=False)
                    return
                self._flush(now)

    def state(self, now):
        if self.offer is None:
            if self.last_error:
                return "down", self.last_error
            if self.connecting:
                return "starting", "connecting to the TSP broker %s" % server_text(
                    *self.servers[self.index % len(self.servers)])
            return "starting", "asking the TSP broker for a tunnel"
        return None

    def status(self, wall):
        host, port = self.servers[self.index % len(self.servers)]
        o = self.offer or {}
        if self.v4v6:
            broker = {"ipv4": None, "ipv6": o.get("server_ipv6"), "server": server_text(host, port)}
        else:
            broker = {"ipv4": o.get("server_ipv4"), "server": server_text(host, port)}
        return {
            "broker": broker,
            "tsp": {
                "tunnel_type": o.get("type"),
                "requested": self._mode(),
                "transport": self.transport,
                "sessions": self.sessions,
                "fallback": "protocol 41 blocked on the path: using IPv6 in UDP" if self.fallback_udp else None,
                "keepalive_address": o.get("keepalive_address"),
            },
        }
