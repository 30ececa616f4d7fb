"""Publishing computed values as traits: assign them all, then notify the observers of each changed one.

What ``hold_trait_notifications()`` does, once, for the values a session shows after each sub-step
(`stepper.Stepper.values`): they are computed values of the declared types, so they are not
validated again (traitlets validates each held value twice); unchanged values are skipped cheaply
(traitlets' own test would compare tensors elementwise); a changed value nobody observes is stored
without going through ``notify_change`` (nothing would run). Observers see every new value in place.
"""
from __future__ import annotations

import torch
from traitlets import All, HasTraits
from traitlets.utils.bunch import Bunch

__all__ = ["observed", "publish_traits"]

_PLAIN = (int, float, str, bool, tuple)
_MISSING = object()  # a trait never set: its class default is the old value
_MAGIC: dict = {}  # trait name -> the name of its old-style observer method, ``_<name>_changed``


def publish_traits(owner: HasTraits, values: dict, forwarding: tuple = ()):
    """Assign ``values`` (trait name -> value) to ``owner``, then notify each change as traitlets would.

    ``forwarding``: ``notify_change`` overrides that only forward these values to traitlets' own (the
    session's: it undoes failed parameter changes). Any other override is called for every change."""
    changes, stored = [], owner._trait_values
    for name, value in values.items():
        old = stored.get(name, _MISSING)
        if old is value:  # the same object (a state's unchanged tensor, the masks): nothing to do
            continue
        if old is _MISSING:
            old = getattr(type(owner), name).default_value
            if old is value:
                continue
        if type(old) is type(value) and isinstance(value, _PLAIN):
            if old == value:
                continue
            silent = False  # compared just now: not equal
        elif isinstance(value, torch.Tensor) and value.numel() != 1:
            silent = False  # bool() of an elementwise comparison raises: traitlets notifies
        else:
            try:
                silent = bool(old == value)
            except Exception:  # noqa: BLE001 - as traitlets: a comparison that fails means "changed"
                silent = False
        changes.append((name, old, value, silent))
    if not changes:
        return
    for change in changes:
        stored[change[0]] = change[2]
    direct = _notifies_directly(owner, forwarding)
    for name, old, value, silent in changes:
        if silent is not True and (not direct or _observed(owner, name)):
            owner.notify_change(Bunch(name=name, old=old, new=value, owner=owner, type="change"))


def observed(owner: HasTraits, names, forwarding: tuple = ()) -> bool:
    """Whether publishing new values of ``names`` (`publish_traits`) could run anything: an observer of one
    of them (or of all traits), an old-style ``_<name>_changed`` method, a ``notify_change`` that does more
    than ``forwarding``, or notifications held."""
    return not _notifies_directly(owner, forwarding) or any(_observed(owner, name) for name in names)


def _notifies_directly(owner, forwarding: tuple) -> bool:
    """True when ``notify_change`` only runs observers: not held (``hold_trait_notifications`` sets
    an instance attribute that collects changes), not overridden other than by ``forwarding``."""
    cls = type(owner)
    return ("notify_change" not in owner.__dict__ and cls._notify_observers is HasTraits._notify_observers
            and (cls.notify_change is HasTraits.notify_change or cls.notify_change in forwarding))


def _observed(owner, name: str) -> bool:
    """Whether a change of ``name`` would run anything: an observer of it or of every trait, or a
    ``_<name>_changed`` method (traitlets' old style)."""
    notifiers = owner._trait_notifiers
    if name in notifiers or All in notifiers:
        return True
    magic = _MAGIC.get(name)
    if magic is None:
        magic = _MAGIC[name] = f"_{name}_changed"
    return hasattr(owner, magic)
