"""Sweep throughput: cells per second, serial vs a local process pool vs a Dask LocalCluster.

    python benchmarks/sweep.py [--cells 24] [--workers 2] [--exemplars 1000]

ToyWorld 64x64 on the pixels latent, 20 steps, three regions, cfg 2 (every evaluation also runs
the unconditional branch over all exemplars: the model dominates a cell's time). The grid is
samplers x mode x noise_seed. Prints, per executor, the wall time, cells per second and the
speed-up over serial:

- ``serial``: in-process, one torch thread (as every cell runs);
- ``pool (fresh)``: ``executor=None``, the process pool `rw.sweep` starts (spawn, model built in
  each worker) and stops, startup included;
- ``pool (warm)``: a ``ProcessPoolExecutor`` already running with the model built (what a
  long-lived pool or a second sweep sees);
- ``dask (warm)``: a 2-worker LocalCluster (processes) whose worker plugin has built the model.

Dask's overhead per cell = (wall x workers - serial wall) / cells: worker time not spent in the
cells' own work (scheduling, transfers, result collection). Finally an estimate of the same sweep
on a GPU cluster from the cells' model-call counts (assumptions printed).

Run it on a quiet machine (``uptime`` load < 1.5 on 2 cores): the script prints the load.

Measured 2026-11-30 on the 2-core machine, 24 cells, load 0.66 at the start (1.67 at the end):
serial 25.2 s (0.95 cells/s); pool (fresh) 14.3 s (1.76x, ~1.9 s of it the workers' start);
pool (warm) 12.4 s (2.03x); dask (warm) 14.3 s (1.77x, 137 ms overhead per cell). Same bits on
every executor. (Earlier, under load 1.45-2.1 from other test runs: fresh pool 1.30x with a 7.2 s
start, warm pool 2.23x, dask 1.70x.)
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

import regional_widgets as rw
from regional_widgets.sweep import worker_model

SAMPLERS = ["euler", "dpmpp_2m", "lms", "euler_ancestral", "dpmpp_2m_sde", "uni_pc", "heun", "dpmpp_sde", "ddim",
            "dpm_2", "deis", "ipndm"]
METRICS = ("model_calls", "wall_s", "sigma_spread")


def scene(model):
    areas = {"grass": (slice(40, 64), slice(0, 64)), "brick": (slice(0, 24), slice(0, 28)),
             "water": (slice(0, 24), slice(36, 64))}
    regions = []
    for word, (rows, cols) in areas.items():
        mask = np.zeros((64, 64), np.float32)
        mask[rows, cols] = 1
        regions.append(rw.Region(mask, rw.SamplerConfig(sampler="euler", scheduler="karras", cfg=2.0, positive=word)))
    base = rw.SamplerConfig(sampler="euler", scheduler="karras", cfg=2.0, positive="sky")
    return rw.RegionalSamplerSession(model, rw.empty_latent(model, 64, 64), base=base, regions=regions, steps=20)


def grid_for(cells):
    seeds = 2
    samplers = SAMPLERS[:max(1, cells // (2 * seeds))]
    return {"sampler": samplers, "mode": ["faithful", "coherent"], "noise_seed": list(range(seeds))}


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def load():
    return os.getloadavg()[0]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cells", type=int, default=24)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--exemplars", type=int, default=1000)
    args = parser.parse_args()
    from distributed import Client, LocalCluster

    # procedural textures: the same model cost per call, a faster start for the fresh pool's workers
    model = rw.models.ToyWorld("pixels", n_exemplars=args.exemplars, mixture_variance=0.01, textures="procedural")
    session = scene(model)
    grid = grid_for(args.cells)
    n = int(np.prod([len(v) for v in grid.values()]))
    print(f"ToyWorld {model.spec}\n{n} cells: " + " x ".join(f"{len(v)} {k}" for k, v in grid.items())
          + f"; {args.workers} workers; {os.cpu_count()} cores; load {load():.2f} at the start")
    rows = {}

    def sweep(executor):
        return rw.sweep(session, grid, metrics=METRICS, executor=executor, progress=False)

    rows["serial"] = timed(lambda: sweep("serial"))
    serial_wall, reference = rows["serial"]
    rows["pool (fresh)"] = timed(lambda: sweep(None))
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(args.workers, mp_context=ctx, initializer=worker_model, initargs=(model.spec,)) as pool:
        list(pool.map(worker_model, [model.spec] * args.workers))  # the workers are up, each with its model
        rows["pool (warm)"] = timed(lambda: sweep(pool))
    with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        rw.sweep(session, {"sampler": ["euler"]}, metrics=METRICS, executor=client, progress=False)  # plugin: model
        rows["dask (warm)"] = timed(lambda: sweep(client))
    print(f"load {load():.2f} at the end\n")
    print(f"{'executor':14s} {'wall s':>8s} {'cells/s':>8s} {'speed-up':>9s} {'overhead/cell ms':>17s}  same bits")
    for name, (wall, result) in rows.items():
        same = all(np.array_equal(result.results[i]["result"], reference.results[i]["result"]) for i in range(n))
        overhead = "" if name == "serial" else f"{1000 * (wall * args.workers - serial_wall) / n:17.0f}"
        print(f"{name:14s} {wall:8.2f} {n / wall:8.2f} {serial_wall / wall:8.2f}x {overhead:>17s}  {same}")
    startup = rows["pool (fresh)"][0] - rows["pool (warm)"][0]
    print(f"\nthe fresh pool's start (spawn, import, model build in each worker) ~ {startup:.1f} s of its wall time")
    calls = reference.table["model_calls"]
    cell_s = reference.table["wall_s"]
    print(f"per cell: {calls.mean():.1f} model calls (faithful {calls[reference.table['mode'] == 'faithful'].mean():.0f},"
          f" coherent {calls[reference.table['mode'] == 'coherent'].mean():.0f}); serial run time per cell "
          f"{cell_s.mean():.2f} s of {serial_wall / n:.2f} s in all (the rest: building, metrics, thumbnails)")
    gpu_estimate(reference.table)


def gpu_estimate(table, parts=4, unet_s=0.050, decode_s=0.15, load_s=60.0):
    """What the issue's full study would cost on GPUs, from the calls per cell measured here.

    A faithful call is one UNet evaluation of one prompt pair (cond + uncond, batch 2); a coherent
    call batches the base and every region (``parts`` pairs), counted as ``parts`` evaluations:
    at 1024x1024 a UNet is compute-bound, so its time grows about linearly with the batch."""
    faithful = table[table["mode"] == "faithful"]["model_calls"].mean()
    coherent = table[table["mode"] == "coherent"]["model_calls"].mean()
    per_cell = {"faithful": faithful * unet_s + decode_s, "coherent": coherent * parts * unet_s + decode_s}
    mean_cell = sum(per_cell.values()) / 2
    study = 42 * 9 * 2 * 3  # samplers x schedulers x modes x seeds
    print(f"\nGPU estimate: {unet_s * 1000:.0f} ms per SDXL UNet evaluation (1024x1024, cond+uncond batched), "
          f"{decode_s * 1000:.0f} ms VAE decode per cell, {load_s:.0f} s to load the model once per worker; calls per "
          f"cell as measured here (the program is the same on a real checkpoint): faithful {faithful:.0f} calls = "
          f"{per_cell['faithful']:.1f} s, coherent {coherent:.0f} batched calls x {parts} prompt pairs = "
          f"{per_cell['coherent']:.1f} s")
    print(f"  the {study}-cell study (42 samplers x 9 schedulers x 2 modes x 3 seeds), "
          f"{study * mean_cell / 3600:.1f} GPU-hours:")
    for gpus in (1, 8, 32):
        total = study * mean_cell / gpus + load_s
        print(f"  {gpus:3d} GPU(s): {total / 3600:6.2f} h")


if __name__ == "__main__":
    main()
