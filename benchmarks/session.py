"""Session overhead: `run()` vs replaying the very same model calls in a plain loop.

    python benchmarks/session.py

Prints, for 1 and 3 regions, the median wall time of a 20-step RegionalSamplerAdvanced run, the
median time of the same model calls replayed back to back (recorded inputs, no sampler, no
session), their ratio (session overhead incl. sampler math, masks and history), and the
history's memory per regional step.
"""
from __future__ import annotations

import statistics
import time

import numpy as np
import torch

import regional_widgets as rw
from regional_widgets.models.base import OneCondModel


def scene(model, n_regions):
    masks = []
    for j in range(n_regions):
        m = np.zeros((64, 64), np.float32)
        m[j * 20:(j + 1) * 20 + 4, 8 * j:40 + 8 * j] = 1
        masks.append(m)
    words = ["grass", "brick", "water"]
    regions = [rw.Region(m, rw.SamplerConfig(sampler="dpmpp_2m", scheduler="karras", cfg=2.0, positive=w))
               for m, w in zip(masks, words)]
    base = rw.SamplerConfig(sampler="euler", scheduler="karras", cfg=2.0, positive="sky")
    return rw.RegionalSamplerSession(model, rw.empty_latent(model, 64, 64), base=base, regions=regions, steps=20)


def median_time(fn, repeats=5):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
    torch.set_num_threads(1)
    model = rw.models.ToyWorld()
    print(f"{'regions':>7} {'model calls':>11} {'run() s':>9} {'plain s':>9} {'ratio':>6} "
          f"{'overhead/sub-step':>18} {'history/step':>13}")
    for n in (1, 3):
        recording = OneCondModel(model, record=True)
        session = scene(recording, n)
        session.run()
        calls = list(recording.inputs)

        def session_run():
            session.reset()
            session.run()

        def plain():
            for x, sigma, cond in calls:
                model(x, sigma, cond)

        t_session = median_time(session_run)
        t_plain = median_time(plain)
        per_step = session.history.nbytes / session.num_steps
        overhead_ms = 1e3 * (t_session - t_plain) / len(session.ops)
        print(f"{n:>7} {len(calls):>11} {t_session:>9.3f} {t_plain:>9.3f} {t_session / t_plain:>6.2f} "
              f"{overhead_ms:>15.2f} ms {per_step / 1024:>9.0f} KiB")


if __name__ == "__main__":
    main()
