"""Studies over parameter grids: every cell is the session with some values changed, run to the end.

``rw.sweep(session, grid={"sampler": [...], "mode": [...]})`` makes one cell per combination (the
product of the grid's value lists, in grid order), runs each cell to the end and measures it. What
a worker receives is plain data: the session described as a JSON-able dict plus its arrays
(latent, masks), the cell's values, and the model's *spec* (`models.spec`); each worker builds the
model once from the spec. A cell is a pure function of that data (its seeds are the session's, on
one torch thread), so a process pool, a Dask cluster and a serial loop give the same bits.

Grid keys are checked before any work, by the session's own parameter checks: each value is tried
on a session built from the description, then every cell is built once (the cross-parameter rules).

Dask and pandas are imported only here, when a sweep runs (the ``sweep`` extra).
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import json
import os
import re
import sys
import threading
import time
import warnings
from typing import Optional

import numpy as np
import torch

from .models.spec import from_spec, spec_key, spec_of
from .params import ParameterError
from .node_params import Quirks, SamplerConfig
from .sampling.checks import is_int
from .session import Region, RegionalSamplerSession

__all__ = ["Sweep", "sweep", "METRICS", "REGION_KEYS"]

METRICS = ("detail", "sigma_spread", "model_calls", "wall_s", "thumbnail")
CONFIG_KEYS = tuple(f.name for f in dataclasses.fields(SamplerConfig))
REGION_KEYS = CONFIG_KEYS + ("variation_seed", "variation_strength", "variation_method")
THUMBNAIL = 96  # pixels, the longest side
FORMAT_VERSION = 1


# ---- the session as plain data ------------------------------------------------------------------


def describe(session) -> tuple:
    """``(doc, arrays)``: the session's settings as JSON-able data and its latent and masks as arrays."""
    doc = {"node": session.node, "mode": session.mode, "parameters": _plain(session.parameters()),
           "base": session.base.to_dict(), "quirks": session.quirks.to_dict(),
           # a dict latent's batch_index changes the noise, so it travels too
           "batch_index": session.batch_index,
           "regions": [{"config": r.config.to_dict(), "variation_seed": r.variation_seed,
                        "variation_strength": r.variation_strength, "variation_method": r.variation_method}
                       for r in session.regions]}
    arrays = {"latent_image": session.latent_image.detach().cpu().numpy()}
    arrays.update({f"mask_{j}": np.asarray(r.mask) for j, r in enumerate(session.regions, 1)})
    return doc, arrays


def apply(doc: dict, values: dict, regions) -> dict:
    """``doc`` with a cell's values in place: session parameters, ``base.<field>``, or region
    parameters for the 1-based ``regions``."""
    doc = json.loads(json.dumps(doc))
    for key, value in values.items():
        if key == "mode":
            doc["mode"] = value
        elif key.startswith("base."):
            doc["base"][key[5:]] = value
        elif key in REGION_KEYS:
            for j in regions:
                target = doc["regions"][j - 1]
                (target["config"] if key in CONFIG_KEYS else target)[key] = value
        else:
            doc["parameters"][key] = value
    return doc


def build(model, doc: dict, arrays: dict, history_limit: Optional[int] = None) -> RegionalSamplerSession:
    """A fresh session (at its start) from `describe`'s data."""
    regions = [Region(arrays[f"mask_{j}"], SamplerConfig(**r["config"]), r["variation_seed"], r["variation_strength"],
                      r["variation_method"]) for j, r in enumerate(doc["regions"], 1)]
    latent = torch.from_numpy(np.array(arrays["latent_image"]))
    if doc.get("batch_index") is not None:
        latent = {"samples": latent, "batch_index": doc["batch_index"]}
    session = RegionalSamplerSession(model, latent, base=SamplerConfig(**doc["base"]), regions=regions,
                                     node=doc["node"], quirks=Quirks(**doc["quirks"]), mode=doc["mode"],
                                     **doc["parameters"])
    if history_limit is not None:
        session.history_limit = history_limit
    return session


def _plain(value):
    """numpy scalars as Python ones (JSON and fingerprints see one type per value)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value.item() if isinstance(value, np.generic) else value


def fingerprint(*parts) -> str:
    """sha256 of JSON parts and arrays (their dtype, shape and bytes)."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            array = np.ascontiguousarray(part)
            digest.update(f"{array.dtype.str}{array.shape}".encode())
            digest.update(array.tobytes())
        else:
            digest.update(json.dumps(part, sort_keys=True, separators=(",", ":")).encode())
    return digest.hexdigest()


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
    """The decoded latent as uint8 RGB, at most `THUMBNAIL` pixels a side."""
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
            out["thumbnail"] = thumbnail(model, session.result)
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
                from regional_widgets.sweep import worker_model

                worker_model(self.spec)

        _PLUGIN_CLASS = ModelPlugin
    return _PLUGIN_CLASS(spec)


def is_dask_client(executor) -> bool:
    return type(executor).__name__ == "Client" and type(executor).__module__.startswith("distributed")


# ---- the grid ---------------------------------------------------------------------------------


def check_grid(session, grid, regions, metrics) -> tuple:
    """``(grid, regions, metrics)`` normalised; raises `ParameterError` naming the key and what it accepts."""
    if not isinstance(grid, dict) or not grid:
        raise ParameterError("grid: expected a dict {parameter name: [values]} with at least one key")
    count = len(session.regions)
    if isinstance(regions, str) and regions == "all":
        regions = tuple(range(1, count + 1))
    elif isinstance(regions, (list, tuple)) and all(is_int(j, 1, count) for j in regions) and regions:
        regions = tuple(sorted(set(int(j) for j in regions)))
    else:
        raise ParameterError(f"regions: expected 'all' or a list of region numbers in 1..{count}, got {regions!r}")
    session_keys = tuple(session.parameters()) + ("mode",)
    accepted = session_keys + REGION_KEYS + tuple(f"base.{k}" for k in CONFIG_KEYS)
    out = {}
    for key, values in grid.items():
        if key not in accepted:
            raise ParameterError(f"grid: unknown key {key!r} for a {session.node} session; accepted: "
                                 f"{', '.join(session_keys)} (the session), {', '.join(REGION_KEYS)} "
                                 f"(applied to the chosen regions), base.<{'|'.join(CONFIG_KEYS)}> (the base)")
        if key in REGION_KEYS and not regions:
            raise ParameterError(f"grid: {key!r} is a region parameter but the session has no regions")
        if isinstance(values, (str, bytes)) or not isinstance(values, (list, tuple, np.ndarray)) or len(values) == 0:
            raise ParameterError(f"grid[{key!r}]: expected a non-empty list of values, got {values!r}")
        values = tuple(_plain(v) for v in values)
        for v in values:
            if not isinstance(v, (str, int, float, bool)):
                raise ParameterError(f"grid[{key!r}]: values must be plain numbers, strings or booleans, got {v!r}")
        if len(set(map(repr, values))) != len(values):
            raise ParameterError(f"grid[{key!r}]: a value is listed twice: {list(values)}")
        out[key] = values
    has_exemplars = hasattr(session.model.encode(""), "exemplars")
    if metrics is None:
        metrics = tuple(m for m in METRICS if m != "detail" or (has_exemplars and session.regions))
    else:
        metrics = (metrics,) if isinstance(metrics, str) else tuple(metrics)
        unknown = [m for m in metrics if m not in METRICS]
        if unknown:
            raise ParameterError(f"metrics: unknown {unknown[0]!r}; accepted: {', '.join(METRICS)}")
        if "detail" in metrics and not (has_exemplars and session.regions):
            raise ParameterError("metrics: 'detail' needs regions and a model that knows its exemplars (ToyWorld)")
    return out, regions, metrics


def check_cells(session, doc, arrays, grid, regions, cells):
    """Every value, then every cell, through the session's own checks (nothing runs: a session
    is built at its start)."""
    model = session.model

    def attempt(values, where):
        try:
            build(model, apply(doc, values, regions), arrays)
        except (ParameterError, ValueError) as err:
            raise ParameterError(f"{where}: {err}") from None

    for key, values in grid.items():
        for v in values:
            attempt({key: v}, f"grid[{key!r}]: value {v!r}")
    if len(grid) > 1:
        for values in cells:
            attempt(values, f"grid cell {values}")


def cell_name(values: dict) -> str:
    """A file name from a cell's values (plus a short hash: two values that read alike stay apart)."""
    def slug(text):
        return re.sub(r"[^A-Za-z0-9._=+-]+", "-", str(text)).strip("-") or "_"

    readable = "__".join(f"{slug(k)}={slug(v)}" for k, v in values.items())[:150]
    return f"{readable}-{fingerprint(values)[:8]}"


# ---- the sweep ----------------------------------------------------------------------------------


class Sweep:
    """A study: one cell per combination of the grid's values, each the session run to the end.

    ``table`` (pandas) has one row per cell in grid order; ``grid_figure`` draws an XY grid of
    images or a heat map of a metric; ``open(i)`` gives a cell's finished session. Build it with
    `sweep`; ``run()`` computes what is missing (again after a stop), ``stop()`` cancels pending
    cells (from another thread, e.g. a Stop button) and keeps the finished ones.
    """

    def __init__(self, session, grid, *, regions="all", metrics=None, executor=None, store=None):
        self.session = session
        self.grid, self.regions, self.metrics = check_grid(session, grid, regions, metrics)
        self.keys = tuple(self.grid)
        self.cells = [dict(zip(self.keys, combo)) for combo in itertools.product(*self.grid.values())]
        self._doc, self._arrays = describe(session)
        check_cells(session, self._doc, self._arrays, self.grid, self.regions, self.cells)
        self.executor = executor
        self._spec = spec_of(session.model)
        self._check_executor()
        model_id = self._spec if self._spec is not None else f"{type(session.model).__module__}." \
                                                              f"{type(session.model).__qualname__}"
        self.fingerprint = fingerprint({"format": FORMAT_VERSION, "doc": self._doc, "model": model_id},
                                       *(self._arrays[k] for k in sorted(self._arrays)))
        self.names = [cell_name(v) for v in self.cells]
        self._cell_fps = [fingerprint(self.fingerprint, v, list(self.regions)) for v in self.cells]
        self.results: list = [None] * len(self.cells)  # per cell: its metrics and ``result`` latent, or None
        self.status = ["pending"] * len(self.cells)
        self.errors: dict = {}
        self._stop = threading.Event()
        self.store = None
        if store is not None:
            from .sweep_store import SweepStore

            self.store = SweepStore(store, self.fingerprint, self._doc)
            for i in range(len(self.cells)):
                found = self.store.load_cell(self.names[i], self._cell_fps[i], self.metrics)
                if found is not None:
                    self.results[i], self.status[i] = found, "done"
                else:
                    self.store.check_free(self.names[i])  # before any work

    def _check_executor(self):
        ex = self.executor
        if ex is None or (isinstance(ex, str) and ex == "serial"):
            return
        from concurrent.futures import Executor

        if not (isinstance(ex, Executor) or is_dask_client(ex)):
            raise ParameterError(f"executor: expected None (a local process pool), 'serial', a "
                                 f"concurrent.futures.Executor or a dask distributed.Client, got {ex!r}")
        if self._spec is None:
            raise ParameterError(f"executor: {type(self.session.model).__name__} has no spec (models.spec), so "
                                 "workers cannot build it; use executor='serial' or give the model a .spec")

    # ---- running --------------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        return all(s == "done" for s in self.status)

    def stop(self):
        """Cancel the pending cells (thread-safe); finished cells are kept, ``run()`` resumes."""
        self._stop.set()

    def run(self, progress: bool = True, on_cell=None) -> "Sweep":
        """Compute every cell not done yet. ``on_cell(i)`` is called as each cell finishes.

        Interrupted (KeyboardInterrupt) or stopped: pending cells are cancelled, finished cells
        kept (and stored); the interrupt is raised again, a stop returns.
        """
        self._stop.clear()
        todo = [i for i, s in enumerate(self.status) if s != "done"]
        if not todo:
            return self
        for i in todo:
            self.errors.pop(i, None)
            self.status[i] = "pending"
        ex = self.executor
        if ex is None and self._spec is None:
            warnings.warn(f"{type(self.session.model).__name__} has no spec: running the cells serially",
                          stacklevel=2)
            ex = "serial"
        bar = self._progress_bar(len(todo)) if progress and not (is_dask_client(ex) and _in_notebook()) else None
        try:
            if isinstance(ex, str):
                self._run_serial(todo, bar, on_cell)
            elif is_dask_client(ex):
                self._run_dask(ex, todo, bar, on_cell, progress)
            elif ex is None:
                from concurrent.futures import ProcessPoolExecutor
                import multiprocessing

                workers = min(len(todo), os.cpu_count() or 1)
                pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                           initializer=_warm, initargs=(self._spec,))
                try:
                    self._run_futures(pool.submit, todo, bar, on_cell)
                finally:
                    pool.shutdown(wait=False, cancel_futures=True)
            else:
                self._run_futures(ex.submit, todo, bar, on_cell)
        finally:
            if bar is not None:
                bar.close()
            for i in todo:
                if self.status[i] == "pending":
                    self.status[i] = "cancelled"
        if self.errors:
            first = next(iter(self.errors.items()))
            warnings.warn(f"{len(self.errors)} cell(s) failed; cell {first[0]}: {first[1]}", stacklevel=2)
        return self

    def _progress_bar(self, total):
        from tqdm.auto import tqdm

        return tqdm(total=total, desc="sweep", unit="cell")

    def _run_serial(self, todo, bar, on_cell):
        for i in todo:
            if self._stop.is_set():
                return
            try:
                out = run_cell(self.session.model, apply(self._doc, self.cells[i], self.regions), self._arrays,
                               self.metrics, save=self.store is not None)
            except Exception as err:  # noqa: BLE001 - a failing cell is reported, the others go on
                out = err
            self._finish(i, out, bar, on_cell)

    def _run_futures(self, submit, todo, bar, on_cell):
        futures = {i: submit(_pool_cell, self._spec, apply(self._doc, self.cells[i], self.regions), self._arrays,
                             self.metrics, self.store is not None) for i in todo}
        self._collect(futures, bar, on_cell)

    def _run_dask(self, client, todo, bar, on_cell, progress):
        client.register_plugin(_dask_plugin(self._spec), name=f"regional-widgets-model-{fingerprint(self._spec)[:16]}")
        # hash=False: a fresh key per run (a stopped run releases its copy while the next one scatters)
        payload = client.scatter([(self._doc, self._arrays)], broadcast=True, hash=False)[0]
        futures = {i: client.submit(_dask_cell, self._spec, payload, self.cells[i], self.regions, self.metrics,
                                    self.store is not None, key=f"rw-cell-{i}-{os.urandom(6).hex()}", pure=False)
                   for i in todo}
        if progress and bar is None:
            from distributed import progress as dask_progress

            from IPython.display import display

            display(dask_progress(list(futures.values()), notebook=True))
        self._collect(futures, bar, on_cell)

    def _collect(self, futures, bar, on_cell):
        """Poll the futures (concurrent.futures and Dask alike) until done, stopped or interrupted."""
        pending = dict(futures)
        try:
            while pending:
                if self._stop.is_set():
                    break
                finished = [i for i, f in pending.items() if f.done()]
                if not finished:
                    time.sleep(0.01)
                    continue
                for i in finished:
                    future = pending.pop(i)
                    try:
                        out = future.result()
                    except Exception as err:  # noqa: BLE001 - reported per cell
                        out = err
                    self._finish(i, out, bar, on_cell)
        finally:
            for future in pending.values():
                future.cancel()

    def _finish(self, i, out, bar, on_cell):
        if isinstance(out, BaseException):
            self.status[i], self.errors[i] = "error", f"{type(out).__name__}: {out}"
        else:
            files = out.pop("files", None)
            if self.store is not None:
                self.store.write_cell(self.names[i], self._cell_fps[i], self.cells[i], out, files)
            self.results[i], self.status[i] = out, "done"
        if bar is not None:
            bar.update(1)
        if on_cell is not None:
            on_cell(i)

    # ---- results --------------------------------------------------------------------------------

    def __len__(self):
        return len(self.cells)

    @property
    def table(self):
        """A pandas DataFrame: one row per cell in grid order, the grid's keys as columns, then
        ``status``, the metrics (``detail`` is the regions' mean, ``detail_j`` region j's) and ``name``."""
        import pandas as pd

        rows = []
        for i, values in enumerate(self.cells):
            row = dict(values, status=self.status[i])
            out = self.results[i] or {}
            if "detail" in self.metrics:
                ratios = out.get("detail") or [np.nan] * len(self.regions)
                row["detail"] = float(np.mean(ratios))
                row.update({f"detail_{j}": r for j, r in zip(self.regions, ratios)})
            for m in ("sigma_spread", "model_calls", "wall_s"):
                if m in self.metrics:
                    row[m] = out.get(m, np.nan)
            row["name"] = self.names[i]
            rows.append(row)
        return pd.DataFrame(rows)

    def result(self, i) -> Optional[torch.Tensor]:
        """Cell ``i``'s final latent (None until it is done)."""
        out = self.results[i]
        return None if out is None else torch.from_numpy(np.array(out["result"]))

    def open(self, i) -> RegionalSamplerSession:
        """Cell ``i`` (a row position) as a session run to the end: read from the store when it
        holds the cell, else built and run here."""
        if not is_int(i, -len(self), len(self) - 1):
            raise IndexError(f"cell: expected a row position in 0..{len(self) - 1}, got {i!r}")
        i = int(i) % len(self)
        model = self.session.model
        if self.store is not None and self.status[i] == "done":
            session = self.store.open_cell(self.names[i], model)
            if session is not None:
                return session
        session = build(model, apply(self._doc, self.cells[i], self.regions), self._arrays,
                        history_limit=self.session.history_limit)
        with one_thread():
            session.run()
        return session

    def grid_figure(self, x: str, y: Optional[str] = None, value: str = "image", where: Optional[dict] = None,
                    ax=None):
        """An XY grid over two grid keys: thumbnails (``value="image"``) or a heat map of a metric
        (a `table` column). Keys not on an axis are fixed by ``where`` ({key: value}); otherwise a
        heat map averages over them and an image grid shows their first value (the title says which).
        Returns the figure, with the heat map's numbers ([y, x]) as ``values``; given ``ax`` (a heat
        map into an existing figure), returns ``ax`` with ``ax.values``."""
        from .sweep_figures import grid_figure

        return grid_figure(self, x, y, value, where, ax)

    def __repr__(self):
        done = sum(s == "done" for s in self.status)
        shape = " x ".join(f"{len(v)} {k}" for k, v in self.grid.items())
        return f"<Sweep {shape} = {len(self)} cells, {done} done>"


def _in_notebook() -> bool:
    shell = sys.modules.get("IPython")
    try:
        return shell is not None and type(shell.get_ipython()).__name__ == "ZMQInteractiveShell"
    except AttributeError:
        return False


def sweep(session, grid: dict, *, regions="all", metrics=None, executor=None, store=None, progress: bool = True,
          run: bool = True) -> Sweep:
    """Run ``session`` once per combination of ``grid``'s values and measure each run.

    grid: ``{name: [values]}``; names are the session's parameters (``noise_seed`` for the Advanced
    node, ``seed`` for the other, ``mode``, ``steps``, ``overlap_factor``, ...), region parameters
    (`REGION_KEYS`: ``sampler``, ``scheduler``, ``cfg``, ``positive``, ``variation_seed``, ...;
    applied to ``regions``, ``"all"`` or 1-based region numbers) or ``base.<field>`` for the base
    sampler. Every value and cell is checked before any work.
    metrics: any of `METRICS` (default: all that apply): per-region ``detail`` ratios
    (`rw.detail_ratios`, models with exemplars), ``sigma_spread`` (the mean over steps of the
    effective-sigma map's (max - min) / max), ``model_calls``, ``wall_s``, a ``thumbnail``.
    executor: None (a local process pool, spawn, one worker per core), ``"serial"``, any
    `concurrent.futures.Executor` or a dask ``distributed.Client``; results are the same bits.
    store: a folder: each finished cell is written there (``<name>.safetensors`` with the final
    latent and thumbnail, ``<name>.session/`` the finished session, ``sweep.json`` the index), and
    a re-run skips the cells it holds.
    run: False builds and checks the sweep without running it (``.run()`` later).
    """
    study = Sweep(session, grid, regions=regions, metrics=metrics, executor=executor, store=store)
    return study.run(progress=progress) if run else study
