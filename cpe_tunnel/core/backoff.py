# Capped, jittered exponential backoff (sans-IO: randomness is passed in).
#
# Rules:
# - The n-th delay (n = attempts so far, starting at 0) is based on
#   base_n = min(max_delay, min_delay * factor ** n).
# - Jitter takes away up to a fraction `jitter` of it: delay = base_n * (1 - jitter * r)
#   with r = rand() in [0, 1), so the delay lies in (base_n * (1 - jitter), base_n].
#   Spreading retries downwards keeps max_delay a real upper bound, and clients that
#   failed together (a broker outage) do not come back together.
# - The result is never below min_delay and never above max_delay.
# - reset() (after a success) starts again at min_delay. `attempts` counts the delays
#   handed out since the last reset.

from cpe_tunnel.core.errors import LocalProtocolError


class Backoff:
    def __init__(self, min_delay, max_delay, rand, factor=2.0, jitter=0.5):
        if not (min_delay > 0):
            raise LocalProtocolError("backoff: min_delay must be above 0")
        if max_delay < min_delay:
            raise LocalProtocolError("backoff: max_delay must not be below min_delay")
        if factor < 1:
            raise LocalProtocolError("backoff: factor must be 1 or more")
        if jitter < 0 or jitter > 1:
            raise LocalProtocolError("backoff: jitter must be between 0 and 1")
        if not callable(rand):
            raise LocalProtocolError("backoff: rand must be a callable returning a float in [0, 1)")
        self.min_delay = float(min_delay)
        self.max_delay = float(max_delay)
        self.factor = float(factor)
        self.jitter = float(jitter)
        self._rand = rand
        self._base = self.min_delay
        self.attempts = 0

    def next_delay(self):
        """The delay before the next attempt; each call counts one attempt."""
        base = self._base
        r = self._rand()
        # A misbehaving rand() must not produce a negative or huge delay.
        if not (r >= 0.0):  # also catches NaN
            r = 0.0
        elif r >= 1.0:
            r = 1.0
        d = base * (1.0 - self.jitter * r)
        if d < self.min_delay:
            d = self.min_delay
        if d > self.max_delay:
            d = self.max_delay
        nxt = base * self.factor
        self._base = self.max_delay if nxt > self.max_delay else nxt
        self.attempts += 1
        return d

    def peek_base(self):
        """The un-jittered delay the next call would be based on."""
        return self._base

    def reset(self):
        self._base = self.min_delay
        self.attempts = 0

    def __repr__(self):
        return "Backoff(%g..%g, attempts=%d)" % (self.min_delay, self.max_delay, self.attempts)
