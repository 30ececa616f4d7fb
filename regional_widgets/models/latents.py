"""Linear latent spaces between RGB pictures and model latents.

Both spaces work on RGB scaled to [-1, 1] (Stable Diffusion's convention): ``decode`` maps back to
[0, 1] and clamps, for display.
- `PixelSpace`: the latent *is* the picture in [-1, 1], 3 channels, downscale 1.
- `SDPreviewSpace`: 4 channels at 1/8 resolution, decoded by the fixed SD1.5 latent-to-RGB preview
  factors (what ComfyUI shows while sampling) and encoded by their pseudo-inverse after averaging
  8x8 blocks, so image-resolution masks shrink to latent resolution exactly as with a real SD model.
- `SD3StyleSpace`: 16 channels at 1/8 resolution in *VAE space* with SD3's latent format
  (model space = ``(z - 0.0609) * 1.5305``, spec model_families.md §5). Model-space latents are a
  fixed orthonormal 16x3 embedding of the block-averaged RGB (our own factors, not SD3's preview
  factors), scaled so each channel varies about as much as the picture does.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..sampling.latent_formats import LATENT_FORMATS

SD15_LATENT_RGB_FACTORS = torch.tensor([
    [0.3512, 0.2297, 0.3227],
    [0.3250, 0.4974, 0.2350],
    [-0.2829, 0.1762, 0.2721],
    [-0.2120, -0.2616, -0.7177],
], dtype=torch.float64)


def as_rgb_batch(rgb, name: str = "rgb") -> torch.Tensor:
    """``[H, W, 3]`` or ``[B, H, W, 3]`` floats in [0, 1] (or uint8) -> float64 ``[B, H, W, 3]``."""
    rgb = rgb if isinstance(rgb, torch.Tensor) else torch.as_tensor(np.asarray(rgb))
    rgb = rgb.double() / 255 if rgb.dtype == torch.uint8 else rgb.double()
    if rgb.ndim == 3:
        rgb = rgb[None]
    if rgb.ndim != 4 or rgb.shape[-1] != 3:
        raise ValueError(f"{name}: expected [H, W, 3] or [B, H, W, 3], got shape {tuple(rgb.shape)}")
    return rgb


def linear_preview(latent: torch.Tensor, weights: torch.Tensor, bias=None, downscale: int = 8) -> torch.Tensor:
    """``[B, C, h, w]`` -> RGB float32 ``[B, h*down, w*down, 3]`` in [0, 1] by a linear map to [-1, 1]
    (``weights [C, 3]``, optional ``bias [3]``, float64), upsampled nearest: the latent's true resolution,
    which ``encode``'s block average undoes. Every linear latent-to-RGB preview goes through here."""
    rgb = torch.einsum("bchw,cr->brhw", latent.double(), weights.double())
    if bias is not None:
        rgb = rgb + bias.double().view(1, 3, 1, 1)
    rgb = F.interpolate(rgb, scale_factor=downscale, mode="nearest")
    return ((rgb.float() + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1).contiguous()


class PixelSpace:
    channels, downscale = 3, 1

    def encode(self, rgb: torch.Tensor) -> torch.Tensor:
        """float ``[B, H, W, 3]`` in [0, 1] -> ``[B, 3, H, W]`` in [-1, 1] (same dtype)."""
        return (rgb * 2 - 1).permute(0, 3, 1, 2)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        return ((latent.float() + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1).contiguous()


class SDPreviewSpace:
    channels, downscale = 4, 8

    def __init__(self, downscale: int = 8):
        self.downscale = int(downscale)
        self.to_rgb = SD15_LATENT_RGB_FACTORS  # [4, 3]
        self.from_rgb = torch.linalg.pinv(self.to_rgb)  # [3, 4]; from_rgb @ to_rgb = I

    def encode(self, rgb: torch.Tensor) -> torch.Tensor:
        blocks = F.avg_pool2d((rgb * 2 - 1).permute(0, 3, 1, 2), self.downscale)
        return torch.einsum("brhw,rc->bchw", blocks, self.from_rgb.to(rgb.dtype))

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        return linear_preview(latent, self.to_rgb, downscale=self.downscale)


def _sd3_style_factors() -> torch.Tensor:
    """``[16, 3]``: model-space latent -> RGB. Columns are DCT-II basis vectors 0..2 (orthonormal),
    times sqrt(3/16), so ``pinv`` spreads a pixel's RGB over the 16 channels at unit variance each."""
    k = torch.arange(16, dtype=torch.float64)
    basis = torch.stack([torch.cos(torch.pi * (k + 0.5) * j / 16) for j in range(3)], dim=1)
    basis = basis / basis.norm(dim=0, keepdim=True)
    return basis * (3 / 16) ** 0.5


class SD3StyleSpace:
    """16 channels at 1/8 resolution, VAE space with SD3's latent format (scale 1.5305, shift 0.0609).

    ``encode``/``decode`` speak VAE space (what a session holds); ``process_in``/``process_out`` are the
    reference's latent-format maps to and from model space (where the denoiser works).
    """

    channels, downscale = 16, 8
    latent_format = LATENT_FORMATS["SD3"]

    def __init__(self, downscale: int = 8):
        self.downscale = int(downscale)
        self.to_rgb = _sd3_style_factors()  # [16, 3]
        self.from_rgb = torch.linalg.pinv(self.to_rgb)  # [3, 16]

    def process_in(self, z: torch.Tensor) -> torch.Tensor:
        return self.latent_format.process_in(z)

    def process_out(self, z: torch.Tensor) -> torch.Tensor:
        return self.latent_format.process_out(z)

    def encode(self, rgb: torch.Tensor) -> torch.Tensor:
        blocks = F.avg_pool2d((rgb * 2 - 1).permute(0, 3, 1, 2), self.downscale)
        return self.process_out(torch.einsum("brhw,rc->bchw", blocks, self.from_rgb.to(rgb.dtype)))

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        return linear_preview(self.process_in(latent.double()), self.to_rgb, downscale=self.downscale)


LATENT_SPACES = {"pixels": PixelSpace, "sd": SDPreviewSpace, "sd3": SD3StyleSpace}
