"""Fixtures for the tests that run inside User-Mode Linux (tests/kernel/test_inside_*.py)."""

import pytest

from tests.kernel.umllab import UmlLab


@pytest.fixture
def umllab():
    """A UmlLab (tests/lab's network, no NAT) built for one test and torn down after it."""
    lab = UmlLab()
    lab.build()
    try:
        yield lab
    finally:
        lab.teardown()
