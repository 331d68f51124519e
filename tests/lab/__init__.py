"""Namespace lab: the network of DESIGN.md in network namespaces (see tests/lab/lab.py).

    from tests.lab import Lab
    with Lab(nat=True) as lab:
        broker = lab.start_broker()
        ...

Pytest fixtures (lab, lab_nat, make_lab) live in tests.lab.fixtures.
"""

from .lab import HttpResult, Lab, LabError, LanAddr, cleanup_stale

__all__ = ["Lab", "LabError", "LanAddr", "HttpResult", "cleanup_stale"]
