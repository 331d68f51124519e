"""files/etc/hotplug.d/ntp/90-cpe-tunnel in the shell harness (tests/openwrt: STAND-INS
for ubus and logger), under dash and busybox ash: which NTP events tell the daemons
that the clock was set, by which route (ubus object, the CLI's control socket, the
sockets of netifd-started daemons) - and once with the real CLI against a real
control socket carrying the `clock_set` method."""

import os
import subprocess
import sys
import threading

import pytest

from cpe_tunnel.control import ControlServer
from cpe_tunnel.loop import Loop
from tests.openwrt import harness
from tests.unit.hotplugs import fake_cli, run_hotplug

HOTPLUG = os.path.join(harness.FILES, "etc", "hotplug.d", "ntp", "90-cpe-tunnel")
SHELLS = [s[1] for s in harness.shells()]
IDS = [s[0] for s in harness.shells()]


def test_script_parses():
    for name, sh in harness.shells():
        p = subprocess.run(sh + ["-n", HOTPLUG], capture_output=True, text=True)
        assert p.returncode == 0, (name, p.stderr)


def fake_root(tmp_path, cli_body=None):
    root = tmp_path / "root"
    fake_cli(root, tmp_path, cli_body)
    return root


def hotplug(tmp_path, shell, env, root=None):
    e = {"IPKG_INSTROOT": str(root or fake_root(tmp_path))}
    e.update(env)
    return run_hotplug(HOTPLUG, tmp_path, shell, e)


@pytest.mark.parametrize("shell", SHELLS, ids=IDS)
def test_step_and_stratum_tell_the_daemon(tmp_path, shell):
    # with the ubus object: ubus call, not the CLI
    r, cli = hotplug(tmp_path, shell, {"ACTION": "step", "offset": "-3600.5", "UBUS_OBJECTS": "cpe_tunnel"})
    assert r.rc == 0, r
    assert [(c["path"], c["method"]) for c in r.calls if c["method"]] == [("cpe_tunnel", "clock_set")]
    assert cli == [] and r.logged == ["cpe-tunnel: NTP step: told the tunnel daemons the clock is set"]
    # without: the control socket through the CLI
    r, cli = hotplug(tmp_path, shell, {"ACTION": "stratum", "stratum": "2"})
    assert r.rc == 0 and cli == ["clock-set"], (r, cli)
    assert not [c for c in r.calls if c["method"]]


@pytest.mark.parametrize("shell", SHELLS, ids=IDS)
def test_other_ntp_events_are_ignored(tmp_path, shell):
    for env in ({"ACTION": "stratum", "stratum": "16"},  # 16: not synchronised
                {"ACTION": "unsync"}, {"ACTION": "periodic", "stratum": "2"}, {"ACTION": ""}):
        env["UBUS_OBJECTS"] = "cpe_tunnel"
        r, cli = hotplug(tmp_path, shell, env)
        assert r.rc == 0 and cli == [] and not [c for c in r.calls if c["method"]], env
        assert r.logged == [], env


def test_nothing_reached_logs_nothing(tmp_path, shell=SHELLS[0]):
    root = fake_root(tmp_path, "#!/bin/sh\nexit 2\n")  # the CLI cannot reach a daemon
    r, _cli = hotplug(tmp_path, shell, {"ACTION": "step"}, root=root)
    assert r.rc == 0 and r.logged == []


def test_reaches_netifd_started_daemons_through_the_real_cli(tmp_path, shell=SHELLS[0]):
    """The script -> the work tree's CLI -> a control socket whose clock_set answers."""
    run = tmp_path / "run"
    run.mkdir()
    loop = Loop()
    calls = []

    def clock_set(args):
        calls.append(args)
        return {"message": "clock set: asking the tunnel broker again", "retried": True}

    server = ControlServer(loop, str(run / "wan6tun.sock"), {"clock_set": clock_set})
    t = threading.Thread(target=loop.run, daemon=True)
    t.start()
    try:
        cli = ('#!/bin/sh\necho "$*" >> "%s"\n'
               'PYTHONPATH=%s exec %s -m cpe_tunnel.cli "$@"\n') % (
            tmp_path / "cli.log", harness.ROOT, sys.executable)
        # the standalone daemon's try (no -s) finds none here; the netifd one answers
        r, cli_log = hotplug(tmp_path, shell, {"ACTION": "step"}, root=fake_root(tmp_path, cli))
        assert r.rc == 0, r
        assert cli_log == ["clock-set", "-s %s clock-set" % (run / "wan6tun.sock")]
        assert calls == [{}]
        assert r.logged == ["cpe-tunnel: NTP step: told the tunnel daemons the clock is set"]
    finally:
        loop.call_soon_threadsafe(loop.stop)
        t.join(5)
        server.close()
        loop.close()
