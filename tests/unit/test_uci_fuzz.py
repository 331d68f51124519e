"""Fuzzing the UCI parser (any input: a Package or UciError, nothing else), writer
round trips, and cpe_tunnel.uciio (atomic save, modes, errors)."""

import os
import stat

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cpe_tunnel import uciio
from cpe_tunnel.core import uci

FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# pieces that make the parser take its interesting paths
TOKENS = ["config", "option", "list", "package", "c", "o", "l", "p", "lan", "'he'", "tunnel",
          "mtu", "dns", "'", '"', "\\", "\\\n", "\\\r\n", "#", ";", " ", "\t", "\n", "\r\n", "\r",
          "''", '""', "'a b'", '"a\\"b"', "x", "é", "\x00", "-", "@", "cfg038b40", "'it'\"'\"'s'"]


def parse_or_error(data):
    try:
        p = uci.parse(data)
    except uci.UciError as e:
        assert isinstance(e.reason, str) and e.reason
        if e.line is not None:
            assert e.reason.startswith("line %d: " % e.line)
        return None
    assert isinstance(p, uci.Package)
    return p


def check_roundtrip(p):
    # whatever parsed is written back losslessly by all writers
    exported = uci.export(p)
    assert uci.parse(exported, p.name) == p
    assert uci.parse(uci.commit_text(p), p.name) == p
    assert uci.export(uci.parse(exported, p.name)) == exported
    uci.show(p)
    uci.show(p, extended=False)
    for s in p.sections():
        assert p.get_section(p.ref(s)) is s
        assert p.get_section(s.id) is not None
        assert uci.show(p, p.ref(s)).startswith("%s.%s=%s\n" % (p.name, p.ref(s), s.type))
        for name in s.names():
            assert uci.show(p, "%s.%s" % (p.ref(s), name)).startswith("%s.%s.%s=" % (p.name, p.ref(s), name))


@FUZZ
@given(st.text(max_size=300))
def test_any_text(text):
    p = parse_or_error(text)
    if p is not None:
        check_roundtrip(p)


@FUZZ
@given(st.binary(max_size=300))
def test_any_bytes(data):
    p = parse_or_error(data)
    if p is not None:
        check_roundtrip(p)


@FUZZ
@given(st.lists(st.sampled_from(TOKENS), max_size=60))
def test_token_soup(tokens):
    p = parse_or_error("".join(tokens))
    if p is not None:
        check_roundtrip(p)


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(["config", "option", "list", "#", ""]),
                          st.lists(st.text(max_size=8), max_size=3)), max_size=20))
def test_statement_soup(statements):
    lines = []
    for cmd, args in statements:
        lines.append(" ".join([cmd] + [uci.quote(a) if i % 2 else a for i, a in enumerate(args)]))
    p = parse_or_error("\n".join(lines))
    if p is not None:
        check_roundtrip(p)


NAMES = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_", min_size=1,
                max_size=10)
TYPES = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126, blacklist_characters="'\"\\#;"),
                min_size=1, max_size=10)
VALUES = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                 max_size=20)


@st.composite
def packages(draw):
    p = uci.Package(draw(st.sampled_from(["cpe_tunnel", "network", "a-b"])))
    for _ in range(draw(st.integers(0, 5))):
        name = draw(st.one_of(st.none(), NAMES))
        try:
            s = p.add(draw(TYPES), name)
        except uci.UciError:
            continue  # name taken
        for _ in range(draw(st.integers(0, 5))):
            opt = draw(NAMES)
            if draw(st.booleans()):
                s.set(opt, draw(VALUES))
            else:
                s.add_list(opt, draw(VALUES))
    for _ in range(draw(st.integers(0, 2))):
        p.delete("@[%d]" % draw(st.integers(-3, 3)))
    return p


@FUZZ
@given(packages())
def test_model_roundtrip(p):
    check_roundtrip(p)
    # show prints one line per section and per option
    lines = uci.show(p).count("\n") - sum(
        x.count("\n") for s in p.sections() for _, v in s.options()
        for x in (v if isinstance(v, list) else [v]))
    assert lines == len(p.sections()) + sum(len(s) for s in p.sections())


def test_size_limit_default():
    e = pytest.raises(uci.UciError, uci.parse, "#" * (uci.MAX_SIZE + 1)).value
    assert "larger than 1024 KiB" in e.reason
    assert "larger than" in pytest.raises(uci.UciError, uci.parse, b" " * (uci.MAX_SIZE + 1)).value.reason
    assert uci.parse("#" * uci.MAX_SIZE).sections() == []


def test_big_valid_file_is_fast_enough():
    text = "".join("config lan 'l%d'\n\toption interface 'br%d'\n\tlist dns '2001:db8::%x'\n" % (i, i, i)
                   for i in range(5000))
    p = uci.parse(text)
    assert len(p.sections()) == 5000
    assert uci.parse(uci.commit_text(p)) == p


# ---------------------------------------------------------------- uciio

SAMPLE = "config tunnel 'he'\n\toption mode 'static'\n\toption password 'it'\\''s'\n"


def test_load_takes_the_package_name_from_the_file(tmp_path):
    f = tmp_path / "cpe_tunnel"
    f.write_text("# hi\n" + SAMPLE)
    p = uciio.load(str(f))
    assert p.name == "cpe_tunnel"
    assert p.get_section("he").get("password") == "it's"
    assert uciio.load(str(f), "other").name == "other"


def test_load_errors_name_the_file(tmp_path):
    f = tmp_path / "cpe_tunnel"
    f.write_text("config tunnel he\n\toption x 'open\n")
    e = pytest.raises(uci.UciError, uciio.load, str(f)).value
    assert e.reason == "%s: line 2: unterminated quote (the ' opened here is never closed)" % f
    assert e.line == 2
    bad = tmp_path / "bad.name"
    bad.write_text(SAMPLE)
    assert "invalid package name" in pytest.raises(uci.UciError, uciio.load, str(bad)).value.reason
    big = tmp_path / "big"
    big.write_bytes(b"#" * (uci.MAX_SIZE + 10))
    assert "larger than" in pytest.raises(uci.UciError, uciio.load, str(big)).value.reason
    with pytest.raises(FileNotFoundError):
        uciio.load(str(tmp_path / "missing"))


def test_save_new_file_is_private_and_commit_shaped(tmp_path):
    p = uci.parse(SAMPLE)
    f = tmp_path / "cpe_tunnel"
    uciio.save(str(f), p)
    assert stat.S_IMODE(os.stat(f).st_mode) == 0o600
    assert f.read_text() == uci.commit_text(p)
    assert f.read_text().startswith("\nconfig tunnel 'he'\n")
    assert uciio.load(str(f)) == p
    assert os.listdir(tmp_path) == ["cpe_tunnel"]  # no temporary file left


def test_save_keeps_mode_and_follows_symlinks(tmp_path):
    real = tmp_path / "real"
    real.write_text("# old comment\nconfig a 'b'\n")
    os.chmod(real, 0o640)
    link = tmp_path / "cpe_tunnel"
    os.symlink("real", link)
    p = uci.parse(SAMPLE)
    uciio.save(str(link), p)
    assert os.path.islink(link)
    assert stat.S_IMODE(os.stat(real).st_mode) == 0o640
    assert real.read_text() == uci.commit_text(p)  # comment gone, as with uci commit
    assert sorted(os.listdir(tmp_path)) == ["cpe_tunnel", "real"]


def test_save_failure_leaves_the_old_file(tmp_path, monkeypatch):
    f = tmp_path / "cpe_tunnel"
    f.write_text(SAMPLE)
    before = f.read_text()

    def boom(*a):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError):
        uciio.save(str(f), uci.parse("config x 'y'\n"))
    assert f.read_text() == before
    assert os.listdir(tmp_path) == ["cpe_tunnel"]
