# Helpers for the tests of the hotplug.d scripts in the shell harness (tests/openwrt):
# a stand-in CLI that records its arguments, and one run of a script with what it
# asked the CLI.

import os

from tests.openwrt import harness


def fake_cli(root, tmp_path, body=None):
    """root/usr/bin/cpe-tunnel: `body`, or by default a script appending its arguments as
    one line to tmp_path/cli.log (what run_hotplug reads)."""
    (root / "usr" / "bin").mkdir(parents=True, exist_ok=True)
    cli = root / "usr" / "bin" / "cpe-tunnel"
    cli.write_text(body or '#!/bin/sh\necho "$*" >> "%s"\n' % (tmp_path / "cli.log"))
    os.chmod(str(cli), 0o755)
    return cli


def run_hotplug(script, tmp_path, shell, env):
    """Source the hotplug script in a subshell with env: (harness result, [the CLI's
    argument lines]); the CLI log is emptied for the next run."""
    r = harness.run("( . %s )" % harness.sq(script), tmp_path, shell, env=env)
    log = tmp_path / "cli.log"
    cli = log.read_text().splitlines() if log.exists() else []
    if log.exists():
        log.unlink()
    return r, cli
