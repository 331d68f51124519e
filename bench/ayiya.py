"""Packets per second through the AYIYA userspace data plane (not a test).

The fair method of ../shared/PERF.md ("client alone"):
- two namespaces joined by a veth: A (client) runs UserspaceAyiya in its own process,
  pinned alone on one core (taskset); everything else - the load generators, the PoP,
  the sinks and this script - is pinned to the other core;
- the generators (a small C program using sendmmsg, compiled with gcc at start) offer far
  more than the client can carry;
- the PoP side is frozen (SIGSTOP) so it does not compete: its socket just overflows;
  the LAN-side sink in A likewise;
- what the client puts out is counted over a fixed window: for tx (LAN -> PoP) the WAN
  veth's TX packet counter, for rx (PoP -> LAN) the TUN's RX packet counter (the
  packets the client wrote into the kernel);
- the client's CPU % comes from /proc/PID/stat (utime + stime, all threads);
- median of --runs runs; the same-run plain-UDP baseline (the generator alone over the
  same veth, no tunnel, same UDP payload size) gives the ratio.
Every datagram the client sends is signed and every one it receives is verified
(SHA-1 over the packet, identity, time window) - nothing is skipped for the bench.
Then end-to-end figures: the PoP / LAN sink not frozen but counting (a C recvmmsg loop
on the other core), offered at fixed rates (--e2e-rates, default 20000, 100000 pkt/s and
flat out): delivered packets/s and the loss against what the generator sent.

Sizes are UDP payload bytes inside the tunnel (as iperf3 -l): 64 and 1232 (1232 + 48 =
a 1280-byte IPv6 packet, the tunnel MTU). Mbit/s counts the inner IPv6 packets.

    .venv/bin/python bench/ayiya.py [--runs 3] [--seconds 2] [--sizes 64,1232]
                                    [--modes base-tx,tx,base-rx,rx,both] [--no-e2e]
                                    [--no-batch-io] [--impl variant.py:Class] [--max-wait 600]

Needs root (namespaces, TUN), gcc, taskset and two cores. Bounded: every generator
stops by itself after warm-up + window + 1 s and at 50 million packets.
"""

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from cpe_tunnel.adapters.netlink import Netlink  # noqa: E402
from cpe_tunnel.core import ayiya  # noqa: E402

A_IP, B_IP = "192.0.2.1", "192.0.2.2"
CLIENT6, POP6 = "2001:db8:2ff:1::2", "2001:db8:2ff:1::1"
PASSWORD = "bench-ayiya-password"
TUN = "cptaybench"
WARMUP = 0.7
MAX_PACKETS = 50_000_000

PKTGEN_C = r"""
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define VLEN 64
static volatile sig_atomic_t stop;
static void on_term(int s) { (void)s; stop = 1; }

static double now(void) {
    struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int make(int fam, const char *ip, int port) {
    int fd = socket(fam == 6 ? AF_INET6 : AF_INET, SOCK_DGRAM, 0), one = 1, big = 8 << 20;
    if (fd < 0) { perror("socket"); exit(2); }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    struct sockaddr_storage ss; memset(&ss, 0, sizeof ss);
    socklen_t len;
    if (fam == 6) {
        struct sockaddr_in6 *a = (void *)&ss; a->sin6_family = AF_INET6; a->sin6_port = htons(port);
        inet_pton(AF_INET6, ip, &a->sin6_addr); len = sizeof *a;
    } else {
        struct sockaddr_in *a = (void *)&ss; a->sin_family = AF_INET; a->sin_port = htons(port);
        inet_pton(AF_INET, ip, &a->sin_addr); len = sizeof *a;
    }
    if (bind(fd, (void *)&ss, len) < 0) { perror("bind"); exit(2); }
    return fd;
}

static void peer(int fam, const char *ip, int port, struct sockaddr_storage *ss, socklen_t *len) {
    memset(ss, 0, sizeof *ss);
    if (fam == 6) {
        struct sockaddr_in6 *a = (void *)ss; a->sin6_family = AF_INET6; a->sin6_port = htons(port);
        inet_pton(AF_INET6, ip, &a->sin6_addr); *len = sizeof *a;
    } else {
        struct sockaddr_in *a = (void *)ss; a->sin_family = AF_INET; a->sin_port = htons(port);
        inet_pton(AF_INET, ip, &a->sin_addr); *len = sizeof *a;
    }
}

int main(int argc, char **argv) {
    signal(SIGTERM, on_term);
    if ((argc == 9 || argc == 10) && !strcmp(argv[1], "send")) {
        /* send FAM SRC SPORT DST DPORT PAYLOADFILE SECONDS [RATE pkt/s, 0 = flat out] */
        int fam = atoi(argv[2]);
        int fd = make(fam, argv[3], atoi(argv[4]));
        struct sockaddr_storage ss; socklen_t len;
        peer(fam, argv[5], atoi(argv[6]), &ss, &len);
        if (connect(fd, (void *)&ss, len) < 0) { perror("connect"); return 2; }
        static char buf[65536];
        FILE *f = fopen(argv[7], "rb");
        if (!f) { perror("payload"); return 2; }
        size_t n = fread(buf, 1, sizeof buf, f); fclose(f);
        double secs = atof(argv[8]);
        double rate = argc == 10 ? atof(argv[9]) : 0;
        struct iovec iov = { buf, n };
        struct mmsghdr v[VLEN]; memset(v, 0, sizeof v);
        for (int i = 0; i < VLEN; i++) { v[i].msg_hdr.msg_iov = &iov; v[i].msg_hdr.msg_iovlen = 1; }
        unsigned long long sent = 0;
        double start = now(), end = start + secs;
        while (!stop && sent < 50000000ULL) {
            double t = now();
            if (t >= end) break;
            int want = VLEN;
            if (rate > 0) {
                double due = (t - start) * rate - (double)sent;
                if (due < 1) { struct timespec ts = {0, 20000}; nanosleep(&ts, NULL); continue; }
                if (due < want) want = (int)due;
            }
            int r = sendmmsg(fd, v, want, 0);
            if (r > 0) sent += r;
        }
        printf("%llu %.6f\n", sent, now() - start);
        return 0;
    }
    if (argc == 6 && !strcmp(argv[1], "sink")) {
        /* sink FAM BIND PORT SECONDS: counts datagrams until SECONDS or SIGTERM */
        int fam = atoi(argv[2]);
        int fd = make(fam, argv[3], atoi(argv[4]));
        double end = now() + atof(argv[5]);
        static char bufs[VLEN][2048];
        struct iovec iov[VLEN]; struct mmsghdr v[VLEN]; memset(v, 0, sizeof v);
        for (int i = 0; i < VLEN; i++) {
            iov[i].iov_base = bufs[i]; iov[i].iov_len = sizeof bufs[i];
            v[i].msg_hdr.msg_iov = &iov[i]; v[i].msg_hdr.msg_iovlen = 1;
        }
        printf("ready\n"); fflush(stdout);
        unsigned long long got = 0;
        struct pollfd p = { fd, POLLIN, 0 };
        while (!stop && now() < end) {
            int r = recvmmsg(fd, v, VLEN, MSG_DONTWAIT, NULL);
            if (r > 0) { got += r; continue; }
            poll(&p, 1, 100);
        }
        printf("%llu\n", got);
        return 0;
    }
    fprintf(stderr, "usage: send FAM SRC SPORT DST DPORT FILE SECS | sink FAM BIND PORT SECS\n");
    return 2;
}
"""

# -- the client process (runs in namespace A, pinned alone on its core) ------------------

def client_main(argv):
    """python bench/ayiya.py --client IFNAME [file.py:Class]: open the plane, print
    'ready PORT', forward until stdin closes, print its counters as JSON."""
    plain = "--no-batch-io" in argv
    argv = [a for a in argv if a != "--no-batch-io"]
    cls = _load_impl(argv[1] if len(argv) > 1 else None)
    nl = Netlink()
    kw = {"batch_io": False} if plain else {}
    plane = cls(argv[0], A_IP, B_IP, CLIENT6, POP6, PASSWORD, mtu=1280, netlink=nl, **kw)
    plane.open()
    try:
        nl.addr_add(plane.ifname, CLIENT6, 64, flags=("nodad",))
        print("ready %d" % plane.local_address()[1], flush=True)
        sys.stdin.read()
        print(json.dumps(plane.counters()), flush=True)
    finally:
        plane.close()
        nl.close()


def _load_impl(spec):
    """None: the project's UserspaceAyiya; 'file.py:Class': a variant to compare."""
    if not spec:
        from cpe_tunnel.adapters.ayiya_dp import UserspaceAyiya
        return UserspaceAyiya
    import importlib.util

    path, name = spec.rsplit(":", 1)
    s = importlib.util.spec_from_file_location("ayiya_variant", path)
    mod = importlib.util.module_from_spec(s)
    s.loader.exec_module(mod)
    return getattr(mod, name)


# -- helpers -------------------------------------------------------------------------------

def sh(*args):
    subprocess.run(args, check=True, timeout=15, capture_output=True)


def cpu_line(cpu):
    """(busy, softirq+irq, total) jiffies of one cpu from /proc/stat."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu%d " % cpu):
                v = [int(x) for x in line.split()[1:]]
                user, nice, system, idle, iowait, irq, softirq = v[:7]
                steal = v[7] if len(v) > 7 else 0
                return user + nice + system + irq + softirq + steal, irq + softirq, sum(v[:8])
    raise RuntimeError("no cpu%d in /proc/stat" % cpu)


def other_benchmarks():
    """Other benchmark scripts running now (bench/*.py of this project, not this one
    and not our own client)."""
    mine = {os.getpid(), os.getppid()}
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) in mine:
            continue
        try:
            with open("/proc/%s/cmdline" % d, "rb") as f:
                cmd = f.read().split(b"\0")
        except OSError:
            continue
        for arg in cmd[:4]:
            if b"bench/" in arg and arg.endswith(b".py") and b"--client" not in cmd \
                    and not arg.endswith(b"bench/ayiya.py"):
                found.append(int(d))
    return found


def cpu_ticks(pid):
    with open("/proc/%d/stat" % pid) as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return int(rest[11]) + int(rest[12])  # utime, stime (fields 14, 15)


class Bench:
    def __init__(self, args):
        self.args = args
        self.secs = args.seconds
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            sys.exit("needs two cores")
        self.client_cpu, self.other_cpu = cpus[0], cpus[1]
        os.sched_setaffinity(0, {self.other_cpu})  # this script and its children
        pid = os.getpid()
        self.a, self.b = "cptayba-%d" % pid, "cptaybb-%d" % pid
        self.tmp = tempfile.mkdtemp(prefix="cpt-ayiya-bench-")
        self.procs = []
        self.client = None
        self.nla = None

    # setup / teardown
    def setup(self):
        gen = os.path.join(self.tmp, "pktgen")
        src = gen + ".c"
        with open(src, "w") as f:
            f.write(PKTGEN_C)
        sh("gcc", "-O2", "-o", gen, src)
        self.gen = gen
        sh("ip", "netns", "add", self.a)
        sh("ip", "netns", "add", self.b)
        sh("ip", "-n", self.a, "link", "add", "wan", "type", "veth", "peer", "name", "pop", "netns", self.b)
        for ns, dev, addr in ((self.a, "wan", A_IP), (self.b, "pop", B_IP)):
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", ns, "addr", "add", addr + "/24", "dev", dev)
        self.nla = Netlink(netns=self.a)
        cmd = ["ip", "netns", "exec", self.a, "taskset", "-c", str(self.client_cpu), sys.executable,
               os.path.abspath(__file__), "--client", TUN] + ([self.args.impl] if self.args.impl else []) + (
                   ["--no-batch-io"] if self.args.no_batch_io else [])
        self.client = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.client.stdout.readline().split()
        if not line or line[0] != "ready":
            raise RuntimeError("client did not start")
        self.client_port = int(line[1])
        time.sleep(0.3)  # let the kernel's own first packets (MLD, ...) pass

    def teardown(self):
        for p in self.procs:
            self._end(p)
        counters = None
        if self.client is not None:
            try:
                out = self.client.communicate("", timeout=10)[0]
                counters = json.loads(out.strip().splitlines()[-1])
            except (subprocess.TimeoutExpired, ValueError, IndexError):
                self.client.kill()
                self.client.wait()
        if self.nla is not None:
            self.nla.close()
        subprocess.run(["ip", "netns", "del", self.b], timeout=15)
        subprocess.run(["ip", "netns", "del", self.a], timeout=15)
        subprocess.run(["rm", "-rf", self.tmp], timeout=15)
        return counters

    def _end(self, p):
        if p.poll() is None:
            try:
                os.kill(p.pid, signal.SIGCONT)
                os.kill(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        try:
            out = p.communicate(timeout=10)[0]
        except subprocess.TimeoutExpired:
            p.kill()
            out = p.communicate()[0]
        if p in self.procs:
            self.procs.remove(p)
        f = ((out or "").strip().splitlines() or [""])[-1].split()
        p.sent = _count(out)
        p.secs = float(f[1]) if len(f) > 1 else 0.0
        return p.sent

    # processes
    def sink(self, ns, fam, addr, port, frozen):
        p = subprocess.Popen(["ip", "netns", "exec", ns, self.gen, "sink", str(fam), addr, str(port),
                              str(WARMUP + self.secs + 5)], stdout=subprocess.PIPE, text=True)
        self.procs.append(p)
        assert p.stdout.readline().strip() == "ready"
        if frozen:
            os.kill(p.pid, signal.SIGSTOP)
        return p

    def sender(self, ns, fam, src, sport, dst, dport, payload, rate=0):
        path = os.path.join(self.tmp, "payload-%d" % len(self.procs))
        with open(path, "wb") as f:
            f.write(payload)
        p = subprocess.Popen(["ip", "netns", "exec", ns, self.gen, "send", str(fam), src, str(sport), dst,
                              str(dport), path, str(WARMUP + self.secs + 1), str(int(rate))],
                             stdout=subprocess.PIPE, text=True)
        self.procs.append(p)
        return p

    def ayiya_forward(self, size):
        """A signed AYIYA forward from the PoP carrying UDP6 POP6 -> CLIENT6:9, size bytes."""
        from scapy.layers.inet import UDP
        from scapy.layers.inet6 import IPv6

        inner = bytes(IPv6(src=POP6, dst=CLIENT6, hlim=64) / UDP(sport=9999, dport=9) / (b"x" * size))
        return ayiya.ayiya_encode(_a6(POP6), ayiya.OP_FORWARD, ayiya.NH_IPV6, inner,
                                  int(time.time()), ayiya.password_hash(PASSWORD))

    def stat(self, which):
        ns, dev, key = which
        st = self.nla.link_stats(dev) if ns == self.a else None
        return st[key]

    def wait_quiet(self):
        """The machine is shared: wait (bounded) until no other benchmark runs and
        neither core is busy with something else before a run, so that 'alone on its
        core' holds."""
        deadline = time.monotonic() + self.args.max_wait
        while True:
            a = [cpu_line(c) for c in (self.client_cpu, self.other_cpu)]
            time.sleep(0.5)
            b = [cpu_line(c) for c in (self.client_cpu, self.other_cpu)]
            busy = max((y[0] - x[0]) / max(1, y[2] - x[2]) for x, y in zip(a, b))
            if busy < 0.15 and not other_benchmarks():
                return True
            if time.monotonic() > deadline:
                print("  (machine still busy after %.0f s, measuring anyway)" % self.args.max_wait)
                return False
            time.sleep(2)

    # one measurement
    def window(self, counts):
        """counts: {name: (ns, dev, key)}; returns ({name: pps}, client cpu %, foreign %)
        where foreign is the share of the client's core used by anything but the client
        process and the kernel's interrupt work (other processes: a contended run)."""
        time.sleep(WARMUP)
        c0 = {k: self.stat(v) for k, v in counts.items()}
        u0, t0, k0 = cpu_ticks(self.client.pid), time.monotonic(), cpu_line(self.client_cpu)
        time.sleep(self.secs)
        c1 = {k: self.stat(v) for k, v in counts.items()}
        u1, t1, k1 = cpu_ticks(self.client.pid), time.monotonic(), cpu_line(self.client_cpu)
        dt = t1 - t0
        hz = os.sysconf("SC_CLK_TCK")
        cpu = (u1 - u0) / hz / dt * 100
        foreign = ((k1[0] - k0[0]) - (k1[1] - k0[1]) - (u1 - u0)) / max(1, k1[2] - k0[2]) * 100
        return {k: (c1[k] - c0[k]) / dt for k in counts}, cpu, foreign

    def run(self, mode, size):
        """One run, repeated (up to 4 times) when something else used the client's core."""
        for _attempt in range(4):
            self.wait_quiet()
            res = self._run(mode, size)
            if res["foreign"] >= 8:
                why = "%.0f%% of the client's core went to other processes" % res["foreign"]
            elif not mode.startswith("base") and "@" not in mode and res["cpu"] < 90:
                # the client waited for packets: the generator did not keep it busy
                # (its core was taken by something else), so this is not its capacity
                why = "client only %.0f%% busy: generator starved" % res["cpu"]
            else:
                return res
            print("  (%s %d B: %s; again)" % (mode, size, why), flush=True)
        res["contended"] = True
        return res

    def _run(self, mode, size):
        """One run. mode: tx | rx | both | base-tx | base-rx | e2e-tx@RATE | e2e-rx@RATE
        (RATE: packets/s offered, 0 = flat out)."""
        full = mode
        mode, _, rate = mode.partition("@")
        rate = int(rate or 0)
        wan_tx = (self.a, "wan", "tx_packets")
        wan_rx = (self.a, "wan", "rx_packets")
        tun_rx = (self.a, TUN, "rx_packets")
        payload = b"x" * size
        e2e = mode.startswith("e2e")
        res = {}
        if mode in ("tx", "both", "e2e-tx"):
            pop = self.sink(self.b, 4, B_IP, ayiya.PORT, frozen=not e2e)
            self.sender(self.a, 6, CLIENT6, 0, POP6, 9, payload, rate)
        if mode in ("rx", "both", "e2e-rx"):
            lan = self.sink(self.a, 6, CLIENT6, 9, frozen=not e2e)
            if mode != "both":
                self.sink(self.b, 4, B_IP, ayiya.PORT, frozen=True)
            self.sender(self.b, 4, B_IP, ayiya.PORT, A_IP, self.client_port, self.ayiya_forward(size),
                        rate)
        if mode == "base-tx":
            self.sink(self.b, 4, B_IP, 9, frozen=True)
            self.sender(self.a, 4, A_IP, 0, B_IP, 9, payload)
        if mode == "base-rx":
            self.sink(self.a, 4, A_IP, 9, frozen=True)
            self.sender(self.b, 4, B_IP, 0, A_IP, 9, payload)
        counts = {"tx": (wan_tx), "base-tx": wan_tx, "base-rx": wan_rx, "rx": tun_rx,
                  "e2e-tx": wan_tx, "e2e-rx": tun_rx}
        if mode == "both":
            want = {"tx": wan_tx, "rx": tun_rx}
        else:
            want = {full: counts[mode]}
        pps, cpu, foreign = self.window(want)
        senders = [p for p in self.procs if p.args[5] == "send"]
        sent = secs = 0
        for p in senders:
            self._end(p)
            sent += p.sent
            secs = max(secs, p.secs)
        if e2e:
            sink = pop if mode == "e2e-tx" else lan
            got = self._end(sink)
            dur = max(secs, 0.1)  # the generator's own sending time
            res["delivered"] = got / dur
            res["offered"] = sent / dur
            res["loss"] = 100.0 * (1 - got / sent) if sent else 0.0
        for p in list(self.procs):
            self._end(p)
        res.update(pps)
        res["cpu"] = cpu
        res["foreign"] = foreign
        time.sleep(0.2)
        return res


def _count(out):
    """The count a pktgen process printed last ('N' or 'N SECONDS')."""
    lines = (out or "").strip().splitlines()
    f = lines[-1].split() if lines else []
    return int(f[0]) if f and f[0].isdigit() else 0


def _a6(text):
    import socket
    return socket.inet_pton(socket.AF_INET6, text)


def med(runs, key):
    return statistics.median(r[key] for r in runs)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        return client_main(sys.argv[2:])
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--sizes", default="64,1232")
    ap.add_argument("--modes", default="base-tx,tx,base-rx,rx,both")
    ap.add_argument("--no-e2e", action="store_true")
    ap.add_argument("--e2e-rates", default="20000,100000,0",
                    help="offered packets/s of the end-to-end runs (0 = flat out)")
    ap.add_argument("--no-batch-io", action="store_true",
                    help="one send/recv_into per packet instead of sendmmsg/recvmmsg batches")
    ap.add_argument("--impl", default=None, help="file.py:Class, a data plane variant to compare")
    ap.add_argument("--max-wait", type=float, default=600.0,
                    help="seconds to wait for a quiet machine before each run")
    args = ap.parse_args()
    args.seconds = min(max(args.seconds, 0.5), 10.0)
    args.runs = min(max(args.runs, 1), 9)
    if os.geteuid() != 0:
        sys.exit("needs root (namespaces, TUN)")
    modes = args.modes.split(",")
    if not args.no_e2e:
        for rate in args.e2e_rates.split(","):
            modes += ["e2e-tx@%d" % int(rate), "e2e-rx@%d" % int(rate)]
    # one benchmark at a time: other copies of this script wait here; other scripts are
    # waited for in Bench.wait_quiet()
    import fcntl

    lock = open("/tmp/cpe-tunnel-bench.lock", "a")
    fcntl.flock(lock, fcntl.LOCK_EX)
    b = Bench(args)
    results = {}
    counters = None
    try:
        b.setup()
        print("AYIYA userspace data plane (%s), client alone on cpu %d, everything else on cpu %d; "
              "%.1f s windows, median of %d; python %s; load %s" % (
                  "one send/recv_into per packet" if args.no_batch_io else "sendmmsg/recvmmsg batches",
                  b.client_cpu, b.other_cpu, args.seconds, args.runs, sys.version.split()[0],
                  " ".join("%.2f" % x for x in os.getloadavg())))
        for size in [int(x) for x in args.sizes.split(",")]:
            for mode in modes:
                runs = [b.run(mode, size) for _ in range(args.runs)]
                results[(mode, size)] = runs
                report(mode, size, runs, results)
    finally:
        counters = b.teardown()
    if counters:
        print("client counters at the end: tx %d rx %d drops %s%s" % (
            counters["tx_packets"], counters["rx_packets"], counters["drops"] or "none",
            " error: " + counters["error"] if counters.get("error") else ""))


def report(mode, size, runs, results):
    inner = size + 48  # IPv6 + UDP headers
    if mode.startswith("e2e"):
        d, o = med(runs, "delivered"), med(runs, "offered")
        print("%-14s %5d B  offered %9.0f pkt/s  delivered %9.0f pkt/s (%.1f Mbit/s)  loss %5.1f%%  "
              "client cpu %3.0f%%%s" % (
                  mode.replace("@0", " flat out").replace("@", " at "), size, o, d, d * inner * 8 / 1e6,
                  med(runs, "loss"), med(runs, "cpu"),
                  "  [contended]" if any(r.get("contended") for r in runs) else ""), flush=True)
        return
    if mode == "both":
        tx, rx = med(runs, "tx"), med(runs, "rx")
        us = statistics.median(r["cpu"] / 100 / (r["tx"] + r["rx"]) * 1e6 for r in runs if r["tx"] + r["rx"])
        print(("%-7s %5d B  %9.0f pkt/s (tx %.0f + rx %.0f)  %7.1f Mbit/s  client cpu %3.0f%% "
               "(%.2f us/pkt)%s") % (
            mode, size, tx + rx, tx, rx, (tx + rx) * inner * 8 / 1e6, med(runs, "cpu"), us,
            "  [contended]" if any(r.get("contended") for r in runs) else ""), flush=True)
        return
    pps = med(runs, mode)
    spread = "%.0f-%.0f" % (min(r[mode] for r in runs), max(r[mode] for r in runs))
    line = "%-7s %5d B  %9.0f pkt/s (%s)  %7.1f Mbit/s" % (mode, size, pps, spread, pps * inner * 8 / 1e6)
    if not mode.startswith("base"):
        c = med(runs, "cpu")
        line += "  client cpu %3.0f%%" % c
        if pps:
            us = statistics.median(r["cpu"] / 100 / r[mode] * 1e6 for r in runs if r[mode])
            line += " (%.2f us/pkt)" % us
    if any(r.get("contended") for r in runs):
        line += "  [contended]"
    base = results.get(("base-" + mode, size))
    if base and mode in ("tx", "rx"):
        line += "  = %.2f x plain UDP" % (pps / med(base, "base-" + mode))
    print(line, flush=True)


if __name__ == "__main__":
    main()
