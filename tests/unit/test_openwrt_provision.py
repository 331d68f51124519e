"""files/etc/uci-defaults/90-cpe-tunnel (ISP provisioning) in the shell harness,
under dash and busybox ash, with tools/uci standing in for OpenWrt's uci."""
import os
import shutil
import stat

import pytest

from cpe_tunnel.core import schema, uci
from tests.openwrt import harness

SCRIPT = os.path.join(harness.FILES, "etc", "uci-defaults", "90-cpe-tunnel")
SHIPPED = os.path.join(harness.FILES, "etc", "config", "cpe_tunnel")
SHELLS = [s[1] for s in harness.shells()]
IDS = [s[0] for s in harness.shells()]
SECRET = "x'y \"z\" $(reboot) `id` ; #not-a-comment"

PROVISION = """# ISP provisioning for cpe-tunnel
tunnel.mode=http-update
tunnel.peeraddr=203.0.113.1
tunnel.ip6addr=2001:db8:1::2/64
tunnel.ip6prefix=2001:db8:2::/64
tunnel.ip6prefix=2001:db8:3::/48
tunnel.update_url=https://broker.example/nic/update
tunnel.username=isp-customer-17
tunnel.updatekey=%s
tunnel.tunnelid=123456

lan.interface=br-lan
globals.enabled=1
locked=peeraddr update_url tunnelid
bogus.key=1
tunnel.Bad-Name=2
""" % SECRET


def prepare(tmp_path, provision=PROVISION):
    conf = tmp_path / "config"
    conf.mkdir(exist_ok=True)
    shutil.copy(SHIPPED, str(conf / "cpe_tunnel"))
    os.chmod(str(conf / "cpe_tunnel"), 0o644)
    p = tmp_path / "provision"
    p.write_text(provision)
    return {"CPETUNNEL_PROVISION": str(p)}


def load(tmp_path):
    with open(str(tmp_path / "config" / "cpe_tunnel")) as f:
        return uci.parse(f.read(), "cpe_tunnel")


def validate_ignoring_locked(pkg):
    """schema.validate, tolerating the `locked` list until the schema has it."""
    if "locked" not in schema.SECTIONS["tunnel"].by_name:
        for s in pkg.sections("tunnel"):
            s.delete("locked")
    return schema.validate(pkg)


@pytest.mark.parametrize("shell", SHELLS, ids=IDS)
def test_provisioning_writes_the_config_and_removes_the_credentials(tmp_path, shell):
    env = prepare(tmp_path)
    r = harness.run(". %s" % harness.sq(SCRIPT), tmp_path, shell, env=env)
    assert r.rc == 0, r
    assert not (tmp_path / "provision").exists()
    path = str(tmp_path / "config" / "cpe_tunnel")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    pkg = load(tmp_path)
    he = pkg.get_section("he")
    assert he.get("updatekey") == SECRET
    assert he.get("ip6prefix") == ["2001:db8:2::/64", "2001:db8:3::/48"]
    assert he.get("locked") == ["peeraddr", "update_url", "tunnelid"]
    assert pkg.get_section("isp_lan").get("interface") == "br-lan"
    assert pkg.get_section("main").get("enabled") == "1"
    assert len(pkg.sections("tunnel")) == 1
    cfg, problems = validate_ignoring_locked(pkg)
    assert problems == []
    assert cfg["tunnel"]["username"] == "isp-customer-17"
    assert cfg["lans"][0]["interface"] == "br-lan"
    # malformed keys are logged by name and skipped; the secret is never logged
    assert any("bogus.key" in line for line in r.logged)
    assert any("tunnel.Bad-Name" in line for line in r.logged)
    assert not any(SECRET in line for line in r.logged)
    assert "Bad" not in open(path).read()


def test_provisioning_is_idempotent(tmp_path, shell=SHELLS[0]):
    env = prepare(tmp_path)
    assert harness.run(". %s" % harness.sq(SCRIPT), tmp_path, shell, env=env).rc == 0
    first = (tmp_path / "config" / "cpe_tunnel").read_text()
    # factory reset brings the provisioning file back: the result is the same
    (tmp_path / "provision").write_text(PROVISION)
    assert harness.run(". %s" % harness.sq(SCRIPT), tmp_path, shell, env=env).rc == 0
    assert (tmp_path / "config" / "cpe_tunnel").read_text() == first


@pytest.mark.parametrize("shell", SHELLS, ids=IDS)
def test_without_provisioning_file_nothing_changes(tmp_path, shell):
    env = prepare(tmp_path)
    os.unlink(env["CPETUNNEL_PROVISION"])
    before = open(SHIPPED).read()
    r = harness.run(". %s" % harness.sq(SCRIPT), tmp_path, shell, env=env)
    assert r.rc == 0 and r.calls == []
    assert (tmp_path / "config" / "cpe_tunnel").read_text() == before


def test_no_tunnel_section_gets_one(tmp_path, shell=SHELLS[0]):
    env = prepare(tmp_path, "tunnel.mode=static\ntunnel.peeraddr=203.0.113.1\n"
                            "tunnel.ip6addr=2001:db8:1::2/64\n")
    (tmp_path / "config" / "cpe_tunnel").write_text("")
    assert harness.run(". %s" % harness.sq(SCRIPT), tmp_path, shell, env=env).rc == 0
    pkg = load(tmp_path)
    assert pkg.get_section("isp").get("mode") == "static"
    assert validate_ignoring_locked(pkg)[1] == []


def test_failed_commit_keeps_file_for_next_boot(tmp_path, shell=SHELLS[0]):
    env = prepare(tmp_path)
    # a commit that cannot write: the config directory is read-only for uci
    bad = tmp_path / "bin"
    bad.mkdir()
    (bad / "uci").write_text('#!/bin/sh\n[ "$1" = commit ] && exit 1\n'
                             'exec "%s/bin/uci" "$@"\n' % harness.HERE)
    os.chmod(str(bad / "uci"), 0o755)
    env["PATH"] = "%s:%s/bin:/usr/bin:/bin" % (bad, harness.HERE)
    r = harness.run(". %s" % harness.sq(SCRIPT), tmp_path, shell, env=env)
    assert r.rc == 1
    assert (tmp_path / "provision").exists()
    assert SECRET not in (tmp_path / "config" / "cpe_tunnel").read_text()


def test_list_names_match_the_schema():
    text = open(SCRIPT).read()
    line = [x for x in text.splitlines() if x.startswith("LISTS=")][0]
    names = set(line.split('"')[1].split())
    # `locked` (once the schema has it) is written by the script's own locked= line
    lists = {o.name for st in schema.SCHEMA for o in st.options if o.is_list and o.name != "locked"}
    assert names == lists
