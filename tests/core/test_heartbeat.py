# Heartbeat (UDP 3740) tests. Runs under pytest and MicroPython (tests/mprun.py).
# CAPTURED is the probe's heartbeat to sixxsd in ../shared/captures/sixxsd_probe.pcap
# (tunnel T3740, password hbsecret456); tests/unit/test_sixxs_captures.py checks it
# against the pcap.
import binascii
import hashlib

from cpe_tunnel.core import heartbeat
from cpe_tunnel.core.errors import LocalProtocolError, RemoteProtocolError
from corecheck import raises as _raises

PASSWORD = "hbsecret456"
CAPTURED_TIME = 1795381916
CAPTURED = binascii.unhexlify(
    "4845415254424541542054554e4e454c20323030313a6462383a3266663a323a3a322073656e646572203137"
    "3935333831393136203436633063613864313066316265613938333537383266363530383437643536")



def _code(msg, now=CAPTURED_TIME, password=PASSWORD, source=None, max_skew=120):
    try:
        heartbeat.heartbeat_verify(msg, password, now, max_skew, source)
    except heartbeat.HeartbeatError as e:
        assert isinstance(e, RemoteProtocolError)
        assert e.code in heartbeat.DROP_REASONS and e.reason.startswith(e.code)
        assert password not in e.reason
        return e.code
    return None


def test_captured_heartbeat_verifies():
    assert CAPTURED.startswith(b"HEARTBEAT TUNNEL 2001:db8:2ff:2::2 sender 1795381916 ")
    r = heartbeat.heartbeat_verify(CAPTURED, PASSWORD, CAPTURED_TIME, 120, "192.0.2.2")
    assert r == {"ipv6": "2001:db8:2ff:2::2", "ipv4": "192.0.2.2", "sender": True,
                 "epoch": CAPTURED_TIME, "skew": 0}
    assert heartbeat.heartbeat_parse(CAPTURED) == (
        "2001:db8:2ff:2::2", "sender", CAPTURED_TIME, "46c0ca8d10f1bea9835782f650847d56")


def test_message_is_byte_identical_to_capture():
    assert heartbeat.heartbeat_message("2001:db8:2ff:2::2", "sender", CAPTURED_TIME,
                                       PASSWORD) == CAPTURED
    # other spellings of the same address give the same (RFC 5952) message
    assert heartbeat.heartbeat_message("2001:0DB8:02ff:2:0:0:0:2", "sender", CAPTURED_TIME,
                                       PASSWORD.encode()) == CAPTURED
    assert heartbeat.heartbeat_message(binascii.unhexlify("20010db802ff00020000000000000002"),
                                       "sender", CAPTURED_TIME, PASSWORD) == CAPTURED


def test_signature_rule():
    # md5 over the message with the password in the place of the digest
    m = heartbeat.heartbeat_message("2001:db8:2ff:2::2", "198.51.100.7", 1700000000, "pw")
    head = b"HEARTBEAT TUNNEL 2001:db8:2ff:2::2 198.51.100.7 1700000000 "
    assert m == head + binascii.hexlify(hashlib.md5(head + b"pw").digest())


def test_tampering_and_wrong_password():
    assert _code(CAPTURED, password="hbsecret457") == "bad signature"
    for old, new in ((b"sender", b"192.0.2.9"), (b"1795381916", b"1795381917"),
                     (b"2ff:2::2", b"2ff:2::3"), (b"46c0", b"46c1"), (b"46c0", b"46C0")):
        m = CAPTURED.replace(old, new)
        assert _code(m, source="192.0.2.9") == "bad signature", new


def test_stale_timestamp():
    assert _code(CAPTURED, now=CAPTURED_TIME + 120) is None
    assert _code(CAPTURED, now=CAPTURED_TIME - 120) is None
    assert _code(CAPTURED, now=CAPTURED_TIME + 121) == "stale timestamp"
    assert _code(CAPTURED, now=CAPTURED_TIME - 600) == "stale timestamp"
    e = _raises(heartbeat.HeartbeatError, heartbeat.heartbeat_verify, CAPTURED, PASSWORD,
                CAPTURED_TIME - 600)
    assert e.skew == 600 and "ahead of" in e.reason


def test_stated_address_must_be_the_source():
    m = heartbeat.heartbeat_message("2001:db8:2ff:2::2", "198.51.100.7", CAPTURED_TIME, PASSWORD)
    assert _code(m, source="198.51.100.7") is None
    assert _code(m, source="203.0.113.9") == "address mismatch"
    r = heartbeat.heartbeat_verify(m, PASSWORD, CAPTURED_TIME, 120, None)
    assert r["ipv4"] == "198.51.100.7" and r["sender"] is False
    # 'sender' takes the source; without a source the endpoint is unknown
    assert heartbeat.heartbeat_verify(CAPTURED, PASSWORD, CAPTURED_TIME)["ipv4"] is None
    _raises(LocalProtocolError, heartbeat.heartbeat_verify, CAPTURED, PASSWORD,
            CAPTURED_TIME, 120, "not-an-ip")


def test_newline_ends_the_message_like_sixxsd():
    assert _code(CAPTURED + b"\n") is None
    assert _code(CAPTURED + b"\r\n") is None
    assert _code(CAPTURED + b"\x00garbage") is None


def test_malformed():
    bad = [
        b"", b"HEARTBEAT", b"HEARTBEAT TUNNEL ", CAPTURED[:-1], CAPTURED + b"0",
        CAPTURED + b" ", CAPTURED.replace(b" sender", b"  sender"),
        CAPTURED.replace(b"HEARTBEAT", b"heartbeat"),
        CAPTURED.replace(b"2001:db8:2ff:2::2", b"2001:db8:2ff:2::2::1"),
        CAPTURED.replace(b"sender", b"senderx"),
        CAPTURED.replace(b"sender", b"192.0.2.256"),
        CAPTURED.replace(b"1795381916", b"01795381916"),
        CAPTURED.replace(b"1795381916", b"-1795381916"),
        CAPTURED.replace(b"1795381916", b"1795381916123"),
        CAPTURED.replace(b"46c0", b"46g0"),
        CAPTURED.replace(b"sender", b"send\xc3\xa9r"),
        CAPTURED.replace(b"sender", b"sen\tder"),
        b"HEARTBEAT TUNNEL " + b"a" * 600,
    ]
    for m in bad:
        assert _code(m) == "malformed", m
        _raises(heartbeat.HeartbeatError, heartbeat.heartbeat_parse, m)
    _raises(heartbeat.HeartbeatError, heartbeat.heartbeat_parse, "HEARTBEAT TUNNEL text")


def test_message_argument_checks():
    _raises(LocalProtocolError, heartbeat.heartbeat_message, "nope", "sender", 1, "pw")
    _raises(LocalProtocolError, heartbeat.heartbeat_message, "2001:db8::2", "nat", 1, "pw")
    _raises(LocalProtocolError, heartbeat.heartbeat_message, "2001:db8::2", "sender", -1, "pw")
    _raises(LocalProtocolError, heartbeat.heartbeat_message, "2001:db8::2", "sender", 1, "")


# -- session ------------------------------------------------------------------------

def _session(**kw):
    return heartbeat.HeartbeatSession(60, "2001:db8:2ff:2::2", PASSWORD, **kw)


def _sent(s):
    return [heartbeat.heartbeat_parse(m) for m in s.datagrams_to_send()]


def test_session_first_at_once_then_every_interval():
    s = _session()
    assert s.get_timer() == 0.0
    s.handle_timer(10.0, CAPTURED_TIME)
    out = s.datagrams_to_send()
    assert out == [CAPTURED]  # no WAN address known yet: 'sender'
    assert s.get_timer() == 70.0
    s.handle_timer(69.0, CAPTURED_TIME + 59)
    assert s.datagrams_to_send() == []
    s.handle_timer(70.0, CAPTURED_TIME + 60)
    m = _sent(s)
    assert len(m) == 1 and m[0][2] == CAPTURED_TIME + 60
    assert s.status(71.0)["sent"] == 2 and s.status(71.0)["next_in"] == 59.0


def test_session_wan_change_sends_at_once():
    s = _session(sender="never", ipv4="192.0.2.2")
    s.handle_timer(0.0, 1000)
    assert _sent(s)[0][1] == "192.0.2.2"
    assert s.get_timer() == 60.0
    s.wan_changed(5.0, "192.0.2.2")  # same address: nothing to do
    assert s.get_timer() == 60.0
    s.wan_changed(5.0, "198.51.100.20")
    assert s.get_timer() == 5.0
    s.handle_timer(5.0, 1005)
    m = _sent(s)
    assert len(m) == 1 and m[0][1] == "198.51.100.20"
    assert s.get_timer() == 65.0


def test_session_flapping_wan_is_coalesced():
    s = _session(sender="never", ipv4="192.0.2.2")
    s.handle_timer(0.0, 1000)
    s.datagrams_to_send()
    s.wan_changed(0.05, "198.51.100.20")
    assert abs(s.get_timer() - heartbeat.MIN_GAP) < 1e-9  # not two within min_gap
    s.wan_changed(0.1, "198.51.100.21")
    s.wan_changed(0.15, "198.51.100.22")
    s.handle_timer(0.1, 1000)
    assert s.datagrams_to_send() == []
    s.handle_timer(s.get_timer(), 1000)
    m = _sent(s)
    assert len(m) == 1 and m[0][1] == "198.51.100.22"
    # a bounded flap: at most one heartbeat per min_gap
    t = 1.0
    n = 0
    for i in range(100):
        s.wan_changed(t, "203.0.113.%d" % (i % 2 + 1))
        s.handle_timer(t, 1001)
        n += len(s.datagrams_to_send())
        t += 0.01
    assert 4 <= n <= 6


def test_session_pauses_without_wan_address():
    s = _session(ipv4="192.0.2.2")
    s.handle_timer(0.0, 1000)
    s.datagrams_to_send()
    s.wan_changed(10.0, None)
    assert s.get_timer() is None and s.status(10.0)["paused"] is True
    s.handle_timer(100.0, 1100)
    assert s.datagrams_to_send() == []
    s.wan_changed(200.0, "192.0.2.2")  # back, even with the old address: send now
    assert s.get_timer() <= 200.0
    s.handle_timer(200.0, 1200)
    assert len(s.datagrams_to_send()) == 1


def test_session_sender_modes():
    s = _session(ipv4="192.0.2.2")
    assert s.stated_ipv4() == "192.0.2.2"  # auto, public address
    s = _session(ipv4="192.0.2.2", private_ranges=("192.0.2.0/24",))
    assert s.stated_ipv4() == "sender"  # auto, behind a NAT
    s = _session(ipv4="192.0.2.2", sender="always")
    assert s.stated_ipv4() == "sender"
    s = _session(sender="never")
    assert s.stated_ipv4() is None and s.get_timer() is None
    s.handle_timer(0.0, 1000)
    assert s.datagrams_to_send() == []
    s.wan_changed(1.0, "198.51.100.3")
    s.handle_timer(1.0, 1001)
    assert _sent(s)[0][1] == "198.51.100.3"


def test_session_messages_verify_at_the_pop():
    s = _session(ipv4="198.51.100.3", sender="never")
    s.handle_timer(0.0, 1795381916)
    m = s.datagrams_to_send()[0]
    r = heartbeat.heartbeat_verify(m, PASSWORD, 1795381920, 120, "198.51.100.3")
    assert r["ipv4"] == "198.51.100.3" and r["ipv6"] == "2001:db8:2ff:2::2"


def test_session_hides_password_and_checks_arguments():
    s = _session()
    assert PASSWORD not in repr(s) + repr(s.status(0.0))
    _raises(LocalProtocolError, heartbeat.HeartbeatSession, 0, "2001:db8::2", PASSWORD)
    _raises(LocalProtocolError, heartbeat.HeartbeatSession, 60, "2001:db8::2", PASSWORD,
            sender="maybe")
    _raises(LocalProtocolError, heartbeat.HeartbeatSession, 60, "2001:db8::2", "")
    _raises(LocalProtocolError, heartbeat.HeartbeatSession, 60, "2001:db8::2", PASSWORD,
            private_ranges=("192.0.2.1/24",))
    _raises(LocalProtocolError, s.wan_changed, 0.0, "sender")
