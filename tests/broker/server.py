"""The reference broker process: HTTP(S) update endpoint + 6in4 PoP + control socket.

    python -m tests.broker --config FILE.json --control /path/ctl.sock [--no-pop]

Run it inside the broker namespace (the lab does: Lab.start_broker()). The control
socket is a filesystem AF_UNIX socket, reachable from any network namespace.

Control protocol: one JSON object per line in, one per line out.
    {"cmd": "ping"}                                  -> {"ok": true, "result": {"pid": ...}}
    {"cmd": "state"}                                 -> {"ok": true, "result": {...}}
    {"cmd": "set_fault", "http_down": true, "answer_911": false}
    {"cmd": "set_endpoint", "tunnel": "12345", "ip": "192.0.2.2"}   (ip null: unregister)
    {"cmd": "reset_counters"}
    {"cmd": "quit"}
Errors: {"ok": false, "error": "reason"}.
The control socket, "quit", the log and main() are tests.peer_server's.
"""

import json
import os
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from ..peer_server import make_log, run_peer
from .config import BrokerConfigError, load_config
from .registry import Registry
from .update import UpdateService, redact_target

log = make_log("broker")


class _UpdateHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ReferenceBroker/1"

    def version_string(self):
        return self.server_version

    timeout = 10

    def _serve(self):
        srv = self.server
        headers = {}
        for name, value in self.headers.items():
            headers.setdefault(name.lower(), value)
        resp = srv.service.handle(self.command, self.path, headers, self.client_address[0], srv.scheme)
        body = resp.body.encode("utf-8")
        self.send_response(resp.status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        for k, v in resp.headers:
            self.send_header(k, v)
        self.end_headers()
        self.close_connection = True
        if self.command != "HEAD":
            self.wfile.write(body)
        log(
            "%s %s %s %s -> %d %s"
            % (
                srv.scheme,
                self.client_address[0],
                self.command,
                redact_target(self.path),
                resp.status,
                resp.summary.replace("\n", " | "),
            )
        )

    do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = _serve

    def log_message(self, fmt, *args):  # request lines may carry secrets: we log our own way
        pass

    def log_error(self, fmt, *args):
        log("http error from %s: %s" % (self.client_address[0], (fmt % args)[:200]))


class _UpdateServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, addr, service, scheme, ssl_context=None):
        self.service = service
        self.scheme = scheme
        self.ssl_context = ssl_context
        super().__init__(addr, _UpdateHandler)

    def finish_request(self, request, client_address):
        # TLS handshake here, in the per-connection thread, never in the accept loop.
        if self.ssl_context is not None:
            request.settimeout(10)
            try:
                request = self.ssl_context.wrap_socket(request, server_side=True)
            except (OSError, ssl.SSLError) as exc:
                log("tls handshake with %s failed: %s" % (client_address[0], exc))
                return
        super().finish_request(request, client_address)

    def handle_error(self, request, client_address):
        log("error serving %s: %s" % (client_address[0], sys.exc_info()[1]))


class HttpFrontend:
    """Plain HTTP and HTTPS listeners; can be closed and reopened (fault http_down)."""

    def __init__(self, config, service):
        self.config = config
        self.service = service
        self.servers = []
        self.ssl_context = None
        if config.https_port is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(config.cert, config.key)
            self.ssl_context = ctx

    def up(self):
        if self.servers:
            return
        cfg = self.config
        specs = []
        if cfg.http_port is not None:
            specs.append((cfg.http_port, "http", None))
        if cfg.https_port is not None:
            specs.append((cfg.https_port, "https", self.ssl_context))
        for port, scheme, ctx in specs:
            srv = _UpdateServer((cfg.listen, port), self.service, scheme, ctx)
            th = threading.Thread(
                target=srv.serve_forever,
                kwargs={"poll_interval": 0.05},
                name="%s-%d" % (scheme, port),
                daemon=True,
            )
            th.start()
            self.servers.append((srv, th))
            log("listening %s://%s:%d" % (scheme, cfg.listen, port))

    def down(self):
        servers, self.servers = self.servers, []
        for srv, th in servers:
            srv.shutdown()
            srv.server_close()
            th.join(5)
        if servers:
            log("http listeners closed")


class Broker:
    def __init__(self, config, pop=True):
        self.config = config
        self.registry = Registry(config)
        self.service = UpdateService(self.registry)
        self.http = HttpFrontend(config, self.service)
        self.pop = None
        if pop:
            from .pop import PopEngine

            self.pop = PopEngine.open(self.registry)
        self.stopped = threading.Event()

    def start(self):
        if self.pop is not None:
            self.pop.start()
        self.http.up()

    def stop(self):
        self.http.down()
        if self.pop is not None:
            self.pop.stop()
        self.stopped.set()

    # ---- control commands -------------------------------------------------------------
    def command(self, req):
        """One control request (a dict with a string "cmd"; tests.peer_server checks that
        and answers "quit"): returns the result or raises ValueError(reason)."""
        cmd = req["cmd"]
        reg = self.registry
        if cmd == "ping":
            return {"pid": os.getpid(), "pop": self.pop is not None}
        if cmd == "state":
            return reg.state()
        if cmd == "reset_counters":
            reg.reset_counters()
            return reg.state()
        if cmd == "set_endpoint":
            tid = req.get("tunnel")
            ip = req.get("ip")
            if not isinstance(tid, (str, int)) or isinstance(tid, bool):
                raise ValueError("set_endpoint needs 'tunnel' (tunnel id)")
            if ip is not None and not isinstance(ip, str):
                raise ValueError("'ip' must be an IPv4 address string or null")
            try:
                t = reg.set_endpoint(str(tid), ip)
            except KeyError:
                raise ValueError("no tunnel %r" % (tid,))
            log("control: tunnel %s endpoint set to %s" % (t.spec.id, t.endpoint))
            return t.state()
        if cmd == "set_fault":
            known = {"http_down", "answer_911"}
            extra = set(req) - known - {"cmd"}
            if extra:
                raise ValueError("unknown fault(s): %s" % ", ".join(sorted(extra)))
            for k in known:
                if k in req and not isinstance(req[k], bool):
                    raise ValueError("%s must be true or false" % k)
            with reg.lock:
                if "answer_911" in req:
                    reg.faults["answer_911"] = req["answer_911"]
            if "http_down" in req:
                if req["http_down"]:
                    self.http.down()
                else:
                    self.http.up()
                with reg.lock:
                    reg.faults["http_down"] = req["http_down"]
            log("control: faults %s" % json.dumps(reg.faults, sort_keys=True))
            return dict(reg.faults)
        raise ValueError("unknown command %r" % (cmd,))


def main(argv=None):
    return run_peer(
        argv,
        prog="python -m tests.broker",
        doc=__doc__,
        switch=("--no-pop", "HTTP only, no TUN/raw socket (no root needed)"),
        load_config=load_config,
        config_error=BrokerConfigError,
        make_peer=lambda config, pop: Broker(config, pop=pop),
        ready=lambda broker, config: (
            "%d tunnel(s), pop=%s" % (len(broker.registry.tunnels), broker.pop is not None)
        ),
        log=log,
    )


if __name__ == "__main__":
    sys.exit(main())
