"""Stepper: a session's run in motion (engine, program, context, current state, timeline), one sub-step at a time.

The session (`session.py`) owns the parameters and the traits; everything a step or a parameter
change may replace lives here, in one object with one undo (`saved` / `restore`): the mode's
engine, its program of sub-steps (`ops`, grouped by regional step in `starts`), the run context
built from the parameters on first use, the current state and the `timeline.Timeline` of kept
states. Moves: `start` (plan a new run), `fork` (settings changed mid-run), `advance` (one
sub-step), `move_to` (scrub to a cursor), `restore_at` (continue from a loaded state). `values`
says what the session publishes for a state (status text, progress, step index, masks).
Nothing here knows about traits: `publish.py` assigns the values.
"""
from __future__ import annotations

import bisect
from typing import Callable

import torch

from . import faithful, program
from .coherent import COHERENT_ENGINE
from .faithful import FAITHFUL_ENGINE
from .models.base import PromptCache
from .node_params import NodeParams, same_params
from .timeline import History, Timeline

__all__ = ["ENGINES", "SHOWN", "Stepper"]

ENGINES = {"faithful": FAITHFUL_ENGINE, "coherent": COHERENT_ENGINE}
SHOWN = ("step_index", "phase", "sigma", "sigma_next", "latent", "denoised", "masks", "status", "progress", "done",
         "result", "sigma_map", "times_map")  # the names `Stepper.values` gives values of, in its order


class Stepper:
    """A run's moving parts. ``node_params()`` returns the session's current parameters, frozen
    (read when a run is planned and when its context is first needed)."""

    def __init__(self, node_params: Callable[[], NodeParams], prompts: PromptCache):
        self._node_params = node_params
        self.prompts = prompts  # the model's conditioning per prompt (shared with the session's checks)
        self.grow_cache: dict = {}  # grown region masks, by mask array (painting forks often)
        self.plan_cache: dict = {}  # the faithful engine's call plans, kept across runs (`run_context`)
        self.timeline = Timeline()  # every state computed, for scrubbing
        self.engine = FAITHFUL_ENGINE  # the mode's engine (chosen again by every start)
        self.ops, self.starts, self.ctx, self.state = [], [0], None, None
        self._shown = None  # (ops, starts, `_by_cursor`'s table) of the program last shown
        self._empty: dict = {}  # id(region) -> (its mask, whether it is empty): the status reads it per sub-step
        self._built = None  # (engine, parameters, context) of the context built last

    # ---- undo ---------------------------------------------------------------------------------

    def saved(self) -> tuple:
        """Everything a move may replace (all of it immutable or copied here), for `restore`."""
        return self.engine, self.ops, self.starts, self.ctx, self.state, self.timeline.saved()

    def restore(self, saved: tuple):
        self.engine, self.ops, self.starts, self.ctx, self.state, timeline = saved
        self.timeline.restore(timeline)

    # ---- the run's derived parts ----------------------------------------------------------------

    @property
    def context(self):
        """The engine's run context for the current settings (masks, parts, schedule); built on first use."""
        if self.ctx is None:
            params = self._node_params()
            self.ctx = self.engine.context(params, self.prompts, self.grow_cache, self.plan_cache)
            self._built = (self.engine, params, self.ctx)
        return self.ctx

    def execute(self, state):
        """The state one sub-step after ``state`` (pure: the engine's executor)."""
        return self.engine.execute(self.context, self.ops, state)

    def latent_masks(self, has_regions: bool, h: int, w: int) -> list:
        """The masks shown at latent resolution (no regions: one mask of ones, new each time)."""
        if not has_regions:
            return [torch.ones(h, w)]
        ctx = self.context
        if ctx.latent_masks is None:
            ctx.latent_masks = self.engine.latent_masks(ctx, h, w)
        return ctx.latent_masks

    @property
    def num_steps(self) -> int:
        """Regional steps in this run (the final base-only call counts as one)."""
        return len(self.starts) - 1

    # ---- moves ----------------------------------------------------------------------------------

    def start(self, engine, latent_image: torch.Tensor):
        """A new run with ``engine``: plan it from the current parameters, back to cursor 0."""
        params = self._node_params()
        self.engine = engine
        self.ops = engine.plan(params)
        self.starts = program.group_starts(self.ops)
        built = self._built  # a reset with the settings of the last context built: that context again
        same = built is not None and built[0] is engine and engine.reuses_context and same_params(built[1], params)
        self.ctx = built[2] if same else None
        self.state = faithful.initial_state(latent_image)
        self.timeline.start(self.state)

    def fork(self):
        """Settings changed: keep the states up to now, forget what was computed after them."""
        self.ctx = None
        self.timeline.fork(self.state.cursor)

    def advance(self, history_limit: int, defer: bool = False):
        """One sub-step from the current state (a kept next state is reused), recorded. ``defer``: a run of
        many sub-steps, which calls `pack_deferred` at its end (`timeline.Timeline.record`)."""
        state = self.timeline.after(self.state)
        if state is None:
            state = self.execute(self.state)
        self.timeline.record(state, history_limit, self.starts, defer)
        self.state = state

    def pack_deferred(self):
        """Pack the states a run of ``advance(..., defer=True)`` left live (the last two stay live)."""
        self.timeline.pack_deferred()

    def move_to(self, target: int, history_limit: int):
        """The state after ``target`` sub-steps becomes the current one (replayed from the nearest
        kept state; states past the timeline's end are computed and recorded)."""
        timeline = self.timeline
        if target < len(timeline):
            state = timeline.snapshot_at(target, self.execute)
        else:
            state = self.state if self.state.cursor <= target else timeline.snapshot_at(len(timeline) - 1,
                                                                                         self.execute)
            state = timeline.entry(-1) if timeline.entries[-1] is not None else state
            while state.cursor < target:
                state = self.execute(state)
                timeline.record(state, history_limit, self.starts, defer=True)
            timeline.pack_deferred()
        self.state = state

    def restore_at(self, state):
        """Continue from ``state`` (a loaded state of this run): it becomes the current state."""
        if not 0 <= state.cursor <= len(self.ops):
            raise ValueError(f"cursor: {state.cursor} is outside this run's 0..{len(self.ops)}")
        self.timeline.restore_at(state)
        self.state = state

    def history(self) -> History:
        return History(self.timeline, self.execute, lambda: self.starts)

    # ---- what a state shows -----------------------------------------------------------------------

    def values(self, state, regions: list, latent_hw: tuple) -> dict:
        """The observable values of ``state``: the session's trait names and values."""
        step_index, phase, progress, done = self._by_cursor()[state.cursor]
        status = self.status(state, regions)[0]
        return dict(zip(SHOWN, (step_index, phase, state.sigma, state.sigma_next, state.latent, state.denoised,
                                self.latent_masks(bool(regions), *latent_hw), status, progress, done, state.result,
                                state.sigma_map, state.times_map)))

    def _by_cursor(self) -> list:
        """Per cursor, the values that depend on the program alone: (step index, phase, progress, done),
        made once per program."""
        ops, starts = self.ops, self.starts
        made = self._shown
        if made is None or made[0] is not ops or made[1] is not starts:
            table = []
            for cursor in range(len(ops) + 1):
                step_index = bisect.bisect_right(starts, cursor) - 1 if cursor < len(ops) else len(starts) - 1
                if cursor:
                    op = ops[cursor - 1]
                    table.append((step_index, op.phase, float(op.progress), cursor == len(ops)))
                else:
                    table.append((step_index, None, 0.0, not ops))
            made = self._shown = (ops, starts, table)
        return made[2]

    def status(self, state, regions: list) -> tuple:
        """(status text, progress) after ``state.cursor`` sub-steps."""
        if state.cursor == 0:
            note = self.engine.note(self._node_params())
            return (f"ready ({note})" if note else "ready"), 0.0
        op = self.ops[state.cursor - 1]
        text = op.status
        if op.kind == "region" and self._is_empty(regions[op.region - 1]):
            text += f" (region {op.region} is empty)"
        if len(state.passes) > 1:
            text += f" (recovery: {' + '.join(state.passes)})"
        if state.cursor == len(self.ops):
            text += " | done"
        return text, op.progress

    def _is_empty(self, region) -> bool:
        """``region.is_empty``, read once per mask (a mask is replaced, never changed, when painted)."""
        mask = region.mask
        hit = self._empty.get(id(region))
        if hit is None or hit[0] is not mask:
            if len(self._empty) > 64:
                self._empty.clear()
            hit = self._empty[id(region)] = (mask, region.is_empty)
        return hit[1]
