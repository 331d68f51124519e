"""Reporting to netifd when the daemon runs under the netifd protocol handler
(files/lib/netifd/proto/cpetunnel.sh starts `cpe-tunneld -c FILE --netifd IFACE`).

The daemon tells netifd what its shell helpers (netifd-proto.sh) would tell it: one
`notify_proto` call on ubus object `network.interface` with a JSON message whose
last key is "interface". Actions (netifd proto-shell.c):
  0 update   proto_init_update IFNAME 1 ... proto_send_update: {"action": 0,
             "ifname", "link-up": true, "keep": false, "ip6addr": [{"ipaddr",
             "mask": "64"}], "routes6": [{"target": "::", "netmask": "0",
             "source": "2001:db8:1::2/64"}, ...], "ip6prefix": ["2001:db8:2::/48"]}
             When the tunnel goes down after having been up, the same update
             without routes6 and ip6prefix: netifd withdraws the default route
             and the prefix (odhcpd deprecates it on the LAN) but keeps the
             tunnel address, which the keepalive needs to see the broker come
             back. ("link-up": false would make netifd flush the address too.)
             A v4v6 tunnel (TSP, IPv4 in IPv6; status tunnel_family "ipv4") is
             reported as proto_add_ipv4_address ADDR 32 "" PEER and
             proto_add_ipv4_route 0.0.0.0 0 "" SOURCE would: "ipaddr":
             [{"ipaddr", "mask": "32", "ptp": broker's tunnel IPv4}], "routes":
             [{"target": "0.0.0.0", "netmask": "0", "source": "203.0.113.66/32"},
             one more per delegated IPv4 prefix]; netifd has no IPv4 prefix
             delegation, so the LAN's IPv4 address is the daemon's own business.
  3 error    proto_notify_error IFACE CODE [DATA...]: {"action": 3, "error": [...]}
  4 block    proto_block_restart IFACE: {"action": 4}
As 6in4 does, the default route is source-restricted to our tunnel address and to
each delegated prefix, so other IPv6 uplinks keep their own traffic.

Transport: the `ubus` Python binding's connection when the daemon has one (a
UbusService that is connected), else the `ubus` command line
(`ubus -t 5 call network.interface notify_proto JSON`). A failed call is logged and
retried with the next state change; nothing here raises into the loop.
"""

import collections
import json
import subprocess

from .log import log


def _plen_text(text):
    """'2001:db8:1::2/64' -> ('2001:db8:1::2', '64'); None when malformed."""
    if not isinstance(text, str) or "/" not in text:
        return None
    a, _, n = text.partition("/")
    if not a or not n.isdigit():
        return None
    return a, n


def _addr_entry(local):
    """netifd's address object for (address text, prefix length text)."""
    a = collections.OrderedDict()
    a["ipaddr"] = local[0]
    a["mask"] = local[1]
    return a


def _add_default_routes(msg, key, target, local, up, prefixes):
    """msg[key]: a source-specific default route (target/0) from the tunnel's own address
    (when up) and from each prefix; nothing when there are none."""
    routes = []
    for src in ([local[0] + "/" + local[1]] if local and up else []) + prefixes:
        r = collections.OrderedDict()
        r["target"] = target
        r["netmask"] = "0"
        r["source"] = src
        routes.append(r)
    if routes:
        msg[key] = routes


class NetifdReporter:
    def __init__(self, interface, bus=None, run=None, ubus_cmd="ubus", timeout=5):
        """interface: the netifd interface name (--netifd). bus: an object with
        .connected and .call(path, method, data) (UbusService), or None. run:
        callable(argv, timeout) -> exit status, for the command line (tests)."""
        self.interface = interface
        self.bus = bus
        self.ubus_cmd = ubus_cmd
        self.timeout = timeout
        self._run = run or self._subprocess
        self.last = None  # the last update message sent successfully
        self.was_up = False

    # -- messages (what netifd-proto.sh's helpers build) ------------------------
    def build_update(self, status):
        """The action-0 message for a status dict (Supervisor.status()), or None
        when there is nothing to tell netifd yet (never up, not up now)."""
        state = status.get("state")
        up = state == "up"
        if not up and (not self.was_up or state == "starting"):
            return None
        msg = collections.OrderedDict()
        msg["action"] = 0
        ifname = status.get("ifname")
        if ifname and ifname != "*":
            msg["ifname"] = ifname
        msg["link-up"] = True
        msg["keep"] = False
        if status.get("tunnel_family") == "ipv4":
            return self._update_ipv4(msg, status, up)
        local = _plen_text((status.get("tunnel_addresses") or {}).get("local"))
        prefixes = [p for p in (status.get("delegated_prefixes") or []) if _plen_text(p)]
        if local:
            msg["ip6addr"] = [_addr_entry(local)]
        if not up:
            prefixes = []
        _add_default_routes(msg, "routes6", "::", local, up, prefixes)
        if prefixes:
            msg["ip6prefix"] = list(prefixes)
        msg["interface"] = self.interface
        return msg

    def _update_ipv4(self, msg, status, up):
        ta = status.get("tunnel_addresses") or {}
        local = _plen_text(ta.get("local"))
        if local:
            a = _addr_entry(local)
            if ta.get("remote"):
                a["ptp"] = ta["remote"]
            msg["ipaddr"] = [a]
        prefixes = [p for p in (status.get("delegated_prefixes4") or []) if _plen_text(p)] if up else []
        _add_default_routes(msg, "routes", "0.0.0.0", local, up, prefixes)
        msg["interface"] = self.interface
        return msg

    def build_error(self, code, *data):
        msg = collections.OrderedDict()
        msg["action"] = 3
        msg["error"] = [str(code)] + [str(d) for d in data][:14]
        msg["interface"] = self.interface
        return msg

    def build_block_restart(self):
        msg = collections.OrderedDict()
        msg["action"] = 4
        msg["interface"] = self.interface
        return msg

    # -- sending -------------------------------------------------------------------
    def update(self, status):
        """Report status to netifd when it changes what netifd should know. True
        when a message went out."""
        msg = self.build_update(status)
        if msg is None or msg == self.last:
            return False
        if not self.send(msg):
            return False
        self.last = msg
        if status.get("state") == "up":
            self.was_up = True
        return True

    def error(self, code, *data):
        """proto_notify_error: an error code (e.g. INVALID_CONFIG) shown in the
        interface's status and in LuCI."""
        return self.send(self.build_error(code, *data))

    def block_restart(self):
        """proto_block_restart: netifd does not set the interface up again by itself
        (for configuration errors, which a retry would not fix)."""
        return self.send(self.build_block_restart())

    def send(self, msg):
        bus = self.bus
        if bus is not None and getattr(bus, "connected", False):
            try:
                bus.call("network.interface", "notify_proto", msg)
                return True
            except Exception as exc:  # fall back to the command line
                log.debug("netifd: ubus binding call failed (%s); trying the ubus command", exc)
        argv = [self.ubus_cmd, "-t", str(self.timeout), "call", "network.interface", "notify_proto",
                json.dumps(msg, separators=(",", ":"))]
        try:
            rc = self._run(argv, self.timeout + 5)
        except (OSError, subprocess.SubprocessError) as exc:
            log.warning("netifd: cannot run %s: %s", self.ubus_cmd, exc)
            return False
        if rc != 0:
            log.warning("netifd: notify_proto action %s for %s failed (ubus exit %s)",
                        msg.get("action"), self.interface, rc)
            return False
        return True

    @staticmethod
    def _subprocess(argv, timeout):
        return subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, timeout=timeout).returncode
