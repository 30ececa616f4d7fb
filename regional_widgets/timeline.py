"""Timeline: the states a run has computed, one per sub-step: record, evict, snapshot, restore.

A session keeps every state it computed so scrubbing back (`goto`, `history[k]`) is exact. The last
two states stay live; older ones are packed into arena slots (`arena.py`: fixed-size blocks reused,
so resident memory stays near the budget). Over the budget, sub-step states are evicted first, then
step boundaries; an evicted state is recomputed on demand from the nearest kept one, with the pure
executor the session passes in. Nothing here knows about traits or parameters.
"""
from __future__ import annotations

import weakref
from typing import Callable

import torch

from .arena import Arena
from .state_tree import (Packed, _map_tensors, _Parts, _parts_of, _leaf_nbytes, _leaves_of, _twin, _unpack,
                         history_nbytes, nbytes)

__all__ = ["History", "Packed", "Timeline"]

DEFER_BYTES = 4 * 2**20  # live states a deferred run holds before packing them (`Timeline.record`)


class Timeline:
    """The states of one run by cursor (``entries[k]``: the state after k sub-steps, or None where
    evicted). States before ``sealed`` were computed with earlier settings and are never evicted
    past it; the start, the seal and the last state are always kept."""

    def __init__(self):
        self.arena = Arena()
        self._pack_memo: dict = {}
        self._last_ids: tuple = (None, set())  # (the entry recorded last, ids of its tensors)
        self._recent: list = []  # `_Parts` of the last three states recorded (the next to pack among them)
        self._deferred_from = None  # lowest index a live state older than the last two may be at (`record(defer=True)`)
        self._deferred: dict = {}  # id(state) -> its `_Parts`, for the states recorded with defer=True
        self._deferred_bytes = 0  # bytes those states added
        self.entries: list = []
        self.nbytes = 0
        self.sealed = 0

    def __len__(self):
        return len(self.entries)

    # ---- whole-timeline changes ----------------------------------------------------------------

    def start(self, state):
        """A new run: ``state`` (cursor 0) is the only entry."""
        self.entries = [state]
        self.nbytes = history_nbytes(self.entries)
        self.sealed = 0
        self._last_ids, self._recent = (None, set()), []
        self._deferred_from, self._deferred, self._deferred_bytes = None, {}, 0

    def fork(self, cursor: int):
        """Settings changed at ``cursor``: keep the states up to it, forget those computed after it."""
        del self.entries[cursor + 1:]
        self.nbytes = history_nbytes(self.entries)
        self.sealed = cursor

    def restore_at(self, state):
        """Continue from ``state`` (a loaded state after ``state.cursor`` sub-steps): the states before it
        are recomputed on demand (with the loaded settings) when scrubbed to."""
        cursor = state.cursor
        if cursor:
            self.entries = [self.entries[0]] + [None] * (cursor - 1) + [state]
            self.nbytes = history_nbytes(self.entries)
            self.sealed = cursor

    def saved(self) -> tuple:
        """What `restore` needs to undo any change made after this call (entries are immutable)."""
        return list(self.entries), self.nbytes, self.sealed

    def restore(self, saved: tuple):
        entries, self.nbytes, self.sealed = saved
        self.entries = list(entries)
        self._last_ids = (None, set())  # (`_recent` stays: it finds its states by identity)
        # undoing a part of a deferred run may bring back live states older than the last two
        live = (k for k, e in enumerate(self.entries[:-2]) if e is not None and type(e) is not Packed)
        self._deferred_from, self._deferred, self._deferred_bytes = next(live, None), {}, 0

    # ---- reading -------------------------------------------------------------------------------

    def entry(self, k: int):
        """Entry ``k`` as a live state (None where evicted); packed entries are copied out."""
        entry = self.entries[k]
        return _unpack(entry) if isinstance(entry, Packed) else entry

    def after(self, state):
        """The kept state one sub-step after ``state``, or None (not computed, or evicted)."""
        k = state.cursor + 1
        return self.entry(k) if k < len(self.entries) and self.entries[k] is not None else None

    def snapshot_at(self, cursor: int, execute: Callable):
        """The state after ``cursor`` sub-steps, replayed with ``execute`` from the nearest kept state."""
        k = cursor
        while self.entries[k] is None:
            k -= 1
        state = self.entry(k)
        while state.cursor < cursor:
            state = execute(state)
        return state

    # ---- recording -----------------------------------------------------------------------------

    def record(self, state, limit: int, starts: list, defer: bool = False):
        """Append ``state`` (dropping the entries from its cursor on), then pack and evict to ``limit`` bytes.

        ``defer``: the states older than the last two stay live for now, to be packed in one pass by
        `pack_deferred` (a run calls it at its end; it runs by itself once `DEFER_BYTES` wait, or over
        ``limit``): packing many states at once, its code stays in cache, so a run records faster."""
        entries = self.entries
        if len(entries) > state.cursor:
            del entries[state.cursor:]
            self.nbytes = history_nbytes(entries)
        shared = self._leaf_ids(entries[-1])
        parts = _parts_of(state)
        ids, added = set(), 0
        for t in parts.leaves:
            i = id(t)
            if i not in ids:
                ids.add(i)
                if i not in shared:
                    added += t.nbytes if type(t) is torch.Tensor else _leaf_nbytes(t)
        self.nbytes += added
        entries.append(state)
        self._last_ids = (state, ids)  # the next record's `shared`, without a second walk
        if defer:
            self._record_deferred(parts, added, limit, starts)
            return
        if self.nbytes <= limit:  # the last two states stay live (below), but are copied into the arena
            # now, while their tensors are fresh in cache, in the entries' order (see `_pack`)
            for old in entries[-3:-1]:
                if old is not None and type(old) is not Packed:
                    walked = self._walked(old)
                    if walked.packed is None:
                        walked.packed = self._pack(walked)
            parts.packed = self._pack(parts)
        self._recent.append(parts)
        del self._recent[:-3]
        # the last two states stay as they are; older ones move into the arena (see arena.py)
        k = len(entries) - 3
        if k >= 0:
            old = entries[k]
            if old is not None and type(old) is not Packed:
                walked = self._walked(old)
                entries[k] = walked.packed or self._pack(walked)
        if self.nbytes > limit:
            self._evict(limit, starts)
            self.nbytes = history_nbytes(entries)

    def _record_deferred(self, parts: "_Parts", added: int, limit: int, starts: list):
        if self._deferred_from is None:
            self._deferred_from = max(0, len(self.entries) - 3)  # the state that just left the last two
        self._deferred[id(parts.state)] = parts
        self._deferred_bytes += added
        if self._deferred_bytes > DEFER_BYTES or self.nbytes > limit:
            self.pack_deferred()
        if self.nbytes > limit:
            self._evict(limit, starts)
            self.nbytes = history_nbytes(self.entries)

    def pack_deferred(self):
        """Pack the live states older than the last two that `record(defer=True)` left, in cursor order
        (so a tensor a state shares with the one before it shares its slot), as `record` packs them."""
        start, entries, walked = self._deferred_from, self.entries, self._deferred
        if start is None:
            return
        for k in range(min(start, len(entries)), len(entries) - 2):
            entry = entries[k]
            if entry is None or type(entry) is Packed:
                continue
            parts = walked.get(id(entry))
            if parts is None or parts.state is not entry:  # recorded before: its walk (and copy) may be at hand
                parts = next((p for p in self._recent if p.state is entry), None) or _parts_of(entry)
            entries[k] = parts.packed or self._pack(parts)
        last = {id(e): walked[id(e)] for e in entries[-2:] if id(e) in walked and walked[id(e)].state is e}
        self._deferred_from, self._deferred, self._deferred_bytes = None, last, 0

    def _walked(self, state) -> "_Parts":
        """``state`` walked (`_parts_of`): remembered from its record for the last three states."""
        for parts in self._recent:
            if parts.state is state:
                return parts
        parts = _parts_of(state)
        self._recent.append(parts)
        return parts

    def _leaf_ids(self, entry) -> set:
        """ids of the tensors ``entry`` holds (remembered for the entry recorded last: it is alive, so
        its tensors' ids are still theirs)."""
        if entry is None:
            return set()
        last, ids = self._last_ids
        return ids if last is entry else {id(t) for t in _leaves_of(entry)}

    def _pack(self, parts: "_Parts") -> Packed:
        """The state (walked: ``parts``) with its tensors copied into arena slots (tensors it shares
        with the state packed before it share their slots too)."""
        state, memo, arena_store, previous = parts.state, {}, self.arena.store, self._pack_memo
        k = getattr(state, "cursor", 0) - 1
        if 0 <= k < len(self.entries):  # share with the entry before it when its copy is at hand
            before = self.entries[k]
            for walked in self._recent:
                if walked.state is before and walked.memo is not None:
                    previous = walked.memo

        def store(t):
            i = id(t)
            hit = memo.get(i)
            if hit is None:
                hit = previous.get(i)
                if hit is None or hit[0]() is not t:
                    slot = arena_store(t)
                    hit = (weakref.ref(t), t if slot is None else slot)
                memo[i] = hit
            return hit[1]
        if parts.fields is None:  # not a dataclass instance: walked as a tree
            packed = Packed(_map_tensors(state, store))
        else:
            changed = {}
            for name, value, leaf in parts.fields:  # in field order: the arena's slots are taken in it
                new = store(value) if leaf else _map_tensors(value, store)
                if new is not value:
                    changed[name] = new
            packed = Packed(_twin(state, changed) if changed else state)
        self._pack_memo = parts.memo = memo
        return packed

    def _evict(self, budget: int, starts: list):
        sizes = [nbytes(s) if s is not None else 0 for s in self.entries]
        total = sum(sizes)
        # sub-step snapshots first, then step boundaries; never the start, the seal or the last state
        keep = {0, self.sealed, len(self.entries) - 1}
        boundaries = set(starts)
        for pass_boundaries in (False, True):
            for k in range(self.sealed + 1, len(self.entries) - 1):
                if total <= budget:
                    return
                if k in keep or self.entries[k] is None or ((k in boundaries) != pass_boundaries):
                    continue
                self.entries[k] = None
                total -= sizes[k]


class History:
    """A read-only view of the states a session has computed (one per sub-step)."""

    def __init__(self, timeline: Timeline, execute: Callable, starts: Callable[[], list]):
        self._timeline, self._execute, self._starts = timeline, execute, starts

    def __len__(self):
        return len(self._timeline)

    def __getitem__(self, k):
        if not -len(self) <= k < len(self):
            raise IndexError(f"history index {k} out of range 0..{len(self) - 1}")
        return self._timeline.snapshot_at(k % len(self), self._execute)

    @property
    def nbytes(self) -> int:
        return history_nbytes(self._timeline.entries)

    @property
    def step_starts(self) -> list:
        """History index of the start of each regional step."""
        return [s for s in self._starts() if s < len(self)]
