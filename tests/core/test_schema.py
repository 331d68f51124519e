# Schema / validate() tests; run by pytest and by tests/mprun.py under MicroPython.
from cpe_tunnel.core import schema, uci

GOOD = """
config globals 'main'
	option enabled '1'
	option log_level 'debug'

config tunnel 'he'
	option mode 'http-update'
	option peeraddr '203.0.113.1'
	option ip6addr '2001:DB8:1:0::2/64'
	option ip6gw '2001:db8:1::1'
	list ip6prefix '2001:db8:2::/64'
	list ip6prefix '2001:db8:100::/48'
	option username 'alice'
	option updatekey 'k3y-SECRET-1'
	option tunnelid '123456'
	option mtu '1480'
	option tls_verify 'no'
	list private_range '198.51.100.0/24'

config lan
	option interface 'br-lan'
	list dns '2001:db8::53'
	list dns '2001:db8::54'

config lan 'guest'
	option interface 'br-guest'
	option ip6hint 'a0'
	option ra_interval '200'
	option ra_lifetime '0'
"""


def check(text):
    return schema.validate(uci.parse(text))


def problems_of(text):
    return check(text)[1]


def good_with(old, new):
    assert old in GOOD, old
    return GOOD.replace(old, new)


def one_problem(text):
    p = problems_of(text)
    assert len(p) == 1, p
    return p[0]


def test_good_config_typed_values():
    cfg, problems = check(GOOD)
    assert problems == []
    assert cfg["globals"] == {"enabled": True, "log_level": "debug",
                              "control_socket": "/var/run/cpe_tunnel.sock",
                              "state_dir": "/var/run/cpe_tunnel"}
    t = cfg["tunnel"]
    assert t["name"] == "he" and t["mode"] == "http-update" and t["enabled"] is True
    assert t["peeraddr"] == "203.0.113.1"
    assert t["ip6addr"] == ("2001:db8:1::2", 64)  # canonical text
    assert t["ip6gw"] == "2001:db8:1::1"
    assert t["ip6prefix"] == [("2001:db8:2::", 64), ("2001:db8:100::", 48)]
    assert t["mtu"] == 1480 and t["ttl"] == 64 and t["tos"] == 0
    assert t["tls_verify"] is False and t["defaultroute"] is True
    assert t["update_url"] == "https://ipv4.tunnelbroker.net/nic/update"
    assert t["updatekey"] == "k3y-SECRET-1" and t["password"] is None
    assert t["wan_device"] is None and t["ipaddr"] is None and t["ca_file"] is None
    assert t["private_range"] == [("198.51.100.0", 24)]
    assert t["ifname"] == "cpe6in4" and t["dataplane"] == "auto" and t["send_myip"] == "auto"
    assert t["update_retry_min"] == 5 and t["update_retry_max"] == 900
    assert t["keepalive_interval"] == 30
    # every tunnel option is there
    for o in schema.SECTIONS["tunnel"].options:
        assert o.name in t, o.name
    lans = cfg["lans"]
    assert [x["name"] for x in lans] == ["cfg038b40", "guest"]
    assert lans[0]["interface"] == "br-lan" and lans[0]["dns"] == ["2001:db8::53", "2001:db8::54"]
    assert lans[0]["ip6hint"] is None and lans[0]["ip6assign"] == 64 and lans[0]["ra"] is True
    assert lans[1]["ip6hint"] == 0xA0 and lans[1]["ra_lifetime"] == 0 and lans[1]["dns"] == []
    assert lans[0]["ra_mtu"] == 0 and lans[0]["ra_preferred"] == 3600 and lans[0]["ra_valid"] == 7200


def test_minimal_static_config_and_defaults():
    cfg, problems = check("config tunnel t\n option mode static\n option peeraddr 203.0.113.9\n"
                          " option ip6addr 2001:db8:5::2/64\n")
    assert problems == []
    assert cfg["globals"]["enabled"] is True and cfg["globals"]["log_level"] == "info"
    assert cfg["lans"] == []
    assert cfg["tunnel"]["username"] is None
    assert schema.defaults("lan")["ra_interval"] == 600
    assert schema.defaults("tunnel")["ip6prefix"] == []


def test_bad_values_each_kind():
    cases = [
        ("option mtu '1480'", "option mtu '9000'",
         "tunnel 'he': option 'mtu' = '9000': expected an integer from 1280 to 1480"),
        ("option mtu '1480'", "option mtu '1e3'",
         "tunnel 'he': option 'mtu' = '1e3': expected an integer from 1280 to 1480"),
        ("option mode 'http-update'", "option mode 'http-update'\n\toption ttl '0'",
         "tunnel 'he': option 'ttl' = '0': expected an integer from 1 to 255"),
        ("option tls_verify 'no'", "option tls_verify 'maybe'",
         "tunnel 'he': option 'tls_verify' = 'maybe': expected a boolean (0 or 1)"),
        ("option log_level 'debug'", "option log_level 'loud'",
         "globals 'main': option 'log_level' = 'loud': expected one of: debug, info, notice, warning, error"),
        ("option peeraddr '203.0.113.1'", "option peeraddr '203.0.113.256'",
         "tunnel 'he': option 'peeraddr' = '203.0.113.256': expected an IPv4 address like 192.0.2.1"),
        ("option ip6gw '2001:db8:1::1'", "option ip6gw '2001:db8:1::g'",
         "tunnel 'he': option 'ip6gw' = '2001:db8:1::g': expected an IPv6 address like 2001:db8::1"),
        ("option ip6addr '2001:DB8:1:0::2/64'", "option ip6addr '2001:db8:1::2'",
         "tunnel 'he': option 'ip6addr' = '2001:db8:1::2': expected an IPv6 address with prefix length "
         "like 2001:db8:1::2/64 (the prefix length is missing)"),
        ("list ip6prefix '2001:db8:2::/64'", "list ip6prefix '2001:db8:2::1/64'",
         "tunnel 'he': option 'ip6prefix' = '2001:db8:2::1/64': expected an IPv6 prefix like "
         "2001:db8:1234::/48 (bits set after the first 64; did you mean 2001:db8:2::/64?)"),
        ("list private_range '198.51.100.0/24'", "list private_range '198.51.100.7/24'",
         "tunnel 'he': option 'private_range' = '198.51.100.7/24': expected an IPv4 prefix like "
         "198.51.100.0/24 (bits set after the first 24; did you mean 198.51.100.0/24?)"),
        ("option interface 'br-guest'", "option interface 'br/guest'",
         "lan 'guest': option 'interface' = 'br/guest': expected an interface name (1 to 15 characters; "
         "no spaces, '/' or ':')"),
        ("option interface 'br-guest'", "option interface 'abcdefghijklmnop'",
         "lan 'guest': option 'interface' = 'abcdefghijklmnop': expected an interface name"),
        ("option enabled '1'", "option enabled '1'\n\toption state_dir 'relative/dir'",
         "globals 'main': option 'state_dir' = 'relative/dir': expected an absolute path"),
        ("option mtu '1480'", "option update_url 'ftp://x/y'",
         "tunnel 'he': option 'update_url' = 'ftp://x/y': expected an http:// or https:// URL"),
        ("option mtu '1480'", "option update_url 'https://bad_host/x'",
         "tunnel 'he': option 'update_url' = 'https://bad_host/x': expected an http:// or https:// URL "
         "like https://broker.example/nic/update (bad host name)"),
        ("option mtu '1480'", "option update_url 'https://[2001:db8::1]:99999/'",
         "tunnel 'he': option 'update_url' = 'https://[2001:db8::1]:99999/': expected an http:// or "
         "https:// URL like https://broker.example/nic/update (bad port)"),
        ("option ip6hint 'a0'", "option ip6hint '10000'",
         "lan 'guest': option 'ip6hint' = '10000': expected a hexadecimal number from 0 to ffff"),
        ("option ip6hint 'a0'", "option ip6hint 'xyz'",
         "lan 'guest': option 'ip6hint' = 'xyz': expected a hexadecimal number from 0 to ffff"),
        ("option tunnelid '123456'", "option tunnelid 'a\tb'",
         "tunnel 'he': option 'tunnelid' = 'a\\x09b': expected text of 1 to 256 characters without "
         "control characters"),
        ("option interface 'br-lan'", "option interface 'br-lan'\n\toption ip6assign '56'",
         "@lan[0]: option 'ip6assign' = '56': expected 64 (only a /64 supports SLAAC)"),
        ("option interface 'br-lan'", "option interface 'br-lan'\n\toption ra_mtu '1000'",
         "@lan[0]: option 'ra_mtu' = '1000': expected 0 or an integer from 1280 to 65535"),
        ("list dns '2001:db8::54'", "list dns 'dns.example'",
         "@lan[0]: option 'dns' = 'dns.example': expected an IPv6 address like 2001:db8::1"),
        ("option mtu '1480'", "list mtu '1480'",
         "tunnel 'he': option 'mtu' is written as a list but takes one value: expected an integer"),
    ]
    for old, new, want in cases:
        got = one_problem(good_with(old, new))
        assert got.startswith(want), (got, want)


def test_bool_spellings():
    for word, val in (("1", True), ("yes", True), ("ON", True), ("true", True), ("enabled", True),
                      ("0", False), ("no", False), ("off", False), ("False", False), ("disabled", False)):
        cfg, problems = check(good_with("option tls_verify 'no'", "option tls_verify '%s'" % word))
        assert problems == [] and cfg["tunnel"]["tls_verify"] is val, word


def test_list_given_as_option_is_split():
    cfg, problems = check(good_with("list dns '2001:db8::53'\n\tlist dns '2001:db8::54'",
                                    "option dns '2001:db8::53 2001:db8::54'"))
    assert problems == []
    assert cfg["lans"][0]["dns"] == ["2001:db8::53", "2001:db8::54"]


def test_all_problems_at_once():
    text = """
config globals 'main'
	option log_level 'chatty'
	option bogus '1'

config tunnel 'he'
	option mode 'http-update'
	option mtu '9000'
	option updatkey 'hunter2-secret'
	option peeraddr 'not-an-ip'

config lan
	option ip6assign '48'

config lan
	option interface 'br-x'
	option ra_preferred '9000'
"""
    p = problems_of(text)
    want = [
        "globals 'main': option 'log_level' = 'chatty': expected one of: debug, info, notice, warning, error",
        "globals 'main': unknown option 'bogus'",
        "tunnel 'he': option 'mtu' = '9000': expected an integer from 1280 to 1480",
        "tunnel 'he': unknown option 'updatkey' (did you mean 'updatekey'?)",
        "tunnel 'he': option 'peeraddr' = 'not-an-ip': expected an IPv4 address like 192.0.2.1",
        "tunnel 'he': option 'ip6addr' is required in mode 'http-update' "
        "(our side of the tunnel, e.g. 2001:db8:1::2/64)",
        "tunnel 'he': option 'username' is required in mode 'http-update' (your account name at the broker)",
        "tunnel 'he': option 'tunnelid' is required in mode 'http-update'",
        "tunnel 'he': option 'updatekey' is required in mode 'http-update'",
        "@lan[0]: option 'ip6assign' = '48': expected 64 (only a /64 supports SLAAC)",
        "@lan[0]: option 'interface' is required",
        "@lan[1]: option 'ra_preferred' = '9000' must not be above option 'ra_valid' (default 7200)",
        "@lan[0], @lan[1]: a LAN needs a routed prefix: add list ip6prefix to tunnel 'he'",
    ]
    for w in want:
        assert any(x.startswith(w) for x in p), (w, p)
    assert len(p) == len(want), p
    assert not any("hunter2" in x for x in p)


def test_secrets_never_echoed():
    for opt in ("updatekey", "password"):
        for bad in ("sec\nret-value", "x" * 300):
            text = good_with("option updatekey 'k3y-SECRET-1'", "option %s %s" % (opt, uci.quote(bad)))
            p = one_problem(text)
            assert p.startswith("tunnel 'he': option '%s' = (hidden): expected text" % opt), p
            assert "sec" not in p and "xxx" not in p
    # credentials in the URL are not echoed either
    p = one_problem(good_with("option mtu '1480'",
                              "option update_url 'https://alice:pw-Secret@broker.example/u'"))
    assert "(hidden)" in p and "pw-Secret" not in p and "username" in p
    p = one_problem(good_with("option mtu '1480'",
                              "option update_url 'https://broker.example/u?password=pw-Secret'"))
    assert "(hidden)" in p and "pw-Secret" not in p
    # valid secrets never appear in problems caused by other options
    p = problems_of(good_with("option mtu '1480'", "option mtu 'x'"))
    assert not any("k3y-SECRET-1" in x for x in p)


def test_mode_rules():
    # static mode: http-update options are neither required nor checked
    text = """
config tunnel 'he'
	option mode 'static'
	option peeraddr '203.0.113.1'
	option ip6addr '2001:db8:1::2/64'
	option update_url 'not a url'
	option update_retry_min '0'
"""
    cfg, p = check(text)
    assert p == []
    assert cfg["tunnel"]["update_url"] == "https://ipv4.tunnelbroker.net/nic/update"  # default, not garbage
    assert cfg["tunnel"]["update_retry_min"] == 5
    # password instead of updatekey is fine
    assert problems_of(good_with("option updatekey 'k3y-SECRET-1'", "option password 'pw'")) == []
    # mode missing or invalid: reported, and mode-specific requirements are not guessed
    p = problems_of("config tunnel t\n option peeraddr 203.0.113.1\n option ip6addr 2001:db8::2/64\n")
    assert p == ["tunnel 't': option 'mode' is required (one of: http-update, static, tsp, tic)"]
    p = problems_of("config tunnel t\n option mode ayiya\n option peeraddr 203.0.113.1\n"
                    " option ip6addr 2001:db8::2/64\n")
    assert p == ["tunnel 't': option 'mode' = 'ayiya': expected one of: http-update, static, tsp, tic"]
    # tsp: the broker gives addresses and prefix; only the server list is required
    p = problems_of("config tunnel t\n option mode tsp\n")
    assert p == ["tunnel 't': option 'server' is required in mode 'tsp' (the broker (TSP) or TIC server, e.g. "
                 "broker.example.net)"]
    cfg, p = check("config tunnel t\n option mode tsp\n list server 203.0.113.18\n")
    assert p == [] and cfg["tunnel"]["tunnel_mode"] == "v6anyv4" and cfg["tunnel"]["host_type"] == "router"


def test_tunnel_count():
    assert problems_of("") == ["no tunnel section: add one (config tunnel 'he', see docs/CONFIG.md)"]
    p = problems_of(good_with("option mode 'http-update'", "option enabled '0'\n\toption mode 'http-update'"))
    assert p[0] == "no enabled tunnel section: all 1 tunnel sections have option enabled '0'"
    two = GOOD + "\nconfig tunnel 'b'\n option mode static\n option peeraddr 203.0.113.2\n" \
                 " option ip6addr 2001:db8:9::2/64\n"
    p = problems_of(two)
    assert p == ["more than one enabled tunnel section (tunnel 'he', tunnel 'b'): set option enabled '0' "
                 "on all but one"]
    cfg, p = check(two.replace(" option mode static", " option enabled off\n option mode static"))
    assert p == [] and cfg["tunnel"]["name"] == "he"
    # a disabled section: its values are still checked, requirements are not
    p = problems_of(GOOD + "\nconfig tunnel 'b'\n option enabled 0\n option mtu 1\n")
    assert p == ["tunnel 'b': option 'mtu' = '1': expected an integer from 1280 to 1480"]
    p = problems_of(GOOD + "\nconfig globals 'x'\n")
    assert p == ["more than one globals section (globals 'main', globals 'x'): keep one"]


def test_unknown_sections_and_options():
    p = problems_of(GOOD + "\nconfig lann\n option interface eth9\n\nconfig bogus 'b'\n")
    assert p == ["@lann[0]: unknown section type 'lann' (did you mean 'lan'?)",
                 "bogus 'b': unknown section type 'bogus' (expected globals, tunnel or lan)"]
    p = problems_of(good_with("option mtu '1480'", "option dns '2001:db8::1'"))
    assert p == ["tunnel 'he': unknown option 'dns' (it belongs in a 'lan' section)"]
    assert schema.suggest("pasword", ["password", "username"]) == "password"
    assert schema.suggest("zzz", ["password"]) is None


def test_cross_option_checks():
    cases = [
        ("option mtu '1480'", "option update_retry_min '60'\n\toption update_retry_max '30'",
         "tunnel 'he': option 'update_retry_max' = '30' must not be below option 'update_retry_min' = '60'"),
        ("option mtu '1480'", "option update_retry_min '1000'",
         "tunnel 'he': option 'update_retry_max' (default 900) must not be below option "
         "'update_retry_min' = '1000'"),
        ("option ip6gw '2001:db8:1::1'", "option ip6gw '2001:db8:9::1'",
         "tunnel 'he': option 'ip6gw' = '2001:db8:9::1' is not inside option 'ip6addr' = '2001:db8:1::2/64'"),
        ("option ip6gw '2001:db8:1::1'", "option ip6gw '2001:db8:1::2'",
         "tunnel 'he': option 'ip6gw' = '2001:db8:1::2' is the same address as option 'ip6addr'"),
        ("list ip6prefix '2001:db8:2::/64'", "list ip6prefix '2001:db8:2::/80'",
         "tunnel 'he': option 'ip6prefix' = '2001:db8:2::/80': a routed prefix must be /64 or shorter"),
        ("option mtu '1480'", "option wan_device 'cpe6in4'",
         "tunnel 'he': option 'ifname' = 'cpe6in4' is the same as option 'wan_device'"),
        ("option interface 'br-guest'", "option interface 'br-lan'",
         "lan 'guest': option 'interface' = 'br-lan' is already used by @lan[0]"),
        ("option interface 'br-guest'", "option interface 'cpe6in4'",
         "lan 'guest': option 'interface' = 'cpe6in4' is the tunnel's own interface"),
        ("option ra_lifetime '0'", "option ra_lifetime '100'",
         "lan 'guest': option 'ra_lifetime' = '100' must be 0 or at least option 'ra_interval' = '200' "
         "(RFC 4861)"),
        ("option ip6hint 'a0'", "option ip6hint 'a0'\n\toption ra_preferred '10'\n\toption ra_valid '5'",
         "lan 'guest': option 'ra_preferred' = '10' must not be above option 'ra_valid' = '5'"),
    ]
    for old, new, want in cases:
        got = one_problem(good_with(old, new))
        assert got.startswith(want), (got, want)
    # same ip6hint twice
    text = good_with("option interface 'br-lan'", "option interface 'br-lan'\n\toption ip6hint 'A0'")
    assert one_problem(text) == "lan 'guest': option 'ip6hint' = 'a0' is already used by @lan[0]"
    # hint outside every routed prefix; too many LANs for the prefixes
    small = good_with("\tlist ip6prefix '2001:db8:100::/48'\n", "")
    p = problems_of(small)
    assert p == ["lan 'guest': option 'ip6hint' = 'a0' does not fit in the routed prefixes of tunnel 'he' "
                 "(room for /64 numbers 0 to 0)",
                 "2 enabled lan sections but the routed prefixes of tunnel 'he' hold only 1 /64s"]
    # disabled LANs are left out of the config and of the cross checks
    cfg, p = check(small.replace("option interface 'br-guest'",
                                 "option interface 'br-guest'\n\toption enabled 0"))
    assert p == [] and [x["name"] for x in cfg["lans"]] == ["cfg038b40"]


def test_value_echo_is_escaped_and_bounded():
    p = one_problem(good_with("option mtu '1480'", "option mtu '%s'" % ("9" * 100)))
    assert "..." in p and len(p) < 200
    p = one_problem(good_with("option tunnelid '123456'", "option tunnelid 'a\x1bb'"))
    assert "\x1b" not in p and "a\\x1bb" in p


def test_expectation_and_check_value_for_every_option():
    for st in schema.SCHEMA:
        for o in st.options:
            assert o.kind in schema.KINDS
            e = schema.expectation(o)
            assert e.startswith("expected "), e
            # defaults and examples are valid values of their own option
            for v in ([o.default] if not o.is_list else (o.default or [])) + \
                    ([o.example] if not o.is_list else (o.example or [])):
                if v is not None:
                    ok, res = schema.check_value(o, v)
                    assert ok, (st.type, o.name, v, res)
            assert schema.check_value(o, "\x01")[0] is False


def test_shipped_file_explains_what_to_fill_in():
    text = schema.defaults_text()
    cfg, p = schema.validate(uci.parse(text))
    assert cfg["globals"]["enabled"] is False
    assert p == [
        "tunnel 'he': option 'peeraddr' is required in mode 'http-update' "
        "(the broker's IPv4 endpoint, e.g. 203.0.113.1)",
        "tunnel 'he': option 'ip6addr' is required in mode 'http-update' "
        "(our side of the tunnel, e.g. 2001:db8:1::2/64)",
        "tunnel 'he': option 'username' is required in mode 'http-update' (your account name at the broker)",
        "tunnel 'he': option 'tunnelid' is required in mode 'http-update' (the broker's ID of this tunnel)",
        "tunnel 'he': option 'updatekey' is required in mode 'http-update' (or set the account 'password')",
    ]


def test_shipped_file_with_examples_filled_in_is_clean():
    text = schema.uncomment_examples(schema.defaults_text())
    assert "\n#option" not in text and "\t#option" not in text and "\n#config" not in text
    cfg, p = schema.validate(uci.parse(text))
    assert p == []
    assert cfg["tunnel"]["peeraddr"] == "203.0.113.1" and len(cfg["lans"]) == 1
    assert cfg["globals"]["enabled"] is False  # the service switch stays as shipped


def test_describe_is_plain_data():
    d = schema.describe()
    assert [s["type"] for s in d] == ["globals", "tunnel", "lan"]
    t = [o for o in d[1]["options"] if o["name"] == "updatekey"][0]
    assert t["secret"] is True and t["modes"] == ["http-update"] and t["required"] is False
    m = [o for o in d[1]["options"] if o["name"] == "mtu"][0]
    assert m["min"] == 1280 and m["max"] == 1480 and m["default"] == "1280"


def test_markdown_mentions_every_option():
    md = schema.markdown()
    for st in schema.SCHEMA:
        assert ("## config %s" % st.type) in md
        for o in st.options:
            assert ("| `%s` |" % o.name) in md, o.name


def test_problem_list_is_bounded():
    text = GOOD + "".join("\toption junk%d 'x'\n" % i for i in range(schema.MAX_PROBLEMS + 50))
    p = problems_of(text)
    assert len(p) == schema.MAX_PROBLEMS + 1
    assert p[0] == "lan 'guest': unknown option 'junk0'"
    assert p[-1] == "... and 50 more problems"
