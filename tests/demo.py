"""make demo: the whole lab in one run.

Builds the network (LAN host, router, ISP with NAT, Internet, broker, IPv6 host) in
namespaces, starts the reference broker, runs cpe-tunneld on the router from a UCI
file, waits until the LAN host has a SLAAC address from the delegated prefix and its
ping reaches the IPv6 host through the tunnel, prints `cpe-tunnel status`, and ends
with DEMO OK / DEMO FAILED. The lab is removed in every case.
"""

import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tests import harness  # noqa: E402
from tests.lab import Lab  # noqa: E402


def step(msg):
    print("==> %s" % msg, flush=True)


def main():
    if os.geteuid() != 0:
        print("DEMO FAILED: run as root (the lab builds network namespaces)")
        return 1
    t0 = time.monotonic()
    lab = Lab(nat=True)
    daemon = None
    try:
        step("building the lab: lan host - router - ISP (NAT) - internet - broker - IPv6 host")
        lab.build()
        step("starting the reference broker at %s (HTTP update endpoint + protocol-41 PoP)" % lab.addrs["broker"])
        lab.start_broker(harness.broker_config())
        step("starting cpe-tunneld on the router (userspace data plane; this kernel has no sit)")
        daemon = harness.Daemon(lab)
        print(open(daemon.path).read().replace(harness.UPDATEKEY, "(update key)"), end="")
        daemon.start()
        daemon.wait_status(lambda s: s.get("state") == "up", timeout=30, what="tunnel up")
        lan_prefix = daemon.status()["lans"][0]["prefix"]
        step("waiting for the LAN host's SLAAC address in %s" % lan_prefix)
        pfx = lan_prefix.split("::/")[0]
        lan_addr = harness.wait_for(
            lambda: next((a for a in lab.lan_addresses()
                          if a.address.startswith(pfx + ":") and not a.tentative), None),
            timeout=30, what="a SLAAC address on the LAN host")
        print("    LAN host address: %s" % lan_addr.address)
        step("ping6 from the LAN host to the IPv6 host %s through the tunnel" % harness.V6HOST)
        before = lab.v6host_counter(lan_prefix)
        harness.wait_for(lambda: lab.ping6("lan", harness.V6HOST, count=1, timeout=2), timeout=20,
                         what="ping6 to the IPv6 host")
        after = lab.v6host_counter(lan_prefix)
        if after <= before:
            raise AssertionError("the IPv6 host did not see the LAN host's echo request")
        print("    the IPv6 host counted %d echo request(s) from %s" % (after - before, lan_prefix))
        step("cpe-tunnel status")
        res = daemon.cli("status")
        print(res.stdout, end="")
        st = daemon.status()
        summary = "LAN host %s reached %s through a %s 6in4 tunnel behind NAT (public %s) in %.1f s" % (
            lan_addr.address, harness.V6HOST, st["dataplane"], st["wan"]["public_ipv4"],
            time.monotonic() - t0)
        if res.returncode != 0:
            raise AssertionError("cpe-tunnel status exited %d" % res.returncode)
        print("DEMO OK: " + summary)
        return 0
    except Exception as exc:  # the demo's last line says what went wrong
        if daemon is not None:
            print("---- daemon log (last lines) ----")
            print("\n".join(daemon.log().splitlines()[-30:]))
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print("DEMO FAILED: %s" % reason)
        return 1
    finally:
        if daemon is not None:
            daemon.stop()
            daemon.cleanup()
        lab.teardown()


if __name__ == "__main__":
    sys.exit(main())
