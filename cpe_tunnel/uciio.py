"""Reading and writing UCI files on CPython (the core parser/writer is in
cpe_tunnel.core.uci).

save() writes like `uci commit`: the new text goes to a temporary file in the same
directory, is fsync'ed, gets the old file's mode (new files: 0600, they hold
secrets) and owner, and is renamed over the target (through a symlink to the file
it points to, as libuci does); then the directory is fsync'ed.
"""

import os
import tempfile

from cpe_tunnel.core import uci


def load(path, package=None):
    """Parse the UCI file at path. The package name defaults to the file name (as
    /etc/config/NAME). OSError (e.g. FileNotFoundError) passes through; a bad file
    raises uci.UciError whose reason starts with the path."""
    if package is None:
        package = os.path.basename(path)
    with open(path, "rb") as f:
        data = f.read(uci.MAX_SIZE + 1)
    try:
        return uci.parse(data, package)
    except uci.UciError as e:
        raise uci.UciError("%s: %s" % (path, e.reason), e.line) from None


def save(path, pkg):
    """Write pkg to path in `uci commit` form, atomically."""
    data = uci.commit_text(pkg).encode("utf-8")
    target = os.path.realpath(path)
    directory = os.path.dirname(target) or "."
    try:
        st = os.stat(target)
    except FileNotFoundError:
        st = None
    fd, tmp = tempfile.mkstemp(prefix=".%s.uci-" % pkg.name, dir=directory)  # mode 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if st is not None:
                os.fchmod(f.fileno(), st.st_mode & 0o7777)
                if os.geteuid() == 0:
                    try:
                        os.fchown(f.fileno(), st.st_uid, st.st_gid)
                    except OSError:
                        pass
            os.fsync(f.fileno())
        os.rename(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)
