"""Reference SixXS-style PoP for the lab: a test peer that behaves like sixxsd plus the
SixXS TIC server, written from the specifications (draft-massar-v6ops-ayiya,
draft-massar-v6ops-heartbeat, sixxs.net/tools/tic) and the captures in
../shared/captures, independent of cpe_tunnel's code (standard library only).

- tests.sixxs_pop.server     the process (python -m tests.sixxs_pop --config F --control S)
- tests.sixxs_pop.tic        TIC server: TicSession (line logic) + TicServer (TCP, STARTTLS)
- tests.sixxs_pop.dataplane  AYIYA terminator, heartbeat receiver, proto-41 PoP on a TUN
- tests.sixxs_pop.wire       AYIYA / heartbeat / TIC-auth codecs and checks
- tests.sixxs_pop.state      tunnels, endpoints, counters, faults, clock offset
- tests.sixxs_pop.config     the configuration document (example_config(), parse_config())
- tests.sixxs_pop.handle     PopHandle (control socket client), start_pop(lab, cfg)
"""

from .config import PopConfigError, example_config, parse_config, single_tunnel_config
from .handle import PopError, PopHandle, start_pop

__all__ = [
    "PopConfigError",
    "PopError",
    "PopHandle",
    "example_config",
    "parse_config",
    "single_tunnel_config",
    "start_pop",
]
