# Open a Linux TUN device (layer 3, no packet information header).
# The device lives as long as the returned fd is open (it is not made persistent), so
# closing the fd removes it. Bringing it up, addresses and routes: adapters/netlink.py.

import errno
import fcntl
import os
import socket
import struct

from cpe_tunnel.adapters.netlink import in_netns

__all__ = ["open_tun"]

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
SIOCSIFMTU = 0x8922
IFNAMSIZ = 16


def _check_name(name):
    if not isinstance(name, str):
        raise ValueError("interface name must be text")
    raw = name.encode("utf-8", "replace")
    if not raw or len(raw) >= IFNAMSIZ:
        raise ValueError("interface name '%s' must be 1 to 15 bytes" % name)
    for c in name:
        if c in "/: \t\n\0" or ord(c) < 0x21:
            raise ValueError("interface name '%s' contains a character Linux refuses" % name)
    return raw


def _set_mtu(ifname_raw, mtu):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        fcntl.ioctl(s, SIOCSIFMTU, struct.pack("16si12x", ifname_raw, mtu))
    finally:
        s.close()


def open_tun(name, mtu=None, nonblocking=False, netns=None):
    """Create TUN device `name` (IFF_TUN | IFF_NO_PI; a name with %d lets the kernel
    pick a number) and return (fd, actual_name). mtu: set it when given.
    nonblocking: open with O_NONBLOCK. netns: create it in that network namespace.
    Raises ValueError for a bad name, OSError (with a readable message) otherwise."""
    raw = _check_name(name)
    if mtu is not None:
        mtu = int(mtu)
        if not 68 <= mtu <= 65535:
            raise ValueError("MTU %d is out of range (68..65535)" % mtu)

    def make():
        flags = os.O_RDWR | getattr(os, "O_CLOEXEC", 0)
        if nonblocking:
            flags |= os.O_NONBLOCK
        try:
            fd = os.open("/dev/net/tun", flags)
        except OSError as e:
            raise OSError(e.errno, "cannot open /dev/net/tun (is the tun driver there? root?): %s"
                          % os.strerror(e.errno))
        try:
            ifr = struct.pack("16sH22x", raw, IFF_TUN | IFF_NO_PI)
            try:
                res = fcntl.ioctl(fd, TUNSETIFF, ifr)
            except OSError as e:
                if e.errno == errno.EBUSY:
                    raise OSError(e.errno, "TUN device '%s' is in use by another process" % name)
                raise OSError(e.errno, "cannot create TUN device '%s': %s" % (name, os.strerror(e.errno)))
            actual = res[:IFNAMSIZ].split(b"\0", 1)[0].decode("utf-8", "replace")
            if mtu is not None:
                try:
                    _set_mtu(actual.encode("utf-8"), mtu)
                except OSError as e:
                    raise OSError(e.errno, "cannot set MTU %d on '%s': %s"
                                  % (mtu, actual, os.strerror(e.errno)))
            return fd, actual
        except BaseException:
            os.close(fd)
            raise

    return in_netns(netns, make)
