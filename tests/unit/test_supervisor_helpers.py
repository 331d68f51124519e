from cpe_tunnel.core import addr
from cpe_tunnel.sessions import url_without_credentials as _url_without_credentials
from cpe_tunnel.supervisor import assign_lan_prefixes, peer_of


def P(text):
    return addr.parse_prefix6(text)


def test_peer_of_broker_convention():
    a, plen = addr.parse_addr6_plen("2001:db8:1::2/64")
    assert addr.ip6_ntoa(peer_of(a, plen)) == "2001:db8:1::1"
    a, plen = addr.parse_addr6_plen("2001:db8:1::1/64")
    assert addr.ip6_ntoa(peer_of(a, plen)) == "2001:db8:1::2"


def test_assign_lan_prefixes_hints_then_lowest_free():
    lans = [{"interface": "br-lan", "ip6hint": None}, {"interface": "br-guest", "ip6hint": 0},
            {"interface": "br-iot", "ip6hint": None}]
    out = assign_lan_prefixes(lans, [P("2001:db8:1234::/48")])
    assert [addr.ip6_ntoa(x) for x in out] == ["2001:db8:1234:1::", "2001:db8:1234::", "2001:db8:1234:2::"]


def test_assign_lan_prefixes_no_room_and_none():
    lans = [{"interface": "a", "ip6hint": None}, {"interface": "b", "ip6hint": None}]
    out = assign_lan_prefixes(lans, [P("2001:db8:1:2::/64")])
    assert addr.ip6_ntoa(out[0]) == "2001:db8:1:2::" and out[1] is None
    assert assign_lan_prefixes(lans, []) == [None, None]


def test_url_credentials_stripped():
    assert _url_without_credentials("https://u:p@h.example/nic/update") == "https://h.example/nic/update"
    assert _url_without_credentials("https://h.example/x") == "https://h.example/x"
