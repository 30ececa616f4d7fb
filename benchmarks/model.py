"""ToyWorld per-call cost: both latents x 250 / 500 / 1000 exemplars, side by side, one thread.

    python benchmarks/model.py [--calls 50]

A call is one unconditional evaluation (all exemplars: the costliest branch) at sigma 1.
Times are medians over ``--calls`` calls; "build" is the constructor (the sd rows reuse the pictures
the pixels rows drew, cached per process, so theirs is the encoding only).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from regional_widgets.models import ToyWorld

COUNTS = (250, 500, 1000)
LATENTS = ("pixels", "sd")


def median_ms(fn, calls: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def measure(latent: str, n: int, calls: int) -> dict:
    start = time.perf_counter()
    model = ToyWorld(latent, n_exemplars=n)
    build = time.perf_counter() - start
    cond = model.encode("")
    row = {"build s": build}
    for batch in (1, 4):
        x = torch.randn(batch, *model.latent_shape)
        sigma = torch.ones(batch)
        row[f"B={batch} ms"] = median_ms(lambda: model(x, sigma, cond), calls)
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=50)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = {(latent, n): measure(latent, n, args.calls) for latent in LATENTS for n in COUNTS}
    columns = list(next(iter(rows.values())))
    print(f"ToyWorld, 64x64 images, median of {args.calls} calls, torch threads = 1")
    print(f"{'latent':8} {'exemplars':>9} " + " ".join(f"{c:>9}" for c in columns))
    for (latent, n), row in rows.items():
        print(f"{latent:8} {n:9d} " + " ".join(f"{row[c]:9.2f}" for c in columns))
    for n in COUNTS:
        ratio = rows["pixels", n]["B=1 ms"] / rows["sd", n]["B=1 ms"]
        print(f"pixels / sd per call at {n} exemplars (B=1): {ratio:.0f}x")


if __name__ == "__main__":
    main()
