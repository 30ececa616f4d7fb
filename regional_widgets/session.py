"""RegionalSamplerSession: the reference regional sampler, observable and steppable.

The session owns every parameter and the state between sub-steps. It plans the node's program of
sub-steps (`regional.plan_advanced` / `plan_regional`), runs them one at a time with the pure
executor, and publishes the state as traits, so widgets only observe. A sub-step computes its new
state first and assigns it under ``hold_trait_notifications()``: a failure leaves every trait as
it was.
"""
from __future__ import annotations

import asyncio
import bisect
import contextlib
import math
from typing import Optional

import numpy as np
import torch
from traitlets import Any, Bool, Float, HasTraits, Int, List, TraitError, Unicode, observe, validate

from . import coherent, regional
from .regional import FAITHFUL, Quirks, SamplerConfig, SEED_2ND_MODES
from .sampling import masks as mask_ops
from .sampling.noise import SEED_MAX, VARIATION_METHODS
from .sampling.recovery import ADDITIONAL_MODES, ADDITIONAL_SAMPLERS, check_additional

NODES = ("RegionalSamplerAdvanced", "RegionalSampler")
MODES = ("faithful", "coherent")


class ParameterError(ValueError, TraitError):
    """A rejected parameter: names the parameter and the accepted values."""


def _int_in(value, name, lo, hi):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= value <= hi:
        raise ParameterError(f"{name}: expected an integer in {lo}..{hi}, got {value!r}")
    return int(value)


def _float_in(value, name, lo, hi, open_low=False):
    ok = isinstance(value, (int, float, np.floating)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value > hi or value < lo or (open_low and value <= lo):
        bracket = "(" if open_low else "["
        raise ParameterError(f"{name}: expected a number in {bracket}{lo:g}, {hi:g}], got {value!r}")
    return float(value)


def _bool(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise ParameterError(f"{name}: expected True or False, got {value!r}")
    return bool(value)


def _choice(value, name, options):
    if value not in options:
        raise ParameterError(f"{name}: unknown value {value!r}; accepted: {', '.join(options)}")
    return value


def _instance(value, name, cls):
    if not isinstance(value, cls):
        raise ParameterError(f"{name}: expected a {cls.__module__}.{cls.__name__}, got {type(value).__name__}")
    return value


class Region(HasTraits):
    """One regional prompt: a mask at image resolution, its sampler and its variation noise."""

    mask = Any()
    config = Any()
    variation_seed = Any(0)
    variation_strength = Any(0.0)
    variation_method = Any("linear")

    def __init__(self, mask, config: Optional[SamplerConfig] = None, variation_seed=0, variation_strength=0.0,
                 variation_method="linear"):
        super().__init__(mask=mask, config=config if config is not None else SamplerConfig(),
                         variation_seed=variation_seed, variation_strength=variation_strength,
                         variation_method=variation_method)

    @validate("mask")
    def _valid_mask(self, proposal):
        try:
            tensor = mask_ops.as_mask(proposal["value"], "mask")
        except ValueError as err:
            raise ParameterError(str(err)) from None
        return tensor.numpy().astype(np.float32, copy=True)

    @validate("config")
    def _valid_config(self, proposal):
        if not isinstance(proposal["value"], SamplerConfig):
            raise ParameterError(f"config: expected a SamplerConfig, got {type(proposal['value']).__name__}")
        return proposal["value"]

    @validate("variation_seed")
    def _valid_seed(self, proposal):
        return _int_in(proposal["value"], "variation_seed", 0, SEED_MAX)

    @validate("variation_strength")
    def _valid_strength(self, proposal):
        return _float_in(proposal["value"], "variation_strength", 0.0, 1.0)

    @validate("variation_method")
    def _valid_method(self, proposal):
        return _choice(proposal["value"], "variation_method", VARIATION_METHODS)

    @property
    def mask_tensor(self) -> torch.Tensor:
        return torch.from_numpy(self.mask)

    @property
    def is_empty(self) -> bool:
        return not np.any(self.mask)

    def __repr__(self):
        return (f"Region(mask={self.mask.shape}, config={self.config!r}, variation_seed={self.variation_seed}, "
                f"variation_strength={self.variation_strength})")


# Parameters whose change re-plans the run (back to the start); the others fork from the current sub-step.
_STRUCTURAL = ("add_noise", "noise_seed", "steps", "start_at_step", "end_at_step", "restore_latent",
               "return_with_leftover_noise", "seed", "seed_2nd", "seed_2nd_mode", "base_only_steps", "denoise",
               "latent_image", "quirks", "mode")
_FORKING = ("base", "overlap_factor", "additional_mode", "additional_sampler", "additional_sigma_ratio")
_REGION_TRAITS = ("mask", "config", "variation_seed", "variation_strength", "variation_method")
_STATE_TENSORS = ("latent", "base_latent", "denoised", "result", "sigma_map", "base_sigma_map", "times_map")


class RegionalSamplerSession(HasTraits):
    """Reproduces ``RegionalSamplerAdvanced`` (default) or ``RegionalSampler`` one sub-step at a time."""

    node = Unicode("RegionalSamplerAdvanced", read_only=True)
    base = Any()
    regions = List()
    latent_image = Any()
    # RegionalSamplerAdvanced
    add_noise = Any(True)
    noise_seed = Any(0)
    steps = Any(20)
    start_at_step = Any(0)
    end_at_step = Any(10000)
    return_with_leftover_noise = Any(False)
    # RegionalSampler
    seed = Any(0)
    seed_2nd = Any(0)
    seed_2nd_mode = Any("ignore")
    base_only_steps = Any(2)
    denoise = Any(1.0)
    # both
    overlap_factor = Any(10)
    restore_latent = Any(True)
    additional_mode = Any("ratio between")
    additional_sampler = Any("AUTO")
    additional_sigma_ratio = Any(0.3)
    quirks = Any(FAITHFUL, help="the reference's quirks, each behind a switch (regional.Quirks)")
    mode = Any("faithful", help="'faithful' (the reference, default) or 'coherent' (coherent.py)")
    history_limit = Int(512 * 2**20, help="bytes of tensors kept for scrubbing")

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

    def __init__(self, model, latent, *, base: Optional[SamplerConfig] = None, regions=(), node=NODES[0], **params):
        _choice(node, "node", NODES)
        allowed = set(_STRUCTURAL + _FORKING) - {"base", "latent_image"}
        unknown = set(params) - allowed
        if unknown:
            raise ParameterError(f"{sorted(unknown)[0]}: unknown parameter; accepted: {', '.join(sorted(allowed))}")
        self._model = model
        self._ready = False
        self._cond_cache: dict = {}
        self._grow_cache: dict = {}  # grown region masks, by mask array (painting forks often)
        samples, self._batch_index = self._unpack_latent(latent)
        super().__init__(base=base if base is not None else SamplerConfig(), regions=list(regions),
                         latent_image=samples, **params)
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

    def _unpack_latent(self, latent):
        batch_index = None
        if isinstance(latent, dict):
            if "samples" not in latent:
                raise ParameterError("latent: a dict latent needs a 'samples' tensor")
            batch_index = latent.get("batch_index")
            latent = latent["samples"]
        return latent, batch_index

    @validate("latent_image")
    def _valid_latent(self, proposal):
        x = proposal["value"]
        if isinstance(x, np.ndarray):
            x = torch.from_numpy(x)
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or not x.is_floating_point():
            raise ParameterError("latent: expected a float tensor [B, C, h, w] (or a dict with 'samples')")
        if not torch.isfinite(x).all():
            raise ParameterError("latent: expected finite values (found NaN or inf)")
        channels = self._model.latent_channels
        if x.shape[1] != channels:
            if torch.count_nonzero(x) == 0:  # the reference's fix_empty_latent_channels
                x = x.repeat(1, math.ceil(channels / x.shape[1]), 1, 1)[:, :channels]
            else:
                raise ParameterError(f"latent: expected {channels} channels for this model, got {x.shape[1]}")
        return x.clone()

    @validate("base")
    def _valid_base(self, proposal):
        if not isinstance(proposal["value"], SamplerConfig):
            raise ParameterError(f"base: expected a SamplerConfig, got {type(proposal['value']).__name__}")
        self._check_prompts(proposal["value"], "base")
        return proposal["value"]

    def _check_prompts(self, config, where):
        for prompt in (config.positive, config.negative):
            if prompt not in self._cond_cache:
                try:
                    self._cond_cache[prompt] = self._model.encode(prompt)
                except ValueError as err:
                    raise ParameterError(f"{where}: {err}") from None

    @validate("regions")
    def _valid_regions(self, proposal):
        regions = list(proposal["value"])
        shape = None
        for j, region in enumerate(regions, 1):
            if not isinstance(region, Region):
                raise ParameterError(f"regions: item {j} must be a Region, got {type(region).__name__}")
            if shape is not None and region.mask.shape != shape:
                raise ParameterError(f"regions: every mask must have one shape; region 1 is {shape}, "
                                     f"region {j} is {region.mask.shape}")
            shape = region.mask.shape
            self._check_prompts(region.config, f"region {j}")
        return regions

    def _make_validator(name, check):  # noqa: N805 - a class-body helper
        @validate(name)
        def _v(self, proposal):
            return check(proposal["value"], name)
        return _v

    _v_add_noise = _make_validator("add_noise", _bool)
    _v_restore = _make_validator("restore_latent", _bool)
    _v_leftover = _make_validator("return_with_leftover_noise", _bool)
    _v_noise_seed = _make_validator("noise_seed", lambda v, n: _int_in(v, n, 0, SEED_MAX))
    _v_seed = _make_validator("seed", lambda v, n: _int_in(v, n, 0, SEED_MAX))
    _v_seed_2nd = _make_validator("seed_2nd", lambda v, n: _int_in(v, n, 0, SEED_MAX))
    _v_steps = _make_validator("steps", lambda v, n: _int_in(v, n, 1, 10000))
    _v_start = _make_validator("start_at_step", lambda v, n: _int_in(v, n, 0, 10000))
    _v_end = _make_validator("end_at_step", lambda v, n: _int_in(v, n, 0, 10000))
    _v_overlap = _make_validator("overlap_factor", lambda v, n: _int_in(v, n, 0, 10000))
    _v_base_only = _make_validator("base_only_steps", lambda v, n: _int_in(v, n, 0, 10000))
    _v_denoise = _make_validator("denoise", lambda v, n: _float_in(v, n, 0.0, 1.0, open_low=True))
    _v_mode2 = _make_validator("seed_2nd_mode", lambda v, n: _choice(v, n, SEED_2ND_MODES))
    _v_amode = _make_validator("additional_mode", lambda v, n: _choice(v, n, ADDITIONAL_MODES))
    _v_asampler = _make_validator("additional_sampler", lambda v, n: _choice(v, n, ADDITIONAL_SAMPLERS))
    _v_aratio = _make_validator("additional_sigma_ratio", lambda v, n: _float_in(v, n, 0.0, 1.0))
    _v_quirks = _make_validator("quirks", lambda v, n: _instance(v, n, Quirks))
    _v_mode = _make_validator("mode", lambda v, n: _choice(v, n, MODES))
    del _make_validator

    def _check_run(self):
        """Cross-parameter checks, made before a run starts (single values are checked on assignment)."""
        if self.node == "RegionalSamplerAdvanced" and self.mode == "faithful":
            end = min(self.steps, self.end_at_step)
            if self.start_at_step >= end:
                raise ParameterError(f"start_at_step: expected less than min(steps, end_at_step) = {end}, "
                                     f"got {self.start_at_step}")
        check_additional(self.additional_mode, self.additional_sampler, self.additional_sigma_ratio)

    # ---- planning and change tracking --------------------------------------------------------

    def _plan(self):
        R = len(self.regions)
        if self.mode == "coherent":
            ops, self._coherent_plan = coherent.plan_coherent(self)
            return ops
        if self.node == "RegionalSamplerAdvanced":
            return regional.plan_advanced(R=R, add_noise=self.add_noise, noise_seed=self.noise_seed, steps=self.steps,
                                          start_at_step=self.start_at_step, end_at_step=self.end_at_step,
                                          restore_latent=self.restore_latent,
                                          return_with_leftover_noise=self.return_with_leftover_noise)
        return regional.plan_regional(R=R, seed=self.seed, seed_2nd=self.seed_2nd, seed_2nd_mode=self.seed_2nd_mode,
                                      steps=self.steps, base_only_steps=self.base_only_steps, denoise=self.denoise,
                                      restore_latent=self.restore_latent,
                                      renoise_every_step=self.quirks.renoise_every_step)

    def _context(self):
        if self._ctx is None and self.mode == "coherent":
            seed = self.noise_seed if self.node == "RegionalSamplerAdvanced" else self.seed
            add = self.add_noise if self.node == "RegionalSamplerAdvanced" else True
            noise = regional.make_noise(self.latent_image, seed, self._batch_index, self.regions, zero_edges=False)
            self._ctx = coherent.build_coherent_context(self, self._cond_cache, self._coherent_plan, noise, seed, add)
        if self._ctx is None:
            if self.node == "RegionalSamplerAdvanced":
                specs = {"initial": self.noise_seed}
            else:
                specs = {"initial": self.seed,
                         "second": regional.second_seed(self.seed, self.seed_2nd, self.seed_2nd_mode)}
            self._ctx = regional.build_context(
                self._model, self.latent_image, self.base, self.regions, overlap_factor=self.overlap_factor,
                restore_latent=self.restore_latent, noise_specs=specs, batch_index=self._batch_index,
                additional_mode=self.additional_mode, additional_sampler=self.additional_sampler,
                additional_sigma_ratio=self.additional_sigma_ratio, cond_cache=self._cond_cache, quirks=self.quirks,
                grow_cache=self._grow_cache)
        return self._ctx

    @observe(*_STRUCTURAL)
    def _on_structural(self, change):
        if not self._ready:
            return
        try:
            self._check_run()
        except ParameterError:
            with self._quiet():
                self.set_trait(change["name"], change["old"])  # rejected: the old value stays
            raise
        self.reset()

    @observe(*_FORKING)
    def _on_forking(self, change):
        if self._ready:
            self._fork()

    @observe("regions")
    def _on_regions(self, change):
        for region in change["old"] or []:
            region.unobserve(self._on_region_trait, names=list(_REGION_TRAITS))
        for region in change["new"]:
            region.observe(self._on_region_trait, names=list(_REGION_TRAITS))
        if self._ready:
            old, new = change["old"] or [], change["new"]
            if len(old) != len(new):
                self.reset()
            else:
                self._fork()

    def _on_region_trait(self, change):
        region, name = change["owner"], change["name"]
        j = next((k for k, r in enumerate(self.regions, 1) if r is region), 0)
        try:
            if name == "config":
                self._check_prompts(change["new"], f"region {j}")
            if name == "mask" and len({r.mask.shape for r in self.regions}) > 1:
                raise ParameterError(f"region {j}: mask: every region mask must have one shape, got "
                                     f"{sorted({r.mask.shape for r in self.regions})}")
        except ParameterError:
            with self._quiet():
                region.set_trait(name, change["old"])  # rejected: the old value stays
            raise
        if self._ready:
            self._fork()

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
        del self._history[self._state.cursor + 1:]
        self._history_bytes = _history_nbytes(self._history)
        self._sealed = self._state.cursor
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
        """Back to the start of the run (with the current parameters)."""
        self._check_run()
        self._ops = self._plan()
        self._starts = regional.group_starts(self._ops)
        self._ctx = None
        self._state = regional.initial_state(self.latent_image)
        self._history = [self._state]
        self._history_bytes = _history_nbytes(self._history)
        self._sealed = 0
        self._publish(self._state)

    def _latent_masks(self):
        h, w = self.latent_image.shape[-2:]
        if not self.regions:
            return [torch.ones(h, w)]
        ctx = self._context()
        if ctx.latent_masks is None:
            if self.mode == "coherent":
                ctx.latent_masks = ctx.weights  # the blend weights
            else:
                ctx.latent_masks = ([mask_ops.resize(ctx.inv, h, w)]
                                    + [mask_ops.resize(m, h, w) for m in ctx.region_masks[1:]])
        return ctx.latent_masks

    def _execute(self, state):
        if self.mode == "coherent":
            return coherent.execute_coherent(self._context(), self._ops, state)
        return regional.execute(self._context(), self._ops, state)

    def _coherent_note(self) -> str:
        ignored = [f"region {j} ({r.config.scheduler})" for j, r in enumerate(self.regions, 1)
                   if r.config.scheduler != self.base.scheduler]
        note = f"coherent mode: one sigma grid from the base scheduler ({self.base.scheduler})"
        if ignored:
            note += "; ignored schedulers: " + ", ".join(ignored)
        return note + "; no recovery pass or re-noising is needed"

    def _status_for(self, state) -> tuple:
        if state.cursor == 0:
            return ("ready" if self.mode == "faithful" else f"ready ({self._coherent_note()})"), 0.0
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
                      masks=self._latent_masks(), status=status, progress=progress, done=cursor == len(self._ops),
                      result=state.result, sigma_map=state.sigma_map, times_map=state.times_map)
        with self.hold_trait_notifications():
            for name, value in values.items():
                # skip unchanged values cheaply; traitlets' own test would compare tensors elementwise
                old = self._trait_values.get(name)
                if old is value or (type(old) is type(value) and isinstance(value, _PLAIN) and old == value):
                    continue
                setattr(self, name, value)

    def _next_state(self, state):
        cursor = state.cursor
        if cursor + 1 < len(self._history) and self._history[cursor + 1] is not None:
            return self._history[cursor + 1]
        return self._execute(state)

    def _record(self, state):
        if len(self._history) > state.cursor:
            del self._history[state.cursor:]
            self._history_bytes = _history_nbytes(self._history)
        previous = self._history[-1]
        shared = {id(t) for t in _tensors_of(previous)} if previous is not None else set()
        fresh = {id(t): t for t in _tensors_of(state) if id(t) not in shared}
        self._history_bytes += sum(t.element_size() * t.nelement() for t in fresh.values())
        self._history.append(state)
        if self._history_bytes > self.history_limit:
            self._evict()
            self._history_bytes = _history_nbytes(self._history)

    def _evict(self):
        budget = self.history_limit
        sizes = [_nbytes(s) if s is not None else 0 for s in self._history]
        total = sum(sizes)
        # sub-step snapshots first, then step boundaries; never the start, the seal or the last state
        keep = {0, self._sealed, len(self._history) - 1}
        boundaries = set(self._starts)
        for pass_boundaries in (False, True):
            for k in range(self._sealed + 1, len(self._history) - 1):
                if total <= budget:
                    return
                if k in keep or self._history[k] is None or ((k in boundaries) != pass_boundaries):
                    continue
                self._history[k] = None
                total -= sizes[k]

    def _snapshot_at(self, cursor):
        """The state after ``cursor`` sub-steps, replaying from the nearest kept snapshot."""
        k = cursor
        while self._history[k] is None:
            k -= 1
        state = self._history[k]
        while state.cursor < cursor:
            state = self._execute(state)
        return state

    def _atomic(self, fn):
        saved = (self._state, list(self._history), self._history_bytes)
        try:
            return fn()
        except BaseException:
            self._state, self._history, self._history_bytes = saved
            self._publish(self._state)
            raise

    def substep(self):
        """One sampler call or composite; returns the new phase."""
        if self.done:
            raise RuntimeError("the run is done: reset() or goto(k) to step again")
        state = self._next_state(self._state)  # may raise: nothing has changed yet
        self._record(state)
        self._state = state
        self._publish(state)
        return self.phase

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
        k = _int_in(k, "k", 0, self.num_steps)
        target = self._starts[k]
        def move():
            if target < len(self._history):
                state = self._snapshot_at(target)
            else:
                state = self._state if self._state.cursor <= target else self._snapshot_at(len(self._history) - 1)
                state = self._history[-1] if self._history[-1] is not None else state
                while state.cursor < target:
                    state = self._execute(state)
                    self._record(state)
            self._state = state
            self._publish(state)
        self._atomic(move)

    @property
    def history(self) -> "History":
        return History(self)

    # ---- persistence --------------------------------------------------------------------------

    def save(self, path):
        """Write the session to a folder: parameters JSON, masks npz (exact floats), latents safetensors.

        The state at the current sub-step is saved too, so load -> continue equals never stopping.
        """
        from .io.session_files import pack_tree, write_session

        state = self._state
        doc = {"node": self.node, "parameters": self.parameters(), "base": self.base.to_dict(),
               "regions": [{"config": r.config.to_dict(), "variation_seed": r.variation_seed,
                            "variation_strength": r.variation_strength, "variation_method": r.variation_method}
                           for r in self.regions],
               "batch_index": self._batch_index, "latent_channels": int(self._model.latent_channels),
               "quirks": self.quirks.to_dict(),
               "cursor": state.cursor,
               "state": {"sigma": state.sigma, "sigma_next": state.sigma_next, "model_calls": state.model_calls,
                         "passes": list(state.passes)}}
        tensors = {"latent_image": self.latent_image}
        tensors.update({f"state.{n}": getattr(state, n) for n in _STATE_TENSORS if getattr(state, n) is not None})
        doc["mode"] = self.mode
        doc["extra"] = pack_tree(_plain_extra(state.extra), "extra", tensors) if state.extra else None
        write_session(path, doc, {f"region_{j}": r.mask for j, r in enumerate(self.regions, 1)}, tensors)

    @classmethod
    def load(cls, path, model) -> "RegionalSamplerSession":
        """Read a folder written by `save`; a damaged or mismatched file raises and builds nothing."""
        from .io.session_files import SessionFileError, read_session

        doc, masks, tensors = read_session(path)
        try:
            return cls._from_saved(doc, masks, tensors, model)
        except SessionFileError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise SessionFileError(f"session file: invalid content ({type(err).__name__}: {err})") from None

    @classmethod
    def _from_saved(cls, doc, masks, tensors, model):
        from .io.session_files import SessionFileError

        regions_doc = doc["regions"]
        if len(masks) != len(regions_doc):
            raise SessionFileError(f"masks.npz: {len(masks)} masks for {len(regions_doc)} regions")
        if doc["latent_channels"] != model.latent_channels:
            raise SessionFileError(f"model: the session was saved with a {doc['latent_channels']}-channel model, "
                                   f"this one has {model.latent_channels}")
        regions = [Region(masks[f"region_{j}"], SamplerConfig(**r["config"]), r["variation_seed"],
                          r["variation_strength"], r["variation_method"]) for j, r in enumerate(regions_doc, 1)]
        latent = tensors["latent_image"]
        if doc.get("batch_index") is not None:
            latent = {"samples": latent, "batch_index": doc["batch_index"]}
        session = cls(model, latent, base=SamplerConfig(**doc["base"]), regions=regions, node=doc["node"],
                      quirks=Quirks(**doc.get("quirks", {})), mode=doc.get("mode", "faithful"), **doc["parameters"])
        cursor = doc["cursor"]
        if isinstance(cursor, bool) or not isinstance(cursor, int) or not 0 <= cursor <= len(session._ops):
            raise SessionFileError(f"session.json: cursor {cursor!r} is outside this run's 0..{len(session._ops)}")
        extra = doc["state"]
        from .io.session_files import unpack_tree

        stored = doc.get("extra")
        extra_tree = _live_extra(session, unpack_tree(stored, tensors)) if stored else None
        state = regional.RunState(**{n: tensors.get(f"state.{n}") for n in _STATE_TENSORS}, cursor=cursor,
                                  sigma=extra["sigma"], sigma_next=extra["sigma_next"],
                                  model_calls=extra["model_calls"], passes=tuple(extra["passes"]),
                                  extra=extra_tree)
        if state.latent is None or state.latent.shape != session.latent_image.shape:
            raise SessionFileError("latents.safetensors: the saved state does not match the latent's shape")
        if cursor:
            # earlier states are recomputed on demand (with the loaded settings) when scrubbed to
            session._history = [session._history[0]] + [None] * (cursor - 1) + [state]
            session._history_bytes = _history_nbytes(session._history)
            session._sealed = cursor
            session._state = state
            session._publish(state)
        return session

    def to_comfy(self, path, checkpoint="model.safetensors") -> list:
        """Write the session as a ComfyUI API-format workflow (JSON) with its masks as PNGs beside it.

        ``checkpoint`` stands in for this session's model. Masks are 8-bit (``round(mask * 255)``,
        read with ``LoadImageMask`` channel red). Raises `io.comfy.ComfyWorkflowError` for what the
        nodes cannot express: coherent mode, quirks switched off, a latent that is not empty or has
        a batch_index, no regions, an image size EmptyLatentImage cannot take. Returns the paths.
        """
        from .io.comfy import write_workflow

        batch, _, h, w = self.latent_image.shape
        down = self._model.downscale
        description = {
            "node": self.node, "parameters": self.parameters(), "base": self.base.to_dict(),
            "regions": [{"config": r.config.to_dict(), "mask": r.mask, "variation_seed": r.variation_seed,
                         "variation_strength": r.variation_strength, "variation_method": r.variation_method}
                        for r in self.regions],
            "latent": {"width": w * down, "height": h * down, "batch_size": batch,
                       "empty": not bool(self.latent_image.any()), "batch_index": self._batch_index},
            "mode": self.mode, "quirks": self.quirks.to_dict(), "checkpoint": checkpoint}
        return write_workflow(path, description)

    @classmethod
    def from_comfy(cls, path, model, mask_folder=None) -> "RegionalSamplerSession":
        """A session from an API-format workflow with one regional sampler node; ``model`` stands in
        for its checkpoint. Mask PNGs are read from ``mask_folder`` (default: the JSON's folder)."""
        from .io.comfy import ComfyWorkflowError, read_workflow
        from .models import empty_latent

        doc = read_workflow(path, mask_folder)
        try:
            latent = empty_latent(model, doc["latent"]["height"], doc["latent"]["width"], doc["latent"]["batch_size"])
            regions = [Region(r["mask"], SamplerConfig(**r["config"]), r["variation_seed"], r["variation_strength"],
                              r["variation_method"]) for r in doc["regions"]]
            return cls(model, latent, base=SamplerConfig(**doc["base"]), regions=regions, node=doc["node"],
                       **doc["parameters"])
        except ValueError as err:
            raise ComfyWorkflowError(f"{path}: the workflow does not fit this model: {err}") from None

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
_PART_FIELDS = ("sampler", "x", "sigmas", "i", "memory", "denoised", "sigma", "sigma_next")


def _plain_extra(extra: dict) -> dict:
    """Coherent-mode state as plain data (sampler states as dicts; noise samplers are rebuilt)."""
    parts = [None if p is None else {f: getattr(p, f) for f in _PART_FIELDS} for p in extra["parts"]]
    return {"x": extra["x"], "parts": parts, "outputs": list(extra["outputs"]),
            "first": None if extra.get("first") is None else list(extra["first"])}


def _live_extra(session, plain: dict) -> dict:
    """The inverse of `_plain_extra`: sampler states with their noise samplers rebuilt."""
    from .sampling.samplers import SamplerState

    fresh = coherent._start_parts(session._context(), plain["x"])
    parts = []
    for stored, new in zip(plain["parts"], fresh):
        if stored is None:
            parts.append(None)
        else:
            parts.append(SamplerState(**stored, noise_sampler=new.noise_sampler if new is not None else None))
    first = plain.get("first")
    return {"x": plain["x"], "parts": tuple(parts), "outputs": tuple(plain["outputs"]),
            "first": None if first is None else tuple(first)}


def _tensors_of(value):
    """Every tensor a state holds, including coherent mode's composite, outputs and sampler memory."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _tensors_of(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _tensors_of(v)
    elif hasattr(value, "__dataclass_fields__"):
        for name in value.__dataclass_fields__:
            if name != "noise_sampler":
                yield from _tensors_of(getattr(value, name))


def _nbytes(state) -> int:
    """Bytes of the tensors a state holds (a tensor shared by two fields counts once)."""
    return _history_nbytes([state])


def _history_nbytes(history) -> int:
    """Bytes held by a list of states, each tensor counted once however many states share it."""
    seen, total = set(), 0
    for state in history:
        if state is None:
            continue
        for t in _tensors_of(state):
            if id(t) not in seen:
                seen.add(id(t))
                total += t.element_size() * t.nelement()
    return total


class History:
    """A read-only view of the states a session has computed (one per sub-step)."""

    def __init__(self, session: RegionalSamplerSession):
        self._session = session

    def __len__(self):
        return len(self._session._history)

    def __getitem__(self, k) -> regional.RunState:
        if not -len(self) <= k < len(self):
            raise IndexError(f"history index {k} out of range 0..{len(self) - 1}")
        return self._session._snapshot_at(k % len(self))

    @property
    def nbytes(self) -> int:
        return _history_nbytes(self._session._history)

    @property
    def step_starts(self) -> list:
        """History index of the start of each regional step."""
        return [s for s in self._session._starts if s < len(self)]


def regional_sampler_advanced(model, latent, *, base, regions, **node_params) -> torch.Tensor:
    """The ``RegionalSamplerAdvanced`` node in one call."""
    return RegionalSamplerSession(model, latent, base=base, regions=regions, **node_params).run()


def regional_sampler(model, latent, *, base, regions, **node_params) -> torch.Tensor:
    """The ``RegionalSampler`` node in one call."""
    return RegionalSamplerSession.regional_sampler(model, latent, base=base, regions=regions, **node_params).run()
