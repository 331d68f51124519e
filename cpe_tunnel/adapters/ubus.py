"""The ubus object `cpe_tunnel` (methods status, reconnect, reload; event
`cpe_tunnel.state` on every state change) and the subscription to netifd's
`network.interface` events, through the `ubus` Python binding (OpenWrt package
python3-ubus, https://gitlab.nic.cz/turris/python-ubus) when it imports. Without it
every method here is a no-op and the local control socket (control.py) serves the
same methods.

The binding's documented API, which is all this module uses:
  ubus.connect(socket_path=...)            one module-wide connection
  ubus.add(name, {method: {"method": fn, "signature": {arg: ubus.BLOBMSG_TYPE_*}}})
      fn(handler, data) answers with handler.reply(dict) inside the call
  ubus.listen((event, fn), ...)            fn(event, data)
  ubus.send(event, dict)
  ubus.call(object, method, dict, timeout=ms) -> [reply dicts]
  ubus.loop(timeout=-1)                    timeout in ms; 0 handles what is pending
                                           on the socket and returns at once
  ubus.disconnect(deregister=True)

Loop integration: the binding exposes no file descriptor, but it owns exactly one
socket, connected to ubusd. We find it by comparing /proc/self/fd before and after
connect() (a new AF_UNIX socket whose peer is the ubus socket path), register it in
our selectors loop and call ubus.loop(0) when it is readable: no second thread, no
polling, and method calls run in the loop thread like every other event. If the
descriptor cannot be identified, the least bad fallback is ubus.loop(0) from a
timer every POLL_INTERVAL seconds (ubus.loop(-1) in a thread would run our methods
in that thread, against the supervisor's state). When ubusd goes away the
connection is dropped and re-made with backoff; the object and the event
subscription are registered again.

Replies and events are JSON objects: None values are left out (blobmsg has no
null), non-dict results are wrapped as {"result": value}.
"""

import os
import socket
import stat

from .log import log

OBJECT_NAME = "cpe_tunnel"
STATE_EVENT = "cpe_tunnel.state"
DEFAULT_SOCKETS = ("/var/run/ubus/ubus.sock", "/var/run/ubus.sock")
POLL_INTERVAL = 0.25
RETRY_MIN = 2.0
RETRY_MAX = 60.0
CALL_TIMEOUT_MS = 5000


def import_binding():
    """The `ubus` module, or None when it is not installed (or broken)."""
    try:
        import ubus  # OpenWrt python3-ubus
    except Exception:
        return None
    return ubus


def clean(obj, depth=0):
    """obj without None values (recursively), for blobmsg."""
    if depth > 32:
        return None
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if v is None:
                continue
            v = clean(v, depth + 1)
            if v is not None:
                out[str(k)] = v
        return out
    if isinstance(obj, (list, tuple)):
        return [clean(v, depth + 1) for v in obj if v is not None]
    return obj


def _open_fds():
    """The open descriptors, without the one used to list them."""
    try:
        dfd = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return set()
    try:
        return {int(n) for n in os.listdir(dfd)} - {dfd}
    finally:
        os.close(dfd)


def _unix_peer(fd):
    """The peer path of an AF_UNIX stream socket fd, or None."""
    try:
        if not stat.S_ISSOCK(os.fstat(fd).st_mode):
            return None
        s = socket.socket(fileno=os.dup(fd))
    except OSError:
        return None
    try:
        if s.family != socket.AF_UNIX or s.type != socket.SOCK_STREAM:
            return None
        peer = s.getpeername()
        if isinstance(peer, bytes):
            peer = peer.decode("utf-8", "replace")
        return peer
    except OSError:
        return None
    finally:
        s.close()


def find_socket_fd(new_fds, paths):
    """The one fd among new_fds connected to one of paths, else None."""
    found = [fd for fd in sorted(new_fds) if _unix_peer(fd) in paths]
    return found[0] if len(found) == 1 else None


def _peer_closed(fd):
    try:
        s = socket.socket(fileno=os.dup(fd))
    except OSError:
        return True
    try:
        return s.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True
    finally:
        s.close()


class UbusService:
    """methods: dict name -> callable(args dict) -> result, the same table the
    control socket serves. on_interface_event: callable(action, interface) for
    netifd's `network.interface` events (ifup / ifdown / ...), or None."""

    def __init__(self, loop, methods, object_name=OBJECT_NAME, module=None, socket_path=None,
                 on_interface_event=None):
        self.loop = loop
        self.methods = dict(methods)
        self.object_name = object_name
        self.socket_path = socket_path
        self.on_interface_event = on_interface_event
        self.ubus = module if module is not None else import_binding()
        self.available = self.ubus is not None
        self.connected = False
        self.registered = False
        self.fd = None
        self.polling = False
        self._timer = None
        self._retry = RETRY_MIN
        self._closed = False
        if self.available:
            self._connect()

    # -- connection ------------------------------------------------------------
    def _connect(self):
        self._timer = None
        if self._closed:
            return
        u = self.ubus
        before = _open_fds()
        try:
            if self.socket_path:
                u.connect(socket_path=self.socket_path)
            else:
                u.connect()
        except Exception as exc:
            log.info("ubus: cannot connect (%s); retrying in %d s", exc, self._retry)
            self._schedule_retry()
            return
        self.connected = True
        self._retry = RETRY_MIN
        try:
            u.add(self.object_name, self._method_table())
            self.registered = True
        except Exception as exc:
            self.registered = False
            log.warning("ubus: cannot register object '%s': %s (the control socket still works)",
                        self.object_name, exc)
        if self.on_interface_event is not None:
            try:
                u.listen(("network.interface", self._on_interface))
            except Exception as exc:
                log.warning("ubus: cannot listen for network.interface events: %s", exc)
        paths = (self.socket_path,) if self.socket_path else DEFAULT_SOCKETS
        fd = find_socket_fd(_open_fds() - before, paths)
        if fd is not None:
            self.fd = fd
            self.polling = False
            self.loop.add_reader(fd, self._readable)
        else:
            log.info("ubus: binding socket not identified; handling ubus every %.2f s", POLL_INTERVAL)
            self.polling = True
            self._timer = self.loop.call_later(POLL_INTERVAL, self._poll)
        if self.registered:
            log.info("ubus: object '%s' registered", self.object_name)

    def _schedule_retry(self):
        if self._closed:
            return
        self._timer = self.loop.call_later(self._retry, self._connect)
        self._retry = min(RETRY_MAX, self._retry * 2)

    def _drop(self, reason):
        log.warning("ubus: connection lost (%s); reconnecting", reason)
        self._teardown(deregister=False)
        self._schedule_retry()

    def _teardown(self, deregister):
        if self._timer is not None:
            self.loop.cancel(self._timer)
            self._timer = None
        if self.fd is not None:
            self.loop.remove_reader(self.fd)
            self.fd = None
        if self.connected:
            try:
                self.ubus.disconnect(deregister=deregister)
            except Exception:
                pass
        self.connected = self.registered = self.polling = False

    def close(self):
        self._closed = True
        self._teardown(deregister=True)

    # -- event handling ----------------------------------------------------------
    def _readable(self):
        try:
            self.ubus.loop(0)
        except Exception as exc:
            self._drop(exc)
            return
        if self.fd is not None and _peer_closed(self.fd):
            self._drop("ubusd closed the socket")

    def _poll(self):
        self._timer = None
        try:
            self.ubus.loop(0)
        except Exception as exc:
            self._drop(exc)
            return
        if self.connected and not self._closed:
            self._timer = self.loop.call_later(POLL_INTERVAL, self._poll)

    def _method_table(self):
        table = {}
        for name, fn in self.methods.items():
            table[name] = {"method": self._wrap(name, fn), "signature": {}}
        return table

    @staticmethod
    def _wrap(name, fn):
        def method(handler, data):
            try:
                result = fn(data if isinstance(data, dict) else {})
            except Exception as exc:  # a failing method must not take the daemon down
                result = {"error": "%s failed: %s" % (name, exc)}
            if not isinstance(result, dict):
                result = {"result": result}
            try:
                handler.reply(clean(result))
            except Exception as exc:
                log.warning("ubus: reply to %s failed: %s", name, exc)
        return method

    def _on_interface(self, event, data):
        if not isinstance(data, dict):
            return
        action, iface = data.get("action"), data.get("interface")
        if not isinstance(action, str) or not isinstance(iface, str):
            return
        try:
            self.on_interface_event(action, iface)
        except Exception as exc:
            log.warning("ubus: network.interface handler failed: %s", exc)

    # -- outgoing ------------------------------------------------------------------
    def notify(self, status):
        """Send the `cpe_tunnel.state` event with the status dict. False when there
        is no ubus connection (nothing is queued)."""
        if not self.connected:
            return False
        try:
            return bool(self.ubus.send(STATE_EVENT, clean(status)))
        except Exception as exc:
            log.debug("ubus: sending %s failed: %s", STATE_EVENT, exc)
            return False

    def call(self, path, method, data):
        """A synchronous ubus call on this connection (e.g. netifd's notify_proto);
        returns the list of replies. RuntimeError when not connected."""
        if not self.connected:
            raise RuntimeError("not connected to ubus")
        return self.ubus.call(path, method, clean(data), timeout=CALL_TIMEOUT_MS)
