import binascii

from cpe_tunnel.core import ra
from cpe_tunnel.core.addr import ip6_aton
from cpe_tunnel.core.errors import ConfigError, LocalProtocolError, RemoteProtocolError
from corecheck import raises as _raises

P1 = ip6_aton("2001:db8:1:1::")
P2 = ip6_aton("2001:db8:1:2::")
DNS = ip6_aton("2001:db8::53")
LL = b"\x02\x00\x00\x00\x00\x01"

# Laid out by hand from RFC 4861 §4.2/§4.6 and RFC 8106 §5.1.
RA_VECTOR = binascii.unhexlify(
    "860000004000070800000000" "00000000"  # type, code, cksum, hop limit, flags, lifetime, times
    "0101020000000001"  # source link-layer address
    "05010000000005c8"  # MTU 1480
    "030440c0000151800000384000000000"  # PIO /64, L+A, valid 86400, preferred 14400
    "20010db8000100010000000000000000"
    "190300000000070820010db8000000000000000000000053"  # RDNSS lifetime 1800
)



def test_build_ra_vector():
    msg = ra.build_ra(router_lifetime=1800, source_lladdr=LL, mtu=1480,
                      prefixes=[(P1, 64, True, True, 86400, 14400)], rdnss=[DNS], rdnss_lifetime=1800)
    assert msg == RA_VECTOR, binascii.hexlify(msg)


def test_build_ra_minimal_and_flags():
    msg = ra.build_ra(cur_hop_limit=0, managed=True, other=True, router_lifetime=0,
                      reachable=30000, retrans=1000)
    assert msg == binascii.unhexlify("86000000" "00c00000" "00007530" "000003e8")


def test_build_ra_masks_host_bits_and_text_addresses():
    msg = ra.build_ra(prefixes=[(ip6_aton("2001:db8:1:1::ff"), 48, False, True, 10, 5)],
                      rdnss=["2001:db8::53", "2001:db8::54"], rdnss_lifetime=0)
    r = ra.parse_ra(msg)
    p = r["prefixes"][0]
    assert p["prefix"] == ip6_aton("2001:db8:1::") and p["plen"] == 48
    assert (p["onlink"], p["autonomous"], p["valid"], p["preferred"]) == (False, True, 10, 5)
    assert r["rdnss"] == [(DNS, 0), (ip6_aton("2001:db8::54"), 0)]


def test_build_ra_rejects():
    _raises(LocalProtocolError, ra.build_ra, router_lifetime=70000)
    _raises(LocalProtocolError, ra.build_ra, cur_hop_limit=256)
    _raises(LocalProtocolError, ra.build_ra, mtu=1000)
    _raises(LocalProtocolError, ra.build_ra, prefixes=[(P1, 64, True, True, 10, 20)])
    _raises(LocalProtocolError, ra.build_ra, prefixes=[(P1, 129, True, True, 10, 5)])
    _raises(LocalProtocolError, ra.build_ra, prefixes=[(P1, 64, True, True, 10)])
    _raises(LocalProtocolError, ra.build_ra, prefixes=[(b"short", 64, True, True, 10, 5)])
    _raises(LocalProtocolError, ra.build_ra, rdnss=["not-an-address"])
    _raises(LocalProtocolError, ra.build_ra, source_lladdr=b"")
    many = [(ip6_aton("2001:db8:%x::" % i), 64, True, True, 10, 5) for i in range(40)]
    _raises(LocalProtocolError, ra.build_ra, prefixes=many)


def test_parse_ra_roundtrip():
    r = ra.parse_ra(RA_VECTOR, src="fe80::1")
    assert r["cur_hop_limit"] == 64 and r["router_lifetime"] == 1800
    assert not r["managed"] and not r["other"] and r["flags"] == 0
    assert r["source_lladdr"] == LL and r["mtu"] == 1480
    assert r["prefixes"] == [{"prefix": P1, "plen": 64, "onlink": True, "autonomous": True,
                              "valid": 86400, "preferred": 14400}]
    assert r["rdnss"] == [(DNS, 1800)]
    assert r["unknown_options"] == []


def test_parse_ra_tolerates_unknown_options():
    unknown = b"\x18\x02" + bytes(14)  # route information option (RFC 4191), not decoded
    weird = b"\xfd\x01" + bytes(6)
    r = ra.parse_ra(RA_VECTOR[:16] + unknown + RA_VECTOR[16:] + weird)
    assert r["unknown_options"] == [24, 253]
    assert r["mtu"] == 1480 and len(r["prefixes"]) == 1


def test_parse_ra_rejects():
    hdr = RA_VECTOR[:16]
    bad = [
        b"", hdr[:15], b"\x85" + hdr[1:], b"\x86\x01" + hdr[2:],
        hdr + b"\x01\x00" + bytes(6),  # length 0 option
        hdr + b"\x01",  # option header cut
        hdr + b"\x01\x02" + bytes(6),  # claims 16 bytes, has 8
        hdr + b"\x05\x02" + bytes(14),  # MTU option of 16 bytes
        hdr + b"\x03\x03" + bytes(22),  # PIO of 24 bytes
        hdr + b"\x03\x04\x81" + bytes(29),  # prefix length 129
        hdr + b"\x19\x01" + bytes(6),  # RDNSS without address
        hdr + b"\x19\x02" + bytes(14),  # RDNSS of 16 bytes (not 8+16n)
        RA_VECTOR[:-1],
    ]
    for b in bad:
        _raises(RemoteProtocolError, ra.parse_ra, b)
    _raises(RemoteProtocolError, ra.parse_ra, RA_VECTOR, src="2001:db8::1")
    _raises(RemoteProtocolError, ra.parse_ra, RA_VECTOR, src="bogus")
    _raises(RemoteProtocolError, ra.parse_ra, None)


def test_parse_rs():
    rs = b"\x85\x00\x00\x00\x00\x00\x00\x00"
    assert ra.parse_rs(rs) == {"source_lladdr": None, "unknown_options": []}
    rs2 = rs + b"\x01\x01" + LL + b"\x0e\x01" + bytes(6)
    r = ra.parse_rs(rs2, src="fe80::2")
    assert r["source_lladdr"] == LL and r["unknown_options"] == [14]
    assert ra.parse_rs(rs, src="::")["source_lladdr"] is None
    _raises(RemoteProtocolError, ra.parse_rs, rs2, src="::")
    for b in [b"", rs[:7], b"\x86" + rs[1:], b"\x85\x05" + rs[2:], rs + b"\x01\x00" + bytes(6),
              rs + b"\x01\x02" + bytes(6), rs + b"\x01"]:
        _raises(RemoteProtocolError, ra.parse_rs, b)


# ---- scheduler -------------------------------------------------------------------------

class Rand:
    """Repeats a list of values in [0, 1)."""

    def __init__(self, values):
        self.values = values
        self.i = 0

    def __call__(self):
        v = self.values[self.i % len(self.values)]
        self.i += 1
        return v


def run(s, until, log, start=None):
    """Step the scheduler from its timer until `until`, appending (time, parsed RA)."""
    for _ in range(10000):
        t = s.get_timer()
        if t is None or t > until:
            return
        if start is not None and t < start:
            t = start
        out = s.handle_timer(t)
        assert len(out) == 1
        log.append((t, ra.parse_ra(out[0])))
    assert False, "scheduler did not settle"


def test_scheduler_config_checks():
    _raises(ConfigError, ra.RaScheduler, max_interval=3)
    _raises(ConfigError, ra.RaScheduler, max_interval=2000)
    _raises(ConfigError, ra.RaScheduler, max_interval=600, min_interval=500)
    _raises(ConfigError, ra.RaScheduler, max_interval=600, min_interval=2)
    _raises(ConfigError, ra.RaScheduler, max_interval=600, router_lifetime=300)
    _raises(ConfigError, ra.RaScheduler, router_lifetime=9001)
    _raises(ConfigError, ra.RaScheduler, mtu=1200)
    _raises(ConfigError, ra.RaScheduler, rdnss=["nope"])
    _raises(ConfigError, ra.RaScheduler, max_interval="600")
    s = ra.RaScheduler(max_interval=600)
    assert abs(s.min_interval - 198) < 1e-9 and s.rdnss_lifetime == 1800
    s = ra.RaScheduler(max_interval=8, router_lifetime=0)
    assert s.min_interval == 6  # 0.75 x max below 9 s (RFC 4861 erratum 3154)
    ra.RaScheduler(max_interval=4, router_lifetime=4)


def test_idle_until_prefixes_or_start():
    s = ra.RaScheduler(rand=Rand([0.5]))
    assert s.get_timer() is None and s.handle_timer(100.0) == []
    s.on_rs(100.0)
    assert s.get_timer() is None
    s.set_prefixes(100.0, [])
    assert s.get_timer() is None and s.state == "idle"
    s.set_prefixes(101.0, [(P1, 64, 86400, 14400)])
    assert s.get_timer() == 101.0
    s2 = ra.RaScheduler(rand=Rand([0.5]))
    s2.start(50.0)
    assert s2.get_timer() == 50.0
    assert ra.parse_ra(s2.handle_timer(50.0)[0])["prefixes"] == []


def test_initial_burst_then_periodic():
    s = ra.RaScheduler(max_interval=600, rand=Rand([0.999]), source_lladdr=LL, mtu=1480, rdnss=[DNS])
    s.set_prefixes(1000.0, [(P1, 64, 86400, 14400)])
    assert s.handle_timer(999.0) == []
    log = []
    run(s, 1000.0 + 2000, log)
    times = [t for t, _ in log]
    # first at once, the next two 16 s apart (capped), then random in [198, 600]
    assert times[:3] == [1000.0, 1016.0, 1032.0], times
    for a, b in zip(times[2:], times[3:]):
        assert 198 <= b - a <= 600, (a, b)
    r = log[0][1]
    assert r["router_lifetime"] == 1800 and r["source_lladdr"] == LL and r["mtu"] == 1480
    assert r["rdnss"] == [(DNS, 1800)]
    assert r["prefixes"][0]["valid"] == 86400 and r["prefixes"][0]["preferred"] == 14400
    # active lifetimes are not decremented
    assert log[-1][1]["prefixes"][0]["valid"] == 86400


def test_initial_interval_random_below_cap():
    s = ra.RaScheduler(max_interval=10, router_lifetime=30, rand=Rand([0.0]))
    s.start(0.0)
    log = []
    run(s, 100.0, log)
    times = [t for t, _ in log]
    # min interval 3.3 s (0.33 x 10) is below the 16 s cap, so it is used as drawn
    for a, b in zip(times[:4], [0.0, 3.3, 6.6, 9.9]):
        assert abs(a - b) < 1e-9, times


def test_periodic_spread_with_lcg():
    s = ra.RaScheduler(max_interval=30, router_lifetime=90)  # default generator
    s.start(0.0)
    log = []
    run(s, 3000.0, log)
    gaps = [b[0] - a[0] for a, b in zip(log[2:], log[3:])]
    assert min(gaps) >= 9.9 and max(gaps) <= 30
    assert max(gaps) - min(gaps) > 10  # actually random, not constant


def test_solicited_ra_delay_and_rate_limit():
    s = ra.RaScheduler(max_interval=600, rand=Rand([0.4]))
    s.set_prefixes(0.0, [(P1, 64, 86400, 14400)])
    log = []
    run(s, 100.0, log)
    assert len(log) == 3  # 0, 16, 32
    nxt = s.get_timer()
    assert nxt > 200
    assert abs(nxt - (32 + 198 + 0.4 * 402)) < 1e-6
    s.on_rs(300.0)
    assert abs(s.get_timer() - 300.2) < 1e-9  # 0.4 * MAX_RA_DELAY_TIME
    # more solicitations in the meantime do not add RAs
    s.on_rs(300.1)
    s.on_rs(300.15)
    assert abs(s.get_timer() - 300.2) < 1e-9
    assert s.handle_timer(300.19) == []
    assert s.handle_timer(300.2) != []
    assert s.handle_timer(300.2) == []
    # the periodic timer was re-armed from the solicited (multicast) RA
    assert abs(s.get_timer() - (300.2 + 198 + 0.4 * 402)) < 1e-6
    # an RS 1 s after an RA waits until 3 s after that RA plus the random delay
    s.on_rs(301.2)
    assert abs(s.get_timer() - (300.2 + 3 + 0.2)) < 1e-9


def test_rs_does_not_postpone_a_due_ra():
    s = ra.RaScheduler(max_interval=600, rand=Rand([0.9]))
    s.start(0.0)
    s.handle_timer(0.0)  # next at 16
    s.on_rs(15.9)  # would be 15.9 + 0.45
    assert s.get_timer() == 16.0


def test_deprecation_l13():
    s = ra.RaScheduler(max_interval=600, rand=Rand([0.5]))
    s.set_prefixes(0.0, [(P1, 64, 86400, 14400)])
    log = []
    run(s, 5000.0, log)
    n = len(log)
    s.set_prefixes(5000.0, [(P2, 64, 3000, 1000)])
    # prompt RA, at most 3 s after the last one
    assert s.get_timer() <= max(5000.0, log[-1][0] + 3)
    run(s, 5000.0 + 7300, log)
    burst = log[n:n + 3]
    assert burst[1][0] - burst[0][0] <= 16 and burst[2][0] - burst[1][0] <= 16
    first = burst[0][1]["prefixes"]
    old = [p for p in first if p["prefix"] == P1][0]
    new = [p for p in first if p["prefix"] == P2][0]
    assert old["preferred"] == 0 and 7190 <= old["valid"] <= 7200
    assert new["preferred"] == 1000 and new["valid"] == 3000
    # the old prefix counts down in real time, then disappears
    for t, r in log[n:]:
        olds = [p for p in r["prefixes"] if p["prefix"] == P1]
        if t - 5000.0 < 7199:
            assert olds and olds[0]["preferred"] == 0, t
            assert abs(olds[0]["valid"] - (7200 - (t - 5000.0))) <= 1, (t, olds)
        elif t - 5000.0 >= 7200:
            assert not olds, t
    st = s.prefixes_state(5000.0 + 7300)
    assert st == [{"prefix": "2001:db8:1:2::/64", "state": "active", "valid": 3000, "preferred": 1000}]


def test_deprecation_keeps_shorter_valid_and_reactivates():
    s = ra.RaScheduler(max_interval=600, rand=Rand([0.5]))
    s.set_prefixes(0.0, [(P1, 64, 1000, 500)])
    s.handle_timer(0.0)
    s.set_prefixes(10.0, [])
    st = s.prefixes_state(110.0)
    assert st == [{"prefix": "2001:db8:1:1::/64", "state": "deprecated", "valid": 900, "preferred": 0}]
    s.set_prefixes(120.0, [(P1, 64, 1000, 500)])
    assert s.prefixes_state(120.0)[0]["state"] == "active"
    assert s.prefixes_state(2000.0)[0]["state"] == "active"
    s.set_prefixes(3000.0, [])
    assert s.prefixes_state(3999.0)[0]["valid"] == 1
    assert s.prefixes_state(4000.0) == []


def test_lifetime_update_is_not_a_change():
    s = ra.RaScheduler(max_interval=600, rand=Rand([0.5]))
    s.set_prefixes(0.0, [(P1, 64, 86400, 14400)])
    log = []
    run(s, 100.0, log)
    t = s.get_timer()
    s.set_prefixes(200.0, [(P1, 64, 80000, 10000)])
    assert s.get_timer() == t
    assert ra.parse_ra(s.handle_timer(t)[0])["prefixes"][0]["valid"] == 80000


def test_max_deprecated():
    s = ra.RaScheduler(rand=Rand([0.5]))
    for i in range(12):
        s.set_prefixes(float(i), [(ip6_aton("2001:db8:%x::" % i), 64, 86400, 3600)])
    st = s.prefixes_state(20.0)
    assert len(st) == 1 + ra.MAX_DEPRECATED
    assert st[-1] == {"prefix": "2001:db8:b::/64", "state": "active", "valid": 86400, "preferred": 3600}
    assert [x["prefix"] for x in st[:-1]] == ["2001:db8:%x::/64" % i for i in range(3, 11)]
    # everything still fits in one RA
    assert len(ra.parse_ra(s.current_ra(20.0))["prefixes"]) == 9


def test_set_default_router_and_stop():
    s = ra.RaScheduler(max_interval=600, rand=Rand([0.5]), rdnss=[DNS])
    s.set_prefixes(0.0, [(P1, 64, 86400, 14400)])
    log = []
    run(s, 100.0, log)
    s.set_default_router(200.0, False)
    assert s.get_timer() == 200.0
    r = ra.parse_ra(s.handle_timer(200.0)[0])
    assert r["router_lifetime"] == 0 and r["prefixes"][0]["preferred"] == 14400
    s.set_default_router(201.0, False)  # no change, nothing new
    assert s.get_timer() == 216.0
    final = ra.parse_ra(s.stop(202.0))
    assert final["router_lifetime"] == 0
    assert final["prefixes"] == [{"prefix": P1, "plen": 64, "onlink": True, "autonomous": True,
                                  "valid": 7200, "preferred": 0}]
    assert final["rdnss"] == [(DNS, 0)]
    assert s.get_timer() is None and s.handle_timer(10000.0) == [] and s.state == "stopped"
    s.on_rs(202.5)
    assert s.get_timer() is None
    # set_prefixes while stopped only records; start resumes after the 3 s spacing
    s.set_prefixes(203.0, [(P2, 64, 100, 50)])
    assert s.get_timer() is None
    s.start(204.0)
    assert s.get_timer() == 205.0  # 3 s after the final RA
    r = ra.parse_ra(s.handle_timer(205.0)[0])
    assert r["router_lifetime"] == 0  # still no default route
    assert [(p["prefix"], p["preferred"], p["valid"]) for p in r["prefixes"]] == [
        (P1, 0, 7198), (P2, 50, 100)]


def test_min_delay_between_all_ras():
    s = ra.RaScheduler(max_interval=4, router_lifetime=0, rand=Rand([0.0, 0.3, 0.9, 0.6]))
    times = []
    t = 0.0
    s.start(0.0)
    for step in range(400):
        t += 0.37
        if step % 7 == 0:
            s.on_rs(t)
        if step % 11 == 0:
            s.set_prefixes(t, [(ip6_aton("2001:db8:%x::" % (step % 3)), 64, 600, 300)])
        if step % 13 == 0:
            s.set_default_router(t, step % 2 == 0)
        dl = s.get_timer()
        if dl is not None and dl <= t:
            if s.handle_timer(t):
                times.append(t)
    assert len(times) > 20
    for a, b in zip(times, times[1:]):
        assert b - a >= 3 - 1e-9, (a, b)
