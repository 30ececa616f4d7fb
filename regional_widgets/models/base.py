"""The model protocol, classifier-free guidance and empty latents.

A model is any object with these members (no base class needed)::

    class MyModel:
        model_sampling = regional_widgets.sampling.model_sampling.sd15_model_sampling()
        sigmas = model_sampling.sigmas                              # ascending training sigmas
        latent_channels, downscale = 4, 8
        def encode(self, prompt): ...          # -> any conditioning object
        def __call__(self, x, sigma, cond): ... # x [B, C, h, w], sigma [B] -> denoised x0, like x
        def decode(self, latent): ...          # [B, C, h, w] -> float RGB [B, H, W, 3] in [0, 1]

The denoiser follows k-diffusion: given the sampler's state ``x`` at ``sigma`` it predicts ``x0``.
A model declares its sampling (``model_sampling``: parametrisation x schedule, spec
model_families.md §1); every noise operation of a sampler call goes through it. A model with only
``sigmas`` is an EPS model on that table (``x = x0 + sigma * noise``). A flow (CONST) model's state is
``x = (1 - sigma) x0 + sigma * noise``. Optional ``latent_scale_factor``/``latent_shift_factor``: the
latent format, model space = ``(VAE space - shift) * scale`` (`process_in`/`process_out`). Optional
``decode_preview(latent)``: a cheap picture shaped like ``decode``'s, shown per step (`preview_rgb`).
CFG is applied here, once, for every model.
"""
from __future__ import annotations

import copy
import math
from typing import Any, Callable, Protocol, runtime_checkable

import torch

from ..sampling.checks import check_int
from ..sampling.latent_formats import LatentFormat
from ..sampling.samplers.core import GuidedDenoiser


@runtime_checkable
class Model(Protocol):
    """What the sampler, the session and the widgets need from a diffusion model."""

    sigmas: torch.Tensor
    latent_channels: int
    downscale: int

    def encode(self, prompt: str) -> Any:
        """Conditioning for ``prompt``; ``encode("")`` is the unconditional branch."""

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, cond: Any) -> torch.Tensor:
        """The denoised prediction of ``x`` at noise level ``sigma`` (one value per batch item)."""

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """RGB floats in [0, 1], ``[B, H, W, 3]``, for display."""


Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def guide(uncond: torch.Tensor, cond: torch.Tensor, cfg: float) -> torch.Tensor:
    """Classifier-free guidance ``uncond + (cond - uncond) * cfg``, in this order, made in the difference's
    own buffer (the same bits as the expression, one new latent-size tensor instead of three)."""
    scaled = cond - uncond
    scaled.mul_(cfg)
    if scaled.requires_grad:  # autograd has no out= variant: the plain sum
        return uncond + scaled
    return torch.add(uncond, scaled, out=scaled)


def cfg_denoiser(model, positive, negative=None, cfg: float = 1.0) -> GuidedDenoiser:
    """``denoise(x, sigma)`` with classifier-free guidance, ready for `samplers.sample`.

    ``uncond + (cond - uncond) * cfg`` (float32, this order). At ``cfg == 1`` (math.isclose) the
    unconditional call is skipped, as the reference does, so it costs one model call per
    evaluation instead of two. ``negative=None`` means ``model.encode("")``.

    ``denoise.with_uncond(x, sigma) -> (D, U)`` is the evaluation CFG++ samplers make: the same one
    model call (batched models) or two (one-cond models), never the cfg-1 skip, returning the
    guided ``D`` and the raw unconditional prediction ``U`` (the reference's ``uncond_denoised``).
    """
    cfg = float(cfg)
    if not math.isfinite(cfg):
        raise ValueError(f"cfg: expected a finite number, got {cfg!r}")
    skip = math.isclose(cfg, 1.0)
    if negative is None and not skip:
        negative = model.encode("")
    batched = hasattr(model, "call_batch")  # the CFG pair as one call of batch 2
    negatives = [negative]

    def uncond_cond():
        if negatives[0] is None:  # cfg 1: encoded only when a CFG++ sampler asks for it
            negatives[0] = model.encode("")
        return negatives[0]

    def with_uncond(x, sigma):
        if batched:
            return batched_cfg(model, x, sigma, [(positive, uncond_cond(), cfg)], uncond=True)[0]
        uncond = model(x, sigma, uncond_cond())
        cond = model(x, sigma, positive)
        return guide(uncond, cond, cfg), uncond

    def denoise(x, sigma):
        if skip:
            return model(x, sigma, positive)
        if batched:
            return with_uncond(x, sigma)[0]
        uncond = model(x, sigma, uncond_cond())  # `with_uncond`'s two calls and sum, its pair not made
        cond = model(x, sigma, positive)
        return guide(uncond, cond, cfg)

    return GuidedDenoiser(denoise, with_uncond)


def batched_cfg(model, x: torch.Tensor, sigma: torch.Tensor, parts, uncond=False) -> list:
    """The CFG predictions of several (positive, negative, cfg) parts at one (x, sigma), batched.

    Every distinct cond is evaluated once (parts usually share the empty negative). A model with
    the optional ``call_batch(x, sigma, conds)`` (one cond per batch item) gets a single call;
    any other model gets one ``model(x, sigma, cond)`` call per distinct cond.

    ``uncond`` (True, or one flag per part) asks for CFG++'s unconditional channel: every item is
    then a pair ``(D, U)``; a flagged part evaluates its negative even at cfg 1 and has ``U`` its
    raw unconditional prediction, an unflagged one has ``U = None``.
    """
    pairs = uncond is not False
    flags = [bool(uncond)] * len(parts) if isinstance(uncond, bool) else [bool(f) for f in uncond]
    conds, slots = [], {}

    def slot(cond):
        if id(cond) not in slots:
            slots[id(cond)] = len(conds)
            conds.append(cond)
        return slots[id(cond)]

    plan = [(slot(pos), None if math.isclose(float(cfg), 1.0) and not flag else slot(neg), float(cfg))
            for (pos, neg, cfg), flag in zip(parts, flags)]
    batch = len(x)
    if hasattr(model, "call_batch"):
        xs = x.repeat(len(conds), *([1] * (x.ndim - 1)))
        flat = model.call_batch(xs, sigma.repeat(len(conds)), [c for c in conds for _ in range(batch)])
        preds = list(flat.split(batch))
    else:
        preds = [model(x, sigma, c) for c in conds]
    out = []
    for (pos, neg, cfg), flag in zip(plan, flags):
        if neg is None:
            denoised = preds[pos]
        else:
            denoised = guide(preds[neg], preds[pos], cfg)
        out.append((denoised, preds[neg] if flag else None) if pairs else denoised)
    return out


class PromptCache:
    """The one prompt cache: a model's conditioning per key (the prompt and the encoding options),
    computed once and kept (least recently used first out beyond ``maxsize``)."""

    def __init__(self, maxsize: int = 256):
        self.maxsize, self._items = int(maxsize), {}

    def get(self, key, make: Callable[[], Any]):
        if key in self._items:
            self._items[key] = self._items.pop(key)  # most recently used last
        else:
            self._items[key] = make()
            while len(self._items) > self.maxsize:
                del self._items[next(iter(self._items))]
        return self._items[key]

    def clear(self):
        self._items.clear()

    def __len__(self):
        return len(self._items)


def latent_format(model) -> LatentFormat:
    """A model's latent format (`sampling.latent_formats`): its own ``latent_format`` when it is one,
    else one from ``latent_scale_factor``/``latent_shift_factor`` (1 and 0 when it names none)."""
    fmt = getattr(model, "latent_format", None)
    if isinstance(fmt, LatentFormat):
        return fmt
    return LatentFormat("model", float(getattr(model, "latent_scale_factor", 1.0)),
                        float(getattr(model, "latent_shift_factor", 0.0)), int(getattr(model, "latent_channels", 0)))


def process_in(z: torch.Tensor, fmt: LatentFormat) -> torch.Tensor:
    """VAE space -> model space for one sampler call (the all-zero latent stays 0: `to_model_space`)."""
    if fmt.scale_factor == 1.0 and not fmt.shift_factor:
        return z
    return fmt.to_model_space(z)


def process_out(z: torch.Tensor, fmt: LatentFormat) -> torch.Tensor:
    """Model space -> VAE space."""
    if fmt.scale_factor == 1.0 and not fmt.shift_factor:
        return z
    return fmt.process_out(z)


def is_flow_model(model) -> bool:
    """Whether ``model`` declares a flow (CONST) model sampling."""
    sampling = getattr(model, "model_sampling", None)
    return bool(getattr(sampling, "is_const", False))


def display_latent(model, latent: torch.Tensor, sigma) -> torch.Tensor:
    """The picture a held latent really is, for display (VAE space, like ``latent``).

    On a flow (CONST) model the reference hands latents between its calls as ``x / (1 - sigma)`` =
    ``x0 + noise * sigma / (1 - sigma)`` (spec model_families.md §2.1): ~27x the noise after the first
    SD3 step. This returns the flow state ``(1 - sigma) * latent`` (in model space), a picture with noise
    of std sigma <= 1 as a flow sampler sees it. ``sigma``: a number, or a map at latent resolution (the
    session's ``sigma_map``); None, 0 everywhere (no leftover noise) or an EPS/V model: ``latent`` itself.
    """
    if sigma is None or latent is None or not is_flow_model(model):
        return latent
    sigma = torch.as_tensor(sigma, dtype=latent.dtype, device=latent.device)
    if not bool(torch.count_nonzero(sigma)):  # weight 1: the latent bit for bit, not a scale round trip
        return latent
    fmt = latent_format(model)
    weight = (1.0 - sigma).clamp(0.0, 1.0)
    return process_out(weight * process_in(latent, fmt), fmt)


def preview_rgb(model, latent: torch.Tensor, full: bool = False) -> torch.Tensor:
    """The one way a latent becomes a picture on screen: RGB float ``[B, H, W, 3]`` in [0, 1], on the CPU.

    ``model.decode_preview`` where the model has one (the diffusers families: linear latent-to-RGB
    factors, no VAE call), else ``model.decode`` (ToyWorld's decode is itself cheap). ``full``: always
    ``model.decode`` (the VAE). ``latent`` is what to show: pass `display_latent`'s picture on a flow
    model (`plot.picture` does), this function does not re-apply it.
    """
    preview = None if full else getattr(model, "decode_preview", None)
    with torch.no_grad():
        rgb = preview(latent) if callable(preview) else model.decode(latent)
    return rgb.clamp(0, 1).cpu()


def with_model_sampling(model, model_sampling):
    """``model`` with another model sampling, as ComfyUI's ModelSamplingSD3/ModelSamplingFlux nodes patch a
    checkpoint: the same model (``model`` itself when nothing changes), a shallow copy otherwise.

    A flow model may get any flow sampling; a `ToyWorld` (exact for every family) any sampling. Other
    models cannot change family: ValueError.
    """
    current = getattr(model, "model_sampling", None)
    if current is not None and type(current) is type(model_sampling) and repr(current) == repr(model_sampling):
        return model
    from .toyworld import ToyWorld

    if not (is_flow_model(model) and model_sampling.is_const) and not isinstance(model, ToyWorld):
        raise ValueError(f"model: its sampling {current!r} cannot become {model_sampling!r} (a different family)")
    patched = copy.copy(model)
    patched.model_sampling, patched.sigmas = model_sampling, model_sampling.sigmas
    if isinstance(model, ToyWorld):
        patched.prediction = "flow" if model_sampling.is_const else model_sampling.parametrisation
        patched.is_flow = model_sampling.is_const
        patched.shift = float(getattr(model_sampling, "shift", model.shift))
    return patched


def _positive_int(value, name: str) -> int:
    return check_int(value, name, 1, accepted="a positive integer")


def empty_latent(model, height: int, width: int, batch: int = 1) -> torch.Tensor:
    """Zeros ``[batch, C, height / downscale, width / downscale]`` for an image of that size."""
    down = model.downscale
    for name, value in (("height", height), ("width", width)):
        if _positive_int(value, name) % down:
            raise ValueError(f"{name}: expected a positive multiple of the model's downscale "
                             f"({down}), got {value}")
    batch = _positive_int(batch, "batch")
    return torch.zeros(batch, model.latent_channels, height // down, width // down)


class OneCondModel:
    """Another model seen through the plain protocol only (no ``call_batch``), counting its calls.

    For benchmarks and tests that compare batched and one-by-one evaluation, or that need the
    inputs a session really sends (``record=True`` keeps every ``(x, sigma, cond)``).
    """

    def __init__(self, model, record: bool = False):
        self.model, self.record, self.calls, self.inputs = model, record, 0, []
        self.sigmas, self.latent_channels, self.downscale = model.sigmas, model.latent_channels, model.downscale
        if hasattr(model, "model_sampling"):  # schedules bit for bit (float64 table kept)
            self.model_sampling = model.model_sampling
        for name in ("latent_scale_factor", "latent_shift_factor"):
            if hasattr(model, name):
                setattr(self, name, getattr(model, name))

    def encode(self, prompt):
        return self.model.encode(prompt)

    def decode(self, latent):
        return self.model.decode(latent)

    def __call__(self, x, sigma, cond):
        self.calls += 1
        if self.record:
            self.inputs.append((x, sigma, cond))
        return self.model(x, sigma, cond)
