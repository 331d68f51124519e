"""Cross-check the RA codec against scapy's independent ND implementation, and check the
RA scheduler's timing invariants with hypothesis."""

import socket

from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet6 import (
    ICMPv6ND_RA,
    ICMPv6ND_RS,
    ICMPv6NDOptMTU,
    ICMPv6NDOptPrefixInfo,
    ICMPv6NDOptRDNSS,
    ICMPv6NDOptSrcLLAddr,
)
from scapy.packet import raw

from cpe_tunnel.core import ra
from cpe_tunnel.core.addr import mask

u32 = st.integers(0, 0xFFFFFFFF)
addr16 = st.binary(min_size=16, max_size=16)


def _text(a):
    return socket.inet_ntop(socket.AF_INET6, a)


def _mac(b):
    return ":".join("%02x" % x for x in b)


@st.composite
def prefixes(draw):
    valid = draw(u32)
    pref = draw(st.integers(0, valid))
    plen = draw(st.integers(0, 128))
    return (draw(addr16), plen, draw(st.booleans()), draw(st.booleans()), valid, pref)


ra_args = st.fixed_dictionaries({
    "cur_hop_limit": st.integers(0, 255),
    "managed": st.booleans(),
    "other": st.booleans(),
    "router_lifetime": st.integers(0, 0xFFFF),
    "reachable": u32,
    "retrans": u32,
    "source_lladdr": st.one_of(st.none(), st.binary(min_size=6, max_size=6)),
    "mtu": st.one_of(st.none(), st.integers(1280, 0xFFFFFFFF)),
    "prefixes": st.lists(prefixes(), max_size=5),
    "rdnss": st.lists(addr16, max_size=4),
    "rdnss_lifetime": u32,
})


@settings(max_examples=300, deadline=None)
@given(ra_args)
def test_build_ra_decoded_by_scapy(kw):
    msg = ra.build_ra(**kw)
    p = ICMPv6ND_RA(msg)
    assert p.type == 134 and p.code == 0
    assert p.chlim == kw["cur_hop_limit"]
    assert p.M == int(kw["managed"]) and p.O == int(kw["other"])
    assert p.H == 0 and p.prf == 0 and p.P == 0
    assert p.routerlifetime == kw["router_lifetime"]
    assert p.reachabletime == kw["reachable"] and p.retranstimer == kw["retrans"]
    if kw["source_lladdr"] is None:
        assert ICMPv6NDOptSrcLLAddr not in p
    else:
        assert p[ICMPv6NDOptSrcLLAddr].lladdr == _mac(kw["source_lladdr"])
        assert p[ICMPv6NDOptSrcLLAddr].len == 1
    if kw["mtu"] is None:
        assert ICMPv6NDOptMTU not in p
    else:
        assert p[ICMPv6NDOptMTU].mtu == kw["mtu"]
    got = []
    while p.getlayer(ICMPv6NDOptPrefixInfo, len(got) + 1) is not None:
        got.append(p.getlayer(ICMPv6NDOptPrefixInfo, len(got) + 1))
    assert len(got) == len(kw["prefixes"])
    for o, (net, plen, onlink, auto, valid, pref) in zip(got, kw["prefixes"]):
        assert o.len == 4 and o.prefixlen == plen
        assert o.L == int(onlink) and o.A == int(auto)
        assert o.validlifetime == valid and o.preferredlifetime == pref
        assert o.prefix == _text(mask(net, plen))
    if kw["rdnss"]:
        o = p[ICMPv6NDOptRDNSS]
        assert o.lifetime == kw["rdnss_lifetime"]
        assert o.len == 1 + 2 * len(kw["rdnss"])
        assert o.dns == [_text(a) for a in kw["rdnss"]]
    else:
        assert ICMPv6NDOptRDNSS not in p
    # and our own parser agrees
    r = ra.parse_ra(msg)
    assert [(x["prefix"], x["plen"]) for x in r["prefixes"]] == [
        (mask(n, pl), pl) for n, pl, *_ in kw["prefixes"]]


@settings(max_examples=300, deadline=None)
@given(ra_args)
def test_scapy_built_ra_parsed(kw):
    p = ICMPv6ND_RA(chlim=kw["cur_hop_limit"], M=int(kw["managed"]), O=int(kw["other"]),
                    routerlifetime=kw["router_lifetime"], reachabletime=kw["reachable"],
                    retranstimer=kw["retrans"])
    if kw["source_lladdr"] is not None:
        p = p / ICMPv6NDOptSrcLLAddr(lladdr=_mac(kw["source_lladdr"]))
    if kw["mtu"] is not None:
        p = p / ICMPv6NDOptMTU(mtu=kw["mtu"])
    for net, plen, onlink, auto, valid, pref in kw["prefixes"]:
        p = p / ICMPv6NDOptPrefixInfo(prefixlen=plen, L=int(onlink), A=int(auto), validlifetime=valid,
                                      preferredlifetime=pref, prefix=_text(net))
    if kw["rdnss"]:
        p = p / ICMPv6NDOptRDNSS(lifetime=kw["rdnss_lifetime"], dns=[_text(a) for a in kw["rdnss"]])
    r = ra.parse_ra(raw(p))
    assert r["cur_hop_limit"] == kw["cur_hop_limit"]
    assert r["managed"] == kw["managed"] and r["other"] == kw["other"]
    assert r["router_lifetime"] == kw["router_lifetime"]
    assert r["reachable"] == kw["reachable"] and r["retrans"] == kw["retrans"]
    assert r["source_lladdr"] == kw["source_lladdr"]
    assert r["mtu"] == kw["mtu"]
    assert r["prefixes"] == [
        {"prefix": n, "plen": pl, "onlink": o, "autonomous": a, "valid": v, "preferred": pr}
        for n, pl, o, a, v, pr in kw["prefixes"]]
    assert r["rdnss"] == [(a, kw["rdnss_lifetime"]) for a in kw["rdnss"]]
    assert r["unknown_options"] == []


def test_scapy_rs_parsed():
    rs = raw(ICMPv6ND_RS() / ICMPv6NDOptSrcLLAddr(lladdr="02:00:00:00:00:09"))
    assert ra.parse_rs(rs, src="fe80::9")["source_lladdr"] == b"\x02\x00\x00\x00\x00\x09"
    assert ra.parse_rs(raw(ICMPv6ND_RS()))["source_lladdr"] is None


# ---- scheduler invariants ---------------------------------------------------------------

P = [bytes.fromhex("20010db800010%03x0000000000000000" % i) for i in range(4)]

events = st.lists(st.tuples(
    st.floats(0.0, 40.0),  # time step
    st.sampled_from(["rs", "prefixes", "default", "none"]),
    st.integers(0, 15),  # argument
), max_size=60)


@settings(max_examples=200, deadline=None)
@given(events, st.integers(4, 60), st.randoms(use_true_random=False))
def test_scheduler_invariants(evts, max_iv, rnd):
    s = ra.RaScheduler(max_interval=max_iv, router_lifetime=max(max_iv, 30), rand=rnd.random)
    now = 1000.0
    s.start(now)
    sent = []  # (time, parsed RA)
    burst_from = now

    def drain(until):
        for _ in range(1000):
            t = s.get_timer()
            if t is None or t > until:
                return
            assert t >= sent[-1][0] if sent else True
            out = s.handle_timer(t)
            assert len(out) == 1
            sent.append((t, ra.parse_ra(out[0])))
        raise AssertionError("runaway timer")

    changes = [now]
    active = []
    for step, kind, arg in evts:
        drain(now + step)
        now += step
        if kind == "rs":
            before = s.get_timer()
            s.on_rs(now)
            t = s.get_timer()
            # answered within MIN_DELAY_BETWEEN_RAS + MAX_RA_DELAY_TIME
            assert t <= now + ra.MIN_DELAY_BETWEEN_RAS + ra.MAX_RA_DELAY_TIME + 1e-9
            assert before is None or t <= before
        elif kind == "prefixes":
            new = [(P[i], 64, 7200 + 100 * i, 3600) for i in range(4) if arg & (1 << i)]
            changed = sorted(x[0] for x in new) != sorted(x[0] for x in active)
            s.set_prefixes(now, new)
            active = new
            if changed:
                changes.append(now)
                assert s.get_timer() <= now + ra.MIN_DELAY_BETWEEN_RAS + 1e-9
        elif kind == "default":
            s.set_default_router(now, arg & 1)
    drain(now + 4 * max_iv)
    times = [t for t, _ in sent]
    assert times and times[0] == burst_from
    for a, b in zip(times, times[1:]):
        assert b - a >= ra.MIN_DELAY_BETWEEN_RAS - 1e-9
        assert b - a <= max_iv + 1e-9
    # every currently active prefix is in the last RA with its configured lifetimes,
    # every other advertised prefix is deprecated (preferred 0, valid <= 2 h)
    last = sent[-1][1]
    adv = {p["prefix"]: p for p in last["prefixes"]}
    for net, _plen, valid, pref in active:
        assert adv[net]["valid"] == valid and adv[net]["preferred"] == pref
    for net, p in adv.items():
        if net not in [a[0] for a in active]:
            assert p["preferred"] == 0 and p["valid"] <= ra.DEPRECATED_VALID_CAP
    # after each change, an RA follows within 3 s, and the next two within 16 s each
    for c in changes:
        after = [t for t in times if t >= c]
        if len(after) >= 3 and after[2] < (changes + [1e18])[changes.index(c) + 1]:
            assert after[0] - c <= ra.MIN_DELAY_BETWEEN_RAS + 1e-9
            assert after[1] - after[0] <= ra.MAX_INITIAL_RTR_ADVERT_INTERVAL + 1e-9
            assert after[2] - after[1] <= ra.MAX_INITIAL_RTR_ADVERT_INTERVAL + 1e-9
    final = ra.parse_ra(s.stop(now + 4 * max_iv + 1))
    assert final["router_lifetime"] == 0
    assert all(p["preferred"] == 0 for p in final["prefixes"])
    assert s.get_timer() is None
