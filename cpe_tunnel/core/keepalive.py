# NAT keepalive and peer liveness over ICMPv6 echo (sans-IO, MicroPython compatible).
#
# Rules (times are float seconds from the caller's monotonic clock; last_tx is the time
# the tunnel last sent anything, or None):
# - interval 0 disables everything: no echoes, no timer, alive None.
# - The first echo goes out at once (first handle_timer, or after reset(now)) so liveness
#   is known soon after the tunnel comes up.
# - Quiet link: an echo is due when nothing went out for `interval` seconds, counted from
#   max(last_tx, last echo sent). While traffic flows no echo is sent (the NAT state is
#   refreshed anyway); alive keeps its last value.
# - Optional last_rx (time the tunnel last received anything): when given, an echo is
#   also due when nothing came in for `interval` seconds, counted from max(last_rx, last
#   echo sent), so a peer that died under outbound-only traffic is still noticed. Inbound
#   traffic does not count as a reply: alive changes only with echo replies.
# - Each echo gets an answer timeout, fixed at the time it is sent, to be answered. An
#   echo not answered in time is a miss. After a miss the link is probed again at once
#   and then every answer timeout, traffic or not, until a reply arrives.
# - The answer timeout: `answer_timeout` when the caller fixes it; else it adapts to the
#   round trips measured, like TCP's retransmission timeout (RFC 6298): srtt + 4 rttvar,
#   at least MIN_ANSWER_TIMEOUT (1 s, RFC 4861's RetransTimer), at most min(interval, 5 s),
#   which is also the value before the first answer. A link with millisecond round trips
#   is thus declared dead about interval + 3 s after it died, one with a slow or
#   bufferbloated path gets the time it needs (late answers also count: see below).
# - `misses_allowed` misses in a row mark the peer not alive; any reply (also a late one
#   to one of the last few echoes) marks it alive and ends the probing.
# - Sequence numbers count up from 1 and wrap at 16 bits.

from cpe_tunnel.core.errors import LocalProtocolError

DEFAULT_ANSWER_TIMEOUT = 5  # the cap, and the timeout before any round trip was measured
MIN_ANSWER_TIMEOUT = 1
_REMEMBER = 8  # echoes remembered for late replies


class Keepalive:
    def __init__(self, interval, misses_allowed=3, ident=0, answer_timeout=None):
        if (not isinstance(interval, (int, float))) or isinstance(interval, bool) or interval < 0:
            raise LocalProtocolError("keepalive interval must be a number >= 0")
        if not isinstance(misses_allowed, int) or isinstance(misses_allowed, bool) or misses_allowed < 1:
            raise LocalProtocolError("misses_allowed must be an integer >= 1")
        if not isinstance(ident, int) or isinstance(ident, bool) or not 0 <= ident <= 0xFFFF:
            raise LocalProtocolError("echo identifier must be an integer from 0 to 65535")
        if answer_timeout is not None and ((not isinstance(answer_timeout, (int, float)))
                                           or isinstance(answer_timeout, bool) or answer_timeout <= 0):
            raise LocalProtocolError("answer timeout must be a number > 0")
        self.interval = interval
        self.misses_allowed = misses_allowed
        self.ident = ident
        self.fixed_timeout = answer_timeout
        self.max_timeout = interval if interval < DEFAULT_ANSWER_TIMEOUT else DEFAULT_ANSWER_TIMEOUT
        self.reset(None)

    @property
    def answer_timeout(self):
        """The time the next echo gets to be answered (seconds)."""
        if self.fixed_timeout is not None:
            return self.fixed_timeout
        if self.srtt is None:
            return self.max_timeout
        t = self.srtt + 4 * self.rttvar
        if t < MIN_ANSWER_TIMEOUT:
            t = MIN_ANSWER_TIMEOUT
        return t if t < self.max_timeout else self.max_timeout

    def reset(self, now):
        """Forget all history (tunnel re-established); the next echo is due at once."""
        self.alive = None
        self.sent = 0
        self.answered = 0
        self.missed_in_a_row = 0
        self.rtt_ms = None
        self.srtt = self.rttvar = None  # seconds (RFC 6298)
        self._last_reply = None
        self._last_echo = None
        self._seq = 0
        # [seq, sent_at, counted_as_missed, answer deadline], oldest first
        self._echoes = []

    @property
    def enabled(self):
        return self.interval > 0

    def _in_flight(self):
        for e in self._echoes:
            if not e[2]:
                return e
        return None

    def _quiet_deadline(self, last_tx, last_rx):
        base = self._last_echo
        if last_tx is not None and last_tx > base:
            base = last_tx
        t = base + self.interval
        if last_rx is not None:
            rbase = last_rx if last_rx > self._last_echo else self._last_echo
            if rbase + self.interval < t:
                t = rbase + self.interval
        return t

    def get_timer(self, last_tx=None, last_rx=None):
        """Earliest deadline (send an echo or time one out), None when disabled.
        0.0 (already due) before the first echo."""
        if not self.enabled:
            return None
        if self._last_echo is None:
            return 0.0
        e = self._in_flight()
        if e is not None:
            # waiting for an answer; the quiet deadline is never earlier than this
            return e[3]
        if self.missed_in_a_row:
            return self._last_echo + self.answer_timeout
        return self._quiet_deadline(last_tx, last_rx)

    def handle_timer(self, now, last_tx=None, last_rx=None):
        """Sequence numbers of echoes to send now (zero or one)."""
        if not self.enabled:
            return []
        for e in self._echoes:
            if not e[2] and now >= e[3]:
                e[2] = True
                self.missed_in_a_row += 1
                if self.missed_in_a_row >= self.misses_allowed:
                    self.alive = False
        if self._in_flight() is not None:
            return []
        if self._last_echo is None:
            due = True
        elif self.missed_in_a_row:
            due = now >= self._last_echo + self.answer_timeout
        else:
            due = now >= self._quiet_deadline(last_tx, last_rx)
        if not due:
            return []
        self._seq = (self._seq + 1) & 0xFFFF
        self._echoes.append([self._seq, now, False, now + self.answer_timeout])
        if len(self._echoes) > _REMEMBER:
            self._echoes = self._echoes[len(self._echoes) - _REMEMBER:]
        self._last_echo = now
        self.sent += 1
        return [self._seq]

    def on_echo_reply(self, now, seq):
        """An echo reply with our identifier arrived. True when it answers one of our
        recent echoes (each is counted once), False otherwise."""
        for i in range(len(self._echoes)):
            e = self._echoes[i]
            if e[0] == seq:
                self._echoes = self._echoes[:i] + self._echoes[i + 1:]
                self.answered += 1
                self.missed_in_a_row = 0
                self.alive = True
                self._last_reply = now
                rtt = now - e[1]
                if rtt < 0:
                    rtt = 0.0
                self.rtt_ms = rtt * 1000.0
                if self.srtt is None:
                    self.srtt, self.rttvar = rtt, rtt / 2
                else:
                    d = self.srtt - rtt
                    self.rttvar = 0.75 * self.rttvar + 0.25 * (d if d >= 0 else -d)
                    self.srtt = 0.875 * self.srtt + 0.125 * rtt
                return True
        return False

    def status(self, now):
        return {
            "enabled": self.enabled,
            "interval": self.interval,
            "alive": self.alive,
            "last_reply_age": None if self._last_reply is None else now - self._last_reply,
            "rtt_ms": self.rtt_ms,
            "sent": self.sent,
            "answered": self.answered,
            "missed_in_a_row": self.missed_in_a_row,
            "answer_timeout": self.answer_timeout,
        }
