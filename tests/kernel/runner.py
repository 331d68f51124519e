"""Runs commands (normally pytest) inside a real Linux kernel with sit, ip6tnl, veth,
bridge and tun: Debian's User-Mode Linux (package ``user-mode-linux``; its nftables has
only the bridge family, see docs/KERNEL.md),
booted on this machine's own filesystem through hostfs, so the repository, the venv and
pytest are all there. The host kernel of the lab machines has none of these tunnels
(../shared/LAB.md). docs/KERNEL.md has the evidence behind the choices below.

    from tests.kernel import runner
    why = runner.unusable_reason()          # None, or why UML cannot be tried at all
    res = runner.run_pytest(["tests/kernel"], timeout=180)
    res.started    # PID 1 ran (False: the VM could not start; res.reason says why)
    res.status     # exit status of the command inside, None when it did not finish
    res.output     # its stdout+stderr;  res.console: the kernel console
    res.fpu        # how UML's FPU switching was made to work here (see below)
    res.timings    # {'boot': s to PID 1, 'modules': s to modules loaded, 'total': s}

    python -m tests.kernel.runner [--timeout S] [-- PYTEST ARGS]   # pytest inside, default tests/kernel
    python -m tests.kernel.runner --cmd -- CMD ARGS...              # any command inside

The AMX problem. UML 6.1 switches the FPU state of its processes with
ptrace(PTRACE_GETREGSET / SETREGSET, pid, NT_X86_XSTATE) through a fixed 2696-byte
buffer. The host kernel accepts SETREGSET only with a buffer of exactly its whole user
XSAVE size (arch/x86/kernel/fpu/regset.c: ``count != fpu_user_cfg.max_size`` ->
-EFAULT), 11008 bytes on a CPU with AMX. So the first switch to a UML process fails
("userspace - ptrace set fp regs failed, errno = 14") and init never runs.

Two ways around it (``fpu=``):

'shim' (default when a C compiler is installed): xstate_shim.c, LD_PRELOADed into
    linux.uml, turns UML's short SETREGSET into read-whole-area, overlay UML's bytes,
    write-whole-area. Every component a UML process can use (x87, SSE, AVX, AVX-512,
    PKRU) lies within UML's 2696 bytes, so the guest's FPU state is switched exactly.
'fxsave' (no compiler): linux.uml runs under a seccomp filter that answers EIO to
    ptrace(GETREGSET|SETREGSET, *, NT_X86_XSTATE). UML's boot probe (arch_init_registers)
    then fails and UML falls back to PTRACE_GETFPREGS/SETFPREGS: only the 512-byte FXSAVE
    area (x87 + SSE) is switched. The rest is lost at every page fault of a guest process
    (the host resets the FPU state for the SIGSEGV handler UML's stub runs, and UML never
    returns through sigreturn), which breaks glibc's AVX2/EVEX string functions: seen as
    modprobe misparsing its options. So in this mode every guest process, PID 1 included
    (through the kernel command line), runs with GLIBC_TUNABLES / OPENSSL_ia32cap masking
    AVX; a program with its own AVX code outside glibc/OpenSSL could still misbehave.
'none': plain linux.uml (hosts whose XSAVE area fits UML's buffer, i.e. without AMX).
"""

import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
UML = "/usr/bin/linux.uml"
MODULES_BASE = "/usr/lib/uml/modules"
IN_VM_ENV = "CPE_TUNNEL_IN_VM"  # set to "uml" for every process started inside the VM

# Loaded at boot (modprobe resolves dependencies; the kernel loads more on demand through
# a modprobe wrapper, e.g. nft expressions).
MODULES = ("ipv6", "sit", "ip6_tunnel", "tun", "veth", "bridge", "nf_tables", "nf_conntrack", "nf_nat",
           "nft_ct", "nft_masq")

# AVX off for every guest process in fpu='fxsave' mode (see the module docstring).
FXSAVE_ENV = {
    "GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX,-AVX2,-FMA,-AVX512F,-AVX512BW,-AVX512VL,-AVX512DQ,"
                      "-AVX512CD,-AVX_Fast_Unaligned_Load",
    # bit 60 = CPUID.1:ECX.AVX, bit 44 = FMA; ":0" clears all CPUID.7 features (AVX2, AVX-512...)
    "OPENSSL_ia32cap": "~0x1000100000000000:0",
}

# --------------------------------------------------------------------------- seccomp

_PTRACE = 101  # x86_64
_PTRACE_GETREGSET, _PTRACE_SETREGSET = 0x4204, 0x4205
_NT_X86_XSTATE = 0x202
_AUDIT_ARCH_X86_64 = 0xC000003E
_EIO = 5


def xstate_filter():
    """The classic-BPF seccomp program (bytes, 8 per instruction): EIO for
    ptrace(PTRACE_GETREGSET or PTRACE_SETREGSET, *, NT_X86_XSTATE, *), allow the rest."""
    def stmt(code, k):
        return struct.pack("=HBBI", code, 0, 0, k)

    def jeq(k, jt, jf):
        return struct.pack("=HBBI", 0x15, jt, jf, k)  # BPF_JMP|BPF_JEQ|BPF_K

    ld = 0x20  # BPF_LD|BPF_W|BPF_ABS on struct seccomp_data
    ret = 0x06
    allow, errno_eio = 0x7FFF0000, 0x00050000 | _EIO
    # seccomp_data: nr @0, arch @4, ip @8, args[i] @16+8i (little endian: low word first)
    prog = [
        # jump offsets count from the next instruction; targets: 13 = EIO, 14 = allow
        stmt(ld, 4), jeq(_AUDIT_ARCH_X86_64, 0, 12),   # 0, 1
        stmt(ld, 0), jeq(_PTRACE, 0, 10),              # 2, 3
        stmt(ld, 20), jeq(0, 0, 8),                    # 4, 5: request, high word 0
        stmt(ld, 16), jeq(_PTRACE_GETREGSET, 1, 0),    # 6, 7: request, low word
        jeq(_PTRACE_SETREGSET, 0, 5),                  # 8
        stmt(ld, 36), jeq(0, 0, 3),                    # 9, 10: addr (the regset type), high word 0
        stmt(ld, 32), jeq(_NT_X86_XSTATE, 0, 1),       # 11, 12: addr, low word
        stmt(ret, errno_eio),                          # 13
        stmt(ret, allow),                              # 14
    ]
    return b"".join(prog)


def install_xstate_filter():
    """Install xstate_filter() on the calling process (inherited by exec and fork)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    prog = xstate_filter()
    buf = ctypes.create_string_buffer(prog, len(prog))

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = SockFprog(len(prog) // 8, ctypes.addressof(buf))
    pr_set_no_new_privs, pr_set_seccomp, seccomp_mode_filter = 38, 22, 2
    if libc.prctl(pr_set_no_new_privs, 1, 0, 0, 0) != 0:
        e = ctypes.get_errno()
        raise OSError(e, "prctl(PR_SET_NO_NEW_PRIVS): %s" % os.strerror(e))
    if libc.prctl(pr_set_seccomp, seccomp_mode_filter, ctypes.byref(fprog), 0, 0) != 0:
        e = ctypes.get_errno()
        raise OSError(e, "prctl(PR_SET_SECCOMP): %s" % os.strerror(e))


# --------------------------------------------------------------------------- the VM

INIT = r"""#!/bin/sh
# PID 1 inside User-Mode Linux, written by tests/kernel/runner.py.
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH
W=@WORK@
mount -t proc proc /proc
read up _ < /proc/uptime
mount -t tmpfs -o mode=755 run /run
# The host's filesystem is the guest's root, read-only. The run's directory is the one
# writable place, mounted as a second hostfs at /run/work (the guest's /tmp is private).
mkdir /run/work
mount -t hostfs -o $W hostfs /run/work
O=/run/work/out
echo "$up" > $O/started
mount -t sysfs sys /sys
mount -t tmpfs -o mode=1777 tmp /tmp
# A checkout (or venv) under /tmp or /run, which the guest covers with its own tmpfs
# (a CI clone may live there): show the host's directory at the same path again.
for d in @HOSTDIRS@; do mkdir -p "$d" && mount -t hostfs -o "$d" hostfs "$d"; done
# the kernel mounts devtmpfs on /dev itself (CONFIG_DEVTMPFS_MOUNT); else a tmpfs
grep -q '^[^ ]* /dev devtmpfs' /proc/mounts || mount -t devtmpfs dev /dev ||
  mount -t tmpfs -o mode=755 dev /dev
[ -c /dev/null ] || { rm -f /dev/null; mknod -m 666 /dev/null c 1 3; }
mkdir -p /dev/pts /dev/shm /dev/net
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=1777 shm /dev/shm
[ -e /dev/zero ] || mknod -m 666 /dev/zero c 1 5
[ -e /dev/urandom ] || mknod -m 666 /dev/urandom c 1 9
[ -e /dev/random ] || mknod -m 666 /dev/random c 1 8
[ -e /dev/net/tun ] || mknod -m 666 /dev/net/tun c 10 200
ln -sf /proc/self/fd /dev/fd 2>/dev/null
hostname cpt-uml
ip link set lo up
# modprobe for this kernel's modules (not the host's /lib/modules), also for the
# kernel's own requests (request_module)
K=$(uname -r)
mkdir -p /run/modroot/lib/modules
ln -s @MODULES_BASE@/$K /run/modroot/lib/modules/$K
printf '#!/bin/sh\necho "$*" >> /run/modprobe.log\nexec /sbin/modprobe -d /run/modroot "$@"\n' > /run/modprobe
chmod 755 /run/modprobe
echo /run/modprobe > /proc/sys/kernel/modprobe
for m in @MODULES@; do
  /run/modprobe $m >> $O/modules 2>&1 || echo "modprobe $m failed" >> $O/modules
done
read up _ < /proc/uptime
echo "$up" > $O/ready
export HOME=/tmp TMPDIR=/tmp @ENV@
cd @CWD@
timeout -k 5 @TIMEOUT@ @CMD@ > $O/output 2>&1 < /dev/null
echo $? > $O/status.tmp
mv $O/status.tmp $O/status
cd /
sync
umount /run/work 2>/dev/null
poweroff -f
"""


def _sq(s):
    return "'" + str(s).replace("'", "'\\''") + "'"


class Result:
    def __init__(self):
        self.started = False
        self.status = None
        self.output = ""
        self.console = ""
        self.modules_log = ""
        self.reason = None
        self.timed_out = False
        self.timings = {}
        self.fpu = None
        self.junit = ""

    def counts(self):
        """{'tests', 'failures', 'errors', 'skipped'} from an inner pytest's JUnit XML
        (run_pytest), or None when there is none."""
        if not self.junit:
            return None
        import xml.etree.ElementTree as ET

        try:
            root = ET.fromstring(self.junit)
        except ET.ParseError:
            return None
        suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
        total = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
        for suite in suites:
            for key in total:
                total[key] += int(suite.get(key, 0))
        return total

    def summary(self, tail=12000):
        parts = ["status: %s%s" % (self.status, " (timed out)" if self.timed_out else ""),
                 "fpu: %s, timings: %s" % (self.fpu, self.timings)]
        if self.reason:
            parts.append("reason: %s" % self.reason)
        if self.modules_log.strip():
            parts.append("--- modules ---\n" + self.modules_log.strip())
        parts.append("--- output ---\n" + self.output[-tail:])
        if self.status != 0:
            parts.append("--- console (tail) ---\n" + self.console[-3000:])
        return "\n".join(parts)


def unusable_reason():
    """None when UML can be tried here, else why not."""
    if sys.platform != "linux" or os.uname().machine != "x86_64":
        return "User-Mode Linux runner needs an x86_64 Linux host"
    if not os.path.exists(UML):
        return "user-mode-linux is not installed (%s missing; apt-get install user-mode-linux)" % UML
    if not os.path.isdir(MODULES_BASE) or not os.listdir(MODULES_BASE):
        return "no UML modules in %s" % MODULES_BASE
    if not shutil.which("modprobe"):
        return "modprobe missing (apt-get install kmod)"
    if os.geteuid() != 0:
        return "the UML runner needs root (as the namespace lab does)"
    return None


def _read(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def default_fpu():
    """'shim' when a C compiler is installed, else 'fxsave' (see the module docstring)."""
    return "shim" if _cc() else "fxsave"


def _cc():
    for name in ("cc", "gcc", "tcc", "clang"):
        path = shutil.which(name)
        if path:
            return path
    return None


def build_shim(dest_dir):
    """Compile xstate_shim.c into dest_dir; returns the .so path (OSError on failure)."""
    cc = _cc()
    if not cc:
        raise OSError("no C compiler (cc) to build the xstate shim")
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "xstate_shim.c")
    so = os.path.join(dest_dir, "xstate_shim.so")
    r = subprocess.run([cc, "-shared", "-fPIC", "-O2", "-o", so, src, "-ldl"], check=False,
                       capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise OSError("building the xstate shim failed: %s" % (r.stderr.strip() or r.stdout.strip()))
    return so


def run(argv, timeout=180, mem="1024M", modules=MODULES, env=None, cwd=ROOT, fpu=None, files=None,
        keep=False):
    """Boot UML, run argv (a list) as root inside with cwd, the guest environment
    (IN_VM_ENV=uml, PYTHONDONTWRITEBYTECODE=1, FXSAVE_ENV in fpu='fxsave' mode, env) and
    the given modules loaded; power off. fpu: 'shim' | 'fxsave' | 'none' | None (=
    default_fpu()). files: {name: host path} copied in, seen inside as /run/work/<name>
    (the guest's /tmp is its own tmpfs). timeout bounds the command inside; the VM as a
    whole gets timeout + 60 s before its process group is killed. Returns a Result."""
    res = Result()
    why = unusable_reason()
    if why:
        res.reason = why
        return res
    fpu = fpu or default_fpu()
    if fpu not in ("shim", "fxsave", "none"):
        raise ValueError("fpu must be 'shim', 'fxsave' or 'none'")
    res.fpu = fpu
    work = tempfile.mkdtemp(prefix="cpt-uml-")
    os.chmod(work, 0o700)
    out = os.path.join(work, "out")
    os.mkdir(out)
    for name, path in (files or {}).items():
        if "/" in name or name in ("out", "init.sh", "console", "xstate_shim.so"):
            raise ValueError("bad file name %r" % (name,))
        shutil.copy2(path, os.path.join(work, name))
    genv = dict(FXSAVE_ENV) if fpu == "fxsave" else {}
    genv[IN_VM_ENV] = "uml"
    genv["PYTHONDONTWRITEBYTECODE"] = "1"
    genv.update(env or {})
    init = INIT
    hostdirs = []
    for d in (os.path.realpath(cwd), os.path.realpath(ROOT), os.path.dirname(os.path.dirname(sys.executable))):
        if d.startswith(("/tmp/", "/run/")) and not any(d == h or d.startswith(h + "/") for h in hostdirs):
            hostdirs.append(d)
    for key, val in (("@HOSTDIRS@", " ".join(_sq(d) for d in hostdirs)), ("@WORK@", _sq(work)),
                     ("@MODULES_BASE@", MODULES_BASE),
                     ("@MODULES@", " ".join(modules)), ("@CWD@", _sq(cwd)),
                     ("@TIMEOUT@", str(int(timeout))), ("@CMD@", " ".join(_sq(a) for a in argv)),
                     ("@ENV@", " ".join("%s=%s" % (k, _sq(v)) for k, v in sorted(genv.items())))):
        init = init.replace(key, val)
    init_path = os.path.join(work, "init.sh")
    with open(init_path, "w") as f:
        f.write(init)
    os.chmod(init_path, 0o755)
    umid = "cpt%d-%s" % (os.getpid(), os.path.basename(work)[-6:])
    kargs = ["mem=%s" % mem, "root=/dev/root", "rootfstype=hostfs", "rootflags=/", "ro",
             "init=" + init_path, "uml_dir=" + work, "umid=" + umid, "con=null", "con0=fd:0,fd:1"]
    host_env = dict(os.environ, TMPDIR=work)
    host_env.pop("LD_PRELOAD", None)
    if fpu == "fxsave":
        # unknown name=value parameters become PID 1's environment: AVX off from the start
        kargs += ["%s=%s" % kv for kv in sorted(FXSAVE_ENV.items())]
        cmd = [sys.executable, os.path.abspath(__file__), "--exec-uml", UML] + kargs
    else:
        cmd = [UML] + kargs
        if fpu == "shim":
            try:
                host_env["LD_PRELOAD"] = build_shim(work)
            except (OSError, subprocess.SubprocessError) as exc:
                shutil.rmtree(work, ignore_errors=True)
                res.reason = str(exc)
                return res
    console_path = os.path.join(work, "console")
    t0 = time.monotonic()
    with open(console_path, "wb") as con:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=con, stderr=subprocess.STDOUT,
                                start_new_session=True, env=host_env)
        try:
            proc.wait(timeout + 60)
        except subprocess.TimeoutExpired:
            res.timed_out = True
            _kill_group(proc)
        except BaseException:  # interrupted: take the VM down with us
            _kill_group(proc)
            shutil.rmtree(work, ignore_errors=True)
            raise
    res.timings["total"] = round(time.monotonic() - t0, 2)
    # after a crash UML's helper processes can outlive it (same process group)
    if _group_members(proc.pid):
        _kill_group(proc)
    res.console = _read(console_path)
    started = _read(os.path.join(out, "started")).strip()
    res.started = bool(started)
    if started:
        res.timings["boot"] = float(started)
    ready = _read(os.path.join(out, "ready")).strip()
    if ready:
        res.timings["modules"] = float(ready)
    res.modules_log = _read(os.path.join(out, "modules"))
    res.output = _read(os.path.join(out, "output"))
    res.junit = _read(os.path.join(out, "junit.xml"))
    st = _read(os.path.join(out, "status")).strip()
    if st.isdigit():
        res.status = int(st)
        if res.status == 124:
            res.timed_out = True
    if not res.started:
        res.reason = _start_failure(res.console, proc.returncode)
    elif res.status is None and not res.reason:
        res.reason = "the command inside did not finish (VM exit %s)" % proc.returncode
    if keep:
        res.workdir = work
    else:
        shutil.rmtree(work, ignore_errors=True)
    return res


def _group_members(pgid):
    """PIDs in process group pgid (the VM's: linux.uml was started as a session leader)."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and int(fields[3]) == pgid:  # pgrp, session
            found.append(int(name))
    return found


def _kill_group(proc):
    try:
        os.killpg(proc.pid, 9)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        pass


def _start_failure(console, rc):
    for line in console.splitlines():
        if "failed, errno" in line or "Kernel panic" in line or "seccomp" in line:
            return "User-Mode Linux did not start its init (exit %s): %s" % (rc, line.strip())
    tail = " | ".join(console.strip().splitlines()[-3:])
    return "User-Mode Linux did not start its init (exit %s): %s" % (rc, tail or "no console output")


def run_pytest(args=("tests/kernel",), timeout=180, **kw):
    """pytest inside the VM (quiet, no cache written into the repository); the Result's
    .counts() then gives the inner run's tests/failures/errors/skipped."""
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=-ra",
            "--junitxml=/run/work/out/junit.xml"] + list(args)
    return run(argv, timeout=timeout, **kw)


def main(argv):
    if argv[:1] == ["--exec-uml"]:
        install_xstate_filter()
        os.execv(argv[1], argv[1:])
    import argparse

    ap = argparse.ArgumentParser(description="pytest inside User-Mode Linux")
    ap.add_argument("--timeout", type=int, default=180)
    ap.add_argument("--fpu", choices=("shim", "fxsave", "none"), default=None,
                    help="how UML's FPU switching is made to work (default: shim if cc exists)")
    ap.add_argument("--cmd", action="store_true", help="run ARGS as a command, not pytest arguments")
    ap.add_argument("args", nargs="*")
    a = ap.parse_args(argv)
    if a.cmd:
        res = run(a.args, timeout=a.timeout, fpu=a.fpu)
    else:
        res = run_pytest(a.args or ["tests/kernel"], timeout=a.timeout, fpu=a.fpu)
    sys.stdout.write(res.output)
    sys.stderr.write("\n[uml] started=%s status=%s fpu=%s timings=%s%s\n" % (
        res.started, res.status, res.fpu, res.timings, (" reason: " + res.reason) if res.reason else ""))
    if res.status is None:
        sys.stderr.write(res.console[-3000:])
        return 2
    return res.status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
