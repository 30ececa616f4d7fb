"""One sweep cell, run in this process or in a worker: one torch thread, the model built once per
worker process from its spec, the measurements (`METRICS`) and the entry points a process pool
and a Dask cluster call.

A cell is a pure function of plain data (the session's description with the cell's values, its
arrays and the model's spec; its seeds are the session's, on one torch thread), so a process
pool, a Dask cluster and a serial loop give the same bits.
"""
from __future__ import annotations

import contextlib
import threading
import time
from typing import Optional

import numpy as np
import torch

from .models.spec import from_spec, spec_key
from .sweep_grid import METRICS, apply, build

THUMBNAIL = 96  # pixels, the longest side

# ---- one cell ---------------------------------------------------------------------------------

_threads_lock = threading.Lock()
_threads_users = [0, None]  # active cells, the thread count to restore


@contextlib.contextmanager
def one_thread():
    """Cells run on one torch thread: float reductions then do not depend on the machine's cores."""
    with _threads_lock:
        if _threads_users[0] == 0:
            _threads_users[1] = torch.get_num_threads()
            torch.set_num_threads(1)
        _threads_users[0] += 1
    try:
        yield
    finally:
        with _threads_lock:
            _threads_users[0] -= 1
            if _threads_users[0] == 0 and _threads_users[1] != 1:
                torch.set_num_threads(_threads_users[1])


def sigma_spread(sigma_map) -> Optional[float]:
    """(max - min) / max of an effective-sigma map: 0 when every pixel carries one noise level."""
    top = float(sigma_map.max())
    return (top - float(sigma_map.min())) / top if top > 0 else None


def thumbnail(model, latent) -> np.ndarray:
    """The decoded latent as uint8 RGB, at most `THUMBNAIL` pixels a side. ``latent`` is what to show:
    a finished cell passes `plot.picture` of its result (a flow result's leftover noise at its level)."""
    from PIL import Image

    rgb = model.decode(latent)[0].clamp(0, 1).float().cpu().numpy()
    image = Image.fromarray((rgb * 255 + 0.5).astype(np.uint8))
    image.thumbnail((THUMBNAIL, THUMBNAIL), Image.Resampling.LANCZOS)
    return np.asarray(image).copy()


def run_cell(model, doc: dict, arrays: dict, metrics=METRICS, save: bool = False) -> dict:
    """Run one cell (``doc`` already holds its values) to the end and measure it.

    Returns plain data: ``result`` (numpy), the metrics asked for, and with ``save`` the files of
    the finished session (`RegionalSamplerSession.save`) as ``{name: bytes}``.
    """
    from .compare import detail_ratios
    from .plot import picture

    with one_thread():
        session = build(model, doc, arrays, history_limit=0)  # a cell needs no scrubbing history
        start = time.perf_counter()
        spreads = []
        while not session.done:
            session.step()
            spreads.append(sigma_spread(session.sigma_map))
        wall = time.perf_counter() - start
        out = {"result": session.result.detach().cpu().numpy()}
        if "sigma_spread" in metrics:
            spreads = [s for s in spreads if s is not None]
            out["sigma_spread"] = float(np.mean(spreads)) if spreads else 0.0
        if "model_calls" in metrics:
            out["model_calls"] = int(session.history[-1].model_calls)
        if "wall_s" in metrics:
            out["wall_s"] = wall
        if "detail" in metrics:
            out["detail"] = [float(r) for r in detail_ratios(session)]
        if "thumbnail" in metrics:
            out["thumbnail"] = thumbnail(model, picture(session, "result"))  # as the CLI's --out shows it
        if save:
            out["files"] = _saved_files(session)
    return out


def _saved_files(session) -> dict:
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory(prefix="rw-cell-") as tmp:
        folder = Path(tmp) / "session"
        session.save(folder)
        return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


# ---- workers ------------------------------------------------------------------------------------

_MODELS: dict = {}  # spec key -> model, one per worker process
_MODELS_LOCK = threading.Lock()


def worker_model(spec: dict):
    """The model a spec describes, built once per process."""
    key = spec_key(spec)
    with _MODELS_LOCK:
        if key not in _MODELS:
            with one_thread():  # as in the cells: the model's own tables come out the same everywhere
                _MODELS[key] = from_spec(spec)
        return _MODELS[key]


def _warm(spec):
    worker_model(spec)


def _pool_cell(spec, doc, arrays, metrics, save):
    return run_cell(worker_model(spec), doc, arrays, metrics, save)


def _dask_cell(spec, payload, values, regions, metrics, save):
    doc, arrays = payload
    return run_cell(worker_model(spec), apply(doc, values, regions), arrays, metrics, save)


_PLUGIN_CLASS = None


def _dask_plugin(spec):
    """A worker plugin that builds the model when a worker starts (or joins later)."""
    global _PLUGIN_CLASS
    if _PLUGIN_CLASS is None:
        from distributed import WorkerPlugin

        class ModelPlugin(WorkerPlugin):
            def __init__(self, spec):
                self.spec = spec

            def setup(self, worker):
                from regional_widgets.sweep_cells import worker_model

                worker_model(self.spec)

        _PLUGIN_CLASS = ModelPlugin
    return _PLUGIN_CLASS(spec)


def is_dask_client(executor) -> bool:
    return type(executor).__name__ == "Client" and type(executor).__module__.startswith("distributed")
