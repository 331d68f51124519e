"""The namespace lab: the network of DESIGN.md, built from network namespaces.

 [lan] ── br-lan ── [cpe] ── [isp (NAT?)] ── [inet] ── [broker] ── [v6host]

Addresses (documentation ranges only):

  link              left side                      right side
  lan  - cpe        lan eth0 (SLAAC only)          cpe lanp0, port of bridge br-lan (no global v6)
  cpe  - isp        cpe wan0 192.0.2.2/24          isp inside0 192.0.2.1/24          (no NAT)
                    cpe wan0 198.51.100.2/24       isp inside0 198.51.100.1/24       (one NAT)
                    cpe wan0 198.51.100.2/25       isp1 inside0 198.51.100.1/25      (two NATs)
  isp1 - isp2       isp1 outside0 198.51.100.130/25  isp2 inside0 198.51.100.129/25  (two NATs)
  isp  - inet       isp outside0 203.0.113.2/28    inet isp0 203.0.113.1/28
  inet - broker     inet brk0 203.0.113.17/28      broker inet0 203.0.113.18/28
  broker - v6host   broker v6h0 2001:db8:ffff::1/64  v6host eth0 2001:db8:ffff::2/64

With ``v6wan=True`` (one ISP hop only) the WAN path also carries IPv6, routed, no NAT66,
and the v6 host also has IPv4 (the "IPv4 host behind the broker" for v4v6 tests):

  cpe  - isp        cpe wan0 2001:db8:c0::2/64     isp inside0 2001:db8:c0::1/64
  isp  - inet       isp outside0 2001:db8:c1::2/64 inet isp0 2001:db8:c1::1/64
  inet - broker     inet brk0 2001:db8:c2::1/64    broker inet0 2001:db8:c2::2/64
  broker - v6host   broker v6h0 203.0.113.33/28    v6host eth0 203.0.113.34/28

  inet routes 2001:db8:c0::/48 to the isp, the broker routes it to inet; the v6 host's
  IPv4 default route points to the broker (which routes the v4v6 pools into its tunnels).

Default routes point toward inet (cpe -> isp -> inet; broker -> inet; v6host -> broker).
inet routes 192.0.2.0/24 to the isp when there is no NAT; with NAT, every NAT masquerades
out of its outside0 and nothing routes back to the inside networks (a real NAT).
Forwarding is on in cpe, isp(s), inet and broker; accept_dad=0 on every lab link so
addresses are usable at once; the lan host keeps accept_ra=1 / forwarding=0 (SLAAC).

Namespaces are named ``ct<pid>-<n>-<role>`` (or ``<prefix>-<role>``); interface names are
fixed per namespace. Teardown runs from ``with``, on exceptions, from atexit, and on SIGTERM
(turned into SystemExit when no other handler is installed).
"""

import atexit
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import namedtuple
from dataclasses import dataclass

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_counter = [0]
_live = set()
_lock = threading.Lock()
_process_setup_done = [False]


class LabError(RuntimeError):
    pass


@dataclass
class LanAddr:
    address: str
    prefixlen: int
    tentative: bool
    deprecated: bool
    dynamic: bool
    preferred_lft: object  # int seconds or "forever"
    valid_lft: object


HttpResult = namedtuple("HttpResult", "status body headers error")


def _ip_batch(lines, netns=None, force=False, timeout=30):
    argv = ["ip"]
    if netns:
        argv += ["-n", netns]
    if force:
        argv.append("-force")
    argv += ["-batch", "-"]
    r = subprocess.run(argv, input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0 and not force:
        raise LabError(
            "ip -batch failed (%s): %s\n--- batch ---\n%s"
            % (netns or "host", r.stderr.strip(), "\n".join(lines))
        )
    return r


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cleanup_stale(verbose=False):
    """Delete lab namespaces (ct<pid>-<n>-<role>) left by runs whose process is gone."""
    r = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    stale = []
    for line in r.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        m = re.match(r"^ct(\d+)-\d+-[a-z0-9]+$", name)
        if m and int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1))):
            stale.append(name)
    if stale:
        _ip_batch(["netns del %s" % n for n in stale], force=True)
        if verbose:
            sys.stderr.write("lab: removed stale namespaces %s\n" % " ".join(stale))
    return stale


def _teardown_all():
    if os.getpid() != _owner_pid[0]:
        return  # a forked child's atexit: the labs belong to the parent
    for lab in list(_live):
        try:
            lab.teardown()
        except Exception as exc:  # best effort at exit
            sys.stderr.write("lab: teardown at exit failed: %s\n" % exc)


_owner_pid = [None]


def _on_signal(signum, frame):
    if os.getpid() != _owner_pid[0]:
        # A forked child (pyroute2's NetNS forks helpers and ends them with SIGTERM)
        # inherits this handler: it must die as it would have by default, not unwind
        # into a copy of the test run and tear down the parent's labs.
        os._exit(128 + signum)
    raise SystemExit(128 + signum)


def _process_setup():
    if _process_setup_done[0]:
        return
    _process_setup_done[0] = True
    _owner_pid[0] = os.getpid()
    atexit.register(_teardown_all)
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGHUP):
            try:
                if signal.getsignal(sig) == signal.SIG_DFL:
                    signal.signal(sig, _on_signal)
            except (ValueError, OSError):
                pass
    try:
        cleanup_stale()
    except Exception:
        pass


class Lab:
    """Build with ``with Lab(...) as lab:`` or lab.build() / lab.teardown().

    nat: put the cpe behind NAT; nat_hops: 1 or 2 NATs in a row (only with nat=True).
    prefix: namespace name prefix (default ``ct<pid>-<n>``); namespaces are ``<prefix>-<role>``.
    """

    def __init__(self, nat=False, nat_hops=1, prefix=None, v6wan=False):
        if nat_hops not in (1, 2):
            raise ValueError("nat_hops must be 1 or 2")
        if v6wan and nat and nat_hops == 2:
            raise ValueError("v6wan needs a single ISP hop")
        self.v6wan = bool(v6wan)
        self.nat = bool(nat)
        self.nat_hops = nat_hops if self.nat else 0
        with _lock:
            n = _counter[0]
            _counter[0] += 1
        self.prefix = prefix or "ct%d-%d" % (os.getpid(), n)
        isps = ["isp1", "isp2"] if self.nat_hops == 2 else ["isp"]
        self.roles = ["lan", "cpe"] + isps + ["inet", "broker", "v6host"]
        self.ns = {r: "%s-%s" % (self.prefix, r) for r in self.roles}
        if self.nat_hops == 2:
            self.ns["isp"] = self.ns["isp2"]  # 'isp' always names the NAT facing inet
        self.isp_roles = isps
        self.built = False
        self.workdir = None
        self._procs = []
        self._brokers = []
        self._counters = {}
        self.ifnames = {
            "lan": "eth0",
            "cpe_lan": "br-lan",
            "cpe_lan_port": "lanp0",
            "cpe_wan": "wan0",
            "isp_inside": "inside0",
            "isp_outside": "outside0",
            "inet_isp": "isp0",
            "inet_broker": "brk0",
            "broker_inet": "inet0",
            "broker_v6": "v6h0",
            "v6host": "eth0",
        }
        self._plan()

    # ---- topology -----------------------------------------------------------------------
    def _plan(self):
        a = {}
        if not self.nat:
            wan_cidr, gw, plen = "192.0.2.2/24", "192.0.2.1", 24
        elif self.nat_hops == 1:
            wan_cidr, gw, plen = "198.51.100.2/24", "198.51.100.1", 24
        else:
            wan_cidr, gw, plen = "198.51.100.2/25", "198.51.100.1", 25
        a["cpe_wan_cidr"] = wan_cidr
        a["cpe_wan"] = wan_cidr.split("/")[0]
        a["cpe_gw"] = gw
        a["isp_inside"] = gw
        a["isp_outside"] = "203.0.113.2"
        a["inet_isp"] = "203.0.113.1"
        a["inet_broker"] = "203.0.113.17"
        a["broker"] = "203.0.113.18"
        a["broker_v6"] = "2001:db8:ffff::1"
        a["v6host"] = "2001:db8:ffff::2"
        a["v6host_net"] = "2001:db8:ffff::/64"
        if self.nat_hops == 2:
            a["isp1_inside"] = gw
            a["isp1_outside"] = "198.51.100.130"
            a["isp2_inside"] = "198.51.100.129"
        a["public"] = a["isp_outside"] if self.nat else a["cpe_wan"]
        if self.v6wan:
            a["cpe_wan6_cidr"] = "2001:db8:c0::2/64"
            a["cpe_wan6"] = "2001:db8:c0::2"
            a["cpe_gw6"] = "2001:db8:c0::1"
            a["isp_outside6"] = "2001:db8:c1::2"
            a["inet_isp6"] = "2001:db8:c1::1"
            a["inet_broker6"] = "2001:db8:c2::1"
            a["broker6"] = "2001:db8:c2::2"
            a["broker_v4host"] = "203.0.113.33"
            a["v4host"] = "203.0.113.34"
        self.addrs = a

        first_isp, last_isp = self.isp_roles[0], self.isp_roles[-1]
        self._links = [("lan", "eth0", "cpe", "lanp0"), ("cpe", "wan0", first_isp, "inside0")]
        if self.nat_hops == 2:
            self._links.append(("isp1", "outside0", "isp2", "inside0"))
        self._links += [
            (last_isp, "outside0", "inet", "isp0"),
            ("inet", "brk0", "broker", "inet0"),
            ("broker", "v6h0", "v6host", "eth0"),
        ]

        cmds = {r: [] for r in self.roles}
        cmds["lan"] += ["link set eth0 up"]
        cmds["cpe"] += [
            "link set lanp0 master br-lan",
            "link set lanp0 up",
            "link set br-lan up",
            "addr add %s dev wan0" % wan_cidr,
            "link set wan0 up",
            "route add default via %s dev wan0" % gw,
        ]
        if self.nat_hops == 2:
            cmds["isp1"] += [
                "addr add 198.51.100.1/25 dev inside0",
                "link set inside0 up",
                "addr add 198.51.100.130/25 dev outside0",
                "link set outside0 up",
                "route add default via 198.51.100.129 dev outside0",
            ]
            cmds["isp2"] += ["addr add 198.51.100.129/25 dev inside0", "link set inside0 up"]
        else:
            cmds["isp"] += ["addr add %s/%d dev inside0" % (gw, plen), "link set inside0 up"]
        cmds[last_isp] += [
            "addr add 203.0.113.2/28 dev outside0",
            "link set outside0 up",
            "route add default via 203.0.113.1 dev outside0",
        ]
        cmds["inet"] += [
            "addr add 203.0.113.1/28 dev isp0",
            "link set isp0 up",
            "addr add 203.0.113.17/28 dev brk0",
            "link set brk0 up",
        ]
        if not self.nat:
            cmds["inet"].append("route add 192.0.2.0/24 via 203.0.113.2 dev isp0")
        cmds["broker"] += [
            "addr add 203.0.113.18/28 dev inet0",
            "link set inet0 up",
            "route add default via 203.0.113.17 dev inet0",
            "addr add 2001:db8:ffff::1/64 dev v6h0",
            "link set v6h0 up",
        ]
        cmds["v6host"] += [
            "addr add 2001:db8:ffff::2/64 dev eth0",
            "link set eth0 up",
            "route add ::/0 via 2001:db8:ffff::1 dev eth0",
        ]
        if self.v6wan:
            cmds["cpe"] += [
                "addr add 2001:db8:c0::2/64 dev wan0",
                "route add ::/0 via 2001:db8:c0::1 dev wan0",
            ]
            cmds["isp"] += [
                "addr add 2001:db8:c0::1/64 dev inside0",
                "addr add 2001:db8:c1::2/64 dev outside0",
                "route add ::/0 via 2001:db8:c1::1 dev outside0",
            ]
            cmds["inet"] += [
                "addr add 2001:db8:c1::1/64 dev isp0",
                "addr add 2001:db8:c2::1/64 dev brk0",
                "route add 2001:db8:c0::/48 via 2001:db8:c1::2 dev isp0",
            ]
            cmds["broker"] += [
                "addr add 2001:db8:c2::2/64 dev inet0",
                "route add 2001:db8:c0::/48 via 2001:db8:c2::1 dev inet0",
                "addr add 203.0.113.33/28 dev v6h0",
            ]
            cmds["v6host"] += [
                "addr add 203.0.113.34/28 dev eth0",
                "route add default via 203.0.113.33 dev eth0",
            ]
        self._cmds = cmds

        routers = {"cpe", "inet", "broker"} | set(self.isp_roles)
        ifaces = {r: [] for r in self.roles}
        for ra, ia, rb, ib in self._links:
            ifaces[ra].append(ia)
            ifaces[rb].append(ib)
        ifaces["cpe"].append("br-lan")
        self._sysctls = {}
        for r in self.roles:
            s = [
                ("net/ipv4/conf/all/rp_filter", "0"),
                ("net/ipv4/conf/default/rp_filter", "0"),
                ("net/ipv6/conf/default/accept_dad", "0"),
            ]
            for i in ifaces[r]:
                s.append(("net/ipv6/conf/%s/accept_dad" % i, "0"))
                s.append(("net/ipv4/conf/%s/rp_filter" % i, "0"))
            if r in routers:
                s += [("net/ipv4/ip_forward", "1"), ("net/ipv6/conf/all/forwarding", "1")]
            self._sysctls[r] = s

        self._nft = {}
        for r in self.isp_roles if self.nat else []:
            self._nft[r] = self._nat_ruleset("masquerade")
        self._nft["v6host"] = (
            "table inet ctlab {\n"
            "  counter echo_all { }\n"
            "  chain input {\n"
            "    type filter hook input priority 0; policy accept;\n"
            '    icmpv6 type echo-request counter name "echo_all"\n'
            "  }\n"
            "}\n"
        )

    @staticmethod
    def _nat_ruleset(action):
        return (
            "table ip ctnat {\n"
            "  chain postrouting {\n"
            "    type nat hook postrouting priority srcnat; policy accept;\n"
            '    oifname "outside0" %s\n'
            "  }\n"
            "}\n" % action
        )

    # ---- build / teardown ----------------------------------------------------------------
    def __enter__(self):
        self.build()
        return self

    def __exit__(self, *exc):
        self.teardown()
        return False

    def build(self):
        if self.built:
            return self
        _process_setup()
        self.workdir = tempfile.mkdtemp(prefix="%s-" % self.prefix)
        with _lock:
            _live.add(self)
        self.built = True
        try:
            self._build()
        except BaseException:
            self.teardown()
            raise
        return self

    def _build(self):
        _ip_batch(["netns add %s" % self.ns[r] for r in self.roles])
        lines = []
        for ra, ia, rb, ib in self._links:
            lines.append(
                "link add %s netns %s type veth peer name %s netns %s" % (ia, self.ns[ra], ib, self.ns[rb])
            )
        lines.append("link add br-lan netns %s type bridge mcast_snooping 0" % self.ns["cpe"])
        _ip_batch(lines)
        procs = []
        for r in self.roles:
            script = ["set -e", "ip link set lo up"]
            for path, val in self._sysctls[r]:
                script.append("echo %s > /proc/sys/%s" % (val, path))
            bf = os.path.join(self.workdir, "%s.ip" % r)
            with open(bf, "w") as f:
                f.write("\n".join(self._cmds[r]) + "\n")
            script.append("ip -batch %s" % bf)
            if r in self._nft:
                nf = os.path.join(self.workdir, "%s.nft" % r)
                with open(nf, "w") as f:
                    f.write(self._nft[r])
                script.append("nft -f %s" % nf)
            sf = os.path.join(self.workdir, "%s.sh" % r)
            with open(sf, "w") as f:
                f.write("\n".join(script) + "\n")
            procs.append(
                (
                    r,
                    subprocess.Popen(
                        ["ip", "netns", "exec", self.ns[r], "sh", sf],
                        stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE,
                        text=True,
                    ),
                )
            )
        errors = []
        for r, p in procs:
            out, err = p.communicate(timeout=30)
            if p.returncode != 0:
                errors.append("%s: %s" % (r, err.strip()))
        if errors:
            raise LabError("lab setup failed:\n" + "\n".join(errors))
        self._wait_links_ready()

    def _wait_links_ready(self, timeout=10.0):
        """Carrier on every lab link (linkwatch can lag ~1 s, the bridge too) and an IPv6
        link-local address on the links that carry IPv6, so the lab is usable on return."""
        v6 = [("lan", "eth0"), ("cpe", "br-lan"), ("broker", "v6h0"), ("v6host", "eth0")]
        if self.v6wan:
            v6 += [("cpe", "wan0"), ("isp", "inside0"), ("isp", "outside0"), ("inet", "isp0"), ("inet", "brk0"),
                   ("broker", "inet0")]
        script = []
        for r in self.roles:
            script.append("echo '@%s'; ip -n %s -o link show up" % (r, self.ns[r]))
        for r, dev in v6:
            script.append(
                "echo '#%s %s'; ip -n %s -6 -o addr show dev %s scope link" % (r, dev, self.ns[r], dev)
            )
        script = "\n".join(script)
        deadline = time.monotonic() + timeout
        while True:
            out = subprocess.run(["sh", "-c", script], capture_output=True, text=True).stdout
            waiting = []
            section = None
            v6ok = {}
            for line in out.splitlines():
                if line.startswith("@"):
                    section = ("link", line[1:])
                elif line.startswith("#"):
                    section = ("v6", line[1:])
                    v6ok[section[1]] = False
                elif section and section[0] == "link" and "NO-CARRIER" in line:
                    waiting.append("%s: %s" % (section[1], line.split(":")[1].strip()))
                elif section and section[0] == "v6" and "inet6 fe80" in line and "tentative" not in line:
                    v6ok[section[1]] = True
            waiting += ["%s link-local" % k for k, ok in v6ok.items() if not ok]
            if not waiting:
                return
            if time.monotonic() >= deadline:
                raise LabError("lab links not ready after %.0f s: %s" % (timeout, ", ".join(waiting)))
            time.sleep(0.05)

    def teardown(self):
        """Stop everything started in the lab, delete its namespaces. Safe to call twice."""
        if not self.built:
            return
        errors = []
        for h in list(self._brokers):
            try:
                h.stop()
            except Exception as exc:
                errors.append("broker stop: %s" % exc)
        self._brokers = []
        self._kill_tracked()
        names = [self.ns[r] for r in self.roles]
        for name in names:  # anything else still running inside our namespaces
            r = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True)
            for tok in r.stdout.split():
                try:
                    os.kill(int(tok), signal.SIGKILL)
                except (ValueError, ProcessLookupError):
                    pass
        r = _ip_batch(["netns del %s" % n for n in names], force=True)
        left = set(subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split())
        still = [n for n in names if n in left]
        if still:
            errors.append("namespaces not removed: %s (%s)" % (" ".join(still), r.stderr.strip()))
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None
        self.built = False
        with _lock:
            _live.discard(self)
        if errors:
            raise LabError("; ".join(errors))

    def _kill_tracked(self):
        procs, self._procs = self._procs, []
        alive = [p for p in procs if p.poll() is None]
        for p in alive:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + 2.0
        for p in alive:
            try:
                p.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                try:
                    p.wait(2)
                except subprocess.TimeoutExpired:
                    pass

    # ---- running things ------------------------------------------------------------------
    def _nsname(self, ns):
        if ns is None:
            return None
        if ns in self.ns:
            return self.ns[ns]
        if ns in self.ns.values():
            return ns
        raise LabError("no namespace %r in this lab (roles: %s)" % (ns, ", ".join(sorted(self.ns))))

    def _argv(self, ns, args):
        if len(args) == 1 and isinstance(args[0], str):
            argv = ["sh", "-c", args[0]]
        elif len(args) == 1 and isinstance(args[0], (list, tuple)):
            argv = [str(a) for a in args[0]]
        else:
            argv = [str(a) for a in args]
        if not argv:
            raise LabError("nothing to run")
        name = self._nsname(ns)
        return (["ip", "netns", "exec", name] if name else []) + argv

    def run(self, ns, *args, check=True, timeout=30, input=None, env=None):
        """Run a command in namespace `ns` (a role like 'cpe', or None for the host).

        One string argument runs through ``sh -c``; otherwise the arguments (or one list)
        are the argv. Returns CompletedProcess with text stdout/stderr; raises LabError
        on a non-zero exit when check is true."""
        argv = self._argv(ns, args)
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, input=input, env=env)
        if check and r.returncode != 0:
            raise LabError(
                "%s exited %d: %s%s"
                % (
                    " ".join(argv[4:] if ns else argv),
                    r.returncode,
                    r.stderr.strip()[-2000:],
                    (" / " + r.stdout.strip()[-500:]) if r.stdout.strip() else "",
                )
            )
        return r

    def popen(self, ns, argv, **kw):
        """Start a long-running process in `ns`; tracked and killed on teardown."""
        full = self._argv(ns, (argv,))  # a string runs through sh -c, a list is the argv
        kw.setdefault("stdin", subprocess.DEVNULL)
        kw.setdefault("start_new_session", True)
        p = subprocess.Popen(full, **kw)
        self._procs.append(p)
        return p

    def call_in(self, ns, fn, *args, timeout=60, **kw):
        """Call fn(*args, **kw) in a helper thread that has entered namespace `ns` (setns);
        sockets it opens live in that namespace. Returns fn's result or re-raises its error.
        Cheaper than starting a process; fn must not change the thread's other state."""
        return call_in_netns(self._nsname(ns), fn, *args, timeout=timeout, **kw)

    def python(self, ns, module, *args, timeout=30, check=True, env=None, input=None):
        """Run ``python -m module args`` of this repository inside `ns`."""
        e = dict(os.environ)
        e["PYTHONPATH"] = REPO_ROOT + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
        if env:
            e.update(env)
        return self.run(
            ns,
            [sys.executable, "-m", module] + [str(a) for a in args],
            timeout=timeout,
            check=check,
            env=e,
            input=input,
        )

    def nft(self, ns, ruleset_text):
        """Load an nftables ruleset (``nft -f -`` syntax) in `ns`."""
        return self.run(ns, ["nft", "-f", "-"], input=ruleset_text)

    def sysctl(self, ns, name, value):
        path = "/proc/sys/" + name.replace(".", "/")
        return self.run(ns, ["sh", "-c", 'echo "$1" > "$2"', "sh", str(value), path])

    def read_sysctl(self, ns, name):
        return self.run(ns, ["cat", "/proc/sys/" + name.replace(".", "/")]).stdout.strip()

    # ---- changing the network -------------------------------------------------------------
    def _ensure_inside_address(self, ns, family, addr, prefixlen, extra=()):
        """Add addr/prefixlen to `ns`'s inside0 unless it is there already."""
        have = self.run(ns, ["ip", family, "-o", "addr", "show", "dev", "inside0"]).stdout
        if " %s/" % addr not in have:
            self.run(ns, ["ip", "addr", "add", "%s/%d" % (addr, prefixlen), "dev", "inside0"] + list(extra))

    def set_wan_address(self, new_cidr, gw):
        """Renumber the cpe WAN the way DHCP does: delete the old address, add the new one,
        replace the default route. Makes sure the isp has `gw` on its inside link (and, without
        NAT, that inet routes the new network to the isp)."""
        import ipaddress

        iface = ipaddress.IPv4Interface(new_cidr)
        gw_ip = ipaddress.IPv4Address(gw)
        if gw_ip not in iface.network:
            raise LabError("gateway %s is not inside %s" % (gw, new_cidr))
        isp = self.isp_roles[0]
        self._ensure_inside_address(isp, "-4", gw, iface.network.prefixlen)
        old = self.addrs["cpe_wan_cidr"]
        _ip_batch(
            [
                "addr del %s dev wan0" % old,
                "addr add %s dev wan0" % iface.with_prefixlen,
                "route replace default via %s dev wan0" % gw,
            ],
            netns=self.ns["cpe"],
        )
        if not self.nat:
            self.run(
                "inet", ["ip", "route", "replace", str(iface.network), "via", "203.0.113.2", "dev", "isp0"]
            )
        self.addrs["cpe_wan_cidr"] = iface.with_prefixlen
        self.addrs["cpe_wan"] = str(iface.ip)
        self.addrs["cpe_gw"] = gw
        if not self.nat:
            self.addrs["public"] = str(iface.ip)

    def set_wan_address6(self, new_cidr):
        """Renumber the cpe's WAN IPv6 address (v6wan labs): the old address goes, the new
        one (inside 2001:db8:c0::/48, which the isp and inet route to the cpe) comes.
        When it is outside the current /64, the isp gets ::1 of the new /64 and the cpe's
        IPv6 default route points there."""
        import ipaddress

        if not self.v6wan:
            raise LabError("set_wan_address6 needs a lab with v6wan=True")
        iface = ipaddress.IPv6Interface(new_cidr)
        if not iface.network.subnet_of(ipaddress.IPv6Network("2001:db8:c0::/48")):
            raise LabError("%s is not inside 2001:db8:c0::/48" % new_cidr)
        gw = str(iface.network.network_address + 1)
        self._ensure_inside_address("isp", "-6", gw, iface.network.prefixlen, ["nodad"])
        old = self.addrs["cpe_wan6_cidr"]
        _ip_batch(
            [
                "addr add %s dev wan0 nodad" % iface.with_prefixlen,
                "addr del %s dev wan0" % old,
                "route replace ::/0 via %s dev wan0" % gw,
            ],
            netns=self.ns["cpe"],
        )
        self.addrs["cpe_wan6_cidr"] = iface.with_prefixlen
        self.addrs["cpe_wan6"] = str(iface.ip)
        self.addrs["cpe_gw6"] = gw

    def set_nat_public(self, ip):
        """Change the outermost NAT's public address: add `ip` (in 203.0.113.0/28, or a CIDR) to
        its outside0, SNAT to it instead of masquerading, and flush its conntrack table."""
        if not self.nat:
            raise LabError("set_nat_public needs a lab with nat=True")
        cidr = ip if "/" in ip else ip + "/28"
        addr = cidr.split("/")[0]
        isp = self.isp_roles[-1]
        self.run(isp, ["ip", "addr", "replace", cidr, "dev", "outside0"])
        self.nft(isp, "flush table ip ctnat\n" + self._nat_ruleset("snat to %s" % addr))
        self.flush_conntrack(isp)
        self.addrs["public"] = addr

    def flush_conntrack(self, ns, method=None):
        """Empty the conntrack table of `ns`: `conntrack -F` when the tool is installed
        (Debian package conntrack), otherwise pyroute2's netlink Conntrack().flush() run in
        the namespace. method: None (choose), "tool" or "netlink"."""
        if method is None:
            method = "tool" if shutil.which("conntrack") else "netlink"
        if method == "tool":
            self.run(ns, ["conntrack", "-F"])
        elif method == "netlink":
            code = "from pyroute2 import Conntrack\nc = Conntrack()\nc.flush()\nc.close()\n"
            self.run(ns, [sys.executable, "-c", code])
        else:
            raise ValueError("method must be None, 'tool' or 'netlink'")

    def conntrack_count(self, ns):
        return int(self.read_sysctl(ns, "net.netfilter.nf_conntrack_count"))

    def set_conntrack_timeouts(self, ns, generic=None, udp=None, udp_stream=None):
        """Set conntrack timeouts (seconds) in `ns`: generic protocols (e.g. proto 41), UDP."""
        for name, val in (
            ("nf_conntrack_generic_timeout", generic),
            ("nf_conntrack_udp_timeout", udp),
            ("nf_conntrack_udp_timeout_stream", udp_stream),
        ):
            if val is not None:
                self.sysctl(ns, "net.netfilter." + name, int(val))

    # ---- observing ------------------------------------------------------------------------
    def lan_addresses(self):
        """Global IPv6 addresses of the lan host, as LanAddr (with tentative/deprecated flags)."""
        r = self.run("lan", ["ip", "-j", "-6", "addr", "show", "dev", "eth0", "scope", "global"])
        out = []
        for link in json.loads(r.stdout or "[]"):
            for ai in link.get("addr_info", []):
                if ai.get("family") != "inet6" or ai.get("scope") != "global":
                    continue
                out.append(
                    LanAddr(
                        address=ai["local"],
                        prefixlen=ai.get("prefixlen"),
                        tentative=bool(ai.get("tentative")),
                        deprecated=bool(ai.get("deprecated")),
                        dynamic=bool(ai.get("dynamic")),
                        preferred_lft=_lft(ai.get("preferred_life_time")),
                        valid_lft=_lft(ai.get("valid_life_time")),
                    )
                )
        return out

    def wait_lan_address(self, prefix=None, timeout=10.0, interval=0.1):
        """Wait until the lan host has a usable (not tentative, not deprecated) global address,
        inside `prefix` if given; return it (LanAddr) or None on timeout."""
        import ipaddress

        net = ipaddress.IPv6Network(prefix) if prefix else None
        deadline = time.monotonic() + timeout
        while True:
            for a in self.lan_addresses():
                if (
                    not a.tentative
                    and not a.deprecated
                    and (net is None or ipaddress.IPv6Address(a.address) in net)
                ):
                    return a
            if time.monotonic() >= deadline:
                return None
            time.sleep(interval)

    def _ping(self, family, src_ns, dst, count, timeout, src):
        argv = ["ping", family, "-n", "-q", "-c", str(count), "-i", "0.2", "-W", str(timeout)]
        if src:
            argv += ["-I", src]
        r = self.run(src_ns, argv + [dst], check=False, timeout=count * (timeout + 1) + 5)
        return r.returncode == 0

    def ping6(self, src_ns, dst, count=1, timeout=2, src=None):
        """True when at least one ICMPv6 echo reply comes back within `timeout` s per probe."""
        return self._ping("-6", src_ns, dst, count, timeout, src)

    def ping4(self, src_ns, dst, count=1, timeout=2, src=None):
        return self._ping("-4", src_ns, dst, count, timeout, src)

    def _echo_counter(self, key, name_prefix, match):
        """The packets counted by the v6 host's echo-request counter for `key`. The first call
        for a key installs the counter and its rule (`match` selects the packets; the name is
        name_prefix + a serial number) and returns 0."""
        name = self._counters.get(key)
        if name is None:
            name = "%s_%d" % (name_prefix, len(self._counters))
            self.nft(
                "v6host",
                "add counter inet ctlab %s\n"
                'add rule inet ctlab input %s counter name "%s"\n' % (name, match, name),
            )
            self._counters[key] = name
            return 0
        return self._read_counter(name)

    def _read_counter(self, name):
        r = self.run("v6host", ["nft", "-j", "list", "counter", "inet", "ctlab", name])
        for item in json.loads(r.stdout).get("nftables", []):
            if "counter" in item:
                return int(item["counter"]["packets"])
        raise LabError("nft counter %s not found" % name)

    def v6host_counter(self, prefix=None):
        """Packets of ICMPv6 echo requests that reached the v6 host from inside `prefix`
        (all echo requests when prefix is None). The first call for a prefix installs the
        counting rule and returns 0: call it once before sending."""
        if prefix is None:
            return self._read_counter("echo_all")
        import ipaddress

        net = str(ipaddress.IPv6Network(prefix))
        return self._echo_counter(net, "echo", "ip6 saddr %s icmpv6 type echo-request" % net)

    def v4host_counter(self, prefix):
        """Packets of ICMP (IPv4) echo requests that reached the v6 host's IPv4 address
        (v6wan labs) from inside `prefix`. The first call for a prefix installs the
        counting rule and returns 0: call it once before sending."""
        import ipaddress

        net = str(ipaddress.IPv4Network(prefix))
        return self._echo_counter("v4:" + net, "echo4", "ip saddr %s icmp type echo-request" % net)

    # ---- helpers run inside namespaces ----------------------------------------------------
    def http_get(self, ns, url, user=None, password=None, ca_file=None, timeout=5):
        """GET `url` from inside `ns` (tests.lab.probe.http_get). Basic auth is sent up front
        when `user` is given. Returns HttpResult(status, body, headers, error); status is None
        when no answer came (error says why)."""
        from . import probe

        d = self.call_in(ns, probe.http_get, url, user, password, ca_file, timeout, timeout=timeout + 10)
        return HttpResult(d.get("status"), d.get("body"), d.get("headers") or {}, d.get("error"))

    def sixin4_ping(self, ns, remote, src6, dst6, count=1, timeout=2.0, local=None, hlim=64):
        """From `ns`, send `count` ICMPv6 echo requests src6 -> dst6 encapsulated in IPv4
        protocol 41 to `remote`; collect encapsulated replies. Returns
        {'sent', 'replies': [{'outer_src', 'outer_dst', 'inner_src', 'inner_dst', 'hlim',
        'icmp_type', 'ident', 'seq', ...}], 'other': n}."""
        from . import probe

        return self.call_in(
            ns,
            probe.sixin4_ping,
            remote,
            src6,
            dst6,
            count,
            timeout,
            local,
            hlim,
            timeout=count * timeout + 15,
        )

    def send_ra(self, ns, iface, prefix, lifetime=1800, preferred=14400, valid=86400):
        """Send one minimal Router Advertisement for `prefix` on `iface` (lab self-check of SLAAC)."""
        from . import probe

        return self.call_in(ns, probe.send_router_advert, iface, prefix, lifetime, preferred, valid)

    # ---- the reference broker --------------------------------------------------------------
    def start_broker(self, config=None, tls=None, timeout=10.0):
        """Start tests.broker in the broker namespace; wait until its control socket answers.

        config: dict (tests.broker.config format; default example_config()). When
        https_port is set without cert/key (or tls=True), a throwaway CA and a server
        certificate for 203.0.113.18 are made; handle.ca_file is the CA to trust.
        Returns a BrokerHandle; the broker is stopped on teardown."""
        from tests.broker import BrokerHandle, example_config, make_test_ca

        cfg = json.loads(json.dumps(config if config is not None else example_config()))
        if tls and cfg.get("https_port") is None:
            cfg["https_port"] = 443
        ca_file = None
        if cfg.get("https_port") is not None and not (cfg.get("cert") and cfg.get("key")):
            certs = make_test_ca(
                os.path.join(self.workdir, "tls-%d" % len(self._brokers)), ip=self.addrs["broker"]
            )
            cfg["cert"], cfg["key"], ca_file = certs["cert_file"], certs["key_file"], certs["ca_file"]
        name = "broker%d" % len(self._brokers)
        h = self.start_peer("tests.broker", name, cfg, BrokerHandle, ca_file=ca_file)
        h.wait_ready(timeout)
        return h

    def start_peer(self, module, name, cfg, handle_cls, ns="broker", args=(), **handle_kw):
        """Start a reference peer (`python -m module`) in `ns` without waiting for it: its
        configuration cfg goes to <workdir>/<name>.json (mode 0600), its control socket is
        <name>.sock, its output <name>.log. Returns handle_cls(control path, proc=, config=,
        log_path=, workdir=, **handle_kw), which is stopped on teardown."""
        cfile = os.path.join(self.workdir, name + ".json")
        fd = os.open(cfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(cfg, f)
        ctl = os.path.join(self.workdir, name + ".sock")
        logf = os.path.join(self.workdir, name + ".log")
        env = dict(os.environ)
        env["PYTHONPATH"] = REPO_ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        with open(logf, "wb") as lf:
            proc = self.popen(
                ns,
                [sys.executable, "-m", module, "--config", cfile, "--control", ctl] + list(args),
                stdout=lf,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=REPO_ROOT,
            )
        h = handle_cls(ctl, proc=proc, config=cfg, log_path=logf, workdir=self.workdir, **handle_kw)
        self._brokers.append(h)
        return h


_CLONE_NEWNET = 0x40000000
_libc = []


def call_in_netns(name, fn, *args, timeout=60, **kw):
    """Run fn(*args, **kw) in a new thread joined to network namespace /run/netns/<name>."""
    if not _libc:
        import ctypes

        _libc.append(ctypes.CDLL(None, use_errno=True))
    libc = _libc[0]
    box = {}

    def body():
        try:
            fd = os.open("/run/netns/%s" % name, os.O_RDONLY | os.O_CLOEXEC)
            try:
                if libc.setns(fd, _CLONE_NEWNET) != 0:
                    import ctypes

                    err = ctypes.get_errno()
                    raise OSError(err, "setns(%s): %s" % (name, os.strerror(err)))
            finally:
                os.close(fd)
            box["result"] = fn(*args, **kw)
        except BaseException as exc:  # handed to the caller
            box["error"] = exc

    th = threading.Thread(target=body, name="netns-%s" % name, daemon=True)
    th.start()
    th.join(timeout)
    if th.is_alive():
        raise LabError("call in namespace %s did not finish within %s s" % (name, timeout))
    if "error" in box:
        raise box["error"]
    return box.get("result")


def _lft(v):
    if v is None:
        return None
    if isinstance(v, int) and v >= 0xFFFFFFFF:
        return "forever"
    return v
