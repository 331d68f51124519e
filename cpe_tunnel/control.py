"""Local control socket: the same methods as the ubus object `cpe_tunnel`
(status, reconnect, reload, clock_set - the table is daemon.py's), for systems
without ubus and for the CLI.

Wire format: one JSON object per line. Request {"method": "status", "args": {}};
answer {"ok": true, "result": {...}} or {"ok": false, "error": "plain words"}.
One request per connection; the server never blocks on a slow client (non-blocking
sockets in the daemon's loop, bounded request size, idle connections dropped).
"""

import json
import os
import socket
import stat

MAX_REQUEST = 4096
CLIENT_TIMEOUT = 5.0


class ControlServer:
    def __init__(self, loop, path, methods, mode=0o660):
        """methods: dict name -> callable(args dict) -> result (JSON-able)."""
        self.loop = loop
        self.path = path
        self.methods = methods
        self._clients = {}
        d = os.path.dirname(path)
        if d:
            os.makedirs(d, exist_ok=True)
        try:
            if stat.S_ISSOCK(os.lstat(path).st_mode):
                os.unlink(path)
        except FileNotFoundError:
            pass
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o777 & ~mode)
        try:
            self.sock.bind(path)
        finally:
            os.umask(old)
        self.sock.listen(8)
        self.sock.setblocking(False)
        loop.add_reader(self.sock, self._accept)

    def _accept(self):
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        conn.setblocking(False)
        state = {"buf": b"", "timer": None}
        self._clients[conn] = state
        state["timer"] = self.loop.call_later(CLIENT_TIMEOUT, lambda: self._drop(conn))
        self.loop.add_reader(conn, lambda: self._read(conn))

    def _drop(self, conn):
        st = self._clients.pop(conn, None)
        if st is None:
            return
        self.loop.cancel(st["timer"])
        self.loop.remove_reader(conn)
        conn.close()

    def _read(self, conn):
        st = self._clients.get(conn)
        if st is None:
            return
        try:
            data = conn.recv(MAX_REQUEST)
        except BlockingIOError:
            return
        except OSError:
            self._drop(conn)
            return
        if not data:
            self._drop(conn)
            return
        st["buf"] += data
        if b"\n" not in st["buf"]:
            if len(st["buf"]) >= MAX_REQUEST:
                self._reply(conn, {"ok": False, "error": "request too long"})
            return
        line = st["buf"].split(b"\n", 1)[0]
        self._reply(conn, self.dispatch(line))

    def dispatch(self, line):
        try:
            req = json.loads(line.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            return {"ok": False, "error": "request is not valid JSON"}
        if not isinstance(req, dict) or not isinstance(req.get("method"), str):
            return {"ok": False, "error": "request needs a 'method'"}
        fn = self.methods.get(req["method"])
        if fn is None:
            return {"ok": False, "error": "unknown method '%s' (known: %s)" % (
                req["method"][:40], ", ".join(sorted(self.methods)))}
        args = req.get("args") or {}
        if not isinstance(args, dict):
            return {"ok": False, "error": "'args' must be an object"}
        try:
            return {"ok": True, "result": fn(args)}
        except Exception as exc:  # a failing method must not take the daemon down
            return {"ok": False, "error": "%s failed: %s" % (req["method"], exc)}

    def _reply(self, conn, obj):
        data = (json.dumps(obj) + "\n").encode()
        try:
            conn.setblocking(True)
            conn.settimeout(1.0)
            conn.sendall(data)
        except OSError:
            pass
        self._drop(conn)

    def close(self):
        for conn in list(self._clients):
            self._drop(conn)
        self.loop.remove_reader(self.sock)
        self.sock.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass


class ControlError(Exception):
    pass


def call(path, method, args=None, timeout=CLIENT_TIMEOUT):
    """Client side: returns the result or raises ControlError (daemon unreachable
    or the method failed)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        try:
            s.connect(path)
        except OSError as exc:
            raise ControlError("cannot reach the daemon at %s: %s" % (path, exc.strerror or exc))
        s.sendall((json.dumps({"method": method, "args": args or {}}) + "\n").encode())
        buf = b""
        while b"\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    except OSError as exc:
        raise ControlError("lost the daemon at %s: %s" % (path, exc))
    finally:
        s.close()
    try:
        ans = json.loads(buf.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise ControlError("the daemon sent an answer that is not JSON")
    if not ans.get("ok"):
        raise ControlError(ans.get("error") or "the daemon refused the request")
    return ans.get("result")
