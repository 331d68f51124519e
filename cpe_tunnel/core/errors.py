# Two error kinds, as h11 has them:
# - LocalProtocolError: our caller misused the API (a bug on our side).
# - RemoteProtocolError: the peer or the network sent something wrong.
# Both carry a reason a person can read. ConfigError is for bad configuration.


class CpeTunnelError(Exception):
    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason

    def __str__(self):
        return self.reason


class LocalProtocolError(CpeTunnelError):
    pass


class RemoteProtocolError(CpeTunnelError):
    pass


class ConfigError(CpeTunnelError):
    pass
