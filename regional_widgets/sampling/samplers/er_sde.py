"""ER-SDE-Solver-3 (Cui et al. 2023, arXiv 2309.06169), VP form: extended-reverse-time SDE, data prediction.

Time is ``L = exp(-lam) = sigma`` (computed through ``lam`` as the reference does, so equal to sigma
up to an ulp); the noise scaler is ``f(v) = v (exp(v^0.3) + 10)``. Stage 1 is the first-order
exponential step; stages 2 and 3 add the first and second divided differences of past predictions
with weights integrated numerically over 200 points (``memory``: ``old_denoised``,
``old_denoised_d``). One seeded draw per step; the step to sigma 0 gives x = D. Float order: spec §3.5.2.
"""
from __future__ import annotations

import torch

from .core import StepOut, call_model, register
from .sde import half_log_snr

_POINTS = 200


def _noise_scaler(v):
    return v * ((v ** 0.3).exp() + 10.0)


def er_sde_setup(x, sigmas, model_sampling):
    """``L = exp(-lam(s))`` over the list: ``s`` on EPS, ``s / (1 - s)`` with the flow lambda (CONST)."""
    lam = half_log_snr({"const": getattr(model_sampling, "is_const", False)})[0]
    return {"L": lam(sigmas).neg().exp(), "k": torch.arange(0, _POINTS, dtype=torch.float32, device=x.device)}


@register("er_sde", setup=er_sde_setup, noise="default", const_offset=True)
def er_sde(model, x, sigmas, i, memory, noise, s_noise=1.0, max_stage=3):
    """ER-SDE-Solver-3: up to three stages (``min(3, i + 1)``) plus ER-SDE noise."""
    sigma, sigma_next = sigmas[i], sigmas[i + 1]
    denoised = call_model(model, x, sigma)
    L, k = memory["L"], memory["k"]
    old, old_d = memory.get("old_denoised"), memory.get("old_denoised_d")
    if sigma_next == 0:
        return StepOut(denoised, denoised, {**memory, "old_denoised": denoised})
    stage = min(max_stage, i + 1)
    L_s, L_t = L[i], L[i + 1]
    alpha_s, alpha_t = sigma / L_s, sigma_next / L_t
    r_alpha = alpha_t / alpha_s
    f_t = _noise_scaler(L_t)
    r = f_t / _noise_scaler(L_s)
    x = (r_alpha * r) * x + (alpha_t * (1 - r)) * denoised
    if stage >= 2:
        dt = L_t - L_s
        step = (-dt) / float(_POINTS)
        points = L_t + k * step
        scaled = _noise_scaler(points)
        s = torch.sum(1 / scaled) * step
        denoised_d = (denoised - old) / (L_s - L[i - 1])
        x = x + (alpha_t * (dt + s * f_t)) * denoised_d
        if stage >= 3:
            s_u = torch.sum((points - L_s) / scaled) * step
            denoised_u = (denoised_d - old_d) / ((L_s - L[i - 2]) / 2)
            x = x + (alpha_t * ((dt ** 2) / 2 + s_u * f_t)) * denoised_u
        old_d = denoised_d
    if s_noise > 0:
        x = x + ((alpha_t * noise(sigma, sigma_next)) * s_noise) * torch.nan_to_num(
            (L_t ** 2 - L_s ** 2 * r ** 2).sqrt(), nan=0.0)
    return StepOut(x, denoised, {**memory, "old_denoised": denoised, "old_denoised_d": old_d})
