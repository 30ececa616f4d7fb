"""Options the reference leaves EPS-only, checked against the model's sampling.

On a flow (CONST) model sigmas live in (0, 1]: the call's start weights the latent by ``1 - sigma``
and its end divides by ``1 - sigma_end`` (spec model_families.md §2.1). The reference has options
built on the EPS idea that sigma can be scaled freely (§2.5, regional_sampler.md §3.6.6):
- ``sigma_factor > 1`` (KSamplerAdvancedProvider) pushes the first sigma of a full run above 1:
  negative latent weight, then NaN from every sampler with a flow-lambda or RF branch -> an error;
- any sigma list with entries above 1 (a hand-made list, the AYS/GITS fixed VE tables, which this
  project does not offer) -> an error, `check_flow_sigmas`;
- ``ddpm`` as the recovery (additional) sampler: EPS/VP-only, no flow branch; it runs and stays
  finite but samples the wrong spread (std 0.66 instead of 0.5 on the Gaussian toy) -> a warning,
  since the reference does run it.
Each check does nothing on an EPS/V model. The session layer calls them where the option is set.
"""
from __future__ import annotations

import warnings

import torch

from .model_sampling import is_const

EPS_ONLY_RECOVERY_SAMPLERS = ("ddpm",)


class FlowModelWarning(UserWarning):
    """An option the reference allows on a flow model but that only makes sense on EPS models."""


def check_sigma_factor(sigma_factor: float, model_sampling) -> None:
    """Raise ValueError for ``sigma_factor > 1`` on a flow (CONST) model, naming why."""
    if is_const(model_sampling) and float(sigma_factor) > 1.0:
        raise ValueError(
            f"sigma_factor: {sigma_factor!r} > 1 is EPS-only; on a flow (CONST) model sigmas must stay "
            f"<= 1 (a full run starts at 1, scaled above 1 the latent gets weight 1 - sigma < 0 and the "
            f"flow samplers return NaN); use a factor <= 1")


def check_flow_sigmas(sigmas, model_sampling, name: str = "sigmas") -> None:
    """Raise ValueError if a sigma list for a flow (CONST) model has entries above 1."""
    if not is_const(model_sampling):
        return
    sigmas = torch.as_tensor(sigmas)
    if (sigmas > 1).any():
        raise ValueError(
            f"{name}: a flow (CONST) model's sigmas are in [0, 1], got max {float(sigmas.max()):.6g}; "
            f"EPS-style lists (AYS/GITS tables, sigma_factor > 1) give negative latent weights and NaN here")


def check_recovery_sampler(additional_sampler: str, model_sampling, active: bool = True) -> None:
    """Warn (`FlowModelWarning`) when an EPS/VP-only recovery sampler will run on a flow model."""
    if active and is_const(model_sampling) and additional_sampler in EPS_ONLY_RECOVERY_SAMPLERS:
        warnings.warn(
            f"additional_sampler: {additional_sampler!r} is EPS/VP-only in the reference (its step divides by "
            f"sqrt(1 + sigma^2) and has no flow branch); on this flow (CONST) model it runs as the reference "
            f"does but samples the wrong spread. Prefer AUTO, euler, heun or dpmpp_2m.",
            FlowModelWarning, stacklevel=2)
