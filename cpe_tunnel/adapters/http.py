"""Run one HTTP(S) request off the event loop and hand the result back to it.

The core (cpe_tunnel.core.httpupdate) builds a Request (.scheme .host .port .method
.target .headers .timeout); HttpRunner runs it in a worker thread with a total time
limit, calls wakeup() (thread-safe, from the loop: e.g. write a byte to a pipe) and the
loop then picks the result up with poll_result():

    None                            nothing finished yet
    ('response', status, body)      an HTTP answer; body capped at body_cap bytes
    ('error', reason)               in plain words, e.g. "connection refused by 203.0.113.18:443"

TLS verifies the certificate and host name by default (system store, or `cafile`);
verify=False turns that off (the daemon should log a warning). Redirects are not
followed: an update with credentials must not go anywhere else. Nothing here logs or
formats the request headers, so the Authorization value never leaves this module
except on the wire.
"""

import errno
import http.client
import socket
import ssl
import threading
import time

BODY_CAP = 4096


def _secs(t):
    return "%g s" % t


def _where(sockaddr):
    if ":" in sockaddr[0]:
        return "[%s]:%d" % (sockaddr[0], sockaddr[1])
    return "%s:%d" % (sockaddr[0], sockaddr[1])


def _strerror(e):
    return getattr(e, "strerror", None) or str(e) or type(e).__name__


def make_tls_context(verify=True, cafile=None):
    """An ssl.SSLContext for a client. verify=True: certificate chain and host name
    checked against cafile (only that file) or, without it, the system store."""
    if verify:
        return ssl.create_default_context(cafile=cafile)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class _Abort(Exception):
    """Raised in the worker to stop with ('error', reason)."""

    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


class HttpRunner:
    def __init__(self, wakeup, body_cap=BODY_CAP):
        self._wakeup = wakeup
        self.body_cap = body_cap
        self._lock = threading.Lock()
        self._gen = 0  # bumps for every start() and close(); stale workers compare it
        self._busy = False
        self._closed = False
        self._result = None
        self._sock = None  # the socket of the running request (to cut it off)
        self._phase = None  # what the worker waits for, in words, for a timeout reason
        self._watchdog = None
        self._timeout = 0

    @property
    def busy(self):
        with self._lock:
            return self._busy

    def start(self, request, verify=True, cafile=None, source_address=None):
        """Run request in a worker thread. RuntimeError if one is still running."""
        with self._lock:
            if self._closed:
                raise RuntimeError("HttpRunner is closed")
            if self._busy:
                raise RuntimeError("an HTTP request is already running")
            self._gen += 1
            gen = self._gen
            self._busy = True
            self._result = None
            self._sock = None
            self._phase = "starting the request to %s" % request.host
            self._timeout = float(request.timeout)
            deadline = time.monotonic() + self._timeout
            wd = threading.Timer(self._timeout, self._expire, (gen,))
            wd.daemon = True
            self._watchdog = wd
        worker = threading.Thread(target=self._run, name="cpe-tunnel-http", daemon=True,
                                  args=(gen, request, verify, cafile, source_address, deadline))
        worker.start()
        wd.start()

    def poll_result(self):
        with self._lock:
            r = self._result
            self._result = None
            return r

    def close(self):
        with self._lock:
            self._closed = True
            self._gen += 1
            self._busy = False
            self._result = None
            sock = self._sock
            self._sock = None
            wd = self._watchdog
            self._watchdog = None
        if wd is not None:
            wd.cancel()
        self._cut(sock)

    # -- worker side ----------------------------------------------------------

    @staticmethod
    def _cut(sock):
        if sock is None:
            return
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            sock.close()
        except OSError:
            pass

    def _deliver(self, gen, result):
        with self._lock:
            if gen != self._gen or not self._busy:
                return False  # closed, or the watchdog already answered
            self._result = result
            self._busy = False
            self._sock = None
            wd = self._watchdog
            self._watchdog = None
        if wd is not None:
            wd.cancel()
        try:
            self._wakeup()
        except Exception:  # the loop's wakeup must not kill the worker
            pass
        return True

    def _expire(self, gen):
        with self._lock:
            if gen != self._gen or not self._busy:
                return
            sock = self._sock
            reason = "timed out after %s %s" % (_secs(self._timeout), self._phase)
        if self._deliver(gen, ("error", reason)):
            self._cut(sock)

    def _set(self, gen, phase, sock=None):
        with self._lock:
            if gen != self._gen:
                raise _Abort("abandoned")
            self._phase = phase
            if sock is not None:
                self._sock = sock

    def _remaining(self, deadline):
        r = deadline - time.monotonic()
        if r <= 0:
            raise socket.timeout("total time limit reached")
        return r

    def _run(self, gen, req, verify, cafile, source_address, deadline):
        sock = None
        try:
            result = self._exchange(gen, req, verify, cafile, source_address, deadline)
        except _Abort as e:
            result = ("error", e.reason)
        except Exception as e:  # a bug here must still produce an answer for the loop
            result = ("error", "internal error in the HTTP client: %s" % type(e).__name__)
        finally:
            with self._lock:
                if gen == self._gen:
                    sock = self._sock
        self._deliver(gen, result)
        self._cut(sock)

    def _exchange(self, gen, req, verify, cafile, source_address, deadline):
        t = _secs(float(req.timeout))
        ctx = None
        if req.scheme == "https":
            try:
                ctx = make_tls_context(verify, cafile)
            except (OSError, ssl.SSLError) as e:
                raise _Abort("cannot load the CA file '%s': %s" % (cafile, _strerror(e)))
        family = socket.AF_UNSPEC
        if source_address:
            family = socket.AF_INET6 if ":" in source_address else socket.AF_INET
        self._set(gen, "resolving host '%s'" % req.host)
        try:
            infos = socket.getaddrinfo(req.host, req.port, family, socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError):
            raise _Abort("cannot resolve host '%s'" % req.host)
        if not infos:
            raise _Abort("cannot resolve host '%s'" % req.host)
        sock = None
        failure = None
        for af, stype, proto, _, sa in infos:
            where = _where(sa)
            s = socket.socket(af, stype, proto)
            try:
                self._set(gen, "connecting to %s" % where, s)
            except _Abort:
                s.close()
                raise
            try:
                if source_address:
                    s.bind((source_address, 0))
                s.settimeout(self._remaining(deadline))
                s.connect(sa)
                sock = s
                break
            except socket.timeout:
                s.close()
                raise _Abort("timed out after %s connecting to %s" % (t, where))
            except ConnectionRefusedError:
                failure = "connection refused by %s" % where
            except OSError as e:
                if source_address and failure is None and e.errno == errno.EADDRNOTAVAIL:
                    failure = "cannot send from %s: %s" % (source_address, _strerror(e))
                else:
                    failure = "cannot connect to %s: %s" % (where, _strerror(e))
            s.close()
        if sock is None:
            raise _Abort(failure or "cannot connect to host '%s'" % req.host)
        if ctx is not None:
            self._set(gen, "in the TLS handshake with %s" % where)
            try:
                sock.settimeout(self._remaining(deadline))
                tls = ctx.wrap_socket(sock, server_hostname=req.host)
            except socket.timeout:
                raise _Abort("timed out after %s in the TLS handshake with %s" % (t, where))
            except ssl.SSLCertVerificationError as e:
                why = getattr(e, "verify_message", None) or getattr(e, "reason", None) or str(e)
                raise _Abort("TLS certificate verification failed: %s" % why)
            except ssl.SSLError as e:
                raise _Abort("TLS handshake with %s failed: %s" % (where, e.reason or _strerror(e)))
            except OSError as e:
                raise _Abort("connection to %s lost during the TLS handshake: %s" % (where, _strerror(e)))
            sock = tls
        self._set(gen, "waiting for an answer from %s" % where, sock)
        conn = http.client.HTTPConnection(req.host, req.port)
        conn.sock = sock
        try:
            sock.settimeout(self._remaining(deadline))
            conn.putrequest(req.method, req.target, skip_host=True, skip_accept_encoding=True)
            for name, value in req.headers:
                conn.putheader(name, value)
            conn.endheaders()
            resp = conn.getresponse()
            sock.settimeout(self._remaining(deadline))
            body = resp.read(self.body_cap)
            return ("response", resp.status, body)
        except socket.timeout:
            raise _Abort("timed out after %s waiting for an answer from %s" % (t, where))
        except http.client.RemoteDisconnected:
            raise _Abort("%s closed the connection without an answer" % where)
        except http.client.IncompleteRead:
            raise _Abort("%s closed the connection in the middle of its answer" % where)
        except http.client.HTTPException:
            raise _Abort("%s sent a malformed HTTP answer" % where)
        except ssl.SSLError as e:
            raise _Abort("TLS error with %s: %s" % (where, e.reason or _strerror(e)))
        except ConnectionResetError:
            raise _Abort("connection reset by %s" % where)
        except OSError as e:
            raise _Abort("connection to %s failed: %s" % (where, _strerror(e)))
        except ValueError:  # http.client refuses control characters in target/headers
            raise _Abort("the request contains characters HTTP does not allow")
        finally:
            try:
                conn.close()
            except Exception:
                pass
