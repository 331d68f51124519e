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


class _Clock:
    t = 100.0

    def __call__(self):
        return self.t


class _Tunnel:
    """Stands in for a TunnelRunner: the supervisor asks it for state, prefixes and
    whether a new session is under way."""

    def __init__(self):
        self.st = ("up", "tunnel up")
        self.prefixes = [(bytes.fromhex("20010db8123400000000000000000000"), 48)]
        self.since = None

    def state(self, now):
        return self.st

    def reconnecting(self, now):
        from cpe_tunnel.supervisor import RECONNECT_GRACE
        return self.since is not None and now - self.since < RECONNECT_GRACE

    def get_timer(self):
        return None

    def handle_timer(self, now):
        pass


class _Lan:
    def __init__(self):
        self.cfg = {"interface": "br-lan"}
        self.router = []
        self.prefix = []

    def set_default_router(self, now, flag):
        self.router.append(flag)

    def set_prefix(self, now, prefix):
        self.prefix.append(prefix)

    def release(self, now):
        pass

    def get_timer(self):
        return None

    def handle_timer(self, now):
        pass


def _sup():
    from cpe_tunnel.loop import Loop
    from cpe_tunnel.supervisor import Supervisor

    clock = _Clock()
    sup = Supervisor(Loop(clock), {"tunnel": {}, "lans": []}, nl=object())
    sup.tunnel, lan = _Tunnel(), _Lan()
    sup.lans = [lan]
    sup.state_changed(clock.t)
    assert lan.router == [True]
    return sup, lan, clock


def _keepalive_lost(sup, clock):
    """The keepalive is lost and a new session starts at once: prefixes go, state down."""
    tun = sup.tunnel
    tun.since = clock.t
    tun.prefixes = []
    sup.prefixes_changed(clock.t)
    tun.st = ("down", "the tunnel stopped answering; starting a new TSP session")
    sup.state_changed(clock.t)
    return tun


def test_lans_keep_their_state_while_the_tunnel_reconnects_at_once():
    sup, lan, clock = _sup()
    tun = _keepalive_lost(sup, clock)
    assert lan.router == [True] and lan.prefix == []  # nothing withdrawn yet
    # the new session is up 0.3 s later with the same prefix: the LAN never noticed
    clock.t += 0.3
    tun.since = None
    tun.prefixes = [(bytes.fromhex("20010db8123400000000000000000000"), 48)]
    tun.st = ("up", "tunnel up")
    sup.prefixes_changed(clock.t)
    sup.state_changed(clock.t)
    assert all(lan.router) and all(p is not None for p in lan.prefix)
    assert sup.get_timer() is None


def test_lans_withdraw_when_the_reconnect_takes_too_long():
    from cpe_tunnel.supervisor import RECONNECT_GRACE

    sup, lan, clock = _sup()
    _keepalive_lost(sup, clock)
    assert lan.router == [True]
    deadline = sup.get_timer()
    assert deadline == clock.t + RECONNECT_GRACE
    clock.t = deadline
    sup.handle_timer(clock.t)
    # RFC 7084 G-5 / L-13: no default router, the prefix goes
    assert lan.router[-1] is False and lan.prefix[-1] is None
    assert sup.get_timer() is None


def test_a_plain_loss_withdraws_at_once():
    sup, lan, clock = _sup()
    tun = sup.tunnel
    tun.st = ("down", "the broker's tunnel address does not answer")
    sup.state_changed(clock.t)
    assert lan.router == [True, False]
