"""Opening a broker connection without stalling the loop.

getaddrinfo() cannot be made non-blocking and a TCP connect to a dead broker can take
seconds, so both run in a short-lived worker thread; the connected socket (or the
reason it failed, in words) comes back into the loop through call_soon_threadsafe.
One Connector runs one attempt at a time: start() supersedes a running attempt, and
cancel() drops it. A superseded or cancelled attempt's socket is closed by the worker
and its result never reaches the caller.

    c = Connector(loop)
    c.start("broker.example", 3653, socket.SOCK_DGRAM, on_done, source="192.0.2.2")
    ...
    def on_done(sock, ip, error):   # in the loop; sock is None when error is set
"""

import socket
import threading

__all__ = ["Connector", "resolve_family"]


def resolve_family(host):
    """The address family a literal names, or 0 (any) for a name."""
    if ":" in host:
        return socket.AF_INET6
    parts = host.split(".")
    if len(parts) == 4 and all(p.isdigit() for p in parts):
        return socket.AF_INET
    return 0


class Connector:
    def __init__(self, loop):
        self.loop = loop
        self._lock = threading.Lock()
        self._gen = 0
        self.busy = False

    def start(self, host, port, socktype, on_done, family=0, source=None, timeout=5.0):
        """Resolve host and connect a socket of socktype (SOCK_DGRAM: connect() only
        fixes the peer; SOCK_STREAM: a TCP connect bounded by timeout). family 0
        follows the source address or the host literal, else prefers IPv4. source: a
        local address to bind to. on_done(sock, ip, error) runs in the loop; the socket
        is non-blocking."""
        if not family:
            family = (resolve_family(source) if source else 0) or resolve_family(host) or socket.AF_INET
        with self._lock:
            self._gen += 1
            gen = self._gen
            self.busy = True
        t = threading.Thread(target=self._work, name="cpe-tunnel-connect", daemon=True,
                             args=(gen, host, port, socktype, family, source, timeout, on_done))
        t.start()

    def cancel(self):
        with self._lock:
            self._gen += 1
            self.busy = False

    def _work(self, gen, host, port, socktype, family, source, timeout, on_done):
        sock = ip = error = None
        try:
            infos = socket.getaddrinfo(host, port, family, socktype)
            if not infos:
                raise OSError("no address")
            fam, _t, _p, _c, sa = infos[0]
            ip = sa[0]
        except (OSError, UnicodeError) as exc:
            error = "cannot resolve '%s': %s" % (host, getattr(exc, "strerror", None) or exc)
        if error is None:
            s = socket.socket(fam, socktype)
            try:
                s.settimeout(timeout)
                if source:
                    s.bind((source, 0))
                s.connect(sa)
                s.setblocking(False)
                sock = s
            except OSError as exc:
                s.close()
                if isinstance(exc, socket.timeout):
                    error = "no answer from %s port %d within %.0f s" % (ip, port, timeout)
                else:
                    error = "cannot reach %s port %d: %s" % (ip, port, exc.strerror or exc)
        with self._lock:
            stale = gen != self._gen
        if stale:
            if sock is not None:
                sock.close()
            return
        self.loop.call_soon_threadsafe(lambda: self._deliver(gen, sock, ip, error, on_done))

    def _deliver(self, gen, sock, ip, error, on_done):
        with self._lock:
            stale = gen != self._gen
            if not stale:
                self.busy = False
        if stale:  # cancelled between the worker's check and now
            if sock is not None:
                sock.close()
            return
        on_done(sock, ip, error)
