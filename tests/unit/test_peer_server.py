"""tests/peer_server.py, the reference peers' shared control server and main(), in process."""
import json
import os
import signal
import socket
import stat
import threading

import pytest

from tests.peer_server import ControlServer, run_peer


def ask(path, line, timeout=3.0):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(timeout)
    s.connect(path)
    s.sendall(line if isinstance(line, bytes) else line.encode())
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
    s.close()
    return json.loads(buf.split(b"\n")[0])


@pytest.fixture
def served(tmp_path):
    path = str(tmp_path / "ctl.sock")
    with open(path, "w") as f:  # a stale file where the socket goes
        f.write("stale")
    seen = []

    def command(req):
        seen.append(req)
        if req["cmd"] == "fail":
            raise ValueError("no such tunnel")
        if req["cmd"] == "crash":
            raise KeyError("x")
        return {"echo": req.get("v")}

    srv = ControlServer(path, command, line_max=256)
    th = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    th.start()
    yield srv, path, seen, th
    srv.stop_soon()
    th.join(3)
    srv.close()


def test_socket_replaces_stale_file_and_is_private(served):
    _srv, path, _seen, _th = served
    mode = os.stat(path).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) & 0o077 == 0


def test_requests_errors_and_quit(served):
    srv, path, seen, th = served
    assert ask(path, '{"cmd": "echo", "v": 7}\n') == {"ok": True, "result": {"echo": 7}}
    assert ask(path, '{"cmd": "fail"}\n') == {"ok": False, "error": "no such tunnel"}
    assert ask(path, '{"cmd": "crash"}\n') == {"ok": False, "error": "KeyError: 'x'"}
    assert "a string 'cmd'" in ask(path, "[1, 2]\n")["error"]
    assert not ask(path, b"\xff\xfe\n")["ok"]
    # a line longer than line_max is cut and fails to parse (the rest of it too, as a
    # line of its own); the server keeps serving
    assert not ask(path, '{"cmd": "echo", "v": "%s"}\n' % ("x" * 400))["ok"]
    assert ask(path, '{"cmd": "echo", "v": 1}\n')["ok"]
    assert [r["cmd"] for r in seen].count("echo") == 2
    assert ask(path, '{"cmd": "quit"}\n') == {"ok": True, "result": {"quitting": True}}
    th.join(3)
    assert not th.is_alive()  # quit stopped serve_forever
    srv.close()
    assert not os.path.exists(path)


class _Peer:
    def __init__(self, config, enabled, events):
        self.events = events
        self.events.append(("made", config, enabled))

    def start(self):
        self.events.append("start")

    def stop(self):
        self.events.append("stop")

    def command(self, req):
        return "pong"


def test_run_peer_config_error_exits_2_and_bad_socket_exits_1(tmp_path):
    logged = []

    class Bad(Exception):
        pass

    def load_bad(path):
        raise Bad("line 3: no port")

    args = ["--config", "c.json", "--control", str(tmp_path / "c.sock")]
    assert run_peer(args, "peer", "A peer.", ("--off", "off"), load_bad, Bad, None, None, logged.append) == 2
    assert "configuration error: line 3: no port" in logged[-1]
    events = []
    too_long = str(tmp_path / ("x" * 200) / "c.sock")  # longer than sun_path
    rc = run_peer(["--config", "c.json", "--control", too_long], "peer", "A peer.", ("--off", "off"),
                  lambda p: {"c": p}, Bad, lambda c, on: _Peer(c, on, events), lambda p, c: "r", logged.append)
    assert rc == 1 and "cannot open the control socket" in logged[-1]
    assert events == [("made", {"c": "c.json"}, True), "start", "stop"]  # the peer was stopped again


def test_run_peer_serves_until_sigterm(tmp_path):
    events, logged = [], []
    path = str(tmp_path / "c.sock")
    done = []

    def runner():
        done.append(run_peer(["--config", "c.json", "--control", path, "--off"], "peer", "A peer.",
                             ("--off", "off"), lambda p: {}, ValueError, lambda c, on: _Peer(c, on, events),
                             lambda p, c: "tunnels 0", logged.append))

    old = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    # run_peer installs signal handlers, which only the main thread may do: serve from
    # the main thread and send the request and SIGTERM from another
    def client():
        import time
        for _ in range(100):
            if os.path.exists(path):
                break
            time.sleep(0.02)
        events.append(ask(path, '{"cmd": "ping"}\n'))
        os.kill(os.getpid(), signal.SIGTERM)

    th = threading.Thread(target=client, daemon=True)
    th.start()
    try:
        runner()
    finally:
        signal.signal(signal.SIGTERM, old[0])
        signal.signal(signal.SIGINT, old[1])
    th.join(3)
    assert done == [0]
    assert events[0] == ("made", {}, False)  # --off given: the part is switched off
    assert {"ok": True, "result": "pong"} in events and events[-1] == "stop"
    assert any(m.startswith("ready: tunnels 0, control ") for m in logged) and logged[-1] == "stopped"
    assert not os.path.exists(path)
