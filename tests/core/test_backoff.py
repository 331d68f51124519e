from cpe_tunnel.core.backoff import Backoff
from cpe_tunnel.core.errors import LocalProtocolError


def _fixed(v):
    return lambda: v


def test_no_jitter_doubles_and_caps():
    b = Backoff(5, 60, _fixed(0.0))
    got = [b.next_delay() for _ in range(7)]
    assert got == [5.0, 10.0, 20.0, 40.0, 60.0, 60.0, 60.0], got
    assert b.attempts == 7


def test_jitter_takes_away_up_to_the_fraction():
    # rand close to 1 with jitter 0.5: about half of the base, but never below min.
    b = Backoff(5, 100, _fixed(0.999), jitter=0.5)
    got = [b.next_delay() for _ in range(6)]
    assert got[0] == 5.0  # 5 * 0.5 would be below min_delay
    assert abs(got[1] - 10 * (1 - 0.5 * 0.999)) < 1e-9
    assert abs(got[2] - 20 * (1 - 0.5 * 0.999)) < 1e-9
    assert abs(got[5] - 100 * (1 - 0.5 * 0.999)) < 1e-9  # capped base, then jittered


def test_bounds_hold_for_any_rand():
    vals = [0.0, 0.1, 0.5, 0.9, 0.999999]
    for jitter in (0.0, 0.3, 0.5, 1.0):
        for v in vals:
            b = Backoff(2, 50, _fixed(v), factor=3.0, jitter=jitter)
            base = 2.0
            for _ in range(10):
                d = b.next_delay()
                assert 2.0 <= d <= 50.0, (jitter, v, d)
                assert d <= base + 1e-9
                assert d >= base * (1 - jitter) - 1e-9 or d == 2.0
                base = min(50.0, base * 3.0)


def test_bad_rand_values_are_clamped():
    for v in (-1.0, 5.0, float("nan")):
        b = Backoff(5, 60, _fixed(v))
        for _ in range(8):
            d = b.next_delay()
            assert 5.0 <= d <= 60.0, (v, d)


def test_reset():
    b = Backoff(1, 1000, _fixed(0.0))
    for _ in range(5):
        b.next_delay()
    assert b.peek_base() == 32.0
    b.reset()
    assert b.attempts == 0
    assert b.next_delay() == 1.0


def test_many_attempts_do_not_overflow():
    b = Backoff(1, 86400, _fixed(0.0), factor=10.0)
    for _ in range(5000):
        d = b.next_delay()
    assert d == 86400.0


def test_bad_arguments():
    for args in ((0, 10), (10, 5), (-1, 5)):
        try:
            Backoff(args[0], args[1], _fixed(0.0))
        except LocalProtocolError:
            continue
        assert False, args
    for kw in ({"factor": 0.5}, {"jitter": 1.5}, {"jitter": -0.1}):
        try:
            Backoff(1, 10, _fixed(0.0), **kw)
        except LocalProtocolError:
            continue
        assert False, kw
    try:
        Backoff(1, 10, 0.5)
        assert False
    except LocalProtocolError:
        pass
