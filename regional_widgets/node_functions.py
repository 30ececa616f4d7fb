"""The two nodes as plain functions: one call builds a `session.RegionalSamplerSession` and runs it to the end.

Re-exported by `session` and by the package (``rw.regional_sampler``, ``rw.regional_sampler_advanced``).
"""
from __future__ import annotations

import torch

__all__ = ["regional_sampler", "regional_sampler_advanced"]


def regional_sampler_advanced(model, latent, *, base, regions, **node_params) -> torch.Tensor:
    """The ``RegionalSamplerAdvanced`` node in one call."""
    from .session import RegionalSamplerSession

    return RegionalSamplerSession(model, latent, base=base, regions=regions, **node_params).run()


def regional_sampler(model, latent, *, base, regions, **node_params) -> torch.Tensor:
    """The ``RegionalSampler`` node in one call."""
    from .session import RegionalSamplerSession

    return RegionalSamplerSession.regional_sampler(model, latent, base=base, regions=regions, **node_params).run()
