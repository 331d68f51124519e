"""Pytest fixtures for the namespace lab.

    lab       a Lab without NAT, built for one test and torn down after it
    lab_nat   a Lab behind one NAT
    make_lab  factory: make_lab(nat=..., nat_hops=..., prefix=...) -> built Lab (all torn down after the test)

They skip (with the reason) when not root or when ``ip netns`` cannot be used here.
Import them into a conftest.py or a test module: ``from tests.lab.fixtures import lab, lab_nat, make_lab``.
"""

import os
import subprocess

import pytest

from .lab import Lab

_usable = []


def lab_unusable_reason():
    """None when namespaces can be made here, else why not (cached)."""
    if _usable:
        return _usable[0]
    reason = None
    if os.geteuid() != 0:
        reason = "the namespace lab needs root"
    else:
        name = "ct%d-probe" % os.getpid()
        try:
            r = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True, timeout=10)
            if r.returncode != 0:
                reason = "ip netns add does not work here: %s" % r.stderr.strip()
            else:
                subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)
        except (OSError, subprocess.SubprocessError) as exc:
            reason = "ip netns is not usable: %s" % exc
    _usable.append(reason)
    return reason


def _skip_if_unusable():
    reason = lab_unusable_reason()
    if reason:
        pytest.skip(reason)


@pytest.fixture
def make_lab():
    _skip_if_unusable()
    labs = []

    def factory(**kw):
        lab = Lab(**kw)
        labs.append(lab)
        return lab.build()

    try:
        yield factory
    finally:
        errors = []
        for lab in reversed(labs):
            try:
                lab.teardown()
            except Exception as exc:
                errors.append(str(exc))
        if errors:
            raise AssertionError("lab teardown failed: %s" % "; ".join(errors))


@pytest.fixture
def lab(make_lab):
    return make_lab(nat=False)


@pytest.fixture
def lab_nat(make_lab):
    return make_lab(nat=True)
