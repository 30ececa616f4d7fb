"""ToyWorld: the built-in offline model, an exact denoiser over a small set of pictures.

No weights: for exemplars ``X_i`` the optimal denoiser (the posterior mean of ``x0`` given
``x = x0 + sigma * noise``) is ``D(x, sigma) = sum_i softmax_i(-||x - X_i||^2 / (2 sigma^2)) X_i``.
A prompt keeps the exemplars whose labels contain all its words; the empty prompt keeps all of
them (the unconditional branch). With ``mixture_variance = v > 0`` every exemplar becomes a
Gaussian of variance v and ``D = sum_i w_i (X_i + v / (v + sigma^2) (x - X_i))``.

Model families (``prediction``): ``"eps"`` (default) and ``"v"`` use SD1.5's discrete table and the
forward process above; ``"flow"`` is a flow-matching (CONST) model on a discrete-flow table with
``shift`` (SD3's 3.0 by default): ``x = (1 - sigma) x0 + sigma * noise``, sigma in [0, 1], and the
posterior mean is, with ``a = 1 - sigma`` and ``var = a^2 v + sigma^2``,
``D = sum_i softmax_i(-||x - a X_i||^2 / (2 var)) (X_i sigma^2 + a v x) / var`` (at sigma = 1 the
mean of the prompt's exemplars, whatever x is).

What is exact: ``D`` is the exact posterior mean of the model's own forward process, in float64,
for every prediction; eps and v give the same ``D`` (a parametrisation only changes what a network
would output, and this model has no network; the model sampling still says ``"v"``). The default
(eps) computes exactly as before, bit for bit.

Because the data set is finite the model memorises: a deterministic sampler that reaches
sigma 0 ends exactly on one exemplar of the prompt's class.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import torch

from ..sampling import model_sampling as _model_sampling
from ..sampling.checks import check_int
from ..sampling.model_sampling import ModelSamplingDiscrete, sd15_model_sampling, sd15_table
from .latents import LATENT_SPACES, as_rgb_batch
from .toyworld_images import VOCABULARY, make_exemplars, resolve_textures


@dataclass(frozen=True)
class ToyCond:
    """A prompt resolved to its exemplars (flattened float64 latents and their squared norms)."""

    prompt: str
    words: frozenset
    count: int
    exemplars: torch.Tensor = field(repr=False)
    norms: torch.Tensor = field(repr=False)
    index: torch.Tensor = field(default=None, repr=False)  # rows of the full set (None: all)


@lru_cache(maxsize=4)
def _cached_exemplars(seed, n, size, textures):
    # Tests and notebooks build many equal models; the pictures are the slow part (~0.5 s).
    images, labels = make_exemplars(seed, n, size, textures)
    images.setflags(write=False)
    return images, labels


class ToyWorld:
    """The exact denoiser over seeded exemplar pictures (materials and coloured shapes).

    latent: ``"pixels"`` (3 channels, RGB in [-1, 1], downscale 1), ``"sd"`` (4 channels at 1/8
    resolution, decoded with the SD1.5 latent-to-RGB preview factors) or ``"sd3"`` (16 channels at
    1/8, VAE space with SD3's latent format: ``latent_scale_factor`` 1.5305, ``latent_shift_factor``
    0.0609; the denoiser works in model space ``(z - shift) * scale`` as a real SD3 model does).
    prediction: ``"eps"``, ``"v"`` (SD1.5's discrete table) or ``"flow"`` (CONST on a discrete-flow
    table with ``shift``, multiplier 1000; ``shift`` is ignored for eps and v).
    n_exemplars: pictures in all, shared evenly by the 20 classes (8 materials, 12 colour-shapes).
    image_size: the side of every picture in pixels (a multiple of 8); x must match it.
    mixture_variance: 0 for the exemplars themselves, > 0 for Gaussians around them.
    textures: ``"auto"`` (= ``"skimage"``) crops grass/brick/gravel from three CC0 photographs of
    scikit-image's sample data, shipped with this package (scikit-image itself is not needed), so a
    seed draws the same pictures everywhere; ``"procedural"`` draws those materials instead.

    Prompts are words from ``vocabulary``, e.g. ``"sky"``, ``"grass"``, ``"red circle"``, ``"blue"``.
    ``labels`` holds each exemplar's word set, ``exemplars`` their latents.
    """

    def __init__(self, latent: str = "pixels", *, seed: int = 0, n_exemplars: int = 500,
                 image_size: int = 64, mixture_variance: float = 0.0, textures: str = "auto",
                 prediction: str = "eps", shift: float = 3.0):
        if latent not in LATENT_SPACES:
            raise ValueError(f"latent: expected one of {', '.join(LATENT_SPACES)}, got {latent!r}")
        self.space = LATENT_SPACES[latent]()
        _check_int(n_exemplars, "n_exemplars", 1)
        _check_int(seed, "seed", 0)
        if _check_int(image_size, "image_size", 8) % 8:
            raise ValueError(f"image_size: expected a multiple of 8, got {image_size}")
        _check_variance(mixture_variance)
        self.latent, self.seed, self.image_size = latent, int(seed), int(image_size)
        self.textures = resolve_textures(textures)
        self.mixture_variance = float(mixture_variance)
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction: expected one of {', '.join(PREDICTIONS)}, got {prediction!r}")
        ok = isinstance(shift, (int, float)) and not isinstance(shift, bool) and np.isfinite(shift) and shift > 0
        if not ok:
            raise ValueError(f"shift: expected a finite number > 0, got {shift!r}")
        self.prediction, self.shift = prediction, float(shift)
        self.model_sampling = _build_model_sampling(prediction, self.shift)
        self.is_flow = prediction == "flow"
        self.sigmas = self.model_sampling.sigmas
        if hasattr(self.space, "latent_format"):  # a latent format with scale and shift (the "sd3" latent)
            self.latent_format = self.space.latent_format
            self.latent_scale_factor = self.latent_format.scale_factor
            self.latent_shift_factor = self.latent_format.shift_factor
        self.latent_channels, self.downscale = self.space.channels, self.space.downscale
        side = self.image_size // self.downscale
        self.latent_shape = (self.latent_channels, side, side)

        images, self.labels = _cached_exemplars(self.seed, int(n_exemplars), self.image_size, self.textures)
        latents = self.space.encode(torch.from_numpy(images.astype(np.float64)))
        if hasattr(self.space, "process_in"):
            latents = self.space.process_in(latents)  # the denoiser's exemplars live in model space
        self._exemplars = latents.reshape(len(images), -1).contiguous()
        self._norms = (self._exemplars ** 2).sum(1)

    @property
    def spec(self) -> dict:
        """The constructor arguments as plain data: ``models.from_spec(spec)`` builds an equal model."""
        sampling = self.model_sampling  # patched (models.base.with_model_sampling) beyond the constructor's?
        if self.is_flow and not (getattr(sampling, "multiplier", None) == 1000 and sampling.shift == self.shift):
            return None
        spec = {"model": "ToyWorld", "latent": self.latent, "seed": self.seed, "n_exemplars": len(self.labels),
                "image_size": self.image_size, "mixture_variance": self.mixture_variance, "textures": self.textures}
        if self.prediction != "eps":  # older specs (and eps models) stay as they were
            spec["prediction"] = self.prediction
            if self.is_flow:
                spec["shift"] = self.shift
        return spec

    @property
    def vocabulary(self) -> tuple:
        return VOCABULARY

    @property
    def exemplars(self) -> torch.Tensor:
        """All exemplar latents, float64 ``[N, C, h, w]`` (a copy; model space, = VAE space but for "sd3")."""
        return self._exemplars.reshape(-1, *self.latent_shape).clone()

    def encode(self, prompt: str) -> ToyCond:
        words = parse_prompt(prompt)
        if not words:
            return ToyCond(prompt, words, len(self.labels), self._exemplars, self._norms)
        index = torch.tensor([i for i, labels in enumerate(self.labels) if words <= labels],
                             dtype=torch.long)
        if len(index) == 0:
            raise ValueError(f"prompt: {prompt!r} matches no exemplar (none is labelled with all of "
                             f"{sorted(words)}); a label is one material (sky, grass, ...) or a colour "
                             "and a shape (e.g. 'red circle')")
        return ToyCond(prompt, words, len(index), self._exemplars[index], self._norms[index], index)

    def __call__(self, x: torch.Tensor, sigma, cond: ToyCond) -> torch.Tensor:
        """The posterior mean of x0 given x, per batch item; ``D(x, 0) = x``; output in x.dtype."""
        sigma = self._check_call(x, sigma, cond)
        flat = x.reshape(len(x), -1).double()
        live = sigma > 0
        mean = self._flow_posterior_mean if self.is_flow else self._posterior_mean
        if live.all():
            out = mean(flat, sigma, cond)
        else:  # D(x, 0) = x: the posterior is a point mass at x itself
            out = flat.clone()
            if live.any():
                out[live] = mean(flat[live], sigma[live], cond)
        return out.view(x.shape).to(x.dtype)

    def call_batch(self, x: torch.Tensor, sigma, conds) -> torch.Tensor:
        """One cond per batch item, in one call (the optional batched member of the protocol).

        Items with the same x share their dot products with the exemplars, the costly part, so
        R prompts on one latent cost little more than one call.
        """
        if len(conds) != len(x):
            raise ValueError(f"conds: expected one cond per batch item ({len(x)}), got {len(conds)}")
        sigma = self._check_call(x, sigma, conds[0])
        for cond in conds:
            self._check_call(x[:1], sigma[:1], cond)
        flat = x.reshape(len(x), -1).double()
        out = flat.clone()  # D(x, 0) = x
        dots = {}
        for k, cond in enumerate(conds):
            if sigma[k] <= 0:
                continue
            rep = next((j for j in dots if torch.equal(flat[j], flat[k])), k)
            if rep not in dots:
                dots[rep] = flat[rep] @ self._exemplars.T  # one pass over all exemplars per distinct x
            row = dots[rep] if cond.index is None else dots[rep][cond.index]
            s2 = sigma[k] ** 2
            if self.is_flow:
                a = 1.0 - sigma[k]
                var = a * a * self.mixture_variance + s2
                mean = torch.softmax((a * row - 0.5 * (a * a) * cond.norms) / var, dim=0) @ cond.exemplars
                if self.mixture_variance:
                    mean = (s2 * mean + a * self.mixture_variance * flat[k]) / var
                out[k] = mean
                continue
            # each item's mean needs only its own exemplars (a prompt's are a small subset)
            mean = torch.softmax((row - 0.5 * cond.norms) / (self.mixture_variance + s2), dim=0) @ cond.exemplars
            if self.mixture_variance:
                mean = (s2 * mean + self.mixture_variance * flat[k]) / (self.mixture_variance + s2)
            out[k] = mean
        return out.view(x.shape).to(x.dtype)

    def _posterior_mean(self, x, sigma, cond):
        s2 = sigma ** 2
        var = (self.mixture_variance + s2)[:, None]
        # -||x - X_i||^2 / (2 var) up to a per-row constant; log-sum-exp (softmax) keeps it finite.
        logits = (x @ cond.exemplars.T - 0.5 * cond.norms) / var
        mean = torch.softmax(logits, dim=1) @ cond.exemplars
        if self.mixture_variance == 0:
            return mean
        return (s2[:, None] * mean + self.mixture_variance * x) / var

    def _flow_posterior_mean(self, x, sigma, cond):
        # x = a x0 + sigma n with a = 1 - sigma: x | i ~ N(a X_i, (a^2 v + sigma^2) I)
        a = (1.0 - sigma)[:, None]
        s2 = (sigma ** 2)[:, None]
        var = a * a * self.mixture_variance + s2
        logits = (a * (x @ cond.exemplars.T) - 0.5 * (a * a) * cond.norms) / var
        mean = torch.softmax(logits, dim=1) @ cond.exemplars
        if self.mixture_variance == 0:
            return mean
        return (s2 * mean + a * self.mixture_variance * x) / var

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """RGB float32 ``[B, H, W, 3]`` in [0, 1] (from VAE space: what a session holds)."""
        latent = torch.as_tensor(latent)
        if latent.ndim != 4 or latent.shape[1] != self.latent_channels:
            raise ValueError(f"latent: expected [B, {self.latent_channels}, h, w], got {tuple(latent.shape)}")
        return self.space.decode(latent)

    def encode_image(self, rgb) -> torch.Tensor:
        """RGB ``[H, W, 3]`` or ``[B, H, W, 3]`` in [0, 1] (or uint8) -> float32 latent, for img2img."""
        rgb = as_rgb_batch(rgb)
        if rgb.shape[1] % self.downscale or rgb.shape[2] % self.downscale:
            raise ValueError(f"rgb: height and width must be multiples of {self.downscale}, "
                             f"got {tuple(rgb.shape[1:3])}")
        return self.space.encode(rgb).float()

    def __repr__(self):
        family = "" if self.prediction == "eps" else f", prediction={self.prediction!r}" + (
            f", shift={self.shift}" if self.is_flow else "")
        return (f"ToyWorld(latent={self.latent!r}, seed={self.seed}, n_exemplars={len(self.labels)}, "
                f"image_size={self.image_size}, mixture_variance={self.mixture_variance}, "
                f"textures={self.textures!r}{family})")

    def _check_call(self, x, sigma, cond) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or tuple(x.shape[1:]) != self.latent_shape:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x: expected a tensor [B, {', '.join(map(str, self.latent_shape))}] "
                             f"(latent_channels={self.latent_channels}, image_size={self.image_size}), "
                             f"got {shape}")
        if not isinstance(cond, ToyCond) or cond.exemplars.shape[1] != self._exemplars.shape[1]:
            raise ValueError("cond: expected the result of this model's encode(prompt)")
        sigma = torch.as_tensor(sigma, dtype=torch.float64)
        sigma = sigma.expand(len(x)) if sigma.ndim == 0 else sigma
        if sigma.shape != (len(x),) or not torch.isfinite(sigma).all() or (sigma < 0).any():
            raise ValueError(f"sigma: expected {len(x)} finite values >= 0 (one per batch item), "
                             f"got {sigma.tolist()}")
        if self.is_flow and (sigma > 1).any():
            raise ValueError(f"sigma: a flow model's noise levels lie in [0, 1] (x = (1 - sigma) x0 + sigma n), "
                             f"got {sigma.tolist()}; an EPS-only option (sigma_factor > 1, a fixed VE table) "
                             "scaled them past 1")
        return sigma


PREDICTIONS = ("eps", "v", "flow")


def _build_model_sampling(prediction: str, shift: float):
    if prediction == "eps":
        return sd15_model_sampling()  # float64 table kept: the reference's schedules
    if prediction == "v":
        return ModelSamplingDiscrete(sd15_table(), "v")
    flow = getattr(_model_sampling, "ModelSamplingDiscreteFlow", None)
    if flow is None:
        raise NotImplementedError("prediction='flow': the flow model sampling (CONST) is not available yet")
    return flow(shift=shift, multiplier=1000)


def parse_prompt(prompt) -> frozenset:
    """Known words, split on whitespace and commas, case-insensitive."""
    if not isinstance(prompt, str):
        raise ValueError(f"prompt: expected a string, got {type(prompt).__name__}")
    words = frozenset(w for w in re.split(r"[\s,]+", prompt.lower()) if w)
    unknown = sorted(words - set(VOCABULARY))
    if unknown:
        raise ValueError(f"prompt: unknown word(s) {', '.join(map(repr, unknown))}; "
                         f"ToyWorld knows: {', '.join(VOCABULARY)}")
    return words


def _check_variance(value):
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not (ok and np.isfinite(value) and value >= 0):
        raise ValueError(f"mixture_variance: expected a finite number >= 0, got {value!r}")


def _check_int(value, name, minimum):
    return check_int(value, name, minimum)
