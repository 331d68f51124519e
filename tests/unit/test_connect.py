"""adapters/connect.py: resolving and connecting off the loop, results back in it."""
import socket
import threading
import time

from cpe_tunnel.adapters.connect import Connector, resolve_family
from cpe_tunnel.loop import Loop


def run_until(loop, pred, timeout=5.0):
    end = time.monotonic() + timeout
    while not pred() and time.monotonic() < end:
        loop.run_once(max_wait=0.05)
    return pred()


def test_resolve_family_of_literals():
    assert resolve_family("192.0.2.1") == socket.AF_INET
    assert resolve_family("2001:db8::1") == socket.AF_INET6
    assert resolve_family("broker.example") == 0
    assert resolve_family("1.2.3") == 0


def test_tcp_connect_result_comes_back_in_the_loop():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    loop = Loop()
    got = []
    try:
        c = Connector(loop)
        c.start("127.0.0.1", srv.getsockname()[1], socket.SOCK_STREAM,
                lambda s, ip, err: got.append((s, ip, err, threading.current_thread())))
        assert run_until(loop, lambda: got)
        s, ip, err, thread = got[0]
        assert err is None and ip == "127.0.0.1"
        assert thread is threading.main_thread()  # delivered by the loop, not the worker
        assert not s.getblocking()
        peer, _ = srv.accept()
        s.send(b"x")
        assert peer.recv(1) == b"x"
        peer.close()
        s.close()
        assert not c.busy
    finally:
        srv.close()
        loop.close()


def test_refused_connect_is_a_reason_in_words():
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    loop = Loop()
    got = []
    try:
        Connector(loop).start("127.0.0.1", port, socket.SOCK_STREAM, lambda *a: got.append(a))
        assert run_until(loop, lambda: got)
        s, _ip, err = got[0]
        assert s is None and "cannot reach 127.0.0.1 port %d" % port in err
    finally:
        loop.close()


def test_unresolvable_name_is_reported():
    loop = Loop()
    got = []
    try:
        Connector(loop).start("no-such-host.invalid", 3653, socket.SOCK_DGRAM, lambda *a: got.append(a))
        assert run_until(loop, lambda: got, timeout=15)
        assert got[0][0] is None and "cannot resolve 'no-such-host.invalid'" in got[0][2]
    finally:
        loop.close()


def test_cancelled_or_superseded_attempt_never_reaches_the_caller():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    port = srv.getsockname()[1]
    loop = Loop()
    first, second = [], []
    try:
        c = Connector(loop)
        c.start("127.0.0.1", port, socket.SOCK_STREAM, lambda *a: first.append(a))
        c.start("127.0.0.1", port, socket.SOCK_STREAM, lambda *a: second.append(a))
        assert run_until(loop, lambda: second)
        # give the superseded worker every chance to deliver (it must not)
        end = time.monotonic() + 0.3
        while time.monotonic() < end:
            loop.run_once(max_wait=0.05)
        assert first == []
        second[0][0].close()
        third = []
        c.start("127.0.0.1", port, socket.SOCK_STREAM, lambda *a: third.append(a))
        c.cancel()
        end = time.monotonic() + 0.5
        while time.monotonic() < end:
            loop.run_once(max_wait=0.05)
        assert third == [] and not c.busy
    finally:
        srv.close()
        loop.close()


def test_udp_connect_binds_the_source():
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    loop = Loop()
    got = []
    try:
        Connector(loop).start("127.0.0.1", peer.getsockname()[1], socket.SOCK_DGRAM,
                              lambda *a: got.append(a), source="127.0.0.1")
        assert run_until(loop, lambda: got)
        s, _ip, err = got[0]
        assert err is None
        s.send(b"hello")
        data, src = peer.recvfrom(100)
        assert data == b"hello" and src == s.getsockname()
        s.close()
    finally:
        peer.close()
        loop.close()
