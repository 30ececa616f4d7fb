"""First-order and Heun-family samplers (Karras et al. 2022, k-diffusion's formulation)."""
from __future__ import annotations

from .core import StepOut, call_model, register, to_d


@register("euler")
def euler(model, x, sigmas, i, memory, noise):
    """Euler's method on the probability-flow ODE."""
    sigma, sigma_next = sigmas[i], sigmas[i + 1]
    denoised = call_model(model, x, sigma)
    d = to_d(x, sigma, denoised)
    return StepOut(x + d * (sigma_next - sigma), denoised, memory)
