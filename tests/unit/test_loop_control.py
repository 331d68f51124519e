"""The event loop and the local control socket, without namespaces."""
import json
import os
import signal
import socket
import threading
import time

import pytest

from cpe_tunnel import control
from cpe_tunnel.cli import format_status
from cpe_tunnel.loop import Loop


class FakeClock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_timer_source_fires_once_deadline_passes():
    clock = FakeClock()
    loop = Loop(clock)
    fired = []

    class Proto:
        deadline = 1005.0

        def get_timer(self):
            return self.deadline

        def handle_timer(self, now):
            fired.append(now)
            self.deadline = None

    p = Proto()
    loop.add_timer_source(p.get_timer, p.handle_timer)
    loop.run_once(max_wait=0)
    assert fired == []
    clock.t = 1005.0
    loop.run_once(max_wait=0)
    assert fired == [1005.0]
    loop.close()


def test_loop_sleeps_until_deadline_not_busy():
    loop = Loop()
    hits = []
    loop.call_later(0.2, lambda: (hits.append(time.monotonic()), loop.stop()))
    t0 = time.monotonic()
    cpu0 = time.process_time()
    loop.run()
    assert hits and hits[0] - t0 >= 0.19
    # sleeping in select, not spinning: almost no CPU used while waiting
    assert time.process_time() - cpu0 < 0.1
    loop.close()


def test_wakeup_from_other_thread_and_signal():
    loop = Loop()
    got = []
    threading.Timer(0.05, lambda: loop.call_soon_threadsafe(lambda: got.append("thread"))).start()
    loop.add_signal_handler(signal.SIGUSR1, lambda: (got.append("signal"), loop.stop()))
    threading.Timer(0.15, lambda: os.kill(os.getpid(), signal.SIGUSR1)).start()
    deadline = time.monotonic() + 3
    loop._stopping = False
    while not loop._stopping and time.monotonic() < deadline:
        loop.run_once(max_wait=1)
    signal.signal(signal.SIGUSR1, signal.SIG_DFL)
    signal.set_wakeup_fd(-1)
    assert got == ["thread", "signal"]
    loop.close()


@pytest.fixture
def server(tmp_path):
    loop = Loop()
    calls = []

    def boom(args):
        raise RuntimeError("no tunnel")

    srv = control.ControlServer(loop, str(tmp_path / "ctl.sock"), {
        "status": lambda a: {"state": "up", "n": len(calls)},
        "echo": lambda a: (calls.append(a), a)[1],
        "boom": boom,
    })
    stop = threading.Event()

    def run():
        while not stop.is_set():
            loop.run_once(max_wait=0.05)

    th = threading.Thread(target=run, daemon=True)
    th.start()
    yield srv
    stop.set()
    th.join()
    srv.close()
    loop.close()


def test_control_methods(server):
    assert control.call(server.path, "status") == {"state": "up", "n": 0}
    assert control.call(server.path, "echo", {"x": 1}) == {"x": 1}
    with pytest.raises(control.ControlError, match="unknown method 'nope'"):
        control.call(server.path, "nope")
    with pytest.raises(control.ControlError, match="boom failed: no tunnel"):
        control.call(server.path, "boom")


def test_control_hostile_clients(server):
    for payload in [b"\xff\xfe garbage\n", b"[1,2]\n", b'{"method": 5}\n', b"x" * 5000]:
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(3)
        s.connect(server.path)
        s.sendall(payload)
        ans = json.loads(s.recv(65536).decode())
        s.close()
        assert ans["ok"] is False and ans["error"]
    # a client that connects and says nothing does not block others
    idle = socket.socket(socket.AF_UNIX)
    idle.connect(server.path)
    assert control.call(server.path, "status")["state"] == "up"
    idle.close()


def test_control_unreachable(tmp_path):
    with pytest.raises(control.ControlError, match="cannot reach the daemon"):
        control.call(str(tmp_path / "missing.sock"), "status")


def test_cli_exit_code_unreachable(tmp_path):
    from cpe_tunnel import cli
    assert cli.main(["-s", str(tmp_path / "none.sock"), "status"]) == 2


def test_format_status_plain_words():
    st = {
        "state": "down", "reason": "the broker rejected the username or update key",
        "tunnel": "he", "mode": "http-update", "dataplane": "userspace", "ifname": "cpe6in4",
        "wan": {"device": "wan0", "local_ipv4": "198.51.100.2", "public_ipv4": "203.0.113.2",
                "nat_detected": True},
        "broker": {"ipv4": "203.0.113.18", "update_url": "https://203.0.113.18/nic/update"},
        "tunnel_addresses": {"local": "2001:db8:1::2/64", "remote": "2001:db8:1::1"},
        "delegated_prefixes": ["2001:db8:1234::/48"],
        "lans": [{"interface": "br-lan", "prefix": "2001:db8:1234::/64", "ra": True, "ra_interval": 600,
                  "deprecated": []}],
        "counters": {"tx_packets": 3, "tx_bytes": 300, "rx_packets": 2, "rx_bytes": 2048,
                     "drops": {"foreign source": 1}},
        "keepalive": {"enabled": True, "alive": False, "interval": 30},
        "last_update": {"result": "auth-failed", "message": "the broker rejected the username or update key",
                        "time": 990.0},
        "last_error": "the broker rejected the username or update key",
    }
    text = format_status(st, now=1000.0)
    assert text.splitlines()[0].startswith("cpe-tunnel DOWN")
    assert "203.0.113.2 (behind NAT)" in text
    assert "2001:db8:1234::/64 on br-lan" in text
    assert "NOT answering" in text
    assert "foreign source 1" in text
    assert "(10 s ago)" in text


def test_format_status_for_ipv4_in_ipv6():
    st = {"state": "up", "reason": "tunnel up", "tunnel": "v4", "mode": "tsp", "tunnel_family": "ipv4",
          "wan": {"device": "wan0", "local_ipv4": None, "local_ipv6": "2001:db8:c1::2"},
          "broker": {"ipv4": "203.0.113.65", "ipv6": "2001:db8:c2::2"},
          "tunnel_addresses": {"local": "203.0.113.66/32", "remote": "203.0.113.65", "family": "ipv4"},
          "delegated_prefixes": [], "delegated_prefixes4": ["203.0.113.128/28"],
          "lan4": {"interface": "br-lan", "address": "203.0.113.129/28"}}
    text = format_status(st, now=1000.0)
    assert "WAN:               2001:db8:c1::2 on wan0" in text
    assert "Broker:            2001:db8:c2::2" in text
    assert "Tunnel IPv4:       203.0.113.66/32, broker side 203.0.113.65" in text
    assert "Delegated:         203.0.113.128/28" in text
    assert "LAN IPv4:          203.0.113.129/28 on br-lan" in text


def test_format_status_shows_tsp_and_sixxs_details():
    st = {"state": "up", "reason": "tunnel up", "tunnel": "t", "mode": "tsp",
          "tsp": {"tunnel_type": "v6udpv4", "requested": "v6anyv4", "sessions": 2, "transport": "udp",
                  "fallback": "protocol 41 blocked on the path: using IPv6 in UDP"}}
    text = format_status(st, now=1000.0)
    assert "v6udpv4 tunnel (asked for v6anyv4), session 2 over udp" in text
    assert "protocol 41 blocked" in text
    st = {"state": "down", "reason": "clock", "tunnel": "t", "mode": "tic",
          "sixxs": {"tunnel_id": "T1", "type": "ayiya", "pop": "pop01", "config_from": "cache",
                    "waiting_for_clock": True, "clock_watch": "timerfd", "next_tic_in": 42.0,
                    "motd": {"text": "maintenance tonight", "time": 940.0, "last": 990.0}}}
    text = format_status(st, now=1000.0)
    assert "tunnel T1 (ayiya), PoP pop01, config from cache" in text
    assert "waiting for the clock to be set (watching for it)" in text
    assert "maintenance tonight (60 s ago)" in text


def test_a_callback_failing_every_turn_neither_spins_nor_floods_the_log(caplog):
    """A reader that raises before reading stays readable: every turn fails. The loop
    must go on (timers still fire), pause between failing turns, and log the
    traceback once, not thousands of times."""
    loop = Loop()
    r, w = os.pipe()
    os.write(w, b"x")  # stays readable: the callback never reads it
    calls = []

    def bad():
        calls.append(1)
        raise RuntimeError("broken reader")

    loop.add_reader(r, bad)
    ticks = []
    loop.call_later(0.3, lambda: ticks.append(1))
    loop.call_later(1.0, loop.stop)
    with caplog.at_level("ERROR", logger="cpe-tunneld"):
        loop.run()
    loop.remove_reader(r)
    os.close(r)
    os.close(w)
    loop.close()
    assert ticks == [1]  # the rest of the loop still works
    # without the pause this would be tens of thousands of calls in a second
    assert 2 < len(calls) < 200
    errors = [rec for rec in caplog.records if "internal error" in rec.getMessage()]
    assert len(errors) == 1 and "broken reader" in caplog.text
