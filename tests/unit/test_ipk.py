"""tools/mkipk.py: the .ipk is built, unpacked with tarfile and checked (layout as
OpenWrt's scripts/ipkg-build makes it, control fields, conffiles, modes, maintainer
scripts that respect $IPKG_INSTROOT, a complete importable Python package)."""
import gzip
import io
import os
import subprocess
import sys
import tarfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import mkipk  # noqa: E402


@pytest.fixture(scope="module")
def ipk(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    path = mkipk.build(str(out))
    return path


def members(data):
    t = tarfile.open(fileobj=io.BytesIO(data), mode="r:gz")
    return t, {m.name: m for m in t.getmembers()}


def unpack(ipk):
    with open(ipk, "rb") as f:
        raw = f.read()
    assert raw[:2] == b"\x1f\x8b"  # gzip, as ipkg-build writes it
    outer, om = members(raw)
    names = [m.name for m in outer.getmembers()]
    parts = {n: outer.extractfile(om[n]).read() for n in names}
    return names, parts


def control_fields(parts):
    ctl, cm = members(parts["./control.tar.gz"])
    text = ctl.extractfile(cm["./control"]).read().decode()
    fields = {}
    last = None
    for line in text.splitlines():
        if line.startswith(" "):
            fields[last] += "\n" + line[1:]
        else:
            last, _, v = line.partition(": ")
            fields[last] = v
    return ctl, cm, fields


def test_outer_layout_and_name(ipk):
    assert os.path.basename(ipk) == "cpe-tunnel_%s-1_all.ipk" % mkipk.version()
    names, parts = unpack(ipk)
    assert names == ["./debian-binary", "./data.tar.gz", "./control.tar.gz"]
    assert parts["./debian-binary"] == b"2.0\n"
    print("ipk size: %d bytes" % os.path.getsize(ipk))
    assert os.path.getsize(ipk) < 400 * 1024


def test_control_fields(ipk):
    names, parts = unpack(ipk)
    ctl, cm, f = control_fields(parts)
    assert f["Package"] == "cpe-tunnel"
    assert f["Version"] == mkipk.version() + "-1"
    assert f["Architecture"] == "all"
    deps = [d.strip() for d in f["Depends"].split(",")]
    for d in ("python3-light", "kmod-tun"):
        assert d in deps
    assert "python3-pyroute2" not in deps  # the daemon has its own rtnetlink client
    assert f["Section"] == "net" and f["License"] == "GPL-2.0-or-later" and f["Maintainer"]
    assert f["Source"] and "\n" in f["Description"]
    # Installed-Size as ipkg-build computes it: bytes of the uncompressed data tar
    assert int(f["Installed-Size"]) == len(gzip.decompress(parts["./data.tar.gz"]))
    assert ctl.extractfile(cm["./conffiles"]).read() == b"/etc/config/cpe_tunnel\n"
    for script in ("./postinst", "./prerm"):
        assert cm[script].mode == 0o755
        assert ctl.extractfile(cm[script]).read().startswith(b"#!/bin/sh\n")
    for m in ctl.getmembers():
        assert (m.uid, m.gid) == (0, 0)


def test_data_tree_and_modes(ipk):
    names, parts = unpack(ipk)
    data, dm = members(parts["./data.tar.gz"])
    expect = {
        "./usr/bin/cpe-tunneld": 0o755, "./usr/bin/cpe-tunnel": 0o755,
        "./etc/config/cpe_tunnel": 0o600, "./etc/init.d/cpe_tunnel": 0o755,
        "./lib/netifd/proto/cpetunnel.sh": 0o755, "./etc/hotplug.d/iface/90-cpe-tunnel": 0o644,
        "./etc/hotplug.d/ntp/90-cpe-tunnel": 0o644,
        "./etc/uci-defaults/90-cpe-tunnel": 0o755,
        "./usr/share/cpe-tunnel/cpe_tunnel/daemon.py": 0o644,
        "./usr/share/cpe-tunnel/cpe_tunnel/core/schema.py": 0o644,
        "./usr/share/cpe-tunnel/cpe_tunnel/adapters/ubus.py": 0o644,
    }
    for name, mode in expect.items():
        assert name in dm, name
        assert dm[name].isfile() and dm[name].mode == mode, name
    for m in data.getmembers():
        assert (m.uid, m.gid) == (0, 0)
        assert "__pycache__" not in m.name and "/tests/" not in m.name
        if m.isdir():
            assert m.mode == 0o755
        # every entry's parent directory is listed (tarfile drops the trailing /)
        if m.name != ".":
            assert m.name.rsplit("/", 1)[0] in dm, m.name
    # the shipped files are the work tree's files, byte for byte
    with open(os.path.join(ROOT, "files", "lib", "netifd", "proto", "cpetunnel.sh"), "rb") as f:
        assert data.extractfile(dm["./lib/netifd/proto/cpetunnel.sh"]).read() == f.read()
    # every module of the package is there
    src = set()
    for d, _, files in os.walk(os.path.join(ROOT, "cpe_tunnel")):
        src |= {os.path.relpath(os.path.join(d, x), ROOT) for x in files if x.endswith(".py")}
    shipped = {n[len("./usr/share/cpe-tunnel/"):] for n in dm if n.startswith("./usr/share/") and n.endswith(".py")}
    assert shipped == src


def test_reproducible(ipk, tmp_path):
    again = mkipk.build(str(tmp_path))
    with open(ipk, "rb") as a, open(again, "rb") as b:
        assert a.read() == b.read()


def test_pyc_option(tmp_path):
    path = mkipk.build(str(tmp_path), pyc=True)
    names, parts = unpack(path)
    data, dm = members(parts["./data.tar.gz"])
    tag = sys.implementation.cache_tag
    assert "./usr/share/cpe-tunnel/cpe_tunnel/core/__pycache__/uci.%s.pyc" % tag in dm


def extract(ipk, dest):
    names, parts = unpack(ipk)
    for part in ("./data.tar.gz", "./control.tar.gz"):
        t = tarfile.open(fileobj=io.BytesIO(parts[part]), mode="r:gz")
        sub = dest / ("data" if "data" in part else "control")
        sub.mkdir()
        t.extractall(str(sub), filter="data")
    return dest / "data", dest / "control"


def test_package_imports_from_the_unpacked_tree(ipk, tmp_path):
    data, _ = extract(ipk, tmp_path)
    share = str(data / "usr" / "share" / "cpe-tunnel")
    code = ("import sys, pkgutil, importlib; sys.path.insert(0, %r)\n"
            "import cpe_tunnel\n"
            "assert cpe_tunnel.__file__.startswith(%r), cpe_tunnel.__file__\n"
            "for m in pkgutil.walk_packages(cpe_tunnel.__path__, 'cpe_tunnel.'):\n"
            "    importlib.import_module(m.name)\n"
            "from cpe_tunnel.daemon import main\n"
            "sys.exit(main(['--check', '-c', %r]))\n") % (share, share, str(data / "etc" / "config" / "cpe_tunnel"))
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=str(tmp_path))
    # the shipped configuration is checked and lists what is still to fill in
    assert p.returncode == 2, p.stderr
    assert "peeraddr" in p.stderr


def fake_root(tmp_path):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    log = tmp_path / "calls.log"
    (root / "etc" / "rc.common").write_text('echo "rc.common $*" >> %s\n' % log)
    return root, log


def test_postinst_in_an_image_build_only_enables(ipk, tmp_path):
    data, control = extract(ipk, tmp_path)
    root, log = fake_root(tmp_path)
    (root / "etc" / "config").mkdir()
    (root / "etc" / "config" / "cpe_tunnel").write_text("")
    env = {"PATH": "/usr/bin:/bin", "IPKG_INSTROOT": str(root)}
    p = subprocess.run(["/bin/sh", str(control / "postinst")], env=env, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert log.read_text() == "rc.common %s/etc/init.d/cpe_tunnel enable\n" % root
    assert oct(os.stat(str(root / "etc" / "config" / "cpe_tunnel")).st_mode & 0o777) == oct(0o600)
    # prerm does nothing to a build root
    log.unlink()
    p = subprocess.run(["/bin/sh", str(control / "prerm")], env=env, capture_output=True, text=True)
    assert p.returncode == 0 and not log.exists()


def test_maintainer_scripts_honour_ipkg_no_script(ipk, tmp_path):
    data, control = extract(ipk, tmp_path)
    root, log = fake_root(tmp_path)
    for script in ("postinst", "prerm"):
        p = subprocess.run(["/bin/sh", str(control / script)],
                           env={"PATH": "/usr/bin:/bin", "IPKG_NO_SCRIPT": "1", "IPKG_INSTROOT": ""},
                           capture_output=True, text=True)
        assert p.returncode == 0 and not log.exists() and p.stdout == ""


def test_sdk_makefile_installs_the_same_files():
    with open(os.path.join(ROOT, "package", "cpe-tunnel", "Makefile")) as f:
        text = f.read()
    for src, dest, mode in mkipk.STATIC:
        assert "$(1)" + dest in text, dest
    assert "PKGARCH:=all" in text and "/etc/config/cpe_tunnel\nendef" in text
    for dep in mkipk.DEPENDS:
        assert "+" + dep in text, dep
