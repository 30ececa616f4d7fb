"""The ``noise_mask`` mechanics of one sampler call (inpainting).

Outside the mask the model *sees* the call's input latent re-noised to the current sigma with
the call's own noise, and its prediction there is replaced by that latent. The sampler's own x is
never overwritten: whatever its update does outside the mask stays in its state.

For CFG++ samplers the guided prediction is blended the same way, the unconditional one is not
(the reference stores it from inside CFG, before the blend).
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from . import masks as mask_ops
from .samplers.core import GuidedDenoiser, denoise_with_uncond


class LatentMask(NamedTuple):
    """A call's ``noise_mask`` prepared for its latent: ``mask`` shaped, placed and typed like it, ``keep = 1 - mask``;
    ``binary``: every value is 0 or 1 (then ``x * mask + x * keep`` is ``x``, bit for bit, for a finite x)."""

    mask: torch.Tensor
    keep: torch.Tensor
    binary: bool = False


def latent_mask(noise_mask: torch.Tensor, like: torch.Tensor) -> LatentMask:
    """``noise_mask`` (any resolution) as a sampler call on a latent like ``like`` uses it (`masks.to_latent`).

    A mask that is the same for every batch item and channel (a resized 2-D mask always is) is kept
    once, shaped ``[1, 1, h, w]``: it broadcasts to the same products, and each use reads a third of
    the bytes (a quarter for a 4-channel latent)."""
    mask = mask_ops.to_latent(noise_mask, like.shape).to(like.device, like.dtype)
    if mask.ndim == 4 and mask.shape[:2] != (1, 1) and torch.equal(mask, mask[:1, :1].expand_as(mask)):
        mask = mask[:1, :1].contiguous()
    return LatentMask(mask, 1.0 - mask, bool(((mask == 0) | (mask == 1)).all()))


def _per_item(sigma: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return sigma.reshape(sigma.shape[:1] + (1,) * (like.ndim - 1))


def masked_denoiser(denoise, latent_image: torch.Tensor, noise: torch.Tensor, mask: torch.Tensor,
                    model_sampling=None, keep=None, renoised_latent=None, passthrough=False):
    """Wrap ``denoise(x, sigma)`` so only the area where ``mask`` (latent-shaped) is 1 is denoised.

    The kept area is re-noised by the model sampling's ``noise_scaling(sigma, noise, latent)``
    (EPS: ``latent + sigma * noise``; flow: ``sigma * noise + (1 - sigma) * latent``); None: EPS.
    ``keep``: ``1.0 - mask`` when the caller has it (`LatentMask`). ``renoised_latent``: that re-noised
    latent when it is the same at every sigma, made once by the caller (EPS/V without noise: ``noise + latent``).
    ``passthrough``: the caller vouches that ``mask`` is 0/1 (`LatentMask.binary`) and ``renoised_latent``
    finite; then an evaluation at ``renoised_latent`` itself (a call's first) gets it as the model input:
    ``x * mask + x * keep`` is ``x`` bit for bit there (``x * 1`` is x, ``x * 0`` a zero of x's sign).
    """
    keep = 1.0 - mask if keep is None else keep
    plain = denoise.denoise if type(denoise) is GuidedDenoiser else denoise  # what its __call__ calls

    def model_input(x, sigma):
        if renoised_latent is not None:
            if passthrough and x is renoised_latent:
                return x
            return mask_ops.blend(x, renoised_latent, mask, keep)
        if model_sampling is None:
            renoised = latent_image + noise * _per_item(sigma, noise)
        else:
            renoised = model_sampling.noise_scaling(sigma, noise, latent_image)
        return mask_ops.blend(x, renoised, mask, keep)

    def masked(x, sigma):
        return mask_ops.blend(plain(model_input(x, sigma), sigma), latent_image, mask, keep)

    def masked_with_uncond(x, sigma):
        denoised, uncond = denoise_with_uncond(denoise, model_input(x, sigma), sigma)
        return mask_ops.blend(denoised, latent_image, mask, keep), uncond

    return GuidedDenoiser(masked, masked_with_uncond)
