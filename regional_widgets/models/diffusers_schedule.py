"""The diffusers backend's noise side: a scheduler config as sigma table, timestep map and model sampling.

A UNet checkpoint's ``scheduler/scheduler_config.json`` gives its training sigma table
(`discrete_sigmas`) and ``prediction_type``; `sigma_to_timestep` turns a sigma into the UNet's
timestep (`TIMESTEP_MAPS`); `model_sampling_for` builds the reference's model sampling for a family
(EPS/V on the table for the UNet families, the family's flow schedule for SD3 and Flux; spec
model_families.md §1-§3). Used by `diffusers.DiffusersModel`; needs torch only.
"""
from __future__ import annotations

import math
from typing import Mapping

import torch

from ..sampling.model_sampling import (ModelSamplingDiscrete, flux_model_sampling, flux_schnell_model_sampling,
                                       sd3_model_sampling)
from ..sampling.schedules import as_model_sampling

TIMESTEP_MAPS = ("argmin", "log_interp", "table")
PREDICTION_TYPES = ("epsilon", "v_prediction")


def discrete_sigmas(scheduler_config: Mapping, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The ascending training sigma table of a diffusers scheduler config (float64 math, ``dtype`` out;
    the model sampling keeps the float64 table, as the reference).

    Reads ``num_train_timesteps``, ``beta_schedule`` (``scaled_linear``, ``linear`` or
    ``squaredcos_cap_v2``), ``beta_start``, ``beta_end`` and ``trained_betas``, with diffusers'
    defaults for missing keys. SD1.5's config gives exactly `schedules.sd15_sigmas`.
    """
    config = dict(scheduler_config)
    if config.get("rescale_betas_zero_snr"):
        raise ValueError("scheduler_config: rescale_betas_zero_snr gives sigma_max = inf, which the "
                         "sigma-space samplers cannot start from; not supported")
    n = int(config.get("num_train_timesteps", 1000))
    start, end = float(config.get("beta_start", 0.0001)), float(config.get("beta_end", 0.02))
    schedule = config.get("beta_schedule", "linear")
    if config.get("trained_betas") is not None:
        betas = torch.tensor(config["trained_betas"], dtype=torch.float64)
    elif schedule == "scaled_linear":
        betas = torch.linspace(start ** 0.5, end ** 0.5, n, dtype=torch.float64) ** 2
    elif schedule == "linear":
        betas = torch.linspace(start, end, n, dtype=torch.float64)
    elif schedule == "squaredcos_cap_v2":
        def alpha_bar(t):
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
        betas = torch.tensor([min(1 - alpha_bar((i + 1) / n) / alpha_bar(i / n), 0.999) for i in range(n)],
                             dtype=torch.float64)
    else:
        raise ValueError(f"scheduler_config: beta_schedule {schedule!r} is not supported; accepted: "
                         "scaled_linear, linear, squaredcos_cap_v2 (or trained_betas)")
    alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
    return (((1 - alphas_cumprod) / alphas_cumprod) ** 0.5).to(dtype)


def sigma_to_timestep(sigma, sigmas, method: str = "argmin") -> torch.Tensor:
    """The UNet timestep of each ``sigma`` on the ascending table ``sigmas`` (float64, same shape).

    ``sigmas``: the table (a tensor) or a `schedules.ModelSampling`.

    - ``"argmin"`` (the reference tool, ComfyUI): the integer ``t`` nearest in log space,
      ``argmin_t |log sigma - log sigma_t|`` (`ModelSampling.timestep`).
    - ``"log_interp"`` (k-diffusion's ``sigma_to_t``; diffusers' ``_sigma_to_t``, which places custom,
      Karras and exponential sigmas and DPM-2's midpoints): fractional, linear in log sigma between the
      neighbouring entries, ``t = k + (log sigma - log sigma_k) / (log sigma_{k+1} - log sigma_k)`` with
      ``sigma_k <= sigma < sigma_{k+1}``. The inverse of `ModelSampling.sigma`.
    - ``"table"`` (the inverse of diffusers' default ``interpolation_type="linear"``, which places the
      sigmas of its ``timestep_spacing`` schedules): fractional, linear in sigma itself,
      ``t = k + (sigma - sigma_k) / (sigma_{k+1} - sigma_k)``, i.e. ``numpy.interp(sigma, sigmas, arange(T))``.

    All three give ``t`` itself at a table entry ``sigma_t`` and clamp to [0, T - 1] outside the table.
    """
    if method not in TIMESTEP_MAPS:
        raise ValueError(f"timestep_map: unknown name {method!r}; accepted: {', '.join(TIMESTEP_MAPS)}")
    sampling = as_model_sampling(sigmas)
    sigma = torch.as_tensor(sigma).detach().cpu()
    if method == "argmin":
        return sampling.timestep(sigma.float()).double()
    table = sampling.sigmas.double()
    value = sigma.double().reshape(-1)
    if method == "log_interp":
        table, value = table.log(), value.clamp_min(1e-10).log()
    low = (torch.searchsorted(table, value, right=True) - 1).clamp(0, len(table) - 2)
    w = ((value - table[low]) / (table[low + 1] - table[low])).clamp(0, 1)
    return (low + w).view(sigma.shape)


def model_sampling_for(family: str, config: dict):
    """The reference's model sampling for ``family``: SD3 and Flux get the family's flow schedule whatever
    the config says; the UNet families get EPS or V (``prediction_type``) on the config's sigma table."""
    if str(config.get("_class_name", "")).startswith("EDM"):
        raise ValueError(f"scheduler_config: {config['_class_name']} (an EDM model such as Playground 2.5) "
                         "is not supported; discrete EPS/V and flow models only")
    if family == "sd3":
        return sd3_model_sampling()  # DiscreteFlow(shift 3, x1000) x CONST, whatever the config's shift
    if family == "flux_dev":
        return flux_model_sampling()  # Flux(mu 1.15) x CONST: the reference without the ModelSamplingFlux node
    if family == "flux_schnell":
        return flux_schnell_model_sampling()  # DiscreteFlow(shift 1, x1) x CONST
    prediction_type = config.get("prediction_type", "epsilon")
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"scheduler_config: prediction_type {prediction_type!r} is not supported; "
                         f"accepted: {', '.join(PREDICTION_TYPES)}")
    return ModelSamplingDiscrete(discrete_sigmas(config, torch.float64),
                                 "v" if prediction_type == "v_prediction" else "eps")
