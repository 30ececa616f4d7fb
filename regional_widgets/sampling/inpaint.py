"""The ``noise_mask`` mechanics of one sampler call (inpainting).

Outside the mask the model *sees* the call's input latent re-noised to the current sigma with
the call's own noise, and its prediction there is replaced by that latent. The sampler's own x is
never overwritten: whatever its update does outside the mask stays in its state.
"""
from __future__ import annotations

import torch


def _per_item(sigma: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return sigma.reshape(sigma.shape[:1] + (1,) * (like.ndim - 1))


def masked_denoiser(denoise, latent_image: torch.Tensor, noise: torch.Tensor, mask: torch.Tensor):
    """Wrap ``denoise(x, sigma)`` so only the area where ``mask`` (latent-shaped) is 1 is denoised."""
    keep = 1.0 - mask

    def masked(x, sigma):
        renoised = latent_image + noise * _per_item(sigma, noise)
        x_in = x * mask + renoised * keep
        return denoise(x_in, sigma) * mask + latent_image * keep

    return masked
