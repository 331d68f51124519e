"""Logging: syslog through /dev/log (as procd/logd collect it on OpenWrt), or stderr
in the foreground (-f). Secrets are never passed to the logger; redact() exists for
the few places where a caller formats text that might embed one."""

import logging
import os
import sys

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "notice": logging.INFO + 5,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
logging.addLevelName(LEVELS["notice"], "NOTICE")

log = logging.getLogger("cpe-tunneld")


def _notice(msg, *args, **kw):
    log.log(LEVELS["notice"], msg, *args, **kw)


log.notice = _notice  # syslog's NOTICE: normal but significant (state changes)


def setup(foreground=False, level="info", ident="cpe-tunneld"):
    for h in list(log.handlers):
        log.removeHandler(h)
    handler = None
    if not foreground and os.path.exists("/dev/log"):
        from logging import handlers  # only for syslog (about 0.5 MiB: pickle, queue, copy...)

        try:
            handler = handlers.SysLogHandler(address="/dev/log", facility=handlers.SysLogHandler.LOG_DAEMON)
            handler.ident = ident + "[%d]: " % os.getpid()
            handler.setFormatter(logging.Formatter("%(message)s"))
        except OSError:
            handler = None
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    log.addHandler(handler)
    log.setLevel(LEVELS.get(level, logging.INFO))
    log.propagate = False
    return log


def redact(text, secrets):
    for s in secrets:
        if s:
            text = text.replace(s, "(hidden)")
    return text
