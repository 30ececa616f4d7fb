"""Gradient estimation (Permenter & Yuan 2024, arXiv 2306.04848): Euler plus a gradient correction.

The denoiser's error is treated as a gradient estimate: the step adds ``(gamma - 1) (d - d_old)``
along ``dt``, an extrapolation of the direction from the previous step's ``d``
(``memory["d_old"]``); ``gamma = 2`` by default. The first step of a call is plain Euler.
The CFG++ variant takes ``d`` from the unconditional prediction and rebuilds x from the guided one.
"""
from __future__ import annotations

from .core import StepOut, call_model_pair, register


def gradient_estimation_step(model, x, sigmas, i, memory, noise, cfg_pp, ge_gamma=2.0):
    sigma, sigma_next = sigmas[i], sigmas[i + 1]
    denoised, uncond = call_model_pair(model, x, sigma, cfg_pp)
    d = (x - uncond) / sigma
    dt = sigma_next - sigma
    if sigma_next == 0:
        x = denoised
    else:
        x = denoised + d * sigma_next if cfg_pp else x + d * dt
        if "d_old" in memory:
            x = x + ((ge_gamma - 1) * (d - memory["d_old"])) * dt
    return StepOut(x, denoised, {"d_old": d})


@register("gradient_estimation")
def gradient_estimation(model, x, sigmas, i, memory, noise):
    """Euler with the gradient-estimation correction ``(gamma - 1)(d - d_old) dt``, gamma 2."""
    return gradient_estimation_step(model, x, sigmas, i, memory, noise, cfg_pp=False)


@register("gradient_estimation_cfg_pp", uncond=True)
def gradient_estimation_cfg_pp(model, x, sigmas, i, memory, noise):
    """Gradient estimation with CFG++: ``d`` from U, ``x' = D + d sigma'`` plus the correction."""
    return gradient_estimation_step(model, x, sigmas, i, memory, noise, cfg_pp=True)
