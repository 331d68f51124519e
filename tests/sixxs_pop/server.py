"""The reference SixXS-style PoP process: TIC server + heartbeat receiver + AYIYA
terminator + userspace proto-41 PoP, and a control socket.

    python -m tests.sixxs_pop --config FILE.json --control /path/ctl.sock [--no-tun]

Run it inside the lab's broker namespace (tests.sixxs_pop.handle.start_pop does).
--no-tun: no TUN device and no raw socket (no root needed; AYIYA forwards are then
counted as 'tun error', echo requests are still answered).

Control protocol: one JSON object per line in, one per line out ({"ok": true,
"result": ...} or {"ok": false, "error": "reason"}):
    {"cmd": "ping"}
    {"cmd": "state"}
    {"cmd": "set_fault", "tic": "none|refuse|close|silent|inject_after_starttls",
                         "ayiya_drop": bool, "heartbeat_drop": bool, "proto41_drop": bool}
    {"cmd": "set_clock_offset", "seconds": 600}
    {"cmd": "reset_counters"}
    {"cmd": "set_endpoint", "tunnel": "T5072", "ip": "192.0.2.2" | null, "port": 5072 | null}
    {"cmd": "send_ayiya", "tunnel": "T5072", "opcode": 2, "next_header": 59, "payload": "<hex>",
                          "epoch_delta": 0, "identity": "<ipv6>", "bad_signature": false,
                          "raw": "<hex>", "to": ["ip", port]}
    {"cmd": "recent_ayiya", "tunnel": "T5072"}   -> [{"time", "ip", "port", "hex"}...]
    {"cmd": "quit"}
The control socket, "quit", the log and main() are tests.peer_server's.
"""

import ipaddress
import json
import math
import os
import ssl
import sys

from ..peer_server import make_log, run_peer
from .config import PopConfigError, load_config
from .dataplane import Dataplane
from .state import BOOL_FAULTS, TIC_FAULTS, PopState
from .tic import TicServer

log = make_log("sixxs-pop")


def _hex(value, name, limit=65535):
    if not isinstance(value, str):
        raise ValueError("%s must be a hex string" % name)
    try:
        out = bytes.fromhex(value)
    except ValueError:
        raise ValueError("%s is not valid hex" % name)
    if len(out) > limit:
        raise ValueError("%s is too long" % name)
    return out


def _int(req, name, default, lo, hi):
    v = req.get(name, default)
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise ValueError("%s must be a whole number from %d to %d" % (name, lo, hi))
    return v


class Pop:
    def __init__(self, config, tun=True):
        self.config = config
        self.state = PopState(config, log=log)
        self.dataplane = Dataplane(self.state, tun=tun)
        self.tic = None
        if config.tic_port is not None:
            ctx = None
            if config.tic_tls != "off":
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                ctx.load_cert_chain(config.cert, config.key)
            self.tic = TicServer(self.state, ctx)

    def start(self):
        self.dataplane.start()
        if self.tic is not None:
            self.tic.start()

    def stop(self):
        if self.tic is not None:
            self.tic.stop()
        self.dataplane.stop()

    def _tunnel(self, req):
        tid = req.get("tunnel")
        if not isinstance(tid, str) or tid not in self.state.tunnels:
            raise ValueError("no tunnel %r" % (tid,))
        return self.state.tunnels[tid]

    def command(self, req):
        """One control request (a dict with a string "cmd"; tests.peer_server checks that
        and answers "quit"): returns the result or raises ValueError(reason)."""
        cmd = req["cmd"]
        st = self.state
        if cmd == "ping":
            return {
                "pid": os.getpid(),
                "tun": self.dataplane.tun_fd is not None,
                "tic_port": self.config.tic_port,
                "heartbeat_port": self.config.heartbeat_port,
                "ayiya_port": self.config.ayiya_port,
            }
        if cmd == "state":
            return st.state()
        if cmd == "reset_counters":
            st.reset_counters()
            return st.state()
        if cmd == "set_fault":
            known = {"tic"} | set(BOOL_FAULTS)
            extra = set(req) - known - {"cmd"}
            if extra:
                raise ValueError("unknown fault(s): %s" % ", ".join(sorted(extra)))
            if "tic" in req and req["tic"] not in TIC_FAULTS:
                raise ValueError("tic fault must be one of %s" % ", ".join(TIC_FAULTS))
            for k in BOOL_FAULTS:
                if k in req and not isinstance(req[k], bool):
                    raise ValueError("%s must be true or false" % k)
            with st.lock:
                for k in known:
                    if k in req:
                        st.faults[k] = req[k]
            log("control: faults %s" % json.dumps(st.faults, sort_keys=True))
            return dict(st.faults)
        if cmd == "set_clock_offset":
            s = req.get("seconds")
            if (
                not isinstance(s, (int, float))
                or isinstance(s, bool)
                or not math.isfinite(s)
                or abs(s) > 10 * 365 * 86400
            ):
                raise ValueError("seconds must be a number (at most ten years either way)")
            st.clock_offset = float(s)
            log("control: clock offset %+.3f s" % s)
            return {"clock_offset": st.clock_offset, "time": st.wall()}
        if cmd == "set_endpoint":
            t = self._tunnel(req)
            ip = req.get("ip")
            port = req.get("port")
            if ip is not None and not isinstance(ip, str):
                raise ValueError("'ip' must be an IPv4 address string or null")
            if port is not None and (
                not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536
            ):
                raise ValueError("'port' must be a UDP port or null")
            try:
                st.set_endpoint(t.spec.id, ip, port)
            except ipaddress.AddressValueError:
                raise ValueError("'ip' is not an IPv4 address")
            return t.state()
        if cmd == "send_ayiya":
            t = self._tunnel(req)
            if t.spec.type != "ayiya":
                raise ValueError("tunnel %s is not an ayiya tunnel" % t.spec.id)
            ident = None
            if req.get("identity") is not None:
                try:
                    ident = ipaddress.IPv6Address(req["identity"]).packed
                except (ValueError, TypeError):
                    raise ValueError("identity must be an IPv6 address")
            to = req.get("to")
            if to is not None:
                if not (
                    isinstance(to, list)
                    and len(to) == 2
                    and isinstance(to[0], str)
                    and isinstance(to[1], int)
                    and 0 < to[1] < 65536
                ):
                    raise ValueError("to must be [ipv4, port]")
                to = (str(ipaddress.IPv4Address(to[0])), to[1])
            if not isinstance(req.get("bad_signature", False), bool):
                raise ValueError("bad_signature must be true or false")
            datagram, dest = self.dataplane.send_ayiya(
                t,
                opcode=_int(req, "opcode", 2, 0, 15),
                next_header=_int(req, "next_header", 59, 0, 255),
                payload=_hex(req.get("payload", ""), "payload"),
                epoch_delta=_int(req, "epoch_delta", 0, -(1 << 31), 1 << 31),
                identity=ident,
                bad_signature=req.get("bad_signature", False),
                raw=_hex(req["raw"], "raw") if req.get("raw") is not None else None,
                to=to,
            )
            return {"to": list(dest), "hex": datagram.hex()}
        if cmd == "recent_ayiya":
            t = self._tunnel(req)
            with st.lock:
                items = list(t.recent_ayiya)
            return [{"time": w, "ip": ip, "port": port, "hex": d.hex()} for w, ip, port, d in items]
        raise ValueError("unknown command %r" % (cmd,))


def _ready(pop, config):
    return "%d tunnel(s), tun=%s, tic=%s heartbeat=%s ayiya=%s" % (
        len(pop.state.tunnels),
        pop.dataplane.tun_fd is not None,
        config.tic_port,
        config.heartbeat_port,
        config.ayiya_port,
    )


def main(argv=None):
    return run_peer(
        argv,
        prog="python -m tests.sixxs_pop",
        doc=__doc__,
        switch=("--no-tun", "no TUN device / raw socket (no root needed)"),
        load_config=load_config,
        config_error=PopConfigError,
        make_peer=lambda config, tun: Pop(config, tun=tun),
        ready=_ready,
        log=log,
        line_max=1 << 20,  # send_ayiya's raw/payload: up to 64 KiB as hex
    )


if __name__ == "__main__":
    sys.exit(main())
