"""cpe_tunnel.adapters.ubus through a STAND-IN for OpenWrt's `ubus` Python binding
(tests/openwrt/fake_ubus/ubus.py): same module API as the binding's README documents,
installed in sys.modules by these tests. The real binding needs libubus, which no
registry ships. The stand-in, like the binding, owns one AF_UNIX socket connected to
the ubus socket path; the test plays ubusd on that path (FakeUbusd), so the adapter's
real loop integration (finding the binding's socket, select() readiness, loop(0)) is
what runs."""
import importlib.util
import json
import os
import socket
import sys
import time

import pytest

from cpe_tunnel.adapters import ubus as ubus_adapter
from cpe_tunnel.adapters.netifd import NetifdReporter
from cpe_tunnel.loop import Loop

HERE = os.path.dirname(os.path.abspath(__file__))
FAKE = os.path.join(os.path.dirname(HERE), "openwrt", "fake_ubus", "ubus.py")


@pytest.fixture
def fake_ubus(monkeypatch):
    spec = importlib.util.spec_from_file_location("ubus", FAKE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setitem(sys.modules, "ubus", mod)
    yield mod
    if mod.get_connected():
        mod.disconnect()


class FakeUbusd:
    """Plays ubusd on a unix socket for the stand-in binding (its JSON lines)."""

    def __init__(self, path):
        self.path = path
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(path)
        self.srv.listen(4)
        self.srv.settimeout(2.0)
        self.conn = None
        self.buf = b""
        self.seen = []
        self.next_id = 1

    def accept(self):
        self.conn, _ = self.srv.accept()
        self.conn.setblocking(False)
        self.buf = b""

    def push(self, obj):
        self.conn.sendall((json.dumps(obj) + "\n").encode())

    def drain(self):
        while True:
            try:
                chunk = self.conn.recv(65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            self.buf += chunk
        while b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            self.seen.append(json.loads(line.decode()))

    def wait_for(self, loop, pred, timeout=2.0):
        """Run the daemon loop until a message matching pred arrives."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            loop.run_once(max_wait=0.02)
            self.drain()
            for m in self.seen:
                if pred(m):
                    self.seen.remove(m)
                    return m
        raise AssertionError("no matching message; seen %r" % self.seen)

    def call(self, loop, obj, method, data=None):
        rid = self.next_id
        self.next_id += 1
        self.push({"type": "call", "id": rid, "object": obj, "method": method, "data": data or {}})
        reply = self.wait_for(loop, lambda m: m.get("id") == rid and m["type"] in ("reply", "done"))
        if reply["type"] == "reply" and reply["status"] == 0:
            self.wait_for(loop, lambda m: m.get("id") == rid and m["type"] == "done")
        return reply

    def close(self):
        if self.conn:
            self.conn.close()
        self.srv.close()


@pytest.fixture
def bus(tmp_path):
    b = FakeUbusd(str(tmp_path / "ubus.sock"))
    yield b
    b.close()


def make_service(loop, bus, events=None, methods=None):
    state = {"reloads": 0, "reconnects": 0}

    def reconnect(args):
        state["reconnects"] += 1
        return {"message": "reconnecting"}

    def reload(args):
        state["reloads"] += 1
        return {"message": "configuration reloaded"}

    def broken(args):
        raise ValueError("boom")

    table = methods or {
        "status": lambda a: {"state": "up", "reason": "tunnel up", "last_error": None,
                             "wan": {"device": "eth0", "public_ipv4": None}, "counters": {"rx_bytes": 5 << 32}},
        "reconnect": reconnect,
        "reload": reload,
        "broken": broken,
    }
    svc = ubus_adapter.UbusService(loop, table, socket_path=bus.path,
                                   on_interface_event=(lambda a, i: events.append((a, i)))
                                   if events is not None else None)
    return svc, state


def test_without_binding_everything_is_a_no_op(monkeypatch):
    monkeypatch.setitem(sys.modules, "ubus", None)  # import ubus -> ImportError
    loop = Loop()
    try:
        fds = set(os.listdir("/proc/self/fd"))
        svc = ubus_adapter.UbusService(loop, {"status": lambda a: {}})
        assert not svc.available and not svc.connected
        assert svc.notify({"state": "up"}) is False
        with pytest.raises(RuntimeError):
            svc.call("network.interface", "notify_proto", {})
        svc.close()
        assert set(os.listdir("/proc/self/fd")) == fds
    finally:
        loop.close()


def test_object_methods_over_the_binding_socket(fake_ubus, bus):
    loop = Loop()
    try:
        svc, state = make_service(loop, bus)
        bus.accept()
        add = bus.wait_for(loop, lambda m: m["type"] == "add")
        assert add["object"] == "cpe_tunnel"
        assert add["methods"] == {"status": {}, "reconnect": {}, "reload": {}, "broken": {}}
        # the binding's socket was found and sits in our selector: no polling timer
        assert svc.fd is not None and not svc.polling

        r = bus.call(loop, "cpe_tunnel", "status")
        assert r["type"] == "reply" and r["status"] == 0
        # None values are left out (blobmsg has no null); big counters survive
        assert r["data"] == {"state": "up", "reason": "tunnel up", "wan": {"device": "eth0"},
                             "counters": {"rx_bytes": 5 << 32}}

        r = bus.call(loop, "cpe_tunnel", "reconnect")
        assert r["data"] == {"message": "reconnecting"} and state["reconnects"] == 1
        r = bus.call(loop, "cpe_tunnel", "reload")
        assert r["data"] == {"message": "configuration reloaded"} and state["reloads"] == 1

        # a failing method answers with plain words and the daemon goes on
        r = bus.call(loop, "cpe_tunnel", "broken")
        assert r["data"] == {"error": "broken failed: boom"}
        # the binding refuses arguments outside the (empty) signature
        r = bus.call(loop, "cpe_tunnel", "reload", {"force": True})
        assert r["type"] == "reply" and r["status"] == fake_ubus.UBUS_STATUS_INVALID_ARGUMENT
        assert state["reloads"] == 1
        svc.close()
        assert svc.fd is None and not fake_ubus.get_connected()
    finally:
        loop.close()


def test_state_event_and_interface_events(fake_ubus, bus):
    loop = Loop()
    events = []
    try:
        svc, _ = make_service(loop, bus, events=events)
        bus.accept()
        bus.wait_for(loop, lambda m: m["type"] == "listen" and m["event"] == "network.interface")
        assert svc.notify({"state": "down", "reason": "no WAN", "since": None}) is True
        ev = bus.wait_for(loop, lambda m: m["type"] == "send")
        assert ev["event"] == "cpe_tunnel.state"
        assert ev["data"] == {"state": "down", "reason": "no WAN"}

        bus.push({"type": "event", "event": "network.interface", "data": {"action": "ifup", "interface": "wan"}})
        bus.push({"type": "event", "event": "network.interface", "data": {"action": 7}})  # ignored
        end = time.monotonic() + 2
        while not events and time.monotonic() < end:
            loop.run_once(max_wait=0.02)
        assert events == [("ifup", "wan")]
        svc.close()
    finally:
        loop.close()


def test_reconnects_after_ubusd_restart(fake_ubus, bus, monkeypatch):
    monkeypatch.setattr(ubus_adapter, "RETRY_MIN", 0.05)
    loop = Loop()
    try:
        svc, _ = make_service(loop, bus)
        bus.accept()
        bus.wait_for(loop, lambda m: m["type"] == "add")
        bus.conn.close()  # ubusd goes away
        end = time.monotonic() + 2
        while svc.connected and time.monotonic() < end:
            loop.run_once(max_wait=0.02)
        assert not svc.connected and svc.fd is None
        assert svc.notify({"state": "up"}) is False
        # it comes back: the object is registered again on the new connection
        end = time.monotonic() + 2
        while not svc.connected and time.monotonic() < end:
            loop.run_once(max_wait=0.02)
        bus.accept()
        add = bus.wait_for(loop, lambda m: m["type"] == "add")
        assert add["object"] == "cpe_tunnel"
        assert bus.call(loop, "cpe_tunnel", "status")["data"]["state"] == "up"
        svc.close()
    finally:
        loop.close()


def test_polls_when_the_socket_cannot_be_identified(fake_ubus, bus, monkeypatch):
    monkeypatch.setattr(ubus_adapter, "find_socket_fd", lambda fds, paths: None)
    loop = Loop()
    try:
        svc, state = make_service(loop, bus)
        assert svc.polling and svc.fd is None
        bus.accept()
        r = bus.call(loop, "cpe_tunnel", "reconnect")
        assert r["data"] == {"message": "reconnecting"}
        svc.close()
        assert svc._timer is None
    finally:
        loop.close()


def test_connect_failure_retries_later(fake_ubus, tmp_path, monkeypatch):
    monkeypatch.setattr(ubus_adapter, "RETRY_MIN", 0.05)
    loop = Loop()
    try:
        path = str(tmp_path / "late.sock")
        svc = ubus_adapter.UbusService(loop, {"status": lambda a: {"state": "up"}}, socket_path=path)
        assert svc.available and not svc.connected
        late = FakeUbusd(path)
        try:
            end = time.monotonic() + 2
            while not svc.connected and time.monotonic() < end:
                loop.run_once(max_wait=0.02)
            assert svc.connected
            late.accept()
            assert late.call(loop, "cpe_tunnel", "status")["data"] == {"state": "up"}
        finally:
            svc.close()
            late.close()
    finally:
        loop.close()


def test_netifd_reporter_uses_the_binding_connection(fake_ubus, bus):
    loop = Loop()
    try:
        svc, _ = make_service(loop, bus)
        rep = NetifdReporter("wan6tun", bus=svc, run=lambda argv, t: pytest.fail("no CLI when bound"))
        st = {"state": "up", "ifname": "cpe-wan6tun", "tunnel_addresses": {"local": "2001:db8:1::2/64"},
              "delegated_prefixes": []}
        assert rep.update(st)
        obj, method, msg, timeout = fake_ubus.CALLS[-1]
        assert (obj, method) == ("network.interface", "notify_proto")
        assert msg["action"] == 0 and msg["interface"] == "wan6tun" and timeout > 0
        svc.close()
    finally:
        loop.close()
