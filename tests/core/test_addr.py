from cpe_tunnel.core import addr

V6 = [
    ("2001:db8::1", "2001:db8::1"),
    ("2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1"),
    ("::", "::"),
    ("::1", "::1"),
    ("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"),
    ("2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"),
    ("fe80::1:2", "fe80::1:2"),
    ("::ffff:192.0.2.1", "::ffff:c000:201"),
    ("2001:DB8::A", "2001:db8::a"),
]


def test_ip6_roundtrip():
    for text, canon in V6:
        assert addr.ip6_ntoa(addr.ip6_aton(text)) == canon, text


def test_ip6_bad():
    for bad in ["", ":", "1:2:3", "2001:db8::1::2", "2001:db8:::1", "12345::", "g::1",
                "1:2:3:4:5:6:7:8:9", "fe80::1%eth0", "1.2.3.4"]:
        try:
            addr.ip6_aton(bad)
        except ValueError:
            continue
        assert False, bad


def test_ip4():
    assert addr.ip4_aton("192.0.2.1") == b"\xc0\x00\x02\x01"
    assert addr.ip4_ntoa(b"\xcb\x00\x71\x02") == "203.0.113.2"
    for bad in ["", "1.2.3", "1.2.3.256", "01.2.3.4", "a.b.c.d", "1.2.3.4.5", " 1.2.3.4"]:
        try:
            addr.ip4_aton(bad)
        except ValueError:
            continue
        assert False, bad


def test_prefixes():
    b, p = addr.parse_prefix6("2001:db8:1234::/48")
    assert p == 48 and addr.ip6_ntoa(b) == "2001:db8:1234::"
    try:
        addr.parse_prefix6("2001:db8:1234::1/48")
        assert False
    except ValueError as e:
        assert "did you mean 2001:db8:1234::/48" in str(e)
    a, p = addr.parse_addr6_plen("2001:db8:1::2/64")
    assert p == 64 and addr.ip6_ntoa(a) == "2001:db8:1::2"


def test_subnet():
    b, p = addr.parse_prefix6("2001:db8:1234::/48")
    assert addr.ip6_ntoa(addr.subnet(b, p, 0)) == "2001:db8:1234::"
    assert addr.ip6_ntoa(addr.subnet(b, p, 1)) == "2001:db8:1234:1::"
    assert addr.ip6_ntoa(addr.subnet(b, p, 0xffff)) == "2001:db8:1234:ffff::"
    b, p = addr.parse_prefix6("2001:db8:12::/56")
    assert addr.ip6_ntoa(addr.subnet(b, 56, 3)) == "2001:db8:12:3::"
    try:
        addr.subnet(b, 56, 256)
        assert False
    except ValueError:
        pass
    assert addr.ip6_ntoa(addr.with_iid(addr.subnet(b, 56, 3), 1)) == "2001:db8:12:3::1"


def test_private():
    priv = ["10.1.2.3", "192.168.1.1", "172.31.0.1", "100.64.0.1", "127.0.0.1", "169.254.3.3"]
    pub = ["192.0.2.1", "203.0.113.5", "8.8.8.8", "172.32.0.1", "100.128.0.1"]
    for a in priv:
        assert addr.ip4_is_private(addr.ip4_aton(a)), a
    for a in pub:
        assert not addr.ip4_is_private(addr.ip4_aton(a)), a
    extra = [addr.parse_prefix4("198.51.100.0/24")]
    assert addr.ip4_is_private(addr.ip4_aton("198.51.100.7"), extra)
