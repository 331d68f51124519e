"""Noticing at once when the system clock is set (stepped), on plain Linux.

A timerfd on CLOCK_REALTIME armed with TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET
becomes readable, and read() on it fails with ECANCELED, whenever CLOCK_REALTIME is
set discontinuously (settimeofday, clock_settime, an NTP daemon stepping the clock,
adjtimex with ADJ_SETOFFSET) - timerfd_create(2). Python 3.11 has no os.timerfd_*, so
the three calls go through ctypes to the C library. The timer itself is armed for a
far-away absolute time and never expires in practice; only the cancellation matters.
After each notice it is armed again.

    w = ClockWatch(loop, on_set)   # on_set() runs in the loop
    w.start()                      # False when the platform cannot (no timerfd)
    w.stop()

Only while someone waits for the clock should the fd be registered: TicSession starts
the watch when TIC said the clock is off and stops it when TIC is retried.
"""

import errno
import os
import time

from .log import log

try:  # OpenWrt packages ctypes apart (python3-ctypes): without it, no clock watch
    import ctypes
    import ctypes.util
except ImportError:
    ctypes = None

CLOCK_REALTIME = 0
TFD_NONBLOCK = os.O_NONBLOCK
TFD_CLOEXEC = os.O_CLOEXEC
TFD_TIMER_ABSTIME = 1
TFD_TIMER_CANCEL_ON_SET = 2

__all__ = ["ClockWatch", "available"]


if ctypes is not None:
    class _Timespec(ctypes.Structure):
        # time_t is a C long for the un-suffixed libc symbols on every Linux ABI
        # (32-bit musl's 64-bit time_t goes through the __*_time64 symbols instead)
        _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]

    class _Itimerspec(ctypes.Structure):
        _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


_libc = None


def _lib():
    """The C library's timerfd functions, or None."""
    global _libc
    if ctypes is None:
        return None
    if _libc is None:
        try:
            lib = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
            create, settime, gettime = lib.timerfd_create, lib.timerfd_settime, lib.timerfd_gettime
        except (OSError, AttributeError):
            _libc = False
            return None
        create.argtypes = [ctypes.c_int, ctypes.c_int]
        create.restype = ctypes.c_int
        settime.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.POINTER(_Itimerspec), ctypes.POINTER(_Itimerspec)]
        settime.restype = ctypes.c_int
        gettime.argtypes = [ctypes.c_int, ctypes.POINTER(_Itimerspec)]
        gettime.restype = ctypes.c_int
        _libc = (create, settime, gettime)
    return _libc or None


def available():
    return _lib() is not None


def _far_future():
    """An absolute CLOCK_REALTIME time that will not come: ten years ahead, within a
    C long (a 32-bit long ends in 2038)."""
    limit = (1 << (8 * ctypes.sizeof(ctypes.c_long) - 1)) - 1
    return min(int(time.time()) + 10 * 365 * 86400, limit)


def _oserror(what):
    e = ctypes.get_errno()
    return OSError(e, "%s: %s" % (what, os.strerror(e)))


def timerfd_create():
    lib = _lib()
    if lib is None:
        raise OSError(errno.ENOSYS, "timerfd is not available")
    fd = lib[0](CLOCK_REALTIME, TFD_NONBLOCK | TFD_CLOEXEC)
    if fd < 0:
        raise _oserror("timerfd_create")
    return fd


def arm_cancel_on_set(fd):
    """Arm fd (from timerfd_create) to be cancelled when the clock is set."""
    spec = _Itimerspec()
    spec.it_value.tv_sec = _far_future()
    if _lib()[1](fd, TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET, ctypes.byref(spec), None) != 0:
        raise _oserror("timerfd_settime")


def remaining(fd):
    """Seconds until the timer on fd expires (0 when disarmed)."""
    spec = _Itimerspec()
    if _lib()[2](fd, ctypes.byref(spec)) != 0:
        raise _oserror("timerfd_gettime")
    return spec.it_value.tv_sec + spec.it_value.tv_nsec / 1e9


class ClockWatch:
    def __init__(self, loop, on_set, read=os.read):
        self.loop = loop
        self.on_set = on_set
        self.fd = None
        self.notices = 0
        self._read = read  # tests simulate the kernel's answer here

    @property
    def active(self):
        return self.fd is not None

    def start(self):
        """Register with the loop. True when watching (also when already watching),
        False when this platform has no usable timerfd (the caller keeps its slow retry)."""
        if self.fd is not None:
            return True
        try:
            fd = timerfd_create()
        except OSError as exc:
            log.debug("clock watch unavailable: %s", exc)
            return False
        try:
            arm_cancel_on_set(fd)
        except OSError as exc:
            os.close(fd)
            log.debug("clock watch unavailable: %s", exc)
            return False
        self.fd = fd
        self.loop.add_reader(fd, self._on_readable)
        return True

    def stop(self):
        if self.fd is None:
            return
        self.loop.remove_reader(self.fd)
        os.close(self.fd)
        self.fd = None

    def _on_readable(self):
        fd = self.fd
        if fd is None:
            return
        try:
            self._read(fd, 8)
        except BlockingIOError:
            return  # spurious wakeup
        except OSError as exc:
            if exc.errno != errno.ECANCELED:
                log.warning("clock watch: %s; falling back to the slow retry", exc)
                self.stop()
                return
        # ECANCELED: the clock was set. (A successful read would mean the far-away
        # expiry came, which only a jump of the clock can do: the same notice.)
        self.notices += 1
        try:
            arm_cancel_on_set(fd)
        except OSError as exc:
            log.warning("clock watch: cannot re-arm: %s", exc)
            self.stop()
        self.on_set()
