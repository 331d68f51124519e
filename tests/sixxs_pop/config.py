"""Configuration of the reference SixXS-style PoP: a JSON document, validated here.

Standard library only (``ipaddress``), none of cpe_tunnel's code: a peer that shares
the client's helpers could share its bugs.

Document shape (every key but ``accounts`` optional)::

    {
      "listen": "0.0.0.0",            # IPv4 address every listener binds
      "tic_port": 3874,               # TCP, TIC server; null: none
      "heartbeat_port": 3740,         # UDP, heartbeat receiver; null: none
      "ayiya_port": 5072,             # UDP, AYIYA terminator; null: none
      "tic_tls": "offer",             # "off" | "offer" (STARTTLS) | "require" (no username before TLS)
      "cert": "/path/server.pem", "key": "/path/server.key",   # needed unless tic_tls is "off"
      "greeting": "...",              # text of the "200 ..." greeting line
      "tic_idle_timeout": 60,         # seconds a TIC connection may stay silent
      "pop_id": "tstpop01",           # "POP Id" in TIC
      "pop_ipv4": "203.0.113.18",     # "IPv4 POP" in TIC (the address clients send to)
      "max_skew": 120,                # seconds of clock difference accepted (sixxsd: 120)
      "clock_offset": 0,              # seconds added to this PoP's clock (tests of skew)
      "tun_name": "sixxs0",           # the PoP's TUN device
      "tun_mtu": null,                # default: the largest tunnel MTU (SixXS default 1280)
      "accounts": [{
        "username": "CPE1-SIXXS",     # the nic-handle TIC knows
        "password": "..." | "password_md5": "<32 hex>",   # SixXS stored only md5(password)
        "tunnels": [{
          "id": "T5072",
          "type": "ayiya",            # "6in4-static" | "6in4-heartbeat" | "ayiya"
          "client_v6": "2001:db8:2ff:1::2/64",   # "IPv6 Endpoint" / PrefixLength; AYIYA identity
          "pop_v6": "2001:db8:2ff:1::1",         # "IPv6 POP"; the PoP's AYIYA identity
          "password": "...",          # tunnel password (heartbeat, ayiya); none for static
          "endpoint": null,           # static: required IPv4; heartbeat: optional initial
          "routed": ["2001:db8:2f01::/48"],      # subnets routed over the tunnel
          "heartbeat_interval": 60, "mtu": 1280, "name": "...",
          "user_state": "enabled", "admin_state": "enabled"
        }]
      }]
    }

Secrets (account and tunnel passwords) are kept out of every repr.
"""

import ipaddress
import re
from dataclasses import dataclass, field

from tests.peer_util import claim_networks, claim_tunnel_id, load_json_config

TUNNEL_TYPES = ("6in4-static", "6in4-heartbeat", "ayiya")
TLS_MODES = ("off", "offer", "require")
STATES = ("enabled", "disabled")
_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")
_USER_RE = re.compile(r"^[!-~]{1,64}$")  # printable ASCII, no space
_HEX32 = re.compile(r"^[0-9a-f]{32}$")


class PopConfigError(ValueError):
    """The configuration document is unusable; the message says why."""


@dataclass
class TunnelSpec:
    id: str
    type: str
    client_v6: ipaddress.IPv6Interface
    pop_v6: ipaddress.IPv6Address
    password: object = field(repr=False)  # str or None (static)
    endpoint: object  # IPv4Address or None
    routed: list
    heartbeat_interval: int = 60
    mtu: int = 1280
    name: str = ""
    user_state: str = "enabled"
    admin_state: str = "enabled"

    @property
    def networks(self):
        return [self.client_v6.network] + list(self.routed)

    @property
    def enabled(self):
        return self.user_state == "enabled" and self.admin_state == "enabled"


@dataclass
class Account:
    username: str
    password_md5: str = field(repr=False)  # lowercase hex md5 of the password
    tunnels: list


@dataclass
class PopConfig:
    listen: str = "0.0.0.0"
    tic_port: object = 3874
    heartbeat_port: object = 3740
    ayiya_port: object = 5072
    tic_tls: str = "offer"
    cert: object = None
    key: object = None
    greeting: str = "TIC Service on reference-pop ready (cpe-tunnel lab)"
    tic_idle_timeout: float = 60.0
    pop_id: str = "tstpop01"
    pop_ipv4: str = "203.0.113.18"
    max_skew: int = 120
    clock_offset: float = 0.0
    tun_name: str = "sixxs0"
    tun_mtu: object = None
    accounts: list = field(default_factory=list)

    def tunnels(self):
        out = []
        for a in self.accounts:
            out.extend(a.tunnels)
        return out

    def effective_tun_mtu(self):
        if self.tun_mtu is not None:
            return self.tun_mtu
        return max([t.mtu for t in self.tunnels()] + [1280])


def example_config():
    """One account with one tunnel of each type, on the captures' addresses and passwords
    (../shared/captures/README.md): T4141 static, T3740 heartbeat, T5072 AYIYA."""
    return {
        "pop_id": "tstpop01",
        "pop_ipv4": "203.0.113.18",
        "tic_tls": "offer",
        "accounts": [
            {
                "username": "CPE1-SIXXS",
                "password": "tic-secret-1",
                "tunnels": [
                    {
                        "id": "T4141",
                        "type": "6in4-static",
                        "client_v6": "2001:db8:2ff::2/64",
                        "pop_v6": "2001:db8:2ff::1",
                        "endpoint": "192.0.2.2",
                        "routed": ["2001:db8:2f00::/48"],
                        "name": "static lab tunnel",
                    },
                    {
                        "id": "T3740",
                        "type": "6in4-heartbeat",
                        "client_v6": "2001:db8:2ff:2::2/64",
                        "pop_v6": "2001:db8:2ff:2::1",
                        "password": "hbsecret456",
                        "routed": ["2001:db8:2f02::/48"],
                        "heartbeat_interval": 60,
                        "name": "heartbeat lab tunnel",
                    },
                    {
                        "id": "T5072",
                        "type": "ayiya",
                        "client_v6": "2001:db8:2ff:1::2/64",
                        "pop_v6": "2001:db8:2ff:1::1",
                        "password": "ayiyasecret123",
                        "routed": ["2001:db8:2f01::/48"],
                        "heartbeat_interval": 60,
                        "name": "ayiya lab tunnel",
                    },
                ],
            }
        ],
    }


def single_tunnel_config(tid):
    """example_config() keeping only tunnel `tid` (a client without a tunnel id then
    picks it from 'tunnel list')."""
    cfg = example_config()
    acct = cfg["accounts"][0]
    acct["tunnels"] = [t for t in acct["tunnels"] if t["id"] == tid]
    if not acct["tunnels"]:
        raise KeyError(tid)
    return cfg


_TOP_KEYS = {
    "listen",
    "tic_port",
    "heartbeat_port",
    "ayiya_port",
    "tic_tls",
    "cert",
    "key",
    "greeting",
    "tic_idle_timeout",
    "pop_id",
    "pop_ipv4",
    "max_skew",
    "clock_offset",
    "tun_name",
    "tun_mtu",
    "accounts",
}
_ACCOUNT_KEYS = {"username", "password", "password_md5", "tunnels"}
_TUNNEL_KEYS = {
    "id",
    "type",
    "client_v6",
    "pop_v6",
    "password",
    "endpoint",
    "routed",
    "heartbeat_interval",
    "mtu",
    "name",
    "user_state",
    "admin_state",
}


def _need(cond, msg):
    if not cond:
        raise PopConfigError(msg)


def _int(value, name, lo, hi):
    _need(
        isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi,
        "%s must be a whole number from %d to %d" % (name, lo, hi),
    )
    return value


def _port(value, name):
    if value is None:
        return None
    return _int(value, name, 1, 65535)


def _text(value, name, allow_empty=False, limit=200):
    _need(isinstance(value, str), "%s must be a string" % name)
    _need(allow_empty or value != "", "%s must not be empty" % name)
    _need(len(value) <= limit, "%s must be at most %d characters" % (name, limit))
    _need(
        all(32 <= ord(c) < 127 for c in value),
        "%s must be printable ASCII without line breaks or control characters" % name,
    )
    return value


def _secret(value, name):
    # never echo the value itself in an error
    _need(isinstance(value, str) and value != "", "%s must be a non-empty string" % name)
    _need(len(value) <= 128, "%s must be at most 128 characters" % name)
    _need(all(33 <= ord(c) < 127 for c in value), "%s must be printable ASCII without spaces" % name)
    return value


def _unknown(obj, allowed, where):
    extra = sorted(set(obj) - allowed)
    _need(not extra, "unknown key(s) in %s: %s" % (where, ", ".join(str(e) for e in extra)))


def _ipv4(value, name):
    try:
        return ipaddress.IPv4Address(_text(value, name, limit=15))
    except ValueError:
        raise PopConfigError("%s is not an IPv4 address" % name)


def _parse_tunnel(obj, where):
    _need(isinstance(obj, dict), "%s must be an object" % where)
    _unknown(obj, _TUNNEL_KEYS, where)
    tid = obj.get("id")
    _need(
        isinstance(tid, str) and _ID_RE.match(tid) is not None,
        "%s.id must be 1-32 letters, digits, '_', '.' or '-' (like T12345)" % where,
    )
    ttype = obj.get("type")
    _need(ttype in TUNNEL_TYPES, "%s.type must be one of %s" % (where, ", ".join(TUNNEL_TYPES)))
    try:
        client = ipaddress.IPv6Interface(_text(obj.get("client_v6"), where + ".client_v6"))
    except ValueError as exc:
        raise PopConfigError("%s.client_v6 is not an IPv6 address/prefix length: %s" % (where, exc))
    _need(client.network.prefixlen < 128, "%s.client_v6 needs a prefix length below 128" % where)
    try:
        pop = ipaddress.IPv6Address(_text(obj.get("pop_v6"), where + ".pop_v6"))
    except ValueError as exc:
        raise PopConfigError("%s.pop_v6 is not an IPv6 address: %s" % (where, exc))
    _need(pop in client.network, "%s.pop_v6 must be inside %s" % (where, client.network))
    _need(pop != client.ip, "%s.pop_v6 and client_v6 must differ" % where)
    pw = obj.get("password")
    if ttype == "6in4-static":
        _need(pw is None, "%s: a 6in4-static tunnel has no password" % where)
    else:
        pw = _secret(pw, where + ".password")
    ep = obj.get("endpoint")
    if ttype == "ayiya":
        _need(ep is None, "%s: an ayiya tunnel learns its endpoint (leave endpoint out)" % where)
    elif ttype == "6in4-static":
        _need(ep is not None, "%s: a 6in4-static tunnel needs an endpoint" % where)
    ep = _ipv4(ep, where + ".endpoint") if ep is not None else None
    routed_in = obj.get("routed", [])
    _need(isinstance(routed_in, list), "%s.routed must be a list" % where)
    routed = []
    for i, r in enumerate(routed_in):
        try:
            net = ipaddress.IPv6Network(_text(r, "%s.routed[%d]" % (where, i)))
        except ValueError as exc:
            raise PopConfigError("%s.routed[%d] is not an IPv6 prefix: %s" % (where, i, exc))
        routed.append(net)
    spec = TunnelSpec(
        id=tid,
        type=ttype,
        client_v6=client,
        pop_v6=pop,
        password=pw,
        endpoint=ep,
        routed=routed,
        heartbeat_interval=_int(obj.get("heartbeat_interval", 60), where + ".heartbeat_interval", 1, 3600),
        mtu=_int(obj.get("mtu", 1280), where + ".mtu", 1280, 9000),
        name=_text(obj.get("name", ""), where + ".name", allow_empty=True, limit=64),
        user_state=obj.get("user_state", "enabled"),
        admin_state=obj.get("admin_state", "enabled"),
    )
    _need(spec.user_state in STATES, "%s.user_state must be enabled or disabled" % where)
    _need(spec.admin_state in STATES, "%s.admin_state must be enabled or disabled" % where)
    return spec


def _md5hex(text):
    import hashlib

    return hashlib.md5(text.encode("utf-8")).hexdigest()


def parse_config(obj):
    """Validate a decoded JSON document; return a PopConfig or raise PopConfigError."""
    _need(isinstance(obj, dict), "the configuration must be a JSON object")
    _unknown(obj, _TOP_KEYS, "the configuration")
    cfg = PopConfig()
    cfg.listen = str(_ipv4(obj.get("listen", cfg.listen), "listen"))
    cfg.tic_port = _port(obj.get("tic_port", cfg.tic_port), "tic_port")
    cfg.heartbeat_port = _port(obj.get("heartbeat_port", cfg.heartbeat_port), "heartbeat_port")
    cfg.ayiya_port = _port(obj.get("ayiya_port", cfg.ayiya_port), "ayiya_port")
    cfg.tic_tls = obj.get("tic_tls", cfg.tic_tls)
    _need(cfg.tic_tls in TLS_MODES, "tic_tls must be one of %s" % ", ".join(TLS_MODES))
    cfg.cert = obj.get("cert")
    cfg.key = obj.get("key")
    if cfg.tic_tls != "off" and cfg.tic_port is not None:
        _text(cfg.cert, "cert (needed when tic_tls is not 'off')", limit=4096)
        _text(cfg.key, "key (needed when tic_tls is not 'off')", limit=4096)
    cfg.greeting = _text(obj.get("greeting", cfg.greeting), "greeting", allow_empty=True)
    idle = obj.get("tic_idle_timeout", cfg.tic_idle_timeout)
    _need(
        isinstance(idle, (int, float)) and not isinstance(idle, bool) and 0.1 <= idle <= 3600,
        "tic_idle_timeout must be a number of seconds from 0.1 to 3600",
    )
    cfg.tic_idle_timeout = float(idle)
    cfg.pop_id = obj.get("pop_id", cfg.pop_id)
    _need(
        isinstance(cfg.pop_id, str) and _ID_RE.match(cfg.pop_id) is not None,
        "pop_id must be 1-32 letters, digits, '_', '.' or '-'",
    )
    cfg.pop_ipv4 = str(_ipv4(obj.get("pop_ipv4", cfg.pop_ipv4), "pop_ipv4"))
    cfg.max_skew = _int(obj.get("max_skew", cfg.max_skew), "max_skew", 1, 86400)
    off = obj.get("clock_offset", 0)
    _need(
        isinstance(off, (int, float)) and not isinstance(off, bool) and abs(off) <= 10 * 365 * 86400,
        "clock_offset must be a number of seconds (at most ten years either way)",
    )
    cfg.clock_offset = float(off)
    cfg.tun_name = _text(obj.get("tun_name", cfg.tun_name), "tun_name", limit=15)
    _need(
        re.match(r"^[A-Za-z0-9_.-]+$", cfg.tun_name) is not None,
        "tun_name must be letters, digits, '_', '.' or '-'",
    )
    mtu = obj.get("tun_mtu")
    cfg.tun_mtu = None if mtu is None else _int(mtu, "tun_mtu", 1280, 65515)

    accounts = obj.get("accounts")
    _need(isinstance(accounts, list), "accounts must be a list")
    users = set()
    tids = set()
    nets = []
    idents = set()
    for ai, a in enumerate(accounts):
        where = "accounts[%d]" % ai
        _need(isinstance(a, dict), where + " must be an object")
        _unknown(a, _ACCOUNT_KEYS, where)
        user = a.get("username")
        _need(
            isinstance(user, str) and _USER_RE.match(user) is not None,
            where + ".username must be 1-64 printable characters without spaces",
        )
        _need(user.lower() not in users, "username %r appears twice" % user)
        users.add(user.lower())
        if "password_md5" in a:
            _need("password" not in a, where + ": give password or password_md5, not both")
            pmd5 = a["password_md5"]
            _need(
                isinstance(pmd5, str) and _HEX32.match(pmd5.lower()) is not None,
                where + ".password_md5 must be 32 hex digits",
            )
            pmd5 = pmd5.lower()
        else:
            pmd5 = _md5hex(_secret(a.get("password"), where + ".password"))
        tl = a.get("tunnels", [])
        _need(isinstance(tl, list), where + ".tunnels must be a list")
        tunnels = []
        for ti, t in enumerate(tl):
            spec = _parse_tunnel(t, "%s.tunnels[%d]" % (where, ti))
            claim_tunnel_id(spec.id, tids, PopConfigError)
            _need(spec.client_v6.ip not in idents, "tunnel %s: client_v6 address used twice" % spec.id)
            idents.add(spec.client_v6.ip)
            claim_networks(spec.id, spec.networks, nets, PopConfigError)
            tunnels.append(spec)
        cfg.accounts.append(Account(username=user, password_md5=pmd5, tunnels=tunnels))
    return cfg


def load_config(path):
    return load_json_config(path, parse_config, PopConfigError)
