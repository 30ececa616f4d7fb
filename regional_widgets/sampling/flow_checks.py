"""Options the reference leaves EPS-only, refused or warned about on a flow (CONST) model.

On a flow model sigmas live in [0, 1]: a call's start weights the latent by ``1 - sigma`` and its
end divides by ``1 - sigma_end`` (spec model_families.md §2.1). The reference has options built on
the EPS idea that sigma can be scaled freely (§2.5, regional_sampler.md §3.6.6):
- ``sigma_factor > 1`` (KSamplerAdvancedProvider) pushes the first sigma of a full run above 1 and
  any fixed VE table (AYS/GITS, which this project does not offer) starts at 14.6: negative latent
  weight, then NaN from every sampler with a flow-lambda or RF branch. `check_flow_sigmas` refuses
  such a list where a call is made; `check_sigma_factor` refuses the option itself, for parameter
  validation before any run.
- ``ddpm`` (as a sampler or the recovery sampler) is EPS/VP-only: it runs and stays finite but
  samples the wrong spread (std 0.66 instead of 0.5 on the Gaussian toy): a `FlowModelWarning`,
  since the reference does run it (the sampler call warns).
"""
from __future__ import annotations

import torch

from .model_sampling import is_const


class FlowModelWarning(UserWarning):
    """An option the reference leaves EPS-only, used on a flow (CONST) model."""


def check_flow_sigmas(sigmas, what: str = "sigmas") -> None:
    """Refuse sigmas above 1 for a flow model: its state ``(1 - s) x0 + s n`` has no meaning there (the
    reference then weights the latent by ``1 - s < 0``, divides by ``1 - s`` and returns NaN or garbage)."""
    sigmas = torch.as_tensor(sigmas)
    top = float(sigmas.max()) if sigmas.numel() else 0.0
    if top > 1.0:
        raise ValueError(f"{what}: a flow (CONST) model's sigmas lie in [0, 1], got {top:.6g}; sigma_factor > 1 "
                         "(or a fixed VE table such as AYS/GITS) is an EPS-only option: use sigma_factor <= 1 "
                         "on a flow model")


def check_sigma_factor(sigma_factor: float, model_sampling) -> None:
    """Refuse ``sigma_factor > 1`` on a flow (CONST) model (or a model that has one); nothing on EPS/V."""
    if is_const(model_sampling) and float(sigma_factor) > 1.0:
        raise ValueError(
            f"sigma_factor: {sigma_factor!r} > 1 is EPS-only; on a flow (CONST) model sigmas must stay "
            f"<= 1 (a full run starts at 1; scaled above 1 the latent gets weight 1 - sigma < 0 and the "
            f"flow samplers return NaN); use a factor <= 1")
