"""A generated block inside a hand-written file: the part between a BEGIN and an END
marker line is produced from the schema (netifd_schema.py: the netifd handler's
option list in cpetunnel.sh; luci_schema.py: LuCI's option table in common.js).

    gen = GeneratedBlock(BEGIN, END, render_block, DEFAULT_PATH, "cpe_tunnel.x", after_write)
    gen.splice(text)       text with the block replaced (ValueError: markers missing)
    gen.is_current(path)   the file's block matches the schema
    gen.main(argv)         [--write | --check] [PATH]; no option: print the block
"""

import os
import sys


class GeneratedBlock:
    def __init__(self, begin, end, render, default_path, module, after_write=None):
        self.begin = begin
        self.end = end
        self.render = render
        self.default_path = default_path
        self.module = module
        self.after_write = after_write  # what to run next, said after an update

    def splice(self, text, block=None):
        """text with its generated block replaced by block (default: render()).
        ValueError when the markers are missing or out of order."""
        block = self.render() if block is None else block
        start = text.find(self.begin)
        end = text.find(self.end, start + 1 if start >= 0 else 0)
        if start < 0 or end < 0:
            raise ValueError("generated-block markers not found")
        stop = text.find("\n", end)
        stop = len(text) if stop < 0 else stop + 1
        return text[:start] + block + text[stop:]

    def is_current(self, path=None):
        with open(path or self.default_path, encoding="utf-8") as f:
            text = f.read()
        return self.splice(text) == text

    def main(self, argv=None):
        argv = list(sys.argv[1:] if argv is None else argv)
        write = "--write" in argv
        check = "--check" in argv
        paths = [a for a in argv if not a.startswith("--")]
        path = paths[0] if paths else self.default_path
        if not write and not check:
            sys.stdout.write(self.render())
            return 0
        with open(path, encoding="utf-8") as f:
            text = f.read()
        try:
            new = self.splice(text)
        except ValueError as exc:
            print("%s: %s" % (path, exc), file=sys.stderr)
            return 1
        if check:
            if new != text:
                print("%s: generated block is out of date; run python3 -m %s --write" % (path, self.module),
                      file=sys.stderr)
                return 1
            print("%s: generated block is current" % path)
            return 0
        if new == text:
            print("%s: generated block already current" % path)
            return 0
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(new)
        os.chmod(tmp, os.stat(path).st_mode & 0o7777)
        os.rename(tmp, path)
        print("%s: generated block updated%s" % (
            path, " (now run: %s)" % self.after_write if self.after_write else ""))
        return 0
