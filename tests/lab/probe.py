"""Small probes the lab runs inside a namespace (``ip netns exec NS python -m tests.lab.probe``).

  sixin4  --remote IPv4 --src IPv6 --dst IPv6 [--local IPv4] [--count N] [--timeout S] [--hlim H]
          Send ICMPv6 echo requests encapsulated in IPv4 protocol 41 (RFC 4213) with a
          raw socket, collect encapsulated echo replies. Prints JSON.
  ra      --iface IF --prefix P/64 [--lifetime S] [--preferred S] [--valid S]
          Send one minimal Router Advertisement (RFC 4861) with a Prefix Information
          option (L and A set) to ff02::1 on IF: a lab self-check that the lan host does
          SLAAC. Not a reference for the daemon's RAs (use radvd for that).
  http    URL [--ca FILE] [--timeout S]
          GET with HTTP basic auth sent up front when CT_HTTP_USER is set in the
          environment (password in CT_HTTP_PASSWORD). Prints JSON {status, body, headers}
          or {error}.

The functions (sixin4_ping, http_get, send_router_advert) also run in-process through
Lab.call_in(), which enters the namespace in a helper thread -- no process start-up.
Stand-alone on purpose (no cpe_tunnel imports): it checks the broker, not our client.
"""

import argparse
import base64
import http.client
import json
import os
import select
import socket
import ssl
import struct
import sys
import time
import urllib.parse


def _csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def echo_request(src, dst, ident, seq, payload=b"cpe-tunnel-lab", hlim=64):
    """IPv6 packet carrying an ICMPv6 echo request (RFC 4443), checksum per RFC 8200 8.1."""
    s = socket.inet_pton(socket.AF_INET6, src)
    d = socket.inet_pton(socket.AF_INET6, dst)
    icmp = struct.pack("!BBHHH", 128, 0, 0, ident, seq) + payload
    pseudo = s + d + struct.pack("!I3xB", len(icmp), 58)
    icmp = icmp[:2] + struct.pack("!H", _csum(pseudo + icmp)) + icmp[4:]
    hdr = struct.pack("!IHBB", 6 << 28, len(icmp), 58, hlim) + s + d
    return hdr + icmp


def parse_reply(pkt):
    """IPv4(proto 41) + IPv6 + ICMPv6 -> dict, or None if it is not such a packet."""
    if len(pkt) < 20 or pkt[0] >> 4 != 4 or pkt[9] != 41:
        return None
    ihl = (pkt[0] & 15) * 4
    inner = pkt[ihl:]
    if len(inner) < 48 or inner[0] >> 4 != 6:
        return None
    d = {
        "outer_src": socket.inet_ntop(socket.AF_INET, pkt[12:16]),
        "outer_dst": socket.inet_ntop(socket.AF_INET, pkt[16:20]),
        "inner_src": socket.inet_ntop(socket.AF_INET6, inner[8:24]),
        "inner_dst": socket.inet_ntop(socket.AF_INET6, inner[24:40]),
        "next_header": inner[6],
        "hlim": inner[7],
    }
    if inner[6] == 58:
        typ, code, _ck, ident, seq = struct.unpack_from("!BBHHH", inner, 40)
        d.update({"icmp_type": typ, "icmp_code": code, "ident": ident, "seq": seq})
    return d


def sixin4_ping(remote, src, dst, count=1, timeout=2.0, local=None, hlim=64):
    """Echo requests src -> dst inside IPv4 protocol 41 to `remote`; returns
    {'sent', 'replies': [parse_reply dicts], 'other': packets that were not our replies, 'ident'}.
    Runs in the calling thread's network namespace."""
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 41)
    try:
        if local:
            s.bind((local, 0))
        ident = (os.getpid() ^ id(s)) & 0xFFFF
        replies, other, sent = [], 0, 0
        for seq in range(1, count + 1):
            s.sendto(echo_request(src, dst, ident, seq, hlim=hlim), (remote, 0))
            sent += 1
            deadline = time.monotonic() + timeout
            got = False
            while not got:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                r, _, _ = select.select([s], [], [], left)
                if not r:
                    break
                d = parse_reply(s.recv(65536))
                if d and d.get("icmp_type") == 129 and d.get("ident") == ident and d.get("seq") == seq:
                    replies.append(d)
                    got = True
                else:
                    other += 1
    finally:
        s.close()
    return {"sent": sent, "replies": replies, "other": other, "ident": ident}


def sixin4(args):
    print(
        json.dumps(
            sixin4_ping(args.remote, args.src, args.dst, args.count, args.timeout, args.local, args.hlim)
        )
    )
    return 0


def send_router_advert(iface, prefix, lifetime=1800, preferred=14400, valid=86400):
    """One minimal RA with a Prefix Information option (L, A) to ff02::1 on `iface`."""
    net, _, plen = prefix.partition("/")
    plen = int(plen or 64)
    ra = struct.pack("!BBHBBHII", 134, 0, 0, 64, 0, lifetime, 0, 0)
    pio = struct.pack("!BBBBIII", 3, 4, plen, 0xC0, valid, preferred, 0)
    pio += socket.inet_pton(socket.AF_INET6, net)
    idx = socket.if_nametoindex(iface)
    s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, iface.encode())
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, idx)
        s.sendto(ra + pio, ("ff02::1", 0, 0, idx))  # the kernel fills in the ICMPv6 checksum
    finally:
        s.close()
    return {"sent": 1}


def send_ra(args):
    print(json.dumps(send_router_advert(args.iface, args.prefix, args.lifetime, args.preferred, args.valid)))
    return 0


def http_get(url, user=None, password=None, ca=None, timeout=5.0):
    """GET `url`; basic auth sent up front when `user` is given. Returns
    {'status', 'body', 'headers'} or {'status': None, 'error'}. Runs in the calling
    thread's network namespace."""
    u = urllib.parse.urlsplit(url)
    port = u.port or (443 if u.scheme == "https" else 80)
    conn = None
    try:
        if u.scheme == "https":
            ctx = ssl.create_default_context(cafile=ca) if ca else ssl.create_default_context()
            conn = http.client.HTTPSConnection(u.hostname, port, timeout=timeout, context=ctx)
        else:
            conn = http.client.HTTPConnection(u.hostname, port, timeout=timeout)
        headers = {"User-Agent": "cpe-tunnel-lab-probe/1"}
        if user is not None:
            tok = base64.b64encode(("%s:%s" % (user, password or "")).encode()).decode()
            headers["Authorization"] = "Basic " + tok
        path = u.path or "/"
        if u.query:
            path += "?" + u.query
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        body = resp.read(65536).decode("utf-8", "replace")
        return {"status": resp.status, "body": body, "headers": dict(resp.getheaders())}
    except (OSError, ssl.SSLError, http.client.HTTPException) as exc:
        return {"status": None, "error": "%s: %s" % (type(exc).__name__, exc)}
    finally:
        if conn is not None:
            conn.close()


def http_cmd(args):
    print(
        json.dumps(
            http_get(
                args.url,
                os.environ.get("CT_HTTP_USER"),
                os.environ.get("CT_HTTP_PASSWORD"),
                args.ca,
                args.timeout,
            )
        )
    )
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m tests.lab.probe")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("sixin4")
    p.add_argument("--remote", required=True)
    p.add_argument("--src", required=True)
    p.add_argument("--dst", required=True)
    p.add_argument("--local")
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--timeout", type=float, default=2.0)
    p.add_argument("--hlim", type=int, default=64)
    p = sub.add_parser("ra")
    p.add_argument("--iface", required=True)
    p.add_argument("--prefix", required=True)
    p.add_argument("--lifetime", type=int, default=1800)
    p.add_argument("--preferred", type=int, default=14400)
    p.add_argument("--valid", type=int, default=86400)
    p = sub.add_parser("http")
    p.add_argument("url")
    p.add_argument("--ca")
    p.add_argument("--timeout", type=float, default=5.0)
    args = ap.parse_args(argv)
    return {"sixin4": sixin4, "ra": send_ra, "http": http_cmd}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
