"""Configuration of the reference broker: a JSON document, validated here.

The broker is a test peer written from the specifications (dyndns2 update
protocol as tunnelbroker.net offers it, RFC 4213 6in4), so it deliberately
uses only the standard library (``ipaddress`` and friends) and none of the
client's code: a broker sharing the client's helpers could share its bugs.

Document shape (every key but ``accounts`` optional)::

    {
      "listen": "0.0.0.0",              # address the HTTP(S) listeners bind
      "http_port": 80,                  # null: no plain HTTP listener
      "https_port": null,               # e.g. 443; needs "cert" and "key"
      "cert": "/path/server.pem", "key": "/path/server.key",
      "abuse_limit_per_minute": 10,     # accepted updates per tunnel per 60 s; 0 = no limit
      "badauth_status": 200,            # HTTP status sent with "badauth" for wrong credentials
      "tun_name": "pop0", "tun_mtu": 1480,
      "accounts": [{
        "username": "alice", "password": "account secret",
        "tunnels": [{
          "id": "12345", "updatekey": "tunnel secret",
          "client_v6": "2001:db8:1::2/64", "server_v6": "2001:db8:1::1",
          "routed": ["2001:db8:1234::/48"],
          "endpoint": null              # or the initially registered IPv4 address
        }]
      }]
    }

Secrets (account passwords, update keys) are kept out of every repr.
"""

import ipaddress
from dataclasses import dataclass, field

from tests.peer_util import claim_networks, claim_tunnel_id, load_json_config


class BrokerConfigError(ValueError):
    """The configuration document is unusable; the message says why."""


@dataclass
class TunnelSpec:
    id: str
    updatekey: str = field(repr=False)
    client_v6: ipaddress.IPv6Interface
    server_v6: ipaddress.IPv6Address
    routed: list
    endpoint: object  # ipaddress.IPv4Address or None

    @property
    def tunnel_net(self):
        return self.client_v6.network

    @property
    def networks(self):
        """Every IPv6 network that belongs to this tunnel (its /64 and routed prefixes)."""
        return [self.client_v6.network] + list(self.routed)


@dataclass
class Account:
    username: str
    password: str = field(repr=False)
    tunnels: list


@dataclass
class BrokerConfig:
    listen: str = "0.0.0.0"
    http_port: object = 80
    https_port: object = None
    cert: object = None
    key: object = None
    abuse_limit_per_minute: int = 10
    badauth_status: int = 200
    tun_name: str = "pop0"
    tun_mtu: int = 1480
    accounts: list = field(default_factory=list)

    def tunnels(self):
        out = []
        for acct in self.accounts:
            out.extend(acct.tunnels)
        return out


def example_config():
    """A typical single-account, single-tunnel configuration (documentation addresses)."""
    return {
        "listen": "0.0.0.0",
        "http_port": 80,
        "https_port": None,
        "abuse_limit_per_minute": 10,
        "accounts": [
            {
                "username": "alice",
                "password": "account-pass-1",
                "tunnels": [
                    {
                        "id": "12345",
                        "updatekey": "tunnel-key-1",
                        "client_v6": "2001:db8:1::2/64",
                        "server_v6": "2001:db8:1::1",
                        "routed": ["2001:db8:1234::/48"],
                        "endpoint": None,
                    }
                ],
            }
        ],
    }


_TOP_KEYS = {
    "listen",
    "http_port",
    "https_port",
    "cert",
    "key",
    "abuse_limit_per_minute",
    "badauth_status",
    "tun_name",
    "tun_mtu",
    "accounts",
}
_ACCOUNT_KEYS = {"username", "password", "tunnels"}
_TUNNEL_KEYS = {"id", "updatekey", "client_v6", "server_v6", "routed", "endpoint"}


def _need(cond, msg):
    if not cond:
        raise BrokerConfigError(msg)


def _port(value, name):
    if value is None:
        return None
    _need(
        isinstance(value, int) and not isinstance(value, bool) and 0 < value < 65536,
        "%s must be a TCP port number (1..65535) or null" % name,
    )
    return value


def _text(value, name, allow_empty=False):
    _need(isinstance(value, str), "%s must be a string" % name)
    _need(allow_empty or value != "", "%s must not be empty" % name)
    _need(
        "\n" not in value and "\r" not in value and "\x00" not in value,
        "%s must not contain line breaks or NUL" % name,
    )
    return value


def _unknown(obj, allowed, where):
    extra = sorted(set(obj) - allowed)
    _need(not extra, "unknown key(s) in %s: %s" % (where, ", ".join(extra)))


def _parse_tunnel(obj, where):
    _need(isinstance(obj, dict), "%s must be an object" % where)
    _unknown(obj, _TUNNEL_KEYS, where)
    tid = obj.get("id")
    if isinstance(tid, int) and not isinstance(tid, bool):
        tid = str(tid)
    tid = _text(tid, where + ".id")
    _need(
        ":" not in tid and "," not in tid and not any(c.isspace() for c in tid),
        "%s.id must not contain ':', ',' or spaces" % where,
    )
    key = _text(obj.get("updatekey"), where + ".updatekey")
    try:
        client = ipaddress.IPv6Interface(_text(obj.get("client_v6"), where + ".client_v6"))
    except ValueError as exc:
        raise BrokerConfigError("%s.client_v6 is not an IPv6 address/prefix length: %s" % (where, exc))
    _need(client.network.prefixlen < 128, "%s.client_v6 needs a prefix length below 128" % where)
    try:
        server = ipaddress.IPv6Address(_text(obj.get("server_v6"), where + ".server_v6"))
    except ValueError as exc:
        raise BrokerConfigError("%s.server_v6 is not an IPv6 address: %s" % (where, exc))
    _need(server in client.network, "%s.server_v6 must be inside %s" % (where, client.network))
    _need(server != client.ip, "%s.server_v6 and client_v6 must differ" % where)
    routed_in = obj.get("routed", [])
    _need(isinstance(routed_in, list), "%s.routed must be a list" % where)
    routed = []
    for i, r in enumerate(routed_in):
        try:
            routed.append(ipaddress.IPv6Network(_text(r, "%s.routed[%d]" % (where, i))))
        except ValueError as exc:
            raise BrokerConfigError("%s.routed[%d] is not an IPv6 prefix: %s" % (where, i, exc))
    ep = obj.get("endpoint")
    if ep is not None:
        try:
            ep = ipaddress.IPv4Address(_text(ep, where + ".endpoint"))
        except ValueError as exc:
            raise BrokerConfigError("%s.endpoint is not an IPv4 address: %s" % (where, exc))
    return TunnelSpec(id=tid, updatekey=key, client_v6=client, server_v6=server, routed=routed, endpoint=ep)


def parse_config(obj):
    """Validate a decoded JSON document; return a BrokerConfig or raise BrokerConfigError."""
    _need(isinstance(obj, dict), "the configuration must be a JSON object")
    _unknown(obj, _TOP_KEYS, "the configuration")
    cfg = BrokerConfig()
    listen = obj.get("listen", cfg.listen)
    try:
        ipaddress.IPv4Address(_text(listen, "listen"))
    except ValueError:
        raise BrokerConfigError("listen must be an IPv4 address, not %r" % (listen,))
    cfg.listen = listen
    cfg.http_port = _port(obj.get("http_port", cfg.http_port), "http_port")
    cfg.https_port = _port(obj.get("https_port", cfg.https_port), "https_port")
    cfg.cert = obj.get("cert")
    cfg.key = obj.get("key")
    if cfg.https_port is not None:
        _text(cfg.cert, "cert (needed for https_port)")
        _text(cfg.key, "key (needed for https_port)")
    limit = obj.get("abuse_limit_per_minute", cfg.abuse_limit_per_minute)
    if limit is None:
        limit = 0
    _need(
        isinstance(limit, int) and not isinstance(limit, bool) and limit >= 0,
        "abuse_limit_per_minute must be a non-negative integer (0 = no limit)",
    )
    cfg.abuse_limit_per_minute = limit
    status = obj.get("badauth_status", cfg.badauth_status)
    _need(status in (200, 401), "badauth_status must be 200 or 401")
    cfg.badauth_status = status
    cfg.tun_name = _text(obj.get("tun_name", cfg.tun_name), "tun_name")
    _need(len(cfg.tun_name) <= 15, "tun_name must be at most 15 characters")
    mtu = obj.get("tun_mtu", cfg.tun_mtu)
    _need(
        isinstance(mtu, int) and not isinstance(mtu, bool) and 1280 <= mtu <= 65515,
        "tun_mtu must be an integer in 1280..65515",
    )
    cfg.tun_mtu = mtu

    accounts = obj.get("accounts")
    _need(isinstance(accounts, list), "accounts must be a list")
    users = set()
    tids = set()
    nets = []
    for ai, a in enumerate(accounts):
        where = "accounts[%d]" % ai
        _need(isinstance(a, dict), where + " must be an object")
        _unknown(a, _ACCOUNT_KEYS, where)
        user = _text(a.get("username"), where + ".username")
        _need(":" not in user, where + ".username must not contain ':' (HTTP basic auth)")
        _need(user not in users, "username %r appears twice" % user)
        users.add(user)
        pw = _text(a.get("password"), where + ".password")
        tl = a.get("tunnels", [])
        _need(isinstance(tl, list), where + ".tunnels must be a list")
        tunnels = []
        for ti, t in enumerate(tl):
            spec = _parse_tunnel(t, "%s.tunnels[%d]" % (where, ti))
            claim_tunnel_id(spec.id, tids, BrokerConfigError)
            claim_networks(spec.id, spec.networks, nets, BrokerConfigError)
            tunnels.append(spec)
        cfg.accounts.append(Account(username=user, password=pw, tunnels=tunnels))
    return cfg


def load_config(path):
    return load_json_config(path, parse_config, BrokerConfigError)
