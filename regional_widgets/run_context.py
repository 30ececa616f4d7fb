"""A faithful run's context: what a run derives once from its parameters, and its per-run caches.

`RunContext` holds the run's denoisers (`Part`), grown masks, noises and schedules, and caches what
every call of the run would otherwise make again (call plans, masks at latent resolution, their
complements, zero noise, the model's per-call sigma batches). Built by `faithful.build_context`; read
by `faithful.execute`. A call plan depends only on the model and the schedule, so a session hands
the context a dict (``plan_cache``) that keeps plans from one run to the next (a reset, a fork).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from .node_params import FAITHFUL, Quirks, SamplerConfig
from .program import Op
from .sampling import masks as mask_ops
from .sampling.call import checked_plan
from .sampling.inpaint import LatentMask, latent_mask
from .sampling.latent_formats import LatentFormat
from .sampling.model_sampling import as_model_sampling
from .sampling.schedules import sampler_sigmas

__all__ = ["Part", "RunContext"]

PLAN_CACHE_LIMIT = 4096  # plans a shared ``plan_cache`` keeps before it starts over
TIMES_CACHE_LIMIT = 256  # step sums `RunContext.times_after` keeps (a run makes one per call of a step)


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
    plan_cache: Optional[dict] = None  # call plans kept across runs (a session's; None: this run's only)
    caches: dict = field(default_factory=dict, repr=False)  # what this run derives once, by kind (below)

    def schedule(self, sampler: str, scheduler: str, steps: int) -> torch.Tensor:
        key = (sampler, scheduler, steps)
        if key not in self.schedules:
            self.schedules[key] = sampler_sigmas(self.model, sampler, scheduler, steps)
        return self.schedules[key]

    def sampling(self):
        """``(model sampling, whether it is a flow (CONST) one, the latent format, whether that format is the
        identity)`` of the run's model, once per run (every call reads them)."""
        known = self.caches.get("sampling")
        if known is None:
            fmt = self.latent_format or LatentFormat("model", self.latent_scale)
            sampling = as_model_sampling(self.model)
            known = self.caches["sampling"] = (sampling, sampling.is_const, fmt,
                                               fmt.scale_factor == 1.0 and not fmt.shift_factor)
        return known

    def sigma_max(self) -> float:
        """The model's largest sigma, as `sampler_call` reads it (a float), once per run."""
        if "sigma_max" not in self.caches:
            self.caches["sigma_max"] = float(self.model.sigmas[-1])
        return self.caches["sigma_max"]

    def plan(self, sampler: str, scheduler: str, steps: int, op: Op, ratio: float):
        """The `sampling.call.checked_plan` of a call of ``op`` (its sigmas sliced and checked), once per run."""
        cache = self.caches.setdefault("plans", {})
        key = (sampler, scheduler, steps, op.start, op.end, op.leftover, ratio)
        plan = cache.get(key)
        if plan is None:
            plan = cache[key] = self._shared_plan(key)
            if plan.sigmas is not None:
                self.caches.setdefault("bounds", {})[id(plan.sigmas)] = (plan.first_value, plan.last_value)
        return plan

    def _shared_plan(self, key: tuple):
        """The plan of ``key`` from ``plan_cache`` (made by an earlier run with this model), else made now.
        A plan is immutable and depends only on the model and ``key``: the same bits either way."""
        shared = self.plan_cache
        hit = None if shared is None else shared.get((id(self.model),) + key)
        if hit is not None and hit[0] is self.model:
            return hit[1]
        sampler, scheduler, steps, start, end, leftover, ratio = key
        plan = checked_plan(self.schedule(sampler, scheduler, steps), start, end, leftover, ratio, sampler=sampler,
                            const=self.sampling()[1])
        if shared is not None:
            if len(shared) >= PLAN_CACHE_LIMIT:
                shared.clear()
            shared[(id(self.model),) + key] = (self.model, plan)  # the model kept alive: its id stays its own
        return plan

    def bounds(self, sigmas: torch.Tensor) -> tuple:
        """``(float(sigmas[0]), float(sigmas[-1]))`` of a call's sigmas, read from its plan when it has one."""
        known = self.caches.get("bounds", {}).get(id(sigmas))
        return known if known is not None else (float(sigmas[0]), float(sigmas[-1]))

    def zeros(self, like: torch.Tensor) -> torch.Tensor:
        """``torch.zeros_like(like)`` (a call's noise when it adds none), once per run; never written to."""
        cache = self.caches.setdefault("zeros", {})
        key = (tuple(like.shape), like.dtype, like.device)
        if key not in cache:
            cache[key] = zeros = torch.zeros_like(like)
            self.caches.setdefault("owned", {})[id(zeros)] = zeros  # made here (`times_after`)
        return cache[key]

    def _cached(self, kind: str, mask: Optional[torch.Tensor], key: tuple,
                make: Callable[[], torch.Tensor]) -> torch.Tensor:
        cache = self.caches.setdefault(kind, {})
        key = (id(mask),) + key
        if key not in cache:
            cache[key] = (mask, make())  # the mask kept alive: its id stays its own
        return cache[key][1]

    def at_latent(self, mask: Optional[torch.Tensor], h: int, w: int) -> torch.Tensor:
        """``mask`` (one of this context's masks, or None: everywhere) resized to the latent, once per run."""
        if mask is None:
            return self._cached("resized", None, (h, w), lambda: torch.ones(h, w))
        return self._cached("resized", mask, (h, w), lambda: mask_ops.resize(mask, h, w))

    def times_after(self, times: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        """``times + m``: the calls that denoised each pixel this step, after one more over ``m``. Every step
        of a run adds the same masks to the same maps (`zeros`, then these sums), so each sum is made once
        per run. A map this context did not make (a state loaded, or copied out of the history) is summed as
        it comes and nothing of it is kept. The maps are never written to."""
        cache = self.caches.setdefault("times", {})
        key = (id(times), id(m))
        hit = cache.get(key)
        if hit is not None and hit[0] is times and hit[1] is m:
            return hit[2]
        total = times + m
        owned = self.caches.setdefault("owned", {})
        if owned.get(id(times)) is times and len(cache) < TIMES_CACHE_LIMIT:
            cache[key] = (times, m, total)  # all three this context's own: their ids stay theirs
            owned[id(total)] = total
        return total

    def outside(self, mask: Optional[torch.Tensor], h: int, w: int) -> torch.Tensor:
        """``1 - at_latent(mask, h, w)``, once per run."""
        return self._cached("outside", mask, (h, w), lambda: 1 - self.at_latent(mask, h, w))

    def call_mask(self, mask: torch.Tensor, like: torch.Tensor) -> LatentMask:
        """A call's ``noise_mask`` as `sampler_call` prepares it for a latent like ``like``, once per run."""
        return self._cached("call_masks", mask, (tuple(like.shape), like.dtype, like.device),
                            lambda: latent_mask(mask, like))

    def mask_for(self, op: Op) -> Optional[torch.Tensor]:
        if op.mask == "inv":
            return self.inv
        if op.mask == "region":
            return self.region_masks[op.region]
        return None
