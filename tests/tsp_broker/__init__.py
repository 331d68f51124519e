"""Reference TSP (RFC 5572) broker for the lab: a test peer that behaves like gogoSERVER /
tsps, written from the RFCs and the gogoCLIENT <-> tsps capture, independent of
cpe_tunnel's TSP code (a peer sharing the client's code would share its bugs).

- tests.tsp_broker.server     the process (python -m tests.tsp_broker --config F --control S)
- tests.tsp_broker.session    one control session, broker side (sans-IO state machine)
- tests.tsp_broker.transport  reliable-UDP layer (header echo, retransmission cache) and TCP
- tests.tsp_broker.wire       framing, status lines, CAPABILITY, request/offer/redirect XML
- tests.tsp_broker.auth       SASL server side: PLAIN, DIGEST-MD5 (RFC 2831)
- tests.tsp_broker.registry   tunnels, address/prefix pools, NAT detection, faults, counters
- tests.tsp_broker.dataplane  v6v4 / v6udpv4 / v4v6 terminated on one TUN device
- tests.tsp_broker.handle     start_tsp_broker(lab, cfg), spawn_tsp_broker(), TspBrokerHandle
- tests.tsp_broker.miniclient a small independent TSP client for tests (sockets only)
"""

from .config import TspBrokerConfigError, example_config, load_config, parse_config
from .handle import TspBrokerError, TspBrokerHandle, spawn_tsp_broker, start_tsp_broker

__all__ = [
    "TspBrokerConfigError",
    "TspBrokerError",
    "TspBrokerHandle",
    "example_config",
    "load_config",
    "parse_config",
    "spawn_tsp_broker",
    "start_tsp_broker",
]
