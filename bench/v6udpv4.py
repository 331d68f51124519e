"""Packets per second through the userspace v6udpv4 data plane (not a test).

The fair method of ../shared/PERF.md ("client alone"), then an end-to-end figure.

Namespaces (documentation addresses only):

    [lan] 2001:db8:2::2 --veth-- 2001:db8:2::1 [client] 192.0.2.1 --veth-- 192.0.2.2 [broker]
                                 TUN 2001:db8:1::2                     TUN 2001:db8:1::1

- client: UserspaceUdp6 in its own process (`ip netns exec … taskset -c 0 python`), over a
  UDP socket 192.0.2.1:40000 connected to 192.0.2.2:3653; IPv6 forwarding on. The
  plane's defaults (batched system calls, a thread per direction); --threads 1 runs both
  directions in one thread.
- broker: a C relay (TUN <-> the same UDP 5-tuple, one blocking thread per direction) —
  an independent peer; frozen with SIGSTOP while the client is measured alone.
- Load: a C `sendmmsg` generator compiled with gcc at bench time, on the other core
  (`taskset -c 1`), offering far more than the client can carry:
    tx   (LAN -> broker): UDP/IPv6 from the client namespace into the TUN
         (2001:db8:1::2 -> 2001:db8:1::1); counted: the WAN veth's TX packets;
    rx   (broker -> LAN): UDP/IPv4 datagrams from the broker's 5-tuple carrying IPv6
         packets for the LAN host (2001:db8:1::1 -> 2001:db8:2::2); the client writes them
         to its TUN and the kernel forwards them; counted: the LAN veth's TX packets;
    both: the two generators at once (both on the generator core).
  Receivers are bound but frozen (SIGSTOP): their sockets overflow, nothing answers.
- Baseline, same run, same generator and core: plain UDP over the WAN veth (no tunnel,
  nothing on the client core), counted on the sending veth: the generator's ceiling.
- SIZE is the inner UDP payload (iperf3 -l): the inner IPv6 packet is SIZE + 48 bytes
  (1232 -> 1280, the tunnel MTU), the datagram on the WAN SIZE + 48 + 8 (+20 IPv4).
  Mbit/s counts inner IPv6 packets.
- Each figure: median of --runs windows of --seconds after a --warmup; client CPU % from
  /proc/PID/stat (utime + stime, all threads; 100 % = one core). CPU time per packet,
  and the packets/s it makes on a whole core, is printed too: on a machine shared with
  other work the client does not get its core to itself, and that figure depends much
  less than the packet rate on the share it got.
- End to end (nothing pinned, relay running, counting receivers): the generator in the
  LAN namespace (tx) or the broker namespace (rx), flat out and paced at --e2e-rates;
  what arrives at the receiver and the loss.

    .venv/bin/python bench/v6udpv4.py [--runs 3] [--seconds 2] [--sizes 64,1232]
        [--no-e2e] [--e2e-rates 20000,100000] [--threads 1|2]
        [--impl module:Class | path.py:Class]

--impl runs another plane class with the same constructor (to compare loop variants).
Needs root, gcc and taskset; every loop is bounded in time.
"""

import argparse
import importlib
import json
import os
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from cpe_tunnel.adapters.netlink import in_netns  # noqa: E402

A_IP, B_IP = "192.0.2.1", "192.0.2.2"
CPORT, BPORT, SINK_PORT, GEN_PORT = 40000, 3653, 9, 5000
TUN_A, TUN_B = "2001:db8:1::2", "2001:db8:1::1"
LAN_A, LAN_L = "2001:db8:2::1", "2001:db8:2::2"
CLIENT_CPU, GEN_CPU = "0", "1"
MAX_SECONDS = 10.0

C_SOURCE = r"""
/* Load generator, sink and reference relay for bench/v6udpv4.py (not product code).
 *   gen  FAMILY SRC SPORT DST DPORT PAYLOAD_FILE SECONDS [RATE]
 *        sendmmsg() the payload in batches of 64 for SECONDS (RATE > 0: paced to RATE
 *        packets/s); prints the number of datagrams the kernel accepted.
 *   sink FAMILY ADDR PORT SECONDS   recvmmsg() for SECONDS, prints the count.
 *   relay TUN LOCAL4 LPORT REMOTE4 RPORT SECONDS
 *        the broker side of v6udpv4: TUN <-> connected UDP socket, one blocking thread
 *        per direction; ends after SECONDS.
 * SO_REUSEPORT on every bound socket, so a generator can share the relay's port. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static socklen_t mkaddr(int fam, const char *addr, int port, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof(*ss));
    if (fam == 4) {
        struct sockaddr_in *a = (struct sockaddr_in *)ss;
        a->sin_family = AF_INET;
        a->sin_port = htons(port);
        if (inet_pton(AF_INET, addr, &a->sin_addr) != 1) { fprintf(stderr, "bad %s\n", addr); exit(2); }
        return sizeof(*a);
    } else {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons(port);
        if (inet_pton(AF_INET6, addr, &a->sin6_addr) != 1) { fprintf(stderr, "bad %s\n", addr); exit(2); }
        return sizeof(*a);
    }
}

static int mksock(int fam, const char *addr, int port)
{
    struct sockaddr_storage ss;
    socklen_t len = mkaddr(fam, addr, port, &ss);
    int s = socket(fam == 4 ? AF_INET : AF_INET6, SOCK_DGRAM, 0);
    if (s < 0) { perror("socket"); exit(2); }
    int one = 1, big = 4 << 20;
    setsockopt(s, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    setsockopt(s, SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
    setsockopt(s, SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
    if (bind(s, (struct sockaddr *)&ss, len) < 0) { perror("bind"); exit(2); }
    return s;
}

static void mkconnect(int s, int fam, const char *addr, int port)
{
    struct sockaddr_storage ss;
    socklen_t len = mkaddr(fam, addr, port, &ss);
    if (connect(s, (struct sockaddr *)&ss, len) < 0) { perror("connect"); exit(2); }
}

static int gen(int argc, char **argv)
{
    if (argc < 9) return 2;
    int fam = atoi(argv[2]);
    int s = mksock(fam, argv[3], atoi(argv[4]));
    mkconnect(s, fam, argv[5], atoi(argv[6]));
    static char payload[65536];
    FILE *f = fopen(argv[7], "rb");
    if (!f) { perror("payload"); return 2; }
    size_t plen = fread(payload, 1, sizeof(payload), f);
    fclose(f);
    double secs = atof(argv[8]);
    double rate = argc > 9 ? atof(argv[9]) : 0;
    struct iovec iov[BATCH];
    struct mmsghdr msgs[BATCH];
    memset(msgs, 0, sizeof(msgs));
    for (int i = 0; i < BATCH; i++) {
        iov[i].iov_base = payload;
        iov[i].iov_len = plen;
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    long long sent = 0, slots = 0;
    double t0 = now(), end = t0 + secs;
    int batch = rate > 0 ? 8 : BATCH;
    for (;;) {
        double t = now();
        if (t >= end) break;
        if (rate > 0) {
            double due = t0 + slots / rate;
            if (due > t) {
                if (due - t > 0.0002) {
                    struct timespec ts = {0, (long)((due - t) * 1e9) - 100000};
                    nanosleep(&ts, NULL);
                }
                continue;
            }
        }
        int n = sendmmsg(s, msgs, batch, 0);
        if (n > 0) sent += n;
        slots += batch; /* paced: a refused packet still uses its slot */
    }
    printf("%lld %.6f\n", sent, now() - t0);
    return 0;
}

static int sink(int argc, char **argv)
{
    if (argc < 6) return 2;
    int fam = atoi(argv[2]);
    int s = mksock(fam, argv[3], atoi(argv[4]));
    struct timeval tv = {0, 100000};
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    double end = now() + atof(argv[5]);
    static char bufs[BATCH][2048];
    struct iovec iov[BATCH];
    struct mmsghdr msgs[BATCH];
    memset(msgs, 0, sizeof(msgs));
    for (int i = 0; i < BATCH; i++) {
        iov[i].iov_base = bufs[i];
        iov[i].iov_len = sizeof(bufs[i]);
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    printf("ready\n");
    fflush(stdout);
    long long got = 0;
    while (now() < end) {
        int n = recvmmsg(s, msgs, BATCH, 0, NULL);
        if (n > 0) got += n;
    }
    printf("%lld\n", got);
    return 0;
}

static int tunfd, udpfd;

static void *relay_up(void *arg)
{   /* TUN -> UDP */
    static char buf[65536];
    (void)arg;
    for (;;) {
        ssize_t n = read(tunfd, buf, sizeof(buf));
        if (n < 0) { if (errno == EINTR) continue; return NULL; }
        if (send(udpfd, buf, n, 0) < 0) { /* dropped */ }
    }
}

static int relay(int argc, char **argv)
{
    if (argc < 8) return 2;
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    tunfd = open("/dev/net/tun", O_RDWR);
    if (tunfd < 0) { perror("tun"); return 2; }
    ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
    strncpy(ifr.ifr_name, argv[2], IFNAMSIZ - 1);
    if (ioctl(tunfd, TUNSETIFF, &ifr) < 0) { perror("TUNSETIFF"); return 2; }
    udpfd = mksock(4, argv[3], atoi(argv[4]));
    mkconnect(udpfd, 4, argv[5], atoi(argv[6]));
    printf("ready\n");
    fflush(stdout);
    pthread_t th;
    pthread_create(&th, NULL, relay_up, NULL);
    struct timeval tv = {0, 100000};
    setsockopt(udpfd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    double end = now() + atof(argv[7]);
    static char buf[65536];
    while (now() < end) {   /* UDP -> TUN */
        ssize_t n = recv(udpfd, buf, sizeof(buf), 0);
        if (n >= 40 && (buf[0] & 0xf0) == 0x60) {
            if (write(tunfd, buf, n) < 0) { /* dropped */ }
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    if (argc > 1 && !strcmp(argv[1], "gen")) return gen(argc, argv);
    if (argc > 1 && !strcmp(argv[1], "sink")) return sink(argc, argv);
    if (argc > 1 && !strcmp(argv[1], "relay")) return relay(argc, argv);
    fprintf(stderr, "usage: cptgen gen|sink|relay ...\n");
    return 2;
}
"""

# The client process: the plane under test over a connected UDP socket, until stdin closes.
CLIENT = r"""
import importlib, importlib.util, json, os, socket, sys, time
sys.path.insert(0, sys.argv[1])
spec, cls = sys.argv[2].rsplit(":", 1)
if spec.endswith(".py"):
    s = importlib.util.spec_from_file_location("plane_under_test", spec)
    mod = importlib.util.module_from_spec(s)
    s.loader.exec_module(mod)
else:
    mod = importlib.import_module(spec)
controls = []
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind((sys.argv[3], int(sys.argv[4])))
sock.connect((sys.argv[5], int(sys.argv[6])))
kw = {} if sys.argv[8] == "default" else {"threads": int(sys.argv[8])}
plane = getattr(mod, cls)(sys.argv[7], sock, mtu=1280, on_control=controls.append, **kw)
plane.open()
print("ready", plane.ifname, flush=True)
sys.stdin.read()
t = time.monotonic()
plane.close()
out = dict(plane.counters(), close_s=time.monotonic() - t, controls=len(controls))
print(json.dumps(out), flush=True)
"""


def sh(*args):
    subprocess.run(args, check=True, timeout=15)


def ipn(ns, *args):
    sh("ip", "-n", ns, *args)


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    c = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while c >> 16:
        c = (c & 0xFFFF) + (c >> 16)
    return (~c) & 0xFFFF or 0xFFFF


def udp6_packet(src, dst, sport, dport, size):
    """An IPv6/UDP packet with a valid checksum and `size` bytes of payload."""
    s6, d6 = socket.inet_pton(socket.AF_INET6, src), socket.inet_pton(socket.AF_INET6, dst)
    ulen = 8 + size
    payload = bytes(i & 0xFF for i in range(size))
    udp = struct.pack("!HHHH", sport, dport, ulen, 0) + payload
    c = checksum(s6 + d6 + struct.pack("!IxxxB", ulen, 17) + udp)
    udp = udp[:6] + struct.pack("!H", c) + udp[8:]
    return struct.pack("!IHBB", 0x60000000, ulen, 17, 64) + s6 + d6 + udp


def netdev(ns):
    """{ifname: (rx_packets, tx_packets)} of namespace ns (from /proc/thread-self/net/dev)."""
    def read():
        with open("/proc/thread-self/net/dev") as f:
            lines = f.read().splitlines()[2:]
        out = {}
        for line in lines:
            name, rest = line.split(":", 1)
            v = rest.split()
            out[name.strip()] = (int(v[1]), int(v[9]))
        return out
    return in_netns(ns, read)


def core_ticks(cpu):
    """(busy, total) jiffies of CPU `cpu` from /proc/stat."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu%s " % cpu):
                v = [int(x) for x in line.split()[1:]]
                return sum(v) - v[3] - v[4], sum(v)
    return 0, 0


def cpu_ticks(pid):
    with open("/proc/%d/stat" % pid) as f:
        v = f.read().rsplit(")", 1)[1].split()
    return int(v[11]), int(v[12])  # utime, stime (fields 14, 15)


class Bench:
    def __init__(self, args):
        self.args = args
        tag = "%d" % os.getpid()
        self.ns = {"a": "cptu6a-" + tag, "b": "cptu6b-" + tag, "l": "cptu6l-" + tag}
        self.tmp = tempfile.mkdtemp(prefix="cpt-v6udpv4-")
        self.procs = []
        self.client = None
        self.relay = None
        self.frozen = []

    # -- setup / teardown -------------------------------------------------------------
    def setup(self):
        exe = os.path.join(self.tmp, "cptgen")
        src = os.path.join(self.tmp, "cptgen.c")
        with open(src, "w") as f:
            f.write(C_SOURCE)
        sh("gcc", "-O2", "-Wall", "-pthread", "-o", exe, src)
        self.exe = exe
        a, b, lan = self.ns["a"], self.ns["b"], self.ns["l"]
        for ns in (a, b, lan):
            sh("ip", "netns", "add", ns)
            ipn(ns, "link", "set", "lo", "up")
        ipn(a, "link", "add", "wan", "type", "veth", "peer", "name", "pop", "netns", b)
        ipn(a, "link", "add", "lan", "type", "veth", "peer", "name", "eth0", "netns", lan)
        for ns in (a, b, lan):
            sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0",
               "net.ipv6.conf.default.accept_dad=0")
        sh("ip", "netns", "exec", a, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
        for ns, dev, addr in ((a, "wan", A_IP + "/24"), (b, "pop", B_IP + "/24"),
                              (a, "lan", LAN_A + "/64"), (lan, "eth0", LAN_L + "/64")):
            ipn(ns, "addr", "add", addr, "dev", dev, *(("nodad",) if ":" in addr else ()))
            ipn(ns, "link", "set", dev, "up")
        ipn(lan, "-6", "route", "add", "default", "via", LAN_A)
        # a permanent neighbour entry: forwarded packets never wait for (or lose to) ND
        mac = subprocess.run(["ip", "-n", lan, "-j", "link", "show", "eth0"], capture_output=True, text=True,
                             check=True, timeout=15).stdout
        ipn(a, "-6", "neigh", "replace", LAN_L, "lladdr", json.loads(mac)[0]["address"], "dev", "lan",
            "nud", "permanent")

    def teardown(self):
        for p in self.procs:
            if p.poll() is None:
                try:
                    p.send_signal(signal.SIGCONT)
                    p.kill()
                except OSError:
                    pass
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    pass
        for ns in self.ns.values():
            subprocess.run(["ip", "netns", "del", ns], timeout=15)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def popen(self, ns, argv, cpu=None, stdin=None):
        cmd = ["ip", "netns", "exec", self.ns[ns]]
        if cpu is not None:
            cmd += ["taskset", "-c", cpu]
        p = subprocess.Popen(cmd + argv, stdout=subprocess.PIPE, stdin=stdin, text=True)
        self.procs.append(p)
        return p

    def expect_ready(self, p):
        line = p.stdout.readline()
        if not line.startswith("ready"):
            raise RuntimeError("helper did not start: %r" % line)
        return line.split()

    def freeze(self, p):
        p.send_signal(signal.SIGSTOP)
        self.frozen.append(p)

    def start_client(self):
        a = self.ns["a"]
        self.client = self.popen("a", [sys.executable, "-c", CLIENT, ROOT, self.args.impl, A_IP, str(CPORT),
                                       B_IP, str(BPORT), "cpt6u", getattr(self.args, "threads", "default")],
                                 cpu=CLIENT_CPU, stdin=subprocess.PIPE)
        name = self.expect_ready(self.client)[1]
        ipn(a, "link", "set", name, "up")
        ipn(a, "addr", "add", TUN_A + "/64", "dev", name, "nodad")
        self.tun = name

    def start_relay(self):
        b = self.ns["b"]
        self.relay = self.popen("b", [self.exe, "relay", "brk", B_IP, str(BPORT), A_IP, str(CPORT), "3600"])
        self.expect_ready(self.relay)
        ipn(b, "link", "set", "brk", "up")
        ipn(b, "addr", "add", TUN_B + "/64", "dev", "brk", "nodad")
        ipn(b, "-6", "route", "add", LAN_L.rsplit("::", 1)[0] + "::/64", "dev", "brk")

    def sink(self, ns, fam, addr, port, secs):
        p = self.popen(ns, [self.exe, "sink", str(fam), addr, str(port), "%.3f" % secs])
        self.expect_ready(p)
        return p

    def payload(self, name, data):
        path = os.path.join(self.tmp, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def gen(self, ns, fam, src, sport, dst, dport, payload, secs, rate=0, cpu=GEN_CPU):
        argv = [self.exe, "gen", str(fam), src, str(sport), dst, str(dport), payload, "%.3f" % secs]
        if rate:
            argv.append(str(int(rate)))
        return self.popen(ns, argv, cpu=cpu)

    # -- one measured window ------------------------------------------------------------
    def window(self, gens, counted, pid=None):
        """Start gens (list of popen thunks), wait the warm-up, count `counted`
        [(ns, ifname)] TX packets over the window. Returns (pps list, (cpu %, core busy %,
        share of the client's CPU time spent in user mode %))."""
        warm, secs = self.args.warmup, self.args.seconds
        procs = [g(warm + secs + 0.5) for g in gens]
        time.sleep(warm)
        c0 = [netdev(self.ns[ns])[dev][1] for ns, dev in counted]
        u0 = cpu_ticks(pid) if pid else (0, 0)
        k0 = core_ticks(CLIENT_CPU)
        t0 = time.monotonic()
        time.sleep(secs)
        c1 = [netdev(self.ns[ns])[dev][1] for ns, dev in counted]
        u1 = cpu_ticks(pid) if pid else (0, 0)
        k1 = core_ticks(CLIENT_CPU)
        dt = time.monotonic() - t0
        for p in procs:
            p.communicate(timeout=secs + warm + 15)
        used = sum(u1) - sum(u0)
        cpu = used / os.sysconf("SC_CLK_TCK") / dt * 100 if pid else None
        usr = 100.0 * (u1[0] - u0[0]) / used if used else 0.0
        core = 100.0 * (k1[0] - k0[0]) / (k1[1] - k0[1]) if k1[1] > k0[1] else 0.0
        return [(y - x) / dt for x, y in zip(c0, c1)], (cpu, core, usr)

    # -- the whole run ----------------------------------------------------------------
    def run(self):
        args = self.args
        self.setup()
        self.start_relay()
        self.freeze(self.relay)
        self.start_client()
        # frozen receivers: LAN host (inner packets of the rx direction), the broker's and
        # the client's plain-UDP ports (baseline)
        long = 3600
        frozen_sinks = [self.sink("l", 6, LAN_L, SINK_PORT, long), self.sink("b", 4, B_IP, SINK_PORT, long),
                        self.sink("a", 4, A_IP, SINK_PORT, long)]
        for p in frozen_sinks:
            self.freeze(p)
        pid = self.client.pid
        results = []
        for size in [int(x) for x in args.sizes.split(",")]:
            tx_pl = self.payload("tx%d" % size, bytes(size))
            rx_pl = self.payload("rx%d" % size, udp6_packet(TUN_B, LAN_L, GEN_PORT, SINK_PORT, size))
            plain = self.payload("plain%d" % size, bytes(size))

            def g_tx(secs, tx_pl=tx_pl):
                return self.gen("a", 6, TUN_A, GEN_PORT, TUN_B, SINK_PORT, tx_pl, secs)

            def g_rx(secs, rx_pl=rx_pl):
                return self.gen("b", 4, B_IP, BPORT, A_IP, CPORT, rx_pl, secs)

            def g_btx(secs, plain=plain):
                return self.gen("a", 4, A_IP, GEN_PORT, B_IP, SINK_PORT, plain, secs)

            def g_brx(secs, plain=plain):
                return self.gen("b", 4, B_IP, GEN_PORT, A_IP, SINK_PORT, plain, secs)

            cases = (("tx", [g_tx], [("a", "wan")], [g_btx], [("a", "wan")]),
                     ("rx", [g_rx], [("a", "lan")], [g_brx], [("b", "pop")]),
                     ("both", [g_tx, g_rx], [("a", "wan"), ("a", "lan")], [g_btx, g_brx],
                      [("a", "wan"), ("b", "pop")]))
            for name, gens, counted, bgens, bcounted in cases:
                runs, cpus, cores, usrs, bases = [], [], [], [], []
                for _ in range(args.runs):
                    pps, (cpu, core, usr) = self.window(gens, counted, pid)
                    runs.append(pps)
                    cpus.append(cpu)
                    cores.append(core)
                    usrs.append(usr)
                    bpps, _ = self.window(bgens, bcounted)
                    bases.append(sum(bpps))
                tot = [sum(r) for r in runs]
                med = statistics.median(tot)
                row = {"size": size, "dir": name, "pps": med, "min": min(tot), "max": max(tot),
                       "parts": [statistics.median(r[i] for r in runs) for i in range(len(counted))],
                       "cpu": statistics.median(cpus), "core": statistics.median(cores),
                       "usr": statistics.median(usrs),
                       "base": statistics.median(bases)}
                results.append(row)
                print_row(row)
        c = self.stop_client()
        print("client counters after the client-alone runs: drops %s, close() took %.3f s"
              % (c.get("drops"), c.get("close_s", -1)))
        e2e = []
        if not args.no_e2e:
            for p in frozen_sinks:
                p.send_signal(signal.SIGCONT)
                p.kill()
                p.wait(5)
            self.relay.send_signal(signal.SIGCONT)
            self.start_client()
            e2e = self.end_to_end()
            self.stop_client()
        return results, e2e

    def stop_client(self):
        p = self.client
        out, _ = p.communicate("", timeout=30)
        self.client = None
        lines = [x for x in out.splitlines() if x.startswith("{")]
        return json.loads(lines[-1]) if lines else {}

    def end_to_end(self):
        args = self.args
        secs = args.seconds
        rows = []
        rates = [0] + [int(x) for x in args.e2e_rates.split(",") if x.strip() and int(x) > 0]
        for size in [int(x) for x in args.sizes.split(",")]:
            pl = self.payload("e2e%d" % size, bytes(size))
            for rate in rates:
                for name in ("tx", "rx"):
                    offered, got = [], []
                    for _ in range(args.runs):
                        if name == "tx":
                            sink = self.sink("b", 6, TUN_B, SINK_PORT, secs + 1.5)
                            g = self.gen("l", 6, LAN_L, GEN_PORT, TUN_B, SINK_PORT, pl, secs, rate, cpu=None)
                        else:
                            sink = self.sink("l", 6, LAN_L, SINK_PORT, secs + 1.5)
                            g = self.gen("b", 6, TUN_B, GEN_PORT, LAN_L, SINK_PORT, pl, secs, rate, cpu=None)
                        sent, dt = g.communicate(timeout=secs + 15)[0].split()
                        n = int(sink.communicate(timeout=secs + 15)[0].split()[-1])
                        offered.append(int(sent) / float(dt))
                        got.append(n / float(dt))
                    i = sorted(range(len(got)), key=lambda k: got[k])[len(got) // 2]
                    row = {"size": size, "dir": name, "rate": rate, "offered": offered[i], "got": got[i]}
                    rows.append(row)
                    loss = 100.0 * (1 - row["got"] / row["offered"]) if row["offered"] else 0.0
                    how = "flat out" if not rate else "%d/s" % rate
                    print("e2e  %-4s %5d B  %-10s offered %9.0f/s  received %9.0f/s  loss %5.1f %%  "
                          "%7.1f Mbit/s" % (name, size, how, row["offered"], row["got"], loss,
                                            row["got"] * (size + 48) * 8 / 1e6))
        return rows


def print_row(r):
    mbit = r["pps"] * (r["size"] + 48) * 8 / 1e6
    parts = "" if len(r["parts"]) == 1 else " (tx %.0f + rx %.0f)" % tuple(r["parts"])
    per = r["cpu"] / 100.0 / r["pps"] * 1e6 if r["pps"] else 0.0
    cap = 1e6 / per if per else 0.0
    base = r["base"] or 1.0
    print("alone %-4s %5d B  %9.0f pkt/s [%.0f-%.0f]%s  %7.1f Mbit/s  client CPU %5.1f %% (user %2.0f %%) = "
          "%.2f us/pkt -> %6.0f pkt/s per core  (core %3.0f %% busy)  plain UDP %9.0f pkt/s  ratio %.2f "
          "(per core %.2f)"
          % (r["dir"], r["size"], r["pps"], r["min"], r["max"], parts, mbit, r["cpu"], r["usr"], per, cap,
             r["core"], r["base"], r["pps"] / base, cap / base), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--warmup", type=float, default=0.5)
    ap.add_argument("--sizes", default="64,1232")
    ap.add_argument("--no-e2e", action="store_true")
    ap.add_argument("--e2e-rates", default="20000,100000",
                    help="paced end-to-end rates, packets/s, comma-separated (flat out is always run)")
    ap.add_argument("--impl", default="cpe_tunnel.adapters.udp6:UserspaceUdp6")
    ap.add_argument("--threads", choices=("default", "1", "2"), default="default",
                    help="forwarding threads of the plane (default: the plane's own, 2)")
    args = ap.parse_args()
    args.seconds = min(args.seconds, MAX_SECONDS)
    args.runs = max(1, min(args.runs, 15))
    if os.geteuid() != 0:
        sys.exit("needs root (namespaces, TUN)")
    for tool in ("gcc", "taskset"):
        if shutil.which(tool) is None:
            sys.exit("needs %s" % tool)
    if not args.impl.split(":")[0].endswith(".py"):
        importlib.import_module(args.impl.split(":")[0])  # fail early on a typo
    # one benchmark at a time: bench/ayiya.py takes the same lock
    import fcntl

    lock = open("/tmp/cpe-tunnel-bench.lock", "a")  # noqa: SIM115 (held until exit)
    fcntl.flock(lock, fcntl.LOCK_EX)
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    print("v6udpv4 userspace data plane: %s (threads: %s); python %s; %d CPUs; client on CPU %s, load on "
          "CPU %s; load average %s" % (args.impl, args.threads, sys.version.split()[0], os.cpu_count(),
                                       CLIENT_CPU, GEN_CPU, load), flush=True)
    bench = Bench(args)
    try:
        bench.run()
    finally:
        bench.teardown()


if __name__ == "__main__":
    main()
