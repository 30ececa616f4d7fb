"""The diffusers backend's pictures: VAE-space latents to RGB (exact and fast preview) and back.

Every latent the session holds is in *VAE space* (the AutoencoderKL's own latent, what ComfyUI's
VAEDecode decodes); the sampler's model space is ``(VAE space - shift) * scale``
(`DiffusersModel.latent_format`). `VAEImages` is the part of `diffusers.DiffusersModel` that works
in VAE space: `decode`, `decode_preview`, `set_preview_factors`, `encode_image`.
"""
from __future__ import annotations

import torch

from .families import fit_latent_rgb
from .latents import as_rgb_batch, linear_preview


class VAEImages:
    """The picture side of `diffusers.DiffusersModel` (a mixin).

    Reads the model's ``vae``, ``latent_channels``, ``downscale``, ``latent_scale_factor`` and its preview
    state ``_preview`` (an `latents.SDPreviewSpace` for SD1.x/SD2.x, else None) and ``_preview_factors``.
    """

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """A VAE-space latent through the VAE: RGB float32 ``[B, H, W, 3]`` in [0, 1], on the CPU."""
        latent = self._check_latent(latent)
        with torch.no_grad():
            image = self.vae.decode(latent.to(self.vae.device, self.vae.dtype)).sample
        return (image.float() / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).cpu().contiguous()

    def decode_preview(self, latent: torch.Tensor) -> torch.Tensor:
        """A fast linear preview of a VAE-space latent (no VAE call per step), same shape as `decode`.

        SD1.x/SD2.x: the SD1.5 latent-to-RGB factors on the model-space latent (what the reference
        shows). Other families (4 or 16 channels): linear factors fitted once on this VAE's own encoder
        (`families.fit_latent_rgb`, one small encoder call, then cached) or set with `set_preview_factors`.
        """
        latent = self._check_latent(latent)
        if self._preview is not None:
            return self._preview.decode(latent.detach().cpu().double() * self.latent_scale_factor)
        if self._preview_factors is None:
            self._preview_factors = fit_latent_rgb(self.vae, self.latent_channels)
        return linear_preview(latent.detach().cpu(), *self._preview_factors, self.downscale)

    def set_preview_factors(self, weights, bias=None):
        """Use your own latent-to-RGB factors (``[C, 3]`` on VAE-space latents, optional bias ``[3]``)."""
        weights = torch.as_tensor(weights, dtype=torch.float64)
        if weights.shape != (self.latent_channels, 3):
            raise ValueError(f"weights: expected [{self.latent_channels}, 3], got {tuple(weights.shape)}")
        bias = torch.zeros(3, dtype=torch.float64) if bias is None else torch.as_tensor(bias, dtype=torch.float64)
        self._preview, self._preview_factors = None, (weights, bias.reshape(3))

    def encode_image(self, rgb) -> torch.Tensor:
        """RGB ``[H, W, 3]`` or ``[B, H, W, 3]`` in [0, 1] (or uint8) -> VAE-space float32 latent (the
        posterior mean, deterministic), on the CPU, for img2img."""
        rgb = as_rgb_batch(rgb)
        if rgb.shape[1] % self.downscale or rgb.shape[2] % self.downscale:
            raise ValueError(f"rgb: height and width must be multiples of {self.downscale}, "
                             f"got {tuple(rgb.shape[1:3])}")
        pixels = (rgb * 2 - 1).permute(0, 3, 1, 2).to(self.vae.device, self.vae.dtype)
        with torch.no_grad():
            return self.vae.encode(pixels).latent_dist.mean.float().cpu()

    def _check_latent(self, latent) -> torch.Tensor:
        latent = torch.as_tensor(latent)
        if latent.ndim != 4 or latent.shape[1] != self.latent_channels:
            raise ValueError(f"latent: expected [B, {self.latent_channels}, h, w], got {tuple(latent.shape)}")
        return latent
