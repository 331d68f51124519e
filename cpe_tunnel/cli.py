"""cpe-tunnel: the command line for a running cpe-tunneld.

  cpe-tunnel status [--json]     one screen for a person, or the JSON the ubus object gives
  cpe-tunnel reconnect           new broker update / session now
  cpe-tunnel reload              re-read the configuration (same as SIGHUP)
  cpe-tunnel clock-set           the system clock was just set (NTP): retry what waited for it

Exit status of `status`: 0 tunnel up, 1 down, 2 the daemon cannot be reached.
"""

import argparse
import json
import sys
import time

from . import control

DEFAULT_CONFIG = "/etc/config/cpe_tunnel"
DEFAULT_SOCKET = "/var/run/cpe_tunnel.sock"


def socket_path(args):
    if args.socket:
        return args.socket
    try:
        from .core import uci, schema
        with open(args.config) as f:
            pkg = uci.parse(f.read(), "cpe_tunnel")
        cfg, _ = schema.validate(pkg)
        p = (cfg or {}).get("globals", {}).get("control_socket")
        if p:
            return p
    except Exception:
        pass
    return DEFAULT_SOCKET


def _age(seconds):
    if seconds is None:
        return "never"
    seconds = int(seconds)
    if seconds < 120:
        return "%d s" % seconds
    if seconds < 7200:
        return "%d min" % (seconds // 60)
    if seconds < 172800:
        return "%d h %d min" % (seconds // 3600, seconds % 3600 // 60)
    return "%d days" % (seconds // 86400)


def _bytes(n):
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return ("%d %s" % (n, unit)) if unit == "B" else ("%.1f %s" % (n, unit))
        n /= 1024.0


def format_status(st, now=None):
    now = time.time() if now is None else now
    out = []

    def row(label, value):
        if value is None or value == "" or value == []:
            return
        out.append("%-18s %s" % (label + ":", value))

    state = st.get("state", "?").upper()
    out.append("cpe-tunnel %s — %s" % (state, st.get("reason") or ""))
    row("Tunnel", "%s (mode %s, %s data plane, device %s)" % (
        st.get("tunnel"), st.get("mode"), st.get("dataplane") or "no", st.get("ifname")))
    if st.get("since") is not None:
        row("Since", "%s (%s)" % (time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(st["since"])),
                                  _age(now - st["since"])))
    wan = st.get("wan") or {}
    v4v6 = st.get("tunnel_family") == "ipv4"  # IPv4 in IPv6: the WAN is IPv6
    if v4v6:
        row("WAN", "%s on %s" % (wan.get("local_ipv6") or "no IPv6 address", wan.get("device") or "?"))
    else:
        row("WAN", "%s on %s" % (wan.get("local_ipv4") or "no IPv4 address", wan.get("device") or "?"))
    pub = wan.get("public_ipv4")
    if pub:
        row("Public IPv4", "%s%s" % (pub, " (behind NAT)" if wan.get("nat_detected") else ""))
    b = st.get("broker") or {}
    row("Broker", b.get("ipv6") if v4v6 else b.get("ipv4"))
    row("Update URL", b.get("update_url"))
    t = st.get("tunnel_addresses") or {}
    row("Tunnel IPv4" if v4v6 else "Tunnel IPv6",
        "%s, broker side %s" % (t.get("local"), t.get("remote")) if t else None)
    row("Delegated", ", ".join((st.get("delegated_prefixes") or []) + (st.get("delegated_prefixes4") or []))
        or None)
    lan4 = st.get("lan4") or {}
    if lan4:
        row("LAN IPv4", "%s on %s" % (lan4.get("address"), lan4.get("interface")))
    for lan in st.get("lans") or []:
        desc = "%s on %s" % (lan.get("prefix") or "no prefix", lan.get("interface"))
        if lan.get("ra"):
            desc += ", RA every ~%d s" % lan.get("ra_interval", 0)
        dep = lan.get("deprecated") or []
        if dep:
            desc += "; deprecating %s" % ", ".join(d.get("prefix", "?") for d in dep)
        row("LAN", desc)
    c = st.get("counters") or {}
    if c:
        row("Traffic", "sent %d packets (%s), received %d packets (%s)" % (
            c.get("tx_packets", 0), _bytes(c.get("tx_bytes", 0)),
            c.get("rx_packets", 0), _bytes(c.get("rx_bytes", 0))))
        drops = c.get("drops") or {}
        if drops:
            row("Dropped", ", ".join("%s %d" % (k, v) for k, v in sorted(drops.items())))
    k = st.get("keepalive") or {}
    if k.get("enabled"):
        alive = k.get("alive")
        word = {True: "answering", False: "NOT answering", None: "not probed yet"}[alive]
        extra = ""
        if k.get("rtt_ms") is not None:
            extra = ", rtt %.1f ms" % k["rtt_ms"]
        row("Keepalive", "broker %s every %d s when idle%s" % (word, k.get("interval", 0), extra))
    u = st.get("last_update") or {}
    if u:
        when = _age(now - u["time"]) + " ago" if u.get("time") else "not yet"
        row("Last update", "%s: %s (%s)" % (u.get("result"), u.get("message"), when))
        if u.get("next_retry_in") is not None:
            row("Next retry", "in %s" % _age(u["next_retry_in"]))
    ts = st.get("tsp") or {}
    if ts:
        row("TSP", "%s tunnel (asked for %s), session %s over %s" % (
            ts.get("tunnel_type") or "no", ts.get("requested"), ts.get("sessions"), ts.get("transport") or "-"))
        row("Fallback", ts.get("fallback"))
    sx = st.get("sixxs") or {}
    if sx:
        row("SixXS", "tunnel %s (%s), PoP %s, config from %s" % (
            sx.get("tunnel_id") or "?", sx.get("type") or "?", sx.get("pop") or "?", sx.get("config_from") or "-"))
        if sx.get("waiting_for_clock"):
            nxt = sx.get("next_tic_in")
            row("Clock", "waiting for the clock to be set%s, then TIC again%s" % (
                " (watching for it)" if sx.get("clock_watch") else "",
                "" if nxt is None else " (at the latest in %s)" % _age(nxt)))
        motd = sx.get("motd") or {}
        if motd.get("text"):
            row("PoP message", "%s (%s)" % (motd["text"], _age(now - motd["time"]) + " ago" if motd.get("time")
                                            else "just now"))
    row("Last error", st.get("last_error"))
    row("Config error", st.get("config_error"))
    return "\n".join(out)


def main(argv=None):
    p = argparse.ArgumentParser(prog="cpe-tunnel", description="Control a running cpe-tunneld.")
    p.add_argument("-c", "--config", default=DEFAULT_CONFIG, help="UCI config file (to find the socket)")
    p.add_argument("-s", "--socket", help="control socket path")
    sub = p.add_subparsers(dest="cmd")
    sp = sub.add_parser("status", help="show the tunnel's state")
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    sub.add_parser("reconnect", help="update the broker / restart the session now")
    sub.add_parser("reload", help="re-read the configuration")
    sub.add_parser("clock-set", help="tell the daemon the system clock was set (retries TIC at once)")
    args = p.parse_args(argv)
    if not args.cmd:
        p.print_help()
        return 2
    path = socket_path(args)
    try:
        result = control.call(path, args.cmd.replace("-", "_"))
    except control.ControlError as exc:
        print("cpe-tunnel: %s" % exc, file=sys.stderr)
        return 2
    if args.cmd == "status":
        if args.json:
            print(json.dumps(result, indent=2, sort_keys=True))
        else:
            print(format_status(result))
        return 0 if result.get("state") == "up" else 1
    print(result.get("message", "done") if isinstance(result, dict) else result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
