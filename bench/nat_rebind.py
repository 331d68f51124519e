"""NAT rebinding: the NAT's public address changes under a running tunnel (not a test;
prints figures). Needs root.

One lab behind one NAT (tests.lab.Lab(nat=True)): the router's WAN is 198.51.100.2, the
NAT masquerades to 203.0.113.2, the broker is 203.0.113.18.

  --proto tsp    the reference TSP broker (tests.tsp_broker); cpe-tunneld in mode 'tsp',
                 tunnel_mode v6anyv4, so behind the NAT it ends in v6udpv4 (IPv6 in UDP).
                 The broker accepts data only from the endpoint its session saw, so after
                 the change the client has to notice (keepalive loss) and open a new
                 session from the new address.
  --proto ayiya  the reference SixXS PoP (tests.sixxs_pop); cpe-tunneld in mode 'tic',
                 tunnel T5072 of type ayiya. The PoP moves the endpoint to the source of
                 the next authentic (signed) packet, so no new session is needed.

In both the daemon's keepalive_interval is --keepalive (default 5 s; the interval the
daemon really uses, from its status, is printed).

A prober (tests.harness.EchoProbe) sends ICMPv6 echo requests every --interval s
(default 10 ms): from the LAN host to the IPv6 host 2001:db8:ffff::2 (default), or with
--probe-from v6host from the IPv6 host to the LAN host's SLAAC address (traffic only
inbound: the client's own keepalives are then its only packets). Each round:

 1. settle: the tunnel is up, the daemon's keepalive has an answer, a fresh prober is
    getting replies; then --gap s of steady traffic;
 2. t0; lab.set_nat_public(addr) (addr alternates 203.0.113.3 / 203.0.113.2: the address
    is put on the NAT's outside link, masquerade becomes SNAT to it, the NAT's conntrack
    table is flushed); t1 when that returned;
 3. the round's figure: the first echo reply to a request sent at or after t1, counted
    from t0 (so it errs high by set_nat_public's own ~30 ms, printed as 'set').

Also noted per round (from a thread polling the daemon's status and the broker's or
PoP's state every --poll s): when the daemon declared the tunnel down and when it was up
again (the status field 'since': exact to the daemon's clock), the TSP session count,
when the broker/PoP first showed the new public address as the endpoint (to the poll
interval), and, probing from the LAN, when the first Router Advertisement offering the
default route again reached the LAN host (the router withdraws itself as default router
while the tunnel is down; RFC 4861 lets the next RA follow no sooner than 3 s).

With --probe-from v6host the RAs are not seen (the prober runs on the other side), and
a round can end early when the AYIYA beat (TIC's heartbeat_interval, 60 s in the lab)
happens to go out just after the change.

Target (issue 3): traffic flows again within one keepalive interval plus a few seconds.

    .venv/bin/python bench/nat_rebind.py [--proto tsp|ayiya] [--runs 10] [--keepalive 5]
        [--probe-from lan|v6host] [--interval 0.01] [--gap 2] [--timeout S] [--poll 0.05]

Exit status: 0 when the rounds ran (slow figures included); 1 when the lab, broker or
tunnel could not be set up; 2 when the tunnel did not come back after a round so the
remaining rounds were abandoned. The lab's namespaces are removed in every case.
"""

import argparse
import fcntl
import os
import statistics
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tests import harness  # noqa: E402
from tests.lab import Lab  # noqa: E402

ADDRS = ("203.0.113.3", "203.0.113.2")  # the NAT starts on 203.0.113.2 (masquerade)
AYIYA_TUNNEL = "T5072"
AYIYA_PREFIX = "2001:db8:2f01::/48"
FEW_SECONDS = 5.0  # our reading of issue 3's "a few seconds", for the MET / MISSED line
LOCK = "/tmp/cpe-tunnel-bench.lock"  # shared with bench/ayiya.py: one benchmark at a time


class SetupError(RuntimeError):
    pass


# ---- the daemon's configuration for each variant ---------------------------------------

def tsp_daemon(lab, keepalive):
    t = {"mode": "tsp", "server": ["203.0.113.18"], "username": "alice", "password": "wonderland",
         "tunnel_mode": "v6anyv4", "host_type": "router", "prefix_len": 48,
         "keepalive_interval": keepalive, "ip6prefix": None}
    return harness.Daemon(lab, mode="tsp", prefix=None, tunnel_extra=t)


def tic_daemon(lab, keepalive, ca_file):
    t = {"mode": "tic", "server": ["203.0.113.18"], "username": "CPE1-SIXXS", "password": "tic-secret-1",
         "tunnelid": AYIYA_TUNNEL, "ip6prefix": [AYIYA_PREFIX], "keepalive_interval": keepalive,
         "tic_tls": "try", "ca_file": ca_file}
    d = harness.Daemon(lab, mode="tic", prefix=AYIYA_PREFIX, tunnel_extra=t)
    # the TIC cache goes to the run directory, not the system's state directory
    with open(d.path) as f:
        text = f.read()
    d.write_config(text.replace("config globals 'main'",
                                "config globals 'main'\n\toption state_dir '%s'" % d.dir))
    return d


# ---- watching the daemon and the broker ------------------------------------------------

class Watcher:
    """Polls the daemon's status and the peer's idea of our endpoint every `interval` s in
    a thread; keeps every sample as a dict: t (monotonic), state, since (monotonic), sessions,
    endpoint, alive."""

    def __init__(self, daemon, endpoint_fn, interval):
        self.daemon = daemon
        self.endpoint_fn = endpoint_fn
        self.interval = interval
        self.samples = []
        self.errors = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="watcher", daemon=True)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join(10)

    def _run(self):
        while not self._stop.is_set():
            t = time.monotonic()
            s = {"t": t, "state": None, "since": None, "sessions": None, "endpoint": None, "alive": None}
            st = self.daemon.try_status()
            if st is not None:
                s["state"] = st.get("state")
                if st.get("since") is not None:
                    # the daemon reports wall-clock time; both processes share the clocks
                    s["since"] = st["since"] - (time.time() - time.monotonic())
                s["sessions"] = (st.get("tsp") or {}).get("sessions")
                s["alive"] = (st.get("keepalive") or {}).get("alive")
            try:
                s["endpoint"] = self.endpoint_fn()
            except (RuntimeError, OSError, KeyError, ValueError):  # the peer's control socket
                self.errors += 1
            with self._lock:
                self.samples.append(s)
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - t)))

    def since(self, t0):
        with self._lock:
            return [s for s in self.samples if s["t"] >= t0]


def round_events(samples, t0, new):
    """From the watcher's samples after t0: (down_at, up_at, sessions_at_up, endpoint_at)."""
    down = up = endpoint_at = None
    for s in samples:
        if endpoint_at is None and s["endpoint"] == new:
            endpoint_at = s["t"]
        if down is None:
            if s["state"] is not None and s["state"] != "up":
                down = s
        elif up is None and s["state"] == "up":
            up = s
    down_at = None
    if down is not None:
        down_at = down["since"] if down["since"] is not None and down["since"] >= t0 - 0.5 else down["t"]
    up_at = None
    if up is not None:
        up_at = up["since"] if up["since"] is not None and up["since"] >= (down_at or t0) - 0.5 else up["t"]
    return down_at, up_at, (up or {}).get("sessions"), endpoint_at


# ---- the bench -------------------------------------------------------------------------

def take_lock(max_wait):
    """Wait (bounded) for other benchmark scripts holding the shared lock."""
    f = open(LOCK, "a")
    deadline = time.monotonic() + max_wait
    waited = False
    while True:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return f, waited
        except OSError:
            if time.monotonic() >= deadline:
                f.close()
                return None, waited
            if not waited:
                print("waiting for another benchmark (%s) ..." % LOCK, flush=True)
            waited = True
            time.sleep(1)


def fmt_ms(x):
    return "%.0f ms" % (x * 1000) if x < 1 else "%.2f s" % x


def fmt_rel(t, t0):
    return "-" if t is None else "+%s" % fmt_ms(t - t0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--proto", choices=("tsp", "ayiya"), default="tsp")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--keepalive", type=int, default=5, help="the daemon's keepalive_interval (s)")
    ap.add_argument("--probe-from", choices=("lan", "v6host"), default="lan",
                    help="lan: LAN host -> IPv6 host (default); v6host: IPv6 host -> LAN host (inbound only)")
    ap.add_argument("--interval", type=float, default=0.01, help="seconds between echo requests")
    ap.add_argument("--gap", type=float, default=2.0, help="seconds of steady traffic before each change")
    ap.add_argument("--timeout", type=float, default=None,
                    help="give up on a round after this many s (default: max(30, 6 x keepalive + 15))")
    ap.add_argument("--poll", type=float, default=0.05, help="status poll interval (s)")
    ap.add_argument("--max-wait", type=float, default=600.0, help="seconds to wait for other benchmarks")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/nat_rebind.py: run as root (the lab builds network namespaces)")
        return 1
    if args.runs < 1 or args.keepalive < 1 or args.interval <= 0 or args.poll <= 0:
        ap.error("--runs, --keepalive must be >= 1; --interval, --poll > 0")
    timeout = args.timeout if args.timeout else max(30.0, 6.0 * args.keepalive + 15.0)
    settle_timeout = max(30.0, 4.0 * args.keepalive + 20.0)
    if (settle_timeout + args.gap + timeout + 10) / args.interval > 60000:
        ap.error("--interval too small for the round's length (echo sequence numbers would wrap)")

    lock, waited = take_lock(args.max_wait)
    if lock is None:
        print("note: another benchmark still holds %s after %.0f s; running anyway" % (LOCK, args.max_wait))
    lab = Lab(nat=True)
    daemon = watcher = probe = None
    results = []  # (took, took_after_set, down_rel, up_rel, endpoint_rel)
    status = 0
    ka_used = None
    started = time.strftime("%a %b %d %H:%M:%S UTC %Y", time.gmtime())
    load = " ".join("%.2f" % x for x in os.getloadavg())
    try:
        # ---- setup: any failure here is exit status 1 ----
        try:
            lab.build()
            if args.proto == "tsp":
                from tests.tsp_broker import example_config, start_tsp_broker

                broker = start_tsp_broker(lab, example_config())

                def endpoint_fn():
                    # the newest active tunnel's endpoint address ("ip:port" for v6udpv4)
                    active = [tun for tun in broker.state()["tunnels"].values()
                              if tun.get("active") and isinstance(tun.get("endpoint"), str)]
                    if not active:
                        return None
                    newest = max(active, key=lambda tun: tun.get("accepted") or 0)
                    return newest["endpoint"].rsplit(":", 1)[0]

                daemon = tsp_daemon(lab, args.keepalive)
            else:
                from tests.sixxs_pop import example_config, start_pop

                pop = start_pop(lab, example_config())

                def endpoint_fn():
                    return pop.tunnel(AYIYA_TUNNEL)["endpoint"]

                daemon = tic_daemon(lab, args.keepalive, pop.ca_file)
            daemon.start()
            st = daemon.wait_status(lambda s: s.get("state") == "up" and s["lans"] and s["lans"][0]["prefix"],
                                    timeout=40, what="tunnel up with a LAN prefix")
            if args.proto == "tsp" and (st.get("tsp") or {}).get("tunnel_type") != "v6udpv4":
                raise SetupError("the TSP tunnel is %s, not v6udpv4" % (st.get("tsp") or {}).get("tunnel_type"))
            if args.proto == "ayiya" and (st.get("sixxs") or {}).get("type") != "ayiya":
                raise SetupError("the SixXS tunnel is %s, not ayiya" % (st.get("sixxs") or {}).get("type"))
            ka_used = (st.get("keepalive") or {}).get("interval")
            lan_addr = lab.wait_lan_address(st["lans"][0]["prefix"], timeout=30)
            if lan_addr is None:
                raise SetupError("the LAN host got no address in %s" % st["lans"][0]["prefix"])
            if args.probe_from == "lan":
                src_ns, dst = "lan", harness.V6HOST
            else:
                src_ns, dst = "v6host", lan_addr.address
            watcher = Watcher(daemon, endpoint_fn, args.poll).start()
        except (SetupError, AssertionError, RuntimeError, OSError) as exc:
            print("SETUP FAILED: %s" % exc, file=sys.stderr)
            if daemon is not None:
                print(daemon.log()[-3000:], file=sys.stderr)
            return 1

        tunnel_desc = ("TSP v6anyv4 -> v6udpv4 (reference TSP broker)" if args.proto == "tsp"
                       else "SixXS AYIYA (reference PoP, tunnel %s)" % AYIYA_TUNNEL)
        print("nat_rebind: %s behind one NAT; the NAT's public address changes -> %s's ping6 to %s "
              "replies again" % (tunnel_desc, src_ns, dst))
        print("keepalive interval: %s s (configured %d s); echo every %.0f ms from %s; %d rounds; "
              "round timeout %.0f s; status polled every %.0f ms; %s; load average %s%s" % (
                  ka_used, args.keepalive, args.interval * 1000, src_ns, args.runs, timeout,
                  args.poll * 1000, started, load, " (waited for another benchmark)" if waited else ""),
              flush=True)

        for i in range(args.runs):
            new = ADDRS[i % 2]
            # ---- settle: up, keepalive answered, replies flowing ----
            try:
                daemon.wait_status(lambda s: s.get("state") == "up" and (s.get("keepalive") or {}).get("alive"),
                                   timeout=settle_timeout, what="tunnel up with keepalive answers")
            except AssertionError as exc:
                print("round %2d: the tunnel did not come back (up with keepalive answers) within %.0f s; "
                      "abandoning the remaining rounds\n%s" % (i + 1, settle_timeout, str(exc)[-1500:]))
                status = 2
                break
            duration = settle_timeout + args.gap + timeout + 10
            probe = harness.EchoProbe(lab, src_ns, dst, interval=args.interval, duration=duration,
                                      max_count=int(duration / args.interval) + 1).start()
            ts = time.monotonic()
            if probe.wait_reply(after=ts, timeout=settle_timeout) is None:
                print("round %2d: no echo replies before the change (within %.0f s); abandoning the "
                      "remaining rounds" % (i + 1, settle_timeout))
                status = 2
                break
            time.sleep(args.gap)
            # ---- the change ----
            t0 = time.monotonic()
            lab.set_nat_public(new)
            t1 = time.monotonic()
            got = probe.wait_reply(after=t1, timeout=timeout)
            t_end = time.monotonic()
            probe.stop()
            lost = probe.unanswered_between(t0, got[0] if got else t_end)
            time.sleep(args.poll * 2)  # let the watcher see the last state
            down_at, up_at, sessions, endpoint_at = round_events(watcher.since(t0 - 0.5), t0, new)
            ra_text = ""
            if src_ns == "lan" and down_at is not None:
                # did the LAN host lose its default route (RA lifetime 0), and when did an RA
                # offering it again arrive?
                ra0 = [t for t, lifetime in probe.router_ads if t >= t0 and lifetime == 0]
                ra1 = [t for t, lifetime in probe.router_ads if ra0 and t > ra0[0] and lifetime > 0]
                ra_text = ("RA lifetime 0 %s, RA default route again %s; " % (
                    fmt_rel(ra0[0], t0), fmt_rel(ra1[0] if ra1 else None, t0)) if ra0
                    else "no RA withdrew the default route; ")
            detail = "set %.0f ms; down %s, up %s%s; %s endpoint %s (poll); %s%d probes lost" % (
                (t1 - t0) * 1000, fmt_rel(down_at, t0), fmt_rel(up_at, t0),
                (" (session %s)" % sessions) if sessions is not None and up_at is not None else "",
                "broker" if args.proto == "tsp" else "PoP", fmt_rel(endpoint_at, t0), ra_text, lost)
            if got is None:
                print("round %2d: -> %s  NO REPLY within %.0f s  (%s)" % (i + 1, new, timeout, detail), flush=True)
                results.append((None, None, down_at and down_at - t0, up_at and up_at - t0,
                                endpoint_at and endpoint_at - t0))
                continue
            took = got[1] - t0
            results.append((took, got[1] - t1, down_at and down_at - t0, up_at and up_at - t0,
                            endpoint_at and endpoint_at - t0))
            print("round %2d: -> %s  replies again after %s  (%s)" % (i + 1, new, fmt_ms(took), detail),
                  flush=True)
    finally:
        if probe is not None:
            try:
                probe.stop()
            except Exception:
                pass
        if watcher is not None:
            watcher.stop()
        if daemon is not None:
            daemon.stop()
            daemon.cleanup()
        lab.teardown()
        if lock is not None:
            lock.close()

    ok = [r[0] for r in results if r[0] is not None]
    failed = len(results) - len(ok)
    if not ok:
        print("no round recovered within its timeout (%d rounds)" % len(results))
        return status
    med = statistics.median(ok)
    print("samples (s): %s%s" % (" ".join("%.3f" % x for x in ok),
                                 ("; %d round(s) without a reply within %.0f s" % (failed, timeout)) if failed else ""))
    print("recovery: median %s (min %s, max %s) over %d rounds; keepalive interval %s s" % (
        fmt_ms(med), fmt_ms(min(ok)), fmt_ms(max(ok)), len(ok), ka_used))
    for idx, name in ((2, "down declared"), (3, "up again"), (4, "endpoint moved (poll)")):
        xs = [r[idx] for r in results if r[idx] is not None]
        if xs:
            print("  %s: median %s after the change (%d of %d rounds)" % (
                name, fmt_ms(statistics.median(xs)), len(xs), len(results)))
        else:
            print("  %s: in no round" % name)
    if args.proto == "ayiya":
        print("issue 4: the PoP follows the NAT's new address on the next signed packet; the next packet "
              "after the change is %s" % (
                  "the LAN host's next echo (every %.0f ms)" % (args.interval * 1000) if src_ns == "lan"
                  else "the daemon's keepalive echo (due %s s after the last packet received) or AYIYA beat"
                  % ka_used))
    elif ka_used:
        bound = float(ka_used) + FEW_SECONDS
        print("issue 3 target: one keepalive interval plus a few seconds (%s s + %.0f s = %.0f s): median "
              "= interval %+.1f s -> %s" % (ka_used, FEW_SECONDS, bound, med - float(ka_used),
                                            "MET" if med <= bound else "MISSED"))
    return status


if __name__ == "__main__":
    sys.exit(main())
