"""Timeline: the states a run has computed, one per sub-step: record, evict, snapshot, restore.

A session keeps every state it computed so scrubbing back (`goto`, `history[k]`) is exact. The last
two states stay live; older ones are packed into arena slots (`arena.py`: fixed-size blocks reused,
so resident memory stays near the budget). Over the budget, sub-step states are evicted first, then
step boundaries; an evicted state is recomputed on demand from the nearest kept one, with the pure
executor the session passes in. Nothing here knows about traits or parameters.
"""
from __future__ import annotations

import copy
import weakref
from typing import Callable, Optional

import torch

from .arena import Arena, Slot

__all__ = ["History", "Packed", "Timeline"]


class Packed:
    """A history entry whose tensors live in arena slots (`Slot`); `Timeline.entry` copies them out."""

    __slots__ = ("tree",)

    def __init__(self, tree):
        self.tree = tree


class Timeline:
    """The states of one run by cursor (``entries[k]``: the state after k sub-steps, or None where
    evicted). States before ``sealed`` were computed with earlier settings and are never evicted
    past it; the start, the seal and the last state are always kept."""

    def __init__(self):
        self.arena = Arena()
        self._pack_memo: dict = {}
        self._last_ids: tuple = (None, set())  # (the entry recorded last, ids of its tensors)
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
        self._last_ids = (None, set())

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
        self._last_ids = (None, set())

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

    def record(self, state, limit: int, starts: list):
        """Append ``state`` (dropping the entries from its cursor on), then pack and evict to ``limit`` bytes."""
        if len(self.entries) > state.cursor:
            del self.entries[state.cursor:]
            self.nbytes = history_nbytes(self.entries)
        previous = self.entries[-1]
        leaves = _leaves_of(state)
        shared = self._leaf_ids(previous)
        fresh = {id(t): t for t in leaves if id(t) not in shared}
        self.nbytes += sum(_leaf_nbytes(t) for t in fresh.values())
        self.entries.append(state)
        self._last_ids = (state, {id(t) for t in leaves})  # the next record's `shared`, without a second walk
        # the last two states stay as they are; older ones move into the arena (see arena.py)
        k = len(self.entries) - 3
        if k >= 0 and self.entries[k] is not None and not isinstance(self.entries[k], Packed):
            self.entries[k] = self._pack(self.entries[k])
        if self.nbytes > limit:
            self._evict(limit, starts)
            self.nbytes = history_nbytes(self.entries)

    def _leaf_ids(self, entry) -> set:
        """ids of the tensors ``entry`` holds (remembered for the entry recorded last: it is alive, so
        its tensors' ids are still theirs)."""
        if entry is None:
            return set()
        last, ids = self._last_ids
        return ids if last is entry else {id(t) for t in _leaves_of(entry)}

    def _pack(self, state) -> Packed:
        """The state with its tensors copied into arena slots (tensors it shares with the state
        packed before it share their slots too)."""
        previous, memo = self._pack_memo, {}

        def store(t):
            if id(t) not in memo:
                hit = previous.get(id(t))
                slot = hit[1] if hit is not None and hit[0]() is t else self.arena.store(t)
                memo[id(t)] = (weakref.ref(t), t if slot is None else slot)
            return memo[id(t)][1]
        packed = Packed(_map_tensors(state, store))
        self._pack_memo = memo
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


def _unpack(packed: Packed):
    copies = {}

    def load(leaf):
        if isinstance(leaf, Slot):
            if id(leaf) not in copies:
                copies[id(leaf)] = leaf.read()
            return copies[id(leaf)]
        return leaf
    return _map_tensors(packed.tree, load)


def _map_tensors(value, fn):
    """``value`` with every tensor (or arena `Slot`) replaced by ``fn(it)``: through dicts, lists,
    tuples and dataclasses (copied, never changed; a sampler's noise_sampler is left as it is)."""
    if isinstance(value, (torch.Tensor, Slot)):
        return fn(value)
    cls = type(value)
    if cls in _ATOMS:
        return value
    if isinstance(value, dict):
        return {k: _map_tensors(v, fn) for k, v in value.items()}
    if cls is list or cls is tuple:
        return cls(_map_tensors(v, fn) for v in value)
    names = _fields(value)
    if names:
        changed = {}
        for name in names:
            old = getattr(value, name)
            if type(old) in _ATOMS:  # most fields (a state's None, ints, floats): no call
                continue
            new = _map_tensors(old, fn)
            if new is not old:
                changed[name] = new
        if not changed:
            return value
        twin = copy.copy(value)
        for name, new in changed.items():
            object.__setattr__(twin, name, new)
        return twin
    return value


def _leaves_of(value) -> list:
    """Every tensor (or arena slot) an entry holds, including coherent mode's composite, outputs and
    sampler memory."""
    out: list = []
    _collect(value.tree if isinstance(value, Packed) else value, out)
    return out


def _collect(value, out: list):
    if isinstance(value, (torch.Tensor, Slot)):
        out.append(value)
    elif type(value) in _ATOMS:
        return
    elif isinstance(value, dict):
        for v in value.values():
            _collect(v, out)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _collect(v, out)
    else:
        for name in _fields(value):
            field = getattr(value, name)
            if type(field) not in _ATOMS:  # most fields (a state's None, ints, floats): no call
                _collect(field, out)


_ATOMS = frozenset({type(None), bool, int, float, str})  # hold no tensor: skipped at once
_FIELDS: dict = {}  # dataclass -> its field names but noise_sampler (read per state: cached)


def _fields(value) -> tuple:
    """The field names a dataclass instance's tensors are looked for in (empty: not a dataclass instance)."""
    cls = type(value)
    names = _FIELDS.get(cls)
    if names is None:
        fields = getattr(cls, "__dataclass_fields__", None)
        names = () if fields is None or isinstance(value, type) else tuple(n for n in fields if n != "noise_sampler")
        _FIELDS[cls] = names
    return names


def _leaf_nbytes(leaf) -> int:
    return leaf.nbytes if isinstance(leaf, Slot) else leaf.element_size() * leaf.nelement()


def nbytes(state: Optional[object]) -> int:
    """Bytes of the tensors a state holds (a tensor shared by two fields counts once)."""
    return history_nbytes([state])


def history_nbytes(history) -> int:
    """Bytes held by a list of states, each tensor (or slot) counted once however many states share it."""
    seen, total = set(), 0
    for state in history:
        if state is None:
            continue
        for t in _leaves_of(state):
            if id(t) not in seen:
                seen.add(id(t))
                total += _leaf_nbytes(t)
    return total
