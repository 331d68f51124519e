# AYIYA codec and session tests. Runs under pytest and MicroPython (tests/mprun.py).
# The vectors are every distinct AYIYA datagram of ../shared/captures/aiccu-ayiya.pcap
# (AICCU <-> sixxsd) and sixxsd_probe.pcap, with the capture time (whole seconds) as the
# receiver's clock. tests/unit/test_sixxs_captures.py checks this table against the pcaps.
import binascii

from cpe_tunnel.core import addr, ayiya
from cpe_tunnel.core.errors import LocalProtocolError, RemoteProtocolError
from corecheck import raises as _raises

PASSWORD = "ayiyasecret123"
KEY = ayiya.password_hash(PASSWORD)
CLIENT = addr.ip6_aton("2001:db8:2ff:1::2")
POP = addr.ip6_aton("2001:db8:2ff:1::1")

# (direction, capture time, hex): c2p = client (AICCU) to PoP, p2c = PoP (sixxsd) to client
VECTORS = [
    # aiccu #0 192.0.2.2 -> 192.0.2.1
    ("c2p", 1795382240, (
        "415211296b035be020010db802ff000100000000000000022631a423db26b805ba3597e7cc7938d6e8505627"
        "6000000000083afffe800000000000009cbabb69953d2860ff02000000000000000000000000000285006775"
        "00000000"
    )),
    # aiccu #1 192.0.2.2 -> 192.0.2.1
    ("c2p", 1795382240, (
        "4152103b6b035be020010db802ff00010000000000000002598cd4d61d5994bd8357236e5b2e5fcd6f98d2aa"
    )),
    # aiccu #4 192.0.2.2 -> 192.0.2.1
    ("c2p", 1795382245, (
        "415211296b035be520010db802ff00010000000000000002b267eb41b9e458969f25347d46526b8208daaf44"
        "6000000000083afffe800000000000009cbabb69953d2860ff02000000000000000000000000000285006775"
        "00000000"
    )),
    # aiccu #5 192.0.2.2 -> 192.0.2.1
    ("c2p", 1795382245, (
        "415211296b035be520010db802ff000100000000000000023fc165eedf96b66f2a6946c8b985b446c3908a3d"
        "600bf99100403a4020010db802ff0001000000000000000220010db802ff0001000000000000000180006784"
        "63ed0001e55b036b000000009d030e0000000000101112131415161718191a1b1c1d1e1f2021222324252627"
        "28292a2b2c2d2e2f3031323334353637"
    )),
    # aiccu #6 192.0.2.1 -> 192.0.2.2
    ("p2c", 1795382245, (
        "415211296b035be520010db802ff00010000000000000001f858faa6336a8b4bfb3d085901a628e74b73ece2"
        "6000000000403a4020010db802ff0001000000000000000120010db802ff0001000000000000000281006684"
        "63ed0001e55b036b000000009d030e0000000000101112131415161718191a1b1c1d1e1f2021222324252627"
        "28292a2b2c2d2e2f3031323334353637"
    )),
    # aiccu #7 192.0.2.2 -> 192.0.2.1
    ("c2p", 1795382246, (
        "415211296b035be620010db802ff00010000000000000002e7595eb828e42dc45de23aac5adb679e4b556c5f"
        "600bf99100403a4020010db802ff0001000000000000000220010db802ff000100000000000000018000f65e"
        "63ed0002e65b036b000000000d280e0000000000101112131415161718191a1b1c1d1e1f2021222324252627"
        "28292a2b2c2d2e2f3031323334353637"
    )),
    # aiccu #8 192.0.2.1 -> 192.0.2.2
    ("p2c", 1795382246, (
        "415211296b035be620010db802ff00010000000000000001e2542260a1ff060722496034ae4515c305140737"
        "6000000000403a4020010db802ff0001000000000000000120010db802ff000100000000000000028100f55e"
        "63ed0002e65b036b000000000d280e0000000000101112131415161718191a1b1c1d1e1f2021222324252627"
        "28292a2b2c2d2e2f3031323334353637"
    )),
    # aiccu #9 192.0.2.2 -> 192.0.2.1
    ("c2p", 1795382247, (
        "415211296b035be720010db802ff000100000000000000021b9897657535775862a20db971d9bd33307c361c"
        "600bf99100403a4020010db802ff0001000000000000000220010db802ff0001000000000000000180003c00"
        "63ed0003e75b036b00000000c6850e0000000000101112131415161718191a1b1c1d1e1f2021222324252627"
        "28292a2b2c2d2e2f3031323334353637"
    )),
    # aiccu #10 192.0.2.1 -> 192.0.2.2
    ("p2c", 1795382247, (
        "415211296b035be720010db802ff00010000000000000001e9dd498cd5e259b700c3e539ed0f73de603b9a29"
        "6000000000403a4020010db802ff0001000000000000000120010db802ff0001000000000000000281003b00"
        "63ed0003e75b036b00000000c6850e0000000000101112131415161718191a1b1c1d1e1f2021222324252627"
        "28292a2b2c2d2e2f3031323334353637"
    )),
    # aiccu #11 192.0.2.1 -> 192.0.2.2
    ("p2c", 1795382250, (
        "415211296b035bea20010db802ff000100000000000000011d520620f33b130534acb69aad6e4dbf09386be5"
        "6000000003dd3a4020010db802ff0001000000000000000120010db802ff0001000000000000000280004f7c"
        "4242000319624401e46006003c4a295f0d832c875468616e6b20796f7520666f722061637475616c6c79206c"
        "6f6f6b696e6720617420746865207061636b6574732c20696620796f75206e65656420667572746865722068"
        "656c7020646f6e277420686573697461746520746f20726561642068747470733a2f2f7777772e7369787873"
        "2e6e65742f636f6e746163742f20616e64207065727573652074686520666f72756d73210a596f7520476f74"
        "2050696e676564206279205369785853210a00596f7520476f742050696e676564206279205369785853210a"
        "00596f7520476f742050696e676564206279205369785853210a00596f7520476f742050696e676564206279"
        "205369785853210a00596f7520476f742050696e676564206279205369785853210a00596f7520476f742050"
        "696e676564206279205369785853210a00596f7520476f742050696e676564206279205369785853210a0059"
        "6f7520476f742050696e676564206279205369785853210a00596f7520476f742050696e6765642062792053"
        "69785853210a00596f7520476f742050696e676564206279205369785853210a00596f7520476f742050696e"
        "676564206279205369785853210a00596f7520476f742050696e676564206279205369785853210a00596f75"
        "20476f742050696e676564206279205369785853210a00596f7520476f742050696e67656420627920536978"
        "5853210a00596f7520476f742050696e676564206279205369785853210a00596f7520476f742050696e6765"
        "64206279205369785853210a00596f7520476f742050696e676564206279205369785853210a00596f752047"
        "6f742050696e676564206279205369785853210a00596f7520476f742050696e676564206279205369785853"
        "210a00596f7520476f742050696e676564206279205369785853210a00596f7520476f742050696e67656420"
        "6279205369785853210a00596f7520476f742050696e676564206279205369785853210a00596f7520476f74"
        "2050696e676564206279205369785853210a00596f7520476f742050696e676564206279205369785853210a"
        "00596f7520476f742050696e676564206279205369785853210a00596f7520476f742050696e676564206279"
        "205369785853210a00596f7520476f742050696e676564206279205369785853210a00596f7520476f742050"
        "696e676564206279205369785853210a00596f7520476f742050696e676564206279205369785853210a0059"
        "6f7520476f742050696e676564206279205369785853210a00596f7520476f742050696e6765642062792053"
        "69785853210a00596f7520476f74205069"
    )),
    # aiccu #12 192.0.2.2 -> 192.0.2.1
    ("c2p", 1795382250, (
        "415211296b035bea20010db802ff000100000000000000025b0963b974decd337855a8603a0d00b18740abda"
        "600dff7a03dd3a4020010db802ff0001000000000000000220010db802ff0001000000000000000181004e7c"
        "4242000319624401e46006003c4a295f0d832c875468616e6b20796f7520666f722061637475616c6c79206c"
        "6f6f6b696e6720617420746865207061636b6574732c20696620796f75206e65656420667572746865722068"
        "656c7020646f6e277420686573697461746520746f20726561642068747470733a2f2f7777772e7369787873"
        "2e6e65742f636f6e746163742f20616e64207065727573652074686520666f72756d73210a596f7520476f74"
        "2050696e676564206279205369785853210a00596f7520476f742050696e676564206279205369785853210a"
        "00596f7520476f742050696e676564206279205369785853210a00596f7520476f742050696e676564206279"
        "205369785853210a00596f7520476f742050696e676564206279205369785853210a00596f7520476f742050"
        "696e676564206279205369785853210a00596f7520476f742050696e676564206279205369785853210a0059"
        "6f7520476f742050696e676564206279205369785853210a00596f7520476f742050696e6765642062792053"
        "69785853210a00596f7520476f742050696e676564206279205369785853210a00596f7520476f742050696e"
        "676564206279205369785853210a00596f7520476f742050696e676564206279205369785853210a00596f75"
        "20476f742050696e676564206279205369785853210a00596f7520476f742050696e67656420627920536978"
        "5853210a00596f7520476f742050696e676564206279205369785853210a00596f7520476f742050696e6765"
        "64206279205369785853210a00596f7520476f742050696e676564206279205369785853210a00596f752047"
        "6f742050696e676564206279205369785853210a00596f7520476f742050696e676564206279205369785853"
        "210a00596f7520476f742050696e676564206279205369785853210a00596f7520476f742050696e67656420"
        "6279205369785853210a00596f7520476f742050696e676564206279205369785853210a00596f7520476f74"
        "2050696e676564206279205369785853210a00596f7520476f742050696e676564206279205369785853210a"
        "00596f7520476f742050696e676564206279205369785853210a00596f7520476f742050696e676564206279"
        "205369785853210a00596f7520476f742050696e676564206279205369785853210a00596f7520476f742050"
        "696e676564206279205369785853210a00596f7520476f742050696e676564206279205369785853210a0059"
        "6f7520476f742050696e676564206279205369785853210a00596f7520476f742050696e6765642062792053"
        "69785853210a00596f7520476f74205069"
    )),
    # aiccu #13 192.0.2.1 -> 192.0.2.2
    ("p2c", 1795382251, (
        "415211296b035beb20010db802ff000100000000000000012d72871bd8ed7b0e4b9d45d95f62ffe4bce55542"
        "6009e4c900403a4020010db801000000000000000000000120010db802ff00010000000000000002800076c7"
        "63fd0001eb5b036b0000000094b0030000000000101112131415161718191a1b1c1d1e1f2021222324252627"
        "28292a2b2c2d2e2f3031323334353637"
    )),
    # aiccu #14 192.0.2.1 -> 192.0.2.2
    ("p2c", 1795382252, (
        "415211296b035bec20010db802ff0001000000000000000145d043a58536b6d09bcedf811f9e58befe228ad5"
        "6009e4c900403a4020010db801000000000000000000000120010db802ff0001000000000000000280006751"
        "63fd0002ec5b036b00000000a225040000000000101112131415161718191a1b1c1d1e1f2021222324252627"
        "28292a2b2c2d2e2f3031323334353637"
    )),
    # aiccu #15 192.0.2.2 -> 192.0.2.1
    ("c2p", 1795382254, (
        "415211296b035bee20010db802ff00010000000000000002c107fa583af5dce32327b73b9273ea105f021f07"
        "6000000000083afffe800000000000009cbabb69953d2860ff02000000000000000000000000000285006775"
        "00000000"
    )),
    # probe #1 192.0.2.2 -> 192.0.2.1
    ("c2p", 1795381916, (
        "415211296b035a9c20010db802ff000100000000000000025b150970cbbaaa32545df5ecc6130fd471fb9ec7"
        "60000000000d3a4020010db802ff0001000000000000000220010db802ff000100000000000000018000c738"
        "1234000170726f6265"
    )),
    # probe #2 192.0.2.1 -> 192.0.2.2
    ("p2c", 1795381916, (
        "415211296b035a9c20010db802ff00010000000000000001d0ded75e957d1c875c426e9d2778d973f5c3b15b"
        "60000000000d3a4020010db802ff0001000000000000000120010db802ff000100000000000000028100c638"
        "1234000170726f6265"
    )),
]


def _vectors():
    return [(d, t, binascii.unhexlify(h)) for d, t, h in VECTORS]


def _drop_code(pkt, now, key=KEY, ident=None, max_skew=120):
    try:
        ayiya.ayiya_decode(pkt, key, now, max_skew, ident)
    except ayiya.AyiyaError as e:
        assert isinstance(e, RemoteProtocolError)
        assert e.code in ayiya.DROP_REASONS and e.reason.startswith(e.code)
        assert PASSWORD not in e.reason
        return e.code
    return None


def _resign(pkt, key=KEY):
    # recompute the signature of a (modified) datagram, keeping all its other bytes
    b = bytearray(pkt)
    b[24:44] = key
    import hashlib
    b[24:44] = hashlib.sha1(bytes(b)).digest()
    return bytes(b)



def test_capture_vectors_cover_both_directions_and_kinds():
    v = _vectors()
    assert len(v) == 16
    assert len([1 for d, t, p in v if d == "p2c"]) >= 6
    ops = [p[2] & 15 for d, t, p in v]
    assert ayiya.OP_NOOP in ops and ayiya.OP_FORWARD in ops
    assert max([len(p) for d, t, p in v]) > 1000


def test_every_captured_packet_verifies():
    for d, t, p in _vectors():
        ident = CLIENT if d == "c2p" else POP
        op, nh, payload, epoch = ayiya.ayiya_decode(p, KEY, t, 120, ident)
        assert epoch == t  # AICCU and sixxsd stamp the current time
        assert bytes(payload) == p[44:]
        if op == ayiya.OP_NOOP:
            assert nh == ayiya.NH_NONE and len(payload) == 0
        else:
            assert op == ayiya.OP_FORWARD and nh == ayiya.NH_IPV6
            assert payload[0] >> 4 == 6
        # the header view agrees
        assert ayiya.ayiya_header(p) == (op, nh, epoch, ident)
        # bytes, bytearray and memoryview all work
        assert ayiya.ayiya_decode(bytearray(p), KEY, t)[0] == op
        assert ayiya.ayiya_decode(memoryview(p), KEY, t)[3] == epoch


def test_reencode_is_byte_identical():
    for d, t, p in _vectors():
        ident = CLIENT if d == "c2p" else POP
        op, nh, payload, epoch = ayiya.ayiya_decode(p, KEY, t)
        assert ayiya.ayiya_encode(ident, op, nh, bytes(payload), epoch, KEY) == p
        buf = bytearray(2048)
        mv = ayiya.ayiya_encode(ident, op, nh, payload, epoch, KEY, buf)
        assert len(mv) == len(p) and bytes(mv) == p
        # the data plane path: payload already in place, then seal
        buf2 = bytearray(2048)
        buf2[44:len(p)] = p[44:]
        assert bytes(ayiya.ayiya_seal(buf2, len(p), ident, op, nh, epoch, KEY)) == p


def test_password_hash_is_sha1_of_password():
    assert binascii.hexlify(ayiya.password_hash(PASSWORD)) == binascii.hexlify(
        ayiya.password_hash(PASSWORD.encode()))
    assert len(KEY) == 20
    _raises(LocalProtocolError, ayiya.password_hash, "")


def test_any_flipped_byte_is_rejected():
    d, t, p = _vectors()[3]  # AICCU forwarding a 104-byte echo request
    assert d == "c2p" and len(p) == 148
    for i in range(len(p)):
        b = bytearray(p)
        b[i] ^= 0x01
        code = _drop_code(bytes(b), t, ident=CLIENT)
        assert code is not None, i
        if i == 0:
            assert code == "unsupported identity"
        elif i == 1:
            assert code == "unsupported hash"
        elif i == 2:
            assert code in ("unsupported opcode", "bad signature")
        elif 8 <= i < 24:
            assert code == "foreign identity"
        else:
            assert code == "bad signature", (i, code)
        # without an identity check the signature still catches it
        if 8 <= i < 24:
            assert _drop_code(bytes(b), t) == "bad signature"


def test_wrong_password_is_bad_signature():
    for d, t, p in _vectors():
        assert _drop_code(p, t, key=ayiya.password_hash("ayiyasecret124")) == "bad signature"


def test_foreign_identity():
    _d, t, p = _vectors()[0]
    assert _drop_code(p, t, ident=POP) == "foreign identity"
    other = addr.ip6_aton("2001:db8:2ff:3::2")
    forged = bytearray(p)
    forged[8:24] = other
    forged = _resign(bytes(forged))
    assert _drop_code(forged, t, ident=CLIENT) == "foreign identity"
    assert _drop_code(forged, t) is None


def test_stale_timestamp_window():
    _d, t, p = _vectors()[1]
    assert _drop_code(p, t + 120) is None
    assert _drop_code(p, t - 120) is None
    assert _drop_code(p, t + 121) == "stale timestamp"  # a replay two minutes later
    assert _drop_code(p, t - 121) == "stale timestamp"
    assert _drop_code(p, t + 10, max_skew=5) == "stale timestamp"
    e = _raises(ayiya.AyiyaError, ayiya.ayiya_decode, p, KEY, t + 600)
    assert e.skew == -600 and "behind" in e.reason
    e = _raises(ayiya.AyiyaError, ayiya.ayiya_decode, p, KEY, t - 600)
    assert e.skew == 600


def test_tampered_packet_with_stale_time_is_bad_signature():
    # the signature is checked before the time: a forgery is never called stale
    _d, t, p = _vectors()[1]
    b = bytearray(p)
    b[-1] ^= 0x80
    assert _drop_code(bytes(b), t + 1000) == "bad signature"


def test_truncated():
    _d, t, p = _vectors()[0]
    for n in range(44):
        assert _drop_code(p[:n], t) == "truncated"
    # a 44-byte header without payload is a valid beat, but cutting a forward short breaks it
    assert _drop_code(p[:60], t) == "bad signature"


def test_unsupported_header_fields():
    _d, t, p = _vectors()[1]
    for i, val, code in ((0, 0x42, "unsupported identity"), (0, 0x31, "unsupported identity"),
                         (1, 0x51, "unsupported hash"), (1, 0x42, "unsupported hash"),
                         (2, 0x00, "unsupported auth"), (2, 0x20, "unsupported auth"),
                         (2, 0x18, "unsupported opcode"), (2, 0x1F, "unsupported opcode")):
        b = bytearray(p)
        b[i] = val
        assert _drop_code(_resign(bytes(b)), t) == code, (i, val)


def test_all_opcodes_round_trip():
    for op in range(8):
        pkt = ayiya.ayiya_encode(CLIENT, op, 59, b"x" * op, 1000000000, KEY)
        o, nh, payload, epoch = ayiya.ayiya_decode(pkt, KEY, 1000000050, 120, CLIENT)
        assert (o, nh, bytes(payload), epoch) == (op, 59, b"x" * op, 1000000000)


def test_encode_argument_checks():
    _raises(LocalProtocolError, ayiya.ayiya_encode, CLIENT, 8, 41, b"", 0, KEY)
    _raises(LocalProtocolError, ayiya.ayiya_encode, CLIENT, 1, 256, b"", 0, KEY)
    _raises(LocalProtocolError, ayiya.ayiya_encode, CLIENT[:15], 1, 41, b"", 0, KEY)
    _raises(LocalProtocolError, ayiya.ayiya_encode, CLIENT, 1, 41, b"", 0, KEY[:19])
    _raises(LocalProtocolError, ayiya.ayiya_encode, CLIENT, 1, 41, b"abc", 0, KEY, bytearray(46))
    _raises(LocalProtocolError, ayiya.ayiya_decode, b"", KEY[:10], 0)
    _raises(LocalProtocolError, ayiya.ayiya_seal, bytearray(50), 51, CLIENT, 1, 41, 0, KEY)


def test_epoch_arithmetic_wraps():
    assert ayiya.skew(5, 0x100000000 + 3) == 2  # after 2106 the 32-bit field wraps
    assert ayiya.skew(0xFFFFFFFF, 0x100000000) == -1
    pkt = ayiya.ayiya_encode(CLIENT, 0, 59, b"", 0x100000005, KEY)
    assert ayiya.ayiya_decode(pkt, KEY, 0x100000000)[3] == 5


# -- session ------------------------------------------------------------------------

def _pair(interval=30):
    client = ayiya.AyiyaSession("2001:db8:2ff:1::2", "2001:db8:2ff:1::1", PASSWORD, interval)
    pop = ayiya.AyiyaSession(POP, CLIENT, PASSWORD, 0)
    return client, pop


def _ipv6_packet(n=60):
    b = bytearray(n)
    b[0] = 0x60
    b[4] = (n - 40) >> 8
    b[5] = (n - 40) & 255
    b[6] = 58
    b[7] = 64
    return bytes(b)


def test_session_beats_at_once_then_when_quiet():
    wall = 1795382240
    c, pop = _pair(30)
    assert pop.get_timer() is None
    assert c.get_timer() == 0.0
    c.handle_timer(100.0, wall)
    out = c.datagrams_to_send()
    assert len(out) == 1
    op, nh, payload, epoch = ayiya.ayiya_decode(out[0], KEY, wall, 120, CLIENT)
    assert (op, nh, len(payload), epoch) == (ayiya.OP_NOOP, ayiya.NH_NONE, 0, wall)
    assert c.get_timer() == 130.0
    c.handle_timer(129.0, wall + 29)
    assert c.datagrams_to_send() == []
    # traffic refreshes the NAT and the PoP's liveness: no beat needed
    c.encapsulate(_ipv6_packet(), 120.0, wall + 20)
    assert c.get_timer() == 150.0
    c.handle_timer(150.0, wall + 50)
    assert len(c.datagrams_to_send()) == 1
    st = c.status(151.0)
    assert st["beats_sent"] == 2 and st["tx_packets"] == 3


def test_beat_identical_to_aiccu_capture():
    # AICCU's beat #1 (aiccu-ayiya.pcap): same identity, time and password, same bytes
    _d, t, p = _vectors()[1]
    c, _pop = _pair(60)
    c.handle_timer(5.0, t)
    assert c.datagrams_to_send() == [p]


def test_session_forward_both_ways():
    wall = 1795382245
    c, pop = _pair()
    inner = _ipv6_packet(104)
    dg = c.encapsulate(inner, 1.0, wall)
    got = pop.receive(dg, 1.0, wall + 1)
    assert bytes(got) == inner
    buf = bytearray(1500)
    buf[44:44 + len(inner)] = inner
    dg2 = pop.seal(buf, 44 + len(inner), 2.0, wall + 2)
    assert bytes(c.receive(dg2, 2.0, wall + 2)) == inner
    st = c.status(3.0)
    assert st["rx_packets"] == 1 and st["rx_bytes"] == len(dg2) and st["drops_total"] == 0
    assert st["last_rx_age"] == 1.0 and st["peer_clock_offset"] == 0


def test_session_accepts_captured_pop_packets():
    c, pop = _pair()
    n = 0
    for d, t, p in _vectors():
        if d == "p2c":
            assert c.receive(p, float(n), t) is not None
            n += 1
        else:
            assert pop.receive(p, float(n), t) is not None or p[2] & 15 == 0
    assert c.status(99.0)["drops_total"] == 0 and c.rx_packets == n


def test_session_accepted_flag_for_beats():
    # the PoP moves the endpoint on any authentic datagram, beats included
    wall = 1795382240
    c, pop = _pair(30)
    c.handle_timer(0.0, wall)
    beat = c.datagrams_to_send()[0]
    assert pop.receive(beat, 0.0, wall) is None and pop.accepted is True
    assert pop.receive(beat[:-1] + b"x", 0.0, wall) is None and pop.accepted is False
    assert pop.receive(beat, 0.0, wall + 500) is None and pop.accepted is False
    assert pop.status(1.0)["rx_packets"] == 1


def test_session_drops_are_counted_never_raised():
    wall = 1795382240
    c, pop = _pair()
    good = pop.encapsulate(_ipv6_packet(), 0.0, wall)
    assert c.receive(good, 0.0, wall) is not None
    tampered = bytearray(good)
    tampered[50] ^= 1
    assert c.receive(bytes(tampered), 1.0, wall) is None
    assert c.receive(good, 2.0, wall + 300) is None  # replayed five minutes later
    assert c.receive(good[:20], 3.0, wall) is None
    assert c.receive(b"", 3.5, wall) is None
    # signed with the right password but for a foreign identity
    stranger = ayiya.AyiyaSession("2001:db8:2ff:9::1", CLIENT, PASSWORD, 0)
    assert c.receive(stranger.encapsulate(_ipv6_packet(), 0, wall), 4.0, wall) is None
    # a forward that is not IPv6, and one with another next header
    assert c.receive(ayiya.ayiya_encode(POP, 1, 41, b"\x45" + b"\x00" * 59, wall, KEY),
                     5.0, wall) is None
    assert c.receive(ayiya.ayiya_encode(POP, 1, 4, b"\x45" + b"\x00" * 59, wall, KEY),
                     6.0, wall) is None
    st = c.status(7.0)
    assert st["drops"] == {"bad signature": 1, "stale timestamp": 1, "truncated": 2,
                           "foreign identity": 1, "bad payload": 1,
                           "unsupported next header": 1}
    assert st["drops_total"] == 7 and st["last_drop"] == "unsupported next header"
    assert st["rx_packets"] == 1 and st["last_drop_age"] == 1.0


def test_session_clock_problem_in_plain_words():
    wall = 1795382240
    c, pop = _pair()
    assert c.clock_problem() is None
    # our clock runs 10 minutes fast: every authentic PoP packet looks stale
    dg = pop.encapsulate(_ipv6_packet(), 0.0, wall)
    assert c.receive(dg, 0.0, wall + 600) is None
    msg = c.clock_problem()
    assert msg and "600 seconds" in msg and "ours is ahead" in msg
    assert c.status(1.0)["clock_problem"] == msg
    c.receive(pop.encapsulate(_ipv6_packet(), 1.0, wall + 1), 1.0, wall + 2)
    assert c.clock_problem() is None


def test_session_echo_request_is_answered():
    wall = 1795382240
    c, pop = _pair()
    pop.send_echo_request(0.0, wall, b"ping-1")
    req = pop.datagrams_to_send()
    assert len(req) == 1
    assert c.receive(req[0], 0.0, wall) is None
    resp = c.datagrams_to_send()
    assert len(resp) == 1
    op, _nh, payload, _epoch = ayiya.ayiya_decode(resp[0], KEY, wall, 120, CLIENT)
    assert op == ayiya.OP_ECHO_RESPONSE and bytes(payload) == b"ping-1"
    assert pop.receive(resp[0], 0.1, wall) is None
    ev = pop.events()
    assert ev[0][0] == "echo-response" and ev[0][1]["length"] == 6
    # echo request + forward: answered and delivered
    inner = _ipv6_packet()
    rf = ayiya.ayiya_encode(POP, ayiya.OP_ECHO_REQUEST_FORWARD, 41, inner, wall, KEY)
    assert bytes(c.receive(rf, 1.0, wall)) == inner
    assert ayiya.ayiya_decode(c.datagrams_to_send()[0], KEY, wall)[0] == ayiya.OP_ECHO_RESPONSE
    assert c.status(2.0)["echo_answered"] == 2


def test_session_motd_event_is_sanitised():
    wall = 1795382240
    c, _pop = _pair()
    motd = ayiya.ayiya_encode(POP, ayiya.OP_MOTD, 59, b"Maintenance\x00\x1b[2J tonight\n", wall, KEY)
    assert c.receive(motd, 0.0, wall) is None
    ev = c.events()
    assert ev == [("motd", {"time": 0.0, "text": "Maintenance??[2J tonight"})]
    assert c.events() == []


def test_session_repr_and_status_hide_the_password():
    c, _pop = _pair()
    text = repr(c) + repr(c.status(0.0))
    assert PASSWORD not in text
    assert binascii.hexlify(KEY).decode() not in text
    assert "2001:db8:2ff:1::2" in text


def test_session_argument_checks():
    _raises(LocalProtocolError, ayiya.AyiyaSession, "nope", POP, PASSWORD)
    _raises(LocalProtocolError, ayiya.AyiyaSession, CLIENT, POP, "")
    _raises(LocalProtocolError, ayiya.AyiyaSession, CLIENT, POP, PASSWORD, -1)
    _raises(LocalProtocolError, ayiya.AyiyaSession, CLIENT, b"\x00" * 4, PASSWORD)


def test_session_queues_are_bounded():
    wall = 1795382240
    c, _pop = _pair()
    req = ayiya.ayiya_encode(POP, ayiya.OP_ECHO_REQUEST, 59, b"x", wall, KEY)
    motd = ayiya.ayiya_encode(POP, ayiya.OP_MOTD, 59, b"hello", wall, KEY)
    for i in range(200):
        c.receive(req, float(i), wall)
        c.receive(motd, float(i), wall)
    assert len(c.datagrams_to_send()) == 64 and len(c.events()) == 64
    assert c.status(300.0)["rx_packets"] == 400  # still accepted and counted
    c.receive(req, 301.0, wall)
    assert len(c.datagrams_to_send()) == 1


def test_motd_text_is_one_printable_capped_line():
    assert ayiya.motd_text(b"Maintenance\x00\x1b[2J\r\n\ttonight\n") == "Maintenance??[2J tonight"
    assert ayiya.motd_text(b"") == ""
    assert ayiya.motd_text(b"\xff\xfe caf\xc3\xa9") == "?? caf??"
    long = ayiya.motd_text(b"x" * 5000)
    assert len(long) == ayiya.MOTD_TEXT_MAX and long.endswith("...") and long.startswith("xxx")
    short = ayiya.motd_text(b"y" * ayiya.MOTD_TEXT_MAX)
    assert short == "y" * ayiya.MOTD_TEXT_MAX


def test_control_message_names_every_opcode():
    assert ayiya.control_message(ayiya.OP_MOTD, b"PoP down\nat 3") == ("motd", "PoP down at 3")
    assert ayiya.control_message(ayiya.OP_NOOP, b"") == ("noop", None)
    assert ayiya.control_message(ayiya.OP_ECHO_RESPONSE, b"abc") == ("echo-response", None)
    assert ayiya.control_message(ayiya.OP_QUERY_REQUEST, b"?") == ("query-request", None)
    assert ayiya.control_message(12, b"") == ("opcode-12", None)
    try:
        ayiya.control_message("5", b"")
    except LocalProtocolError:
        pass
    else:
        assert False, "a text opcode was accepted"


def test_control_message_from_a_verified_datagram():
    wall = 1700000000
    d = ayiya.ayiya_encode(POP, ayiya.OP_MOTD, 59, b"hello\x07 world", wall, KEY)
    op, _nh, payload, _epoch = ayiya.ayiya_decode(d, KEY, wall, expected_identity=POP)
    assert ayiya.control_message(op, payload) == ("motd", "hello? world")
