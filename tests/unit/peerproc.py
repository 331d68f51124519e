# Helpers for the unit tests that run a reference peer (tests.broker, tests.sixxs_pop, ...)
# as a process on loopback, or one of its servers in this process.

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile

from tests.broker import make_test_ca
from tests.lab.lab import REPO_ROOT


def free_port(kind=socket.SOCK_STREAM):
    """A port on 127.0.0.1 that was free a moment ago (TCP, or UDP with SOCK_DGRAM)."""
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@contextlib.contextmanager
def temp_certs(prefix, tls_subdir=None):
    """(work directory, make_test_ca's files for a server on 127.0.0.1), with the CA made in
    tls_subdir of the directory (or in it); the directory is removed afterwards."""
    d = tempfile.mkdtemp(prefix=prefix)
    try:
        yield d, make_test_ca(os.path.join(d, tls_subdir) if tls_subdir else d, ip="127.0.0.1")
    finally:
        shutil.rmtree(d, ignore_errors=True)


def peer_argv(module, config_path, control_path, *switches):
    """The command line of a peer process: python -m module --config ... --control ..."""
    argv = [sys.executable, "-m", module, "--config", str(config_path), "--control", str(control_path)]
    return argv + list(switches)


def peer_env():
    return dict(os.environ, PYTHONPATH=REPO_ROOT)


def run_peer_once(module, config_path, control_path, *switches):
    """Run a peer process to its end (a configuration it refuses): CompletedProcess with
    text stdout/stderr."""
    return subprocess.run(
        peer_argv(module, config_path, control_path, *switches),
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=peer_env(),
        timeout=30,
    )


@contextlib.contextmanager
def loopback_peer(handle_cls, module, switch, cfg, workdir, config_name, ca_file):
    """Write cfg as workdir/config_name, start the peer process (its output in workdir/log),
    wait until its control socket answers and yield its handle; stop it afterwards."""
    cfile = os.path.join(workdir, config_name)
    with open(cfile, "w") as f:
        json.dump(cfg, f)
    ctl = os.path.join(workdir, "ctl.sock")
    with open(os.path.join(workdir, "log"), "wb") as log:
        proc = subprocess.Popen(
            peer_argv(module, cfile, ctl, switch),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=peer_env(),
            cwd=REPO_ROOT,
        )
        h = handle_cls(ctl, proc=proc, config=cfg, ca_file=ca_file, log_path=log.name)
        try:
            h.wait_ready(10)
            yield h
        finally:
            h.stop()
