# The configuration schema of /etc/config/cpe_tunnel, as data, and what follows from
# it: validate(package) -> (config, problems), the shipped default file
# (defaults_text()) and the user reference (markdown() -> docs/CONFIG.md).
#
# Rules validate() applies:
# - Every problem is reported, not just the first; each names the section
#   (`tunnel 'he'` or `@lan[1]`), the option, the value and what is expected.
#   Secret values are shown as (hidden); so are URLs carrying credentials.
# - A value that is present must be valid, in every section, enabled or not.
#   Required options are only required in enabled sections (and in the mode that
#   needs them); options used only by another mode are ignored silently.
# - Exactly one tunnel section must be enabled. globals.enabled is the service
#   switch (the init script reads it); it does not relax any check, so
#   `cpe-tunnel --check` on the shipped file lists what is still to fill in.
# - list options also accept one `option` holding space-separated values (as
#   netifd does for dns and ip6prefix).
# Typed values in config: bool -> True/False, int/hex -> int, ipv4/ipv6 -> canonical
# text, ip6addr/prefix6/prefix4 -> (canonical address text, prefix length),
# everything else -> str; lists -> list ([] when unset); unset -> default or None.

from cpe_tunnel.core import addr

MODES = ("http-update", "static", "tsp", "tic")


class Option:
    """One option of a section type. kind is one of KINDS; default and example are
    UCI text (lists: list of text); required is False, True or a tuple of modes;
    modes is None (used in every mode) or the tuple of modes that use it."""

    def __init__(self, name, kind, default=None, help="", required=False, modes=None, secret=False,
                 lo=None, hi=None, choices=None, is_list=False, example=None, why=None, zero_ok=False,
                 hint=None):
        self.name = name
        self.kind = kind
        self.default = default
        self.help = help
        self.required = required
        self.modes = modes
        self.secret = secret
        self.lo = lo
        self.hi = hi
        self.choices = choices
        self.is_list = is_list
        self.example = example
        self.why = why
        self.zero_ok = zero_ok
        self.hint = hint  # short "what is this" shown when a required option is missing

    def required_in(self, mode):
        if self.required is True:
            return True
        if not self.required:
            return False
        return mode in self.required

    def used_in(self, mode):
        return self.modes is None or mode is None or mode in self.modes

    def __repr__(self):
        return "<Option %s %s>" % (self.name, self.kind)


class SectionType:
    """A section type: its options in order, how many may exist, and how the
    shipped file shows it (name, commented out or not, values set there)."""

    def __init__(self, type, help, options, count, example_name=None, shipped_commented=False,
                 shipped_values=None):
        self.type = type
        self.help = help
        self.options = options
        self.count = count  # "optional-one", "one-enabled" or "any"
        self.example_name = example_name
        self.shipped_commented = shipped_commented
        self.shipped_values = shipped_values or {}
        self.by_name = {}
        for o in options:
            self.by_name[o.name] = o


HTTP = ("http-update",)
SIXIN4 = ("http-update", "static")  # the 6in4 modes whose tunnel is configured by hand
TSP = ("tsp",)
TIC = ("tic",)

SCHEMA = [
    SectionType("globals", "Settings of the cpe-tunnel daemon itself. Optional; at most one, "
                "conventionally named 'main'.", [
                    Option("enabled", "bool", "1",
                           "Service switch: the init script starts the daemon only when this is 1. "
                           "The shipped file has 0 until the tunnel section is filled in."),
                    Option("log_level", "enum", "info", "Least important messages that are logged.",
                           choices=("debug", "info", "notice", "warning", "error")),
                    Option("control_socket", "path", "/var/run/cpe_tunnel.sock",
                           "Local control socket for the cpe-tunnel command when ubus is not available."),
                    Option("state_dir", "path", "/var/run/cpe_tunnel",
                           "Directory for runtime state (status, last endpoint update)."),
                ], "optional-one", example_name="main", shipped_values={"enabled": "0"}),
    SectionType("tunnel", "One 6in4 tunnel to a tunnel broker. Exactly one tunnel section must be "
                "enabled. Option names follow OpenWrt's 6in4 protocol.", [
                    Option("enabled", "bool", "1", "Set to 0 to keep this section without using it."),
                    Option("mode", "enum", None,
                           "http-update: 6in4 and keep the broker's idea of our IPv4 endpoint current "
                           "with its HTTP update API (tunnelbroker.net style). static: plain 6in4, "
                           "no broker update. tsp: ask a TSP broker (RFC 5572) for the tunnel. tic: fetch the "
                           "tunnel from a SixXS-style TIC server: 6in4 (static or with heartbeat) or "
                           "AYIYA (IPv6 in UDP, works behind NAT).",
                           required=True, choices=MODES, example="http-update"),
                    Option("wan_device", "ifname", None,
                           "Device whose IPv4 address is our tunnel endpoint (tunnel_mode v4v6: "
                           "whose global IPv6 address). Unset: the device of the IPv4 (v4v6: IPv6) "
                           "default route.", example="eth0"),
                    Option("ipaddr", "ipv4", None,
                           "Our IPv4 endpoint address. Unset: follow the address of the WAN device "
                           "(behind a NAT this is the private address; the broker is told the "
                           "public one).", example="192.0.2.2"),
                    Option("peeraddr", "ipv4", None,
                           "The broker's IPv4 endpoint ('Server IPv4 Address' on tunnelbroker.net).",
                           required=SIXIN4, modes=SIXIN4, example="203.0.113.1",
                           hint="the broker's IPv4 endpoint, e.g. 203.0.113.1"),
                    Option("ip6addr", "ip6addr", None,
                           "Our IPv6 address on the tunnel link, with its prefix length ('Client "
                           "IPv6 Address' on tunnelbroker.net).",
                           required=SIXIN4, modes=SIXIN4, example="2001:db8:1::2/64",
                           hint="our side of the tunnel, e.g. 2001:db8:1::2/64"),
                    Option("ip6gw", "ipv6", None,
                           "The broker's IPv6 address on the tunnel link ('Server IPv6 Address'). "
                           "Unset: derived from ip6addr by the daemon.", example="2001:db8:1::1"),
                    Option("ip6prefix", "prefix6", None,
                           "Routed prefixes the broker delegates to us ('Routed /64', 'Routed /48'); "
                           "LAN sections get /64s from them.",
                           is_list=True, example=["2001:db8:2::/64", "2001:db8:3::/48"]),
                    Option("ifname", "ifname", "cpe6in4", "Name of the tunnel interface we create."),
                    Option("dataplane", "enum", "auto",
                           "kernel: the kernel's sit driver (tunnel_mode v4v6: ip6tnl, "
                           "kmod-ip6-tunnel); userspace: TUN device plus a raw protocol-41 (v4v6: "
                           "IPv6 protocol-4) socket, for kernels without them; auto: kernel when "
                           "available.",
                           choices=("auto", "kernel", "userspace")),
                    Option("mtu", "int", "1280", "MTU of the tunnel interface.", lo=1280, hi=1480),
                    Option("ttl", "int", "64", "TTL of the outer IPv4 header (v4v6: hop limit of the "
                           "outer IPv6 header).", lo=1, hi=255),
                    Option("tos", "int", "0", "TOS byte of the outer IPv4 header (not for v4v6).",
                           lo=0, hi=255),
                    Option("defaultroute", "bool", "1",
                           "Add an IPv6 default route through the tunnel (tunnel_mode v4v6: an IPv4 "
                           "default route; when the WAN has an IPv4 default route of its own, ours "
                           "gets metric 1024 as a fallback)."),
                    Option("keepalive_interval", "int", "30",
                           "Seconds between keepalive echoes through the tunnel, which also keep "
                           "NAT state alive and detect a dead tunnel; 0 turns them off.",
                           lo=0, hi=3600),
                    Option("update_url", "url", "https://ipv4.tunnelbroker.net/nic/update",
                           "Endpoint update URL of the broker, without credentials or parameters.",
                           modes=HTTP),
                    Option("username", "string", None,
                           "Account name at the broker (mode tsp: unset = anonymous).",
                           required=HTTP + TIC, modes=HTTP + TSP + TIC, example="example-user",
                           hint="your account name at the broker"),
                    Option("updatekey", "string", None,
                           "Update key of the tunnel (tunnelbroker.net: Advanced tab); preferred "
                           "over the account password; mode http-update needs one of the two. "
                           "Secret: never logged.",
                           modes=HTTP, secret=True, example="example-update-key"),
                    Option("password", "string", None,
                           "Account password (http-update: used when no updatekey is set). "
                           "Secret: never logged.",
                           required=TIC, modes=HTTP + TSP + TIC, secret=True, example="example-password"),
                    Option("tunnelid", "string", None,
                           "The broker's ID of this tunnel (tic: e.g. T12345; needed when the "
                           "account has several).",
                           required=HTTP, modes=HTTP + TIC, example="123456",
                           hint="the broker's ID of this tunnel"),
                    Option("tls_verify", "bool", "1", "Check the broker's TLS certificate.", modes=HTTP + TIC),
                    Option("ca_file", "path", None,
                           "CA bundle for the TLS check. Unset: the system default.",
                           modes=HTTP + TIC, example="/etc/ssl/certs/ca-certificates.crt"),
                    Option("send_myip", "enum", "auto",
                           "Whether the update names our IPv4 address: always, never (the broker "
                           "uses the source address it sees), or auto (only when our address is "
                           "public, i.e. not behind a NAT).",
                           modes=HTTP, choices=("auto", "always", "never")),
                    Option("private_range", "prefix4", None,
                           "Extra IPv4 ranges to treat as behind a NAT, e.g. an ISP that uses "
                           "public space internally.",
                           is_list=True, example=["198.51.100.0/24"]),
                    Option("update_retry_min", "int", "5",
                           "First retry delay in seconds after a failed endpoint update.",
                           modes=HTTP, lo=1, hi=3600),
                    Option("update_retry_max", "int", "900",
                           "Longest retry delay in seconds (retries back off up to this).",
                           modes=HTTP, lo=1, hi=86400),
                    Option("server", "string", None,
                           "TSP brokers, tried in order: host name or IPv4 address, optionally "
                           ":port (default 3653); an IPv6 address bare or as [address]:port "
                           "(tunnel_mode v4v6 talks TSP over IPv6: names resolve to IPv6 there). A "
                           "redirect from a broker replaces this list.",
                           is_list=True, required=TSP + TIC, modes=TSP + TIC, example=["203.0.113.18"],
                           hint="the broker (TSP) or TIC server, e.g. broker.example.net"),
                    Option("tic_tls", "enum", "try",
                           "STARTTLS on the TIC connection: try (use it when offered), require "
                           "(refuse a server without it), never.", modes=TIC,
                           choices=("try", "require", "never")),
                    Option("auth", "enum", "any",
                           "TSP authentication: any (the strongest the broker offers), anonymous, "
                           "plain or digest-md5.", modes=TSP,
                           choices=("any", "anonymous", "plain", "digest-md5")),
                    Option("tunnel_mode", "enum", "v6anyv4",
                           "TSP tunnel type: v6anyv4 (6in4, or IPv6 in UDP when the broker sees a "
                           "NAT), v6v4 (6in4 only), v6udpv4 (IPv6 in UDP only), v4v6 (the other "
                           "way round: IPv4 in IPv6, RFC 2473, for a WAN with IPv6 only; the "
                           "broker gives an IPv4 address and, as a router, an IPv4 prefix for the "
                           "LAN).", modes=TSP,
                           choices=("v6anyv4", "v6v4", "v6udpv4", "v4v6")),
                    Option("host_type", "enum", "router",
                           "router: ask for a delegated prefix for the LANs; host: this box only.",
                           modes=TSP, choices=("router", "host")),
                    Option("prefix_len", "int", "0",
                           "Length of the prefix to ask for as a router (e.g. 48 or 56; v4v6: an "
                           "IPv4 prefix length such as 28); 0: the broker's choice.",
                           modes=TSP, lo=0, hi=64),
                    Option("tsp_transport", "enum", "auto",
                           "auto: TSP over UDP, TCP when UDP gets no answer; or only udp / tcp.",
                           modes=TSP, choices=("auto", "udp", "tcp")),
                    Option("locked", "string", None,
                           "Options set by the ISP's provisioning (docs/OPENWRT.md); the web page "
                           "shows them read-only. The daemon itself ignores this list.",
                           is_list=True, example=["peeraddr", "tunnelid"]),
                ], "one-enabled", example_name="he", shipped_values={"mode": "http-update"}),
    SectionType("lan", "A LAN interface that gets a /64 from the routed prefix and Router "
                "Advertisements (RFC 4861) so hosts configure themselves (SLAAC). Zero or more.", [
                    Option("enabled", "bool", "1", "Set to 0 to keep this section without using it."),
                    Option("interface", "ifname", None, "The LAN device, e.g. the bridge br-lan.",
                           required=True, example="br-lan", hint="the LAN device, e.g. br-lan"),
                    Option("ip6assign", "int", "64", "Length of the prefix given to this LAN.",
                           lo=64, hi=64, why="only a /64 supports SLAAC"),
                    Option("ip6hint", "hex", None,
                           "Which /64 of the routed prefix to use (hex subnet number). Unset: the "
                           "next free one.", lo=0, hi=0xFFFF, example="10"),
                    Option("ra", "bool", "1", "Send Router Advertisements on this LAN."),
                    Option("ra_interval", "int", "600",
                           "Longest time between unsolicited Router Advertisements "
                           "(MaxRtrAdvInterval, RFC 4861), seconds.", lo=4, hi=1800),
                    Option("ra_lifetime", "int", "1800",
                           "Router lifetime advertised (AdvDefaultLifetime), seconds; 0: do not "
                           "act as default router.", lo=0, hi=9000),
                    Option("ra_mtu", "int", "0", "MTU advertised to hosts; 0 advertises the tunnel MTU.",
                           lo=1280, hi=65535, zero_ok=True),
                    Option("ra_preferred", "int", "3600", "Preferred lifetime of the prefix, seconds.",
                           lo=0, hi=4294967295),
                    Option("ra_valid", "int", "7200", "Valid lifetime of the prefix, seconds.",
                           lo=0, hi=4294967295),
                    Option("dns", "ipv6", None, "DNS servers announced in RDNSS options (RFC 8106).",
                           is_list=True, example=["2001:db8::53"]),
                ], "any", shipped_commented=True),
]

SECTIONS = {}
for _s in SCHEMA:
    SECTIONS[_s.type] = _s

KINDS = ("bool", "int", "enum", "ipv4", "ipv6", "ip6addr", "prefix6", "prefix4", "ifname", "path",
         "url", "hex", "string")

_TRUE = ("1", "yes", "on", "true", "enabled")
_FALSE = ("0", "no", "off", "false", "disabled")
_DEC = "0123456789"
_HEX = "0123456789abcdefABCDEF"
_HOSTCH = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-"


def _all_in(text, chars):
    for c in text:
        if c not in chars:
            return False
    return True


def _has_control(text):
    for c in text:
        o = ord(c)
        if o < 32 or o == 127:
            return True
    return False


# ---------------------------------------------------------------- value checks
# Each returns the typed value or raises ValueError(detail), detail being None or a
# short explanation added after the expectation. Details never contain the value.

def _v_bool(opt, text):
    t = text.lower()
    if t in _TRUE:
        return True
    if t in _FALSE:
        return False
    raise ValueError(None)


def _v_int(opt, text):
    if not text or len(text) > 10 or not _all_in(text, _DEC):
        raise ValueError(None)
    n = int(text)
    if opt.zero_ok and n == 0:
        return 0
    if (opt.lo is not None and n < opt.lo) or (opt.hi is not None and n > opt.hi):
        raise ValueError(None)
    return n


def _v_enum(opt, text):
    if text in opt.choices:
        return text
    raise ValueError(None)


def _ascii(text):
    # addr's parsers use str.isdigit(), which takes other scripts' digits on CPython
    for c in text:
        if not 32 < ord(c) < 127:
            raise ValueError(None)


def _v_ipv4(opt, text):
    _ascii(text)
    return addr.ip4_ntoa(addr.ip4_aton(text))


def _v_ipv6(opt, text):
    _ascii(text)
    return addr.ip6_ntoa(addr.ip6_aton(text))


def _v_ip6addr(opt, text):
    _ascii(text)
    if "/" not in text:
        raise ValueError("the prefix length is missing")
    b, plen = addr.parse_addr6_plen(text)
    if plen < 1:
        raise ValueError("a /0 is not a link prefix")
    return (addr.ip6_ntoa(b), plen)


def _v_prefix6(opt, text):
    _ascii(text)
    try:
        b, plen = addr.parse_prefix6(text)
    except ValueError:
        try:
            b, plen = addr.parse_addr6_plen(text)
        except ValueError:
            raise ValueError(None)
        raise ValueError("bits set after the first %d; did you mean %s/%d?"
                         % (plen, addr.ip6_ntoa(addr.mask(b, plen)), plen))
    return (addr.ip6_ntoa(b), plen)


def _v_prefix4(opt, text):
    _ascii(text)
    try:
        b, plen = addr.parse_prefix4(text)
    except ValueError:
        a = text.split("/")[0]
        if "/" in text and addr.is_ip4(a):
            try:
                plen = int(text.split("/")[1])
            except ValueError:
                raise ValueError(None)
            if 0 <= plen <= 32:
                raise ValueError("bits set after the first %d; did you mean %s/%d?"
                                 % (plen, addr.ip4_ntoa(addr.mask(addr.ip4_aton(a), plen)), plen))
        raise ValueError(None)
    return (addr.ip4_ntoa(b), plen)


def _v_ifname(opt, text):
    # Linux dev_valid_name(): 1..15 bytes, not . or .., no '/', ':' or whitespace
    if not text or len(text.encode("utf-8")) > 15 or text in (".", ".."):
        raise ValueError(None)
    for c in text:
        if c in "/: " or _has_control(c) or c.isspace():
            raise ValueError(None)
    return text


def _v_path(opt, text):
    if not text.startswith("/") or len(text) > 4095 or _has_control(text):
        raise ValueError(None)
    return text


def _check_host(host):
    if host.startswith("["):
        if not host.endswith("]") or not addr.is_ip6(host[1:-1]):
            raise ValueError("bad IPv6 address in brackets")
        return
    if not host or len(host) > 253:
        raise ValueError("the host name is missing or too long")
    for label in host.split("."):
        if not label or len(label) > 63 or not _all_in(label, _HOSTCH) or label[0] == "-" \
                or label[-1] == "-":
            raise ValueError("bad host name")


def _v_url(opt, text):
    low = text.lower()
    if low.startswith("https://"):
        rest = text[8:]
    elif low.startswith("http://"):
        rest = text[7:]
    else:
        raise ValueError(None)
    if _has_control(text) or " " in text:
        raise ValueError("no spaces or control characters")
    if "@" in text:
        raise ValueError("put the account in 'username' and 'updatekey'/'password', not in the URL")
    if "?" in text or "#" in text:
        raise ValueError("no ?parameters: cpe-tunnel adds them itself")
    slash = rest.find("/")
    hostport = rest if slash < 0 else rest[:slash]
    host = hostport
    port = None
    if hostport.startswith("["):
        close = hostport.find("]")
        if close < 0:
            raise ValueError("bad IPv6 address in brackets")
        host = hostport[:close + 1]
        after = hostport[close + 1:]
        if after:
            if after[0] != ":":
                raise ValueError("bad port")
            port = after[1:]
    elif ":" in hostport:
        i = hostport.rfind(":")
        host, port = hostport[:i], hostport[i + 1:]
    _check_host(host)
    if port is not None:
        if not port or len(port) > 5 or not _all_in(port, _DEC) or not 1 <= int(port) <= 65535:
            raise ValueError("bad port")
    return text


def _v_hex(opt, text):
    if not text or len(text) > 8 or not _all_in(text, _HEX):
        raise ValueError(None)
    n = int(text, 16)
    if (opt.lo is not None and n < opt.lo) or (opt.hi is not None and n > opt.hi):
        raise ValueError(None)
    return n


def _v_string(opt, text):
    if not text or len(text) > 256 or _has_control(text):
        raise ValueError(None)
    return text


_CHECK = {
    "bool": _v_bool, "int": _v_int, "enum": _v_enum, "ipv4": _v_ipv4, "ipv6": _v_ipv6,
    "ip6addr": _v_ip6addr, "prefix6": _v_prefix6, "prefix4": _v_prefix4, "ifname": _v_ifname,
    "path": _v_path, "url": _v_url, "hex": _v_hex, "string": _v_string,
}


def expectation(opt):
    """'expected ...' for an option, as problems word it."""
    k = opt.kind
    if k == "bool":
        e = "expected a boolean (0 or 1)"
    elif k == "int":
        if opt.lo == opt.hi:
            e = "expected %d" % opt.lo
        elif opt.zero_ok:
            e = "expected 0 or an integer from %d to %d" % (opt.lo, opt.hi)
        else:
            e = "expected an integer from %d to %d" % (opt.lo, opt.hi)
    elif k == "enum":
        e = "expected one of: " + ", ".join(opt.choices)
    elif k == "ipv4":
        e = "expected an IPv4 address like 192.0.2.1"
    elif k == "ipv6":
        e = "expected an IPv6 address like 2001:db8::1"
    elif k == "ip6addr":
        e = "expected an IPv6 address with prefix length like 2001:db8:1::2/64"
    elif k == "prefix6":
        e = "expected an IPv6 prefix like 2001:db8:1234::/48"
    elif k == "prefix4":
        e = "expected an IPv4 prefix like 198.51.100.0/24"
    elif k == "ifname":
        e = "expected an interface name (1 to 15 characters; no spaces, '/' or ':')"
    elif k == "path":
        e = "expected an absolute path like /var/run/cpe_tunnel"
    elif k == "url":
        e = "expected an http:// or https:// URL like https://broker.example/nic/update"
    elif k == "hex":
        e = "expected a hexadecimal number from %x to %x" % (opt.lo, opt.hi)
    else:
        e = "expected text of 1 to 256 characters without control characters"
    if opt.why:
        e += " (" + opt.why + ")"
    return e


def check_value(opt, text):
    """(True, typed value) or (False, reason) for one value (one list item)."""
    if not isinstance(text, str):
        return False, expectation(opt)
    try:
        return True, _CHECK[opt.kind](opt, text)
    except ValueError as e:
        detail = e.args[0] if e.args else None
        if isinstance(detail, str) and detail and opt.kind in ("ip6addr", "prefix6", "prefix4", "url"):
            return False, "%s (%s)" % (expectation(opt), detail)
        return False, expectation(opt)


def _typed_default(opt):
    if opt.is_list:
        if opt.default is None:
            return []
        return [check_value(opt, x)[1] for x in opt.default]
    if opt.default is None:
        return None
    return check_value(opt, opt.default)[1]


def defaults(section_type):
    """The typed defaults of a section type (a dict)."""
    out = {}
    for o in SECTIONS[section_type].options:
        out[o.name] = _typed_default(o)
    return out


# ---------------------------------------------------------------- validate

def _esc(text, limit=64):
    out = []
    for c in text[:limit]:
        o = ord(c)
        if o < 32 or o == 127:
            out.append("\\x%02x" % o)
        elif c == "\\":
            out.append("\\\\")
        else:
            out.append(c)
    if len(text) > limit:
        out.append("...")
    return "".join(out)


def _hidden(opt, raw):
    if opt.secret:
        return True
    if opt.kind == "url" and ("@" in raw or "?" in raw):
        return True  # credentials or parameters may be in there
    return False


def _shown(opt, raw):
    if _hidden(opt, raw):
        return "(hidden)"
    return "'" + _esc(raw) + "'"


def _distance(a, b):
    # Levenshtein distance, for "did you mean"
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
        prev = cur
    return prev[len(b)]


def suggest(name, candidates):
    """The closest candidate within a small edit distance, or None."""
    if len(name) > 40:
        return None
    best, best_d = None, 3
    low = name.lower()
    for c in candidates:
        if abs(len(c) - len(low)) >= best_d:
            continue
        d = _distance(low, c)
        if d < best_d and d < max(2, len(c) // 2):
            best, best_d = c, d
    return best


MAX_PROBLEMS = 200  # a hostile file cannot make the list (or the time) explode


class _Checker:
    def __init__(self, pkg):
        self.pkg = pkg
        self.problems = []
        self.dropped = 0

    def add(self, text):
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(text)
        else:
            self.dropped += 1

    def section(self, sec, label, stype, enforce):
        """Check one section. Returns (typed values with defaults filled in, the raw
        values of known options, the tunnel mode or None). enforce: required options
        apply (the section is enabled)."""
        values = {}
        raw = {}
        mode = None
        if stype.type == "tunnel":
            m = sec.get("mode")
            if isinstance(m, str) and m in MODES:
                mode = m
        for name, value in sec.options():
            opt = stype.by_name.get(name)
            if opt is None:
                self.unknown_option(label, stype, name)
                continue
            quiet = not opt.used_in(mode)
            typed = self.value(label, opt, value, quiet)
            raw[name] = value
            if typed is not None:
                values[name] = typed
        for opt in stype.options:
            if opt.name in values:
                continue
            if opt.name not in raw and enforce and opt.required_in(mode):
                if opt.required is True:
                    where = ""
                else:
                    where = " in mode '%s'" % mode
                more = ""
                if opt.hint:
                    more = " (%s)" % opt.hint
                elif opt.kind == "enum":
                    more = " (one of: %s)" % ", ".join(opt.choices)
                self.add("%s: option '%s' is required%s%s" % (label, opt.name, where, more))
            values[opt.name] = _typed_default(opt)
        return values, raw, mode

    def value(self, label, opt, value, quiet):
        """Typed value, or None after reporting (unless quiet) what is wrong."""
        if isinstance(value, list):
            if not opt.is_list:
                if not quiet:
                    self.add("%s: option '%s' is written as a list but takes one value: %s"
                             % (label, opt.name, expectation(opt)))
                return None
            items = value
        elif opt.is_list:
            items = value.split()
        else:
            ok, res = check_value(opt, value)
            if ok:
                return res
            if not quiet:
                self.add("%s: option '%s' = %s: %s" % (label, opt.name, _shown(opt, value), res))
            return None
        out = []
        good = True
        for item in items:
            ok, res = check_value(opt, item)
            if ok:
                out.append(res)
            else:
                good = False
                if not quiet:
                    self.add("%s: option '%s' = %s: %s" % (label, opt.name, _shown(opt, item), res))
        return out if good else None

    def unknown_option(self, label, stype, name):
        if len(self.problems) >= MAX_PROBLEMS:
            self.dropped += 1  # not worth a suggestion
            return
        hint = ""
        s = suggest(name, [o.name for o in stype.options])
        if s is not None:
            hint = " (did you mean '%s'?)" % s
        else:
            for other in SCHEMA:
                if other is not stype and name in other.by_name:
                    hint = " (it belongs in a '%s' section)" % other.type
                    break
        self.add("%s: unknown option '%s'%s" % (label, _esc(name, 40), hint))


def _label(sec, index):
    if sec.name is not None:
        return "%s '%s'" % (sec.type, sec.name)
    return "@%s[%d]" % (sec.type, index)


def validate(pkg):
    """Check a uci.Package against SCHEMA. Returns (config, problems): problems is a
    list of readable strings (empty when the configuration is usable; after
    MAX_PROBLEMS of them a last line says how many more there were); config is a
    dict {'globals': {...}, 'tunnel': {...} or None, 'lans': [{...}, ...]} of typed
    values (enabled LAN sections only; each tunnel/lan dict has 'name'), best effort
    when there are problems."""
    ck = _Checker(pkg)
    counts = {}
    labelled = []
    for sec in pkg.sections():
        n = counts.get(sec.type, 0)
        counts[sec.type] = n + 1
        labelled.append((sec, _label(sec, n)))

    for sec, label in labelled:
        if sec.type not in SECTIONS:
            s = suggest(sec.type, [t.type for t in SCHEMA])
            hint = " (did you mean '%s'?)" % s if s else " (expected globals, tunnel or lan)"
            ck.add("%s: unknown section type '%s'%s" % (_esc(label, 80), _esc(sec.type, 40), hint))

    config = {"globals": defaults("globals"), "tunnel": None, "lans": []}

    # globals
    gl = [(s, lab) for s, lab in labelled if s.type == "globals"]
    if len(gl) > 1:
        ck.add("more than one globals section (%s): keep one" % ", ".join(lab for s, lab in gl))
    for i in range(len(gl)):
        values, raw, mode = ck.section(gl[i][0], gl[i][1], SECTIONS["globals"], True)
        if i == 0:
            config["globals"] = values

    # tunnels
    tunnels = []
    for sec, label in labelled:
        if sec.type != "tunnel":
            continue
        en = sec.get("enabled")
        enabled = True
        if isinstance(en, str):
            ok, res = check_value(SECTIONS["tunnel"].by_name["enabled"], en)
            if ok:
                enabled = res
        values, raw, mode = ck.section(sec, label, SECTIONS["tunnel"], enabled)
        values["name"] = sec.id
        if enabled:
            tunnels.append((sec, label, values, raw, mode))
            _tunnel_checks(ck, label, values, raw, mode)
    if not tunnels:
        n = counts.get("tunnel", 0)
        if n:
            ck.add("no enabled tunnel section: all %d tunnel sections have option enabled '0'" % n)
        else:
            ck.add("no tunnel section: add one (config tunnel 'he', see docs/CONFIG.md)")
    elif len(tunnels) > 1:
        ck.add("more than one enabled tunnel section (%s): set option enabled '0' on all but one"
               % ", ".join(t[1] for t in tunnels))
    tunnel = tunnels[0] if tunnels else None
    if tunnel is not None:
        config["tunnel"] = tunnel[2]

    # LANs
    lans = []
    for sec, label in labelled:
        if sec.type != "lan":
            continue
        en = sec.get("enabled")
        enabled = True
        if isinstance(en, str):
            ok, res = check_value(SECTIONS["lan"].by_name["enabled"], en)
            if ok:
                enabled = res
        values, raw, mode = ck.section(sec, label, SECTIONS["lan"], enabled)
        values["name"] = sec.id
        if enabled:
            lans.append((label, values, raw))
            config["lans"].append(values)
            _lan_checks(ck, label, values, raw)
    _lans_vs_tunnel(ck, lans, tunnel)
    if ck.dropped:
        ck.problems.append("... and %d more problems" % ck.dropped)
    return config, ck.problems


def _tunnel_checks(ck, label, v, raw, mode):
    if mode == "http-update" and "updatekey" not in raw and "password" not in raw:
        ck.add("%s: option 'updatekey' is required in mode 'http-update' (or set the account "
               "'password')" % label)
    lo, hi = v.get("update_retry_min"), v.get("update_retry_max")
    if mode == "http-update" and isinstance(lo, int) and isinstance(hi, int) and hi < lo:
        ck.add("%s: %s must not be below %s" % (label, _int_shown("update_retry_max", hi, raw),
                                               _int_shown("update_retry_min", lo, raw)))
    a6, gw = v.get("ip6addr"), v.get("ip6gw")
    if a6 is not None and gw is not None:
        ab = addr.ip6_aton(a6[0])
        gb = addr.ip6_aton(gw)
        if ab == gb:
            ck.add("%s: option 'ip6gw' = '%s' is the same address as option 'ip6addr'" % (label, gw))
        elif not addr.in_prefix(gb, ab, a6[1]):
            ck.add("%s: option 'ip6gw' = '%s' is not inside option 'ip6addr' = '%s/%d'"
                   % (label, gw, a6[0], a6[1]))
    for p in v.get("ip6prefix") or []:
        if p[1] > 64:
            ck.add("%s: option 'ip6prefix' = '%s/%d': a routed prefix must be /64 or shorter to give "
                   "a LAN a /64" % (label, p[0], p[1]))
    for n in v.get("locked") or []:
        if n not in SECTIONS["tunnel"].by_name or n == "locked":
            ck.add("%s: option 'locked' = '%s': not an option of a tunnel section" % (label, _esc(n)))
    if mode == "tsp":
        for text in v.get("server") or []:
            try:
                _host, fam = check_server(text)
            except ValueError as exc:
                ck.add("%s: option 'server' = '%s': %s" % (label, _esc(text), exc.args[0] if exc.args else
                                                         "expected host[:port] or [IPv6]:port"))
                continue
            if fam == 4 and v.get("tunnel_mode") == "v4v6":
                ck.add("%s: option 'server' = '%s' is an IPv4 address, but tunnel_mode 'v4v6' talks TSP "
                       "over IPv6: give the broker's IPv6 address or name" % (label, _esc(text)))
            elif fam == 6 and v.get("tunnel_mode") != "v4v6":
                ck.add("%s: option 'server' = '%s' is an IPv6 address, but tunnel_mode '%s' talks TSP "
                       "over IPv4" % (label, _esc(text), v.get("tunnel_mode")))
        if v.get("tunnel_mode") == "v4v6":
            _v4v6_checks(ck, label, v, raw)
    if v.get("wan_device") is not None and v.get("wan_device") == v.get("ifname"):
        ck.add("%s: option 'ifname' = '%s' is the same as option 'wan_device'" % (label, v["ifname"]))


def check_server(text):
    """A TSP server entry: 'host[:port]', '[IPv6]:port', '[IPv6]' or a bare IPv6
    address. Returns (host, family 4/6/0 for a name) or raises ValueError(reason)."""
    host, port = text, None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError("the closing ] is missing")
        host, rest = text[1:end], text[end + 1:]
        if not addr.is_ip6(host):
            raise ValueError("'%s' in brackets is not an IPv6 address" % _esc(host, 45))
        if rest:
            if rest[0] != ":":
                raise ValueError("only :port may follow ]")
            port = rest[1:]
    elif ":" in text and text.count(":") > 1:
        if not addr.is_ip6(text):
            raise ValueError("not an IPv6 address; write [address]:port for a port")
    elif ":" in text:
        host, port = text.split(":")
    if port is not None and (not port or not _all_in(port, _DEC) or len(port) > 5
                             or not 0 < int(port) < 65536):
        raise ValueError("the port must be a number from 1 to 65535")
    if addr.is_ip6(host):
        return host, 6
    if addr.is_ip4(host):
        return host, 4
    _check_host(host)
    return host, 0


def _v4v6_checks(ck, label, v, raw):
    for name, why in (("ipaddr", "is an IPv4 endpoint address; a v4v6 tunnel runs over the WAN's IPv6 "
                                "address (set wan_device to choose the device)"),
                      ("tos", "sets the outer IPv4 header's TOS; a v4v6 tunnel's outer header is IPv6"),
                      ("private_range", "describes IPv4 NATs in front of an IPv4 endpoint; a v4v6 tunnel "
                                        "has an IPv6 endpoint")):
        if name in raw and not (name == "tos" and v.get("tos") == 0):
            ck.add("%s: option '%s' does not go with tunnel_mode 'v4v6': it %s" % (label, name, why))
    n = v.get("prefix_len")
    if isinstance(n, int) and n > 32:
        ck.add("%s: option 'prefix_len' = '%d': tunnel_mode 'v4v6' delegates an IPv4 prefix, so the "
               "length must be 32 or less (e.g. 28)" % (label, n))


def _int_shown(name, n, raw):
    if name in raw:
        return "option '%s' = '%d'" % (name, n)
    return "option '%s' (default %d)" % (name, n)


def _lan_checks(ck, label, v, raw):
    p, val = v.get("ra_preferred"), v.get("ra_valid")
    if isinstance(p, int) and isinstance(val, int) and p > val:
        ck.add("%s: %s must not be above %s" % (label, _int_shown("ra_preferred", p, raw),
                                               _int_shown("ra_valid", val, raw)))
    life, interval = v.get("ra_lifetime"), v.get("ra_interval")
    if isinstance(life, int) and isinstance(interval, int) and life != 0 and life < interval:
        ck.add("%s: %s must be 0 or at least %s (RFC 4861)" % (label, _int_shown("ra_lifetime", life, raw),
                                                             _int_shown("ra_interval", interval, raw)))


def _lans_vs_tunnel(ck, lans, tunnel):
    seen_if = {}
    seen_hint = {}
    for label, v, raw in lans:
        ifn = v.get("interface")
        if ifn is not None:
            if ifn in seen_if:
                ck.add("%s: option 'interface' = '%s' is already used by %s" % (label, ifn, seen_if[ifn]))
            else:
                seen_if[ifn] = label
        h = v.get("ip6hint")
        if h is not None:
            if h in seen_hint:
                ck.add("%s: option 'ip6hint' = '%x' is already used by %s" % (label, h, seen_hint[h]))
            else:
                seen_hint[h] = label
    if tunnel is None or not lans:
        return
    tlabel, tv = tunnel[1], tunnel[2]
    prefixes = [p for p in (tv.get("ip6prefix") or []) if p[1] <= 64]
    for label, v, raw in lans:
        if v.get("interface") is not None and v.get("interface") == tv.get("ifname"):
            ck.add("%s: option 'interface' = '%s' is the tunnel's own interface" % (label, v["interface"]))
    if tv.get("mode") == "tsp":
        return  # the broker delegates the prefix
    if "ip6prefix" not in tunnel[3]:
        ck.add("%s: a LAN needs a routed prefix: add list ip6prefix to %s"
               % (", ".join(x[0] for x in lans), tlabel))
        return
    if not prefixes:
        return  # the bad prefixes are reported already
    most = 0
    total = 0
    for p in prefixes:
        bits = 64 - p[1]
        if bits > most:
            most = bits
        total += 1 << (bits if bits < 20 else 20)
    for label, v, raw in lans:
        h = v.get("ip6hint")
        if h is not None and h >= (1 << most):
            ck.add("%s: option 'ip6hint' = '%x' does not fit in the routed prefixes of %s "
                   "(room for /64 numbers 0 to %x)" % (label, h, tlabel, (1 << most) - 1))
    if len(lans) > total:
        ck.add("%d enabled lan sections but the routed prefixes of %s hold only %d /64s"
               % (len(lans), tlabel, total))


# ---------------------------------------------------------------- rendering

def _wrap(text, width):
    words = text.split()
    lines = []
    cur = ""
    for w in words:
        if cur and len(cur) + 1 + len(w) > width:
            lines.append(cur)
            cur = w
        else:
            cur = w if not cur else cur + " " + w
    if cur:
        lines.append(cur)
    return lines


def _quote(v):
    return "'" + v.replace("'", "'\\''") + "'"


def _type_text(opt):
    k = opt.kind
    if k == "bool":
        t = "boolean (0/1)"
    elif k == "int":
        if opt.lo == opt.hi:
            t = "integer, %d" % opt.lo
        elif opt.zero_ok:
            t = "integer, 0 or %d-%d" % (opt.lo, opt.hi)
        else:
            t = "integer, %d-%d" % (opt.lo, opt.hi)
    elif k == "enum":
        t = " / ".join(opt.choices)
    elif k == "hex":
        t = "hex, %x-%x" % (opt.lo, opt.hi)
    else:
        t = {"ipv4": "IPv4 address", "ipv6": "IPv6 address", "ip6addr": "IPv6 address/length",
             "prefix6": "IPv6 prefix", "prefix4": "IPv4 prefix", "ifname": "interface name",
             "path": "absolute path", "url": "http(s) URL", "string": "text"}[k]
    if opt.is_list:
        t = "list of " + {"IPv6 address": "IPv6 addresses", "IPv6 prefix": "IPv6 prefixes",
                          "IPv4 prefix": "IPv4 prefixes"}.get(t, t)
    return t


def _notes(opt):
    notes = []
    same = isinstance(opt.required, tuple) and opt.required == opt.modes
    if opt.required is True:
        notes.append("Required.")
    elif same:
        notes.append("Required; mode %s only." % ", ".join(opt.modes))
    elif opt.required:
        notes.append("Required in mode %s." % ", ".join(opt.required))
    if opt.modes is not None and not same:
        notes.append("Mode %s only." % ", ".join(opt.modes))
    if opt.why:
        notes.append("(%s%s.)" % (opt.why[0].upper(), opt.why[1:]))
    return notes


HEADER = [
    "# cpe-tunnel configuration (UCI format, like every file in /etc/config).",
    "# Reference: docs/CONFIG.md. Check it with: cpe-tunnel --check",
    "#",
    "# A line '#option NAME VALUE' shows the default or an example: remove the '#' to use it.",
    "# The service stays off until you fill in the tunnel section (the required options",
    "# are marked) and set option enabled '1' in the globals section.",
    "# Generated from cpe_tunnel/core/schema.py (defaults_text()).",
]


def defaults_text():
    """The shipped /etc/config/cpe_tunnel: every option with its help, commented out
    with its default or an example, except the few values set on purpose."""
    out = []
    for line in HEADER:
        out.append(line + "\n")
    for st in SCHEMA:
        out.append("\n")
        for line in _wrap(st.help, 86):
            out.append("# " + line + "\n")
        head = "config " + st.type
        if st.example_name:
            head += " " + _quote(st.example_name)
        out.append(("#" if st.shipped_commented else "") + head + "\n")
        for opt in st.options:
            text = opt.help
            notes = _notes(opt)
            if notes:
                text += " " + " ".join(notes)
            if opt.default is None and opt.example is not None and not opt.required:
                text += " (Example value.)"
            for line in _wrap(text, 84):
                out.append("\t# " + line + "\n")
            shipped = st.shipped_values.get(opt.name)
            if shipped is not None:
                out.append("\t%soption %s %s\n" % ("#" if st.shipped_commented else "", opt.name,
                                                 _quote(shipped)))
                continue
            value = opt.default if opt.default is not None else opt.example
            if value is None:
                continue
            if opt.is_list:
                for item in value:
                    out.append("\t#list %s %s\n" % (opt.name, _quote(item)))
            else:
                out.append("\t#option %s %s\n" % (opt.name, _quote(value)))
    return "".join(out)


def uncomment_examples(text):
    """defaults_text() with every '#config', '#option' and '#list' line made live:
    the shipped file with all examples filled in (it must validate cleanly)."""
    out = []
    for line in text.split("\n"):
        if line.startswith("#config "):
            line = line[1:]
        elif line.startswith("\t#option ") or line.startswith("\t#list "):
            line = "\t" + line[2:]
        out.append(line)
    return "\n".join(out)


def _md(text):
    return text.replace("|", "\\|")


def markdown():
    """docs/CONFIG.md: the user reference, generated from SCHEMA."""
    o = []
    o.append("# cpe-tunnel configuration reference\n")
    o.append("\n<!-- Generated from cpe_tunnel/core/schema.py by markdown(); edit the schema, not this "
             "file. -->\n")
    o.append("\ncpe-tunnel reads `/etc/config/cpe_tunnel`, an ordinary UCI file: edit it with `uci`, "
             "LuCI or a text editor. `cpe-tunnel --check` lists every problem in it at once, each "
             "naming the section, the option, the value and what is expected (secret values are "
             "shown as `(hidden)`).\n")
    o.append("\n## The shipped file\n")
    o.append("\nThe package installs a commented file: every option appears with its help text, "
             "commented out (`#option ...`) with its default or an example value. Remove the `#` to "
             "use a line. The tunnel section `he` is enabled but its required options are still "
             "commented out, so `cpe-tunnel --check` on the shipped file lists exactly what to fill "
             "in. The service itself stays off (`option enabled '0'` in `globals`) until you set it "
             "to `1`; that switch is read by the init script and does not relax any check.\n")
    o.append("\nMinimal tunnelbroker.net setup:\n\n```\n"
             "uci set cpe_tunnel.he.peeraddr='203.0.113.1'      # Server IPv4 Address\n"
             "uci set cpe_tunnel.he.ip6addr='2001:db8:1::2/64'  # Client IPv6 Address\n"
             "uci set cpe_tunnel.he.username='example-user'\n"
             "uci set cpe_tunnel.he.updatekey='example-update-key'\n"
             "uci set cpe_tunnel.he.tunnelid='123456'\n"
             "uci add_list cpe_tunnel.he.ip6prefix='2001:db8:2::/64'  # Routed /64\n"
             "uci set cpe_tunnel.lan=lan\n"
             "uci set cpe_tunnel.lan.interface='br-lan'\n"
             "uci set cpe_tunnel.main.enabled='1'\n"
             "uci commit cpe_tunnel\n"
             "cpe-tunnel --check\n```\n")
    o.append("\n## Rules\n\n"
             "- Exactly one `tunnel` section must be enabled; `lan` sections are optional, "
             "`globals` is optional (at most one).\n"
             "- A value that is present must be valid in every section, enabled or not. Required "
             "options are required only in enabled sections, and options marked for one mode are "
             "required/checked only in that mode (in another mode they are ignored).\n"
             "- Booleans accept `0`/`1` and also `no`/`yes`, `off`/`on`, `false`/`true`, "
             "`disabled`/`enabled`.\n"
             "- List options are written as repeated `list` lines; a single `option` with values "
             "separated by spaces is accepted too.\n"
             "- An option with an empty value (`option x ''`) is ignored, as uci itself does.\n"
             "- Unknown options and section types are reported, with a suggestion for typos.\n"
             "- At most %d problems are listed, then a line saying how many more there are.\n"
             % MAX_PROBLEMS)
    for st in SCHEMA:
        o.append("\n## config %s\n\n%s\n\n" % (st.type, st.help))
        o.append("| Option | Type | Default | Description |\n|---|---|---|---|\n")
        for opt in st.options:
            if opt.default is None:
                d = "-"
            elif opt.is_list:
                d = ", ".join("`%s`" % x for x in opt.default)
            else:
                d = "`%s`" % opt.default
            desc = opt.help
            notes = _notes(opt)
            if notes:
                desc += " " + " ".join(notes)
            if opt.example is not None and opt.default is None:
                ex = opt.example if opt.is_list else [opt.example]
                desc += " Example: " + ", ".join("`%s`" % x for x in ex) + "."
            o.append("| `%s` | %s | %s | %s |\n" % (opt.name, _md(_type_text(opt)), _md(d), _md(desc)))
    o.append("\n## Checks across options\n\n"
             "- `tunnel`: in mode `http-update`, `updatekey` or `password` must be set; "
             "`update_retry_max` must not be below `update_retry_min`; `ip6gw` must lie inside "
             "`ip6addr`'s prefix and differ from it; each `ip6prefix` must be /64 or shorter; "
             "`ifname` must differ from `wan_device`.\n"
             "- `lan`: `ra_preferred` must not be above `ra_valid`; `ra_lifetime` must be 0 or at "
             "least `ra_interval` (RFC 4861); two enabled LANs may not share `interface` or "
             "`ip6hint`; a LAN may not use the tunnel's own interface.\n"
             "- Enabled LANs need a routed prefix (`list ip6prefix` in the enabled tunnel); "
             "`ip6hint` must fit in it and there must be a /64 for every LAN.\n")
    return "".join(o)


def describe():
    """SCHEMA as plain data (lists/dicts/str/int/bool) for generators such as the
    netifd handler, a LuCI form or --check output."""
    out = []
    for st in SCHEMA:
        opts = []
        for o in st.options:
            opts.append({
                "name": o.name, "kind": o.kind, "list": o.is_list, "default": o.default,
                "required": (o.required if isinstance(o.required, bool) else list(o.required)),
                "modes": None if o.modes is None else list(o.modes), "secret": o.secret,
                "min": o.lo, "max": o.hi, "zero_ok": o.zero_ok,
                "choices": None if o.choices is None else list(o.choices),
                "help": o.help, "example": o.example, "expected": expectation(o),
            })
        out.append({"type": st.type, "help": st.help, "count": st.count, "options": opts})
    return out
