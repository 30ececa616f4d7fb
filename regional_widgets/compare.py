"""Faithful vs coherent, side by side: final images, x0 strips, detail ratios, effective-sigma maps.

The **region detail ratio** asks whether a region came out as detailed as its sampler makes a
picture on its own: the region's error (mean squared distance of its pixels to the nearest
exemplar of its prompt) divided by the same error of a plain run of the same sampler over the
whole image with that prompt (same seed, same sigma grid). 1.0 = as detailed as a plain run;
below 1 = under-noised ("undetailed"), above 1 = leftover noise. It needs a model that knows its
exemplars (`ToyWorld`); other models get images and maps only.

The ratio needs a plain run that misses its exemplars by a measurable amount. On a model whose
pictures are points (`ToyWorld()`'s default ``mixture_variance=0``) a plain run ends *exactly* on an
exemplar, its error is float round-off (~1e-16) and a ratio over it is noise (~1e15): such a
region's ratio is NaN, with a `DetailRatioWarning` saying why (use ``mixture_variance > 0``).
"""
from __future__ import annotations

import numpy as np
import torch

from . import coherent
from .models.base import cfg_denoiser, latent_format, process_in
from .node_params import schedule_steps
from .sampling import masks as mask_ops
from .sampling.model_sampling import as_model_sampling
from .sampling.noise import is_max_denoise, prepare_noise
from .sampling.samplers import sample
from .sampling.schedules import sampler_sigmas


# A plain error below this fraction of the exemplars' mean square is round-off, not a distance:
# float32 latents leave ~1e-15 of it, a mixture variance of 1e-6 already ~1e-6, 0.01 gives ~1e-2.
RELATIVE_FLOOR = 1e-9


class DetailRatioWarning(UserWarning):
    """A region's detail ratio is NaN: its plain run lands on an exemplar, so there is nothing to compare."""


def _exemplars_of(model, prompt, shape):
    """The prompt's exemplars as latents (the model's own prompt parsing, via its cond)."""
    exemplars = model.encode(prompt).exemplars
    return exemplars.view(len(exemplars), *shape)


def region_error(model, latent: torch.Tensor, mask: np.ndarray, prompt: str, erode: int = 4) -> float:
    """Mean squared distance of the region's pixels to the nearest exemplar of ``prompt``.

    The region is the mask eroded by ``erode`` latent pixels, so seams and feathering don't count.
    ``latent`` is in VAE space (a session's result); the exemplars are compared in model space.
    """
    latent = process_in(latent, latent_format(model))
    m = _region_pixels(mask, latent.shape[-2:], erode)
    ex = _exemplars_of(model, prompt, latent.shape[1:])[:, :, m]
    values = latent[0][:, m].double()
    return float(((ex.double() - values) ** 2).flatten(1).mean(1).min())


def _region_pixels(mask, size, erode: int) -> torch.Tensor:
    """The mask at latent size ``(h, w)``, eroded by ``erode`` pixels, as booleans."""
    m = mask_ops.resize(torch.from_numpy(np.array(mask, dtype=np.float32)), *size) >= 0.5
    if erode:
        k = 2 * erode + 1
        m = -torch.nn.functional.max_pool2d(-m.float()[None, None], k, stride=1, padding=erode)[0, 0] >= 0.5
    if not m.any():
        raise ValueError("mask: the region is empty after erosion; paint a larger region")
    return m


def region_scale(model, latent: torch.Tensor, mask: np.ndarray, prompt: str, erode: int = 4) -> float:
    """The mean square of ``prompt``'s exemplars over the region (model space, ``latent`` gives the
    shape): the scale `region_error`'s distances are small or large against."""
    shape = process_in(latent, latent_format(model)).shape[1:]
    m = _region_pixels(mask, shape[-2:], erode)
    return float((_exemplars_of(model, prompt, shape)[:, :, m].double() ** 2).mean())


def plain_error(model, session, region: int, seed=None) -> float:
    """The error of the same sampler run plainly over the whole image with the region's prompt,
    on the sigma grid the region ran on (its own schedule; the base grid in coherent mode)."""
    config = session.regions[region - 1].config
    if session.mode == "coherent":
        sigmas = coherent.grid(session.node_params())  # the grid the region really ran on
    else:
        sigmas = sampler_sigmas(model, config.sampler, config.scheduler, schedule_steps(session))
    seed = (session.noise_seed if session.node == "RegionalSamplerAdvanced" else session.seed) if seed is None else seed
    fmt = latent_format(model)
    latent = process_in(session.latent_image, fmt)
    noise = prepare_noise(latent, seed)
    # the model's own start (flow: sigma * n + (1 - sigma) * L); the plain run ends at 0: no rescale
    x = as_model_sampling(model).noise_scaling(sigmas[0], noise, latent, is_max_denoise(model.sigmas[-1], sigmas[0]))
    denoise = cfg_denoiser(model, model.encode(config.positive), model.encode(config.negative), config.cfg)
    last = {}
    out = sample(denoise, x, sigmas, config.sampler, seed=seed, callback=lambda info: last.update(d=info["denoised"]),
                 model_sampling=model)
    if config.sampler in ("dpm_fast", "dpm_adaptive"):
        out = last.get("d", out)  # they stop above sigma 0: their last x0 prediction is the picture
    return region_error(model, fmt.process_out(out) if fmt.scale_factor != 1 or fmt.shift_factor else out,
                        session.regions[region - 1].mask, config.positive)


def detail_ratios(session) -> list:
    """Per region: its error in the session's result over a plain run's error (needs a run).

    NaN, with a `DetailRatioWarning`, for a region whose plain run lands on an exemplar (its error
    under `RELATIVE_FLOOR` of the exemplars' mean square): nothing to measure the region against."""
    import warnings

    if session.result is None:
        session.run()
    model = session.model
    ratios = []
    for j, r in enumerate(session.regions, 1):
        error = region_error(model, session.result, r.mask, r.config.positive)
        plain = plain_error(model, session, j)
        floor = RELATIVE_FLOOR * region_scale(model, session.result, r.mask, r.config.positive)
        if plain > floor:
            ratios.append(error / plain)
            continue
        warnings.warn(f"region {j} ({r.config.positive!r}): a plain run of {r.config.sampler} lands on an exemplar "
                      f"(error {plain:.2g}, the exemplars' mean square {floor / RELATIVE_FLOOR:.2g}), so the detail "
                      "ratio is NaN; a model whose pictures have spread measures it, e.g. "
                      "ToyWorld(mixture_variance=0.01)", DetailRatioWarning, stacklevel=2)
        ratios.append(float("nan"))
    return ratios


def compare(a, b, *, labels=("A", "B"), every: int = 4):
    """A figure comparing two sessions (run to the end if needed): final images, x0 strips,
    per-region detail ratios (models with exemplars) and effective-sigma maps."""
    import matplotlib.pyplot as plt

    from .plot import picture, rgb

    sessions = [a, b]
    strips = []
    for s in sessions:
        s.reset()
        frames = []
        while not s.done:
            s.step()
            if s.denoised is not None and s.step_index % every == 0:
                frames.append(rgb(s.model, s.denoised))
        strips.append(frames)
    has_exemplars = hasattr(a.model.encode(""), "exemplars")
    ratios = [detail_ratios(s) if has_exemplars and s.regions else [] for s in sessions]
    cols = max(len(f) for f in strips) + 2
    fig, axes = plt.subplots(2, cols, figsize=(1.5 * cols, 3.6), squeeze=False)
    for row, (s, frames, label, r) in enumerate(zip(sessions, strips, labels, ratios)):
        for ax in axes[row]:
            ax.axis("off")
        axes[row][0].imshow(rgb(s.model, picture(s, "result")))
        text = ", ".join(f"{x:.2f}" for x in r)
        axes[row][0].set_title(f"{label}\ndetail {text}" if r else label, fontsize=7)
        axes[row][1].imshow(s.sigma_map, cmap="viridis")
        axes[row][1].set_title("effective σ (last step)", fontsize=6)
        for k, image in enumerate(frames):
            axes[row][2 + k].imshow(image)
            axes[row][2 + k].set_title(f"x0 @ step {every * (k + 1)}", fontsize=6)
    fig.tight_layout()
    fig.detail_ratios = {label: r for label, r in zip(labels, ratios)}
    return fig
