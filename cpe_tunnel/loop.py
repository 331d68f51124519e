"""The daemon's one event loop: file descriptors through selectors, timers from the
protocol objects, thread-safe wakeups, and signals turned into loop callbacks.

No busy polling: the loop sleeps in select() until a descriptor is readable, the
earliest deadline of any timer source passes, or another thread / a signal wakes it.
"""

import collections
import heapq
import os
import selectors
import signal
import time


class Loop:
    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self._sel = selectors.DefaultSelector()
        self._timers = []  # heap of [deadline, seq, callback, alive]
        self._seq = 0
        self._soon = collections.deque()
        self._sources = []  # (get_timer, handle_timer)
        self._stopping = False
        self._rfd, self._wfd = os.pipe()
        os.set_blocking(self._rfd, False)
        os.set_blocking(self._wfd, False)
        self._sel.register(self._rfd, selectors.EVENT_READ, self._drain_wakeup)
        self._signals = {}
        self._pending_signals = collections.deque()
        self._guarded = False  # run() catches each callback's exceptions (run_once() alone does not)
        self._failed_turn = False
        self._logged_at = None
        self._left_out = 0

    # -- descriptors -------------------------------------------------------
    def add_reader(self, fileobj, callback):
        """callback() is called (no arguments) whenever fileobj is readable."""
        self._sel.register(fileobj, selectors.EVENT_READ, callback)

    def remove_reader(self, fileobj):
        try:
            self._sel.unregister(fileobj)
        except (KeyError, ValueError):
            pass

    # -- timers ------------------------------------------------------------
    def call_at(self, deadline, callback):
        self._seq += 1
        entry = [deadline, self._seq, callback, True]
        heapq.heappush(self._timers, entry)
        return entry

    def call_later(self, delay, callback):
        return self.call_at(self.clock() + delay, callback)

    @staticmethod
    def cancel(entry):
        if entry is not None:
            entry[3] = False

    def add_timer_source(self, get_timer, handle_timer):
        """A sans-IO object's timer: get_timer() -> deadline or None;
        handle_timer(now) is called once the deadline has passed."""
        self._sources.append((get_timer, handle_timer))

    def remove_timer_source(self, get_timer):
        self._sources = [s for s in self._sources if s[0] != get_timer]

    # -- cross-thread and signals -------------------------------------------
    def wakeup(self):
        try:
            os.write(self._wfd, b"\0")
        except BlockingIOError:
            pass  # the pipe is full: the loop is going to wake anyway

    def call_soon_threadsafe(self, callback):
        self._soon.append(callback)
        self.wakeup()

    def add_signal_handler(self, signum, callback):
        self._signals[signum] = callback
        signal.signal(signum, self._on_signal)
        signal.set_wakeup_fd(self._wfd, warn_on_full_buffer=False)

    def _on_signal(self, signum, frame):
        self._pending_signals.append(signum)

    def _drain_wakeup(self):
        try:
            while os.read(self._rfd, 4096):
                pass
        except BlockingIOError:
            pass

    # -- running -----------------------------------------------------------
    def stop(self):
        self._stopping = True
        self.wakeup()

    def _next_deadline(self):
        best = None
        while self._timers and not self._timers[0][3]:
            heapq.heappop(self._timers)
        if self._timers:
            best = self._timers[0][0]
        for get_timer, _ in self._sources:
            d = get_timer()
            if d is not None and (best is None or d < best):
                best = d
        return best

    def run_once(self, max_wait=None):
        deadline = self._next_deadline()
        now = self.clock()
        timeout = None if deadline is None else max(0.0, deadline - now)
        if max_wait is not None:
            timeout = max_wait if timeout is None else min(timeout, max_wait)
        if self._soon or self._pending_signals:
            timeout = 0
        call = self._call
        for key, _ in self._sel.select(timeout):
            call(key.data)
        while self._pending_signals:
            signum = self._pending_signals.popleft()
            cb = self._signals.get(signum)
            if cb:
                call(cb)
        while self._soon:
            call(self._soon.popleft())
        now = self.clock()
        while self._timers and (not self._timers[0][3] or self._timers[0][0] <= now):
            entry = heapq.heappop(self._timers)
            if entry[3]:
                entry[3] = False
                call(entry[2])
        for get_timer, handle_timer in list(self._sources):
            d = call(get_timer)
            if d is not None and d <= now:
                call(handle_timer, now)

    def _call(self, fn, *args):
        if not self._guarded:
            return fn(*args)
        try:
            return fn(*args)
        except Exception:
            self._failed_turn = True
            now = time.monotonic()
            if self._logged_at is None or now - self._logged_at >= self.FAIL_LOG_EVERY:
                from .adapters.log import log

                more = " (and %d more since the last report)" % self._left_out if self._left_out else ""
                log.exception("internal error (the daemon keeps running)%s", more)
                self._logged_at, self._left_out = now, 0
            else:
                self._left_out += 1
            return None

    # A callback that fails on every turn (e.g. a reader that raises before it reads)
    # must neither stop the others, nor spin the CPU, nor flood the log: in run(), each
    # callback's exception is caught on its own, the traceback is logged once per
    # FAIL_LOG_EVERY seconds (with a count of the ones left out), and consecutive
    # failing turns pause the loop, doubling from FAIL_PAUSE_MIN to FAIL_PAUSE_MAX.
    FAIL_LOG_EVERY = 30.0
    FAIL_PAUSE_MIN = 0.01
    FAIL_PAUSE_MAX = 0.5

    def run(self):
        """Run until stop(). A callback that raises is logged with its traceback and
        the loop goes on: one bad event must not take the tunnel down."""
        self._stopping = False
        self._guarded = True
        pause = 0.0
        try:
            while not self._stopping:
                self._failed_turn = False
                self._call(self.run_once)
                if not self._failed_turn:
                    pause = 0.0
                    continue
                if pause:
                    time.sleep(pause)
                pause = min(self.FAIL_PAUSE_MAX, max(self.FAIL_PAUSE_MIN, pause * 2))
        finally:
            self._guarded = False

    def close(self):
        self._sel.close()
        for fd in (self._rfd, self._wfd):
            try:
                os.close(fd)
            except OSError:
                pass
