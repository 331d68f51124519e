"""tools/uci, the Python stand-in for OpenWrt's `uci` command line: output byte for
byte as the real tool printed it (../shared/UCI.md), staging and commit like libuci."""
import os
import stat
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOL = os.path.join(ROOT, "tools", "uci")

# The input the real uci was run on (../shared/UCI.md).
INPUT = """# comment line
config globals 'main'
	option enabled "1"
	option log_level info

config tunnel 'he'
	option mode 'http-update'
	option password 'it'"'"'s a "secret"'
	list dns 2001:db8::53
	list dns '2001:db8::54'
	option empty ''

config lan
	option interface br-lan
	option ip6assign 64

config lan
	option interface 'br-guest'
"""

SHOW = """cpe_tunnel.main=globals
cpe_tunnel.main.enabled='1'
cpe_tunnel.main.log_level='info'
cpe_tunnel.he=tunnel
cpe_tunnel.he.mode='http-update'
cpe_tunnel.he.password='it'\\''s a "secret"'
cpe_tunnel.he.dns='2001:db8::53' '2001:db8::54'
cpe_tunnel.@lan[0]=lan
cpe_tunnel.@lan[0].interface='br-lan'
cpe_tunnel.@lan[0].ip6assign='64'
cpe_tunnel.@lan[1]=lan
cpe_tunnel.@lan[1].interface='br-guest'
"""

EXPORT = """package cpe_tunnel

config globals 'main'
	option enabled '1'
	option log_level 'info'

config tunnel 'he'
	option mode 'http-update'
	option password 'it'\\''s a "secret"'
	list dns '2001:db8::53'
	list dns '2001:db8::54'

config lan
	option interface 'br-lan'
	option ip6assign '64'

config lan
	option interface 'br-guest'

"""


@pytest.fixture
def cli(tmp_path):
    conf = tmp_path / "config"
    conf.mkdir()
    (conf / "cpe_tunnel").write_text(INPUT)
    os.chmod(str(conf / "cpe_tunnel"), 0o640)

    def run(*args, check=True):
        p = subprocess.run([sys.executable, TOOL, "-c", str(conf), "-p", str(tmp_path / "delta")] + list(args),
                           capture_output=True, text=True, timeout=30)
        if check:
            assert p.returncode == 0, p.stderr
        return p
    run.conf = conf
    return run


def test_show_and_export_byte_exact(cli):
    assert cli("show", "cpe_tunnel").stdout == SHOW
    assert cli("export", "cpe_tunnel").stdout == EXPORT
    assert cli("show", "cpe_tunnel.he.dns").stdout == "cpe_tunnel.he.dns='2001:db8::53' '2001:db8::54'\n"
    assert cli("show", "cpe_tunnel.@lan[-1]").stdout == \
        "cpe_tunnel.@lan[1]=lan\ncpe_tunnel.@lan[1].interface='br-guest'\n"


def test_get(cli):
    assert cli("get", "cpe_tunnel.he.dns").stdout == "2001:db8::53 2001:db8::54\n"
    assert cli("get", "cpe_tunnel.he").stdout == "tunnel\n"
    assert cli("get", "cpe_tunnel.@lan[0].interface").stdout == "br-lan\n"
    p = cli("get", "cpe_tunnel.he.nope", check=False)
    assert (p.returncode, p.stdout, p.stderr) == (1, "", "uci: Entry not found\n")
    p = cli("-q", "get", "cpe_tunnel.he.nope", check=False)
    assert (p.returncode, p.stderr) == (1, "")


def test_changes_then_commit_like_libuci(cli):
    cli("set", "cpe_tunnel.he.mtu=1280")
    cli("add_list", "cpe_tunnel.he.dns=2001:db8::55")
    assert cli("add", "cpe_tunnel", "lan").stdout == "cfg058b40\n"
    assert cli("changes").stdout == ("cpe_tunnel.he.mtu='1280'\n"
                                     "cpe_tunnel.he.dns+='2001:db8::55'\n"
                                     "cpe_tunnel.cfg058b40='lan'\n")
    # staged, not written
    assert (cli.conf / "cpe_tunnel").read_text() == INPUT
    assert cli("get", "cpe_tunnel.he.mtu").stdout == "1280\n"
    cli("commit", "cpe_tunnel")
    text = (cli.conf / "cpe_tunnel").read_text()
    # no comment, no package line, first line empty, new options at the end of their
    # section, new sections at the end of the file
    assert text == ("\nconfig globals 'main'\n\toption enabled '1'\n\toption log_level 'info'\n\n"
                    "config tunnel 'he'\n\toption mode 'http-update'\n"
                    "\toption password 'it'\\''s a \"secret\"'\n\tlist dns '2001:db8::53'\n"
                    "\tlist dns '2001:db8::54'\n\tlist dns '2001:db8::55'\n\toption mtu '1280'\n\n"
                    "config lan\n\toption interface 'br-lan'\n\toption ip6assign '64'\n\n"
                    "config lan\n\toption interface 'br-guest'\n\nconfig lan\n\n")
    assert stat.S_IMODE(os.stat(str(cli.conf / "cpe_tunnel")).st_mode) == 0o640  # mode kept
    assert cli("changes").stdout == ""


def test_delete_revert_and_errors(cli):
    cli("delete", "cpe_tunnel.he.password")
    cli("delete", "cpe_tunnel.@lan[1]")
    assert cli("changes").stdout == "-cpe_tunnel.he.password\n-cpe_tunnel.cfg048b40\n"
    assert "password" not in cli("show", "cpe_tunnel.he").stdout
    assert cli("show", "cpe_tunnel").stdout.count("=lan\n") == 1
    cli("revert", "cpe_tunnel")
    assert cli("show", "cpe_tunnel").stdout == SHOW
    assert cli("set", "cpe_tunnel.nosuch.opt=1", check=False).returncode == 1
    assert cli("set", "bad..key=1", check=False).returncode == 1
    assert cli("get", "nosuchpkg.x", check=False).returncode == 1
    assert cli("delete", "cpe_tunnel.he.nope", check=False).stderr == "uci: Entry not found\n"
    # a value is one argument: no shell, no quoting games
    cli("set", "cpe_tunnel.he.username=a'b \"c\" $(x)")
    assert cli("get", "cpe_tunnel.he.username").stdout == "a'b \"c\" $(x)\n"
    cli("set", "cpe_tunnel.he.username=")  # empty value deletes, as uci set does
    assert cli("get", "cpe_tunnel.he.username", check=False).returncode == 1


def test_new_package_file_is_private(cli):
    (cli.conf / "other").write_text("")
    cli("set", "other.s=thing")
    cli("set", "other.s.key=v")
    os.unlink(str(cli.conf / "other"))
    cli("commit", "other")
    assert (cli.conf / "other").read_text() == "\nconfig thing 's'\n\toption key 'v'\n\n"
    assert stat.S_IMODE(os.stat(str(cli.conf / "other")).st_mode) == 0o600


def test_named_export_for_config_load(cli):
    out = cli("-n", "export", "cpe_tunnel").stdout
    assert "config lan 'cfg038b40'\n" in out and "config lan 'cfg048b40'\n" in out


def test_parse_error(cli):
    (cli.conf / "broken").write_text("config tunnel 'a\n")
    p = cli("show", "broken", check=False)
    assert p.returncode == 1 and p.stderr.startswith("uci: Parse error")
