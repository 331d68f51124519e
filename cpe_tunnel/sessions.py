"""Broker sessions: the part of a tunnel that talks to the broker, one class per
mode. The TunnelRunner owns the WAN, the data plane and the keepalive; a session
tells the broker where we are and reports what the broker said.

A session offers: configured_by_config (True: the configuration gives the tunnel's
addresses and prefixes, and the runner sets the tunnel up before start(); False: the
broker's answer does, through runner.configure()), start(now, wan_ip), stop(), wan_changed(now, ip),
keepalive_lost(now), reconnect(now), get_timer(), handle_timer(now),
state(now) -> None (no opinion) or (state, reason), public_ip / nat_detected,
last_error, status(wall) -> dict merged into the tunnel's status.
"""

import random

from .adapters.log import log
from .core import addr

_rand = random.SystemRandom().random


class StaticSession:
    """mode 'static': a plain 6in4 tunnel, nothing to tell the broker."""

    configured_by_config = True
    public_ip = None
    nat_detected = False
    last_error = None

    def __init__(self, runner, t):
        self.runner = runner

    def start(self, now, wan_ip, reason="start"):
        self.public_ip = wan_ip

    def stop(self):
        pass

    def wan_changed(self, now, ip):
        self.public_ip = ip

    def keepalive_lost(self, now):
        pass

    def reconnect(self, now):
        pass

    def get_timer(self):
        return None

    def handle_timer(self, now):
        pass

    def state(self, now):
        return None

    def status(self, wall):
        return {}


class HttpUpdateSession:
    """mode 'http-update': dyndns2-style endpoint update (tunnelbroker.net style),
    the sans-IO HttpUpdateClient driven through an HttpRunner worker."""

    configured_by_config = True

    def __init__(self, runner, t):
        from .adapters.http import HttpRunner
        from .core.httpupdate import HttpUpdateClient

        self.runner = runner
        self.loop = runner.loop
        self.t = t
        self.name = t["name"]
        self.client = HttpUpdateClient(
            t["update_url"], t["username"], t.get("updatekey") or t.get("password"), t["tunnelid"],
            send_myip=t["send_myip"],
            private_ranges=[(addr.ip4_aton(p), n) for p, n in (t.get("private_range") or [])],
            retry_min=t["update_retry_min"], retry_max=t["update_retry_max"], rand=_rand)
        self.http = HttpRunner(lambda: self.loop.call_soon_threadsafe(self._on_http_done))
        self.public_ip = None
        self.nat_detected = False
        self.last_error = None
        self.last_update = None
        self.wan_ip = None

    def start(self, now, wan_ip, reason="start"):
        t = self.t
        if not t["tls_verify"] and t["update_url"].startswith("https:"):
            log.warning("tunnel %s: TLS certificate verification is OFF for %s (tls_verify '0'):"
                        " anyone on the path can read the update key", self.name, t["update_url"])
        self.wan_ip = wan_ip
        if wan_ip:
            self.client.trigger(now, wan_ip, reason)
        self._pump(now)

    def stop(self):
        self.http.close()

    def _trigger(self, now, reason):
        if self.wan_ip:
            self.client.trigger(now, self.wan_ip, reason)
            self._pump(now)

    def wan_changed(self, now, ip):
        self.wan_ip = ip
        self._trigger(now, "wan-change")

    def keepalive_lost(self, now):
        # The broker stopped answering: maybe the NAT in front of us changed its
        # public address. Registering again (the broker takes the source) fixes that.
        self._trigger(now, "keepalive-lost")

    def reconnect(self, now):
        self._trigger(now, "reconnect")

    def _pump(self, now):
        if not self.http.busy:
            req = self.client.next_request(now)
            if req is not None:
                self.http.start(req, verify=self.t["tls_verify"], cafile=self.t.get("ca_file"))
        for name, ev in self.client.events():
            if name == "update-result":
                self._on_result(now, ev)

    def _on_result(self, now, ev):
        self.last_update = ev
        if ev.get("result") == "ok":
            self.public_ip = ev.get("registered_ip") or self.wan_ip
            self.nat_detected = bool(ev.get("nat_detected"))
            self.last_error = None
            log.notice("tunnel %s: broker update: %s", self.name, ev.get("message"))
        else:
            self.last_error = ev.get("message")
            log.warning("tunnel %s: broker update failed: %s", self.name, ev.get("message"))
        self.runner.sup.state_changed(now)

    def _on_http_done(self):
        now = self.loop.clock()
        res = self.http.poll_result()
        if res is None:
            return
        if res[0] == "response":
            self.client.response_received(now, res[1], res[2])
        else:
            self.client.transport_failed(now, res[1])
        self._pump(now)

    def get_timer(self):
        return self.client.get_timer()

    def handle_timer(self, now):
        d = self.client.get_timer()
        if d is not None and now >= d:
            self.client.handle_timer(now)
        self._pump(now)

    def state(self, now):
        us = self.client.status()
        if us.get("state") in ("auth-failed", "blocked", "bad-tunnel-id"):
            return "down", us.get("last_message") or us["state"]
        if self.public_ip is None:
            if us.get("last_message"):
                return "down", "cannot register with the broker: %s" % us["last_message"]
            return "starting", "registering our address with the broker"
        return None

    def status(self, wall):
        us = self.client.status()
        return {
            "broker": {"update_url": url_without_credentials(self.t["update_url"])},
            "last_update": {
                "state": us.get("state"),
                "result": us.get("last_result"),
                "message": us.get("last_message"),
                "time": wall(us.get("last_time")),
                "requests_sent": us.get("requests_sent"),
                "next_retry_in": us.get("next_retry_in"),
            },
        }


def url_without_credentials(url):
    # We never put credentials in the URL, but a user might have.
    scheme, sep, rest = url.partition("://")
    host, slash, path = rest.partition("/")
    return scheme + sep + host.rsplit("@", 1)[-1] + slash + path


def _tsp_session(runner, t):
    from .sessions_tsp import TspSession

    return TspSession(runner, t)


def _tic_session(runner, t):
    from .sessions_sixxs import TicSession

    return TicSession(runner, t)


SESSIONS = {"static": StaticSession, "http-update": HttpUpdateSession, "tsp": _tsp_session,
            "tic": _tic_session}
