"""Session files: a folder with ``session.json`` (parameters), ``masks.npz`` (float32 masks, exact)
and ``latents.safetensors`` (the input latent and the state at the saved sub-step).

Loading never executes code (no pickle: ``np.load(allow_pickle=False)``, safetensors) and
validates everything before it builds the session; a damaged or mismatched file raises
`SessionFileError` naming what is wrong.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

FORMAT = "regional_widgets.session"
VERSION = 1


class SessionFileError(ValueError):
    """A session file that is missing, damaged or does not fit the model."""


def write_session(path, doc: dict, masks: dict, tensors: dict) -> None:
    """Write a session folder atomically (a temporary folder renamed into place)."""
    from safetensors.torch import save_file

    path = Path(path)
    doc = dict(doc, format=FORMAT, version=VERSION)
    # safetensors refuses tensors that share storage: store independent copies
    tensors = {k: v.detach().contiguous().clone() for k, v in tensors.items()}
    tmp = Path(tempfile.mkdtemp(prefix=".session-", dir=path.parent if path.parent.exists() else None))
    try:
        (tmp / "session.json").write_text(json.dumps(doc, indent=2))
        np.savez(tmp / "masks.npz", **masks)
        save_file(tensors, str(tmp / "latents.safetensors"))
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_session(path):
    """``(doc, masks, tensors)`` from a session folder; only the container formats are checked here."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_dir():
        raise SessionFileError(f"path: {str(path)!r} is not a session folder (expected session.json, "
                               "masks.npz and latents.safetensors inside)")
    try:
        doc = json.loads((path / "session.json").read_text())
    except (OSError, ValueError) as err:
        raise SessionFileError(f"session.json: cannot be read as JSON ({err})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("version") != VERSION:
        raise SessionFileError(f"session.json: not a {FORMAT} file of version {VERSION}")
    try:
        with np.load(path / "masks.npz", allow_pickle=False) as npz:
            masks = {k: npz[k] for k in npz.files}
    except Exception as err:  # zipfile, OSError, ValueError: all mean a damaged file
        raise SessionFileError(f"masks.npz: cannot be read ({type(err).__name__}: {err})") from None
    try:
        tensors = load_file(str(path / "latents.safetensors"))
    except Exception as err:
        raise SessionFileError(f"latents.safetensors: cannot be read ({type(err).__name__}: {err})") from None
    return doc, masks, tensors


def pack_tree(value, prefix: str, tensors: dict):
    """A JSON-able skeleton of nested dicts/lists/tuples/scalars; tensors go to ``tensors``."""
    if isinstance(value, torch.Tensor):
        tensors[prefix] = value
        return {"tensor": prefix}
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise TypeError(f"{prefix}: only string keys can be stored")
        return {"dict": {k: pack_tree(v, f"{prefix}.{k}", tensors) for k, v in value.items()}}
    if isinstance(value, (list, tuple)):
        kind = "tuple" if isinstance(value, tuple) else "list"
        return {kind: [pack_tree(v, f"{prefix}.{n}", tensors) for n, v in enumerate(value)]}
    if value is None or isinstance(value, (bool, int, float, str)):
        return {"value": value}
    raise TypeError(f"{prefix}: cannot store a {type(value).__name__}")


def unpack_tree(doc, tensors: dict):
    """The inverse of `pack_tree`; a missing tensor or an unknown node raises SessionFileError."""
    if not isinstance(doc, dict) or len(doc) != 1:
        raise SessionFileError(f"session.json: malformed stored value {str(doc)[:80]}")
    (kind, body), = doc.items()
    if kind == "tensor":
        if body not in tensors:
            raise SessionFileError(f"latents.safetensors: missing tensor {body!r}")
        return tensors[body]
    if kind == "dict":
        return {k: unpack_tree(v, tensors) for k, v in body.items()}
    if kind in ("list", "tuple"):
        items = [unpack_tree(v, tensors) for v in body]
        return tuple(items) if kind == "tuple" else items
    if kind == "value":
        return body
    raise SessionFileError(f"session.json: unknown stored kind {kind!r}")
