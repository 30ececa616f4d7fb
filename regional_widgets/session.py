"""RegionalSamplerSession: the reference regional sampler, observable and steppable.

The session owns every parameter (traits) and is the one thing widgets observe. Here: the traits,
construction, the moves (reset, substep, step, run, goto, restore_at) and what can be read. Every
move and parameter change is atomic: it computes first and assigns all traits before notifying; a
failure (an observer's too) leaves the session as it was. Where the rest lives (one hop each):
  - trait types that refuse bad values: `params.py`; checks that need other values (latent, masks,
    prompts, step range): `session_checks.py`, its rules in `node_checks.py`; `Region`: `regions.py`
  - what a change does (re-plan or fork) and the undo behind atomicity: `session_changes.py`
  - the run in motion (engine, program, context, current state, status text): `stepper.py`
  - the kept states (record, evict, snapshot, restore): `timeline.py` (arena slots: `arena.py`)
  - publishing a state's values as traits: `publish.py`
  - files (save, load, ComfyUI): `persistence.py` (`SessionFiles`, a base class)
  - the nodes as one-call functions (`regional_sampler`, ...): `node_functions.py`
"""
from __future__ import annotations

import asyncio
from typing import Optional

from traitlets import Any, Bool, Float, Int, Unicode

from . import faithful, node_checks
from .models.base import PromptCache, display_latent
from .node_functions import regional_sampler, regional_sampler_advanced
from .node_params import FAITHFUL, NodeParams, Quirks, RegionParams, SamplerConfig
from .params import (MAX_STEPS, Choice, Flag, InstanceOf, ListOf, ParameterError, Seed, StrictFloat, StrictInt,
                     Value, check_choice, check_index_list, check_int)
from .persistence import SessionFiles
from .publish import observed, publish_traits
from .regions import Region
from .sampling import masks as mask_ops
from .sampling import recovery
from .sampling.noise import SEED_2ND_MODES
from .session_changes import FORKING, STRUCTURAL, SessionChanges
from .session_checks import SessionChecks
from .stepper import ENGINES, SHOWN, Stepper
from .timeline import History, Timeline

NODES = ("RegionalSamplerAdvanced", "RegionalSampler")
MODES = ("faithful", "coherent")
__all__ = ["ParameterError", "Region", "RegionalSamplerSession", "regional_sampler", "regional_sampler_advanced"]
_STRUCTURAL, _FORKING = STRUCTURAL, FORKING  # the names this module had


class RegionalSamplerSession(SessionFiles, SessionChanges, SessionChecks):
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

    # observable state, notified once per sub-step (`stepper.Stepper.values`)
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
        allowed = set(STRUCTURAL + FORKING) - {"base", "latent_image"}
        unknown = set(params) - allowed
        if unknown:
            raise ParameterError(f"{sorted(unknown)[0]}: unknown parameter; accepted: {', '.join(sorted(allowed))}")
        if regions is None:
            raise ParameterError("regions: expected a list of Region, got None")
        self._model = model
        self._ready = False
        self._batch_index = None
        self._prompts = PromptCache()  # the model's conditioning per prompt
        self._run = Stepper(self.node_params, self._prompts)
        samples, batch_index = node_checks.unpack_latent(latent)
        super().__init__(base=base if base is not None else SamplerConfig(), regions=list(regions),
                         latent_image=samples, **params)
        self._batch_index = None if batch_index is None else check_index_list(
            batch_index, "batch_index", self.latent_image.shape[0])
        self.set_trait("node", node)
        self._check_run()
        self._ready = True
        self.reset()

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
        return self._run.context

    def _publish(self, state):
        values = self._run.values(state, self.regions, self.latent_image.shape[-2:])
        publish_traits(self, values, forwarding=(RegionalSamplerSession.notify_change,))

    # ---- moves ----------------------------------------------------------------------------------------

    def reset(self):
        """Back to the start of the run (with the current parameters); atomic like a step."""
        def restart():
            self._check_run()
            self._run.start(ENGINES[self.mode], self.latent_image)
            self._publish(self._run.state)
        self._atomic(restart)

    def substep(self):
        """One sampler call or composite; returns the new phase. Atomic: if the call or an observer
        raises (an interrupt too), the session has not advanced."""
        if self.done:
            raise RuntimeError("the run is done: reset() or goto(k) to step again")

        def advance():
            self._run.advance(self.history_limit)
            self._publish(self._run.state)
            return self.phase
        return self._atomic(advance)

    def step(self):
        """One regional step: the base call, then each region call and composite."""
        if self.done:
            raise RuntimeError("the run is done: reset() or goto(k) to step again")

        def advance():
            target = self._run.starts[self.step_index + 1]
            while self._run.state.cursor < target:
                self.substep()
            return self.step_index
        return self._atomic(advance)

    def run(self, progress: bool = False):
        """Run to the end and return the node's output latent (also ``self.result``). Atomic as a whole: if
        a call or an observer raises (an interrupt too), the session is as it was before the run.

        Each sub-step's values are published as it ends when anything observes them as the run starts (a
        widget does); with no observer, nothing can see them before the run ends: they are published once then."""
        def advance():
            run, bar = self._run, None
            watched = observed(self, SHOWN, forwarding=(RegionalSamplerSession.notify_change,))
            if progress:
                from tqdm.auto import tqdm
                bar = tqdm(total=len(run.ops), initial=run.state.cursor, desc=self.node)
            try:
                while run.state.cursor < len(run.ops):
                    run.advance(self.history_limit, defer=True)
                    if watched:
                        self._publish(run.state)
                    if bar is not None:
                        bar.update(1)
                run.pack_deferred()
            finally:
                if bar is not None:
                    bar.close()
            self._publish(run.state)
            return self.result
        if self.done:
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
        target = self._run.starts[k]

        def move():
            self._run.move_to(target, self.history_limit)
            self._publish(self._run.state)
        self._atomic(move)

    def restore_at(self, state):
        """Continue from ``state``, a state of this run after ``state.cursor`` sub-steps (a loaded one):
        it becomes the current state; the states before it are recomputed on demand when scrubbed to."""
        if not 0 <= state.cursor <= len(self._run.ops):
            raise ValueError(f"cursor: {state.cursor} is outside this run's 0..{len(self._run.ops)}")

        def move():
            self._run.restore_at(state)
            self._publish(state)
        self._atomic(move)

    # ---- reading --------------------------------------------------------------------------------------

    @property
    def ops(self) -> list:
        """The node's program: every sub-step this run makes, in order."""
        return list(self._run.ops)

    @property
    def cursor(self) -> int:
        """Sub-steps done in this run (an index into `ops`; 0 = the start)."""
        return self._run.state.cursor

    @property
    def num_steps(self) -> int:
        """Regional steps in this run (the final base-only call counts as one)."""
        return self._run.num_steps

    @property
    def timeline(self) -> Timeline:
        """The run's kept states (`timeline.Timeline`: ``entries[k]`` is the state after k sub-steps,
        `timeline.Packed` in the arena, or None where evicted). For inspection only: the session changes it."""
        return self._run.timeline

    @property
    def history(self) -> History:
        return self._run.history()

    @property
    def state(self) -> faithful.RunState:
        """The current state (immutable): what the traits publish, and what `save` writes."""
        return self._run.state

    @property
    def engine(self):
        """The mode's engine (`faithful.FaithfulEngine` or `coherent.CoherentEngine`)."""
        return self._run.engine

    @property
    def batch_index(self) -> Optional[list]:
        """The latent's batch_index (None: 0..B-1)."""
        return self._batch_index

    def picture(self, which: str = "latent"):
        """What ``latent`` (or ``result``) really shows, ready to decode (`rw.plot.picture`, the Inspector,
        ``save_png`` and sweep thumbnails show this). On a flow model the reference's leftover-noise
        latents are ``x / (1 - sigma)``; they are shown as ``(1 - sigma) * latent`` at the sigma each pixel
        is held at (`models.base.display_latent`). EPS/V models: the latent itself. Traits unchanged."""
        if which not in ("latent", "result"):
            raise ValueError(f"which: expected 'latent' or 'result', got {which!r}")
        if which == "latent":
            return display_latent(self.model, self.latent, self.sigma_map)
        if self.result is None:
            return None
        state = self.state  # the result is the composite (restore_latent) or the final call's output
        held = state.base_sigma_map if state.result is state.base_latent else state.sigma_map
        return display_latent(self.model, self.result, held)

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
