"""Denoisers behind one small protocol (`Model`): the built-in `ToyWorld` or your own."""
from .base import Model, cfg_denoiser, empty_latent
from .toyworld import ToyWorld

__all__ = ["Model", "ToyWorld", "cfg_denoiser", "empty_latent"]
