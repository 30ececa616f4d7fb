"""RegionalSamplerSession: the reference regional sampler, observable and steppable.

The session owns every parameter and the state between sub-steps. It holds one engine (the mode's:
`faithful.FaithfulEngine` or `coherent.CoherentEngine`), which plans the node's program of sub-steps
from a frozen `node_params.NodeParams` and runs them one at a time with a pure executor; the session
records each state in its `timeline.Timeline` and publishes it as traits, so widgets only observe.
A sub-step computes its new state first and assigns all traits before notifying: a failure leaves
the session as it was. Files: `persistence.py`.
"""
from __future__ import annotations

import asyncio
import bisect
import contextlib
import weakref
from typing import Optional

import torch
from traitlets import Any, Bool, Float, HasTraits, Int, Unicode, observe, validate
from traitlets.utils.bunch import Bunch

from . import faithful, node_checks, program
from .coherent import COHERENT_ENGINE
from .models.base import PromptCache
from .timeline import History, Timeline
from .persistence import SessionFiles
from .params import (MAX_STEPS, Choice, Flag, InstanceOf, ListOf, ParameterError, Seed, StrictFloat, StrictInt,
                     Value, check_choice, check_index_list, check_int)
from .faithful import FAITHFUL_ENGINE
from .node_params import FAITHFUL, NodeParams, Quirks, RegionParams, SamplerConfig
from .sampling.noise import SEED_2ND_MODES
from .regions import Region
from .sampling import masks as mask_ops
from .sampling import recovery

NODES = ("RegionalSamplerAdvanced", "RegionalSampler")
MODES = ("faithful", "coherent")
__all__ = ["ParameterError", "Region", "RegionalSamplerSession", "regional_sampler", "regional_sampler_advanced"]


# Parameters whose change re-plans the run (back to the start); the others fork from the current sub-step.
_STRUCTURAL = ("add_noise", "noise_seed", "steps", "start_at_step", "end_at_step", "restore_latent",
               "return_with_leftover_noise", "seed", "seed_2nd", "seed_2nd_mode", "base_only_steps", "denoise",
               "latent_image", "quirks", "mode")
_FORKING = ("base", "overlap_factor", "additional_mode", "additional_sampler", "additional_sigma_ratio")
_REGION_TRAITS = ("mask", "config", "variation_seed", "variation_strength", "variation_method")
_PARAMETERS = frozenset(_STRUCTURAL + _FORKING + ("regions", "history_limit"))


class RegionalSamplerSession(SessionFiles, HasTraits):
    """Reproduces ``RegionalSamplerAdvanced`` (default) or ``RegionalSampler`` one sub-step at a time.

    Every parameter is a `params` trait: a rejected value raises `ParameterError` and changes
    nothing. A change that fails later (a rebuild that raises or is interrupted, an observer that
    raises) is rolled back too: the session is left exactly as it was.
    """

    node = Unicode("RegionalSamplerAdvanced", read_only=True)
    base = InstanceOf(SamplerConfig(), SamplerConfig)
    regions = ListOf(accepted="a list of Region")
    latent_image = Value(accepted="a float tensor [B, C, h, w]")
    # RegionalSamplerAdvanced
    add_noise = Flag(True)
    noise_seed = Seed(0)
    steps = StrictInt(20, 1, MAX_STEPS)
    start_at_step = StrictInt(0, 0, MAX_STEPS)
    end_at_step = StrictInt(10000, 0, MAX_STEPS)
    return_with_leftover_noise = Flag(False, label="leftover noise")
    # RegionalSampler
    seed = Seed(0)
    seed_2nd = Seed(0)
    seed_2nd_mode = Choice("ignore", SEED_2ND_MODES)
    base_only_steps = StrictInt(2, 0, MAX_STEPS)
    denoise = StrictFloat(1.0, 0.0, 1.0, open_low=True)
    # both
    overlap_factor = StrictInt(10, 0, mask_ops.MAX_OVERLAP)
    restore_latent = Flag(True)
    additional_mode = Choice("ratio between", lambda: recovery.ADDITIONAL_MODES, label="recovery")
    additional_sampler = Choice("AUTO", lambda: recovery.ADDITIONAL_SAMPLERS, label="recovery sampler")
    additional_sigma_ratio = StrictFloat(0.3, 0.0, 1.0, label="recovery ratio")
    quirks = InstanceOf(FAITHFUL, Quirks, help="the reference's quirks, each behind a switch (node_params.Quirks)")
    mode = Choice("faithful", MODES, help="'faithful' (the reference, default) or 'coherent' (coherent.py)")
    history_limit = StrictInt(512 * 2**20, 0, 2**50, help="bytes of tensors kept for scrubbing")

    # observable state, notified once per sub-step
    step_index = Int(0)
    phase = Any(None)
    sigma = Any(None)
    sigma_next = Any(None)
    latent = Any()
    denoised = Any(None)
    masks = Any(None)
    status = Unicode("")
    progress = Float(0.0)
    done = Bool(False)
    result = Any(None)
    sigma_map = Any(None)
    times_map = Any(None)
    comfy_report = None  # from_comfy's report: what was imported, skipped, ignored (a dict)

    def __init__(self, model, latent, *, base: Optional[SamplerConfig] = None, regions=(), node=NODES[0], **params):
        check_choice(node, "node", NODES)
        allowed = set(_STRUCTURAL + _FORKING) - {"base", "latent_image"}
        unknown = set(params) - allowed
        if unknown:
            raise ParameterError(f"{sorted(unknown)[0]}: unknown parameter; accepted: {', '.join(sorted(allowed))}")
        if regions is None:
            raise ParameterError("regions: expected a list of Region, got None")
        self._model = model
        self._ready = False
        self._prompts = PromptCache()  # the model's conditioning per prompt
        self._grow_cache: dict = {}  # grown region masks, by mask array (painting forks often)
        self._timeline = Timeline()  # every state computed, for scrubbing
        self._engine = FAITHFUL_ENGINE  # the mode's engine (chosen again by every reset)
        self._ops, self._starts, self._ctx, self._state = [], [0], None, None
        samples, batch_index = node_checks.unpack_latent(latent)
        super().__init__(base=base if base is not None else SamplerConfig(), regions=list(regions),
                         latent_image=samples, **params)
        self._batch_index = None if batch_index is None else check_index_list(
            batch_index, "batch_index", self.latent_image.shape[0])
        self.set_trait("node", node)
        self._check_run()
        self._ready = True
        self.reset()

    # ---- construction helpers -----------------------------------------------------------

    @classmethod
    def regional_sampler(cls, model, latent, *, base=None, regions=(), **params):
        """A session reproducing the non-advanced ``RegionalSampler`` node (spec §7)."""
        return cls(model, latent, base=base, regions=regions, node="RegionalSampler", **params)

    @property
    def model(self):
        return self._model

    @property
    def image_size(self) -> tuple:
        """(height, width) of the image the latent implies: every region mask has this size."""
        return node_checks.image_size(self.latent_image, self._model)

    # ---- checks with the proposed value in place (node_checks.py) ---------------------------

    @validate("latent_image")
    def _valid_latent(self, proposal):
        x = node_checks.check_latent(proposal["value"], self._model, self._batch_index if self._ready else None)
        self._check_regions(self._trait_values.get("regions", ()), latent=x)
        return x.clone()

    @validate("base")
    def _valid_base(self, proposal):
        self._check_prompts(proposal["value"], "base")
        return proposal["value"]

    def _check_prompts(self, config, where):
        node_checks.check_prompts(config, self._model, self._prompts, where)

    @validate("regions")
    def _valid_regions(self, proposal):
        regions = list(proposal["value"])
        self._check_regions(regions)
        for j, region in enumerate(regions, 1):
            self._check_prompts(region.config, f"region {j}")
        return regions

    def _check_regions(self, regions, latent=None):
        latent = self.latent_image if latent is None else latent
        node_checks.check_regions(regions, node_checks.image_size(latent, self._model))

    def _guard_region(self, region, name, value):
        """Checks a region's new mask or config before the region stores it."""
        j = next((k for k, r in enumerate(self.regions, 1) if r is region), 0)
        if name == "mask":
            node_checks.check_mask_size(value, self.image_size, f"region {j}: ")
        elif name == "config":
            self._check_prompts(value, f"region {j}")

    @validate(*(n for n in _STRUCTURAL + _FORKING if n not in ("latent_image", "base")))
    def _cross_check(self, proposal):
        # runs after the trait's own check: the cross-parameter rules with the proposed value in place
        if self._ready:
            self._check_run(**{proposal["trait"].name: proposal["value"]})
        return proposal["value"]

    def _check_run(self, **proposed):
        names = ("steps", "start_at_step", "end_at_step", "denoise")
        node_checks.check_run(self.node, **{n: proposed[n] if n in proposed else getattr(self, n) for n in names})

    # ---- planning and change tracking --------------------------------------------------------

    def node_params(self) -> NodeParams:
        """The run's parameters, frozen, as the engines read them."""
        names = [n for n in NodeParams.__dataclass_fields__ if n not in ("model", "regions", "node", "batch_index")]
        regions = tuple(RegionParams(r.mask, r.config, r.variation_seed, r.variation_strength, r.variation_method)
                        for r in self.regions)
        return NodeParams(model=self._model, regions=regions, node=self.node, batch_index=self._batch_index,
                          **{n: getattr(self, n) for n in names})

    @property
    def context(self):
        """The engine's run context for the current settings (masks, parts, schedule); built on first use."""
        return self._context()

    def _context(self):
        if self._ctx is None:
            self._ctx = self._engine.context(self.node_params(), self._prompts, self._grow_cache)
        return self._ctx

    @observe(*_STRUCTURAL)
    def _on_structural(self, change):
        if self._ready:
            self.reset()

    @observe(*_FORKING)
    def _on_forking(self, change):
        if self._ready and change["name"] in self._engine.replans_on:
            self.reset()
        elif self._ready:
            self._fork()

    @observe("regions")
    def _on_regions(self, change):
        for region in change["old"] or []:
            region.unobserve(self._on_region_trait, names=list(_REGION_TRAITS))
            region._guards.pop(id(self), None)
        for region in change["new"]:
            region.observe(self._on_region_trait, names=list(_REGION_TRAITS))
            region._guards[id(self)] = weakref.WeakMethod(self._guard_region)
        if self._ready:
            old, new = change["old"] or [], change["new"]
            if len(old) != len(new):
                self.reset()
            else:
                self._fork()

    def _on_region_trait(self, change):
        if not self._ready:
            return
        saved = self._internal()
        try:
            self._fork()
        except BaseException:
            with self._quiet(), contextlib.suppress(Exception):
                change["owner"].set_trait(change["name"], change["old"])  # the change did not happen
            self._restore_internal(saved)
            raise

    def notify_change(self, change):
        """A parameter change whose observers fail (any exception, an interrupt too) is undone entirely."""
        if not self._ready or change.get("type") != "change" or change["name"] not in _PARAMETERS:
            return super().notify_change(change)
        saved = self._internal()
        try:
            return super().notify_change(change)
        except BaseException:
            self._restore_internal(saved)
            with self._quiet(), contextlib.suppress(Exception):
                self.set_trait(change["name"], change["old"])  # observers see the old value again
            self._restore_internal(saved)  # whatever those observers did
            raise

    def _internal(self) -> tuple:
        """Everything a step or a parameter change may replace (all of it immutable or copied here)."""
        return self._engine, self._ops, self._starts, self._ctx, self._state, self._timeline.saved()

    def _restore_internal(self, saved):
        self._engine, self._ops, self._starts, self._ctx, self._state, timeline = saved
        self._timeline.restore(timeline)
        try:
            self._publish(self._state)
        except BaseException:  # noqa: BLE001 - an observer failing again must not hide the first error
            pass

    @contextlib.contextmanager
    def _quiet(self):
        """Trait changes made here do not fork or reset the run (used to undo a rejected value)."""
        ready, self._ready = self._ready, False
        try:
            yield
        finally:
            self._ready = ready

    def _fork(self):
        """Settings changed: keep the states up to now, forget what was computed after them."""
        self._ctx = None
        self._timeline.fork(self._state.cursor)
        self._publish(self._state)

    # ---- state --------------------------------------------------------------------------------

    @property
    def ops(self) -> list:
        """The node's program: every sub-step this run makes, in order."""
        return list(self._ops)

    @property
    def cursor(self) -> int:
        """Sub-steps done in this run (an index into `ops`; 0 = the start)."""
        return self._state.cursor

    @property
    def num_steps(self) -> int:
        """Regional steps in this run (the final base-only call counts as one)."""
        return len(self._starts) - 1

    def reset(self):
        """Back to the start of the run (with the current parameters); atomic like a step."""
        def restart():
            self._check_run()
            self._engine = _ENGINES[self.mode]
            self._ops = self._engine.plan(self.node_params())
            self._starts = program.group_starts(self._ops)
            self._ctx = None
            self._state = faithful.initial_state(self.latent_image)
            self._timeline.start(self._state)
            self._publish(self._state)
        self._atomic(restart)

    def _latent_masks(self):
        h, w = self.latent_image.shape[-2:]
        if not self.regions:
            return [torch.ones(h, w)]
        ctx = self._context()
        if ctx.latent_masks is None:
            ctx.latent_masks = self._engine.latent_masks(ctx, h, w)
        return ctx.latent_masks

    def _execute(self, state):
        return self._engine.execute(self._context(), self._ops, state)

    def _status_for(self, state) -> tuple:
        if state.cursor == 0:
            note = self._engine.note(self.node_params())
            return (f"ready ({note})" if note else "ready"), 0.0
        op = self._ops[state.cursor - 1]
        text = op.status
        if op.kind == "region" and self.regions[op.region - 1].is_empty:
            text += f" (region {op.region} is empty)"
        if len(state.passes) > 1:
            text += f" (recovery: {' + '.join(state.passes)})"
        if state.cursor == len(self._ops):
            text += " | done"
        return text, op.progress

    def _publish(self, state):
        status, progress = self._status_for(state)
        cursor = state.cursor
        group_index = bisect.bisect_right(self._starts, cursor) - 1 if cursor < len(self._ops) else self.num_steps
        values = dict(step_index=group_index, phase=self._ops[cursor - 1].phase if cursor else None,
                      sigma=state.sigma, sigma_next=state.sigma_next, latent=state.latent, denoised=state.denoised,
                      masks=self._latent_masks(), status=status, progress=float(progress), done=cursor == len(self._ops),
                      result=state.result, sigma_map=state.sigma_map, times_map=state.times_map)
        # What hold_trait_notifications() does, once: assign every changed value, then notify. These
        # are computed values of the declared types, so they are not validated again (traitlets
        # validates each held value twice); unchanged values are skipped cheaply (traitlets' own test
        # would compare tensors elementwise).
        changes, stored = [], self._trait_values
        for name, value in values.items():
            old = stored[name] if name in stored else getattr(type(self), name).default_value
            if old is value or (type(old) is type(value) and isinstance(value, _PLAIN) and old == value):
                continue
            if isinstance(value, torch.Tensor) and value.numel() != 1:
                silent = False  # bool() of an elementwise comparison raises: traitlets notifies
            else:
                try:
                    silent = bool(old == value)
                except Exception:  # noqa: BLE001 - as traitlets: a comparison that fails means "changed"
                    silent = False
            changes.append((name, old, value, silent))
        for name, _, value, _ in changes:
            stored[name] = value
        for name, old, value, silent in changes:
            if silent is not True:
                self.notify_change(Bunch(name=name, old=old, new=value, owner=self, type="change"))

    def _next_state(self, state):
        kept = self._timeline.after(state)
        return kept if kept is not None else self._execute(state)

    def _record(self, state):
        self._timeline.record(state, self.history_limit, self._starts)

    def _snapshot_at(self, cursor):
        """The state after ``cursor`` sub-steps, replaying from the nearest kept snapshot."""
        return self._timeline.snapshot_at(cursor, self._execute)

    @property
    def timeline(self) -> Timeline:
        """The run's kept states (`timeline.Timeline`: ``entries[k]`` is the state after k sub-steps,
        `timeline.Packed` in the arena, or None where evicted). For inspection only: the session changes it."""
        return self._timeline

    def _atomic(self, fn):
        saved = self._internal()
        try:
            return fn()
        except BaseException:
            self._restore_internal(saved)
            raise

    def substep(self):
        """One sampler call or composite; returns the new phase. Atomic: if the call or an observer
        raises (an interrupt too), the session has not advanced."""
        if self.done:
            raise RuntimeError("the run is done: reset() or goto(k) to step again")

        def advance():
            state = self._next_state(self._state)
            self._record(state)
            self._state = state
            self._publish(state)
            return self.phase
        return self._atomic(advance)

    def step(self):
        """One regional step: the base call, then each region call and composite."""
        if self.done:
            raise RuntimeError("the run is done: reset() or goto(k) to step again")

        def advance():
            target = self._starts[self.step_index + 1]
            while self._state.cursor < target:
                self.substep()
            return self.step_index
        return self._atomic(advance)

    def run(self, progress: bool = False):
        """Run to the end and return the node's output latent (also ``self.result``)."""
        def advance():
            bar = None
            if progress:
                from tqdm.auto import tqdm
                bar = tqdm(total=len(self._ops), initial=self._state.cursor, desc=self.node)
            try:
                while not self.done:
                    self.substep()
                    if bar is not None:
                        bar.update(1)
            finally:
                if bar is not None:
                    bar.close()
            return self.result
        return self._atomic(advance)

    async def arun(self, delay: float = 0.0):
        """Run to the end, yielding to the event loop between sub-steps (cancel to pause)."""
        while not self.done:
            self.substep()
            await asyncio.sleep(delay)
        return self.result

    def goto(self, k: int):
        """Restore the state after ``k`` regional steps (0 = the start) exactly."""
        k = check_int(k, "k", 0, self.num_steps)
        target = self._starts[k]
        def move():
            timeline = self._timeline
            if target < len(timeline):
                state = self._snapshot_at(target)
            else:
                state = self._state if self._state.cursor <= target else self._snapshot_at(len(timeline) - 1)
                state = timeline.entry(-1) if timeline.entries[-1] is not None else state
                while state.cursor < target:
                    state = self._execute(state)
                    self._record(state)
            self._state = state
            self._publish(state)
        self._atomic(move)

    def restore_at(self, state):
        """Continue from ``state``, a state of this run after ``state.cursor`` sub-steps (a loaded one):
        it becomes the current state; the states before it are recomputed on demand when scrubbed to."""
        if not 0 <= state.cursor <= len(self._ops):
            raise ValueError(f"cursor: {state.cursor} is outside this run's 0..{len(self._ops)}")

        def move():
            self._timeline.restore_at(state)
            self._state = state
            self._publish(state)
        self._atomic(move)

    @property
    def history(self) -> "History":
        return History(self._timeline, self._execute, lambda: self._starts)

    # ---- what persistence.py reads (save, load, to_comfy, save_png, from_comfy: persistence.SessionFiles) ---

    @property
    def state(self) -> faithful.RunState:
        """The current state (immutable): what the traits publish, and what `save` writes."""
        return self._state

    @property
    def engine(self):
        """The mode's engine (`faithful.FaithfulEngine` or `coherent.CoherentEngine`)."""
        return self._engine

    @property
    def batch_index(self) -> Optional[list]:
        """The latent's batch_index (None: 0..B-1)."""
        return self._batch_index

    def parameters(self) -> dict:
        """The node's parameters (the ones this session's node uses), by the node's names."""
        if self.node == "RegionalSamplerAdvanced":
            names = ("add_noise", "noise_seed", "steps", "start_at_step", "end_at_step", "overlap_factor",
                     "restore_latent", "return_with_leftover_noise")
        else:
            names = ("seed", "seed_2nd", "seed_2nd_mode", "steps", "base_only_steps", "denoise", "overlap_factor",
                     "restore_latent")
        names += ("additional_mode", "additional_sampler", "additional_sigma_ratio")
        return {n: getattr(self, n) for n in names}

    def __repr__(self):
        return (f"<RegionalSamplerSession {self.node} regions={len(self.regions)} step {self.step_index}/"
                f"{self.num_steps} status={self.status!r}>")


_PLAIN = (int, float, str, bool, tuple)
_ENGINES = {"faithful": FAITHFUL_ENGINE, "coherent": COHERENT_ENGINE}


def regional_sampler_advanced(model, latent, *, base, regions, **node_params) -> torch.Tensor:
    """The ``RegionalSamplerAdvanced`` node in one call."""
    return RegionalSamplerSession(model, latent, base=base, regions=regions, **node_params).run()


def regional_sampler(model, latent, *, base, regions, **node_params) -> torch.Tensor:
    """The ``RegionalSampler`` node in one call."""
    return RegionalSamplerSession.regional_sampler(model, latent, base=base, regions=regions, **node_params).run()
