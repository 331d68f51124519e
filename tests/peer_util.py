"""What the reference peers (tests.broker, tests.tsp_broker, tests.sixxs_pop) share below
their control socket (that is tests.peer_server): loading a JSON configuration, the TUN
device, and worker threads that stop on request.

Standard library only, none of cpe_tunnel's code: a peer that shared the client's helpers
could share its bugs.
"""

import fcntl
import json
import os
import struct
import subprocess
import threading

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000


# ---- configuration --------------------------------------------------------------------
def load_json_config(path, parse, error):
    """parse(the JSON document in the file at path); `error` (the peer's exception class)
    with a readable reason when the file cannot be read or is not UTF-8 JSON."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise error("cannot read %s: %s" % (path, exc.strerror or exc))
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise error("%s is not valid JSON: %s" % (path, exc))
    return parse(obj)


def claim_tunnel_id(tunnel_id, taken, error):
    """Add tunnel_id to the set `taken`; error when it is there already."""
    if tunnel_id in taken:
        raise error("tunnel id %r appears twice" % tunnel_id)
    taken.add(tunnel_id)


def claim_networks(tunnel_id, networks, taken, error):
    """Add each of a tunnel's networks to `taken` (a list of (tunnel id, network));
    error when one overlaps a network of an earlier tunnel."""
    for n in networks:
        for other_id, o in taken:
            if n.overlaps(o):
                raise error("tunnel %s network %s overlaps %s of tunnel %s" % (tunnel_id, n, o, other_id))
        taken.append((tunnel_id, n))


# ---- the TUN device -------------------------------------------------------------------
def open_tun(name):
    """A non-blocking TUN device (IFF_TUN | IFF_NO_PI) named `name`; its file descriptor."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode("ascii"), IFF_TUN | IFF_NO_PI))
    except OSError:
        os.close(fd)
        raise
    os.set_blocking(fd, False)
    return fd


def set_up_tun(dev, lines, no_dad=("accept_dad",), run=subprocess.run):
    """Turn off the IPv6 settings named in no_dad on `dev` (best effort; no duplicate
    address detection delays the tunnel addresses), then run `ip -batch` with lines."""
    for knob in no_dad:
        try:
            with open("/proc/sys/net/ipv6/conf/%s/%s" % (dev, knob), "w") as f:
                f.write("0")
        except OSError:
            pass
    run(["ip", "-batch", "-"], input="\n".join(lines) + "\n", text=True, check=True, capture_output=True)


def tunnels_tun_lines(dev, mtu, tunnels):
    """`ip -batch` lines that bring dev up with mtu and, for each (address, prefix length,
    routed prefixes) of `tunnels`, put the address on it and route the prefixes to it."""
    lines = ["link set dev %s mtu %d up" % (dev, mtu)]
    for address, prefixlen, routed in tunnels:
        lines.append("addr add %s/%d dev %s" % (address, prefixlen, dev))
        for r in routed:
            lines.append("route add %s dev %s" % (r, dev))
    return lines


def close_fds(*fds):
    """os.close each descriptor that is not None; errors are ignored."""
    for fd in fds:
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass


# ---- worker threads -------------------------------------------------------------------
class Workers:
    """Base of a peer part that runs daemon threads until stop_workers(): the flag
    self._stop they loop on, and a wake-up pipe (self._wake_r, to poll together with
    their own descriptors) that ends their wait at once."""

    def init_workers(self):
        self._stop = False
        self._wake_r, self._wake_w = os.pipe()
        self.threads = []

    def start_worker(self, target, name):
        th = threading.Thread(target=target, name=name, daemon=True)
        th.start()
        self.threads.append(th)

    def stop_workers(self, timeout=5):
        """Tell the threads to stop, wake them and wait for them (at most `timeout` s
        each). The wake-up pipe stays open: close_wake() closes it."""
        self._stop = True
        if self._wake_w is not None:
            try:
                os.write(self._wake_w, b"x")
            except OSError:
                pass
        for th in self.threads:
            th.join(timeout)

    def close_wake(self):
        close_fds(self._wake_r, self._wake_w)
        self._wake_r = self._wake_w = None
