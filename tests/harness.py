"""Runs the real cpe-tunneld inside the lab's router namespace, for the end-to-end
tests, `make demo` and the benchmarks."""

import os
import signal
import subprocess
import sys
import tempfile
import time

from cpe_tunnel import control

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The reference broker's view of the tunnel used throughout the lab.
TUNNEL_ID = "123456"
USERNAME = "alice"
UPDATEKEY = "k3y-Sekr1t-abcdef"
PREFIX = "2001:db8:1234::/48"
PREFIX2 = "2001:db8:5678::/48"
CLIENT6 = "2001:db8:1::2/64"
SERVER6 = "2001:db8:1::1"
V6HOST = "2001:db8:ffff::2"


def broker_config(endpoint=None, routed=(PREFIX, PREFIX2), **extra):
    cfg = {
        "accounts": [{
            "username": USERNAME,
            "password": "account-password-xyz",
            "tunnels": [{
                "id": TUNNEL_ID,
                "updatekey": UPDATEKEY,
                "client_v6": CLIENT6,
                "server_v6": SERVER6,
                "routed": list(routed),
                "endpoint": endpoint,
            }],
        }],
    }
    cfg.update(extra)
    return cfg


def uci_quote(v):
    return "'" + str(v).replace("'", "'\\''") + "'"


def daemon_config(lab, sock, update_url=None, ca_file=None, updatekey=UPDATEKEY, prefix=PREFIX,
                  tunnel_extra=None, lan_extra=None, mode="http-update"):
    """A UCI file for the daemon in the lab's router namespace."""
    t = {
        "mode": mode,
        "peeraddr": lab.addrs["broker"],
        "ip6addr": CLIENT6,
        "ip6prefix": [prefix] if prefix else [],
        "wan_device": "wan0",
        "keepalive_interval": 5,
        "update_retry_min": 1,
        "update_retry_max": 4,
    }
    if mode == "http-update":
        t.update({
            "update_url": update_url or "http://%s/nic/update" % lab.addrs["broker"],
            "username": USERNAME,
            "updatekey": updatekey,
            "tunnelid": TUNNEL_ID,
        })
        if ca_file:
            t["ca_file"] = ca_file
    if lab.nat:
        # 198.51.100.0/24 is documentation space, so our "is this address public?"
        # test would say yes; in the lab it sits behind the ISP's NAT.
        t["private_range"] = ["198.51.100.0/24"]
    t.update(tunnel_extra or {})
    lan = {"interface": "br-lan", "ra_interval": 10, "dns": ["2001:db8:ffff::53"]}
    lan.update(lan_extra or {})
    lines = ["config globals 'main'", "\toption log_level 'debug'",
             "\toption control_socket %s" % uci_quote(sock), "", "config tunnel 'he'"]
    for section in (t, None, lan):
        if section is None:
            lines += ["", "config lan 'lan'"]
            continue
        for k, v in section.items():
            if isinstance(v, list):
                lines += ["\tlist %s %s" % (k, uci_quote(x)) for x in v]
            elif v is not None:
                lines.append("\toption %s %s" % (k, uci_quote(v)))
    return "\n".join(lines) + "\n"


class Daemon:
    """cpe-tunneld running in the lab's cpe namespace."""

    def __init__(self, lab, config_text=None, **kw):
        self.lab = lab
        self.dir = tempfile.mkdtemp(prefix="cpe-tunnel-")
        os.chmod(self.dir, 0o700)
        self.sock = os.path.join(self.dir, "ctl.sock")
        self.path = os.path.join(self.dir, "cpe_tunnel")
        self.log_path = os.path.join(self.dir, "daemon.log")
        self.write_config(config_text or daemon_config(lab, self.sock, **kw))
        self.proc = None
        self.started_at = None

    def write_config(self, text):
        with open(self.path, "w") as f:
            f.write(text)

    def config(self, **kw):
        return daemon_config(self.lab, self.sock, **kw)

    def start(self, extra_args=(), env=None):
        self._log = open(self.log_path, "ab")
        argv = ["ip", "netns", "exec", self.lab.ns["cpe"], sys.executable, "-m", "cpe_tunnel.daemon",
                "-f", "-c", self.path] + list(extra_args)
        env = dict(os.environ, PYTHONPATH=ROOT, **(env or {}))
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        return self

    def call(self, method, timeout=5):
        return control.call(self.sock, method, timeout=timeout)

    def status(self):
        return self.call("status")

    def try_status(self):
        try:
            return self.status()
        except control.ControlError:
            return None

    def wait_status(self, pred, timeout=20, what="condition"):
        deadline = time.monotonic() + timeout
        st = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("daemon exited with %s:\n%s" % (self.proc.returncode, self.log()))
            st = self.try_status()
            if st is not None and pred(st):
                return st
            time.sleep(0.1)
        raise AssertionError("timed out waiting for %s; last status %s\nlog:\n%s" % (what, st, self.log()[-4000:]))

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, timeout=10):
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def cleanup(self):
        """Remove the run directory (config with the update key, socket, log)."""
        import shutil
        shutil.rmtree(self.dir, ignore_errors=True)

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def cli(self, *args):
        argv = [sys.executable, "-m", "cpe_tunnel.cli", "-s", self.sock] + list(args)
        return subprocess.run(argv, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=ROOT),
                              timeout=20)


def wait_for(pred, timeout=20, interval=0.1, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    raise AssertionError("timed out after %s s waiting for %s" % (timeout, what))


# ---- a tight, bounded ICMPv6 echo prober (end-to-end tests and bench/) -------------------

class EchoProbe:
    """Sends ICMPv6 echo requests to `dst` every `interval` s from inside a namespace and
    records when each was sent and when (if) its reply came back. Bounded: stops after
    `duration` s, `max_count` requests, stop(), or the first reply when stop_on_reply.

        p = EchoProbe(lab, "lan", V6HOST, interval=0.02, duration=10).start()
        ...                      # change something
        p.wait_reply(after=t)    # (sent_at, reply_at) of the first reply to a request sent >= t
        p.stop()

    Times are time.monotonic() of this process. Send errors (no address or route yet)
    count as requests that got no reply. Router Advertisements that reach the namespace
    while it runs are noted too (router_ads), to tell why a LAN host had no route."""

    def __init__(self, lab, ns, dst, interval=0.02, duration=10.0, max_count=20000, stop_on_reply=False):
        import threading

        self.lab, self.ns, self.dst = lab, ns, dst
        self.interval = float(interval)
        self.duration = float(duration)
        self.max_count = int(max_count)
        self.stop_on_reply = stop_on_reply
        self.ident = (os.getpid() ^ id(self)) & 0xFFFF
        self.sent = {}  # seq -> monotonic send time (also for send errors)
        self.send_errors = 0
        self.replies = []  # (seq, sent_at, reply_at), in arrival order
        self.router_ads = []  # (received_at, router lifetime) of RAs the namespace received
        self.error = None
        self._stop = threading.Event()
        self._got = threading.Condition()
        self._thread = None

    def start(self):
        import threading

        self._thread = threading.Thread(target=self._in_ns, name="echo-probe", daemon=True)
        self._thread.start()
        return self

    def _in_ns(self):
        try:
            self.lab.call_in(self.ns, self._run, timeout=self.duration + 10)
        except BaseException as exc:  # reported by wait_reply()/stop()
            self.error = exc
        finally:
            with self._got:
                self._stop.set()
                self._got.notify_all()

    def _run(self):
        import select
        import socket
        import struct

        s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        try:
            s.setblocking(False)
            start = time.monotonic()
            end = start + self.duration
            seq = 0
            next_send = start
            while not self._stop.is_set():
                now = time.monotonic()
                if now >= end:
                    break
                if now >= next_send and seq < self.max_count:
                    seq += 1
                    pkt = struct.pack("!BBHHH", 128, 0, 0, self.ident, seq & 0xFFFF) + b"cpe-tunnel-probe"
                    with self._got:
                        self.sent[seq & 0xFFFF] = now
                    try:
                        s.sendto(pkt, (self.dst, 0))
                    except OSError:
                        self.send_errors += 1
                    next_send += self.interval
                    if next_send < now:
                        next_send = now + self.interval
                due = next_send if seq < self.max_count else end
                wait = max(0.0, min(due, end) - time.monotonic())
                r, _, _ = select.select([s], [], [], wait)
                if not r:
                    continue
                while True:
                    try:
                        data, _src = s.recvfrom(2048)
                    except (BlockingIOError, InterruptedError):
                        break
                    t = time.monotonic()
                    if len(data) >= 8 and data[0] == 134:  # a Router Advertisement on the way
                        with self._got:
                            self.router_ads.append((t, struct.unpack_from("!H", data, 6)[0]))
                        continue
                    if len(data) < 8 or data[0] != 129:
                        continue
                    ident, rseq = struct.unpack_from("!HH", data, 4)
                    with self._got:
                        if ident != self.ident or rseq not in self.sent:
                            continue
                        self.replies.append((rseq, self.sent[rseq], t))
                        self._got.notify_all()
                    if self.stop_on_reply:
                        self._stop.set()
        finally:
            s.close()

    def first_reply(self, after=None):
        """(sent_at, reply_at) of the first reply to a request sent at or after `after`."""
        with self._got:
            for _seq, sent_at, reply_at in self.replies:
                if after is None or sent_at >= after:
                    return sent_at, reply_at
        return None

    def wait_reply(self, after=None, timeout=None):
        """Block until first_reply(after) exists (returned), the probe ends, or `timeout`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._got:
            while True:
                r = self.first_reply(after)
                if r is not None:
                    return r
                if self._stop.is_set():
                    if self.error is not None:
                        raise self.error
                    return None
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                self._got.wait(0.05 if left is None else min(0.05, left))

    def unanswered_between(self, t0, t1):
        """How many requests sent in [t0, t1) got no reply."""
        with self._got:
            answered = {seq for seq, _s, _r in self.replies}
            return sum(1 for seq, ts in self.sent.items() if t0 <= ts < t1 and seq not in answered)

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.duration + 15)
        if self.error is not None:
            raise self.error
