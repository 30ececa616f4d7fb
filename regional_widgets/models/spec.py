"""Model specs: a model described as plain data, so another process can build the same model.

A spec is a JSON-able dict naming how to build a model, never its weights: ``ToyWorld``'s
constructor arguments, a diffusers folder's path and its dtype/device options, or for your own
model ``{"factory": "package.module:callable", "kwargs": {...}}``. `rw.sweep` ships the spec to
its workers, which build the model once each with `from_spec`.
"""
from __future__ import annotations

import importlib
import json

__all__ = ["from_spec", "spec_of", "spec_key"]


def spec_of(model):
    """``model.spec`` (a dict), or None when the model cannot be described as data."""
    spec = getattr(model, "spec", None)
    if spec is None:
        return None
    if not isinstance(spec, dict):
        raise ValueError(f"spec: expected a dict from {type(model).__name__}.spec, got {type(spec).__name__}")
    try:
        json.dumps(spec)
    except (TypeError, ValueError) as err:
        raise ValueError(f"spec: {type(model).__name__}.spec must be plain JSON data ({err})") from None
    return spec


def spec_key(spec: dict) -> str:
    """One string per spec (sorted JSON): equal specs build equal models."""
    return json.dumps(spec, sort_keys=True, separators=(",", ":"))


def from_spec(spec: dict):
    """Build the model a spec describes (``model.spec`` of a `ToyWorld`, a `DiffusersModel` read
    with ``from_pretrained``, or a ``factory`` spec)."""
    if not isinstance(spec, dict):
        raise ValueError(f"spec: expected a dict, got {type(spec).__name__}")
    spec = dict(spec)
    if "factory" in spec:
        module, _, name = str(spec["factory"]).partition(":")
        if not module or not name:
            raise ValueError(f"spec: factory: expected 'package.module:callable', got {spec['factory']!r}")
        factory = importlib.import_module(module)
        for part in name.split("."):
            factory = getattr(factory, part)
        return factory(**spec.get("kwargs", {}))
    kind = spec.pop("model", None)
    if kind == "ToyWorld":
        from .toyworld import ToyWorld

        return ToyWorld(**spec)
    if kind == "DiffusersModel":
        import torch

        from .diffusers import DiffusersModel

        dtype = spec.pop("torch_dtype", None)
        return DiffusersModel.from_pretrained(spec.pop("path"), torch_dtype=None if dtype is None else getattr(torch, dtype),
                                              **spec)  # device, timestep_map and the loading options
    raise ValueError(f"spec: unknown model {kind!r}; expected 'ToyWorld', 'DiffusersModel' or a 'factory' spec")
