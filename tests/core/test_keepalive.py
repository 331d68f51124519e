from cpe_tunnel.core.errors import LocalProtocolError
from cpe_tunnel.core.keepalive import Keepalive
from corecheck import raises as _raises



def test_disabled():
    k = Keepalive(0)
    assert k.get_timer(None) is None and k.get_timer(5.0) is None
    assert k.handle_timer(100.0, None) == []
    assert k.on_echo_reply(100.0, 1) is False
    st = k.status(100.0)
    assert st["alive"] is None and st["sent"] == 0 and st["enabled"] is False


def test_bad_arguments():
    _raises(LocalProtocolError, Keepalive, -1)
    _raises(LocalProtocolError, Keepalive, "30")
    _raises(LocalProtocolError, Keepalive, 30, 0)
    _raises(LocalProtocolError, Keepalive, 30, 3, 70000)
    _raises(LocalProtocolError, Keepalive, 30, 3, 1, 0)


def test_first_echo_at_once_then_quiet_interval():
    k = Keepalive(30, ident=0x4242)
    assert k.ident == 0x4242
    assert k.get_timer(None) == 0.0
    assert k.handle_timer(100.0, None) == [1]
    assert k.status(100.0)["alive"] is None
    # waiting for the answer: deadline is the answer timeout (min(30, 5))
    assert k.get_timer(None) == 105.0
    assert k.handle_timer(101.0, None) == []
    assert k.on_echo_reply(100.05, 1) is True
    st = k.status(101.0)
    assert st["alive"] is True and st["answered"] == 1 and st["sent"] == 1
    assert abs(st["rtt_ms"] - 50.0) < 1e-6 and abs(st["last_reply_age"] - 0.95) < 1e-6
    assert k.get_timer(None) == 130.0
    assert k.handle_timer(129.9, None) == []
    assert k.handle_timer(130.0, None) == [2]


def test_no_echo_while_traffic_flows():
    k = Keepalive(30)
    k.handle_timer(0.0, None)
    k.on_echo_reply(0.1, 1)
    t = 0.0
    sent = []
    while t < 300:
        t += 1.0
        last_tx = t - 0.5  # something went into the tunnel half a second ago
        assert k.get_timer(last_tx) == last_tx + 30
        sent += k.handle_timer(t, last_tx)
    assert sent == []
    # traffic stops at 299.5: echo 30 s later, not before
    assert k.handle_timer(329.4, 299.5) == []
    assert k.handle_timer(329.5, 299.5) == [2]
    # an echo counts as traffic: next one 30 s after it
    k.on_echo_reply(329.6, 2)
    assert k.get_timer(299.5) == 359.5


def test_last_rx_detects_dead_peer_under_outbound_traffic():
    k = Keepalive(30)
    assert k.handle_timer(0.0, None, None) == [1]
    k.on_echo_reply(0.1, 1)
    # traffic goes out all the time; inbound stops at 10 s
    assert k.get_timer(39.0, 10.0) == 40.0
    assert k.handle_timer(39.9, 39.9, 10.0) == []
    assert k.handle_timer(40.0, 40.0, 10.0) == [2]
    # inbound traffic alone (no reply) does not make it alive, and does not cancel the probe
    assert k.handle_timer(45.0, 45.0, 44.0) == [3]
    assert k.status(45.0)["missed_in_a_row"] == 1
    # both directions busy: no echo
    k.on_echo_reply(45.2, 3)
    assert k.handle_timer(60.0, 59.0, 59.0) == []
    assert k.get_timer(59.0, 59.0) == 89.0


def test_misses_mark_dead_and_probe_fast():
    k = Keepalive(60, misses_allowed=3)
    assert k.answer_timeout == 5  # nothing measured yet: the cap
    assert k.handle_timer(0.0, None) == [1]
    assert k.on_echo_reply(0.02, 1)
    # a 20 ms round trip: the next echo gets the minimum, 1 s (RFC 6298 style, floor 1 s)
    assert k.answer_timeout == 1
    assert k.handle_timer(59.9, None) == []
    assert k.handle_timer(60.0, None) == [2]
    assert k.get_timer(None) == 61.0
    # unanswered: probe again at once, even though traffic flows
    assert k.handle_timer(61.0, 60.9) == [3]
    st = k.status(61.0)
    assert st["alive"] is True and st["missed_in_a_row"] == 1
    assert k.get_timer(60.9) == 62.0
    assert k.handle_timer(62.0, 61.9) == [4]
    assert k.status(62.0)["alive"] is True
    assert k.handle_timer(63.0, 62.9) == [5]
    st = k.status(63.0)
    # dead interval + 3 s after the last answer: 3 misses of 1 s each
    assert st["alive"] is False and st["missed_in_a_row"] == 3
    assert k.handle_timer(64.0, 63.9) == [6]
    assert k.status(64.0)["missed_in_a_row"] == 4
    # the peer answers: alive again, back to the quiet interval
    assert k.on_echo_reply(65.0, 6) is True
    st = k.status(65.0)
    assert st["alive"] is True and st["missed_in_a_row"] == 0 and abs(st["rtt_ms"] - 1000.0) < 1e-6
    assert st["sent"] == 6 and st["answered"] == 2
    assert k.get_timer(64.5) == 124.5
    assert k.on_echo_reply(65.1, 6) is False  # counted once
    assert k.on_echo_reply(65.1, 999) is False
    assert k.status(65.2)["answered"] == 2


def test_answer_timeout_adapts_to_the_round_trip():
    k = Keepalive(30)
    t = 0.0
    # a slow path: 1.5 s round trips; the timeout grows to cover them (srtt + 4 rttvar)
    for _ in range(20):
        seqs = k.handle_timer(t)
        assert len(seqs) == 1
        k.on_echo_reply(t + 1.5, seqs[0])
        t = k.get_timer(None)
    assert abs(k.srtt - 1.5) < 1e-6
    assert k.answer_timeout >= 1.5 and k.answer_timeout <= 5
    assert k.status(t)["missed_in_a_row"] == 0 and k.status(t)["alive"] is True
    # jittery round trips (0.5 to 3.5 s) push it to the cap, 5 s, and no further
    for i in range(20):
        seqs = k.handle_timer(t)
        k.on_echo_reply(t + (0.5 if i % 2 else 3.5), seqs[0])
        t = k.get_timer(None)
    assert k.answer_timeout == 5
    assert k.status(t)["alive"] is True
    # a fixed timeout is not adapted
    f = Keepalive(30, answer_timeout=2)
    f.handle_timer(0.0)
    f.on_echo_reply(0.001, 1)
    assert f.answer_timeout == 2
    # an interval below the floor caps the timeout at the interval
    assert Keepalive(0.5).answer_timeout == 0.5


def test_slow_answers_are_not_misses_after_adapting():
    """A path with 2.5 s round trips (bufferbloat): once measured, echoes wait long
    enough, so the tunnel is not declared dead while the peer answers."""
    k = Keepalive(30)
    t = 0.0
    for _ in range(10):
        seqs = k.handle_timer(t)
        for s in seqs:
            k.on_echo_reply(t + 2.5, s)
        t = max(k.get_timer(None), t + 2.5)
    assert k.status(t)["alive"] is True


def test_late_reply_counts():
    k = Keepalive(20, misses_allowed=2, answer_timeout=2)
    assert k.handle_timer(0.0) == [1]
    assert k.handle_timer(2.0) == [2]  # 1 missed
    assert k.handle_timer(4.0) == [3]  # 2 missed: dead
    assert k.status(4.0)["alive"] is False
    assert k.on_echo_reply(4.5, 1) is True  # the first echo's reply finally arrives
    st = k.status(4.5)
    assert st["alive"] is True and st["missed_in_a_row"] == 0 and abs(st["rtt_ms"] - 4500.0) < 1e-6
    # echo 3 is still in flight; if it is lost it is a miss again
    assert k.get_timer(None) == 6.0
    assert k.handle_timer(6.0) == [4]
    assert k.status(6.0)["missed_in_a_row"] == 1


def test_short_interval_and_sequence_wrap():
    k = Keepalive(2)
    assert k.answer_timeout == 2
    seqs = []
    t = 0.0
    for _ in range(70000):
        out = k.handle_timer(t, None)
        for s in out:
            k.on_echo_reply(t + 0.01, s)
        seqs += out
        t = k.get_timer(None)
    assert seqs[0] == 1 and len(seqs) == 70000
    assert seqs[65534] == 65535 and seqs[65535] == 0 and seqs[65536] == 1
    assert k.status(t)["answered"] == 70000


def test_reset():
    k = Keepalive(10, misses_allowed=1)
    k.handle_timer(0.0)
    k.handle_timer(5.0)
    assert k.status(5.0)["alive"] is False
    k.reset(6.0)
    st = k.status(6.0)
    assert st["alive"] is None and st["sent"] == 0 and st["missed_in_a_row"] == 0
    assert k.get_timer(5.5) == 0.0
    assert k.handle_timer(6.0, 5.5) == [1]
