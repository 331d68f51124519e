"""What the reference peers' processes share (tests.broker, tests.tsp_broker,
tests.sixxs_pop): the JSON-lines control server, the stderr log and main().

The control protocol, the same for every peer: one JSON object per line in, one per line
out, on a filesystem AF_UNIX socket (reachable from any network namespace, mode 0600).
    {"cmd": NAME, ...}  -> {"ok": true, "result": ...} | {"ok": false, "error": "reason"}
A request that is not a JSON object with a string "cmd" is answered with an error and the
connection stays open. {"cmd": "quit"} is answered {"ok": true, "result": {"quitting":
true}} here, and the process then stops. Every other command goes to the peer's
command(req), which returns the result (anything json.dumps takes) or raises ValueError
(or OverflowError) with a reason; any other exception is reported as "Type: message".
The client side is tests.peer.ControlHandle.

This is test-peer code: it does not import cpe_tunnel.
"""

import argparse
import json
import os
import signal
import socketserver
import sys
import threading
import time

LINE_MAX = 1 << 16  # a longer request line is cut there (and then fails to parse)


def make_log(name):
    """log(msg) writing "HH:MM:SS name: msg" to stderr (the peer's log file)."""

    def log(msg):
        sys.stderr.write("%s %s: %s\n" % (time.strftime("%H:%M:%S"), name, msg))
        sys.stderr.flush()

    return log


class _ControlHandler(socketserver.StreamRequestHandler):
    def handle(self):
        srv = self.server
        while True:
            try:
                line = self.rfile.readline(srv.line_max)
            except OSError:
                return
            if not line:
                return
            if not line.strip():
                continue
            quitting = False
            try:
                req = json.loads(line.decode("utf-8"))
                if not isinstance(req, dict) or not isinstance(req.get("cmd"), str):
                    raise ValueError("a request is a JSON object with a string 'cmd'")
                if req["cmd"] == "quit":
                    quitting = True
                    out = {"ok": True, "result": {"quitting": True}}
                else:
                    out = {"ok": True, "result": srv.command(req)}
            except (ValueError, OverflowError) as exc:  # JSON, UTF-8 and the peer's own reasons
                out = {"ok": False, "error": str(exc)}
            except Exception as exc:  # report, keep serving
                out = {"ok": False, "error": "%s: %s" % (type(exc).__name__, exc)}
            try:
                self.wfile.write((json.dumps(out) + "\n").encode("utf-8"))
                self.wfile.flush()
            except OSError:
                return
            finally:
                if quitting:
                    srv.stop_soon()


class ControlServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """The control socket at `path` (a stale socket file there is replaced), one thread a
    connection; command(req) answers everything but "quit". serve_forever() in the main
    thread; "quit", SIGTERM or SIGINT (see run_peer) make it return; close() then closes
    the socket and removes the file."""

    daemon_threads = True

    def __init__(self, path, command, line_max=LINE_MAX):
        self.path = path
        self.command = command
        self.line_max = line_max
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        old = os.umask(0o077)
        try:
            super().__init__(path, _ControlHandler)
        finally:
            os.umask(old)

    def stop_soon(self):
        """Make serve_forever() return; safe from any thread and from a signal handler
        (shutdown() itself waits for the loop, so it must not run in the loop's thread)."""
        threading.Thread(target=self.shutdown, name="control-stop", daemon=True).start()

    def close(self):
        self.server_close()
        try:
            os.unlink(self.path)
        except OSError:
            pass


def describe_error(exc):
    """A start-up failure as one line: OSError text as is, others with their type; a
    failed `ip -batch` (CalledProcessError) with what it wrote to stderr."""
    text = str(exc) if isinstance(exc, OSError) else "%s: %s" % (type(exc).__name__, exc)
    err = getattr(exc, "stderr", None)
    if isinstance(err, bytes):
        err = err.decode("utf-8", "replace")
    if isinstance(err, str) and err.strip():
        text += " / " + err.strip()
    return text


def run_peer(argv, prog, doc, switch, load_config, config_error, make_peer, ready, log, line_max=LINE_MAX):
    """main() of a peer process:

        python -m PROG --config FILE.json --control /path/ctl.sock [SWITCH]

    switch: (option, help), an on/off option such as "--no-tun" (it turns a part off).
    load_config(path) -> config, raising config_error (logged, exit status 2).
    make_peer(config, enabled) -> the peer (enabled: the switch was not given); it has
    start(), stop() and command(req). A failure to build or start it: exit status 1.
    ready(peer, config) -> what the "ready: ..." log line says about it.
    Serves the control socket until quit / SIGTERM / SIGINT, then stops the peer; 0."""
    ap = argparse.ArgumentParser(prog=prog, description=doc.strip().split("\n")[0])
    ap.add_argument("--config", required=True, help="JSON configuration file")
    ap.add_argument("--control", required=True, help="path of the AF_UNIX control socket")
    ap.add_argument(switch[0], dest="switched_off", action="store_true", help=switch[1])
    args = ap.parse_args(argv)
    try:
        config = load_config(args.config)
    except config_error as exc:
        log("configuration error: %s" % exc)
        return 2
    try:
        peer = make_peer(config, not args.switched_off)
        peer.start()
    except Exception as exc:  # OSError, ssl.SSLError, ip -batch failing, ...
        log("cannot start: %s" % describe_error(exc))
        return 1
    try:
        control = ControlServer(args.control, peer.command, line_max)
    except OSError as exc:
        log("cannot open the control socket %s: %s" % (args.control, exc))
        peer.stop()
        return 1

    def on_signal(signum, frame):
        control.stop_soon()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log("ready: %s, control %s" % (ready(peer, config), args.control))
    try:
        control.serve_forever(poll_interval=0.05)
    finally:
        control.close()
        peer.stop()
        log("stopped")
    return 0
