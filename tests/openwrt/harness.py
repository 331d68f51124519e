"""Shell harness for the OpenWrt scripts (netifd handler, hotplug, uci-defaults, init
script). The scripts run under /bin/sh (dash) and, when installed, busybox ash, with
STAND-INS for OpenWrt's helpers written from their documented behaviour:
stubs/jshn.sh, stubs/netifd-proto.sh, stubs/functions.sh, stubs/network.sh,
stubs/procd.sh, stubs/rc.common, and on PATH bin/ubus (records every call),
bin/logger, bin/uci (-> tools/uci, the Python uci CLI), bin/cpe-tunneld (the work
tree's daemon). None of this is OpenWrt code; libubox/netifd/procd/libuci are not
obtainable here."""

import json
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
FILES = os.path.join(ROOT, "files")
HANDLER = os.path.join(FILES, "lib", "netifd", "proto", "cpetunnel.sh")


def shells():
    """[(name, argv prefix)]: dash always, busybox ash when installed."""
    out = [("dash", ["/bin/sh"])]
    bb = shutil.which("busybox")
    if bb:
        out.append(("ash", [bb, "sh"]))
    return out


class Result:
    def __init__(self, proc, ubus_log, logger_log):
        self.rc = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        self.calls = []
        if os.path.exists(ubus_log):
            with open(ubus_log) as f:
                self.calls = [json.loads(line) for line in f if line.strip()]
        self.logged = []
        if os.path.exists(logger_log):
            with open(logger_log) as f:
                self.logged = f.read().splitlines()

    def notify(self):
        """The notify_proto messages, in order."""
        return [c["data"] for c in self.calls
                if c["path"] == "network.interface" and c["method"] == "notify_proto"]

    def __repr__(self):
        return "<Result rc=%s stdout=%r stderr=%r calls=%d>" % (self.rc, self.stdout[-500:],
                                                               self.stderr[-800:], len(self.calls))


def run(script, tmp, shell=("/bin/sh",), env=None, timeout=60):
    """Run script text under shell with the harness environment; tmp is a per-test
    directory (pathlib or str). Returns a Result."""
    tmp = str(tmp)
    ubus_log = os.path.join(tmp, "ubus.log")
    logger_log = os.path.join(tmp, "logger.log")
    for path in (ubus_log, logger_log):  # each run records afresh
        if os.path.exists(path):
            os.unlink(path)
    e = {
        "PATH": os.path.join(HERE, "bin") + ":/usr/sbin:/usr/bin:/sbin:/bin",
        "HARNESS_DIR": HERE,
        "HARNESS_PYTHON": sys.executable,
        "HARNESS_LOGGER": logger_log,
        "PYTHONPATH": ROOT,
        "UBUS_LOG": ubus_log,
        "CPETUNNEL_DAEMON": os.path.join(HERE, "bin", "cpe-tunneld"),
        "CPETUNNEL_RUNDIR": os.path.join(tmp, "run"),
        "UCI_CONFIG_DIR": os.path.join(tmp, "config"),
        "UCI_SAVE_DIR": os.path.join(tmp, "uci-delta"),
        "LC_ALL": "C",
    }
    e.update(env or {})
    proc = subprocess.run(list(shell) + ["-c", script], env=e, cwd=tmp, capture_output=True,
                          text=True, timeout=timeout)
    return Result(proc, ubus_log, logger_log)


def sq(text):
    """Single-quote text for a shell script."""
    return "'" + text.replace("'", "'\\''") + "'"


def proto_driver(action, iface, data, ifname=""):
    """Script text that runs the netifd handler the way netifd does
    (`cpetunnel.sh cpetunnel ACTION IFACE DATA [IFNAME]`), through the stand-ins."""
    return "\n".join([
        '. "$HARNESS_DIR/stubs/functions.sh"',
        '. "$HARNESS_DIR/stubs/network.sh"',
        '. "$HARNESS_DIR/stubs/netifd-proto.sh"',
        "INCLUDE_ONLY=1",
        ". %s" % sq(HANDLER),
        "init_proto cpetunnel %s %s %s %s" % (action, sq(iface), sq(json.dumps(data)), sq(ifname)),
        "add_protocol cpetunnel",
    ])
