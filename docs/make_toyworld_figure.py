"""Sample ToyWorld prompts with euler / karras / 20 steps and save docs/toyworld.png (headless).

    python docs/make_toyworld_figure.py [--out docs/toyworld.png] [--seed 0] [--cfg 1.0]
                                        [--textures auto|procedural|skimage]

Rows: the two latent spaces ("pixels" and "sd", the latter at 1/8 resolution). The last column
blends a "sky" prediction over the top half with a "grass" prediction over the bottom half at
every step: a hand-made stand-in for a two-region scene.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from regional_widgets.models import ToyWorld, cfg_denoiser, empty_latent  # noqa: E402
from regional_widgets.sampling.noise import prepare_noise  # noqa: E402
from regional_widgets.sampling.samplers import sample  # noqa: E402
from regional_widgets.sampling.schedules import calculate_sigmas  # noqa: E402

PROMPTS = ("sky", "grass", "brick", "water", "sand", "red circle", "blue triangle")


def two_halves(model, top: str, bottom: str, cfg: float):
    """A denoiser that predicts ``top`` over the upper half of the latent and ``bottom`` below."""
    upper, lower = cfg_denoiser(model, model.encode(top), None, cfg), cfg_denoiser(
        model, model.encode(bottom), None, cfg)
    mask = torch.zeros(model.latent_shape[1:])
    mask[: mask.shape[0] // 2] = 1

    def denoise(x, sigma):
        return mask * upper(x, sigma) + (1 - mask) * lower(x, sigma)

    return denoise


def generate(model, denoise, seed: int):
    sigmas = calculate_sigmas(model.sigmas, "karras", 20)
    x = prepare_noise(empty_latent(model, model.image_size, model.image_size), seed) * sigmas[0]
    return model.decode(sample(denoise, x, sigmas, "euler"))[0].numpy()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).with_name("toyworld.png")))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cfg", type=float, default=1.0)
    parser.add_argument("--textures", default="auto", choices=("auto", "procedural", "skimage"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    titles = list(PROMPTS) + ["sky / grass\n(halves)"]
    fig, axes = plt.subplots(2, len(titles), figsize=(1.2 * len(titles), 2.9), dpi=100)
    for row, latent in enumerate(("pixels", "sd")):
        model = ToyWorld(latent, textures=args.textures)
        denoisers = [cfg_denoiser(model, model.encode(p), None, args.cfg) for p in PROMPTS]
        denoisers.append(two_halves(model, "sky", "grass", args.cfg))
        for col, denoise in enumerate(denoisers):
            ax = axes[row, col]
            ax.imshow(generate(model, denoise, args.seed + col), interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if row == 0:
                ax.set_title(titles[col], fontsize=8)
        axes[row, 0].set_ylabel(f'latent="{latent}"', fontsize=8)
    fig.suptitle(f"ToyWorld samples: euler, karras, 20 steps, cfg {args.cfg:g}, "
                 f"{model.textures} textures", fontsize=9)
    fig.tight_layout()
    fig.savefig(args.out)
    print(f"wrote {args.out} ({Path(args.out).stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
