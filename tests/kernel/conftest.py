"""tests/kernel/test_inside_*.py run inside User-Mode Linux only (started there by
tests/unit/test_kernel_path.py through runner.py); elsewhere they are not collected."""

import os

import pytest

from tests.kernel.runner import IN_VM_ENV
from tests.kernel.umllab import UmlLab

if os.environ.get(IN_VM_ENV) != "uml":
    collect_ignore_glob = ["test_inside_*.py"]


@pytest.fixture
def umllab():
    """A UmlLab (tests/lab's network, no NAT) built for one test and torn down after it."""
    lab = UmlLab()
    lab.build()
    try:
        yield lab
    finally:
        lab.teardown()
