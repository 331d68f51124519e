# UCI (OpenWrt's Unified Configuration Interface) files: parser, data model, writers.
#
# Behaviour follows libuci (file.c / list.c) and what the real `uci` tool printed
# (/work/shared/UCI.md):
# - Statements: `package NAME`, `config TYPE [NAME]`, `option NAME [VALUE]`,
#   `list NAME [VALUE]`; the one-letter forms p / c / o / l work too. A statement
#   ends at a newline or ';'. '#' starts a comment where a word starts or inside an
#   unquoted word (`a#b` is the word 'a').
# - Words: 'single quotes' (everything literal, may span lines), "double quotes"
#   (backslash takes the next character literally, backslash-newline joins lines),
#   unquoted (backslash as in double quotes, ends at whitespace, ';' or '#');
#   adjacent pieces join into one word ('it'"'"'s' is it's). CRLF is fine: '\r' is
#   whitespace, as C's isspace() says.
# - Names of sections and options: [A-Za-z0-9_]; package names also '-'. Section
#   types: printable ASCII without spaces (libuci's rule) minus ' " \ # ; which the
#   writers could not write back unquoted (a deliberate, documented narrowing).
# - `option x ''` (or no value) is ignored, also when x was set before (libuci's
#   uci_set on an empty value during parsing is a no-op). A later `option x v`
#   replaces x where it stands; `list x v` appends, turning an earlier option x into
#   the list [old, v]; `option x v` after `list x` replaces the list. `list x ''`
#   appends an empty item. A second `config TYPE 'name'` reopens the first section
#   (options merge); with another type it is an error (libuci's strict mode).
# - Anonymous sections get libuci's internal name cfgNNHHHH: NN = "%02x" of the
#   package's section counter (every section added so far, never decremented),
#   HHHH = low 16 bits of the DJB hash of the type (libuci names the section when
#   it is created, before options exist, so only the type enters the hash).
# - Strict like the `uci` command line: the first error stops parsing.
#   Where libuci silently drops the rest of a line (`option x 1;option y 2`), we
#   keep the second statement, which is what the syntax means.
# Errors never quote option values (they may be secrets): only names and types.

from collections import OrderedDict

from cpe_tunnel.core.errors import ConfigError

MAX_SIZE = 1 << 20  # bytes of configuration text we accept

_NL = 10
_SEMI = 59
_HASH = 35
_SQ = 39
_DQ = 34
_BS = 92
_CR = 13


def _table(chars):
    t = bytearray(256)
    for c in chars:
        t[c] = 1
    return t


_LETTERS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_"
_NAME = _table(_LETTERS)
_PKGNAME = _table(_LETTERS + b"-")
_BLANK = _table(b" \t\r\x0b\x0c")  # C isspace() without the newline
# bytes that may continue an unquoted word as they are
_PLAIN = bytearray(256)
for _c in range(256):
    _PLAIN[_c] = 1
for _c in b" \t\r\n\x0b\x0c;#'\"\\":
    _PLAIN[_c] = 0
_TYPE = bytearray(256)
for _c in range(33, 127):
    _TYPE[_c] = 1
for _c in b"'\"\\#;":
    _TYPE[_c] = 0


_BAD_SECTION_NAME = "invalid section name '%s' (use letters, digits and _)"
_BAD_OPTION_NAME = "invalid option name '%s' (use letters, digits and _)"


class UciError(ConfigError):
    """Bad UCI text or a bad name/value handed to the data model. .line is the
    1-based line number for parse errors, else None."""

    def __init__(self, reason, line=None):
        super().__init__(reason)
        self.line = line


def _printable(s, limit=40):
    # For echoing names/types in errors: no control characters, bounded length.
    out = []
    for ch in s[:limit]:
        o = ord(ch)
        if o < 32 or o == 127:
            out.append("\\x%02x" % o)
        else:
            out.append(ch)
    if len(s) > limit:
        out.append("...")
    return "".join(out)


def _check_chars(text, table):
    if not isinstance(text, str) or not text:
        return False
    try:
        b = text.encode("utf-8")
    except UnicodeError:
        return False
    for c in b:
        if not table[c]:
            return False
    return True


def valid_name(text):
    """Section and option names: [A-Za-z0-9_]+."""
    return _check_chars(text, _NAME)


def valid_package_name(text):
    return _check_chars(text, _PKGNAME)


def valid_type(text):
    return _check_chars(text, _TYPE)


def _check_value(value, what):
    if not isinstance(value, str):
        raise UciError("%s must be text" % what)
    if "\x00" in value:
        raise UciError("%s contains a NUL character" % what)


def djb_hash(text):
    """libuci's djbhash() of one string (31 bits)."""
    h = 5381
    for c in text.encode("utf-8"):
        h = (h * 33 + c) & 0xFFFFFFFF
    return h & 0x7FFFFFFF


class Section:
    """One `config` block: .type, .name (None when anonymous), .autoname (libuci's
    cfgNNHHHH for anonymous sections, else None), options in file order. A value is
    a str (option) or a list of str (list)."""

    def __init__(self, type, name=None, autoname=None):
        self.type = type
        self.name = name
        self.autoname = autoname
        self._opts = OrderedDict()

    @property
    def anonymous(self):
        return self.name is None

    @property
    def id(self):
        """The name uci uses internally: the section name or the autoname."""
        return self.autoname if self.name is None else self.name

    def get(self, name, default=None):
        v = self._opts.get(name)
        if v is None:
            return default
        if isinstance(v, list):
            return list(v)
        return v

    def set(self, name, value):
        """Set an option (str) or a whole list (list/tuple of str). An empty string or
        an empty list deletes the option, as `uci set x=''` does. An existing option
        keeps its place; a new one goes to the end."""
        if not valid_name(name):
            raise UciError(_BAD_OPTION_NAME % _printable(str(name)))
        if isinstance(value, (list, tuple)):
            items = []
            for item in value:
                _check_value(item, "a list item of '%s'" % name)
                items.append(item)
            if not items:
                self.delete(name)
            else:
                self._opts[name] = items
            return
        _check_value(value, "the value of '%s'" % name)
        if value == "":
            self.delete(name)
        else:
            self._opts[name] = value

    def add_list(self, name, value):
        """Append to list `name` (`uci add_list`); an existing plain option becomes
        the first item of the new list, in the option's place."""
        if not valid_name(name):
            raise UciError(_BAD_OPTION_NAME % _printable(str(name)))
        _check_value(value, "a list item of '%s'" % name)
        old = self._opts.get(name)
        if old is None:
            self._opts[name] = [value]
        elif isinstance(old, list):
            old.append(value)
        else:
            self._opts[name] = [old, value]

    def delete(self, name):
        """Remove an option; True when it was there."""
        if name in self._opts:
            del self._opts[name]
            return True
        return False

    def options(self):
        """[(name, value)] in order; lists are copies."""
        out = []
        for k, v in self._opts.items():
            out.append((k, list(v) if isinstance(v, list) else v))
        return out

    def names(self):
        return list(self._opts.keys())

    def __contains__(self, name):
        return name in self._opts

    def __len__(self):
        return len(self._opts)

    def __eq__(self, other):
        if not isinstance(other, Section):
            return False
        if self.type != other.type or self.name != other.name:
            return False
        return list(self._opts.items()) == list(other._opts.items())

    def __ne__(self, other):
        return not self.__eq__(other)

    def __repr__(self):
        # never the values: they may be secrets
        return "<Section %s %s, %d options>" % (self.type, self.name if self.name is not None
                                                 else "(anonymous %s)" % self.autoname, len(self._opts))


class Package:
    """A UCI package (one file): .name and an ordered list of Sections."""

    def __init__(self, name="cpe_tunnel"):
        if not valid_package_name(name):
            raise UciError("invalid package name '%s' (use letters, digits, _ and -)" % _printable(str(name)))
        self.name = name
        self._sections = []
        self._byid = {}
        self._count = 0  # libuci's n_section: sections ever added

    def sections(self, type=None):
        if type is None:
            return list(self._sections)
        return [s for s in self._sections if s.type == type]

    def add(self, type, name=None):
        """Append a new section (`uci add` when name is None, `uci set pkg.name=type`
        otherwise) and return it. A name already in use is an error."""
        if not valid_type(type):
            raise UciError("invalid section type '%s' (printable characters without spaces, "
                           "quotes, '\\', '#' or ';')" % _printable(str(type)))
        if name is not None and name != "":
            if not valid_name(name):
                raise UciError(_BAD_SECTION_NAME % _printable(str(name)))
            if name in self._byid:
                raise UciError("section '%s' already exists" % name)
        else:
            name = None
        self._count += 1
        autoname = None
        if name is None:
            autoname = "cfg%02x%04x" % (self._count, djb_hash(type) & 0xFFFF)
        s = Section(type, name, autoname)
        self._sections.append(s)
        if s.id not in self._byid:
            self._byid[s.id] = s
        return s

    def get_section(self, ref):
        """A section by name, by autoname (cfgNNHHHH), or by `@type[N]` (N from 0;
        negative counts from the end; `@[N]` counts all sections). None when there is
        no such section; UciError when ref is malformed."""
        if not isinstance(ref, str) or not ref:
            raise UciError("invalid section reference")
        if ref[0] != "@":
            return self._byid.get(ref)
        lb = ref.rfind("[")
        if lb < 0 or ref[-1] != "]":
            raise UciError("invalid section reference '%s' (expected @type[N])" % _printable(ref))
        typ = ref[1:lb]
        num = ref[lb + 1:-1]
        digits = num[1:] if num[:1] == "-" else num
        if not digits or len(digits) > 9 or not _check_chars(digits, _DIGITS):
            raise UciError("invalid section reference '%s' (expected @type[N])" % _printable(ref))
        if typ and not valid_type(typ):
            raise UciError("invalid section reference '%s' (bad type)" % _printable(ref))
        idx = int(num)
        matches = [s for s in self._sections if not typ or s.type == typ]
        if idx < 0:
            idx += len(matches)
        if 0 <= idx < len(matches):
            return matches[idx]
        return None

    def delete(self, ref):
        """Remove a section (any ref get_section takes); True when it was there."""
        s = self.get_section(ref)
        if s is None:
            return False
        for i in range(len(self._sections)):
            if self._sections[i] is s:
                self._sections.pop(i)
                break
        if self._byid.get(s.id) is s:
            del self._byid[s.id]
            for other in self._sections:  # another section may share the id
                if other.id == s.id:
                    self._byid[s.id] = other
                    break
        return True

    def ref(self, section):
        """How `uci show` names a section: its name, else @type[N]."""
        if section.name is not None:
            return section.name
        n = 0
        for s in self._sections:
            if s is section:
                return "@%s[%d]" % (s.type, n)
            if s.type == section.type:
                n += 1
        raise UciError("section is not in this package")

    def __eq__(self, other):
        if not isinstance(other, Package):
            return False
        return self.name == other.name and self._sections == other._sections

    def __ne__(self, other):
        return not self.__eq__(other)

    def __repr__(self):
        return "<Package %s, %d sections>" % (self.name, len(self._sections))


_DIGITS = _table(b"0123456789")


# ---------------------------------------------------------------- parser

class _Scanner:
    def __init__(self, data):
        self.d = data
        self.n = len(data)
        self.i = 0
        self.line = 1

    def error(self, reason, line=None):
        if line is None:
            line = self.line
        return UciError("line %d: %s" % (line, reason), line)

    def skip_blank(self):
        d, n, i = self.d, self.n, self.i
        while i < n and _BLANK[d[i]]:
            i += 1
        self.i = i

    def skip_comment(self):
        j = self.d.find(b"\n", self.i)
        self.i = self.n if j < 0 else j

    def command(self):
        # The command word is taken as it stands (libuci: strtok on blanks).
        d, n, i = self.d, self.n, self.i
        j = i
        while j < n and not _BLANK[d[j]] and d[j] not in (_NL, _SEMI, _HASH):
            j += 1
        self.i = j
        return d[i:j]

    def backslash(self, i, out):
        # i points at the backslash
        d, n = self.d, self.n
        i += 1
        if i >= n:
            return i  # a backslash at the very end is dropped
        c = d[i]
        if c == _NL:
            self.line += 1
            return i + 1  # line continuation
        if c == _CR and i + 1 < n and d[i + 1] == _NL:
            self.line += 1
            return i + 2
        out.append(c)
        return i + 1

    def word(self):
        """The next word of the statement, as bytes, or None at its end (newline,
        ';', comment or end of text; none of them consumed)."""
        self.skip_blank()
        d, n, i = self.d, self.n, self.i
        if i >= n:
            return None
        c = d[i]
        if c == _NL or c == _SEMI or c == _HASH:
            return None
        out = bytearray()
        while i < n:
            c = d[i]
            if c == _SQ:
                j = d.find(b"'", i + 1)
                if j < 0:
                    raise self.error("unterminated quote (the ' opened here is never closed)")
                piece = d[i + 1:j]
                out.extend(piece)
                self.line += piece.count(b"\n")
                i = j + 1
            elif c == _DQ:
                start = self.line
                i += 1
                while True:
                    if i >= n:
                        raise self.error('unterminated quote (the " opened here is never closed)', start)
                    c = d[i]
                    if c == _DQ:
                        i += 1
                        break
                    if c == _BS:
                        i = self.backslash(i, out)
                        continue
                    if c == _NL:
                        self.line += 1
                    out.append(c)
                    i += 1
            elif c == _BS:
                i = self.backslash(i, out)
            elif not _PLAIN[c]:
                break  # blank, newline, ';' or '#'
            else:
                j = i + 1
                while j < n and _PLAIN[d[j]]:
                    j += 1
                out.extend(d[i:j])
                i = j
        self.i = i
        return bytes(out).decode("utf-8")


_COMMANDS = {
    b"p": "package", b"package": "package",
    b"c": "config", b"config": "config",
    b"o": "option", b"option": "option",
    b"l": "list", b"list": "list",
}


def _too_big(limit):
    return UciError("configuration is larger than %d KiB" % (limit // 1024))


def _to_bytes(text, limit):
    if isinstance(text, (bytes, bytearray)):
        if len(text) > limit:
            raise _too_big(limit)
        data = bytes(text)
        try:
            data.decode("utf-8")
        except UnicodeError:
            raise UciError("configuration is not valid UTF-8 text")
        return data
    if not isinstance(text, str):
        raise UciError("configuration must be text")
    if len(text) > limit:
        raise _too_big(limit)
    try:
        data = text.encode("utf-8")
    except UnicodeError:
        raise UciError("configuration is not valid UTF-8 text")
    if len(data) > limit:
        raise _too_big(limit)
    return data


def parse(text, package="cpe_tunnel", max_size=MAX_SIZE):
    """Parse UCI text (str, or bytes in UTF-8) into a Package named `package`.
    A `package` line in the text is checked and otherwise ignored, as `uci` does
    when it loads one file. Raises UciError("line N: ...") on bad input, and when
    the text is longer than max_size bytes."""
    data = _to_bytes(text, max_size)
    pkg = Package(package)
    nul = data.find(b"\x00")
    if nul >= 0:
        line = data[:nul].count(b"\n") + 1
        raise UciError("line %d: NUL character in the configuration" % line, line)
    sc = _Scanner(data)
    section = None
    while True:
        sc.skip_blank()
        if sc.i >= sc.n:
            break
        c = data[sc.i]
        if c == _NL:
            sc.i += 1
            sc.line += 1
            continue
        if c == _SEMI:
            sc.i += 1
            continue
        if c == _HASH:
            sc.skip_comment()
            continue
        line = sc.line
        cmd = _COMMANDS.get(sc.command())
        if cmd is None:
            # the word itself is not echoed: it may be a stray secret
            raise sc.error("unknown command (a statement starts with config, option, list or package)", line)
        if (cmd == "option" or cmd == "list") and section is None:
            raise sc.error("'%s' outside of a section (put a 'config' line before it)" % cmd, line)
        args = []
        while len(args) < 3:
            w = sc.word()
            if w is None:
                break
            args.append(w)
        if cmd == "package":
            if not args or not args[0]:
                raise sc.error("'package' needs a name", line)
            if not valid_package_name(args[0]):
                raise sc.error("invalid package name '%s' (use letters, digits, _ and -)"
                               % _printable(args[0]), line)
            if len(args) > 1:
                raise sc.error("too many words after 'package'", line)
        elif cmd == "config":
            if not args or not args[0]:
                raise sc.error("'config' needs a section type", line)
            typ = args[0]
            if not valid_type(typ):
                raise sc.error("invalid section type '%s' (printable characters without spaces, "
                               "quotes, '\\', '#' or ';')" % _printable(typ), line)
            name = args[1] if len(args) > 1 else ""
            if len(args) > 2:
                raise sc.error("too many words after 'config %s' (quote a name that contains spaces)"
                               % typ, line)
            if name and not valid_name(name):
                raise sc.error(_BAD_SECTION_NAME % _printable(name), line)
            if name:
                old = pkg._byid.get(name)
                if old is not None:
                    if old.type != typ:
                        raise sc.error("section '%s' declared again with type '%s' (it was '%s')"
                                       % (name, typ, old.type), line)
                    section = old
                    continue
            section = pkg.add(typ, name or None)
        else:
            if not args or not args[0]:
                raise sc.error("'%s' needs an option name" % cmd, line)
            name = args[0]
            if not valid_name(name):
                raise sc.error(_BAD_OPTION_NAME % _printable(name), line)
            if len(args) > 2:
                raise sc.error("too many values for %s '%s' (quote a value that contains spaces)"
                               % (cmd, name), line)
            value = args[1] if len(args) > 1 else ""
            if cmd == "list":
                section.add_list(name, value)
            elif value:
                section._opts[name] = value
    return pkg


# ---------------------------------------------------------------- writers

def quote(value):
    """A value as uci writes it: single-quoted, ' as '\\''."""
    return "'" + value.replace("'", "'\\''") + "'"


def _write(pkg, header):
    out = []
    if header:
        out.append("package %s\n" % pkg.name)
    for s in pkg._sections:
        out.append("\nconfig " + s.type)
        if s.name is not None:
            out.append(" " + quote(s.name))
        out.append("\n")
        for k, v in s._opts.items():
            if isinstance(v, list):
                for item in v:
                    out.append("\tlist %s %s\n" % (k, quote(item)))
            else:
                out.append("\toption %s %s\n" % (k, quote(v)))
    out.append("\n")
    return "".join(out)


def export(pkg):
    """What `uci export PACKAGE` prints."""
    return _write(pkg, True)


def commit_text(pkg):
    """What `uci commit` writes to /etc/config/PACKAGE: no comments, no package
    line, an empty first line, tab-indented, values single-quoted."""
    return _write(pkg, False)


def _show_value(v):
    if isinstance(v, list):
        return " ".join(quote(x) for x in v)
    return quote(v)


def show(pkg, prefix=None, extended=True):
    """What `uci show` prints. prefix limits it like `uci show pkg.SECTION[.OPTION]`
    (SECTION may be a name or @type[N]); extended=False names anonymous sections by
    their cfgNNHHHH names (`uci show -X`). UciError when prefix names nothing."""
    sections = pkg.sections()
    opt = None
    if prefix is not None:
        ref = prefix
        # a type may contain '.', an option name cannot: for @type[N], look after ']'
        dot = prefix.find(".", prefix.rfind("]") + 1 if prefix[:1] == "@" else 0)
        if dot >= 0:
            ref, opt = prefix[:dot], prefix[dot + 1:]
        s = pkg.get_section(ref)
        if s is None or (opt is not None and opt not in s):
            raise UciError("entry not found: %s.%s" % (pkg.name, _printable(prefix, 80)))
        sections = [s]
    out = []
    for s in sections:
        ref = pkg.ref(s) if extended else s.id
        base = "%s.%s" % (pkg.name, ref)
        if opt is None:
            out.append("%s=%s\n" % (base, s.type))
            for k, v in s._opts.items():
                out.append("%s.%s=%s\n" % (base, k, _show_value(v)))
        else:
            out.append("%s.%s=%s\n" % (base, opt, _show_value(s._opts[opt])))
    return "".join(out)
