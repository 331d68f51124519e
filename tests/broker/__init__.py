"""Reference broker for the lab: a test peer that behaves like a real tunnel broker.

- tests.broker.server   the process (python -m tests.broker --config F --control S)
- tests.broker.update   dyndns2 / tunnelbroker.net-style HTTP endpoint update service
- tests.broker.pop      userspace 6in4 (protocol 41) point of presence on a TUN device
- tests.broker.client   BrokerHandle: talk to a running broker over its control socket
- tests.broker.certs    make_test_ca(): throwaway CA + server certificate via openssl
- tests.broker.config   the configuration document (example_config(), parse_config())

Written from the specifications, independent of cpe_tunnel's code.
"""

from .certs import make_test_ca
from .client import BrokerError, BrokerHandle
from .config import BrokerConfigError, example_config, parse_config

__all__ = [
    "BrokerHandle",
    "BrokerError",
    "BrokerConfigError",
    "example_config",
    "parse_config",
    "make_test_ca",
]
