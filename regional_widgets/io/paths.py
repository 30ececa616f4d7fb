"""Where `io` reads and writes: inside the folder it is given, never through a symlink, atomically.

Every reader and writer in `io` goes through `inside` (and `open_read`, `read_bytes`, `read_json`,
`write_atomic`): a name must be relative, without ``..``, no component inside the folder may be a
symlink, and the real path must lie inside the folder's real path. The folder itself may be
reached through a symlink (that is the caller's choice); nothing below it may. Refusals raise
`FileSafetyError` naming the file and saying why (a symlink, outside the folder, not a regular
file, too large, a file regional_widgets did not write).

Writes go to a temporary file in the same folder (``.rw-*.tmp``, created exclusively), are
flushed and fsynced, then renamed over the target with `os.replace` (atomic), and the folder is
fsynced: a crash leaves the old file or the new one, never a mix.
"""
from __future__ import annotations

import errno
import json
import os
import re
import stat
import tempfile
from pathlib import Path, PurePosixPath

import numpy as np

NAME_MAX = 255  # bytes in one path component (Linux, macOS, Windows alike)
JSON_MAX_DEPTH = 64  # nesting of arrays/objects a JSON file may have (ours need < 20)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


class FileSafetyError(ValueError):
    """A path `io` refuses to read or write: names the file and says why."""


class FileTooLargeError(FileSafetyError):
    """A file over the size its reader allows: a damaged or hostile file rather than an unsafe path
    (the readers report it as their format's error)."""


def _relative(name) -> PurePosixPath:
    text = os.fspath(name)
    rel = PurePosixPath(text.replace("\\", "/"))
    if not text or rel.is_absolute() or re.match(r"^[A-Za-z]:", text) or ".." in rel.parts or not rel.parts:
        raise FileSafetyError(f"{text!r}: outside the folder (expected a relative name without '..')")
    for part in rel.parts:
        if len(part.encode("utf-8", "surrogateescape")) > NAME_MAX:
            raise FileSafetyError(f"{text[:60]!r}...: a name longer than {NAME_MAX} bytes")
    return rel


def inside(folder, name) -> Path:
    """``folder / name``, refusing symlinks below ``folder`` and anything outside it (it need not exist)."""
    root = Path(folder)
    try:
        real_root = root.resolve(strict=True)
    except OSError:
        raise FileSafetyError(f"{str(root)!r}: folder not found") from None
    if not real_root.is_dir():
        raise FileSafetyError(f"{str(root)!r}: not a folder")
    rel = _relative(name)
    path = real_root
    for part in rel.parts:
        path = path / part
        if path.is_symlink():
            raise FileSafetyError(f"{str(rel)!r}: is a symlink (to {os.readlink(path)!r}) inside {str(root)!r}; "
                                  "regional_widgets does not follow symlinks")
    if not path.resolve().is_relative_to(real_root):  # e.g. a mount trick; symlinks are refused above
        raise FileSafetyError(f"{str(rel)!r}: resolves outside the folder {str(root)!r}")
    return path


def _open_nofollow(path: Path, flags: int) -> int:
    """Open without following a symlink at any component below the checked root (where the OS allows)."""
    flags |= _NOFOLLOW | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        return os.open(path, flags)
    except OSError as err:
        if err.errno == errno.ELOOP or (_NOFOLLOW and path.is_symlink()):  # ELOOP: swapped for a symlink since
            raise FileSafetyError(f"{path.name!r}: is a symlink; regional_widgets does not follow symlinks") from None
        raise


def open_read(folder, name, limit: int):
    """A binary file object for ``folder / name``: a regular file of at most ``limit`` bytes."""
    path = inside(folder, name)
    if not path.exists():
        raise FileNotFoundError(f"{str(name)!r}: not found in {str(folder)!r}")
    fd = _open_nofollow(path, os.O_RDONLY)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise FileSafetyError(f"{str(name)!r}: not a regular file")
        if info.st_size > limit:
            raise FileTooLargeError(f"{str(name)!r}: {info.st_size} bytes, over the limit of {limit} bytes")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_bytes(folder, name, limit: int) -> bytes:
    with open_read(folder, name, limit) as file:
        data = file.read(limit + 1)
    if len(data) > limit:  # grew since fstat
        raise FileTooLargeError(f"{str(name)!r}: over the limit of {limit} bytes")
    return data


def json_depth(data: bytes) -> int:
    """How deeply arrays/objects nest in JSON text (strings skipped), without parsing it."""
    stripped = re.sub(rb'"[^"\\]*(?:\\.[^"\\]*)*"', b'""', data)  # each string, escapes included
    codes = np.frombuffer(stripped, np.uint8)
    opens = (codes == ord("[")) | (codes == ord("{"))
    closes = (codes == ord("]")) | (codes == ord("}"))
    steps = opens.astype(np.int64) - closes.astype(np.int64)
    return int(np.cumsum(steps).max()) if len(steps) else 0


def parse_json(data: bytes, max_depth: int = JSON_MAX_DEPTH):
    """``json.loads`` after bounding the nesting (ValueError, with the limit, when deeper)."""
    depth = json_depth(data)
    if depth > max_depth:
        raise ValueError(f"nested {depth} levels deep, over the limit of {max_depth}")
    return json.loads(data)


def fsync_folder(folder) -> None:
    if os.name == "nt":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot fsync a folder; the rename is still atomic
    finally:
        os.close(fd)


def write_atomic(folder, name, data: bytes, *, replace_ok=None) -> Path:
    """Write ``data`` to ``folder / name`` via a fsynced temporary file and `os.replace`.

    An existing target is replaced only if ``replace_ok(path)`` says it is ours; otherwise (and
    for a symlink, always) `FileSafetyError`. Returns the path written.
    """
    path = inside(folder, name)
    if path.exists() and (replace_ok is None or not replace_ok(path)):
        raise FileSafetyError(f"{str(name)!r}: already exists in {str(folder)!r} and was not written by "
                              "regional_widgets; not overwritten (remove it or choose another name)")
    fd, tmp = tempfile.mkstemp(prefix=".rw-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_folder(path.parent)
    return path
