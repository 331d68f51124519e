"""luci-app-cpe-tunnel (luci-app/luci-app-cpe-tunnel): syntax of every JavaScript
file (node --check) and JSON file, the ACL against the ubus methods the views
declare, the menu entry against the ACL, the translation template, the Node tests
of the views (tests/luci/views.test.js, with recording stand-ins of LuCI's client
modules), the forms against the daemon's schema (every option the forms write
exists in the schema with the same type, range, choices, default and modes, and
every user-facing schema option is in the configuration form; the protocol form
against the netifd handler's options), the validators against the daemon's own
value check (schema.check_value, hand-picked and generated values) and against
`cpe-tunneld --check` on whole files, the option table in common.js generated from
the schema (current, follows a schema change, reads back in Node as
schema.describe()), the .ipk, and the committed screenshots.

The tests that run JavaScript need node (Debian: apt-get install nodejs); without it
they skip with that reason and the rest still run."""

import ast
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cpe_tunnel import luci_schema, netifd_schema
from cpe_tunnel.core import schema, uci

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
APP = os.path.join(ROOT, "luci-app", "luci-app-cpe-tunnel")
RESOURCES = os.path.join(APP, "htdocs", "luci-static", "resources")
TESTS = os.path.join(ROOT, "tests", "luci")
NODE = shutil.which("node")

sys.path.insert(0, TESTS)
sys.path.insert(0, os.path.join(ROOT, "tools"))
import i18n  # noqa: E402
import mkipk_luci  # noqa: E402

needs_node = pytest.mark.skipif(NODE is None, reason="node is not installed (apt-get install nodejs)")

# schema options that are not the user's to edit in the form
NOT_IN_FORM = {
    ("tunnel", "locked"): "set by the ISP's provisioning; the form shows it (read-only) and never writes it",
}


def js_files(base):
    out = []
    for d, dirs, files in os.walk(base):
        dirs[:] = sorted(x for x in dirs if x != "node_modules")
        out += [os.path.join(d, f) for f in sorted(files) if f.endswith(".js")]
    return out


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


# ------------------------------------------------------------------ syntax

@needs_node
def test_node_check_every_js_file(tmp_path):
    """LuCI modules are function bodies (the loader wraps them and passes the
    'require'd modules in), so they are checked wrapped the same way."""
    app = js_files(os.path.join(APP, "htdocs"))
    assert len(app) == 4, app
    checked = []
    for path in app + js_files(TESTS):
        text = read(path)
        target = path
        if path.startswith(APP):
            assert text.startswith("'use strict';\n"), path
            assert re.search(r"^return ", text, re.M), "%s: a LuCI module returns its class" % path
            target = str(tmp_path / (os.path.basename(path) + ".wrapped.js"))
            with open(target, "w") as f:
                f.write("(function(window, document, L) {\n%s\n});\n" % text)
        r = subprocess.run([NODE, "--check", target], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, "%s:\n%s" % (path, r.stderr)
        checked.append(path)
    assert any(p.endswith("views.test.js") for p in checked)


@needs_node
def test_node_check_rejects_a_broken_module(tmp_path):
    bad = tmp_path / "bad.js"
    bad.write_text("(function(window, document, L) {\n'use strict';\n"
                   "return view.extend({ render: function() { }\n});\n")
    r = subprocess.run([NODE, "--check", str(bad)], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0


def test_every_json_file_is_valid():
    files = []
    for base in (APP, TESTS):
        for d, _dirs, fs in os.walk(base):
            files += [os.path.join(d, f) for f in fs if f.endswith(".json")]
    assert len(files) >= 7
    for path in files:
        with open(path, encoding="utf-8") as f:
            json.load(f)


def test_makefile_is_the_luci_mk_shape():
    text = read(os.path.join(APP, "Makefile"))
    lines = [x for x in text.splitlines() if x.strip() and not x.startswith("#")]
    assert lines[0] == "include $(TOPDIR)/rules.mk"
    assert lines[-1].startswith("include ") and lines[-1].endswith("/luci.mk")
    assert any(x.startswith("LUCI_TITLE:=") for x in lines)
    deps = [x for x in lines if x.startswith("LUCI_DEPENDS:=")]
    assert deps and set(deps[0].split(":=", 1)[1].split()) == {"+luci-base", "+cpe-tunnel"}
    assert len(lines) <= 5


# ------------------------------------------------------------------ ACL and menu

def rpc_declares():
    """{(object, method)} of every rpc.declare in the app's JavaScript."""
    out = set()
    for path in js_files(os.path.join(APP, "htdocs")):
        for m in re.finditer(r"rpc\.declare\(\{(.*?)\}\)", read(path), re.S):
            body = m.group(1)
            obj = re.search(r"object:\s*'([^']+)'", body).group(1)
            meth = re.search(r"method:\s*'([^']+)'", body).group(1)
            out.add((obj, meth))
    return out


def acl():
    with open(os.path.join(APP, "root", "usr", "share", "rpcd", "acl.d", "luci-app-cpe-tunnel.json")) as f:
        return json.load(f)


def test_acl_grants_exactly_the_ubus_methods_the_views_call():
    declared = rpc_declares()
    assert declared == {("cpe_tunnel", "status"), ("cpe_tunnel", "reconnect")}
    a = acl()
    assert list(a) == ["luci-app-cpe-tunnel"]
    entry = a["luci-app-cpe-tunnel"]
    granted = set()
    for part in ("read", "write"):
        for obj, methods in entry[part].get("ubus", {}).items():
            assert isinstance(methods, list) and "*" not in methods, "each method granted on its own"
            granted |= {(obj, m) for m in methods}
    assert granted == declared
    # reading the status is a read right; reconnecting changes something
    assert entry["read"]["ubus"] == {"cpe_tunnel": ["status"]}
    assert entry["write"]["ubus"] == {"cpe_tunnel": ["reconnect"]}
    assert entry["read"]["uci"] == ["cpe_tunnel"]
    assert entry["write"]["uci"] == ["cpe_tunnel"]


def test_acl_methods_exist_on_the_daemons_ubus_object():
    text = read(os.path.join(ROOT, "cpe_tunnel", "daemon.py"))
    table = re.search(r"methods = \{(.*?)\}", text, re.S).group(1)
    daemon_methods = set(re.findall(r'"(\w+)":', table))
    assert {m for _, m in rpc_declares()} <= daemon_methods, daemon_methods


def test_menu_entry_depends_on_the_acl_and_points_at_the_views():
    with open(os.path.join(APP, "root", "usr", "share", "luci", "menu.d", "luci-app-cpe-tunnel.json")) as f:
        menu = json.load(f)
    top = menu["admin/network/cpe_tunnel"]
    assert top["depends"]["acl"] == list(acl())
    assert top["depends"]["uci"] == {"cpe_tunnel": True}
    views = [v["action"]["path"] for k, v in menu.items() if v["action"]["type"] == "view"]
    assert sorted(views) == ["cpe_tunnel/config", "cpe_tunnel/status"]
    for v in views:
        assert os.path.isfile(os.path.join(RESOURCES, "view", v + ".js")), v
    for k in menu:
        assert k == "admin/network/cpe_tunnel" or k.startswith("admin/network/cpe_tunnel/")
        assert menu[k]["title"]


# ------------------------------------------------------------------ translations

def template_ids():
    entries, problems = i18n.collect()
    return {k[0] for k in entries} | {k[1] for k in entries if k[1]}, entries, problems


def test_translation_template_is_current():
    ids, entries, problems = template_ids()
    assert problems == []
    assert read(i18n.POT) == i18n.render_pot(entries), "run: python3 tests/luci/i18n.py --write"
    for title in ("IPv6 Tunnel", "Status", "Configuration"):
        assert title in ids


@needs_node
def test_views_translate_only_template_strings():
    # what the views passed through _() while rendering (formtool describe) is all in the template
    ids = template_ids()[0]
    assert set(describe()["translated"]) <= ids


def test_i18n_scan_catches_strings_it_cannot_collect():
    found, problems = i18n.scan_js("x = _(name); y = _('a' + b); z = _('fine'); w = N_(n, 'one', v);")
    assert [f[0] for f in found] == ["fine"]
    assert len(problems) == 3


# ------------------------------------------------------------------ the Node tests

@needs_node
def test_node_view_tests():
    r = subprocess.run([NODE, "--test", os.path.join(TESTS, "views.test.js")], capture_output=True, text=True,
                       timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-3000:]
    m = re.search(r"^# pass (\d+)$", r.stdout, re.M)
    assert m and int(m.group(1)) >= 35, r.stdout[-2000:]
    assert re.search(r"^# fail 0$", r.stdout, re.M)


# ------------------------------------------------------------------ forms vs schema

_DESCRIBE = {}


def describe():
    if "d" not in _DESCRIBE:
        r = subprocess.run([NODE, os.path.join(TESTS, "formtool.js"), "describe"], capture_output=True, text=True,
                           timeout=120, cwd=ROOT)
        assert r.returncode == 0, r.stderr
        _DESCRIBE["d"] = json.loads(r.stdout)
    return _DESCRIBE["d"]


def form_sections():
    return {s["type"]: s for s in describe()["config"]}


WIDGET = {"bool": "CBI.Flag", "enum": "CBI.ListValue"}


def expected_widget(opt):
    if opt.kind in WIDGET:
        return WIDGET[opt.kind]
    return "CBI.DynamicList" if opt.is_list else "CBI.Value"


def check_option_matches_schema(fo, opt, section_type, where):
    assert fo["widget"] == expected_widget(opt), where
    assert fo["kind"] == opt.kind, where
    if opt.kind == "bool":
        assert (fo["enabled"], fo["disabled"], fo["default"]) == ("1", "0", opt.default), where
    elif opt.kind == "enum":
        assert fo["choices"] == list(opt.choices), where
        assert fo["default"] == opt.default, where
    else:
        assert fo["validates"], "%s has the daemon's check" % where
        if opt.default is not None:
            assert fo["placeholder"] == opt.default, "%s: default shown as placeholder" % where
    assert fo["password"] == opt.secret, where
    if opt.secret:
        assert fo["placeholder"] is None, where
    # only the chosen mode's fields (tunnel options carry their modes as depends)
    if section_type == "tunnel":
        mode_deps = [d for d in fo["depends"] if "mode" in d]
        assert mode_deps == ([{"mode": m} for m in opt.modes] if opt.modes else []), where
    # required everywhere it is used: LuCI's own non-empty rule; else the validator
    req_everywhere = opt.required is True or (isinstance(opt.required, tuple) and opt.required == opt.modes)
    assert fo["rmempty"] == (not req_everywhere), where


@needs_node
def test_config_form_covers_the_schema():
    sections = form_sections()
    assert sorted(sections) == sorted(s.type for s in schema.SCHEMA)
    for st_ in schema.SCHEMA:
        fs = sections[st_.type]
        written = {o["name"]: o for o in fs["options"] if o["writes"]}
        for name in written:
            assert name in st_.by_name, "the form writes %s.%s, which the daemon does not know" % (st_.type, name)
        for opt in st_.options:
            if (st_.type, opt.name) in NOT_IN_FORM:
                assert opt.name not in written
                continue
            assert opt.name in written, "schema option %s.%s is not in the form" % (st_.type, opt.name)
            check_option_matches_schema(written[opt.name], opt, st_.type, "%s.%s" % (st_.type, opt.name))


@needs_node
def test_config_form_sections():
    sections = form_sections()
    g, t, lan = sections["globals"], sections["tunnel"], sections["lan"]
    assert (g["class"], g["name"]) == ("CBI.NamedSection", "main")
    assert t["class"] == "CBI.TypedSection" and t["addremove"] and not t["anonymous"]
    assert [x["name"] for x in t["tabs"]] == ["general", "broker", "advanced"]
    assert lan["class"] == "CBI.TypedSection" and lan["addremove"] and lan["anonymous"]
    # every tunnel option is guarded against changing what the ISP locked
    for o in t["options"]:
        assert o["lockable"] == o["writes"], o["name"]
    assert "_locked" in [o["name"] for o in t["options"] if not o["writes"]]
    # titles on everything
    for s in (g, t, lan):
        for o in s["options"]:
            assert o["title"], o["name"]


@needs_node
def test_protocol_form_matches_the_netifd_handler():
    p = describe()["protocol"]
    assert (p["name"], p["package"], p["virtual"], p["floating"]) == ("cpetunnel", "cpe-tunnel", True, True)
    assert p["ifname"] == "cpe-wan6"
    opts = {o["name"]: o for o in p["sections"][0]["options"]}
    handler = netifd_schema.netifd_options()
    assert sorted(opts) == sorted(n for n, _, _ in handler)
    for name, kind, section in handler:
        fo = opts[name]
        if section is None:
            assert name == "tunlink" and fo["widget"] == "CBI.NetworkSelect"
            continue
        opt = schema.SECTIONS[section].by_name[name]
        check_option_matches_schema(fo, opt, section, "proto " + name)
        assert {"array": "CBI.DynamicList", "boolean": "CBI.Flag"}.get(kind, fo["widget"]) == fo["widget"]
        assert fo["tab"] in ("general", "advanced")


@needs_node
def test_status_view_polls_and_declares():
    s = describe()["status"]
    assert s["polls"] == [{"interval": 5}]
    assert sorted(d["method"] for d in s["declares"]) == ["reconnect", "status"]
    assert all(d["expect"] == {"": {}} for d in s["declares"])
    assert [c["method"] for c in s["calls"]] == ["status"]


# ------------------------------------------------------------------ the status page against the daemon's status

# fields of the daemon's status the page leaves out, and why
STATUS_NOT_SHOWN = {
    "mtu": "configuration, not state (the Configuration page shows it)",
    "sent": "keepalive/heartbeat counters: the page says whether the broker answers",
    "answered": "as above",
    "last_reply_age": "as above (the round trip is shown)",
    "requests_sent": "the last update's result and time say more",
}

STATUS_SOURCES = [  # (module file, class, method) whose dict keys make up `cpe_tunnel status`
    ("cpe_tunnel/supervisor.py", "TunnelRunner", "status"),
    ("cpe_tunnel/supervisor.py", "LanPort", "status"),
    ("cpe_tunnel/supervisor.py", "Supervisor", "status"),
    ("cpe_tunnel/sessions_tsp.py", "TspSession", "status"),
    ("cpe_tunnel/sessions_sixxs.py", "TicSession", "status"),
    ("cpe_tunnel/core/keepalive.py", "Keepalive", "status"),
]


def status_keys():
    """The string keys of the dict literals and subscript assignments in the daemon's status methods."""
    keys = set()
    for rel, cls, meth in STATUS_SOURCES:
        tree = ast.parse(read(os.path.join(ROOT, rel)))
        found = 0
        for c in ast.walk(tree):
            if not isinstance(c, ast.ClassDef) or (cls is not None and c.name != cls):
                continue
            for f in c.body:
                if isinstance(f, ast.FunctionDef) and f.name == meth:
                    found += 1
                    for n in ast.walk(f):
                        if isinstance(n, ast.Dict):
                            keys |= {k.value for k in n.keys
                                     if isinstance(k, ast.Constant) and isinstance(k.value, str)}
                        elif isinstance(n, ast.Subscript) and isinstance(n.ctx, ast.Store) and \
                                isinstance(n.slice, ast.Constant) and isinstance(n.slice.value, str):
                            keys.add(n.slice.value)
        assert found, (rel, cls, meth)
    return keys


def test_status_page_reads_every_field_of_the_daemons_status():
    code = read(os.path.join(RESOURCES, "view", "cpe_tunnel", "status.js"))
    code = re.sub(r"/\*.*?\*/", "", code, flags=re.S)  # not the comments
    keys = status_keys()
    for k in ("tunnel_family", "delegated_prefixes4", "lan4", "local_endpoint", "keepalive_address", "motd",
              "waiting_for_clock", "clock_watch", "next_tic_in", "control_rx", "answer_timeout", "public_ipv6"):
        assert k in keys, "the scan found " + k  # the scan itself works
    # keys with a space are data (a count by reason, shown with the others of its dict)
    missing = sorted(k for k in keys - set(STATUS_NOT_SHOWN) if " " not in k
                     if not re.search(r"\.%s\b|'%s'" % (re.escape(k), re.escape(k)), code))
    assert missing == [], "status.js does not show these fields of `cpe_tunnel status`: %s" % missing


# ------------------------------------------------------------------ the generated option table

COMMON = os.path.join(RESOURCES, "cpe_tunnel", "common.js")


def test_generated_option_table_is_current():
    assert luci_schema.is_current(COMMON), "run: python3 -m cpe_tunnel.luci_schema --write"
    text = read(COMMON)
    assert text.count(luci_schema.BEGIN) == 1 and text.count(luci_schema.END) == 1


def test_generated_block_follows_a_schema_change(monkeypatch, tmp_path):
    """An option added to the schema (as another change may) makes the committed
    block stale; --check says so, --write brings it in and leaves the rest alone."""
    copy = tmp_path / "common.js"
    copy.write_text(read(COMMON), encoding="utf-8")
    assert luci_schema.main(["--check", str(copy)]) == 0
    tunnel = schema.SECTIONS["tunnel"]
    extra = schema.Option("probe_interval", "int", "7", "A new option.", modes=schema.TSP, lo=2, hi=9,
                          required=schema.TSP)
    monkeypatch.setattr(tunnel, "options", tunnel.options + [extra])
    assert not luci_schema.is_current(str(copy))
    assert luci_schema.main(["--check", str(copy)]) == 1
    assert luci_schema.main(["--write", str(copy)]) == 0
    new = copy.read_text(encoding="utf-8")
    assert ("{ name: 'probe_interval', kind: 'int', def: '7', lo: 2, hi: 9, modes: [ 'tsp' ], "
            "req: [ 'tsp' ] }") in new
    old = read(COMMON)

    def outside(s):
        return s[:s.index(luci_schema.BEGIN)] + s[s.index(luci_schema.END):]

    assert outside(new) == outside(old)
    assert luci_schema.main(["--check", str(copy)]) == 0


def test_every_kind_of_the_schema_has_a_check_in_common_js():
    """A kind without a check is left to the daemon in the browser; port it."""
    text = read(COMMON)
    body = text[text.index("var CHECK = {"):text.index("\n};", text.index("var CHECK = {"))]
    kinds = set(re.findall(r"^\t(\w+): function\(opt, text\)", body, re.M))
    used = {o.kind for st_ in schema.SCHEMA for o in st_.options}
    assert used <= kinds, "no check in common.js for kind(s) %s" % sorted(used - kinds)
    assert set(schema.KINDS) <= kinds


def test_splice_needs_the_markers():
    with pytest.raises(ValueError):
        luci_schema.splice("'use strict';\nvar OPTIONS = {};\n")
    with pytest.raises(ValueError):
        luci_schema.splice(luci_schema.END + "\n" + luci_schema.BEGIN + "\n")


def test_js_literals_are_ascii_and_escaped():
    assert luci_schema.js_string("it's a \\ test\n") == "'it\\'s a \\\\ test\\n'"
    assert luci_schema.js_string("\u00e9\U0001f600") == "'\\u00e9\\ud83d\\ude00'"
    assert luci_schema.js_value(["a", 1, None, True]) == "[ 'a', 1, null, true ]"
    assert luci_schema.js_value([]) == "[]"
    with pytest.raises(TypeError):
        luci_schema.js_value(1.5)


@needs_node
def test_js_literals_read_back_in_node():
    samples = ["it's", "back\\slash", "tab\there\nnew", "\u00e9\u3000", "\U0001f600", "</script>", "\x7f"]
    src = "process.stdout.write(JSON.stringify(%s));" % luci_schema.js_value(samples)
    r = subprocess.run([NODE, "-e", src], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == samples


@needs_node
def test_option_table_in_the_browser_is_the_schema():
    """common.OPTIONS as the browser sees it, option by option, against
    schema.describe(); common.NETIFD against the netifd handler's options."""
    options = describe()["options"]
    desc = schema.describe()
    assert sorted(options) == sorted(s["type"] for s in desc)
    for st_ in desc:
        js = options[st_["type"]]
        assert [o["name"] for o in js] == [d["name"] for d in st_["options"]]
        for o, d in zip(js, st_["options"]):
            where = "%s.%s" % (st_["type"], d["name"])
            assert o["kind"] == d["kind"], where
            assert o.get("def") == d["default"], where
            if d["kind"] in ("int", "hex"):
                assert (o["lo"], o["hi"]) == (d["min"], d["max"]), where
            assert bool(o.get("zero")) == d["zero_ok"], where
            assert o.get("choices") == d["choices"], where
            assert o.get("modes") == d["modes"], where
            assert o.get("req", False) == d["required"], where
            assert bool(o.get("secret")) == d["secret"], where
            assert bool(o.get("list")) == d["list"], where
            if d["secret"]:
                assert "ex" not in o, where
            if "why" in o:
                assert d["expected"].endswith(" (%s)" % o["why"]), where
    groups = {}
    for name, _kind, section in netifd_schema.netifd_options():
        if section is not None:
            groups.setdefault(section, []).append(name)
    assert describe()["netifd"] == groups


@needs_node
def test_every_form_option_has_words():
    """An option new in the schema reaches the forms when the block is regenerated
    (titled with its name); this asks for its words in common.js fields()."""
    words = describe()["words"]
    for st_ in schema.SCHEMA:
        have = {w["name"]: w for w in words.get(st_.type, [])}
        for opt in st_.options:
            if (st_.type, opt.name) in NOT_IN_FORM:
                assert opt.name in have and not have[opt.name]["field"], opt.name
                continue
            assert opt.name in have and have[opt.name]["title"], \
                "%s.%s has no title in common.js fields(): add a row with its words" % (st_.type, opt.name)
        assert set(have) <= set(st_.by_name), "fields() names options the schema lacks"


# ------------------------------------------------------------------ validators vs the daemon

class Validators:
    """A long-lived `node formtool.js serve`: one JSON request per line."""

    def __init__(self):
        self.p = subprocess.Popen([NODE, os.path.join(TESTS, "formtool.js"), "serve"], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True, cwd=ROOT, encoding="utf-8",
                                  errors="surrogatepass")

    def ask(self, req):
        self.p.stdin.write(json.dumps(req) + "\n")
        self.p.stdin.flush()
        line = self.p.stdout.readline()
        assert line, "formtool serve died"
        ans = json.loads(line)
        assert "error" not in ans, ans
        return ans

    def check(self, section, option, value):
        return self.ask({"check": [section, option], "value": value})["result"]

    def close(self):
        self.p.stdin.close()
        self.p.wait(timeout=30)


@pytest.fixture(scope="module")
def validators():
    v = Validators()
    yield v
    v.close()


def daemon(section, option, value):
    ok, msg = schema.check_value(schema.SECTIONS[section].by_name[option], value)
    return True if ok else msg


ALL_OPTIONS = [(st_.type, o.name) for st_ in schema.SCHEMA for o in st_.options]

# values near the edges of each kind's rules
EDGES = [
    "", " ", "0", "00", "1", "-1", "+1", "1_0", "4294967295", "4294967296", "99999999999", "1e3", "0x10",
    "yes", "No", "TRUE", "enabled", "on ", "auto", "Auto", "tsp", "http-update",
    "192.0.2.1", "192.0.2.01", "192.0.2.256", "192.0.2", "192.0.2.1.5", "1.2.3.4/24", "192.0.2.0/24",
    "192.0.2.1/24", "192.0.2.0/33", "192.0.2.0/-0", "192.0.2.0/+8", "192.0.2.0/1_6", "0.0.0.0/0", "1.2.3.4/5/6",
    "::", "::1", "2001:db8::1", "2001:DB8::1", "2001:db8:::1", "2001:db8::1::2", "1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8:9",
    "1:2:3:4:5:6:7::", "1:2:3:4::5:6:7:8", "1::2:3:4:5:6:7:8", "::1:2:3:4:5:6:7",
    "::ffff:192.0.2.1", "::ffff:192.0.2.256", "::ffff:1.2.3", "fe80::1%eth0", "12345::",
    "2001:db8::/48", "2001:db8::1/48", "2001:db8:1::2/64", "2001:db8:1::2/0", "2001:db8:1::2/129",
    "2001:db8:1::2/064", "2001:db8:1::2/", "2001:db8:1::2/x", "2001:db8::/0", "::/128", "2001:db8:1::2/64/64",
    "1.2.3.4", ":1.2.3.4", "::1.2.3.4/96",
    "eth0", "br-lan", "a" * 15, "a" * 16, "é" * 7, "é" * 8, "eth 0", "eth/0", "eth:0", ".", "..", "a\tb", "a\x85b",
    "a\u00a0b", "a\u3000b", "a\ufeffb", "\ud800",
    "/", "/var/run/x", "var/run", "/a" + "b" * 4093, "/a" + "b" * 4094, "/a\x7f",
    "https://ipv4.tunnelbroker.net/nic/update", "HTTPS://Broker.Example/nic/update", "http://broker",
    "ftp://broker/x", "https://", "https:///x", "https://a@b/x", "https://b/x?y=1", "https://b/x#y",
    "https://b /x", "https://b:0/x", "https://b:65535/x", "https://b:65536/x", "https://b:/x", "https://b:8a/x",
    "https://[2001:db8::1]/x", "https://[2001:db8::1]:443/x", "https://[2001:db8::1/x", "https://[::1]x/",
    "https://[zz]/x", "https://-b/x", "https://b-/x", "https://b..c/x", "https://" + "a" * 64 + "/x",
    "https://" + ("a." * 127) + "a/x", "https://b_c/x", "https://é/x",
    "10", "ffff", "FFFF", "10000", "fffff", "g", "ffffffff", "fffffffff",
    "x" * 256, "x" * 257, "tab\there", "new\nline", "ok text", "ünïcödé", "😀" * 256, "😀" * 257,
]


@needs_node
def test_value_checks_match_the_daemon_on_edge_values(validators):
    mismatches = []
    for section, option in ALL_OPTIONS:
        for value in EDGES:
            js = validators.check(section, option, value)
            py = daemon(section, option, value)
            if js != py:
                mismatches.append((section, option, value, js, py))
    assert mismatches == [], mismatches[:10]


# generated values shaped like each kind, so the generator reaches the rules
_NUM = st.one_of(st.integers(0, 255).map(str), st.integers(0, 255).map(str), st.integers(0, 999).map(str),
                 st.sampled_from(["", "00", "01", "010", "256", "1000", "-1", "+1", "1_0"]))
_PLEN = st.one_of(st.integers(0, 140).map(str), st.sampled_from(["", "x", "-0", "+8", "1_6", "08", "064", "0064"]))
_IPV4 = st.builds(lambda parts, suffix: ".".join(parts) + suffix,
                  st.one_of(st.lists(_NUM, min_size=4, max_size=4), st.lists(_NUM, min_size=1, max_size=6)),
                  st.one_of(st.just(""), _PLEN.map(lambda n: "/" + n), st.sampled_from(["/1/2", "//8"])))
_H16 = st.one_of(st.integers(0, 0xFFFF).map(lambda n: "%x" % n), st.integers(0, 0xFFFF).map(lambda n: "%04X" % n),
                 st.integers(0, 9).map(str), st.just("0"),
                 st.sampled_from(["", "00000", "g", "1.2.3.4", "192.0.2.01", "1.2.3"]))
# n groups, "::" (or ":") at a random place among them
_IPV6 = st.builds(lambda split, dbl, suffix: ":".join(split[0][:split[1]]) + ("::" if dbl else ":")
                  + ":".join(split[0][split[1]:]) + suffix,
                  st.integers(0, 9).flatmap(lambda n: st.tuples(st.lists(_H16, min_size=n, max_size=n),
                                                                 st.integers(0, n))),
                  st.booleans(),
                  st.one_of(st.just(""), _PLEN.map(lambda n: "/" + n), st.sampled_from(["%eth0", ":::", "/64/64"])))
_HOST = st.lists(st.text(alphabet="ab-0_\u00e9", max_size=5), min_size=1, max_size=4).map(".".join)
_URL = st.builds(lambda scheme, host, port, path, extra: scheme + host + port + path + extra,
                 st.sampled_from(["http://", "https://", "HTTPS://", "hTTp://", "ftp://", "", "https:/"]),
                 st.one_of(_HOST, _IPV6.map(lambda a: "[" + a + "]"), st.just("[")),
                 st.one_of(st.just(""), st.integers(0, 70000).map(lambda n: ":%d" % n),
                           st.sampled_from([":", ":x", ":123456", ":+80"])),
                 st.sampled_from(["", "/", "/nic/update", "/a b", "/[x]"]),
                 st.sampled_from(["", "?x=1", "#f", "@", "\t", " ", "\x7f"]))
_INT = st.one_of(st.integers(-5, 5 * 10 ** 9).map(str), st.text(alphabet="0123456789abcdefABCDEFx+-_ ", max_size=12))
_NAME = st.text(alphabet=st.sampled_from(list("abz09-_./: \t\x85\xa0\u2000\u3000\ufeff\u00e9\U0001f600")), max_size=18)

_GROUPS = {
    "ipv4": ([("tunnel", "ipaddr"), ("tunnel", "peeraddr"), ("tunnel", "private_range")], _IPV4),
    "ipv6": ([("tunnel", "ip6addr"), ("tunnel", "ip6prefix"), ("tunnel", "ip6gw"), ("lan", "dns")], _IPV6),
    "url": ([("tunnel", "update_url")], _URL),
    "int": ([(st_.type, o.name) for st_ in schema.SCHEMA for o in st_.options if o.kind in ("int", "hex")], _INT),
    "text": ([(st_.type, o.name) for st_ in schema.SCHEMA for o in st_.options
              if o.kind in ("ifname", "path", "string")], st.one_of(_NAME, st.text(max_size=20))),
    "choice": ([(st_.type, o.name) for st_ in schema.SCHEMA for o in st_.options if o.kind in ("bool", "enum")],
               st.one_of(st.sampled_from(["yes", "No", "ON", "tsp", "TSP", "auto", "v6v4", "digest-md5", " 1"]),
                         st.text(max_size=6))),
}


@needs_node
@pytest.mark.parametrize("group", sorted(_GROUPS))
def test_value_checks_match_the_daemon_on_generated_values(validators, group):
    options, values = _GROUPS[group]
    assert options

    @settings(max_examples=150, deadline=None, database=None)
    @given(value=values, which=st.sampled_from(options))
    def check(value, which):
        assert validators.check(which[0], which[1], value) == daemon(which[0], which[1], value), (which, value)

    check()


@needs_node
def test_form_validators_give_the_daemons_verdict(validators):
    """The validate function of each form option (what LuCI calls) agrees with the
    daemon for every edge value, in a mode where the option is used; where the
    daemon accepts a value, only the cross-option rules may object."""
    cross = {"update_retry_max", "ip6gw", "ip6prefix", "ifname", "ra_preferred", "ra_lifetime"}
    for form, sections in (("config", [s.type for s in schema.SCHEMA]), ("protocol", ["tunnel"])):
        names = {o["name"] for s in (describe()["config"] if form == "config" else describe()["protocol"]["sections"])
                 for o in s["options"] if o["validates"]}
        for section in sections:
            for opt in schema.SECTIONS[section].options:
                if opt.name not in names or opt.kind in ("bool", "enum"):
                    continue
                mode = (opt.modes or ("http-update",))[0]
                values = {"mode": mode} if section == "tunnel" else {}
                for value in EDGES:
                    if value == "":
                        continue
                    req = {"form": form, "section": "tunnel" if form == "protocol" else section,
                           "option": opt.name, "value": value, "values": values}
                    ans = validators.ask(req)
                    py = daemon(section, opt.name, value)
                    if py is True:
                        assert ans["result"] is True or opt.name in cross, (form, section, opt.name, value, ans)
                    else:
                        assert ans["result"] == py, (form, section, opt.name, value, ans)


# whole sections: the form's verdict (every active field) against the daemon's
# validate() of the same file. The form flags the option a rule is about.
BASE_TUNNEL = {"mode": "http-update", "peeraddr": "203.0.113.1", "ip6addr": "2001:db8:1::2/64",
               "ip6prefix": ["2001:db8:2::/64"], "username": "example-user", "updatekey": "example-update-key",
               "tunnelid": "123456"}

SECTION_CASES = [
    ("tunnel", {}, set()),
    ("tunnel", {"updatekey": None}, {"updatekey"}),
    ("tunnel", {"updatekey": None, "password": "example-password"}, set()),
    ("tunnel", {"update_retry_max": "3"}, {"update_retry_max"}),
    ("tunnel", {"update_retry_max": "3", "update_retry_min": "2"}, set()),
    ("tunnel", {"ip6gw": "2001:db8:9::1"}, {"ip6gw"}),
    ("tunnel", {"ip6gw": "2001:db8:1::2"}, {"ip6gw"}),
    ("tunnel", {"ip6gw": "2001:db8:1::1"}, set()),
    ("tunnel", {"ip6prefix": ["2001:db8:2::/96"]}, {"ip6prefix"}),
    ("tunnel", {"ifname": "eth1", "wan_device": "eth1"}, {"ifname"}),
    ("tunnel", {"mtu": "1500"}, {"mtu"}),
    ("tunnel", {"username": None}, {"username"}),
    ("tunnel", {"tunnelid": None}, {"tunnelid"}),
    ("tunnel", {"peeraddr": None}, {"peeraddr"}),
    ("tunnel", {"mode": "static", "username": None, "updatekey": None, "tunnelid": None}, set()),
    ("tunnel", {"mode": "tsp", "peeraddr": None, "ip6addr": None, "updatekey": None, "tunnelid": None}, {"server"}),
    ("tunnel", {"mode": "tsp", "peeraddr": None, "ip6addr": None, "updatekey": None, "tunnelid": None,
                "username": None, "server": ["broker.example.net"]}, set()),
    ("tunnel", {"mode": "tic", "peeraddr": None, "ip6addr": None, "updatekey": None, "tunnelid": None,
                "server": ["tic.example.net"]}, {"password"}),
    ("tunnel", {"mode": "tic", "peeraddr": None, "ip6addr": None, "updatekey": None, "tunnelid": None,
                "username": None, "server": ["tic.example.net"], "password": "p"}, {"username"}),
    ("lan", {"ra_preferred": "8000"}, {"ra_preferred"}),
    ("lan", {"ra_lifetime": "100"}, {"ra_lifetime"}),
    ("lan", {"ra_lifetime": "0"}, set()),
    ("lan", {"ra_interval": "100", "ra_lifetime": "100"}, set()),
    ("lan", {"interface": None}, {"interface"}),
    ("lan", {"ip6hint": "1g"}, {"ip6hint"}),
]


def uci_text(tunnel, lan):
    lines = ["config tunnel 'he'"]
    for section, values in ((None, tunnel), ("lan", lan)):
        if section:
            lines += ["", "config lan 'lan1'"]
        for k, v in values.items():
            if v is None:
                continue
            if isinstance(v, list):
                lines += ["\tlist %s %s" % (k, uci.quote(x)) for x in v]
            else:
                lines.append("\toption %s %s" % (k, uci.quote(v)))
    return "\n".join(lines) + "\n"


def case_values(section, change):
    tunnel = dict(BASE_TUNNEL)
    lan = {"interface": "br-lan"}
    (tunnel if section == "tunnel" else lan).update(change)
    return tunnel, lan


@needs_node
@pytest.mark.parametrize("section,change,flagged", SECTION_CASES)
def test_form_and_daemon_agree_on_whole_sections(validators, section, change, flagged):
    tunnel, lan = case_values(section, change)
    _, problems = schema.validate(uci.parse(uci_text(tunnel, lan), "cpe_tunnel"))
    values = {k: v for k, v in (tunnel if section == "tunnel" else lan).items() if v is not None}
    ans = validators.ask({"form": "config", "section": section, "values": values, "all": True})
    assert set(ans["invalid"]) == flagged, (ans, problems)
    label = "tunnel 'he'" if section == "tunnel" else "lan 'lan1'"
    mine = [p for p in problems if label in p or (section == "lan" and "lan1" in p)]
    assert bool(mine) == bool(flagged), problems
    for name in flagged:
        assert any("'%s'" % name in p for p in mine), (name, problems)


@needs_node
def test_form_and_cpe_tunneld_check_agree(validators, tmp_path):
    """The daemon's own `--check` on whole files, the way a user meets it."""
    for change, bad in (({}, None), ({"mtu": "1500"}, "mtu"), ({"ip6prefix": ["2001:db8:2::/96"]}, "ip6prefix"),
                        ({"update_url": "https://user@broker.example/nic/update"}, "update_url")):
        tunnel, lan = case_values("tunnel", change)
        path = tmp_path / "cpe_tunnel"
        path.write_text(uci_text(tunnel, lan))
        r = subprocess.run([sys.executable, "-m", "cpe_tunnel.daemon", "--check", "-c", str(path)],
                           capture_output=True, text=True, timeout=60, cwd=ROOT,
                           env=dict(os.environ, PYTHONPATH=ROOT))
        ans = validators.ask({"form": "config", "section": "tunnel",
                              "values": {k: v for k, v in tunnel.items() if v is not None}, "all": True})
        if bad is None:
            assert r.returncode == 0, r.stdout + r.stderr
            assert ans["invalid"] == {}
        else:
            assert r.returncode == 2, r.stdout + r.stderr
            assert "'%s'" % bad in r.stdout + r.stderr
            assert list(ans["invalid"]) == [bad]
            if not schema.SECTIONS["tunnel"].by_name[bad].is_list:
                # same words as the daemon for the value itself
                assert ans["invalid"][bad] in r.stdout + r.stderr


# ------------------------------------------------------------------ package

def test_ipk(tmp_path):
    path = mkipk_luci.build(str(tmp_path))
    assert os.path.basename(path) == "luci-app-cpe-tunnel_%s-1_all.ipk" % mkipk_luci.mkipk.version()
    with open(path, "rb") as f:
        raw = f.read()
    assert raw[:2] == b"\x1f\x8b"
    outer = tarfile.open(fileobj=io.BytesIO(raw), mode="r:gz")
    assert outer.getnames() == ["./debian-binary", "./data.tar.gz", "./control.tar.gz"]
    data = tarfile.open(fileobj=io.BytesIO(outer.extractfile("./data.tar.gz").read()), mode="r:gz")
    files = {m.name: m for m in data.getmembers() if m.isfile()}
    assert sorted(files) == [
        "./usr/share/luci/menu.d/luci-app-cpe-tunnel.json",
        "./usr/share/rpcd/acl.d/luci-app-cpe-tunnel.json",
        "./www/luci-static/resources/cpe_tunnel/common.js",
        "./www/luci-static/resources/protocol/cpetunnel.js",
        "./www/luci-static/resources/view/cpe_tunnel/config.js",
        "./www/luci-static/resources/view/cpe_tunnel/status.js",
    ]
    assert all(m.mode == 0o644 and m.uid == 0 for m in files.values())
    assert data.extractfile("./www/luci-static/resources/view/cpe_tunnel/status.js").read() == \
        read(os.path.join(RESOURCES, "view", "cpe_tunnel", "status.js")).encode()
    ctl = tarfile.open(fileobj=io.BytesIO(outer.extractfile("./control.tar.gz").read()), mode="r:gz")
    control = ctl.extractfile("./control").read().decode()
    assert "Package: luci-app-cpe-tunnel\n" in control
    assert "Depends: libc, luci-base, cpe-tunnel\n" in control
    assert "Architecture: all\n" in control
    postinst = ctl.extractfile("./postinst").read().decode()
    assert 'IPKG_INSTROOT' in postinst and "rpcd reload" in postinst
    # reproducible
    again = mkipk_luci.build(str(tmp_path / "again"))
    with open(again, "rb") as f:
        assert f.read() == raw


# ------------------------------------------------------------------ screenshots

@pytest.mark.parametrize("name", ["luci-status.png", "luci-config.png"])
def test_screenshots_are_committed(name):
    path = os.path.join(ROOT, "docs", name)
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    assert width == 1100 and 600 <= height <= 4000
    assert os.path.getsize(path) > 20000
