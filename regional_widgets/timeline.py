"""Timeline: the states a run has computed, one per sub-step: record, evict, snapshot, restore.

A session keeps every state it computed so scrubbing back (`goto`, `history[k]`) is exact. The last
two states stay live; older ones are packed into arena slots (`arena.py`: fixed-size blocks reused,
so resident memory stays near the budget). Over the budget, sub-step states are evicted first, then
step boundaries; an evicted state is recomputed on demand from the nearest kept one, with the pure
executor the session passes in. Nothing here knows about traits or parameters.
"""
from __future__ import annotations

import copy
import copyreg
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
        self._recent: list = []  # `_Parts` of the last three states recorded (the next to pack among them)
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


class _Parts:
    """One walk of a state: its fields that may hold tensors, in order (name, value, whether the value is
    itself a tensor), or None for a state that is not a dataclass instance; every tensor it holds; and
    its arena copy (`Packed`) once made."""

    __slots__ = ("state", "fields", "leaves", "packed", "memo")

    def __init__(self, state, fields, leaves):
        self.state, self.fields, self.leaves, self.packed, self.memo = state, fields, leaves, None, None


def _parts_of(state) -> _Parts:
    names = _fields(state)
    if not names:
        return _Parts(state, None, _leaves_of(state))
    fields, leaves = [], []
    for name in names:
        value = getattr(state, name)
        kind = type(value)
        if kind in _ATOMS:  # most fields (a state's None, ints, floats)
            continue
        if kind is torch.Tensor or isinstance(value, (torch.Tensor, Slot)):
            fields.append((name, value, True))
            leaves.append(value)
        elif kind is tuple and all(type(v) in _ATOMS for v in value):  # a state's `passes`: no tensor in it
            continue
        else:
            fields.append((name, value, False))
            _collect(value, leaves)
    return _Parts(state, fields, leaves)


def _twin(value, changed: dict):
    """A copy of the dataclass instance ``value`` (as `copy.copy`) with the fields ``changed`` replaced."""
    cls = type(value)
    plain = _PLAIN.get(cls)
    if plain is None:
        plain = _PLAIN[cls] = _copies_plainly(cls)
    if plain:  # what copy.copy does for such a class, without its generic steps
        twin = object.__new__(cls)
        twin.__dict__.update(value.__dict__)
        twin.__dict__.update(changed)
        return twin
    twin = copy.copy(value)
    for name, new in changed.items():
        object.__setattr__(twin, name, new)
    return twin


def _copies_plainly(cls) -> bool:
    """Whether `copy.copy` of a ``cls`` instance is a new instance with the same ``__dict__`` (no slots, no
    copy, reduce, state or construction hooks), its fields plain ``__dict__`` entries."""
    same = all(getattr(cls, hook, None) is getattr(object, hook, None) for hook in
               ("__reduce_ex__", "__reduce__", "__getstate__", "__setstate__", "__copy__", "__new__"))
    slots = any("__slots__" in vars(c) for c in cls.__mro__[:-1]) or cls in copyreg.dispatch_table
    return same and not slots and not any(hasattr(type(getattr(cls, n, None)), "__set__") for n in _FIELDS[cls])


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
    if cls is tuple:  # immutable: itself when nothing in it changes
        items = tuple([_map_tensors(v, fn) for v in value])
        for new, old in zip(items, value):
            if new is not old:
                return items
        return value
    if cls is list:
        return [_map_tensors(v, fn) for v in value]
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
        return _twin(value, changed) if changed else value
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
_PLAIN: dict = {}  # dataclass -> whether copy.copy of an instance is a plain copy of its __dict__


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
