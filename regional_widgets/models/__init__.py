"""Denoisers behind one small protocol (`Model`): the built-in `ToyWorld`, `DiffusersModel` or your own.

`DiffusersModel` (the optional ``diffusers`` extra) is imported on first access, so importing
regional_widgets never imports diffusers or transformers.
"""
from .base import Model, cfg_denoiser, empty_latent
from .spec import from_spec
from .toyworld import ToyWorld

__all__ = ["Model", "ToyWorld", "cfg_denoiser", "empty_latent", "from_spec"]
_LAZY = {"DiffusersModel": ".diffusers"}


def __getattr__(name):
    if name in _LAZY:
        from importlib import import_module

        value = getattr(import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
