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
_STATE_TENSORS = ("latent", "base_latent", "denoised", "result", "sigma_map", "base_sigma_map", "times_map")


class SessionFileError(ValueError):
    """A session file that is missing, damaged or does not fit the model."""


def save_session(session, path) -> None:
    from safetensors.torch import save_file

    path = Path(path)
    state = session._state
    doc = {
        "format": FORMAT, "version": VERSION, "node": session.node,
        "parameters": session.parameters(),
        "base": session.base.to_dict(),
        "regions": [{"config": r.config.to_dict(), "variation_seed": r.variation_seed,
                     "variation_strength": r.variation_strength, "variation_method": r.variation_method}
                    for r in session.regions],
        "batch_index": session._batch_index,
        "latent_channels": int(session.model.latent_channels),
        "cursor": state.cursor,
        "state": {"sigma": state.sigma, "sigma_next": state.sigma_next, "model_calls": state.model_calls,
                  "passes": list(state.passes)},
    }
    tensors = {"latent_image": session.latent_image.contiguous().clone()}
    for name in _STATE_TENSORS:
        value = getattr(state, name)
        if value is not None:
            tensors[f"state.{name}"] = value.contiguous().clone()  # safetensors refuses shared storage
    tmp = Path(tempfile.mkdtemp(prefix=".session-", dir=path.parent if path.parent.exists() else None))
    try:
        (tmp / "session.json").write_text(json.dumps(doc, indent=2))
        np.savez(tmp / "masks.npz", **{f"region_{j}": r.mask for j, r in enumerate(session.regions, 1)})
        save_file(tensors, str(tmp / "latents.safetensors"))
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _read(path: Path):
    from safetensors.torch import load_file

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


def load_session(cls, path, model):
    from ..regional import SamplerConfig, RunState
    from ..session import Region

    doc, masks, tensors = _read(Path(path))
    try:
        regions_doc = doc["regions"]
        if len(masks) != len(regions_doc):
            raise SessionFileError(f"masks.npz: {len(masks)} masks for {len(regions_doc)} regions")
        if doc["latent_channels"] != model.latent_channels:
            raise SessionFileError(f"model: the session was saved with a {doc['latent_channels']}-channel model, "
                                   f"this one has {model.latent_channels}")
        regions = [Region(masks[f"region_{j}"], SamplerConfig(**r["config"]), r["variation_seed"],
                          r["variation_strength"], r["variation_method"]) for j, r in enumerate(regions_doc, 1)]
        latent = tensors["latent_image"]
        if doc.get("batch_index") is not None:
            latent = {"samples": latent, "batch_index": doc["batch_index"]}
        session = cls(model, latent, base=SamplerConfig(**doc["base"]), regions=regions, node=doc["node"],
                      **doc["parameters"])
        cursor = doc["cursor"]
        if not isinstance(cursor, int) or not 0 <= cursor <= len(session._ops):
            raise SessionFileError(f"session.json: cursor {cursor!r} is outside this run's 0..{len(session._ops)}")
        extra = doc["state"]
        state = RunState(**{name: tensors.get(f"state.{name}") for name in _STATE_TENSORS}, cursor=cursor,
                         sigma=extra["sigma"], sigma_next=extra["sigma_next"], model_calls=extra["model_calls"],
                         passes=tuple(extra["passes"]))
        if state.latent is None or state.latent.shape != session.latent_image.shape:
            raise SessionFileError("latents.safetensors: the saved state does not match the latent's shape")
    except SessionFileError:
        raise
    except (KeyError, TypeError, ValueError) as err:
        raise SessionFileError(f"session file: invalid content ({type(err).__name__}: {err})") from None
    if cursor:
        session._history = [session._history[0]] + [None] * (cursor - 1) + [state]
        session._sealed = cursor
        session._state = state
        session._publish(state)
    return session
