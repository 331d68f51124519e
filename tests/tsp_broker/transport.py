"""TSP control transports, broker side, without sockets: the reliable-UDP layer and the
TCP stream layer in front of session.Session.

UDP (RFC 5572 section 3.1.2 framing, as tsps answers in the gogoc-tsps capture):
- an answer carries the 8-byte header of the request it answers, unchanged;
- a request whose sequence number equals the last one seen from that address and port
  is a retransmission: it gets the same answer again (from the cache), and the session
  does not see it twice;
- an older sequence number is stale and ignored, except a VERSION line (a client
  starting over on the same port);
- faults: drop_in discards a request unseen (the client's retransmission will be
  answered), drop_out processes a request but withholds the answer (the client's
  retransmission gets the cached answer).
TCP: messages are split from the stream (wire.split_stream); answers are written as
they are; the connection closes after a final answer (session.closed).
"""

import threading

from . import wire
from .session import Session


class UdpControl:
    def __init__(self, registry, nonce_source, log=None, max_sessions=4096):
        self.reg = registry
        self._nonce_source = nonce_source
        self._log = log
        self.max_sessions = max_sessions
        self.lock = threading.Lock()
        self.sessions = {}  # (ip, port) -> [Session, last_seq, last_answer]

    def datagram(self, data, peer, now):
        """A control datagram from peer (ip, port): the datagram to send back, or None."""
        reg = self.reg
        try:
            header, seq, _ts, payload = wire.split_control(data)
        except wire.WireError:
            reg.count_drop("control_junk")
            return None
        reg.count("control_in")
        if reg.take_drop("in"):
            reg.count("dropped_in")
            return None
        with self.lock:
            entry = self.sessions.get(peer)
            if entry is not None and seq == entry[1]:
                reg.count("duplicates")
                answer = entry[2]
            else:
                try:
                    kind, body = wire.decode_udp_message(payload)
                except wire.WireError as exc:
                    kind, body, bad = None, None, exc
                else:
                    bad = None
                is_version = kind == "line" and body.lstrip(b"\x00").startswith(b"VERSION=")
                if entry is not None and not is_version and ((seq - entry[1]) & 0x0FFFFFFF) >= 0x08000000:
                    reg.count("stale")
                    return None
                if entry is None:
                    if len(self.sessions) >= self.max_sessions:
                        self._evict_oldest()
                    entry = [Session(reg, "udp", peer, now, self._nonce_source, self._log), seq, b""]
                    self.sessions[peer] = entry
                    reg.count("sessions")
                session = entry[0]
                if bad is not None:
                    if self._log:
                        self._log("%s:%d: malformed message: %s" % (peer[0], peer[1], bad))
                    answer = session._fail(bad.code, framed=session.state in ("REQUEST", "ACCEPT"))
                else:
                    answer = session.handle(kind, body, now)
                entry[1] = seq
                entry[2] = answer
        if reg.take_drop("out"):
            reg.count("dropped_out")
            return None
        reg.count("control_out")
        return header + answer

    def _evict_oldest(self):
        oldest = min(self.sessions, key=lambda k: self.sessions[k][0].last)
        del self.sessions[oldest]

    def expire(self, now, idle):
        with self.lock:
            for k in [k for k, e in self.sessions.items() if now - e[0].last > idle]:
                del self.sessions[k]

    def info(self):
        with self.lock:
            return [e[0].info() for e in self.sessions.values()]


class TcpStream:
    """One TCP connection's control session: feed(bytes, now) -> bytes to write.
    `done` is set when the connection should be closed after writing."""

    MAX_BUFFER = wire.MAX_MESSAGE + 4096

    def __init__(self, registry, peer, now, nonce_source, log=None):
        self.reg = registry
        self.session = Session(registry, "tcp", peer, now, nonce_source, log)
        self._log = log
        self.buf = b""
        self.done = False

    def feed(self, data, now):
        if self.done:
            return b""
        self.reg.count("tcp_bytes_in", len(data))
        self.buf += data
        out = []
        while not self.done:
            try:
                got = wire.split_stream(self.buf)
            except wire.WireError as exc:
                if self._log:
                    self._log("tcp %s:%d: %s" % (self.session.peer[0], self.session.peer[1], exc))
                out.append(self.session._fail(exc.code, framed=self.session.state in ("REQUEST", "ACCEPT")))
                self.done = True
                break
            if got is None:
                if len(self.buf) > self.MAX_BUFFER:
                    out.append(self.session._fail(500))
                    self.done = True
                break
            (kind, body), self.buf = got
            out.append(self.session.handle(kind, body, now))
            if self.session.closed:
                self.done = True
        return b"".join(out)
