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

__all__ = ["publish_traits"]

_PLAIN = (int, float, str, bool, tuple)


def publish_traits(owner: HasTraits, values: dict, forwarding: tuple = ()):
    """Assign ``values`` (trait name -> value) to ``owner``, then notify each change as traitlets would.

    ``forwarding``: ``notify_change`` overrides that only forward these values to traitlets' own (the
    session's: it undoes failed parameter changes). Any other override is called for every change."""
    changes, stored = [], owner._trait_values
    cls = type(owner)
    for name, value in values.items():
        old = stored[name] if name in stored else getattr(cls, name).default_value
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
    if not changes:
        return
    direct = _notifies_directly(owner, forwarding)
    for name, old, value, silent in changes:
        if silent is not True and (not direct or _observed(owner, name)):
            owner.notify_change(Bunch(name=name, old=old, new=value, owner=owner, type="change"))


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
    return name in notifiers or All in notifiers or hasattr(owner, f"_{name}_changed")
