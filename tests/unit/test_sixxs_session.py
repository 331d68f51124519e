"""TicSession (cpe_tunnel/sessions_sixxs.py) on a real loop against the reference PoP's
TIC server on loopback (tests/sixxs_pop, independent of our TIC codec): connect off
the loop, STARTTLS handshake driven by readability, non-blocking sends, the clock
check and the two ways a clock-set notice restarts TIC at once (the daemon's
clock_set method, the timerfd watch), and AYIYA control messages handed over from
another thread. The runner is a stand-in: the data plane cannot exist here without
namespaces (tests/e2e/test_e2e_sixxs.py covers it whole)."""

import errno
import os
import ssl
import threading
import time

import pytest

from cpe_tunnel import sessions_sixxs
from cpe_tunnel.adapters import clock
from cpe_tunnel.core import addr, ayiya
from cpe_tunnel.loop import Loop
from tests.broker import make_test_ca
from tests.sixxs_pop.config import example_config, parse_config
from tests.sixxs_pop.state import PopState
from tests.sixxs_pop.tic import TicServer
from tests.unit.peerproc import free_port, temp_certs

POP6 = "2001:db8:2ff:1::1"
AYIYA_PW = "ayiyasecret123"


class FakeSup:
    def __init__(self):
        self.changes = 0

    def state_changed(self, now):
        self.changes += 1


class FakeRunner:
    """What TicSession uses of TunnelRunner: loop, cfg's state_dir, sup, dp,
    configure/unconfigure (recorded: no data plane here)."""

    def __init__(self, loop, state_dir):
        self.loop = loop
        self.cfg = {"globals": {"state_dir": state_dir}}
        self.sup = FakeSup()
        self.dp = None
        self.configured = []
        self.unconfigured = 0

    def configure(self, now, params):
        self.configured.append(params)

    def unconfigure(self, now):
        self.unconfigured += 1


@pytest.fixture
def tic_pop():
    """The PoP's TIC server (TLS offered) in this process on 127.0.0.1."""
    with temp_certs("tic-session-test-", "tls") as (d, certs):
        cfg = example_config()
        cfg.update(listen="127.0.0.1", tic_port=free_port(), heartbeat_port=None, ayiya_port=None,
                   cert=certs["cert_file"], key=certs["key_file"], tic_idle_timeout=5)
        state = PopState(parse_config(cfg), wallclock=time.time)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(certs["cert_file"], certs["key_file"])
        server = TicServer(state, ctx)
        server.start()
        try:
            yield {"state": state, "port": cfg["tic_port"], "ca_file": certs["ca_file"], "dir": d}
        finally:
            server.stop()


def tunnel_cfg(pop, tid="T5072", **extra):
    t = {"name": "sixxs", "server": ["127.0.0.1:%d" % pop["port"]], "username": "CPE1-SIXXS",
         "password": "tic-secret-1", "tunnelid": tid, "tic_tls": "require", "ca_file": pop["ca_file"],
         "tls_verify": True, "keepalive_interval": 30, "mtu": 1280, "ip6prefix": [],
         "private_range": []}
    t.update(extra)
    return t


@pytest.fixture
def loop():
    lp = Loop()
    yield lp
    lp.close()


def run_until(loop, cond, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        loop.run_once(max_wait=0.05)


def make_session(loop, pop, **extra):
    runner = FakeRunner(loop, pop["dir"])
    s = sessions_sixxs.TicSession(runner, tunnel_cfg(pop, **extra))
    loop.add_timer_source(s.get_timer, s.handle_timer)
    return runner, s


def test_tic_over_starttls_without_blocking_calls(loop, tic_pop):
    runner, s = make_session(loop, tic_pop)
    try:
        s.start(loop.clock(), "192.0.2.2")
        # the connect runs in the Connector's worker: start() returned without a socket
        assert s.sock is None and s.connector.busy
        seen = {}

        def tls_up():
            if isinstance(s.sock, ssl.SSLSocket) and not s._handshaking:
                seen["timeout"] = s.sock.gettimeout()
            return bool(runner.configured)

        run_until(loop, tls_up, what="the tunnel config over TLS")
        assert seen.get("timeout") == 0.0, "the TLS socket must stay non-blocking"
        p = runner.configured[0]
        assert p["kind"] == "ayiya" and p["remote4"] == "203.0.113.18"
        assert p["local6"] == addr.ip6_aton("2001:db8:2ff:1::2") and p["peer6"] == addr.ip6_aton(POP6)
        assert s.source == "TIC" and s.last_error is None and s.sock is None
        st = tic_pop["state"].state()["tic"]
        assert st["starttls"] >= 1 and st["auth_ok"] >= 1
        # the tunnel config was cached, private
        cache = [f for f in os.listdir(tic_pop["dir"]) if f.startswith("tic-")]
        assert cache and os.stat(os.path.join(tic_pop["dir"], cache[0])).st_mode & 0o777 == 0o600
    finally:
        s.stop()


def test_tls_failure_is_reported_not_raised(loop, tic_pop):
    other = make_test_ca(os.path.join(tic_pop["dir"], "other"), ip="127.0.0.1")
    runner, s = make_session(loop, tic_pop, ca_file=other["ca_file"])
    try:
        s.start(loop.clock(), "192.0.2.2")
        run_until(loop, lambda: s.last_error, what="a TLS failure")
        assert "TLS" in s.last_error and s.sock is None and not runner.configured
        assert s.retry_at is not None and not s.clock_wait
    finally:
        s.stop()


def test_unreachable_server_fails_in_words_off_the_loop(loop, tic_pop):
    _runner, s = make_session(loop, tic_pop, server=["127.0.0.1:%d" % free_port()])
    try:
        s.start(loop.clock(), "192.0.2.2")
        run_until(loop, lambda: s.last_error, what="a connect failure")
        assert "cannot reach the TIC server" in s.last_error and "refused" in s.last_error.lower()
        assert s.state(loop.clock())[0] == "down"
    finally:
        s.stop()


def wait_clock_error(loop, s, pop):
    pop["state"].clock_offset = 600.0
    s.start(loop.clock(), "192.0.2.2")
    run_until(loop, lambda: s.last_error and "clock" in s.last_error, what="the clock error")
    assert s.clock_wait and s.retry_at - loop.clock() > 50
    st = s.status(lambda t: t)["sixxs"]
    assert st["waiting_for_clock"] is True and st["next_tic_in"] > 50
    sessions = pop["state"].state()["tic"]["sessions"]
    pop["state"].clock_offset = 0.0
    return sessions


def test_clock_set_retries_tic_at_once(loop, tic_pop):
    runner, s = make_session(loop, tic_pop)
    try:
        assert s.clock_set(loop.clock()) is False  # nothing waits for the clock yet
        wait_clock_error(loop, s, tic_pop)
        assert clock.available() and s.clock_watch.active  # the timerfd watch runs meanwhile
        assert s.status(lambda t: t)["sixxs"]["clock_watch"] == "timerfd"
        assert s.clock_set(loop.clock()) is True
        run_until(loop, lambda: runner.configured, timeout=10, what="the tunnel after clock_set")
        assert not s.clock_wait and not s.clock_watch.active and s.last_error is None
        assert s.clock_set(loop.clock()) is False
    finally:
        s.stop()


def test_timerfd_notice_retries_tic(loop, tic_pop):
    runner, s = make_session(loop, tic_pop)
    try:
        before = wait_clock_error(loop, s, tic_pop)
        fd = s.clock_watch.fd
        assert loop._sel.get_key(fd) is not None  # registered only while waiting

        def cancelled(fd_, n):
            raise OSError(errno.ECANCELED, "Operation canceled")

        # the kernel's answer when CLOCK_REALTIME was set (this machine's clock is not stepped)
        s.clock_watch._read = cancelled
        loop._sel.get_key(fd).data()
        run_until(loop, lambda: runner.configured, timeout=10, what="the tunnel after the timerfd notice")
        assert tic_pop["state"].state()["tic"]["sessions"] == before + 1
        assert s.clock_sets == 1 and not s.clock_watch.active
        with pytest.raises(KeyError):
            loop._sel.get_key(fd)
    finally:
        s.stop()


def test_stop_while_waiting_for_the_clock_releases_the_timerfd(loop, tic_pop):
    _runner, s = make_session(loop, tic_pop)
    wait_clock_error(loop, s, tic_pop)
    fd = s.clock_watch.fd
    s.stop()
    assert not s.clock_watch.active
    with pytest.raises(OSError):
        os.fstat(fd)


# -- AYIYA control messages ------------------------------------------------------

def ayiya_session(loop, tmp_path):
    runner = FakeRunner(loop, str(tmp_path))
    s = sessions_sixxs.TicSession(runner, {"name": "sixxs", "server": ["127.0.0.1"], "username": "u",
                                            "password": "p", "tic_tls": "try"})
    s._ayiya_key = ayiya.password_hash(AYIYA_PW)
    s._ayiya_peer = addr.ip6_aton(POP6)
    return runner, s


def pop_datagram(op, payload=b"", key=AYIYA_PW, ident=POP6):
    return ayiya.ayiya_encode(addr.ip6_aton(ident), op, ayiya.NH_NONE, payload, time.time(),
                              ayiya.password_hash(key))


def from_rx_thread(s, datagrams):
    t = threading.Thread(target=lambda: [s._on_control(d) for d in datagrams])
    t.start()
    t.join(5)


def test_motd_from_the_rx_thread_reaches_status(loop, tmp_path, monkeypatch):
    runner, s = ayiya_session(loop, tmp_path)
    notices = []
    monkeypatch.setattr(sessions_sixxs.log, "notice", lambda msg, *a: notices.append(msg % a))
    from_rx_thread(s, [pop_datagram(ayiya.OP_MOTD, b"PoP maintenance\r\n\x1b[31m at 02:00"),
                       pop_datagram(ayiya.OP_MOTD, b"PoP maintenance\r\n\x1b[31m at 02:00"),
                       pop_datagram(ayiya.OP_NOOP),
                       pop_datagram(ayiya.OP_QUERY_REQUEST, b"?"),
                       pop_datagram(ayiya.OP_MOTD, b"x", key="wrong"),
                       pop_datagram(ayiya.OP_MOTD, b"y", ident="2001:db8:dead::1")])
    assert s.motd is None  # nothing is handled in the rx thread
    run_until(loop, lambda: sum(s.control_rx.values()) == 6, timeout=5, what="the control messages")
    st = s.status(lambda t: 1000.0 + t)["sixxs"]
    assert st["motd"]["text"] == "PoP maintenance ?[31m at 02:00"
    assert st["motd"]["time"] is not None and st["motd"]["last"] >= st["motd"]["time"]
    assert st["control_rx"] == {"motd": 2, "noop": 1, "query-request": 1, "unverified": 2}
    motd_logs = [n for n in notices if "message from the PoP" in n]
    assert len(motd_logs) == 1  # once per change
    from_rx_thread(s, [pop_datagram(ayiya.OP_MOTD, b"back to normal")])
    run_until(loop, lambda: s.motd["text"] == "back to normal", timeout=5, what="the new MOTD")
    assert len([n for n in notices if "message from the PoP" in n]) == 2
    assert runner.sup.changes >= 2
    assert AYIYA_PW not in repr(st)


def test_control_queue_is_bounded(loop, tmp_path):
    _runner, s = ayiya_session(loop, tmp_path)
    d = pop_datagram(ayiya.OP_NOOP)
    from_rx_thread(s, [d] * (sessions_sixxs.CONTROL_QUEUE + 10))
    run_until(loop, lambda: s.control_rx.get("noop") == sessions_sixxs.CONTROL_QUEUE, timeout=5,
              what="the queued beats")
    assert s.status(lambda t: t)["sixxs"]["control_rx"]["dropped (queue full)"] == 10


# -- non-blocking sends -----------------------------------------------------------

class SlowSocket:
    """Takes 3 bytes per send(), and says 'would block' every other call."""

    def __init__(self):
        self.got = b""
        self.calls = 0

    def send(self, data):
        self.calls += 1
        if self.calls % 2 == 0:
            raise BlockingIOError(errno.EAGAIN, "would block")
        self.got += bytes(data[:3])
        return min(3, len(data))


def test_sends_never_block_and_keep_order(loop, tmp_path):
    _runner, s = ayiya_session(loop, tmp_path)
    s.sock = SlowSocket()
    s.client = object()  # a session is under way
    s._pending += b"username CPE1-SIXXS\n"
    assert s._write(loop.clock()) is True
    assert s._pending and s._write_timer is not None  # the rest waits for a short timer
    s._flush = lambda now: None  # no TIC client behind this stand-in
    run_until(loop, lambda: not s._pending, timeout=5, what="the buffered bytes")
    assert s.sock.got == b"username CPE1-SIXXS\n"
    s._pending += b"x" * (sessions_sixxs.MAX_PENDING + 1)
    s._tic_failed = lambda now, msg, retry, **kw: setattr(s, "last_error", msg)
    assert s._write(loop.clock()) is False and "does not take" in s.last_error
    s.sock = None


# -- adapters/clock.py --------------------------------------------------------------

def test_clock_watch_arms_a_cancel_on_set_timerfd(loop):
    calls = []
    w = clock.ClockWatch(loop, lambda: calls.append(1))
    assert w.start() is True and w.start() is True
    fd = w.fd
    try:
        assert loop._sel.get_key(fd).data == w._on_readable
        assert clock.remaining(fd) > 300 * 86400  # armed far away: only the cancel matters
        loop.run_once(max_wait=0)  # not readable while nobody sets the clock
        assert calls == []
        w._read = lambda f, n: (_ for _ in ()).throw(BlockingIOError(errno.EAGAIN, "again"))
        w._on_readable()
        assert calls == [] and w.active
        w._read = lambda f, n: (_ for _ in ()).throw(OSError(errno.ECANCELED, "canceled"))
        w._on_readable()
        assert calls == [1] and w.notices == 1 and w.active and clock.remaining(fd) > 300 * 86400
        w._read = lambda f, n: (_ for _ in ()).throw(OSError(errno.EBADF, "bad fd"))
        w._on_readable()
        assert calls == [1] and not w.active  # gave up: the slow retry is the fallback
    finally:
        w.stop()
    with pytest.raises(KeyError):
        loop._sel.get_key(fd)


def test_clock_watch_without_timerfd_says_so(loop, monkeypatch):
    monkeypatch.setattr(clock, "_libc", False)
    w = clock.ClockWatch(loop, lambda: None)
    assert clock.available() is False and w.start() is False and not w.active
