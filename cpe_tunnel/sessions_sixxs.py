"""Broker session for mode 'tic': the SixXS family.

1. TIC (TCP 3874, sans-IO TicClient): log in (STARTTLS when offered or required), check
   the router's clock against the server's, fetch the tunnel. The fetched tunnel
   config is cached (0600, it holds the tunnel password) under the state directory so
   the tunnel comes back after a reboot even when TIC is down.
2. The tunnel, by the type TIC gives:
   - 6in4-static: a plain 6in4 tunnel to the PoP;
   - 6in4-heartbeat: 6in4 plus signed heartbeats (UDP 3740) at TIC's interval and at
     once on every WAN address change, so the PoP moves the endpoint;
   - ayiya: the userspace AYIYA data plane (IPv6 in signed UDP 5072, works behind NAT)
     with beats at TIC's interval.
A clock more than 120 s off is reported in plain words and retried slowly (waiting
for the time to be set) instead of hammering the server.
"""

import json
import os
import random
import socket
import ssl
import time

from .adapters.log import log
from .core import addr, ayiya
from .core.backoff import Backoff
from .core.errors import ConfigError

_rand = random.SystemRandom().random


class TicSession:
    def __init__(self, runner, t):
        from .sessions_tsp import parse_server

        self.runner = runner
        self.loop = runner.loop
        self.t = t
        self.name = t["name"]
        host, port = parse_server(t["server"][0])
        self.server = (host, 3874 if port == 3653 else port)
        self.client = None
        self.sock = None
        self.cfg = None  # the tunnel config (from TIC or the cache)
        self.source = None  # 'TIC' or 'cache'
        self.retry_at = None
        self.backoff = Backoff(5.0, 900.0, _rand)
        self.wan_ip = None
        self.public_ip = None
        self.nat_detected = False
        self.last_error = None
        self.hb = None  # HeartbeatSession
        self.hb_sock = None
        self.beat_at = None  # next AYIYA beat
        self.state_dir = runner.cfg["globals"]["state_dir"]

    # -- cache ---------------------------------------------------------------
    def _cache_path(self):
        key = self.t.get("tunnelid") or self.t["username"]
        return os.path.join(self.state_dir, "tic-%s.json" % "".join(c for c in key if c.isalnum() or c in "-_."))

    def _save_cache(self, cfg):
        try:
            os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
            path = self._cache_path()
            tmp = path + ".tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(cfg, f)
            os.rename(tmp, path)
        except OSError as exc:
            log.warning("tunnel %s: cannot cache the TIC tunnel config: %s", self.name, exc)

    def _load_cache(self):
        from .core.tic import validate_tunnel_config

        try:
            with open(self._cache_path()) as f:
                return validate_tunnel_config(json.load(f))
        except (OSError, ValueError, ConfigError):
            return None

    # -- session life ------------------------------------------------------------
    def start(self, now, wan_ip, reason="start"):
        self.wan_ip = wan_ip
        self._fetch(now)

    def stop(self):
        self._close_tic()
        if self.hb_sock is not None:
            self.hb_sock.close()
            self.hb_sock = None

    def _close_tic(self):
        if self.sock is not None:
            self.loop.remove_reader(self.sock)
            self.sock.close()
            self.sock = None
        self.client = None

    def _fetch(self, now):
        from .core.tic import TicClient

        self.retry_at = None
        t = self.t
        try:
            self.client = TicClient(t["username"], t["password"], tunnel_id=t.get("tunnelid"),
                                    starttls=t["tic_tls"], client_name="cpe-tunnel")
        except ConfigError as exc:
            self._tic_failed(now, "TIC settings: %s" % exc.reason, "config")
            return
        try:
            s = socket.create_connection(self.server, timeout=5.0)
            s.setblocking(False)
        except OSError as exc:
            self._tic_failed(now, "cannot reach the TIC server %s:%d: %s" % (
                self.server[0], self.server[1], exc.strerror or exc), "backoff")
            return
        self.sock = s
        self.loop.add_reader(s, self._on_readable)
        self.client.connection_made(now)
        self._flush(now)

    def _on_readable(self):
        now = self.loop.clock()
        if self.sock is None:
            return
        try:
            data = self.sock.recv(65536)
        except (BlockingIOError, ssl.SSLWantReadError):
            return
        except OSError as exc:
            self._tic_failed(now, "lost the TIC server: %s" % exc, "backoff")
            return
        if not data:
            self.client.connection_closed(now)
        else:
            self.client.receive_data(data, now, wall=time.time())
        self._flush(now)

    def _flush(self, now):
        c = self.client
        if c is None:
            return
        out = c.data_to_send()
        if out and self.sock is not None:
            try:
                self.sock.setblocking(True)
                self.sock.settimeout(5.0)
                self.sock.sendall(out)
                self.sock.setblocking(False)
            except OSError as exc:
                self._tic_failed(now, "lost the TIC server: %s" % exc, "backoff")
                return
        for name, ev in c.events():
            if name == "start-tls":
                self._start_tls(now)
            elif name == "done":
                cfg = c.tunnel_config
                self._close_tic()
                self._save_cache(cfg)
                self.source = "TIC"
                self.backoff.reset()
                self._bring_up(now, cfg)
            elif name == "failed":
                self._tic_failed(now, ev.get("message") or "TIC failed", ev.get("retry") or "backoff")
                return
        if c.wants_close and self.client is c and c.tunnel_config is None:
            self._close_tic()

    def _start_tls(self, now):
        t = self.t
        try:
            ctx = ssl.create_default_context(cafile=t.get("ca_file"))
            if not t["tls_verify"]:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            self.loop.remove_reader(self.sock)
            self.sock.setblocking(True)
            self.sock.settimeout(5.0)
            self.sock = ctx.wrap_socket(self.sock, server_hostname=self.server[0])
            self.sock.setblocking(False)
            self.loop.add_reader(self.sock, self._on_readable)
        except (OSError, ssl.SSLError) as exc:
            self.client.tls_failed(now, "TLS with the TIC server failed: %s" % exc)
            self._flush(now)
            return
        self.client.tls_started(now)
        self._flush(now)

    def _tic_failed(self, now, message, retry, use_cache=True):
        self._close_tic()
        self.last_error = message
        if retry == "time-sync":
            delay = 60.0  # the clock is off: wait for it to be set, do not hammer
        elif retry == "config":
            delay = 3600.0
        else:
            delay = self.backoff.next_delay()
        self.retry_at = now + delay
        log.warning("tunnel %s: TIC: %s; next try in %.0f s", self.name, message, delay)
        if self.cfg is None and use_cache:
            cached = self._load_cache()
            if cached is not None:
                log.notice("tunnel %s: using the cached tunnel config from the last TIC session", self.name)
                self.source = "cache"
                self._bring_up(now, cached)
                return
        self.runner.sup.state_changed(now)

    # -- the tunnel ----------------------------------------------------------------
    def _bring_up(self, now, cfg):
        if self.cfg is not None:
            self.runner.unconfigure(now)
        self.cfg = cfg
        self.last_error = None
        t = self.t
        local6 = addr.ip6_aton(cfg["ipv6_local"])
        params = {
            "local6": local6, "plen6": cfg["prefixlen"], "peer6": addr.ip6_aton(cfg["ipv6_pop"]),
            "prefixes": [(addr.ip6_aton(p), n) for p, n in (t.get("ip6prefix") or [])],
            "keepalive_interval": t["keepalive_interval"],
            "mtu": min(cfg.get("mtu") or t["mtu"], t["mtu"]),
            "remote4": cfg["ipv4_pop"],
        }
        kind = cfg["type"]
        if kind == "ayiya":
            params.update(kind="ayiya", password=cfg["password"],
                          on_control=lambda d: None)
        else:
            params["kind"] = "6in4"
        log.notice("tunnel %s: %s tunnel %s from %s: %s, PoP %s", self.name, kind, cfg["tunnel_id"], self.source,
                   cfg["ipv6_local"], cfg["ipv4_pop"])
        try:
            self.runner.configure(now, params)
        except (OSError, ConfigError, ValueError) as exc:
            self.runner.unconfigure(now)
            self.cfg = None
            self._tic_failed(now, "cannot set up the tunnel: %s" % (getattr(exc, "reason", None) or exc), "backoff",
                             use_cache=False)
            return
        self.public_ip = self.wan_ip
        if kind == "6in4-heartbeat":
            self._start_heartbeat(now)
        elif kind == "ayiya":
            self.beat_at = now  # announce ourselves at once
        self.runner.sup.state_changed(now)

    def _start_heartbeat(self, now):
        from .core.heartbeat import HeartbeatSession

        cfg = self.cfg
        self.hb = HeartbeatSession(cfg.get("heartbeat_interval") or 60, cfg["ipv6_local"], cfg["password"],
                                   ipv4=self.wan_ip,
                                   private_ranges=[(addr.ip4_aton(p), n) for p, n in
                                                   (self.t.get("private_range") or [])])
        self._open_hb_socket()
        self.hb.wan_changed(now, self.wan_ip)
        self._send_heartbeats(now)

    def _open_hb_socket(self):
        if self.hb_sock is not None:
            self.hb_sock.close()
        self.hb_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        if self.wan_ip:
            try:
                self.hb_sock.bind((self.wan_ip, 0))
            except OSError:
                pass
        self.hb_sock.setblocking(False)

    def _send_heartbeats(self, now):
        if self.hb is None:
            return
        d = self.hb.get_timer()
        if d is not None and now >= d:
            self.hb.handle_timer(now, wall=time.time())
        for dgram in self.hb.datagrams_to_send():
            try:
                self.hb_sock.sendto(dgram, (self.cfg["ipv4_pop"], 3740))
            except OSError as exc:
                log.debug("heartbeat send: %s", exc)

    # -- runner hooks -------------------------------------------------------------
    def wan_changed(self, now, ip):
        self.wan_ip = ip
        self.public_ip = ip
        if self.hb is not None:
            self._open_hb_socket()
            self.hb.wan_changed(now, ip)  # the next heartbeat goes out at once
            self._send_heartbeats(now)
        if self.cfg is not None and self.cfg["type"] == "ayiya":
            self.beat_at = now

    def keepalive_lost(self, now):
        # tell the PoP where we are again, at once
        if self.hb is not None:
            self.hb.wan_changed(now, self.wan_ip)
            self._send_heartbeats(now)
        elif self.cfg is not None and self.cfg["type"] == "ayiya":
            self.beat_at = now

    def reconnect(self, now):
        self._close_tic()
        self._fetch(now)

    def get_timer(self):
        ds = [self.retry_at, self.beat_at]
        if self.client is not None:
            ds.append(self.client.get_timer())
        if self.hb is not None:
            ds.append(self.hb.get_timer())
        ds = [d for d in ds if d is not None]
        return min(ds) if ds else None

    def handle_timer(self, now):
        if self.retry_at is not None and now >= self.retry_at:
            self.retry_at = None
            self._fetch(now)
        if self.client is not None:
            d = self.client.get_timer()
            if d is not None and now >= d:
                self.client.handle_timer(now)
                self._flush(now)
        self._send_heartbeats(now)
        if self.beat_at is not None and now >= self.beat_at:
            dp = self.runner.dp
            if dp is not None and hasattr(dp, "send_control"):
                try:
                    dp.send_control(ayiya.OP_NOOP)
                except OSError as exc:
                    log.debug("AYIYA beat: %s", exc)
            self.beat_at = now + ((self.cfg or {}).get("heartbeat_interval") or 60)

    def state(self, now):
        if self.cfg is None:
            if self.last_error:
                return "down", self.last_error
            return "starting", "fetching the tunnel from the TIC server"
        return None

    def status(self, wall):
        cfg = self.cfg or {}
        st = {
            "broker": {"ipv4": cfg.get("ipv4_pop"), "server": "%s:%d" % self.server},
            "sixxs": {
                "tunnel_id": cfg.get("tunnel_id"),
                "type": cfg.get("type"),
                "pop": cfg.get("pop_id"),
                "config_from": self.source,
                "tic_error": self.last_error,
            },
        }
        if self.hb is not None:
            st["sixxs"]["heartbeat"] = self.hb.status(self.loop.clock())
        return st
