"""A sweep's store: a folder with one ``<name>.safetensors`` per finished cell (its final latent and
thumbnail, the cell's fingerprint in the header), ``<name>.session/`` (the finished session, for
`Sweep.open`) and ``sweep.json`` (the index: the session's fingerprint, each cell's values and
metrics). The index is written atomically before a cell's files (listing the cell as incomplete,
so its files are known to be ours) and after them (complete): a cell counts as finished only once
it is listed complete, so an interrupted sweep resumes where it stopped.

Writes go through `io.paths` (inside the folder, no symlinks, atomic). Files the index does not
list are never replaced or removed: a name taken by a foreign file raises `FileSafetyError`.
"""
from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
from pathlib import Path

import numpy as np
import torch

from .io.paths import FileSafetyError, inside, parse_json, read_bytes, write_atomic

FORMAT = "regional_widgets.sweep"
VERSION = 1
INDEX = "sweep.json"
MAX_INDEX_BYTES = 64 * 2**20
MAX_CELL_BYTES = 2**30


def _metrics_to_json(metrics: dict) -> dict:
    """NaN (a detail ratio that is not meaningful: `compare.detail_ratios`) stored as JSON null."""
    def plain(v):
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return None if isinstance(v, float) and v != v else v
    return {k: plain(v) for k, v in metrics.items()}


def _metrics_from_json(metrics: dict) -> dict:
    """The stored metrics with JSON null in the detail ratios read back as NaN."""
    def number(v):
        if isinstance(v, list):
            return [number(x) for x in v]
        return float("nan") if v is None else v
    return {k: number(v) if k == "detail" else v for k, v in metrics.items()}


class StoreMismatchError(ValueError):
    """The store holds a study of another session (or is not a sweep store)."""


class SweepStore:
    def __init__(self, folder, session_fingerprint: str, description: dict):
        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise FileSafetyError(f"{str(self.folder)!r}: exists and is not a folder")
        self.folder.mkdir(parents=True, exist_ok=True)
        self._had_index = inside(self.folder, INDEX).exists()
        if self._had_index:
            index = parse_json(read_bytes(self.folder, INDEX, MAX_INDEX_BYTES))
            if not isinstance(index, dict) or index.get("format") != FORMAT or not isinstance(index.get("cells"), dict):
                raise StoreMismatchError(f"{str(self.folder)!r}: {INDEX} is not a sweep index written by "
                                         "regional_widgets; choose another folder")
            if index.get("session") != session_fingerprint:
                raise StoreMismatchError(f"{str(self.folder)!r}: holds a sweep of another session (fingerprint "
                                         f"{str(index.get('session'))[:12]}, this one {session_fingerprint[:12]}); "
                                         "choose another folder for this study")
            self.index = index
        else:
            self.index = {"format": FORMAT, "version": VERSION, "session": session_fingerprint,
                          "description": description, "cells": {}}

    @property
    def cells(self) -> dict:
        return self.index["cells"]

    def _ours(self, name) -> bool:
        return name in self.cells

    # ---- reading --------------------------------------------------------------------------------

    def load_cell(self, name: str, cell_fingerprint: str, metrics) -> dict | None:
        """The stored cell (``result``, ``thumbnail``, metrics) if it matches the fingerprint and
        holds every metric asked for; None otherwise (the cell is then computed again)."""
        entry = self.cells.get(name)
        if not entry or not entry.get("complete") or entry.get("fingerprint") != cell_fingerprint:
            return None
        scalars = [m for m in metrics if m != "thumbnail"]
        if any(m not in entry.get("metrics", {}) for m in scalars):
            return None
        try:
            tensors, meta = _read_safetensors(read_bytes(self.folder, f"{name}.safetensors", MAX_CELL_BYTES))
            if not inside(self.folder, f"{name}.session").is_dir():
                return None
        except (OSError, ValueError):
            return None
        if meta.get("fingerprint") != cell_fingerprint or "result" not in tensors:
            return None
        if "thumbnail" in metrics and "thumbnail" not in tensors:
            return None
        out = dict(_metrics_from_json(entry["metrics"]), result=tensors["result"])
        if "thumbnail" in tensors:
            out["thumbnail"] = tensors["thumbnail"]
        return out

    def open_cell(self, name: str, model):
        """The finished session of a stored cell (None when its folder is missing)."""
        from .session import RegionalSamplerSession

        path = inside(self.folder, f"{name}.session")
        if not path.is_dir():
            return None
        session = RegionalSamplerSession.load(path, model)
        return session if session.done else None

    # ---- writing --------------------------------------------------------------------------------

    def check_free(self, name: str):
        """Raise `FileSafetyError` if a cell's file names are taken by files this store did not write."""
        if self._ours(name):
            return
        for file_name in (f"{name}.safetensors", f"{name}.session"):
            if inside(self.folder, file_name).exists():
                raise FileSafetyError(f"{file_name!r}: already exists in {str(self.folder)!r} and was not written by "
                                      "regional_widgets; not overwritten (remove it or choose another store)")

    def write_cell(self, name: str, cell_fingerprint: str, values: dict, out: dict, files: dict | None):
        """Write a finished cell's files, then list it in the index (atomically)."""
        from safetensors.torch import save

        ours = self._ours(name)
        self.check_free(name)
        metrics = {k: v for k, v in out.items() if k not in ("result", "thumbnail")}
        # listed (as incomplete) before its files are written: a crash in between leaves files that
        # are known to be ours, replaced on the next run
        self.cells[name] = {"fingerprint": cell_fingerprint, "values": values, "metrics": _metrics_to_json(metrics),
                            "files": [f"{name}.safetensors", f"{name}.session"], "complete": False}
        self._write_index()
        tensors = {"result": torch.from_numpy(np.ascontiguousarray(out["result"]))}
        if out.get("thumbnail") is not None:
            tensors["thumbnail"] = torch.from_numpy(np.ascontiguousarray(out["thumbnail"]))
        meta = {"format": FORMAT, "fingerprint": cell_fingerprint, "values": json.dumps(values)}
        write_atomic(self.folder, f"{name}.safetensors", save(tensors, metadata=meta), replace_ok=lambda _: ours)
        if files is not None:
            self._write_folder(f"{name}.session", files)
        self.cells[name]["complete"] = True
        self._write_index()

    def _write_index(self):
        data = json.dumps(self.index, indent=1, allow_nan=False).encode()
        write_atomic(self.folder, INDEX, data, replace_ok=lambda _: self._had_index)
        self._had_index = True

    def _write_folder(self, folder_name: str, files: dict):
        """A folder written whole under a temporary name, then renamed into place (an old one of
        ours is replaced)."""
        final = inside(self.folder, folder_name)
        tmp = Path(tempfile.mkdtemp(prefix=".rw-", suffix=".tmp", dir=self.folder))
        try:
            for file_name, data in files.items():
                write_atomic(tmp, file_name, data)
            old = None
            if final.exists():  # ours, from an earlier run with other settings
                old = Path(tempfile.mkdtemp(prefix=".rw-", suffix=".old", dir=self.folder))
                os.replace(final, old / "cell")
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _read_safetensors(data: bytes) -> tuple:
    """(tensors, metadata) from safetensors bytes."""
    from safetensors.torch import load

    if len(data) < 8:
        raise ValueError("safetensors: truncated")
    (size,) = struct.unpack("<Q", data[:8])
    if size > len(data) - 8:
        raise ValueError("safetensors: header larger than the file")
    header = parse_json(data[8:8 + size])
    meta = header.get("__metadata__", {}) if isinstance(header, dict) else {}
    return {k: v.numpy() for k, v in load(data).items()}, meta
