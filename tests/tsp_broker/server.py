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
"""

import argparse
import json
import os
import secrets
import selectors
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time

from .config import TspBrokerConfigError, load_config
from .dataplane import IP_MTU_DISCOVER, IP_PMTUDISC_DONT, DataPlane
from .registry import Registry
from .transport import TcpStream, UdpControl


def log(msg):
    sys.stderr.write("%s tsp-broker: %s\n" % (time.strftime("%H:%M:%S"), msg))
    sys.stderr.flush()


def nonce():
    return secrets.token_urlsafe(18)


class TcpFrontend:
    """TSP over TCP: listeners and connections in one selector thread."""

    IDLE = 30.0

    def __init__(self, registry, listeners, log=log):
        self.reg = registry
        self.listeners = listeners
        self.log = log
        self.sel = selectors.DefaultSelector()
        self.conns = {}  # sock -> [TcpStream, out bytes, last activity]
        self._stop = False
        self._wake_r, self._wake_w = socket.socketpair()
        self.thread = None

    def start(self):
        for ls in self.listeners:
            ls.setblocking(False)
            self.sel.register(ls, selectors.EVENT_READ, "listen")
        self._wake_r.setblocking(False)
        self.sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        self.thread = threading.Thread(target=self._run, name="tcp", daemon=True)
        self.thread.start()

    def stop(self):
        self._stop = True
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        if self.thread is not None:
            self.thread.join(5)
        for s in list(self.conns):
            self._close(s)
        for ls in self.listeners:
            ls.close()
        self._wake_r.close()
        self._wake_w.close()

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
        self.control = None

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
        if not isinstance(req, dict) or not isinstance(req.get("cmd"), str):
            raise ValueError("a request is a JSON object with a string 'cmd'")
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
        if cmd == "quit":
            threading.Thread(target=self._quit, daemon=True).start()
            return {"quitting": True}
        raise ValueError("unknown command %r" % (cmd,))

    def _quit(self):
        time.sleep(0.05)
        self.control.shutdown()


class _ControlHandler(socketserver.StreamRequestHandler):
    def handle(self):
        broker = self.server.broker
        while True:
            try:
                line = self.rfile.readline(1 << 16)
            except OSError:
                return
            if not line:
                return
            if not line.strip():
                continue
            try:
                out = {"ok": True, "result": broker.command(json.loads(line.decode("utf-8")))}
            except (ValueError, UnicodeDecodeError) as exc:
                out = {"ok": False, "error": str(exc)}
            except Exception as exc:  # report, keep serving
                out = {"ok": False, "error": "%s: %s" % (type(exc).__name__, exc)}
            try:
                self.wfile.write((json.dumps(out) + "\n").encode("utf-8"))
                self.wfile.flush()
            except OSError:
                return


class _ControlServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m tests.tsp_broker", description=__doc__.split("\n")[0])
    ap.add_argument("--config", required=True, help="JSON configuration file")
    ap.add_argument("--control", required=True, help="path of the AF_UNIX control socket")
    ap.add_argument(
        "--no-dataplane",
        action="store_true",
        help="control plane only: no TUN device, no raw sockets (no root needed)",
    )
    args = ap.parse_args(argv)
    try:
        config = load_config(args.config)
    except TspBrokerConfigError as exc:
        log("configuration error: %s" % exc)
        return 2
    try:
        broker = TspBroker(config, dataplane=not args.no_dataplane)
    except (OSError, subprocess.CalledProcessError) as exc:
        log(
            "cannot start: %s%s" % (exc, (" / " + exc.stderr.strip()) if getattr(exc, "stderr", None) else "")
        )
        return 1
    try:
        os.unlink(args.control)
    except FileNotFoundError:
        pass
    old = os.umask(0o077)
    try:
        control = _ControlServer(args.control, _ControlHandler)
    finally:
        os.umask(old)
    control.broker = broker
    broker.control = control
    broker.start()

    def on_signal(signum, frame):
        threading.Thread(target=control.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log(
        "ready: udp %s tcp %s on %s%s, %d account(s), types %s, auth %s, dataplane %s, control %s"
        % (
            broker.ports["udp"],
            broker.ports["tcp"],
            config.listen,
            (" and " + config.listen6) if config.listen6 else "",
            len(config.accounts),
            ",".join(config.tunnel_types),
            ",".join(config.auth),
            config.tun_name if broker.dataplane.has_tun else "off",
            args.control,
        )
    )
    try:
        control.serve_forever(poll_interval=0.05)
    finally:
        control.server_close()
        broker.stop()
        try:
            os.unlink(args.control)
        except OSError:
            pass
        log("stopped")
    return 0
