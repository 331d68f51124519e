"""Reconvergence after a WAN address change (not a test; prints figures). Needs root.

One lab without NAT: broker, cpe-tunneld, LAN host with its SLAAC address. The LAN host
probes the IPv6 host with ICMPv6 echo requests every 10 ms for the whole run. Each round
renumbers the router's WAN the way DHCP does (lab.set_wan_address: old address deleted,
new one added in the same /24, default route replaced), alternating between 192.0.2.3
and 192.0.2.2. The round's figure is the time from just before that call to the first
echo reply to a request sent after the call returned; the broker's registered endpoint
is then checked to be the new address. The clock starts before the `ip` commands of
set_wan_address run (a few ms of process start-up), so the figures err on the high side.

Rounds are spaced by --gap seconds (default 1.5): the daemon spaces update requests by
at least update_retry_min (1 s in the lab's config; 5 s by default). The broker's abuse
limit (10 accepted updates per tunnel a minute) is switched off for this bench.

Target (issue 2, section 10): median under 1 s.

    .venv/bin/python bench/reconverge.py [--runs 10] [--gap 1.5] [--timeout 10]
"""

import argparse
import os
import shutil
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tests import harness  # noqa: E402
from tests.lab import Lab  # noqa: E402

TARGET = 1.0
ADDRS = ("192.0.2.3", "192.0.2.2")  # the lab's router starts on 192.0.2.2/24
GATEWAY = "192.0.2.1"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--gap", type=float, default=1.5, help="seconds between rounds")
    ap.add_argument("--timeout", type=float, default=10.0, help="give up on a round after this many s")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/reconverge.py: run as root (the lab builds network namespaces)")
        return 1
    lab = Lab(nat=False)
    daemon = None
    probe = None
    results = []
    try:
        lab.build()
        # 10 rounds in ~15 s would trip the broker's abuse limit (10 updates a minute).
        broker = lab.start_broker(harness.broker_config(abuse_limit_per_minute=0))
        daemon = harness.Daemon(lab)
        daemon.start()
        daemon.wait_status(lambda s: s.get("state") == "up", timeout=30, what="tunnel up")
        prefix = daemon.status()["lans"][0]["prefix"]
        if lab.wait_lan_address(prefix, timeout=30) is None:
            raise RuntimeError("the LAN host got no address in %s" % prefix)
        duration = args.runs * (args.timeout + args.gap) + 30
        probe = harness.EchoProbe(lab, "lan", harness.V6HOST, interval=0.01, duration=duration,
                                  max_count=int(duration / 0.01) + 1).start()
        if probe.wait_reply(timeout=20) is None:
            raise RuntimeError("the LAN host does not reach %s before the first round" % harness.V6HOST)
        print("reconverge: WAN address change -> LAN host's ping6 replies again (%d rounds)" % args.runs)
        for i in range(args.runs):
            new = ADDRS[i % 2]
            time.sleep(args.gap)
            t0 = time.monotonic()
            lab.set_wan_address(new + "/24", GATEWAY)
            t1 = time.monotonic()
            got = probe.wait_reply(after=t1, timeout=args.timeout)
            if got is None:
                raise RuntimeError("round %d: no echo reply within %.0f s after moving to %s;\n%s" % (
                    i + 1, args.timeout, new, daemon.log()[-2000:]))
            took = got[1] - t0
            endpoint = broker.tunnel(harness.TUNNEL_ID)["endpoint"]
            lost = probe.unanswered_between(t0, got[0])
            results.append(took)
            print("round %2d: -> %s  replies again after %4.0f ms  (set_wan_address took %.0f ms; "
                  "probes lost %d; broker endpoint %s)" % (
                      i + 1, new, took * 1000, (t1 - t0) * 1000, lost, endpoint), flush=True)
            if endpoint != new:
                raise RuntimeError("round %d: the broker's endpoint is %s, not %s" % (i + 1, endpoint, new))
    finally:
        if probe is not None:
            try:
                probe.stop()
            except Exception:
                pass
        if daemon is not None:
            daemon.stop()
            shutil.rmtree(daemon.dir, ignore_errors=True)
        lab.teardown()
    med = statistics.median(results)
    print("median: %.0f ms (min %.0f, max %.0f); target < %.0f ms: %s" % (
        med * 1000, min(results) * 1000, max(results) * 1000, TARGET * 1000,
        "MET" if med < TARGET else "MISSED"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
