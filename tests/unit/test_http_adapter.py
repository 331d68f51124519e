"""HttpRunner against local servers on 127.0.0.1: plain HTTP, HTTPS with a CA made at
test time with the openssl CLI, refused ports, silent servers and broken answers."""
import base64
import http.server
import shutil
import socket
import ssl
import subprocess
import threading
import time

import pytest

from cpe_tunnel.adapters.http import HttpRunner
from cpe_tunnel.core.httpupdate import HttpUpdateClient, Request

SECRET = "k3y-For-Tunnel-77"


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        srv = self.server
        srv.seen.append((self.path, dict(self.headers.items())))
        status, body = srv.reply(self) if callable(srv.reply) else srv.reply
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Server:
    def __init__(self, reply=(200, b"good 203.0.113.7"), tls=None):
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.seen = []
        self.httpd.reply = reply
        if tls is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(tls["cert"], tls["key"])
            self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    @property
    def seen(self):
        return self.httpd.seen

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def server():
    s = Server()
    try:
        yield s
    finally:
        s.close()


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not installed")
    d = tmp_path_factory.mktemp("tls")

    def run(*args):
        subprocess.run(["openssl"] + list(args), cwd=d, check=True, capture_output=True, timeout=60)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=cpe-tunnel test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    run("req", "-new", *ec, "-keyout", "srv.key", "-out", "srv.csr", "-subj", "/CN=127.0.0.1")
    (d / "ext.cnf").write_text(
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n")
    run("x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "srv.pem", "-days", "2", "-extfile", "ext.cnf")
    return {"ca": str(d / "ca.pem"), "cert": str(d / "srv.pem"), "key": str(d / "srv.key")}


class Waiter:
    def __init__(self):
        self.event = threading.Event()
        self.calls = 0

    def __call__(self):
        self.calls += 1
        self.event.set()


def run_request(req, timeout=15, **kw):
    w = Waiter()
    r = HttpRunner(w)
    try:
        r.start(req, **kw)
        assert w.event.wait(timeout), "no wakeup"
        assert not r.busy
        res = r.poll_result()
        assert r.poll_result() is None  # handed out once
        time.sleep(0.05)
        assert w.calls == 1
        return res
    finally:
        r.close()


def update_client(url, secret=SECRET, **kw):
    return HttpUpdateClient(url, "alice", secret, "654321", rand=lambda: 0.0, **kw)


def make_request(url, ip="203.0.113.7", **kw):
    c = update_client(url, **kw)
    c.trigger(0.0, ip, "start")
    return c, c.next_request(0.0)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_plain_http_auth_and_query(server):
    c, req = make_request("http://127.0.0.1:%d/nic/update" % server.port)
    res = run_request(req)
    assert res == ("response", 200, b"good 203.0.113.7")
    assert len(server.seen) == 1
    path, headers = server.seen[0]
    assert path == "/nic/update?hostname=654321&myip=203.0.113.7"
    expect = "Basic " + base64.b64encode(("alice:" + SECRET).encode()).decode()
    assert headers["Authorization"] == expect
    assert headers["Host"] == "127.0.0.1:%d" % server.port
    assert headers["User-Agent"] == "cpe-tunnel/0.1"
    assert headers["Connection"] == "close"
    # and the core makes sense of it
    c.response_received(1.0, res[1], res[2])
    assert c.status()["state"] == "ok" and c.status()["registered_ip"] == "203.0.113.7"


def test_https_verified_with_ca_file(tls):
    s = Server(reply=(200, b"nochg 203.0.113.7"), tls=tls)
    try:
        _, req = make_request("https://127.0.0.1:%d/nic/update" % s.port)
        res = run_request(req, verify=True, cafile=tls["ca"])
        assert res == ("response", 200, b"nochg 203.0.113.7")
        assert s.seen[0][1]["Authorization"].startswith("Basic ")
    finally:
        s.close()


def test_https_without_ca_fails_verification(tls):
    s = Server(tls=tls)
    try:
        _, req = make_request("https://127.0.0.1:%d/nic/update" % s.port)
        res = run_request(req, verify=True)
        assert res[0] == "error"
        assert res[1].startswith("TLS certificate verification failed: ")
        assert "issuer" in res[1] or "self-signed" in res[1] or "self signed" in res[1], res
        assert s.seen == []  # nothing, credentials included, went over the unverified link
    finally:
        s.close()


def test_https_verify_off(tls):
    s = Server(tls=tls)
    try:
        _, req = make_request("https://127.0.0.1:%d/nic/update" % s.port)
        assert run_request(req, verify=False) == ("response", 200, b"good 203.0.113.7")
    finally:
        s.close()


def test_missing_ca_file(tls, tmp_path):
    _, req = make_request("https://127.0.0.1:%d/" % free_port())
    res = run_request(req, cafile=str(tmp_path / "nope.pem"))
    assert res[0] == "error" and res[1].startswith("cannot load the CA file"), res


def test_refused():
    port = free_port()
    _, req = make_request("https://127.0.0.1:%d/nic/update" % port)
    assert run_request(req) == ("error", "connection refused by 127.0.0.1:%d" % port)


def test_unresolvable_host():
    req = Request("http", "cpe-tunnel-test.invalid", 80, "GET", "/", [("Host", "x")], 5)
    res = run_request(req)
    if res[1].startswith("timed out"):
        pytest.skip("this machine's resolver does not answer for .invalid")
    assert res == ("error", "cannot resolve host 'cpe-tunnel-test.invalid'")


def _silent_listener():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(4)  # the kernel completes the handshake; nobody ever reads or answers
    return s


def test_total_timeout_waiting_for_answer():
    lst = _silent_listener()
    try:
        port = lst.getsockname()[1]
        _, req = make_request("http://127.0.0.1:%d/" % port, timeout=1)
        t0 = time.monotonic()
        res = run_request(req)
        took = time.monotonic() - t0
        assert res == ("error", "timed out after 1 s waiting for an answer from 127.0.0.1:%d" % port)
        assert 0.8 < took < 3
    finally:
        lst.close()


def test_total_timeout_in_tls_handshake():
    lst = _silent_listener()
    try:
        port = lst.getsockname()[1]
        _, req = make_request("https://127.0.0.1:%d/" % port, timeout=1)
        res = run_request(req)
        assert res == ("error", "timed out after 1 s in the TLS handshake with 127.0.0.1:%d" % port)
    finally:
        lst.close()


class RawServer:
    """Accepts connections, reads the request head, sends `data` in pieces with `gap`
    seconds between them, then closes."""

    def __init__(self, data, gap=0.0):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.sock.settimeout(10)
        self.port = self.sock.getsockname()[1]
        self.data = data
        self.gap = gap
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(10)
            buf = b""
            try:
                while b"\r\n\r\n" not in buf:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    buf += chunk
                for piece in self.data:
                    if self.stop.is_set():
                        return
                    conn.sendall(piece)
                    if self.gap:
                        time.sleep(self.gap)
            except OSError:
                return

    def close(self):
        self.stop.set()
        self.sock.close()
        self.thread.join(5)


def _raw(data, gap=0.0, timeout=5):
    s = RawServer(data, gap)
    try:
        _, req = make_request("http://127.0.0.1:%d/" % s.port, timeout=timeout)
        return run_request(req), s.port
    finally:
        s.close()


def test_body_is_capped():
    big = b"x" * 100000
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(big)
    res, _ = _raw([head, big])
    assert res[0] == "response" and res[1] == 200 and res[2] == b"x" * 4096


def test_chunked_answer():
    res, _ = _raw([b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                   b"5\r\ngood \r\n", b"b\r\n203.0.113.7\r\n0\r\n\r\n"])
    assert res == ("response", 200, b"good 203.0.113.7")


def test_answer_until_close_without_length():
    res, _ = _raw([b"HTTP/1.0 401 Unauthorized\r\n\r\nbadauth\n"])
    assert res == ("response", 401, b"badauth\n")


def test_closed_without_answer():
    res, port = _raw([])
    assert res == ("error", "127.0.0.1:%d closed the connection without an answer" % port)


def test_malformed_answer():
    res, port = _raw([b"SSH-2.0-OpenSSH_9.2\r\n\r\n"])
    assert res == ("error", "127.0.0.1:%d sent a malformed HTTP answer" % port)


def test_slow_drip_hits_the_total_limit():
    drip = [b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"] + [b"x"] * 100
    t0 = time.monotonic()
    res, port = _raw(drip, gap=0.2, timeout=1)
    assert time.monotonic() - t0 < 4
    assert res == ("error", "timed out after 1 s waiting for an answer from 127.0.0.1:%d" % port)


def test_busy_and_close():
    lst = _silent_listener()
    try:
        port = lst.getsockname()[1]
        _, req = make_request("http://127.0.0.1:%d/" % port, timeout=5)
        w = Waiter()
        r = HttpRunner(w)
        r.start(req)
        assert r.busy
        with pytest.raises(RuntimeError):
            r.start(req)
        r.close()
        assert not r.busy
        time.sleep(0.3)
        assert r.poll_result() is None and w.calls == 0  # closed: no late result, no wakeup
        with pytest.raises(RuntimeError):
            r.start(req)
    finally:
        lst.close()


def test_source_address(server):
    _, req = make_request("http://127.0.0.1:%d/nic/update" % server.port)
    assert run_request(req, source_address="127.0.0.1")[0] == "response"
    # an address this host does not have
    res = run_request(req, source_address="192.0.2.123")
    assert res[0] == "error" and "192.0.2.123" in res[1], res


def test_update_loop_end_to_end(server):
    """The core and the runner together, as the daemon's loop will drive them: the
    broker checks the key; a wrong key ends in a hold-off, not a retry storm."""
    good_auth = "Basic " + base64.b64encode(("alice:" + SECRET).encode()).decode()

    def reply(handler):
        if handler.headers.get("Authorization") != good_auth:
            return 401, b"badauth"
        return 200, b"good 203.0.113.7"

    server.httpd.reply = reply
    url = "http://127.0.0.1:%d/nic/update" % server.port
    for secret, want in ((SECRET, "ok"), ("wrong-key", "auth-failed")):
        c = update_client(url, secret=secret)
        w = Waiter()
        runner = HttpRunner(w)
        try:
            c.trigger(0.0, "203.0.113.7", "start")
            req = c.next_request(0.0)
            runner.start(req)
            assert w.event.wait(10)
            kind, *rest = runner.poll_result()
            assert kind == "response"
            c.response_received(1.0, rest[0], rest[1])
            st = c.status(1.0)
            assert st["last_result"] == want
            assert SECRET not in repr(st) and "wrong-key" not in repr(st)
            if want == "auth-failed":
                assert st["next_retry_in"] >= 3600
                c.trigger(2.0, "203.0.113.8", "wan-change")
                assert c.next_request(2.0) is None
        finally:
            runner.close()
