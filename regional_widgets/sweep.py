"""Studies over parameter grids: every cell is the session with some values changed, run to the end.

``rw.sweep(session, grid={"sampler": [...], "mode": [...]})`` makes one cell per combination (the
product of the grid's value lists, in grid order), runs each cell to the end and measures it. What
a worker receives is plain data: the session described as a JSON-able dict plus its arrays
(latent, masks), the cell's values, and the model's *spec* (`models.spec`); each worker builds the
model once from the spec. A cell is a pure function of that data (its seeds are the session's, on
one torch thread), so a process pool, a Dask cluster and a serial loop give the same bits.

Grid keys are checked before any work (`sweep_grid`); one cell runs in `sweep_cells`; finished
cells are kept in a store folder (`sweep_store`) and drawn by `sweep_figures`.

Dask and pandas are imported only when a sweep runs or is tabled (the ``sweep`` extra).
"""
from __future__ import annotations

import itertools
import os
import sys
import threading
import time
import warnings
from typing import Optional

import numpy as np
import torch

from .models.spec import spec_of
from .params import ParameterError
from .sampling.checks import is_int
from .session import RegionalSamplerSession
from .sweep_cells import _dask_cell, _dask_plugin, _pool_cell, _warm, is_dask_client, one_thread, run_cell
from .sweep_grid import METRICS, REGION_KEYS, apply, build, cell_name, check_cells, check_grid, describe, fingerprint
# names that lived here before the split (benchmarks/sweep.py imports worker_model from here)
from .sweep_cells import THUMBNAIL, _MODELS, sigma_spread, thumbnail, worker_model  # noqa: F401
from .sweep_grid import CONFIG_KEYS  # noqa: F401

__all__ = ["Sweep", "sweep", "METRICS", "REGION_KEYS"]

FORMAT_VERSION = 1


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
