"""Coherent mode: batched vs one-by-one model calls, coherent vs faithful time, detail-ratio table.

    python benchmarks/coherent.py            # timings + the detail table (all samplers, ~2 min)
    python benchmarks/coherent.py --quick    # timings only

Timings are medians on one thread, built-in model at 64x64, 3 regions, 20 karras steps, cfg 2.
The detail ratio (see regional_widgets.compare) is averaged over 3 seeds on ToyWorld with
mixture_variance 0.01; 1.0 = the region is as detailed as a plain run of its sampler.
"""
from __future__ import annotations

import argparse
import statistics
import time
import warnings

import numpy as np
import torch

import regional_widgets as rw
from regional_widgets.models.base import OneCondModel
from regional_widgets.sampling import SAMPLER_NAMES
from regional_widgets.sampling.samplers import get_sampler

AREAS = [(slice(40, 64), slice(0, 64)), (slice(0, 24), slice(0, 28)), (slice(0, 24), slice(36, 64))]
WORDS = ["grass", "brick", "water"]


def scene(model, sampler="dpmpp_2m", n=3, cfg=2.0, mode="coherent", seed=0, words=WORDS, base_prompt="sky"):
    regions = []
    for (rows, cols), word in zip(AREAS[:n], words):
        m = np.zeros((64, 64), np.float32)
        m[rows, cols] = 1
        regions.append(rw.Region(m, rw.SamplerConfig(sampler=sampler, scheduler="karras", cfg=cfg, positive=word)))
    base = rw.SamplerConfig(sampler="euler", scheduler="karras", cfg=cfg, positive=base_prompt)
    return rw.RegionalSamplerSession(model, rw.empty_latent(model, 64, 64), base=base, regions=regions, steps=20,
                                     mode=mode, noise_seed=seed)


def per_step(session, repeats=3):
    times = []
    for _ in range(repeats):
        session.reset()
        t0 = time.perf_counter()
        session.run()
        times.append((time.perf_counter() - t0) / session.num_steps)
    return statistics.median(times)


def evaluation_timings(model, repeats=50):
    """The R+1 first evaluations of one step (base + 3 regions, cfg 2, one shared empty negative)."""
    from regional_widgets.models.base import batched_cfg, cfg_denoiser

    session = scene(model)
    cache = {}
    encode = lambda prompt: cache.setdefault(prompt, model.encode(prompt))  # noqa: E731 (as the session does)
    conds = [(encode(c.positive), encode(c.negative), c.cfg)
             for c in [session.base] + [r.config for r in session.regions]]
    x = torch.randn(1, 3, 64, 64) * 3
    sigma = torch.tensor([3.0])
    plain = OneCondModel(model)
    calls = {
        "one batched call": lambda: batched_cfg(model, x, sigma, conds),
        "one call per distinct cond": lambda: batched_cfg(plain, x, sigma, conds),
        "the R+1 CFG calls one by one": lambda: [cfg_denoiser(plain, p, n, c)(x, sigma) for p, n, c in conds],
    }
    out = {}
    for name, fn in calls.items():
        fn()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        out[name] = statistics.median(times)
    return out


def timings():
    model = rw.models.ToyWorld()
    evals = evaluation_timings(model)
    slowest = evals["the R+1 CFG calls one by one"]
    print("the 4 first evaluations of a 3-region step (base + 3 regions, cfg 2), median of 50:")
    for name, t in evals.items():
        print(f"  {name:30s} {1e3 * t:7.2f} ms   ratio to the calls one by one = {t / slowest:.2f}")
    batched = per_step(scene(model))
    one_by_one = per_step(scene(OneCondModel(model)))
    faithful = per_step(scene(model, mode="faithful"))
    print("3 regions, 64x64, dpmpp_2m regions, cfg 2, per regional step (median of 3 runs):")
    print(f"  coherent, batched calls     {1e3 * batched:7.2f} ms")
    print(f"  coherent, one call per cond {1e3 * one_by_one:7.2f} ms   batched / one-by-one = {batched / one_by_one:.2f}")
    print(f"  faithful                    {1e3 * faithful:7.2f} ms   coherent / faithful   = {batched / faithful:.2f}")


def ratio_cells(model, sampler, mode, **where):
    parts = []
    for n in (1, 3):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ratios = np.mean([rw.detail_ratios(scene(model, sampler, n, 1.0, mode, seed, **where)) for seed in range(3)], 0)
        parts.append(" ".join(f"{r:5.2f}" for r in ratios))
    return " | ".join(parts)


def detail_table():
    model = rw.models.ToyWorld(mixture_variance=0.01)
    print("\ndetail ratio (mean over 3 seeds; 1 region | 3 regions), cfg 1:")
    print(f"  {'sampler':30s} {'faithful':>22s} {'coherent':>22s}")
    for sampler in SAMPLER_NAMES:
        cells = [ratio_cells(model, sampler, mode) for mode in ("faithful", "coherent")]
        note = "  (own grid: compared on its last x0)" if sampler in ("dpm_fast", "dpm_adaptive") else ""
        note = "  (CFG++: see below)" if get_sampler(sampler).uncond else note
        print(f"  {sampler:30s} {cells[0]:>22s} {cells[1]:>22s}{note}")
    # CFG++ steps along the unconditional prediction of the whole composite; ToyWorld's is one
    # whole exemplar (sky or grass everywhere), so a region amid another material inherits it.
    print("\nCFG++ where the surroundings agree (base and regions 'grass', negative ''), cfg 1:")
    agree = dict(words=["grass"] * 3, base_prompt="grass")
    for sampler in [s for s in SAMPLER_NAMES if get_sampler(s).uncond] + ["euler"]:
        cells = [ratio_cells(model, sampler, mode, **agree) for mode in ("faithful", "coherent")]
        print(f"  {sampler:30s} {cells[0]:>22s} {cells[1]:>22s}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    timings()
    if not args.quick:
        detail_table()


if __name__ == "__main__":
    main()
