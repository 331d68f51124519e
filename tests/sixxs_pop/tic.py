"""TIC server (TCP 3874): the session logic (TicSession, no sockets) and the listener.

Protocol (sixxs.net/tools/tic; command order as AICCU sends it). Lines end in LF (a CR
before it is dropped); every command gets one status line "<code> <text>", 2xx success,
4xx failure; lists and records are "201 ...", body lines, "202 ...".

    S: 200 <greeting>
    C: client TIC/draft-00 <name>/<version> <os>/<release>   200 Client Identity accepted
    C: get unixtime                                           200 <PoP clock, seconds>
    C: starttls                                               200 ... (then the TLS handshake)
                                                              400 ... when TLS is off
    C: username <nic-hdl>                                     200 Choose your authentication challenge please
    C: challenge md5                                          200 <challenge>
    C: authenticate md5 <md5hex(challenge + md5hex(password))>
                                                              200 Successfully logged in ...
                                                              400 Login failed ...
    C: tunnel list                                            201, "<id> <ipv6> <ipv4> <pop>"..., 202
    C: tunnel show <id>                                       201 / "Key: value" lines / 202
    C: pop list | pop show <pop id>
    C: QUIT [words]                                           200 Thank you ... (then close)

Stages: 'initial' (client, starttls, username) -> 'username' (challenge) -> 'challenge'
(authenticate) -> 'logged' (tunnel, pop). 'get unixtime' and QUIT work in every stage.
An unknown user fails at 'authenticate' like a wrong password (no user enumeration);
every challenge is good for one attempt. With tic_tls 'require', 'username' before
STARTTLS is refused. After the STARTTLS answer the server discards any plain bytes the
client pipelined behind the command (the STARTTLS command-injection defence).

Faults (set_fault tic=...): 'refuse' answers the connection with a 400 line and closes,
'close' closes at once, 'silent' accepts and never says anything, 'inject_after_starttls'
sends an extra plain status line right behind the STARTTLS answer (a client must not
trust it).

Secrets: passwords, challenges' answers and tunnel passwords never reach the log or
state(); the session record keeps the command words only.
"""

import os
import select
import socket
import ssl
import threading
import time

from .wire import md5hex, tic_md5_response

MAX_LINE = 1024
STAGES = ("initial", "username", "challenge", "logged")


class TicSession:
    """One TIC conversation. feed_line(bytes) -> list of (kind, value):
    ('line', text) to send, ('starttls', None) to switch to TLS now, ('close', None)."""

    def __init__(self, pop, peer, tls_available):
        self.pop = pop
        self.cfg = pop.config
        self.peer = peer
        self.tls_available = tls_available
        self.tls = False
        self.stage = "initial"
        self.user = None
        self.challenge = None
        self.account = None
        self.closed = False
        self.record = {
            "peer": peer,
            "started": round(pop.wall(), 3),
            "client": None,
            "tls": False,
            "username": None,
            "auth": None,
            "commands": [],
            "end": None,
        }

    # ---- entry points ----------------------------------------------------------------
    def greeting(self):
        return [("line", "200 " + self.cfg.greeting)]

    def tls_started(self):
        self.tls = True
        self.record["tls"] = True

    def feed_line(self, raw):
        if self.closed:
            return []
        raw = bytes(raw)
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if len(raw) > MAX_LINE:
            self._end("line too long")
            return [("line", "400 Line too long, goodbye"), ("close", None)]
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            self._note("?")
            return [("line", "400 Line is not UTF-8 text")]
        if any(ord(c) < 32 and c != "\t" or ord(c) == 127 for c in line):
            self._note("?")
            return [("line", "400 Line contains control characters")]
        words = line.split()
        if not words:
            return []
        return self._command(words)

    # ---- helpers ---------------------------------------------------------------------
    def _note(self, word):
        cmds = self.record["commands"]
        if len(cmds) < 64:
            cmds.append(word)

    def _end(self, how):
        self.closed = True
        if self.record["end"] is None:
            self.record["end"] = how

    @staticmethod
    def _ok(text):
        return [("line", "200 " + text)]

    @staticmethod
    def _fail(text):
        return [("line", "400 " + text)]

    # ---- dispatch --------------------------------------------------------------------
    def _command(self, words):
        cmd = words[0].lower()
        sub = words[1].lower() if len(words) > 1 else ""
        self._note(
            cmd
            if cmd not in ("get", "tunnel", "pop", "challenge", "authenticate")
            else "%s %s" % (cmd, sub[:16])
        )
        if cmd == "quit":
            self._end("quit")
            return [("line", "200 Thank you for using this SixXS-style TIC service"), ("close", None)]
        if cmd == "get":
            if sub == "unixtime" and len(words) == 2:
                return self._ok("%d" % int(self.pop.wall()))
            return self._fail("Unknown 'get' command, try 'get unixtime'")
        handler = {
            "client": self._client,
            "starttls": self._starttls,
            "username": self._username,
            "challenge": self._challenge,
            "authenticate": self._authenticate,
            "tunnel": self._tunnel,
            "pop": self._pop,
        }.get(cmd)
        if handler is None:
            return self._fail("Unknown command")
        return handler(words)

    def _client(self, words):
        if self.stage != "initial":
            return self._fail("Client identity must be given before logging in")
        if len(words) < 2 or not words[1].upper().startswith("TIC/"):
            return self._fail(
                "Client identity must be 'client TIC/<version> <name>/<version> <os>/<version>'"
            )
        self.record["client"] = " ".join(words[1:])[:120]
        return self._ok("Client Identity accepted")

    def _starttls(self, words):
        if len(words) != 1:
            return self._fail("starttls takes no arguments")
        if self.tls:
            return self._fail("TLS is already active")
        if self.stage != "initial":
            return self._fail("starttls must come before username")
        if not self.tls_available:
            return self._fail("This service is not SSL enabled (yet)")
        self.pop.tic_count("starttls")
        out = [("line", "200 You can start the TLS/SSL handshake now")]
        if self.pop.faults.get("tic") == "inject_after_starttls":
            out.append(("inject", "200 injected in plain text after starttls"))
        out.append(("starttls", None))
        return out

    def _username(self, words):
        if self.stage not in ("initial", "username"):
            return self._fail("Already logged in or authenticating")
        if len(words) != 2:
            return self._fail("Usage: username <nic-hdl>")
        if self.cfg.tic_tls == "require" and self.tls_available and not self.tls:
            return self._fail("TLS is required: issue starttls first")
        self.user = words[1][:64]
        self.record["username"] = self.user
        self.stage = "username"
        return self._ok("Choose your authentication challenge please")

    def _challenge(self, words):
        if self.stage not in ("username", "challenge"):
            return self._fail("Give your username first")
        if len(words) != 2:
            return self._fail("Usage: challenge clear|md5|cookie")
        if words[1].lower() != "md5":
            return self._fail("Challenge type '%s' is not supported here, use md5" % words[1][:16])
        self.challenge = md5hex(os.urandom(16))
        self.stage = "challenge"
        return self._ok(self.challenge)

    def _authenticate(self, words):
        if self.stage != "challenge" or self.challenge is None:
            return self._fail("Ask for a challenge first")
        challenge, self.challenge = self.challenge, None  # one attempt per challenge
        self.stage = "username"
        if len(words) != 3 or words[1].lower() != "md5":
            self.record["auth"] = "failed"
            self.pop.tic_count("auth_failed")
            return self._fail("Usage: authenticate md5 <response>")
        acct = self.pop.accounts.get((self.user or "").lower())
        # compare against a dummy for unknown users, same work, same answer
        want = tic_md5_response(challenge, acct.password_md5 if acct else md5hex(os.urandom(8)))
        if acct is None or not _consteq(want, words[2].lower()):
            self.record["auth"] = "failed"
            self.pop.tic_count("auth_failed")
            self.pop.log("tic %s: login failed for %r" % (self.peer, self.user))
            return self._fail("Login failed, login/password mismatch")
        self.account = acct
        self.stage = "logged"
        self.record["auth"] = "ok"
        self.pop.tic_count("auth_ok")
        self.pop.log("tic %s: %s logged in%s" % (self.peer, acct.username, " (TLS)" if self.tls else ""))
        return self._ok(
            "Successfully logged in using md5 as %s (%s) at %d"
            % (acct.username, self.peer, int(self.pop.wall()))
        )

    def _need_login(self):
        if self.stage != "logged":
            return self._fail("You are not logged in")
        return None

    def _tunnel(self, words):
        refused = self._need_login()
        if refused:
            return refused
        sub = words[1].lower() if len(words) > 1 else ""
        if sub == "list" and len(words) == 2:
            out = [("line", "201 Listing tunnels")]
            for spec in self.account.tunnels:
                if spec.type == "6in4-static":
                    v4 = str(spec.endpoint)
                else:
                    v4 = "heartbeat" if spec.type == "6in4-heartbeat" else "ayiya"
                out.append(("line", "%s %s %s %s" % (spec.id, spec.client_v6.ip, v4, self.cfg.pop_id)))
            out.append(("line", "202 <tunnel_id> <ipv6_endpoint> <ipv4_endpoint> <pop_name>"))
            return out
        if sub == "show" and len(words) == 3:
            spec = None
            for s in self.account.tunnels:
                if s.id.lower() == words[2].lower():
                    spec = s
            if spec is None:
                return self._fail("Unknown tunnel endpoint")
            self.pop.tic_count("tunnel_shows")
            return [("line", x) for x in self._show_lines(spec)]
        return self._fail("Usage: tunnel list | tunnel show <tunnel-id>")

    def _show_lines(self, spec):
        if spec.type == "6in4-static":
            v4 = str(spec.endpoint)
        elif spec.type == "6in4-heartbeat":
            v4 = "heartbeat"
        else:
            v4 = "ayiya"
        lines = [
            "201 Showing tunnel information for %s" % spec.id,
            "TunnelId: %s" % spec.id,
            "Type: %s" % spec.type,
            "IPv6 Endpoint: %s" % spec.client_v6.ip,
            "IPv6 POP: %s" % spec.pop_v6,
            "IPv6 PrefixLength: %d" % spec.client_v6.network.prefixlen,
            "Tunnel MTU: %d" % spec.mtu,
            "Tunnel Name: %s" % (spec.name or spec.id),
            "POP Id: %s" % self.cfg.pop_id,
            "IPv4 Endpoint: %s" % v4,
            "IPv4 POP: %s" % self.cfg.pop_ipv4,
            "UserState: %s" % spec.user_state,
            "AdminState: %s" % spec.admin_state,
        ]
        if spec.type != "6in4-static":
            lines.append("Password: %s" % spec.password)
            lines.append("Heartbeat_Interval: %d" % spec.heartbeat_interval)
        lines.append("202 Done")
        return lines

    def _pop(self, words):
        refused = self._need_login()
        if refused:
            return refused
        sub = words[1].lower() if len(words) > 1 else ""
        if sub == "list" and len(words) == 2:
            return [("line", "201 Listing PoPs"), ("line", self.cfg.pop_id), ("line", "202 <pop_name>")]
        if sub == "show" and len(words) == 3:
            if words[2].lower() != self.cfg.pop_id.lower():
                return self._fail("Unknown PoP")
            return [
                ("line", "201 Showing PoP information for %s" % self.cfg.pop_id),
                ("line", "POP Id: %s" % self.cfg.pop_id),
                ("line", "City: Lab"),
                ("line", "Country: Documentation"),
                ("line", "IPv4: %s" % self.cfg.pop_ipv4),
                ("line", "Heartbeat Support: Y"),
                ("line", "AYIYA Support: Y"),
                ("line", "202 Done"),
            ]
        return self._fail("Usage: pop list | pop show <pop-name>")


def _consteq(a, b):
    import hmac

    return hmac.compare_digest(a.encode("ascii", "replace"), b.encode("ascii", "replace"))


class TicServer:
    """TCP listener; one thread per connection."""

    def __init__(self, pop, ssl_context=None):
        self.pop = pop
        self.cfg = pop.config
        self.ssl_context = ssl_context
        self.sock = None
        self.thread = None
        self._stop = False
        self._conns = set()
        self._lock = threading.Lock()

    def start(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((self.cfg.listen, self.cfg.tic_port))
        s.listen(32)
        s.settimeout(0.1)
        self.sock = s
        self.thread = threading.Thread(target=self._accept_loop, name="tic", daemon=True)
        self.thread.start()
        self.pop.log(
            "tic listening on %s:%d (tls %s)" % (self.cfg.listen, self.cfg.tic_port, self.cfg.tic_tls)
        )

    def stop(self):
        self._stop = True
        if self.thread is not None:
            self.thread.join(3)
        if self.sock is not None:
            self.sock.close()
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _accept_loop(self):
        while not self._stop:
            try:
                conn, addr = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                if self._stop:
                    return
                time.sleep(0.05)
                continue
            threading.Thread(target=self._serve, args=(conn, addr[0]), name="tic-conn", daemon=True).start()

    def _serve(self, conn, peer):
        with self._lock:
            self._conns.add(conn)
        try:
            self._conversation(conn, peer)
        except (OSError, ssl.SSLError) as exc:
            self.pop.log("tic %s: connection error: %s" % (peer, exc))
        finally:
            with self._lock:
                self._conns.discard(conn)
            try:
                conn.close()
            except OSError:
                pass

    def _conversation(self, conn, peer):
        pop = self.pop
        fault = pop.faults.get("tic", "none")
        sess = TicSession(pop, peer, self.ssl_context is not None)
        pop.tic_session_started(sess.record)
        if fault in ("refuse", "close", "silent"):
            pop.tic_count("refused")
            sess._end("fault " + fault)
            pop.log("tic %s: fault %s" % (peer, fault))
            if fault == "refuse":
                conn.sendall(b"400 TIC service temporarily unavailable, try again later\n")
            elif fault == "silent":
                _drain_until_closed(conn, self.cfg.tic_idle_timeout, lambda: self._stop)
            return
        holder = [conn]
        try:
            self._lines(conn, peer, sess, holder)
        finally:
            if holder[0] is not conn:
                with self._lock:
                    self._conns.discard(holder[0])
                try:
                    holder[0].close()
                except OSError:
                    pass

    def _lines(self, conn, peer, sess, holder):
        pop = self.pop
        sock = conn
        sock.settimeout(self.cfg.tic_idle_timeout)
        _send(sock, sess.greeting())
        buf = b""
        while not sess.closed and not self._stop:
            try:
                chunk = sock.recv(4096)
            except socket.timeout:
                sess._end("idle timeout")
                return
            if not chunk:
                sess._end("eof")
                return
            buf += chunk
            while not sess.closed:
                i = buf.find(b"\n")
                if i < 0:
                    if len(buf) > MAX_LINE:
                        _send(sock, [("line", "400 Line too long, goodbye")])
                        sess._end("line too long")
                        return
                    break
                line, buf = buf[:i], buf[i + 1 :]
                actions = sess.feed_line(line)
                _send(sock, actions)
                if any(k == "starttls" for k, _v in actions):
                    if buf:  # plain bytes pipelined behind 'starttls' must not be obeyed
                        pop.log("tic %s: discarding %d plain bytes sent behind starttls" % (peer, len(buf)))
                        buf = b""
                    try:
                        sock = self.ssl_context.wrap_socket(sock, server_side=True)
                    except (OSError, ssl.SSLError) as exc:
                        sess._end("tls failed")
                        pop.log("tic %s: TLS handshake failed: %s" % (peer, exc))
                        return
                    holder[0] = sock
                    sess.tls_started()
                    with self._lock:
                        self._conns.add(sock)
                    break


def _send(sock, actions):
    out = []
    for kind, value in actions:
        if kind in ("line", "inject"):
            out.append(value.encode("utf-8") + b"\n")
    if out:
        sock.sendall(b"".join(out))


def _drain_until_closed(conn, limit, stopping):
    deadline = time.monotonic() + limit
    conn.setblocking(False)
    while not stopping() and time.monotonic() < deadline:
        r, _, _ = select.select([conn], [], [], 0.1)
        if r:
            try:
                if not conn.recv(4096):
                    return
            except BlockingIOError:
                continue
            except OSError:
                return
