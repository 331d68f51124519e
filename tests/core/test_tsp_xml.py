from cpe_tunnel.core import tsp_xml
from cpe_tunnel.core.errors import LocalProtocolError, RemoteProtocolError

OFFER = (b'<tunnel action="info" type="v6udpv4" lifetime="604800">\r\n\t<server>\r\n'
         b'\t\t<address type="ipv4">192.0.2.1</address>\r\n'
         b'\t\t<address type="ipv6">2001:db8:100::1</address>\r\n\t</server>\r\n\t<client>\r\n'
         b'\t\t<address type="ipv4">192.0.2.2</address>\r\n'
         b'\t\t<address type="ipv6">2001:db8:100:0:ffff:c000:202:d51e</address>\r\n'
         b'\t\t<keepalive interval="10">\r\n\t\t\t<address type="ipv6">2001:db8:100::1</address>\r\n'
         b'\t\t</keepalive>\r\n\t</client>\r\n</tunnel>\r\n')


def rejects(doc, words=None):
    try:
        tsp_xml.parse(doc)
    except RemoteProtocolError as e:
        assert e.reason.startswith("malformed XML: "), e.reason
        if words:
            assert words in e.reason, e.reason
        return
    raise AssertionError("accepted: %r" % (doc,))


def test_captured_offer_tree():
    root = tsp_xml.parse(OFFER)
    assert root.tag == "tunnel"
    assert root.attrs == [("action", "info"), ("type", "v6udpv4"), ("lifetime", "604800")]
    assert root.get("lifetime") == "604800" and root.get("mtu") is None
    assert [c.tag for c in root.children] == ["server", "client"]
    srv = root.find("server")
    assert [(a.get("type"), a.text) for a in srv.findall("address")] == [
        ("ipv4", "192.0.2.1"), ("ipv6", "2001:db8:100::1")]
    ka = root.find("client").find("keepalive")
    assert ka.get("interval") == "10"
    assert ka.find("address").text == "2001:db8:100::1"
    assert [e.tag for e in root.iter()] == ["tunnel", "server", "address", "address", "client",
                                            "address", "address", "keepalive", "address"]
    assert len(root.iter("address")) == 5
    assert root.find("nothing") is None


def test_declaration_comments_entities_cdata_quotes():
    doc = ("\ufeff<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!-- broker -->\n"
           "<a x='1 &amp; 2' y=\"&lt;&#65;&#x42;&quot;&apos;\">t&gt;<!-- c --><b/>"
           "<![CDATA[<raw>&amp;]]>&#233;<?pi ignored?></a>\n<!-- after -->\n")
    root = tsp_xml.parse(doc.encode())
    assert root.get("x") == "1 & 2"
    assert root.get("y") == "<AB\"'"
    assert root.text == "t><raw>&amp;\u00e9"
    assert root.find("b").children == [] and root.find("b").text == ""
    # str input works too; attribute whitespace normalised; spaces before '>' and '/>'
    r2 = tsp_xml.parse('<a  k = "x\ty" ><b  /></a >')
    assert r2.get("k") == "x y" and r2.find("b") is not None


def test_depth_and_size_limits():
    ok = "<a>" * 16 + "</a>" * 16
    assert tsp_xml.parse(ok).tag == "a"
    rejects("<a>" * 17 + "</a>" * 17, "deeper than 16")
    rejects("<a>" * 16 + "<b/>" + "</a>" * 16, "deeper than 16")
    big = b"<a>" + b"x" * (tsp_xml.MAX_SIZE - 7) + b"</a>"
    assert len(big) == tsp_xml.MAX_SIZE
    assert len(tsp_xml.parse(big).text) == tsp_xml.MAX_SIZE - 7
    rejects(b"<a>" + b"x" * (tsp_xml.MAX_SIZE - 6) + b"</a>", "larger than")


BAD = [
    (b"", "no element"),
    (b"   ", "no element"),
    (b"text", "outside the root"),
    (b"<a>", "not closed"),
    (b"<a></b>", "does not match"),
    (b"</a>", "without a start tag"),
    (b"<a/><b/>", "more than one root"),
    (b"<a/>x", "outside the root"),
    (b"<a x=1/>", "must be quoted"),
    (b"<a x/>", "has no value"),
    (b'<a x="1" x="2"/>', "repeated"),
    (b'<a x="1"y="2"/>', "separated by whitespace"),
    (b'<a x="<"/>', "'<' inside"),
    (b'<a x="1/>', "unterminated"),
    (b"<a>&foo;</a>", "unknown entity"),
    (b"<a>&amp</a>", "does not start an entity"),
    (b"<a>&#0;</a>", "not an allowed character"),
    (b"<a>&#xD800;</a>", "not an allowed character"),
    (b"<a>&#x110000;</a>", "not an allowed character"),
    (b"<a>&#12a;</a>", "bad character reference"),
    (b"<a>&#;</a>", "bad character reference"),
    (b"<!DOCTYPE a><a/>", "DOCTYPE"),
    (b'<!DOCTYPE a [<!ENTITY e "x">]><a>&e;</a>', "DOCTYPE"),
    (b"<a><!-- x</a>", "unterminated comment"),
    (b"<a><![CDATA[x</a>", "unterminated CDATA"),
    (b"<![CDATA[x]]><a/>", "CDATA outside"),
    (b"<a/><?xml version='1.0'?>", "not at the start"),
    (b"<?xml version='1.0'", "unterminated processing"),
    (b"<a>\x00</a>", "control character"),
    (b"<a>\xff</a>", "UTF-8"),
    (b"<1a/>", "tag name"),
    (b"< a/>", "tag name"),
    (b"<a / >", "stray '/'"),
    (b"<a", "unterminated start tag"),
    (b"<a></a", "unterminated end tag"),
    (b"<a>\xed\xa0\x80</a>", None),  # UTF-8 encoded surrogate
]


def test_rejects_malformed():
    for doc, words in BAD:
        rejects(doc, words)


def test_escape_round_trip():
    s = "a<b>&\"'c"
    e = tsp_xml.escape(s)
    assert e == "a&lt;b&gt;&amp;&quot;&apos;c"
    assert tsp_xml.parse('<x v="%s">%s</x>' % (e, e)).get("v") == s
    try:
        tsp_xml.escape(b"x")
        raise AssertionError("bytes accepted")
    except LocalProtocolError:
        pass
    try:
        tsp_xml.parse(123)
        raise AssertionError("int accepted")
    except LocalProtocolError:
        pass
