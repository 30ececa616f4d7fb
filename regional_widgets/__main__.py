"""``python -m regional_widgets demo --out demo.png``: a headless regional scene on the built-in model."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def demo(out: Path, steps: int, seed: int, dpi: int = 110) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import numpy as np

    import regional_widgets as rw

    model = rw.models.ToyWorld()
    latent = rw.empty_latent(model, 64, 64)
    ground = np.zeros((64, 64), np.float32)
    ground[40:] = 1
    wall = np.zeros((64, 64), np.float32)
    wall[16:48, 8:28] = 1
    base = rw.SamplerConfig(sampler="euler", scheduler="karras", cfg=2.0, positive="sky")
    regions = [rw.Region(ground, rw.SamplerConfig(sampler="dpmpp_2m", scheduler="karras", cfg=2.0, positive="grass")),
               rw.Region(wall, rw.SamplerConfig(sampler="heun", scheduler="karras", cfg=2.0, positive="brick"))]
    session = rw.RegionalSamplerSession.regional_sampler(model, latent, base=base, regions=regions, seed=seed,
                                                         steps=steps)
    fig = rw.plot.step_strip(session, every=max(1, steps // 10))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    sched = rw.plot.schedule(session)
    sched_path = out.with_name(out.stem + "_schedules.png")
    sched.savefig(sched_path, dpi=dpi)
    print(f"wrote {out} and {sched_path}: {session.status}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m regional_widgets")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="render a regional scene on the built-in model to a PNG")
    p.add_argument("--out", type=Path, default=Path("out/demo.png"))
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dpi", type=int, default=110)
    args = parser.parse_args(argv)
    demo(args.out, args.steps, args.seed, args.dpi)
    return 0


if __name__ == "__main__":
    sys.exit(main())
