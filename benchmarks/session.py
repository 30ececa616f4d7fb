"""Session overhead: `run()` vs replaying the very same model calls in a plain loop.

    python benchmarks/session.py [--repeats N]

Prints, for 1 and 3 regions, the median wall time of a 20-step RegionalSamplerAdvanced run, the
median time of the same model calls replayed back to back (recorded inputs, no sampler, no
session), the median ratio of the two timed in alternation, pair by pair (session overhead incl.
sampler math, masks and history), and the history's memory per regional step. A run nothing
observes publishes its values once, at its end; the row "1 obs" has an observer on ``latent`` (as a
widget would), so every sub-step is published as it ends.

A second table splits one run by layer, measured inside the same runs in this thread's CPU time
(so it is far less sensitive to the machine's load than the wall-time ratio): the model calls
themselves, the engine around them (`faithful.execute` less its model calls: sampler math,
schedules, masks, noise, sigma maps), and the session around the engine (recording the history
into the arena, publishing traits, status). Per sub-step, in milliseconds. Then run / model calls
(what the session and engine add to the model's own time) and the model calls inside the run /
the same calls replayed after it (1.00 when a model runs as fast inside a session as alone): their
product is the ratio the first table estimates by wall time.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

import regional_widgets as rw
from regional_widgets import faithful
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


def paired_times(fn, baseline, repeats=5):
    """Median times of ``fn`` and ``baseline`` timed in alternation (one warm-up each), and the median
    of the ratios of each pair: a drift in the machine's load hits both sides of a pair alike."""
    fn(), baseline()
    pairs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        t1 = time.perf_counter()
        baseline()
        pairs.append((t1 - t0, time.perf_counter() - t1))
    return (statistics.median(a for a, _ in pairs), statistics.median(b for _, b in pairs),
            statistics.median(a / b for a, b in pairs))


class _Clock:
    """Accumulated CPU time (this thread's) of the calls it wraps."""

    def __init__(self):
        self.total = 0.0

    def wrap(self, fn):
        def timed(*args, **kwargs):
            t0 = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.total += time.thread_time() - t0
        return timed


class _TimedModel(OneCondModel):
    """The model through the plain protocol, its calls timed."""

    def __init__(self, model, clock: _Clock):
        super().__init__(model)
        self._call = clock.wrap(model.__call__)

    def __call__(self, x, sigma, cond):
        return self._call(x, sigma, cond)


def breakdown(model, n_regions, repeats, calls=()):
    """Median per-run CPU seconds of (run, model calls, engine execute incl. its model calls, ``calls`` replayed
    after each run: the recorded inputs of the same model calls, each timed as the run times its calls)."""
    model_clock, engine_clock, replay_clock = _Clock(), _Clock(), _Clock()
    session = scene(_TimedModel(model, model_clock), n_regions)
    replayed = replay_clock.wrap(model.__call__)
    original = faithful.execute
    faithful.execute = engine_clock.wrap(original)
    rows = []
    try:
        for _ in range(repeats):
            session.reset()
            model_clock.total = engine_clock.total = replay_clock.total = 0.0
            t0 = time.thread_time()
            session.run()
            run = time.thread_time() - t0
            for x, sigma, cond in calls:
                replayed(x, sigma, cond)
            rows.append((run, model_clock.total, engine_clock.total, replay_clock.total))
    finally:
        faithful.execute = original
    run, model_s, engine_s, replay_s = (statistics.median(col) for col in zip(*rows))
    return run, model_s, engine_s, replay_s, len(session.ops)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = rw.models.ToyWorld()
    print(f"{'regions':>7} {'model calls':>11} {'run() s':>9} {'plain s':>9} {'ratio':>6} "
          f"{'overhead/sub-step':>18} {'history/step':>13}")
    recorded = {}
    for label in ("1", "3", "1 obs"):
        n = int(label[0])
        recording = OneCondModel(model, record=True)
        session = scene(recording, n)
        if label.endswith("obs"):
            session.observe(lambda change: None, names="latent")
        session.run()
        calls = recorded.setdefault(n, list(recording.inputs))
        recording.record = False  # the timed runs keep no inputs (the plain protocol stays: no call_batch)

        def session_run():
            session.reset()
            session.run()

        def plain():
            for x, sigma, cond in calls:
                model(x, sigma, cond)

        t_session, t_plain, ratio = paired_times(session_run, plain, args.repeats)
        per_step = session.history.nbytes / session.num_steps
        overhead_ms = 1e3 * (t_session - t_plain) / len(session.ops)
        print(f"{label:>7} {len(calls):>11} {t_session:>9.3f} {t_plain:>9.3f} {ratio:>6.2f} "
              f"{overhead_ms:>15.2f} ms {per_step / 1024:>9.0f} KiB")
    print("\nper sub-step, CPU ms (inside the same runs):")
    print(f"{'regions':>7} {'sub-steps':>9} {'model':>7} {'engine':>7} {'session':>8} {'run/model':>10} "
          f"{'model/replayed':>15}")
    for n in (1, 3):
        run, model_s, engine_s, replay_s, ops = breakdown(model, n, args.repeats, recorded[n])
        per = 1e3 / ops
        print(f"{n:>7} {ops:>9} {model_s * per:>7.3f} {(engine_s - model_s) * per:>7.3f} "
              f"{(run - engine_s) * per:>8.3f} {run / model_s:>10.3f} {model_s / replay_s:>15.3f}")


if __name__ == "__main__":
    main()
