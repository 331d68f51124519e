"""ControlHandle: what the test peers' handles share (reference HTTP/proto-41 broker,
TSP broker, SixXS PoP): a JSON-lines control socket, waiting, logs, stopping. Each
peer's handle adds its own commands on top."""

import json
import os
import socket
import subprocess
import time


class ControlHandle:
    error = RuntimeError  # the peer's own exception class
    what = "peer"  # its name in error messages

    def __init__(self, control_path, proc=None, config=None, ca_file=None, log_path=None, workdir=None):
        self.control_path = control_path
        self.proc = proc
        self.config = config
        self.ca_file = ca_file
        self.log_path = log_path
        self.workdir = workdir

    def __repr__(self):
        return "%s(%r, pid=%s)" % (
            type(self).__name__,
            self.control_path,
            self.proc.pid if self.proc else None,
        )

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
            raise self.error("%s control socket %s: %s" % (self.what, self.control_path, exc))
        finally:
            s.close()
        try:
            resp = json.loads(buf.decode("utf-8"))
        except ValueError:
            raise self.error("%s sent a malformed control answer: %r" % (self.what, buf[:200]))
        if not resp.get("ok"):
            raise self.error(resp.get("error", "unknown error"))
        return resp.get("result")

    def ping(self, timeout=2.0):
        return self.request("ping", timeout=timeout)

    def state(self):
        return self.request("state")

    def reset_counters(self):
        return self.request("reset_counters")

    def wait_until(self, predicate, timeout=5.0, interval=0.05):
        """Poll state() until predicate(state) is true; returns the state, or raises."""
        deadline = time.monotonic() + timeout
        while True:
            st = self.state()
            if predicate(st):
                return st
            if time.monotonic() >= deadline:
                raise self.error("condition not met within %.1f s" % timeout)
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
        """Ask the peer to quit; terminate/kill its process if it does not."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        try:
            self.request("quit", timeout=1.0)
        except self.error:
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
                raise self.error(
                    "%s exited with status %s:\n%s"
                    % (self.what, self.proc.returncode, self.log_text()[-3000:])
                )
            if os.path.exists(self.control_path):
                try:
                    return self.ping(timeout=1.0)
                except self.error as exc:
                    last = exc
            time.sleep(0.02)
        raise self.error(
            "%s not ready within %.0f s (%s):\n%s" % (self.what, timeout, last, self.log_text()[-3000:])
        )
