"""Kernel-side cost of the live views: an Inspector refresh after a step, and a history scrub.

    python benchmarks/widgets.py [--repeat 15] [--steps 20]

ToyWorld (pixels, 64 x 64, 60 exemplars), two regions, one torch thread. Medians in ms:

- ``step``: ``session.step()`` with no widget attached (the sampling itself, for scale);
- ``refresh after a step``: ``Inspector.refresh()`` once a step has landed (decode, arrays,
  ``set_data`` and ``draw_idle`` for ipympl; the same plus the PNG encode for the Image fallback);
- ``ipympl render``: the Agg render ipympl does when the front end asks for the frame (later, also
  in the kernel; the Image fallback pays it inside its refresh);
- ``scrub``: ``controls.history.value = k`` (slider change -> ``goto(k)`` -> inspector refresh and
  controls update) over a finished run, k drawn at random; ``scrub (full app)`` is the same in a
  RegionalSamplerApp with its Inspector tab shown, so the mask canvas's background redraw is added.
"""
from __future__ import annotations

import argparse
import random
import statistics
import time

import numpy as np
import torch

import regional_widgets as rw
from regional_widgets.widgets import Inspector, RegionalSamplerApp, StepControls

MODEL = rw.models.ToyWorld(n_exemplars=60, image_size=64)


def make_session(steps):
    bottom = np.zeros((64, 64), np.float32)
    bottom[40:] = 1
    left = np.zeros((64, 64), np.float32)
    left[:, :20] = 1
    return rw.RegionalSamplerSession(
        MODEL, rw.empty_latent(MODEL, 64, 64), base=rw.SamplerConfig(positive="sky"),
        regions=[rw.Region(bottom, rw.SamplerConfig(positive="grass")),
                 rw.Region(left, rw.SamplerConfig(positive="brick"))], steps=steps)


def median_ms(times) -> float:
    return 1e3 * statistics.median(times)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def step_costs(steps, repeat):
    times = []
    for _ in range(repeat):
        s = make_session(steps)
        times += [timed(s.step) for _ in range(steps)]
    return median_ms(times)


def refresh_costs(backend, steps, repeat):
    refresh, render = [], []
    for _ in range(repeat):
        s = make_session(steps)
        inspector = Inspector(s, backend=backend)
        inspector.follow = False
        while not s.done:
            s.step()
            refresh.append(timed(inspector.refresh))
            if backend == "ipympl":
                render.append(timed(inspector.figure.canvas.draw))
    return median_ms(refresh), (median_ms(render) if render else None)


def scrub_costs(backend, steps, repeat, app=False):
    rng = random.Random(0)
    times = []
    for _ in range(repeat):
        s = make_session(steps)
        if app:
            composed = RegionalSamplerApp(s, inspector_backend=backend)
            composed.tabs.selected_index = 1  # the inspector shown: it follows
            controls = composed.controls
        else:
            controls, _ = StepControls(s), Inspector(s, backend=backend)
        s.run()
        for _ in range(steps):
            k = rng.choice([j for j in range(s.num_steps + 1) if j != s.step_index])
            times.append(timed(lambda: setattr(controls.history, "value", k)))
            assert s.step_index == k
    return median_ms(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    make_session(2).run()  # warm-up: imports, fonts, caches
    Inspector(make_session(2), backend="image").refresh()
    backends = ["ipympl", "image"]
    try:
        import ipympl.backend_nbagg  # noqa: F401
    except ImportError:
        backends = ["image"]
    rows = {"step (no widgets)": {b: step_costs(args.steps, args.repeat) for b in backends[:1]}}
    refresh = {b: refresh_costs(b, args.steps, args.repeat) for b in backends}
    rows["refresh after a step"] = {b: refresh[b][0] for b in backends}
    rows["ipympl render (on request)"] = {b: refresh[b][1] for b in backends}
    rows["scrub: slider -> goto + refresh"] = {b: scrub_costs(b, args.steps, args.repeat) for b in backends}
    rows["scrub (full app)"] = {b: scrub_costs(b, args.steps, args.repeat, app=True) for b in backends}
    print(f"median kernel ms, ToyWorld 64x64, 2 regions, {args.steps} steps, {args.repeat} runs each")
    print(f"{'':34}" + "".join(f"{b:>10}" for b in backends))
    for name, values in rows.items():
        cells = "".join(f"{values[b]:10.2f}" if values.get(b) is not None else f"{'-':>10}" for b in backends)
        print(f"{name:34}{cells}")


if __name__ == "__main__":
    main()
