"""The regional sampler nodes as a program of sub-steps, and a pure executor for one sub-step.

`plan_advanced` and `plan_regional` turn the node parameters into the exact sequence of sampler
calls and composites the reference makes (spec §6, §7); `execute` runs one of them on an immutable
`RunState` and returns the next. No traitlets here: `session.py` makes it observable.

Faithful quirks of the reference are named where they happen (search for "quirk").
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Literal, Optional

import torch

from .models.base import PromptCache, cfg_denoiser, latent_format, process_in, process_out
from .sampling import masks as mask_ops
from .sampling.call import sampler_call
from .sampling.latent_formats import LatentFormat
from .sampling.model_sampling import is_const
from .sampling.noise import SEED_2ND_MODES, prepare_noise, touch_noise
from .sampling.recovery import sample_with_recovery
from .sampling.samplers import SAMPLER_NAMES
from .sampling.schedules import SCHEDULER_NAMES, sampler_sigmas

_SEED_WRAP = 2**50


@dataclass(frozen=True)
class SamplerConfig:
    """One sampler of the node (a ``KSamplerAdvancedProvider``): the base's or a region's."""

    sampler: str = "euler"
    scheduler: str = "normal"
    cfg: float = 8.0
    positive: str = ""
    negative: str = ""
    sigma_factor: float = 1.0

    def __post_init__(self):
        if self.sampler not in SAMPLER_NAMES:
            raise ValueError(f"sampler: unknown name {self.sampler!r}; accepted: {', '.join(SAMPLER_NAMES)}")
        if self.scheduler not in SCHEDULER_NAMES:
            raise ValueError(f"scheduler: unknown name {self.scheduler!r}; accepted: {', '.join(SCHEDULER_NAMES)}")
        # sigma_factor 0 would scale every sigma to 0: refused here, by name, not deep in a sampler
        for name, lo, hi, low in (("cfg", 0.0, 100.0, "["), ("sigma_factor", 0.0, 10.0, "(")):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi \
                    or (low == "(" and value <= lo) or value != value:
                raise ValueError(f"{name}: expected a number in {low}{lo:g}, {hi:g}], got {value!r}")
        for name in ("positive", "negative"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"{name}: expected a prompt string, got {getattr(self, name)!r}")

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("sampler", "scheduler", "cfg", "positive", "negative", "sigma_factor")}


@dataclass(frozen=True)
class Quirks:
    """The reference's quirks, each behind one switch. All on (the default) is the faithful mode."""

    mask_wh_swap: bool = True  # the overlap grow resizes an (H, W) mask to (W, H) first
    touch_noise_zero_edges: bool = True  # fractional mask values get zero variation noise
    discard_final_step: bool = True  # Advanced + restore_latent: the final base call's result is dropped
    x0_when_not_leftover: bool = True  # leftover off returns the last x0 prediction, not x
    renoise_every_step: bool = True  # RegionalSampler, leftover-off path: the noise is re-added every step
    reseed_every_call: bool = True  # ancestral noise reseeded per call: every 1-step call draws the same noise

    def to_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


FAITHFUL = Quirks()
ADVANCED = "RegionalSamplerAdvanced"


@dataclass(frozen=True)
class RegionParams:
    """A region as the engines read it: its mask (the session's read-only array) and its settings."""

    mask: Any  # a read-only float32 array at image resolution
    config: SamplerConfig
    variation_seed: int = 0
    variation_strength: float = 0.0
    variation_method: str = "linear"

    @property
    def mask_tensor(self) -> torch.Tensor:
        return torch.from_numpy(self.mask.copy())


@dataclass(frozen=True)
class NodeParams:
    """Everything an engine reads, frozen: the model, the input latent, the node and its parameters
    (the spec's names), the regions. A session makes one per run (`RegionalSamplerSession.node_params`)."""

    model: Any
    latent_image: torch.Tensor
    base: SamplerConfig
    regions: tuple = ()  # RegionParams
    node: str = ADVANCED
    batch_index: Optional[list] = None
    add_noise: bool = True
    noise_seed: int = 0
    steps: int = 20
    start_at_step: int = 0
    end_at_step: int = 10000
    return_with_leftover_noise: bool = False
    seed: int = 0
    seed_2nd: int = 0
    seed_2nd_mode: str = "ignore"
    base_only_steps: int = 2
    denoise: float = 1.0
    overlap_factor: int = 10
    restore_latent: bool = True
    additional_mode: str = "ratio between"
    additional_sampler: str = "AUTO"
    additional_sigma_ratio: float = 0.3
    quirks: Quirks = FAITHFUL

    @property
    def initial_seed(self) -> int:
        """The seed of the run's first noise (``noise_seed`` or, for RegionalSampler, ``seed``)."""
        return self.noise_seed if self.node == ADVANCED else self.seed


def schedule_steps(params) -> int:
    """The length of the schedule the node's calls index into (RegionalSampler stretches it by
    1/denoise). ``params``: a `NodeParams` or anything with ``node``, ``steps`` and ``denoise``."""
    return params.steps if params.node == ADVANCED else _stretched(params.steps, params.denoise)


def _stretched(steps: int, denoise: float) -> int:
    return int(steps / denoise)  # RegionalSampler: the full schedule whose last `steps` steps run


# --------------------------------------------------------------------------------------------
# The program: which call or composite comes next


OpKind = Literal["base", "region", "composite", "finalize", "blend"]  # blend: coherent mode's


@dataclass(frozen=True, kw_only=True)
class Op:
    """One sub-step: a sampler call (``base``/``region``/``finalize``) or a ``composite``; built with keywords."""

    kind: OpKind
    group: int  # the regional step this sub-step belongs to (0-based)
    i: int = 0  # the schedule index the call starts at
    region: int = 0  # 1-based region index for region/composite ops
    start: int = 0
    end: int = 0
    add_noise: bool = False
    noise: Optional[str] = None  # None, "initial" (the run's first noise) or "second" (RegionalSampler's)
    mask: Optional[str] = None  # None (whole latent), "inv" or "region"
    leftover: bool = True
    recovery: bool = True  # False: recovery_mode DISABLE for this call
    seed: int = 0
    steps: int = 20
    status: str = ""
    progress: float = 0.0

    @property
    def phase(self) -> tuple:
        if self.kind == "finalize":
            return ("finalize",)
        if self.kind == "base":
            return ("base", self.i)
        return (self.kind, self.region, self.i)


def _loop_body(ops, group, i, R, *, seed, steps, base_noise, add, restore, text, total, start):
    ops.append(Op(kind="base", group=group, i=i, start=i, end=i + 1, add_noise=add, noise=base_noise, mask="inv",
                  seed=seed, steps=steps, status=text, progress=((i - start) * R) / total if total else 0.0))
    for j in range(1, R + 1):
        progress = ((i - start) * R + j) / total if total else 0.0
        label = f"{text} | {j}/{R}"
        ops.append(Op(kind="region", group=group, i=i, region=j, start=i, end=i + 1, mask="region", seed=seed,
                      steps=steps, status=label, progress=progress))
        if restore:
            ops.append(Op(kind="composite", group=group, i=i, region=j, start=i, end=i + 1, seed=seed, steps=steps,
                          status=label, progress=progress))


def plan_advanced(*, R, add_noise, noise_seed, steps, start_at_step, end_at_step, restore_latent,
                  return_with_leftover_noise) -> list[Op]:
    """RegionalSamplerAdvanced's sub-steps (spec §6)."""
    end = min(steps, end_at_step)
    start = start_at_step
    total = (end - start) * R
    ops: list[Op] = []
    # quirk: the loop stops one short of `end`; the last step is a base-only finalize call
    for group, i in enumerate(range(start, end - 1)):
        first = add_noise and i == start
        # quirk: the status text counts `start` twice (cosmetic)
        _loop_body(ops, group, i, R, seed=noise_seed, steps=steps, base_noise="initial" if first else None,
                   add=first, restore=restore_latent, text=f"{start + i}/{end} steps", total=total, start=start)
    group = max(0, end - 1 - start)
    ops.append(Op(kind="finalize", group=group, i=end - 1, start=end - 1, end=end, mask="inv",
                  leftover=return_with_leftover_noise, seed=noise_seed, steps=steps, status=f"{end}/{end} steps",
                  progress=float(total)))  # quirk: progress = total
    return ops


def second_seed(seed: int, seed_2nd: int, mode: str) -> int:
    """RegionalSampler's seed for the regional stage (wraps at 2^50 as the reference)."""
    if mode == "ignore":
        return seed
    if mode == "seed+seed_2nd":
        value = seed + seed_2nd
        return value - _SEED_WRAP if value > _SEED_WRAP else value
    if mode == "seed-seed_2nd":
        value = seed - seed_2nd
        return value + _SEED_WRAP if value < 0 else value
    return seed_2nd  # fixed; increment/decrement/randomize are "not implemented, same as fixed"


def plan_regional(*, R, seed, seed_2nd, seed_2nd_mode, steps, base_only_steps, denoise, restore_latent,
                  renoise_every_step=True) -> list[Op]:
    """RegionalSampler's sub-steps (spec §7)."""
    adv = _stretched(steps, denoise)
    start = adv - steps
    total = steps * R
    ops: list[Op] = []
    leftover = False
    group = 0
    if base_only_steps > 0:
        leftover = seed_2nd_mode == "ignore"
        ops.append(Op(kind="base", group=group, i=start, start=start, end=start + base_only_steps, add_noise=True,
                      noise="initial", leftover=leftover, recovery=False, seed=seed, steps=adv,
                      status=f"{start + base_only_steps}/{steps} steps", progress=0.0))
        group += 1
    seed2 = second_seed(seed, seed_2nd, seed_2nd_mode)
    # quirk: on the leftover = False path the same noise is passed to *every* base call
    base_noise = None if leftover else "second"
    add = not leftover
    for i in range(start + base_only_steps, adv):
        _loop_body(ops, group, i, R, seed=seed2, steps=adv, base_noise=base_noise, add=add,
                   restore=restore_latent, text=f"{i + 1}/{steps} steps", total=total, start=start + base_only_steps)
        add = False
        if not renoise_every_step:
            base_noise = None
        group += 1
    ops.append(Op(kind="finalize", group=group, i=adv, start=adv, end=adv + 1, mask="inv", leftover=False,
                  seed=seed2, steps=adv, status=f"{steps}/{steps} steps", progress=float(total)))
    return ops


def group_starts(ops: list[Op]) -> list[int]:
    """Index of the first sub-step of each regional step, plus the end of the program."""
    starts = [k for k, op in enumerate(ops) if k == 0 or op.group != ops[k - 1].group]
    return starts + [len(ops)]


# --------------------------------------------------------------------------------------------
# Per-run context and the state between sub-steps


@dataclass
class Part:
    config: SamplerConfig
    denoise: Callable


@dataclass
class RunContext:
    """What a run derives once from the parameters: masks, noise, denoisers (reference: per run)."""

    model: object
    parts: list  # Part for the base, then each region
    region_masks: list  # grown masks at mask resolution (the call's noise_mask), index 0 unused
    inv: Optional[torch.Tensor]  # base area at mask resolution
    noises: dict  # "initial" / "second" -> noise tensor (VAE space)
    batch_index: Optional[list]
    additional_mode: str
    additional_sampler: str
    additional_sigma_ratio: float
    restore_latent: bool = True
    quirks: Quirks = FAITHFUL
    latent_scale: float = 1.0
    schedules: dict = field(default_factory=dict)
    latent_masks: Optional[list] = None  # base and region masks at latent resolution (for display)
    latent_format: Optional[LatentFormat] = None  # VAE <-> model space (None: the identity)

    def schedule(self, sampler: str, scheduler: str, steps: int) -> torch.Tensor:
        key = (sampler, scheduler, steps)
        if key not in self.schedules:
            self.schedules[key] = sampler_sigmas(self.model, sampler, scheduler, steps)
        return self.schedules[key]

    def at_latent(self, mask: Optional[torch.Tensor], h: int, w: int) -> torch.Tensor:
        """``mask`` (one of this context's masks, or None: everywhere) resized to the latent, once per run."""
        if mask is None:
            return torch.ones(h, w)
        cache = self.__dict__.setdefault("_resized", {})
        key = (id(mask), h, w)
        if key not in cache:
            cache[key] = (mask, mask_ops.resize(mask, h, w))  # the mask kept alive: its id stays its own
        return cache[key][1]

    def mask_for(self, op: Op) -> Optional[torch.Tensor]:
        if op.mask == "inv":
            return self.inv
        if op.mask == "region":
            return self.region_masks[op.region]
        return None


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
    fmt = ctx.latent_format or LatentFormat("model", ctx.latent_scale)
    # quirk: the reference reseeds ancestral noise on every call, so 1-step calls reuse one draw
    sampler_seed = op.seed if ctx.quirks.reseed_every_call else (op.seed + op.i + 1) % 2**64

    def run(sampler, lat, ratio, noise_):
        # The reference skips process_latent_in for an all-zero latent (0 stays 0 despite a shift).
        lat_in = process_in(lat, fmt)
        total = ctx.schedule(sampler, part.config.scheduler, op.steps)
        res = sampler_call(part.denoise, lat_in, sampler=sampler, total_sigmas=total, start=op.start,
                           end=op.end, leftover=op.leftover, add_noise=op.add_noise, seed=op.seed,
                           sigma_max=ctx.model.sigmas[-1], sigma_ratio=ratio, noise=noise_, noise_mask=mask,
                           batch_index=ctx.batch_index, sampler_seed=sampler_seed,
                           return_x0=ctx.quirks.x0_when_not_leftover, model_sampling=ctx.model)
        if res.sigmas is None:
            return replace(res, samples=lat, denoised=lat)  # a no-op call hands its input back (VAE space)
        if fmt.scale_factor != 1.0 or fmt.shift_factor:
            res = replace(res, samples=process_out(res.samples, fmt), denoised=process_out(res.denoised, fmt))
        return res

    mode = ctx.additional_mode if op.recovery else "DISABLE"
    return sample_with_recovery(run, latent, sampler=part.config.sampler, sigma_factor=part.config.sigma_factor,
                                mode=mode, additional_sampler=ctx.additional_sampler,
                                ratio=ctx.additional_sigma_ratio, noise_mask=mask, noise=noise)


def _sigma_map_after(state_map, latent_shape, mask, passes, noisy: bool, const: bool = False, m=None):
    """The noise level the mask algebra implies after one call (first-order, Euler-type updates).

    Inside the call's mask each pass contracts the noise by sigma_last / sigma_first of its slice;
    outside it the kept area is carried along the re-noise path only when the call adds noise.
    ``const``: a flow model; the map is in its sigmas (0..1), see `_flow_sigma_map_after`.
    """
    if m is None:  # ``m``: the mask at latent resolution, when the caller has it
        m = torch.ones(latent_shape[-2:]) if mask is None else mask_ops.resize(mask, *latent_shape[-2:])
    if const:
        return _flow_sigma_map_after(state_map, latent_shape, mask, passes, noisy, m)
    inside, outside = state_map, state_map
    for k, (_, res) in enumerate(passes):
        if res.sigmas is None:
            continue
        first, last = float(res.sigmas[0]), float(res.sigmas[-1])
        if noisy and k == 0:
            inside = torch.sqrt(inside**2 + first**2)
            outside = torch.sqrt(state_map**2 + last**2)
        inside = inside * (last / first if first > 0 else 1.0)
    return m * inside + (1 - m) * outside, m


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
    op = ops[state.cursor]
    times = state.times_map
    if op.kind != "composite" and (state.cursor == 0 or ops[state.cursor - 1].group != op.group):
        times = torch.zeros_like(times)
    if op.kind == "composite":
        mask = ctx.region_masks[op.region]
        base_latent = mask_ops.composite(state.base_latent, state.latent, mask)
        m = ctx.at_latent(mask, *state.latent.shape[-2:])
        base_map = m * state.sigma_map + (1 - m) * state.base_sigma_map
        return replace(state, latent=base_latent, base_latent=base_latent, cursor=state.cursor + 1,
                       sigma_map=base_map, base_sigma_map=base_map, passes=())
    restore = ctx.restore_latent
    latent, sigma_map = state.latent, state.sigma_map
    if op.kind == "region" and restore:
        latent, sigma_map = state.base_latent, state.base_sigma_map  # every region starts from the composite
    if op.kind == "finalize" and state.base_latent is not None:
        latent, sigma_map = state.base_latent, state.base_sigma_map
    part = ctx.parts[op.region if op.kind == "region" else 0]
    mask = ctx.mask_for(op)
    noise = ctx.noises.get(op.noise) if op.noise else None
    passes = _call_part(ctx, op, latent, part, mask, noise)
    out = passes[-1][1]
    new_latent = out.output
    new_map, m = _sigma_map_after(sigma_map, latent.shape, mask, passes, op.add_noise or noise is not None,
                                  is_const(ctx.model), m=ctx.at_latent(mask, *latent.shape[-2:]))
    ran = [res for _, res in passes if res.sigmas is not None]
    calls = state.model_calls + sum(res.model_calls for _, res in passes)
    sigma = float(ran[0].sigmas[0]) if ran else None
    sigma_next = float(ran[-1].sigmas[-1]) if ran else None
    denoised = out.denoised if ran else state.denoised
    common = dict(cursor=state.cursor + 1, denoised=denoised, sigma=sigma, sigma_next=sigma_next,
                  model_calls=calls, passes=tuple(name for name, res in passes if res.sigmas is not None))
    if op.kind == "finalize":
        base_latent = state.base_latent if state.base_latent is not None else state.latent
        # quirk: with restore_latent the final base call is made and then discarded
        result = base_latent if restore and ctx.quirks.discard_final_step else new_latent
        return replace(state, latent=new_latent, result=result, times_map=times + m, sigma_map=new_map, **common)
    base_latent, base_map = state.base_latent, state.base_sigma_map
    if op.kind == "base" and restore:
        base_latent, base_map = new_latent, new_map
    return replace(state, latent=new_latent, base_latent=base_latent, times_map=times + m, sigma_map=new_map,
                   base_sigma_map=base_map, **common)


class FaithfulEngine:
    """The reference nodes behind the engine interface the session drives (`coherent.CoherentEngine`
    is the other): ``plan(params)`` the sub-steps, ``context(params, ...)`` what a run derives once,
    ``execute(ctx, ops, state)`` one sub-step (pure), ``latent_masks(ctx, h, w)`` the masks shown."""

    name = "faithful"
    replans_on = frozenset()  # parameters that re-plan here although they only fork elsewhere

    def plan(self, p: NodeParams) -> list[Op]:
        if p.node == ADVANCED:
            return plan_advanced(R=len(p.regions), add_noise=p.add_noise, noise_seed=p.noise_seed, steps=p.steps,
                                 start_at_step=p.start_at_step, end_at_step=p.end_at_step,
                                 restore_latent=p.restore_latent,
                                 return_with_leftover_noise=p.return_with_leftover_noise)
        return plan_regional(R=len(p.regions), seed=p.seed, seed_2nd=p.seed_2nd, seed_2nd_mode=p.seed_2nd_mode,
                             steps=p.steps, base_only_steps=p.base_only_steps, denoise=p.denoise,
                             restore_latent=p.restore_latent, renoise_every_step=p.quirks.renoise_every_step)

    def context(self, p: NodeParams, prompts: Optional[PromptCache] = None, grow_cache=None) -> RunContext:
        specs = {"initial": p.initial_seed}
        if p.node != ADVANCED:
            specs["second"] = second_seed(p.seed, p.seed_2nd, p.seed_2nd_mode)
        return build_context(p.model, p.latent_image, p.base, p.regions, overlap_factor=p.overlap_factor,
                             restore_latent=p.restore_latent, noise_specs=specs, batch_index=p.batch_index,
                             additional_mode=p.additional_mode, additional_sampler=p.additional_sampler,
                             additional_sigma_ratio=p.additional_sigma_ratio, prompts=prompts, quirks=p.quirks,
                             grow_cache=grow_cache)

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


FAITHFUL_ENGINE = FaithfulEngine()
