"""The README's animation: the demo scene run step by step (latent, x0 prediction, effective sigma).

    python docs/make_run_gif.py docs/run.gif
"""
import sys

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402

import regional_widgets as rw  # noqa: E402


def main(out="docs/run.gif"):
    model = rw.models.ToyWorld()
    ground = np.zeros((64, 64), np.float32)
    ground[40:] = 1
    wall = np.zeros((64, 64), np.float32)
    wall[16:48, 8:28] = 1
    base = rw.SamplerConfig(sampler="euler", scheduler="karras", cfg=2.0, positive="sky")
    regions = [rw.Region(ground, rw.SamplerConfig(sampler="dpmpp_2m", scheduler="karras", cfg=2.0, positive="grass")),
               rw.Region(wall, rw.SamplerConfig(sampler="heun", scheduler="karras", cfg=2.0, positive="brick"))]
    session = rw.RegionalSamplerSession(model, rw.empty_latent(model, 64, 64), base=base, regions=regions, steps=16)
    anim = rw.plot.animate(session, panels=("latent", "x0", "sigma_map"), fps=3, dpi=72)
    print(rw.plot.save_animation(anim, out))


if __name__ == "__main__":
    main(*sys.argv[1:])
