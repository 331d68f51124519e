# Helpers shared by the core tests; plain Python that runs under CPython (pytest) and
# MicroPython (tests/mprun.py, with tests/core on MICROPYPATH).


def raises(exc, fn, *args, **kw):
    """Call fn(*args, **kw), which must raise exc with a non-empty .reason; return it."""
    try:
        fn(*args, **kw)
    except exc as e:
        assert e.reason, "empty reason"
        return e
    assert False, "no %s from %r" % (exc.__name__, args)
