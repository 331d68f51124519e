"""Starting a reference TSP broker and talking to its control socket.

h = start_tsp_broker(lab, cfg)        # in the lab's broker namespace; stopped on teardown
h = spawn_tsp_broker(cfg, workdir)    # on this host (e.g. 127.0.0.1, --no-dataplane)
h.state()["tunnels"], h.set_fault(busy=True), h.wait_tunnel(active=True), h.stop()
"""

import ipaddress
import json
import os
import subprocess
import sys

from tests.peer import ControlHandle

from .config import example_config

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class TspBrokerError(RuntimeError):
    """The broker answered a control request with an error, or could not be reached."""


class TspBrokerHandle(ControlHandle):
    """Control-socket client of a running broker (works from any namespace).

    Attributes: control_path, proc (Popen or None), config (dict as written), log_path."""

    error = TspBrokerError
    what = "TSP broker"

    def ping(self, timeout=2.0):
        """{'pid', 'ports': {'udp', 'tcp'}, 'dataplane': bool}"""
        return self.request("ping", timeout=timeout)

    def state(self):
        """{'tunnels': {id: {id, user, type, requested_type, transport, declared, seen,
        endpoint, nat, client_ipv6, server_ipv6, client_ipv4, server_ipv4, prefix,
        keepalive_interval, keepalive_address, created, accepted, active, rx_packets,
        rx_bytes, tx_packets, tx_bytes, last_rx, last_tx, drops}}, 'sessions': [{transport,
        peer, state, version, auth, user, tunnel, result, messages, started, last}],
        'counters': {control_in, control_out, duplicates, dropped_in, dropped_out, stale,
        messages, sessions, restarts, tcp_connections, faults_applied, ...},
        'answers': {code: n}, 'drops': {reason: n}, 'faults': {...}, 'ports', 'dataplane'}"""
        return self.request("state")

    def tunnels(self, **match):
        """Tunnels (list of dicts) whose fields equal every keyword given."""
        return [t for t in self.state()["tunnels"].values() if all(t.get(k) == v for k, v in match.items())]

    def set_fault(self, **faults):
        """See tests.tsp_broker.server: drop / drop_in / drop_out (int), refuse_auth,
        busy (True or a code), redirect (list or dict), status (dict), raw (dict with
        data_b64), clear (True)."""
        return self.request("set_fault", **faults)

    def clear_faults(self):
        return self.request("set_fault", clear=True)

    def reset_counters(self):
        return self.request("reset_counters")

    def wait_tunnel(self, timeout=5.0, **match):
        """Wait for a tunnel matching the keywords (e.g. active=True, user='alice')."""
        st = self.wait_until(
            lambda s: any(all(t.get(k) == v for k, v in match.items()) for t in s["tunnels"].values()),
            timeout,
        )
        return [t for t in st["tunnels"].values() if all(t.get(k) == v for k, v in match.items())][0]


def _write_config(cfg, path):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it holds passwords
    with os.fdopen(fd, "w") as f:
        json.dump(cfg, f)


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO_ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def spawn_tsp_broker(cfg, workdir, dataplane=False, netns=None, name="tspbroker", timeout=10.0):
    """Start a broker on this host (or in `netns` via ip netns exec). The caller stops it
    (handle.stop()). Returns a ready TspBrokerHandle."""
    cfile = os.path.join(workdir, name + ".json")
    ctl = os.path.join(workdir, name + ".sock")
    logf = os.path.join(workdir, name + ".log")
    _write_config(cfg, cfile)
    argv = [sys.executable, "-m", "tests.tsp_broker", "--config", cfile, "--control", ctl]
    if not dataplane:
        argv.append("--no-dataplane")
    if netns:
        argv = ["ip", "netns", "exec", netns] + argv
    with open(logf, "wb") as lf:
        proc = subprocess.Popen(
            argv,
            stdout=lf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=_env(),
            cwd=REPO_ROOT,
            start_new_session=True,
        )
    h = TspBrokerHandle(ctl, proc=proc, config=cfg, log_path=logf)
    try:
        h.wait_ready(timeout)
    except BaseException:
        h.stop()
        raise
    return h


def start_tsp_broker(lab, cfg=None, dataplane=True, timeout=10.0):
    """Start tests.tsp_broker in `lab`'s broker namespace and wait until it answers.

    cfg: dict (tests.tsp_broker.config format; default example_config()). When `listen`
    is another address of the broker's 203.0.113.16/28 link (e.g. .19 for a second
    broker to redirect to), it is added to the broker's inet0 first. `listen6` must
    already be reachable (the caller sets up IPv6 on the path for v4v6). A second broker
    in the same lab gets tun_name tsp1, tsp2, ... unless cfg names one; give it its own
    tunnel_prefix / prefix_pool too (both brokers route their pools in one namespace).
    Returns a TspBrokerHandle; the broker is stopped on lab teardown."""
    cfg = json.loads(json.dumps(cfg if cfg is not None else example_config()))
    ours = [b for b in getattr(lab, "_brokers", []) if isinstance(b, TspBrokerHandle)]
    if "tun_name" not in cfg and ours:
        cfg["tun_name"] = "tsp%d" % len(ours)  # a second broker in the namespace needs its own
    listen = cfg.get("listen", "203.0.113.18")
    link = ipaddress.IPv4Network("203.0.113.16/28")
    if ipaddress.IPv4Address(listen) in link:
        have = lab.run("broker", ["ip", "-4", "-o", "addr", "show", "dev", "inet0"]).stdout
        if " %s/" % listen not in have:
            lab.run("broker", ["ip", "addr", "add", "%s/28" % listen, "dev", "inet0"])
    n = len(getattr(lab, "_brokers", []))
    h = lab.start_peer("tests.tsp_broker", "tspbroker%d" % n, cfg, TspBrokerHandle,
                       args=() if dataplane else ("--no-dataplane",))
    h.wait_ready(timeout)
    return h
