"""The real daemon started the way netifd's cpetunnel handler starts it (--netifd),
reporting to netifd over `ubus call network.interface notify_proto`.

OpenWrt's ubus/ubusd cannot be installed here: the `ubus` command on PATH is the
recording STAND-IN from tests/openwrt/bin/ubus (same command line as the real tool)."""

import json
import os

import pytest

from tests import harness

pytestmark = pytest.mark.lab

STANDIN_BIN = os.path.join(harness.ROOT, "tests", "openwrt", "bin")


def test_netifd_mode_reports_addresses_and_prefix(lab, tmp_path):
    lab.start_broker(harness.broker_config())
    log = tmp_path / "ubus.log"
    d = harness.Daemon(lab)
    # netifd mode: no LAN sections (odhcpd announces the prefix), netifd owns the default route
    text = d.config(tunnel_extra={"defaultroute": "0"})
    d.write_config(text.split("\nconfig lan")[0] + "\n")
    d.start(extra_args=["--netifd", "wan6tun"],
            env={"PATH": STANDIN_BIN + ":" + os.environ["PATH"], "UBUS_LOG": str(log)})
    try:
        d.wait_status(lambda s: s["state"] == "up", timeout=20, what="tunnel up")
        calls = harness.wait_for(
            lambda: [c for c in (json.loads(x) for x in log.read_text().splitlines() if x)
                     if c.get("method") == "notify_proto" and (c.get("data") or {}).get("ip6prefix")]
            if log.exists() else None, timeout=10, what="notify_proto with the prefix")
        msg = calls[-1]["data"]
        assert calls[-1]["path"] == "network.interface"
        assert msg["interface"] == "wan6tun" and msg["action"] == 0
        assert msg["ifname"] == "cpe6in4" and msg["link-up"] is True
        assert {"ipaddr": "2001:db8:1::2", "mask": "64"}.items() <= msg["ip6addr"][0].items()
        assert any(p.startswith("2001:db8:1234::/48") for p in msg["ip6prefix"])
        assert d.status()["lans"] == []  # our own RA sender stays off
        assert harness.UPDATEKEY not in log.read_text()
    finally:
        d.stop()
        d.cleanup()
