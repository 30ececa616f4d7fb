"""Coherent mode: regional sampling that keeps every sampler's detail, order and noise.

The faithful loop (faithful.py) steps each region from a latent the base call already moved, in
1-step calls that forget multistep history and reuse one noise draw. Here instead, at step i the
base and every region start from the same composite ``x_i`` at ``sigma_i`` (the base schedule's
grid), each advances its own full-latent copy one step with its own sampler and keeps its own
state across steps, and the new composite is the blend ``sum_r w_r x_r'`` with weights that
partition unity (``regional_weights``). Stochastic samplers share one fresh draw per step (one
per-run stream), SDE samplers one Brownian path; the first model evaluation of all parts at
``(x_i, sigma_i)`` is one batched call (`models.base.batched_cfg`).

No noise_mask mechanics, no recovery pass and no re-noising are needed here.

The initial noise goes through the model's sampling (``noise_scaling``). On a flow (CONST) model the
published latents are the leftover-noise form the faithful mode hands over, ``x / (1 - sigma)``
(``inverse_noise_scaling``), so both modes' latents read the same way; the sampler state x is kept.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import torch
import torch.nn.functional as F

from .models.base import PromptCache, batched_cfg, latent_format, process_in, process_out
from .faithful import RunState, make_noise
from .node_params import NodeParams
from .program import Op
from .sampling import masks as mask_ops
from .sampling.call import check_flow_sigmas
from .sampling.latent_formats import LatentFormat
from .sampling.model_sampling import as_model_sampling
from .sampling.noise import BrownianTreeNoiseSampler, StepNoise, is_max_denoise
from .sampling.samplers import get_sampler, start as start_sampler, step as step_sampler
from .sampling.samplers.core import sigma_batch
from .sampling.schedules import ksampler_sigmas, sampler_sigmas, slice_sigmas

OWN_GRID_SAMPLERS = ("dpm_fast", "dpm_adaptive")  # integrate on a grid of their own: fresh per step


def feather(mask: torch.Tensor, width: int) -> torch.Tensor:
    """A soft mask: the box average over ``width`` pixels (odd-sized, centred), at mask resolution."""
    if width <= 1:
        return mask.clone()
    k = width | 1
    return F.avg_pool2d(mask[None, None], k, stride=1, padding=k // 2, count_include_pad=False)[0, 0]


def regional_weights(masks, latent_hw, overlap_factor: int, active=None):
    """Blend weights at latent resolution: ``[w_base, w_1, ..., w_R]``, summing to 1 everywhere.

    Each region weighs its feathered mask, normalised where the regions' masks sum past 1; the
    base gets what is left. ``active`` (per region) switches regions off (weight 0).
    """
    h, w = latent_hw
    soft = [mask_ops.resize(feather(m, overlap_factor), h, w) for m in masks]
    if active is not None:
        soft = [m if on else torch.zeros_like(m) for m, on in zip(soft, active)]
    total = sum(soft) if soft else torch.zeros(h, w)
    scale = torch.clamp(total, min=1.0)
    return [torch.clamp(1.0 - total, min=0.0)] + [m / scale for m in soft]


@dataclass(frozen=True)
class CoherentPlan:
    sigmas: torch.Tensor  # the shared grid (base schedule, sliced)
    base_only: int  # leading steps in which only the base moves (RegionalSampler's base_only_steps)


@dataclass(frozen=True)
class CoherentState:
    """Coherent mode's state between sub-steps (`RunState.extra`): the composite ``x_i`` in model
    space, each part's sampler state (None: a sampler started afresh every step), and since the last
    blend each part's output and x0 prediction, and the step's batched first evaluations."""

    x: torch.Tensor
    parts: tuple
    outputs: tuple = ()
    denoised: tuple = ()
    first: Optional[tuple] = None


def plan_coherent(session) -> tuple[list, CoherentPlan]:
    """The sub-steps of a coherent run: per step, each part's step, then the blend. ``session``: a
    `NodeParams` (or anything with its names)."""
    base = session.base
    if session.node == "RegionalSamplerAdvanced":
        total = sampler_sigmas(session.model, base.sampler, base.scheduler, session.steps)
        sigmas = slice_sigmas(total, session.start_at_step, session.end_at_step,
                              not session.return_with_leftover_noise)
        base_only = 0
    else:
        sigmas = ksampler_sigmas(session.model, base.sampler, base.scheduler, session.steps, session.denoise)
        base_only = session.base_only_steps
    sigmas = sigmas * base.sigma_factor
    if as_model_sampling(session.model).is_const:
        check_flow_sigmas(sigmas, "coherent schedule")
    n = 0 if sigmas is None else len(sigmas) - 1
    R = len(session.regions)
    ops = []
    for i in range(n):
        text = f"{i + 1}/{n} steps (coherent)"
        ops.append(Op(kind="base", group=i, i=i, start=i, end=i + 1, status=text,
                      progress=(i * (R + 1) + 1) / (n * (R + 1))))
        for j in range(1, R + 1):
            ops.append(Op(kind="region", group=i, i=i, region=j, start=i, end=i + 1, status=f"{text} | {j}/{R}",
                          progress=(i * (R + 1) + j + 1) / (n * (R + 1))))
        ops.append(Op(kind="blend", group=i, i=i, start=i, end=i + 1, status=f"{text} | blend", progress=(i + 1) / n))
    return ops, CoherentPlan(sigmas, base_only)


@dataclass
class CoherentContext:
    model: object
    configs: list  # SamplerConfig of the base, then each region
    conds: list  # (positive, negative, cfg) per part
    weights: list  # [w_base, w_1, ...] at latent resolution
    weights_base_only: list
    plan: CoherentPlan
    noise: torch.Tensor  # the initial noise (VAE space), touched by the regions' variation noise
    add_noise: bool
    seed: int
    latent_scale: float = 1.0
    latent_masks: Optional[list] = None
    latent_format: Optional[LatentFormat] = None  # VAE <-> model space (None: the identity)

    @property
    def fmt(self) -> LatentFormat:
        return self.latent_format or LatentFormat("model", self.latent_scale)

    @property
    def model_sampling(self):
        return as_model_sampling(self.model)

    def to_latent(self, x: torch.Tensor, sigma) -> torch.Tensor:
        """A sampler state at ``sigma`` as the latent the session publishes (VAE space; flow: x / (1 - sigma))."""
        ms = self.model_sampling
        if ms.is_const:
            x = ms.inverse_noise_scaling(sigma, x)
        return process_out(x, self.fmt)


def build_coherent_context(session, prompts: Optional[PromptCache], plan: CoherentPlan, noise: torch.Tensor, seed: int,
                           add_noise: bool):
    model = session.model
    configs = [session.base] + [r.config for r in session.regions]
    prompts = PromptCache() if prompts is None else prompts

    def encode(prompt):
        return prompts.get(prompt, lambda: model.encode(prompt))

    conds = [(encode(c.positive), encode(c.negative), c.cfg) for c in configs]
    hw = session.latent_image.shape[-2:]
    masks = [r.mask_tensor for r in session.regions]
    weights = regional_weights(masks, hw, session.overlap_factor)
    base_only = regional_weights(masks, hw, session.overlap_factor, active=[False] * len(masks))
    fmt = latent_format(model)
    return CoherentContext(model, configs, conds, weights, base_only, plan, noise, add_noise, seed, fmt.scale_factor,
                           latent_format=fmt)


def _start_parts(ctx: CoherentContext, x: torch.Tensor) -> tuple:
    sigmas = ctx.plan.sigmas
    positive = sigmas[sigmas > 0]
    tree = None
    brownian = ("brownian", "brownian_gpu")  # one CPU path for all parts, _gpu ones included
    if any(get_sampler(c.sampler).noise in brownian for c in ctx.configs) and len(positive):
        tree = BrownianTreeNoiseSampler(x, positive.min(), sigmas.max(), ctx.seed)  # one path for all parts
    parts = []
    for config in ctx.configs:
        noise = tree if get_sampler(config.sampler).noise in brownian else None
        if config.sampler in OWN_GRID_SAMPLERS:
            parts.append(None)  # started afresh on [sigma_i, sigma_i+1] at every step
        else:
            parts.append(start_sampler(config.sampler, x, sigmas, seed=ctx.seed, noise_sampler=noise,
                                       model_sampling=ctx.model))
    return tuple(parts)


class _FirstEvalCache:
    """The part's denoiser, answering the step's first evaluation from the batched call.

    ``with_uncond`` is the CFG++ channel (`samplers.core.GuidedDenoiser`): ``(D, U)``.
    """

    def __init__(self, ctx, part: int, x, sigma, first, first_uncond=None):
        self.ctx, self.part, self.x, self.sigma, self.first = ctx, part, x, sigma, first
        self.first_uncond = first_uncond
        self.calls = 0

    def _is_first(self, x, sigma):
        return x is self.x and bool(torch.all(sigma == self.sigma))

    def __call__(self, x, sigma):
        if self._is_first(x, sigma):
            return self.first
        self.calls += 1
        pos, neg, cfg = self.ctx.conds[self.part]
        return batched_cfg(self.ctx.model, x, sigma, [(pos, neg, cfg)])[0]

    def with_uncond(self, x, sigma):
        if self.first_uncond is not None and self._is_first(x, sigma):
            return self.first, self.first_uncond
        self.calls += 1
        pos, neg, cfg = self.ctx.conds[self.part]
        return batched_cfg(self.ctx.model, x, sigma, [(pos, neg, cfg)], uncond=True)[0]


def execute_coherent(ctx: CoherentContext, ops: list, state: RunState) -> RunState:
    """Run the sub-step at ``state.cursor`` (pure): one part's step, or the blend."""
    op = ops[state.cursor]
    i, sigmas = op.i, ctx.plan.sigmas
    sigma, sigma_next = sigmas[i], sigmas[i + 1]
    extra = state.extra
    if i == 0 and op.kind == "base":
        x = process_in(state.latent, ctx.fmt)
        ms = ctx.model_sampling
        if ctx.add_noise or ms.is_const:  # flow without noise: the state (1 - sigma) L, as the reference's call
            noise = ctx.noise.to(x.device, x.dtype) if ctx.add_noise else torch.zeros_like(x)
            x = ms.noise_scaling(sigma, noise, x, is_max_denoise(ctx.model.sigmas[-1], sigma))
        extra = CoherentState(x, _start_parts(ctx, x))
    x = extra.x
    calls = state.model_calls
    if op.kind == "base":
        # every part's first evaluation at (x_i, sigma_i) in one batched call
        # as (D, U) pairs: CFG++ parts also keep their unconditional prediction (no cfg-1 skip)
        flags = [get_sampler(c.sampler).uncond for c in ctx.configs]
        extra = replace(extra, first=tuple(batched_cfg(ctx.model, x, sigma_batch(sigma, x), ctx.conds,
                                                       uncond=flags)))
        calls += 1
    if op.kind in ("base", "region"):
        part = op.region
        config = ctx.configs[part]
        first = extra.first[part]
        first, first_uncond = (first, None) if isinstance(first, torch.Tensor) else first  # older files: D only
        cache = _FirstEvalCache(ctx, part, x, sigma_batch(sigma, x), first, first_uncond)
        if config.sampler in OWN_GRID_SAMPLERS:
            stepped = start_sampler(config.sampler, x, sigmas[i:i + 2], seed=ctx.seed, model_sampling=ctx.model)
            while not stepped.done:
                stepped = step_sampler(cache, stepped)
            # they never reach sigma 0 (a last slice to 0 is a no-op): finish on the x0 prediction
            out = first if float(sigma_next) == 0 else stepped.x
            denoised = first if stepped.denoised is None else stepped.denoised
        else:
            previous = replace(extra.parts[part], x=x)
            if get_sampler(config.sampler).noise == "default":
                previous = replace(previous, noise_sampler=StepNoise(x, ctx.seed, i))
            stepped = step_sampler(cache, previous)
            parts = list(extra.parts)
            parts[part] = stepped
            extra = replace(extra, parts=tuple(parts))
            out, denoised = stepped.x, stepped.denoised
        # each part's output and x0 prediction, for the blend
        extra = replace(extra, outputs=extra.outputs + (out,), denoised=extra.denoised + (denoised,))
        return replace(state, cursor=state.cursor + 1, extra=extra, latent=ctx.to_latent(out, sigma_next),
                       model_calls=calls + cache.calls,
                       denoised=process_out(denoised, ctx.fmt), sigma=float(sigma),
                       sigma_next=float(sigma_next))
    # blend
    weights = ctx.weights_base_only if i < ctx.plan.base_only else ctx.weights
    weights = [w.to(x.device, x.dtype) for w in weights]
    new_x = sum(w * out for w, out in zip(weights, extra.outputs))
    # the step's x0 prediction: the same partition-of-unity blend of the parts' predictions (a file
    # saved mid-step before they were kept has fewer of them: the last part's prediction stays)
    x0s = extra.denoised
    denoised = (process_out(sum(w * d for w, d in zip(weights, x0s)), ctx.fmt) if len(x0s) == len(weights)
                else state.denoised)
    extra = CoherentState(new_x, extra.parts)
    latent = ctx.to_latent(new_x, sigma_next)
    done = state.cursor + 1 == len(ops)
    level = torch.full(latent.shape[-2:], float(sigma_next))
    return replace(state, cursor=state.cursor + 1, extra=extra, latent=latent, base_latent=latent, denoised=denoised,
                   result=latent if done else None, sigma=float(sigma), sigma_next=float(sigma_next),
                   sigma_map=level, base_sigma_map=level, times_map=sum(weights), model_calls=calls)


_PART_FIELDS = ("sampler", "x", "sigmas", "i", "memory", "denoised", "sigma", "sigma_next")


def grid(params: NodeParams) -> torch.Tensor:
    """The one sigma grid every part of a coherent run steps on (the base schedule, sliced)."""
    return plan_coherent(params)[1].sigmas


class CoherentEngine:
    """Coherent mode behind the engine interface of `faithful.FaithfulEngine`."""

    name = "coherent"
    replans_on = frozenset({"base"})  # the one sigma grid comes from the base sampler: a new run
    reuses_context = False  # a reset builds its context again

    def plan(self, p: NodeParams) -> list:
        return plan_coherent(p)[0]

    def context(self, p: NodeParams, prompts: Optional[PromptCache] = None, grow_cache=None,
                plan_cache=None) -> CoherentContext:
        add = p.add_noise if p.node == "RegionalSamplerAdvanced" else True
        noise = make_noise(p.latent_image, p.initial_seed, p.batch_index, p.regions, zero_edges=False)
        return build_coherent_context(p, prompts, plan_coherent(p)[1], noise, p.initial_seed, add)

    @staticmethod
    def execute(ctx: CoherentContext, ops: list, state: RunState) -> RunState:
        return execute_coherent(ctx, ops, state)

    @staticmethod
    def latent_masks(ctx: CoherentContext, h: int, w: int) -> list:
        return ctx.weights  # the blend weights

    def note(self, p: NodeParams) -> str:
        ignored = [f"region {j} ({r.config.scheduler})" for j, r in enumerate(p.regions, 1)
                   if r.config.scheduler != p.base.scheduler]
        note = f"coherent mode: one sigma grid from the base scheduler ({p.base.scheduler})"
        if ignored:
            note += "; ignored schedulers: " + ", ".join(ignored)
        return note + "; no recovery pass or re-noising is needed"

    @staticmethod
    def plain_state(state: Optional[CoherentState]) -> Optional[dict]:
        """The state as plain data for a session file (sampler states as dicts; noise samplers are rebuilt)."""
        if state is None:
            return None
        parts = [None if p is None else {f: getattr(p, f) for f in _PART_FIELDS} for p in state.parts]
        return {"x": state.x, "parts": parts, "outputs": list(state.outputs), "denoised": list(state.denoised),
                "first": None if state.first is None else list(state.first)}

    @staticmethod
    def live_state(ctx: CoherentContext, plain: dict) -> CoherentState:
        """The inverse of `plain_state`: sampler states with their noise samplers rebuilt."""
        from .sampling.samplers import SamplerState

        fresh = _start_parts(ctx, plain["x"])
        parts = tuple(None if stored is None else
                      SamplerState(**stored, noise_sampler=new.noise_sampler if new is not None else None)
                      for stored, new in zip(plain["parts"], fresh))
        first = plain.get("first")
        return CoherentState(plain["x"], parts, tuple(plain["outputs"]), tuple(plain.get("denoised", ())),
                             None if first is None else tuple(first))


COHERENT_ENGINE = CoherentEngine()
