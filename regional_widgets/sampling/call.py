"""One sampler call over a step range, as the reference's ``separated_sample`` makes it.

A call slices the sampler's schedule to ``[start, end]``, scales it by ``sigma_ratio``, adds the
call's noise to the latent, runs the sampler under the ``noise_mask`` mechanics and returns the
sampler's final x (``leftover``) or its last x0 prediction. Everything here works in model space.

Every noise operation goes through the model's sampling (spec model_families.md §2.1, §2.2): the
call's start ``noise_scaling(sigma_0, noise, latent, max_denoise)``, the masked re-noise of the kept
area, and the end ``inverse_noise_scaling(sigma_end, x)``. EPS/V: ``latent + sigma * noise`` and no
rescale; flow (CONST): ``sigma * noise + (1 - sigma) * latent`` and ``x / (1 - sigma_end)``, so a
call that stops at sigma' > 0 returns ``x0 + noise * sigma' / (1 - sigma')``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import warnings

import torch

from . import masks as mask_ops  # noqa: F401 - `inpaint.latent_mask` resizes through it (tests patch it here)
from .flow_checks import FlowModelWarning, check_flow_sigmas
from .model_sampling import as_model_sampling
from .inpaint import LatentMask, latent_mask as prepare_mask, masked_denoiser
from .noise import BrownianTreeNoiseSampler, ddim_inpaint_noise, is_max_denoise, noise_scaling, prepare_noise
from .samplers import get_sampler, start as start_sampler, step as step_sampler
from .samplers.core import (GuidedDenoiser, begin as begin_sampler, check_sigmas, denoise_with_uncond, final_sigma,
                            sigma_batch)
from .schedules import slice_steps


# The SDE samplers Impact wraps with a tree over the total schedule (not the heun variants, §1.4).
TOTAL_BOUNDS_TREE = ("dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m_sde", "dpmpp_2m_sde_gpu", "dpmpp_3m_sde",
                     "dpmpp_3m_sde_gpu")


@dataclass(frozen=True)
class CallPlan:
    """What one call will run: its sigmas (None = no-op) and the total schedule's SDE bounds.

    ``checked``: the sigmas passed the checks `sampler_call` makes on them (`checked_plan`), so a
    call given this plan does not make them again. ``prepared``: the sampler's per-step scalars of
    these sigmas (`samplers.core.begin`), made with the plan; None where the sampler has none.
    ``first``/``first_value``/``last_value``: ``sigmas[0]`` and the first and last sigma as floats (checked plans).
    ``batches``: the per-item sigmas the calls made with a prepared plan hand their model (`samplers.core.sigma_batch`),
    made by `warm_batches` (its rule evaluates at the prepared sigma tensors, the same objects call after call);
    a call uses them once they are made, and otherwise makes its own as before.
    """

    sigmas: Optional[torch.Tensor]
    brownian_bounds: Optional[tuple]
    checked: bool = False
    prepared: Optional[tuple] = None
    first: Optional[torch.Tensor] = None
    first_value: Optional[float] = None
    last_value: Optional[float] = None
    batches: dict = field(default_factory=dict, compare=False, repr=False)


def plan_call(total_sigmas: torch.Tensor, start: int, end: int, leftover: bool, sigma_ratio: float = 1.0) -> CallPlan:
    sigmas, total = slice_steps(total_sigmas, start, end, force_full_denoise=not leftover)
    positive = total[total > 0]
    bounds = (positive.min(), total.max()) if len(positive) else None
    return CallPlan(None if sigmas is None else sigmas * sigma_ratio, bounds)


def warm_batches(plan: CallPlan, like: torch.Tensor) -> None:
    """Make now the per-item sigmas a call with ``plan`` hands its model on a latent like ``like`` (each prepared
    step's evaluation sigma, `samplers.core.sigma_batch`), so that a run does not make them mid-run."""
    if plan.prepared is not None:
        for scalars in plan.prepared:
            sigma_batch(scalars[0], like, plan.batches)


def checked_plan(total_sigmas: torch.Tensor, start: int, end: int, leftover: bool, sigma_ratio: float = 1.0, *,
                 sampler: str, const: bool) -> CallPlan:
    """`plan_call` with the checks `sampler_call` makes on its sigmas done once (same errors, same
    order): for a caller that makes the same call many times (an engine's run) and hands the plan
    to `sampler_call` (``plan=``). ``const``: the call's model sampling is a flow (CONST) one."""
    plan = plan_call(total_sigmas, start, end, leftover, sigma_ratio)
    if plan.sigmas is None:
        return plan
    if const:
        check_flow_sigmas(plan.sigmas, f"{sampler} call")
    check_sigmas(plan.sigmas)
    spec = get_sampler(sampler)
    prepared = spec.prepare(plan.sigmas) if spec.prepare is not None and not spec.const_offset else None
    first = plan.sigmas[0]
    return CallPlan(plan.sigmas, plan.brownian_bounds, True, prepared, first, float(first), float(plan.sigmas[-1]))


@dataclass
class CallResult:
    samples: torch.Tensor  # the sampler's final x
    denoised: torch.Tensor  # the last x0 prediction the callback saw (x when none was made)
    sigmas: Optional[torch.Tensor]  # the sigmas run (None: the call was a no-op)
    model_calls: int = 0
    leftover: bool = True
    return_x0: bool = True  # faithful quirk: without leftover noise the reference returns the x0 prediction

    @property
    def output(self) -> torch.Tensor:
        """What the reference returns: x with leftover noise, else the last x0 prediction."""
        return self.samples if self.leftover or not self.return_x0 else self.denoised


def sampler_call(
    denoise: Callable,
    latent: torch.Tensor,
    *,
    sampler: str,
    total_sigmas: torch.Tensor,
    start: int,
    end: int,
    leftover: bool,
    add_noise: bool,
    seed: int,
    sigma_max,
    sigma_ratio: float = 1.0,
    noise: Optional[torch.Tensor] = None,
    noise_mask: Optional[torch.Tensor] = None,
    batch_index=None,
    callback: Optional[Callable] = None,
    sampler_seed: Optional[int] = None,
    return_x0: bool = True,
    model_sampling=None,
    plan: Optional[CallPlan] = None,
    latent_mask: Optional[LatentMask] = None,
    zeros: Optional[torch.Tensor] = None,
) -> CallResult:
    """Run one sampler call (all its steps) and return its x and last x0 prediction.

    ``noise`` given is used even when ``add_noise`` is False (the reference's behaviour, which
    RegionalSampler's re-noise path relies on). ``noise_mask`` is at any resolution.
    ``sampler_seed`` seeds the per-step noise of ancestral-type samplers (default: ``seed``, as the
    reference, which reseeds on every call); ``return_x0=False`` makes `CallResult.output` x always.
    ``model_sampling`` (or the model that has one): every noise operation goes through it (None: an
    EPS model), and samplers whose rule needs it (sa_solver, the CONST branches) get it.
    ``CallResult.samples`` is the sampler's final x after the end-of-call rescale.
    ``plan``: this call's `checked_plan` (``total_sigmas``, ``start``, ``end``, ``leftover`` and
    ``sigma_ratio`` are then not read), for a caller that makes the same call again and again.
    ``latent_mask``: ``noise_mask`` as this function prepares it for ``latent`` (`inpaint.latent_mask`),
    made once by such a caller; only read where ``noise_mask`` is given. ``zeros``: ``torch.zeros_like(latent)``
    made once by such a caller (the noise of a call without any), never written to.
    """
    spec = get_sampler(sampler)
    if plan is None:
        plan = plan_call(total_sigmas, start, end, leftover, sigma_ratio)
    if plan.sigmas is None:
        return CallResult(latent, latent, None, 0, leftover, return_x0)
    sigmas = plan.sigmas
    ms = None if model_sampling is None else as_model_sampling(model_sampling)
    const = ms is not None and ms.is_const
    if const:
        if not plan.checked:
            check_flow_sigmas(sigmas, f"{sampler} call")
        if sampler == "ddpm":
            warnings.warn("ddpm on a flow (CONST) model: the reference's ddpm has no CONST branch (its VP step "
                          "divides by sqrt(1 + sigma^2)) and converges to the wrong spread; prefer euler, heun or "
                          "dpmpp_2m (as the recovery sampler too)", FlowModelWarning, stacklevel=2)
    zero_noise = noise is None and not add_noise  # the noise is all +0 (below)
    if noise is None:
        noise = prepare_noise(latent, seed, batch_index) if add_noise else \
            torch.zeros_like(latent) if zeros is None else zeros
    if noise.dtype != latent.dtype or noise.device != latent.device:
        noise = noise.to(latent.device, latent.dtype)
    calls = [0]
    plain = denoise.denoise if type(denoise) is GuidedDenoiser else denoise  # what its __call__ calls

    def counted(x, sigma):
        calls[0] += 1
        return plain(x, sigma)

    def counted_with_uncond(x, sigma):  # CFG++: still one evaluation
        calls[0] += 1
        return denoise_with_uncond(denoise, x, sigma)

    model = GuidedDenoiser(counted, counted_with_uncond)
    first = sigmas[0] if plan.first is None else plan.first
    max_denoise = is_max_denoise(sigma_max, first if plan.first_value is None else plan.first_value)
    # EPS/V without noise: ``noise * s + latent`` where ``noise * s`` is all +0 for a checked sigma s (finite, >= 0),
    # so the start is ``noise + latent`` bit for bit (not from pure noise: its scale sqrt(1 + s^2) may overflow)
    # (``latent + 0.0``: the same sums as ``noise + latent`` for an all +0 noise, without reading the noise)
    held = zero_noise and plan.checked and ms is not None and not const
    x = latent + 0.0 if held and not max_denoise else noise_scaling(first, noise, latent, max_denoise) \
        if ms is None else ms.noise_scaling(first, noise, latent, max_denoise)
    if noise_mask is not None:
        prepared = latent_mask if latent_mask is not None else prepare_mask(noise_mask, latent)
        inpaint_random = getattr(spec, "inpaint_random", False)
        inpaint_noise = ddim_inpaint_noise(noise, seed) if inpaint_random else noise
        # and so is the masked re-noise of a rule that evaluates at the plan's sigmas only (a prepared one): the
        # start x itself (a start that overflowed is not finite and is refused before any evaluation)
        same = held and plan.prepared is not None and not inpaint_random
        # (passthrough: x is checked finite before any evaluation, `begin`)
        model = masked_denoiser(model, latent, inpaint_noise, prepared.mask, model_sampling=ms, keep=prepared.keep,
                                renoised_latent=x if same else None, passthrough=same and prepared.binary)
    if plan.batches:  # made by `warm_batches` (never here: long-lived tensors made mid-run pin the heap's top)
        model.batches = plan.batches
    noise_sampler = None
    if sampler in TOTAL_BOUNDS_TREE and plan.brownian_bounds is not None:
        # The reference spans the tree over the *total* schedule, so split calls share one path.
        noise_sampler = BrownianTreeNoiseSampler(x, *plan.brownian_bounds, seed, cpu=spec.noise == "brownian")
    seed = seed if sampler_seed is None else sampler_seed
    if plan.checked:  # the sigmas were checked with the plan: the rest of `start`'s checks, then `begin`
        state = begin_sampler(spec, x, sigmas, seed=seed, noise_sampler=noise_sampler, model_sampling=model_sampling,
                              prepared=plan.prepared)
    else:
        state = start_sampler(sampler, x, sigmas, seed=seed, noise_sampler=noise_sampler,
                              model_sampling=model_sampling)
    last_denoised = None
    while not state.done:
        state = step_sampler(model, state)
        if state.denoised is not None:
            last_denoised = state.denoised
        if callback is not None:
            callback(state)
    denoised = state.x if last_denoised is None else last_denoised
    samples = state.x if not const else ms.inverse_noise_scaling(final_sigma(sampler, sigmas), state.x)
    return CallResult(samples, denoised, sigmas, calls[0], leftover, return_x0)
