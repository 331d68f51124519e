#!/usr/bin/env python3
"""Build dist/luci-app-cpe-tunnel_<version>-<release>_all.ipk without the OpenWrt SDK.

    python3 tools/mkipk_luci.py [--out DIR] [--release N]

The same container as tools/mkipk.py (whose Tar and gz helpers it uses): a
gzip-compressed tar of ./debian-binary, ./data.tar.gz and ./control.tar.gz, as
OpenWrt's scripts/ipkg-build writes it. The files are placed as LuCI's luci.mk
installs an application: luci-app/luci-app-cpe-tunnel/htdocs/ under /www/ and
root/ under /. (luci.mk also compiles po/<language>/*.po to .lmo files; the app
has only the template so far, which is not installed.)

postinst/prerm do what luci.mk's default scripts do on a live system: drop
LuCI's index and module caches and reload rpcd so the new menu entry and ACL are
used without a reboot. Timestamps come from SOURCE_DATE_EPOCH (default 0).
"""

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import mkipk  # noqa: E402

APP = os.path.join(ROOT, "luci-app", "luci-app-cpe-tunnel")
NAME = "luci-app-cpe-tunnel"
DEPENDS = ["luci-base", "cpe-tunnel"]
DESCRIPTION = [
    "LuCI support for cpe-tunnel: Network > IPv6 Tunnel shows the tunnel's state",
    "(polled from the cpe_tunnel ubus object, with a Reconnect button) and edits",
    "/etc/config/cpe_tunnel; the protocol \"cpetunnel\" under Network > Interfaces.",
]

POSTINST = """#!/bin/sh
# luci-app-cpe-tunnel postinst: on a live system let LuCI and rpcd see the new
# menu entry and ACL.
[ "${IPKG_NO_SCRIPT}" = "1" ] && exit 0
[ -n "${IPKG_INSTROOT}" ] && exit 0
rm -f /tmp/luci-indexcache /tmp/luci-indexcache.*
rm -rf /tmp/luci-modulecache/
[ -x /etc/init.d/rpcd ] && /etc/init.d/rpcd reload
exit 0
"""

PRERM = """#!/bin/sh
# luci-app-cpe-tunnel prerm: nothing to stop; caches are dropped after removal.
[ "${IPKG_NO_SCRIPT}" = "1" ] && exit 0
[ -n "${IPKG_INSTROOT}" ] && exit 0
rm -f /tmp/luci-indexcache /tmp/luci-indexcache.*
rm -rf /tmp/luci-modulecache/
exit 0
"""


def app_files():
    """[(source path, destination, mode)]: htdocs/ -> /www/, root/ -> /."""
    out = []
    for top, dest in (("htdocs", "/www"), ("root", "")):
        base = os.path.join(APP, top)
        for d, dirs, files in os.walk(base):
            dirs.sort()
            for fn in sorted(files):
                src = os.path.join(d, fn)
                mode = 0o755 if os.access(src, os.X_OK) and top == "root" else 0o644
                out.append((src, dest + "/" + os.path.relpath(src, base).replace(os.sep, "/"), mode))
    return sorted(out, key=lambda e: e[1])


def build(out_dir, release="1", mtime=None):
    """Build the package; returns its path."""
    if mtime is None:
        mtime = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))
    full_version = "%s-%s" % (mkipk.version(), release)
    data = mkipk.Tar(mtime)
    data.dir("")
    for src, dest, mode in app_files():
        data.file(dest, mkipk.read(src), mode)
    data_tar = data.bytes()

    control = [
        "Package: %s" % NAME,
        "Version: %s" % full_version,
        "Depends: %s" % ", ".join(["libc"] + DEPENDS),
        "Source: luci-app/%s" % NAME,
        "SourceName: %s" % NAME,
        "License: GPL-2.0-or-later",
        "Section: luci",
        "Maintainer: cpe-tunnel developers",
        "Architecture: all",
        "Installed-Size: %d" % len(data_tar),
        "Description: " + DESCRIPTION[0],
    ] + [" " + line for line in DESCRIPTION[1:]]
    ctl = mkipk.Tar(mtime)
    ctl.dir("")
    ctl.file("control", ("\n".join(control) + "\n").encode(), 0o644)
    ctl.file("postinst", POSTINST.encode(), 0o755)
    ctl.file("prerm", PRERM.encode(), 0o755)

    outer = mkipk.Tar(mtime)
    outer.file("debian-binary", b"2.0\n", 0o644)
    outer.file("data.tar.gz", mkipk.gz(data_tar, mtime), 0o644)
    outer.file("control.tar.gz", mkipk.gz(ctl.bytes(), mtime), 0o644)
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "%s_%s_all.ipk" % (NAME, full_version))
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(mkipk.gz(outer.bytes(), mtime))
    os.rename(tmp, path)
    return path


def main(argv=None):
    p = argparse.ArgumentParser(description="Build the luci-app-cpe-tunnel .ipk without the OpenWrt SDK.")
    p.add_argument("--out", default=os.path.join(ROOT, "dist"), help="output directory (default dist/)")
    p.add_argument("--release", default="1", help="package release number (default 1)")
    a = p.parse_args(argv)
    path = build(a.out, a.release)
    print("%s (%d bytes)" % (os.path.relpath(path), os.path.getsize(path)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
