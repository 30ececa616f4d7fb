"""The faithful engine: the reference nodes' sub-steps run one at a time by a pure executor.

`FaithfulEngine` plans a node's program (`program.py`) from a frozen `NodeParams`
(`node_params.py`), derives a run's `RunContext` once (models, prompts, grown masks, noises), and
`execute` runs one sub-step on an immutable `RunState` and returns the next. No traitlets here:
`session.py` makes it observable; `coherent.py` is the other engine behind the same interface.
Faithful quirks of the reference are named where they happen (search for "quirk").
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Optional

import torch

from .models.base import PromptCache, cfg_denoiser, latent_format, process_in, process_out
from .node_params import ADVANCED, FAITHFUL, NodeParams, Quirks, SamplerConfig
from .program import Op, plan_advanced, plan_regional, second_seed
from .run_context import Part, RunContext
from .sampling import masks as mask_ops
from .sampling.call import sampler_call, warm_batches
from .sampling.noise import prepare_noise, touch_noise
from .sampling.recovery import recovery_active, sample_with_recovery


@dataclass(frozen=True)
class RunState:
    """Everything between two sub-steps. Tensors are never modified in place."""

    latent: torch.Tensor  # L: the working latent (VAE space, as the node's LATENT)
    base_latent: Optional[torch.Tensor] = None  # base_L: the composite (restore_latent)
    cursor: int = 0  # index of the next Op
    denoised: Optional[torch.Tensor] = None
    sigma: Optional[float] = None
    sigma_next: Optional[float] = None
    result: Optional[torch.Tensor] = None
    sigma_map: Optional[torch.Tensor] = None  # effective noise level per latent pixel, of L
    base_sigma_map: Optional[torch.Tensor] = None
    times_map: Optional[torch.Tensor] = None  # calls that denoised each pixel in this step
    model_calls: int = 0
    passes: tuple = ()  # samplers run by the last call (recovery adds a pass)
    extra: Optional[Any] = None  # coherent mode: its `coherent.CoherentState`


def make_noise(latent, seed, batch_index, regions, zero_edges: bool = True) -> torch.Tensor:
    """prepare_noise, then every region's variation noise in region order (touch_noise)."""
    noise = prepare_noise(latent, seed, batch_index)
    for region in regions:
        noise = touch_noise(noise, region.mask_tensor, region.variation_seed, region.variation_strength,
                            region.variation_method, zero_fractional=zero_edges)
    return noise


def build_context(model, latent, base: SamplerConfig, regions, *, overlap_factor, restore_latent, noise_specs,
                  batch_index, additional_mode, additional_sampler, additional_sigma_ratio,
                  prompts: Optional[PromptCache] = None, quirks: Quirks = FAITHFUL, grow_cache=None) -> RunContext:
    prompts = PromptCache() if prompts is None else prompts

    def encode(prompt):
        return prompts.get(prompt, lambda: model.encode(prompt))

    def part(config):
        return Part(config, cfg_denoiser(model, encode(config.positive), encode(config.negative), config.cfg))

    mask_list = [r.mask_tensor for r in regions]
    grow_cache = {} if grow_cache is None else grow_cache

    def grown_mask(region, tensor):
        # a painted mask is a new array, so the array itself keys the cache (kept alive by it)
        key = (id(region.mask), overlap_factor, quirks.mask_wh_swap)
        if key not in grow_cache or grow_cache[key][0] is not region.mask:
            grow_cache[key] = (region.mask, mask_ops.grow(tensor, overlap_factor, swap_quirk=quirks.mask_wh_swap))
        return grow_cache[key][1]

    grown = [None] + [grown_mask(r, m) for r, m in zip(regions, mask_list)]
    for key in [k for k, (array, _) in grow_cache.items() if not any(array is r.mask for r in regions)]:
        del grow_cache[key]  # masks painted over since
    inv = mask_ops.inverse_union(mask_list) if mask_list else None
    noises = {name: make_noise(latent, seed, batch_index, regions, quirks.touch_noise_zero_edges)
              for name, seed in noise_specs.items()}
    return RunContext(model, [part(base)] + [part(r.config) for r in regions], grown, inv, noises, batch_index,
                      additional_mode, additional_sampler, additional_sigma_ratio, bool(restore_latent), quirks,
                      latent_format(model).scale_factor, latent_format=latent_format(model))


def initial_state(latent: torch.Tensor) -> RunState:
    zeros = torch.zeros(latent.shape[-2:])
    return RunState(latent, sigma_map=zeros, base_sigma_map=zeros, times_map=zeros)


def _call_part(ctx: RunContext, op: Op, latent: torch.Tensor, part: Part, mask, noise):
    """One wrapper call (with recovery passes), converting to and from model space per call."""
    sampling, _, fmt, identity = ctx.sampling()  # identity: process_in/out hand the latent back
    # quirk: the reference reseeds ancestral noise on every call, so 1-step calls reuse one draw
    sampler_seed = op.seed if ctx.quirks.reseed_every_call else (op.seed + op.i + 1) % 2**64
    config = part.config

    def run(sampler, lat, ratio, noise_):
        # The reference skips process_latent_in for an all-zero latent (0 stays 0 despite a shift).
        lat_in = lat if identity else process_in(lat, fmt)
        plan = ctx.plan(sampler, config.scheduler, op.steps, op, ratio)
        res = sampler_call(part.denoise, lat_in, sampler=sampler, total_sigmas=None, start=op.start,
                           end=op.end, leftover=op.leftover, add_noise=op.add_noise, seed=op.seed,
                           sigma_max=ctx.sigma_max(), sigma_ratio=ratio, noise=noise_,
                           noise_mask=mask, latent_mask=None if mask is None else ctx.call_mask(mask, lat_in),
                           batch_index=ctx.batch_index, sampler_seed=sampler_seed,
                           return_x0=ctx.quirks.x0_when_not_leftover, model_sampling=sampling, plan=plan,
                           zeros=ctx.zeros(lat_in))
        if res.sigmas is None:
            return replace(res, samples=lat, denoised=lat)  # a no-op call hands its input back (VAE space)
        if not identity:
            res = replace(res, samples=process_out(res.samples, fmt), denoised=process_out(res.denoised, fmt))
        return res

    if not (op.recovery and recovery_active(config.sampler, ctx.additional_mode)):
        return [(config.sampler, run(config.sampler, latent, config.sigma_factor, noise))]  # one pass
    return sample_with_recovery(run, latent, sampler=config.sampler, sigma_factor=config.sigma_factor,
                                mode=ctx.additional_mode, additional_sampler=ctx.additional_sampler,
                                ratio=ctx.additional_sigma_ratio, noise_mask=mask, noise=noise)


def _sigma_map_after(state_map, latent_shape, mask, passes, noisy: bool, const: bool = False, m=None, outside_m=None,
                     bounds=None):
    """The noise level the mask algebra implies after one call (first-order, Euler-type updates).

    Inside the call's mask each pass contracts the noise by sigma_last / sigma_first of its slice;
    outside it the kept area is carried along the re-noise path only when the call adds noise.
    ``const``: a flow model; the map is in its sigmas (0..1), see `_flow_sigma_map_after`.
    ``bounds(sigmas)``: a call's first and last sigma as floats (`RunContext.bounds`), when the caller has them.
    """
    if m is None:  # ``m``: the mask at latent resolution (``outside_m``: 1 - m), when the caller has it
        m = torch.ones(latent_shape[-2:]) if mask is None else mask_ops.resize(mask, *latent_shape[-2:])
    if const:
        return _flow_sigma_map_after(state_map, latent_shape, mask, passes, noisy, m)
    inside, outside = state_map, state_map
    for k, (_, res) in enumerate(passes):
        if res.sigmas is None:
            continue
        first, last = (float(res.sigmas[0]), float(res.sigmas[-1])) if bounds is None else bounds(res.sigmas)
        if noisy and k == 0:
            inside = torch.sqrt(inside**2 + first**2)
            outside = torch.sqrt(state_map**2 + last**2)
        inside = inside * (last / first if first > 0 else 1.0)
    return mask_ops.blend(inside, outside, m, (1 - m) if outside_m is None else outside_m), m


def _ve(sigma):
    """A flow sigma's VE-equivalent level ``s / (1 - s)`` (infinite at 1): a latent handed over at s is
    ``x / (1 - s) = x0 + noise * s / (1 - s)`` (spec model_families.md §2.1)."""
    sigma = torch.as_tensor(sigma, dtype=torch.float32)
    return torch.where(sigma < 1, sigma / (1 - sigma).clamp(min=1e-30), torch.full_like(sigma, float("inf")))


def _flow_sigma_map_after(state_map, latent_shape, mask, passes, noisy: bool, m=None):
    """`_sigma_map_after` for a flow model: the same algebra on the VE-equivalent levels of the latents
    the reference hands over (a flow Euler step contracts them by ve(s') / ve(s), exactly as an EPS
    step does sigmas), returned as flow sigmas ``t / (1 + t)``. A call from sigma 1 starts from its own
    noise alone (``noise_scaling(1, n, L) = n``): pure noise when it adds noise, and with zero noise (a
    region's first call) a state with no noise left at all."""
    if m is None:
        m = torch.ones(latent_shape[-2:]) if mask is None else mask_ops.resize(mask, *latent_shape[-2:])
    held = _ve(state_map)
    inside, outside = held, held
    for k, (_, res) in enumerate(passes):
        if res.sigmas is None:
            continue
        first, last = _ve(res.sigmas[0]), _ve(res.sigmas[-1])
        if noisy and k == 0:
            inside = torch.sqrt(inside**2 + first**2)
            outside = torch.sqrt(held**2 + last**2)
        if torch.isinf(first):  # from sigma 1: the state is the call's noise, whatever the latent held
            inside = torch.full_like(inside, float(last) if noisy and k == 0 else 0.0)
        else:
            inside = inside * (last / first if first > 0 else 1.0)
    ve = m * inside + (1 - m) * outside if mask is not None else inside
    flow = torch.where(torch.isinf(ve), torch.ones_like(ve), ve / (1 + ve))
    return flow, m


def execute(ctx: RunContext, ops: list[Op], state: RunState) -> RunState:
    """Run the sub-step at ``state.cursor`` and return the state after it (pure)."""
    cursor = state.cursor
    op = ops[cursor]
    kind = op.kind
    h, w = state.latent.shape[-2:]
    if kind == "composite":
        mask = ctx.region_masks[op.region]
        m, keep = ctx.at_latent(mask, h, w), ctx.outside(mask, h, w)  # `composite` resizes to the latent: the same bits
        base_latent = mask_ops.composite(state.base_latent, state.latent, m, keep)
        base_map = mask_ops.blend(state.sigma_map, state.base_sigma_map, m, keep)
        return RunState(base_latent, base_latent, cursor + 1, state.denoised, state.sigma, state.sigma_next,
                        state.result, base_map, base_map, state.times_map, state.model_calls, (), state.extra)
    times = state.times_map
    if cursor == 0 or ops[cursor - 1].group != op.group:
        times = ctx.zeros(times)
    restore = ctx.restore_latent
    latent, sigma_map = state.latent, state.sigma_map
    if (kind == "region" and restore) or (kind == "finalize" and state.base_latent is not None):
        latent, sigma_map = state.base_latent, state.base_sigma_map  # every region starts from the composite
    part = ctx.parts[op.region if kind == "region" else 0]
    mask = ctx.mask_for(op)
    noise = ctx.noises.get(op.noise) if op.noise else None
    passes = _call_part(ctx, op, latent, part, mask, noise)
    out = passes[-1][1]
    new_latent = out.output
    new_map, m = _sigma_map_after(sigma_map, latent.shape, mask, passes, op.add_noise or noise is not None,
                                  ctx.sampling()[1], m=ctx.at_latent(mask, h, w), outside_m=ctx.outside(mask, h, w),
                                  bounds=ctx.bounds)
    ran = [res for _, res in passes if res.sigmas is not None]
    calls = state.model_calls
    for _, res in passes:
        calls += res.model_calls
    if ran:
        sigma, sigma_next, denoised = ctx.bounds(ran[0].sigmas)[0], ctx.bounds(ran[-1].sigmas)[1], out.denoised
    else:
        sigma, sigma_next, denoised = None, None, state.denoised
    names = tuple(name for name, res in passes if res.sigmas is not None)
    if kind == "finalize":
        base_latent = state.base_latent if state.base_latent is not None else state.latent
        # quirk: with restore_latent the final base call is made and then discarded
        result = base_latent if restore and ctx.quirks.discard_final_step else new_latent
        return RunState(new_latent, state.base_latent, cursor + 1, denoised, sigma, sigma_next, result, new_map,
                        state.base_sigma_map, ctx.times_after(times, m), calls, names, state.extra)
    base_latent, base_map = state.base_latent, state.base_sigma_map
    if kind == "base" and restore:
        base_latent, base_map = new_latent, new_map
    return RunState(new_latent, base_latent, cursor + 1, denoised, sigma, sigma_next, state.result, new_map,
                    base_map, ctx.times_after(times, m), calls, names, state.extra)


class FaithfulEngine:
    """The reference nodes behind the engine interface the session drives (`coherent.CoherentEngine`
    is the other): ``plan(params)`` the sub-steps, ``context(params, ...)`` what a run derives once,
    ``execute(ctx, ops, state)`` one sub-step (pure), ``latent_masks(ctx, h, w)`` the masks shown."""

    name = "faithful"
    replans_on = frozenset()  # parameters that re-plan here although they only fork elsewhere
    reuses_context = True  # a context is a pure function of the parameters (its caches too): a reset may keep it

    def plan(self, p: NodeParams) -> list[Op]:
        """The node's sub-steps (a new list; its `Op`s are frozen, the same for the same parameters: a
        reset and the run's context, which both plan, make them once)."""
        if p.node == ADVANCED:
            make, args = plan_advanced, dict(R=len(p.regions), add_noise=p.add_noise, noise_seed=p.noise_seed,
                                             steps=p.steps, start_at_step=p.start_at_step, end_at_step=p.end_at_step,
                                             restore_latent=p.restore_latent,
                                             return_with_leftover_noise=p.return_with_leftover_noise)
        else:
            make, args = plan_regional, dict(R=len(p.regions), seed=p.seed, seed_2nd=p.seed_2nd,
                                             seed_2nd_mode=p.seed_2nd_mode, steps=p.steps,
                                             base_only_steps=p.base_only_steps, denoise=p.denoise,
                                             restore_latent=p.restore_latent,
                                             renoise_every_step=p.quirks.renoise_every_step)
        key = (make,) + tuple((v, type(v)) for v in args.values())  # typed: True and 1 are two keys
        ops = _PLANS.get(key)
        if ops is None:
            ops = tuple(make(**args))
            if len(_PLANS) >= 64:
                _PLANS.clear()
            _PLANS[key] = ops
        return list(ops)

    def context(self, p: NodeParams, prompts: Optional[PromptCache] = None, grow_cache=None,
                plan_cache: Optional[dict] = None) -> RunContext:
        """The run's context; ``plan_cache``: a dict that keeps call plans across runs (`RunContext.plan_cache`)."""
        specs = {"initial": p.initial_seed}
        if p.node != ADVANCED:
            specs["second"] = second_seed(p.seed, p.seed_2nd, p.seed_2nd_mode)
        ctx = build_context(p.model, p.latent_image, p.base, p.regions, overlap_factor=p.overlap_factor,
                            restore_latent=p.restore_latent, noise_specs=specs, batch_index=p.batch_index,
                            additional_mode=p.additional_mode, additional_sampler=p.additional_sampler,
                            additional_sigma_ratio=p.additional_sigma_ratio, prompts=prompts, quirks=p.quirks,
                            grow_cache=grow_cache)
        ctx.plan_cache = plan_cache
        self._warm(ctx, p)
        return ctx

    def _warm(self, ctx: RunContext, p: NodeParams) -> None:
        """Make the run's per-call caches now (call plans and their sigma batches, masks at latent resolution),
        before the run's transient tensors: made mid-run, these long-lived objects pin the heap's top and
        resident memory grows (benchmarks/history_memory.py). A plan that cannot be made is left to its call,
        which raises as it always did; recovery passes' plans are made when first needed."""
        h, w = p.latent_image.shape[-2:]
        ctx.zeros(p.latent_image)
        for mask in [ctx.inv] + ctx.region_masks[1:]:
            if mask is not None:
                ctx.call_mask(mask, p.latent_image)
                ctx.outside(mask, h, w)
        for op in self.plan(p):
            if op.kind in ("base", "region", "finalize"):
                config = ctx.parts[op.region if op.kind == "region" else 0].config
                try:
                    plan = ctx.plan(config.sampler, config.scheduler, op.steps, op, config.sigma_factor)
                except Exception:  # noqa: BLE001 - raised again, unchanged, by the call itself
                    continue
                warm_batches(plan, p.latent_image)

    @staticmethod
    def execute(ctx: RunContext, ops: list[Op], state: RunState) -> RunState:
        return execute(ctx, ops, state)

    @staticmethod
    def latent_masks(ctx: RunContext, h: int, w: int) -> list:
        """The base area, then each region's grown mask, at latent resolution."""
        return [ctx.at_latent(m, h, w) for m in [ctx.inv] + ctx.region_masks[1:]]

    def note(self, p: NodeParams) -> str:
        """What the status says before the run starts, beside "ready" (nothing here)."""
        return ""

    def plain_state(self, state):
        return None

    def live_state(self, ctx, plain):
        return None


_PLANS: dict = {}  # FaithfulEngine.plan's programs by their parameters (Ops are frozen)
FAITHFUL_ENGINE = FaithfulEngine()
