"""The recovery ("additional") sampler: a second pass that repairs what SDE/UniPC samplers break.

Active only for the samplers in `RECOVERY_SAMPLERS` and a mode other than DISABLE. Pass 1 runs
the chosen sampler with sigmas scaled by ``1 - r`` ("ratio between") or 1 ("ratio additional");
pass 2 restores the pre-call latent outside the call's mask, then runs the recovery sampler on the
same step range with sigmas scaled by ``r``, without a second composite.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from . import masks as mask_ops
from .call import CallResult
from .samplers.dpm_solver import ZeroSigmaError

ADDITIONAL_MODES = ("DISABLE", "ratio additional", "ratio between")
ADDITIONAL_SAMPLERS = ("AUTO", "euler", "heun", "heunpp2", "dpm_2", "dpm_fast", "dpmpp_2m", "ddpm")
RECOVERY_SAMPLERS = ("uni_pc", "uni_pc_bh2", "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m_sde",
                     "dpmpp_2m_sde_gpu", "dpmpp_3m_sde", "dpmpp_3m_sde_gpu")


def check_additional(mode, sampler, ratio) -> None:
    if mode not in ADDITIONAL_MODES:
        raise ValueError(f"additional_mode: unknown value {mode!r}; accepted: {', '.join(ADDITIONAL_MODES)}")
    if sampler not in ADDITIONAL_SAMPLERS:
        raise ValueError(f"additional_sampler: unknown value {sampler!r}; accepted: {', '.join(ADDITIONAL_SAMPLERS)}")
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 <= ratio <= 1.0:
        raise ValueError(f"additional_sigma_ratio: expected a number in [0, 1], got {ratio!r}")


def recovery_active(sampler: str, mode: str) -> bool:
    return mode != "DISABLE" and sampler in RECOVERY_SAMPLERS


def recovery_sampler(sampler: str, choice: str) -> str:
    if choice != "AUTO":
        return choice
    return "dpm_fast" if sampler in ("uni_pc", "uni_pc_bh2", "dpmpp_sde", "dpmpp_sde_gpu") else "dpmpp_2m"


def sample_with_recovery(
    run: Callable[..., CallResult],
    latent: torch.Tensor,
    *,
    sampler: str,
    sigma_factor: float,
    mode: str,
    additional_sampler: str,
    ratio: float,
    noise_mask: Optional[torch.Tensor],
    noise: Optional[torch.Tensor] = None,
) -> list[tuple[str, CallResult]]:
    """All passes of one wrapper call; ``run(sampler, latent, sigma_ratio, noise)`` is one call.

    Returns ``[(sampler_name, result), ...]`` for each pass made; the last result is the output.
    """
    if not recovery_active(sampler, mode):
        return [(sampler, run(sampler, latent, sigma_factor, noise))]
    passes = []
    first_ratio = 1.0 - ratio if mode == "ratio between" else 1.0
    out = latent
    if first_ratio > 0:
        try:
            result = run(sampler, latent, first_ratio * sigma_factor, noise)
            passes.append((sampler, result))
            out = result.output
        except ZeroSigmaError:  # a slice with no positive sigma: the pass is a no-op
            pass
    if ratio > 0:
        second = recovery_sampler(sampler, additional_sampler)
        restored = out if noise_mask is None else mask_ops.composite(latent, out, noise_mask)
        try:
            passes.append((second, run(second, restored, ratio * sigma_factor, None)))
        except ZeroSigmaError:
            passes.append((second, CallResult(restored, restored, None)))
    if not passes:
        passes.append((sampler, CallResult(latent, latent, None)))
    return passes
