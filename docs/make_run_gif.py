"""The README's animation: the demo scene run step by step (latent, x0 prediction, effective sigma).

    python docs/make_run_gif.py docs/run.gif

The scene is `python -m regional_widgets demo`'s (`regional_widgets.cli.demo_scene`), here on the
RegionalSamplerAdvanced node, 16 steps.
"""
import sys

import matplotlib

matplotlib.use("Agg")
import regional_widgets as rw  # noqa: E402
from regional_widgets.cli import demo_scene  # noqa: E402


def main(out="docs/run.gif"):
    session = rw.RegionalSamplerSession(**demo_scene(), steps=16)
    anim = rw.plot.animate(session, panels=("latent", "x0", "sigma_map"), fps=3, dpi=72)
    print(rw.plot.save_animation(anim, out))


if __name__ == "__main__":
    main(*sys.argv[1:])
