"""The kernel data plane (sit, ip6tnl) tested on a real kernel: boots Debian's User-Mode
Linux through tests/kernel/runner.py and runs tests/kernel/test_inside_*.py inside it.
A failure or hang inside fails here, with the inner output. Skips only where the VM
cannot start (not installed, not root, UML dying before its init), with the reason.
See docs/KERNEL.md."""

import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from tests.kernel import runner

pytestmark = pytest.mark.lab

INNER_TIMEOUT = 240  # s for the inner pytest run; the VM as a whole gets 60 s more
INNER_TESTS = 9      # tests in tests/kernel/test_inside_*.py: all must run, none skip


def _skip_unless_vm_can_start(res=None):
    why = runner.unusable_reason()
    if why:
        pytest.skip(why)
    if res is not None and not res.started:
        pytest.skip("User-Mode Linux could not start (fpu mode %s): %s\n%s"
                    % (res.fpu, res.reason, res.console[-2000:]))


def test_kernel_data_plane_inside_user_mode_linux():
    _skip_unless_vm_can_start()
    res = runner.run_pytest(["tests/kernel"], timeout=INNER_TIMEOUT)
    _skip_unless_vm_can_start(res)
    sys.stdout.write("[uml] fpu=%s timings=%s\n" % (res.fpu, res.timings))
    assert not res.timed_out, "the tests inside UML hung:\n" + res.summary()
    assert res.status == 0, "tests inside UML failed:\n" + res.summary()
    counts = res.counts()
    assert counts is not None, "no JUnit report from inside UML:\n" + res.summary()
    # all of them ran inside (a missing CPE_TUNNEL_IN_VM would skip them and pass)
    assert counts["skipped"] == 0 and counts["tests"] >= INNER_TESTS, "%s\n%s" % (counts, res.summary())


def test_guest_vector_registers_survive_page_faults():
    """tests/kernel/fpu_check.c: AVX / AVX-512 registers of a UML process across page
    faults and system calls. Intact with the xstate shim; lost with the seccomp/FXSAVE
    fallback (which is why that mode masks AVX in glibc and OpenSSL)."""
    _skip_unless_vm_can_start()
    cc = runner._cc()
    if cc is None:
        pytest.skip("no C compiler: the runner uses fpu='fxsave' here and fpu_check.c cannot be built")
    d = tempfile.mkdtemp(prefix="cpt-fpu-")
    try:
        exe = os.path.join(d, "fpu_check")
        src = os.path.join(os.path.dirname(runner.__file__), "fpu_check.c")
        r = subprocess.run([cc, "-O1", "-o", exe, src], check=False, capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0, r.stderr
        probe = subprocess.run([exe], check=False, capture_output=True, text=True, timeout=10)
        if "FPU-SKIP" in probe.stdout:
            pytest.skip("this CPU has no AVX")
        got = {}
        for fpu in ("shim", "fxsave"):
            res = runner.run(["/run/work/fpu_check"], timeout=60, modules=(), fpu=fpu,
                             files={"fpu_check": exe})
            _skip_unless_vm_can_start(res)
            got[fpu] = res
        shim, fx = got["shim"], got["fxsave"]
        assert shim.status == 0 and "FPU-OK" in shim.output, shim.summary()
        assert fx.status == 1 and "FPU-CORRUPT" in fx.output, fx.summary()
    finally:
        shutil.rmtree(d, ignore_errors=True)


_FILTER_CHECK = r"""
import ctypes, errno, os, sys
sys.path.insert(0, sys.argv[1])
from tests.kernel.runner import install_xstate_filter
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.restype = ctypes.c_long
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
buf = ctypes.create_string_buffer(4096)
class Iov(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
iov = Iov(ctypes.addressof(buf), 4096)
def call(req, addr):
    ctypes.set_errno(0)
    r = libc.ptrace(req, 1, addr, ctypes.byref(iov))
    return errno.errorcode.get(ctypes.get_errno(), "0") if r == -1 else "ok"
install_xstate_filter()
# pid 1 is not our tracee: the kernel says ESRCH, unless the filter answered first (EIO)
print(call(0x4204, 0x202), call(0x4205, 0x202), call(0x4204, 1), call(0x4205, 1),
      call(0x4204, 0x202 + (1 << 32)))
"""


def test_xstate_filter_answers_eio_only_to_xstate_regsets():
    if sys.platform != "linux" or os.uname().machine != "x86_64":
        pytest.skip("x86_64 Linux only")
    r = subprocess.run([sys.executable, "-c", _FILTER_CHECK, runner.ROOT], check=False, capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    # GETREGSET/SETREGSET of NT_X86_XSTATE -> EIO (filter); NT_PRSTATUS -> ESRCH (kernel);
    # and all 64 bits of the regset type count
    assert r.stdout.split() == ["EIO", "EIO", "ESRCH", "ESRCH", "ESRCH"], r.stdout
