"""Sigma schedules by the reference's names, over a model's sampling (its sigma table and maps).

A model's noise levels are an ascending table ``sigma_t`` (t = 0..T-1): the discrete table of an
EPS/V model, or a flow model's shifted table in (0, 1] (`model_sampling.ModelSamplingDiscreteFlow`,
``ModelSamplingFlux``; spec model_families.md §3). Every scheduler picks ``steps`` values from it (or
from its range, through the model sampling's ``timestep``/``sigma``) and appends the final 0.
Schedules are computed in the reference's float order, so from a model sampling that keeps its
float64 table (`model_sampling.sd15_model_sampling`, the built-in EPS model's) they are the
reference's bit for bit; from a bare float32 table ``normal``/``sgm_uniform`` may differ by a few
ulps (see `model_sampling`). On flow tables they match the reference's lists to its printed digits.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .checks import check_int
from .model_sampling import ModelSamplingDiscrete, as_model_sampling, sd15_model_sampling, sd15_table

ModelSampling = ModelSamplingDiscrete  # the older name of a discrete table's sampling, kept for callers
# (not `model_sampling.ModelSampling`, the base class of every model sampling)

SCHEDULER_NAMES = (
    "simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta", "normal",
    "linear_quadratic", "kl_optimal",
)
# Samplers whose schedule is computed for steps + 1 and then loses its second-to-last sigma.
DISCARD_PENULTIMATE_SAMPLERS = ("dpm_2", "dpm_2_ancestral", "uni_pc", "uni_pc_bh2")


def sd15_sigmas() -> torch.Tensor:
    """The SD1.5 discrete sigma table (float32): scaled-linear betas 0.00085..0.012, 1000 steps.

    A bare float32 table; for the reference's schedules bit for bit use `sd15_model_sampling()`,
    which keeps the float64 table its log-sigmas come from.
    """
    return sd15_table().float()


def _normal(ms: ModelSamplingDiscrete, steps: int, sgm: bool = False) -> torch.Tensor:
    start, end = ms.timestep(ms.sigma_max), ms.timestep(ms.sigma_min)
    append_zero = True
    if sgm:
        timesteps = torch.linspace(float(start), float(end), steps + 1)[:-1]
    else:
        if math.isclose(float(ms.sigma(end)), 0, abs_tol=1e-5):  # zero-terminal-SNR tables
            steps, append_zero = steps + 1, False
        timesteps = torch.linspace(float(start), float(end), steps)
    sigs = [float(ms.sigma(t)) for t in timesteps]
    return torch.tensor(sigs + [0.0] * append_zero, dtype=torch.float32)


def _simple(ms: ModelSamplingDiscrete, steps: int) -> torch.Tensor:
    stride = len(ms.sigmas) / steps
    sigs = [float(ms.sigmas[-(1 + int(x * stride))]) for x in range(steps)]
    return torch.tensor(sigs + [0.0], dtype=torch.float32)


def _ddim_uniform(ms: ModelSamplingDiscrete, steps: int) -> torch.Tensor:
    # The count is not always steps + 1: the stride is an integer division of the table length.
    t = 1
    if math.isclose(float(ms.sigmas[t]), 0, abs_tol=1e-5):
        steps, sigs = steps + 1, []
    else:
        sigs = [0.0]
    stride = max(len(ms.sigmas) // steps, 1)
    while t < len(ms.sigmas):
        sigs.append(float(ms.sigmas[t]))
        t += stride
    return torch.tensor(sigs[::-1], dtype=torch.float32)


def _karras(ms: ModelSamplingDiscrete, steps: int, rho: float = 7.0) -> torch.Tensor:
    ramp = torch.linspace(0, 1, steps)
    min_inv_rho = float(ms.sigma_min) ** (1 / rho)
    max_inv_rho = float(ms.sigma_max) ** (1 / rho)
    sigmas = (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho
    return torch.cat([sigmas, sigmas.new_zeros([1])])


def _exponential(ms: ModelSamplingDiscrete, steps: int) -> torch.Tensor:
    sigmas = torch.linspace(math.log(float(ms.sigma_max)), math.log(float(ms.sigma_min)), steps).exp()
    return torch.cat([sigmas, sigmas.new_zeros([1])])


def _beta(ms: ModelSamplingDiscrete, steps: int, alpha: float = 0.6, beta: float = 0.6) -> torch.Tensor:
    from scipy import stats

    last_t = len(ms.sigmas) - 1
    ts = np.rint(stats.beta.ppf(1 - np.linspace(0, 1, steps, endpoint=False), alpha, beta) * last_t)
    sigs, previous = [], -1
    for t in ts:
        if t != previous:  # quantiles that round to the same timestep give one sigma
            sigs.append(float(ms.sigmas[int(t)]))
        previous = t
    return torch.tensor(sigs + [0.0], dtype=torch.float32)


def _linear_quadratic(ms: ModelSamplingDiscrete, steps: int, threshold: float = 0.025) -> torch.Tensor:
    if steps == 1:
        return torch.stack([ms.sigma_max, torch.zeros(())])
    lin = steps // 2
    linear = [i * threshold / lin for i in range(lin)]
    step_diff = lin - threshold * steps
    quad = steps - lin
    quad_coef = step_diff / (lin * quad ** 2)
    lin_coef = threshold / lin - 2 * step_diff / (quad ** 2)
    const = quad_coef * lin ** 2
    quadratic = [quad_coef * i ** 2 + lin_coef * i + const for i in range(lin, steps)]
    schedule = linear + quadratic + [1.0]
    return torch.tensor([1.0 - v for v in schedule], dtype=torch.float32) * ms.sigma_max


def _kl_optimal(ms: ModelSamplingDiscrete, steps: int) -> torch.Tensor:
    """``tan`` of a straight line in ``atan(sigma)`` from sigma_max to sigma_min, then 0.

    Deliberate difference: with 1 step the reference divides 0 by 0 and returns ``[nan, 0]``;
    we return the one sensible schedule, ``[sigma_max, 0]``.
    """
    if steps == 1:
        return torch.tensor([float(ms.sigma_max), 0.0])
    frac = torch.arange(steps, dtype=torch.float32) / (steps - 1)
    sigmas = torch.zeros(steps + 1)
    atan_min, atan_max = math.atan(float(ms.sigma_min)), math.atan(float(ms.sigma_max))
    sigmas[:-1] = (frac * atan_min + (1 - frac) * atan_max).tan()
    return sigmas


_SCHEDULERS = {
    "simple": _simple,
    "sgm_uniform": lambda ms, n: _normal(ms, n, sgm=True),
    "karras": _karras,
    "exponential": _exponential,
    "ddim_uniform": _ddim_uniform,
    "beta": _beta,
    "normal": _normal,
    "linear_quadratic": _linear_quadratic,
    "kl_optimal": _kl_optimal,
}


def check_steps(steps, name: str = "steps") -> int:
    return check_int(steps, name, 1)


def check_scheduler(scheduler) -> str:
    if scheduler not in _SCHEDULERS:
        raise ValueError(f"scheduler: unknown name {scheduler!r}; accepted: {', '.join(SCHEDULER_NAMES)}")
    return scheduler


def calculate_sigmas(model_sigmas, scheduler: str, steps: int) -> torch.Tensor:
    """The descending sigma schedule (usually ``steps + 1`` long, ending in 0) of a scheduler.

    ``model_sigmas`` is a model sampling (discrete, discrete flow or Flux), a model (its
    ``model_sampling``, else its ``sigmas``) or a bare ascending table. From SD1.5's model sampling
    every scheduler gives the reference's float32 list bit for bit (``kl_optimal`` with 1 step
    excepted, see `_kl_optimal`); a bare float32 table cannot, since the reference's log-sigmas
    come from its float64 table, so ``normal`` and ``sgm_uniform`` may then move by a few ulps.
    """
    check_scheduler(scheduler)
    steps = check_steps(steps)
    return _SCHEDULERS[scheduler](as_model_sampling(model_sigmas), steps)


def sampler_sigmas(model_sigmas, sampler: str, scheduler: str, steps: int) -> torch.Tensor:
    """The schedule a sampler runs on: `calculate_sigmas` plus the discard-penultimate rule."""
    if sampler in DISCARD_PENULTIMATE_SAMPLERS:
        sigmas = calculate_sigmas(model_sigmas, scheduler, check_steps(steps) + 1)
        return torch.cat([sigmas[:-2], sigmas[-1:]])
    return calculate_sigmas(model_sigmas, scheduler, steps)


def ksampler_sigmas(model_sigmas, sampler: str, scheduler: str, steps: int, denoise: float = 1.0):
    """KSampler's schedule: with ``denoise < 1`` the tail of a longer schedule."""
    steps = check_steps(steps)
    if not math.isfinite(denoise):
        raise ValueError(f"denoise: expected a finite number in [0, 1], got {denoise!r}")
    if denoise >= 0.9999:
        return sampler_sigmas(model_sigmas, sampler, scheduler, steps)
    if denoise <= 0.0:
        return torch.zeros(0)
    sigmas = sampler_sigmas(model_sigmas, sampler, scheduler, int(steps / denoise))
    return sigmas[-(steps + 1):]


def slice_steps(sigmas: torch.Tensor, start: int, end: int, force_full_denoise: bool) -> tuple:
    """KSamplerAdvanced's step range, the one place it is cut: ``(sigmas[start:end+1] or None, total)``.

    The end is forced to 0 if asked; as in the reference that 0 is written into the total schedule
    too (a copy of ``sigmas``, returned second: the SDE samplers span their Brownian tree over it).
    The slice is None when ``start`` is past the schedule (the reference then returns its input).
    """
    total = sigmas.clone()
    cut = total
    if end < len(total) - 1:
        cut = total[: end + 1]
        if force_full_denoise:
            cut[-1] = 0  # a view: total's entry at end is zeroed too
    return (cut[start:] if start < len(cut) - 1 else None), total


def slice_sigmas(sigmas: torch.Tensor, start: int, end: int, force_full_denoise: bool):
    """KSamplerAdvanced's step range (`slice_steps` without the total schedule); None past its end."""
    return slice_steps(sigmas, start, end, force_full_denoise)[0]
