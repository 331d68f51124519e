"""BrokerHandle: the test-side client of a running reference broker's control socket."""

import json
import os
import socket
import subprocess
import time


class BrokerError(RuntimeError):
    """The broker answered a control request with an error, or could not be reached."""


class BrokerHandle:
    """Talks to a broker over its control socket (JSON lines). Works from any namespace.

    Attributes: control_path, proc (Popen or None), config (dict as written),
    ca_file (CA certificate path when HTTPS is on, else None), log_path, workdir.
    """

    def __init__(self, control_path, proc=None, config=None, ca_file=None, log_path=None, workdir=None):
        self.control_path = control_path
        self.proc = proc
        self.config = config
        self.ca_file = ca_file
        self.log_path = log_path
        self.workdir = workdir

    def __repr__(self):
        return "BrokerHandle(%r, pid=%s)" % (self.control_path, self.proc.pid if self.proc else None)

    # ---- transport ---------------------------------------------------------------------
    def request(self, cmd, timeout=5.0, **args):
        req = dict(args)
        req["cmd"] = cmd
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        try:
            s.connect(self.control_path)
            s.sendall((json.dumps(req) + "\n").encode("utf-8"))
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
        except OSError as exc:
            raise BrokerError("broker control socket %s: %s" % (self.control_path, exc))
        finally:
            s.close()
        try:
            resp = json.loads(buf.decode("utf-8"))
        except ValueError:
            raise BrokerError("broker sent a malformed control answer: %r" % buf[:200])
        if not resp.get("ok"):
            raise BrokerError(resp.get("error", "unknown error"))
        return resp.get("result")

    # ---- commands ----------------------------------------------------------------------
    def ping(self, timeout=2.0):
        return self.request("ping", timeout=timeout)

    def state(self):
        """{'tunnels': {id: {...endpoint, updates{good,nochg,...}, last_update, rx/tx, drops}},
        'answers': {code: n}, 'pop': {rx/tx, drops{reason: n}, last_drop}, 'faults', 'requests'}"""
        return self.request("state")

    def tunnel(self, tid):
        return self.state()["tunnels"][str(tid)]

    def set_fault(self, http_down=None, answer_911=None):
        args = {}
        if http_down is not None:
            args["http_down"] = bool(http_down)
        if answer_911 is not None:
            args["answer_911"] = bool(answer_911)
        return self.request("set_fault", **args)

    def set_endpoint(self, tunnel_id, ip):
        return self.request("set_endpoint", tunnel=str(tunnel_id), ip=ip)

    def reset_counters(self):
        return self.request("reset_counters")

    def wait_until(self, predicate, timeout=5.0, interval=0.05):
        """Poll state() until predicate(state) is true; returns the state, or raises BrokerError."""
        deadline = time.monotonic() + timeout
        while True:
            st = self.state()
            if predicate(st):
                return st
            if time.monotonic() >= deadline:
                raise BrokerError("condition not met within %.1f s" % timeout)
            time.sleep(interval)

    def log_text(self):
        if not self.log_path:
            return ""
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def stop(self, timeout=3.0):
        """Ask the broker to quit; terminate/kill its process if it does not."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        try:
            self.request("quit", timeout=1.0)
        except BrokerError:
            pass
        try:
            proc.wait(timeout)
            return
        except subprocess.TimeoutExpired:
            pass
        proc.terminate()
        try:
            proc.wait(2)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(2)

    def wait_ready(self, timeout=10.0):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise BrokerError(
                    "broker exited with status %s:\n%s" % (self.proc.returncode, self.log_text()[-3000:])
                )
            if os.path.exists(self.control_path):
                try:
                    return self.ping(timeout=1.0)
                except BrokerError as exc:
                    last = exc
            time.sleep(0.02)
        raise BrokerError(
            "broker not ready within %.0f s (%s):\n%s" % (timeout, last, self.log_text()[-3000:])
        )
