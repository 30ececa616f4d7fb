"""A history state's tensors as a tree: walk them, count their bytes, copy them in and out of arena slots.

A state (`faithful.RunState`, coherent mode's state, or any dataclass, dict, list or tuple of them)
holds tensors in its fields; `timeline.Timeline` keeps states and moves the tensors of old ones into
arena slots (`arena.Slot`). Here is the walking it needs: the tensors a state holds
(`_leaves_of`, `_parts_of`), a copy of a state with some tensors replaced (`_map_tensors`, `_twin`),
a packed state copied back out (`_unpack`), and the bytes held (each tensor counted once). Pure
Python over torch tensors: nothing here knows about sessions or traits.
"""
from __future__ import annotations

import copy
import copyreg
from typing import Optional

import torch

from .arena import Slot


class Packed:
    """A history entry whose tensors live in arena slots (`Slot`); `Timeline.entry` copies them out."""

    __slots__ = ("tree",)

    def __init__(self, tree):
        self.tree = tree



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
