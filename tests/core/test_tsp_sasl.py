import binascii
import hashlib

from cpe_tunnel.core import sasl
from cpe_tunnel.core.errors import ConfigError, RemoteProtocolError

# RFC 2831 section 4 example (IMAP): an independent vector for the DIGEST-MD5 math and
# for the field order of the response (the same order gogoCLIENT uses for TSP).
RFC_CHALLENGE = (b'realm="elwood.innosoft.com",nonce="OA6MG9tEQGm2hh",qop="auth",'
                 b'algorithm=md5-sess,charset=utf-8')
RFC_RESPONSE = (b'charset=utf-8,username="chris",realm="elwood.innosoft.com",'
                b'nonce="OA6MG9tEQGm2hh",nc=00000001,cnonce="OA6MHXh6VqTrRk",'
                b'digest-uri="imap/elwood.innosoft.com",'
                b'response=d388dad90d4bbd760a152321f2143af7,qop=auth')
RFC_RSPAUTH = b"rspauth=ea40f60335c427b5527b84dbabcdfffd"


def raises(fn, exc, words=None):
    try:
        fn()
    except exc as e:
        if words:
            assert words in str(e), str(e)
        return e
    raise AssertionError("no %s" % exc.__name__)


def test_rfc2831_vector():
    d = sasl.DigestMD5("chris", "secret", "elwood.innosoft.com", service="imap")
    assert d.response(sasl.parse_directives(RFC_CHALLENGE), "OA6MHXh6VqTrRk") == RFC_RESPONSE
    assert d.check_rspauth(RFC_RSPAUTH)
    assert d.check_rspauth(b"rspauth=EA40F60335C427B5527B84DBABCDFFFD")
    raises(lambda: d.check_rspauth(b"rspauth=ea40f60335c427b5527b84dbabcdfffe"),
           RemoteProtocolError, "rspauth")
    raises(lambda: d.check_rspauth(b"other=1"), RemoteProtocolError, "no rspauth")
    assert "secret" not in repr(d)


def md5hex(b):
    return binascii.hexlify(hashlib.md5(b).digest()).decode()


def test_tsp_profile_matches_hand_computation():
    # What gogoCLIENT 1.2 computes for alice/wonderland at a broker named 192.0.2.1
    # (digest-uri "tsp/<server as configured>", charset echoed, qop=auth).
    nonce, cnonce = "dGVzdG5vbmNl", "1795382027"
    ch = ('realm="cdpatsps",nonce="%s",qop="auth",algorithm=md5-sess,charset=utf-8' % nonce)
    d = sasl.DigestMD5("alice", "wonderland", "192.0.2.1")
    out = d.response(ch.encode(), cnonce)
    a1 = hashlib.md5(hashlib.md5(b"alice:cdpatsps:wonderland").digest()
                     + (":%s:%s" % (nonce, cnonce)).encode()).digest()
    ha1 = binascii.hexlify(a1).decode()
    resp = md5hex(("%s:%s:00000001:%s:auth:%s" % (ha1, nonce, cnonce,
                                                  md5hex(b"AUTHENTICATE:tsp/192.0.2.1"))).encode())
    rsp = md5hex(("%s:%s:00000001:%s:auth:%s" % (ha1, nonce, cnonce,
                                                 md5hex(b":tsp/192.0.2.1"))).encode())
    assert out == ('charset=utf-8,username="alice",realm="cdpatsps",nonce="%s",nc=00000001,'
                   'cnonce="%s",digest-uri="tsp/192.0.2.1",response=%s,qop=auth'
                   % (nonce, cnonce, resp)).encode()
    assert d.check_rspauth(("rspauth=" + rsp).encode())
    assert b"wonderland" not in out


def test_challenge_variants():
    d = sasl.DigestMD5('a"b\\c', "pw", "broker.example")
    # no charset -> none echoed; no realm -> empty realm; qop list; quoted escapes
    out = d.response(b'nonce="n\\"1", qop="auth-int, auth"', "c1")
    assert out.startswith(b'username="a\\"b\\\\c",realm="",nonce="n\\"1",nc=00000001,cnonce="c1"')
    assert out.endswith(b",qop=auth")
    # several realms: the first is used
    out = d.response(b'realm="r1",realm="r2",nonce=abc', "c1")
    assert b'realm="r1"' in out
    raises(lambda: d.response(b'realm="r"', "c"), RemoteProtocolError, "no nonce")
    raises(lambda: d.response(b'nonce=x,qop="auth-conf"', "c"), RemoteProtocolError, "qop=auth")
    raises(lambda: d.response(b'nonce=x,algorithm=md5', "c"), RemoteProtocolError, "md5-sess")
    raises(lambda: d.response(b'nonce=x,charset=latin1', "c"), RemoteProtocolError, "utf-8")
    raises(lambda: d.response(b'nonce=x', 'bad"cnonce'), ConfigError)
    raises(lambda: sasl.DigestMD5("a", "b", "").response(b"nonce=x", "c"), ConfigError)


def test_parse_directives():
    p = sasl.parse_directives(b' ,realm = "a,b" , nonce=xyz,,qop="auth",X-Other="1"\r\n')
    assert p == {"realm": ["a,b"], "nonce": "xyz", "qop": "auth", "x-other": "1"}
    assert sasl.parse_directives(b"") == {}
    for bad, words in ((b"nonce", "no value"), (b'nonce="x', "unterminated"),
                       (b"nonce=a,nonce=b", "twice"), (b"=x", "directive name"),
                       (b'nonce=a"b', "stray quote"), (b"nonce=a b", "expected ','"),
                       (b"nonce=\xff", "UTF-8"), (b"a=" + b"x" * 3000, "longer than")):
        raises(lambda bad=bad: sasl.parse_directives(bad), RemoteProtocolError, words)


def test_base64_strict():
    assert sasl.b64encode(b"abc") == b"YWJj"
    assert sasl.b64decode(b" YWJj\r\n") == b"abc"
    assert sasl.b64decode("YWI=") == b"ab"
    assert sasl.b64decode(sasl.b64encode(RFC_CHALLENGE)) == RFC_CHALLENGE
    for bad in (b"", b"YWJ", b"YW=j", b"Y!Jj", b"YWJj=", b"====", b"YQ==YQ=="):
        raises(lambda bad=bad: sasl.b64decode(bad), RemoteProtocolError, "not base64")


def test_plain_message():
    assert sasl.plain_message("alice", "wonderland") == b"\x00alice\x00wonderland"
    assert sasl.plain_message("u", "p\u00e9", "z") == b"z\x00u\x00p\xc3\xa9"
    e = raises(lambda: sasl.plain_message("alice", "won\x00derland"), ConfigError, "NUL")
    assert "won" not in str(e)
