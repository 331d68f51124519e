# A small XML parser for TSP payloads (MicroPython has no xml module).
#
# Strict where it matters, tolerant where real brokers differ:
# - accepted: one root element; elements, attributes in single or double quotes,
#   self-closing tags, text, CDATA sections, comments, processing instructions and the
#   XML declaration (only at the very start), the five predefined entities and numeric
#   character references, a UTF-8 byte order mark, any whitespace around the root.
# - rejected with RemoteProtocolError: input over MAX_SIZE bytes, nesting deeper than
#   MAX_DEPTH, unbalanced or mismatched tags, text or a second element outside the root,
#   unknown entities, '<' in attribute values, duplicate attributes, DOCTYPE (no DTDs,
#   so no entity expansion tricks), control characters, invalid UTF-8, unterminated
#   anything. Nothing else escapes: no IndexError, no UnicodeError.
# - names are ASCII ([A-Za-z_:][A-Za-z0-9_:.-]*); TSP uses nothing else.
#
# The tree is a list of Element objects: tag, attrs (list of (name, value) in document
# order), children (elements only) and text (all direct character data, joined).

from cpe_tunnel.core.errors import LocalProtocolError, RemoteProtocolError

MAX_SIZE = 16384
MAX_DEPTH = 16

_WS = " \t\r\n"
_NAME_START = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_:"
_NAME_CHARS = _NAME_START + "0123456789.-"
_ENTITIES = {"lt": "<", "gt": ">", "amp": "&", "quot": '"', "apos": "'"}


class Element:
    def __init__(self, tag, attrs):
        self.tag = tag
        self.attrs = attrs
        self.children = []
        self._text = []

    @property
    def text(self):
        return "".join(self._text)

    def get(self, name, default=None):
        for k, v in self.attrs:
            if k == name:
                return v
        return default

    def find(self, tag):
        """First direct child with this tag, or None."""
        for c in self.children:
            if c.tag == tag:
                return c
        return None

    def findall(self, tag):
        """Direct children with this tag, in document order."""
        return [c for c in self.children if c.tag == tag]

    def iter(self, tag=None):
        """This element and all descendants (document order), optionally only `tag`."""
        out = []
        stack = [self]
        while stack:
            el = stack.pop()
            if tag is None or el.tag == tag:
                out.append(el)
            i = len(el.children) - 1
            while i >= 0:
                stack.append(el.children[i])
                i -= 1
        return out

    def __repr__(self):
        return "<Element %s %d attrs %d children>" % (self.tag, len(self.attrs), len(self.children))


def _err(reason):
    raise RemoteProtocolError("malformed XML: " + reason)


def escape(text):
    """Text safe inside element content and double- or single-quoted attributes."""
    if not isinstance(text, str):
        raise LocalProtocolError("escape() takes text")
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;").replace("'", "&apos;"))


def _char_ok(cp):
    if cp in (9, 10, 13):
        return True
    if cp < 0x20 or 0xD800 <= cp <= 0xDFFF or cp in (0xFFFE, 0xFFFF):
        return False
    return cp <= 0x10FFFF


def _unescape(s):
    if "&" not in s:
        return s
    out = []
    i = 0
    n = len(s)
    while i < n:
        j = s.find("&", i)
        if j < 0:
            out.append(s[i:])
            break
        out.append(s[i:j])
        k = s.find(";", j + 1, j + 12)
        if k < 0:
            _err("'&' that does not start an entity reference")
        name = s[j + 1:k]
        if name in _ENTITIES:
            out.append(_ENTITIES[name])
        elif name[:1] == "#":
            if name[1:2] == "x":
                digits = name[2:]
                allowed = "0123456789abcdefABCDEF"
                base = 16
            else:
                digits = name[1:]
                allowed = "0123456789"
                base = 10
            if not digits or len(digits) > 8:
                _err("bad character reference &%s;" % name)
            for c in digits:
                if c not in allowed:
                    _err("bad character reference &%s;" % name)
            cp = int(digits, base)
            if not _char_ok(cp):
                _err("character reference &%s; is not an allowed character" % name)
            out.append(chr(cp))
        else:
            _err("unknown entity &%s;" % _safe(name))
        i = k + 1
    return "".join(out)


def _safe(s, limit=20):
    out = []
    for c in s[:limit]:
        out.append(c if 32 <= ord(c) < 127 else "?")
    return "".join(out)


def _read_name(text, i, n, what):
    if i >= n or text[i] not in _NAME_START:
        _err("expected a %s name" % what)
    j = i + 1
    while j < n and text[j] in _NAME_CHARS:
        j += 1
    return text[i:j], j


def _skip_ws(text, i, n):
    while i < n and text[i] in _WS:
        i += 1
    return i


def _start_tag(text, i, n):
    """Parse '<name attr="v" ...>' or '.../>' at text[i] == '<'.
    Returns (element, index after the tag, self_closing)."""
    tag, j = _read_name(text, i + 1, n, "tag")
    attrs = []
    while True:
        k = _skip_ws(text, j, n)
        if k >= n:
            _err("unterminated start tag <%s" % tag)
        c = text[k]
        if c == ">":
            return Element(tag, attrs), k + 1, False
        if c == "/":
            if k + 1 < n and text[k + 1] == ">":
                return Element(tag, attrs), k + 2, True
            _err("stray '/' in start tag <%s>" % tag)
        if k == j:
            _err("attributes of <%s> must be separated by whitespace" % tag)
        name, j = _read_name(text, k, n, "attribute")
        j = _skip_ws(text, j, n)
        if j >= n or text[j] != "=":
            _err("attribute %s of <%s> has no value" % (name, tag))
        j = _skip_ws(text, j + 1, n)
        if j >= n or text[j] not in "\"'":
            _err("attribute %s of <%s> must be quoted" % (name, tag))
        q = text[j]
        end = text.find(q, j + 1)
        if end < 0:
            _err("unterminated value of attribute %s" % name)
        raw = text[j + 1:end]
        if "<" in raw:
            _err("'<' inside the value of attribute %s" % name)
        for k2, _v in attrs:
            if k2 == name:
                _err("attribute %s repeated in <%s>" % (name, tag))
        raw = raw.replace("\t", " ").replace("\n", " ").replace("\r", " ")
        attrs.append((name, _unescape(raw)))
        j = end + 1


def parse(data, max_size=MAX_SIZE, max_depth=MAX_DEPTH):
    """Parse a whole document; returns the root Element or raises RemoteProtocolError."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        if len(data) > max_size:
            _err("document larger than %d bytes" % max_size)
        try:
            text = str(bytes(data), "utf-8")
        except UnicodeError:
            _err("not valid UTF-8")
    elif isinstance(data, str):
        text = data
        if len(text) > max_size or len(text.encode()) > max_size:
            _err("document larger than %d bytes" % max_size)
    else:
        raise LocalProtocolError("parse() takes bytes or text")
    if text[:1] == "\ufeff":
        text = text[1:]
    for c in text:
        o = ord(c)
        if o < 0x20 and c not in _WS:
            _err("control character 0x%02x" % o)
        if 0xD800 <= o <= 0xDFFF or o in (0xFFFE, 0xFFFF):
            _err("character U+%04X is not allowed in XML" % o)
    n = len(text)
    i = 0
    stack = []
    root = None
    while i < n:
        if text[i] != "<":
            j = text.find("<", i)
            if j < 0:
                j = n
            chunk = text[i:j]
            if stack:
                stack[-1]._text.append(_unescape(chunk))
            else:
                for c in chunk:
                    if c not in _WS:
                        _err("text outside the root element")
            i = j
            continue
        if text.startswith("<!--", i):
            j = text.find("-->", i + 4)
            if j < 0:
                _err("unterminated comment")
            i = j + 3
            continue
        if text.startswith("<?", i):
            j = text.find("?>", i + 2)
            if j < 0:
                _err("unterminated processing instruction")
            target = text[i + 2:i + 6]
            is_decl = target[:3].lower() == "xml" and (len(target) < 4 or target[3] in _WS)
            if is_decl and i != 0:
                _err("XML declaration not at the start of the document")
            i = j + 2
            continue
        if text.startswith("<![CDATA[", i):
            if not stack:
                _err("CDATA outside the root element")
            j = text.find("]]>", i + 9)
            if j < 0:
                _err("unterminated CDATA section")
            stack[-1]._text.append(text[i + 9:j])
            i = j + 3
            continue
        if text.startswith("<!", i):
            _err("DOCTYPE and other declarations are not accepted")
        if text.startswith("</", i):
            name, j = _read_name(text, i + 2, n, "end tag")
            j = _skip_ws(text, j, n)
            if j >= n or text[j] != ">":
                _err("unterminated end tag </%s" % name)
            if not stack:
                _err("end tag </%s> without a start tag" % name)
            if stack[-1].tag != name:
                _err("end tag </%s> does not match <%s>" % (name, stack[-1].tag))
            stack.pop()
            i = j + 1
            continue
        if root is not None and not stack:
            _err("more than one root element")
        el, i, closed = _start_tag(text, i, n)
        if len(stack) + 1 > max_depth:
            _err("elements nested deeper than %d levels" % max_depth)
        if stack:
            stack[-1].children.append(el)
        else:
            root = el
        if not closed:
            stack.append(el)
    if stack:
        _err("element <%s> is not closed" % stack[-1].tag)
    if root is None:
        _err("no element in the document")
    return root
