"""Node checks: the rules a session's values must keep together (latent, masks, prompts, step range).

Each value is checked alone by its `params` trait; the checks here need more than one value (a mask
against the image size its latent implies, a prompt against the model, ``start_at_step`` against
``steps`` and ``end_at_step``). They are plain functions over values and raise `ParameterError`;
the session calls them with the proposed value in place before anything is stored.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch

from .params import MAX_STEPS, ParameterError
from .regions import Region
from .sampling.flow_checks import check_sigma_factor

__all__ = ["check_latent", "check_mask_size", "check_prompts", "check_regions", "check_run", "image_size",
           "unpack_latent"]


def unpack_latent(latent) -> tuple:
    """``(samples, batch_index)`` of a latent given as a tensor or as ComfyUI's dict."""
    batch_index = None
    if isinstance(latent, dict):
        if "samples" not in latent:
            raise ParameterError("latent: a dict latent needs a 'samples' tensor")
        batch_index = latent.get("batch_index")
        latent = latent["samples"]
    return latent, batch_index


def image_size(latent, model) -> Optional[tuple]:
    """(height, width) of the image ``latent`` implies for ``model`` (None: not a 4-D latent)."""
    shape = getattr(latent, "shape", ())
    if len(shape) != 4:
        return None
    down = int(getattr(model, "downscale", 1))
    return int(shape[-2]) * down, int(shape[-1]) * down


def check_latent(x, model, batch_index: Optional[list] = None) -> torch.Tensor:
    """A float tensor [B, C, h, w] of finite values with the model's channels (an all-zero latent is
    widened as the reference's fix_empty_latent_channels does) and one batch item per ``batch_index``."""
    if isinstance(x, np.ndarray):
        if x.dtype.kind != "f":
            raise ParameterError(f"latent: expected a float tensor [B, C, h, w], got dtype {x.dtype}")
        x = torch.from_numpy(np.array(x))
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or not x.is_floating_point():
        raise ParameterError("latent: expected a float tensor [B, C, h, w] (or a dict with 'samples')")
    if 0 in x.shape:
        raise ParameterError(f"latent: expected a non-empty tensor [B, C, h, w] (every size at least 1), "
                             f"got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ParameterError("latent: expected finite values (found NaN or inf)")
    channels = model.latent_channels
    if x.shape[1] != channels:
        if torch.count_nonzero(x) == 0:  # the reference's fix_empty_latent_channels
            x = x.repeat(1, math.ceil(channels / x.shape[1]), 1, 1)[:, :channels]
        else:
            raise ParameterError(f"latent: expected {channels} channels for this model, got {x.shape[1]}")
    if batch_index is not None and x.shape[0] != len(batch_index):
        raise ParameterError(f"latent: expected {len(batch_index)} batch items (one per batch_index), "
                             f"got {x.shape[0]}")
    return x


def check_mask_size(mask, size: Optional[tuple], where: str):
    """The mask is ``size`` (the image size the latent implies; None: nothing to check against)."""
    if size is not None and tuple(mask.shape) != size:
        h, w = mask.shape
        raise ParameterError(f"{where}mask: expected the image size the latent implies, {size[0]}x{size[1]} "
                             f"(height x width), got {h}x{w}; resize it on purpose with Region.resized()")


def check_regions(regions, size: Optional[tuple]):
    """Regions, one mask shape, the image size ``size``."""
    shape = None
    for j, region in enumerate(regions, 1):
        if not isinstance(region, Region):
            raise ParameterError(f"regions: item {j} must be a Region, got {type(region).__name__}")
        if shape is not None and region.mask.shape != shape:
            raise ParameterError(f"regions: every mask must have one shape; region 1 is {shape}, "
                                 f"region {j} is {region.mask.shape}")
        shape = region.mask.shape
    for j, region in enumerate(regions, 1):
        check_mask_size(region.mask, size, f"region {j}: ")


def check_prompts(config, model, prompts, where: str):
    """The config's options suit the model and its prompts encode (kept in the `PromptCache` ``prompts``)."""
    try:  # the reference's EPS-only option on a flow model (spec model_families.md §2.5)
        check_sigma_factor(config.sigma_factor, model)
    except ValueError as err:
        raise ParameterError(f"{where}: {err}") from None
    for prompt in (config.positive, config.negative):
        try:
            prompts.get(prompt, lambda: model.encode(prompt))
        except ValueError as err:
            raise ParameterError(f"{where}: {err}") from None


def check_run(node: str, *, steps, start_at_step, end_at_step, denoise):
    """The step range: RegionalSamplerAdvanced starts before it ends; RegionalSampler's stretched
    schedule (steps / denoise) stays within MAX_STEPS."""
    if node == "RegionalSamplerAdvanced":
        end = min(steps, end_at_step)
        if start_at_step >= end:
            raise ParameterError(f"start_at_step: expected less than min(steps, end_at_step) = {end}, "
                                 f"got {start_at_step}")
    else:
        total = int(steps / denoise)
        if total > MAX_STEPS:
            raise ParameterError(f"denoise: steps / denoise = {steps} / {denoise!r} = {total} schedule "
                                 f"steps, over the maximum {MAX_STEPS}; expected denoise >= "
                                 f"{steps / MAX_STEPS:g} for {steps} steps")
