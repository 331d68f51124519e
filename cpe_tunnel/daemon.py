"""cpe-tunneld: the daemon.

  cpe-tunneld [-c FILE] [-f] [-v]        run (syslog, or stderr with -f)
  cpe-tunneld --check [-c FILE]          validate the configuration: exit 0, or 2 with every problem

The daemon never starts half-configured: a bad file at start is exit 2. On SIGHUP it
re-reads the file; a bad file then leaves it running on the last good configuration,
with the problems in `cpe-tunnel status`. SIGTERM / SIGINT stop it cleanly: the LAN
is told the prefix is gone, and tunnel, routes and addresses are removed.
"""

import argparse
import os
import signal
import sys

from . import __version__
from .adapters import log as logmod
from .core import schema, uci

DEFAULT_CONFIG = "/etc/config/cpe_tunnel"


class ConfigProblems(Exception):
    def __init__(self, problems):
        super().__init__("\n".join(problems))
        self.problems = problems


def load_config(path):
    """-> validated config dict, or raises ConfigProblems listing every problem."""
    try:
        with open(path, "rb") as f:
            raw = f.read((1 << 20) + 1)
    except OSError as exc:
        raise ConfigProblems(["%s: cannot read the configuration: %s" % (path, exc.strerror or exc)])
    if len(raw) > (1 << 20):
        raise ConfigProblems(["%s: larger than 1 MiB, not a configuration file" % path])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigProblems(["%s: not UTF-8 text (byte %d)" % (path, exc.start)])
    name = os.path.basename(path) or "cpe_tunnel"
    try:
        pkg = uci.parse(text, name)
    except uci.UciError as exc:
        raise ConfigProblems(["%s: %s" % (path, exc)])
    cfg, problems = schema.validate(pkg)
    if problems:
        raise ConfigProblems(problems)
    return cfg


def check(path):
    try:
        load_config(path)
    except ConfigProblems as exc:
        for p in exc.problems:
            print(p, file=sys.stderr)
        print("%s: %d problem%s" % (path, len(exc.problems), "" if len(exc.problems) == 1 else "s"),
              file=sys.stderr)
        return 2
    print("%s: configuration OK" % path)
    return 0


class Daemon:
    def __init__(self, path, foreground=False, verbose=False, netifd=None):
        self.path = path
        self.foreground = foreground
        self.verbose = verbose
        self.netifd = netifd  # the netifd interface we report to (started by cpetunnel.sh)
        self.ubus = None
        self.reporter = None
        self.cfg = None
        self.sup = None
        self.loop = None
        self.control = None

    def run(self):
        from .adapters.ubus import UbusService
        from .control import ControlServer
        from .loop import Loop
        from .supervisor import Supervisor

        try:
            self.cfg = load_config(self.path)
        except ConfigProblems as exc:
            if self.netifd:
                from .adapters.netifd import NetifdReporter  # json, subprocess: only under netifd

                # netifd shows the error on the interface and stops restarting us
                rep = NetifdReporter(self.netifd)
                rep.error("INVALID_CONFIG", *exc.problems[:3])
                rep.block_restart()
            for p in exc.problems:
                print("cpe-tunneld: %s" % p, file=sys.stderr)
            print("cpe-tunneld: not starting: fix the configuration (%s)" % self.path, file=sys.stderr)
            return 2
        g = self.cfg["globals"]
        logmod.setup(self.foreground, "debug" if self.verbose else g["log_level"])
        log = logmod.log
        if not g["enabled"]:
            log.notice("disabled in %s (globals enabled '0'); exiting", self.path)
            return 0
        log.info("cpe-tunneld %s starting with %s", __version__, self.path)
        self.loop = loop = Loop()
        methods = {
            "status": lambda a: self.sup.status(),
            "reconnect": self._reconnect,
            "reload": lambda a: self.reload(),
            "clock_set": self._clock_set,
        }
        try:
            self.sup = Supervisor(loop, self.cfg, on_state=self._on_state)
            self.control = ControlServer(loop, g["control_socket"], methods)
            # The same methods as ubus object 'cpe_tunnel' where OpenWrt's binding exists.
            self.ubus = UbusService(loop, methods, on_interface_event=self._on_iface)
            if self.netifd:
                from .adapters.netifd import NetifdReporter

                self.reporter = NetifdReporter(self.netifd, bus=self.ubus)
        except OSError as exc:
            log.error("cannot start: %s", exc)
            return 1
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        loop.add_signal_handler(signal.SIGTERM, loop.stop)
        loop.add_signal_handler(signal.SIGINT, loop.stop)
        try:
            self.sup.start()
            loop.run()
        finally:
            log.info("stopping")
            try:
                self.sup.stop()
            finally:
                self.control.close()
                self.ubus.close()
                loop.close()
        return 0

    def _on_state(self, status):
        if self.ubus:
            self.ubus.notify(status)
        if self.reporter:
            self.reporter.update(status)

    def _on_iface(self, action, iface):
        # netifd's network.interface events: a WAN going up or changing is a hint
        # to re-read the WAN now (netlink tells us too; this is belt and braces).
        if action in ("ifup", "ifupdate", "ifdown"):
            self.sup.wan_hint()

    def _reconnect(self, args):
        self.sup.reconnect()
        return {"message": "reconnecting"}

    def _clock_set(self, args):
        # the system clock was set (OpenWrt: hotplug.d/ntp after sysntpd's step):
        # a session that waits for the time (TIC's clock check) tries again now
        t = self.sup.tunnel
        fn = getattr(t.session if t is not None else None, "clock_set", None)
        if fn is not None and fn(self.loop.clock()):
            return {"message": "clock set: asking the tunnel broker again", "retried": True}
        return {"message": "clock set: nothing was waiting for it", "retried": False}

    def reload(self):
        log = logmod.log
        try:
            cfg = load_config(self.path)
        except ConfigProblems as exc:
            msg = "; ".join(exc.problems)
            log.error("reload: keeping the running configuration, the new one has problems: %s", msg)
            self.sup.config_error = "the configuration file has problems, still running the last good one: " + msg
            self.sup.state_changed(self.loop.clock())
            return {"message": "configuration rejected: " + msg}
        self.cfg = cfg
        self.sup.reload(cfg)
        log.notice("configuration reloaded")
        return {"message": "configuration reloaded"}


def main(argv=None):
    p = argparse.ArgumentParser(prog="cpe-tunneld", description="IPv6 tunnel manager daemon.")
    p.add_argument("-c", "--config", default=DEFAULT_CONFIG, help="UCI config file (default %(default)s)")
    p.add_argument("-f", "--foreground", action="store_true", help="log to stderr instead of syslog")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("--check", action="store_true", help="validate the configuration and exit")
    p.add_argument("--netifd", metavar="IFACE",
                   help="started by netifd's cpetunnel handler: report addresses and prefix to IFACE")
    p.add_argument("--version", action="version", version="cpe-tunneld " + __version__)
    args = p.parse_args(argv)
    if args.check:
        return check(args.config)
    return Daemon(args.config, args.foreground, args.verbose, netifd=args.netifd).run()


if __name__ == "__main__":
    sys.exit(main())
