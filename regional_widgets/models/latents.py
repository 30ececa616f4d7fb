"""Linear latent spaces between RGB pictures and model latents.

Both spaces work on RGB scaled to [-1, 1] (Stable Diffusion's convention): ``decode`` maps back to
[0, 1] and clamps, for display.
- `PixelSpace`: the latent *is* the picture in [-1, 1], 3 channels, downscale 1.
- `SDPreviewSpace`: 4 channels at 1/8 resolution, decoded by the fixed SD1.5 latent-to-RGB preview
  factors (what ComfyUI shows while sampling) and encoded by their pseudo-inverse after averaging
  8x8 blocks, so image-resolution masks shrink to latent resolution exactly as with a real SD model.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

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
        rgb = torch.einsum("bchw,cr->brhw", latent.double(), self.to_rgb)
        # Nearest upsampling shows the latent's true resolution, and encode's block average undoes it.
        rgb = F.interpolate(rgb, scale_factor=self.downscale, mode="nearest")
        return ((rgb.float() + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1).contiguous()


LATENT_SPACES = {"pixels": PixelSpace, "sd": SDPreviewSpace}
