"""History memory: resident memory of a long run against the history budget.

    python benchmarks/history_memory.py [--steps 200] [--size 256] [--budget-mb 512]

Runs a RegionalSamplerAdvanced session (ToyWorld in pixel space, two regions) in a fresh
subprocess, samples the process's resident set size (RSS) after every sub-step and prints the
peak and final RSS above the baseline taken just before the run, the history's tracked bytes
and the budget (``history_limit``), and their ratio. The session keeps history snapshots in
one preallocated arena of fixed-size slots, so RSS above the baseline stays near the budget
instead of growing with allocator fragmentation.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CHILD = r"""
import json, os, sys
import numpy as np
import torch
import regional_widgets as rw

steps, size, budget = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(1)
page = os.sysconf("SC_PAGE_SIZE")

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * page

model = rw.models.ToyWorld(n_exemplars=20, image_size=size, textures="procedural")
m1, m2 = np.zeros((size, size), np.float32), np.zeros((size, size), np.float32)
m1[size // 2:], m2[: size // 3, : size // 3] = 1, 1
base = rw.SamplerConfig(sampler="euler", scheduler="karras", cfg=2.0, positive="sky")
regions = [rw.Region(m1, rw.SamplerConfig(sampler="dpmpp_2m", scheduler="karras", cfg=2.0, positive="grass")),
           rw.Region(m2, rw.SamplerConfig(sampler="euler", cfg=2.0, positive="brick"))]
s = rw.RegionalSamplerSession(model, rw.empty_latent(model, size, size), base=base, regions=regions,
                              steps=steps)
s.history_limit = budget
s.substep()  # warm up the model and the sampler once before the baseline
s.reset()
baseline = rss()
peak = 0
while not s.done:
    s.substep()
    peak = max(peak, rss() - baseline)
final = rss() - baseline
s.goto(steps // 2)
s.goto(0)
after_scrub = rss() - baseline
print(json.dumps({"baseline": baseline, "peak": peak, "final": final, "after_scrub": after_scrub,
                  "tracked": s.history.nbytes, "budget": budget, "substeps": len(s.ops)}))
"""


def measure(steps: int, size: int, budget: int) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(steps), str(size), str(budget)], check=True,
                         capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--budget-mb", type=int, default=512)
    args = parser.parse_args()
    r = measure(args.steps, args.size, args.budget_mb * 2**20)
    mb = 2**20
    print(f"{args.steps} steps, {args.size}x{args.size} pixels, {r['substeps']} sub-steps, "
          f"history budget {r['budget'] / mb:.0f} MB")
    print(f"baseline RSS          {r['baseline'] / mb:8.0f} MB")
    print(f"tracked history       {r['tracked'] / mb:8.0f} MB")
    print(f"RSS above baseline    {r['peak'] / mb:8.0f} MB peak, {r['final'] / mb:.0f} MB at the end, "
          f"{r['after_scrub'] / mb:.0f} MB after scrubbing")
    print(f"peak / budget         {r['peak'] / r['budget']:8.2f}")


if __name__ == "__main__":
    main()
