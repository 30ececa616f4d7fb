"""A snapshot of a folder tree (names, bytes, mtimes, symlink targets) to show nothing changed on disk."""
import os

import pytest


def tree(folder) -> dict:
    """``{relative path: (kind, bytes or link target, mtime_ns)}`` for everything under ``folder``, links not followed."""
    out = {}
    for root, dirs, files in os.walk(folder, followlinks=False):
        for name in dirs + files:
            path = os.path.join(root, name)
            info = os.lstat(path)
            rel = os.path.relpath(path, folder)
            if os.path.islink(path):
                out[rel] = ("link", os.readlink(path), info.st_mtime_ns)
            elif os.path.isdir(path):
                out[rel] = ("dir", None, None)  # a folder's mtime moves when a temp file comes and goes
            elif not os.path.isfile(path):  # a FIFO: opening it would block
                out[rel] = ("special", info.st_mode, info.st_mtime_ns)
            else:
                with open(path, "rb") as file:
                    out[rel] = ("file", file.read(), info.st_mtime_ns)
    return out


@pytest.fixture
def unchanged():
    """``with unchanged(folder): ...``: the block may raise, but must leave the folder tree as it was."""
    import contextlib

    @contextlib.contextmanager
    def check(folder):
        before = tree(folder)
        try:
            yield
        finally:
            after = tree(folder)
            assert after.keys() == before.keys(), (sorted(set(after) ^ set(before)))
            for name in before:
                assert after[name] == before[name], name

    return check
