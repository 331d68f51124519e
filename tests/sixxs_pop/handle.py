"""PopHandle: the test-side client of a running PoP's control socket, and start_pop()
which runs the PoP inside a lab's broker namespace (modelled on tests.broker's
BrokerHandle and Lab.start_broker)."""

import json
import os

from tests.peer import ControlHandle


class PopError(RuntimeError):
    """The PoP answered a control request with an error, or could not be reached."""


class PopHandle(ControlHandle):
    """Talks to a PoP over its control socket (JSON lines). Works from any namespace.

    Attributes: control_path, proc (Popen or None), config (dict as written), ca_file
    (CA certificate that signed the TIC server's certificate, or None), log_path, workdir.
    """

    error = PopError
    what = "PoP"

    def ping(self, timeout=2.0):
        return self.request("ping", timeout=timeout)

    def state(self):
        """{'time', 'clock_offset', 'faults', 'totals', 'drops': {family: {reason: n}},
        'last_drop', 'tic': {sessions, auth_ok, auth_failed, tunnel_shows, starttls, refused,
        recent: [session records]}, 'tunnels': {id: {type, endpoint, port, endpoint_moves,
        last_seen, heartbeats, ayiya_opcodes, echo_replies, rx/tx, drops, last_drop ...}}}"""
        return self.request("state")

    def tunnel(self, tid):
        return self.state()["tunnels"][str(tid)]

    def set_fault(self, tic=None, ayiya_drop=None, heartbeat_drop=None, proto41_drop=None):
        args = {}
        for k, v in (
            ("tic", tic),
            ("ayiya_drop", ayiya_drop),
            ("heartbeat_drop", heartbeat_drop),
            ("proto41_drop", proto41_drop),
        ):
            if v is not None:
                args[k] = v
        return self.request("set_fault", **args)

    def set_clock_offset(self, seconds):
        return self.request("set_clock_offset", seconds=seconds)

    def set_endpoint(self, tunnel_id, ip, port=None):
        return self.request("set_endpoint", tunnel=str(tunnel_id), ip=ip, port=port)

    def reset_counters(self):
        return self.request("reset_counters")

    def send_ayiya(self, tunnel_id, **kw):
        """PoP -> client datagram (see server.py for the keywords). Returns {'to', 'hex'}."""
        return self.request("send_ayiya", tunnel=str(tunnel_id), **kw)

    def send_motd(self, tunnel_id, text):
        """A signed AYIYA MOTD (opcode 5, next header 59 'no next header', the text as
        the payload) from the PoP to the tunnel's client. Returns {'to', 'hex'}."""
        if isinstance(text, str):
            text = text.encode("utf-8")
        return self.send_ayiya(tunnel_id, opcode=5, next_header=59, payload=bytes(text).hex())

    def recent_ayiya(self, tunnel_id):
        """The last authentic AYIYA datagrams from the client: [{'time', 'ip', 'port', 'hex'}]."""
        return self.request("recent_ayiya", tunnel=str(tunnel_id))


def start_pop(lab, cfg=None, tls=None, timeout=10.0, ns="broker"):
    """Start tests.sixxs_pop in the lab's `ns` namespace (default: broker); wait until its
    control socket answers. Returns a PopHandle; the PoP is stopped on lab teardown.

    cfg: dict (tests.sixxs_pop.config format; default example_config()). When tic_tls is
    not 'off' and no cert/key is given, a throwaway CA and a server certificate for the
    broker address (203.0.113.18) are made; handle.ca_file is the CA to trust. tls=False
    forces tic_tls 'off'; tls=True forces 'offer' when the config said 'off'."""
    from tests.broker import make_test_ca

    from .config import example_config

    cfg = json.loads(json.dumps(cfg if cfg is not None else example_config()))
    if tls is False:
        cfg["tic_tls"] = "off"
    elif tls and cfg.get("tic_tls", "offer") == "off":
        cfg["tic_tls"] = "offer"
    pops = getattr(lab, "_sixxs_pops", None)
    if pops is None:
        pops = lab._sixxs_pops = []
    n = len(pops)
    ca_file = None
    if cfg.get("tic_tls", "offer") != "off" and not (cfg.get("cert") and cfg.get("key")):
        certs = make_test_ca(
            os.path.join(lab.workdir, "sixxs-tls-%d" % n),
            ip=lab.addrs["broker"],
            dns_names=("tic.sixxs.test",),
        )
        cfg["cert"], cfg["key"], ca_file = certs["cert_file"], certs["key_file"], certs["ca_file"]
    h = lab.start_peer("tests.sixxs_pop", "sixxs_pop%d" % n, cfg, PopHandle, ns=ns, ca_file=ca_file)
    pops.append(h)
    h.wait_ready(timeout)
    return h
