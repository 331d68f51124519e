#!/usr/bin/env python3
"""Build dist/cpe-tunnel_<version>-<release>_all.ipk without the OpenWrt SDK.

    python3 tools/mkipk.py [--out DIR] [--release N] [--pyc]

The package has the layout OpenWrt's own scripts/ipkg-build produces, which opkg
installs: the outer file is a gzip-compressed tar (GNU format, numeric owner 0:0)
holding, in this order, ./debian-binary ("2.0\\n"), ./data.tar.gz and
./control.tar.gz. (opkg also reads the Debian-style `ar` container, but OpenWrt's
build and feeds use tar.gz; OpenWrt releases after 24.10 use apk packages instead.)

control.tar.gz: ./control (Package, Version, Depends, Source, Section, License,
Maintainer, Architecture: all, Installed-Size = bytes of the uncompressed data tar,
as ipkg-build computes it, Description), ./conffiles, ./postinst, ./prerm.
data.tar.gz: the Python package under /usr/share/cpe-tunnel (independent of the
router's Python version; the /usr/bin wrappers put it on sys.path), the wrappers,
/etc/config/cpe_tunnel (0600: it holds credentials), the init script, the netifd
protocol handler, the hotplug script and the uci-defaults provisioning script.
--pyc adds __pycache__ bytecode for the building Python (only used on a router
whose Python has the same version, e.g. 3.11; otherwise ignored).

Timestamps come from SOURCE_DATE_EPOCH (default 0), so the same tree gives the same
bytes.
"""

import argparse
import gzip
import io
import os
import py_compile
import re
import sys
import tarfile
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FILES = os.path.join(ROOT, "files")
PKGFILES = os.path.join(ROOT, "package", "cpe-tunnel", "files")

NAME = "cpe-tunnel"
SHARE = "/usr/share/cpe-tunnel"
DEPENDS = ["python3-light", "python3-logging", "python3-openssl", "python3-email", "python3-ctypes", "kmod-tun",
           "kmod-sit"]
CONFFILES = ["/etc/config/cpe_tunnel"]
DESCRIPTION = [
    "IPv6 tunnel manager for home routers: IPv6 from a tunnel broker over 6in4",
    "(kernel sit or a userspace data plane), the broker's endpoint kept current",
    "with its HTTP update API, NAT state kept alive, and the delegated prefix",
    "announced to the LAN (own Router Advertisements, or through netifd and",
    "odhcpd with the cpetunnel protocol handler).",
]

# (source, destination, mode)
STATIC = [
    (os.path.join(PKGFILES, "cpe-tunneld"), "/usr/bin/cpe-tunneld", 0o755),
    (os.path.join(PKGFILES, "cpe-tunnel"), "/usr/bin/cpe-tunnel", 0o755),
    (os.path.join(FILES, "etc", "config", "cpe_tunnel"), "/etc/config/cpe_tunnel", 0o600),
    (os.path.join(FILES, "etc", "init.d", "cpe_tunnel"), "/etc/init.d/cpe_tunnel", 0o755),
    (os.path.join(FILES, "lib", "netifd", "proto", "cpetunnel.sh"), "/lib/netifd/proto/cpetunnel.sh", 0o755),
    (os.path.join(FILES, "etc", "hotplug.d", "iface", "90-cpe-tunnel"), "/etc/hotplug.d/iface/90-cpe-tunnel",
     0o644),
    (os.path.join(FILES, "etc", "hotplug.d", "ntp", "90-cpe-tunnel"), "/etc/hotplug.d/ntp/90-cpe-tunnel", 0o644),
    (os.path.join(FILES, "etc", "uci-defaults", "90-cpe-tunnel"), "/etc/uci-defaults/90-cpe-tunnel", 0o755),
]

POSTINST = """#!/bin/sh
# cpe-tunnel postinst: respects $IPKG_INSTROOT (image builds install into a root
# directory and must not touch the build host).
[ "${IPKG_NO_SCRIPT}" = "1" ] && exit 0
root="${IPKG_INSTROOT}"
chmod 0600 "$root/etc/config/cpe_tunnel" 2>/dev/null
if [ -n "$root" ]; then
	# image build: enable the service in the image; uci-defaults run at first boot
	sh "$root/etc/rc.common" "$root/etc/init.d/cpe_tunnel" enable 2>/dev/null
	exit 0
fi
# live system: what first boot would do, then enable and start the service (it
# stays idle until option enabled '1' is set in /etc/config/cpe_tunnel)
if [ -f /etc/uci-defaults/90-cpe-tunnel ]; then
	( . /etc/uci-defaults/90-cpe-tunnel ) && rm -f /etc/uci-defaults/90-cpe-tunnel
fi
/etc/init.d/cpe_tunnel enable
/etc/init.d/cpe_tunnel start
echo "cpe-tunnel: for the netifd protocol 'cpetunnel', restart netifd once: /etc/init.d/network restart"
exit 0
"""

PRERM = """#!/bin/sh
# cpe-tunnel prerm: stop and disable the service on a live system only.
[ "${IPKG_NO_SCRIPT}" = "1" ] && exit 0
[ -n "${IPKG_INSTROOT}" ] && exit 0
/etc/init.d/cpe_tunnel stop
/etc/init.d/cpe_tunnel disable
exit 0
"""


def version():
    with open(os.path.join(ROOT, "cpe_tunnel", "__init__.py")) as f:
        m = re.search(r'__version__\s*=\s*"([^"]+)"', f.read())
    return m.group(1)


def python_files(pyc=False):
    """[(source path, destination, mode)] for the cpe_tunnel package."""
    out = []
    base = os.path.join(ROOT, "cpe_tunnel")
    for d, dirs, files in os.walk(base):
        dirs[:] = sorted(x for x in dirs if x != "__pycache__")
        for fn in sorted(files):
            if fn.endswith(".py"):
                src = os.path.join(d, fn)
                out.append((src, SHARE + "/" + os.path.relpath(src, ROOT), 0o644))
    return out


class Tar:
    """A tar archive built in memory the way ipkg-build does (GNU format, uid/gid
    0, fixed mtime, parent directories listed, names as ./path)."""

    def __init__(self, mtime):
        self.buf = io.BytesIO()
        self.tar = tarfile.open(fileobj=self.buf, mode="w", format=tarfile.GNU_FORMAT)
        self.mtime = mtime
        self.dirs = set()

    def _info(self, name, mode, size=0, kind=tarfile.REGTYPE):
        ti = tarfile.TarInfo(name)
        ti.mode, ti.size, ti.type, ti.mtime = mode, size, kind, self.mtime
        ti.uid = ti.gid = 0
        ti.uname = ti.gname = ""
        return ti

    def dir(self, path):
        path = path.strip("/")
        if path in self.dirs:
            return
        if "/" in path:
            self.dir(path.rsplit("/", 1)[0])
        self.dirs.add(path)
        self.tar.addfile(self._info("./" + path + "/" if path else "./", 0o755, kind=tarfile.DIRTYPE))

    def file(self, path, data, mode):
        path = path.strip("/")
        if "/" in path:
            self.dir(path.rsplit("/", 1)[0])
        self.tar.addfile(self._info("./" + path, mode, len(data)), io.BytesIO(data))

    def bytes(self):
        self.tar.close()
        return self.buf.getvalue()


def gz(data, mtime):
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=mtime, compresslevel=9, filename="") as f:
        f.write(data)
    return out.getvalue()


def read(path):
    with open(path, "rb") as f:
        return f.read()


def build(out_dir, release="1", pyc=False, mtime=None):
    """Build the package; returns its path."""
    if mtime is None:
        mtime = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))
    full_version = "%s-%s" % (version(), release)
    entries = sorted(python_files() + STATIC, key=lambda e: e[1])
    data = Tar(mtime)
    data.dir("")
    for src, dest, mode in entries:
        data.file(dest, read(src), mode)
    if pyc:
        with tempfile.TemporaryDirectory() as tmp:
            for src, dest, mode in entries:
                if not dest.endswith(".py") or not dest.startswith(SHARE):
                    continue
                rel = os.path.basename(dest)[:-3]
                cfile = os.path.join(tmp, rel + ".pyc")
                py_compile.compile(src, cfile=cfile, dfile=dest, doraise=True,
                                   invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
                tag = sys.implementation.cache_tag
                data.file(os.path.dirname(dest) + "/__pycache__/%s.%s.pyc" % (rel, tag), read(cfile), 0o644)
    data_tar = data.bytes()

    control = [
        "Package: %s" % NAME,
        "Version: %s" % full_version,
        "Depends: %s" % ", ".join(["libc"] + DEPENDS),
        "Source: package/cpe-tunnel",
        "SourceName: %s" % NAME,
        "License: GPL-2.0-or-later",
        "Section: net",
        "Maintainer: cpe-tunnel developers",
        "Architecture: all",
        "Installed-Size: %d" % len(data_tar),
        "Description: " + DESCRIPTION[0],
    ] + [" " + line for line in DESCRIPTION[1:]]
    ctl = Tar(mtime)
    ctl.dir("")
    ctl.file("control", ("\n".join(control) + "\n").encode(), 0o644)
    ctl.file("conffiles", ("\n".join(CONFFILES) + "\n").encode(), 0o644)
    ctl.file("postinst", POSTINST.encode(), 0o755)
    ctl.file("prerm", PRERM.encode(), 0o755)

    outer = Tar(mtime)
    outer.file("debian-binary", b"2.0\n", 0o644)
    outer.file("data.tar.gz", gz(data_tar, mtime), 0o644)
    outer.file("control.tar.gz", gz(ctl.bytes(), mtime), 0o644)
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "%s_%s_all.ipk" % (NAME, full_version))
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(gz(outer.bytes(), mtime))
    os.rename(tmp, path)
    return path


def main(argv=None):
    p = argparse.ArgumentParser(description="Build the cpe-tunnel .ipk without the OpenWrt SDK.")
    p.add_argument("--out", default=os.path.join(ROOT, "dist"), help="output directory (default dist/)")
    p.add_argument("--release", default="1", help="package release number (default 1)")
    p.add_argument("--pyc", action="store_true", help="add bytecode for this Python version")
    a = p.parse_args(argv)
    path = build(a.out, a.release, a.pyc)
    print("%s (%d bytes)" % (os.path.relpath(path), os.path.getsize(path)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
