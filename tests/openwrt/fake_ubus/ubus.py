"""STAND-IN for OpenWrt's `ubus` Python binding (python3-ubus), with the same module
API as its README documents: connect(socket_path=...), disconnect(deregister=True),
get_connected(), add(name, {method: {"method": fn, "signature": {...}}}),
listen((event, fn), ...), send(event, data), call(obj, method, args, timeout=0),
objects(), loop(timeout=-1) and the BLOBMSG_TYPE_* constants. The real binding
cannot be built here (no libubus in any registry).

Like the real one it owns one AF_UNIX stream socket connected to the ubus socket
path, and like the real loop(0) its loop(0) handles what is pending on that socket
without blocking. What travels over the socket is NOT the ubus wire protocol: the
test plays ubusd with JSON lines of its own (see FakeUbusd in tests/unit/test_ubus.py):
  ubusd -> client  {"type": "call", "id": N, "method": M, "data": {...}}
                   {"type": "event", "event": E, "data": {...}}
  client -> ubusd  {"type": "reply", "id": N, "status": S, "data": {...}}
                   {"type": "add", "object": NAME, "methods": {m: signature}}
                   {"type": "send", "event": E, "data": {...}}
                   {"type": "listen", "event": E}
call() answers from the module-level CALL_REPLIES table (object, method) -> list and
records the call in CALLS. As in the real binding, a method handler is called only
when the message's arguments match its signature exactly (all present, same types).
"""

import json
import socket

BLOBMSG_TYPE_UNSPEC = 0
BLOBMSG_TYPE_ARRAY = 1
BLOBMSG_TYPE_TABLE = 2
BLOBMSG_TYPE_STRING = 3
BLOBMSG_TYPE_INT64 = 4
BLOBMSG_TYPE_INT32 = 5
BLOBMSG_TYPE_INT16 = 6
BLOBMSG_TYPE_INT8 = 7
BLOBMSG_TYPE_BOOL = 7
BLOBMSG_TYPE_DOUBLE = 8

UBUS_STATUS_OK = 0
UBUS_STATUS_INVALID_ARGUMENT = 2
UBUS_STATUS_METHOD_NOT_FOUND = 3
UBUS_STATUS_UNKNOWN_ERROR = 9

CALLS = []
CALL_REPLIES = {}
EVENTS_SENT = []

_sock = None
_buf = b""
_objects = {}
_listeners = []


def _send(obj):
    _sock.sendall((json.dumps(obj) + "\n").encode())


def connect(socket_path="/var/run/ubus/ubus.sock"):
    global _sock, _buf
    if _sock is not None:
        raise RuntimeError("You are already connected to ubus.")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(socket_path)
    except OSError:
        s.close()
        raise IOError("Failed to connect to the ubus socket '%s'\n" % socket_path)
    s.setblocking(False)
    _sock = s
    _buf = b""
    return True


def get_connected():
    return _sock is not None


def disconnect(deregister=True):
    global _sock
    if _sock is None:
        raise RuntimeError("You are not connected to ubus.")
    _sock.close()
    _sock = None
    _objects.clear()
    del _listeners[:]


def _check_connected():
    if _sock is None:
        raise RuntimeError("You are not connected to ubus.")


def add(object_name, methods):
    _check_connected()
    if not isinstance(object_name, str) or not isinstance(methods, dict):
        raise TypeError("Incorrect method arguments!")
    for name, spec in methods.items():
        if not isinstance(spec, dict) or set(spec) != {"method", "signature"} \
                or not callable(spec["method"]) or not isinstance(spec["signature"], dict):
            raise TypeError("Incorrect method arguments!")
        for arg, t in spec["signature"].items():
            if not isinstance(t, int) or not 0 <= t <= BLOBMSG_TYPE_DOUBLE:
                raise TypeError("Incorrect method arguments!")
    if object_name in _objects:
        raise RuntimeError("ubus error occured: Invalid argument")
    _objects[object_name] = methods
    _send({"type": "add", "object": object_name,
           "methods": {m: s["signature"] for m, s in methods.items()}})


def listen(*events):
    _check_connected()
    for ev in events:
        if not isinstance(ev, tuple) or len(ev) != 2 or not callable(ev[1]):
            raise TypeError("Expected (event, callback) tuple")
        _listeners.append(ev)
        _send({"type": "listen", "event": ev[0]})


def send(event, data):
    _check_connected()
    json.dumps(data)  # like the binding: must serialise
    EVENTS_SENT.append((event, data))
    _send({"type": "send", "event": event, "data": data})
    return True


def call(obj, method, arguments, timeout=0):
    _check_connected()
    json.dumps(arguments)
    CALLS.append((obj, method, arguments, timeout))
    return list(CALL_REPLIES.get((obj, method), []))


def objects(path="*"):
    _check_connected()
    return {n: {m: s["signature"] for m, s in ms.items()} for n, ms in _objects.items()}


class _Handler:
    def __init__(self, rid):
        self.rid = rid
        self.replied = False

    def reply(self, data):
        if self.rid is None:
            raise RuntimeError("Handler is not linked to a call response.")
        json.dumps(data)
        if not isinstance(data, dict):
            raise TypeError("Failed to create json for ubus.")
        _send({"type": "reply", "id": self.rid, "status": UBUS_STATUS_OK, "data": data})
        self.replied = True
        return True


def _type_ok(t, v):
    if t == BLOBMSG_TYPE_UNSPEC:
        return True
    if t == BLOBMSG_TYPE_STRING:
        return isinstance(v, str)
    if t == BLOBMSG_TYPE_BOOL:
        return isinstance(v, bool) or isinstance(v, int)
    if t in (BLOBMSG_TYPE_INT32, BLOBMSG_TYPE_INT64, BLOBMSG_TYPE_INT16):
        return isinstance(v, int) and not isinstance(v, bool)
    if t == BLOBMSG_TYPE_TABLE:
        return isinstance(v, dict)
    if t == BLOBMSG_TYPE_ARRAY:
        return isinstance(v, list)
    return isinstance(v, float)


def _dispatch(msg):
    if msg.get("type") == "call":
        obj = _objects.get(msg.get("object"), {})
        spec = obj.get(msg.get("method"))
        if spec is None:
            _send({"type": "reply", "id": msg.get("id"), "status": UBUS_STATUS_METHOD_NOT_FOUND, "data": None})
            return
        data = msg.get("data") or {}
        sig = spec["signature"]
        if set(data) - set(sig) or set(sig) - set(data) or \
                any(not _type_ok(sig[k], data[k]) for k in sig):
            _send({"type": "reply", "id": msg.get("id"), "status": UBUS_STATUS_INVALID_ARGUMENT, "data": None})
            return
        h = _Handler(msg.get("id"))
        try:
            spec["method"](h, data)
            status = UBUS_STATUS_OK
        except Exception:
            status = UBUS_STATUS_UNKNOWN_ERROR
        h.rid = None
        _send({"type": "done", "id": msg.get("id"), "status": status})
    elif msg.get("type") == "event":
        for name, fn in list(_listeners):
            if name == msg.get("event") or (name.endswith("*") and msg.get("event", "").startswith(name[:-1])):
                try:
                    fn(msg.get("event"), msg.get("data"))
                except Exception:
                    pass


def loop(timeout=-1):
    """timeout 0: handle whatever is pending and return (the only mode the daemon
    uses). Other timeouts block up to timeout ms (-1: until the peer closes)."""
    global _buf
    _check_connected()
    if timeout != 0:
        _sock.settimeout(None if timeout < 0 else timeout / 1000.0)
    try:
        while True:
            try:
                chunk = _sock.recv(65536)
            except (BlockingIOError, socket.timeout):
                break
            if not chunk:
                break
            _buf += chunk
            if timeout != 0:
                break
    finally:
        _sock.setblocking(False)
    while b"\n" in _buf:
        line, _buf = _buf.split(b"\n", 1)
        _dispatch(json.loads(line.decode()))
    return None
