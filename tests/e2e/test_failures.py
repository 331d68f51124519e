"""End to end failure scenarios: wrong update key, broker's HTTP down then up, HTTPS with
and without the broker's CA."""

import json
import shutil
import time

import pytest

from tests import harness

pytestmark = pytest.mark.lab

WRONG_KEY = "wr0ng-Upd4te-Key-zz"


@pytest.fixture
def daemons():
    """start(lab, **daemon_config kw) -> a running harness.Daemon; all stopped afterwards."""
    started = []

    def start(lab, **kw):
        d = harness.Daemon(lab, **kw)
        started.append(d)
        return d.start()

    try:
        yield start
    finally:
        for d in started:
            d.stop()
            shutil.rmtree(d.dir, ignore_errors=True)


def _lan_reaches_v6host(lab, daemon, timeout=20):
    prefix = daemon.status()["lans"][0]["prefix"]
    assert lab.wait_lan_address(prefix, timeout=30) is not None, lab.lan_addresses()
    before = lab.v6host_counter(prefix)
    harness.wait_for(lambda: lab.ping6("lan", harness.V6HOST, count=1, timeout=1), timeout=timeout,
                     interval=0.2, what="ping6 from the LAN host to the v6 host")
    assert lab.v6host_counter(prefix) > before, "the v6 host did not see the LAN host's echo request"


def test_wrong_update_key(lab, daemons):
    broker = lab.start_broker(harness.broker_config())
    d = daemons(lab, updatekey=WRONG_KEY)
    st = d.wait_status(lambda s: (s.get("last_update") or {}).get("result") == "auth-failed",
                       timeout=10, what="the broker's badauth answer")
    t_seen = time.monotonic()
    assert st["state"] == "down"
    reason = st["reason"].lower()
    assert "rejected" in reason and ("update key" in reason or "username" in reason), st["reason"]
    assert st["last_error"] and "rejected" in st["last_error"]

    out = d.cli("status")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "DOWN" in out.stdout and "rejected the username or update key" in out.stdout

    # No tight retry loop: over ~8 s the broker sees at most 2 update requests.
    time.sleep(max(0.0, 8.0 - (time.monotonic() - t_seen)))
    t = broker.tunnel(harness.TUNNEL_ID)
    assert 1 <= t["updates"]["requests"] <= 2, t["updates"]
    assert t["updates"]["badauth"] == t["updates"]["requests"]
    assert t["endpoint"] is None  # nothing registered with a wrong key

    # Still running, control socket answers, still says why.
    assert d.proc.poll() is None, d.log()
    st = d.status()
    assert st["state"] == "down" and "rejected" in st["reason"]
    assert st["last_update"]["requests_sent"] == t["updates"]["requests"]

    # The key (right or wrong) appears nowhere a person or a log reader would see it.
    seen = json.dumps(st) + out.stdout + out.stderr + d.cli("status", "--json").stdout + d.log()
    for secret in (WRONG_KEY, harness.UPDATEKEY):
        assert secret not in seen


def test_broker_down_then_up(lab, daemons):
    retry_max = 4  # harness.daemon_config: update_retry_min 1, update_retry_max 4
    broker = lab.start_broker(harness.broker_config())
    broker.set_fault(http_down=True)
    d = daemons(lab)
    st = d.wait_status(lambda s: (s.get("last_update") or {}).get("requests_sent", 0) >= 3
                       and s["last_update"].get("state") == "waiting-retry",
                       timeout=10, what="the third update attempt while the broker is down")
    elapsed = time.monotonic() - d.started_at
    assert st["state"] == "down"
    assert "cannot reach the broker" in st["reason"] and "refused" in st["reason"], st["reason"]
    lu = st["last_update"]
    assert lu["result"] == "unreachable"
    # Backoff, not a tight loop: attempts at least update_retry_min (1 s) apart, and after
    # two failures the next wait has grown past the first one (1 s), capped at retry_max.
    assert lu["requests_sent"] <= elapsed / 1.0 + 1, (lu, elapsed)
    assert lu["next_retry_in"] is not None and 1.0 < lu["next_retry_in"] <= retry_max, lu
    out = d.cli("status")
    assert out.returncode == 1
    assert "cannot reach the broker" in out.stdout and "Next retry:" in out.stdout, out.stdout
    pid = d.proc.pid

    broker.set_fault(http_down=False)
    t0 = time.monotonic()
    st = d.wait_status(lambda s: s["state"] == "up", timeout=retry_max + 5, what="recovery")
    took = time.monotonic() - t0
    assert took <= retry_max + 3, "recovered only after %.1f s" % took
    assert d.proc.pid == pid and d.proc.poll() is None  # no restart
    assert st["last_error"] is None
    assert broker.tunnel(harness.TUNNEL_ID)["endpoint"] == lab.addrs["cpe_wan"]
    _lan_reaches_v6host(lab, d)


def test_https_with_ca_file(lab, daemons):
    broker = lab.start_broker(harness.broker_config(), tls=True)
    assert broker.ca_file
    url = "https://%s/nic/update" % lab.addrs["broker"]
    d = daemons(lab, update_url=url, ca_file=broker.ca_file)
    st = d.wait_status(lambda s: s["state"] == "up", timeout=15, what="tunnel up over HTTPS")
    assert st["broker"]["update_url"] == url
    t = broker.tunnel(harness.TUNNEL_ID)
    assert t["last_update"]["scheme"] == "https" and t["endpoint"] == lab.addrs["cpe_wan"]


def test_https_without_ca_file_fails_verification(lab, daemons):
    broker = lab.start_broker(harness.broker_config(), tls=True)
    url = "https://%s/nic/update" % lab.addrs["broker"]
    d = daemons(lab, update_url=url)  # system CAs only: they do not know the lab's CA
    st = d.wait_status(lambda s: (s.get("last_update") or {}).get("result") == "unreachable",
                       timeout=15, what="a failed HTTPS update")
    assert st["state"] == "down"
    assert "certificate verification failed" in st["reason"], st["reason"]
    assert "certificate verification failed" in st["last_error"]
    out = d.cli("status")
    assert out.returncode == 1 and "certificate verification failed" in out.stdout
    t = broker.tunnel(harness.TUNNEL_ID)
    assert t["endpoint"] is None and t["updates"]["requests"] == 0  # never got past TLS
