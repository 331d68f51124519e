"""Memory footprint of cpe-tunneld (not a test; prints figures). Needs root.

Part 1, the running daemon, once per mode (a fresh namespace lab each, configured as
tests/e2e/ does):

    http-update   6in4 with the tunnelbroker.net-style update, reference broker, no NAT
    tsp-v6v4      TSP, 6in4 from the session (reference TSP broker), no NAT
    tsp-v6udpv4   TSP v6anyv4 behind the ISP's NAT: ends in IPv6-in-UDP
    tic-6in4      SixXS TIC + heartbeat (tic_tls try: STARTTLS), no NAT
    tic-ayiya     SixXS TIC + AYIYA behind the ISP's NAT
    v4v6          TSP v4v6 (IPv4 in IPv6) over an IPv6-only WAN

The daemon is started as the tests start it (tests/harness.py Daemon: `ip netns exec
cpe python -m cpe_tunnel.daemon -f -c FILE`, log level debug to a file). Once the tunnel
is up and one ping from the LAN host went through it, /proc/PID is read ("up"): VmRSS,
VmHWM (peak RSS), RssAnon / RssFile, Pss (smaps_rollup), VmSize, Threads, open fds and
the number of modules the daemon imported (from PYTHONPROFILEIMPORTTIME=1 on its stderr,
which costs no memory). Then the LAN host floods the tunnel for --seconds with `ping -f`
(--size bytes of payload) and /proc/PID is read again ("load"), then once more after
--settle s of quiet ("after"): growth between "up" and "after" would be a leak.

Part 2, import cost, in fresh interpreters of the venv's python (no lab): RSS and time of
`python -c pass`, of `import cpe_tunnel.daemon` (what every start pays before parsing
the config) and of the modules a running daemon imports (the list from part 1, imported
in that order), and the RSS each heavy third-party/stdlib module adds on its own.
Figures are medians of --runs interpreters. Two what-ifs for adapters/netlink.py: the
same modules without pyroute2's subtree (an under-estimate where our code later imports,
lazily, a module pyroute2 had already loaded: ssl for TIC's STARTTLS, ~4 MiB), and with
pyroute2.iproute imported without running pyroute2/__init__ (which imports all of
pyroute2). cpe_tunnel is byte-compiled first (its __pycache__, ignored by git), as an
installed package is; --source skips that.

    .venv/bin/python bench/memory.py [--modes http-update,tsp-v6v4,...] [--seconds 10]
                                     [--size 1000] [--settle 2] [--runs 5] [--no-lab]
                                     [--stack-kib 256] [--json FILE]
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tests import harness  # noqa: E402

MODES = ("http-update", "tsp-v6v4", "tsp-v6udpv4", "tic-6in4", "tic-ayiya", "v4v6")
TIC_ROUTED = {"T3740": "2001:db8:2f02::/48", "T5072": "2001:db8:2f01::/48"}
# what the interpreter imports before any of our code runs (-m: runpy)
STARTUP = {"site", "sitecustomize", "runpy", "zipimport", "_frozen_importlib_external", "_signal", "io", "_io",
           "marshal", "posix", "time", "codecs", "_codecs", "abc", "_abc", "_distutils_hack"}
HEAVY = ("pyroute2", "ssl", "http.client", "asyncio", "logging.handlers", "json", "hashlib",
         "ctypes", "subprocess", "threading", "selectors", "random", "socket")


# ---- reading /proc ------------------------------------------------------------------------

def proc_figures(pid):
    """Memory figures of a process, KiB (Threads and fds: counts)."""
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem", "VmSize", "VmData", "VmStk"):
                out[k] = int(v.split()[0])
            elif k == "Threads":
                out[k] = int(v)
    try:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            for line in f:
                if line.startswith("Pss:"):
                    out["Pss"] = int(line.split()[1])
    except OSError:
        out["Pss"] = None
    out["fds"] = len(os.listdir("/proc/%d/fd" % pid))
    return out


def daemon_pid(daemon):
    """The python process: `ip netns exec` execs the command in place (no fork)."""
    pid = daemon.proc.pid
    with open("/proc/%d/cmdline" % pid, "rb") as f:
        argv = f.read().split(b"\0")
    if not any(b"cpe_tunnel.daemon" in a for a in argv) or not os.path.basename(argv[0]).startswith(b"python"):
        raise RuntimeError("pid %d is not the daemon: %r" % (pid, argv))
    return pid


# ---- importtime output --------------------------------------------------------------------

def parse_importtime(text):
    """[(name, self_us, cumulative_us, parent or None)] from -X importtime lines, in the
    order they were printed (a module after the modules it imported)."""
    rows = []
    for line in text.splitlines():
        if not line.startswith("import time:") or "[us]" in line:
            continue
        parts = line.split("|", 2)
        if len(parts) != 3:
            continue
        try:
            self_us = int(parts[0].split(":", 1)[1])
            cum_us = int(parts[1])
        except (ValueError, IndexError):
            continue
        name_part = parts[2]
        depth = (len(name_part) - len(name_part.lstrip(" "))) // 2
        rows.append([name_part.strip(), self_us, cum_us, depth])
    # post-order with depths: walking backwards, the parent is the nearest shallower row
    stack = []
    out = [None] * len(rows)
    for i in range(len(rows) - 1, -1, -1):
        name, s, c, d = rows[i]
        while stack and stack[-1][0] >= d:
            stack.pop()
        out[i] = (name, s, c, stack[-1][1] if stack else None)
        stack.append((d, name))
    return out


def without_subtree(rows, root):
    """The modules of `rows` minus `root`, its submodules and whatever they imported first
    (what a process that never imports `root` would still import: the other modules
    pull in their own dependencies when imported)."""
    parent = {name: p for name, _s, _c, p in rows}

    def under(name):
        while name is not None:
            if name == root or name.startswith(root + "."):
                return True
            name = parent.get(name)
        return False

    return [name for name, _s, _c, _p in rows if not under(name)]


def direct_imports(rows):
    """Modules outside cpe_tunnel imported directly by cpe_tunnel code (or at top level),
    with their cumulative import time, largest first."""
    got = {}
    for name, _s, cum, parent in rows:
        if name.startswith(("cpe_tunnel", "encodings")) or name in STARTUP:
            continue
        if parent is None or parent.startswith("cpe_tunnel"):
            got[name] = max(got.get(name, 0), cum)
    return sorted(got.items(), key=lambda kv: -kv[1])


# ---- part 1: the running daemon -------------------------------------------------------------

def _tsp_extra(**kw):
    t = {"mode": "tsp", "server": ["203.0.113.18"], "username": "alice", "password": "wonderland",
         "host_type": "router", "prefix_len": 48, "keepalive_interval": 2, "ip6prefix": None}
    t.update(kw)
    return t


def _tic_daemon(lab, tid, ca_file):
    t = {"mode": "tic", "server": ["203.0.113.18"], "username": "CPE1-SIXXS", "password": "tic-secret-1",
         "tunnelid": tid, "ip6prefix": [TIC_ROUTED[tid]], "keepalive_interval": 2, "tic_tls": "try",
         "ca_file": ca_file}
    d = harness.Daemon(lab, mode="tic", prefix=TIC_ROUTED[tid], tunnel_extra=t)
    with open(d.path) as f:
        text = f.read()
    d.write_config(text.replace("config globals 'main'", "config globals 'main'\n\toption state_dir '%s'" % d.dir))
    return d


def setup_mode(mode):
    """(lab, daemon, family) with the lab built and the broker/PoP started; daemon not started."""
    from tests.lab import Lab

    nat = mode in ("tsp-v6udpv4", "tic-ayiya")
    lab = Lab(nat=nat, v6wan=(mode == "v4v6"))
    try:
        lab.build()
        if mode == "http-update":
            lab.start_broker(harness.broker_config())
            d = harness.Daemon(lab)
        elif mode in ("tsp-v6v4", "tsp-v6udpv4"):
            from tests.tsp_broker import example_config, start_tsp_broker

            start_tsp_broker(lab, example_config())
            tm = "v6v4" if mode == "tsp-v6v4" else "v6anyv4"
            d = harness.Daemon(lab, mode="tsp", prefix=None, tunnel_extra=_tsp_extra(tunnel_mode=tm))
        elif mode in ("tic-6in4", "tic-ayiya"):
            from tests.sixxs_pop import example_config, start_pop

            pop = start_pop(lab, example_config())
            d = _tic_daemon(lab, "T3740" if mode == "tic-6in4" else "T5072", pop.ca_file)
        elif mode == "v4v6":
            from tests.tsp_broker import example_config, start_tsp_broker

            lab.run("cpe", ["ip", "-4", "addr", "flush", "dev", "wan0"])
            lab.run("cpe", ["ip", "-4", "route", "flush", "table", "main"])
            start_tsp_broker(lab, example_config(listen6=lab.addrs["broker6"]))
            t = _tsp_extra(server=["[%s]" % lab.addrs["broker6"]], tunnel_mode="v4v6", prefix_len=28,
                           dataplane="userspace")
            d = harness.Daemon(lab, mode="tsp", prefix=None, tunnel_extra=t, lan_extra={"dns": None})
        else:
            raise ValueError("unknown mode %s" % mode)
    except BaseException:
        lab.teardown()
        raise
    return lab, d


def wait_traffic(lab, d, mode, timeout):
    """Wait for the tunnel to be up and one ping from the LAN host through it; returns
    (ping argv prefix for the flood: family, source, destination)."""
    import ipaddress

    if mode == "v4v6":
        st = d.wait_status(lambda s: s["state"] == "up" and s.get("delegated_prefixes4") and s.get("lan4"),
                           timeout=timeout, what="v4v6 up with a delegated IPv4 prefix")
        pfx = ipaddress.IPv4Network(st["delegated_prefixes4"][0])
        router = st["lan4"]["address"].split("/")[0]
        host = str(pfx.network_address + 2)
        lab.run("lan", ["ip", "addr", "replace", "%s/%d" % (host, pfx.prefixlen), "dev", "eth0"])
        lab.run("lan", ["ip", "route", "replace", "default", "via", router, "dev", "eth0"])
        dst = lab.addrs["v4host"]
        harness.wait_for(lambda: lab.ping4("lan", dst, count=1, timeout=1, src=host), timeout=timeout,
                         what="ping from the LAN host to the IPv4 host")
        return "-4", host, dst
    st = d.wait_status(lambda s: s["state"] == "up" and s["lans"] and s["lans"][0]["prefix"], timeout=timeout,
                       what="tunnel up with a LAN prefix")
    a = lab.wait_lan_address(st["lans"][0]["prefix"], timeout=timeout)
    if a is None:
        raise RuntimeError("the LAN host got no address in %s" % st["lans"][0]["prefix"])
    harness.wait_for(lambda: lab.ping6("lan", harness.V6HOST, count=1, timeout=1, src=a.address),
                     timeout=timeout, what="ping6 from the LAN host through the tunnel")
    return "-6", a.address, harness.V6HOST


def flood(lab, fam, src, dst, seconds, size):
    """ping -f from the LAN host for `seconds`; (transmitted, received)."""
    r = lab.run("lan", ["ping", fam, "-f", "-q", "-n", "-s", str(size), "-w", str(int(seconds)), "-I", src, dst],
                check=False, timeout=seconds + 15)
    tx = rx = None
    for line in r.stdout.splitlines():
        if "transmitted" in line:
            parts = line.split(",")
            try:
                tx = int(parts[0].split()[0])
                rx = int(parts[1].split()[0])
            except (IndexError, ValueError):
                pass
    return tx, rx


def byte_compile():
    """Write cpe_tunnel's .pyc files (the repository's __pycache__, ignored by git) as an
    installed package has them: where PYTHONDONTWRITEBYTECODE is set, as here, every start
    would otherwise compile each module from source, and keep the compiler's memory."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", os.path.join(ROOT, "cpe_tunnel")],
                   check=True, timeout=120, stdout=subprocess.DEVNULL)


def start_with_stack_size(d, env, kib):
    """harness.Daemon.start(), with threading.stack_size(kib KiB) set before the daemon's
    module runs (for every thread it starts), without touching the daemon."""
    d._log = open(d.log_path, "ab")  # noqa: SIM115 (closed by Daemon.stop, as harness does)
    code = ("import threading, runpy; threading.stack_size(%d); "
            "runpy.run_module('cpe_tunnel.daemon', run_name='__main__', alter_sys=True)" % (kib * 1024))
    argv = ["ip", "netns", "exec", d.lab.ns["cpe"], sys.executable, "-c", code, "-f", "-c", d.path]
    d.started_at = time.monotonic()
    d.proc = subprocess.Popen(argv, stdout=d._log, stderr=subprocess.STDOUT, cwd=ROOT,
                              env=dict(os.environ, PYTHONPATH=ROOT, **env))


def one_mode(mode, args):
    if not args.source:
        byte_compile()
    lab, d = setup_mode(mode)
    env = {"PYTHONPROFILEIMPORTTIME": "1"}
    try:
        if args.stack_kib:
            start_with_stack_size(d, env, args.stack_kib)
        else:
            d.start(env=env)
        fam, src, dst = wait_traffic(lab, d, mode, args.timeout)
        pid = daemon_pid(d)
        up = proc_figures(pid)
        st = d.status()
        t0 = time.monotonic()
        tx, rx = flood(lab, fam, src, dst, args.seconds, args.size)
        secs = time.monotonic() - t0
        load = proc_figures(pid)
        time.sleep(args.settle)
        after = proc_figures(pid)
        rows = parse_importtime(d.log())
        return {"mode": mode, "dataplane": st.get("dataplane"), "up": up, "load": load, "after": after,
                "flood": (tx, rx, secs), "modules": [r[0] for r in rows], "rows": rows}
    finally:
        d.stop()
        shutil.rmtree(d.dir, ignore_errors=True)
        lab.teardown()


def fmt_kib(v):
    return "-" if v is None else "%.1f" % (v / 1024.0)


def print_mode(r):
    tx, rx, secs = r["flood"]
    print("%s (%s data plane): %d modules imported; flood %s requests in %.1f s, %s replies"
          % (r["mode"], r["dataplane"], len(r["modules"]), tx, secs, rx))
    print("  %-6s %7s %7s %7s %7s %7s %8s %7s %4s" % ("", "RSS", "HWM", "Anon", "File", "Pss", "VmSize",
                                                       "Threads", "fds"))
    for k in ("up", "load", "after"):
        p = r[k]
        print("  %-6s %7s %7s %7s %7s %7s %8s %7d %4d" % (
            k, fmt_kib(p["VmRSS"]), fmt_kib(p["VmHWM"]), fmt_kib(p.get("RssAnon")), fmt_kib(p.get("RssFile")),
            fmt_kib(p.get("Pss")), fmt_kib(p["VmSize"]), p["Threads"], p["fds"]))
    print("  growth up -> after: RSS %+d KiB, Anon %+d KiB" % (
        r["after"]["VmRSS"] - r["up"]["VmRSS"], r["after"].get("RssAnon", 0) - r["up"].get("RssAnon", 0)),
        flush=True)


# ---- part 2: import cost ------------------------------------------------------------------

_PROBE = r"""
import sys, time
t = time.perf_counter()
import importlib
mods = sys.argv[1:]
if mods and mods[0].startswith("--bare="):
    # import the package's submodules without running its __init__ (pyroute2's imports
    # every submodule it has): an empty module object with the package's path
    import importlib.util, types
    name = mods.pop(0)[7:]
    spec = importlib.util.find_spec(name)
    pkg = types.ModuleType(name)
    pkg.__path__ = list(spec.submodule_search_locations)
    pkg.__spec__ = spec
    sys.modules[name] = pkg
for m in mods:
    try:
        importlib.import_module(m)
    except Exception:
        pass
t = time.perf_counter() - t
rss = 0
for line in open("/proc/self/status"):
    if line.startswith("VmRSS:"):
        rss = int(line.split()[1])
print(rss, len(sys.modules), t)
"""


def probe_imports(mods, runs, root=ROOT):
    """Median (RSS KiB, modules, seconds, wall seconds) of fresh interpreters importing
    `mods`, cpe_tunnel taken from `root`."""
    res = []
    env = dict(os.environ, PYTHONPATH=root)
    env.pop("PYTHONPROFILEIMPORTTIME", None)
    for _ in range(runs):
        t = time.monotonic()
        out = subprocess.run([sys.executable, "-c", _PROBE] + list(mods), capture_output=True, text=True,
                             env=env, cwd=root, timeout=60, check=True).stdout.split()
        wall = time.monotonic() - t
        res.append((int(out[0]), int(out[1]), float(out[2]), wall))
    return tuple(statistics.median(r[i] for r in res) for i in range(4))


def import_costs(runtime_modules, runs, source):
    print("\nimport cost (fresh `%s` interpreters, median of %d; cpe_tunnel %s):" % (
        os.path.basename(sys.executable), runs, "as it is on disk" if source else "byte-compiled"))
    print("  %-56s %8s %8s %9s %9s" % ("", "RSS MiB", "modules", "import ms", "wall ms"))
    if not source:
        byte_compile()
    base = probe_imports([], runs)
    rows = [("python -c pass", base),
            ("import cpe_tunnel.daemon", probe_imports(["cpe_tunnel.daemon"], runs))]
    for name, mods in runtime_modules:
        rows.append((name, probe_imports(mods, runs)))
    if runtime_modules and os.environ.get("PYTHONDONTWRITEBYTECODE"):
        # what each start costs where cpe_tunnel has no .pyc (PYTHONDONTWRITEBYTECODE, no
        # compiled package): a copy without __pycache__, compiled at every import
        tmp = tempfile.mkdtemp(prefix="cpe-tunnel-src-")
        try:
            shutil.copytree(os.path.join(ROOT, "cpe_tunnel"), os.path.join(tmp, "cpe_tunnel"),
                            ignore=shutil.ignore_patterns("__pycache__"))
            name, mods = runtime_modules[0]
            rows.append(("  %s, cpe_tunnel compiled from source" % name.split("(")[-1].rstrip(")"),
                         probe_imports(mods, runs, root=tmp)))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    for name, (rss, n, secs, wall) in rows:
        print("  %-56s %8.1f %8d %9.1f %9.0f" % (name, rss / 1024.0, n, secs * 1000, wall * 1000))
    print("\n  each on its own, over `python -c pass` (%.1f MiB):" % (base[0] / 1024.0))
    for m in HEAVY:
        rss, n, secs, _wall = probe_imports([m], runs)
        print("  %-22s %+8.1f MiB %+5d modules %7.1f ms" % (m, (rss - base[0]) / 1024.0, n - base[1], secs * 1000))
    sys.stdout.flush()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--modes", default=",".join(MODES), help="comma-separated, of: " + ", ".join(MODES))
    ap.add_argument("--seconds", type=float, default=10.0, help="length of the ping flood")
    ap.add_argument("--size", type=int, default=1000, help="ping payload bytes")
    ap.add_argument("--settle", type=float, default=2.0, help="quiet seconds before the last reading")
    ap.add_argument("--timeout", type=float, default=30.0, help="give up on a mode's start after this many s")
    ap.add_argument("--runs", type=int, default=5, help="interpreters per import figure")
    ap.add_argument("--stack-kib", type=int, default=0,
                    help="run the daemon with threading.stack_size(KIB*1024) (via a sitecustomize)")
    ap.add_argument("--source", action="store_true",
                    help="do not byte-compile cpe_tunnel first (where PYTHONDONTWRITEBYTECODE is set, "
                         "the daemon then compiles every module at start)")
    ap.add_argument("--no-lab", action="store_true", help="import costs only")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    for m in modes:
        if m not in MODES:
            ap.error("unknown mode %s" % m)
    results = []
    if not args.no_lab:
        if os.geteuid() != 0:
            print("bench/memory.py: run as root (the lab builds network namespaces), or --no-lab")
            return 1
        print("cpe-tunneld memory (MiB; Threads and fds: counts), per mode: up = tunnel up + one ping; "
              "load = after a %.0f s ping flood (%d-byte payload); after = %.0f s later"
              % (args.seconds, args.size, args.settle))
        for m in modes:
            try:
                r = one_mode(m, args)
            except Exception as e:  # noqa: BLE001 (report and go on with the other modes)
                text = "\n".join(x for x in str(e).splitlines() if not x.startswith("import time:"))
                print("%s: FAILED: %s" % (m, text[-3000:]), flush=True)
                continue
            results.append(r)
            print_mode(r)
        if results:
            top = direct_imports(results[0]["rows"])
            print("\nimported directly by cpe_tunnel code in %s, by cumulative import time (ms):" % results[0]["mode"])
            print("  " + ", ".join("%s %.0f" % (n, us / 1000.0) for n, us in top[:14]))
    runtime = []
    for r in results[:1]:
        runtime.append(("modules a running daemon imports (%s)" % r["mode"], r["modules"]))
        # what the same daemon would cost if netlink did not go through pyroute2: only its
        # own modules (each pulls in what it needs), adapters.netlink imports pyroute2 lazily
        runtime.append(("  the same without pyroute2 and what it imported",
                        without_subtree(r["rows"], "pyroute2")))
        # pyroute2's __init__ imports all of pyroute2; netlink needs pyroute2.iproute only
        runtime.append(("  the same, pyroute2.iproute without pyroute2/__init__",
                        ["--bare=pyroute2"] + without_subtree(r["rows"], "pyroute2")
                        + ["pyroute2.iproute", "pyroute2.netlink.exceptions"]))
    seen = set()
    for r in results[1:]:
        key = tuple(sorted(r["modules"]))
        if key not in seen and r["mode"] in ("tic-ayiya", "tsp-v6udpv4"):
            seen.add(key)
            runtime.append(("modules a running daemon imports (%s)" % r["mode"], r["modules"]))
    import_costs(runtime, args.runs, args.source)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
