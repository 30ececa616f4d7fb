"""Model specs: a model described as plain data, so another process can build the same model.

A spec is a JSON-able dict naming how to build a model, never its weights: ``ToyWorld``'s
constructor arguments, a diffusers folder's path and its dtype/device options, or for your own
model ``{"factory": "package.module:callable", "kwargs": {...}}``. `rw.sweep` ships the spec to
its workers, which build the model once each with `from_spec`.
"""
from __future__ import annotations

import importlib
import json

from ..sampling.checks import is_int

__all__ = ["from_spec", "spec_of", "spec_key", "describe_spec", "spec_difference", "build_named_model",
           "PLACEMENT_KEYS"]

# where a model runs, not which model it is: a session saved on the GPU loads onto the same folder on the CPU
PLACEMENT_KEYS = {"DiffusersModel": ("device", "offload_encoders")}
MAX_TOY_VALUES = 2**27  # exemplars x pixels x 3 a ToyWorld a file names may hold (the default: 6.1e6)


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


def _identity(spec: dict) -> dict:
    """The spec without its placement keys, as JSON would give it back (tuples as lists)."""
    drop = PLACEMENT_KEYS.get(spec.get("model"), ()) if isinstance(spec.get("model"), str) else ()
    return json.loads(json.dumps({k: v for k, v in spec.items() if k not in drop}))


def spec_difference(saved: dict, current) -> list:
    """The keys in which two specs name different models (placement keys aside); [] for the same model.
    ``current`` None (a model that cannot be described as data) differs in everything: ``["(no spec)"]``."""
    if current is None:
        return ["(no spec)"]
    saved, current = _identity(saved), _identity(current)
    return sorted(k for k in set(saved) | set(current) if k not in saved or k not in current
                  or spec_key({"v": saved[k]}) != spec_key({"v": current[k]}))


def describe_spec(spec, limit: int = 300) -> str:
    """A spec as a person reads it: ``ToyWorld(mixture_variance=0.01)`` (the arguments that are not the
    constructor's defaults), ``DiffusersModel('/models/sdxl', torch_dtype='float16')``, ``factory
    'pkg.mod:make'(...)``; None: ``a model without a spec``. At most ``limit`` characters."""
    if spec is None:
        return "a model without a spec"
    kind, args = spec.get("model"), {k: v for k, v in spec.items() if k != "model"}
    if kind == "ToyWorld":
        import inspect

        from .toyworld import ToyWorld
        from .toyworld_images import resolve_textures

        defaults = {k: p.default for k, p in inspect.signature(ToyWorld.__init__).parameters.items()
                    if p.default is not inspect.Parameter.empty}
        defaults["textures"] = resolve_textures(defaults["textures"])
        text = "ToyWorld(" + ", ".join(f"{k}={v!r}" for k, v in args.items()
                                       if k not in defaults or defaults[k] != v) + ")"
    elif kind == "DiffusersModel":
        shown = [repr(args.pop("path", None))] + [f"{k}={v!r}" for k, v in args.items() if v is not None
                                                  and k not in PLACEMENT_KEYS[kind]]
        text = f"DiffusersModel({', '.join(shown)})"
    elif "factory" in spec:
        text = f"factory {spec['factory']!r}(" + ", ".join(f"{k}={v!r}" for k, v in
                                                          dict(spec.get("kwargs") or {}).items()) + ")"
    else:
        text = spec_key(spec)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def build_named_model(spec: dict):
    """The model a file names (a saved session's ``"model"``), running no code the file names and
    reading nothing the user did not give: only a `ToyWorld` (at most `MAX_TOY_VALUES` exemplar
    values) is built. A diffusers spec names a folder: a file never chooses a folder to read, so the
    error names it for the user to pass (``--model PATH``, ``load(folder, model)``). A factory spec,
    another kind, arguments ToyWorld refuses: ValueError."""
    kind = spec.get("model")
    if "factory" in spec or kind not in ("ToyWorld", "DiffusersModel"):
        raise ValueError(f"{describe_spec(spec)} is not built from a file (ToyWorld and diffusers folders are: "
                         "a file never names code to run)")
    if kind == "ToyWorld":
        n, size = spec.get("n_exemplars", 500), spec.get("image_size", 64)
        if is_int(n) and is_int(size) and n * size * size * 3 > MAX_TOY_VALUES:
            raise ValueError(f"n_exemplars, image_size: {n} pictures of {size}x{size} are over the limit of "
                             f"{MAX_TOY_VALUES} values")
        try:
            return from_spec(spec)
        except TypeError as err:  # an argument ToyWorld does not take
            raise ValueError(str(err)) from None
    path = spec.get("path")
    raise ValueError(f"made with the diffusers folder {str(path)[:200]!r}: a file never chooses a folder to "
                     "read; give that folder yourself (--model PATH, or load(folder, model))")
