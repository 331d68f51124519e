"""The reference TSP broker process.

    python -m tests.tsp_broker --config FILE.json --control /path/ctl.sock [--no-dataplane]

Run it inside the lab's broker namespace (tests.tsp_broker.handle.start_tsp_broker does).
It listens for TSP on UDP and TCP (port 3653) at `listen` (and `listen6`), terminates the
tunnels on a TUN device (tests.tsp_broker.dataplane; needs root) and answers a control
socket (AF_UNIX, reachable from any namespace). --no-dataplane: control plane only, no
TUN or raw sockets (no root needed; v6udpv4 data is then dropped).

Control protocol: one JSON object per line in, one per line out.
  {"cmd": "ping"}            -> {"ok": true, "result": {"pid", "ports": {"udp", "tcp"}, "dataplane"}}
  {"cmd": "state"}           -> {"ok": true, "result": {"tunnels": {id: {...}}, "sessions": [...],
                                 "counters", "answers", "drops", "faults", "ports", "dataplane"}}
  {"cmd": "set_fault", ...}  faults, any combination (see Registry.set_faults):
      "drop": N | "drop_in": N     discard the next N control requests unseen
      "drop_out": N                process the next N control requests, withhold the answers
      "refuse_auth": true          300 to the next authentications (until cleared)
      "busy": true | CODE          530 (or CODE) instead of CAPABILITY
      "redirect": [brokers] | {"brokers": [...], "code": 1001, "at": stage, "times": n}
      "status": {"code": N, "at": "version"|"auth"|"request"|"accept", "text": ..., "times": n}
      "raw": {"data_b64": ..., "at": stage, "times": n}   these bytes instead of the answer
      "clear": true                remove every fault first
  {"cmd": "reset_counters"}
  {"cmd": "quit"}
Errors: {"ok": false, "error": "reason"}.
The control socket, "quit", the log and main() are tests.peer_server's.
"""

import json
import os
import secrets
import selectors
import socket
import sys
import time

from ..peer_server import make_log, run_peer
from ..peer_util import Workers
from .config import TspBrokerConfigError, load_config
from .dataplane import IP_MTU_DISCOVER, IP_PMTUDISC_DONT, DataPlane
from .registry import Registry
from .transport import TcpStream, UdpControl

log = make_log("tsp-broker")


def nonce():
    return secrets.token_urlsafe(18)


class TcpFrontend(Workers):
    """TSP over TCP: listeners and connections in one selector thread."""

    IDLE = 30.0

    def __init__(self, registry, listeners, log=log):
        self.reg = registry
        self.listeners = listeners
        self.log = log
        self.sel = selectors.DefaultSelector()
        self.conns = {}  # sock -> [TcpStream, out bytes, last activity]
        self.init_workers()

    def start(self):
        for ls in self.listeners:
            ls.setblocking(False)
            self.sel.register(ls, selectors.EVENT_READ, "listen")
        self.sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        self.start_worker(self._run, "tcp")

    def stop(self):
        self.stop_workers()
        for s in list(self.conns):
            self._close(s)
        for ls in self.listeners:
            ls.close()
        self.close_wake()

    def info(self):
        return [c[0].session.info() for c in list(self.conns.values())]

    def _close(self, s):
        self.conns.pop(s, None)
        try:
            self.sel.unregister(s)
        except (KeyError, ValueError):
            pass
        s.close()

    def _run(self):
        while not self._stop:
            for key, ev in self.sel.select(1.0):
                s = key.fileobj
                if key.data == "wake":
                    continue
                if key.data == "listen":
                    try:
                        c, addr = s.accept()
                    except OSError:
                        continue
                    c.setblocking(False)
                    self.reg.count("tcp_connections")
                    stream = TcpStream(self.reg, (addr[0], addr[1]), time.monotonic(), nonce, self.log)
                    self.conns[c] = [stream, b"", time.monotonic()]
                    self.sel.register(c, selectors.EVENT_READ, "conn")
                    continue
                entry = self.conns.get(s)
                if entry is None:
                    continue
                if ev & selectors.EVENT_READ:
                    try:
                        data = s.recv(65536)
                    except (BlockingIOError, InterruptedError):
                        data = None
                    except OSError:
                        data = b""
                    if data == b"":
                        self._close(s)
                        continue
                    if data:
                        entry[2] = time.monotonic()
                        try:
                            entry[1] += entry[0].feed(data, entry[2])
                        except Exception as exc:  # a bug must not stop the TCP thread
                            self.log("tcp %s: %s: %s" % (entry[0].session.peer, type(exc).__name__, exc))
                            self._close(s)
                            continue
                if entry[1]:
                    try:
                        sent = s.send(entry[1])
                        entry[1] = entry[1][sent:]
                    except (BlockingIOError, InterruptedError):
                        pass
                    except OSError:
                        self._close(s)
                        continue
                if entry[0].done and not entry[1]:
                    try:
                        s.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                    self._close(s)
                    continue
                want = selectors.EVENT_READ | (selectors.EVENT_WRITE if entry[1] else 0)
                self.sel.modify(s, want, "conn")
            now = time.monotonic()
            for s, entry in list(self.conns.items()):
                if now - entry[2] > self.IDLE:
                    self._close(s)


class TspBroker:
    def __init__(self, config, dataplane=True):
        self.config = config
        self.registry = Registry(config)
        self.udp_control = UdpControl(self.registry, nonce, log)
        self.udp4 = self.udp6 = None
        tcp_listeners = []
        self.ports = {"udp": None, "tcp": None}
        try:
            if config.udp:
                self.udp4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                self.udp4.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DONT)
                self.udp4.bind((config.listen, config.port))
                self.udp4.setblocking(False)
                self.ports["udp"] = self.udp4.getsockname()[1]
                if config.listen6:
                    self.udp6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
                    self.udp6.bind((config.listen6, self.ports["udp"]))
                    self.udp6.setblocking(False)
            if config.tcp:
                for fam, addr in ((socket.AF_INET, config.listen), (socket.AF_INET6, config.listen6)):
                    if addr is None:
                        continue
                    ls = socket.socket(fam, socket.SOCK_STREAM)
                    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    ls.bind((addr, self.ports["tcp"] or config.port))
                    ls.listen(64)
                    tcp_listeners.append(ls)
                    self.ports["tcp"] = ls.getsockname()[1]
            self.dataplane = DataPlane(
                self.registry, self.udp4, self.udp6, self.udp_control, tun=dataplane, log=log
            )
        except BaseException:
            for s in [self.udp4, self.udp6] + tcp_listeners:
                if s is not None:
                    s.close()
            raise
        self.tcp = TcpFrontend(self.registry, tcp_listeners) if tcp_listeners else None

    def start(self):
        self.dataplane.start()
        if self.tcp is not None:
            self.tcp.start()

    def stop(self):
        if self.tcp is not None:
            self.tcp.stop()
        self.dataplane.stop()
        for s in (self.udp4, self.udp6):
            if s is not None:
                s.close()

    def state(self):
        sessions = self.udp_control.info() + (self.tcp.info() if self.tcp else [])
        st = self.registry.state(sessions)
        st["ports"] = dict(self.ports)
        st["dataplane"] = self.dataplane.has_tun
        st["tun"] = self.config.tun_name if self.dataplane.has_tun else None
        return st

    def command(self, req):
        """One control request (a dict with a string "cmd"; tests.peer_server checks that
        and answers "quit"): returns the result or raises ValueError(reason)."""
        cmd = req["cmd"]
        if cmd == "ping":
            return {"pid": os.getpid(), "ports": dict(self.ports), "dataplane": self.dataplane.has_tun}
        if cmd == "state":
            return self.state()
        if cmd == "reset_counters":
            self.registry.reset_counters()
            return self.state()
        if cmd == "set_fault":
            args = dict(req)
            del args["cmd"]
            out = self.registry.set_faults(args)
            log("control: faults %s" % json.dumps(out, sort_keys=True))
            return out
        raise ValueError("unknown command %r" % (cmd,))


def _ready(broker, config):
    return "udp %s tcp %s on %s%s, %d account(s), types %s, auth %s, dataplane %s" % (
        broker.ports["udp"],
        broker.ports["tcp"],
        config.listen,
        (" and " + config.listen6) if config.listen6 else "",
        len(config.accounts),
        ",".join(config.tunnel_types),
        ",".join(config.auth),
        config.tun_name if broker.dataplane.has_tun else "off",
    )


def main(argv=None):
    return run_peer(
        argv,
        prog="python -m tests.tsp_broker",
        doc=__doc__,
        switch=("--no-dataplane", "control plane only: no TUN device, no raw sockets (no root needed)"),
        load_config=load_config,
        config_error=TspBrokerConfigError,
        make_peer=lambda config, dataplane: TspBroker(config, dataplane=dataplane),
        ready=_ready,
        log=log,
    )


if __name__ == "__main__":
    sys.exit(main())
