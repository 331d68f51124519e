"""BrokerHandle: the test-side client of a running reference broker's control socket."""

from tests.peer import ControlHandle


class BrokerError(RuntimeError):
    """The broker answered a control request with an error, or could not be reached."""


class BrokerHandle(ControlHandle):
    """Talks to a broker over its control socket (JSON lines). Works from any namespace.

    Attributes: control_path, proc (Popen or None), config (dict as written),
    ca_file (CA certificate path when HTTPS is on, else None), log_path, workdir.
    """

    error = BrokerError
    what = "broker"

    def tunnel(self, tid):
        return self.state()["tunnels"][str(tid)]

    def set_fault(self, http_down=None, answer_911=None):
        args = {}
        if http_down is not None:
            args["http_down"] = bool(http_down)
        if answer_911 is not None:
            args["answer_911"] = bool(answer_911)
        return self.request("set_fault", **args)

    def set_endpoint(self, tunnel_id, ip):
        return self.request("set_endpoint", tunnel=str(tunnel_id), ip=ip)
