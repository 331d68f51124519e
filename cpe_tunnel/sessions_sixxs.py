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
A clock more than 120 s off is reported in plain words and retried slowly (every
CLOCK_RETRY s) instead of hammering the server - and at once when the clock is set:
the daemon's `clock_set` method (OpenWrt: hotplug.d/ntp after sysntpd steps the clock)
calls clock_set(), and on plain Linux a timerfd that the kernel cancels when the clock
is set (adapters/clock.py) is watched while TIC waits for the time.

Nothing here blocks the loop: the TCP connect runs in adapters/connect.py's worker
thread, the STARTTLS handshake is driven by readability (do_handshake() again on each
wakeup; a rare want-write is retried on a short timer), and TIC lines are sent with
non-blocking send(), what does not fit kept in a buffer and retried.

AYIYA control messages from the PoP (the data plane verifies them - signature, PoP
identity, time - and hands them over from its rx thread): queued to the loop through
call_soon_threadsafe (bounded), verified once more, counted by opcode in status
(`sixxs.control_rx`); a MOTD is logged once per change and shown as `sixxs.motd`.
Echo requests are answered by the data plane itself.
"""

import collections
import json
import os
import random
import socket
import time

from .adapters.clock import ClockWatch
from .adapters.connect import Connector
from .adapters.log import log
from .core import addr, ayiya
from .core.backoff import Backoff
from .core.errors import ConfigError

_rand = random.SystemRandom().random

# ssl (about 4 MiB of RSS with libssl/libcrypto) is imported only when a TIC session
# starts TLS; until then no socket can raise its exceptions.
_SSL_WANT = ()  # (ssl.SSLWantReadError, ssl.SSLWantWriteError) once ssl is imported


def _import_ssl():
    global _SSL_WANT
    import ssl

    _SSL_WANT = (ssl.SSLWantReadError, ssl.SSLWantWriteError)
    return ssl

CLOCK_RETRY = 60.0  # TIC retry while the clock is off and nobody says it was set
CONNECT_TIMEOUT = 5.0
WRITE_RETRY = 0.05  # a send or TLS handshake that would block is tried again after this
MAX_PENDING = 65536  # unsent TIC bytes we keep at most
CONTROL_QUEUE = 32  # PoP control datagrams waiting for the loop at most


class TicSession:
    configured_by_config = False  # TIC's tunnel config (or its cache) configures the tunnel

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
        self.connector = Connector(self.loop)
        self._pending = bytearray()  # TIC bytes not yet taken by the socket
        self._handshaking = False  # STARTTLS handshake under way
        self._write_timer = None
        self.clock_wait = False  # TIC said our clock is off; waiting for it to be set
        self.clock_watch = ClockWatch(self.loop, self._on_clock_watch)
        self.clock_sets = 0  # clock-set notices that restarted TIC
        # AYIYA control messages from the PoP
        self._ctl_queue = collections.deque()
        self._ctl_scheduled = False
        self._ctl_overflow = 0
        self._ayiya_key = None
        self._ayiya_peer = None
        self.control_rx = {}
        self.motd = None  # {"text", "time" (loop clock, first seen), "last" (loop clock)}

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
        self._set_clock_wait(False)
        if self.hb_sock is not None:
            self.hb_sock.close()
            self.hb_sock = None

    def _close_tic(self):
        self.connector.cancel()
        if self._write_timer is not None:
            self.loop.cancel(self._write_timer)
            self._write_timer = None
        if self.sock is not None:
            self.loop.remove_reader(self.sock)
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None
        self._pending = bytearray()
        self._handshaking = False
        self.client = None

    def _fetch(self, now):
        from .core.tic import TicClient

        self._close_tic()
        self.retry_at = None
        t = self.t
        try:
            self.client = TicClient(t["username"], t["password"], tunnel_id=t.get("tunnelid"),
                                    starttls=t["tic_tls"], client_name="cpe-tunnel")
        except ConfigError as exc:
            self._tic_failed(now, "TIC settings: %s" % exc.reason, "config")
            return
        # resolve + connect off the loop; _on_connected comes back into it
        self.connector.start(self.server[0], self.server[1], socket.SOCK_STREAM, self._on_connected,
                             timeout=CONNECT_TIMEOUT)

    def _on_connected(self, sock, ip, error):
        now = self.loop.clock()
        if self.client is None or self.sock is not None:  # stopped meanwhile
            if sock is not None:
                sock.close()
            return
        if error is not None:
            self._tic_failed(now, "cannot reach the TIC server: %s" % error, "backoff")
            return
        self.sock = sock
        self.loop.add_reader(sock, self._on_readable)
        self.client.connection_made(now)
        self._flush(now)

    def _on_readable(self):
        now = self.loop.clock()
        sock = self.sock
        if sock is None or self.client is None:
            return
        if self._handshaking:
            self._handshake(now)
            return
        while True:
            try:
                data = sock.recv(65536)
            except (BlockingIOError, InterruptedError) + _SSL_WANT:
                return
            except OSError as exc:  # ssl.SSLError included
                self._tic_failed(now, "lost the TIC server: %s" % (getattr(exc, "strerror", None) or exc),
                                 "backoff")
                return
            if not data:
                self.client.connection_closed(now)
            else:
                self.client.receive_data(data, now, wall=time.time())
            self._flush(now)
            # TLS may hold decrypted bytes that select() will not announce
            if (not data or self.sock is not sock or self.client is None or self._handshaking
                    or not hasattr(sock, "pending") or not sock.pending()):  # pending: TLS only
                return

    def _flush(self, now):
        c = self.client
        if c is None:
            return
        out = c.data_to_send()
        if out and self.sock is not None:
            self._pending += out
            if not self._write(now):
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
                self._set_clock_wait(False)
                self._bring_up(now, cfg)
            elif name == "failed":
                self._tic_failed(now, ev.get("message") or "TIC failed", ev.get("retry") or "backoff")
                return
        if c.wants_close and self.client is c and c.tunnel_config is None:
            self._close_tic()

    def _write(self, now):
        """Send what is pending without blocking. False when the session failed."""
        if self._handshaking or self.sock is None:
            return True  # goes out once the handshake is done
        if len(self._pending) > MAX_PENDING:
            self._tic_failed(now, "the TIC server does not take what we send", "backoff")
            return False
        while self._pending:
            try:
                n = self.sock.send(self._pending)
            except (BlockingIOError, InterruptedError) + _SSL_WANT:
                self._retry_soon()
                return True
            except OSError as exc:
                self._tic_failed(now, "lost the TIC server: %s" % (getattr(exc, "strerror", None) or exc),
                                 "backoff")
                return False
            del self._pending[:n]
        return True

    def _retry_soon(self):
        if self._write_timer is None:
            self._write_timer = self.loop.call_later(WRITE_RETRY, self._on_write_timer)

    def _on_write_timer(self):
        self._write_timer = None
        now = self.loop.clock()
        if self.sock is None or self.client is None:
            return
        if self._handshaking:
            self._handshake(now)
        elif self._write(now):
            self._flush(now)

    def _start_tls(self, now):
        t = self.t
        try:
            ssl = _import_ssl()
            ctx = ssl.create_default_context(cafile=t.get("ca_file"))
            if not t["tls_verify"]:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            self.loop.remove_reader(self.sock)
            self.sock = ctx.wrap_socket(self.sock, server_hostname=self.server[0],
                                        do_handshake_on_connect=False)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            self.client.tls_failed(now, "TLS with the TIC server failed: %s" % exc)
            self._flush(now)
            return
        self._handshaking = True
        self.loop.add_reader(self.sock, self._on_readable)
        self._handshake(now)

    def _handshake(self, now):
        ssl = _import_ssl()
        try:
            self.sock.do_handshake()
        except ssl.SSLWantReadError:
            return  # the server's next flight wakes us
        except ssl.SSLWantWriteError:
            self._retry_soon()
            return
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "verify_message", None) or getattr(exc, "reason", None) or exc
            self._handshaking = False
            self.client.tls_failed(now, "TLS with the TIC server failed: %s" % reason)
            self._flush(now)
            return
        self._handshaking = False
        self.client.tls_started(now)
        self._flush(now)

    # -- the clock -------------------------------------------------------------
    def _set_clock_wait(self, flag):
        self.clock_wait = flag
        if flag:
            self.clock_watch.start()  # False where there is no timerfd: the slow retry stays
        else:
            self.clock_watch.stop()

    def clock_set(self, now):
        """The system clock was set (NTP step, hotplug ntp, timerfd notice). When TIC
        failed on the clock, ask it again now. True when a new TIC session started."""
        if not self.clock_wait or self.client is not None:
            return False
        self.clock_sets += 1
        log.notice("tunnel %s: the clock was set; asking the TIC server again", self.name)
        self._fetch(now)
        return True

    def _on_clock_watch(self):
        self.clock_set(self.loop.clock())

    def _tic_failed(self, now, message, retry, use_cache=True):
        self._close_tic()
        self.last_error = message
        self._set_clock_wait(retry == "time-sync")
        if retry == "time-sync":
            delay = CLOCK_RETRY  # the clock is off: wait for it to be set, do not hammer
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
            self._ayiya_key = ayiya.password_hash(cfg["password"])
            self._ayiya_peer = params["peer6"]
            params.update(kind="ayiya", password=cfg["password"], on_control=self._on_control)
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

    # -- AYIYA control messages ------------------------------------------------------
    def _on_control(self, datagram):
        """In the data plane's rx thread: queue for the loop, nothing else."""
        q = self._ctl_queue
        if len(q) >= CONTROL_QUEUE:
            self._ctl_overflow += 1
            return
        q.append(bytes(datagram))
        if not self._ctl_scheduled:
            self._ctl_scheduled = True
            self.loop.call_soon_threadsafe(self._drain_control)

    def _drain_control(self):
        self._ctl_scheduled = False
        now = self.loop.clock()
        q = self._ctl_queue
        while q:
            self._control(q.popleft(), now)

    def _control(self, datagram, now):
        key, peer = self._ayiya_key, self._ayiya_peer
        if key is None:
            return
        try:  # the data plane checked it already; a second look costs nothing here
            op, _nh, payload, _epoch = ayiya.ayiya_decode(datagram, key, time.time(),
                                                          expected_identity=peer)
        except ayiya.AyiyaError as exc:
            self.control_rx["unverified"] = self.control_rx.get("unverified", 0) + 1
            log.debug("tunnel %s: PoP control message not accepted: %s", self.name, exc.code)
            return
        if op == ayiya.OP_FORWARD:
            return
        name, text = ayiya.control_message(op, payload)
        self.control_rx[name] = self.control_rx.get(name, 0) + 1
        if op == ayiya.OP_MOTD:
            if self.motd is None or self.motd["text"] != text:
                self.motd = {"text": text, "time": now, "last": now}
                log.notice("tunnel %s: message from the PoP: %s", self.name, text or "(empty)")
                self.runner.sup.state_changed(now)
            else:
                self.motd["last"] = now

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
                "waiting_for_clock": self.clock_wait,
                "clock_watch": "timerfd" if self.clock_watch.active else None,
                "next_tic_in": None if self.retry_at is None else max(0.0, self.retry_at - self.loop.clock()),
                "control_rx": dict(self.control_rx),
            },
        }
        if self._ctl_overflow:
            st["sixxs"]["control_rx"]["dropped (queue full)"] = self._ctl_overflow
        if self.motd is not None:
            st["sixxs"]["motd"] = {"text": self.motd["text"], "time": wall(self.motd["time"]),
                                   "last": wall(self.motd["last"])}
        if self.hb is not None:
            st["sixxs"]["heartbeat"] = self.hb.status(self.loop.clock())
        return st
