# UCI parser/writer tests; run by pytest and by tests/mprun.py under MicroPython.
from cpe_tunnel.core import uci
from cpe_tunnel.core.errors import ConfigError

# The input and the three outputs of the real `uci` tool, from /work/shared/UCI.md.
EXAMPLE = (
    "# comment line\n"
    "config globals 'main'\n"
    "\toption enabled \"1\"\n"
    "\toption log_level info\n"
    "\n"
    "config tunnel 'he'\n"
    "\toption mode 'http-update'\n"
    "\toption password 'it'\"'\"'s a \"secret\"'\n"
    "\tlist dns 2001:db8::53\n"
    "\tlist dns '2001:db8::54'\n"
    "\toption empty ''\n"
    "\n"
    "config lan\n"
    "\toption interface br-lan\n"
    "\toption ip6assign 64\n"
    "\n"
    "config lan\n"
    "\toption interface 'br-guest'\n"
)

SHOW = (
    "cpe_tunnel.main=globals\n"
    "cpe_tunnel.main.enabled='1'\n"
    "cpe_tunnel.main.log_level='info'\n"
    "cpe_tunnel.he=tunnel\n"
    "cpe_tunnel.he.mode='http-update'\n"
    "cpe_tunnel.he.password='it'\\''s a \"secret\"'\n"
    "cpe_tunnel.he.dns='2001:db8::53' '2001:db8::54'\n"
    "cpe_tunnel.@lan[0]=lan\n"
    "cpe_tunnel.@lan[0].interface='br-lan'\n"
    "cpe_tunnel.@lan[0].ip6assign='64'\n"
    "cpe_tunnel.@lan[1]=lan\n"
    "cpe_tunnel.@lan[1].interface='br-guest'\n"
)

EXPORT = (
    "package cpe_tunnel\n"
    "\n"
    "config globals 'main'\n"
    "\toption enabled '1'\n"
    "\toption log_level 'info'\n"
    "\n"
    "config tunnel 'he'\n"
    "\toption mode 'http-update'\n"
    "\toption password 'it'\\''s a \"secret\"'\n"
    "\tlist dns '2001:db8::53'\n"
    "\tlist dns '2001:db8::54'\n"
    "\n"
    "config lan\n"
    "\toption interface 'br-lan'\n"
    "\toption ip6assign '64'\n"
    "\n"
    "config lan\n"
    "\toption interface 'br-guest'\n"
    "\n"
)

# uci commit: the export without the package line
COMMIT = EXPORT[len("package cpe_tunnel\n"):]


def raises(fn, *args):
    try:
        fn(*args)
    except uci.UciError as e:
        assert isinstance(e, ConfigError)
        return e.reason
    raise AssertionError("no UciError from %r" % (args,))


def test_example_show_export_commit_byte_exact():
    p = uci.parse(EXAMPLE)
    assert uci.show(p) == SHOW
    assert uci.export(p) == EXPORT
    assert uci.commit_text(p) == COMMIT
    assert COMMIT.startswith("\nconfig globals 'main'\n")


def test_example_model():
    p = uci.parse(EXAMPLE)
    assert p.name == "cpe_tunnel"
    assert [s.type for s in p.sections()] == ["globals", "tunnel", "lan", "lan"]
    he = p.get_section("he")
    assert he.type == "tunnel" and he.name == "he" and not he.anonymous
    assert he.get("password") == "it's a \"secret\""
    assert he.get("dns") == ["2001:db8::53", "2001:db8::54"]
    assert he.get("empty") is None and "empty" not in he
    assert he.get("empty", "x") == "x"
    assert he.names() == ["mode", "password", "dns"]
    lans = p.sections("lan")
    assert [s.anonymous for s in lans] == [True, True]
    assert [s.name for s in lans] == [None, None]
    assert lans[0].get("interface") == "br-lan"
    assert p.get_section("@lan[0]") is lans[0]
    assert p.get_section("@lan[1]") is lans[1]
    assert p.get_section("@lan[-1]") is lans[1]
    assert p.get_section("@lan[-2]") is lans[0]
    assert p.get_section("@lan[2]") is None
    assert p.get_section("@lan[-3]") is None
    assert p.get_section("@[0]").name == "main"
    assert p.get_section("nope") is None
    assert p.ref(lans[1]) == "@lan[1]" and p.ref(he) == "he"


def test_autonames_match_libuci():
    p = uci.parse(EXAMPLE)
    lans = p.sections("lan")
    # what `uci show -X` printed for this file, and `uci add cpe_tunnel lan` after it
    assert lans[0].autoname == "cfg038b40"
    assert lans[1].autoname == "cfg048b40"
    assert lans[0].id == "cfg038b40"
    assert p.get_section("cfg048b40") is lans[1]
    new = p.add("lan")
    assert new.autoname == "cfg058b40"
    assert uci.djb_hash("lan") & 0xFFFF == 0x8B40
    assert p.get_section("main").autoname is None
    # the counter never goes back, as in libuci
    p.delete("@lan[-1]")
    assert p.add("lan").autoname == "cfg068b40"
    # uci show -X
    assert "cpe_tunnel.cfg038b40=lan\n" in uci.show(p, extended=False)
    # more than 255 sections: %02x simply grows
    q = uci.Package("x")
    for _ in range(256):
        s = q.add("lan")
    assert s.autoname == "cfg1008b40"


def test_show_prefix():
    p = uci.parse(EXAMPLE)
    assert uci.show(p, "he.dns") == "cpe_tunnel.he.dns='2001:db8::53' '2001:db8::54'\n"
    assert uci.show(p, "@lan[1]") == "cpe_tunnel.@lan[1]=lan\ncpe_tunnel.@lan[1].interface='br-guest'\n"
    assert uci.show(p, "@lan[-1].interface") == "cpe_tunnel.@lan[1].interface='br-guest'\n"
    assert "not found" in raises(uci.show, p, "he.nothing")
    assert "not found" in raises(uci.show, p, "nothing")


def test_round_trips():
    p = uci.parse(EXAMPLE)
    assert uci.parse(uci.export(p)) == p
    assert uci.parse(uci.commit_text(p)) == p
    assert uci.export(uci.parse(uci.commit_text(p))) == EXPORT
    odd = uci.Package("cpe_tunnel")
    s = odd.add("tunnel", "t")
    s.set("a", "it's \"quoted\"\\ # ; with\nnewline\r\n and tab\t")
    s.add_list("b", "")
    s.add_list("b", "x y")
    s.set("c", "é ünïcode")
    odd.add("we-ird.type:1")
    q = uci.parse(uci.export(odd))
    assert q == odd
    assert q.get_section("t").get("a") == s.get("a")
    assert uci.parse(uci.commit_text(odd)) == odd


def test_equality_looks_at_everything_but_autonames():
    a = uci.parse("config x 'n'\n\toption a 1\n\toption b 2\n")
    assert a == uci.parse("config x n\n option a 1; option b 2")
    assert a != uci.parse("config x 'n'\n\toption b 2\n\toption a 1\n")  # order matters
    assert a != uci.parse("config x 'm'\n\toption a 1\n\toption b 2\n")
    assert a != uci.parse("config y 'n'\n\toption a 1\n\toption b 2\n")
    assert a != uci.parse("config x 'n'\n\toption a 1\n\tlist b 2\n")
    assert a != uci.parse("config x 'n'\n\toption a 1\n\toption b 2\n", "other")
    assert a != "config x"


def test_quoting_forms():
    p = uci.parse(
        "config t s\n"
        "option a 'it'\"'\"'s'\n"
        "option b \"dq \\\"in\\\" \\\\ \\n\"\n"
        "option c un\\ quoted\\'\n"
        "option d 'sq \\ stays'\n"
        "option e abc#comment\n"
        "option f 'x'#comment\n"
        "option g a'b c'\"d e\"f\n"
        "option h \"con\\\ntinued\"\n"
        "option i wo\\\nrd\n"
        "option j 'multi\nline'\n"
        "option k \"multi\nline\"\n"
        "option l '#not a comment;'\n"
    )
    s = p.get_section("s")
    assert s.get("a") == "it's"
    assert s.get("b") == 'dq "in" \\ n'
    assert s.get("c") == "un quoted'"
    assert s.get("d") == "sq \\ stays"
    assert s.get("e") == "abc"
    assert s.get("f") == "x"
    assert s.get("g") == "ab cd ef"
    assert s.get("h") == "continued"
    assert s.get("i") == "word"
    assert s.get("j") == "multi\nline"
    assert s.get("k") == "multi\nline"
    assert s.get("l") == "#not a comment;"


def test_comments_blank_lines_crlf_semicolons():
    text = ("# top\r\n"
            "   # indented comment\r\n"
            "\r\n"
            "package cpe_tunnel\r\n"
            "config lan 'a' # trailing\r\n"
            "\toption interface br-lan\r\n"
            "\toption ip6hint '10'\r\n"
            "\tlist dns x ; list dns y;list dns 'z';option ra 0\r\n"
            "c lan; o interface br-guest; l dns w\r\n")
    p = uci.parse(text)
    a = p.get_section("a")
    assert a.get("interface") == "br-lan"
    assert a.get("ip6hint") == "10"
    assert a.get("dns") == ["x", "y", "z"]
    assert a.get("ra") == "0"
    b = p.get_section("@lan[1]")
    assert b.get("interface") == "br-guest" and b.get("dns") == ["w"]
    # the package line names nothing: the caller's name wins, as with `uci load`
    assert uci.parse("package other\nconfig a b\n", "mine").name == "mine"
    assert uci.parse("").sections() == []
    assert uci.parse(b"config a 'b'\n").get_section("b").type == "a"


def test_option_and_list_override_rules():
    p = uci.parse(
        "config t s\n"
        "option a 1\n"
        "option b 1\n"
        "option a 2\n"        # replaces in place
        "option b ''\n"       # empty: ignored, b stays (libuci)
        "option c\n"          # no value: ignored
        "list d x\n"
        "list d y\n"
        "option d z\n"        # option replaces the list in place
        "option e 1\n"
        "list e 2\n"          # list after option: [old, new]
        "list f ''\n"         # empty list items are kept
        "config t s\n"        # same name, same type: reopens s
        "option g 1\n"
    )
    s = p.get_section("s")
    assert s.options() == [("a", "2"), ("b", "1"), ("d", "z"), ("e", ["1", "2"]), ("f", [""]), ("g", "1")]
    assert len(p.sections()) == 1


def test_parse_errors_name_the_line():
    cases = [
        ("config a b\noption x 'open\n", 2, "unterminated quote"),
        ("\n\nconfig a b\n\toption x \"open\n\n", 4, "unterminated quote"),
        ("\n\noption a b\n", 3, "'option' outside of a section"),
        ("list a b\n", 1, "'list' outside of a section"),
        ("config a b\nconfig a 'a b'\n", 2, "invalid section name 'a b'"),
        ("config a b\nconfig a b-c\n", 2, "invalid section name 'b-c'"),
        ("config 'a b'\n", 1, "invalid section type 'a b'"),
        ("config 'a\"b'\n", 1, "invalid section type"),
        ("config\n", 1, "'config' needs a section type"),
        ("config ''\n", 1, "'config' needs a section type"),
        ("config a b c\n", 1, "too many words"),
        ("config a b\noption\n", 2, "'option' needs an option name"),
        ("config a b\noption 'x-y' 1\n", 2, "invalid option name 'x-y'"),
        ("config a b\noption x 1 2\n", 2, "too many values for option 'x'"),
        ("config a b\nlist x 1 2\n", 2, "too many values for list 'x'"),
        ("config a b\nconfig c b\n", 2, "declared again"),
        ("config a b\nfoo bar\n", 2, "unknown command"),
        ("config a b\n'config' x\n", 2, "unknown command"),
        ("configure a\n", 1, "unknown command"),
        ("package\n", 1, "'package' needs a name"),
        ("package 'a b'\n", 1, "invalid package name"),
        ("package a b\n", 1, "too many words"),
        ("config a b\n\n\noption x a\x00b\n", 4, "NUL"),
    ]
    for text, line, what in cases:
        try:
            uci.parse(text)
        except uci.UciError as e:
            assert e.line == line, (text, e.reason)
            assert e.reason.startswith("line %d: " % line), e.reason
            assert what in e.reason, (text, e.reason)
            continue
        raise AssertionError("no error for %r" % text)


def test_errors_never_echo_values():
    # a password split by a space, or left on a line of its own
    for text in ("config t s\noption password hunter2 sesame\n",
                 "config t s\noption password\n  hunter2\n",
                 "config t s\noption password 'hunter2\n"):
        r = raises(uci.parse, text)
        assert "hunter2" not in r and "sesame" not in r, r


def test_hostile_input_limits():
    # (the 1 MiB default is exercised in tests/unit; MicroPython's heap is small)
    assert "larger than 4 KiB" in raises(uci.parse, "#" * 4097, "x", 4096)
    assert "larger than 4 KiB" in raises(uci.parse, b"#" * 4097, "x", 4096)
    assert "larger than 4 KiB" in raises(uci.parse, "\u00e9" * 2049, "x", 4096)  # 4098 bytes
    assert uci.parse("#" * 4096, "x", 4096).sections() == []
    assert "UTF-8" in raises(uci.parse, b"config a '\xff'\n")
    assert "text" in raises(uci.parse, 12)
    assert "package name" in raises(uci.parse, "", "bad name")
    # a trailing backslash at the very end is dropped, like libuci
    assert uci.parse("config a b\noption x y\\").get_section("b").get("x") == "y"


def test_model_api():
    p = uci.Package("cpe_tunnel")
    he = p.add("tunnel", "he")
    assert "already exists" in raises(p.add, "tunnel", "he")
    assert "invalid section name" in raises(p.add, "tunnel", "h e")
    assert "invalid section type" in raises(p.add, "tun nel")
    he.set("mtu", "1280")
    he.set("dns", ["a", "b"])
    he.set("mtu", "1400")  # keeps its place
    he.add_list("dns", "c")
    he.set("ttl", "64")
    he.add_list("ttl", "65")  # option -> list, same place
    assert he.options() == [("mtu", "1400"), ("dns", ["a", "b", "c"]), ("ttl", ["64", "65"])]
    got = he.get("dns")
    got.append("mutated")
    assert he.get("dns") == ["a", "b", "c"]
    he.set("mtu", "")  # like uci set x='': deletes
    assert "mtu" not in he
    he.set("dns", [])
    assert "dns" not in he
    assert he.delete("ttl") and not he.delete("ttl")
    assert "invalid option name" in raises(he.set, "a.b", "1")
    assert "must be text" in raises(he.set, "a", 1)
    assert "NUL" in raises(he.set, "a", "x\x00")
    assert "must be text" in raises(he.add_list, "a", None)
    assert "invalid section reference" in raises(p.get_section, "@lan[x]")
    assert "invalid section reference" in raises(p.get_section, "@lan")
    assert "invalid section reference" in raises(p.get_section, "")
    lan = p.add("lan")
    assert p.get_section("@lan[0]") is lan and lan.anonymous
    assert p.delete("he") and not p.delete("he")
    assert p.get_section("he") is None
    assert p.delete("@lan[0]")
    assert p.sections() == []
    # repr never shows values
    s = p.add("tunnel", "x")
    s.set("password", "hunter2")
    assert "hunter2" not in repr(s) and "hunter2" not in repr(p)
    assert "invalid package name" in raises(uci.Package, "a b")


def test_quote():
    assert uci.quote("") == "''"
    assert uci.quote("it's") == "'it'\\''s'"
    assert uci.quote("a\"b") == "'a\"b'"
