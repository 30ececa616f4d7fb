"""The reference's latent formats: how a VAE latent (the LATENT dict) maps to the model's space.

``process_in(z) = (z - shift) * scale`` on the way into a sampler call and
``process_out(z) = z / scale + shift`` on the way out (spec model_families.md §2.4, §5). The sampler
guide skips ``process_in`` for an all-zero latent, so an empty latent is 0 in model space, not
``-shift * scale``: that is `to_model_space`. All of Impact's intermediate latents are VAE-space.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LatentFormat:
    """``scale_factor``, ``shift_factor`` (0 where the reference has none) and ``channels``."""

    name: str
    scale_factor: float
    shift_factor: float = 0.0
    channels: int = 4

    def process_in(self, latent: torch.Tensor) -> torch.Tensor:
        """VAE space -> model space: ``(z - shift) * scale`` (no shift: ``z * scale``)."""
        if self.shift_factor:
            return (latent - self.shift_factor) * self.scale_factor
        return latent * self.scale_factor

    def process_out(self, latent: torch.Tensor) -> torch.Tensor:
        """Model space -> VAE space: ``z / scale + shift``."""
        if self.shift_factor:
            return latent / self.scale_factor + self.shift_factor
        return latent / self.scale_factor

    def to_model_space(self, latent: torch.Tensor) -> torch.Tensor:
        """`process_in`, except that an all-zero latent stays zero (the reference's empty-latent rule)."""
        if not bool(torch.count_nonzero(latent)):
            return latent
        return self.process_in(latent)


LATENT_FORMATS = {
    "SD15": LatentFormat("SD15", 0.18215),
    "SDXL": LatentFormat("SDXL", 0.13025),
    "SD3": LatentFormat("SD3", 1.5305, 0.0609, 16),
    "Flux": LatentFormat("Flux", 0.3611, 0.1159, 16),
}
