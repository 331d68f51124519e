"""Configuration of the reference TSP broker: a JSON document, validated here.

Standard library only (``ipaddress``), none of cpe_tunnel's code: a test peer that shared
the client's helpers could share its bugs.

Document shape (every key optional; defaults shown)::

    {
      "listen": "203.0.113.18",          # IPv4: TSP over UDP/TCP, proto-41 endpoint, server
                                         #   IPv4 in offers (the lab's broker address)
      "listen6": null,                   # IPv6: TSP over IPv6 and the v4v6 tunnel endpoint
      "port": 3653, "udp": true, "tcp": true,   # port 0: any free one (see ping's "ports")
      "versions": ["2.0.2", "2.0.1", "2.0.0"],   # others are answered with 302
      "tunnel_types": ["v6v4", "v6udpv4", "v4v6"],   # CAPABILITY TUNNEL=..., in this order
      "auth": ["DIGEST-MD5", "PLAIN", "ANONYMOUS"],  # CAPABILITY AUTH=..., in this order
      "realm": "lab-tsp",                # DIGEST-MD5 realm
      "server_names": [],                # hosts accepted in digest-uri "tsp/<host>"; [] = any
      "accounts": [{"username": "alice", "password": "wonderland"}],
      "tunnel_prefix": "2001:db8:100::/64",    # tunnel link: server ::1, clients from it
      "anonymous_address": "sequential",       # or "ipv4-port": ::ffff:<v4>:<port> as tsps
      "prefix_pool": "2001:db8:4000::/40",     # delegated prefixes (host_type=router)
      "prefix_lengths": [48, 56, 64],          # lengths we delegate; others -> 518
      "anonymous_prefix": false,               # prefix for anonymous sessions? (no -> 522)
      "prefix_text": "groups",                 # "groups": RFC 5572 style "2001:0db8:4000"
                                               # "address": "2001:db8:4000::"
      "tunnel_prefix4": "203.0.113.64/26",     # v4v6 tunnel link: server first host
      "prefix_pool4": "203.0.113.128/25",      # v4v6 delegated IPv4 prefixes
      "prefix_lengths4": [24, 25, 26, 27, 28, 29, 30],
      "lifetime": 604800, "mtu": null,
      "keepalive_interval": null,        # null: the interval the client asked for
      "v6v4_endpoint": "seen",           # proto-41 endpoint: "seen" source or "declared"
      "tun_name": "tsp0", "tun_mtu": 1480,
      "max_tunnels": 256,                # oldest anonymous tunnel is dropped beyond this
      "session_timeout": 120             # idle control sessions are forgotten (s)
    }

Secrets (account passwords) are kept out of every repr and log line.
"""

import ipaddress
from dataclasses import dataclass, field

from tests.peer_util import load_json_config

VERSIONS = ("2.0.2", "2.0.1", "2.0.0", "1.0.1", "1.0.0")
TUNNEL_TYPES = ("v6v4", "v6udpv4", "v4v6")
MECHANISMS = ("DIGEST-MD5", "PLAIN", "ANONYMOUS")


class TspBrokerConfigError(ValueError):
    """The configuration document is unusable; the message says why."""


@dataclass
class Account:
    username: str
    password: str = field(repr=False)


@dataclass
class TspBrokerConfig:
    listen: str = "203.0.113.18"
    listen6: object = None
    port: int = 3653
    udp: bool = True
    tcp: bool = True
    versions: list = field(default_factory=lambda: ["2.0.2", "2.0.1", "2.0.0"])
    tunnel_types: list = field(default_factory=lambda: list(TUNNEL_TYPES))
    auth: list = field(default_factory=lambda: list(MECHANISMS))
    realm: str = "lab-tsp"
    server_names: list = field(default_factory=list)
    accounts: list = field(default_factory=list)
    tunnel_prefix: object = ipaddress.IPv6Network("2001:db8:100::/64")
    anonymous_address: str = "sequential"
    prefix_pool: object = ipaddress.IPv6Network("2001:db8:4000::/40")
    prefix_lengths: list = field(default_factory=lambda: [48, 56, 64])
    anonymous_prefix: bool = False
    prefix_text: str = "groups"
    tunnel_prefix4: object = ipaddress.IPv4Network("203.0.113.64/26")
    prefix_pool4: object = ipaddress.IPv4Network("203.0.113.128/25")
    prefix_lengths4: list = field(default_factory=lambda: [24, 25, 26, 27, 28, 29, 30])
    lifetime: int = 604800
    mtu: object = None
    keepalive_interval: object = None
    v6v4_endpoint: str = "seen"
    tun_name: str = "tsp0"
    tun_mtu: int = 1480
    max_tunnels: int = 256
    session_timeout: int = 120

    def account(self, username):
        for a in self.accounts:
            if a.username == username:
                return a
        return None

    @property
    def server_v6(self):
        """The broker's own address on the IPv6 tunnel link (first host)."""
        return self.tunnel_prefix.network_address + 1

    @property
    def server_v4(self):
        """The broker's own address on the v4v6 tunnel link (first host)."""
        return self.tunnel_prefix4.network_address + 1


def example_config(**overrides):
    """A small configuration with two accounts (documentation addresses only)."""
    cfg = {
        "listen": "203.0.113.18",
        "accounts": [
            {"username": "alice", "password": "wonderland"},
            {"username": "bob", "password": "bob-secret-7"},
        ],
    }
    cfg.update(overrides)
    return cfg


_KEYS = {
    "listen",
    "listen6",
    "port",
    "udp",
    "tcp",
    "versions",
    "tunnel_types",
    "auth",
    "realm",
    "server_names",
    "accounts",
    "tunnel_prefix",
    "anonymous_address",
    "prefix_pool",
    "prefix_lengths",
    "anonymous_prefix",
    "prefix_text",
    "tunnel_prefix4",
    "prefix_pool4",
    "prefix_lengths4",
    "lifetime",
    "mtu",
    "keepalive_interval",
    "v6v4_endpoint",
    "tun_name",
    "tun_mtu",
    "max_tunnels",
    "session_timeout",
}


def _need(cond, msg):
    if not cond:
        raise TspBrokerConfigError(msg)


def _int(value, name, lo, hi):
    _need(
        isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi,
        "%s must be an integer in %d..%d" % (name, lo, hi),
    )
    return value


def _bool(value, name):
    _need(isinstance(value, bool), "%s must be true or false" % name)
    return value


def _text(value, name):
    _need(isinstance(value, str) and value != "", "%s must be a non-empty string" % name)
    _need(not any(c in value for c in "\r\n\x00"), "%s must not contain line breaks or NUL" % name)
    return value


def _choice(value, name, choices):
    _need(value in choices, "%s must be one of %s" % (name, ", ".join(choices)))
    return value


def _net(value, name, cls):
    try:
        return cls(_text(value, name), strict=True)
    except ValueError as exc:
        raise TspBrokerConfigError("%s is not a network: %s" % (name, exc))


def _list(value, name):
    _need(isinstance(value, list), "%s must be a list" % name)
    return value


def parse_config(obj):
    """Validate a decoded JSON document; return a TspBrokerConfig or raise
    TspBrokerConfigError with a readable reason."""
    _need(isinstance(obj, dict), "the configuration must be a JSON object")
    extra = sorted(set(obj) - _KEYS)
    _need(not extra, "unknown key(s) in the configuration: %s" % ", ".join(extra))
    c = TspBrokerConfig()
    get = obj.get
    try:
        c.listen = str(ipaddress.IPv4Address(_text(get("listen", c.listen), "listen")))
    except ValueError:
        raise TspBrokerConfigError("listen must be an IPv4 address")
    if get("listen6") is not None:
        try:
            c.listen6 = str(ipaddress.IPv6Address(_text(get("listen6"), "listen6")))
        except ValueError:
            raise TspBrokerConfigError("listen6 must be an IPv6 address")
    c.port = _int(get("port", c.port), "port", 0, 65535)  # 0: any free port (tests)
    c.udp = _bool(get("udp", c.udp), "udp")
    c.tcp = _bool(get("tcp", c.tcp), "tcp")
    _need(c.udp or c.tcp, "at least one of udp and tcp must be on")
    versions = _list(get("versions", c.versions), "versions")
    for v in versions:
        _need(
            isinstance(v, str) and v in VERSIONS,
            "versions: %r is not a TSP version (%s)" % (v, ", ".join(VERSIONS)),
        )
    c.versions = list(versions)
    types = _list(get("tunnel_types", c.tunnel_types), "tunnel_types")
    _need(types, "tunnel_types must not be empty")
    for t in types:
        _choice(t, "tunnel_types entries", TUNNEL_TYPES)
    c.tunnel_types = list(types)
    mechs = _list(get("auth", c.auth), "auth")
    _need(mechs, "auth must not be empty")
    for m in mechs:
        _choice(m, "auth entries", MECHANISMS)
    c.auth = list(mechs)
    c.realm = _text(get("realm", c.realm), "realm")
    _need('"' not in c.realm and "\\" not in c.realm, "realm must not contain quotes or backslashes")
    names = _list(get("server_names", c.server_names), "server_names")
    c.server_names = [_text(n, "server_names entries").lower() for n in names]

    users = set()
    for i, a in enumerate(_list(get("accounts", []), "accounts")):
        where = "accounts[%d]" % i
        _need(isinstance(a, dict), where + " must be an object")
        bad = sorted(set(a) - {"username", "password"})
        _need(not bad, "unknown key(s) in %s: %s" % (where, ", ".join(bad)))
        user = _text(a.get("username"), where + ".username")
        _need('"' not in user and "\\" not in user, where + ".username must not contain quotes")
        _need(user.lower() != "anonymous", where + ".username 'anonymous' is reserved")
        _need(user not in users, "username %r appears twice" % user)
        users.add(user)
        pw = _text(a.get("password"), where + ".password")
        c.accounts.append(Account(user, pw))

    c.tunnel_prefix = _net(get("tunnel_prefix", str(c.tunnel_prefix)), "tunnel_prefix", ipaddress.IPv6Network)
    _need(c.tunnel_prefix.prefixlen <= 112, "tunnel_prefix must be /112 or shorter")
    c.anonymous_address = _choice(
        get("anonymous_address", c.anonymous_address), "anonymous_address", ("sequential", "ipv4-port")
    )
    if c.anonymous_address == "ipv4-port":
        _need(c.tunnel_prefix.prefixlen <= 64, "anonymous_address ipv4-port needs a /64 tunnel_prefix")
    c.prefix_pool = _net(get("prefix_pool", str(c.prefix_pool)), "prefix_pool", ipaddress.IPv6Network)
    _need(not c.prefix_pool.overlaps(c.tunnel_prefix), "prefix_pool overlaps tunnel_prefix")
    lens = _list(get("prefix_lengths", c.prefix_lengths), "prefix_lengths")
    for n in lens:
        _int(n, "prefix_lengths entries", c.prefix_pool.prefixlen, 128)
    c.prefix_lengths = sorted(set(lens))
    c.anonymous_prefix = _bool(get("anonymous_prefix", c.anonymous_prefix), "anonymous_prefix")
    c.prefix_text = _choice(get("prefix_text", c.prefix_text), "prefix_text", ("groups", "address"))
    c.tunnel_prefix4 = _net(
        get("tunnel_prefix4", str(c.tunnel_prefix4)), "tunnel_prefix4", ipaddress.IPv4Network
    )
    _need(c.tunnel_prefix4.prefixlen <= 30, "tunnel_prefix4 must be /30 or shorter")
    c.prefix_pool4 = _net(get("prefix_pool4", str(c.prefix_pool4)), "prefix_pool4", ipaddress.IPv4Network)
    _need(not c.prefix_pool4.overlaps(c.tunnel_prefix4), "prefix_pool4 overlaps tunnel_prefix4")
    lens4 = _list(get("prefix_lengths4", c.prefix_lengths4), "prefix_lengths4")
    for n in lens4:
        _int(n, "prefix_lengths4 entries", 1, 32)
    c.prefix_lengths4 = sorted(set(lens4))
    c.lifetime = _int(get("lifetime", c.lifetime), "lifetime", 0, 0x7FFFFFFF)
    if get("mtu") is not None:
        c.mtu = _int(get("mtu"), "mtu", 1280, 65535)
    if get("keepalive_interval") is not None:
        c.keepalive_interval = _int(get("keepalive_interval"), "keepalive_interval", 0, 86400)
    c.v6v4_endpoint = _choice(get("v6v4_endpoint", c.v6v4_endpoint), "v6v4_endpoint", ("seen", "declared"))
    c.tun_name = _text(get("tun_name", c.tun_name), "tun_name")
    _need(
        len(c.tun_name) <= 15 and all(ch not in c.tun_name for ch in "/: \t"),
        "tun_name must be a Linux interface name (at most 15 characters)",
    )
    c.tun_mtu = _int(get("tun_mtu", c.tun_mtu), "tun_mtu", 1280, 65515)
    c.max_tunnels = _int(get("max_tunnels", c.max_tunnels), "max_tunnels", 1, 1 << 20)
    c.session_timeout = _int(get("session_timeout", c.session_timeout), "session_timeout", 1, 86400)
    return c


def load_config(path):
    return load_json_config(path, parse_config, TspBrokerConfigError)
