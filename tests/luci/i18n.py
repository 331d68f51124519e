"""The translatable strings of luci-app-cpe-tunnel and its po/templates/cpe_tunnel.pot.

    python3 tests/luci/i18n.py            print the template
    python3 tests/luci/i18n.py --write    rewrite luci-app/luci-app-cpe-tunnel/po/templates/cpe_tunnel.pot
    python3 tests/luci/i18n.py --check    exit 1 when the template is out of date

Collected as LuCI's build/i18n-scan.pl does: the string literal arguments of _()
and N_() in the JavaScript (a small tokenizer skips comments, regular
expressions and other strings), the "title" of each menu.d entry and the
"description" of each acl.d entry. A _() whose argument is not a plain string
literal cannot be collected and is reported as a problem (tests/unit/test_luci.py
fails on it).
"""

import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
APP = os.path.join(ROOT, "luci-app", "luci-app-cpe-tunnel")
POT = os.path.join(APP, "po", "templates", "cpe_tunnel.pot")

_PUNCT_BEFORE_REGEX = set("(,=:[!&|?{};+-*%<>~^")
_KEYWORDS_BEFORE_REGEX = {"return", "typeof", "case", "do", "else", "in", "of", "new", "delete", "void", "throw"}


class ScanError(Exception):
    pass


def _read_string(text, i, quote):
    """(value, end index) of the JS string literal starting at text[i] == quote."""
    out = []
    j = i + 1
    while j < len(text):
        c = text[j]
        if c == quote:
            return "".join(out), j + 1
        if c == "\n" and quote != "`":
            raise ScanError("unterminated string")
        if c == "\\":
            n = text[j + 1]
            simple = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "v": "\v", "0": "\0"}
            if n in simple:
                out.append(simple[n])
                j += 2
            elif n == "u":
                if text[j + 2] == "{":
                    end = text.index("}", j)
                    out.append(chr(int(text[j + 3:end], 16)))
                    j = end + 1
                else:
                    out.append(chr(int(text[j + 2:j + 6], 16)))
                    j += 6
            elif n == "x":
                out.append(chr(int(text[j + 2:j + 4], 16)))
                j += 4
            elif n == "\n":
                j += 2
            else:
                out.append(n)
                j += 2
            continue
        out.append(c)
        j += 1
    raise ScanError("unterminated string")


def tokenize(text):
    """[(kind, value, line)] with kind in str, template, ident, num, punct, regex."""
    toks = []
    i = 0
    line = 1
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\n":
            line += 1
            i += 1
        elif c in " \t\r":
            i += 1
        elif text.startswith("//", i):
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif text.startswith("/*", i):
            end = text.index("*/", i + 2)
            line += text.count("\n", i, end)
            i = end + 2
        elif c in "'\"`":
            value, j = _read_string(text, i, c)
            toks.append(("template" if c == "`" else "str", value, line))
            line += text.count("\n", i, j)
            i = j
        elif c.isalpha() or c in "_$":
            j = i
            while j < n and (text[j].isalnum() or text[j] in "_$"):
                j += 1
            toks.append(("ident", text[i:j], line))
            i = j
        elif c.isdigit():
            j = i
            while j < n and (text[j].isalnum() or text[j] == "."):
                j += 1
            toks.append(("num", text[i:j], line))
            i = j
        elif c == "/":
            prev = toks[-1] if toks else None
            regex = prev is None or (prev[0] == "punct" and prev[1] in _PUNCT_BEFORE_REGEX) or \
                (prev[0] == "ident" and prev[1] in _KEYWORDS_BEFORE_REGEX)
            if regex:
                j = i + 1
                in_class = False
                while True:
                    d = text[j]
                    if d == "\\":
                        j += 2
                        continue
                    if d == "[":
                        in_class = True
                    elif d == "]":
                        in_class = False
                    elif d == "/" and not in_class:
                        break
                    elif d == "\n":
                        raise ScanError("line %d: unterminated regular expression" % line)
                    j += 1
                j += 1
                while j < n and text[j].isalpha():
                    j += 1
                toks.append(("regex", text[i:j], line))
                i = j
            else:
                toks.append(("punct", c, line))
                i += 1
        else:
            toks.append(("punct", c, line))
            i += 1
    return toks


def _call_args(toks, k):
    """The argument token lists of the call whose "(" is toks[k]."""
    args = [[]]
    depth = 0
    for tok in toks[k + 1:]:
        if tok[0] == "punct" and tok[1] in "([{":
            depth += 1
        elif tok[0] == "punct" and tok[1] in ")]}":
            if depth == 0:
                return args
            depth -= 1
        elif tok[0] == "punct" and tok[1] == "," and depth == 0:
            args.append([])
            continue
        args[-1].append(tok)
    raise ScanError("unterminated call")


def scan_js(text):
    """([(msgid, msgid_plural or None, line)], [problem]) for one JavaScript file."""
    toks = tokenize(text)
    found = []
    problems = []
    for k, (kind, value, line) in enumerate(toks):
        if kind != "ident" or value not in ("_", "N_"):
            continue
        if k > 0 and toks[k - 1][0] == "punct" and toks[k - 1][1] == ".":
            continue
        if k + 1 >= len(toks) or toks[k + 1][1] != "(":
            continue
        args = _call_args(toks, k + 1)
        # _(string[, context]); N_(count, singular, plural[, context])
        want = [0] if value == "_" else [1, 2]
        strs = []
        for i in want:
            if i >= len(args) or len(args[i]) != 1 or args[i][0][0] != "str":
                problems.append("line %d: %s() needs string literals (%s)" % (
                    line, value, "'text'" if value == "_" else "count, 'singular', 'plural'"))
                strs = []
                break
            strs.append(args[i][0][1])
        if strs:
            found.append((strs[0], strs[1] if len(strs) > 1 else None, line))
    return found, problems


def collect():
    """({(msgid, msgid_plural or None): [reference]}, [problem]) over the whole app."""
    entries = {}
    problems = []

    def add(msgid, ref, plural=None):
        key = (msgid, plural)
        entries.setdefault(key, [])
        if ref not in entries[key]:
            entries[key].append(ref)

    for d, dirs, files in os.walk(os.path.join(APP, "htdocs")):
        dirs.sort()
        for fn in sorted(files):
            if not fn.endswith(".js"):
                continue
            path = os.path.join(d, fn)
            rel = os.path.relpath(path, ROOT)
            with open(path, encoding="utf-8") as f:
                text = f.read()
            try:
                found, probs = scan_js(text)
            except ScanError as exc:
                problems.append("%s: %s" % (rel, exc))
                continue
            problems += ["%s: %s" % (rel, p) for p in probs]
            for msgid, plural, line in found:
                add(msgid, "%s:%d" % (rel, line), plural)
    share = os.path.join(APP, "root", "usr", "share")
    for sub, field in (("luci/menu.d", "title"), ("rpcd/acl.d", "description")):
        folder = os.path.join(share, sub)
        for fn in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
            path = os.path.join(folder, fn)
            rel = os.path.relpath(path, ROOT)
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
            for key in data:
                if isinstance(data[key], dict) and isinstance(data[key].get(field), str):
                    add(data[key][field], rel)
    return entries, problems


def _po(s):
    s = s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
    return '"%s"' % s


def render_pot(entries):
    out = ['msgid ""', 'msgstr "Content-Type: text/plain; charset=UTF-8"', ""]
    for key in sorted(entries, key=lambda k: (k[0], k[1] or "")):
        msgid, plural = key
        for ref in entries[key]:
            out.append("#: %s" % ref)
        out.append("msgid %s" % _po(msgid))
        if plural is None:
            out.append('msgstr ""')
        else:
            out.append("msgid_plural %s" % _po(plural))
            out.append('msgstr[0] ""')
            out.append('msgstr[1] ""')
        out.append("")
    return "\n".join(out)


def main(argv):
    entries, problems = collect()
    for p in problems:
        print("i18n: %s" % p, file=sys.stderr)
    text = render_pot(entries)
    if "--write" in argv:
        os.makedirs(os.path.dirname(POT), exist_ok=True)
        with open(POT, "w", encoding="utf-8") as f:
            f.write(text)
        print("%s: %d strings" % (os.path.relpath(POT, ROOT), len(entries)))
    elif "--check" in argv:
        try:
            with open(POT, encoding="utf-8") as f:
                current = f.read()
        except OSError:
            current = None
        if current != text:
            print("%s is out of date: python3 tests/luci/i18n.py --write" % os.path.relpath(POT, ROOT),
                  file=sys.stderr)
            return 1
    else:
        sys.stdout.write(text)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
