"""The procd init script (files/etc/init.d/cpe_tunnel) and the hotplug.d/iface script
in the shell harness: STAND-INS for rc.common, procd.sh, functions.sh and the ubus
command, written from their documented behaviour; the service definition procd would
receive (`ubus call service set`) is checked, under dash and busybox ash."""
import os
import socket
import subprocess

import pytest

from cpe_tunnel.core import schema
from tests.openwrt import harness
from tests.unit.hotplugs import fake_cli, run_hotplug

INIT = os.path.join(harness.FILES, "etc", "init.d", "cpe_tunnel")
HOTPLUG = os.path.join(harness.FILES, "etc", "hotplug.d", "iface", "90-cpe-tunnel")
SHELLS = [s[1] for s in harness.shells()]
IDS = [s[0] for s in harness.shells()]


def test_scripts_parse():
    for path in (INIT, HOTPLUG):
        for name, sh in harness.shells():
            p = subprocess.run(sh + ["-n", path], capture_output=True, text=True)
            assert p.returncode == 0, (name, path, p.stderr)


def write_config(tmp_path, enabled=True, broken=False):
    conf = tmp_path / "config"
    conf.mkdir(exist_ok=True)
    text = schema.uncomment_examples(schema.defaults_text())
    if enabled:
        text = text.replace("option enabled '0'", "option enabled '1'")
    if broken:
        text = text.replace("option mtu '1280'", "option mtu '99999'")
    (conf / "cpe_tunnel").write_text(text)


def rc(tmp_path, shell, action, env=None):
    script = "set -- %s %s; . \"$HARNESS_DIR/stubs/rc.common\"" % (harness.sq(INIT), action)
    return harness.run(script, tmp_path, shell, env=env)


def service_set(r):
    sets = [c["data"] for c in r.calls if c["path"] == "service" and c["method"] == "set"]
    assert len(sets) == 1, r
    return sets[0]


@pytest.mark.parametrize("shell", SHELLS, ids=IDS)
def test_service_definition(tmp_path, shell):
    write_config(tmp_path)
    r = rc(tmp_path, shell, "start")
    assert r.rc == 0, r
    svc = service_set(r)
    conf = str(tmp_path / "config" / "cpe_tunnel")
    assert svc["name"] == "cpe_tunnel"
    inst = svc["instances"]["instance1"]
    assert inst["command"] == [os.path.join(harness.HERE, "bin", "cpe-tunneld"), "-c", conf]
    assert inst["respawn"] == ["3600", "5", "5"]
    assert inst["file"] == [conf]
    assert inst["reload_signal"] == 1  # SIGHUP instead of a restart: no tunnel flap
    assert inst["netdev"] == ["br-lan"]  # the LAN sections' devices
    assert inst["term_timeout"] == 10
    assert inst["limits"] == {"core": "0 0"}
    assert inst["stdout"] is True and inst["stderr"] is True
    assert "jail" not in inst and "capabilities" not in inst  # opt-in only
    assert svc["triggers"] == [["config.change", ["if", ["eq", "package", "cpe_tunnel"],
                                                  ["run_script", "/etc/init.d/cpe_tunnel", "reload"]], 1000]]


@pytest.mark.parametrize("shell", SHELLS, ids=IDS)
def test_disabled_service_defines_no_instance(tmp_path, shell):
    write_config(tmp_path, enabled=False)
    r = rc(tmp_path, shell, "start")
    assert service_set(r)["instances"] == {}


def test_bad_config_not_started_but_a_running_daemon_keeps_its_instance(tmp_path, shell=SHELLS[0]):
    write_config(tmp_path, broken=True)
    r = rc(tmp_path, shell, "start")
    assert service_set(r)["instances"] == {}
    assert any("mtu" in line for line in r.logged)  # every problem in the log
    # running already: the instance stays, procd sends SIGHUP, the daemon keeps
    # its last good configuration
    r = rc(tmp_path, shell, "reload", env={"UBUS_REPLY_service": '{"cpe_tunnel": {"instances": '
                                                                 '{"instance1": {"running": true}}}}'})
    assert "instance1" in service_set(r)["instances"]


def test_reload_redefines_the_service(tmp_path, shell=SHELLS[0]):
    write_config(tmp_path)
    r = rc(tmp_path, shell, "reload")
    assert service_set(r)["instances"]["instance1"]["reload_signal"] == 1


def test_opt_in_capabilities_jail(tmp_path, shell=SHELLS[0]):
    if not os.path.exists("/sbin/ujail"):
        # the script looks for /sbin/ujail itself; without it the jail stays off
        write_config(tmp_path)
        caps = tmp_path / "caps.json"
        caps.write_text("{}")
        text = open(INIT).read()
        assert 'CAPABILITIES=/etc/capabilities/cpe_tunnel.json' in text
        assert "procd_set_param capabilities" in text and "procd_add_jail cpe_tunnel" in text
        inst = service_set(rc(tmp_path, shell, "start"))["instances"]["instance1"]
        assert "jail" not in inst


def test_stop_deletes_the_service(tmp_path, shell=SHELLS[0]):
    write_config(tmp_path)
    r = rc(tmp_path, shell, "stop")
    assert [(c["path"], c["method"], c["data"]) for c in r.calls] == \
        [("service", "delete", {"name": "cpe_tunnel"})]


# -- hotplug.d/iface ----------------------------------------------------------------

def hotplug_root(tmp_path):
    root = tmp_path / "root"
    (root / "lib" / "functions").mkdir(parents=True, exist_ok=True)
    with open(os.path.join(harness.HERE, "stubs", "network.sh")) as f:
        (root / "lib" / "functions" / "network.sh").write_text(f.read())
    fake_cli(root, tmp_path)
    return root


def hotplug(tmp_path, shell, env):
    e = {"IPKG_INSTROOT": str(hotplug_root(tmp_path)), "HARNESS_WAN": "wan"}
    e.update(env)
    return run_hotplug(HOTPLUG, tmp_path, shell, e)


@pytest.mark.parametrize("shell", SHELLS, ids=IDS)
def test_hotplug_wan_up_reconnects(tmp_path, shell):
    write_config(tmp_path)
    # with the ubus object: ubus call
    r, cli = hotplug(tmp_path, shell, {"ACTION": "ifup", "INTERFACE": "wan", "UBUS_OBJECTS": "cpe_tunnel"})
    assert r.rc == 0, r
    assert [(c["path"], c["method"]) for c in r.calls if c["method"]] == [("cpe_tunnel", "reconnect")]
    assert cli == []
    # without: the control socket through the CLI
    r, cli = hotplug(tmp_path, shell, {"ACTION": "ifupdate", "INTERFACE": "wan", "IFUPDATE_ADDRESSES": "1"})
    assert cli == ["reconnect"]


@pytest.mark.parametrize("shell", SHELLS, ids=IDS)
def test_hotplug_ignores_other_events(tmp_path, shell):
    write_config(tmp_path)
    for env in ({"ACTION": "ifdown", "INTERFACE": "wan"},
                {"ACTION": "ifup", "INTERFACE": "lan"},
                {"ACTION": "ifupdate", "INTERFACE": "wan", "IFUPDATE_ADDRESSES": "0"}):
        r, cli = hotplug(tmp_path, shell, env)
        assert r.rc == 0 and cli == [] and not [c for c in r.calls if c["method"]], env


def test_hotplug_reaches_netifd_started_daemons(tmp_path, shell=SHELLS[0]):
    write_config(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(run / "wan6tun.sock"))
    try:
        (tmp_path / "config" / "network").write_text(
            "config interface 'wan6tun'\n\toption proto 'cpetunnel'\n\toption tunlink 'wan2'\n")
        r, cli = hotplug(tmp_path, shell, {"ACTION": "ifup", "INTERFACE": "wan2", "HARNESS_WAN": "wan"})
        assert cli == ["reconnect", "-s %s reconnect" % (run / "wan6tun.sock")]
    finally:
        s.close()
